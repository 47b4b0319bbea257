//! A device that contradicts itself about a command it ran: a completion the
//! host must drop (an impossible SQ head), then another entry naming the same
//! CID. The driver cannot tell which to believe, so the command's fate is
//! unknown from the first one on, as after a timeout; above all it never
//! frees memory the device may still use because the second entry said
//! "refused".
//!
//! Found by the threaded stress test (one run in about 1,500): a Create I/O
//! CQ whose completion had an impossible SQ head, then another thread's
//! command whose `CidNotOutstanding` fault reused that CID with its own
//! error status; the driver freed the ring of a queue the device had made.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod common;

use common::*;
use core::time::Duration;
use nvme_nostd::spec::command::{AdminOpcode, IoOpcode, SubmissionEntry};
use nvme_nostd::spec::status::{command_specific, generic};
use nvme_nostd::{Error, QpairOptions, Wait};
use nvme_sim::{Fault, FaultKind, FaultRule, Sim, SimConfig};

/// A contradiction whose second entry says "invalid queue identifier".
fn refused_after_all() -> Fault {
    Fault::ContradictingCompletion { sct: 1, sc: command_specific::INVALID_QUEUE_IDENTIFIER.0 }
}

fn admin_rule(opcode: AdminOpcode, fault: Fault) -> FaultRule {
    FaultRule::once(Some(0), Some(opcode.0), fault)
}

/// Creation of a queue the device made but then called refused: the
/// creation fails as timed out (not with the status), nothing the device
/// uses is freed, and after the reset that follows a queue pair works.
#[test]
fn a_create_the_device_contradicts_frees_nothing_it_uses() {
    for opcode in [AdminOpcode::CREATE_IO_CQ, AdminOpcode::CREATE_IO_SQ] {
        let (sim, ctrlr, ns) = setup(SimConfig::default());
        sim.inject(admin_rule(opcode, refused_after_all()));
        let e = ctrlr.create_io_qpair::<Vec<u8>, u32, 16>(QpairOptions::default()).err();
        assert_eq!(sim.stats().faults_of(FaultKind::ContradictingCompletion), 1);
        assert!(
            !matches!(e, Some(Error::Command(_)) | None),
            "opcode {:#x}: the contradicted status was believed: {e:?}",
            opcode.0
        );
        assert_no_bad_frees(&sim);
        let mut qp = qpair(&ctrlr);
        let bs = ns.block_size() as usize;
        qp.write(&ns, 3, 1, pattern(3, bs, 7), 1).map_err(|e| e.error).unwrap();
        assert!(poll_for(&sim, &mut qp, Duration::from_millis(5))[0].status.is_success());
        drop(qp);
        drop(ctrlr);
        assert_clean(&sim);
    }
}

/// The interleaving the stress test found, with two threads: Create I/O CQ
/// gets an impossible SQ head; then another command's `CidNotOutstanding`
/// entry must not name it (to the host it is still outstanding).
#[test]
fn a_dropped_completion_is_not_named_again_by_another_commands_fault() {
    let sim = Sim::new(SimConfig::default());
    let ctrlr = nvme_nostd::Controller::new(sim.hal(), options().with_admin_timeout(Duration::from_secs(60)))
        .expect("attach");
    sim.inject(admin_rule(AdminOpcode::CREATE_IO_CQ, Fault::ImpossibleSqHead));
    sim.inject(admin_rule(AdminOpcode::DELETE_IO_SQ, Fault::CidNotOutstanding));
    std::thread::scope(|s| {
        let (c, sim2) = (&ctrlr, &sim);
        s.spawn(move || {
            while sim2.stats().faults_of(FaultKind::ImpossibleSqHead) == 0 {
                std::thread::yield_now();
            }
            let mut cmd = SubmissionEntry::new(AdminOpcode::DELETE_IO_SQ.0, 0);
            cmd.cdw10 = 7; // no such queue: Invalid Queue Identifier
                           // SAFETY: deletes no queue of the driver's and moves no data;
                           // the simulated device checks every address.
            let _ = unsafe { c.admin_command(cmd) };
        });
        let created = ctrlr.create_io_qpair::<Vec<u8>, u32, 16>(QpairOptions::default().with_entries(32));
        assert!(!matches!(created, Err(Error::Command(_))), "{:?}", created.err());
    });
    assert_no_bad_frees(&sim);
    drop(ctrlr);
    assert_clean(&sim);
}

/// A write the device contradicts itself about (it ran) ends with
/// `Error::Timeout`, fate unknown, not as a plain error a caller would take
/// for "not written"; a read the same way; the queue pair goes on.
#[test]
fn an_io_the_device_contradicts_ends_with_its_fate_unknown() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    let bs = ns.block_size() as usize;
    let error_after_all = Fault::ContradictingCompletion { sct: 0, sc: generic::INTERNAL_ERROR.0 };
    sim.inject(FaultRule::once(Some(qp.qid()), Some(IoOpcode::WRITE.0), error_after_all));
    qp.write(&ns, 9, 1, pattern(9, bs, 3), 1).map_err(|e| e.error).unwrap();
    let done = poll_for(&sim, &mut qp, Duration::from_millis(5));
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].result(), Err(Error::Timeout(Wait::IoCommand)), "status {}", done[0].status);
    assert_eq!(sim.read_blocks(1, 9, 1), pattern(9, bs, 3), "the device did write it");
    assert!(qp.stats().bogus_completions >= 1);
    // Then a read, whose second entry says success: believed (success is
    // what a caller can act on), with the data.
    sim.inject(FaultRule::once(
        Some(qp.qid()),
        Some(IoOpcode::READ.0),
        Fault::ContradictingCompletion { sct: 0, sc: 0 },
    ));
    qp.read(&ns, 9, 1, vec![0; bs], 2).map_err(|e| e.error).unwrap();
    let done = poll_for(&sim, &mut qp, Duration::from_millis(5));
    assert_eq!(done.len(), 1);
    assert!(done[0].status.is_success(), "{}", done[0].status);
    assert_eq!(done[0].buffer.as_deref(), Some(&pattern(9, bs, 3)[..]));
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}
