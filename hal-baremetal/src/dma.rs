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
        if start >= map.pages || start + region.pages > map.pages {
            return;
        }
        for p in start..start + region.pages {
            map.set(p, false);
        }
    }
}
