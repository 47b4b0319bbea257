//! A pool of DMA frames over one static, physically contiguous region.
//!
//! First-fit over a bitmap: contiguous runs for queue rings and buffers, frees
//! in any order. Slow paths only (queue creation, buffer setup), so simplicity
//! wins over speed.

use core::ptr::NonNull;
use hal_traits::{DeviceAddr, DmaRegion, HalError, HalErrorKind, PAGE_SIZE};
use spin::Mutex;

/// The most pages one pool manages (256 MiB).
pub const MAX_PAGES: usize = 65536;

struct Bitmap {
    used: [u64; MAX_PAGES / 64],
    pages: usize,
}

impl Bitmap {
    fn is_used(&self, page: usize) -> bool {
        self.used[page / 64] & (1 << (page % 64)) != 0
    }

    fn set(&mut self, page: usize, used: bool) {
        if used {
            self.used[page / 64] |= 1 << (page % 64);
        } else {
            self.used[page / 64] &= !(1 << (page % 64));
        }
    }

    fn find_run(&self, count: usize) -> Option<usize> {
        let mut start = 0;
        while start + count <= self.pages {
            match (start..start + count).find(|p| self.is_used(*p)) {
                Some(used) => start = used + 1,
                None => return Some(start),
            }
        }
        None
    }
}

/// DMA frames for the driver, from a region the kernel sets aside.
pub struct DmaPool {
    virt: usize,
    phys: u64,
    map: Mutex<Bitmap>,
}

impl DmaPool {
    /// An empty pool; call [`DmaPool::init`] before use. `const` so it can be a
    /// `static`.
    pub const fn empty() -> Self {
        DmaPool { virt: 0, phys: 0, map: Mutex::new(Bitmap { used: [0; MAX_PAGES / 64], pages: 0 }) }
    }

    /// A pool over `pages` pages at virtual address `virt`, which the device
    /// reaches at physical address `phys`.
    ///
    /// # Safety
    ///
    /// The region is page-aligned, mapped, writable and physically contiguous,
    /// belongs to the pool alone from now on, and is reachable by the device
    /// (no IOMMU, or an identity mapping).
    pub unsafe fn new(virt: NonNull<u8>, phys: u64, pages: usize) -> Self {
        let mut pool = Self::empty();
        // SAFETY: forwarded from the caller.
        unsafe { pool.init(virt, phys, pages) };
        pool
    }

    /// Sets the region of an [`empty`](DmaPool::empty) pool.
    ///
    /// # Safety
    ///
    /// As for [`DmaPool::new`].
    pub unsafe fn init(&mut self, virt: NonNull<u8>, phys: u64, pages: usize) {
        self.virt = virt.as_ptr() as usize;
        self.phys = phys;
        self.map.get_mut().pages = pages.min(MAX_PAGES);
    }

    /// Pages not allocated now.
    pub fn free_pages(&self) -> usize {
        let map = self.map.lock();
        (0..map.pages).filter(|p| !map.is_used(*p)).count()
    }

    /// Allocates `count` zeroed, contiguous pages.
    pub fn alloc(&self, count: usize) -> Result<DmaRegion, HalError> {
        if count == 0 {
            return Err(HalError::new(HalErrorKind::NoMemory, "zero pages asked"));
        }
        let mut map = self.map.lock();
        let start = map.find_run(count).ok_or(HalError::new(HalErrorKind::NoMemory, "DMA pool exhausted"))?;
        for p in start..start + count {
            map.set(p, true);
        }
        drop(map);
        let vaddr = self.virt + start * PAGE_SIZE;
        // SAFETY: the pages lie inside the region given to `new`, which belongs
        // to the pool, and were free, so nothing else uses them.
        unsafe { core::ptr::write_bytes(vaddr as *mut u8, 0, count * PAGE_SIZE) };
        Ok(DmaRegion {
            // SAFETY: inside a region that starts at a non-null address.
            vaddr: unsafe { NonNull::new_unchecked(vaddr as *mut u8) },
            daddr: DeviceAddr(self.phys + (start * PAGE_SIZE) as u64),
            pages: count,
        })
    }

    /// Returns pages to the pool. Regions that do not come from this pool are
    /// ignored.
    ///
    /// # Safety
    ///
    /// `region` came from [`alloc`](DmaPool::alloc) of this pool and is freed
    /// once, and no device and no code uses its pages any more: the pool
    /// hands them out again, and a device still writing them would write
    /// someone else's memory.
    pub unsafe fn free(&self, region: DmaRegion) {
        let start = (region.vaddr.as_ptr() as usize).wrapping_sub(self.virt) / PAGE_SIZE;
        let mut map = self.map.lock();
        // `pages - start` rather than `start + pages`: a stranger's length
        // can be anything, and the sum could overflow.
        if start >= map.pages || region.pages > map.pages - start {
            return;
        }
        for p in start..start + region.pages {
            map.set(p, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};

    /// A made-up physical address for the pool: no device ever sees it, and
    /// it differs from the virtual one so a mix-up shows.
    const PHYS: u64 = 0x8000_0000;

    /// Page-aligned heap memory standing in for the region a kernel sets
    /// aside, freed when dropped (declare it before the pool, so it outlives
    /// the pool).
    struct Backing {
        base: NonNull<u8>,
        layout: Layout,
    }

    impl Backing {
        /// `pages` pages of uninitialised memory: the pool zeroes what it hands
        /// out, and the tests only read those pages or fill memory first. Not
        /// `alloc_zeroed`, which would touch every page of the large region
        /// in `the_pool_manages_at_most_max_pages`.
        fn new(pages: usize) -> Self {
            let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("layout");
            // SAFETY: the layout has a non-zero size.
            let base = unsafe { alloc(layout) };
            let base = NonNull::new(base).unwrap_or_else(|| handle_alloc_error(layout));
            Backing { base, layout }
        }

        /// A pool over all of it.
        fn pool(&self) -> DmaPool {
            // SAFETY: the memory is page-aligned, allocated and writable, and
            // this test gives it to the pool alone. No device exists, so the
            // made-up physical address is never used for DMA.
            unsafe { DmaPool::new(self.base, PHYS, self.layout.size() / PAGE_SIZE) }
        }

        /// Fills every byte with `byte`.
        fn fill(&self, byte: u8) {
            // SAFETY: inside the allocation; no reference into it exists.
            unsafe { core::ptr::write_bytes(self.base.as_ptr(), byte, self.layout.size()) }
        }

        /// The byte at `offset`.
        fn byte(&self, offset: usize) -> u8 {
            assert!(offset < self.layout.size());
            // SAFETY: inside the allocation, and initialised (filled or
            // zeroed by the pool) wherever the tests read.
            unsafe { self.base.as_ptr().add(offset).read() }
        }

        /// Page number of `region` in the backing.
        fn page_of(&self, region: &DmaRegion) -> usize {
            (region.vaddr.as_ptr() as usize - self.base.as_ptr() as usize) / PAGE_SIZE
        }
    }

    impl Drop for Backing {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout, freed once.
            unsafe { dealloc(self.base.as_ptr(), self.layout) }
        }
    }

    fn no_memory(result: Result<DmaRegion, HalError>) -> bool {
        matches!(result, Err(e) if e.kind() == HalErrorKind::NoMemory)
    }

    #[test]
    fn allocations_are_zeroed_and_nothing_else_is_touched() {
        let backing = Backing::new(8);
        let pool = backing.pool();
        backing.fill(0xa5);
        let _first = pool.alloc(1).expect("room");
        let second = pool.alloc(3).expect("room");
        for offset in 0..4 * PAGE_SIZE {
            assert_eq!(backing.byte(offset), 0, "byte {offset} of the allocations");
        }
        for offset in 4 * PAGE_SIZE..8 * PAGE_SIZE {
            assert_eq!(backing.byte(offset), 0xa5, "byte {offset} past the allocations");
        }
        // Dirty, free and allocate again: the reused pages are zeroed again.
        backing.fill(0x5a);
        // SAFETY: from this pool, freed once, and no device exists.
        unsafe { pool.free(second) };
        let again = pool.alloc(3).expect("room");
        assert_eq!(backing.page_of(&again), 1);
        for offset in PAGE_SIZE..4 * PAGE_SIZE {
            assert_eq!(backing.byte(offset), 0, "byte {offset} of the reused pages");
        }
        assert_eq!(backing.byte(0), 0x5a, "the first allocation is not cleared under its owner");
    }

    #[test]
    fn allocations_are_first_fit_contiguous_runs_at_phys_plus_offset() {
        let backing = Backing::new(16);
        let pool = backing.pool();
        let a = pool.alloc(2).expect("room");
        let b = pool.alloc(3).expect("room");
        let c = pool.alloc(1).expect("room");
        for (region, page, pages) in [(&a, 0, 2), (&b, 2, 3), (&c, 5, 1)] {
            assert_eq!(backing.page_of(region), page);
            assert_eq!(region.pages, pages);
            assert_eq!(region.len(), pages * PAGE_SIZE);
            assert_eq!(region.daddr, DeviceAddr(PHYS + (page * PAGE_SIZE) as u64), "page {page}");
        }
        assert_eq!(pool.free_pages(), 10);
    }

    #[test]
    fn frees_in_any_order_leave_holes_that_are_reused() {
        let backing = Backing::new(16);
        let pool = backing.pool();
        let a = pool.alloc(1).expect("room"); // page 0
        let b = pool.alloc(2).expect("room"); // pages 1-2
        let c = pool.alloc(1).expect("room"); // page 3
        let d = pool.alloc(4).expect("room"); // pages 4-7
        assert_eq!(pool.free_pages(), 8);
        // SAFETY: each region in this test came from this pool and is freed
        // once; no device exists.
        unsafe { pool.free(b) };
        assert_eq!(pool.free_pages(), 10);
        // SAFETY: as above.
        unsafe { pool.free(a) };
        assert_eq!(pool.free_pages(), 11);
        // The hole is pages 0-2: four pages do not fit and go past `d`, three
        // fill the hole exactly, one more goes after the four.
        let e = pool.alloc(4).expect("room");
        assert_eq!(backing.page_of(&e), 8);
        let f = pool.alloc(3).expect("room");
        assert_eq!(backing.page_of(&f), 0);
        let g = pool.alloc(1).expect("room");
        assert_eq!(backing.page_of(&g), 12);
        // Freeing `c` joins nothing yet (0-2 and 4-7 are taken); freeing `d`
        // too makes a five-page hole at 3-7.
        // SAFETY: as above.
        unsafe { pool.free(c) };
        // SAFETY: as above.
        unsafe { pool.free(d) };
        let h = pool.alloc(5).expect("room");
        assert_eq!(backing.page_of(&h), 3);
        for region in [e, f, g, h] {
            // SAFETY: as above.
            unsafe { pool.free(region) };
        }
        assert_eq!(pool.free_pages(), 16, "everything came back");
        assert_eq!(backing.page_of(&pool.alloc(16).expect("one run again")), 0);
    }

    #[test]
    fn exhaustion_and_fragmentation_return_no_memory() {
        let backing = Backing::new(8);
        let pool = backing.pool();
        assert!(no_memory(pool.alloc(9)), "more than the pool");
        let all = pool.alloc(8).expect("exactly the pool");
        assert_eq!(pool.free_pages(), 0);
        assert!(no_memory(pool.alloc(1)));
        // SAFETY: from this pool, freed once; no device exists.
        unsafe { pool.free(all) };
        // Every other page taken: four free pages, but no two adjacent.
        let singles: Vec<DmaRegion> = (0..8).map(|_| pool.alloc(1).expect("room")).collect();
        for region in singles.into_iter().step_by(2) {
            // SAFETY: as above.
            unsafe { pool.free(region) };
        }
        assert_eq!(pool.free_pages(), 4);
        assert!(no_memory(pool.alloc(2)), "no two free pages are adjacent");
        assert_eq!(pool.free_pages(), 4, "a refused allocation takes nothing");
        assert!(pool.alloc(1).is_ok());
    }

    #[test]
    fn zero_pages_are_refused() {
        let backing = Backing::new(4);
        let pool = backing.pool();
        assert!(no_memory(pool.alloc(0)));
        assert_eq!(pool.free_pages(), 4);
        assert!(no_memory(DmaPool::empty().alloc(0)));
    }

    #[test]
    fn an_empty_pool_has_nothing_to_give() {
        let pool = DmaPool::empty();
        assert_eq!(pool.free_pages(), 0);
        assert!(no_memory(pool.alloc(1)));
    }

    #[test]
    fn runs_that_would_cross_the_end_are_refused() {
        let backing = Backing::new(8);
        let pool = backing.pool();
        let _head = pool.alloc(6).expect("room");
        assert!(no_memory(pool.alloc(3)), "pages 6-8: page 8 is past the end");
        let tail = pool.alloc(2).expect("pages 6-7 fit exactly");
        assert_eq!(backing.page_of(&tail), 6);
    }

    #[test]
    fn free_ignores_regions_that_are_not_the_pools() {
        let backing = Backing::new(8);
        let pool = backing.pool();
        let all = pool.alloc(8).expect("room");
        let other = Backing::new(2);
        let base = backing.base.as_ptr() as usize;
        let at = |vaddr: usize, pages: usize| DmaRegion {
            vaddr: NonNull::new(vaddr as *mut u8).expect("not null"),
            daddr: DeviceAddr(PHYS),
            pages,
        };
        let strangers = [
            DmaRegion { vaddr: other.base, daddr: DeviceAddr(PHYS), pages: 2 },
            at(base - PAGE_SIZE, 1),
            at(base - PAGE_SIZE, 2),
            at(base + 8 * PAGE_SIZE, 1),
            at(base + 7 * PAGE_SIZE, 2),
            at(base + 4 * PAGE_SIZE, usize::MAX),
            at(usize::MAX & !(PAGE_SIZE - 1), 1),
        ];
        for region in strangers {
            // SAFETY: not from this pool, which `free` documents as ignored:
            // the pool only reads the region's address and length and never
            // touches its memory.
            unsafe { pool.free(region) };
            assert_eq!(pool.free_pages(), 0, "{region:?} freed pool pages");
        }
        // SAFETY: from this pool, freed once; no device exists.
        unsafe { pool.free(all) };
        assert_eq!(pool.free_pages(), 8);
    }

    #[test]
    fn the_pool_manages_at_most_max_pages() {
        // A region 16 pages larger than the cap. The memory is reserved but
        // never touched (the allocations below zero one page), so it costs
        // address space, not RAM.
        let backing = Backing::new(MAX_PAGES + 16);
        let pool = backing.pool();
        assert_eq!(pool.free_pages(), MAX_PAGES);
        assert!(no_memory(pool.alloc(MAX_PAGES + 1)), "pages past the cap are not the pool's");
        let first = pool.alloc(1).expect("room");
        assert_eq!(backing.page_of(&first), 0);
        assert_eq!(pool.free_pages(), MAX_PAGES - 1);
        // SAFETY: from this pool, freed once; no device exists.
        unsafe { pool.free(first) };
        // A region past the cap but inside the backing is not the pool's.
        let beyond = DmaRegion {
            // SAFETY: inside the backing allocation.
            vaddr: unsafe { NonNull::new_unchecked(backing.base.as_ptr().add(MAX_PAGES * PAGE_SIZE)) },
            daddr: DeviceAddr(PHYS + (MAX_PAGES * PAGE_SIZE) as u64),
            pages: 1,
        };
        // SAFETY: not from this pool (ignored, see `free`); its memory is not touched.
        unsafe { pool.free(beyond) };
        assert_eq!(pool.free_pages(), MAX_PAGES);
    }
}
