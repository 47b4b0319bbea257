//! Probing a PCI bus of simulated controllers (`SimBus`), and the remove
//! callback. The bare-metal kernel probes QEMU's PCI bus the same way, over
//! `hal-baremetal`'s bus.

mod common;

use common::{options, qpair};
use core::time::Duration;
use nvme_nostd::hal_traits::pci::PciAddress;
use nvme_nostd::hal_traits::HalErrorKind;
use nvme_nostd::spec::command::IoOpcode;
use nvme_nostd::spec::identify::IdentifyController;
use nvme_nostd::{probe, Controller, Error, PollLimit, TransportId};
use nvme_sim::{Fault, FaultRule, Sim, SimBus, SimConfig, SimHal};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

fn at(device: u8) -> PciAddress {
    PciAddress::new(0, 0, device, 0)
}

#[test]
fn probe_vetoes_adjusts_and_reports_each_outcome() {
    let (a, b, c) =
        (Sim::new(SimConfig::default()), Sim::new(SimConfig::default()), Sim::new(SimConfig::default()));
    let mut bus = SimBus::new();
    bus.add(at(4), (0x1b36, 0x0010), &a);
    bus.add(at(2), (0x1b36, 0x0010), &b);
    bus.add_unusable(at(3), (0x1b36, 0x0010));
    bus.add(at(5), (0x8086, 0x0953), &c);
    bus.add(at(6), (0x1b36, 0x0010), &a); // the same controller again: claimed
    let held = c.hal(); // another driver holds c
    let mut seen = Vec::new();
    let mut attached: Vec<Controller<SimHal>> = Vec::new();
    let mut failures = Vec::new();
    let n = probe(
        &mut bus,
        None,
        |found, options| {
            seen.push(found.trid.to_string());
            if found.function.address == at(2) {
                *options = options.with_io_queues(2);
            }
            found.function.device_id != 0x0953 || found.function.address != at(5)
        },
        |found, result| match result {
            Ok(ctrlr) => attached.push(ctrlr),
            Err(e) => failures.push((found.function.address, e)),
        },
    );
    assert_eq!(n, 2);
    assert_eq!(
        seen,
        ["00:02.0", "00:03.0", "00:04.0", "00:05.0", "00:06.0"]
            .map(|a| format!("trtype:PCIe traddr:0000:{a}")),
        "every function, in address order"
    );
    assert_eq!(attached[0].io_queues(), 2, "the adjusted options were granted");
    assert_eq!(attached[1].io_queues(), 8);
    let kinds: Vec<_> = failures
        .iter()
        .map(|(addr, e)| match e {
            Error::Hal(h) => (*addr, h.kind()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, [(at(3), HalErrorKind::Unusable), (at(6), HalErrorKind::Claimed)]);
    assert_eq!(c.stats().commands_fetched, 0, "the vetoed controller was left alone");
    drop(held);
}

#[test]
fn probe_one_transport_id() {
    let (a, b) = (Sim::new(SimConfig::default()), Sim::new(SimConfig::default()));
    let mut bus = SimBus::new();
    bus.add(at(2), (0x1b36, 0x0010), &a);
    bus.add(at(3), (0x1b36, 0x0010), &b);
    let only: TransportId = "trtype:pcie traddr:0000:00:03.0".parse().unwrap();
    let mut probed = 0;
    let mut attached = Vec::new();
    let n = probe(
        &mut bus,
        Some(&only),
        |_, _| {
            probed += 1;
            true
        },
        |_, r| attached.push(r.unwrap()),
    );
    assert_eq!((n, probed), (1, 1));
    assert_eq!(a.stats().commands_fetched, 0);
    assert!(b.stats().commands_fetched > 0);
}

static REMOVED: AtomicUsize = AtomicUsize::new(0);

fn on_remove(id: &IdentifyController) {
    assert_eq!(&id.sn[..7], b"SIM0001");
    REMOVED.fetch_add(1, Ordering::SeqCst);
}

/// The remove callback runs once, whoever notices first: a poll of
/// `check_removal`, an admin call, `process_admin_completions`, a queue pair.
#[test]
fn the_remove_callback_runs_once() {
    let sim = Sim::new(SimConfig::default());
    let options =
        options().with_remove_callback(Some(&on_remove)).with_io_timeout(Some(Duration::from_millis(5)));
    let ctrlr = Controller::new(sim.hal(), options).unwrap();
    assert!(!ctrlr.check_removal());
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp = qpair(&ctrlr);
    // Never completed: the queue pair's timeout scan finds the removal.
    sim.inject(FaultRule::once(Some(qp.qid()), Some(IoOpcode::READ.0), Fault::Drop));
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    sim.set_removed(true);
    let mut done = Vec::new();
    for _ in 0..100 {
        qp.poll(PollLimit::All, |_, c| done.push(c.result()));
        if !done.is_empty() {
            break;
        }
        sim.advance(Duration::from_millis(1));
    }
    assert_eq!(done, [Err(Error::DeviceRemoved)]);
    assert_eq!(REMOVED.load(Ordering::SeqCst), 1, "the queue pair noticed");
    assert!(ctrlr.check_removal());
    assert_eq!(ctrlr.process_admin_completions(usize::MAX, |_| {}), Err(Error::DeviceRemoved));
    assert_eq!(ctrlr.identify_namespace(1).err(), Some(Error::DeviceRemoved));
    assert_eq!(REMOVED.load(Ordering::SeqCst), 1, "once");
}

static PANICKED: AtomicUsize = AtomicUsize::new(0);

fn panicking_remove(_: &IdentifyController) {
    PANICKED.fetch_add(1, Ordering::SeqCst);
    panic!("remove callback");
}

/// A remove callback that panics: the driver stays usable (every call
/// reports the removal) and the callback is not run again.
#[test]
fn a_panicking_remove_callback() {
    let sim = Sim::new(SimConfig::default());
    let ctrlr = Controller::new(sim.hal(), options().with_remove_callback(Some(&panicking_remove))).unwrap();
    sim.set_removed(true);
    assert!(catch_unwind(AssertUnwindSafe(|| ctrlr.check_removal())).is_err());
    assert!(ctrlr.check_removal());
    assert_eq!(ctrlr.identify_namespace(1).err(), Some(Error::DeviceRemoved));
    assert_eq!(PANICKED.load(Ordering::SeqCst), 1);
    drop(ctrlr);
}
