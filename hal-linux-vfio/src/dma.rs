//! DMA memory and shared buffers behind the type1 IOMMU.
//!
//! - **DMA memory** ([`Hal::dma_alloc`](hal_traits::Hal::dma_alloc)) comes
//!   from chunks of 2 MiB or more: hugepages (`MAP_HUGETLB`) where the system
//!   has them reserved, anonymous memory otherwise, each chunk mapped into the
//!   IOMMU once (which pins it) at I/O virtual addresses of the back-end's
//!   choosing. Pages are handed out first fit within a chunk; chunks stay
//!   until the HAL goes. A buffer inside a chunk is translated without a
//!   system call.
//! - **Caller buffers** elsewhere are mapped on share, page by page: a page
//!   two buffers share is mapped once and counted, and unmapped when its last
//!   user is unshared. That costs two `ioctl`s per page per I/O (map and
//!   unmap, each an IOMMU page-table update and a TLB invalidation), which is
//!   why hot paths use `DmaBuffer`s, whose memory is in a chunk.

use crate::iova::IovaSpace;
use hal_traits::{DeviceAddr, DeviceSegment, HalError, HalErrorKind, SegmentSink, PAGE_SIZE};
use rustix::mm::{MapFlags, ProtFlags};
use std::collections::BTreeMap;

/// The size of a chunk of DMA memory (and of a hugepage): allocations round
/// up to it.
pub(crate) const CHUNK: usize = 2 << 20;

/// Mappings kept in reserve below the container's limit, so that chunks can
/// still be mapped when caller buffers use up the rest.
const RESERVE_MAPPINGS: u32 = 64;

/// The IOMMU's two operations (a container's `VFIO_IOMMU_MAP_DMA` and
/// `VFIO_IOMMU_UNMAP_DMA`; a model of them in the tests).
pub(crate) trait Iommu {
    /// Maps `size` bytes at `vaddr` of this process at `iova`.
    ///
    /// # Safety
    ///
    /// The memory stays allocated until it is unmapped, or until the device
    /// can no longer reach it.
    unsafe fn map(&self, vaddr: usize, iova: u64, size: u64) -> Result<(), rustix::io::Errno>;

    /// Unmaps the mapping at `iova`.
    fn unmap(&self, iova: u64, size: u64) -> Result<(), rustix::io::Errno>;
}

/// A run of DMA memory mapped at one I/O virtual address range.
#[derive(Debug)]
struct Chunk {
    vaddr: usize,
    iova: u64,
    pages: usize,
    /// Which pages are handed out.
    used: Vec<bool>,
}

impl Chunk {
    fn len(&self) -> usize {
        self.pages * PAGE_SIZE
    }

    fn contains(&self, addr: usize, len: usize) -> bool {
        addr >= self.vaddr && addr.checked_add(len).is_some_and(|end| end <= self.vaddr + self.len())
    }

    /// The first run of `pages` free pages.
    fn find_free(&self, pages: usize) -> Option<usize> {
        let mut run = 0;
        for (i, used) in self.used.iter().enumerate() {
            run = if *used { 0 } else { run + 1 };
            if run == pages {
                return Some(i + 1 - pages);
            }
        }
        None
    }
}

/// A page of a caller's buffer, mapped for the device.
#[derive(Clone, Copy, Debug)]
struct SharedPage {
    iova: u64,
    users: u32,
}

/// What the back-end has mapped.
#[derive(Debug)]
pub(crate) struct Dma {
    space: IovaSpace,
    chunks: Vec<Chunk>,
    shared: BTreeMap<usize, SharedPage>,
    /// IOMMU mappings of caller pages in force (one a page).
    shared_mappings: usize,
    /// Caller memory registered ahead of time: (vaddr, len, iova), sorted.
    registered: Vec<(usize, usize, u64)>,
    /// Mappings the container still takes (`None`: the kernel did not say).
    avail: Option<u32>,
    /// Whether to try hugepages for new chunks.
    hugepages: bool,
    /// Chunks that came from hugepages.
    pub(crate) huge_chunks: usize,
    /// Hugepages were asked for and none could be had.
    pub(crate) hugepages_missing: bool,
}

fn no_memory(detail: &'static str) -> HalError {
    HalError::new(HalErrorKind::NoMemory, detail)
}

/// A failed `VFIO_IOMMU_MAP_DMA`: out of memory or mappings is
/// [`HalErrorKind::NoMemory`] (with what to do), anything else `MapFailed`.
fn map_error(e: rustix::io::Errno, other: &'static str) -> HalError {
    match e {
        rustix::io::Errno::NOMEM => {
            no_memory("VFIO_IOMMU_MAP_DMA: no memory to pin (raise the locked-memory limit, `ulimit -l`)")
        }
        rustix::io::Errno::NOSPC => no_memory(
            "VFIO_IOMMU_MAP_DMA: the container's mapping limit (vfio_iommu_type1 dma_entry_limit) is reached",
        ),
        _ => HalError::new(HalErrorKind::MapFailed, other),
    }
}

impl Dma {
    pub(crate) fn new(space: IovaSpace, avail: Option<u32>, hugepages: bool) -> Self {
        Dma {
            space,
            chunks: Vec::new(),
            shared: BTreeMap::new(),
            shared_mappings: 0,
            registered: Vec::new(),
            avail,
            hugepages,
            huge_chunks: 0,
            hugepages_missing: false,
        }
    }

    /// Pages of DMA memory handed out now.
    pub(crate) fn live_pages(&self) -> usize {
        self.chunks.iter().map(|c| c.used.iter().filter(|u| **u).count()).sum()
    }

    /// IOMMU mappings of caller pages in force now (one a page, however
    /// many buffers share it).
    pub(crate) fn shared_pages(&self) -> usize {
        self.shared_mappings
    }

    fn take_mapping(&mut self, reserve: u32) -> Result<(), HalError> {
        match &mut self.avail {
            Some(n) if *n <= reserve => {
                Err(no_memory("the container's DMA mapping limit (dma_entry_limit) is reached"))
            }
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn give_mapping(&mut self) {
        if let Some(n) = &mut self.avail {
            *n += 1;
        }
    }

    /// `pages` zeroed pages, contiguous for the CPU and the device.
    pub(crate) fn alloc(&mut self, iommu: &dyn Iommu, pages: usize) -> Result<(usize, u64), HalError> {
        if pages == 0 {
            return Err(no_memory("an allocation of no pages"));
        }
        let found = self.chunks.iter().enumerate().find_map(|(i, c)| c.find_free(pages).map(|at| (i, at)));
        let (i, at) = match found {
            Some(f) => f,
            None => (self.new_chunk(iommu, pages)?, 0),
        };
        let chunk = &mut self.chunks[i];
        chunk.used[at..at + pages].iter_mut().for_each(|u| *u = true);
        let vaddr = chunk.vaddr + at * PAGE_SIZE;
        // SAFETY: the pages lie inside the chunk, which this back-end mapped
        // and handed out to no one else.
        unsafe { core::ptr::write_bytes(vaddr as *mut u8, 0, pages * PAGE_SIZE) };
        Ok((vaddr, chunk.iova + (at * PAGE_SIZE) as u64))
    }

    /// Maps a new chunk of at least `pages` pages; its index.
    fn new_chunk(&mut self, iommu: &dyn Iommu, pages: usize) -> Result<usize, HalError> {
        let len = (pages * PAGE_SIZE).div_ceil(CHUNK) * CHUNK;
        self.take_mapping(0)?;
        let mapped = self.map_chunk(iommu, len);
        if mapped.is_err() {
            self.give_mapping();
        }
        let (vaddr, iova) = mapped?;
        let chunk = Chunk { vaddr, iova, pages: len / PAGE_SIZE, used: vec![false; len / PAGE_SIZE] };
        let i = self.chunks.partition_point(|c| c.vaddr < vaddr);
        self.chunks.insert(i, chunk);
        Ok(i)
    }

    fn map_chunk(&mut self, iommu: &dyn Iommu, len: usize) -> Result<(usize, u64), HalError> {
        let prot = ProtFlags::READ | ProtFlags::WRITE;
        let mut memory = None;
        if self.hugepages {
            // SAFETY: a new private anonymous mapping touches no other memory.
            let huge = unsafe {
                rustix::mm::mmap_anonymous(
                    core::ptr::null_mut(),
                    len,
                    prot,
                    MapFlags::PRIVATE | MapFlags::HUGETLB | MapFlags::HUGE_2MB | MapFlags::POPULATE,
                )
            };
            match huge {
                Ok(p) => memory = Some(p),
                // None reserved (or none left): plain pages from now on.
                Err(_) => {
                    self.hugepages = false;
                    self.hugepages_missing = true;
                }
            }
        }
        let huge = memory.is_some();
        let ptr = match memory {
            Some(p) => p,
            // SAFETY: as above.
            None => unsafe {
                rustix::mm::mmap_anonymous(
                    core::ptr::null_mut(),
                    len,
                    prot,
                    MapFlags::PRIVATE | MapFlags::POPULATE,
                )
            }
            .map_err(|_| no_memory("mmap of DMA memory failed"))?,
        };
        let Some(iova) = self.space.take(len as u64, CHUNK as u64) else {
            // SAFETY: the mapping was made above and is used by no one.
            let _ = unsafe { rustix::mm::munmap(ptr, len) };
            return Err(no_memory("no I/O virtual address space left"));
        };
        // SAFETY: the memory stays mapped for as long as the container (the
        // chunks are unmapped only after it is closed, see `VfioHal`'s Drop).
        if let Err(e) = unsafe { iommu.map(ptr as usize, iova, len as u64) } {
            self.space.release(iova, len as u64);
            // SAFETY: as above.
            let _ = unsafe { rustix::mm::munmap(ptr, len) };
            return Err(map_error(e, "VFIO_IOMMU_MAP_DMA of DMA memory failed"));
        }
        // A fork (with copy-on-write) must not give this process new pages
        // behind the IOMMU's back: the child gets none of this memory.
        // SAFETY: advice on memory this back-end just mapped.
        let _ = unsafe { rustix::mm::madvise(ptr, len, rustix::mm::Advice::LinuxDontFork) };
        if huge {
            self.huge_chunks += 1;
        }
        Ok((ptr as usize, iova))
    }

    /// Gives pages back to their chunk.
    pub(crate) fn free(&mut self, vaddr: usize, pages: usize) -> bool {
        let Some(chunk) = self.chunks.iter_mut().find(|c| c.contains(vaddr, pages * PAGE_SIZE)) else {
            return false;
        };
        let at = (vaddr - chunk.vaddr) / PAGE_SIZE;
        if !(vaddr - chunk.vaddr).is_multiple_of(PAGE_SIZE) || chunk.used[at..at + pages].iter().any(|u| !u) {
            return false;
        }
        chunk.used[at..at + pages].iter_mut().for_each(|u| *u = false);
        true
    }

    /// The device address of `len` bytes at `addr` when they lie in one
    /// chunk.
    pub(crate) fn translate(&self, addr: usize, len: usize) -> Option<DeviceAddr> {
        let end = addr.checked_add(len)?;
        let i = self.chunks.partition_point(|c| c.vaddr <= addr);
        if let Some(chunk) = i.checked_sub(1).and_then(|i| self.chunks.get(i)) {
            if chunk.contains(addr, len) {
                return Some(DeviceAddr(chunk.iova + (addr - chunk.vaddr) as u64));
            }
        }
        let i = self.registered.partition_point(|r| r.0 <= addr);
        let &(vaddr, rlen, iova) = self.registered.get(i.checked_sub(1)?)?;
        (end <= vaddr + rlen).then(|| DeviceAddr(iova + (addr - vaddr) as u64))
    }

    /// Maps `len` bytes of caller memory at `addr` (whole pages) for good:
    /// buffers inside are translated from then on. `Err` with why not.
    ///
    /// # Safety
    ///
    /// The memory stays allocated, and is not reused for anything the
    /// device must not reach, until the container is closed.
    pub(crate) unsafe fn register(
        &mut self,
        iommu: &dyn Iommu,
        addr: usize,
        len: usize,
    ) -> Result<u64, String> {
        if len == 0 || !addr.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
            return Err(format!("{len} bytes at {addr:#x}: registered memory must be whole 4 KiB pages"));
        }
        let end = addr.checked_add(len).ok_or("the region wraps")?;
        let overlaps = |v: usize, l: usize| v < end && addr < v + l;
        if self.registered.iter().any(|&(v, l, _)| overlaps(v, l))
            || self.chunks.iter().any(|c| overlaps(c.vaddr, c.len()))
        {
            return Err(format!("{len} bytes at {addr:#x} overlap memory already registered or DMA memory"));
        }
        if self.shared.range(addr..end).next().is_some() {
            return Err(format!("{len} bytes at {addr:#x} hold buffers shared with the device right now"));
        }
        let align = if len >= CHUNK { CHUNK } else { PAGE_SIZE } as u64;
        self.take_mapping(0).map_err(|e| e.detail().to_string())?;
        let Some(iova) = self.space.take(len as u64, align) else {
            self.give_mapping();
            return Err("no I/O virtual address space left".into());
        };
        // SAFETY: forwarded from the caller.
        if let Err(e) = unsafe { iommu.map(addr, iova, len as u64) } {
            self.space.release(iova, len as u64);
            self.give_mapping();
            return Err(format!("VFIO_IOMMU_MAP_DMA: {e}"));
        }
        let i = self.registered.partition_point(|r| r.0 < addr);
        self.registered.insert(i, (addr, len, iova));
        Ok(iova)
    }

    /// Bytes of caller memory registered.
    pub(crate) fn registered_bytes(&self) -> usize {
        self.registered.iter().map(|r| r.1).sum()
    }

    /// Maps every page of `len` bytes at `addr` (counting the pages already
    /// mapped) and reports the segments; on error nothing stays mapped.
    pub(crate) fn share(
        &mut self,
        iommu: &dyn Iommu,
        addr: usize,
        len: usize,
        sink: &mut dyn SegmentSink,
    ) -> Result<(), HalError> {
        if len == 0 {
            return Ok(());
        }
        let first = addr / PAGE_SIZE * PAGE_SIZE;
        let end = addr.checked_add(len).ok_or(HalError::new(HalErrorKind::MapFailed, "buffer wraps"))?;
        // One range of addresses for every page not mapped yet, handed out
        // in order: a buffer no other share touches reaches the device as
        // one segment however fragmented the space is (separate metadata,
        // which MPTR names as one run, depends on it).
        let fresh = (first..end).step_by(PAGE_SIZE).filter(|p| !self.shared.contains_key(p)).count();
        let bytes = (fresh * PAGE_SIZE) as u64;
        let mut reserved = if fresh > 1 {
            self.space.take(bytes, PAGE_SIZE as u64).map(|at| (at, at + bytes))
        } else {
            None
        };
        let mut page = first;
        let mut run: Option<DeviceSegment> = None;
        while page < end {
            let iova = match self.map_page(iommu, page, &mut reserved) {
                Ok(iova) => iova,
                Err(e) => {
                    if let Some((next, end)) = reserved {
                        self.space.release(next, end - next);
                    }
                    self.unshare_pages(iommu, first, page);
                    return Err(e);
                }
            };
            // The part of this page that the buffer covers.
            let from = addr.max(page);
            let to = end.min(page + PAGE_SIZE);
            let seg = DeviceSegment { addr: DeviceAddr(iova + (from - page) as u64), len: to - from };
            run = match run {
                Some(r) if r.addr.0 + r.len as u64 == seg.addr.0 => {
                    Some(DeviceSegment { addr: r.addr, len: r.len + seg.len })
                }
                Some(r) => {
                    sink.push(r);
                    Some(seg)
                }
                None => Some(seg),
            };
            page += PAGE_SIZE;
        }
        if let Some(r) = run {
            sink.push(r);
        }
        Ok(())
    }

    /// Maps `page` (or counts one more user of its mapping), at the next
    /// address of `reserved` where there is one.
    fn map_page(
        &mut self,
        iommu: &dyn Iommu,
        page: usize,
        reserved: &mut Option<(u64, u64)>,
    ) -> Result<u64, HalError> {
        if let Some(p) = self.shared.get_mut(&page) {
            p.users += 1;
            return Ok(p.iova);
        }
        self.take_mapping(RESERVE_MAPPINGS)?;
        let iova = match reserved {
            Some((next, end)) if *next < *end => {
                *next += PAGE_SIZE as u64;
                *next - PAGE_SIZE as u64
            }
            _ => match self.space.take(PAGE_SIZE as u64, PAGE_SIZE as u64) {
                Some(iova) => iova,
                None => {
                    self.give_mapping();
                    return Err(no_memory("no I/O virtual address space left"));
                }
            },
        };
        // SAFETY: the driver's `share` contract keeps the buffer (so this
        // page) valid until `unshare`, which unmaps it first.
        if let Err(e) = unsafe { iommu.map(page, iova, PAGE_SIZE as u64) } {
            self.space.release(iova, PAGE_SIZE as u64);
            self.give_mapping();
            return Err(map_error(e, "VFIO_IOMMU_MAP_DMA of a caller's buffer failed"));
        }
        self.shared.insert(page, SharedPage { iova, users: 1 });
        self.shared_mappings += 1;
        Ok(iova)
    }

    /// Drops one user of each page from `first` up to `end` (exclusive).
    fn unshare_pages(&mut self, iommu: &dyn Iommu, first: usize, end: usize) {
        let mut page = first;
        while page < end {
            if let Some(p) = self.shared.get_mut(&page) {
                p.users = p.users.saturating_sub(1);
                if p.users == 0 {
                    let iova = p.iova;
                    if iommu.unmap(iova, PAGE_SIZE as u64).is_ok() {
                        self.shared.remove(&page);
                        self.shared_mappings -= 1;
                        self.space.release(iova, PAGE_SIZE as u64);
                        self.give_mapping();
                    }
                    // An unmap that failed leaves the mapping in force: the
                    // entry stays (with no users), so its address is never
                    // handed out again, and a later share of the page uses
                    // the mapping there is.
                }
            }
            page += PAGE_SIZE;
        }
    }

    /// Undoes [`share`](Self::share) of the same bytes.
    pub(crate) fn unshare(&mut self, iommu: &dyn Iommu, addr: usize, len: usize) {
        if len == 0 {
            return;
        }
        let first = addr / PAGE_SIZE * PAGE_SIZE;
        self.unshare_pages(iommu, first, addr + len);
    }

    /// The chunks' memory, to unmap once the container is closed.
    pub(crate) fn take_chunks(&mut self) -> Vec<(usize, usize)> {
        self.chunks.drain(..).map(|c| (c.vaddr, c.len())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A model IOMMU: its mappings by address, and how many more maps work.
    #[derive(Default)]
    struct Model {
        maps: RefCell<BTreeMap<u64, (usize, u64)>>,
        fail_after: RefCell<Option<usize>>,
    }

    impl Iommu for Model {
        unsafe fn map(&self, vaddr: usize, iova: u64, size: u64) -> Result<(), rustix::io::Errno> {
            if let Some(n) = self.fail_after.borrow_mut().as_mut() {
                if *n == 0 {
                    return Err(rustix::io::Errno::FAULT);
                }
                *n -= 1;
            }
            let mut maps = self.maps.borrow_mut();
            // The real IOMMU refuses an address range that is already mapped.
            assert!(!maps.iter().any(|(&a, &(_, s))| a < iova + size && iova < a + s), "IOVA mapped twice");
            maps.insert(iova, (vaddr, size));
            Ok(())
        }

        fn unmap(&self, iova: u64, size: u64) -> Result<(), rustix::io::Errno> {
            let found = self.maps.borrow_mut().remove(&iova);
            assert_eq!(found.map(|m| m.1), Some(size), "unmap of what was not mapped");
            Ok(())
        }
    }

    impl Model {
        /// Where the device reaches `iova`, through the mappings.
        fn resolve(&self, iova: u64) -> Option<usize> {
            let maps = self.maps.borrow();
            let (&a, &(vaddr, size)) = maps.range(..=iova).next_back()?;
            (iova < a + size).then(|| vaddr + (iova - a) as usize)
        }
    }

    #[derive(Default)]
    struct Segments(Vec<DeviceSegment>);

    impl SegmentSink for Segments {
        fn push(&mut self, segment: DeviceSegment) {
            self.0.push(segment);
        }
    }

    fn dma(avail: Option<u32>) -> Dma {
        Dma::new(IovaSpace::new(&[]), avail, false)
    }

    /// Every byte of `len` at `addr` reaches the device through the
    /// segments, in order.
    fn check_segments(iommu: &Model, addr: usize, len: usize, segs: &Segments) {
        assert_eq!(segs.0.iter().map(|s| s.len).sum::<usize>(), len);
        let mut at = addr;
        for s in &segs.0 {
            for off in [0, s.len - 1] {
                assert_eq!(iommu.resolve(s.addr.0 + off as u64), Some(at + off));
            }
            at += s.len;
        }
    }

    #[test]
    fn two_buffers_in_one_page_are_mapped_once_and_unmapped_with_the_last() {
        let iommu = Model::default();
        let mut d = dma(None);
        let page = vec![0u8; 3 * PAGE_SIZE];
        let base = (page.as_ptr() as usize).next_multiple_of(PAGE_SIZE);
        let (a, b) = (base + 512, base + 2048);
        let (mut sa, mut sb) = (Segments::default(), Segments::default());
        d.share(&iommu, a, 512, &mut sa).unwrap();
        d.share(&iommu, b, 512, &mut sb).unwrap();
        assert_eq!(iommu.maps.borrow().len(), 1);
        check_segments(&iommu, a, 512, &sa);
        check_segments(&iommu, b, 512, &sb);
        d.unshare(&iommu, a, 512);
        // The other buffer still reaches the device.
        check_segments(&iommu, b, 512, &sb);
        d.unshare(&iommu, b, 512);
        assert!(iommu.maps.borrow().is_empty());
        assert_eq!(d.shared_pages(), 0);
    }

    #[test]
    fn a_buffer_across_pages_reaches_every_byte() {
        let iommu = Model::default();
        let mut d = dma(None);
        let buf = vec![0u8; 6 * PAGE_SIZE];
        let addr = (buf.as_ptr() as usize).next_multiple_of(PAGE_SIZE) + 100;
        let len = 3 * PAGE_SIZE + 7;
        let mut segs = Segments::default();
        d.share(&iommu, addr, len, &mut segs).unwrap();
        check_segments(&iommu, addr, len, &segs);
        // Fresh pages get consecutive addresses: one segment.
        assert_eq!(segs.0.len(), 1);
        d.unshare(&iommu, addr, len);
        assert!(iommu.maps.borrow().is_empty());
    }

    #[test]
    fn a_fresh_buffer_is_one_segment_in_a_fragmented_space() {
        let iommu = Model::default();
        let mut d = dma(None);
        let buf = vec![0u8; 24 * PAGE_SIZE];
        let base = (buf.as_ptr() as usize).next_multiple_of(PAGE_SIZE);
        // Pages 0..8 shared one by one, then every other one unshared:
        // the free addresses are single pages between taken ones.
        for i in 0..8 {
            d.share(&iommu, base + i * PAGE_SIZE, 16, &mut Segments::default()).unwrap();
        }
        for i in (0..8).step_by(2) {
            d.unshare(&iommu, base + i * PAGE_SIZE, 16);
        }
        let addr = base + 12 * PAGE_SIZE + 100;
        let len = 3 * PAGE_SIZE;
        let mut segs = Segments::default();
        d.share(&iommu, addr, len, &mut segs).unwrap();
        assert_eq!(segs.0.len(), 1, "{:?}", segs.0);
        check_segments(&iommu, addr, len, &segs);
        // A failure part-way gives the whole reserved range back.
        *iommu.fail_after.borrow_mut() = Some(1);
        let e = d.share(&iommu, base + 16 * PAGE_SIZE, 3 * PAGE_SIZE, &mut Segments::default());
        assert!(e.is_err());
        *iommu.fail_after.borrow_mut() = None;
        d.unshare(&iommu, addr, len);
        for i in (1..8).step_by(2) {
            d.unshare(&iommu, base + i * PAGE_SIZE, 16);
        }
        assert!(iommu.maps.borrow().is_empty());
        assert_eq!(d.space.free, IovaSpace::new(&[]).free, "every address back, merged");
    }

    #[test]
    fn a_failed_map_part_way_leaves_nothing_mapped() {
        let iommu = Model::default();
        let mut d = dma(None);
        let buf = vec![0u8; 6 * PAGE_SIZE];
        let addr = (buf.as_ptr() as usize).next_multiple_of(PAGE_SIZE);
        // A page the earlier share holds stays mapped for it.
        let mut first = Segments::default();
        d.share(&iommu, addr, 64, &mut first).unwrap();
        *iommu.fail_after.borrow_mut() = Some(1);
        let mut segs = Segments::default();
        let e = d.share(&iommu, addr, 3 * PAGE_SIZE, &mut segs).unwrap_err();
        assert_eq!(e.kind(), HalErrorKind::MapFailed);
        assert_eq!(map_error(rustix::io::Errno::NOSPC, "").kind(), HalErrorKind::NoMemory);
        assert!(map_error(rustix::io::Errno::NOMEM, "").detail().contains("ulimit -l"));
        assert_eq!(iommu.maps.borrow().len(), 1);
        check_segments(&iommu, addr, 64, &first);
        *iommu.fail_after.borrow_mut() = None;
        d.unshare(&iommu, addr, 64);
        assert!(iommu.maps.borrow().is_empty());
        // The address space came back too: a share now gets the first one.
        let mut again = Segments::default();
        d.share(&iommu, addr, 64, &mut again).unwrap();
        assert_eq!(again.0[0].addr, first.0[0].addr);
    }

    #[test]
    fn the_mapping_limit_is_an_error_not_a_failure_later() {
        let iommu = Model::default();
        // Room for one chunk and two caller pages above the reserve.
        let mut d = dma(Some(RESERVE_MAPPINGS + 3));
        let (_, _) = d.alloc(&iommu, 1).unwrap();
        let buf = vec![0u8; 8 * PAGE_SIZE];
        let addr = (buf.as_ptr() as usize).next_multiple_of(PAGE_SIZE);
        let mut segs = Segments::default();
        d.share(&iommu, addr, 2 * PAGE_SIZE, &mut segs).unwrap();
        let e = d.share(&iommu, addr + 4 * PAGE_SIZE, 16, &mut Segments::default()).unwrap_err();
        assert_eq!(e.kind(), HalErrorKind::NoMemory);
        d.unshare(&iommu, addr, 2 * PAGE_SIZE);
        d.share(&iommu, addr + 4 * PAGE_SIZE, 16, &mut Segments::default()).unwrap();
        d.unshare(&iommu, addr + 4 * PAGE_SIZE, 16);
        for (vaddr, len) in d.take_chunks() {
            // SAFETY: mapped by `alloc` above, used by nothing now.
            unsafe { rustix::mm::munmap(vaddr as *mut core::ffi::c_void, len) }.unwrap();
        }
    }

    #[test]
    fn registered_memory_is_translated_without_a_share() {
        let iommu = Model::default();
        let mut d = dma(None);
        let buf = vec![0u8; 8 * PAGE_SIZE];
        let base = (buf.as_ptr() as usize).next_multiple_of(PAGE_SIZE);
        // SAFETY: `buf` outlives `d`'s use here, and the model maps nothing.
        let iova = unsafe { d.register(&iommu, base, 4 * PAGE_SIZE) }.unwrap();
        assert_eq!(d.translate(base + 100, 3000), Some(DeviceAddr(iova + 100)));
        assert_eq!(
            d.translate(base + 4 * PAGE_SIZE - 8, 8),
            Some(DeviceAddr(iova + 4 * PAGE_SIZE as u64 - 8))
        );
        assert_eq!(iommu.resolve(iova + 5000), Some(base + 5000));
        // Past its end, or straddling it: not translated.
        assert_eq!(d.translate(base + 4 * PAGE_SIZE - 8, 16), None);
        assert_eq!(d.translate(base + 4 * PAGE_SIZE, 8), None);
        // SAFETY: as above.
        unsafe {
            assert!(d.register(&iommu, base + 2 * PAGE_SIZE, 4 * PAGE_SIZE).unwrap_err().contains("overlap"));
            assert!(d
                .register(&iommu, base + 4 * PAGE_SIZE + 8, PAGE_SIZE)
                .unwrap_err()
                .contains("whole 4 KiB"));
            assert!(d.register(&iommu, base + 4 * PAGE_SIZE, 100).unwrap_err().contains("whole 4 KiB"));
        }
        // A page shared right now cannot be registered under it.
        let mut segs = Segments::default();
        d.share(&iommu, base + 5 * PAGE_SIZE, 64, &mut segs).unwrap();
        // SAFETY: as above.
        let e = unsafe { d.register(&iommu, base + 4 * PAGE_SIZE, 2 * PAGE_SIZE) }.unwrap_err();
        assert!(e.contains("shared"), "{e}");
        d.unshare(&iommu, base + 5 * PAGE_SIZE, 64);
        assert_eq!(d.registered_bytes(), 4 * PAGE_SIZE);
    }

    #[test]
    fn dma_memory_is_zeroed_translated_and_freed_once() {
        let iommu = Model::default();
        let mut d = dma(None);
        let (a, ia) = d.alloc(&iommu, 3).unwrap();
        let (b, ib) = d.alloc(&iommu, 1).unwrap();
        assert_eq!(iommu.resolve(ia), Some(a));
        assert_eq!(iommu.resolve(ib + 4095), Some(b + 4095));
        assert_eq!(d.translate(a + 10, 3 * PAGE_SIZE - 10).map(|x| x.0), Some(ia + 10));
        assert_eq!(d.translate(a, 1), iommu.resolve(ia).map(|_| DeviceAddr(ia)));
        // Outside every chunk, or running off its end: not translated.
        assert_eq!(d.translate(a + CHUNK - 8, 16), None);
        let heap = [0u8; 64];
        assert_eq!(d.translate(heap.as_ptr() as usize, 64), None);
        // SAFETY: the pages are ours, handed out above.
        unsafe { core::ptr::write_bytes(a as *mut u8, 0xa5, 3 * PAGE_SIZE) };
        assert!(d.free(a, 3));
        assert!(!d.free(a, 3), "a double free is refused");
        assert!(!d.free(a + 1, 1), "a misaligned free is refused");
        let (c, _) = d.alloc(&iommu, 2).unwrap();
        assert_eq!(c, a, "first fit");
        // SAFETY: the pages are ours, handed out above.
        let bytes = unsafe { core::slice::from_raw_parts(c as *const u8, 2 * PAGE_SIZE) };
        assert!(bytes.iter().all(|&x| x == 0), "reused pages are zeroed");
        assert_eq!(d.live_pages(), 3);
        // More than a chunk: a chunk of its own.
        let (big, ibig) = d.alloc(&iommu, CHUNK / PAGE_SIZE + 1).unwrap();
        assert_eq!(iommu.resolve(ibig + CHUNK as u64), Some(big + CHUNK));
        assert_eq!(iommu.maps.borrow().len(), 2);
        for (vaddr, len) in d.take_chunks() {
            // SAFETY: mapped by `alloc` above, used by nothing now.
            unsafe { rustix::mm::munmap(vaddr as *mut core::ffi::c_void, len) }.unwrap();
        }
    }
}
