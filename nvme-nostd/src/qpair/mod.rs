//! I/O queue pairs: many commands in flight, no lock and no allocation on the
//! submit and completion paths (NVMe Base Specification 1.4, sections 4.1, 5.3,
//! 5.4 and 6).
//!
//! `mod.rs` holds the submit and completion paths; `setup.rs` creating and
//! deleting queues; `recovery.rs` timeouts, abort, reset and removal.

mod recovery;
pub use recovery::AbortOutcome;
mod setup;

use crate::buffer::IoBuffer;
use crate::controller::Controller;
use crate::dma::DmaMemory;
use crate::error::{Argument, Error, PrpShape, Result, Wait};
use crate::namespace::Namespace;
use crate::prp::{PrpBuilder, PrpListSink};
use crate::queue::{CompletionQueue, Doorbell, SubmissionQueue};
use crate::slots::{Cid, SlotPool};
use crate::spec::command::{IoOpcode, SubmissionEntry};
use crate::spec::dwords::ReadWriteCdw12;
use crate::spec::status::{path, Status, StatusCodeType};
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use core::time::Duration;
use hal_traits::{Direction, Hal, PAGE_SIZE};

/// When submissions ring the submission queue's doorbell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DoorbellMode {
    /// Every submission rings the doorbell (one MMIO write per command): the
    /// lowest latency for a lone command.
    #[default]
    PerSubmission,
    /// Submissions only write their entries; the doorbell is rung once for
    /// all of them by [`IoQueuePair::ring_doorbell`] or at the start of the
    /// next [`IoQueuePair::poll`]. Fewer MMIO writes when commands come in
    /// batches; a command is not seen by the device until then.
    Batched,
}

/// The shape of an I/O queue pair, asked for at creation.
///
/// ```
/// use nvme_nostd::{DoorbellMode, QpairOptions};
/// let options = QpairOptions::default().with_entries(64).with_doorbell(DoorbellMode::Batched);
/// assert_eq!(options.entries, 64);
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct QpairOptions {
    /// Entries in each of the submission and completion queues; capped by
    /// CAP.MQES + 1, and at least one more than the number of request slots.
    /// Default 256.
    pub entries: u16,
    /// The largest transfer to allow, in bytes; the controller's MDTS lowers it.
    /// Each request slot keeps PRP list pages for this much. Default 4 MiB.
    pub max_transfer_bytes: usize,
    /// QPRIO for weighted round robin arbitration (0 urgent to 3 low); ignored
    /// under round robin. Default 0.
    pub priority: u8,
    /// When submissions ring the doorbell. Default one ring per submission.
    pub doorbell: DoorbellMode,
}

impl Default for QpairOptions {
    fn default() -> Self {
        QpairOptions {
            entries: 256,
            max_transfer_bytes: 4 << 20,
            priority: 0,
            doorbell: DoorbellMode::PerSubmission,
        }
    }
}

impl QpairOptions {
    /// Sets [`entries`](Self::entries).
    pub const fn with_entries(mut self, entries: u16) -> Self {
        self.entries = entries;
        self
    }

    /// Sets [`max_transfer_bytes`](Self::max_transfer_bytes).
    pub const fn with_max_transfer_bytes(mut self, bytes: usize) -> Self {
        self.max_transfer_bytes = bytes;
        self
    }

    /// Sets [`priority`](Self::priority).
    pub const fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Sets [`doorbell`](Self::doorbell).
    pub const fn with_doorbell(mut self, doorbell: DoorbellMode) -> Self {
        self.doorbell = doorbell;
        self
    }
}

/// Counters of a queue pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Commands handed to the controller (retries included).
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
    /// Submission queue doorbell writes.
    pub sq_doorbells: u64,
}

/// How much one [`IoQueuePair::poll`] call may deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollLimit {
    /// Everything that is ready (at most one ring's worth of entries per
    /// call, so a device that keeps posting cannot hold the caller).
    All,
    /// At most this many completions.
    AtMost(usize),
}

impl PollLimit {
    fn max(self) -> usize {
        match self {
            PollLimit::All => usize::MAX,
            PollLimit::AtMost(n) => n,
        }
    }
}

/// A rejected submission: nothing was submitted, and the buffer and context
/// come back to the caller.
#[derive(Debug)]
#[must_use = "the rejected buffer and context are in here"]
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
#[non_exhaustive]
pub struct Completion<B, C> {
    /// The command identifier its submission returned (also after the driver
    /// retried it under another one on the wire).
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
    /// The request's buffer, now the caller's again (`None` for a command
    /// without one, and after a surprise removal, whose buffers are leaked:
    /// a device that cannot be disabled cannot be proven stopped).
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

/// How a request's buffer reaches the device, kept to undo it.
struct DmaUse<M> {
    region: NonNull<[u8]>,
    direction: Direction,
    /// What [`Hal::share`] returned; `None` when no share was needed (the
    /// controller's own DMA memory, or memory the HAL translated).
    mapping: Option<M>,
}

// SAFETY: a DmaUse records where the request's own buffer lives; the request
// (and so the buffer, which is Send when the queue pair is) moves with it, and
// the mapping is Send by the bound.
unsafe impl<M: Send> Send for DmaUse<M> {}

/// One request in flight. The buffer and its DMA record are in `ManuallyDrop`:
/// they leave the request only through [`finish`] (device done) or a
/// deliberate leak, never by unwinding or an implicit drop, because the
/// device may still be writing them.
struct Request<M, B, C> {
    buffer: Option<ManuallyDrop<B>>,
    dma: Option<ManuallyDrop<DmaUse<M>>>,
    context: C,
    /// The command as submitted (for retries, aborts and reports).
    cmd: SubmissionEntry,
    /// The CID the submission returned to the caller.
    given: Cid,
    /// When it times out, in HAL ticks; [`NOT_STAMPED`] until the next timeout
    /// scan after its submission stamps it.
    deadline: u64,
    /// Times it was submitted again after a retryable error.
    retries: u8,
    /// It timed out (whatever happens next, its owner hears `Timeout`).
    timed_out: bool,
    /// An Abort for it was accepted; a second deadline escalates to a reset.
    aborted: bool,
    /// Ended by the driver (reset, removal): delivered by the next `poll`.
    done: Option<Error>,
}

/// A deadline not yet set: submissions do not read the clock.
const NOT_STAMPED: u64 = 0;

/// The status given to requests that the driver ends itself.
const HOST_ABORTED: Status = Status::of(StatusCodeType::PATH_RELATED, path::COMMAND_ABORTED_BY_HOST);

/// Gives the device's access to `req`'s buffer back to the CPU (sync, then
/// unshare) and returns the buffer.
///
/// # Safety
///
/// The device no longer accesses the buffer: its command completed, or its
/// queue was deleted, or the controller was disabled since it was submitted.
unsafe fn finish<H: Hal, B, C>(hal: &H, req: &mut Request<H::Mapping, B, C>) -> Option<B> {
    if let Some(dma) = req.dma.take().map(ManuallyDrop::into_inner) {
        // SAFETY: the caller guarantees the device is done; `sync_for_device`
        // was called with the same region and direction at submission, and
        // the mapping is the one `share` returned for them, undone once here.
        unsafe {
            hal.sync_for_cpu(dma.region, dma.direction);
            if let Some(mapping) = dma.mapping {
                hal.unshare(dma.region, dma.direction, mapping);
            }
        }
    }
    req.buffer.take().map(ManuallyDrop::into_inner)
}

/// Leaks `req`'s buffer and mapping: the device may still write them, and
/// nothing can prove otherwise (a removed device).
fn leak<M, B, C>(req: &mut Request<M, B, C>) {
    // Dropping a `ManuallyDrop` never drops its content.
    let _leaked = (req.buffer.take(), req.dma.take());
}

/// Which path a submission comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// A caller of the queue pair: it may recover after a reset, and rings
    /// the doorbell as [`DoorbellMode`] says.
    Direct,
    /// A poll callback ([`Resubmit`]): no recovery (the poll is in the middle
    /// of the completion queue), and the doorbell is rung once when the poll
    /// pass ends.
    InPoll,
}

/// An I/O submission queue and its completion queue, with a pool of `N` request
/// slots. Each request owns a buffer of type `B` and a caller context `C` until
/// its completion hands them back from [`poll`](IoQueuePair::poll).
///
/// Use one queue pair per thread: `submit` and `poll` take `&mut self` and no
/// lock. Dropping the pair deletes its queues (which makes the controller
/// abandon their commands) before any buffer is released; if that fails it
/// resets the controller, and if even that fails it leaks the buffers rather
/// than free memory the device may still write.
pub struct IoQueuePair<'c, H: Hal, B: IoBuffer, C, const N: usize> {
    ctrlr: &'c Controller<H>,
    qid: u16,
    sq: SubmissionQueue,
    cq: CompletionQueue,
    slots: SlotPool<Request<H::Mapping, B, C>, N>,
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
    /// `ControllerOptions::io_timeout` in HAL ticks.
    timeout: Option<u64>,
    /// When to look for timed-out requests next, in HAL ticks.
    next_timeout_check: u64,
    /// QPRIO, kept to create the queues again after a reset.
    priority: u8,
    doorbell: DoorbellMode,
    /// Entries written to the submission queue and not yet announced by its
    /// doorbell.
    sq_pending: bool,
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
        debug_assert!(page < self.pages, "PRP list page beyond the slot's");
        self.mem.map_or(0, |m| m.daddr((self.first + page) * PAGE_SIZE).0)
    }
    fn write(&mut self, page: usize, index: usize, entry: u64) {
        // Never into another slot's pages, whose request may be in flight.
        if page >= self.pages || index >= PAGE_SIZE / 8 {
            debug_assert!(false, "PRP list entry beyond the slot's pages");
            return;
        }
        if let Some(m) = self.mem {
            m.write((self.first + page) * PAGE_SIZE + index * 8, entry);
        }
    }
}

/// Rings a completion queue's head doorbell when dropped, also when a poll
/// callback panics: completions already consumed must be released to the
/// device, or the queue stalls for good once the ring fills.
struct CqHeadGuard<'h, H: Hal> {
    hal: &'h H,
    pending: Option<(Doorbell, u16)>,
}

impl<H: Hal> Drop for CqHeadGuard<'_, H> {
    fn drop(&mut self) {
        if let Some((doorbell, head)) = self.pending.take() {
            doorbell.ring(self.hal, head);
        }
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
        self.qp.read_write(IoOpcode::READ, ns, lba, blocks, buffer, context, Path::InPoll)
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
        self.qp.read_write(IoOpcode::WRITE, ns, lba, blocks, buffer, context, Path::InPoll)
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
        self.read_write(IoOpcode::READ, ns, lba, blocks, buffer, context, Path::Direct)
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
        self.read_write(IoOpcode::WRITE, ns, lba, blocks, buffer, context, Path::Direct)
    }

    #[allow(clippy::too_many_arguments)]
    fn read_write(
        &mut self,
        opcode: IoOpcode,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        buffer: B,
        context: C,
        path: Path,
    ) -> Result<Cid, SubmitError<B, C>> {
        let checked = if ns.controller() != self.ctrlr.id() {
            Err(Error::InvalidArgument(Argument::ForeignNamespace))
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
        self.submit_data(cmd, buffer, len, direction, context, path)
    }

    /// Flushes the volatile write cache of `ns` (NVM command set, Flush).
    pub fn flush(&mut self, ns: &Namespace, context: C) -> Result<Cid, SubmitError<(), C>> {
        self.flush_on(ns, context, Path::Direct)
    }

    fn flush_on(&mut self, ns: &Namespace, context: C, path: Path) -> Result<Cid, SubmitError<(), C>> {
        if ns.controller() != self.ctrlr.id() {
            let error = Error::InvalidArgument(Argument::ForeignNamespace);
            return Err(SubmitError { error, buffer: (), context });
        }
        let cmd = SubmissionEntry::new(IoOpcode::FLUSH.0, ns.id());
        self.submit_entry(cmd, context, path).map_err(|(error, context)| SubmitError {
            error,
            buffer: (),
            context,
        })
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
        cmd: SubmissionEntry,
        buffer: Option<B>,
        context: C,
    ) -> Result<Cid, SubmitError<Option<B>, C>> {
        // SAFETY: forwarded from the caller.
        unsafe { self.raw_on(cmd, buffer, context, Path::Direct) }
    }

    /// # Safety
    ///
    /// As for [`submit_raw`](Self::submit_raw).
    unsafe fn raw_on(
        &mut self,
        mut cmd: SubmissionEntry,
        mut buffer: Option<B>,
        context: C,
        path: Path,
    ) -> Result<Cid, SubmitError<Option<B>, C>> {
        let direction = match IoOpcode(cmd.cdw0.opc()).transfer_bits() {
            0 => None,
            1 => Some(Direction::ToDevice),
            2 => Some(Direction::FromDevice),
            _ => Some(Direction::Bidirectional),
        };
        let bad = if cmd.cdw0.psdt() != 0 || cmd.cdw0.fuse() != 0 || cmd.mptr != 0 {
            Some(Error::InvalidArgument(Argument::RawCommandPointers))
        } else if direction.is_none() && buffer.is_some() {
            Some(Error::InvalidArgument(Argument::DataForNoDataOpcode))
        } else {
            None
        };
        if let Some(error) = bad {
            return Err(SubmitError { error, buffer, context });
        }
        cmd.prp1 = 0;
        cmd.prp2 = 0;
        match (buffer.take(), direction) {
            (Some(mut buf), Some(dir)) => {
                let len = buf.as_dma_slice().len();
                self.submit_data(cmd, buf, len, dir, context, path).map_err(|e| SubmitError {
                    error: e.error,
                    buffer: Some(e.buffer),
                    context: e.context,
                })
            }
            (_, _) => self.submit_entry(cmd, context, path).map_err(|(error, context)| SubmitError {
                error,
                buffer: None,
                context,
            }),
        }
    }

    /// Whether the queue pair takes requests on `path`.
    fn usable(&mut self, path: Path) -> Result {
        match path {
            Path::Direct => self.ready(),
            Path::InPoll => {
                if self.ctrlr.is_removed() {
                    Err(Error::DeviceRemoved)
                } else if self.ctrlr.epoch() != self.epoch {
                    Err(Error::Reset)
                } else {
                    self.failed.map_or(Ok(()), Err)
                }
            }
        }
    }

    /// Checks a data buffer, hands it to the device (own DMA memory,
    /// translated, or shared), builds its PRPs and submits. On error nothing
    /// reached the device and the buffer comes back.
    fn submit_data(
        &mut self,
        mut cmd: SubmissionEntry,
        mut buf: B,
        len: usize,
        direction: Direction,
        context: C,
        path: Path,
    ) -> Result<Cid, SubmitError<B, C>> {
        let slice = buf.as_dma_slice();
        let start = slice.cast::<u8>().as_ptr() as usize;
        let align = H::DMA_ALIGNMENT.max(4);
        let check = if let Err(e) = self.usable(path) {
            Err(e)
        } else if len == 0 {
            Err(Error::InvalidArgument(Argument::ZeroLength))
        } else if len > slice.len() {
            Err(Error::BufferTooSmall { needed: len, actual: slice.len() })
        } else if len > self.max_transfer {
            Err(Error::TransferTooLarge { requested: len, max: self.max_transfer })
        } else if !start.is_multiple_of(4) {
            Err(Error::BufferMisaligned { required: 4 })
        } else if direction.device_writes() && !(start.is_multiple_of(align) && len.is_multiple_of(align)) {
            // Cache maintenance on a non-coherent system works on whole
            // lines: the device must not write a line the CPU shares.
            Err(Error::BufferMisaligned { required: align })
        } else {
            Ok(())
        };
        if let Err(error) = check {
            return Err(SubmitError { error, buffer: buf, context });
        }
        // The slot the request will take: its PRP list pages are filled
        // before it is taken, so that a panic in the HAL (or in the buffer)
        // on the way cannot leave a slot taken by nothing.
        let Some(index) = self.free_slot() else {
            return Err(SubmitError { error: Error::QueueFull, buffer: buf, context });
        };
        let region = NonNull::slice_from_raw_parts(slice.cast::<u8>(), len);
        let hal = &self.ctrlr.hal;
        let mut sink = SlotPrpSink {
            mem: self.prp.as_ref(),
            first: index * self.prp_pages_per_slot,
            pages: self.prp_pages_per_slot,
        };
        let mut prp = PrpBuilder::new(&mut sink, len);
        // Memory the HAL can already reach (its own DMA memory, memory
        // registered up front) is translated; any other buffer is shared.
        let mapping = if hal.translate(region, &mut prp) {
            None
        } else {
            // SAFETY: `buf` is an IoBuffer, so its bytes stay in place and
            // exclusive while the request owns it; `unshare` is called once the
            // device is done (`finish`), or just below if the submission fails.
            match unsafe { hal.share(region, direction, &mut prp) } {
                Ok(m) => Some(m),
                Err(e) => return Err(SubmitError { error: Error::Hal(e), buffer: buf, context }),
            }
        };
        match prp.finish() {
            Ok(p) => {
                cmd.prp1 = p.prp1;
                cmd.prp2 = p.prp2;
            }
            Err(error) => {
                if let Some(m) = mapping {
                    // SAFETY: shared just above; the device never saw it (and,
                    // with no `sync_for_cpu` before it, a bouncing back-end
                    // copies nothing back).
                    unsafe { hal.unshare(region, direction, m) };
                }
                let error = match error {
                    Error::NotPrpShaped(PrpShape::TooManyPages) => {
                        Error::TransferTooLarge { requested: len, max: self.max_transfer }
                    }
                    other => other,
                };
                return Err(SubmitError { error, buffer: buf, context });
            }
        }
        // SAFETY: the region is the request's buffer, which the CPU does not
        // touch until `finish` calls `sync_for_cpu` for it.
        unsafe { hal.sync_for_device(region, direction) };
        // Nothing took a slot since `free_slot`, which checked the ring and
        // the pool, so this is the same slot; undone all the same if not.
        let Some(slot) = self.reserve().filter(|s| s.index() == index) else {
            // SAFETY: nothing was submitted: the device never saw the buffer.
            unsafe {
                hal.sync_for_cpu(region, direction);
                if let Some(m) = mapping {
                    hal.unshare(region, direction, m);
                }
            }
            return Err(SubmitError { error: Error::QueueFull, buffer: buf, context });
        };
        let dma = DmaUse { region, direction, mapping };
        let cid = self.slots.fill(slot, |cid| self::request(cmd, cid, Some(buf), Some(dma), context));
        self.push(cmd, cid, path);
        Ok(cid)
    }

    /// Submits a command that moves no data.
    fn submit_entry(&mut self, cmd: SubmissionEntry, context: C, path: Path) -> Result<Cid, (Error, C)> {
        if let Err(e) = self.usable(path) {
            return Err((e, context));
        }
        let Some(slot) = self.reserve() else {
            return Err((Error::QueueFull, context));
        };
        let cid = self.slots.fill(slot, |cid| self::request(cmd, cid, None, None, context));
        self.push(cmd, cid, path);
        Ok(cid)
    }

    /// The slot [`reserve`](Self::reserve) will take next, if the submission
    /// queue has room too.
    fn free_slot(&self) -> Option<usize> {
        if self.sq.is_full() {
            return None;
        }
        self.slots.next_free()
    }

    /// A free request slot, if the submission queue has room too.
    fn reserve(&mut self) -> Option<crate::slots::Reserved> {
        if self.sq.is_full() {
            return None;
        }
        self.slots.reserve()
    }

    /// Writes the entry under `cid` and rings the doorbell as `path` and the
    /// doorbell mode say.
    fn push(&mut self, mut cmd: SubmissionEntry, cid: Cid, path: Path) {
        cmd.cdw0.set_cid(cid.0);
        // Cannot fail: `reserve` (or `retry`) checked that the ring has room
        // and nothing was pushed since.
        let _ = self.sq.push(&cmd);
        self.sq_pending = true;
        self.stats.submitted += 1;
        if path == Path::Direct && self.doorbell == DoorbellMode::PerSubmission {
            self.ring_doorbell();
        }
    }

    /// Rings the submission queue doorbell for every entry written since the
    /// last ring (for [`DoorbellMode::Batched`]; `poll` does it too).
    pub fn ring_doorbell(&mut self) {
        if self.sq_pending {
            self.sq_pending = false;
            self.stats.sq_doorbells += 1;
            self.sq.ring(&self.ctrlr.hal);
        }
    }

    /// Processes the completions that are ready, up to `limit`, handing each
    /// request's buffer and context to `on_complete`, and returns how many it
    /// delivered. The callback may submit more requests through its
    /// [`Resubmit`] (one doorbell write for all of them when the pass ends).
    ///
    /// Entries that name no request in flight (a stale, repeated or
    /// out-of-range CID, a wrong SQID, an impossible SQ head) are consumed,
    /// counted in [`QueueStats::bogus_completions`], and otherwise ignored;
    /// one call consumes at most one ring's worth of entries. A retryable
    /// error status (DNR clear) submits the command again, up to
    /// `ControllerOptions::retry_count` times. With I/O timeouts on, `poll`
    /// also finds timed-out requests (one clock read per call) and aborts
    /// them, or resets the controller; requests ended by a reset or a removal
    /// are delivered here too, each exactly once.
    ///
    /// If the callback panics, the completions consumed so far are still
    /// released to the device, and the request being delivered is the
    /// callback's (its buffer is dropped by the unwinding).
    pub fn poll<F>(&mut self, limit: PollLimit, mut on_complete: F) -> usize
    where
        F: FnMut(&mut Resubmit<'_, 'c, H, B, C, N>, Completion<B, C>),
    {
        let _ = self.ready();
        self.ring_doorbell();
        let max = limit.max();
        let mut delivered = self.deliver_done(max, &mut on_complete);
        let ctrlr = self.ctrlr;
        let hal = &ctrlr.hal;
        let retry_count = ctrlr.options().retry_count;
        let mut guard = CqHeadGuard { hal, pending: None };
        let mut consumed: u32 = 0;
        while delivered < max && consumed < self.cq.size() as u32 {
            let Some(entry) = self.cq.peek(hal) else {
                break;
            };
            self.cq.advance();
            consumed += 1;
            guard.pending = Some(self.cq.pending_head());
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
            // SAFETY: the command completed, so the device is done with the
            // buffer.
            let buffer = unsafe { finish(hal, &mut req) };
            let error = (req.timed_out && !status.is_success()).then_some(Error::Timeout(Wait::IoCommand));
            self.stats.completed += 1;
            delivered += 1;
            let done =
                Completion { cid: req.given, status, error, dw0: entry.dw0, buffer, context: req.context };
            on_complete(&mut Resubmit { qp: self }, done);
        }
        drop(guard);
        self.ring_doorbell();
        // Requests whose completions wait in the queue are not late: the
        // timeout scan looks there before it calls anything late.
        if self.timeout.is_some() {
            self.check_timeouts();
            if self.pending_done > 0 && delivered < max {
                delivered += self.deliver_done(max - delivered, &mut on_complete);
            }
        }
        delivered
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
    fn given(&self, given: Cid) -> Option<Cid> {
        let index = SlotPool::<Request<H::Mapping, B, C>, N>::index_of(given);
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
        let req = self.slots.get_mut(new_cid)?;
        req.retries += 1;
        req.deadline = NOT_STAMPED;
        let cmd = req.cmd;
        self.stats.retries += 1;
        self.push(cmd, new_cid, Path::InPoll);
        Some(new_cid)
    }

    /// Delivers up to `max` requests that the driver ended.
    fn deliver_done<F>(&mut self, max: usize, on_complete: &mut F) -> usize
    where
        F: FnMut(&mut Resubmit<'_, 'c, H, B, C, N>, Completion<B, C>),
    {
        let mut delivered = 0;
        let mut from = 0;
        while self.pending_done > 0 && delivered < max {
            let Some((index, _, mut req)) = self.slots.take_next(from, |r| r.done.is_some()) else {
                break;
            };
            from = index + 1;
            self.pending_done -= 1;
            self.stats.completed += 1;
            self.stats.failed_by_driver += 1;
            delivered += 1;
            // `recover` already gave the device's access back (or leaked the
            // buffer, for a removed device): only the buffer is left.
            let buffer = req.buffer.take().map(ManuallyDrop::into_inner);
            let done = Completion {
                cid: req.given,
                status: HOST_ABORTED,
                error: req.done,
                dw0: 0,
                buffer,
                context: req.context,
            };
            on_complete(&mut Resubmit { qp: self }, done);
        }
        delivered
    }
}

/// A new request, submitted under `cid` (which its caller is given).
fn request<M, B, C>(
    cmd: SubmissionEntry,
    cid: Cid,
    buffer: Option<B>,
    dma: Option<DmaUse<M>>,
    context: C,
) -> Request<M, B, C> {
    Request {
        buffer: buffer.map(ManuallyDrop::new),
        dma: dma.map(ManuallyDrop::new),
        context,
        cmd,
        given: cid,
        deadline: NOT_STAMPED,
        retries: 0,
        timed_out: false,
        aborted: false,
        done: None,
    }
}

#[cfg(test)]
mod threads {
    use super::*;
    use hal_traits::{DmaRegion, HalError, SegmentSink};

    /// A HAL that can be shared between threads (never called).
    struct SharedHal;

    // SAFETY: never used at run time; only its type is checked.
    unsafe impl Hal for SharedHal {
        type Mapping = ();
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
            _: NonNull<[u8]>,
            _: Direction,
            _: &mut dyn SegmentSink,
        ) -> core::result::Result<(), HalError> {
            Err(HalError::new(hal_traits::HalErrorKind::Unsupported, "none"))
        }
        unsafe fn unshare(&self, _: NonNull<[u8]>, _: Direction, _: ()) {}
        fn ticks(&self) -> u64 {
            0
        }
        fn ticks_per_second(&self) -> u64 {
            1
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
