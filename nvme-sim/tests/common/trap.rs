//! A HAL decorator that panics on demand, for the tests of what a panicking
//! back-end leaves behind (shared by `review.rs` and `admin_waits.rs`).

use core::cell::Cell;
use core::ptr::NonNull;
use core::time::Duration;
use nvme_nostd::hal_traits::{Direction, DmaRegion, Hal, HalError, SegmentSink};

/// A HAL that panics on the next register read once armed (a back-end
/// failing in the middle of the driver's cleanup), and asks for `ALIGN`-byte
/// DMA alignment (a system without DMA coherence).
pub struct Trap<H, const ALIGN: usize = 4> {
    /// The HAL it forwards to.
    pub inner: H,
    /// Set: the next register read panics.
    pub armed: Cell<bool>,
    /// Counts down on each `share`; panics at 1.
    pub share_countdown: Cell<u32>,
    /// Counts down on each `share`; fails (no memory) at 1.
    pub share_fail_countdown: Cell<u32>,
    /// Counts down on each `sync_for_cpu`; panics at 1.
    pub sync_cpu_countdown: Cell<u32>,
    /// `translate` and `share` calls so far (the calls that hand a buffer
    /// to the device).
    pub handed: Cell<u32>,
}

impl<H> Trap<H> {
    /// Unarmed, 4-byte alignment.
    pub fn new(inner: H) -> Self {
        Trap {
            inner,
            armed: Cell::new(false),
            share_countdown: Cell::new(0),
            share_fail_countdown: Cell::new(0),
            sync_cpu_countdown: Cell::new(0),
            handed: Cell::new(0),
        }
    }
}

/// True on the call where a countdown armed with `n` reaches 1.
pub fn fires(countdown: &Cell<u32>) -> bool {
    match countdown.get() {
        0 => false,
        1 => {
            countdown.set(0);
            true
        }
        n => {
            countdown.set(n - 1);
            false
        }
    }
}

// SAFETY: forwards every call to the inner HAL unchanged, except that a
// register read may panic instead, which returns nothing wrong; a larger DMA
// alignment only makes the driver refuse more buffers.
unsafe impl<H: Hal, const ALIGN: usize> Hal for Trap<H, ALIGN> {
    type Mapping = H::Mapping;
    const DMA_ALIGNMENT: usize = ALIGN;
    fn read32(&self, offset: usize) -> u32 {
        if self.armed.replace(false) {
            panic!("HAL method panics");
        }
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
    fn translate(&self, buffer: NonNull<[u8]>, sink: &mut dyn SegmentSink) -> bool {
        self.handed.set(self.handed.get() + 1);
        self.inner.translate(buffer, sink)
    }
    unsafe fn share(
        &self,
        buffer: NonNull<[u8]>,
        direction: Direction,
        sink: &mut dyn SegmentSink,
    ) -> Result<H::Mapping, HalError> {
        self.handed.set(self.handed.get() + 1);
        if fires(&self.share_countdown) {
            panic!("share panics");
        }
        if fires(&self.share_fail_countdown) {
            return Err(HalError::new(nvme_nostd::hal_traits::HalErrorKind::NoMemory, "trap: share fails"));
        }
        // SAFETY: forwarded.
        unsafe { self.inner.share(buffer, direction, sink) }
    }
    unsafe fn unshare(&self, buffer: NonNull<[u8]>, direction: Direction, mapping: H::Mapping) {
        // SAFETY: forwarded.
        unsafe { self.inner.unshare(buffer, direction, mapping) }
    }
    unsafe fn sync_for_device(&self, buffer: NonNull<[u8]>, direction: Direction) {
        // SAFETY: forwarded.
        unsafe { self.inner.sync_for_device(buffer, direction) }
    }
    unsafe fn sync_for_cpu(&self, buffer: NonNull<[u8]>, direction: Direction) {
        if fires(&self.sync_cpu_countdown) {
            panic!("sync_for_cpu panics");
        }
        // SAFETY: forwarded.
        unsafe { self.inner.sync_for_cpu(buffer, direction) }
    }
    fn barrier_after_phase(&self) {
        self.inner.barrier_after_phase()
    }
    fn ticks(&self) -> u64 {
        self.inner.ticks()
    }
    fn ticks_per_second(&self) -> u64 {
        self.inner.ticks_per_second()
    }
    fn delay(&self, d: Duration) {
        self.inner.delay(d)
    }
}
