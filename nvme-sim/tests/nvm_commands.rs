//! The NVM commands beyond read, write and flush: Compare, Write Zeroes,
//! Verify, Write Uncorrectable, Dataset Management and Copy (NVM command
//! set sections 6.2, 6.16, 6.15, 6.17, 6.7; NVM Command Set 1.0 section
//! 3.2.2), and the I/O flags. QEMU's controller runs those its ONCS offers
//! in the conformance suite; here, the simulator adds what QEMU cannot be
//! made to do: a controller that advertises none of them (the calls are
//! refused unsent), Verify and Write Uncorrectable (QEMU 7.2 offers
//! neither), and the bad input each must refuse.

mod common;

use common::{assert_clean, pattern, poll_for, qpair, setup};
use core::time::Duration;
use nvme_nostd::spec::status::{media, StatusCodeType};
use nvme_nostd::{Controller, Error, Feature};
use nvme_sim::{IdentifyLies, Sim, SimConfig};

fn done(sim: &Sim, qp: &mut common::Qp<'_>) -> Result<(), Error> {
    let d = poll_for(sim, qp, Duration::from_millis(10));
    assert_eq!(d.len(), 1);
    d[0].result()
}

#[test]
fn compare_write_zeroes_and_verify() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    let data = pattern(5, 512, 9);
    sim.write_blocks(1, 5, &data);
    // The same bytes compare equal; one flipped bit is a Compare Failure.
    qp.compare(&ns, 5, 1, data.clone(), 0).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp), Ok(()));
    let mut wrong = data.clone();
    wrong[100] ^= 1;
    qp.compare(&ns, 5, 1, wrong, 1).map_err(|e| e.error).unwrap();
    match done(&sim, &mut qp) {
        Err(Error::Command(s)) => {
            assert_eq!((s.sct(), s.sc()), (StatusCodeType::MEDIA_DATA_INTEGRITY, media::COMPARE_FAILURE))
        }
        other => panic!("a mismatch: {other:?}"),
    }
    // Write Zeroes, with and without deallocation: the blocks read zero.
    sim.write_blocks(1, 10, &[0xee; 4 * 512]);
    qp.write_zeroes(&ns, 10, 2, false, 2).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp), Ok(()));
    qp.write_zeroes(&ns, 12, 2, true, 3).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp), Ok(()));
    assert!(sim.read_blocks(1, 10, 4).iter().all(|&b| b == 0));
    // Verify moves nothing.
    qp.verify(&ns, 0, 64, 4).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp), Ok(()));
    // Bad input: nothing sent.
    let fetched = sim.stats().commands_fetched;
    assert_eq!(qp.verify(&ns, ns.blocks() - 1, 2, 5).map_err(|e| e.error).unwrap_err(), Error::LbaOutOfRange);
    let zero = qp.write_zeroes(&ns, 0, 0, false, 6).map_err(|e| e.error).unwrap_err();
    assert!(matches!(zero, Error::InvalidArgument(_)), "{zero:?}");
    let short = qp.compare(&ns, 0, 2, vec![0; 512], 7).map_err(|e| e.error).unwrap_err();
    assert!(matches!(short, Error::BufferTooSmall { .. }), "a buffer of one block for two: {short:?}");
    assert_eq!(sim.stats().commands_fetched, fetched);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// A controller whose ONCS advertises none of them: refused unsent.
#[test]
fn commands_not_advertised_are_refused_unsent() {
    let sim = Sim::new(SimConfig {
        lies: IdentifyLies { oncs: Some(0x0010), ..IdentifyLies::default() },
        ..SimConfig::default()
    });
    let ctrlr = Controller::new(sim.hal(), common::options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp = qpair(&ctrlr);
    let fetched = sim.stats().commands_fetched;
    let unsupported = Error::Unsupported(Feature::NvmCommand);
    let refused = qp.compare(&ns, 0, 1, vec![0; 512], 0).unwrap_err();
    assert_eq!((refused.error, refused.buffer.len()), (unsupported, 512), "the buffer comes back");
    assert_eq!(qp.write_zeroes(&ns, 0, 1, false, 1).map_err(|e| e.error).unwrap_err(), unsupported);
    assert_eq!(qp.verify(&ns, 0, 1, 2).map_err(|e| e.error).unwrap_err(), unsupported);
    assert_eq!(qp.write_uncorrectable(&ns, 0, 1, 4).map_err(|e| e.error).unwrap_err(), unsupported);
    let dsm = nvme_nostd::spec::command::DsmRange::new(0, 1);
    let ad = nvme_nostd::spec::dwords::DsmAttributes::new().with_ad(true);
    let refused = qp.dataset_management(&ns, &[dsm], ad, vec![0; 512], 3).map_err(|e| e.error);
    assert_eq!(refused.unwrap_err(), unsupported);
    assert_eq!(sim.stats().commands_fetched, fetched);
}

/// FUA and Limited Retry reach the controller on every command that takes
/// them (read, write, compare, write zeroes, verify; copy in its own test),
/// and plain calls set neither.
#[test]
fn io_flags_reach_the_controller() {
    use nvme_nostd::IoFlags;
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    qp.write(&ns, 0, 1, pattern(0, 512, 1), 0).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp), Ok(()));
    assert_eq!((sim.stats().fua_commands, sim.stats().limited_retry_commands), (0, 0));
    qp.write_with(&ns, 1, 1, IoFlags::FUA, pattern(1, 512, 1), 1).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp), Ok(()));
    let both = IoFlags { fua: true, limited_retry: true };
    qp.read_with(&ns, 1, 1, both, vec![0; 512], 2).map_err(|e| e.error).unwrap();
    let d = poll_for(&sim, &mut qp, Duration::from_millis(10));
    assert_eq!(d[0].buffer.as_deref(), Some(&pattern(1, 512, 1)[..]));
    assert_eq!((sim.stats().fua_commands, sim.stats().limited_retry_commands), (2, 1));
    // And on the other commands that take them; their plain forms set
    // neither.
    let lr = IoFlags { fua: false, limited_retry: true };
    qp.compare_with(&ns, 1, 1, both, pattern(1, 512, 1), 3).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp), Ok(()));
    qp.write_zeroes_with(&ns, 2, 1, true, IoFlags::FUA, 4).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp), Ok(()));
    qp.verify_with(&ns, 2, 1, lr, 5).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp), Ok(()));
    assert_eq!((sim.stats().fua_commands, sim.stats().limited_retry_commands), (4, 3));
    qp.compare(&ns, 1, 1, pattern(1, 512, 1), 6).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp), Ok(()));
    qp.write_zeroes(&ns, 2, 1, false, 7).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp), Ok(()));
    qp.verify(&ns, 2, 1, 8).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp), Ok(()));
    assert_eq!((sim.stats().fua_commands, sim.stats().limited_retry_commands), (4, 3));
}

/// Dataset Management: deallocated ranges read zeros afterwards (the
/// simulator's DLFEAT), the list goes in the caller's buffer, and bad lists
/// are refused unsent.
#[test]
fn dataset_management_deallocates_ranges() {
    use nvme_nostd::spec::command::DsmRange;
    use nvme_nostd::spec::dwords::DsmAttributes;
    use nvme_nostd::Argument;
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    sim.write_blocks(1, 0, &[0x77; 64 * 512]);
    let ranges = [DsmRange::new(2, 3), DsmRange::new(40, 8)];
    let ad = DsmAttributes::new().with_ad(true);
    qp.dataset_management(&ns, &ranges, ad, vec![0; 4096], 0).map_err(|e| e.error).unwrap();
    let d = poll_for(&sim, &mut qp, Duration::from_millis(10));
    assert_eq!(d[0].result(), Ok(()));
    let list = d[0].buffer.as_ref().unwrap();
    assert_eq!(&list[..16], &ranges[0].to_bytes(), "the list, in the caller's buffer");
    let data = sim.read_blocks(1, 0, 64);
    for (block, bytes) in data.chunks(512).enumerate() {
        let deallocated = (2..5).contains(&block) || (40..48).contains(&block);
        assert!(bytes.iter().all(|&b| b == if deallocated { 0 } else { 0x77 }), "block {block}");
    }
    // Bad lists: nothing sent, the buffer back.
    let fetched = sim.stats().commands_fetched;
    let many = [DsmRange::new(0, 1); 257];
    let cases: [(&[DsmRange], usize, Error); 5] = [
        (&[], 4096, Error::InvalidArgument(Argument::DsmRanges)),
        (&many, 8192, Error::InvalidArgument(Argument::DsmRanges)),
        (&[DsmRange::new(0, 0)], 4096, Error::InvalidArgument(Argument::DsmRanges)),
        (&[DsmRange::new(ns.blocks() - 1, 2)], 4096, Error::LbaOutOfRange),
        (&[DsmRange::new(0, 1), DsmRange::new(9, 1)], 16, Error::BufferTooSmall { needed: 32, actual: 16 }),
    ];
    for (list, size, error) in cases {
        let refused = qp.dataset_management(&ns, list, ad, vec![0; size], 9).unwrap_err();
        assert_eq!((refused.error, refused.buffer.len()), (error, size), "{} ranges", list.len());
    }
    assert_eq!(sim.stats().commands_fetched, fetched);
}

/// Write Uncorrectable: reads of the marked blocks fail with Unrecovered
/// Read Error until they are written again (QEMU 7.2 lacks the command: the
/// conformance suite checks its refusal there).
#[test]
fn write_uncorrectable_until_written_again() {
    use nvme_nostd::spec::status::{media, StatusCodeType};
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    qp.write_uncorrectable(&ns, 20, 4, 0).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp), Ok(()));
    qp.read(&ns, 22, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap();
    match done(&sim, &mut qp) {
        Err(Error::Command(s)) => {
            assert_eq!(
                (s.sct(), s.sc()),
                (StatusCodeType::MEDIA_DATA_INTEGRITY, media::UNRECOVERED_READ_ERROR)
            )
        }
        other => panic!("a read of an uncorrectable block: {other:?}"),
    }
    qp.write(&ns, 22, 1, pattern(22, 512, 3), 2).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp), Ok(()));
    qp.read(&ns, 22, 1, vec![0; 512], 3).map_err(|e| e.error).unwrap();
    assert_eq!(done(&sim, &mut qp), Ok(()), "written again: readable");
    qp.read(&ns, 23, 1, vec![0; 512], 4).map_err(|e| e.error).unwrap();
    assert!(done(&sim, &mut qp).is_err(), "its neighbour still is not");
}

/// Copy: the ranges' blocks land one after another at the destination
/// (QEMU runs it too, in the conformance suite); the descriptors go in the
/// caller's buffer, the flags reach the controller, and what breaks the
/// namespace's limits is refused unsent.
#[test]
fn copy_gathers_ranges_at_the_destination() {
    use nvme_nostd::{Argument, CopyRange, IoFlags};
    let (sim, ctrlr, ns) = setup(SimConfig {
        copy_limits: nvme_sim::CopyLimits { mssrl: 8, mcl: 16, msrc: 3 },
        ..SimConfig::default()
    });
    let limits = ns.copy_limits();
    assert_eq!((limits.max_ranges, limits.max_range_blocks, limits.max_blocks), (4, 8, 16));
    let mut qp = qpair(&ctrlr);
    let source = pattern(0, 64 * 512, 3);
    sim.write_blocks(1, 0, &source);
    let ranges = [CopyRange::new(10, 2), CopyRange::new(3, 8), CopyRange::new(40, 1)];
    let flags = IoFlags { fua: true, limited_retry: true };
    qp.copy(&ns, 100, &ranges, flags, vec![0; 4096], 0).map_err(|e| e.error).unwrap();
    let d = poll_for(&sim, &mut qp, Duration::from_millis(10));
    assert_eq!(d[0].result(), Ok(()));
    let list = d[0].buffer.as_ref().unwrap();
    assert_eq!(&list[32 + 8..32 + 16], &3u64.to_le_bytes()[..], "second descriptor's SLBA");
    assert_eq!(&list[32 + 16..32 + 18], &7u16.to_le_bytes()[..], "0-based NLB");
    let block = |b: u64| &source[b as usize * 512..(b as usize + 1) * 512];
    let expected: Vec<u8> =
        [10, 11, 3, 4, 5, 6, 7, 8, 9, 10, 40].iter().flat_map(|&b| block(b).to_vec()).collect();
    assert_eq!(sim.read_blocks(1, 100, 11), expected);
    assert_eq!(sim.read_blocks(1, 111, 1), vec![0; 512], "nothing past the copied blocks");
    assert_eq!(sim.stats().copies, 1);
    assert_eq!((sim.stats().fua_commands, sim.stats().limited_retry_commands), (1, 1));

    // Bad input: nothing sent, the buffer back.
    let fetched = sim.stats().commands_fetched;
    let bad = Error::InvalidArgument(Argument::CopyRanges);
    let r = CopyRange::new;
    let cases: [(&[CopyRange], u64, usize, Error); 8] = [
        (&[], 0, 4096, bad),
        (&[r(0, 1); 5], 100, 4096, bad),
        (&[r(0, 0)], 100, 4096, bad),
        (&[r(0, 9)], 100, 4096, bad),
        (&[r(0, 8), r(8, 8), r(16, 1)], 100, 4096, bad),
        (&[r(ns.blocks() - 1, 2)], 100, 4096, Error::LbaOutOfRange),
        (&[r(0, 4)], ns.blocks() - 3, 4096, Error::LbaOutOfRange),
        (&[r(0, 1), r(9, 1)], 100, 32, Error::BufferTooSmall { needed: 64, actual: 32 }),
    ];
    for (list, destination, size, error) in cases {
        let refused = qp.copy(&ns, destination, list, IoFlags::default(), vec![0; size], 9).unwrap_err();
        assert_eq!((refused.error, refused.buffer.len()), (error, size), "{list:?} to {destination}");
    }
    assert_eq!(sim.stats().commands_fetched, fetched);

    // The simulator enforces the limits it reports: a raw Copy of one
    // 9-block range is stopped with Command Size Limit Exceeded.
    use nvme_nostd::spec::command::{CopySourceRange, IoOpcode, SubmissionEntry};
    use nvme_nostd::spec::status::command_specific;
    let mut cmd = SubmissionEntry::new(IoOpcode::COPY.0, 1);
    cmd.cdw10 = 100;
    let mut list = vec![0; 512];
    list[..32].copy_from_slice(&CopySourceRange::new(0, 8).to_bytes());
    // SAFETY: Copy moves only its descriptor list (NR 0: 32 bytes) from the
    // buffer, and carries no other address.
    unsafe { qp.submit_raw(cmd, Some(list), 10) }.map_err(|e| e.error).unwrap();
    match done(&sim, &mut qp) {
        Err(Error::Command(s)) => assert_eq!(
            (s.sct(), s.sc()),
            (StatusCodeType::COMMAND_SPECIFIC, command_specific::COMMAND_SIZE_LIMIT_EXCEEDED)
        ),
        other => panic!("9 blocks in a range of at most 8: {other:?}"),
    }
    assert_eq!(sim.stats().copies, 1);
    drop(qp);
    drop(ctrlr);
    assert_clean(&sim);
}

/// Without Copy (ONCS bit 8), or with Copy but not format 0h (OCFS bit 0
/// clear), a copy is refused unsent.
#[test]
fn copy_not_offered_is_refused_unsent() {
    use nvme_nostd::{CopyRange, IoFlags};
    let sim = Sim::new(SimConfig { copy: false, ..SimConfig::default() });
    let ctrlr = Controller::new(sim.hal(), common::options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp = qpair(&ctrlr);
    let fetched = sim.stats().commands_fetched;
    let refused =
        qp.copy(&ns, 100, &[CopyRange::new(0, 1)], IoFlags::default(), vec![0; 512], 0).unwrap_err();
    assert_eq!(refused.error, Error::Unsupported(Feature::NvmCommand));
    assert_eq!(sim.stats().commands_fetched, fetched);
    drop(qp);
    drop(ctrlr);
    // ONCS says Copy, OCFS says no format 0h.
    let sim = Sim::new(SimConfig {
        copy: false,
        lies: IdentifyLies { oncs: Some(0x019f), ..IdentifyLies::default() },
        ..SimConfig::default()
    });
    let ctrlr = Controller::new(sim.hal(), common::options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp = qpair(&ctrlr);
    let refused =
        qp.copy(&ns, 100, &[CopyRange::new(0, 1)], IoFlags::default(), vec![0; 512], 0).unwrap_err();
    assert_eq!(refused.error, Error::Unsupported(Feature::NvmCommand));
}
