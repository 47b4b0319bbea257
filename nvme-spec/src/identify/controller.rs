//! Identify Controller (CNS 01h) and the bitfields of its capability fields.

use super::{as_str, assert_layout, le_u128, trim_padding, PowerStateDescriptor, IDENTIFY_DATA_SIZE};
use bitfield_struct::bitfield;
use core::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Declares a capability bitfield of Identify Controller with the derives the
/// layout needs.
macro_rules! capability {
    ($(#[$meta:meta])* $name:ident($int:ident) { $($body:tt)* }) => {
        $(#[$meta])*
        #[bitfield($int)]
        #[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
        pub struct $name { $($body)* }
    };
}
pub(crate) use capability;

capability! {
    /// CMIC (offset 76): Controller Multi-Path I/O and Namespace Sharing
    /// Capabilities.
    Cmic(u8) {
        /// The NVM subsystem may have more than one port.
        pub multiple_ports: bool,
        /// The NVM subsystem may have more than one controller.
        pub multiple_controllers: bool,
        /// The controller is associated with an SR-IOV virtual function.
        pub sriov: bool,
        /// ANARS: Asymmetric Namespace Access Reporting Support.
        pub anars: bool,
        #[bits(4)]
        __: u8,
    }
}

capability! {
    /// OAES (offset 92): Optional Asynchronous Events Supported.
    Oaes(u32) {
        #[bits(8)]
        __: u8,
        /// Namespace Attribute Notices.
        pub namespace_attribute: bool,
        /// Firmware Activation Notices.
        pub firmware_activation: bool,
        __: bool,
        /// Asymmetric Namespace Access Change Notices.
        pub ana_change: bool,
        /// Predictable Latency Event Aggregate Log Change Notices.
        pub predictable_latency: bool,
        /// LBA Status Information Notices.
        pub lba_status: bool,
        /// Endurance Group Event Aggregate Log Page Change Notices.
        pub endurance_group: bool,
        /// Normal NVM Subsystem Shutdown event (2.0).
        pub normal_shutdown: bool,
        __: u16,
    }
}

capability! {
    /// CTRATT (offset 96): Controller Attributes.
    Ctratt(u32) {
        /// 128-bit Host Identifier support.
        pub hid128: bool,
        /// Non-Operational Power State Permissive Mode.
        pub nopspm: bool,
        /// NVM Sets.
        pub nvm_sets: bool,
        /// Read Recovery Levels.
        pub read_recovery_levels: bool,
        /// Endurance Groups.
        pub endurance_groups: bool,
        /// Predictable Latency Mode.
        pub predictable_latency: bool,
        /// Traffic Based Keep Alive.
        pub tbkas: bool,
        /// Namespace Granularity.
        pub namespace_granularity: bool,
        /// SQ Associations.
        pub sq_associations: bool,
        /// UUID List.
        pub uuid_list: bool,
        #[bits(22)]
        __: u32,
    }
}

capability! {
    /// OACS (offset 256): Optional Admin Command Support.
    Oacs(u16) {
        /// Security Send and Security Receive.
        pub security: bool,
        /// Format NVM.
        pub format: bool,
        /// Firmware Commit and Firmware Image Download.
        pub firmware: bool,
        /// Namespace Management and Namespace Attachment.
        pub namespace_management: bool,
        /// Device Self-test.
        pub self_test: bool,
        /// Directives.
        pub directives: bool,
        /// NVMe-MI Send and NVMe-MI Receive.
        pub nvme_mi: bool,
        /// Virtualization Management.
        pub virtualization_management: bool,
        /// Doorbell Buffer Config.
        pub doorbell_buffer_config: bool,
        /// Get LBA Status.
        pub get_lba_status: bool,
        /// Command and Feature Lockdown.
        pub lockdown: bool,
        #[bits(5)]
        __: u8,
    }
}

capability! {
    /// FRMW (offset 260): Firmware Updates.
    Frmw(u8) {
        /// Slot 1 is read only.
        pub slot1_read_only: bool,
        /// The number of firmware slots (1 to 7).
        #[bits(3)]
        pub slots: u8,
        /// Firmware activation without a reset.
        pub activation_without_reset: bool,
        /// Multiple update detection (2.0).
        pub multiple_update_detection: bool,
        #[bits(2)]
        __: u8,
    }
}

capability! {
    /// LPA (offset 261): Log Page Attributes.
    Lpa(u8) {
        /// SMART / Health information per namespace.
        pub smart_per_namespace: bool,
        /// Commands Supported and Effects log page.
        pub commands_effects: bool,
        /// Extended data for Get Log Page (NUMDU, offsets).
        pub extended_data: bool,
        /// Telemetry log pages and notices.
        pub telemetry: bool,
        /// Persistent Event log.
        pub persistent_event: bool,
        #[bits(3)]
        __: u8,
    }
}

capability! {
    /// SQES and CQES (offsets 512, 513): queue entry sizes as log2 of bytes.
    QueueEntrySizes(u8) {
        /// The required (smallest) entry size.
        #[bits(4)]
        pub required: u8,
        /// The largest entry size.
        #[bits(4)]
        pub maximum: u8,
    }
}

capability! {
    /// ONCS (offset 520): Optional NVM Command Support.
    Oncs(u16) {
        /// Compare.
        pub compare: bool,
        /// Write Uncorrectable.
        pub write_uncorrectable: bool,
        /// Dataset Management.
        pub dataset_management: bool,
        /// Write Zeroes.
        pub write_zeroes: bool,
        /// The Save field of Set Features and Select of Get Features.
        pub save_select: bool,
        /// Reservations.
        pub reservations: bool,
        /// Timestamp feature.
        pub timestamp: bool,
        /// Verify.
        pub verify: bool,
        /// Copy.
        pub copy: bool,
        #[bits(7)]
        __: u8,
    }
}

capability! {
    /// FUSES (offset 522): Fused Operation Support.
    Fuses(u16) {
        /// Compare and Write as a fused operation.
        pub compare_and_write: bool,
        #[bits(15)]
        __: u16,
    }
}

capability! {
    /// FNA (offset 524): Format NVM Attributes.
    Fna(u8) {
        /// A format applies to every namespace of the controller.
        pub format_all_namespaces: bool,
        /// A secure erase applies to every namespace.
        pub erase_all_namespaces: bool,
        /// Cryptographic erase is supported.
        pub cryptographic_erase: bool,
        /// Format of NSID FFFFFFFFh is not supported (2.0).
        pub no_broadcast_format: bool,
        #[bits(4)]
        __: u8,
    }
}

capability! {
    /// VWC (offset 525): Volatile Write Cache.
    Vwc(u8) {
        /// A volatile write cache is present.
        pub present: bool,
        /// Flush Behavior for NSID FFFFFFFFh (0 not reported, 2 not
        /// supported, 3 supported).
        #[bits(2)]
        pub flush_broadcast: u8,
        #[bits(5)]
        __: u8,
    }
}

capability! {
    /// SGLS (offset 536): SGL Support.
    Sgls(u32) {
        /// 00b SGLs not supported, 01b supported without alignment
        /// requirements, 10b supported with dword alignment and granularity,
        /// 11b reserved.
        #[bits(2)]
        pub support: u8,
        /// Keyed SGL Data Block descriptor.
        pub keyed: bool,
        #[bits(13)]
        __: u16,
        /// SGL Bit Bucket descriptor.
        pub bit_bucket: bool,
        /// Byte-aligned contiguous physical buffer of metadata (MPTR).
        pub byte_aligned_metadata: bool,
        /// SGLs longer than the data transfer.
        pub longer_than_data: bool,
        /// MPTR may hold a single SGL descriptor.
        pub metadata_sgl: bool,
        /// The Address field of SGL Data Block descriptors as an offset.
        pub address_as_offset: bool,
        /// Transport SGL Data Block descriptor.
        pub transport: bool,
        #[bits(10)]
        __: u16,
    }
}

impl Sgls {
    /// SGLs are supported for I/O commands (SUPPORT is 01b or 10b).
    pub const fn supported(&self) -> bool {
        matches!(self.support(), 0b01 | 0b10)
    }

    /// SGL data blocks must be dword aligned (SUPPORT is 10b).
    pub const fn dword_aligned(&self) -> bool {
        self.support() == 0b10
    }
}

/// Identify Controller data structure (CNS 01h), 4096 bytes.
///
/// Base 2.0 figure "Identify Controller Data Structure, I/O Command Set
/// Independent"; 1.4 section 5.15.2.2. Multi-byte fields are little-endian.
#[repr(C)]
#[derive(Clone, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IdentifyController {
    // ----- Controller Capabilities and Features (0..256) -----
    /// VID (offset 0): PCI Vendor ID.
    pub vid: u16,
    /// SSVID (offset 2): PCI Subsystem Vendor ID.
    pub ssvid: u16,
    /// SN (offset 4): Serial Number, ASCII, padded with spaces.
    pub sn: [u8; 20],
    /// MN (offset 24): Model Number, ASCII, padded with spaces.
    pub mn: [u8; 40],
    /// FR (offset 64): Firmware Revision, ASCII, padded with spaces.
    pub fr: [u8; 8],
    /// RAB (offset 72): Recommended Arbitration Burst, as a power of two.
    pub rab: u8,
    /// IEEE (offset 73): IEEE OUI Identifier of the vendor (least significant byte first).
    pub ieee: [u8; 3],
    /// CMIC (offset 76): Controller Multi-Path I/O and Namespace Sharing Capabilities.
    pub cmic: Cmic,
    /// MDTS (offset 77): Maximum Data Transfer Size, a power of two in units of
    /// CAP.MPSMIN; 0 means no limit.
    pub mdts: u8,
    /// CNTLID (offset 78): Controller ID.
    pub cntlid: u16,
    /// VER (offset 80): Version, encoded like the VS register.
    pub ver: u32,
    /// RTD3R (offset 84): RTD3 Resume Latency in microseconds.
    pub rtd3r: u32,
    /// RTD3E (offset 88): RTD3 Entry Latency in microseconds.
    pub rtd3e: u32,
    /// OAES (offset 92): Optional Asynchronous Events Supported.
    pub oaes: Oaes,
    /// CTRATT (offset 96): Controller Attributes.
    pub ctratt: Ctratt,
    /// RRLS (offset 100): Read Recovery Levels Supported (bit n = level n).
    pub rrls: u16,
    _rsvd102: [u8; 9],
    /// CNTRLTYPE (offset 111): Controller Type (1 = I/O, 2 = discovery, 3 = administrative).
    pub cntrltype: u8,
    /// FGUID (offset 112): FRU Globally Unique Identifier.
    pub fguid: [u8; 16],
    /// CRDT1 (offset 128): Command Retry Delay Time 1, in 100 ms units.
    pub crdt1: u16,
    /// CRDT2 (offset 130): Command Retry Delay Time 2, in 100 ms units.
    pub crdt2: u16,
    /// CRDT3 (offset 132): Command Retry Delay Time 3, in 100 ms units.
    pub crdt3: u16,
    // 134..240 reserved; 240..253 reserved by the NVMe-MI specification.
    _rsvd134: [u8; 119],
    /// NVMSR (offset 253): NVM Subsystem Report (NVMe-MI).
    pub nvmsr: u8,
    /// VWCI (offset 254): VPD Write Cycle Information (NVMe-MI).
    pub vwci: u8,
    /// MEC (offset 255): Management Endpoint Capabilities (NVMe-MI).
    pub mec: u8,

    // ----- Admin Command Set Attributes & Optional Controller Capabilities (256..512) -----
    /// OACS (offset 256): Optional Admin Command Support.
    pub oacs: Oacs,
    /// ACL (offset 258): Abort Command Limit, 0-based.
    pub acl: u8,
    /// AERL (offset 259): Asynchronous Event Request Limit, 0-based.
    pub aerl: u8,
    /// FRMW (offset 260): Firmware Updates (slot count, slot 1 read-only, ...).
    pub frmw: Frmw,
    /// LPA (offset 261): Log Page Attributes.
    pub lpa: Lpa,
    /// ELPE (offset 262): Error Log Page Entries, 0-based.
    pub elpe: u8,
    /// NPSS (offset 263): Number of Power States Supported, 0-based.
    pub npss: u8,
    /// AVSCC (offset 264): Admin Vendor Specific Command Configuration.
    pub avscc: u8,
    /// APSTA (offset 265): Autonomous Power State Transition Attributes.
    pub apsta: u8,
    /// WCTEMP (offset 266): Warning Composite Temperature Threshold, in kelvins.
    pub wctemp: u16,
    /// CCTEMP (offset 268): Critical Composite Temperature Threshold, in kelvins.
    pub cctemp: u16,
    /// MTFA (offset 270): Maximum Time for Firmware Activation, in 100 ms units.
    pub mtfa: u16,
    /// HMPRE (offset 272): Host Memory Buffer Preferred Size, in 4 KiB units.
    pub hmpre: u32,
    /// HMMIN (offset 276): Host Memory Buffer Minimum Size, in 4 KiB units.
    pub hmmin: u32,
    /// TNVMCAP (offset 280): Total NVM Capacity in bytes (128-bit); see [`Self::tnvmcap`].
    pub tnvmcap: [u8; 16],
    /// UNVMCAP (offset 296): Unallocated NVM Capacity in bytes (128-bit); see [`Self::unvmcap`].
    pub unvmcap: [u8; 16],
    /// RPMBS (offset 312): Replay Protected Memory Block Support.
    pub rpmbs: u32,
    /// EDSTT (offset 316): Extended Device Self-test Time, in minutes.
    pub edstt: u16,
    /// DSTO (offset 318): Device Self-test Options.
    pub dsto: u8,
    /// FWUG (offset 319): Firmware Update Granularity, in 4 KiB units.
    pub fwug: u8,
    /// KAS (offset 320): Keep Alive Support granularity, in 100 ms units.
    pub kas: u16,
    /// HCTMA (offset 322): Host Controlled Thermal Management Attributes.
    pub hctma: u16,
    /// MNTMT (offset 324): Minimum Thermal Management Temperature, in kelvins.
    pub mntmt: u16,
    /// MXTMT (offset 326): Maximum Thermal Management Temperature, in kelvins.
    pub mxtmt: u16,
    /// SANICAP (offset 328): Sanitize Capabilities.
    pub sanicap: u32,
    /// HMMINDS (offset 332): Host Memory Buffer Minimum Descriptor Entry Size, in 4 KiB units.
    pub hmminds: u32,
    /// HMMAXD (offset 336): Host Memory Maximum Descriptors Entries.
    pub hmmaxd: u16,
    /// NSETIDMAX (offset 338): NVM Set Identifier Maximum.
    pub nsetidmax: u16,
    /// ENDGIDMAX (offset 340): Endurance Group Identifier Maximum.
    pub endgidmax: u16,
    /// ANATT (offset 342): ANA Transition Time, in seconds.
    pub anatt: u8,
    /// ANACAP (offset 343): Asymmetric Namespace Access Capabilities.
    pub anacap: u8,
    /// ANAGRPMAX (offset 344): ANA Group Identifier Maximum.
    pub anagrpmax: u32,
    /// NANAGRPID (offset 348): Number of ANA Group Identifiers.
    pub nanagrpid: u32,
    /// PELS (offset 352): Persistent Event Log Size, in 64 KiB units.
    pub pels: u32,
    /// DOMAINID (offset 356): Domain Identifier.
    pub domainid: u16,
    _rsvd358: [u8; 10],
    /// MEGCAP (offset 368): Max Endurance Group Capacity in bytes (128-bit); see [`Self::megcap`].
    pub megcap: [u8; 16],
    _rsvd384: [u8; 128],

    // ----- NVM Command Set Attributes (512..768) -----
    /// SQES (offset 512): Submission Queue Entry Size; bits 3:0 required and
    /// bits 7:4 maximum, each as log2 of the size in bytes.
    pub sqes: QueueEntrySizes,
    /// CQES (offset 513): Completion Queue Entry Size; bits 3:0 required and
    /// bits 7:4 maximum, each as log2 of the size in bytes.
    pub cqes: QueueEntrySizes,
    /// MAXCMD (offset 514): Maximum Outstanding Commands (fabrics).
    pub maxcmd: u16,
    /// NN (offset 516): Number of Namespaces, the largest valid NSID.
    pub nn: u32,
    /// ONCS (offset 520): Optional NVM Command Support.
    pub oncs: Oncs,
    /// FUSES (offset 522): Fused Operation Support.
    pub fuses: Fuses,
    /// FNA (offset 524): Format NVM Attributes.
    pub fna: Fna,
    /// VWC (offset 525): Volatile Write Cache.
    pub vwc: Vwc,
    /// AWUN (offset 526): Atomic Write Unit Normal, 0-based, in logical blocks.
    pub awun: u16,
    /// AWUPF (offset 528): Atomic Write Unit Power Fail, 0-based, in logical blocks.
    pub awupf: u16,
    /// ICSVSCC (offset 530): I/O Command Set Vendor Specific Command
    /// Configuration (NVSCC in 1.4).
    pub icsvscc: u8,
    /// NWPC (offset 531): Namespace Write Protection Capabilities.
    pub nwpc: u8,
    /// ACWU (offset 532): Atomic Compare & Write Unit, 0-based, in logical blocks.
    pub acwu: u16,
    /// OCFS (offset 534): Optional Copy Formats Supported.
    pub ocfs: u16,
    /// SGLS (offset 536): SGL Support.
    pub sgls: Sgls,
    /// MNAN (offset 540): Maximum Number of Allowed Namespaces.
    pub mnan: u32,
    /// MAXDNA (offset 544): Maximum Domain Namespace Attachments (128-bit); see [`Self::maxdna`].
    pub maxdna: [u8; 16],
    /// MAXCNA (offset 560): Maximum I/O Controller Namespace Attachments.
    pub maxcna: u32,
    _rsvd564: [u8; 204],
    /// SUBNQN (offset 768): NVM Subsystem NVMe Qualified Name, UTF-8, NUL-terminated.
    pub subnqn: [u8; 256],
    _rsvd1024: [u8; 768],

    // ----- NVMe over Fabrics (1792..2048) -----
    /// IOCCSZ (offset 1792): I/O Queue Command Capsule Supported Size, in 16-byte units.
    pub ioccsz: u32,
    /// IORCSZ (offset 1796): I/O Queue Response Capsule Supported Size, in 16-byte units.
    pub iorcsz: u32,
    /// ICDOFF (offset 1800): In Capsule Data Offset, in 16-byte units.
    pub icdoff: u16,
    /// FCATT (offset 1802): Fabrics Controller Attributes.
    pub fcatt: u8,
    /// MSDBD (offset 1803): Maximum SGL Data Block Descriptors.
    pub msdbd: u8,
    /// OFCS (offset 1804): Optional Fabric Commands Support.
    pub ofcs: u16,
    /// DCTYPE (offset 1806): Discovery Controller Type (2.0c).
    pub dctype: u8,
    _rsvd1807: [u8; 241],

    // ----- Power State Descriptors (2048..3072) -----
    /// PSD0..PSD31 (offset 2048): Power State Descriptors; only the first
    /// NPSS + 1 are meaningful (see [`Self::power_states`]).
    pub psd: [PowerStateDescriptor; 32],

    // ----- Vendor Specific (3072..4096) -----
    /// VS (offset 3072): Vendor Specific.
    pub vs: [u8; 1024],
}

assert_layout!(IdentifyController, IDENTIFY_DATA_SIZE, {
    vid: 0, ssvid: 2, sn: 4, mn: 24, fr: 64, rab: 72, ieee: 73, cmic: 76,
    mdts: 77, cntlid: 78, ver: 80, rtd3r: 84, rtd3e: 88, oaes: 92, ctratt: 96,
    rrls: 100, _rsvd102: 102, cntrltype: 111, fguid: 112, crdt1: 128, crdt2: 130,
    crdt3: 132, _rsvd134: 134, nvmsr: 253, vwci: 254, mec: 255,
    oacs: 256, acl: 258, aerl: 259, frmw: 260, lpa: 261, elpe: 262, npss: 263,
    avscc: 264, apsta: 265, wctemp: 266, cctemp: 268, mtfa: 270, hmpre: 272,
    hmmin: 276, tnvmcap: 280, unvmcap: 296, rpmbs: 312, edstt: 316, dsto: 318,
    fwug: 319, kas: 320, hctma: 322, mntmt: 324, mxtmt: 326, sanicap: 328,
    hmminds: 332, hmmaxd: 336, nsetidmax: 338, endgidmax: 340, anatt: 342,
    anacap: 343, anagrpmax: 344, nanagrpid: 348, pels: 352, domainid: 356,
    _rsvd358: 358, megcap: 368, _rsvd384: 384,
    sqes: 512, cqes: 513, maxcmd: 514, nn: 516, oncs: 520, fuses: 522, fna: 524,
    vwc: 525, awun: 526, awupf: 528, icsvscc: 530, nwpc: 531, acwu: 532,
    ocfs: 534, sgls: 536, mnan: 540, maxdna: 544, maxcna: 560, _rsvd564: 564,
    subnqn: 768, _rsvd1024: 1024,
    ioccsz: 1792, iorcsz: 1796, icdoff: 1800, fcatt: 1802, msdbd: 1803,
    ofcs: 1804, dctype: 1806, _rsvd1807: 1807,
    psd: 2048, vs: 3072,
});

impl IdentifyController {
    /// Decodes the structure from the 4096 bytes returned by the device.
    pub const fn from_bytes(bytes: &[u8; IDENTIFY_DATA_SIZE]) -> Self {
        zerocopy::transmute!(*bytes)
    }

    /// An all-zero structure (every field 0).
    pub const fn zeroed() -> Self {
        Self::from_bytes(&[0; IDENTIFY_DATA_SIZE])
    }
}

impl Default for IdentifyController {
    fn default() -> Self {
        Self::zeroed()
    }
}

impl fmt::Debug for IdentifyController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentifyController")
            .field("vid", &format_args!("{:#06x}", self.vid))
            .field("ssvid", &format_args!("{:#06x}", self.ssvid))
            .field("sn", &as_str(self.serial()))
            .field("mn", &as_str(self.model()))
            .field("fr", &as_str(self.firmware()))
            .field("cntlid", &self.cntlid)
            .field("ver", &format_args!("{:#010x}", self.ver))
            .field("mdts", &self.mdts)
            .field("oacs", &self.oacs)
            .field("sqes", &self.sqes)
            .field("cqes", &self.cqes)
            .field("nn", &self.nn)
            .field("oncs", &self.oncs)
            .field("vwc", &self.vwc)
            .field("sgls", &self.sgls)
            .field("subnqn", &as_str(self.subnqn()))
            .finish_non_exhaustive()
    }
}

/// Typed accessors. These only interpret bits; nothing here can panic.
/// Convenience decoding. Only interprets bytes; nothing here can panic.
impl IdentifyController {
    /// SN with trailing spaces and NULs removed.
    pub fn serial(&self) -> &[u8] {
        trim_padding(&self.sn)
    }

    /// MN with trailing spaces and NULs removed.
    pub fn model(&self) -> &[u8] {
        trim_padding(&self.mn)
    }

    /// FR with trailing spaces and NULs removed.
    pub fn firmware(&self) -> &[u8] {
        trim_padding(&self.fr)
    }

    /// SUBNQN up to its first NUL, with trailing spaces removed.
    pub fn subnqn(&self) -> &[u8] {
        let nqn = &self.subnqn;
        let end = nqn.iter().position(|&b| b == 0).unwrap_or(nqn.len());
        trim_padding(&nqn[..end])
    }

    /// VER split into (major, minor, tertiary) version numbers.
    pub const fn version(&self) -> (u16, u8, u8) {
        ((self.ver >> 16) as u16, (self.ver >> 8) as u8, self.ver as u8)
    }

    /// MDTS in bytes given the controller's minimum memory page size
    /// (`2 ^ (12 + CAP.MPSMIN)`), `None` for "no limit" (MDTS 0), saturating
    /// at `u64::MAX` for absurd values.
    pub const fn max_data_transfer_bytes(&self, mpsmin_bytes: u32) -> Option<u64> {
        if self.mdts == 0 {
            return None;
        }
        let base = mpsmin_bytes as u64;
        let shift = self.mdts as u32;
        if base == 0 {
            Some(0)
        } else if shift >= base.leading_zeros() {
            Some(u64::MAX)
        } else {
            Some(base << shift)
        }
    }

    /// TNVMCAP: total NVM capacity in bytes.
    pub const fn tnvmcap(&self) -> u128 {
        le_u128(&self.tnvmcap)
    }

    /// UNVMCAP: unallocated NVM capacity in bytes.
    pub const fn unvmcap(&self) -> u128 {
        le_u128(&self.unvmcap)
    }

    /// MEGCAP: maximum endurance group capacity in bytes.
    pub const fn megcap(&self) -> u128 {
        le_u128(&self.megcap)
    }

    /// MAXDNA: maximum domain namespace attachments.
    pub const fn maxdna(&self) -> u128 {
        le_u128(&self.maxdna)
    }

    /// The power state descriptors the controller reports (NPSS + 1, at most 32).
    pub fn power_states(&self) -> &[PowerStateDescriptor] {
        let count = (self.npss as usize + 1).min(self.psd.len());
        &self.psd[..count]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_u16(buf: &mut [u8; 4096], at: usize, v: u16) {
        buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn put_u32(buf: &mut [u8; 4096], at: usize, v: u32) {
        buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn put_str(buf: &mut [u8; 4096], at: usize, width: usize, s: &str) {
        buf[at..at + width].fill(b' ');
        buf[at..at + s.len()].copy_from_slice(s.as_bytes());
    }

    #[test]
    fn controller_from_bytes() {
        let mut b = [0u8; 4096];
        put_u16(&mut b, 0, 0x1b36);
        put_u16(&mut b, 2, 0x1af4);
        put_str(&mut b, 4, 20, "1234");
        put_str(&mut b, 24, 40, "QEMU NVMe Ctrl");
        put_str(&mut b, 64, 8, "8.0.0");
        b[73..76].copy_from_slice(&[0x00, 0x54, 0x52]);
        b[77] = 7;
        put_u16(&mut b, 78, 0x0042);
        put_u32(&mut b, 80, 0x0001_0400);
        put_u16(&mut b, 256, 0x010a); // format, ns management, doorbell buffer config
        b[261] = 0x04; // extended data
        b[263] = 2; // three power states
        b[280..296].copy_from_slice(&(0x1_0000_0000_0000_0000u128 + 5).to_le_bytes());
        b[512] = 0x66;
        b[513] = 0x44;
        put_u32(&mut b, 516, 256);
        put_u16(&mut b, 520, 0x002d); // compare, dsm, write zeroes, reservations
        b[525] = 0x01;
        put_u32(&mut b, 536, 0x0001_0001);
        let nqn = b"nqn.2019-08.org.qemu:1234";
        b[768..768 + nqn.len()].copy_from_slice(nqn);
        put_u16(&mut b, 2048 + 32, 2500); // psd[1].mp
        b[2048 + 32 + 3] = 0x02; // psd[1] non-operational
        b[3072] = 0xaa;
        b[4095] = 0x55;

        let id = IdentifyController::from_bytes(&b);
        assert_eq!(id.vid, 0x1b36);
        assert_eq!(id.ssvid, 0x1af4);
        assert_eq!(id.serial(), b"1234");
        assert_eq!(as_str(id.serial()), "1234");
        assert_eq!(as_str(id.model()), "QEMU NVMe Ctrl");
        assert_eq!(id.firmware(), b"8.0.0");
        assert_eq!(id.ieee, [0x00, 0x54, 0x52]);
        assert_eq!(id.mdts, 7);
        assert_eq!(id.max_data_transfer_bytes(4096), Some(512 * 1024));
        assert_eq!(id.cntlid, 0x42);
        assert_eq!(id.version(), (1, 4, 0));
        assert!(id.oacs.format());
        assert!(id.oacs.namespace_management());
        assert!(id.oacs.doorbell_buffer_config());
        assert!(!id.oacs.firmware());
        assert!(!id.oacs.security());
        assert!(id.lpa.extended_data());
        assert_eq!(id.tnvmcap(), (1u128 << 64) + 5);
        assert_eq!(id.unvmcap(), 0);
        assert_eq!(id.sqes.required(), 6);
        assert_eq!(id.sqes.maximum(), 6);
        assert_eq!(id.cqes.required(), 4);
        assert_eq!(id.nn, 256);
        assert!(id.oncs.compare());
        assert!(id.oncs.dataset_management());
        assert!(id.oncs.write_zeroes());
        assert!(id.oncs.reservations());
        assert!(!id.oncs.write_uncorrectable());
        assert!(!id.oncs.copy());
        assert!(id.vwc.present());
        assert!(id.sgls.supported());
        assert!(!id.sgls.dword_aligned());
        assert!(id.sgls.bit_bucket());
        assert_eq!(id.subnqn(), nqn);
        assert_eq!(id.power_states().len(), 3);
        assert_eq!(id.psd[1].mp, 2500);
        assert!(id.psd[1].flags.nops());
        assert_eq!(id.psd[1].max_power_microwatts(), 25_000_000);
        assert_eq!(id.vs[0], 0xaa);
        assert_eq!(id.vs[1023], 0x55);
        assert_eq!(id.as_bytes(), &b[..], "the layout round-trips byte for byte");
    }

    #[test]
    fn controller_hostile_values() {
        let mut b = [0xffu8; 4096];
        b[4..24].copy_from_slice(&[0x80; 20]); // invalid UTF-8 serial
        let id = IdentifyController::from_bytes(&b);
        assert_eq!(as_str(id.serial()), "?");
        assert_eq!(id.power_states().len(), 32);
        assert_eq!(id.max_data_transfer_bytes(4096), Some(u64::MAX));
        assert_eq!(id.sqes.maximum(), 15);
        assert!(!id.sgls.supported()); // 11b is reserved
        assert_eq!(id.subnqn().len(), 256);

        let zero = IdentifyController::default();
        assert_eq!(zero.serial(), b"");
        assert_eq!(zero.subnqn(), b"");
        assert_eq!(zero.max_data_transfer_bytes(4096), None);
        assert_eq!(zero.power_states().len(), 1);
        assert!(zero == IdentifyController::zeroed());
    }
}
