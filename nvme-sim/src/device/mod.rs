//! The simulated controller, one concept per file:
//!
//! - this file: [`State`], the whole controller (its registers, queues,
//!   commands, namespaces and fault rules as fields), its construction, and
//!   the test-facing controls that are plain field updates;
//! - `registers`: the register file the host reads and writes, and what
//!   CC.EN and CC.SHN start (enable, reset, shutdown);
//! - `time`: virtual time and the event loop that runs what is due;
//! - `queues`: submission and completion queues, doorbells, posting
//!   completions with back-pressure, and the babbling queue;
//! - `commands`: a command's life inside the controller, from fetch to
//!   completion, as its fault says;
//! - `faults`: the fault rules a test injects, drawing a command's fault, and
//!   the bogus command identifiers some faults post;
//! - `transfer`: PRP walking and moving data to and from host memory;
//! - `admin`: the admin command set, identify data and log pages;
//! - `events`: asynchronous events, their queue and masks;
//! - `nsmgmt`: namespace management and attachment;
//! - `firmware`: firmware slots, download and commit;
//! - `nvm`: the NVM I/O command set;
//! - `arbitration`: weighted round robin between submission queues;
//! - `status`: the completion status values the controller posts;
//! - `buffers`: the bookkeeping behind `Hal::translate` and the cache
//!   maintenance calls;
//! - `stats`: [`SimStats`].
//!
//! Everything the host writes (registers, queue memory, commands, PRP lists)
//! is untrusted: every index and address is checked, nothing here panics on
//! host input.

mod admin;
mod arbitration;
mod buffers;
pub mod cmb;
mod commands;
mod events;
mod faults;
mod firmware;
mod hmb;
pub mod maintenance;
mod nsmgmt;
mod nvm;
mod pi;
mod queues;
mod registers;
pub mod reservations;
mod stats;
mod status;
mod time;
mod transfer;
mod zoned;

pub use stats::SimStats;

use crate::config::{SimConfig, SimNamespace};
use crate::memory::Arena;
use commands::Pending;
use core::time::Duration;
use faults::{RandomState, RuleState};
use hal_traits::PAGE_SIZE;
use nvme_spec::registers::offset;
use queues::{Cq, Sq};
use std::collections::BTreeMap;

/// VS: NVMe 1.4.0.
const VERSION: u32 = 0x0001_0400;
const SQ_ENTRY: u64 = 64;
const CQ_ENTRY: u64 = 16;
const PAGE: u64 = PAGE_SIZE as u64;
/// Outstanding Asynchronous Event Requests the controller keeps (AERL + 1).
const AER_LIMIT: usize = 4;

struct Namespace {
    /// Its configuration; `block_size` and `blocks` follow Format NVM.
    cfg: SimNamespace,
    active: bool,
    data: Vec<u8>,
    /// LBAF0 and LBAF1: the configured block size, and 4096 bytes (512 when
    /// the configured one is 4096).
    formats: [u32; 2],
    /// Blocks made uncorrectable (Write Uncorrectable): reads of them fail
    /// until they are written again.
    uncorrectable: std::collections::BTreeSet<u64>,
    /// Its registrants and reservation.
    reservation: reservations::Reservation,
    /// Its metadata format (MS 0: none), and the metadata of every block.
    md: crate::SimMetadata,
    meta: Vec<u8>,
    /// Its zones, for a zoned namespace.
    zones: Option<zoned::Zones>,
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
    /// When the Keep Alive Timer expires, while it runs.
    keep_alive_at: Option<Duration>,
    /// CC.AMS chose weighted round robin.
    wrr: bool,
    /// Under weighted round robin the controller runs one command at a
    /// time: when the last one fetched is done.
    busy_until: Duration,
    /// CC.EN = 1 and the admin queue was accepted.
    enabled: bool,
    removed: bool,
    /// When a device that disappeared comes back by itself.
    back_at: Option<Duration>,
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
    /// Device self-tests run, their status bytes newest first (at most 20).
    self_tests: Vec<u8>,
    /// The Host Identifier the host set (FID 81h).
    host_id: [u8; 16],
    /// The Host Identifier is 128 bits (EXHID), as until the host sets one.
    host_id_extended: bool,
    /// Firmware slots and the image being downloaded.
    firmware: firmware::Firmware,
    /// Asynchronous events waiting for an AER, and the masked types.
    events: events::Events,
    /// Feature values set by the host, by [`feature_key`](Self::feature_key).
    features: BTreeMap<u16, u32>,
    namespaces: Vec<Namespace>,
    nn: u32,
    /// A `SimHal` is alive: the device is claimed by a driver.
    pub(crate) claimed: bool,
    /// A babbling completion queue and the entries it has left to write.
    babble: Option<(u16, u64)>,
    /// The shadow doorbell page and the EventIdx page the host gave with
    /// Doorbell Buffer Config, until the next controller reset.
    dbbuf: Option<(u64, u64)>,
    /// Buffers synced for the device, by (address, length).
    syncs: BTreeMap<(usize, usize), hal_traits::Direction>,
    // Faults.
    rules: Vec<RuleState>,
    random: Option<RandomState>,
    stats: SimStats,
    /// The controller memory buffer, if configured.
    pub(crate) cmb: Option<cmb::Cmb>,
    /// The host memory buffer the host handed over, if it did.
    hmb: Option<hmb::Hmb>,
    /// Sanitize and security state.
    maintenance: maintenance::Maintenance,
    /// The last [`RECENT_IO`] I/O commands executed, oldest first, as the
    /// controller read them.
    pub(crate) recent_io: std::collections::VecDeque<nvme_spec::command::SubmissionEntry>,
}

/// How many executed I/O commands [`State::recent_io`] keeps.
pub(crate) const RECENT_IO: usize = 64;

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
            let alternative = if ns.block_size == 4096 { 512 } else { 4096 };
            let md = cfg.metadata.iter().find(|m| m.nsid == ns.nsid).copied().unwrap_or_default();
            let tuple = if md.pif == 2 { 16 } else { 8 };
            assert!(md.pif == 0 || md.pif == 2, "namespace {}: PIF {}", ns.nsid, md.pif);
            assert!(md.pi <= 3 && (md.pi == 0 || md.ms >= tuple), "namespace {}: {md:?}", ns.nsid);
            namespaces.push(Namespace {
                cfg: *ns,
                active: true,
                data: vec![0; bytes],
                formats: [ns.block_size, alternative],
                uncorrectable: Default::default(),
                reservation: Default::default(),
                md,
                meta: vec![0; ns.blocks as usize * usize::from(md.ms)],
                zones: cfg.zoned.iter().find(|z| z.nsid == ns.nsid).map(|z| {
                    assert!(
                        z.zone_blocks >= 1 && z.zone_blocks <= ns.blocks,
                        "namespace {}: zone size",
                        ns.nsid
                    );
                    zoned::Zones::new(z.zone_blocks, ns.blocks, usize::from(z.extension_units) * 64)
                }),
            });
        }
        namespaces.sort_by_key(|n| n.cfg.nsid);
        let nn = namespaces.last().map_or(0, |n| n.cfg.nsid).max(cfg.max_namespaces);
        let stride = 4usize << cfg.dstrd;
        let doorbells = 2 * (cfg.max_io_queues as usize + 1) * stride;
        let bar_size = (offset::DOORBELLS + doorbells).next_multiple_of(PAGE_SIZE).max(0x2000);
        let max = cfg.max_io_queues - 1;
        let cmb = (cfg.cmb_bytes > 0)
            .then(|| cmb::Cmb::new(cfg.cmb_bytes.next_multiple_of(PAGE_SIZE), cfg.cmb_refuse_cba));
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
            keep_alive_at: None,
            wrr: false,
            busy_until: Duration::ZERO,
            enabled: false,
            removed: false,
            back_at: None,
            bar_size,
            sqs: BTreeMap::new(),
            cqs: BTreeMap::new(),
            pending: BTreeMap::new(),
            stuck: BTreeMap::new(),
            seq: 0,
            nsqa: max,
            ncqa: max,
            features: BTreeMap::new(),
            events: events::Events::default(),
            firmware: firmware::Firmware::default(),
            host_id: [0; 16],
            host_id_extended: true,
            self_tests: Vec::new(),
            namespaces,
            nn,
            claimed: false,
            recent_io: std::collections::VecDeque::with_capacity(RECENT_IO),
            babble: None,
            dbbuf: None,
            syncs: BTreeMap::new(),
            rules: Vec::new(),
            random: None,
            stats: SimStats::default(),
            cmb,
            hmb: None,
            maintenance: maintenance::Maintenance::default(),
        }
    }

    // ----- test-facing controls -----

    pub(crate) fn acre(&self) -> bool {
        self.features.get(&0x16) == Some(&1)
    }

    pub(crate) fn disappear_for(&mut self, d: Duration) {
        self.removed = true;
        self.back_at = Some(self.now.saturating_add(d));
    }

    pub(crate) fn set_removed(&mut self, removed: bool) {
        self.back_at = None;
        self.removed = removed;
    }

    pub(crate) fn set_fatal(&mut self) {
        self.cfs = true;
    }

    pub(crate) fn remove_namespace(&mut self, nsid: u32) {
        let mut changed = false;
        for ns in self.namespaces.iter_mut().filter(|n| n.cfg.nsid == nsid && n.active) {
            ns.active = false;
            changed = true;
        }
        if changed {
            self.namespace_changed(nsid);
        }
    }

    pub(crate) fn format_by_other_host(&mut self, nsid: u32, lbaf: usize) -> bool {
        let done = nsid != u32::MAX && self.apply_format(nsid, lbaf);
        if done {
            self.namespace_changed(nsid);
        }
        done
    }

    /// Commands fetched and not yet completed (dropped ones included).
    pub(crate) fn outstanding(&self) -> usize {
        self.pending.len() + self.stuck.len()
    }

    pub(crate) fn namespace_data(&self, nsid: u32) -> Option<(&[u8], u32)> {
        self.namespaces.iter().find(|n| n.cfg.nsid == nsid).map(|n| (&n.data[..], n.cfg.block_size))
    }

    pub(crate) fn namespace_metadata(&self, nsid: u32) -> Option<(&[u8], usize)> {
        self.namespaces.iter().find(|n| n.cfg.nsid == nsid).map(|n| (&n.meta[..], usize::from(n.md.ms)))
    }

    pub(crate) fn namespace_metadata_mut(&mut self, nsid: u32) -> Option<(&mut [u8], usize)> {
        self.namespaces
            .iter_mut()
            .find(|n| n.cfg.nsid == nsid)
            .map(|n| (&mut n.meta[..], usize::from(n.md.ms)))
    }

    pub(crate) fn namespace_data_mut(&mut self, nsid: u32) -> Option<(&mut [u8], u32)> {
        self.namespaces.iter_mut().find(|n| n.cfg.nsid == nsid).map(|n| (&mut n.data[..], n.cfg.block_size))
    }
}
