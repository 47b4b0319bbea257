//! The public types a queue pair speaks: its options, counters, poll limit,
//! refused submissions and completions.

use crate::error::{Error, Result};
use crate::slots::Cid;
use crate::spec::status::Status;

/// When submissions ring the submission queue's doorbell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DoorbellMode {
    /// Every submission rings the doorbell (one MMIO write per command): the
    /// lowest latency for a lone command.
    #[default]
    PerSubmission,
    /// Submissions only write their entries; the doorbell is rung once for
    /// all of them by [`IoQueuePair::ring_doorbell`](crate::IoQueuePair::ring_doorbell) or at the start of the
    /// next `poll`. Fewer MMIO writes when commands come in
    /// batches; a command is not seen by the device until then.
    Batched,
}

/// The shape of an I/O queue pair, asked for at creation.
///
/// ```
/// use nvme_nostd::{DoorbellMode, QpairOptions};
/// let options = QpairOptions::default().with_entries(64).with_doorbell(DoorbellMode::Batched);
/// assert_eq!(options.entries, 64);
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct QpairOptions {
    /// Entries in each of the submission and completion queues; capped by
    /// CAP.MQES + 1, at least 2. A queue pair with more request slots (`N`)
    /// than the submission queue holds (entries - 1) keeps the requests that
    /// find it full waiting, in order, in a fixed-capacity queue, and
    /// submits them from `poll` as room comes. Default 256.
    pub entries: u16,
    /// The largest transfer of one command, in bytes; the controller's MDTS
    /// lowers it. Each request slot keeps PRP list pages for this much. A
    /// read or write above it is split into several commands, each taking a
    /// slot of its own. Default 4 MiB.
    pub max_transfer_bytes: usize,
    /// QPRIO for weighted round robin arbitration (0 urgent to 3 low); ignored
    /// under round robin. Default 0.
    pub priority: u8,
    /// When submissions ring the doorbell. Default one ring per submission.
    pub doorbell: DoorbellMode,
}

impl Default for QpairOptions {
    fn default() -> Self {
        QpairOptions {
            entries: 256,
            max_transfer_bytes: 4 << 20,
            priority: 0,
            doorbell: DoorbellMode::PerSubmission,
        }
    }
}

impl QpairOptions {
    /// Sets [`entries`](Self::entries).
    pub const fn with_entries(mut self, entries: u16) -> Self {
        self.entries = entries;
        self
    }

    /// Sets [`max_transfer_bytes`](Self::max_transfer_bytes).
    pub const fn with_max_transfer_bytes(mut self, bytes: usize) -> Self {
        self.max_transfer_bytes = bytes;
        self
    }

    /// Sets [`priority`](Self::priority).
    pub const fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Sets [`doorbell`](Self::doorbell).
    pub const fn with_doorbell(mut self, doorbell: DoorbellMode) -> Self {
        self.doorbell = doorbell;
        self
    }
}

/// Counters of a queue pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Commands handed to the controller (retries included).
    pub submitted: u64,
    /// Completions delivered to their owner.
    pub completed: u64,
    /// Completion entries rejected: unknown or stale CID, wrong SQ identifier,
    /// or an impossible SQ head.
    pub bogus_completions: u64,
    /// Commands submitted again after a retryable error status.
    pub retries: u64,
    /// Commands that timed out.
    pub timeouts: u64,
    /// Timed-out commands the controller agreed to abort.
    pub aborts: u64,
    /// Controller resets this queue pair asked for.
    pub resets: u64,
    /// Requests failed by the driver (reset, removal) rather than the device.
    pub failed_by_driver: u64,
    /// Submission queue doorbell writes.
    pub sq_doorbells: u64,
    /// Requests that found the submission queue full and waited for room.
    pub waited: u64,
    /// With shadow doorbells: SQ tail and CQ head updates that went to the
    /// shadow doorbell only, the controller's EventIdx not asking for an
    /// MMIO write.
    pub doorbells_skipped: u64,
    /// With shadow doorbells: MMIO doorbell writes after
    /// [`SHADOW_WATCHDOG_PASSES`](crate::SHADOW_WATCHDOG_PASSES) empty poll
    /// passes with requests in flight.
    pub watchdog_rings: u64,
}

/// How much one [`IoQueuePair::poll`](crate::IoQueuePair::poll) call may deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollLimit {
    /// Everything that is ready (at most one ring's worth of entries per
    /// call, so a device that keeps posting cannot hold the caller).
    All,
    /// At most this many completions.
    AtMost(usize),
}

impl PollLimit {
    pub(super) fn max(self) -> usize {
        match self {
            PollLimit::All => usize::MAX,
            PollLimit::AtMost(n) => n,
        }
    }
}

/// A rejected submission: nothing was submitted, and the buffer and context
/// come back to the caller.
#[derive(Debug)]
#[must_use = "the rejected buffer and context are in here"]
pub struct SubmitError<T, C> {
    /// Why.
    pub error: Error,
    /// The buffer (or `Option` of it, or `()`) that was offered.
    pub buffer: T,
    /// The context that was offered.
    pub context: C,
}

/// A completed request, handed to the poll callback with what it owned.
#[derive(Debug)]
#[non_exhaustive]
pub struct Completion<B, C> {
    /// The command identifier its submission returned (also after the driver
    /// retried it under another one on the wire).
    pub cid: Cid,
    /// The completion status the device posted. For a request the driver
    /// ended itself (reset, removal) it is "command aborted by host" (SCT 3h,
    /// SC 71h) and [`error`](Completion::error) says why.
    pub status: Status,
    /// The driver's reason, when the request did not end with the device's
    /// own status: [`Error::Timeout`], [`Error::Reset`] or
    /// [`Error::DeviceRemoved`].
    pub error: Option<Error>,
    /// Dword 0 of the completion entry (command specific).
    pub dw0: u32,
    /// Dword 1 of the completion entry (command specific: the high half of
    /// a Zone Append's LBA).
    pub dw1: u32,
    /// The request's buffer, now the caller's again (`None` for a command
    /// without one, and after a surprise removal, whose buffers are leaked:
    /// a device that cannot be disabled cannot be proven stopped).
    pub buffer: Option<B>,
    /// The request's context.
    pub context: C,
}

impl<B, C> Completion<B, C> {
    /// DW0 and DW1 as one 64-bit value (Zone Append: the first block it
    /// wrote).
    pub fn result64(&self) -> u64 {
        u64::from(self.dw0) | u64::from(self.dw1) << 32
    }

    /// `Ok` for a successful status; the driver's error, or else
    /// [`Error::Command`] with the device's status.
    pub fn result(&self) -> Result {
        if let Some(e) = self.error {
            Err(e)
        } else if self.status.is_success() {
            Ok(())
        } else {
            Err(Error::Command(self.status))
        }
    }
}

/// The I/O flags of a read, write or compare (NVM command set, CDW12 bits 31
/// and 30): both off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IoFlags {
    /// FUA, Force Unit Access: a write is on non-volatile media before it
    /// completes; a read comes from non-volatile media.
    pub fua: bool,
    /// LR, Limited Retry: the controller applies limited retry efforts
    /// (and fails sooner) rather than all of them.
    pub limited_retry: bool,
}

impl IoFlags {
    /// Force Unit Access only.
    pub const FUA: IoFlags = IoFlags { fua: true, limited_retry: false };

    /// The bits in CDW12: FUA is bit 30, LR bit 31 (`ReadWriteCdw12`; a
    /// test checks the shifts against it).
    #[inline]
    pub(crate) fn cdw12(self) -> u32 {
        (self.fua as u32) << 30 | (self.limited_retry as u32) << 31
    }
}

/// One source range of a Copy: `blocks` logical blocks from `slba`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct CopyRange {
    /// The first block.
    pub slba: u64,
    /// How many blocks, at least 1 and at most the namespace's
    /// [`CopyLimits::max_range_blocks`](crate::CopyLimits::max_range_blocks).
    pub blocks: u32,
    /// EILBRT: the reference tag the range's first block is expected to
    /// carry, where [`copy_pi`](crate::IoQueuePair::copy_pi) checks
    /// reference tags as it reads; `None` takes the low 32 bits of `slba`,
    /// which type 1 requires.
    pub reference_tag: Option<u32>,
}

impl CopyRange {
    /// `blocks` blocks from `slba`.
    pub const fn new(slba: u64, blocks: u32) -> Self {
        CopyRange { slba, blocks, reference_tag: None }
    }

    /// The same, expected to start with reference tag `tag`.
    pub const fn with_reference_tag(mut self, tag: u32) -> Self {
        self.reference_tag = Some(tag);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::IoFlags;
    use crate::spec::dwords::ReadWriteCdw12;

    #[test]
    fn io_flags_are_the_bitfield_bits() {
        for (fua, limited_retry) in [(false, false), (true, false), (false, true), (true, true)] {
            let flags = IoFlags { fua, limited_retry };
            let expected = ReadWriteCdw12::new().with_fua(fua).with_lr(limited_retry).into_bits();
            assert_eq!(flags.cdw12(), expected, "{flags:?}");
        }
    }
}
