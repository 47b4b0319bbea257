//! Namespaces of the NVM command set: what the driver needs to know to address
//! blocks, checked before it is believed.

use crate::error::{Argument, Error, Feature, Malformed, Result};
use crate::spec::identify::IdentifyNamespace;
use crate::spec::ids::{Csi, Nidt};

/// Finds the Command Set Identifier in a Namespace Identification Descriptor
/// list (NVMe 1.4 section 5.15.2.3, figure 249). Walks untrusted data with
/// bounds checks; `None` when there is no CSI descriptor.
pub fn csi_from_descriptors(list: &[u8]) -> Option<Csi> {
    let mut at = 0;
    while at + 4 <= list.len() {
        let (kind, len) = (Nidt(list[at]), list[at + 1] as usize);
        if kind.0 == 0 || len == 0 {
            return None;
        }
        let value = list.get(at + 4..at + 4 + len)?;
        if kind == Nidt::CSI {
            return value.first().copied().map(Csi);
        }
        at += 4 + len;
    }
    None
}

/// An active namespace as the driver uses it: validated geometry from Identify
/// Namespace (NVMe Base Specification 1.4, section 5.15.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Namespace {
    nsid: u32,
    block_size: u32,
    blocks: u64,
    metadata_size: u16,
    extended_lba: bool,
    pi_type: u8,
    csi: Csi,
    max_transfer: Option<usize>,
    /// The controller it was identified on, and the controller's format
    /// generation then: a handle is refused by the queue pairs of any other
    /// controller (whose namespace of the same NSID may have another block
    /// size), and after a Format NVM through this driver.
    binding: Binding,
}

/// Which controller, at which format generation, identified a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Binding {
    /// `Controller::id`.
    pub(crate) controller: u32,
    /// Formats through this driver so far.
    pub(crate) generation: u32,
}

impl Namespace {
    /// Builds the handle from identify data, refusing data that cannot be right.
    pub(crate) fn from_identify(
        nsid: u32,
        id: &IdentifyNamespace,
        csi: Csi,
        max_transfer: Option<usize>,
        binding: Binding,
    ) -> Result<Self> {
        if id.nsze == 0 {
            return Err(Error::InvalidArgument(Argument::InactiveNamespace));
        }
        let format = id.current_lba_format().ok_or(Error::MalformedDevice(Malformed::LbaFormatIndex))?;
        let block_size = format.data_size().ok_or(Error::MalformedDevice(Malformed::LbaDataSize))?;
        Ok(Namespace {
            nsid,
            block_size,
            blocks: id.nsze,
            metadata_size: format.ms(),
            extended_lba: id.flbas.extended(),
            pi_type: id.dps.pit(),
            csi,
            max_transfer,
            binding,
        })
    }

    /// NSID: the namespace identifier.
    pub fn id(&self) -> u32 {
        self.nsid
    }

    /// Bytes of data per logical block (without metadata).
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// NSZE: the size in logical blocks.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.blocks.saturating_mul(self.block_size as u64)
    }

    /// Metadata bytes per logical block (0 for none).
    pub fn metadata_size(&self) -> u16 {
        self.metadata_size
    }

    /// True when metadata is transferred inline with the data (FLBAS bit 4).
    pub fn extended_lba(&self) -> bool {
        self.extended_lba
    }

    /// The protection information type (DPS bits 2:0; 0 = none).
    pub fn pi_type(&self) -> u8 {
        self.pi_type
    }

    /// The I/O Command Set the namespace belongs to (CSI: 0 NVM, 2 zoned).
    pub fn csi(&self) -> Csi {
        self.csi
    }

    /// The controller's transfer limit (MDTS) in bytes; `None` when unlimited.
    pub fn max_transfer_bytes(&self) -> Option<usize> {
        self.max_transfer
    }

    /// Why plain read and write cannot be used on this namespace yet, if they
    /// cannot: metadata and protection information need their own buffers.
    pub fn unsupported_reason(&self) -> Option<Feature> {
        if self.csi == Csi::ZONED {
            Some(Feature::ZonedNamespace)
        } else if self.csi != Csi::NVM {
            Some(Feature::OtherCommandSet)
        } else if self.pi_type != 0 {
            Some(Feature::ProtectionInformation)
        } else if self.metadata_size != 0 {
            Some(Feature::Metadata)
        } else {
            None
        }
    }

    /// The controller (and format generation) the handle belongs to.
    pub(crate) fn binding(&self) -> Binding {
        self.binding
    }

    /// Checks a block range and returns its length in bytes.
    pub(crate) fn check_range(&self, lba: u64, blocks: u32) -> Result<usize> {
        if blocks == 0 {
            return Err(Error::InvalidArgument(Argument::ZeroLength));
        }
        if blocks > 0x1_0000 {
            return Err(Error::InvalidArgument(Argument::TooManyBlocks));
        }
        let end = lba.checked_add(blocks as u64).ok_or(Error::LbaOutOfRange)?;
        if end > self.blocks {
            return Err(Error::LbaOutOfRange);
        }
        Ok(blocks as usize * self.block_size as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csi_descriptor_is_found_among_others() {
        let mut list = [0u8; 64];
        // EUI64 descriptor, then a CSI descriptor saying "zoned".
        list[0] = Nidt::EUI64.0;
        list[1] = 8;
        list[12] = Nidt::CSI.0;
        list[13] = 1;
        list[16] = Csi::ZONED.0;
        assert_eq!(csi_from_descriptors(&list), Some(Csi::ZONED));
        assert_eq!(csi_from_descriptors(&[0u8; 64]), None);
    }

    #[test]
    fn malformed_descriptors_do_not_panic() {
        // A length running past the end, at the end of the page.
        let mut list = [0u8; 16];
        list[0] = Nidt::NGUID.0;
        list[1] = 200;
        assert_eq!(csi_from_descriptors(&list), None);
        for len in 0..8 {
            let mut l = [0xffu8; 8];
            l[1] = len;
            let _ = csi_from_descriptors(&l);
        }
    }
}
