//! Aborts of timed-out commands go out without waiting: `poll` sends them
//! and takes their results in on later calls, never holding the admin queue
//! across the wait; no more than the abort command limit (ACL + 1) are out at
//! once; and "not aborted" for a command that completed meanwhile costs no
//! reset.

mod common;

use common::{assert_clean, qpair, Qp};
use core::time::Duration;
use nvme_nostd::spec::command::{AdminOpcode, IoOpcode};
use nvme_nostd::{Controller, ControllerOptions, Error, Namespace, PollLimit, Wait};
use nvme_sim::{Fault, FaultRule, Sim, SimConfig, SimHal};

const IO_TIMEOUT: Duration = Duration::from_millis(20);

fn setup() -> (Sim, Controller<SimHal>, Namespace) {
    let sim = Sim::new(SimConfig::default());
    let options = ControllerOptions::default()
        .with_admin_timeout(Duration::from_millis(100))
        .with_io_timeout(Some(IO_TIMEOUT));
    let ctrlr = Controller::new(sim.hal(), options).expect("attach");
    let ns = ctrlr.namespace(1).expect("namespace 1");
    (sim, ctrlr, ns)
}

/// A request's context and result.
type Ended = (u32, Result<(), Error>);

/// Slow Aborts: each takes `d` to complete.
fn slow_aborts(sim: &Sim, d: Duration) {
    sim.inject(FaultRule {
        count: u64::MAX,
        ..FaultRule::once(Some(0), Some(AdminOpcode::ABORT.0), Fault::Delay(d))
    });
}

/// Polls every 100 µs of virtual time until `n` completions arrived (at most
/// 2 s); returns them and the longest stretch of virtual time one `poll`
/// call took.
fn collect(sim: &Sim, qp: &mut Qp<'_>, n: usize) -> (Vec<Ended>, Duration) {
    let mut done = Vec::new();
    let mut longest = Duration::ZERO;
    let end = sim.now() + Duration::from_secs(2);
    while done.len() < n && sim.now() < end {
        let before = sim.now();
        qp.poll(PollLimit::All, |_, c| done.push((c.context, c.result())));
        longest = longest.max(sim.now() - before);
        sim.advance(Duration::from_micros(100));
    }
    (done, longest)
}

/// A slow Abort does not hold the caller: no `poll` call waits for it (with
/// Aborts sent synchronously, the poll that sent one took the Abort's whole
/// 10 ms), and the aborted command still ends once, as `Timeout`.
#[test]
fn poll_never_waits_for_an_abort() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    slow_aborts(&sim, Duration::from_millis(10));
    sim.inject(FaultRule::once(Some(qp.qid()), Some(IoOpcode::READ.0), Fault::Drop));
    let resets = sim.stats().resets;
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    let (done, longest) = collect(&sim, &mut qp, 1);
    assert_eq!(done, [(1, Err(Error::Timeout(Wait::IoCommand)))]);
    assert!(longest < Duration::from_millis(2), "a poll took {longest:?} of virtual time");
    assert_eq!(qp.stats().aborts, 1);
    assert_eq!(sim.stats().resets, resets, "the Abort worked: no reset");
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// Six commands time out together; the controller allows four Aborts at
/// once (ACL = 3). The driver never has more out, and aborts all six.
#[test]
fn no_more_aborts_than_the_abort_command_limit() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    slow_aborts(&sim, Duration::from_millis(5));
    sim.inject(FaultRule {
        count: 6,
        ..FaultRule::once(Some(qp.qid()), Some(IoOpcode::READ.0), Fault::Drop)
    });
    let resets = sim.stats().resets;
    for i in 0..6u32 {
        qp.read(&ns, u64::from(i), 1, vec![0; 512], i).map_err(|e| e.error).unwrap();
    }
    let (done, _) = collect(&sim, &mut qp, 6);
    assert_eq!(done.len(), 6, "{done:?}");
    assert!(done.iter().all(|d| d.1 == Err(Error::Timeout(Wait::IoCommand))), "{done:?}");
    assert_eq!(sim.stats().abort_limit_exceeded, 0, "more Aborts out than ACL + 1");
    assert_eq!(qp.stats().aborts, 6);
    assert_eq!(sim.stats().resets, resets);
}

/// The controller answers "not aborted" because the command completed while
/// the Abort was in flight: the driver looks at the completion queue again,
/// finds it, and does not reset (before, "not aborted" reset at once).
#[test]
fn not_aborted_because_it_completed_meanwhile_costs_no_reset() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    sim.set_abort_works(false);
    // The Abort takes 10 ms; the read completes 5 ms after its timeout.
    slow_aborts(&sim, Duration::from_millis(10));
    sim.inject(FaultRule::once(Some(qp.qid()), Some(IoOpcode::READ.0), Fault::Delay(IO_TIMEOUT * 3 / 2)));
    let resets = sim.stats().resets;
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    let (done, _) = collect(&sim, &mut qp, 1);
    assert_eq!(done, [(1, Ok(()))], "it completed, late but well");
    // Let the Abort's answer come in.
    for _ in 0..200 {
        qp.poll(PollLimit::All, |_, c| panic!("nothing more: {c:?}"));
        sim.advance(Duration::from_micros(100));
    }
    assert_eq!(sim.stats().resets, resets, "no reset for a command that completed");
    assert_eq!(qp.stats().timeouts, 1);
}

/// "Not aborted" for a command that is still not done: reset, and the
/// request ends once with `Timeout`.
#[test]
fn not_aborted_and_still_outstanding_resets() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    sim.set_abort_works(false);
    sim.inject(FaultRule::once(Some(qp.qid()), Some(IoOpcode::READ.0), Fault::Drop));
    let resets = sim.stats().resets;
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    let (done, _) = collect(&sim, &mut qp, 1);
    assert_eq!(done, [(1, Err(Error::Timeout(Wait::IoCommand)))]);
    assert_eq!(sim.stats().resets, resets + 1);
}
