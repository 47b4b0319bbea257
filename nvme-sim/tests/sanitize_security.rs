//! Sanitize (with its status log) and Security Send / Receive where the
//! controller offers them. QEMU 7.2's controller offers neither (the
//! conformance suite checks that both are refused before anything is sent
//! there), so the simulator does: a sanitize completes at once, security
//! has the protocol list (00h) and a vendor mailbox protocol (F0h).

mod common;

use common::setup;
use nvme_nostd::spec::ids::Lid;
use nvme_nostd::{Argument, Error, Feature, SanitizeAction};
use nvme_sim::SimConfig;

#[test]
fn each_offered_sanitize_action_erases_and_is_logged() {
    // Crypto erase and overwrite offered, block erase not.
    let (sim, ctrlr, _ns) = setup(SimConfig { sanicap: 0b101, ..SimConfig::default() });
    assert!(ctrlr.is_log_page_supported(Lid::SANITIZE_STATUS));
    assert_eq!(ctrlr.sanitize_status().unwrap().status(), 0, "never sanitized");

    sim.write_blocks(1, 0, &[0x5a; 512]);
    ctrlr.sanitize(SanitizeAction::CryptoErase, false, 0).unwrap();
    assert!(sim.read_blocks(1, 0, 1).iter().all(|&b| b == 0));
    let status = ctrlr.sanitize_status().unwrap();
    assert_eq!((status.status(), status.scdw10 & 7, status.sprog), (1, 4, 0xffff));

    ctrlr.sanitize(SanitizeAction::Overwrite, true, 0xa1b2_c3d4).unwrap();
    assert_eq!(&sim.read_blocks(1, 7, 1)[..8], &[0xd4, 0xc3, 0xb2, 0xa1, 0xd4, 0xc3, 0xb2, 0xa1]);
    let status = ctrlr.sanitize_status().unwrap();
    assert_eq!((status.status(), status.sstat >> 3 & 0x1f), (1, 1), "completed, one pass");
    assert_eq!(status.scdw10, 3 | 1 << 3 | 1 << 4, "SANACT 3, AUSE, one pass");

    let sent = sim.stats().admin_commands;
    assert_eq!(
        ctrlr.sanitize(SanitizeAction::BlockErase, false, 0),
        Err(Error::Unsupported(Feature::Sanitize))
    );
    assert_eq!(sim.stats().admin_commands, sent, "nothing was sent");
    assert_eq!(sim.stats().sanitizes, 2);
}

#[test]
fn security_protocols_and_a_round_trip() {
    let (sim, ctrlr, _ns) = setup(SimConfig { security: true, ..SimConfig::default() });
    // Protocol 00h: the list of supported protocols.
    let mut list = [0xffu8; 16];
    ctrlr.security_receive(0, 0, &mut list).unwrap();
    let count = usize::from(u16::from_be_bytes([list[6], list[7]]));
    assert_eq!(&list[8..8 + count], &[0x00, 0xf0]);
    // The mailbox protocol gives back what it was sent.
    let message: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    ctrlr.security_send(0xf0, 0, &message).unwrap();
    let mut back = [0u8; 300];
    ctrlr.security_receive(0xf0, 0, &mut back).unwrap();
    assert_eq!(&back[..], &message[..]);
    // More than 4 KiB is refused before anything is sent; a protocol the
    // controller lacks is refused by it.
    let sent = sim.stats().admin_commands;
    assert_eq!(
        ctrlr.security_send(0xf0, 0, &[0; 4097]),
        Err(Error::InvalidArgument(Argument::AdminDataTooLarge))
    );
    assert_eq!(sim.stats().admin_commands, sent);
    assert!(matches!(ctrlr.security_receive(0xee, 0, &mut back), Err(Error::Command(_))));
    // And no sanitize on this controller.
    assert_eq!(ctrlr.sanitize_status().err(), Some(Error::Unsupported(Feature::Sanitize)));
}
