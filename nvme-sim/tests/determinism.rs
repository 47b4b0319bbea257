//! The same configuration, seed and host actions give the same results.

mod common;

use common::*;
use core::time::Duration;
use nvme_conformance::{run_controller, Options, Totals};
use nvme_nostd::{Controller, DmaBuffer, IoQueuePair, PollLimit, QpairOptions};
use nvme_sim::{FaultKind, QueueFilter, RandomFaults, Sim, SimConfig, SimHal, SimStats};

/// (context, status, virtual time in ns) of every completion the host saw.
type Log = Vec<(u32, u16, u64)>;

/// 240 reads and writes, up to 24 in flight, with random faults of every
/// recoverable kind on the I/O queue; polls for a bounded stretch of virtual
/// time (well under the driver's default I/O timeout).
fn workload(seed: u64) -> (SimStats, Log, u64) {
    const COMMANDS: u32 = 240;
    let sim = Sim::new(SimConfig::default());
    let ctrlr = Controller::new(sim.hal(), options()).expect("attach");
    let ns = ctrlr.namespace(1).expect("namespace");
    let mut qp: IoQueuePair<'_, SimHal, DmaBuffer<'_, SimHal>, u32, 32> = ctrlr
        .create_io_qpair(QpairOptions::default().with_entries(64).with_max_transfer_bytes(64 << 10))
        .expect("queue pair");
    sim.inject_random_with(RandomFaults {
        seed,
        probability_per_command: 0.15,
        kinds: FaultKind::RECOVERABLE.to_vec(),
        queues: QueueFilter::Io,
    });
    let mut log = Log::new();
    let mut next = 0u32;
    for _ in 0..20_000 {
        while next < COMMANDS && qp.in_flight() < 24 {
            let lba = (next % 200) as u64;
            let blocks = 1 + next % 8;
            let mut buf = DmaBuffer::new(ctrlr.hal(), blocks as usize * 512).expect("buffer");
            let r = if next.is_multiple_of(3) {
                qp.read(&ns, lba, blocks, buf, next)
            } else {
                buf.fill(next as u8);
                qp.write(&ns, lba, blocks, buf, next)
            };
            if r.is_err() {
                break;
            }
            next += 1;
        }
        qp.poll(PollLimit::All, |_, c| log.push((c.context, c.status.raw(), sim.now().as_nanos() as u64)));
        if next == COMMANDS && qp.in_flight() == 0 {
            break;
        }
        sim.advance(Duration::from_micros(3));
    }
    let bogus = qp.stats().bogus_completions;
    drop(qp);
    drop(ctrlr);
    assert_no_bad_frees(&sim);
    (sim.stats(), log, bogus)
}

#[test]
fn same_seed_same_run() {
    let (stats_a, log_a, bogus_a) = workload(0xfeed);
    let (stats_b, log_b, bogus_b) = workload(0xfeed);
    println!("{stats_a:?}");
    for kind in FaultKind::ALL {
        println!("{:>20}: {}", kind.name(), stats_a.faults_of(kind));
    }
    println!("{} completions seen by the host, {bogus_a} bogus entries rejected", log_a.len());
    assert!(stats_a.faults_total() > 10, "the workload met faults: {stats_a:?}");
    assert!(log_a.len() > 150);
    assert_eq!(stats_a, stats_b);
    assert_eq!(log_a, log_b);
    assert_eq!(bogus_a, bogus_b);

    let (stats_c, log_c, _) = workload(0xbeef);
    assert_ne!(stats_a.digest, stats_c.digest, "another seed, another run");
    assert_ne!(log_a, log_c);
}

#[test]
fn selftest_passes_with_random_delays() {
    // Delays reorder completions; the self-test must not care.
    let run = || {
        let sim = Sim::new(SimConfig::default());
        sim.inject_random_with(RandomFaults {
            seed: 42,
            probability_per_command: 0.05,
            kinds: vec![FaultKind::Delay],
            queues: QueueFilter::Io,
        });
        let mut out = String::new();
        let mut totals = Totals::default();
        run_controller(
            sim.hal(),
            "simd",
            &Options::default().with_backend_failures(false),
            &mut out,
            &mut totals,
        );
        assert_eq!(totals.failed, 0, "{out}");
        assert!(totals.passed > 10, "{out}");
        assert_clean(&sim);
        let s = sim.stats();
        assert!(s.faults_of(FaultKind::Delay) > 10, "{s:?}");
        (s, sim.now())
    };
    let (a, t) = run();
    assert_eq!((a, t), run());
}
