//! Completion queue processing over arbitrary queue memory: the simulated
//! device scribbles the fuzz input over an I/O completion queue while
//! requests are in flight. Whatever the entries say (CIDs, phase tags, SQ
//! heads, statuses), the driver must not panic, must deliver each request at
//! most once, and, once time passes, exactly once (timeouts, abort, reset).
#![no_main]

use core::time::Duration;
use libfuzzer_sys::fuzz_target;
use nvme_nostd::{Controller, ControllerOptions, IoQueuePair, PollLimit, QpairOptions};
use nvme_sim::{Sim, SimConfig, SimHal};
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let Some((&k, bytes)) = data.split_first() else { return };
    // Time moves only when the target says so: the requests are still in the
    // device when their completion queue is scribbled over.
    let sim = Sim::new(SimConfig { memory_bytes: 1 << 20, auto_advance: false, ..SimConfig::default() });
    let options = ControllerOptions::default()
        .with_io_timeout(Some(Duration::from_millis(5)))
        .with_admin_timeout(Duration::from_millis(20));
    let Ok(ctrlr) = Controller::new(sim.hal(), options) else { return };
    let Ok(ns) = ctrlr.namespace(1) else { return };
    let qopts = QpairOptions::default().with_entries(16).with_max_transfer_bytes(16 << 10);
    let Ok(mut qp) = ctrlr.create_io_qpair::<Vec<u8>, u32, 8>(qopts) else { return };
    sim.set_latency(Duration::from_millis(1));
    let requests = (k % 8) as u32 + 1;
    for i in 0..requests {
        qp.read(&ns, i as u64, 1, vec![0; 512], i).map_err(|e| e.error).expect("submit");
    }
    sim.scribble_cq(qp.qid(), bytes);
    let mut seen: BTreeMap<u32, u32> = BTreeMap::new();
    let mut poll = |qp: &mut IoQueuePair<'_, SimHal, Vec<u8>, u32, 8>| {
        qp.poll(PollLimit::All, |_, c| *seen.entry(c.context).or_insert(0) += 1);
    };
    poll(&mut qp);
    for _ in 0..2_000 {
        if qp.in_flight() == 0 {
            break;
        }
        sim.advance(Duration::from_micros(100));
        poll(&mut qp);
    }
    assert!(seen.values().all(|&n| n == 1), "a request delivered twice: {seen:?}");
    assert_eq!(qp.in_flight(), 0, "requests never handed back");
    assert_eq!(seen.len() as u32, requests);
});
