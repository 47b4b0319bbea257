//! Metadata and end-to-end protection information (NVM Command Set 1.0
//! section 5.2) against the simulator; QEMU's controller runs the same in
//! the conformance suite on namespaces formatted with `ms`, `mset`, `pi`
//! and `pil`. Metadata goes interleaved on an extended-LBA namespace and
//! through MPTR (after the data, in the same buffer) on one with separate
//! metadata; the controller checks guards and tags as PRCHK asks, and a
//! failed check is the error of the request's owner.

mod common;

use common::{poll_for, qpair, Qp};
use core::time::Duration;
use nvme_nostd::spec::pi::{crc16_t10dif, PiTuple};
use nvme_nostd::spec::status::{command_specific, media, StatusCodeType};
use nvme_nostd::{fill_protection_information, Argument, Controller, Error, IoFlags, Namespace, Protection};
use nvme_sim::{Sim, SimConfig, SimMetadata, SimNamespace};

/// One namespace (NSID 1, 512-byte blocks) with metadata `md`; shares are
/// one contiguous run unless `scatter`.
fn setup(md: SimMetadata, scatter: bool) -> (Sim, Controller<nvme_sim::SimHal>, Namespace) {
    let sim = Sim::new(SimConfig {
        namespaces: vec![SimNamespace { nsid: 1, block_size: 512, blocks: 4096 }],
        metadata: vec![SimMetadata { nsid: 1, ..md }],
        scatter_shares: scatter,
        ..SimConfig::default()
    });
    let ctrlr = Controller::new(sim.hal(), common::options()).expect("attach");
    let ns = ctrlr.namespace(1).expect("namespace 1");
    (sim, ctrlr, ns)
}

fn done(sim: &Sim, qp: &mut Qp<'_>) -> (Result<(), Error>, Vec<u8>) {
    let d = poll_for(sim, qp, Duration::from_millis(10));
    assert_eq!(d.len(), 1);
    let d = d.into_iter().next().unwrap();
    (d.result(), d.buffer.unwrap_or_default())
}

fn media_error(result: Result<(), Error>) -> Option<u8> {
    match result {
        Err(Error::Command(s)) if s.sct() == StatusCodeType::MEDIA_DATA_INTEGRITY => Some(s.sc().0),
        _ => None,
    }
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn separate_metadata_goes_after_the_data_through_mptr() {
    let (sim, ctrlr, ns) = setup(SimMetadata { ms: 16, ..Default::default() }, false);
    let mut qp = qpair(&ctrlr);
    assert_eq!((ns.metadata_size(), ns.extended_lba(), ns.pi_type()), (16, false, 0));
    assert_eq!(ns.buffer_bytes(4, false), 4 * 512 + 4 * 16);
    let buffer = bytes(ns.buffer_bytes(4, false), 1);
    qp.write(&ns, 10, 4, buffer.clone(), 0).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp).0, Ok(()));
    assert_eq!(sim.read_blocks(1, 10, 4), buffer[..2048]);
    assert_eq!(sim.read_metadata(1, 10, 4), buffer[2048..], "the metadata, from after the data");
    let cmd = *sim.recent_io_commands().last().unwrap();
    assert_ne!(cmd.mptr, 0, "MPTR names the metadata");
    qp.read(&ns, 10, 4, vec![0; buffer.len()], 1).map_err(|e| e.error).unwrap();
    let (result, back) = done(&sim, &mut qp);
    assert_eq!((result, back), (Ok(()), buffer));
    // A buffer for the data alone, or protection asked of a namespace
    // without it: refused unsent.
    let fetched = sim.stats().commands_fetched;
    let short = qp.read(&ns, 10, 4, vec![0; 2048], 2).unwrap_err();
    assert_eq!(
        (short.error, short.buffer.len()),
        (Error::BufferTooSmall { needed: 2112, actual: 2048 }, 2048)
    );
    let pi = qp.read_pi(&ns, 10, 4, IoFlags::default(), Protection::check_all(), vec![0; 2112], 3);
    assert_eq!(pi.map_err(|e| e.error).unwrap_err(), Error::InvalidArgument(Argument::ProtectionInformation));
    let pract = qp.write_pi(&ns, 10, 4, IoFlags::default(), Protection::pract(), vec![0; 2112], 4);
    assert_eq!(
        pract.map_err(|e| e.error).unwrap_err(),
        Error::InvalidArgument(Argument::ProtectionInformation)
    );
    assert_eq!(sim.stats().commands_fetched, fetched);
}

#[test]
fn extended_lbas_interleave_the_metadata() {
    let (sim, ctrlr, ns) = setup(SimMetadata { ms: 8, extended: true, ..Default::default() }, true);
    let mut qp = qpair(&ctrlr);
    assert_eq!(ns.buffer_bytes(3, false), 3 * 520);
    let buffer = bytes(3 * 520, 7);
    qp.write(&ns, 0, 3, buffer.clone(), 0).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp).0, Ok(()));
    let (data, meta) = (sim.read_blocks(1, 0, 3), sim.read_metadata(1, 0, 3));
    for i in 0..3 {
        assert_eq!(data[i * 512..(i + 1) * 512], buffer[i * 520..i * 520 + 512], "block {i}");
        assert_eq!(meta[i * 8..(i + 1) * 8], buffer[i * 520 + 512..(i + 1) * 520], "metadata {i}");
    }
    assert_eq!(sim.recent_io_commands().last().unwrap().mptr, 0, "no MPTR");
    qp.read(&ns, 0, 3, vec![0; 3 * 520], 1).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp), (Ok(()), buffer));
}

/// Type 1, separate metadata: a host-computed guard passes every check; a
/// corrupted one fails the write's check, or, written unchecked, the read's;
/// the application and reference tags likewise.
#[test]
fn type1_guard_and_tags_are_checked() {
    let (sim, ctrlr, ns) = setup(SimMetadata { ms: 8, pi: 1, ..Default::default() }, false);
    let mut qp = qpair(&ctrlr);
    let (lba, n) = (100u64, 4u32);
    let mut buffer = bytes(ns.buffer_bytes(n, false), 3);
    fill_protection_information(&ns, n, &mut buffer, 0x0abc, lba).unwrap();
    // The tuple of block 2 as the specification lays it out.
    let tuple = PiTuple::from_bytes(buffer[2048 + 16..2048 + 24].try_into().unwrap());
    assert_eq!(tuple, PiTuple { guard: crc16_t10dif(0, &buffer[1024..1536]), app_tag: 0x0abc, ref_tag: 102 });
    let check = Protection::check_all().with_app_tag(0x0abc, 0xffff);
    let flags = IoFlags::default();
    qp.write_pi(&ns, lba, n, flags, check, buffer.clone(), 0).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp).0, Ok(()));
    qp.read_pi(&ns, lba, n, flags, check, vec![0; buffer.len()], 1).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp), (Ok(()), buffer.clone()));

    // A wrong guard: the write's check refuses it, nothing stored.
    let mut bad = buffer.clone();
    bad[2048 + 8] ^= 0x01; // block 1's guard
    qp.write_pi(&ns, lba, n, flags, check, bad.clone(), 2).map_err(|e| e.error).unwrap();
    assert_eq!(media_error(done(&sim, &mut qp).0), Some(media::END_TO_END_GUARD_CHECK_ERROR.0));
    assert_eq!(sim.read_metadata(1, lba, 4), buffer[2048..], "a failed check stores nothing");
    // Written without checks, the read's guard check finds it; a read
    // without checks still works.
    qp.write_pi(&ns, lba, n, flags, Protection::none(), bad, 3).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp).0, Ok(()));
    let guard_only = Protection { check_guard: true, ..Protection::none() };
    qp.read_pi(&ns, lba, n, flags, guard_only, vec![0; buffer.len()], 4).map_err(|e| e.error).unwrap();
    assert_eq!(media_error(done(&sim, &mut qp).0), Some(media::END_TO_END_GUARD_CHECK_ERROR.0));
    qp.read(&ns, lba, n, vec![0; buffer.len()], 5).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp).0, Ok(()));
    // Restore, then the application tag: checked under its mask.
    qp.write_pi(&ns, lba, n, flags, check, buffer.clone(), 6).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp).0, Ok(()));
    let app = Protection { check_app_tag: true, ..Protection::none() };
    qp.read_pi(&ns, lba, n, flags, app.with_app_tag(0x0abd, 0xffff), vec![0; buffer.len()], 7)
        .map_err(|e| e.error)
        .unwrap();
    assert_eq!(media_error(done(&sim, &mut qp).0), Some(media::END_TO_END_APPLICATION_TAG_CHECK_ERROR.0));
    qp.read_pi(&ns, lba, n, flags, app.with_app_tag(0x0abd, 0xfff0), vec![0; buffer.len()], 8)
        .map_err(|e| e.error)
        .unwrap();
    assert_eq!(done(&sim, &mut qp).0, Ok(()), "the differing bit is masked off");
    // Type 1's reference tag is the LBA: asking another is the command's
    // error (Invalid Protection Information).
    let reference = Protection { check_ref_tag: true, ..Protection::none() };
    qp.read_pi(&ns, lba, n, flags, reference.with_reference_tag(7), vec![0; buffer.len()], 9)
        .map_err(|e| e.error)
        .unwrap();
    match done(&sim, &mut qp).0 {
        Err(Error::Command(s)) => assert_eq!(
            (s.sct(), s.sc()),
            (StatusCodeType::COMMAND_SPECIFIC, command_specific::INVALID_PROTECTION_INFORMATION)
        ),
        other => panic!("{other:?}"),
    }
    // The encoding: PRINFO in CDW12 bits 29:26, EILBRT in CDW14, LBATM and
    // LBAT in CDW15.
    qp.read_pi(&ns, lba, n, flags, check, vec![0; buffer.len()], 10).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp).0, Ok(()));
    let cmd = *sim.recent_io_commands().last().unwrap();
    assert_eq!((cmd.cdw12 >> 26 & 0xf, cmd.cdw14, cmd.cdw15), (0b0111, 100, 0xffff_0abc));
}

/// PRACT: on a write the controller inserts the protection information
/// (the buffer holds data alone where the metadata is just that), on a read
/// it strips it; what it inserted is what the host computes.
#[test]
fn pract_inserts_and_strips() {
    let (sim, ctrlr, ns) = setup(SimMetadata { ms: 8, pi: 2, ..Default::default() }, false);
    let mut qp = qpair(&ctrlr);
    let (lba, n, flags) = (40u64, 3u32, IoFlags::default());
    assert_eq!(ns.buffer_bytes(n, true), 3 * 512, "no metadata moves");
    let data = bytes(3 * 512, 9);
    let insert = Protection::pract().with_app_tag(0x1111, 0).with_reference_tag(0x5000);
    qp.write_pi(&ns, lba, n, flags, insert, data.clone(), 0).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp).0, Ok(()));
    let mut expected = data.clone();
    expected.resize(ns.buffer_bytes(n, false), 0);
    fill_protection_information(&ns, n, &mut expected, 0x1111, 0x5000).unwrap();
    assert_eq!(sim.read_metadata(1, lba, 3), expected[1536..], "the controller's tuples are the host's");
    // Type 2: the reference tag runs from the command's initial tag.
    let check = Protection::check_all().with_app_tag(0x1111, 0xffff).with_reference_tag(0x5000);
    qp.read_pi(&ns, lba, n, flags, check, vec![0; expected.len()], 1).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp), (Ok(()), expected));
    let wrong = check.with_reference_tag(0x5001);
    qp.read_pi(&ns, lba, n, flags, wrong, vec![0; 1536 + 24], 2).map_err(|e| e.error).unwrap();
    assert_eq!(media_error(done(&sim, &mut qp).0), Some(media::END_TO_END_REFERENCE_TAG_CHECK_ERROR.0));
    let strip = Protection { pract: true, ..check };
    qp.read_pi(&ns, lba, n, flags, strip, vec![0; 1536], 3).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp), (Ok(()), data));
}

/// The tuple in the last 8 of 16 metadata bytes of an extended LBA: the
/// guard covers the data and the 8 metadata bytes before it; in the first
/// 8, only the data. Host and controller agree on both, and on type 3.
#[test]
fn tuple_position_and_type3() {
    for (pi, pi_first) in [(1, false), (1, true), (3, false)] {
        let md = SimMetadata { ms: 16, extended: true, pi, pi_first, ..Default::default() };
        let (sim, ctrlr, ns) = setup(md, true);
        let mut qp = qpair(&ctrlr);
        let (lba, n, flags) = (8u64, 2u32, IoFlags::default());
        let mut buffer = bytes(ns.buffer_bytes(n, false), 5);
        fill_protection_information(&ns, n, &mut buffer, 0x2222, lba).unwrap();
        let (at, covered) = if pi_first { (512, 0) } else { (520, 8) };
        let tuple = PiTuple::from_bytes(buffer[at..at + 8].try_into().unwrap());
        let guard = crc16_t10dif(crc16_t10dif(0, &buffer[..512]), &buffer[512..512 + covered]);
        assert_eq!(tuple.guard, guard, "pi {pi} first {pi_first}");
        let check = Protection::check_all().with_app_tag(0x2222, 0xffff);
        qp.write_pi(&ns, lba, n, flags, check, buffer.clone(), 0).map_err(|e| e.error).unwrap();
        assert_eq!(done(&sim, &mut qp).0, Ok(()), "pi {pi} first {pi_first}");
        qp.read_pi(&ns, lba, n, flags, check, vec![0; buffer.len()], 1).map_err(|e| e.error).unwrap();
        assert_eq!(done(&sim, &mut qp), (Ok(()), buffer.clone()));
        // Corrupt a metadata byte the guard covers only with the tuple last.
        let mut touched = buffer.clone();
        touched[if pi_first { 512 + 8 } else { 512 }] ^= 0x80;
        qp.write_pi(&ns, lba, n, flags, check, touched, 2).map_err(|e| e.error).unwrap();
        let expected = if pi_first { None } else { Some(media::END_TO_END_GUARD_CHECK_ERROR.0) };
        assert_eq!(media_error(done(&sim, &mut qp).0), expected, "pi {pi} first {pi_first}");
    }
}

/// Separate metadata the HAL hands over in pieces cannot be named by MPTR:
/// refused unsent, the buffer back, nothing left shared.
#[test]
fn metadata_in_pieces_is_refused() {
    let (sim, ctrlr, ns) = setup(SimMetadata { ms: 64, ..Default::default() }, true);
    let mut qp = qpair(&ctrlr);
    // 128 blocks: 8 KiB of metadata, at least two pages, scattered.
    let fetched = sim.stats().commands_fetched;
    let refused = qp.write(&ns, 0, 128, vec![0; ns.buffer_bytes(128, false)], 0).unwrap_err();
    assert_eq!(refused.error, Error::InvalidArgument(Argument::MetadataNotContiguous));
    assert_eq!(refused.buffer.len(), 128 * 576);
    assert_eq!(sim.stats().commands_fetched, fetched);
    drop(qp);
    drop(ctrlr);
    common::assert_clean(&sim);
}

/// The same metadata in pieces on a controller that takes an SGL for
/// metadata (SGLS bit 19; byte and dword granularity alike): PSDT 10b, the
/// data by an SGL, MPTR naming the one descriptor (a Last Segment over the
/// metadata's Data Blocks, in the slot's last list page); written and read
/// back with protection information checked, every byte in place. Without
/// bit 19, still refused unsent.
#[test]
fn metadata_in_pieces_goes_by_an_sgl_where_offered() {
    for sgls in [1u32 | 1 << 19, 2 | 1 << 19] {
        let sim = Sim::new(SimConfig {
            namespaces: vec![SimNamespace { nsid: 1, block_size: 512, blocks: 4096 }],
            metadata: vec![SimMetadata { nsid: 1, ms: 64, pi: 1, ..Default::default() }],
            scatter_shares: true,
            sgls,
            ..SimConfig::default()
        });
        let ctrlr = Controller::new(sim.hal(), common::options()).expect("attach");
        let ns = ctrlr.namespace(1).expect("namespace 1");
        let mut qp = qpair(&ctrlr);
        // 128 blocks from LBA 16 (64 KiB, the pair's transfer limit): 8 KiB
        // of metadata, so at least two pages, which the simulator's HAL
        // shares page by page wherever the allocator put the buffer.
        let len = ns.buffer_bytes(128, false);
        let mut w = bytes(len, 0x21);
        fill_protection_information(&ns, 128, &mut w, 0x4242, 16).unwrap();
        let check = Protection::check_all().with_app_tag(0x4242, 0xffff);
        let by_sgls = |sim: &Sim| {
            let c = *sim.recent_io_commands().last().unwrap();
            assert_eq!(c.cdw0.psdt(), 2, "SGLs for data and metadata");
            assert_eq!(c.mptr % 4096, 255 * 16, "MPTR names the last descriptor slot of a list page");
        };
        qp.write_pi(&ns, 16, 128, IoFlags::default(), check, w.clone(), 0).map_err(|e| e.error).unwrap();
        let (result, _) = done(&sim, &mut qp);
        result.unwrap();
        by_sgls(&sim);
        assert_eq!(sim.read_metadata(1, 16, 128), w[128 * 512..], "the metadata, every byte in place");
        qp.read_pi(&ns, 16, 128, IoFlags::default(), check, vec![0; len], 0).map_err(|e| e.error).unwrap();
        let (result, back) = done(&sim, &mut qp);
        result.unwrap();
        by_sgls(&sim);
        assert_eq!(back, w, "read back through the SGLs");
        drop(qp);
        drop(ctrlr);
        common::assert_clean(&sim);
    }
    // SGLs, but not for metadata: refused unsent, as without SGLs.
    let sim = Sim::new(SimConfig {
        namespaces: vec![SimNamespace { nsid: 1, block_size: 512, blocks: 4096 }],
        metadata: vec![SimMetadata { nsid: 1, ms: 64, ..Default::default() }],
        scatter_shares: true,
        sgls: 1,
        ..SimConfig::default()
    });
    let ctrlr = Controller::new(sim.hal(), common::options()).expect("attach");
    let ns = ctrlr.namespace(1).expect("namespace 1");
    let mut qp = qpair(&ctrlr);
    let fetched = sim.stats().commands_fetched;
    let refused = qp.write(&ns, 0, 128, vec![0; ns.buffer_bytes(128, false)], 0).unwrap_err();
    assert_eq!(refused.error, Error::InvalidArgument(Argument::MetadataNotContiguous));
    assert_eq!(sim.stats().commands_fetched, fetched);
    drop(qp);
    drop(ctrlr);
    common::assert_clean(&sim);
}

/// Write Zeroes with PRACT writes each zero block's protection information
/// (the checked read that follows passes); Verify checks what PRCHK asks
/// (a corrupted guard fails it) without moving data. Write Zeroes with a
/// check, or Verify with PRACT, is refused unsent.
#[test]
fn write_zeroes_and_verify_with_protection_information() {
    let (sim, ctrlr, ns) = setup(SimMetadata { ms: 8, pi: 1, ..Default::default() }, false);
    let mut qp = qpair(&ctrlr);
    let flags = IoFlags::default();
    let tags = Protection::pract().with_app_tag(0x4242, 0);
    qp.write_zeroes_pi(&ns, 300, 4, false, flags, tags, 0).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp).0, Ok(()));
    let check = Protection::check_all().with_app_tag(0x4242, 0xffff);
    qp.read_pi(&ns, 300, 4, flags, check, vec![0xa5; ns.buffer_bytes(4, false)], 1)
        .map_err(|e| e.error)
        .unwrap();
    let (result, back) = done(&sim, &mut qp);
    assert_eq!(result, Ok(()));
    assert!(back[..2048].iter().all(|&b| b == 0), "the data is zeros");
    qp.verify_pi(&ns, 300, 4, flags, check, 2).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp).0, Ok(()));
    // A guard corrupted behind the driver's back: Verify's check finds it.
    let mut meta = sim.read_metadata(1, 302, 1);
    meta[0] ^= 1;
    sim.write_metadata(1, 302, &meta);
    qp.verify_pi(&ns, 300, 4, flags, check, 3).map_err(|e| e.error).unwrap();
    assert_eq!(media_error(done(&sim, &mut qp).0), Some(media::END_TO_END_GUARD_CHECK_ERROR.0));
    let cmd = *sim.recent_io_commands().last().unwrap();
    assert_eq!((cmd.cdw12 >> 26 & 0xf, cmd.cdw14, cmd.cdw15), (0b0111, 300, 0xffff_4242), "PRINFO and tags");
    // Refused unsent.
    let fetched = sim.stats().commands_fetched;
    let bad = Error::InvalidArgument(Argument::ProtectionInformation);
    assert_eq!(
        qp.write_zeroes_pi(&ns, 300, 4, false, flags, check, 4).map_err(|e| e.error).unwrap_err(),
        bad
    );
    assert_eq!(
        qp.verify_pi(&ns, 300, 4, flags, Protection::pract(), 5).map_err(|e| e.error).unwrap_err(),
        bad
    );
    assert_eq!(sim.stats().commands_fetched, fetched);
}

/// Copy with protection information, byte by byte (NVM Command Set 1.0
/// figures 15 to 18): PRINFOR in CDW12 bits 15:12, PRINFOW in 29:26,
/// ILBRT in CDW14, LBATM and LBAT in CDW15; each source range's EILBRT
/// (its reference tag, by default its SLBA), ELBAT and ELBATM at bytes 24
/// to 31 of its descriptor. (The checks themselves run in the conformance
/// suite, here and on QEMU.) Refused unsent: PRACT on one side only, a read
/// reference tag, PI asked on a namespace without it, any copy with the
/// 64-bit guard.
#[test]
fn copy_with_protection_information_byte_by_byte() {
    use nvme_nostd::CopyRange;
    let (sim, ctrlr, ns) = setup(SimMetadata { ms: 8, pi: 1, ..Default::default() }, false);
    let mut qp = qpair(&ctrlr);
    let read = Protection { pract: true, ..Protection::check_all() }.with_app_tag(0x1234, 0xff00);
    let write = Protection::pract().with_app_tag(0x5678, 0x00ff);
    let ranges = [CopyRange::new(16, 4), CopyRange::new(40, 2).with_reference_tag(7)];
    qp.copy_pi(&ns, 100, &ranges, read, write, IoFlags::FUA, vec![0; 512], 0).map_err(|e| e.error).unwrap();
    let (result, list) = done(&sim, &mut qp);
    // Type 1 wants each range's expected reference tag to be its LBA: the
    // second range's 7 is Invalid Protection Information.
    match result {
        Err(Error::Command(s)) => assert_eq!((s.sct().0, s.sc().0), (1, 0x81), "{s:?}"),
        other => panic!("{other:?}"),
    }
    let c = *sim.recent_io_commands().last().unwrap();
    assert_eq!(c.cdw0.opc(), 0x19);
    assert_eq!(
        c.cdw12,
        1 | 0xf << 12 | 0x8 << 26 | 1 << 30,
        "NR, PRINFOR (PRACT, checks), PRINFOW (PRACT), FUA"
    );
    assert_eq!((c.cdw14, c.cdw15), (100, 0x00ff_5678), "ILBRT the destination; LBATM, LBAT");
    let at = |i: usize, from: usize, n: usize| &list[i * 32 + from..i * 32 + from + n];
    assert_eq!(at(0, 8, 8), &16u64.to_le_bytes()[..]);
    assert_eq!(at(0, 24, 8), &[16, 0, 0, 0, 0x34, 0x12, 0x00, 0xff][..], "EILBRT = SLBA, ELBAT, ELBATM");
    assert_eq!(at(1, 24, 8), &[7, 0, 0, 0, 0x34, 0x12, 0x00, 0xff][..], "the range's own reference tag");
    assert_eq!((at(0, 0, 8), at(0, 18, 6)), (&[0u8; 8][..], &[0u8; 6][..]), "reserved bytes zero");
    assert_eq!(at(1, 16, 2), &[1, 0][..], "NLB, 0-based");
    // A reference tag in the read's settings: refused (they are per range).
    let fetched = sim.stats().commands_fetched;
    let e =
        qp.copy_pi(&ns, 100, &ranges, read.with_reference_tag(5), write, IoFlags::default(), vec![0; 512], 0);
    assert_eq!(e.unwrap_err().error, Error::InvalidArgument(Argument::CopyReferenceTag));
    assert_eq!(sim.stats().commands_fetched, fetched);
    // Without PI asked, the tags stay zero, as a plain copy's.
    qp.copy(&ns, 100, &ranges, IoFlags::default(), vec![0xff; 512], 0).map_err(|e| e.error).unwrap();
    let (result, list) = done(&sim, &mut qp);
    result.unwrap();
    assert_eq!(&list[24..32], &[0; 8]);
    assert_eq!(sim.recent_io_commands().last().unwrap().cdw12, 1);
    // Unsent: PRACT on one side only.
    let fetched = sim.stats().commands_fetched;
    let e =
        qp.copy_pi(&ns, 100, &ranges, Protection::check_all(), write, IoFlags::default(), vec![0; 512], 0);
    assert_eq!(e.unwrap_err().error, Error::InvalidArgument(Argument::CopyPract));
    assert_eq!(sim.stats().commands_fetched, fetched);
    // Unsent: PI on a namespace without it.
    let (sim2, ctrlr2, plain) = setup(SimMetadata { ms: 8, ..Default::default() }, false);
    let mut qp2 = qpair(&ctrlr2);
    let fetched = sim2.stats().commands_fetched;
    let e = qp2.copy_pi(
        &plain,
        100,
        &ranges,
        Protection::check_all(),
        Protection::none(),
        IoFlags::default(),
        vec![0; 512],
        0,
    );
    assert_eq!(e.unwrap_err().error, Error::InvalidArgument(Argument::ProtectionInformation));
    assert_eq!(sim2.stats().commands_fetched, fetched);
    // Unsent: the 64-bit guard (descriptor format 1h).
    let (sim3, ctrlr3, wide) = setup(SimMetadata { ms: 16, pi: 1, pif: 2, ..Default::default() }, false);
    let mut qp3 = qpair(&ctrlr3);
    let fetched = sim3.stats().commands_fetched;
    let e = qp3.copy_pi(&wide, 100, &ranges, read, write, IoFlags::default(), vec![0; 512], 0);
    assert_eq!(e.unwrap_err().error, Error::Unsupported(nvme_nostd::Feature::CopyFormat1));
    // A plain copy there too: its ranges would need format 1h as well.
    let e = qp3.copy(&wide, 100, &ranges, IoFlags::default(), vec![0; 512], 0);
    assert_eq!(e.unwrap_err().error, Error::Unsupported(nvme_nostd::Feature::CopyFormat1));
    assert_eq!(sim3.stats().commands_fetched, fetched);
}
