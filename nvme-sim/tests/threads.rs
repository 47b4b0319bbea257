//! The simulator shared between threads: one `Controller<SimHal>` used by
//! several threads at once, each with its own queue pair, while another thread
//! injects faults and resets the controller.
//!
//! `threaded_io_with_faults_and_resets`: four workers share the controller by
//! reference; each creates its own queue pair (16 slots) and owns a disjoint
//! range of namespace 1, keeps several requests in flight (writes of a
//! pattern that encodes thread, LBA and version; reads that check it), and
//! keeps a model of its range: for each block, the set of versions it may
//! hold. A fifth thread injects random faults on the I/O queues and the admin
//! queue (every kind but removal), moves virtual time on, and resets the
//! controller at random. Workers take every submission error as "not
//! submitted, try later". Checked: every submitted request completes exactly
//! once under the CID its submission returned; no read returns data its
//! block cannot hold; no bad free or unshare; once the faults stop, every
//! queue pair serves a write and a read again within 10,000 polls (and at
//! least 5 s of wall-clock time, yielding between polls: another thread
//! may hold the admin queue mid-reset, starved of the simulator's lock or of
//! a core); at the
//! end the backing store matches the models and the DMA pool is empty.
//!
//! `threaded_io_with_queue_pair_churn`: the same, with every worker dropping
//! its queue pair every 250 operations (half the time with requests still in
//! flight, which are then never delivered and whose writes become
//! ambiguous) and creating a new one while the faults go on.
//!
//! A queue pair (or the controller) that reports a terminal error (a
//! recovery step refused with Do Not Retry, or `recovery_attempts` failures
//! in a row) is healed by a reset by hand, as the driver's documentation
//! says; the fault thread's resets are by hand too. Every such reset after
//! the faults stopped is counted in the report. After every run the DMA pool
//! is empty: memory the device might still use was kept in the controller's
//! quarantine and given back after a later reset or the shutdown.
//!
//! The canaries prove that the data check can fail: the checker fed corrupted
//! blocks, and a run in which one block is overwritten behind its model's
//! back.
//!
//! Environment: `NVME_THREADS_OPS` (operations per worker; default 2,000 in
//! debug builds, 20,000 in release), `NVME_THREADS_RUNS` (independent runs,
//! seeds `NVME_THREADS_SEED`, +1, ...; default 8), `NVME_THREADS_ROUNDS`
//! (fault rounds per run; default one per 40 operations of all workers),
//! `NVME_THREADS_SEED` (decimal), `NVME_THREADS_WATCHDOG_SECS` (default 180:
//! a run still going then prints where every thread is and aborts the
//! process). Thread interleavings are not reproducible: a seed fixes the
//! faults and the operations, not their order.
//!
//! What this test found in the driver before recovery healed itself (both
//! fixed since): a queue pair whose re-creation after a reset was refused
//! with an error status stayed failed until someone reset the controller
//! again; and failed queue pair creations leaked the ring pages a Create
//! command had named, even once a later reset had made them free.
//!
//! Not for Miri: the driver reads its completion queues without the
//! simulator's lock while the simulated device writes them from other threads
//! (see "Threads" in `SimHal`'s documentation).

mod common;

use common::{assert_clean, assert_no_bad_frees};
use core::time::Duration;
use nvme_nostd::{
    Cid, Completion, Controller, ControllerOptions, Error, IoQueuePair, Namespace, PollLimit, QpairOptions,
    QueueStats,
};
use nvme_sim::{
    DoorbellBuffer, Fault, FaultKind, FaultRule, QueueFilter, RandomFaults, Sim, SimConfig, SimHal,
    SplitMix64,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::time::Instant;

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>() {}
fn assert_clone<T: Clone>() {}

/// Compile-time: the simulator, its HAL and a controller on it can be
/// shared between threads, and a queue pair can move to its own thread.
#[test]
fn sim_hal_and_controller_are_send_and_sync() {
    assert_send_sync::<Sim>();
    assert_clone::<Sim>();
    assert_send_sync::<SimHal>();
    assert_send_sync::<Controller<SimHal>>();
    assert_send::<IoQueuePair<'static, SimHal, Vec<u8>, u32, 16>>();
}

const WORKERS: usize = 4;
const SLOTS: usize = 16;
const BLOCK: usize = 512;
/// Blocks per worker: small, so that blocks are written and read again often.
const RANGE: u64 = 64;
const MAX_BLOCKS: u64 = 4;
/// Requests a worker keeps in flight at most.
const DEPTH: usize = 8;
const IO_TIMEOUT: Duration = Duration::from_millis(5);
const ADMIN_TIMEOUT: Duration = Duration::from_millis(20);
/// Polls (with virtual time moving 100 µs each) a worker has to get a write
/// and a read through once the faults stopped.
const HEAL_POLLS: u32 = 10_000;
/// The least wall-clock time the heal check gives a queue pair (see `worker`).
const HEAL_WALL: Duration = Duration::from_secs(5);
/// Polls (100 µs each) for the requests in flight to complete once the
/// faults stopped: far beyond the I/O timeout and its escalation.
const DRAIN_POLLS: u32 = 20_000;
/// Consecutive refused submissions after which a worker stops its
/// operations, once the faults have stopped (the heal check then reports).
const STALL_LIMIT: u64 = 10_000;
/// Operations between two queue pair re-creations in the churn runs.
const CHURN_EVERY: u64 = 250;
/// Refused creations after which a worker gives up once the faults stopped.
const CREATE_LIMIT: u64 = 10_000;
/// The block worker 0 corrupts in the canary run (relative to its range).
const CANARY_BLOCK: u64 = 5;
const MAGIC: u64 = 0x7468_7265_6164_7300;

type Qp<'c> = IoQueuePair<'c, SimHal, Vec<u8>, u64, SLOTS>;
type Done = Completion<Vec<u8>, u64>;

// ----- the data pattern and the checker -----

/// The bytes of `thread`'s write `version` of block `lba`: three header words
/// (thread, LBA, version) and a pseudo-random tail derived from them.
/// Version 0 is the block never written: zeros.
fn block_of(thread: usize, lba: u64, version: u64) -> Vec<u8> {
    if version == 0 {
        return vec![0; BLOCK];
    }
    let head = [MAGIC ^ thread as u64, lba, version];
    let mut rng = SplitMix64::new((thread as u64) ^ lba.rotate_left(17) ^ version.rotate_left(41));
    let mut out = Vec::with_capacity(BLOCK);
    for w in 0..BLOCK / 8 {
        let v = if w < head.len() { head[w] } else { rng.next_u64() };
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// What a block holds, in words, for failure messages.
fn describe(block: &[u8]) -> String {
    if block.iter().all(|&b| b == 0) {
        return "zeros (never written)".into();
    }
    let word = |i: usize| u64::from_le_bytes(block[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let thread = (word(0) ^ MAGIC) as usize;
    let (lba, version) = (word(1), word(2));
    if thread < 64 && block_of(thread, lba, version) == block {
        format!("worker {thread}'s write of block {lba} version {version}")
    } else {
        format!("no write's bytes (header {:#x} {:#x} {:#x})", word(0), word(1), word(2))
    }
}

/// The checker of one worker's range: for each block, the set of versions it
/// may hold. A successful write replaces the set with its version; a failed
/// or ambiguous one (any error) adds its version.
#[derive(Debug)]
struct Model {
    thread: usize,
    first: u64,
    blocks: Vec<BTreeSet<u64>>,
}

impl Model {
    fn new(thread: usize, first: u64) -> Model {
        Model { thread, first, blocks: vec![BTreeSet::from([0]); RANGE as usize] }
    }

    fn set(&mut self, lba: u64) -> &mut BTreeSet<u64> {
        &mut self.blocks[(lba - self.first) as usize]
    }

    fn written(&mut self, lba: u64, n: u64, version: u64, ok: bool) {
        for b in lba..lba + n {
            let set = self.set(b);
            if ok {
                *set = BTreeSet::from([version]);
            } else {
                set.insert(version);
            }
        }
    }

    /// Checks `data`, read from `lba` on: each block must be, byte for byte,
    /// one of the versions its set holds. A block that matches narrows its
    /// set to that version (no write to it was in flight, and every write
    /// whose completion was delivered is out of the device). Returns one line
    /// per block that matches none.
    fn check(&mut self, lba: u64, data: &[u8]) -> Vec<String> {
        let thread = self.thread;
        let mut bad = Vec::new();
        for (i, block) in data.chunks(BLOCK).enumerate() {
            let b = lba + i as u64;
            let set = self.set(b);
            match set.iter().copied().find(|&v| block_of(thread, b, v) == block) {
                Some(v) => *set = BTreeSet::from([v]),
                None => bad.push(format!(
                    "worker {thread} block {b}: holds {}, but may hold only versions {set:?}",
                    describe(block)
                )),
            }
        }
        bad
    }
}

/// Proves the checker can fail: corrupted, foreign and stale blocks are
/// reported, and only the versions a block may hold pass.
#[test]
fn canary_checker_rejects_corrupted_reads() {
    let mut m = Model::new(1, 64);
    m.written(64, 2, 7, true);
    m.written(66, 1, 8, false);
    assert!(m.check(64, &block_of(1, 64, 7)).is_empty(), "the version written");
    let mut flipped = block_of(1, 65, 7);
    flipped[300] ^= 1;
    let bad = m.check(65, &flipped);
    assert_eq!(bad.len(), 1, "one flipped bit: {bad:?}");
    assert!(bad[0].contains("block 65") && bad[0].contains("no write's bytes"), "{bad:?}");
    assert_eq!(m.check(64, &block_of(2, 64, 7)).len(), 1, "another worker's write");
    assert_eq!(m.check(64, &block_of(1, 65, 7)).len(), 1, "another block's write");
    assert_eq!(m.check(64, &block_of(1, 64, 6)).len(), 1, "a version overwritten by a successful write");
    assert_eq!(m.check(64, &[0; BLOCK]).len(), 1, "zeros after a successful write");
    // The whole range in one read: one bad block among good ones.
    let mut two = block_of(1, 64, 7);
    two.extend(block_of(1, 65, 6));
    assert_eq!(m.check(64, &two).len(), 1);
    // A failed write: either value passes, and a read narrows the set.
    assert!(m.check(66, &block_of(1, 66, 8)).is_empty(), "the failed write landed");
    assert_eq!(m.check(66, &[0; BLOCK]).len(), 1, "read back once: the old value is gone");
}

// ----- what the threads share and report -----

/// Where a worker is, for the watchdog.
const PHASES: [&str; 7] = ["create", "ops", "wait for faults to stop", "drain", "heal", "drop", "done"];

struct Shared {
    faults_done: AtomicBool,
    /// Workers still in their operation phase.
    active: AtomicUsize,
    phase: [AtomicU8; WORKERS],
    submitted: [AtomicU64; WORKERS],
    completed: [AtomicU64; WORKERS],
    fault_round: AtomicU64,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            faults_done: AtomicBool::new(false),
            active: AtomicUsize::new(WORKERS),
            phase: Default::default(),
            submitted: Default::default(),
            completed: Default::default(),
            fault_round: AtomicU64::new(0),
        }
    }

    fn total_submitted(&self) -> u64 {
        self.submitted.iter().map(|s| s.load(SeqCst)).sum()
    }

    fn snapshot(&self) -> String {
        let mut s = format!(
            "fault round {}, faults stopped {}\n",
            self.fault_round.load(SeqCst),
            self.faults_done.load(SeqCst)
        );
        for t in 0..WORKERS {
            let _ = writeln!(
                s,
                "  worker {t}: phase {}, submitted {}, completed {}",
                PHASES[self.phase[t].load(SeqCst) as usize],
                self.submitted[t].load(SeqCst),
                self.completed[t].load(SeqCst)
            );
        }
        s
    }
}

/// Aborts the process (after printing where every thread is) if the run is
/// not over by the deadline: a deadlock fails instead of hanging.
struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(shared: Arc<Shared>, limit: Duration) -> Watchdog {
        let (stop, wait) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
                // Past the harness's capture, which the abort would lose.
                report_uncaptured(&format!(
                    "threads watchdog: the run is not over after {limit:?}: deadlock or livelock?\n{}",
                    shared.snapshot()
                ));
                std::process::abort();
            }
        });
        Watchdog { stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone, Copy)]
struct RunConfig {
    ops: u64,
    rounds: u64,
    seed: u64,
    /// Worker 0 overwrites one of its blocks behind its model's back.
    canary: bool,
    /// Every `CHURN_EVERY` operations, workers drop their queue pair (half
    /// the time with requests still in flight) and create a new one.
    churn: bool,
    /// The controller offers shadow doorbells (read as QEMU 7.2 does) and
    /// the driver uses them: every second run.
    shadow: bool,
}

/// One worker's account.
#[derive(Debug)]
struct WorkerReport {
    thread: usize,
    qid: u16,
    /// Operations submitted in the operation phase.
    ops_done: u64,
    /// The operation phase ended early: the queue pair refused every
    /// submission for `STALL_LIMIT` tries after the faults stopped. Holds
    /// its failure then.
    stalled: Option<Option<Error>>,
    submitted: u64,
    completed: u64,
    /// In flight when their queue pair was dropped (churn): never delivered.
    abandoned: u64,
    /// Queue pairs created after the first (churn).
    recreated: u64,
    create_errors: BTreeMap<String, u64>,
    ok: u64,
    completion_errors: BTreeMap<String, u64>,
    submit_errors: BTreeMap<String, u64>,
    /// Completions twice, of unknown requests, under another CID, without
    /// their buffer; CIDs handed out twice.
    violations: Vec<String>,
    /// Reads whose data no model allows.
    mismatches: Vec<String>,
    /// Requests still in flight after the drain.
    lost: u64,
    /// Polls the write and read after the faults needed, or why they failed.
    heal: Result<u32, String>,
    /// Resets by hand this worker made after the faults stopped, for a
    /// queue pair or controller that reported a terminal error.
    resets_by_hand: u64,
    stats: QueueStats,
    failure: Option<Error>,
    model: Model,
}

/// A request in flight.
struct Req {
    write: bool,
    lba: u64,
    n: u64,
    version: u64,
    cid: Cid,
}

struct Worker<'a> {
    t: usize,
    shared: &'a Shared,
    in_flight: BTreeMap<u64, Req>,
    live_cids: BTreeSet<Cid>,
    delivered: BTreeSet<u64>,
    next_id: u64,
    next_version: u64,
    /// (request id, result) of each completion, while recorded.
    events: Option<Vec<(u64, Result<(), Error>)>>,
    r: WorkerReport,
}

/// The variant name of an error, for counting.
fn kind(e: &Error) -> String {
    let s = format!("{e:?}");
    s.split(['(', ' ', '{']).next().unwrap_or("?").to_string()
}

impl Worker<'_> {
    fn conflicts(&self, write: bool, lba: u64, n: u64) -> bool {
        self.in_flight.values().any(|q| (write || q.write) && lba < q.lba + q.n && q.lba < lba + n)
    }

    /// Submits a write (of a new version) or a read; on refusal counts the
    /// error and returns it (nothing was submitted).
    fn submit(
        &mut self,
        qp: &mut Qp<'_>,
        ns: &Namespace,
        write: bool,
        lba: u64,
        n: u64,
    ) -> Result<u64, Error> {
        let id = self.next_id;
        let version = if write { self.next_version } else { 0 };
        let r = if write {
            let buf: Vec<u8> = (lba..lba + n).flat_map(|b| block_of(self.t, b, version)).collect();
            qp.write(ns, lba, n as u32, buf, id)
        } else {
            qp.read(ns, lba, n as u32, vec![0; n as usize * BLOCK], id)
        };
        match r {
            Ok(cid) => {
                self.next_id += 1;
                if write {
                    self.next_version += 1;
                }
                if !self.live_cids.insert(cid) {
                    self.r.violations.push(format!("CID {} handed out while in flight", cid.0));
                }
                self.in_flight.insert(id, Req { write, lba, n, version, cid });
                self.r.submitted += 1;
                self.shared.submitted[self.t].fetch_add(1, SeqCst);
                Ok(id)
            }
            Err(e) => {
                *self.r.submit_errors.entry(kind(&e.error)).or_insert(0) += 1;
                if e.context != id || e.buffer.len() != n as usize * BLOCK {
                    self.r.violations.push(format!("refused submission of request {id} gave back another"));
                }
                Err(e.error)
            }
        }
    }

    fn complete(&mut self, c: Done) {
        let id = c.context;
        let Some(req) = self.in_flight.remove(&id) else {
            let what = if self.delivered.contains(&id) { "a second time" } else { "but was never submitted" };
            self.r.violations.push(format!("request {id} (CID {}) completed {what}", c.cid.0));
            return;
        };
        self.delivered.insert(id);
        self.live_cids.remove(&req.cid);
        self.r.completed += 1;
        self.shared.completed[self.t].fetch_add(1, SeqCst);
        if c.cid != req.cid {
            self.r.violations.push(format!(
                "request {id} completed under CID {}, its submission returned {}",
                c.cid.0, req.cid.0
            ));
        }
        let result = c.result();
        match result {
            Ok(()) => self.r.ok += 1,
            Err(e) => *self.r.completion_errors.entry(kind(&e)).or_insert(0) += 1,
        }
        match &c.buffer {
            None => self.r.violations.push(format!("request {id} completed ({result:?}) without its buffer")),
            Some(buf) if !req.write && result.is_ok() => {
                let bad = self.r.model.check(req.lba, &buf[..req.n as usize * BLOCK]);
                self.r.mismatches.extend(bad);
            }
            Some(_) => {}
        }
        if req.write {
            self.r.model.written(req.lba, req.n, req.version, result.is_ok());
        }
        if let Some(events) = &mut self.events {
            events.push((id, result));
        }
    }

    /// The queue pair is dropped with these requests in flight: they are
    /// never delivered, and their writes may or may not have landed.
    fn abandon(&mut self) {
        for req in std::mem::take(&mut self.in_flight).into_values() {
            if req.write {
                self.r.model.written(req.lba, req.n, req.version, false);
            }
            self.r.abandoned += 1;
        }
        self.live_cids.clear();
    }

    /// Polls (time moving 100 µs each) until nothing is in flight, at most
    /// `DRAIN_POLLS` times.
    /// Polls until nothing is in flight: at most DRAIN_POLLS polls, or
    /// HEAL_WALL of wall-clock time if that is longer (each poll yields, so
    /// another thread holding the admin queue mid-reset gets to finish).
    fn drain(&mut self, qp: &mut Qp<'_>, sim: &Sim) {
        let began = Instant::now();
        let mut polls = 0;
        while polls < DRAIN_POLLS || began.elapsed() < HEAL_WALL {
            if self.in_flight.is_empty() && qp.in_flight() == 0 {
                break;
            }
            polls += 1;
            self.poll(qp);
            sim.advance(Duration::from_micros(100));
            std::thread::yield_now();
        }
    }

    fn poll(&mut self, qp: &mut Qp<'_>) -> usize {
        let mut done = Vec::new();
        qp.poll(PollLimit::All, |_, c| done.push(c));
        let n = done.len();
        for c in done {
            self.complete(c);
        }
        n
    }
}

fn set_phase(shared: &Shared, t: usize, phase: &str) {
    let i = PHASES.iter().position(|p| *p == phase).expect("a phase");
    shared.phase[t].store(i as u8, SeqCst);
}

// ----- the threads -----

#[allow(clippy::too_many_arguments)]
fn worker(
    t: usize,
    ctrlr: &Controller<SimHal>,
    ns: &Namespace,
    sim: &Sim,
    shared: &Shared,
    start: &Barrier,
    qids: &Mutex<[u16; WORKERS]>,
    cfg: RunConfig,
) -> Result<WorkerReport, String> {
    let first = t as u64 * RANGE;
    // A reset's revalidation makes the handle stale when it cannot vouch
    // for the namespace (an Identify the faults refused): a new one is got,
    // as an application would.
    let mut ns = *ns;
    let renew = |ns: &mut Namespace, e: Error| {
        if e == Error::InvalidArgument(nvme_nostd::Argument::StaleNamespace) {
            if let Ok(fresh) = ctrlr.namespace(1) {
                *ns = fresh;
            }
        }
    };
    let create =
        || ctrlr.create_io_qpair(QpairOptions::default().with_entries(32).with_max_transfer_bytes(64 << 10));
    let publish = |qid: u16| qids.lock().unwrap_or_else(|e| e.into_inner())[t] = qid;
    let created: Result<Qp<'_>, String> = create().map_err(|e| format!("worker {t}: create_io_qpair: {e}"));
    if let Ok(qp) = &created {
        publish(qp.qid());
    }
    // Everyone (the fault thread too) starts once every queue pair exists.
    start.wait();
    let mut qp = created?;
    let mut w = Worker {
        t,
        shared,
        in_flight: BTreeMap::new(),
        live_cids: BTreeSet::new(),
        delivered: BTreeSet::new(),
        next_id: 1,
        next_version: 1,
        events: None,
        r: WorkerReport {
            thread: t,
            qid: qp.qid(),
            ops_done: 0,
            stalled: None,
            submitted: 0,
            completed: 0,
            abandoned: 0,
            recreated: 0,
            create_errors: BTreeMap::new(),
            ok: 0,
            completion_errors: BTreeMap::new(),
            submit_errors: BTreeMap::new(),
            violations: Vec::new(),
            mismatches: Vec::new(),
            lost: 0,
            heal: Err("not tried".into()),
            resets_by_hand: 0,
            stats: QueueStats::default(),
            failure: None,
            model: Model::new(t, first),
        },
    };
    let mut rng = SplitMix64::new(cfg.seed ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));

    // Operations: bursts of submissions, then a poll.
    set_phase(shared, t, "ops");
    let mut refused_in_a_row = 0u64;
    // When the current run of refusals began (a stall needs STALL_LIMIT of
    // them and HEAL_WALL of wall-clock time: see the heal check).
    let mut refused_since = Instant::now();
    let mut next_churn = CHURN_EVERY;
    while w.r.ops_done < cfg.ops {
        if cfg.churn && w.r.ops_done >= next_churn {
            next_churn += CHURN_EVERY;
            // Half the time with requests in flight: dropping the pair
            // deletes its queues (or resets the controller) first.
            if rng.below(2) == 0 {
                w.drain(&mut qp, sim);
            }
            w.abandon();
            publish(0);
            drop(qp);
            // Refusals once the faults stopped, and since when: the ones
            // before are the faults' doing, however long they went on.
            let mut refused = 0u64;
            let mut refused_since = None;
            qp = loop {
                match create() {
                    Ok(q) => break q,
                    Err(e) => {
                        *w.r.create_errors.entry(kind(&e)).or_insert(0) += 1;
                        if shared.faults_done.load(SeqCst) {
                            let since = *refused_since.get_or_insert_with(Instant::now);
                            refused += 1;
                            if refused == CREATE_LIMIT {
                                // The controller may have given up (its
                                // resets failed `recovery_attempts` times):
                                // a reset by hand heals that, once.
                                let _ = ctrlr.reset();
                                w.r.resets_by_hand += 1;
                            }
                            if refused >= 2 * CREATE_LIMIT && since.elapsed() >= HEAL_WALL {
                                // A queue pair that does not heal: the heal
                                // check reports it.
                                w.r.heal = Err(format!(
                                    "worker {t}: no new queue pair after {refused} tries once the faults \
                                     stopped: {e}"
                                ));
                                w.r.failure = Some(e);
                                shared.active.fetch_sub(1, SeqCst);
                                set_phase(shared, t, "done");
                                return Ok(w.r);
                            }
                        }
                        sim.advance(Duration::from_micros(10));
                        std::thread::yield_now();
                    }
                }
            };
            publish(qp.qid());
            w.r.qid = qp.qid();
            w.r.recreated += 1;
        }
        let mut refused = false;
        for _ in 0..1 + rng.below(DEPTH as u64) {
            if w.in_flight.len() >= DEPTH || w.r.ops_done >= cfg.ops {
                break;
            }
            let write = rng.below(100) < 55;
            let n = 1 + rng.below(MAX_BLOCKS);
            let lba = first + rng.below(RANGE - n + 1);
            if w.conflicts(write, lba, n) {
                continue;
            }
            match w.submit(&mut qp, &ns, write, lba, n) {
                Ok(_) => {
                    w.r.ops_done += 1;
                    refused_in_a_row = 0;
                    refused_since = Instant::now();
                }
                Err(e) => {
                    renew(&mut ns, e);
                    refused = true;
                    break;
                }
            }
        }
        w.poll(&mut qp);
        if refused {
            // Failed, recovering, or full: back off and let time pass.
            // Counted once the faults stopped: until then, refusals are
            // the faults' doing.
            if shared.faults_done.load(SeqCst) {
                if refused_in_a_row == 0 {
                    refused_since = Instant::now();
                }
                refused_in_a_row += 1;
            }
            sim.advance(Duration::from_micros(10));
            std::thread::yield_now();
            if shared.faults_done.load(SeqCst) && terminal(qp.failure()) {
                // The driver gave up and said so: a reset by hand heals.
                let _ = ctrlr.reset();
                w.r.resets_by_hand += 1;
                refused_in_a_row = 0;
            }
            if refused_in_a_row >= STALL_LIMIT
                && refused_since.elapsed() >= HEAL_WALL
                && shared.faults_done.load(SeqCst)
            {
                w.r.stalled = Some(qp.failure());
                break;
            }
        }
    }
    shared.active.fetch_sub(1, SeqCst);

    // The faults go on until the fault thread's rounds are over.
    set_phase(shared, t, "wait for faults to stop");
    while !shared.faults_done.load(SeqCst) {
        w.poll(&mut qp);
        std::thread::sleep(Duration::from_micros(200));
    }

    // Everything in flight completes (timeouts, aborts and resets included).
    set_phase(shared, t, "drain");
    w.drain(&mut qp, sim);
    w.r.lost = w.in_flight.len() as u64;
    let lost: Vec<(u64, u64, u64)> =
        w.in_flight.values().filter(|q| q.write).map(|q| (q.lba, q.n, q.version)).collect();
    for (lba, n, version) in lost {
        // A lost write may still land: the final check allows it.
        w.r.model.written(lba, n, version, false);
    }

    if cfg.canary && t == 0 {
        // Behind the model's back: another worker's bytes in one block.
        sim.write_blocks(1, first + CANARY_BLOCK, &block_of(2, first + CANARY_BLOCK, 1));
    }

    // Healing: a write, then a read of the whole range (checked against the
    // model), within HEAL_POLLS polls.
    set_phase(shared, t, "heal");
    w.events = Some(Vec::new());
    #[derive(PartialEq)]
    enum Step {
        Write,
        WaitWrite(u64),
        Read,
        WaitRead(u64),
        Done,
    }
    let mut step = Step::Write;
    let mut last_error = None;
    let mut healed = None;
    let mut heal_resets = 0;
    // The bound counts this worker's polls, but another thread may hold the
    // admin queue mid-reset meanwhile, starved of the simulator's lock (not
    // fair) or of a core: each poll yields, and the bound is at least
    // HEAL_WALL of wall-clock time too.
    let began = Instant::now();
    let mut i = 0;
    while i < HEAL_POLLS || began.elapsed() < HEAL_WALL {
        i += 1;
        if terminal(qp.failure()) && heal_resets < 3 {
            // The driver gave up and said so: a reset by hand heals.
            heal_resets += 1;
            let _ = ctrlr.reset();
            w.r.resets_by_hand += 1;
        }
        match step {
            Step::Write => match w.submit(&mut qp, &ns, true, first, 1) {
                Ok(id) => step = Step::WaitWrite(id),
                Err(e) => {
                    renew(&mut ns, e);
                    last_error = Some(format!("write refused: {e}"));
                }
            },
            Step::Read => match w.submit(&mut qp, &ns, false, first, RANGE) {
                Ok(id) => step = Step::WaitRead(id),
                Err(e) => {
                    renew(&mut ns, e);
                    last_error = Some(format!("read refused: {e}"));
                }
            },
            _ => {}
        }
        w.poll(&mut qp);
        for (id, result) in w.events.replace(Vec::new()).unwrap_or_default() {
            match (&step, result) {
                (Step::WaitWrite(x), Ok(())) if *x == id => step = Step::Read,
                (Step::WaitWrite(x), Err(e)) if *x == id => {
                    last_error = Some(format!("write failed: {e}"));
                    step = Step::Write;
                }
                (Step::WaitRead(x), Ok(())) if *x == id => step = Step::Done,
                (Step::WaitRead(x), Err(e)) if *x == id => {
                    last_error = Some(format!("read failed: {e}"));
                    step = Step::Read;
                }
                _ => {}
            }
        }
        if step == Step::Done {
            healed = Some(i);
            break;
        }
        sim.advance(Duration::from_micros(100));
        std::thread::yield_now();
    }
    w.r.heal = healed.ok_or_else(|| {
        format!(
            "worker {t} (queue {}): no successful write and read within {i} polls and {:?} after the faults \
             stopped; queue pair failure: {:?}; last error: {}; in flight {}, CSTS {:?}, {:?}, sim {:?}",
            qp.qid(),
            began.elapsed(),
            qp.failure(),
            last_error.unwrap_or_else(|| "none (no completion)".into()),
            qp.in_flight(),
            ctrlr.csts(),
            qp.stats(),
            sim.stats(),
        )
    });
    // What the heal loop left in flight completes too.
    w.drain(&mut qp, sim);
    w.r.lost = w.r.lost.max(w.in_flight.len() as u64);
    w.r.stats = qp.stats();
    w.r.failure = qp.failure();
    set_phase(shared, t, "drop");
    drop(qp);
    set_phase(shared, t, "done");
    Ok(w.r)
}

/// Whether `failure` says the driver gave up (so only a reset by hand heals).
fn terminal(failure: Option<Error>) -> bool {
    matches!(failure, Some(Error::QueuePairBroken(b)) if b.terminal)
}

/// What the fault thread did.
#[derive(Debug, Default)]
struct FaultReport {
    io_rules: u64,
    admin_rules: u64,
    random_on: u64,
    random_off: u64,
    resets_ok: u64,
    reset_errors: BTreeMap<String, u64>,
}

/// Every fault kind but removal.
fn kinds() -> Vec<FaultKind> {
    FaultKind::ALL.iter().copied().filter(|k| *k != FaultKind::Removal).collect()
}

fn random_fault(kind: FaultKind, rng: &mut SplitMix64) -> Fault {
    const STATUS: [(u8, u8); 4] = [(0, 0x06), (0, 0x04), (2, 0x81), (0, 0x02)];
    let status = STATUS[rng.below(STATUS.len() as u64) as usize];
    let delay = Duration::from_micros(1 + rng.below(3 * IO_TIMEOUT.as_micros() as u64));
    kind.fault(status, delay)
}

fn fault_thread(
    ctrlr: &Controller<SimHal>,
    sim: &Sim,
    shared: &Shared,
    start: &Barrier,
    qids: &Mutex<[u16; WORKERS]>,
    cfg: RunConfig,
) -> FaultReport {
    start.wait();
    let kinds = kinds();
    let mut rng = SplitMix64::new(cfg.seed ^ 0xfa17_fa17_fa17_fa17);
    let mut r = FaultReport::default();
    let total = cfg.ops * WORKERS as u64;
    for round in 0..cfg.rounds {
        shared.fault_round.store(round, SeqCst);
        // Spread the rounds over the workers' operations (and go on when
        // they are stuck, or done).
        let target = (round + 1) * total / cfg.rounds.max(1);
        let waiting = Instant::now();
        while shared.total_submitted() < target
            && shared.active.load(SeqCst) > 0
            && waiting.elapsed() < Duration::from_millis(20)
        {
            std::thread::sleep(Duration::from_micros(100));
        }
        let fault_kind = kinds[rng.below(kinds.len() as u64) as usize];
        // The workers' queues now (they change in the churn runs).
        let qids: Vec<u16> =
            qids.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().filter(|&q| q != 0).collect();
        match rng.below(100) {
            0..40 if !qids.is_empty() => {
                let queue = qids[rng.below(qids.len() as u64) as usize];
                let fault = random_fault(fault_kind, &mut rng);
                sim.inject(FaultRule {
                    queue: Some(queue),
                    opcode: None,
                    skip: rng.below(8),
                    count: 1,
                    fault,
                });
                r.io_rules += 1;
            }
            40..55 => {
                let fault = random_fault(fault_kind, &mut rng);
                sim.inject(FaultRule { queue: Some(0), opcode: None, skip: rng.below(3), count: 1, fault });
                r.admin_rules += 1;
            }
            55..65 => {
                let queues = if rng.below(10) < 7 { QueueFilter::Io } else { QueueFilter::All };
                sim.inject_random_with(RandomFaults {
                    seed: rng.next_u64(),
                    probability_per_command: 0.002 + rng.next_f64() * 0.02,
                    kinds: kinds.clone(),
                    queues,
                });
                r.random_on += 1;
            }
            65..75 => {
                sim.inject_random_with(RandomFaults {
                    seed: 0,
                    probability_per_command: 0.0,
                    kinds: Vec::new(),
                    queues: QueueFilter::All,
                });
                r.random_off += 1;
            }
            75..80 => match ctrlr.reset() {
                Ok(()) => r.resets_ok += 1,
                Err(e) => *r.reset_errors.entry(kind(&e)).or_insert(0) += 1,
            },
            _ => {}
        }
        sim.advance(Duration::from_micros(rng.below(300)));
    }
    sim.clear_faults();
    shared.faults_done.store(true, SeqCst);
    r
}

// ----- the run -----

struct RunReport {
    workers: Vec<Result<WorkerReport, String>>,
    faults: Result<FaultReport, String>,
    /// The backing store against each model, after everything was dropped.
    store_mismatches: Vec<Vec<String>>,
    summary: String,
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn run(cfg: RunConfig) -> (Sim, RunReport) {
    let began = Instant::now();
    let doorbell_buffer = if cfg.shadow { DoorbellBuffer::On } else { DoorbellBuffer::Off };
    let sim = Sim::new(SimConfig { doorbell_buffer, ..SimConfig::default() });
    let options = ControllerOptions::default()
        .with_shadow_doorbells(cfg.shadow)
        .with_io_timeout(Some(IO_TIMEOUT))
        .with_admin_timeout(ADMIN_TIMEOUT)
        // Backoff from 1 ms: at most 8 attempts, about 0.2 s in all.
        .with_recovery(8, Duration::from_millis(1));
    let ctrlr = Controller::new(sim.hal(), options).expect("attach");
    let ns = ctrlr.namespace(1).expect("namespace 1");
    assert!(ns.blocks() >= RANGE * WORKERS as u64 && ns.block_size() as usize == BLOCK);
    let shared = Arc::new(Shared::new());
    let watchdog = Watchdog::start(
        shared.clone(),
        Duration::from_secs(env_u64("NVME_THREADS_WATCHDOG_SECS").unwrap_or(180)),
    );
    let start = Barrier::new(WORKERS + 1);
    let qids = Mutex::new([0u16; WORKERS]);

    let (workers, faults) = std::thread::scope(|s| {
        let (ctrlr, ns, sim, shared, start, qids) = (&ctrlr, &ns, &sim, &*shared, &start, &qids);
        let handles: Vec<_> = (0..WORKERS)
            .map(|t| s.spawn(move || worker(t, ctrlr, ns, sim, shared, start, qids, cfg)))
            .collect();
        let faults = s.spawn(move || fault_thread(ctrlr, sim, shared, start, qids, cfg));
        let workers: Vec<_> = handles
            .into_iter()
            .enumerate()
            .map(|(t, h)| {
                h.join().map_err(|p| format!("worker {t} panicked: {}", panic_message(p))).and_then(|r| r)
            })
            .collect();
        let faults = faults.join().map_err(|p| format!("fault thread panicked: {}", panic_message(p)));
        (workers, faults)
    });
    drop(watchdog);
    let wall = began.elapsed();

    // Nothing freed twice or while the device named it, whatever the faults.
    assert_no_bad_frees(&sim);
    let stats = sim.stats();
    drop(ctrlr);

    let mut store_mismatches = Vec::new();
    let mut workers = workers;
    for w in workers.iter_mut().flatten() {
        let data = sim.read_blocks(1, w.model.first, RANGE);
        store_mismatches.push(w.model.check(w.model.first, &data));
    }

    let mut summary = format!(
        "threads: seed {}, {} ops per worker, {} fault rounds{}, wall {wall:.2?}\n",
        cfg.seed,
        cfg.ops,
        cfg.rounds,
        if cfg.churn { ", queue pair churn" } else { "" }
    );
    for w in &workers {
        match w {
            Ok(w) => {
                let _ = writeln!(
                    summary,
                    "  worker {} (queue {}): ops {}{}, submitted {}, completed {} ({} ok), errors at completion {:?}, \
                     refused submissions {:?}, lost {}, violations {}, mismatches {}, heal {:?}, failure {:?}\n    {:?}",
                    w.thread,
                    w.qid,
                    w.ops_done,
                    if w.stalled.is_some() { " (stalled)" } else { "" },
                    w.submitted,
                    w.completed,
                    w.ok,
                    w.completion_errors,
                    w.submit_errors,
                    w.lost,
                    w.violations.len(),
                    w.mismatches.len(),
                    w.heal,
                    w.failure,
                    w.stats
                );
                if w.recreated > 0 || !w.create_errors.is_empty() {
                    let _ = writeln!(
                        summary,
                        "    queue pairs re-created {}, requests abandoned with them {}, refused creations {:?}",
                        w.recreated, w.abandoned, w.create_errors
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(summary, "  {e}");
            }
        }
    }
    let _ = writeln!(summary, "  fault thread: {faults:?}");
    let injected: BTreeMap<&str, u64> =
        FaultKind::ALL.iter().map(|k| (k.name(), stats.faults_of(*k))).filter(|(_, n)| *n > 0).collect();
    let _ = writeln!(summary, "  faults injected: {injected:?}; virtual time {:.2?}", sim.now());
    (sim, RunReport { workers, faults, store_mismatches, summary })
}

/// The invariants every run must keep (the heal check aside).
fn check_invariants(report: &RunReport, canary: bool) {
    let summary = &report.summary;
    if let Err(e) = &report.faults {
        panic!("{e}\n{summary}");
    }
    for w in &report.workers {
        let w = match w {
            Ok(w) => w,
            Err(e) => panic!("{e}\n{summary}"),
        };
        assert!(w.violations.is_empty(), "worker {}: {:#?}\n{summary}", w.thread, w.violations);
        assert_eq!(w.lost, 0, "worker {}: requests never completed\n{summary}", w.thread);
        assert_eq!(
            w.submitted,
            w.completed + w.abandoned,
            "worker {}: submitted, and completed or abandoned with a dropped queue pair, differ\n{summary}",
            w.thread
        );
        if !(canary && w.thread == 0) {
            assert!(w.mismatches.is_empty(), "worker {}: {:#?}\n{summary}", w.thread, w.mismatches);
        }
    }
    for (t, m) in report.store_mismatches.iter().enumerate() {
        if !(canary && t == 0) {
            assert!(m.is_empty(), "backing store of worker {t}: {m:#?}\n{summary}");
        }
    }
}

/// A queue pair that did not heal once the faults stopped.
struct Unhealed {
    message: String,
    /// Why it did not take requests, at the end of the heal check or when it
    /// stalled.
    failure: Option<Error>,
}

/// The heal check: once the faults stopped, every queue pair served a write
/// and a read again within `HEAL_POLLS` polls (and none stalled before).
fn heal_failures(report: &RunReport) -> Vec<Unhealed> {
    report
        .workers
        .iter()
        .flatten()
        .filter(|w| w.heal.is_err() || w.stalled.is_some())
        .map(|w| {
            let message = match &w.heal {
                Err(e) => e.clone(),
                Ok(polls) => format!(
                    "worker {}: refused {STALL_LIMIT} submissions in a row after the faults stopped \
                     (queue pair failure: {:?}), then healed after {polls} polls (another worker's \
                     reset?)",
                    w.thread, w.stalled
                ),
            };
            // The failure that kept it from healing: at the end of the heal
            // check, or when it stalled.
            let failure = if w.heal.is_err() { w.failure } else { w.stalled.flatten() };
            Unhealed { message, failure }
        })
        .collect()
}

fn config(canary: bool, churn: bool) -> RunConfig {
    let default_ops = if cfg!(debug_assertions) { 2_000 } else { 20_000 };
    let ops = if canary { 300 } else { env_u64("NVME_THREADS_OPS").unwrap_or(default_ops) };
    let rounds =
        env_u64("NVME_THREADS_ROUNDS").filter(|_| !canary).unwrap_or((ops * WORKERS as u64 / 40).max(10));
    let seed = env_u64("NVME_THREADS_SEED").unwrap_or(0x7468_7265_6164_7321);
    RunConfig { ops, rounds, seed, canary, churn, shadow: false }
}

/// Writes to the real standard error, past the test harness's capture, so
/// that a known issue shows in a passing run too.
fn report_uncaptured(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Runs of the stress test, each with its own simulator and seed; fails on
/// any broken invariant, on a queue pair that does not heal once the faults
/// stopped (after a reset by hand where the driver said it gave up), and on
/// DMA memory left after teardown.
fn stress(churn: bool) {
    let base = config(false, churn);
    let runs = env_u64("NVME_THREADS_RUNS").unwrap_or(8).max(1);
    let began = Instant::now();
    let mut by_hand = 0;
    for i in 0..runs {
        let cfg = RunConfig { seed: base.seed.wrapping_add(i), shadow: i % 2 == 1, ..base };
        let (sim, report) = run(cfg);
        println!("run {i}: {}", report.summary);
        check_invariants(&report, false);
        let stats = sim.stats();
        assert_eq!(stats.stale_shadow_doorbells, 0, "run {i}: {stats:?}");
        assert_eq!(
            cfg.shadow,
            stats.shadow_doorbells > 0,
            "run {i}: shadow doorbells used iff offered: {stats:?}"
        );
        if let Some(u) = heal_failures(&report).first() {
            panic!(
                "a queue pair did not heal once the faults stopped (run {i}, NVME_THREADS_SEED={} \
                 NVME_THREADS_RUNS=1): {} (failure {:?})\n{}",
                cfg.seed, u.message, u.failure, report.summary
            );
        }
        by_hand += report.workers.iter().flatten().map(|w| w.resets_by_hand).sum::<u64>();
        // Every queue pair and the controller are gone: the DMA pool is empty.
        assert_clean(&sim);
    }
    let wall = began.elapsed();
    println!("threads: {runs} runs in {wall:.2?}, {by_hand} resets by hand after a terminal error");
}

#[test]
fn threaded_io_with_faults_and_resets() {
    stress(false);
}

/// The same with every worker dropping its queue pair every `CHURN_EVERY`
/// operations (half the time with requests in flight) and creating a new
/// one, while the faults and resets go on: creation and deletion of queues
/// race with the other workers' recovery.
#[test]
fn threaded_io_with_queue_pair_churn() {
    stress(true);
}

/// The run above with one block of worker 0 overwritten behind its model's
/// back (through `Sim::write_blocks`) once the faults stopped: the heal read
/// and the final check of the backing store must both report it.
#[test]
fn canary_corruption_behind_the_models_back_is_reported() {
    let cfg = config(true, false);
    let (sim, report) = run(cfg);
    println!("{}", report.summary);
    check_invariants(&report, true);
    let block = CANARY_BLOCK;
    let store = &report.store_mismatches[0];
    assert_eq!(store.len(), 1, "the corrupted block, and only it: {store:#?}\n{}", report.summary);
    assert!(
        store[0].contains(&format!("block {block}:")) && store[0].contains("worker 2's write"),
        "{store:?}"
    );
    let w0 = report.workers[0].as_ref().expect("worker 0");
    if w0.heal.is_ok() {
        assert_eq!(w0.mismatches.len(), 1, "the heal read saw it: {:#?}\n{}", w0.mismatches, report.summary);
        assert!(w0.mismatches[0].contains(&format!("block {block}:")), "{:?}", w0.mismatches);
    }
    assert_clean(&sim);
}
