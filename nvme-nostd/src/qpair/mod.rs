//! I/O queue pairs: many commands in flight, no lock and no allocation on the
//! submit and completion paths (NVMe Base Specification 1.4, sections 4.1, 5.3,
//! 5.4 and 6).
//!
//! `mod.rs` holds the queue pair and its submission path (read, write,
//! flush, raw commands); `nvm.rs` the other NVM commands; `reservation.rs`
//! the reservation commands; `types.rs` the
//! public types it speaks (options, counters, completions); `request.rs` a
//! request in flight and how its buffer is handed back; `poll.rs` the
//! completion path; `setup.rs` creating and deleting queues; `recovery.rs`
//! timeouts, abort, reset and removal.

mod nvm;
mod poll;
mod recovery;
mod request;
mod reservation;
mod scatter;
pub use scatter::MAX_SHARED_PIECES;

/// With shadow doorbells, a queue pair rings its SQ tail and CQ head
/// doorbells by MMIO after this many poll passes in a row that found no
/// completion while requests were in flight: insurance against a controller
/// that missed a shadow update (one was seen to, once in 16 long runs, on
/// QEMU 7.2). [`QueueStats::watchdog_rings`] counts it.
pub const SHADOW_WATCHDOG_PASSES: u32 = 4096;
mod setup;
mod split;
mod types;
mod zoned;

pub use poll::Resubmit;
pub use recovery::AbortOutcome;
#[cfg(feature = "fuzzing")]
pub use split::chunks as split_chunks;
pub use types::{
    Completion, CopyRange, DoorbellMode, IoFlags, PollLimit, QpairOptions, QueueStats, SubmitError,
};

use request::{Cold, DmaUse, Request};

use crate::admin::{Ticket, MAX_ABORTS};
use crate::buffer::sealed::{Registration, Token};
use crate::buffer::{check_transfer, hand_to_device, IoBuffer};
use crate::controller::Controller;
use crate::dma::DmaMemory;
use crate::error::{Argument, Broken, Error, Result};
use crate::namespace::{Layout, Namespace};
use crate::protection::Protection;
use crate::prp::PrpListSink;
use crate::queue::{CompletionQueue, SubmissionQueue};
use crate::slots::{Cid, SlotPool};
use crate::spec::command::{IoOpcode, SubmissionEntry};
use crate::spec::dwords::ReadWriteCdw12;
use core::ptr::NonNull;
use hal_traits::{Direction, Hal, PAGE_SIZE};

/// Whether a queue pair takes requests.
#[derive(Clone, Copy, Debug)]
enum Health {
    /// Its queues are on the controller.
    Up,
    /// Its queues are not (a reset deleted them): `poll` creates them again
    /// once the HAL's clock reaches `at` (ticks).
    Down {
        /// What failed, and how often.
        broken: Broken,
        /// When to try next.
        at: u64,
    },
    /// For good: the device is gone, or recovery gave up. A reset by hand
    /// (one more than `resets_by_hand`) gives a pair that gave up another try.
    Gone(Error, u32),
}

impl Health {
    fn error(self) -> Option<Error> {
        match self {
            Health::Up => None,
            Health::Down { broken, .. } => Some(Error::QueuePairBroken(broken)),
            Health::Gone(e, _) => Some(e),
        }
    }
}

/// Which path a submission comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// A caller of the queue pair: it catches up with a reset (ending the
    /// requests it killed, never sending an admin command), and rings the
    /// doorbell as [`DoorbellMode`] says.
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
/// lock, and submission never sends an admin command (after a controller
/// reset it is refused with [`Error::QueuePairBroken`] until `poll` has
/// created the queues again). Dropping the pair deletes its queues (which
/// makes the controller abandon their commands) before any buffer is
/// released; if that fails it resets the controller, and if even that fails
/// the controller keeps the memory (and leaks the request buffers) until a
/// reset proves the device stopped, rather than free memory the device may
/// still write.
pub struct IoQueuePair<'c, H: Hal, B: IoBuffer, C, const N: usize> {
    ctrlr: &'c Controller<H>,
    qid: u16,
    sq: SubmissionQueue,
    cq: CompletionQueue,
    slots: SlotPool<Request<B, C>, N>,
    /// The cold part of each slot (see [`Cold`]), by slot index.
    cold: [Cold<H::Mapping>; N],
    /// Retries are on: each command is kept in its slot's cold part.
    keep_commands: bool,
    prp: Option<DmaMemory>,
    prp_pages_per_slot: usize,
    max_transfer: usize,
    stats: QueueStats,
    /// The controller's reset epoch these queues belong to.
    epoch: u32,
    /// The controller may hold this pair's queues in `epoch`: false only
    /// after a failed re-creation removed whatever it had created.
    on_device: bool,
    /// Whether it takes requests, and if not, why and what heals it.
    health: Health,
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
    /// Aborts sent for timed-out requests and not yet answered: the admin
    /// CID (the ticket) and the request's CID on the wire.
    aborts: heapless::Vec<(Ticket, Cid), MAX_ABORTS>,
    /// Retries waiting out a Command Retry Delay.
    parked: usize,
    /// Requests waiting for room in the submission queue, oldest first.
    waiting: heapless::Deque<Cid, N>,
    /// The queues were created with shadow doorbells (the controller's
    /// Doorbell Buffer Config pages): tails and heads go there, and MMIO
    /// doorbells are rung only when the controller's EventIdx asks.
    shadow: bool,
    /// Poll passes in a row that found nothing while requests were in
    /// flight (with shadow doorbells: see [`SHADOW_WATCHDOG_PASSES`]).
    empty_passes: u32,
    /// The parent slot of a split request being built (see `split.rs`):
    /// set only while its children are handed to the device, so that one
    /// cut short by a panic is cleaned up by the next call.
    splitting: Option<u16>,
}

/// The PRP list pages of one request slot: `pages` pages from page `first`
/// of `mem` (shared with the admin requests of `admin_requests.rs`).
pub(crate) struct SlotPrpSink<'a> {
    pub(crate) mem: Option<&'a DmaMemory>,
    pub(crate) first: usize,
    pub(crate) pages: usize,
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
    fn write_run(&mut self, page: usize, index: usize, first: u64, count: usize) {
        // Never into another slot's pages, whose request may be in flight.
        if page >= self.pages || index.checked_add(count).is_none_or(|end| end > PAGE_SIZE / 8) {
            debug_assert!(false, "PRP list entries beyond the slot's pages");
            return;
        }
        if let Some(m) = self.mem {
            m.write_u64_run((self.first + page) * PAGE_SIZE + index * 8, first, PAGE_SIZE as u64, count);
        }
    }
}

impl<'c, H: Hal, B: IoBuffer, C, const N: usize> IoQueuePair<'c, H, B, C, N> {
    /// The queue identifier (SQID = CQID).
    pub fn qid(&self) -> u16 {
        self.qid
    }

    /// True when this pair's submission queue lies in the controller memory
    /// buffer ([`ControllerOptions::sq_in_cmb`](crate::ControllerOptions::sq_in_cmb)).
    pub fn sq_in_cmb(&self) -> bool {
        self.sq.in_cmb()
    }

    /// Entries in each queue.
    pub fn entries(&self) -> u16 {
        self.sq.size()
    }

    /// The number of request slots, `N`.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Bytes of driver state in the hot part of one request slot (what
    /// submission writes and completion reads), beside the caller's buffer
    /// `B` and context `C` that the slot also holds while the request is in
    /// flight (`cargo xtask instructions` reports it in `BENCHMARKS.md`).
    /// It does not depend on the HAL: a buffer the HAL shared keeps its
    /// mapping in the cold part. The pair's other per-slot memory: the
    /// slot's cold part (the retry copy of the command, a shared buffer's
    /// record, scatter-list and split records: a few hundred bytes, touched
    /// only by retries, waits, shared buffers, splits and scatter lists), its
    /// CID generation, free list and wait queue (6 bytes), and the slot's PRP
    /// list pages in DMA memory.
    pub const REQUEST_STATE_BYTES: usize = core::mem::size_of::<Option<Request<B, C>>>()
        .saturating_sub(core::mem::size_of::<B>() + core::mem::size_of::<C>());

    /// Slots taken by requests submitted and not yet completed: one per
    /// request, and one more per command of a split one.
    pub fn in_flight(&self) -> usize {
        self.slots.in_flight()
    }

    /// The largest transfer of one command on this queue pair, in bytes:
    /// reads and writes above it are split.
    pub fn max_transfer_bytes(&self) -> usize {
        self.max_transfer
    }

    /// The counters.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    /// Why the queue pair takes no requests now, if it does not:
    /// [`Error::QueuePairBroken`] while its queues are not on the controller
    /// (after a reset, until a `poll` creates them again, or for good when
    /// recovery gave up), or [`Error::DeviceRemoved`].
    pub fn failure(&self) -> Option<Error> {
        self.health.error()
    }

    /// The controller this queue pair belongs to.
    pub fn controller(&self) -> &'c Controller<H> {
        self.ctrlr
    }

    /// Reads `blocks` logical blocks from `lba` of `ns` into `buffer` (NVM
    /// command set, Read). A read above the transfer limit, above 65536
    /// blocks or across the namespace's optimal I/O boundary goes out as
    /// several commands, one slot each, and completes once (with the first
    /// failure; with separate metadata, each command names its part of it
    /// by its own MPTR); one that cannot get enough free slots now is
    /// refused at once with [`Error::QueueFull`], one that never could
    /// with [`Error::TransferTooLarge`]. The buffer must hold at least
    /// [`ns.buffer_bytes(blocks, false)`](Namespace::buffer_bytes) bytes:
    /// the blocks, and on a namespace with metadata their metadata too
    /// (interleaved, or after the data), protection information included,
    /// unchecked.
    pub fn read(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>> {
        self.read_with(ns, lba, blocks, IoFlags::default(), buffer, context)
    }

    /// [`read`](Self::read) with I/O flags (FUA, limited retry).
    pub fn read_with(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        flags: IoFlags,
        buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>> {
        self.read_write_plain(IoOpcode::READ, ns, lba, blocks, flags, buffer, context, Path::Direct)
    }

    /// [`read_with`](Self::read_with) on a namespace with protection
    /// information, asking the controller for `protection`: checks of each
    /// block's guard, application tag and reference tag (a failed check is
    /// the request's error: End-to-end Guard, Application Tag or Reference
    /// Tag Check Error), or PRACT, which strips the information. The buffer
    /// holds [`Namespace::buffer_bytes`] bytes. Refused unsent: anything
    /// asked of a namespace without protection information
    /// ([`Argument::ProtectionInformation`]).
    #[allow(clippy::too_many_arguments)]
    pub fn read_pi(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        flags: IoFlags,
        protection: Protection,
        buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>> {
        self.read_write(IoOpcode::READ, ns, lba, blocks, flags, protection, buffer, context, Path::Direct)
    }

    /// [`write_with`](Self::write_with) on a namespace with protection
    /// information: with PRACT the controller inserts it (with
    /// `protection`'s tags); else the buffer carries it
    /// ([`fill_protection_information`](crate::fill_protection_information))
    /// and the controller checks what `protection` asks before writing.
    /// Refused unsent as [`read_pi`](Self::read_pi).
    #[allow(clippy::too_many_arguments)]
    pub fn write_pi(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        flags: IoFlags,
        protection: Protection,
        buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>> {
        self.read_write(IoOpcode::WRITE, ns, lba, blocks, flags, protection, buffer, context, Path::Direct)
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
        self.write_with(ns, lba, blocks, IoFlags::default(), buffer, context)
    }

    /// [`write`](Self::write) with I/O flags (FUA: on non-volatile media
    /// before it completes; limited retry).
    pub fn write_with(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        flags: IoFlags,
        buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>> {
        self.read_write_plain(IoOpcode::WRITE, ns, lba, blocks, flags, buffer, context, Path::Direct)
    }

    /// Read or Write without protection information: the common case (one
    /// piece of whole blocks within the transfer limit, on a plain
    /// namespace) submitted here with everything on its way inlined, a
    /// buffer registered with this controller without a call into the HAL
    /// but `sync_for_device`; any other shape goes to
    /// [`read_write`](Self::read_write).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn read_write_plain(
        &mut self,
        opcode: IoOpcode,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        flags: IoFlags,
        mut buffer: B,
        context: C,
        path: Path,
    ) -> Result<Cid, SubmitError<B, C>> {
        if let Some(shift) = ns.plain_shift() {
            let bytes = u64::from(blocks) << shift;
            if blocks.wrapping_sub(1) < 0x1_0000 && bytes <= self.max_transfer as u64 && buffer.pieces() == 1
            {
                if let Err(error) =
                    self.ctrlr.check_binding(ns.binding()).and_then(|()| ns.check_span(lba, blocks))
                {
                    return Err(SubmitError { error, buffer, context });
                }
                let mut cmd = SubmissionEntry::new(opcode.0, ns.id());
                // SLBA in CDW10 (low) and CDW11 (high); NLB, 0-based, in
                // CDW12 bits 15:0 beside the flags.
                cmd.cdw10 = lba as u32;
                cmd.cdw11 = (lba >> 32) as u32;
                cmd.cdw12 = flags.cdw12() | (blocks - 1);
                let direction =
                    if opcode == IoOpcode::READ { Direction::FromDevice } else { Direction::ToDevice };
                if let Some(registration) = buffer.registration(Token) {
                    if registration.controller == self.ctrlr.id() {
                        return self.submit_registered(
                            cmd,
                            buffer,
                            registration,
                            bytes as usize,
                            direction,
                            context,
                            path,
                        );
                    }
                }
                let layout = Layout { data: bytes as usize, metadata: 0 };
                return self.submit_transfer(cmd, buffer, layout, direction, context, path);
            }
        }
        self.read_write(opcode, ns, lba, blocks, flags, Protection::none(), buffer, context, path)
    }

    #[allow(clippy::too_many_arguments)]
    fn read_write(
        &mut self,
        opcode: IoOpcode,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        flags: IoFlags,
        protection: Protection,
        mut buffer: B,
        context: C,
        path: Path,
    ) -> Result<Cid, SubmitError<B, C>> {
        // Plain reads and writes without protection information start in
        // `read_write_plain`, which sends what it cannot take here.
        let checked = self.ctrlr.check_binding(ns.binding()).and_then(|()| match ns.unsupported_reason() {
            Some(why) => Err(Error::Unsupported(why)),
            None => ns.check_span(lba, blocks).and_then(|()| protection.check(ns)),
        });
        if let Err(error) = checked {
            return Err(SubmitError { error, buffer, context });
        }
        let layout = ns.layout(blocks, protection.pract);
        let mut cmd = SubmissionEntry::new(opcode.0, ns.id());
        // SLBA in CDW10 (low) and CDW11 (high); NLB is 0-based; PRINFO in
        // CDW12, the tags in CDW14 and CDW15.
        cmd.cdw10 = lba as u32;
        cmd.cdw11 = (lba >> 32) as u32;
        cmd.cdw12 = flags.cdw12() | protection.cdw12();
        // With protection information: the first block's reference tag in
        // CDW14 (bits 47:32 of a 48-bit one in CDW3), the application tag
        // and its mask in CDW15.
        let ref_tag = ns.pi_format().map(|format| {
            let tag = protection.ref_tag(lba);
            (cmd.cdw14, cmd.cdw3) = crate::protection::ref_tag_dwords(format, tag);
            cmd.cdw15 = protection.cdw15();
            (format, tag)
        });
        // Read moves data from the device; Write and Compare to it.
        let direction = if opcode == IoOpcode::READ { Direction::FromDevice } else { Direction::ToDevice };
        // One command, unless the transfer limit, NLB's 16 bits or the
        // namespace's optimal I/O boundary say otherwise.
        let one = ns.layout(1, protection.pract);
        let per_block = one.data;
        let max_blocks = (self.max_transfer / per_block.max(1)).min(0x1_0000) as u32;
        let boundary = u32::from(ns.optimal_io_boundary());
        let crosses = boundary != 0 && lba % u64::from(boundary) + u64::from(blocks) > u64::from(boundary);
        let ref_tag_counts = matches!(ns.pi_type(), 1 | 2);
        // Separate metadata: each child's part named by its own MPTR.
        let meta_per_block = one.metadata;
        let cut = split::Cut {
            base: cmd,
            lba,
            blocks,
            per_block,
            max_blocks,
            boundary,
            ref_tag,
            ref_tag_counts,
            meta_per_block,
        };
        // A scatter list PRPs cannot describe, on a controller without
        // SGLs: split where PRPs break (not for separate metadata, which
        // scatter lists do not take, nor zoned writes, which stay in order).
        if buffer.pieces() > 1
            && blocks <= max_blocks
            && self.ctrlr.sgl_support() == crate::controller::SglSupport::None
            && layout.metadata == 0
            && !(ns.zones().is_some() && opcode != IoOpcode::READ)
            && !scatter::prp_shaped(&mut buffer, layout.data)
        {
            return self.submit_scatter_split(cut, buffer, layout, direction, context, path);
        }
        let fits = blocks <= max_blocks;
        // NOIOB is a hint: a request that fits one command is cut there
        // only where cutting can work (no separate metadata, parts on
        // whole cache lines, slots for every part).
        let cut_at_boundary = crosses
            && (!direction.device_writes() || cut.parts_aligned(H::DMA_ALIGNMENT.max(4)))
            && self.slots.free_count() > cut.children()
            && buffer.pieces() == 1
            && (ns.zones().is_none() || opcode == IoOpcode::READ);
        if fits && !cut_at_boundary {
            cmd.cdw12 |= ReadWriteCdw12::new().with_nlb((blocks - 1) as u16).into_bits();
            return self.submit_transfer(cmd, buffer, layout, direction, context, path);
        }
        // A zone takes writes only at its write pointer, in order: writes to
        // a zoned namespace are not split (the children could land out of
        // order).
        let zoned_write = ns.zones().is_some() && opcode != IoOpcode::READ;
        if max_blocks == 0 || buffer.pieces() > 1 || zoned_write {
            // A block above the limit is not split, nor a scatter list.
            let error = Error::TransferTooLarge { requested: layout.data, max: self.max_transfer };
            return Err(SubmitError { error, buffer, context });
        }
        self.submit_split(cut, buffer, direction, context, path)
    }

    /// Flushes the volatile write cache of `ns` (NVM command set, Flush).
    pub fn flush(&mut self, ns: &Namespace, context: C) -> Result<Cid, SubmitError<(), C>> {
        self.flush_on(ns, context, Path::Direct)
    }

    fn flush_on(&mut self, ns: &Namespace, context: C, path: Path) -> Result<Cid, SubmitError<(), C>> {
        if let Err(error) = self.ctrlr.check_binding(ns.binding()) {
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
        } else if buffer.as_mut().is_some_and(|b| b.pieces() > 1) {
            Some(Error::InvalidArgument(Argument::ScatterList))
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
    #[inline]
    fn usable(&mut self, path: Path) -> Result {
        // Up, in the controller's current epoch, nothing left of a broken
        // split, the device present: usable, on either path.
        if matches!(self.health, Health::Up)
            && self.splitting.is_none()
            && self.ctrlr.epoch() == self.epoch
            && !self.ctrlr.is_removed()
        {
            return Ok(());
        }
        self.usable_slow(path)
    }

    /// [`usable`](Self::usable) when something is amiss: catches up (on the
    /// caller's path) and says why the pair takes no request.
    #[cold]
    fn usable_slow(&mut self, path: Path) -> Result {
        self.finish_broken_split();
        match path {
            Path::Direct => self.ready(),
            Path::InPoll => {
                if self.ctrlr.is_removed() {
                    Err(Error::DeviceRemoved)
                } else if self.ctrlr.epoch() != self.epoch {
                    Err(Error::Reset)
                } else {
                    self.health.error().map_or(Ok(()), Err)
                }
            }
        }
    }

    /// Checks a data buffer, hands it to the device (own DMA memory,
    /// translated, or shared), builds its PRPs and submits. On error nothing
    /// reached the device and the buffer comes back.
    fn submit_data(
        &mut self,
        cmd: SubmissionEntry,
        buf: B,
        len: usize,
        direction: Direction,
        context: C,
        path: Path,
    ) -> Result<Cid, SubmitError<B, C>> {
        self.submit_transfer(cmd, buf, Layout { data: len, metadata: 0 }, direction, context, path)
    }

    /// As [`submit_data`](Self::submit_data), with `layout.metadata` bytes of
    /// separate metadata after the data in the buffer, named by MPTR.
    fn submit_transfer(
        &mut self,
        mut cmd: SubmissionEntry,
        mut buf: B,
        layout: Layout,
        direction: Direction,
        context: C,
        path: Path,
    ) -> Result<Cid, SubmitError<B, C>> {
        if buf.pieces() > 1 {
            return self.submit_scatter(cmd, buf, layout, direction, context, path);
        }
        if let Some(registration) = buf.registration(Token) {
            if registration.controller == self.ctrlr.id() && layout.metadata == 0 {
                return self.submit_registered(cmd, buf, registration, layout.data, direction, context, path);
            }
        }
        let slice = buf.as_dma_slice();
        let align = H::DMA_ALIGNMENT.max(4);
        let len = layout.data.saturating_add(layout.metadata);
        let check = self.usable(path).and_then(|()| {
            if layout.data > self.max_transfer {
                Err(Error::TransferTooLarge { requested: layout.data, max: self.max_transfer })
            } else {
                check_transfer(slice, len, usize::MAX, direction, align)
            }
        });
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
        // SAFETY: `buf` is an IoBuffer that the request owns from here on;
        // its mapping is undone once the device is done (`finish`), or
        // below if the submission fails.
        let handed =
            unsafe { hand_to_device(hal, region, direction, &mut sink, self.max_transfer, layout.metadata) };
        // Metadata the HAL hands over in pieces: by an SGL where the
        // controller takes one for metadata (PSDT 10b).
        let metadata_sgl = |h: &crate::error::Result<_>| match h {
            Err(Error::InvalidArgument(Argument::MetadataNotContiguous)) => self.ctrlr.metadata_sgl(),
            _ => None,
        };
        let handed = match metadata_sgl(&handed) {
            Some(dword) => {
                // SAFETY: as above; the first attempt left nothing shared.
                unsafe {
                    crate::buffer::hand_with_metadata_sgl(
                        hal,
                        region,
                        direction,
                        &mut sink,
                        layout.metadata,
                        dword,
                    )
                }
                .map(|h| (h, 2))
            }
            None => handed.map(|h| (h, 0)),
        };
        let mapping = match handed {
            Ok(((p, mptr, mapping), psdt)) => {
                if psdt != 0 {
                    cmd.cdw0.set_psdt(psdt);
                }
                cmd.prp1 = p.prp1;
                cmd.prp2 = p.prp2;
                cmd.mptr = mptr;
                mapping
            }
            Err(error) => return Err(SubmitError { error, buffer: buf, context }),
        };
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
        // A shared buffer's record (its mapping) goes in the cold part.
        let (hot, shared) = request::place(DmaUse { region, direction, mapping });
        let cold_dma = shared.is_some();
        if cold_dma {
            self.cold[index].set_dma(shared, None, None, scatter::Shares::new(), false);
        }
        let opcode = cmd.cdw0.opc();
        let cid = self.slots.fill(slot, |cid| {
            let mut r = request::request(opcode, cid, Some(buf), hot, context);
            r.cold_dma = cold_dma;
            r
        });
        self.push_or_wait(cmd, cid, path);
        Ok(cid)
    }

    /// [`submit_transfer`](Self::submit_transfer) for data alone (no
    /// separate metadata) in a buffer registered with this pair's
    /// controller: the PRPs come from the address its HAL gave at
    /// registration, with no call into the HAL but `sync_for_device`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn submit_registered(
        &mut self,
        mut cmd: SubmissionEntry,
        buf: B,
        registration: Registration,
        len: usize,
        direction: Direction,
        context: C,
        path: Path,
    ) -> Result<Cid, SubmitError<B, C>> {
        let align = H::DMA_ALIGNMENT.max(4);
        let check = self.usable(path).and_then(|()| {
            if len > self.max_transfer {
                Err(Error::TransferTooLarge { requested: len, max: self.max_transfer })
            } else {
                check_transfer(registration.region, len, usize::MAX, direction, align)
            }
        });
        if let Err(error) = check {
            return Err(SubmitError { error, buffer: buf, context });
        }
        // As in `submit_transfer`: the slot's PRP list pages are written
        // before it is taken.
        let Some(index) = self.free_slot() else {
            return Err(SubmitError { error: Error::QueueFull, buffer: buf, context });
        };
        // `check_transfer` saw `len` within the registered bytes, which are
        // one run in device space from `daddr`.
        let prp = match crate::prp::direct(registration.daddr, len) {
            Some(prp) => prp,
            None => {
                let mut sink = SlotPrpSink {
                    mem: self.prp.as_ref(),
                    first: index * self.prp_pages_per_slot,
                    pages: self.prp_pages_per_slot,
                };
                match crate::prp::one_run_list(&mut sink, registration.daddr, len) {
                    Some(prp) => prp,
                    None => {
                        let error = Error::TransferTooLarge { requested: len, max: self.max_transfer };
                        return Err(SubmitError { error, buffer: buf, context });
                    }
                }
            }
        };
        cmd.prp1 = prp.prp1;
        cmd.prp2 = prp.prp2;
        let region = NonNull::slice_from_raw_parts(registration.region.cast::<u8>(), len);
        let hal = &self.ctrlr.hal;
        // SAFETY: the region is the request's buffer, which the CPU does not
        // touch until `finish` calls `sync_for_cpu` for it.
        unsafe { hal.sync_for_device(region, direction) };
        let Some(slot) = self.reserve().filter(|s| s.index() == index) else {
            // SAFETY: nothing was submitted: the device never saw the buffer.
            unsafe { hal.sync_for_cpu(region, direction) };
            return Err(SubmitError { error: Error::QueueFull, buffer: buf, context });
        };
        let dma = request::Synced { region, direction };
        let opcode = cmd.cdw0.opc();
        let cid = self.slots.fill(slot, |cid| request::request(opcode, cid, Some(buf), Some(dma), context));
        self.push_or_wait(cmd, cid, path);
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
        let opcode = cmd.cdw0.opc();
        let cid = self.slots.fill(slot, |cid| request::request(opcode, cid, None, None, context));
        self.push_or_wait(cmd, cid, path);
        Ok(cid)
    }

    /// The slot [`reserve`](Self::reserve) will take next.
    fn free_slot(&self) -> Option<usize> {
        self.slots.next_free()
    }

    /// A free request slot (with or without room in the submission queue:
    /// a request that finds it full waits).
    fn reserve(&mut self) -> Option<crate::slots::Reserved> {
        self.slots.reserve()
    }

    /// Submits the new request `cid`, or, when the submission queue is full
    /// or older requests wait already, makes it wait (in order) for `poll`
    /// to submit it. A waiting request is not on the device: it cannot time
    /// out, and a reset or removal ends it like the others.
    #[inline(always)]
    fn push_or_wait(&mut self, cmd: SubmissionEntry, cid: Cid, path: Path) {
        let index = SlotPool::<Request<B, C>, N>::index_of(cid);
        if self.waiting.is_empty() && !self.sq.is_full() {
            if self.keep_commands {
                if let Some(cold) = self.cold.get_mut(index) {
                    cold.cmd = cmd;
                }
            }
            self.push(cmd, cid, path);
            return;
        }
        // Kept for when room comes.
        if let Some(cold) = self.cold.get_mut(index) {
            cold.cmd = cmd;
        }
        // The deque holds N, one per slot: a slot waits at most once.
        if self.waiting.push_back(cid).is_ok() {
            if let Some(req) = self.slots.get_mut(cid) {
                req.queued = true;
                req.deadline = request::PARKED;
            }
            self.stats.waited += 1;
        }
    }

    /// Submits waiting requests, oldest first, while the submission queue
    /// has room.
    pub(super) fn submit_waiting(&mut self) {
        while !self.sq.is_full() {
            let Some(cid) = self.waiting.pop_front() else { return };
            let Some(index) = self.slots.index(cid) else { continue };
            let Some(req) = self.slots.get_mut(cid) else { continue };
            if !req.queued || req.ended {
                continue;
            }
            req.queued = false;
            req.deadline = request::NOT_STAMPED;
            let cmd = self.cold[index].cmd;
            self.push(cmd, cid, Path::InPoll);
        }
    }

    /// Writes the entry under `cid` and rings the doorbell as `path` and the
    /// doorbell mode say.
    #[inline(always)]
    fn push(&mut self, mut cmd: SubmissionEntry, cid: Cid, path: Path) {
        cmd.set_cid(cid.0);
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
    #[inline(always)]
    pub fn ring_doorbell(&mut self) {
        if self.sq_pending {
            self.sq_pending = false;
            let hal = &self.ctrlr.hal;
            match self.shadow_memory() {
                Some(mem) => {
                    if self.sq.ring_shadowed(hal, mem) {
                        self.stats.sq_doorbells += 1;
                    } else {
                        self.stats.doorbells_skipped += 1;
                    }
                }
                None => {
                    self.stats.sq_doorbells += 1;
                    self.sq.ring(hal);
                }
            }
        }
    }

    /// The shadow doorbell pages, if this pair's queues use them.
    #[inline]
    fn shadow_memory(&self) -> Option<&'c DmaMemory> {
        if self.shadow {
            self.ctrlr.shadow_memory()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod threads {
    use super::*;
    use core::ptr::NonNull;
    use core::time::Duration;
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

#[cfg(test)]
mod memory {
    use super::IoQueuePair;
    use crate::test_hal::TestHal;
    use crate::DmaBuffer;

    /// A request slot's driver state (beside the caller's buffer and
    /// context) stays within one cache line, whatever the HAL's mapping
    /// type (it lives in the cold part); `cargo xtask instructions` reports
    /// it for the simulator's HAL too.
    #[test]
    fn request_state_fits_a_cache_line() {
        type Pair = IoQueuePair<'static, TestHal, DmaBuffer<'static, TestHal>, u64, 256>;
        let bytes = Pair::REQUEST_STATE_BYTES;
        std::println!("driver state per request slot: {bytes} bytes");
        assert!(bytes <= 64, "{bytes} bytes of driver state per request slot");
    }
}
