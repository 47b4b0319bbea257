//! Transport identifier parsing from arbitrary text: never a panic; what
//! parses prints as text that parses back to the same identifier, and the
//! order agrees with equality.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvme_nostd::TransportId;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else { return };
    let Ok(trid) = text.parse::<TransportId>() else { return };
    let printed = trid.to_string();
    let again: TransportId = printed.parse().expect("printed identifiers parse");
    assert_eq!(again, trid);
    assert_eq!(again.cmp(&trid), core::cmp::Ordering::Equal);
});
