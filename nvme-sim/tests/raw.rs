//! The device at register level, driven by a minimal host written here (not
//! the driver): registers, enable and shutdown timing, completion queue
//! back-pressure, PRP walking with chained lists, and bad addresses.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use core::time::Duration;
use nvme_nostd::hal_traits::{DmaRegion, Hal, PAGE_SIZE};
use nvme_nostd::spec::command::{AdminOpcode, CompletionEntry, IoOpcode, SubmissionEntry};
use nvme_nostd::spec::registers::{doorbell_offset, offset, Cap, Cc, Csts};
use nvme_nostd::spec::status::{command_specific, generic, Status, StatusCode};
use nvme_sim::{Sim, SimConfig, SimHal, SimNamespace, IOVA_BASE};

/// A register write of the test's own.
fn reg32(hal: &SimHal, offset: usize, value: u32) {
    // SAFETY: these tests drive the simulated controller by hand: every address
    // they program (queues, PRPs) is arena memory they allocated and keep until
    // the controller is disabled or the test ends, and the simulator refuses
    // every other address.
    unsafe { hal.write_reg32(offset, value) }
}

/// A 64-bit register write of the test's own; see [`reg32`].
fn reg64(hal: &SimHal, offset: usize, value: u64) {
    // SAFETY: as in `reg32`.
    unsafe { hal.write_reg64(offset, value) }
}

const MS: Duration = Duration::from_millis(1);

/// The default controller, with time moving only when a test says so: these
/// tests check the register-level timing themselves.
fn manual() -> SimConfig {
    SimConfig { auto_advance: false, scatter_shares: false, ..SimConfig::default() }
}

fn sqe_bytes(c: &SubmissionEntry) -> [u8; 64] {
    let mut b = [0u8; 64];
    let dwords = [c.cdw0.into_bits(), c.nsid, c.cdw2, c.cdw3];
    for (i, d) in dwords.iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&d.to_le_bytes());
    }
    b[16..24].copy_from_slice(&c.mptr.to_le_bytes());
    b[24..32].copy_from_slice(&c.prp1.to_le_bytes());
    b[32..40].copy_from_slice(&c.prp2.to_le_bytes());
    let rest = [c.cdw10, c.cdw11, c.cdw12, c.cdw13, c.cdw14, c.cdw15];
    for (i, d) in rest.iter().enumerate() {
        b[40 + i * 4..44 + i * 4].copy_from_slice(&d.to_le_bytes());
    }
    b
}

/// Copies `data` into `region` at `at`.
fn poke(region: &DmaRegion, at: usize, data: &[u8]) {
    assert!(at + data.len() <= region.len());
    // SAFETY: the region is live DMA memory of `region.len()` bytes owned by
    // this test; the range was checked just above; `data` is a separate buffer.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), region.vaddr.as_ptr().add(at), data.len()) }
}

/// Copies `out.len()` bytes of `region` at `at` into `out`.
fn peek(region: &DmaRegion, at: usize, out: &mut [u8]) {
    assert!(at + out.len() <= region.len());
    // SAFETY: as in `poke`, reading.
    unsafe { core::ptr::copy_nonoverlapping(region.vaddr.as_ptr().add(at), out.as_mut_ptr(), out.len()) }
}

/// One queue pair driven by hand.
struct Ring {
    qid: u16,
    sq: DmaRegion,
    cq: DmaRegion,
    sq_size: u16,
    cq_size: u16,
    tail: u16,
    head: u16,
    phase: bool,
    next_cid: u16,
}

impl Ring {
    fn new(hal: &SimHal, qid: u16, sq_size: u16, cq_size: u16) -> Ring {
        let pages = |entries: u16, size: usize| (entries as usize * size).div_ceil(PAGE_SIZE);
        Ring {
            qid,
            sq: hal.dma_alloc(pages(sq_size, 64)).unwrap(),
            cq: hal.dma_alloc(pages(cq_size, 16)).unwrap(),
            sq_size,
            cq_size,
            tail: 0,
            head: 0,
            phase: true,
            next_cid: 0,
        }
    }

    /// Writes `cmd` (with a fresh CID) at the tail and rings; returns the CID.
    fn submit(&mut self, hal: &SimHal, mut cmd: SubmissionEntry) -> u16 {
        let cid = self.push(cmd_with_cid(&mut cmd, self.next_cid));
        self.next_cid += 1;
        self.ring(hal);
        cid
    }

    fn push(&mut self, cmd: SubmissionEntry) -> u16 {
        poke(&self.sq, self.tail as usize * 64, &sqe_bytes(&cmd));
        self.tail = (self.tail + 1) % self.sq_size;
        cmd.cdw0.cid()
    }

    fn ring(&self, hal: &SimHal) {
        reg32(hal, doorbell_offset(self.qid, false, 0), self.tail as u32);
    }

    fn reap(&mut self) -> Option<CompletionEntry> {
        let mut b = [0u8; 16];
        peek(&self.cq, self.head as usize * 16, &mut b);
        let le16 = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let le32 = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let e = CompletionEntry {
            dw0: le32(0),
            dw1: le32(4),
            sqhd: le16(8),
            sqid: le16(10),
            cid: le16(12),
            status: Status::from_bits(le16(14)),
        };
        if e.phase() != self.phase {
            return None;
        }
        self.head += 1;
        if self.head == self.cq_size {
            self.head = 0;
            self.phase = !self.phase;
        }
        Some(e)
    }

    fn release(&self, hal: &SimHal) {
        reg32(hal, doorbell_offset(self.qid, true, 0), self.head as u32);
    }

    /// Submits and waits for the completion (advancing 1 ms at most).
    fn run(&mut self, sim: &Sim, hal: &SimHal, cmd: SubmissionEntry) -> CompletionEntry {
        let cid = self.submit(hal, cmd);
        sim.advance(MS);
        let e = self.reap().expect("a completion");
        self.release(hal);
        assert_eq!(e.cid, cid);
        e
    }
}

fn cmd_with_cid(cmd: &mut SubmissionEntry, cid: u16) -> SubmissionEntry {
    cmd.cdw0.set_cid(cid);
    *cmd
}

fn enable(sim: &Sim, hal: &SimHal, admin: &Ring) {
    reg32(hal, offset::AQA, ((admin.cq_size as u32 - 1) << 16) | (admin.sq_size as u32 - 1));
    reg64(hal, offset::ASQ, admin.sq.daddr.0);
    reg64(hal, offset::ACQ, admin.cq.daddr.0);
    reg32(hal, offset::CC, Cc::new().with_en(true).with_iosqes(6).with_iocqes(4).into_bits());
    sim.advance(MS);
    assert!(Csts::from_bits(hal.read32(offset::CSTS)).rdy());
}

fn sc_of(e: &CompletionEntry) -> (u8, StatusCode) {
    let s = e.status;
    (s.sct().0, s.sc())
}

#[test]
fn registers() {
    let sim = Sim::new(SimConfig { mqes: 255, dstrd: 2, timeout_500ms: 7, ..manual() });
    let hal = sim.hal();
    let cap = hal.read64(offset::CAP);
    assert_eq!(cap, hal.read32(0) as u64 | ((hal.read32(4) as u64) << 32));
    let cap = Cap::from_bits(cap);
    assert_eq!((cap.mqes(), cap.dstrd(), cap.to(), cap.css() & 1), (255, 2, 7, 1));
    assert!(cap.cqr());
    assert_eq!((cap.mpsmin(), cap.mpsmax()), (0, 0));
    assert_eq!(hal.read32(offset::VS), 0x0001_0400);
    assert_eq!(hal.read32(offset::CMBLOC), 0);
    assert_eq!(hal.read32(offset::CMBSZ), 0);
    reg64(&hal, offset::ASQ, 0x1234_5678_9abc_d000);
    assert_eq!(hal.read32(offset::ASQ), 0x9abc_d000);
    assert_eq!(hal.read32(offset::ASQ + 4), 0x1234_5678);
    reg32(&hal, offset::ACQ, 0xffff_ffff);
    reg32(&hal, offset::ACQ + 4, 7);
    assert_eq!(hal.read64(offset::ACQ), 0x7_ffff_f000, "low 12 bits reserved");
    reg32(&hal, offset::INTMS, 0b101);
    reg32(&hal, offset::INTMC, 0b001);
    assert_eq!(hal.read32(offset::INTMS), 0b100);
    assert_eq!(hal.read32(1 << 20), u32::MAX, "beyond the BAR");
    assert_eq!(hal.read32(offset::CAP + 1), 0, "misaligned");
    reg32(&hal, offset::CSTS, u32::MAX);
    assert_eq!(hal.read32(offset::CSTS), 0, "read-only");
    // Removed: all ones, writes ignored.
    sim.set_removed(true);
    assert_eq!(hal.read32(offset::VS), u32::MAX);
    assert_eq!(hal.read64(offset::CAP), u64::MAX);
    reg32(&hal, offset::AQA, 0x001f_001f);
    sim.set_removed(false);
    assert_eq!(hal.read32(offset::AQA), 0);
}

#[test]
fn enable_disable_and_shutdown_follow_the_ready_delay() {
    let sim = Sim::new(SimConfig { ready_delay: Duration::from_micros(500), ..manual() });
    let hal = sim.hal();
    let admin = Ring::new(&hal, 0, 4, 4);
    reg32(&hal, offset::AQA, 0x0003_0003);
    reg64(&hal, offset::ASQ, admin.sq.daddr.0);
    reg64(&hal, offset::ACQ, admin.cq.daddr.0);
    let cc = Cc::new().with_en(true).with_iosqes(6).with_iocqes(4);
    reg32(&hal, offset::CC, cc.into_bits());
    let csts = |h: &SimHal| Csts::from_bits(h.read32(offset::CSTS));
    sim.advance(Duration::from_micros(499));
    assert!(!csts(&hal).rdy());
    sim.advance(Duration::from_micros(1));
    assert!(csts(&hal).rdy());
    // Shutdown: occurring, then complete.
    reg32(&hal, offset::CC, cc.with_shn(1).into_bits());
    assert_eq!(csts(&hal).shst(), 1);
    sim.advance(Duration::from_micros(500));
    assert_eq!(csts(&hal).shst(), 2);
    // Fatal, then disable: CFS and SHST clear at once, RDY after the delay.
    sim.set_fatal();
    assert!(csts(&hal).cfs());
    reg32(&hal, offset::CC, 0);
    assert!(!csts(&hal).cfs());
    assert_eq!(csts(&hal).shst(), 0);
    assert!(csts(&hal).rdy());
    sim.advance(Duration::from_micros(500));
    assert!(!csts(&hal).rdy());
    assert_eq!(sim.stats().resets, 1);
}

#[test]
fn bad_enable_never_becomes_ready() {
    let sim = Sim::new(manual());
    let hal = sim.hal();
    let admin = Ring::new(&hal, 0, 4, 4);
    reg64(&hal, offset::ASQ, admin.sq.daddr.0);
    reg64(&hal, offset::ACQ, admin.cq.daddr.0);
    let good = Cc::new().with_en(true).with_iosqes(6).with_iocqes(4);
    for (aqa, cc) in [
        (0x0003_0003, good.with_mps(1)),
        (0x0003_0003, good.with_css(1)),
        (0x0003_0003, good.with_iosqes(7)),
        (0x0003_0000, good), // one-entry admin SQ
        (0x0fff_0003, good), // admin CQ runs past its page
    ] {
        reg32(&hal, offset::AQA, aqa);
        reg32(&hal, offset::CC, cc.into_bits());
        sim.advance(Duration::from_millis(10));
        assert!(!Csts::from_bits(hal.read32(offset::CSTS)).rdy(), "{aqa:#x} {cc:?}");
        reg32(&hal, offset::CC, 0);
    }
    assert_eq!(sim.stats().enable_failures, 5);
}

#[test]
fn full_completion_queue_holds_completions_back() {
    let sim = Sim::new(manual());
    let hal = sim.hal();
    let mut admin = Ring::new(&hal, 0, 8, 4);
    enable(&sim, &hal, &admin);
    for _ in 0..6 {
        let mut c = SubmissionEntry::new(AdminOpcode::KEEP_ALIVE.0, 0);
        admin.push(cmd_with_cid(&mut c, admin.next_cid));
        admin.next_cid += 1;
    }
    admin.ring(&hal);
    sim.advance(MS);
    // Three fit (a ring of 4 holds 3); the rest wait for the host.
    let first: Vec<_> = std::iter::from_fn(|| admin.reap()).collect();
    assert_eq!(first.iter().map(|e| e.cid).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(first.iter().all(|e| e.sqhd == 6 && e.sqid == 0 && e.status.is_success()));
    assert_eq!(sim.stats().completions_posted, 3);
    admin.release(&hal);
    let rest: Vec<_> = std::iter::from_fn(|| admin.reap()).collect();
    assert_eq!(rest.iter().map(|e| e.cid).collect::<Vec<_>>(), [3, 4, 5], "phase flipped on the wrap");
    admin.release(&hal);
    assert_eq!(sim.stats().completions_posted, 6);
    // A head beyond the tail, a tail beyond the ring, a queue that does not exist.
    let before = sim.stats().ignored_doorbells;
    reg32(&hal, doorbell_offset(0, true, 0), 3);
    reg32(&hal, doorbell_offset(0, false, 0), 8);
    reg32(&hal, doorbell_offset(5, false, 0), 1);
    reg32(&hal, doorbell_offset(0, false, 0) + 2, 1);
    assert_eq!(sim.stats().ignored_doorbells, before + 4);
}

#[test]
fn identify_lands_across_a_page_boundary_and_bad_pointers_fail() {
    let sim = Sim::new(manual());
    let hal = sim.hal();
    let mut admin = Ring::new(&hal, 0, 16, 16);
    enable(&sim, &hal, &admin);
    let data = hal.dma_alloc(2).unwrap();
    let base = data.daddr.0;
    let mut id = SubmissionEntry::new(AdminOpcode::IDENTIFY.0, 0);
    id.cdw10 = 1;
    id.prp1 = base + 2048;
    id.prp2 = base + 4096;
    assert!(admin.run(&sim, &hal, id).status.is_success());
    let mut b = [0u8; 2];
    peek(&data, 2048, &mut b);
    assert_eq!(u16::from_le_bytes(b), 0x1b36, "VID at the start");
    peek(&data, 4096, &mut b);
    assert_eq!(u16::from_le_bytes(b), 2500, "PSD0 (byte 2048 of the structure) in the second page");
    let mut model = [0u8; 8];
    peek(&data, 2048 + 24, &mut model);
    assert_eq!(&model, b"nvme-sim");

    let cases = [
        (base + 2, 0, (0, generic::PRP_OFFSET_INVALID)),
        (base + 2048, base + 4096 + 512, (0, generic::PRP_OFFSET_INVALID)),
        (0, 0, (0, generic::DATA_TRANSFER_ERROR)),
        (u64::MAX - 3, 0, (0, generic::DATA_TRANSFER_ERROR)),
        (base + 2048, base + 2 * 4096, (0, generic::DATA_TRANSFER_ERROR)),
        (IOVA_BASE + (1 << 40), 0, (0, generic::DATA_TRANSFER_ERROR)),
    ];
    for (prp1, prp2, want) in cases {
        id.prp1 = prp1;
        id.prp2 = prp2;
        assert_eq!(sc_of(&admin.run(&sim, &hal, id)), want, "prp1 {prp1:#x} prp2 {prp2:#x}");
    }
    // Freed memory is unmapped, like behind an IOMMU.
    // SAFETY: the device is not using the region (no command in flight).
    unsafe { hal.dma_free(data) };
    id.prp1 = base;
    id.prp2 = 0;
    assert_eq!(sc_of(&admin.run(&sim, &hal, id)), (0, generic::DATA_TRANSFER_ERROR));
    // Unknown CNS and opcode.
    let mut bad = SubmissionEntry::new(AdminOpcode::IDENTIFY.0, 0);
    bad.cdw10 = 0x55;
    assert_eq!(sc_of(&admin.run(&sim, &hal, bad)), (0, generic::INVALID_FIELD));
    assert_eq!(sc_of(&admin.run(&sim, &hal, SubmissionEntry::new(0xee, 0))), (0, generic::INVALID_OPCODE));
    assert_eq!(sim.stats().dma_faults, 0);
}

/// Creates I/O queue pair 1 with 16 entries.
fn io_ring(sim: &Sim, hal: &SimHal, admin: &mut Ring) -> Ring {
    let io = Ring::new(hal, 1, 16, 16);
    let mut c = SubmissionEntry::new(AdminOpcode::CREATE_IO_CQ.0, 0);
    c.prp1 = io.cq.daddr.0;
    c.cdw10 = (15 << 16) | 1;
    c.cdw11 = 1;
    assert!(admin.run(sim, hal, c).status.is_success());
    let mut c = SubmissionEntry::new(AdminOpcode::CREATE_IO_SQ.0, 0);
    c.prp1 = io.sq.daddr.0;
    c.cdw10 = (15 << 16) | 1;
    c.cdw11 = (1 << 16) | 1;
    assert!(admin.run(sim, hal, c).status.is_success());
    io
}

#[test]
fn chained_prp_lists_are_followed_in_order() {
    // 514 data pages: PRP1 plus 513 list entries, which take two list pages
    // (511 entries and a chain pointer, then 2 entries).
    const PAGES: usize = 514;
    let sim = Sim::new(SimConfig {
        mdts: 0,
        memory_bytes: 8 << 20,
        namespaces: vec![SimNamespace { nsid: 1, block_size: 512, blocks: 8192 }],
        ..manual()
    });
    let hal = sim.hal();
    let mut admin = Ring::new(&hal, 0, 16, 16);
    enable(&sim, &hal, &admin);
    let mut io = io_ring(&sim, &hal, &mut admin);
    let data = hal.dma_alloc(PAGES).unwrap();
    let lists = hal.dma_alloc(2).unwrap();
    // Transfer page k is data page perm(k): the device must follow the list,
    // not assume contiguity.
    let perm = |k: usize| if k == 0 { 0 } else { PAGES - k };
    for p in 0..PAGES {
        poke(&data, p * PAGE_SIZE, &[(p % 251) as u8; PAGE_SIZE]);
    }
    let page_addr = |p: usize| data.daddr.0 + (p * PAGE_SIZE) as u64;
    let mut entries: Vec<u64> = (1..PAGES).map(|k| page_addr(perm(k))).collect();
    entries.insert(511, lists.daddr.0 + PAGE_SIZE as u64); // chain pointer
    for (i, e) in entries.iter().enumerate() {
        poke(&lists, i * 8, &e.to_le_bytes());
    }
    let blocks = PAGES * PAGE_SIZE / 512;
    let mut w = SubmissionEntry::new(IoOpcode::WRITE.0, 1);
    w.prp1 = page_addr(0);
    w.prp2 = lists.daddr.0;
    w.cdw12 = blocks as u32 - 1;
    let e = io.run(&sim, &hal, w);
    assert!(e.status.is_success(), "{}", e.status);
    let stored = sim.read_blocks(1, 0, blocks as u64);
    for k in 0..PAGES {
        let want = (perm(k) % 251) as u8;
        assert!(stored[k * PAGE_SIZE..(k + 1) * PAGE_SIZE].iter().all(|&b| b == want), "page {k}");
    }
    // Read it back into zeroed pages through the same list.
    for p in 0..PAGES {
        poke(&data, p * PAGE_SIZE, &[0; PAGE_SIZE]);
    }
    let mut r = w;
    r.cdw0 = r.cdw0.with_opc(IoOpcode::READ.0);
    assert!(io.run(&sim, &hal, r).status.is_success());
    let mut page = vec![0u8; PAGE_SIZE];
    for k in [0, 1, 2, 510, 511, 512, 513] {
        peek(&data, perm(k) * PAGE_SIZE, &mut page);
        assert!(page.iter().all(|&b| b == (perm(k) % 251) as u8), "page {k}");
    }
    // A chain pointer or a list entry with an offset is refused.
    poke(&lists, 511 * 8, &(lists.daddr.0 + PAGE_SIZE as u64 + 8).to_le_bytes());
    assert_eq!(sc_of(&io.run(&sim, &hal, r)), (0, generic::PRP_OFFSET_INVALID));
    poke(&lists, 511 * 8, &(lists.daddr.0 + PAGE_SIZE as u64).to_le_bytes());
    poke(&lists, 8, &(page_addr(3) + 4).to_le_bytes());
    assert_eq!(sc_of(&io.run(&sim, &hal, r)), (0, generic::PRP_OFFSET_INVALID));
    // A list entry pointing nowhere.
    poke(&lists, 8, &(IOVA_BASE + (1 << 40)).to_le_bytes());
    assert_eq!(sc_of(&io.run(&sim, &hal, r)), (0, generic::DATA_TRANSFER_ERROR));
    // A list pointer that is not qword aligned.
    r.prp2 = lists.daddr.0 + 4;
    assert_eq!(sc_of(&io.run(&sim, &hal, r)), (0, generic::PRP_OFFSET_INVALID));
    // PSDT 10b (an SGL for metadata too) is not supported; an SGL whose
    // DPTR holds a descriptor of an unknown type is refused.
    let mut sgl = w;
    sgl.cdw0.set_psdt(2);
    assert_eq!(sc_of(&io.run(&sim, &hal, sgl)), (0, generic::INVALID_FIELD));
    sgl.cdw0.set_psdt(1);
    sgl.prp2 = 0xf0 << 56;
    assert_eq!(sc_of(&io.run(&sim, &hal, sgl)), (0, generic::SGL_DESCRIPTOR_TYPE_INVALID));
    // Deleting the CQ before its SQ is refused.
    let mut c = SubmissionEntry::new(AdminOpcode::DELETE_IO_CQ.0, 0);
    c.cdw10 = 1;
    assert_eq!(sc_of(&admin.run(&sim, &hal, c)), (1, command_specific::INVALID_QUEUE_DELETION));
}

#[test]
fn a_list_that_starts_mid_page_chains_at_the_page_end() {
    // PRP2 points 4080 bytes into its page: two entries fit before the chain
    // slot at the end of that page.
    let sim = Sim::new(manual());
    let hal = sim.hal();
    let mut admin = Ring::new(&hal, 0, 16, 16);
    enable(&sim, &hal, &admin);
    let mut io = io_ring(&sim, &hal, &mut admin);
    let data = hal.dma_alloc(5).unwrap();
    let lists = hal.dma_alloc(2).unwrap();
    for p in 0..5 {
        poke(&data, p * PAGE_SIZE, &[p as u8 + 1; PAGE_SIZE]);
    }
    let page = |p: usize| data.daddr.0 + (p * PAGE_SIZE) as u64;
    let second = lists.daddr.0 + PAGE_SIZE as u64;
    poke(&lists, 4080, &page(1).to_le_bytes());
    poke(&lists, 4088, &second.to_le_bytes());
    poke(&lists, PAGE_SIZE, &page(2).to_le_bytes());
    poke(&lists, PAGE_SIZE + 8, &page(3).to_le_bytes());
    let mut w = SubmissionEntry::new(IoOpcode::WRITE.0, 1);
    w.prp1 = page(0);
    w.prp2 = lists.daddr.0 + 4080;
    w.cdw12 = 4 * 8 - 1; // 16 KiB
    assert!(io.run(&sim, &hal, w).status.is_success());
    let stored = sim.read_blocks(1, 0, 32);
    for k in 0..4 {
        assert!(stored[k * PAGE_SIZE..(k + 1) * PAGE_SIZE].iter().all(|&b| b == k as u8 + 1), "page {k}");
    }
}

#[test]
fn a_recreated_queue_starts_afresh() {
    let sim = Sim::new(SimConfig { mqes: u16::MAX, ..manual() });
    let hal = sim.hal();
    let mut admin = Ring::new(&hal, 0, 16, 16);
    enable(&sim, &hal, &admin);
    // CQ 1 of 64 entries, SQ 1 of 64, a few reads, SQ 1 deleted while the
    // host has not released their completions, SQ 1 created again with 4.
    let cq = hal.dma_alloc(1).unwrap();
    let sq = hal.dma_alloc(1).unwrap();
    let data = hal.dma_alloc(1).unwrap();
    let create = |opc: AdminOpcode, prp1: u64, cdw10: u32, cdw11: u32| {
        let mut c = SubmissionEntry::new(opc.0, 0);
        c.prp1 = prp1;
        c.cdw10 = cdw10;
        c.cdw11 = cdw11;
        c
    };
    let run = |admin: &mut Ring, c| sc_of(&admin.run(&sim, &hal, c));
    assert_eq!(
        run(&mut admin, create(AdminOpcode::CREATE_IO_CQ, cq.daddr.0, (63 << 16) | 1, 1)).1,
        generic::SUCCESS
    );
    // 65536 entries: refused.
    let huge = create(AdminOpcode::CREATE_IO_SQ, sq.daddr.0, (0xffff << 16) | 1, (1 << 16) | 1);
    assert_eq!(run(&mut admin, huge), (1, command_specific::INVALID_QUEUE_SIZE));
    let sq64 = create(AdminOpcode::CREATE_IO_SQ, sq.daddr.0, (63 << 16) | 1, (1 << 16) | 1);
    assert_eq!(run(&mut admin, sq64).1, generic::SUCCESS);
    let mut io =
        Ring { qid: 1, sq, cq, sq_size: 64, cq_size: 64, tail: 0, head: 0, phase: true, next_cid: 0 };
    for _ in 0..40 {
        let mut r = SubmissionEntry::new(IoOpcode::READ.0, 1);
        r.prp1 = data.daddr.0;
        io.submit(&hal, r);
    }
    sim.advance(MS);
    let mut delete = SubmissionEntry::new(AdminOpcode::DELETE_IO_SQ.0, 0);
    delete.cdw10 = 1;
    assert_eq!(run(&mut admin, delete).1, generic::SUCCESS);
    let sq4 = create(AdminOpcode::CREATE_IO_SQ, sq.daddr.0, (3 << 16) | 1, (1 << 16) | 1);
    assert_eq!(run(&mut admin, sq4).1, generic::SUCCESS);
    io.sq_size = 4;
    io.tail = 0;
    // Releasing the old completions must not confuse the new queue.
    while io.reap().is_some() {}
    io.release(&hal);
    sim.inject(nvme_sim::FaultRule::once(Some(1), None, nvme_sim::Fault::ImpossibleSqHead));
    let mut r = SubmissionEntry::new(IoOpcode::READ.0, 1);
    r.prp1 = data.daddr.0;
    let e = io.run(&sim, &hal, r);
    assert!(e.status.is_success());
    assert!(e.sqhd >= 2, "head 0, tail 1: SQHD {} is possible", e.sqhd);
}

/// The simulator's check behind `SimStats::released_in_use`: freeing a live
/// ring, or the data page of a command still inside the device, is counted;
/// the same frees after a reset (CC.EN 1 -> 0) are not.
#[test]
fn releasing_memory_the_device_names_is_counted() {
    let sim = Sim::new(manual());
    let hal = sim.hal();
    let mut admin = Ring::new(&hal, 0, 16, 16);
    enable(&sim, &hal, &admin);
    // A read that never completes keeps naming its data page.
    let data = hal.dma_alloc(1).unwrap();
    sim.inject(nvme_sim::FaultRule::once(Some(0), None, nvme_sim::Fault::Drop));
    let mut identify = SubmissionEntry::new(AdminOpcode::IDENTIFY.0, 0);
    identify.prp1 = data.daddr.0;
    identify.cdw10 = 1;
    admin.submit(&hal, identify);
    sim.advance(MS);
    let spare = hal.dma_alloc(1).unwrap();
    // SAFETY: nothing names `spare`; the others are freed on purpose while
    // named (the simulator counts it; its arena outlives this test).
    unsafe {
        hal.dma_free(spare);
        assert_eq!(sim.stats().released_in_use, 0, "a page nothing names");
        hal.dma_free(data);
        assert_eq!(sim.stats().released_in_use, 1, "the data page of a command inside the device");
        hal.dma_free(admin.cq);
        assert_eq!(sim.stats().released_in_use, 2, "a live completion queue");
    }
    reg32(&hal, offset::CC, 0);
    sim.advance(MS);
    // SAFETY: the controller is disabled: it forgot its queues and commands.
    unsafe { hal.dma_free(admin.sq) };
    assert_eq!(sim.stats().released_in_use, 2, "after a reset nothing is named");
}
