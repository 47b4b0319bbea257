//! Keep Alive (NVMe 1.4 sections 5.16, 5.21.1.15 and 7.12) against the
//! simulated controller: QEMU 7.2's controller has KAS 0 (no keep alive),
//! so this runs on the simulator only, whose Keep Alive Timer makes the
//! controller fatal (CSTS.CFS) when it expires.

mod common;

use core::time::Duration;
use nvme_nostd::spec::command::AdminOpcode;
use nvme_nostd::spec::dwords::Select;
use nvme_nostd::spec::ids::Fid;
use nvme_nostd::{Argument, Controller, ControllerOptions, Error};
use nvme_sim::{Fault, FaultRule, Sim, SimConfig, SimHal};

fn attach(kas: u16, keep_alive: Option<Duration>) -> (Sim, Controller<SimHal>) {
    let sim = Sim::new(SimConfig { kas, ..SimConfig::default() });
    let options = ControllerOptions::default()
        .with_admin_timeout(Duration::from_millis(50))
        .with_keep_alive(keep_alive);
    let ctrlr = Controller::new(sim.hal(), options).expect("attach");
    (sim, ctrlr)
}

/// Calls `process_admin_completions` every `step` for `total`; returns the
/// errors it reported.
fn tick(sim: &Sim, ctrlr: &Controller<SimHal>, step: Duration, total: Duration) -> Vec<Error> {
    let mut errors = Vec::new();
    let end = sim.now() + total;
    while sim.now() < end {
        if let Err(e) = ctrlr.process_admin_completions(usize::MAX, |_| {}) {
            errors.push(e);
        }
        sim.advance(step);
    }
    errors
}

#[test]
fn keep_alive_keeps_the_controller_up() {
    let (sim, ctrlr) = attach(1, Some(Duration::from_secs(1)));
    assert_eq!(ctrlr.keep_alive_timeout(), Some(Duration::from_secs(1)));
    assert_eq!(ctrlr.keep_alive_timer(Select::Current), Ok(1000));
    let sent = sim.stats().admin_commands;
    assert!(tick(&sim, &ctrlr, Duration::from_millis(100), Duration::from_secs(10)).is_empty());
    assert_eq!(sim.stats().keep_alive_expired, 0);
    assert!(!ctrlr.csts().unwrap().cfs());
    let keep_alives = sim.stats().admin_commands - sent;
    assert!((19..=21).contains(&keep_alives), "one every 500 ms: {keep_alives}");
}

/// The same controller, not kept alive, fails when its timer expires; the
/// driver resets it on its next call, and the reset sets the timer again.
#[test]
fn without_keep_alive_the_controller_fails_and_is_reset() {
    let (sim, ctrlr) = attach(1, Some(Duration::from_secs(1)));
    sim.advance(Duration::from_millis(1100));
    assert!(ctrlr.csts().unwrap().cfs(), "the timer expired");
    assert_eq!(sim.stats().keep_alive_expired, 1);
    let resets = sim.stats().resets;
    assert_eq!(ctrlr.process_admin_completions(usize::MAX, |_| {}), Err(Error::ControllerFatal));
    assert_eq!(sim.stats().resets, resets + 1);
    assert!(!ctrlr.csts().unwrap().cfs());
    assert_eq!(ctrlr.keep_alive_timer(Select::Current), Ok(1000), "set again after the reset");
    assert!(tick(&sim, &ctrlr, Duration::from_millis(100), Duration::from_secs(5)).is_empty());
    assert_eq!(sim.stats().keep_alive_expired, 1);
}

/// KATO is rounded up to the KAS granularity.
#[test]
fn the_timeout_is_rounded_up_to_kas() {
    let (_sim, ctrlr) = attach(5, Some(Duration::from_millis(1200)));
    assert_eq!(ctrlr.keep_alive_timeout(), Some(Duration::from_millis(1500)));
    let (_sim, ctrlr) = attach(1, Some(Duration::from_micros(1)));
    assert_eq!(ctrlr.keep_alive_timeout(), Some(Duration::from_millis(100)), "at least one unit");
}

/// A controller without Keep Alive (KAS 0, as QEMU's): nothing is set or
/// sent, and the caller can tell.
#[test]
fn kas_zero_means_no_keep_alive() {
    let (sim, ctrlr) = attach(0, Some(Duration::from_secs(1)));
    assert_eq!(ctrlr.keep_alive_timeout(), None);
    let sent = sim.stats().admin_commands;
    assert!(tick(&sim, &ctrlr, Duration::from_millis(100), Duration::from_secs(3)).is_empty());
    assert_eq!(sim.stats().admin_commands, sent);
    // The timer is the driver's: a caller may not change it under it.
    assert_eq!(
        ctrlr.set_features(Fid::KEEP_ALIVE_TIMER, 0, 100, false),
        Err(Error::InvalidArgument(Argument::DriverOwnedFeature))
    );
}

/// A Keep Alive the controller never completes: a timeout like any admin
/// command's, answered with a reset, and keep alive goes on afterwards.
#[test]
fn a_lost_keep_alive_resets_the_controller() {
    let (sim, ctrlr) = attach(1, Some(Duration::from_secs(1)));
    sim.inject(FaultRule::once(Some(0), Some(AdminOpcode::KEEP_ALIVE.0), Fault::Drop));
    let resets = sim.stats().resets;
    let errors = tick(&sim, &ctrlr, Duration::from_millis(10), Duration::from_millis(700));
    assert_eq!(errors, [Error::Timeout(nvme_nostd::Wait::AdminCommand)], "once");
    assert_eq!(sim.stats().resets, resets + 1);
    assert!(tick(&sim, &ctrlr, Duration::from_millis(100), Duration::from_secs(5)).is_empty());
    assert_eq!(sim.stats().keep_alive_expired, 0);
}

/// Keep alive and asynchronous events together, with queue pair aborts
/// sharing the admin queue's slots: nothing starves.
#[test]
fn keep_alive_with_events() {
    let (sim, ctrlr) = attach(1, Some(Duration::from_millis(400)));
    ctrlr
        .enable_async_events(nvme_nostd::spec::dwords::AsyncEventConfig::new().with_smart_warnings(2))
        .unwrap();
    let mut events = 0;
    for i in 0..50u16 {
        if i % 10 == 0 {
            ctrlr.set_temperature_threshold(300 + i / 10, 0, false, false).unwrap();
        }
        ctrlr.process_admin_completions(usize::MAX, |_| events += 1).unwrap();
        sim.advance(Duration::from_millis(50));
    }
    assert_eq!(events, 5);
    assert_eq!(sim.stats().keep_alive_expired, 0);
    assert_eq!(ctrlr.async_events_outstanding(), 4);
}
