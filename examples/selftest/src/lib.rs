//! The NVMe self-test: every check that a back-end must pass, written once over
//! the [`Hal`] so that the bare-metal kernel, the simulator and the VFIO tools run
//! the same code.
//!
//! For each controller: attach and identify, then for each active namespace:
//! write / read / verify at several sizes (one block, several pages, a PRP list
//! from an unaligned buffer, the largest transfer allowed), caller errors
//! rejected, 32 or more commands in flight, the request pool exhausted and
//! refilled, queue phases wrapped, two queue pairs at once. Blocks it overwrites
//! are saved first and written back at the end.
//!
//! Each check prints `test <name> ... ok`, `... FAILED: <reason>` or
//! `... skipped: <reason>`; [`Totals::summary`] prints the closing
//! `N passed, N failed, N skipped`.
#![no_std]
#![deny(missing_docs)]

pub mod pattern;
pub mod report;

use core::time::Duration;
use nvme_nostd::hal_traits::Hal;
use nvme_nostd::spec::identify::as_str;
use nvme_nostd::{Controller, ControllerOptions, DmaBuffer, Error, IoQueuePair, Namespace, QpairOptions};
pub use report::{Outcome, Reason, Report, Totals};

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Corrupts one byte of the first read-back before it is verified, to
    /// prove that a mismatch fails the run.
    pub plant_mismatch: bool,
    /// The largest transfer to try, in bytes (MDTS may lower it).
    pub max_transfer: usize,
    /// How long one batch of I/O may take.
    pub io_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { plant_mismatch: false, max_transfer: 4 << 20, io_timeout: Duration::from_secs(30) }
    }
}

/// Request slots of the main queue pair.
const SLOTS: usize = 64;
/// Commands the in-flight check keeps outstanding at once (at least).
const IN_FLIGHT: usize = 32;
/// Most namespaces tested per controller.
const MAX_NAMESPACES: usize = 64;

type Buf<'a, H> = DmaBuffer<'a, H>;
type Qp<'a, H, const N: usize> = IoQueuePair<'a, H, DmaBuffer<'a, H>, u64, N>;

/// Attaches the controller behind `hal` and runs every check on it, adding the
/// outcomes to `totals`. `label` names the controller in the output.
pub fn run_controller<H: Hal>(
    hal: H,
    label: &str,
    options: &Options,
    out: &mut dyn Report,
    totals: &mut Totals,
) {
    let ctrlr = match Controller::new(hal, ControllerOptions { io_queues: 4, ..Default::default() }) {
        Ok(c) => {
            totals.record(out, format_args!("{label} attach"), Outcome::Ok);
            c
        }
        Err(e) => {
            totals.record(out, format_args!("{label} attach"), Outcome::Failed(reason!("{e}")));
            return;
        }
    };
    let id = ctrlr.identify();
    let vs = ctrlr.version();
    out.line(format_args!(
        "{label}: model \"{}\" serial \"{}\" firmware \"{}\" NVMe {}.{}.{} vid {:#06x}",
        as_str(id.model()),
        as_str(id.serial()),
        as_str(id.firmware()),
        vs.mjr(),
        vs.mnr(),
        vs.ter(),
        id.vid
    ));
    let mdts = match ctrlr.max_transfer_bytes() {
        Some(b) => reason!("{} KiB", b / 1024),
        None => reason!("no limit"),
    };
    out.line(format_args!(
        "{label}: MDTS {} ({}), NN {}, I/O queue pairs granted {}, CAP.MQES {}, CAP.TO {} ms",
        id.mdts,
        mdts,
        id.nn,
        ctrlr.io_queues(),
        ctrlr.cap().mqes(),
        ctrlr.cap().to() as u32 * 500
    ));

    totals.record(out, format_args!("{label} admin queue phase wrap"), check_admin_wrap(&ctrlr).into());

    let mut nsids: heapless::Vec<u32, MAX_NAMESPACES> = heapless::Vec::new();
    let listed = list_namespaces(&ctrlr, &mut nsids);
    totals.record(out, format_args!("{label} active namespace list"), listed.into());
    for nsid in nsids {
        run_namespace(&ctrlr, nsid, label, options, out, totals);
    }
}

fn check_admin_wrap<H: Hal>(ctrlr: &Controller<H>) -> Result<(), Reason> {
    // 100 commands through a 32-entry admin queue wrap its phase three times.
    let first = ctrlr.active_namespaces(0).map_err(|e| reason!("identify: {e}"))?;
    for i in 0..100 {
        let again = ctrlr.active_namespaces(0).map_err(|e| reason!("identify #{i}: {e}"))?;
        if again.0 != first.0 {
            return Err(reason!("active namespace list changed at #{i}"));
        }
    }
    Ok(())
}

fn list_namespaces<H: Hal>(
    ctrlr: &Controller<H>,
    nsids: &mut heapless::Vec<u32, MAX_NAMESPACES>,
) -> Result<(), Reason> {
    let mut after = 0;
    loop {
        let list = ctrlr.active_namespaces(after).map_err(|e| reason!("{e}"))?;
        let mut count = 0;
        for nsid in list.iter() {
            if nsid <= after {
                return Err(reason!("list not increasing: {nsid} after {after}"));
            }
            after = nsid;
            count += 1;
            if nsids.push(nsid).is_err() {
                return Ok(());
            }
        }
        if count < 1024 {
            return Ok(());
        }
    }
}

/// Everything a namespace check needs.
struct Ctx<'a, H: Hal> {
    ctrlr: &'a Controller<H>,
    ns: Namespace,
    bs: usize,
    timeout: Duration,
}

impl<'a, H: Hal> Ctx<'a, H> {
    fn buffer(&self, len: usize) -> Result<Buf<'a, H>, Reason> {
        DmaBuffer::new(self.ctrlr.hal(), len).map_err(|e| reason!("DMA allocation of {len} bytes: {e}"))
    }

    fn blocks(&self, bytes: usize) -> u32 {
        (bytes / self.bs) as u32
    }

    /// Submits one read or write and waits for it; the buffer comes back.
    fn sync<const N: usize>(
        &self,
        qp: &mut Qp<'a, H, N>,
        write: bool,
        lba: u64,
        buf: Buf<'a, H>,
    ) -> Result<Buf<'a, H>, Reason> {
        let blocks = self.blocks(buf.len());
        let submitted = if write {
            qp.write(&self.ns, lba, blocks, buf, lba)
        } else {
            qp.read(&self.ns, lba, blocks, buf, lba)
        };
        let cid = submitted.map_err(|e| reason!("submit {} lba {lba}: {}", op(write), e.error))?;
        let mut done = None;
        let deadline = self.ctrlr.hal().now() + self.timeout;
        while done.is_none() {
            qp.poll(0, |c| {
                if c.cid == cid {
                    done = Some(c);
                }
            });
            if done.is_none() && self.ctrlr.hal().now() > deadline {
                return Err(reason!("{} lba {lba}: no completion within {:?}", op(write), self.timeout));
            }
        }
        let c = done.ok_or_else(|| reason!("lost completion"))?;
        c.result().map_err(|e| reason!("{} lba {lba}: {e}", op(write)))?;
        c.buffer.ok_or_else(|| reason!("completion without its buffer"))
    }

    /// Reads or writes `buf` (any length) in chunks of at most `chunk` bytes.
    fn chunked<const N: usize>(
        &self,
        qp: &mut Qp<'a, H, N>,
        write: bool,
        lba: u64,
        mut buf: Buf<'a, H>,
        chunk: usize,
    ) -> Result<Buf<'a, H>, Reason> {
        let total = buf.len();
        let mut offset = 0;
        while offset < total {
            let len = chunk.min(total - offset);
            buf.set_window(offset, len);
            buf = self.sync(qp, write, lba + (offset / self.bs) as u64, buf)?;
            offset += len;
        }
        buf.set_window(0, total);
        Ok(buf)
    }

    /// Writes the pattern of `seed` at `lba` from a buffer of `len` bytes placed
    /// `offset` bytes into its first page, reads it back into another such
    /// buffer, and verifies it.
    fn write_read_verify<const N: usize>(
        &self,
        qp: &mut Qp<'a, H, N>,
        lba: u64,
        len: usize,
        offset: usize,
        seed: u64,
        plant: bool,
    ) -> Result<(), Reason> {
        let mut wbuf = self.buffer(len + offset)?;
        let mut rbuf = self.buffer(len + offset)?;
        wbuf.set_window(offset, len);
        rbuf.set_window(offset, len);
        pattern::fill(&mut wbuf, seed, lba, self.bs);
        // Poison the read buffer so that a read that moves nothing shows.
        rbuf.fill(0xa5);
        self.sync(qp, true, lba, wbuf)?;
        let mut rbuf = self.sync(qp, false, lba, rbuf)?;
        if plant {
            rbuf[len / 2] ^= 0x01;
        }
        match pattern::first_mismatch(&rbuf, seed, lba, self.bs) {
            None => Ok(()),
            Some(at) => Err(reason!("verify mismatch at byte {at} of {len} (lba {lba})")),
        }
    }
}

fn op(write: bool) -> &'static str {
    if write {
        "write"
    } else {
        "read"
    }
}

fn run_namespace<H: Hal>(
    ctrlr: &Controller<H>,
    nsid: u32,
    label: &str,
    options: &Options,
    out: &mut dyn Report,
    t: &mut Totals,
) {
    let ns = match ctrlr.namespace(nsid) {
        Ok(ns) => {
            t.record(out, format_args!("{label} ns{nsid} identify"), Outcome::Ok);
            ns
        }
        Err(e) => {
            t.record(out, format_args!("{label} ns{nsid} identify"), Outcome::Failed(reason!("{e}")));
            return;
        }
    };
    out.line(format_args!(
        "{label} ns{nsid}: {} blocks of {} bytes ({} MiB), metadata {} bytes, protection type {}",
        ns.blocks(),
        ns.block_size(),
        ns.size_bytes() >> 20,
        ns.metadata_size(),
        ns.pi_type()
    ));
    if let Some(why) = ns.unsupported_reason() {
        t.record(out, format_args!("{label} ns{nsid} I/O"), Outcome::Skipped(reason!("{why}")));
        return;
    }
    let cx = Ctx { ctrlr, bs: ns.block_size() as usize, ns, timeout: options.io_timeout };
    let name = |check: &str| -> Reason { reason!("{label} ns{nsid} {check}") };

    let mut qp: Qp<'_, H, SLOTS> = match ctrlr
        .create_io_qpair(QpairOptions { max_transfer_bytes: options.max_transfer, ..Default::default() })
    {
        Ok(q) => q,
        Err(e) => {
            t.record(out, format_args!("{}", name("create I/O queue pair")), Outcome::Failed(reason!("{e}")));
            return;
        }
    };
    // The largest transfer: the queue pair's limit (MDTS and our cap), whole
    // blocks, no larger than the namespace.
    let ns_bytes = usize::try_from(ns.size_bytes()).unwrap_or(usize::MAX);
    let largest = qp.max_transfer_bytes().min(ns_bytes) / cx.bs * cx.bs;
    // The blocks the checks overwrite, saved first and restored last.
    let window = (largest / cx.bs).max(SLOTS + 1).min(ns.blocks() as usize);
    let window_bytes = window * cx.bs;

    let saved = cx.buffer(window_bytes).and_then(|b| cx.chunked(&mut qp, false, 0, b, largest));
    let saved = match saved {
        Ok(b) => {
            t.record(out, format_args!("{} ({} blocks)", name("save blocks"), window), Outcome::Ok);
            b
        }
        Err(why) => {
            // Without a copy, writing would destroy data: stop here.
            t.record(out, format_args!("{}", name("save blocks")), Outcome::Failed(why));
            return;
        }
    };

    let mut seed = 0x5eed_0000_u64 ^ ((nsid as u64) << 32);
    let mut next_seed = || {
        seed += 1;
        seed
    };

    // One block, with the planted mismatch when asked.
    let r = cx.write_read_verify(&mut qp, 0, cx.bs, 0, next_seed(), options.plant_mismatch);
    t.record(out, format_args!("{}", name("write/read/verify 1 block")), r.into());

    // Several pages: 16 KiB.
    let len = (16 << 10).max(cx.bs);
    let outcome = if len <= largest {
        cx.write_read_verify(&mut qp, 1, len, 0, next_seed(), false).into()
    } else {
        Outcome::Skipped(reason!("largest transfer is {largest} bytes"))
    };
    t.record(out, format_args!("{} ({len} bytes)", name("write/read/verify several pages")), outcome);

    // A PRP list: an unaligned buffer that spans three pages or more.
    let len = largest.min(64 << 10) / cx.bs * cx.bs;
    let outcome = if len >= 8192 {
        cx.write_read_verify(&mut qp, 2, len, 512, next_seed(), false).into()
    } else {
        Outcome::Skipped(reason!("largest transfer ({largest} bytes) cannot span three pages"))
    };
    t.record(
        out,
        format_args!("{} ({len} bytes at page offset 512)", name("write/read/verify PRP list")),
        outcome,
    );

    // The largest transfer allowed.
    let r = cx.write_read_verify(&mut qp, 0, largest, 0, next_seed(), false);
    t.record(out, format_args!("{} ({largest} bytes)", name("write/read/verify largest transfer")), r.into());

    t.record(
        out,
        format_args!("{}", name("oversized transfer rejected")),
        check_oversize(&cx, &mut qp).into(),
    );
    t.record(
        out,
        format_args!("{}", name("caller errors rejected")),
        check_caller_errors(&cx, &mut qp).into(),
    );

    let outcome = if window >= IN_FLIGHT {
        check_in_flight(&cx, &mut qp, next_seed()).into()
    } else {
        Outcome::Skipped(reason!("namespace has only {window} blocks"))
    };
    t.record(out, format_args!("{} ({} commands)", name("commands in flight"), SLOTS.min(window)), outcome);

    t.record(
        out,
        format_args!("{} ({SLOTS} slots)", name("request pool exhausted and refilled")),
        check_exhaustion(&cx, &mut qp).into(),
    );
    drop(qp);

    t.record(out, format_args!("{}", name("I/O queue phase wrap")), check_wrap(&cx, next_seed()).into());

    let outcome = if ctrlr.io_queues() < 2 {
        Outcome::Skipped(reason!("controller grants {} I/O queue pair", ctrlr.io_queues()))
    } else if window < 32 {
        Outcome::Skipped(reason!("namespace has only {window} blocks"))
    } else {
        check_two_queues(&cx, next_seed()).into()
    };
    t.record(out, format_args!("{}", name("two I/O queue pairs together")), outcome);

    t.record(
        out,
        format_args!("{}", name("queue pair dropped with requests in flight")),
        check_drop_in_flight(&cx).into(),
    );

    t.record(out, format_args!("{}", name("restore saved blocks")), restore(&cx, saved, largest).into());
}

/// A transfer over the limit is refused with `TransferTooLarge` and nothing is
/// submitted.
fn check_oversize<'a, H: Hal>(cx: &Ctx<'a, H>, qp: &mut Qp<'a, H, SLOTS>) -> Result<(), Reason> {
    let max = qp.max_transfer_bytes();
    let len = (max / cx.bs + 1) * cx.bs;
    if (len / cx.bs) as u64 > cx.ns.blocks() || len / cx.bs > 0x1_0000 {
        return Ok(());
    }
    let buf = cx.buffer(len)?;
    let before = qp.stats().submitted;
    match qp.read(&cx.ns, 0, cx.blocks(len), buf, 0) {
        Ok(_) => Err(reason!("a {len}-byte read was accepted over the {max}-byte limit")),
        Err(e) if matches!(e.error, Error::TransferTooLarge { .. }) && e.buffer.len() == len => {
            if qp.stats().submitted != before || qp.in_flight() != 0 {
                Err(reason!("rejected request reached the queue"))
            } else {
                Ok(())
            }
        }
        Err(e) => Err(reason!("wrong error: {}", e.error)),
    }
}

/// Bad input from the caller gets a clear error and nothing is submitted.
fn check_caller_errors<'a, H: Hal>(cx: &Ctx<'a, H>, qp: &mut Qp<'a, H, SLOTS>) -> Result<(), Reason> {
    let before = qp.stats().submitted;
    let blocks = cx.ns.blocks();
    // One block plus room to start it 2 bytes in.
    let buf = cx.buffer(cx.bs + 4)?;
    let e =
        qp.read(&cx.ns, blocks, 1, buf, 0).err().ok_or_else(|| reason!("read beyond the end accepted"))?;
    if e.error != Error::LbaOutOfRange {
        return Err(reason!("beyond the end: {}", e.error));
    }
    let e = qp.read(&cx.ns, 0, 2, e.buffer, 0).err().ok_or_else(|| reason!("short buffer accepted"))?;
    if !matches!(e.error, Error::BufferTooSmall { .. }) {
        return Err(reason!("short buffer: {}", e.error));
    }
    let e = qp.write(&cx.ns, 0, 0, e.buffer, 0).err().ok_or_else(|| reason!("zero blocks accepted"))?;
    if !matches!(e.error, Error::InvalidArgument(_)) {
        return Err(reason!("zero blocks: {}", e.error));
    }
    let mut buf = e.buffer;
    if !buf.set_window(2, cx.bs) {
        return Err(reason!("cannot place a buffer at offset 2"));
    }
    let e = qp.read(&cx.ns, 0, 1, buf, 0).err().ok_or_else(|| reason!("misaligned buffer accepted"))?;
    if e.error != Error::BufferMisaligned {
        return Err(reason!("misaligned buffer: {}", e.error));
    }
    if qp.stats().submitted != before || qp.in_flight() != 0 {
        return Err(reason!("a rejected request reached the queue"));
    }
    Ok(())
}

/// Waits until `qp` has nothing in flight, handing each completion to `f`.
fn drain<'a, H: Hal, const N: usize>(
    cx: &Ctx<'a, H>,
    qp: &mut Qp<'a, H, N>,
    mut f: impl FnMut(nvme_nostd::Completion<Buf<'a, H>, u64>) -> Result<(), Reason>,
) -> Result<(), Reason> {
    let deadline = cx.ctrlr.hal().now() + cx.timeout;
    let mut first_error = Ok(());
    while qp.in_flight() > 0 {
        qp.poll(0, |c| {
            let r = f(c);
            if first_error.is_ok() {
                first_error = r;
            }
        });
        if cx.ctrlr.hal().now() > deadline {
            return Err(reason!("{} commands never completed", qp.in_flight()));
        }
    }
    first_error
}

/// At least 32 writes, then as many reads, outstanding at once; each verified.
fn check_in_flight<'a, H: Hal>(cx: &Ctx<'a, H>, qp: &mut Qp<'a, H, SLOTS>, seed: u64) -> Result<(), Reason> {
    let count = SLOTS.min(cx.ns.blocks() as usize);
    let mut bufs: heapless::Vec<Buf<'a, H>, SLOTS> = heapless::Vec::new();
    for lba in 0..count as u64 {
        let mut b = cx.buffer(cx.bs)?;
        pattern::fill(&mut b, seed, lba, cx.bs);
        let _ = bufs.push(b);
    }
    let mut peak = 0;
    while let Some(b) = bufs.pop() {
        let lba = bufs.len() as u64;
        qp.write(&cx.ns, lba, 1, b, lba).map_err(|e| reason!("write {lba}: {}", e.error))?;
        peak = peak.max(qp.in_flight());
    }
    drain(cx, qp, |c| {
        c.result().map_err(|e| reason!("write {}: {e}", c.context))?;
        if let Some(mut b) = c.buffer {
            b.fill(0xa5);
            let _ = bufs.push(b);
        }
        Ok(())
    })?;
    let mut lba = 0u64;
    while let Some(b) = bufs.pop() {
        qp.read(&cx.ns, lba, 1, b, lba).map_err(|e| reason!("read {lba}: {}", e.error))?;
        lba += 1;
        peak = peak.max(qp.in_flight());
    }
    let bs = cx.bs;
    drain(cx, qp, |c| {
        c.result().map_err(|e| reason!("read {}: {e}", c.context))?;
        let b = c.buffer.ok_or_else(|| reason!("no buffer"))?;
        match pattern::first_mismatch(&b, seed, c.context, bs) {
            Some(at) => Err(reason!("lba {} mismatch at byte {at}", c.context)),
            None => Ok(()),
        }
    })?;
    if peak < IN_FLIGHT.min(count) {
        return Err(reason!("only {peak} commands were in flight at once"));
    }
    Ok(())
}

/// Submitting into a full pool returns `QueueFull` with the buffer, and the pool
/// takes requests again once completions are polled.
fn check_exhaustion<'a, H: Hal>(cx: &Ctx<'a, H>, qp: &mut Qp<'a, H, SLOTS>) -> Result<(), Reason> {
    let mut accepted = 0;
    let spare = loop {
        let b = cx.buffer(cx.bs)?;
        match qp.read(&cx.ns, 0, 1, b, 0) {
            Ok(_) => accepted += 1,
            Err(e) if e.error == Error::QueueFull => break e.buffer,
            Err(e) => return Err(reason!("after {accepted}: {}", e.error)),
        }
        if accepted > SLOTS {
            return Err(reason!("more than {SLOTS} requests accepted"));
        }
    };
    if accepted != SLOTS {
        return Err(reason!("pool full after {accepted} of {SLOTS}"));
    }
    drain(cx, qp, |c| c.result().map_err(|e| reason!("{e}")))?;
    let b = cx.sync(qp, false, 0, spare)?;
    drop(b);
    Ok(())
}

/// A small queue pair (16 entries) runs eight times its size in reads, so both
/// of its rings wrap and flip phase several times; every read is verified.
fn check_wrap<H: Hal>(cx: &Ctx<'_, H>, seed: u64) -> Result<(), Reason> {
    const ENTRIES: u16 = 16;
    const N: usize = ENTRIES as usize - 1;
    let mut qp: Qp<'_, H, N> = cx
        .ctrlr
        .create_io_qpair(QpairOptions {
            entries: ENTRIES,
            max_transfer_bytes: 64 << 10,
            ..Default::default()
        })
        .map_err(|e| reason!("create: {e}"))?;
    let span = (N as u64).min(cx.ns.blocks());
    for lba in 0..span {
        let mut b = cx.buffer(cx.bs)?;
        pattern::fill(&mut b, seed, lba, cx.bs);
        cx.sync(&mut qp, true, lba, b)?;
    }
    let total = 8 * ENTRIES as u64;
    let mut bufs: heapless::Vec<Buf<'_, H>, N> = heapless::Vec::new();
    for _ in 0..N {
        let _ = bufs.push(cx.buffer(cx.bs)?);
    }
    let (mut issued, mut verified) = (0u64, 0u64);
    let deadline = cx.ctrlr.hal().now() + cx.timeout;
    let bs = cx.bs;
    let mut failure = None;
    while verified < total {
        while issued < total {
            let Some(b) = bufs.pop() else { break };
            let lba = issued % span;
            if let Err(e) = qp.read(&cx.ns, lba, 1, b, lba) {
                return Err(reason!("read #{issued}: {}", e.error));
            }
            issued += 1;
        }
        qp.poll(0, |c| {
            verified += 1;
            if let Err(e) = c.result() {
                failure.get_or_insert(reason!("read {}: {e}", c.context));
            }
            if let Some(mut b) = c.buffer {
                if let Some(at) = pattern::first_mismatch(&b, seed, c.context, bs) {
                    failure.get_or_insert(reason!("lba {} mismatch at byte {at}", c.context));
                }
                b.fill(0);
                let _ = bufs.push(b);
            }
        });
        if let Some(f) = failure.take() {
            return Err(f);
        }
        if cx.ctrlr.hal().now() > deadline {
            return Err(reason!("stalled after {verified} of {total} completions"));
        }
    }
    let stats = qp.stats();
    if stats.completed < total + span || stats.bogus_completions != 0 {
        return Err(reason!("counters off: {stats:?}"));
    }
    Ok(())
}

/// Two queue pairs (32 entries each) at once: in each round, both write half of
/// a range while both are in flight, then each reads back what the other wrote.
/// Eight rounds wrap each ring eight times.
fn check_two_queues<H: Hal>(cx: &Ctx<'_, H>, seed: u64) -> Result<(), Reason> {
    const ENTRIES: u16 = 32;
    const N: usize = ENTRIES as usize - 1;
    const HALF: u64 = 16;
    let options = QpairOptions { entries: ENTRIES, max_transfer_bytes: 64 << 10, ..Default::default() };
    let mut a: Qp<'_, H, N> = cx.ctrlr.create_io_qpair(options).map_err(|e| reason!("create first: {e}"))?;
    let mut b: Qp<'_, H, N> = cx.ctrlr.create_io_qpair(options).map_err(|e| reason!("create second: {e}"))?;
    if a.qid() == b.qid() {
        return Err(reason!("both queue pairs have qid {}", a.qid()));
    }
    let mut pool_a: heapless::Vec<Buf<'_, H>, N> = heapless::Vec::new();
    let mut pool_b: heapless::Vec<Buf<'_, H>, N> = heapless::Vec::new();
    for _ in 0..HALF {
        let _ = pool_a.push(cx.buffer(cx.bs)?);
        let _ = pool_b.push(cx.buffer(cx.bs)?);
    }
    let bs = cx.bs;
    for round in 0..8u64 {
        let s = seed.wrapping_add(round << 40);
        // Both write at once: a to [0, 16), b to [16, 32).
        for i in 0..HALF {
            let mut ba = pool_a.pop().ok_or_else(|| reason!("buffer lost"))?;
            pattern::fill(&mut ba, s, i, bs);
            a.write(&cx.ns, i, 1, ba, i).map_err(|e| reason!("a write: {}", e.error))?;
            let mut bb = pool_b.pop().ok_or_else(|| reason!("buffer lost"))?;
            pattern::fill(&mut bb, s, HALF + i, bs);
            b.write(&cx.ns, HALF + i, 1, bb, HALF + i).map_err(|e| reason!("b write: {}", e.error))?;
        }
        if a.in_flight() == 0 && b.in_flight() == 0 {
            return Err(reason!("nothing in flight"));
        }
        drain_into(cx, &mut a, &mut pool_a, s, false)?;
        drain_into(cx, &mut b, &mut pool_b, s, false)?;
        // Each reads back the other's half.
        for i in 0..HALF {
            let ba = pool_a.pop().ok_or_else(|| reason!("buffer lost"))?;
            a.read(&cx.ns, HALF + i, 1, ba, HALF + i).map_err(|e| reason!("a read: {}", e.error))?;
            let bb = pool_b.pop().ok_or_else(|| reason!("buffer lost"))?;
            b.read(&cx.ns, i, 1, bb, i).map_err(|e| reason!("b read: {}", e.error))?;
        }
        drain_into(cx, &mut a, &mut pool_a, s, true)?;
        drain_into(cx, &mut b, &mut pool_b, s, true)?;
    }
    Ok(())
}

fn drain_into<'a, H: Hal, const N: usize>(
    cx: &Ctx<'a, H>,
    qp: &mut Qp<'a, H, N>,
    pool: &mut heapless::Vec<Buf<'a, H>, N>,
    seed: u64,
    verify: bool,
) -> Result<(), Reason> {
    let bs = cx.bs;
    drain(cx, qp, |c| {
        c.result().map_err(|e| reason!("lba {}: {e}", c.context))?;
        let b = c.buffer.ok_or_else(|| reason!("no buffer"))?;
        let bad = if verify { pattern::first_mismatch(&b, seed, c.context, bs) } else { None };
        let _ = pool.push(b);
        match bad {
            Some(at) => Err(reason!("lba {} mismatch at byte {at}", c.context)),
            None => Ok(()),
        }
    })
}

/// Dropping a queue pair with reads in flight deletes its queues before the
/// buffers are freed; the controller then serves a new queue pair normally.
fn check_drop_in_flight<H: Hal>(cx: &Ctx<'_, H>) -> Result<(), Reason> {
    {
        let mut qp: Qp<'_, H, 16> = cx
            .ctrlr
            .create_io_qpair(QpairOptions { entries: 32, max_transfer_bytes: 64 << 10, ..Default::default() })
            .map_err(|e| reason!("create: {e}"))?;
        for i in 0..16u64 {
            let b = cx.buffer(cx.bs)?;
            qp.read(&cx.ns, i % cx.ns.blocks(), 1, b, i).map_err(|e| reason!("read {i}: {}", e.error))?;
        }
        // Dropped here, without polling: Delete I/O SQ / CQ, then the buffers.
    }
    let mut qp: Qp<'_, H, 4> = cx
        .ctrlr
        .create_io_qpair(QpairOptions { entries: 8, max_transfer_bytes: 64 << 10, ..Default::default() })
        .map_err(|e| reason!("create after drop: {e}"))?;
    let b = cx.buffer(cx.bs)?;
    cx.sync(&mut qp, false, 0, b).map(|_| ())
}

/// Writes the saved blocks back and checks them by reading them again.
fn restore<'a, H: Hal>(cx: &Ctx<'a, H>, saved: Buf<'a, H>, chunk: usize) -> Result<(), Reason> {
    let mut qp: Qp<'a, H, 4> = cx
        .ctrlr
        .create_io_qpair(QpairOptions { max_transfer_bytes: chunk, ..Default::default() })
        .map_err(|e| reason!("create: {e}"))?;
    let saved = cx.chunked(&mut qp, true, 0, saved, chunk)?;
    let check = cx.buffer(saved.len())?;
    let check = cx.chunked(&mut qp, false, 0, check, chunk)?;
    match saved.iter().zip(check.iter()).position(|(a, b)| a != b) {
        Some(at) => Err(reason!("restored data differs at byte {at}")),
        None => Ok(()),
    }
}
