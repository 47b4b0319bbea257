//! The checks of one namespace: I/O of every shape, caller errors, queue
//! behaviour, and the API's promises (resubmission from `poll`, batched
//! doorbells, abort by CID, the blocking helper).

use crate::pattern;
use crate::plan::{Plan, Span};
use crate::report::{Outcome, Reason, Report, Totals};
use crate::{reason, Buf, Fh, Options, Qp, IN_FLIGHT, SLOTS};
use core::time::Duration;
use nvme_nostd::hal_traits::Hal;
use nvme_nostd::{
    AbortOutcome, Completion, Controller, DoorbellMode, Error, Namespace, PollLimit, QpairOptions,
};

/// Everything a namespace check needs.
pub(crate) struct Ctx<'a, H: Hal> {
    pub(crate) ctrlr: &'a Controller<Fh<H>>,
    pub(crate) ns: Namespace,
    pub(crate) bs: usize,
    pub(crate) timeout: Duration,
}

impl<'a, H: Hal> Ctx<'a, H> {
    pub(crate) fn buffer(&self, len: usize) -> Result<Buf<'a, H>, Reason> {
        crate::dma_buffer(self.ctrlr, len)
    }

    fn blocks(&self, bytes: usize) -> u32 {
        (bytes / self.bs) as u32
    }

    /// Submits one read or write and waits for it with the blocking helper;
    /// the buffer comes back.
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
        let mut strays = 0;
        let done = qp
            .wait(cid, self.timeout, |_| strays += 1)
            .map_err(|e| reason!("{} lba {lba}: {e}", op(write)))?;
        if strays > 0 || done.cid != cid {
            return Err(reason!("{strays} completions for requests never submitted"));
        }
        done.result().map_err(|e| reason!("{} lba {lba}: {e}", op(write)))?;
        done.buffer.ok_or_else(|| reason!("completion without its buffer"))
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

    /// Writes the pattern of `seed` over `span` from a buffer placed `offset`
    /// bytes into its first page, reads it back into another such buffer, and
    /// verifies it.
    fn write_read_verify<const N: usize>(
        &self,
        qp: &mut Qp<'a, H, N>,
        span: Span,
        offset: usize,
        seed: u64,
        plant: bool,
    ) -> Result<(), Reason> {
        let (lba, len) = (span.lba, span.bytes);
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

fn skipped_span(what: &str, plan: &Plan) -> Outcome {
    Outcome::Skipped(reason!(
        "{what} does not fit: {} blocks, largest transfer {} bytes",
        plan.blocks,
        plan.max_transfer
    ))
}

/// Runs the checks of namespace `nsid`; true when its plain I/O (blocks
/// without metadata) was tested.
pub(crate) fn run_namespace<H: Hal>(
    ctrlr: &Controller<Fh<H>>,
    nsid: u32,
    label: &str,
    options: &Options,
    out: &mut dyn Report,
    t: &mut Totals,
) -> bool {
    let ns = match ctrlr.namespace(nsid) {
        Ok(ns) => {
            t.record(out, format_args!("{label} ns{nsid} identify"), Outcome::Ok);
            ns
        }
        Err(e) => {
            t.record(out, format_args!("{label} ns{nsid} identify"), Outcome::Failed(reason!("{e}")));
            return false;
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
        t.record(out, format_args!("{label} ns{nsid} I/O"), Outcome::Skipped(reason!("{}", why.describe())));
        return false;
    }
    if ns.zones().is_some() {
        // A zoned namespace: its own checks (it takes writes only at each
        // zone's write pointer).
        crate::zoned::run_namespace(ctrlr, ns, label, options, out, t);
        return false;
    }
    if ns.metadata_size() != 0 {
        // Its own checks; false all the same: the back-end checks need a
        // namespace whose blocks are plain data.
        crate::metadata::run_namespace(ctrlr, ns, label, options, out, t);
        return false;
    }
    let name = |check: &str| -> Reason { reason!("{label} ns{nsid} {check}") };

    let mut qp: Qp<'_, H, SLOTS> = match ctrlr
        .create_io_qpair(QpairOptions::default().with_max_transfer_bytes(options.max_transfer))
    {
        Ok(q) => q,
        Err(e) => {
            t.record(out, format_args!("{}", name("create I/O queue pair")), Outcome::Failed(reason!("{e}")));
            return false;
        }
    };
    if ctrlr.cmb().is_some() && !qp.sq_in_cmb() {
        // The verified I/O below is what proves the queues in the CMB.
        t.record(
            out,
            format_args!("{}", name("queue pair in the CMB")),
            Outcome::Failed(reason!("in host memory")),
        );
        return false;
    }
    let bs = ns.block_size() as usize;
    let Some(plan) = Plan::new(bs, qp.max_transfer_bytes(), ns.blocks()) else {
        t.record(
            out,
            format_args!("{}", name("I/O")),
            Outcome::Skipped(reason!("transfer limit below one block")),
        );
        return false;
    };
    let cx = Ctx { ctrlr, bs, ns, timeout: options.io_timeout };
    let largest = plan.largest_bytes();

    // The blocks the checks overwrite, saved first and restored last.
    let window = plan.extent();
    let saved = cx.buffer(window as usize * bs).and_then(|b| cx.chunked(&mut qp, false, 0, b, largest));
    let saved = match saved {
        Ok(b) => {
            t.record(out, format_args!("{} ({} blocks)", name("save blocks"), window), Outcome::Ok);
            b
        }
        Err(why) => {
            // Without a copy, writing would destroy data: stop here.
            t.record(out, format_args!("{}", name("save blocks")), Outcome::Failed(why));
            return false;
        }
    };

    let mut seed = 0x5eed_0000_u64 ^ ((nsid as u64) << 32);
    let mut next_seed = || {
        seed += 1;
        seed
    };

    // One block, with the planted mismatch when asked.
    let outcome = match plan.one_block() {
        Some(span) => cx.write_read_verify(&mut qp, span, 0, next_seed(), options.plant_mismatch).into(),
        None => skipped_span("one block", &plan),
    };
    t.record(out, format_args!("{}", name("write/read/verify 1 block")), outcome);

    let outcome = match plan.several_pages() {
        Some(span) => cx.write_read_verify(&mut qp, span, 0, next_seed(), false).into(),
        None => skipped_span("16 KiB", &plan),
    };
    t.record(out, format_args!("{}", name("write/read/verify several pages")), outcome);

    let outcome = match plan.prp_list() {
        Some(span) => cx.write_read_verify(&mut qp, span, 512, next_seed(), false).into(),
        None => Outcome::Skipped(reason!("largest transfer ({largest} bytes) cannot span three pages")),
    };
    t.record(out, format_args!("{}", name("write/read/verify PRP list at page offset 512")), outcome);

    let outcome = match plan.largest() {
        Some(span) => cx.write_read_verify(&mut qp, span, 0, next_seed(), false).into(),
        None => skipped_span("the largest transfer", &plan),
    };
    t.record(out, format_args!("{} ({largest} bytes)", name("write/read/verify largest transfer")), outcome);

    let outcome = match plan.split() {
        Some(span) => check_split(&cx, &mut qp, span, next_seed()).into(),
        None => skipped_span("twice the largest transfer", &plan),
    };
    t.record(out, format_args!("{}", name("transfer above the limit split")), outcome);
    if qp.max_transfer_bytes() <= 8192 && cx.ns.blocks() >= (BIG_READ / bs) as u64 {
        t.record(
            out,
            format_args!("{}", name("8 MiB read in one call, split at MDTS")),
            check_big_read(&cx, &mut qp, largest).into(),
        );
    }
    t.record(
        out,
        format_args!("{}", name("caller errors refused")),
        check_caller_errors(&cx, &mut qp).into(),
    );

    let outcome = match plan.in_flight() {
        Some(span) => check_in_flight(&cx, &mut qp, span, next_seed()).into(),
        None => Outcome::Skipped(reason!("namespace has only {} blocks", plan.blocks)),
    };
    t.record(out, format_args!("{}", name("commands in flight")), outcome);

    t.record(
        out,
        format_args!("{} ({SLOTS} slots)", name("request pool exhausted and refilled")),
        check_exhaustion(&cx, &mut qp).into(),
    );
    t.record(
        out,
        format_args!("{}", name("resubmission from the poll callback")),
        check_resubmit(&cx, &mut qp).into(),
    );
    t.record(
        out,
        format_args!("{}", name("abort by the CID a submission returned")),
        check_abort(&cx, &mut qp).into(),
    );
    let outcome = match plan.several_pages().or(plan.one_block()) {
        Some(span) => check_nvm_commands(&cx, &mut qp, span, next_seed(), out).into(),
        None => skipped_span("one block", &plan),
    };
    t.record(out, format_args!("{}", name("FUA, limited retry; NVM commands as ONCS offers them")), outcome);
    drop(qp);

    t.record(out, format_args!("{}", name("batched doorbells")), check_batched(&cx).into());
    // Its own queue pair (the main one is gone: a controller may have one).
    let outcome = match plan.several_pages().filter(|s| s.bytes == 16 << 10) {
        Some(span) => match check_scatter(&cx, span, next_seed()) {
            Ok(how) => {
                out.line(format_args!("{label} ns{nsid}: scatter lists: {how}"));
                Outcome::Ok
            }
            Err(why) => Outcome::Failed(why),
        },
        None => skipped_span("16 KiB", &plan),
    };
    t.record(out, format_args!("{}", name("scatter list (PRPs, and an SGL where offered)")), outcome);

    let outcome = match plan.wrap() {
        Some(span) => check_wrap(&cx, span, next_seed()).into(),
        None => skipped_span("the phase-wrap blocks", &plan),
    };
    t.record(out, format_args!("{}", name("I/O queue phase wrap")), outcome);

    let outcome = if ctrlr.io_queues() < 2 {
        Outcome::Skipped(reason!("controller grants {} I/O queue pair", ctrlr.io_queues()))
    } else {
        match plan.two_queues() {
            Some(_) => check_two_queues(&cx, next_seed()).into(),
            None => Outcome::Skipped(reason!("namespace has only {} blocks", plan.blocks)),
        }
    };
    t.record(out, format_args!("{}", name("two I/O queue pairs together")), outcome);

    t.record(
        out,
        format_args!("{}", name("queue pair dropped with requests in flight")),
        check_drop_in_flight(&cx).into(),
    );

    if ctrlr.shadow_doorbells() {
        let outcome = check_shadow_long_run(&cx, &plan, out, &name("shadow doorbells"));
        t.record(
            out,
            format_args!("{}", name("shadow doorbells: a long run of reads at QD 1, 8 and 32 and a reset")),
            outcome.into(),
        );
    }

    let outcome = if options.skip_restore {
        Outcome::Skipped(reason!("skip-restore asked for: the blocks stay overwritten"))
    } else {
        restore(&cx, saved, largest).into()
    };
    t.record(out, format_args!("{}", name("restore saved blocks")), outcome);
    true
}

/// A transfer over the limit is refused with `TransferTooLarge` and nothing is
/// submitted.
/// A transfer above the queue pair's limit, written and read back in one
/// call each: the driver splits it into commands the controller takes
/// (three here), and the caller sees one completion with the whole buffer.
fn check_split<'a, H: Hal>(
    cx: &Ctx<'a, H>,
    qp: &mut Qp<'a, H, SLOTS>,
    span: Span,
    seed: u64,
) -> Result<(), Reason> {
    let max = qp.max_transfer_bytes();
    let blocks = cx.blocks(span.bytes);
    let mut w = cx.buffer(span.bytes)?;
    pattern::fill(&mut w, seed, span.lba, cx.bs);
    let before = qp.stats().submitted;
    let cid = qp.write(&cx.ns, span.lba, blocks, w, 1).map_err(|e| reason!("split write: {}", e.error))?;
    let done = qp.wait(cid, cx.timeout, |_| {}).map_err(|e| reason!("split write: {e}"))?;
    done.result().map_err(|e| reason!("split write: {e}"))?;
    let commands = qp.stats().submitted - before;
    if commands < 3 {
        return Err(reason!(
            "{} bytes over a {max}-byte limit went out as {commands} command(s)",
            span.bytes
        ));
    }
    let mut r = cx.buffer(span.bytes)?;
    r.fill(0xa5);
    let cid = qp.read(&cx.ns, span.lba, blocks, r, 2).map_err(|e| reason!("split read: {}", e.error))?;
    let done = qp.wait(cid, cx.timeout, |_| {}).map_err(|e| reason!("split read: {e}"))?;
    done.result().map_err(|e| reason!("split read: {e}"))?;
    let r = done.buffer.ok_or_else(|| reason!("split read without its buffer"))?;
    if let Some(at) = pattern::first_mismatch(&r, seed, span.lba, cx.bs) {
        return Err(reason!("split read: mismatch at byte {at}"));
    }
    if qp.in_flight() != 0 {
        return Err(reason!("{} requests left in flight", qp.in_flight()));
    }
    Ok(())
}

/// A scatter list of four 4 KiB pieces: written from whole pages (which
/// PRPs describe), read back into pieces that start 1 KiB into their pages
/// (which only an SGL describes: where the controller's SGLS offers them,
/// else refused unsent and read back from whole pages), and verified.
fn check_scatter<H: Hal>(cx: &Ctx<'_, H>, span: Span, seed: u64) -> Result<&'static str, Reason> {
    use nvme_nostd::ScatterList;
    let options = QpairOptions::default().with_entries(8);
    let mut qp: nvme_nostd::IoQueuePair<'_, Fh<H>, ScatterList<Buf<'_, H>, 4>, u64, 4> =
        cx.ctrlr.create_io_qpair(options).map_err(|e| reason!("create: {e}"))?;
    let per = 4096 / cx.bs;
    let blocks = cx.blocks(span.bytes);
    let mut w = ScatterList::new();
    for i in 0..4 {
        let mut b = cx.buffer(4096)?;
        pattern::fill(&mut b, seed, span.lba + (i * per) as u64, cx.bs);
        w.push(b).map_err(|_| reason!("list full"))?;
    }
    let cid = qp.write(&cx.ns, span.lba, blocks, w, 1).map_err(|e| reason!("scatter write: {}", e.error))?;
    let done = qp.wait(cid, cx.timeout, |_| {}).map_err(|e| reason!("scatter write: {e}"))?;
    done.result().map_err(|e| reason!("scatter write: {e}"))?;
    let pieces = |offset: usize| -> Result<ScatterList<Buf<'_, H>, 4>, Reason> {
        let mut r = ScatterList::new();
        for _ in 0..4 {
            let mut b = cx.buffer(offset + 4096)?;
            b.fill(0xa5);
            if !b.set_window(offset, 4096) {
                return Err(reason!("buffer window"));
            }
            r.push(b).map_err(|_| reason!("list full"))?;
        }
        Ok(r)
    };
    let sgls = cx.ctrlr.identify().sgls.support() != 0;
    let (back, how) = match qp.read(&cx.ns, span.lba, blocks, pieces(1024)?, 2) {
        Ok(cid) if sgls => {
            let done = qp.wait(cid, cx.timeout, |_| {}).map_err(|e| reason!("scatter read: {e}"))?;
            done.result().map_err(|e| reason!("scatter read: {e}"))?;
            (done.buffer.ok_or_else(|| reason!("read without its buffer"))?, "PRPs, and an SGL")
        }
        Ok(_) => return Err(reason!("pieces off their pages accepted without SGLs")),
        Err(e) if !sgls && matches!(e.error, Error::NotPrpShaped(_)) => {
            let cid =
                qp.read(&cx.ns, span.lba, blocks, pieces(0)?, 3).map_err(|e| reason!("read: {}", e.error))?;
            let done = qp.wait(cid, cx.timeout, |_| {}).map_err(|e| reason!("scatter read: {e}"))?;
            done.result().map_err(|e| reason!("scatter read: {e}"))?;
            let back = done.buffer.ok_or_else(|| reason!("read without its buffer"))?;
            (back, "PRPs; pieces off their pages refused unsent (no SGLs)")
        }
        Err(e) => return Err(reason!("scatter read: {}", e.error)),
    };
    for (i, piece) in back.as_slice().iter().enumerate() {
        if let Some(at) = pattern::first_mismatch(piece, seed, span.lba + (i * per) as u64, cx.bs) {
            return Err(reason!("piece {i}: mismatch at byte {at}"));
        }
    }
    Ok(how)
}

/// The bytes of [`check_big_read`].
const BIG_READ: usize = 8 << 20;

/// With a small transfer limit (`mdts=1`: 8 KiB), 8 MiB read in one call
/// on a queue pair with room for its 1024 commands, against the same
/// blocks read a limit at a time.
fn check_big_read<'a, H: Hal>(
    cx: &Ctx<'a, H>,
    qp: &mut Qp<'a, H, SLOTS>,
    chunk: usize,
) -> Result<(), Reason> {
    let options = QpairOptions::default().with_entries(256).with_max_transfer_bytes(BIG_READ);
    let mut big: Qp<'_, H, 1100> = cx.ctrlr.create_io_qpair(options).map_err(|e| reason!("create: {e}"))?;
    let blocks = cx.blocks(BIG_READ);
    let mut r = cx.buffer(BIG_READ)?;
    r.fill(0xa5);
    let cid = big.read(&cx.ns, 0, blocks, r, 1).map_err(|e| reason!("8 MiB read: {}", e.error))?;
    let children = big.in_flight() - 1;
    let done = big.wait(cid, cx.timeout, |_| {}).map_err(|e| reason!("8 MiB read: {e}"))?;
    done.result().map_err(|e| reason!("8 MiB read: {e}"))?;
    let r = done.buffer.ok_or_else(|| reason!("read without its buffer"))?;
    if big.stats().submitted != children as u64 || children < BIG_READ / big.max_transfer_bytes() {
        return Err(reason!("{children} children, {} commands", big.stats().submitted));
    }
    drop(big);
    let mut c = cx.buffer(BIG_READ)?;
    c.fill(0x5a);
    let c = cx.chunked(qp, false, 0, c, chunk)?;
    match r.iter().zip(c.iter()).position(|(a, b)| a != b) {
        Some(at) => Err(reason!("byte {at} differs from the same blocks read a limit at a time")),
        None => Ok(()),
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
    if !matches!(e.error, Error::BufferMisaligned { .. }) {
        return Err(reason!("misaligned buffer: {}", e.error));
    }
    if e.error.origin() != nvme_nostd::Origin::Caller {
        return Err(reason!("a misaligned buffer is not reported as the caller's fault"));
    }
    if qp.stats().submitted != before || qp.in_flight() != 0 {
        return Err(reason!("a refused request reached the queue"));
    }
    Ok(())
}

/// Waits until `qp` has nothing in flight, handing each completion to `f`.
fn drain<'a, H: Hal, const N: usize>(
    cx: &Ctx<'a, H>,
    qp: &mut Qp<'a, H, N>,
    mut f: impl FnMut(Completion<Buf<'a, H>, u64>) -> Result<(), Reason>,
) -> Result<(), Reason> {
    let deadline = cx.ctrlr.hal().now() + cx.timeout;
    let mut first_error = Ok(());
    while qp.in_flight() > 0 {
        qp.poll(PollLimit::All, |_, c| {
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
fn check_in_flight<'a, H: Hal>(
    cx: &Ctx<'a, H>,
    qp: &mut Qp<'a, H, SLOTS>,
    span: Span,
    seed: u64,
) -> Result<(), Reason> {
    let count = span.bytes / cx.bs;
    let mut bufs: heapless::Vec<Buf<'a, H>, SLOTS> = heapless::Vec::new();
    for lba in 0..count as u64 {
        let mut b = cx.buffer(cx.bs)?;
        pattern::fill(&mut b, seed, span.lba + lba, cx.bs);
        let _ = bufs.push(b);
    }
    let mut peak = 0;
    while let Some(b) = bufs.pop() {
        let lba = span.lba + bufs.len() as u64;
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
    let mut lba = span.lba;
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

/// The poll callback submits the next read itself (a closed loop at a queue
/// depth of 8): one doorbell per poll pass carries the resubmissions, so
/// there are fewer doorbell writes than commands.
fn check_resubmit<'a, H: Hal>(cx: &Ctx<'a, H>, qp: &mut Qp<'a, H, SLOTS>) -> Result<(), Reason> {
    const DEPTH: u64 = 8;
    const TOTAL: u64 = 256;
    let before = qp.stats();
    for i in 0..DEPTH {
        let b = cx.buffer(cx.bs)?;
        let lba = i % cx.ns.blocks();
        qp.read(&cx.ns, lba, 1, b, lba).map_err(|e| reason!("read: {}", e.error))?;
    }
    let (mut issued, mut done) = (DEPTH, 0u64);
    let mut failure = None;
    let deadline = cx.ctrlr.hal().now() + cx.timeout;
    let ns = &cx.ns;
    while done < TOTAL {
        qp.poll(PollLimit::All, |resubmit, c| {
            done += 1;
            if let Err(e) = c.result() {
                failure.get_or_insert(reason!("read {}: {e}", c.context));
            }
            let Some(b) = c.buffer else { return };
            if issued < TOTAL {
                let lba = issued % ns.blocks();
                match resubmit.read(ns, lba, 1, b, lba) {
                    Ok(_) => issued += 1,
                    Err(e) => {
                        failure.get_or_insert(reason!("resubmit: {}", e.error));
                    }
                }
            }
        });
        if let Some(f) = failure.take() {
            return Err(f);
        }
        if qp.in_flight() == 0 && done < TOTAL {
            return Err(reason!("nothing in flight after {done} of {TOTAL}"));
        }
        if cx.ctrlr.hal().now() > deadline {
            return Err(reason!("stalled after {done} of {TOTAL}"));
        }
    }
    let after = qp.stats();
    let commands = after.submitted - before.submitted;
    let doorbells = after.sq_doorbells - before.sq_doorbells;
    if commands != TOTAL {
        return Err(reason!("{commands} commands for {TOTAL} reads"));
    }
    if doorbells >= commands {
        return Err(reason!(
            "{doorbells} doorbell writes for {commands} commands: resubmissions were not batched"
        ));
    }
    Ok(())
}

/// Abort names a request by the CID its submission returned; the request
/// still completes exactly once (QEMU's controller answers "not aborted").
fn check_abort<'a, H: Hal>(cx: &Ctx<'a, H>, qp: &mut Qp<'a, H, SLOTS>) -> Result<(), Reason> {
    let b = cx.buffer(cx.bs)?;
    let cid = qp.read(&cx.ns, 0, 1, b, 7).map_err(|e| reason!("read: {}", e.error))?;
    let outcome = qp.abort(cid).map_err(|e| reason!("abort: {e}"))?;
    let mut seen = 0;
    drain(cx, qp, |c| {
        seen += 1;
        if c.cid != cid || c.context != 7 {
            return Err(reason!("completion for {:?}, not {cid:?}", c.cid));
        }
        match (outcome, c.result()) {
            (_, Ok(())) | (AbortOutcome::Aborted, Err(Error::Command(_))) => Ok(()),
            (_, Err(e)) => Err(reason!("{e}")),
        }
    })?;
    if seen != 1 {
        return Err(reason!("{seen} completions"));
    }
    if qp.abort(cid) != Err(Error::InvalidArgument(nvme_nostd::Argument::UnknownCid)) {
        return Err(reason!("a completed request can still be aborted"));
    }
    Ok(())
}

/// In batched mode, submissions write entries and one doorbell write
/// announces them all.
/// Waits for the command `cid` (submitted without a buffer) and returns its
/// result.
fn finish<'a, H: Hal>(cx: &Ctx<'a, H>, qp: &mut Qp<'a, H, SLOTS>, cid: nvme_nostd::Cid) -> Result<(), Error> {
    qp.wait(cid, cx.timeout, |_| {}).and_then(|done| done.result())
}

/// A write with FUA read back with Limited Retry; Compare (the bytes just
/// written compare equal; one flipped byte is a Compare Failure), Verify, and Write Zeroes (the blocks then read zeros;
/// with deallocation too), each where ONCS advertises it, else refused
/// before anything is sent.
fn check_nvm_commands<'a, H: Hal>(
    cx: &Ctx<'a, H>,
    qp: &mut Qp<'a, H, SLOTS>,
    span: Span,
    seed: u64,
    out: &mut dyn Report,
) -> Result<(), Reason> {
    use nvme_nostd::spec::status::{media, StatusCodeType};
    let oncs = cx.ctrlr.identify().oncs;
    let (lba, blocks) = (span.lba, cx.blocks(span.bytes));
    // Written with FUA, read back with Limited Retry and compared.
    let mut wbuf = cx.buffer(span.bytes)?;
    pattern::fill(&mut wbuf, seed, lba, cx.bs);
    let flags = nvme_nostd::IoFlags { fua: true, limited_retry: true };
    let cid =
        qp.write_with(&cx.ns, lba, blocks, flags, wbuf, 5).map_err(|e| reason!("FUA write: {}", e.error))?;
    let done = qp.wait(cid, cx.timeout, |_| {}).map_err(|e| reason!("FUA write: {e}"))?;
    done.result().map_err(|e| reason!("FUA write: {e}"))?;
    let mut wbuf = done.buffer.ok_or_else(|| reason!("write without its buffer"))?;
    let mut rbuf = cx.buffer(span.bytes)?;
    rbuf.fill(0xa5);
    let cid = qp.read_with(&cx.ns, lba, blocks, flags, rbuf, 6).map_err(|e| reason!("read: {}", e.error))?;
    let done = qp.wait(cid, cx.timeout, |_| {}).map_err(|e| reason!("limited-retry read: {e}"))?;
    done.result().map_err(|e| reason!("limited-retry read: {e}"))?;
    let rbuf = done.buffer.ok_or_else(|| reason!("read without its buffer"))?;
    if let Some(at) = pattern::first_mismatch(&rbuf, seed, lba, cx.bs) {
        return Err(reason!("FUA write read back: mismatch at byte {at}"));
    }
    let unsupported = Error::Unsupported(nvme_nostd::Feature::NvmCommand);
    if oncs.compare() {
        let cid = qp.compare(&cx.ns, lba, blocks, wbuf, 0).map_err(|e| reason!("compare: {}", e.error))?;
        let done = qp.wait(cid, cx.timeout, |_| {}).map_err(|e| reason!("compare: {e}"))?;
        done.result().map_err(|e| reason!("compare of equal data: {e}"))?;
        wbuf = done.buffer.ok_or_else(|| reason!("compare without its buffer"))?;
        wbuf[span.bytes / 2] ^= 0x20;
        let cid = qp.compare(&cx.ns, lba, blocks, wbuf, 1).map_err(|e| reason!("compare: {}", e.error))?;
        match finish(cx, qp, cid) {
            Err(Error::Command(s))
                if s.sct() == StatusCodeType::MEDIA_DATA_INTEGRITY && s.sc() == media::COMPARE_FAILURE => {}
            other => return Err(reason!("compare of different data: {other:?}")),
        }
    } else if qp.compare(&cx.ns, lba, blocks, wbuf, 0).map_err(|e| e.error).err() != Some(unsupported) {
        return Err(reason!("compare not refused, though not advertised"));
    }
    if oncs.verify() {
        let cid = qp.verify(&cx.ns, lba, blocks, 2).map_err(|e| reason!("verify: {}", e.error))?;
        finish(cx, qp, cid).map_err(|e| reason!("verify: {e}"))?;
    } else if qp.verify(&cx.ns, lba, blocks, 2).map_err(|e| e.error).err() != Some(unsupported) {
        return Err(reason!("verify not refused, though not advertised"));
    }
    if oncs.write_zeroes() {
        let cid = qp
            .write_zeroes(&cx.ns, lba, blocks, false, 3)
            .map_err(|e| reason!("write zeroes: {}", e.error))?;
        finish(cx, qp, cid).map_err(|e| reason!("write zeroes: {e}"))?;
        let mut rbuf = cx.buffer(span.bytes)?;
        rbuf.fill(0xa5);
        let rbuf = cx.sync(qp, false, lba, rbuf)?;
        if let Some(at) = rbuf.iter().position(|&b| b != 0) {
            return Err(reason!("byte {at} after write zeroes is {:#04x}", rbuf[at]));
        }
        let cid = qp
            .write_zeroes(&cx.ns, lba, blocks, true, 4)
            .map_err(|e| reason!("write zeroes: {}", e.error))?;
        finish(cx, qp, cid).map_err(|e| reason!("write zeroes with deallocate: {e}"))?;
    } else if qp.write_zeroes(&cx.ns, lba, blocks, false, 3).map_err(|e| e.error).err() != Some(unsupported) {
        return Err(reason!("write zeroes not refused, though not advertised"));
    }
    // Dataset Management: the span deallocated; where DLFEAT says what a
    // deallocated block reads as, it must read so.
    let ad = nvme_nostd::spec::dwords::DsmAttributes::new().with_ad(true);
    let range = [nvme_nostd::spec::command::DsmRange::new(lba, blocks)];
    let mut checked_read = "not checked (DLFEAT does not say)";
    if oncs.dataset_management() {
        let list = cx.buffer(4096)?;
        let cid =
            qp.dataset_management(&cx.ns, &range, ad, list, 7).map_err(|e| reason!("DSM: {}", e.error))?;
        finish(cx, qp, cid).map_err(|e| reason!("DSM deallocate: {e}"))?;
        let expected = match cx.ctrlr.identify_namespace(cx.ns.id()).map(|id| id.dlfeat.read_value()) {
            Ok(1) => Some(0u8),
            Ok(2) => Some(0xff),
            _ => None,
        };
        if let Some(value) = expected {
            let mut rbuf = cx.buffer(span.bytes)?;
            rbuf.fill(0xa5);
            let rbuf = cx.sync(qp, false, lba, rbuf)?;
            if let Some(at) = rbuf.iter().position(|&b| b != value) {
                return Err(reason!(
                    "byte {at} after deallocation is {:#04x}, DLFEAT says {value:#04x}",
                    rbuf[at]
                ));
            }
            checked_read = "read back as DLFEAT says";
        }
    } else {
        let refused =
            qp.dataset_management(&cx.ns, &range, ad, cx.buffer(4096)?, 7).map_err(|e| e.error).err();
        if refused != Some(unsupported) {
            return Err(reason!("dataset management not refused, though not advertised"));
        }
    }
    // Write Uncorrectable: a read then fails, until the blocks are written.
    if oncs.write_uncorrectable() {
        let cid = qp
            .write_uncorrectable(&cx.ns, lba, 1, 8)
            .map_err(|e| reason!("write uncorrectable: {}", e.error))?;
        finish(cx, qp, cid).map_err(|e| reason!("write uncorrectable: {e}"))?;
        let cid = qp.read(&cx.ns, lba, 1, cx.buffer(cx.bs)?, 9).map_err(|e| reason!("read: {}", e.error))?;
        match finish(cx, qp, cid) {
            Err(Error::Command(s))
                if s.sct() == StatusCodeType::MEDIA_DATA_INTEGRITY
                    && s.sc() == media::UNRECOVERED_READ_ERROR => {}
            other => return Err(reason!("a read of an uncorrectable block: {other:?}")),
        }
        let zeros = cx.buffer(cx.bs)?;
        cx.sync(qp, true, lba, zeros)?;
    } else if qp.write_uncorrectable(&cx.ns, lba, 1, 8).map_err(|e| e.error).err() != Some(unsupported) {
        return Err(reason!("write uncorrectable not refused, though not advertised"));
    }
    let copy = check_copy(cx, qp, span, seed ^ 0xc0)?;
    let reservations = check_reservations(cx, qp)?;
    let said = |on: bool| if on { "run" } else { "refused" };
    out.line(format_args!(
        "ns{}: compare {}, verify {}, write zeroes {}, write uncorrectable {}, dataset management {} (deallocated blocks {checked_read}), copy {copy}, reservations {reservations} ({} blocks at {lba})",
        cx.ns.id(),
        said(oncs.compare()),
        said(oncs.verify()),
        said(oncs.write_zeroes()),
        said(oncs.write_uncorrectable()),
        said(oncs.dataset_management()),
        blocks
    ));
    Ok(())
}

/// Copy, where ONCS and OCFS offer it with descriptor format 0h: the
/// span written afresh, its first `h` blocks copied in two ranges with
/// their halves swapped to the `h` blocks after them (within the
/// namespace's MSSRL and MCL), and read back. Else refused unsent.
fn check_copy<'a, H: Hal>(
    cx: &Ctx<'a, H>,
    qp: &mut Qp<'a, H, SLOTS>,
    span: Span,
    seed: u64,
) -> Result<&'static str, Reason> {
    use nvme_nostd::{CopyRange, IoFlags};
    let (lba, blocks) = (span.lba, cx.blocks(span.bytes));
    let offered = cx.ctrlr.identify().oncs.copy() && cx.ctrlr.identify().ocfs & 1 != 0;
    if !offered {
        let range = [CopyRange::new(lba, 1)];
        let refused =
            qp.copy(&cx.ns, lba, &range, IoFlags::default(), cx.buffer(4096)?, 10).map_err(|e| e.error);
        return match refused.err() {
            Some(Error::Unsupported(nvme_nostd::Feature::NvmCommand)) => Ok("refused"),
            _ => Err(reason!("copy not refused, though not advertised")),
        };
    }
    let limits = cx.ns.copy_limits();
    if limits.max_blocks == 0 || limits.max_range_blocks == 0 {
        // Offered, but no block may be copied here (QEMU's namespaces on a
        // controller's own drive report MSSRL and MCL 0): refused unsent.
        let range = [CopyRange::new(lba, 1)];
        let refused = qp.copy(&cx.ns, lba + 1, &range, IoFlags::default(), cx.buffer(4096)?, 10);
        return match refused.map_err(|e| e.error).err() {
            Some(Error::InvalidArgument(nvme_nostd::Argument::CopyRanges)) => {
                Ok("refused (MSSRL or MCL is 0 on this namespace)")
            }
            other => Err(reason!("copy above MSSRL or MCL 0: {other:?}")),
        };
    }
    let h = (blocks / 2).min(limits.max_blocks).min(u32::from(limits.max_range_blocks));
    if h == 0 {
        return Ok("not run (the span has one block)");
    }
    let mut wbuf = cx.buffer(span.bytes)?;
    pattern::fill(&mut wbuf, seed, lba, cx.bs);
    cx.sync(qp, true, lba, wbuf)?;
    let (a, b) = (h / 2, h - h / 2);
    let swapped = [CopyRange::new(lba + u64::from(a), b), CopyRange::new(lba, a)];
    let whole = [CopyRange::new(lba, h)];
    let (ranges, first): (&[CopyRange], u64) =
        if a == 0 || limits.max_ranges < 2 { (&whole, lba) } else { (&swapped, lba + u64::from(a)) };
    let destination = lba + u64::from(h);
    let cid = qp
        .copy(&cx.ns, destination, ranges, IoFlags::default(), cx.buffer(4096)?, 11)
        .map_err(|e| reason!("copy: {}", e.error))?;
    finish(cx, qp, cid).map_err(|e| reason!("copy of {h} blocks in {} ranges: {e}", ranges.len()))?;
    let mut rbuf = cx.buffer(h as usize * cx.bs)?;
    rbuf.fill(0xa5);
    let rbuf = cx.sync(qp, false, destination, rbuf)?;
    // The first range's blocks, then (when swapped) the second's.
    let split = if ranges.len() == 2 { b as usize * cx.bs } else { rbuf.len() };
    if let Some(at) = pattern::first_mismatch(&rbuf[..split], seed, first, cx.bs) {
        return Err(reason!("copied blocks: mismatch at byte {at} of the first range"));
    }
    if let Some(at) = pattern::first_mismatch(&rbuf[split..], seed, lba, cx.bs) {
        return Err(reason!("copied blocks: mismatch at byte {at} of the second range"));
    }
    Ok(if ranges.len() == 2 { "run (two ranges, read back)" } else { "run (one range, read back)" })
}

/// Reservations, where ONCS offers them: this host registers a key, finds
/// itself in the report (extended: the driver gives a 128-bit Host
/// Identifier), and unregisters, leaving the namespace as it was. Else
/// every reservation call is refused unsent.
fn check_reservations<'a, H: Hal>(
    cx: &Ctx<'a, H>,
    qp: &mut Qp<'a, H, SLOTS>,
) -> Result<&'static str, Reason> {
    use nvme_nostd::{AcquireAction, ReleaseAction, ReservationRegister, ReservationStatus, ReservationType};
    const KEY: u64 = 0x6e76_6d65_2d6b_6579;
    let we = ReservationType::WRITE_EXCLUSIVE;
    if !cx.ctrlr.identify().oncs.reservations() {
        let unsupported = Some(Error::Unsupported(nvme_nostd::Feature::NvmCommand));
        let refused = [
            qp.reservation_register(&cx.ns, ReservationRegister::register(KEY), cx.buffer(4096)?, 20).err(),
            qp.reservation_acquire(&cx.ns, AcquireAction::Acquire, we, KEY, 0, cx.buffer(4096)?, 21).err(),
            qp.reservation_release(&cx.ns, ReleaseAction::Clear, we, KEY, cx.buffer(4096)?, 22).err(),
            qp.reservation_report(&cx.ns, true, cx.buffer(4096)?, 23).err(),
        ];
        if refused.into_iter().any(|r| r.map(|e| e.error) != unsupported) {
            return Err(reason!("a reservation call not refused, though ONCS lacks reservations"));
        }
        return Ok("refused");
    }
    let cid = qp
        .reservation_register(&cx.ns, ReservationRegister::register(KEY), cx.buffer(4096)?, 20)
        .map_err(|e| reason!("reservation register: {}", e.error))?;
    finish(cx, qp, cid).map_err(|e| reason!("reservation register: {e}"))?;
    let cid = qp
        .reservation_report(&cx.ns, true, cx.buffer(4096)?, 21)
        .map_err(|e| reason!("reservation report: {}", e.error))?;
    let done = qp.wait(cid, cx.timeout, |_| {}).map_err(|e| reason!("reservation report: {e}"))?;
    done.result().map_err(|e| reason!("reservation report: {e}"))?;
    let data = done.buffer.ok_or_else(|| reason!("report without its buffer"))?;
    let status = ReservationStatus::parse(&data, true).map_err(|e| reason!("report: {e}"))?;
    if !status.registrants().any(|r| r.key == KEY) {
        return Err(reason!("this host's key is not in the reservation report"));
    }
    let cid = qp
        .reservation_register(&cx.ns, ReservationRegister::unregister(KEY), cx.buffer(4096)?, 22)
        .map_err(|e| reason!("reservation unregister: {}", e.error))?;
    finish(cx, qp, cid).map_err(|e| reason!("reservation unregister: {e}"))?;
    Ok("run (registered, reported, unregistered)")
}

fn check_batched<H: Hal>(cx: &Ctx<'_, H>) -> Result<(), Reason> {
    const COUNT: u64 = 8;
    let options = QpairOptions::default()
        .with_entries(16)
        .with_max_transfer_bytes(64 << 10)
        .with_doorbell(DoorbellMode::Batched);
    let mut qp: Qp<'_, H, 15> = cx.ctrlr.create_io_qpair(options).map_err(|e| reason!("create: {e}"))?;
    for i in 0..COUNT {
        let b = cx.buffer(cx.bs)?;
        let lba = i % cx.ns.blocks();
        qp.read(&cx.ns, lba, 1, b, lba).map_err(|e| reason!("read: {}", e.error))?;
    }
    // With shadow doorbells a ring may go to the shadow page only.
    let rings = |qp: &Qp<'_, H, 15>| qp.stats().sq_doorbells + qp.stats().doorbells_skipped;
    if rings(&qp) != 0 {
        return Err(reason!("a batched submission rang the doorbell"));
    }
    qp.ring_doorbell();
    if rings(&qp) != 1 {
        return Err(reason!("{} doorbell writes for one ring", rings(&qp)));
    }
    let mut done = 0;
    drain(cx, &mut qp, |c| {
        done += 1;
        c.result().map_err(|e| reason!("{e}"))
    })?;
    if done != COUNT {
        return Err(reason!("{done} of {COUNT} completed"));
    }
    Ok(())
}

/// A small queue pair (16 entries) runs eight times its size in reads, so both
/// of its rings wrap and flip phase several times; every read is verified.
fn check_wrap<H: Hal>(cx: &Ctx<'_, H>, span: Span, seed: u64) -> Result<(), Reason> {
    const ENTRIES: u16 = 16;
    const N: usize = ENTRIES as usize - 1;
    let mut qp: Qp<'_, H, N> = cx
        .ctrlr
        .create_io_qpair(QpairOptions::default().with_entries(ENTRIES).with_max_transfer_bytes(64 << 10))
        .map_err(|e| reason!("create: {e}"))?;
    let blocks = (span.bytes / cx.bs) as u64;
    for lba in span.lba..span.lba + blocks {
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
            let lba = span.lba + issued % blocks;
            if let Err(e) = qp.read(&cx.ns, lba, 1, b, lba) {
                return Err(reason!("read #{issued}: {}", e.error));
            }
            issued += 1;
        }
        qp.poll(PollLimit::All, |_, c| {
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
    if stats.completed < total + blocks || stats.bogus_completions != 0 {
        return Err(reason!("counters off: {stats:?}"));
    }
    Ok(())
}

/// With shadow doorbells on: reads over the namespace's first blocks at
/// queue depth 1, 8 and 32 ([`SHADOW_READS`] each; every buffer resubmitted
/// from the poll callback), a controller reset by hand in the middle of the
/// QD 8 run (the pair creates its queues again, with the shadow pages handed
/// over again), none lost: each run ends with every read completed within
/// the I/O timeout. MMIO doorbell writes must have been skipped (else the
/// shadow pages are not in use); the watchdog's rings are reported (a
/// controller that never misses an update needs none).
fn check_shadow_long_run<H: Hal>(
    cx: &Ctx<'_, H>,
    plan: &Plan,
    out: &mut dyn Report,
    label: &str,
) -> Result<(), Reason> {
    const ENTRIES: u16 = 64;
    const N: usize = 32;
    let blocks = plan.blocks.min(1024);
    let mut qp: Qp<'_, H, N> = cx
        .ctrlr
        .create_io_qpair(QpairOptions::default().with_entries(ENTRIES).with_max_transfer_bytes(64 << 10))
        .map_err(|e| reason!("create: {e}"))?;
    let mut next = 0u64;
    for depth in [1usize, 8, 32] {
        let mut issued = 0u64;
        for _ in 0..depth {
            let lba = next % blocks;
            next += 7;
            qp.read(&cx.ns, lba, 1, cx.buffer(cx.bs)?, lba).map_err(|e| reason!("read: {}", e.error))?;
            issued += 1;
        }
        let mut done = 0u64;
        let mut failure = None;
        let mut reset = depth == 8;
        let deadline = cx.ctrlr.hal().now() + cx.timeout;
        while done < issued {
            qp.poll(PollLimit::All, |resubmit, c| {
                done += 1;
                // Reads ended by the reset are resubmitted like the rest.
                if let Err(e) = c.result().map_err(|e| (e, c.error)) {
                    if !matches!(e.1, Some(Error::Reset)) {
                        failure.get_or_insert(reason!("read {}: {:?}", c.context, e.0));
                    }
                }
                if let Some(b) = c.buffer {
                    if issued < SHADOW_READS {
                        let lba = next % blocks;
                        next += 7;
                        match resubmit.read(&cx.ns, lba, 1, b, lba) {
                            Ok(_) => issued += 1,
                            // Resubmissions after the reset wait for the next poll.
                            Err(e) if e.error == Error::Reset => {}
                            Err(e) => drop(failure.get_or_insert(reason!("resubmit: {}", e.error))),
                        }
                    }
                }
            });
            if let Some(f) = failure.take() {
                return Err(f);
            }
            if reset && done >= SHADOW_READS / 2 {
                reset = false;
                cx.ctrlr.reset().map_err(|e| reason!("reset: {e}"))?;
                if !cx.ctrlr.shadow_doorbells() {
                    return Err(reason!("the controller refused the shadow pages after the reset"));
                }
            }
            // Reads the reset ended come back without a buffer to resubmit:
            // top up the depth directly.
            while issued < SHADOW_READS && issued - done < depth as u64 && qp.failure().is_none() {
                let lba = next % blocks;
                next += 7;
                match qp.read(&cx.ns, lba, 1, cx.buffer(cx.bs)?, lba) {
                    Ok(_) => issued += 1,
                    Err(e) => return Err(reason!("read after reset: {}", e.error)),
                }
            }
            if cx.ctrlr.hal().now() > deadline {
                return Err(reason!("QD {depth}: {done} of {issued} reads completed before the deadline"));
            }
        }
    }
    let stats = qp.stats();
    out.line(format_args!(
        "{label}: {} reads, {} MMIO SQ doorbells, {} updates in the shadow page only, {} watchdog rings",
        stats.completed, stats.sq_doorbells, stats.doorbells_skipped, stats.watchdog_rings
    ));
    if stats.doorbells_skipped == 0 {
        return Err(reason!("no doorbell write was skipped: the shadow pages are not in use"));
    }
    Ok(())
}

/// Reads of each queue depth in the shadow doorbell run.
const SHADOW_READS: u64 = 6000;

/// Two queue pairs (32 entries each) at once: in each round, both write half of
/// a range while both are in flight, then each reads back what the other wrote.
/// Eight rounds wrap each ring eight times.
fn check_two_queues<H: Hal>(cx: &Ctx<'_, H>, seed: u64) -> Result<(), Reason> {
    const ENTRIES: u16 = 32;
    const N: usize = ENTRIES as usize - 1;
    const HALF: u64 = crate::plan::TWO_QUEUE_BLOCKS / 2;
    let options = QpairOptions::default().with_entries(ENTRIES).with_max_transfer_bytes(64 << 10);
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
            .create_io_qpair(QpairOptions::default().with_entries(32).with_max_transfer_bytes(64 << 10))
            .map_err(|e| reason!("create: {e}"))?;
        for i in 0..16u64 {
            let b = cx.buffer(cx.bs)?;
            qp.read(&cx.ns, i % cx.ns.blocks(), 1, b, i).map_err(|e| reason!("read {i}: {}", e.error))?;
        }
        // Dropped here, without polling: Delete I/O SQ / CQ, then the buffers.
    }
    let mut qp: Qp<'_, H, 4> = cx
        .ctrlr
        .create_io_qpair(QpairOptions::default().with_entries(8).with_max_transfer_bytes(64 << 10))
        .map_err(|e| reason!("create after drop: {e}"))?;
    let b = cx.buffer(cx.bs)?;
    cx.sync(&mut qp, false, 0, b).map(|_| ())
}

/// Writes the saved blocks back and checks them by reading them again.
fn restore<'a, H: Hal>(cx: &Ctx<'a, H>, saved: Buf<'a, H>, chunk: usize) -> Result<(), Reason> {
    let mut qp: Qp<'a, H, 4> = cx
        .ctrlr
        .create_io_qpair(QpairOptions::default().with_max_transfer_bytes(chunk))
        .map_err(|e| reason!("create: {e}"))?;
    let saved = cx.chunked(&mut qp, true, 0, saved, chunk)?;
    let check = cx.buffer(saved.len())?;
    let check = cx.chunked(&mut qp, false, 0, check, chunk)?;
    match saved.iter().zip(check.iter()).position(|(a, b)| a != b) {
        Some(at) => Err(reason!("restored data differs at byte {at}")),
        None => Ok(()),
    }
}
