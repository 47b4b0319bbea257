//! The driver's answers to each fault: one test per fault, injecting it and
//! asserting what the driver must do (RELIABILITY.md maps faults to tests).
//!
//! Every request must reach its owner exactly once, with a result or a clear
//! error; after the fault, the controller must serve new I/O.

mod common;

use common::{assert_clean, assert_no_bad_frees, pattern, Done, Qp};
use core::time::Duration;
use nvme_nostd::spec::command::{AdminOpcode, IoOpcode};
use nvme_nostd::{
    Argument, Controller, ControllerOptions, Error, Namespace, PollLimit, QpairOptions, RecoveryStep,
    TimeoutEvent, Wait,
};
use nvme_sim::{Fault, FaultRule, Sim, SimConfig, SimHal};
use std::cell::RefCell;

const IO_TIMEOUT: Duration = Duration::from_millis(20);
const ADMIN_TIMEOUT: Duration = Duration::from_millis(50);

thread_local! {
    static TIMEOUTS: RefCell<Vec<TimeoutEvent>> = const { RefCell::new(Vec::new()) };
}

fn record_timeout(event: TimeoutEvent) {
    TIMEOUTS.with(|t| t.borrow_mut().push(event));
}

fn timeouts() -> Vec<TimeoutEvent> {
    TIMEOUTS.with(|t| t.borrow().clone())
}

fn options() -> ControllerOptions {
    ControllerOptions::default()
        .with_io_timeout(Some(IO_TIMEOUT))
        .with_admin_timeout(ADMIN_TIMEOUT)
        .with_timeout_callback(Some(&record_timeout))
}

fn setup() -> (Sim, Controller<SimHal>, Namespace) {
    TIMEOUTS.with(|t| t.borrow_mut().clear());
    let sim = Sim::new(SimConfig::default());
    let ctrlr = Controller::new(sim.hal(), options()).expect("attach");
    let ns = ctrlr.namespace(1).expect("namespace 1");
    (sim, ctrlr, ns)
}

fn qpair(ctrlr: &Controller<SimHal>) -> Qp<'_> {
    ctrlr
        .create_io_qpair(QpairOptions::default().with_entries(32).with_max_transfer_bytes(64 << 10))
        .expect("queue pair")
}

fn once(qid: u16, opcode: IoOpcode, fault: Fault) -> FaultRule {
    FaultRule::once(Some(qid), Some(opcode.0), fault)
}

/// Polls with time passing until `n` completions arrived (or 5 s of virtual
/// time went by); then checks nothing more arrives.
fn collect(sim: &Sim, qp: &mut Qp<'_>, n: usize) -> Vec<Done> {
    let mut done = Vec::new();
    let end = sim.now() + Duration::from_secs(5);
    while done.len() < n && sim.now() < end {
        qp.poll(PollLimit::All, |_, c| done.push(c));
        sim.advance(Duration::from_micros(100));
    }
    let before = done.len();
    for _ in 0..100 {
        qp.poll(PollLimit::All, |_, c| done.push(c));
        sim.advance(Duration::from_millis(1));
    }
    assert_eq!(done.len(), before, "completions after the expected ones: a request completed twice?");
    assert_eq!(qp.in_flight(), 0, "requests left in flight");
    done
}

/// New I/O works: a write and a read-back through `qp`.
fn io_works(sim: &Sim, qp: &mut Qp<'_>, ns: &Namespace) {
    // After a reset, the first poll creates the queues again.
    qp.poll(PollLimit::All, |_, c| panic!("nothing is in flight: {c:?}"));
    let data = pattern(9, 512, 0x5a);
    qp.write(ns, 9, 1, data.clone(), 90).map_err(|e| e.error).expect("write after recovery");
    let done = collect(sim, qp, 1);
    assert_eq!(done[0].result(), Ok(()));
    qp.read(ns, 9, 1, vec![0; 512], 91).map_err(|e| e.error).expect("read after recovery");
    let done = collect(sim, qp, 1);
    assert_eq!(done[0].result(), Ok(()));
    assert_eq!(done[0].buffer.as_deref(), Some(&data[..]));
}

#[test]
fn error_status_without_dnr_is_retried_and_succeeds() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    sim.inject(once(qp.qid(), IoOpcode::READ, Fault::Status { sct: 0, sc: 0x06, dnr: false }));
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    let done = collect(&sim, &mut qp, 1);
    assert_eq!(done[0].result(), Ok(()), "the retry succeeded");
    assert_eq!(qp.stats().retries, 1);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn retries_stop_at_the_retry_count() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    let fault = Fault::Status { sct: 0, sc: 0x06, dnr: false };
    sim.inject(FaultRule {
        queue: Some(qp.qid()),
        opcode: Some(IoOpcode::READ.0),
        skip: 0,
        count: 100,
        fault,
    });
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    let done = collect(&sim, &mut qp, 1);
    let status = done[0].status;
    assert_eq!((status.sct().0, status.sc().0), (0, 0x06), "the device's error reaches the owner");
    assert!(matches!(done[0].result(), Err(Error::Command(_))));
    assert_eq!(qp.stats().retries, 4, "default retry count");
}

#[test]
fn error_status_with_dnr_is_not_retried() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    sim.inject(once(qp.qid(), IoOpcode::WRITE, Fault::Status { sct: 0, sc: 0x80, dnr: true }));
    qp.write(&ns, 0, 1, vec![1; 512], 1).map_err(|e| e.error).unwrap();
    let done = collect(&sim, &mut qp, 1);
    assert!(done[0].status.dnr());
    assert!(matches!(done[0].result(), Err(Error::Command(_))));
    assert_eq!(qp.stats().retries, 0);
}

#[test]
fn dropped_completion_times_out_and_a_working_abort_ends_it() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    sim.inject(once(qp.qid(), IoOpcode::READ, Fault::Drop));
    let cid = qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    qp.read(&ns, 1, 1, vec![0; 512], 2).map_err(|e| e.error).unwrap();
    let done = collect(&sim, &mut qp, 2);
    let lost = done.iter().find(|c| c.context == 1).expect("the dropped request is handed back");
    assert_eq!(lost.result(), Err(Error::Timeout(Wait::IoCommand)));
    let other = done.iter().find(|c| c.context == 2).unwrap();
    assert_eq!(other.result(), Ok(()));
    let stats = qp.stats();
    assert_eq!((stats.timeouts, stats.aborts, stats.resets), (1, 1, 0), "aborted, no reset: {stats:?}");
    let events: Vec<_> = timeouts().iter().map(|e| (e.qid, e.cid, e.opcode)).collect();
    assert_eq!(events, vec![(qp.qid(), cid, IoOpcode::READ.0)], "the CID the submission returned");
    io_works(&sim, &mut qp, &ns);
}

#[test]
fn abort_that_does_not_abort_resets_the_controller() {
    let (sim, ctrlr, ns) = setup();
    sim.set_abort_works(false); // as QEMU's controller
    let mut qp = qpair(&ctrlr);
    sim.inject(once(qp.qid(), IoOpcode::READ, Fault::Drop));
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    // A request's timeout runs from the first poll after its submission
    // (submission reads no clock): poll once so this one's starts now.
    assert_eq!(qp.poll(PollLimit::All, |_, _| {}), 0);
    // Another request stuck behind it, issued later (not timed out yet).
    sim.advance(IO_TIMEOUT / 2);
    sim.inject(once(qp.qid(), IoOpcode::WRITE, Fault::Drop));
    qp.write(&ns, 1, 1, vec![7; 512], 2).map_err(|e| e.error).unwrap();
    let resets_before = sim.stats().resets;
    let done = collect(&sim, &mut qp, 2);
    let timed_out = done.iter().find(|c| c.context == 1).unwrap();
    assert_eq!(timed_out.result(), Err(Error::Timeout(Wait::IoCommand)));
    let reset = done.iter().find(|c| c.context == 2).unwrap();
    assert_eq!(reset.result(), Err(Error::Reset), "outstanding at the reset");
    assert_eq!(qp.stats().resets, 1);
    assert_eq!(sim.stats().resets, resets_before + 1, "CC.EN went 1 -> 0 once");
    io_works(&sim, &mut qp, &ns);
}

#[test]
fn aborted_command_that_still_does_not_complete_resets() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    // The abort is accepted, but the command never completes all the same.
    sim.set_abort_lies(true);
    sim.inject(once(qp.qid(), IoOpcode::READ, Fault::Drop));
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    let done = collect(&sim, &mut qp, 1);
    assert_eq!(done[0].result(), Err(Error::Timeout(Wait::IoCommand)));
    let stats = qp.stats();
    assert_eq!((stats.timeouts, stats.aborts, stats.resets), (1, 1, 1), "{stats:?}");
    sim.set_abort_lies(false);
    io_works(&sim, &mut qp, &ns);
}

#[test]
fn completion_delayed_within_the_timeout_is_fine() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    sim.inject(once(qp.qid(), IoOpcode::READ, Fault::Delay(IO_TIMEOUT / 2)));
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    let done = collect(&sim, &mut qp, 1);
    assert_eq!(done[0].result(), Ok(()));
    assert_eq!(qp.stats().timeouts, 0);
}

#[test]
fn completion_delayed_past_the_timeout_is_aborted() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    sim.inject(once(qp.qid(), IoOpcode::READ, Fault::Delay(IO_TIMEOUT * 10)));
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    let done = collect(&sim, &mut qp, 1);
    assert_eq!(done[0].result(), Err(Error::Timeout(Wait::IoCommand)));
    assert_eq!((qp.stats().timeouts, qp.stats().aborts), (1, 1));
    io_works(&sim, &mut qp, &ns);
}

#[test]
fn fatal_status_with_commands_outstanding_resets_and_fails_them_once() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    sim.inject(once(qp.qid(), IoOpcode::READ, Fault::Fatal));
    qp.read(&ns, 1, 1, vec![0; 512], 2).map_err(|e| e.error).unwrap();
    qp.read(&ns, 2, 1, vec![0; 512], 3).map_err(|e| e.error).unwrap();
    let done = collect(&sim, &mut qp, 3);
    assert_eq!(done.len(), 3);
    for c in &done {
        // The first may have completed before CFS; the rest end with the reset.
        assert!(c.result().is_ok() || c.result().is_err(), "each exactly once");
    }
    assert!(done.iter().filter(|c| c.result().is_err()).count() >= 2);
    assert_eq!(qp.stats().resets, 1, "CSTS.CFS leads to a reset");
    io_works(&sim, &mut qp, &ns);
}

#[test]
fn removal_fails_outstanding_requests_and_later_operations() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    sim.inject(once(qp.qid(), IoOpcode::READ, Fault::Removal));
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    qp.write(&ns, 1, 1, vec![3; 512], 2).map_err(|e| e.error).unwrap();
    let done = collect(&sim, &mut qp, 2);
    for c in &done {
        // Also the request that timed out before the removal was confirmed.
        assert_eq!(c.result(), Err(Error::DeviceRemoved));
    }
    assert!(ctrlr.is_removed());
    let e = qp.read(&ns, 0, 1, vec![0; 512], 3).map_err(|e| e.error).unwrap_err();
    assert_eq!(e, Error::DeviceRemoved, "no submission to a removed device");
    assert_eq!(ctrlr.namespace(1).err(), Some(Error::DeviceRemoved));
    drop(qp);
    drop(ctrlr);
    // Once the device is back, a new attach works.
    sim.clear_faults();
    let ctrlr = Controller::new(sim.hal(), options()).expect("attach after removal");
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp = qpair(&ctrlr);
    io_works(&sim, &mut qp, &ns);
}

#[test]
fn completions_with_the_wrong_phase_end_in_a_reset() {
    let (sim, ctrlr, ns) = setup();
    sim.set_abort_works(false);
    let mut qp = qpair(&ctrlr);
    sim.inject(once(qp.qid(), IoOpcode::READ, Fault::WrongPhase));
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    let done = collect(&sim, &mut qp, 1);
    assert_eq!(done[0].result(), Err(Error::Timeout(Wait::IoCommand)));
    assert_eq!(qp.stats().resets, 1);
    io_works(&sim, &mut qp, &ns);
}

#[test]
fn impossible_sq_head_is_rejected_and_the_request_times_out_once() {
    let (sim, ctrlr, ns) = setup();
    sim.set_abort_works(false);
    let mut qp = qpair(&ctrlr);
    sim.inject(once(qp.qid(), IoOpcode::READ, Fault::ImpossibleSqHead));
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    let done = collect(&sim, &mut qp, 1);
    assert_eq!(done[0].result(), Err(Error::Timeout(Wait::IoCommand)));
    assert!(qp.stats().bogus_completions >= 1);
    io_works(&sim, &mut qp, &ns);
}

#[test]
fn out_of_range_repeated_and_stale_cids_are_ignored() {
    for fault in [Fault::CidOutOfRange, Fault::CidRepeated, Fault::CidNotOutstanding] {
        let (sim, ctrlr, ns) = setup();
        let mut qp = qpair(&ctrlr);
        // A few completed commands first, so stale CIDs exist.
        for i in 0..3 {
            qp.read(&ns, i, 1, vec![0; 512], 10 + i as u32).map_err(|e| e.error).unwrap();
        }
        collect(&sim, &mut qp, 3);
        sim.inject(once(qp.qid(), IoOpcode::READ, fault));
        qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
        let done = collect(&sim, &mut qp, 1);
        assert_eq!(done.len(), 1, "{fault:?}");
        assert_eq!(done[0].result(), Ok(()), "{fault:?}");
        assert_eq!(qp.stats().bogus_completions, 1, "{fault:?}");
    }
}

#[test]
fn admin_command_timeout_resets_the_controller() {
    let (sim, ctrlr, _ns) = setup();
    let mut qp = qpair(&ctrlr);
    sim.inject(FaultRule::once(Some(0), Some(AdminOpcode::IDENTIFY.0), Fault::Drop));
    let resets = sim.stats().resets;
    assert_eq!(ctrlr.namespace(1).err(), Some(Error::Timeout(Wait::AdminCommand)));
    assert_eq!(sim.stats().resets, resets + 1, "an admin timeout resets");
    assert_eq!(timeouts().first().map(|t| (t.qid, t.opcode)), Some((0, AdminOpcode::IDENTIFY.0)));
    // The admin queue works again, and so does the queue pair (re-created).
    let ns = ctrlr.namespace(1).expect("identify after the reset");
    io_works(&sim, &mut qp, &ns);
}

#[test]
fn a_namespace_that_disappears_gives_errors_not_panics() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    sim.remove_namespace(1);
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    let done = collect(&sim, &mut qp, 1);
    let status = done[0].status;
    assert_eq!((status.sct().0, status.sc().0), (0, 0x0b), "Invalid Namespace or Format");
    assert!(status.dnr(), "not retried");
    assert!(ctrlr.namespace(1).is_err(), "identify of a vanished namespace is refused");
}

#[test]
fn reset_by_hand_ends_outstanding_requests_once() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    sim.set_latency(Duration::from_millis(5));
    for i in 0..8 {
        qp.read(&ns, i, 1, vec![0; 512], i as u32).map_err(|e| e.error).unwrap();
    }
    ctrlr.reset().expect("reset");
    let done = collect(&sim, &mut qp, 8);
    assert_eq!(done.len(), 8);
    assert!(done.iter().all(|c| c.result() == Err(Error::Reset)));
    assert_eq!(qp.stats().failed_by_driver, 8);
    sim.set_latency(Duration::from_micros(10));
    io_works(&sim, &mut qp, &ns);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn a_namespace_handle_of_another_controller_is_refused() {
    let (_sim_a, ctrlr_a, ns_a) = setup();
    let (_sim_b, ctrlr_b, _ns_b) = setup();
    let mut qp = qpair(&ctrlr_b);
    let e = qp.read(&ns_a, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap_err();
    assert_eq!(e, Error::InvalidArgument(Argument::ForeignNamespace));
    assert_eq!(qp.stats().submitted, 0, "nothing reached the device");
    drop(ctrlr_a);
}

/// Faults on the admin commands recovery itself sends, after a reset:
/// Create I/O SQ or CQ refused or never answered, and the Delete I/O CQ that
/// cleans up refused too. Whatever the controller may still hold is removed
/// before anything is freed: by deleting it, or by a further reset (an
/// admin timeout, or the queue pair's own when the cleanup is refused),
/// after which the queue pair recovers on its next `poll`. When the cleanup
/// works with no reset, the queue pair stays failed (it does not retry the
/// creation yet) and its memory is freed.
#[test]
fn faults_on_recreation_leave_no_queue_behind() {
    const REFUSE: Fault = Fault::Status { sct: 0, sc: 0x06, dnr: true };
    // (faults, extra resets, heals)
    type Case = (&'static [(AdminOpcode, Fault)], u64, bool);
    let cases: [Case; 4] = [
        // Do Not Retry on a recovery step is terminal; the refused Delete
        // still costs a reset, which leaves no queue behind.
        (&[(AdminOpcode::CREATE_IO_SQ, REFUSE), (AdminOpcode::DELETE_IO_CQ, REFUSE)], 1, false),
        (&[(AdminOpcode::CREATE_IO_SQ, REFUSE)], 0, false),
        (&[(AdminOpcode::CREATE_IO_CQ, Fault::Drop)], 1, true),
        (&[(AdminOpcode::CREATE_IO_SQ, Fault::Drop)], 1, true),
    ];
    for (faults, extra, heals) in cases {
        let (sim, ctrlr, ns) = setup();
        let mut qp = qpair(&ctrlr);
        for &(opcode, fault) in faults {
            sim.inject(FaultRule::once(Some(0), Some(opcode.0), fault));
        }
        qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
        let resets = sim.stats().resets;
        ctrlr.reset().expect("reset");
        let done = collect(&sim, &mut qp, 1);
        assert_eq!(
            done[0].error,
            Some(Error::Reset),
            "{faults:?}: the request in flight ends with the reset"
        );
        assert_eq!(sim.stats().resets - resets - 1, extra, "{faults:?}");
        assert_eq!(qp.failure().is_none(), heals, "{faults:?}: {:?}", qp.failure());
        if heals {
            io_works(&sim, &mut qp, &ns);
        }
        drop(qp);
        // Nothing the device still names was freed.
        assert_no_bad_frees(&sim);
        let mut qp = qpair(&ctrlr);
        io_works(&sim, &mut qp, &ns);
        drop(qp);
        drop(ctrlr);
        assert_clean(&sim);
    }
}

/// `create_io_qpair` on a controller whose reset failed (CSTS.RDY never came
/// back) is refused with `ControllerFailed` before any command is sent, so it
/// must give back every page it allocated: a caller retrying in a loop does
/// not drain the DMA pool.
#[test]
fn refused_queue_pair_creation_leaks_nothing() {
    let (sim, ctrlr, _ns) = setup();
    sim.set_rdy_never(true);
    assert!(ctrlr.reset().is_err(), "the controller does not come back");
    let live = sim.stats().live_dma_pages;
    for _ in 0..10 {
        let qp = ctrlr.create_io_qpair::<Vec<u8>, u32, 16>(
            QpairOptions::default().with_entries(32).with_max_transfer_bytes(64 << 10),
        );
        assert_eq!(qp.err(), Some(Error::ControllerFailed));
    }
    assert_eq!(sim.stats().live_dma_pages, live, "pages kept by refused creations");
    assert_no_bad_frees(&sim);
}

/// Removal wins: a queue pair that had failed for another reason (its queues
/// could not be created again after a reset) reports `DeviceRemoved` once
/// the device is gone, not its old error.
#[test]
fn removal_replaces_an_earlier_failure() {
    let (sim, ctrlr, ns) = setup();
    let mut qp = qpair(&ctrlr);
    let refuse = Fault::Status { sct: 0, sc: 0x06, dnr: true };
    sim.inject(FaultRule::once(Some(0), Some(AdminOpcode::CREATE_IO_SQ.0), refuse));
    ctrlr.reset().expect("reset");
    qp.poll(PollLimit::All, |_, c| panic!("nothing is in flight: {c:?}"));
    let e = qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap_err();
    assert!(
        matches!(e, Error::QueuePairBroken(b) if b.step == RecoveryStep::CreateIoSq && b.terminal),
        "failed by the refused re-creation: {e:?}"
    );
    sim.set_removed(true);
    assert_eq!(ctrlr.namespace(1).err(), Some(Error::DeviceRemoved), "the removal is confirmed");
    let e = qp.read(&ns, 0, 1, vec![0; 512], 2).map_err(|e| e.error).unwrap_err();
    assert_eq!(e, Error::DeviceRemoved);
    assert_eq!(qp.failure(), Some(Error::DeviceRemoved));
}
