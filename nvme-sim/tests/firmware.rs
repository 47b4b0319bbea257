//! Firmware Image Download and Firmware Commit against the simulated
//! controller: three slots, slot 1 read-only, FWUG 4 KiB. QEMU 7.2's
//! controller lacks both commands (OACS bit 2 clear), so the conformance
//! suite only checks that the driver refuses them there, unsent; the full
//! path runs here only.

mod common;

use common::attach;
use nvme_nostd::spec::identify::IdentifyController;
use nvme_nostd::spec::ids::Cns;
use nvme_nostd::{Activation, Argument, CommitAction, Controller, Error, Feature};
use nvme_sim::{IdentifyLies, Sim, SimConfig, SimHal};

/// A valid image for the simulator: magic, revision, then `len` bytes.
fn image(revision: &[u8; 8], len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    v[..5].copy_from_slice(b"SIMFW");
    v[8..16].copy_from_slice(revision);
    for (i, b) in v.iter_mut().enumerate().skip(16) {
        *b = i as u8;
    }
    v
}

/// The firmware revision Identify Controller reports now (the driver's
/// copy is from attach).
fn running(ctrlr: &Controller<SimHal>) -> [u8; 8] {
    let mut page = [0u8; 4096];
    ctrlr.identify_raw(Cns::CONTROLLER, 0, &mut page).unwrap();
    IdentifyController::from_bytes(&page).fr
}

#[test]
fn download_commit_and_activate_at_reset() {
    let sim = Sim::new(SimConfig::default());
    let ctrlr = attach(&sim);
    assert_eq!(ctrlr.firmware_granularity(), 4096);
    let sent = sim.stats().admin_commands;
    // 10 KiB + 12 bytes: two whole pieces and a short last one.
    ctrlr.download_firmware(&image(b"2.0     ", 10 * 1024 + 12)).unwrap();
    assert_eq!(sim.stats().admin_commands - sent, 3, "three pieces");
    assert_eq!(ctrlr.commit_firmware(2, CommitAction::ReplaceAndActivateOnReset), Ok(Activation::Done));
    let log = ctrlr.firmware_slot().unwrap();
    assert_eq!((log.active_slot(), log.next_slot()), (1, Some(2)));
    assert_eq!(log.revision(2), Some(b"2.0     "));
    assert_eq!(&running(&ctrlr), b"1.0     ");
    let ns = ctrlr.namespace(1).unwrap();
    ctrlr.reset().unwrap();
    let log = ctrlr.firmware_slot().unwrap();
    assert_eq!((log.active_slot(), log.next_slot()), (2, None));
    assert_eq!(&running(&ctrlr), b"2.0     ");
    // The reset read Identify Controller again: the new revision, and the
    // namespace handles from before are stale.
    assert_eq!(&ctrlr.identify().fr, b"2.0     ");
    {
        let mut qp = common::qpair(&ctrlr);
        let e = qp.read(&ns, 0, 1, vec![0; 512], 1).map_err(|e| e.error).unwrap_err();
        assert_eq!(e, Error::InvalidArgument(Argument::StaleNamespace));
        let fresh = ctrlr.namespace(1).unwrap();
        qp.read(&fresh, 0, 1, vec![0; 512], 2).map_err(|e| e.error).unwrap();
    }
    // A reset that changes nothing leaves handles valid.
    let ns = ctrlr.namespace(1).unwrap();
    ctrlr.reset().unwrap();
    {
        let mut qp = common::qpair(&ctrlr);
        qp.read(&ns, 0, 1, vec![0; 512], 3).map_err(|e| e.error).unwrap();
    }

    // Back to slot 1: the controller says a Controller Level Reset
    // activates it, which is a success here.
    assert_eq!(ctrlr.commit_firmware(1, CommitAction::ActivateOnReset), Ok(Activation::NeedsControllerReset));
    ctrlr.reset().unwrap();
    assert_eq!(&running(&ctrlr), b"1.0     ");

    // Activated at once, into a slot the controller chooses.
    ctrlr.download_firmware(&image(b"3.0     ", 4096)).unwrap();
    assert_eq!(ctrlr.commit_firmware(0, CommitAction::ReplaceAndActivateNow), Ok(Activation::Done));
    assert_eq!(&running(&ctrlr), b"3.0     ");
}

/// The device's refusals reach the caller as its statuses.
#[test]
fn the_device_refuses() {
    let sim = Sim::new(SimConfig::default());
    let ctrlr = attach(&sim);
    let sc = |r: Result<Activation, Error>| match r {
        Err(Error::Command(s)) => s.sc().0,
        other => panic!("{other:?}"),
    };
    // Nothing downloaded: no image to commit.
    assert_eq!(sc(ctrlr.commit_firmware(2, CommitAction::Replace)), 0x07, "invalid firmware image");
    // A corrupt image.
    ctrlr.download_firmware(&[0xee; 64]).unwrap();
    assert_eq!(sc(ctrlr.commit_firmware(2, CommitAction::Replace)), 0x07);
    // An empty slot to activate.
    assert_eq!(sc(ctrlr.commit_firmware(3, CommitAction::ActivateOnReset)), 0x06, "invalid firmware slot");
    // A piece at an offset already written.
    ctrlr.firmware_image_download(0, &image(b"x       ", 4096)).unwrap();
    let e = ctrlr.firmware_image_download(0, &[0; 4096]).unwrap_err();
    assert!(matches!(e, Error::Command(s) if s.sc().0 == 0x14), "overlapping range: {e:?}");
}

/// Bad input is refused before anything is sent.
#[test]
fn bad_input_sends_nothing() {
    let sim = Sim::new(SimConfig::default());
    let ctrlr = attach(&sim);
    let sent = sim.stats().admin_commands;
    let piece = Err(Error::InvalidArgument(Argument::FirmwarePiece));
    assert_eq!(ctrlr.firmware_image_download(0, &[]), piece);
    assert_eq!(ctrlr.firmware_image_download(0, &[0; 4098]), piece, "above 4 KiB");
    assert_eq!(ctrlr.firmware_image_download(0, &[0; 6]), piece, "not dword-sized");
    assert_eq!(ctrlr.firmware_image_download(512, &[0; 512]), piece, "offset off the 4 KiB granularity");
    assert_eq!(ctrlr.download_firmware(&[]), piece);
    assert_eq!(ctrlr.download_firmware(&[0; 7]), piece);
    let slot = Err(Error::InvalidArgument(Argument::FirmwareSlot));
    assert_eq!(ctrlr.commit_firmware(4, CommitAction::Replace), slot, "three slots");
    assert_eq!(ctrlr.commit_firmware(1, CommitAction::Replace), slot, "slot 1 is read-only");
    assert_eq!(ctrlr.commit_firmware(1, CommitAction::ReplaceAndActivateNow), slot);
    assert_eq!(ctrlr.commit_firmware(0, CommitAction::ActivateOnReset), slot, "which slot?");
    assert_eq!(sim.stats().admin_commands, sent, "nothing was sent");

    // 8 KiB granularity: pieces of 4 KiB cannot honour it.
    let coarse = Sim::new(SimConfig { fwug: 2, ..SimConfig::default() });
    let ctrlr = attach(&coarse);
    let sent = coarse.stats().admin_commands;
    assert_eq!(ctrlr.download_firmware(&[0; 8192]), Err(Error::Unsupported(Feature::FirmwareGranularity)));
    assert_eq!(ctrlr.firmware_image_download(4096, &[0; 4096]), piece, "an offset off the 8 KiB granularity");
    assert_eq!(coarse.stats().admin_commands, sent);

    // A controller without the commands.
    let without = Sim::new(SimConfig::default());
    without.set_lies(IdentifyLies { oacs: Some(0x0012), ..IdentifyLies::default() });
    let ctrlr = attach(&without);
    let sent = without.stats().admin_commands;
    let unsupported = Err(Error::Unsupported(Feature::Firmware));
    assert_eq!(ctrlr.download_firmware(&[0; 64]), unsupported);
    assert_eq!(ctrlr.commit_firmware(2, CommitAction::Replace), unsupported.map(|()| Activation::Done));
    assert_eq!(without.stats().admin_commands, sent);
}
