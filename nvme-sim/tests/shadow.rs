//! Shadow doorbells (Doorbell Buffer Config, NVMe 1.4 section 5.8) against a
//! simulated controller that reads them as QEMU 7.2 does
//! (`DoorbellBuffer::On`: it takes the shadow tails and heads as time moves
//! and sets each EventIdx to what it took), or never (`Deaf`). QEMU's
//! controller has them too, but CI's QEMU runs leave them off (QEMU 7.2
//! itself crashed in one of three long runs with them; README): here is
//! where every run tests them.

mod common;

use common::{assert_clean, pattern, Qp};
use nvme_nostd::{Controller, Namespace, PollLimit, QpairOptions};

/// Polls until the pair has healed after a reset (recreated its queues).
fn heal(qp: &mut Qp<'_>) {
    for _ in 0..1000 {
        qp.poll(PollLimit::All, |_, _| {});
        if qp.failure().is_none() {
            return;
        }
    }
    panic!("not healed: {:?}", qp.failure());
}
use nvme_sim::{DoorbellBuffer, Sim, SimConfig, SimHal};

fn setup(mode: DoorbellBuffer) -> (Sim, Controller<SimHal>, Namespace) {
    let sim = Sim::new(SimConfig { doorbell_buffer: mode, ..SimConfig::default() });
    let ctrlr = Controller::new(sim.hal(), common::options().with_shadow_doorbells(true)).expect("attach");
    let ns = ctrlr.namespace(1).expect("namespace 1");
    (sim, ctrlr, ns)
}

fn qpair(ctrlr: &Controller<SimHal>) -> Qp<'_> {
    ctrlr
        .create_io_qpair(QpairOptions::default().with_entries(16).with_max_transfer_bytes(64 << 10))
        .expect("create I/O queue pair")
}

/// Writes `blocks` blocks (salted with `salt`) and reads them back with up
/// to `depth` commands in flight, checking every block and that each
/// request completes once; gives up after `limit` polls.
fn write_then_read(qp: &mut Qp<'_>, ns: &Namespace, blocks: u64, depth: usize, salt: u8, limit: usize) {
    let bs = ns.block_size() as usize;
    for write in [true, false] {
        let (mut next, mut done) = (0u64, vec![0u32; blocks as usize]);
        let mut polls = 0;
        while done.contains(&0) {
            while next < blocks && qp.in_flight() < depth {
                let sent = if write {
                    qp.write(ns, next, 1, pattern(next, bs, salt), next as u32)
                } else {
                    qp.read(ns, next, 1, vec![0; bs], next as u32)
                };
                sent.map_err(|e| e.error).expect("submitted");
                next += 1;
            }
            qp.poll(PollLimit::All, |_, c| {
                assert!(c.result().is_ok(), "block {}: {:?}", c.context, c.result());
                done[c.context as usize] += 1;
                if !write {
                    let data = c.buffer.as_deref().expect("the buffer comes back");
                    assert_eq!(data, &pattern(u64::from(c.context), bs, salt)[..], "block {}", c.context);
                }
            });
            polls += 1;
            assert!(
                polls < limit,
                "stalled: {} of {blocks} done after {polls} polls",
                done.iter().filter(|&&d| d > 0).count()
            );
        }
        assert!(done.iter().all(|&d| d == 1), "each request completed exactly once");
    }
}

#[test]
fn io_goes_through_shadow_doorbells_and_skips_most_mmio_writes() {
    let (sim, ctrlr, ns) = setup(DoorbellBuffer::On);
    assert!(ctrlr.shadow_doorbells(), "offered and asked for");
    {
        let mut qp = qpair(&ctrlr);
        for (depth, salt) in [(1, 1), (4, 2), (15, 3)] {
            write_then_read(&mut qp, &ns, 120, depth, salt, 100_000);
        }
        let stats = qp.stats();
        assert!(stats.doorbells_skipped > 0, "the EventIdx rule spared MMIO writes: {stats:?}");
        assert_eq!(
            stats.watchdog_rings, 0,
            "a controller that reads the shadows never needs the watchdog: {stats:?}"
        );
        assert!(sim.stats().shadow_doorbells > 0, "the controller took tails and heads from the shadows");
    }
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn shadow_doorbells_come_back_after_a_reset_and_the_queue_pair_heals() {
    let (sim, ctrlr, ns) = setup(DoorbellBuffer::On);
    let mut qp = qpair(&ctrlr);
    write_then_read(&mut qp, &ns, 40, 8, 4, 100_000);
    let before = sim.stats().shadow_doorbells;
    // The reset takes the shadow pages away from the controller; the driver
    // hands them over again, seeded, and the pair is recreated on them.
    ctrlr.reset().expect("reset");
    assert!(ctrlr.shadow_doorbells(), "configured again after the reset");
    heal(&mut qp);
    write_then_read(&mut qp, &ns, 40, 8, 5, 100_000);
    assert!(sim.stats().shadow_doorbells > before, "the recreated queues use the shadows");
    assert_eq!(qp.stats().watchdog_rings, 0);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn a_controller_that_never_reads_the_shadows_is_rung_by_the_watchdog() {
    let (sim, ctrlr, ns) = setup(DoorbellBuffer::Deaf);
    assert!(ctrlr.shadow_doorbells(), "offered (if never read)");
    {
        let mut qp = qpair(&ctrlr);
        // Slow (a watchdog ring every few thousand quiet polls), but no
        // request is lost.
        write_then_read(&mut qp, &ns, 16, 4, 6, 2_000_000);
        assert!(qp.stats().watchdog_rings > 0, "{:?}", qp.stats());
        assert_eq!(sim.stats().shadow_doorbells, 0);
    }
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn without_the_offer_the_driver_keeps_mmio_doorbells() {
    let (sim, ctrlr, ns) = setup(DoorbellBuffer::Off);
    assert!(!ctrlr.shadow_doorbells(), "OACS bit 8 clear: not configured");
    let mut qp = qpair(&ctrlr);
    write_then_read(&mut qp, &ns, 40, 8, 7, 100_000);
    assert_eq!(qp.stats().doorbells_skipped, 0);
    assert_eq!(sim.stats().shadow_doorbells, 0);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn the_admin_queue_goes_on_by_mmio_with_its_shadow_mirrored() {
    let (sim, ctrlr, _ns) = setup(DoorbellBuffer::On);
    let before = sim.stats().admin_commands;
    for _ in 0..20 {
        ctrlr.namespace(1).expect("identify after Doorbell Buffer Config");
    }
    assert!(sim.stats().admin_commands >= before + 20);
}

/// A queue pair that gave up (its request needs a reset the driver no
/// longer tries: the controller cannot even be disabled) has no queues to
/// wake: the watchdog leaves the device alone however long the owner keeps
/// polling, and starts again once a reset by hand heals the pair.
#[test]
fn the_watchdog_leaves_a_pair_that_gave_up_alone() {
    use core::time::Duration;
    use nvme_nostd::{ControllerOptions, Error, SHADOW_WATCHDOG_PASSES};
    use nvme_sim::{Fault, FaultRule};
    let sim = Sim::new(SimConfig {
        doorbell_buffer: DoorbellBuffer::Deaf,
        timeout_500ms: 1,
        ..SimConfig::default()
    });
    let options = ControllerOptions::default()
        .with_admin_timeout(Duration::from_millis(50))
        .with_io_timeout(Some(Duration::from_millis(20)))
        .with_recovery(2, Duration::from_millis(1))
        .with_shadow_doorbells(true);
    let ctrlr = Controller::new(sim.hal(), options).expect("attach");
    assert!(ctrlr.shadow_doorbells());
    let ns = ctrlr.namespace(1).expect("namespace 1");
    let mut qp = qpair(&ctrlr);
    sim.inject(FaultRule::once(Some(qp.qid()), None, Fault::Drop));
    sim.set_abort_works(false);
    qp.read(&ns, 0, 1, vec![0; 512], 7).map_err(|e| e.error).expect("submitted");
    sim.set_disable_never(true);
    let mut done = Vec::new();
    for _ in 0..20_000 {
        qp.poll(PollLimit::All, |_, c| done.push(c.result()));
        if qp.failure().is_some() {
            break;
        }
        sim.advance(Duration::from_millis(1));
    }
    assert!(
        matches!(qp.failure(), Some(Error::QueuePairBroken(b)) if b.terminal),
        "gave up: {:?}",
        qp.failure()
    );
    assert!(done.is_empty(), "the request is still the device's: {done:?}");
    assert_eq!(qp.in_flight(), 1);
    let rings = qp.stats().watchdog_rings;
    for _ in 0..3 * SHADOW_WATCHDOG_PASSES {
        qp.poll(PollLimit::All, |_, c| done.push(c.result()));
    }
    assert_eq!(qp.stats().watchdog_rings, rings, "no doorbell of a pair that gave up is rung");
    assert!(done.is_empty(), "{done:?}");
    // A reset by hand ends the request and heals the pair; the watchdog
    // carries its I/O on the deaf controller again.
    sim.set_disable_never(false);
    ctrlr.reset().expect("reset by hand");
    for _ in 0..1000 {
        qp.poll(PollLimit::All, |_, c| done.push(c.result()));
        if qp.failure().is_none() && !done.is_empty() {
            break;
        }
        sim.advance(Duration::from_millis(1));
    }
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(qp.failure().is_none(), "{:?}", qp.failure());
    write_then_read(&mut qp, &ns, 8, 2, 9, 2_000_000);
    assert!(qp.stats().watchdog_rings > rings, "{:?}", qp.stats());
}
