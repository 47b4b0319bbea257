//! A host that writes garbage: random registers, commands, PRPs, doorbells,
//! frees and unshares. The device must never panic or touch memory outside
//! its arena (the second part is what Miri checks when this runs under it).
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use core::ptr::NonNull;
use core::time::Duration;
use nvme_nostd::hal_traits::{DeviceSegment, Direction, DmaRegion, Hal, SegmentSink, PAGE_SIZE};
use nvme_nostd::spec::registers::{doorbell_offset, offset, Cc};
use nvme_sim::{
    Fault, FaultKind, FaultRule, Mapping, Sim, SimConfig, SimHal, SimNamespace, SplitMix64, IOVA_BASE,
};

/// A register write of the test's own.
fn reg32(hal: &SimHal, offset: usize, value: u32) {
    // SAFETY: the hostile host programs garbage on purpose, but every address it
    // can name that the simulator accepts is arena memory the host itself
    // allocated (queues, shared buffers), kept alive until the end of the test;
    // the simulator refuses every other address.
    unsafe { hal.write_reg32(offset, value) }
}

/// A 64-bit register write of the test's own; see [`reg32`].
fn reg64(hal: &SimHal, offset: usize, value: u64) {
    // SAFETY: as in `reg32`.
    unsafe { hal.write_reg64(offset, value) }
}

const OPCODES: [u8; 16] =
    [0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x09, 0x0a, 0x0c, 0x18, 0x7f, 0x08, 0x09, 0x01, 0x02];

/// The device segments a share reported.
#[derive(Default)]
struct Segments(Vec<DeviceSegment>);

impl SegmentSink for Segments {
    fn push(&mut self, segment: DeviceSegment) {
        self.0.push(segment);
    }
}

struct Host {
    sim: Sim,
    rng: SplitMix64,
    regions: Vec<DmaRegion>,
    freed: Vec<DmaRegion>,
    shares: Vec<(Vec<u8>, Mapping, Direction)>,
}

impl Host {
    fn pick_region(&mut self) -> Option<DmaRegion> {
        if self.regions.is_empty() {
            return None;
        }
        let i = self.rng.below(self.regions.len() as u64) as usize;
        Some(self.regions[i])
    }

    /// An address the device might be handed: inside a region, inside a freed
    /// one, or anything at all.
    fn address(&mut self) -> u64 {
        match self.rng.below(6) {
            0 => 0,
            1 => self.rng.next_u64(),
            2 => IOVA_BASE + self.rng.below(4 << 20),
            3 => match self.freed.last() {
                Some(r) => r.daddr.0,
                None => IOVA_BASE,
            },
            _ => match self.pick_region() {
                Some(r) => {
                    let page = PAGE_SIZE as u64;
                    let within = if self.rng.below(3) == 0 { self.rng.below(page / 4) * 4 } else { 0 };
                    r.daddr.0 + self.rng.below(r.pages as u64) * page + within
                }
                None => IOVA_BASE,
            },
        }
    }

    fn small(&mut self) -> u32 {
        match self.rng.below(4) {
            0 => self.rng.next_u64() as u32,
            1 => self.rng.below(4) as u32,
            _ => self.rng.below(64) as u32 | ((self.rng.below(64) as u32) << 16),
        }
    }

    fn sqe(&mut self) -> [u8; 64] {
        let mut b = [0u8; 64];
        let opc = OPCODES[self.rng.below(OPCODES.len() as u64) as usize];
        let flags = if self.rng.below(8) == 0 { self.rng.below(256) as u8 } else { 0 };
        b[0] = opc;
        b[1] = flags;
        b[2..4].copy_from_slice(&(self.rng.below(64) as u16).to_le_bytes());
        b[4..8].copy_from_slice(&(self.rng.below(4) as u32).to_le_bytes());
        let prp1 = self.address();
        let prp2 = self.address();
        b[24..32].copy_from_slice(&prp1.to_le_bytes());
        b[32..40].copy_from_slice(&prp2.to_le_bytes());
        for i in 0..6 {
            let v = self.small();
            b[40 + i * 4..44 + i * 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    fn step(&mut self) {
        let hal = self.sim.hal();
        match self.rng.below(16) {
            0 => {
                if let Ok(r) = hal.dma_alloc(1 + self.rng.below(4) as usize) {
                    self.regions.push(r);
                }
            }
            1 => {
                let r = if self.rng.below(4) == 0 && !self.freed.is_empty() {
                    self.freed[0] // a double free
                } else if let Some(r) = self.pick_region() {
                    self.regions.retain(|x| *x != r);
                    self.freed.push(r);
                    r
                } else {
                    return;
                };
                // SAFETY: the simulator's dma_free only does bookkeeping on
                // its own arena: a region it does not know is counted in
                // `bad_frees`, nothing is dereferenced through it.
                unsafe { hal.dma_free(r) };
            }
            2 | 3 => {
                let off = (self.rng.below(0x1100) as usize) & !if self.rng.below(8) == 0 { 0 } else { 3 };
                let v = self.rng.next_u64() as u32;
                if off != offset::CC {
                    reg32(&hal, off, v);
                }
            }
            4 => {
                if self.rng.below(3) == 0 {
                    reg32(&hal, offset::CC, 0);
                } else if let (Some(sq), Some(cq)) = (self.pick_region(), self.pick_region()) {
                    let sizes = self.rng.below(64) as u32 | ((self.rng.below(64) as u32) << 16);
                    reg32(&hal, offset::AQA, sizes);
                    reg64(&hal, offset::ASQ, sq.daddr.0);
                    reg64(&hal, offset::ACQ, cq.daddr.0);
                    let mut cc = Cc::new().with_en(true).with_iosqes(6).with_iocqes(4);
                    if self.rng.below(6) == 0 {
                        cc = cc.with_shn(1 + self.rng.below(2) as u8);
                    }
                    reg32(&hal, offset::CC, cc.into_bits());
                }
            }
            5..=7 => {
                if let Some(r) = self.pick_region() {
                    let slot = self.rng.below(r.len() as u64 / 64) as usize;
                    let e = self.sqe();
                    // SAFETY: the region is live (in `regions`) and the slot
                    // lies inside it.
                    unsafe {
                        core::ptr::copy_nonoverlapping(e.as_ptr(), r.vaddr.as_ptr().add(slot * 64), 64)
                    };
                }
            }
            8..=10 => {
                let qid = self.rng.below(6) as u16;
                let cq = self.rng.below(2) == 1;
                let v = if self.rng.below(10) == 0 {
                    self.rng.next_u64() as u32
                } else {
                    self.rng.below(64) as u32
                };
                reg32(&hal, doorbell_offset(qid, cq, 0), v);
            }
            11 => self.sim.advance(Duration::from_micros(self.rng.below(2000))),
            12 => {
                let _ = hal.now();
                let _ = hal.read32(offset::CSTS);
                let _ = hal.read64(self.rng.below(0x40) as usize & !7);
            }
            13 => match self.rng.below(8) {
                0 => self.sim.set_removed(self.rng.below(2) == 0),
                1 => self.sim.set_fatal(),
                2 => self.sim.clear_faults(),
                3 => self.sim.remove_namespace(1 + self.rng.below(2) as u32),
                _ => {
                    let kind = FaultKind::ALL[self.rng.below(FaultKind::ALL.len() as u64) as usize];
                    let delay = Duration::from_micros(self.rng.below(5000));
                    let fault = kind.fault((7, 0xff), delay);
                    let fault = match fault {
                        Fault::Status { sct, sc, .. } => Fault::Status { sct, sc, dnr: true },
                        other => other,
                    };
                    self.sim.inject(FaultRule { queue: None, opcode: None, skip: 3, count: 2, fault });
                }
            },
            _ => {
                if self.rng.below(2) == 0 || self.shares.is_empty() {
                    let len = 1 + self.rng.below(9000) as usize;
                    let mut buf = vec![0x5a; len];
                    let dir = [Direction::ToDevice, Direction::FromDevice, Direction::Bidirectional]
                        [self.rng.below(3) as usize];
                    let v = NonNull::from(&mut buf[..]);
                    let mut segments = Segments::default();
                    // SAFETY: `buf` is valid for `len` bytes and is kept (and
                    // not touched) in `shares` until it is unshared.
                    if let Ok(m) = unsafe { hal.share(v, dir, &mut segments) } {
                        assert_eq!(segments.0.iter().map(|s| s.len).sum::<usize>(), len);
                        self.shares.push((buf, m, dir));
                    }
                } else {
                    let i = self.rng.below(self.shares.len() as u64) as usize;
                    let (mut buf, m, dir) = self.shares.swap_remove(i);
                    let len = buf.len();
                    let v = NonNull::from(&mut buf[..]);
                    // A wrong length is only counted; the right one frees
                    // the bounce pages (copying back is `sync_for_cpu`'s).
                    let wrong = self.rng.below(5) == 0;
                    if wrong {
                        let longer = NonNull::slice_from_raw_parts(v.cast::<u8>(), len + 1);
                        // SAFETY: with a wrong length the simulator touches
                        // nothing (it only counts the call).
                        unsafe { hal.unshare(longer, dir, m.clone()) };
                    }
                    // SAFETY: `buf` is the buffer shared with mapping `m` and
                    // is valid for `len` bytes.
                    unsafe { hal.unshare(v, dir, m) };
                }
            }
        }
    }
}

#[test]
fn hostile_host_never_panics_the_device() {
    let steps = if cfg!(miri) { 2_000 } else { 20_000 };
    let seeds = if cfg!(miri) { 1 } else { 16 };
    let (mut fetched, mut posted, mut dma_faults, mut bad) = (0, 0, 0, 0);
    for seed in 0..seeds {
        let sim = Sim::new(SimConfig {
            memory_bytes: 1 << 20,
            max_io_queues: 4,
            mdts: 2,
            namespaces: vec![
                SimNamespace { nsid: 1, block_size: 512, blocks: 256 },
                SimNamespace { nsid: 2, block_size: 4096, blocks: 16 },
            ],
            ..SimConfig::default()
        });
        let mut host = Host {
            sim,
            rng: SplitMix64::new(seed),
            regions: Vec::new(),
            freed: Vec::new(),
            shares: Vec::new(),
        };
        for _ in 0..steps {
            host.step();
        }
        let s = host.sim.stats();
        fetched += s.commands_fetched;
        posted += s.completions_posted;
        dma_faults += s.dma_faults;
        bad += s.bad_frees + s.bad_unshares;
        assert_eq!(s.live_shares, host.shares.len());
        // Drop the shares' buffers only after the simulator stops using them.
        drop(host.sim);
    }
    println!(
        "{seeds} seeds: {fetched} commands fetched, {posted} completions posted, \
         {dma_faults} DMA faults, {bad} bad frees or unshares"
    );
    assert!(fetched > if cfg!(miri) { 0 } else { 100 });
}
