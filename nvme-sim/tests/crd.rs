//! Command Retry Delay (NVMe 1.4 sections 5.21.1.22 and 4.6.1.2): a
//! controller with Command Retry Delay Times gets ACRE enabled (again after
//! each reset), and a retryable error status whose CRD field names a delay
//! is retried only once that delay has passed, on the I/O path (the retry is
//! parked, and `poll` submits it) and on the admin path. QEMU 7.2's
//! controller has no CRDT, so this is tested against the simulator only.

mod common;

use common::{assert_clean, qpair, Qp};
use core::time::Duration;
use nvme_nostd::spec::command::{AdminOpcode, IoOpcode};
use nvme_nostd::{Controller, ControllerOptions, Error, Namespace, PollLimit};
use nvme_sim::{Fault, FaultRule, Sim, SimConfig, SimHal};

/// Retryable, Namespace Not Ready.
const BUSY: Fault = Fault::Status { sct: 0, sc: 0x82, dnr: false };
const CRDT1: Duration = Duration::from_millis(100);

fn setup(crdt: [u16; 3]) -> (Sim, Controller<SimHal>, Namespace) {
    let sim = Sim::new(SimConfig { crdt, status_crd: 1, ..SimConfig::default() });
    let options = ControllerOptions::default()
        .with_admin_timeout(Duration::from_secs(1))
        .with_io_timeout(Some(Duration::from_secs(1)));
    let ctrlr = Controller::new(sim.hal(), options).expect("attach");
    let ns = ctrlr.namespace(1).expect("namespace 1");
    (sim, ctrlr, ns)
}

/// Submits a read that fails once with a retryable status, then polls every
/// 1 ms; returns its result and how long (virtual) it took.
fn read_once_refused(sim: &Sim, qp: &mut Qp<'_>, ns: &Namespace) -> (Result<(), Error>, Duration) {
    sim.inject(FaultRule::once(Some(qp.qid()), Some(IoOpcode::READ.0), BUSY));
    let start = sim.now();
    qp.read(ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    let mut result = None;
    for _ in 0..1000 {
        qp.poll(PollLimit::All, |_, c| result = Some(c.result()));
        if result.is_some() {
            break;
        }
        sim.advance(Duration::from_millis(1));
    }
    (result.expect("completed"), sim.now() - start)
}

#[test]
fn acre_is_enabled_when_the_controller_has_retry_delays_and_again_after_a_reset() {
    let (sim, ctrlr, _ns) = setup([1, 0, 0]);
    assert!(sim.acre());
    ctrlr.reset().expect("reset");
    assert!(sim.acre(), "a reset cleared it; the driver enables it again");
    let (sim, _ctrlr, _ns) = setup([0, 0, 0]);
    assert!(!sim.acre(), "nothing to enable it for");
}

#[test]
fn an_io_retry_waits_the_command_retry_delay() {
    let (sim, ctrlr, ns) = setup([1, 0, 0]);
    let mut qp = qpair(&ctrlr);
    let (result, took) = read_once_refused(&sim, &mut qp, &ns);
    assert_eq!(result, Ok(()));
    assert_eq!(qp.stats().retries, 1);
    assert!(took >= CRDT1 && took < CRDT1 + Duration::from_millis(5), "took {took:?}");
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn without_retry_delay_times_the_retry_goes_at_once() {
    let (sim, ctrlr, ns) = setup([0, 0, 0]);
    let mut qp = qpair(&ctrlr);
    let (result, took) = read_once_refused(&sim, &mut qp, &ns);
    assert_eq!(result, Ok(()));
    assert!(took < Duration::from_millis(2), "took {took:?}");
}

#[test]
fn an_admin_retry_waits_the_command_retry_delay() {
    let (sim, ctrlr, _ns) = setup([1, 0, 0]);
    sim.inject(FaultRule::once(Some(0), Some(AdminOpcode::IDENTIFY.0), BUSY));
    let start = sim.now();
    ctrlr.namespace(1).expect("identify, retried");
    let took = sim.now() - start;
    assert!(took >= CRDT1 && took < CRDT1 + Duration::from_millis(5), "took {took:?}");
}

/// A reset while a retry waits out its delay: the request ends once, with
/// `Reset`, and is never submitted again.
#[test]
fn a_reset_ends_a_parked_retry_once() {
    let (sim, ctrlr, ns) = setup([1, 0, 0]);
    let mut qp = qpair(&ctrlr);
    sim.inject(FaultRule::once(Some(qp.qid()), Some(IoOpcode::READ.0), BUSY));
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    let mut done = Vec::new();
    for _ in 0..10 {
        qp.poll(PollLimit::All, |_, c| done.push(c.result()));
        sim.advance(Duration::from_millis(1));
    }
    assert!(done.is_empty(), "parked: {done:?}");
    ctrlr.reset().expect("reset");
    let fetched = sim.stats().commands_fetched;
    for _ in 0..300 {
        qp.poll(PollLimit::All, |_, c| done.push(c.result()));
        sim.advance(Duration::from_millis(1));
    }
    assert_eq!(done, [Err(Error::Reset)]);
    let io_fetched = sim.stats().commands_fetched - fetched - 2; // Create I/O CQ and SQ
    assert_eq!(io_fetched, 0, "the parked retry was not submitted after the reset");
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}
