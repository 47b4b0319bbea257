//! The controller registers (NVMe 1.4 section 3.1): CAP, VS, INTMS/INTMC,
//! CC, CSTS, AQA, ASQ and ACQ, the doorbell range handed on to the queues,
//! and what a CC write starts: enable (section 7.6.1), controller reset
//! (section 7.3.2) and shutdown (section 7.6.2).

use super::queues::{Cq, Sq};
use super::{State, CQ_ENTRY, SQ_ENTRY, VERSION};
use nvme_spec::registers::{offset, Aqa, Cap, Cc, Csts};

impl State {
    fn cap(&self) -> u64 {
        Cap::new()
            .with_mqes(self.cfg.mqes)
            .with_cqr(true)
            .with_to(self.cfg.timeout_500ms)
            .with_dstrd(self.cfg.dstrd)
            .with_css(if self.cfg.zoned.is_empty() { 1 } else { 0x41 })
            .with_ams(u8::from(self.cfg.wrr))
            .with_mpsmin(0)
            .with_mpsmax(0)
            .with_cmbs(self.cmb.is_some())
            .into_bits()
    }

    fn csts(&self) -> u32 {
        Csts::new().with_rdy(self.rdy).with_cfs(self.cfs).with_shst(self.shst).into_bits()
    }

    /// After every register access by the host: with `auto_advance`, time
    /// moves on by the command latency, so what a doorbell write started has
    /// completed by the next look.
    fn after_access(&mut self) {
        if self.cfg.auto_advance {
            self.advance(self.cfg.latency);
        }
    }

    pub(crate) fn read32(&mut self, off: usize) -> u32 {
        let value = self.reg_read32(off);
        self.after_access();
        value
    }

    pub(crate) fn read64(&mut self, off: usize) -> u64 {
        let value = self.reg_read64(off);
        self.after_access();
        value
    }

    pub(crate) fn write32(&mut self, off: usize, value: u32) {
        self.reg_write32(off, value);
        self.after_access();
    }

    pub(crate) fn write64(&mut self, off: usize, value: u64) {
        self.reg_write64(off, value);
        self.after_access();
    }

    fn reg_read32(&mut self, off: usize) -> u32 {
        if self.removed || off >= self.bar_size {
            return u32::MAX;
        }
        if !off.is_multiple_of(4) {
            return 0;
        }
        if let Some(value) = self.cmb_read32(off) {
            return value;
        }
        match off {
            offset::CAP => self.cap() as u32,
            0x04 => (self.cap() >> 32) as u32,
            offset::VS => VERSION,
            offset::INTMS | offset::INTMC => self.intms,
            offset::CC => self.cc,
            offset::CSTS => self.csts(),
            offset::AQA => self.aqa,
            offset::ASQ => self.asq as u32,
            0x2c => (self.asq >> 32) as u32,
            offset::ACQ => self.acq as u32,
            0x34 => (self.acq >> 32) as u32,
            // CMBLOC, CMBSZ, NSSR, doorbells and reserved registers read 0.
            _ => 0,
        }
    }

    fn reg_read64(&mut self, off: usize) -> u64 {
        if self.removed || off >= self.bar_size {
            return u64::MAX;
        }
        match off {
            offset::CAP => self.cap(),
            offset::ASQ => self.asq,
            offset::ACQ => self.acq,
            _ => self.reg_read32(off) as u64 | ((self.reg_read32(off.saturating_add(4)) as u64) << 32),
        }
    }

    fn reg_write32(&mut self, off: usize, value: u32) {
        if self.removed || off >= self.bar_size {
            return;
        }
        if !off.is_multiple_of(4) {
            if off >= offset::DOORBELLS {
                self.stats.ignored_doorbells += 1;
            }
            return;
        }
        if self.cmb_write32(off, value) {
            return;
        }
        match off {
            offset::INTMS => self.intms |= value,
            offset::INTMC => self.intms &= !value,
            offset::CC => self.write_cc(value),
            offset::AQA => self.aqa = value & 0x0fff_0fff,
            offset::ASQ => self.asq = (self.asq & !0xffff_ffff) | (value as u64 & !0xfff),
            0x2c => self.asq = (self.asq & 0xffff_ffff) | ((value as u64) << 32),
            offset::ACQ => self.acq = (self.acq & !0xffff_ffff) | (value as u64 & !0xfff),
            0x34 => self.acq = (self.acq & 0xffff_ffff) | ((value as u64) << 32),
            o if o >= offset::DOORBELLS => self.doorbell(o - offset::DOORBELLS, value),
            // CAP, VS, CSTS, NSSR (not supported), CMB registers: read-only or ignored.
            _ => {}
        }
    }

    fn reg_write64(&mut self, off: usize, value: u64) {
        if self.removed || off >= self.bar_size {
            return;
        }
        match off {
            offset::ASQ => self.asq = value & !0xfff,
            offset::ACQ => self.acq = value & !0xfff,
            _ => {
                self.reg_write32(off, value as u32);
                self.reg_write32(off.saturating_add(4), (value >> 32) as u32);
            }
        }
    }

    fn write_cc(&mut self, value: u32) {
        let old = Cc::from_bits(self.cc);
        let new = Cc::from_bits(value);
        self.cc = value;
        if !old.en() && new.en() {
            self.enable(new);
        } else if old.en() && !new.en() {
            self.reset();
        } else if old.en() && new.en() && old.shn() == 0 && new.shn() != 0 && self.enabled && !self.cfs {
            self.shst = 1;
            if !self.cfg.shutdown_never {
                self.shst_event = Some(self.now.saturating_add(self.cfg.ready_delay));
            }
        }
    }

    /// CC.EN 0 -> 1: takes the admin queue from AQA/ASQ/ACQ and schedules
    /// CSTS.RDY. A configuration the controller cannot run (page size other
    /// than 4 KiB, a command set other than NVM, entry sizes other than 64/16
    /// bytes, an admin queue under 2 entries or in unmapped memory) makes it
    /// stay not ready, as QEMU does.
    fn enable(&mut self, cc: Cc) {
        let aqa = Aqa::from_bits(self.aqa);
        let (sq_size, cq_size) = (aqa.asqs() + 1, aqa.acqs() + 1);
        let sq_ok = self.mem.device_range(self.asq, sq_size as usize * SQ_ENTRY as usize).is_some();
        let cq_ok = self.mem.device_range(self.acq, cq_size as usize * CQ_ENTRY as usize).is_some();
        // Round robin, or weighted round robin where CAP.AMS offers it.
        let ams_ok = cc.ams() == 0 || (cc.ams() == 1 && self.cfg.wrr);
        let ok = cc.mps() == 0
            && ams_ok
            && (cc.css() == 0 || (cc.css() == 0b110 && !self.cfg.zoned.is_empty()))
            && cc.iosqes() == 6
            && cc.iocqes() == 4
            && sq_size >= 2
            && cq_size >= 2
            && sq_ok
            && cq_ok;
        self.rdy_event = None;
        if !ok {
            self.stats.enable_failures += 1;
            return;
        }
        self.sqs.insert(0, Sq::new(self.asq, sq_size, 0, 0));
        self.wrr = cc.ams() == 1;
        self.cqs.insert(0, Cq::new(self.acq, cq_size));
        self.enabled = true;
        if !self.cfg.rdy_never {
            self.rdy_event = Some((self.now.saturating_add(self.cfg.ready_delay), true));
        }
    }

    /// A disable that `disable_never` held back completes now.
    pub(crate) fn finish_disable(&mut self) {
        if !self.enabled && self.rdy && self.rdy_event.is_none() {
            self.rdy_event = Some((self.now, false));
        }
    }

    /// CC.EN 1 -> 0: a controller reset. Every queue and command is dropped,
    /// CFS and SHST clear, and CSTS.RDY follows after the ready delay.
    fn reset(&mut self) {
        self.cmb_reset();
        self.hmb_reset();
        self.sqs.clear();
        self.cqs.clear();
        self.pending.clear();
        self.stuck.clear();
        self.dbbuf = None;
        self.enabled = false;
        self.cfs = false;
        self.shst = 0;
        self.shst_event = None;
        self.keep_alive_at = None;
        self.busy_until = self.now;
        let max = self.cfg.max_io_queues - 1;
        self.nsqa = max;
        self.ncqa = max;
        self.features.clear();
        self.reset_events();
        self.firmware.on_reset();
        self.stats.resets += 1;
        self.rdy_event = if self.rdy && !self.cfg.disable_never {
            Some((self.now.saturating_add(self.cfg.ready_delay), false))
        } else {
            None
        };
    }
}
