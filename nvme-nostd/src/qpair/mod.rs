//! I/O queue pairs: many commands in flight, no lock and no allocation on the
//! submit and completion paths (NVMe Base Specification 1.4, sections 4.1, 5.3,
//! 5.4 and 6).
//!
//! `mod.rs` holds the submit and completion paths; `setup.rs` creating and
//! deleting queues; `recovery.rs` timeouts, abort, reset and removal.

mod recovery;
mod setup;

use crate::buffer::IoBuffer;
use crate::controller::Controller;
use crate::dma::DmaMemory;
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::prp::{self, PrpListSink};
use crate::queue::{CompletionQueue, SubmissionQueue};
use crate::slots::{Cid, SlotPool};
use crate::spec::command::{IoOpcode, SubmissionEntry};
use crate::spec::dwords::ReadWriteCdw12;
use crate::spec::status::{path, Status, StatusCodeType};
use core::ptr::NonNull;
use core::time::Duration;
use hal_traits::{DeviceAddr, Direction, Hal, PAGE_SIZE};

/// The shape of an I/O queue pair, asked for at creation.
#[derive(Clone, Copy, Debug)]
pub struct QpairOptions {
    /// Entries in each of the submission and completion queues; capped by
    /// CAP.MQES + 1, and at least one more than the number of request slots.
    pub entries: u16,
    /// The largest transfer to allow, in bytes; the controller's MDTS lowers it.
    /// Each request slot keeps PRP list pages for this much.
    pub max_transfer_bytes: usize,
    /// QPRIO for weighted round robin arbitration (0 urgent to 3 low); ignored
    /// under round robin.
    pub priority: u8,
}

impl Default for QpairOptions {
    fn default() -> Self {
        QpairOptions { entries: 256, max_transfer_bytes: 4 << 20, priority: 0 }
    }
}

/// Counters of a queue pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Commands handed to the controller.
    pub submitted: u64,
    /// Completions delivered to their owner.
    pub completed: u64,
    /// Completion entries rejected: unknown or stale CID, wrong SQ identifier,
    /// or an impossible SQ head.
    pub bogus_completions: u64,
    /// Commands submitted again after a retryable error status.
    pub retries: u64,
    /// Commands that timed out.
    pub timeouts: u64,
    /// Timed-out commands the controller agreed to abort.
    pub aborts: u64,
    /// Controller resets this queue pair asked for.
    pub resets: u64,
    /// Requests failed by the driver (reset, removal) rather than the device.
    pub failed_by_driver: u64,
}

/// A rejected submission: nothing was submitted, and the buffer and context
/// come back to the caller.
#[derive(Debug)]
pub struct SubmitError<T, C> {
    /// Why.
    pub error: Error,
    /// The buffer (or `Option` of it, or `()`) that was offered.
    pub buffer: T,
    /// The context that was offered.
    pub context: C,
}

/// A completed request, handed to the poll callback with what it owned.
#[derive(Debug)]
pub struct Completion<B, C> {
    /// The command identifier the submission returned.
    pub cid: Cid,
    /// The completion status the device posted. For a request the driver
    /// ended itself (reset, removal) it is "command aborted by host" (SCT 3h,
    /// SC 71h) and [`error`](Completion::error) says why.
    pub status: Status,
    /// The driver's reason, when the request did not end with the device's
    /// own status: [`Error::Timeout`], [`Error::Reset`] or
    /// [`Error::DeviceRemoved`].
    pub error: Option<Error>,
    /// Dword 0 of the completion entry (command specific).
    pub dw0: u32,
    /// The request's buffer, now the caller's again.
    pub buffer: Option<B>,
    /// The request's context.
    pub context: C,
}

impl<B, C> Completion<B, C> {
    /// `Ok` for a successful status; the driver's error, or else
    /// [`Error::Command`] with the device's status.
    pub fn result(&self) -> Result {
        if let Some(e) = self.error {
            Err(e)
        } else if self.status.is_success() {
            Ok(())
        } else {
            Err(Error::Command(self.status))
        }
    }
}

/// How a buffer was made visible to the device.
struct Shared {
    vaddr: NonNull<u8>,
    len: usize,
    daddr: DeviceAddr,
    direction: Direction,
    /// True when [`Hal::share`] mapped it (and `unshare` must undo it).
    by_hal: bool,
}

// SAFETY: a Shared records where the request's own buffer lives; the request
// (and so the buffer, which is Send when the queue pair is) moves with it.
unsafe impl Send for Shared {}

struct Request<B, C> {
    buffer: Option<B>,
    context: C,
    shared: Option<Shared>,
    /// The command as submitted (for retries, aborts and reports).
    cmd: SubmissionEntry,
    /// When it times out (meaningful only when timeouts are on).
    deadline: Duration,
    /// Times it was submitted again after a retryable error.
    retries: u8,
    /// It timed out (whatever happens next, its owner hears `Timeout`).
    timed_out: bool,
    /// An Abort for it was accepted; a second deadline escalates to a reset.
    aborted: bool,
    /// Ended by the driver (reset, removal): delivered by the next `poll`.
    done: Option<Error>,
}

/// The status given to requests that the driver ends itself.
const HOST_ABORTED: Status = Status::of(StatusCodeType::PATH_RELATED, path::COMMAND_ABORTED_BY_HOST);

/// An I/O submission queue and its completion queue, with a pool of `N` request
/// slots. Each request owns a buffer of type `B` and a caller context `C` until
/// its completion hands them back from [`poll`](IoQueuePair::poll).
///
/// Use one queue pair per thread: `submit` and `poll` take `&mut self` and no
/// lock. Dropping the pair deletes its queues (which makes the controller
/// abandon their commands) before any buffer is released; if that fails it
/// disables the controller, and if even that fails it leaks the buffers rather
/// than free memory the device may still write.
pub struct IoQueuePair<'c, H: Hal, B: IoBuffer, C, const N: usize> {
    ctrlr: &'c Controller<H>,
    qid: u16,
    sq: SubmissionQueue,
    cq: CompletionQueue,
    slots: SlotPool<Request<B, C>, N>,
    prp: Option<DmaMemory>,
    prp_pages_per_slot: usize,
    max_transfer: usize,
    stats: QueueStats,
    /// The controller's reset epoch these queues belong to.
    epoch: u32,
    /// Why the queue pair cannot take requests (its queues could not be
    /// created again after a reset, or the device is gone).
    failed: Option<Error>,
    /// Requests ended by the driver and not yet delivered.
    pending_done: usize,
    /// `ControllerOptions::io_timeout`.
    timeout: Option<Duration>,
    /// When to look for timed-out requests next.
    next_timeout_check: Duration,
    /// QPRIO, kept to create the queues again after a reset.
    priority: u8,
}

struct SlotPrpSink<'a> {
    mem: Option<&'a DmaMemory>,
    first: usize,
    pages: usize,
}

impl PrpListSink for SlotPrpSink<'_> {
    fn pages(&self) -> usize {
        self.pages
    }
    fn page_addr(&self, page: usize) -> u64 {
        self.mem.map_or(0, |m| m.daddr((self.first + page) * PAGE_SIZE).0)
    }
    fn write(&mut self, page: usize, index: usize, entry: u64) {
        if let Some(m) = self.mem {
            m.write((self.first + page) * PAGE_SIZE + index * 8, entry);
        }
    }
}

impl<'c, H: Hal, B: IoBuffer, C, const N: usize> IoQueuePair<'c, H, B, C, N> {
    /// The queue identifier (SQID = CQID).
    pub fn qid(&self) -> u16 {
        self.qid
    }

    /// Entries in each queue.
    pub fn entries(&self) -> u16 {
        self.sq.size()
    }

    /// The number of request slots, `N`.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Requests submitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.slots.in_flight()
    }

    /// The largest transfer this queue pair accepts, in bytes.
    pub fn max_transfer_bytes(&self) -> usize {
        self.max_transfer
    }

    /// The counters.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    /// Why the queue pair takes no requests now, if it does not.
    pub fn failure(&self) -> Option<Error> {
        self.failed
    }

    /// The controller this queue pair belongs to.
    pub fn controller(&self) -> &'c Controller<H> {
        self.ctrlr
    }

    /// Reads `blocks` logical blocks from `lba` of `ns` into `buffer` (NVM
    /// command set, Read). The buffer must hold at least `blocks` blocks.
    pub fn read(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>> {
        self.read_write(IoOpcode::READ, ns, lba, blocks, buffer, context)
    }

    /// Writes `blocks` logical blocks from `buffer` to `lba` of `ns` (NVM
    /// command set, Write).
    pub fn write(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>> {
        self.read_write(IoOpcode::WRITE, ns, lba, blocks, buffer, context)
    }

    fn read_write(
        &mut self,
        opcode: IoOpcode,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>> {
        let checked = if ns.controller() != self.ctrlr.id() {
            Err(Error::InvalidArgument("namespace handle of another controller"))
        } else {
            match ns.unsupported_reason() {
                Some(why) => Err(Error::Unsupported(why)),
                None => ns.check_range(lba, blocks),
            }
        };
        let len = match checked {
            Ok(len) => len,
            Err(error) => return Err(SubmitError { error, buffer, context }),
        };
        let mut cmd = SubmissionEntry::new(opcode.0, ns.id());
        // SLBA in CDW10 (low) and CDW11 (high); NLB is 0-based (check_range
        // allows at most 65536 blocks).
        cmd.cdw10 = lba as u32;
        cmd.cdw11 = (lba >> 32) as u32;
        cmd.cdw12 = ReadWriteCdw12::new().with_nlb((blocks - 1) as u16).into_bits();
        let direction = if opcode == IoOpcode::READ { Direction::FromDevice } else { Direction::ToDevice };
        self.submit_data(cmd, buffer, len, direction, context)
    }

    /// Flushes the volatile write cache of `ns` (NVM command set, Flush).
    pub fn flush(&mut self, ns: &Namespace, context: C) -> Result<Cid, SubmitError<(), C>> {
        if ns.controller() != self.ctrlr.id() {
            let error = Error::InvalidArgument("namespace handle of another controller");
            return Err(SubmitError { error, buffer: (), context });
        }
        let cmd = SubmissionEntry::new(IoOpcode::FLUSH.0, ns.id());
        self.submit_entry(cmd, context).map_err(|(error, context)| SubmitError { error, buffer: (), context })
    }

    /// Submits any I/O command. The driver sets CID, PRP1 and PRP2; the data
    /// direction comes from the opcode's bits 1:0 (NVMe 1.4 figure 104), and
    /// the whole buffer is the transfer.
    ///
    /// # Safety
    ///
    /// The driver cannot know how many bytes an arbitrary command transfers:
    /// the caller guarantees that the command moves at most `buffer.len()`
    /// bytes (for example NLB × block size for a read), none when `buffer` is
    /// `None`, and carries no memory address in other fields.
    pub unsafe fn submit_raw(
        &mut self,
        mut cmd: SubmissionEntry,
        buffer: Option<B>,
        context: C,
    ) -> Result<Cid, SubmitError<Option<B>, C>> {
        let direction = match IoOpcode(cmd.cdw0.opc()).transfer_bits() {
            0 => None,
            1 => Some(Direction::ToDevice),
            2 => Some(Direction::FromDevice),
            _ => Some(Direction::Bidirectional),
        };
        let bad = if cmd.cdw0.psdt() != 0 || cmd.cdw0.fuse() != 0 || cmd.mptr != 0 {
            Some(Error::InvalidArgument("raw commands may not set PSDT, FUSE or MPTR yet"))
        } else if direction.is_none() && buffer.is_some() {
            Some(Error::InvalidArgument("this opcode transfers no data"))
        } else {
            None
        };
        if let Some(error) = bad {
            return Err(SubmitError { error, buffer, context });
        }
        cmd.prp1 = 0;
        cmd.prp2 = 0;
        match (buffer, direction) {
            (Some(buf), Some(dir)) => {
                let len = buf.len();
                self.submit_data(cmd, buf, len, dir, context).map_err(|e| SubmitError {
                    error: e.error,
                    buffer: Some(e.buffer),
                    context: e.context,
                })
            }
            (buffer, _) => self.submit_entry(cmd, context).map_err(|(error, context)| SubmitError {
                error,
                buffer,
                context,
            }),
        }
    }

    /// Checks and shares a data buffer, builds its PRPs and submits. On error
    /// nothing reached the device and the buffer comes back.
    fn submit_data(
        &mut self,
        mut cmd: SubmissionEntry,
        mut buf: B,
        len: usize,
        direction: Direction,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>> {
        let check = if let Err(e) = self.ready() {
            Err(e)
        } else if len == 0 {
            Err(Error::InvalidArgument("zero-length transfer"))
        } else if len > buf.len() {
            Err(Error::BufferTooSmall { needed: len, actual: buf.len() })
        } else if len > self.max_transfer {
            Err(Error::TransferTooLarge { requested: len, max: self.max_transfer })
        } else if !(buf.as_ptr() as usize).is_multiple_of(4) {
            Err(Error::BufferMisaligned)
        } else {
            Ok(())
        };
        if let Err(error) = check {
            return Err(SubmitError { error, buffer: buf, context });
        }
        let Some(slot) = self.reserve() else {
            return Err(SubmitError { error: Error::QueueFull, buffer: buf, context });
        };
        let Some(vaddr) = NonNull::new(buf.as_mut_ptr()) else {
            self.slots.cancel(slot);
            return Err(SubmitError { error: Error::InvalidArgument("null buffer"), buffer: buf, context });
        };
        let hal = &self.ctrlr.hal;
        // SAFETY: `buf` is an IoBuffer, so its bytes stay in place and
        // exclusive while the request owns it; `unshare` is called once the
        // device is done (in `poll`, or in `Drop` after the queue is quiesced),
        // or just below if the submission fails.
        let shared = match unsafe { hal.share(vaddr, len, direction) } {
            Ok(daddr) => Shared { vaddr, len, daddr, direction, by_hal: true },
            Err(e) => {
                self.slots.cancel(slot);
                return Err(SubmitError { error: Error::Hal(e), buffer: buf, context });
            }
        };
        let mut sink = SlotPrpSink {
            mem: self.prp.as_ref(),
            first: slot.index() * self.prp_pages_per_slot,
            pages: self.prp_pages_per_slot,
        };
        match prp::build(shared.daddr.0, len, PAGE_SIZE, &mut sink) {
            Ok(p) => {
                cmd.prp1 = p.prp1;
                cmd.prp2 = p.prp2;
            }
            Err(error) => {
                // SAFETY: shared just above; the device never saw it.
                unsafe { unshare(hal, &shared) };
                self.slots.cancel(slot);
                let error = match error {
                    Error::TransferTooLarge { requested, .. } => {
                        Error::TransferTooLarge { requested, max: self.max_transfer }
                    }
                    other => other,
                };
                return Err(SubmitError { error, buffer: buf, context });
            }
        }
        let request = self.request(cmd, Some(buf), context, Some(shared));
        let cid = self.slots.fill(slot, request);
        self.push(cmd, cid);
        Ok(cid)
    }

    /// Submits a command that moves no data.
    fn submit_entry(&mut self, cmd: SubmissionEntry, context: C) -> Result<Cid, (Error, C)> {
        if let Err(e) = self.ready() {
            return Err((e, context));
        }
        let Some(slot) = self.reserve() else {
            return Err((Error::QueueFull, context));
        };
        let request = self.request(cmd, None, context, None);
        let cid = self.slots.fill(slot, request);
        self.push(cmd, cid);
        Ok(cid)
    }

    /// A new request; reads the clock only when timeouts are on.
    fn request(
        &self,
        cmd: SubmissionEntry,
        buffer: Option<B>,
        context: C,
        shared: Option<Shared>,
    ) -> Request<B, C> {
        let deadline = match self.timeout {
            Some(t) => self.ctrlr.hal.now().saturating_add(t),
            None => Duration::MAX,
        };
        Request {
            buffer,
            context,
            shared,
            cmd,
            deadline,
            retries: 0,
            timed_out: false,
            aborted: false,
            done: None,
        }
    }

    /// A free request slot, if the submission queue has room too.
    fn reserve(&mut self) -> Option<crate::slots::Reserved> {
        if self.sq.is_full() {
            return None;
        }
        self.slots.reserve()
    }

    /// Writes the entry and rings the doorbell.
    fn push(&mut self, mut cmd: SubmissionEntry, cid: Cid) {
        cmd.cdw0.set_cid(cid.0);
        // Cannot fail: `reserve` checked that the ring has room and nothing was
        // pushed since.
        let _ = self.sq.push(&cmd);
        self.sq.ring(&self.ctrlr.hal);
        self.stats.submitted += 1;
    }

    /// Processes up to `max` completions (all available if `max` is 0), handing
    /// each request's buffer and context to `on_complete`. Returns the number
    /// delivered.
    ///
    /// Entries that name no request in flight (a stale, repeated or
    /// out-of-range CID, a wrong SQID, an impossible SQ head) are consumed,
    /// counted in [`QueueStats::bogus_completions`], and otherwise ignored. A
    /// retryable error status (DNR clear) submits the command again, up to
    /// `ControllerOptions::retry_count` times. With I/O timeouts on, `poll`
    /// also finds timed-out requests and aborts them, or resets the controller;
    /// requests ended by a reset or a removal are delivered here too, each
    /// exactly once.
    pub fn poll(&mut self, max: usize, mut on_complete: impl FnMut(Completion<B, C>)) -> usize {
        let _ = self.ready();
        let mut delivered = self.deliver_done(max, &mut on_complete);
        let hal = &self.ctrlr.hal;
        let retry_count = self.ctrlr.options().retry_count;
        let mut consumed = false;
        while max == 0 || delivered < max {
            let Some(entry) = self.cq.peek(hal) else {
                break;
            };
            self.cq.advance();
            consumed = true;
            let cid = Cid(entry.cid);
            let valid = entry.sqid == self.qid
                && self.sq.head_plausible(entry.sqhd)
                && self.slots.get(cid).is_some_and(|r| r.done.is_none());
            if !valid {
                self.stats.bogus_completions += 1;
                continue;
            }
            self.sq.update_head(entry.sqhd);
            let status = entry.status.without_phase();
            let retryable = !status.is_success() && !status.dnr() && self.failed.is_none();
            if retryable && self.retry(cid, retry_count).is_some() {
                continue;
            }
            let Some(mut req) = self.slots.remove(cid) else {
                self.stats.bogus_completions += 1;
                continue;
            };
            if let Some(s) = req.shared.take() {
                // SAFETY: the command completed, so the device is done with
                // the buffer.
                unsafe { unshare(hal, &s) };
            }
            let error = (req.timed_out && !status.is_success()).then_some(Error::Timeout("I/O command"));
            self.stats.completed += 1;
            delivered += 1;
            on_complete(Completion {
                cid,
                status,
                error,
                dw0: entry.dw0,
                buffer: req.buffer,
                context: req.context,
            });
        }
        if consumed {
            self.cq.ring(hal);
        }
        // Look for timeouts only once every posted completion has been taken:
        // a request whose completion waits in the queue is not late.
        if self.timeout.is_some() && self.cq.peek(hal).is_none() {
            self.check_timeouts();
            if self.pending_done > 0 && (max == 0 || delivered < max) {
                let left = if max == 0 { 0 } else { max - delivered };
                delivered += self.deliver_done(left, &mut on_complete);
            }
        }
        delivered
    }

    /// Submits the command of request `cid` again under a new CID, if it has
    /// retries left and was not aborted. Returns the new CID.
    fn retry(&mut self, cid: Cid, retry_count: u8) -> Option<Cid> {
        let req = self.slots.get(cid)?;
        if req.retries >= retry_count || req.timed_out || self.sq.is_full() {
            return None;
        }
        let new_cid = self.slots.renew(cid)?;
        let deadline = match self.timeout {
            Some(t) => self.ctrlr.hal.now().saturating_add(t),
            None => Duration::MAX,
        };
        let req = self.slots.get_mut(new_cid)?;
        req.retries += 1;
        req.deadline = deadline;
        let cmd = req.cmd;
        self.stats.retries += 1;
        self.push(cmd, new_cid);
        Some(new_cid)
    }

    /// Delivers up to `max` (0: all) requests that the driver ended.
    fn deliver_done(&mut self, max: usize, on_complete: &mut impl FnMut(Completion<B, C>)) -> usize {
        if self.pending_done == 0 {
            return 0;
        }
        let mut delivered = 0;
        let limit = if max == 0 { usize::MAX } else { max };
        let stats = &mut self.stats;
        let pending = &mut self.pending_done;
        self.slots.take_where(
            |r| r.done.is_some(),
            limit,
            |cid, req| {
                *pending -= 1;
                stats.completed += 1;
                stats.failed_by_driver += 1;
                delivered += 1;
                on_complete(Completion {
                    cid,
                    status: HOST_ABORTED,
                    error: req.done,
                    dw0: 0,
                    buffer: req.buffer,
                    context: req.context,
                });
            },
        );
        delivered
    }
}

/// Undoes [`Hal::share`] when the HAL did it.
///
/// # Safety
///
/// The device no longer accesses the buffer.
unsafe fn unshare<H: Hal>(hal: &H, s: &Shared) {
    if s.by_hal {
        // SAFETY: these are the arguments and the result of the `share` call
        // that made `s`, and the caller guarantees the device is done.
        unsafe { hal.unshare(s.vaddr, s.len, s.daddr, s.direction) }
    }
}

#[cfg(test)]
mod threads {
    use super::*;
    use hal_traits::{DeviceAddr, DmaRegion, HalError};

    /// A HAL that can be shared between threads (never called).
    struct SharedHal;

    // SAFETY: never used at run time; only its type is checked.
    unsafe impl Hal for SharedHal {
        fn read32(&self, _: usize) -> u32 {
            u32::MAX
        }
        unsafe fn write32(&self, _: usize, _: u32) {}
        fn dma_alloc(&self, _: usize) -> core::result::Result<DmaRegion, HalError> {
            Err(HalError::new(hal_traits::HalErrorKind::Unsupported, "none"))
        }
        unsafe fn dma_free(&self, _: DmaRegion) {}
        unsafe fn share(
            &self,
            _: NonNull<u8>,
            _: usize,
            _: Direction,
        ) -> core::result::Result<DeviceAddr, HalError> {
            Err(HalError::new(hal_traits::HalErrorKind::Unsupported, "none"))
        }
        unsafe fn unshare(&self, _: NonNull<u8>, _: usize, _: DeviceAddr, _: Direction) {}
        fn now(&self) -> Duration {
            Duration::ZERO
        }
        fn delay(&self, _: Duration) {}
    }

    fn send<T: Send>() {}
    fn sync<T: Sync>() {}

    /// One queue pair per thread: the controller is shared, each queue pair
    /// (with its buffers) moves to its own thread.
    #[test]
    fn controller_is_shared_and_queue_pairs_move_between_threads() {
        sync::<Controller<SharedHal>>();
        send::<Controller<SharedHal>>();
        send::<IoQueuePair<'static, SharedHal, crate::DmaBuffer<'static, SharedHal>, u64, 8>>();
        #[cfg(feature = "alloc")]
        send::<IoQueuePair<'static, SharedHal, Vec<u8>, u64, 8>>();
    }
}
