//! What a queue pair does when the device misbehaves: timed-out commands are
//! aborted, an abort that fails (or reports "not aborted", or times out) resets
//! the controller, and every request outstanding at a reset or a removal is
//! handed back with an error exactly once.
//!
//! The escalation follows Linux's `nvme_timeout` (check CSTS, abort, reset) and
//! SPDK's treatment of an abort that did not abort.

use super::request::{finish, leak, NOT_STAMPED};
use super::{Health, IoQueuePair};
use crate::buffer::IoBuffer;
use crate::controller::TimeoutEvent;
use crate::error::{Broken, Cause, Error, RecoveryStep, Result, Wait};
use crate::slots::Cid;
use crate::spec::command::AdminOpcode;
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
    /// Catches up with a reset or removal that happened since the last call
    /// (without sending any admin command), then says whether the queue pair
    /// takes requests.
    pub(super) fn ready(&mut self) -> Result {
        self.catch_up();
        self.health.error().map_or(Ok(()), Err)
    }

    /// If the controller was reset (its epoch moved, so it is quiesced) or
    /// is gone since this queue pair last looked, ends every request in
    /// flight (delivered by the next `poll`) and marks the queues as needing
    /// to be created again. Sends nothing to the controller.
    pub(super) fn catch_up(&mut self) {
        // A split cut short by a panic first: its children were never
        // submitted and must not be finished with the rest.
        self.finish_broken_split();
        let removed = self.ctrlr.is_removed();
        // Removal wins over an earlier failure: every call then reports it.
        let removal_news = removed && !matches!(self.health, Health::Gone(Error::DeviceRemoved, _));
        if self.ctrlr.epoch() == self.epoch && !removal_news {
            return;
        }
        self.end_in_flight(removed);
        // The Aborts out went with the reset (or the device).
        self.aborts.clear();
        if removed {
            self.health = Health::Gone(Error::DeviceRemoved, 0);
            self.ctrlr.report_removal();
            return;
        }
        // The reset disabled the controller, which forgot every queue.
        self.epoch = self.ctrlr.epoch();
        self.on_device = false;
        self.sq_pending = false;
        let fresh =
            Broken { step: RecoveryStep::CreateIoCq, cause: Cause::Reset, attempts: 0, terminal: false };
        match self.health {
            Health::Up => self.health = Health::Down { broken: fresh, at: 0 },
            // A pair already down keeps its count of attempts and its
            // backoff: its own cleanup may have been the reset.
            Health::Down { .. } => {}
            // A pair that gave up waits for a reset by hand, not for the
            // driver's own resets (which its cleanup may cause).
            Health::Gone(_, by_hand) => {
                if self.ctrlr.resets_by_hand() != by_hand {
                    self.health = Health::Down { broken: fresh, at: 0 };
                }
            }
        }
    }

    /// Creates the queues again if they are down and the backoff since the
    /// last attempt has passed. Sends admin commands, so only `poll` calls it.
    pub(super) fn heal_if_due(&mut self) {
        let Health::Down { broken, at } = self.health else { return };
        let now = self.ctrlr.hal.ticks();
        if now < at {
            return;
        }
        // Read before the attempt: a reset by hand during it counts as later.
        let by_hand = self.ctrlr.resets_by_hand();
        let (step, e) = match self.recreate() {
            Ok(()) => {
                self.health = Health::Up;
                return;
            }
            Err(failed) => failed,
        };
        if self.ctrlr.is_removed() {
            self.catch_up();
            self.health = Health::Gone(Error::DeviceRemoved, 0);
            return;
        }
        let options = self.ctrlr.options();
        // The controller's failed reset is not this pair's failed attempt:
        // the controller retries it with its own bound.
        let theirs = e == Error::ControllerFailed && !self.ctrlr.gave_up();
        let attempts = if theirs { broken.attempts } else { broken.attempts.saturating_add(1) };
        let refused = matches!(e, Error::Command(status) if status.dnr());
        let terminal = refused || attempts >= options.recovery_attempts;
        let broken = Broken { step, cause: Cause::of(e), attempts, terminal };
        if terminal {
            self.health = Health::Gone(Error::QueuePairBroken(broken), by_hand);
            return;
        }
        let backoff = options.backoff_after(attempts);
        let rate = self.ctrlr.hal.ticks_per_second();
        let at = now.saturating_add(hal_traits::duration_to_ticks(backoff, rate));
        self.health = Health::Down { broken, at };
    }

    /// Asks the controller to abort the request that `cid` names (the CID its
    /// submission returned, also after the driver retried it under another
    /// one). The request still completes through `poll`, exactly once. A CID
    /// names its request only while it is in flight (see
    /// [`wait`](Self::wait)). A request still waiting for room in the
    /// submission queue is not on the device: the controller finds nothing
    /// to abort ([`AbortOutcome::NotAborted`]), and it is submitted when room
    /// comes.
    pub fn abort(&mut self, cid: Cid) -> Result<AbortOutcome> {
        self.ready()?;
        let wire = self.given(cid).ok_or(Error::InvalidArgument(crate::error::Argument::UnknownCid))?;
        if self.slots.get(wire).is_some_and(|req| req.role.is_parent() && !req.ended) {
            // A split request: its children are what the device has.
            return self.abort_children(wire);
        }
        if self.slots.get(wire).is_some_and(|req| req.ended) {
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
    /// Every request in flight is ended, to be delivered by the next `poll`.
    fn end_in_flight(&mut self, removed: bool) {
        let reason = if removed { Error::DeviceRemoved } else { Error::Reset };
        // Parked retries and waiting requests end with the rest.
        self.parked = 0;
        self.waiting.clear();
        let hal = &self.ctrlr.hal;
        for (i, cold) in self.cold.iter_mut().enumerate() {
            let Some((_, req)) = self.slots.at_mut(i) else { continue };
            if req.ended {
                continue;
            }
            if req.queued {
                // Never on the device: its buffer goes back even from a
                // removed one.
                req.queued = false;
                // SAFETY: the command was never submitted, so the device
                // never had the buffer's address.
                let buffer = unsafe { finish(hal, req, cold) };
                req.buffer = buffer.map(core::mem::ManuallyDrop::new);
            } else if removed {
                // A removed device cannot be proven stopped: its registers
                // read all ones, so it cannot be disabled. The request still
                // ends (without its buffer), and the buffer and its mapping
                // are leaked rather than handed back for reuse.
                leak(req, cold);
            } else {
                // SAFETY: the reset disabled the controller (the epoch moved
                // only after CSTS.RDY read 0): the device no longer accesses
                // the buffer. It stays in the request until delivered.
                let buffer = unsafe { finish(hal, req, cold) };
                req.buffer = buffer.map(core::mem::ManuallyDrop::new);
            }
            // Parked retries end too.
            req.parked = false;
            // A removal is what the owner needs to know, also of a request
            // that had timed out before it.
            cold.done =
                Some(if req.timed_out && !removed { Error::Timeout(Wait::IoCommand) } else { reason });
            req.ended = true;
            // Counted at once: if a HAL method panics on a later request,
            // this one is still delivered (the next call ends the rest).
            // Children are not delivered: they fold into their parents.
            if req.role.parent().is_none() {
                self.pending_done += 1;
            }
        }
        self.fold_ended_children();
    }

    /// Looks for requests past their deadline (at most every eighth of the
    /// timeout, one clock read per call) and escalates: abort first, reset
    /// when the abort does not work or an aborted command still does not
    /// complete. Requests submitted since the last look get their deadline
    /// here, so submission never reads the clock: a request times out between
    /// one and nine eighths of a timeout after it was submitted.
    pub(super) fn check_timeouts(&mut self) {
        let Some(timeout) = self.timeout else { return };
        let mut reset = !self.aborts.is_empty() && self.collect_aborts();
        if self.slots.in_flight() == 0 && !reset {
            return;
        }
        let now = self.ctrlr.hal.ticks();
        if now < self.next_timeout_check && !reset {
            return;
        }
        self.next_timeout_check = now.saturating_add((timeout / 8).max(1));

        // Requests past their deadline.
        let mut late: heapless::Vec<Cid, N> = heapless::Vec::new();
        for (cid, req) in self.slots.iter_mut() {
            if req.ended {
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
        // Not late after all: a request whose completion is already posted
        // and waits to be consumed (a caller that polls with a limit, or a
        // device that keeps the queue busy with other completions).
        let qid = self.qid;
        self.cq.posted(&self.ctrlr.hal, |entry| {
            if entry.sqid == qid {
                late.retain(|cid| cid.0 != entry.cid);
            }
        });
        // Timed out just now, and timed out earlier with no Abort sent yet
        // (the abort command limit was reached, or the admin queue busy).
        let mut expired: heapless::Vec<Cid, N> = heapless::Vec::new();
        let mut to_abort: heapless::Vec<Cid, N> = heapless::Vec::new();
        for cid in &late {
            let Some(req) = self.slots.get_mut(*cid) else { continue };
            if req.aborted || req.abort_sent {
                // Aborted (or its Abort in flight) a whole timeout ago and
                // still not completed, or a reset that should have ended
                // it failed: only a (new) reset ends it.
                reset = true;
                req.deadline = now.saturating_add(timeout).max(1);
            } else if req.timed_out {
                let _ = to_abort.push(*cid);
            } else {
                let _ = expired.push(*cid);
                let _ = to_abort.push(*cid);
            }
        }
        if to_abort.is_empty() && !reset {
            return;
        }
        match self.ctrlr.csts() {
            Err(_) if self.ctrlr.confirm_removed() => {
                // All ones, again and again: the device is gone.
                self.mark_timed_out(&expired, now, timeout);
                self.catch_up();
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
                    // A child of a split request: its owner knows the CID
                    // the parent's submission returned.
                    let given = req
                        .role
                        .parent()
                        .and_then(|p| self.slots.at(usize::from(p)))
                        .map_or(req.given, |(_, parent)| parent.given);
                    cb(TimeoutEvent { qid: self.qid, cid: given, opcode: req.opcode });
                }
            }
        }
        self.mark_timed_out(&expired, now, timeout);
        if !reset {
            // Each Abort is sent without waiting for it: its result comes
            // in on a later poll (`collect_aborts`).
            for cid in &to_abort {
                match self.ctrlr.abort_async(self.qid, cid.0) {
                    Ok(Some(ticket)) => {
                        if let Some(req) = self.slots.get_mut(*cid) {
                            req.abort_sent = true;
                            req.deadline = now.saturating_add(timeout).max(1);
                        }
                        // Room for it: at most MAX_ABORTS Aborts are out.
                        let _ = self.aborts.push((ticket, *cid));
                    }
                    // At the abort command limit, or the admin queue is busy
                    // on another thread: try again at the next look.
                    Ok(None) => {
                        if let Some(req) = self.slots.get_mut(*cid) {
                            req.deadline = now.saturating_add((timeout / 8).max(1));
                        }
                    }
                    Err(_) => {
                        reset = true;
                        break;
                    }
                }
            }
        }
        if reset && self.ctrlr.epoch() == self.epoch {
            self.stats.resets += 1;
            // Unless another thread reset the controller since this queue
            // pair last looked: that reset ended these requests too.
            let by_hand = self.ctrlr.resets_by_hand();
            let failed = self.ctrlr.reset_from(self.epoch).is_err();
            if failed && self.ctrlr.epoch() == self.epoch && self.ctrlr.gave_up() {
                // The driver no longer resets by itself, and these requests
                // need a reset to end (the device may still use their
                // buffers): say so; a reset by hand ends them and heals.
                let attempts = self.ctrlr.options().recovery_attempts;
                let step = RecoveryStep::ResetController;
                let broken = Broken { step, cause: Cause::ControllerFailed, attempts, terminal: true };
                self.health = Health::Gone(Error::QueuePairBroken(broken), by_hand);
            }
        }
        self.catch_up();
    }

    /// Takes in the results of this pair's Aborts that have come back; true
    /// when one calls for a reset: "not aborted" for a command whose
    /// completion is not on the completion queue either, an Abort the
    /// controller refused, or one that timed out.
    fn collect_aborts(&mut self) -> bool {
        let mut reset = false;
        let mut i = 0;
        while i < self.aborts.len() {
            let (ticket, wire) = self.aborts[i];
            let Some(result) = self.ctrlr.abort_result(ticket) else {
                i += 1;
                continue;
            };
            self.aborts.swap_remove(i);
            if result == Ok(AbortOutcome::Aborted) {
                self.stats.aborts += 1;
            }
            if let Err(Error::Timeout(_)) = result {
                // An Abort that never came back: the admin queue is failed,
                // whether or not its command completed meanwhile.
                if let Some(cb) = self.ctrlr.options().timeout_callback {
                    cb(TimeoutEvent { qid: 0, cid: Cid(ticket.cid), opcode: AdminOpcode::ABORT.0 });
                }
                reset = true;
                continue;
            }
            let waiting = self.slots.get(wire).is_some_and(|r| !r.ended && r.abort_sent);
            if !waiting {
                // It completed (or was ended) while the Abort was out.
                continue;
            }
            match result {
                Ok(AbortOutcome::Aborted) => {
                    if let Some(req) = self.slots.get_mut(wire) {
                        req.aborted = true;
                    }
                }
                Ok(AbortOutcome::NotAborted) => {
                    // Perhaps it completed while the Abort was in flight:
                    // then its completion is on the queue, and all is well.
                    let (qid, mut posted) = (self.qid, false);
                    self.cq.posted(&self.ctrlr.hal, |e| posted |= e.sqid == qid && e.cid == wire.0);
                    reset |= !posted;
                }
                // The reset that dropped the Abort ended the request too.
                Err(Error::Reset) => {}
                // Refused (a status), or the admin queue failed.
                Err(_) => reset = true,
            }
        }
        reset
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
