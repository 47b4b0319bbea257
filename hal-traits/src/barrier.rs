//! The memory barriers an NVMe host driver needs, per architecture.
//!
//! Two orderings matter (NVMe 1.4 sections 4.1 and 4.6; Linux's `writel` and
//! `dma_rmb`):
//! - **before a doorbell write**: the submission entry, PRP lists and write
//!   data the CPU put in memory must be visible to the device before the MMIO
//!   store that tells the device to fetch them;
//! - **after a completion's phase tag is read**: the reads of the rest of the
//!   entry (CID, status) and of the data the device wrote must not be
//!   satisfied before the read that saw the new phase.
//!
//! A `SeqCst` fence is not enough on aarch64: it compiles to `dmb ish`, which
//! orders accesses among CPUs (inner shareable) but not against a device's
//! view (outer shareable). What each architecture needs:
//!
//! | architecture | before doorbell | after phase |
//! |---|---|---|
//! | x86_64 | compiler fence: stores are not reordered with older stores, and an uncached MMIO store is not reordered either | compiler fence: loads are not reordered with older loads |
//! | aarch64 | `dmb oshst`: earlier stores before later stores, outer shareable | `dmb oshld`: earlier loads before later loads and stores, outer shareable |
//! | riscv64 | `fence ow, o`: memory writes (and device writes, for queues in device memory) before the device write | `fence ir, ir`: the phase read (from memory, or device memory for a CQ in the CMB) before later reads |
//!
//! On riscv64 `fence w, o` and `fence r, r` are what Linux uses for the same
//! two places; the sets here add the device-memory side (`o` before, `i`
//! on both sides) so that queues in a controller memory buffer are covered
//! too. Other architectures get a sequentially consistent fence, which is
//! correct only where that orders device accesses: check before relying on
//! it.

/// One barrier: the given instruction on aarch64 and riscv64, a compiler
/// fence on x86 (its ordering already holds in hardware), a sequentially
/// consistent fence elsewhere.
macro_rules! device_barrier {
    ($(#[$doc:meta])* $name:ident, aarch64: $arm:literal, riscv64: $riscv:literal) => {
        $(#[$doc])*
        #[inline(always)]
        pub fn $name() {
            #[cfg(target_arch = "aarch64")]
            // SAFETY: a barrier instruction; it touches no memory and no
            // registers.
            unsafe {
                core::arch::asm!($arm, options(nostack, preserves_flags))
            }
            #[cfg(target_arch = "riscv64")]
            // SAFETY: as above.
            unsafe {
                core::arch::asm!($riscv, options(nostack, preserves_flags))
            }
            #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
            core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
            #[cfg(not(any(
                target_arch = "aarch64",
                target_arch = "riscv64",
                target_arch = "x86_64",
                target_arch = "x86"
            )))]
            core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        }
    };
}

device_barrier! {
    /// Orders earlier writes to DMA memory before a following MMIO doorbell
    /// write.
    before_doorbell, aarch64: "dmb oshst", riscv64: "fence ow, o"
}

device_barrier! {
    /// Orders the read of a completion's phase tag before later reads of the
    /// entry and of the data the device wrote.
    after_phase, aarch64: "dmb oshld", riscv64: "fence ir, ir"
}

/// Orders earlier writes to DMA memory before later reads of DMA memory, as
/// the device sees them (a store-load barrier): a shadow doorbell value
/// (NVMe 1.4 section 7.13, Doorbell Buffer Config) must be visible to the
/// device before the driver reads the EventIdx the device wrote, or both
/// sides can miss each other's update. `mfence` on x86 (where stores may
/// pass later loads), `dmb osh` on aarch64, `fence iorw, iorw` on riscv64,
/// a sequentially consistent fence elsewhere.
#[inline(always)]
pub fn full() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a barrier instruction; it touches no memory and no registers.
    unsafe {
        core::arch::asm!("dmb osh", options(nostack, preserves_flags))
    }
    #[cfg(target_arch = "riscv64")]
    // SAFETY: as above.
    unsafe {
        core::arch::asm!("fence iorw, iorw", options(nostack, preserves_flags))
    }
    #[cfg(not(any(target_arch = "aarch64", target_arch = "riscv64")))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}
