//! The bookkeeping behind `Hal::translate` and the cache maintenance calls
//! (`sync_for_device`, `sync_for_cpu`, and the check before `unshare`):
//! maintenance out of order is counted in [`SimStats`](super::SimStats)
//! instead of panicking, so a test can assert the driver got it right. Also
//! the check that nothing is released while the device still names it.

use super::State;

impl State {
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
    /// buffer and direction; anything else is counted as a bad sync. Copies
    /// a shared buffer's bounce bytes back.
    ///
    /// # Safety
    ///
    /// `buffer` is valid for writes and the device is done with it.
    pub(crate) unsafe fn sync_for_cpu(
        &mut self,
        buffer: core::ptr::NonNull<[u8]>,
        direction: hal_traits::Direction,
    ) {
        let key = (buffer.cast::<u8>().as_ptr().addr(), buffer.len());
        if self.syncs.remove(&key) != Some(direction) {
            self.stats.bad_syncs += 1;
        }
        // SAFETY: the caller guarantees the buffer is valid for writes.
        unsafe { self.mem.copy_back(buffer, direction) };
    }

    /// Before an `unshare`: the buffer must be back with the CPU.
    pub(crate) fn check_synced(&mut self, buffer: core::ptr::NonNull<[u8]>) {
        if self.syncs.contains_key(&(buffer.cast::<u8>().as_ptr().addr(), buffer.len())) {
            self.stats.bad_syncs += 1;
        }
    }

    /// Before memory goes back to the host (`dma_free`, `unshare`): counts
    /// [`SimStats::released_in_use`](super::SimStats::released_in_use) when a
    /// live queue ring, a data pointer (PRP1, PRP2) of a command still
    /// inside the device, or an enabled host memory buffer (or its
    /// descriptor list) lies in `span`.
    pub(crate) fn check_released(&mut self, span: core::ops::Range<u64>) {
        let overlaps = |r: core::ops::Range<u64>| r.start < span.end && span.start < r.end;
        let names = |addr: u64| addr != 0 && span.contains(&addr);
        let rings =
            self.sqs.values().any(|q| overlaps(q.span())) || self.cqs.values().any(|q| overlaps(q.span()));
        let commands =
            self.pending.values().chain(self.stuck.values()).any(|p| names(p.cmd.prp1) || names(p.cmd.prp2));
        let hmb = self.hmb.as_ref().is_some_and(|h| h.spans().any(overlaps));
        if rings || commands || hmb {
            self.stats.released_in_use += 1;
        }
    }
}
