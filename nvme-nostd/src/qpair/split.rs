//! Requests too large for one command: above the queue pair's transfer
//! limit (MDTS), above 65536 blocks, or across the namespace's optimal I/O
//! boundary (NOIOB). The request is split into children, one command each
//! over its part of the caller's buffer (and, with separate metadata, its
//! part of the metadata after the data, by its own MPTR: a second DMA
//! record), all from the queue pair's own
//! slots: a request that cannot get them all is refused at once
//! ([`Error::QueueFull`]), never half-sent. The parent keeps the buffer and
//! the context, is never on the wire, and completes to the caller once,
//! when its last child has, with the first failure among them.

use super::request::{self, finish, leak, Failure, Role, HOST_ABORTED, PARKED};
use super::{AbortOutcome, Completion, IoQueuePair, Path, SlotPrpSink, SubmitError};
use crate::buffer::{check_transfer, hand_to_device, IoBuffer};
use crate::error::{Error, Result};
use crate::quarantine::DmaUse;
use crate::slots::Cid;
use crate::spec::command::SubmissionEntry;
use crate::spec::status::Status;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use hal_traits::{Direction, Hal};

/// The children of a request of `blocks` blocks from `lba`: `(lba, blocks)`
/// of each, at most `max` blocks, none across a multiple of `boundary`
/// (0: none), in order, covering the request exactly.
pub fn chunks(lba: u64, blocks: u32, max: u32, boundary: u32) -> impl Iterator<Item = (u64, u32)> {
    let end = lba.saturating_add(u64::from(blocks));
    let mut at = lba;
    core::iter::from_fn(move || {
        if at >= end || max == 0 {
            return None;
        }
        let mut n = (end - at).min(u64::from(max));
        if boundary != 0 {
            n = n.min(u64::from(boundary) - at % u64::from(boundary));
        }
        let chunk = (at, n as u32);
        at += n;
        Some(chunk)
    })
}

/// What [`IoQueuePair::child_counted`] set up for a panic in the HAL, for
/// [`IoQueuePair::child_settled`] to undo.
pub(super) struct Settling<B> {
    /// The parent's buffer, out of its slot while the HAL is called (leaked
    /// if the call panics).
    buffer: Option<ManuallyDrop<B>>,
    /// The parent's failure is the one set up for a panic.
    provisional: bool,
    /// The child was the parent's last.
    last: bool,
}

/// The error a split request gets when a HAL call that gives the device's
/// access to one of its parts back panics.
const PANICKED: hal_traits::HalError = hal_traits::HalError::new(
    hal_traits::HalErrorKind::Panicked,
    "a HAL call panicked while handing part of it back",
);

/// How a split request's children are cut and encoded.
#[derive(Clone, Copy)]
pub(super) struct Cut {
    /// The command as a whole: opcode, NSID, CDW12 flags (NLB is set per
    /// child), CDW15.
    pub(super) base: SubmissionEntry,
    pub(super) lba: u64,
    pub(super) blocks: u32,
    /// Bytes of the buffer per block (data, and interleaved metadata).
    pub(super) per_block: usize,
    /// The most blocks in one child.
    pub(super) max_blocks: u32,
    /// NOIOB, in blocks (0: none).
    pub(super) boundary: u32,
    /// The reference tag of the first block, and its format, where the
    /// namespace has protection information.
    pub(super) ref_tag: Option<(crate::namespace::PiFormat, u64)>,
    /// Each child's reference tag is the first block's plus its offset
    /// (types 1 and 2; type 3's does not count blocks).
    pub(super) ref_tag_counts: bool,
    /// Separate metadata: bytes per block, after all the data (`per_block`
    /// times `blocks` bytes) in the buffer; each child names its part by
    /// MPTR. 0 for none.
    pub(super) meta_per_block: usize,
}

impl Cut {
    /// How many children the request needs.
    pub(super) fn children(&self) -> usize {
        chunks(self.lba, self.blocks, self.max_blocks, self.boundary).count()
    }

    /// The command of a child over `blocks` blocks from `lba`, with its
    /// first block's reference tag and its data pointer.
    fn child_command(
        &self,
        lba: u64,
        blocks: u32,
        ref_tag: Option<(crate::namespace::PiFormat, u64)>,
        prp: crate::prp::Prp,
    ) -> SubmissionEntry {
        let mut cmd = self.base;
        cmd.cdw10 = lba as u32;
        cmd.cdw11 = (lba >> 32) as u32;
        cmd.cdw12 = (self.base.cdw12 & !0xffff) | (blocks - 1);
        if let Some((format, tag)) = ref_tag {
            (cmd.cdw14, cmd.cdw3) = crate::protection::ref_tag_dwords(format, tag);
        }
        cmd.prp1 = prp.prp1;
        cmd.prp2 = prp.prp2;
        cmd
    }

    /// The reference tag of the child from `lba`, where the namespace has
    /// protection information.
    fn child_ref_tag(&self, lba: u64) -> Option<(crate::namespace::PiFormat, u64)> {
        let step = if self.ref_tag_counts { lba - self.lba } else { 0 };
        self.ref_tag.map(|(format, t)| (format, t.wrapping_add(step)))
    }

    /// Whether every child's parts (data, and separate metadata) start and
    /// end on `align` bytes: else two children would share a cache line the
    /// device writes, which a non-coherent system cannot hand back to the
    /// CPU for one of them alone.
    pub(super) fn parts_aligned(&self, align: usize) -> bool {
        self.per_block.is_multiple_of(align) && self.meta_per_block.is_multiple_of(align)
    }
}

impl<H: Hal, B: IoBuffer, C, const N: usize> IoQueuePair<'_, H, B, C, N> {
    /// Submits a request as the children `cut` describes. On error nothing
    /// was submitted and the buffer comes back.
    pub(super) fn submit_split(
        &mut self,
        cut: Cut,
        mut buf: B,
        direction: Direction,
        context: C,
        path: Path,
    ) -> core::result::Result<Cid, SubmitError<B, C>> {
        self.finish_broken_split();
        let slice = buf.as_dma_slice();
        let align = H::DMA_ALIGNMENT.max(4);
        let data_total = (cut.blocks as usize).saturating_mul(cut.per_block);
        let total = data_total.saturating_add((cut.blocks as usize).saturating_mul(cut.meta_per_block));
        let children = cut.children();
        let check = self.usable(path).and_then(|()| {
            check_transfer(slice, total, usize::MAX, direction, align)?;
            if direction.device_writes() && !cut.parts_aligned(align) {
                // Children would share cache lines the device writes.
                Err(Error::BufferMisaligned { required: align })
            } else if children >= N {
                // More commands than the pair has slots: never, not later.
                let max = (N - 1).saturating_mul(cut.max_blocks as usize).saturating_mul(cut.per_block);
                Err(Error::TransferTooLarge { requested: total, max })
            } else if self.slots.free_count() < children.saturating_add(1) {
                Err(Error::QueueFull)
            } else {
                Ok(())
            }
        });
        if let Err(error) = check {
            return Err(SubmitError { error, buffer: buf, context });
        }
        // The parent's slot is taken first and filled last: until then the
        // buffer stays here, to come back on any error.
        let Some(parent_slot) = self.reserve() else {
            return Err(SubmitError { error: Error::QueueFull, buffer: buf, context });
        };
        let parent = parent_slot.index() as u16;
        self.splitting = Some(parent);
        for (lba, blocks) in chunks(cut.lba, cut.blocks, cut.max_blocks, cut.boundary) {
            let offset = (lba - cut.lba) as usize * cut.per_block;
            // SAFETY: offset + len <= total <= the buffer's length
            // (`check_transfer`), so the part lies inside the buffer.
            let start = unsafe { slice.cast::<u8>().add(offset) };
            let part = NonNull::slice_from_raw_parts(start, blocks as usize * cut.per_block);
            let ref_tag = cut.child_ref_tag(lba);
            let meta = (cut.meta_per_block > 0).then(|| {
                let at = data_total + (lba - cut.lba) as usize * cut.meta_per_block;
                // SAFETY: at + len <= total <= the buffer's length.
                let start = unsafe { slice.cast::<u8>().add(at) };
                NonNull::slice_from_raw_parts(start, blocks as usize * cut.meta_per_block)
            });
            if let Err(error) = self.add_child(parent, &cut, lba, blocks, ref_tag, part, meta, direction) {
                self.unwind_split(parent);
                self.slots.cancel(parent_slot);
                self.splitting = None;
                return Err(SubmitError { error, buffer: buf, context });
            }
        }
        self.launch_split(parent_slot, cut, buf, children, context, path)
    }

    /// Fills the parent's slot of a split request whose `children` are
    /// built, and submits them.
    fn launch_split(
        &mut self,
        parent_slot: crate::slots::Reserved,
        cut: Cut,
        buf: B,
        children: usize,
        context: C,
        path: Path,
    ) -> core::result::Result<Cid, SubmitError<B, C>> {
        let parent = parent_slot.index() as u16;
        let mut base = cut.base;
        base.cdw10 = cut.lba as u32;
        base.cdw11 = (cut.lba >> 32) as u32;
        let role = Role::Own { context, children: children as u32 };
        self.cold[usize::from(parent)].failure = None;
        let opcode = base.cdw0.opc();
        let cid = self.slots.fill(parent_slot, |cid| {
            let mut r = request::with_role(opcode, cid, Some(buf), None, role);
            // Never on the wire: it cannot time out.
            r.deadline = PARKED;
            r
        });
        self.splitting = None;
        // Out they go, written first and announced once (a doorbell that
        // panics then leaves every child on the ring, for the next ring).
        for i in 0..N {
            let child = self
                .slots
                .at(i)
                .filter(|(_, r)| r.role.parent() == Some(parent))
                .map(|(c, _)| (c, self.cold[i].cmd));
            if let Some((child, cmd)) = child {
                self.push_or_wait(cmd, child, Path::InPoll);
            }
        }
        if path == Path::Direct && self.doorbell == super::DoorbellMode::PerSubmission {
            self.ring_doorbell();
        }
        Ok(cid)
    }

    /// Hands one child's part of the buffer to the device and fills its
    /// slot (not submitted yet).
    #[allow(clippy::too_many_arguments)]
    fn add_child(
        &mut self,
        parent: u16,
        cut: &Cut,
        lba: u64,
        blocks: u32,
        ref_tag: Option<(crate::namespace::PiFormat, u64)>,
        part: NonNull<[u8]>,
        meta: Option<NonNull<[u8]>>,
        direction: Direction,
    ) -> Result {
        let index = self.free_slot().ok_or(Error::QueueFull)?;
        let hal = &self.ctrlr.hal;
        let mut sink = SlotPrpSink {
            mem: self.prp.as_ref(),
            first: index * self.prp_pages_per_slot,
            pages: self.prp_pages_per_slot,
        };
        // SAFETY: the part belongs to the buffer the parent will own until
        // every child is done; its mapping is undone when the child
        // finishes, or by `unwind_split`.
        let (prp, _, mapping) =
            unsafe { hand_to_device(hal, part, direction, &mut sink, self.max_transfer, 0) }?;
        // Its part of the metadata, named by MPTR.
        let meta = match meta {
            None => None,
            // SAFETY: as for the data part.
            Some(m) => match unsafe { crate::buffer::hand_metadata(hal, m, direction) } {
                Ok((mptr, meta_mapping)) => Some((m, mptr, meta_mapping)),
                Err(e) => {
                    if let Some(mapping) = mapping {
                        // SAFETY: shared above; the device never saw it.
                        unsafe { hal.unshare(part, direction, mapping) };
                    }
                    return Err(e);
                }
            },
        };
        // SAFETY: the CPU does not touch the parts until `finish`.
        unsafe {
            hal.sync_for_device(part, direction);
            if let Some((m, _, _)) = &meta {
                hal.sync_for_device(*m, direction);
            }
        }
        let Some(slot) = self.reserve().filter(|s| s.index() == index) else {
            // SAFETY: never submitted: the device never saw the parts.
            unsafe {
                hal.sync_for_cpu(part, direction);
                if let Some(m) = mapping {
                    hal.unshare(part, direction, m);
                }
                if let Some((m, _, meta_mapping)) = meta {
                    hal.sync_for_cpu(m, direction);
                    if let Some(mm) = meta_mapping {
                        hal.unshare(m, direction, mm);
                    }
                }
            }
            return Err(Error::QueueFull);
        };
        let mut cmd = cut.child_command(lba, blocks, ref_tag, prp);
        if let Some((_, mptr, _)) = &meta {
            cmd.mptr = *mptr;
        }
        // A shared part's record (its mapping) goes in the cold part.
        let (hot, shared) = request::place(DmaUse { region: part, direction, mapping });
        let meta_dma = meta.map(|(region, _, mapping)| DmaUse { region, direction, mapping });
        let cold = &mut self.cold[slot.index()];
        cold.cmd = cmd;
        let cold_dma = shared.is_some() || meta_dma.is_some();
        if cold_dma {
            cold.set_dma(shared, meta_dma, None, super::scatter::Shares::new(), false);
        }
        self.slots.fill(slot, |cid| {
            let mut r = request::with_role(cmd.cdw0.opc(), cid, None, hot, Role::Child { parent });
            r.cold_dma = cold_dma;
            r
        });
        Ok(())
    }

    /// Submits a scatter list that PRPs cannot describe, for a controller
    /// without SGLs, as children that they can: one per run of pieces
    /// between the boundaries where PRPs break ([`scatter_cuts`]), each of
    /// whole blocks, its pieces translated or shared and kept in its own
    /// records. On error nothing was submitted and the buffer comes back: a
    /// break inside a block ([`Error::NotPrpShaped`]), more children than
    /// the pair has slots ever ([`Error::TransferTooLarge`]) or now
    /// ([`Error::QueueFull`]).
    ///
    /// [`scatter_cuts`]: super::scatter::scatter_cuts
    pub(super) fn submit_scatter_split(
        &mut self,
        cut: Cut,
        mut buf: B,
        layout: crate::namespace::Layout,
        direction: Direction,
        context: C,
        path: Path,
    ) -> core::result::Result<Cid, SubmitError<B, C>> {
        use super::scatter::{scatter_cuts, CutError};
        self.finish_broken_split();
        let len = layout.data;
        let check = self.usable(path).and_then(|()| self.check_pieces(&mut buf, layout, direction));
        if let Err(error) = check {
            return Err(SubmitError { error, buffer: buf, context });
        }
        let cuts = match scatter_cuts::<B, N>(&mut buf, len, cut.per_block) {
            Ok(c) if c.len() < N && self.slots.free_count() > c.len() => c,
            Ok(c) if c.len() < N => {
                return Err(SubmitError { error: Error::QueueFull, buffer: buf, context })
            }
            Ok(c) => {
                // The most the pair's slots could ever take: N - 1 parts.
                let max = c.iter().take(N.saturating_sub(1)).map(|c| c.2).sum();
                return Err(SubmitError {
                    error: Error::TransferTooLarge { requested: len, max },
                    buffer: buf,
                    context,
                });
            }
            Err(CutError::TooMany) => {
                let error = Error::TransferTooLarge { requested: len, max: 0 };
                return Err(SubmitError { error, buffer: buf, context });
            }
            Err(CutError::InsideBlock) => {
                let error = Error::NotPrpShaped(crate::error::PrpShape::InnerEndNotPageAligned);
                return Err(SubmitError { error, buffer: buf, context });
            }
        };
        let Some(parent_slot) = self.reserve() else {
            return Err(SubmitError { error: Error::QueueFull, buffer: buf, context });
        };
        let parent = parent_slot.index() as u16;
        self.splitting = Some(parent);
        let mut offset = 0usize;
        for &(first, count, bytes) in &cuts {
            let lba = cut.lba + (offset / cut.per_block) as u64;
            let blocks = (bytes / cut.per_block) as u32;
            let ref_tag = cut.child_ref_tag(lba);
            // The regions of this child's pieces (the last one's may be cut
            // short where the data ends).
            let mut regions = heapless::Vec::<NonNull<[u8]>, { super::MAX_SHARED_PIECES }>::new();
            let (mut left, mut i) = (bytes, first);
            while regions.len() < count && i < buf.pieces() {
                let piece = buf.piece(i);
                i += 1;
                let take = piece.len().min(left);
                if take > 0 {
                    left -= take;
                    let _ = regions.push(NonNull::slice_from_raw_parts(piece.cast::<u8>(), take));
                }
            }
            let added = self.add_scatter_child(parent, &cut, lba, blocks, ref_tag, &regions, direction);
            if let Err(error) = added {
                self.unwind_split(parent);
                self.slots.cancel(parent_slot);
                self.splitting = None;
                return Err(SubmitError { error, buffer: buf, context });
            }
            offset += bytes;
        }
        self.launch_split(parent_slot, cut, buf, cuts.len(), context, path)
    }

    /// Hands one child's pieces of a split scatter list to the device (each
    /// translated or shared, and recorded for `finish` to sync back and
    /// undo) and fills its slot (not submitted yet).
    #[allow(clippy::too_many_arguments)]
    fn add_scatter_child(
        &mut self,
        parent: u16,
        cut: &Cut,
        lba: u64,
        blocks: u32,
        ref_tag: Option<(crate::namespace::PiFormat, u64)>,
        regions: &[NonNull<[u8]>],
        direction: Direction,
    ) -> Result {
        let index = self.free_slot().ok_or(Error::QueueFull)?;
        let hal = &self.ctrlr.hal;
        let mut sink = SlotPrpSink {
            mem: self.prp.as_ref(),
            first: index * self.prp_pages_per_slot,
            pages: self.prp_pages_per_slot,
        };
        let bytes = regions.iter().map(|r| r.len()).sum();
        let mut prp = crate::prp::PrpBuilder::new(&mut sink, bytes);
        let mut records = super::scatter::Shares::<H::Mapping>::new();
        let mut failed = None;
        for &region in regions {
            if hal.translate(region, &mut prp) {
                let _ = records.push(DmaUse { region, direction, mapping: None });
                continue;
            }
            // SAFETY: the pieces belong to the buffer the parent will own
            // until every child is done; the shares are undone when the
            // child finishes, or below.
            match unsafe { hal.share(region, direction, &mut prp) } {
                Ok(mapping) => drop(records.push(DmaUse { region, direction, mapping: Some(mapping) })),
                Err(e) => {
                    failed = Some(Error::Hal(e));
                    break;
                }
            }
        }
        let undo = |records: &mut super::scatter::Shares<H::Mapping>| {
            // SAFETY: never submitted: the device never saw these shares.
            unsafe { super::scatter::undo_shares(hal, records) };
        };
        let described = match failed {
            Some(e) => Err(e),
            None => prp.finish(),
        };
        let prp = match described {
            Ok(p) => p,
            Err(e) => {
                undo(&mut records);
                return Err(e);
            }
        };
        for dma in records.iter() {
            // SAFETY: the CPU does not touch the pieces until `finish`.
            unsafe { hal.sync_for_device(dma.region, dma.direction) };
        }
        let Some(slot) = self.reserve().filter(|s| s.index() == index) else {
            for dma in records.iter() {
                // SAFETY: never submitted: the device never saw them.
                unsafe { hal.sync_for_cpu(dma.region, dma.direction) };
            }
            undo(&mut records);
            return Err(Error::QueueFull);
        };
        let cmd = cut.child_command(lba, blocks, ref_tag, prp);
        let cold = &mut self.cold[slot.index()];
        cold.cmd = cmd;
        cold.set_dma(None, None, None, records, true);
        self.slots.fill(slot, |cid| {
            let mut r = request::with_role(cmd.cdw0.opc(), cid, None, None, Role::Child { parent });
            r.cold_dma = true;
            r
        });
        Ok(())
    }

    /// Takes back the children of `parent` that were built but never
    /// submitted: the device never saw their parts.
    fn unwind_split(&mut self, parent: u16) {
        let hal = &self.ctrlr.hal;
        let mut from = 0;
        while let Some((i, _, mut child)) = self.slots.take_next(from, |r| r.role.parent() == Some(parent)) {
            from = i + 1;
            // SAFETY: never submitted.
            drop(unsafe { finish(hal, &mut child, &mut self.cold[i]) });
        }
    }

    /// Cleans up after a split whose building was cut short by a panic (in
    /// the HAL or the buffer): its children were never submitted, and the
    /// buffer they point into may be gone, so their mappings are leaked
    /// rather than undone; the parent's slot goes back to the pool.
    pub(super) fn finish_broken_split(&mut self) {
        let Some(parent) = self.splitting.take() else { return };
        let mut from = 0;
        while let Some((i, _, mut child)) = self.slots.take_next(from, |r| r.role.parent() == Some(parent)) {
            from = i + 1;
            leak(&mut child, &mut self.cold[i]);
        }
        self.slots.reclaim(parent as usize);
    }

    /// A child of the request in slot `parent` completed with `status`
    /// (and the driver's `error`): the parent's completion, when it was the
    /// last.
    /// A child of the split request in slot `parent` completed (with
    /// `status`, and `error` if the driver says more). Done before the HAL
    /// gives the device's access to the child's part back: the parent
    /// (in slot `parent`) counts the child and takes its failure, then is
    /// set up as if that HAL call panicked (its buffer taken out of its slot
    /// into the returned record, a failure that says so, and, for its last
    /// child, ended and counted for delivery), so that a panic there leaks
    /// the buffer (part of it was not handed back) and the parent is still
    /// delivered once, never left waiting for a child that is gone.
    /// [`child_settled`](Self::child_settled) undoes the setup once the HAL
    /// call returned. `None` when the slot holds no parent.
    pub(super) fn child_counted(
        &mut self,
        parent: u16,
        status: Status,
        error: Option<Error>,
    ) -> Option<Settling<B>> {
        let index = usize::from(parent);
        let (_, req) = self.slots.at_mut(index)?;
        let Role::Own { children, .. } = &mut req.role else { return None };
        *children = children.saturating_sub(1);
        let last = *children == 0;
        let failure = &mut self.cold.get_mut(index)?.failure;
        if failure.is_none() && (error.is_some() || !status.is_success()) {
            *failure = Some(Failure { status, error });
        }
        let provisional = failure.is_none();
        if provisional {
            *failure = Some(Failure { status: HOST_ABORTED, error: Some(Error::Hal(PANICKED)) });
        }
        let buffer = req.buffer.take();
        if last {
            req.ended = true;
            self.pending_done += 1;
        }
        Some(Settling { buffer, provisional, last })
    }

    /// The second half of [`child_counted`](Self::child_counted), once the
    /// HAL call between the halves returned: undoes what
    /// [`child_counted`](Self::child_counted) set up for a panic, and for
    /// the last child takes the parent out of its slot and returns its
    /// completion.
    pub(super) fn child_settled(&mut self, parent: u16, settling: Settling<B>) -> Option<Completion<B, C>> {
        let Settling { buffer, provisional, last } = settling;
        let index = usize::from(parent);
        let (cid, req) = self.slots.at_mut(index)?;
        let cold = self.cold.get_mut(index)?;
        if provisional {
            cold.failure = None;
        }
        if !last {
            req.buffer = buffer;
            return None;
        }
        req.ended = false;
        self.pending_done -= 1;
        let failure = cold.failure.take();
        let req = self.slots.remove(cid)?;
        let Role::Own { context, .. } = req.role else { return None };
        let (status, error) = failure.map_or((Status::SUCCESS, None), |f| (f.status, f.error));
        let buffer = buffer.map(ManuallyDrop::into_inner);
        Some(Completion { cid: req.given, status, error, dw0: 0, dw1: 0, buffer, context })
    }

    /// After `end_in_flight` ended every request: the ended children leave
    /// their slots, and their parents (ended too) learn of them, so that a
    /// parent is delivered once, with the first failure.
    pub(super) fn fold_ended_children(&mut self) {
        let mut from = 0;
        while let Some((i, _, child)) = self.slots.take_next(from, |r| r.role.parent().is_some() && r.ended) {
            from = i + 1;
            let Role::Child { parent } = child.role else { continue };
            let done = self.cold[i].done.take();
            // Its part of the buffer went back to the CPU (or was leaked)
            // with the rest.
            if let Some((_, p)) = self.slots.at_mut(usize::from(parent)) {
                if let (Role::Own { children, .. }, Some(cold)) =
                    (&mut p.role, self.cold.get_mut(usize::from(parent)))
                {
                    let failure = &mut cold.failure;
                    *children = children.saturating_sub(1);
                    let ended = Failure { status: HOST_ABORTED, error: done };
                    // A removal is what the owner must hear, over any
                    // earlier failure of another child.
                    if done == Some(Error::DeviceRemoved) {
                        *failure = Some(ended);
                    } else {
                        failure.get_or_insert(ended);
                    }
                }
            }
        }
    }

    /// Aborts every child of the split request `parent` (its CID now). An
    /// Abort that fails (the abort command limit exceeded, say) does not
    /// stop the others: `Aborted` when any child was aborted (the request
    /// then completes with that failure), else the first error, else
    /// `NotAborted`.
    pub(super) fn abort_children(&mut self, parent: Cid) -> Result<AbortOutcome> {
        let index = crate::slots::SlotPool::<super::request::Request<B, C>, N>::index_of(parent) as u16;
        let mut outcome = AbortOutcome::NotAborted;
        let mut first_error = None;
        for i in 0..N {
            let Some((wire, req)) = self.slots.at_mut(i) else { continue };
            if req.role.parent() != Some(index) || req.ended {
                continue;
            }
            req.aborted = true;
            let result = self.ctrlr.abort_wire(self.qid, wire.0);
            if !matches!(result, Ok(true)) {
                if let Some((_, req)) = self.slots.at_mut(i) {
                    req.aborted = false;
                }
            }
            match result {
                Ok(true) => outcome = AbortOutcome::Aborted,
                Ok(false) => {}
                // Gone, or the admin queue unusable: no later Abort can work.
                Err(e @ (Error::DeviceRemoved | Error::ControllerFailed | Error::ControllerFatal)) => {
                    first_error.get_or_insert(e);
                    break;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match (outcome, first_error) {
            (AbortOutcome::Aborted, _) | (_, None) => Ok(outcome),
            (_, Some(e)) => Err(e),
        }
    }
}
