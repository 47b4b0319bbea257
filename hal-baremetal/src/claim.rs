//! Exclusive claims on PCI functions: the token a [`BareMetalHal`] is built
//! from, handed out once per function until it is dropped.
//!
//! Two driver instances on one controller would re-point its admin queue under
//! each other's queue pairs, and the device would execute stale entries into
//! memory already handed back. A [`Claim`] makes that impossible from safe
//! code: [`claim`] refuses a function that is already claimed, the token is
//! neither `Clone` nor `Copy`, and dropping it (with the HAL that owns it)
//! releases the function.
//!
//! [`BareMetalHal`]: crate::BareMetalHal

use pci_types::PciAddress;
use spin::Mutex;

/// The most functions that can be claimed at once.
pub const MAX_CLAIMS: usize = 64;

static CLAIMED: Mutex<heapless::Vec<PciAddress, MAX_CLAIMS>> = Mutex::new(heapless::Vec::new());

/// Exclusive use of one PCI function, until dropped.
#[derive(Debug, PartialEq, Eq)]
pub struct Claim {
    address: PciAddress,
}

impl Claim {
    /// The function claimed.
    pub fn address(&self) -> PciAddress {
        self.address
    }
}

/// Claims the function at `address`, or `None` when it is claimed already
/// (or [`MAX_CLAIMS`] functions are).
pub fn claim(address: PciAddress) -> Option<Claim> {
    let mut claimed = CLAIMED.lock();
    if claimed.contains(&address) {
        return None;
    }
    claimed.push(address).ok()?;
    Some(Claim { address })
}

impl Drop for Claim {
    fn drop(&mut self) {
        CLAIMED.lock().retain(|a| *a != self.address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_is_claimed_once_at_a_time() {
        let a = PciAddress::new(0, 0x7e, 1, 0);
        let b = PciAddress::new(0, 0x7e, 2, 0);
        let first = claim(a).expect("free");
        assert!(claim(a).is_none(), "claimed twice");
        let other = claim(b).expect("another function is independent");
        drop(first);
        let again = claim(a).expect("released by drop");
        assert_eq!(again.address(), a);
        drop((again, other));
    }
}
