//! The self-test that runs on QEMU and on bare metal, run against the simulator.

mod common;

use nvme_selftest::{run_controller, Options, Totals};
use nvme_sim::{Sim, SimConfig, SimNamespace};

fn run(sim: &Sim, label: &str) -> Totals {
    let mut out = String::new();
    let mut totals = Totals::default();
    run_controller(sim.hal(), label, &Options::default(), &mut out, &mut totals);
    totals.summary(&mut out);
    print!("{out}");
    totals
}

/// After the controller is dropped, every page and share is back, and no
/// fault was injected.
fn assert_clean(sim: &Sim) {
    common::assert_clean(sim);
    let s = sim.stats();
    assert_eq!(s.faults_total(), 0, "{s:?}");
}

#[test]
fn selftest_passes_on_the_simulator() {
    // 16 MiB namespace, MDTS 5 (128 KiB transfers).
    let sim = Sim::new(SimConfig {
        namespaces: vec![SimNamespace { nsid: 1, block_size: 512, blocks: 32768 }],
        ..SimConfig::default()
    });
    let totals = run(&sim, "sim0");
    assert_eq!(totals.failed, 0, "{totals:?}");
    assert!(totals.passed > 10, "{totals:?}");
    assert_clean(&sim);
    let s = sim.stats();
    assert!(s.commands_fetched > 1000, "{s:?}");
    assert_eq!(s.completions_posted, s.commands_fetched, "every command completed once: {s:?}");
}

#[test]
fn selftest_passes_with_two_namespaces_and_no_transfer_limit() {
    // MDTS 0: the self-test caps transfers at 4 MiB; a 4 KiB-block namespace
    // next to a 512-byte one, and NSIDs with a gap.
    let sim = Sim::new(SimConfig {
        mdts: 0,
        memory_bytes: 64 << 20,
        namespaces: vec![
            SimNamespace { nsid: 1, block_size: 512, blocks: 32768 },
            SimNamespace { nsid: 3, block_size: 4096, blocks: 4096 },
        ],
        ..SimConfig::default()
    });
    let totals = run(&sim, "sim1");
    assert_eq!(totals.failed, 0, "{totals:?}");
    assert!(totals.passed > 20, "{totals:?}");
    assert_clean(&sim);
}

#[test]
fn selftest_with_no_active_namespace() {
    // No namespace to test: the controller checks still run and pass.
    let sim = Sim::new(SimConfig::default());
    sim.remove_namespace(1);
    let totals = run(&sim, "sim2");
    assert_eq!(totals.failed, 0, "an empty active list is not a failure: {totals:?}");
    assert!(totals.passed >= 3, "{totals:?}");
    assert_clean(&sim);
}
