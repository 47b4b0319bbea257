//! The driver's side of the bench: the public API used as an application
//! would use it, with default options.

use super::{Count, Latency, Lbas, Meter, Plan, Target, Tick, IO_BYTES, MAX_QD, STALL};
use core::time::Duration;
use nvme_conformance::{reason, Reason};
use nvme_nostd::{Controller, ControllerOptions, DmaBuffer, PollLimit, QpairOptions, Registered};

/// How long to wait for the last reads after the measurement.
const DRAIN: Duration = Duration::from_secs(10);

/// Attaches the controller, keeps `qd` random 4 KiB reads in flight on one
/// queue pair for the plan's warm-up and measured time, and detaches.
pub fn measure(target: Target, qd: usize, write: bool, plan: &Plan) -> Result<Count, Reason> {
    let started = target.clock.now();
    let claim =
        hal_baremetal::claim(target.function).ok_or(reason!("controller claimed by another driver"))?;
    let hal = crate::hal_for(claim, target.bar0, target.pool, target.clock);
    let options = ControllerOptions::default().with_shadow_doorbells(plan.shadow);
    let ctrlr = Controller::new(hal, options).map_err(|e| reason!("attach: {e}"))?;
    if plan.shadow && !ctrlr.shadow_doorbells() {
        return Err(reason!("shadow doorbells asked for, but the controller did not take them"));
    }
    let ns = ctrlr.namespace(1).map_err(|e| reason!("namespace 1: {e}"))?;
    let mut lbas = Lbas::new(plan.seed, ns.blocks(), ns.block_size())?;
    let mut qp = ctrlr
        .create_io_qpair::<Registered<DmaBuffer<_>>, _, MAX_QD>(QpairOptions::default())
        .map_err(|e| reason!("create_io_qpair: {e}"))?;
    // The first `qd` reads go out one by one (one doorbell each); after that
    // every completion's buffer is resubmitted from inside the poll
    // callback, and each poll pass rings the doorbell once for all of them.
    for _ in 0..qd {
        // Registered: translated once, here, not per I/O.
        let buf = DmaBuffer::new(ctrlr.hal(), IO_BYTES).map_err(|e| reason!("buffer: {e}"))?;
        let buf = ctrlr.register(buf).map_err(|(e, _)| reason!("register: {e}"))?;
        let (lba, blocks) = (lbas.next_lba(), lbas.blocks_per_io());
        // The context: when it was submitted (ns), for the QD 1 latency.
        let at = target.clock.ticks();
        let submitted =
            if write { qp.write(&ns, lba, blocks, buf, at) } else { qp.read(&ns, lba, blocks, buf, at) };
        submitted.map_err(|e| reason!("submit: {}", e.error))?;
    }
    let mut meter = Meter::new(target.clock, plan, started);
    let mut completed = 0u64;
    let mut failure: Option<Reason> = None;
    let mut latency = Latency::new();
    let clock = target.clock;
    let result = loop {
        let timed = qd == 1 && meter.measuring();
        qp.poll(PollLimit::All, |resubmit, done| {
            completed += 1;
            let now = if timed || qd == 1 { clock.ticks() } else { 0 };
            if timed {
                latency.record_ticks(clock, now.saturating_sub(done.context));
            }
            if let Err(e) = done.result() {
                failure.get_or_insert_with(|| reason!("I/O completed with {e}"));
            }
            if let Some(buf) = done.buffer {
                let (lba, blocks) = (lbas.next_lba(), lbas.blocks_per_io());
                let again = if write {
                    resubmit.write(&ns, lba, blocks, buf, now)
                } else {
                    resubmit.read(&ns, lba, blocks, buf, now)
                };
                if let Err(e) = again {
                    failure.get_or_insert_with(|| reason!("resubmit: {}", e.error));
                }
            }
        });
        if let Some(why) = failure.take() {
            break Err(why);
        }
        match meter.tick(completed) {
            Tick::Run => {}
            Tick::Done(count) => break Ok(Count { latency: latency.summary(), ..count }),
            Tick::Stalled => break Err(reason!("no I/O completed for {STALL:?}")),
        }
    };
    // Let the reads still in flight finish (not counted); dropping the queue
    // pair would also clean up, but a quiet device is a fairer start for the
    // next measurement.
    let deadline = target.clock.now() + DRAIN;
    while qp.in_flight() > 0 && target.clock.now() < deadline {
        qp.poll(PollLimit::All, |_, _| {});
    }
    result
}
