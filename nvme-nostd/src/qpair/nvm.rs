//! The NVM commands beyond read, write and flush (NVM Command Set 1.0
//! section 3.2; Base 1.4 section 6): Compare, Write Zeroes, Verify, Write
//! Uncorrectable, Dataset Management and Copy, each refused unsent where
//! the controller's ONCS does not offer it.

use super::types::CopyRange;
use super::{IoFlags, IoQueuePair, Path, SubmitError};
use crate::buffer::IoBuffer;
use crate::error::{Argument, Error, Feature, Result};
use crate::namespace::{Namespace, PiFormat};
use crate::protection::Protection;
use crate::slots::Cid;
use crate::spec::command::{CopySourceRange, DsmRange, IoOpcode, SubmissionEntry};
use crate::spec::dwords::{CopyCdw12, DsmAttributes, ReadWriteCdw12};
use crate::spec::identify::Oncs;
use hal_traits::{Direction, Hal};

impl<H: Hal, B: IoBuffer, C, const N: usize> IoQueuePair<'_, H, B, C, N> {
    /// Compares `blocks` logical blocks at `lba` of `ns` with `buffer` (NVM
    /// command set section 6.2, Compare): the controller reads the blocks
    /// and the buffer; a difference completes with Compare Failure (SCT 2h,
    /// SC 85h). Where the controller offers it (ONCS bit 0; else
    /// [`Feature::NvmCommand`](crate::Feature::NvmCommand), unsent).
    pub fn compare(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>> {
        self.compare_with(ns, lba, blocks, IoFlags::default(), buffer, context)
    }

    /// [`compare`](Self::compare) with I/O flags (FUA: the blocks are read
    /// from non-volatile media; limited retry).
    pub fn compare_with(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        flags: IoFlags,
        buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>> {
        if !self.ctrlr.identify_oncs().compare() {
            return Err(SubmitError { error: Error::Unsupported(Feature::NvmCommand), buffer, context });
        }
        self.read_write(
            IoOpcode::COMPARE,
            ns,
            lba,
            blocks,
            flags,
            Protection::none(),
            buffer,
            context,
            Path::Direct,
        )
    }

    /// [`compare_with`](Self::compare_with) with protection information
    /// checks or PRACT, as [`read_pi`](Self::read_pi) takes them.
    #[allow(clippy::too_many_arguments)]
    pub fn compare_pi(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        flags: IoFlags,
        protection: Protection,
        buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>> {
        if !self.ctrlr.identify_oncs().compare() {
            return Err(SubmitError { error: Error::Unsupported(Feature::NvmCommand), buffer, context });
        }
        self.read_write(IoOpcode::COMPARE, ns, lba, blocks, flags, protection, buffer, context, Path::Direct)
    }

    /// Writes zeroes to `blocks` logical blocks at `lba` of `ns`, moving no
    /// data (NVM command set section 6.16, Write Zeroes); with `deallocate`
    /// (DEAC) the controller may deallocate them (what they then read as,
    /// Identify Namespace DLFEAT says). Where the controller offers it (ONCS
    /// bit 3; else [`Feature::NvmCommand`](crate::Feature::NvmCommand),
    /// unsent).
    pub fn write_zeroes(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        deallocate: bool,
        context: C,
    ) -> Result<Cid, SubmitError<(), C>> {
        self.write_zeroes_with(ns, lba, blocks, deallocate, IoFlags::default(), context)
    }

    /// [`write_zeroes`](Self::write_zeroes) with I/O flags (FUA: the zeroes
    /// are on non-volatile media when it completes; limited retry).
    pub fn write_zeroes_with(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        deallocate: bool,
        flags: IoFlags,
        context: C,
    ) -> Result<Cid, SubmitError<(), C>> {
        self.write_zeroes_pi(ns, lba, blocks, deallocate, flags, Protection::none(), context)
    }

    /// [`write_zeroes_with`](Self::write_zeroes_with) on a namespace with
    /// protection information: with PRACT the controller writes each
    /// block's protection information too (with `protection`'s tags), as
    /// for a write. Refused unsent: any PRCHK bit (Write Zeroes checks
    /// nothing), anything asked of a namespace without protection
    /// information ([`Argument::ProtectionInformation`]).
    #[allow(clippy::too_many_arguments)]
    pub fn write_zeroes_pi(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        deallocate: bool,
        flags: IoFlags,
        protection: Protection,
        context: C,
    ) -> Result<Cid, SubmitError<(), C>> {
        if protection.check_guard || protection.check_app_tag || protection.check_ref_tag {
            let error = Error::InvalidArgument(Argument::ProtectionInformation);
            return Err(SubmitError { error, buffer: (), context });
        }
        let deac = u32::from(deallocate) << 25 | flags.cdw12();
        self.no_data(IoOpcode::WRITE_ZEROES, ns, lba, blocks, deac, protection, context, |oncs| {
            oncs.write_zeroes()
        })
    }

    /// Verifies `blocks` logical blocks at `lba` of `ns`: the controller
    /// reads them (and checks their protection information) without
    /// transferring data (NVM command set section 6.15, Verify). Where the
    /// controller offers it (ONCS bit 7; else
    /// [`Feature::NvmCommand`](crate::Feature::NvmCommand), unsent).
    pub fn verify(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        context: C,
    ) -> Result<Cid, SubmitError<(), C>> {
        self.verify_with(ns, lba, blocks, IoFlags::default(), context)
    }

    /// [`verify`](Self::verify) with I/O flags (FUA: the blocks are read
    /// from non-volatile media; limited retry).
    pub fn verify_with(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        flags: IoFlags,
        context: C,
    ) -> Result<Cid, SubmitError<(), C>> {
        self.verify_pi(ns, lba, blocks, flags, Protection::none(), context)
    }

    /// [`verify_with`](Self::verify_with) checking each block's protection
    /// information as `protection`'s PRCHK bits ask (a failed check is the
    /// request's error). Refused unsent: PRACT (Verify moves no data to
    /// insert into or strip from), anything asked of a namespace without
    /// protection information ([`Argument::ProtectionInformation`]).
    pub fn verify_pi(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        flags: IoFlags,
        protection: Protection,
        context: C,
    ) -> Result<Cid, SubmitError<(), C>> {
        if protection.pract {
            let error = Error::InvalidArgument(Argument::ProtectionInformation);
            return Err(SubmitError { error, buffer: (), context });
        }
        self.no_data(IoOpcode::VERIFY, ns, lba, blocks, flags.cdw12(), protection, context, |oncs| {
            oncs.verify()
        })
    }

    /// Marks `blocks` logical blocks at `lba` of `ns` invalid (NVM command
    /// set section 6.17, Write Uncorrectable): reads of them fail with
    /// Unrecovered Read Error until they are written again. Where the
    /// controller offers it (ONCS bit 1; else
    /// [`Feature::NvmCommand`](crate::Feature::NvmCommand), unsent).
    pub fn write_uncorrectable(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        context: C,
    ) -> Result<Cid, SubmitError<(), C>> {
        self.no_data(IoOpcode::WRITE_UNCORRECTABLE, ns, lba, blocks, 0, Protection::none(), context, |oncs| {
            oncs.write_uncorrectable()
        })
    }

    /// Dataset Management (NVM command set section 6.7): `attributes`
    /// (deallocate, integral dataset for read or write) for each of
    /// `ranges` of `ns`. The driver writes the range list into the first
    /// `16 × ranges.len()` bytes of `buffer`, which carries it to the device
    /// and comes back with the completion. Refused unsent: a controller
    /// without it (ONCS bit 2; [`Feature::NvmCommand`](crate::Feature::NvmCommand)),
    /// no range, more than 256, or a range of no blocks
    /// ([`Argument::DsmRanges`]), a range past the end of the namespace
    /// ([`Error::LbaOutOfRange`]), a buffer too small for the list.
    pub fn dataset_management(
        &mut self,
        ns: &Namespace,
        ranges: &[DsmRange],
        attributes: DsmAttributes,
        mut buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>>
    where
        B: core::ops::DerefMut<Target = [u8]>,
    {
        let len = ranges.len() * DsmRange::SIZE;
        let checked = if !self.ctrlr.identify_oncs().dataset_management() {
            Err(Error::Unsupported(Feature::NvmCommand))
        } else if ranges.is_empty() || ranges.len() > DsmRange::MAX || ranges.iter().any(|r| r.length == 0) {
            Err(Error::InvalidArgument(Argument::DsmRanges))
        } else if ranges
            .iter()
            .any(|r| r.slba.checked_add(u64::from(r.length)).is_none_or(|end| end > ns.blocks()))
        {
            Err(Error::LbaOutOfRange)
        } else if buffer.len() < len {
            Err(Error::BufferTooSmall { needed: len, actual: buffer.len() })
        } else {
            self.ctrlr.check_binding(ns.binding())
        };
        if let Err(error) = checked {
            return Err(SubmitError { error, buffer, context });
        }
        for (i, r) in ranges.iter().enumerate() {
            buffer[i * DsmRange::SIZE..(i + 1) * DsmRange::SIZE].copy_from_slice(&r.to_bytes());
        }
        let mut cmd = SubmissionEntry::new(IoOpcode::DATASET_MANAGEMENT.0, ns.id());
        cmd.cdw10 = (ranges.len() - 1) as u32;
        cmd.cdw11 = attributes.into_bits();
        self.submit_data(cmd, buffer, len, Direction::ToDevice, context, Path::Direct)
    }

    /// Copies the blocks of `ranges`, one after another, to `destination`
    /// and on (NVM Command Set 1.0 section 3.2.2, Copy, source range
    /// descriptors of format 0h) inside `ns`. The driver writes the
    /// descriptors into the first `32 × ranges.len()` bytes of `buffer`,
    /// which carries them to the device and comes back with the
    /// completion. Refused unsent: a controller without Copy or without
    /// format 0h (ONCS bit 8, OCFS bit 0;
    /// [`Feature::NvmCommand`](crate::Feature::NvmCommand)), no range,
    /// more than [`CopyLimits::max_ranges`](crate::CopyLimits), a range of
    /// no blocks or above `max_range_blocks`, more blocks in all than
    /// `max_blocks` ([`Argument::CopyRanges`]), a source or destination
    /// range past the end of the namespace ([`Error::LbaOutOfRange`]), a
    /// buffer too small for the descriptors, a namespace with the 64-bit
    /// guard, whose ranges take descriptor format 1h, which the driver does
    /// not build ([`Feature::CopyFormat1`](crate::Feature::CopyFormat1)).
    pub fn copy(
        &mut self,
        ns: &Namespace,
        destination: u64,
        ranges: &[CopyRange],
        flags: IoFlags,
        buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>>
    where
        B: core::ops::DerefMut<Target = [u8]>,
    {
        self.copy_pi(ns, destination, ranges, Protection::none(), Protection::none(), flags, buffer, context)
    }

    /// [`copy`](Self::copy) on a namespace with protection information
    /// (NVM Command Set 1.0 section 3.2.2): `read` (PRINFOR) says what the
    /// controller checks as it reads each source range, against the
    /// range's [`reference_tag`](CopyRange::reference_tag) and `read`'s
    /// application tag and mask (EILBRT, ELBAT, ELBATM of each descriptor);
    /// `write` (PRINFOW, with ILBRT, LBAT and LBATM) what it does with the
    /// destination's protection information: with PRACT it makes new
    /// tuples for the destination blocks (their reference tags from
    /// `write`'s, by default the destination LBA), else it writes the
    /// source's as they are, checked as `write` asks. A failed check is the
    /// request's error (an End-to-end ... Check Error). PRACT must be the
    /// same in both. Refused unsent, besides what `copy` refuses: anything
    /// asked of a namespace without protection information
    /// ([`Argument::ProtectionInformation`]), PRACT in one of `read` and
    /// `write` only ([`Argument::CopyPract`]: controllers answer Invalid
    /// Field; QEMU does), a reference tag in `read` (each range carries
    /// its own: [`Argument::CopyReferenceTag`]).
    #[allow(clippy::too_many_arguments)]
    pub fn copy_pi(
        &mut self,
        ns: &Namespace,
        destination: u64,
        ranges: &[CopyRange],
        read: Protection,
        write: Protection,
        flags: IoFlags,
        mut buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>>
    where
        B: core::ops::DerefMut<Target = [u8]>,
    {
        let len = ranges.len().saturating_mul(CopySourceRange::SIZE);
        let limits = ns.copy_limits();
        let total = ranges.iter().try_fold(0u64, |sum, r| sum.checked_add(u64::from(r.blocks)));
        let offered = self.ctrlr.identify_oncs().copy() && self.ctrlr.identify_ocfs() & 1 != 0;
        let checked = if !offered {
            Err(Error::Unsupported(Feature::NvmCommand))
        } else if ranges.is_empty()
            || ranges.len() > usize::from(limits.max_ranges).min(CopySourceRange::MAX)
            || ranges.iter().any(|r| r.blocks == 0 || r.blocks > u32::from(limits.max_range_blocks))
            || total.is_none_or(|t| t > u64::from(limits.max_blocks))
        {
            Err(Error::InvalidArgument(Argument::CopyRanges))
        } else if ranges
            .iter()
            .map(|r| (r.slba, u64::from(r.blocks)))
            .chain(total.map(|t| (destination, t)))
            .any(|(slba, blocks)| slba.checked_add(blocks).is_none_or(|end| end > ns.blocks()))
        {
            Err(Error::LbaOutOfRange)
        } else if buffer.len() < len {
            Err(Error::BufferTooSmall { needed: len, actual: buffer.len() })
        } else if ns.pi_format() == Some(PiFormat::Guard64) {
            Err(Error::Unsupported(Feature::CopyFormat1))
        } else {
            let settings = match (read.pract == write.pract, read.reference_tag) {
                (false, _) => Err(Error::InvalidArgument(Argument::CopyPract)),
                (true, Some(_)) => Err(Error::InvalidArgument(Argument::CopyReferenceTag)),
                (true, None) => Ok(()),
            };
            read.check(ns)
                .and_then(|()| write.check(ns))
                .and(settings)
                .and_then(|()| self.ctrlr.check_binding(ns.binding()))
        };
        if let Err(error) = checked {
            return Err(SubmitError { error, buffer, context });
        }
        for (i, r) in ranges.iter().enumerate() {
            // 1 <= blocks <= MSSRL (a u16): the 0-based NLB fits.
            let mut entry = CopySourceRange::new(r.slba, (r.blocks - 1) as u16);
            if read.any() {
                entry.eilbrt = r.reference_tag.unwrap_or(r.slba as u32);
                entry.elbat = read.app_tag;
                entry.elbatm = read.app_tag_mask;
            }
            buffer[i * CopySourceRange::SIZE..(i + 1) * CopySourceRange::SIZE]
                .copy_from_slice(&entry.to_bytes());
        }
        let mut cmd = SubmissionEntry::new(IoOpcode::COPY.0, ns.id());
        cmd.cdw10 = destination as u32;
        cmd.cdw11 = (destination >> 32) as u32;
        cmd.cdw12 = CopyCdw12::new()
            .with_nr((ranges.len() - 1) as u8)
            .with_prinfor(read.prinfo())
            .with_prinfow(write.prinfo())
            .into_bits()
            | flags.cdw12();
        if write.any() {
            // ILBRT (the 16-bit guard's 32 bits), LBATM and LBAT.
            cmd.cdw14 = write.ref_tag(destination) as u32;
            cmd.cdw15 = write.cdw15();
        }
        self.submit_data(cmd, buffer, len, Direction::ToDevice, context, Path::Direct)
    }

    /// A command on a block range that moves no data (Write Zeroes, Verify):
    /// `flags` are ORed into CDW12 with NLB.
    #[allow(clippy::too_many_arguments)]
    fn no_data(
        &mut self,
        opcode: IoOpcode,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        flags: u32,
        protection: Protection,
        context: C,
        offered: impl FnOnce(Oncs) -> bool,
    ) -> Result<Cid, SubmitError<(), C>> {
        let checked = if offered(self.ctrlr.identify_oncs()) {
            self.ctrlr
                .check_binding(ns.binding())
                .and_then(|()| ns.check_range(lba, blocks))
                .and_then(|_| protection.check(ns))
        } else {
            Err(Error::Unsupported(Feature::NvmCommand))
        };
        if let Err(error) = checked {
            return Err(SubmitError { error, buffer: (), context });
        }
        let mut cmd = SubmissionEntry::new(opcode.0, ns.id());
        cmd.cdw10 = lba as u32;
        cmd.cdw11 = (lba >> 32) as u32;
        cmd.cdw12 =
            ReadWriteCdw12::new().with_nlb((blocks - 1) as u16).into_bits() | flags | protection.cdw12();
        // The tags, where protection information is asked for.
        if let Some(format) = ns.pi_format().filter(|_| protection.any()) {
            (cmd.cdw14, cmd.cdw3) = crate::protection::ref_tag_dwords(format, protection.ref_tag(lba));
            cmd.cdw15 = protection.cdw15();
        }
        self.submit_entry(cmd, context, Path::Direct).map_err(|(error, context)| SubmitError {
            error,
            buffer: (),
            context,
        })
    }
}
