//! The admin queue pair and its synchronous command path (NVMe Base
//! Specification 1.4, section 5 "Admin Command Set").
//!
//! Admin commands are rare and slow; they run one at a time under the
//! controller's admin lock and wait for their completion against a deadline.

use crate::dma::DmaMemory;
use crate::error::{Error, Malformed, Result, Wait};
use crate::queue::{CompletionQueue, SubmissionQueue};
use crate::registers::Registers;
use crate::spec::command::{CompletionEntry, SubmissionEntry};
use core::time::Duration;
use hal_traits::Hal;

/// Entries in each admin queue.
pub(crate) const ADMIN_QUEUE_ENTRIES: u16 = 32;

/// The admin queue pair plus a page of DMA memory for command data (identify
/// structures and similar), all owned by the controller.
pub(crate) struct AdminQueue {
    pub(crate) sq: SubmissionQueue,
    pub(crate) cq: CompletionQueue,
    pub(crate) data: DmaMemory,
    next_cid: u16,
    /// Set when a command timed out: the controller may still complete it, so
    /// the queue is not used again until a reset.
    pub(crate) failed: bool,
    /// Completions that named no outstanding admin command.
    pub(crate) bogus_completions: u64,
    /// Resets that failed in a row (cleared by one that works).
    pub(crate) reset_failures: u8,
    /// When the driver may try its next reset of its own accord.
    pub(crate) next_reset: Duration,
}

impl AdminQueue {
    pub(crate) fn new(sq: SubmissionQueue, cq: CompletionQueue, data: DmaMemory) -> Self {
        AdminQueue {
            sq,
            cq,
            data,
            next_cid: 0,
            failed: false,
            bogus_completions: 0,
            reset_failures: 0,
            next_reset: Duration::ZERO,
        }
    }

    /// The CID of the last command submitted.
    pub(crate) fn last_cid(&self) -> u16 {
        self.next_cid.wrapping_sub(1)
    }

    /// Starts over after the controller was disabled: empty rings, phase 1.
    pub(crate) fn restart(&mut self) {
        self.sq.restart();
        self.cq.restart();
        self.failed = false;
    }

    /// Frees the queue memory and the data page.
    ///
    /// # Safety
    ///
    /// The controller is disabled, so it no longer accesses this memory.
    pub(crate) unsafe fn free<H: Hal>(&mut self, hal: &H) {
        self.failed = true;
        // SAFETY: the caller guarantees the device is done with the memory.
        unsafe {
            self.sq.mem.free(hal);
            self.cq.mem.free(hal);
            self.data.free(hal);
        }
    }

    /// [`execute`](Self::execute), submitting the command again (under a new
    /// CID) while it fails with a status whose Do Not Retry bit is clear, at
    /// most `retries` more times.
    pub(crate) fn execute_retrying<H: Hal>(
        &mut self,
        hal: &H,
        cmd: SubmissionEntry,
        timeout: Duration,
        retries: u8,
    ) -> Result<CompletionEntry> {
        let mut tries = 0;
        loop {
            match self.execute(hal, cmd, timeout) {
                Err(Error::Command(status)) if !status.dnr() && tries < retries => tries += 1,
                other => return other,
            }
        }
    }

    /// Submits `cmd` and waits up to `timeout` for its completion. A completion
    /// with an error status is returned as `Error::Command`.
    pub(crate) fn execute<H: Hal>(
        &mut self,
        hal: &H,
        mut cmd: SubmissionEntry,
        timeout: Duration,
    ) -> Result<CompletionEntry> {
        if self.failed {
            return Err(Error::ControllerFailed);
        }
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1) % 0xffff;
        cmd.cdw0.set_cid(cid);
        if !self.sq.push(&cmd) {
            // One command at a time: the ring can only be full if the device
            // never consumed earlier entries.
            self.failed = true;
            return Err(Error::MalformedDevice(Malformed::AdminQueueStuck));
        }
        self.sq.ring(hal);

        let deadline = hal.now().saturating_add(timeout);
        // Entries consumed since the last look at CSTS and the clock: a
        // device that keeps posting phase-valid garbage must not keep this
        // loop from ever reaching its deadline.
        let mut since_check: u32 = 0;
        let mut bogus: u32 = 0;
        loop {
            if let Some(entry) = self.cq.peek(hal) {
                self.cq.advance();
                self.cq.ring(hal);
                let sq_ok = entry.sqid == 0 && self.sq.update_head(entry.sqhd);
                if entry.cid == cid && sq_ok {
                    let status = entry.status.without_phase();
                    return if status.is_success() { Ok(entry) } else { Err(Error::Command(status)) };
                }
                self.bogus_completions += 1;
                bogus += 1;
                // One command outstanding, so at most a ring's worth of
                // stale entries can be real; more is a device gone mad.
                if bogus > 2 * self.cq.size() as u32 {
                    self.failed = true;
                    return Err(Error::MalformedDevice(Malformed::CompletionFlood));
                }
            }
            since_check = since_check.wrapping_add(1);
            if since_check.is_multiple_of(64) {
                match Registers::new(hal).csts() {
                    Err(e) => {
                        self.failed = true;
                        return Err(e);
                    }
                    Ok(csts) if csts.cfs() => {
                        self.failed = true;
                        return Err(Error::ControllerFatal);
                    }
                    Ok(_) => {}
                }
                if hal.now() >= deadline {
                    self.failed = true;
                    return Err(Error::Timeout(Wait::AdminCommand));
                }
                hal.delay(Duration::from_micros(10));
            }
        }
    }
}
