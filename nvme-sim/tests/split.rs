//! Requests too large for one command are split (above the transfer limit,
//! above 65536 blocks, across NOIOB): one call, children from the queue
//! pair's own slots, one completion with the first failure. QEMU runs a
//! split write and read back in the conformance suite (three commands, and
//! an 8 MiB read with `mdts=1`); here the simulator adds the adversarial
//! cases: failures of one child, a reset, an abort, a completion naming the
//! parent, a HAL that fails or panics half-way, too few slots.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod common;

use common::trap::Trap;
use common::{assert_clean, options, pattern};
use core::time::Duration;
use nvme_nostd::spec::command::IoOpcode;
use nvme_nostd::spec::status::{generic, StatusCodeType};
use nvme_nostd::{
    fill_protection_information, Completion, Controller, Error, IoFlags, IoQueuePair, PollLimit, Protection,
    QpairOptions,
};
use nvme_sim::{Fault, FaultRule, Sim, SimConfig, SimHal, SimMetadata, SimNamespace};

type Big<'c, H = SimHal> = IoQueuePair<'c, H, Vec<u8>, u32, 2048>;
type Small<'c, H = SimHal> = IoQueuePair<'c, H, Vec<u8>, u32, 16>;

fn sim(mdts: u8, blocks: u64) -> Sim {
    Sim::new(SimConfig {
        mdts,
        memory_bytes: 96 << 20,
        namespaces: vec![SimNamespace { nsid: 1, block_size: 512, blocks }],
        ..SimConfig::default()
    })
}

fn drain<H: nvme_nostd::Hal, const N: usize>(
    sim: &Sim,
    qp: &mut IoQueuePair<'_, H, Vec<u8>, u32, N>,
) -> Vec<Completion<Vec<u8>, u32>> {
    let mut done = Vec::new();
    for _ in 0..100_000 {
        qp.poll(PollLimit::All, |_, c| done.push(c));
        if qp.in_flight() == 0 {
            break;
        }
        sim.advance(Duration::from_micros(10));
    }
    done
}

static TIMED_OUT: std::sync::Mutex<Vec<nvme_nostd::TimeoutEvent>> = std::sync::Mutex::new(Vec::new());

fn record_timeout(event: nvme_nostd::TimeoutEvent) {
    TIMED_OUT.lock().unwrap_or_else(|e| e.into_inner()).push(event);
}

/// A child of a split request that times out is reported to the timeout
/// callback under the CID the caller's submission returned (the children's
/// own CIDs mean nothing to the caller).
#[test]
fn a_child_that_times_out_is_reported_under_the_callers_cid() {
    let sim = sim(1, 4096);
    let options = options()
        .with_io_timeout(Some(Duration::from_millis(10)))
        .with_timeout_callback(Some(&record_timeout));
    let ctrlr = Controller::new(sim.hal(), options).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: Small<'_> = ctrlr.create_io_qpair(QpairOptions::default().with_entries(16)).unwrap();
    // The second of three commands (8 KiB each) never completes.
    sim.inject(FaultRule { skip: 1, ..FaultRule::once(Some(qp.qid()), Some(IoOpcode::READ.0), Fault::Drop) });
    let cid = qp.read(&ns, 0, 48, vec![0; 48 * 512], 9).map_err(|e| e.error).unwrap();
    let done = drain(&sim, &mut qp);
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].cid, done[0].context), (cid, 9));
    assert!(done[0].result().is_err());
    let seen = TIMED_OUT.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((seen[0].qid, seen[0].cid, seen[0].opcode), (qp.qid(), cid, IoOpcode::READ.0));
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// The acceptance case: with MDTS 1 (8 KiB), an 8 MiB read and write in
/// one call each, as 1024 commands, one completion each.
#[test]
fn eight_mib_in_one_call_with_mdts_1() {
    // 2048 slots of requests: a larger stack than the test harness's.
    std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(|| {
            let sim = sim(1, 32768);
            let ctrlr = Controller::new(sim.hal(), options()).unwrap();
            let ns = ctrlr.namespace(1).unwrap();
            let mut qp: Big<'_> = ctrlr
                .create_io_qpair(QpairOptions::default().with_entries(1024).with_max_transfer_bytes(8 << 20))
                .unwrap();
            assert_eq!(qp.max_transfer_bytes(), 8192, "MDTS caps it");
            let data: Vec<u8> = (0..16384u64).flat_map(|lba| pattern(lba, 512, 7)).collect();
            sim.write_blocks(1, 0, &data);
            qp.read(&ns, 0, 16384, vec![0; 8 << 20], 1).map_err(|e| e.error).unwrap();
            assert_eq!(qp.in_flight(), 1025, "the parent and 1024 children");
            let done = drain(&sim, &mut qp);
            assert_eq!(done.len(), 1, "one completion");
            assert_eq!((done[0].result(), done[0].context), (Ok(()), 1));
            assert!(done[0].buffer.as_deref() == Some(&data[..]), "the whole 8 MiB read back");
            assert_eq!(qp.stats().submitted, 1024);
            // And a write, back to front.
            let reversed: Vec<u8> = data.iter().rev().copied().collect();
            qp.write(&ns, 0, 16384, reversed.clone(), 2).map_err(|e| e.error).unwrap();
            let done = drain(&sim, &mut qp);
            assert_eq!((done.len(), done[0].result()), (1, Ok(())));
            assert!(sim.read_blocks(1, 0, 16384) == reversed);
            drop(qp);
            drop(ctrlr);
            assert_clean(&sim);
        })
        .unwrap()
        .join()
        .unwrap();
}

/// NOIOB: a transfer within the limit that crosses a multiple of the
/// boundary goes out as two commands, cut exactly there; one that does not
/// cross it, as one.
#[test]
fn the_optimal_io_boundary_cuts() {
    let sim = Sim::new(SimConfig { noiob: 8, ..SimConfig::default() });
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    assert_eq!(ns.optimal_io_boundary(), 8);
    let mut qp: Small<'_> = ctrlr.create_io_qpair(QpairOptions::default().with_entries(16)).unwrap();
    qp.write(&ns, 5, 12, vec![0x3c; 12 * 512], 0).map_err(|e| e.error).unwrap();
    let done = drain(&sim, &mut qp);
    assert_eq!((done.len(), done[0].result()), (1, Ok(())));
    let cuts: Vec<(u32, u32)> =
        sim.recent_io_commands().iter().map(|c| (c.cdw10, (c.cdw12 & 0xffff) + 1)).collect();
    assert_eq!(cuts, [(5, 3), (8, 8), (16, 1)], "(SLBA, blocks) of each command");
    assert_eq!(sim.read_blocks(1, 5, 12), vec![0x3c; 12 * 512]);
    qp.write(&ns, 8, 8, vec![0; 8 * 512], 0).map_err(|e| e.error).unwrap();
    drain(&sim, &mut qp);
    assert_eq!(sim.recent_io_commands().len(), 4, "within one boundary: one command");
}

/// One child fails: the others still complete, and the caller hears once,
/// with that child's status and the whole buffer.
#[test]
fn the_first_failure_completes_the_request_once() {
    let sim = sim(1, 4096);
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: Small<'_> = ctrlr.create_io_qpair(QpairOptions::default().with_entries(16)).unwrap();
    let write = Some(IoOpcode::WRITE.0);
    let lba_range = Fault::Status { sct: 0, sc: generic::LBA_OUT_OF_RANGE.0, dnr: true };
    sim.inject(FaultRule { queue: Some(qp.qid()), opcode: write, skip: 2, count: 1, fault: lba_range });
    let cid = qp.write(&ns, 0, 64, vec![0x11; 64 * 512], 9).map_err(|e| e.error).unwrap();
    let done = drain(&sim, &mut qp);
    assert_eq!(done.len(), 1, "one completion for four commands");
    assert_eq!((done[0].cid, done[0].context), (cid, 9));
    match done[0].result() {
        Err(Error::Command(s)) => {
            assert_eq!((s.sct(), s.sc()), (StatusCodeType::GENERIC, generic::LBA_OUT_OF_RANGE))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(done[0].buffer.as_ref().map(Vec::len), Some(64 * 512));
    assert_eq!(qp.stats().submitted, 4);
    // The other three wrote their blocks; the third did not.
    assert_eq!(sim.read_blocks(1, 0, 32), vec![0x11; 32 * 512]);
    assert_eq!(sim.read_blocks(1, 32, 16), vec![0; 16 * 512]);
    assert_eq!(sim.read_blocks(1, 48, 16), vec![0x11; 16 * 512]);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// Not enough free slots for every child now: refused at once, nothing
/// sent, the buffer back; with room again, the same request goes. More
/// children than the pair has slots at all: too large, not "full".
#[test]
fn too_few_slots_refuse_unsent() {
    let sim = sim(1, 4096);
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: Small<'_> = ctrlr.create_io_qpair(QpairOptions::default().with_entries(16)).unwrap();
    // 16 children and a parent: 17 slots of 16, ever.
    let refused = qp.read(&ns, 0, 256, vec![0; 256 * 512], 0).unwrap_err();
    assert!(matches!(refused.error, Error::TransferTooLarge { .. }), "{:?}", refused.error);
    // One slot taken: 15 children and a parent do not fit now.
    qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    let refused = qp.read(&ns, 0, 240, vec![0; 240 * 512], 2).unwrap_err();
    assert_eq!((refused.error, refused.buffer.len()), (Error::QueueFull, 240 * 512));
    assert_eq!((qp.stats().submitted, qp.in_flight()), (1, 1));
    assert_eq!(drain(&sim, &mut qp).len(), 1);
    // With every slot free, they fit exactly.
    qp.read(&ns, 0, 240, refused.buffer, 2).map_err(|e| e.error).unwrap();
    assert_eq!(qp.in_flight(), 16);
    let also = qp.read(&ns, 0, 1, vec![0; 512], 3).unwrap_err();
    assert_eq!(also.error, Error::QueueFull);
    let done = drain(&sim, &mut qp);
    assert_eq!((done.len(), done[0].result()), (1, Ok(())));
}

/// Separate metadata splits too, each child naming its part by its own
/// MPTR (and, with protection information, with its own reference tag);
/// so does extended-LBA metadata.
#[test]
fn metadata_and_protection_information_split() {
    let sim = Sim::new(SimConfig {
        mdts: 1,
        namespaces: vec![
            SimNamespace { nsid: 1, block_size: 512, blocks: 1024 },
            SimNamespace { nsid: 2, block_size: 512, blocks: 1024 },
        ],
        metadata: vec![
            SimMetadata { nsid: 1, ms: 8, extended: false, pi: 0, pi_first: false, pif: 0 },
            SimMetadata { nsid: 2, ms: 8, extended: true, pi: 1, pi_first: false, pif: 0 },
        ],
        // Each metadata part one run (MPTR needs it).
        scatter_shares: false,
        ..SimConfig::default()
    });
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let mut qp: Small<'_> = ctrlr.create_io_qpair(QpairOptions::default().with_entries(16)).unwrap();
    let separate = ctrlr.namespace(1).unwrap();
    // 40 blocks with MDTS 8 KiB: three commands; the metadata after the
    // data, each child's part at its own MPTR.
    let buffer: Vec<u8> = (0..separate.buffer_bytes(40, false)).map(|i| (i * 13 + 5) as u8).collect();
    qp.write(&separate, 8, 40, buffer.clone(), 0).map_err(|e| e.error).unwrap();
    let done = drain(&sim, &mut qp);
    assert_eq!((done.len(), done[0].result()), (1, Ok(())));
    assert_eq!(sim.read_blocks(1, 8, 40), buffer[..40 * 512]);
    assert_eq!(sim.read_metadata(1, 8, 40), buffer[40 * 512..], "every child's metadata in place");
    let mptrs: Vec<u64> = sim.recent_io_commands().iter().map(|c| c.mptr).collect();
    assert_eq!(mptrs.len(), 3);
    assert!(mptrs.iter().all(|&m| m != 0));
    qp.read(&separate, 8, 40, vec![0; buffer.len()], 1).map_err(|e| e.error).unwrap();
    let done = drain(&sim, &mut qp);
    assert_eq!((done.len(), done[0].result(), done[0].buffer.as_deref()), (1, Ok(()), Some(&buffer[..])));
    let ns = ctrlr.namespace(2).unwrap();
    let (lba, n) = (100u64, 40u32);
    let mut buffer: Vec<u8> = (0..ns.buffer_bytes(n, false)).map(|i| (i * 7) as u8).collect();
    fill_protection_information(&ns, n, &mut buffer, 0x7777, lba).unwrap();
    let check = Protection::check_all().with_app_tag(0x7777, 0xffff);
    qp.write_pi(&ns, lba, n, IoFlags::default(), check, buffer.clone(), 0).map_err(|e| e.error).unwrap();
    let done = drain(&sim, &mut qp);
    assert_eq!((done.len(), done[0].result()), (1, Ok(())), "every child's tags checked");
    // 520-byte blocks: 15 per 8 KiB command.
    // (The children go out in slot order, not LBA order.)
    let recent = sim.recent_io_commands();
    let mut cuts: Vec<(u32, u32, u32)> =
        recent[recent.len() - 3..].iter().map(|c| (c.cdw10, (c.cdw12 & 0xffff) + 1, c.cdw14)).collect();
    cuts.sort();
    assert_eq!(cuts, [(100, 15, 100), (115, 15, 115), (130, 10, 130)]);
    qp.read_pi(&ns, lba, n, IoFlags::default(), check, vec![0; buffer.len()], 1)
        .map_err(|e| e.error)
        .unwrap();
    let done = drain(&sim, &mut qp);
    assert_eq!((done[0].result(), done[0].buffer.as_deref()), (Ok(()), Some(&buffer[..])));
}

/// A reset (from another thread too) while children are out: the request
/// completes once, with the reset as its error, and every part of the
/// buffer is back.
#[test]
fn a_reset_mid_split_completes_it_once() {
    let sim = sim(1, 4096);
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: Small<'_> = ctrlr.create_io_qpair(QpairOptions::default().with_entries(4)).unwrap();
    // Some children on the device, some waiting for room; one dropped.
    sim.inject(FaultRule::once(Some(qp.qid()), Some(IoOpcode::READ.0), Fault::Drop));
    let cid = qp.read(&ns, 0, 128, vec![0; 128 * 512], 5).map_err(|e| e.error).unwrap();
    qp.poll(PollLimit::All, |_, c| panic!("nothing completes yet: {:?}", c.cid));
    std::thread::scope(|s| {
        s.spawn(|| ctrlr.reset().unwrap());
    });
    let done = drain(&sim, &mut qp);
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].cid, done[0].context, done[0].result()), (cid, 5, Err(Error::Reset)));
    assert_eq!(done[0].buffer.as_ref().map(Vec::len), Some(128 * 512));
    // The queue pair heals, and splits again.
    qp.read(&ns, 0, 128, vec![0; 128 * 512], 6).map_err(|e| e.error).unwrap();
    let done = drain(&sim, &mut qp);
    assert_eq!((done.len(), done[0].result()), (1, Ok(())));
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// Abort by the CID the submission returned aborts the children; a
/// completion naming the parent (never on the wire) is bogus.
#[test]
fn abort_by_the_parents_cid_and_a_completion_naming_it() {
    let sim = sim(1, 4096);
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: Small<'_> = ctrlr.create_io_qpair(QpairOptions::default().with_entries(16)).unwrap();
    let every = FaultRule {
        queue: Some(qp.qid()),
        opcode: Some(IoOpcode::READ.0),
        skip: 0,
        count: 3,
        fault: Fault::Drop,
    };
    sim.inject(every);
    let cid = qp.read(&ns, 0, 48, vec![0; 48 * 512], 3).map_err(|e| e.error).unwrap();
    // The device posts a completion naming the parent: ignored.
    assert!(sim.post_completion(qp.qid(), cid.0));
    qp.poll(PollLimit::All, |_, c| panic!("a completion for the parent was delivered: {:?}", c.cid));
    assert_eq!(qp.stats().bogus_completions, 1);
    assert_eq!(qp.abort(cid), Ok(nvme_nostd::AbortOutcome::Aborted));
    let done = drain(&sim, &mut qp);
    assert_eq!(done.len(), 1);
    match done[0].result() {
        Err(Error::Command(s)) => assert_eq!(s.sc(), generic::ABORTED_BY_REQUEST),
        other => panic!("{other:?}"),
    }
    assert_eq!(qp.in_flight(), 0);
}

/// The Abort of the first child is refused (Abort Command Limit Exceeded):
/// the others are still aborted, and the request ends aborted.
#[test]
fn a_refused_abort_of_one_child_does_not_stop_the_others() {
    let sim = sim(1, 4096);
    let ctrlr =
        Controller::new(sim.hal(), options().with_io_timeout(Some(Duration::from_millis(10)))).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: Small<'_> = ctrlr.create_io_qpair(QpairOptions::default().with_entries(16)).unwrap();
    sim.inject(FaultRule {
        count: 3,
        ..FaultRule::once(Some(qp.qid()), Some(IoOpcode::READ.0), Fault::Drop)
    });
    let cid = qp.read(&ns, 0, 48, vec![0; 48 * 512], 3).map_err(|e| e.error).unwrap();
    // Abort Command Limit Exceeded (command specific 03h), once.
    let acl = Fault::Status { sct: 1, sc: 0x03, dnr: true };
    sim.inject(FaultRule::once(Some(0), Some(nvme_nostd::spec::command::AdminOpcode::ABORT.0), acl));
    assert_eq!(qp.abort(cid), Ok(nvme_nostd::AbortOutcome::Aborted));
    assert_eq!(sim.outstanding(), 1, "the two other children were aborted");
    // The child whose Abort was refused ends at the I/O timeout.
    let done = drain(&sim, &mut qp);
    assert_eq!(done.len(), 1);
    assert!(done[0].result().is_err());
    assert_eq!(qp.in_flight(), 0);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// The HAL fails to share the third child's part: the request is refused,
/// the parts already shared are given back, the buffer returns. If it
/// panics there instead, the next call cleans up and the pair goes on.
#[test]
fn a_hal_failing_or_panicking_half_way() {
    let sim = sim(1, 4096);
    let hal = Trap::new(sim.hal());
    let ctrlr = Controller::new(hal, options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: Small<'_, Trap<SimHal>> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(16)).unwrap();
    ctrlr.hal().share_fail_countdown.set(3);
    let refused = qp.write(&ns, 0, 64, vec![1; 64 * 512], 0).unwrap_err();
    assert_eq!(refused.error.origin(), nvme_nostd::Origin::Backend, "{:?}", refused.error);
    assert_eq!((refused.buffer.len(), qp.in_flight(), qp.stats().submitted), (64 * 512, 0, 0));
    assert_eq!(sim.stats().live_shares, 0, "the first two parts were given back");
    ctrlr.hal().share_countdown.set(3);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = qp.write(&ns, 0, 64, vec![2; 64 * 512], 0);
    }));
    assert!(panicked.is_err());
    // The next call finds the half-built request and takes it apart.
    qp.write(&ns, 0, 64, vec![3; 64 * 512], 1).map_err(|e| e.error).unwrap();
    let done = drain(&sim, &mut qp);
    assert_eq!((done.len(), done[0].result(), done[0].context), (1, Ok(()), 1));
    assert_eq!(sim.read_blocks(1, 0, 64), vec![3; 64 * 512]);
    assert_eq!(qp.in_flight(), 0, "no slot left taken by the panic");
}

/// Dropping the queue pair with a split read out: its queues are deleted,
/// every child's part goes back to the CPU before the parent's buffer is
/// dropped, and nothing is left shared.
#[test]
fn dropping_the_pair_mid_split() {
    let sim = sim(1, 4096);
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: Small<'_> = ctrlr.create_io_qpair(QpairOptions::default().with_entries(16)).unwrap();
    sim.inject(FaultRule {
        queue: Some(qp.qid()),
        opcode: Some(IoOpcode::READ.0),
        skip: 0,
        count: 2,
        fault: Fault::Delay(Duration::from_secs(1)),
    });
    qp.read(&ns, 0, 64, vec![0; 64 * 512], 0).map_err(|e| e.error).unwrap();
    qp.poll(PollLimit::All, |_, _| {});
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// A zeroed buffer of `len` bytes whose bytes from `data` on (the separate
/// metadata) lie in one page: a back-end that maps a caller's buffer page by
/// page (an IOMMU, the simulator's scattered bounce pages) gives them one
/// run of device addresses only then.
fn metadata_in_one_page(data: usize, len: usize) -> Vec<u8> {
    let mut rejected = Vec::new();
    loop {
        let v = vec![0u8; len];
        let at = v.as_ptr() as usize + data;
        if at / 4096 == (v.as_ptr() as usize + len - 1) / 4096 && at.is_multiple_of(4) {
            return v;
        }
        rejected.push(v);
    }
}

/// Review findings: a HAL that panics half-way while the unwinding drops
/// the pair (the half-built children point into a buffer already gone:
/// leaked, never synced or unshared); type 3's reference tag is the same
/// in every child; a request needing more commands than the pair has slots
/// is too large, not "full"; NOIOB is only a hint where cutting cannot
/// work; a removal is what the owner hears over an earlier failure.
#[test]
fn review_findings() {
    // The panic, with the pair dropped by the unwinding.
    let sim = sim(1, 4096);
    let hal = Trap::new(sim.hal());
    let ctrlr = Controller::new(hal, options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    ctrlr.hal().share_countdown.set(3);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut qp: Small<'_, Trap<SimHal>> =
            ctrlr.create_io_qpair(QpairOptions::default().with_entries(16)).unwrap();
        let _ = qp.read(&ns, 0, 64, vec![0; 64 * 512], 0);
    }));
    assert!(panicked.is_err());
    let s = sim.stats();
    assert_eq!((s.bad_syncs, s.bad_unshares, s.released_in_use), (0, 0, 0), "{s:?}");
    assert_eq!(s.live_shares, 2, "the two parts shared before the panic are leaked, not undone");
    drop(ctrlr);

    // Type 3: one reference tag for all; more commands than slots.
    let sim2 = Sim::new(SimConfig {
        mdts: 1,
        noiob: 16,
        namespaces: vec![
            SimNamespace { nsid: 1, block_size: 512, blocks: 1024 },
            SimNamespace { nsid: 2, block_size: 512, blocks: 1024 },
        ],
        metadata: vec![
            SimMetadata { nsid: 1, ms: 8, extended: true, pi: 3, pi_first: false, pif: 0 },
            SimMetadata { nsid: 2, ms: 8, extended: false, pi: 0, pi_first: false, pif: 0 },
        ],
        ..SimConfig::default()
    });
    let ctrlr = Controller::new(sim2.hal(), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: Small<'_> = ctrlr.create_io_qpair(QpairOptions::default().with_entries(16)).unwrap();
    let pract = Protection::pract().with_reference_tag(0x77).with_app_tag(1, 0);
    qp.write_pi(&ns, 0, 40, IoFlags::default(), pract, vec![5; 40 * 512], 0).map_err(|e| e.error).unwrap();
    let done = drain(&sim2, &mut qp);
    assert_eq!((done.len(), done[0].result()), (1, Ok(())));
    let tags: Vec<u32> = sim2.recent_io_commands().iter().map(|c| c.cdw14).collect();
    assert_eq!(tags.len(), 3);
    assert!(tags.iter().all(|&t| t == 0x77), "{tags:x?}");
    let refused = qp.read(&ns, 0, 16 * 16, vec![0; ns.buffer_bytes(256, false)], 0).unwrap_err();
    assert!(matches!(refused.error, Error::TransferTooLarge { .. }), "{:?}", refused.error);
    // Separate metadata across NOIOB, within MDTS: cut at the boundary,
    // each part with its own MPTR.
    let separate = ctrlr.namespace(2).unwrap();
    let before = sim2.recent_io_commands().len();
    // The metadata (after the data) within one page of the buffer: the
    // simulator shares page by page, scattered, and MPTR names one run.
    let buf = metadata_in_one_page(12 * 512, separate.buffer_bytes(12, false));
    qp.read(&separate, 10, 12, buf, 0).map_err(|e| e.error).unwrap();
    let done = drain(&sim2, &mut qp);
    assert_eq!((done.len(), done[0].result()), (1, Ok(())));
    assert_eq!(sim2.recent_io_commands().len(), before + 2);
    drop(qp);
    drop(ctrlr);

    // A failed child, then a removal: the owner hears the removal.
    let sim = crate::sim(1, 4096);
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: Small<'_> = ctrlr.create_io_qpair(QpairOptions::default().with_entries(16)).unwrap();
    let read = Some(IoOpcode::READ.0);
    let status = Fault::Status { sct: 0, sc: generic::LBA_OUT_OF_RANGE.0, dnr: true };
    sim.inject(FaultRule { queue: Some(qp.qid()), opcode: read, skip: 0, count: 1, fault: status });
    sim.inject(FaultRule { queue: Some(qp.qid()), opcode: read, skip: 1, count: 1, fault: Fault::Removal });
    qp.read(&ns, 0, 48, vec![0; 48 * 512], 0).map_err(|e| e.error).unwrap();
    qp.poll(PollLimit::All, |_, c| panic!("not yet: {:?}", c.result()));
    assert!(ctrlr.check_removal(), "the device is gone");
    let done = drain(&sim, &mut qp);
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].result(), done[0].buffer.is_none()), (Err(Error::DeviceRemoved), true));
}

proptest::proptest! {
    /// The cut of any request: children in order, covering it exactly,
    /// none empty, none above the limit, none across a boundary, and each
    /// as long as it may be (it ends at the request's end, at the limit,
    /// or at a boundary).
    #[test]
    fn cuts_cover_exactly_within_limit_and_boundary(
        lba in 0u64..1 << 40,
        blocks in 1u32..1 << 20,
        max in 1u32..=0x1_0000,
        boundary in proptest::prop_oneof![proptest::strategy::Just(0u32), 1u32..5000],
    ) {
        let mut at = lba;
        for (start, n) in nvme_nostd::fuzzing::split_chunks(lba, blocks, max, boundary) {
            proptest::prop_assert_eq!(start, at);
            proptest::prop_assert!(n >= 1 && n <= max);
            let end = start + u64::from(n);
            if boundary != 0 {
                let b = u64::from(boundary);
                proptest::prop_assert!(start / b == (end - 1) / b, "crosses a boundary");
                proptest::prop_assert!(end == lba + u64::from(blocks) || n == max || end % b == 0, "not maximal");
            } else {
                proptest::prop_assert!(end == lba + u64::from(blocks) || n == max, "not maximal");
            }
            at = end;
        }
        proptest::prop_assert_eq!(at, lba + u64::from(blocks));
    }
}

/// Last look: on a system without DMA coherence (64-byte alignment), the
/// children of a read with separate metadata would share cache lines of the
/// metadata the device writes (8 bytes a block): refused unsent; a read
/// that only crosses NOIOB goes as one command instead of being cut.
#[test]
fn separate_metadata_parts_keep_to_cache_lines() {
    use nvme_nostd::DmaBuffer;
    let sim = Sim::new(SimConfig {
        mdts: 1,
        noiob: 16,
        namespaces: vec![SimNamespace { nsid: 1, block_size: 512, blocks: 1024 }],
        metadata: vec![SimMetadata { nsid: 1, ms: 8, extended: false, pi: 0, pi_first: false, pif: 0 }],
        ..SimConfig::default()
    });
    let hal: Trap<SimHal, 64> = Trap {
        inner: sim.hal(),
        armed: Default::default(),
        share_countdown: Default::default(),
        share_fail_countdown: Default::default(),
        sync_cpu_countdown: Default::default(),
        handed: Default::default(),
    };
    let ctrlr = Controller::new(hal, options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: IoQueuePair<'_, Trap<SimHal, 64>, DmaBuffer<'_, Trap<SimHal, 64>>, u32, 16> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(16)).unwrap();
    let buffer = DmaBuffer::new(ctrlr.hal(), ns.buffer_bytes(40, false)).unwrap();
    let refused = qp.read(&ns, 0, 40, buffer, 0).unwrap_err();
    assert_eq!(refused.error, Error::BufferMisaligned { required: 64 });
    assert_eq!(qp.stats().submitted, 0);
    // 8 blocks across the boundary at 16, within MDTS: one command.
    let buffer = DmaBuffer::new(ctrlr.hal(), ns.buffer_bytes(8, false)).unwrap();
    qp.read(&ns, 12, 8, buffer, 1).map_err(|e| e.error).unwrap();
    let mut done = Vec::new();
    for _ in 0..1000 {
        qp.poll(PollLimit::All, |_, c| done.push(c.result()));
        if qp.in_flight() == 0 {
            break;
        }
        sim.advance(Duration::from_micros(10));
    }
    assert_eq!(done, [Ok(())]);
    assert_eq!(qp.stats().submitted, 1, "not cut at the boundary");
}
