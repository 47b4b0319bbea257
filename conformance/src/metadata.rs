//! The checks of a namespace with metadata, and with protection
//! information where it has it: data and metadata written and read back in
//! the namespace's layout (interleaved, or after the data through MPTR),
//! the host's guards and tags checked by the controller, each check shown
//! to fail when the guard or a tag is wrong, PRACT inserting and stripping,
//! and the caller errors refused unsent. The blocks are saved with their
//! metadata first and written back exactly last.

use crate::report::{Outcome, Reason, Report, Totals};
use crate::{reason, Buf, Fh, Options, Qp, SLOTS};
use core::time::Duration;
use nvme_nostd::hal_traits::Hal;
use nvme_nostd::spec::status::{media, StatusCode, StatusCodeType};
use nvme_nostd::{
    fill_protection_information, Argument, Controller, CopyRange, Error, IoFlags, Namespace, Protection,
    QpairOptions,
};

struct Cx<'a, H: Hal> {
    ctrlr: &'a Controller<Fh<H>>,
    ns: Namespace,
    timeout: Duration,
    /// The blocks the checks use: from LBA 0.
    blocks: u32,
    /// The blocks saved and restored: `blocks`, or with separate metadata
    /// enough to cross the transfer limit (the split check's).
    window: u32,
}

/// Read, write or compare, with `protection`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

impl<'a, H: Hal> Cx<'a, H> {
    fn buffer(&self, len: usize) -> Result<Buf<'a, H>, Reason> {
        crate::dma_buffer(self.ctrlr, len)
    }

    /// The full layout of the check's blocks (data and metadata).
    fn bytes(&self) -> usize {
        self.ns.buffer_bytes(self.blocks, false)
    }

    /// Runs one command and waits: the device's result, and the buffer.
    fn run(
        &self,
        qp: &mut Qp<'a, H, SLOTS>,
        op: Op,
        protection: Protection,
        buf: Buf<'a, H>,
    ) -> Result<(Result<(), Error>, Buf<'a, H>), Reason> {
        self.run_blocks(qp, op, protection, buf, self.blocks)
    }

    /// As [`run`](Self::run), over `n` blocks from LBA 0.
    fn run_blocks(
        &self,
        qp: &mut Qp<'a, H, SLOTS>,
        op: Op,
        protection: Protection,
        buf: Buf<'a, H>,
        n: u32,
    ) -> Result<(Result<(), Error>, Buf<'a, H>), Reason> {
        let (ns, flags) = (&self.ns, IoFlags::default());
        let submitted = match op {
            Op::Read => qp.read_pi(ns, 0, n, flags, protection, buf, 0),
            Op::Write => qp.write_pi(ns, 0, n, flags, protection, buf, 0),
        };
        let cid = submitted.map_err(|e| reason!("submission refused: {}", e.error))?;
        let done = qp.wait(cid, self.timeout, |_| {}).map_err(|e| reason!("wait: {e}"))?;
        let result = done.result();
        let buf = done.buffer.ok_or_else(|| reason!("completion without its buffer"))?;
        Ok((result, buf))
    }

    /// As [`run`](Self::run), and the command must succeed.
    fn ok(
        &self,
        qp: &mut Qp<'a, H, SLOTS>,
        op: Op,
        protection: Protection,
        buf: Buf<'a, H>,
        what: &str,
    ) -> Result<Buf<'a, H>, Reason> {
        self.ok_blocks(qp, op, buf, self.blocks, protection, what)
    }

    /// As [`ok`](Self::ok), over `n` blocks from LBA 0.
    fn ok_blocks(
        &self,
        qp: &mut Qp<'a, H, SLOTS>,
        op: Op,
        buf: Buf<'a, H>,
        n: u32,
        protection: Protection,
        what: &str,
    ) -> Result<Buf<'a, H>, Reason> {
        match self.run_blocks(qp, op, protection, buf, n)? {
            (Ok(()), buf) => Ok(buf),
            (Err(e), _) => Err(reason!("{what}: {e}")),
        }
    }

    /// As [`run`](Self::run), and the command must fail with media error
    /// `sc` (an end-to-end check).
    fn fails(
        &self,
        qp: &mut Qp<'a, H, SLOTS>,
        op: Op,
        protection: Protection,
        buf: Buf<'a, H>,
        sc: StatusCode,
        what: &str,
    ) -> Result<Buf<'a, H>, Reason> {
        match self.run(qp, op, protection, buf)? {
            (Err(Error::Command(s)), buf)
                if s.sct() == StatusCodeType::MEDIA_DATA_INTEGRITY && s.sc() == sc =>
            {
                Ok(buf)
            }
            (other, _) => Err(reason!("{what}: {other:?}, expected {}", sc.0)),
        }
    }
}

/// Fills `buf` with bytes from `seed` (data and metadata alike).
fn fill(buf: &mut [u8], seed: u8) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(13).wrapping_add(seed) ^ (i >> 9) as u8;
    }
}

/// Runs the checks of a namespace with metadata.
pub(crate) fn run_namespace<H: Hal>(
    ctrlr: &Controller<Fh<H>>,
    ns: Namespace,
    label: &str,
    options: &Options,
    out: &mut dyn Report,
    t: &mut Totals,
) {
    let nsid = ns.id();
    let name = |check: &str| -> Reason { reason!("{label} ns{nsid} {check}") };
    let mut qp: Qp<'_, H, SLOTS> = match ctrlr
        .create_io_qpair(QpairOptions::default().with_max_transfer_bytes(options.max_transfer))
    {
        Ok(q) => q,
        Err(e) => {
            t.record(out, format_args!("{}", name("create I/O queue pair")), Outcome::Failed(reason!("{e}")));
            return;
        }
    };
    // Up to 4 blocks, within the transfer limit (which an extended LBA's
    // metadata counts against).
    let per_block = ns.buffer_bytes(1, false).max(1);
    let fit = if ns.extended_lba() {
        qp.max_transfer_bytes() / per_block
    } else {
        qp.max_transfer_bytes() / ns.block_size() as usize
    };
    let blocks = (fit.min(4) as u64).min(ns.blocks()) as u32;
    if blocks == 0 {
        t.record(
            out,
            format_args!("{}", name("metadata I/O")),
            Outcome::Skipped(reason!("transfer limit below one block")),
        );
        return;
    }
    // With separate metadata, a window past the transfer limit (at most 2
    // MiB of buffer) for the split check.
    let split_blocks = (qp.max_transfer_bytes() / ns.block_size() as usize + 1) as u64;
    let window = if !ns.extended_lba()
        && split_blocks <= ns.blocks()
        && ns.buffer_bytes(split_blocks as u32, false) <= 2 << 20
    {
        split_blocks as u32
    } else {
        blocks
    };
    let cx = Cx { ctrlr, ns, timeout: options.io_timeout, blocks, window };
    let layout = if cx.ns.extended_lba() { "interleaved" } else { "after the data (MPTR)" };
    out.line(format_args!(
        "{label} ns{nsid}: {} blocks checked with {} metadata bytes each, {layout}, protection type {} ({}, {} of the metadata)",
        blocks,
        cx.ns.metadata_size(),
        cx.ns.pi_type(),
        match cx.ns.pi_format() {
            Some(nvme_nostd::PiFormat::Guard64) => "64-bit guard",
            Some(_) => "16-bit guard",
            None => "no tuple",
        },
        if cx.ns.pi_first() { "first bytes" } else { "last bytes" },
    ));

    // Saved with their metadata, as they are (no checks).
    let saved = cx
        .buffer(cx.ns.buffer_bytes(cx.window, false))
        .and_then(|b| cx.ok_blocks(&mut qp, Op::Read, b, cx.window, Protection::none(), "save"));
    let saved = match saved {
        Ok(b) => {
            t.record(out, format_args!("{}", name("save blocks and metadata")), Outcome::Ok);
            b
        }
        Err(why) => {
            t.record(out, format_args!("{}", name("save blocks and metadata")), Outcome::Failed(why));
            return;
        }
    };
    t.record(
        out,
        format_args!("{}", name("data and metadata written and read back")),
        round_trip(&cx, &mut qp).into(),
    );
    t.record(
        out,
        format_args!("{}", name("metadata caller errors refused")),
        caller_errors(&cx, &mut qp).into(),
    );
    if cx.ns.pi_type() != 0 {
        t.record(
            out,
            format_args!("{}", name("host protection information checked")),
            host_pi(&cx, &mut qp).into(),
        );
        t.record(out, format_args!("{}", name("end-to-end check errors")), check_errors(&cx, &mut qp).into());
        t.record(out, format_args!("{}", name("PRACT inserts and strips")), pract(&cx, &mut qp).into());
        let outcome = match cx.ns.pi_format() {
            _ if !(cx.ctrlr.identify().oncs.copy() && cx.ctrlr.identify().ocfs & 1 != 0) => {
                Outcome::Skipped(reason!("the controller has no Copy of format 0h"))
            }
            _ if cx.blocks < 2 => Outcome::Skipped(reason!("one block: nothing to copy it to")),
            Some(nvme_nostd::PiFormat::Guard16) => copy_pi(&cx, &mut qp).into(),
            _ => copy_pi_refused(&cx, &mut qp).into(),
        };
        t.record(out, format_args!("{}", name("copy with protection information")), outcome);
        // With the 16-bit guard only: QEMU 7.2 leaves a zero guard on a
        // zeroed block of a 64-bit guard namespace, where CRC-64/NVME of
        // zeros is not zero (the simulator computes it).
        if cx.ctrlr.identify().oncs.write_zeroes() && cx.ns.pi_format() == Some(nvme_nostd::PiFormat::Guard16)
        {
            let outcome = zeroes_pract(&cx, &mut qp).into();
            t.record(out, format_args!("{}", name("write zeroes with PRACT")), outcome);
        }
    }
    if cx.window > cx.blocks {
        let outcome = split_round_trip(&cx, &mut qp).into();
        t.record(out, format_args!("{}", name("separate metadata split at the transfer limit")), outcome);
    }
    // Written back exactly, then read back to prove it.
    let restore = restore(&cx, &mut qp, saved);
    t.record(out, format_args!("{}", name("restore blocks and metadata")), restore.into());
}

fn restore<'a, H: Hal>(cx: &Cx<'a, H>, qp: &mut Qp<'a, H, SLOTS>, saved: Buf<'a, H>) -> Result<(), Reason> {
    let n = cx.window;
    let saved = cx.ok_blocks(qp, Op::Write, saved, n, Protection::none(), "write back")?;
    let back = cx.buffer(cx.ns.buffer_bytes(n, false))?;
    let back = cx.ok_blocks(qp, Op::Read, back, n, Protection::none(), "read back")?;
    if let Some(at) = back.iter().zip(saved.iter()).position(|(a, b)| a != b) {
        return Err(reason!("restored byte {at} differs"));
    }
    Ok(())
}

/// Data and separate metadata over more blocks than one command carries,
/// written and read back in one call each: the driver splits them, each
/// command naming its part of the metadata by its own MPTR.
fn split_round_trip<'a, H: Hal>(cx: &Cx<'a, H>, qp: &mut Qp<'a, H, SLOTS>) -> Result<(), Reason> {
    let (n, len) = (cx.window, cx.ns.buffer_bytes(cx.window, false));
    let mut w = cx.buffer(len)?;
    fill(&mut w, 0x73);
    let before = qp.stats().submitted;
    let w = cx.ok_blocks(qp, Op::Write, w, n, Protection::none(), "split write")?;
    if qp.stats().submitted - before < 2 {
        return Err(reason!("{n} blocks went out as one command"));
    }
    let r = cx.ok_blocks(qp, Op::Read, cx.buffer(len)?, n, Protection::none(), "split read")?;
    match r.iter().zip(w.iter()).position(|(a, b)| a != b) {
        Some(at) => Err(reason!("byte {at} of {len} read back differs")),
        None => Ok(()),
    }
}

/// Data and metadata (protection information as plain bytes, unchecked)
/// written and read back.
fn round_trip<'a, H: Hal>(cx: &Cx<'a, H>, qp: &mut Qp<'a, H, SLOTS>) -> Result<(), Reason> {
    let mut w = cx.buffer(cx.bytes())?;
    fill(&mut w, 0x31);
    let w = cx.ok(qp, Op::Write, Protection::none(), w, "write")?;
    let mut r = cx.buffer(cx.bytes())?;
    r.fill(0xa5);
    let r = cx.ok(qp, Op::Read, Protection::none(), r, "read")?;
    match r.iter().zip(w.iter()).position(|(a, b)| a != b) {
        Some(at) => Err(reason!("byte {at} of {} read back differs", cx.bytes())),
        None => Ok(()),
    }
}

/// A buffer without room for the metadata, and protection asked of a
/// namespace without it: refused before anything is sent.
fn caller_errors<'a, H: Hal>(cx: &Cx<'a, H>, qp: &mut Qp<'a, H, SLOTS>) -> Result<(), Reason> {
    let short = cx.ns.block_size() as usize * cx.blocks as usize;
    let mut buf = cx.buffer(short)?;
    if !buf.set_window(0, short) {
        return Err(reason!("buffer window"));
    }
    match qp.read(&cx.ns, 0, cx.blocks, buf, 0) {
        Err(e) if matches!(e.error, Error::BufferTooSmall { .. }) => {}
        Err(e) => return Err(reason!("a buffer for the data alone: {}", e.error)),
        Ok(_) => return Err(reason!("a buffer for the data alone was accepted")),
    }
    if cx.ns.pi_type() == 0 {
        let refused = qp.read_pi(
            &cx.ns,
            0,
            cx.blocks,
            IoFlags::default(),
            Protection::check_all(),
            cx.buffer(cx.bytes())?,
            0,
        );
        match refused.map_err(|e| e.error) {
            Err(Error::InvalidArgument(Argument::ProtectionInformation)) => {}
            other => {
                return Err(reason!("protection checks without protection information: {:?}", other.err()))
            }
        }
    }
    Ok(())
}

/// The namespace's protection information tuple size (8, or 16 with the
/// 64-bit guard).
fn tuple_size<H: Hal>(cx: &Cx<'_, H>) -> usize {
    cx.ns.pi_format().map_or(8, |f| f.tuple_size())
}

/// Where block `i`'s tuple lies in a buffer of the check's layout.
fn tuple_at<H: Hal>(cx: &Cx<'_, H>, i: usize) -> usize {
    let (bs, ms, n) = (cx.ns.block_size() as usize, usize::from(cx.ns.metadata_size()), cx.blocks as usize);
    let meta = if cx.ns.extended_lba() { i * (bs + ms) + bs } else { n * bs + i * ms };
    meta + if cx.ns.pi_first() { 0 } else { ms - tuple_size(cx) }
}

/// Guards and tags the host computed, checked by the controller on the
/// write and on the read.
fn host_pi<'a, H: Hal>(cx: &Cx<'a, H>, qp: &mut Qp<'a, H, SLOTS>) -> Result<(), Reason> {
    let mut w = cx.buffer(cx.bytes())?;
    fill(&mut w, 0x47);
    fill_protection_information(&cx.ns, cx.blocks, &mut w, 0x0e2e, 0).map_err(|e| reason!("fill: {e}"))?;
    let check = Protection::check_all().with_app_tag(0x0e2e, 0xffff).with_reference_tag(0);
    let check = if cx.ns.pi_type() == 3 { Protection { check_ref_tag: false, ..check } } else { check };
    let w = cx.ok(qp, Op::Write, check, w, "checked write")?;
    let r = cx.ok(qp, Op::Read, check, cx.buffer(cx.bytes())?, "checked read")?;
    match r.iter().zip(w.iter()).position(|(a, b)| a != b) {
        Some(at) => Err(reason!("byte {at} read back differs")),
        None => Ok(()),
    }
}

/// A wrong guard fails the write's check, and, written unchecked, the
/// read's; a wrong application tag and (types 1 and 2) a wrong reference
/// tag fail theirs.
fn check_errors<'a, H: Hal>(cx: &Cx<'a, H>, qp: &mut Qp<'a, H, SLOTS>) -> Result<(), Reason> {
    let mut w = cx.buffer(cx.bytes())?;
    fill(&mut w, 0x59);
    fill_protection_information(&cx.ns, cx.blocks, &mut w, 0x0e2e, 0).map_err(|e| reason!("fill: {e}"))?;
    let last = tuple_at(cx, cx.blocks as usize - 1);
    w[last] ^= 0x10; // the last block's guard
    let guard = Protection { check_guard: true, ..Protection::none() };
    let w =
        cx.fails(qp, Op::Write, guard, w, media::END_TO_END_GUARD_CHECK_ERROR, "write with a wrong guard")?;
    cx.ok(qp, Op::Write, Protection::none(), w, "unchecked write of a wrong guard")?;
    let r = cx.buffer(cx.bytes())?;
    let r = cx.fails(qp, Op::Read, guard, r, media::END_TO_END_GUARD_CHECK_ERROR, "read of a wrong guard")?;
    cx.ok(qp, Op::Read, Protection::none(), r, "unchecked read of a wrong guard")?;
    // Good guards again; then the tags.
    let mut w = cx.buffer(cx.bytes())?;
    fill(&mut w, 0x5a);
    fill_protection_information(&cx.ns, cx.blocks, &mut w, 0x0e2e, 0).map_err(|e| reason!("fill: {e}"))?;
    if cx.ns.pi_type() != 3 {
        // Block 0's reference tag off by one (its last byte ends the
        // tuple), written unchecked.
        let last_byte = tuple_at(cx, 0) + tuple_size(cx) - 1;
        w[last_byte] ^= 1;
    }
    cx.ok(qp, Op::Write, Protection::none(), w, "unchecked write")?;
    let app = Protection { check_app_tag: true, ..Protection::none() }.with_app_tag(0x0e2f, 0xffff);
    let r = cx.buffer(cx.bytes())?;
    let r =
        cx.fails(qp, Op::Read, app, r, media::END_TO_END_APPLICATION_TAG_CHECK_ERROR, "read, wrong tag")?;
    let masked = app.with_app_tag(0x0e2f, 0xfff0);
    let r = cx.ok(qp, Op::Read, masked, r, "read with the differing bit masked off")?;
    if cx.ns.pi_type() != 3 {
        let reference = Protection { check_ref_tag: true, ..Protection::none() }.with_reference_tag(0);
        cx.fails(
            qp,
            Op::Read,
            reference,
            r,
            media::END_TO_END_REFERENCE_TAG_CHECK_ERROR,
            "read, wrong ref tag",
        )?;
    }
    Ok(())
}

/// Copy with protection information (PRINFOR, PRINFOW): source blocks
/// (not at LBA 0, so that each range's expected reference tag is not zero)
/// written with PRACT are checked as the copy reads them (guard,
/// application tag, and reference tag against the range's expected one),
/// the destination gets tuples the controller makes for its own LBAs
/// (PRINFOW PRACT) and reads back fully checked, with the source's data.
/// The same copy with one expected tag wrong fails: the application tag,
/// and on type 2 the reference tag (on type 1 an expected reference tag
/// other than the LBA is itself invalid: Invalid Protection Information).
fn copy_pi<'a, H: Hal>(cx: &Cx<'a, H>, qp: &mut Qp<'a, H, SLOTS>) -> Result<(), Reason> {
    let h = cx.blocks / 2;
    let (ns, flags) = (&cx.ns, IoFlags::default());
    let (source, destination) = (u64::from(h), 0u64);
    let mut w = cx.buffer(ns.buffer_bytes(h, true))?;
    fill(&mut w, 0x3c);
    let insert = Protection::pract().with_app_tag(0x0c0c, 0);
    let cid =
        qp.write_pi(ns, source, h, flags, insert, w, 0).map_err(|e| reason!("write refused: {}", e.error))?;
    qp.wait(cid, cx.timeout, |_| {})
        .map_err(|e| reason!("wait: {e}"))?
        .result()
        .map_err(|e| reason!("write with PRACT: {e}"))?;
    let checked = Protection::check_all().with_app_tag(0x0c0c, 0xffff);
    let checked = if ns.pi_type() == 3 { Protection { check_ref_tag: false, ..checked } } else { checked };
    let run = |qp: &mut Qp<'a, H, SLOTS>,
               range: CopyRange,
               read: Protection|
     -> Result<Result<(), Error>, Reason> {
        // PRACT in both (the controller refuses a copy where they differ).
        let read = Protection { pract: true, ..read };
        let cid = qp
            .copy_pi(ns, destination, &[range], read, insert, flags, cx.buffer(4096)?, 0)
            .map_err(|e| reason!("copy refused: {}", e.error))?;
        let done = qp.wait(cid, cx.timeout, |_| {}).map_err(|e| reason!("wait: {e}"))?;
        Ok(done.result())
    };
    run(qp, CopyRange::new(source, h), checked)?.map_err(|e| reason!("checked copy: {e}"))?;
    // The destination, read fully checked (its reference tags are its own
    // LBAs), holds the source's data.
    let read = |qp: &mut Qp<'a, H, SLOTS>, lba: u64, p: Protection| -> Result<Buf<'a, H>, Reason> {
        let cid = qp
            .read_pi(ns, lba, h, flags, p, cx.buffer(ns.buffer_bytes(h, false))?, 0)
            .map_err(|e| reason!("read refused: {}", e.error))?;
        let done = qp.wait(cid, cx.timeout, |_| {}).map_err(|e| reason!("wait: {e}"))?;
        done.result().map_err(|e| reason!("read of {lba}: {e}"))?;
        done.buffer.ok_or_else(|| reason!("read without its buffer"))
    };
    let src = read(qp, source, Protection::none())?;
    let dst = read(qp, destination, checked)?;
    let (bs, ms) = (ns.block_size() as usize, usize::from(ns.metadata_size()));
    let data = |i: usize| -> core::ops::Range<usize> {
        let at = if ns.extended_lba() { i * (bs + ms) } else { i * bs };
        at..at + bs
    };
    if let Some(i) = (0..h as usize).find(|&i| src[data(i)] != dst[data(i)]) {
        return Err(reason!("block {i} of the copy differs from its source"));
    }
    // The check's own error; on QEMU also Internal Error, which 7.2 reports
    // for a check that fails inside a Copy (the same checks on a read give
    // the specification's codes, above).
    let qemu = cx.ctrlr.identify().vid == 0x1b36;
    let failed = |r: Result<(), Error>, sct: StatusCodeType, sc: StatusCode| match r {
        Err(Error::Command(s)) if s.sct() == sct && s.sc() == sc => true,
        Err(Error::Command(s)) => {
            qemu && s.sct() == StatusCodeType::GENERIC
                && s.sc() == nvme_nostd::spec::status::generic::INTERNAL_ERROR
        }
        _ => false,
    };
    let media_sct = StatusCodeType::MEDIA_DATA_INTEGRITY;
    let app = checked.with_app_tag(0x0c0d, 0xffff);
    let r = run(qp, CopyRange::new(source, h), app)?;
    if !failed(r, media_sct, media::END_TO_END_APPLICATION_TAG_CHECK_ERROR) {
        return Err(reason!("a copy expecting the wrong application tag: {r:?}"));
    }
    let wrong_tag = CopyRange::new(source, h).with_reference_tag(source as u32 + 1);
    match ns.pi_type() {
        2 => {
            let r = run(qp, wrong_tag, checked)?;
            if !failed(r, media_sct, media::END_TO_END_REFERENCE_TAG_CHECK_ERROR) {
                return Err(reason!("a copy expecting the wrong reference tag: {r:?}"));
            }
        }
        1 => {
            let r = run(qp, wrong_tag, checked)?;
            let invalid = failed(
                r,
                StatusCodeType::COMMAND_SPECIFIC,
                nvme_nostd::spec::status::command_specific::INVALID_PROTECTION_INFORMATION,
            );
            if !invalid && !failed(r, media_sct, media::END_TO_END_REFERENCE_TAG_CHECK_ERROR) {
                return Err(reason!("type 1, an expected reference tag other than the LBA: {r:?}"));
            }
        }
        _ => {}
    }
    // PRACT on one side only: refused unsent.
    let before = qp.stats().submitted;
    let range = [CopyRange::new(source, h)];
    match qp.copy_pi(ns, destination, &range, checked, insert, flags, cx.buffer(4096)?, 0) {
        Err(e) if e.error == Error::InvalidArgument(Argument::CopyPract) => {}
        other => return Err(reason!("PRACT on the write only: {:?}", other.err().map(|e| e.error))),
    }
    if qp.stats().submitted != before {
        return Err(reason!("a refused copy reached the queue"));
    }
    Ok(())
}

/// Copy with protection information on a namespace with the 64-bit guard
/// (source ranges of format 1h, which the driver does not build): refused
/// unsent.
fn copy_pi_refused<'a, H: Hal>(cx: &Cx<'a, H>, qp: &mut Qp<'a, H, SLOTS>) -> Result<(), Reason> {
    let before = qp.stats().submitted;
    let refused = qp.copy_pi(
        &cx.ns,
        1,
        &[CopyRange::new(0, 1)],
        Protection::check_all(),
        Protection::pract(),
        IoFlags::default(),
        cx.buffer(4096)?,
        0,
    );
    match refused {
        Err(e) if e.error == Error::Unsupported(nvme_nostd::Feature::CopyFormat1) => {}
        other => return Err(reason!("copy with PI, 64-bit guard: {:?}", other.err().map(|e| e.error))),
    }
    if qp.stats().submitted != before {
        return Err(reason!("a refused copy reached the queue"));
    }
    Ok(())
}

/// Write Zeroes with PRACT: the controller writes each zero block's
/// protection information, which a fully checked read then accepts.
fn zeroes_pract<'a, H: Hal>(cx: &Cx<'a, H>, qp: &mut Qp<'a, H, SLOTS>) -> Result<(), Reason> {
    let tags = Protection::pract().with_app_tag(0x0e2e, 0).with_reference_tag(0);
    let cid = qp
        .write_zeroes_pi(&cx.ns, 0, cx.blocks, false, nvme_nostd::IoFlags::default(), tags, 0)
        .map_err(|e| reason!("write zeroes: {}", e.error))?;
    let done = qp.wait(cid, cx.timeout, |_| {}).map_err(|e| reason!("write zeroes: {e}"))?;
    done.result().map_err(|e| reason!("write zeroes with PRACT: {e}"))?;
    let check = Protection::check_all().with_app_tag(0x0e2e, 0xffff).with_reference_tag(0);
    let check = if cx.ns.pi_type() == 3 { Protection { check_ref_tag: false, ..check } } else { check };
    cx.ok(qp, Op::Read, check, cx.buffer(cx.bytes())?, "checked read of the zeroes")?;
    Ok(())
}

/// PRACT on a write: the controller inserts the tuples (the buffer holds
/// the data alone where the metadata is only the tuple), and they are
/// what the host computes; PRACT on a read strips them.
fn pract<'a, H: Hal>(cx: &Cx<'a, H>, qp: &mut Qp<'a, H, SLOTS>) -> Result<(), Reason> {
    let size = tuple_size(cx);
    let data_only = usize::from(cx.ns.metadata_size()) == size;
    let len = cx.ns.buffer_bytes(cx.blocks, true);
    let mut w = cx.buffer(len)?;
    fill(&mut w, 0x6b);
    let insert = Protection::pract().with_app_tag(0x0e2e, 0).with_reference_tag(0);
    let w = cx.ok(qp, Op::Write, insert, w, "write with PRACT")?;
    // What the controller stored, read whole and unchecked, against the
    // host's computation over the same data.
    let stored = cx.ok(qp, Op::Read, Protection::none(), cx.buffer(cx.bytes())?, "read")?;
    let mut expected = cx.buffer(cx.bytes())?;
    if data_only {
        let (bs, ms) = (cx.ns.block_size() as usize, usize::from(cx.ns.metadata_size()));
        for i in 0..cx.blocks as usize {
            let (from, to) = (i * bs, if cx.ns.extended_lba() { i * (bs + ms) } else { i * bs });
            expected[to..to + bs].copy_from_slice(&w[from..from + bs]);
        }
    } else {
        expected.copy_from_slice(&w);
    }
    fill_protection_information(&cx.ns, cx.blocks, &mut expected, 0x0e2e, 0)
        .map_err(|e| reason!("fill: {e}"))?;
    for i in 0..cx.blocks as usize {
        let at = tuple_at(cx, i);
        let (got, want) = (&stored[at..at + size], &expected[at..at + size]);
        // Type 3's reference tag is the host's to choose: guard and
        // application tag only (the first 4 bytes, or 10 with the 64-bit
        // guard).
        let compared = match (cx.ns.pi_type(), size) {
            (3, 16) => 10,
            (3, _) => 4,
            _ => size,
        };
        if got[..compared] != want[..compared] {
            return Err(reason!("block {i}: the controller's tuple {got:02x?}, the host's {want:02x?}"));
        }
    }
    let check = Protection::check_all().with_app_tag(0x0e2e, 0xffff).with_reference_tag(0);
    let strip = Protection { pract: true, ..check };
    let strip = if cx.ns.pi_type() == 3 { Protection { check_ref_tag: false, ..strip } } else { strip };
    let r = cx.ok(qp, Op::Read, strip, cx.buffer(len)?, "read with PRACT")?;
    match r.iter().zip(w.iter()).position(|(a, b)| a != b) {
        Some(at) if data_only => Err(reason!("byte {at} of the stripped read differs")),
        _ => Ok(()),
    }
}
