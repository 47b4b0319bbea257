//! A bare-metal x86_64 back-end for `nvme-nostd`: PCI enumeration and BAR
//! assignment, a DMA frame pool over a static region, a TSC clock, COM1 serial
//! output and QEMU's `isa-debug-exit`.
//!
//! It assumes what a small kernel usually has: memory identity-mapped (or
//! direct-mapped at a fixed offset, see [`DmaPool::new`] and
//! [`BareMetalHal::new`]), interrupts not needed (the driver polls), and the
//! controller's BAR inside the mapped range.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs, unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod bus;
pub mod claim;
pub mod clock;
pub mod dma;
pub mod exit;
pub mod hal;
pub mod pci;
pub mod serial;

pub use bus::BareMetalBus;
pub use claim::{claim, Claim};
pub use clock::TscClock;
pub use dma::DmaPool;
pub use hal::{BareMetalHal, LinearMap};
