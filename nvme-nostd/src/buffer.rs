//! Buffers that a request owns while the device may touch them.
//!
//! A request takes its buffer by value and hands it back only with the
//! completion, so safe code cannot read, free or reuse memory that the device
//! may still write.

use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use hal_traits::{DmaRegion, Hal, HalError, PAGE_SIZE};

/// A buffer a request can own.
///
/// Every buffer reaches the device through [`Hal::share`], which gives the
/// HAL the chance to check or map it (a buffer from another device's DMA
/// domain is not trusted).
///
/// # Safety
///
/// Implementations guarantee that the bytes behind `deref_mut()` stay at the same
/// address, valid and not reachable through any other path, for as long as the
/// value lives, even when the value itself is moved: the device writes them
/// while the request holds the value. Moving the value must not assert
/// uniqueness over the bytes either (Rust's aliasing model treats a moved
/// `Box` or `&mut` as a fresh unique pointer, which would invalidate the
/// pointer the device was given), so `Box<[u8]>` and `&'static mut [u8]` do
/// not qualify; `Vec<u8>` and [`DmaBuffer`] do.
pub unsafe trait IoBuffer: DerefMut<Target = [u8]> {}

#[cfg(feature = "alloc")]
extern crate alloc;

// SAFETY: the heap allocation of a Vec does not move when the Vec does, and
// only `&mut Vec` could grow it, which the request does not hand out.
#[cfg(feature = "alloc")]
unsafe impl IoBuffer for alloc::vec::Vec<u8> {}

/// A buffer in DMA memory from the HAL, freed when dropped.
///
/// Its length can be narrowed to a window (`set_window`) to transfer from an
/// offset inside the first page, for instance.
pub struct DmaBuffer<'h, H: Hal> {
    hal: &'h H,
    region: DmaRegion,
    offset: usize,
    len: usize,
}

// SAFETY: the buffer owns its pages exclusively; moving it to another thread
// moves that ownership. It frees them through `&H`, which is sound from
// another thread when `H: Sync`.
unsafe impl<H: Hal + Sync> Send for DmaBuffer<'_, H> {}

impl<'h, H: Hal> DmaBuffer<'h, H> {
    /// Allocates a zeroed buffer of at least `len` bytes (whole pages).
    pub fn new(hal: &'h H, len: usize) -> Result<Self, HalError> {
        let pages = len.div_ceil(PAGE_SIZE).max(1);
        let region = hal.dma_alloc(pages)?;
        Ok(DmaBuffer { hal, region, offset: 0, len })
    }

    /// Bytes allocated (whole pages).
    pub fn capacity(&self) -> usize {
        self.region.len()
    }

    /// Makes the buffer the `len` bytes starting `offset` bytes into the
    /// allocation. Returns false (and changes nothing) if that does not fit.
    pub fn set_window(&mut self, offset: usize, len: usize) -> bool {
        match offset.checked_add(len) {
            Some(end) if end <= self.capacity() => {
                self.offset = offset;
                self.len = len;
                true
            }
            _ => false,
        }
    }

    fn ptr(&self) -> NonNull<u8> {
        // SAFETY: offset <= capacity (kept by `new` and `set_window`).
        unsafe { self.region.vaddr.add(self.offset) }
    }
}

impl<H: Hal> Deref for DmaBuffer<'_, H> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: offset + len lies inside the allocation, which lives as long as
        // `self`; a request that lends the buffer to the device owns `self`, so
        // no reference exists while the device writes.
        unsafe { core::slice::from_raw_parts(self.ptr().as_ptr(), self.len) }
    }
}

impl<H: Hal> DerefMut for DmaBuffer<'_, H> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { core::slice::from_raw_parts_mut(self.ptr().as_ptr(), self.len) }
    }
}

// SAFETY: the allocation does not move with the value, is reached only through
// a raw pointer (no unique reference is asserted on a move), and is exclusively
// owned by the value until `drop`.
unsafe impl<H: Hal> IoBuffer for DmaBuffer<'_, H> {}

impl<H: Hal> Drop for DmaBuffer<'_, H> {
    fn drop(&mut self) {
        // SAFETY: the region came from this HAL and is freed once. While a
        // request owns the buffer the device may use it, but then this value is
        // inside the request slot and is not dropped until the device is done.
        unsafe { self.hal.dma_free(self.region) }
    }
}
