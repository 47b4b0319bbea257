//! Reads and writes from a scatter list ([`ScatterList`](crate::ScatterList),
//! or any [`IoBuffer`] of several pieces): each piece translated by the HAL
//! (memory it reaches without sharing) or, where it cannot, shared (up to
//! [`MAX_SHARED_PIECES`] of them), described by PRPs where the pieces'
//! shape allows (every piece but the first starting on a page, every piece
//! but the last ending on one), else by an SGL where the controller has
//! SGLs (Identify Controller SGLS), else refused unsent.

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
use hal_traits::{Direction, Hal, SegmentSink};

/// The most pieces of one scatter list that the HAL may have to share (a
/// `Vec` through an IOMMU, say); each request keeps room for that many
/// mappings. Pieces the HAL translates (its DMA memory, memory registered up
/// front) do not count. More are refused unsent
/// ([`Argument::ScatterTooManyShared`]).
pub const MAX_SHARED_PIECES: usize = 8;

/// A piece of a scatter list that the HAL shared: the first `len` bytes of
/// piece `index`, and what `share` returned for them.
pub(super) struct SharedPiece<M> {
    pub(super) index: u16,
    pub(super) len: u32,
    pub(super) mapping: M,
}

/// The shared pieces of one request.
pub(super) type Shares<M> = heapless::Vec<SharedPiece<M>, MAX_SHARED_PIECES>;

/// The bytes of `buf` that `shared` names.
pub(super) fn shared_region<B: IoBuffer, M>(buf: &mut B, shared: &SharedPiece<M>) -> NonNull<[u8]> {
    NonNull::slice_from_raw_parts(buf.piece(usize::from(shared.index)).cast::<u8>(), shared.len as usize)
}

/// Hands the first `len` bytes of `buf`'s pieces to `sink`: each translated
/// where the HAL can, else shared (recorded in `shares`). On error what was
/// shared here is undone.
///
/// # Safety
///
/// `buf` is the request's buffer, which the CPU does not touch until its
/// shares are undone ([`unshare_pieces`], or `finish`).
unsafe fn hand_pieces<H: Hal, B: IoBuffer>(
    hal: &H,
    buf: &mut B,
    len: usize,
    direction: Direction,
    sink: &mut dyn SegmentSink,
    shares: &mut Shares<H::Mapping>,
) -> Result {
    let mut left = len;
    for i in 0..buf.pieces() {
        if left == 0 {
            break;
        }
        let piece = buf.piece(i);
        let take = piece.len().min(left);
        let region = NonNull::slice_from_raw_parts(piece.cast::<u8>(), take);
        left -= take;
        if hal.translate(region, sink) {
            continue;
        }
        let (Ok(index), Ok(bytes), false) = (u16::try_from(i), u32::try_from(take), shares.is_full()) else {
            // SAFETY: the device never saw these shares.
            unsafe { unshare_pieces(hal, buf, direction, shares) };
            return Err(Error::InvalidArgument(Argument::ScatterTooManyShared));
        };
        // SAFETY: the caller keeps the buffer away from the CPU until the
        // share is undone.
        match unsafe { hal.share(region, direction, sink) } {
            Ok(mapping) => {
                // Room was checked above.
                let _ = shares.push(SharedPiece { index, len: bytes, mapping });
            }
            Err(e) => {
                // SAFETY: as above.
                unsafe { unshare_pieces(hal, buf, direction, shares) };
                return Err(Error::Hal(e));
            }
        }
    }
    Ok(())
}

/// Undoes the shares of `shares` (emptying it), for pieces the device never
/// saw, or is done with and were synced back.
///
/// # Safety
///
/// The device does not access the shared pieces (any more).
pub(super) unsafe fn unshare_pieces<H: Hal, B: IoBuffer>(
    hal: &H,
    buf: &mut B,
    direction: Direction,
    shares: &mut Shares<H::Mapping>,
) {
    while let Some(shared) = shares.pop() {
        let region = shared_region(buf, &shared);
        // SAFETY: the region and mapping are those `share` took and
        // returned; the caller guarantees the device is done with them.
        unsafe { hal.unshare(region, direction, shared.mapping) };
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
        // and the controller has SGLs (the pieces handed over again: what
        // was shared is shared afresh).
        let mut shares = Shares::new();
        let mut prp = PrpBuilder::new(&mut sink, len);
        // SAFETY: the buffer is the request's from here on; its shares are
        // undone below on every error, and by `finish` once submitted.
        let handed = unsafe { hand_pieces(hal, &mut buf, len, direction, &mut prp, &mut shares) };
        let described = match handed.map(|()| prp.finish()) {
            Err(e) => Err(e),
            Ok(finished) => match (finished, self.ctrlr.sgl_support()) {
                (Ok(p), _) => Ok((p, 0)),
                (Err(Error::NotPrpShaped(shape)), sgls)
                    if shape != PrpShape::TooManyPages && sgls != SglSupport::None =>
                {
                    // SAFETY: never submitted: the device never saw the shares.
                    unsafe { unshare_pieces(hal, &mut buf, direction, &mut shares) };
                    let mut sgl = SglBuilder::new(&mut sink, len, sgls == SglSupport::Dword);
                    // SAFETY: as above.
                    unsafe { hand_pieces(hal, &mut buf, len, direction, &mut sgl, &mut shares) }
                        .and_then(|()| sgl.finish().map(|p| (p, 1)))
                }
                (Err(e), _) => Err(e),
            },
        };
        let (dptr, psdt) = match described {
            Ok(d) => d,
            Err(e) => {
                // SAFETY: never submitted: the device never saw the shares.
                unsafe { unshare_pieces(hal, &mut buf, direction, &mut shares) };
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
        for i in 0..buf.pieces() {
            let piece = buf.piece(i);
            // SAFETY: the piece is part of the request's buffer, which the
            // CPU does not touch until `finish` syncs it back.
            unsafe { hal.sync_for_device(piece, direction) };
        }
        let Some(slot) = self.reserve().filter(|s| s.index() == index) else {
            for i in 0..buf.pieces() {
                let piece = buf.piece(i);
                // SAFETY: never submitted: the device never saw the pieces.
                unsafe { hal.sync_for_cpu(piece, direction) };
            }
            // SAFETY: as above.
            unsafe { unshare_pieces(hal, &mut buf, direction, &mut shares) };
            return Err(SubmitError { error: Error::QueueFull, buffer: buf, context });
        };
        let cid = self.slots.fill(slot, |cid| {
            let mut r = super::request::request(cmd, cid, Some(buf), None, context);
            r.scatter = Some(direction);
            r.shared = core::mem::ManuallyDrop::new(shares);
            r
        });
        self.push_or_wait(cmd, cid, path);
        Ok(cid)
    }

    /// The checks of a scatter list: data only (no separate metadata),
    /// within the transfer limit, pieces enough for `layout.data` bytes, each
    /// piece starting on a dword and, for the device to write it, on the
    /// HAL's DMA alignment at both ends.
    fn check_pieces(&self, buf: &mut B, layout: Layout, direction: Direction) -> Result {
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
