//! Zoned namespaces (Zoned Namespace Command Set 1.1), for the namespaces
//! `SimConfig::zoned` names: sequential-write-required zones with a write
//! pointer each; writes only at it and within the zone, Zone Append at it
//! (its LBA in DW0), the zone actions of Zone Management Send (one zone or
//! all), and the zone report of Zone Management Receive with its state
//! filter and partial flag; zone descriptor extensions (Set Zone
//! Descriptor Extension on an empty zone, the extended report). No zone
//! limits (MAR, MOR).

use super::status::{spec, INVALID_FIELD, INVALID_NAMESPACE, LBA_OUT_OF_RANGE, SUCCESS};
use super::State;
use nvme_spec::command::{IoOpcode, SubmissionEntry};
use nvme_spec::status::command_specific as cs;
use nvme_spec::zns::{ZoneSendAction, ZoneState};

const ZONE_BOUNDARY: u16 = spec(cs::ZONE_BOUNDARY_ERROR);
const ZONE_FULL: u16 = spec(cs::ZONE_IS_FULL);
const ZONE_READ_ONLY: u16 = spec(cs::ZONE_IS_READ_ONLY);
const ZONE_OFFLINE: u16 = spec(cs::ZONE_IS_OFFLINE);
const ZONE_INVALID_WRITE: u16 = spec(cs::ZONE_INVALID_WRITE);
const INVALID_TRANSITION: u16 = spec(cs::INVALID_ZONE_STATE_TRANSITION);

/// One zone: its state and write pointer (an LBA), and whether its
/// descriptor extension is valid (ZA bit 7).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Zone {
    pub(crate) state: ZoneState,
    pub(crate) wp: u64,
    pub(crate) extension_valid: bool,
}

/// A zoned namespace's zones.
#[derive(Clone, Debug, Default)]
pub(crate) struct Zones {
    pub(crate) zone_blocks: u64,
    pub(crate) zones: Vec<Zone>,
    /// Bytes of each zone's descriptor extension (ZDES × 64; 0: none).
    pub(crate) extension: usize,
    /// The extensions, zone after zone.
    pub(crate) extensions: Vec<u8>,
}

impl Zones {
    pub(crate) fn new(zone_blocks: u64, blocks: u64, extension: usize) -> Zones {
        let count = blocks / zone_blocks;
        Zones {
            zone_blocks,
            zones: (0..count)
                .map(|k| Zone { state: ZoneState::EMPTY, wp: k * zone_blocks, extension_valid: false })
                .collect(),
            extension,
            extensions: vec![0; count as usize * extension],
        }
    }

    fn index(&self, lba: u64) -> Option<usize> {
        usize::try_from(lba / self.zone_blocks).ok().filter(|&i| i < self.zones.len())
    }

    /// Whether a write of `nlb` blocks at `slba` may go, and if so moves the
    /// write pointer past it.
    pub(crate) fn write(&mut self, slba: u64, nlb: u64) -> u16 {
        let Some(i) = self.index(slba) else { return LBA_OUT_OF_RANGE };
        let end = (i as u64 + 1) * self.zone_blocks;
        let zone = &mut self.zones[i];
        match zone.state {
            ZoneState::FULL => return ZONE_FULL,
            ZoneState::READ_ONLY => return ZONE_READ_ONLY,
            ZoneState::OFFLINE => return ZONE_OFFLINE,
            _ => {}
        }
        if slba != zone.wp {
            return ZONE_INVALID_WRITE;
        }
        if slba + nlb > end {
            return ZONE_BOUNDARY;
        }
        zone.wp += nlb;
        zone.state = if zone.wp == end {
            ZoneState::FULL
        } else if zone.state == ZoneState::EXPLICITLY_OPENED {
            zone.state
        } else {
            ZoneState::IMPLICITLY_OPENED
        };
        SUCCESS
    }

    /// The write pointer of the zone starting at `zslba`, for an append.
    pub(crate) fn append_at(&self, zslba: u64) -> Result<u64, u16> {
        let i = self.index(zslba).ok_or(LBA_OUT_OF_RANGE)?;
        if !zslba.is_multiple_of(self.zone_blocks) {
            return Err(INVALID_FIELD);
        }
        Ok(self.zones[i].wp)
    }

    fn act(&mut self, i: usize, action: ZoneSendAction, all: bool) -> u16 {
        let start = i as u64 * self.zone_blocks;
        let zone = &mut self.zones[i];
        let s = zone.state;
        let opened = matches!(s, ZoneState::IMPLICITLY_OPENED | ZoneState::EXPLICITLY_OPENED);
        let (ok, next, wp) = match action {
            ZoneSendAction::RESET => {
                (s != ZoneState::OFFLINE && s != ZoneState::READ_ONLY, ZoneState::EMPTY, start)
            }
            ZoneSendAction::FINISH => (
                s != ZoneState::OFFLINE && s != ZoneState::READ_ONLY,
                ZoneState::FULL,
                start + self.zone_blocks,
            ),
            ZoneSendAction::OPEN => (
                matches!(s, ZoneState::EMPTY | ZoneState::CLOSED) || opened,
                ZoneState::EXPLICITLY_OPENED,
                zone.wp,
            ),
            ZoneSendAction::CLOSE => (opened || s == ZoneState::CLOSED, ZoneState::CLOSED, zone.wp),
            ZoneSendAction::OFFLINE => {
                (s == ZoneState::READ_ONLY || s == ZoneState::OFFLINE, ZoneState::OFFLINE, zone.wp)
            }
            _ => return INVALID_FIELD,
        };
        if !ok {
            // With Select All, zones the action does not apply to are
            // skipped.
            return if all { SUCCESS } else { INVALID_TRANSITION };
        }
        // Closing an opened zone that holds nothing leaves it empty (unless
        // its extension is valid: that keeps it active).
        let keep = zone.extension_valid && !matches!(action, ZoneSendAction::RESET | ZoneSendAction::OFFLINE);
        let next =
            if next == ZoneState::CLOSED && zone.wp == start && !keep { ZoneState::EMPTY } else { next };
        *zone = Zone { state: next, wp, extension_valid: keep };
        if !keep {
            // An extension no longer valid reads as zeros.
            self.extensions[i * self.extension..(i + 1) * self.extension].fill(0);
        }
        SUCCESS
    }
}

impl State {
    /// Zone Management Send.
    pub(super) fn zone_send(&mut self, cmd: &SubmissionEntry) -> u16 {
        let zslba = cmd.cdw10 as u64 | (cmd.cdw11 as u64) << 32;
        let action = ZoneSendAction(cmd.cdw13 as u8);
        let all = cmd.cdw13 >> 8 & 1 != 0;
        if action == ZoneSendAction::SET_ZONE_DESCRIPTOR_EXTENSION {
            return self.set_extension(cmd, zslba, all);
        }
        let Some(ns) = self.namespaces.iter_mut().find(|n| n.active && n.cfg.nsid == cmd.nsid) else {
            return INVALID_NAMESPACE;
        };
        let Some(zones) = ns.zones.as_mut() else { return INVALID_FIELD };
        if all {
            let mut status = SUCCESS;
            for i in 0..zones.zones.len() {
                status = status.max(zones.act(i, action, true));
            }
            return status;
        }
        match zones.index(zslba) {
            Some(i) if zslba.is_multiple_of(zones.zone_blocks) => zones.act(i, action, false),
            Some(_) => INVALID_FIELD,
            None => LBA_OUT_OF_RANGE,
        }
    }

    /// Zone Management Receive: the zone report.
    pub(super) fn zone_receive(&mut self, cmd: &SubmissionEntry) -> u16 {
        let Some(ns) = self.namespaces.iter().find(|n| n.active && n.cfg.nsid == cmd.nsid) else {
            return INVALID_NAMESPACE;
        };
        let Some(zones) = ns.zones.as_ref() else { return INVALID_FIELD };
        let slba = cmd.cdw10 as u64 | (cmd.cdw11 as u64) << 32;
        let len = (cmd.cdw12 as usize + 1) * 4;
        // ZRA: 00h report zones, 01h extended (with extensions only).
        let extended = match cmd.cdw13 & 0xff {
            0 => false,
            1 if zones.extension > 0 => true,
            _ => return INVALID_FIELD,
        };
        let filter = (cmd.cdw13 >> 8) as u8;
        let partial = cmd.cdw13 >> 16 & 1 != 0;
        let ext = if extended { zones.extension } else { 0 };
        let Some(first) = zones.index(slba) else { return LBA_OUT_OF_RANGE };
        let wanted = |z: &Zone| match filter {
            0 => true,
            1 => z.state == ZoneState::EMPTY,
            2 => z.state == ZoneState::IMPLICITLY_OPENED,
            3 => z.state == ZoneState::EXPLICITLY_OPENED,
            4 => z.state == ZoneState::CLOSED,
            5 => z.state == ZoneState::FULL,
            6 => z.state == ZoneState::READ_ONLY,
            7 => z.state == ZoneState::OFFLINE,
            _ => false,
        };
        if filter > 7 {
            return INVALID_FIELD;
        }
        let matching: Vec<(usize, Zone)> = zones
            .zones
            .iter()
            .enumerate()
            .skip(first)
            .filter(|(_, z)| wanted(z))
            .map(|(i, z)| (i, *z))
            .collect();
        let fits = len.saturating_sub(64) / (64 + ext);
        let count = if partial { matching.len().min(fits) } else { matching.len() };
        let mut out = vec![0u8; 64];
        out[..8].copy_from_slice(&(count as u64).to_le_bytes());
        for (i, z) in matching.iter().take(fits) {
            let mut d = [0u8; 64];
            d[0] = 0x2; // sequential write required
            d[1] = z.state.0 << 4;
            d[8..16].copy_from_slice(&zones.zone_blocks.to_le_bytes());
            d[16..24].copy_from_slice(&(*i as u64 * zones.zone_blocks).to_le_bytes());
            d[24..32].copy_from_slice(&z.wp.to_le_bytes());
            d[2] = if z.extension_valid { 0x80 } else { 0 };
            out.extend_from_slice(&d);
            out.extend_from_slice(&zones.extensions[i * ext..(i + 1) * ext]);
        }
        out.truncate(len);
        self.write_to_host(cmd, &out)
    }

    /// Set Zone Descriptor Extension: on an empty zone (not with Select
    /// All), the command's data becomes its extension and it becomes
    /// closed.
    fn set_extension(&mut self, cmd: &SubmissionEntry, zslba: u64, all: bool) -> u16 {
        let Some(at) = self.namespaces.iter().position(|n| n.active && n.cfg.nsid == cmd.nsid) else {
            return INVALID_NAMESPACE;
        };
        let Some(zones) = self.namespaces[at].zones.as_ref() else { return INVALID_FIELD };
        let ext = zones.extension;
        let i = match zones.index(zslba) {
            _ if all || ext == 0 => return INVALID_FIELD,
            Some(i) if zslba.is_multiple_of(zones.zone_blocks) => i,
            Some(_) => return INVALID_FIELD,
            None => return LBA_OUT_OF_RANGE,
        };
        if zones.zones[i].state != ZoneState::EMPTY {
            return INVALID_TRANSITION;
        }
        let data = match self.read_from_host(cmd, ext) {
            Ok(d) => d,
            Err(status) => return status,
        };
        let Some(zones) = self.namespaces[at].zones.as_mut() else { return INVALID_FIELD };
        zones.extensions[i * ext..(i + 1) * ext].copy_from_slice(&data);
        zones.zones[i].state = ZoneState::CLOSED;
        zones.zones[i].extension_valid = true;
        SUCCESS
    }

    /// Zone Append: a write at the zone's write pointer; its LBA in DW0.
    pub(super) fn zone_append(&mut self, cmd: &SubmissionEntry) -> (u16, u32) {
        let Some(index) = self.namespaces.iter().position(|n| n.active && n.cfg.nsid == cmd.nsid) else {
            return (INVALID_NAMESPACE, 0);
        };
        let zslba = cmd.cdw10 as u64 | (cmd.cdw11 as u64) << 32;
        let wp = match self.namespaces[index].zones.as_ref().map(|z| z.append_at(zslba)) {
            Some(Ok(wp)) => wp,
            Some(Err(s)) => return (s, 0),
            None => return (INVALID_FIELD, 0),
        };
        // The write itself, at the write pointer.
        let mut write = *cmd;
        write.cdw0.set_opc(IoOpcode::WRITE.0);
        write.cdw10 = wp as u32;
        write.cdw11 = (wp >> 32) as u32;
        let status = self.read_write(&write);
        (status, if status == SUCCESS { wp as u32 } else { 0 })
    }
}
