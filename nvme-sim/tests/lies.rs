//! Identify data that lies: the driver must refuse it or cope, never panic.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod common;

use common::*;
use nvme_nostd::spec::command::IoOpcode;
use nvme_nostd::spec::status::generic;
use nvme_nostd::{Controller, QpairOptions};
use nvme_sim::{IdentifyLies, Sim, SimConfig};

fn sim_with(lies: IdentifyLies) -> Sim {
    // MDTS 5 (128 KiB) is the real limit the lies are measured against.
    Sim::new(SimConfig { lies, mdts: 5, ..SimConfig::default() })
}

#[test]
fn huge_mdts_is_refused_or_the_device_enforces_its_real_limit() {
    let sim = sim_with(IdentifyLies { mdts: Some(255), ..IdentifyLies::default() });
    let ctrlr = match Controller::new(sim.hal(), options()) {
        Err(e) => {
            println!("attach refused MDTS 255: {e}");
            return;
        }
        Ok(c) => c,
    };
    assert_eq!(ctrlr.identify().mdts, 255);
    println!("driver believes a limit of {:?} bytes", ctrlr.max_transfer_bytes());
    let ns = ctrlr.namespace(1).expect("namespace");
    let mut qp: Qp<'_> = ctrlr
        .create_io_qpair(QpairOptions::default().with_entries(32).with_max_transfer_bytes(256 << 10))
        .expect("queue pair");
    if qp.max_transfer_bytes() < 256 << 10 {
        return;
    }
    // 256 KiB is twice the real limit (MDTS 5): the device refuses it.
    qp.write(&ns, 0, 512, vec![1; 256 << 10], 0).map_err(|e| e.error).unwrap();
    let done = poll_for(&sim, &mut qp, core::time::Duration::from_millis(1));
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].status.sc(), generic::INVALID_FIELD);
    assert!(done[0].status.dnr());
    assert_eq!(sim.read_blocks(1, 0, 1), vec![0; 512]);
    // Within the real limit all is well.
    qp.write(&ns, 0, 256, vec![1; 128 << 10], 0).map_err(|e| e.error).unwrap();
    assert!(poll_for(&sim, &mut qp, core::time::Duration::from_millis(1))[0].status.is_success());
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn huge_nn_does_not_create_namespaces() {
    let sim = sim_with(IdentifyLies { nn: Some(u32::MAX), ..IdentifyLies::default() });
    let ctrlr = match Controller::new(sim.hal(), options()) {
        Err(e) => {
            println!("attach refused NN 0xffffffff: {e}");
            return;
        }
        Ok(c) => c,
    };
    assert_eq!(ctrlr.identify().nn, u32::MAX);
    assert!(ctrlr.active_namespaces(0).unwrap().iter().eq([1]));
    assert!(ctrlr.namespace(1).is_ok());
    for nsid in [2, 1000, u32::MAX - 1, u32::MAX] {
        let r = ctrlr.namespace(nsid);
        assert!(r.is_err(), "nsid {nsid}: {r:?}");
    }
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn impossible_block_sizes_are_refused() {
    for lbads in [0, 8, 17, 63, 255] {
        let sim = sim_with(IdentifyLies { lbads: Some(lbads), ..IdentifyLies::default() });
        let ctrlr = attach(&sim);
        let r = ctrlr.namespace(1);
        assert!(r.is_err(), "LBADS {lbads}: {r:?}");
        println!("LBADS {lbads}: {}", r.unwrap_err());
        drop(ctrlr);
        assert_clean(&sim);
    }
}

#[test]
fn lba_format_index_beyond_nlbaf_is_refused() {
    for (nlbaf, flbas) in [(0, 5), (0, 0x0f), (3, 4), (255, 0x6f), (63, 0x6f), (16, 0x20)] {
        let sim =
            sim_with(IdentifyLies { nlbaf: Some(nlbaf), flbas: Some(flbas), ..IdentifyLies::default() });
        let ctrlr = attach(&sim);
        let r = ctrlr.namespace(1);
        assert!(r.is_err(), "NLBAF {nlbaf} FLBAS {flbas:#x}: {r:?}");
        drop(ctrlr);
        assert_clean(&sim);
    }
    // An out-of-range NLBAF alone (format 0 is still valid) may be tolerated.
    let sim = sim_with(IdentifyLies { nlbaf: Some(255), ..IdentifyLies::default() });
    let ctrlr = attach(&sim);
    println!("NLBAF 255, FLBAS 0: {:?}", ctrlr.namespace(1).map(|n| n.block_size()));
}

#[test]
fn clearing_the_lies_lets_the_namespace_work() {
    let sim = sim_with(IdentifyLies { lbads: Some(8), ..IdentifyLies::default() });
    let ctrlr = attach(&sim);
    assert!(ctrlr.namespace(1).is_err());
    sim.set_lies(IdentifyLies::default());
    let ns = ctrlr.namespace(1).expect("the truth this time");
    assert_eq!(ns.block_size(), 512);
    let mut qp = qpair(&ctrlr);
    let mut cmd = nvme_nostd::spec::command::SubmissionEntry::new(IoOpcode::FLUSH.0, 1);
    cmd.cdw10 = 0;
    // SAFETY: the command moves no data, and the simulated device checks
    // every address anyway.
    unsafe { qp.submit_raw(cmd, None, 0) }.map_err(|e| e.error).unwrap();
    assert!(poll_for(&sim, &mut qp, core::time::Duration::from_millis(1))[0].status.is_success());
}
