//! End-to-end data protection on reads, writes and compares (NVM Command
//! Set 1.0 section 5.2): what the controller is asked to do with each
//! block's protection information ([`Protection`]), and the host's side of
//! it ([`fill_protection_information`]) for writes that carry their own.
//!
//! Protection information types 1, 2 and 3, with the 16-bit guard (8-byte
//! tuples) or the 64-bit guard (16-byte tuples, 48-bit reference tags), as
//! [`Namespace::pi_format`] says; formats with a 32-bit guard or storage
//! tags are refused.

use crate::error::{Argument, Error, Result};
use crate::namespace::{Namespace, PiFormat};
use crate::spec::pi::{crc16_t10dif, crc64_nvme, PiTuple, PiTuple64, Prinfo};

/// What the controller does with protection information on one command
/// (PRINFO, and the expected or initial tags in CDW14 and CDW15). The
/// default asks nothing: the protection information moves as the host's
/// buffer holds it, unchecked.
///
/// ```
/// use nvme_nostd::Protection;
/// let p = Protection::check_all().with_app_tag(0x1234, 0xffff);
/// assert!(p.check_guard && p.check_app_tag && p.check_ref_tag && !p.pract);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Protection {
    /// PRACT: the controller inserts protection information on a write
    /// and strips it on a read (where the metadata is only that
    /// information, it then does not move at all).
    pub pract: bool,
    /// PRCHK bit 2: check each block's guard against its data.
    pub check_guard: bool,
    /// PRCHK bit 1: check the application tag, under `app_tag_mask`.
    pub check_app_tag: bool,
    /// PRCHK bit 0: check the reference tag (types 1 and 2).
    pub check_ref_tag: bool,
    /// ILBRT (writes) or EILBRT (reads, compares): the reference tag of the
    /// first block (32 bits with the 16-bit guard, 48 with the 64-bit one);
    /// `None` takes the low bits of its LBA, which type 1 requires.
    pub reference_tag: Option<u64>,
    /// LBAT: the application tag to insert or expect.
    pub app_tag: u16,
    /// LBATM: which bits of the application tag are checked.
    pub app_tag_mask: u16,
}

impl Protection {
    /// Every check (guard, application tag, reference tag), no PRACT.
    pub const fn check_all() -> Self {
        Protection {
            pract: false,
            check_guard: true,
            check_app_tag: true,
            check_ref_tag: true,
            reference_tag: None,
            app_tag: 0,
            app_tag_mask: 0,
        }
    }

    /// PRACT alone: the controller inserts (writes) or strips (reads) the
    /// protection information.
    pub const fn pract() -> Self {
        Protection { pract: true, ..Self::none() }
    }

    /// Nothing asked (the default).
    pub const fn none() -> Self {
        Protection {
            pract: false,
            check_guard: false,
            check_app_tag: false,
            check_ref_tag: false,
            reference_tag: None,
            app_tag: 0,
            app_tag_mask: 0,
        }
    }

    /// The same with this application tag and mask.
    pub const fn with_app_tag(mut self, tag: u16, mask: u16) -> Self {
        self.app_tag = tag;
        self.app_tag_mask = mask;
        self
    }

    /// The same with this initial reference tag.
    pub const fn with_reference_tag(mut self, tag: u64) -> Self {
        self.reference_tag = Some(tag);
        self
    }

    /// Whether anything is asked of the controller.
    pub const fn any(&self) -> bool {
        self.pract || self.check_guard || self.check_app_tag || self.check_ref_tag
    }

    /// PRINFO in CDW12 bits 29:26.
    pub(crate) fn cdw12(&self) -> u32 {
        u32::from(self.prinfo()) << 26
    }

    /// The 4 bits of PRINFO (PRACT, then PRCHK).
    pub(crate) fn prinfo(&self) -> u8 {
        Prinfo::new()
            .with_pract(self.pract)
            .with_check_guard(self.check_guard)
            .with_check_app_tag(self.check_app_tag)
            .with_check_ref_tag(self.check_ref_tag)
            .into_bits()
    }

    /// The reference tag of the first block of a command at `lba`.
    pub(crate) fn ref_tag(&self, lba: u64) -> u64 {
        self.reference_tag.unwrap_or(lba)
    }

    /// CDW15: LBATM in bits 31:16, LBAT in 15:0.
    pub(crate) fn cdw15(&self) -> u32 {
        u32::from(self.app_tag_mask) << 16 | u32::from(self.app_tag)
    }

    /// Whether `ns` can honour this: anything asked needs a namespace with
    /// protection information.
    pub(crate) fn check(&self, ns: &Namespace) -> Result {
        if self.any() && ns.pi_format().is_none() {
            Err(Error::InvalidArgument(Argument::ProtectionInformation))
        } else {
            Ok(())
        }
    }
}

/// CDW14 and CDW3 of a command whose first block's reference tag is `tag`:
/// its low 32 bits, and with the 64-bit guard its bits 47:32 in CDW3 bits
/// 15:0 (NVM Command Set 1.0, figures 20 and 44).
pub(crate) fn ref_tag_dwords(format: PiFormat, tag: u64) -> (u32, u32) {
    match format {
        PiFormat::Guard16 => (tag as u32, 0),
        PiFormat::Guard64 => (tag as u32, (tag >> 32) as u32 & 0xffff),
    }
}

/// Writes the protection information of `blocks` blocks from `lba` of `ns`
/// into `buffer`, laid out as a write of them with PRACT clear needs it
/// ([`Namespace::buffer_bytes`]): each guard over its block's data (and
/// the metadata before the tuple, where the tuple is the last bytes), by
/// CRC-16 T10-DIF or CRC-64/NVME as the namespace's
/// [`PiFormat`] says; the application tag `app_tag`; and the reference tag
/// `reference_tag` plus the block's index (type 1 needs the LBA's low 32
/// or 48 bits; type 3 leaves it to the host). Other metadata bytes are left
/// as they are. Refused on a namespace without protection information in a
/// format the driver handles, or a buffer too small.
pub fn fill_protection_information(
    ns: &Namespace,
    blocks: u32,
    buffer: &mut [u8],
    app_tag: u16,
    reference_tag: u64,
) -> Result {
    let Some(format) = ns.pi_format() else {
        return Err(Error::InvalidArgument(Argument::ProtectionInformation));
    };
    let needed = ns.buffer_bytes(blocks, false);
    if buffer.len() < needed {
        return Err(Error::BufferTooSmall { needed, actual: buffer.len() });
    }
    let (bs, ms) = (ns.block_size() as usize, usize::from(ns.metadata_size()));
    let size = format.tuple_size();
    // Where the tuple lies in a block's metadata, and what the guard covers
    // of the metadata before it (identify checked that MS holds a tuple).
    let pi_at = if ns.pi_first() { 0 } else { ms.saturating_sub(size) };
    for i in 0..blocks as usize {
        let (data, meta) = if ns.extended_lba() {
            let at = i * (bs + ms);
            (at, at + bs)
        } else {
            (i * bs, blocks as usize * bs + i * ms)
        };
        let (block, before) = (&buffer[data..data + bs], &buffer[meta..meta + pi_at]);
        let tag = reference_tag.wrapping_add(i as u64);
        let mut tuple = [0u8; PiTuple64::SIZE];
        match format {
            PiFormat::Guard16 => {
                let guard = crc16_t10dif(crc16_t10dif(0, block), before);
                tuple[..PiTuple::SIZE]
                    .copy_from_slice(&PiTuple { guard, app_tag, ref_tag: tag as u32 }.to_bytes());
            }
            PiFormat::Guard64 => {
                let guard = crc64_nvme(&[block, before]);
                tuple.copy_from_slice(
                    &PiTuple64 { guard, app_tag, ref_tag: tag & 0xffff_ffff_ffff }.to_bytes(),
                );
            }
        }
        buffer[meta + pi_at..meta + pi_at + size].copy_from_slice(&tuple[..size]);
    }
    Ok(())
}
