//! Controller registers (NVMe Base Specification 1.4, section 3.1 "Register
//! Definition"): offsets within BAR0 and the bit layout of each register.

use bitfield_struct::bitfield;

/// Register offsets in BAR0 (section 3.1, figure 78).
pub mod offset {
    /// CAP: Controller Capabilities (64 bits).
    pub const CAP: usize = 0x00;
    /// VS: Version.
    pub const VS: usize = 0x08;
    /// INTMS: Interrupt Mask Set.
    pub const INTMS: usize = 0x0c;
    /// INTMC: Interrupt Mask Clear.
    pub const INTMC: usize = 0x10;
    /// CC: Controller Configuration.
    pub const CC: usize = 0x14;
    /// CSTS: Controller Status.
    pub const CSTS: usize = 0x1c;
    /// NSSR: NVM Subsystem Reset.
    pub const NSSR: usize = 0x20;
    /// AQA: Admin Queue Attributes.
    pub const AQA: usize = 0x24;
    /// ASQ: Admin Submission Queue Base Address (64 bits).
    pub const ASQ: usize = 0x28;
    /// ACQ: Admin Completion Queue Base Address (64 bits).
    pub const ACQ: usize = 0x30;
    /// CMBLOC: Controller Memory Buffer Location.
    pub const CMBLOC: usize = 0x38;
    /// CMBSZ: Controller Memory Buffer Size.
    pub const CMBSZ: usize = 0x3c;
    /// CMBMSC: Controller Memory Buffer Memory Space Control (64 bits,
    /// NVMe 1.4).
    pub const CMBMSC: usize = 0x50;
    /// CMBSTS: Controller Memory Buffer Status (NVMe 1.4).
    pub const CMBSTS: usize = 0x58;
    /// The first doorbell register (SQ 0 Tail Doorbell).
    pub const DOORBELLS: usize = 0x1000;
}

/// The byte offset of a queue's doorbell (section 3.1.24 and 3.1.25):
/// `0x1000 + ((2 * qid + is_cq) << (2 + CAP.DSTRD))`.
pub const fn doorbell_offset(qid: u16, completion: bool, dstrd: u8) -> usize {
    offset::DOORBELLS + (((2 * qid as usize) + completion as usize) << (2 + dstrd as usize))
}

/// CAP: Controller Capabilities (section 3.1.1).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Cap {
    /// MQES: Maximum Queue Entries Supported, 0-based (a value of 0 is invalid).
    pub mqes: u16,
    /// CQR: Contiguous Queues Required.
    pub cqr: bool,
    /// AMS: Arbitration Mechanism Supported (bit 0 weighted round robin with
    /// urgent, bit 1 vendor specific).
    #[bits(2)]
    pub ams: u8,
    #[bits(5)]
    __: u8,
    /// TO: Timeout, in 500 ms units: the worst case time to wait for CSTS.RDY
    /// to change after CC.EN changes.
    pub to: u8,
    /// DSTRD: Doorbell Stride, the stride is `2 ^ (2 + DSTRD)` bytes.
    #[bits(4)]
    pub dstrd: u8,
    /// NSSRS: NVM Subsystem Reset Supported.
    pub nssrs: bool,
    /// CSS: Command Sets Supported (bit 0 NVM command set, bit 7 admin only).
    pub css: u8,
    /// BPS: Boot Partition Support.
    pub bps: bool,
    #[bits(2)]
    __: u8,
    /// MPSMIN: Memory Page Size Minimum, `2 ^ (12 + MPSMIN)` bytes.
    #[bits(4)]
    pub mpsmin: u8,
    /// MPSMAX: Memory Page Size Maximum, `2 ^ (12 + MPSMAX)` bytes.
    #[bits(4)]
    pub mpsmax: u8,
    /// PMRS: Persistent Memory Region Supported.
    pub pmrs: bool,
    /// CMBS: Controller Memory Buffer Supported.
    pub cmbs: bool,
    #[bits(6)]
    __: u8,
}

/// VS: Version (section 3.1.2).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Vs {
    /// TER: Tertiary Version Number.
    pub ter: u8,
    /// MNR: Minor Version Number.
    pub mnr: u8,
    /// MJR: Major Version Number.
    pub mjr: u16,
}

/// CC: Controller Configuration (section 3.1.5).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Cc {
    /// EN: Enable.
    pub en: bool,
    #[bits(3)]
    __: u8,
    /// CSS: I/O Command Set Selected (0 = NVM command set).
    #[bits(3)]
    pub css: u8,
    /// MPS: Memory Page Size, `2 ^ (12 + MPS)` bytes.
    #[bits(4)]
    pub mps: u8,
    /// AMS: Arbitration Mechanism Selected (0 round robin, 1 weighted round
    /// robin with urgent, 7 vendor specific).
    #[bits(3)]
    pub ams: u8,
    /// SHN: Shutdown Notification (0 none, 1 normal, 2 abrupt).
    #[bits(2)]
    pub shn: u8,
    /// IOSQES: I/O Submission Queue Entry Size, `2 ^ IOSQES` bytes (6 for 64).
    #[bits(4)]
    pub iosqes: u8,
    /// IOCQES: I/O Completion Queue Entry Size, `2 ^ IOCQES` bytes (4 for 16).
    #[bits(4)]
    pub iocqes: u8,
    #[bits(8)]
    __: u8,
}

/// CC.SHN values (section 3.1.5).
pub mod shn {
    /// No notification; no effect.
    pub const NONE: u8 = 0;
    /// Normal shutdown notification.
    pub const NORMAL: u8 = 1;
    /// Abrupt shutdown notification.
    pub const ABRUPT: u8 = 2;
}

/// CSTS: Controller Status (section 3.1.6).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Csts {
    /// RDY: Ready.
    pub rdy: bool,
    /// CFS: Controller Fatal Status.
    pub cfs: bool,
    /// SHST: Shutdown Status (0 normal operation, 1 occurring, 2 complete).
    #[bits(2)]
    pub shst: u8,
    /// NSSRO: NVM Subsystem Reset Occurred.
    pub nssro: bool,
    /// PP: Processing Paused.
    pub pp: bool,
    #[bits(26)]
    __: u32,
}

/// CSTS.SHST values (section 3.1.6).
pub mod shst {
    /// Normal operation.
    pub const NORMAL: u8 = 0;
    /// Shutdown processing occurring.
    pub const OCCURRING: u8 = 1;
    /// Shutdown processing complete.
    pub const COMPLETE: u8 = 2;
}

/// AQA: Admin Queue Attributes (section 3.1.8).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Aqa {
    /// ASQS: Admin Submission Queue Size, 0-based.
    #[bits(12)]
    pub asqs: u16,
    #[bits(4)]
    __: u8,
    /// ACQS: Admin Completion Queue Size, 0-based.
    #[bits(12)]
    pub acqs: u16,
    #[bits(4)]
    __: u8,
}

/// CMBLOC: Controller Memory Buffer Location (section 3.1.11).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Cmbloc {
    /// BIR: Base Indicator Register, the BAR that holds the CMB.
    #[bits(3)]
    pub bir: u8,
    /// CQMMS: CMB Queue Mixed Memory Support.
    pub cqmms: bool,
    /// CQPDS: CMB Queue Physically Discontiguous Support.
    pub cqpds: bool,
    /// CDPMLS: CMB Data Pointer Mixed Locations Support.
    pub cdpmls: bool,
    /// CDPCILS: CMB Data Pointer and Command Independent Locations Support.
    pub cdpcils: bool,
    /// CDMMMS: CMB Data Metadata Mixed Memory Support.
    pub cdmmms: bool,
    /// CQDA: CMB Queue Dword Alignment.
    pub cqda: bool,
    #[bits(3)]
    __: u8,
    /// OFST: Offset in the BAR, in units of CMBSZ.SZU.
    #[bits(20)]
    pub ofst: u32,
}

/// CMBSZ: Controller Memory Buffer Size (section 3.1.12).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Cmbsz {
    /// SQS: Submission Queue Support.
    pub sqs: bool,
    /// CQS: Completion Queue Support.
    pub cqs: bool,
    /// LISTS: PRP SGL List Support.
    pub lists: bool,
    /// RDS: Read Data Support.
    pub rds: bool,
    /// WDS: Write Data Support.
    pub wds: bool,
    #[bits(3)]
    __: u8,
    /// SZU: Size Units (0 4 KiB, 1 64 KiB, 2 1 MiB, 3 16 MiB, 4 256 MiB,
    /// 5 4 GiB, 6 64 GiB).
    #[bits(4)]
    pub szu: u8,
    /// SZ: Size, in units of SZU.
    #[bits(20)]
    pub sz: u32,
}

impl Cmbsz {
    /// The CMB size in bytes, or `None` for a reserved SZU or an overflow.
    pub fn size_bytes(&self) -> Option<u64> {
        if self.szu() > 6 {
            return None;
        }
        (self.sz() as u64).checked_mul(1u64 << (12 + 4 * self.szu() as u32))
    }
}

/// CMBMSC: Controller Memory Buffer Memory Space Control (NVMe 1.4 section
/// 3.1.17). Exists where CAP.CMBS is set.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Cmbmsc {
    /// CRE: Capabilities Registers Enabled (CMBLOC and CMBSZ read non-zero).
    pub cre: bool,
    /// CMSE: Controller Memory Space Enable (addresses from CBA on reach
    /// the CMB).
    pub cmse: bool,
    #[bits(10)]
    __: u16,
    /// CBA: Controller Base Address, bits 63:12 of the address where the
    /// controller places the CMB.
    #[bits(52)]
    pub cba: u64,
}

impl Cmbmsc {
    /// Capabilities and memory space on, the CMB at `base` (4 KiB aligned:
    /// the low 12 bits are dropped).
    pub fn enabled_at(base: u64) -> Self {
        Cmbmsc::new().with_cre(true).with_cmse(true).with_cba(base >> 12)
    }
}

/// CMBSTS: Controller Memory Buffer Status (NVMe 1.4 section 3.1.18).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Cmbsts {
    /// CBAI: Controller Base Address Invalid (the CBA written last was
    /// refused, and the memory space stays off).
    pub cbai: bool,
    #[bits(31)]
    __: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_of_qemu_decodes() {
        // CAP as QEMU 7.2's controller reports it: MQES 2047, CQR, TO 15,
        // CSS NVM + admin-only bits, MPSMAX 4 (64 KiB), CMBS off.
        let cap = Cap::from_bits(0x0040_0020_0f01_07ff | (1u64 << 37));
        assert_eq!(cap.mqes(), 2047);
        assert!(cap.cqr());
        assert_eq!(cap.to(), 15);
        assert_eq!(cap.dstrd(), 0);
        assert_eq!(cap.css() & 1, 1);
        assert_eq!(cap.mpsmin(), 0);
        assert_eq!(cap.mpsmax(), 4);
    }

    #[test]
    fn cc_encodes_like_linux() {
        // EN, CSS 0, MPS 0 (4 KiB), AMS 0, SHN 0, IOSQES 6, IOCQES 4.
        let cc = Cc::new().with_en(true).with_iosqes(6).with_iocqes(4);
        assert_eq!(cc.into_bits(), 0x0046_0001);
        let cc = cc.with_shn(shn::NORMAL);
        assert_eq!(cc.into_bits(), 0x0046_4001);
        assert_eq!(Cc::new().with_mps(4).with_ams(1).into_bits(), (4 << 7) | (1 << 11));
    }

    #[test]
    fn csts_and_aqa() {
        let csts = Csts::from_bits(0b1011);
        assert!(csts.rdy() && csts.cfs());
        assert_eq!(csts.shst(), shst::COMPLETE);
        let aqa = Aqa::new().with_asqs(31).with_acqs(31);
        assert_eq!(aqa.into_bits(), 0x001f_001f);
    }

    #[test]
    fn doorbells_follow_the_stride() {
        assert_eq!(doorbell_offset(0, false, 0), 0x1000);
        assert_eq!(doorbell_offset(0, true, 0), 0x1004);
        assert_eq!(doorbell_offset(3, false, 0), 0x1018);
        assert_eq!(doorbell_offset(3, true, 2), 0x1000 + (7 << 4));
    }

    #[test]
    fn cmb_memory_space_control() {
        // CRE bit 0, CMSE bit 1, CBA in bits 63:12.
        assert_eq!(Cmbmsc::enabled_at(0xc040_0000).into_bits(), 0xc040_0003);
        assert_eq!(Cmbmsc::enabled_at(0x80_0000_1000).into_bits(), 0x80_0000_1003);
        assert_eq!(Cmbmsc::new().with_cre(true).into_bits(), 1);
        assert!(Cmbsts::from_bits(1).cbai());
    }

    #[test]
    fn cmb_size() {
        let sz = Cmbsz::new().with_szu(2).with_sz(64);
        assert_eq!(sz.size_bytes(), Some(64 << 20));
        assert_eq!(Cmbsz::new().with_szu(7).with_sz(1).size_bytes(), None);
    }
}
