//! PRP construction from arbitrary device segments, as a HAL may report them:
//! the PRPs built must describe exactly the bytes of the segments, page by
//! page and in order, or the request must be refused with a clear error;
//! never a panic or a write outside the list pages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvme_nostd::fuzzing::{list_pages_for, pages_touched, PrpBuilder, PrpListSink};
use nvme_nostd::hal_traits::{DeviceAddr, DeviceSegment, SegmentSink};

const PAGE: usize = 4096;

struct Pages {
    base: u64,
    pages: Vec<Vec<u64>>,
}

impl PrpListSink for Pages {
    fn pages(&self) -> usize {
        self.pages.len()
    }
    fn page_addr(&self, page: usize) -> u64 {
        self.base + (page * PAGE) as u64
    }
    fn write(&mut self, page: usize, index: usize, entry: u64) {
        // Out-of-range writes would panic here: that is the check.
        self.pages[page][index] = entry;
    }
}

/// The (address, length) of every byte run the PRPs name, walked as a
/// controller does.
fn walk(prp1: u64, prp2: u64, len: usize, sink: &Pages) -> Vec<(u64, usize)> {
    let first = (PAGE - (prp1 as usize % PAGE)).min(len);
    let mut runs = vec![(prp1, first)];
    let mut left = len - first;
    if left == 0 {
        return runs;
    }
    if left <= PAGE {
        runs.push((prp2, left));
        return runs;
    }
    let mut list = ((prp2 - sink.base) / PAGE as u64) as usize;
    let mut idx = 0;
    while left > 0 {
        let entry = sink.pages[list][idx];
        if idx == PAGE / 8 - 1 && left > PAGE {
            list = ((entry - sink.base) / PAGE as u64) as usize;
            idx = 0;
            continue;
        }
        let n = left.min(PAGE);
        runs.push((entry, n));
        left -= n;
        idx += 1;
    }
    runs
}

/// The same bytes, split at page boundaries.
fn by_page(segments: &[DeviceSegment]) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    for s in segments.iter().filter(|s| s.len > 0) {
        let (mut at, end) = (s.addr.0, s.addr.0 + s.len as u64);
        while at < end {
            let n = ((PAGE as u64 - at % PAGE as u64).min(end - at)) as usize;
            out.push((at, n));
            at += n as u64;
        }
    }
    out
}

fuzz_target!(|input: (u8, Vec<(u32, u16)>)| {
    let (list_pages, raw) = input;
    let list_pages = (list_pages % 8) as usize;
    // Segments at arbitrary (often page-aligned) addresses with arbitrary
    // lengths; the claimed total is their sum, or one byte off.
    let segments: Vec<DeviceSegment> = raw
        .iter()
        .take(1100)
        .map(|&(page, len)| {
            let addr = (page as u64 & !0xf) * 256 + (page as u64 & 0xf) * 4;
            DeviceSegment { addr: DeviceAddr(addr), len: len as usize }
        })
        .collect();
    let total: usize = segments.iter().map(|s| s.len).sum();
    if total == 0 {
        return;
    }
    let mut sink = Pages { base: 0x7000_0000_0000, pages: vec![vec![u64::MAX; PAGE / 8]; list_pages] };
    let mut builder = PrpBuilder::new(&mut sink, total);
    for s in &segments {
        builder.push(*s);
    }
    let Ok(prp) = builder.finish() else { return };
    // Accepted: the PRPs name exactly the segments' bytes, in order.
    let first = segments.iter().find(|s| s.len > 0).expect("a non-empty segment");
    assert_eq!(prp.prp1, first.addr.0);
    assert!(list_pages_for(pages_touched(prp.prp1, total, PAGE), PAGE / 8) <= list_pages);
    let runs = walk(prp.prp1, prp.prp2, total, &sink);
    assert_eq!(runs, by_page(&segments));
});
