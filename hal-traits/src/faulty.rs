//! [`FaultyHal`]: a decorator that makes any [`Hal`] fail on demand, so that
//! the driver's answers to back-end failures are tested on every back-end
//! (QEMU's controller included), not only on a simulator.

use crate::{Direction, DmaRegion, Hal, HalError, HalErrorKind, MemoryBar, SegmentSink};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use core::time::Duration;

/// A countdown: lets `skip` calls through, then fails the next `count`.
#[derive(Debug, Default)]
struct Trigger {
    skip: AtomicU32,
    count: AtomicU32,
    fired: AtomicU64,
}

impl Trigger {
    fn arm(&self, skip: u32, count: u32) {
        self.skip.store(skip, Ordering::Relaxed);
        self.count.store(count, Ordering::Relaxed);
    }

    /// True when this call must fail.
    fn fire(&self) -> bool {
        if self.skip.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| s.checked_sub(1)).is_ok() {
            return false;
        }
        let fire =
            self.count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1)).is_ok();
        if fire {
            self.fired.fetch_add(1, Ordering::Relaxed);
        }
        fire
    }
}

/// Counts of the faults a [`FaultyHal`] injected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultCounts {
    /// `dma_alloc` calls failed with [`HalErrorKind::NoMemory`].
    pub allocs: u64,
    /// `share` calls failed with [`HalErrorKind::MapFailed`].
    pub shares: u64,
}

/// Wraps a [`Hal`] and fails allocations or shares, or makes the registers
/// read all ones (a removed device), when told to.
///
/// Everything else is forwarded to the inner HAL, which keeps its own
/// guarantees; the decorator only ever fails calls (before they reach the
/// inner HAL) or hides the device, so it cannot break the inner HAL's
/// contract. It owns the inner HAL, so exclusive ownership carries over.
///
/// ```ignore
/// let ctrlr = Controller::new(FaultyHal::new(hal), options)?;
/// ctrlr.hal().fail_allocs(0, 1); // the next dma_alloc fails
/// assert!(ctrlr.create_io_qpair::<_, (), 8>(QpairOptions::default()).is_err());
/// ```
#[derive(Debug)]
pub struct FaultyHal<H> {
    inner: H,
    alloc: Trigger,
    share: Trigger,
    gone: AtomicBool,
    no_translate: AtomicBool,
    live_pages: AtomicU64,
}

impl<H: Hal> FaultyHal<H> {
    /// A decorator that injects nothing until told to.
    pub fn new(inner: H) -> Self {
        FaultyHal {
            inner,
            alloc: Trigger::default(),
            share: Trigger::default(),
            gone: AtomicBool::new(false),
            no_translate: AtomicBool::new(false),
            live_pages: AtomicU64::new(0),
        }
    }

    /// The wrapped HAL.
    pub fn inner(&self) -> &H {
        &self.inner
    }

    /// Lets `skip` calls of `dma_alloc` through, then fails the next `count`.
    pub fn fail_allocs(&self, skip: u32, count: u32) {
        self.alloc.arm(skip, count);
    }

    /// Lets `skip` calls of `share` through, then fails the next `count`.
    pub fn fail_shares(&self, skip: u32, count: u32) {
        self.share.arm(skip, count);
    }

    /// While `gone`, register reads return all ones and writes are dropped,
    /// as for a device that was surprise-removed.
    pub fn set_gone(&self, gone: bool) {
        self.gone.store(gone, Ordering::Release);
    }

    /// While `off`, [`Hal::translate`] finds no buffer, so every buffer goes
    /// through [`Hal::share`] (to test the share path on a back-end that can
    /// translate everything, such as an identity-mapped kernel).
    pub fn set_translate_off(&self, off: bool) {
        self.no_translate.store(off, Ordering::Release);
    }

    /// Pages allocated through this decorator and not freed through it: a
    /// leak check that works on any back-end.
    pub fn live_pages(&self) -> u64 {
        self.live_pages.load(Ordering::Relaxed)
    }

    /// The faults injected so far.
    pub fn faults(&self) -> FaultCounts {
        FaultCounts {
            allocs: self.alloc.fired.load(Ordering::Relaxed),
            shares: self.share.fired.load(Ordering::Relaxed),
        }
    }

    fn gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }
}

// SAFETY: every call is forwarded unchanged to the inner HAL, whose
// implementation keeps the contract, except that calls may fail before they
// reach it (an allocation or share that fails hands out nothing) and register
// accesses may be hidden (reads all ones, writes dropped), which the contract
// allows for a device that is gone. Ownership of the inner HAL is exclusive.
unsafe impl<H: Hal> Hal for FaultyHal<H> {
    type Mapping = H::Mapping;
    const DMA_ALIGNMENT: usize = H::DMA_ALIGNMENT;

    fn read32(&self, offset: usize) -> u32 {
        if self.gone() {
            return u32::MAX;
        }
        self.inner.read32(offset)
    }

    unsafe fn write32(&self, offset: usize, value: u32) {
        if !self.gone() {
            // SAFETY: forwarded from the caller.
            unsafe { self.inner.write32(offset, value) }
        }
    }

    fn read64(&self, offset: usize) -> u64 {
        if self.gone() {
            return u64::MAX;
        }
        self.inner.read64(offset)
    }

    unsafe fn write64(&self, offset: usize, value: u64) {
        if !self.gone() {
            // SAFETY: forwarded from the caller.
            unsafe { self.inner.write64(offset, value) }
        }
    }

    fn memory_bar(&self, index: u8) -> Option<MemoryBar> {
        self.inner.memory_bar(index)
    }

    fn dma_alloc(&self, pages: usize) -> Result<DmaRegion, HalError> {
        if self.alloc.fire() {
            return Err(HalError::new(HalErrorKind::NoMemory, "injected by FaultyHal"));
        }
        let region = self.inner.dma_alloc(pages)?;
        self.live_pages.fetch_add(region.pages as u64, Ordering::Relaxed);
        Ok(region)
    }

    unsafe fn dma_free(&self, region: DmaRegion) {
        self.live_pages.fetch_sub(region.pages as u64, Ordering::Relaxed);
        // SAFETY: forwarded from the caller; the region came from the inner
        // HAL (failed allocations hand out nothing).
        unsafe { self.inner.dma_free(region) }
    }

    fn translate(&self, buffer: NonNull<[u8]>, sink: &mut dyn SegmentSink) -> bool {
        !self.no_translate.load(Ordering::Acquire) && self.inner.translate(buffer, sink)
    }

    unsafe fn share(
        &self,
        buffer: NonNull<[u8]>,
        direction: Direction,
        sink: &mut dyn SegmentSink,
    ) -> Result<H::Mapping, HalError> {
        if self.share.fire() {
            return Err(HalError::new(HalErrorKind::MapFailed, "injected by FaultyHal"));
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.inner.share(buffer, direction, sink) }
    }

    unsafe fn unshare(&self, buffer: NonNull<[u8]>, direction: Direction, mapping: H::Mapping) {
        // SAFETY: forwarded from the caller; the mapping came from the inner
        // HAL's share.
        unsafe { self.inner.unshare(buffer, direction, mapping) }
    }

    unsafe fn sync_for_device(&self, buffer: NonNull<[u8]>, direction: Direction) {
        // SAFETY: forwarded from the caller.
        unsafe { self.inner.sync_for_device(buffer, direction) }
    }

    unsafe fn sync_for_cpu(&self, buffer: NonNull<[u8]>, direction: Direction) {
        // SAFETY: forwarded from the caller.
        unsafe { self.inner.sync_for_cpu(buffer, direction) }
    }

    fn barrier_before_doorbell(&self) {
        self.inner.barrier_before_doorbell()
    }

    fn barrier_after_phase(&self) {
        self.inner.barrier_after_phase()
    }

    fn barrier_full(&self) {
        self.inner.barrier_full()
    }

    fn ticks(&self) -> u64 {
        self.inner.ticks()
    }

    fn ticks_per_second(&self) -> u64 {
        self.inner.ticks_per_second()
    }

    fn now(&self) -> Duration {
        self.inner.now()
    }

    fn delay(&self, duration: Duration) {
        self.inner.delay(duration)
    }
}

/// A [`PciBus`](crate::pci::PciBus) whose HALs are [`FaultyHal`]s: probing
/// through it attaches controllers whose back-end can be made to fail.
#[derive(Debug)]
pub struct FaultyBus<B>(pub B);

impl<B: crate::pci::PciBus> crate::pci::PciBus for FaultyBus<B> {
    type Hal = FaultyHal<B::Hal>;

    fn nvme_function(&self, index: usize) -> Option<crate::pci::PciFunction> {
        self.0.nvme_function(index)
    }

    fn open(&mut self, function: &crate::pci::PciFunction) -> Result<Self::Hal, HalError> {
        self.0.open(function).map(FaultyHal::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceAddr;

    /// A device address never handed out.
    const NOWHERE: DeviceAddr = DeviceAddr(0);

    /// A HAL with no device: registers read 7, one static page of "DMA".
    struct Null;

    // SAFETY: never hands out memory (allocations and shares fail), so no
    // address it returns can be wrong.
    unsafe impl Hal for Null {
        type Mapping = ();
        fn read32(&self, _: usize) -> u32 {
            7
        }
        unsafe fn write32(&self, _: usize, _: u32) {}
        fn dma_alloc(&self, _: usize) -> Result<DmaRegion, HalError> {
            Err(HalError::new(HalErrorKind::Unsupported, "null"))
        }
        unsafe fn dma_free(&self, _: DmaRegion) {}
        unsafe fn share(
            &self,
            b: NonNull<[u8]>,
            _: Direction,
            sink: &mut dyn SegmentSink,
        ) -> Result<(), HalError> {
            sink.push(crate::DeviceSegment { addr: NOWHERE, len: b.len() });
            Ok(())
        }
        unsafe fn unshare(&self, _: NonNull<[u8]>, _: Direction, _: ()) {}
        fn ticks(&self) -> u64 {
            0
        }
        fn ticks_per_second(&self) -> u64 {
            1
        }
        fn delay(&self, _: Duration) {}
    }

    struct Count(usize);
    impl SegmentSink for Count {
        fn push(&mut self, _: crate::DeviceSegment) {
            self.0 += 1;
        }
    }

    #[test]
    fn triggers_skip_then_fail_then_pass() {
        let hal = FaultyHal::new(Null);
        let mut byte = [0u8; 4];
        let buf = NonNull::from(&mut byte[..]);
        hal.fail_shares(1, 2);
        let mut sink = Count(0);
        let results: [bool; 4] = core::array::from_fn(|_| {
            // SAFETY: the buffer lives across the call; Null keeps nothing.
            unsafe { hal.share(buf, Direction::ToDevice, &mut sink) }.is_ok()
        });
        assert_eq!(results, [true, false, false, true]);
        assert_eq!(sink.0, 2, "failed shares never reach the inner HAL");
        assert_eq!(hal.faults().shares, 2);
        hal.set_gone(true);
        assert_eq!(hal.read32(0), u32::MAX);
        assert_eq!(hal.read64(0), u64::MAX);
        hal.set_gone(false);
        assert_eq!(hal.read32(0), 7);
        hal.fail_allocs(0, 1);
        assert_eq!(hal.dma_alloc(1).unwrap_err().kind(), HalErrorKind::NoMemory);
        assert_eq!(hal.dma_alloc(1).unwrap_err().kind(), HalErrorKind::Unsupported, "inner answer again");
    }
}
