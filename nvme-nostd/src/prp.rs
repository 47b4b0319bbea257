//! Physical Region Page entries and lists (NVMe Base Specification 1.4, section
//! 4.3 "Physical Region Page Entry and List").
//!
//! A transfer of `len` bytes at device address `addr` touches some number of
//! memory pages. PRP1 names the first (with its offset), and PRP2 either names
//! the second page (when there are exactly two) or points to a PRP list holding
//! the address of every further page. A list fills one memory page; when more
//! entries are needed, the last entry of a list page points to the next page.

#[cfg(any(test, feature = "fuzzing"))]
use crate::error::Argument;
use crate::error::{Error, PrpShape, Result};
#[cfg(any(test, feature = "fuzzing"))]
use hal_traits::DeviceAddr;
use hal_traits::{DeviceSegment, SegmentSink, PAGE_SIZE};

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
    /// Writes `count` entries from index `index` of list page `page` on:
    /// `first`, then each a page (4 KiB) above the one before, as a run
    /// contiguous in device space gives them. The default writes them one
    /// by one; a sink over one piece of memory checks the bounds once.
    fn write_run(&mut self, page: usize, index: usize, first: u64, count: usize) {
        for k in 0..count {
            self.write(page, index + k, first + (k as u64) * PAGE);
        }
    }
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

const PAGE: u64 = PAGE_SIZE as u64;
/// PRP entries in one list page.
const PER_PAGE: usize = PAGE_SIZE / 8;

/// Builds PRP1, PRP2 and the PRP list of one transfer from the device
/// segments a [`Hal`](hal_traits::Hal) reports for its buffer, one segment
/// at a time, checking as they arrive that PRPs can describe them (section
/// 4.3): the first segment may start at any dword, every later one starts on
/// a page boundary, every one before the last ends on a page boundary, and
/// together they cover the transfer's length exactly. Anything else is
/// refused with [`Error::NotPrpShaped`], never turned into a wrong PRP.
pub struct PrpBuilder<'a, S: PrpListSink> {
    list: &'a mut S,
    len: usize,
    seen: usize,
    prp1: u64,
    prp2: u64,
    /// Pages the transfer touches; known once the first segment arrived.
    touched: usize,
    /// Pages named so far after the first (page `k` of the transfer is entry
    /// `k - 1`).
    named: usize,
    list_page: usize,
    index: usize,
    started: bool,
    previous_ends_on_page: bool,
    error: Option<PrpShape>,
}

impl<'a, S: PrpListSink> PrpBuilder<'a, S> {
    /// A builder for a transfer of `len` bytes, writing list entries into
    /// `list`.
    pub fn new(list: &'a mut S, len: usize) -> Self {
        PrpBuilder {
            list,
            len,
            seen: 0,
            prp1: 0,
            prp2: 0,
            touched: 0,
            named: 0,
            list_page: 0,
            index: 0,
            started: false,
            previous_ends_on_page: false,
            error: None,
        }
    }

    fn fail(&mut self, why: PrpShape) {
        self.error.get_or_insert(why);
    }

    /// Names page `k = named + 1` of the transfer at `page_addr`.
    fn name_page(&mut self, page_addr: u64) {
        let k = self.named + 1;
        if k >= self.touched {
            return self.fail(PrpShape::TooManyPages);
        }
        self.named = k;
        if self.touched == 2 {
            self.prp2 = page_addr;
            return;
        }
        // The last slot of a list page chains to the next list page, unless
        // this entry is the very last one.
        let remaining = self.touched - k;
        if self.index == PER_PAGE - 1 && remaining > 1 {
            let next = self.list.page_addr(self.list_page + 1);
            self.list.write(self.list_page, self.index, next);
            self.list_page += 1;
            self.index = 0;
        }
        self.list.write(self.list_page, self.index, page_addr);
        self.index += 1;
    }

    /// The PRPs, or why the segments cannot be described by them.
    pub fn finish(self) -> Result<Prp> {
        if let Some(why) = self.error {
            return Err(Error::NotPrpShaped(why));
        }
        if !self.started || self.seen != self.len || self.named + 1 != self.touched {
            return Err(Error::NotPrpShaped(PrpShape::LengthMismatch));
        }
        let prp2 = if self.touched > 2 { self.list.page_addr(0) } else { self.prp2 };
        Ok(Prp { prp1: self.prp1, prp2 })
    }
}

impl<S: PrpListSink> SegmentSink for PrpBuilder<'_, S> {
    fn push(&mut self, segment: DeviceSegment) {
        if self.error.is_some() || segment.len == 0 {
            return;
        }
        let addr = segment.addr.0;
        let end = match (self.seen.checked_add(segment.len), addr.checked_add(segment.len as u64)) {
            (Some(seen), Some(end)) if seen <= self.len => end,
            _ => return self.fail(PrpShape::LengthMismatch),
        };
        let mut page = if !self.started {
            if !addr.is_multiple_of(4) {
                return self.fail(PrpShape::FirstNotDwordAligned);
            }
            self.started = true;
            self.prp1 = addr;
            self.touched = pages_touched(addr, self.len, PAGE_SIZE);
            if list_pages_for(self.touched, PER_PAGE) > self.list.pages() {
                return self.fail(PrpShape::TooManyPages);
            }
            // PRP1 names the first page; the pages after it come next.
            (addr & !(PAGE - 1)) + PAGE
        } else {
            if !self.previous_ends_on_page {
                return self.fail(PrpShape::InnerEndNotPageAligned);
            }
            if !addr.is_multiple_of(PAGE) {
                return self.fail(PrpShape::InnerStartNotPageAligned);
            }
            addr
        };
        while page < end {
            self.name_page(page);
            if self.error.is_some() {
                return;
            }
            // Past the top of the address space is past `end` too.
            let Some(next) = page.checked_add(PAGE) else { break };
            page = next;
        }
        self.seen += segment.len;
        self.previous_ends_on_page = end.is_multiple_of(PAGE);
    }
}

/// PRP1 and PRP2 for `len` bytes contiguous in device space at `addr`, when
/// they touch one or two memory pages and `addr` is dword-aligned (section
/// 4.3): no PRP list, so nothing but arithmetic. `None` for every other
/// shape, which [`PrpBuilder`] then takes (or refuses); where this answers,
/// it answers as the builder would.
#[inline]
pub fn direct(addr: u64, len: usize) -> Option<Prp> {
    let end = addr.checked_add(len as u64)?;
    if len == 0 || !addr.is_multiple_of(4) {
        return None;
    }
    let first_page = addr & !(PAGE - 1);
    // `end - first_page` cannot underflow: `end >= addr >= first_page`.
    let span = end - first_page;
    if span <= PAGE {
        Some(Prp { prp1: addr, prp2: 0 })
    } else if span <= 2 * PAGE {
        Some(Prp { prp1: addr, prp2: first_page.checked_add(PAGE)? })
    } else {
        None
    }
}

/// PRP1 and a PRP list in `list` for `len` bytes contiguous in device
/// space at `addr` touching more than two pages: the entries are the pages
/// after the first, in order, the last slot of each full list page chaining
/// to the next. `None` (nothing written) for any shape [`direct`] takes or
/// the builder would refuse; otherwise what the builder writes and returns.
pub(crate) fn one_run_list<S: PrpListSink>(list: &mut S, addr: u64, len: usize) -> Option<Prp> {
    addr.checked_add(len as u64)?;
    if !addr.is_multiple_of(4) {
        return None;
    }
    let touched = pages_touched(addr, len, PAGE_SIZE);
    if touched <= 2 || list_pages_for(touched, PER_PAGE) > list.pages() {
        return None;
    }
    // The end fits in 64 bits, so every page named here does too (page `k`
    // starts below the end); only the step past the last one may not.
    let first_page = addr & !(PAGE - 1);
    // Entries for pages 1 to touched - 1, list page by list page: all but
    // the last list page hold PER_PAGE - 1 entries and the chain pointer.
    let (mut list_page, mut k) = (0, 1);
    loop {
        let left = touched - k;
        if left <= PER_PAGE {
            list.write_run(list_page, 0, first_page + k as u64 * PAGE, left);
            break;
        }
        list.write_run(list_page, 0, first_page + k as u64 * PAGE, PER_PAGE - 1);
        list.write(list_page, PER_PAGE - 1, list.page_addr(list_page + 1));
        k += PER_PAGE - 1;
        list_page += 1;
    }
    Some(Prp { prp1: addr, prp2: list.page_addr(0) })
}

/// The [`SegmentSink`] a transfer's buffer is handed to: it keeps the first
/// segment and starts a [`PrpBuilder`] only when a second one arrives, so a
/// buffer that is one run in device space and touches at most two pages
/// (most I/O) gets its PRPs from [`direct`] in [`finish`](PrpRuns::finish).
/// Every other shape goes through the builder, with its checks and errors.
pub struct PrpRuns<'a, S: PrpListSink> {
    len: usize,
    first: Option<DeviceSegment>,
    /// The list pages, until a builder takes them.
    list: Option<&'a mut S>,
    builder: Option<PrpBuilder<'a, S>>,
}

impl<'a, S: PrpListSink> PrpRuns<'a, S> {
    /// PRPs for a transfer of `len` bytes, any list going into `list`.
    #[inline]
    pub fn new(list: &'a mut S, len: usize) -> Self {
        PrpRuns { len, first: None, list: Some(list), builder: None }
    }

    /// The PRPs, or why the segments cannot be described by them (as
    /// [`PrpBuilder::finish`]).
    #[inline]
    pub fn finish(self) -> Result<Prp> {
        if let Some(builder) = self.builder {
            return builder.finish();
        }
        let Some(list) = self.list else {
            // Not reached: the list leaves only for a builder.
            return Err(Error::NotPrpShaped(PrpShape::LengthMismatch));
        };
        if let Some(run) = self.first.filter(|run| run.len == self.len) {
            if let Some(prp) = direct(run.addr.0, run.len) {
                return Ok(prp);
            }
            if let Some(prp) = one_run_list(list, run.addr.0, run.len) {
                return Ok(prp);
            }
        }
        // One run that is misshapen or too long, or none at all: the builder
        // says which.
        let mut builder = PrpBuilder::new(list, self.len);
        if let Some(run) = self.first {
            builder.push(run);
        }
        builder.finish()
    }
}

impl<S: PrpListSink> SegmentSink for PrpRuns<'_, S> {
    #[inline]
    fn push(&mut self, segment: DeviceSegment) {
        if let Some(builder) = &mut self.builder {
            return builder.push(segment);
        }
        // The builder skips empty segments too.
        if segment.len == 0 {
            return;
        }
        match (self.first, self.list.take()) {
            (None, list) => {
                self.first = Some(segment);
                self.list = list;
            }
            (Some(first), Some(list)) => {
                let mut builder = PrpBuilder::new(list, self.len);
                builder.push(first);
                builder.push(segment);
                self.builder = Some(builder);
            }
            // Not reached: the list leaves only for a builder.
            (Some(_), None) => {}
        }
    }
}

#[cfg(any(test, feature = "fuzzing"))]
/// Builds PRP1/PRP2 for `len` bytes contiguous in device space at `addr`,
/// writing a PRP list into `sink` when one is needed.
pub fn build(addr: u64, len: usize, sink: &mut impl PrpListSink) -> Result<Prp> {
    if len == 0 {
        return Err(Error::InvalidArgument(Argument::ZeroLength));
    }
    let mut builder = PrpBuilder::new(sink, len);
    builder.push(DeviceSegment { addr: DeviceAddr(addr), len });
    match builder.finish() {
        Err(Error::NotPrpShaped(PrpShape::FirstNotDwordAligned)) => {
            Err(Error::BufferMisaligned { required: 4 })
        }
        Err(Error::NotPrpShaped(PrpShape::TooManyPages)) => {
            Err(Error::TransferTooLarge { requested: len, max: 0 })
        }
        other => other,
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
        let prp = build(addr, len, &mut sink).unwrap();
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
        assert_eq!(build(0x1000, 4096, &mut sink).unwrap(), Prp { prp1: 0x1000, prp2: 0 });
        assert_eq!(build(0x1800, 4096, &mut sink).unwrap(), Prp { prp1: 0x1800, prp2: 0x2000 });
        assert_eq!(build(0x1000, 8192, &mut sink).unwrap(), Prp { prp1: 0x1000, prp2: 0x2000 });
        assert!(build(0x1000, 8193, &mut sink).is_err(), "a list page is needed");
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

    /// Segments for `len` bytes that start `offset` bytes into the first of
    /// `pages` (device page addresses, any order), page by page.
    fn scattered(pages: &[u64], offset: usize, len: usize) -> Vec<DeviceSegment> {
        let mut out = Vec::new();
        let mut left = len;
        for (i, &p) in pages.iter().enumerate() {
            let start = if i == 0 { offset } else { 0 };
            let n = (PAGE - start).min(left);
            if n == 0 {
                break;
            }
            out.push(DeviceSegment { addr: DeviceAddr(p + start as u64), len: n });
            left -= n;
        }
        assert_eq!(left, 0, "enough pages");
        out
    }

    fn build_from(segments: &[DeviceSegment], len: usize, sink: &mut VecSink) -> Result<Prp> {
        let mut b = PrpBuilder::new(sink, len);
        for s in segments {
            b.push(*s);
        }
        b.finish()
    }

    #[test]
    fn scattered_pages_become_one_entry_each() {
        for (offset, len) in [(0, 4096), (512, 4096), (0, 3 * 4096), (4, 5 * 4096 - 8), (2048, 600 * 4096)] {
            let count = pages_touched(offset as u64, len, PAGE);
            // Pages in reverse order with gaps: nothing is contiguous.
            let pages: Vec<u64> =
                (0..count).rev().map(|i| 0x4000_0000 + (i as u64) * 3 * PAGE as u64).collect();
            let segments = scattered(&pages, offset, len);
            let mut sink = VecSink::new(4);
            let prp = build_from(&segments, len, &mut sink).unwrap();
            let expected: Vec<(u64, usize)> = segments.iter().map(|s| (s.addr.0, s.len)).collect();
            assert_eq!(walk(prp, len, &sink), expected, "offset {offset} len {len}");
        }
    }

    #[test]
    fn multi_page_segments_are_split_into_pages() {
        // 3 pages contiguous, then 2 elsewhere, starting 8 bytes in.
        let segments = [
            DeviceSegment { addr: DeviceAddr(0x10_0008), len: 3 * PAGE - 8 },
            DeviceSegment { addr: DeviceAddr(0x80_0000), len: 2 * PAGE },
        ];
        let len = 5 * PAGE - 8;
        let mut sink = VecSink::new(1);
        let prp = build_from(&segments, len, &mut sink).unwrap();
        let pages: Vec<u64> = walk(prp, len, &sink).iter().map(|r| r.0).collect();
        assert_eq!(pages, [0x10_0008, 0x10_1000, 0x10_2000, 0x80_0000, 0x80_1000]);
    }

    #[test]
    fn shapes_prps_cannot_describe_are_refused() {
        let seg = |addr: u64, len: usize| DeviceSegment { addr: DeviceAddr(addr), len };
        let cases: [(&[DeviceSegment], usize, PrpShape); 6] = [
            (&[seg(0x1002, 16)], 16, PrpShape::FirstNotDwordAligned),
            (&[seg(0x1000, 2048), seg(0x9000, 2048)], 4096, PrpShape::InnerEndNotPageAligned),
            (&[seg(0x1000, 4096), seg(0x9200, 4096)], 8192, PrpShape::InnerStartNotPageAligned),
            (&[seg(0x1000, 4096)], 8192, PrpShape::LengthMismatch),
            (&[seg(0x1000, 4096), seg(0x9000, 8192)], 8192, PrpShape::LengthMismatch),
            (&[seg(0x1000, 600 * PAGE)], 600 * PAGE, PrpShape::TooManyPages),
        ];
        for (segments, len, why) in cases {
            let mut sink = VecSink::new(1);
            assert_eq!(build_from(segments, len, &mut sink), Err(Error::NotPrpShaped(why)), "{segments:?}");
        }
        let mut sink = VecSink::new(1);
        assert!(build_from(&[], 512, &mut sink).is_err(), "no segment at all");
        let overflow = [seg(u64::MAX - 8, 4096)];
        assert!(build_from(&overflow, 4096, &mut sink).is_err(), "address overflow");
    }

    fn runs_from(segments: &[DeviceSegment], len: usize, sink: &mut VecSink) -> Result<Prp> {
        let mut r = PrpRuns::new(sink, len);
        for s in segments {
            r.push(*s);
        }
        r.finish()
    }

    /// `PrpRuns` (the direct path for one run of up to two pages, the
    /// builder for the rest) gives what the builder alone gives, list pages
    /// included, for every shape: one run, several, empty ones between,
    /// misaligned, too long, too short, at the top of the address space.
    #[test]
    fn runs_answer_as_the_builder_does() {
        let seg = |addr: u64, len: usize| DeviceSegment { addr: DeviceAddr(addr), len };
        let mut cases: Vec<(Vec<DeviceSegment>, usize)> = vec![
            (vec![], 512),
            (vec![seg(0x1000, 0)], 512),
            (vec![seg(0x1000, 0), seg(0x2000, 4096)], 4096),
            (vec![seg(0x1000, 4096), seg(0x9000, 0)], 4096),
            (vec![seg(0x1ffc, 8)], 8),
            (vec![seg(0x1ffe, 8)], 8),
            (vec![seg(0x1000, 8192)], 8192),
            (vec![seg(0x1004, 8192)], 8192),
            (vec![seg(0x1000, 4096)], 8192),
            (vec![seg(u64::MAX - 3, 4)], 4),
            (vec![seg(u64::MAX - 4095, 4096)], 4096),
            (vec![seg(!0xfff, 4096)], 4096),
            (vec![seg(!0xfff - 4, 8)], 8),
            // Three pages and more, the last one at the top of the address
            // space (a PRP list; no step past the end).
            (vec![seg(!0xfff - 0x2000, 0x2800)], 0x2800),
            (vec![seg(!0xfff - 0x2000 + 4, 0x2ff8)], 0x2ff8),
            (vec![seg(!0xfff - 0x2000, 0x3000)], 0x3000),
            (vec![seg(0x1000, 600 * PAGE)], 600 * PAGE),
            // The last entry exactly in the last slot of a list page (no
            // chain), one past it (a chain), and two full list pages.
            (vec![seg(0x1000, 513 * PAGE)], 513 * PAGE),
            (vec![seg(0x1000, 514 * PAGE)], 514 * PAGE),
            (vec![seg(0x1008, 1024 * PAGE - 8)], 1024 * PAGE - 8),
            (vec![seg(0x1000, 1024 * PAGE)], 1024 * PAGE),
        ];
        if !cfg!(miri) {
            cases.push((vec![seg(0x1000, 2000 * PAGE)], 2000 * PAGE));
        }
        // And pseudo-random ones: up to three runs, addresses near page
        // boundaries, lengths around page multiples.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Miri takes a few hundred (the full count takes it many minutes).
        for _ in 0..if cfg!(miri) { 300 } else { 20_000 } {
            let runs = (next() % 3 + 1) as usize;
            let mut segments = Vec::new();
            for _ in 0..runs {
                let page = (next() % 64) << 12;
                let offset = [0, 4, 8, 512, 4092, 4094, 2][(next() % 7) as usize];
                let len = [4, 512, 4096, 4092, 8192, 8188, 12288, 0, 4100][(next() % 9) as usize];
                segments.push(seg(page + offset, len));
            }
            let total: usize = segments.iter().map(|s| s.len).sum();
            let len = if next() % 8 == 0 { total + 4 } else { total };
            cases.push((segments, len));
        }
        for (segments, len) in cases {
            let (mut a, mut b) = (VecSink::new(2), VecSink::new(2));
            let built = build_from(&segments, len, &mut a);
            let runs = runs_from(&segments, len, &mut b);
            assert_eq!(runs, built, "{segments:?} len {len}");
            assert_eq!(a.pages, b.pages, "list pages of {segments:?} len {len}");
        }
    }

    #[test]
    fn direct_is_only_for_one_or_two_pages() {
        assert_eq!(direct(0x1000, 4096), Some(Prp { prp1: 0x1000, prp2: 0 }));
        assert_eq!(direct(0x1200, 4096), Some(Prp { prp1: 0x1200, prp2: 0x2000 }));
        assert_eq!(direct(0x1000, 8192), Some(Prp { prp1: 0x1000, prp2: 0x2000 }));
        assert_eq!(direct(0x1004, 8192), None, "three pages");
        assert_eq!(direct(0x1002, 16), None, "not dword-aligned");
        assert_eq!(direct(0x1000, 0), None);
        assert_eq!(direct(u64::MAX - 3, 8), None, "past the top");
    }

    #[test]
    fn bad_input() {
        let mut sink = VecSink::new(1);
        assert_eq!(build(0x1002, 16, &mut sink), Err(Error::BufferMisaligned { required: 4 }));
        assert!(build(0x1000, 0, &mut sink).is_err());
        assert!(build(0x1000, 600 * PAGE, &mut sink).is_err());
    }
}
