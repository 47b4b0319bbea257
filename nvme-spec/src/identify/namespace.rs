//! Identify Namespace (CNS 00h) of the NVM command set, its LBA formats and
//! the bitfields of its capability fields.

use super::{assert_layout, le_u128, IDENTIFY_DATA_SIZE};
use crate::identify::controller::capability;
use bitfield_struct::bitfield;
use core::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

capability! {
    /// LBA Format data structure (NVM Command Set 1.0 figure "LBA Format Data
    /// Structure"; 1.4 figure 250), 4 bytes.
    LbaFormat(u32) {
        /// MS: Metadata Size in bytes per logical block.
        pub ms: u16,
        /// LBADS: LBA Data Size, as log2 of bytes; 0 means the format is unused.
        pub lbads: u8,
        /// RP: Relative Performance (0 best, 3 degraded).
        #[bits(2)]
        pub rp: u8,
        #[bits(6)]
        __: u8,
    }
}

impl LbaFormat {
    /// Logical block data size in bytes, or `None` if LBADS is outside the
    /// range the specification allows (512 B ..= 64 KiB, i.e. 9 ..= 16).
    pub const fn data_size(&self) -> Option<u32> {
        let lbads = self.lbads();
        if lbads >= 9 && lbads <= 16 {
            Some(1 << lbads)
        } else {
            None
        }
    }
}

capability! {
    /// NSFEAT (offset 24): Namespace Features.
    Nsfeat(u8) {
        /// THINP: thin provisioning (NCAP may be less than NSZE).
        pub thin_provisioning: bool,
        /// NSABP: NAWUN, NAWUPF and NACWU are valid for this namespace.
        pub atomics: bool,
        /// DAE: the Deallocated or Unwritten Logical Block error is supported.
        pub dulbe: bool,
        /// UIDREUSE: NGUID and EUI64 are never reused.
        pub uid_reuse: bool,
        /// OPTPERF: NPWG, NPWA, NPDG, NPDA and NOWS are valid.
        pub optimal_performance: bool,
        #[bits(3)]
        __: u8,
    }
}

capability! {
    /// FLBAS (offset 26): Formatted LBA Size.
    Flbas(u8) {
        /// Bits 3:0 of the index of the LBA format in use.
        #[bits(4)]
        pub format_low: u8,
        /// Metadata is transferred at the end of each logical block (an
        /// extended LBA) rather than in a separate buffer.
        pub extended: bool,
        /// Bits 5:4 of the index, when NLBAF reports more than 16 formats.
        #[bits(2)]
        pub format_high: u8,
        __: bool,
    }
}

capability! {
    /// MC (offset 27): Metadata Capabilities.
    Mc(u8) {
        /// Metadata as part of an extended data LBA.
        pub extended: bool,
        /// Metadata in a separate buffer.
        pub separate: bool,
        #[bits(6)]
        __: u8,
    }
}

capability! {
    /// DPC (offset 28): End-to-end Data Protection Capabilities.
    Dpc(u8) {
        /// Protection information type 1.
        pub type1: bool,
        /// Protection information type 2.
        pub type2: bool,
        /// Protection information type 3.
        pub type3: bool,
        /// Protection information in the first bytes of metadata.
        pub first: bool,
        /// Protection information in the last bytes of metadata.
        pub last: bool,
        #[bits(3)]
        __: u8,
    }
}

capability! {
    /// DPS (offset 29): End-to-end Data Protection Type Settings.
    Dps(u8) {
        /// PIT: protection information type (0 disabled, 1 to 3 the type).
        #[bits(3)]
        pub pit: u8,
        /// PIP: protection information is the first bytes of the metadata
        /// (otherwise the last).
        pub first: bool,
        #[bits(4)]
        __: u8,
    }
}

capability! {
    /// NMIC (offset 30): Namespace Multi-path I/O and Namespace Sharing
    /// Capabilities.
    Nmic(u8) {
        /// The namespace may be attached to two or more controllers.
        pub shared: bool,
        #[bits(7)]
        __: u8,
    }
}

capability! {
    /// DLFEAT (offset 33): Deallocate Logical Block Features.
    Dlfeat(u8) {
        /// What a read of a deallocated block returns (0 not reported, 1 all
        /// zeroes, 2 all ones).
        #[bits(3)]
        pub read_value: u8,
        /// Write Zeroes can deallocate.
        pub write_zeroes_deallocate: bool,
        /// The guard field of deallocated blocks is the CRC of their data.
        pub guard_crc: bool,
        #[bits(3)]
        __: u8,
    }
}

/// Identify Namespace data structure for the NVM command set (CNS 00h),
/// 4096 bytes.
///
/// NVM Command Set 1.0 section 4.1.5.1; Base 1.4 section 5.15.2.1.
#[repr(C)]
#[derive(Clone, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IdentifyNamespace {
    /// NSZE (offset 0): Namespace Size, in logical blocks.
    pub nsze: u64,
    /// NCAP (offset 8): Namespace Capacity, in logical blocks.
    pub ncap: u64,
    /// NUSE (offset 16): Namespace Utilization, in logical blocks.
    pub nuse: u64,
    /// NSFEAT (offset 24): Namespace Features.
    pub nsfeat: Nsfeat,
    /// NLBAF (offset 25): Number of LBA Formats, 0-based.
    pub nlbaf: u8,
    /// FLBAS (offset 26): Formatted LBA Size (format index and extended-LBA flag).
    pub flbas: Flbas,
    /// MC (offset 27): Metadata Capabilities.
    pub mc: Mc,
    /// DPC (offset 28): End-to-end Data Protection Capabilities.
    pub dpc: Dpc,
    /// DPS (offset 29): End-to-end Data Protection Type Settings.
    pub dps: Dps,
    /// NMIC (offset 30): Namespace Multi-path I/O and Namespace Sharing Capabilities.
    pub nmic: Nmic,
    /// RESCAP (offset 31): Reservation Capabilities.
    pub rescap: u8,
    /// FPI (offset 32): Format Progress Indicator.
    pub fpi: u8,
    /// DLFEAT (offset 33): Deallocate Logical Block Features.
    pub dlfeat: Dlfeat,
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
        zerocopy::transmute!(*bytes)
    }

    /// An all-zero structure (every field 0).
    pub const fn zeroed() -> Self {
        Self::from_bytes(&[0; IDENTIFY_DATA_SIZE])
    }

    /// Index of the LBA format the namespace is formatted with: FLBAS bits 3:0,
    /// extended with bits 6:5 as index bits 5:4 when the namespace reports more
    /// than 16 formats (NLBAF >= 16); otherwise bits 6:5 are reserved and ignored.
    pub const fn format_index(&self) -> u8 {
        let low = self.flbas.format_low();
        if self.nlbaf >= 16 {
            low | (self.flbas.format_high() << 4)
        } else {
            low
        }
    }

    /// The LBA format the namespace is formatted with, or `None` if FLBAS names
    /// an index beyond NLBAF (0-based) or beyond the 64 descriptors.
    pub fn current_lba_format(&self) -> Option<LbaFormat> {
        let index = self.format_index();
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

    /// NSATTR bit 0: the namespace is currently write protected.
    pub const fn write_protected(&self) -> bool {
        self.nsattr & 0x01 != 0
    }

    /// NVMCAP as a number of bytes.
    pub const fn nvmcap(&self) -> u128 {
        le_u128(&self.nvmcap)
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
            .field("nsfeat", &self.nsfeat)
            .field("nlbaf", &self.nlbaf)
            .field("flbas", &self.flbas)
            .field("dps", &self.dps)
            .field("current_lba_format", &self.current_lba_format())
            .field("nguid", &self.nguid)
            .field("eui64", &self.eui64)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_u64(buf: &mut [u8; 4096], at: usize, v: u64) {
        buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
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
        let bytes = namespace_bytes(1, 0x11);
        let ns = IdentifyNamespace::from_bytes(&bytes);
        assert_eq!(ns.nsze, 0x20_0000);
        assert_eq!(ns.ncap, 0x10_0000);
        assert_eq!(ns.nuse, 0x8_0000);
        assert!(ns.nsfeat.thin_provisioning());
        assert_eq!(ns.nlbaf, 1);
        assert_eq!(ns.format_index(), 1);
        assert!(ns.flbas.extended());
        assert_eq!(ns.dps.pit(), 1);
        assert!(ns.dps.first());
        assert_eq!(ns.lba_formats().len(), 2);
        assert_eq!(ns.lbaf[0].data_size(), Some(512));
        let cur = ns.current_lba_format().expect("index 1 is within NLBAF");
        assert_eq!(cur.lbads(), 12);
        assert_eq!(cur.ms(), 8);
        assert_eq!(cur.data_size(), Some(4096));
        assert_eq!(cur.rp(), 2);
        assert_eq!(ns.as_bytes(), &bytes[..]);

        let ns0 = IdentifyNamespace::from_bytes(&namespace_bytes(1, 0x00));
        assert_eq!(ns0.current_lba_format().and_then(|f| f.data_size()), Some(512));
        assert!(!ns0.flbas.extended());
    }

    #[test]
    fn namespace_untrusted_indices() {
        // FLBAS index 2 with only two formats (NLBAF = 1): rejected.
        let ns = IdentifyNamespace::from_bytes(&namespace_bytes(1, 0x02));
        assert_eq!(ns.current_lba_format(), None);

        // Upper index bits are reserved (ignored) with at most 16 formats.
        let ns = IdentifyNamespace::from_bytes(&namespace_bytes(1, 0x61));
        assert_eq!(ns.format_index(), 1);
        assert!(ns.current_lba_format().is_some());

        // With more than 16 formats bits 6:5 extend the index.
        let mut b = namespace_bytes(63, 0x6f);
        b[128 + 63 * 4 + 2] = 13;
        let ns = IdentifyNamespace::from_bytes(&b);
        assert_eq!(ns.format_index(), 63);
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
                ns.flbas = Flbas::from_bits(flbas);
                if let Some(f) = ns.current_lba_format() {
                    assert!(ns.format_index() <= nlbaf);
                    let _ = f.data_size();
                }
            }
        }
    }

    #[test]
    fn lba_format_data_size_bounds() {
        let f = |lbads| LbaFormat::new().with_lbads(lbads);
        assert_eq!(f(8).data_size(), None);
        assert_eq!(f(9).data_size(), Some(512));
        assert_eq!(f(16).data_size(), Some(65536));
        assert_eq!(f(17).data_size(), None);
        assert_eq!(f(0).data_size(), None);
        assert_eq!(f(255).data_size(), None);
    }
}

/// The NVM command set's Identify Namespace data structure (CNS 05h, CSI
/// 00h; NVM Command Set 1.0 figure 114): what each LBA format's protection
/// information looks like.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IdentifyNamespaceNvm {
    /// LBSTM: Logical Block Storage Tag Mask (offset 0).
    pub lbstm: u64,
    /// PIC: Protection Information Capabilities (offset 8).
    pub pic: u8,
    _rsvd9: [u8; 3],
    /// ELBAF: Extended LBA Formats, one per LBA format (offset 12).
    pub elbaf: [u32; 64],
    _rsvd268: [u8; 3828],
}

assert_layout!(IdentifyNamespaceNvm, IDENTIFY_DATA_SIZE, { lbstm: 0, pic: 8, elbaf: 12 });

impl IdentifyNamespaceNvm {
    /// The structure in an Identify page.
    pub fn from_bytes(page: &[u8; IDENTIFY_DATA_SIZE]) -> Self {
        zerocopy::transmute!(*page)
    }

    /// PIF of LBA format `index` (ELBAF bits 8:7): 0 a 16-bit guard, 1 a
    /// 32-bit guard, 2 a 64-bit guard.
    pub fn pif(&self, index: usize) -> Option<u8> {
        self.elbaf.get(index).map(|e| (e >> 7 & 3) as u8)
    }

    /// STS of LBA format `index` (ELBAF bits 6:0): the storage tag size in
    /// bits.
    pub fn sts(&self, index: usize) -> Option<u8> {
        self.elbaf.get(index).map(|e| (e & 0x7f) as u8)
    }
}
