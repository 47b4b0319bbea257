//! End-to-end data protection in the simulator (NVM Command Set 1.0
//! section 5.2): the protection information a write with PRACT inserts,
//! and the guard, application tag and reference tag checks of PRCHK, with
//! the specification's escapes (an application tag of FFFFh disables the
//! checks of a block of type 1 or 2; with a reference tag of FFFFFFFFh too,
//! of type 3).

use super::status::{APP_TAG_CHECK, GUARD_CHECK, REF_TAG_CHECK, SUCCESS};
use crate::SimMetadata;
use nvme_spec::pi::{crc16_t10dif, crc64_nvme, PiTuple, PiTuple64, Prinfo};

/// What one command asks: PRINFO, the initial or expected reference tag
/// (CDW14, and with the 64-bit guard bits 47:32 in CDW3 bits 15:0), the
/// application tag and its mask (CDW15).
#[derive(Clone, Copy, Debug)]
pub(super) struct Asked {
    pub(super) prinfo: Prinfo,
    pub(super) ref_tag: u64,
    pub(super) app_tag: u16,
    pub(super) app_mask: u16,
}

impl Asked {
    pub(super) fn of(md: &SimMetadata, cdw3: u32, cdw12: u32, cdw14: u32, cdw15: u32) -> Asked {
        let high = if md.pif == 2 { u64::from(cdw3 & 0xffff) << 32 } else { 0 };
        Asked {
            prinfo: Prinfo::from_bits((cdw12 >> 26) as u8 & 0xf),
            ref_tag: high | u64::from(cdw14),
            app_tag: cdw15 as u16,
            app_mask: (cdw15 >> 16) as u16,
        }
    }

    pub(super) fn checks(&self) -> bool {
        self.prinfo.check_guard() || self.prinfo.check_app_tag() || self.prinfo.check_ref_tag()
    }
}

/// The tuple's size.
fn size(md: &SimMetadata) -> usize {
    if md.pif == 2 {
        PiTuple64::SIZE
    } else {
        PiTuple::SIZE
    }
}

/// Where a block's tuple lies in its metadata.
fn pi_at(md: &SimMetadata) -> usize {
    if md.pi_first {
        0
    } else {
        usize::from(md.ms) - size(md)
    }
}

/// A tuple, in either format: guard, application tag, reference tag.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Tuple {
    guard: u64,
    app_tag: u16,
    ref_tag: u64,
}

/// The guard of a block: its data, and the metadata before the tuple.
fn guard(md: &SimMetadata, data: &[u8], meta: &[u8]) -> u64 {
    let before = &meta[..pi_at(md)];
    if md.pif == 2 {
        crc64_nvme(&[data, before])
    } else {
        u64::from(crc16_t10dif(crc16_t10dif(0, data), before))
    }
}

fn read_tuple(md: &SimMetadata, meta: &[u8]) -> Tuple {
    let at = pi_at(md);
    if md.pif == 2 {
        let t = PiTuple64::from_bytes(meta[at..at + 16].try_into().unwrap_or_default());
        Tuple { guard: t.guard, app_tag: t.app_tag, ref_tag: t.ref_tag }
    } else {
        let t = PiTuple::from_bytes(meta[at..at + 8].try_into().unwrap_or_default());
        Tuple { guard: u64::from(t.guard), app_tag: t.app_tag, ref_tag: u64::from(t.ref_tag) }
    }
}

fn write_tuple(md: &SimMetadata, meta: &mut [u8], t: Tuple) {
    let at = pi_at(md);
    if md.pif == 2 {
        let bytes = PiTuple64 { guard: t.guard, app_tag: t.app_tag, ref_tag: t.ref_tag }.to_bytes();
        meta[at..at + 16].copy_from_slice(&bytes);
    } else {
        let bytes =
            PiTuple { guard: t.guard as u16, app_tag: t.app_tag, ref_tag: t.ref_tag as u32 }.to_bytes();
        meta[at..at + 8].copy_from_slice(&bytes);
    }
}

/// The reference tag block `i` of a command carries or must carry (32 or
/// 48 bits).
fn ref_tag(md: &SimMetadata, asked: &Asked, i: usize) -> u64 {
    let mask = if md.pif == 2 { 0xffff_ffff_ffff } else { 0xffff_ffff };
    let tag = if md.pi == 3 { asked.ref_tag } else { asked.ref_tag.wrapping_add(i as u64) };
    tag & mask
}

/// Writes each block's tuple into `meta` (PRACT on a write).
pub(super) fn insert(md: &SimMetadata, asked: &Asked, data: &[u8], meta: &mut [u8], block_size: usize) {
    let ms = usize::from(md.ms);
    for (i, (d, m)) in data.chunks_exact(block_size).zip(meta.chunks_exact_mut(ms)).enumerate() {
        let tuple = Tuple { guard: guard(md, d, m), app_tag: asked.app_tag, ref_tag: ref_tag(md, asked, i) };
        write_tuple(md, m, tuple);
    }
}

/// Checks each block's tuple as PRCHK asks: the first failure's status.
pub(super) fn check(md: &SimMetadata, asked: &Asked, data: &[u8], meta: &[u8], block_size: usize) -> u16 {
    let ms = usize::from(md.ms);
    let all_ref = if md.pif == 2 { 0xffff_ffff_ffff } else { 0xffff_ffff };
    for (i, (d, m)) in data.chunks_exact(block_size).zip(meta.chunks_exact(ms)).enumerate() {
        let tuple = read_tuple(md, m);
        let escaped = match md.pi {
            3 => tuple.app_tag == 0xffff && tuple.ref_tag == all_ref,
            _ => tuple.app_tag == 0xffff,
        };
        if escaped {
            continue;
        }
        if asked.prinfo.check_guard() && tuple.guard != guard(md, d, m) {
            return GUARD_CHECK;
        }
        if asked.prinfo.check_app_tag()
            && (tuple.app_tag & asked.app_mask) != (asked.app_tag & asked.app_mask)
        {
            return APP_TAG_CHECK;
        }
        if asked.prinfo.check_ref_tag() && md.pi != 3 && tuple.ref_tag != ref_tag(md, asked, i) {
            return REF_TAG_CHECK;
        }
    }
    SUCCESS
}
