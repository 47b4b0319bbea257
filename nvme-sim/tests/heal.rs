//! Recovery that heals itself: once the device behaves, a queue pair whose
//! queues could not be created again after a reset, and a controller whose
//! reset failed, work again without a reset by hand; the driver gives up only
//! on a Do Not Retry status or after a bounded number of attempts, and then
//! says so. Faults here hit the admin commands that recovery itself sends.

mod common;

use common::{assert_clean, assert_no_bad_frees, pattern, qpair, Qp};
use core::time::Duration;
use nvme_nostd::spec::command::AdminOpcode;
use nvme_nostd::{
    Broken, Cause, Controller, ControllerOptions, Error, Namespace, Origin, PollLimit, QpairOptions,
    RecoveryStep, Wait,
};
use nvme_sim::{Fault, FaultRule, Sim, SimConfig, SimHal};

const ADMIN_TIMEOUT: Duration = Duration::from_millis(50);
const BACKOFF: Duration = Duration::from_millis(1);
const ATTEMPTS: u8 = 4;

/// A status the controller may answer anything with, retryable (DNR clear):
/// Namespace Not Ready (generic, 82h).
const BUSY: Fault = Fault::Status { sct: 0, sc: 0x82, dnr: false };
/// The same with Do Not Retry set.
const REFUSED: Fault = Fault::Status { sct: 0, sc: 0x82, dnr: true };

fn setup() -> (Sim, Controller<SimHal>, Namespace) {
    let sim = Sim::new(SimConfig::default());
    let options = ControllerOptions::default()
        .with_admin_timeout(ADMIN_TIMEOUT)
        .with_io_timeout(Some(Duration::from_millis(20)))
        .with_recovery(ATTEMPTS, BACKOFF);
    let ctrlr = Controller::new(sim.hal(), options).expect("attach");
    let ns = ctrlr.namespace(1).expect("namespace 1");
    (sim, ctrlr, ns)
}

fn admin(sim: &Sim, opcode: AdminOpcode, fault: Fault, count: u64) {
    sim.inject(FaultRule { count, ..FaultRule::once(Some(0), Some(opcode.0), fault) });
}

/// The admin commands the controller has fetched so far.
fn admin_commands(sim: &Sim) -> u64 {
    sim.stats().admin_commands
}

/// Polls (nothing is in flight) with `step` of virtual time between polls,
/// until the queue pair takes requests or `polls` polls went by; returns how
/// many polls it took.
fn heal(sim: &Sim, qp: &mut Qp<'_>, polls: usize, step: Duration) -> Option<usize> {
    for n in 1..=polls {
        qp.poll(PollLimit::All, |_, c| panic!("nothing is in flight: {c:?}"));
        if qp.failure().is_none() {
            return Some(n);
        }
        sim.advance(step);
    }
    None
}

/// A write and a read-back through `qp`, at LBA 7.
fn io_works(sim: &Sim, qp: &mut Qp<'_>, ns: &Namespace) {
    let data = pattern(7, 512, 0x3c);
    qp.write(ns, 7, 1, data.clone(), 1).map_err(|e| e.error).expect("write");
    let done = common::poll_for(sim, qp, Duration::from_secs(1));
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].result(), Ok(()));
    qp.read(ns, 7, 1, vec![0; 512], 2).map_err(|e| e.error).expect("read");
    let done = common::poll_for(sim, qp, Duration::from_secs(1));
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].result(), Ok(()));
    assert_eq!(done[0].buffer.as_deref(), Some(&data[..]));
}

fn broken(e: Option<Error>) -> Broken {
    match e {
        Some(Error::QueuePairBroken(b)) => b,
        other => panic!("expected QueuePairBroken, got {other:?}"),
    }
}

/// A retryable status on Create I/O SQ while a queue pair creates its
/// queues again after a reset: the command is retried and the pair heals.
/// (Before: admin commands were never retried and the pair failed for good.)
#[test]
fn a_retryable_status_on_recreation_is_retried() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    admin(&sim, AdminOpcode::CREATE_IO_SQ, BUSY, 1);
    ctrlr.reset().expect("reset");
    assert_eq!(heal(&sim, &mut qp, 1, Duration::ZERO), Some(1), "{:?}", qp.failure());
    io_works(&sim, &mut qp, &ns);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// More refusals than the retry count: the step fails, the queue pair says
/// so (a distinct error that names the step and the cause, and that a
/// submission's arguments were fine), waits out a backoff without sending
/// anything, and then heals on a later poll.
#[test]
fn a_failed_step_is_retried_with_backoff() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    // One attempt sends Create I/O SQ 1 + retry_count (4) times.
    admin(&sim, AdminOpcode::CREATE_IO_SQ, BUSY, 8);
    ctrlr.reset().expect("reset");
    qp.poll(PollLimit::All, |_, _| {});
    let b = broken(qp.failure());
    assert_eq!(b.step, RecoveryStep::CreateIoSq);
    assert!(matches!(b.cause, Cause::Command(s) if s.sc().0 == 0x82), "{b:?}");
    assert_eq!((b.attempts, b.terminal), (1, false));
    let refused = qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap_err();
    assert_eq!(refused, Error::QueuePairBroken(b), "the submission is refused with the pair's state");
    assert_eq!(refused.origin(), Origin::Device);
    assert!(refused.to_string().contains("Create I/O Submission Queue"), "{refused}");
    assert!(refused.to_string().contains("poll() retries"), "{refused}");
    // Within the backoff, polls send nothing.
    let sent = admin_commands(&sim);
    for _ in 0..10 {
        qp.poll(PollLimit::All, |_, _| {});
    }
    assert_eq!(admin_commands(&sim), sent, "no attempt before the backoff passed");
    assert!(heal(&sim, &mut qp, 100, BACKOFF).is_some(), "{:?}", qp.failure());
    io_works(&sim, &mut qp, &ns);
}

/// A device that refuses for good: the driver gives up after
/// `recovery_attempts`, reports a terminal error, and sends nothing more;
/// a reset by hand (and a poll) heals the pair once the device behaves.
#[test]
fn recovery_gives_up_after_bounded_attempts_and_a_reset_heals() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    admin(&sim, AdminOpcode::CREATE_IO_SQ, BUSY, u64::MAX);
    ctrlr.reset().expect("reset");
    assert_eq!(heal(&sim, &mut qp, 1000, BACKOFF), None);
    let b = broken(qp.failure());
    assert_eq!((b.step, b.attempts, b.terminal), (RecoveryStep::CreateIoSq, ATTEMPTS, true), "{b:?}");
    assert!(Error::QueuePairBroken(b).to_string().contains("gave up"));
    let sent = admin_commands(&sim);
    for _ in 0..100 {
        qp.poll(PollLimit::All, |_, _| {});
        sim.advance(Duration::from_millis(10));
    }
    assert_eq!(admin_commands(&sim), sent, "nothing is tried after giving up");
    sim.clear_faults();
    ctrlr.reset().expect("reset by hand");
    assert_eq!(heal(&sim, &mut qp, 1, Duration::ZERO), Some(1));
    io_works(&sim, &mut qp, &ns);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// Do Not Retry on a recovery step: terminal at once, naming the step.
#[test]
fn a_dnr_refusal_is_terminal_at_once() {
    let (sim, ctrlr, _ns) = setup();
    let mut qp = qpair(&ctrlr);
    admin(&sim, AdminOpcode::CREATE_IO_CQ, REFUSED, 1);
    ctrlr.reset().expect("reset");
    qp.poll(PollLimit::All, |_, _| {});
    let b = broken(qp.failure());
    assert_eq!((b.step, b.attempts, b.terminal), (RecoveryStep::CreateIoCq, 1, true), "{b:?}");
    drop(qp);
    assert_no_bad_frees(&sim);
}

/// A lost completion of the Set Features that a reset sends: the reset
/// fails, admin calls say `ControllerFailed` during the backoff, and the
/// next queue pair poll after it resets again and heals, with no reset by
/// hand. (Before: every queue pair stayed `ControllerFailed`.)
#[test]
fn a_lost_set_features_in_a_reset_heals_by_itself() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    admin(&sim, AdminOpcode::SET_FEATURES, Fault::Drop, 1);
    let resets = sim.stats().resets;
    assert_eq!(ctrlr.reset(), Err(Error::Timeout(Wait::AdminCommand)));
    assert_eq!(ctrlr.namespace(1).err(), Some(Error::ControllerFailed), "within the backoff");
    let polls = heal(&sim, &mut qp, 100, BACKOFF);
    assert!(polls.is_some(), "{:?}", qp.failure());
    assert_eq!(sim.stats().resets, resets + 2, "the driver reset once more by itself");
    io_works(&sim, &mut qp, &ns);
    ctrlr.namespace(1).expect("admin commands work again");
}

/// A controller that does not come back from a reset (CSTS.RDY stays 0):
/// the driver tries the reset again, with a backoff, `recovery_attempts`
/// times (a failed reset by hand does not use up that budget), then stops
/// trying; once the device behaves, a reset by hand heals.
#[test]
fn a_reset_that_fails_is_retried_a_bounded_number_of_times() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    sim.set_rdy_never(true);
    let resets = sim.stats().resets;
    assert!(ctrlr.reset().is_err());
    assert_eq!(heal(&sim, &mut qp, 2000, BACKOFF), None);
    // The failed reset by hand, then the driver's own: `recovery_attempts`.
    assert_eq!(sim.stats().resets - resets, 1 + u64::from(ATTEMPTS), "bounded: {:?}", qp.failure());
    let b = broken(qp.failure());
    assert_eq!((b.cause, b.terminal), (Cause::ControllerFailed, true), "the pair says it gave up: {b:?}");
    sim.set_rdy_never(false);
    for _ in 0..100 {
        qp.poll(PollLimit::All, |_, _| {});
        sim.advance(Duration::from_millis(10));
    }
    assert_eq!(sim.stats().resets - resets, 1 + u64::from(ATTEMPTS), "no reset after giving up");
    ctrlr.reset().expect("reset by hand");
    assert_eq!(heal(&sim, &mut qp, 1, Duration::ZERO), Some(1));
    io_works(&sim, &mut qp, &ns);
}

/// Submission never sends an admin command: after a reset it is refused
/// with the pair's state, and `poll` creates the queues.
#[test]
fn submission_sends_no_admin_command() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    ctrlr.reset().expect("reset");
    let sent = admin_commands(&sim);
    let e = qp.write(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap_err();
    let b = broken(Some(e));
    assert_eq!((b.cause, b.attempts, b.terminal), (Cause::Reset, 0, false), "{b:?}");
    assert_eq!(admin_commands(&sim), sent, "the submission sent nothing");
    assert_eq!(heal(&sim, &mut qp, 1, Duration::ZERO), Some(1));
    assert_eq!(admin_commands(&sim), sent + 2, "poll sent Create I/O CQ and SQ");
    io_works(&sim, &mut qp, &ns);
}

/// A reset from inside a poll callback: the requests still in flight end
/// once each with `Reset`, and the pair heals on the next poll.
#[test]
fn a_reset_from_a_poll_callback() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    // The first completes at once; the others are held back 5 ms.
    sim.inject(FaultRule {
        skip: 1,
        count: 3,
        ..FaultRule::once(Some(1), None, Fault::Delay(Duration::from_millis(5)))
    });
    for i in 0..4u32 {
        qp.write(&ns, u64::from(i), 1, pattern(u64::from(i), 512, 1), i).map_err(|e| e.error).unwrap();
    }
    let mut seen = Vec::new();
    let mut reset = false;
    for _ in 0..1000 {
        qp.poll(PollLimit::All, |_, c| {
            seen.push((c.context, c.result()));
            if !reset {
                reset = true;
                ctrlr.reset().expect("reset from the callback");
            }
        });
        if seen.len() == 4 {
            break;
        }
        sim.advance(Duration::from_micros(100));
    }
    let mut contexts: Vec<u32> = seen.iter().map(|s| s.0).collect();
    contexts.sort_unstable();
    assert_eq!(contexts, [0, 1, 2, 3], "each request once: {seen:?}");
    assert_eq!(seen.iter().filter(|s| s.1 == Err(Error::Reset)).count(), 3, "{seen:?}");
    assert!(heal(&sim, &mut qp, 2, Duration::ZERO).is_some());
    io_works(&sim, &mut qp, &ns);
}

/// `create_io_qpair` whose Create I/O CQ times out: the timeout resets the
/// controller, which forgets the queue, so its pages go back to the pool.
#[test]
fn a_timed_out_queue_pair_creation_leaks_nothing() {
    let (sim, ctrlr, _ns) = setup();
    for opcode in [AdminOpcode::CREATE_IO_CQ, AdminOpcode::CREATE_IO_SQ] {
        let live = sim.stats().live_dma_pages;
        admin(&sim, opcode, Fault::Drop, 1);
        let qp = ctrlr.create_io_qpair::<Vec<u8>, u32, 16>(
            QpairOptions::default().with_entries(32).with_max_transfer_bytes(64 << 10),
        );
        assert_eq!(qp.err(), Some(Error::Timeout(Wait::AdminCommand)), "{opcode:?}");
        assert_eq!(sim.stats().live_dma_pages, live, "{opcode:?}: pages kept by a failed creation");
        assert_no_bad_frees(&sim);
    }
    drop(ctrlr);
    assert_clean(&sim);
}

/// A queue pair dropped with requests in flight while the controller can be
/// neither told to delete its queues nor disabled (CSTS.RDY stays 1 after
/// CC.EN = 0): nothing the device may still use is freed or unshared. The
/// controller keeps the rings, PRP pages and the requests' mappings (the
/// buffers themselves are leaked, so the mappings' regions stay valid), and
/// gives them back after the next reset that works.
#[test]
fn memory_of_a_pair_dropped_on_a_hung_controller_comes_back_after_a_reset() {
    let sim = Sim::new(SimConfig { timeout_500ms: 1, ..SimConfig::default() });
    let options = ControllerOptions::default()
        .with_admin_timeout(Duration::from_millis(5))
        .with_io_timeout(None)
        .with_recovery(ATTEMPTS, BACKOFF);
    let ctrlr = Controller::new(sim.hal(), options).expect("attach");
    let ns = ctrlr.namespace(1).expect("namespace 1");
    let (pages, shares) = (sim.stats().live_dma_pages, sim.stats().live_shares);
    let mut qp = qpair(&ctrlr);
    let qid = qp.qid();
    sim.inject(FaultRule { count: 2, ..FaultRule::once(Some(qid), None, Fault::Drop) });
    for i in 0..2u32 {
        qp.read(&ns, u64::from(i), 1, vec![0; 512], i).map_err(|e| e.error).unwrap();
    }
    sim.set_disable_never(true);
    admin(&sim, AdminOpcode::DELETE_IO_SQ, Fault::Drop, 1);
    let resets = sim.stats().resets;
    drop(qp);
    assert!(sim.stats().resets > resets, "the drop tried to reset");
    assert_no_bad_frees(&sim);
    assert_eq!(sim.stats().live_shares, shares + 2, "the requests' mappings are kept");
    assert!(sim.stats().live_dma_pages > pages, "the rings are kept");
    // The queue identifier is kept too: a new pair gets another one.
    sim.set_disable_never(false);
    ctrlr.reset().expect("reset by hand");
    assert_eq!(sim.stats().live_shares, shares, "given back after the reset");
    assert_eq!(sim.stats().live_dma_pages, pages);
    let mut qp = qpair(&ctrlr);
    assert_eq!(qp.qid(), qid, "the queue identifier is free again");
    io_works(&sim, &mut qp, &ns);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

static PANIC_ON_TIMEOUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn panicking_callback(event: nvme_nostd::TimeoutEvent) {
    if PANIC_ON_TIMEOUT.swap(false, std::sync::atomic::Ordering::SeqCst) {
        panic!("timeout callback panics on {event:?}");
    }
}

/// A timeout callback that panics while `poll` re-creates the queues (its
/// Create I/O SQ timed out): the unwinding leaves the pair down, not
/// believing in queues, and nothing the device may use is freed; the caller
/// catches the panic, polls on, and the pair heals.
#[test]
fn a_panic_in_the_timeout_callback_during_recreation_heals() {
    let sim = Sim::new(SimConfig::default());
    let options = ControllerOptions::default()
        .with_admin_timeout(ADMIN_TIMEOUT)
        .with_recovery(ATTEMPTS, BACKOFF)
        .with_timeout_callback(Some(&panicking_callback));
    let ctrlr = Controller::new(sim.hal(), options).expect("attach");
    let ns = ctrlr.namespace(1).expect("namespace 1");
    let mut qp = qpair(&ctrlr);
    admin(&sim, AdminOpcode::CREATE_IO_SQ, Fault::Drop, 1);
    ctrlr.reset().expect("reset");
    PANIC_ON_TIMEOUT.store(true, std::sync::atomic::Ordering::SeqCst);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        qp.poll(PollLimit::All, |_, _| {});
    }));
    assert!(unwound.is_err(), "the callback panicked through poll");
    assert!(qp.failure().is_some(), "not up on queues it may not have");
    assert_no_bad_frees(&sim);
    assert!(heal(&sim, &mut qp, 200, BACKOFF).is_some(), "{:?}", qp.failure());
    io_works(&sim, &mut qp, &ns);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// A request that needs a reset to end, on a controller the driver has
/// stopped resetting (its resets failed `recovery_attempts` times: here the
/// controller cannot even be disabled): the queue pair says so with a
/// terminal error instead of waiting in silence, and a reset by hand, once
/// the device behaves, ends the request and heals the pair.
#[test]
fn a_pair_whose_request_needs_a_reset_the_driver_gave_up_on_says_so() {
    let sim = Sim::new(SimConfig { timeout_500ms: 1, ..SimConfig::default() });
    let options = ControllerOptions::default()
        .with_admin_timeout(ADMIN_TIMEOUT)
        .with_io_timeout(Some(Duration::from_millis(20)))
        .with_recovery(ATTEMPTS, BACKOFF);
    let ctrlr = Controller::new(sim.hal(), options).expect("attach");
    let ns = ctrlr.namespace(1).expect("namespace 1");
    let mut qp = qpair(&ctrlr);
    sim.inject(FaultRule::once(Some(qp.qid()), None, Fault::Drop));
    sim.set_abort_works(false);
    qp.read(&ns, 0, 1, vec![0; 512], 7).map_err(|e| e.error).unwrap();
    sim.set_disable_never(true);
    let mut done = Vec::new();
    for _ in 0..2000 {
        qp.poll(PollLimit::All, |_, c| done.push(c.result()));
        if qp.failure().is_some() {
            break;
        }
        sim.advance(Duration::from_millis(1));
    }
    let b = broken(qp.failure());
    assert_eq!((b.step, b.cause, b.terminal), (RecoveryStep::ResetController, Cause::ControllerFailed, true));
    assert!(done.is_empty(), "the request is still the device's: {done:?}");
    assert_no_bad_frees(&sim);
    sim.set_disable_never(false);
    ctrlr.reset().expect("reset by hand");
    let done = common::poll_for(&sim, &mut qp, Duration::from_millis(10));
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].result(), Err(Error::Timeout(Wait::IoCommand)));
    assert!(heal(&sim, &mut qp, 2, Duration::ZERO).is_some());
    io_works(&sim, &mut qp, &ns);
}
