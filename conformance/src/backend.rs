//! Back-end failures, injected through [`FaultyHal`] on whatever back-end runs
//! the suite: a failed DMA allocation, a failed share, and registers that
//! read all ones (a removed device). The last check leaves the controller
//! marked removed, so it runs after every other.
//!
//! [`FaultyHal`]: nvme_nostd::hal_traits::faulty::FaultyHal

use crate::report::{Outcome, Reason, Report, Totals};
use crate::{reason, Buf, Fh};
use nvme_nostd::hal_traits::{Hal, HalErrorKind};
use nvme_nostd::{Controller, DmaBuffer, Error, IoQueuePair, Namespace, PollLimit, QpairOptions};

type SmallQp<'a, H, B> = IoQueuePair<'a, Fh<H>, B, u64, 4>;

fn small_options() -> QpairOptions {
    QpairOptions::default().with_entries(8).with_max_transfer_bytes(64 << 10)
}

/// Runs the back-end failure checks; `nsid` is a namespace whose I/O the
/// suite tested (none: only the checks that need no I/O).
pub(crate) fn run<H: Hal>(
    ctrlr: &Controller<Fh<H>>,
    nsid: Option<u32>,
    label: &str,
    out: &mut dyn Report,
    t: &mut Totals,
) {
    let name = |check: &str| -> Reason { reason!("{label} back-end: {check}") };
    t.record(
        out,
        format_args!("{}", name("failed DMA allocation leaves nothing behind")),
        check_alloc(ctrlr).into(),
    );
    let ns = nsid.and_then(|n| ctrlr.namespace(n).ok());
    let outcome = match &ns {
        Some(ns) => check_share(ctrlr, ns).into(),
        None => Outcome::Skipped(reason!("no namespace with plain I/O")),
    };
    t.record(out, format_args!("{}", name("failed share refused, then the share path works")), outcome);
    t.record(
        out,
        format_args!("{}", name("registers read all ones: removal reported once per request")),
        check_removal(ctrlr, ns.as_ref()).into(),
    );
}

/// Every DMA allocation of queue pair creation fails in turn: each time the
/// call fails cleanly with the back-end's error, and every page allocated
/// before the failure is back.
fn check_alloc<H: Hal>(ctrlr: &Controller<Fh<H>>) -> Result<(), Reason> {
    let hal = ctrlr.hal();
    let before = hal.live_pages();
    // Submission ring (unless it goes to the CMB), completion ring, PRP list
    // pages.
    let in_cmb = ctrlr
        .create_io_qpair::<Buf<'_, H>, u64, 16>(QpairOptions::default())
        .map_err(|e| reason!("{e}"))?
        .sq_in_cmb();
    for skip in 0..if in_cmb { 2 } else { 3 } {
        hal.fail_allocs(skip, 1);
        let r = ctrlr.create_io_qpair::<Buf<'_, H>, u64, 16>(QpairOptions::default());
        hal.fail_allocs(0, 0);
        match r {
            Err(Error::Hal(e)) if e.kind() == HalErrorKind::NoMemory => {}
            Err(e) => return Err(reason!("allocation {skip} failed: wrong error {e}")),
            Ok(_) => return Err(reason!("allocation {skip} failed, yet the queue pair was created")),
        }
        if hal.live_pages() != before {
            return Err(reason!("{} pages leaked after allocation {skip} failed", hal.live_pages() - before));
        }
    }
    // Nothing was held: a queue pair can be created (and dropped) again.
    let qp =
        ctrlr.create_io_qpair::<Buf<'_, H>, u64, 16>(QpairOptions::default()).map_err(|e| reason!("{e}"))?;
    drop(qp);
    if hal.live_pages() != before {
        return Err(reason!("{} pages leaked by a queue pair", hal.live_pages() - before));
    }
    Ok(())
}

/// With translation off, buffers go through `Hal::share`: a failed share is
/// refused with the back-end's error and the buffer back, nothing submitted;
/// then a read through the share path returns the same bytes as one through
/// the controller's own DMA memory.
fn check_share<H: Hal>(ctrlr: &Controller<Fh<H>>, ns: &Namespace) -> Result<(), Reason> {
    let hal = ctrlr.hal();
    let bs = ns.block_size() as usize;
    let timeout = core::time::Duration::from_secs(30);
    let mut qp: SmallQp<'_, H, Buf<'_, H>> =
        ctrlr.create_io_qpair(small_options()).map_err(|e| reason!("{e}"))?;
    // First through translation (the controller's own DMA memory)...
    let direct = DmaBuffer::new(hal, bs).map_err(|e| reason!("{e}"))?;
    let cid = qp.read(ns, 0, 1, direct, 0).map_err(|e| reason!("read: {}", e.error))?;
    let direct = qp.wait(cid, timeout, drop).map_err(|e| reason!("{e}"))?;
    direct.result().map_err(|e| reason!("read: {e}"))?;
    let direct = direct.buffer.ok_or_else(|| reason!("no buffer"))?;
    // ... then, with translation off, through `share`.
    let submitted = qp.stats().submitted;
    hal.set_translate_off(true);
    let result = (|| {
        hal.fail_shares(0, 1);
        let mut buf = DmaBuffer::new(hal, bs).map_err(|e| reason!("{e}"))?;
        buf.fill(0x5a);
        let e = qp.read(ns, 0, 1, buf, 1).err().ok_or_else(|| reason!("a failed share was submitted"))?;
        if !matches!(e.error, Error::Hal(h) if h.kind() == HalErrorKind::MapFailed) || e.buffer.len() != bs {
            return Err(reason!("wrong refusal: {}", e.error));
        }
        if qp.in_flight() != 0 || qp.stats().submitted != submitted {
            return Err(reason!("the refused request reached the queue"));
        }
        let cid = qp.read(ns, 0, 1, e.buffer, 2).map_err(|e| reason!("read: {}", e.error))?;
        let shared = qp.wait(cid, timeout, drop).map_err(|e| reason!("{e}"))?;
        shared.result().map_err(|e| reason!("read: {e}"))?;
        let shared = shared.buffer.ok_or_else(|| reason!("no buffer"))?;
        match shared.iter().zip(direct.iter()).position(|(a, b)| a != b) {
            Some(at) => Err(reason!("shared read differs at byte {at}")),
            None => Ok(()),
        }
    })();
    hal.set_translate_off(false);
    hal.fail_shares(0, 0);
    result
}

/// The registers read all ones: the next admin command reports the device
/// removed, and every request in flight completes exactly once with
/// `DeviceRemoved` and without its buffer (which is leaked: a device that
/// cannot be disabled cannot be proven stopped). Afterwards the controller
/// stays removed, even when the registers come back.
fn check_removal<H: Hal>(ctrlr: &Controller<Fh<H>>, ns: Option<&Namespace>) -> Result<(), Reason> {
    let hal = ctrlr.hal();
    let mut qp: Option<SmallQp<'_, H, Buf<'_, H>>> = None;
    let mut submitted = 0;
    if let Some(ns) = ns {
        let mut q: SmallQp<'_, H, Buf<'_, H>> =
            ctrlr.create_io_qpair(small_options()).map_err(|e| reason!("{e}"))?;
        for i in 0..4u64 {
            let b = DmaBuffer::new(hal, ns.block_size() as usize).map_err(|e| reason!("{e}"))?;
            q.read(ns, i % ns.blocks(), 1, b, i).map_err(|e| reason!("read: {}", e.error))?;
            submitted += 1;
        }
        qp = Some(q);
    }
    hal.set_gone(true);
    let seen = ctrlr.active_namespaces(0).err();
    let removed = ctrlr.is_removed();
    let mut ended = 0;
    let mut wrong = None;
    if let Some(q) = qp.as_mut() {
        for _ in 0..4 {
            q.poll(PollLimit::All, |_, c| {
                ended += 1;
                if c.error != Some(Error::DeviceRemoved) || c.buffer.is_some() {
                    wrong.get_or_insert(reason!("request {} ended with {:?}", c.context, c.error));
                }
            });
        }
    }
    hal.set_gone(false);
    if seen != Some(Error::DeviceRemoved) || !removed {
        return Err(reason!("an admin command with all-ones registers gave {seen:?}"));
    }
    if let Some(w) = wrong {
        return Err(w);
    }
    if ended != submitted {
        return Err(reason!("{ended} completions for {submitted} requests"));
    }
    if ctrlr.active_namespaces(0).err() != Some(Error::DeviceRemoved) {
        return Err(reason!("the controller came back from a removal"));
    }
    Ok(())
}
