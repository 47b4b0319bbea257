//! A subset small enough for Miri (`cargo +nightly miri test -p nvme-sim
//! --test miri_subset`, with `-Zmiri-strict-provenance`): the driver against
//! the simulator through DMA buffers and bounce-buffered shares, a PRP list,
//! the CID and drop faults, and a short hostile host. Miri checks that
//! neither the driver nor the device touches memory it must not.

mod common;

#[path = "hostile.rs"]
mod hostile;

use common::*;
use core::time::Duration;
use nvme_nostd::spec::command::IoOpcode;
use nvme_nostd::{DmaBuffer, IoQueuePair, PollLimit, QpairOptions, Registered};
use nvme_sim::{Fault, FaultRule, Sim, SimConfig, SimHal, SimNamespace};

const MS: Duration = Duration::from_millis(1);

fn small() -> SimConfig {
    SimConfig {
        memory_bytes: 1 << 20,
        namespaces: vec![SimNamespace { nsid: 1, block_size: 512, blocks: 64 }],
        ..SimConfig::default()
    }
}

#[test]
fn round_trip_through_dma_buffers_and_bounce_pages() {
    let (sim, ctrlr, ns) = setup(small());
    {
        // Vec buffers: shared through bounce pages, unaligned within a page.
        let mut qp = qpair(&ctrlr);
        let data: Vec<u8> = (0..3 * 4096).map(|i| (i * 7) as u8).collect();
        let mut wbuf = aligned_vec(data.len(), 0);
        wbuf.copy_from_slice(&data);
        qp.write(&ns, 4, 24, wbuf, 1).map_err(|e| e.error).unwrap();
        assert!(poll_for(&sim, &mut qp, MS)[0].status.is_success());
        assert_eq!(sim.read_blocks(1, 4, 24), data);
        qp.read(&ns, 4, 24, aligned_vec(3 * 4096, 0), 2).map_err(|e| e.error).unwrap();
        let done = poll_for(&sim, &mut qp, MS);
        assert_eq!(done[0].buffer.as_deref(), Some(&data[..]));
    }
    {
        // DMA buffers: no share; a window at an offset makes a PRP list.
        let mut qp: IoQueuePair<'_, SimHal, DmaBuffer<'_, SimHal>, u32, 4> = ctrlr
            .create_io_qpair(QpairOptions::default().with_entries(8).with_max_transfer_bytes(16 << 10))
            .unwrap();
        let mut buf = DmaBuffer::new(ctrlr.hal(), 4 * 4096).unwrap();
        assert!(buf.set_window(512, 3 * 4096));
        qp.read(&ns, 4, 24, buf, 3).map_err(|e| e.error).unwrap();
        let mut got = None;
        while got.is_none() {
            qp.poll(PollLimit::All, |_, c| got = c.buffer);
            sim.advance(Duration::from_micros(10));
        }
        let buf = got.unwrap();
        assert!(buf.iter().enumerate().all(|(i, &b)| b == (i * 7) as u8));
    }
    drop(ctrlr);
    assert_clean(&sim);
}

/// Registered buffers: the bytes reached through `Deref`/`DerefMut` of the
/// kept region, written by the device through the kept address (a PRP
/// list from a window at an offset), read back, and handed back whole.
#[test]
fn registered_buffers_round_trip() {
    let (sim, ctrlr, ns) = setup(small());
    {
        let mut qp: IoQueuePair<'_, SimHal, Registered<DmaBuffer<'_, SimHal>>, u32, 4> = ctrlr
            .create_io_qpair(QpairOptions::default().with_entries(8).with_max_transfer_bytes(16 << 10))
            .unwrap();
        let mut raw = DmaBuffer::new(ctrlr.hal(), 4 * 4096).unwrap();
        assert!(raw.set_window(512, 3 * 4096));
        let mut buf = ctrlr.register(raw).map_err(|(e, _)| e).unwrap();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i * 13) as u8;
        }
        qp.write(&ns, 8, 24, buf, 1).map_err(|e| e.error).unwrap();
        let mut got = None;
        while got.is_none() {
            qp.poll(PollLimit::All, |_, c| got = c.buffer);
            sim.advance(Duration::from_micros(10));
        }
        let mut buf = got.unwrap();
        buf.fill(0);
        qp.read(&ns, 8, 24, buf, 2).map_err(|e| e.error).unwrap();
        let mut got = None;
        while got.is_none() {
            qp.poll(PollLimit::All, |_, c| got = c.buffer);
            sim.advance(Duration::from_micros(10));
        }
        let buf = got.unwrap();
        assert!(buf.iter().enumerate().all(|(i, &b)| b == (i * 13) as u8));
        assert_eq!(buf.into_inner().len(), 3 * 4096);
    }
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn cid_faults_and_drop_under_miri() {
    let (sim, ctrlr, ns) = setup(small());
    let mut qp = qpair(&ctrlr);
    let read = Some(IoOpcode::READ.0);
    for fault in [Fault::CidRepeated, Fault::CidOutOfRange, Fault::CidNotOutstanding] {
        sim.inject(FaultRule::once(Some(qp.qid()), read, fault));
        qp.read(&ns, 0, 1, aligned_vec(512, 0), 0).map_err(|e| e.error).unwrap();
        assert_eq!(poll_for(&sim, &mut qp, MS).len(), 1);
    }
    assert_eq!(qp.stats().bogus_completions, 3);
    sim.inject(FaultRule::once(Some(qp.qid()), read, Fault::Drop));
    sim.inject(FaultRule::once(Some(qp.qid()), read, Fault::WrongPhase));
    qp.read(&ns, 1, 1, aligned_vec(512, 0), 1).map_err(|e| e.error).unwrap();
    qp.read(&ns, 2, 1, aligned_vec(512, 0), 2).map_err(|e| e.error).unwrap();
    assert!(poll_for(&sim, &mut qp, MS).is_empty());
    // Deleting the queues ends the dropped command; the buffers come back.
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn a_removed_device_leaks_rather_than_corrupts() {
    let sim = Sim::new(small());
    let ctrlr = attach(&sim);
    let ns = ctrlr.namespace(1).unwrap();
    // DMA buffers: whatever the driver leaks stays inside the arena, which
    // the simulator frees (a leaked `Vec` would be a leak Miri reports).
    let mut qp: IoQueuePair<'_, SimHal, DmaBuffer<'_, SimHal>, u32, 4> = ctrlr
        .create_io_qpair(QpairOptions::default().with_entries(8).with_max_transfer_bytes(16 << 10))
        .unwrap();
    sim.inject(FaultRule::once(Some(qp.qid()), None, Fault::Removal));
    let buf = DmaBuffer::new(ctrlr.hal(), 512).unwrap();
    qp.write(&ns, 0, 1, buf, 0).map_err(|e| e.error).unwrap();
    sim.advance(MS);
    assert_eq!(qp.poll(PollLimit::All, |_, _| {}), 0);
    drop(qp);
    drop(ctrlr);
    assert_no_bad_frees(&sim);
}

/// A submission queue in the controller memory buffer: the driver writes
/// entries through the BAR mapping with 8-byte volatile stores, the device
/// reads them from the same allocation, across a reset that turns the
/// memory space off and on again.
#[test]
fn submission_queue_in_the_cmb() {
    let sim = Sim::new(SimConfig { cmb_bytes: 16 << 10, ..small() });
    let ctrlr =
        nvme_nostd::Controller::new(sim.hal(), options().with_io_queues(2).with_sq_in_cmb(true)).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: IoQueuePair<'_, SimHal, Vec<u8>, u32, 4> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(4)).unwrap();
    assert!(qp.sq_in_cmb());
    for round in 0..2u8 {
        for lba in 0..6u64 {
            qp.write(&ns, lba, 1, aligned_vec(512, round ^ lba as u8), 0).map_err(|e| e.error).unwrap();
            assert_eq!(qp.poll(PollLimit::All, |_, c| assert!(c.status.is_success())), 1);
            qp.read(&ns, lba, 1, aligned_vec(512, 0xff), 1).map_err(|e| e.error).unwrap();
            let done = qp.poll(PollLimit::All, |_, c| {
                assert!(c.status.is_success());
                assert!(c.buffer.unwrap().iter().all(|&b| b == round ^ lba as u8));
            });
            assert_eq!(done, 1);
        }
        ctrlr.reset().unwrap();
        qp.poll(PollLimit::All, |_, c| panic!("nothing in flight: {c:?}"));
    }
    assert!(sim.stats().cmb_fetches >= 24);
}
