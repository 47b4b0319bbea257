//! Command-specific dwords that have fields, as `bitfield-struct` types. A
//! command stores them as plain `u32`s (`SubmissionEntry::cdw10` and so on):
//! build one with `with_*` and `into_bits()`, read one with `from_bits()`.

use crate::ids::{AsyncEventInfo, AsyncEventType, Cns, Csi, Fid, Lid};
use bitfield_struct::bitfield;

/// CDW10 of Create I/O Completion Queue and Create I/O Submission Queue
/// (sections 5.3 and 5.4, figures 152 and 155).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct CreateIoQueueCdw10 {
    /// QID: the queue identifier.
    pub qid: u16,
    /// QSIZE: the queue size in entries, 0-based.
    pub qsize: u16,
}

/// CDW11 of Create I/O Completion Queue (section 5.3, figure 153).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct CreateIoCqCdw11 {
    /// PC: Physically Contiguous.
    pub pc: bool,
    /// IEN: Interrupts Enabled.
    pub ien: bool,
    #[bits(14)]
    __: u16,
    /// IV: Interrupt Vector (MSI-X table entry).
    pub iv: u16,
}

/// CDW11 of Create I/O Submission Queue (section 5.4, figure 156).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct CreateIoSqCdw11 {
    /// PC: Physically Contiguous.
    pub pc: bool,
    /// QPRIO: Queue Priority for weighted round robin (0 urgent, 1 high,
    /// 2 medium, 3 low).
    #[bits(2)]
    pub qprio: u8,
    #[bits(13)]
    __: u16,
    /// CQID: the completion queue this submission queue posts to.
    pub cqid: u16,
}

/// CDW10 of Delete I/O Submission Queue and Delete I/O Completion Queue
/// (sections 5.5 and 5.6, figures 158 and 160).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct DeleteIoQueueCdw10 {
    /// QID: the queue identifier.
    pub qid: u16,
    __: u16,
}

/// CDW10 of Identify (section 5.15, figure 243).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct IdentifyCdw10 {
    /// CNS: which data structure to return.
    #[bits(8)]
    pub cns: Cns,
    __: u8,
    /// CNTID: Controller Identifier (for the controller lists).
    pub cntid: u16,
}

/// CDW11 of Identify (Base 2.0 figure 272).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct IdentifyCdw11 {
    /// CNS Specific Identifier (NVM Set or Endurance Group).
    pub cnssid: u16,
    __: u8,
    /// CSI: the command set of an I/O command set specific structure.
    #[bits(8)]
    pub csi: Csi,
}

/// CDW10 of Abort (section 5.1, figure 141).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct AbortCdw10 {
    /// SQID: the submission queue of the command to abort.
    pub sqid: u16,
    /// CID: the command to abort.
    pub cid: u16,
}

/// CDW10 of Get Features and Set Features (sections 5.15 and 5.21,
/// figures 227 and 270): FID, SEL (Get) and SV (Set).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct FeaturesCdw10 {
    /// FID: Feature Identifier.
    #[bits(8)]
    pub fid: Fid,
    /// SEL (Get Features): 0 current, 1 default, 2 saved, 3 supported
    /// capabilities.
    #[bits(3)]
    pub sel: u8,
    #[bits(20)]
    __: u32,
    /// SV (Set Features): Save the value across resets.
    pub sv: bool,
}

/// Number of Queues (FID 07h): CDW11 of Set Features (requested, 0-based) and
/// DW0 of its completion (allocated, 0-based) (section 5.21.1.7, figures 285
/// and 286).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct NumberOfQueues {
    /// NSQR / NSQA: I/O submission queues, 0-based.
    pub nsq: u16,
    /// NCQR / NCQA: I/O completion queues, 0-based.
    pub ncq: u16,
}

/// SEL of Get Features (section 5.15, figure 270): which value to return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Select {
    /// The value in use now.
    Current = 0,
    /// The default value.
    Default = 1,
    /// The value saved across resets.
    Saved = 2,
    /// The feature's capabilities ([`FeatureCapabilities`] in DW0).
    Supported = 3,
}

/// DW0 of Get Features with SEL = supported capabilities (figure 271).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct FeatureCapabilities {
    /// The feature can be saved across resets.
    pub saveable: bool,
    /// The feature is namespace specific.
    pub namespace_specific: bool,
    /// The feature can be changed.
    pub changeable: bool,
    #[bits(29)]
    __: u32,
}

/// Arbitration (FID 01h, section 5.21.1.1, figure 275).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Arbitration {
    /// AB: Arbitration Burst, as log2 of commands (7: no limit).
    #[bits(3)]
    pub burst: u8,
    #[bits(5)]
    __: u8,
    /// LPW: Low Priority Weight, 0-based.
    pub low_weight: u8,
    /// MPW: Medium Priority Weight, 0-based.
    pub medium_weight: u8,
    /// HPW: High Priority Weight, 0-based.
    pub high_weight: u8,
}

/// Power Management (FID 02h, section 5.21.1.2, figure 276).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct PowerManagement {
    /// PS: Power State.
    #[bits(5)]
    pub power_state: u8,
    /// WH: Workload Hint.
    #[bits(3)]
    pub workload_hint: u8,
    #[bits(24)]
    __: u32,
}

/// Temperature Threshold (FID 04h, section 5.21.1.4, figure 279).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct TemperatureThreshold {
    /// TMPTH: the threshold, in kelvins.
    pub kelvin: u16,
    /// TMPSEL: 0 the composite temperature, 1 to 8 a temperature sensor.
    #[bits(4)]
    pub sensor: u8,
    /// THSEL: 0 over-temperature, 1 under-temperature threshold.
    #[bits(2)]
    pub under: u8,
    #[bits(10)]
    __: u16,
}

/// Error Recovery (FID 05h, section 5.21.1.5, figure 281).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct ErrorRecovery {
    /// TLER: Time Limited Error Recovery, in 100 ms units (0: none).
    pub tler: u16,
    /// DULBE: Deallocated or Unwritten Logical Block Error Enable.
    pub dulbe: bool,
    #[bits(15)]
    __: u16,
}

/// Volatile Write Cache (FID 06h, section 5.21.1.6, figure 283).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct VolatileWriteCache {
    /// WCE: Volatile Write Cache Enable.
    pub enabled: bool,
    #[bits(31)]
    __: u32,
}

/// Host Memory Buffer, CDW11 of Set Features and DW0 of Get Features (FID
/// 0Dh, section 5.21.1.13). CDW12 carries HSIZE (memory pages), CDW13 and
/// CDW14 the descriptor list's address, CDW15 its entry count.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct HostMemoryBuffer {
    /// EHM: Enable Host Memory.
    pub ehm: bool,
    /// MR: Memory Return (the buffer is the one the controller had before,
    /// contents unchanged since).
    pub mr: bool,
    #[bits(30)]
    __: u32,
}

/// Interrupt Coalescing (FID 08h, section 5.21.1.8, figure 287).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct InterruptCoalescing {
    /// THR: Aggregation Threshold, 0-based completions.
    pub threshold: u8,
    /// TIME: Aggregation Time, in 100 µs units.
    pub time: u8,
    __: u16,
}

/// Asynchronous Event Configuration (FID 0Bh, section 5.21.1.11, figure
/// 293): which events the controller reports.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct AsyncEventConfig {
    /// SMART / Health Critical Warnings: one bit per Critical Warning bit.
    pub smart_warnings: u8,
    /// Namespace Attribute Notices.
    pub namespace_attribute: bool,
    /// Firmware Activation Notices.
    pub firmware_activation: bool,
    /// Telemetry Log Notices.
    pub telemetry_log: bool,
    /// Asymmetric Namespace Access Change Notices.
    pub ana_change: bool,
    /// Predictable Latency Event Aggregate Log Change Notices.
    pub predictable_latency: bool,
    /// LBA Status Information Notices.
    pub lba_status: bool,
    /// Endurance Group Event Aggregate Log Change Notices.
    pub endurance_group: bool,
    #[bits(16)]
    __: u32,
    /// Discovery Log Page Change Notification (fabrics).
    pub discovery_log: bool,
}

/// An Asynchronous Event Request's completion DW0 (section 5.2.1, figure
/// 146): what happened, and the log page that tells more (reading it with
/// RAE clear lets the controller report events of this type again).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct AsyncEventCompletion {
    /// Asynchronous Event Type.
    #[bits(3)]
    pub event_type: AsyncEventType,
    #[bits(5)]
    __: u8,
    /// Asynchronous Event Information.
    #[bits(8)]
    pub info: AsyncEventInfo,
    /// Log Page Identifier associated with the event.
    #[bits(8)]
    pub log_page: Lid,
    #[bits(8)]
    __: u8,
}

/// CDW10 of Firmware Commit (NVMe 1.4, the Firmware Commit command).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct FirmwareCommitCdw10 {
    /// FS: Firmware Slot (0: the controller chooses).
    #[bits(3)]
    pub slot: u8,
    /// CA: Commit Action.
    #[bits(3)]
    pub action: u8,
    #[bits(25)]
    __: u32,
    /// BPID: Boot Partition ID (commit actions 6 and 7).
    pub bpid: bool,
}

/// Abort's completion DW0 (section 5.1.1, figure 142).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct AbortResult {
    /// IANP: Immediate Abort Not Performed: set when the command was not
    /// aborted.
    pub not_aborted: bool,
    #[bits(31)]
    __: u32,
}

/// CDW10 of Get Log Page (section 5.14, figure 189).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct GetLogPageCdw10 {
    /// LID: Log Page Identifier.
    #[bits(8)]
    pub lid: Lid,
    /// LSP: Log Specific Field.
    #[bits(7)]
    pub lsp: u8,
    /// RAE: Retain Asynchronous Event.
    pub rae: bool,
    /// NUMDL: Number of Dwords Lower (0-based, with NUMDU).
    pub numdl: u16,
}

/// CDW11 of Get Log Page (section 5.14, figure 190).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct GetLogPageCdw11 {
    /// NUMDU: Number of Dwords Upper.
    pub numdu: u16,
    /// LSI: Log Specific Identifier.
    pub lsi: u16,
}

/// CDW11 of Dataset Management (NVMe 1.4 section 6.7, figure 364): the
/// attributes of every range. CDW10 bits 7:0 hold NR, the number of
/// ranges, 0-based.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct DsmAttributes {
    /// IDR: Attribute – Integral Dataset for Read.
    pub idr: bool,
    /// IDW: Attribute – Integral Dataset for Write.
    pub idw: bool,
    /// AD: Attribute – Deallocate.
    pub ad: bool,
    #[bits(29)]
    __: u32,
}

/// CDW12 of Read, Write, Compare and similar NVM commands (NVM Command Set
/// 1.0 figures 21 and 37; Base 1.4 figures 346 and 360).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct ReadWriteCdw12 {
    /// NLB: Number of Logical Blocks, 0-based.
    pub nlb: u16,
    #[bits(4)]
    __: u8,
    /// DTYPE: Directive Type (writes).
    #[bits(4)]
    pub dtype: u8,
    /// STC: Storage Tag Check (2.0).
    pub stc: bool,
    __: bool,
    /// PRINFO: Protection Information Field (PRACT in bit 3, PRCHK in bits
    /// 2:0).
    #[bits(4)]
    pub prinfo: u8,
    /// FUA: Force Unit Access.
    pub fua: bool,
    /// LR: Limited Retry.
    pub lr: bool,
}

/// CDW12 of Copy (NVM Command Set 1.0 section 3.2.2, figure 16). CDW10
/// and CDW11 hold SDLBA, the first destination block.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct CopyCdw12 {
    /// NR: Number of Ranges, 0-based.
    pub nr: u8,
    /// DF: Descriptor Format of the source ranges (0h: figure 18).
    #[bits(4)]
    pub df: u8,
    /// PRINFOR: Protection Information Field for the reads.
    #[bits(4)]
    pub prinfor: u8,
    #[bits(4)]
    __: u8,
    /// DTYPE: Directive Type of the write.
    #[bits(4)]
    pub dtype: u8,
    __: bool,
    /// STCW: Storage Tag Check for the write.
    pub stcw: bool,
    /// PRINFOW: Protection Information Field for the write.
    #[bits(4)]
    pub prinfow: u8,
    /// FUA: Force Unit Access.
    pub fua: bool,
    /// LR: Limited Retry.
    pub lr: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_cdw12() {
        assert_eq!(CopyCdw12::new().with_nr(0xff).into_bits(), 0xff);
        assert_eq!(CopyCdw12::new().with_df(1).into_bits(), 1 << 8);
        assert_eq!(CopyCdw12::new().with_prinfor(0xf).into_bits(), 0xf << 12);
        assert_eq!(CopyCdw12::new().with_dtype(2).into_bits(), 2 << 20);
        assert_eq!(CopyCdw12::new().with_stcw(true).into_bits(), 1 << 25);
        assert_eq!(CopyCdw12::new().with_prinfow(0xf).into_bits(), 0xf << 26);
        assert_eq!(CopyCdw12::new().with_fua(true).with_lr(true).into_bits(), 3 << 30);
    }

    /// Firmware Commit: FS in bits 2:0, CA in 5:3, BPID in bit 31.
    #[test]
    fn firmware_commit() {
        let c = FirmwareCommitCdw10::new().with_slot(2).with_action(3).with_bpid(true);
        assert_eq!(c.into_bits(), 0x8000_001a);
    }

    /// Figure 146: type in bits 2:0, information in 15:8, log page in 23:16.
    #[test]
    fn async_event_completion() {
        let e = AsyncEventCompletion::from_bits(0x0004_0002);
        assert_eq!(
            (e.event_type(), e.info(), e.log_page()),
            (AsyncEventType::NOTICE, AsyncEventInfo(0), Lid(4))
        );
        let e = AsyncEventCompletion::from_bits(0xff02_01f9);
        assert_eq!(e.event_type(), AsyncEventType::SMART_HEALTH, "bits 7:3 are reserved");
        assert_eq!(
            (e.info(), e.log_page()),
            (AsyncEventInfo::SMART_TEMPERATURE_THRESHOLD, Lid::SMART_HEALTH)
        );
    }

    #[test]
    fn layouts_match_the_figures() {
        assert_eq!(CreateIoQueueCdw10::new().with_qid(3).with_qsize(255).into_bits(), 0x00ff_0003);
        assert_eq!(CreateIoCqCdw11::new().with_pc(true).with_iv(5).into_bits(), 0x0005_0001);
        assert_eq!(CreateIoSqCdw11::new().with_pc(true).with_qprio(2).with_cqid(3).into_bits(), 0x0003_0005);
        assert_eq!(IdentifyCdw10::new().with_cns(Cns::CONTROLLER).into_bits(), 1);
        assert_eq!(AbortCdw10::new().with_sqid(1).with_cid(0xabcd).into_bits(), 0xabcd_0001);
        assert_eq!(
            FeaturesCdw10::new().with_fid(Fid::NUMBER_OF_QUEUES).with_sv(true).into_bits(),
            0x8000_0007
        );
        assert_eq!(FeaturesCdw10::new().with_sel(3).into_bits(), 3 << 8);
        assert_eq!(NumberOfQueues::from_bits(0x0003_0007).nsq(), 7);
        assert!(AbortResult::from_bits(1).not_aborted());
        assert_eq!(ReadWriteCdw12::new().with_nlb(7).with_fua(true).into_bits(), (1 << 30) | 7);
        assert_eq!(ReadWriteCdw12::new().with_prinfo(0b1111).into_bits(), 0xf << 26);
        assert_eq!(ReadWriteCdw12::new().with_lr(true).into_bits(), 1 << 31);
        assert_eq!(
            GetLogPageCdw10::new().with_lid(Lid::SMART_HEALTH).with_rae(true).with_numdl(127).into_bits(),
            (127 << 16) | (1 << 15) | 2
        );
    }
}
