//! Findings of an adversarial review of the self-healing recovery
//! (a0b064b..5413139), one test each. Each failed on the reviewed code and
//! passes since the fix: a brief all-ones CSTS read no longer passes for
//! "never sent" (a live ring was freed); a Set Features of ACRE that does not
//! come back fails the reset (a reset storm without end); an Abort past its
//! deadline whose owner is not polled is an admin timeout for whoever needs
//! its slot (other pairs' timeouts starved); a reset by hand is counted
//! before its epoch moves (a pair that gave up could miss it).
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod common;

use common::{assert_no_bad_frees, Qp};
use core::cell::Cell;
use core::ptr::NonNull;
use core::time::Duration;
use hal_traits::{Direction, DmaRegion, Hal, HalError, SegmentSink};
use nvme_nostd::spec::command::AdminOpcode;
use nvme_nostd::{Controller, ControllerOptions, PollLimit, QpairOptions};
use nvme_sim::{Fault, FaultRule, Sim, SimConfig};

const CSTS: usize = 0x1c;

/// Forwards to the inner HAL; CSTS reads whose index (counted from `arm`)
/// is in the armed set read all ones, as in a brief link flap.
struct Glitch<H> {
    inner: H,
    reads: Cell<u32>,
    glitch: Cell<&'static [u32]>,
}

impl<H> Glitch<H> {
    fn new(inner: H) -> Self {
        Glitch { inner, reads: Cell::new(0), glitch: Cell::new(&[]) }
    }
    fn arm(&self, which: &'static [u32]) {
        self.reads.set(0);
        self.glitch.set(which);
    }
}

// SAFETY: forwards every call unchanged, except that some CSTS reads return
// all ones, which a real device may do at any time.
unsafe impl<H: Hal> Hal for Glitch<H> {
    type Mapping = H::Mapping;
    const DMA_ALIGNMENT: usize = H::DMA_ALIGNMENT;
    fn read32(&self, offset: usize) -> u32 {
        let v = self.inner.read32(offset);
        if offset == CSTS && !self.glitch.get().is_empty() {
            let n = self.reads.get() + 1;
            self.reads.set(n);
            if self.glitch.get().contains(&n) {
                return u32::MAX;
            }
        }
        v
    }
    unsafe fn write32(&self, offset: usize, value: u32) {
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        unsafe { self.inner.write32(offset, value) }
    }
    fn dma_alloc(&self, pages: usize) -> Result<DmaRegion, HalError> {
        self.inner.dma_alloc(pages)
    }
    unsafe fn dma_free(&self, region: DmaRegion) {
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        unsafe { self.inner.dma_free(region) }
    }
    fn translate(&self, buffer: NonNull<[u8]>, sink: &mut dyn SegmentSink) -> bool {
        self.inner.translate(buffer, sink)
    }
    unsafe fn share(
        &self,
        buffer: NonNull<[u8]>,
        direction: Direction,
        sink: &mut dyn SegmentSink,
    ) -> Result<H::Mapping, HalError> {
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        unsafe { self.inner.share(buffer, direction, sink) }
    }
    unsafe fn unshare(&self, buffer: NonNull<[u8]>, direction: Direction, mapping: H::Mapping) {
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        unsafe { self.inner.unshare(buffer, direction, mapping) }
    }
    unsafe fn sync_for_device(&self, buffer: NonNull<[u8]>, direction: Direction) {
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        unsafe { self.inner.sync_for_device(buffer, direction) }
    }
    unsafe fn sync_for_cpu(&self, buffer: NonNull<[u8]>, direction: Direction) {
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        unsafe { self.inner.sync_for_cpu(buffer, direction) }
    }
    fn barrier_before_doorbell(&self) {
        self.inner.barrier_before_doorbell()
    }
    fn barrier_after_phase(&self) {
        self.inner.barrier_after_phase()
    }
    fn ticks(&self) -> u64 {
        self.inner.ticks()
    }
    fn ticks_per_second(&self) -> u64 {
        self.inner.ticks_per_second()
    }
    fn delay(&self, d: Duration) {
        self.inner.delay(d)
    }
}

/// Finding 1 (unsound). `admin_exec_epoch` turns a transient all-ones CSTS
/// read *after the command was submitted* into `ControllerFailed` (when the
/// reset it then tries fails), and `not_created` reads `ControllerFailed` as
/// "never sent": `create_queues` frees the CQ ring the device created.
///
/// Create I/O CQ executes but its completion is not visible yet (WrongPhase
/// stands for "not posted yet"); the 1st CSTS read while waiting reads all
/// ones; confirm_removed's 3 reads are fine; the reset's first CSTS read
/// (before CC.EN is touched) reads all ones again, so the reset fails with
/// the controller, and its queue, untouched.
#[test]
fn transient_all_ones_during_create_cq_frees_a_live_cq_ring() {
    let sim = Sim::new(SimConfig::default());
    let options = ControllerOptions::default().with_admin_timeout(Duration::from_millis(50));
    let ctrlr = Controller::new(Glitch::new(sim.hal()), options).expect("attach");
    sim.inject(FaultRule::once(Some(0), Some(AdminOpcode::CREATE_IO_CQ.0), Fault::WrongPhase));
    ctrlr.hal().arm(&[1, 3]);
    let r = ctrlr.create_io_qpair::<Vec<u8>, u32, 16>(
        QpairOptions::default().with_entries(32).with_max_transfer_bytes(64 << 10),
    );
    let e = r.err().expect("creation fails");
    eprintln!("create_io_qpair: {e:?}; {:?}", sim.stats());
    assert_no_bad_frees(&sim);
}

/// Finding 2 (reset storm, never terminal). A reset whose ACRE Set Features
/// (Host Behavior Support) times out returns Ok (reset_failures = 0, the
/// quarantine released) but leaves the admin queue failed. Every later admin
/// call then resets again at once (heal: reset_failures 0 < attempts, no
/// backoff pending), and a queue pair's re-creation fails with
/// `ControllerFailed` that `heal_if_due` never counts (`gave_up()` is false):
/// the pair resets the controller every `recovery_backoff`, forever.
#[test]
fn acre_timeout_in_reset_storms_forever() {
    let sim = Sim::new(SimConfig { crdt: [1, 0, 0], ..SimConfig::default() });
    let options = ControllerOptions::default()
        .with_admin_timeout(Duration::from_millis(5))
        .with_io_timeout(Some(Duration::from_millis(20)))
        .with_recovery(4, Duration::from_millis(1));
    let ctrlr = Controller::new(sim.hal(), options).expect("attach");
    assert!(sim.acre());
    let mut qp: Qp<'_> = ctrlr
        .create_io_qpair(QpairOptions::default().with_entries(32).with_max_transfer_bytes(64 << 10))
        .expect("queue pair");
    // Rules count commands fetched after they are injected. Every reset
    // sends NoQ (1st, 3rd, ...) then HBS (2nd, 4th, ...): drop every HBS.
    for k in 0..200u64 {
        sim.inject(FaultRule {
            skip: 1 + 2 * k,
            ..FaultRule::once(Some(0), Some(AdminOpcode::SET_FEATURES.0), Fault::Drop)
        });
    }
    // The Set Features of ACRE does not come back: the reset failed (it used
    // to report success and leave the admin queue failed).
    assert_eq!(ctrlr.reset(), Err(nvme_nostd::Error::Timeout(nvme_nostd::Wait::AdminCommand)));
    let before = sim.stats().resets;
    let end = sim.now() + Duration::from_secs(2);
    while sim.now() < end {
        qp.poll(PollLimit::All, |_, _| {});
        sim.advance(Duration::from_millis(1));
    }
    let resets = sim.stats().resets - before;
    assert!(resets <= 8, "{resets} controller resets in 2 s, failure {:?}", qp.failure());
}

/// Finding 3 (hang). Abort slots are shared by all queue pairs, and an
/// asynchronous Abort's deadline is only ever checked by its owner
/// (`async_result`). When one pair holds the ACL+1 slots with Aborts the
/// device never answers and is not polled, every other pair's timed-out
/// request gets `Ok(None)` from `abort_async` forever: `check_timeouts`
/// never escalates to a reset, and the request is never completed.
#[test]
fn aborts_held_by_an_idle_pair_starve_another_pairs_timeouts_forever() {
    let sim = Sim::new(SimConfig::default());
    let options = ControllerOptions::default()
        .with_admin_timeout(Duration::from_millis(50))
        .with_io_timeout(Some(Duration::from_millis(20)));
    let ctrlr = Controller::new(sim.hal(), options).expect("attach");
    let ns = ctrlr.namespace(1).expect("ns");
    let qo = QpairOptions::default().with_entries(32).with_max_transfer_bytes(64 << 10);
    let mut a: Qp<'_> = ctrlr.create_io_qpair(qo).expect("a");
    let mut b: Qp<'_> = ctrlr.create_io_qpair(qo).expect("b");
    // The device never answers an Abort, and never completes these reads.
    sim.inject(FaultRule {
        count: u64::MAX,
        ..FaultRule::once(Some(0), Some(AdminOpcode::ABORT.0), Fault::Drop)
    });
    sim.inject(FaultRule { count: 4, ..FaultRule::once(Some(a.qid()), None, Fault::Drop) });
    for i in 0..4 {
        a.read(&ns, i, 1, vec![0; 512], i as u32).map_err(|e| e.error).unwrap();
    }
    // A times out and sends its four Aborts (ACL 3), then is not polled again
    // (its thread is busy elsewhere, blocked, or the pair was forgotten).
    let end = sim.now() + Duration::from_millis(40);
    while sim.now() < end {
        a.poll(PollLimit::All, |_, _| {});
        sim.advance(Duration::from_millis(1));
    }
    sim.inject(FaultRule::once(Some(b.qid()), None, Fault::Drop));
    b.read(&ns, 9, 1, vec![0; 512], 9).map_err(|e| e.error).unwrap();
    let mut done = None;
    let end = sim.now() + Duration::from_secs(5);
    while sim.now() < end && done.is_none() {
        b.poll(PollLimit::All, |_, c| done = Some(c.result()));
        sim.advance(Duration::from_millis(1));
    }
    eprintln!("b: {done:?}, stats {:?}", b.stats());
    assert!(done.is_some(), "B's timed-out read never completed in 5 s (250 timeouts)");
    drop((a, b));
}

/// Finding 4 (race: a reset by hand does not heal a pair that gave up).
/// `reset()` moves the epoch inside `reset_locked` (right after the
/// disable) but bumps `resets_by_hand` only after the whole reset returned.
/// A pair that gave up and runs `catch_up` in between adopts the new epoch,
/// sees `resets_by_hand` unchanged and stays `Gone`; its next `catch_up`
/// sees no epoch move, so it stays `Gone` for good although "Controller::reset
/// then heals" (README).
#[test]
fn reset_by_hand_racing_a_poll_leaves_a_given_up_pair_gone() {
    let sim = Sim::new(SimConfig::default());
    let options = ControllerOptions::default()
        .with_admin_timeout(Duration::from_millis(50))
        .with_io_timeout(Some(Duration::from_millis(20)))
        .with_recovery(4, Duration::from_millis(1));
    let ctrlr = Controller::new(sim.hal(), options).expect("attach");
    let mut qp: Qp<'_> = ctrlr
        .create_io_qpair(QpairOptions::default().with_entries(32).with_max_transfer_bytes(64 << 10))
        .expect("queue pair");
    let refused = Fault::Status { sct: 0, sc: 0x82, dnr: true };
    for round in 0..3000 {
        // Give up: the re-creation after a reset is refused with DNR.
        sim.inject(FaultRule::once(Some(0), Some(AdminOpcode::CREATE_IO_CQ.0), refused));
        ctrlr.reset().expect("reset");
        qp.poll(PollLimit::All, |_, _| {});
        assert!(qp.failure().is_some());
        // The reset by hand that should heal it, racing this thread's polls.
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                ctrlr.reset().expect("reset by hand");
                done.store(true, std::sync::atomic::Ordering::Release);
            });
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                qp.poll(PollLimit::All, |_, _| {});
            }
        });
        for _ in 0..10 {
            qp.poll(PollLimit::All, |_, _| {});
            sim.advance(Duration::from_millis(2));
        }
        assert_eq!(qp.failure(), None, "round {round}: still given up after a reset by hand");
    }
}
