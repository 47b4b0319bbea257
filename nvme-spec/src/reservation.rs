//! Reservations (NVMe Base Specification 1.4, sections 6.10 to 6.13 and
//! 8.8): the command dwords of Reservation Register, Acquire, Release and
//! Report, the reservation types, and the Reservation Status data structure
//! Report returns, in its 24-byte and extended (64-byte) forms.

use crate::identify::assert_layout;
use bitfield_struct::bitfield;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// RTYPE: a reservation type (section 8.8.4, figure 471).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReservationType(pub u8);

impl ReservationType {
    /// Write Exclusive: only the holder writes; anyone reads.
    pub const WRITE_EXCLUSIVE: Self = Self(1);
    /// Exclusive Access: only the holder reads or writes.
    pub const EXCLUSIVE_ACCESS: Self = Self(2);
    /// Write Exclusive – Registrants Only: registrants write; anyone reads.
    pub const WRITE_EXCLUSIVE_REGISTRANTS_ONLY: Self = Self(3);
    /// Exclusive Access – Registrants Only: only registrants read or write.
    pub const EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: Self = Self(4);
    /// Write Exclusive – All Registrants: every registrant holds it.
    pub const WRITE_EXCLUSIVE_ALL_REGISTRANTS: Self = Self(5);
    /// Exclusive Access – All Registrants: every registrant holds it.
    pub const EXCLUSIVE_ACCESS_ALL_REGISTRANTS: Self = Self(6);

    /// Whether Identify Namespace RESCAP (byte 31, figure 245) offers this
    /// type: bits 1 to 6 stand for types 1 to 6.
    pub const fn offered_by(self, rescap: u8) -> bool {
        matches!(self.0, 1..=6) && rescap & (1 << self.0) != 0
    }

    /// Whether every registrant holds a reservation of this type (types 5
    /// and 6).
    pub const fn all_registrants(self) -> bool {
        matches!(self.0, 5 | 6)
    }
}

/// RESCAP bit 0: Persist Through Power Loss can be changed.
pub const RESCAP_PTPL: u8 = 1;

/// CDW10 of Reservation Register (section 6.12, figure 386). The data is
/// CRKEY then NRKEY, 8 bytes each.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct ReservationRegisterCdw10 {
    /// RREGA: 0 register, 1 unregister, 2 replace.
    #[bits(3)]
    pub rrega: u8,
    /// IEKEY: Ignore Existing Key (CRKEY is not checked).
    pub iekey: bool,
    #[bits(26)]
    __: u32,
    /// CPTPL: Change Persist Through Power Loss State: 00b no change, 10b
    /// set it to 0, 11b set it to 1.
    #[bits(2)]
    pub cptpl: u8,
}

/// CDW10 of Reservation Acquire (section 6.10, figure 379) and Reservation
/// Release (section 6.11, figure 383), which share a layout. Acquire's data
/// is CRKEY then PRKEY; Release's is CRKEY.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct ReservationActionCdw10 {
    /// RACQA (0 acquire, 1 preempt, 2 preempt and abort) or RRELA (0
    /// release, 1 clear).
    #[bits(3)]
    pub action: u8,
    /// IEKEY: Ignore Existing Key.
    pub iekey: bool,
    #[bits(4)]
    __: u8,
    /// RTYPE: the reservation type.
    pub rtype: u8,
    __: u16,
}

/// The Reservation Status data structure's header (Reservation Report,
/// section 6.13, figure 390): 24 bytes; the extended structure (CDW11 EDS
/// set, figure 392) pads it to 64.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ReservationStatusHeader {
    /// GEN: Reservation Generation, incremented by registrations,
    /// preemptions and clears.
    pub gen: u32,
    /// RTYPE: the reservation held (0: none).
    pub rtype: u8,
    regctl: [u8; 2],
    _rsvd7: [u8; 2],
    /// PTPLS: Persist Through Power Loss State.
    pub ptpls: u8,
    _rsvd10: [u8; 14],
}

assert_layout!(ReservationStatusHeader, 24, { gen: 0, rtype: 4, regctl: 5, ptpls: 9 });

impl ReservationStatusHeader {
    /// Size in bytes of the header (the extended structure's is
    /// [`EXTENDED_HEADER_SIZE`](Self::EXTENDED_HEADER_SIZE)).
    pub const SIZE: usize = 24;
    /// The extended structure's header size.
    pub const EXTENDED_HEADER_SIZE: usize = 64;

    /// REGCTL: the number of registrants (offset 5, unaligned).
    pub fn regctl(&self) -> u16 {
        u16::from_le_bytes(self.regctl)
    }

    /// A header (for simulators).
    pub fn new(gen: u32, rtype: u8, regctl: u16, ptpls: u8) -> Self {
        ReservationStatusHeader { gen, rtype, regctl: regctl.to_le_bytes(), ptpls, ..Self::default() }
    }
}

/// One Registered Controller data structure (figure 391): 24 bytes, with a
/// 64-bit Host Identifier.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RegisteredController {
    /// CNTLID: the controller, or FFFFh when not known.
    pub cntlid: u16,
    /// RCSTS: bit 0 set when this host holds the reservation.
    pub rcsts: u8,
    _rsvd3: [u8; 5],
    /// HOSTID: the 64-bit Host Identifier.
    pub hostid: u64,
    /// RKEY: the registrant's reservation key.
    pub rkey: u64,
}

assert_layout!(RegisteredController, 24, { cntlid: 0, rcsts: 2, hostid: 8, rkey: 16 });

/// One Registered Controller Extended data structure (figure 393): 64
/// bytes, with a 128-bit Host Identifier.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RegisteredControllerExtended {
    /// CNTLID: the controller, or FFFFh when not known.
    pub cntlid: u16,
    /// RCSTS: bit 0 set when this host holds the reservation.
    pub rcsts: u8,
    _rsvd3: [u8; 5],
    /// RKEY: the registrant's reservation key.
    pub rkey: u64,
    /// HOSTID: the 128-bit Host Identifier.
    pub hostid: [u8; 16],
    _rsvd32: [u8; 32],
}

assert_layout!(RegisteredControllerExtended, 64, { cntlid: 0, rcsts: 2, rkey: 8, hostid: 16 });

impl RegisteredController {
    /// Size in bytes.
    pub const SIZE: usize = 24;

    /// A registrant (for simulators).
    pub fn new(cntlid: u16, holds: bool, hostid: u64, rkey: u64) -> Self {
        RegisteredController { cntlid, rcsts: u8::from(holds), hostid, rkey, ..Self::default() }
    }
}

impl RegisteredControllerExtended {
    /// Size in bytes.
    pub const SIZE: usize = 64;

    /// A registrant (for simulators).
    pub fn new(cntlid: u16, holds: bool, hostid: [u8; 16], rkey: u64) -> Self {
        RegisteredControllerExtended { cntlid, rcsts: u8::from(holds), hostid, rkey, ..Self::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn command_dwords() {
        let r = ReservationRegisterCdw10::new().with_rrega(2).with_iekey(true).with_cptpl(3);
        assert_eq!(r.into_bits(), 0xc000_000a);
        let a = ReservationActionCdw10::new().with_action(1).with_rtype(6);
        assert_eq!(a.into_bits(), 0x0601);
        assert_eq!(ReservationActionCdw10::new().with_iekey(true).into_bits(), 8);
    }

    #[test]
    fn status_layouts() {
        let h = ReservationStatusHeader::new(0x0102_0304, 5, 0x0203, 1);
        let b = h.as_bytes();
        assert_eq!(&b[0..4], &[4, 3, 2, 1]);
        assert_eq!((b[4], b[5], b[6], b[9]), (5, 3, 2, 1));
        assert_eq!(h.regctl(), 0x0203);
        let r = RegisteredController::new(7, true, 0x1122, 0xaabb);
        let b = r.as_bytes();
        assert_eq!((b[0], b[2]), (7, 1));
        assert_eq!(&b[8..10], &[0x22, 0x11]);
        assert_eq!(&b[16..18], &[0xbb, 0xaa]);
        let x = RegisteredControllerExtended::new(9, false, [0xcc; 16], 0x55);
        let b = x.as_bytes();
        assert_eq!((b[0], b[2], b[8]), (9, 0, 0x55));
        assert_eq!(&b[16..32], &[0xcc; 16]);
        assert!(ReservationType::EXCLUSIVE_ACCESS.offered_by(0b100));
        assert!(!ReservationType::WRITE_EXCLUSIVE.offered_by(0b100));
        assert!(!ReservationType(7).offered_by(0xff) && !ReservationType(0).offered_by(0xff));
    }
}
