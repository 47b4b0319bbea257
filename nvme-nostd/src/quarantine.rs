//! Memory that the device may still use, kept out of circulation until a
//! reset proves the device stopped.
//!
//! A queue pair dropped while its queues cannot be deleted (the admin queue
//! is failed, the device briefly unreachable), or a queue whose creation
//! timed out and whose reset failed, leaves memory the controller may still
//! write: its rings, its PRP lists, the device's view of its requests'
//! buffers (their mappings), and its queue identifier. Freeing any of it
//! would let the device write memory that is someone else's again; leaking
//! it for good drains a fixed DMA pool. The controller keeps it here instead,
//! tagged with the reset epoch it was put away in, and gives it back after
//! the next reset that works (the epoch moved on only after CSTS.RDY read 0)
//! or after the controller's own shutdown. A device that is removed is never
//! proven stopped: then the memory stays here for good, which is a leak.

use crate::dma::DmaMemory;
use core::ptr::NonNull;
use hal_traits::{Direction, Hal};

/// How a request's buffer reaches the device, kept to undo it.
pub(crate) struct DmaUse<M> {
    pub(crate) region: NonNull<[u8]>,
    pub(crate) direction: Direction,
    /// What [`Hal::share`] returned; `None` when no share was needed (the
    /// controller's own DMA memory, or memory the HAL translated).
    pub(crate) mapping: Option<M>,
}

// SAFETY: a DmaUse records where the request's own buffer lives; the request
// (and so the buffer, which is Send when the queue pair is) moves with it, and
// the mapping is Send by the bound. In the quarantine the buffer is leaked, so
// the region stays valid wherever the record goes.
unsafe impl<M: Send> Send for DmaUse<M> {}

/// Entries of each kind the quarantine holds; beyond that, memory is leaked
/// (as it was before there was a quarantine).
const CAPACITY: usize = 64;

/// What the controller keeps until a reset ([`Controller`](crate::Controller)
/// owns one behind a lock).
pub(crate) struct Quarantine<M> {
    memory: heapless::Vec<(DmaMemory, u32), CAPACITY>,
    buffers: heapless::Vec<(DmaUse<M>, u32), CAPACITY>,
    qids: heapless::Vec<(u16, u32), CAPACITY>,
}

impl<M> Quarantine<M> {
    pub(crate) const fn new() -> Self {
        Quarantine { memory: heapless::Vec::new(), buffers: heapless::Vec::new(), qids: heapless::Vec::new() }
    }

    /// Keeps `memory`, lent to the device in reset epoch `epoch` or earlier.
    pub(crate) fn memory(&mut self, memory: DmaMemory, epoch: u32) {
        // Full: the memory is leaked (`DmaMemory` has no `Drop`).
        let _ = self.memory.push((memory, epoch));
    }

    /// Keeps a request buffer's DMA record; the buffer itself must be leaked
    /// by the caller, so that the region stays valid until it is undone.
    pub(crate) fn buffer(&mut self, dma: DmaUse<M>, epoch: u32) {
        if let Err(full) = self.buffers.push((dma, epoch)) {
            // Leaked: the mapping is never undone.
            core::mem::forget(full);
        }
    }

    /// Keeps a queue identifier whose queues may still exist.
    pub(crate) fn qid(&mut self, qid: u16, epoch: u32) {
        let _ = self.qids.push((qid, epoch));
    }

    /// Gives back everything put away before epoch `now` (everything, with
    /// `u32::MAX` after a shutdown) and returns the freed queue identifiers
    /// as a bit set.
    ///
    /// # Safety
    ///
    /// The controller was disabled (CSTS.RDY read 0) after everything put
    /// away in an epoch before `now`: the device no longer uses it.
    pub(crate) unsafe fn release<H: Hal<Mapping = M>>(&mut self, hal: &H, now: u32) -> u128 {
        let mut i = 0;
        while i < self.memory.len() {
            if self.memory[i].1 < now {
                let (mut memory, _) = self.memory.swap_remove(i);
                // SAFETY: the caller guarantees the device is done with it.
                unsafe { memory.free(hal) };
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < self.buffers.len() {
            if self.buffers[i].1 < now {
                let (dma, _) = self.buffers.swap_remove(i);
                // SAFETY: the device is done (the caller's guarantee); the
                // region is a leaked buffer, so still valid, synced for the
                // device with this direction at submission, and the mapping
                // is the one `share` returned for it.
                unsafe {
                    hal.sync_for_cpu(dma.region, dma.direction);
                    if let Some(mapping) = dma.mapping {
                        hal.unshare(dma.region, dma.direction, mapping);
                    }
                }
            } else {
                i += 1;
            }
        }
        let mut freed = 0u128;
        self.qids.retain(|&(qid, epoch)| {
            if epoch < now {
                freed |= 1u128 << qid;
            }
            epoch >= now
        });
        freed
    }
}
