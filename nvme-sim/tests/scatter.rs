//! Scatter lists (the seed's `readv`/`writev`): pieces translated by the
//! HAL, described by PRPs where their shape allows, by an SGL where it
//! does not and the controller has SGLs, refused unsent otherwise. QEMU runs
//! both shapes in the conformance suite; here the simulator adds SGL chains
//! across list pages, a controller without SGLs or with dword granularity,
//! and the bad input.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod common;

use common::{assert_clean, options, poll_for};
use core::time::Duration;
use nvme_nostd::spec::command::SglDescriptor;
use nvme_nostd::{
    Argument, Controller, DmaBuffer, Error, IoQueuePair, PollLimit, PrpShape, QpairOptions, ScatterList,
};
use nvme_sim::{Sim, SimConfig, SimHal};

type List<'h> = ScatterList<DmaBuffer<'h, SimHal>, PIECES>;
type Qp<'c, 'h> = IoQueuePair<'c, SimHal, List<'h>, u32, 8>;

/// Pieces a list holds: enough for an SGL over two list pages (each request
/// slot holds its list inline, so the tests run with a larger stack).
const PIECES: usize = 320;

/// Runs `f` on a thread with a stack for slots of 320-piece lists.
fn big_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new().stack_size(64 << 20).spawn(f).unwrap().join().unwrap();
}

fn sim(sgls: u32) -> Sim {
    Sim::new(SimConfig { sgls, memory_bytes: 64 << 20, ..SimConfig::default() })
}

/// `count` pieces of `len` bytes, each `offset` bytes into a page of its
/// own, filled from `seed`.
fn pieces<'h>(hal: &'h SimHal, count: usize, offset: usize, len: usize, seed: u8) -> List<'h> {
    let mut list = List::new();
    for i in 0..count {
        let mut b = DmaBuffer::new(hal, offset + len).unwrap();
        assert!(b.set_window(offset, len));
        b.iter_mut().enumerate().for_each(|(j, x)| *x = (i as u8).wrapping_mul(7) ^ (j as u8) ^ seed);
        assert!(list.push(b).is_ok());
    }
    list
}

fn flat(list: &List<'_>) -> Vec<u8> {
    list.as_slice().iter().flat_map(|p| p.to_vec()).collect()
}

fn run<'c, 'h>(sim: &Sim, qp: &mut Qp<'c, 'h>) -> (Result<(), Error>, Option<List<'h>>) {
    finish_one(sim, qp)
}

#[test]
fn page_shaped_pieces_go_as_prps_others_as_an_sgl() {
    big_stack(page_shaped_pieces_go_as_prps_others_as_an_sgl_body);
}

fn page_shaped_pieces_go_as_prps_others_as_an_sgl_body() {
    let sim = sim(1);
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let hal = ctrlr.hal();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: Qp<'_, '_> = ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    // Whole pages: PRPs (PSDT 00b).
    let list = pieces(hal, 3, 0, 4096, 1);
    let expected = flat(&list);
    qp.write(&ns, 0, 24, list, 0).map_err(|e| e.error).unwrap();
    assert_eq!(run(&sim, &mut qp).0, Ok(()));
    assert_eq!(sim.read_blocks(1, 0, 24), expected);
    assert_eq!(sim.recent_io_commands().last().unwrap().cdw0.psdt(), 0);
    // 512-byte pieces in the middle of their pages: an SGL (PSDT 01b),
    // its Last Segment descriptor in DPTR naming five Data Blocks.
    let list = pieces(hal, 5, 1024, 512, 2);
    let expected = flat(&list);
    qp.write(&ns, 100, 5, list, 1).map_err(|e| e.error).unwrap();
    assert_eq!(run(&sim, &mut qp).0, Ok(()));
    assert_eq!(sim.read_blocks(1, 100, 5), expected);
    let cmd = *sim.recent_io_commands().last().unwrap();
    assert_eq!(cmd.cdw0.psdt(), 1, "CDW0 bits 15:14");
    let dptr = SglDescriptor::from_qwords([cmd.prp1, cmd.prp2]);
    assert_eq!((dptr.kind(), dptr.length), (SglDescriptor::LAST_SEGMENT, 5 * 16));
    // Read back into other such pieces.
    qp.read(&ns, 100, 5, pieces(hal, 5, 2048, 512, 0), 2).map_err(|e| e.error).unwrap();
    let (result, back) = run(&sim, &mut qp);
    assert_eq!((result, flat(&back.unwrap())), (Ok(()), expected));
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// 300 pieces: 300 Data Block descriptors, across two list pages chained
/// by a Last Segment descriptor (a request slot has three list pages for
/// 4 MiB transfers, without MDTS).
#[test]
fn an_sgl_chains_across_list_pages() {
    big_stack(an_sgl_chains_across_list_pages_body);
}

fn an_sgl_chains_across_list_pages_body() {
    let sim = Sim::new(SimConfig { sgls: 1, mdts: 0, memory_bytes: 64 << 20, ..SimConfig::default() });
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let hal = ctrlr.hal();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: Qp<'_, '_> = ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    let list = pieces(hal, 300, 512, 512, 3);
    let expected = flat(&list);
    qp.write(&ns, 1000, 300, list, 0).map_err(|e| e.error).unwrap();
    assert_eq!(run(&sim, &mut qp).0, Ok(()));
    assert_eq!(sim.read_blocks(1, 1000, 300), expected);
    let cmd = *sim.recent_io_commands().last().unwrap();
    let dptr = SglDescriptor::from_qwords([cmd.prp1, cmd.prp2]);
    assert_eq!((dptr.kind(), dptr.length), (SglDescriptor::SEGMENT, 256 * 16), "255 data + the chain");
    qp.read(&ns, 1000, 300, pieces(hal, 300, 0, 512, 0), 1).map_err(|e| e.error).unwrap();
    let (result, back) = run(&sim, &mut qp);
    assert_eq!((result, flat(&back.unwrap())), (Ok(()), expected));
}

/// Without SGLs, pieces PRPs cannot describe are refused unsent; with
/// dword granularity (SGLS 10b), a piece of an odd dword count is.
#[test]
fn controllers_without_sgls_or_with_dword_granularity() {
    big_stack(controllers_without_sgls_or_with_dword_granularity_body);
}

fn controllers_without_sgls_or_with_dword_granularity_body() {
    let sim = sim(0);
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let hal = ctrlr.hal();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: Qp<'_, '_> = ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    // Pieces PRPs cannot describe together go as one command each (a
    // block each, here), and complete as one request.
    let list = pieces(hal, 5, 1024, 512, 3);
    let expected = flat(&list);
    let before = sim.stats().commands_fetched;
    qp.write(&ns, 0, 5, list, 0).map_err(|e| e.error).unwrap();
    assert_eq!(run(&sim, &mut qp).0, Ok(()));
    assert_eq!(sim.stats().commands_fetched - before, 5, "a command a piece");
    qp.read(&ns, 0, 5, pieces(hal, 5, 1024, 512, 0xff), 1).map_err(|e| e.error).unwrap();
    let (r, back) = run(&sim, &mut qp);
    r.unwrap();
    assert_eq!(flat(&back.unwrap()), expected, "read back through the split");
    // Where PRPs break inside a block, no cut can work: refused unsent.
    let fetched = sim.stats().commands_fetched;
    let refused = qp.write(&ns, 0, 2, pieces(hal, 4, 1024, 256, 0), 0).unwrap_err();
    assert!(matches!(refused.error, Error::NotPrpShaped(_)), "{:?}", refused.error);
    assert_eq!(refused.buffer.as_slice().len(), 4, "the pieces come back");
    assert_eq!(sim.stats().commands_fetched, fetched);
    drop(refused);
    qp.write(&ns, 0, 16, pieces(hal, 2, 0, 4096, 0), 1).map_err(|e| e.error).unwrap();
    assert_eq!(run(&sim, &mut qp).0, Ok(()), "page-shaped pieces need no SGL");
    drop(qp);
    drop(ctrlr);

    let sim = Sim::new(SimConfig { sgls: 2, ..SimConfig::default() });
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let hal = ctrlr.hal();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: Qp<'_, '_> = ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    let mut odd = pieces(hal, 1, 8, 510, 0);
    let more = pieces(hal, 1, 520, 514, 0).into_pieces().into_iter().next().unwrap();
    assert!(odd.push(more).is_ok());
    let fetched = sim.stats().commands_fetched;
    let refused = qp.write(&ns, 0, 2, odd, 0).unwrap_err();
    assert_eq!(refused.error, Error::NotPrpShaped(PrpShape::SglNotDwordGranular));
    assert_eq!(sim.stats().commands_fetched, fetched);
    // The same pieces on a controller without the granularity rule work.
    let sim1 = sim_with_sgls_1_write(refused.buffer.as_slice().iter().map(|p| p.len()).collect());
    assert_eq!(sim1, Ok(()));
}

/// 510 and 514-byte pieces, written and read back on an SGLS 01b
/// controller.
fn sim_with_sgls_1_write(lens: Vec<usize>) -> Result<(), Error> {
    let sim = sim(1);
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let hal = ctrlr.hal();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: Qp<'_, '_> = ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    let mut list = List::new();
    for (i, len) in lens.iter().enumerate() {
        let mut b = DmaBuffer::new(hal, 8 + len).unwrap();
        assert!(b.set_window(8, *len));
        b.fill(i as u8 + 1);
        assert!(list.push(b).is_ok());
    }
    let expected = flat(&list);
    qp.write(&ns, 0, 2, list, 0).map_err(|e| e.error)?;
    run(&sim, &mut qp).0?;
    assert_eq!(sim.read_blocks(1, 0, 2), expected);
    Ok(())
}

/// Bad input, each refused unsent with the pieces back.
#[test]
fn bad_scatter_lists_are_refused_unsent() {
    big_stack(bad_scatter_lists_are_refused_unsent_body);
}

fn bad_scatter_lists_are_refused_unsent_body() {
    let sim = sim(1);
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let hal = ctrlr.hal();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: Qp<'_, '_> = ctrlr
        .create_io_qpair(QpairOptions::default().with_entries(8).with_max_transfer_bytes(64 << 10))
        .unwrap();
    let fetched = sim.stats().commands_fetched;
    // Shorter than the blocks.
    let e = qp.read(&ns, 0, 4, pieces(hal, 3, 0, 512, 0), 0).unwrap_err();
    assert_eq!(e.error, Error::BufferTooSmall { needed: 2048, actual: 1536 });
    // A piece not on a dword.
    let e = qp.read(&ns, 0, 2, pieces(hal, 2, 2, 512, 0), 0).unwrap_err();
    assert_eq!(e.error, Error::BufferMisaligned { required: 4 });
    // Above the transfer limit: scatter lists are not split.
    let e = qp.read(&ns, 0, 256, pieces(hal, 32, 0, 4096, 0), 0).unwrap_err();
    assert!(matches!(e.error, Error::TransferTooLarge { .. }), "{:?}", e.error);
    // A raw command.
    let cmd = nvme_nostd::spec::command::SubmissionEntry::new(0x02, 1);
    // SAFETY: refused before anything is sent (a scatter list).
    let e = unsafe { qp.submit_raw(cmd, Some(pieces(hal, 2, 0, 512, 0)), 0) }.unwrap_err();
    assert_eq!(e.error, Error::InvalidArgument(Argument::ScatterList));
    assert_eq!(sim.stats().commands_fetched, fetched);
    assert_eq!(qp.in_flight(), 0);
}

type VecList = ScatterList<Vec<u8>, 16>;

/// `count` heap pieces of `len` bytes (on 4-byte boundaries), from `seed`.
fn vec_pieces(count: usize, len: usize, seed: u8) -> VecList {
    let mut list = VecList::new();
    for i in 0..count {
        let mut v = common::aligned_vec(len, 0);
        v.iter_mut().enumerate().for_each(|(j, x)| *x = (i as u8).wrapping_mul(13) ^ (j as u8) ^ seed);
        assert!(list.push(v).is_ok());
    }
    list
}

fn vec_flat(list: &VecList) -> Vec<u8> {
    list.as_slice().iter().flatten().copied().collect()
}

/// One request of `qp` to its end: its result and buffer.
fn finish_one<B>(
    sim: &Sim,
    qp: &mut IoQueuePair<'_, impl nvme_nostd::Hal, B, u32, 8>,
) -> (Result<(), Error>, Option<B>)
where
    B: nvme_nostd::IoBuffer,
{
    let mut done = Vec::new();
    for _ in 0..1000 {
        qp.poll(PollLimit::All, |_, c| done.push(c));
        if qp.in_flight() == 0 {
            break;
        }
        sim.advance(Duration::from_micros(10));
    }
    assert_eq!(done.len(), 1);
    let c = done.pop().unwrap();
    (c.result(), c.buffer)
}

/// Pieces the HAL cannot translate (here, `Vec`s, which the simulator's HAL
/// only shares) are shared, one mapping each, and unshared when the request
/// ends: a write and a read back, by an SGL (heap pieces are not
/// page-shaped) and, on a controller without SGLs, by PRPs where the
/// pieces are whole pages.
#[test]
fn pieces_the_hal_cannot_translate_are_shared() {
    big_stack(pieces_the_hal_cannot_translate_are_shared_body);
}

fn pieces_the_hal_cannot_translate_are_shared_body() {
    let sim = sim(1);
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: IoQueuePair<'_, SimHal, VecList, u32, 8> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    let list = vec_pieces(3, 512, 5);
    let expected = vec_flat(&list);
    qp.write(&ns, 16, 3, list, 0).map_err(|e| e.error).unwrap();
    assert_eq!(sim.stats().live_shares, 3, "one share a piece while in flight");
    let (r, _) = finish_one(&sim, &mut qp);
    r.unwrap();
    assert_eq!(sim.stats().live_shares, 0);
    qp.read(&ns, 16, 3, vec_pieces(3, 512, 0xff), 1).map_err(|e| e.error).unwrap();
    let (r, back) = finish_one(&sim, &mut qp);
    r.unwrap();
    assert_eq!(vec_flat(&back.unwrap()), expected);
    // Up to MAX_SHARED_PIECES pieces are shared; one more is refused unsent,
    // and what was shared on the way is undone.
    let fetched = sim.stats().commands_fetched;
    let e = qp
        .write(
            &ns,
            0,
            nvme_nostd::MAX_SHARED_PIECES as u32 + 1,
            vec_pieces(nvme_nostd::MAX_SHARED_PIECES + 1, 512, 1),
            2,
        )
        .unwrap_err();
    assert_eq!(e.error, Error::InvalidArgument(Argument::ScatterTooManyShared));
    assert_eq!(sim.stats().live_shares, 0);
    qp.write(
        &ns,
        0,
        nvme_nostd::MAX_SHARED_PIECES as u32,
        vec_pieces(nvme_nostd::MAX_SHARED_PIECES, 512, 1),
        3,
    )
    .map_err(|e| e.error)
    .unwrap();
    finish_one(&sim, &mut qp).0.unwrap();
    assert_eq!(sim.stats().commands_fetched, fetched + 1);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);

    // Without SGLs: whole-page pieces as PRPs (the simulator shares page
    // by page, so each page is a PRP entry of its own).
    let sim = crate::sim(0);
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: IoQueuePair<'_, SimHal, ScatterList<PageVec, 4>, u32, 8> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    let mut list = ScatterList::new();
    for i in 0..2u8 {
        let mut p = PageVec::new();
        p.bytes().fill(0x40 + i);
        assert!(list.push(p).is_ok());
    }
    qp.write(&ns, 64, 16, list, 0).map_err(|e| e.error).unwrap();
    finish_one(&sim, &mut qp).0.unwrap();
    let mut list = ScatterList::new();
    for _ in 0..2 {
        assert!(list.push(PageVec::new()).is_ok());
    }
    qp.read(&ns, 64, 16, list, 1).map_err(|e| e.error).unwrap();
    let (r, back) = finish_one(&sim, &mut qp);
    r.unwrap();
    let mut back = back.unwrap();
    for (i, p) in back.as_mut_slice().iter_mut().enumerate() {
        assert!(p.bytes().iter().all(|&b| b == 0x40 + i as u8));
    }
    // Pieces that are not whole pages cannot go together as PRPs here: a
    // command each (4 blocks each), every share undone at the end.
    let mut list = ScatterList::new();
    for i in 0..2u8 {
        let mut p = PageVec::new();
        p.len = 2048;
        p.bytes().fill(0x60 + i);
        assert!(list.push(p).is_ok());
    }
    let fetched = sim.stats().commands_fetched;
    qp.write(&ns, 64, 8, list, 2).map_err(|e| e.error).unwrap();
    finish_one(&sim, &mut qp).0.unwrap();
    assert_eq!(sim.stats().commands_fetched - fetched, 2);
    assert_eq!(sim.stats().live_shares, 0);
    // A piece that ends inside a block: refused unsent, nothing shared.
    let mut list = ScatterList::new();
    for _ in 0..2 {
        let mut p = PageVec::new();
        p.len = 256;
        assert!(list.push(p).is_ok());
    }
    let fetched = sim.stats().commands_fetched;
    let e = qp.write(&ns, 64, 1, list, 3).unwrap_err();
    assert!(matches!(e.error, Error::NotPrpShaped(_)), "{:?}", e.error);
    assert_eq!(sim.stats().live_shares, 0);
    assert_eq!(sim.stats().commands_fetched, fetched);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// A heap page: 4096 bytes (or `len`) on a page boundary of a larger `Vec`.
struct PageVec {
    storage: Vec<u8>,
    len: usize,
}

impl PageVec {
    fn new() -> Self {
        PageVec { storage: vec![0u8; 8192], len: 4096 }
    }

    fn at(&self) -> usize {
        (self.storage.as_ptr() as usize).next_multiple_of(4096) - self.storage.as_ptr() as usize
    }

    fn bytes(&mut self) -> &mut [u8] {
        let at = self.at();
        &mut self.storage[at..at + self.len]
    }
}

// SAFETY: the bytes are the Vec's own, which moves with the value without
// moving its heap storage, and nothing else refers to them.
unsafe impl nvme_nostd::IoBuffer for PageVec {
    fn as_dma_slice(&mut self) -> core::ptr::NonNull<[u8]> {
        core::ptr::NonNull::from(self.bytes())
    }
}

/// A share that fails part-way (the third piece): the error is the
/// request's at once, nothing submitted, the first two undone.
#[test]
fn a_share_that_fails_part_way() {
    big_stack(|| share_fails(2, 4));
}

/// Heap pieces whose addresses PRPs cannot describe go straight to an SGL:
/// each is shared once (a fourth share, which a PRP attempt before the SGL
/// would have needed for three pieces, is armed to fail and never made).
#[test]
fn pieces_no_prp_can_describe_are_shared_once() {
    big_stack(|| {
        let sim = sim(1);
        let ctrlr = Controller::new(hal_traits::faulty::FaultyHal::new(sim.hal()), options()).unwrap();
        let ns = ctrlr.namespace(1).unwrap();
        let mut qp: IoQueuePair<'_, _, VecList, u32, 8> =
            ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
        ctrlr.hal().fail_shares(3, 1);
        qp.write(&ns, 0, 3, vec_pieces(3, 512, 0), 0).map_err(|e| e.error).unwrap();
        finish_one(&sim, &mut qp).0.unwrap();
        assert_eq!(ctrlr.hal().faults().shares, 0, "three shares for three pieces");
        drop(qp);
        drop(ctrlr);
        assert_clean(&sim);
    });
}

/// A write of `pieces` heap pieces whose share number `skip + 1` fails:
/// the error is the request's, nothing is left shared or submitted, and
/// the next write goes.
fn share_fails(skip: u32, pieces: usize) {
    let sim = sim(1);
    let ctrlr = Controller::new(hal_traits::faulty::FaultyHal::new(sim.hal()), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: IoQueuePair<'_, _, VecList, u32, 8> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    let fetched = sim.stats().commands_fetched;
    ctrlr.hal().fail_shares(skip, 1);
    let blocks = pieces as u32;
    let e = qp.write(&ns, 0, blocks, vec_pieces(pieces, 512, 0), 0).unwrap_err();
    assert!(matches!(e.error, Error::Hal(_)), "{:?}", e.error);
    assert_eq!(ctrlr.hal().faults().shares, 1);
    assert_eq!(sim.stats().live_shares, 0);
    assert_eq!(sim.stats().commands_fetched, fetched);
    assert_eq!(qp.in_flight(), 0);
    qp.write(&ns, 0, blocks, vec_pieces(pieces, 512, 0), 1).map_err(|e| e.error).unwrap();
    finish_one(&sim, &mut qp).0.unwrap();
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// A read whose last piece is longer than what is left of the data: only
/// the part that carries data is shared and synced, the device's bytes
/// come back into it, and the rest of the piece is as it was.
#[test]
fn a_last_piece_longer_than_the_data() {
    big_stack(a_last_piece_longer_than_the_data_body);
}

fn a_last_piece_longer_than_the_data_body() {
    let sim = sim(1);
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: IoQueuePair<'_, SimHal, VecList, u32, 8> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    let data = vec_pieces(3, 512, 9);
    let expected = vec_flat(&data);
    qp.write(&ns, 32, 3, data, 0).map_err(|e| e.error).unwrap();
    finish_one(&sim, &mut qp).0.unwrap();
    // 1536 bytes into pieces of 1024 and 1024: the second carries 512.
    let mut list = VecList::new();
    for _ in 0..2 {
        assert!(list.push(common::aligned_vec(1024, 0xee)).is_ok());
    }
    qp.read(&ns, 32, 3, list, 1).map_err(|e| e.error).unwrap();
    let (r, back) = finish_one(&sim, &mut qp);
    r.unwrap();
    let back = back.unwrap();
    let got = vec_flat(&back);
    assert_eq!(&got[..1536], &expected[..], "the device's bytes came back");
    assert!(got[1536..].iter().all(|&b| b == 0xee), "the unused tail is untouched");
    // The same on a write: 1536 bytes from pieces of 1024 and 1024.
    let mut list = VecList::new();
    for i in 0..2u8 {
        assert!(list.push(common::aligned_vec(1024, 0x30 + i)).is_ok());
    }
    qp.write(&ns, 32, 3, list, 2).map_err(|e| e.error).unwrap();
    finish_one(&sim, &mut qp).0.unwrap();
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// A reset with scatter lists in flight: each comes back once, its pieces
/// synced back, nothing left open.
#[test]
fn a_reset_with_scatter_lists_in_flight() {
    big_stack(a_reset_with_scatter_lists_in_flight_body);
}

fn a_reset_with_scatter_lists_in_flight_body() {
    let sim = sim(1);
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let hal = ctrlr.hal();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: Qp<'_, '_> = ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    sim.set_latency(Duration::from_millis(10));
    for i in 0..3 {
        qp.read(&ns, i * 8, 8, pieces(hal, 8, 1024, 512, 0), i as u32).map_err(|e| e.error).unwrap();
    }
    ctrlr.reset().unwrap();
    let done = {
        let mut d = Vec::new();
        for _ in 0..100 {
            qp.poll(PollLimit::All, |_, c| d.push(c));
            sim.advance(Duration::from_micros(10));
        }
        d
    };
    assert_eq!(done.len(), 3);
    assert!(done.iter().all(|c| c.result() == Err(Error::Reset) && c.buffer.is_some()));
    drop(done);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
    let _ = poll_for;
}

/// List pages for the property test: addresses from 0x7000_0000.
struct Pages(Vec<[u64; 512]>);

impl nvme_nostd::fuzzing::PrpListSink for Pages {
    fn pages(&self) -> usize {
        self.0.len()
    }
    fn page_addr(&self, page: usize) -> u64 {
        0x7000_0000 + page as u64 * 4096
    }
    fn write(&mut self, page: usize, index: usize, entry: u64) {
        self.0[page][index] = entry;
    }
}

/// Walks an SGL from DPTR the way a controller does: the data runs.
fn walk(dptr: [u64; 2], pages: &Pages) -> Result<Vec<(u64, u64)>, String> {
    let read = |addr: u64| -> Result<SglDescriptor, String> {
        let off = addr.checked_sub(0x7000_0000).ok_or("below the list pages")? as usize;
        let (page, index) = (off / 4096, off % 4096 / 8);
        let p = pages.0.get(page).ok_or("beyond the list pages")?;
        Ok(SglDescriptor::from_qwords([p[index], p[index + 1]]))
    };
    let mut runs = Vec::new();
    let mut next = SglDescriptor::from_qwords(dptr);
    for _ in 0..64 {
        match next.kind() {
            SglDescriptor::DATA_BLOCK => {
                runs.push((next.address, u64::from(next.length)));
                return Ok(runs);
            }
            kind @ (SglDescriptor::SEGMENT | SglDescriptor::LAST_SEGMENT) => {
                let count = next.length as usize / 16;
                let mut chain = None;
                for i in 0..count {
                    let d = read(next.address + i as u64 * 16)?;
                    match d.kind() {
                        SglDescriptor::DATA_BLOCK => runs.push((d.address, u64::from(d.length))),
                        _ if kind == SglDescriptor::SEGMENT && i + 1 == count => chain = Some(d),
                        other => return Err(format!("descriptor type {other} inside a list")),
                    }
                }
                match chain {
                    Some(d) => next = d,
                    None if kind == SglDescriptor::LAST_SEGMENT => return Ok(runs),
                    None => return Err("a Segment list that does not chain".into()),
                }
            }
            other => return Err(format!("descriptor type {other}")),
        }
    }
    Err("a loop".into())
}

proptest::proptest! {
    /// Any list of device segments either gets an SGL that describes
    /// exactly its bytes, in order (contiguous runs merged), or a clear
    /// error; never descriptors outside the list pages.
    #[test]
    fn sgls_describe_exactly_the_segments_or_refuse(
        segments in proptest::collection::vec((0u64..1 << 40, 1usize..20_000), 1..700),
        pages in 0usize..4,
        dword in proptest::bool::ANY,
        short in 0usize..2,
        contiguous in proptest::bool::ANY,
    ) {
        use nvme_nostd::hal_traits::{DeviceAddr, DeviceSegment, SegmentSink};
        // Half the lists are runs of segments that follow one another in
        // device space (merged into one descriptor up to 4 GiB).
        let mut segments = segments;
        if contiguous {
            let mut at = segments[0].0;
            for s in segments.iter_mut() {
                s.0 = at;
                at += s.1 as u64;
            }
        }
        let total: usize = segments.iter().map(|s| s.1).sum();
        let len = total + short;
        let mut sink = Pages(vec![[0xdead_beef; 512]; pages]);
        let mut b = nvme_nostd::fuzzing::SglBuilder::new(&mut sink, len, dword);
        for &(addr, n) in &segments {
            b.push(DeviceSegment { addr: DeviceAddr(addr), len: n });
        }
        match b.finish() {
            Ok(dptr) => {
                proptest::prop_assert_eq!(short, 0, "a short list was accepted");
                let runs = walk([dptr.prp1, dptr.prp2], &sink).map_err(proptest::test_runner::TestCaseError::fail)?;
                // The runs, split back at the segments, are the segments.
                let mut bytes = Vec::new();
                for (a, n) in runs { bytes.push((a, n)); }
                let covered: u64 = bytes.iter().map(|r| r.1).sum();
                proptest::prop_assert_eq!(covered, total as u64);
                let mut at = 0usize;
                for (a, n) in bytes {
                    // Each run is a concatenation of consecutive segments
                    // contiguous in device space.
                    let mut left = n;
                    let mut expect = a;
                    while left > 0 {
                        let (sa, sn) = segments[at];
                        proptest::prop_assert_eq!(sa, expect);
                        left -= sn as u64;
                        expect += sn as u64;
                        at += 1;
                    }
                }
                proptest::prop_assert_eq!(at, segments.len());
            }
            Err(Error::NotPrpShaped(_)) => {}
            Err(other) => proptest::prop_assert!(false, "unexpected error {other:?}"),
        }
    }
}

/// Review findings: admin data is one run (a scatter list is refused
/// there too); lists do not nest; a run longer than a descriptor's 32-bit
/// length goes as several descriptors.
#[test]
fn review_findings() {
    big_stack(review_findings_body);
}

fn review_findings_body() {
    use nvme_nostd::hal_traits::{DeviceAddr, DeviceSegment, SegmentSink};
    use nvme_nostd::AdminRequests;
    let sim = sim(1);
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let mut pool: AdminRequests<'_, SimHal, ScatterList<Vec<u8>, 2>, u32, 2> =
        ctrlr.admin_requests().unwrap();
    let mut list = ScatterList::new();
    assert!(list.push(vec![0u8; 2048]).is_ok() && list.push(vec![0u8; 2048]).is_ok());
    let identify = nvme_nostd::spec::command::SubmissionEntry::new(0x06, 0);
    let data = Some((list, nvme_nostd::hal_traits::Direction::FromDevice));
    // SAFETY: refused before anything is sent (a scatter list).
    let e = unsafe { pool.submit_raw(identify, data, 0) }.unwrap_err();
    assert_eq!(e.error, Error::InvalidArgument(Argument::ScatterList));
    // Lists do not nest.
    let mut inner: ScatterList<Vec<u8>, 2> = ScatterList::new();
    assert!(inner.push(vec![0u8; 8]).is_ok() && inner.push(vec![0u8; 8]).is_ok());
    let mut outer: ScatterList<ScatterList<Vec<u8>, 2>, 2> = ScatterList::new();
    assert!(outer.push(inner).is_err(), "a two-piece list is not a piece");
    // 5 GiB in one device segment: two descriptors, exactly.
    let mut pages = Pages(vec![[0; 512]; 1]);
    let len = 5usize << 30;
    let mut b = nvme_nostd::fuzzing::SglBuilder::new(&mut pages, len + 4096, false);
    b.push(DeviceSegment { addr: DeviceAddr(0x1_0000_0000), len });
    b.push(DeviceSegment { addr: DeviceAddr(0x9_0000_0000), len: 4096 });
    let dptr = b.finish().unwrap();
    let runs = walk([dptr.prp1, dptr.prp2], &pages).unwrap();
    assert_eq!(runs.iter().map(|r| r.1).sum::<u64>(), len as u64 + 4096);
    assert!(runs.iter().all(|r| r.1 <= u64::from(u32::MAX)), "{runs:x?}");
    assert_eq!(runs.len(), 3);
}

/// A scatter list split where PRPs break (a controller without SGLs), under
/// what the split requests of single buffers meet: one part failing (the
/// request completes once, with that failure, every share undone), a reset
/// with parts in flight (once, `Reset`, pieces back), more parts than the
/// pair has slots (refused unsent), and heap pieces shared per part.
#[test]
fn a_split_scatter_list_completes_once() {
    big_stack(a_split_scatter_list_completes_once_body);
}

fn a_split_scatter_list_completes_once_body() {
    use nvme_nostd::spec::command::IoOpcode;
    use nvme_sim::{Fault, FaultRule};
    let sim = sim(0);
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: IoQueuePair<'_, SimHal, VecList, u32, 8> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    // Heap pieces of a block each: a part each, each part shared.
    let list = vec_pieces(4, 512, 7);
    let expected = vec_flat(&list);
    qp.write(&ns, 40, 4, list, 0).map_err(|e| e.error).unwrap();
    assert_eq!(sim.stats().live_shares, 4);
    finish_one(&sim, &mut qp).0.unwrap();
    assert_eq!(sim.stats().live_shares, 0);
    qp.read(&ns, 40, 4, vec_pieces(4, 512, 0), 1).map_err(|e| e.error).unwrap();
    let (r, back) = finish_one(&sim, &mut qp);
    r.unwrap();
    assert_eq!(vec_flat(&back.unwrap()), expected);
    // The third part's command fails: the request once, with its status.
    sim.inject(FaultRule {
        skip: 2,
        ..FaultRule::once(
            Some(qp.qid()),
            Some(IoOpcode::WRITE.0),
            Fault::Status { sct: 2, sc: 0x81, dnr: true },
        )
    });
    qp.write(&ns, 40, 4, vec_pieces(4, 512, 1), 2).map_err(|e| e.error).unwrap();
    let (r, back) = finish_one(&sim, &mut qp);
    assert!(matches!(r, Err(Error::Command(s)) if s.sct().0 == 2 && s.sc().0 == 0x81), "{r:?}");
    assert!(back.is_some(), "the pieces come back");
    assert_eq!(sim.stats().live_shares, 0);
    // A reset with parts in flight: once, Reset, the pieces back.
    sim.set_latency(Duration::from_millis(10));
    qp.read(&ns, 40, 4, vec_pieces(4, 512, 0), 3).map_err(|e| e.error).unwrap();
    ctrlr.reset().unwrap();
    let mut done = Vec::new();
    for _ in 0..100 {
        qp.poll(PollLimit::All, |_, c| done.push(c));
        sim.advance(Duration::from_micros(10));
    }
    assert_eq!(done.len(), 1);
    assert!(done[0].result() == Err(Error::Reset) && done[0].buffer.is_some());
    drop(done);
    sim.set_latency(Duration::ZERO);
    // Eight parts need eight command slots and the request's own: more
    // than the pair has, refused unsent with the pieces back.
    let fetched = sim.stats().commands_fetched;
    let e = qp.write(&ns, 40, 8, vec_pieces(8, 512, 0), 4).unwrap_err();
    assert!(matches!(e.error, Error::TransferTooLarge { .. }), "{:?}", e.error);
    assert_eq!(e.buffer.as_slice().len(), 8);
    assert_eq!(sim.stats().commands_fetched, fetched);
    assert_eq!(sim.stats().live_shares, 0);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// A piece `len` bytes long, `offset` into its own DMA memory, filled from
/// `seed`.
fn piece<'h>(hal: &'h SimHal, offset: usize, len: usize, seed: u8) -> DmaBuffer<'h, SimHal> {
    let mut b = DmaBuffer::new(hal, offset + len).unwrap();
    assert!(b.set_window(offset, len));
    b.iter_mut().enumerate().for_each(|(j, x)| *x = (j as u8).wrapping_mul(11) ^ seed);
    b
}

/// Parts of several pieces, without SGLs: a run that PRPs describe (a
/// piece ending on a page, whole pages, a piece ending inside one) is one
/// command, cut where PRPs break and after `MAX_SHARED_PIECES` pieces; each
/// command names its own LBA and blocks, and the data lands at the right
/// LBAs (read back as one plain buffer). An empty piece carries nothing.
/// Too few free slots: `QueueFull` unsent. A share failing in the second
/// part: nothing sent, nothing left shared.
#[test]
fn split_parts_of_several_pieces() {
    big_stack(split_parts_of_several_pieces_body);
}

fn split_parts_of_several_pieces_body() {
    let sim = sim(0);
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let hal = ctrlr.hal();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: Qp<'_, '_> = ctrlr.create_io_qpair(QpairOptions::default().with_entries(16)).unwrap();
    // 1024 bytes ending a page, two whole pages, 512 bytes from a page's
    // start (ending inside it: a break), an empty piece, 512 bytes inside
    // a page: 19 blocks in one command, then 1.
    let mut list = List::new();
    for p in
        [piece(hal, 3072, 1024, 1), piece(hal, 0, 4096, 2), piece(hal, 0, 4096, 3), piece(hal, 0, 512, 4)]
    {
        assert!(list.push(p).is_ok());
    }
    assert!(list.push(piece(hal, 0, 0, 0)).is_ok());
    assert!(list.push(piece(hal, 1024, 512, 5)).is_ok());
    let expected = flat(&list);
    assert_eq!(expected.len(), 20 * 512);
    let before = sim.recent_io_commands().len();
    qp.write(&ns, 100, 20, list, 0).map_err(|e| e.error).unwrap();
    assert_eq!(run(&sim, &mut qp).0, Ok(()));
    let mut sent: Vec<_> =
        sim.recent_io_commands()[before..].iter().map(|c| (c.cdw10, c.cdw12 & 0xffff)).collect();
    sent.sort_unstable();
    assert_eq!(sent, vec![(100, 18), (119, 0)], "(LBA, NLB) of each part, in any order");
    let mut plain: IoQueuePair<'_, SimHal, Vec<u8>, u32, 16> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(4)).unwrap();
    plain.read(&ns, 100, 20, vec![0u8; 20 * 512], 0).map_err(|e| e.error).unwrap();
    let back = common::poll_for(&sim, &mut plain, Duration::from_millis(10)).pop().unwrap();
    assert_eq!(back.buffer.unwrap(), expected, "every byte at its LBA");
    drop(plain);
    // A first piece 512 bytes into its page, then 10 whole pages, then a
    // piece inside a page: cut after 8 pieces as well (8 + 3 + 1 pieces).
    let mut list = List::new();
    assert!(list.push(piece(hal, 512, 3584, 6)).is_ok());
    for k in 0..10 {
        assert!(list.push(piece(hal, 0, 4096, 7 + k)).is_ok());
    }
    assert!(list.push(piece(hal, 2048, 512, 20)).is_ok());
    let blocks = (3584 + 10 * 4096 + 512) / 512;
    let before = sim.recent_io_commands().len();
    qp.write(&ns, 200, blocks, list, 1).map_err(|e| e.error).unwrap();
    assert_eq!(run(&sim, &mut qp).0, Ok(()));
    let mut sent: Vec<_> =
        sim.recent_io_commands()[before..].iter().map(|c| (c.cdw10, c.cdw12 & 0xffff)).collect();
    sent.sort_unstable();
    let first = (3584 + 7 * 4096) / 512;
    assert_eq!(sent, vec![(200, first - 1), (200 + first, 3 * 8 - 1), (200 + first + 24, 0)]);
    // Slots: five requests in flight (of 8 slots) leave too few for a list
    // of 4 parts and its request.
    sim.set_latency(Duration::from_millis(10));
    for i in 0..5u32 {
        qp.read(&ns, u64::from(i), 1, pieces(hal, 1, 0, 512, 0), 10 + i).map_err(|e| e.error).unwrap();
    }
    let fetched = sim.stats().commands_fetched;
    let e = qp.write(&ns, 0, 4, pieces(hal, 4, 1024, 512, 0), 30).unwrap_err();
    assert_eq!(e.error, Error::QueueFull);
    assert_eq!(qp.in_flight(), 5, "nothing of it went out");
    drop(e);
    sim.set_latency(Duration::ZERO);
    for _ in 0..100 {
        qp.poll(PollLimit::All, |_, _| {});
        sim.advance(Duration::from_micros(100));
    }
    assert_eq!(qp.in_flight(), 0);
    assert!(sim.stats().commands_fetched >= fetched);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);

    // A share failing in the second part (heap pieces, a part each).
    let sim = crate::sim(0);
    let ctrlr = Controller::new(hal_traits::faulty::FaultyHal::new(sim.hal()), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp: IoQueuePair<'_, _, VecList, u32, 8> =
        ctrlr.create_io_qpair(QpairOptions::default().with_entries(8)).unwrap();
    let fetched = sim.stats().commands_fetched;
    ctrlr.hal().fail_shares(1, 1);
    let e = qp.write(&ns, 0, 3, vec_pieces(3, 512, 0), 0).unwrap_err();
    assert!(matches!(e.error, Error::Hal(_)), "{:?}", e.error);
    assert_eq!((sim.stats().live_shares, sim.stats().commands_fetched), (0, fetched));
    assert_eq!(qp.in_flight(), 0);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}
