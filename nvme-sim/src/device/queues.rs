//! Submission and completion queues (NVMe 1.4 section 4.1): the rings, their
//! doorbells (sections 3.1.24 and 3.1.25), fetching submission entries
//! (section 4.2), and posting completion entries (section 4.6) with their
//! phase tag, holding back what does not fit until the host frees slots.
//! Also the test-driven misbehaviour of a completion queue: babbling and
//! scribbling.

use super::status::{INVALID_FIELD, SUCCESS};
use super::{State, CQ_ENTRY, SQ_ENTRY};
use crate::config::DoorbellBuffer;
use nvme_spec::command::{CompletionEntry, SubmissionEntry};
use nvme_spec::status::Status;
use std::collections::{BTreeSet, VecDeque};

pub(super) struct Sq {
    pub(super) base: u64,
    pub(super) size: u16,
    pub(super) head: u16,
    pub(super) tail: u16,
    /// QPRIO (0 urgent to 3 low), for weighted round robin.
    pub(super) prio: u8,
    pub(super) cqid: u16,
    /// Every CID fetched from this queue since it was created.
    pub(super) issued: BTreeSet<u16>,
    /// The CID of the last real completion posted.
    pub(super) last_completed: Option<u16>,
    /// SQHD of the last real completion the host released (CQ head doorbell):
    /// the host's SQ head is at or after it.
    consumed_head: u16,
}

pub(super) struct Post {
    entry: CompletionEntry,
    wrong_phase: bool,
    /// (SQ, SQHD) of a real completion, tracked until the host consumes it.
    pub(super) track: Option<(u16, u16)>,
}

pub(super) struct Cq {
    base: u64,
    size: u16,
    head: u16,
    tail: u16,
    phase: bool,
    /// Completions due but not yet written (the queue was full).
    pub(super) waiting: VecDeque<Post>,
    /// Per slot: what the entry there reported, for `consumed_head`.
    pub(super) slots: Vec<Option<(u16, u16)>>,
}

/// How a completion is posted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum PostKind {
    /// The command's one real completion.
    Real,
    /// An extra entry a fault adds (not the real completion).
    Extra,
    /// The real completion with the phase tag inverted.
    WrongPhase,
    /// The real completion with an impossible SQ head.
    BadHead,
}

impl Sq {
    pub(super) fn new(base: u64, size: u16, cqid: u16, prio: u8) -> Sq {
        Sq {
            base,
            size,
            head: 0,
            tail: 0,
            prio,
            cqid,
            issued: BTreeSet::new(),
            last_completed: None,
            consumed_head: 0,
        }
    }

    /// The device addresses the ring occupies.
    pub(super) fn span(&self) -> core::ops::Range<u64> {
        self.base..self.base + u64::from(self.size) * SQ_ENTRY
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
    pub(super) fn new(base: u64, size: u16) -> Cq {
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

    /// The device addresses the ring occupies.
    pub(super) fn span(&self) -> core::ops::Range<u64> {
        self.base..self.base + u64::from(self.size) * CQ_ENTRY
    }
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

pub(super) fn parse_sqe(b: &[u8; 64]) -> SubmissionEntry {
    zerocopy::transmute!(*b)
}

fn cqe_bytes(e: &CompletionEntry) -> [u8; 16] {
    zerocopy::transmute!(*e)
}

impl State {
    pub(super) fn doorbell(&mut self, rel: usize, value: u32) {
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
        let completion = !index.is_multiple_of(2);
        if completion {
            self.cq_doorbell(qid, value);
        } else if self.sq_doorbell(qid, value, true) {
            self.follow_shadow_tail(qid);
        }
        if qid == 0 {
            self.mirror_admin_doorbell(completion);
        }
        // Zero latency: what is due now completes now (and the shadow
        // doorbells are read, `run_until`).
        let now = self.now;
        self.run_until(now);
    }

    // ----- shadow doorbells (Doorbell Buffer Config, section 5.8) -----

    /// Doorbell Buffer Config: PRP1 names the shadow doorbell page, PRP2 the
    /// EventIdx page, both page-aligned (else Invalid Field). As QEMU 7.2,
    /// the current tail and head of every queue that exists (the admin
    /// queue, at least) go into their shadow slots, and nothing into the
    /// EventIdx page: the host seeds that.
    pub(super) fn doorbell_buffer_config(&mut self, cmd: &SubmissionEntry) -> u16 {
        let page = hal_traits::PAGE_SIZE as u64;
        if cmd.prp1 == 0 || cmd.prp2 == 0 || !cmd.prp1.is_multiple_of(page) || !cmd.prp2.is_multiple_of(page)
        {
            return INVALID_FIELD;
        }
        self.dbbuf = Some((cmd.prp1, cmd.prp2));
        let slots: Vec<(u64, u16)> = self
            .sqs
            .iter()
            .map(|(&q, sq)| (self.shadow_offset(q, false), sq.tail))
            .chain(self.cqs.iter().map(|(&q, cq)| (self.shadow_offset(q, true), cq.head)))
            .collect();
        for (off, value) in slots {
            if !self.mem.device_write(cmd.prp1 + off, &u32::from(value).to_le_bytes()) {
                self.dma_fault();
                break;
            }
        }
        SUCCESS
    }

    /// Where queue `qid`'s SQ tail (`completion`: CQ head) sits in the
    /// shadow doorbell page, and its EventIdx in the EventIdx page: the
    /// doorbell register layout (section 3.1.24).
    fn shadow_offset(&self, qid: u16, completion: bool) -> u64 {
        (2 * u64::from(qid) + u64::from(completion)) * (4u64 << self.cfg.dstrd)
    }

    /// The admin queue's tail (`completion`: head) after an MMIO doorbell,
    /// copied into its shadow slot while there are shadow pages (QEMU 7.2
    /// does so).
    fn mirror_admin_doorbell(&mut self, completion: bool) {
        let Some((shadow, _)) = self.dbbuf else { return };
        let value =
            if completion { self.cqs.get(&0).map(|cq| cq.head) } else { self.sqs.get(&0).map(|sq| sq.tail) };
        let Some(value) = value.map(u32::from) else { return };
        let at = shadow + self.shadow_offset(0, completion);
        if !self.mem.device_write(at, &value.to_le_bytes()) {
            self.dma_fault();
        }
    }

    /// The value in queue `qid`'s shadow doorbell slot, when the controller
    /// reads shadow doorbells ([`DoorbellBuffer::On`]) and `qid` is an I/O
    /// queue. A slot it cannot read is a DMA fault.
    fn shadow_value(&mut self, qid: u16, completion: bool) -> Option<u32> {
        if self.cfg.doorbell_buffer != DoorbellBuffer::On || qid == 0 {
            return None;
        }
        let (shadow, _) = self.dbbuf?;
        let mut raw = [0u8; 4];
        if !self.mem.device_read(shadow + self.shadow_offset(qid, completion), &mut raw) {
            self.dma_fault();
            return None;
        }
        Some(u32::from_le_bytes(raw))
    }

    /// After an MMIO doorbell on I/O SQ `qid`, as QEMU 7.2 processes a
    /// queue with shadow doorbells: takes the shadow tail where it moved on,
    /// then sets the SQ's EventIdx to the tail it has now (the host rings by
    /// MMIO again when it moves past that).
    fn follow_shadow_tail(&mut self, qid: u16) {
        let Some(value) = self.shadow_value(qid, false) else { return };
        if self.sqs.get(&qid).is_some_and(|sq| u32::from(sq.tail) != value) {
            if self.sq_doorbell(qid, value, false) {
                self.stats.shadow_doorbells += 1;
            } else {
                self.stats.stale_shadow_doorbells += 1;
            }
        }
        let (Some((_, eventidx)), Some(tail)) = (self.dbbuf, self.sqs.get(&qid).map(|sq| sq.tail)) else {
            return;
        };
        if !self.mem.device_write(eventidx + self.shadow_offset(qid, false), &u32::from(tail).to_le_bytes()) {
            self.dma_fault();
        }
    }

    /// Before posting completions on I/O CQ `cqid`, as QEMU 7.2 does with
    /// shadow doorbells: takes the head from the shadow doorbell where it
    /// moved. (Like QEMU 7.2, it never writes a CQ's EventIdx: the host's
    /// seed stays, so the host rings a CQ head by MMIO only when it passes
    /// that.)
    fn follow_shadow_head(&mut self, cqid: u16) {
        let Some(value) = self.shadow_value(cqid, true) else { return };
        if self.cqs.get(&cqid).is_some_and(|cq| u32::from(cq.head) != value) {
            // QEMU 7.2 takes any value, and a head behind the real one
            // wedges its queue; here it is refused and counted.
            if self.release_cq(cqid, value) {
                self.stats.shadow_doorbells += 1;
            } else {
                self.stats.stale_shadow_doorbells += 1;
            }
        }
    }

    /// SQ tail doorbell (`mmio`: a register write, else a shadow doorbell):
    /// fetches every entry from the head to the new tail.
    /// False (counted as ignored) when there is no such queue or the value
    /// lies outside it.
    fn sq_doorbell(&mut self, qid: u16, value: u32, mmio: bool) -> bool {
        let Some(sq) = self.sqs.get_mut(&qid) else {
            self.stats.ignored_doorbells += 1;
            return false;
        };
        if value >= sq.size as u32 {
            self.stats.ignored_doorbells += 1;
            return false;
        }
        sq.tail = value as u16;
        if mmio {
            self.stats.sq_doorbells += 1;
        }
        // Under weighted round robin, the arbiter fetches when time moves.
        if !self.arbitrated(qid) {
            while self.fetch_one(qid) {}
        }
        true
    }

    /// CQ head doorbell: the host released entries up to `value`.
    fn cq_doorbell(&mut self, qid: u16, value: u32) {
        if self.release_cq(qid, value) {
            self.flush_cq(qid);
        }
    }

    /// Moves CQ `qid`'s head to `value` (from a doorbell, MMIO or shadow):
    /// false, counted as an ignored doorbell, when there is no such queue or
    /// the head would not lie between the old head and the tail.
    fn release_cq(&mut self, qid: u16, value: u32) -> bool {
        let Some(cq) = self.cqs.get_mut(&qid) else {
            self.stats.ignored_doorbells += 1;
            return false;
        };
        if value >= cq.size as u32
            || ring_distance(cq.head, value as u16, cq.size) > ring_distance(cq.head, cq.tail, cq.size)
        {
            self.stats.ignored_doorbells += 1;
            return false;
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
        true
    }

    pub(super) fn dma_fault(&mut self) {
        self.stats.dma_faults += 1;
        self.cfs = true;
    }

    // ----- completions -----

    /// Queues a completion for the CQ of `sqid` and writes what fits.
    pub(super) fn post(&mut self, sqid: u16, cid: u16, status: u16, dw0: u32, kind: PostKind) {
        let Some(sq) = self.sqs.get_mut(&sqid) else { return };
        let sqhd = if kind == PostKind::BadHead { sq.impossible_head() } else { sq.head };
        // Only a completion the host can take retires its CID: one with an
        // impossible SQ head or the wrong phase leaves the command
        // outstanding to the host, so `CidNotOutstanding` must not name it.
        if kind == PostKind::Real {
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
        if self.cqs.get(&cqid).is_some_and(|cq| !cq.waiting.is_empty()) {
            self.follow_shadow_head(cqid);
        }
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

    // ----- babbling and scribbling -----

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
        self.post_bogus(cqid, sqid, cid);
    }

    /// The completion queue of submission queue `sqid`.
    pub(crate) fn cq_of(&self, sqid: u16) -> Option<u16> {
        self.sqs.get(&sqid).map(|sq| sq.cqid)
    }

    /// Posts a phase-valid completion for `cid` of `sqid` on `cqid`, at the
    /// device's own tail, as if it had completed such a command.
    pub(crate) fn post_bogus(&mut self, cqid: u16, sqid: u16, cid: u16) {
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

    /// See [`crate::Sim::scribble_cq`].
    pub(crate) fn scribble_cq(&mut self, cqid: u16, bytes: &[u8]) -> bool {
        let Some(cq) = self.cqs.get(&cqid) else { return false };
        let len = bytes.len().min(cq.size as usize * 16);
        self.mem.device_write(cq.base, &bytes[..len])
    }
}
