//! The host memory buffer ([`ControllerOptions::host_memory_buffer`]).
//! QEMU's controller asks for none (HMPRE 0; the conformance suite checks
//! that none is given and the feature is refused unsent there), so the
//! simulator takes the rest: a controller that asks, uses the buffer with
//! every I/O command and checks what it left there, and flags memory freed
//! while it is enabled.

mod common;

use common::{assert_clean, options, pattern, poll_for, Qp};
use core::time::Duration;
use nvme_nostd::hal_traits::faulty::FaultyHal;
use nvme_nostd::spec::command::AdminOpcode;
use nvme_nostd::spec::ids::Fid;
use nvme_nostd::{Controller, Error, Feature, HmbInfo, QpairOptions};
use nvme_sim::{Fault, FaultRule, Sim, SimConfig, SimHal};

/// A controller that would like 1 MiB, needs at least 256 KiB, in pieces
/// of at least 64 KiB, at most 8 of them.
fn asking() -> SimConfig {
    SimConfig { hmpre: 256, hmmin: 64, hmminds: 16, hmmaxd: 8, ..SimConfig::default() }
}

fn io(sim: &Sim, ctrlr: &Controller<SimHal>, rounds: u64) {
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: Qp<'_> = ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    for lba in 0..rounds {
        qp.write(&ns, lba, 1, pattern(lba, 512, 3), 0).map_err(|e| e.error).unwrap();
        qp.read(&ns, lba, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
        let done = poll_for(sim, &mut qp, Duration::from_millis(10));
        assert_eq!(done.len(), 2);
        assert!(done.iter().all(|d| d.result().is_ok()));
    }
}

fn assert_buffer_untouched(sim: &Sim) {
    let s = sim.stats();
    assert_eq!((s.hmb_corrupted, s.hmb_lost, s.released_in_use), (0, 0, 0), "{s:?}");
}

#[test]
fn the_buffer_the_controller_asks_for_is_handed_over_and_back() {
    let sim = Sim::new(asking());
    let ctrlr = Controller::new(sim.hal(), options().with_host_memory_buffer(4 << 20)).unwrap();
    assert_eq!(ctrlr.host_memory_buffer(), Some(HmbInfo { bytes: 1 << 20, pieces: 1 }), "HMPRE, one piece");
    let (dw0, attrs) = ctrlr.host_memory_buffer_attributes().unwrap();
    assert!(dw0.ehm());
    assert_eq!((attrs.hsize, attrs.hmdlec), (256, 1));
    io(&sim, &ctrlr, 20);
    assert!(sim.stats().hmb_touches >= 40);
    assert_buffer_untouched(&sim);
    ctrlr.detach().unwrap();
    assert_clean(&sim);
    assert_buffer_untouched(&sim);
}

#[test]
fn the_options_limit_bounds_it_and_below_hmmin_there_is_none() {
    let sim = Sim::new(asking());
    let ctrlr = Controller::new(sim.hal(), options().with_host_memory_buffer(512 << 10)).unwrap();
    assert_eq!(ctrlr.host_memory_buffer(), Some(HmbInfo { bytes: 512 << 10, pieces: 1 }));
    drop(ctrlr);

    let sim = Sim::new(asking());
    let ctrlr = Controller::new(sim.hal(), options().with_host_memory_buffer(128 << 10)).unwrap();
    assert_eq!(ctrlr.host_memory_buffer(), None, "128 KiB is below HMMIN's 256 KiB");
    assert_eq!(sim.stats().hmb_enables, 0);
    drop(ctrlr);
    assert_clean(&sim);
}

/// QEMU's case: a controller that asks for none gets none, and its
/// attributes are refused unsent. Without the option, a controller that
/// asks gets none either.
#[test]
fn no_buffer_where_none_is_asked_for_or_allowed() {
    let sim = Sim::new(SimConfig::default());
    let ctrlr = Controller::new(sim.hal(), options().with_host_memory_buffer(4 << 20)).unwrap();
    assert_eq!(ctrlr.host_memory_buffer(), None);
    let sent = sim.stats().admin_commands;
    assert_eq!(ctrlr.host_memory_buffer_attributes().err(), Some(Error::Unsupported(Feature::FeatureId)));
    assert_eq!(sim.stats().admin_commands, sent);
    drop(ctrlr);
    let sim = Sim::new(asking());
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    assert_eq!(ctrlr.host_memory_buffer(), None);
    assert!(!ctrlr.host_memory_buffer_attributes().unwrap().0.ehm());
    assert_eq!(sim.stats().hmb_enables, 0);
}

/// When the HAL has no 1 MiB in one piece, the pieces halve until they
/// fit (never below HMMINDS, never more than HMMAXD of them).
#[test]
fn pieces_halve_when_contiguous_memory_is_short() {
    let sim = Sim::new(asking());
    let hal = FaultyHal::new(sim.hal());
    // Allocations after the admin queue's three pages: the descriptor list
    // page works, the 256-page and the first 128-page piece fail.
    hal.fail_allocs(4, 2);
    let ctrlr = Controller::new(hal, options().with_host_memory_buffer(4 << 20)).unwrap();
    assert_eq!(ctrlr.host_memory_buffer(), Some(HmbInfo { bytes: 1 << 20, pieces: 4 }));
    assert_eq!(ctrlr.host_memory_buffer_attributes().unwrap().1.hmdlec, 4);
    drop(ctrlr);
    assert_clean(&sim);

    // No piece of HMMINDS or more, ever: no buffer, and nothing leaked.
    let sim = Sim::new(asking());
    let hal = FaultyHal::new(sim.hal());
    hal.fail_allocs(4, 1000);
    let ctrlr = Controller::new(hal, options().with_host_memory_buffer(4 << 20)).unwrap();
    assert_eq!(ctrlr.host_memory_buffer(), None);
    assert_eq!(ctrlr.hal().live_pages(), 3, "the admin queue's pages only");
    drop(ctrlr);
    assert_clean(&sim);
}

/// Every reset disables the buffer; the driver gives the same one back
/// with Memory Return, and the controller finds what it left there.
#[test]
fn resets_give_the_same_buffer_back() {
    let sim = Sim::new(asking());
    let ctrlr = Controller::new(sim.hal(), options().with_host_memory_buffer(4 << 20)).unwrap();
    for _ in 0..3 {
        io(&sim, &ctrlr, 5);
        ctrlr.reset().unwrap();
        assert!(ctrlr.host_memory_buffer_attributes().unwrap().0.ehm());
    }
    assert_eq!(sim.stats().hmb_enables, 4);
    io(&sim, &ctrlr, 5);
    assert_buffer_untouched(&sim);
    drop(ctrlr);
    assert_clean(&sim);
}

/// A controller that refuses the buffer (at attach, or after a reset) gets
/// none, and its memory is freed then, not later.
#[test]
fn a_refused_buffer_is_freed() {
    // At attach the Set Features are Number of Queues, then the Host Memory
    // Buffer: the second is refused.
    let refuse_second = || FaultRule {
        skip: 1,
        ..FaultRule::once(Some(0), Some(AdminOpcode::SET_FEATURES.0), status_fault())
    };
    let sim = Sim::new(asking());
    sim.inject(refuse_second());
    let ctrlr = Controller::new(sim.hal(), options().with_host_memory_buffer(4 << 20)).unwrap();
    assert_eq!(ctrlr.host_memory_buffer(), None, "refused at attach");
    assert_eq!(sim.stats().live_dma_pages, 3, "only the admin queue's pages: {:?}", sim.stats());
    drop(ctrlr);
    assert_clean(&sim);

    // After a reset the same order: Number of Queues, then the buffer back.
    let sim = Sim::new(asking());
    let ctrlr = Controller::new(sim.hal(), options().with_host_memory_buffer(4 << 20)).unwrap();
    assert!(ctrlr.host_memory_buffer().is_some());
    sim.inject(refuse_second());
    ctrlr.reset().unwrap();
    assert_eq!(ctrlr.host_memory_buffer(), None, "refused after the reset");
    assert_eq!(sim.stats().live_dma_pages, 3, "{:?}", sim.stats());
    io(&sim, &ctrlr, 3);
    assert_buffer_untouched(&sim);
}

fn status_fault() -> Fault {
    // Invalid Field, DNR.
    Fault::Status { sct: 0, sc: 0x02, dnr: true }
}

/// A device that is removed may still write the buffer: it is leaked,
/// never freed.
#[test]
fn a_removed_device_keeps_its_buffer() {
    let sim = Sim::new(asking());
    let ctrlr = Controller::new(sim.hal(), options().with_host_memory_buffer(4 << 20)).unwrap();
    io(&sim, &ctrlr, 3);
    sim.set_removed(true);
    assert_eq!(ctrlr.detach(), Err(Error::DeviceRemoved));
    let s = sim.stats();
    assert_eq!(s.released_in_use, 0, "{s:?}");
    assert!(s.live_dma_pages >= 256, "the buffer is leaked: {s:?}");
}

/// The caller cannot hand the controller a buffer behind the driver's back.
#[test]
fn the_feature_is_the_drivers() {
    let sim = Sim::new(asking());
    let ctrlr = Controller::new(sim.hal(), options().with_host_memory_buffer(4 << 20)).unwrap();
    assert_eq!(
        ctrlr.set_features(Fid::HOST_MEMORY_BUFFER, 0, 0, false),
        Err(Error::InvalidArgument(nvme_nostd::Argument::DriverOwnedFeature))
    );
    assert!(ctrlr.host_memory_buffer_attributes().unwrap().0.ehm(), "still enabled");
}
