//! The DMA arena: one zeroed, page-aligned allocation that stands for all the
//! memory the simulated device can reach, like the window of an IOMMU.
//!
//! The host gets pages of it from `dma_alloc` (and bounce pages from `share`);
//! the device reaches it only through device addresses `IOVA_BASE + offset`,
//! which are checked against the arena *and* against the pages currently
//! handed out, so a device access to freed memory fails like an IOMMU fault.
//!
//! Miri-friendliness: the arena is kept as the raw pointer `alloc_zeroed`
//! returned. Every access, by the host or the device, goes through pointers
//! derived from it (`base.add(offset)`) with `copy_nonoverlapping` or
//! `write_bytes`; no reference into the arena is kept, and no integer is ever
//! turned into a pointer.

use hal_traits::{
    DeviceAddr, DeviceSegment, Direction, DmaRegion, HalError, HalErrorKind, SegmentSink, PAGE_SIZE,
};
use std::alloc::{alloc_zeroed, dealloc, handle_alloc_error, Layout};
use std::collections::BTreeMap;
use std::ptr::{self, NonNull};

/// The device address of the first byte of the arena. Chosen above 4 GiB so
/// that a driver truncating addresses to 32 bits fails visibly.
pub const IOVA_BASE: u64 = 0x1_0000_0000;

/// Freed pages are filled with this byte.
pub const POISON_FREED: u8 = 0xdd;
/// Bounce pages for [`Direction::FromDevice`] start filled with this byte, so
/// that bytes the device never wrote show up after `unshare`.
pub const POISON_BOUNCE: u8 = 0xbb;

/// What [`SimHal::share`](crate::SimHal) hands back: its bounce pages.
/// `Clone` so tests can hand the simulator a mapping twice (the second
/// `unshare` is counted as a bad one and changes nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    first_page: usize,
    pages: usize,
}

impl Mapping {
    /// The device addresses of the bounce pages.
    pub(crate) fn span(&self) -> core::ops::Range<u64> {
        let start = IOVA_BASE + (self.first_page * PAGE_SIZE) as u64;
        start..start + (self.pages * PAGE_SIZE) as u64
    }
}

/// One live `share`.
#[derive(Clone, Copy, Debug)]
struct Share {
    /// The address of the caller's buffer (compared, never dereferenced).
    vaddr: usize,
    len: usize,
    direction: Direction,
    first_page: usize,
    pages: usize,
    /// Buffer pages go to bounce pages in reverse order.
    scatter: bool,
}

/// A piece of a shared buffer within one page.
struct Piece {
    buffer_offset: usize,
    arena_offset: usize,
    len: usize,
}

impl Share {
    /// The buffer page by page: where each piece is in the buffer and in the
    /// bounce pages.
    fn pieces(&self) -> impl Iterator<Item = Piece> + '_ {
        let in_page = self.vaddr % PAGE_SIZE;
        (0..self.pages).filter_map(move |k| {
            let start = if k == 0 { in_page } else { 0 };
            let buffer_offset = (k * PAGE_SIZE).saturating_sub(in_page);
            let len = (PAGE_SIZE - start).min(self.len.checked_sub(buffer_offset)?);
            let page = if self.scatter { self.first_page + self.pages - 1 - k } else { self.first_page + k };
            (len > 0).then_some(Piece { buffer_offset, arena_offset: page * PAGE_SIZE + start, len })
        })
    }
}

/// The arena and its bookkeeping.
pub(crate) struct Arena {
    base: NonNull<u8>,
    layout: Layout,
    pages: usize,
    /// True for every page handed out (by `dma_alloc` or as a bounce page).
    mapped: Vec<bool>,
    /// No page below this index is free.
    free_hint: usize,
    /// `dma_alloc` regions: first page -> pages.
    allocs: BTreeMap<usize, usize>,
    /// Live shares by their first bounce page.
    shares: BTreeMap<usize, Share>,
    /// `share` calls that succeeded.
    pub(crate) shares_total: u64,
    pub(crate) bad_frees: u64,
    pub(crate) bad_unshares: u64,
    pub(crate) live_pages: usize,
}

// SAFETY: `base` is the one heap allocation the arena owns (from
// `alloc_zeroed`, freed once in `Drop`), not memory borrowed from a thread;
// nothing about it is tied to the thread that allocated it. Every access
// through it goes through `&self`/`&mut self` methods, and the simulator
// keeps the arena inside `State` behind a `Mutex`, so two threads never run
// them at once. The caller buffers that `share` and `copy_back` read and
// write are reached only through the pointer passed to that call (a share
// records the buffer's address as an integer, never dereferenced), under the
// lock, while the `Hal` contract keeps the buffer valid.
unsafe impl Send for Arena {}

impl Arena {
    /// An arena of at least `bytes` bytes (at least one page).
    pub(crate) fn new(bytes: usize) -> Arena {
        let pages = bytes.div_ceil(PAGE_SIZE).max(1);
        let size = pages.checked_mul(PAGE_SIZE).expect("arena size overflows usize");
        let layout = Layout::from_size_align(size, PAGE_SIZE).expect("arena size is too large");
        // SAFETY: `layout` has a non-zero size (at least one page).
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(base) = NonNull::new(raw) else { handle_alloc_error(layout) };
        Arena {
            base,
            layout,
            pages,
            mapped: vec![false; pages],
            free_hint: 0,
            allocs: BTreeMap::new(),
            shares: BTreeMap::new(),
            shares_total: 0,
            bad_frees: 0,
            bad_unshares: 0,
            live_pages: 0,
        }
    }

    fn size(&self) -> usize {
        self.pages * PAGE_SIZE
    }

    /// The pointer to byte `offset` of the arena.
    fn ptr(&self, offset: usize) -> NonNull<u8> {
        assert!(offset <= self.size(), "arena offset out of bounds");
        // SAFETY: offset <= size, so the result is inside the allocation or one
        // past its end.
        unsafe { self.base.add(offset) }
    }

    /// Number of live shares.
    pub(crate) fn live_shares(&self) -> usize {
        self.shares.len()
    }

    /// First fit: `pages` consecutive free pages, marked mapped.
    fn take_pages(&mut self, pages: usize) -> Option<usize> {
        if pages == 0 || pages > self.pages {
            return None;
        }
        let mut start = self.free_hint;
        while start + pages <= self.pages {
            match self.mapped[start..start + pages].iter().rposition(|&m| m) {
                Some(used) => start += used + 1,
                None => {
                    self.mapped[start..start + pages].fill(true);
                    if start == self.free_hint {
                        self.free_hint = start + pages;
                    }
                    return Some(start);
                }
            }
        }
        None
    }

    /// Unmaps pages and poisons them.
    fn release_pages(&mut self, first: usize, pages: usize) {
        self.mapped[first..first + pages].fill(false);
        self.free_hint = self.free_hint.min(first);
        let p = self.ptr(first * PAGE_SIZE);
        // SAFETY: first + pages <= self.pages (the range was handed out by
        // `take_pages`), so the bytes lie inside the allocation.
        unsafe { ptr::write_bytes(p.as_ptr(), POISON_FREED, pages * PAGE_SIZE) };
    }

    pub(crate) fn dma_alloc(&mut self, pages: usize) -> Result<DmaRegion, HalError> {
        if pages == 0 {
            return Err(HalError::new(HalErrorKind::Unsupported, "dma_alloc of zero pages"));
        }
        let first = self
            .take_pages(pages)
            .ok_or(HalError::new(HalErrorKind::NoMemory, "simulator DMA arena full"))?;
        let p = self.ptr(first * PAGE_SIZE);
        // SAFETY: the pages lie inside the allocation (take_pages checked it).
        unsafe { ptr::write_bytes(p.as_ptr(), 0, pages * PAGE_SIZE) };
        self.allocs.insert(first, pages);
        self.live_pages += pages;
        Ok(DmaRegion { vaddr: p, daddr: DeviceAddr(IOVA_BASE + (first * PAGE_SIZE) as u64), pages })
    }

    /// Frees a region; anything but a live `dma_alloc` region (as returned)
    /// counts as a bad free and changes nothing.
    pub(crate) fn dma_free(&mut self, region: DmaRegion) {
        let first = match self.offset_of(region.daddr.0) {
            Some(off) if off % PAGE_SIZE == 0 => off / PAGE_SIZE,
            _ => {
                self.bad_frees += 1;
                return;
            }
        };
        let ok =
            self.allocs.get(&first) == Some(&region.pages) && region.vaddr == self.ptr(first * PAGE_SIZE);
        if !ok {
            self.bad_frees += 1;
            return;
        }
        self.allocs.remove(&first);
        self.live_pages -= region.pages;
        self.release_pages(first, region.pages);
    }

    /// Copies the caller's bytes (for `ToDevice` and `Bidirectional`) into fresh
    /// bounce pages and reports their device segments to `sink`, page by
    /// page; the first keeps the caller's offset within its page. With
    /// `scatter`, buffer page `k` of `n` goes to bounce page `n - 1 - k`, so
    /// no two segments are contiguous in device space (as behind an IOMMU
    /// that maps page by page, or a kernel whose buffers are not physically
    /// contiguous).
    ///
    /// # Safety
    ///
    /// `buffer` is valid for reads.
    pub(crate) unsafe fn share(
        &mut self,
        buffer: NonNull<[u8]>,
        direction: Direction,
        scatter: bool,
        sink: &mut dyn SegmentSink,
    ) -> Result<Mapping, HalError> {
        let vaddr = buffer.cast::<u8>();
        let len = buffer.len();
        let in_page = vaddr.as_ptr().addr() % PAGE_SIZE;
        let total = in_page
            .checked_add(len)
            .ok_or(HalError::new(HalErrorKind::MapFailed, "share length overflows"))?;
        let pages = total.div_ceil(PAGE_SIZE).max(1);
        let first = self
            .take_pages(pages)
            .ok_or(HalError::new(HalErrorKind::NoMemory, "simulator DMA arena full"))?;
        let fill = if direction == Direction::FromDevice { POISON_BOUNCE } else { 0 };
        let p = self.ptr(first * PAGE_SIZE);
        // SAFETY: the bounce pages lie inside the allocation.
        unsafe { ptr::write_bytes(p.as_ptr(), fill, pages * PAGE_SIZE) };
        let share = Share { vaddr: vaddr.as_ptr().addr(), len, direction, first_page: first, pages, scatter };
        for piece in share.pieces() {
            if direction != Direction::FromDevice {
                let dst = self.ptr(piece.arena_offset);
                // SAFETY: the caller guarantees the buffer is readable; the
                // piece lies inside it (offset + len <= buffer length) and
                // inside freshly taken bounce pages, which no one else uses,
                // so the ranges do not overlap.
                unsafe {
                    ptr::copy_nonoverlapping(vaddr.as_ptr().add(piece.buffer_offset), dst.as_ptr(), piece.len)
                };
            }
            sink.push(DeviceSegment {
                addr: DeviceAddr(IOVA_BASE + piece.arena_offset as u64),
                len: piece.len,
            });
        }
        self.shares.insert(first, share);
        self.shares_total += 1;
        Ok(Mapping { first_page: first, pages })
    }

    /// `sync_for_cpu` of a shared buffer: copies the bounce bytes back (for
    /// `FromDevice` and `Bidirectional`), as a bouncing back-end does when
    /// the device is done. A buffer that was translated, not shared, has
    /// nothing to copy. Returns false when `buffer` matches no live share.
    ///
    /// # Safety
    ///
    /// `buffer` is valid for writes.
    pub(crate) unsafe fn copy_back(&mut self, buffer: NonNull<[u8]>, dir: Direction) -> bool {
        let vaddr = buffer.cast::<u8>();
        let found = self
            .shares
            .values()
            .find(|s| s.vaddr == vaddr.as_ptr().addr() && s.len == buffer.len() && s.direction == dir)
            .copied();
        let Some(share) = found else { return false };
        if dir != Direction::ToDevice {
            for piece in share.pieces() {
                let src = self.ptr(piece.arena_offset);
                // SAFETY: the source lies inside the bounce pages of this
                // share; the caller guarantees the buffer is writable and the
                // piece lies inside it; the caller's buffer is not bounce
                // memory of this share, so they do not overlap.
                unsafe {
                    ptr::copy_nonoverlapping(src.as_ptr(), vaddr.as_ptr().add(piece.buffer_offset), piece.len)
                };
            }
        }
        true
    }

    /// Ends a share and frees its bounce pages. Nothing is copied back here:
    /// that is `sync_for_cpu`'s ([`copy_back`](Arena::copy_back)), so that
    /// undoing a share the device never saw leaves the caller's buffer as it
    /// was. Arguments that match no live share count as a bad unshare and
    /// change nothing.
    pub(crate) fn unshare(&mut self, buffer: NonNull<[u8]>, dir: Direction, mapping: Mapping) {
        let Some(share) = self.shares.get(&mapping.first_page).copied() else {
            self.bad_unshares += 1;
            return;
        };
        let vaddr = buffer.cast::<u8>();
        if share.vaddr != vaddr.as_ptr().addr()
            || share.len != buffer.len()
            || share.direction != dir
            || share.pages != mapping.pages
        {
            self.bad_unshares += 1;
            return;
        }
        self.shares.remove(&mapping.first_page);
        self.release_pages(share.first_page, share.pages);
    }

    /// The device address of a buffer that lies wholly in pages handed out
    /// by `dma_alloc` (memory the device can already reach, as memory a VFIO
    /// back-end registered up front), if it does.
    pub(crate) fn translate(&self, buffer: NonNull<[u8]>) -> Option<DeviceAddr> {
        let start = buffer.cast::<u8>().as_ptr().addr().checked_sub(self.base.as_ptr().addr())?;
        let end = start.checked_add(buffer.len().max(1))?;
        if end > self.size() {
            return None;
        }
        let (first, last) = (start / PAGE_SIZE, (end - 1) / PAGE_SIZE);
        let (&alloc_first, &alloc_pages) = self.allocs.range(..=first).next_back()?;
        (last < alloc_first + alloc_pages).then(|| DeviceAddr(IOVA_BASE + start as u64))
    }

    /// The arena offset of device address `addr`, if it lies in the arena.
    fn offset_of(&self, addr: u64) -> Option<usize> {
        let off = usize::try_from(addr.checked_sub(IOVA_BASE)?).ok()?;
        (off < self.size()).then_some(off)
    }

    /// The arena offset of `len` bytes at device address `addr`, if all of them
    /// lie in pages currently handed out (for `len` 0: if the byte at `addr`
    /// does). This is the device's only way in.
    pub(crate) fn device_range(&self, addr: u64, len: usize) -> Option<usize> {
        let off = usize::try_from(addr.checked_sub(IOVA_BASE)?).ok()?;
        let end = off.checked_add(len.max(1))?;
        if end > self.size() {
            return None;
        }
        let (first, last) = (off / PAGE_SIZE, (end - 1) / PAGE_SIZE);
        self.mapped[first..=last].iter().all(|&m| m).then_some(off)
    }

    /// Device read of `out.len()` bytes at `addr`; false (and nothing read)
    /// when the range is not mapped.
    pub(crate) fn device_read(&self, addr: u64, out: &mut [u8]) -> bool {
        let Some(off) = self.device_range(addr, out.len()) else {
            return false;
        };
        let src = self.ptr(off);
        // SAFETY: device_range checked that off..off + len lies inside the
        // allocation; `out` is a separate Rust buffer.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), out.as_mut_ptr(), out.len()) };
        true
    }

    /// Device write of `data` at `addr`; false (and nothing written) when the
    /// range is not mapped.
    pub(crate) fn device_write(&self, addr: u64, data: &[u8]) -> bool {
        let Some(off) = self.device_range(addr, data.len()) else {
            return false;
        };
        let dst = self.ptr(off);
        // SAFETY: device_range checked that off..off + len lies inside the
        // allocation; `data` is a separate Rust buffer.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), dst.as_ptr(), data.len()) };
        true
    }

    /// Device read of a little-endian u64.
    pub(crate) fn device_read_u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.device_read(addr, &mut b).then(|| u64::from_le_bytes(b))
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: `base` came from `alloc_zeroed(self.layout)` and is freed once.
        unsafe { dealloc(self.base.as_ptr(), self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_first_fit_and_poison() {
        let mut a = Arena::new(8 * PAGE_SIZE);
        let r1 = a.dma_alloc(2).unwrap();
        let r2 = a.dma_alloc(3).unwrap();
        assert_eq!(r1.daddr.0, IOVA_BASE);
        assert_eq!(r2.daddr.0, IOVA_BASE + 2 * PAGE_SIZE as u64);
        assert_eq!(a.live_pages, 5);
        assert!(a.device_write(r2.daddr.0 + 8, &[1, 2, 3]));
        a.dma_free(r1);
        assert_eq!(a.live_pages, 3);
        assert!(a.device_range(r1.daddr.0, 1).is_none(), "freed pages are unmapped");
        a.dma_free(r1);
        assert_eq!(a.bad_frees, 1, "double free counted");
        let r3 = a.dma_alloc(1).unwrap();
        assert_eq!(r3.daddr, r1.daddr, "first fit reuses the hole");
        let mut b = [9u8; 4];
        assert!(a.device_read(r3.daddr.0, &mut b));
        assert_eq!(b, [0; 4], "allocations are zeroed again");
        assert!(a.dma_alloc(4).is_err(), "only 3 pages left, not contiguous");
        let r4 = a.dma_alloc(3).unwrap();
        a.dma_free(DmaRegion { pages: 1, ..r4 });
        assert_eq!(a.bad_frees, 2, "wrong length counted");
        a.dma_free(r4);
        a.dma_free(r3);
        a.dma_free(r2);
        assert_eq!(a.live_pages, 0);
        assert!(a.dma_alloc(0).is_err());
    }

    #[test]
    fn device_ranges_are_checked() {
        let mut a = Arena::new(4 * PAGE_SIZE);
        let r = a.dma_alloc(1).unwrap();
        assert!(a.device_range(r.daddr.0, PAGE_SIZE).is_some());
        assert!(a.device_range(r.daddr.0, PAGE_SIZE + 1).is_none(), "runs into an unmapped page");
        assert!(a.device_range(0, 1).is_none());
        assert!(a.device_range(u64::MAX, 1).is_none());
        assert!(a.device_range(IOVA_BASE + 4 * PAGE_SIZE as u64, 0).is_none());
        assert!(a.device_read_u64(IOVA_BASE - 4).is_none());
        a.dma_free(r);
    }

    struct Segments(Vec<DeviceSegment>);
    impl SegmentSink for Segments {
        fn push(&mut self, s: DeviceSegment) {
            self.0.push(s);
        }
    }

    #[test]
    fn share_bounces_both_ways() {
        for scatter in [false, true] {
            let mut a = Arena::new(8 * PAGE_SIZE);
            let mut buf = [7u8; 100];
            let b = NonNull::from(&mut buf[..]);
            let mut segs = Segments(Vec::new());
            // SAFETY: `buf` is valid for 100 bytes.
            let m = unsafe { a.share(b, Direction::Bidirectional, scatter, &mut segs) }.unwrap();
            let d = segs.0[0].addr;
            assert_eq!(segs.0.iter().map(|s| s.len).sum::<usize>(), 100);
            assert_eq!(d.0 % PAGE_SIZE as u64, (b.cast::<u8>().as_ptr().addr() % PAGE_SIZE) as u64);
            let mut seen = [0u8; 100];
            let first = segs.0[0].len;
            assert!(a.device_read(d.0, &mut seen[..first]));
            assert_eq!(seen[..first], [7u8; 100][..first]);
            assert!(a.device_write(d.0, &[1, 2]));
            let wrong = Mapping { first_page: m.first_page, pages: m.pages + 1 };
            // Wrong arguments: counted, nothing touched.
            a.unshare(b, Direction::Bidirectional, wrong);
            assert_eq!(a.bad_unshares, 1);
            assert_eq!(buf[0], 7);
            let again = Mapping { first_page: m.first_page, pages: m.pages };
            // SAFETY: the buffer is the share's and valid for writes.
            assert!(unsafe { a.copy_back(b, Direction::Bidirectional) });
            a.unshare(b, Direction::Bidirectional, m);
            assert_eq!(&buf[..3], &[1, 2, 7]);
            assert_eq!(a.live_shares(), 0);
            // No longer live: counted.
            a.unshare(b, Direction::Bidirectional, again);
            assert_eq!(a.bad_unshares, 2);
        }
    }

    #[test]
    fn scattered_shares_reverse_the_pages() {
        let mut a = Arena::new(16 * PAGE_SIZE);
        let mut buf = vec![0u8; 3 * PAGE_SIZE];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i / PAGE_SIZE) as u8 + 1;
        }
        let b = NonNull::from(&mut buf[..]);
        let mut segs = Segments(Vec::new());
        // SAFETY: `buf` is valid for its length.
        let m = unsafe { a.share(b, Direction::ToDevice, true, &mut segs) }.unwrap();
        assert!(segs.0.len() >= 3);
        for w in segs.0.windows(2) {
            assert_ne!(w[0].addr.0 + w[0].len as u64, w[1].addr.0, "no two segments are contiguous");
        }
        // Each segment holds the bytes of its part of the buffer, in order.
        let mut offset = 0;
        for s in &segs.0 {
            let mut got = vec![0u8; s.len];
            assert!(a.device_read(s.addr.0, &mut got));
            assert_eq!(got, buf[offset..offset + s.len]);
            offset += s.len;
        }
        a.unshare(b, Direction::ToDevice, m);
        assert_eq!(a.live_shares(), 0);
    }

    #[test]
    fn translate_knows_allocated_pages_only() {
        let mut a = Arena::new(8 * PAGE_SIZE);
        let r = a.dma_alloc(2).unwrap();
        let inside = NonNull::slice_from_raw_parts(r.vaddr, 2 * PAGE_SIZE);
        assert_eq!(a.translate(inside), Some(r.daddr));
        let beyond = NonNull::slice_from_raw_parts(r.vaddr, 2 * PAGE_SIZE + 1);
        assert_eq!(a.translate(beyond), None, "runs past the allocation");
        let mut host = [0u8; 8];
        assert_eq!(a.translate(NonNull::from(&mut host[..])), None, "not arena memory");
        a.dma_free(r);
        assert_eq!(a.translate(inside), None, "freed");
    }
}
