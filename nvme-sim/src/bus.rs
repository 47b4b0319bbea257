//! A PCI bus of simulated controllers, for the driver's `probe`.

use crate::{Sim, SimHal};
use hal_traits::pci::{PciAddress, PciBus, PciFunction};
use hal_traits::{HalError, HalErrorKind};

/// NVMe functions at PCI addresses, each a simulated controller, or one that
/// cannot be used (its BAR0 unassigned, say).
#[derive(Default)]
pub struct SimBus {
    functions: Vec<(PciFunction, Option<Sim>)>,
}

impl SimBus {
    /// An empty bus.
    pub fn new() -> Self {
        SimBus::default()
    }

    /// Puts `sim` at `address` with vendor and device identifiers `ids`;
    /// functions are listed in address order.
    pub fn add(&mut self, address: PciAddress, ids: (u16, u16), sim: &Sim) {
        self.insert(PciFunction::new(address, ids.0, ids.1, ids.0, 0), Some(sim.clone()));
    }

    /// An NVMe function at `address` that [`PciBus::open`] refuses as
    /// [`HalErrorKind::Unusable`].
    pub fn add_unusable(&mut self, address: PciAddress, ids: (u16, u16)) {
        self.insert(PciFunction::new(address, ids.0, ids.1, ids.0, 0), None);
    }

    fn insert(&mut self, function: PciFunction, sim: Option<Sim>) {
        self.functions.push((function, sim));
        self.functions.sort_by_key(|(f, _)| f.address);
    }
}

impl PciBus for SimBus {
    type Hal = SimHal;

    fn nvme_function(&self, index: usize) -> Option<PciFunction> {
        self.functions.get(index).map(|(f, _)| *f)
    }

    /// A [`SimHal`]: [`HalErrorKind::Claimed`] while another one of the same
    /// controller lives.
    fn open(&mut self, function: &PciFunction) -> Result<SimHal, HalError> {
        let (_, sim) = self
            .functions
            .iter()
            .find(|(f, _)| f.address == function.address)
            .ok_or(HalError::new(HalErrorKind::Unusable, "no such function"))?;
        let sim = sim.as_ref().ok_or(HalError::new(HalErrorKind::Unusable, "BAR0 unassigned"))?;
        sim.try_hal().ok_or(HalError::new(HalErrorKind::Claimed, "claimed by another driver"))
    }
}
