//! Buffers that a request owns while the device may touch them.
//!
//! A request takes its buffer by value and hands it back only with the
//! completion, so safe code cannot read, free or reuse memory that the device
//! may still write.

use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use hal_traits::{DmaRegion, Hal, HalError, PAGE_SIZE};

/// A buffer a request can own while the device reads or writes it.
///
/// The driver asks for the bytes at submission, through
/// [`as_dma_slice`](IoBuffer::as_dma_slice) (or, for a scatter list,
/// [`piece`](IoBuffer::piece) by piece), and hands them to the device
/// through the [`Hal`]: [`Hal::translate`] for memory the HAL can already
/// reach (its own DMA memory, as a [`DmaBuffer`], or memory registered ahead
/// of time), [`Hal::share`] for any other.
///
/// # Safety
///
/// Implementations guarantee, for as long as the value lives and is not
/// mutated through its own API (a request owns it, so it is not):
/// - [`as_dma_slice`](IoBuffer::as_dma_slice) returns the same pointer and
///   length on every call, and those bytes are valid for reads and writes
///   and reachable by no other path than this value;
/// - [`pieces`](IoBuffer::pieces) returns the same count on every call, and
///   [`piece`](IoBuffer::piece) the same pointer and length for each index;
///   every piece is valid and exclusive as the bytes above are, and no two
///   overlap (the driver syncs each for the device at submission and back
///   for the CPU when the device is done, asking for them again);
/// - the bytes do not move when the value moves, and moving the value does
///   not assert uniqueness over them. Rust's aliasing models treat a moved
///   `Box` or `&mut` as a fresh unique pointer, which invalidates pointers
///   taken earlier (the one the device was given), so `Box<[u8]>` and
///   `&'static mut [u8]` do not qualify; `Vec<u8>` (its heap pointer is a
///   plain raw pointer, not retagged on a move) and [`DmaBuffer`] do.
///
/// The driver never takes a buffer's word for where the device reaches it:
/// only the controller's own HAL answers that, through `translate` or
/// `share`. (An earlier version trusted a `DmaBuffer` whose HAL had the same
/// address as the controller's; a zero-sized HAL of another device can have
/// that address.)
pub unsafe trait IoBuffer {
    /// The bytes the device may read or write: pointer and length from one
    /// place. For a scatter list ([`pieces`](IoBuffer::pieces) above 1),
    /// its first piece.
    fn as_dma_slice(&mut self) -> NonNull<[u8]>;

    /// How many pieces the buffer is made of: 1 (the default) for
    /// contiguous bytes, more for a scatter list such as [`ScatterList`].
    /// The same on every call, as are the pieces.
    fn pieces(&mut self) -> usize {
        1
    }

    /// Piece `index` (below [`pieces`](IoBuffer::pieces)), under the same
    /// guarantees as [`as_dma_slice`](IoBuffer::as_dma_slice); pieces do
    /// not overlap. The default is the one slice for index 0 and nothing
    /// (an empty slice) for any other.
    fn piece(&mut self, index: usize) -> NonNull<[u8]> {
        if index == 0 {
            self.as_dma_slice()
        } else {
            NonNull::slice_from_raw_parts(NonNull::dangling(), 0)
        }
    }

    /// The device address a controller's HAL gave for these bytes once:
    /// only [`Registered`] has one (its parameter type cannot be named
    /// outside this crate, so no other implementation can claim one).
    #[doc(hidden)]
    fn registration(&self, _: sealed::Token) -> Option<sealed::Registration> {
        None
    }
}

/// What only this crate can name: the parameter that keeps
/// [`IoBuffer::registration`] from being overridden elsewhere, and the
/// record it returns.
pub(crate) mod sealed {
    use core::ptr::NonNull;

    /// Passed to [`IoBuffer::registration`](super::IoBuffer::registration):
    /// outside this crate the method cannot be written, so it keeps its
    /// default.
    #[derive(Clone, Copy, Debug)]
    pub struct Token;

    /// Where a [`Registered`](super::Registered) buffer's bytes are and
    /// where its controller's HAL said the device reaches them.
    #[derive(Clone, Copy, Debug)]
    pub struct Registration {
        /// The bytes (as `as_dma_slice` gave them at registration).
        pub(crate) region: NonNull<[u8]>,
        /// Where the device reaches the first of them: the bytes are one
        /// run in device space.
        pub(crate) daddr: u64,
        /// `Controller::id` of the controller whose HAL translated them.
        pub(crate) controller: u32,
    }
}

/// A buffer whose device address a controller's HAL translated once, at
/// [`Controller::register`](crate::Controller::register), instead of at
/// every submission: the fast path for memory the HAL reaches ahead of
/// time (a [`DmaBuffer`], a VFIO back-end's hugepages), as SPDK's perf and
/// io_uring's fixed buffers use it.
///
/// A queue pair of that controller builds the PRPs of a request on it from
/// the kept address (no call into the HAL but the cache maintenance of
/// `sync_for_device` and `sync_for_cpu`); any other controller's queue pair
/// ignores the registration and hands the bytes over as it would the
/// bare buffer. The bytes are reachable through `Deref` and `DerefMut`
/// (the buffer itself only through [`into_inner`](Registered::into_inner),
/// so nothing can move or free them while they are registered). The kept
/// address is good while the controller lives: its HAL cannot withdraw a
/// translation while it lives ([`Hal::translate`]'s contract), and
/// controller identities are never reused, so a registration that outlives
/// its controller matches no other.
pub struct Registered<B> {
    buffer: B,
    registration: sealed::Registration,
}

// SAFETY: the registration describes the buffer's own bytes, which move
// with it; it gives no access to anything else.
unsafe impl<B: Send> Send for Registered<B> {}
// SAFETY: shared access reaches the bytes only through `&self` (`Deref`),
// as `&B` would.
unsafe impl<B: Sync> Sync for Registered<B> {}

impl<B: IoBuffer> Registered<B> {
    /// Registers `buffer` with the controller whose HAL (`hal`, with id
    /// `controller`) reaches its bytes ahead of time, as one run in device
    /// space. For `Controller::register`.
    pub(crate) fn new<H: Hal>(hal: &H, controller: u32, mut buffer: B) -> Result<Self, (crate::Error, B)> {
        use crate::error::{Argument, Error};
        let refused = Error::InvalidArgument(Argument::NotRegistrable);
        if buffer.pieces() != 1 {
            return Err((refused, buffer));
        }
        let region = buffer.as_dma_slice();
        if region.is_empty() {
            return Err((refused, buffer));
        }
        let mut run = OneRun { len: region.len(), addr: None, broken: false };
        if !hal.translate(region, &mut run) || run.broken {
            return Err((refused, buffer));
        }
        match run.addr {
            Some(daddr) => {
                Ok(Registered { buffer, registration: sealed::Registration { region, daddr, controller } })
            }
            None => Err((refused, buffer)),
        }
    }

    /// Where the device reaches the first byte, as the controller's HAL
    /// translated it.
    pub fn device_address(&self) -> hal_traits::DeviceAddr {
        hal_traits::DeviceAddr(self.registration.daddr)
    }

    /// The buffer, unregistered.
    pub fn into_inner(self) -> B {
        self.buffer
    }
}

impl<B> Deref for Registered<B> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let region = self.registration.region;
        // SAFETY: `region` is what the buffer's `as_dma_slice` returned:
        // valid for reads and writes, reachable only through the buffer, and
        // the same as long as the buffer is not mutated through its own API,
        // which this wrapper never does (it hands the buffer out only by
        // value). A request that owns the value has it moved in, so no
        // reference made here lives while the device may write the bytes.
        unsafe { core::slice::from_raw_parts(region.cast::<u8>().as_ptr(), region.len()) }
    }
}

impl<B> DerefMut for Registered<B> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let region = self.registration.region;
        // SAFETY: as in `deref`; `&mut self` makes the access exclusive.
        unsafe { core::slice::from_raw_parts_mut(region.cast::<u8>().as_ptr(), region.len()) }
    }
}

// SAFETY: the bytes are the wrapped buffer's, as its `as_dma_slice`
// returned them at registration; the wrapper never mutates the buffer
// through its API (it is only moved, then handed back by value), so they
// stay valid, exclusive and in place (the wrapped buffer's contract). The
// registration is the controller's HAL's own answer for these bytes.
unsafe impl<B: IoBuffer> IoBuffer for Registered<B> {
    fn as_dma_slice(&mut self) -> NonNull<[u8]> {
        self.registration.region
    }

    fn registration(&self, _: sealed::Token) -> Option<sealed::Registration> {
        Some(self.registration)
    }
}

/// The [`SegmentSink`](hal_traits::SegmentSink) of a registration: one run
/// of `len` bytes in device space, or `broken`.
struct OneRun {
    len: usize,
    addr: Option<u64>,
    broken: bool,
}

impl hal_traits::SegmentSink for OneRun {
    fn push(&mut self, segment: hal_traits::DeviceSegment) {
        match self.addr {
            None if segment.len == self.len => self.addr = Some(segment.addr.0),
            _ => self.broken = true,
        }
    }
}

/// A scatter list: up to `S` buffers that one read or write fills or
/// drains in order, as the seed's `readv`/`writev` do with their
/// scatter-gather callbacks. Each piece reaches the device the way a single
/// buffer does: translated where the HAL reaches it already
/// ([`Hal::translate`]: its own DMA memory, as a [`DmaBuffer`], or memory
/// registered up front), else shared ([`Hal::share`]), which up to
/// [`MAX_SHARED_PIECES`](crate::MAX_SHARED_PIECES) pieces of one list may
/// need. The driver describes the pieces with PRPs where their shape allows,
/// else with an SGL where the controller has them, else as several
/// commands, one per run of pieces PRPs can describe, where each run is
/// whole blocks (one request to the caller all the same).
pub struct ScatterList<T, const S: usize> {
    pieces: heapless::Vec<T, S>,
}

impl<T: IoBuffer, const S: usize> ScatterList<T, S> {
    /// An empty list.
    pub const fn new() -> Self {
        ScatterList { pieces: heapless::Vec::new() }
    }

    /// Appends a piece; hands it back when the list is full, or when the
    /// piece is itself a scatter list (lists do not nest).
    pub fn push(&mut self, mut piece: T) -> Result<(), T> {
        if piece.pieces() != 1 {
            return Err(piece);
        }
        self.pieces.push(piece)
    }

    /// The pieces.
    pub fn as_slice(&self) -> &[T] {
        &self.pieces
    }

    /// The pieces, to read or refill between requests.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.pieces
    }

    /// The pieces, taken back.
    pub fn into_pieces(self) -> heapless::Vec<T, S> {
        self.pieces
    }

    /// The bytes of every piece together.
    pub fn len(&mut self) -> usize {
        (0..self.pieces.len()).map(|i| self.piece(i).len()).sum()
    }

    /// True without pieces.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }
}

impl<T: IoBuffer, const S: usize> Default for ScatterList<T, S> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: each piece is an IoBuffer, whose bytes stay put and exclusive
// while the list (which owns it) is not mutated through its API; the list
// only moves the pieces' values, which their own contract allows. Pieces
// are distinct values owning distinct bytes, so they do not overlap.
unsafe impl<T: IoBuffer, const S: usize> IoBuffer for ScatterList<T, S> {
    fn as_dma_slice(&mut self) -> NonNull<[u8]> {
        match self.pieces.first_mut() {
            Some(p) => p.as_dma_slice(),
            None => NonNull::slice_from_raw_parts(NonNull::dangling(), 0),
        }
    }

    fn pieces(&mut self) -> usize {
        self.pieces.len()
    }

    fn piece(&mut self, index: usize) -> NonNull<[u8]> {
        match self.pieces.get_mut(index) {
            Some(p) => p.as_dma_slice(),
            None => NonNull::slice_from_raw_parts(NonNull::dangling(), 0),
        }
    }
}

#[cfg(feature = "alloc")]
extern crate alloc;

// SAFETY: a Vec's heap allocation does not move when the Vec does, and only
// `&mut Vec` could grow or shrink it, which the request does not hand out.
// `as_mut_ptr` does not create a reference to the elements (its documented
// guarantee), so no uniqueness is asserted over the bytes, and the Vec's own
// pointer is not retagged when the Vec is moved (it is a raw pointer inside a
// struct that is not a scalar pair). Checked under Miri with Stacked and Tree
// Borrows (`cargo xtask miri`).
#[cfg(feature = "alloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
unsafe impl IoBuffer for alloc::vec::Vec<u8> {
    fn as_dma_slice(&mut self) -> NonNull<[u8]> {
        let ptr = NonNull::new(self.as_mut_ptr()).unwrap_or(NonNull::dangling());
        NonNull::slice_from_raw_parts(ptr, self.len())
    }
}

/// A buffer in DMA memory from the HAL, freed when dropped.
///
/// Its length can be narrowed to a window (`set_window`) to transfer from an
/// offset inside the first page, for instance. The controller's HAL
/// translates it ([`Hal::translate`]) rather than sharing it: it is memory the
/// device can already reach, so I/O to it costs no mapping.
pub struct DmaBuffer<'h, H: Hal> {
    hal: &'h H,
    region: DmaRegion,
    offset: usize,
    len: usize,
}

// SAFETY: the buffer owns its pages exclusively; moving it to another thread
// moves that ownership. It frees them through `&H`, which is sound from
// another thread when `H: Sync`.
unsafe impl<H: Hal + Sync> Send for DmaBuffer<'_, H> {}

impl<'h, H: Hal> DmaBuffer<'h, H> {
    /// Allocates a zeroed buffer of at least `len` bytes (whole pages).
    pub fn new(hal: &'h H, len: usize) -> Result<Self, HalError> {
        let pages = len.div_ceil(PAGE_SIZE).max(1);
        let region = hal.dma_alloc(pages)?;
        Ok(DmaBuffer { hal, region, offset: 0, len })
    }

    /// Bytes allocated (whole pages).
    pub fn capacity(&self) -> usize {
        self.region.len()
    }

    /// Makes the buffer the `len` bytes starting `offset` bytes into the
    /// allocation. Returns false (and changes nothing) if that does not fit.
    pub fn set_window(&mut self, offset: usize, len: usize) -> bool {
        match offset.checked_add(len) {
            Some(end) if end <= self.capacity() => {
                self.offset = offset;
                self.len = len;
                true
            }
            _ => false,
        }
    }

    fn ptr(&self) -> NonNull<u8> {
        // SAFETY: offset <= capacity (kept by `new` and `set_window`).
        unsafe { self.region.vaddr.add(self.offset) }
    }
}

impl<H: Hal> Deref for DmaBuffer<'_, H> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: offset + len lies inside the allocation, which lives as long as
        // `self`; a request that lends the buffer to the device owns `self`, so
        // no reference exists while the device writes.
        unsafe { core::slice::from_raw_parts(self.ptr().as_ptr(), self.len) }
    }
}

impl<H: Hal> DerefMut for DmaBuffer<'_, H> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { core::slice::from_raw_parts_mut(self.ptr().as_ptr(), self.len) }
    }
}

// SAFETY: the allocation does not move with the value, is reached only
// through a raw pointer (no unique reference is asserted on a move), and is
// exclusively owned by the value until `drop`; pointer and length come from
// the same fields on every call.
unsafe impl<H: Hal> IoBuffer for DmaBuffer<'_, H> {
    fn as_dma_slice(&mut self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr(), self.len)
    }
}

impl<H: Hal> Drop for DmaBuffer<'_, H> {
    fn drop(&mut self) {
        // SAFETY: the region came from this HAL and is freed once. While a
        // request owns the buffer the device may use it, but then this value is
        // inside the request slot and is not dropped until the device is done
        // (or is leaked with it).
        unsafe { self.hal.dma_free(self.region) }
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// The pointer the device is given stays usable after the buffer moves,
    /// and the owner's own accesses stay valid afterwards (what Miri with
    /// Tree Borrows and -Zmiri-unique-is-unique checks).
    #[test]
    fn vec_pointer_survives_moves() {
        let mut v: Vec<u8> = (0..64).collect();
        let dma = v.as_dma_slice();
        assert_eq!(dma, v.as_dma_slice(), "same slice on every call");
        // As in the driver: by value through a function into a slot, and
        // out again.
        fn own<T>(t: T) -> Option<T> {
            Some(t)
        }
        let mut slot: [Option<Vec<u8>>; 2] = [None, None];
        slot[1] = own(v);
        let moved = slot[1].take();
        // The "device" writes through the pointer taken before the moves.
        // SAFETY: the Vec is alive (in `moved`) and nothing else accesses it.
        unsafe { dma.cast::<u8>().add(3).write(0xee) };
        let v = moved.unwrap();
        assert_eq!(v[3], 0xee);
        assert_eq!(v[4], 4);
    }

    #[test]
    fn empty_vec_gives_an_empty_slice() {
        let mut v: Vec<u8> = Vec::new();
        assert_eq!(v.as_dma_slice().len(), 0);
    }
}

/// Whether `len` bytes of `slice` may go to the device in `direction`: not
/// empty, within the slice and `max`, dword-aligned, and (for the device to
/// write them) aligned to `align` at both ends, because cache maintenance on
/// a non-coherent system works on whole lines and the device must not write
/// a line the CPU shares.
pub(crate) fn check_transfer(
    slice: NonNull<[u8]>,
    len: usize,
    max: usize,
    direction: hal_traits::Direction,
    align: usize,
) -> crate::error::Result {
    use crate::error::{Argument, Error};
    let start = slice.cast::<u8>().as_ptr() as usize;
    if len == 0 {
        Err(Error::InvalidArgument(Argument::ZeroLength))
    } else if len > slice.len() {
        Err(Error::BufferTooSmall { needed: len, actual: slice.len() })
    } else if len > max {
        Err(Error::TransferTooLarge { requested: len, max })
    } else if !start.is_multiple_of(4) {
        Err(Error::BufferMisaligned { required: 4 })
    } else if direction.device_writes() && !(start.is_multiple_of(align) && len.is_multiple_of(align)) {
        Err(Error::BufferMisaligned { required: align })
    } else {
        Ok(())
    }
}

/// Hands the bytes at `region` to the device for a transfer in `direction`:
/// translated, when the HAL can already reach them (its own DMA memory,
/// memory registered up front), else shared. The first `region.len() -
/// metadata` bytes are the data: their PRPs are built, list pages in
/// `sink`. The last `metadata` bytes (none for most commands) are the
/// separate metadata, which MPTR names: they must come back from the HAL as
/// one contiguous dword-aligned run. Returns the PRPs, MPTR (0 without
/// metadata) and the share's mapping (`None` when translated). On error
/// nothing was handed over: a failed share, data the PRPs cannot describe
/// (above `max` bytes of pages: [`Error::TransferTooLarge`]), metadata in
/// pieces ([`Argument::MetadataNotContiguous`](crate::Argument)).
///
/// # Safety
///
/// `region` is an [`IoBuffer`]'s bytes, owned by a request from now until
/// the device is done with them, when its owner calls `unshare` with the
/// mapping (if any).
pub(crate) unsafe fn hand_to_device<H: Hal, S: crate::prp::PrpListSink>(
    hal: &H,
    region: NonNull<[u8]>,
    direction: hal_traits::Direction,
    sink: &mut S,
    max: usize,
    metadata: usize,
) -> crate::error::Result<(crate::prp::Prp, u64, Option<H::Mapping>)> {
    use crate::error::{Argument, Error, PrpShape};
    if metadata == 0 {
        // SAFETY: forwarded from the caller.
        return unsafe { hand_data_to_device(hal, region, direction, sink, max) };
    }
    let data = region.len().saturating_sub(metadata);
    let mut split =
        Split { prp: crate::prp::PrpBuilder::new(sink, data), data_left: data, meta: MetaRun::default() };
    let mapping = if hal.translate(region, &mut split) {
        None
    } else {
        // SAFETY: forwarded from the caller: the bytes stay in place and
        // exclusive while the request owns them, and `unshare` comes once the
        // device is done, or just below if the PRPs fail.
        Some(unsafe { hal.share(region, direction, &mut split) }.map_err(Error::Hal)?)
    };
    let mptr = split.meta.mptr(metadata);
    let result = match (split.prp.finish(), mptr) {
        (Ok(p), Some(mptr)) => return Ok((p, mptr, mapping)),
        (Err(Error::NotPrpShaped(PrpShape::TooManyPages)), _) => {
            Error::TransferTooLarge { requested: data, max }
        }
        (Err(other), _) => other,
        (Ok(_), None) => Error::InvalidArgument(Argument::MetadataNotContiguous),
    };
    if let Some(m) = mapping {
        // SAFETY: shared just above; the device never saw it (and, with no
        // `sync_for_cpu` before it, a bouncing back-end copies nothing back).
        unsafe { hal.unshare(region, direction, m) };
    }
    Err(result)
}

/// [`hand_to_device`] for data alone (no separate metadata): the HAL's
/// segments go straight to the PRPs ([`PrpRuns`](crate::prp::PrpRuns): one
/// run of up to two pages without the builder).
///
/// # Safety
///
/// As for [`hand_to_device`].
#[inline]
unsafe fn hand_data_to_device<H: Hal, S: crate::prp::PrpListSink>(
    hal: &H,
    region: NonNull<[u8]>,
    direction: hal_traits::Direction,
    sink: &mut S,
    max: usize,
) -> crate::error::Result<(crate::prp::Prp, u64, Option<H::Mapping>)> {
    use crate::error::{Error, PrpShape};
    let data = region.len();
    let mut prp = crate::prp::PrpRuns::new(sink, data);
    let mapping = if hal.translate(region, &mut prp) {
        None
    } else {
        // SAFETY: as in `hand_to_device`.
        Some(unsafe { hal.share(region, direction, &mut prp) }.map_err(Error::Hal)?)
    };
    let error = match prp.finish() {
        Ok(p) => return Ok((p, 0, mapping)),
        Err(Error::NotPrpShaped(PrpShape::TooManyPages)) => Error::TransferTooLarge { requested: data, max },
        Err(other) => other,
    };
    if let Some(m) = mapping {
        // SAFETY: as in `hand_to_device`.
        unsafe { hal.unshare(region, direction, m) };
    }
    Err(error)
}

/// The most runs separate metadata may come back from the HAL in when it
/// goes by an SGL ([`hand_with_metadata_sgl`]).
pub(crate) const METADATA_SGL_RUNS: usize = 32;

/// Like [`hand_to_device`] for a transfer whose separate metadata the HAL
/// hands over in pieces, for a controller that takes an SGL for metadata
/// (SGLS bit 19): the data as an SGL in the slot's list pages, and in the
/// top slots of the last page the metadata's Data Block descriptors and,
/// in the very last slot, the one descriptor MPTR names (a Last Segment
/// naming them, or the Data Block itself for one run). PSDT is then 10b.
/// `dword` as the controller's SGLS asks. Returns DPTR, MPTR and the
/// share's mapping; on error nothing was handed over
/// ([`Argument::MetadataNotContiguous`](crate::Argument) where even this
/// cannot describe it: no list page, more than [`METADATA_SGL_RUNS`] runs
/// or no room for them beside the data's descriptors, a run not
/// dword-granular).
///
/// # Safety
///
/// As for [`hand_to_device`].
pub(crate) unsafe fn hand_with_metadata_sgl<H: Hal, S: crate::prp::PrpListSink>(
    hal: &H,
    region: NonNull<[u8]>,
    direction: hal_traits::Direction,
    sink: &mut S,
    metadata: usize,
    dword: bool,
) -> crate::error::Result<(crate::prp::Prp, u64, Option<H::Mapping>)> {
    use crate::error::{Argument, Error};
    use crate::spec::command::SglDescriptor;
    let not_contiguous = Error::InvalidArgument(Argument::MetadataNotContiguous);
    let pages = sink.pages();
    if pages == 0 || metadata == 0 {
        return Err(not_contiguous);
    }
    let data = region.len().saturating_sub(metadata);
    let mut route = SglRoute {
        data: crate::sgl::SglBuilder::new(&mut *sink, data, dword),
        data_left: data,
        meta: heapless::Vec::new(),
        overflow: false,
    };
    let mapping = if hal.translate(region, &mut route) {
        None
    } else {
        // SAFETY: forwarded from the caller, as in `hand_to_device`.
        Some(unsafe { hal.share(region, direction, &mut route) }.map_err(Error::Hal)?)
    };
    let SglRoute { data: builder, meta, overflow, .. } = route;
    let (described, written) = builder.finish_counted();
    // Descriptor slots of a list page, and of the last page those the data
    // took (none where it needed no list, or ended in an earlier page).
    let per_page = PAGE_SIZE / SglDescriptor::SIZE;
    let tail = pages - 1;
    let data_in_tail = if written > 1 && written.div_ceil(per_page - 1) == pages {
        written - tail * (per_page - 1)
    } else {
        0
    };
    let meta_ok = !overflow
        && meta.iter().map(|r| r.1).sum::<usize>() == metadata
        && data_in_tail + meta.len() < per_page
        && !(dword && meta.iter().any(|&(a, l)| !a.is_multiple_of(4) || !l.is_multiple_of(4)));
    let outcome = match described {
        Ok(dptr) if meta_ok => {
            // The metadata's Data Blocks just below the last slot.
            let first = per_page - 1 - meta.len();
            for (i, &(addr, len)) in meta.iter().enumerate() {
                let d = SglDescriptor::new(SglDescriptor::DATA_BLOCK, addr, len as u32).to_qwords();
                sink.write(tail, 2 * (first + i), d[0]);
                sink.write(tail, 2 * (first + i) + 1, d[1]);
            }
            // The descriptor MPTR names, in the page's last slot.
            let last = per_page - 1;
            let named = match meta.as_slice() {
                [(addr, len)] => SglDescriptor::new(SglDescriptor::DATA_BLOCK, *addr, *len as u32),
                runs => SglDescriptor::new(
                    SglDescriptor::LAST_SEGMENT,
                    sink.page_addr(tail) + (first * SglDescriptor::SIZE) as u64,
                    (runs.len() * SglDescriptor::SIZE) as u32,
                ),
            }
            .to_qwords();
            sink.write(tail, 2 * last, named[0]);
            sink.write(tail, 2 * last + 1, named[1]);
            return Ok((dptr, sink.page_addr(tail) + (last * SglDescriptor::SIZE) as u64, mapping));
        }
        // The data's SGL as well: its PRPs would have done, but with the
        // metadata in pieces the transfer cannot be described.
        Ok(_) | Err(Error::NotPrpShaped(_)) => not_contiguous,
        Err(e) => e,
    };
    if let Some(m) = mapping {
        // SAFETY: shared just above; the device never saw it.
        unsafe { hal.unshare(region, direction, m) };
    }
    Err(outcome)
}

/// Routes a buffer's device segments for [`hand_with_metadata_sgl`]: the
/// data's to its SGL builder, the metadata's into runs (merged where they
/// follow one another).
struct SglRoute<'a, S: crate::prp::PrpListSink> {
    data: crate::sgl::SglBuilder<'a, S>,
    data_left: usize,
    meta: heapless::Vec<(u64, usize), METADATA_SGL_RUNS>,
    overflow: bool,
}

impl<S: crate::prp::PrpListSink> hal_traits::SegmentSink for SglRoute<'_, S> {
    fn push(&mut self, segment: hal_traits::DeviceSegment) {
        let mut segment = segment;
        if self.data_left > 0 {
            let n = segment.len.min(self.data_left);
            self.data.push(hal_traits::DeviceSegment { addr: segment.addr, len: n });
            self.data_left -= n;
            segment = hal_traits::DeviceSegment { addr: segment.addr.offset(n as u64), len: segment.len - n };
        }
        if segment.len == 0 {
            return;
        }
        let follows = |last: &(u64, usize)| {
            last.0.checked_add(last.1 as u64) == Some(segment.addr.0)
                && last.1 + segment.len <= u32::MAX as usize
        };
        match self.meta.last_mut() {
            Some(last) if follows(last) => last.1 += segment.len,
            _ => {
                if segment.len > u32::MAX as usize || self.meta.push((segment.addr.0, segment.len)).is_err() {
                    self.overflow = true;
                }
            }
        }
    }
}

/// Hands the separate metadata at `region` to the device on its own (a
/// split request's child): translated or shared, and one contiguous
/// dword-aligned run, MPTR. Returns MPTR and the share's mapping; on error
/// nothing was handed over.
///
/// # Safety
///
/// As for [`hand_to_device`].
pub(crate) unsafe fn hand_metadata<H: Hal>(
    hal: &H,
    region: NonNull<[u8]>,
    direction: hal_traits::Direction,
) -> crate::error::Result<(u64, Option<H::Mapping>)> {
    use crate::error::{Argument, Error};
    let mut run = MetaRun::default();
    let mapping = if hal.translate(region, &mut run) {
        None
    } else {
        // SAFETY: forwarded from the caller.
        Some(unsafe { hal.share(region, direction, &mut run) }.map_err(Error::Hal)?)
    };
    match run.mptr(region.len()) {
        Some(mptr) if !region.is_empty() => Ok((mptr, mapping)),
        _ => {
            if let Some(m) = mapping {
                // SAFETY: shared just above; the device never saw it.
                unsafe { hal.unshare(region, direction, m) };
            }
            Err(Error::InvalidArgument(Argument::MetadataNotContiguous))
        }
    }
}

impl hal_traits::SegmentSink for MetaRun {
    fn push(&mut self, segment: hal_traits::DeviceSegment) {
        if segment.len > 0 {
            MetaRun::push(self, segment.addr.0, segment.len);
        }
    }
}

/// Routes a buffer's device segments: the first `data_left` bytes to the
/// PRP builder, the rest (separate metadata) into one run.
struct Split<'a, S: crate::prp::PrpListSink> {
    prp: crate::prp::PrpBuilder<'a, S>,
    data_left: usize,
    meta: MetaRun,
}

/// The device addresses of separate metadata, which must be one run.
#[derive(Default)]
struct MetaRun {
    start: Option<u64>,
    end: u64,
    broken: bool,
}

impl MetaRun {
    fn push(&mut self, addr: u64, len: usize) {
        let Some(end) = addr.checked_add(len as u64) else {
            self.broken = true;
            return;
        };
        match self.start {
            None => {
                self.start = Some(addr);
                self.end = end;
            }
            Some(_) if addr == self.end => self.end = end,
            Some(_) => self.broken = true,
        }
    }

    /// MPTR for `len` bytes of metadata (0 for none), or `None` if the run
    /// is broken, of another length, or not dword-aligned.
    fn mptr(&self, len: usize) -> Option<u64> {
        match self.start {
            _ if len == 0 => Some(0),
            Some(start) if !self.broken && self.end - start == len as u64 && start.is_multiple_of(4) => {
                Some(start)
            }
            _ => None,
        }
    }
}

impl<S: crate::prp::PrpListSink> hal_traits::SegmentSink for Split<'_, S> {
    fn push(&mut self, segment: hal_traits::DeviceSegment) {
        let mut segment = segment;
        if self.data_left > 0 {
            let n = segment.len.min(self.data_left);
            self.prp.push(hal_traits::DeviceSegment { addr: segment.addr, len: n });
            self.data_left -= n;
            segment = hal_traits::DeviceSegment { addr: segment.addr.offset(n as u64), len: segment.len - n };
        }
        if segment.len > 0 {
            self.meta.push(segment.addr.0, segment.len);
        }
    }
}

#[cfg(test)]
mod metadata_sgl_tests {
    //! `hand_with_metadata_sgl` against a HAL that hands every buffer over
    //! in pieces of `chunk` bytes with a gap after each (so no two follow
    //! one another), and list pages in a `Vec`: the SGLs are walked as a
    //! controller would and must name exactly the pieces, in order.
    use super::*;
    use crate::prp::PrpListSink;
    use crate::spec::command::SglDescriptor;
    use crate::test_hal::TestHal;
    use core::cell::{Cell, RefCell};
    use hal_traits::{DeviceAddr, DeviceSegment, Direction, DmaRegion, Hal, HalError, SegmentSink};

    struct Chopped {
        inner: TestHal,
        chunk: usize,
        shares: Cell<i32>,
        pieces: RefCell<Vec<(u64, usize)>>,
    }

    // SAFETY: test only; the "device addresses" are never dereferenced.
    unsafe impl Hal for Chopped {
        type Mapping = ();
        fn read32(&self, offset: usize) -> u32 {
            self.inner.read32(offset)
        }
        unsafe fn write32(&self, offset: usize, value: u32) {
            // SAFETY: forwarded.
            unsafe { self.inner.write32(offset, value) }
        }
        fn dma_alloc(&self, pages: usize) -> Result<DmaRegion, HalError> {
            self.inner.dma_alloc(pages)
        }
        unsafe fn dma_free(&self, region: DmaRegion) {
            // SAFETY: forwarded.
            unsafe { self.inner.dma_free(region) }
        }
        unsafe fn share(
            &self,
            b: NonNull<[u8]>,
            _d: Direction,
            sink: &mut dyn SegmentSink,
        ) -> Result<(), HalError> {
            self.shares.set(self.shares.get() + 1);
            self.pieces.borrow_mut().clear();
            let mut at = 0;
            while at < b.len() {
                let len = self.chunk.min(b.len() - at);
                let addr = 0x1000_0000 + 2 * at as u64;
                self.pieces.borrow_mut().push((addr, len));
                sink.push(DeviceSegment { addr: DeviceAddr(addr), len });
                at += len;
            }
            Ok(())
        }
        unsafe fn unshare(&self, _b: NonNull<[u8]>, _d: Direction, _m: ()) {
            self.shares.set(self.shares.get() - 1);
        }
        fn ticks(&self) -> u64 {
            self.inner.ticks()
        }
        fn ticks_per_second(&self) -> u64 {
            self.inner.ticks_per_second()
        }
        fn delay(&self, d: core::time::Duration) {
            self.inner.delay(d)
        }
    }

    struct Pages(Vec<[u64; 512]>);

    impl PrpListSink for Pages {
        fn pages(&self) -> usize {
            self.0.len()
        }
        fn page_addr(&self, page: usize) -> u64 {
            0x7000_0000 + page as u64 * 4096
        }
        fn write(&mut self, page: usize, index: usize, entry: u64) {
            self.0[page][index] = entry;
        }
    }

    impl Pages {
        fn at(&self, addr: u64) -> SglDescriptor {
            let off = (addr - 0x7000_0000) as usize;
            let (page, index) = (off / 4096, off % 4096 / 8);
            SglDescriptor::from_qwords([self.0[page][index], self.0[page][index + 1]])
        }

        /// The Data Blocks the SGL starting at `first` names, as a
        /// controller walks it.
        fn walk(&self, first: SglDescriptor) -> Vec<(u64, usize)> {
            let (mut out, mut next) = (Vec::new(), first);
            loop {
                match next.kind() {
                    SglDescriptor::DATA_BLOCK => {
                        out.push((next.address, next.length as usize));
                        return out;
                    }
                    kind => {
                        let n = next.length as usize / 16;
                        let mut chained = None;
                        for i in 0..n {
                            let d = self.at(next.address + 16 * i as u64);
                            match d.kind() {
                                SglDescriptor::DATA_BLOCK => out.push((d.address, d.length as usize)),
                                _ => chained = Some(d),
                            }
                        }
                        match chained {
                            Some(d) if kind == SglDescriptor::SEGMENT => next = d,
                            _ => return out,
                        }
                    }
                }
            }
        }
    }

    fn hal(chunk: usize) -> Chopped {
        Chopped { inner: TestHal::default(), chunk, shares: Cell::new(0), pieces: RefCell::new(Vec::new()) }
    }

    /// `data` bytes then `metadata` bytes, through `hal` and `pages` list pages.
    fn hand(
        hal: &Chopped,
        pages: usize,
        data: usize,
        metadata: usize,
        dword: bool,
    ) -> (crate::error::Result<(crate::prp::Prp, u64, Option<()>)>, Pages) {
        let mut buf = vec![0u8; data + metadata];
        let region = NonNull::from(&mut buf[..]);
        let mut sink = Pages(vec![[0u64; 512]; pages]);
        // SAFETY: the buffer outlives the call; the model HAL touches nothing.
        let r =
            unsafe { hand_with_metadata_sgl(hal, region, Direction::ToDevice, &mut sink, metadata, dword) };
        (r, sink)
    }

    #[test]
    fn data_and_metadata_each_named_exactly() {
        for (pages, data, metadata, chunk) in
            [(2, 8192, 2048, 512), (1, 4096, 512, 512), (3, 300 * 512, 4096, 512)]
        {
            let h = hal(chunk);
            let (r, sink) = hand(&h, pages, data, metadata, false);
            let (dptr, mptr, _) = r.unwrap();
            assert_eq!(h.shares.get(), 1, "shared once, and kept");
            let pieces = h.pieces.borrow();
            let split = pieces.iter().position(|&(a, _)| a == 0x1000_0000 + 2 * data as u64).unwrap();
            let data_blocks = sink.walk(SglDescriptor::from_qwords([dptr.prp1, dptr.prp2]));
            assert_eq!(data_blocks, pieces[..split], "pages {pages}, data {data}");
            assert_eq!(mptr, sink.page_addr(pages - 1) + 255 * 16, "MPTR: the last slot of the last page");
            assert_eq!(sink.walk(sink.at(mptr)), pieces[split..], "metadata, pages {pages}");
        }
    }

    #[test]
    fn what_it_cannot_describe_is_refused_with_nothing_shared() {
        let refused = Error::InvalidArgument(crate::error::Argument::MetadataNotContiguous);
        use crate::error::Error;
        // More runs than it keeps.
        let h = hal(64);
        assert_eq!(hand(&h, 2, 4096, 64 * (METADATA_SGL_RUNS + 1), false).0.unwrap_err(), refused);
        assert_eq!(h.shares.get(), 0);
        // Runs that are not dword-granular, on a dword-SGL controller.
        let h = hal(6);
        assert_eq!(hand(&h, 2, 48, 24, true).0.unwrap_err(), refused);
        assert_eq!(h.shares.get(), 0);
        // No room beside the data's descriptors in the last page: 250 data
        // runs and 8 metadata runs in one page.
        let h = hal(512);
        assert_eq!(hand(&h, 1, 250 * 512, 8 * 512, false).0.unwrap_err(), refused);
        assert_eq!(h.shares.get(), 0);
        // ... which fit with 5 metadata runs.
        let h = hal(512);
        assert!(hand(&h, 1, 250 * 512, 5 * 512, false).0.is_ok());
        // No list page at all.
        let h = hal(512);
        assert_eq!(hand(&h, 0, 4096, 1024, false).0.unwrap_err(), refused);
        assert_eq!(h.shares.get(), 0);
    }
}
