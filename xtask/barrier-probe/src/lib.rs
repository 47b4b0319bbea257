//! The driver's doorbell write and completion peek, instantiated with a
//! minimal [`Hal`] and exported as unmangled symbols, so that their machine
//! code can be checked for the architecture's device barriers.
//!
//! `cargo xtask test` compiles this crate to assembly for aarch64 and riscv64
//! (`xtask/src/barriers.rs`) and checks that a barrier sits between the
//! writes to DMA memory and the doorbell store in [`probe_ring_doorbell`],
//! and between the phase-tag load and the rest of the completion entry in
//! [`probe_poll`]. Nothing here is meant to run.
//!
//! [`ProbeHal`] keeps the trait's default barrier methods on purpose: they
//! are what every back-end gets unless it overrides them.
#![no_std]
#![deny(missing_docs, unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use core::ptr::NonNull;
use core::time::Duration;
use hal_traits::{Direction, DmaRegion, HalError, HalErrorKind, SegmentSink};
use nvme_nostd::{DmaBuffer, Hal, IoQueuePair, PollLimit};

/// A back-end with volatile register access through a raw pointer and
/// nothing else: no DMA memory, no sharing, a clock that stands still.
///
/// The registers are reached through `read_volatile`/`write_volatile` here
/// rather than through [`hal_traits::MmioRegion`], whose methods are not
/// inlined across crates: the doorbell store would then sit in `hal-traits`'
/// code, out of sight of the probe's assembly.
pub struct ProbeHal {
    base: NonNull<u8>,
    len: usize,
}

impl ProbeHal {
    /// A HAL over the register window of `len` bytes at `base`.
    ///
    /// # Safety
    ///
    /// `base..base + len` is a controller's BAR0, mapped uncached, that
    /// nothing else drives, and no Rust reference points into it.
    pub const unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        ProbeHal { base, len }
    }

    /// The register at `offset`, if it lies inside the window and is aligned.
    fn reg(&self, offset: usize) -> Option<*mut u32> {
        if !offset.is_multiple_of(4) || offset.checked_add(4)? > self.len {
            return None;
        }
        Some(self.base.as_ptr().wrapping_add(offset).cast())
    }
}

// SAFETY: registers are reached inside the window only; no memory is ever
// handed out or shared (every request for it fails), so no address reaches
// the device from here. The value is neither `Clone` nor `Copy`, and `new`'s
// caller promises exclusivity.
unsafe impl Hal for ProbeHal {
    type Mapping = ();

    fn read32(&self, offset: usize) -> u32 {
        match self.reg(offset) {
            // SAFETY: inside the mapped window and aligned (checked by `reg`).
            Some(p) => unsafe { p.read_volatile() },
            None => u32::MAX,
        }
    }

    unsafe fn write32(&self, offset: usize, value: u32) {
        if let Some(p) = self.reg(offset) {
            // SAFETY: inside the mapped window and aligned (checked by `reg`);
            // what the write makes the device do is the caller's (the
            // driver's) guarantee.
            unsafe { p.write_volatile(value) }
        }
    }

    fn dma_alloc(&self, _pages: usize) -> Result<DmaRegion, HalError> {
        Err(HalError::new(HalErrorKind::NoMemory, "the barrier probe has no DMA memory"))
    }

    unsafe fn dma_free(&self, _region: DmaRegion) {}

    unsafe fn share(
        &self,
        _buffer: NonNull<[u8]>,
        _direction: Direction,
        _sink: &mut dyn SegmentSink,
    ) -> Result<(), HalError> {
        Err(HalError::new(HalErrorKind::Unsupported, "the barrier probe shares nothing"))
    }

    unsafe fn unshare(&self, _buffer: NonNull<[u8]>, _direction: Direction, _mapping: ()) {}

    fn ticks(&self) -> u64 {
        0
    }

    fn ticks_per_second(&self) -> u64 {
        1
    }

    fn delay(&self, _duration: Duration) {}
}

/// The queue pair type the probes use.
pub type ProbeQueuePair<'c> = IoQueuePair<'c, ProbeHal, DmaBuffer<'static, ProbeHal>, u32, 8>;

/// [`IoQueuePair::ring_doorbell`]: the submission queue tail doorbell write,
/// after `barrier_before_doorbell`.
#[no_mangle]
pub extern "C" fn probe_ring_doorbell(qp: &mut ProbeQueuePair<'_>) {
    qp.ring_doorbell();
}

/// [`IoQueuePair::poll`]: the completion queue peek (the phase-tag load, then
/// `barrier_after_phase`, then the entry) and the head doorbell write.
#[no_mangle]
pub extern "C" fn probe_poll(qp: &mut ProbeQueuePair<'_>) -> usize {
    qp.poll(PollLimit::All, |_, _| {})
}
