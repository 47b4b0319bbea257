//! Reads and writes from a scatter list ([`ScatterList`](crate::ScatterList),
//! or any [`IoBuffer`] of several pieces): each piece translated by the HAL
//! (memory it reaches without sharing), described by PRPs where the pieces'
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

/// Hands the first `len` bytes of `buf`'s pieces to `sink` through
/// [`Hal::translate`]; false when the HAL cannot translate a piece.
fn translate_pieces<H: Hal, B: IoBuffer>(
    hal: &H,
    buf: &mut B,
    len: usize,
    sink: &mut dyn SegmentSink,
) -> bool {
    let mut left = len;
    for i in 0..buf.pieces() {
        if left == 0 {
            break;
        }
        let piece = buf.piece(i);
        let take = piece.len().min(left);
        if !hal.translate(NonNull::slice_from_raw_parts(piece.cast::<u8>(), take), sink) {
            return false;
        }
        left -= take;
    }
    true
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
        // and the controller has SGLs.
        let mut prp = PrpBuilder::new(&mut sink, len);
        if !translate_pieces(hal, &mut buf, len, &mut prp) {
            let error = Error::InvalidArgument(Argument::ScatterNotTranslatable);
            return Err(SubmitError { error, buffer: buf, context });
        }
        let described = match (prp.finish(), self.ctrlr.sgl_support()) {
            (Ok(p), _) => Ok((p, 0)),
            (Err(Error::NotPrpShaped(shape)), sgls)
                if shape != PrpShape::TooManyPages && sgls != SglSupport::None =>
            {
                let mut sgl = SglBuilder::new(&mut sink, len, sgls == SglSupport::Dword);
                translate_pieces(hal, &mut buf, len, &mut sgl);
                sgl.finish().map(|p| (p, 1))
            }
            (Err(e), _) => Err(e),
        };
        let (dptr, psdt) = match described {
            Ok(d) => d,
            Err(Error::NotPrpShaped(PrpShape::TooManyPages)) => {
                let error = Error::TransferTooLarge { requested: len, max: self.max_transfer };
                return Err(SubmitError { error, buffer: buf, context });
            }
            Err(error) => return Err(SubmitError { error, buffer: buf, context }),
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
            return Err(SubmitError { error: Error::QueueFull, buffer: buf, context });
        };
        let cid = self.slots.fill(slot, |cid| {
            let mut r = super::request::request(cmd, cid, Some(buf), None, context);
            r.scatter = Some(direction);
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
