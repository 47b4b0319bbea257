//! One request in flight: what it owns, and how its buffer goes back to the
//! CPU (or is leaked) once the device is done (or cannot be proven done).

use super::scatter::{for_each_handed, undo_shares, Shares};
use crate::buffer::IoBuffer;
use crate::error::Error;
use crate::slots::Cid;
use crate::spec::command::SubmissionEntry;
use crate::spec::status::{path, Status, StatusCodeType};
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use hal_traits::{Direction, Hal};

pub(crate) use crate::quarantine::DmaUse;

/// The hot part's record of a buffer handed to the device without a share
/// (memory the HAL translated, a registered buffer, the controller's own DMA
/// memory): synced back for the CPU when the device is done. A buffer the
/// HAL shared has its record, mapping and all, in the slot's cold part
/// instead ([`Cold::dma`]), so that a HAL's mapping type does not grow
/// every slot.
#[derive(Clone, Copy)]
pub(super) struct Synced {
    pub(super) region: NonNull<[u8]>,
    pub(super) direction: Direction,
}

// SAFETY: as for `DmaUse`: the record names the request's own buffer, which
// moves with the request.
unsafe impl Send for Synced {}

/// Where a request's DMA record goes: the hot part when there is no mapping
/// to undo, else the cold part (see [`Synced`]).
#[inline(always)]
pub(super) fn place<M>(dma: DmaUse<M>) -> (Option<Synced>, Option<DmaUse<M>>) {
    match dma.mapping {
        None => (Some(Synced { region: dma.region, direction: dma.direction }), None),
        Some(_) => (None, Some(dma)),
    }
}

/// One request in flight: the slot's hot part, which submission writes and
/// completion reads (a few dozen bytes beside the caller's buffer and
/// context). What only retries, split requests, scatter lists, shared
/// buffers and recovery need is in the slot's [`Cold`] part, which the
/// common path does not touch.
///
/// The buffer is in `ManuallyDrop` (and a shared buffer's record, in the
/// cold part): they leave the request only through [`finish`] (device done)
/// or a deliberate leak, never by unwinding or an implicit drop, because the
/// device may still be writing them. The hot record ([`Synced`]) has nothing
/// to undo or drop.
pub(super) struct Request<B, C> {
    pub(super) buffer: Option<ManuallyDrop<B>>,
    /// The buffer's record when the HAL shared nothing (else it is
    /// [`Cold::dma`]).
    pub(super) dma: Option<Synced>,
    /// The caller's request (with its context), or a child of a split one.
    pub(super) role: Role<C>,
    /// When it times out, in HAL ticks; [`NOT_STAMPED`] until the next timeout
    /// scan after its submission stamps it.
    pub(super) deadline: u64,
    /// The CID the submission returned to the caller.
    pub(super) given: Cid,
    /// The command's opcode (for timeout reports).
    pub(super) opcode: u8,
    /// Times it was submitted again after a retryable error.
    pub(super) retries: u8,
    /// It timed out (whatever happens next, its owner hears `Timeout`).
    pub(super) timed_out: bool,
    /// An Abort for it was accepted; a second deadline escalates to a reset.
    pub(super) aborted: bool,
    /// The driver sent an Abort for it (after its timeout); its result comes
    /// in on a later poll.
    pub(super) abort_sent: bool,
    /// Waiting for room in the submission queue: never on the device.
    pub(super) queued: bool,
    /// A retry waiting out a Command Retry Delay (until [`Cold::retry_at`]).
    pub(super) parked: bool,
    /// Ended by the driver (reset, removal), with [`Cold::done`]: delivered
    /// by the next `poll`.
    pub(super) ended: bool,
    /// The slot's [`Cold`] part holds DMA records of this request (a scatter
    /// list's pieces, a split child's metadata part) for [`finish`].
    pub(super) cold_dma: bool,
}

/// The rest of a request slot, in an array beside the slots: written only
/// by the paths that need it, each field meaningful only as the hot part
/// says.
pub(super) struct Cold<M> {
    /// The command as submitted, kept for a retry (when retries are on), a
    /// request waiting for room in the submission queue, and a split
    /// request's child until it goes out.
    pub(super) cmd: SubmissionEntry,
    /// The DMA record of a buffer the HAL shared, with the mapping to undo
    /// ([`Request::cold_dma`]; see [`Synced`]).
    pub(super) dma: Option<ManuallyDrop<DmaUse<M>>>,
    /// Why the driver ended the request ([`Request::ended`]).
    pub(super) done: Option<Error>,
    /// A parked retry goes out at the first `poll` at or after this tick
    /// ([`Request::parked`]).
    pub(super) retry_at: u64,
    /// A split request's parent: the first failure among its children.
    pub(super) failure: Option<Failure>,
    /// A split request's child on a namespace with separate metadata: the
    /// DMA record of its part of the metadata ([`Request::cold_dma`]).
    pub(super) meta_dma: Option<ManuallyDrop<DmaUse<M>>>,
    /// A scatter list handed over piece by piece, carrying this many bytes:
    /// its pieces go back to the CPU in this direction
    /// ([`Request::cold_dma`]).
    pub(super) scatter: Option<(hal_traits::Direction, usize)>,
    /// The pieces of that list the HAL shared (it translated the others),
    /// undone by [`finish`]; leaked with the buffer. For a child of a split
    /// scatter list, every piece of its part (translated ones without a
    /// mapping), which `finish` also syncs back ([`sync_shared`]).
    pub(super) shared: ManuallyDrop<Shares<M>>,
    /// `shared` holds a split scatter list's part, which has no buffer of
    /// its own to sync back through: `finish` syncs each region.
    pub(super) sync_shared: bool,
}

impl<M> Cold<M> {
    /// Sets the DMA records of a new request in this slot, all five at
    /// once: whatever an earlier request left there (its finish cut short
    /// by a panic in the HAL) is forgotten, never undone (its buffer was
    /// leaked with it) and never taken for this request's.
    pub(super) fn set_dma(
        &mut self,
        dma: Option<DmaUse<M>>,
        meta_dma: Option<DmaUse<M>>,
        scatter: Option<(hal_traits::Direction, usize)>,
        shared: Shares<M>,
        sync_shared: bool,
    ) {
        // A `ManuallyDrop` record is overwritten without being dropped.
        self.dma = dma.map(ManuallyDrop::new);
        self.meta_dma = meta_dma.map(ManuallyDrop::new);
        self.scatter = scatter;
        core::mem::forget(core::mem::replace(&mut *self.shared, shared));
        self.sync_shared = sync_shared;
    }

    /// An empty cold part (no records).
    pub(super) fn new() -> Self {
        Cold {
            cmd: SubmissionEntry::default(),
            done: None,
            retry_at: 0,
            failure: None,
            dma: None,
            meta_dma: None,
            scatter: None,
            shared: ManuallyDrop::new(Shares::new()),
            sync_shared: false,
        }
    }
}

/// Whose a request is. A request too large for one command (above the
/// transfer limit or 65536 blocks, or across the namespace's optimal I/O
/// boundary) is split: its parent holds the caller's buffer and context and
/// is never on the wire; each child is one command over its part of the
/// buffer, owning only the DMA record of that part. The parent completes to
/// the caller once, when its last child has, with the first failure.
pub(super) enum Role<C> {
    /// The caller's request.
    Own {
        /// The caller's context.
        context: C,
        /// Children still out (0: not split, or every child done); the
        /// first failure among those that completed is in [`Cold::failure`].
        children: u32,
    },
    /// A child of the request in slot `parent`.
    Child {
        /// The parent's slot index.
        parent: u16,
    },
    /// Taken: the completion moved the context out, and the slot is being
    /// freed.
    Taken,
}

impl<C> Role<C> {
    /// A parent: split, and waiting for children (never on the wire, so a
    /// completion naming it is bogus).
    pub(super) fn is_parent(&self) -> bool {
        matches!(self, Role::Own { children, .. } if *children > 0)
    }

    /// The parent's slot index, for a child.
    pub(super) fn parent(&self) -> Option<u16> {
        match self {
            Role::Child { parent } => Some(*parent),
            Role::Own { .. } | Role::Taken => None,
        }
    }
}

/// How a child of a split request failed: the status it completed with,
/// and the driver's error, if the driver ended it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Failure {
    pub(super) status: Status,
    pub(super) error: Option<Error>,
}

/// A deadline not yet set: submissions do not read the clock.
pub(super) const NOT_STAMPED: u64 = 0;

/// The deadline of a retry that waits out a Command Retry Delay (it is not
/// on the device, so it cannot time out).
pub(super) const PARKED: u64 = u64::MAX;

/// The status given to requests that the driver ends itself.
pub(super) const HOST_ABORTED: Status =
    Status::of(StatusCodeType::PATH_RELATED, path::COMMAND_ABORTED_BY_HOST);

/// Gives the device's access to `req`'s buffer back to the CPU (sync, then
/// unshare) and returns the buffer. `cold` is the slot's cold part (read
/// only when `req.cold_dma` says it holds records).
///
/// # Safety
///
/// The device no longer accesses the buffer: its command completed, or its
/// queue was deleted, or the controller was disabled since it was submitted.
#[inline]
pub(super) unsafe fn finish<H: Hal, B: IoBuffer, C>(
    hal: &H,
    req: &mut Request<B, C>,
    cold: &mut Cold<H::Mapping>,
) -> Option<B> {
    // SAFETY: forwarded from the caller.
    unsafe { finish_handed(hal, hand_back(req), cold) }
}

/// What of a request goes back to its owner once the device is done: its
/// buffer and DMA record, taken out of the slot so that the slot can be
/// freed before the HAL is called (a panic in the HAL then leaks them, and
/// leaves no request stuck in its slot).
pub(super) struct Handed<B> {
    buffer: Option<ManuallyDrop<B>>,
    dma: Option<Synced>,
    /// The slot's cold part holds records of this request.
    cold_dma: bool,
}

/// Takes the buffer and the DMA records out of `req` (see [`Handed`]).
#[inline]
pub(super) fn hand_back<B, C>(req: &mut Request<B, C>) -> Handed<B> {
    Handed { buffer: req.buffer.take(), dma: req.dma.take(), cold_dma: core::mem::take(&mut req.cold_dma) }
}

/// [`finish`] for what [`hand_back`] took.
///
/// # Safety
///
/// As for [`finish`].
#[inline]
pub(super) unsafe fn finish_handed<H: Hal, B: IoBuffer>(
    hal: &H,
    handed: Handed<B>,
    cold: &mut Cold<H::Mapping>,
) -> Option<B> {
    let Handed { mut buffer, dma, cold_dma } = handed;
    // SAFETY: forwarded from the caller.
    unsafe { finish_records(hal, dma, cold_dma, buffer.as_deref_mut(), cold) };
    buffer.map(ManuallyDrop::into_inner)
}

/// [`finish_handed`] for the DMA records alone, the buffer left where the
/// caller keeps it (so that it moves once, into the completion).
///
/// # Safety
///
/// As for [`finish`]; `dma` and `cold_dma` were taken out of the request
/// whose buffer `buffer` is.
#[inline(always)]
pub(super) unsafe fn finish_records<H: Hal, B: IoBuffer>(
    hal: &H,
    dma: Option<Synced>,
    cold_dma: bool,
    buffer: Option<&mut B>,
    cold: &mut Cold<H::Mapping>,
) {
    if let Some(dma) = dma {
        // SAFETY: the caller guarantees the device is done; this region was
        // synced for the device in this direction at submission.
        unsafe { hal.sync_for_cpu(dma.region, dma.direction) };
    }
    if cold_dma {
        // SAFETY: forwarded from the caller.
        unsafe { finish_cold(hal, buffer, cold) };
    }
}

/// Syncs one DMA record back for the CPU and undoes its share.
///
/// # Safety
///
/// As for [`finish`]; `dma` is a record of the request being finished,
/// taken out of it (so undone once).
#[inline]
unsafe fn give_back<H: Hal>(hal: &H, dma: DmaUse<H::Mapping>) {
    // SAFETY: the caller guarantees the device is done; `sync_for_device`
    // was called with the same region and direction at submission, and the
    // mapping is the one `share` returned for them, undone once here.
    unsafe {
        hal.sync_for_cpu(dma.region, dma.direction);
        if let Some(mapping) = dma.mapping {
            hal.unshare(dma.region, dma.direction, mapping);
        }
    }
}

/// [`finish`] for the records in the slot's cold part: a split child's
/// metadata part, a scatter list's pieces.
///
/// # Safety
///
/// As for [`finish`].
#[cold]
unsafe fn finish_cold<H: Hal, B: IoBuffer>(hal: &H, buffer: Option<&mut B>, cold: &mut Cold<H::Mapping>) {
    if let Some(dma) = cold.dma.take() {
        // SAFETY: forwarded from the caller.
        unsafe { give_back(hal, ManuallyDrop::into_inner(dma)) };
    }
    if let Some(dma) = cold.meta_dma.take() {
        // SAFETY: forwarded from the caller.
        unsafe { give_back(hal, ManuallyDrop::into_inner(dma)) };
    }
    if let (Some((direction, len)), Some(buffer)) = (cold.scatter.take(), buffer) {
        // SAFETY: as above; each region was synced for the device with the
        // same direction at submission, and they are the same on every call
        // (`IoBuffer`'s contract).
        for_each_handed(buffer, len, |region| unsafe { hal.sync_for_cpu(region, direction) });
    }
    if core::mem::take(&mut cold.sync_shared) {
        for dma in cold.shared.iter() {
            // SAFETY: as above; each region was synced for the device with
            // this direction when the child was built.
            unsafe { hal.sync_for_cpu(dma.region, dma.direction) };
        }
    }
    // SAFETY: as above; synced back first (kept apart from the syncs, so
    // that the shares go even if a sync panicked on an earlier call).
    unsafe { undo_shares(hal, &mut cold.shared) };
}

/// Leaks `req`'s buffer and mappings: the device may still write them, and
/// nothing can prove otherwise (a removed device).
pub(super) fn leak<M, B, C>(req: &mut Request<B, C>, cold: &mut Cold<M>) {
    // Dropping a `ManuallyDrop` never drops its content.
    let _leaked = (req.buffer.take(), req.dma.take());
    if core::mem::take(&mut req.cold_dma) {
        let _leaked = (
            cold.dma.take(),
            cold.meta_dma.take(),
            cold.scatter.take(),
            core::mem::take(&mut cold.sync_shared),
        );
        // The share records go with the buffer: forgotten (never undone,
        // their mappings never dropped).
        core::mem::forget(core::mem::take(&mut *cold.shared));
    }
}

/// A new request, submitted under `cid` (which its caller is given).
#[inline]
pub(super) fn request<B, C>(
    opcode: u8,
    cid: Cid,
    buffer: Option<B>,
    dma: Option<Synced>,
    context: C,
) -> Request<B, C> {
    with_role(opcode, cid, buffer, dma, Role::Own { context, children: 0 })
}

/// A new request of any role.
#[inline]
pub(super) fn with_role<B, C>(
    opcode: u8,
    cid: Cid,
    buffer: Option<B>,
    dma: Option<Synced>,
    role: Role<C>,
) -> Request<B, C> {
    Request {
        buffer: buffer.map(ManuallyDrop::new),
        dma,
        role,
        deadline: NOT_STAMPED,
        given: cid,
        opcode,
        retries: 0,
        timed_out: false,
        aborted: false,
        abort_sent: false,
        queued: false,
        parked: false,
        ended: false,
        cold_dma: false,
    }
}
