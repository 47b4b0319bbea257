//! One test per finding of the review that opened issue 6 (a Hal for every
//! back-end, exclusive ownership, soundness of the buffer model, the API as a
//! new user meets it). Each failed, or could not be written, against the
//! driver before the fix; the unwinding ones run under `catch_unwind`.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod common;

use common::trap::Trap;
use common::{aligned_vec, assert_clean, options, setup};
use core::cell::Cell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;
use nvme_nostd::hal_traits::{Direction, DmaRegion, Hal, HalError, HalErrorKind, SegmentSink};
use nvme_nostd::spec::command::{AdminOpcode, IoOpcode};
use nvme_nostd::{
    AbortOutcome, Argument, Completion, Controller, ControllerOptions, DoorbellMode, Error, IoBuffer,
    IoQueuePair, Malformed, Origin, PollLimit, QpairOptions, TimeoutEvent,
};
use nvme_sim::{Fault, FaultRule, Sim, SimConfig, SimHal, SimNamespace};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

// ---------------------------------------------------------------------------
// Section 2: exclusive ownership of the device
// ---------------------------------------------------------------------------

/// Two `Controller`s on one device used to be possible from safe code (the
/// simulator's HAL was `Clone`): the second attach re-pointed the admin queue
/// and the device re-executed the first one's stale entries. Now the device
/// has one HAL at a time, and a new controller exists only after the old one
/// (and its HAL) is gone.
#[test]
fn a_device_is_driven_by_one_controller_at_a_time() {
    let sim = Sim::new(SimConfig::default());
    let first = Controller::new(sim.hal(), options()).expect("attach");
    assert!(sim.try_hal().is_none(), "a second HAL while the first controller lives");
    let ns = first.namespace(1).unwrap();
    let mut qp = common::qpair(&first);
    qp.write(&ns, 0, 1, vec![0xaa; 512], 0).map_err(|e| e.error).unwrap();
    let done = common::poll_for(&sim, &mut qp, Duration::from_millis(1));
    assert_eq!(done.len(), 1);
    drop(qp);
    drop(first);
    let second = Controller::new(sim.try_hal().expect("released with the controller"), options()).unwrap();
    assert_eq!(sim.read_blocks(1, 0, 1), vec![0xaa; 512], "nothing of the first controller replayed");
    drop(second);
    assert_clean(&sim);
}

// ---------------------------------------------------------------------------
// Section 3: soundness of the buffer model
// ---------------------------------------------------------------------------

/// A `Vec<u8>` buffer that counts its drops: a buffer dropped while its
/// command may still be in the device is a use-after-free in the making.
struct Tracked {
    bytes: Vec<u8>,
    drops: Rc<Cell<usize>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
    }
}

// SAFETY: every promise is the Vec's (see `IoBuffer for Vec<u8>`).
unsafe impl IoBuffer for Tracked {
    fn as_dma_slice(&mut self) -> NonNull<[u8]> {
        self.bytes.as_dma_slice()
    }
}

type TrackedQp<'c, H> = IoQueuePair<'c, H, Tracked, u32, 8>;

thread_local! {
    static PANIC_ON_TIMEOUT: Cell<bool> = const { Cell::new(false) };
}

fn panicking_callback(_: TimeoutEvent) {
    if PANIC_ON_TIMEOUT.with(|p| p.get()) {
        panic!("timeout callback panics (as the review's did)");
    }
}

/// A panic unwinding out of `IoQueuePair::drop` (here: the timeout callback
/// panics while Delete I/O SQ times out) used to drop the in-flight buffers
/// while their commands were still in the device. Now they are leaked.
#[test]
fn a_panic_in_drop_leaks_in_flight_buffers_instead_of_freeing_them() {
    let sim = Sim::new(SimConfig::default());
    let opts = ControllerOptions::default()
        .with_admin_timeout(Duration::from_millis(5))
        .with_timeout_callback(Some(&panicking_callback));
    let ctrlr = Controller::new(sim.hal(), opts).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let drops = Rc::new(Cell::new(0));
    let mut qp: TrackedQp<'_, SimHal> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(16)).unwrap();
    // The reads never complete: the device holds them (and their bounce
    // pages) until the queue is deleted or the controller reset.
    sim.inject(FaultRule { queue: Some(qp.qid()), opcode: None, skip: 0, count: 4, fault: Fault::Drop });
    for lba in 0..4 {
        let buf = Tracked { bytes: aligned_vec(512, 0), drops: drops.clone() };
        qp.read(&ns, lba, 1, buf, lba as u32).map_err(|e| e.error).unwrap();
    }
    // Delete I/O SQ never completes either: the admin command times out and
    // the callback panics inside the drop.
    sim.inject(FaultRule::once(Some(0), Some(AdminOpcode::DELETE_IO_SQ.0), Fault::Drop));
    PANIC_ON_TIMEOUT.with(|p| p.set(true));
    let unwound = catch_unwind(AssertUnwindSafe(move || drop(qp)));
    PANIC_ON_TIMEOUT.with(|p| p.set(false));
    assert!(unwound.is_err(), "the callback panicked");
    assert_eq!(drops.get(), 0, "no buffer of a command still in the device was dropped");
    assert_eq!(sim.stats().live_shares, 4, "their device mappings stay too");
    assert_eq!(sim.stats().bad_unshares, 0);
}

/// The same with a HAL method that panics while the drop waits for Delete
/// I/O SQ.
#[test]
fn a_panicking_hal_in_drop_leaks_in_flight_buffers() {
    let sim = Sim::new(SimConfig::default());
    let hal = Trap::new(sim.hal());
    let ctrlr = Controller::new(hal, options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let drops = Rc::new(Cell::new(0));
    let mut qp: TrackedQp<'_, Trap<SimHal>> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(16)).unwrap();
    sim.inject(FaultRule { queue: Some(qp.qid()), opcode: None, skip: 0, count: 3, fault: Fault::Drop });
    for lba in 0..3 {
        let buf = Tracked { bytes: aligned_vec(512, 0), drops: drops.clone() };
        qp.read(&ns, lba, 1, buf, 0).map_err(|e| e.error).unwrap();
    }
    sim.inject(FaultRule::once(Some(0), Some(AdminOpcode::DELETE_IO_SQ.0), Fault::Drop));
    ctrlr.hal().armed.set(true);
    let unwound = catch_unwind(AssertUnwindSafe(move || drop(qp)));
    assert!(unwound.is_err(), "the HAL panicked");
    assert_eq!(drops.get(), 0, "no buffer of a command still in the device was dropped");
    assert_eq!(sim.stats().live_shares, 3);
}

/// A buffer whose bytes for the device are fewer than what it shows its
/// owner: the driver takes pointer and length from the one slice
/// `as_dma_slice` gives (the review's `IoBuffer` took the length from `deref`
/// and the pointer from `deref_mut`, so an implementation could make the
/// device write past what it vouched for).
struct Narrow(Vec<u8>);

// SAFETY: the slice is the first 512 bytes of the Vec, with the Vec's
// guarantees.
unsafe impl IoBuffer for Narrow {
    fn as_dma_slice(&mut self) -> NonNull<[u8]> {
        let whole = self.0.as_dma_slice();
        NonNull::slice_from_raw_parts(whole.cast::<u8>(), whole.len().min(512))
    }
}

#[test]
fn the_device_gets_exactly_the_bytes_the_buffer_vouches_for() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp: IoQueuePair<'_, SimHal, Narrow, u32, 4> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    let e = qp.read(&ns, 0, 8, Narrow(aligned_vec(4096, 0)), 0).expect_err("refused");
    assert_eq!(e.error, Error::BufferTooSmall { needed: 4096, actual: 512 });
    assert_eq!(qp.stats().submitted, 0);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// A panic inside the poll callback used to leave the consumed completions
/// unacknowledged: with the completion queue full, the device could post no
/// more, and the queue pair stalled for good. Now a guard rings the head.
#[test]
fn a_panic_in_the_poll_callback_does_not_stall_the_queue() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    // 4 entries, 3 slots: three completions fill the completion queue.
    let mut qp: IoQueuePair<'_, SimHal, Vec<u8>, u32, 3> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(4)).unwrap();
    for lba in 0..3 {
        qp.read(&ns, lba, 1, aligned_vec(512, 0), lba as u32).map_err(|e| e.error).unwrap();
    }
    sim.advance(Duration::from_millis(1));
    let mut seen = 0;
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        qp.poll(PollLimit::All, |_, _| {
            seen += 1;
            if seen == 3 {
                panic!("the callback panics on the last completion");
            }
        })
    }));
    assert!(unwound.is_err());
    // Three more reads complete: the device learnt that the queue has room.
    for lba in 0..3 {
        qp.read(&ns, lba, 1, aligned_vec(512, 0), 10 + lba as u32).map_err(|e| e.error).unwrap();
    }
    let mut done = Vec::new();
    for _ in 0..100 {
        qp.poll(PollLimit::All, |_, c| done.push(c.context));
        sim.advance(Duration::from_micros(100));
    }
    done.sort();
    assert_eq!(done, [10, 11, 12], "the queue did not stall");
}

/// A device that keeps posting phase-valid garbage used to keep `poll`
/// consuming forever (bogus entries did not count toward its limit). Now one
/// call consumes at most one ring's worth.
#[test]
fn a_babbling_io_queue_cannot_hold_poll() {
    let (sim, ctrlr, _ns) = setup(SimConfig::default());
    let mut qp = common::qpair(&ctrlr);
    assert!(sim.babble(qp.qid(), 1_000_000));
    let delivered = qp.poll(PollLimit::All, |_, _| panic!("garbage delivered"));
    assert_eq!(delivered, 0);
    let bogus = qp.stats().bogus_completions;
    assert!(bogus > 0 && bogus <= qp.entries() as u64, "{bogus} entries consumed in one poll");
    assert!(sim.stats().babbled < 1_000, "{:?}", sim.stats());
    sim.babble(qp.qid(), 0);
}

/// The same on the admin queue, whose completion loop never looked at its
/// deadline while entries kept coming: now the flood is refused as a
/// malformed device, the controller is reset, and it works again once the
/// device behaves.
#[test]
fn a_babbling_admin_queue_is_refused_and_reset() {
    let (sim, ctrlr, _ns) = setup(SimConfig::default());
    let resets = sim.stats().resets;
    // The next admin command never completes, and the device babbles.
    sim.inject(FaultRule::once(Some(0), None, Fault::Drop));
    assert!(sim.babble(0, 1_000_000));
    assert_eq!(ctrlr.namespace(1).err(), Some(Error::MalformedDevice(Malformed::CompletionFlood)));
    assert!(sim.stats().babbled < 1_000, "{:?}", sim.stats());
    sim.babble(0, 0);
    assert_eq!(sim.stats().resets, resets + 1, "the controller was reset");
    ctrlr.namespace(1).expect("the controller works again");
}

// ---------------------------------------------------------------------------
// Section 5: the API, tried as a new user would
// ---------------------------------------------------------------------------

/// A retried request completes under the CID its submission returned (it
/// used to come back under the retry's), and `abort` with that CID names
/// the command that is in the device now.
#[test]
fn a_retried_request_keeps_its_cid_and_can_be_aborted_by_it() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = common::qpair(&ctrlr);
    let retryable = Fault::Status { sct: 0, sc: 0x06, dnr: false };
    // First attempt: a retryable error; the retry never completes.
    sim.inject(FaultRule::once(Some(qp.qid()), Some(IoOpcode::READ.0), retryable));
    sim.inject(FaultRule {
        queue: Some(qp.qid()),
        opcode: Some(IoOpcode::READ.0),
        skip: 1,
        count: 1,
        fault: Fault::Drop,
    });
    let cid = qp.read(&ns, 0, 1, aligned_vec(512, 0), 5).map_err(|e| e.error).unwrap();
    sim.advance(Duration::from_millis(1));
    assert_eq!(qp.poll(PollLimit::All, |_, _| {}), 0);
    assert_eq!(qp.stats().retries, 1, "retried under another CID on the wire");
    assert_eq!(qp.abort(cid), Ok(AbortOutcome::Aborted), "the retried command was found by its first CID");
    let done = common::poll_for(&sim, &mut qp, Duration::from_millis(1));
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].cid, done[0].context), (cid, 5), "reported under the CID the caller was given");
    assert_eq!(done[0].status.sc(), nvme_nostd::spec::status::generic::ABORTED_BY_REQUEST);
}

/// The poll callback can submit (it used to have no way to: the queue pair
/// was borrowed), and the resubmissions of one pass share one doorbell.
#[test]
fn the_poll_callback_resubmits_with_one_doorbell_per_pass() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = common::qpair(&ctrlr);
    for lba in 0..8 {
        qp.read(&ns, lba, 1, aligned_vec(512, 0), lba as u32).map_err(|e| e.error).unwrap();
    }
    let before = sim.stats().sq_doorbells;
    let mut done = 0;
    while done < 200 {
        qp.poll(PollLimit::All, |resubmit, c| {
            done += 1;
            let buf = c.buffer.expect("buffer");
            if done + resubmit.in_flight() < 200 {
                resubmit.read(&ns, (done % 100) as u64, 1, buf, done as u32).map_err(|e| e.error).unwrap();
            }
        });
        sim.advance(Duration::from_micros(50));
    }
    let doorbells = sim.stats().sq_doorbells - before;
    assert_eq!(qp.stats().submitted, 200);
    assert!(doorbells < 192 / 2, "{doorbells} doorbell writes for 192 resubmissions");
    assert_eq!(qp.in_flight(), 0);
}

/// Batched doorbells: submissions write entries and the doorbell is rung
/// once, by the caller or at the next poll.
#[test]
fn batched_submissions_ring_once() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp: common::Qp<'_> = ctrlr
        .create_io_qpair(QpairOptions::default().with_entries(32).with_doorbell(DoorbellMode::Batched))
        .unwrap();
    let before = sim.stats().sq_doorbells;
    for lba in 0..8 {
        qp.read(&ns, lba, 1, aligned_vec(512, 0), lba as u32).map_err(|e| e.error).unwrap();
    }
    assert_eq!(sim.stats().sq_doorbells, before, "nothing rung yet");
    let done = common::poll_for(&sim, &mut qp, Duration::from_millis(1));
    assert_eq!(done.len(), 8, "the poll rang the doorbell");
    assert_eq!(sim.stats().sq_doorbells, before + 1, "once for eight commands");
    for lba in 0..4 {
        qp.read(&ns, lba, 1, aligned_vec(512, 0), 0).map_err(|e| e.error).unwrap();
    }
    qp.ring_doorbell();
    qp.ring_doorbell();
    assert_eq!(sim.stats().sq_doorbells, before + 2, "an explicit ring, and nothing for an empty one");
    assert_eq!(common::poll_for(&sim, &mut qp, Duration::from_millis(1)).len(), 4);
}

/// Errors are `core::error::Error`s, match on kinds (not strings), and say
/// whose fault they are.
#[test]
fn errors_are_typed_and_say_whose_fault_they_are() {
    let (_sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = common::qpair(&ctrlr);
    let e = qp.write(&ns, 0, 0, vec![0; 512], 0).err().unwrap().error;
    assert_eq!(e, Error::InvalidArgument(Argument::ZeroLength));
    assert_eq!(e.origin(), Origin::Caller);
    let as_std: &dyn core::error::Error = &e;
    assert!(as_std.to_string().contains("zero-length"));
    assert_eq!(ctrlr.identify_namespace(0).err(), Some(Error::InvalidArgument(Argument::NamespaceId)));
}

/// `wait` is the blocking helper for slow paths: it returns the one
/// completion, hands the others over, and knows when a CID names nothing.
#[test]
fn wait_returns_one_request_and_hands_over_the_others() {
    let (_sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = common::qpair(&ctrlr);
    qp.read(&ns, 1, 1, aligned_vec(512, 0), 1).map_err(|e| e.error).unwrap();
    let cid = qp.read(&ns, 2, 1, aligned_vec(512, 0), 2).map_err(|e| e.error).unwrap();
    qp.read(&ns, 3, 1, aligned_vec(512, 0), 3).map_err(|e| e.error).unwrap();
    let mut others = Vec::new();
    let done = qp.wait(cid, Duration::from_secs(1), |c| others.push(c.context)).unwrap();
    assert_eq!(done.context, 2);
    assert!(others.iter().all(|&o| o != 2));
    assert_eq!(
        qp.wait(cid, Duration::from_secs(1), |_| {}).err(),
        Some(Error::InvalidArgument(Argument::UnknownCid))
    );
}

/// The namespace iterator pages through the active list by itself (1024
/// identifiers a page).
#[test]
fn namespaces_are_iterated_across_pages() {
    let namespaces: Vec<SimNamespace> =
        (1..=1500).map(|i| SimNamespace { nsid: i * 2, block_size: 512, blocks: 1 }).collect();
    let sim = Sim::new(SimConfig { namespaces, ..SimConfig::default() });
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let ids: Vec<u32> = ctrlr.namespace_ids().map(Result::unwrap).collect();
    assert_eq!(ids, (1..=1500).map(|i| i * 2).collect::<Vec<u32>>());
    assert_eq!(ctrlr.namespaces().take(3).map(|n| n.unwrap().id()).collect::<Vec<_>>(), [2, 4, 6]);
}

static TIMEOUTS_SEEN: AtomicUsize = AtomicUsize::new(0);

/// The timeout callback can carry context (a closure, not only a `fn`).
#[test]
fn the_timeout_callback_can_be_a_closure() {
    let counter = &TIMEOUTS_SEEN;
    let callback: &'static (dyn Fn(TimeoutEvent) + Sync) = Box::leak(Box::new(move |_: TimeoutEvent| {
        counter.fetch_add(1, Ordering::Relaxed);
    }));
    let sim = Sim::new(SimConfig::default());
    let opts = ControllerOptions::default()
        .with_io_timeout(Some(Duration::from_millis(10)))
        .with_timeout_callback(Some(callback));
    let ctrlr = Controller::new(sim.hal(), opts).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp = common::qpair(&ctrlr);
    sim.inject(FaultRule::once(Some(qp.qid()), None, Fault::Drop));
    qp.read(&ns, 0, 1, aligned_vec(512, 0), 0).map_err(|e| e.error).unwrap();
    let done = common::poll_for(&sim, &mut qp, Duration::from_millis(100));
    assert_eq!(done.len(), 1);
    assert_eq!(TIMEOUTS_SEEN.load(Ordering::Relaxed), 1);
}

/// The README's loop, with I/O timeouts off, on a default simulator: the
/// driver then never reads the clock, and the simulator used to never move
/// time, so the loop hung. Now register accesses move it.
#[test]
fn the_readme_loop_terminates_with_timeouts_off() {
    let sim = Sim::new(SimConfig::default());
    let ctrlr = Controller::new(sim.hal(), ControllerOptions::default().with_io_timeout(None)).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: IoQueuePair<'_, SimHal, Vec<u8>, u32, 64> =
        ctrlr.create_io_qpair(QpairOptions::default()).unwrap();
    qp.read(&ns, 0, 8, aligned_vec(4096, 0), 7).map_err(|e| e.error).unwrap();
    let mut polls = 0;
    let mut done: Option<Completion<Vec<u8>, u32>> = None;
    while qp.in_flight() > 0 {
        qp.poll(PollLimit::All, |_, c| done = Some(c));
        polls += 1;
        assert!(polls < 1000, "the loop does not end");
    }
    assert_eq!(done.map(|c| c.context), Some(7));
}

/// The simulator's defaults fit a first program: a few MiB of namespace and
/// 32 requests of 256 KiB in flight with `Vec<u8>` buffers.
#[test]
fn the_default_simulator_takes_32_requests_of_256_kib() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    assert!(ns.size_bytes() >= 4 << 20);
    let mut qp: IoQueuePair<'_, SimHal, Vec<u8>, u32, 32> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(64)).unwrap();
    assert_eq!(qp.max_transfer_bytes(), 256 << 10);
    let blocks = (256 << 10) / ns.block_size();
    for i in 0..32u32 {
        let lba = (i as u64 * blocks as u64) % (ns.blocks() - blocks as u64);
        qp.read(&ns, lba, blocks, aligned_vec(256 << 10, 0), i).map_err(|e| e.error).unwrap();
    }
    assert_eq!(qp.in_flight(), 32);
    let mut done = Vec::new();
    for _ in 0..100 {
        qp.poll(PollLimit::All, |_, c| done.push(c.result()));
        sim.advance(Duration::from_micros(100));
    }
    assert_eq!(done.len(), 32);
    assert!(done.iter().all(|r| r.is_ok()), "{done:?}");
}

/// Scattered device segments (the simulator's default shares reverse the
/// pages of every buffer) become correct PRP lists, and a buffer in memory
/// the HAL can translate is not shared at all.
#[test]
fn scattered_shares_and_translated_buffers_move_the_right_bytes() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = common::qpair(&ctrlr);
    let data: Vec<u8> = (0..64 << 10).map(|i| (i * 7 + i / 4096) as u8).collect();
    let mut wbuf = aligned_vec(64 << 10, 0);
    wbuf.copy_from_slice(&data);
    qp.write(&ns, 0, 128, wbuf, 0).map_err(|e| e.error).unwrap();
    assert!(common::poll_for(&sim, &mut qp, Duration::from_millis(1))[0].result().is_ok());
    assert_eq!(sim.read_blocks(1, 0, 128), data);
    let shares = sim.stats().shares;
    // Memory the HAL hands out is translated: no share per I/O.
    let mut dma: IoQueuePair<'_, SimHal, Dma<'_>, u32, 4> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    let buf = Dma::new(ctrlr.hal(), 64 << 10);
    dma.read(&ns, 0, 128, buf, 0).map_err(|e| e.error).unwrap();
    let mut got = None;
    for _ in 0..10 {
        dma.poll(PollLimit::All, |_, c| got = c.buffer);
        sim.advance(Duration::from_micros(100));
    }
    let got = got.expect("completed");
    assert_eq!(got.bytes(), &data[..]);
    assert_eq!(sim.stats().shares, shares, "no share for memory the HAL can translate");
    assert!(sim.stats().translations > 0);
    got.free(ctrlr.hal());
}

/// DMA memory from the HAL, presented as caller memory (so the driver asks
/// `Hal::translate` rather than trusting it as its own).
struct Dma<'h> {
    region: DmaRegion,
    len: usize,
    _hal: core::marker::PhantomData<&'h SimHal>,
}

impl<'h> Dma<'h> {
    fn new(hal: &'h SimHal, len: usize) -> Self {
        let region = hal.dma_alloc(len.div_ceil(4096)).unwrap();
        Dma { region, len, _hal: core::marker::PhantomData }
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: the region is live and no request owns this value now.
        unsafe { core::slice::from_raw_parts(self.region.vaddr.as_ptr(), self.len) }
    }
    fn free(self, hal: &SimHal) {
        // SAFETY: from this HAL, no longer used by the device or anyone.
        unsafe { hal.dma_free(self.region) }
    }
}

// SAFETY: the region is allocated for as long as the value lives (freed only
// by `free`, which consumes it), is reached through a raw pointer, and the
// slice is the same on every call.
unsafe impl IoBuffer for Dma<'_> {
    fn as_dma_slice(&mut self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.region.vaddr, self.len)
    }
}

/// A window into a Vec: the device gets `len` bytes from `start`.
struct Window {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

// SAFETY: a sub-slice of the Vec (start + len <= its length, checked by the
// constructor's callers), with the Vec's guarantees.
unsafe impl IoBuffer for Window {
    fn as_dma_slice(&mut self) -> NonNull<[u8]> {
        let whole = self.bytes.as_dma_slice();
        // SAFETY: start <= the Vec's length.
        let first = unsafe { whole.cast::<u8>().add(self.start) };
        NonNull::slice_from_raw_parts(first, self.len)
    }
}

/// A window of `len` bytes whose start is `misalign` bytes past a 64-byte
/// boundary.
fn window(len: usize, misalign: usize) -> Window {
    let bytes = vec![0u8; len + 128];
    let start = (64 - bytes.as_ptr() as usize % 64) % 64 + misalign;
    Window { bytes, start, len }
}

/// Buffers the device writes must meet the HAL's DMA alignment (a cache
/// line on a system without DMA coherence) at both ends, or be refused
/// before anything is submitted; buffers it only reads need not.
#[test]
fn buffers_the_device_writes_meet_the_dma_alignment() {
    let sim = Sim::new(SimConfig::default());
    let hal: Trap<SimHal, 64> = Trap {
        inner: sim.hal(),
        armed: Cell::new(false),
        share_countdown: Cell::new(0),
        share_fail_countdown: Cell::new(0),
        sync_cpu_countdown: Cell::new(0),
        handed: Cell::new(0),
    };
    let ctrlr = Controller::new(hal, options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: IoQueuePair<'_, Trap<SimHal, 64>, Window, u32, 4> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    let e = qp.read(&ns, 0, 1, window(512, 4), 0).expect_err("a read into a misaligned buffer is refused");
    assert_eq!(e.error, Error::BufferMisaligned { required: 64 });
    assert_eq!(qp.stats().submitted, 0);
    qp.write(&ns, 0, 1, window(512, 4), 1)
        .map_err(|e| e.error)
        .expect("the device only reads a write buffer");
    qp.read(&ns, 0, 1, window(512, 0), 2).map_err(|e| e.error).expect("aligned at both ends");
    let mut done = 0;
    for _ in 0..20 {
        done += qp.poll(PollLimit::All, |_, c| assert!(c.result().is_ok()));
        sim.advance(Duration::from_micros(100));
    }
    assert_eq!(done, 2);
}

// ---------------------------------------------------------------------------
// Found by the review of this work
// ---------------------------------------------------------------------------

/// A `DmaBuffer` of another HAL is never trusted as the controller's own DMA
/// memory (an earlier fast path compared HAL addresses, which a zero-sized
/// HAL of another device can share): it reaches the device through this
/// controller's HAL, here by a share, and the data is right.
#[test]
fn a_dma_buffer_of_another_hal_is_shared_not_trusted() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let other = Sim::new(SimConfig::default());
    let other_hal = other.hal();
    sim.write_blocks(1, 0, &[0x5c; 4096]);
    let mut qp: IoQueuePair<'_, SimHal, nvme_nostd::DmaBuffer<'_, SimHal>, u32, 4> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    let shares = sim.stats().shares;
    let buf = nvme_nostd::DmaBuffer::new(&other_hal, 4096).unwrap();
    let cid = qp.read(&ns, 0, 8, buf, 0).map_err(|e| e.error).unwrap();
    let done = qp.wait(cid, Duration::from_secs(1), |_| {}).unwrap();
    assert!(done.result().is_ok());
    assert_eq!(&done.buffer.as_ref().unwrap()[..], &[0x5c; 4096][..]);
    assert_eq!(sim.stats().shares, shares + 1, "shared through this controller's HAL");
    // The controller's own DMA memory is translated, not shared.
    let own = nvme_nostd::DmaBuffer::new(ctrlr.hal(), 4096).unwrap();
    let cid = qp.read(&ns, 0, 8, own, 1).map_err(|e| e.error).unwrap();
    let done = qp.wait(cid, Duration::from_secs(1), |_| {}).unwrap();
    assert_eq!(&done.buffer.as_ref().unwrap()[..], &[0x5c; 4096][..]);
    assert_eq!(sim.stats().shares, shares + 1, "no share for the controller's own memory");
}

/// A request the device never completes still times out while the
/// completion queue is never seen empty (other requests keep completing, and
/// the caller resubmits from the poll callback, or polls one at a time).
#[test]
fn a_stuck_request_times_out_while_the_queue_stays_busy() {
    for limit in [PollLimit::All, PollLimit::AtMost(1)] {
        let sim = Sim::new(SimConfig::default());
        let opts = ControllerOptions::default()
            .with_io_timeout(Some(Duration::from_millis(10)))
            .with_admin_timeout(Duration::from_millis(50));
        let ctrlr = Controller::new(sim.hal(), opts).unwrap();
        let ns = ctrlr.namespace(1).unwrap();
        let mut qp = common::qpair(&ctrlr);
        sim.inject(FaultRule::once(Some(qp.qid()), None, Fault::Drop));
        qp.read(&ns, 0, 1, aligned_vec(512, 0), 999).map_err(|e| e.error).unwrap();
        for i in 0..8 {
            qp.read(&ns, i, 1, aligned_vec(512, 0), i as u32).map_err(|e| e.error).unwrap();
        }
        let mut stuck = None;
        let end = sim.now() + Duration::from_secs(3);
        while stuck.is_none() && sim.now() < end {
            qp.poll(limit, |resubmit, c| {
                if c.context == 999 {
                    stuck = Some(c.result());
                } else if let Some(buf) = c.buffer {
                    let _ = resubmit.read(&ns, 0, 1, buf, c.context);
                }
            });
            sim.advance(Duration::from_micros(50));
        }
        assert_eq!(stuck, Some(Err(Error::Timeout(nvme_nostd::Wait::IoCommand))), "{limit:?}");
    }
}

/// A HAL method that panics while the queue pair ends its requests after a
/// reset loses none of them: each is still delivered once.
#[test]
fn a_panic_during_recovery_loses_no_request() {
    let sim = Sim::new(SimConfig::default());
    let ctrlr = Controller::new(Trap::new(sim.hal()), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: IoQueuePair<'_, Trap<SimHal>, Vec<u8>, u32, 8> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(16)).unwrap();
    sim.inject(FaultRule { queue: Some(qp.qid()), opcode: None, skip: 0, count: 3, fault: Fault::Drop });
    for lba in 0..3 {
        qp.read(&ns, lba, 1, aligned_vec(512, 0), lba as u32).map_err(|e| e.error).unwrap();
    }
    ctrlr.reset().unwrap();
    ctrlr.hal().sync_cpu_countdown.set(2);
    let mut delivered = Vec::new();
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        qp.poll(PollLimit::All, |_, c| delivered.push(c.context));
    }));
    assert!(unwound.is_err(), "sync_for_cpu panicked in recovery");
    for _ in 0..100 {
        qp.poll(PollLimit::All, |_, c| delivered.push(c.context));
        if qp.in_flight() == 0 {
            break;
        }
    }
    delivered.sort();
    assert_eq!(delivered, [0, 1, 2], "each request delivered once");
    assert_eq!(qp.in_flight(), 0);
}

/// A HAL method that panics while a completed request is handed back (its
/// `sync_for_cpu`) leaves no request stuck in its slot: the slot is free
/// for the next request (the panicking one's buffer is leaked), and every
/// other request completes normally, also with I/O timeouts off.
#[test]
fn a_panic_while_completing_leaves_no_request_stuck() {
    let sim = Sim::new(SimConfig::default());
    let ctrlr = Controller::new(Trap::new(sim.hal()), options().with_io_timeout(None)).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: IoQueuePair<'_, Trap<SimHal>, Vec<u8>, u32, 4> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    for lba in 0..4 {
        qp.read(&ns, lba, 1, aligned_vec(512, 0), lba as u32).map_err(|e| e.error).unwrap();
    }
    sim.advance(Duration::from_millis(1));
    ctrlr.hal().sync_cpu_countdown.set(2);
    let mut delivered = Vec::new();
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        qp.poll(PollLimit::All, |_, c| delivered.push(c.context));
    }));
    assert!(unwound.is_err(), "sync_for_cpu panicked while completing the second read");
    for _ in 0..100 {
        qp.poll(PollLimit::All, |_, c| delivered.push(c.context));
        if qp.in_flight() == 0 {
            break;
        }
    }
    assert_eq!(qp.in_flight(), 0, "no request left in a slot");
    assert_eq!(delivered.len(), 3, "the other three delivered: {delivered:?}");
    for lba in 0..4 {
        qp.read(&ns, lba, 1, aligned_vec(512, 0), lba as u32)
            .map_err(|e| e.error)
            .expect("every slot is free");
    }
}

/// A HAL method that panics while one part of a split request is handed
/// back (its `sync_for_cpu`) leaves no parent waiting for a child that is
/// gone: the request is still delivered exactly once, with
/// `HalErrorKind::Panicked` and without its buffer (leaked: part of it was
/// not handed back), whether the panicking part was the last or not; every
/// slot is free again.
#[test]
fn a_panic_while_a_split_part_completes_still_delivers_the_request_once() {
    // 64 blocks of 512 bytes, 4 KiB per command: eight parts. The panic
    // comes with the second part's sync (others still out) or the eighth's
    // (the last).
    for (panic_at, name) in [(2u32, "a middle part"), (8, "the last part")] {
        let sim = Sim::new(SimConfig::default());
        let ctrlr = Controller::new(Trap::new(sim.hal()), options().with_io_timeout(None)).unwrap();
        let ns = ctrlr.namespace(1).unwrap();
        let mut qp: IoQueuePair<'_, Trap<SimHal>, Vec<u8>, u32, 16> = ctrlr
            .create_io_qpair(QpairOptions::default().with_entries(32).with_max_transfer_bytes(4096))
            .unwrap();
        qp.read(&ns, 0, 64, aligned_vec(64 * 512, 0), 7).map_err(|e| e.error).unwrap();
        assert_eq!(qp.in_flight(), 9, "a parent and eight parts");
        sim.advance(Duration::from_millis(1));
        ctrlr.hal().sync_cpu_countdown.set(panic_at);
        let mut delivered = Vec::new();
        let unwound = catch_unwind(AssertUnwindSafe(|| {
            qp.poll(PollLimit::All, |_, c| delivered.push((c.context, c.error, c.buffer.is_some())));
        }));
        assert!(unwound.is_err(), "{name}: sync_for_cpu panicked");
        for _ in 0..100 {
            qp.poll(PollLimit::All, |_, c| delivered.push((c.context, c.error, c.buffer.is_some())));
            if qp.in_flight() == 0 {
                break;
            }
            sim.advance(Duration::from_micros(100));
        }
        assert_eq!(qp.in_flight(), 0, "{name}: nothing left in a slot");
        assert_eq!(delivered.len(), 1, "{name}: delivered once: {delivered:?}");
        let (context, error, has_buffer) = delivered[0];
        assert_eq!(context, 7);
        assert!(
            matches!(error, Some(Error::Hal(h)) if h.kind() == HalErrorKind::Panicked),
            "{name}: {error:?}"
        );
        assert!(!has_buffer, "{name}: the buffer is leaked, not handed back");
        // Every slot is free: a request as large goes out and completes.
        qp.read(&ns, 0, 64, aligned_vec(64 * 512, 0), 8).map_err(|e| e.error).expect("slots free");
        let mut again = Vec::new();
        for _ in 0..100 {
            qp.poll(PollLimit::All, |_, c| again.push(c.result().is_ok()));
            if qp.in_flight() == 0 {
                break;
            }
            sim.advance(Duration::from_micros(100));
        }
        assert_eq!(again, [true], "{name}");
    }
}

/// A panic in the HAL while a submission is being prepared leaves no request
/// slot taken by nothing.
#[test]
fn a_panic_while_submitting_leaks_no_slot() {
    let sim = Sim::new(SimConfig::default());
    let ctrlr = Controller::new(Trap::new(sim.hal()), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: IoQueuePair<'_, Trap<SimHal>, Vec<u8>, u32, 4> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    ctrlr.hal().share_countdown.set(1);
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        let _ = qp.read(&ns, 0, 1, aligned_vec(512, 0), 0);
    }));
    assert!(unwound.is_err(), "share panicked");
    assert_eq!((qp.in_flight(), qp.stats().submitted), (0, 0));
    for lba in 0..4 {
        qp.read(&ns, lba, 1, aligned_vec(512, 0), lba as u32)
            .map_err(|e| e.error)
            .expect("every slot is free");
    }
}

/// A share undone before the device saw it (segments PRPs cannot describe)
/// leaves the caller's buffer as it was: a bouncing back-end copies back only
/// in `sync_for_cpu`.
#[test]
fn an_undone_share_leaves_the_buffer_alone() {
    // A HAL whose shares report two half-page segments in the middle of
    // pages: PRPs cannot describe that, so the driver undoes the share.
    struct Odd(SimHal);
    // SAFETY: forwards to the simulator's HAL; its own `share` only reports
    // segments that PRPs cannot use (the driver refuses them and undoes the
    // share), which promises nothing wrong about the bytes.
    unsafe impl Hal for Odd {
        type Mapping = nvme_sim::Mapping;
        fn read32(&self, o: usize) -> u32 {
            self.0.read32(o)
        }
        unsafe fn write32(&self, o: usize, v: u32) {
            // SAFETY: forwarded.
            unsafe { self.0.write32(o, v) }
        }
        fn dma_alloc(&self, pages: usize) -> Result<DmaRegion, HalError> {
            self.0.dma_alloc(pages)
        }
        unsafe fn dma_free(&self, r: DmaRegion) {
            // SAFETY: forwarded.
            unsafe { self.0.dma_free(r) }
        }
        unsafe fn share(
            &self,
            b: NonNull<[u8]>,
            d: Direction,
            sink: &mut dyn SegmentSink,
        ) -> Result<nvme_sim::Mapping, HalError> {
            struct Ignore;
            impl SegmentSink for Ignore {
                fn push(&mut self, _: nvme_nostd::hal_traits::DeviceSegment) {}
            }
            // SAFETY: forwarded; the real segments are thrown away.
            let m = unsafe { self.0.share(b, d, &mut Ignore) }?;
            let half = b.len() / 2;
            for at in [0x2000_0800u64, 0x3000_0800] {
                sink.push(nvme_nostd::hal_traits::DeviceSegment {
                    addr: nvme_nostd::hal_traits::DeviceAddr(at),
                    len: half,
                });
            }
            Ok(m)
        }
        unsafe fn unshare(&self, b: NonNull<[u8]>, d: Direction, m: nvme_sim::Mapping) {
            // SAFETY: forwarded.
            unsafe { self.0.unshare(b, d, m) }
        }
        fn ticks(&self) -> u64 {
            self.0.ticks()
        }
        fn ticks_per_second(&self) -> u64 {
            self.0.ticks_per_second()
        }
        fn delay(&self, d: Duration) {
            self.0.delay(d)
        }
    }
    let sim = Sim::new(SimConfig::default());
    let ctrlr = Controller::new(Odd(sim.hal()), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: IoQueuePair<'_, Odd, Vec<u8>, u32, 4> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    let e = qp.read(&ns, 0, 8, aligned_vec(4096, 0x42), 0).expect_err("not PRP-shaped");
    assert_eq!(e.error.origin(), Origin::Backend);
    assert!(matches!(e.error, Error::NotPrpShaped(_)), "{:?}", e.error);
    assert!(e.buffer.iter().all(|&b| b == 0x42), "the buffer came back as it was");
    assert_eq!(sim.stats().live_shares, 0, "the share was undone");
    assert_eq!(qp.stats().submitted, 0);
}
