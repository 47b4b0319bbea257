//! A mapped register window, read and written through `volatile`.

use core::ptr::NonNull;
use volatile::VolatilePtr;

/// A mapped MMIO window (an NVMe controller's BAR0), for back-ends to build their
/// [`Hal`](crate::Hal) register methods on.
///
/// Registers are reached only through volatile pointers, never through Rust
/// references to device memory. Accesses outside the window or not naturally
/// aligned are refused: reads return all ones (what a missing device returns),
/// writes are dropped.
#[derive(Debug, Clone, Copy)]
pub struct MmioRegion {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is a plain address range; concurrent volatile accesses to
// device registers are what the device defines them to be, not a data race on
// Rust memory.
unsafe impl Send for MmioRegion {}
// SAFETY: as above.
unsafe impl Sync for MmioRegion {}

impl MmioRegion {
    /// A window of `len` bytes of device registers mapped at `base`.
    ///
    /// # Safety
    ///
    /// `base..base + len` is mapped (uncached) to the device's registers for as
    /// long as this value or a copy of it is used, and no Rust reference points
    /// into it.
    pub const unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        MmioRegion { base, len }
    }

    /// Length of the window in bytes.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// True for a window of no bytes.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn ptr<T>(&self, offset: usize) -> Option<NonNull<T>> {
        let size = core::mem::size_of::<T>();
        if !offset.is_multiple_of(size) || offset.checked_add(size)? > self.len {
            return None;
        }
        // SAFETY: offset + size <= len, so the pointer stays inside the window
        // that `new`'s caller promised is mapped.
        Some(unsafe { self.base.add(offset) }.cast())
    }

    /// Volatile 32-bit read at `offset`.
    #[inline]
    pub fn read32(&self, offset: usize) -> u32 {
        match self.ptr::<u32>(offset) {
            // SAFETY: inside the mapped window and aligned (checked by `ptr`).
            Some(p) => unsafe { VolatilePtr::new(p) }.read(),
            None => u32::MAX,
        }
    }

    /// Volatile 32-bit write at `offset`.
    ///
    /// # Safety
    ///
    /// The write may make the device access memory (a doorbell, a queue base
    /// address): every address it makes the device use is lent to the device.
    #[inline]
    pub unsafe fn write32(&self, offset: usize, value: u32) {
        if let Some(p) = self.ptr::<u32>(offset) {
            // SAFETY: inside the mapped window and aligned (checked by `ptr`).
            unsafe { VolatilePtr::new(p) }.write(value)
        }
    }

    /// Volatile 64-bit read at `offset`.
    #[inline]
    pub fn read64(&self, offset: usize) -> u64 {
        match self.ptr::<u64>(offset) {
            // SAFETY: inside the mapped window and aligned (checked by `ptr`).
            Some(p) => unsafe { VolatilePtr::new(p) }.read(),
            None => u64::MAX,
        }
    }

    /// Volatile 64-bit write at `offset`.
    ///
    /// # Safety
    ///
    /// As for [`write32`](MmioRegion::write32).
    #[inline]
    pub unsafe fn write64(&self, offset: usize, value: u64) {
        if let Some(p) = self.ptr::<u64>(offset) {
            // SAFETY: inside the mapped window and aligned (checked by `ptr`).
            unsafe { VolatilePtr::new(p) }.write(value)
        }
    }
}
