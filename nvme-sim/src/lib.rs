//! `nvme-sim`: a simulated NVMe controller behind [`hal_traits::Hal`], so that
//! the real `nvme-nostd` driver runs against it in host tests and benches,
//! with deterministic virtual time and fault injection. Never used by the core.
//!
//! ```
//! use nvme_nostd::{Controller, ControllerOptions};
//! use nvme_sim::{Sim, SimConfig};
//!
//! let sim = Sim::new(SimConfig::default());
//! let ctrlr = Controller::new(sim.hal(), ControllerOptions::default()).unwrap();
//! let ns = ctrlr.namespace(1).unwrap();
//! assert_eq!(ns.block_size(), 512);
//! assert_eq!(sim.stats().bad_frees, 0);
//! ```
//!
//! # The device
//!
//! An NVMe 1.4 controller over PCIe-style registers (CAP, VS, CC, CSTS, AQA,
//! ASQ, ACQ, doorbells at `0x1000 + ((2 * qid + is_cq) << (2 + DSTRD))`),
//! one admin queue and up to [`SimConfig::max_io_queues`] I/O queue pairs, the
//! admin commands a host driver needs (Identify CNS 00h to 03h, Set/Get
//! Features, Create/Delete I/O SQ/CQ, Abort, Keep Alive, Get Log Page,
//! Asynchronous Event Request) and the NVM commands Read, Write, Flush, Write
//! Zeroes and Dataset Management, with data moved through PRP1/PRP2 and
//! chained PRP lists. Everything the host writes is untrusted: a bad address
//! fails the command with Data Transfer Error, never a panic.
//!
//! # Time
//!
//! Time is virtual and moves only when the host waits ([`Hal::delay`](hal_traits::Hal::delay)), when
//! the test calls [`Sim::advance`], or by [`SimConfig::now_tick`] on each
//! [`Hal::now`](hal_traits::Hal::now) call (so that hosts busy-polling against a `now()` deadline
//! make progress). The device does everything due up to the new time, in a
//! deterministic order: the same configuration, rules, seed and host actions
//! give the same results.
//!
//! # Memory
//!
//! All DMA memory comes from one arena; device addresses are
//! [`IOVA_BASE`]` + offset`, and the device may only touch pages that are
//! currently allocated (like an IOMMU). [`Hal::share`](hal_traits::Hal::share) copies the caller's
//! buffer into bounce pages (and [`Hal::unshare`](hal_traits::Hal::unshare) copies it back), so a
//! missing unshare or a wrong direction shows up as wrong data.
//! [`SimStats`] counts bad frees and unshares instead of panicking.
#![deny(missing_docs, unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod bus;
mod config;
mod device;
mod fault;
mod hal;
mod memory;

pub use bus::SimBus;
pub use config::{CopyLimits, DoorbellBuffer, IdentifyLies, SimConfig, SimMetadata, SimNamespace, SimZoned};
pub use device::cmb::{CMB_BAR, CMB_BUS_ADDRESS};
pub use device::reservations::OTHER_HOST_ID;
pub use device::SimStats;
pub use fault::{Fault, FaultKind, FaultRule, QueueFilter, RandomFaults, SplitMix64};
pub use hal::{Mapping, SimHal};
pub use memory::{IOVA_BASE, POISON_BOUNCE, POISON_FREED};

use core::time::Duration;
use device::State;
use nvme_spec::command::SubmissionEntry;
use nvme_spec::ids::{AsyncEventInfo, AsyncEventType, Lid};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A simulated NVMe controller. Clones share the same controller; so do the
/// [`SimHal`] handles from [`Sim::hal`].
///
/// `Send + Sync`: the controller's state sits behind one mutex, so a test can
/// drive the device from several threads (queue pairs on their own threads
/// sharing one `Controller<SimHal>`, a thread that injects faults or moves
/// time). See [`SimHal`] for what that does and does not model.
#[derive(Clone)]
pub struct Sim {
    state: Arc<Mutex<State>>,
}

/// Locks the simulator's state. A poisoned lock (a thread panicked while it
/// held it) is taken over rather than turned into a second panic: tests panic
/// on purpose inside driver callbacks and then check the simulator, and its
/// state is plain bookkeeping that stays fit for those checks. The lock is
/// held only inside the simulator's own steps (and, in `share`, while the
/// driver's segment sink runs), never while a driver callback runs.
pub(crate) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl core::fmt::Debug for Sim {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sim").field("now", &self.now()).finish_non_exhaustive()
    }
}

impl Sim {
    /// A controller as `config` describes it, disabled, at virtual time 0.
    ///
    /// # Panics
    ///
    /// When the configuration describes no valid controller: DSTRD above 15,
    /// `max_io_queues` 0, an NSID of 0 or above 0xFFFF_FFFD or given twice, a
    /// block size that is not a power of two from 512 to 65536, an empty
    /// namespace, or memory that cannot be allocated.
    pub fn new(config: SimConfig) -> Sim {
        Sim { state: Arc::new(Mutex::new(State::new(config))) }
    }

    /// The [`Hal`](hal_traits::Hal) for this controller, to hand to the
    /// driver: one at a time (see [`SimHal`]).
    ///
    /// # Panics
    ///
    /// When a `SimHal` of this controller is alive (use [`Sim::try_hal`] to
    /// test that).
    pub fn hal(&self) -> SimHal {
        self.try_hal().expect("the simulated controller is claimed by a live SimHal: one driver per device")
    }

    /// The [`Hal`](hal_traits::Hal) for this controller, or `None` while
    /// another `SimHal` of it is alive: two drivers can never drive one
    /// device.
    pub fn try_hal(&self) -> Option<SimHal> {
        let mut state = self.lock();
        if state.claimed {
            return None;
        }
        state.claimed = true;
        Some(SimHal { state: self.state.clone() })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The virtual time (does not move it).
    pub fn now(&self) -> Duration {
        self.lock().now()
    }

    /// Moves virtual time on by `d`; the device processes everything due up to
    /// then (controller state changes, then commands by due time and fetch
    /// order).
    pub fn advance(&self, d: Duration) {
        self.lock().advance(d)
    }

    /// Adds a fault rule (see [`FaultRule`]).
    pub fn inject(&self, rule: FaultRule) {
        self.lock().inject(rule)
    }

    /// Random faults on every queue: each fetched command that no rule claims
    /// gets, with `probability_per_command`, a fault of one of `kinds`, drawn
    /// from a generator seeded with `seed`. Replaces earlier random injection.
    pub fn inject_random(&self, seed: u64, probability_per_command: f64, kinds: &[FaultKind]) {
        self.inject_random_with(RandomFaults {
            seed,
            probability_per_command,
            kinds: kinds.to_vec(),
            queues: QueueFilter::All,
        })
    }

    /// Random faults as `random` says (for instance on I/O queues only).
    pub fn inject_random_with(&self, random: RandomFaults) {
        self.lock().inject_random(random)
    }

    /// Removes every rule and random injection, and undoes a removal. A fatal
    /// status (CSTS.CFS) stays until the host resets the controller (the next
    /// CC.EN 1 -> 0), as on real hardware.
    pub fn clear_faults(&self) {
        self.lock().clear_faults()
    }

    /// The device disappears for `d` of virtual time (as [`set_removed`](Self::set_removed)),
    /// then comes back by itself, its state as it was: a surprise-down that
    /// the link recovers from.
    pub fn disappear_for(&self, d: Duration) {
        self.lock().disappear_for(d)
    }

    /// Whether the host has enabled ACRE (Set Features / Host Behavior
    /// Support); a reset clears it.
    pub fn acre(&self) -> bool {
        self.lock().acre()
    }

    /// Removes (or brings back) the device: while removed, registers read all
    /// ones, writes are ignored and nothing is processed.
    pub fn set_removed(&self, removed: bool) {
        self.lock().set_removed(removed)
    }

    /// Sets CSTS.CFS now: the device stops processing commands until the host
    /// resets it (CC.EN 1 -> 0).
    pub fn set_fatal(&self) {
        self.lock().set_fatal()
    }

    /// The controller has an asynchronous event to report (Asynchronous
    /// Event Configuration is not consulted): it completes a held
    /// Asynchronous Event Request with it at once, or when one comes, unless
    /// an earlier event of its type is still masked (until the host reads
    /// that event's log page with RAE clear). A reset drops events not yet
    /// delivered.
    pub fn raise_event(&self, event_type: AsyncEventType, info: AsyncEventInfo, log_page: Lid) {
        self.lock().raise_event(event_type, info, log_page)
    }

    /// Turns the masking of delivered event types off (a controller that
    /// misbehaves: it reports events of a type again before their log page
    /// was read) or back on.
    pub fn set_event_masking(&self, masking: bool) {
        self.lock().set_event_masking(masking)
    }

    /// Another host formats namespace `nsid` with LBA format `lbaf` (0: its
    /// configured block size, 1: the other of 512 and 4096 bytes): its data
    /// is zeroed, its block size changes, it joins the Changed Namespace
    /// List, and a Namespace Attribute Changed notice goes out if the host
    /// enabled them. False if there is no such active namespace or format.
    pub fn format_by_other_host(&self, nsid: u32, lbaf: usize) -> bool {
        self.lock().format_by_other_host(nsid, lbaf)
    }

    /// The namespace disappears: Identify Namespace returns zeros, it leaves
    /// the active list, and I/O to it fails with Invalid Namespace or Format.
    /// Its data stays readable through [`Sim::read_blocks`]. It joins the
    /// Changed Namespace List (log page 04h), and a Namespace Attribute
    /// Changed notice goes out if the host enabled them.
    pub fn remove_namespace(&self, nsid: u32) {
        self.lock().remove_namespace(nsid)
    }

    /// Changes CAP.MQES (0 is invalid, and drivers must refuse it).
    pub fn set_mqes(&self, mqes: u16) {
        self.lock().cfg.mqes = mqes;
    }

    /// Makes CSTS.RDY never (or again) follow CC.EN from the next enable on.
    pub fn set_rdy_never(&self, never: bool) {
        self.lock().cfg.rdy_never = never;
    }

    /// Sets [`SimConfig::disable_never`]; clearing it lets a pending
    /// disable finish (CSTS.RDY reads 0 at once).
    pub fn set_disable_never(&self, never: bool) {
        let mut state = self.lock();
        state.cfg.disable_never = never;
        if !never {
            state.finish_disable();
        }
    }

    /// Changes the identify lies.
    pub fn set_lies(&self, lies: IdentifyLies) {
        self.lock().cfg.lies = lies;
    }

    /// Makes Abort answer "aborted" without aborting anything (or stop that).
    pub fn set_abort_lies(&self, lies: bool) {
        self.lock().cfg.abort_lies = lies;
    }

    /// Makes Abort work or not (QEMU's never does).
    pub fn set_abort_works(&self, works: bool) {
        self.lock().cfg.abort_works = works;
    }

    /// Changes the per-command latency, for commands fetched from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().cfg.latency = latency;
    }

    /// Commands fetched and not yet completed, dropped ones included.
    pub fn outstanding(&self) -> usize {
        self.lock().outstanding()
    }

    /// `count` blocks from `lba` of namespace `nsid`, straight from the
    /// backing store (removed namespaces included), for invariant checks.
    ///
    /// # Panics
    ///
    /// When the namespace does not exist or the range is beyond its end.
    pub fn read_blocks(&self, nsid: u32, lba: u64, count: u64) -> Vec<u8> {
        let state = self.lock();
        let (data, bs) = state.namespace_data(nsid).expect("no such namespace");
        let (start, len) = byte_range(lba, count, bs, data.len());
        data[start..start + len].to_vec()
    }

    /// Sends a reservation command (Register, Acquire, Release or Report:
    /// `opcode`, its CDW10 and CDW11, and its data) for namespace `nsid` as
    /// another host on another controller of the subsystem (CNTLID 2, Host
    /// Identifier [`OTHER_HOST_ID`]), with `SimConfig::reservations`.
    /// Returns the completion status (SCT and SC as in a completion's bits
    /// 15:1, shifted down; 0 for success) and, for Report, its data (NUMD
    /// in CDW10 says how much).
    pub fn other_host_reservation(
        &self,
        nsid: u32,
        opcode: nvme_spec::command::IoOpcode,
        cdw10: u32,
        cdw11: u32,
        data: &[u8],
    ) -> (u16, Vec<u8>) {
        let mut state = self.lock();
        assert!(state.cfg.reservations, "the configuration has no reservations");
        let mut cmd = SubmissionEntry::new(opcode.0, nsid);
        (cmd.cdw10, cmd.cdw11) = (cdw10, cdw11);
        state.reservation_command(device::reservations::Host::OTHER, &cmd, data)
    }

    /// The metadata of `count` blocks from `lba` of namespace `nsid`,
    /// straight from the backing store (empty without metadata).
    ///
    /// # Panics
    ///
    /// When the namespace does not exist or the range is beyond its end.
    pub fn read_metadata(&self, nsid: u32, lba: u64, count: u64) -> Vec<u8> {
        let state = self.lock();
        let (meta, ms) = state.namespace_metadata(nsid).expect("no such namespace");
        meta[lba as usize * ms..(lba + count) as usize * ms].to_vec()
    }

    /// Writes the metadata of whole blocks from `lba` of namespace `nsid`
    /// straight into the backing store (`data` is a whole number of blocks'
    /// metadata).
    ///
    /// # Panics
    ///
    /// When the namespace does not exist, has no metadata, or the range is
    /// beyond its end.
    pub fn write_metadata(&self, nsid: u32, lba: u64, data: &[u8]) {
        let mut state = self.lock();
        let (meta, ms) = state.namespace_metadata_mut(nsid).expect("no such namespace");
        assert!(ms > 0 && data.len().is_multiple_of(ms), "whole blocks' metadata");
        meta[lba as usize * ms..lba as usize * ms + data.len()].copy_from_slice(data);
    }

    /// The last I/O commands the controller executed (at most 64), oldest
    /// first, as it read them from the submission queues: for tests of
    /// command encoding.
    pub fn recent_io_commands(&self) -> Vec<SubmissionEntry> {
        self.lock().recent_io.iter().copied().collect()
    }

    /// Writes whole blocks straight into the backing store, from `lba` of
    /// namespace `nsid` (`data` is padded with zeros to a whole block).
    ///
    /// # Panics
    ///
    /// When the namespace does not exist or the range is beyond its end.
    pub fn write_blocks(&self, nsid: u32, lba: u64, data: &[u8]) {
        let mut state = self.lock();
        let (store, bs) = state.namespace_data_mut(nsid).expect("no such namespace");
        let count = (data.len() as u64).div_ceil(bs as u64);
        let (start, len) = byte_range(lba, count, bs, store.len());
        store[start..start + len].fill(0);
        store[start..start + data.len()].copy_from_slice(data);
    }

    /// Overwrites the memory of completion queue `cqid` with `bytes` (from
    /// its first entry on, at most the whole ring), as a device gone mad would:
    /// for fuzzing the host's completion processing. Returns false when the
    /// queue does not exist.
    pub fn scribble_cq(&self, cqid: u16, bytes: &[u8]) -> bool {
        self.lock().scribble_cq(cqid, bytes)
    }

    /// Posts a successful completion naming `cid` of submission queue
    /// `sqid` on its completion queue, at the device's tail, whether or not
    /// such a command was ever issued (a device completing what it was never
    /// given). Returns false when the queue does not exist.
    pub fn post_completion(&self, sqid: u16, cid: u16) -> bool {
        let mut state = self.lock();
        let Some(cqid) = state.cq_of(sqid) else { return false };
        state.post_bogus(cqid, sqid, cid);
        true
    }

    /// Makes completion queue `cqid` babble: `count` bogus, phase-valid
    /// entries written at the device's own tail regardless of the host's
    /// head, one now and one each time the host reads a completion (a device
    /// gone mad that never stops posting). `count` 0 stops it. Returns false
    /// when the queue does not exist.
    pub fn babble(&self, cqid: u16, count: u64) -> bool {
        self.lock().babble(cqid, count)
    }

    /// Counters and invariants.
    pub fn stats(&self) -> SimStats {
        self.lock().stats()
    }
}

/// The byte range of `count` blocks at `lba`, checked against `total` bytes.
fn byte_range(lba: u64, count: u64, bs: u32, total: usize) -> (usize, usize) {
    let start = lba.checked_mul(bs as u64).and_then(|s| usize::try_from(s).ok());
    let len = count.checked_mul(bs as u64).and_then(|l| usize::try_from(l).ok());
    match (start, len) {
        (Some(s), Some(l)) if s.checked_add(l).is_some_and(|end| end <= total) => (s, l),
        _ => panic!("blocks {lba}..+{count} are beyond the namespace"),
    }
}
