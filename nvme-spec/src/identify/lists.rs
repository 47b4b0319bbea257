//! Namespace identifier lists (CNS 02h and the others that share the layout).

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

#[cfg(test)]
mod tests {
    use super::*;

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
