//! The [`Hal`] for one NVMe controller on bare metal.

use crate::claim::Claim;
use crate::clock::TscClock;
use crate::dma::DmaPool;
use core::ptr::NonNull;
use core::time::Duration;
use hal_traits::{
    DeviceAddr, DeviceSegment, Direction, DmaRegion, Hal, HalError, HalErrorKind, MemoryBar, MmioRegion,
    SegmentSink,
};

/// A range of virtual memory mapped linearly onto physical memory: virtual
/// address `virt_start + k` is physical address `phys_start + k` for every
/// `k < len`. An identity map is `virt_start == phys_start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearMap {
    /// The first virtual address of the range.
    pub virt_start: usize,
    /// The physical address it maps to.
    pub phys_start: u64,
    /// Length in bytes.
    pub len: usize,
}

impl LinearMap {
    /// The physical address of `len` bytes at virtual address `virt`, when
    /// all of them lie in the map.
    pub fn translate(&self, virt: usize, len: usize) -> Option<u64> {
        let offset = virt.checked_sub(self.virt_start)?;
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        self.phys_start.checked_add(offset as u64)
    }

    /// The virtual address of `len` bytes at physical address `phys`, when
    /// all of them lie in the map.
    pub fn virt_of(&self, phys: u64, len: usize) -> Option<usize> {
        let offset = usize::try_from(phys.checked_sub(self.phys_start)?).ok()?;
        if offset.checked_add(len)? > self.len {
            return None;
        }
        self.virt_start.checked_add(offset)
    }
}

/// One controller's registers, plus the shared DMA pool and clock.
///
/// Caller buffers reach the device through the kernel's linear map: a buffer
/// inside it is contiguous in physical memory, so it is one device segment;
/// a buffer outside it is refused with [`HalErrorKind::MapFailed`], never
/// given a wrong address. DMA is cache coherent on x86_64, so the sync hooks
/// and barriers keep their defaults (no cache maintenance, compiler fences).
///
/// It owns the [`Claim`] of its PCI function, so it is neither `Clone` nor
/// `Copy`, and no second value can drive the same controller while it lives.
///
/// ```compile_fail
/// fn second(hal: &hal_baremetal::BareMetalHal) -> hal_baremetal::BareMetalHal {
///     hal.clone()
/// }
/// ```
pub struct BareMetalHal {
    bar0: MmioRegion,
    /// Memory BARs other than BAR0 that the kernel maps (the CMB's).
    bars: [Option<MemoryBar>; 6],
    pool: &'static DmaPool,
    clock: &'static TscClock,
    map: LinearMap,
    _claim: Claim,
}

impl BareMetalHal {
    /// A HAL for the controller whose function `claim` names and whose BAR0
    /// is mapped at `bar0`.
    ///
    /// # Safety
    ///
    /// `bar0` is that function's BAR0, mapped uncached; `map` describes a
    /// linear mapping the kernel keeps for as long as the HAL (and memory the
    /// driver leaks) lives; there is no IOMMU between the device and memory
    /// (or it maps physical addresses one to one).
    pub unsafe fn new(
        claim: Claim,
        bar0: MmioRegion,
        pool: &'static DmaPool,
        clock: &'static TscClock,
        map: LinearMap,
    ) -> Self {
        BareMetalHal { bar0, bars: [None; 6], pool, clock, map, _claim: claim }
    }

    /// Offers memory BAR `index` (1 to 5) to the driver, which may put
    /// queues in the controller memory buffer there ([`Hal::memory_bar`]).
    ///
    /// # Safety
    ///
    /// `bar.mmio` maps exactly that BAR of this HAL's function, uncached, for
    /// as long as the HAL lives; `bar.bus` is the BAR's assigned address,
    /// outside the memory the linear map and the DMA pool hand the device;
    /// nothing else writes the BAR.
    pub unsafe fn with_memory_bar(mut self, index: u8, bar: MemoryBar) -> Self {
        if let Some(slot) = self.bars.get_mut(index as usize).filter(|_| index != 0) {
            *slot = Some(bar);
        }
        self
    }

    /// The DMA pool the HAL allocates from.
    pub fn pool(&self) -> &'static DmaPool {
        self.pool
    }

    /// Reports `buffer` as one segment when it lies in the linear map.
    fn segment(&self, buffer: NonNull<[u8]>) -> Option<DeviceSegment> {
        let virt = buffer.cast::<u8>().as_ptr() as usize;
        let phys = self.map.translate(virt, buffer.len())?;
        Some(DeviceSegment { addr: DeviceAddr(phys), len: buffer.len() })
    }
}

// SAFETY: registers go to the mapped BAR0 through `MmioRegion`; DMA regions come
// from a pool whose region its creator vouched for and that lives for the
// whole program (`&'static`), so memory the driver leaks stays reserved and
// valid after this value is dropped; shared buffers translate through the
// linear mapping that `new`'s caller vouched for, checked against its bounds.
// The claim makes this the only HAL of its controller. x86_64 DMA is coherent
// and its stores and loads are ordered as the default barriers assume.
unsafe impl Hal for BareMetalHal {
    type Mapping = ();

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

    fn memory_bar(&self, index: u8) -> Option<MemoryBar> {
        *self.bars.get(index as usize)?
    }

    fn dma_alloc(&self, pages: usize) -> Result<DmaRegion, HalError> {
        self.pool.alloc(pages)
    }

    unsafe fn dma_free(&self, region: DmaRegion) {
        // SAFETY: forwarded from the caller: the region came from this pool
        // and the device no longer uses it.
        unsafe { self.pool.free(region) }
    }

    fn translate(&self, buffer: NonNull<[u8]>, sink: &mut dyn SegmentSink) -> bool {
        // Everything in the linear map is device-visible already: nothing to
        // set up per I/O and nothing to undo.
        match self.segment(buffer) {
            Some(segment) => {
                sink.push(segment);
                true
            }
            None => false,
        }
    }

    unsafe fn share(
        &self,
        buffer: NonNull<[u8]>,
        _direction: Direction,
        sink: &mut dyn SegmentSink,
    ) -> Result<(), HalError> {
        let segment = self
            .segment(buffer)
            .ok_or(HalError::new(HalErrorKind::MapFailed, "buffer outside the kernel's linear map"))?;
        sink.push(segment);
        Ok(())
    }

    unsafe fn unshare(&self, _buffer: NonNull<[u8]>, _direction: Direction, _mapping: ()) {
        // Nothing to undo: no mapping was made.
    }

    fn ticks(&self) -> u64 {
        self.clock.ticks()
    }

    fn ticks_per_second(&self) -> u64 {
        self.clock.ticks_per_second()
    }

    fn delay(&self, duration: Duration) {
        self.clock.delay(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claim::claim;
    use pci_types::PciAddress;

    /// Collects the segments a HAL reports.
    #[derive(Default)]
    struct Segments(Vec<DeviceSegment>);

    impl SegmentSink for Segments {
        fn push(&mut self, segment: DeviceSegment) {
            self.0.push(segment);
        }
    }

    /// A HAL whose linear map covers `mapped` at made-up physical address
    /// `phys`. Its registers are the caller's array, never accessed; its pool
    /// is empty and its clock made up: only the map matters here.
    ///
    /// Tests run in parallel: each passes its own `device` on bus 0x7d, a bus
    /// no other test claims on, so the claim cannot be refused.
    fn hal_over(device: u8, mapped: &[u8], phys: u64, registers: &mut [u32; 64]) -> BareMetalHal {
        let claim = claim(PciAddress::new(0, 0x7d, device, 0)).expect("unclaimed");
        // SAFETY: the array outlives the HAL (the tests drop the HAL first),
        // and no register is accessed.
        let bar0 = unsafe { MmioRegion::new(NonNull::from(registers).cast(), 256) };
        let pool: &'static DmaPool = Box::leak(Box::new(DmaPool::empty()));
        let clock: &'static TscClock = Box::leak(Box::new(TscClock::from_rate(1_000_000)));
        let map = LinearMap { virt_start: mapped.as_ptr() as usize, phys_start: phys, len: mapped.len() };
        // SAFETY: `bar0` is never accessed; the map describes no real mapping,
        // but the HAL only computes addresses from it and no device exists to
        // use them.
        unsafe { BareMetalHal::new(claim, bar0, pool, clock, map) }
    }

    #[test]
    fn share_and_translate_give_one_segment_inside_the_map_and_refuse_outside() {
        let mapped = vec![0u8; 8192];
        let outside = vec![0u8; 512];
        let mut registers = [0u32; 64];
        let hal = hal_over(1, &mapped, 0x4000_0000, &mut registers);
        let inside = NonNull::from(&mapped[512..1536]);
        let whole = NonNull::from(&mapped[..]);
        let at_the_end = NonNull::from(&mapped[8000..]);
        // 200 bytes from the map's last 8, running past its end: longer than
        // the vector, so built by hand; it is never dereferenced.
        let past_end = NonNull::slice_from_raw_parts(NonNull::from(&mapped[8184]), 200);
        let elsewhere = NonNull::from(&outside[..]);

        for (buffer, expected) in [
            (inside, Some(DeviceSegment { addr: DeviceAddr(0x4000_0200), len: 1024 })),
            (whole, Some(DeviceSegment { addr: DeviceAddr(0x4000_0000), len: 8192 })),
            (at_the_end, Some(DeviceSegment { addr: DeviceAddr(0x4000_1f40), len: 192 })),
            (past_end, None),
            (elsewhere, None),
        ] {
            let mut translated = Segments::default();
            assert_eq!(hal.translate(buffer, &mut translated), expected.is_some());
            assert_eq!(translated.0, Vec::from_iter(expected), "translate {buffer:?}");

            let mut shared = Segments::default();
            // SAFETY: the buffer lies in a live vector that nothing else
            // touches until `unshare` (or for `past_end`, which is refused,
            // not at all: no device exists and the HAL only computes).
            let result = unsafe { hal.share(buffer, Direction::ToDevice, &mut shared) };
            assert_eq!(shared.0, Vec::from_iter(expected), "share {buffer:?}");
            match expected {
                Some(_) => {
                    assert_eq!(result, Ok(()));
                    // SAFETY: shared just above with this direction.
                    unsafe { hal.unshare(buffer, Direction::ToDevice, ()) };
                }
                None => assert_eq!(result.map_err(|e| e.kind()), Err(HalErrorKind::MapFailed)),
            }
        }
        drop(hal);
    }

    #[test]
    fn the_hal_reads_time_from_its_clock() {
        let mapped = [0u8; 16];
        let mut registers = [0u32; 64];
        let hal = hal_over(2, &mapped, 0, &mut registers);
        assert_eq!(hal.ticks_per_second(), 1_000_000_000);
        let (t0, now, t1) = (hal.ticks(), hal.now(), hal.ticks());
        assert!(t1 >= t0);
        assert!(now <= Duration::from_nanos(t1));
        assert!(hal.dma_alloc(1).is_err(), "its pool is empty");
        drop(hal);
    }

    #[test]
    fn linear_map_bounds() {
        let map = LinearMap { virt_start: 0x1000_0000, phys_start: 0x20_0000, len: 0x10_0000 };
        assert_eq!(map.translate(0x1000_0000, 4096), Some(0x20_0000));
        assert_eq!(map.translate(0x100f_f000, 0x1000), Some(0x2f_f000), "last page");
        assert_eq!(map.translate(0x100f_f000, 0x1001), None, "runs past the end");
        assert_eq!(map.translate(0x0fff_ffff, 1), None, "below the map");
        assert_eq!(map.translate(usize::MAX, 2), None, "overflow");
        let identity = LinearMap { virt_start: 0, phys_start: 0, len: 1 << 32 };
        assert_eq!(identity.translate(0xdead_b000, 512), Some(0xdead_b000));
        assert_eq!(identity.translate(0xffff_ff00, 0x200), None, "beyond 4 GiB");
    }
}
