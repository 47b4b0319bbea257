//! A command's life inside the controller: accepted when fetched (its fault
//! drawn, its completion scheduled, or the command held: dropped, or an
//! Asynchronous Event Request), then completed when due: executed by the
//! admin or NVM command set and posted, or answered as its fault says.

use super::queues::PostKind;
use super::status::DNR;
use super::{State, AER_LIMIT};
use crate::fault::{Fault, FaultKind};
use core::time::Duration;
use nvme_spec::command::{AdminOpcode, SubmissionEntry};
use nvme_spec::status::{Status, StatusCode, StatusCodeType};

#[derive(Clone, Copy)]
pub(super) struct Pending {
    pub(super) seq: u64,
    pub(super) sqid: u16,
    pub(super) cmd: SubmissionEntry,
    pub(super) fault: Option<Fault>,
}

impl State {
    /// A command just fetched from `sqid`: schedules its completion.
    pub(super) fn accept(&mut self, sqid: u16, cmd: SubmissionEntry) {
        self.stats.commands_fetched += 1;
        if sqid == 0 {
            self.stats.admin_commands += 1;
        } else {
            self.touch_hmb();
        }
        if let Some(sq) = self.sqs.get_mut(&sqid) {
            sq.issued.insert(cmd.cdw0.cid());
        }
        let fault = self.draw_fault(sqid, cmd.cdw0.opc());
        if let Some(f) = &fault {
            self.stats.faults[FaultKind::of(f).index()] += 1;
            if sqid == 0 {
                self.stats.admin_faults += 1;
            }
        }
        self.seq += 1;
        let p = Pending { seq: self.seq, sqid, cmd, fault };
        match fault {
            Some(Fault::Fatal) => {
                self.cfs = true;
                return;
            }
            Some(Fault::Removal) => {
                self.removed = true;
                return;
            }
            Some(Fault::Drop) => {
                self.stuck.insert(p.seq, p);
                return;
            }
            _ => {}
        }
        if sqid == 0 && cmd.cdw0.opc() == AdminOpcode::ABORT.0 {
            // ACL is 3 (Identify Controller): at most 4 Aborts outstanding.
            let is_abort = |q: &Pending| q.sqid == 0 && q.cmd.cdw0.opc() == AdminOpcode::ABORT.0;
            let out = self.pending.values().filter(|q| is_abort(q)).count()
                + self.stuck.values().filter(|q| is_abort(q)).count();
            if out >= 4 {
                self.stats.abort_limit_exceeded += 1;
            }
        }
        let is_aer = sqid == 0 && cmd.cdw0.opc() == AdminOpcode::ASYNC_EVENT_REQUEST.0;
        if fault.is_none() && is_aer {
            let held =
                self.stuck.values().filter(|s| s.sqid == 0 && s.cmd.cdw0.opc() == cmd.cdw0.opc()).count();
            if held < AER_LIMIT {
                // Held until an event, an Abort or a reset.
                self.stuck.insert(p.seq, p);
                self.deliver_events();
                return;
            }
        }
        let extra = match fault {
            Some(Fault::Delay(d)) => d,
            _ => Duration::ZERO,
        };
        // Under weighted round robin, one command at a time: the order of
        // fetching is the order of completion.
        let start = if self.wrr { self.now.max(self.busy_until) } else { self.now };
        match start.checked_add(self.cfg.latency).and_then(|t| t.checked_add(extra)) {
            Some(due) => {
                if self.wrr {
                    self.busy_until = due;
                }
                self.pending.insert((due, p.seq), p);
            }
            None => {
                self.stuck.insert(p.seq, p);
            }
        }
    }

    /// A command's time has come: execute it (unless a fault says otherwise)
    /// and post its completion(s).
    pub(super) fn complete(&mut self, p: Pending) {
        if !self.sqs.contains_key(&p.sqid) {
            return;
        }
        let cid = p.cmd.cdw0.cid();
        if let Some(Fault::Status { sct, sc, dnr }) = p.fault {
            let mut status =
                Status::of(StatusCodeType(sct), StatusCode(sc)).raw() | if dnr { DNR } else { 0 };
            // A Command Retry Delay only once the host enabled ACRE.
            if !dnr && self.features.get(&0x16) == Some(&1) {
                status |= u16::from(self.cfg.status_crd & 3) << 12;
            }
            self.post(p.sqid, cid, status, 0, PostKind::Real);
            return;
        }
        let (status, dw0) = if p.sqid == 0 { self.execute_admin(&p.cmd) } else { self.execute_io(&p.cmd) };
        match p.fault {
            Some(Fault::CidOutOfRange) => {
                let bogus = self.unissued_cid(p.sqid, cid);
                self.post(p.sqid, bogus, status, dw0, PostKind::Extra);
                self.post(p.sqid, cid, status, dw0, PostKind::Real);
            }
            Some(Fault::CidNotOutstanding) => {
                let bogus = self.completed_cid(p.sqid, cid);
                self.post(p.sqid, bogus, status, dw0, PostKind::Extra);
                self.post(p.sqid, cid, status, dw0, PostKind::Real);
            }
            Some(Fault::CidRepeated) => {
                self.post(p.sqid, cid, status, dw0, PostKind::Real);
                self.post(p.sqid, cid, status, dw0, PostKind::Extra);
            }
            Some(Fault::WrongPhase) => self.post(p.sqid, cid, status, dw0, PostKind::WrongPhase),
            Some(Fault::ImpossibleSqHead) => self.post(p.sqid, cid, status, dw0, PostKind::BadHead),
            Some(Fault::ContradictingCompletion { sct, sc }) => {
                self.post(p.sqid, cid, status, dw0, PostKind::BadHead);
                let other = Status::of(StatusCodeType(sct), StatusCode(sc)).raw();
                self.post(p.sqid, cid, other, 0, PostKind::Extra);
            }
            _ => self.post(p.sqid, cid, status, dw0, PostKind::Real),
        }
    }
}
