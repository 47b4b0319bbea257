//! Identify Controller / Namespace / active list / identification descriptors
//! parsed from arbitrary bytes: nothing may panic, and the namespace checks
//! must refuse every geometry they cannot trust.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvme_nostd::fuzzing::{csi_from_descriptors, namespace};
use nvme_nostd::spec::identify::{as_str, ActiveNamespaceList, IdentifyController, IdentifyNamespace};
use nvme_nostd::spec::ids::Csi;

fuzz_target!(|data: &[u8]| {
    let mut page = [0u8; 4096];
    let n = data.len().min(4096);
    page[..n].copy_from_slice(&data[..n]);

    let c = IdentifyController::from_bytes(&page);
    let _ = (as_str(c.serial()), as_str(c.model()), as_str(c.firmware()), as_str(c.subnqn()));
    let _ = (c.version(), c.max_data_transfer_bytes(4096), c.tnvmcap(), c.power_states().len());
    let _ = (c.sqes.required(), c.sqes.maximum(), c.cqes.required(), c.cqes.maximum(), c.oncs.copy());

    let id = IdentifyNamespace::from_bytes(&page);
    let _ = id.lba_formats().len();
    let csi = Csi(data.get(4096).copied().unwrap_or(0));
    let mdts = data.get(4097).map(|m| 4096usize.checked_shl(*m as u32).unwrap_or(usize::MAX));
    if let Ok(ns) = namespace(1, &id, csi, mdts) {
        // Accepted geometry must be sane.
        assert!((512..=65536).contains(&ns.block_size()));
        assert!(ns.block_size().is_power_of_two());
        assert!(ns.blocks() > 0);
        let _ = ns.size_bytes();
        let _ = ns.unsupported_reason();
        // Any accepted metadata format: layouts and host-side protection
        // information never panic.
        let blocks = u32::from(data.get(4098).copied().unwrap_or(1));
        let _ = (ns.buffer_bytes(u32::MAX, false), ns.buffer_bytes(blocks, true));
        let small = blocks.min(4);
        let mut buf = vec![0u8; ns.buffer_bytes(small, false).min(1 << 20)];
        let _ = nvme_nostd::fill_protection_information(&ns, small, &mut buf, 0, 0);
        let format = id.current_lba_format().expect("accepted namespaces have a format");
        assert_eq!(format.data_size(), Some(ns.block_size()));
    }

    let list = ActiveNamespaceList::from_bytes(&page);
    assert!(list.iter().count() <= 1024);
    let _ = csi_from_descriptors(&page);
    let _ = csi_from_descriptors(data);
});
