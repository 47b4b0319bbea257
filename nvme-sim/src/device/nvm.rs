//! The NVM I/O command set (NVMe 1.4 section 6): Read, Write, Compare,
//! Flush, Write Zeroes, Verify, Write Uncorrectable, Dataset Management and
//! Copy against the
//! namespaces' backing store, with every LBA range checked against its
//! namespace, and the transfer size of Read, Write and Compare against MDTS.

use super::status::{
    COMMAND_SIZE_LIMIT_EXCEEDED, COMPARE_FAILURE, INVALID_FIELD, INVALID_NAMESPACE, INVALID_OPCODE,
    LBA_OUT_OF_RANGE, SUCCESS, UNRECOVERED_READ_ERROR,
};
use super::{State, PAGE};
use nvme_spec::command::{IoOpcode, SubmissionEntry};
use nvme_spec::dwords::ReadWriteCdw12;

impl State {
    fn active_namespace(&self, nsid: u32) -> Option<usize> {
        self.namespaces.iter().position(|n| n.active && n.cfg.nsid == nsid)
    }

    pub(super) fn execute_io(&mut self, cmd: &SubmissionEntry) -> (u16, u32) {
        if self.recent_io.len() == super::RECENT_IO {
            self.recent_io.pop_front();
        }
        self.recent_io.push_back(*cmd);
        if cmd.cdw0.fuse() != 0 {
            return (INVALID_FIELD, 0);
        }
        if self.cfg.reservations {
            if let Some(conflict) = self.reservation_check(cmd) {
                return (conflict, 0);
            }
        }
        // The commands whose CDW12 bits 31 and 30 are LR and FUA.
        let opcode = IoOpcode(cmd.cdw0.opc());
        if [
            IoOpcode::READ,
            IoOpcode::WRITE,
            IoOpcode::COMPARE,
            IoOpcode::WRITE_ZEROES,
            IoOpcode::VERIFY,
            IoOpcode::COPY,
        ]
        .contains(&opcode)
        {
            self.stats.fua_commands += u64::from(cmd.cdw12 >> 30 & 1);
            self.stats.limited_retry_commands += u64::from(cmd.cdw12 >> 31);
        }
        let status = match IoOpcode(cmd.cdw0.opc()) {
            IoOpcode::FLUSH => {
                if cmd.nsid == u32::MAX || self.active_namespace(cmd.nsid).is_some() {
                    SUCCESS
                } else {
                    INVALID_NAMESPACE
                }
            }
            IoOpcode::READ | IoOpcode::WRITE | IoOpcode::COMPARE => self.read_write(cmd),
            IoOpcode::WRITE_ZEROES => self.write_zeroes(cmd),
            IoOpcode::WRITE_UNCORRECTABLE => {
                let slba = cmd.cdw10 as u64 | ((cmd.cdw11 as u64) << 32);
                let nlb = ReadWriteCdw12::from_bits(cmd.cdw12).nlb() as u64 + 1;
                match self.lba_range(cmd.nsid, slba, nlb) {
                    Ok((index, _, _)) => {
                        self.namespaces[index].uncorrectable.extend(slba..slba + nlb);
                        SUCCESS
                    }
                    Err(s) => s,
                }
            }
            IoOpcode::VERIFY => {
                let slba = cmd.cdw10 as u64 | ((cmd.cdw11 as u64) << 32);
                let nlb = ReadWriteCdw12::from_bits(cmd.cdw12).nlb() as u64 + 1;
                self.lba_range(cmd.nsid, slba, nlb).map_or_else(|s| s, |_| SUCCESS)
            }
            IoOpcode::DATASET_MANAGEMENT => self.dataset_management(cmd),
            IoOpcode::COPY if self.cfg.copy => self.copy(cmd),
            IoOpcode::RESERVATION_REGISTER
            | IoOpcode::RESERVATION_ACQUIRE
            | IoOpcode::RESERVATION_RELEASE
            | IoOpcode::RESERVATION_REPORT
                if self.cfg.reservations =>
            {
                self.reservation_io(cmd)
            }
            _ => INVALID_OPCODE,
        };
        (status, 0)
    }

    /// The namespace index and byte range of `nlb` blocks at `slba`, checked.
    fn lba_range(&self, nsid: u32, slba: u64, nlb: u64) -> Result<(usize, usize, usize), u16> {
        let index = self.active_namespace(nsid).ok_or(INVALID_NAMESPACE)?;
        let ns = &self.namespaces[index].cfg;
        match slba.checked_add(nlb) {
            Some(end) if end <= ns.blocks => {}
            _ => return Err(LBA_OUT_OF_RANGE),
        }
        let bs = ns.block_size as usize;
        // In range of a namespace that fits in memory: these cannot overflow.
        Ok((index, slba as usize * bs, nlb as usize * bs))
    }

    fn read_write(&mut self, cmd: &SubmissionEntry) -> u16 {
        let Some(index) = self.active_namespace(cmd.nsid) else { return INVALID_NAMESPACE };
        if cmd.cdw0.psdt() != 0 {
            return INVALID_FIELD;
        }
        let slba = cmd.cdw10 as u64 | ((cmd.cdw11 as u64) << 32);
        let cdw12 = ReadWriteCdw12::from_bits(cmd.cdw12);
        let nlb = cdw12.nlb() as u64 + 1;
        let bytes = nlb * self.namespaces[index].cfg.block_size as u64;
        if self.cfg.mdts != 0 && bytes > PAGE << self.cfg.mdts.min(40) {
            return INVALID_FIELD;
        }
        let (index, start, len) = match self.lba_range(cmd.nsid, slba, nlb) {
            Ok(r) => r,
            Err(s) => return s,
        };
        let opcode = IoOpcode(cmd.cdw0.opc());
        let blocks = slba..slba + nlb;
        // A block made uncorrectable fails reads and compares until written.
        if opcode != IoOpcode::WRITE
            && self.namespaces[index].uncorrectable.range(blocks.clone()).next().is_some()
        {
            return UNRECOVERED_READ_ERROR;
        }
        if opcode == IoOpcode::WRITE || opcode == IoOpcode::COMPARE {
            match self.read_from_host(cmd, len) {
                Ok(data) if opcode == IoOpcode::COMPARE => {
                    if self.namespaces[index].data[start..start + len] == data[..] {
                        SUCCESS
                    } else {
                        COMPARE_FAILURE
                    }
                }
                Ok(data) => {
                    self.namespaces[index].data[start..start + len].copy_from_slice(&data);
                    self.namespaces[index].uncorrectable.retain(|b| !blocks.contains(b));
                    SUCCESS
                }
                Err(s) => s,
            }
        } else {
            let data = self.namespaces[index].data[start..start + len].to_vec();
            self.write_to_host(cmd, &data)
        }
    }

    fn write_zeroes(&mut self, cmd: &SubmissionEntry) -> u16 {
        let slba = cmd.cdw10 as u64 | ((cmd.cdw11 as u64) << 32);
        let nlb = ReadWriteCdw12::from_bits(cmd.cdw12).nlb() as u64 + 1;
        match self.lba_range(cmd.nsid, slba, nlb) {
            Ok((index, start, len)) => {
                self.namespaces[index].data[start..start + len].fill(0);
                self.namespaces[index].uncorrectable.retain(|b| !(slba..slba + nlb).contains(b));
                SUCCESS
            }
            Err(s) => s,
        }
    }

    /// Dataset Management: with the Deallocate attribute, the ranges read as
    /// zeros afterwards.
    fn dataset_management(&mut self, cmd: &SubmissionEntry) -> u16 {
        if self.active_namespace(cmd.nsid).is_none() {
            return INVALID_NAMESPACE;
        }
        if cmd.cdw0.psdt() != 0 {
            return INVALID_FIELD;
        }
        let ranges = (cmd.cdw10 & 0xff) as usize + 1;
        let list = match self.read_from_host(cmd, ranges * 16) {
            Ok(l) => l,
            Err(s) => return s,
        };
        let mut checked = Vec::with_capacity(ranges);
        for r in list.chunks_exact(16) {
            let nlb = u32::from_le_bytes([r[4], r[5], r[6], r[7]]) as u64;
            let slba = u64::from_le_bytes([r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]]);
            match self.lba_range(cmd.nsid, slba, nlb) {
                Ok(range) => checked.push(range),
                Err(s) => return s,
            }
        }
        if cmd.cdw11 & (1 << 2) != 0 {
            for (index, start, len) in checked {
                self.namespaces[index].data[start..start + len].fill(0);
            }
        }
        SUCCESS
    }

    /// Copy (NVM Command Set 1.0 section 3.2.2) with source range
    /// descriptors of format 0h: the ranges' blocks, one after another, to
    /// SDLBA and on; the limits of the configuration are enforced, and a
    /// block made uncorrectable fails the read side.
    fn copy(&mut self, cmd: &SubmissionEntry) -> u16 {
        if self.active_namespace(cmd.nsid).is_none() {
            return INVALID_NAMESPACE;
        }
        let format = (cmd.cdw12 >> 8) & 0xf;
        if cmd.cdw0.psdt() != 0 || format != 0 {
            return INVALID_FIELD;
        }
        let limits = self.cfg.copy_limits;
        let ranges = (cmd.cdw12 & 0xff) as usize + 1;
        if ranges > usize::from(limits.msrc) + 1 {
            return COMMAND_SIZE_LIMIT_EXCEEDED;
        }
        let list = match self.read_from_host(cmd, ranges * 32) {
            Ok(l) => l,
            Err(s) => return s,
        };
        let mut sources = Vec::with_capacity(ranges);
        let mut total = 0u64;
        for r in list.chunks_exact(32) {
            let slba = u64::from_le_bytes(r[8..16].try_into().unwrap_or_default());
            let nlb = u64::from(u16::from_le_bytes([r[16], r[17]])) + 1;
            if nlb > u64::from(limits.mssrl) {
                return COMMAND_SIZE_LIMIT_EXCEEDED;
            }
            total += nlb;
            match self.lba_range(cmd.nsid, slba, nlb) {
                Ok(range) => sources.push((slba, nlb, range)),
                Err(s) => return s,
            }
        }
        if total > u64::from(limits.mcl) {
            return COMMAND_SIZE_LIMIT_EXCEEDED;
        }
        let sdlba = cmd.cdw10 as u64 | ((cmd.cdw11 as u64) << 32);
        let (index, dest, len) = match self.lba_range(cmd.nsid, sdlba, total) {
            Ok(r) => r,
            Err(s) => return s,
        };
        let ns = &mut self.namespaces[index];
        if sources.iter().any(|&(slba, nlb, _)| ns.uncorrectable.range(slba..slba + nlb).next().is_some()) {
            return UNRECOVERED_READ_ERROR;
        }
        let mut data = Vec::with_capacity(len);
        for (_, _, (_, start, n)) in sources {
            data.extend_from_slice(&ns.data[start..start + n]);
        }
        ns.data[dest..dest + len].copy_from_slice(&data);
        ns.uncorrectable.retain(|b| !(sdlba..sdlba + total).contains(b));
        self.stats.copies += 1;
        SUCCESS
    }
}
