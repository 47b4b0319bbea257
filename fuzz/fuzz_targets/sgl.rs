//! SGL construction from arbitrary device segments, as a HAL may report
//! them: the SGL built must describe exactly the bytes of the segments, in
//! order, or the request must be refused with a clear error; never a panic
//! or a write outside the list pages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvme_nostd::fuzzing::{PrpListSink, SglBuilder};
use nvme_nostd::hal_traits::{DeviceAddr, DeviceSegment, SegmentSink};
use nvme_nostd::spec::command::SglDescriptor;

const BASE: u64 = 0x7000_0000;

struct Pages(Vec<[u64; 512]>);

impl PrpListSink for Pages {
    fn pages(&self) -> usize {
        self.0.len()
    }
    fn page_addr(&self, page: usize) -> u64 {
        BASE + page as u64 * 4096
    }
    fn write(&mut self, page: usize, index: usize, entry: u64) {
        // Out-of-range writes panic here: that is the check.
        self.0[page][index] = entry;
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let pages = usize::from(data[0] % 4);
    let dword = data[1] & 1 == 1;
    let short = usize::from(data[1] >> 1 & 1);
    let segments: Vec<(u64, usize)> = data[2..]
        .chunks_exact(6)
        .map(|c| {
            let addr = u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])) << 2 | u64::from(c[4] & 3);
            (addr, usize::from(c[5]) * 37 + 1)
        })
        .collect();
    if segments.is_empty() {
        return;
    }
    let total: usize = segments.iter().map(|s| s.1).sum();
    let mut sink = Pages(vec![[0; 512]; pages]);
    let mut b = SglBuilder::new(&mut sink, total + short, dword);
    for &(addr, len) in &segments {
        b.push(DeviceSegment { addr: DeviceAddr(addr), len });
    }
    let Ok(dptr) = b.finish() else { return };
    assert_eq!(short, 0, "a short list was accepted");
    // Walk it as a controller does.
    let mut runs = Vec::new();
    let mut next = SglDescriptor::from_qwords([dptr.prp1, dptr.prp2]);
    'walk: for _ in 0..16 {
        match next.kind() {
            SglDescriptor::DATA_BLOCK => {
                runs.push((next.address, next.length as usize));
                break 'walk;
            }
            kind => {
                let off = (next.address - BASE) as usize;
                let count = next.length as usize / 16;
                let mut chain = None;
                for i in 0..count {
                    let (page, index) = ((off + i * 16) / 4096, (off + i * 16) % 4096 / 8);
                    let d = SglDescriptor::from_qwords([sink.0[page][index], sink.0[page][index + 1]]);
                    if d.kind() == SglDescriptor::DATA_BLOCK {
                        runs.push((d.address, d.length as usize));
                    } else {
                        assert!(kind == SglDescriptor::SEGMENT && i + 1 == count, "chain in the wrong place");
                        chain = Some(d);
                    }
                }
                match chain {
                    Some(d) => next = d,
                    None => {
                        assert_eq!(kind, SglDescriptor::LAST_SEGMENT);
                        break 'walk;
                    }
                }
            }
        }
    }
    // The runs are the segments, merged where contiguous.
    let mut at = 0;
    for (addr, len) in runs {
        let (mut expect, mut left) = (addr, len);
        while left > 0 {
            let (a, n) = segments[at];
            assert_eq!(a, expect);
            assert!(n <= left);
            left -= n;
            expect += n as u64;
            at += 1;
        }
    }
    assert_eq!(at, segments.len());
});
