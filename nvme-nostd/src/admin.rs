//! The admin queue pair (NVMe Base Specification 1.4, section 5 "Admin
//! Command Set").
//!
//! Every admin command the driver's callers send is asynchronous here: it
//! takes a slot of the table of commands in flight (an Abort, a Keep Alive,
//! a command of an [`AdminRequests`](crate::AdminRequests) pool, or one a
//! blocking call waits for) and its result is kept there until its owner
//! collects it. Blocking calls (`Controller::admin_exec` and everything
//! built on it) are helpers on top: they submit, then poll for their result
//! with the admin lock taken only for each look, so other threads' admin
//! commands, events and Keep Alive go on meanwhile. Asynchronous Event Requests stay outstanding until
//! the controller has an event (see `events.rs`). Every completion, whoever
//! reaps it, goes through [`AdminQueue::route`].
//!
//! Bring-up and resets own the queue: they run their commands one at a time
//! with the lock held throughout ([`AdminQueue::execute`]).

use crate::dma::DmaMemory;
use crate::error::{Error, Malformed, Result, Wait};
use crate::queue::{CompletionQueue, SubmissionQueue};
use crate::registers::Registers;
use crate::spec::command::{AdminOpcode, CompletionEntry, SubmissionEntry};
use core::time::Duration;
use hal_traits::Hal;

/// Entries in each admin queue.
pub(crate) const ADMIN_QUEUE_ENTRIES: u16 = 32;

/// Admin commands that may be outstanding without anyone waiting for them:
/// Aborts (whose results queue pairs collect on later polls), a Keep Alive,
/// and the commands of [`AdminRequests`](crate::AdminRequests).
pub(crate) const ASYNC_SLOTS: usize = 16;

/// Aborts outstanding at most (the controller's ACL + 1 may be lower).
pub(crate) const MAX_ABORTS: usize = 8;

/// What an admin command nobody waits for is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AsyncKind {
    /// An Abort (counts toward the abort command limit).
    Abort,
    /// A Keep Alive: its result is dropped when it arrives.
    KeepAlive,
    /// A command of an `AdminRequests` pool.
    Request,
    /// A command a blocking call waits for (without the admin lock).
    Waited,
}

/// Asynchronous Event Requests the driver keeps outstanding at most (the
/// controller's AERL + 1 may be lower).
pub(crate) const MAX_AERS: usize = 4;

/// Events received and not yet handed out. AERs are re-armed only while
/// the events they could bring still fit, so none is ever dropped: the
/// controller holds the rest until the host asks again.
pub(crate) const EVENT_QUEUE: usize = 16;

/// The retry rule of the admin path: a status with Do Not Retry clear is
/// retried, at most `retries` times (counted in `tries`), after the Command
/// Retry Delay its CRD field names (`delays`, zero while ACRE is off).
/// Returns the wait before the retry, or `None` when `result` stands.
pub(crate) fn retry_wait(
    result: &Result<CompletionEntry>,
    tries: &mut u8,
    retries: u8,
    delays: [Duration; 3],
) -> Option<Duration> {
    match result {
        Err(Error::Command(status)) if !status.dnr() && *tries < retries => {
            *tries += 1;
            Some(delays.get(usize::from(status.crd()).wrapping_sub(1)).copied().unwrap_or(Duration::ZERO))
        }
        _ => None,
    }
}

/// What an asynchronous admin command's owner holds to collect it: its CID,
/// and how many times the queue had been restarted when it was sent (a CID
/// is reused in time, and a ticket from before a reset must never collect
/// or cancel a later command that got the same CID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    /// The command's CID.
    pub(crate) cid: u16,
    restarts: u32,
}

/// An admin command submitted without waiting ([`AdminQueue::submit_async`]).
#[derive(Clone, Copy)]
struct AsyncCommand {
    cid: u16,
    /// [`AdminQueue::restarts`] when it was sent.
    restarts: u32,
    kind: AsyncKind,
    /// When it times out.
    deadline: Duration,
    /// Its result, once its completion was seen.
    result: Option<Result<CompletionEntry>>,
}

/// What became of an admin command submitted without waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AsyncResult {
    /// Not completed yet.
    Pending,
    /// Completed: its completion (an error status as `Error::Command`), or
    /// `Error::Timeout` past its deadline, or `Error::Reset` when a reset
    /// dropped it.
    Done(Result<CompletionEntry>),
}

/// The admin queue pair plus a page of DMA memory for command data (identify
/// structures and similar), all owned by the controller.
pub(crate) struct AdminQueue {
    pub(crate) sq: SubmissionQueue,
    pub(crate) cq: CompletionQueue,
    pub(crate) data: DmaMemory,
    next_cid: u16,
    /// Set when a command timed out: the controller may still complete it, so
    /// the queue is not used again until a reset.
    pub(crate) failed: bool,
    /// Completions that named no outstanding admin command.
    pub(crate) bogus_completions: u64,
    /// Resets that failed in a row (cleared by one that works).
    pub(crate) reset_failures: u8,
    /// When the driver may try its next reset of its own accord.
    pub(crate) next_reset: Duration,
    /// Admin commands in flight that nobody waits for.
    asynchronous: heapless::Vec<AsyncCommand, ASYNC_SLOTS>,
    /// The CIDs of the Asynchronous Event Requests outstanding.
    aers: heapless::Vec<u16, MAX_AERS>,
    /// How many AERs the host wants outstanding (0 until it enables
    /// events).
    pub(crate) aers_wanted: u8,
    /// Completion DW0s of AERs, oldest first, not yet handed out.
    pub(crate) events: heapless::Deque<u32, EVENT_QUEUE>,
    /// AERs that completed with an error status (not re-armed).
    pub(crate) aer_errors: u32,
    /// The Asynchronous Event Configuration the host enabled events with,
    /// set again after each reset.
    pub(crate) aec: Option<u32>,
    /// The AERs the host enabled (`aers_wanted` after each reset).
    pub(crate) aer_limit: u8,
    /// The Keep Alive Timeout the controller was given, in milliseconds (0:
    /// keep alive off).
    pub(crate) kato_ms: u32,
    /// When the next Keep Alive is due.
    pub(crate) next_keep_alive: Duration,
    /// Keep Alive commands that completed with an error status.
    pub(crate) keep_alive_errors: u32,
    /// The host memory buffer handed to the controller (given back after
    /// each reset, freed with the admin queue).
    pub(crate) hmb: Option<crate::hmb::Hmb>,
    /// The waited command whose data `data` holds, until its caller has
    /// collected the result (a reset frees the page too).
    pub(crate) data_owner: Option<u16>,
    /// Restarts so far (each reset): tickets name the round they were
    /// issued in.
    restarts: u32,
}

impl AdminQueue {
    pub(crate) fn new(sq: SubmissionQueue, cq: CompletionQueue, data: DmaMemory) -> Self {
        AdminQueue {
            sq,
            cq,
            data,
            next_cid: 0,
            failed: false,
            bogus_completions: 0,
            reset_failures: 0,
            next_reset: Duration::ZERO,
            asynchronous: heapless::Vec::new(),
            aers: heapless::Vec::new(),
            aers_wanted: 0,
            events: heapless::Deque::new(),
            aer_errors: 0,
            aec: None,
            aer_limit: 0,
            kato_ms: 0,
            next_keep_alive: Duration::ZERO,
            keep_alive_errors: 0,
            hmb: None,
            data_owner: None,
            restarts: 0,
        }
    }

    /// Starts over after the controller was disabled: empty rings, phase 1.
    /// Asynchronous commands still out are forgotten (their owners hear
    /// `Reset`), and so are the AERs (the controller forgot them); results
    /// that came before the reset stay for the owners who always collect
    /// them (waited calls and `AdminRequests`), and events already received
    /// stay queued.
    pub(crate) fn restart(&mut self) {
        self.sq.restart();
        self.cq.restart();
        self.failed = false;
        // Kept for one round: an owner that did not come for its result by
        // the next reset never will (it unwound), and its slot comes back.
        let round = self.restarts;
        self.asynchronous.retain(|a| {
            a.result.is_some()
                && a.restarts == round
                && matches!(a.kind, AsyncKind::Waited | AsyncKind::Request)
        });
        self.aers.clear();
        self.data_owner = None;
        self.restarts = self.restarts.wrapping_add(1);
    }

    /// Records an asynchronous command (before its doorbell, so that a HAL
    /// that panics in between leaves a command its deadline catches) and
    /// sends it. The caller checked that a slot is free.
    fn post<H: Hal>(
        &mut self,
        hal: &H,
        mut cmd: SubmissionEntry,
        timeout: Duration,
        kind: AsyncKind,
        on_recorded: impl FnOnce(&mut Self, u16),
    ) -> Result<Ticket> {
        let deadline = hal.now().saturating_add(timeout);
        let cid = self.take_cid();
        let ticket = Ticket { cid, restarts: self.restarts };
        if self
            .asynchronous
            .push(AsyncCommand { cid, restarts: self.restarts, kind, deadline, result: None })
            .is_err()
        {
            return Err(Error::QueueFull);
        }
        on_recorded(self, cid);
        cmd.cdw0.set_cid(cid);
        if !self.sq.push(&cmd) {
            self.asynchronous.pop();
            self.failed = true;
            return Err(Error::MalformedDevice(Malformed::AdminQueueStuck));
        }
        // Failed while the doorbell is rung: should the HAL panic there,
        // the command's fate is unknown until a reset.
        let was = core::mem::replace(&mut self.failed, true);
        self.sq.ring(hal);
        self.failed = was;
        Ok(ticket)
    }

    /// Asynchronous Event Requests outstanding.
    pub(crate) fn aers_outstanding(&self) -> usize {
        self.aers.len()
    }

    /// Submits Asynchronous Event Requests until `aers_wanted` are
    /// outstanding, or until the events they could bring would no longer
    /// fit the event queue, or the submission queue is full (then a later
    /// call tops up). Returns how many are outstanding.
    pub(crate) fn arm_aers<H: Hal>(&mut self, hal: &H) -> usize {
        let mut rung = false;
        while !self.failed
            && self.aers.len() < usize::from(self.aers_wanted).min(MAX_AERS)
            && self.aers.len() + self.events.len() < EVENT_QUEUE
        {
            let mut cmd = SubmissionEntry::new(AdminOpcode::ASYNC_EVENT_REQUEST.0, 0);
            let cid = self.take_cid();
            cmd.cdw0.set_cid(cid);
            if !self.sq.push(&cmd) {
                break;
            }
            let _ = self.aers.push(cid);
            rung = true;
        }
        if rung {
            self.sq.ring(hal);
        }
        self.aers.len()
    }

    /// Consumes up to `max` completions posted so far (at most a ring's
    /// worth), each through [`route`](Self::route); returns how many.
    pub(crate) fn reap<H: Hal>(&mut self, hal: &H, max: usize) -> usize {
        let mut n = 0;
        while n < max.min(usize::from(self.cq.size())) {
            let Some(entry) = self.cq.peek(hal) else { break };
            self.cq.advance();
            self.cq.ring(hal);
            n += 1;
            let sq_ok = entry.sqid == 0 && self.sq.update_head(entry.sqhd);
            if entry.sqid == 0 && !sq_ok {
                self.distrust(entry.cid);
            }
            if !(sq_ok && self.route(hal, &entry)) {
                self.bogus_completions += 1;
            }
        }
        n
    }

    /// An entry with an impossible SQ head named `cid`: it is not taken as a
    /// completion, but the device may be done with that command, and a later
    /// entry naming the same CID could not be told from its completion (a
    /// Create I/O Queue it reports as refused would have its memory freed
    /// while the queue exists). A command outstanding under `cid` ends as
    /// after a timeout, its fate unknown, and the queue is failed until a
    /// reset.
    fn distrust(&mut self, cid: u16) {
        if let Some(a) = self.asynchronous.iter_mut().find(|a| a.cid == cid && a.result.is_none()) {
            a.result = Some(Err(Error::Timeout(Wait::AdminCommand)));
            self.failed = true;
        }
    }

    /// Takes a completion that is not the one a caller waits for: the result
    /// of an asynchronous command, or an event (queued, and its AER
    /// re-armed). False if it names no command outstanding.
    fn route<H: Hal>(&mut self, hal: &H, entry: &CompletionEntry) -> bool {
        if self.keep_async(entry) {
            return true;
        }
        let Some(i) = self.aers.iter().position(|&cid| cid == entry.cid) else {
            return false;
        };
        self.aers.swap_remove(i);
        if entry.status.without_phase().is_success() {
            // `arm_aers` left room for every event the outstanding AERs
            // can bring.
            let _ = self.events.push_back(entry.dw0);
        } else {
            // Refused (Asynchronous Event Request Limit Exceeded, or a
            // controller that does not take them): not submitted again.
            self.aer_errors = self.aer_errors.saturating_add(1);
            self.aers_wanted = self.aers_wanted.saturating_sub(1);
        }
        self.arm_aers(hal);
        true
    }

    /// Aborts in flight.
    pub(crate) fn aborts_in_flight(&self) -> usize {
        self.asynchronous.iter().filter(|a| a.result.is_none() && a.kind == AsyncKind::Abort).count()
    }

    /// Sends Keep Alive (section 5.16) when it is due, at half the Keep
    /// Alive Timeout since the last one, unless one is still out (its
    /// timeout then resets the controller through `expire_async`).
    pub(crate) fn keep_alive<H: Hal>(&mut self, hal: &H, timeout: Duration) -> Result {
        let now = hal.now();
        if self.kato_ms == 0
            || now < self.next_keep_alive
            || self.asynchronous.iter().any(|a| a.kind == AsyncKind::KeepAlive)
        {
            return Ok(());
        }
        if self.asynchronous.is_full() {
            // Aborts hold every slot: try again on the next call.
            return Ok(());
        }
        let cmd = SubmissionEntry::new(AdminOpcode::KEEP_ALIVE.0, 0);
        self.post(hal, cmd, timeout, AsyncKind::KeepAlive, |_, _| {})?;
        self.next_keep_alive = now.saturating_add(Duration::from_millis(u64::from(self.kato_ms) / 2));
        Ok(())
    }

    /// Submits `cmd` without waiting for it; returns its CID, the ticket for
    /// [`async_result`](Self::async_result). `None` when no slot is free.
    pub(crate) fn submit_async<H: Hal>(
        &mut self,
        hal: &H,
        cmd: SubmissionEntry,
        timeout: Duration,
        kind: AsyncKind,
    ) -> Result<Option<Ticket>> {
        if self.failed {
            return Err(Error::ControllerFailed);
        }
        self.expire_async(hal)?;
        if self.asynchronous.is_full() {
            return Ok(None);
        }
        self.post(hal, cmd, timeout, kind, |_, _| {}).map(Some)
    }

    /// Submits a command a blocking caller will wait for (with
    /// [`async_result`](Self::async_result), taking the lock for each look).
    /// `Ok(None)`: no slot is free now, try again. `ControllerFailed`:
    /// nothing was sent, because the queue is failed, or because another
    /// command is past its deadline (the queue is failed from now on, and
    /// the caller heals it with a reset).
    /// With `shared_page`, the command takes the admin data page
    /// (`data_owner`) before it goes out.
    pub(crate) fn submit_waited<H: Hal>(
        &mut self,
        hal: &H,
        cmd: SubmissionEntry,
        timeout: Duration,
        shared_page: bool,
    ) -> Result<Option<Ticket>> {
        if self.failed || self.expire_async(hal).is_err() {
            return Err(Error::ControllerFailed);
        }
        if self.asynchronous.is_full() {
            return Ok(None);
        }
        let take_page = |q: &mut Self, cid| {
            if shared_page {
                q.data_owner = Some(cid);
            }
        };
        self.post(hal, cmd, timeout, AsyncKind::Waited, take_page).map(Some)
    }

    /// An asynchronous command past its deadline whose owner has not come
    /// back for it (a queue pair that is not polled) would hold its slot,
    /// and its place under the abort command limit, for good: that is a
    /// timeout of the admin queue (failed from now on), which the caller
    /// answers with a reset.
    pub(crate) fn expire_async<H: Hal>(&mut self, hal: &H) -> Result {
        let now = hal.now();
        if self.asynchronous.iter().any(|a| a.result.is_none() && now >= a.deadline) {
            self.failed = true;
            return Err(Error::Timeout(Wait::AdminCommand));
        }
        Ok(())
    }

    /// Consumes the completions posted so far, keeping those of asynchronous
    /// commands; then says what became of the one with `cid` (a result is
    /// handed out once). A command past its deadline is a timeout, and the
    /// admin queue is then failed until a reset.
    pub(crate) fn async_result<H: Hal>(&mut self, hal: &H, ticket: Ticket) -> AsyncResult {
        self.reap(hal, usize::MAX);
        let mine = |a: &AsyncCommand| a.cid == ticket.cid && a.restarts == ticket.restarts;
        let Some(i) = self.asynchronous.iter().position(mine) else {
            // Dropped by a reset (or never submitted).
            return AsyncResult::Done(Err(Error::Reset));
        };
        let done = match self.asynchronous[i].result {
            Some(r) => r,
            None if hal.now() >= self.asynchronous[i].deadline => {
                self.failed = true;
                Err(Error::Timeout(Wait::AdminCommand))
            }
            None => return AsyncResult::Pending,
        };
        self.asynchronous.swap_remove(i);
        AsyncResult::Done(done)
    }

    /// Forgets the asynchronous command of `ticket` (its owner went away);
    /// its completion, if it ever comes, is counted as bogus. A ticket from
    /// before a reset names nothing any more.
    pub(crate) fn cancel_async(&mut self, ticket: Ticket) {
        self.asynchronous.retain(|a| a.cid != ticket.cid || a.restarts != ticket.restarts);
    }

    /// Records `entry` as the result of the asynchronous command it names;
    /// false if it names none that waits for one.
    fn keep_async(&mut self, entry: &CompletionEntry) -> bool {
        let Some(i) = self.asynchronous.iter().position(|a| a.cid == entry.cid && a.result.is_none()) else {
            return false;
        };
        let status = entry.status.without_phase();
        if self.asynchronous[i].kind == AsyncKind::KeepAlive {
            self.asynchronous.swap_remove(i);
            if !status.is_success() {
                self.keep_alive_errors = self.keep_alive_errors.saturating_add(1);
            }
            return true;
        }
        let a = &mut self.asynchronous[i];
        a.result = Some(if status.is_success() { Ok(*entry) } else { Err(Error::Command(status)) });
        true
    }

    /// Gives `cmd` a CID, writes it to the submission queue and rings the
    /// doorbell; returns the CID.
    fn send<H: Hal>(&mut self, hal: &H, mut cmd: SubmissionEntry) -> Result<u16> {
        let cid = self.take_cid();
        cmd.cdw0.set_cid(cid);
        if !self.sq.push(&cmd) {
            // One command waited for at a time, and a few asynchronous ones:
            // the ring can only be full if the device never consumed earlier
            // entries.
            self.failed = true;
            return Err(Error::MalformedDevice(Malformed::AdminQueueStuck));
        }
        self.sq.ring(hal);
        Ok(cid)
    }

    /// The next CID: never 0xFFFF, and never one an asynchronous command
    /// or an AER still holds.
    fn take_cid(&mut self) -> u16 {
        loop {
            let cid = self.next_cid;
            self.next_cid = self.next_cid.wrapping_add(1) % 0xffff;
            if !self.asynchronous.iter().any(|a| a.cid == cid) && !self.aers.contains(&cid) {
                return cid;
            }
        }
    }

    /// Frees the queue memory and the data page.
    ///
    /// # Safety
    ///
    /// The controller is disabled, so it no longer accesses this memory.
    pub(crate) unsafe fn free<H: Hal>(&mut self, hal: &H) {
        self.failed = true;
        // SAFETY: the caller guarantees the device is done with the memory.
        unsafe {
            self.sq.free(hal);
            self.cq.mem.free(hal);
            self.data.free(hal);
            if let Some(mut hmb) = self.hmb.take() {
                hmb.free(hal);
            }
        }
    }

    /// [`execute`](Self::execute), submitting the command again (under a new
    /// CID) while it fails with a status whose Do Not Retry bit is clear, at
    /// most `retries` more times.
    /// A status that carries a Command Retry Delay (CRD 1 to 3) waits
    /// `delays[CRD - 1]` first.
    pub(crate) fn execute_retrying<H: Hal>(
        &mut self,
        hal: &H,
        cmd: SubmissionEntry,
        timeout: Duration,
        retries: u8,
        delays: [Duration; 3],
    ) -> Result<CompletionEntry> {
        let mut tries = 0;
        loop {
            let result = self.execute(hal, cmd, timeout);
            match retry_wait(&result, &mut tries, retries, delays) {
                Some(delay) => hal.delay(delay),
                None => return result,
            }
        }
    }

    /// Submits `cmd` and waits up to `timeout` for its completion. A completion
    /// with an error status is returned as `Error::Command`.
    pub(crate) fn execute<H: Hal>(
        &mut self,
        hal: &H,
        cmd: SubmissionEntry,
        timeout: Duration,
    ) -> Result<CompletionEntry> {
        if self.failed {
            return Err(Error::ControllerFailed);
        }
        let cid = self.send(hal, cmd)?;

        let deadline = hal.now().saturating_add(timeout);
        // Entries consumed since the last look at CSTS and the clock: a
        // device that keeps posting phase-valid garbage must not keep this
        // loop from ever reaching its deadline.
        let mut since_check: u32 = 0;
        let mut bogus: u32 = 0;
        loop {
            if let Some(entry) = self.cq.peek(hal) {
                self.cq.advance();
                self.cq.ring(hal);
                let sq_ok = entry.sqid == 0 && self.sq.update_head(entry.sqhd);
                if entry.cid == cid && sq_ok {
                    let status = entry.status.without_phase();
                    return if status.is_success() { Ok(entry) } else { Err(Error::Command(status)) };
                }
                if entry.sqid == 0 && !sq_ok {
                    // This command's fate is unknown from here on (see
                    // `distrust`): as after a timeout.
                    if entry.cid == cid {
                        self.bogus_completions += 1;
                        self.failed = true;
                        return Err(Error::Timeout(Wait::AdminCommand));
                    }
                    self.distrust(entry.cid);
                }
                if sq_ok && self.route(hal, &entry) {
                    continue;
                }
                self.bogus_completions += 1;
                bogus += 1;
                // One command outstanding, so at most a ring's worth of
                // stale entries can be real; more is a device gone mad.
                if bogus > 2 * self.cq.size() as u32 {
                    self.failed = true;
                    return Err(Error::MalformedDevice(Malformed::CompletionFlood));
                }
            }
            since_check = since_check.wrapping_add(1);
            if since_check.is_multiple_of(64) {
                match Registers::new(hal).csts() {
                    Err(e) => {
                        self.failed = true;
                        return Err(e);
                    }
                    Ok(csts) if csts.cfs() => {
                        self.failed = true;
                        return Err(Error::ControllerFatal);
                    }
                    Ok(_) => {}
                }
                if hal.now() >= deadline {
                    self.failed = true;
                    return Err(Error::Timeout(Wait::AdminCommand));
                }
                hal.delay(Duration::from_micros(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::DmaAlloc;
    use crate::spec::status::Status;
    use crate::test_hal::TestHal;

    fn queue(hal: &TestHal) -> AdminQueue {
        let page = || DmaAlloc::new(hal, 1).unwrap().lend();
        AdminQueue::new(
            SubmissionQueue::new(page(), ADMIN_QUEUE_ENTRIES, 0, 0),
            CompletionQueue::new(page(), ADMIN_QUEUE_ENTRIES, 0, 0),
            page(),
        )
    }

    /// The device posts a successful completion of `cid` at `index`, with
    /// SQHD `sqhd` (phase 1: the first pass).
    fn complete(q: &AdminQueue, index: u16, cid: u16, sqhd: u16) {
        let e = CompletionEntry { cid, sqhd, status: Status::new().with_p(true), ..Default::default() };
        q.cq.mem.write(index as usize * 16, e);
    }

    fn cleanup(mut q: AdminQueue, hal: &TestHal) {
        // SAFETY: no device: nothing uses the memory.
        unsafe { q.free(hal) };
        assert_eq!(hal.live_pages.get(), 0);
    }

    #[test]
    fn a_result_that_came_before_a_reset_is_kept_for_its_owner() {
        let hal = TestHal::default();
        let mut q = queue(&hal);
        let cmd = SubmissionEntry::new(AdminOpcode::IDENTIFY.0, 0);
        let done = q.submit_waited(&hal, cmd, Duration::from_secs(1), false).unwrap().unwrap();
        let lost = q.submit_waited(&hal, cmd, Duration::from_secs(1), false).unwrap().unwrap();
        complete(&q, 0, done.cid, 1);
        // The reset reaps what was posted, then restarts the queue.
        q.reap(&hal, usize::MAX);
        q.restart();
        assert!(matches!(q.async_result(&hal, done), AsyncResult::Done(Ok(e)) if e.cid == done.cid));
        assert_eq!(q.async_result(&hal, lost), AsyncResult::Done(Err(Error::Reset)), "still out: gone");
        cleanup(q, &hal);
    }

    #[test]
    fn a_result_nobody_collects_goes_at_the_second_reset() {
        let hal = TestHal::default();
        let mut q = queue(&hal);
        let cmd = SubmissionEntry::new(AdminOpcode::IDENTIFY.0, 0);
        let orphan = q.submit_waited(&hal, cmd, Duration::from_secs(1), false).unwrap().unwrap();
        complete(&q, 0, orphan.cid, 1);
        q.reap(&hal, usize::MAX);
        q.restart();
        assert_eq!(q.asynchronous.len(), 1, "kept for its owner");
        q.restart();
        assert!(q.asynchronous.is_empty(), "its owner never came: the slot is back");
        assert_eq!(q.async_result(&hal, orphan), AsyncResult::Done(Err(Error::Reset)));
        cleanup(q, &hal);
    }

    #[test]
    fn a_ticket_from_before_a_reset_names_no_later_command() {
        let hal = TestHal::default();
        let mut q = queue(&hal);
        let cmd = SubmissionEntry::new(AdminOpcode::ABORT.0, 0);
        let old = q.submit_async(&hal, cmd, Duration::from_secs(1), AsyncKind::Abort).unwrap().unwrap();
        q.restart();
        // The CID counter wraps round to the old ticket's CID.
        q.next_cid = old.cid;
        let new = q.submit_waited(&hal, cmd, Duration::from_secs(1), true).unwrap().unwrap();
        assert_eq!(new.cid, old.cid, "the same CID, a later round");
        assert_eq!(q.data_owner, Some(new.cid), "the page is taken before the doorbell");
        // The stale owner cancels and collects: neither touches the new one.
        q.cancel_async(old);
        assert_eq!(q.async_result(&hal, old), AsyncResult::Done(Err(Error::Reset)));
        assert_eq!(q.async_result(&hal, new), AsyncResult::Pending);
        complete(&q, 0, new.cid, 1);
        assert!(matches!(q.async_result(&hal, new), AsyncResult::Done(Ok(_))));
        cleanup(q, &hal);
    }
}
