//! The Zoned Namespace Command Set (NVM Express Zoned Namespace Command Set
//! Specification 1.1): its Identify structures, the zone actions and
//! states, and the report Zone Management Receive returns.

use crate::identify::{assert_layout, IDENTIFY_DATA_SIZE};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The zoned command set's Identify Namespace data structure (CNS 05h, CSI
/// 02h; figure 48).
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IdentifyNamespaceZoned {
    /// ZOC: Zone Operation Characteristics (offset 0).
    pub zoc: u16,
    /// OZCS: Optional Zoned Command Support (offset 2).
    pub ozcs: u16,
    /// MAR: Maximum Active Resources, 0-based; FFFFFFFFh no limit.
    pub mar: u32,
    /// MOR: Maximum Open Resources, 0-based; FFFFFFFFh no limit.
    pub mor: u32,
    /// RRL: Reset Recommended Limit, in seconds.
    pub rrl: u32,
    /// FRL: Finish Recommended Limit, in seconds.
    pub frl: u32,
    _rsvd20: [u8; 2796],
    /// LBAFE: the zone size of each LBA format (offset 2816).
    pub lbafe: [ZoneFormat; 64],
    _vs: [u8; 256],
}

/// One LBA Format Extension (figure 49): the zone size of an LBA format.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ZoneFormat {
    /// ZSZE: Zone Size, in logical blocks.
    pub zsze: u64,
    /// ZDES: Zone Descriptor Extension Size, in 64-byte units.
    pub zdes: u8,
    _rsvd: [u8; 7],
}

assert_layout!(IdentifyNamespaceZoned, IDENTIFY_DATA_SIZE, { zoc: 0, ozcs: 2, mar: 4, mor: 8, lbafe: 2816 });

impl IdentifyNamespaceZoned {
    /// The structure in an Identify page.
    pub fn from_bytes(page: &[u8; IDENTIFY_DATA_SIZE]) -> Self {
        zerocopy::transmute!(*page)
    }
}

/// ZSA: the action of a Zone Management Send (figure 41).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ZoneSendAction(pub u8);

impl ZoneSendAction {
    /// Close Zone.
    pub const CLOSE: Self = Self(0x01);
    /// Finish Zone: it becomes full.
    pub const FINISH: Self = Self(0x02);
    /// Open Zone (explicitly).
    pub const OPEN: Self = Self(0x03);
    /// Reset Zone: empty, write pointer at its start.
    pub const RESET: Self = Self(0x04);
    /// Offline Zone.
    pub const OFFLINE: Self = Self(0x05);
    /// Set Zone Descriptor Extension: the command's data becomes the
    /// zone's extension, and an empty zone becomes closed (section 3.4.3.1.7).
    pub const SET_ZONE_DESCRIPTOR_EXTENSION: Self = Self(0x10);
}

/// ZS: a zone's state (figure 38).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ZoneState(pub u8);

impl ZoneState {
    /// ZSE: Empty.
    pub const EMPTY: Self = Self(0x1);
    /// ZSIO: Implicitly Opened.
    pub const IMPLICITLY_OPENED: Self = Self(0x2);
    /// ZSEO: Explicitly Opened.
    pub const EXPLICITLY_OPENED: Self = Self(0x3);
    /// ZSC: Closed.
    pub const CLOSED: Self = Self(0x4);
    /// ZSRO: Read Only.
    pub const READ_ONLY: Self = Self(0xd);
    /// ZSF: Full.
    pub const FULL: Self = Self(0xe);
    /// ZSO: Offline.
    pub const OFFLINE: Self = Self(0xf);
}

/// The header of a zone report (figure 36): 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ZoneReportHeader {
    /// The number of zones reported (all that match, or with Partial
    /// Report those in the report).
    pub zones: u64,
    _rsvd8: [u8; 56],
}

assert_layout!(ZoneReportHeader, 64, { zones: 0 });

/// A Zone Descriptor (figure 37): 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ZoneDescriptor {
    /// ZT: Zone Type in bits 3:0 (2h: sequential write required).
    pub zt: u8,
    /// ZS: Zone State in bits 7:4.
    pub zs: u8,
    /// ZA: Zone Attributes.
    pub za: u8,
    /// ZAI: Zone Attributes Information.
    pub zai: u8,
    _rsvd4: [u8; 4],
    /// ZCAP: Zone Capacity, in logical blocks.
    pub zcap: u64,
    /// ZSLBA: the zone's first block.
    pub zslba: u64,
    /// WP: the Write Pointer.
    pub wp: u64,
    _rsvd32: [u8; 32],
}

assert_layout!(ZoneDescriptor, 64, { zt: 0, zs: 1, za: 2, zcap: 8, zslba: 16, wp: 24 });

impl ZoneDescriptor {
    /// Size in bytes.
    pub const SIZE: usize = 64;

    /// The zone's state.
    pub const fn state(&self) -> ZoneState {
        ZoneState(self.zs >> 4)
    }

    /// The zone type (2: sequential write required).
    pub const fn zone_type(&self) -> u8 {
        self.zt & 0xf
    }

    /// ZA bit 7, ZDEV: the zone's descriptor extension is valid.
    pub const fn extension_valid(&self) -> bool {
        self.za & 0x80 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_descriptor_layout() {
        let mut b = [0u8; 64];
        b[0] = 0x02;
        b[1] = 0xe0;
        b[8..16].copy_from_slice(&100u64.to_le_bytes());
        b[16..24].copy_from_slice(&0x4000u64.to_le_bytes());
        b[24..32].copy_from_slice(&0x4064u64.to_le_bytes());
        let d = ZoneDescriptor::read_from_bytes(&b).unwrap();
        assert_eq!(
            (d.zone_type(), d.state(), d.zcap, d.zslba, d.wp),
            (2, ZoneState::FULL, 100, 0x4000, 0x4064)
        );
    }
}
