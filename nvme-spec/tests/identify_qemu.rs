//! Identify data captured from QEMU 7.2's NVMe controller (`-device
//! nvme,serial=deadbeef` with a 64 MiB raw drive), dumped by the demo kernel
//! with `-append dump-identify`, parsed by these layouts.

use nvme_spec::identify::{as_str, IdentifyController, IdentifyNamespace};

const CONTROLLER: &[u8; 4096] = include_bytes!("fixtures/qemu-7.2-identify-controller.bin");
const NAMESPACE: &[u8; 4096] = include_bytes!("fixtures/qemu-7.2-identify-namespace-1.bin");

#[test]
fn qemu_identify_controller() {
    let id = IdentifyController::from_bytes(CONTROLLER);
    assert_eq!(id.vid, 0x1b36);
    assert_eq!(id.ssvid, 0x1af4);
    assert_eq!(as_str(id.serial()), "deadbeef");
    assert_eq!(as_str(id.model()), "QEMU NVMe Ctrl");
    assert_eq!(as_str(id.firmware()), "7.2.22");
    assert_eq!(id.mdts, 7);
    assert_eq!(id.version(), (1, 4, 0));
    assert_eq!(id.nn, 256);
    assert_eq!((id.sqes.into_bits(), id.cqes.into_bits()), (0x66, 0x44));
    assert_eq!((id.sqes.required(), id.cqes.required()), (6, 4), "64 and 16-byte entries");
    // ONCS 0x15d: compare, DSM, write zeroes, save/select, timestamp, copy
    // (QEMU executes Verify without advertising it).
    assert_eq!(id.oncs.into_bits(), 0x15d);
    assert!(id.oncs.compare() && id.oncs.dataset_management() && id.oncs.write_zeroes() && id.oncs.copy());
    assert!(!id.oncs.verify());
    assert!(!id.oncs.reservations());
    assert!(id.oacs.format() && id.oacs.namespace_management() && id.oacs.doorbell_buffer_config());
    assert!(id.sgls.supported());
    assert!(as_str(id.subnqn()).starts_with("nqn.2019-08.org.qemu:"));
}

#[test]
fn qemu_identify_namespace() {
    let ns = IdentifyNamespace::from_bytes(NAMESPACE);
    assert_eq!(ns.nsze, 64 << 20 >> 9);
    assert_eq!(ns.ncap, ns.nsze);
    assert_eq!(ns.nlbaf, 7, "eight formats, 0-based");
    assert_eq!(ns.format_index(), 0);
    assert!(!ns.flbas.extended());
    assert_eq!(ns.dps.pit(), 0);
    let f = ns.current_lba_format().expect("format 0 exists");
    assert_eq!((f.data_size(), f.ms()), (Some(512), 0));
    // QEMU offers 512 and 4096-byte formats, with 0, 8, 16 and 64 bytes of
    // metadata.
    let sizes: Vec<(Option<u32>, u16)> = ns.lbaf[..8].iter().map(|f| (f.data_size(), f.ms())).collect();
    assert!(sizes.contains(&(Some(4096), 0)));
    assert!(sizes.contains(&(Some(512), 8)));
}
