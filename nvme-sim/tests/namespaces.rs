//! Namespace Management and Attachment against the simulated controller
//! (one controller, CNTLID 1, in its NVM subsystem). QEMU 7.2's controller
//! has attachment but not management (create and delete): the conformance
//! suite attaches and detaches a namespace that QEMU starts detached;
//! create and delete are tested here only.

mod common;

use common::{assert_clean, attach, poll_for, qpair};
use core::time::Duration;
use nvme_nostd::spec::command::IoOpcode;
use nvme_nostd::spec::dwords::AsyncEventConfig;
use nvme_nostd::{Argument, Controller, Error, Feature, NamespaceDescription, ALL_NAMESPACES};
use nvme_sim::{Fault, FaultRule, IdentifyLies, Sim, SimConfig, SimHal};

fn status_code(e: Error) -> u8 {
    match e {
        Error::Command(s) => s.sc().0,
        other => panic!("not a command status: {other:?}"),
    }
}

fn sim() -> Sim {
    Sim::new(SimConfig { capacity_bytes: 16 << 20, max_namespaces: 4, ..SimConfig::default() })
}

fn active(ctrlr: &Controller<SimHal>) -> Vec<u32> {
    ctrlr.namespace_ids().map(|n| n.unwrap()).collect()
}

#[test]
fn create_attach_use_detach_delete() {
    let sim = sim();
    let mut ctrlr = attach(&sim);
    ctrlr.enable_async_events(AsyncEventConfig::new().with_namespace_attribute(true)).unwrap();
    let me = ctrlr.controller_id();
    assert_eq!(me, 1);
    let nsid = ctrlr.create_namespace(&NamespaceDescription::new(1024).with_lba_format(1)).unwrap();
    assert_eq!(nsid, 2, "the lowest free identifier");
    assert_eq!(ctrlr.allocated_namespaces(0).unwrap().iter().collect::<Vec<_>>(), [1, 2]);
    assert_eq!(active(&ctrlr), [1], "created, not attached");
    let id = ctrlr.identify_allocated_namespace(nsid).unwrap();
    assert_eq!(id.nsze, 1024);
    assert_eq!(ctrlr.attached_controllers(nsid, 0).unwrap().iter().count(), 0);
    assert_eq!(ctrlr.namespace(nsid).err(), Some(Error::InvalidArgument(Argument::InactiveNamespace)));

    let old = ctrlr.namespace(1).unwrap();
    ctrlr.attach_namespace(nsid, &[me]).unwrap();
    assert_eq!(active(&ctrlr), [1, 2]);
    assert!(ctrlr.attached_controllers(nsid, 0).unwrap().iter().eq([me]));
    assert!(ctrlr.subsystem_controllers(0).unwrap().iter().eq([me]));
    assert_eq!(ctrlr.subsystem_controllers(2).unwrap().iter().count(), 0, "from CNTID 2 up");
    let mut events = Vec::new();
    ctrlr.process_admin_completions(usize::MAX, |e| events.push(e)).unwrap();
    assert!(events.len() == 1 && events[0].is_namespace_changed(), "{events:?}");
    assert!(ctrlr.changed_namespaces().unwrap().iter().eq([nsid]));

    let ns = ctrlr.namespace(nsid).unwrap();
    assert_eq!((ns.block_size(), ns.blocks()), (4096, 1024));
    {
        let mut qp = qpair(&ctrlr);
        // Attaching another namespace leaves this one's handle usable.
        qp.read(&old, 0, 1, vec![0; 512], 1).map_err(|e| e.error).expect("namespace 1 did not change");
        assert_eq!(poll_for(&sim, &mut qp, Duration::from_millis(10))[0].result(), Ok(()));
        qp.write(&ns, 7, 1, vec![0x42; 4096], 2).map_err(|e| e.error).unwrap();
        assert_eq!(poll_for(&sim, &mut qp, Duration::from_millis(10))[0].result(), Ok(()));
        assert_eq!(sim.read_blocks(nsid, 7, 1), vec![0x42; 4096]);

        // Detach with the queue pair alive (by `&self`): a command already
        // submitted fails with the device's status, once; new ones are
        // refused as stale.
        // (Held 1 ms inside the device, so the detach comes first.)
        sim.inject(FaultRule::once(
            Some(qp.qid()),
            Some(IoOpcode::READ.0),
            Fault::Delay(Duration::from_millis(1)),
        ));
        qp.read(&ns, 7, 1, vec![0; 4096], 3).map_err(|e| e.error).unwrap();
        ctrlr.detach_namespace(nsid, &[me]).unwrap();
        let done = poll_for(&sim, &mut qp, Duration::from_millis(10));
        assert_eq!(done.len(), 1);
        assert!(matches!(done[0].result(), Err(Error::Command(_))), "{:?}", done[0].result());
        let e = qp.read(&ns, 7, 1, vec![0; 4096], 4).map_err(|e| e.error).unwrap_err();
        assert_eq!(e, Error::InvalidArgument(Argument::StaleNamespace));
    }
    assert_eq!(active(&ctrlr), [1]);
    ctrlr.delete_namespace(nsid).unwrap();
    assert_eq!(ctrlr.allocated_namespaces(0).unwrap().iter().collect::<Vec<_>>(), [1]);
    drop(ctrlr);
    assert_clean(&sim);
}

/// The device's refusals reach the caller as its statuses.
#[test]
fn the_device_refuses() {
    let sim = sim();
    let mut ctrlr = attach(&sim);
    let me = ctrlr.controller_id();
    // 16 MiB capacity, 4 MiB taken by namespace 1.
    let too_big = NamespaceDescription::new(4096).with_lba_format(1);
    assert_eq!(status_code(ctrlr.create_namespace(&too_big).unwrap_err()), 0x15, "insufficient capacity");
    let thin = NamespaceDescription::new(64).with_capacity(32);
    assert_eq!(status_code(ctrlr.create_namespace(&thin).unwrap_err()), 0x1b, "no thin provisioning");
    let small = NamespaceDescription::new(64);
    for nsid in 2..=4 {
        assert_eq!(ctrlr.create_namespace(&small), Ok(nsid));
    }
    assert_eq!(status_code(ctrlr.create_namespace(&small).unwrap_err()), 0x16, "NN 4: no identifier left");
    assert_eq!(status_code(ctrlr.attach_namespace(1, &[me]).unwrap_err()), 0x18, "already attached");
    assert_eq!(status_code(ctrlr.detach_namespace(3, &[me]).unwrap_err()), 0x1a, "not attached");
    assert_eq!(status_code(ctrlr.attach_namespace(3, &[me + 1]).unwrap_err()), 0x1c, "controller list");
    ctrlr.delete_namespace(ALL_NAMESPACES).unwrap();
    assert_eq!(ctrlr.allocated_namespaces(0).unwrap().iter().count(), 0);
    assert_eq!(active(&ctrlr), Vec::<u32>::new());
}

/// Bad input is refused before anything is sent.
#[test]
fn bad_input_sends_nothing() {
    let sim = sim();
    let mut ctrlr = attach(&sim);
    let sent = sim.stats().admin_commands;
    let list = Some(Error::InvalidArgument(Argument::ControllerList));
    assert_eq!(ctrlr.attach_namespace(1, &[]).err(), list);
    assert_eq!(ctrlr.detach_namespace(1, &[]).err(), list);
    assert_eq!(ctrlr.detach_namespace(1, &[1; 2048]).err(), list);
    let nsid = Some(Error::InvalidArgument(Argument::NamespaceId));
    assert_eq!(ctrlr.attach_namespace(0, &[1]).err(), nsid);
    assert_eq!(ctrlr.detach_namespace(ALL_NAMESPACES, &[1]).err(), nsid);
    assert_eq!(ctrlr.delete_namespace(0).err(), nsid);
    assert_eq!(ctrlr.attached_controllers(0, 0).err(), nsid);
    let size = Some(Error::InvalidArgument(Argument::NamespaceSize));
    assert_eq!(ctrlr.create_namespace(&NamespaceDescription::new(0)).err(), size);
    assert_eq!(ctrlr.create_namespace(&NamespaceDescription::new(8).with_capacity(9)).err(), size);
    assert_eq!(sim.stats().admin_commands, sent, "nothing was sent");

    let without = Sim::new(SimConfig::default());
    without.set_lies(IdentifyLies { oacs: Some(0x0012), ..IdentifyLies::default() });
    let mut ctrlr = attach(&without);
    let sent = without.stats().admin_commands;
    let unsupported = Some(Error::Unsupported(Feature::NamespaceManagement));
    assert_eq!(ctrlr.create_namespace(&NamespaceDescription::new(8)).err(), unsupported);
    assert_eq!(ctrlr.attach_namespace(1, &[1]).err(), unsupported);
    assert_eq!(ctrlr.allocated_namespaces(0).err(), unsupported);
    assert_eq!(without.stats().admin_commands, sent, "nothing was sent");
}
