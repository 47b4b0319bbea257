//! The back-end's view of PCI, for probing: the NVMe functions it can reach,
//! and a [`Hal`] for one it claims.
//!
//! The driver's `probe` walks a [`PciBus`], asks the caller about each
//! function (which may veto it or change its options) and attaches to the
//! rest. How a back-end finds functions (configuration space ports, ECAM,
//! sysfs) and how it makes BAR0 reachable (an identity map, a VFIO region)
//! stays its own business.

use crate::{Hal, HalError};
pub use pci_types::PciAddress;

/// PCI class code of an NVM Express controller: mass storage (01h),
/// non-volatile memory (08h), NVM Express (02h).
pub const NVME_CLASS: (u8, u8, u8) = (0x01, 0x08, 0x02);

/// An NVMe function a back-end can reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PciFunction {
    /// Its address: segment (domain), bus, device, function.
    pub address: PciAddress,
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Subsystem vendor ID (0 where the back-end does not read it).
    pub subsystem_vendor_id: u16,
    /// Subsystem ID (0 where the back-end does not read it).
    pub subsystem_id: u16,
}

impl PciFunction {
    /// A function at `address` with these identifiers.
    pub const fn new(
        address: PciAddress,
        vendor_id: u16,
        device_id: u16,
        subsystem_vendor_id: u16,
        subsystem_id: u16,
    ) -> Self {
        PciFunction { address, vendor_id, device_id, subsystem_vendor_id, subsystem_id }
    }
}

/// A back-end's PCI: the NVMe functions it can reach, in a stable order, and
/// the [`Hal`] of one it claims for the driver.
pub trait PciBus {
    /// The HAL of one claimed function.
    type Hal: Hal;

    /// The `index`th NVMe function (class [`NVME_CLASS`]) the back-end can
    /// reach, counting from 0 in increasing address order; `None` past the
    /// last.
    fn nvme_function(&self, index: usize) -> Option<PciFunction>;

    /// Claims `function` for this driver and makes its registers reachable
    /// (memory decoding and bus mastering on, BAR0 mapped): the HAL that
    /// stands for the claim (see [`Hal`]'s "Exclusive ownership"; dropping it
    /// releases the function). [`HalErrorKind::Claimed`](crate::HalErrorKind::Claimed)
    /// when another driver holds it,
    /// [`HalErrorKind::Unusable`](crate::HalErrorKind::Unusable) when it
    /// cannot be used.
    fn open(&mut self, function: &PciFunction) -> Result<Self::Hal, HalError>;
}
