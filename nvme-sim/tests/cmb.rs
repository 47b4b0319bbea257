//! Submission queues in the controller memory buffer
//! ([`ControllerOptions::sq_in_cmb`]). QEMU's controller (`cmb_size_mb`)
//! proves the happy path in the conformance suite; these tests take what
//! QEMU cannot be made to do: a controller that refuses the base address,
//! a reset that turns the memory space off, slots too small for a queue,
//! queues whose deletion fails while their slot is wanted again, and
//! faults and resets with queues there.

mod common;

use common::{assert_clean, options, pattern, poll_for, Qp};
use core::time::Duration;
use nvme_nostd::spec::command::AdminOpcode;
use nvme_nostd::{CmbInfo, Controller, QpairOptions};
use nvme_sim::{Fault, FaultRule, Sim, SimConfig, SimHal, CMB_BUS_ADDRESS};

const CMB: usize = 256 << 10;

fn sim_with_cmb() -> Sim {
    Sim::new(SimConfig { cmb_bytes: CMB, ..SimConfig::default() })
}

fn attach_cmb(sim: &Sim) -> Controller<SimHal> {
    Controller::new(sim.hal(), options().with_io_queues(4).with_sq_in_cmb(true)).expect("attach")
}

fn qpair(ctrlr: &Controller<SimHal>, entries: u16) -> Qp<'_> {
    ctrlr.create_io_qpair(QpairOptions::default().with_entries(entries)).expect("queue pair")
}

/// Writes and reads back `rounds` blocks from `first`, one at a time, so that
/// a queue of `qp.entries()` entries wraps; panics on a mismatch. Polls
/// first: after a reset, `poll` is what re-creates the queues.
fn verified_io(sim: &Sim, qp: &mut Qp<'_>, first: u64, rounds: u64, salt: u8) {
    let ns = qp.controller().namespace(1).expect("namespace");
    assert!(poll_for(sim, qp, Duration::ZERO).is_empty(), "nothing was in flight");
    for lba in first..first + rounds {
        qp.write(&ns, lba, 1, pattern(lba, 512, salt), 0).map_err(|e| e.error).expect("write");
        let done = poll_for(sim, qp, Duration::from_millis(10));
        assert!(
            done.len() == 1 && done[0].result().is_ok(),
            "write {lba}: {:?}",
            done.iter().map(|d| d.result()).collect::<Vec<_>>()
        );
        qp.read(&ns, lba, 1, vec![0; 512], 1).map_err(|e| e.error).expect("read");
        let mut done = poll_for(sim, qp, Duration::from_millis(10));
        assert_eq!(done.len(), 1);
        let read = done.pop().unwrap();
        assert!(read.result().is_ok(), "read {lba}: {:?}", read.result());
        assert_eq!(read.buffer.expect("buffer"), pattern(lba, 512, salt), "lba {lba}");
    }
}

#[test]
fn queues_in_the_cmb_carry_verified_io() {
    let sim = sim_with_cmb();
    let ctrlr = attach_cmb(&sim);
    assert_eq!(
        ctrlr.cmb(),
        Some(CmbInfo { size: CMB as u64, base: CMB_BUS_ADDRESS, bytes_per_queue: CMB / 4 })
    );
    let mut qp = qpair(&ctrlr, 8);
    assert!(qp.sq_in_cmb());
    verified_io(&sim, &mut qp, 0, 40, 1);
    // 80 I/O commands through an 8-entry ring in the CMB: ten times round.
    assert!(sim.stats().cmb_fetches >= 80, "{:?}", sim.stats());
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn without_the_option_the_cmb_is_left_alone() {
    let sim = sim_with_cmb();
    let ctrlr = Controller::new(sim.hal(), options().with_io_queues(4)).expect("attach");
    assert_eq!(ctrlr.cmb(), None);
    let mut qp = qpair(&ctrlr, 8);
    assert!(!qp.sq_in_cmb());
    verified_io(&sim, &mut qp, 0, 10, 2);
    assert_eq!(sim.stats().cmb_fetches, 0);
    assert_eq!(sim.stats().cmb_msc_writes, 0, "CMBMSC untouched");
}

#[test]
fn a_controller_without_a_cmb_gets_host_memory_queues() {
    let sim = Sim::new(SimConfig::default());
    let ctrlr = attach_cmb(&sim);
    assert_eq!(ctrlr.cmb(), None);
    let mut qp = qpair(&ctrlr, 8);
    assert!(!qp.sq_in_cmb());
    verified_io(&sim, &mut qp, 0, 10, 3);
}

#[test]
fn a_refused_base_address_leaves_queues_in_host_memory() {
    let sim = Sim::new(SimConfig { cmb_bytes: CMB, cmb_refuse_cba: true, ..SimConfig::default() });
    let ctrlr = attach_cmb(&sim);
    assert_eq!(ctrlr.cmb(), None, "CMBSTS.CBAI: no CMB");
    let mut qp = qpair(&ctrlr, 8);
    assert!(!qp.sq_in_cmb());
    verified_io(&sim, &mut qp, 0, 10, 4);
    assert_eq!(sim.stats().cmb_fetches, 0);
}

#[test]
fn a_queue_larger_than_its_slot_stays_in_host_memory() {
    let sim = sim_with_cmb();
    let ctrlr = attach_cmb(&sim);
    // 64 KiB per queue: 1024 entries fit, 1025 do not (MQES 1023 allows
    // 1024, so ask a slot of a controller granting more queues instead).
    let per_queue = ctrlr.cmb().unwrap().bytes_per_queue;
    assert_eq!(per_queue, 64 << 10);
    let fits = qpair(&ctrlr, 1024);
    assert!(fits.sq_in_cmb());
    drop(fits);
    let sim = Sim::new(SimConfig { cmb_bytes: 64 << 10, ..SimConfig::default() });
    let ctrlr = Controller::new(sim.hal(), options().with_io_queues(8).with_sq_in_cmb(true)).unwrap();
    assert_eq!(ctrlr.cmb().unwrap().bytes_per_queue, 8 << 10, "64 KiB in eight slots");
    let mut small = qpair(&ctrlr, 128);
    let mut large = qpair(&ctrlr, 129);
    assert!(small.sq_in_cmb());
    assert!(!large.sq_in_cmb(), "129 entries need 8256 bytes");
    verified_io(&sim, &mut small, 0, 5, 5);
    verified_io(&sim, &mut large, 100, 5, 6);
}

/// The simulated controller turns the memory space off at every reset (as
/// a controller may); the driver turns it on again before it re-creates the
/// queues, which then carry I/O as before.
#[test]
fn a_reset_turns_the_memory_space_on_again() {
    let sim = sim_with_cmb();
    let ctrlr = attach_cmb(&sim);
    let mut qp = qpair(&ctrlr, 8);
    verified_io(&sim, &mut qp, 0, 10, 7);
    let writes = sim.stats().cmb_msc_writes;
    for round in 0..3u8 {
        ctrlr.reset().expect("reset");
        verified_io(&sim, &mut qp, 0, 10, 8 + round);
    }
    assert!(qp.sq_in_cmb());
    assert_eq!(sim.stats().cmb_msc_writes, writes + 3, "once per reset");
}

/// A Delete I/O Submission Queue that never completes: the admin timeout
/// resets the controller, which forgets the queue. Queue pairs then come
/// and go on the same identifiers, and with them the same CMB slots; every
/// one carries verified I/O, so no queue ever fetched another's entries.
#[test]
fn slots_follow_queue_identifiers_through_churn_and_failed_deletes() {
    let sim = sim_with_cmb();
    let ctrlr = attach_cmb(&sim);
    let mut keep = qpair(&ctrlr, 16);
    for round in 0..20u64 {
        if round % 5 == 2 {
            sim.inject(FaultRule::once(Some(0), Some(AdminOpcode::DELETE_IO_SQ.0), Fault::Drop));
        }
        let mut qp = qpair(&ctrlr, 16);
        assert!(qp.sq_in_cmb());
        verified_io(&sim, &mut qp, 200 + round * 8, 8, round as u8);
        drop(qp);
        verified_io(&sim, &mut keep, round * 8, 8, round as u8 ^ 0x55);
    }
    assert!(sim.stats().resets >= 4, "{:?}", sim.stats());
    drop(keep);
    drop(ctrlr);
    assert_clean(&sim);
}
