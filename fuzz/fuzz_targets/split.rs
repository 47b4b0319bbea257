//! The splitter, end to end against the simulator: any geometry (block
//! size, MDTS, NOIOB, extended-LBA metadata), any request position and
//! length, read or write, from a buffer at any dword offset. A request is
//! refused with a clear error and nothing sent, or it completes exactly once
//! with the right bytes moved and nothing left shared.
#![no_main]

use core::time::Duration;
use libfuzzer_sys::fuzz_target;
use nvme_nostd::{Controller, ControllerOptions, IoQueuePair, PollLimit, QpairOptions};
use nvme_sim::{Sim, SimConfig, SimMetadata, SimNamespace};

fuzz_target!(|data: &[u8]| {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let bs: u32 = if byte(0) & 1 == 0 { 512 } else { 4096 };
    let mdts = 1 + byte(1) % 3;
    let noiob = u16::from(byte(2) % 40);
    let ms = [0u16, 8, 16][usize::from(byte(3) % 3)];
    let blocks_in_ns: u64 = 600;
    let lba = u64::from(u16::from_le_bytes([byte(4), byte(5)])) % blocks_in_ns;
    let blocks = 1 + u32::from(u16::from_le_bytes([byte(6), byte(7)])) % 300;
    let write = byte(8) & 1 == 1;
    let offset = usize::from(byte(9) % 8) * 4;
    let sim = Sim::new(SimConfig {
        mdts,
        noiob,
        memory_bytes: 16 << 20,
        namespaces: vec![SimNamespace { nsid: 1, block_size: bs, blocks: blocks_in_ns }],
        metadata: if ms == 0 { vec![] } else { vec![SimMetadata { nsid: 1, ms, extended: true, ..Default::default() }] },
        ..SimConfig::default()
    });
    let options = ControllerOptions::default().with_admin_timeout(Duration::from_millis(50));
    let ctrlr = Controller::new(sim.hal(), options).expect("attach");
    let ns = ctrlr.namespace(1).expect("namespace");
    let mut qp: IoQueuePair<'_, _, Window, u32, 256> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(64)).expect("queue pair");
    let per_block = ns.buffer_bytes(1, false);
    let len = ns.buffer_bytes(blocks, false);
    let mut window = Window { bytes: vec![0u8; len + offset], offset };
    for (i, b) in window.bytes.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(29) ^ byte(10);
    }
    let expected: Vec<u8> = window.bytes[offset..].to_vec();
    let before = sim.stats().commands_fetched;
    let submitted = if write { qp.write(&ns, lba, blocks, window, 7) } else { qp.read(&ns, lba, blocks, window, 7) };
    let cid = match submitted {
        Ok(cid) => cid,
        Err(e) => {
            // Refused: the buffer back, nothing sent.
            assert_eq!(e.buffer.bytes.len(), len + offset);
            assert_eq!(sim.stats().commands_fetched, before, "{:?}", e.error);
            assert_eq!(qp.in_flight(), 0);
            return;
        }
    };
    let mut done = Vec::new();
    for _ in 0..10_000 {
        qp.poll(PollLimit::All, |_, c| done.push(c));
        if qp.in_flight() == 0 {
            break;
        }
        sim.advance(Duration::from_micros(20));
    }
    assert_eq!(done.len(), 1, "exactly one completion");
    let c = done.pop().unwrap();
    assert_eq!((c.cid, c.context), (cid, 7));
    c.result().expect("in range, in one namespace: it succeeds");
    let buf = c.buffer.expect("the buffer comes back");
    let end = lba + u64::from(blocks);
    if write {
        if ms == 0 {
            assert!(sim.read_blocks(1, lba, end - lba) == expected, "the blocks written");
        }
    } else {
        // What the namespace holds (zeros: nothing wrote it).
        assert!(buf.bytes[offset..].iter().all(|&b| b == 0), "the blocks read");
        let _ = per_block;
    }
    drop(qp);
    drop(ctrlr);
    let s = sim.stats();
    assert_eq!((s.live_shares, s.open_syncs, s.bad_syncs, s.bad_unshares), (0, 0, 0, 0), "{s:?}");
});

/// A Vec with the transfer starting `offset` bytes in.
struct Window {
    bytes: Vec<u8>,
    offset: usize,
}

// SAFETY: the Vec's heap bytes do not move with the value and are reached
// only through it; the slice is the same on every call.
unsafe impl nvme_nostd::IoBuffer for Window {
    fn as_dma_slice(&mut self) -> core::ptr::NonNull<[u8]> {
        let ptr = core::ptr::NonNull::new(self.bytes.as_mut_ptr()).expect("non-empty");
        // SAFETY: offset <= len.
        let start = unsafe { ptr.add(self.offset) };
        core::ptr::NonNull::slice_from_raw_parts(start, self.bytes.len() - self.offset)
    }
}
