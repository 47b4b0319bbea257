//! The contract between the `nvme-nostd` driver and the system it runs on.
//!
//! An operating system that embeds the driver implements one trait, [`Hal`], for
//! one controller: register access to the controller's mapped BAR0, DMA memory,
//! sharing of caller buffers with the device, cache maintenance, memory
//! barriers and a clock. Everything else (PCI enumeration, mapping the BAR,
//! choosing where DMA memory comes from, IOMMU domains) is the back-end's
//! business and stays out of the driver, which sees PCI only through
//! [`pci::PciBus`]: the NVMe functions a back-end can reach, and a [`Hal`]
//! for one it claims (for probing).
//!
//! The contract is written for three kinds of back-end at once:
//! - a kernel on x86_64 with coherent DMA and an identity or linear map
//!   (`hal-baremetal`): sharing is address arithmetic, barriers are compiler
//!   fences;
//! - Linux user space through VFIO: DMA addresses are I/O virtual addresses,
//!   a share is an IOMMU mapping (an `ioctl` pair), so memory registered up
//!   front is translated without one ([`Hal::translate`]);
//! - a kernel on aarch64 or riscv64 without DMA coherence: buffers need cache
//!   maintenance ([`Hal::sync_for_device`], [`Hal::sync_for_cpu`]) and an
//!   alignment that keeps the device's writes off cache lines the CPU shares
//!   ([`Hal::DMA_ALIGNMENT`]), and the barriers must order normal memory
//!   against device memory ([`barrier`]).
//!
//! Every method documents two contracts, in the style of `virtio-drivers`:
//! *Implementation safety* is what the back-end must guarantee, *Safety* is what
//! the driver (the caller) guarantees.
#![no_std]
#![deny(missing_docs, unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod barrier;
pub mod faulty;
mod mmio;
pub mod pci;

pub use mmio::MmioRegion;

use core::fmt;
use core::ptr::NonNull;
use core::time::Duration;

/// The size of a page of DMA memory handed out by [`Hal::dma_alloc`], in bytes,
/// and the memory page size the driver programs into the controller (CC.MPS).
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

impl Direction {
    /// True when the device may write the memory.
    pub const fn device_writes(self) -> bool {
        !matches!(self, Direction::ToDevice)
    }
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

/// A memory BAR of the controller, mapped for the CPU, with the address the
/// BAR has on the bus ([`Hal::memory_bar`]): where the driver finds the
/// controller memory buffer (CMB) and tells the controller where it is.
#[derive(Clone, Copy, Debug)]
pub struct MemoryBar {
    /// The whole BAR, mapped uncached (or write-combined, with a
    /// [`Hal::barrier_before_doorbell`] that drains write-combining buffers).
    pub mmio: MmioRegion,
    /// The BAR's address on the bus (`pci_bus_address` in Linux terms): the
    /// driver programs it into CMBMSC.CBA, and the controller then treats
    /// addresses from there on as its own memory.
    pub bus: DeviceAddr,
}

/// A run of bytes that is contiguous in device space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceSegment {
    /// The device address of the first byte.
    pub addr: DeviceAddr,
    /// Length in bytes.
    pub len: usize,
}

/// Where a back-end reports the device segments of a buffer, in buffer order
/// ([`Hal::share`], [`Hal::translate`]).
///
/// The driver provides the sink, with a fixed capacity and no heap: it turns
/// the segments into PRP entries as they arrive, and checks that they can be
/// described that way (NVMe 1.4 section 4.3). A sink never fails a push: when
/// the segments do not fit, it remembers why, and the driver undoes the share
/// and reports the error to the request's owner.
pub trait SegmentSink {
    /// Takes the next segment of the buffer.
    fn push(&mut self, segment: DeviceSegment);
}

/// What went wrong in a back-end, as the driver can act on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HalErrorKind {
    /// No DMA memory or mapping space is left.
    NoMemory,
    /// The buffer cannot be made visible to the device (for example, it lies
    /// outside the memory the back-end can translate, or the IOMMU refused the
    /// mapping).
    MapFailed,
    /// The back-end cannot do this at all.
    Unsupported,
    /// The device is claimed by another driver (see "Exclusive ownership").
    Claimed,
    /// The device cannot be used: its BAR0 is missing, unmapped or too
    /// small, or it does not answer.
    Unusable,
    /// A back-end method panicked: the driver did not catch the panic, but
    /// reports it to a request it could not finish because of it (its
    /// buffer was leaked, never handed back, since the panicking call was
    /// to give it back).
    Panicked,
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

impl core::error::Error for HalError {}

/// Converts a tick count at `rate` ticks per second into a [`Duration`]
/// (saturating; `rate` 0 counts as 1). For the slow paths and
/// [`Hal::now`]'s default.
pub const fn ticks_to_duration(ticks: u64, rate: u64) -> Duration {
    let rate = if rate == 0 { 1 } else { rate };
    let secs = ticks / rate;
    let nanos = ((ticks % rate) as u128 * 1_000_000_000 / rate as u128) as u32;
    Duration::new(secs, nanos)
}

/// Converts a [`Duration`] into ticks at `rate` ticks per second, rounding up
/// and saturating at `u64::MAX`. The driver does this once per setting (a
/// timeout), never per I/O.
pub const fn duration_to_ticks(duration: Duration, rate: u64) -> u64 {
    let ticks = (duration.as_nanos() * rate as u128).div_ceil(1_000_000_000);
    if ticks > u64::MAX as u128 {
        u64::MAX
    } else {
        ticks as u64
    }
}

/// What an operating system provides to drive one NVMe controller.
///
/// One value of this trait stands for one controller: its register window
/// (BAR0) plus access to the system's DMA memory, cache maintenance and clock.
/// [`Controller::new`] takes it by value and owns it until the controller is
/// dropped.
///
/// # Implementation safety
///
/// The driver hands the device addresses that this trait returns and lets the
/// device read and write memory through them. An implementation must make sure
/// that every address it returns reaches exactly the memory it describes, for as
/// long as the contract of the method says, and that register accesses reach the
/// controller's BAR0. A wrong answer here is memory corruption, which is why the
/// trait is `unsafe` to implement.
///
/// **Exclusive ownership.** At most one value drives a given controller at a
/// time. A second driver instance on the same device would re-point the admin
/// queue under the first one's queue pairs, and the device would execute stale
/// entries into memory already handed back. So the type must not be `Clone` or
/// `Copy`, and safe code must not be able to make two values for one device:
/// construct values only through an `unsafe` constructor whose caller promises
/// exclusivity, or from a claim token that probing hands out once per device
/// (as `hal-baremetal` and `nvme-sim` do).
///
/// **Leaks outlive the value.** When the driver cannot prove that the device
/// stopped (it was removed, or could not be disabled), it leaks the memory the
/// device may still write instead of freeing it. Such memory (DMA regions and
/// shared buffers) must stay valid and reserved after the value is dropped:
/// do not free the DMA pool, unmap the IOMMU domain or release bounce buffers
/// in `Drop` while the device may still be bus-mastering (VFIO's reset on
/// close, or a disabled bus-master bit, are what make that safe).
///
/// **Interrupts.** The driver polls. A later version adds optional methods
/// (with defaults) for MSI-X vectors; nothing here assumes there are none.
///
/// [`Controller::new`]: https://docs.rs/nvme-nostd/latest/nvme_nostd/struct.Controller.html#method.new
pub unsafe trait Hal {
    /// What [`share`](Hal::share) hands back for [`unshare`](Hal::unshare):
    /// whatever the back-end needs to undo the share without a lookup table
    /// (an IOMMU mapping, a bounce slot), or `()` when there is nothing to
    /// undo.
    type Mapping;

    /// The alignment, in bytes, that the start and the length of every
    /// buffer the device writes must have. The driver refuses other buffers
    /// with a clear error before anything is submitted.
    ///
    /// 4 (a dword, what PRP entries need) on coherent systems. On a system
    /// without DMA coherence, the cache line size: invalidating a line that
    /// the buffer shares with other data would destroy that data, and a CPU
    /// write to the other part of the line could overwrite what the device
    /// wrote. Must be a power of two of at least 4.
    const DMA_ALIGNMENT: usize = 4;

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

    /// The memory BAR `index` (0 to 5) of the controller, for its controller
    /// memory buffer (the BAR that CMBLOC.BIR names, NVMe 1.4 section
    /// 3.1.11); `None` (the default) when the back-end does not map it, and
    /// the driver then keeps every queue in host memory.
    ///
    /// # Implementation safety
    ///
    /// `mmio` maps exactly the BAR (all of it, as sized), and stays mapped for
    /// as long as this HAL value lives; `bus` is the address the BAR is
    /// assigned on the bus, which no memory from
    /// [`dma_alloc`](Hal::dma_alloc), [`translate`](Hal::translate) or
    /// [`share`](Hal::share) uses as a device address (the controller would
    /// take such addresses for its own memory). Only the driver of this
    /// controller writes the BAR.
    fn memory_bar(&self, index: u8) -> Option<MemoryBar> {
        let _ = index;
        None
    }

    /// Allocates `pages` pages of zeroed DMA memory, contiguous for the CPU and
    /// for the device, aligned to [`PAGE_SIZE`]. The driver keeps its queues,
    /// PRP lists and identify pages here, and [`DmaBuffer`]s come from here.
    ///
    /// # Implementation safety
    ///
    /// The memory is valid for reads and writes of `pages * PAGE_SIZE` bytes at
    /// `vaddr` and at `daddr` for the device until it is passed to
    /// [`dma_free`](Hal::dma_free); nothing else uses it meanwhile; it is
    /// zeroed. It is *coherent*: a CPU write is visible to the device after
    /// [`barrier_before_doorbell`](Hal::barrier_before_doorbell), and a device
    /// write is visible to the CPU after
    /// [`barrier_after_phase`](Hal::barrier_after_phase), without cache
    /// maintenance: cacheable memory on a coherent system, memory mapped
    /// uncached on a system without DMA coherence. (Write-combined memory
    /// also needs a barrier that drains the write-combining buffers, `sfence`
    /// on x86_64, in `barrier_before_doorbell`; the default there is a
    /// compiler fence, right for write-back memory only.)
    ///
    /// [`DmaBuffer`]: https://docs.rs/nvme-nostd/latest/nvme_nostd/struct.DmaBuffer.html
    fn dma_alloc(&self, pages: usize) -> Result<DmaRegion, HalError>;

    /// Returns DMA memory to the system.
    ///
    /// # Safety
    ///
    /// `region` came from [`dma_alloc`](Hal::dma_alloc) of this HAL and is freed
    /// once; the device no longer reads or writes it (the driver has deleted the
    /// queues that used it, or disabled the controller, or never named it to
    /// the device); the CPU no longer uses it.
    unsafe fn dma_free(&self, region: DmaRegion);

    /// Translates a buffer that lies in memory the back-end made visible to
    /// the device ahead of time, reporting its device segments to `sink`, and
    /// returns true; returns false, pushing nothing, for any other buffer
    /// (the driver then calls [`share`](Hal::share)).
    ///
    /// This is the fast path for pre-registered memory (SPDK's memory map,
    /// hugepages a VFIO back-end mapped at start, and the HAL's own
    /// [`dma_alloc`](Hal::dma_alloc) memory, which is how a `DmaBuffer`
    /// reaches the device): a lookup, no system call, and nothing to undo.
    /// The default knows no such memory.
    ///
    /// # Implementation safety
    ///
    /// When it returns true, the segments reach exactly the bytes of
    /// `buffer`, in order, and the segments add up to `buffer.len()` bytes.
    /// The registration cannot be withdrawn while this HAL value lives (the
    /// driver may have any number of requests in flight on it; see also
    /// "Leaks outlive the value"). With `H: Sync`, queue pairs on several
    /// threads call this (and `share`, `unshare`, the sync hooks) at the same
    /// time.
    fn translate(&self, buffer: NonNull<[u8]>, sink: &mut dyn SegmentSink) -> bool {
        let _ = (buffer, sink);
        false
    }

    /// Makes a caller's buffer visible to the device, reporting the device
    /// segments it is made of to `sink` in buffer order, and returns what
    /// [`unshare`](Hal::unshare) needs to undo it.
    ///
    /// For [`Direction::ToDevice`] the device will read the buffer; for
    /// [`Direction::FromDevice`] it will write it. A back-end that bounces the
    /// data copies it into the bounce memory here (or in `sync_for_device`)
    /// and back in [`sync_for_cpu`](Hal::sync_for_cpu), not in `unshare`: the
    /// driver also undoes shares the device never saw (segments PRPs cannot
    /// describe) with a plain `unshare`, which must then leave the caller's
    /// buffer as it was. The driver calls
    /// [`sync_for_device`](Hal::sync_for_device) after this and before the
    /// device may access the buffer.
    ///
    /// Buffers are not page-aligned in general: two buffers that share a
    /// page (two 512-byte reads in one page, say) may be shared at the same
    /// time, and undoing one must not revoke the other. An IOMMU back-end
    /// that maps whole pages counts the users of each page (or maps each
    /// share at its own I/O virtual addresses).
    ///
    /// # Safety
    ///
    /// `buffer` is valid for reads and writes and stays so, without other
    /// access from the CPU, until [`unshare`](Hal::unshare) is called with the
    /// same buffer and direction and the returned mapping.
    ///
    /// # Implementation safety
    ///
    /// On success, the segments reported to `sink` reach exactly these bytes
    /// (or a bounce copy of them), in order and adding up to `buffer.len()`,
    /// until `unshare`. On error, nothing stays shared and nothing needs
    /// undoing (segments already pushed are ignored by the driver).
    unsafe fn share(
        &self,
        buffer: NonNull<[u8]>,
        direction: Direction,
        sink: &mut dyn SegmentSink,
    ) -> Result<Self::Mapping, HalError>;

    /// Revokes what [`share`](Hal::share) granted, once the device is done
    /// (after [`sync_for_cpu`](Hal::sync_for_cpu), or, for a share the device
    /// never saw, without it). Copies nothing back (see `share`).
    ///
    /// # Safety
    ///
    /// `buffer`, `direction` and `mapping` are those of one earlier successful
    /// `share` (its mapping is consumed here, so each is undone once), and the
    /// device no longer accesses the buffer.
    unsafe fn unshare(&self, buffer: NonNull<[u8]>, direction: Direction, mapping: Self::Mapping);

    /// Makes the CPU's view of a buffer visible to the device before the
    /// device accesses it: on a system without DMA coherence, cleans (writes
    /// back) the buffer's cache lines for [`Direction::ToDevice`], and cleans
    /// and invalidates them otherwise. Called after `share` or `translate`
    /// (and for [`DmaBuffer`]s) and before the doorbell write that lets the
    /// device see the command. The default does nothing, which is right on
    /// coherent systems.
    ///
    /// # Safety
    ///
    /// `buffer` is valid and the CPU does not touch it until the matching
    /// [`sync_for_cpu`](Hal::sync_for_cpu).
    ///
    /// # Implementation safety
    ///
    /// The maintenance has *completed* when this returns (on aarch64 a
    /// `dsb` after the `dc cvac`/`dc civac` loop; on riscv64 a fence after
    /// the `cbo` instructions): the barrier before the doorbell
    /// (`dmb oshst`, `fence ow, o`) orders memory accesses, not cache
    /// maintenance.
    ///
    /// [`DmaBuffer`]: https://docs.rs/nvme-nostd/latest/nvme_nostd/struct.DmaBuffer.html
    unsafe fn sync_for_device(&self, buffer: NonNull<[u8]>, direction: Direction) {
        let _ = (buffer, direction);
    }

    /// Makes what the device wrote visible to the CPU: on a system without
    /// DMA coherence, invalidates the buffer's cache lines for
    /// [`Direction::FromDevice`] and [`Direction::Bidirectional`]. Called once
    /// the device is done with the buffer (its command completed, or its
    /// queue was deleted or the controller disabled), before `unshare` and
    /// before the buffer goes back to its owner. The default does nothing.
    ///
    /// # Safety
    ///
    /// `buffer` was passed to [`sync_for_device`](Hal::sync_for_device) with
    /// the same direction, and the device no longer accesses it.
    ///
    /// # Implementation safety
    ///
    /// The maintenance has completed when this returns (as for
    /// `sync_for_device`), and a bouncing back-end has copied the device's
    /// bytes back into `buffer`.
    unsafe fn sync_for_cpu(&self, buffer: NonNull<[u8]>, direction: Direction) {
        let _ = (buffer, direction);
    }

    /// Orders the CPU's writes to DMA memory (a submission entry, a PRP list, a
    /// write buffer) before the following MMIO write of a doorbell.
    ///
    /// The default is [`barrier::before_doorbell`], correct for x86_64,
    /// aarch64 and riscv64.
    fn barrier_before_doorbell(&self) {
        barrier::before_doorbell()
    }

    /// Orders the read of a completion entry's phase tag before the reads of
    /// the rest of the entry and of the data the device wrote.
    ///
    /// The default is [`barrier::after_phase`], correct for x86_64, aarch64
    /// and riscv64.
    fn barrier_after_phase(&self) {
        barrier::after_phase()
    }

    /// Orders earlier writes to DMA memory before later reads of DMA memory
    /// as the device sees them: a shadow doorbell write before the read of
    /// its EventIdx. The default is [`barrier::full`].
    fn barrier_full(&self) {
        barrier::full()
    }

    /// A monotonic tick count, cheap to read (a cycle counter, a timer
    /// register). The driver reads it at most once per `poll` pass and keeps
    /// its I/O deadlines in ticks, so it never divides on the hot path.
    fn ticks(&self) -> u64;

    /// How many [`ticks`](Hal::ticks) make a second (at least 1).
    fn ticks_per_second(&self) -> u64;

    /// Monotonic time since an arbitrary fixed point, for the slow paths
    /// (controller enable and disable, admin commands). The default converts
    /// [`ticks`](Hal::ticks).
    ///
    /// The driver reads time only through this trait, so a simulator can
    /// drive virtual time.
    fn now(&self) -> Duration {
        ticks_to_duration(self.ticks(), self.ticks_per_second())
    }

    /// Waits for about `duration` (at least; a simulator advances its clock).
    /// Used only on slow paths: controller enable and disable, admin commands.
    fn delay(&self, duration: Duration);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_conversions() {
        assert_eq!(ticks_to_duration(1_500, 1_000), Duration::from_millis(1500));
        assert_eq!(ticks_to_duration(3, 2), Duration::from_millis(1500));
        assert_eq!(ticks_to_duration(7, 0), Duration::from_secs(7), "rate 0 counts as 1");
        assert_eq!(duration_to_ticks(Duration::from_millis(1500), 1_000), 1_500);
        assert_eq!(duration_to_ticks(Duration::from_nanos(1), 1_000), 1, "rounds up");
        assert_eq!(duration_to_ticks(Duration::MAX, 3_000_000_000), u64::MAX, "saturates");
        let rate = 2_995_000_000;
        for ms in [0u64, 1, 999, 30_000] {
            let t = duration_to_ticks(Duration::from_millis(ms), rate);
            let back = ticks_to_duration(t, rate);
            assert!(
                back >= Duration::from_millis(ms)
                    && back < Duration::from_millis(ms) + Duration::from_micros(1)
            );
        }
    }

    #[test]
    fn directions() {
        assert!(!Direction::ToDevice.device_writes());
        assert!(Direction::FromDevice.device_writes());
        assert!(Direction::Bidirectional.device_writes());
    }
}
