//! Blocking admin calls are helpers on top of the asynchronous admin path:
//! they submit a command and poll for its result, taking the admin lock
//! only for each look. So a long admin command holds up neither another
//! thread's admin commands nor Keep Alive, several threads' commands with
//! data each get their own data back, and a HAL that panics while a call
//! waits leaves a queue that the next call heals.

mod common;

use common::trap::Trap;
use core::time::Duration;
use nvme_nostd::spec::command::AdminOpcode;
use nvme_nostd::{Controller, ControllerOptions, Error, ALL_NAMESPACES};
use nvme_sim::{Fault, FaultRule, Sim, SimConfig, SimNamespace};
use std::sync::atomic::{AtomicBool, Ordering};

fn options() -> ControllerOptions {
    ControllerOptions::default().with_admin_timeout(Duration::from_secs(10))
}

/// A Get Log Page the controller takes 3 s over, with a 1 s Keep Alive
/// Timeout: the call waits, and Keep Alive goes out meanwhile (before, the
/// wait held the admin queue and the timer expired under it).
#[test]
fn keep_alive_goes_out_while_a_long_command_waits() {
    let sim = Sim::new(SimConfig { kas: 1, ..SimConfig::default() });
    let ctrlr = Controller::new(sim.hal(), options().with_keep_alive(Some(Duration::from_secs(1)))).unwrap();
    sim.inject(FaultRule::once(
        Some(0),
        Some(AdminOpcode::GET_LOG_PAGE.0),
        Fault::Delay(Duration::from_secs(3)),
    ));
    let start = sim.now();
    let smart = ctrlr.smart_health(ALL_NAMESPACES).expect("the slow command completes");
    assert!(sim.now() - start >= Duration::from_secs(3));
    assert!(smart.temperature() > 0);
    assert_eq!(sim.stats().keep_alive_expired, 0, "{:?}", sim.stats());
    assert!(!ctrlr.csts().unwrap().cfs());
}

/// One thread waits for a Get Log Page the controller never completes
/// (its deadline is 100 s away); another thread's admin commands complete
/// meanwhile. Then a reset by hand ends the wait with `Reset`.
#[test]
fn a_long_command_does_not_hold_up_another_threads() {
    let sim = Sim::new(SimConfig::default());
    let ctrlr = Controller::new(sim.hal(), options().with_admin_timeout(Duration::from_secs(100))).unwrap();
    sim.inject(FaultRule::once(Some(0), Some(AdminOpcode::GET_LOG_PAGE.0), Fault::Drop));
    let slow_done = AtomicBool::new(false);
    let sent = sim.stats().admin_commands;
    std::thread::scope(|s| {
        let slow = s.spawn(|| {
            let r = ctrlr.smart_health(ALL_NAMESPACES).map(|_| ());
            slow_done.store(true, Ordering::SeqCst);
            r
        });
        // Once the slow command is on the device, another thread's
        // commands go through while it waits.
        while sim.stats().admin_commands == sent {
            std::thread::yield_now();
        }
        for _ in 0..20 {
            ctrlr.identify_namespace(1).expect("identify while the other waits");
        }
        assert!(!slow_done.load(Ordering::SeqCst), "the slow command is still out");
        ctrlr.reset().expect("reset by hand");
        assert_eq!(slow.join().unwrap(), Err(Error::Reset), "the reset ended the wait");
    });
    ctrlr.identify_namespace(1).expect("after the reset");
}

/// Four threads, each reading its own namespace's Identify (through the
/// one admin data page) and a log page, 200 times: each gets its own data.
#[test]
fn commands_with_data_from_several_threads_get_their_own_data() {
    let sim = Sim::new(SimConfig {
        namespaces: (1..=4)
            .map(|nsid| SimNamespace { nsid, block_size: 512, blocks: 1000 * u64::from(nsid) })
            .collect(),
        ..SimConfig::default()
    });
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    std::thread::scope(|s| {
        for nsid in 1..=4u32 {
            let ctrlr = &ctrlr;
            s.spawn(move || {
                for i in 0..200 {
                    let id = ctrlr.identify_namespace(nsid).unwrap();
                    assert_eq!(id.nsze, 1000 * u64::from(nsid), "namespace {nsid}, round {i}");
                    let smart = ctrlr.smart_health(ALL_NAMESPACES).unwrap();
                    assert!(smart.temperature() > 0);
                }
            });
        }
    });
    assert_eq!(sim.stats().dma_faults, 0);
}

/// A HAL that panics while a blocking call waits (at its next register
/// read, the wait's CSTS check): the call unwinds, and the next call heals
/// the queue (a reset) and works.
#[test]
fn a_panic_while_waiting_leaves_a_queue_the_next_call_heals() {
    let sim = Sim::new(SimConfig::default());
    let ctrlr = Controller::new(Trap::new(sim.hal()), options()).unwrap();
    sim.inject(FaultRule::once(
        Some(0),
        Some(AdminOpcode::IDENTIFY.0),
        Fault::Delay(Duration::from_millis(5)),
    ));
    ctrlr.hal().armed.set(true);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctrlr.identify_namespace(1)));
    assert!(unwound.is_err(), "the HAL's panic reached the caller");
    let resets = sim.stats().resets;
    let id = ctrlr.identify_namespace(1).expect("healed by a reset, then sent");
    assert_eq!(id.nsze, 8192);
    assert_eq!(sim.stats().resets, resets + 1, "{:?}", sim.stats());
    let e = ctrlr.identify_namespace(0xffff_fffe).unwrap_err();
    assert!(matches!(e, Error::Command(_)), "an inactive-namespace status: {e:?}");
    drop(ctrlr);
    common::assert_clean(&sim);
}

/// The table of admin commands in flight kept nearly full by a pool of
/// slow requests, while three threads read Identify data: calls that wait
/// for a slot and for the data page still read their own data (a call that
/// had allocated a page of its own while waiting, and then went out with
/// the shared page, once read its own zeroed page).
#[test]
fn data_calls_waiting_for_a_slot_read_their_own_data() {
    use nvme_nostd::spec::ids::Lid;
    use nvme_nostd::AdminRequests;
    let sim = Sim::new(SimConfig {
        namespaces: (1..=3)
            .map(|nsid| SimNamespace { nsid, block_size: 512, blocks: 100 * u64::from(nsid) })
            .collect(),
        ..SimConfig::default()
    });
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    // Every Get Log Page takes 2 ms: the pool holds 15 of the 16 slots.
    sim.inject(FaultRule {
        count: u64::MAX,
        ..FaultRule::once(Some(0), Some(AdminOpcode::GET_LOG_PAGE.0), Fault::Delay(Duration::from_millis(2)))
    });
    // And every Identify 100 µs, so that the readers overlap.
    sim.inject(FaultRule {
        count: u64::MAX,
        ..FaultRule::once(Some(0), Some(AdminOpcode::IDENTIFY.0), Fault::Delay(Duration::from_micros(100)))
    });
    let (stop, filled) = (AtomicBool::new(false), AtomicBool::new(false));
    std::thread::scope(|s| {
        let filler = s.spawn(|| {
            let mut pool: AdminRequests<'_, _, Vec<u8>, u32, 15> = ctrlr.admin_requests().unwrap();
            let mut sent = 0u64;
            while !stop.load(Ordering::SeqCst) {
                while pool.get_log_page(Lid::SMART_HEALTH, ALL_NAMESPACES, 0, vec![0; 512], 0).is_ok() {
                    sent += 1;
                }
                filled.store(true, Ordering::SeqCst);
                pool.process(usize::MAX, |c| assert!(c.result.is_ok(), "{:?}", c.result));
                std::thread::yield_now();
            }
            sent
        });
        while !filled.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let readers: Vec<_> = (1..=3u32)
            .map(|nsid| {
                let ctrlr = &ctrlr;
                s.spawn(move || {
                    for i in 0..300 {
                        let id = ctrlr.identify_namespace(nsid).unwrap();
                        assert_eq!(id.nsze, 100 * u64::from(nsid), "namespace {nsid}, round {i}");
                    }
                })
            })
            .collect();
        // The filler stops whatever became of the readers.
        let joined: Vec<_> = readers.into_iter().map(|r| r.join()).collect();
        stop.store(true, Ordering::SeqCst);
        let sent = filler.join().unwrap();
        for r in joined {
            r.unwrap();
        }
        assert!(sent >= 15, "the pool filled the table");
    });
}
