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
