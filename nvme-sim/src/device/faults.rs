//! The fault machinery: the rules and random faults a test injects, drawing
//! the fault of each fetched command (rules first, then random draws), and
//! the command identifiers the bogus-completion faults report. What a fault
//! does to its command is in `commands`.

use super::commands::Pending;
use super::State;
use crate::fault::{random_fault, Fault, FaultRule, RandomFaults, SplitMix64};

pub(super) struct RuleState {
    rule: FaultRule,
    seen: u64,
    applied: u64,
}

pub(super) struct RandomState {
    cfg: RandomFaults,
    rng: SplitMix64,
}

impl State {
    pub(crate) fn inject(&mut self, rule: FaultRule) {
        self.rules.push(RuleState { rule, seen: 0, applied: 0 });
    }

    pub(crate) fn inject_random(&mut self, cfg: RandomFaults) {
        self.random = Some(RandomState { rng: SplitMix64::new(cfg.seed), cfg });
    }

    pub(crate) fn clear_faults(&mut self) {
        self.rules.clear();
        self.random = None;
        self.removed = false;
    }

    /// Decides the fault of a fetched command: rules first, then random draws.
    pub(super) fn draw_fault(&mut self, qid: u16, opcode: u8) -> Option<Fault> {
        let mut fault = None;
        for r in self.rules.iter_mut().filter(|r| r.rule.matches(qid, opcode)) {
            r.seen = r.seen.saturating_add(1);
            if fault.is_none() && r.seen > r.rule.skip && r.applied < r.rule.count {
                r.applied += 1;
                fault = Some(r.rule.fault);
            }
        }
        if fault.is_none() {
            if let Some(rs) = self.random.as_mut().filter(|r| r.cfg.queues.matches(qid)) {
                let draw = rs.rng.next_f64();
                if draw < rs.cfg.probability_per_command && !rs.cfg.kinds.is_empty() {
                    let kind = rs.cfg.kinds[rs.rng.below(rs.cfg.kinds.len() as u64) as usize];
                    fault = Some(random_fault(kind, &mut rs.rng));
                }
            }
        }
        fault
    }

    fn is_outstanding(&self, sqid: u16, cid: u16) -> bool {
        let hit = |p: &Pending| p.sqid == sqid && p.cmd.cdw0.cid() == cid;
        self.pending.values().any(hit) || self.stuck.values().any(hit)
    }

    /// A CID never fetched from `sqid`, other than `cid`: `cid | 0xF000` or the
    /// nearest one below it.
    pub(super) fn unissued_cid(&self, sqid: u16, cid: u16) -> u16 {
        let Some(sq) = self.sqs.get(&sqid) else { return cid ^ 0xf000 };
        let mut c = cid | 0xf000;
        for _ in 0..=u16::MAX as u32 {
            if c != cid && !sq.issued.contains(&c) {
                return c;
            }
            c = c.wrapping_sub(1);
        }
        cid ^ 0xf000
    }

    /// A CID that is not outstanding on `sqid` and is not `cid`: the last one
    /// completed, else `cid ^ 0x8000`, else any.
    pub(super) fn completed_cid(&self, sqid: u16, cid: u16) -> u16 {
        let last = self.sqs.get(&sqid).and_then(|s| s.last_completed);
        // Not `cid ^ 1` or any other "nearby" CID: a host may issue it right
        // after this completion is posted and before it reads the entry, and
        // then no host could tell the bogus completion from a real one. The
        // CID of the last completed command is retired (the host moves a
        // slot's generation on when it reuses it); failing that, the top bit
        // flipped is far from anything the host issues next.
        let candidates = last.into_iter().chain([cid ^ 0x8000]).chain((0..=u16::MAX).rev());
        for c in candidates {
            if c != cid && !self.is_outstanding(sqid, c) {
                return c;
            }
        }
        cid ^ 1
    }
}
