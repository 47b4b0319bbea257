//! Per-namespace revalidation: a reset, a Namespace Attribute Changed
//! event, and a fresh `Controller::namespace` identify the namespaces the
//! driver follows again, and only the handles of a namespace whose geometry
//! changed (or that went away) go stale. QEMU cannot format a namespace
//! behind the driver's back (another host), so the simulator does it.

mod common;

use common::{assert_clean, options, poll_for, Qp};
use core::time::Duration;
use nvme_nostd::spec::command::AdminOpcode;
use nvme_nostd::spec::dwords::AsyncEventConfig;
use nvme_nostd::{Argument, Controller, Error, Namespace, QpairOptions, TRACKED_NAMESPACES};
use nvme_sim::{Fault, FaultRule, Sim, SimConfig, SimHal, SimNamespace};

fn two() -> SimConfig {
    SimConfig {
        namespaces: vec![
            SimNamespace { nsid: 1, block_size: 512, blocks: 1024 },
            SimNamespace { nsid: 2, block_size: 512, blocks: 1024 },
        ],
        ..SimConfig::default()
    }
}

const STALE: Error = Error::InvalidArgument(Argument::StaleNamespace);

/// A one-block read through `ns`: the submission's error, or the result.
fn read(sim: &Sim, qp: &mut Qp<'_>, ns: &Namespace) -> Result<(), Error> {
    let bs = ns.block_size() as usize;
    qp.read(ns, 0, 1, vec![0; bs], 0).map_err(|e| e.error)?;
    let done = poll_for(sim, qp, Duration::from_millis(10));
    assert_eq!(done.len(), 1);
    done[0].result()
}

fn qpair(ctrlr: &Controller<SimHal>) -> Qp<'_> {
    ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap()
}

/// Another host formats namespace 2 and nothing tells the driver (no
/// events enabled). The reset that follows identifies both again: only
/// namespace 2's handle is refused, before anything is sent.
#[test]
fn a_reset_finds_the_namespace_that_changed() {
    let sim = Sim::new(two());
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let (ns1, ns2) = (ctrlr.namespace(1).unwrap(), ctrlr.namespace(2).unwrap());
    let mut qp = qpair(&ctrlr);
    assert!(sim.format_by_other_host(2, 1), "to 4096-byte blocks");
    ctrlr.reset().unwrap();
    assert!(poll_for(&sim, &mut qp, Duration::ZERO).is_empty());
    let fetched = sim.stats().commands_fetched;
    assert_eq!(read(&sim, &mut qp, &ns2), Err(STALE));
    assert_eq!(sim.stats().commands_fetched, fetched, "nothing sent");
    assert_eq!(read(&sim, &mut qp, &ns1), Ok(()), "namespace 1 did not change");
    let renewed = ctrlr.namespace(2).unwrap();
    assert_eq!(renewed.block_size(), 4096);
    assert_eq!(read(&sim, &mut qp, &renewed), Ok(()));
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// A reset that changes nothing leaves every handle usable; one of a
/// namespace that went away is refused.
#[test]
fn a_reset_that_changes_nothing_keeps_handles() {
    let sim = Sim::new(two());
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let (ns1, ns2) = (ctrlr.namespace(1).unwrap(), ctrlr.namespace(2).unwrap());
    let mut qp = qpair(&ctrlr);
    for _ in 0..3 {
        ctrlr.reset().unwrap();
        assert!(poll_for(&sim, &mut qp, Duration::ZERO).is_empty());
        assert_eq!(read(&sim, &mut qp, &ns1), Ok(()));
        assert_eq!(read(&sim, &mut qp, &ns2), Ok(()));
    }
    sim.remove_namespace(2);
    ctrlr.reset().unwrap();
    assert!(poll_for(&sim, &mut qp, Duration::ZERO).is_empty());
    assert_eq!(read(&sim, &mut qp, &ns2), Err(STALE), "gone");
    assert_eq!(read(&sim, &mut qp, &ns1), Ok(()));
}

/// With events on, the notice of another host's format is enough: the
/// driver identifies what it follows again and only the changed
/// namespace's handles go stale.
#[test]
fn a_namespace_notice_revalidates() {
    let sim = Sim::new(two());
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    ctrlr.enable_async_events(AsyncEventConfig::new().with_namespace_attribute(true)).unwrap();
    let (ns1, ns2) = (ctrlr.namespace(1).unwrap(), ctrlr.namespace(2).unwrap());
    let mut qp = qpair(&ctrlr);
    assert!(sim.format_by_other_host(1, 1));
    let mut events = Vec::new();
    for _ in 0..100 {
        ctrlr.process_admin_completions(usize::MAX, |e| events.push(e)).unwrap();
        if !events.is_empty() {
            break;
        }
        sim.advance(Duration::from_micros(100));
    }
    assert!(events.iter().any(|e| e.is_namespace_changed()), "{events:?}");
    assert_eq!(read(&sim, &mut qp, &ns1), Err(STALE));
    assert_eq!(read(&sim, &mut qp, &ns2), Ok(()));
}

/// Without any notice, a fresh handle that finds a new geometry makes the
/// older handles of that namespace stale (they would address blocks of the
/// old size).
#[test]
fn a_fresh_handle_that_sees_a_change_retires_the_old_ones() {
    let sim = Sim::new(two());
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let (old, other) = (ctrlr.namespace(2).unwrap(), ctrlr.namespace(1).unwrap());
    let again = ctrlr.namespace(2).unwrap();
    let mut qp = qpair(&ctrlr);
    assert_eq!(read(&sim, &mut qp, &again), Ok(()), "the same geometry: both usable");
    assert_eq!(read(&sim, &mut qp, &old), Ok(()));
    assert!(sim.format_by_other_host(2, 1));
    let fresh = ctrlr.namespace(2).unwrap();
    assert_eq!(fresh.block_size(), 4096);
    assert_eq!(read(&sim, &mut qp, &old), Err(STALE));
    assert_eq!(read(&sim, &mut qp, &again), Err(STALE));
    assert_eq!(read(&sim, &mut qp, &fresh), Ok(()));
    assert_eq!(read(&sim, &mut qp, &other), Ok(()));
}

/// An Identify Namespace refused during a reset's revalidation: that
/// namespace cannot be vouched for, so its handles go stale; the rest stay.
#[test]
fn a_refused_identify_during_revalidation_retires_that_namespace() {
    let sim = Sim::new(two());
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let (ns1, ns2) = (ctrlr.namespace(1).unwrap(), ctrlr.namespace(2).unwrap());
    let mut qp = qpair(&ctrlr);
    // The reset's Identify commands: the controller, then namespaces 1 and 2.
    sim.inject(FaultRule {
        skip: 2,
        ..FaultRule::once(
            Some(0),
            Some(AdminOpcode::IDENTIFY.0),
            Fault::Status { sct: 0, sc: 0x02, dnr: true },
        )
    });
    ctrlr.reset().unwrap();
    assert!(poll_for(&sim, &mut qp, Duration::ZERO).is_empty());
    assert_eq!(read(&sim, &mut qp, &ns1), Ok(()));
    assert_eq!(read(&sim, &mut qp, &ns2), Err(STALE));
    assert_eq!(read(&sim, &mut qp, &ctrlr.namespace(2).unwrap()), Ok(()), "identified again");
}

/// The driver follows the first 32 namespaces it hands out handles for;
/// further ones share one generation, which every revalidation moves on.
#[test]
fn namespaces_beyond_the_followed_ones_go_stale_at_every_reset() {
    let count = TRACKED_NAMESPACES as u32 + 4;
    let sim = Sim::new(SimConfig {
        namespaces: (1..=count).map(|nsid| SimNamespace { nsid, block_size: 512, blocks: 16 }).collect(),
        max_namespaces: count,
        ..SimConfig::default()
    });
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let handles: Vec<Namespace> = (1..=count).map(|n| ctrlr.namespace(n).unwrap()).collect();
    let mut qp = qpair(&ctrlr);
    ctrlr.reset().unwrap();
    assert!(poll_for(&sim, &mut qp, Duration::ZERO).is_empty());
    for (i, ns) in handles.iter().enumerate() {
        let expected = if i < TRACKED_NAMESPACES { Ok(()) } else { Err(STALE) };
        assert_eq!(read(&sim, &mut qp, ns), expected, "namespace {}", ns.id());
    }
    let late = ctrlr.namespace(count).unwrap();
    assert_eq!(read(&sim, &mut qp, &late), Ok(()));
}
