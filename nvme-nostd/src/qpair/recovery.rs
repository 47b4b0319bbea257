//! What a queue pair does when the device misbehaves: timed-out commands are
//! aborted, an abort that fails (or reports "not aborted", or times out) resets
//! the controller, and every request outstanding at a reset or a removal is
//! handed back with an error exactly once.
//!
//! The escalation follows Linux's `nvme_timeout` (check CSTS, abort, reset) and
//! SPDK's treatment of an abort that did not abort.

use super::request::{finish, leak, NOT_STAMPED};
use super::IoQueuePair;
use crate::buffer::IoBuffer;
use crate::controller::TimeoutEvent;
use crate::error::{Error, Result, Wait};
use crate::slots::Cid;
use hal_traits::Hal;

/// What the controller said to an Abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AbortOutcome {
    /// The controller aborted the command: it completes with "command abort
    /// requested" through `poll`.
    Aborted,
    /// The controller did not abort it (it may still complete, or may have
    /// completed already).
    NotAborted,
}

impl<H: Hal, B: IoBuffer, C, const N: usize> IoQueuePair<'_, H, B, C, N> {
    /// Catches up with a reset or removal that happened since the last call,
    /// then says whether the queue pair takes requests.
    pub(super) fn ready(&mut self) -> Result {
        // Removal wins over an earlier failure: every call then reports it.
        let removal_news = self.ctrlr.is_removed() && self.failed != Some(Error::DeviceRemoved);
        if self.ctrlr.epoch() != self.epoch || removal_news {
            self.recover();
        }
        match self.failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Asks the controller to abort the request that `cid` names (the CID its
    /// submission returned, also after the driver retried it under another
    /// one). The request still completes through `poll`, exactly once. A CID
    /// names its request only while it is in flight (see
    /// [`wait`](Self::wait)).
    pub fn abort(&mut self, cid: Cid) -> Result<AbortOutcome> {
        self.ready()?;
        let wire = self.given(cid).ok_or(Error::InvalidArgument(crate::error::Argument::UnknownCid))?;
        if self.slots.get(wire).is_some_and(|req| req.done.is_some()) {
            // Ended by the driver (a reset, a removal) and waiting for
            // `poll`: nothing of it is left in the device to abort.
            return Ok(AbortOutcome::NotAborted);
        }
        // Marked before the Abort goes out: its "command abort requested"
        // completion may be on the queue before the Abort's own, and must
        // reach the owner rather than be retried.
        let aborting = |qp: &mut Self, on: bool| {
            if let Some(req) = qp.slots.get_mut(wire) {
                req.aborted = on;
            }
        };
        aborting(self, true);
        match self.ctrlr.abort_wire(self.qid, wire.0) {
            Ok(true) => Ok(AbortOutcome::Aborted),
            Ok(false) => {
                aborting(self, false);
                Ok(AbortOutcome::NotAborted)
            }
            Err(e) => {
                aborting(self, false);
                Err(e)
            }
        }
    }

    /// The controller was reset (its epoch moved, so it is quiesced) or is
    /// gone: no outstanding command can complete or touch memory any more.
    /// Every request in flight is ended (delivered by the next `poll`), and the
    /// queues are created again.
    pub(super) fn recover(&mut self) {
        let removed = self.ctrlr.is_removed();
        let reason = if removed { Error::DeviceRemoved } else { Error::Reset };
        let hal = &self.ctrlr.hal;
        for (_, req) in self.slots.iter_mut() {
            if req.done.is_some() {
                continue;
            }
            if removed {
                // A removed device cannot be proven stopped: its registers
                // read all ones, so it cannot be disabled. The request still
                // ends (without its buffer), and the buffer and its mapping
                // are leaked rather than handed back for reuse.
                leak(req);
            } else {
                // SAFETY: the reset disabled the controller (the epoch moved
                // only after CSTS.RDY read 0): the device no longer accesses
                // the buffer. It stays in the request until delivered.
                let buffer = unsafe { finish(hal, req) };
                req.buffer = buffer.map(core::mem::ManuallyDrop::new);
            }
            // A removal is what the owner needs to know, also of a request
            // that had timed out before it.
            req.done = Some(if req.timed_out && !removed { Error::Timeout(Wait::IoCommand) } else { reason });
            // Counted at once: if a HAL method panics on a later request,
            // this one is still delivered (the next call ends the rest).
            self.pending_done += 1;
        }
        self.epoch = self.ctrlr.epoch();
        // Whatever was written to the old queues is gone with them.
        self.sq_pending = false;
        if removed {
            self.failed = Some(Error::DeviceRemoved);
            return;
        }
        self.failed = self.recreate().err();
    }

    /// Looks for requests past their deadline (at most every eighth of the
    /// timeout, one clock read per call) and escalates: abort first, reset
    /// when the abort does not work or an aborted command still does not
    /// complete. Requests submitted since the last look get their deadline
    /// here, so submission never reads the clock: a request times out between
    /// one and nine eighths of a timeout after it was submitted.
    pub(super) fn check_timeouts(&mut self) {
        let Some(timeout) = self.timeout else { return };
        if self.slots.in_flight() == 0 {
            return;
        }
        let now = self.ctrlr.hal.ticks();
        if now < self.next_timeout_check {
            return;
        }
        self.next_timeout_check = now.saturating_add((timeout / 8).max(1));

        // Requests past their deadline.
        let mut late: heapless::Vec<Cid, N> = heapless::Vec::new();
        for (cid, req) in self.slots.iter_mut() {
            if req.done.is_some() {
                continue;
            }
            if req.deadline == NOT_STAMPED {
                req.deadline = now.saturating_add(timeout).max(1);
                continue;
            }
            if now >= req.deadline {
                let _ = late.push(cid);
            }
        }
        if late.is_empty() {
            return;
        }
        // Not late after all: a request whose completion is already posted
        // and waits to be consumed (a caller that polls with a limit, or a
        // device that keeps the queue busy with other completions).
        let qid = self.qid;
        self.cq.posted(&self.ctrlr.hal, |entry| {
            if entry.sqid == qid {
                late.retain(|cid| cid.0 != entry.cid);
            }
        });
        let mut expired: heapless::Vec<Cid, N> = heapless::Vec::new();
        let mut reset = false;
        for cid in &late {
            let Some(req) = self.slots.get_mut(*cid) else { continue };
            if req.aborted || req.timed_out {
                // Aborted yet still not completed, or a reset that should
                // have ended it failed: only a (new) reset ends it.
                reset = true;
                req.deadline = now.saturating_add(timeout).max(1);
            } else {
                let _ = expired.push(*cid);
            }
        }
        if expired.is_empty() && !reset {
            return;
        }
        match self.ctrlr.csts() {
            Err(_) if self.ctrlr.confirm_removed() => {
                // All ones, again and again: the device is gone.
                self.mark_timed_out(&expired, now, timeout);
                self.recover();
                return;
            }
            // One all-ones read that did not repeat: treat it as a sick
            // controller.
            Err(_) => reset = true,
            Ok(csts) if csts.cfs() => reset = true,
            Ok(_) => {}
        }
        if let Some(cb) = self.ctrlr.options().timeout_callback {
            for cid in &expired {
                if let Some(req) = self.slots.get(*cid) {
                    cb(TimeoutEvent { qid: self.qid, cid: req.given, opcode: req.cmd.cdw0.opc() });
                }
            }
        }
        self.mark_timed_out(&expired, now, timeout);
        if !reset {
            for cid in &expired {
                match self.ctrlr.abort_wire(self.qid, cid.0) {
                    Ok(true) => {
                        self.stats.aborts += 1;
                        if let Some(req) = self.slots.get_mut(*cid) {
                            req.aborted = true;
                            req.deadline = now.saturating_add(timeout).max(1);
                        }
                    }
                    // "Not aborted", an abort that failed or timed out (which
                    // already reset the controller): reset.
                    _ => {
                        reset = true;
                        break;
                    }
                }
            }
        }
        if reset && self.ctrlr.epoch() == self.epoch {
            self.stats.resets += 1;
            let _ = self.ctrlr.reset();
        }
        if self.ctrlr.epoch() != self.epoch || self.ctrlr.is_removed() {
            self.recover();
        }
    }

    fn mark_timed_out(&mut self, cids: &[Cid], now: u64, timeout: u64) {
        let again = now.saturating_add(timeout).max(1);
        for cid in cids {
            if let Some(req) = self.slots.get_mut(*cid) {
                req.timed_out = true;
                req.deadline = again;
                self.stats.timeouts += 1;
            }
        }
    }
}
