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

use hal_traits::{DeviceAddr, Direction, DmaRegion, HalError, HalErrorKind, PAGE_SIZE};
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

/// One live `share`.
#[derive(Clone, Copy, Debug)]
struct Share {
    /// The address of the caller's buffer (compared, never dereferenced).
    vaddr: usize,
    len: usize,
    direction: Direction,
    first_page: usize,
    pages: usize,
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
    /// Live shares by device address.
    shares: BTreeMap<u64, Share>,
    pub(crate) bad_frees: u64,
    pub(crate) bad_unshares: u64,
    pub(crate) live_pages: usize,
}

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
    /// bounce pages and returns their device address, which keeps the caller's
    /// offset within its page.
    ///
    /// # Safety
    ///
    /// `vaddr` is valid for reads of `len` bytes.
    pub(crate) unsafe fn share(
        &mut self,
        vaddr: NonNull<u8>,
        len: usize,
        direction: Direction,
    ) -> Result<DeviceAddr, HalError> {
        let in_page = vaddr.as_ptr().addr() % PAGE_SIZE;
        let total = in_page
            .checked_add(len)
            .ok_or(HalError::new(HalErrorKind::MapFailed, "share length overflows"))?;
        let pages = total.div_ceil(PAGE_SIZE).max(1);
        let first = self
            .take_pages(pages)
            .ok_or(HalError::new(HalErrorKind::NoMemory, "simulator DMA arena full"))?;
        let start = first * PAGE_SIZE;
        let fill = if direction == Direction::FromDevice { POISON_BOUNCE } else { 0 };
        let p = self.ptr(start);
        // SAFETY: the bounce pages lie inside the allocation.
        unsafe { ptr::write_bytes(p.as_ptr(), fill, pages * PAGE_SIZE) };
        if direction != Direction::FromDevice {
            let dst = self.ptr(start + in_page);
            // SAFETY: the caller guarantees `vaddr` is readable for `len`
            // bytes; the destination is inside freshly taken bounce pages
            // (in_page + len <= pages * PAGE_SIZE), which no one else uses, so
            // the ranges do not overlap.
            unsafe { ptr::copy_nonoverlapping(vaddr.as_ptr(), dst.as_ptr(), len) };
        }
        let daddr = IOVA_BASE + (start + in_page) as u64;
        self.shares
            .insert(daddr, Share { vaddr: vaddr.as_ptr().addr(), len, direction, first_page: first, pages });
        Ok(DeviceAddr(daddr))
    }

    /// Ends a share: copies the bounce bytes back (for `FromDevice` and
    /// `Bidirectional`) and frees the bounce pages. Arguments that match no
    /// live share count as a bad unshare and change nothing.
    ///
    /// # Safety
    ///
    /// When the arguments match a live share, `vaddr` is valid for writes of
    /// `len` bytes.
    pub(crate) unsafe fn unshare(
        &mut self,
        vaddr: NonNull<u8>,
        len: usize,
        daddr: DeviceAddr,
        dir: Direction,
    ) {
        let Some(share) = self.shares.get(&daddr.0).copied() else {
            self.bad_unshares += 1;
            return;
        };
        if share.vaddr != vaddr.as_ptr().addr() || share.len != len || share.direction != dir {
            self.bad_unshares += 1;
            return;
        }
        if dir != Direction::ToDevice {
            let src = self.ptr(share.first_page * PAGE_SIZE + (share.vaddr % PAGE_SIZE));
            // SAFETY: the source lies inside the bounce pages of this share; the
            // caller guarantees `vaddr` is writable for `len` bytes; the caller's
            // buffer is not bounce memory of this share, so they do not overlap.
            unsafe { ptr::copy_nonoverlapping(src.as_ptr(), vaddr.as_ptr(), len) };
        }
        self.shares.remove(&daddr.0);
        self.release_pages(share.first_page, share.pages);
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

    #[test]
    fn share_bounces_both_ways() {
        let mut a = Arena::new(4 * PAGE_SIZE);
        let mut buf = vec![7u8; 100];
        let v = NonNull::new(buf.as_mut_ptr()).unwrap();
        // SAFETY: `buf` is valid for 100 bytes.
        let d = unsafe { a.share(v, 100, Direction::Bidirectional) }.unwrap();
        assert_eq!(d.0 % PAGE_SIZE as u64, (v.as_ptr().addr() % PAGE_SIZE) as u64);
        let mut seen = [0u8; 100];
        assert!(a.device_read(d.0, &mut seen));
        assert_eq!(seen, [7u8; 100]);
        assert!(a.device_write(d.0, &[1, 2]));
        // SAFETY: wrong arguments: counted, nothing touched.
        unsafe { a.unshare(v, 99, d, Direction::Bidirectional) };
        assert_eq!(a.bad_unshares, 1);
        assert_eq!(buf[0], 7);
        // SAFETY: the arguments of the share above.
        unsafe { a.unshare(v, 100, d, Direction::Bidirectional) };
        assert_eq!(&buf[..3], &[1, 2, 7]);
        assert_eq!(a.live_shares(), 0);
        // SAFETY: no longer live: counted.
        unsafe { a.unshare(v, 100, d, Direction::Bidirectional) };
        assert_eq!(a.bad_unshares, 2);
    }
}
