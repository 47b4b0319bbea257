//! Registered buffers (`Controller::register`): the controller's HAL
//! translates a buffer once, and its queue pairs build every request's PRPs
//! from the kept address. These tests count the HAL's `translate` and
//! `share` calls to tell the registered path from the per-request one, and
//! try what could make a kept address wrong: a buffer registered with
//! another controller, bytes the HAL does not reach ahead of time, requests
//! larger than the buffer or misaligned, and a reset with registered
//! buffers in flight.

mod common;

use common::trap::Trap;
use common::{assert_clean, options, pattern};
use core::time::Duration;
use nvme_nostd::{
    Argument, Controller, DmaBuffer, Error, IoBuffer, IoQueuePair, Namespace, PollLimit, QpairOptions,
    Registered, ScatterList,
};
use nvme_sim::{Sim, SimConfig, SimHal};

/// The simulator's HAL, counting the calls that hand a buffer to the
/// device (`Trap::handed`).
type Counting = Trap<SimHal>;

impl Counting {
    /// Calls that handed a buffer over (`translate` and `share`).
    fn handed_over(&self) -> u32 {
        self.handed.get()
    }
}

type Ctrlr = Controller<Counting>;
type Buf<'h> = Registered<DmaBuffer<'h, Counting>>;
type Qp<'c, 'h> = IoQueuePair<'c, Counting, Buf<'h>, u32, 16>;

fn attach(sim: &Sim) -> Ctrlr {
    Controller::new(Trap::new(sim.hal()), options()).expect("attach")
}

fn qpair<'c, 'h>(ctrlr: &'c Ctrlr) -> Qp<'c, 'h> {
    ctrlr
        .create_io_qpair(QpairOptions::default().with_entries(16).with_max_transfer_bytes(128 << 10))
        .expect("create I/O queue pair")
}

/// Polls until nothing is in flight (virtual time moving on), returning
/// what completed.
fn drain<'h>(sim: &Sim, qp: &mut Qp<'_, 'h>) -> Vec<nvme_nostd::Completion<Buf<'h>, u32>> {
    let mut done = Vec::new();
    for _ in 0..10_000 {
        qp.poll(PollLimit::All, |_, c| done.push(c));
        if qp.in_flight() == 0 {
            return done;
        }
        sim.advance(Duration::from_micros(10));
    }
    panic!("requests still in flight: {}", qp.in_flight());
}

/// `blocks` blocks of `pattern`, salted.
fn blocks_of(first: u64, blocks: u64, bs: usize, salt: u8) -> Vec<u8> {
    (first..first + blocks).flat_map(|lba| pattern(lba, bs, salt)).collect()
}

#[test]
fn registered_buffers_take_their_prps_from_the_kept_address() {
    let sim = Sim::new(SimConfig::default());
    let ctrlr = attach(&sim);
    let ns = ctrlr.namespace(1).expect("namespace 1");
    let bs = ns.block_size() as usize;
    let hal = ctrlr.hal();
    {
        let mut qp = qpair(&ctrlr);
        // One page (PRP1), two pages from an offset (PRP2), and 128 KiB (a
        // PRP list), each written and read back through the same buffers
        // several times.
        for (bytes, offset) in [(4096usize, 0usize), (8192, 512), (128 << 10, 0)] {
            let mut raw = DmaBuffer::new(hal, bytes + offset).expect("DMA memory");
            assert!(raw.set_window(offset, bytes));
            let before = hal.handed_over();
            let mut buf = ctrlr.register(raw).map_err(|(e, _)| e).expect("registered");
            assert_eq!(hal.handed_over(), before + 1, "one translation, at registration");
            let blocks = (bytes / bs) as u64;
            let lba = 3;
            let handed = hal.handed_over();
            for round in 0..4u8 {
                buf.copy_from_slice(&blocks_of(lba, blocks, bs, round));
                qp.write(&ns, lba, blocks as u32, buf, 1).map_err(|e| e.error).expect("write submitted");
                let cmd = *sim.recent_io_commands().last().expect("the write");
                let mut done = drain(&sim, &mut qp);
                assert_eq!(done.len(), 1);
                let c = done.pop().unwrap();
                assert!(c.result().is_ok(), "{:?}", c.result());
                buf = c.buffer.expect("the buffer comes back");
                assert_eq!(cmd.prp1, buf.device_address().0, "PRP1 is the registered address");
                assert_eq!(sim.read_blocks(1, lba, blocks), blocks_of(lba, blocks, bs, round));

                buf.fill(0xee);
                qp.read(&ns, lba, blocks as u32, buf, 2).map_err(|e| e.error).expect("read submitted");
                let mut done = drain(&sim, &mut qp);
                let c = done.pop().unwrap();
                assert!(c.result().is_ok(), "{:?}", c.result());
                buf = c.buffer.expect("the buffer comes back");
                assert_eq!(&buf[..], &blocks_of(lba, blocks, bs, round)[..], "{bytes} bytes, round {round}");
            }
            assert_eq!(hal.handed_over(), handed, "no translation or share per request");
            let raw = buf.into_inner();
            assert_eq!(raw.len(), bytes, "the window as registered");
        }
    }
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn a_buffer_registered_with_another_controller_is_handed_over_as_usual() {
    // Two simulated controllers, each with its own memory: an address the
    // first one's HAL gave means nothing to the second.
    let (sim_a, sim_b) = (Sim::new(SimConfig::default()), Sim::new(SimConfig::default()));
    let (a, b) = (attach(&sim_a), attach(&sim_b));
    let ns = b.namespace(1).expect("namespace 1");
    let bs = ns.block_size() as usize;
    {
        let mut qp = qpair(&b);
        let mut buf =
            a.register(DmaBuffer::new(a.hal(), 8192).expect("DMA memory")).map_err(|(e, _)| e).unwrap();
        buf.copy_from_slice(&blocks_of(0, 16, bs, 9));
        let handed = b.hal().handed_over();
        qp.write(&ns, 0, 16, buf, 1).map_err(|e| e.error).expect("write submitted");
        let c = drain(&sim_b, &mut qp).pop().unwrap();
        assert!(c.result().is_ok(), "{:?}", c.result());
        assert!(b.hal().handed_over() > handed, "B's HAL handed the bytes over");
        assert_ne!(
            sim_b.recent_io_commands().last().unwrap().prp1,
            c.buffer.as_ref().unwrap().device_address().0,
            "not A's address"
        );
        assert_eq!(sim_b.read_blocks(1, 0, 16), blocks_of(0, 16, bs, 9), "B wrote the bytes");
        let mut buf = c.buffer.unwrap();
        buf.fill(0);
        qp.read(&ns, 0, 16, buf, 2).map_err(|e| e.error).expect("read submitted");
        let c = drain(&sim_b, &mut qp).pop().unwrap();
        assert!(c.result().is_ok(), "{:?}", c.result());
        assert_eq!(&c.buffer.unwrap()[..], &blocks_of(0, 16, bs, 9)[..]);
    }
    drop((a, b));
    assert_clean(&sim_a);
    assert_clean(&sim_b);
}

#[test]
fn buffers_the_hal_does_not_reach_ahead_of_time_are_refused_and_handed_back() {
    let sim = Sim::new(SimConfig::default());
    let ctrlr = Controller::new(sim.hal(), options()).expect("attach");
    // Heap memory: the simulator's HAL shares it per request, translating
    // nothing.
    let (error, back) = ctrlr.register(vec![7u8; 4096]).map(|_| ()).unwrap_err();
    assert_eq!(error, Error::InvalidArgument(Argument::NotRegistrable));
    assert_eq!(back, vec![7u8; 4096], "handed back untouched");
    // Nothing to register.
    let mut empty = DmaBuffer::new(ctrlr.hal(), 4096).unwrap();
    assert!(empty.set_window(0, 0));
    assert!(ctrlr.register(empty).is_err());
    // A scatter list (its pieces could be registered one by one).
    let mut list: ScatterList<DmaBuffer<'_, SimHal>, 2> = ScatterList::new();
    assert!(list.push(DmaBuffer::new(ctrlr.hal(), 4096).unwrap()).is_ok());
    assert!(list.push(DmaBuffer::new(ctrlr.hal(), 4096).unwrap()).is_ok());
    let (error, mut list) = ctrlr.register(list).map(|_| ()).unwrap_err();
    assert_eq!(error, Error::InvalidArgument(Argument::NotRegistrable));
    assert_eq!(list.pieces(), 2);
    drop(list);
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn bad_requests_on_registered_buffers_are_refused_unsent() {
    let sim = Sim::new(SimConfig::default());
    let ctrlr = attach(&sim);
    let ns: Namespace = ctrlr.namespace(1).expect("namespace 1");
    let bs = ns.block_size() as usize;
    let hal = ctrlr.hal();
    {
        let mut qp = qpair(&ctrlr);
        let sent = sim.stats().commands_fetched;
        // More blocks than the buffer holds.
        let buf = ctrlr.register(DmaBuffer::new(hal, 4096).unwrap()).map_err(|(e, _)| e).unwrap();
        let e = qp.read(&ns, 0, (8192 / bs) as u32, buf, 1).unwrap_err();
        assert_eq!(e.error, Error::BufferTooSmall { needed: 8192, actual: 4096 });
        // Bytes that start off a dword: no PRP can name them.
        let mut odd = DmaBuffer::new(hal, 8192).unwrap();
        assert!(odd.set_window(2, 4096));
        let odd = ctrlr.register(odd).map_err(|(e, _)| e).unwrap();
        let e = qp.write(&ns, 0, (4096 / bs) as u32, odd, 1).unwrap_err();
        assert_eq!(e.error, Error::BufferMisaligned { required: 4 });
        // Blocks past the namespace's end, on a registered buffer too.
        let e = qp.read(&ns, ns.blocks(), 1, e.buffer, 1).unwrap_err();
        assert_eq!(e.error, Error::LbaOutOfRange);
        assert_eq!(sim.stats().commands_fetched, sent, "nothing reached the controller");
        assert_eq!(qp.in_flight(), 0);
        // Above the pair's transfer limit: split in two commands, each over
        // its part of the registered bytes.
        let mut big = ctrlr.register(DmaBuffer::new(hal, 256 << 10).unwrap()).map_err(|(e, _)| e).unwrap();
        big.copy_from_slice(&blocks_of(0, ((256 << 10) / bs) as u64, bs, 5));
        qp.write(&ns, 0, ((256 << 10) / bs) as u32, big, 1).map_err(|e| e.error).expect("split");
        let c = drain(&sim, &mut qp).pop().unwrap();
        assert!(c.result().is_ok(), "{:?}", c.result());
        assert_eq!(sim.stats().commands_fetched, sent + 2, "two commands");
        assert_eq!(
            sim.read_blocks(1, 0, ((256 << 10) / bs) as u64),
            blocks_of(0, ((256 << 10) / bs) as u64, bs, 5)
        );
    }
    drop(ctrlr);
    assert_clean(&sim);
}

#[test]
fn registered_buffers_in_flight_across_a_reset_come_back_and_stay_registered() {
    let sim = Sim::new(SimConfig { latency: Duration::from_millis(1), ..SimConfig::default() });
    let ctrlr = attach(&sim);
    let ns = ctrlr.namespace(1).expect("namespace 1");
    let bs = ns.block_size() as usize;
    let hal = ctrlr.hal();
    {
        let mut qp = qpair(&ctrlr);
        for i in 0..8u32 {
            let buf = ctrlr.register(DmaBuffer::new(hal, 4096).unwrap()).map_err(|(e, _)| e).unwrap();
            qp.read(&ns, u64::from(i), (4096 / bs) as u32, buf, i).map_err(|e| e.error).unwrap();
        }
        // Reset from the side (as another thread would) while all eight are
        // on the device.
        ctrlr.reset().expect("reset");
        let mut back = Vec::new();
        for _ in 0..10_000 {
            qp.poll(PollLimit::All, |_, c| back.push(c));
            if back.len() == 8 && qp.failure().is_none() {
                break;
            }
            sim.advance(Duration::from_micros(10));
        }
        assert_eq!(back.len(), 8, "each request completed exactly once");
        let mut contexts: Vec<u32> = back.iter().map(|c| c.context).collect();
        contexts.sort();
        assert_eq!(contexts, (0..8).collect::<Vec<_>>());
        // The buffers came back registered, and the address still holds
        // after the reset: the same buffers carry new I/O.
        let handed = hal.handed_over();
        for (i, c) in back.into_iter().enumerate() {
            let mut buf = c.buffer.expect("the buffer comes back");
            buf.copy_from_slice(&blocks_of(i as u64 * 8, (4096 / bs) as u64, bs, 3));
            qp.write(&ns, i as u64 * 8, (4096 / bs) as u32, buf, i as u32).map_err(|e| e.error).unwrap();
        }
        let done = drain(&sim, &mut qp);
        assert_eq!(done.len(), 8);
        assert!(done.iter().all(|c| c.result().is_ok()));
        assert_eq!(hal.handed_over(), handed, "the kept addresses were used");
        for i in 0..8u64 {
            assert_eq!(
                sim.read_blocks(1, i * 8, (4096 / bs) as u64),
                blocks_of(i * 8, (4096 / bs) as u64, bs, 3)
            );
        }
    }
    drop(ctrlr);
    assert_clean(&sim);
}
