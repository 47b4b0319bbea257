//! End-to-end data protection in the simulator (NVM Command Set 1.0
//! section 5.2): the protection information a write with PRACT inserts,
//! and the guard, application tag and reference tag checks of PRCHK, with
//! the specification's escapes (an application tag of FFFFh disables the
//! checks of a block of type 1 or 2; with a reference tag of FFFFFFFFh too,
//! of type 3).

use super::status::{APP_TAG_CHECK, GUARD_CHECK, REF_TAG_CHECK, SUCCESS};
use crate::SimMetadata;
use nvme_spec::pi::{crc16_t10dif, PiTuple, Prinfo};

/// What one command asks: PRINFO, the initial or expected reference tag
/// (CDW14), the application tag and its mask (CDW15).
#[derive(Clone, Copy, Debug)]
pub(super) struct Asked {
    pub(super) prinfo: Prinfo,
    pub(super) ref_tag: u32,
    pub(super) app_tag: u16,
    pub(super) app_mask: u16,
}

impl Asked {
    pub(super) fn of(cdw12: u32, cdw14: u32, cdw15: u32) -> Asked {
        Asked {
            prinfo: Prinfo::from_bits((cdw12 >> 26) as u8 & 0xf),
            ref_tag: cdw14,
            app_tag: cdw15 as u16,
            app_mask: (cdw15 >> 16) as u16,
        }
    }

    pub(super) fn checks(&self) -> bool {
        self.prinfo.check_guard() || self.prinfo.check_app_tag() || self.prinfo.check_ref_tag()
    }
}

/// Where a block's tuple lies in its metadata.
fn pi_at(md: &SimMetadata) -> usize {
    if md.pi_first {
        0
    } else {
        usize::from(md.ms) - PiTuple::SIZE
    }
}

/// The guard of a block: its data, and the metadata before the tuple.
fn guard(md: &SimMetadata, data: &[u8], meta: &[u8]) -> u16 {
    crc16_t10dif(crc16_t10dif(0, data), &meta[..pi_at(md)])
}

/// The reference tag block `i` of a command carries or must carry.
fn ref_tag(md: &SimMetadata, asked: &Asked, i: usize) -> u32 {
    if md.pi == 3 {
        asked.ref_tag
    } else {
        asked.ref_tag.wrapping_add(i as u32)
    }
}

/// Writes each block's tuple into `meta` (PRACT on a write).
pub(super) fn insert(md: &SimMetadata, asked: &Asked, data: &[u8], meta: &mut [u8], block_size: usize) {
    let ms = usize::from(md.ms);
    for (i, (d, m)) in data.chunks_exact(block_size).zip(meta.chunks_exact_mut(ms)).enumerate() {
        let tuple =
            PiTuple { guard: guard(md, d, m), app_tag: asked.app_tag, ref_tag: ref_tag(md, asked, i) };
        let at = pi_at(md);
        m[at..at + PiTuple::SIZE].copy_from_slice(&tuple.to_bytes());
    }
}

/// Checks each block's tuple as PRCHK asks: the first failure's status.
pub(super) fn check(md: &SimMetadata, asked: &Asked, data: &[u8], meta: &[u8], block_size: usize) -> u16 {
    let ms = usize::from(md.ms);
    for (i, (d, m)) in data.chunks_exact(block_size).zip(meta.chunks_exact(ms)).enumerate() {
        let at = pi_at(md);
        let tuple = PiTuple::from_bytes(m[at..at + PiTuple::SIZE].try_into().unwrap_or_default());
        let escaped = match md.pi {
            3 => tuple.app_tag == 0xffff && tuple.ref_tag == u32::MAX,
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
