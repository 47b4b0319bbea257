//! Property tests: random schedules of I/O across two queue pairs with injected
//! faults, run against the simulated controller; after each, the invariants of
//! RELIABILITY.md are checked.
//!
//! A schedule mixes reads, writes, flushes and polls with resets by hand (also
//! from inside a poll callback), brief disappearances of the device,
//! queue-pair churn (a pair dropped with requests in flight and created
//! again), asynchronous events with the admin completion processing that
//! hands them out, and (in some) queues smaller than the request pool, whose
//! extra requests wait for room, and (in some) a namespace whose optimal
//! I/O boundary splits most requests into two commands. Faults hit I/O commands and the admin commands that recovery
//! itself sends (Abort, Create/Delete I/O CQ/SQ, Set Features, Identify).
//! Invariants: every request is completed exactly once (or, for a dropped
//! pair, never); each block holds one of the values the model allows; once
//! the faults stop, every queue pair works again within a bounded number of
//! polls without a reset by hand, unless the device was removed or the
//! driver reported a terminal error (and then a reset by hand heals it); the
//! DMA pool is back to empty after teardown.
//!
//! `cargo xtask test` runs 10,000 schedules from a fixed seed (release build);
//! `cargo xtask soak --schedules N --seed S` runs more. The counts are printed:
//! schedules, commands, faults injected per kind, lost, doubled, panics.
//!
//! Environment: `NVME_SCHEDULES` (default 10000), `NVME_SEED` (default fixed).

mod common;

use nvme_nostd::spec::command::AdminOpcode;
use nvme_nostd::spec::dwords::AsyncEventConfig;
use nvme_nostd::spec::ids::{AsyncEventInfo, AsyncEventType, Lid};
use nvme_nostd::{
    Controller, ControllerOptions, Error, IoBuffer, IoQueuePair, Namespace, PollLimit, QpairOptions,
    ScatterList,
};
use nvme_sim::{DoorbellBuffer, Fault, FaultKind, FaultRule, Sim, SimConfig, SimHal, SimNamespace};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

const BLOCKS: u64 = 64;
const BLOCK: usize = 512;
const SLOTS: usize = 8;
const IO_TIMEOUT: Duration = Duration::from_millis(50);

/// One step of a schedule.
#[derive(Clone, Debug)]
enum Op {
    /// With `scatter`, from a scatter list of one heap buffer a block,
    /// each shared by the HAL on its own (by an SGL).
    Write {
        q: usize,
        lba: u64,
        blocks: u32,
        scatter: bool,
    },
    Read {
        q: usize,
        lba: u64,
        blocks: u32,
        scatter: bool,
    },
    Flush {
        q: usize,
    },
    Poll {
        q: usize,
    },
    Advance {
        us: u64,
    },
    /// `Controller::reset` by hand.
    Reset,
    /// Polls `q` and resets the controller from inside its callback.
    ResetInPoll {
        q: usize,
    },
    /// The device disappears (registers read all ones) for `us`, then comes
    /// back.
    Blip {
        us: u64,
    },
    /// Drops queue pair `q` (requests in flight and all) and creates a new one.
    Churn {
        q: usize,
    },
    /// The controller has an asynchronous event to report.
    Event {
        event_type: u8,
        info: u8,
        lid: u8,
    },
    /// `process_admin_completions`: events handed out, their logs read.
    Admin,
}

/// A fault and the command (counted per queue) it hits.
#[derive(Clone, Debug)]
struct Injection {
    q: usize,
    nth: u64,
    kind: FaultKind,
}

/// A fault on the `nth` admin command (counted from attach) with `opcode`.
#[derive(Clone, Debug)]
struct AdminInjection {
    opcode: AdminOpcode,
    nth: u64,
    kind: FaultKind,
}

#[derive(Clone, Debug)]
struct Schedule {
    ops: Vec<Op>,
    faults: Vec<Injection>,
    admin: Vec<AdminInjection>,
    /// The controller asks for a 100 ms Command Retry Delay on retryable
    /// statuses (CRDT1 = 1, CRD = 1), so retries are parked.
    retry_delay: bool,
    /// Queue pairs of 4 entries (3 commands on the device) for 8 request
    /// slots: the extra requests wait for room.
    small_queues: bool,
    /// Asynchronous events enabled at attach (AERs outstanding throughout).
    events: bool,
    /// The controller has a 64 KiB controller memory buffer, and the
    /// submission queues go there.
    cmb: bool,
    /// The controller asks for a 256 KiB host memory buffer, and gets it.
    hmb: bool,
    /// The namespace's optimal I/O boundary is 3 blocks, so most requests of
    /// 2 to 4 blocks are split into two commands (see `split.rs`).
    split: bool,
    /// The controller offers shadow doorbells and reads them as QEMU 7.2
    /// does (`DoorbellBuffer::On`), and the driver uses them.
    shadow: bool,
}

/// The admin commands that recovery sends.
const RECOVERY_OPCODES: [AdminOpcode; 9] = [
    AdminOpcode::ABORT,
    AdminOpcode::CREATE_IO_CQ,
    AdminOpcode::CREATE_IO_SQ,
    AdminOpcode::DELETE_IO_CQ,
    AdminOpcode::DELETE_IO_SQ,
    AdminOpcode::SET_FEATURES,
    AdminOpcode::IDENTIFY,
    AdminOpcode::ASYNC_EVENT_REQUEST,
    // A reset hands the shadow doorbell pages over again (the schedules
    // with shadow doorbells).
    AdminOpcode::DOORBELL_BUFFER_CONFIG,
];

fn admin_injection() -> impl Strategy<Value = AdminInjection> {
    (proptest::sample::select(RECOVERY_OPCODES.to_vec()), 0..3u64, recoverable_kind())
        .prop_map(|(opcode, nth, kind)| AdminInjection { opcode, nth, kind })
}

fn op() -> impl Strategy<Value = Op> {
    let io = (0..2usize, 0..BLOCKS, 1..=4u32, any::<bool>());
    prop_oneof![
        4 => io.clone().prop_map(|(q, lba, blocks, scatter)| Op::Write { q, lba, blocks, scatter }),
        4 => io.prop_map(|(q, lba, blocks, scatter)| Op::Read { q, lba, blocks, scatter }),
        1 => (0..2usize).prop_map(|q| Op::Flush { q }),
        3 => (0..2usize).prop_map(|q| Op::Poll { q }),
        1 => (1..200u64).prop_map(|us| Op::Advance { us }),
        1 => Just(Op::Reset),
        1 => (0..2usize).prop_map(|q| Op::ResetInPoll { q }),
        1 => (1..2100u64).prop_map(|us| Op::Blip { us }),
        1 => (0..2usize).prop_map(|q| Op::Churn { q }),
        1 => (0..8u8, any::<u8>(), any::<u8>()).prop_map(|(event_type, info, lid)| Op::Event { event_type, info, lid }),
        1 => Just(Op::Admin),
    ]
}

/// Every kind but removal, which ends all device activity: it comes at most
/// once per schedule, after the others.
fn recoverable_kind() -> impl Strategy<Value = FaultKind> {
    proptest::sample::select(
        FaultKind::ALL.iter().copied().filter(|k| *k != FaultKind::Removal).collect::<Vec<_>>(),
    )
}

fn schedule() -> impl Strategy<Value = Schedule> {
    (
        proptest::collection::vec(op(), 80..140),
        // 3 to 5 faults on distinct command numbers among the first 12 of a
        // queue, so that each is reached (every queue runs at least 25).
        proptest::sample::subsequence((0..12u64).collect::<Vec<_>>(), 3..6),
        proptest::collection::vec((0..2usize, recoverable_kind()), 5),
        proptest::option::weighted(0.25, (0..2usize, 20..24u64)),
        proptest::collection::vec(admin_injection(), 0..3),
        proptest::bool::weighted(0.3),
        proptest::bool::weighted(0.3),
        proptest::bool::weighted(0.5),
        proptest::bool::weighted(0.3),
        proptest::bool::weighted(0.3),
        proptest::bool::weighted(0.4),
    )
        .prop_map(
            |(ops, nths, kinds, removal, admin, retry_delay, small_queues, events, cmb, hmb, split)| {
                // A third of the schedules, drawn from the length of the
                // operation list so that the random stream (and so every
                // schedule's other choices) stays what it was before shadow
                // doorbells joined.
                let shadow = ops.len() % 3 == 1;
                let mut faults: Vec<Injection> =
                    nths.into_iter().zip(kinds).map(|(nth, (q, kind))| Injection { q, nth, kind }).collect();
                if let Some((q, nth)) = removal {
                    faults.push(Injection { q, nth, kind: FaultKind::Removal });
                }
                Schedule { ops, faults, admin, retry_delay, small_queues, events, cmb, hmb, split, shadow }
            },
        )
}

fn fault_of(kind: FaultKind) -> Fault {
    // Internal error for the status kinds; a delay well past the timeout.
    kind.fault((0, 0x06), IO_TIMEOUT * 3)
}

/// Totals over all schedules.
#[derive(Default, Debug)]
struct Totals {
    schedules: u64,
    commands: u64,
    /// Scatter lists of heap buffers among the commands.
    scatter: u64,
    /// Of them, split where PRPs break.
    scatter_split: u64,
    lost: u64,
    doubled: u64,
    panics: u64,
    violations: u64,
    not_recovered: u64,
    reattached: u64,
    /// Queue pairs that reported a terminal error (healed by a reset by hand).
    terminal: u64,
    /// Faults that hit admin commands.
    admin_faults: u64,
    /// Schedules whose device disappeared long enough to count as removed.
    gone_in_blip: u64,
    injected_per_schedule_min: u64,
    fewest_faults_at: u64,
    /// Schedules in which fewer than 3 faults struck (a churned queue pair
    /// can get a new identifier, which the faults planned for the old one
    /// never reach).
    few_faults: u64,
    current: u64,
    faults: BTreeMap<&'static str, u64>,
    first_failure: Option<String>,
}

/// The pattern of write `id` for block `lba`: 8-byte words of (id, lba, word).
fn fill(buf: &mut [u8], id: u64, lba: u64) {
    for (b, block) in buf.chunks_mut(BLOCK).enumerate() {
        for (w, word) in block.chunks_mut(8).enumerate() {
            let v = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((lba + b as u64) << 20) ^ w as u64;
            word.copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// Which write (0 = never written, zeros) a block's bytes came from, if any.
fn which(block: &[u8], lba: u64, candidates: &BTreeSet<u64>) -> Option<u64> {
    candidates.iter().copied().find(|&id| {
        if id == 0 {
            return block.iter().all(|b| *b == 0);
        }
        let mut expect = vec![0u8; BLOCK];
        fill(&mut expect, id, lba);
        expect == block
    })
}

type Qp<'a> = IoQueuePair<'a, nvme_sim::SimHal, Buf, u64, SLOTS>;

/// A request's buffer: one `Vec`, or a scatter list of one `Vec` a block.
enum Buf {
    One(Vec<u8>),
    Blocks(ScatterList<Vec<u8>, 4>),
}

impl Buf {
    /// `blocks` blocks of zeros, in one piece or one a block.
    fn zeroed(blocks: u32, scatter: bool) -> Buf {
        if !scatter {
            return Buf::One(vec![0u8; blocks as usize * BLOCK]);
        }
        let mut list = ScatterList::new();
        for _ in 0..blocks {
            let _ = list.push(vec![0u8; BLOCK]);
        }
        Buf::Blocks(list)
    }

    /// The bytes, in order.
    fn flat(&self) -> Vec<u8> {
        match self {
            Buf::One(v) => v.clone(),
            Buf::Blocks(l) => l.as_slice().concat(),
        }
    }

    /// Fills block `i` (of the buffer) with write `id`'s pattern for `lba + i`.
    fn fill(&mut self, id: u64, lba: u64) {
        match self {
            Buf::One(v) => fill(v, id, lba),
            Buf::Blocks(l) => {
                for (i, piece) in l.as_mut_slice().iter_mut().enumerate() {
                    fill(piece, id, lba + i as u64);
                }
            }
        }
    }
}

// SAFETY: forwarded to a `Vec` or a `ScatterList` of them, each of which
// is an `IoBuffer`; the variant never changes while a request owns it.
unsafe impl IoBuffer for Buf {
    fn as_dma_slice(&mut self) -> std::ptr::NonNull<[u8]> {
        match self {
            Buf::One(v) => v.as_dma_slice(),
            Buf::Blocks(l) => l.as_dma_slice(),
        }
    }

    fn pieces(&mut self) -> usize {
        match self {
            Buf::One(v) => v.pieces(),
            Buf::Blocks(l) => l.pieces(),
        }
    }

    fn piece(&mut self, index: usize) -> std::ptr::NonNull<[u8]> {
        match self {
            Buf::One(v) => v.piece(index),
            Buf::Blocks(l) => l.piece(index),
        }
    }
}

/// What the checker knows of each request and block.
struct Model {
    /// Blocks: the set of write ids the block may hold now.
    blocks: Vec<BTreeSet<u64>>,
    /// Requests in flight: id -> (is write, lba, blocks).
    in_flight: BTreeMap<u64, (bool, u64, u32)>,
    /// The queue pair (index) each request in flight was submitted to.
    owner: BTreeMap<u64, usize>,
    /// Completions seen per request id.
    seen: BTreeMap<u64, u32>,
    next_id: u64,
    violations: Vec<String>,
}

impl Model {
    fn new() -> Self {
        Model {
            blocks: vec![BTreeSet::from([0]); BLOCKS as usize],
            in_flight: BTreeMap::new(),
            owner: BTreeMap::new(),
            seen: BTreeMap::new(),
            next_id: 1,
            violations: Vec::new(),
        }
    }

    /// True if `lba..lba+blocks` overlaps a write in flight (or, for a write,
    /// any request in flight): the executor keeps such commands apart so that
    /// each block's possible values stay well defined.
    fn conflicts(&self, write: bool, lba: u64, blocks: u32) -> bool {
        self.in_flight
            .values()
            .any(|&(w, l, n)| (write || w) && lba < l + n as u64 && l < lba + blocks as u64)
    }

    fn submitted(&mut self, q: usize, id: u64, request: (bool, u64, u32)) {
        self.in_flight.insert(id, request);
        self.owner.insert(id, q);
    }

    /// Queue pair `q` was dropped: its requests in flight are never
    /// delivered, and its writes may or may not have landed.
    fn abandon(&mut self, q: usize) {
        let ids: Vec<u64> = self.owner.iter().filter(|(_, &o)| o == q).map(|(&id, _)| id).collect();
        for id in ids {
            self.owner.remove(&id);
            if let Some((true, lba, n)) = self.in_flight.remove(&id) {
                for b in lba..lba + n as u64 {
                    self.blocks[b as usize].insert(id);
                }
            }
        }
    }

    fn complete(&mut self, id: u64, result: Result<(), Error>, data: Option<&[u8]>) {
        *self.seen.entry(id).or_insert(0) += 1;
        self.owner.remove(&id);
        let Some((write, lba, n)) = self.in_flight.remove(&id) else {
            return; // doubled: counted from `seen`
        };
        for b in lba..lba + n as u64 {
            let set = &mut self.blocks[b as usize];
            if write {
                if result.is_ok() {
                    *set = BTreeSet::from([id]);
                } else {
                    // A failed or timed-out write may or may not have landed.
                    set.insert(id);
                }
            } else if let (Ok(()), Some(data)) = (result, data) {
                let off = (b - lba) as usize * BLOCK;
                if which(&data[off..off + BLOCK], b, set).is_none() {
                    self.violations.push(format!("read of block {b} returned data of no write in {set:?}"));
                }
            }
        }
    }
}

fn trace() -> bool {
    std::env::var("NVME_TRACE").is_ok()
}

fn poll_into(qp: &mut Qp<'_>, model: &mut Model) {
    poll_with(qp, model, |_| {});
}

/// Polls `qp`, feeding completions to the model and calling `also` after
/// each (from inside the poll callback).
fn poll_with(qp: &mut Qp<'_>, model: &mut Model, mut also: impl FnMut(u64)) {
    let qid = qp.qid();
    qp.poll(PollLimit::All, |_, c| {
        if trace() {
            let first = c.buffer.as_ref().map(|b| b.flat()[..8].to_vec());
            eprintln!(
                "complete q{qid} id {} {:?} {:?} {:?}",
                c.context,
                c.result(),
                model.in_flight.get(&c.context),
                first
            );
        }
        let data = c.buffer.as_ref().map(Buf::flat);
        model.complete(c.context, c.result(), data.as_deref());
        also(c.context);
    });
}

/// Queue pair `q`, if it exists (a churned pair whose creation failed is
/// created again by later operations).
fn pair<'a, 'c>(qps: &'a mut [Option<Qp<'c>>], q: usize) -> Option<&'a mut Qp<'c>> {
    qps.get_mut(q).and_then(Option::as_mut)
}

/// How a schedule ended.
#[derive(Default)]
struct Outcome {
    commands: u64,
    /// Of them, scatter lists of heap buffers (shared piece by piece).
    scatter: u64,
    /// Of those, lists split where PRPs break (schedules without SGLs).
    scatter_split: u64,
    /// Queue pairs that reported a terminal error and were healed by a
    /// reset by hand.
    terminal: u64,
    /// Their errors.
    gave_up: Vec<Error>,
}

/// Polls after the faults stopped until `qp` takes requests again; `Err` if
/// it neither heals nor reports a terminal error within the bound.
fn heal(qp: &mut Qp<'_>, sim: &Sim, model: &mut Model) -> Result<Option<Error>, String> {
    for _ in 0..HEAL_POLLS {
        poll_into(qp, model);
        match qp.failure() {
            None => return Ok(None),
            Some(Error::QueuePairBroken(b)) if !b.terminal => {}
            Some(e) => return Ok(Some(e)),
        }
        sim.advance(Duration::from_millis(1));
    }
    Err(format!(
        "queue pair {} still broken {HEAL_POLLS} polls after the faults stopped: {:?}",
        qp.qid(),
        qp.failure()
    ))
}

/// Creates a queue pair once the faults stopped: the controller heals
/// within the bound (its reset retried after a backoff), or says it gave up
/// (`ControllerFailed` to the end), and then a reset by hand heals it.
fn create_after_faults<'c>(
    ctrlr: &'c Controller<SimHal>,
    sim: &Sim,
    out: &mut Outcome,
) -> Result<Qp<'c>, String> {
    let mut last = None;
    for _ in 0..HEAL_POLLS {
        match ctrlr.create_io_qpair(qopts()) {
            Ok(qp) => return Ok(qp),
            Err(e) => last = Some(e),
        }
        sim.advance(Duration::from_millis(1));
    }
    if last != Some(Error::ControllerFailed) {
        return Err(format!("create after the faults: {last:?}"));
    }
    out.terminal += 1;
    out.gave_up.push(Error::ControllerFailed);
    ctrlr.reset().map_err(|e| format!("reset by hand after the controller gave up: {e}"))?;
    ctrlr.create_io_qpair(qopts()).map_err(|e| format!("create after a reset by hand: {e}"))
}

/// A handle refused as stale gets replaced, as a caller would: a reset's
/// revalidation that met an Identify fault cannot vouch for the namespace,
/// and retires its handles (`Argument::StaleNamespace`).
fn refresh_if_stale(ctrlr: &Controller<SimHal>, ns: &mut Namespace, error: Error) {
    if error == Error::InvalidArgument(nvme_nostd::Argument::StaleNamespace) {
        if let Ok(fresh) = ctrlr.namespace(1) {
            *ns = fresh;
        }
    }
}

/// Runs one schedule; returns the number of commands submitted.
fn run(s: &Schedule, totals: &mut Totals, canary: bool) -> Result<Outcome, String> {
    let sim = Sim::new(SimConfig {
        namespaces: vec![SimNamespace { nsid: 1, block_size: BLOCK as u32, blocks: BLOCKS }],
        memory_bytes: 2 << 20,
        crdt: [u16::from(s.retry_delay), 0, 0],
        status_crd: 1,
        cmb_bytes: if s.cmb { 64 << 10 } else { 0 },
        hmpre: if s.hmb { 64 } else { 0 },
        hmmin: 16,
        noiob: if s.split { 3 } else { 0 },
        // SGLs for the scatter lists of heap buffers (not PRP-shaped), but
        // in the schedules with NOIOB: there the lists are split where
        // PRPs break, a command a block.
        sgls: if s.split { 0 } else { 1 },
        doorbell_buffer: if s.shadow { DoorbellBuffer::On } else { DoorbellBuffer::Off },
        ..SimConfig::default()
    });
    ENTRIES.set(if s.small_queues { 4 } else { 16 });
    SHADOW.set(s.shadow);
    CMB.set(s.cmb);
    HMB.set(s.hmb);
    let ctrlr = Controller::new(sim.hal(), options()).map_err(|e| format!("attach: {e}"))?;
    if s.events {
        // Refused by an injected fault, at worst: the schedule goes on.
        let config = AsyncEventConfig::new().with_smart_warnings(0xff).with_namespace_attribute(true);
        let _ = ctrlr.enable_async_events(config);
    }
    let mut ns = ctrlr.namespace(1).map_err(|e| format!("namespace: {e}"))?;
    let mut qps: Vec<Option<Qp<'_>>> = Vec::new();
    for _ in 0..2 {
        qps.push(Some(ctrlr.create_io_qpair(qopts()).map_err(|e| format!("create qpair: {e}"))?));
    }
    let qids: Vec<u16> = qps.iter().flatten().map(|qp| qp.qid()).collect();
    // A removal ends all device activity: it is armed only once every other
    // planned fault has struck (in the top-up phase below).
    let mut removal = None;
    for f in &s.faults {
        if f.kind == FaultKind::Removal {
            removal = Some(f.q);
            continue;
        }
        sim.inject(FaultRule {
            queue: Some(qids[f.q]),
            opcode: None,
            skip: f.nth,
            count: 1,
            fault: fault_of(f.kind),
        });
    }
    for f in &s.admin {
        sim.inject(FaultRule {
            queue: Some(0),
            opcode: Some(f.opcode.0),
            skip: f.nth,
            count: 1,
            fault: fault_of(f.kind),
        });
    }

    let mut model = Model::new();
    let mut out = Outcome::default();
    for op in &s.ops {
        // A churned pair whose creation failed is tried again.
        for slot in qps.iter_mut().filter(|slot| slot.is_none()) {
            *slot = ctrlr.create_io_qpair(qopts()).ok();
        }
        match *op {
            Op::Write { q, lba, blocks, scatter } | Op::Read { q, lba, blocks, scatter } => {
                let Some(qp) = pair(&mut qps, q) else { continue };
                let write = matches!(op, Op::Write { .. });
                let blocks = blocks.min((BLOCKS - lba) as u32);
                if model.conflicts(write, lba, blocks) {
                    poll_into(qp, &mut model);
                    continue;
                }
                let id = model.next_id;
                model.next_id += 1;
                let mut buf = Buf::zeroed(blocks, scatter);
                if write {
                    buf.fill(id, lba);
                }
                let r = if write {
                    qp.write(&ns, lba, blocks, buf, id)
                } else {
                    qp.read(&ns, lba, blocks, buf, id)
                };
                match r {
                    Ok(cid) => {
                        if trace() {
                            eprintln!("submit q{q} id {id} {cid:?} write {write} lba {lba} n {blocks}");
                        }
                        model.submitted(q, id, (write, lba, blocks));
                        out.commands += 1;
                        out.scatter += u64::from(scatter);
                        out.scatter_split += u64::from(scatter && s.split && blocks > 1);
                    }
                    // Refused submissions never reach the device: nothing to track.
                    Err(e) if matches!(e.error, Error::QueueFull) => poll_into(qp, &mut model),
                    Err(e) => refresh_if_stale(&ctrlr, &mut ns, e.error),
                }
            }
            Op::Flush { q } => {
                let Some(qp) = pair(&mut qps, q) else { continue };
                let id = model.next_id;
                model.next_id += 1;
                if qp.flush(&ns, id).is_ok() {
                    model.submitted(q, id, (false, 0, 0));
                    out.commands += 1;
                }
            }
            Op::Poll { q } => {
                if let Some(qp) = pair(&mut qps, q) {
                    poll_into(qp, &mut model);
                }
            }
            Op::Advance { us } => sim.advance(Duration::from_micros(us)),
            Op::Reset => {
                let _ = ctrlr.reset();
            }
            Op::ResetInPoll { q } => {
                if let Some(qp) = pair(&mut qps, q) {
                    let mut once = false;
                    poll_with(qp, &mut model, |_| {
                        if !once {
                            once = true;
                            let _ = ctrlr.reset();
                        }
                    });
                }
            }
            Op::Blip { us } => {
                sim.disappear_for(Duration::from_micros(us));
                for qp in qps.iter_mut().flatten() {
                    poll_into(qp, &mut model);
                }
            }
            Op::Event { event_type, info, lid } => {
                sim.raise_event(AsyncEventType(event_type), AsyncEventInfo(info), Lid(lid));
            }
            Op::Admin => {
                let mut changed = false;
                let _ = ctrlr.process_admin_completions(usize::MAX, |e| changed |= e.is_namespace_changed());
                // A Namespace Attribute Changed notice made the handle
                // stale: get a new one (an injected fault may refuse it;
                // I/O is then refused until the final check gets one).
                if changed {
                    if let Ok(fresh) = ctrlr.namespace(1) {
                        ns = fresh;
                    }
                }
                if ctrlr.async_events_outstanding() > 4 {
                    model.violations.push(format!("{} AERs outstanding", ctrlr.async_events_outstanding()));
                }
            }
            Op::Churn { q } => {
                if let Some(qp) = qps[q].take() {
                    drop(qp);
                    if trace() {
                        eprintln!(
                            "churned q{q}: {} pages, {} shares",
                            sim.stats().live_dma_pages,
                            sim.stats().live_shares
                        );
                    }
                    model.abandon(q);
                }
            }
        }
    }

    // Every schedule carries at least 25 commands per queue (50 in all), so the
    // faults aimed at the first 20 commands of a queue are reached.
    let mut per_queue = [0u64; 2];
    for (q, qp) in qps.iter().enumerate() {
        per_queue[q] = qp.as_ref().map_or(0, |qp| qp.stats().submitted);
    }
    let injected = |sim: &Sim| FaultKind::ALL.iter().map(|k| sim.stats().faults_of(*k)).sum::<u64>();
    let planned = (s.faults.len() + s.admin.len()) as u64;
    let mut attempts = 0;
    // Commands ended by a reset never reached the device: keep going until
    // every planned fault has struck (or the device is gone).
    while (per_queue.iter().any(|&n| n < 25) || injected(&sim) < s.faults.len() as u64)
        && !ctrlr.is_removed()
        && attempts < 4_000
    {
        attempts += 1;
        if let Some(q) = removal {
            // Armed once the other faults struck (admin faults on commands
            // that may never be sent do not hold it back).
            if injected(&sim) + 1 >= s.faults.len() as u64 || injected(&sim) + 1 >= planned {
                sim.inject(FaultRule {
                    queue: Some(qids[q]),
                    opcode: None,
                    skip: 0,
                    count: 1,
                    fault: Fault::Removal,
                });
                removal = None;
            }
        }
        for slot in qps.iter_mut().filter(|slot| slot.is_none()) {
            *slot = ctrlr.create_io_qpair(qopts()).ok();
        }
        let q = if per_queue[0] < 25 {
            0
        } else if per_queue[1] < 25 {
            1
        } else {
            attempts % 2
        };
        let lba = BLOCKS - 1 - (attempts % 8) as u64;
        let conflict = model.conflicts(false, lba, 1);
        let submitted = match pair(&mut qps, q) {
            Some(qp) if !conflict => {
                let id = model.next_id;
                model.next_id += 1;
                match qp.read(&ns, lba, 1, Buf::zeroed(1, false), id) {
                    Ok(_) => {
                        model.submitted(q, id, (false, lba, 1));
                        out.commands += 1;
                        per_queue[q] += 1;
                        true
                    }
                    Err(e) => {
                        if trace() {
                            eprintln!("top-up submit on q{q} refused: {}", e.error);
                        }
                        refresh_if_stale(&ctrlr, &mut ns, e.error);
                        false
                    }
                }
            }
            _ => false,
        };
        if !submitted {
            // The conflicting request may be on the other queue: poll both.
            for qp in qps.iter_mut().flatten() {
                poll_into(qp, &mut model);
            }
            sim.advance(Duration::from_micros(50));
        }
    }

    if trace() {
        eprintln!(
            "top-up done after {attempts} attempts: per queue {per_queue:?}, injected {}, removed {}",
            injected(&sim),
            ctrlr.is_removed()
        );
    }

    // Drain: time passes until every request has its completion (timeouts,
    // aborts and resets do their work), bounded in virtual time.
    let mut rounds = 0;
    while !model.in_flight.is_empty() && rounds < 20_000 {
        for qp in qps.iter_mut().flatten() {
            poll_into(qp, &mut model);
        }
        sim.advance(Duration::from_micros(500));
        rounds += 1;
    }
    let lost = model.in_flight.len() as u64;
    let doubled = model.seen.values().filter(|&&n| n > 1).count() as u64;
    totals.lost += lost;
    totals.doubled += doubled;
    totals.violations += model.violations.len() as u64;
    let stats = sim.stats();
    let mut injected = 0;
    for kind in FaultKind::ALL {
        let n = stats.faults_of(kind);
        injected += n;
        *totals.faults.entry(kind.name()).or_insert(0) += n;
    }
    totals.admin_faults += stats.admin_faults;
    // A disappearance that lasted long enough to be confirmed as a removal
    // ends the schedule early: its planned faults may never strike.
    let gone_in_blip = ctrlr.is_removed() && stats.faults_of(FaultKind::Removal) == 0;
    totals.gone_in_blip += u64::from(gone_in_blip);
    totals.few_faults += u64::from(!gone_in_blip && injected < 3);
    if !gone_in_blip && injected < totals.injected_per_schedule_min {
        totals.injected_per_schedule_min = injected;
        totals.fewest_faults_at = totals.current;
    }
    if lost > 0 || doubled > 0 || !model.violations.is_empty() {
        return Err(format!("lost {lost}, doubled {doubled}, {:?}", model.violations.first()));
    }

    // The faults stop. Without a reset by hand, every queue pair works again
    // within a bounded number of polls, unless the device was removed or the
    // driver said it gave up; then a reset by hand heals it. Every block
    // holds one of the values it may hold.
    sim.clear_faults();
    sim.set_removed(false);
    let removed = ctrlr.is_removed();
    if canary {
        // Behind the model's back: the check below must catch it.
        sim.write_blocks(1, 3, &[0xa5; BLOCK]);
    }
    if !removed {
        for slot in qps.iter_mut() {
            if slot.is_none() {
                *slot = Some(create_after_faults(&ctrlr, &sim, &mut out)?);
            }
        }
        // The handle may be stale (a Namespace Attribute Changed notice): a
        // new one, before the queue pairs heal (the Identify may meet a
        // planned admin fault, and its reset).
        let mut fresh = Err(String::new());
        for _ in 0..HEAL_POLLS {
            fresh = ctrlr.namespace(1).map_err(|e| format!("namespace after the faults: {e}"));
            if fresh.is_ok() {
                break;
            }
            sim.advance(Duration::from_millis(1));
        }
        let ns = fresh?;
        for qp in qps.iter_mut().flatten() {
            if let Some(e) = heal(qp, &sim, &mut model)? {
                if !matches!(e, Error::QueuePairBroken(_) | Error::ControllerFailed) {
                    return Err(format!("queue pair {} failed with {e} after the faults stopped", qp.qid()));
                }
                out.terminal += 1;
                out.gave_up.push(e);
                ctrlr.reset().map_err(|e| format!("reset by hand after a terminal error: {e}"))?;
                if let Some(e) = heal(qp, &sim, &mut model)? {
                    return Err(format!("a reset by hand did not heal queue pair {}: {e}", qp.qid()));
                }
            }
            check_blocks(qp, &ns, &sim, &mut model)?;
        }
    }
    drop(qps);
    if trace() {
        eprintln!("after dropping the queue pairs: {:?}", sim.stats());
    }
    drop(ctrlr);
    let s = sim.stats();
    if !removed && (s.live_dma_pages != 0 || s.live_shares != 0) {
        return Err(format!(
            "DMA pool not back to empty: {} pages, {} shares",
            s.live_dma_pages, s.live_shares
        ));
    }
    if s.hmb_corrupted != 0 || s.hmb_lost != 0 {
        return Err(format!("host memory buffer: {} corrupted, {} lost", s.hmb_corrupted, s.hmb_lost));
    }
    if s.stale_shadow_doorbells != 0 {
        return Err(format!(
            "{} shadow doorbell values the controller could not take",
            s.stale_shadow_doorbells
        ));
    }
    // Every queue fits its CMB slot: every I/O command came from there.
    let io_fetched = s.commands_fetched - s.admin_commands;
    if CMB.get() && s.cmb_fetches != io_fetched {
        return Err(format!("{io_fetched} I/O commands fetched, {} of them from the CMB", s.cmb_fetches));
    }
    if removed {
        // Re-attach: a new controller on the same (now healthy) device.
        totals.reattached += 1;
        let ctrlr = Controller::new(sim.hal(), options()).map_err(|e| format!("re-attach: {e}"))?;
        let ns = ctrlr.namespace(1).map_err(|e| format!("namespace after re-attach: {e}"))?;
        let mut qp: Qp<'_> =
            ctrlr.create_io_qpair(qopts()).map_err(|e| format!("qpair after re-attach: {e}"))?;
        check_blocks(&mut qp, &ns, &sim, &mut model).map_err(|e| format!("after re-attach: {e}"))?;
    }
    if !model.violations.is_empty() {
        return Err(model.violations[0].clone());
    }
    let s = sim.stats();
    if s.bad_frees != 0 || s.bad_unshares != 0 || s.released_in_use != 0 {
        return Err(format!(
            "HAL misuse: {} bad frees, {} bad unshares, {} released in use",
            s.bad_frees, s.bad_unshares, s.released_in_use
        ));
    }
    Ok(out)
}

/// Polls bounding how long healing may take once the faults stop (1 ms of
/// virtual time each): the recovery backoff below doubles from 1 ms over at
/// most 8 attempts.
const HEAL_POLLS: usize = 2_000;

fn options() -> ControllerOptions {
    ControllerOptions::default()
        .with_sq_in_cmb(CMB.get())
        .with_host_memory_buffer(if HMB.get() { 1 << 20 } else { 0 })
        .with_io_timeout(Some(IO_TIMEOUT))
        .with_admin_timeout(IO_TIMEOUT * 4)
        .with_recovery(8, Duration::from_millis(1))
        .with_shadow_doorbells(SHADOW.get())
}

thread_local! {
    /// The queue size of this schedule's queue pairs (see
    /// `Schedule::small_queues`).
    static ENTRIES: std::cell::Cell<u16> = const { std::cell::Cell::new(16) };
    /// Submission queues in the CMB (see `Schedule::cmb`).
    static CMB: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Shadow doorbells (see `Schedule::shadow`).
    static SHADOW: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// A host memory buffer (see `Schedule::hmb`).
    static HMB: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn qopts() -> QpairOptions {
    QpairOptions::default().with_entries(ENTRIES.get()).with_max_transfer_bytes(64 << 10)
}

/// Reads every block through `qp` and checks it against the model; then one
/// write and read-back proves new I/O works.
fn check_blocks(qp: &mut Qp<'_>, ns: &Namespace, sim: &Sim, model: &mut Model) -> Result<(), String> {
    let sync = |qp: &mut Qp<'_>, write: bool, lba: u64, buf: Vec<u8>| -> Result<Vec<u8>, String> {
        let n = (buf.len() / BLOCK) as u32;
        let buf = Buf::One(buf);
        let r = if write { qp.write(ns, lba, n, buf, 0) } else { qp.read(ns, lba, n, buf, 0) };
        r.map_err(|e| format!("submit: {}", e.error))?;
        for _ in 0..10_000 {
            let mut out = None;
            qp.poll(PollLimit::All, |_, c| out = Some((c.result(), c.buffer)));
            if let Some((res, buf)) = out {
                res.map_err(|e| format!("{e}"))?;
                return buf.map(|b| b.flat()).ok_or_else(|| "no buffer".to_string());
            }
            sim.advance(Duration::from_micros(100));
        }
        Err("no completion".into())
    };
    let data = sync(qp, false, 0, vec![0u8; BLOCKS as usize * BLOCK])?;
    for b in 0..BLOCKS {
        let block = &data[b as usize * BLOCK..(b as usize + 1) * BLOCK];
        if which(block, b, &model.blocks[b as usize]).is_none() {
            model
                .violations
                .push(format!("block {b} holds data of no write in {:?}", model.blocks[b as usize]));
        }
    }
    let mut buf = vec![0u8; BLOCK];
    fill(&mut buf, u64::MAX, 7);
    sync(qp, true, 7, buf.clone())?;
    let back = sync(qp, false, 7, vec![0u8; BLOCK])?;
    if back != buf {
        return Err("new I/O after recovery read back wrong data".into());
    }
    model.blocks[7] = BTreeSet::from([u64::MAX]);
    Ok(())
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn random_schedules_with_faults_keep_every_request() {
    // A quick run by default (debug builds in `cargo test`); xtask asks for
    // 10,000 in a release build.
    let schedules = env_u64("NVME_SCHEDULES", 200);
    let seed = env_u64("NVME_SEED", 0x6e76_6d65_2d73_696d);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases: schedules as u32, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    let mut totals = Totals { injected_per_schedule_min: u64::MAX, ..Totals::default() };
    let strategy = schedule();
    // NVME_ONLY=i runs schedule i alone (the failure report names it).
    let only = std::env::var("NVME_ONLY").ok().and_then(|v| v.parse::<u64>().ok());
    for i in 0..schedules {
        let s = strategy.new_tree(&mut runner).expect("schedule").current();
        if only.is_some_and(|o| o != i) {
            continue;
        }
        totals.schedules += 1;
        totals.current = i;
        match catch_unwind(AssertUnwindSafe(|| run(&s, &mut totals, false))) {
            Ok(Ok(out)) => {
                if out.terminal > 0 && std::env::var("NVME_FAILURES").is_ok() {
                    eprintln!(
                        "TERMINAL {i}: {} gave up: {:?}; admin faults {:?}",
                        out.terminal, out.gave_up, s.admin
                    );
                }
                totals.commands += out.commands;
                totals.scatter += out.scatter;
                totals.scatter_split += out.scatter_split;
                totals.terminal += out.terminal;
            }
            Ok(Err(why)) => {
                if std::env::var("NVME_FAILURES").is_ok() {
                    eprintln!("FAIL {i}: {why}");
                }
                totals.not_recovered += 1;
                totals
                    .first_failure
                    .get_or_insert_with(|| format!("schedule {i} (NVME_ONLY={i}): {why}\n{s:?}"));
            }
            Err(_) => {
                totals.panics += 1;
                totals
                    .first_failure
                    .get_or_insert_with(|| format!("schedule {i} (NVME_ONLY={i}): panic\n{s:?}"));
            }
        }
    }
    println!(
        "schedules {}, commands {}, lost {}, doubled {}, panics {}, read/data violations {}, failed schedules {}, re-attached after removal {} (of which confirmed during a brief disappearance {}), terminal errors healed by a reset by hand {}, admin faults {}, fewest faults in a schedule {}, schedules with fewer than 3 {}",
        totals.schedules,
        totals.commands,
        totals.lost,
        totals.doubled,
        totals.panics,
        totals.violations,
        totals.not_recovered,
        totals.reattached,
        totals.gone_in_blip,
        totals.terminal,
        totals.admin_faults,
        totals.injected_per_schedule_min,
        totals.few_faults
    );
    println!(
        "scatter lists of heap buffers among the commands: {} ({} split where PRPs break)",
        totals.scatter, totals.scatter_split
    );
    println!("faults injected: {:?}", totals.faults);
    if let Some(f) = &totals.first_failure {
        println!("first failure: {f}");
    }
    assert_eq!((totals.lost, totals.doubled, totals.panics, totals.not_recovered), (0, 0, 0, 0));
    assert!(
        totals.scatter * 10 >= totals.commands,
        "scatter lists went out: {} of {}",
        totals.scatter,
        totals.commands
    );
    assert!(
        totals.scatter_split * 10 >= totals.scatter,
        "split scatter lists went out: {}",
        totals.scatter_split
    );
    assert!(
        totals.few_faults * 20 <= totals.schedules,
        "more than 5% of schedules had fewer than 3 faults injected ({}; e.g. schedule {})",
        totals.few_faults,
        totals.fewest_faults_at
    );
    assert!(totals.commands >= 50 * totals.schedules / 2, "schedules too short: {totals:?}");
}

/// The canary: a block overwritten behind the model's back must be caught by
/// the final check, so the data check can fail.
#[test]
fn the_data_check_catches_a_corrupted_block() {
    let mut runner =
        TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]));
    let mut s = schedule().new_tree(&mut runner).expect("schedule").current();
    // No removal, so the final check reads the device.
    s.faults.retain(|f| f.kind != FaultKind::Removal);
    let mut totals = Totals::default();
    let why = run(&s, &mut totals, true).err().expect("the corrupted block must be reported");
    assert!(why.contains("block 3"), "{why}");
    // The same schedule without the corruption passes.
    run(&s, &mut totals, false).expect("clean run");
}
