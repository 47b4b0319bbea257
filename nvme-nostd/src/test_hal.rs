//! A HAL for unit tests: heap pages as DMA memory (device address = pointer),
//! a register file that records every write, and a clock that advances only
//! when the driver waits.

use core::cell::{Cell, RefCell};
use core::ptr::NonNull;
use core::time::Duration;
use hal_traits::{DeviceAddr, DeviceSegment, Direction, DmaRegion, Hal, HalError, SegmentSink, PAGE_SIZE};
use std::alloc::{alloc_zeroed, dealloc, Layout};

#[derive(Default)]
pub(crate) struct TestHal {
    pub writes: RefCell<Vec<(usize, u32)>>,
    pub live_pages: Cell<usize>,
    now: Cell<Duration>,
}

fn layout(pages: usize) -> Layout {
    Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).unwrap()
}

// SAFETY: allocations are real, zeroed, page-aligned heap memory whose
// "device address" is the pointer itself; nothing but the test reads it.
unsafe impl Hal for TestHal {
    type Mapping = ();
    fn read32(&self, _offset: usize) -> u32 {
        0
    }
    unsafe fn write32(&self, offset: usize, value: u32) {
        self.writes.borrow_mut().push((offset, value));
    }
    fn dma_alloc(&self, pages: usize) -> Result<DmaRegion, HalError> {
        // SAFETY: non-zero size (pages >= 1 in every caller here).
        let p = unsafe { alloc_zeroed(layout(pages)) };
        self.live_pages.set(self.live_pages.get() + pages);
        Ok(DmaRegion { vaddr: NonNull::new(p).unwrap(), daddr: DeviceAddr(p as u64), pages })
    }
    unsafe fn dma_free(&self, region: DmaRegion) {
        self.live_pages.set(self.live_pages.get() - region.pages);
        // SAFETY: allocated above with the same layout.
        unsafe { dealloc(region.vaddr.as_ptr(), layout(region.pages)) }
    }
    unsafe fn share(
        &self,
        buffer: NonNull<[u8]>,
        _d: Direction,
        sink: &mut dyn SegmentSink,
    ) -> Result<(), HalError> {
        sink.push(DeviceSegment { addr: DeviceAddr(buffer.cast::<u8>().as_ptr() as u64), len: buffer.len() });
        Ok(())
    }
    unsafe fn unshare(&self, _b: NonNull<[u8]>, _d: Direction, _m: ()) {}
    fn ticks(&self) -> u64 {
        self.now.get().as_nanos() as u64
    }
    fn ticks_per_second(&self) -> u64 {
        1_000_000_000
    }
    fn delay(&self, d: Duration) {
        self.now.set(self.now.get() + d);
    }
}
