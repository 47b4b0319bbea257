//! Reservations (NVMe 1.4 sections 6.10 to 6.13 and 8.8) between two hosts:
//! the driver's (this controller, CNTLID 1, with the Host Identifier it set
//! through Set Features) and another host on another controller of the
//! subsystem (CNTLID 2, [`OTHER_HOST_ID`]), whose commands a test sends
//! through [`Sim::other_host_reservation`](crate::Sim::other_host_reservation)
//! (`OTHER_HOST_ID` is re-exported at the crate root).
//! I/O from a host the reservation excludes completes with Reservation
//! Conflict.

use super::status::{
    HOST_ID_INCONSISTENT, INVALID_FIELD, INVALID_NAMESPACE, RESERVATION_CONFLICT as CONFLICT, SUCCESS,
};
use super::State;
use nvme_spec::command::{IoOpcode, SubmissionEntry};
use nvme_spec::reservation::{
    RegisteredController, RegisteredControllerExtended, ReservationActionCdw10, ReservationRegisterCdw10,
    ReservationStatusHeader, ReservationType,
};
use zerocopy::IntoBytes;

/// The other host's 128-bit Host Identifier.
pub const OTHER_HOST_ID: [u8; 16] = *b"other-host-00002";

/// Who sends a reservation command or an I/O command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Host {
    pub(crate) cntlid: u16,
    pub(crate) id: [u8; 16],
    /// The Host Identifier is 128 bits (Set Features EXHID).
    pub(crate) extended: bool,
}

impl Host {
    pub(crate) const OTHER: Host = Host { cntlid: 2, id: OTHER_HOST_ID, extended: true };
}

/// One namespace's reservation state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reservation {
    /// Registrants and their keys, in registration order.
    registrants: Vec<(Host, u64)>,
    /// The host that acquired the reservation, and its type.
    holder: Option<(Host, ReservationType)>,
    generation: u32,
    ptpl: bool,
}

impl Reservation {
    fn key_of(&self, host: Host) -> Option<u64> {
        self.registrants.iter().find(|(h, _)| h.id == host.id).map(|r| r.1)
    }

    fn holds(&self, host: Host) -> bool {
        match self.holder {
            Some((h, rtype)) => h.id == host.id || (rtype.all_registrants() && self.key_of(host).is_some()),
            None => false,
        }
    }

    /// Whether `host` may run an I/O command that writes (`write`) or
    /// reads under the reservation (section 8.8.1, figure 470).
    fn allows(&self, host: Host, write: bool) -> bool {
        let Some((_, rtype)) = self.holder else { return true };
        if self.holds(host) {
            return true;
        }
        let registered = self.key_of(host).is_some();
        match rtype {
            ReservationType::WRITE_EXCLUSIVE => !write,
            ReservationType::EXCLUSIVE_ACCESS => false,
            ReservationType::WRITE_EXCLUSIVE_REGISTRANTS_ONLY
            | ReservationType::WRITE_EXCLUSIVE_ALL_REGISTRANTS => !write || registered,
            _ => registered,
        }
    }

    fn unregister(&mut self, host: Host) {
        self.registrants.retain(|(h, _)| h.id != host.id);
        if let Some((h, rtype)) = self.holder {
            let gone = if rtype.all_registrants() { self.registrants.is_empty() } else { h.id == host.id };
            if gone {
                self.holder = None;
            }
        }
    }
}

/// Reads a little-endian u64 at `at` of `data` (zero past its end).
fn key(data: &[u8], at: usize) -> u64 {
    data.get(at..at + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
}

impl State {
    /// The driver's host.
    pub(super) fn this_host(&self) -> Host {
        Host { cntlid: 1, id: self.host_id, extended: self.host_id_extended }
    }

    /// Whether this host's I/O command `cmd` may run under the namespace's
    /// reservation: else Reservation Conflict.
    pub(super) fn reservation_check(&self, cmd: &SubmissionEntry) -> Option<u16> {
        let write = match IoOpcode(cmd.cdw0.opc()) {
            IoOpcode::READ | IoOpcode::COMPARE | IoOpcode::VERIFY => false,
            IoOpcode::WRITE
            | IoOpcode::WRITE_ZEROES
            | IoOpcode::WRITE_UNCORRECTABLE
            | IoOpcode::DATASET_MANAGEMENT
            | IoOpcode::COPY
            | IoOpcode::FLUSH => true,
            _ => return None,
        };
        let ns = self.namespaces.iter().find(|n| n.active && n.cfg.nsid == cmd.nsid)?;
        (!ns.reservation.allows(self.this_host(), write)).then_some(CONFLICT)
    }

    /// A reservation command from `host`: its status, and for Report the
    /// data to return.
    pub(crate) fn reservation_command(
        &mut self,
        host: Host,
        cmd: &SubmissionEntry,
        data: &[u8],
    ) -> (u16, Vec<u8>) {
        let (nsid, opcode, cdw10, cdw11) = (cmd.nsid, IoOpcode(cmd.cdw0.opc()), cmd.cdw10, cmd.cdw11);
        // Report's NUMD: the dwords the host takes, 0-based.
        let report_bytes = (cdw10 as usize + 1) * 4;
        let Some(ns) = self.namespaces.iter_mut().find(|n| n.active && n.cfg.nsid == nsid) else {
            return (INVALID_NAMESPACE, Vec::new());
        };
        let r = &mut ns.reservation;
        let crkey = key(data, 0);
        let status = match opcode {
            IoOpcode::RESERVATION_REGISTER => {
                let c = ReservationRegisterCdw10::from_bits(cdw10);
                let nrkey = key(data, 8);
                let current = r.key_of(host);
                let key_ok = c.iekey() || current == Some(crkey);
                let status = match (c.rrega(), current) {
                    // Registering again with the same key is no change.
                    (0, Some(k)) if k == nrkey => SUCCESS,
                    (0, Some(_)) => CONFLICT,
                    (0, None) => {
                        r.registrants.push((host, nrkey));
                        SUCCESS
                    }
                    (1, Some(_)) if key_ok => {
                        r.unregister(host);
                        SUCCESS
                    }
                    (2, Some(_)) if key_ok => {
                        r.registrants.iter_mut().filter(|(h, _)| h.id == host.id).for_each(|e| e.1 = nrkey);
                        SUCCESS
                    }
                    (1 | 2, _) => CONFLICT,
                    _ => INVALID_FIELD,
                };
                if status == SUCCESS {
                    match c.cptpl() {
                        0 => {}
                        2 => r.ptpl = false,
                        3 => r.ptpl = true,
                        _ => return (INVALID_FIELD, Vec::new()),
                    }
                    r.generation = r.generation.wrapping_add(1);
                }
                status
            }
            IoOpcode::RESERVATION_ACQUIRE => {
                let c = ReservationActionCdw10::from_bits(cdw10);
                let rtype = ReservationType(c.rtype());
                let prkey = key(data, 8);
                if !matches!(rtype.0, 1..=6) {
                    return (INVALID_FIELD, Vec::new());
                }
                if r.key_of(host) != Some(crkey) {
                    return (CONFLICT, Vec::new());
                }
                match c.action() {
                    0 => match r.holder {
                        None => {
                            r.holder = Some((host, rtype));
                            SUCCESS
                        }
                        Some((_, held)) if r.holds(host) && held == rtype => SUCCESS,
                        Some(_) => CONFLICT,
                    },
                    // Preempt (and abort: nothing is in flight to abort
                    // here): the registrants with PRKEY go; if the holder
                    // was one of them, this host takes the reservation.
                    1 | 2 => {
                        let holder_key = r.holder.and_then(|(h, _)| r.key_of(h));
                        let all = r.holder.is_some_and(|(_, t)| t.all_registrants());
                        if all && prkey == 0 {
                            r.registrants.retain(|(h, _)| h.id == host.id);
                            r.holder = Some((host, rtype));
                        } else {
                            let takes = r.holder.is_none() || holder_key == Some(prkey);
                            r.registrants.retain(|(h, k)| h.id == host.id || *k != prkey);
                            if takes && r.holder.is_some() {
                                r.holder = Some((host, rtype));
                            }
                        }
                        r.generation = r.generation.wrapping_add(1);
                        SUCCESS
                    }
                    _ => INVALID_FIELD,
                }
            }
            IoOpcode::RESERVATION_RELEASE => {
                let c = ReservationActionCdw10::from_bits(cdw10);
                if r.key_of(host) != Some(crkey) {
                    return (CONFLICT, Vec::new());
                }
                match c.action() {
                    0 => match r.holder {
                        Some((_, held)) if r.holds(host) => {
                            if held.0 != c.rtype() {
                                INVALID_FIELD
                            } else {
                                r.holder = None;
                                SUCCESS
                            }
                        }
                        // Not the holder: nothing to release.
                        _ => SUCCESS,
                    },
                    1 => {
                        r.holder = None;
                        r.registrants.clear();
                        r.generation = r.generation.wrapping_add(1);
                        SUCCESS
                    }
                    _ => INVALID_FIELD,
                }
            }
            IoOpcode::RESERVATION_REPORT => {
                let extended = cdw11 & 1 != 0;
                if extended != host.extended {
                    return (HOST_ID_INCONSISTENT, Vec::new());
                }
                let (rtype, holder) = r.holder.map_or((0, None), |(h, t)| (t.0, Some(h)));
                let count = r.registrants.len() as u16;
                let header = ReservationStatusHeader::new(r.generation, rtype, count, u8::from(r.ptpl));
                let mut out = header.as_bytes().to_vec();
                if extended {
                    out.resize(ReservationStatusHeader::EXTENDED_HEADER_SIZE, 0);
                }
                for &(h, k) in &r.registrants {
                    let holds = holder.is_some_and(|x| x.id == h.id) || r.holds(h);
                    if extended {
                        out.extend_from_slice(
                            RegisteredControllerExtended::new(h.cntlid, holds, h.id, k).as_bytes(),
                        );
                    } else {
                        let id = u64::from_le_bytes(h.id[..8].try_into().unwrap_or_default());
                        out.extend_from_slice(RegisteredController::new(h.cntlid, holds, id, k).as_bytes());
                    }
                }
                out.truncate(report_bytes);
                return (SUCCESS, out);
            }
            _ => INVALID_FIELD,
        };
        (status, Vec::new())
    }

    /// A reservation command of this host, read from the submission queue.
    pub(super) fn reservation_io(&mut self, cmd: &SubmissionEntry) -> u16 {
        if !self.psdt_ok(cmd) {
            return INVALID_FIELD;
        }
        let opcode = IoOpcode(cmd.cdw0.opc());
        let data = match opcode {
            IoOpcode::RESERVATION_REPORT => Vec::new(),
            _ => {
                let len = if opcode == IoOpcode::RESERVATION_RELEASE { 8 } else { 16 };
                match self.read_from_host(cmd, len) {
                    Ok(d) => d,
                    Err(s) => return s,
                }
            }
        };
        let host = self.this_host();
        let (status, out) = self.reservation_command(host, cmd, &data);
        if status == SUCCESS && opcode == IoOpcode::RESERVATION_REPORT {
            return self.write_to_host(cmd, &out);
        }
        status
    }
}
