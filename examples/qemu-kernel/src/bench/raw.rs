//! The raw side of the bench: the least work a polled driver could do, with
//! no code of `nvme-nostd` but its wire formats (`spec`).
//!
//! It brings the controller up by itself (disable, admin queue, enable,
//! Identify Namespace 1, Create I/O CQ and SQ 1 with polled completions), then
//! keeps `qd` 4 KiB reads in flight with PRP1 only: one SQ tail doorbell per
//! refill, one CQ head doorbell per pass over the posted completions. At the
//! end it disables the controller again, so that the driver starts from a
//! controller in the state it would find after firmware.
//!
//! Every page it uses comes from one allocation of the kernel's DMA pool:
//!
//! ```text
//! page 0      admin SQ          page 6     I/O CQ (256 x 16 bytes)
//! page 1      admin CQ          page 7     Identify Namespace data
//! pages 2-5   I/O SQ (256 x 64) pages 8..  one read buffer per command slot
//! ```

use super::{Count, Latency, Lbas, Meter, Plan, Target, Tick, MAX_QD, STALL};
use core::time::Duration;
use hal_baremetal::pci::MemoryBar;
use hal_baremetal::TscClock;
use hal_traits::{DmaRegion, PAGE_SIZE};
use nvme_conformance::{reason, Reason};
use nvme_nostd::spec::command::{AdminOpcode, CompletionEntry, IoOpcode, SubmissionEntry};
use nvme_nostd::spec::dwords::{
    CreateIoCqCdw11, CreateIoQueueCdw10, CreateIoSqCdw11, IdentifyCdw10, ReadWriteCdw12,
};
use nvme_nostd::spec::ids::Cns;
use nvme_nostd::spec::registers::{doorbell_offset, offset, Aqa, Cap, Cc, Csts};

const ADMIN_ENTRIES: u16 = 16;
const IO_ENTRIES: u16 = 256;
/// The I/O queue pair's identifier (SQ 1 uses CQ 1).
const QID: u16 = 1;
const NSID: u32 = 1;
const ADMIN_SQ_PAGE: usize = 0;
const ADMIN_CQ_PAGE: usize = 1;
const IO_SQ_PAGE: usize = 2;
const IO_CQ_PAGE: usize = IO_SQ_PAGE + IO_ENTRIES as usize * 64 / PAGE_SIZE;
const IDENTIFY_PAGE: usize = IO_CQ_PAGE + 1;
const FIRST_BUFFER_PAGE: usize = IDENTIFY_PAGE + 1;
/// How long an admin command, or the last reads after the measurement, may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

// The SQ never overflows: every command in it is one of at most MAX_QD in
// flight, and a ring of N entries holds N - 1.
const _: () = assert!(MAX_QD < IO_ENTRIES as usize);

/// BAR0, through volatile 32-bit accesses.
struct Regs {
    base: *mut u8,
}

impl Regs {
    /// Reads the register at byte `off`.
    fn read32(&self, off: usize) -> u32 {
        // SAFETY: `measure` built `self` from a mapped BAR0 and only passes
        // offsets of registers it checked lie inside it; aligned by design.
        unsafe { self.base.add(off).cast::<u32>().read_volatile() }
    }

    /// Writes the register at byte `off`.
    ///
    /// # Safety
    ///
    /// The write may start DMA (a doorbell, CC.EN): every address it makes the
    /// controller use lies in memory this module owns and lends to it.
    unsafe fn write32(&self, off: usize, value: u32) {
        // SAFETY: as in `read32` for the address; the caller vouches for what
        // the write makes the device do.
        unsafe { self.base.add(off).cast::<u32>().write_volatile(value) }
    }

    /// CAP (two 32-bit halves, which the specification allows).
    fn cap(&self) -> Cap {
        let lo = self.read32(offset::CAP) as u64;
        let hi = self.read32(offset::CAP + 4) as u64;
        Cap::from_bits(lo | hi << 32)
    }

    fn csts(&self) -> Csts {
        Csts::from_bits(self.read32(offset::CSTS))
    }
}

/// A submission queue and its completion queue, polled.
struct Queue {
    sq: *mut SubmissionEntry,
    cq: *const CompletionEntry,
    entries: u16,
    tail: u16,
    head: u16,
    phase: bool,
    sq_doorbell: usize,
    cq_doorbell: usize,
}

impl Queue {
    /// Rings of `entries` entries on pages `sq_page` and `cq_page` of `mem`.
    fn new(mem: &DmaRegion, sq_page: usize, cq_page: usize, entries: u16, qid: u16, dstrd: u8) -> Self {
        Queue {
            sq: page(mem, sq_page).cast(),
            cq: page(mem, cq_page).cast(),
            entries,
            tail: 0,
            head: 0,
            // The controller posts the first pass with phase 1 over zeroed memory.
            phase: true,
            sq_doorbell: doorbell_offset(qid, false, dstrd),
            cq_doorbell: doorbell_offset(qid, true, dstrd),
        }
    }

    /// Writes `cmd` at the tail; [`Queue::ring_sq`] tells the controller.
    fn push(&mut self, cmd: SubmissionEntry) {
        // SAFETY: tail < entries, and the ring's pages belong to this module.
        unsafe { self.sq.add(self.tail as usize).write_volatile(cmd) };
        self.tail = (self.tail + 1) % self.entries;
    }

    /// The SQ tail doorbell. No fence: x86 keeps stores in order and the
    /// compiler keeps volatile accesses in order, so the entries are visible
    /// before the doorbell is.
    fn ring_sq(&self, regs: &Regs) {
        // SAFETY: the entries up to the tail are commands of this module whose
        // PRPs point at its own buffers.
        unsafe { regs.write32(self.sq_doorbell, self.tail as u32) };
    }

    /// The entry at the head, if the controller has posted it.
    fn pop(&mut self) -> Option<CompletionEntry> {
        // SAFETY: head < entries, and the ring's pages belong to this module.
        let slot = unsafe { self.cq.add(self.head as usize) };
        // The status half-word holds the phase tag: read it alone first.
        // SAFETY: as above; `status` is a field of the entry at `slot`.
        let status = unsafe { core::ptr::addr_of!((*slot).status).read_volatile() };
        if status.p() != self.phase {
            return None;
        }
        // SAFETY: as above.
        let entry = unsafe { slot.read_volatile() };
        self.head += 1;
        if self.head == self.entries {
            self.head = 0;
            self.phase = !self.phase;
        }
        Some(entry)
    }

    /// The CQ head doorbell.
    fn ring_cq(&self, regs: &Regs) {
        // SAFETY: a head doorbell only hands consumed entries back.
        unsafe { regs.write32(self.cq_doorbell, self.head as u32) };
    }
}

/// The CPU address of page `i` of `mem`.
fn page(mem: &DmaRegion, i: usize) -> *mut u8 {
    mem.vaddr.as_ptr().wrapping_add(i * PAGE_SIZE)
}

/// The device address of page `i` of `mem`.
fn page_daddr(mem: &DmaRegion, i: usize) -> u64 {
    mem.daddr.0 + (i * PAGE_SIZE) as u64
}

/// Status Code and Status Code Type both zero.
fn succeeded(entry: &CompletionEntry) -> bool {
    entry.status.is_success()
}

/// Brings the controller up, runs the I/O loop at depth `qd`, and disables the
/// controller again.
pub fn measure(target: Target, qd: usize, write: bool, plan: &Plan) -> Result<Count, Reason> {
    let started = target.clock.now();
    // The raw loop is a driver too: it holds the device's claim while it runs.
    let _claim =
        hal_baremetal::claim(target.function).ok_or(reason!("controller claimed by another driver"))?;
    let MemoryBar { address, size } = target.bar0;
    // Offsets this module touches: registers below 0x40 and the doorbells of
    // queues 0 and 1.
    let regs = Regs { base: address as usize as *mut u8 };
    let cap = regs.cap();
    let dstrd = cap.dstrd();
    if doorbell_offset(QID, true, dstrd) as u64 + 4 > size {
        return Err(reason!("doorbells beyond BAR0 (DSTRD {dstrd})"));
    }
    if cap.mqes() < IO_ENTRIES - 1 || cap.css() & 1 == 0 || cap.mpsmin() != 0 {
        return Err(reason!("controller cannot do 256-entry NVM queues with 4 KiB pages"));
    }
    let ready_timeout = Duration::from_millis(500 * cap.to().max(1) as u64);
    let mem = target.pool.alloc(FIRST_BUFFER_PAGE + qd).map_err(|e| reason!("DMA pool: {e}"))?;
    let result = disable(&regs, target, ready_timeout)
        .and_then(|()| enabled(&regs, &mem, target, (qd, write, started), plan, ready_timeout));
    // Only a controller that is disabled is sure not to touch the memory.
    match disable(&regs, target, ready_timeout) {
        // SAFETY: the controller is disabled, so it no longer touches the
        // memory, and this module does not use it any more.
        Ok(()) => unsafe { target.pool.free(mem) },
        Err(e) => return Err(reason!("{e} (DMA memory leaked)")),
    }
    result
}

/// Clears CC.EN and waits for CSTS.RDY=0.
fn disable(regs: &Regs, target: Target, timeout: Duration) -> Result<(), Reason> {
    let cc = Cc::from_bits(regs.read32(offset::CC));
    if cc.en() {
        // SAFETY: disabling stops the controller's DMA; it starts none.
        unsafe { regs.write32(offset::CC, cc.with_en(false).into_bits()) };
    }
    wait_ready(regs, target, false, timeout)
}

/// Waits for CSTS.RDY to equal `ready`.
fn wait_ready(regs: &Regs, target: Target, ready: bool, timeout: Duration) -> Result<(), Reason> {
    let deadline = target.clock.now() + timeout;
    while regs.csts().rdy() != ready {
        if ready && regs.csts().cfs() {
            return Err(reason!("controller fatal status during enable"));
        }
        if target.clock.now() > deadline {
            return Err(reason!("CSTS.RDY did not become {}", ready as u8));
        }
    }
    Ok(())
}

/// From a disabled controller: admin queue, enable, queues, I/O loop.
fn enabled(
    regs: &Regs,
    mem: &DmaRegion,
    target: Target,
    (qd, write, started): (usize, bool, Duration),
    plan: &Plan,
    ready_timeout: Duration,
) -> Result<Count, Reason> {
    let dstrd = regs.cap().dstrd();
    let mut admin = Queue::new(mem, ADMIN_SQ_PAGE, ADMIN_CQ_PAGE, ADMIN_ENTRIES, 0, dstrd);
    let sizes = Aqa::new().with_asqs(ADMIN_ENTRIES - 1).with_acqs(ADMIN_ENTRIES - 1);
    let (asq, acq) = (page_daddr(mem, ADMIN_SQ_PAGE), page_daddr(mem, ADMIN_CQ_PAGE));
    let cc = Cc::new().with_iosqes(6).with_iocqes(4).with_en(true);
    // SAFETY: the admin rings are zeroed pool pages this module owns until the
    // controller is disabled again.
    unsafe {
        regs.write32(offset::AQA, sizes.into_bits());
        regs.write32(offset::ASQ, asq as u32);
        regs.write32(offset::ASQ + 4, (asq >> 32) as u32);
        regs.write32(offset::ACQ, acq as u32);
        regs.write32(offset::ACQ + 4, (acq >> 32) as u32);
        regs.write32(offset::CC, cc.into_bits());
    }
    wait_ready(regs, target, true, ready_timeout)?;

    let mut identify = SubmissionEntry::new(AdminOpcode::IDENTIFY.0, NSID);
    identify.prp1 = page_daddr(mem, IDENTIFY_PAGE);
    identify.cdw10 = IdentifyCdw10::new().with_cns(Cns::NAMESPACE).into_bits();
    admin_command(regs, &mut admin, identify, target)?;
    let (blocks, block_size) = namespace_size(mem);
    let mut lbas = Lbas::new(plan.seed, blocks, block_size)?;

    let mut create_cq = SubmissionEntry::new(AdminOpcode::CREATE_IO_CQ.0, 0);
    create_cq.prp1 = page_daddr(mem, IO_CQ_PAGE);
    create_cq.cdw10 = CreateIoQueueCdw10::new().with_qid(QID).with_qsize(IO_ENTRIES - 1).into_bits();
    create_cq.cdw11 = CreateIoCqCdw11::new().with_pc(true).into_bits(); // interrupts off
    admin_command(regs, &mut admin, create_cq, target)?;
    let mut create_sq = SubmissionEntry::new(AdminOpcode::CREATE_IO_SQ.0, 0);
    create_sq.prp1 = page_daddr(mem, IO_SQ_PAGE);
    create_sq.cdw10 = CreateIoQueueCdw10::new().with_qid(QID).with_qsize(IO_ENTRIES - 1).into_bits();
    create_sq.cdw11 = CreateIoSqCdw11::new().with_pc(true).with_cqid(QID).into_bits();
    admin_command(regs, &mut admin, create_sq, target)?;

    let mut io = Queue::new(mem, IO_SQ_PAGE, IO_CQ_PAGE, IO_ENTRIES, QID, dstrd);
    io_loop(regs, &mut io, mem, target, (qd, write, started), plan, &mut lbas)
}

/// Submits one admin command and polls for its completion.
fn admin_command(
    regs: &Regs,
    admin: &mut Queue,
    mut cmd: SubmissionEntry,
    target: Target,
) -> Result<(), Reason> {
    cmd.cdw0.set_cid(admin.tail);
    admin.push(cmd);
    admin.ring_sq(regs);
    let deadline = target.clock.now() + COMMAND_TIMEOUT;
    loop {
        if let Some(entry) = admin.pop() {
            admin.ring_cq(regs);
            return match succeeded(&entry) {
                true => Ok(()),
                false => Err(reason!("admin opcode {:#x}: {}", cmd.cdw0.opc(), entry.status.without_phase())),
            };
        }
        if target.clock.now() > deadline {
            return Err(reason!("admin opcode {:#x} timed out", cmd.cdw0.opc()));
        }
    }
}

/// NSZE and the block size of the current LBA format, from the Identify
/// Namespace data (NVM Command Set 1.0, section 4.1.5.1: NSZE at byte 0,
/// FLBAS at 26, LBA formats from 128, LBADS in bits 23:16 of each).
fn namespace_size(mem: &DmaRegion) -> (u64, u32) {
    let data = page(mem, IDENTIFY_PAGE);
    // SAFETY: the Identify page belongs to this module and the command that
    // filled it has completed; the offsets lie inside the page, naturally
    // aligned.
    let (nsze, lbaf) = unsafe {
        let flbas = data.add(26).read_volatile();
        let format = (flbas & 0xf) as usize;
        (data.cast::<u64>().read_volatile(), data.add(128 + 4 * format).cast::<u32>().read_volatile())
    };
    let lbads = (lbaf >> 16) & 0xff;
    // A block size outside 512 B to 4 KiB is reported as 0, which `Lbas` refuses.
    (nsze, if (9..=12).contains(&lbads) { 1 << lbads } else { 0 })
}

/// Keeps `qd` reads in flight until the meter says the measurement is over,
/// then waits for the last ones.
fn io_loop(
    regs: &Regs,
    io: &mut Queue,
    mem: &DmaRegion,
    target: Target,
    (qd, write, started): (usize, bool, Duration),
    plan: &Plan,
    lbas: &mut Lbas,
) -> Result<Count, Reason> {
    // Command identifier = buffer index; these are the buffers not in flight.
    let mut idle: heapless::Vec<u16, MAX_QD> = (0..qd as u16).collect();
    let cdw12 = ReadWriteCdw12::new().with_nlb((lbas.blocks_per_io() - 1) as u16).into_bits();
    let mut meter = Meter::new(target.clock, plan, started);
    let opcode = if write { IoOpcode::WRITE } else { IoOpcode::READ };
    let mut completed = 0u64;
    // At QD 1: when each command went out (TSC ticks), for its latency.
    let mut sent = [0u64; MAX_QD];
    let mut latency = Latency::new();
    let clock = target.clock;
    let result = loop {
        if !idle.is_empty() {
            while let Some(cid) = idle.pop() {
                if qd == 1 {
                    sent[cid as usize] = clock.ticks();
                }
                let lba = lbas.next_lba();
                let mut cmd = SubmissionEntry::new(opcode.0, NSID);
                cmd.cdw0.set_cid(cid);
                cmd.prp1 = page_daddr(mem, FIRST_BUFFER_PAGE + cid as usize);
                cmd.cdw10 = lba as u32;
                cmd.cdw11 = (lba >> 32) as u32;
                cmd.cdw12 = cdw12;
                io.push(cmd);
            }
            io.ring_sq(regs);
        }
        let timed = (qd == 1 && meter.measuring()).then_some((&mut latency, &sent, clock));
        match reap(regs, io, &mut idle, qd, timed) {
            Ok(n) => completed += n,
            Err(e) => break Err(e),
        }
        match meter.tick(completed) {
            Tick::Run => {}
            Tick::Done(count) => break Ok(Count { latency: latency.summary(), ..count }),
            Tick::Stalled => break Err(reason!("no I/O completed for {STALL:?}")),
        }
    };
    // Let the reads still in flight finish (not counted) before the
    // controller is disabled.
    let deadline = target.clock.now() + COMMAND_TIMEOUT;
    while idle.len() < qd {
        if reap(regs, io, &mut idle, qd, None).is_err() || target.clock.now() > deadline {
            return result.and(Err(reason!("reads did not finish after the measurement")));
        }
    }
    result
}

/// Takes every posted completion, ringing the CQ head doorbell once if there
/// was any. Returns how many.
fn reap(
    regs: &Regs,
    io: &mut Queue,
    idle: &mut heapless::Vec<u16, MAX_QD>,
    qd: usize,
    mut timed: Option<(&mut Latency, &[u64; MAX_QD], &TscClock)>,
) -> Result<u64, Reason> {
    let mut n = 0;
    let mut bad = None;
    while let Some(entry) = io.pop() {
        n += 1;
        if let Some((latency, sent, clock)) = timed.as_mut() {
            let at = sent.get(entry.cid as usize).copied().unwrap_or(0);
            latency.record_ticks(clock, clock.ticks().saturating_sub(at));
        }
        if entry.cid as usize >= qd || idle.push(entry.cid).is_err() {
            bad.get_or_insert(reason!("completion for CID {} not in flight", entry.cid));
        } else if !succeeded(&entry) {
            bad.get_or_insert(reason!("I/O failed: {}", entry.status.without_phase()));
        }
    }
    if n > 0 {
        io.ring_cq(regs);
    }
    bad.map_or(Ok(n), Err)
}
