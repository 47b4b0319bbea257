//! Identify data structures returned by the Identify admin command (opcode 06h).
//!
//! Layouts follow the NVM Express Base Specification 2.0, section 5.17.2
//! ("Identify Controller Data Structure", CNS 01h, and "Active Namespace ID
//! list", CNS 02h; 1.4: section 5.15.2), and the NVM Command Set
//! Specification 1.0, section 4.1.5.1 ("Identify Namespace Data Structure",
//! CNS 00h; 1.4: section 5.15.2.1).
//!
//! Every structure here is exactly 4096 bytes, `#[repr(C)]`, built only from
//! little-endian integers and byte arrays placed at their natural alignment, so
//! there is no implicit padding and any 4096-byte buffer is a valid value.
//! Sizes and field offsets are checked at compile time.
//!
//! The contents come from the device and are untrusted: the accessors never
//! index out of range and never panic, whatever the bytes say.

use core::fmt;
use core::mem::{offset_of, size_of};

const _: () = assert!(
    cfg!(target_endian = "little"),
    "nvme-nostd reads NVMe wire structures in place and needs a little-endian target"
);

/// Size in bytes of every Identify data structure.
pub const IDENTIFY_DATA_SIZE: usize = 4096;

/// Marker for wire structures that may be created from arbitrary bytes.
///
/// # Safety
///
/// An implementor must be `#[repr(C)]` (or `#[repr(transparent)]`), contain
/// only unsigned integers, byte arrays, or arrays of other `Pod` types, and
/// have no implicit padding, so that every bit pattern of
/// `size_of::<Self>()` bytes is a valid value of the type.
pub(crate) unsafe trait Pod: Sized {}

/// Reads a `T` out of exactly `size_of::<T>()` bytes.
const fn read_pod<T: Pod, const N: usize>(bytes: &[u8; N]) -> T {
    const { assert!(size_of::<T>() == N, "buffer length must equal the type size") };
    // SAFETY: `T: Pod` promises a `#[repr(C)]` type made only of integers and
    // byte arrays without padding, so every bit pattern is a valid `T`. The
    // const assertion above guarantees the source holds exactly
    // `size_of::<T>()` initialized bytes, so the read stays in bounds, and
    // `read_unaligned` imposes no alignment requirement on the `u8` buffer.
    unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

/// Checks the size and field offsets of a wire structure at compile time.
macro_rules! assert_layout {
    ($ty:ty, $size:expr, { $($field:ident : $off:expr),* $(,)? }) => {
        const _: () = {
            assert!(size_of::<$ty>() == $size, concat!(stringify!($ty), " has the wrong size"));
            $(
                assert!(
                    offset_of!($ty, $field) == $off,
                    concat!(stringify!($ty), "::", stringify!($field), " is at the wrong offset")
                );
            )*
        };
    };
}

/// Trims trailing ASCII spaces and NUL bytes from a fixed-width string field.
pub fn trim_padding(bytes: &[u8]) -> &[u8] {
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b' ' | 0) {
        end -= 1;
    }
    &bytes[..end]
}

/// Interprets device-provided bytes as text, or `"?"` if they are not UTF-8.
pub fn as_str(bytes: &[u8]) -> &str {
    core::str::from_utf8(bytes).unwrap_or("?")
}

/// Reads a little-endian 128-bit counter.
const fn le_u128(bytes: &[u8; 16]) -> u128 {
    u128::from_le_bytes(*bytes)
}

/// Tests bit `n` of `value`.
const fn bit(value: u32, n: u32) -> bool {
    (value >> n) & 1 != 0
}

// ---------------------------------------------------------------------------
// Power state descriptor
// ---------------------------------------------------------------------------

/// One Power State Descriptor of the Identify Controller data structure
/// (Base 2.0 figure "Power State Descriptor Data Structure"), 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PowerStateDescriptor {
    /// MP (offset 0): Maximum Power, in 0.01 W units, or 0.0001 W if MXPS is set.
    pub mp: u16,
    _rsvd2: u8,
    /// MXPS (bit 0) and NOPS (bit 1) (offset 3): Max Power Scale and
    /// Non-Operational State.
    pub flags: u8,
    /// ENLAT (offset 4): Entry Latency in microseconds.
    pub enlat: u32,
    /// EXLAT (offset 8): Exit Latency in microseconds.
    pub exlat: u32,
    /// RRT (offset 12, bits 4:0): Relative Read Throughput.
    pub rrt: u8,
    /// RRL (offset 13, bits 4:0): Relative Read Latency.
    pub rrl: u8,
    /// RWT (offset 14, bits 4:0): Relative Write Throughput.
    pub rwt: u8,
    /// RWL (offset 15, bits 4:0): Relative Write Latency.
    pub rwl: u8,
    /// IDLP (offset 16): Idle Power, scaled by IPS.
    pub idlp: u16,
    /// IPS (offset 18, bits 7:6): Idle Power Scale.
    pub ips: u8,
    _rsvd19: u8,
    /// ACTP (offset 20): Active Power, scaled by APS.
    pub actp: u16,
    /// APW (bits 2:0) and APS (bits 7:6) (offset 22): Active Power Workload
    /// and Active Power Scale.
    pub apw_aps: u8,
    _rsvd23: [u8; 9],
}

// SAFETY: repr(C), only integer and byte-array fields, no padding (size and
// offsets asserted below), so every bit pattern is valid.
unsafe impl Pod for PowerStateDescriptor {}

assert_layout!(PowerStateDescriptor, 32, {
    mp: 0, flags: 3, enlat: 4, exlat: 8, rrt: 12, rrl: 13, rwt: 14, rwl: 15,
    idlp: 16, ips: 18, actp: 20, apw_aps: 22,
});

impl PowerStateDescriptor {
    /// MXPS: MP is in 0.0001 W units rather than 0.01 W units.
    pub const fn mxps(&self) -> bool {
        self.flags & 0x01 != 0
    }

    /// NOPS: this is a non-operational power state (no I/O is processed).
    pub const fn nops(&self) -> bool {
        self.flags & 0x02 != 0
    }

    /// Maximum power of this state in microwatts (MP scaled by MXPS).
    pub const fn max_power_microwatts(&self) -> u32 {
        let scale = if self.mxps() { 100 } else { 10_000 };
        self.mp as u32 * scale
    }

    /// APW: Active Power Workload (bits 2:0).
    pub const fn apw(&self) -> u8 {
        self.apw_aps & 0x07
    }

    /// APS: Active Power Scale (bits 7:6).
    pub const fn aps(&self) -> u8 {
        self.apw_aps >> 6
    }

    /// IPS: Idle Power Scale (bits 7:6).
    pub const fn idle_power_scale(&self) -> u8 {
        self.ips >> 6
    }
}

// ---------------------------------------------------------------------------
// Identify Controller (CNS 01h)
// ---------------------------------------------------------------------------

/// Identify Controller data structure (CNS 01h), 4096 bytes.
///
/// Base 2.0 figure "Identify Controller Data Structure, I/O Command Set
/// Independent"; 1.4 section 5.15.2.2. Multi-byte fields are little-endian.
#[repr(C)]
#[derive(Clone, PartialEq, Eq)]
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
    pub cmic: u8,
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
    pub oaes: u32,
    /// CTRATT (offset 96): Controller Attributes.
    pub ctratt: u32,
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
    pub oacs: u16,
    /// ACL (offset 258): Abort Command Limit, 0-based.
    pub acl: u8,
    /// AERL (offset 259): Asynchronous Event Request Limit, 0-based.
    pub aerl: u8,
    /// FRMW (offset 260): Firmware Updates (slot count, slot 1 read-only, ...).
    pub frmw: u8,
    /// LPA (offset 261): Log Page Attributes.
    pub lpa: u8,
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
    pub sqes: u8,
    /// CQES (offset 513): Completion Queue Entry Size; bits 3:0 required and
    /// bits 7:4 maximum, each as log2 of the size in bytes.
    pub cqes: u8,
    /// MAXCMD (offset 514): Maximum Outstanding Commands (fabrics).
    pub maxcmd: u16,
    /// NN (offset 516): Number of Namespaces, the largest valid NSID.
    pub nn: u32,
    /// ONCS (offset 520): Optional NVM Command Support.
    pub oncs: u16,
    /// FUSES (offset 522): Fused Operation Support.
    pub fuses: u16,
    /// FNA (offset 524): Format NVM Attributes.
    pub fna: u8,
    /// VWC (offset 525): Volatile Write Cache.
    pub vwc: u8,
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
    pub sgls: u32,
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

// SAFETY: repr(C), only integer, byte-array and `Pod` array fields, no
// padding (size and every offset asserted below), so any bit pattern is valid.
unsafe impl Pod for IdentifyController {}

const _: () = assert!(core::mem::size_of::<IdentifyController>() == 4096);

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
        read_pod(bytes)
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
            .field("oacs", &format_args!("{:#06x}", self.oacs))
            .field("sqes", &format_args!("{:#04x}", self.sqes))
            .field("cqes", &format_args!("{:#04x}", self.cqes))
            .field("nn", &self.nn)
            .field("oncs", &format_args!("{:#06x}", self.oncs))
            .field("vwc", &self.vwc)
            .field("sgls", &format_args!("{:#010x}", self.sgls))
            .field("subnqn", &as_str(self.subnqn()))
            .finish_non_exhaustive()
    }
}

/// Typed accessors. These only interpret bits; nothing here can panic.
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
    /// (CAP.MPSMIN, in bytes). `None` means no limit; saturates at `u64::MAX`.
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

    /// TNVMCAP as a number of bytes.
    pub const fn tnvmcap(&self) -> u128 {
        le_u128(&self.tnvmcap)
    }

    /// UNVMCAP as a number of bytes.
    pub const fn unvmcap(&self) -> u128 {
        le_u128(&self.unvmcap)
    }

    /// MEGCAP as a number of bytes.
    pub const fn megcap(&self) -> u128 {
        le_u128(&self.megcap)
    }

    /// MAXDNA as a number.
    pub const fn maxdna(&self) -> u128 {
        le_u128(&self.maxdna)
    }

    /// SQES bits 3:0: required (minimum) SQ entry size, as log2 of bytes.
    pub const fn sqes_min_log2(&self) -> u8 {
        self.sqes & 0x0f
    }

    /// SQES bits 7:4: maximum SQ entry size, as log2 of bytes.
    pub const fn sqes_max_log2(&self) -> u8 {
        self.sqes >> 4
    }

    /// CQES bits 3:0: required (minimum) CQ entry size, as log2 of bytes.
    pub const fn cqes_min_log2(&self) -> u8 {
        self.cqes & 0x0f
    }

    /// CQES bits 7:4: maximum CQ entry size, as log2 of bytes.
    pub const fn cqes_max_log2(&self) -> u8 {
        self.cqes >> 4
    }

    /// Required (minimum) SQ entry size in bytes.
    pub const fn sq_entry_size_min(&self) -> u32 {
        1 << self.sqes_min_log2()
    }

    /// Maximum SQ entry size in bytes.
    pub const fn sq_entry_size_max(&self) -> u32 {
        1 << self.sqes_max_log2()
    }

    /// Required (minimum) CQ entry size in bytes.
    pub const fn cq_entry_size_min(&self) -> u32 {
        1 << self.cqes_min_log2()
    }

    /// Maximum CQ entry size in bytes.
    pub const fn cq_entry_size_max(&self) -> u32 {
        1 << self.cqes_max_log2()
    }

    /// OACS bit 0: Security Send and Security Receive supported.
    pub const fn oacs_security(&self) -> bool {
        bit(self.oacs as u32, 0)
    }

    /// OACS bit 1: Format NVM supported.
    pub const fn oacs_format(&self) -> bool {
        bit(self.oacs as u32, 1)
    }

    /// OACS bit 2: Firmware Commit and Firmware Image Download supported.
    pub const fn oacs_firmware(&self) -> bool {
        bit(self.oacs as u32, 2)
    }

    /// OACS bit 3: Namespace Management (and Attachment) supported.
    pub const fn oacs_ns_management(&self) -> bool {
        bit(self.oacs as u32, 3)
    }

    /// OACS bit 4: Device Self-test supported.
    pub const fn oacs_self_test(&self) -> bool {
        bit(self.oacs as u32, 4)
    }

    /// OACS bit 5: Directives supported.
    pub const fn oacs_directives(&self) -> bool {
        bit(self.oacs as u32, 5)
    }

    /// OACS bit 6: NVMe-MI Send and NVMe-MI Receive supported.
    pub const fn oacs_nvme_mi(&self) -> bool {
        bit(self.oacs as u32, 6)
    }

    /// OACS bit 7: Virtualization Management supported.
    pub const fn oacs_virtualization_management(&self) -> bool {
        bit(self.oacs as u32, 7)
    }

    /// OACS bit 8: Doorbell Buffer Config supported.
    pub const fn oacs_doorbell_buffer_config(&self) -> bool {
        bit(self.oacs as u32, 8)
    }

    /// OACS bit 9: Get LBA Status supported.
    pub const fn oacs_get_lba_status(&self) -> bool {
        bit(self.oacs as u32, 9)
    }

    /// OACS bit 10: Command and Feature Lockdown supported.
    pub const fn oacs_lockdown(&self) -> bool {
        bit(self.oacs as u32, 10)
    }

    /// ONCS bit 0: Compare supported.
    pub const fn oncs_compare(&self) -> bool {
        bit(self.oncs as u32, 0)
    }

    /// ONCS bit 1: Write Uncorrectable supported.
    pub const fn oncs_write_uncorrectable(&self) -> bool {
        bit(self.oncs as u32, 1)
    }

    /// ONCS bit 2: Dataset Management supported.
    pub const fn oncs_dsm(&self) -> bool {
        bit(self.oncs as u32, 2)
    }

    /// ONCS bit 3: Write Zeroes supported.
    pub const fn oncs_write_zeroes(&self) -> bool {
        bit(self.oncs as u32, 3)
    }

    /// ONCS bit 4: the Save field of Set Features and the Select field of
    /// Get Features are supported.
    pub const fn oncs_save_select(&self) -> bool {
        bit(self.oncs as u32, 4)
    }

    /// ONCS bit 5: Reservations supported.
    pub const fn oncs_reservations(&self) -> bool {
        bit(self.oncs as u32, 5)
    }

    /// ONCS bit 6: Timestamp feature supported.
    pub const fn oncs_timestamp(&self) -> bool {
        bit(self.oncs as u32, 6)
    }

    /// ONCS bit 7: Verify supported.
    pub const fn oncs_verify(&self) -> bool {
        bit(self.oncs as u32, 7)
    }

    /// ONCS bit 8: Copy supported (2.0).
    pub const fn oncs_copy(&self) -> bool {
        bit(self.oncs as u32, 8)
    }

    /// LPA bit 0: SMART / Health Information log page per namespace.
    pub const fn lpa_smart_per_namespace(&self) -> bool {
        bit(self.lpa as u32, 0)
    }

    /// LPA bit 1: Commands Supported and Effects log page supported.
    pub const fn lpa_commands_effects(&self) -> bool {
        bit(self.lpa as u32, 1)
    }

    /// LPA bit 2: extended data for Get Log Page (NUMDU, 64-bit offset) supported.
    pub const fn lpa_extended_data(&self) -> bool {
        bit(self.lpa as u32, 2)
    }

    /// LPA bit 3: Telemetry Host-Initiated and Controller-Initiated log pages supported.
    pub const fn lpa_telemetry(&self) -> bool {
        bit(self.lpa as u32, 3)
    }

    /// LPA bit 4: Persistent Event log page supported.
    pub const fn lpa_persistent_event(&self) -> bool {
        bit(self.lpa as u32, 4)
    }

    /// SGLS bits 1:0 are 01b or 10b: SGLs are supported for the NVM command set.
    pub const fn sgls_supported(&self) -> bool {
        matches!(self.sgls & 0x3, 0b01 | 0b10)
    }

    /// SGLS bits 1:0 are 10b: SGL data blocks must be dword aligned.
    pub const fn sgls_dword_alignment(&self) -> bool {
        self.sgls & 0x3 == 0b10
    }

    /// SGLS bit 2: Keyed SGL Data Block descriptor supported.
    pub const fn sgls_keyed(&self) -> bool {
        bit(self.sgls, 2)
    }

    /// SGLS bit 16: SGL Bit Bucket descriptor supported.
    pub const fn sgls_bit_bucket(&self) -> bool {
        bit(self.sgls, 16)
    }

    /// SGLS bit 19: MPTR may point to an SGL descriptor (MSGL).
    pub const fn sgls_metadata_sgl(&self) -> bool {
        bit(self.sgls, 19)
    }

    /// VWC bit 0: a volatile write cache is present.
    pub const fn vwc_present(&self) -> bool {
        self.vwc & 0x01 != 0
    }

    /// FUSES bit 0: Compare and Write fused operation supported.
    pub const fn fuses_compare_and_write(&self) -> bool {
        self.fuses & 0x01 != 0
    }

    /// The meaningful power state descriptors (the first NPSS + 1, at most 32).
    pub fn power_states(&self) -> &[PowerStateDescriptor] {
        let count = (self.npss as usize + 1).min(self.psd.len());
        &self.psd[..count]
    }
}

// ---------------------------------------------------------------------------
// Identify Namespace (CNS 00h, NVM command set)
// ---------------------------------------------------------------------------

/// LBA Format data structure (NVM Command Set 1.0 figure "LBA Format Data
/// Structure"; 1.4 figure 250), 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LbaFormat {
    /// MS (offset 0): Metadata Size in bytes per logical block.
    pub ms: u16,
    /// LBADS (offset 2): LBA Data Size, as log2 of bytes; 0 means the format is unused.
    pub lbads: u8,
    /// RP (offset 3, bits 1:0): Relative Performance (0 = best, 3 = degraded).
    pub rp: u8,
}

// SAFETY: repr(C), only integer fields, no padding (size and offsets asserted
// below), so every bit pattern is valid.
unsafe impl Pod for LbaFormat {}

assert_layout!(LbaFormat, 4, { ms: 0, lbads: 2, rp: 3 });

impl LbaFormat {
    /// Logical block data size in bytes, or `None` if LBADS is outside the
    /// range the specification allows (512 B ..= 64 KiB, i.e. 9 ..= 16).
    pub const fn data_size(&self) -> Option<u32> {
        if self.lbads >= 9 && self.lbads <= 16 {
            Some(1 << self.lbads)
        } else {
            None
        }
    }

    /// RP bits 1:0: Relative Performance.
    pub const fn relative_performance(&self) -> u8 {
        self.rp & 0x03
    }
}

/// Identify Namespace data structure for the NVM command set (CNS 00h),
/// 4096 bytes.
///
/// NVM Command Set 1.0 section 4.1.5.1; Base 1.4 section 5.15.2.1.
#[repr(C)]
#[derive(Clone, PartialEq, Eq)]
pub struct IdentifyNamespace {
    /// NSZE (offset 0): Namespace Size, in logical blocks.
    pub nsze: u64,
    /// NCAP (offset 8): Namespace Capacity, in logical blocks.
    pub ncap: u64,
    /// NUSE (offset 16): Namespace Utilization, in logical blocks.
    pub nuse: u64,
    /// NSFEAT (offset 24): Namespace Features.
    pub nsfeat: u8,
    /// NLBAF (offset 25): Number of LBA Formats, 0-based.
    pub nlbaf: u8,
    /// FLBAS (offset 26): Formatted LBA Size (format index and extended-LBA flag).
    pub flbas: u8,
    /// MC (offset 27): Metadata Capabilities.
    pub mc: u8,
    /// DPC (offset 28): End-to-end Data Protection Capabilities.
    pub dpc: u8,
    /// DPS (offset 29): End-to-end Data Protection Type Settings.
    pub dps: u8,
    /// NMIC (offset 30): Namespace Multi-path I/O and Namespace Sharing Capabilities.
    pub nmic: u8,
    /// RESCAP (offset 31): Reservation Capabilities.
    pub rescap: u8,
    /// FPI (offset 32): Format Progress Indicator.
    pub fpi: u8,
    /// DLFEAT (offset 33): Deallocate Logical Block Features.
    pub dlfeat: u8,
    /// NAWUN (offset 34): Namespace Atomic Write Unit Normal, 0-based.
    pub nawun: u16,
    /// NAWUPF (offset 36): Namespace Atomic Write Unit Power Fail, 0-based.
    pub nawupf: u16,
    /// NACWU (offset 38): Namespace Atomic Compare & Write Unit, 0-based.
    pub nacwu: u16,
    /// NABSN (offset 40): Namespace Atomic Boundary Size Normal, 0-based.
    pub nabsn: u16,
    /// NABO (offset 42): Namespace Atomic Boundary Offset.
    pub nabo: u16,
    /// NABSPF (offset 44): Namespace Atomic Boundary Size Power Fail, 0-based.
    pub nabspf: u16,
    /// NOIOB (offset 46): Namespace Optimal I/O Boundary, in logical blocks.
    pub noiob: u16,
    /// NVMCAP (offset 48): NVM Capacity in bytes (128-bit); see [`Self::nvmcap`].
    pub nvmcap: [u8; 16],
    /// NPWG (offset 64): Namespace Preferred Write Granularity, 0-based.
    pub npwg: u16,
    /// NPWA (offset 66): Namespace Preferred Write Alignment, 0-based.
    pub npwa: u16,
    /// NPDG (offset 68): Namespace Preferred Deallocate Granularity, 0-based.
    pub npdg: u16,
    /// NPDA (offset 70): Namespace Preferred Deallocate Alignment, 0-based.
    pub npda: u16,
    /// NOWS (offset 72): Namespace Optimal Write Size, 0-based.
    pub nows: u16,
    /// MSSRL (offset 74): Maximum Single Source Range Length (Copy).
    pub mssrl: u16,
    /// MCL (offset 76): Maximum Copy Length.
    pub mcl: u32,
    /// MSRC (offset 80): Maximum Source Range Count (Copy), 0-based.
    pub msrc: u8,
    _rsvd81: u8,
    /// NULBAF (offset 82): Number of Unique Capability LBA Formats (2.0).
    pub nulbaf: u8,
    _rsvd83: [u8; 9],
    /// ANAGRPID (offset 92): ANA Group Identifier.
    pub anagrpid: u32,
    _rsvd96: [u8; 3],
    /// NSATTR (offset 99): Namespace Attributes (bit 0: write protected).
    pub nsattr: u8,
    /// NVMSETID (offset 100): NVM Set Identifier.
    pub nvmsetid: u16,
    /// ENDGID (offset 102): Endurance Group Identifier.
    pub endgid: u16,
    /// NGUID (offset 104): Namespace Globally Unique Identifier.
    pub nguid: [u8; 16],
    /// EUI64 (offset 120): IEEE Extended Unique Identifier.
    pub eui64: [u8; 8],
    /// LBAF0..LBAF63 (offset 128): LBA Format descriptors; only the first
    /// NLBAF + 1 are meaningful.
    pub lbaf: [LbaFormat; 64],
    /// VS (offset 384): Vendor Specific.
    pub vs: [u8; 3712],
}

// SAFETY: repr(C), only integer, byte-array and `Pod` array fields, no
// padding (size and every offset asserted below), so any bit pattern is valid.
unsafe impl Pod for IdentifyNamespace {}

assert_layout!(IdentifyNamespace, IDENTIFY_DATA_SIZE, {
    nsze: 0, ncap: 8, nuse: 16, nsfeat: 24, nlbaf: 25, flbas: 26, mc: 27,
    dpc: 28, dps: 29, nmic: 30, rescap: 31, fpi: 32, dlfeat: 33, nawun: 34,
    nawupf: 36, nacwu: 38, nabsn: 40, nabo: 42, nabspf: 44, noiob: 46,
    nvmcap: 48, npwg: 64, npwa: 66, npdg: 68, npda: 70, nows: 72, mssrl: 74,
    mcl: 76, msrc: 80, _rsvd81: 81, nulbaf: 82, _rsvd83: 83, anagrpid: 92,
    _rsvd96: 96, nsattr: 99, nvmsetid: 100, endgid: 102, nguid: 104,
    eui64: 120, lbaf: 128, vs: 384,
});

impl IdentifyNamespace {
    /// Decodes the structure from the 4096 bytes returned by the device.
    pub const fn from_bytes(bytes: &[u8; IDENTIFY_DATA_SIZE]) -> Self {
        read_pod(bytes)
    }

    /// An all-zero structure (every field 0).
    pub const fn zeroed() -> Self {
        Self::from_bytes(&[0; IDENTIFY_DATA_SIZE])
    }
}

impl Default for IdentifyNamespace {
    fn default() -> Self {
        Self::zeroed()
    }
}

impl fmt::Debug for IdentifyNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentifyNamespace")
            .field("nsze", &self.nsze)
            .field("ncap", &self.ncap)
            .field("nuse", &self.nuse)
            .field("nsfeat", &format_args!("{:#04x}", self.nsfeat))
            .field("nlbaf", &self.nlbaf)
            .field("flbas", &format_args!("{:#04x}", self.flbas))
            .field("dps", &format_args!("{:#04x}", self.dps))
            .field("current_lba_format", &self.current_lba_format())
            .field("nguid", &self.nguid)
            .field("eui64", &self.eui64)
            .finish_non_exhaustive()
    }
}

/// Typed accessors. These only interpret bits; nothing here can panic.
impl IdentifyNamespace {
    /// Index of the LBA format the namespace is formatted with: FLBAS bits 3:0,
    /// extended with bits 6:5 as index bits 5:4 when the namespace reports more
    /// than 16 formats (NLBAF >= 16); otherwise bits 6:5 are reserved and ignored.
    pub const fn flbas_index(&self) -> u8 {
        let low = self.flbas & 0x0f;
        if self.nlbaf >= 16 {
            low | (((self.flbas >> 5) & 0x03) << 4)
        } else {
            low
        }
    }

    /// FLBAS bit 4: metadata is transferred at the end of each logical block
    /// (extended LBA) rather than in a separate buffer.
    pub const fn flbas_extended(&self) -> bool {
        self.flbas & 0x10 != 0
    }

    /// The LBA format the namespace is formatted with, or `None` if FLBAS names
    /// an index beyond NLBAF (0-based) or beyond the 64 descriptors.
    pub fn current_lba_format(&self) -> Option<LbaFormat> {
        let index = self.flbas_index();
        if index > self.nlbaf {
            return None;
        }
        self.lbaf.get(usize::from(index)).copied()
    }

    /// The meaningful LBA format descriptors (the first NLBAF + 1, at most 64).
    pub fn lba_formats(&self) -> &[LbaFormat] {
        let count = (self.nlbaf as usize + 1).min(self.lbaf.len());
        &self.lbaf[..count]
    }

    /// DPS bits 2:0: protection information type (0 = disabled, 1..=3 = type).
    pub const fn dps_pi_type(&self) -> u8 {
        self.dps & 0x07
    }

    /// DPS bit 3: protection information is the first bytes of the metadata
    /// (otherwise the last).
    pub const fn dps_pi_first(&self) -> bool {
        self.dps & 0x08 != 0
    }

    /// NSFEAT bit 0: thin provisioning (NCAP may be less than NSZE).
    pub const fn nsfeat_thin(&self) -> bool {
        self.nsfeat & 0x01 != 0
    }

    /// NSFEAT bit 1: NAWUN, NAWUPF and NACWU are valid for this namespace.
    pub const fn nsfeat_atomics(&self) -> bool {
        self.nsfeat & 0x02 != 0
    }

    /// NSFEAT bit 2: the Deallocated or Unwritten Logical Block error is supported.
    pub const fn nsfeat_dulbe(&self) -> bool {
        self.nsfeat & 0x04 != 0
    }

    /// NSFEAT bit 4: NPWG, NPWA, NPDG, NPDA and NOWS are valid.
    pub const fn nsfeat_optperf(&self) -> bool {
        self.nsfeat & 0x10 != 0
    }

    /// NSATTR bit 0: the namespace is currently write protected.
    pub const fn write_protected(&self) -> bool {
        self.nsattr & 0x01 != 0
    }

    /// NVMCAP as a number of bytes.
    pub const fn nvmcap(&self) -> u128 {
        le_u128(&self.nvmcap)
    }
}

// ---------------------------------------------------------------------------
// Active Namespace ID list (CNS 02h)
// ---------------------------------------------------------------------------

/// Active Namespace ID list (CNS 02h): up to 1024 NSIDs in increasing order,
/// terminated by the first zero entry. 4096 bytes.
#[repr(C)]
#[derive(Clone, PartialEq, Eq)]
pub struct ActiveNamespaceList(pub [u32; 1024]);

// SAFETY: repr(C) wrapper around an integer array, no padding (size asserted
// below), so every bit pattern is valid.
unsafe impl Pod for ActiveNamespaceList {}

const _: () = assert!(size_of::<ActiveNamespaceList>() == IDENTIFY_DATA_SIZE);

impl ActiveNamespaceList {
    /// Decodes the list from the 4096 bytes returned by the device.
    pub const fn from_bytes(bytes: &[u8; IDENTIFY_DATA_SIZE]) -> Self {
        read_pod(bytes)
    }

    /// An empty list (all entries zero).
    pub const fn zeroed() -> Self {
        Self([0; 1024])
    }

    /// The namespace IDs in the list, stopping at the first zero entry.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied().take_while(|&nsid| nsid != 0)
    }
}

impl Default for ActiveNamespaceList {
    fn default() -> Self {
        Self::zeroed()
    }
}

impl fmt::Debug for ActiveNamespaceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
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

    fn put_u64(buf: &mut [u8; 4096], at: usize, v: u64) {
        buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
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
        assert!(id.oacs_format());
        assert!(id.oacs_ns_management());
        assert!(id.oacs_doorbell_buffer_config());
        assert!(!id.oacs_firmware());
        assert!(!id.oacs_security());
        assert!(id.lpa_extended_data());
        assert_eq!(id.tnvmcap(), (1u128 << 64) + 5);
        assert_eq!(id.unvmcap(), 0);
        assert_eq!(id.sqes_min_log2(), 6);
        assert_eq!(id.sqes_max_log2(), 6);
        assert_eq!(id.sq_entry_size_min(), 64);
        assert_eq!(id.cq_entry_size_min(), 16);
        assert_eq!(id.cq_entry_size_max(), 16);
        assert_eq!(id.nn, 256);
        assert!(id.oncs_compare());
        assert!(id.oncs_dsm());
        assert!(id.oncs_write_zeroes());
        assert!(id.oncs_reservations());
        assert!(!id.oncs_write_uncorrectable());
        assert!(!id.oncs_copy());
        assert!(id.vwc_present());
        assert!(id.sgls_supported());
        assert!(!id.sgls_dword_alignment());
        assert!(id.sgls_bit_bucket());
        assert_eq!(id.subnqn(), nqn);
        assert_eq!(id.power_states().len(), 3);
        assert_eq!(id.psd[1].mp, 2500);
        assert!(id.psd[1].nops());
        assert_eq!(id.psd[1].max_power_microwatts(), 25_000_000);
        assert_eq!(id.vs[0], 0xaa);
        assert_eq!(id.vs[1023], 0x55);
    }

    #[test]
    fn controller_hostile_values() {
        let mut b = [0xffu8; 4096];
        b[4..24].copy_from_slice(&[0x80; 20]); // invalid UTF-8 serial
        let id = IdentifyController::from_bytes(&b);
        assert_eq!(as_str(id.serial()), "?");
        assert_eq!(id.power_states().len(), 32);
        assert_eq!(id.max_data_transfer_bytes(4096), Some(u64::MAX));
        assert_eq!(id.sq_entry_size_max(), 1 << 15);
        assert!(!id.sgls_supported()); // 11b is reserved
        assert_eq!(id.subnqn().len(), 256);

        let zero = IdentifyController::default();
        assert_eq!(zero.serial(), b"");
        assert_eq!(zero.subnqn(), b"");
        assert_eq!(zero.max_data_transfer_bytes(4096), None);
        assert_eq!(zero.power_states().len(), 1);
        assert!(zero == IdentifyController::zeroed());
    }

    #[test]
    fn trim_helpers() {
        assert_eq!(trim_padding(b"ab  \0 \0"), b"ab");
        assert_eq!(trim_padding(b"   "), b"");
        assert_eq!(trim_padding(b" a b "), b" a b");
        assert_eq!(as_str(b"ok"), "ok");
        assert_eq!(as_str(&[0xc3]), "?");
    }

    fn namespace_bytes(nlbaf: u8, flbas: u8) -> [u8; 4096] {
        let mut b = [0u8; 4096];
        put_u64(&mut b, 0, 0x20_0000);
        put_u64(&mut b, 8, 0x10_0000);
        put_u64(&mut b, 16, 0x8_0000);
        b[24] = 0x01; // thin
        b[25] = nlbaf;
        b[26] = flbas;
        b[29] = 0x09; // PI type 1, first
                      // LBAF0: 512 B, no metadata. LBAF1: 4 KiB with 8 bytes metadata, RP 2.
        b[128..132].copy_from_slice(&[0, 0, 9, 0]);
        b[132..136].copy_from_slice(&[8, 0, 12, 2]);
        b
    }

    #[test]
    fn namespace_from_bytes() {
        let ns = IdentifyNamespace::from_bytes(&namespace_bytes(1, 0x11));
        assert_eq!(ns.nsze, 0x20_0000);
        assert_eq!(ns.ncap, 0x10_0000);
        assert_eq!(ns.nuse, 0x8_0000);
        assert!(ns.nsfeat_thin());
        assert_eq!(ns.nlbaf, 1);
        assert_eq!(ns.flbas_index(), 1);
        assert!(ns.flbas_extended());
        assert_eq!(ns.dps_pi_type(), 1);
        assert!(ns.dps_pi_first());
        assert_eq!(ns.lba_formats().len(), 2);
        assert_eq!(ns.lbaf[0].data_size(), Some(512));
        let cur = ns.current_lba_format().expect("index 1 is within NLBAF");
        assert_eq!(cur.lbads, 12);
        assert_eq!(cur.ms, 8);
        assert_eq!(cur.data_size(), Some(4096));
        assert_eq!(cur.relative_performance(), 2);

        let ns0 = IdentifyNamespace::from_bytes(&namespace_bytes(1, 0x00));
        assert_eq!(ns0.current_lba_format().and_then(|f| f.data_size()), Some(512));
        assert!(!ns0.flbas_extended());
    }

    #[test]
    fn namespace_untrusted_indices() {
        // FLBAS index 2 with only two formats (NLBAF = 1): rejected.
        let ns = IdentifyNamespace::from_bytes(&namespace_bytes(1, 0x02));
        assert_eq!(ns.current_lba_format(), None);

        // Upper index bits are reserved (ignored) with at most 16 formats.
        let ns = IdentifyNamespace::from_bytes(&namespace_bytes(1, 0x61));
        assert_eq!(ns.flbas_index(), 1);
        assert!(ns.current_lba_format().is_some());

        // With more than 16 formats bits 6:5 extend the index.
        let mut b = namespace_bytes(63, 0x6f);
        b[128 + 63 * 4 + 2] = 13;
        let ns = IdentifyNamespace::from_bytes(&b);
        assert_eq!(ns.flbas_index(), 63);
        assert_eq!(ns.current_lba_format().and_then(|f| f.data_size()), Some(8192));
        let ns = IdentifyNamespace::from_bytes(&namespace_bytes(40, 0x6f));
        assert_eq!(ns.current_lba_format(), None);

        // Absurd NLBAF is clamped.
        let ns = IdentifyNamespace::from_bytes(&namespace_bytes(255, 0));
        assert_eq!(ns.lba_formats().len(), 64);

        // Every FLBAS / NLBAF combination is total (a sample under Miri).
        let step = if cfg!(miri) { 17 } else { 1 };
        for nlbaf in (0..=255u8).step_by(step) {
            for flbas in (0..=255u8).step_by(step) {
                let mut ns = IdentifyNamespace::zeroed();
                ns.nlbaf = nlbaf;
                ns.flbas = flbas;
                if let Some(f) = ns.current_lba_format() {
                    assert!(ns.flbas_index() <= nlbaf);
                    let _ = f.data_size();
                }
            }
        }
    }

    #[test]
    fn lba_format_data_size_bounds() {
        let f = |lbads| LbaFormat { ms: 0, lbads, rp: 0 };
        assert_eq!(f(8).data_size(), None);
        assert_eq!(f(9).data_size(), Some(512));
        assert_eq!(f(16).data_size(), Some(65536));
        assert_eq!(f(17).data_size(), None);
        assert_eq!(f(0).data_size(), None);
        assert_eq!(f(255).data_size(), None);
    }

    #[test]
    fn active_namespace_list() {
        let mut b = [0u8; 4096];
        put_u32(&mut b, 0, 1);
        put_u32(&mut b, 4, 2);
        put_u32(&mut b, 8, 7);
        put_u32(&mut b, 16, 9); // after the terminator: ignored
        let list = ActiveNamespaceList::from_bytes(&b);
        assert!(list.iter().eq([1, 2, 7]));
        assert_eq!(ActiveNamespaceList::default().iter().count(), 0);

        let full = ActiveNamespaceList::from_bytes(&[0x01; 4096]);
        assert_eq!(full.iter().count(), 1024);
        assert!(full.iter().all(|n| n == 0x0101_0101));
    }
}
