//! Reservations (NVMe Base Specification 1.4, sections 6.10 to 6.13 and
//! 8.8): the typed actions the queue pair's `reservation_*` calls take, and
//! the decoded Reservation Status that Reservation Report returns.
//!
//! A host registers a key on a namespace, then acquires a reservation of
//! one of six types ([`ReservationType`]) that keeps other hosts from
//! writing (or also reading) it; hosts are told apart by the Host
//! Identifier ([`ControllerOptions::host_identifier`](crate::ControllerOptions::host_identifier)),
//! which the driver gives the controller at attach and after every reset.

use crate::error::{Error, Result};
pub use crate::spec::reservation::ReservationType;
use crate::spec::reservation::{RegisteredController, RegisteredControllerExtended, ReservationStatusHeader};
use zerocopy::FromBytes;

/// What a Reservation Register does (RREGA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterAction {
    /// Register `new_key` (a host already registered with the same key:
    /// no change; with another: Reservation Conflict).
    Register,
    /// Unregister (releasing a reservation this host holds).
    Unregister,
    /// Replace the registered key with `new_key`.
    Replace,
}

/// CPTPL: whether a Reservation Register changes the namespace's Persist
/// Through Power Loss state (offered where RESCAP bit 0 is set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PtplChange {
    /// Leave it.
    #[default]
    NoChange,
    /// Reservations are released and registrants cleared on power loss.
    Clear,
    /// Reservations and registrants persist through power loss.
    Set,
}

/// A Reservation Register command: build it with
/// [`register`](Self::register), [`unregister`](Self::unregister) or
/// [`replace`](Self::replace).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReservationRegister {
    /// RREGA.
    pub action: RegisterAction,
    /// CRKEY: the key this host registered (checked on unregister and
    /// replace, unless `ignore_existing_key`).
    pub current_key: u64,
    /// NRKEY: the key to register (register, replace).
    pub new_key: u64,
    /// IEKEY: do not check `current_key`.
    pub ignore_existing_key: bool,
    /// CPTPL.
    pub ptpl: PtplChange,
}

impl ReservationRegister {
    /// Registers `key`.
    pub const fn register(key: u64) -> Self {
        ReservationRegister {
            action: RegisterAction::Register,
            current_key: 0,
            new_key: key,
            ignore_existing_key: false,
            ptpl: PtplChange::NoChange,
        }
    }

    /// Unregisters the host registered with `current_key`.
    pub const fn unregister(current_key: u64) -> Self {
        ReservationRegister {
            action: RegisterAction::Unregister,
            current_key,
            new_key: 0,
            ..Self::register(0)
        }
    }

    /// Replaces `current_key` with `new_key`.
    pub const fn replace(current_key: u64, new_key: u64) -> Self {
        ReservationRegister { action: RegisterAction::Replace, current_key, new_key, ..Self::register(0) }
    }

    /// The same, without checking the current key (IEKEY).
    pub const fn ignoring_existing_key(mut self) -> Self {
        self.ignore_existing_key = true;
        self
    }

    /// The same, changing Persist Through Power Loss.
    pub const fn with_ptpl(mut self, ptpl: PtplChange) -> Self {
        self.ptpl = ptpl;
        self
    }
}

/// What a Reservation Acquire does (RACQA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AcquireAction {
    /// Acquire a reservation nobody holds (or hold it again).
    Acquire,
    /// Unregister the hosts registered with the preempt key, taking the
    /// reservation if its holder was one of them.
    Preempt,
    /// As `Preempt`, and abort the preempted hosts' commands.
    PreemptAndAbort,
}

/// What a Reservation Release does (RRELA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReleaseAction {
    /// Release the reservation this host holds (of the type given).
    Release,
    /// Release any reservation and unregister every host.
    Clear,
}

/// One registrant in a Reservation Report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Registrant {
    /// CNTLID: its controller (FFFFh: not known).
    pub cntlid: u16,
    /// RCSTS bit 0: it holds the reservation.
    pub holds_reservation: bool,
    /// HOSTID: 128 bits in the extended structure; 64 bits (in the first
    /// 8 bytes, the rest zero) in the other.
    pub host_id: [u8; 16],
    /// RKEY: its reservation key.
    pub key: u64,
}

/// The Reservation Status data structure a Reservation Report returned
/// (section 6.13, figures 390 to 393), decoded from the report's buffer.
/// Device data: counts are not trusted beyond the bytes present.
#[derive(Clone, Copy, Debug)]
pub struct ReservationStatus<'a> {
    header: ReservationStatusHeader,
    extended: bool,
    entries: &'a [u8],
}

impl<'a> ReservationStatus<'a> {
    /// Decodes `data` (what the report's buffer holds) in the extended
    /// (`extended`, 64-byte entries) or the 24-byte form, as the report was
    /// asked. [`Error::BufferTooSmall`] when `data` is shorter than the
    /// header.
    pub fn parse(data: &'a [u8], extended: bool) -> Result<Self> {
        let header_size = Self::header_size(extended);
        if data.len() < header_size {
            return Err(Error::BufferTooSmall { needed: header_size, actual: data.len() });
        }
        let header = ReservationStatusHeader::read_from_prefix(data)
            .map(|(h, _)| h)
            .map_err(|_| Error::BufferTooSmall { needed: header_size, actual: data.len() })?;
        Ok(ReservationStatus { header, extended, entries: &data[header_size..] })
    }

    /// The header's size: 64 bytes extended, else 24.
    pub const fn header_size(extended: bool) -> usize {
        if extended {
            ReservationStatusHeader::EXTENDED_HEADER_SIZE
        } else {
            ReservationStatusHeader::SIZE
        }
    }

    /// GEN: the reservation generation.
    pub fn generation(&self) -> u32 {
        self.header.gen
    }

    /// RTYPE: the reservation held, if any.
    pub fn reservation_type(&self) -> Option<ReservationType> {
        (self.header.rtype != 0).then_some(ReservationType(self.header.rtype))
    }

    /// PTPLS: reservations persist through power loss.
    pub fn persist_through_power_loss(&self) -> bool {
        self.header.ptpls & 1 != 0
    }

    /// REGCTL: the number of registrants the controller reports.
    pub fn registrant_count(&self) -> u16 {
        self.header.regctl()
    }

    /// True when the buffer held fewer registrants than REGCTL says (ask
    /// again with a larger one).
    pub fn truncated(&self) -> bool {
        self.present() < usize::from(self.registrant_count())
    }

    fn entry_size(&self) -> usize {
        if self.extended {
            RegisteredControllerExtended::SIZE
        } else {
            RegisteredController::SIZE
        }
    }

    fn present(&self) -> usize {
        self.entries.len() / self.entry_size()
    }

    /// The registrants the buffer holds, at most REGCTL.
    pub fn registrants(&self) -> impl Iterator<Item = Registrant> + 'a {
        let count = self.present().min(usize::from(self.registrant_count()));
        let (size, extended) = (self.entry_size(), self.extended);
        self.entries.chunks_exact(size).take(count).map(move |bytes| {
            if extended {
                let e = RegisteredControllerExtended::read_from_bytes(bytes).unwrap_or_default();
                Registrant {
                    cntlid: e.cntlid,
                    holds_reservation: e.rcsts & 1 != 0,
                    host_id: e.hostid,
                    key: e.rkey,
                }
            } else {
                let e = RegisteredController::read_from_bytes(bytes).unwrap_or_default();
                let mut host_id = [0; 16];
                host_id[..8].copy_from_slice(&e.hostid.to_le_bytes());
                Registrant { cntlid: e.cntlid, holds_reservation: e.rcsts & 1 != 0, host_id, key: e.rkey }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn reports_decode_in_both_forms_and_never_past_the_buffer() {
        let mut data = ReservationStatusHeader::new(7, 3, 2, 1).as_bytes().to_vec();
        data.extend_from_slice(RegisteredController::new(1, true, 0x1122, 0xaa).as_bytes());
        data.extend_from_slice(RegisteredController::new(2, false, 0x3344, 0xbb).as_bytes());
        let s = ReservationStatus::parse(&data, false).unwrap();
        assert_eq!(
            (s.generation(), s.reservation_type(), s.registrant_count()),
            (7, Some(ReservationType(3)), 2)
        );
        assert!(s.persist_through_power_loss() && !s.truncated());
        let r: Vec<Registrant> = s.registrants().collect();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].cntlid, r[0].holds_reservation, r[0].key), (1, true, 0xaa));
        assert_eq!(&r[1].host_id[..8], &0x3344u64.to_le_bytes());
        // A device that claims more than the buffer holds: only what is there.
        let lying = ReservationStatusHeader::new(7, 0, 900, 0).as_bytes().to_vec();
        let mut lying = lying;
        lying.extend_from_slice(&data[24..48]);
        let s = ReservationStatus::parse(&lying, false).unwrap();
        assert_eq!((s.registrants().count(), s.truncated(), s.reservation_type()), (1, true, None));
        // Fewer registrants than entries: only REGCTL of them.
        let mut few = ReservationStatusHeader::new(1, 0, 1, 0).as_bytes().to_vec();
        few.extend_from_slice(&data[24..]);
        assert_eq!(ReservationStatus::parse(&few, false).unwrap().registrants().count(), 1);
        // Extended: 64-byte header and entries, 128-bit host identifiers.
        let mut x = ReservationStatusHeader::new(2, 6, 1, 0).as_bytes().to_vec();
        x.resize(64, 0);
        x.extend_from_slice(RegisteredControllerExtended::new(5, true, [9; 16], 0xcc).as_bytes());
        let s = ReservationStatus::parse(&x, true).unwrap();
        let r: Vec<Registrant> = s.registrants().collect();
        assert_eq!(r, [Registrant { cntlid: 5, holds_reservation: true, host_id: [9; 16], key: 0xcc }]);
        assert_eq!(
            ReservationStatus::parse(&x[..40], true).unwrap_err(),
            Error::BufferTooSmall { needed: 64, actual: 40 }
        );
    }
}
