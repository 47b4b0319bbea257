//! The checks of a zoned namespace (QEMU: `nvme-ns,zoned=true`; a scratch
//! namespace, whose blocks are not restored): the zone report decoded,
//! reset, writes at the write pointer and the Zone Invalid Write of one
//! elsewhere, Zone Append and the LBAs it returns, data read back, finish
//! and the write it then refuses, the report filtered by state, and the
//! caller errors refused unsent.

use crate::io::Ctx;
use crate::report::{Outcome, Reason, Report, Totals};
use crate::{pattern, reason, Buf, Fh, Options, Qp, SLOTS};
use nvme_nostd::hal_traits::Hal;
use nvme_nostd::spec::status::{command_specific, StatusCodeType};
use nvme_nostd::{
    Argument, Controller, Error, IoFlags, Namespace, QpairOptions, ZoneReport, ZoneSendAction, ZoneState,
};

/// A zone report's count and its first zone's (start, state, write
/// pointer).
type Summary = (u64, Option<(u64, ZoneState, u64)>);

/// The zone checks' helpers, on the I/O checks' context.
impl<'a, H: Hal> Ctx<'a, H> {
    fn wait(
        &self,
        qp: &mut Qp<'a, H, SLOTS>,
        cid: nvme_nostd::Cid,
    ) -> Result<nvme_nostd::Completion<Buf<'a, H>, u64>, Reason> {
        qp.wait(cid, self.timeout, |_| {}).map_err(|e| reason!("wait: {e}"))
    }

    /// Zone Management Send, which must succeed.
    fn send(
        &self,
        qp: &mut Qp<'a, H, SLOTS>,
        zslba: u64,
        action: ZoneSendAction,
        all: bool,
    ) -> Result<(), Reason> {
        let cid = qp
            .zone_management_send(&self.ns, zslba, action, all, 0)
            .map_err(|e| reason!("zone send: {}", e.error))?;
        self.wait(qp, cid)?.result().map_err(|e| reason!("zone action {}: {e}", action.0))
    }

    /// The report of the zones from `slba` on (state filter `state`): the
    /// header's count and the first descriptor's (start, state, write
    /// pointer).
    fn report(
        &self,
        qp: &mut Qp<'a, H, SLOTS>,
        slba: u64,
        state: Option<ZoneState>,
    ) -> Result<Summary, Reason> {
        let cid = qp
            .report_zones(&self.ns, slba, state, false, self.buffer(4096)?, 0)
            .map_err(|e| reason!("report: {}", e.error))?;
        let done = self.wait(qp, cid)?;
        done.result().map_err(|e| reason!("report: {e}"))?;
        let data = done.buffer.ok_or_else(|| reason!("report without its buffer"))?;
        let report = ZoneReport::parse(&data).map_err(|e| reason!("report: {e}"))?;
        let first = report.zones().next().map(|z| (z.zslba, z.state(), z.wp));
        Ok((report.zone_count(), first))
    }

    /// Zone Management Send: its result, whatever it is.
    fn try_send(
        &self,
        qp: &mut Qp<'a, H, SLOTS>,
        zslba: u64,
        action: ZoneSendAction,
    ) -> Result<Result<(), Error>, Reason> {
        let cid = qp
            .zone_management_send(&self.ns, zslba, action, false, 0)
            .map_err(|e| reason!("zone send: {}", e.error))?;
        Ok(self.wait(qp, cid)?.result())
    }

    /// Set Zone Descriptor Extension of the zone at `zslba` to `ext` bytes
    /// of [`ext_byte`]: its result.
    fn set_extension(
        &self,
        qp: &mut Qp<'a, H, SLOTS>,
        zslba: u64,
        ext: usize,
    ) -> Result<Result<(), Error>, Reason> {
        let mut b = self.buffer(ext)?;
        b.iter_mut().enumerate().for_each(|(i, x)| *x = ext_byte(i));
        let cid = qp
            .set_zone_descriptor_extension(&self.ns, zslba, b, 0)
            .map_err(|e| reason!("set extension: {}", e.error))?;
        Ok(self.wait(qp, cid)?.result())
    }

    /// The extended report's first zone from `slba`: its start and state,
    /// whether its extension is valid, and whether the extension is
    /// `ext` bytes of [`ext_byte`].
    fn extended(
        &self,
        qp: &mut Qp<'a, H, SLOTS>,
        slba: u64,
        ext: usize,
    ) -> Result<(u64, ZoneState, bool, bool), Reason> {
        let cid = qp
            .report_zones_extended(&self.ns, slba, None, true, self.buffer(64 + 2 * (64 + ext))?, 0)
            .map_err(|e| reason!("extended report: {}", e.error))?;
        let done = self.wait(qp, cid)?;
        done.result().map_err(|e| reason!("extended report: {e}"))?;
        let data = done.buffer.ok_or_else(|| reason!("report without its buffer"))?;
        let report = ZoneReport::parse_extended(&data, ext).map_err(|e| reason!("report: {e}"))?;
        let (d, e) = report.zones_with_extensions().next().ok_or_else(|| reason!("no zone in the report"))?;
        let as_set = e.len() == ext && e.iter().enumerate().all(|(i, &b)| b == ext_byte(i));
        Ok((d.zslba, d.state(), d.extension_valid(), as_set))
    }

    fn write(
        &self,
        qp: &mut Qp<'a, H, SLOTS>,
        lba: u64,
        blocks: u32,
        seed: u64,
    ) -> Result<Result<(), Error>, Reason> {
        let mut b = self.buffer(blocks as usize * self.bs)?;
        pattern::fill(&mut b, seed, lba, self.bs);
        let cid = qp.write(&self.ns, lba, blocks, b, 0).map_err(|e| reason!("write: {}", e.error))?;
        Ok(self.wait(qp, cid)?.result())
    }
}

/// Byte `i` of the descriptor extensions the checks set.
fn ext_byte(i: usize) -> u8 {
    (i as u8).wrapping_mul(31) ^ 0x5c
}

fn zone_error(result: Result<(), Error>, sc: nvme_nostd::spec::status::StatusCode) -> bool {
    matches!(result, Err(Error::Command(s)) if s.sct() == StatusCodeType::COMMAND_SPECIFIC && s.sc() == sc)
}

/// Runs the checks of a zoned namespace.
pub(crate) fn run_namespace<H: Hal>(
    ctrlr: &Controller<Fh<H>>,
    ns: Namespace,
    label: &str,
    options: &Options,
    out: &mut dyn Report,
    t: &mut Totals,
) {
    let nsid = ns.id();
    let Some(zones) = ns.zones() else { return };
    out.line(format_args!(
        "{label} ns{nsid}: zoned, {} blocks a zone, {} zones, active {:?}, open {:?}, append limit {:?} bytes",
        zones.zone_blocks,
        ns.blocks() / zones.zone_blocks,
        zones.max_active,
        zones.max_open,
        zones.append_limit_bytes
    ));
    let mut qp: Qp<'_, H, SLOTS> =
        match ctrlr.create_io_qpair(QpairOptions::default().with_max_transfer_bytes(options.max_transfer)) {
            Ok(q) => q,
            Err(e) => {
                t.record(
                    out,
                    format_args!("{label} ns{nsid} create I/O queue pair"),
                    Outcome::Failed(reason!("{e}")),
                );
                return;
            }
        };
    let bs = ns.block_size() as usize;
    let cx = Ctx { ctrlr, ns, bs, timeout: options.io_timeout };
    let outcome = check_zones(&cx, &mut qp, zones.zone_blocks);
    t.record(
        out,
        format_args!("{label} ns{nsid} zones: report, reset, write pointer, append, finish"),
        outcome.into(),
    );
    let outcome = check_zone_errors(&cx, &mut qp, zones.zone_blocks);
    t.record(out, format_args!("{label} ns{nsid} zone caller errors refused"), outcome.into());
    let outcome = match zones.descriptor_extension_bytes {
        0 => check_no_extensions(&cx, &mut qp).into(),
        ext => check_extensions(&cx, &mut qp, zones.zone_blocks, ext).into(),
    };
    t.record(out, format_args!("{label} ns{nsid} zone descriptor extensions"), outcome);
    let outcome = match (zones.max_open, zones.max_active) {
        (Some(open), Some(active)) if open < active && active < 8 => {
            check_limits(&cx, &mut qp, zones.zone_blocks, open, active).into()
        }
        _ => Outcome::Skipped(reason!(
            "no open and active limits to run into (QEMU: zoned.max_open=2,zoned.max_active=3)"
        )),
    };
    t.record(out, format_args!("{label} ns{nsid} zone limits: too many open, too many active"), outcome);
}

/// Without descriptor extensions, both extension commands are refused
/// unsent.
fn check_no_extensions<'a, H: Hal>(cx: &Ctx<'a, H>, qp: &mut Qp<'a, H, SLOTS>) -> Result<(), Reason> {
    let before = qp.stats().submitted;
    let none = Error::Unsupported(nvme_nostd::Feature::ZoneDescriptorExtension);
    match qp.set_zone_descriptor_extension(&cx.ns, 0, cx.buffer(64)?, 0) {
        Err(e) if e.error == none => {}
        other => return Err(reason!("set extension without ZDES: {:?}", other.err().map(|e| e.error))),
    }
    match qp.report_zones_extended(&cx.ns, 0, None, false, cx.buffer(4096)?, 0) {
        Err(e) if e.error == none => {}
        other => return Err(reason!("extended report without ZDES: {:?}", other.err().map(|e| e.error))),
    }
    if qp.stats().submitted != before {
        return Err(reason!("a refused zone command reached the queue"));
    }
    Ok(())
}

/// Descriptor extensions: set on an empty zone (which becomes closed),
/// read back by the extended report with its valid bit; refused by the
/// controller on a zone that is not empty, and unsent from a short buffer;
/// gone after a reset.
fn check_extensions<'a, H: Hal>(
    cx: &Ctx<'a, H>,
    qp: &mut Qp<'a, H, SLOTS>,
    zone: u64,
    ext: usize,
) -> Result<(), Reason> {
    let z = 2 * zone;
    cx.send(qp, z, ZoneSendAction::RESET, false)?;
    cx.set_extension(qp, z, ext)?.map_err(|e| reason!("set extension: {e}"))?;
    match cx.extended(qp, z, ext)? {
        (start, ZoneState::CLOSED, true, true) if start == z => {}
        (start, state, valid, as_set) => {
            return Err(reason!(
            "zone {start} after its extension was set: {state:?}, valid {valid}, extension as set {as_set}"
        ))
        }
    }
    // A zone with data is no longer empty: the controller refuses.
    let w = 3 * zone;
    cx.send(qp, w, ZoneSendAction::RESET, false)?;
    cx.write(qp, w, 1, 7)?.map_err(|e| reason!("write: {e}"))?;
    let refused = cx.set_extension(qp, w, ext)?;
    if !zone_error(refused, command_specific::INVALID_ZONE_STATE_TRANSITION) {
        return Err(reason!("an extension on a zone with data: {refused:?}"));
    }
    // Unsent from a buffer shorter than the extension.
    let before = qp.stats().submitted;
    match qp.set_zone_descriptor_extension(&cx.ns, z, cx.buffer(ext - 4)?, 0) {
        Err(e) if matches!(e.error, Error::BufferTooSmall { .. }) => {}
        other => return Err(reason!("a short extension buffer: {:?}", other.err().map(|e| e.error))),
    }
    if qp.stats().submitted != before {
        return Err(reason!("a refused extension reached the queue"));
    }
    cx.send(qp, 0, ZoneSendAction::RESET, true)?;
    match cx.extended(qp, z, ext)? {
        (start, ZoneState::EMPTY, false, _) if start == z => Ok(()),
        (start, state, valid, _) => {
            Err(reason!("zone {start} after reset: {state:?}, extension valid {valid}"))
        }
    }
}

/// Zone resources: `open` zones opened explicitly, one more is Too Many
/// Open Zones; `active` zones written and closed (closed zones that hold
/// data stay active), one more is Too Many Active Zones. Every zone reset
/// after.
fn check_limits<'a, H: Hal>(
    cx: &Ctx<'a, H>,
    qp: &mut Qp<'a, H, SLOTS>,
    zone: u64,
    open: u32,
    active: u32,
) -> Result<(), Reason> {
    let first = 4 * zone;
    let zones = cx.ns.blocks() / zone;
    if 4 + u64::from(active) + 1 > zones {
        return Err(reason!("{zones} zones are too few for the check"));
    }
    let outcome = (|| {
        cx.send(qp, 0, ZoneSendAction::RESET, true)?;
        for k in 0..u64::from(open) {
            cx.send(qp, first + k * zone, ZoneSendAction::OPEN, false)?;
        }
        let over = cx.try_send(qp, first + u64::from(open) * zone, ZoneSendAction::OPEN)?;
        if !zone_error(over, command_specific::TOO_MANY_OPEN_ZONES) {
            return Err(reason!("open zone {} of {open} allowed open: {over:?}", open + 1));
        }
        cx.send(qp, 0, ZoneSendAction::RESET, true)?;
        for k in 0..u64::from(active) {
            // A block in each: a closed zone that holds nothing is empty
            // again, and not active.
            let z = first + k * zone;
            cx.write(qp, z, 1, 3)?.map_err(|e| reason!("write to zone {z}: {e}"))?;
            cx.send(qp, z, ZoneSendAction::CLOSE, false)?;
        }
        let over = cx.try_send(qp, first + u64::from(active) * zone, ZoneSendAction::OPEN)?;
        if !zone_error(over, command_specific::TOO_MANY_ACTIVE_ZONES) {
            return Err(reason!("zone {} of {active} allowed active: {over:?}", active + 1));
        }
        Ok(())
    })();
    let reset = cx.send(qp, 0, ZoneSendAction::RESET, true);
    outcome.and(reset)
}

fn check_zones<'a, H: Hal>(cx: &Ctx<'a, H>, qp: &mut Qp<'a, H, SLOTS>, zone: u64) -> Result<(), Reason> {
    // Zone 1 (its own blocks), reset.
    let z = zone;
    cx.send(qp, z, ZoneSendAction::RESET, false)?;
    match cx.report(qp, z, None)? {
        (n, Some((start, ZoneState::EMPTY, wp))) if n >= 1 && start == z && wp == z => {}
        other => return Err(reason!("zone {z} after reset: {other:?}")),
    }
    // Two blocks at the write pointer; one elsewhere is a Zone Invalid Write.
    cx.write(qp, z, 2, 1)?.map_err(|e| reason!("write at the write pointer: {e}"))?;
    let elsewhere = cx.write(qp, z + 5, 1, 1)?;
    if !zone_error(elsewhere, command_specific::ZONE_INVALID_WRITE) {
        return Err(reason!("a write off the write pointer: {elsewhere:?}"));
    }
    // Zone Append: the controller places the blocks, and says where.
    let mut expected = z + 2;
    for n in [3u32, 1] {
        let mut b = cx.buffer(n as usize * cx.bs)?;
        pattern::fill(&mut b, 1, expected, cx.bs);
        let cid = qp
            .zone_append(&cx.ns, z, n, IoFlags::default(), b, 0)
            .map_err(|e| reason!("append: {}", e.error))?;
        let done = cx.wait(qp, cid)?;
        done.result().map_err(|e| reason!("append: {e}"))?;
        if done.result64() != expected {
            return Err(reason!(
                "append of {n} landed at {}, the write pointer was {expected}",
                done.result64()
            ));
        }
        expected += u64::from(n);
    }
    // Everything reads back.
    let r = cx.buffer(6 * cx.bs)?;
    let cid = qp.read(&cx.ns, z, 6, r, 0).map_err(|e| reason!("read: {}", e.error))?;
    let done = cx.wait(qp, cid)?;
    done.result().map_err(|e| reason!("read: {e}"))?;
    let r = done.buffer.ok_or_else(|| reason!("read without its buffer"))?;
    if let Some(at) = pattern::first_mismatch(&r, 1, z, cx.bs) {
        return Err(reason!("zone read back: mismatch at byte {at}"));
    }
    // Finished, the zone is full and takes no write.
    cx.send(qp, z, ZoneSendAction::FINISH, false)?;
    match cx.report(qp, z, Some(ZoneState::FULL))? {
        (_, Some((start, ZoneState::FULL, _))) if start == z => {}
        other => return Err(reason!("zone {z} after finish, reported as full: {other:?}")),
    }
    let full = cx.write(qp, z + 6, 1, 1)?;
    if !zone_error(full, command_specific::ZONE_IS_FULL)
        && !zone_error(full, command_specific::ZONE_BOUNDARY_ERROR)
    {
        return Err(reason!("a write to a full zone: {full:?}"));
    }
    // Reset every zone: the namespace as it was.
    cx.send(qp, 0, ZoneSendAction::RESET, true)?;
    match cx.report(qp, z, None)? {
        (_, Some((_, ZoneState::EMPTY, wp))) if wp == z => Ok(()),
        other => Err(reason!("zone {z} after reset all: {other:?}")),
    }
}

fn check_zone_errors<'a, H: Hal>(
    cx: &Ctx<'a, H>,
    qp: &mut Qp<'a, H, SLOTS>,
    zone: u64,
) -> Result<(), Reason> {
    let before = qp.stats().submitted;
    let start = Error::InvalidArgument(Argument::ZoneStart);
    match qp.zone_management_send(&cx.ns, zone + 1, ZoneSendAction::RESET, false, 0) {
        Err(e) if e.error == start => {}
        other => return Err(reason!("reset of a block inside a zone: {:?}", other.err().map(|e| e.error))),
    }
    match qp.zone_management_send(&cx.ns, 0, ZoneSendAction(0x09), false, 0) {
        Err(e) if e.error == Error::InvalidArgument(Argument::ZoneAction) => {}
        other => return Err(reason!("an unnamed zone action: {:?}", other.err().map(|e| e.error))),
    }
    match qp.zone_append(&cx.ns, zone + 1, 1, IoFlags::default(), cx.buffer(cx.bs)?, 0) {
        Err(e) if e.error == start => {}
        other => return Err(reason!("append inside a zone: {:?}", other.err().map(|e| e.error))),
    }
    let mut small = cx.buffer(64)?;
    if !small.set_window(0, 60) {
        return Err(reason!("buffer window"));
    }
    match qp.report_zones(&cx.ns, 0, None, false, small, 0) {
        Err(e) if matches!(e.error, Error::BufferTooSmall { .. }) => {}
        other => return Err(reason!("a report into 60 bytes: {:?}", other.err().map(|e| e.error))),
    }
    if qp.stats().submitted != before {
        return Err(reason!("a refused zone command reached the queue"));
    }
    Ok(())
}
