//! The controller memory buffer (CMB, NVMe 1.4 sections 3.1.11, 3.1.12,
//! 3.1.17, 3.1.18 and 4.7): memory on the controller that the host reaches
//! through a BAR. The driver can put I/O submission queues there
//! ([`ControllerOptions::sq_in_cmb`]): the controller then fetches commands
//! from its own memory instead of across the bus.
//!
//! Space follows queue identifiers: the CMB is cut into one equal slot per
//! I/O queue the controller granted, and queue `q` uses slot `q - 1`. A
//! queue identifier is reused only once the controller is known to have
//! forgotten its queues (deleted, or a reset since: see the quarantine), so
//! neither is its slot, and the CMB needs no allocator or quarantine of its
//! own.
//!
//! [`ControllerOptions::sq_in_cmb`]: crate::ControllerOptions::sq_in_cmb

use crate::spec::registers::{offset, Cap, Cmbloc, Cmbmsc, Cmbsts, Cmbsz};
use hal_traits::{DeviceAddr, Hal, MmioRegion, PAGE_SIZE};

/// The part of a controller's CMB that the driver uses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cmb {
    /// The BAR that holds it.
    mmio: MmioRegion,
    /// Where it starts in that BAR (CMBLOC.OFST).
    start: usize,
    /// Its length in bytes (CMBSZ), at most what the BAR holds from `start`.
    len: usize,
    /// Where the controller places it (CMBMSC.CBA, or the BAR's bus address
    /// plus OFST for a controller without CMBMSC).
    base: DeviceAddr,
    /// CAP.CMBS: CMBMSC exists and must enable the memory space.
    msc: bool,
}

/// What [`Controller::cmb`](crate::Controller::cmb) reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmbInfo {
    /// The CMB's size in bytes (CMBSZ).
    pub size: u64,
    /// Where the controller places it (CMBMSC.CBA).
    pub base: u64,
    /// The bytes each I/O submission queue may take: the CMB cut into one
    /// slot per granted I/O queue, in whole pages. A queue larger than
    /// that stays in host memory.
    pub bytes_per_queue: usize,
}

impl Cmb {
    /// Finds the CMB and, where the controller has CMBMSC (CAP.CMBS), turns
    /// its memory space on at the BAR's bus address. `None` when there is no
    /// CMB, it cannot hold submission queues (CMBSZ.SQS), the HAL does not
    /// map its BAR, it does not fit the BAR, or the controller refuses the
    /// address (CMBSTS.CBAI). The controller is disabled.
    pub(crate) fn find<H: Hal>(hal: &H, cap: Cap) -> Option<Cmb> {
        if cap.cmbs() {
            // CRE makes CMBLOC and CMBSZ read their values (NVMe 1.4).
            // SAFETY: CMBMSC with CMSE clear makes the controller use no
            // memory address.
            unsafe { hal.write32(offset::CMBMSC, Cmbmsc::new().with_cre(true).into_bits() as u32) };
        }
        let sz = Cmbsz::from_bits(hal.read32(offset::CMBSZ));
        let loc = Cmbloc::from_bits(hal.read32(offset::CMBLOC));
        if sz.into_bits() == u32::MAX || !sz.sqs() {
            return None;
        }
        let size = sz.size_bytes().filter(|&s| s > 0)?;
        let unit = 1u64 << (12 + 4 * sz.szu() as u32);
        let start = (loc.ofst() as u64).checked_mul(unit)?;
        let bar = hal.memory_bar(loc.bir())?;
        let end = start.checked_add(size)?;
        if end > bar.mmio.len() as u64 || !bar.bus.0.is_multiple_of(PAGE_SIZE as u64) {
            return None;
        }
        let base = bar.bus.offset(start);
        let cmb = Cmb { mmio: bar.mmio, start: start as usize, len: size as usize, base, msc: cap.cmbs() };
        cmb.enable(hal).then_some(cmb)
    }

    /// Turns the memory space on at `base` again (after a reset, which may
    /// have cleared CMBMSC); false when the controller refuses it.
    pub(crate) fn enable<H: Hal>(&self, hal: &H) -> bool {
        if !self.msc {
            return true;
        }
        let msc = Cmbmsc::enabled_at(self.base.0).into_bits();
        // The upper half first: the controller takes CBA when the lower half
        // (with CMSE) is written.
        // SAFETY: the address is the CMB's own (the BAR's bus address, which
        // the HAL promises no host memory uses): the controller reaches only
        // its own memory through it.
        unsafe {
            hal.write32(offset::CMBMSC + 4, (msc >> 32) as u32);
            hal.write32(offset::CMBMSC, msc as u32);
        }
        !Cmbsts::from_bits(hal.read32(offset::CMBSTS)).cbai()
    }

    /// Bytes per queue slot with `queues` I/O queues granted.
    pub(crate) fn slot_bytes(&self, queues: u16) -> usize {
        (self.len / queues.max(1) as usize) / PAGE_SIZE * PAGE_SIZE
    }

    /// The ring of `bytes` for queue `qid` (1-based), if its slot holds it.
    pub(crate) fn ring(&self, qid: u16, bytes: usize, queues: u16) -> Option<DeviceRing> {
        let slot = self.slot_bytes(queues);
        if qid == 0 || qid > queues || bytes > slot {
            return None;
        }
        let offset = (qid as usize - 1) * slot;
        Some(DeviceRing {
            mmio: self.mmio,
            start: self.start + offset,
            daddr: self.base.offset(offset as u64),
        })
    }

    pub(crate) fn info(&self, queues: u16) -> CmbInfo {
        CmbInfo { size: self.len as u64, base: self.base.0, bytes_per_queue: self.slot_bytes(queues) }
    }
}

/// A submission queue ring in the CMB: written with 8-byte accesses (some
/// controllers, QEMU's among them, do not take wider ones).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeviceRing {
    mmio: MmioRegion,
    start: usize,
    daddr: DeviceAddr,
}

impl DeviceRing {
    pub(crate) fn daddr(&self) -> DeviceAddr {
        self.daddr
    }

    /// Writes the 64-byte entry at byte `offset` of the ring.
    pub(crate) fn write_entry(&self, offset: usize, qwords: [u64; 8]) {
        for (i, q) in qwords.into_iter().enumerate() {
            // SAFETY: a store into the controller's own memory, in the slot
            // of the queue this ring belongs to; it names no host memory to
            // the device (the entry's PRPs are lent by the submission path,
            // as for a ring in host memory).
            unsafe { self.mmio.write64(self.start + offset + 8 * i, q) };
        }
    }
}
