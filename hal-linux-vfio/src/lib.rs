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
//! # No-IOMMU mode
//!
//! On a machine without an IOMMU, Linux can still hand a device to vfio-pci
//! in its *no-IOMMU mode* (`vfio.enable_unsafe_noiommu_mode=1`; the kernel
//! needs `CONFIG_VFIO_NOIOMMU`, which Debian's lack). The device then sits
//! in a group of its own, `/dev/vfio/noiommu-N`, and reads and writes
//! physical addresses with nothing to contain a wrong one: **a bug in the
//! driver or a fault in the device can corrupt any memory of the machine.**
//! It is for development and for embedded systems without an IOMMU, not for
//! production; [`VfioHal::open`] prints a warning ([`NO_IOMMU_WARNING`]) on
//! standard error, and [`VfioOptions::with_no_iommu`]`(false)` refuses such
//! a device. This back-end, like SPDK:
//!
//! - takes DMA memory only from 2 MiB hugepages (each physically
//!   contiguous, never swapped, and moved by the kernel only for memory
//!   hot-unplug, contiguous allocations (CMA) or an explicit `move_pages`:
//!   a residual risk no-IOMMU mode cannot remove, as in DPDK), and gives the
//!   device their physical addresses, read from `/proc/self/pagemap` (which
//!   shows them to root only); an allocation above 2 MiB takes hugepages
//!   that lie together in physical memory, picked from a window of them and
//!   moved into one virtual range (`mremap`, Linux 5.16 and later);
//! - copies every other buffer through a *bounce buffer* of that memory
//!   (the way Linux's swiotlb does): in when it is shared (for reads too, so
//!   that bytes the device does not write come back unchanged), and back out
//!   when the device is done with it. Ordinary pages cannot be handed to the
//!   device: the kernel may move them at any time, and the device would not
//!   follow;
//! - refuses [`VfioHal::register`], which needs an IOMMU.
//!
//! It needs root (`CAP_SYS_RAWIO` to open the group, `CAP_SYS_ADMIN` for
//! the physical addresses) and reserved hugepages
//! (`echo 64 > /proc/sys/vm/nr_hugepages`).
//!
//! # What it does not do yet
//!
//! - The iommufd interface (`/dev/iommu`, Linux 6.2) and VFIO's device files
//!   (`/dev/vfio/devices/vfioN`, Linux 6.6): the type1v2 container used
//!   here works on the kernels people run, including Debian 12's 6.1 (the
//!   test guest's), which has neither. (Kernels before 5.4 report no usable
//!   IOVA ranges: the back-end then uses 1 MiB to 512 GiB less the x86
//!   interrupt window.)
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
pub use hal::{
    bound_driver, canonical_address, nvme_addresses, VfioHal, VfioMapping, VfioOptions, NO_IOMMU_WARNING,
};
