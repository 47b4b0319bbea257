//! Data structures that Get Features and Set Features move (NVMe Base
//! Specification 1.4, section 5.21.1): the LBA Range Type entries (FID 03h)
//! and the Host Memory Buffer's descriptor entries and attributes (FID 0Dh).
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

/// One Host Memory Buffer Descriptor entry (FID 0Dh, section 5.21.1.13,
/// figure "Host Memory Buffer - Descriptor Entry"): a physically contiguous
/// piece of the buffer. The descriptor list is an array of these, 16-byte
/// aligned, named by Set Features CDW13/CDW14 with its count in CDW15.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HostMemoryDescriptor {
    /// BADD (offset 0): the piece's address, aligned to the memory page size.
    pub badd: u64,
    /// BSIZE (offset 8): its size in memory pages (CC.MPS).
    pub bsize: u32,
    _rsvd12: u32,
}

assert_layout!(HostMemoryDescriptor, 16, { badd: 0, bsize: 8 });

impl HostMemoryDescriptor {
    /// Size in bytes.
    pub const SIZE: usize = 16;

    /// A piece of `pages` memory pages at `badd`.
    pub const fn new(badd: u64, pages: u32) -> Self {
        HostMemoryDescriptor { badd, bsize: pages, _rsvd12: 0 }
    }

    /// The entry's bytes, as the controller reads them.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }
}

/// Host Memory Buffer Attributes (FID 0Dh, Get Features data, figure "Host
/// Memory Buffer - Attributes Data Structure"): what the controller holds
/// now. The structure is 4096 bytes; the fields are its first 16.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HostMemoryAttributes {
    /// HSIZE (offset 0): the buffer's size in memory pages.
    pub hsize: u32,
    /// HMDLAL (offset 4): the descriptor list's address, bits 31:0.
    pub hmdlal: u32,
    /// HMDLAU (offset 8): the descriptor list's address, bits 63:32.
    pub hmdlau: u32,
    /// HMDLEC (offset 12): the number of descriptor entries.
    pub hmdlec: u32,
}

assert_layout!(HostMemoryAttributes, 16, { hsize: 0, hmdlal: 4, hmdlau: 8, hmdlec: 12 });

impl HostMemoryAttributes {
    /// Decodes the first 16 bytes of the 4096-byte structure.
    pub const fn from_bytes(bytes: &[u8; 16]) -> Self {
        zerocopy::transmute!(*bytes)
    }

    /// The descriptor list's address.
    pub const fn list_address(&self) -> u64 {
        self.hmdlal as u64 | (self.hmdlau as u64) << 32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_memory_descriptor_and_attributes() {
        let d = HostMemoryDescriptor::new(0x1_2345_6000, 16).to_bytes();
        assert_eq!(&d[..8], &0x1_2345_6000u64.to_le_bytes());
        assert_eq!(&d[8..12], &16u32.to_le_bytes());
        assert_eq!(&d[12..], &[0; 4]);
        let mut a = [0u8; 16];
        a[0] = 0x40; // 64 pages
        a[4..8].copy_from_slice(&0x8000_1010u32.to_le_bytes());
        a[8] = 1;
        a[12] = 3;
        let attrs = HostMemoryAttributes::from_bytes(&a);
        assert_eq!((attrs.hsize, attrs.list_address(), attrs.hmdlec), (64, 0x1_8000_1010, 3));
    }

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
