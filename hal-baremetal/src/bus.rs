//! The bare-metal back-end's view of PCI for the driver's `probe`: the NVMe
//! functions found through configuration space, and a [`BareMetalHal`] for
//! one it claims (its BARs assigned from a window where firmware left them
//! unassigned, decoding and bus mastering on).

use crate::pci::{self, BarWindow, NvmeFunction};
use crate::{BareMetalHal, DmaPool, LinearMap, TscClock};
use core::ptr::NonNull;
use hal_traits::pci::{PciBus, PciFunction};
use hal_traits::{DeviceAddr, HalError, HalErrorKind, MemoryBar, MmioRegion};
use pci_types::{ConfigRegionAccess, EndpointHeader, PciHeader};

/// The most NVMe functions a [`BareMetalBus`] lists.
pub const MAX_FUNCTIONS: usize = 16;

/// PCI as the kernel sees it, for probing (see [`PciBus`]).
pub struct BareMetalBus<A: ConfigRegionAccess> {
    access: A,
    window: BarWindow,
    pool: &'static DmaPool,
    clock: &'static TscClock,
    /// Where BARs are mapped (uncached): physical to virtual.
    mmio: LinearMap,
    /// Where DMA memory and shared buffers are mapped.
    dma: LinearMap,
    functions: heapless::Vec<PciFunction, MAX_FUNCTIONS>,
}

impl<A: ConfigRegionAccess> BareMetalBus<A> {
    /// Scans buses 0 to 255 through `access` for NVMe functions.
    ///
    /// # Safety
    ///
    /// `access` reaches this machine's configuration space and nothing else
    /// configures it meanwhile; `window` is free physical address space for
    /// BARs; `mmio` maps physical addresses to uncached virtual ones for as
    /// long as the kernel runs (a BAR outside it is [`HalErrorKind::Unusable`]);
    /// `dma` is as [`BareMetalHal::new`] requires.
    pub unsafe fn new(
        access: A,
        window: BarWindow,
        pool: &'static DmaPool,
        clock: &'static TscClock,
        mmio: LinearMap,
        dma: LinearMap,
    ) -> Self {
        let mut functions = heapless::Vec::new();
        for NvmeFunction { address, id } in pci::find_nvme::<MAX_FUNCTIONS>(&access) {
            let header = PciHeader::new(address);
            let (sub_vendor, sub_id) =
                EndpointHeader::from_header(header, &access).map_or((0, 0), |e| e.subsystem(&access));
            let _ = functions.push(PciFunction::new(address, id.0, id.1, sub_vendor, sub_id));
        }
        BareMetalBus { access, window, pool, clock, mmio, dma, functions }
    }

    /// The configuration space access.
    pub fn access(&self) -> &A {
        &self.access
    }
}

impl<A: ConfigRegionAccess> PciBus for BareMetalBus<A> {
    type Hal = BareMetalHal;

    fn nvme_function(&self, index: usize) -> Option<PciFunction> {
        self.functions.get(index).copied()
    }

    fn open(&mut self, function: &PciFunction) -> Result<BareMetalHal, HalError> {
        let claim = crate::claim(function.address)
            .ok_or(HalError::new(HalErrorKind::Claimed, "PCI function claimed by another driver"))?;
        let bars = pci::enable_all(&self.access, &claim, &mut self.window)
            .map_err(|_| HalError::new(HalErrorKind::Unusable, "BAR0 missing or no room to assign it"))?;
        let Some(bar0) = bars.0[0] else {
            return Err(HalError::new(HalErrorKind::Unusable, "BAR0 missing"));
        };
        let too_small = bar0.size < 0x2000;
        let size = usize::try_from(bar0.size).unwrap_or(usize::MAX);
        let virt = match self.mmio.virt_of(bar0.address, size).and_then(|v| NonNull::new(v as *mut u8)) {
            Some(v) if !too_small => v,
            _ => return Err(HalError::new(HalErrorKind::Unusable, "BAR0 outside the MMIO map or too small")),
        };
        // SAFETY: BAR0 was just enabled for this claimed function and lies
        // in the uncached map that `new`'s caller vouched for.
        let mmio = unsafe { MmioRegion::new(virt, size) };
        // SAFETY: `mmio` is this function's BAR0; `dma` is as `new`'s caller
        // vouched.
        let mut hal = unsafe { BareMetalHal::new(claim, mmio, self.pool, self.clock, self.dma) };
        // The other memory BARs (the controller memory buffer's) that the
        // uncached map reaches.
        for (index, bar) in bars.0.iter().enumerate().skip(1) {
            let Some(bar) = bar else { continue };
            let Ok(size) = usize::try_from(bar.size) else { continue };
            let Some(virt) = self.mmio.virt_of(bar.address, size).and_then(|v| NonNull::new(v as *mut u8))
            else {
                continue;
            };
            // SAFETY: the BAR was just enabled for this claimed function and
            // lies in the uncached map `new`'s caller vouched for; its bus
            // address is MMIO space, not RAM, so no DMA pool page and no
            // caller buffer in RAM has it as a device address.
            hal = unsafe {
                hal.with_memory_bar(
                    index as u8,
                    MemoryBar { mmio: MmioRegion::new(virt, size), bus: DeviceAddr(bar.address) },
                )
            };
        }
        Ok(hal)
    }
}
