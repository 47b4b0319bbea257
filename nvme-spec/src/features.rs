//! Data structures that Get Features and Set Features move (NVMe Base
//! Specification 1.4, section 5.21.1): the LBA Range Type entries (FID 03h).
//! The Host Identifier (FID 81h) is 8 or 16 plain bytes.

use crate::identify::assert_layout;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// One LBA Range Type entry (FID 03h, figure "LBA Range Type - Data
/// Structure Entry"): 64 bytes; the feature moves up to 64 of them (4 KiB),
/// its DW0 bits 5:0 giving how many are valid, 0-based.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct LbaRangeType {
    /// Type (offset 0): 0 general purpose, 1 filesystem, 2 RAID, 3 cache,
    /// 4 page / swap file, 80h and up vendor specific.
    pub range_type: u8,
    /// Attributes (offset 1): bit 0 the range may be overwritten, bit 1 the
    /// range should be hidden from the OS.
    pub attributes: u8,
    _rsvd2: [u8; 14],
    /// SLBA (offset 16): the first logical block of the range.
    pub slba: u64,
    /// NLB (offset 24): the number of logical blocks, 0-based.
    pub nlb: u64,
    /// GUID (offset 32): a unique identifier of the range.
    pub guid: [u8; 16],
    _rsvd48: [u8; 16],
}

assert_layout!(LbaRangeType, 64, { range_type: 0, attributes: 1, slba: 16, nlb: 24, guid: 32 });

impl LbaRangeType {
    /// Size in bytes.
    pub const SIZE: usize = 64;

    /// Decodes an entry.
    pub const fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        zerocopy::transmute!(*bytes)
    }

    /// Whether the host may overwrite the range (Attributes bit 0).
    pub const fn overwritable(&self) -> bool {
        self.attributes & 1 != 0
    }

    /// Whether the range should be hidden from the OS (Attributes bit 1).
    pub const fn hidden(&self) -> bool {
        self.attributes & 2 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lba_range_type() {
        let mut b = [0u8; 64];
        b[0] = 1;
        b[1] = 0b11;
        b[16..24].copy_from_slice(&7u64.to_le_bytes());
        b[24..32].copy_from_slice(&99u64.to_le_bytes());
        b[32] = 0xaa;
        let r = LbaRangeType::from_bytes(&b);
        assert_eq!((r.range_type, r.slba, r.nlb, r.guid[0]), (1, 7, 99, 0xaa));
        assert!(r.overwritable() && r.hidden());
    }
}
