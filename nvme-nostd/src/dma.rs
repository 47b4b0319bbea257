//! Typed, bounds-checked access to DMA memory: the one place where the core
//! reads and writes memory that the device shares, and the two kinds of
//! ownership it has (freed on drop until the device is told about it, then
//! freed only with proof that the device is done).

use core::ptr::NonNull;
use hal_traits::{DeviceAddr, DmaRegion, Hal, HalError};

/// DMA memory the driver just allocated, that the device has never been told
/// about: freed when dropped. [`DmaAlloc::lend`] turns it into [`DmaMemory`]
/// at the moment a register or a command names it to the device.
pub(crate) struct DmaAlloc<'h, H: Hal> {
    hal: &'h H,
    memory: DmaMemory,
}

impl<'h, H: Hal> DmaAlloc<'h, H> {
    /// Allocates `pages` zeroed pages.
    pub(crate) fn new(hal: &'h H, pages: usize) -> Result<Self, HalError> {
        Ok(DmaAlloc { hal, memory: DmaMemory { region: hal.dma_alloc(pages)? } })
    }

    /// From now on the device may use the memory: it no longer frees itself,
    /// and its owner frees it only once the device is known to be done
    /// ([`DmaMemory::free`]), or leaks it.
    pub(crate) fn lend(self) -> DmaMemory {
        let this = core::mem::ManuallyDrop::new(self);
        DmaMemory { region: this.memory.region }
    }
}

impl<H: Hal> Drop for DmaAlloc<'_, H> {
    fn drop(&mut self) {
        // SAFETY: the memory came from `hal.dma_alloc`; it was never named to
        // the device (that is what `lend` marks), so the device cannot use it,
        // and the CPU is done with it as this owner goes away.
        unsafe { self.memory.free(self.hal) }
    }
}

/// DMA memory lent to the device (queue rings, PRP lists, identify pages).
///
/// It has no `Drop`: the owner returns it with [`DmaMemory::free`] once the device
/// can no longer reach it, or leaks it when that cannot be proven. Freeing memory
/// that a live queue still names would let the device write freed memory.
#[derive(Debug)]
pub(crate) struct DmaMemory {
    region: DmaRegion,
}

// SAFETY: DmaMemory owns its region exclusively (it is not Clone and is
// reached through `&mut` or a lock by its owner), so handing it to another
// thread moves that ownership; it is deliberately not Sync.
unsafe impl Send for DmaMemory {}

impl DmaMemory {
    /// Returns the memory to the HAL; afterwards `self` is empty (length 0) and
    /// a second call does nothing.
    ///
    /// # Safety
    ///
    /// The device can no longer access the memory (its queue is deleted or the
    /// controller is disabled), the CPU no longer uses it, and it came from `hal`.
    pub(crate) unsafe fn free<H: Hal>(&mut self, hal: &H) {
        if self.region.pages == 0 {
            return;
        }
        // SAFETY: the caller guarantees the device is done with the memory; it
        // came from `hal.dma_alloc`, and emptying the region below makes sure it
        // is freed once.
        unsafe { hal.dma_free(self.region) };
        self.region.pages = 0;
    }

    /// Moves the memory out (to the controller's quarantine), leaving `self`
    /// empty (length 0: no access reaches it, and freeing it does nothing).
    pub(crate) fn take(&mut self) -> DmaMemory {
        let region = self.region;
        self.region.pages = 0;
        DmaMemory { region }
    }

    /// The device address of byte `offset`.
    pub(crate) fn daddr(&self, offset: usize) -> DeviceAddr {
        self.region.daddr.offset(offset as u64)
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.region.len()
    }

    fn ptr<T: Copy>(&self, offset: usize) -> Option<NonNull<T>> {
        let size = core::mem::size_of::<T>();
        if !offset.is_multiple_of(core::mem::align_of::<T>()) || offset.checked_add(size)? > self.len() {
            return None;
        }
        // SAFETY: offset + size <= len, inside the allocation.
        Some(unsafe { self.region.vaddr.add(offset) }.cast())
    }

    /// Volatile write of `value` at `offset` (a submission entry, a PRP entry).
    /// Out of bounds or misaligned offsets are a driver bug and are ignored in
    /// release builds.
    pub(crate) fn write<T: Copy>(&self, offset: usize, value: T) {
        match self.ptr::<T>(offset) {
            // SAFETY: the pointer is in bounds and aligned (checked by `ptr`); the
            // memory is valid DMA memory owned by `self`; volatile because the
            // device reads it concurrently.
            Some(p) => unsafe { p.as_ptr().write_volatile(value) },
            None => debug_assert!(false, "DMA write out of bounds"),
        }
    }

    /// Volatile writes of `count` `u64`s from `offset` on: `first`, then
    /// each `step` above the one before (a PRP list's entries for a run
    /// contiguous in device space), bounds checked once. Out of bounds or
    /// misaligned is a driver bug, ignored in release builds.
    pub(crate) fn write_u64_run(&self, offset: usize, first: u64, step: u64, count: usize) {
        let Some(bytes) = count.checked_mul(8) else {
            debug_assert!(false, "DMA write run out of bounds");
            return;
        };
        if count == 0
            || self.ptr::<u64>(offset).is_none()
            || offset.checked_add(bytes).is_none_or(|end| end > self.len())
        {
            debug_assert!(count == 0, "DMA write run out of bounds");
            return;
        }
        // SAFETY: offset + 8 * count <= len (checked above): inside the
        // allocation.
        let base = unsafe { self.region.vaddr.add(offset) }.cast::<u64>();
        for k in 0..count {
            // SAFETY: `base` is aligned (checked by `ptr`) and entry `k` lies
            // inside the checked range of valid DMA memory owned by `self`;
            // volatile because the device reads it concurrently.
            unsafe { base.add(k).as_ptr().write_volatile(first.wrapping_add(step * k as u64)) };
        }
    }

    /// Volatile read of a `T` at `offset` (a completion entry). `T` must be
    /// valid for every bit pattern (plain integers and structs of them).
    pub(crate) fn read<T: Copy + Default>(&self, offset: usize) -> T {
        match self.ptr::<T>(offset) {
            // SAFETY: in bounds and aligned (checked by `ptr`); the callers use
            // only integer types and `CompletionEntry`, for which any bit
            // pattern is valid; volatile because the device writes concurrently.
            Some(p) => unsafe { p.as_ptr().read_volatile() },
            None => {
                debug_assert!(false, "DMA read out of bounds");
                T::default()
            }
        }
    }

    /// Copies `out.len()` bytes from `offset` into `out`.
    pub(crate) fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        let Some(end) = offset.checked_add(out.len()) else {
            return;
        };
        if end > self.len() {
            debug_assert!(false, "DMA read out of bounds");
            return;
        }
        // SAFETY: offset..end lies inside the allocation; `out` is a distinct
        // Rust buffer; the device does not write this memory while the caller
        // reads it (the command that filled it has completed).
        unsafe {
            core::ptr::copy_nonoverlapping(
                self.region.vaddr.add(offset).as_ptr(),
                out.as_mut_ptr(),
                out.len(),
            )
        }
    }

    /// Copies `bytes` to `offset` (data for the device: the admin data page).
    pub(crate) fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        let Some(end) = offset.checked_add(bytes.len()) else {
            return;
        };
        if end > self.len() {
            debug_assert!(false, "DMA write out of bounds");
            return;
        }
        // SAFETY: offset..end lies inside the allocation; `bytes` is a
        // distinct Rust buffer; the device does not read this memory until
        // the command that names it is submitted, after this copy.
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.region.vaddr.add(offset).as_ptr(),
                bytes.len(),
            )
        }
    }

    /// Fills the whole region with zero.
    pub(crate) fn zero(&self) {
        // SAFETY: the whole allocation is writable and owned by `self`.
        unsafe { core::ptr::write_bytes(self.region.vaddr.as_ptr(), 0, self.len()) }
    }
}
