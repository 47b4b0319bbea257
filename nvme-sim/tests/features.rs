//! Get and Set Features against the simulated controller (the conformance
//! suite runs the same against QEMU's): typed helpers round-trip, SEL
//! selects current, default and supported values, and bad input is refused
//! before anything is sent.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod common;

use common::setup;
use nvme_nostd::spec::dwords::{Arbitration, AsyncEventConfig, PowerManagement, Select};
use nvme_nostd::spec::ids::Fid;
use nvme_nostd::{Argument, Controller, Error, Feature};
use nvme_sim::{Sim, SimConfig};

#[test]
fn typed_features_round_trip() {
    let (_sim, ctrlr, _ns) = setup(SimConfig::default());
    assert!(!ctrlr.volatile_write_cache(Select::Current).unwrap());
    ctrlr.set_volatile_write_cache(true, false).unwrap();
    assert!(ctrlr.volatile_write_cache(Select::Current).unwrap());
    assert!(!ctrlr.volatile_write_cache(Select::Default).unwrap(), "the default stays");
    assert!(ctrlr.feature_capabilities(Fid::VOLATILE_WRITE_CACHE).unwrap().changeable());

    assert_eq!(ctrlr.temperature_threshold(0, false, Select::Current), Ok(343));
    ctrlr.set_temperature_threshold(330, 0, false, false).unwrap();
    ctrlr.set_temperature_threshold(250, 1, true, false).unwrap();
    assert_eq!(ctrlr.temperature_threshold(0, false, Select::Current), Ok(330));
    assert_eq!(ctrlr.temperature_threshold(1, true, Select::Current), Ok(250), "kept per sensor");
    assert_eq!(ctrlr.temperature_threshold(0, false, Select::Default), Ok(343));

    let arb = Arbitration::new().with_burst(3).with_high_weight(7);
    ctrlr.set_arbitration(arb, false).unwrap();
    assert_eq!(ctrlr.arbitration(Select::Current), Ok(arb));
    let aec = AsyncEventConfig::new().with_smart_warnings(0xff).with_namespace_attribute(true);
    ctrlr.set_async_event_config(aec, false).unwrap();
    assert_eq!(ctrlr.async_event_config(Select::Current), Ok(aec));
    assert_eq!(ctrlr.power_management(Select::Current).map(|p| p.power_state()), Ok(0));

    let queues = ctrlr.number_of_queues().unwrap();
    assert!(queues.nsq() + 1 >= ctrlr.io_queues() && queues.ncq() + 1 >= ctrlr.io_queues());
}

/// Bad input gets a clear error and nothing is sent.
#[test]
fn bad_feature_requests_send_nothing() {
    let (sim, ctrlr, _ns) = setup(SimConfig::default());
    let sent = sim.stats().admin_commands;
    assert_eq!(
        ctrlr.set_features(Fid::NUMBER_OF_QUEUES, 0, 0, false),
        Err(Error::InvalidArgument(Argument::DriverOwnedFeature))
    );
    assert_eq!(
        ctrlr.set_features(Fid::HOST_BEHAVIOR_SUPPORT, 0, 0, false),
        Err(Error::InvalidArgument(Argument::DriverOwnedFeature))
    );
    assert_eq!(
        ctrlr.set_power_management(PowerManagement::new().with_power_state(1), false),
        Err(Error::InvalidArgument(Argument::PowerState)),
        "NPSS is 0"
    );
    assert_eq!(
        ctrlr.set_temperature_threshold(300, 9, false, false),
        Err(Error::InvalidArgument(Argument::TemperatureSensor))
    );
    assert_eq!(
        ctrlr.keep_alive_timer(Select::Current),
        Err(Error::Unsupported(Feature::FeatureId)),
        "KAS is 0"
    );
    assert_eq!(
        ctrlr.get_features(Fid(0x7f), 0, Select::Current, 0),
        Err(Error::Unsupported(Feature::FeatureId))
    );
    assert!(!ctrlr.is_feature_supported(Fid::HOST_MEMORY_BUFFER));
    assert_eq!(sim.stats().admin_commands, sent, "nothing was sent");
    // Saving: the controller says no, with its status.
    let e = ctrlr.set_volatile_write_cache(true, true).unwrap_err();
    assert!(matches!(e, Error::Command(s) if s.sc().0 == 0x0d), "Feature Identifier Not Saveable: {e:?}");
}

/// Raw admin commands with data, through the admin data page: Identify
/// Controller read raw equals the typed path's bytes; Host Behavior Support
/// written raw enables ACRE; more than 4 KiB and driver-set pointers are
/// refused before anything is sent.
#[test]
fn raw_admin_commands_with_data() {
    use nvme_nostd::spec::command::{AdminOpcode, SubmissionEntry};
    use nvme_nostd::spec::dwords::{FeaturesCdw10, IdentifyCdw10};
    use nvme_nostd::spec::ids::Cns;
    let (sim, ctrlr, _ns) = setup(SimConfig { crdt: [1, 0, 0], ..SimConfig::default() });
    let mut typed = [0u8; 4096];
    ctrlr.identify_raw(Cns::CONTROLLER, 0, &mut typed).unwrap();
    let mut cmd = SubmissionEntry::new(AdminOpcode::IDENTIFY.0, 0);
    cmd.cdw10 = IdentifyCdw10::new().with_cns(Cns::CONTROLLER).into_bits();
    let mut raw = [0xaau8; 4096];
    // SAFETY: Identify Controller moves 4096 bytes from the device, through
    // PRP1, and changes nothing.
    unsafe { ctrlr.admin_command_read(cmd, &mut raw) }.unwrap();
    assert_eq!(raw[..], typed[..]);

    // ACRE off by hand, then on again through raw Set Features with data.
    let mut hbs = SubmissionEntry::new(AdminOpcode::SET_FEATURES.0, 0);
    hbs.cdw10 = FeaturesCdw10::new().with_fid(Fid::HOST_BEHAVIOR_SUPPORT).into_bits();
    let mut off = [0u8; 512];
    // SAFETY: Set Features / Host Behavior Support reads 512 bytes through
    // PRP1; turning ACRE off only makes the controller stop asking for
    // retry delays.
    unsafe { ctrlr.admin_command_write(hbs, &off) }.unwrap();
    assert!(!sim.acre());
    off[0] = 1;
    // SAFETY: as above.
    unsafe { ctrlr.admin_command_write(hbs, &off) }.unwrap();
    assert!(sim.acre());

    let sent = sim.stats().admin_commands;
    let mut big = [0u8; 4100];
    // SAFETY: refused before anything is sent.
    let e = unsafe { ctrlr.admin_command_read(cmd, &mut big) }.unwrap_err();
    assert_eq!(e, Error::InvalidArgument(Argument::AdminDataTooLarge));
    let mut pointed = cmd;
    pointed.prp1 = 0x1000;
    // SAFETY: refused before anything is sent.
    let e = unsafe { ctrlr.admin_command_read(pointed, &mut raw) }.unwrap_err();
    assert_eq!(e, Error::InvalidArgument(Argument::RawCommandPointers));
    assert_eq!(ctrlr.timestamp(), Err(Error::Unsupported(Feature::FeatureId)), "ONCS has no timestamp");
    assert_eq!(ctrlr.set_timestamp(1 << 48), Err(Error::InvalidArgument(Argument::Timestamp)));
    assert_eq!(sim.stats().admin_commands, sent, "nothing was sent");
}

/// Features that move data: the Host Identifier (given at attach from the
/// options, again after a reset, and read and set by hand) where the
/// controller has reservations; refused unsent where it does not (QEMU
/// 7.2); the LBA Range Type of a namespace.
#[test]
fn features_with_data() {
    const ID: [u8; 16] = *b"host-0123456789a";
    let sim = Sim::new(SimConfig { reservations: true, ..SimConfig::default() });
    let ctrlr = Controller::new(sim.hal(), common::options().with_host_identifier(Some(ID))).unwrap();
    assert!(ctrlr.host_identifier_granted());
    assert_eq!(ctrlr.host_identifier(true), Ok(ID));
    ctrlr.set_host_identifier(*b"12345678xxxxxxxx", false).unwrap();
    assert_eq!(ctrlr.host_identifier(false), Ok(*b"12345678\0\0\0\0\0\0\0\0"), "8 bytes");
    ctrlr.reset().unwrap();
    assert_eq!(ctrlr.host_identifier(true), Ok(ID), "the option's, again after the reset");
    let ranges = ctrlr.lba_range_types(1).unwrap();
    assert_eq!(ranges.len(), 1);
    assert_eq!((ranges[0].slba, ranges[0].nlb, ranges[0].overwritable()), (0, 8191, true));
    assert_eq!(ctrlr.lba_range_types(0).err(), Some(Error::InvalidArgument(Argument::NamespaceId)));

    let plain = Sim::new(SimConfig::default());
    let ctrlr = Controller::new(plain.hal(), common::options().with_host_identifier(Some(ID))).unwrap();
    assert!(!ctrlr.host_identifier_granted());
    let sent = plain.stats().admin_commands;
    assert_eq!(ctrlr.host_identifier(true), Err(Error::Unsupported(Feature::FeatureId)));
    assert_eq!(ctrlr.set_host_identifier(ID, true), Err(Error::Unsupported(Feature::FeatureId)));
    assert_eq!(plain.stats().admin_commands, sent, "nothing was sent");
}

/// A feature that moves a data structure, asked for through the calls that
/// carry none (Get and Set Features by dwords, and the asynchronous Get
/// Features): the controller would move it to or from address 0, so it is
/// refused unsent; its supported capabilities (DW0 only) still come.
#[test]
fn features_with_data_need_their_typed_helpers() {
    let sim = Sim::new(SimConfig { reservations: true, ..SimConfig::default() });
    let ctrlr = Controller::new(sim.hal(), common::options()).unwrap();
    let sent = sim.stats().admin_commands;
    let data = Error::InvalidArgument(Argument::FeatureWithData);
    for fid in [Fid::HOST_IDENTIFIER, Fid::TIMESTAMP, Fid::LBA_RANGE_TYPE, Fid::HOST_BEHAVIOR_SUPPORT] {
        assert_eq!(ctrlr.get_features(fid, 0, Select::Current, 0), Err(data), "{fid:?}");
        assert_eq!(ctrlr.get_features(fid, 0, Select::Default, 0), Err(data), "{fid:?}");
    }
    assert_eq!(ctrlr.set_features(Fid::HOST_IDENTIFIER, 0, 1, false), Err(data));
    assert_eq!(ctrlr.set_features(Fid::TIMESTAMP, 0, 0, false), Err(data));
    assert_eq!(
        ctrlr.set_features(Fid::HOST_MEMORY_BUFFER, 0, 1, false),
        Err(Error::InvalidArgument(Argument::DriverOwnedFeature))
    );
    let mut pool: nvme_nostd::AdminRequests<'_, nvme_sim::SimHal, Vec<u8>, u32, 2> =
        ctrlr.admin_requests().unwrap();
    let refused = pool.get_features(Fid::HOST_IDENTIFIER, 0, Select::Current, 0, 7).unwrap_err();
    assert_eq!((refused.error, refused.context), (data, 7));
    let refused = pool.get_features(Fid(0x7f), 0, Select::Current, 0, 8).unwrap_err();
    assert_eq!(refused.error, Error::Unsupported(Feature::FeatureId), "not advertised");
    assert_eq!(sim.stats().admin_commands, sent, "nothing was sent");
    assert_eq!(sim.stats().dma_faults, 0);
    drop(pool);
    // SEL = supported capabilities moves no data: sent (this controller
    // refuses SEL on it, with its own status).
    let caps = ctrlr.feature_capabilities(Fid::HOST_IDENTIFIER);
    assert!(matches!(caps, Ok(_) | Err(Error::Command(_))), "{caps:?}");
    assert_eq!(sim.stats().admin_commands, sent + 1);
}
