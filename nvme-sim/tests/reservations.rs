//! Reservations between two hosts (NVMe 1.4 sections 6.10 to 6.13 and 8.8),
//! against the simulator: QEMU 7.2's controller has no reservations (ONCS
//! bit 5 clear), so the conformance suite only checks that every call is
//! refused unsent there. The other host is another controller of the
//! subsystem, driven through `Sim::other_host_reservation`.

mod common;

use common::{assert_clean, poll_for, qpair, Qp};
use core::time::Duration;
use nvme_nostd::spec::command::IoOpcode;
use nvme_nostd::spec::reservation::{ReservationActionCdw10, ReservationRegisterCdw10};
use nvme_nostd::spec::status::{generic, StatusCodeType};
use nvme_nostd::{
    AcquireAction, Argument, Controller, Error, Feature, Namespace, PtplChange, ReleaseAction,
    ReservationRegister, ReservationStatus, ReservationType,
};
use nvme_sim::{IdentifyLies, Sim, SimConfig};

const HOST: [u8; 16] = *b"driver-host-0001";
const MINE: u64 = 0x1111_2222_3333_4444;
const THEIRS: u64 = 0x5555;
const WE: ReservationType = ReservationType::WRITE_EXCLUSIVE;
const EA: ReservationType = ReservationType::EXCLUSIVE_ACCESS;

fn setup(config: SimConfig) -> (Sim, Controller<nvme_sim::SimHal>, Namespace) {
    let sim = Sim::new(SimConfig { reservations: true, ..config });
    let options = common::options().with_host_identifier(Some(HOST));
    let ctrlr = Controller::new(sim.hal(), options).expect("attach");
    assert!(ctrlr.host_identifier_granted());
    let ns = ctrlr.namespace(1).expect("namespace 1");
    (sim, ctrlr, ns)
}

/// One completion: its result and its buffer.
fn done(sim: &Sim, qp: &mut Qp<'_>) -> (Result<(), Error>, Vec<u8>) {
    let d = poll_for(sim, qp, Duration::from_millis(10));
    assert_eq!(d.len(), 1);
    let d = d.into_iter().next().unwrap();
    (d.result(), d.buffer.unwrap_or_default())
}

fn conflict(result: Result<(), Error>) -> bool {
    matches!(result, Err(Error::Command(s)) if s.sct() == StatusCodeType::GENERIC && s.sc() == generic::RESERVATION_CONFLICT)
}

fn register(sim: &Sim, qp: &mut Qp<'_>, ns: &Namespace, request: ReservationRegister) -> Result<(), Error> {
    qp.reservation_register(ns, request, vec![0; 512], 0).map_err(|e| e.error)?;
    done(sim, qp).0
}

fn acquire(
    sim: &Sim,
    qp: &mut Qp<'_>,
    ns: &Namespace,
    action: AcquireAction,
    rtype: ReservationType,
    prkey: u64,
) -> Result<(), Error> {
    qp.reservation_acquire(ns, action, rtype, MINE, prkey, vec![0; 512], 0).map_err(|e| e.error)?;
    done(sim, qp).0
}

fn release(
    sim: &Sim,
    qp: &mut Qp<'_>,
    ns: &Namespace,
    action: ReleaseAction,
    rtype: ReservationType,
) -> Result<(), Error> {
    qp.reservation_release(ns, action, rtype, MINE, vec![0; 512], 0).map_err(|e| e.error)?;
    done(sim, qp).0
}

/// Reservation Report, extended, decoded: (generation, type, registrants
/// as (CNTLID, holds, host ID, key)).
type Report = (u32, Option<ReservationType>, Vec<(u16, bool, [u8; 16], u64)>);
fn report(sim: &Sim, qp: &mut Qp<'_>, ns: &Namespace) -> Report {
    qp.reservation_report(ns, true, vec![0xee; 4096], 0).map_err(|e| e.error).unwrap();
    let (result, data) = done(sim, qp);
    result.unwrap();
    let status = ReservationStatus::parse(&data, true).unwrap();
    assert!(!status.truncated());
    let registrants =
        status.registrants().map(|r| (r.cntlid, r.holds_reservation, r.host_id, r.key)).collect();
    (status.generation(), status.reservation_type(), registrants)
}

fn other(sim: &Sim, opcode: IoOpcode, cdw10: u32, keys: &[u64]) -> u16 {
    let data: Vec<u8> = keys.iter().flat_map(|k| k.to_le_bytes()).collect();
    sim.other_host_reservation(1, opcode, cdw10, 0, &data).0
}

fn other_register(sim: &Sim, key: u64) -> u16 {
    other(sim, IoOpcode::RESERVATION_REGISTER, 0, &[0, key])
}

fn other_acquire(sim: &Sim, rtype: ReservationType) -> u16 {
    let cdw10 = ReservationActionCdw10::new().with_rtype(rtype.0).into_bits();
    other(sim, IoOpcode::RESERVATION_ACQUIRE, cdw10, &[THEIRS, 0])
}

fn io(sim: &Sim, qp: &mut Qp<'_>, ns: &Namespace, write: bool) -> Result<(), Error> {
    let submitted =
        if write { qp.write(ns, 8, 1, vec![0x5a; 512], 0) } else { qp.read(ns, 8, 1, vec![0; 512], 0) };
    submitted.map_err(|e| e.error)?;
    done(sim, qp).0
}

#[test]
fn two_hosts_register_acquire_preempt_release_and_clear() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    let other_id = nvme_sim::OTHER_HOST_ID;
    assert_eq!(report(&sim, &mut qp, &ns), (0, None, vec![]));

    // This host registers; the keys went in the caller's buffer.
    qp.reservation_register(&ns, ReservationRegister::register(MINE), vec![0; 512], 0)
        .map_err(|e| e.error)
        .unwrap();
    let (result, buffer) = done(&sim, &mut qp);
    result.unwrap();
    assert_eq!(&buffer[..16], &[0u64.to_le_bytes(), MINE.to_le_bytes()].concat()[..], "CRKEY, NRKEY");
    assert_eq!(report(&sim, &mut qp, &ns), (1, None, vec![(1, false, HOST, MINE)]));
    // Registering again with the same key changes nothing; with another
    // key, or replacing with a wrong current key, is a conflict.
    assert_eq!(register(&sim, &mut qp, &ns, ReservationRegister::register(MINE)), Ok(()));
    assert!(conflict(register(&sim, &mut qp, &ns, ReservationRegister::register(MINE + 1))));
    assert!(conflict(register(&sim, &mut qp, &ns, ReservationRegister::replace(MINE + 1, 7))));

    // The other host registers and takes Write Exclusive: this host's
    // writes now fail with Reservation Conflict (to the request's owner),
    // its reads go on, and its own acquire conflicts.
    assert_eq!(other_register(&sim, THEIRS), 0);
    assert_eq!(other_acquire(&sim, WE), 0);
    assert!(conflict(io(&sim, &mut qp, &ns, true)), "a write under another host's Write Exclusive");
    assert_eq!(io(&sim, &mut qp, &ns, false), Ok(()));
    assert!(conflict(acquire(&sim, &mut qp, &ns, AcquireAction::Acquire, WE, 0)));
    let (_, rtype, registrants) = report(&sim, &mut qp, &ns);
    assert_eq!(rtype, Some(WE));
    assert_eq!(registrants, vec![(1, false, HOST, MINE), (2, true, other_id, THEIRS)]);

    // Preempting the other host's key: its registration goes, this host
    // holds the reservation, and writes work again.
    assert_eq!(acquire(&sim, &mut qp, &ns, AcquireAction::Preempt, WE, THEIRS), Ok(()));
    let (_, rtype, registrants) = report(&sim, &mut qp, &ns);
    assert_eq!((rtype, registrants), (Some(WE), vec![(1, true, HOST, MINE)]));
    assert_eq!(io(&sim, &mut qp, &ns, true), Ok(()));
    assert_eq!(sim.read_blocks(1, 8, 1), vec![0x5a; 512]);

    // Releasing the wrong type is refused by the controller; the right one
    // releases.
    match release(&sim, &mut qp, &ns, ReleaseAction::Release, EA) {
        Err(Error::Command(s)) => {
            assert_eq!((s.sct(), s.sc()), (StatusCodeType::GENERIC, generic::INVALID_FIELD))
        }
        other => panic!("release of another type: {other:?}"),
    }
    assert_eq!(release(&sim, &mut qp, &ns, ReleaseAction::Release, WE), Ok(()));
    assert_eq!(report(&sim, &mut qp, &ns).1, None);

    // Exclusive Access by the other host stops this host's reads too.
    assert_eq!(other_register(&sim, THEIRS), 0);
    assert_eq!(other_acquire(&sim, EA), 0);
    assert!(conflict(io(&sim, &mut qp, &ns, false)), "a read under another host's Exclusive Access");
    // Replace with IEKEY, then Clear with the new key: nobody is left.
    let replaced = ReservationRegister::replace(0, MINE).ignoring_existing_key();
    assert_eq!(register(&sim, &mut qp, &ns, replaced), Ok(()));
    let generation = report(&sim, &mut qp, &ns).0;
    assert_eq!(release(&sim, &mut qp, &ns, ReleaseAction::Clear, WE), Ok(()));
    assert_eq!(report(&sim, &mut qp, &ns), (generation + 1, None, vec![]));
    assert_eq!(io(&sim, &mut qp, &ns, false), Ok(()));
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// The registrants-only and all-registrants types: registering is enough
/// to write, and with all-registrants every registrant holds it.
#[test]
fn registrants_types_let_registrants_in() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    assert_eq!(other_register(&sim, THEIRS), 0);
    assert_eq!(other_acquire(&sim, ReservationType::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY), 0);
    assert!(conflict(io(&sim, &mut qp, &ns, false)), "not registered yet");
    assert_eq!(register(&sim, &mut qp, &ns, ReservationRegister::register(MINE)), Ok(()));
    assert_eq!(io(&sim, &mut qp, &ns, true), Ok(()));
    let (_, rtype, registrants) = report(&sim, &mut qp, &ns);
    assert_eq!(rtype, Some(ReservationType::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY));
    let holds: Vec<(u16, bool)> = registrants.iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(holds, [(2, true), (1, false)], "only the acquirer holds it");
    // The other host releases; it takes Write Exclusive – All Registrants,
    // which every registrant holds.
    let cdw10 = ReservationActionCdw10::new()
        .with_rtype(ReservationType::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY.0)
        .into_bits();
    assert_eq!(other(&sim, IoOpcode::RESERVATION_RELEASE, cdw10, &[THEIRS]), 0);
    assert_eq!(other_acquire(&sim, ReservationType::WRITE_EXCLUSIVE_ALL_REGISTRANTS), 0);
    let (_, _, registrants) = report(&sim, &mut qp, &ns);
    assert!(registrants.iter().all(|r| r.1), "{registrants:?}");
    assert_eq!(io(&sim, &mut qp, &ns, true), Ok(()));
    // Unregistering leaves this host outside: writes conflict, reads do not.
    assert_eq!(register(&sim, &mut qp, &ns, ReservationRegister::unregister(MINE)), Ok(()));
    assert!(conflict(io(&sim, &mut qp, &ns, true)));
    assert_eq!(io(&sim, &mut qp, &ns, false), Ok(()));
    // The other host unregisters too: the last registrant gone, the
    // reservation goes with it.
    let unregister = ReservationRegisterCdw10::new().with_rrega(1).into_bits();
    assert_eq!(other(&sim, IoOpcode::RESERVATION_REGISTER, unregister, &[THEIRS, 0]), 0);
    assert_eq!(report(&sim, &mut qp, &ns), (4, None, vec![]));
    assert_eq!(io(&sim, &mut qp, &ns, true), Ok(()));
}

/// The 24-byte report form carries 64-bit Host Identifiers: a host that set
/// a 128-bit one gets Host Identifier Inconsistent Format, as its error.
#[test]
fn report_in_the_short_form_with_a_long_host_id_is_the_devices_error() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    qp.reservation_report(&ns, false, vec![0; 512], 0).map_err(|e| e.error).unwrap();
    match done(&sim, &mut qp).0 {
        Err(Error::Command(s)) => assert_eq!(s.sc(), generic::HOST_ID_INCONSISTENT_FORMAT),
        other => panic!("{other:?}"),
    }
}

/// Bad input and missing capabilities: refused unsent, the buffer back.
#[test]
fn refusals_send_nothing() {
    let (sim, ctrlr, ns) = setup(SimConfig {
        lies: IdentifyLies { rescap: Some(0b0000_0110), ..IdentifyLies::default() },
        ..SimConfig::default()
    });
    assert_eq!(ns.reservation_capabilities(), 0b110);
    let mut qp = qpair(&ctrlr);
    let fetched = sim.stats().commands_fetched;
    let bad = Error::InvalidArgument(Argument::Reservation);
    let r = qp.reservation_acquire(&ns, AcquireAction::Acquire, ReservationType(3), MINE, 0, vec![0; 512], 0);
    assert_eq!(r.map_err(|e| e.error).unwrap_err(), bad, "a type RESCAP lacks");
    let r = qp.reservation_acquire(&ns, AcquireAction::Acquire, ReservationType(0), MINE, 0, vec![0; 512], 0);
    assert_eq!(r.map_err(|e| e.error).unwrap_err(), bad, "type 0");
    let r = qp.reservation_release(&ns, ReleaseAction::Release, ReservationType(9), MINE, vec![0; 512], 0);
    assert_eq!(r.map_err(|e| e.error).unwrap_err(), bad);
    let ptpl = ReservationRegister::register(MINE).with_ptpl(PtplChange::Set);
    let r = qp.reservation_register(&ns, ptpl, vec![0; 512], 0);
    assert_eq!(r.map_err(|e| e.error).unwrap_err(), bad, "PTPL without RESCAP bit 0");
    let r = qp.reservation_register(&ns, ReservationRegister::register(MINE), vec![0; 15], 0).unwrap_err();
    assert_eq!((r.error, r.buffer.len()), (Error::BufferTooSmall { needed: 16, actual: 15 }, 15));
    let r = qp.reservation_release(&ns, ReleaseAction::Clear, WE, MINE, vec![0; 4], 0).unwrap_err();
    assert_eq!(r.error, Error::BufferTooSmall { needed: 8, actual: 4 });
    let r = qp.reservation_report(&ns, true, vec![0; 60], 0).unwrap_err();
    assert!(matches!(r.error, Error::BufferTooSmall { needed: 64, .. }), "{:?}", r.error);
    assert_eq!(sim.stats().commands_fetched, fetched);
    drop(qp);
    drop(ctrlr);

    // A controller without reservations: every call refused.
    let sim = Sim::new(SimConfig::default());
    let ctrlr = Controller::new(sim.hal(), common::options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp = qpair(&ctrlr);
    let fetched = sim.stats().commands_fetched;
    let unsupported = Error::Unsupported(Feature::NvmCommand);
    let e = |r: Result<nvme_nostd::Cid, nvme_nostd::SubmitError<Vec<u8>, u32>>| {
        r.map_err(|e| e.error).unwrap_err()
    };
    assert_eq!(
        e(qp.reservation_register(&ns, ReservationRegister::register(1), vec![0; 512], 0)),
        unsupported
    );
    assert_eq!(
        e(qp.reservation_acquire(&ns, AcquireAction::Acquire, WE, 1, 0, vec![0; 512], 0)),
        unsupported
    );
    assert_eq!(e(qp.reservation_release(&ns, ReleaseAction::Clear, WE, 1, vec![0; 512], 0)), unsupported);
    assert_eq!(e(qp.reservation_report(&ns, true, vec![0; 512], 0)), unsupported);
    assert_eq!(sim.stats().commands_fetched, fetched);
}
