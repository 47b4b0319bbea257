//! [`SimStats`]: the counters a test reads to check what the controller saw
//! and did, and the snapshot [`Sim::stats`](crate::Sim::stats) takes of them
//! (the memory counters live in the arena and are copied in).

use super::State;
use crate::fault::FaultKind;

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
    /// Of those, on admin commands.
    pub admin_faults: u64,
    /// Aborts fetched while ACL + 1 (4) were already outstanding: a real
    /// controller fails them with Abort Command Limit Exceeded.
    pub abort_limit_exceeded: u64,
    /// `dma_free` calls with a region that was not live (double or foreign frees).
    pub bad_frees: u64,
    /// `unshare` calls matching no live share.
    pub bad_unshares: u64,
    /// `dma_free` or `unshare` of memory that a live queue ring, or a
    /// command still inside the device, names: the device could still write
    /// it.
    pub released_in_use: u64,
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
    /// I/O queue tails and heads the controller took from shadow doorbells
    /// (not from MMIO doorbell writes).
    pub shadow_doorbells: u64,
    /// Shadow doorbell values it could not take: a tail outside the queue,
    /// a head not between the old head and the tail (QEMU 7.2 would take
    /// such a head and wedge the queue). A host bug.
    pub stale_shadow_doorbells: u64,
    /// Reads, writes, compares, write zeroes, verifies and copies with FUA
    /// set (CDW12 bit 30).
    pub fua_commands: u64,
    /// The same commands with Limited Retry set (CDW12 bit 31).
    pub limited_retry_commands: u64,
    /// Copy commands that completed successfully.
    pub copies: u64,
    /// Sanitize commands carried out.
    pub sanitizes: u64,
    /// Set Features that enabled the host memory buffer.
    pub hmb_enables: u64,
    /// Times the controller used the host memory buffer.
    pub hmb_touches: u64,
    /// Of those, where it did not find what it had left there, or could
    /// not reach the memory (the host wrote or freed it).
    pub hmb_corrupted: u64,
    /// Memory Return of a buffer that is not the one the controller had,
    /// or whose contents changed meanwhile.
    pub hmb_lost: u64,
    /// Submission entries fetched from the controller memory buffer.
    pub cmb_fetches: u64,
    /// Writes of CMBMSC's lower half (each turns the memory space off, and
    /// on again when it sets CRE and CMSE).
    pub cmb_msc_writes: u64,
    /// Namespaces created through Namespace Management.
    pub namespaces_created: u64,
    /// Keep Alive Timer expiries (each made the controller fatal).
    pub keep_alive_expired: u64,
    /// Asynchronous events the controller had to report.
    pub events_raised: u64,
    /// Of those, delivered in an Asynchronous Event Request's completion.
    pub events_delivered: u64,
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

impl State {
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
}
