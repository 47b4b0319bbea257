//! The controller memory buffer (NVMe 1.4 sections 3.1.11, 3.1.12, 3.1.17,
//! 3.1.18 and 4.7): memory of the controller's own in BAR2, which can hold
//! submission queues (CMBSZ.SQS; no completion queues, PRP lists or data,
//! as QEMU's). The host writes it through the mapping the `SimHal` hands out
//! ([`Hal::memory_bar`](hal_traits::Hal::memory_bar)); the controller reads
//! it when a submission queue's address lies in it, which takes CMBMSC.CMSE
//! and a controller base address (CBA). A controller reset turns the memory
//! space off (CMSE clear): the host must turn it on again before it creates
//! queues there.

use super::State;
use nvme_spec::registers::{offset, Cmbloc, Cmbmsc, Cmbsts, Cmbsz};
use std::alloc::{alloc_zeroed, dealloc, handle_alloc_error, Layout};
use std::ptr::{self, NonNull};

/// The address BAR2 has on the simulated bus: below the DMA arena
/// ([`IOVA_BASE`](crate::memory::IOVA_BASE)), so no host memory has it.
pub const CMB_BUS_ADDRESS: u64 = 0x8000_0000;
/// The BAR that holds the CMB (CMBLOC.BIR), as on QEMU.
pub const CMB_BAR: u8 = 2;

/// The CMB's bytes: one zeroed allocation, reached by the host through the
/// pointer it hands out and by the device under the simulator's lock, both
/// derived from the allocation's own pointer (as the arena is).
pub(crate) struct CmbMemory {
    base: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the allocation is owned by this value (freed once, in Drop); the
// host writes it through the mapping only for the queues it created, and the
// device reads it under the simulator's lock, entries the host published with
// a doorbell write (which takes that lock) first.
unsafe impl Send for CmbMemory {}

impl CmbMemory {
    fn new(bytes: usize) -> CmbMemory {
        let layout = Layout::from_size_align(bytes.max(4096), 4096).expect("CMB size is too large");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(base) = NonNull::new(raw) else { handle_alloc_error(layout) };
        CmbMemory { base, layout }
    }

    fn len(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for CmbMemory {
    fn drop(&mut self) {
        // SAFETY: `base` came from `alloc_zeroed(self.layout)` and is freed once.
        unsafe { dealloc(self.base.as_ptr(), self.layout) }
    }
}

/// The CMB and its registers.
pub(crate) struct Cmb {
    mem: CmbMemory,
    /// CMBMSC as last written.
    msc: u64,
    /// CMBMSC.CMSE took effect: addresses from `cba` on reach the CMB.
    space_on: bool,
    /// CMBSTS.CBAI.
    cbai: bool,
    /// Refuse every CBA (CBAI), to test hosts that cope.
    refuse: bool,
}

impl Cmb {
    pub(crate) fn new(bytes: usize, refuse: bool) -> Cmb {
        Cmb { mem: CmbMemory::new(bytes), msc: 0, space_on: false, cbai: false, refuse }
    }

    /// The mapping the HAL hands the host: the whole of BAR2.
    pub(crate) fn mapping(&self) -> (NonNull<u8>, usize) {
        (self.mem.base, self.mem.len())
    }

    fn cba(&self) -> u64 {
        Cmbmsc::from_bits(self.msc).cba() << 12
    }

    /// The offset in the CMB of `len` bytes at device address `addr`, if
    /// the memory space is on and all of them lie in it.
    fn offset_of(&self, addr: u64, len: usize) -> Option<usize> {
        if !self.space_on {
            return None;
        }
        let off = usize::try_from(addr.checked_sub(self.cba())?).ok()?;
        (off.checked_add(len)? <= self.mem.len()).then_some(off)
    }
}

impl State {
    /// CMB register reads, or `None` for other offsets. With CAP.CMBS,
    /// CMBLOC and CMBSZ read 0 until CMBMSC.CRE is set.
    pub(super) fn cmb_read32(&self, off: usize) -> Option<u32> {
        let cmb = self.cmb.as_ref()?;
        let cre = Cmbmsc::from_bits(cmb.msc).cre();
        let value = match off {
            offset::CMBLOC if cre => Cmbloc::new().with_bir(CMB_BAR).into_bits(),
            offset::CMBSZ if cre => {
                Cmbsz::new().with_sqs(true).with_szu(0).with_sz((cmb.mem.len() / 4096) as u32).into_bits()
            }
            offset::CMBLOC | offset::CMBSZ => 0,
            offset::CMBMSC => cmb.msc as u32,
            o if o == offset::CMBMSC + 4 => (cmb.msc >> 32) as u32,
            offset::CMBSTS => Cmbsts::new().with_cbai(cmb.cbai).into_bits(),
            _ => return None,
        };
        Some(value)
    }

    /// CMB register writes; false for other offsets. Writing the lower half
    /// of CMBMSC takes effect (the upper half is kept for it), as on QEMU.
    pub(super) fn cmb_write32(&mut self, off: usize, value: u32) -> bool {
        let Some(cmb) = self.cmb.as_mut() else { return false };
        match off {
            offset::CMBMSC => {
                cmb.msc = (cmb.msc & !0xffff_ffff) | u64::from(value);
                let msc = Cmbmsc::from_bits(cmb.msc);
                cmb.space_on = false;
                if msc.cre() && msc.cmse() {
                    let end = cmb.cba().checked_add(cmb.mem.len() as u64);
                    cmb.cbai = cmb.refuse || end.is_none();
                    cmb.space_on = !cmb.cbai;
                }
                self.stats.cmb_msc_writes += 1;
            }
            o if o == offset::CMBMSC + 4 => cmb.msc = (cmb.msc & 0xffff_ffff) | (u64::from(value) << 32),
            _ => return false,
        }
        true
    }

    /// A controller reset turns the memory space off.
    pub(super) fn cmb_reset(&mut self) {
        if let Some(cmb) = self.cmb.as_mut() {
            cmb.space_on = false;
            cmb.msc = Cmbmsc::from_bits(cmb.msc).with_cmse(false).into_bits();
        }
    }

    /// True when a submission queue of `len` bytes at `addr` lies in host
    /// memory the device may use, or in the CMB with its memory space on.
    pub(super) fn sq_memory_ok(&self, addr: u64, len: usize) -> bool {
        self.cmb.as_ref().and_then(|c| c.offset_of(addr, len)).is_some()
            || self.mem.device_range(addr, len).is_some()
    }

    /// Reads a submission entry: from the CMB where the address lies in it,
    /// else from host memory; false (nothing read) where neither holds it.
    pub(super) fn sq_read(&mut self, addr: u64, out: &mut [u8]) -> bool {
        match self.cmb.as_ref().and_then(|c| c.offset_of(addr, out.len()).map(|o| (c, o))) {
            Some((cmb, off)) => {
                // SAFETY: off + len lies inside the allocation (checked by
                // `offset_of`); `out` is a separate Rust buffer; the host
                // wrote these bytes before the doorbell that brought the
                // device here (see `CmbMemory`).
                unsafe {
                    ptr::copy_nonoverlapping(cmb.mem.base.as_ptr().add(off), out.as_mut_ptr(), out.len())
                };
                self.stats.cmb_fetches += 1;
                true
            }
            None => self.mem.device_read(addr, out),
        }
    }
}
