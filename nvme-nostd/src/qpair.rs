//! I/O queue pairs: many commands in flight, no lock and no allocation on the
//! submit and completion paths (NVMe Base Specification 1.4, sections 4.1, 5.3,
//! 5.4 and 6).

use crate::buffer::IoBuffer;
use crate::controller::Controller;
use crate::dma::DmaMemory;
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::prp::{self, PrpListSink};
use crate::queue::{CompletionQueue, SubmissionQueue};
use crate::slots::{Cid, SlotPool};
use crate::spec::command::{AdminOpcode, IoOpcode, SubmissionEntry};
use crate::spec::status::Status;
use core::ptr::NonNull;
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
    /// The completion status.
    pub status: Status,
    /// Dword 0 of the completion entry (command specific).
    pub dw0: u32,
    /// The request's buffer, now the caller's again.
    pub buffer: Option<B>,
    /// The request's context.
    pub context: C,
}

impl<B, C> Completion<B, C> {
    /// `Ok` for a successful status, else [`Error::Command`].
    pub fn result(&self) -> Result {
        if self.status.is_success() {
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

struct Request<B, C> {
    buffer: Option<B>,
    context: C,
    shared: Option<Shared>,
}

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

impl<H: Hal> Controller<H> {
    /// Creates an I/O queue pair with `N` request slots: Create I/O Completion
    /// Queue, then Create I/O Submission Queue (sections 5.3 and 5.4).
    pub fn create_io_qpair<B: IoBuffer, C, const N: usize>(
        &self,
        options: QpairOptions,
    ) -> Result<IoQueuePair<'_, H, B, C, N>> {
        let entries = options.entries.min(self.cap().mqes().saturating_add(1));
        if entries < 2 || (entries as usize) < N + 1 {
            return Err(Error::InvalidArgument("queue needs at least N + 1 entries (capped by CAP.MQES)"));
        }
        if options.priority > 3 {
            return Err(Error::InvalidArgument("priority is 0 to 3"));
        }
        let max_transfer = match self.max_transfer_bytes() {
            Some(mdts) => options.max_transfer_bytes.min(mdts),
            None => options.max_transfer_bytes,
        };
        if max_transfer < PAGE_SIZE {
            return Err(Error::InvalidArgument("max_transfer_bytes below one page"));
        }
        // A transfer of max_transfer bytes at any dword offset touches this many
        // pages; its PRP list pages are reserved per slot.
        let touched = max_transfer / PAGE_SIZE + 1;
        let prp_pages_per_slot = prp::list_pages_for(touched, PAGE_SIZE / 8);

        let qid = self.alloc_qid()?;
        match self.create_queues::<N>(qid, entries, prp_pages_per_slot, options.priority) {
            Ok((sq, cq, prp)) => Ok(IoQueuePair {
                ctrlr: self,
                qid,
                sq,
                cq,
                slots: SlotPool::new(),
                prp,
                prp_pages_per_slot,
                max_transfer,
                stats: QueueStats::default(),
            }),
            Err(e) => {
                self.free_qid(qid);
                Err(e)
            }
        }
    }

    /// Allocates the rings and PRP pages and creates the queues. On failure,
    /// memory the controller may have seen (a command timed out) is leaked.
    fn create_queues<const N: usize>(
        &self,
        qid: u16,
        entries: u16,
        prp_pages_per_slot: usize,
        priority: u8,
    ) -> Result<(SubmissionQueue, CompletionQueue, Option<DmaMemory>)> {
        let dstrd = self.cap().dstrd();
        let sq_pages = (entries as usize * 64).div_ceil(PAGE_SIZE);
        let cq_pages = (entries as usize * 16).div_ceil(PAGE_SIZE);
        let mut sq_mem = DmaMemory::alloc(&self.hal, sq_pages)?;
        let mut cq_mem = match DmaMemory::alloc(&self.hal, cq_pages) {
            Ok(m) => m,
            Err(e) => {
                // SAFETY: the controller has never been told about this memory.
                unsafe { sq_mem.free(&self.hal) };
                return Err(e.into());
            }
        };
        let prp = if prp_pages_per_slot > 0 {
            match DmaMemory::alloc(&self.hal, prp_pages_per_slot * N) {
                Ok(m) => Some(m),
                Err(e) => {
                    // SAFETY: as above.
                    unsafe {
                        sq_mem.free(&self.hal);
                        cq_mem.free(&self.hal);
                    }
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        let free_all = |mut sq_mem: DmaMemory, mut cq_mem: DmaMemory, prp: Option<DmaMemory>| {
            // SAFETY: called only when the controller refused to create the
            // queues (or deleted them), so it does not use this memory.
            unsafe {
                sq_mem.free(&self.hal);
                cq_mem.free(&self.hal);
                if let Some(mut p) = prp {
                    p.free(&self.hal);
                }
            }
        };

        let mut cmd = SubmissionEntry::new(AdminOpcode::CREATE_IO_CQ.0, 0);
        cmd.prp1 = cq_mem.daddr(0).0;
        cmd.cdw10 = ((entries as u32 - 1) << 16) | qid as u32;
        cmd.cdw11 = 1; // PC: physically contiguous; IEN clear: polled.
        match self.admin.lock().execute(&self.hal, cmd, self.admin_timeout()) {
            Ok(_) => {}
            Err(e @ Error::Command(_)) => {
                free_all(sq_mem, cq_mem, prp);
                return Err(e);
            }
            Err(e) => return Err(e),
        }

        let mut cmd = SubmissionEntry::new(AdminOpcode::CREATE_IO_SQ.0, 0);
        cmd.prp1 = sq_mem.daddr(0).0;
        cmd.cdw10 = ((entries as u32 - 1) << 16) | qid as u32;
        cmd.cdw11 = ((qid as u32) << 16) | ((priority as u32) << 1) | 1;
        match self.admin.lock().execute(&self.hal, cmd, self.admin_timeout()) {
            Ok(_) => {}
            Err(e @ Error::Command(_)) => {
                if self.delete_queue(AdminOpcode::DELETE_IO_CQ, qid).is_ok() {
                    free_all(sq_mem, cq_mem, prp);
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        Ok((
            SubmissionQueue::new(sq_mem, entries, qid, dstrd),
            CompletionQueue::new(cq_mem, entries, qid, dstrd),
            prp,
        ))
    }

    /// Delete I/O Submission or Completion Queue (sections 5.6, 5.5).
    fn delete_queue(&self, opcode: AdminOpcode, qid: u16) -> Result {
        let mut cmd = SubmissionEntry::new(opcode.0, 0);
        cmd.cdw10 = qid as u32;
        self.admin.lock().execute(&self.hal, cmd, self.admin_timeout()).map(|_| ())
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
        let checked = match ns.unsupported_reason() {
            Some(why) => Err(Error::Unsupported(why)),
            None => ns.check_range(lba, blocks),
        };
        let len = match checked {
            Ok(len) => len,
            Err(error) => return Err(SubmitError { error, buffer, context }),
        };
        let mut cmd = SubmissionEntry::new(opcode.0, ns.id());
        cmd.cdw10 = lba as u32;
        cmd.cdw11 = (lba >> 32) as u32;
        cmd.cdw12 = blocks - 1; // NLB, 0-based
        let direction = if opcode == IoOpcode::READ { Direction::FromDevice } else { Direction::ToDevice };
        self.submit_data(cmd, buffer, len, direction, context)
    }

    /// Flushes the volatile write cache of `ns` (NVM command set, Flush).
    pub fn flush(&mut self, ns: &Namespace, context: C) -> Result<Cid, SubmitError<(), C>> {
        let cmd = SubmissionEntry::new(IoOpcode::FLUSH.0, ns.id());
        self.submit_entry(cmd, context).map_err(|(error, context)| SubmitError { error, buffer: (), context })
    }

    /// Submits any I/O command. The driver sets CID, PRP1 and PRP2; the data
    /// direction comes from the opcode's bits 1:0 (NVMe 1.4 figure 104), and
    /// the whole buffer is the transfer.
    pub fn submit_raw(
        &mut self,
        mut cmd: SubmissionEntry,
        buffer: Option<B>,
        context: C,
    ) -> Result<Cid, SubmitError<Option<B>, C>> {
        let direction = match IoOpcode(cmd.opc()).transfer_bits() {
            0 => None,
            1 => Some(Direction::ToDevice),
            2 => Some(Direction::FromDevice),
            _ => Some(Direction::Bidirectional),
        };
        let bad = if cmd.psdt() != 0 || cmd.fuse() != 0 || cmd.mptr != 0 {
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
        let check = if len == 0 {
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
        let shared = match buf.device_addr() {
            Some(daddr) => Shared { vaddr, len, daddr, direction, by_hal: false },
            // SAFETY: `buf` is an IoBuffer, so its bytes stay in place and
            // exclusive while the request owns it; `unshare` is called once the
            // device is done (in `poll`, or in `Drop` after the queue is
            // quiesced), or just below if the submission fails.
            None => match unsafe { hal.share(vaddr, len, direction) } {
                Ok(daddr) => Shared { vaddr, len, daddr, direction, by_hal: true },
                Err(e) => {
                    self.slots.cancel(slot);
                    return Err(SubmitError { error: Error::Hal(e), buffer: buf, context });
                }
            },
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
        let cid = self.slots.fill(slot, Request { buffer: Some(buf), context, shared: Some(shared) });
        self.push(cmd, cid);
        Ok(cid)
    }

    /// Submits a command that moves no data.
    fn submit_entry(&mut self, cmd: SubmissionEntry, context: C) -> Result<Cid, (Error, C)> {
        let Some(slot) = self.reserve() else {
            return Err((Error::QueueFull, context));
        };
        let cid = self.slots.fill(slot, Request { buffer: None, context, shared: None });
        self.push(cmd, cid);
        Ok(cid)
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
        cmd.set_cid(cid.0);
        // Cannot fail: `reserve` checked that the ring has room and nothing was
        // pushed since.
        let _ = self.sq.push(&cmd);
        self.sq.ring(&self.ctrlr.hal);
        self.stats.submitted += 1;
    }

    /// Processes up to `max` completions (all available if `max` is 0), handing
    /// each request's buffer and context to `on_complete`. Returns the number
    /// delivered. Entries that name no request in flight (a stale, repeated or
    /// out-of-range CID, a wrong SQID, an impossible SQ head) are consumed,
    /// counted in [`QueueStats::bogus_completions`], and otherwise ignored.
    pub fn poll(&mut self, max: usize, mut on_complete: impl FnMut(Completion<B, C>)) -> usize {
        let hal = &self.ctrlr.hal;
        let mut delivered = 0;
        let mut consumed = false;
        while max == 0 || delivered < max {
            let Some(entry) = self.cq.peek(hal) else {
                break;
            };
            self.cq.advance();
            consumed = true;
            let cid = Cid(entry.cid);
            if entry.sqid != self.qid || !self.sq.head_plausible(entry.sqhd) || self.slots.get(cid).is_none()
            {
                self.stats.bogus_completions += 1;
                continue;
            }
            self.sq.update_head(entry.sqhd);
            let Some(req) = self.slots.remove(cid) else {
                self.stats.bogus_completions += 1;
                continue;
            };
            if let Some(s) = &req.shared {
                // SAFETY: the command completed, so the device is done with
                // the buffer.
                unsafe { unshare(hal, s) };
            }
            self.stats.completed += 1;
            delivered += 1;
            on_complete(Completion {
                cid,
                status: entry.status(),
                dw0: entry.dw0,
                buffer: req.buffer,
                context: req.context,
            });
        }
        if consumed {
            self.cq.ring(hal);
        }
        delivered
    }

    /// Deletes the queues (section 5.6, then 5.5). The controller completes or
    /// abandons every command of the queue before Delete I/O Submission Queue
    /// completes, so afterwards it no longer touches any request's buffer.
    fn delete_queues(&self) -> Result {
        self.ctrlr.delete_queue(AdminOpcode::DELETE_IO_SQ, self.qid)?;
        self.ctrlr.delete_queue(AdminOpcode::DELETE_IO_CQ, self.qid)
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

impl<H: Hal, B: IoBuffer, C, const N: usize> Drop for IoQueuePair<'_, H, B, C, N> {
    fn drop(&mut self) {
        let quiesced = self.delete_queues().is_ok() || self.ctrlr.disable().is_ok();
        let hal = &self.ctrlr.hal;
        if !quiesced {
            // The device may still write any of this memory: leak all of it.
            for (_, req) in self.slots.drain() {
                core::mem::forget(req);
            }
            return;
        }
        for (_, req) in self.slots.drain() {
            if let Some(s) = &req.shared {
                // SAFETY: the queues are deleted or the controller is disabled;
                // the device no longer accesses the buffer.
                unsafe { unshare(hal, s) };
            }
            drop(req);
        }
        // SAFETY: as above, the device no longer uses the rings or PRP lists.
        unsafe {
            self.sq.mem.free(hal);
            self.cq.mem.free(hal);
            if let Some(p) = &mut self.prp {
                p.free(hal);
            }
        }
        self.ctrlr.free_qid(self.qid);
    }
}
