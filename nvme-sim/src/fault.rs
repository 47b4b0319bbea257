//! Fault injection: rules that pick commands, the faults they get, and the
//! seeded random source.

use core::time::Duration;

/// What goes wrong with one command. Faults are decided when the command is
/// fetched from its submission queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Completes with this status (SCT, SC, DNR); the command is not executed.
    Status {
        /// Status Code Type (3 bits).
        sct: u8,
        /// Status Code.
        sc: u8,
        /// Do Not Retry.
        dnr: bool,
    },
    /// Never completes. The command stays outstanding inside the device: only
    /// Abort (when it works), deleting its submission queue, or a controller
    /// reset ends it.
    Drop,
    /// Completes (and executes) this much later than usual.
    Delay(Duration),
    /// CSTS.CFS is set when the command is fetched; nothing more completes
    /// until the host resets the controller (CC.EN 1 -> 0).
    Fatal,
    /// The device is removed when the command is fetched: registers read all
    /// ones, writes are ignored, nothing is processed.
    Removal,
    /// The command executes, and before its real completion the device posts
    /// one carrying a CID the host never issued on that queue.
    CidOutOfRange,
    /// The command executes, and before its real completion the device posts
    /// one with the CID of an earlier, already completed command of that queue
    /// (or `cid ^ 1`, or another CID not outstanding, when there is none).
    CidNotOutstanding,
    /// The command executes and its completion is posted twice.
    CidRepeated,
    /// The command executes and its completion is posted with the phase tag
    /// inverted: the host cannot see it, and its completion queue stalls there.
    WrongPhase,
    /// The command executes and its completion reports an SQ head outside the
    /// range head..tail (`(tail + size / 2) % size`).
    ImpossibleSqHead,
    /// The command executes; its completion reports an impossible SQ head
    /// (which the host must not take), and a second completion with the
    /// same CID, a valid SQ head and this status follows: a device that
    /// contradicts itself about a command it ran.
    ContradictingCompletion {
        /// Status Code Type of the second completion.
        sct: u8,
        /// Status Code of the second completion.
        sc: u8,
    },
}

/// The kinds of [`Fault`], for statistics and random injection.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum FaultKind {
    /// [`Fault::Status`] without DNR.
    Status,
    /// [`Fault::Status`] with DNR.
    StatusDnr,
    /// [`Fault::Drop`].
    Drop,
    /// [`Fault::Delay`].
    Delay,
    /// [`Fault::Fatal`].
    Fatal,
    /// [`Fault::Removal`].
    Removal,
    /// [`Fault::CidOutOfRange`].
    CidOutOfRange,
    /// [`Fault::CidNotOutstanding`].
    CidNotOutstanding,
    /// [`Fault::CidRepeated`].
    CidRepeated,
    /// [`Fault::WrongPhase`].
    WrongPhase,
    /// [`Fault::ImpossibleSqHead`].
    ImpossibleSqHead,
    /// [`Fault::ContradictingCompletion`].
    ContradictingCompletion,
}

impl FaultKind {
    /// Every kind, in declaration order (the index into [`SimStats::faults`](crate::SimStats::faults)).
    pub const ALL: [FaultKind; 12] = [
        FaultKind::Status,
        FaultKind::StatusDnr,
        FaultKind::Drop,
        FaultKind::Delay,
        FaultKind::Fatal,
        FaultKind::Removal,
        FaultKind::CidOutOfRange,
        FaultKind::CidNotOutstanding,
        FaultKind::CidRepeated,
        FaultKind::WrongPhase,
        FaultKind::ImpossibleSqHead,
        FaultKind::ContradictingCompletion,
    ];

    /// The kinds after which the device keeps completing other commands
    /// normally (everything but `Fatal`, `Removal` and `WrongPhase`).
    pub const RECOVERABLE: [FaultKind; 9] = [
        FaultKind::Status,
        FaultKind::StatusDnr,
        FaultKind::Drop,
        FaultKind::Delay,
        FaultKind::CidOutOfRange,
        FaultKind::CidNotOutstanding,
        FaultKind::CidRepeated,
        FaultKind::ImpossibleSqHead,
        FaultKind::ContradictingCompletion,
    ];

    /// A short lowercase name.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Status => "status",
            FaultKind::StatusDnr => "status-dnr",
            FaultKind::Drop => "drop",
            FaultKind::Delay => "delay",
            FaultKind::Fatal => "fatal",
            FaultKind::Removal => "removal",
            FaultKind::CidOutOfRange => "cid-out-of-range",
            FaultKind::CidNotOutstanding => "cid-not-outstanding",
            FaultKind::CidRepeated => "cid-repeated",
            FaultKind::WrongPhase => "wrong-phase",
            FaultKind::ImpossibleSqHead => "impossible-sq-head",
            FaultKind::ContradictingCompletion => "contradicting-completion",
        }
    }

    /// The position of this kind in [`FaultKind::ALL`].
    pub fn index(&self) -> usize {
        *self as usize
    }

    /// A fault of this kind: for the status kinds, `status` (SCT, SC) with
    /// DNR clear or set; for `Delay`, `delay`; the other kinds have no
    /// parameters.
    pub fn fault(self, status: (u8, u8), delay: Duration) -> Fault {
        let (sct, sc) = status;
        match self {
            FaultKind::Status => Fault::Status { sct, sc, dnr: false },
            FaultKind::StatusDnr => Fault::Status { sct, sc, dnr: true },
            FaultKind::Drop => Fault::Drop,
            FaultKind::Delay => Fault::Delay(delay),
            FaultKind::Fatal => Fault::Fatal,
            FaultKind::Removal => Fault::Removal,
            FaultKind::CidOutOfRange => Fault::CidOutOfRange,
            FaultKind::CidNotOutstanding => Fault::CidNotOutstanding,
            FaultKind::CidRepeated => Fault::CidRepeated,
            FaultKind::WrongPhase => Fault::WrongPhase,
            FaultKind::ImpossibleSqHead => Fault::ImpossibleSqHead,
            FaultKind::ContradictingCompletion => Fault::ContradictingCompletion { sct, sc },
        }
    }

    /// The kind of a fault.
    pub fn of(fault: &Fault) -> FaultKind {
        match fault {
            Fault::Status { dnr: false, .. } => FaultKind::Status,
            Fault::Status { dnr: true, .. } => FaultKind::StatusDnr,
            Fault::Drop => FaultKind::Drop,
            Fault::Delay(_) => FaultKind::Delay,
            Fault::Fatal => FaultKind::Fatal,
            Fault::Removal => FaultKind::Removal,
            Fault::CidOutOfRange => FaultKind::CidOutOfRange,
            Fault::CidNotOutstanding => FaultKind::CidNotOutstanding,
            Fault::CidRepeated => FaultKind::CidRepeated,
            Fault::WrongPhase => FaultKind::WrongPhase,
            Fault::ImpossibleSqHead => FaultKind::ImpossibleSqHead,
            Fault::ContradictingCompletion { .. } => FaultKind::ContradictingCompletion,
        }
    }
}

/// Gives matching commands a fault: of the commands fetched from `queue`
/// (any queue if `None`; `Some(0)` is the admin queue) with opcode `opcode`
/// (any if `None`), the first `skip` pass, the next `count` get `fault`.
///
/// Rules are consulted in the order they were injected; every matching rule
/// counts the command, and the first one with faults left applies its fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRule {
    /// The queue identifier to match (`Some(0)` admin), or any.
    pub queue: Option<u16>,
    /// The opcode to match, or any.
    pub opcode: Option<u8>,
    /// Matching commands to let pass before the fault applies.
    pub skip: u64,
    /// How many matching commands get the fault (`u64::MAX` = all).
    pub count: u64,
    /// The fault.
    pub fault: Fault,
}

impl FaultRule {
    /// A rule giving `fault` to the next command of `queue` with `opcode`.
    pub fn once(queue: Option<u16>, opcode: Option<u8>, fault: Fault) -> Self {
        FaultRule { queue, opcode, skip: 0, count: 1, fault }
    }

    pub(crate) fn matches(&self, qid: u16, opcode: u8) -> bool {
        self.queue.is_none_or(|q| q == qid) && self.opcode.is_none_or(|o| o == opcode)
    }
}

/// Which queues random injection draws faults for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueFilter {
    /// Every queue, admin included.
    All,
    /// The admin queue only.
    Admin,
    /// Every I/O queue.
    Io,
    /// One queue.
    Queue(u16),
}

impl QueueFilter {
    pub(crate) fn matches(&self, qid: u16) -> bool {
        match *self {
            QueueFilter::All => true,
            QueueFilter::Admin => qid == 0,
            QueueFilter::Io => qid != 0,
            QueueFilter::Queue(q) => q == qid,
        }
    }
}

/// Random fault injection: for each fetched command of the chosen queues that
/// no rule claimed, a fault of one of `kinds` with probability
/// `probability_per_command`, drawn from a generator seeded with `seed`.
#[derive(Clone, Debug, PartialEq)]
pub struct RandomFaults {
    /// The generator's seed.
    pub seed: u64,
    /// Chance of a fault per command, 0.0 to 1.0.
    pub probability_per_command: f64,
    /// The kinds to choose from (uniformly).
    pub kinds: Vec<FaultKind>,
    /// The queues to draw for.
    pub queues: QueueFilter,
}

/// SplitMix64: a tiny, fast, seedable generator (Steele, Lea and Flood,
/// "Fast splittable pseudorandom number generators", 2014). Not for
/// cryptography; the same seed always gives the same sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Multiply-shift: a slight bias for huge n, irrelevant here.
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// A number in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Status values a random `Status` fault picks from (SCT, SC): internal error,
/// data transfer error, unrecovered read error, ANA transition.
const RETRYABLE: [(u8, u8); 4] = [(0, 0x06), (0, 0x04), (2, 0x81), (3, 0x03)];
/// Status values a random `StatusDnr` fault picks from: invalid field, internal
/// error, write fault, unrecovered read error.
const FINAL: [(u8, u8); 4] = [(0, 0x02), (0, 0x06), (2, 0x80), (2, 0x81)];

/// Makes a fault of `kind`, drawing its parameters from `rng`.
pub(crate) fn random_fault(kind: FaultKind, rng: &mut SplitMix64) -> Fault {
    // Draw only what the kind uses, so each kind consumes the same randomness.
    let status = match kind {
        FaultKind::Status => RETRYABLE[rng.below(RETRYABLE.len() as u64) as usize],
        FaultKind::StatusDnr => FINAL[rng.below(FINAL.len() as u64) as usize],
        _ => (0, 0),
    };
    let delay =
        if kind == FaultKind::Delay { Duration::from_micros(1 + rng.below(10_000)) } else { Duration::ZERO };
    kind.fault(status, delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_indexed_in_order() {
        for (i, k) in FaultKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
            assert!(!k.name().is_empty());
        }
        assert_eq!(FaultKind::of(&Fault::Status { sct: 0, sc: 6, dnr: true }), FaultKind::StatusDnr);
    }

    #[test]
    fn splitmix_is_deterministic_and_bounded() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            assert!(a.below(10) < 10);
            b.below(10);
            let f = a.next_f64();
            b.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
        assert_eq!(SplitMix64::new(0).below(0), 0);
        // The first output for seed 0 from the reference implementation.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn rules_match_queue_and_opcode() {
        let r = FaultRule::once(Some(1), Some(2), Fault::Drop);
        assert!(r.matches(1, 2));
        assert!(!r.matches(0, 2));
        assert!(!r.matches(1, 1));
        assert!(FaultRule::once(None, None, Fault::Drop).matches(9, 9));
        assert!(QueueFilter::Io.matches(3) && !QueueFilter::Io.matches(0));
        assert!(QueueFilter::Admin.matches(0) && QueueFilter::Queue(4).matches(4));
    }
}
