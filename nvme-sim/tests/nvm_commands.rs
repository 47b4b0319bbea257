//! Compare, Write Zeroes and Verify (NVM command set sections 6.2, 6.16,
//! 6.15). QEMU's controller runs all three in the conformance suite; here,
//! the simulator adds what QEMU cannot be made to do: a controller that
//! advertises none of them (the calls are refused unsent), and the bad
//! input each must refuse.

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

/// FUA and Limited Retry reach the controller on reads and writes, and
/// plain calls set neither.
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
