//! Submission and completion queue entries (NVMe Base Specification 1.4,
//! sections 4.2 "Submission Queue Entry - Command Format" and 4.6 "Completion
//! Queue Entry") and the opcodes of the admin and NVM command sets.

use crate::status::Status;
use bitfield_struct::bitfield;
use core::mem::size_of;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// CDW0 of every command (section 4.2, figure 104).
#[bitfield(u32)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Cdw0 {
    /// OPC: the opcode (an admin or I/O opcode, by queue).
    pub opc: u8,
    /// FUSE: fused operation (0 normal, 1 first, 2 second command).
    #[bits(2)]
    pub fuse: u8,
    #[bits(4)]
    __: u8,
    /// PSDT: PRP or SGL for Data Transfer (0 PRPs, 1 SGL with a physically
    /// contiguous MPTR, 2 SGL with an SGL segment as metadata).
    #[bits(2)]
    pub psdt: u8,
    /// CID: the command identifier, unique among the commands outstanding on
    /// the submission queue.
    pub cid: u16,
}

/// A 64-byte submission queue entry (section 4.2, figure 105).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SubmissionEntry {
    /// CDW0: opcode, fused operation, PSDT and CID.
    pub cdw0: Cdw0,
    /// NSID: Namespace Identifier.
    pub nsid: u32,
    /// CDW2: command specific.
    pub cdw2: u32,
    /// CDW3: command specific.
    pub cdw3: u32,
    /// MPTR: Metadata Pointer.
    pub mptr: u64,
    /// PRP1 (DPTR bytes 7:0): PRP Entry 1, or the first half of an SGL descriptor.
    pub prp1: u64,
    /// PRP2 (DPTR bytes 15:8): PRP Entry 2 or a PRP list pointer.
    pub prp2: u64,
    /// CDW10: command specific.
    pub cdw10: u32,
    /// CDW11: command specific.
    pub cdw11: u32,
    /// CDW12: command specific.
    pub cdw12: u32,
    /// CDW13: command specific.
    pub cdw13: u32,
    /// CDW14: command specific.
    pub cdw14: u32,
    /// CDW15: command specific.
    pub cdw15: u32,
}

const _: () = assert!(size_of::<SubmissionEntry>() == 64);

impl SubmissionEntry {
    /// The entry as eight little-endian quadwords, in memory order: how it
    /// is written into device memory (a queue in the controller memory
    /// buffer), where accesses wider than 8 bytes may not be supported.
    #[inline]
    pub fn to_qwords(&self) -> [u64; 8] {
        let pair = |lo: u32, hi: u32| lo as u64 | (hi as u64) << 32;
        [
            pair(self.cdw0.into_bits(), self.nsid),
            pair(self.cdw2, self.cdw3),
            self.mptr,
            self.prp1,
            self.prp2,
            pair(self.cdw10, self.cdw11),
            pair(self.cdw12, self.cdw13),
            pair(self.cdw14, self.cdw15),
        ]
    }

    /// Sets CID (CDW0 bits 31:16), as `cdw0.set_cid` does (a test checks
    /// they agree), in plain bit operations that inline across crates: the
    /// driver does it for every command it submits.
    #[inline]
    pub const fn set_cid(&mut self, cid: u16) {
        self.cdw0 = Cdw0::from_bits(self.cdw0.into_bits() & 0xffff | (cid as u32) << 16);
    }

    /// A command with opcode `opc` for namespace `nsid`, everything else zero.
    #[inline]
    pub const fn new(opc: u8, nsid: u32) -> Self {
        SubmissionEntry {
            // OPC is bits 7:0 (a test checks this against the bitfield).
            cdw0: Cdw0::from_bits(opc as u32),
            nsid,
            cdw2: 0,
            cdw3: 0,
            mptr: 0,
            prp1: 0,
            prp2: 0,
            cdw10: 0,
            cdw11: 0,
            cdw12: 0,
            cdw13: 0,
            cdw14: 0,
            cdw15: 0,
        }
    }
}

/// A 16-byte completion queue entry (section 4.6, figure 121).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CompletionEntry {
    /// DW0: command specific.
    pub dw0: u32,
    /// DW1: command specific.
    pub dw1: u32,
    /// SQHD: SQ Head Pointer.
    pub sqhd: u16,
    /// SQID: SQ Identifier.
    pub sqid: u16,
    /// CID: Command Identifier.
    pub cid: u16,
    /// DW3 bits 31:16: the phase tag P (bit 16) and the Status Field (bits
    /// 31:17). [`Status`] leaves P out of everything but [`Status::p`].
    pub status: Status,
}

const _: () = assert!(size_of::<CompletionEntry>() == 16);
/// The byte offset of the status half-word (with the phase tag) in a
/// completion entry: read it first to see whether the entry is new.
pub const COMPLETION_STATUS_OFFSET: usize = core::mem::offset_of!(CompletionEntry, status);
const _: () = assert!(COMPLETION_STATUS_OFFSET == 14);

impl CompletionEntry {
    /// P: the phase tag.
    #[inline]
    pub const fn phase(&self) -> bool {
        self.status.p()
    }
}

/// An admin command opcode (section 5, figure 139). Open: any `u8` is a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AdminOpcode(pub u8);

impl AdminOpcode {
    /// Delete I/O Submission Queue.
    pub const DELETE_IO_SQ: Self = Self(0x00);
    /// Create I/O Submission Queue.
    pub const CREATE_IO_SQ: Self = Self(0x01);
    /// Get Log Page.
    pub const GET_LOG_PAGE: Self = Self(0x02);
    /// Delete I/O Completion Queue.
    pub const DELETE_IO_CQ: Self = Self(0x04);
    /// Create I/O Completion Queue.
    pub const CREATE_IO_CQ: Self = Self(0x05);
    /// Identify.
    pub const IDENTIFY: Self = Self(0x06);
    /// Abort.
    pub const ABORT: Self = Self(0x08);
    /// Set Features.
    pub const SET_FEATURES: Self = Self(0x09);
    /// Get Features.
    pub const GET_FEATURES: Self = Self(0x0a);
    /// Asynchronous Event Request.
    pub const ASYNC_EVENT_REQUEST: Self = Self(0x0c);
    /// Namespace Management.
    pub const NAMESPACE_MANAGEMENT: Self = Self(0x0d);
    /// Firmware Commit.
    pub const FIRMWARE_COMMIT: Self = Self(0x10);
    /// Firmware Image Download.
    pub const FIRMWARE_IMAGE_DOWNLOAD: Self = Self(0x11);
    /// Device Self-test.
    pub const DEVICE_SELF_TEST: Self = Self(0x14);
    /// Namespace Attachment.
    pub const NAMESPACE_ATTACHMENT: Self = Self(0x15);
    /// Keep Alive.
    pub const KEEP_ALIVE: Self = Self(0x18);
    /// Doorbell Buffer Config.
    pub const DOORBELL_BUFFER_CONFIG: Self = Self(0x7c);
    /// Format NVM.
    pub const FORMAT_NVM: Self = Self(0x80);
    /// Security Send.
    pub const SECURITY_SEND: Self = Self(0x81);
    /// Security Receive.
    pub const SECURITY_RECEIVE: Self = Self(0x82);
    /// Sanitize.
    pub const SANITIZE: Self = Self(0x84);
}

/// An NVM command set I/O opcode (NVM Command Set specification, figure 18 in
/// 1.0; base specification 1.4 section 6). Open: any `u8` is a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IoOpcode(pub u8);

impl IoOpcode {
    /// Flush.
    pub const FLUSH: Self = Self(0x00);
    /// Write.
    pub const WRITE: Self = Self(0x01);
    /// Read.
    pub const READ: Self = Self(0x02);
    /// Write Uncorrectable.
    pub const WRITE_UNCORRECTABLE: Self = Self(0x04);
    /// Compare.
    pub const COMPARE: Self = Self(0x05);
    /// Write Zeroes.
    pub const WRITE_ZEROES: Self = Self(0x08);
    /// Dataset Management.
    pub const DATASET_MANAGEMENT: Self = Self(0x09);
    /// Verify.
    pub const VERIFY: Self = Self(0x0c);
    /// Reservation Register.
    pub const RESERVATION_REGISTER: Self = Self(0x0d);
    /// Reservation Report.
    pub const RESERVATION_REPORT: Self = Self(0x0e);
    /// Reservation Acquire.
    pub const RESERVATION_ACQUIRE: Self = Self(0x11);
    /// Reservation Release.
    pub const RESERVATION_RELEASE: Self = Self(0x15);
    /// Copy (NVM Command Set 1.0 section 3.2.2).
    pub const COPY: Self = Self(0x19);
    /// Zone Management Send (Zoned Namespace Command Set 1.1 section 3.4.3).
    pub const ZONE_MANAGEMENT_SEND: Self = Self(0x79);
    /// Zone Management Receive (section 3.4.2).
    pub const ZONE_MANAGEMENT_RECEIVE: Self = Self(0x7a);
    /// Zone Append (section 3.4.1).
    pub const ZONE_APPEND: Self = Self(0x7d);

    /// Bits 1:0 of an opcode give its data transfer direction (section 4.2,
    /// figure 104 note): 01b host to controller, 10b controller to host.
    #[inline]
    pub const fn transfer_bits(self) -> u8 {
        self.0 & 3
    }
}

/// One Dataset Management range (NVMe 1.4 section 6.7, figure 366): 16
/// bytes; the command's data is an array of 1 to 256 of them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DsmRange {
    /// Context Attributes (offset 0): access hints (0: none).
    pub cattr: u32,
    /// Length in logical blocks (offset 4).
    pub length: u32,
    /// Starting LBA (offset 8).
    pub slba: u64,
}

const _: () = assert!(size_of::<DsmRange>() == 16);

impl DsmRange {
    /// Size in bytes.
    pub const SIZE: usize = 16;
    /// The most ranges one command carries.
    pub const MAX: usize = 256;

    /// `length` blocks from `slba`, no context attributes.
    #[inline]
    pub const fn new(slba: u64, length: u32) -> Self {
        DsmRange { cattr: 0, length, slba }
    }

    /// The range's bytes, as the controller reads them.
    #[inline]
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }
}

/// One Source Range entry of a Copy command in descriptor format 0h (NVM
/// Command Set 1.0 section 3.2.2.1, figure 18): 32 bytes; the command's
/// data is an array of 1 to 256 of them (no more than the namespace's
/// MSRC + 1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CopySourceRange {
    _rsvd0: u64,
    /// SLBA: the first logical block of the range (offset 8).
    pub slba: u64,
    /// NLB: Number of Logical Blocks, 0-based (offset 16).
    pub nlb: u16,
    _rsvd18: u16,
    _rsvd20: u32,
    /// EILBRT: Expected Initial Logical Block Reference Tag (offset 24),
    /// checked when the namespace has protection information.
    pub eilbrt: u32,
    /// ELBAT: Expected Logical Block Application Tag (offset 28).
    pub elbat: u16,
    /// ELBATM: Expected Logical Block Application Tag Mask (offset 30).
    pub elbatm: u16,
}

const _: () = assert!(size_of::<CopySourceRange>() == 32);

impl CopySourceRange {
    /// Size in bytes.
    pub const SIZE: usize = 32;
    /// The most ranges one command carries (NR is 8 bits, 0-based).
    pub const MAX: usize = 256;

    /// `nlb + 1` blocks from `slba`, no protection information tags.
    #[inline]
    pub const fn new(slba: u64, nlb: u16) -> Self {
        CopySourceRange { slba, nlb, ..Self::ZERO }
    }

    const ZERO: Self = CopySourceRange {
        _rsvd0: 0,
        slba: 0,
        nlb: 0,
        _rsvd18: 0,
        _rsvd20: 0,
        eilbrt: 0,
        elbat: 0,
        elbatm: 0,
    };

    /// The entry's bytes, as the controller reads them.
    #[inline]
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }
}

/// A Scatter Gather List descriptor (section 4.4, figures 112 to 118): 16
/// bytes. The first one of a command lies in its DPTR (the PRP1 and PRP2
/// fields, PSDT 01b); a Segment or Last Segment descriptor points to a list
/// of further descriptors.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SglDescriptor {
    /// Address (offset 0).
    pub address: u64,
    /// Length in bytes (offset 8).
    pub length: u32,
    _rsvd12: [u8; 3],
    /// SGL Identifier (offset 15): descriptor type in bits 7:4, sub type in
    /// bits 3:0.
    pub identifier: u8,
}

const _: () = assert!(size_of::<SglDescriptor>() == 16);

impl SglDescriptor {
    /// Size in bytes.
    pub const SIZE: usize = 16;
    /// Descriptor type 0h: SGL Data Block (`length` bytes of data at
    /// `address`).
    pub const DATA_BLOCK: u8 = 0x0;
    /// Descriptor type 2h: SGL Segment (a list of `length / 16` descriptors
    /// at `address`, not the last).
    pub const SEGMENT: u8 = 0x2;
    /// Descriptor type 3h: SGL Last Segment (the last list).
    pub const LAST_SEGMENT: u8 = 0x3;

    /// A descriptor of type `kind` (sub type 0h: an address).
    #[inline]
    pub const fn new(kind: u8, address: u64, length: u32) -> Self {
        SglDescriptor { address, length, _rsvd12: [0; 3], identifier: kind << 4 }
    }

    /// The descriptor type (bits 7:4 of the identifier).
    #[inline]
    pub const fn kind(&self) -> u8 {
        self.identifier >> 4
    }

    /// The descriptor as two quadwords: PRP1 and PRP2 of a command's DPTR,
    /// or an entry of a list.
    #[inline]
    pub const fn to_qwords(&self) -> [u64; 2] {
        [self.address, self.length as u64 | (self.identifier as u64) << 56]
    }

    /// The descriptor in two quadwords (a DPTR, or a list entry).
    #[inline]
    pub const fn from_qwords(q: [u64; 2]) -> Self {
        SglDescriptor { address: q[0], length: q[1] as u32, _rsvd12: [0; 3], identifier: (q[1] >> 56) as u8 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bit_helpers_match_the_bitfield() {
        for opc in [0u8, 1, 2, 0x7f, 0x80, 0xff] {
            assert_eq!(SubmissionEntry::new(opc, 1).cdw0, Cdw0::new().with_opc(opc));
        }
        for cid in [0u16, 1, 0x1234, 0xfffe, 0xffff] {
            let mut cmd = SubmissionEntry::new(0x02, 7);
            cmd.cdw0.set_psdt(2);
            cmd.cdw0.set_fuse(1);
            let mut expected = cmd.cdw0;
            expected.set_cid(cid);
            cmd.set_cid(cid);
            assert_eq!(cmd.cdw0, expected, "{cid:#06x}");
        }
    }

    #[test]
    fn sgl_descriptor_layout() {
        let d = SglDescriptor::new(SglDescriptor::LAST_SEGMENT, 0x1234_5000, 48);
        let b = zerocopy::IntoBytes::as_bytes(&d).to_vec();
        assert_eq!(&b[0..8], &0x1234_5000u64.to_le_bytes());
        assert_eq!(&b[8..12], &48u32.to_le_bytes());
        assert_eq!(b[15], 0x30, "type 3h in bits 7:4");
        assert_eq!(d.to_qwords(), [0x1234_5000, 48 | 0x30 << 56]);
        assert_eq!(SglDescriptor::from_qwords(d.to_qwords()), d);
        assert_eq!(SglDescriptor::new(SglDescriptor::DATA_BLOCK, 1, 2).kind(), 0);
    }

    #[test]
    fn copy_source_range_layout() {
        let r = CopySourceRange {
            eilbrt: 0x0a0b_0c0d,
            elbat: 0x1234,
            elbatm: 0xff00,
            ..CopySourceRange::new(0x2_0000_0003, 7)
        };
        let b = r.to_bytes();
        assert_eq!(&b[0..8], &[0; 8], "reserved");
        assert_eq!(&b[8..16], &0x2_0000_0003u64.to_le_bytes());
        assert_eq!(&b[16..18], &7u16.to_le_bytes());
        assert_eq!(&b[18..24], &[0; 6], "reserved");
        assert_eq!(&b[24..28], &0x0a0b_0c0du32.to_le_bytes());
        assert_eq!(&b[28..30], &0x1234u16.to_le_bytes());
        assert_eq!(&b[30..32], &0xff00u16.to_le_bytes());
    }

    #[test]
    fn dsm_range_layout() {
        let b = DsmRange { cattr: 0x0102_0304, length: 8, slba: 0x1_0000_0010 }.to_bytes();
        assert_eq!(&b[0..4], &0x0102_0304u32.to_le_bytes());
        assert_eq!(&b[4..8], &8u32.to_le_bytes());
        assert_eq!(&b[8..16], &0x1_0000_0010u64.to_le_bytes());
    }

    #[test]
    fn entry_as_qwords_follows_the_byte_layout() {
        // Figure 105 (common command format): CDW0 bytes 0-3, NSID 4-7,
        // CDW2/3 8-15, MPTR 16-23, PRP1 24-31, PRP2 32-39, CDW10-15 40-63.
        let mut c = SubmissionEntry::new(0x02, 0x1122_3344);
        c.cdw0.set_cid(0xabcd);
        (c.cdw2, c.cdw3, c.mptr, c.prp1, c.prp2) = (2, 3, 0x1600, 0x2400, 0x3200);
        (c.cdw10, c.cdw11, c.cdw12, c.cdw13, c.cdw14, c.cdw15) = (10, 11, 12, 13, 14, 15);
        assert_eq!(
            c.to_qwords(),
            [
                0x1122_3344_abcd_0002,
                3 << 32 | 2,
                0x1600,
                0x2400,
                0x3200,
                11 << 32 | 10,
                13 << 32 | 12,
                15 << 32 | 14
            ]
        );
    }

    #[test]
    fn cdw0_fields() {
        let mut c = SubmissionEntry::new(IoOpcode::READ.0, 1);
        c.cdw0.set_cid(0xbeef);
        assert_eq!(c.cdw0.opc(), 0x02);
        assert_eq!(c.cdw0.cid(), 0xbeef);
        assert_eq!(c.cdw0.into_bits(), 0xbeef_0002);
        c.cdw0.set_cid(1);
        assert_eq!(c.cdw0.into_bits(), 0x0001_0002);
        assert_eq!(Cdw0::from_bits(0xc000).psdt(), 3);
        assert_eq!(Cdw0::from_bits(0x0300).fuse(), 3);
    }

    #[test]
    fn entries_from_bytes() {
        let mut bytes = [0u8; 64];
        bytes[0] = 0x02;
        bytes[2..4].copy_from_slice(&0x1234u16.to_le_bytes());
        bytes[4] = 7;
        bytes[24..32].copy_from_slice(&0xdead_b000u64.to_le_bytes());
        let e = SubmissionEntry::read_from_bytes(&bytes[..]).expect("64 bytes");
        assert_eq!((e.cdw0.opc(), e.cdw0.cid(), e.nsid, e.prp1), (2, 0x1234, 7, 0xdead_b000));
        assert_eq!(e.as_bytes(), &bytes[..]);
    }

    #[test]
    fn completion_phase_and_status() {
        let e = CompletionEntry { status: Status::from_bits(0x0001), ..Default::default() };
        assert!(e.phase());
        assert!(e.status.is_success());
        // SC 0x02 (invalid field), DNR, phase 0.
        let e = CompletionEntry { status: Status::from_bits((0x02 << 1) | (1 << 15)), ..Default::default() };
        assert!(!e.phase());
        assert!(e.status.dnr());
        assert!(!e.status.is_success());
    }

    #[test]
    fn directions() {
        assert_eq!(IoOpcode::WRITE.transfer_bits(), 1);
        assert_eq!(IoOpcode::READ.transfer_bits(), 2);
        assert_eq!(IoOpcode::FLUSH.transfer_bits(), 0);
    }
}
