//! Submission and completion queue rings (NVMe Base Specification 1.4, section
//! 4.1 "Submission Queue & Completion Queue Definition").
//!
//! The rings know indices, phase tags and doorbells; which command sits in which
//! slot is the business of [`crate::slots`].

use crate::cmb::DeviceRing;
use crate::dma::DmaMemory;
use crate::spec::command::{CompletionEntry, SubmissionEntry, COMPLETION_STATUS_OFFSET};
use crate::spec::registers::doorbell_offset;
use hal_traits::{DeviceAddr, Hal};

const SQ_ENTRY_SIZE: usize = 64;
const CQ_ENTRY_SIZE: usize = 16;

/// A doorbell register (sections 3.1.24, 3.1.25). Every doorbell write of the
/// driver goes through [`Doorbell::ring`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Doorbell {
    offset: usize,
}

impl Doorbell {
    pub(crate) const fn new(qid: u16, completion: bool, dstrd: u8) -> Self {
        Doorbell { offset: doorbell_offset(qid, completion, dstrd) }
    }

    /// Publishes `value` (a new SQ tail or CQ head) to the controller, after a
    /// barrier that makes earlier writes to DMA memory visible to the device.
    #[inline]
    pub(crate) fn ring<H: Hal>(&self, hal: &H, value: u16) {
        hal.barrier_before_doorbell();
        // SAFETY: the driver rings a doorbell only for a queue it created on
        // its own DMA memory, with a tail whose entries it wrote (PRPs naming
        // buffers lent to the device) or a head it consumed.
        unsafe { hal.write32(self.offset, value as u32) };
    }

    /// The doorbell's slot in the shadow doorbell page (and, one page
    /// further, its EventIdx).
    pub(crate) const fn shadow_offset(&self) -> usize {
        self.offset - crate::spec::registers::offset::DOORBELLS
    }

    /// Publishes `value` through the shadow doorbell in `shadow` (the
    /// shadow page, then the EventIdx page), ringing the MMIO doorbell only
    /// when the controller's EventIdx asks for it. Returns true when it
    /// rang.
    #[inline(always)]
    pub(crate) fn ring_shadowed<H: Hal>(&self, hal: &H, value: u16, shadow: &DmaMemory) -> bool {
        let slot = self.shadow_offset();
        let old: u32 = shadow.read(slot);
        // The entries (or the consumed completions) before the new value.
        hal.barrier_before_doorbell();
        shadow.write(slot, u32::from(value));
        // The new value visible to the device before its EventIdx is read:
        // otherwise the device may stop after reading the old value while
        // the driver reads an EventIdx from before, and neither acts.
        hal.barrier_full();
        let event_idx: u32 = shadow.read(SHADOW_PAGE + slot);
        if !need_event(event_idx as u16, value, old as u16) {
            return false;
        }
        // The full barrier above orders the shadow store already; this one
        // keeps the MMIO store in the shape every doorbell has (the barrier
        // right before it, which `cargo xtask barriers` checks), and costs
        // nothing on x86.
        self.ring(hal, value);
        true
    }

    /// Sets the shadow doorbell and its EventIdx to `value` (a queue about
    /// to be created, or one in use when the shadow pages are handed over).
    pub(crate) fn seed_shadow(&self, value: u16, shadow: &DmaMemory) {
        shadow.write(self.shadow_offset(), u32::from(value));
        shadow.write(SHADOW_PAGE + self.shadow_offset(), u32::from(value));
    }
}

/// Shadow doorbells (NVMe 1.4 section 7.13, Doorbell Buffer Config): the
/// driver writes each new SQ tail and CQ head into a shadow page the
/// controller reads, and rings the MMIO doorbell only when the controller's
/// EventIdx for that doorbell (in a second page, written by the controller)
/// asks for it: when the EventIdx lies in `[old, new)`, in 16-bit
/// arithmetic. Across a ring's wrap the interval is nearly everything, so
/// the doorbell is rung: a wrap may ring once too often, never once too
/// rarely.
#[inline]
pub(crate) const fn need_event(event_idx: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event_idx).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Where the shadow doorbell and EventIdx of a doorbell live: its offset
/// in the shadow doorbell page, the same in the EventIdx page (which
/// follows it).
pub(crate) const SHADOW_PAGE: usize = hal_traits::PAGE_SIZE;

/// Ring arithmetic: the number of steps from `from` to `to` in a ring of
/// `size` entries.
#[inline]
pub(crate) const fn ring_distance(from: u16, to: u16, size: u16) -> u16 {
    if to >= from {
        to - from
    } else {
        size - from + to
    }
}

/// Where a submission queue's entries live.
#[derive(Debug)]
pub(crate) enum SqMemory {
    /// Host DMA memory, lent to the device.
    Host(DmaMemory),
    /// The controller memory buffer: the controller's own memory, which
    /// needs no freeing (its slot follows the queue identifier).
    Device(DeviceRing),
}

/// A submission queue: the host writes entries at the tail, the controller
/// consumes them from the head (which it reports in each completion's SQHD).
#[derive(Debug)]
pub(crate) struct SubmissionQueue {
    mem: SqMemory,
    size: u16,
    tail: u16,
    head: u16,
    doorbell: Doorbell,
}

impl SubmissionQueue {
    /// A ring of `size` entries over `mem` (at least `size * 64` bytes).
    pub(crate) fn new(mem: DmaMemory, size: u16, qid: u16, dstrd: u8) -> Self {
        debug_assert!(mem.len() >= size as usize * SQ_ENTRY_SIZE);
        Self::over(SqMemory::Host(mem), size, qid, dstrd)
    }

    /// A ring of `size` entries over `mem` (host memory of at least
    /// `size * 64` bytes, or a CMB slot that holds them).
    pub(crate) fn over(mem: SqMemory, size: u16, qid: u16, dstrd: u8) -> Self {
        SubmissionQueue { mem, size, tail: 0, head: 0, doorbell: Doorbell::new(qid, false, dstrd) }
    }

    pub(crate) fn daddr(&self) -> DeviceAddr {
        match &self.mem {
            SqMemory::Host(mem) => mem.daddr(0),
            SqMemory::Device(ring) => ring.daddr(),
        }
    }

    /// True when the ring lies in the controller memory buffer.
    pub(crate) fn in_cmb(&self) -> bool {
        matches!(self.mem, SqMemory::Device(_))
    }

    /// Moves host ring memory out (to the quarantine), leaving none; a ring
    /// in the CMB has none to give.
    pub(crate) fn take_memory(&mut self) -> Option<DmaMemory> {
        match &mut self.mem {
            SqMemory::Host(mem) => Some(mem.take()),
            SqMemory::Device(_) => None,
        }
    }

    /// Frees host ring memory (a second call does nothing).
    ///
    /// # Safety
    ///
    /// As for [`DmaMemory::free`]: the device no longer accesses the ring.
    pub(crate) unsafe fn free<H: Hal>(&mut self, hal: &H) {
        if let SqMemory::Host(mem) = &mut self.mem {
            // SAFETY: forwarded from the caller.
            unsafe { mem.free(hal) }
        }
    }

    pub(crate) const fn size(&self) -> u16 {
        self.size
    }

    /// Starts over with an empty ring, as a newly created queue does.
    pub(crate) fn restart(&mut self) {
        self.head = 0;
        self.tail = 0;
    }

    /// True when one more entry would make tail meet head.
    #[inline]
    pub(crate) fn is_full(&self) -> bool {
        self.next(self.tail) == self.head
    }

    /// The index after `index`, wrapping at the ring's end (a compare, not
    /// a division).
    #[inline]
    fn next(&self, index: u16) -> u16 {
        let next = index + 1;
        if next == self.size {
            0
        } else {
            next
        }
    }

    /// Number of entries written and not yet consumed as far as we know.
    pub(crate) fn occupied(&self) -> u16 {
        ring_distance(self.head, self.tail, self.size)
    }

    /// Writes `entry` at the tail and advances it; the doorbell is rung
    /// separately so that a batch costs one MMIO write. Returns false when full.
    #[inline(always)]
    pub(crate) fn push(&mut self, entry: &SubmissionEntry) -> bool {
        if self.is_full() {
            return false;
        }
        let offset = self.tail as usize * SQ_ENTRY_SIZE;
        match &self.mem {
            SqMemory::Host(mem) => mem.write(offset, *entry),
            SqMemory::Device(ring) => ring.write_entry(offset, entry.to_qwords()),
        }
        self.tail = self.next(self.tail);
        true
    }

    /// Tells the controller about every entry pushed so far.
    pub(crate) fn ring<H: Hal>(&self, hal: &H) {
        self.doorbell.ring(hal, self.tail);
    }

    /// As [`ring`](Self::ring), through the shadow doorbell in `shadow`;
    /// true when the MMIO doorbell was rung.
    #[inline(always)]
    pub(crate) fn ring_shadowed<H: Hal>(&self, hal: &H, shadow: &DmaMemory) -> bool {
        self.doorbell.ring_shadowed(hal, self.tail, shadow)
    }

    /// The tail doorbell.
    pub(crate) fn doorbell(&self) -> Doorbell {
        self.doorbell
    }

    /// The tail, as last written (announced or not).
    pub(crate) fn tail(&self) -> u16 {
        self.tail
    }

    /// Accepts a head reported by the controller (SQHD) if it lies between the
    /// known head and the tail, the only places it can be. Returns false, and
    /// changes nothing, for an impossible value.
    pub(crate) fn update_head(&mut self, sqhd: u16) -> bool {
        if !self.head_plausible(sqhd) {
            return false;
        }
        self.head = sqhd;
        true
    }

    /// True when `sqhd` lies between the known head and the tail.
    pub(crate) fn head_plausible(&self, sqhd: u16) -> bool {
        sqhd < self.size && ring_distance(self.head, sqhd, self.size) <= self.occupied()
    }
}

/// A completion queue: the controller posts entries, the host finds new ones by
/// their phase tag, which flips each time the ring wraps (section 4.6).
#[derive(Debug)]
pub(crate) struct CompletionQueue {
    pub(crate) mem: DmaMemory,
    size: u16,
    head: u16,
    phase: bool,
    doorbell: Doorbell,
}

impl CompletionQueue {
    /// A ring of `size` entries over zeroed `mem` (at least `size * 16` bytes).
    pub(crate) fn new(mem: DmaMemory, size: u16, qid: u16, dstrd: u8) -> Self {
        debug_assert!(mem.len() >= size as usize * CQ_ENTRY_SIZE);
        // The controller posts the first pass with phase 1 over zeroed memory.
        CompletionQueue { mem, size, head: 0, phase: true, doorbell: Doorbell::new(qid, true, dstrd) }
    }

    pub(crate) fn daddr(&self) -> DeviceAddr {
        self.mem.daddr(0)
    }

    /// Starts over with zeroed memory, head 0 and phase 1, as a newly created
    /// queue does.
    pub(crate) fn restart(&mut self) {
        self.mem.zero();
        self.head = 0;
        self.phase = true;
    }

    /// The entry at the head, if the controller has posted one there.
    pub(crate) fn peek<H: Hal>(&self, hal: &H) -> Option<CompletionEntry> {
        let offset = self.head as usize * CQ_ENTRY_SIZE;
        // The status half-word carries the phase tag; read it first, then the
        // rest of the entry after a barrier, so no part of it is stale.
        let status: u16 = self.mem.read(offset + COMPLETION_STATUS_OFFSET);
        if (status & 1 == 1) != self.phase {
            return None;
        }
        hal.barrier_after_phase();
        Some(self.mem.read::<CompletionEntry>(offset))
    }

    /// Visits the entries the controller has posted from the head on and the
    /// host has not consumed yet (at most one ring's worth), without
    /// consuming them.
    pub(crate) fn posted<H: Hal>(&self, hal: &H, mut visit: impl FnMut(&CompletionEntry)) {
        let (mut index, mut phase) = (self.head, self.phase);
        for _ in 0..self.size {
            let offset = index as usize * CQ_ENTRY_SIZE;
            let status: u16 = self.mem.read(offset + COMPLETION_STATUS_OFFSET);
            if (status & 1 == 1) != phase {
                return;
            }
            hal.barrier_after_phase();
            visit(&self.mem.read::<CompletionEntry>(offset));
            index += 1;
            if index == self.size {
                index = 0;
                phase = !phase;
            }
        }
    }

    /// Consumes the head entry.
    pub(crate) fn advance(&mut self) {
        self.head += 1;
        if self.head == self.size {
            self.head = 0;
            self.phase = !self.phase;
        }
    }

    /// Tells the controller which entries it may reuse.
    pub(crate) fn ring<H: Hal>(&self, hal: &H) {
        self.doorbell.ring(hal, self.head);
    }

    /// The head.
    pub(crate) fn head(&self) -> u16 {
        self.head
    }

    /// The head doorbell.
    pub(crate) fn doorbell(&self) -> Doorbell {
        self.doorbell
    }

    /// The head doorbell and the head to write to it, for a caller that rings
    /// later (a guard that must ring even when a callback panics).
    pub(crate) fn pending_head(&self) -> (Doorbell, u16) {
        (self.doorbell, self.head)
    }

    /// Entries in the ring.
    pub(crate) const fn size(&self) -> u16 {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::command::CompletionEntry;
    use crate::spec::status::Status;
    use crate::test_hal::TestHal;

    #[test]
    fn distance_wraps() {
        assert_eq!(ring_distance(0, 0, 8), 0);
        assert_eq!(ring_distance(2, 5, 8), 3);
        assert_eq!(ring_distance(6, 1, 8), 3);
        assert_eq!(ring_distance(7, 6, 8), 7);
    }

    /// The shadow doorbell rule never skips a doorbell the controller asked
    /// for: whenever its EventIdx lies among the values the host's update
    /// moved over (the ring interval `[old, new)`), the MMIO doorbell is
    /// rung; without a wrap it is rung exactly then.
    #[test]
    fn need_event_never_misses_an_event_the_controller_asked_for() {
        // Miri runs the small rings only (the large ones take minutes there).
        let sizes: &[u16] = if cfg!(miri) { &[2, 3, 7] } else { &[2, 3, 7, 64, 1024] };
        for &size in sizes {
            let step = if size > 64 { 37 } else { 1 };
            for old in (0..size).step_by(step) {
                for new in (0..size).step_by(step) {
                    for event in 0..size {
                        let asked = ring_distance(old, event, size) < ring_distance(old, new, size);
                        let rang = need_event(event, new, old);
                        assert!(!asked || rang, "size {size} old {old} new {new} event {event}");
                        if new >= old {
                            assert_eq!(rang, asked, "size {size} old {old} new {new} event {event}");
                        }
                    }
                }
            }
        }
    }

    /// Through a shadow doorbell the new value always lands in the shadow
    /// page, and the MMIO doorbell is written only when the EventIdx asks.
    #[test]
    fn shadowed_ring_writes_mmio_only_when_asked() {
        let hal = TestHal::default();
        let shadow = crate::dma::DmaAlloc::new(&hal, 2).unwrap().lend();
        let db = Doorbell::new(1, false, 0);
        db.seed_shadow(0, &shadow);
        // The controller consumed up to 0 and asks to hear of anything past it.
        assert!(db.ring_shadowed(&hal, 3, &shadow), "EventIdx 0 lies in [0, 3)");
        assert_eq!(hal.writes.borrow().last(), Some(&(0x1000 + 8, 3)));
        assert_eq!(shadow.read::<u32>(8), 3);
        // It has not caught up (EventIdx still 0): no MMIO write for 3 -> 5.
        let writes = hal.writes.borrow().len();
        assert!(!db.ring_shadowed(&hal, 5, &shadow));
        assert_eq!(hal.writes.borrow().len(), writes, "no MMIO write");
        assert_eq!(shadow.read::<u32>(8), 5, "the shadow holds the new tail");
        // It caught up to 5 and waits there: 5 -> 6 rings.
        shadow.write(SHADOW_PAGE + 8, 5u32);
        assert!(db.ring_shadowed(&hal, 6, &shadow));
        assert_eq!(hal.writes.borrow().last(), Some(&(0x1000 + 8, 6)));
        // SAFETY: nothing else uses the memory.
        unsafe {
            {
                let mut shadow = shadow;
                shadow.free(&hal)
            }
        };
    }

    fn post(cq: &CompletionQueue, index: u16, cid: u16, phase: bool) {
        let e = CompletionEntry { cid, status: Status::new().with_p(phase), ..Default::default() };
        cq.mem.write(index as usize * CQ_ENTRY_SIZE, e);
    }

    #[test]
    fn completion_phase_flips_on_every_wrap() {
        let hal = TestHal::default();
        let mut cq = CompletionQueue::new(crate::dma::DmaAlloc::new(&hal, 1).unwrap().lend(), 4, 1, 0);
        assert!(cq.peek(&hal).is_none(), "zeroed memory holds no completion");
        let mut cid = 0;
        for pass in 0..5 {
            let phase = pass % 2 == 0;
            for i in 0..4 {
                // Before the device posts, the old entry (other phase) is stale.
                assert!(cq.peek(&hal).is_none(), "pass {pass} entry {i}");
                post(&cq, i, cid, phase);
                assert_eq!(cq.peek(&hal).map(|e| e.cid), Some(cid));
                cq.advance();
                cid += 1;
            }
            assert_eq!(cq.head, 0);
        }
        cq.ring(&hal);
        assert_eq!(hal.writes.borrow().last(), Some(&(0x1000 + 3 * 4, 0)), "CQ 1 head doorbell");
        // SAFETY: nothing else uses the memory.
        unsafe { cq.mem.free(&hal) };
        assert_eq!(hal.live_pages.get(), 0);
    }

    #[test]
    fn submission_ring_fills_at_size_minus_one_and_tracks_head() {
        let hal = TestHal::default();
        let mut sq = SubmissionQueue::new(crate::dma::DmaAlloc::new(&hal, 1).unwrap().lend(), 4, 2, 1);
        let cmd = SubmissionEntry::new(2, 1);
        for _ in 0..3 {
            assert!(sq.push(&cmd));
        }
        assert!(sq.is_full());
        assert!(!sq.push(&cmd));
        sq.ring(&hal);
        // Stride 8 bytes (DSTRD 1): SQ 2 tail doorbell at 0x1000 + 4 * 8.
        assert_eq!(hal.writes.borrow().last(), Some(&(0x1000 + 4 * 8, 3)));
        // Heads beyond the tail or outside the ring are impossible.
        assert!(!sq.update_head(4));
        assert!(!sq.head_plausible(0xffff));
        assert!(sq.update_head(2));
        assert!(!sq.update_head(1), "head never moves backwards");
        assert!(sq.push(&cmd) && sq.push(&cmd), "two entries freed");
        assert!(sq.is_full());
        // The tail wrapped to 1 with the head at 2: three entries outstanding,
        // and only the head's forward path (2, 3, 0, 1) is plausible.
        assert_eq!(sq.occupied(), 3);
        assert!(sq.update_head(0));
        assert!(!sq.head_plausible(3), "3 lies behind the head now");
        assert!(sq.head_plausible(1));
        // SAFETY: nothing else uses the memory.
        unsafe { sq.free(&hal) };
    }
}
