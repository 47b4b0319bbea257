//! Asynchronous admin requests (`AdminRequests`): submitted without waiting,
//! each owning its buffer and context, collected by `process`; what happens
//! when the controller loses one (timeout, reset), when another thread's
//! blocking admin call reaps its completion, when the pool is dropped with
//! one in flight, when the device is removed, and an Abort of an admin
//! command. QEMU's controller never aborts; the conformance suite reads its
//! SMART log through this path; the failure paths run here.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod common;

use common::{aligned_vec, assert_clean, assert_no_bad_frees, options, setup};
use core::time::Duration;
use nvme_nostd::spec::command::{AdminOpcode, SubmissionEntry};
use nvme_nostd::spec::dwords::Select;
use nvme_nostd::spec::identify::IdentifyController;
use nvme_nostd::spec::ids::{Cns, Fid, Lid};
use nvme_nostd::spec::log::SmartHealth;
use nvme_nostd::{AbortOutcome, AdminCompletion, AdminRequests, Argument, Controller, Error, ALL_NAMESPACES};
use nvme_sim::{Fault, FaultRule, Sim, SimConfig, SimHal};
use std::panic::{catch_unwind, AssertUnwindSafe};

type Pool<'c> = AdminRequests<'c, SimHal, Vec<u8>, u32, 4>;
type Done = AdminCompletion<Vec<u8>, u32>;

fn collect<const N: usize>(
    sim: &Sim,
    pool: &mut AdminRequests<'_, SimHal, Vec<u8>, u32, N>,
    want: usize,
) -> Vec<Done> {
    let mut done = Vec::new();
    for _ in 0..100_000 {
        pool.process(usize::MAX, |c| done.push(c));
        if done.len() >= want {
            break;
        }
        sim.advance(Duration::from_micros(10));
    }
    done
}

#[test]
fn log_page_identify_and_features_without_waiting() {
    let (sim, ctrlr, _ns) = setup(SimConfig::default());
    let mut pool: Pool<'_> = ctrlr.admin_requests().unwrap();
    pool.get_log_page(Lid::SMART_HEALTH, ALL_NAMESPACES, 0, aligned_vec(512, 0xee), 1)
        .map_err(|e| e.error)
        .unwrap();
    pool.identify(Cns::CONTROLLER, 0, aligned_vec(4096, 0xee), 2).map_err(|e| e.error).unwrap();
    pool.get_features(Fid::TEMPERATURE_THRESHOLD, 0, Select::Current, 0, 3).map_err(|e| e.error).unwrap();
    assert_eq!(pool.in_flight(), 3);
    let mut done = collect(&sim, &mut pool, 3);
    done.sort_by_key(|d| d.context);
    assert_eq!(done.len(), 3);
    let smart = SmartHealth::from_bytes(done[0].buffer.as_deref().unwrap().try_into().unwrap());
    assert_eq!(smart.temperature(), 313);
    let id = IdentifyController::from_bytes(done[1].buffer.as_deref().unwrap().try_into().unwrap());
    assert_eq!(&id.mn[..8], b"nvme-sim");
    assert_eq!(done[2].result.map(|c| c.dw0), Ok(343), "over-temperature threshold, in DW0");
    assert!(done[2].buffer.is_none());
    drop(pool);
    drop(ctrlr);
    assert_clean(&sim);
}

/// Bad input is refused before anything is sent, its buffer handed back.
#[test]
fn bad_input_sends_nothing() {
    let (sim, ctrlr, _ns) = setup(SimConfig::default());
    let mut pool: AdminRequests<'_, SimHal, Vec<u8>, u32, 2> = ctrlr.admin_requests().unwrap();
    let sent = sim.stats().admin_commands;
    let e = pool.get_log_page(Lid::SMART_HEALTH, ALL_NAMESPACES, 0, vec![0; 6], 1).unwrap_err();
    assert_eq!(
        (e.error, e.buffer.map(|b| b.len())),
        (Error::InvalidArgument(Argument::LogPageAlignment), Some(6))
    );
    let mut cmd = SubmissionEntry::new(AdminOpcode::IDENTIFY.0, 0);
    cmd.prp1 = 0x1000;
    // SAFETY: refused before it could reach the device.
    let e = unsafe { pool.submit_raw(cmd, None, 2) }.unwrap_err();
    assert_eq!(e.error, Error::InvalidArgument(Argument::RawCommandPointers));
    let e = pool.identify(Cns::CONTROLLER, 0, Vec::new(), 3).unwrap_err();
    assert_eq!(e.error, Error::InvalidArgument(Argument::ZeroLength));
    let e = pool.identify(Cns::CONTROLLER, 0, vec![0; 4 << 20], 3).unwrap_err();
    assert!(matches!(e.error, Error::TransferTooLarge { .. }), "{:?}", e.error);
    assert_eq!(sim.stats().admin_commands, sent, "nothing was sent");
    // The pool holds two.
    sim.set_latency(Duration::from_millis(1));
    pool.identify(Cns::CONTROLLER, 0, aligned_vec(4096, 0), 4).map_err(|e| e.error).unwrap();
    pool.identify(Cns::CONTROLLER, 0, aligned_vec(4096, 0), 5).map_err(|e| e.error).unwrap();
    let e = pool.identify(Cns::CONTROLLER, 0, aligned_vec(4096, 0), 6).unwrap_err();
    assert_eq!(e.error, Error::QueueFull);
    assert_eq!(collect(&sim, &mut pool, 2).len(), 2);
}

/// A command the controller never completes: past the admin timeout, the
/// controller is reset, and the buffer comes back only after that.
#[test]
fn a_lost_command_times_out_and_resets() {
    let (sim, ctrlr, _ns) = setup(SimConfig::default());
    let mut pool: Pool<'_> = ctrlr.admin_requests().unwrap();
    sim.inject(FaultRule::once(Some(0), Some(AdminOpcode::GET_LOG_PAGE.0), Fault::Drop));
    pool.get_log_page(Lid::SMART_HEALTH, ALL_NAMESPACES, 0, aligned_vec(512, 0), 7)
        .map_err(|e| e.error)
        .unwrap();
    let resets = sim.stats().resets;
    let done = collect(&sim, &mut pool, 1);
    assert!(matches!(done[0].result, Err(Error::Timeout(_))), "{:?}", done[0].result);
    assert_eq!(sim.stats().resets, resets + 1, "reset before the buffer came back");
    assert_eq!(done[0].buffer.as_ref().map(Vec::len), Some(512));
    // The controller works, and so does the pool.
    pool.get_log_page(Lid::SMART_HEALTH, ALL_NAMESPACES, 0, aligned_vec(512, 0), 8)
        .map_err(|e| e.error)
        .unwrap();
    assert!(collect(&sim, &mut pool, 1)[0].result.is_ok());
    drop(pool);
    drop(ctrlr);
    assert_clean(&sim);
}

/// A reset by hand with a request in flight ends it with `Reset`, once,
/// its buffer back; its CID, reused by later commands, is never confused.
#[test]
fn a_reset_ends_requests_once() {
    let (sim, ctrlr, _ns) = setup(SimConfig::default());
    let mut pool: Pool<'_> = ctrlr.admin_requests().unwrap();
    sim.inject(FaultRule::once(Some(0), Some(AdminOpcode::IDENTIFY.0), Fault::Drop));
    pool.identify(Cns::CONTROLLER, 0, aligned_vec(4096, 0), 1).map_err(|e| e.error).unwrap();
    ctrlr.reset().unwrap();
    // Plenty of admin commands after the reset, reusing CIDs.
    for _ in 0..40 {
        ctrlr.arbitration(Select::Current).unwrap();
    }
    let done = collect(&sim, &mut pool, 1);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].result.err(), Some(Error::Reset));
    assert!(done[0].buffer.is_some());
    assert!(collect(&sim, &mut pool, 1).is_empty(), "exactly once");
}

/// Another caller's blocking admin command reaps this pool's completion
/// while it waits for its own: the result is kept for `process`.
#[test]
fn completions_reaped_by_blocking_calls_are_kept() {
    let (sim, ctrlr, _ns) = setup(SimConfig::default());
    let mut pool: Pool<'_> = ctrlr.admin_requests().unwrap();
    pool.get_features(Fid::ARBITRATION, 0, Select::Current, 0, 9).map_err(|e| e.error).unwrap();
    for _ in 0..5 {
        ctrlr.arbitration(Select::Current).unwrap();
    }
    let done = collect(&sim, &mut pool, 1);
    assert_eq!(done.len(), 1);
    assert!(done[0].result.is_ok());
}

/// Abort of an admin command (SQID 0).
#[test]
fn an_admin_command_is_aborted() {
    let (sim, ctrlr, _ns) = setup(SimConfig::default());
    let mut pool: Pool<'_> = ctrlr.admin_requests().unwrap();
    sim.inject(FaultRule::once(Some(0), Some(AdminOpcode::IDENTIFY.0), Fault::Drop));
    let cid = pool.identify(Cns::CONTROLLER, 0, aligned_vec(4096, 0), 1).map_err(|e| e.error).unwrap();
    assert_eq!(pool.abort(cid), Ok(AbortOutcome::Aborted));
    let done = collect(&sim, &mut pool, 1);
    match done[0].result {
        Err(Error::Command(s)) => assert_eq!(s.sc().0, 0x07, "command abort requested"),
        ref other => panic!("{other:?}"),
    }
    assert!(done[0].buffer.is_some());
    assert_eq!(pool.abort(cid), Err(Error::InvalidArgument(Argument::UnknownCid)));
    drop(pool);
    drop(ctrlr);
    assert_clean(&sim);
}

/// Dropping the pool with a command the controller holds: the drop waits
/// the admin timeout, resets the controller, and only then drops the buffer.
#[test]
fn dropping_the_pool_with_a_command_held() {
    let (sim, ctrlr, _ns) = setup(SimConfig::default());
    let mut pool: Pool<'_> = ctrlr.admin_requests().unwrap();
    sim.inject(FaultRule::once(Some(0), Some(AdminOpcode::IDENTIFY.0), Fault::Drop));
    pool.identify(Cns::CONTROLLER, 0, aligned_vec(4096, 0), 1).map_err(|e| e.error).unwrap();
    let resets = sim.stats().resets;
    drop(pool);
    assert_eq!(sim.stats().resets, resets + 1);
    ctrlr.arbitration(Select::Current).expect("the controller works");
    drop(ctrlr);
    assert_clean(&sim);
}

/// A removed device: every request ends with `DeviceRemoved`, its buffer
/// leaked (the device may still write it).
#[test]
fn a_removal_leaks_buffers() {
    let sim = Sim::new(SimConfig::default());
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let mut pool: Pool<'_> = ctrlr.admin_requests().unwrap();
    sim.inject(FaultRule::once(Some(0), Some(AdminOpcode::IDENTIFY.0), Fault::Drop));
    pool.identify(Cns::CONTROLLER, 0, aligned_vec(4096, 0), 1).map_err(|e| e.error).unwrap();
    sim.set_removed(true);
    assert!(ctrlr.check_removal());
    let done = collect(&sim, &mut pool, 1);
    assert_eq!(done[0].result.err(), Some(Error::DeviceRemoved));
    assert!(done[0].buffer.is_none(), "leaked");
    drop(pool);
    drop(ctrlr);
    assert_no_bad_frees(&sim);
}

/// A callback that panics: the request it got is its own, the others come
/// with the next call.
#[test]
fn a_panicking_callback() {
    let (sim, ctrlr, _ns) = setup(SimConfig::default());
    let mut pool: Pool<'_> = ctrlr.admin_requests().unwrap();
    for i in 0..3 {
        pool.get_features(Fid::ARBITRATION, 0, Select::Current, 0, i).map_err(|e| e.error).unwrap();
    }
    sim.advance(Duration::from_millis(1));
    let r = catch_unwind(AssertUnwindSafe(|| pool.process(usize::MAX, |_| panic!("callback"))));
    assert!(r.is_err());
    assert_eq!(collect(&sim, &mut pool, 2).len(), 2);
    assert_eq!(pool.in_flight(), 0);
}

/// Another thread resets the controller, again and again, while this one
/// submits and collects admin requests and a third hands out events: every
/// request is delivered exactly once, with its buffer (a reset disabled the
/// controller before handing it back), and nothing is freed while the
/// device names it.
#[test]
fn resets_from_another_thread() {
    use nvme_nostd::spec::dwords::AsyncEventConfig;
    use nvme_nostd::spec::ids::{AsyncEventInfo, AsyncEventType};
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let (sim, ctrlr, _ns) = setup(SimConfig::default());
    ctrlr.enable_async_events(AsyncEventConfig::new().with_smart_warnings(0xff)).unwrap();
    let stop = AtomicBool::new(false);
    let (mut submitted, mut delivered, mut with_buffer) = (0u32, 0u32, 0u32);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(SeqCst) {
                let _ = ctrlr.reset();
                std::thread::sleep(Duration::from_micros(300));
            }
        });
        s.spawn(|| {
            while !stop.load(SeqCst) {
                sim.raise_event(AsyncEventType::ERROR, AsyncEventInfo(4), Lid::ERROR_INFORMATION);
                let _ = ctrlr.process_admin_completions(usize::MAX, |_| {});
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        let mut pool: Pool<'_> = ctrlr.admin_requests().unwrap();
        let mut seen = std::collections::BTreeSet::new();
        // At least 2,000 requests, and on until 20 resets struck them (a
        // release build submits faster than the other thread resets).
        let mut i = 0u32;
        while i < 2000 || (sim.stats().resets < 20 && i < 2_000_000) {
            i += 1;
            match pool.get_log_page(Lid::SMART_HEALTH, ALL_NAMESPACES, 0, aligned_vec(512, 0), i) {
                Ok(_) => submitted += 1,
                Err(e) => assert!(e.buffer.is_some(), "a refused request keeps its buffer"),
            }
            pool.process(usize::MAX, |d| {
                assert!(seen.insert(d.context), "request {} delivered twice", d.context);
                delivered += 1;
                with_buffer += u32::from(d.buffer.is_some());
            });
            sim.advance(Duration::from_micros(20));
        }
        for _ in 0..100_000 {
            if pool.in_flight() == 0 {
                break;
            }
            pool.process(usize::MAX, |d| {
                assert!(seen.insert(d.context), "request {} delivered twice", d.context);
                delivered += 1;
                with_buffer += u32::from(d.buffer.is_some());
            });
            sim.advance(Duration::from_micros(20));
        }
        stop.store(true, SeqCst);
    });
    println!("submitted {submitted}, resets {}", sim.stats().resets);
    assert!(submitted > 100, "{submitted}");
    assert_eq!(delivered, submitted, "each exactly once");
    assert_eq!(with_buffer, delivered, "every buffer came back");
    let s = sim.stats();
    assert_eq!(s.released_in_use, 0, "{s:?}");
    assert!(s.resets >= 20, "{}", s.resets);
    drop(ctrlr);
    assert_clean(&sim);
}
