//! Zoned namespaces against the simulator's zoned model (QEMU runs the same
//! lifecycle in the conformance suite): the zone geometry, writes at the
//! write pointer only, Zone Append and the LBA it returns, the zone
//! actions, the report with its filter, the commands byte by byte, and the
//! caller errors refused unsent.

mod common;

use common::{options, poll_for, qpair};
use core::time::Duration;
use nvme_nostd::spec::status::{command_specific, StatusCodeType};
use nvme_nostd::{Argument, Controller, Error, Feature, IoFlags, ZoneReport, ZoneSendAction, ZoneState};
use nvme_sim::{Sim, SimConfig, SimNamespace, SimZoned};

fn zoned_sim() -> Sim {
    Sim::new(SimConfig {
        mdts: 1,
        namespaces: vec![
            SimNamespace { nsid: 1, block_size: 512, blocks: 8192 },
            SimNamespace { nsid: 2, block_size: 512, blocks: 1024 },
        ],
        zoned: vec![SimZoned { nsid: 1, zone_blocks: 64, ..SimZoned::default() }],
        ..SimConfig::default()
    })
}

fn one(sim: &Sim, qp: &mut common::Qp<'_>) -> common::Done {
    let mut d = poll_for(sim, qp, Duration::from_millis(10));
    assert_eq!(d.len(), 1);
    d.pop().unwrap()
}

fn zone_error(r: Result<(), Error>) -> Option<u8> {
    match r {
        Err(Error::Command(s)) if s.sct() == StatusCodeType::COMMAND_SPECIFIC => Some(s.sc().0),
        _ => None,
    }
}

#[test]
fn zone_lifecycle() {
    let sim = zoned_sim();
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let zones = ns.zones().expect("a zoned namespace");
    assert_eq!((zones.zone_blocks, zones.max_active, zones.max_open), (64, None, None));
    assert!(ctrlr.namespace(2).unwrap().zones().is_none());
    let mut qp = qpair(&ctrlr);
    let report = |qp: &mut common::Qp<'_>, slba, state, partial| {
        qp.report_zones(&ns, slba, state, partial, vec![0; 4096], 0).map_err(|e| e.error).unwrap();
        let d = one(&sim, qp);
        d.result().unwrap();
        let data = d.buffer.unwrap();
        let r = ZoneReport::parse(&data).unwrap();
        (r.zone_count(), r.zones().map(|z| (z.zslba, z.state(), z.wp)).collect::<Vec<_>>())
    };
    let (count, zs) = report(&mut qp, 0, None, false);
    assert_eq!((count, zs.len()), (128, 63), "all zones counted; those that fit described");
    assert_eq!(zs[1], (64, ZoneState::EMPTY, 64));
    // Writes at the write pointer only.
    qp.write(&ns, 64, 4, vec![7; 2048], 0).map_err(|e| e.error).unwrap();
    assert_eq!(one(&sim, &mut qp).result(), Ok(()));
    qp.write(&ns, 74, 1, vec![7; 512], 0).map_err(|e| e.error).unwrap();
    assert_eq!(zone_error(one(&sim, &mut qp).result()), Some(command_specific::ZONE_INVALID_WRITE.0));
    // Zone Append lands at the write pointer and says so.
    qp.zone_append(&ns, 64, 2, IoFlags::default(), vec![8; 1024], 0).map_err(|e| e.error).unwrap();
    let d = one(&sim, &mut qp);
    assert_eq!((d.result(), d.result64()), (Ok(()), 68));
    assert_eq!(sim.read_blocks(1, 68, 2), vec![8; 1024]);
    assert_eq!(report(&mut qp, 64, None, false).1[0], (64, ZoneState::IMPLICITLY_OPENED, 70));
    // Finished, the zone is full.
    qp.zone_management_send(&ns, 64, ZoneSendAction::FINISH, false, 0).map_err(|e| e.error).unwrap();
    assert_eq!(one(&sim, &mut qp).result(), Ok(()));
    qp.write(&ns, 70, 1, vec![0; 512], 0).map_err(|e| e.error).unwrap();
    assert_eq!(zone_error(one(&sim, &mut qp).result()), Some(command_specific::ZONE_IS_FULL.0));
    let (count, zs) = report(&mut qp, 0, Some(ZoneState::FULL), true);
    assert_eq!((count, zs), (1, vec![(64, ZoneState::FULL, 128)]));
    // Reset all: empty again.
    qp.zone_management_send(&ns, 0, ZoneSendAction::RESET, true, 0).map_err(|e| e.error).unwrap();
    assert_eq!(one(&sim, &mut qp).result(), Ok(()));
    assert_eq!(report(&mut qp, 64, Some(ZoneState::EMPTY), true).1[0], (64, ZoneState::EMPTY, 64));
    // Writes are not split on a zoned namespace (children could land out
    // of order); reads are.
    let refused = qp.write(&ns, 0, 32, vec![0; 32 * 512], 0).unwrap_err();
    assert!(matches!(refused.error, Error::TransferTooLarge { .. }), "{:?}", refused.error);
    qp.read(&ns, 0, 32, vec![0; 32 * 512], 0).map_err(|e| e.error).unwrap();
    assert_eq!(one(&sim, &mut qp).result(), Ok(()));
}

/// The zoned commands byte by byte (Zoned Namespace Command Set 1.1
/// figures 34, 40, 42): SLBA in CDW10-11; ZSA in CDW13 bits 7:0 and Select
/// All in bit 8; NUMD in CDW12, ZRA in CDW13 bits 7:0, ZRASF in 15:8,
/// Partial Report in bit 16; Zone Append's NLB in CDW12 bits 15:0 and FUA.
#[test]
fn zoned_commands_byte_by_byte() {
    let sim = zoned_sim();
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp = qpair(&ctrlr);
    let last = |sim: &Sim| *sim.recent_io_commands().last().unwrap();
    qp.zone_management_send(&ns, 128, ZoneSendAction::OPEN, false, 0).map_err(|e| e.error).unwrap();
    one(&sim, &mut qp);
    let c = last(&sim);
    assert_eq!((c.cdw0.opc(), c.cdw10, c.cdw11, c.cdw13), (0x79, 128, 0, 0x03));
    qp.zone_management_send(&ns, 0, ZoneSendAction::CLOSE, true, 0).map_err(|e| e.error).unwrap();
    one(&sim, &mut qp);
    assert_eq!(last(&sim).cdw13, 0x101);
    qp.report_zones(&ns, 64, Some(ZoneState::CLOSED), true, vec![0; 1024], 0).map_err(|e| e.error).unwrap();
    one(&sim, &mut qp);
    let c = last(&sim);
    assert_eq!((c.cdw0.opc(), c.cdw10, c.cdw12, c.cdw13), (0x7a, 64, 255, 4 << 8 | 1 << 16));
    qp.zone_append(&ns, 192, 3, IoFlags::FUA, vec![0; 1536], 0).map_err(|e| e.error).unwrap();
    one(&sim, &mut qp);
    let c = last(&sim);
    assert_eq!((c.cdw0.opc(), c.cdw10, c.cdw12), (0x7d, 192, 2 | 1 << 30));
}

/// Bad input, refused unsent.
#[test]
fn zoned_caller_errors_are_refused_unsent() {
    let sim = zoned_sim();
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let plain = ctrlr.namespace(2).unwrap();
    let mut qp = qpair(&ctrlr);
    let fetched = sim.stats().commands_fetched;
    let start = Error::InvalidArgument(Argument::ZoneStart);
    let e = |r: Result<nvme_nostd::Cid, Error>| r.unwrap_err();
    assert_eq!(
        e(qp.zone_management_send(&ns, 65, ZoneSendAction::RESET, false, 0).map_err(|e| e.error)),
        start
    );
    assert_eq!(
        e(qp.zone_management_send(&ns, 64, ZoneSendAction(0x42), false, 0).map_err(|e| e.error)),
        Error::InvalidArgument(Argument::ZoneAction)
    );
    assert_eq!(e(qp.zone_append(&ns, 3, 1, IoFlags::default(), vec![0; 512], 0).map_err(|e| e.error)), start);
    assert_eq!(
        e(qp.zone_append(&ns, 0, 65, IoFlags::default(), vec![0; 65 * 512], 0).map_err(|e| e.error)),
        Error::InvalidArgument(Argument::TooManyBlocks),
        "more than a zone"
    );
    assert!(matches!(
        e(qp.report_zones(&ns, 0, None, false, vec![0; 32], 0).map_err(|e| e.error)),
        Error::BufferTooSmall { .. }
    ));
    assert_eq!(
        e(qp.report_zones(&ns, 8192, None, false, vec![0; 4096], 0).map_err(|e| e.error)),
        Error::LbaOutOfRange
    );
    let unsupported = Error::Unsupported(Feature::ZonedNamespace);
    assert_eq!(
        e(qp.zone_management_send(&plain, 0, ZoneSendAction::RESET, false, 0).map_err(|e| e.error)),
        unsupported
    );
    assert_eq!(
        e(qp.report_zones(&plain, 0, None, false, vec![0; 4096], 0).map_err(|e| e.error)),
        unsupported
    );
    assert_eq!(
        e(qp.zone_append(&plain, 0, 1, IoFlags::default(), vec![0; 512], 0).map_err(|e| e.error)),
        unsupported
    );
    // The simulator's zones have no descriptor extensions (ZDES 0).
    assert_eq!(ns.zones().unwrap().descriptor_extension_bytes, 0);
    let no_ext = Error::Unsupported(Feature::ZoneDescriptorExtension);
    assert_eq!(e(qp.set_zone_descriptor_extension(&ns, 0, vec![0; 64], 0).map_err(|e| e.error)), no_ext);
    assert_eq!(
        e(qp.report_zones_extended(&ns, 0, None, false, vec![0; 4096], 0).map_err(|e| e.error)),
        no_ext
    );
    assert_eq!(
        e(qp.set_zone_descriptor_extension(&plain, 0, vec![0; 64], 0).map_err(|e| e.error)),
        unsupported
    );
    assert_eq!(sim.stats().commands_fetched, fetched);
}

/// Zone descriptor extensions on the simulator (ZDES 1: 64 bytes): Set
/// Zone Descriptor Extension byte by byte (ZSA 10h in CDW13, the data by
/// PRP), the extended report (ZRA 01h) with each descriptor followed by its
/// extension and ZA bit 7, the controller's refusal on a zone that is not
/// empty, and reset clearing the valid bit. QEMU runs the same in the
/// conformance suite (`zoned.descr_ext_size=64`).
#[test]
fn zone_descriptor_extensions() {
    let sim = Sim::new(SimConfig {
        namespaces: vec![SimNamespace { nsid: 1, block_size: 512, blocks: 8192 }],
        zoned: vec![SimZoned { nsid: 1, zone_blocks: 64, extension_units: 1 }],
        ..SimConfig::default()
    });
    let ctrlr = Controller::new(sim.hal(), options()).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    assert_eq!(ns.zones().unwrap().descriptor_extension_bytes, 64);
    let mut qp = qpair(&ctrlr);
    let last = |sim: &Sim| *sim.recent_io_commands().last().unwrap();
    let ext: Vec<u8> = (0..64u8).map(|i| i ^ 0xa5).collect();
    qp.set_zone_descriptor_extension(&ns, 128, ext.clone(), 0).map_err(|e| e.error).unwrap();
    one(&sim, &mut qp).result().unwrap();
    let c = last(&sim);
    assert_eq!((c.cdw0.opc(), c.cdw10, c.cdw11, c.cdw13), (0x79, 128, 0, 0x10));
    qp.report_zones_extended(&ns, 128, None, true, vec![0; 64 + 2 * 128], 0).map_err(|e| e.error).unwrap();
    let d = one(&sim, &mut qp);
    d.result().unwrap();
    let c = last(&sim);
    assert_eq!((c.cdw0.opc(), c.cdw10, c.cdw12, c.cdw13), (0x7a, 128, 79, 1 | 1 << 16));
    let data = d.buffer.unwrap();
    let report = ZoneReport::parse_extended(&data, 64).unwrap();
    let zones: Vec<_> = report.zones_with_extensions().collect();
    assert_eq!(zones.len(), 2);
    assert_eq!(
        (zones[0].0.zslba, zones[0].0.state(), zones[0].0.extension_valid()),
        (128, ZoneState::CLOSED, true)
    );
    assert_eq!(zones[0].1, &ext[..]);
    assert!(!zones[1].0.extension_valid() && zones[1].0.state() == ZoneState::EMPTY);
    // A zone with data is not empty: the controller refuses.
    qp.write(&ns, 192, 1, vec![1; 512], 0).map_err(|e| e.error).unwrap();
    one(&sim, &mut qp).result().unwrap();
    qp.set_zone_descriptor_extension(&ns, 192, ext.clone(), 0).map_err(|e| e.error).unwrap();
    assert_eq!(
        zone_error(one(&sim, &mut qp).result()),
        Some(command_specific::INVALID_ZONE_STATE_TRANSITION.0)
    );
    // Unsent: a short buffer, an LBA inside a zone.
    let fetched = sim.stats().commands_fetched;
    let e = qp.set_zone_descriptor_extension(&ns, 128, vec![0; 60], 0).unwrap_err();
    assert!(matches!(e.error, Error::BufferTooSmall { needed: 64, .. }), "{:?}", e.error);
    let e = qp.set_zone_descriptor_extension(&ns, 129, vec![0; 64], 0).unwrap_err();
    assert_eq!(e.error, Error::InvalidArgument(Argument::ZoneStart));
    assert_eq!(sim.stats().commands_fetched, fetched);
    // Opened and closed again without data, a zone whose extension is valid
    // stays closed (active), extension and all.
    qp.zone_management_send(&ns, 128, ZoneSendAction::OPEN, false, 0).map_err(|e| e.error).unwrap();
    one(&sim, &mut qp).result().unwrap();
    qp.zone_management_send(&ns, 128, ZoneSendAction::CLOSE, false, 0).map_err(|e| e.error).unwrap();
    one(&sim, &mut qp).result().unwrap();
    qp.report_zones_extended(&ns, 128, None, true, vec![0; 64 + 128], 0).map_err(|e| e.error).unwrap();
    let data = one(&sim, &mut qp).buffer.unwrap();
    let (d, e) = ZoneReport::parse_extended(&data, 64).unwrap().zones_with_extensions().next().unwrap();
    assert_eq!((d.state(), d.extension_valid(), e), (ZoneState::CLOSED, true, &ext[..]));
    // Reset: empty, the extension no longer valid (and read as zeros).
    qp.zone_management_send(&ns, 128, ZoneSendAction::RESET, false, 0).map_err(|e| e.error).unwrap();
    one(&sim, &mut qp).result().unwrap();
    qp.report_zones_extended(&ns, 128, None, true, vec![0; 64 + 128], 0).map_err(|e| e.error).unwrap();
    let data = one(&sim, &mut qp).buffer.unwrap();
    let (d, e) = ZoneReport::parse_extended(&data, 64).unwrap().zones_with_extensions().next().unwrap();
    assert_eq!((d.state(), d.extension_valid()), (ZoneState::EMPTY, false));
    assert!(e.iter().all(|&b| b == 0));
}
