//! PRP construction over arbitrary buffer layouts: the entries built must
//! describe exactly the bytes asked for, page by page, or the request must be
//! refused; never a panic or a write outside the list pages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvme_nostd::fuzzing::{list_pages_for, pages_touched, prp_build, PrpListSink};

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

fuzz_target!(|input: (u64, u32, u8)| {
    let (addr, len, list_pages) = input;
    let addr = addr & 0x0000_ffff_ffff_fffc | (addr & 3); // keep misalignment possible
    let len = (len as usize) % (8 << 20);
    let list_pages = (list_pages % 8) as usize;
    let mut sink = Pages { base: 0x7000_0000_0000, pages: vec![vec![u64::MAX; PAGE / 8]; list_pages] };
    let Ok(prp) = prp_build(addr, len, PAGE, &mut sink) else { return };
    assert!(len > 0 && addr % 4 == 0);
    let touched = pages_touched(addr, len, PAGE);
    assert!(list_pages_for(touched, PAGE / 8) <= list_pages);
    // Walk as a controller does and check the pages run on from addr.
    assert_eq!(prp.prp1, addr);
    let first = (PAGE - (addr as usize % PAGE)).min(len);
    let mut left = len - first;
    let mut next = (addr & !(PAGE as u64 - 1)) + PAGE as u64;
    if left == 0 {
        return;
    }
    if left <= PAGE {
        assert_eq!(prp.prp2, next);
        return;
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
        assert_eq!(entry, next);
        next += PAGE as u64;
        left -= left.min(PAGE);
        idx += 1;
    }
});
