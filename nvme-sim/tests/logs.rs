//! Get Log Page and the typed log pages against the simulated controller;
//! `conformance` runs the same reads against QEMU's. A controller that does
//! not advertise the Changed Namespace List (OAES bit 8; the simulator with
//! that bit lied away) must have that read refused before anything is sent.

mod common;

use common::{assert_clean, attach, setup};
use nvme_nostd::spec::ids::Lid;
use nvme_nostd::spec::log::ErrorInformation;
use nvme_nostd::{Argument, Error, Feature, ALL_NAMESPACES};
use nvme_sim::{IdentifyLies, Sim, SimConfig};

#[test]
fn typed_log_pages() {
    let (sim, ctrlr, _ns) = setup(SimConfig::default());
    let smart = ctrlr.smart_health(ALL_NAMESPACES).expect("SMART / health");
    assert_eq!(smart.temperature(), 313);
    assert_eq!(smart.critical_warning.into_bits(), 0);
    let fw = ctrlr.firmware_slot().expect("firmware slot");
    assert_eq!(fw.active_slot(), 1);
    assert_eq!(fw.revision(1), Some(&ctrlr.identify().fr), "slot 1 holds the running firmware");
    let effects = ctrlr.commands_supported_and_effects().expect("effects");
    assert!(effects.admin[0x06].supported(), "Identify");
    assert!(effects.io[0x02].supported() && !effects.io[0x02].lba_content_change(), "Read");
    assert!(effects.io[0x01].lba_content_change(), "Write changes blocks");
    let mut errors = [ErrorInformation::default(); 16];
    assert_eq!(ctrlr.error_log(&mut errors), Ok(0), "no error logged");
    drop(ctrlr);
    assert_clean(&sim);
}

/// A page read in pieces at dword offsets equals the page read whole.
#[test]
fn a_page_read_in_pieces_equals_the_whole() {
    let (_sim, ctrlr, _ns) = setup(SimConfig::default());
    let mut whole = [0u8; 4096];
    ctrlr.get_log_page(Lid::COMMANDS_SUPPORTED_AND_EFFECTS, ALL_NAMESPACES, 0, &mut whole).unwrap();
    let mut pieces = [0u8; 4096];
    let mut at = 0;
    for len in [4, 1020, 2048, 1024] {
        ctrlr
            .get_log_page(
                Lid::COMMANDS_SUPPORTED_AND_EFFECTS,
                ALL_NAMESPACES,
                at as u64,
                &mut pieces[at..at + len],
            )
            .unwrap();
        at += len;
    }
    assert_eq!(whole[..], pieces[..]);
    // And the SMART page from byte 200 (its temperature sensors).
    let mut tail = [0xffu8; 312];
    ctrlr.get_log_page(Lid::SMART_HEALTH, ALL_NAMESPACES, 200, &mut tail).unwrap();
    assert!(tail.iter().all(|&b| b == 0));
}

/// Bad input is refused with a clear error and nothing is sent.
#[test]
fn bad_log_page_requests_send_nothing() {
    let (sim, ctrlr, _ns) = setup(SimConfig::default());
    let sent = sim.stats().admin_commands;
    let mut buf = [0u8; 8192];
    let smart = Lid::SMART_HEALTH;
    let cases: [(Lid, u64, usize, Error); 6] = [
        (smart, 0, 0, Error::InvalidArgument(Argument::LogPageAlignment)),
        (smart, 0, 6, Error::InvalidArgument(Argument::LogPageAlignment)),
        (smart, 2, 8, Error::InvalidArgument(Argument::LogPageAlignment)),
        (smart, 256, 512, Error::InvalidArgument(Argument::LogPageRange)),
        (smart, 0, 516, Error::InvalidArgument(Argument::LogPageRange)),
        (Lid::ERROR_INFORMATION, 0, 8192, Error::InvalidArgument(Argument::LogPageRange)),
    ];
    for (lid, offset, len, want) in cases {
        assert_eq!(
            ctrlr.get_log_page(lid, ALL_NAMESPACES, offset, &mut buf[..len]),
            Err(want),
            "{lid:?} {offset} {len}"
        );
    }
    assert_eq!(ctrlr.smart_health(1).err(), Some(Error::Unsupported(Feature::SmartPerNamespace)));
    assert_eq!(ctrlr.error_log(&mut []), Err(Error::InvalidArgument(Argument::LogPageAlignment)));
    assert!(ctrlr.is_log_page_supported(Lid::CHANGED_NAMESPACE_LIST));
    let quiet = Sim::new(SimConfig::default());
    quiet.set_lies(IdentifyLies { oaes: Some(0), ..IdentifyLies::default() });
    let quiet_ctrlr = attach(&quiet);
    let sent_quiet = quiet.stats().admin_commands;
    assert!(!quiet_ctrlr.is_log_page_supported(Lid::CHANGED_NAMESPACE_LIST));
    assert_eq!(quiet_ctrlr.changed_namespaces().err(), Some(Error::Unsupported(Feature::LogPage)));
    assert_eq!(quiet.stats().admin_commands, sent_quiet, "nothing was sent");
    assert!(ctrlr.is_log_page_supported(Lid::COMMANDS_SUPPORTED_AND_EFFECTS));
    assert_eq!(sim.stats().admin_commands, sent, "nothing was sent");
    // A log page the controller does not know: its status, from the device.
    let e = ctrlr.get_log_page(Lid(0xc0), ALL_NAMESPACES, 0, &mut buf[..512]).unwrap_err();
    assert!(matches!(e, Error::Command(s) if s.sc().0 == 0x09), "Invalid Log Page: {e:?}");
}
