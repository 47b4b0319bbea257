//! Namespace identifier lists (CNS 02h and the others that share the layout),
//! and the Controller List (CNS 12h, 13h; the data of Namespace Attachment).

use super::IDENTIFY_DATA_SIZE;
use core::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Active Namespace ID list (CNS 02h): up to 1024 NSIDs in increasing order,
/// terminated by the first zero entry. 4096 bytes.
#[repr(C)]
#[derive(Clone, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ActiveNamespaceList(pub [u32; 1024]);

const _: () = assert!(core::mem::size_of::<ActiveNamespaceList>() == IDENTIFY_DATA_SIZE);

impl ActiveNamespaceList {
    /// Decodes the list from the 4096 bytes returned by the device.
    pub const fn from_bytes(bytes: &[u8; IDENTIFY_DATA_SIZE]) -> Self {
        zerocopy::transmute!(*bytes)
    }

    /// An empty list (all entries zero).
    pub const fn zeroed() -> Self {
        Self([0; 1024])
    }

    /// The namespace IDs in the list, stopping at the first zero entry.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied().take_while(|&nsid| nsid != 0)
    }
}

impl Default for ActiveNamespaceList {
    fn default() -> Self {
        Self::zeroed()
    }
}

impl fmt::Debug for ActiveNamespaceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Controller List (NVMe 1.4, "Controller List Format"): a count, then up
/// to 2047 controller identifiers in increasing order. 4096 bytes. Identify
/// returns it (CNS 12h, 13h) and Namespace Attachment takes it.
#[repr(C)]
#[derive(Clone, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ControllerList {
    /// Number of Identifiers.
    pub count: u16,
    /// The controller identifiers; only the first `count` mean anything.
    pub ids: [u16; 2047],
}

const _: () = assert!(core::mem::size_of::<ControllerList>() == IDENTIFY_DATA_SIZE);

impl ControllerList {
    /// The most identifiers a list holds.
    pub const CAPACITY: usize = 2047;

    /// Decodes the list from the 4096 bytes returned by the device.
    pub const fn from_bytes(bytes: &[u8; IDENTIFY_DATA_SIZE]) -> Self {
        zerocopy::transmute!(*bytes)
    }

    /// A list of `ids` (at most [`CAPACITY`](Self::CAPACITY); `None` beyond).
    pub fn of(ids: &[u16]) -> Option<Self> {
        let mut list = ControllerList { count: u16::try_from(ids.len()).ok()?, ids: [0; 2047] };
        list.ids.get_mut(..ids.len())?.copy_from_slice(ids);
        Some(list)
    }

    /// The identifiers: the first `count`, at most 2047 whatever the count
    /// says.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.ids.iter().copied().take(usize::from(self.count))
    }
}

impl fmt::Debug for ControllerList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_list() {
        let list = ControllerList::of(&[1, 7]).unwrap();
        let bytes = list.as_bytes();
        assert_eq!(&bytes[..6], &[2, 0, 1, 0, 7, 0]);
        assert!(bytes[6..].iter().all(|&b| b == 0));
        assert!(ControllerList::from_bytes(bytes.try_into().unwrap()).iter().eq([1, 7]));
        assert!(ControllerList::of(&[0; 2048]).is_none());
        assert_eq!(ControllerList::of(&[3; 2047]).unwrap().iter().count(), 2047);
        let lying = ControllerList::from_bytes(&[0xff; 4096]);
        assert_eq!(lying.iter().count(), 2047, "a count above 2047 is clamped");
    }

    #[test]
    fn active_namespace_list() {
        let mut b = [0u8; 4096];
        for (i, nsid) in [1u32, 2, 7, 0, 9].iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&nsid.to_le_bytes());
        }
        let list = ActiveNamespaceList::from_bytes(&b);
        assert!(list.iter().eq([1, 2, 7]), "entries after the terminator are ignored");
        assert_eq!(ActiveNamespaceList::default().iter().count(), 0);

        let full = ActiveNamespaceList::from_bytes(&[0x01; 4096]);
        assert_eq!(full.iter().count(), 1024);
        assert!(full.iter().all(|n| n == 0x0101_0101));
    }
}
