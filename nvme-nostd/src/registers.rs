//! A typed view of the controller registers (NVMe 1.4 section 3.1) over the
//! [`Hal`]'s register access.
//!
//! Reads come back as the `nvme-spec` bitfield types, and a read of all ones
//! (what a removed PCIe device returns) is [`Error::DeviceRemoved`], checked
//! here and nowhere else. Writes that cannot start DMA (disabling, shutdown
//! notification) are safe; writes that can (CC.EN = 1 with the admin queue
//! addresses) are `unsafe`. Doorbells are in [`crate::queue`].

use crate::error::{Error, Result};
use crate::spec::registers::{offset, shn, Aqa, Cap, Cc, Csts, Vs};
use hal_traits::{DeviceAddr, Hal};

/// The controller's registers.
pub(crate) struct Registers<'a, H: Hal> {
    hal: &'a H,
}

impl<'a, H: Hal> Registers<'a, H> {
    pub(crate) fn new(hal: &'a H) -> Self {
        Registers { hal }
    }

    fn read32(&self, at: usize) -> Result<u32> {
        match self.hal.read32(at) {
            u32::MAX => Err(Error::DeviceRemoved),
            raw => Ok(raw),
        }
    }

    /// CAP: Controller Capabilities.
    pub(crate) fn cap(&self) -> Result<Cap> {
        match self.hal.read64(offset::CAP) {
            u64::MAX => Err(Error::DeviceRemoved),
            raw => Ok(Cap::from_bits(raw)),
        }
    }

    /// VS: Version.
    pub(crate) fn vs(&self) -> Result<Vs> {
        self.read32(offset::VS).map(Vs::from_bits)
    }

    /// CC: Controller Configuration.
    pub(crate) fn cc(&self) -> Result<Cc> {
        self.read32(offset::CC).map(Cc::from_bits)
    }

    /// CSTS: Controller Status.
    pub(crate) fn csts(&self) -> Result<Csts> {
        self.read32(offset::CSTS).map(Csts::from_bits)
    }

    /// Writes CC with EN cleared: the controller stops processing and forgets
    /// its queues (section 3.1.5). Starts no DMA.
    pub(crate) fn disable(&self, cc: Cc) {
        // SAFETY: clearing EN stops all DMA; it starts none.
        unsafe { self.hal.write32(offset::CC, cc.with_en(false).into_bits()) }
    }

    /// Writes CC with a normal shutdown notification (section 7.6.2). Starts
    /// no DMA.
    pub(crate) fn notify_shutdown(&self, cc: Cc) {
        // SAFETY: a shutdown notification makes the controller finish and
        // flush; it fetches no new commands from new memory.
        unsafe { self.hal.write32(offset::CC, cc.with_shn(shn::NORMAL).into_bits()) }
    }

    /// Programs AQA, ASQ and ACQ and sets CC.EN (section 7.6.1 steps 3 to 6);
    /// the caller then waits for CSTS.RDY.
    ///
    /// # Safety
    ///
    /// The admin queues of `entries` entries at `asq` and `acq` are DMA
    /// memory lent to the device (zeroed CQ, phase 1 expected) for as long as
    /// the controller may use them: until it is disabled again.
    pub(crate) unsafe fn enable(&self, entries: u16, asq: DeviceAddr, acq: DeviceAddr, cc: Cc) {
        let aqa = Aqa::new().with_asqs(entries - 1).with_acqs(entries - 1);
        // SAFETY: the caller guarantees the queue memory; AQA, ASQ and ACQ are
        // only read by the controller once EN is set, after them.
        unsafe {
            self.hal.write32(offset::AQA, aqa.into_bits());
            self.hal.write64(offset::ASQ, asq.0);
            self.hal.write64(offset::ACQ, acq.0);
            self.hal.write32(offset::CC, cc.with_en(true).into_bits());
        }
    }
}
