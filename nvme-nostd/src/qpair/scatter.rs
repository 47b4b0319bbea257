//! Reads and writes from a scatter list ([`ScatterList`](crate::ScatterList),
//! or any [`IoBuffer`] of several pieces): each piece translated by the HAL
//! (memory it reaches without sharing) or, where it cannot, shared (up to
//! [`MAX_SHARED_PIECES`] of them), described by PRPs where the pieces'
//! shape allows (every piece but the first starting on a page, every piece
//! but the last ending on one), else by an SGL where the controller has
//! SGLs (Identify Controller SGLS), else split where PRPs break
//! ([`scatter_cuts`], `submit_scatter_split`), or refused unsent where a
//! break falls inside a block.

use super::request::DmaUse;
use super::{IoQueuePair, Path, SlotPrpSink, SubmitError};
use crate::buffer::IoBuffer;
use crate::controller::SglSupport;
use crate::error::{Argument, Error, PrpShape, Result};
use crate::namespace::Layout;
use crate::prp::PrpBuilder;
use crate::sgl::SglBuilder;
use crate::slots::Cid;
use crate::spec::command::SubmissionEntry;
use core::ptr::NonNull;
use hal_traits::{Direction, Hal, SegmentSink, PAGE_SIZE};

/// The most pieces of one scatter list that the HAL may have to share (a
/// `Vec` through an IOMMU, say); each request keeps room for that many
/// mappings. Pieces the HAL translates (its DMA memory, memory registered up
/// front) do not count. More are refused unsent
/// ([`Argument::ScatterTooManyShared`]).
pub const MAX_SHARED_PIECES: usize = 8;

/// The pieces of one request that the HAL shared: each the bytes of a piece
/// it carries, and what `share` returned for them.
pub(super) type Shares<M> = heapless::Vec<DmaUse<M>, MAX_SHARED_PIECES>;

/// Calls `f` with the bytes of each piece of `buf` that carry the first
/// `len` bytes of the transfer: whole pieces, and the part of the last one
/// that is used. These are the regions handed to the HAL (translated or
/// shared, synced for the device and back), always the same for the same
/// buffer (`IoBuffer`'s contract).
pub(super) fn for_each_handed<B: IoBuffer>(buf: &mut B, len: usize, mut f: impl FnMut(NonNull<[u8]>)) {
    let mut left = len;
    for i in 0..buf.pieces() {
        if left == 0 {
            break;
        }
        let piece = buf.piece(i);
        let take = piece.len().min(left);
        left -= take;
        f(NonNull::slice_from_raw_parts(piece.cast::<u8>(), take));
    }
}

/// Hands the regions of `buf` carrying `len` bytes to `sink`: each
/// translated where the HAL can, else shared (recorded in `shares`, which
/// the caller undoes on error).
///
/// # Safety
///
/// `buf` is the request's buffer, which the CPU does not touch until its
/// shares are undone ([`undo_shares`]).
unsafe fn hand_pieces<H: Hal, B: IoBuffer>(
    hal: &H,
    buf: &mut B,
    len: usize,
    direction: Direction,
    sink: &mut dyn SegmentSink,
    shares: &mut Shares<H::Mapping>,
) -> Result {
    let mut outcome = Ok(());
    for_each_handed(buf, len, |region| {
        if outcome.is_err() || hal.translate(region, sink) {
            return;
        }
        if shares.is_full() {
            outcome = Err(Error::InvalidArgument(Argument::ScatterTooManyShared));
            return;
        }
        // SAFETY: the caller keeps the buffer away from the CPU until the
        // share is undone.
        match unsafe { hal.share(region, direction, sink) } {
            Ok(mapping) => {
                // Room was checked above.
                let _ = shares.push(DmaUse { region, direction, mapping: Some(mapping) });
            }
            Err(e) => outcome = Err(Error::Hal(e)),
        }
    });
    outcome
}

/// Whether PRPs can describe the first `len` bytes of `buf`'s pieces, by
/// their addresses in memory (a HAL keeps a page's offset when it hands it
/// to the device): every piece but the first starting on a page, every piece
/// but the last ending on one.
pub(super) fn prp_shaped<B: IoBuffer>(buf: &mut B, len: usize) -> bool {
    let mut regions = heapless::Vec::<NonNull<[u8]>, 2>::new();
    let mut shaped = true;
    for_each_handed(buf, len, |r| {
        if r.is_empty() {
            return;
        }
        if let Some(prev) = regions.pop() {
            let end = prev.cast::<u8>().as_ptr() as usize + prev.len();
            shaped &=
                end.is_multiple_of(PAGE_SIZE) && (r.cast::<u8>().as_ptr() as usize).is_multiple_of(PAGE_SIZE);
        }
        let _ = regions.push(r);
    });
    shaped
}

/// Why a scatter list cannot be cut into children PRPs describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CutError {
    /// A break between pieces falls inside a block.
    InsideBlock,
    /// More children than `N`.
    TooMany,
}

/// Where a scatter list that PRPs cannot describe is cut into children
/// that they can (a controller without SGLs): at every piece boundary where
/// PRPs break, and after [`MAX_SHARED_PIECES`] pieces; each child `(first
/// piece, pieces that carry bytes from there, bytes)`, in order, covering
/// the first `len` bytes (empty pieces carry nothing and are skipped).
/// Judged by the pieces' addresses in memory: the HALs here keep a page's
/// offset when they hand it to the device; one that did not would see a
/// child's PRPs fail, and the request refused unsent (`NotPrpShaped`).
pub(super) fn scatter_cuts<B: IoBuffer, const N: usize>(
    buf: &mut B,
    len: usize,
    per_block: usize,
) -> core::result::Result<heapless::Vec<(usize, usize, usize), N>, CutError> {
    let mut cuts = heapless::Vec::new();
    let (mut first, mut count, mut bytes, mut i) = (0usize, 0usize, 0usize, 0usize);
    let mut prev_end = None::<usize>;
    let mut outcome = Ok(());
    for_each_handed(buf, len, |r| {
        if r.is_empty() {
            // Nothing for the device (PRPs skip it too), but it is a piece.
            i += 1;
            return;
        }
        let start = r.cast::<u8>().as_ptr() as usize;
        let breaks =
            prev_end.is_some_and(|end| !end.is_multiple_of(PAGE_SIZE) || !start.is_multiple_of(PAGE_SIZE));
        if count > 0 && (breaks || count == MAX_SHARED_PIECES) {
            if !bytes.is_multiple_of(per_block.max(1)) {
                outcome = outcome.and(Err(CutError::InsideBlock));
            }
            if cuts.push((first, count, bytes)).is_err() {
                outcome = outcome.and(Err(CutError::TooMany));
            }
            (count, bytes) = (0, 0);
        }
        if count == 0 {
            first = i;
        }
        count += 1;
        bytes += r.len();
        prev_end = Some(start + r.len());
        i += 1;
    });
    if count > 0 && cuts.push((first, count, bytes)).is_err() {
        outcome = outcome.and(Err(CutError::TooMany));
    }
    outcome.map(|()| cuts)
}

/// Undoes the shares of `shares`, emptying it.
///
/// # Safety
///
/// The device does not access the shared regions: it never saw them, or it
/// is done and they were synced back.
pub(super) unsafe fn undo_shares<H: Hal>(hal: &H, shares: &mut Shares<H::Mapping>) {
    while let Some(dma) = shares.pop() {
        if let Some(mapping) = dma.mapping {
            // SAFETY: the region, direction and mapping are those of one
            // `share`; the caller guarantees the device is done with it.
            unsafe { hal.unshare(dma.region, dma.direction, mapping) };
        }
    }
}

/// The shares of a submission that is still being put together: undone
/// when it is dropped (an error, or unwinding from a panic in the HAL or
/// the buffer), unless they were moved into the request.
struct Pending<'h, H: Hal> {
    hal: &'h H,
    shares: Shares<H::Mapping>,
}

impl<H: Hal> Drop for Pending<'_, H> {
    fn drop(&mut self) {
        // SAFETY: shares still here were never submitted: the device never
        // saw them.
        unsafe { undo_shares(self.hal, &mut self.shares) };
    }
}

impl<H: Hal, B: IoBuffer, C, const N: usize> IoQueuePair<'_, H, B, C, N> {
    /// Submits `cmd` with its data in the pieces of `buf`. On error nothing
    /// reached the device and the buffer comes back.
    pub(super) fn submit_scatter(
        &mut self,
        mut cmd: SubmissionEntry,
        mut buf: B,
        layout: Layout,
        direction: Direction,
        context: C,
        path: Path,
    ) -> core::result::Result<Cid, SubmitError<B, C>> {
        let len = layout.data;
        let check = self.usable(path).and_then(|()| self.check_pieces(&mut buf, layout, direction));
        if let Err(error) = check {
            return Err(SubmitError { error, buffer: buf, context });
        }
        let Some(index) = self.free_slot() else {
            return Err(SubmitError { error: Error::QueueFull, buffer: buf, context });
        };
        let hal = &self.ctrlr.hal;
        let mut sink = SlotPrpSink {
            mem: self.prp.as_ref(),
            first: index * self.prp_pages_per_slot,
            pages: self.prp_pages_per_slot,
        };
        // PRPs where they can describe the pieces; an SGL where they cannot
        // and the controller has SGLs. Where the pieces' addresses already
        // say PRPs cannot, straight to the SGL: no share is made twice (a
        // PRP attempt that fails anyway hands the pieces over again).
        let sgls = self.ctrlr.sgl_support();
        let sgl_pass = |buf: &mut B, sink: &mut SlotPrpSink<'_>, shares: &mut Shares<H::Mapping>| {
            let mut sgl = SglBuilder::new(sink, len, sgls == SglSupport::Dword);
            // SAFETY: the buffer is the request's from here on; its shares
            // are undone by `pending` unless submitted, and then by `finish`.
            unsafe { hand_pieces(hal, buf, len, direction, &mut sgl, shares) }
                .and_then(|()| sgl.finish().map(|p| (p, 1)))
        };
        let mut pending = Pending { hal, shares: Shares::new() };
        let described = if sgls != SglSupport::None && !prp_shaped(&mut buf, len) {
            sgl_pass(&mut buf, &mut sink, &mut pending.shares)
        } else {
            let mut prp = PrpBuilder::new(&mut sink, len);
            // SAFETY: as in `sgl_pass`.
            let handed = unsafe { hand_pieces(hal, &mut buf, len, direction, &mut prp, &mut pending.shares) };
            match handed.map(|()| prp.finish()) {
                Err(e) => Err(e),
                Ok(Ok(p)) => Ok((p, 0)),
                // The HAL's addresses broke PRPs where the pieces' did not.
                Ok(Err(Error::NotPrpShaped(shape)))
                    if shape != PrpShape::TooManyPages && sgls != SglSupport::None =>
                {
                    // SAFETY: never submitted: the device never saw the shares.
                    unsafe { undo_shares(hal, &mut pending.shares) };
                    sgl_pass(&mut buf, &mut sink, &mut pending.shares)
                }
                Ok(Err(e)) => Err(e),
            }
        };
        let (dptr, psdt) = match described {
            Ok(d) => d,
            Err(e) => {
                drop(pending);
                let error = match e {
                    Error::NotPrpShaped(PrpShape::TooManyPages) => {
                        Error::TransferTooLarge { requested: len, max: self.max_transfer }
                    }
                    e => e,
                };
                return Err(SubmitError { error, buffer: buf, context });
            }
        };
        cmd.cdw0.set_psdt(psdt);
        cmd.prp1 = dptr.prp1;
        cmd.prp2 = dptr.prp2;
        // SAFETY: the regions are the request's buffer, which the CPU does
        // not touch until `finish` syncs them back.
        for_each_handed(&mut buf, len, |region| unsafe { hal.sync_for_device(region, direction) });
        let Some(slot) = self.reserve().filter(|s| s.index() == index) else {
            // SAFETY: never submitted: the device never saw the regions.
            for_each_handed(&mut buf, len, |region| unsafe { hal.sync_for_cpu(region, direction) });
            drop(pending);
            return Err(SubmitError { error: Error::QueueFull, buffer: buf, context });
        };
        let shares = core::mem::take(&mut pending.shares);
        let index = slot.index();
        let opcode = cmd.cdw0.opc();
        self.cold[index].set_dma(None, None, Some((direction, len)), shares, false);
        let cid = self.slots.fill(slot, |cid| {
            let mut r = super::request::request(opcode, cid, Some(buf), None, context);
            r.cold_dma = true;
            r
        });
        self.push_or_wait(cmd, cid, path);
        Ok(cid)
    }

    /// The checks of a scatter list: data only (no separate metadata),
    /// within the transfer limit, pieces enough for `layout.data` bytes, each
    /// piece starting on a dword and, for the device to write it, on the
    /// HAL's DMA alignment at both ends.
    pub(super) fn check_pieces(&self, buf: &mut B, layout: Layout, direction: Direction) -> Result {
        if layout.metadata != 0 {
            return Err(Error::InvalidArgument(Argument::ScatterList));
        }
        if layout.data > self.max_transfer {
            return Err(Error::TransferTooLarge { requested: layout.data, max: self.max_transfer });
        }
        let align = H::DMA_ALIGNMENT.max(4);
        let mut total = 0usize;
        for i in 0..buf.pieces() {
            let piece = buf.piece(i);
            let start = piece.cast::<u8>().as_ptr() as usize;
            if !start.is_multiple_of(4) {
                return Err(Error::BufferMisaligned { required: 4 });
            }
            if direction.device_writes()
                && !(start.is_multiple_of(align) && piece.len().is_multiple_of(align))
            {
                return Err(Error::BufferMisaligned { required: align });
            }
            total = total.saturating_add(piece.len());
        }
        if total < layout.data {
            return Err(Error::BufferTooSmall { needed: layout.data, actual: total });
        }
        Ok(())
    }
}
