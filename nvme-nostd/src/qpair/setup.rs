//! Creating and deleting the queues of a queue pair (NVMe Base Specification
//! 1.4, sections 5.3 to 5.6).

use super::request::{finish, leak};
use super::{Health, IoQueuePair, QpairOptions, QueueStats};
use crate::buffer::IoBuffer;
use crate::controller::{AdminData, Controller};
use crate::dma::{DmaAlloc, DmaMemory};
use crate::error::{Argument, Error, RecoveryStep, Result};
use crate::prp;
use crate::queue::{CompletionQueue, SqMemory, SubmissionQueue};
use crate::slots::SlotPool;
use crate::spec::command::{AdminOpcode, SubmissionEntry};
use crate::spec::dwords::{CreateIoCqCdw11, CreateIoQueueCdw10, CreateIoSqCdw11, DeleteIoQueueCdw10};
use crate::spec::status::{command_specific, StatusCodeType};
use hal_traits::{duration_to_ticks, DeviceAddr, Hal, PAGE_SIZE};

/// Create I/O Completion Queue (section 5.3) for a physically contiguous
/// ring at `daddr`, polled (no interrupt).
fn create_cq_command(qid: u16, entries: u16, daddr: DeviceAddr) -> SubmissionEntry {
    let mut cmd = SubmissionEntry::new(AdminOpcode::CREATE_IO_CQ.0, 0);
    cmd.prp1 = daddr.0;
    cmd.cdw10 = CreateIoQueueCdw10::new().with_qid(qid).with_qsize(entries - 1).into_bits();
    cmd.cdw11 = CreateIoCqCdw11::new().with_pc(true).into_bits();
    cmd
}

/// Create I/O Submission Queue (section 5.4) for a physically contiguous
/// ring at `daddr`, posting to the completion queue of the same identifier.
fn create_sq_command(qid: u16, entries: u16, daddr: DeviceAddr, priority: u8) -> SubmissionEntry {
    let mut cmd = SubmissionEntry::new(AdminOpcode::CREATE_IO_SQ.0, 0);
    cmd.prp1 = daddr.0;
    cmd.cdw10 = CreateIoQueueCdw10::new().with_qid(qid).with_qsize(entries - 1).into_bits();
    cmd.cdw11 = CreateIoSqCdw11::new().with_pc(true).with_qprio(priority).with_cqid(qid).into_bits();
    cmd
}

/// Whether an admin command that failed with `e` certainly created nothing:
/// the controller refused it (a status), or it was never sent (the admin
/// queue is failed until a reset succeeds).
fn not_created(e: Error) -> bool {
    matches!(e, Error::Command(_) | Error::ControllerFailed)
}

/// What [`Controller::create_queues`] made: the rings, the PRP list pages, and
/// the reset epoch the queues were created in.
pub(super) struct CreatedQueues {
    sq: SubmissionQueue,
    cq: CompletionQueue,
    prp: Option<DmaMemory>,
    epoch: u32,
    /// The queues were created with shadow doorbells.
    shadow: bool,
}

impl<H: Hal> Controller<H> {
    /// Creates an I/O queue pair with `N` request slots: Create I/O Completion
    /// Queue, then Create I/O Submission Queue (sections 5.3 and 5.4).
    pub fn create_io_qpair<B: IoBuffer, C, const N: usize>(
        &self,
        options: QpairOptions,
    ) -> Result<IoQueuePair<'_, H, B, C, N>> {
        let entries = options.entries.min(self.cap().mqes().saturating_add(1));
        if entries < 2 || N == 0 {
            return Err(Error::InvalidArgument(Argument::QueueEntries));
        }
        if options.priority > 3 {
            return Err(Error::InvalidArgument(Argument::Priority));
        }
        let max_transfer = match self.max_transfer_bytes() {
            Some(mdts) => options.max_transfer_bytes.min(mdts),
            None => options.max_transfer_bytes,
        };
        if max_transfer < PAGE_SIZE {
            return Err(Error::InvalidArgument(Argument::MaxTransfer));
        }
        // A transfer of max_transfer bytes at any dword offset touches this many
        // pages; its PRP list pages are reserved per slot.
        let touched = max_transfer.div_ceil(PAGE_SIZE) + 1;
        let prp_pages_per_slot = prp::list_pages_for(touched, PAGE_SIZE / 8);
        let rate = self.hal.ticks_per_second();
        let timeout = self.options().io_timeout.map(|t| duration_to_ticks(t, rate).max(1));

        let qid = self.alloc_qid()?;
        match self.create_queues::<N>(qid, entries, prp_pages_per_slot, options.priority) {
            Ok(CreatedQueues { sq, cq, prp, epoch, shadow }) => Ok(IoQueuePair {
                shadow,
                empty_passes: 0,
                epoch,
                on_device: true,
                health: Health::Up,
                pending_done: 0,
                timeout,
                next_timeout_check: 0,
                priority: options.priority,
                doorbell: options.doorbell,
                sq_pending: false,
                aborts: heapless::Vec::new(),
                parked: 0,
                waiting: heapless::Deque::new(),
                splitting: None,
                ctrlr: self,
                qid,
                sq,
                cq,
                slots: SlotPool::new(),
                cold: core::array::from_fn(|_| super::request::Cold::new()),
                keep_commands: self.options().retry_count > 0,
                prp,
                prp_pages_per_slot,
                max_transfer,
                stats: QueueStats::default(),
            }),
            Err((e, held)) => {
                if !held {
                    self.free_qid(qid);
                }
                Err(e)
            }
        }
    }

    /// Allocates the rings and PRP pages and creates the queues. On failure,
    /// memory a command named and the controller may still use (the command
    /// timed out and the reset failed, or the device refused to delete a
    /// queue) goes to the quarantine with the queue identifier, and the rest
    /// is freed; the `bool` says whether the identifier is taken care of
    /// that way (else the caller frees it).
    pub(super) fn create_queues<const N: usize>(
        &self,
        qid: u16,
        entries: u16,
        prp_pages_per_slot: usize,
        priority: u8,
    ) -> core::result::Result<CreatedQueues, (Error, bool)> {
        let dstrd = self.cap().dstrd();
        let sq_pages = (entries as usize * 64).div_ceil(PAGE_SIZE);
        let cq_pages = (entries as usize * 16).div_ceil(PAGE_SIZE);
        // Each frees itself on an early return until a command names it to
        // the device. The PRP list pages are named only by I/O commands, so
        // they are lent to the queue pair, not to these commands.
        // A ring in the CMB (where asked for and its slot holds one) is the
        // controller's own memory: nothing to allocate or free.
        let sq = match self.cmb_ring(qid, entries) {
            Some(ring) => Ok(ring),
            None => Err(DmaAlloc::new(&self.hal, sq_pages).map_err(|e| (e.into(), false))?),
        };
        let cq = DmaAlloc::new(&self.hal, cq_pages).map_err(|e| (e.into(), false))?;
        let prp = match prp_pages_per_slot {
            0 => None,
            pages => Some(DmaAlloc::new(&self.hal, pages * N).map_err(|e| (e.into(), false))?),
        };

        self.clear_queue_shadow(qid);
        let mut cq_mem = cq.lend();
        let (created_cq, cq_epoch) =
            self.admin_exec_epoch(create_cq_command(qid, entries, cq_mem.daddr(0)), AdminData::None);
        match created_cq {
            Ok(_) => {}
            Err(e) if not_created(e) => {
                // SAFETY: the controller refused to create the queue, or
                // never saw the command, so it does not use this memory.
                unsafe { cq_mem.free(&self.hal) };
                return Err((e, false));
            }
            Err(e) => {
                if self.epoch() != cq_epoch {
                    // SAFETY: a reset since the command was sent (the
                    // timeout's) disabled the controller, which forgot the
                    // queue and no longer touches this memory.
                    unsafe { cq_mem.free(&self.hal) };
                    return Err((e, false));
                }
                // The device is gone, or could not be reset: it may hold the
                // queue. Kept until a reset proves otherwise.
                self.put_away([Some(cq_mem), None], qid, cq_epoch);
                return Err((e, true));
            }
        }
        let mem = match sq {
            Ok(ring) => SqMemory::Device(ring),
            Err(host) => SqMemory::Host(host.lend()),
        };
        let mut sq = SubmissionQueue::over(mem, entries, qid, dstrd);
        let (created_sq, sq_epoch) =
            self.admin_exec_epoch(create_sq_command(qid, entries, sq.daddr(), priority), AdminData::None);
        let epoch = match created_sq {
            Ok(_) if sq_epoch == cq_epoch => sq_epoch,
            // A submission queue on a completion queue that a reset deleted:
            // the device is not to be trusted with this memory.
            Ok(_) => {
                self.put_away([Some(cq_mem), sq.take_memory()], qid, sq_epoch);
                return Err((Error::Reset, true));
            }
            Err(e) if not_created(e) => {
                // SAFETY: the controller refused to create the submission
                // queue, or never saw the command, so it does not use this
                // memory.
                unsafe { sq.free(&self.hal) };
                let reset_since = self.epoch() != cq_epoch;
                if reset_since || self.delete_queue(AdminOpcode::DELETE_IO_CQ, qid).is_ok() {
                    // SAFETY: the completion queue is deleted, or a reset
                    // (which disabled the controller) came after its creation.
                    unsafe { cq_mem.free(&self.hal) };
                    return Err((if reset_since { Error::Reset } else { e }, false));
                }
                // The completion queue may still exist on the device: keep
                // its memory and its identifier out of use.
                self.put_away([Some(cq_mem), None], qid, cq_epoch);
                return Err((e, true));
            }
            Err(e) => {
                if self.epoch() != sq_epoch {
                    // SAFETY: as above, a reset since Create I/O SQ was sent
                    // (so since Create I/O CQ too) disabled the controller,
                    // which forgot both queues.
                    unsafe {
                        sq.free(&self.hal);
                        cq_mem.free(&self.hal);
                    }
                    return Err((e, false));
                }
                self.put_away([Some(cq_mem), sq.take_memory()], qid, sq_epoch);
                return Err((e, true));
            }
        };
        Ok(CreatedQueues {
            sq,
            cq: CompletionQueue::new(cq_mem, entries, qid, dstrd),
            prp: prp.map(DmaAlloc::lend),
            epoch,
            shadow: self.shadow_in(epoch),
        })
    }

    /// Hands queue memory and the queue identifier that the device may still
    /// use to the quarantine (a removed device's is leaked instead).
    fn put_away(&self, memory: [Option<DmaMemory>; 2], qid: u16, epoch: u32) {
        if self.is_removed() {
            return;
        }
        let mut quarantine = self.quarantine.lock();
        for m in memory.into_iter().flatten() {
            quarantine.memory(m, epoch);
        }
        quarantine.qid(qid, epoch);
    }

    /// Delete I/O Submission or Completion Queue (sections 5.6, 5.5).
    pub(super) fn delete_queue(&self, opcode: AdminOpcode, qid: u16) -> Result {
        let mut cmd = SubmissionEntry::new(opcode.0, 0);
        cmd.cdw10 = DeleteIoQueueCdw10::new().with_qid(qid).into_bits();
        self.admin_exec(cmd, None).map(|_| ())
    }
}

impl<H: Hal, B: IoBuffer, C, const N: usize> IoQueuePair<'_, H, B, C, N> {
    /// Makes sure the controller holds neither queue of this pair: deletes
    /// them (section 5.6, then 5.5; a queue the controller reports as an
    /// invalid identifier is not there), else resets the controller, which
    /// forgets every queue. The controller completes or abandons every
    /// command of a submission queue before deleting it, so when this returns
    /// `true` it no longer touches the rings or any request's buffer.
    /// `false` means the queues may still be there: their memory must be
    /// kept (or leaked). A refused Delete resets the controller here; an
    /// admin queue that is already failed is left to the driver's own reset,
    /// which comes with a backoff, unless this is the `last_chance` (`Drop`)
    /// to free the memory.
    fn remove_queues(&self, last_chance: bool) -> bool {
        // A reset since the queues were created has removed them. Otherwise
        // the answers to Delete hold: a reset on another thread in between
        // removes the queues just as well.
        let mut refused = false;
        let mut deleted = 0;
        for opcode in [AdminOpcode::DELETE_IO_SQ, AdminOpcode::DELETE_IO_CQ] {
            if self.ctrlr.epoch() != self.epoch {
                return true;
            }
            match self.ctrlr.delete_queue(opcode, self.qid) {
                Ok(()) => deleted += 1,
                Err(Error::Command(s))
                    if s.sct() == StatusCodeType::COMMAND_SPECIFIC
                        && s.sc() == command_specific::INVALID_QUEUE_IDENTIFIER =>
                {
                    deleted += 1
                }
                Err(Error::Command(_)) => refused = true,
                // A timeout (which reset the controller) or an admin queue
                // already failed (whose reset the driver retries with a
                // backoff): no reset of our own.
                Err(_) => break,
            }
        }
        if deleted == 2 || self.ctrlr.epoch() != self.epoch {
            return true;
        }
        if refused || last_chance {
            let _ = self.ctrlr.reset_from(self.epoch);
        }
        self.ctrlr.epoch() != self.epoch
    }

    /// Creates the queues again on the same memory after a reset: the
    /// controller forgot them, and they start empty with phase 1. If that
    /// fails, whatever part the controller may have created is removed,
    /// by a further reset if need be; the error names the step that failed,
    /// and is [`Error::Reset`] when a reset (on any thread) cut it short.
    pub(super) fn recreate(&mut self) -> core::result::Result<(), (RecoveryStep, Error)> {
        if self.on_device && !self.remove_queues(false) {
            // Leftovers of an earlier attempt that cannot be removed.
            return Err((RecoveryStep::CreateIoCq, Error::ControllerFailed));
        }
        self.sq.restart();
        self.cq.restart();
        self.ctrlr.clear_queue_shadow(self.qid);
        self.shadow = false;
        self.empty_passes = 0;
        let entries = self.sq.size();
        let cq = create_cq_command(self.qid, entries, self.cq.daddr());
        let sq = create_sq_command(self.qid, entries, self.sq.daddr(), self.priority);
        // From the moment a Create command may be fetched, the controller may
        // hold the queue, until the epoch moves on from the one it was sent in.
        self.on_device = true;
        let (created_cq, sent_in) = self.ctrlr.admin_exec_epoch(cq, AdminData::None);
        self.epoch = sent_in;
        let failed = match created_cq {
            Err(e) => (RecoveryStep::CreateIoCq, e),
            Ok(_) => match self.ctrlr.admin_exec_epoch(sq, AdminData::None) {
                // Both ran in this epoch: the queues live until it moves,
                // with shadow doorbells if the controller took the pages in
                // it.
                (Ok(_), epoch) if epoch == sent_in => {
                    self.shadow = self.ctrlr.shadow_in(sent_in);
                    return Ok(());
                }
                // A submission queue on a completion queue that a reset
                // deleted: whatever the device made of it lives in the
                // later epoch.
                (Ok(_), epoch) => {
                    self.epoch = epoch;
                    (RecoveryStep::CreateIoSq, Error::Reset)
                }
                (Err(e), epoch) => {
                    self.epoch = epoch;
                    (RecoveryStep::CreateIoSq, e)
                }
            },
        };
        let (step, mut e) = failed;
        if step == RecoveryStep::CreateIoCq && not_created(e) {
            // Refused, or never sent: nothing was created.
            self.on_device = false;
        } else if self.ctrlr.epoch() != self.epoch {
            // A reset since: the controller forgot whatever was created, and
            // a refusal came from a controller that had lost the queue.
            self.on_device = false;
            if matches!(e, Error::Command(_)) {
                e = Error::Reset;
            }
        } else {
            self.on_device = !self.remove_queues(false);
        }
        Err((step, e))
    }
}

impl<H: Hal, B: IoBuffer, C, const N: usize> Drop for IoQueuePair<'_, H, B, C, N> {
    fn drop(&mut self) {
        // A split cut short by a panic (perhaps the unwinding that drops
        // this pair now): its children point into a buffer that may be
        // gone, and are leaked, not finished.
        self.finish_broken_split();
        // Aborts still out are no one's business any more.
        for (ticket, _) in core::mem::take(&mut self.aborts) {
            self.ctrlr.cancel_abort(ticket);
        }
        // A removed device cannot be proven stopped (its registers read all
        // ones), so nothing it may write is released. Otherwise the queues are
        // gone after a reset since our epoch, or after a failed re-creation
        // that removed them; else delete them, and if that fails reset the
        // controller (other queue pairs notice the epoch and recover).
        //
        // If anything here panics (a timeout callback during Delete SQ, a
        // HAL method), the unwinding drops the request slots, whose buffers
        // and mappings are in `ManuallyDrop`: they leak, as does the queue
        // memory (`DmaMemory` has no `Drop`). Nothing the device may still
        // write is ever released by unwinding.
        let quiesced = !self.ctrlr.is_removed()
            && (!self.on_device || self.ctrlr.epoch() != self.epoch || self.remove_queues(true));
        if !quiesced {
            // The device may still write any of this memory. A removed device
            // is never proven stopped: leak all of it. Otherwise the
            // controller keeps it until a reset proves the device stopped
            // (the request buffers themselves are leaked, so that the
            // regions their mappings name stay valid).
            let removed = self.ctrlr.is_removed();
            let epoch = self.ctrlr.epoch();
            while let Some((i, _, mut req)) = self.slots.take_next(0, |_| true) {
                let cold = &mut self.cold[i];
                // The hot record names no mapping: its buffer is leaked
                // below, with nothing to undo.
                let (shared, meta_dma) =
                    if req.cold_dma { (cold.dma.take(), cold.meta_dma.take()) } else { (None, None) };
                for record in [shared, meta_dma] {
                    if let (false, Some(dma)) = (removed, record) {
                        self.ctrlr.quarantine.lock().buffer(core::mem::ManuallyDrop::into_inner(dma), epoch);
                    }
                }
                // A scatter list's shared pieces: each a record of its own.
                if !removed && req.cold_dma {
                    while let Some(dma) = cold.shared.pop() {
                        // Translated pieces (a split list's) have nothing to
                        // undo, and their buffer is leaked: no room taken.
                        if dma.mapping.is_some() {
                            self.ctrlr.quarantine.lock().buffer(dma, epoch);
                        }
                    }
                }
                leak(&mut req, cold);
                // The request (its context, the caller's code) is dropped
                // here, without the quarantine's lock held.
            }
            if !removed {
                let mut q = self.ctrlr.quarantine.lock();
                if let Some(sq) = self.sq.take_memory() {
                    q.memory(sq, epoch);
                }
                q.memory(self.cq.mem.take(), epoch);
                if let Some(p) = &mut self.prp {
                    q.memory(p.take(), epoch);
                }
                q.qid(self.qid, epoch);
            }
            return;
        }
        let hal = &self.ctrlr.hal;
        // Children first: their parts of a split request's buffer go back
        // to the CPU before the parent's buffer is dropped.
        let mut children_first = true;
        loop {
            let next = self.slots.take_next(0, |r| !children_first || r.role.parent().is_some());
            let Some((i, _, mut req)) = next else {
                if core::mem::take(&mut children_first) {
                    continue;
                }
                break;
            };
            // SAFETY: the queues are deleted or the controller is disabled;
            // the device no longer accesses the buffer.
            drop(unsafe { finish(hal, &mut req, &mut self.cold[i]) });
        }
        // SAFETY: as above, the device no longer uses the rings or PRP lists.
        unsafe {
            self.sq.free(hal);
            self.cq.mem.free(hal);
            if let Some(p) = &mut self.prp {
                p.free(hal);
            }
        }
        self.ctrlr.free_qid(self.qid);
    }
}
