//! Asynchronous admin commands: a bounded pool of admin requests, each
//! owning its buffer and context while the controller works on it, as SPDK's
//! admin commands with callbacks (`spdk_nvme_ctrlr_cmd_admin_raw`,
//! `spdk_nvme_ctrlr_cmd_get_log_page`, ...) and
//! `spdk_nvme_ctrlr_process_admin_completions`.
//!
//! The commands go to the controller's admin queue beside the blocking calls
//! (which wait for theirs under the admin lock, and stash what they see of
//! these), and come back through [`AdminRequests::process`]. A buffer
//! reaches the device through the HAL as an I/O buffer does (translated or
//! shared, PRPs built in the pool's own list pages), and comes back only with
//! its completion; a command that times out resets the controller first, so
//! its buffer is handed back only once the device is proven stopped (and is
//! leaked, its mapping kept by the controller, if that cannot be proven).

use crate::admin::{AsyncKind, AsyncResult, Ticket};
use crate::buffer::{check_transfer, hand_to_device, IoBuffer};
use crate::controller::{check_raw_admin, identify_command, Controller};
use crate::dma::{DmaAlloc, DmaMemory};
use crate::error::{Argument, Error, Result};
use crate::features::get_features_command;
use crate::log::get_log_page_command;
use crate::qpair::AbortOutcome;
use crate::qpair::{SlotPrpSink, SubmitError};
use crate::quarantine::DmaUse;
use crate::slots::Cid;
use crate::spec::command::{CompletionEntry, SubmissionEntry};
use crate::spec::dwords::Select;
use crate::spec::ids::{Cns, Fid, Lid};
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use hal_traits::{Direction, Hal, PAGE_SIZE};

/// The largest transfer of an admin request: one PRP list page per request
/// (511 entries and PRP1), capped by MDTS.
const MAX_ADMIN_TRANSFER: usize = 511 * PAGE_SIZE;

/// A completed admin request, with what it owned.
#[derive(Debug)]
#[non_exhaustive]
pub struct AdminCompletion<B, C> {
    /// The CID its submission returned.
    pub cid: Cid,
    /// Its completion (an error status as [`Error::Command`]), or why the
    /// driver ended it: [`Error::Timeout`] (the controller was reset),
    /// [`Error::Reset`] (a reset ended it), [`Error::DeviceRemoved`].
    pub result: Result<CompletionEntry>,
    /// Its buffer, unless the device may still write it (a removed device,
    /// or a reset that did not work): then it is leaked.
    pub buffer: Option<B>,
    /// Its context.
    pub context: C,
}

/// One admin request in flight.
struct Pending<M, B, C> {
    /// Its CID on the admin queue (and the queue's round).
    ticket: Ticket,
    /// The reset epoch it was submitted in.
    epoch: u32,
    buffer: Option<ManuallyDrop<B>>,
    dma: Option<ManuallyDrop<DmaUse<M>>>,
    context: C,
}

/// A pool of `N` admin requests on one controller
/// ([`Controller::admin_requests`]): submit without waiting, collect with
/// [`process`](Self::process). At most 16 admin commands nobody waits for
/// are outstanding per controller (this pool's, Aborts, a Keep Alive): a
/// submission beyond is refused with [`Error::QueueFull`].
///
/// Dropping the pool with requests in flight waits for them up to the
/// admin timeout, then resets the controller so that their buffers can be
/// handed back (dropped).
pub struct AdminRequests<'c, H: Hal, B: IoBuffer, C, const N: usize> {
    ctrlr: &'c Controller<H>,
    pending: [Option<Pending<H::Mapping, B, C>>; N],
    /// One PRP list page per request.
    prp: Option<DmaMemory>,
    max_transfer: usize,
}

impl<H: Hal> Controller<H> {
    /// A pool of `N` asynchronous admin requests with buffers of type `B`
    /// and contexts of type `C` (one page of DMA memory per request, for
    /// PRP lists).
    pub fn admin_requests<B: IoBuffer, C, const N: usize>(&self) -> Result<AdminRequests<'_, H, B, C, N>> {
        if N == 0 {
            return Err(Error::InvalidArgument(Argument::QueueEntries));
        }
        let prp = DmaAlloc::new(&self.hal, N).map_err(Error::Hal)?.lend();
        let max_transfer =
            self.max_transfer_bytes().map_or(MAX_ADMIN_TRANSFER, |m| m.min(MAX_ADMIN_TRANSFER));
        Ok(AdminRequests {
            ctrlr: self,
            pending: core::array::from_fn(|_| None),
            prp: Some(prp),
            max_transfer,
        })
    }
}

impl<'c, H: Hal, B: IoBuffer, C, const N: usize> AdminRequests<'c, H, B, C, N> {
    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.pending.iter().filter(|p| p.is_some()).count()
    }

    /// The largest transfer a request may carry, in bytes.
    pub fn max_transfer_bytes(&self) -> usize {
        self.max_transfer
    }

    /// Submits a raw admin command, with `data` (a buffer and the direction
    /// the command moves it in) as its data pointer; returns its CID. The
    /// driver sets the CID and PRP1/PRP2. Refused before anything is sent:
    /// data pointers, SGLs or fused bits in `cmd`
    /// ([`Argument::RawCommandPointers`]), an empty buffer, one above
    /// [`max_transfer_bytes`](Self::max_transfer_bytes), misaligned
    /// ([`Error::BufferMisaligned`]), no free request or asynchronous slot
    /// ([`Error::QueueFull`]), a controller that is failed or removed.
    ///
    /// # Safety
    ///
    /// As for [`Controller::admin_command`]: the command must make the
    /// device access no memory but `data`'s buffer, in its direction, and
    /// must not change what the driver relies on.
    pub unsafe fn submit_raw(
        &mut self,
        cmd: SubmissionEntry,
        data: Option<(B, Direction)>,
        context: C,
    ) -> core::result::Result<Cid, SubmitError<Option<B>, C>> {
        if let Err(error) = check_raw_admin(&cmd) {
            return Err(SubmitError { error, buffer: data.map(|(b, _)| b), context });
        }
        self.submit(cmd, data, context)
    }

    /// Get Log Page of `lid` for `nsid` from byte `offset`, into all of
    /// `buffer` (a non-zero multiple of 4 bytes), without waiting; RAE clear.
    pub fn get_log_page(
        &mut self,
        lid: Lid,
        nsid: u32,
        offset: u64,
        buffer: B,
        context: C,
    ) -> core::result::Result<Cid, SubmitError<Option<B>, C>> {
        let mut buffer = buffer;
        let len = buffer.as_dma_slice().len();
        if len == 0 || !len.is_multiple_of(4) || !offset.is_multiple_of(4) {
            let error = Error::InvalidArgument(Argument::LogPageAlignment);
            return Err(SubmitError { error, buffer: Some(buffer), context });
        }
        let cmd = get_log_page_command(lid, nsid, offset, len);
        self.submit(cmd, Some((buffer, Direction::FromDevice)), context)
    }

    /// Identify with `cns` for `nsid` into `buffer` (4096 bytes), without
    /// waiting.
    pub fn identify(
        &mut self,
        cns: Cns,
        nsid: u32,
        buffer: B,
        context: C,
    ) -> core::result::Result<Cid, SubmitError<Option<B>, C>> {
        self.submit(identify_command(cns, nsid), Some((buffer, Direction::FromDevice)), context)
    }

    /// Get Features of `fid` (no data structure), without waiting: the
    /// value is the completion's DW0. Refused, unsent, as
    /// [`Controller::get_features`] refuses it (a feature the controller
    /// does not advertise, one that moves data, a SEL it lacks).
    pub fn get_features(
        &mut self,
        fid: Fid,
        nsid: u32,
        select: Select,
        cdw11: u32,
        context: C,
    ) -> core::result::Result<Cid, SubmitError<Option<B>, C>> {
        if let Err(error) = self.ctrlr.check_get_features(fid, select) {
            return Err(SubmitError { error, buffer: None, context });
        }
        self.submit(get_features_command(fid, nsid, select, cdw11), None, context)
    }

    fn submit(
        &mut self,
        mut cmd: SubmissionEntry,
        data: Option<(B, Direction)>,
        context: C,
    ) -> core::result::Result<Cid, SubmitError<Option<B>, C>> {
        let ctrlr = self.ctrlr;
        let refuse = |error, buffer, context| Err(SubmitError { error, buffer, context });
        if ctrlr.is_removed() {
            return refuse(Error::DeviceRemoved, data.map(|(b, _)| b), context);
        }
        let Some(index) = self.pending.iter().position(|p| p.is_none()) else {
            return refuse(Error::QueueFull, data.map(|(b, _)| b), context);
        };
        let hal = &ctrlr.hal;
        // The buffer to the device: checked, translated or shared, PRPs.
        let (buffer, dma) = match data {
            None => (None, None),
            Some((mut buf, direction)) => {
                if buf.pieces() > 1 {
                    // Admin data is one run: a scatter list is refused.
                    let error = Error::InvalidArgument(crate::error::Argument::ScatterList);
                    return refuse(error, Some(buf), context);
                }
                let slice = buf.as_dma_slice();
                let len = slice.len();
                let align = H::DMA_ALIGNMENT.max(4);
                if let Err(error) = check_transfer(slice, len, self.max_transfer, direction, align) {
                    return refuse(error, Some(buf), context);
                }
                let region = NonNull::slice_from_raw_parts(slice.cast::<u8>(), len);
                let mut sink = SlotPrpSink { mem: self.prp.as_ref(), first: index, pages: 1 };
                // SAFETY: `buf` is an IoBuffer that the request owns from
                // here on; its mapping is undone once the device is done
                // (`release`), or below if the submission fails.
                let mapping = match unsafe {
                    hand_to_device(hal, region, direction, &mut sink, self.max_transfer, 0)
                } {
                    Ok((p, _, mapping)) => {
                        cmd.prp1 = p.prp1;
                        cmd.prp2 = p.prp2;
                        mapping
                    }
                    Err(e) => return refuse(e, Some(buf), context),
                };
                // SAFETY: the CPU leaves the buffer alone until `finish`.
                unsafe { hal.sync_for_device(region, direction) };
                (Some(buf), Some(DmaUse { region, direction, mapping }))
            }
        };
        // Sent under the admin lock, with the epoch it is sent in.
        let sent = {
            let mut admin = ctrlr.admin.lock();
            let epoch = ctrlr.epoch();
            admin
                .submit_async(hal, cmd, ctrlr.options().admin_timeout, AsyncKind::Request)
                .map(|ticket| ticket.map(|t| (t, epoch)))
        };
        match sent {
            Ok(Some((ticket, epoch))) => {
                self.pending[index] = Some(Pending {
                    ticket,
                    epoch,
                    buffer: buffer.map(ManuallyDrop::new),
                    dma: dma.map(ManuallyDrop::new),
                    context,
                });
                Ok(Cid(ticket.cid))
            }
            Ok(None) | Err(_) => {
                let error = match sent {
                    Err(e) => e,
                    _ => Error::QueueFull,
                };
                if let Some(dma) = dma {
                    // SAFETY: nothing reached the device (`submit_async`
                    // wrote no entry, or the admin queue is failed before
                    // it did): the device never had the address.
                    unsafe {
                        hal.sync_for_cpu(dma.region, dma.direction);
                        if let Some(m) = dma.mapping {
                            hal.unshare(dma.region, dma.direction, m);
                        }
                    }
                }
                refuse(error, buffer, context)
            }
        }
    }

    /// Asks the controller to abort the admin command that `cid` names (the
    /// CID its submission returned): Abort with SQID 0. It still completes
    /// through [`process`](Self::process), exactly once.
    pub fn abort(&mut self, cid: Cid) -> Result<AbortOutcome> {
        let mine =
            self.pending.iter().flatten().any(|p| p.ticket.cid == cid.0 && p.epoch == self.ctrlr.epoch());
        if !mine {
            return Err(Error::InvalidArgument(Argument::UnknownCid));
        }
        Ok(if self.ctrlr.abort_wire(0, cid.0)? { AbortOutcome::Aborted } else { AbortOutcome::NotAborted })
    }

    /// Collects the admin requests that completed (or that the driver ended),
    /// up to `max`, handing each to `on_complete` with its buffer and
    /// context; returns how many. A request past the admin timeout resets
    /// the controller (its buffer comes back once the reset disabled the
    /// controller). Also consumes the admin completions posted so far, as
    /// [`Controller::process_admin_completions`] does (events stay queued for
    /// it).
    ///
    /// If `on_complete` panics, the request being delivered is the
    /// callback's, and the others wait for the next call.
    pub fn process(&mut self, max: usize, mut on_complete: impl FnMut(AdminCompletion<B, C>)) -> usize {
        let ctrlr = self.ctrlr;
        let mut delivered = 0;
        for i in 0..N {
            if delivered >= max {
                break;
            }
            let Some(p) = &self.pending[i] else { continue };
            let (ticket, epoch) = (p.ticket, p.epoch);
            let result = if ctrlr.is_removed() {
                Err(Error::DeviceRemoved)
            } else {
                // The ticket names this request only (a reset since ended
                // it, unless its result had come: then that stands).
                let outcome = ctrlr.admin.lock().async_result(&ctrlr.hal, ticket);
                match outcome {
                    AsyncResult::Pending => continue,
                    AsyncResult::Done(Err(Error::Timeout(w))) => {
                        // The device may still write the buffer: only a
                        // reset proves it stopped.
                        let _ = ctrlr.reset_from(epoch);
                        Err(Error::Timeout(w))
                    }
                    AsyncResult::Done(r) => r,
                }
            };
            // A command that timed out may still be on the device, unless
            // the reset since disabled the controller.
            let stopped = !matches!(result, Err(Error::Timeout(_))) || ctrlr.epoch() != epoch;
            let Some(mut p) = self.pending[i].take() else { continue };
            let buffer = self.release(&mut p, stopped);
            delivered += 1;
            on_complete(AdminCompletion { cid: Cid(ticket.cid), result, buffer, context: p.context });
        }
        delivered
    }

    /// Gives the device's access to `p`'s buffer back and returns the
    /// buffer when `stopped` (its command completed, or the controller was
    /// disabled since it was submitted) and the device is not removed;
    /// otherwise leaks the buffer and keeps its mapping in the controller's
    /// quarantine until a reset.
    fn release(&self, p: &mut Pending<H::Mapping, B, C>, stopped: bool) -> Option<B> {
        let ctrlr = self.ctrlr;
        let hal = &ctrlr.hal;
        let removed = ctrlr.is_removed();
        if stopped && !removed {
            if let Some(dma) = p.dma.take().map(ManuallyDrop::into_inner) {
                // SAFETY: the command completed, or the controller was
                // disabled since it was submitted: the device no longer
                // accesses the buffer.
                unsafe {
                    hal.sync_for_cpu(dma.region, dma.direction);
                    if let Some(m) = dma.mapping {
                        hal.unshare(dma.region, dma.direction, m);
                    }
                }
            }
            return p.buffer.take().map(ManuallyDrop::into_inner);
        }
        if let (false, Some(dma)) = (removed, p.dma.take()) {
            ctrlr.quarantine.lock().buffer(ManuallyDrop::into_inner(dma), ctrlr.epoch());
        }
        // Leaked: the device may still write it.
        let _leaked = (p.buffer.take(), p.dma.take());
        None
    }
}

impl<H: Hal, B: IoBuffer, C, const N: usize> Drop for AdminRequests<'_, H, B, C, N> {
    fn drop(&mut self) {
        let ctrlr = self.ctrlr;
        let hal = &ctrlr.hal;
        // Wait for what is in flight, up to the admin timeout.
        let deadline = hal.now().saturating_add(ctrlr.options().admin_timeout);
        while self.in_flight() > 0 && hal.now() < deadline && !ctrlr.is_removed() {
            self.process(usize::MAX, drop);
            if self.in_flight() > 0 {
                hal.delay(core::time::Duration::from_micros(100));
            }
        }
        // What is left may still be written by the device: reset first.
        if self.in_flight() > 0 && !ctrlr.is_removed() {
            let epochs: heapless::Vec<u32, N> = self.pending.iter().flatten().map(|p| p.epoch).collect();
            if let Some(&oldest) = epochs.iter().min() {
                if epochs.iter().all(|&e| e == ctrlr.epoch()) {
                    let _ = ctrlr.reset_from(oldest);
                }
            }
        }
        let mut all_stopped = !ctrlr.is_removed();
        for i in 0..N {
            if let Some(mut p) = self.pending[i].take() {
                let stopped = ctrlr.epoch() != p.epoch;
                all_stopped &= stopped;
                ctrlr.admin.lock().cancel_async(p.ticket);
                drop(self.release(&mut p, stopped));
            }
        }
        let Some(mut prp) = self.prp.take() else { return };
        if all_stopped {
            // SAFETY: no command of this pool is on the device any more
            // (each completed, or the controller was disabled since it was
            // sent), so nothing reads the PRP list pages.
            unsafe { prp.free(hal) };
        } else if !ctrlr.is_removed() {
            // A command may still read its list page: kept until a reset.
            ctrlr.quarantine.lock().memory(prp.take(), ctrlr.epoch());
        }
        // A removed device: leaked (`DmaMemory` has no `Drop`).
    }
}
