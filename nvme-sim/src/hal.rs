//! The [`Hal`] the driver sees: registers of the simulated controller, the DMA
//! arena, and virtual time.

use crate::device::cmb::{CMB_BAR, CMB_BUS_ADDRESS};
use crate::device::State;
pub use crate::memory::Mapping;
use core::ptr::NonNull;
use core::time::Duration;
use hal_traits::{
    DeviceAddr, DeviceSegment, Direction, DmaRegion, Hal, HalError, MemoryBar, MmioRegion, SegmentSink,
    PAGE_SIZE,
};
use std::sync::{Arc, Mutex, MutexGuard};

/// The one handle through which a driver drives a simulated controller; get
/// it from [`Sim::hal`](crate::Sim::hal).
///
/// It stands for exclusive use of the device, as the [`Hal`] contract asks:
/// it is not `Clone`, and the simulator hands out one at a time (a second
/// [`Sim::try_hal`](crate::Sim::try_hal) while one lives returns `None`), so
/// two driver instances can never drive one simulated controller. Dropping it
/// (with the controller that owns it) releases the claim.
///
/// ```compile_fail
/// // A SimHal cannot be duplicated: no second driver on the same device.
/// fn second(hal: &nvme_sim::SimHal) -> nvme_sim::SimHal {
///     hal.clone()
/// }
/// ```
///
/// Time: `Hal::ticks` are virtual nanoseconds; each call moves virtual time on
/// by [`SimConfig::now_tick`](crate::SimConfig::now_tick) first (1 µs by
/// default), so that a host busy-polling against a deadline sees the device
/// make progress. `Hal::delay(d)` is [`Sim::advance(d)`](crate::Sim::advance).
/// With [`SimConfig::auto_advance`](crate::SimConfig::auto_advance) (the
/// default), every register access also moves time on by the command latency,
/// so a command submitted with a doorbell write has completed by the next
/// poll even when the driver never reads the clock.
///
/// # Threads
///
/// `SimHal` is `Send + Sync`, so one `Controller<SimHal>` can be shared by
/// reference between threads, each with its own queue pairs. The whole
/// simulated controller sits behind one [`Mutex`]: every register access,
/// allocation, share and clock read takes it, and the device does its work
/// (fetching commands, moving data, posting completions) inside that call,
/// under the lock, in whichever thread made it. So the device may post a
/// completion for one thread's queue while another thread's doorbell write or
/// `Sim::advance` runs, as a real device writes completions whenever it likes.
///
/// That is real DMA, and in one place it is also a data race in Rust's memory
/// model: the driver reads its completion queues (and the phase tag) with
/// volatile reads of DMA memory *without* the simulator's lock, while the
/// device may be writing another entry of the same ring under the lock in
/// another thread. Volatile accesses are not atomic, so two threads touching
/// the same bytes without synchronisation is undefined behaviour to the
/// abstract machine, although on the hardware this runs on it is exactly
/// what a device does to a coherent DMA ring. Threaded tests are therefore
/// not for Miri (run them natively); single-threaded tests have no such race,
/// since there the device only writes during the host's own calls.
/// Everything else the device and the driver share is ordered by the lock:
/// submission entries and PRP lists are written before the doorbell write
/// that takes it, and caller buffers are copied to and from bounce pages
/// inside `share` and `sync_for_cpu`.
pub struct SimHal {
    pub(crate) state: Arc<Mutex<State>>,
}

impl SimHal {
    /// The simulator this handle belongs to.
    pub fn sim(&self) -> crate::Sim {
        crate::Sim { state: self.state.clone() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock(&self.state)
    }
}

impl Drop for SimHal {
    fn drop(&mut self) {
        self.lock().claimed = false;
    }
}

impl core::fmt::Debug for SimHal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SimHal")
    }
}

// SAFETY: `dma_alloc` hands out pages of one live heap allocation (the arena),
// zeroed, page-aligned, contiguous, each page to one owner until `dma_free`;
// the arena lives as long as any `Sim` or `SimHal` handle (the `Arc`), so every
// `vaddr` stays valid for as long as the driver holds this HAL (the simulated
// device dies with the arena, so memory leaked by the driver cannot be written
// after it). The device address of a page is `IOVA_BASE + offset`, and the
// simulated device reaches the arena only through those addresses after
// checking that they lie in pages currently handed out; it touches nothing
// else. `share` reports bounce pages of the same arena that hold a copy of the
// caller's bytes (copied back by `unshare`), page by page in buffer order, as
// the contract allows; `translate` answers only for buffers inside pages that
// `dma_alloc` handed out, whose device addresses are fixed while allocated.
// One handle exists at a time (the claim in `State`). Registers are plain
// state behind the `Mutex`, and each method is one locked step, so calls from
// several threads (the driver's queue pairs on their own threads, `SimHal` is
// `Sync`) are serialised like accesses to one device.
unsafe impl Hal for SimHal {
    type Mapping = Mapping;

    fn read32(&self, offset: usize) -> u32 {
        self.lock().read32(offset)
    }

    unsafe fn write32(&self, offset: usize, value: u32) {
        self.lock().write32(offset, value)
    }

    fn read64(&self, offset: usize) -> u64 {
        self.lock().read64(offset)
    }

    unsafe fn write64(&self, offset: usize, value: u64) {
        self.lock().write64(offset, value)
    }

    fn memory_bar(&self, index: u8) -> Option<MemoryBar> {
        let state = self.lock();
        let (base, len) = state.cmb.as_ref().filter(|_| index == CMB_BAR)?.mapping();
        // SAFETY: the CMB's allocation lives as long as the state this handle
        // keeps alive, and nothing holds a Rust reference into it.
        let mmio = unsafe { MmioRegion::new(base, len) };
        Some(MemoryBar { mmio, bus: DeviceAddr(CMB_BUS_ADDRESS) })
    }

    fn dma_alloc(&self, pages: usize) -> Result<DmaRegion, HalError> {
        self.lock().mem.dma_alloc(pages)
    }

    unsafe fn dma_free(&self, region: DmaRegion) {
        let mut state = self.lock();
        state.check_released(region.daddr.0..region.daddr.0 + (region.pages * PAGE_SIZE) as u64);
        state.mem.dma_free(region)
    }

    fn translate(&self, buffer: NonNull<[u8]>, sink: &mut dyn SegmentSink) -> bool {
        let found = self.lock().translate(buffer);
        match found {
            Some(addr) => {
                sink.push(DeviceSegment { addr, len: buffer.len() });
                true
            }
            None => false,
        }
    }

    unsafe fn share(
        &self,
        buffer: NonNull<[u8]>,
        direction: Direction,
        sink: &mut dyn SegmentSink,
    ) -> Result<Mapping, HalError> {
        let mut state = self.lock();
        let scatter = state.cfg.scatter_shares;
        // SAFETY: the caller guarantees `buffer` is valid until `unshare`.
        unsafe { state.mem.share(buffer, direction, scatter, sink) }
    }

    unsafe fn unshare(&self, buffer: NonNull<[u8]>, direction: Direction, mapping: Mapping) {
        let mut state = self.lock();
        state.check_synced(buffer);
        state.check_released(mapping.span());
        state.mem.unshare(buffer, direction, mapping)
    }

    unsafe fn sync_for_device(&self, buffer: NonNull<[u8]>, direction: Direction) {
        self.lock().sync_for_device(buffer, direction)
    }

    unsafe fn sync_for_cpu(&self, buffer: NonNull<[u8]>, direction: Direction) {
        // SAFETY: the caller guarantees the buffer is valid and the device is
        // done with it (`Hal::sync_for_cpu`'s contract).
        unsafe { self.lock().sync_for_cpu(buffer, direction) }
    }

    fn barrier_after_phase(&self) {
        // A babbling device posts the next entry while the host reads this
        // one (see `Sim::babble`).
        self.lock().babble_step();
        hal_traits::barrier::after_phase()
    }

    fn ticks(&self) -> u64 {
        let now = self.lock().tick();
        u64::try_from(now.as_nanos()).unwrap_or(u64::MAX)
    }

    fn ticks_per_second(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> Duration {
        self.lock().tick()
    }

    fn delay(&self, duration: Duration) {
        self.lock().advance(duration)
    }
}

impl SimHal {
    /// Writes a register, for tests that drive the registers by hand.
    ///
    /// # Safety
    ///
    /// As for [`Hal::write32`]: the simulated device checks that every
    /// address a write makes it use lies in memory handed out by the arena,
    /// but not whose that memory is, so a doorbell can make it replay a
    /// stale command into a buffer its owner holds again.
    pub unsafe fn write_reg32(&self, offset: usize, value: u32) {
        self.lock().write32(offset, value)
    }

    /// Writes a 64-bit register; see [`SimHal::write_reg32`].
    ///
    /// # Safety
    ///
    /// As for [`SimHal::write_reg32`].
    pub unsafe fn write_reg64(&self, offset: usize, value: u64) {
        self.lock().write64(offset, value)
    }
}
