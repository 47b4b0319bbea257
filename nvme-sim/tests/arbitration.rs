//! Arbitration mechanisms (CC.AMS): weighted round robin with urgent
//! priority class where the controller offers it, a clear error where it
//! does not. QEMU 7.2's controller has CAP.AMS 0 (round robin only), so the
//! weighted path runs on the simulator only, whose arbiter fetches by class
//! and weight and executes one command at a time, so that priorities show in
//! the order of completion.

mod common;

use core::time::Duration;
use nvme_nostd::spec::dwords::Arbitration;
use nvme_nostd::{
    ArbitrationMechanism, Controller, ControllerOptions, Error, Feature, IoQueuePair, PollLimit, QpairOptions,
};
use nvme_sim::{Sim, SimConfig, SimHal};

type Qp<'c> = IoQueuePair<'c, SimHal, Vec<u8>, u32, 64>;

fn wrr_sim() -> Sim {
    // Time moves only when the test says, so that both queues are rung
    // before the arbiter looks.
    Sim::new(SimConfig { wrr: true, auto_advance: false, now_tick: Duration::ZERO, ..SimConfig::default() })
}

fn attach(sim: &Sim, arbitration: ArbitrationMechanism) -> Controller<SimHal> {
    let options =
        ControllerOptions::default().with_admin_timeout(Duration::from_secs(1)).with_arbitration(arbitration);
    Controller::new(sim.hal(), options).expect("attach")
}

fn qpair(ctrlr: &Controller<SimHal>, priority: u8) -> Qp<'_> {
    ctrlr
        .create_io_qpair(QpairOptions::default().with_entries(128).with_priority(priority))
        .expect("queue pair")
}

/// 32 reads on each of two queue pairs, the low one rung first; returns,
/// for each completion in order, whether it was the high pair's.
fn race(sim: &Sim, ctrlr: &Controller<SimHal>, high: u8, low: u8) -> Vec<bool> {
    let ns = ctrlr.namespace(1).unwrap();
    let (mut lo, mut hi) = (qpair(ctrlr, low), qpair(ctrlr, high));
    for i in 0..32u32 {
        lo.read(&ns, u64::from(i), 1, vec![0; 512], i).map_err(|e| e.error).unwrap();
    }
    for i in 0..32u32 {
        hi.read(&ns, u64::from(i), 1, vec![0; 512], i).map_err(|e| e.error).unwrap();
    }
    let mut order = Vec::new();
    for _ in 0..10_000 {
        // One command takes 10 µs: at most one completes per step.
        sim.advance(Duration::from_micros(10));
        hi.poll(PollLimit::All, |_, c| {
            assert!(c.result().is_ok());
            order.push(true)
        });
        lo.poll(PollLimit::All, |_, c| {
            assert!(c.result().is_ok());
            order.push(false)
        });
        if order.len() == 64 {
            break;
        }
    }
    order
}

/// How many of the low pair's completed before the high pair's last one.
fn low_before_last_high(order: &[bool]) -> usize {
    let last_high = order.iter().rposition(|&h| h).unwrap();
    order[..last_high].iter().filter(|&&h| !h).count()
}

#[test]
fn weighted_round_robin_favours_the_high_class() {
    let sim = wrr_sim();
    let ctrlr = attach(&sim, ArbitrationMechanism::WeightedRoundRobin);
    assert_eq!(ctrlr.arbitration_mechanism(), ArbitrationMechanism::WeightedRoundRobin);
    // High weight 8, low weight 1.
    ctrlr.set_arbitration(Arbitration::new().with_high_weight(7).with_low_weight(0), false).unwrap();
    let order = race(&sim, &ctrlr, 1, 3);
    assert_eq!(order.len(), 64);
    // Rounds of eight high and one low: the high pair is done after four.
    let low = low_before_last_high(&order);
    assert!(low <= 4, "{low} low-priority completions before the last high one: {order:?}");
}

#[test]
fn urgent_goes_first() {
    let sim = wrr_sim();
    let ctrlr = attach(&sim, ArbitrationMechanism::WeightedRoundRobin);
    let order = race(&sim, &ctrlr, 0, 1);
    assert_eq!(low_before_last_high(&order), 0, "every urgent command first: {order:?}");
}

/// The control: the same race between two queues of one class alternates.
#[test]
fn one_class_shares_equally() {
    let sim = wrr_sim();
    let ctrlr = attach(&sim, ArbitrationMechanism::WeightedRoundRobin);
    let order = race(&sim, &ctrlr, 2, 2);
    let low = low_before_last_high(&order);
    assert!(low >= 30, "equal weights interleave: {low} {order:?}");
}

/// Asking a controller without weighted round robin (QEMU's, the default
/// simulator) is refused before the controller is touched.
#[test]
fn refused_where_cap_ams_lacks_it() {
    let sim = Sim::new(SimConfig::default());
    let e = Controller::new(
        sim.hal(),
        ControllerOptions::default().with_arbitration(ArbitrationMechanism::WeightedRoundRobin),
    )
    .err();
    assert_eq!(e, Some(Error::Unsupported(Feature::WeightedRoundRobin)));
    assert_eq!(sim.stats().resets, 0, "not touched");
    assert_eq!(sim.stats().commands_fetched, 0);
    let ctrlr = Controller::new(sim.hal(), ControllerOptions::default()).expect("round robin works");
    assert_eq!(ctrlr.arbitration_mechanism(), ArbitrationMechanism::RoundRobin);
}
