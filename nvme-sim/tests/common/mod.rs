//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod trap;

use core::time::Duration;
use nvme_nostd::{
    Completion, Controller, ControllerOptions, IoQueuePair, Namespace, PollLimit, QpairOptions,
};
use nvme_sim::{Sim, SimConfig, SimHal};

/// A queue pair with `Vec<u8>` buffers (shared through the HAL's bounce pages)
/// and `u32` contexts.
pub type Qp<'c> = IoQueuePair<'c, SimHal, Vec<u8>, u32, 16>;
pub type Done = Completion<Vec<u8>, u32>;

pub const ADMIN_TIMEOUT: Duration = Duration::from_millis(50);

pub fn options() -> ControllerOptions {
    ControllerOptions::default().with_admin_timeout(ADMIN_TIMEOUT)
}

pub fn attach(sim: &Sim) -> Controller<SimHal> {
    Controller::new(sim.hal(), options()).expect("attach")
}

pub fn qpair(ctrlr: &Controller<SimHal>) -> Qp<'_> {
    ctrlr
        .create_io_qpair(QpairOptions::default().with_entries(32).with_max_transfer_bytes(64 << 10))
        .expect("create I/O queue pair")
}

/// A simulator with the default configuration, attached, with namespace 1.
pub fn setup(config: SimConfig) -> (Sim, Controller<SimHal>, Namespace) {
    let sim = Sim::new(config);
    let ctrlr = attach(&sim);
    let ns = ctrlr.namespace(1).expect("namespace 1");
    (sim, ctrlr, ns)
}

/// Polls `qp`, advancing virtual time 10 µs between polls, for `limit` of
/// virtual time or until nothing is in flight; returns what completed.
pub fn poll_for(sim: &Sim, qp: &mut Qp<'_>, limit: Duration) -> Vec<Done> {
    let mut done = Vec::new();
    let end = sim.now() + limit;
    loop {
        qp.poll(PollLimit::All, |_, c| done.push(c));
        if qp.in_flight() == 0 || sim.now() >= end {
            return done;
        }
        sim.advance(Duration::from_micros(10));
    }
}

/// A one-block pattern for `lba`.
pub fn pattern(lba: u64, bs: usize, salt: u8) -> Vec<u8> {
    (0..bs).map(|i| (i as u64 ^ lba.wrapping_mul(31) ^ salt as u64) as u8).collect()
}

/// Invariants after everything that used DMA memory is dropped.
pub fn assert_clean(sim: &Sim) {
    let s = sim.stats();
    assert_eq!(s.bad_frees, 0, "{s:?}");
    assert_eq!(s.bad_unshares, 0, "{s:?}");
    assert_eq!(s.released_in_use, 0, "memory released while the device named it: {s:?}");
    assert_eq!(s.live_dma_pages, 0, "{s:?}");
    assert_eq!(s.live_shares, 0, "{s:?}");
    assert_eq!(s.dma_faults, 0, "{s:?}");
    assert_eq!(s.open_syncs, 0, "every buffer synced for the device came back: {s:?}");
    assert_eq!(s.bad_syncs, 0, "{s:?}");
    assert_eq!(s.stale_shadow_doorbells, 0, "{s:?}");
}

/// What must hold whatever the driver does after a fault.
pub fn assert_no_bad_frees(sim: &Sim) {
    let s = sim.stats();
    assert_eq!(s.bad_frees, 0, "{s:?}");
    assert_eq!(s.bad_unshares, 0, "{s:?}");
    assert_eq!(s.released_in_use, 0, "memory released while the device named it: {s:?}");
}

/// A `Vec<u8>` of `len` bytes whose data starts on a 4-byte boundary, as PRP
/// entries require. The system allocator gives that anyway; Miri gives byte
/// alignment only, so try until one fits.
pub fn aligned_vec(len: usize, fill: u8) -> Vec<u8> {
    let mut rejected = Vec::new();
    loop {
        let v = vec![fill; len];
        if (v.as_ptr() as usize).is_multiple_of(4) {
            return v;
        }
        rejected.push(v);
    }
}
