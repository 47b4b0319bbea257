//! Physical Region Page entries and lists (NVMe Base Specification 1.4, section
//! 4.3 "Physical Region Page Entry and List").
//!
//! A transfer of `len` bytes at device address `addr` touches some number of
//! memory pages. PRP1 names the first (with its offset), and PRP2 either names
//! the second page (when there are exactly two) or points to a PRP list holding
//! the address of every further page. A list fills one memory page; when more
//! entries are needed, the last entry of a list page points to the next page.

use crate::error::{Error, Result};

/// Where the entries of a PRP list go: pages of memory whose device addresses are
/// known. Implemented over the DMA memory of a request slot, and over plain
/// vectors in tests.
pub trait PrpListSink {
    /// The number of list pages available.
    fn pages(&self) -> usize;
    /// The device address of list page `page`.
    fn page_addr(&self, page: usize) -> u64;
    /// Writes `entry` at index `index` of list page `page`.
    fn write(&mut self, page: usize, index: usize, entry: u64);
}

/// PRP1 and PRP2 of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prp {
    /// PRP Entry 1.
    pub prp1: u64,
    /// PRP Entry 2, or the PRP list pointer.
    pub prp2: u64,
}

/// The number of list pages needed for a transfer touching `touched` pages,
/// each list page holding `per_page` entries.
pub const fn list_pages_for(touched: usize, per_page: usize) -> usize {
    if touched <= 2 {
        0
    } else {
        // `touched - 1` entries go in lists; each full page but the last gives
        // one entry to the chain pointer.
        let entries = touched - 1;
        if entries <= per_page {
            1
        } else {
            (entries - 1).div_ceil(per_page - 1)
        }
    }
}

/// The number of memory pages that `len` bytes at `addr` touch.
pub const fn pages_touched(addr: u64, len: usize, page_size: usize) -> usize {
    let offset = (addr % page_size as u64) as usize;
    offset.saturating_add(len).div_ceil(page_size)
}

/// Builds PRP1/PRP2 for `len` bytes at device address `addr`, writing a PRP list
/// into `sink` when one is needed. `page_size` is CC.MPS's page size, a power
/// of two of at least 4096.
pub fn build(addr: u64, len: usize, page_size: usize, sink: &mut impl PrpListSink) -> Result<Prp> {
    debug_assert!(page_size.is_power_of_two() && page_size >= 4096);
    if len == 0 {
        return Err(Error::InvalidArgument("zero-length transfer"));
    }
    if !addr.is_multiple_of(4) {
        return Err(Error::BufferMisaligned);
    }
    let page = page_size as u64;
    let first_page = addr & !(page - 1);
    let touched = pages_touched(addr, len, page_size);
    // Page k of the transfer (k >= 1) starts at first_page + k * page.
    let page_n = |k: usize| first_page.wrapping_add((k as u64).wrapping_mul(page));
    match touched {
        1 => Ok(Prp { prp1: addr, prp2: 0 }),
        2 => Ok(Prp { prp1: addr, prp2: page_n(1) }),
        _ => {
            let per_page = page_size / 8;
            let needed = list_pages_for(touched, per_page);
            if needed > sink.pages() {
                return Err(Error::TransferTooLarge { requested: len, max: 0 });
            }
            let mut list_page = 0;
            let mut index = 0;
            for k in 1..touched {
                let remaining = touched - k;
                // Last slot of a list page: chain to the next list page, unless
                // this entry is the very last one.
                if index == per_page - 1 && remaining > 1 {
                    sink.write(list_page, index, sink.page_addr(list_page + 1));
                    list_page += 1;
                    index = 0;
                }
                sink.write(list_page, index, page_n(k));
                index += 1;
            }
            Ok(Prp { prp1: addr, prp2: sink.page_addr(0) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 4096;

    struct VecSink {
        base: u64,
        pages: Vec<Vec<u64>>,
    }

    impl VecSink {
        fn new(pages: usize) -> Self {
            // Poison: an entry the builder did not write shows up as this.
            VecSink { base: 0x7700_0000, pages: vec![vec![0xdead_beef_dead_beef; PAGE / 8]; pages] }
        }
    }

    impl PrpListSink for VecSink {
        fn pages(&self) -> usize {
            self.pages.len()
        }
        fn page_addr(&self, page: usize) -> u64 {
            self.base + (page * PAGE) as u64
        }
        fn write(&mut self, page: usize, index: usize, entry: u64) {
            self.pages[page][index] = entry;
        }
    }

    /// Walks PRP1/PRP2 (and lists) the way a controller does and returns the
    /// (address, length) runs it would transfer.
    fn walk(prp: Prp, len: usize, sink: &VecSink) -> Vec<(u64, usize)> {
        let mut out = Vec::new();
        let first = (PAGE - (prp.prp1 as usize % PAGE)).min(len);
        out.push((prp.prp1, first));
        let mut left = len - first;
        if left == 0 {
            assert_eq!(prp.prp2, 0);
            return out;
        }
        if left <= PAGE {
            assert_eq!(prp.prp2 % PAGE as u64, 0);
            out.push((prp.prp2, left));
            return out;
        }
        let mut list = ((prp.prp2 - sink.base) / PAGE as u64) as usize;
        let mut idx = 0;
        while left > 0 {
            let entry = sink.pages[list][idx];
            if idx == PAGE / 8 - 1 && left > PAGE {
                list = ((entry - sink.base) / PAGE as u64) as usize;
                idx = 0;
                continue;
            }
            assert_eq!(entry % PAGE as u64, 0, "list entries have no offset");
            let n = left.min(PAGE);
            out.push((entry, n));
            left -= n;
            idx += 1;
        }
        out
    }

    fn check(addr: u64, len: usize) {
        let mut sink = VecSink::new(4);
        let prp = build(addr, len, PAGE, &mut sink).unwrap();
        let runs = walk(prp, len, &sink);
        // The runs must cover addr..addr+len exactly, in order.
        let mut at = addr;
        for (a, n) in &runs {
            assert_eq!(*a, at, "addr {addr:#x} len {len}");
            at += *n as u64;
        }
        assert_eq!(at, addr + len as u64);
        assert_eq!(runs.len(), pages_touched(addr, len, PAGE));
    }

    #[test]
    fn every_alignment_and_length_class() {
        let base = 0x10_0000u64;
        for offset in [0u64, 4, 512, 2048, 4092] {
            for len in [
                4,
                512,
                4096 - offset as usize,
                4096,
                4097,
                8192,
                8196,
                12288,
                65536,
                2 << 20,
                (2 << 20) + 4096,
                4 << 20,
            ] {
                check(base + offset, len);
            }
        }
    }

    #[test]
    fn one_and_two_pages_need_no_list() {
        let mut sink = VecSink::new(0);
        assert_eq!(build(0x1000, 4096, PAGE, &mut sink).unwrap(), Prp { prp1: 0x1000, prp2: 0 });
        assert_eq!(build(0x1800, 4096, PAGE, &mut sink).unwrap(), Prp { prp1: 0x1800, prp2: 0x2000 });
        assert_eq!(build(0x1000, 8192, PAGE, &mut sink).unwrap(), Prp { prp1: 0x1000, prp2: 0x2000 });
        assert!(build(0x1000, 8193, PAGE, &mut sink).is_err(), "a list page is needed");
    }

    #[test]
    fn list_chains_exactly_at_the_boundary() {
        // 512 entries fit one list page: 513 pages touched, no chain.
        assert_eq!(list_pages_for(513, 512), 1);
        assert_eq!(list_pages_for(514, 512), 2);
        // Two pages hold 511 + 512 entries.
        assert_eq!(list_pages_for(1024, 512), 2);
        assert_eq!(list_pages_for(1025, 512), 3);
        check(0x20_0000, 512 * PAGE);
        check(0x20_0000, 513 * PAGE);
        check(0x20_0004, 512 * PAGE);
    }

    #[test]
    fn bad_input() {
        let mut sink = VecSink::new(1);
        assert_eq!(build(0x1002, 16, PAGE, &mut sink), Err(Error::BufferMisaligned));
        assert!(build(0x1000, 0, PAGE, &mut sink).is_err());
        assert!(build(0x1000, 600 * PAGE, PAGE, &mut sink).is_err());
    }
}
