//! What a queue pair does when the device misbehaves: timed-out commands are
//! aborted, an abort that fails (or reports "not aborted", or times out) resets
//! the controller, and every request outstanding at a reset or a removal is
//! handed back with an error exactly once.
//!
//! The escalation follows Linux's `nvme_timeout` (check CSTS, abort, reset) and
//! SPDK's treatment of an abort that did not abort.

use super::{unshare, IoQueuePair};
use crate::buffer::IoBuffer;
use crate::controller::TimeoutEvent;
use crate::error::{Error, Result};
use crate::slots::Cid;
use core::time::Duration;
use hal_traits::Hal;

impl<H: Hal, B: IoBuffer, C, const N: usize> IoQueuePair<'_, H, B, C, N> {
    /// Catches up with a reset or removal that happened since the last call,
    /// then says whether the queue pair takes requests.
    pub(super) fn ready(&mut self) -> Result {
        if self.ctrlr.epoch() != self.epoch || (self.ctrlr.is_removed() && self.failed.is_none()) {
            self.recover();
        }
        match self.failed {
            Some(e) => Err(e),
            None => Ok(()),
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
        let mut ended = 0;
        for (_, req) in self.slots.iter_mut() {
            if req.done.is_some() {
                continue;
            }
            if removed {
                // A removed device cannot be proven stopped: its registers
                // read all ones, so it cannot be disabled. The request still
                // ends (without its buffer), and the buffer and its mapping
                // are leaked rather than handed back for reuse.
                // (`Shared` owns nothing: dropping the record without an
                // unshare keeps the mapping.)
                req.shared = None;
                core::mem::forget(req.buffer.take());
            } else if let Some(s) = req.shared.take() {
                // SAFETY: the reset disabled the controller (the epoch moved
                // only after CSTS.RDY read 0): the device no longer accesses
                // the buffer.
                unsafe { unshare(hal, &s) };
            }
            req.done = Some(if req.timed_out { Error::Timeout("I/O command") } else { reason });
            ended += 1;
        }
        self.pending_done += ended;
        self.epoch = self.ctrlr.epoch();
        if removed {
            self.failed = Some(Error::DeviceRemoved);
            return;
        }
        self.failed = self.recreate().err();
    }

    /// Looks for requests past their deadline (at most every eighth of the
    /// timeout) and escalates: abort first, reset when the abort does not work
    /// or an aborted command still does not complete.
    pub(super) fn check_timeouts(&mut self) {
        let Some(timeout) = self.timeout else { return };
        let now = self.ctrlr.hal.now();
        if now < self.next_timeout_check || self.slots.in_flight() == 0 {
            return;
        }
        self.next_timeout_check = now.saturating_add((timeout / 8).max(Duration::from_micros(100)));

        let mut expired: heapless::Vec<Cid, N> = heapless::Vec::new();
        let mut reset = false;
        for (cid, req) in self.slots.iter_mut() {
            if req.done.is_some() || now < req.deadline {
                continue;
            }
            if req.aborted || req.timed_out {
                // Aborted yet still not completed, or a reset that should
                // have ended it failed: only a (new) reset ends it.
                reset = true;
                req.deadline = now.saturating_add(timeout);
            } else {
                let _ = expired.push(cid);
            }
        }
        if expired.is_empty() && !reset {
            return;
        }
        match self.ctrlr.csts() {
            Err(_) if self.ctrlr.confirm_removed() => {
                // All ones, again and again: the device is gone.
                self.mark_timed_out(&expired);
                self.recover();
                return;
            }
            // One all-ones read that did not repeat: treat it as a sick
            // controller.
            Err(_) => reset = true,
            Ok(csts) if csts.cfs() => reset = true,
            Ok(_) => {}
        }
        for cid in &expired {
            if let (Some(cb), Some(req)) = (self.ctrlr.options().timeout_callback, self.slots.get(*cid)) {
                cb(TimeoutEvent { qid: self.qid, cid: *cid, opcode: req.cmd.cdw0.opc() });
            }
        }
        self.mark_timed_out(&expired);
        if !reset {
            for cid in &expired {
                match self.ctrlr.abort(self.qid, *cid) {
                    Ok(true) => {
                        self.stats.aborts += 1;
                        if let Some(req) = self.slots.get_mut(*cid) {
                            req.aborted = true;
                            req.deadline = now.saturating_add(timeout);
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

    fn mark_timed_out(&mut self, cids: &[Cid]) {
        let again = self.ctrlr.hal.now().saturating_add(self.timeout.unwrap_or(Duration::MAX));
        for cid in cids {
            if let Some(req) = self.slots.get_mut(*cid) {
                req.timed_out = true;
                req.deadline = again;
                self.stats.timeouts += 1;
            }
        }
    }
}
