//! The contract between the `nvme-nostd` driver and the system it runs on.
//!
//! An operating system that embeds the driver implements one trait, [`Hal`], for
//! one controller: register access to the controller's mapped BAR0, DMA memory,
//! sharing of caller buffers with the device, and a monotonic clock. Everything
//! else (PCI enumeration, mapping the BAR, choosing where DMA memory comes from) is
//! the back-end's business and stays out of the driver.
//!
//! Every method documents two contracts, in the style of `virtio-drivers`:
//! *Implementation safety* is what the back-end must guarantee, *Safety* is what
//! the driver (the caller) guarantees.
#![no_std]
#![deny(missing_docs, unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod mmio;

pub use mmio::MmioRegion;

use core::fmt;
use core::ptr::NonNull;
use core::time::Duration;

/// The size of a page of DMA memory handed out by [`Hal::dma_alloc`], in bytes.
pub const PAGE_SIZE: usize = 4096;

/// An address as the device sees it: a physical address on bare metal, an I/O
/// virtual address behind an IOMMU.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct DeviceAddr(pub u64);

impl DeviceAddr {
    /// The address `bytes` further on.
    pub const fn offset(self, bytes: u64) -> DeviceAddr {
        DeviceAddr(self.0.wrapping_add(bytes))
    }
}

impl fmt::Debug for DeviceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceAddr({:#x})", self.0)
    }
}

/// Which way data moves between memory and the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The device reads the memory (a write command).
    ToDevice,
    /// The device writes the memory (a read command).
    FromDevice,
    /// The device may read and write the memory.
    Bidirectional,
}

/// A region of DMA memory: contiguous for the CPU and for the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaRegion {
    /// Where the CPU reaches the memory.
    pub vaddr: NonNull<u8>,
    /// Where the device reaches the same memory.
    pub daddr: DeviceAddr,
    /// Length in pages of [`PAGE_SIZE`] bytes.
    pub pages: usize,
}

// SAFETY: a DmaRegion only describes memory (addresses and a length); it
// gives no access by itself, so moving or sharing the description between
// threads is harmless. Whoever dereferences `vaddr` must own the memory.
unsafe impl Send for DmaRegion {}
// SAFETY: as above.
unsafe impl Sync for DmaRegion {}

impl DmaRegion {
    /// Length in bytes.
    pub const fn len(&self) -> usize {
        self.pages * PAGE_SIZE
    }

    /// True when the region has no pages.
    pub const fn is_empty(&self) -> bool {
        self.pages == 0
    }
}

/// What went wrong in a back-end, as the driver can act on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HalErrorKind {
    /// No DMA memory or mapping space is left.
    NoMemory,
    /// The buffer cannot be made visible to the device (for example, it is not
    /// contiguous in device space, or the IOMMU refused the mapping).
    MapFailed,
    /// The back-end cannot do this at all.
    Unsupported,
}

/// An error from a back-end. Back-ends with richer errors keep them to themselves
/// (or log them) and hand the driver this small, matchable value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HalError {
    kind: HalErrorKind,
    detail: &'static str,
}

impl HalError {
    /// An error of `kind`, with a short static description.
    pub const fn new(kind: HalErrorKind, detail: &'static str) -> Self {
        HalError { kind, detail }
    }

    /// The kind of error, for generic code to match on.
    pub const fn kind(&self) -> HalErrorKind {
        self.kind
    }

    /// The back-end's description.
    pub const fn detail(&self) -> &'static str {
        self.detail
    }
}

impl fmt::Display for HalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.detail)
    }
}

/// What an operating system provides to drive one NVMe controller.
///
/// One value of this trait stands for one controller: its register window (BAR0)
/// plus access to the system's DMA memory and clock. Implementations are usually
/// small handles (a pointer to the mapped BAR and a reference to a shared frame
/// allocator).
///
/// # Implementation safety
///
/// The driver hands the device addresses that this trait returns and lets the
/// device read and write memory through them. An implementation must make sure
/// that every address it returns reaches exactly the memory it describes, for as
/// long as the contract of the method says, and that register accesses reach the
/// controller's BAR0. A wrong answer here is memory corruption, which is why the
/// trait is `unsafe` to implement.
pub unsafe trait Hal {
    /// Reads the 32-bit register at byte `offset` of BAR0.
    ///
    /// # Implementation safety
    ///
    /// One volatile 32-bit read of the register. An offset outside the BAR (the
    /// driver never asks for one) must not touch other memory: return all ones.
    fn read32(&self, offset: usize) -> u32;

    /// Writes the 32-bit register at byte `offset` of BAR0.
    ///
    /// # Safety
    ///
    /// A register write can start DMA (a doorbell, CC.EN, ASQ/ACQ): the caller
    /// guarantees that every memory address the write makes the device use
    /// (queue entries, PRPs) is memory lent to the device. The driver is the
    /// only caller that can guarantee this for a controller it drives.
    ///
    /// # Implementation safety
    ///
    /// One volatile 32-bit write; an offset outside the BAR is ignored.
    unsafe fn write32(&self, offset: usize, value: u32);

    /// Reads the 64-bit register at byte `offset` of BAR0 (CAP, ASQ, ACQ).
    ///
    /// The default reads the low half and then the high half, which the NVMe
    /// specification (section 3.1.2) allows for 64-bit registers.
    fn read64(&self, offset: usize) -> u64 {
        let lo = self.read32(offset) as u64;
        let hi = self.read32(offset + 4) as u64;
        lo | (hi << 32)
    }

    /// Writes the 64-bit register at byte `offset` of BAR0 (ASQ, ACQ).
    ///
    /// The default writes the low half and then the high half.
    ///
    /// # Safety
    ///
    /// As for [`write32`](Hal::write32).
    unsafe fn write64(&self, offset: usize, value: u64) {
        // SAFETY: forwarded from the caller.
        unsafe {
            self.write32(offset, value as u32);
            self.write32(offset + 4, (value >> 32) as u32);
        }
    }

    /// Allocates `pages` pages of zeroed DMA memory, contiguous for the CPU and
    /// for the device, aligned to [`PAGE_SIZE`].
    ///
    /// # Implementation safety
    ///
    /// The memory is valid for reads and writes of `pages * PAGE_SIZE` bytes at
    /// `vaddr` and at `daddr` for the device until it is passed to
    /// [`dma_free`](Hal::dma_free); nothing else uses it meanwhile; it is zeroed.
    fn dma_alloc(&self, pages: usize) -> Result<DmaRegion, HalError>;

    /// Returns DMA memory to the system.
    ///
    /// # Safety
    ///
    /// `region` came from [`dma_alloc`](Hal::dma_alloc) of this HAL and is freed
    /// once; the device no longer reads or writes it (the driver has deleted the
    /// queues that used it, or disabled the controller); the CPU no longer uses it.
    unsafe fn dma_free(&self, region: DmaRegion);

    /// Makes `len` bytes at `vaddr` visible to the device and returns the device
    /// address of the first byte. The bytes must be contiguous in device space.
    ///
    /// For [`Direction::ToDevice`] the device will read the buffer; for
    /// [`Direction::FromDevice`] it will write it. A back-end that bounces the
    /// data copies it in here (to the device) or in [`unshare`](Hal::unshare)
    /// (from the device).
    ///
    /// # Safety
    ///
    /// `vaddr` is valid for reads and writes of `len` bytes and stays so, without
    /// other access from the CPU, until [`unshare`](Hal::unshare) is called with
    /// the same arguments.
    ///
    /// # Implementation safety
    ///
    /// The returned address reaches exactly these bytes (or a bounce copy of
    /// them) for the device until `unshare`. A range that cannot be described by
    /// one contiguous device range returns [`HalErrorKind::MapFailed`].
    unsafe fn share(
        &self,
        vaddr: NonNull<u8>,
        len: usize,
        direction: Direction,
    ) -> Result<DeviceAddr, HalError>;

    /// Revokes what [`share`](Hal::share) granted, once the device is done.
    ///
    /// # Safety
    ///
    /// The arguments are those of one earlier successful `share` (and its result),
    /// not yet unshared, and the device no longer accesses the buffer.
    unsafe fn unshare(&self, vaddr: NonNull<u8>, len: usize, daddr: DeviceAddr, direction: Direction);

    /// Monotonic time since an arbitrary fixed point.
    ///
    /// The driver reads time only here, so a simulator can drive virtual time.
    fn now(&self) -> Duration;

    /// Waits for about `duration` (at least; a simulator advances its clock).
    /// Used only on slow paths: controller enable and disable, admin commands.
    fn delay(&self, duration: Duration);

    /// Orders the CPU's writes to DMA memory (a submission entry, a PRP list, a
    /// write buffer) before the following MMIO doorbell write.
    ///
    /// The default is a sequentially consistent fence, which on x86_64 is enough;
    /// architectures whose fences do not order device memory (e.g. `dmb ish` on
    /// aarch64) override it with the stronger barrier.
    fn wmb(&self) {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }

    /// Orders the read of a completion entry's phase tag before the reads of the
    /// rest of the entry and of the data the device wrote.
    fn rmb(&self) {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }
}
