//! The simulated controller: registers, queues, the command engine, virtual
//! time and the fault machinery.
//!
//! Everything the host writes (registers, queue memory, commands, PRP lists)
//! is untrusted: every index and address is checked, nothing here panics on
//! host input.

use crate::config::{SimConfig, SimNamespace};
use crate::fault::{random_fault, Fault, FaultKind, FaultRule, RandomFaults, SplitMix64};
use crate::memory::Arena;
use core::time::Duration;
use hal_traits::PAGE_SIZE;
use nvme_spec::command::{AdminOpcode, CompletionEntry, IoOpcode, SubmissionEntry};
use nvme_spec::dwords::{
    AbortCdw10, CreateIoCqCdw11, CreateIoQueueCdw10, CreateIoSqCdw11, DeleteIoQueueCdw10, FeaturesCdw10,
    GetLogPageCdw10, GetLogPageCdw11, IdentifyCdw10, NumberOfQueues, ReadWriteCdw12,
};
use nvme_spec::ids::{Cns, Fid, Lid, Nidt};
use nvme_spec::registers::{offset, Aqa, Cap, Cc, Csts};
use nvme_spec::status::{command_specific as cs, generic, Status, StatusCode, StatusCodeType};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// VS: NVMe 1.4.0.
pub(crate) const VERSION: u32 = 0x0001_0400;
const SQ_ENTRY: u64 = 64;
const CQ_ENTRY: u64 = 16;
const PAGE: u64 = PAGE_SIZE as u64;
/// Outstanding Asynchronous Event Requests the controller keeps (AERL + 1).
const AER_LIMIT: usize = 4;
/// The largest log page transfer accepted.
const MAX_LOG_BYTES: usize = 64 << 10;

const DNR: u16 = 1 << 15;

const fn st(sct: StatusCodeType, sc: StatusCode, dnr: bool) -> u16 {
    Status::of(sct, sc).raw() | if dnr { DNR } else { 0 }
}
const fn gen(sc: StatusCode, dnr: bool) -> u16 {
    st(StatusCodeType::GENERIC, sc, dnr)
}
const fn spec(sc: StatusCode) -> u16 {
    st(StatusCodeType::COMMAND_SPECIFIC, sc, true)
}

const SUCCESS: u16 = 0;
const INVALID_OPCODE: u16 = gen(generic::INVALID_OPCODE, true);
const INVALID_FIELD: u16 = gen(generic::INVALID_FIELD, true);
const DATA_TRANSFER_ERROR: u16 = gen(generic::DATA_TRANSFER_ERROR, false);
const ABORTED_BY_REQUEST: u16 = gen(generic::ABORTED_BY_REQUEST, false);
const ABORTED_SQ_DELETION: u16 = gen(generic::ABORTED_SQ_DELETION, false);
const INVALID_NAMESPACE: u16 = gen(generic::INVALID_NAMESPACE_OR_FORMAT, true);
const COMMAND_SEQUENCE_ERROR: u16 = gen(generic::COMMAND_SEQUENCE_ERROR, true);
const PRP_OFFSET_INVALID: u16 = gen(generic::PRP_OFFSET_INVALID, true);
const LBA_OUT_OF_RANGE: u16 = gen(generic::LBA_OUT_OF_RANGE, true);
const CQ_INVALID: u16 = spec(cs::COMPLETION_QUEUE_INVALID);
const INVALID_QID: u16 = spec(cs::INVALID_QUEUE_IDENTIFIER);
const INVALID_QSIZE: u16 = spec(cs::INVALID_QUEUE_SIZE);
const INVALID_QUEUE_DELETION: u16 = spec(cs::INVALID_QUEUE_DELETION);
const AER_LIMIT_EXCEEDED: u16 = spec(cs::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED);
const INVALID_LOG_PAGE: u16 = spec(cs::INVALID_LOG_PAGE);
const NOT_SAVEABLE: u16 = spec(cs::FEATURE_ID_NOT_SAVEABLE);

/// Counters and invariants of a simulated controller, from [`Sim::stats`](crate::Sim::stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Commands fetched from all submission queues.
    pub commands_fetched: u64,
    /// Of those, from the admin queue.
    pub admin_commands: u64,
    /// Completion entries written into completion queues (bogus ones included).
    pub completions_posted: u64,
    /// Faults injected, indexed by [`FaultKind::index`].
    pub faults: [u64; FaultKind::ALL.len()],
    /// `dma_free` calls with a region that was not live (double or foreign frees).
    pub bad_frees: u64,
    /// `unshare` calls matching no live share.
    pub bad_unshares: u64,
    /// Pages handed out by `dma_alloc` and not freed.
    pub live_dma_pages: usize,
    /// Shares not yet unshared.
    pub live_shares: usize,
    /// Doorbell writes ignored: unknown queue, value out of range, controller
    /// not ready, fatal or disabled.
    pub ignored_doorbells: u64,
    /// Device accesses to queue memory that is not mapped (the controller
    /// then goes fatal, like a device whose DMA faulted).
    pub dma_faults: u64,
    /// CC.EN 1 -> 0 transitions.
    pub resets: u64,
    /// CC.EN 0 -> 1 transitions that the controller refused (bad CC or admin
    /// queue attributes): it then never becomes ready.
    pub enable_failures: u64,
    /// `share` calls that succeeded.
    pub shares: u64,
    /// Bogus entries a babbling completion queue wrote
    /// ([`Sim::babble`](crate::Sim::babble)).
    pub babbled: u64,
    /// Writes to submission queue tail doorbells that were accepted.
    pub sq_doorbells: u64,
    /// `translate` calls that found the buffer in device-visible memory.
    pub translations: u64,
    /// Buffers synced for the device and not yet back with the CPU.
    pub open_syncs: usize,
    /// Cache maintenance out of order: `sync_for_cpu` without a matching
    /// `sync_for_device`, two `sync_for_device` in a row, or an `unshare`
    /// before `sync_for_cpu`.
    pub bad_syncs: u64,
    /// FNV-1a hash of every completion entry posted, with its queue and time:
    /// two runs that post the same completions at the same virtual times have
    /// the same digest.
    pub digest: u64,
}

impl SimStats {
    /// Faults of `kind` injected so far.
    pub fn faults_of(&self, kind: FaultKind) -> u64 {
        self.faults[kind.index()]
    }

    /// All faults injected so far.
    pub fn faults_total(&self) -> u64 {
        self.faults.iter().sum()
    }
}

struct Namespace {
    cfg: SimNamespace,
    active: bool,
    data: Vec<u8>,
}

struct Sq {
    base: u64,
    size: u16,
    head: u16,
    tail: u16,
    cqid: u16,
    /// Every CID fetched from this queue since it was created.
    issued: BTreeSet<u16>,
    /// The CID of the last real completion posted.
    last_completed: Option<u16>,
    /// SQHD of the last real completion the host released (CQ head doorbell):
    /// the host's SQ head is at or after it.
    consumed_head: u16,
}

struct Post {
    entry: CompletionEntry,
    wrong_phase: bool,
    /// (SQ, SQHD) of a real completion, tracked until the host consumes it.
    track: Option<(u16, u16)>,
}

struct Cq {
    base: u64,
    size: u16,
    head: u16,
    tail: u16,
    phase: bool,
    /// Completions due but not yet written (the queue was full).
    waiting: VecDeque<Post>,
    /// Per slot: what the entry there reported, for `consumed_head`.
    slots: Vec<Option<(u16, u16)>>,
}

#[derive(Clone, Copy)]
struct Pending {
    seq: u64,
    sqid: u16,
    cmd: SubmissionEntry,
    fault: Option<Fault>,
}

/// How a completion is posted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PostKind {
    /// The command's one real completion.
    Real,
    /// An extra entry a fault adds (not the real completion).
    Extra,
    /// The real completion with the phase tag inverted.
    WrongPhase,
    /// The real completion with an impossible SQ head.
    BadHead,
}

struct RuleState {
    rule: FaultRule,
    seen: u64,
    applied: u64,
}

struct RandomState {
    cfg: RandomFaults,
    rng: SplitMix64,
}

/// The whole simulated controller.
pub(crate) struct State {
    pub(crate) cfg: SimConfig,
    pub(crate) mem: Arena,
    now: Duration,
    // Registers.
    cc: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    intms: u32,
    rdy: bool,
    cfs: bool,
    shst: u8,
    rdy_event: Option<(Duration, bool)>,
    shst_event: Option<Duration>,
    /// CC.EN = 1 and the admin queue was accepted.
    enabled: bool,
    removed: bool,
    bar_size: usize,
    // Queues and commands.
    sqs: BTreeMap<u16, Sq>,
    cqs: BTreeMap<u16, Cq>,
    /// Commands due at a time, by (due, fetch order).
    pending: BTreeMap<(Duration, u64), Pending>,
    /// Commands that never come due on their own (dropped, AERs), by fetch order.
    stuck: BTreeMap<u64, Pending>,
    seq: u64,
    nsqa: u16,
    ncqa: u16,
    features: BTreeMap<u8, u32>,
    namespaces: Vec<Namespace>,
    nn: u32,
    /// A `SimHal` is alive: the device is claimed by a driver.
    pub(crate) claimed: bool,
    /// A babbling completion queue and the entries it has left to write.
    babble: Option<(u16, u64)>,
    /// Buffers synced for the device, by (address, length).
    syncs: BTreeMap<(usize, usize), hal_traits::Direction>,
    // Faults.
    rules: Vec<RuleState>,
    random: Option<RandomState>,
    stats: SimStats,
}

/// FNV-1a over `bytes`, continuing from `hash`.
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn ring_distance(from: u16, to: u16, size: u16) -> u16 {
    if to >= from {
        to - from
    } else {
        size - from + to
    }
}

fn parse_sqe(b: &[u8; 64]) -> SubmissionEntry {
    zerocopy::transmute!(*b)
}

fn cqe_bytes(e: &CompletionEntry) -> [u8; 16] {
    zerocopy::transmute!(*e)
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Writes `s` into a fixed-width ASCII field padded with spaces.
fn put_str(buf: &mut [u8], at: usize, width: usize, s: &str) {
    buf[at..at + width].fill(b' ');
    let n = s.len().min(width);
    buf[at..at + n].copy_from_slice(&s.as_bytes()[..n]);
}

impl State {
    /// A controller as `cfg` describes it, disabled.
    ///
    /// # Panics
    ///
    /// On a configuration that describes no valid controller (see
    /// [`Sim::new`](crate::Sim::new)).
    pub(crate) fn new(cfg: SimConfig) -> State {
        assert!(cfg.dstrd <= 15, "dstrd is a 4-bit field");
        assert!(cfg.max_io_queues >= 1, "max_io_queues must be at least 1");
        let mut namespaces: Vec<Namespace> = Vec::new();
        for ns in &cfg.namespaces {
            assert!(ns.nsid != 0 && ns.nsid < 0xffff_fffe, "nsid {} is not a valid namespace id", ns.nsid);
            assert!(
                ns.block_size.is_power_of_two() && (512..=65536).contains(&ns.block_size),
                "block size {} is not a power of two from 512 to 65536",
                ns.block_size
            );
            assert!(ns.blocks >= 1, "namespace {} has no blocks", ns.nsid);
            assert!(namespaces.iter().all(|n| n.cfg.nsid != ns.nsid), "nsid {} appears twice", ns.nsid);
            let bytes = ns
                .blocks
                .checked_mul(ns.block_size as u64)
                .and_then(|b| usize::try_from(b).ok())
                .expect("namespace too large for memory");
            namespaces.push(Namespace { cfg: *ns, active: true, data: vec![0; bytes] });
        }
        namespaces.sort_by_key(|n| n.cfg.nsid);
        let nn = namespaces.last().map_or(0, |n| n.cfg.nsid);
        let stride = 4usize << cfg.dstrd;
        let doorbells = 2 * (cfg.max_io_queues as usize + 1) * stride;
        let bar_size = (offset::DOORBELLS + doorbells).next_multiple_of(PAGE_SIZE).max(0x2000);
        let max = cfg.max_io_queues - 1;
        State {
            mem: Arena::new(cfg.memory_bytes),
            cfg,
            now: Duration::ZERO,
            cc: 0,
            aqa: 0,
            asq: 0,
            acq: 0,
            intms: 0,
            rdy: false,
            cfs: false,
            shst: 0,
            rdy_event: None,
            shst_event: None,
            enabled: false,
            removed: false,
            bar_size,
            sqs: BTreeMap::new(),
            cqs: BTreeMap::new(),
            pending: BTreeMap::new(),
            stuck: BTreeMap::new(),
            seq: 0,
            nsqa: max,
            ncqa: max,
            features: BTreeMap::new(),
            namespaces,
            nn,
            claimed: false,
            babble: None,
            syncs: BTreeMap::new(),
            rules: Vec::new(),
            random: None,
            stats: SimStats::default(),
        }
    }

    // ----- test-facing controls -----

    pub(crate) fn stats(&self) -> SimStats {
        let mut s = self.stats.clone();
        s.bad_frees = self.mem.bad_frees;
        s.bad_unshares = self.mem.bad_unshares;
        s.live_dma_pages = self.mem.live_pages;
        s.live_shares = self.mem.live_shares();
        s.shares = self.mem.shares_total;
        s.open_syncs = self.syncs.len();
        s
    }

    // ----- buffers: translation and cache maintenance bookkeeping -----

    pub(crate) fn translate(&mut self, buffer: core::ptr::NonNull<[u8]>) -> Option<hal_traits::DeviceAddr> {
        let found = self.mem.translate(buffer);
        if found.is_some() {
            self.stats.translations += 1;
        }
        found
    }

    /// `Hal::sync_for_device`: the buffer is the device's until the matching
    /// `sync_for_cpu`. A second one without it is counted as a bad sync.
    pub(crate) fn sync_for_device(
        &mut self,
        buffer: core::ptr::NonNull<[u8]>,
        direction: hal_traits::Direction,
    ) {
        let key = (buffer.cast::<u8>().as_ptr().addr(), buffer.len());
        if self.syncs.insert(key, direction).is_some() {
            self.stats.bad_syncs += 1;
        }
    }

    /// `Hal::sync_for_cpu`: must follow a `sync_for_device` of the same
    /// buffer and direction; anything else is counted as a bad sync.
    pub(crate) fn sync_for_cpu(
        &mut self,
        buffer: core::ptr::NonNull<[u8]>,
        direction: hal_traits::Direction,
    ) {
        let key = (buffer.cast::<u8>().as_ptr().addr(), buffer.len());
        if self.syncs.remove(&key) != Some(direction) {
            self.stats.bad_syncs += 1;
        }
    }

    /// Before an `unshare`: the buffer must be back with the CPU.
    pub(crate) fn check_synced(&mut self, buffer: core::ptr::NonNull<[u8]>) {
        if self.syncs.contains_key(&(buffer.cast::<u8>().as_ptr().addr(), buffer.len())) {
            self.stats.bad_syncs += 1;
        }
    }

    pub(crate) fn inject(&mut self, rule: FaultRule) {
        self.rules.push(RuleState { rule, seen: 0, applied: 0 });
    }

    pub(crate) fn inject_random(&mut self, cfg: RandomFaults) {
        self.random = Some(RandomState { rng: SplitMix64::new(cfg.seed), cfg });
    }

    pub(crate) fn clear_faults(&mut self) {
        self.rules.clear();
        self.random = None;
        self.removed = false;
    }

    pub(crate) fn set_removed(&mut self, removed: bool) {
        self.removed = removed;
    }

    pub(crate) fn set_fatal(&mut self) {
        self.cfs = true;
    }

    pub(crate) fn remove_namespace(&mut self, nsid: u32) {
        for ns in self.namespaces.iter_mut().filter(|n| n.cfg.nsid == nsid) {
            ns.active = false;
        }
    }

    /// Commands fetched and not yet completed (dropped ones included).
    pub(crate) fn outstanding(&self) -> usize {
        self.pending.len() + self.stuck.len()
    }

    pub(crate) fn namespace_data(&self, nsid: u32) -> Option<(&[u8], u32)> {
        self.namespaces.iter().find(|n| n.cfg.nsid == nsid).map(|n| (&n.data[..], n.cfg.block_size))
    }

    pub(crate) fn namespace_data_mut(&mut self, nsid: u32) -> Option<(&mut [u8], u32)> {
        self.namespaces.iter_mut().find(|n| n.cfg.nsid == nsid).map(|n| (&mut n.data[..], n.cfg.block_size))
    }

    // ----- virtual time -----

    pub(crate) fn now(&self) -> Duration {
        self.now
    }

    /// `Hal::now`: moves time on by the configured tick, then reads it.
    pub(crate) fn tick(&mut self) -> Duration {
        let t = self.now.saturating_add(self.cfg.now_tick);
        self.run_until(t);
        self.now
    }

    pub(crate) fn advance(&mut self, d: Duration) {
        let t = self.now.saturating_add(d);
        self.run_until(t);
    }

    fn commands_run(&self) -> bool {
        self.enabled && !self.cfs && !self.removed
    }

    /// Processes every event due up to `t` in time order (controller state
    /// changes before commands at the same instant, commands in fetch order),
    /// then sets the clock to `t`.
    fn run_until(&mut self, t: Duration) {
        while !self.removed {
            let ctrl = match (self.rdy_event, self.shst_event) {
                (Some((a, _)), Some(b)) => Some(a.min(b)),
                (Some((a, _)), None) => Some(a),
                (None, b) => b,
            };
            let cmd = if self.commands_run() { self.pending.keys().next().map(|k| k.0) } else { None };
            let (when, is_ctrl) = match (ctrl, cmd) {
                (Some(a), Some(b)) if a <= b => (a, true),
                (_, Some(b)) => (b, false),
                (Some(a), None) => (a, true),
                (None, None) => break,
            };
            if when > t {
                break;
            }
            self.now = self.now.max(when);
            if is_ctrl {
                self.fire_controller_event();
            } else if let Some((_, p)) = self.pending.pop_first() {
                self.complete(p);
            }
        }
        self.now = self.now.max(t);
    }

    fn fire_controller_event(&mut self) {
        let rdy_due = self.rdy_event.map(|(at, _)| at);
        match (rdy_due, self.shst_event) {
            (Some(a), Some(b)) if b < a => {
                self.shst_event = None;
                self.shst = 2;
            }
            (Some(_), _) => {
                if let Some((_, value)) = self.rdy_event.take() {
                    self.rdy = value;
                }
            }
            (None, Some(_)) => {
                self.shst_event = None;
                self.shst = 2;
            }
            (None, None) => {}
        }
    }

    // ----- registers -----

    fn cap(&self) -> u64 {
        Cap::new()
            .with_mqes(self.cfg.mqes)
            .with_cqr(true)
            .with_to(self.cfg.timeout_500ms)
            .with_dstrd(self.cfg.dstrd)
            .with_css(1)
            .with_mpsmin(0)
            .with_mpsmax(0)
            .into_bits()
    }

    fn csts(&self) -> u32 {
        Csts::new().with_rdy(self.rdy).with_cfs(self.cfs).with_shst(self.shst).into_bits()
    }

    /// After every register access by the host: with `auto_advance`, time
    /// moves on by the command latency, so what a doorbell write started has
    /// completed by the next look.
    fn after_access(&mut self) {
        if self.cfg.auto_advance {
            self.advance(self.cfg.latency);
        }
    }

    pub(crate) fn read32(&mut self, off: usize) -> u32 {
        let value = self.reg_read32(off);
        self.after_access();
        value
    }

    pub(crate) fn read64(&mut self, off: usize) -> u64 {
        let value = self.reg_read64(off);
        self.after_access();
        value
    }

    pub(crate) fn write32(&mut self, off: usize, value: u32) {
        self.reg_write32(off, value);
        self.after_access();
    }

    pub(crate) fn write64(&mut self, off: usize, value: u64) {
        self.reg_write64(off, value);
        self.after_access();
    }

    fn reg_read32(&mut self, off: usize) -> u32 {
        if self.removed || off >= self.bar_size {
            return u32::MAX;
        }
        if !off.is_multiple_of(4) {
            return 0;
        }
        match off {
            offset::CAP => self.cap() as u32,
            0x04 => (self.cap() >> 32) as u32,
            offset::VS => VERSION,
            offset::INTMS | offset::INTMC => self.intms,
            offset::CC => self.cc,
            offset::CSTS => self.csts(),
            offset::AQA => self.aqa,
            offset::ASQ => self.asq as u32,
            0x2c => (self.asq >> 32) as u32,
            offset::ACQ => self.acq as u32,
            0x34 => (self.acq >> 32) as u32,
            // CMBLOC, CMBSZ, NSSR, doorbells and reserved registers read 0.
            _ => 0,
        }
    }

    fn reg_read64(&mut self, off: usize) -> u64 {
        if self.removed || off >= self.bar_size {
            return u64::MAX;
        }
        match off {
            offset::CAP => self.cap(),
            offset::ASQ => self.asq,
            offset::ACQ => self.acq,
            _ => self.reg_read32(off) as u64 | ((self.reg_read32(off.saturating_add(4)) as u64) << 32),
        }
    }

    fn reg_write32(&mut self, off: usize, value: u32) {
        if self.removed || off >= self.bar_size {
            return;
        }
        if !off.is_multiple_of(4) {
            if off >= offset::DOORBELLS {
                self.stats.ignored_doorbells += 1;
            }
            return;
        }
        match off {
            offset::INTMS => self.intms |= value,
            offset::INTMC => self.intms &= !value,
            offset::CC => self.write_cc(value),
            offset::AQA => self.aqa = value & 0x0fff_0fff,
            offset::ASQ => self.asq = (self.asq & !0xffff_ffff) | (value as u64 & !0xfff),
            0x2c => self.asq = (self.asq & 0xffff_ffff) | ((value as u64) << 32),
            offset::ACQ => self.acq = (self.acq & !0xffff_ffff) | (value as u64 & !0xfff),
            0x34 => self.acq = (self.acq & 0xffff_ffff) | ((value as u64) << 32),
            o if o >= offset::DOORBELLS => self.doorbell(o - offset::DOORBELLS, value),
            // CAP, VS, CSTS, NSSR (not supported), CMB registers: read-only or ignored.
            _ => {}
        }
    }

    fn reg_write64(&mut self, off: usize, value: u64) {
        if self.removed || off >= self.bar_size {
            return;
        }
        match off {
            offset::ASQ => self.asq = value & !0xfff,
            offset::ACQ => self.acq = value & !0xfff,
            _ => {
                self.reg_write32(off, value as u32);
                self.reg_write32(off.saturating_add(4), (value >> 32) as u32);
            }
        }
    }

    fn write_cc(&mut self, value: u32) {
        let old = Cc::from_bits(self.cc);
        let new = Cc::from_bits(value);
        self.cc = value;
        if !old.en() && new.en() {
            self.enable(new);
        } else if old.en() && !new.en() {
            self.reset();
        } else if old.en() && new.en() && old.shn() == 0 && new.shn() != 0 && self.enabled && !self.cfs {
            self.shst = 1;
            self.shst_event = Some(self.now.saturating_add(self.cfg.ready_delay));
        }
    }

    /// CC.EN 0 -> 1: takes the admin queue from AQA/ASQ/ACQ and schedules
    /// CSTS.RDY. A configuration the controller cannot run (page size other
    /// than 4 KiB, a command set other than NVM, entry sizes other than 64/16
    /// bytes, an admin queue under 2 entries or in unmapped memory) makes it
    /// stay not ready, as QEMU does.
    fn enable(&mut self, cc: Cc) {
        let aqa = Aqa::from_bits(self.aqa);
        let (sq_size, cq_size) = (aqa.asqs() + 1, aqa.acqs() + 1);
        let sq_ok = self.mem.device_range(self.asq, sq_size as usize * SQ_ENTRY as usize).is_some();
        let cq_ok = self.mem.device_range(self.acq, cq_size as usize * CQ_ENTRY as usize).is_some();
        let ok = cc.mps() == 0
            && cc.css() == 0
            && cc.iosqes() == 6
            && cc.iocqes() == 4
            && sq_size >= 2
            && cq_size >= 2
            && sq_ok
            && cq_ok;
        self.rdy_event = None;
        if !ok {
            self.stats.enable_failures += 1;
            return;
        }
        self.sqs.insert(0, Sq::new(self.asq, sq_size, 0));
        self.cqs.insert(0, Cq::new(self.acq, cq_size));
        self.enabled = true;
        if !self.cfg.rdy_never {
            self.rdy_event = Some((self.now.saturating_add(self.cfg.ready_delay), true));
        }
    }

    /// CC.EN 1 -> 0: a controller reset. Every queue and command is dropped,
    /// CFS and SHST clear, and CSTS.RDY follows after the ready delay.
    fn reset(&mut self) {
        self.sqs.clear();
        self.cqs.clear();
        self.pending.clear();
        self.stuck.clear();
        self.enabled = false;
        self.cfs = false;
        self.shst = 0;
        self.shst_event = None;
        let max = self.cfg.max_io_queues - 1;
        self.nsqa = max;
        self.ncqa = max;
        self.features.clear();
        self.stats.resets += 1;
        self.rdy_event =
            if self.rdy { Some((self.now.saturating_add(self.cfg.ready_delay), false)) } else { None };
    }

    fn doorbell(&mut self, rel: usize, value: u32) {
        let stride = 4usize << self.cfg.dstrd;
        if !rel.is_multiple_of(stride) || !self.enabled || !self.rdy || self.cfs {
            self.stats.ignored_doorbells += 1;
            return;
        }
        let index = rel / stride;
        let Ok(qid) = u16::try_from(index / 2) else {
            self.stats.ignored_doorbells += 1;
            return;
        };
        if index.is_multiple_of(2) {
            self.sq_doorbell(qid, value);
        } else {
            self.cq_doorbell(qid, value);
        }
        // Zero latency: what is due now completes now.
        let now = self.now;
        self.run_until(now);
    }

    /// SQ tail doorbell: fetches every entry from the head to the new tail.
    fn sq_doorbell(&mut self, qid: u16, value: u32) {
        let Some(sq) = self.sqs.get_mut(&qid) else {
            self.stats.ignored_doorbells += 1;
            return;
        };
        if value >= sq.size as u32 {
            self.stats.ignored_doorbells += 1;
            return;
        }
        sq.tail = value as u16;
        self.stats.sq_doorbells += 1;
        while self.commands_run() {
            let Some(sq) = self.sqs.get_mut(&qid) else { return };
            if sq.head == sq.tail {
                return;
            }
            let addr = sq.base + sq.head as u64 * SQ_ENTRY;
            sq.head = (sq.head + 1) % sq.size;
            let mut raw = [0u8; 64];
            if !self.mem.device_read(addr, &mut raw) {
                self.dma_fault();
                return;
            }
            self.accept(qid, parse_sqe(&raw));
        }
    }

    /// CQ head doorbell: the host released entries up to `value`.
    fn cq_doorbell(&mut self, qid: u16, value: u32) {
        let Some(cq) = self.cqs.get_mut(&qid) else {
            self.stats.ignored_doorbells += 1;
            return;
        };
        // The new head must lie between the old head and the tail.
        if value >= cq.size as u32
            || ring_distance(cq.head, value as u16, cq.size) > ring_distance(cq.head, cq.tail, cq.size)
        {
            self.stats.ignored_doorbells += 1;
            return;
        }
        let mut released = Vec::new();
        while cq.head != value as u16 {
            if let Some(t) = cq.slots.get_mut(cq.head as usize).and_then(Option::take) {
                released.push(t);
            }
            cq.head = (cq.head + 1) % cq.size;
        }
        for (sqid, sqhd) in released {
            if let Some(sq) = self.sqs.get_mut(&sqid).filter(|sq| sqhd < sq.size) {
                sq.consumed_head = sqhd;
            }
        }
        self.flush_cq(qid);
    }

    fn dma_fault(&mut self) {
        self.stats.dma_faults += 1;
        self.cfs = true;
    }

    // ----- commands -----

    /// Decides the fault of a fetched command: rules first, then random draws.
    fn draw_fault(&mut self, qid: u16, opcode: u8) -> Option<Fault> {
        let mut fault = None;
        for r in self.rules.iter_mut().filter(|r| r.rule.matches(qid, opcode)) {
            r.seen = r.seen.saturating_add(1);
            if fault.is_none() && r.seen > r.rule.skip && r.applied < r.rule.count {
                r.applied += 1;
                fault = Some(r.rule.fault);
            }
        }
        if fault.is_none() {
            if let Some(rs) = self.random.as_mut().filter(|r| r.cfg.queues.matches(qid)) {
                let draw = rs.rng.next_f64();
                if draw < rs.cfg.probability_per_command && !rs.cfg.kinds.is_empty() {
                    let kind = rs.cfg.kinds[rs.rng.below(rs.cfg.kinds.len() as u64) as usize];
                    fault = Some(random_fault(kind, &mut rs.rng));
                }
            }
        }
        fault
    }

    /// A command just fetched from `sqid`: schedules its completion.
    fn accept(&mut self, sqid: u16, cmd: SubmissionEntry) {
        self.stats.commands_fetched += 1;
        if sqid == 0 {
            self.stats.admin_commands += 1;
        }
        if let Some(sq) = self.sqs.get_mut(&sqid) {
            sq.issued.insert(cmd.cdw0.cid());
        }
        let fault = self.draw_fault(sqid, cmd.cdw0.opc());
        if let Some(f) = &fault {
            self.stats.faults[FaultKind::of(f).index()] += 1;
        }
        self.seq += 1;
        let p = Pending { seq: self.seq, sqid, cmd, fault };
        match fault {
            Some(Fault::Fatal) => {
                self.cfs = true;
                return;
            }
            Some(Fault::Removal) => {
                self.removed = true;
                return;
            }
            Some(Fault::Drop) => {
                self.stuck.insert(p.seq, p);
                return;
            }
            _ => {}
        }
        let is_aer = sqid == 0 && cmd.cdw0.opc() == AdminOpcode::ASYNC_EVENT_REQUEST.0;
        if fault.is_none() && is_aer {
            let held =
                self.stuck.values().filter(|s| s.sqid == 0 && s.cmd.cdw0.opc() == cmd.cdw0.opc()).count();
            if held < AER_LIMIT {
                // Held until an event (none ever happens), an Abort or a reset.
                self.stuck.insert(p.seq, p);
                return;
            }
        }
        let extra = match fault {
            Some(Fault::Delay(d)) => d,
            _ => Duration::ZERO,
        };
        match self.now.checked_add(self.cfg.latency).and_then(|t| t.checked_add(extra)) {
            Some(due) => {
                self.pending.insert((due, p.seq), p);
            }
            None => {
                self.stuck.insert(p.seq, p);
            }
        }
    }

    /// A command's time has come: execute it (unless a fault says otherwise)
    /// and post its completion(s).
    fn complete(&mut self, p: Pending) {
        if !self.sqs.contains_key(&p.sqid) {
            return;
        }
        let cid = p.cmd.cdw0.cid();
        if let Some(Fault::Status { sct, sc, dnr }) = p.fault {
            let status = Status::of(StatusCodeType(sct), StatusCode(sc)).raw() | if dnr { DNR } else { 0 };
            self.post(p.sqid, cid, status, 0, PostKind::Real);
            return;
        }
        let (status, dw0) = if p.sqid == 0 { self.execute_admin(&p.cmd) } else { self.execute_io(&p.cmd) };
        match p.fault {
            Some(Fault::CidOutOfRange) => {
                let bogus = self.unissued_cid(p.sqid, cid);
                self.post(p.sqid, bogus, status, dw0, PostKind::Extra);
                self.post(p.sqid, cid, status, dw0, PostKind::Real);
            }
            Some(Fault::CidNotOutstanding) => {
                let bogus = self.completed_cid(p.sqid, cid);
                self.post(p.sqid, bogus, status, dw0, PostKind::Extra);
                self.post(p.sqid, cid, status, dw0, PostKind::Real);
            }
            Some(Fault::CidRepeated) => {
                self.post(p.sqid, cid, status, dw0, PostKind::Real);
                self.post(p.sqid, cid, status, dw0, PostKind::Extra);
            }
            Some(Fault::WrongPhase) => self.post(p.sqid, cid, status, dw0, PostKind::WrongPhase),
            Some(Fault::ImpossibleSqHead) => self.post(p.sqid, cid, status, dw0, PostKind::BadHead),
            _ => self.post(p.sqid, cid, status, dw0, PostKind::Real),
        }
    }

    fn is_outstanding(&self, sqid: u16, cid: u16) -> bool {
        let hit = |p: &Pending| p.sqid == sqid && p.cmd.cdw0.cid() == cid;
        self.pending.values().any(hit) || self.stuck.values().any(hit)
    }

    /// A CID never fetched from `sqid`, other than `cid`: `cid | 0xF000` or the
    /// nearest one below it.
    fn unissued_cid(&self, sqid: u16, cid: u16) -> u16 {
        let Some(sq) = self.sqs.get(&sqid) else { return cid ^ 0xf000 };
        let mut c = cid | 0xf000;
        for _ in 0..=u16::MAX as u32 {
            if c != cid && !sq.issued.contains(&c) {
                return c;
            }
            c = c.wrapping_sub(1);
        }
        cid ^ 0xf000
    }

    /// A CID that is not outstanding on `sqid` and is not `cid`: the last one
    /// completed, else `cid ^ 0x8000`, else any.
    fn completed_cid(&self, sqid: u16, cid: u16) -> u16 {
        let last = self.sqs.get(&sqid).and_then(|s| s.last_completed);
        // Not `cid ^ 1` or any other "nearby" CID: a host may issue it right
        // after this completion is posted and before it reads the entry, and
        // then no host could tell the bogus completion from a real one. The
        // CID of the last completed command is retired (the host moves a
        // slot's generation on when it reuses it); failing that, the top bit
        // flipped is far from anything the host issues next.
        let candidates = last.into_iter().chain([cid ^ 0x8000]).chain((0..=u16::MAX).rev());
        for c in candidates {
            if c != cid && !self.is_outstanding(sqid, c) {
                return c;
            }
        }
        cid ^ 1
    }

    /// Queues a completion for the CQ of `sqid` and writes what fits.
    fn post(&mut self, sqid: u16, cid: u16, status: u16, dw0: u32, kind: PostKind) {
        let Some(sq) = self.sqs.get_mut(&sqid) else { return };
        let sqhd = if kind == PostKind::BadHead { sq.impossible_head() } else { sq.head };
        if kind != PostKind::Extra {
            sq.last_completed = Some(cid);
        }
        let cqid = sq.cqid;
        let track = (kind == PostKind::Real || kind == PostKind::WrongPhase).then_some((sqid, sqhd));
        let entry = CompletionEntry { dw0, dw1: 0, sqhd, sqid, cid, status: Status::from_bits(status & !1) };
        let Some(cq) = self.cqs.get_mut(&cqid) else { return };
        cq.waiting.push_back(Post { entry, wrong_phase: kind == PostKind::WrongPhase, track });
        self.flush_cq(cqid);
    }

    /// Writes waiting completions into the CQ while it has a free slot.
    fn flush_cq(&mut self, cqid: u16) {
        loop {
            let Some(cq) = self.cqs.get_mut(&cqid) else { return };
            if cq.waiting.is_empty() || (cq.tail + 1) % cq.size == cq.head {
                return;
            }
            let Some(post) = cq.waiting.pop_front() else { return };
            let mut entry = post.entry;
            entry.status.set_p(cq.phase ^ post.wrong_phase);
            let addr = cq.base + cq.tail as u64 * CQ_ENTRY;
            if let Some(slot) = cq.slots.get_mut(cq.tail as usize) {
                *slot = post.track;
            }
            cq.tail += 1;
            if cq.tail == cq.size {
                cq.tail = 0;
                cq.phase = !cq.phase;
            }
            let bytes = cqe_bytes(&entry);
            if !self.mem.device_write(addr, &bytes) {
                self.dma_fault();
                return;
            }
            self.stats.completions_posted += 1;
            let mut h = if self.stats.digest == 0 { 0xcbf2_9ce4_8422_2325 } else { self.stats.digest };
            h = fnv1a(h, &(self.now.as_nanos() as u64).to_le_bytes());
            h = fnv1a(h, &cqid.to_le_bytes());
            self.stats.digest = fnv1a(h, &bytes);
        }
    }

    // ----- data transfer -----

    /// The memory segments (device address, length) that PRP1/PRP2 describe
    /// for `len` bytes, walking PRP lists (NVMe 1.4 section 4.3). Every list
    /// entry read is bounds-checked; the data pages are checked by the caller.
    fn prp_segments(&self, prp1: u64, prp2: u64, len: usize) -> Result<Vec<(u64, usize)>, u16> {
        let mut segs = Vec::new();
        if len == 0 {
            return Ok(segs);
        }
        if prp1 & 3 != 0 {
            return Err(PRP_OFFSET_INVALID);
        }
        let first = len.min((PAGE - prp1 % PAGE) as usize);
        segs.push((prp1, first));
        let mut left = len - first;
        if left == 0 {
            return Ok(segs);
        }
        if left <= PAGE_SIZE {
            if !prp2.is_multiple_of(PAGE) {
                return Err(PRP_OFFSET_INVALID);
            }
            segs.push((prp2, left));
            return Ok(segs);
        }
        // PRP2 points to a list; its entries are qwords.
        if prp2 & 7 != 0 {
            return Err(PRP_OFFSET_INVALID);
        }
        let mut at = prp2;
        while left > 0 {
            let entry = self.mem.device_read_u64(at).ok_or(DATA_TRANSFER_ERROR)?;
            if at % PAGE == PAGE - 8 && left > PAGE_SIZE {
                // The last entry of a full list page points to the next list page.
                if !entry.is_multiple_of(PAGE) {
                    return Err(PRP_OFFSET_INVALID);
                }
                at = entry;
                continue;
            }
            if !entry.is_multiple_of(PAGE) {
                return Err(PRP_OFFSET_INVALID);
            }
            let n = left.min(PAGE_SIZE);
            segs.push((entry, n));
            left -= n;
            at = at.checked_add(8).ok_or(DATA_TRANSFER_ERROR)?;
        }
        Ok(segs)
    }

    /// Device -> host: writes `data` where the command's PRPs point.
    fn write_to_host(&mut self, cmd: &SubmissionEntry, data: &[u8]) -> u16 {
        let segs = match self.prp_segments(cmd.prp1, cmd.prp2, data.len()) {
            Ok(s) => s,
            Err(status) => return status,
        };
        if segs.iter().any(|&(addr, n)| self.mem.device_range(addr, n).is_none()) {
            return DATA_TRANSFER_ERROR;
        }
        let mut at = 0;
        for (addr, n) in segs {
            self.mem.device_write(addr, &data[at..at + n]);
            at += n;
        }
        SUCCESS
    }

    /// Host -> device: reads `len` bytes from where the command's PRPs point.
    fn read_from_host(&self, cmd: &SubmissionEntry, len: usize) -> Result<Vec<u8>, u16> {
        let segs = self.prp_segments(cmd.prp1, cmd.prp2, len)?;
        let mut data = vec![0u8; len];
        let mut at = 0;
        for (addr, n) in segs {
            if !self.mem.device_read(addr, &mut data[at..at + n]) {
                return Err(DATA_TRANSFER_ERROR);
            }
            at += n;
        }
        Ok(data)
    }

    // ----- admin commands -----

    fn execute_admin(&mut self, cmd: &SubmissionEntry) -> (u16, u32) {
        if cmd.cdw0.fuse() != 0 || cmd.cdw0.psdt() != 0 {
            return (INVALID_FIELD, 0);
        }
        match AdminOpcode(cmd.cdw0.opc()) {
            AdminOpcode::DELETE_IO_SQ => (self.delete_sq(cmd), 0),
            AdminOpcode::CREATE_IO_SQ => (self.create_sq(cmd), 0),
            AdminOpcode::GET_LOG_PAGE => (self.get_log_page(cmd), 0),
            AdminOpcode::DELETE_IO_CQ => (self.delete_cq(cmd), 0),
            AdminOpcode::CREATE_IO_CQ => (self.create_cq(cmd), 0),
            AdminOpcode::IDENTIFY => (self.identify(cmd), 0),
            AdminOpcode::ABORT => (SUCCESS, self.abort(cmd)),
            AdminOpcode::SET_FEATURES => self.set_features(cmd),
            AdminOpcode::GET_FEATURES => self.get_features(cmd),
            // Only reached beyond the limit: the others are held in `stuck`.
            AdminOpcode::ASYNC_EVENT_REQUEST => (AER_LIMIT_EXCEEDED, 0),
            AdminOpcode::KEEP_ALIVE => (SUCCESS, 0),
            _ => (INVALID_OPCODE, 0),
        }
    }

    fn io_queue_limit(&self, completion: bool) -> u16 {
        (if completion { self.ncqa } else { self.nsqa }).saturating_add(1)
    }

    /// Create I/O Completion Queue (section 5.3).
    fn create_cq(&mut self, cmd: &SubmissionEntry) -> u16 {
        let cdw10 = CreateIoQueueCdw10::from_bits(cmd.cdw10);
        let (qid, qsize) = (cdw10.qid(), cdw10.qsize());
        let cdw11 = CreateIoCqCdw11::from_bits(cmd.cdw11);
        let (pc, ien, vector) = (cdw11.pc(), cdw11.ien(), cdw11.iv());
        if qid == 0 || qid > self.io_queue_limit(true) || self.cqs.contains_key(&qid) {
            return INVALID_QID;
        }
        if qsize == 0 || qsize > self.cfg.mqes || qsize == u16::MAX {
            return INVALID_QSIZE;
        }
        if !cmd.prp1.is_multiple_of(PAGE) {
            return PRP_OFFSET_INVALID;
        }
        // One interrupt vector (0), and the queues are polled anyway.
        if ien && vector != 0 {
            return spec(cs::INVALID_INTERRUPT_VECTOR);
        }
        if !pc {
            return INVALID_FIELD;
        }
        let size = qsize + 1;
        if self.mem.device_range(cmd.prp1, size as usize * CQ_ENTRY as usize).is_none() {
            return INVALID_FIELD;
        }
        self.cqs.insert(qid, Cq::new(cmd.prp1, size));
        SUCCESS
    }

    /// Create I/O Submission Queue (section 5.4).
    fn create_sq(&mut self, cmd: &SubmissionEntry) -> u16 {
        let cdw10 = CreateIoQueueCdw10::from_bits(cmd.cdw10);
        let (qid, qsize) = (cdw10.qid(), cdw10.qsize());
        let cdw11 = CreateIoSqCdw11::from_bits(cmd.cdw11);
        let (pc, cqid) = (cdw11.pc(), cdw11.cqid());
        if cqid == 0 || !self.cqs.contains_key(&cqid) {
            return CQ_INVALID;
        }
        if qid == 0 || qid > self.io_queue_limit(false) || self.sqs.contains_key(&qid) {
            return INVALID_QID;
        }
        if qsize == 0 || qsize > self.cfg.mqes || qsize == u16::MAX {
            return INVALID_QSIZE;
        }
        if !cmd.prp1.is_multiple_of(PAGE) {
            return PRP_OFFSET_INVALID;
        }
        if !pc {
            return INVALID_FIELD;
        }
        let size = qsize + 1;
        if self.mem.device_range(cmd.prp1, size as usize * SQ_ENTRY as usize).is_none() {
            return INVALID_FIELD;
        }
        self.sqs.insert(qid, Sq::new(cmd.prp1, size, cqid));
        SUCCESS
    }

    /// Delete I/O Submission Queue (section 5.6): every command of the queue
    /// still inside the device completes with "aborted due to SQ deletion"
    /// first.
    fn delete_sq(&mut self, cmd: &SubmissionEntry) -> u16 {
        let qid = DeleteIoQueueCdw10::from_bits(cmd.cdw10).qid();
        if qid == 0 || !self.sqs.contains_key(&qid) {
            return INVALID_QID;
        }
        let mut victims: Vec<Pending> = self.pending.values().filter(|p| p.sqid == qid).copied().collect();
        victims.extend(self.stuck.values().filter(|p| p.sqid == qid).copied());
        victims.sort_by_key(|p| p.seq);
        self.pending.retain(|_, p| p.sqid != qid);
        self.stuck.retain(|_, p| p.sqid != qid);
        for p in victims {
            self.post(qid, p.cmd.cdw0.cid(), ABORTED_SQ_DELETION, 0, PostKind::Real);
        }
        self.sqs.remove(&qid);
        // A new SQ with this identifier must not inherit what the host
        // releases of this one's completions.
        for cq in self.cqs.values_mut() {
            for slot in cq.slots.iter_mut().filter(|s| s.is_some_and(|(sq, _)| sq == qid)) {
                *slot = None;
            }
            for post in cq.waiting.iter_mut().filter(|p| p.track.is_some_and(|(sq, _)| sq == qid)) {
                post.track = None;
            }
        }
        SUCCESS
    }

    /// Delete I/O Completion Queue (section 5.5).
    fn delete_cq(&mut self, cmd: &SubmissionEntry) -> u16 {
        let qid = DeleteIoQueueCdw10::from_bits(cmd.cdw10).qid();
        if qid == 0 || !self.cqs.contains_key(&qid) {
            return INVALID_QID;
        }
        if self.sqs.values().any(|sq| sq.cqid == qid) {
            return INVALID_QUEUE_DELETION;
        }
        self.cqs.remove(&qid);
        SUCCESS
    }

    /// See [`crate::Sim::scribble_cq`].
    /// Starts (or stops, with `count` 0) a babbling completion queue: the
    /// device writes `count` bogus, phase-valid entries into CQ `cqid` at its
    /// own tail, ignoring the host's head (no back-pressure), one now and one
    /// more each time the host orders a completion read
    /// (`Hal::barrier_after_phase`), so that a host reading entry after entry
    /// always finds the next one ready. Returns false when there is no such
    /// queue.
    pub(crate) fn babble(&mut self, cqid: u16, count: u64) -> bool {
        if !self.cqs.contains_key(&cqid) {
            return false;
        }
        self.babble = (count > 0).then_some((cqid, count));
        self.babble_step();
        true
    }

    /// Writes the next babbling entry, if the device is babbling.
    pub(crate) fn babble_step(&mut self) {
        let Some((cqid, left)) = self.babble else { return };
        self.babble = (left > 1).then_some((cqid, left - 1));
        let Some(sqid) = self.sqs.iter().find(|(_, sq)| sq.cqid == cqid).map(|(&id, _)| id) else { return };
        let cid = self.unissued_cid(sqid, 0x0bab);
        let head = self.sqs.get(&sqid).map_or(0, |sq| sq.head);
        let Some(cq) = self.cqs.get_mut(&cqid) else { return };
        let entry =
            CompletionEntry { dw0: 0, dw1: 0, sqhd: head, sqid, cid, status: Status::new().with_p(cq.phase) };
        let addr = cq.base + cq.tail as u64 * CQ_ENTRY;
        cq.tail += 1;
        if cq.tail == cq.size {
            cq.tail = 0;
            cq.phase = !cq.phase;
        }
        if self.mem.device_write(addr, &cqe_bytes(&entry)) {
            self.stats.babbled += 1;
        } else {
            self.dma_fault();
        }
    }

    pub(crate) fn scribble_cq(&mut self, cqid: u16, bytes: &[u8]) -> bool {
        let Some(cq) = self.cqs.get(&cqid) else { return false };
        let len = bytes.len().min(cq.size as usize * 16);
        self.mem.device_write(cq.base, &bytes[..len])
    }

    /// Abort (section 5.1): DW0 bit 0 is 0 when the command was aborted.
    fn abort(&mut self, cmd: &SubmissionEntry) -> u32 {
        let cdw10 = AbortCdw10::from_bits(cmd.cdw10);
        let (sqid, cid) = (cdw10.sqid(), cdw10.cid());
        if self.cfg.abort_lies {
            return 0;
        }
        if !self.cfg.abort_works {
            return 1;
        }
        let hit = |p: &Pending| p.sqid == sqid && p.cmd.cdw0.cid() == cid;
        let victim = if let Some(key) = self.pending.iter().find(|(_, p)| hit(p)).map(|(k, _)| *k) {
            self.pending.remove(&key)
        } else if let Some(key) = self.stuck.iter().find(|(_, p)| hit(p)).map(|(k, _)| *k) {
            self.stuck.remove(&key)
        } else {
            None
        };
        match victim {
            Some(p) => {
                self.post(p.sqid, cid, ABORTED_BY_REQUEST, 0, PostKind::Real);
                0
            }
            None => 1,
        }
    }

    fn set_features(&mut self, cmd: &SubmissionEntry) -> (u16, u32) {
        let cdw10 = FeaturesCdw10::from_bits(cmd.cdw10);
        if cdw10.sv() {
            return (NOT_SAVEABLE, 0);
        }
        let fid = cdw10.fid();
        match fid {
            Fid::NUMBER_OF_QUEUES => {
                let requested = NumberOfQueues::from_bits(cmd.cdw11);
                let (nsqr, ncqr) = (requested.nsq(), requested.ncq());
                if nsqr == u16::MAX || ncqr == u16::MAX {
                    return (INVALID_FIELD, 0);
                }
                if self.sqs.keys().chain(self.cqs.keys()).any(|&q| q != 0) {
                    return (COMMAND_SEQUENCE_ERROR, 0);
                }
                let max = self.cfg.max_io_queues - 1;
                self.nsqa = nsqr.min(max);
                self.ncqa = ncqr.min(max);
                (SUCCESS, self.queues_allocated())
            }
            Fid(0x01..=0x06 | 0x08..=0x0b) | Fid::KEEP_ALIVE_TIMER => {
                self.features.insert(fid.0, cmd.cdw11);
                (SUCCESS, 0)
            }
            _ => (INVALID_FIELD, 0),
        }
    }

    fn get_features(&mut self, cmd: &SubmissionEntry) -> (u16, u32) {
        let fid = FeaturesCdw10::from_bits(cmd.cdw10).fid();
        match fid {
            Fid::NUMBER_OF_QUEUES => (SUCCESS, self.queues_allocated()),
            Fid(0x01..=0x06 | 0x08..=0x0b) | Fid::KEEP_ALIVE_TIMER => {
                (SUCCESS, self.features.get(&fid.0).copied().unwrap_or(0))
            }
            _ => (INVALID_FIELD, 0),
        }
    }

    /// Number of Queues DW0: NSQA and NCQA, 0-based.
    fn queues_allocated(&self) -> u32 {
        NumberOfQueues::new().with_nsq(self.nsqa).with_ncq(self.ncqa).into_bits()
    }

    /// Get Log Page (section 5.14): error information, SMART / health and
    /// firmware slot pages, all zeros (a temperature of 313 K in SMART).
    fn get_log_page(&mut self, cmd: &SubmissionEntry) -> u16 {
        let cdw10 = GetLogPageCdw10::from_bits(cmd.cdw10);
        let numd =
            ((GetLogPageCdw11::from_bits(cmd.cdw11).numdu() as usize) << 16) + cdw10.numdl() as usize + 1;
        let len = numd * 4;
        if len > MAX_LOG_BYTES {
            return INVALID_FIELD;
        }
        let mut page = vec![0u8; len];
        match cdw10.lid() {
            Lid::ERROR_INFORMATION | Lid::FIRMWARE_SLOT => {}
            Lid::SMART_HEALTH => {
                if len >= 3 {
                    put(&mut page, 1, &313u16.to_le_bytes());
                }
            }
            _ => return INVALID_LOG_PAGE,
        }
        self.write_to_host(cmd, &page)
    }

    fn identify(&mut self, cmd: &SubmissionEntry) -> u16 {
        let cns = IdentifyCdw10::from_bits(cmd.cdw10).cns();
        let nsid = cmd.nsid;
        let mut page = vec![0u8; PAGE_SIZE];
        match cns {
            Cns::NAMESPACE => {
                if nsid == 0 || nsid > self.nn {
                    return INVALID_NAMESPACE;
                }
                self.identify_namespace(nsid, &mut page);
            }
            Cns::CONTROLLER => self.identify_controller(&mut page),
            Cns::ACTIVE_NAMESPACES => {
                if nsid >= 0xffff_fffe {
                    return INVALID_NAMESPACE;
                }
                let active = self.namespaces.iter().filter(|n| n.active && n.cfg.nsid > nsid);
                for (i, ns) in active.take(1024).enumerate() {
                    put(&mut page, i * 4, &ns.cfg.nsid.to_le_bytes());
                }
            }
            Cns::NAMESPACE_ID_DESCRIPTORS => {
                if !self.namespaces.iter().any(|n| n.active && n.cfg.nsid == nsid) {
                    return INVALID_NAMESPACE;
                }
                // An NGUID descriptor (NIDT 2, 16 bytes), then the CSI (NIDT 4, 1 byte: NVM).
                page[0] = Nidt::NGUID.0;
                page[1] = 16;
                put(&mut page, 4, b"nvme-sim");
                put(&mut page, 12, &nsid.to_be_bytes());
                page[20] = Nidt::CSI.0;
                page[21] = 1;
                page[24] = 0;
            }
            _ => return INVALID_FIELD,
        }
        self.write_to_host(cmd, &page)
    }

    /// Identify Controller (CNS 01h), written at the offsets of NVMe 1.4
    /// figure 247 (independently of the driver's structure definition).
    fn identify_controller(&self, b: &mut [u8]) {
        let lies = self.cfg.lies;
        put(b, 0, &0x1b36u16.to_le_bytes()); // VID
        put(b, 2, &0x1af4u16.to_le_bytes()); // SSVID
        put_str(b, 4, 20, "SIM0001");
        put_str(b, 24, 40, "nvme-sim");
        put_str(b, 64, 8, env!("CARGO_PKG_VERSION"));
        b[72] = 6; // RAB
        b[77] = lies.mdts.unwrap_or(self.cfg.mdts);
        put(b, 78, &1u16.to_le_bytes()); // CNTLID
        put(b, 80, &VERSION.to_le_bytes());
        b[111] = 1; // CNTRLTYPE: I/O controller
        b[258] = 3; // ACL: 4 concurrent aborts
        b[259] = (AER_LIMIT - 1) as u8; // AERL
        b[260] = 0x02; // FRMW: one slot
        b[262] = 0; // ELPE
        b[263] = 0; // NPSS: one power state
        put(b, 266, &343u16.to_le_bytes()); // WCTEMP
        put(b, 268, &373u16.to_le_bytes()); // CCTEMP
        b[512] = 0x66; // SQES
        b[513] = 0x44; // CQES
        put(b, 516, &lies.nn.unwrap_or(self.nn).to_le_bytes());
        put(b, 520, &0x000cu16.to_le_bytes()); // ONCS: DSM, Write Zeroes
        b[525] = 0x01; // VWC present
        put(b, 768, b"nqn.2024-01.io.github.nvme-sim:SIM0001");
        put(b, 2048, &2500u16.to_le_bytes()); // PSD0 MP: 25 W
    }

    /// Identify Namespace (CNS 00h): zeros for an inactive NSID.
    fn identify_namespace(&self, nsid: u32, b: &mut [u8]) {
        let Some(ns) = self.namespaces.iter().find(|n| n.active && n.cfg.nsid == nsid) else {
            return;
        };
        let lies = self.cfg.lies;
        let blocks = ns.cfg.blocks;
        put(b, 0, &blocks.to_le_bytes()); // NSZE
        put(b, 8, &blocks.to_le_bytes()); // NCAP
        put(b, 16, &blocks.to_le_bytes()); // NUSE
        b[25] = lies.nlbaf.unwrap_or(0);
        b[26] = lies.flbas.unwrap_or(0);
        put(b, 104, b"nvme-sim");
        put(b, 112, &nsid.to_be_bytes());
        // LBAF0: no metadata, LBADS = log2(block size), best performance.
        b[128 + 2] = lies.lbads.unwrap_or(ns.cfg.block_size.trailing_zeros() as u8);
    }

    // ----- I/O commands -----

    fn active_namespace(&self, nsid: u32) -> Option<usize> {
        self.namespaces.iter().position(|n| n.active && n.cfg.nsid == nsid)
    }

    fn execute_io(&mut self, cmd: &SubmissionEntry) -> (u16, u32) {
        if cmd.cdw0.fuse() != 0 {
            return (INVALID_FIELD, 0);
        }
        let status = match IoOpcode(cmd.cdw0.opc()) {
            IoOpcode::FLUSH => {
                if cmd.nsid == u32::MAX || self.active_namespace(cmd.nsid).is_some() {
                    SUCCESS
                } else {
                    INVALID_NAMESPACE
                }
            }
            IoOpcode::READ | IoOpcode::WRITE => self.read_write(cmd),
            IoOpcode::WRITE_ZEROES => self.write_zeroes(cmd),
            IoOpcode::DATASET_MANAGEMENT => self.dataset_management(cmd),
            _ => INVALID_OPCODE,
        };
        (status, 0)
    }

    /// The namespace index and byte range of `nlb` blocks at `slba`, checked.
    fn lba_range(&self, nsid: u32, slba: u64, nlb: u64) -> Result<(usize, usize, usize), u16> {
        let index = self.active_namespace(nsid).ok_or(INVALID_NAMESPACE)?;
        let ns = &self.namespaces[index].cfg;
        match slba.checked_add(nlb) {
            Some(end) if end <= ns.blocks => {}
            _ => return Err(LBA_OUT_OF_RANGE),
        }
        let bs = ns.block_size as usize;
        // In range of a namespace that fits in memory: these cannot overflow.
        Ok((index, slba as usize * bs, nlb as usize * bs))
    }

    fn read_write(&mut self, cmd: &SubmissionEntry) -> u16 {
        let Some(index) = self.active_namespace(cmd.nsid) else { return INVALID_NAMESPACE };
        if cmd.cdw0.psdt() != 0 {
            return INVALID_FIELD;
        }
        let slba = cmd.cdw10 as u64 | ((cmd.cdw11 as u64) << 32);
        let nlb = ReadWriteCdw12::from_bits(cmd.cdw12).nlb() as u64 + 1;
        let bytes = nlb * self.namespaces[index].cfg.block_size as u64;
        if self.cfg.mdts != 0 && bytes > PAGE << self.cfg.mdts.min(40) {
            return INVALID_FIELD;
        }
        let (index, start, len) = match self.lba_range(cmd.nsid, slba, nlb) {
            Ok(r) => r,
            Err(s) => return s,
        };
        if IoOpcode(cmd.cdw0.opc()) == IoOpcode::WRITE {
            match self.read_from_host(cmd, len) {
                Ok(data) => {
                    self.namespaces[index].data[start..start + len].copy_from_slice(&data);
                    SUCCESS
                }
                Err(s) => s,
            }
        } else {
            let data = self.namespaces[index].data[start..start + len].to_vec();
            self.write_to_host(cmd, &data)
        }
    }

    fn write_zeroes(&mut self, cmd: &SubmissionEntry) -> u16 {
        let slba = cmd.cdw10 as u64 | ((cmd.cdw11 as u64) << 32);
        let nlb = ReadWriteCdw12::from_bits(cmd.cdw12).nlb() as u64 + 1;
        match self.lba_range(cmd.nsid, slba, nlb) {
            Ok((index, start, len)) => {
                self.namespaces[index].data[start..start + len].fill(0);
                SUCCESS
            }
            Err(s) => s,
        }
    }

    /// Dataset Management: with the Deallocate attribute, the ranges read as
    /// zeros afterwards.
    fn dataset_management(&mut self, cmd: &SubmissionEntry) -> u16 {
        if self.active_namespace(cmd.nsid).is_none() {
            return INVALID_NAMESPACE;
        }
        if cmd.cdw0.psdt() != 0 {
            return INVALID_FIELD;
        }
        let ranges = (cmd.cdw10 & 0xff) as usize + 1;
        let list = match self.read_from_host(cmd, ranges * 16) {
            Ok(l) => l,
            Err(s) => return s,
        };
        let mut checked = Vec::with_capacity(ranges);
        for r in list.chunks_exact(16) {
            let nlb = u32::from_le_bytes([r[4], r[5], r[6], r[7]]) as u64;
            let slba = u64::from_le_bytes([r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]]);
            match self.lba_range(cmd.nsid, slba, nlb) {
                Ok(range) => checked.push(range),
                Err(s) => return s,
            }
        }
        if cmd.cdw11 & (1 << 2) != 0 {
            for (index, start, len) in checked {
                self.namespaces[index].data[start..start + len].fill(0);
            }
        }
        SUCCESS
    }
}

impl Sq {
    fn new(base: u64, size: u16, cqid: u16) -> Sq {
        Sq {
            base,
            size,
            head: 0,
            tail: 0,
            cqid,
            issued: BTreeSet::new(),
            last_completed: None,
            consumed_head: 0,
        }
    }

    /// An SQ head the host cannot accept: a slot strictly after the tail and
    /// before the oldest head the host may still hold, or `size` (outside the
    /// ring) when the host may hold the whole ring.
    fn impossible_head(&self) -> u16 {
        let occupied = ring_distance(self.consumed_head % self.size, self.tail, self.size);
        let free = self.size - 1 - occupied;
        if free == 0 {
            return self.size;
        }
        ((self.tail as u32 + 1 + (free as u32 - 1) / 2) % self.size as u32) as u16
    }
}

impl Cq {
    fn new(base: u64, size: u16) -> Cq {
        Cq {
            base,
            size,
            head: 0,
            tail: 0,
            phase: true,
            waiting: VecDeque::new(),
            slots: vec![None; size as usize],
        }
    }
}
