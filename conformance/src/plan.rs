//! Where the checks that write put their blocks.
//!
//! Every check that writes takes its block range from one [`Plan`], and the
//! blocks saved before the run (and written back after it) are
//! [`Plan::extent`], the union of those ranges: the window cannot fall short
//! of what the checks overwrite, whatever the block size, the transfer limit
//! or the namespace size.

/// A run of blocks a check writes: from `lba`, `bytes` long (whole blocks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The first block.
    pub lba: u64,
    /// Length in bytes, a multiple of the block size.
    pub bytes: usize,
}

impl Span {
    /// One past the last block, for block size `bs`.
    pub fn end(&self, bs: usize) -> u64 {
        self.lba + (self.bytes / bs) as u64
    }
}

/// The geometry the checks run on, and the ranges they write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Block size in bytes.
    pub bs: usize,
    /// The largest transfer the queue pair allows, in bytes.
    pub max_transfer: usize,
    /// Blocks in the namespace.
    pub blocks: u64,
}

/// Reads and writes the in-flight check keeps outstanding (one block each).
pub const IN_FLIGHT_BLOCKS: u64 = crate::SLOTS as u64;
/// Blocks the phase-wrap check writes and reads back.
pub const WRAP_BLOCKS: u64 = 15;
/// Blocks the two-queue-pair check writes (16 by each).
pub const TWO_QUEUE_BLOCKS: u64 = 32;

impl Plan {
    /// A plan; `None` when the namespace cannot hold even one block of it.
    pub fn new(bs: usize, max_transfer: usize, blocks: u64) -> Option<Plan> {
        (bs > 0 && blocks > 0 && max_transfer >= bs).then_some(Plan { bs, max_transfer, blocks })
    }

    fn fits(&self, span: Span) -> Option<Span> {
        (span.bytes >= self.bs && span.bytes <= self.max_transfer && span.end(self.bs) <= self.blocks)
            .then_some(span)
    }

    /// The largest transfer: whole blocks, no larger than the namespace.
    pub fn largest_bytes(&self) -> usize {
        let ns_bytes = usize::try_from(self.blocks).unwrap_or(usize::MAX).saturating_mul(self.bs);
        self.max_transfer.min(ns_bytes) / self.bs * self.bs
    }

    /// Write/read/verify of one block.
    pub fn one_block(&self) -> Option<Span> {
        self.fits(Span { lba: 0, bytes: self.bs })
    }

    /// Write/read/verify of several pages (16 KiB, or a block if larger).
    pub fn several_pages(&self) -> Option<Span> {
        self.fits(Span { lba: 1, bytes: (16 << 10).max(self.bs) })
    }

    /// A PRP list from a buffer placed 512 bytes into its page: up to 64 KiB,
    /// at least 8 KiB (three pages touched).
    pub fn prp_list(&self) -> Option<Span> {
        let bytes = self.largest_bytes().min(64 << 10) / self.bs * self.bs;
        if bytes < 8192 {
            return None;
        }
        self.fits(Span { lba: 2, bytes })
    }

    /// The largest transfer allowed.
    pub fn largest(&self) -> Option<Span> {
        self.fits(Span { lba: 0, bytes: self.largest_bytes() })
    }

    /// Blocks written one per command, many in flight at once.
    pub fn in_flight(&self) -> Option<Span> {
        let blocks = IN_FLIGHT_BLOCKS.min(self.blocks);
        (blocks >= crate::IN_FLIGHT as u64).then_some(Span { lba: 0, bytes: blocks as usize * self.bs })
    }

    /// Blocks the phase-wrap check writes, one per command.
    pub fn wrap(&self) -> Option<Span> {
        let blocks = WRAP_BLOCKS.min(self.blocks);
        Some(Span { lba: 0, bytes: blocks as usize * self.bs })
    }

    /// Blocks two queue pairs write at once.
    pub fn two_queues(&self) -> Option<Span> {
        (self.blocks >= TWO_QUEUE_BLOCKS)
            .then_some(Span { lba: 0, bytes: TWO_QUEUE_BLOCKS as usize * self.bs })
    }

    /// A transfer the queue pair splits: twice the largest and a block more
    /// (three commands), at most 4 MiB in all.
    pub fn split(&self) -> Option<Span> {
        let bytes = self.max_transfer.checked_mul(2)?.checked_add(self.bs)? / self.bs * self.bs;
        let span = Span { lba: 0, bytes };
        (bytes <= 4 << 20 && span.end(self.bs) <= self.blocks).then_some(span)
    }

    /// Every span a check writes.
    pub fn writes(&self) -> [Option<Span>; 8] {
        [
            self.split(),
            self.one_block(),
            self.several_pages(),
            self.prp_list(),
            self.largest(),
            self.in_flight(),
            self.wrap(),
            self.two_queues(),
        ]
    }

    /// The blocks to save and restore: from block 0 to the end of the last
    /// span any check writes.
    pub fn extent(&self) -> u64 {
        self.writes().iter().flatten().map(|s| s.end(self.bs)).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// The geometry of the bug the review found: MDTS 3 (32 KiB) would have
    /// saved 65 blocks while the PRP-list check writes blocks 2 to 65.
    #[test]
    fn the_window_covers_every_write() {
        for bs in [512usize, 4096, 8192] {
            for max_transfer in [4096usize, 8192, 32 << 10, 128 << 10, 4 << 20] {
                for blocks in [1u64, 2, 17, 33, 65, 66, 200, 100_000] {
                    let Some(plan) = Plan::new(bs, max_transfer, blocks) else { continue };
                    let extent = plan.extent();
                    assert!(extent <= blocks, "{plan:?}");
                    for span in plan.writes().iter().flatten() {
                        assert!(span.end(bs) <= extent, "{span:?} beyond the window {extent} of {plan:?}");
                        assert_eq!(span.bytes % bs, 0);
                    }
                }
            }
        }
        let plan = Plan::new(512, 32 << 10, 100_000).unwrap();
        assert_eq!(plan.prp_list(), Some(Span { lba: 2, bytes: 32 << 10 }));
        assert_eq!(plan.split(), Some(Span { lba: 0, bytes: (64 << 10) + 512 }));
        assert_eq!(plan.extent(), 129, "the split check's 2 × 64 + 1 blocks, beyond the PRP-list check's 66");
    }
}
