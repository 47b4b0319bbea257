//! More requests than the submission queue holds (`N` above entries - 1):
//! the extra ones wait in order, in a fixed-capacity queue, and `poll`
//! submits them as room comes; they never time out while waiting, a reset
//! or a removal ends them exactly once, and a removal hands their buffers
//! back (they never reached the device). QEMU's controller takes queues as
//! small as two entries too; the conformance suite's request pool check
//! runs with the default sizes, so this runs on the simulator.

mod common;

use common::{assert_clean, options, pattern, setup};
use core::time::Duration;
use nvme_nostd::{Controller, Error, IoQueuePair, PollLimit, QpairOptions};
use nvme_sim::{Sim, SimConfig, SimHal};

type Small<'c> = IoQueuePair<'c, SimHal, Vec<u8>, u32, 16>;

/// Four entries: three commands on the device at a time.
fn small(ctrlr: &Controller<SimHal>) -> Small<'_> {
    ctrlr.create_io_qpair(QpairOptions::default().with_entries(4)).expect("queue pair")
}

/// A delivered request: its context, result and buffer (if handed back).
type Delivered = (u32, Result<(), Error>, Option<Vec<u8>>);

fn drain(sim: &Sim, qp: &mut Small<'_>) -> Vec<Delivered> {
    let mut done = Vec::new();
    for _ in 0..10_000 {
        qp.poll(PollLimit::All, |_, c| done.push((c.context, c.result(), c.buffer)));
        if qp.in_flight() == 0 {
            break;
        }
        sim.advance(Duration::from_micros(10));
    }
    done
}

#[test]
fn sixteen_requests_through_three_entries() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = small(&ctrlr);
    for i in 0..16u32 {
        qp.write(&ns, u64::from(i), 1, pattern(u64::from(i), 512, 7), i).map_err(|e| e.error).unwrap();
    }
    assert_eq!(qp.stats().waited, 13);
    let e = qp.write(&ns, 0, 1, vec![0; 512], 99).map_err(|e| e.error).unwrap_err();
    assert_eq!(e, Error::QueueFull, "the 17th: every slot is taken");
    let done = drain(&sim, &mut qp);
    let order: Vec<u32> = done.iter().map(|d| d.0).collect();
    assert_eq!(order, (0..16).collect::<Vec<_>>(), "submitted in order, so completed in order");
    assert!(done.iter().all(|d| d.1.is_ok()));
    for i in 0..16u64 {
        assert_eq!(sim.read_blocks(1, i, 1), pattern(i, 512, 7));
    }
    assert_eq!(qp.stats().submitted, 16);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// A slow device (10 ms a command) and a 15 ms I/O timeout: sixteen
/// requests through three entries take about 60 ms, yet none times out,
/// because a waiting request is not on the device.
#[test]
fn waiting_is_not_late() {
    let sim = Sim::new(SimConfig { latency: Duration::from_millis(10), ..SimConfig::default() });
    let ctrlr =
        Controller::new(sim.hal(), options().with_io_timeout(Some(Duration::from_millis(15)))).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp = small(&ctrlr);
    for i in 0..16u32 {
        qp.read(&ns, u64::from(i), 1, vec![0; 512], i).map_err(|e| e.error).unwrap();
    }
    let start = sim.now();
    let done = drain(&sim, &mut qp);
    assert!(sim.now() - start >= Duration::from_millis(50), "{:?}", sim.now() - start);
    assert_eq!(done.len(), 16);
    assert!(done.iter().all(|d| d.1.is_ok()), "{:?}", done.iter().map(|d| d.1).collect::<Vec<_>>());
    assert_eq!(qp.stats().timeouts, 0);
}

/// A reset with requests waiting: each ends exactly once, with its buffer.
#[test]
fn a_reset_ends_waiting_requests_once() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = small(&ctrlr);
    for i in 0..16u32 {
        qp.read(&ns, u64::from(i), 1, vec![0; 512], i).map_err(|e| e.error).unwrap();
    }
    ctrlr.reset().unwrap();
    let done = drain(&sim, &mut qp);
    let mut contexts: Vec<u32> = done.iter().map(|d| d.0).collect();
    contexts.sort();
    assert_eq!(contexts, (0..16).collect::<Vec<_>>(), "each once");
    assert!(done.iter().all(|d| d.2.as_ref().is_some_and(|b| b.len() == 512)), "buffers back");
    assert!(done.iter().filter(|d| d.1 == Err(Error::Reset)).count() >= 13);
    // And the queue pair works again, overflow included.
    for i in 0..16u32 {
        qp.read(&ns, u64::from(i), 1, vec![0; 512], i).map_err(|e| e.error).unwrap();
    }
    assert!(drain(&sim, &mut qp).iter().all(|d| d.1.is_ok()));
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// A removal: the requests on the device are leaked (it may still write
/// them), the waiting ones come back with their buffers.
#[test]
fn a_removal_hands_back_what_never_reached_the_device() {
    let sim = Sim::new(SimConfig { latency: Duration::from_millis(1), ..SimConfig::default() });
    let ctrlr =
        Controller::new(sim.hal(), options().with_io_timeout(Some(Duration::from_millis(5)))).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp = small(&ctrlr);
    for i in 0..16u32 {
        qp.read(&ns, u64::from(i), 1, vec![0; 512], i).map_err(|e| e.error).unwrap();
    }
    sim.set_removed(true);
    let done = drain(&sim, &mut qp);
    let mut contexts: Vec<u32> = done.iter().map(|d| d.0).collect();
    contexts.sort();
    assert_eq!(contexts, (0..16).collect::<Vec<_>>(), "each once");
    // Some completed before the removal; of the rest, the three on the
    // device are leaked and the ones waiting come back.
    let leaked: Vec<_> = done.iter().filter(|d| d.2.is_none()).collect();
    assert_eq!(leaked.len(), 3, "{:?}", done.iter().map(|d| (d.0, d.1, d.2.is_some())).collect::<Vec<_>>());
    assert!(leaked.iter().all(|d| d.1 == Err(Error::DeviceRemoved)));
    let returned = done.iter().filter(|d| d.1 == Err(Error::DeviceRemoved) && d.2.is_some()).count();
    assert!(returned >= 10, "waiting requests hand their buffers back: {returned}");
}

/// A request submitted from inside `poll` (the callback's `Resubmit`), when
/// completions just made room, still queues behind the requests already
/// waiting: first come, first submitted.
#[test]
fn resubmissions_queue_behind_waiting_requests() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = small(&ctrlr);
    for i in 0..15u32 {
        qp.read(&ns, u64::from(i), 1, vec![0; 512], i).map_err(|e| e.error).unwrap();
    }
    let mut order = Vec::new();
    let mut resubmitted = false;
    for _ in 0..10_000 {
        qp.poll(PollLimit::All, |again, c| {
            order.push(c.context);
            if !resubmitted {
                resubmitted = true;
                again.read(&ns, 0, 1, vec![0; 512], 100).map_err(|e| e.error).unwrap();
            }
        });
        if qp.in_flight() == 0 {
            break;
        }
        sim.advance(Duration::from_micros(10));
    }
    assert_eq!(order.len(), 16);
    assert_eq!(order.last(), Some(&100), "behind the twelve that waited: {order:?}");
}
