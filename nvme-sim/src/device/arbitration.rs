//! Weighted round robin with urgent priority class (NVMe 1.4 section 4.13),
//! when the controller offers it ([`SimConfig::wrr`](crate::SimConfig::wrr))
//! and the host enables it (CC.AMS = 1). Under it, I/O submission queue
//! doorbells only record the new tail: commands are fetched when time moves
//! on, by arbitration (urgent queues first, whole; then rounds that take up
//! to weight + 1 commands from each high, medium and low queue, the weights
//! from the Arbitration feature), and the controller executes one command at
//! a time, so the order of fetching is the order of completion. Under round
//! robin, nothing changes: every doorbell fetches at once.

use super::{State, SQ_ENTRY};
use nvme_spec::dwords::Arbitration;

impl State {
    /// Whether I/O fetching waits for arbitration.
    pub(super) fn arbitrated(&self, qid: u16) -> bool {
        self.wrr && qid != 0
    }

    /// Fetches every command waiting in the I/O submission queues, in
    /// weighted round robin order.
    pub(super) fn arbitrate(&mut self) {
        let weights = Arbitration::from_bits(self.features.get(&0x01).copied().unwrap_or(0));
        let class_weight = |prio: u8| {
            usize::from(match prio {
                1 => weights.high_weight(),
                2 => weights.medium_weight(),
                _ => weights.low_weight(),
            }) + 1
        };
        // Urgent queues: everything, at once.
        let urgent: Vec<u16> =
            self.sqs.iter().filter(|(q, sq)| **q != 0 && sq.prio == 0).map(|(q, _)| *q).collect();
        for qid in urgent {
            while self.fetch_one(qid) {}
        }
        loop {
            let mut fetched = false;
            for prio in 1..=3u8 {
                let queues: Vec<u16> =
                    self.sqs.iter().filter(|(q, sq)| **q != 0 && sq.prio == prio).map(|(q, _)| *q).collect();
                for qid in queues {
                    for _ in 0..class_weight(prio) {
                        if !self.fetch_one(qid) {
                            break;
                        }
                        fetched = true;
                    }
                }
            }
            if !fetched {
                return;
            }
        }
    }

    /// Fetches the next command of `qid`, if there is one; false if not.
    pub(super) fn fetch_one(&mut self, qid: u16) -> bool {
        if !self.commands_run() {
            return false;
        }
        let Some(sq) = self.sqs.get_mut(&qid) else { return false };
        if sq.head == sq.tail {
            return false;
        }
        let addr = sq.base + u64::from(sq.head) * SQ_ENTRY;
        sq.head = (sq.head + 1) % sq.size;
        let mut raw = [0u8; 64];
        if !self.sq_read(addr, &mut raw) {
            self.dma_fault();
            return false;
        }
        self.accept(qid, super::queues::parse_sqe(&raw));
        true
    }
}
