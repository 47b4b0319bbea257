//! The `nvme-nostd` driver in Linux user space, through VFIO.
//!
//! [`VfioHal`] implements [`hal_traits::Hal`] for one NVMe controller that
//! is bound to `vfio-pci`: its IOMMU group joins a container with the type1
//! IOMMU, BAR0 is mapped into this process, and DMA memory and caller
//! buffers reach the device at I/O virtual addresses this back-end chooses
//! inside the ranges the IOMMU reports (see [`dma`](crate#dma-memory)).
//!
//! ```no_run
//! use hal_linux_vfio::{VfioHal, VfioOptions};
//! use nvme_nostd::{Controller, ControllerOptions};
//!
//! let hal = VfioHal::open("0000:00:03.0", VfioOptions::default())?;
//! let ctrlr = Controller::new(hal, ControllerOptions::default())?;
//! println!("{}", String::from_utf8_lossy(ctrlr.identify().model()).trim_end());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # DMA memory
//!
//! DMA memory comes in chunks of 2 MiB, from hugepages where the system has
//! them reserved, each mapped into the IOMMU once; buffers inside a chunk
//! (every `DmaBuffer`) are translated without a system call. Any other buffer
//! is mapped page by page when the driver shares it and unmapped when it is
//! unshared: two `ioctl`s per page per I/O, so hot paths use `DmaBuffer`s, or
//! memory of the application's own that it registered ahead of time
//! ([`VfioHal::register`], SPDK's `spdk_mem_register`): mapped once, and
//! translated per I/O without a system call.
//!
//! # What it does not do yet
//!
//! - The iommufd interface (`/dev/iommu`, Linux 6.2) and VFIO's device files
//!   (`/dev/vfio/devices/vfioN`, Linux 6.6): the type1v2 container used
//!   here works on the kernels people run, including Debian 12's 6.1 (the
//!   test guest's), which has neither. (Kernels before 5.4 report no usable
//!   IOVA ranges: the back-end then uses 1 MiB to 512 GiB less the x86
//!   interrupt window.)
//! - VFIO's no-IOMMU mode (physical addresses from `/proc/self/pagemap`):
//!   Debian's kernels are built without it, so it could not be tested here.
#![deny(missing_docs, unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod bind;
mod dma;
mod error;
mod hal;
mod iova;
pub mod show;
mod sys;
pub mod tool;

pub use bind::{bind_kernel, bind_vfio, in_use, BindError};
pub use error::VfioError;
pub use hal::{bound_driver, canonical_address, nvme_addresses, VfioHal, VfioOptions};
