//! End-to-end data protection (NVM Command Set 1.0 section 5.2; Base 1.4
//! section 8.3): the protection information tuples with a 16-bit guard (8
//! bytes) and a 64-bit guard (16 bytes), their CRCs, and the PRINFO field of
//! the I/O commands.

use bitfield_struct::bitfield;

/// PRINFO (CDW12 bits 29:26 of Read, Write, Compare, Verify and Write
/// Zeroes; NVM Command Set 1.0 figure 10).
#[bitfield(u8)]
#[derive(PartialEq, Eq)]
pub struct Prinfo {
    /// PRCHK bit 0: check the Reference Tag.
    pub check_ref_tag: bool,
    /// PRCHK bit 1: check the Application Tag.
    pub check_app_tag: bool,
    /// PRCHK bit 2: check the Guard.
    pub check_guard: bool,
    /// PRACT: Protection Information Action. On a write the controller
    /// inserts the protection information; on a read it strips it (where
    /// the metadata is the protection information alone).
    pub pract: bool,
    #[bits(4)]
    __: u8,
}

/// The protection information of one logical block with a 16-bit guard
/// (NVM Command Set 1.0 figure 9): 8 bytes, every field big-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PiTuple {
    /// Guard: CRC-16 T10-DIF of the block's data (and, with the tuple in
    /// the last bytes of the metadata, of the metadata before it).
    pub guard: u16,
    /// Logical Block Application Tag.
    pub app_tag: u16,
    /// Logical Block Reference Tag.
    pub ref_tag: u32,
}

impl PiTuple {
    /// Size in bytes.
    pub const SIZE: usize = 8;

    /// The tuple as it lies in metadata.
    pub const fn to_bytes(self) -> [u8; 8] {
        let g = self.guard.to_be_bytes();
        let a = self.app_tag.to_be_bytes();
        let r = self.ref_tag.to_be_bytes();
        [g[0], g[1], a[0], a[1], r[0], r[1], r[2], r[3]]
    }

    /// The tuple in `bytes`.
    pub const fn from_bytes(b: [u8; 8]) -> Self {
        PiTuple {
            guard: u16::from_be_bytes([b[0], b[1]]),
            app_tag: u16::from_be_bytes([b[2], b[3]]),
            ref_tag: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// The protection information of one logical block with a 64-bit guard
/// (NVM Command Set 1.0 figure 11, no storage tag): 16 bytes, every field
/// big-endian; the reference tag is 48 bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PiTuple64 {
    /// Guard: CRC-64/NVME of the block's data (and of the metadata before
    /// the tuple, with the tuple last).
    pub guard: u64,
    /// Logical Block Application Tag.
    pub app_tag: u16,
    /// Logical Block Reference Tag, 48 bits.
    pub ref_tag: u64,
}

impl PiTuple64 {
    /// Size in bytes.
    pub const SIZE: usize = 16;

    /// The tuple as it lies in metadata (the reference tag's bits above 47
    /// are dropped).
    pub const fn to_bytes(self) -> [u8; 16] {
        let g = self.guard.to_be_bytes();
        let a = self.app_tag.to_be_bytes();
        let r = self.ref_tag.to_be_bytes();
        [g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], a[0], a[1], r[2], r[3], r[4], r[5], r[6], r[7]]
    }

    /// The tuple in `b`.
    pub const fn from_bytes(b: [u8; 16]) -> Self {
        PiTuple64 {
            guard: u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            app_tag: u16::from_be_bytes([b[8], b[9]]),
            ref_tag: u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]]),
        }
    }
}

const fn crc64_table() -> [u64; 256] {
    // CRC-64/NVME: polynomial AD93D23594C93659h, reflected.
    const POLY: u64 = 0x9a6c_9329_ac4b_c9b5;
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ POLY } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

static CRC64_TABLE: [u64; 256] = crc64_table();

/// CRC-64/NVME (polynomial AD93D23594C93659h, reflected, initial value and
/// final XOR all ones) of the concatenation of `parts`.
pub fn crc64_nvme(parts: &[&[u8]]) -> u64 {
    let crc = parts
        .iter()
        .flat_map(|p| p.iter())
        .fold(u64::MAX, |crc, &b| (crc >> 8) ^ CRC64_TABLE[usize::from(crc as u8 ^ b)]);
    !crc
}

const fn crc_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x8bb7 } else { crc << 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

static CRC_TABLE: [u16; 256] = crc_table();

/// CRC-16 T10-DIF (polynomial 8BB7h, initial value `crc`, no reflection, no
/// final XOR) of `data`, continuing from `crc` (0 to start).
pub fn crc16_t10dif(crc: u16, data: &[u8]) -> u16 {
    data.iter().fold(crc, |crc, &b| (crc << 8) ^ CRC_TABLE[usize::from((crc >> 8) as u8 ^ b)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_check_value() {
        // The catalogue's check value for CRC-16/T10-DIF.
        assert_eq!(crc16_t10dif(0, b"123456789"), 0xd0db);
        assert_eq!(crc16_t10dif(crc16_t10dif(0, b"1234"), b"56789"), 0xd0db, "continues");
        assert_eq!(crc16_t10dif(0, &[0; 512]), 0);
    }

    #[test]
    fn crc64_check_value() {
        // The catalogue's check value for CRC-64/NVME.
        assert_eq!(crc64_nvme(&[b"123456789"]), 0xae8b_1486_0a79_9888);
        assert_eq!(crc64_nvme(&[b"1234", b"56789"]), 0xae8b_1486_0a79_9888, "parts concatenate");
    }

    #[test]
    fn tuple64_layout() {
        let t = PiTuple64 { guard: 0x0102_0304_0506_0708, app_tag: 0x090a, ref_tag: 0x0b0c_0d0e_0f10 };
        assert_eq!(t.to_bytes(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        assert_eq!(PiTuple64::from_bytes(t.to_bytes()), t);
    }

    #[test]
    fn tuple_is_big_endian() {
        let t = PiTuple { guard: 0x1234, app_tag: 0x5678, ref_tag: 0x9abc_def0 };
        assert_eq!(t.to_bytes(), [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0]);
        assert_eq!(PiTuple::from_bytes(t.to_bytes()), t);
        assert_eq!(Prinfo::new().with_pract(true).with_check_guard(true).into_bits(), 0b1100);
    }
}
