//! The I/O virtual addresses this back-end hands out: ranges the IOMMU
//! reported as usable, allocated first fit and merged again on free.

/// The lowest I/O virtual address handed out: 0 and the first megabyte stay
/// unused, so that a zeroed pointer never reaches real memory.
pub(crate) const FLOOR: u64 = 1 << 20;

/// Where no range is reported: up to the 39 bits that the narrowest x86_64 IOMMUs
/// (and QEMU's `intel-iommu` by default) translate.
pub(crate) const DEFAULT_TOP: u64 = 1 << 39;

/// The x86 interrupt (MSI) window, which IOMMUs reserve: 0xfee00000 up to
/// (not including) 0xfef00000.
pub(crate) const MSI_WINDOW: (u64, u64) = (0xfee0_0000, 0xfef0_0000);

/// Free I/O virtual address space: sorted, disjoint, half-open ranges.
#[derive(Debug)]
pub(crate) struct IovaSpace {
    pub(crate) free: Vec<(u64, u64)>,
}

impl IovaSpace {
    /// The space of `ranges` (inclusive ends, as VFIO reports them), above
    /// [`FLOOR`]; [`FLOOR`] to [`DEFAULT_TOP`] when none are reported.
    pub(crate) fn new(ranges: &[(u64, u64)]) -> Self {
        let mut free: Vec<(u64, u64)> = if ranges.is_empty() {
            // Without the kernel's word (before Linux 5.4), the x86
            // interrupt window stays out: DMA there is taken for an MSI.
            vec![(FLOOR, MSI_WINDOW.0), (MSI_WINDOW.1, DEFAULT_TOP)]
        } else {
            ranges
                .iter()
                .filter_map(|&(start, last)| {
                    let start = start.max(FLOOR);
                    let end = last.saturating_add(1);
                    (start < end).then_some((start, end))
                })
                .collect()
        };
        free.sort_unstable();
        let mut space = IovaSpace { free: Vec::new() };
        for (start, end) in free {
            space.release(start, end - start);
        }
        space
    }

    /// `len` bytes aligned to `align` (a power of two), first fit.
    pub(crate) fn take(&mut self, len: u64, align: u64) -> Option<u64> {
        if len == 0 || !align.is_power_of_two() {
            return None;
        }
        for i in 0..self.free.len() {
            let (start, end) = self.free[i];
            let Some(at) = start.checked_next_multiple_of(align) else { continue };
            let Some(stop) = at.checked_add(len) else { continue };
            if stop > end {
                continue;
            }
            // Split the range around what is taken.
            let mut rest = Vec::with_capacity(2);
            if start < at {
                rest.push((start, at));
            }
            if stop < end {
                rest.push((stop, end));
            }
            self.free.splice(i..=i, rest);
            return Some(at);
        }
        None
    }

    /// Takes `len` bytes at `start` out of the space for good, wherever they
    /// are free (a BAR's bus addresses, which the device takes for its own).
    pub(crate) fn reserve(&mut self, start: u64, len: u64) {
        let end = start.saturating_add(len);
        if len == 0 {
            return;
        }
        let mut kept = Vec::with_capacity(self.free.len() + 1);
        for &(s, e) in &self.free {
            if e <= start || s >= end {
                kept.push((s, e));
                continue;
            }
            if s < start {
                kept.push((s, start));
            }
            if end < e {
                kept.push((end, e));
            }
        }
        self.free = kept;
    }

    /// Gives back `len` bytes at `start`, merging with its neighbours.
    pub(crate) fn release(&mut self, start: u64, len: u64) {
        if len == 0 {
            return;
        }
        let end = start.saturating_add(len);
        let i = self.free.partition_point(|&(s, _)| s < start);
        self.free.insert(i, (start, end));
        // Merge with the next, then with the previous.
        if i + 1 < self.free.len() && self.free[i].1 >= self.free[i + 1].0 {
            self.free[i].1 = self.free[i].1.max(self.free[i + 1].1);
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].1 >= self.free[i].0 {
            self.free[i - 1].1 = self.free[i - 1].1.max(self.free[i].1);
            self.free.remove(i);
        }
    }

    /// Free bytes in all.
    #[cfg(test)]
    fn free_bytes(&self) -> u64 {
        self.free.iter().map(|(s, e)| e - s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_clipped_to_the_floor_and_sorted() {
        let space = IovaSpace::new(&[(0xfef0_0000, (1 << 39) - 1), (0, 0xfedf_ffff)]);
        assert_eq!(space.free, vec![(FLOOR, 0xfee0_0000), (0xfef0_0000, 1 << 39)]);
        assert_eq!(IovaSpace::new(&[]).free, vec![(FLOOR, MSI_WINDOW.0), (MSI_WINDOW.1, DEFAULT_TOP)]);
        // A range wholly under the floor is dropped.
        assert_eq!(IovaSpace::new(&[(0, 0xfff), (FLOOR, FLOOR + 0xfff)]).free, vec![(FLOOR, FLOOR + 0x1000)]);
    }

    #[test]
    fn take_respects_alignment_and_holes() {
        // The reserved window (the interrupt range on x86) is never handed out.
        let mut space = IovaSpace::new(&[(0, 0xfedf_ffff), (0xfef0_0000, 0xffff_ffff)]);
        let two_mib = 2 << 20;
        let a = space.take(two_mib, two_mib).unwrap();
        assert_eq!(a % two_mib, 0);
        assert!(a >= FLOOR);
        let page = space.take(4096, 4096).unwrap();
        assert!(page >= a + two_mib || page + 4096 <= a);
        // A request larger than what is left below the hole lands above it.
        let big = space.take(0x20_0000, 0x10_0000);
        assert!(big.is_some());
        let total = space.free_bytes();
        let huge = space.take(total + 1, 4096);
        assert_eq!(huge, None);
        assert_eq!(space.take(0, 4096), None);
        assert_eq!(space.take(4096, 3), None);
    }

    #[test]
    fn reserved_ranges_are_never_handed_out() {
        let mut space = IovaSpace::new(&[(0, (1 << 30) - 1)]);
        // A BAR in the middle of the space, and one outside it.
        space.reserve(0x2000_0000, 0x100_0000);
        space.reserve(1 << 40, 0x1000);
        assert_eq!(space.free, vec![(FLOOR, 0x2000_0000), (0x2100_0000, 1 << 30)]);
        let mut seen = Vec::new();
        while let Some(a) = space.take(0x10_0000, 0x10_0000) {
            assert!(a + 0x10_0000 <= 0x2000_0000 || a >= 0x2100_0000, "{a:#x}");
            seen.push(a);
        }
        assert!(!seen.is_empty());
    }

    #[test]
    fn release_merges_back_to_one_range() {
        let mut space = IovaSpace::new(&[]);
        let before = space.free.clone();
        let mut taken = Vec::new();
        for i in 0..64u64 {
            let len = 4096 * (1 + i % 5);
            taken.push((space.take(len, 4096).unwrap(), len));
        }
        // Give back in a scrambled order.
        taken.sort_by_key(|&(a, _)| (a.wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 7);
        for (a, len) in taken {
            space.release(a, len);
        }
        assert_eq!(space.free, before);
    }
}
