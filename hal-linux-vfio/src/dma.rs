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

    /// The physical address of the byte at `vaddr` of this process (VFIO's
    /// no-IOMMU mode, where the device is given physical addresses).
    fn physical(&self, vaddr: usize) -> Result<u64, HalError>;
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
    /// VFIO's no-IOMMU mode: the device gets physical addresses, DMA memory
    /// comes from hugepages only, and caller buffers are bounced.
    no_iommu: bool,
    /// Bounce buffers of caller buffers in no-IOMMU mode, by (buffer
    /// address, length, id): their pieces of DMA memory.
    bounces: BTreeMap<(usize, usize, u64), Vec<Piece>>,
    /// The id of the next bounce buffer.
    next_bounce: u64,
}

/// A piece of a bounce buffer: DMA memory at `vaddr` (for the CPU) and
/// `daddr` (for the device), `pages` pages long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    pub(crate) vaddr: usize,
    pub(crate) daddr: u64,
    pub(crate) pages: usize,
}

/// The most pages of one bounce piece: a chunk, which one hugepage backs.
const PIECE_PAGES: usize = CHUNK / PAGE_SIZE;

/// Where some of a buffer's bytes lie in its bounce buffer: `len` bytes
/// from offset `at` of the buffer are at `offset` of piece `piece`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) at: usize,
    pub(crate) piece: usize,
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

/// Where the bytes of a buffer at `addr`, `len` bytes long, lie in its
/// bounce `pieces`, which hold its bytes at the offsets they have from the
/// buffer's first page: a span for each piece.
pub(crate) fn bounce_spans(addr: usize, len: usize, pieces: &[Piece]) -> Vec<Span> {
    let in_page = addr % PAGE_SIZE;
    let mut spans = Vec::new();
    // Positions count from the start of the buffer's first page.
    let (mut piece_start, end) = (0usize, in_page + len);
    for (i, p) in pieces.iter().enumerate() {
        let piece_end = piece_start + p.pages * PAGE_SIZE;
        let (from, to) = (in_page.max(piece_start), end.min(piece_end));
        if from < to {
            spans.push(Span { at: from - in_page, piece: i, offset: from - piece_start, len: to - from });
        }
        piece_start = piece_end;
    }
    spans
}

fn no_memory(detail: &'static str) -> HalError {
    HalError::new(HalErrorKind::NoMemory, detail)
}

/// Why no-IOMMU mode has no DMA memory when no hugepage is free.
pub(crate) const NO_IOMMU_HUGEPAGES: &str =
    "VFIO no-IOMMU mode takes DMA memory from 2 MiB hugepages only, and none \
     is free: reserve some with `echo 64 > /proc/sys/vm/nr_hugepages` (as root)";

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

/// The indexes of `n` hugepages whose physical addresses (`phys`, one per
/// hugepage) follow one another, in physical order; `None` when no `n` do.
pub(crate) fn contiguous_run(phys: &[u64], n: usize) -> Option<Vec<usize>> {
    let mut order: Vec<usize> = (0..phys.len()).collect();
    order.sort_by_key(|&i| phys[i]);
    let mut start = 0;
    for k in 0..order.len() {
        if k > start && phys[order[k]] != phys[order[k - 1]] + CHUNK as u64 {
            start = k;
        }
        if k + 1 - start == n {
            return Some(order[start..=k].to_vec());
        }
    }
    None
}

/// `len` bytes of address space aligned to a hugepage, reserved (no access)
/// for hugepages to be moved into.
fn reserve_aligned(len: usize) -> Result<usize, HalError> {
    // SAFETY: a new private anonymous mapping touches no other memory.
    let base = unsafe {
        rustix::mm::mmap_anonymous(
            core::ptr::null_mut(),
            len + CHUNK,
            ProtFlags::empty(),
            MapFlags::PRIVATE | MapFlags::NORESERVE,
        )
    }
    .map_err(|_| no_memory("no address space for DMA memory"))? as usize;
    let dest = base.next_multiple_of(CHUNK);
    // SAFETY: the slack before and after the aligned range is part of the
    // reservation above, which nothing uses.
    unsafe {
        if dest > base {
            let _ = rustix::mm::munmap(base as *mut core::ffi::c_void, dest - base);
        }
        let tail = base + len + CHUNK - (dest + len);
        if tail > 0 {
            let _ = rustix::mm::munmap((dest + len) as *mut core::ffi::c_void, tail);
        }
    }
    Ok(dest)
}

/// Moves hugepages `run` of the window at `window` to `dest` onwards, in
/// that order. How many it moved: all of them, or on error fewer, and then
/// the reservation at `dest` is unmapped (with what was moved there).
fn move_pages(window: usize, run: &[usize], dest: usize) -> (usize, Result<(), HalError>) {
    for (k, &i) in run.iter().enumerate() {
        // SAFETY: the source is a hugepage of the window, the destination a
        // hugepage-sized part of the reservation; nothing refers to either.
        let moved = unsafe {
            rustix::mm::mremap_fixed(
                (window + i * CHUNK) as *mut core::ffi::c_void,
                CHUNK,
                CHUNK,
                rustix::mm::MremapFlags::MAYMOVE,
                (dest + k * CHUNK) as *mut core::ffi::c_void,
            )
        };
        if moved.is_err() {
            // SAFETY: the reservation and what was moved into it are ours
            // (no hole: each move replaced a part of the reservation).
            let _ = unsafe { rustix::mm::munmap(dest as *mut core::ffi::c_void, run.len() * CHUNK) };
            let why =
                "VFIO no-IOMMU mode: mremap of a hugepage failed (allocations above 2 MiB need Linux 5.16)";
            return (k, Err(no_memory(why)));
        }
    }
    (run.len(), Ok(()))
}

impl Dma {
    /// The bookkeeping of a new handle: `no_iommu` for VFIO's no-IOMMU
    /// mode (the space is then unused).
    pub(crate) fn new(space: IovaSpace, avail: Option<u32>, hugepages: bool, no_iommu: bool) -> Self {
        Dma {
            no_iommu,
            bounces: BTreeMap::new(),
            next_bounce: 1,
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
        if self.no_iommu {
            return self.map_chunk_physical(iommu, len);
        }
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

    /// A chunk in no-IOMMU mode: hugepages, which stay where they are in
    /// physical memory (but for hot-unplug, CMA or `move_pages`: see the
    /// crate's docs; ordinary pages can be moved by the kernel at any time,
    /// behind the device's back), physically contiguous, at their physical
    /// address.
    fn map_chunk_physical(&mut self, iommu: &dyn Iommu, len: usize) -> Result<(usize, u64), HalError> {
        if !self.hugepages {
            return Err(no_memory(
                "VFIO no-IOMMU mode takes DMA memory from hugepages only, and VfioOptions turns them off",
            ));
        }
        let huge = len / CHUNK;
        // Hugepages come in the order of the kernel's free list, rarely in
        // physical order. A window of them is mapped (as many as asked for,
        // then more while none lie together), a run of `huge` that is
        // contiguous in physical memory is picked, and moved (`mremap`)
        // into one run of virtual addresses, in physical order (as DPDK
        // does). The rest of the window goes back.
        let mut window = huge;
        loop {
            // SAFETY: a new private anonymous mapping touches no other memory.
            let mapped = unsafe {
                rustix::mm::mmap_anonymous(
                    core::ptr::null_mut(),
                    window * CHUNK,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::PRIVATE | MapFlags::HUGETLB | MapFlags::HUGE_2MB | MapFlags::POPULATE,
                )
            };
            let ptr = match mapped {
                Ok(p) => p as usize,
                Err(_) if window == huge => {
                    self.hugepages_missing = true;
                    return Err(no_memory(NO_IOMMU_HUGEPAGES));
                }
                // Fewer hugepages are free than this window wants.
                Err(_) => break,
            };
            // The window's pages one by one, but for those `moved` out: the
            // hole a page left may already hold another thread's mapping.
            let unmap_window = |moved: &[usize]| {
                for i in (0..window).filter(|i| !moved.contains(i)) {
                    // SAFETY: a hugepage of the window mapped above, which
                    // nothing uses.
                    let _ = unsafe { rustix::mm::munmap((ptr + i * CHUNK) as *mut core::ffi::c_void, CHUNK) };
                }
            };
            let phys: Result<Vec<u64>, HalError> =
                (0..window).map(|i| iommu.physical(ptr + i * CHUNK)).collect();
            let phys = match phys {
                Ok(p) => p,
                Err(e) => {
                    unmap_window(&[]);
                    return Err(e);
                }
            };
            if let Some(run) = contiguous_run(&phys, huge) {
                let vaddr = if run.len() == window && run.windows(2).all(|w| w[1] == w[0] + 1) {
                    // The whole window, in order (one hugepage, say): as it is.
                    ptr
                } else {
                    let (placed, moved) = match reserve_aligned(len) {
                        Ok(dest) => {
                            let (moved, result) = move_pages(ptr, &run, dest);
                            (result.map(|()| dest), moved)
                        }
                        Err(e) => (Err(e), 0),
                    };
                    unmap_window(&run[..moved]);
                    placed?
                };
                // What moved is checked where it landed.
                let landed = (0..huge).all(|k| {
                    iommu.physical(vaddr + k * CHUNK).is_ok_and(|p| p == phys[run[0]] + (k * CHUNK) as u64)
                });
                if !landed {
                    // SAFETY: the run was placed here above and is used by no one.
                    let _ = unsafe { rustix::mm::munmap(vaddr as *mut core::ffi::c_void, len) };
                    return Err(no_memory("VFIO no-IOMMU mode: hugepages moved in physical memory"));
                }
                // SAFETY: advice on memory this back-end just mapped.
                let _ = unsafe {
                    rustix::mm::madvise(
                        vaddr as *mut core::ffi::c_void,
                        len,
                        rustix::mm::Advice::LinuxDontFork,
                    )
                };
                self.huge_chunks += 1;
                return Ok((vaddr, phys[run[0]]));
            }
            unmap_window(&[]);
            if window >= 64 * huge {
                break;
            }
            window *= 2;
        }
        Err(no_memory("VFIO no-IOMMU mode: no free hugepages lie together in physical memory for an allocation above 2 MiB"))
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
        if self.no_iommu {
            return Err(
                "VFIO no-IOMMU mode cannot register memory: the kernel may move ordinary pages behind \
                        the device's back (buffers outside DMA memory are bounced through it instead)"
                    .into(),
            );
        }
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
        if self.no_iommu {
            return Err(HalError::new(
                HalErrorKind::MapFailed,
                "no-IOMMU mode maps nothing: buffers are bounced",
            ));
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

    /// A bounce buffer for `len` bytes at `addr` (no-IOMMU mode): pieces of
    /// DMA memory that hold the buffer's bytes at the same offsets from its
    /// first page (so that the device segments start and end where PRPs
    /// want them), each at most one chunk. Its id, and the pieces; the
    /// caller copies the bytes in, and gives it back with
    /// [`unbounce`](Self::unbounce).
    pub(crate) fn bounce(
        &mut self,
        iommu: &dyn Iommu,
        addr: usize,
        len: usize,
    ) -> Result<(u64, Vec<Piece>), HalError> {
        let end = addr.checked_add(len).ok_or(HalError::new(HalErrorKind::MapFailed, "buffer wraps"))?;
        let mut pages = (end - addr / PAGE_SIZE * PAGE_SIZE).div_ceil(PAGE_SIZE);
        let mut pieces = Vec::new();
        while pages > 0 {
            let n = pages.min(PIECE_PAGES);
            match self.alloc(iommu, n) {
                Ok((vaddr, daddr)) => pieces.push(Piece { vaddr, daddr, pages: n }),
                Err(e) => {
                    for p in pieces {
                        self.free(p.vaddr, p.pages);
                    }
                    return Err(e);
                }
            }
            pages -= n;
        }
        let id = self.next_bounce;
        self.next_bounce += 1;
        self.bounces.insert((addr, len, id), pieces.clone());
        Ok((id, pieces))
    }

    /// The pieces of a bounce buffer of `len` bytes at `addr` (of any one,
    /// where several are: the share contract rules out two in flight that
    /// the device writes).
    pub(crate) fn bounced(&self, addr: usize, len: usize) -> Option<Vec<Piece>> {
        self.bounces.range((addr, len, 0)..=(addr, len, u64::MAX)).next().map(|(_, p)| p.clone())
    }

    /// Gives back the bounce buffer `id` of `len` bytes at `addr`.
    pub(crate) fn unbounce(&mut self, addr: usize, len: usize, id: u64) -> bool {
        let Some(pieces) = self.bounces.remove(&(addr, len, id)) else { return false };
        for p in pieces {
            self.free(p.vaddr, p.pages);
        }
        true
    }

    /// Bounce buffers in use now.
    pub(crate) fn bounce_buffers(&self) -> usize {
        self.bounces.len()
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

        fn physical(&self, _vaddr: usize) -> Result<u64, HalError> {
            Err(HalError::new(HalErrorKind::MapFailed, "the model has an IOMMU"))
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
        Dma::new(IovaSpace::new(&[]), avail, false, false)
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
    fn bounce_spans_cover_the_buffer_at_its_page_offsets() {
        let piece = |pages| Piece { vaddr: 0, daddr: 0, pages };
        // Inside one piece: at the buffer's offset in its first page.
        let spans = bounce_spans(0x10_0064, 3 * PAGE_SIZE + 7, &[piece(4)]);
        assert_eq!(spans, vec![Span { at: 0, piece: 0, offset: 100, len: 3 * PAGE_SIZE + 7 }]);
        // Across two pieces: the second takes over at its first byte.
        let len = PIECE_PAGES * PAGE_SIZE;
        let spans = bounce_spans(300, len, &[piece(PIECE_PAGES), piece(1)]);
        assert_eq!(
            spans,
            vec![
                Span { at: 0, piece: 0, offset: 300, len: len - 300 },
                Span { at: len - 300, piece: 1, offset: 0, len: 300 },
            ]
        );
        // Every length and offset: the spans add up to the buffer, in
        // order, and stay inside their pieces.
        for offset in [0, 1, 511, 4095] {
            for len in [1, 4096, 4097, len - 1, len, 3 * len + 5] {
                let mut pages = (offset + len).div_ceil(PAGE_SIZE);
                let mut pieces = Vec::new();
                while pages > 0 {
                    pieces.push(piece(pages.min(PIECE_PAGES)));
                    pages -= pages.min(PIECE_PAGES);
                }
                let spans = bounce_spans(offset, len, &pieces);
                let mut at = 0;
                for s in &spans {
                    assert_eq!(s.at, at, "offset {offset} len {len}");
                    assert!(s.offset + s.len <= pieces[s.piece].pages * PAGE_SIZE);
                    at += s.len;
                }
                assert_eq!(at, len, "offset {offset} len {len}");
                // Only the first span starts inside a page, only the last
                // ends inside one: what PRPs can describe.
                for s in spans.iter().skip(1) {
                    assert_eq!(s.offset % PAGE_SIZE, 0);
                }
                for s in spans.iter().rev().skip(1) {
                    assert_eq!((s.offset + s.len) % PAGE_SIZE, 0);
                }
            }
        }
    }

    #[test]
    fn contiguous_runs_of_hugepages() {
        let c = CHUNK as u64;
        // The free list's usual order: from the top down.
        assert_eq!(contiguous_run(&[5 * c, 4 * c, 3 * c], 2), Some(vec![2, 1]));
        assert_eq!(contiguous_run(&[5 * c, 4 * c, 3 * c], 3), Some(vec![2, 1, 0]));
        // A gap breaks a run; a later run still counts.
        assert_eq!(contiguous_run(&[9 * c, c, 7 * c, 3 * c, 8 * c], 3), Some(vec![2, 4, 0]));
        assert_eq!(contiguous_run(&[9 * c, c, 7 * c, 3 * c], 2), None);
        assert_eq!(contiguous_run(&[4 * c], 1), Some(vec![0]));
        assert_eq!(contiguous_run(&[], 1), None);
    }

    #[test]
    fn no_iommu_refuses_what_needs_an_iommu() {
        let iommu = Model::default();
        let mut d = Dma::new(IovaSpace::new(&[]), None, false, true);
        // DMA memory only from hugepages, which these options turn off.
        let e = d.alloc(&iommu, 1).unwrap_err();
        assert_eq!(e.kind(), HalErrorKind::NoMemory);
        assert!(e.detail().contains("hugepages only"), "{}", e.detail());
        assert!(d.bounce(&iommu, 0x1000, 16).is_err());
        assert_eq!(d.bounce_buffers(), 0);
        let buf = vec![0u8; 2 * PAGE_SIZE];
        let addr = (buf.as_ptr() as usize).next_multiple_of(PAGE_SIZE);
        // SAFETY: refused before anything is mapped.
        let e = unsafe { d.register(&iommu, addr, PAGE_SIZE) }.unwrap_err();
        assert!(e.contains("no-IOMMU mode cannot register"), "{e}");
        assert!(d.share(&iommu, addr, 16, &mut Segments::default()).is_err());
        assert!(iommu.maps.borrow().is_empty(), "nothing goes to an IOMMU");
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
