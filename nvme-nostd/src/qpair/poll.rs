//! The completion path: `poll` and its helpers, the submission half it lends
//! to its callback, and the guard that releases consumed completions to the
//! device even when the callback panics.

use super::request::{finish_records, Request, Role, HOST_ABORTED, NOT_STAMPED, PARKED};
use super::{Completion, Health, IoFlags, IoQueuePair, Path, PollLimit, SubmitError};
use crate::buffer::IoBuffer;
use crate::dma::DmaMemory;
use crate::error::{Argument, Error, Result, Wait};
use crate::namespace::Namespace;
use crate::queue::Doorbell;
use crate::slots::{Cid, SlotPool};
use crate::spec::command::{IoOpcode, SubmissionEntry};
use core::mem::ManuallyDrop;
use core::time::Duration;
use hal_traits::{duration_to_ticks, Hal};

/// Rings a completion queue's head doorbell when dropped, also when a poll
/// callback panics: completions already consumed must be released to the
/// device, or the queue stalls for good once the ring fills.
struct CqHeadGuard<'h, H: Hal> {
    hal: &'h H,
    pending: Option<(Doorbell, u16)>,
    /// The shadow doorbell pages, if the pair uses them.
    shadow: Option<&'h DmaMemory>,
}

impl<H: Hal> CqHeadGuard<'_, H> {
    /// Releases the consumed completions (if any are pending); true when
    /// the new head went to the shadow doorbell only.
    #[inline]
    fn ring(&mut self) -> bool {
        match (self.pending.take(), self.shadow) {
            (Some((doorbell, head)), Some(mem)) => !doorbell.ring_shadowed(self.hal, head, mem),
            (Some((doorbell, head)), None) => {
                doorbell.ring(self.hal, head);
                false
            }
            (None, _) => false,
        }
    }
}

impl<H: Hal> Drop for CqHeadGuard<'_, H> {
    fn drop(&mut self) {
        self.ring();
    }
}

/// The submission half of a queue pair, lent to a [`poll`](IoQueuePair::poll)
/// callback so it can submit the next request while completions are being
/// processed (the doorbell is rung once when the poll pass ends).
///
/// Submissions here never recover the queue pair after a controller reset
/// (the poll is in the middle of the completion queue): they fail with
/// [`Error::Reset`] instead, and the next `poll` recovers.
pub struct Resubmit<'q, 'c, H: Hal, B: IoBuffer, C, const N: usize> {
    qp: &'q mut IoQueuePair<'c, H, B, C, N>,
}

impl<H: Hal, B: IoBuffer, C, const N: usize> Resubmit<'_, '_, H, B, C, N> {
    /// As [`IoQueuePair::read`].
    pub fn read(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>> {
        self.qp.read_write_plain(
            IoOpcode::READ,
            ns,
            lba,
            blocks,
            IoFlags::default(),
            buffer,
            context,
            Path::InPoll,
        )
    }

    /// As [`IoQueuePair::write`].
    pub fn write(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>> {
        self.qp.read_write_plain(
            IoOpcode::WRITE,
            ns,
            lba,
            blocks,
            IoFlags::default(),
            buffer,
            context,
            Path::InPoll,
        )
    }

    /// As [`IoQueuePair::flush`].
    pub fn flush(&mut self, ns: &Namespace, context: C) -> Result<Cid, SubmitError<(), C>> {
        self.qp.flush_on(ns, context, Path::InPoll)
    }

    /// As [`IoQueuePair::submit_raw`].
    ///
    /// # Safety
    ///
    /// As for [`IoQueuePair::submit_raw`].
    pub unsafe fn submit_raw(
        &mut self,
        cmd: SubmissionEntry,
        buffer: Option<B>,
        context: C,
    ) -> Result<Cid, SubmitError<Option<B>, C>> {
        // SAFETY: forwarded from the caller.
        unsafe { self.qp.raw_on(cmd, buffer, context, Path::InPoll) }
    }

    /// Requests in flight on the queue pair.
    pub fn in_flight(&self) -> usize {
        self.qp.in_flight()
    }
}

impl<'c, H: Hal, B: IoBuffer, C, const N: usize> IoQueuePair<'c, H, B, C, N> {
    /// Processes the completions that are ready, up to `limit`, handing each
    /// request's buffer and context to `on_complete`, and returns how many it
    /// delivered. The callback may submit more requests through its
    /// [`Resubmit`] (one doorbell write for all of them when the pass ends).
    ///
    /// Entries that name no request in flight (a stale, repeated or
    /// out-of-range CID, a wrong SQID, an impossible SQ head) are consumed,
    /// counted in [`QueueStats::bogus_completions`](super::QueueStats::bogus_completions), and otherwise ignored;
    /// one call consumes at most one ring's worth of entries. A retryable
    /// error status (DNR clear) submits the command again, up to
    /// `ControllerOptions::retry_count` times. With I/O timeouts on, `poll`
    /// also finds timed-out requests (one clock read per call) and aborts
    /// them, or resets the controller; requests ended by a reset or a removal
    /// are delivered here too, each exactly once. After a controller reset,
    /// `poll` is where the queue pair creates its queues again (admin
    /// commands, so this call blocks for them), retrying a failed attempt on
    /// later calls with a backoff (see [`Broken`](crate::Broken)).
    ///
    /// If the callback panics, the completions consumed so far are still
    /// released to the device, and the request being delivered is the
    /// callback's (its buffer is dropped by the unwinding).
    pub fn poll<F>(&mut self, limit: PollLimit, mut on_complete: F) -> usize
    where
        F: FnMut(&mut Resubmit<'_, 'c, H, B, C, N>, Completion<B, C>),
    {
        let max = limit.max();
        let mut delivered = 0;
        // Up, nothing to catch up with, heal, announce or deliver: straight
        // to the completion queue.
        let quiet = matches!(self.health, Health::Up)
            && self.splitting.is_none()
            && !self.sq_pending
            && self.pending_done == 0
            && self.ctrlr.epoch() == self.epoch
            && !self.ctrlr.is_removed();
        if !quiet {
            self.finish_broken_split();
            self.catch_up();
            self.heal_if_due();
            self.ring_doorbell();
            delivered = self.deliver_done(max, &mut on_complete);
        }
        let ctrlr = self.ctrlr;
        let hal = &ctrlr.hal;
        let retry_count = ctrlr.options().retry_count;
        let mut guard = CqHeadGuard { hal, pending: None, shadow: self.shadow_memory() };
        let mut consumed: u32 = 0;
        while delivered < max && consumed < self.cq.size() as u32 {
            let Some(entry) = self.cq.peek(hal) else {
                break;
            };
            self.cq.advance();
            consumed += 1;
            guard.pending = Some(self.cq.pending_head());
            let cid = Cid(entry.cid);
            // The CID is checked once: its slot index, generation and
            // request. A split request's parent is never on the wire: a
            // completion naming it is as bogus as one naming a free slot.
            let index =
                self.slots.lookup(cid).filter(|(_, r)| !r.ended && !r.role.is_parent()).map(|(i, _)| i);
            // The SQ head moves only with an entry naming a request.
            let valid = index.is_some() && entry.sqid == self.qid && self.sq.update_head(entry.sqhd);
            let (Some(index), true) = (index, valid) else {
                self.bogus(cid, entry.sqid, index.is_some());
                continue;
            };
            let status = entry.status.without_phase();
            if !status.is_success() && !status.do_not_retry() && matches!(self.health, Health::Up) {
                // Retryable. The controller may ask for a delay before the
                // retry (CRD).
                let delay = ctrlr.retry_delay(status);
                let again = if delay.is_zero() {
                    self.retry(cid, retry_count)
                } else {
                    self.park(cid, retry_count, delay)
                };
                if again.is_some() {
                    continue;
                }
            }
            // The request is finished in its slot; only its buffer and
            // context leave it.
            let Some((_, req)) = self.slots.at_mut(index) else { continue };
            // The slot is freed before the HAL is called: a panic there
            // leaks the buffer rather than leave a request stuck.
            let (dma, cold_dma) = (req.dma.take(), core::mem::take(&mut req.cold_dma));
            let mut buffer = req.buffer.take();
            let error = (req.timed_out && !status.is_success()).then_some(Error::Timeout(Wait::IoCommand));
            let given = req.given;
            let role = core::mem::replace(&mut req.role, Role::Taken);
            self.slots.vacate(index);
            // A child's parent counts it before the HAL is called, as if the
            // call panicked (see `child_counted`).
            let settling = match role {
                Role::Child { parent } => self.child_counted(parent, status, error),
                Role::Own { .. } | Role::Taken => None,
            };
            // SAFETY: the command completed, so the device is done with the
            // buffer.
            unsafe { finish_records(hal, dma, cold_dma, buffer.as_deref_mut(), &mut self.cold[index]) };
            let buffer = buffer.map(ManuallyDrop::into_inner);
            let done = match role {
                Role::Own { context, .. } => {
                    Completion { cid: given, status, error, dw0: entry.dw0, dw1: entry.dw1, buffer, context }
                }
                // A child: its parent completes with the last of them.
                Role::Child { parent } => match settling.and_then(|s| self.child_settled(parent, s)) {
                    Some(done) => done,
                    None => continue,
                },
                Role::Taken => continue,
            };
            self.stats.completed += 1;
            delivered += 1;
            on_complete(&mut Resubmit { qp: self }, done);
        }
        // Rung here rather than by the guard's drop, to count it.
        if guard.ring() {
            self.stats.doorbells_skipped += 1;
        }
        drop(guard);
        if self.shadow {
            self.watchdog(consumed);
        }
        if !self.waiting.is_empty() {
            self.submit_waiting();
        }
        if self.parked > 0 {
            self.resubmit_parked();
        }
        self.ring_doorbell();
        // Requests whose completions wait in the queue are not late: the
        // timeout scan looks there before it calls anything late.
        if self.timeout.is_some() {
            self.check_timeouts();
            if self.pending_done > 0 && delivered < max {
                delivered += self.deliver_done(max - delivered, &mut on_complete);
                // What those callbacks resubmitted.
                self.ring_doorbell();
            }
        }
        delivered
    }

    /// With shadow doorbells: after [`SHADOW_WATCHDOG_PASSES`] passes in a
    /// row that consumed nothing while requests were in flight, rings both
    /// doorbells by MMIO, in case the controller missed a shadow update.
    /// Only while the pair is up and has seen the last reset: a pair whose
    /// queues a reset deleted, or that gave up, has nothing on the
    /// controller to wake.
    #[inline]
    fn watchdog(&mut self, consumed: u32) {
        if consumed > 0 || self.slots.in_flight() == 0 {
            self.empty_passes = 0;
            return;
        }
        self.empty_passes += 1;
        if self.empty_passes < super::SHADOW_WATCHDOG_PASSES {
            return;
        }
        self.empty_passes = 0;
        if !matches!(self.health, Health::Up) || self.ctrlr.epoch() != self.epoch {
            return;
        }
        self.stats.watchdog_rings += 1;
        let hal = &self.ctrlr.hal;
        self.sq.doorbell().ring(hal, self.sq.tail());
        self.cq.doorbell().ring(hal, self.cq.head());
    }

    /// Counts a completion entry that names no request in flight (or whose
    /// SQ head is impossible). `named`: `cid` names a request in flight that
    /// the device may be done with.
    #[cold]
    fn bogus(&mut self, cid: Cid, sqid: u16, named: bool) {
        self.stats.bogus_completions += 1;
        if sqid == self.qid && named {
            // The device contradicts itself about a request in flight (its
            // SQ head is impossible): not its completion, but the device may
            // be done with it. Its fate is unknown, as after a timeout: a
            // later entry naming it that is not a success reports
            // `Error::Timeout`, and the next timeout scan aborts it.
            if let Some(req) = self.slots.get_mut(cid) {
                if !req.timed_out && req.deadline != PARKED {
                    req.timed_out = true;
                    req.deadline = 1;
                }
            }
        }
    }

    /// Polls until the request that `cid` names completes and returns its
    /// completion, handing every other completion to `on_other`: a blocking
    /// helper for slow paths. (A CID names its request while it is in flight;
    /// once delivered, the same CID comes back for a later request of the
    /// same slot after as few as 16 reuses with `N = 4096`, more with fewer
    /// slots.) Gives up after `timeout` with
    /// [`Error::Timeout`] (the request stays in flight and completes through
    /// a later `poll`), or at once with [`Error::InvalidArgument`] when no
    /// such request is in flight.
    pub fn wait(
        &mut self,
        cid: Cid,
        timeout: Duration,
        mut on_other: impl FnMut(Completion<B, C>),
    ) -> Result<Completion<B, C>> {
        let hal = &self.ctrlr.hal;
        let deadline = hal.now().saturating_add(timeout);
        loop {
            if self.given(cid).is_none() {
                return Err(Error::InvalidArgument(Argument::UnknownCid));
            }
            let mut mine = None;
            self.poll(PollLimit::All, |_, done| {
                if done.cid == cid {
                    mine = Some(done);
                } else {
                    on_other(done);
                }
            });
            if let Some(done) = mine {
                return Ok(done);
            }
            if hal.now() >= deadline {
                return Err(Error::Timeout(Wait::Request));
            }
        }
    }

    /// The CID on the wire now of the request whose submission returned
    /// `given` (they differ once the request was retried), if it is in
    /// flight.
    pub(super) fn given(&self, given: Cid) -> Option<Cid> {
        let index = SlotPool::<Request<B, C>, N>::index_of(given);
        self.slots.at(index).filter(|(_, req)| req.given == given).map(|(wire, _)| wire)
    }

    /// Submits the command of request `cid` again under a new CID, if it has
    /// retries left and was neither timed out nor aborted (an abort's
    /// "command abort requested" goes to the owner). Returns the new CID.
    fn retry(&mut self, cid: Cid, retry_count: u8) -> Option<Cid> {
        let req = self.slots.get(cid)?;
        if req.retries >= retry_count || req.timed_out || req.aborted || self.sq.is_full() {
            return None;
        }
        let new_cid = self.slots.renew(cid)?;
        let index = self.slots.index(new_cid)?;
        let req = self.slots.get_mut(new_cid)?;
        req.retries += 1;
        req.deadline = NOT_STAMPED;
        // Kept at submission: retries are on.
        let cmd = self.cold[index].cmd;
        self.stats.retries += 1;
        self.push(cmd, new_cid, Path::InPoll);
        Some(new_cid)
    }

    /// As [`retry`](Self::retry), but the command goes out only once `delay`
    /// (the Command Retry Delay its status asked for) has passed: `poll`
    /// submits it then. Returns the new CID.
    fn park(&mut self, cid: Cid, retry_count: u8, delay: Duration) -> Option<Cid> {
        let req = self.slots.get(cid)?;
        if req.retries >= retry_count || req.timed_out || req.aborted {
            return None;
        }
        let hal = &self.ctrlr.hal;
        let at = hal.ticks().saturating_add(duration_to_ticks(delay, hal.ticks_per_second()).max(1));
        let new_cid = self.slots.renew(cid)?;
        let index = self.slots.index(new_cid)?;
        let req = self.slots.get_mut(new_cid)?;
        req.retries += 1;
        req.parked = true;
        self.cold[index].retry_at = at;
        // Not on the device while it waits, so it cannot be late.
        req.deadline = PARKED;
        self.parked += 1;
        self.stats.retries += 1;
        Some(new_cid)
    }

    /// Submits the parked retries whose delay has passed.
    fn resubmit_parked(&mut self) {
        let now = self.ctrlr.hal.ticks();
        let mut due: heapless::Vec<Cid, N> = heapless::Vec::new();
        for (i, cold) in self.cold.iter().enumerate() {
            if let Some((cid, req)) = self.slots.at(i) {
                if !req.ended && req.parked && now >= cold.retry_at {
                    let _ = due.push(cid);
                }
            }
        }
        for cid in due {
            if self.sq.is_full() {
                break;
            }
            let Some(index) = self.slots.index(cid) else { continue };
            let Some(req) = self.slots.get_mut(cid) else { continue };
            req.parked = false;
            req.deadline = NOT_STAMPED;
            let cmd = self.cold[index].cmd;
            self.parked -= 1;
            self.push(cmd, cid, Path::InPoll);
        }
    }

    /// Delivers up to `max` requests that the driver ended.
    fn deliver_done<F>(&mut self, max: usize, on_complete: &mut F) -> usize
    where
        F: FnMut(&mut Resubmit<'_, 'c, H, B, C, N>, Completion<B, C>),
    {
        let mut delivered = 0;
        let mut from = 0;
        while self.pending_done > 0 && delivered < max {
            let Some((index, _, mut req)) = self.slots.take_next(from, |r| r.ended) else {
                break;
            };
            from = index + 1;
            let cold = &mut self.cold[index];
            let (done, failure) = (cold.done.take(), cold.failure.take());
            self.pending_done -= 1;
            self.stats.completed += 1;
            self.stats.failed_by_driver += 1;
            delivered += 1;
            // `recover` already gave the device's access back (or leaked the
            // buffer, for a removed device): only the buffer is left.
            let buffer = req.buffer.take().map(ManuallyDrop::into_inner);
            // Children never wait here: `end_in_flight` folds them into
            // their parents.
            let Role::Own { context, .. } = req.role else { continue };
            // A split request: the first of its children's failures.
            let (status, error) = match (failure, done) {
                // A removal is what the owner must hear, over any failure.
                (_, Some(Error::DeviceRemoved)) | (None, _) => (HOST_ABORTED, done),
                (Some(f), _) => (f.status, f.error),
            };
            let done = Completion { cid: req.given, status, error, dw0: 0, dw1: 0, buffer, context };
            on_complete(&mut Resubmit { qp: self }, done);
        }
        delivered
    }
}
