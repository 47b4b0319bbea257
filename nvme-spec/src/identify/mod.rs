//! Identify data structures returned by the Identify admin command (opcode 06h).
//!
//! Layouts follow the NVM Express Base Specification 2.0, section 5.17.2
//! ("Identify Controller Data Structure", CNS 01h, and "Active Namespace ID
//! list", CNS 02h; 1.4: section 5.15.2), and the NVM Command Set
//! Specification 1.0, section 4.1.5.1 ("Identify Namespace Data Structure",
//! CNS 00h; 1.4: section 5.15.2.1).
//!
//! Every structure here is exactly 4096 bytes, `#[repr(C)]`, built only from
//! little-endian integers, byte arrays and bitfields of integers placed at
//! their natural alignment; `zerocopy` proves that there is no padding and
//! that any 4096-byte buffer is a valid value. Sizes and field offsets are
//! checked at compile time against the figures.
//!
//! The contents come from the device and are untrusted: the accessors never
//! index out of range and never panic, whatever the bytes say.

mod controller;
mod lists;
mod namespace;
mod power;

pub use controller::{
    Cmic, Ctratt, Fna, Frmw, Fuses, IdentifyController, Lpa, Oacs, Oaes, Oncs, QueueEntrySizes, Sgls, Vwc,
};
pub use lists::{ActiveNamespaceList, ControllerList};
pub use namespace::{
    Dlfeat, Dpc, Dps, Flbas, IdentifyNamespace, IdentifyNamespaceNvm, LbaFormat, Mc, Nmic, Nsfeat,
};
pub use power::{PowerStateDescriptor, PsdActive, PsdFlags, PsdIdle};

/// Size in bytes of every Identify data structure.
pub const IDENTIFY_DATA_SIZE: usize = 4096;

/// Checks the size and field offsets of a wire structure at compile time.
macro_rules! assert_layout {
    ($ty:ty, $size:expr, { $($field:ident : $off:expr),* $(,)? }) => {
        const _: () = {
            assert!(core::mem::size_of::<$ty>() == $size, concat!(stringify!($ty), " has the wrong size"));
            $(
                assert!(
                    core::mem::offset_of!($ty, $field) == $off,
                    concat!(stringify!($ty), "::", stringify!($field), " is at the wrong offset")
                );
            )*
        };
    };
}
pub(crate) use assert_layout;

/// Trims trailing ASCII spaces and NUL bytes from a fixed-width string field.
pub fn trim_padding(bytes: &[u8]) -> &[u8] {
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b' ' | 0) {
        end -= 1;
    }
    &bytes[..end]
}

/// Interprets device-provided bytes as text, or `"?"` if they are not UTF-8.
pub fn as_str(bytes: &[u8]) -> &str {
    core::str::from_utf8(bytes).unwrap_or("?")
}

/// Reads a little-endian 128-bit counter.
pub(crate) const fn le_u128(bytes: &[u8; 16]) -> u128 {
    u128::from_le_bytes(*bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_helpers() {
        assert_eq!(trim_padding(b"ab  \0 \0"), b"ab");
        assert_eq!(trim_padding(b"   "), b"");
        assert_eq!(trim_padding(b" a b "), b" a b");
        assert_eq!(as_str(b"ok"), "ok");
        assert_eq!(as_str(&[0xc3]), "?");
    }
}
