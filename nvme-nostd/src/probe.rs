//! Probing, as SPDK's `spdk_nvme_probe`: every NVMe function a back-end's
//! [`PciBus`] offers (or the one a transport identifier names) is shown to a
//! probe callback, which may veto it or change the options it is attached
//! with; the others are claimed and attached, and each outcome goes to an
//! attach callback, which keeps the controllers it wants (no heap: the
//! caller decides where they live).

use crate::controller::{Controller, ControllerOptions};
use crate::error::{Error, Result};
use crate::trid::TransportId;
use hal_traits::pci::{PciBus, PciFunction};

/// What [`probe`] found at one function: its identifiers and its transport
/// identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Probed {
    /// The function, as the back-end describes it.
    pub function: PciFunction,
    /// Its transport identifier (`trtype:PCIe traddr:...`).
    pub trid: TransportId,
}

/// Probes `bus`: for each NVMe function (only the one at `only`'s address,
/// when given) `probe_cb` sees it with default options, which it may change;
/// it returns false to leave the function alone. Each function it accepts is
/// claimed ([`PciBus::open`]) and attached ([`Controller::new`]) with those
/// options, and `attach_cb` gets the controller, or why not (a claim or
/// mapping failure as [`Error::Hal`], an attach failure as it came).
/// Returns how many controllers were attached.
///
/// ```
/// # use nvme_nostd::{probe, Controller, ControllerOptions, Hal};
/// # use nvme_nostd::hal_traits::pci::PciBus;
/// # fn f<B: PciBus>(bus: &mut B) where B::Hal: Hal {
/// let mut controllers: heapless::Vec<Controller<B::Hal>, 4> = heapless::Vec::new();
/// probe(
///     bus,
///     None,
///     |found, options| {
///         *options = options.with_io_queues(2);
///         found.function.vendor_id != 0x8086 // skip one vendor's drives
///     },
///     |_, attached| {
///         if let Ok(ctrlr) = attached {
///             let _ = controllers.push(ctrlr);
///         }
///     },
/// );
/// # }
/// ```
pub fn probe<B: PciBus>(
    bus: &mut B,
    only: Option<&TransportId>,
    mut probe_cb: impl FnMut(&Probed, &mut ControllerOptions) -> bool,
    mut attach_cb: impl FnMut(&Probed, Result<Controller<B::Hal>>),
) -> usize {
    let mut attached = 0;
    let mut index = 0;
    while let Some(function) = bus.nvme_function(index) {
        index += 1;
        let found = Probed { function, trid: TransportId::pcie(function.address) };
        if only.is_some_and(|trid| *trid != found.trid) {
            continue;
        }
        let mut options = ControllerOptions::default();
        if !probe_cb(&found, &mut options) {
            continue;
        }
        let result = bus.open(&function).map_err(Error::Hal).and_then(|hal| Controller::new(hal, options));
        attached += usize::from(result.is_ok());
        attach_cb(&found, result);
    }
    attached
}
