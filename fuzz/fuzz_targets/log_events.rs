//! Log pages and asynchronous event completions decoded from arbitrary
//! bytes: nothing may panic, Debug output of every page is total, and an
//! event's decision about which log page to read clears only a page the
//! specification pairs with its type, within that page's size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvme_nostd::spec::ids::{AsyncEventType, Lid};
use nvme_nostd::spec::log::{
    ChangedNamespaceList, CommandsSupportedAndEffects, DeviceSelfTest, ErrorInformation, FirmwareSlot,
    SmartHealth,
};
use nvme_nostd::AsyncEvent;
use std::fmt::Write;

fuzz_target!(|data: &[u8]| {
    let mut page = [0u8; 4096];
    let n = data.len().min(4096);
    page[..n].copy_from_slice(&data[..n]);
    let mut sink = String::new();

    let e = ErrorInformation::from_bytes(page[..64].try_into().unwrap());
    let _ = (e.is_valid(), e.status());
    let s = SmartHealth::from_bytes(page[..512].try_into().unwrap());
    let _ = (s.temperature(), s.data_units_read(), s.power_on_hours(), s.media_errors());
    let f = FirmwareSlot::from_bytes(page[..512].try_into().unwrap());
    let _ = (f.active_slot(), f.next_slot());
    for slot in 0..=u8::MAX {
        let r = f.revision(slot);
        assert!(r.is_none() || (1..=7).contains(&slot), "slot {slot} has no revision field");
    }
    let c = ChangedNamespaceList::from_bytes(&page);
    assert!(c.iter().count() <= 1024);
    assert!(!c.overflowed() || c.iter().count() == 0);
    let effects = CommandsSupportedAndEffects::from_bytes(&page);
    let t = DeviceSelfTest::from_bytes(page[..564].try_into().unwrap());
    assert!(t.iter().count() <= 20);
    let _ = write!(sink, "{e:?}{s:?}{f:?}{c:?}{effects:?}{t:?}");

    // Every four bytes an Asynchronous Event Request's completion DW0.
    for dw in data.chunks_exact(4) {
        let dw0 = u32::from_le_bytes(dw.try_into().unwrap());
        let event = AsyncEvent::from_completion(dw0);
        assert_eq!(event.raw, dw0);
        assert!(event.event_type.0 <= 7);
        assert!(!event.cleared);
        if let Some(len) = event.clearing_read() {
            let (lid, size) = match event.event_type {
                AsyncEventType::ERROR => (Lid::ERROR_INFORMATION, 64),
                AsyncEventType::SMART_HEALTH => (Lid::SMART_HEALTH, 512),
                AsyncEventType::NOTICE => (Lid::FIRMWARE_SLOT, 512),
                other => panic!("type {other:?} reads a log page"),
            };
            assert_eq!((event.log_page, len), (lid, size));
        }
        let _ = write!(sink, "{event:?}");
    }
});
