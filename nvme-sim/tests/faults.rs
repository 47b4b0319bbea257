//! One test per fault kind, through the driver's public API: what the device
//! does, and what the driver sees of it today.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod common;

use common::*;
use core::time::Duration;
use nvme_nostd::spec::command::{AdminOpcode, CompletionEntry, IoOpcode, SubmissionEntry};
use nvme_nostd::spec::status::{command_specific, generic, StatusCodeType};
use nvme_nostd::{Controller, Error, PollLimit};
use nvme_sim::{Fault, FaultKind, FaultRule, Sim, SimConfig, SimHal};

const MS: Duration = Duration::from_millis(1);

/// Raw admin commands for the simulator.
fn admin(ctrlr: &Controller<SimHal>, cmd: SubmissionEntry) -> Result<CompletionEntry, Error> {
    // SAFETY: these commands move no data through the driver, and the
    // simulated device checks every address a command carries.
    unsafe { ctrlr.admin_command(cmd) }
}

fn rule(qid: u16, opcode: IoOpcode, fault: Fault) -> FaultRule {
    FaultRule::once(Some(qid), Some(opcode.0), fault)
}

#[test]
fn status_fault_completes_with_that_status_and_skips_the_command() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    let bs = ns.block_size() as usize;
    // Every write fails, so a driver that retries retryable errors sees the
    // same status each time.
    sim.inject(FaultRule {
        count: u64::MAX,
        ..rule(qp.qid(), IoOpcode::WRITE, Fault::Status { sct: 2, sc: 0x80, dnr: false })
    });
    qp.write(&ns, 5, 1, pattern(5, bs, 1), 1).map_err(|e| e.error).unwrap();
    let done = poll_for(&sim, &mut qp, Duration::from_millis(100));
    assert_eq!(done.len(), 1);
    let s = done[0].status;
    assert_eq!((s.sct().0, s.sc().0, s.dnr()), (2, 0x80, false), "{s}");
    assert!(matches!(done[0].result(), Err(Error::Command(_))));
    assert_eq!(sim.read_blocks(1, 5, 1), vec![0; bs], "a failed write is not executed");
    let attempts = sim.stats().faults_of(FaultKind::Status);
    assert!(attempts >= 1);
    println!("the driver submitted the failing write {attempts} time(s)");
    sim.clear_faults();

    // With DNR, on a read.
    sim.inject(rule(qp.qid(), IoOpcode::READ, Fault::Status { sct: 0, sc: 0x06, dnr: true }));
    qp.read(&ns, 5, 1, vec![0; bs], 2).map_err(|e| e.error).unwrap();
    let done = poll_for(&sim, &mut qp, MS);
    let s = done[0].status;
    assert_eq!((s.sct(), s.sc(), s.dnr()), (StatusCodeType::GENERIC, generic::INTERNAL_ERROR, true));
    assert!(!s.is_retryable());

    // The next write goes through.
    qp.write(&ns, 5, 1, pattern(5, bs, 1), 3).map_err(|e| e.error).unwrap();
    assert!(poll_for(&sim, &mut qp, MS)[0].status.is_success());
    assert_eq!(sim.read_blocks(1, 5, 1), pattern(5, bs, 1));
    let st = sim.stats();
    assert_eq!((st.faults_of(FaultKind::Status), st.faults_of(FaultKind::StatusDnr)), (attempts, 1));
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn drop_fault_never_completes_until_the_queue_is_deleted() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    sim.inject(rule(qp.qid(), IoOpcode::READ, Fault::Drop));
    qp.read(&ns, 0, 1, vec![0; 512], 7).map_err(|e| e.error).unwrap();
    assert!(poll_for(&sim, &mut qp, Duration::from_millis(100)).is_empty());
    // A long wait, shorter than the driver's default I/O timeout (30 s).
    sim.advance(Duration::from_secs(10));
    assert_eq!(qp.poll(PollLimit::All, |_, _| panic!("a dropped command completed")), 0);
    assert_eq!(qp.in_flight(), 1);
    assert_eq!(sim.outstanding(), 1);
    assert_eq!(sim.stats().faults_of(FaultKind::Drop), 1);
    // Deleting the SQ (or resetting the controller) ends it inside the
    // device, so the driver may release the buffer.
    drop(qp);
    assert_eq!(sim.outstanding(), 0);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn delay_fault_completes_later() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    sim.write_blocks(1, 9, &pattern(9, 512, 4));
    sim.inject(rule(qp.qid(), IoOpcode::READ, Fault::Delay(Duration::from_millis(5))));
    qp.read(&ns, 9, 1, vec![0; 512], 9).map_err(|e| e.error).unwrap();
    assert!(poll_for(&sim, &mut qp, Duration::from_millis(4)).is_empty());
    let done = poll_for(&sim, &mut qp, Duration::from_millis(2));
    assert_eq!(done.len(), 1);
    assert!(done[0].status.is_success());
    assert_eq!(done[0].buffer.as_deref(), Some(&pattern(9, 512, 4)[..]));
    assert_eq!(qp.stats().bogus_completions, 0);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn fatal_fault_sets_cfs_and_a_reset_recovers() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    sim.inject(rule(qp.qid(), IoOpcode::READ, Fault::Fatal));
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    assert!(ctrlr.csts().expect("registers readable").cfs());
    assert!(poll_for(&sim, &mut qp, Duration::from_millis(10)).is_empty());
    assert_eq!(sim.stats().faults_of(FaultKind::Fatal), 1);
    // Dropping the queue pair: Delete SQ fails (fatal), the driver disables the
    // controller instead (which clears CFS) and then releases everything.
    drop(qp);
    drop(ctrlr);
    assert_no_bad_frees(&sim);
    // A new attach resets the controller and works.
    let ctrlr = attach(&sim);
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp = qpair(&ctrlr);
    qp.read(&ns, 0, 1, vec![0; 512], 2).map_err(|e| e.error).unwrap();
    assert!(poll_for(&sim, &mut qp, MS)[0].status.is_success());
}

#[test]
fn set_fatal_stops_processing() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    sim.set_fatal();
    assert!(ctrlr.csts().unwrap().cfs());
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    assert!(poll_for(&sim, &mut qp, Duration::from_millis(10)).is_empty());
    assert!(sim.stats().ignored_doorbells >= 1);
    assert!(matches!(ctrlr.identify_namespace(1), Err(Error::ControllerFatal)));
}

#[test]
fn removal_fault_makes_registers_read_all_ones() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    sim.inject(rule(qp.qid(), IoOpcode::READ, Fault::Removal));
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    assert_eq!(ctrlr.csts(), Err(Error::DeviceRemoved));
    assert!(poll_for(&sim, &mut qp, Duration::from_millis(10)).is_empty());
    assert_eq!(sim.stats().faults_of(FaultKind::Removal), 1);
    // The driver cannot quiesce a removed device; whatever it does with the
    // memory, it must not free or unshare anything twice.
    drop(qp);
    drop(ctrlr);
    assert_no_bad_frees(&sim);
    println!("after removal: {:?}", sim.stats());
    // Back from the dead: a new attach works.
    sim.clear_faults();
    let ctrlr = attach(&sim);
    assert!(ctrlr.namespace(1).is_ok());
}

#[test]
fn cid_out_of_range_is_rejected_and_the_real_completion_arrives_once() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    sim.inject(rule(qp.qid(), IoOpcode::READ, Fault::CidOutOfRange));
    let cid = qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    let done = poll_for(&sim, &mut qp, MS);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].cid, cid);
    assert!(done[0].status.is_success());
    assert_eq!(qp.stats().bogus_completions, 1);
    assert_eq!(qp.stats().completed, 1);
    assert!(poll_for(&sim, &mut qp, MS).is_empty());
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn cid_not_outstanding_is_rejected_and_the_real_completion_arrives_once() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    let first = qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    assert_eq!(poll_for(&sim, &mut qp, MS).len(), 1);
    sim.inject(rule(qp.qid(), IoOpcode::READ, Fault::CidNotOutstanding));
    let second = qp.read(&ns, 1, 1, vec![0; 512], 2).map_err(|e| e.error).unwrap();
    assert_ne!(first, second);
    let done = poll_for(&sim, &mut qp, MS);
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].cid, done[0].context), (second, 2));
    assert_eq!(qp.stats().bogus_completions, 1);
    assert_eq!(qp.stats().completed, 2);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn cid_repeated_is_rejected_the_second_time() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    sim.inject(rule(qp.qid(), IoOpcode::WRITE, Fault::CidRepeated));
    let cid = qp.write(&ns, 3, 1, pattern(3, 512, 9), 1).map_err(|e| e.error).unwrap();
    let done = poll_for(&sim, &mut qp, MS);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].cid, cid);
    assert_eq!(qp.stats().bogus_completions, 1);
    assert_eq!(sim.read_blocks(1, 3, 1), pattern(3, 512, 9), "executed once");
    // The queue keeps working.
    qp.read(&ns, 3, 1, vec![0; 512], 2).map_err(|e| e.error).unwrap();
    assert_eq!(poll_for(&sim, &mut qp, MS)[0].buffer.as_deref(), Some(&pattern(3, 512, 9)[..]));
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn wrong_phase_is_invisible_and_stalls_the_queue() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    sim.inject(rule(qp.qid(), IoOpcode::READ, Fault::WrongPhase));
    let posted = sim.stats().completions_posted;
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    assert!(poll_for(&sim, &mut qp, Duration::from_millis(10)).is_empty());
    assert_eq!(sim.stats().completions_posted, posted + 1, "the device did post it");
    // A later command completes behind the stale slot: invisible too.
    qp.read(&ns, 1, 1, vec![0; 512], 2).map_err(|e| e.error).unwrap();
    assert!(poll_for(&sim, &mut qp, Duration::from_millis(10)).is_empty());
    assert_eq!(qp.in_flight(), 2);
    assert_eq!(qp.stats().bogus_completions, 0);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn impossible_sq_head_gets_the_completion_rejected() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    sim.inject(rule(qp.qid(), IoOpcode::READ, Fault::ImpossibleSqHead));
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    // The driver rejects the entry, but the device may be done with the
    // request: it ends at once as timed out (its fate unknown, after an
    // Abort that finds nothing), not after the 30 s I/O timeout.
    let done = poll_for(&sim, &mut qp, Duration::from_millis(10));
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].result(), Err(Error::Timeout(nvme_nostd::Wait::IoCommand)));
    assert_eq!(qp.stats().bogus_completions, 1);
    assert_eq!(qp.in_flight(), 0);
    assert_eq!(sim.outstanding(), 0, "the device considers it done");
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn admin_faults_reach_the_caller() {
    let (sim, ctrlr, _) = setup(SimConfig::default());
    let identify = Some(AdminOpcode::IDENTIFY.0);
    sim.inject(FaultRule::once(Some(0), identify, Fault::Status { sct: 0, sc: 0x06, dnr: true }));
    match ctrlr.identify_namespace(1) {
        Err(Error::Command(s)) => assert_eq!(s.sc(), generic::INTERNAL_ERROR),
        other => panic!("{other:?}"),
    }
    // A delay beyond the admin timeout: the driver gives up on the command.
    sim.inject(FaultRule::once(Some(0), identify, Fault::Delay(ADMIN_TIMEOUT * 2)));
    let r = ctrlr.identify_namespace(1).map(|_| ());
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    let next = ctrlr.identify_namespace(1).map(|_| ());
    println!("the admin command after a timeout: {next:?}");
    drop(ctrlr);
    assert_no_bad_frees(&sim);
    assert_eq!(sim.outstanding(), 0, "the late command died with the reset");
}

#[test]
fn skip_and_count_pick_the_commands() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    sim.inject(FaultRule {
        queue: Some(qp.qid()),
        opcode: Some(IoOpcode::READ.0),
        skip: 2,
        count: 3,
        fault: Fault::Status { sct: 0, sc: 0x04, dnr: true },
    });
    let mut failed = Vec::new();
    for i in 0..8u32 {
        qp.read(&ns, i as u64, 1, vec![0; 512], i).map_err(|e| e.error).unwrap();
        let done = poll_for(&sim, &mut qp, MS);
        if !done[0].status.is_success() {
            failed.push(done[0].context);
        }
    }
    assert_eq!(failed, [2, 3, 4]);
    assert_eq!(sim.stats().faults_of(FaultKind::StatusDnr), 3);
}

fn abort_cmd(sqid: u16, cid: u16) -> SubmissionEntry {
    let mut cmd = SubmissionEntry::new(AdminOpcode::ABORT.0, 0);
    cmd.cdw10 = sqid as u32 | ((cid as u32) << 16);
    cmd
}

#[test]
fn abort_aborts_a_stuck_command_when_it_works() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    sim.inject(rule(qp.qid(), IoOpcode::READ, Fault::Drop));
    let cid = qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    let done = admin(&ctrlr, abort_cmd(qp.qid(), cid.0)).unwrap();
    assert_eq!(done.dw0 & 1, 0, "aborted");
    assert_eq!(sim.outstanding(), 0);
    let done = poll_for(&sim, &mut qp, MS);
    assert_eq!(done.len(), 1);
    let s = done[0].status;
    // "Command Abort Requested" carries no DNR: a driver may retry it.
    assert!(s.sc() == generic::ABORTED_BY_REQUEST || s.is_success(), "{s}");
    // Nothing left to abort.
    assert_eq!(admin(&ctrlr, abort_cmd(qp.qid(), cid.0)).unwrap().dw0 & 1, 1);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn abort_never_aborts_like_qemu() {
    let (sim, ctrlr, ns) = setup(SimConfig { abort_works: false, ..SimConfig::default() });
    let mut qp = qpair(&ctrlr);
    sim.inject(rule(qp.qid(), IoOpcode::READ, Fault::Delay(Duration::from_millis(1))));
    let cid = qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    assert_eq!(admin(&ctrlr, abort_cmd(qp.qid(), cid.0)).unwrap().dw0 & 1, 1, "not aborted");
    let done = poll_for(&sim, &mut qp, Duration::from_millis(5));
    assert!(done[0].status.is_success());
}

fn command_status(r: Result<nvme_nostd::spec::command::CompletionEntry, Error>) -> (u8, u8) {
    match r {
        Err(Error::Command(s)) => (s.sct().0, s.sc().0),
        other => panic!("expected a command error, got {other:?}"),
    }
}

#[test]
fn queue_management_errors_use_the_specified_codes() {
    let (_sim, ctrlr, _) = setup(SimConfig::default());
    let qp = qpair(&ctrlr);
    let cs = |sc: nvme_nostd::spec::status::StatusCode| (1u8, sc.0);
    let q = qp.qid() as u32;
    // Delete I/O CQ while its SQ exists.
    let mut cmd = SubmissionEntry::new(AdminOpcode::DELETE_IO_CQ.0, 0);
    cmd.cdw10 = q;
    assert_eq!(command_status(admin(&ctrlr, cmd)), cs(command_specific::INVALID_QUEUE_DELETION));
    // Delete a queue that does not exist.
    let mut cmd = SubmissionEntry::new(AdminOpcode::DELETE_IO_SQ.0, 0);
    cmd.cdw10 = 7;
    assert_eq!(command_status(admin(&ctrlr, cmd)), cs(command_specific::INVALID_QUEUE_IDENTIFIER));
    // Create I/O SQ on a CQ that does not exist.
    let mut cmd = SubmissionEntry::new(AdminOpcode::CREATE_IO_SQ.0, 0);
    cmd.cdw10 = (15 << 16) | 5;
    cmd.cdw11 = (6 << 16) | 1;
    assert_eq!(command_status(admin(&ctrlr, cmd)), cs(command_specific::COMPLETION_QUEUE_INVALID));
    // Create I/O CQ: identifier in use, beyond the granted count, size 1, too big.
    let mut cmd = SubmissionEntry::new(AdminOpcode::CREATE_IO_CQ.0, 0);
    cmd.cdw11 = 1;
    for (cdw10, sc) in [
        ((15 << 16) | q, command_specific::INVALID_QUEUE_IDENTIFIER),
        ((15 << 16) | 9, command_specific::INVALID_QUEUE_IDENTIFIER),
        (5, command_specific::INVALID_QUEUE_SIZE),
        ((1024 << 16) | 5, command_specific::INVALID_QUEUE_SIZE),
    ] {
        cmd.cdw10 = cdw10;
        assert_eq!(command_status(admin(&ctrlr, cmd)), cs(sc), "cdw10 {cdw10:#x}");
    }
    // PC = 0 (CAP.CQR is set) is an invalid field.
    cmd.cdw10 = (15 << 16) | 5;
    cmd.cdw11 = 0;
    assert_eq!(command_status(admin(&ctrlr, cmd)), (0, generic::INVALID_FIELD.0));
    // Number of Queues once I/O queues exist: command sequence error.
    let mut cmd = SubmissionEntry::new(AdminOpcode::SET_FEATURES.0, 0);
    cmd.cdw10 = 7;
    assert_eq!(command_status(admin(&ctrlr, cmd)), (0, generic::COMMAND_SEQUENCE_ERROR.0));
    let mut cmd = SubmissionEntry::new(AdminOpcode::GET_FEATURES.0, 0);
    cmd.cdw10 = 7;
    assert_eq!(admin(&ctrlr, cmd).unwrap().dw0, 7 | (7 << 16), "8 granted (0-based)");
    assert_eq!(ctrlr.io_queues(), 8);
    // Unknown opcode; Keep Alive.
    let cmd = SubmissionEntry::new(0x7f, 0);
    assert_eq!(command_status(admin(&ctrlr, cmd)), (0, generic::INVALID_OPCODE.0));
    assert!(admin(&ctrlr, SubmissionEntry::new(AdminOpcode::KEEP_ALIVE.0, 0)).is_ok());
}

#[test]
fn nvm_commands_and_their_errors() {
    let (sim, ctrlr, ns) = setup(SimConfig {
        namespaces: vec![nvme_sim::SimNamespace { nsid: 1, block_size: 512, blocks: 64 }],
        ..SimConfig::default()
    });
    let mut qp = qpair(&ctrlr);
    let run = |qp: &mut Qp<'_>, cmd: SubmissionEntry, buf: Option<Vec<u8>>| {
        // SAFETY: the buffer holds the command's whole transfer, and the
        // simulated device checks every address anyway.
        unsafe { qp.submit_raw(cmd, buf, 0) }.map_err(|e| e.error).unwrap();
        poll_for(&sim, qp, MS).pop().expect("a completion").status
    };
    for lba in 0..4 {
        sim.write_blocks(1, lba, &pattern(lba, 512, 3));
    }
    // Write Zeroes of blocks 0 and 1.
    let mut wz = SubmissionEntry::new(IoOpcode::WRITE_ZEROES.0, 1);
    wz.cdw12 = 1;
    assert!(run(&mut qp, wz, None).is_success());
    assert_eq!(sim.read_blocks(1, 0, 2), vec![0; 1024]);
    // Dataset Management, deallocate block 3.
    let mut dsm = SubmissionEntry::new(IoOpcode::DATASET_MANAGEMENT.0, 1);
    dsm.cdw11 = 1 << 2;
    let mut range = vec![0u8; 16];
    range[4..8].copy_from_slice(&1u32.to_le_bytes());
    range[8..16].copy_from_slice(&3u64.to_le_bytes());
    assert!(run(&mut qp, dsm, Some(range)).is_success());
    assert_eq!(sim.read_blocks(1, 3, 1), vec![0; 512]);
    assert_eq!(sim.read_blocks(1, 2, 1), pattern(2, 512, 3));
    // Flush, one namespace and all.
    assert!(run(&mut qp, SubmissionEntry::new(IoOpcode::FLUSH.0, 1), None).is_success());
    assert!(run(&mut qp, SubmissionEntry::new(IoOpcode::FLUSH.0, u32::MAX), None).is_success());
    // Beyond the end; a namespace that does not exist; an unknown opcode.
    let mut read = SubmissionEntry::new(IoOpcode::READ.0, 1);
    read.cdw10 = 64;
    assert_eq!(run(&mut qp, read, Some(vec![0; 512])).sc(), generic::LBA_OUT_OF_RANGE);
    read.cdw10 = 63;
    read.cdw12 = 1;
    assert_eq!(run(&mut qp, read, Some(vec![0; 1024])).sc(), generic::LBA_OUT_OF_RANGE);
    let read = SubmissionEntry::new(IoOpcode::READ.0, 2);
    assert_eq!(run(&mut qp, read, Some(vec![0; 512])).sc(), generic::INVALID_NAMESPACE_OR_FORMAT);
    assert_eq!(run(&mut qp, SubmissionEntry::new(0x7c, 1), None).sc(), generic::INVALID_OPCODE);
    // The namespace goes away.
    sim.remove_namespace(1);
    qp.read(&ns, 0, 1, vec![0; 512], 0).map_err(|e| e.error).unwrap();
    let done = poll_for(&sim, &mut qp, MS);
    assert_eq!(done[0].status.sc(), generic::INVALID_NAMESPACE_OR_FORMAT);
    assert_eq!(ctrlr.identify_namespace(1).unwrap().nsze, 0, "identify returns zeros");
    assert!(ctrlr.namespace(1).is_err());
    assert_eq!(ctrlr.active_namespaces(0).unwrap().iter().count(), 0);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn rdy_never_times_out_and_clearing_it_lets_attach_work() {
    let sim = Sim::new(SimConfig { rdy_never: true, timeout_500ms: 1, ..SimConfig::default() });
    match Controller::new(sim.hal(), options()) {
        Err(Error::Timeout(_)) => {}
        other => panic!("expected a timeout, got {:?}", other.map(|_| ())),
    }
    sim.set_rdy_never(false);
    let ctrlr = attach(&sim);
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp = qpair(&ctrlr);
    qp.read(&ns, 0, 1, vec![0; 512], 0).map_err(|e| e.error).unwrap();
    assert!(poll_for(&sim, &mut qp, MS)[0].status.is_success());
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn mqes_zero_is_refused_at_attach() {
    let sim = Sim::new(SimConfig::default());
    sim.set_mqes(0);
    let r = Controller::new(sim.hal(), options()).map(|_| ());
    assert!(matches!(r, Err(Error::MalformedDevice(_))), "{r:?}");
    sim.set_mqes(1);
    // Two-entry queues: the driver still attaches.
    let ctrlr = attach(&sim);
    assert!(ctrlr.namespace(1).is_ok());
    drop(ctrlr);
    assert_clean(&sim);
}
