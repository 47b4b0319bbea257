//! For Miri, with `-Zmiri-ignore-leaks` (`cargo xtask miri`): the one path
//! where the driver leaks caller buffers on purpose and later writes into
//! them. A queue pair dropped while the device cannot be proven stopped
//! leaks its requests' `Vec` buffers and hands their mappings to the
//! controller's quarantine; the reset that later works undoes the mappings,
//! which copies the bounce pages back into the leaked buffers. Miri checks
//! that those writes reach memory that is still valid (the leak itself is
//! the point, hence the flag).

mod common;

use common::*;
use core::time::Duration;
use nvme_sim::{Fault, FaultRule, Sim, SimConfig, SimNamespace};

const MS: Duration = Duration::from_millis(1);

fn small() -> SimConfig {
    SimConfig {
        memory_bytes: 1 << 20,
        namespaces: vec![SimNamespace { nsid: 1, block_size: 512, blocks: 64 }],
        ..SimConfig::default()
    }
}

/// A controller that gives up on commands at once and never pauses to
/// retry, so that a stuck device is seen quickly.
fn controller(sim: &Sim) -> nvme_nostd::Controller<nvme_sim::SimHal> {
    let options = nvme_nostd::ControllerOptions::default()
        .with_admin_timeout(MS)
        .with_io_timeout(None)
        .with_recovery(1, MS);
    nvme_nostd::Controller::new(sim.hal(), options).expect("attach")
}

/// Drops a queue pair (`drop_pair`) while the controller can be neither
/// told to delete its queues nor disabled: `kept` mappings stay, in the
/// quarantine; the reset that works undoes them.
fn drop_stuck_then_reset(
    sim: &Sim,
    ctrlr: &nvme_nostd::Controller<nvme_sim::SimHal>,
    drop_pair: impl FnOnce(),
    kept: usize,
) {
    sim.set_disable_never(true);
    sim.inject(FaultRule::once(
        Some(0),
        Some(nvme_nostd::spec::command::AdminOpcode::DELETE_IO_SQ.0),
        Fault::Drop,
    ));
    drop_pair();
    assert_eq!(sim.stats().live_shares, kept, "kept");
    sim.set_disable_never(false);
    ctrlr.reset().expect("reset");
    assert_eq!(sim.stats().live_shares, 0, "undone");
}

/// A queue pair dropped with reads in flight on a controller that can be
/// neither told to delete its queues nor disabled: the reads' `Vec` buffers
/// are leaked and their mappings kept; after the reset that works, the
/// mappings are undone, which copies the bounce pages back into the leaked
/// buffers. Miri checks that those writes reach memory that is still valid.
#[test]
fn quarantined_mappings_are_undone_into_leaked_buffers() {
    let sim = Sim::new(SimConfig { timeout_500ms: 1, ready_delay: MS, ..small() });
    let ctrlr = controller(&sim);
    let ns = ctrlr.namespace(1).expect("namespace 1");
    let mut qp = qpair(&ctrlr);
    sim.inject(FaultRule { count: 2, ..FaultRule::once(Some(qp.qid()), None, Fault::Drop) });
    for i in 0..2u32 {
        qp.read(&ns, u64::from(i), 1, aligned_vec(512, 0), i).map_err(|e| e.error).unwrap();
    }
    drop_stuck_then_reset(&sim, &ctrlr, move || drop(qp), 2);
    drop(ctrlr);
    assert_clean(&sim);
}

/// The same with scatter lists of `Vec`s, each piece shared on its own:
/// the lists are leaked and each piece's mapping kept; the reset undoes
/// them, copying the bounce pages back into the leaked pieces.
#[test]
fn quarantined_scatter_pieces_are_undone_into_leaked_buffers() {
    let sim = Sim::new(SimConfig { timeout_500ms: 1, ready_delay: MS, sgls: 1, ..small() });
    let ctrlr = controller(&sim);
    let ns = ctrlr.namespace(1).expect("namespace 1");
    let mut qp: nvme_nostd::IoQueuePair<'_, _, nvme_nostd::ScatterList<Vec<u8>, 2>, u32, 4> =
        ctrlr.create_io_qpair(nvme_nostd::QpairOptions::default().with_entries(4)).expect("queue pair");
    sim.inject(FaultRule { count: 2, ..FaultRule::once(Some(qp.qid()), None, Fault::Drop) });
    for i in 0..2u32 {
        let mut list = nvme_nostd::ScatterList::new();
        for _ in 0..2 {
            assert!(list.push(aligned_vec(512, 0)).is_ok());
        }
        qp.read(&ns, u64::from(i) * 2, 2, list, i).map_err(|e| e.error).unwrap();
    }
    drop_stuck_then_reset(&sim, &ctrlr, move || drop(qp), 4);
    drop(ctrlr);
    assert_clean(&sim);
}
