//! The [`Hal`] the driver sees: registers of the simulated controller, the DMA
//! arena, and virtual time.

use crate::device::State;
use core::ptr::NonNull;
use core::time::Duration;
use hal_traits::{DeviceAddr, Direction, DmaRegion, Hal, HalError};
use std::cell::RefCell;
use std::rc::Rc;

/// A handle to a simulated controller that implements [`Hal`]; cheap to clone,
/// all clones drive the same controller. Get one from [`Sim::hal`](crate::Sim::hal).
///
/// `Hal::now` moves virtual time on by [`SimConfig::now_tick`](crate::SimConfig::now_tick)
/// (1 µs by default) before reading it, so that a host busy-polling against a
/// `now()` deadline sees the device make progress; `Hal::delay(d)` is
/// [`Sim::advance(d)`](crate::Sim::advance).
#[derive(Clone)]
pub struct SimHal {
    pub(crate) state: Rc<RefCell<State>>,
}

impl SimHal {
    /// The simulator this handle belongs to.
    pub fn sim(&self) -> crate::Sim {
        crate::Sim { state: self.state.clone() }
    }
}

impl core::fmt::Debug for SimHal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SimHal")
    }
}

// SAFETY: `dma_alloc` hands out pages of one live heap allocation (the arena),
// zeroed, page-aligned, contiguous, each page to one owner until `dma_free`;
// the arena lives as long as any `Sim` or `SimHal` handle (the `Rc`), so every
// `vaddr` stays valid for as long as the driver holds this HAL. The device
// address of a page is `IOVA_BASE + offset`, and the simulated device reaches
// the arena only through those addresses after checking that they lie in
// pages currently handed out; it touches nothing else. `share` returns bounce
// pages of the same arena that hold a copy of the caller's bytes (copied back
// by `unshare`), so the address reaches "a bounce copy of these bytes" as the
// contract allows. Registers are plain state behind the `RefCell`.
unsafe impl Hal for SimHal {
    fn read32(&self, offset: usize) -> u32 {
        self.state.borrow_mut().read32(offset)
    }

    unsafe fn write32(&self, offset: usize, value: u32) {
        self.state.borrow_mut().write32(offset, value)
    }

    fn read64(&self, offset: usize) -> u64 {
        self.state.borrow_mut().read64(offset)
    }

    unsafe fn write64(&self, offset: usize, value: u64) {
        self.state.borrow_mut().write64(offset, value)
    }

    fn dma_alloc(&self, pages: usize) -> Result<DmaRegion, HalError> {
        self.state.borrow_mut().mem.dma_alloc(pages)
    }

    unsafe fn dma_free(&self, region: DmaRegion) {
        self.state.borrow_mut().mem.dma_free(region)
    }

    unsafe fn share(
        &self,
        vaddr: NonNull<u8>,
        len: usize,
        direction: Direction,
    ) -> Result<DeviceAddr, HalError> {
        // SAFETY: the caller guarantees `vaddr` is valid for reads and writes
        // of `len` bytes until `unshare`.
        unsafe { self.state.borrow_mut().mem.share(vaddr, len, direction) }
    }

    unsafe fn unshare(&self, vaddr: NonNull<u8>, len: usize, daddr: DeviceAddr, direction: Direction) {
        // SAFETY: the caller passes the arguments of an earlier `share`, whose
        // contract keeps `vaddr` valid for `len` bytes until now; arguments
        // matching no live share are only counted.
        unsafe { self.state.borrow_mut().mem.unshare(vaddr, len, daddr, direction) }
    }

    fn now(&self) -> Duration {
        self.state.borrow_mut().tick()
    }

    fn delay(&self, duration: Duration) {
        self.state.borrow_mut().advance(duration)
    }
}

impl SimHal {
    /// Writes a register. Safe here, unlike [`Hal::write32`]: the simulated
    /// device checks every address a write makes it use, so no value can
    /// corrupt memory. For tests that drive the registers by hand.
    pub fn write_reg32(&self, offset: usize, value: u32) {
        self.state.borrow_mut().write32(offset, value)
    }

    /// Writes a 64-bit register; see [`SimHal::write_reg32`].
    pub fn write_reg64(&self, offset: usize, value: u64) {
        self.state.borrow_mut().write64(offset, value)
    }
}
