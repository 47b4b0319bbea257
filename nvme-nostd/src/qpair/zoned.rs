//! The Zoned Namespace Command Set (1.1) on a queue pair: Zone Management
//! Send (close, finish, open, reset, offline a zone or all of them), Zone
//! Management Receive (a zone report, decoded by
//! [`ZoneReport`](crate::ZoneReport)), and Zone Append (the controller
//! picks the blocks; the completion's [`result64`](crate::Completion::result64)
//! is the first). Reads and writes go through `read` and `write`; a zone
//! takes writes only at its write pointer, and the zoned errors (Zone
//! Invalid Write, Zone Is Full, ...) are the request's.

use super::{IoFlags, IoQueuePair, Path, SubmitError};
use crate::buffer::IoBuffer;
use crate::error::{Argument, Error, Feature, Result};
use crate::namespace::{Namespace, ZoneGeometry};
use crate::slots::Cid;
use crate::spec::command::{IoOpcode, SubmissionEntry};
use crate::spec::dwords::ReadWriteCdw12;
use crate::spec::zns::{ZoneSendAction, ZoneState};
use hal_traits::{Direction, Hal};

/// The zones of `ns`, or why it has none.
fn zones(ns: &Namespace) -> Result<ZoneGeometry> {
    ns.zones().ok_or(Error::Unsupported(Feature::ZonedNamespace))
}

/// Whether `zslba` starts a zone of `ns`.
fn zone_start(ns: &Namespace, z: &ZoneGeometry, zslba: u64) -> Result {
    if zslba >= ns.blocks() {
        Err(Error::LbaOutOfRange)
    } else if !zslba.is_multiple_of(z.zone_blocks) {
        Err(Error::InvalidArgument(Argument::ZoneStart))
    } else {
        Ok(())
    }
}

impl<H: Hal, B: IoBuffer, C, const N: usize> IoQueuePair<'_, H, B, C, N> {
    /// Zone Management Send (section 3.4.3): `action` on the zone starting
    /// at `zslba`, or with `all` on every zone the action applies to
    /// (`zslba` is then ignored). Refused unsent: a namespace without zones
    /// ([`Feature::ZonedNamespace`](crate::Feature::ZonedNamespace)), an
    /// LBA that starts no zone ([`Argument::ZoneStart`]), an action other
    /// than close, finish, open, reset or offline ([`Argument::ZoneAction`]).
    pub fn zone_management_send(
        &mut self,
        ns: &Namespace,
        zslba: u64,
        action: ZoneSendAction,
        all: bool,
        context: C,
    ) -> core::result::Result<Cid, SubmitError<(), C>> {
        let checked = zones(ns).and_then(|z| {
            if !matches!(action.0, 1..=5) {
                Err(Error::InvalidArgument(Argument::ZoneAction))
            } else if all {
                Ok(())
            } else {
                zone_start(ns, &z, zslba)
            }
        });
        let checked = checked.and_then(|()| self.ctrlr.check_binding(ns.binding()));
        if let Err(error) = checked {
            return Err(SubmitError { error, buffer: (), context });
        }
        let mut cmd = SubmissionEntry::new(IoOpcode::ZONE_MANAGEMENT_SEND.0, ns.id());
        let zslba = if all { 0 } else { zslba };
        cmd.cdw10 = zslba as u32;
        cmd.cdw11 = (zslba >> 32) as u32;
        // ZSA in CDW13 bits 7:0, Select All in bit 8.
        cmd.cdw13 = u32::from(action.0) | u32::from(all) << 8;
        self.submit_entry(cmd, context, Path::Direct).map_err(|(error, context)| SubmitError {
            error,
            buffer: (),
            context,
        })
    }

    /// Zone Management Receive, Report Zones (section 3.4.2): the zones
    /// from the one holding `slba` on, those in `state` only (`None`: all),
    /// into `buffer` (as much as fits, in whole dwords: a 64-byte header,
    /// then 64 bytes a zone); with `partial`, the header counts only the
    /// zones in the report. Refused unsent: a namespace without zones, an
    /// LBA past its end, a buffer under 64 bytes, a state no filter names.
    pub fn report_zones(
        &mut self,
        ns: &Namespace,
        slba: u64,
        state: Option<ZoneState>,
        partial: bool,
        buffer: B,
        context: C,
    ) -> core::result::Result<Cid, SubmitError<B, C>> {
        self.receive_zones(ns, slba, state, partial, false, buffer, context)
    }

    /// Zone Management Receive, Extended Report Zones (section 3.4.2, ZRA
    /// 01h): as [`report_zones`](Self::report_zones), each descriptor
    /// followed by the zone's descriptor extension
    /// ([`ZoneReport::parse_extended`](crate::ZoneReport::parse_extended)).
    /// Refused unsent, besides, on a namespace without descriptor
    /// extensions
    /// ([`Feature::ZoneDescriptorExtension`](crate::Feature::ZoneDescriptorExtension)).
    pub fn report_zones_extended(
        &mut self,
        ns: &Namespace,
        slba: u64,
        state: Option<ZoneState>,
        partial: bool,
        buffer: B,
        context: C,
    ) -> core::result::Result<Cid, SubmitError<B, C>> {
        self.receive_zones(ns, slba, state, partial, true, buffer, context)
    }

    /// Zone Management Receive of either report.
    #[allow(clippy::too_many_arguments)]
    fn receive_zones(
        &mut self,
        ns: &Namespace,
        slba: u64,
        state: Option<ZoneState>,
        partial: bool,
        extended: bool,
        mut buffer: B,
        context: C,
    ) -> core::result::Result<Cid, SubmitError<B, C>> {
        let align = H::DMA_ALIGNMENT.max(4);
        let available = buffer.as_dma_slice().len().min(self.max_transfer);
        let len = available - available % align;
        // ZRASF: the state filter (figure 43).
        let filter = match state {
            None => Some(0u32),
            Some(ZoneState::EMPTY) => Some(1),
            Some(ZoneState::IMPLICITLY_OPENED) => Some(2),
            Some(ZoneState::EXPLICITLY_OPENED) => Some(3),
            Some(ZoneState::CLOSED) => Some(4),
            Some(ZoneState::FULL) => Some(5),
            Some(ZoneState::READ_ONLY) => Some(6),
            Some(ZoneState::OFFLINE) => Some(7),
            Some(_) => None,
        };
        let checked = zones(ns).and_then(|z| {
            if extended && z.descriptor_extension_bytes == 0 {
                Err(Error::Unsupported(Feature::ZoneDescriptorExtension))
            } else if slba >= ns.blocks() {
                Err(Error::LbaOutOfRange)
            } else if len < 64 || u32::try_from(len / 4).is_err() {
                Err(Error::BufferTooSmall { needed: 64usize.max(align), actual: available })
            } else if filter.is_none() {
                Err(Error::InvalidArgument(Argument::ZoneAction))
            } else {
                self.ctrlr.check_binding(ns.binding())
            }
        });
        if let Err(error) = checked {
            return Err(SubmitError { error, buffer, context });
        }
        let mut cmd = SubmissionEntry::new(IoOpcode::ZONE_MANAGEMENT_RECEIVE.0, ns.id());
        cmd.cdw10 = slba as u32;
        cmd.cdw11 = (slba >> 32) as u32;
        // NUMD, 0-based dwords; ZRA (00h report zones, 01h extended) in
        // CDW13 bits 7:0, ZRASF in 15:8, Partial Report in bit 16.
        cmd.cdw12 = (len / 4 - 1) as u32;
        cmd.cdw13 = u32::from(extended) | filter.unwrap_or(0) << 8 | u32::from(partial) << 16;
        self.submit_data(cmd, buffer, len, Direction::FromDevice, context, Path::Direct)
    }

    /// Zone Management Send, Set Zone Descriptor Extension (section
    /// 3.4.3.1.7): the first
    /// [`descriptor_extension_bytes`](crate::ZoneGeometry::descriptor_extension_bytes)
    /// of `buffer` become the extension of the zone starting at `zslba`,
    /// which must be empty (it becomes closed, and so active). Refused
    /// unsent: a namespace without zones or without descriptor extensions
    /// ([`Feature::ZoneDescriptorExtension`](crate::Feature::ZoneDescriptorExtension)),
    /// an LBA that starts no zone, a buffer shorter than the extension.
    pub fn set_zone_descriptor_extension(
        &mut self,
        ns: &Namespace,
        zslba: u64,
        mut buffer: B,
        context: C,
    ) -> core::result::Result<Cid, SubmitError<B, C>> {
        let available: usize = (0..buffer.pieces()).map(|i| buffer.piece(i).len()).sum();
        let mut len = 0;
        let checked = zones(ns).and_then(|z| {
            len = z.descriptor_extension_bytes;
            if len == 0 {
                Err(Error::Unsupported(Feature::ZoneDescriptorExtension))
            } else if available < len {
                Err(Error::BufferTooSmall { needed: len, actual: available })
            } else {
                zone_start(ns, &z, zslba)
            }
        });
        let checked = checked.and_then(|()| self.ctrlr.check_binding(ns.binding()));
        if let Err(error) = checked {
            return Err(SubmitError { error, buffer, context });
        }
        let mut cmd = SubmissionEntry::new(IoOpcode::ZONE_MANAGEMENT_SEND.0, ns.id());
        cmd.cdw10 = zslba as u32;
        cmd.cdw11 = (zslba >> 32) as u32;
        cmd.cdw13 = u32::from(ZoneSendAction::SET_ZONE_DESCRIPTOR_EXTENSION.0);
        self.submit_data(cmd, buffer, len, Direction::ToDevice, context, Path::Direct)
    }

    /// Zone Append (section 3.4.1): writes `blocks` blocks from `buffer` at
    /// the write pointer of the zone starting at `zslba`; the completion's
    /// [`result64`](crate::Completion::result64) is the first block
    /// written. Not split: refused unsent above the zone append size limit
    /// (ZASL) or the transfer limit ([`Error::TransferTooLarge`]), and as
    /// [`zone_management_send`](Self::zone_management_send) for a namespace
    /// without zones or an LBA that starts no zone.
    pub fn zone_append(
        &mut self,
        ns: &Namespace,
        zslba: u64,
        blocks: u32,
        flags: IoFlags,
        buffer: B,
        context: C,
    ) -> core::result::Result<Cid, SubmitError<B, C>> {
        let layout = ns.layout(blocks, false);
        let limit =
            ns.zones().and_then(|z| z.append_limit_bytes).unwrap_or(usize::MAX).min(self.max_transfer);
        let checked = zones(ns).and_then(|z| {
            zone_start(ns, &z, zslba)?;
            if blocks == 0 {
                Err(Error::InvalidArgument(Argument::ZeroLength))
            } else if u64::from(blocks) > z.zone_blocks || blocks > 0x1_0000 {
                Err(Error::InvalidArgument(Argument::TooManyBlocks))
            } else if layout.data > limit {
                Err(Error::TransferTooLarge { requested: layout.data, max: limit })
            } else {
                self.ctrlr.check_binding(ns.binding())
            }
        });
        if let Err(error) = checked {
            return Err(SubmitError { error, buffer, context });
        }
        let mut cmd = SubmissionEntry::new(IoOpcode::ZONE_APPEND.0, ns.id());
        cmd.cdw10 = zslba as u32;
        cmd.cdw11 = (zslba >> 32) as u32;
        cmd.cdw12 = ReadWriteCdw12::new().with_nlb((blocks - 1) as u16).into_bits() | flags.cdw12();
        self.submit_transfer(cmd, buffer, layout, Direction::ToDevice, context, Path::Direct)
    }
}
