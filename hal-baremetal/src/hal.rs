//! The [`Hal`] for one NVMe controller on bare metal.

use crate::clock::TscClock;
use crate::dma::DmaPool;
use core::ptr::NonNull;
use core::time::Duration;
use hal_traits::{DeviceAddr, Direction, DmaRegion, Hal, HalError, HalErrorKind, MmioRegion};

/// One controller's registers, plus the shared DMA pool and clock.
///
/// Caller buffers are shared by address translation: the device reaches
/// virtual address `v` at physical address `v - phys_offset`, which holds when
/// the kernel maps memory linearly (identity mapping: offset 0).
#[derive(Clone, Copy)]
pub struct BareMetalHal {
    bar0: MmioRegion,
    pool: &'static DmaPool,
    clock: &'static TscClock,
    phys_offset: usize,
}

impl BareMetalHal {
    /// A HAL for the controller whose BAR0 is mapped at `bar0`.
    ///
    /// # Safety
    ///
    /// Every buffer the driver is given lies in memory mapped linearly at
    /// `phys_offset` (virtual = physical + `phys_offset`), so a contiguous
    /// virtual range is a contiguous physical one, and there is no IOMMU
    /// between the device and memory.
    pub unsafe fn new(
        bar0: MmioRegion,
        pool: &'static DmaPool,
        clock: &'static TscClock,
        phys_offset: usize,
    ) -> Self {
        BareMetalHal { bar0, pool, clock, phys_offset }
    }
}

// SAFETY: registers go to the mapped BAR0 through `MmioRegion`; DMA regions come
// from a pool whose region its creator vouched for; shared buffers translate
// through the linear mapping that `new`'s caller vouched for.
unsafe impl Hal for BareMetalHal {
    fn read32(&self, offset: usize) -> u32 {
        self.bar0.read32(offset)
    }

    unsafe fn write32(&self, offset: usize, value: u32) {
        // SAFETY: forwarded from the caller.
        unsafe { self.bar0.write32(offset, value) }
    }

    fn read64(&self, offset: usize) -> u64 {
        self.bar0.read64(offset)
    }

    unsafe fn write64(&self, offset: usize, value: u64) {
        // SAFETY: forwarded from the caller.
        unsafe { self.bar0.write64(offset, value) }
    }

    fn dma_alloc(&self, pages: usize) -> Result<DmaRegion, HalError> {
        self.pool.alloc(pages)
    }

    unsafe fn dma_free(&self, region: DmaRegion) {
        self.pool.free(region)
    }

    unsafe fn share(
        &self,
        vaddr: NonNull<u8>,
        _len: usize,
        _direction: Direction,
    ) -> Result<DeviceAddr, HalError> {
        let v = vaddr.as_ptr() as usize;
        match v.checked_sub(self.phys_offset) {
            Some(p) => Ok(DeviceAddr(p as u64)),
            None => Err(HalError::new(HalErrorKind::MapFailed, "buffer below the linear map")),
        }
    }

    unsafe fn unshare(&self, _vaddr: NonNull<u8>, _len: usize, _daddr: DeviceAddr, _direction: Direction) {
        // Nothing to undo: x86 DMA is cache coherent and no mapping was made.
    }

    fn now(&self) -> Duration {
        self.clock.now()
    }

    fn delay(&self, duration: Duration) {
        self.clock.delay(duration)
    }
}
