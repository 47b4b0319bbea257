//! Format NVM against the simulated controller (LBAF0 its configured block
//! size, LBAF1 4096 bytes); the conformance suite formats a scratch
//! namespace of QEMU's controller the same way. The controller is taken by
//! `&mut` (no queue pair, so no I/O in flight: a doctest proves the borrow),
//! and every namespace handle from before is refused afterwards.

mod common;

use common::{assert_clean, poll_for, qpair, setup};
use core::time::Duration;
use nvme_nostd::{Argument, Error, FormatNvm, ALL_NAMESPACES};
use nvme_sim::SimConfig;

#[test]
fn format_to_4096_byte_blocks_and_back() {
    let (sim, mut ctrlr, ns) = setup(SimConfig::default());
    assert_eq!(ns.block_size(), 512);
    let bytes = ns.size_bytes();
    sim.write_blocks(1, 0, &[0x5a; 512]);
    ctrlr.format_nvm(1, FormatNvm::lba_format(1)).expect("format to LBAF1");
    let formatted = ctrlr.namespace(1).expect("identify after the format");
    assert_eq!((formatted.block_size(), formatted.size_bytes()), (4096, bytes));
    assert!(sim.read_blocks(1, 0, 1).iter().all(|&b| b == 0), "the data is gone");

    {
        let mut qp = qpair(&ctrlr);
        // The old handle is refused; the new one works.
        let e = qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap_err();
        assert_eq!(e, Error::InvalidArgument(Argument::StaleNamespace));
        qp.write(&formatted, 3, 1, vec![0xc3; 4096], 2).map_err(|e| e.error).unwrap();
        assert_eq!(poll_for(&sim, &mut qp, Duration::from_millis(10))[0].result(), Ok(()));
        assert_eq!(sim.read_blocks(1, 3, 1), vec![0xc3; 4096]);
    }

    ctrlr.format_nvm(ALL_NAMESPACES, FormatNvm::lba_format(0)).expect("format every namespace back");
    let back = ctrlr.namespace(1).unwrap();
    assert_eq!((back.block_size(), back.size_bytes()), (512, bytes));
    drop(ctrlr);
    assert_clean(&sim);
}

/// Bad input: refused, nothing sent.
#[test]
fn bad_formats_send_nothing_but_identify() {
    let (sim, mut ctrlr, _ns) = setup(SimConfig::default());
    let sent = sim.stats().admin_commands;
    assert_eq!(
        ctrlr.format_nvm(1, FormatNvm::lba_format(16)),
        Err(Error::InvalidArgument(Argument::LbaFormat))
    );
    assert_eq!(
        ctrlr.format_nvm(1, FormatNvm::lba_format(0).with_protection(4, false)),
        Err(Error::InvalidArgument(Argument::LbaFormat))
    );
    assert_eq!(
        ctrlr.format_nvm(0, FormatNvm::lba_format(0)),
        Err(Error::InvalidArgument(Argument::NamespaceId))
    );
    assert_eq!(sim.stats().admin_commands, sent, "nothing was sent");
    // LBAF 2 is beyond NLBAF (1): refused after reading Identify Namespace.
    assert_eq!(
        ctrlr.format_nvm(1, FormatNvm::lba_format(2)),
        Err(Error::InvalidArgument(Argument::LbaFormat))
    );
    assert_eq!(sim.stats().admin_commands, sent + 1, "only the Identify Namespace");
}

/// Device Self-test (which the simulator advertises and QEMU 7.2 does not):
/// a short and an extended test land in the log, newest first. Sanitize and
/// Security Send / Receive, which neither advertises, are refused before
/// anything is sent.
#[test]
fn self_test_and_the_maintenance_commands_not_advertised() {
    use nvme_nostd::{Feature, SanitizeAction, SelfTest};
    let (sim, ctrlr, _ns) = setup(SimConfig::default());
    assert_eq!(ctrlr.self_test_log().unwrap().iter().count(), 0);
    ctrlr.device_self_test(ALL_NAMESPACES, SelfTest::Short).unwrap();
    ctrlr.device_self_test(ALL_NAMESPACES, SelfTest::Extended).unwrap();
    let log = ctrlr.self_test_log().unwrap();
    let held: Vec<(u8, u8)> = log.iter().map(|r| (r.code(), r.result())).collect();
    assert_eq!(held, [(2, 0), (1, 0)], "extended then short, both without error");
    let sent = sim.stats().admin_commands;
    assert_eq!(
        ctrlr.sanitize(SanitizeAction::BlockErase, false, 0),
        Err(Error::Unsupported(Feature::Sanitize))
    );
    assert_eq!(ctrlr.security_send(0xea, 0, &[0; 8]), Err(Error::Unsupported(Feature::Security)));
    let mut out = [0u8; 64];
    assert_eq!(ctrlr.security_receive(0, 0, &mut out), Err(Error::Unsupported(Feature::Security)));
    assert_eq!(sim.stats().admin_commands, sent, "nothing was sent");
}

/// A controller whose FNA bit 0 says a format of one namespace formats them
/// all: every handle goes stale, not only the named namespace's.
#[test]
fn a_format_that_applies_to_all_namespaces_retires_every_handle() {
    use nvme_sim::{IdentifyLies, SimNamespace};
    let two = |fna| SimConfig {
        namespaces: vec![
            SimNamespace { nsid: 1, block_size: 512, blocks: 1024 },
            SimNamespace { nsid: 2, block_size: 512, blocks: 1024 },
        ],
        lies: IdentifyLies { fna: Some(fna), ..IdentifyLies::default() },
        ..SimConfig::default()
    };
    for (fna, other_stale) in [(0u8, false), (1, true)] {
        let (sim, mut ctrlr, _ns) = setup(two(fna));
        let other = ctrlr.namespace(2).unwrap();
        ctrlr.format_nvm(1, FormatNvm::lba_format(1)).unwrap();
        let mut qp = qpair(&ctrlr);
        let r = qp.read(&other, 0, 1, vec![0; 512], 1).map_err(|e| e.error);
        assert_eq!(r.is_err(), other_stale, "FNA {fna}: {r:?}");
        if other_stale {
            assert_eq!(r.unwrap_err(), Error::InvalidArgument(Argument::StaleNamespace));
        } else {
            assert_eq!(poll_for(&sim, &mut qp, Duration::from_millis(10))[0].result(), Ok(()));
        }
    }
}
