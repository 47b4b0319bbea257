//! The NVM I/O command set (NVMe 1.4 section 6): Read, Write, Compare,
//! Flush, Write Zeroes, Verify, Write Uncorrectable, Dataset Management and
//! Copy against the
//! namespaces' backing store, with every LBA range checked against its
//! namespace, and the transfer size of Read, Write and Compare against MDTS.

use super::pi;
use super::status::{
    COMMAND_SIZE_LIMIT_EXCEEDED, COMPARE_FAILURE, INVALID_FIELD, INVALID_NAMESPACE, INVALID_OPCODE,
    INVALID_PROTECTION_INFORMATION, LBA_OUT_OF_RANGE, SUCCESS, UNRECOVERED_READ_ERROR,
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
            IoOpcode::VERIFY => self.verify(cmd),
            IoOpcode::DATASET_MANAGEMENT => self.dataset_management(cmd),
            IoOpcode::COPY if self.cfg.copy => self.copy(cmd),
            IoOpcode::ZONE_MANAGEMENT_SEND => self.zone_send(cmd),
            IoOpcode::ZONE_MANAGEMENT_RECEIVE => self.zone_receive(cmd),
            IoOpcode::ZONE_APPEND => return self.zone_append(cmd),
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

    /// Read, Write and Compare, with the namespace's metadata (interleaved
    /// through the PRPs on an extended-LBA namespace, else through MPTR)
    /// and protection information (PRACT, PRCHK).
    pub(super) fn read_write(&mut self, cmd: &SubmissionEntry) -> u16 {
        let Some(index) = self.active_namespace(cmd.nsid) else { return INVALID_NAMESPACE };
        if !self.psdt_ok(cmd) {
            return INVALID_FIELD;
        }
        let slba = cmd.cdw10 as u64 | ((cmd.cdw11 as u64) << 32);
        let cdw12 = ReadWriteCdw12::from_bits(cmd.cdw12);
        let nlb = cdw12.nlb() as u64 + 1;
        let (md, bs) = (self.namespaces[index].md, self.namespaces[index].cfg.block_size as usize);
        let asked = pi::Asked::of(&md, cmd.cdw3, cmd.cdw12, cmd.cdw14, cmd.cdw15);
        if asked.prinfo.into_bits() != 0 && md.pi == 0 {
            return INVALID_FIELD;
        }
        let lba_bits = if md.pif == 2 { slba & 0xffff_ffff_ffff } else { slba & 0xffff_ffff };
        if md.pi == 1 && asked.prinfo.check_ref_tag() && asked.ref_tag != lba_bits {
            return INVALID_PROTECTION_INFORMATION;
        }
        let (n, ms) = (nlb as usize, usize::from(md.ms));
        // With PRACT, metadata that is only protection information does
        // not move.
        let tuple = if md.pif == 2 { 16 } else { 8 };
        let meta_moves = ms > 0 && !(asked.prinfo.pract() && md.pi != 0 && ms == tuple);
        let host_meta = if meta_moves { n * ms } else { 0 };
        let wire = n * bs + if md.extended { host_meta } else { 0 };
        if self.cfg.mdts != 0 && wire as u64 > PAGE << self.cfg.mdts.min(40) {
            return INVALID_FIELD;
        }
        let (index, start, len) = match self.lba_range(cmd.nsid, slba, nlb) {
            Ok(r) => r,
            Err(s) => return s,
        };
        let mstart = slba as usize * ms;
        let opcode = IoOpcode(cmd.cdw0.opc());
        let blocks = slba..slba + nlb;
        // A block made uncorrectable fails reads and compares until written.
        if opcode != IoOpcode::WRITE
            && self.namespaces[index].uncorrectable.range(blocks.clone()).next().is_some()
        {
            return UNRECOVERED_READ_ERROR;
        }
        let separate = meta_moves && !md.extended;
        if opcode == IoOpcode::WRITE || opcode == IoOpcode::COMPARE {
            let wire_bytes = match self.read_from_host(cmd, wire) {
                Ok(d) => d,
                Err(s) => return s,
            };
            let (data, mut meta) = if md.extended && meta_moves {
                deinterleave(&wire_bytes, bs, ms)
            } else {
                (wire_bytes, vec![0; n * ms])
            };
            if separate {
                meta = match self.read_metadata(cmd, host_meta) {
                    Ok(m) => m,
                    Err(status) => return status,
                };
            }
            let ns = &mut self.namespaces[index];
            if opcode == IoOpcode::COMPARE {
                let stored = (&ns.data[start..start + len], &ns.meta[mstart..mstart + n * ms]);
                if md.pi != 0 && asked.checks() {
                    let status = pi::check(&md, &asked, stored.0, stored.1, bs);
                    if status != SUCCESS {
                        return status;
                    }
                }
                return if stored.0 == &data[..] && (!meta_moves || stored.1 == &meta[..]) {
                    SUCCESS
                } else {
                    COMPARE_FAILURE
                };
            }
            if md.pi != 0 && asked.prinfo.pract() {
                pi::insert(&md, &asked, &data, &mut meta, bs);
            } else if md.pi != 0 && asked.checks() {
                let status = pi::check(&md, &asked, &data, &meta, bs);
                if status != SUCCESS {
                    return status;
                }
            }
            // A zone takes writes only at its write pointer.
            if let Some(zones) = ns.zones.as_mut() {
                let status = zones.write(slba, nlb);
                if status != SUCCESS {
                    return status;
                }
            }
            ns.data[start..start + len].copy_from_slice(&data);
            ns.meta[mstart..mstart + n * ms].copy_from_slice(&meta);
            ns.uncorrectable.retain(|b| !blocks.contains(b));
            SUCCESS
        } else {
            let ns = &self.namespaces[index];
            let (data, meta) = (&ns.data[start..start + len], &ns.meta[mstart..mstart + n * ms]);
            if md.pi != 0 && asked.checks() {
                let status = pi::check(&md, &asked, data, meta, bs);
                if status != SUCCESS {
                    return status;
                }
            }
            let out = if md.extended && meta_moves { interleave(data, meta, bs, ms) } else { data.to_vec() };
            let meta = meta.to_vec();
            if separate {
                let status = self.write_metadata(cmd, &meta);
                if status != SUCCESS {
                    return status;
                }
            }
            self.write_to_host(cmd, &out)
        }
    }

    /// Write Zeroes: data and metadata zeroed; with PRACT on a namespace
    /// with protection information, each block's tuple inserted (PRCHK is
    /// Invalid Protection Information: Write Zeroes checks nothing).
    fn write_zeroes(&mut self, cmd: &SubmissionEntry) -> u16 {
        let slba = cmd.cdw10 as u64 | ((cmd.cdw11 as u64) << 32);
        let nlb = ReadWriteCdw12::from_bits(cmd.cdw12).nlb() as u64 + 1;
        match self.lba_range(cmd.nsid, slba, nlb) {
            Ok((index, start, len)) => {
                let ns = &mut self.namespaces[index];
                let md = ns.md;
                let asked = pi::Asked::of(&md, cmd.cdw3, cmd.cdw12, cmd.cdw14, cmd.cdw15);
                if asked.prinfo.into_bits() != 0 && md.pi == 0 {
                    return INVALID_FIELD;
                }
                if asked.checks() {
                    return INVALID_PROTECTION_INFORMATION;
                }
                ns.data[start..start + len].fill(0);
                let ms = usize::from(md.ms);
                let meta = &mut ns.meta[slba as usize * ms..(slba + nlb) as usize * ms];
                meta.fill(0);
                if md.pi != 0 && asked.prinfo.pract() {
                    let bs = ns.cfg.block_size as usize;
                    pi::insert(&md, &asked, &ns.data[start..start + len], meta, bs);
                }
                ns.uncorrectable.retain(|b| !(slba..slba + nlb).contains(b));
                SUCCESS
            }
            Err(s) => s,
        }
    }

    /// Verify: the blocks read (an uncorrectable one fails) and, as PRCHK
    /// asks, their protection information checked; PRACT is Invalid
    /// Protection Information.
    fn verify(&mut self, cmd: &SubmissionEntry) -> u16 {
        let slba = cmd.cdw10 as u64 | ((cmd.cdw11 as u64) << 32);
        let nlb = ReadWriteCdw12::from_bits(cmd.cdw12).nlb() as u64 + 1;
        let (index, start, len) = match self.lba_range(cmd.nsid, slba, nlb) {
            Ok(r) => r,
            Err(s) => return s,
        };
        let ns = &self.namespaces[index];
        let md = ns.md;
        let asked = pi::Asked::of(&md, cmd.cdw3, cmd.cdw12, cmd.cdw14, cmd.cdw15);
        if asked.prinfo.into_bits() != 0 && md.pi == 0 {
            return INVALID_FIELD;
        }
        if asked.prinfo.pract() {
            return INVALID_PROTECTION_INFORMATION;
        }
        if ns.uncorrectable.range(slba..slba + nlb).next().is_some() {
            return UNRECOVERED_READ_ERROR;
        }
        if md.pi != 0 && asked.checks() {
            let ms = usize::from(md.ms);
            let meta = &ns.meta[slba as usize * ms..(slba + nlb) as usize * ms];
            return pi::check(&md, &asked, &ns.data[start..start + len], meta, ns.cfg.block_size as usize);
        }
        SUCCESS
    }

    /// Dataset Management: with the Deallocate attribute, the ranges read as
    /// zeros afterwards.
    fn dataset_management(&mut self, cmd: &SubmissionEntry) -> u16 {
        if self.active_namespace(cmd.nsid).is_none() {
            return INVALID_NAMESPACE;
        }
        if !self.psdt_ok(cmd) {
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
    /// block made uncorrectable fails the read side. With protection
    /// information (16-bit guard): PRINFOR's checks of each range against
    /// its EILBRT, ELBAT and ELBATM as it is read (type 1 wants EILBRT to be
    /// the range's LBA: Invalid Protection Information otherwise), and
    /// PRINFOW's for the destination: with PRACT new tuples from ILBRT and
    /// LBAT, else the source's checked as PRINFOW asks. PRACT must be the
    /// same in both (Invalid Field, as QEMU).
    fn copy(&mut self, cmd: &SubmissionEntry) -> u16 {
        let Some(at) = self.active_namespace(cmd.nsid) else {
            return INVALID_NAMESPACE;
        };
        let format = (cmd.cdw12 >> 8) & 0xf;
        let md = self.namespaces[at].md;
        let bs = self.namespaces[at].cfg.block_size as usize;
        let prinfor = nvme_spec::pi::Prinfo::from_bits((cmd.cdw12 >> 12) as u8 & 0xf);
        // PRINFOW sits where a write's PRINFO does: `Asked` reads it there.
        let write = pi::Asked::of(&md, 0, cmd.cdw12, cmd.cdw14, cmd.cdw15);
        let asked_pi = prinfor.into_bits() != 0 || write.prinfo.into_bits() != 0;
        if !self.psdt_ok(cmd)
            || format != 0
            || (asked_pi && (md.pi == 0 || md.pif != 0))
            || prinfor.pract() != write.prinfo.pract()
        {
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
        let mut expected = Vec::with_capacity(ranges);
        let mut total = 0u64;
        for r in list.chunks_exact(32) {
            let slba = u64::from_le_bytes(r[8..16].try_into().unwrap_or_default());
            let nlb = u64::from(u16::from_le_bytes([r[16], r[17]])) + 1;
            let eilbrt = u32::from_le_bytes(r[24..28].try_into().unwrap_or_default());
            let read = pi::Asked {
                prinfo: prinfor,
                ref_tag: u64::from(eilbrt),
                app_tag: u16::from_le_bytes([r[28], r[29]]),
                app_mask: u16::from_le_bytes([r[30], r[31]]),
            };
            if md.pi == 1 && prinfor.check_ref_tag() && u64::from(eilbrt) != slba & 0xffff_ffff {
                return INVALID_PROTECTION_INFORMATION;
            }
            expected.push(read);
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
        let ms = usize::from(ns.md.ms);
        let (mut data, mut meta) = (Vec::with_capacity(len), Vec::new());
        for ((slba, nlb, (_, start, n)), read) in sources.into_iter().zip(&expected) {
            let (d, m) =
                (&ns.data[start..start + n], &ns.meta[slba as usize * ms..(slba + nlb) as usize * ms]);
            if read.checks() {
                let status = pi::check(&md, read, d, m, bs);
                if status != SUCCESS {
                    return status;
                }
            }
            data.extend_from_slice(d);
            meta.extend_from_slice(m);
        }
        if md.pi != 0 && write.prinfo.pract() {
            pi::insert(&md, &write, &data, &mut meta, bs);
        } else if write.checks() {
            let status = pi::check(&md, &write, &data, &meta, bs);
            if status != SUCCESS {
                return status;
            }
        }
        ns.data[dest..dest + len].copy_from_slice(&data);
        ns.meta[sdlba as usize * ms..sdlba as usize * ms + meta.len()].copy_from_slice(&meta);
        ns.uncorrectable.retain(|b| !(sdlba..sdlba + total).contains(b));
        self.stats.copies += 1;
        SUCCESS
    }
}

/// Splits an extended-LBA transfer into the blocks' data and metadata.
fn deinterleave(wire: &[u8], bs: usize, ms: usize) -> (Vec<u8>, Vec<u8>) {
    let (mut data, mut meta) = (Vec::with_capacity(wire.len()), Vec::with_capacity(wire.len()));
    for block in wire.chunks_exact(bs + ms) {
        data.extend_from_slice(&block[..bs]);
        meta.extend_from_slice(&block[bs..]);
    }
    (data, meta)
}

/// The blocks' data with each block's metadata after it.
fn interleave(data: &[u8], meta: &[u8], bs: usize, ms: usize) -> Vec<u8> {
    data.chunks_exact(bs).zip(meta.chunks_exact(ms)).flat_map(|(d, m)| d.iter().chain(m).copied()).collect()
}
