//! Namespace Management (create, delete) and Namespace Attachment (attach,
//! detach) for the one controller of this NVM subsystem (CNTLID
//! [`CNTLID`]), and the Identify lists that go with them (CNS 10h to 13h).
//! A namespace is allocated while it is in `State::namespaces`, attached
//! while it is `active`. New namespaces take the lowest free NSID up to NN
//! and come out of [`SimConfig::capacity_bytes`](crate::SimConfig::capacity_bytes);
//! LBA format 0 has 512-byte blocks and format 1 4096-byte ones, without
//! metadata, protection or thin provisioning.

use super::status::{
    ALREADY_ATTACHED, CONTROLLER_LIST_INVALID, INSUFFICIENT_CAPACITY, INVALID_FIELD, INVALID_FORMAT,
    INVALID_NAMESPACE, NOT_ATTACHED, NSID_UNAVAILABLE, SUCCESS, THIN_PROVISIONING,
};
use super::{Namespace, State};
use crate::config::SimNamespace;
use hal_traits::PAGE_SIZE;
use nvme_spec::command::SubmissionEntry;

/// This controller's identifier in its NVM subsystem.
pub(super) const CNTLID: u16 = 1;

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl State {
    /// Bytes the allocated namespaces take.
    fn allocated_bytes(&self) -> usize {
        self.namespaces.iter().map(|n| n.data.len()).sum()
    }

    /// Namespace Management: SEL 0 create, 1 delete. Returns the status and
    /// DW0 (the new NSID).
    pub(super) fn namespace_management(&mut self, cmd: &SubmissionEntry) -> (u16, u32) {
        match cmd.cdw10 & 0xf {
            0 => self.create_namespace(cmd),
            1 => (self.delete_namespace(cmd.nsid), 0),
            _ => (INVALID_FIELD, 0),
        }
    }

    fn create_namespace(&mut self, cmd: &SubmissionEntry) -> (u16, u32) {
        let data = match self.read_from_host(cmd, PAGE_SIZE) {
            Ok(d) => d,
            Err(status) => return (status, 0),
        };
        let (nsze, ncap, flbas, dps) = (u64_at(&data, 0), u64_at(&data, 8), data[26], data[29]);
        let lbaf = usize::from(flbas & 0xf) | usize::from(flbas >> 5 & 3) << 4;
        if lbaf > 1 || flbas & 0x10 != 0 {
            return (INVALID_FORMAT, 0);
        }
        if dps != 0 || nsze == 0 {
            return (INVALID_FIELD, 0);
        }
        if ncap != nsze {
            return (THIN_PROVISIONING, 0);
        }
        let block = [512u32, 4096][lbaf];
        let bytes = nsze.checked_mul(u64::from(block)).and_then(|b| usize::try_from(b).ok());
        let Some(bytes) =
            bytes.filter(|&b| b <= self.cfg.capacity_bytes.saturating_sub(self.allocated_bytes()))
        else {
            return (INSUFFICIENT_CAPACITY, 0);
        };
        let Some(nsid) = (1..=self.nn).find(|&id| self.namespaces.iter().all(|n| n.cfg.nsid != id)) else {
            return (NSID_UNAVAILABLE, 0);
        };
        self.namespaces.push(Namespace {
            cfg: SimNamespace { nsid, block_size: block, blocks: nsze },
            active: false,
            data: vec![0; bytes],
            formats: [512, 4096],
            uncorrectable: Default::default(),
            reservation: Default::default(),
            md: crate::SimMetadata { nsid, ..Default::default() },
            meta: Vec::new(),
            zones: None,
        });
        self.namespaces.sort_by_key(|n| n.cfg.nsid);
        self.stats.namespaces_created += 1;
        (SUCCESS, nsid)
    }

    fn delete_namespace(&mut self, nsid: u32) -> u16 {
        let doomed: Vec<(u32, bool)> = self
            .namespaces
            .iter()
            .filter(|n| nsid == u32::MAX || n.cfg.nsid == nsid)
            .map(|n| (n.cfg.nsid, n.active))
            .collect();
        if doomed.is_empty() {
            return INVALID_NAMESPACE;
        }
        self.namespaces.retain(|n| nsid != u32::MAX && n.cfg.nsid != nsid);
        for (id, attached) in doomed {
            if attached {
                self.namespace_changed(id);
            }
        }
        SUCCESS
    }

    /// Namespace Attachment: SEL 0 attach, 1 detach, for the controllers in
    /// the Controller List the host sends (this one, CNTLID 1, only).
    pub(super) fn namespace_attachment(&mut self, cmd: &SubmissionEntry) -> u16 {
        let attach = match cmd.cdw10 & 0xf {
            0 => true,
            1 => false,
            _ => return INVALID_FIELD,
        };
        let list = match self.read_from_host(cmd, PAGE_SIZE) {
            Ok(d) => d,
            Err(status) => return status,
        };
        let count = usize::from(u16::from_le_bytes([list[0], list[1]]));
        let ids = list[2..].chunks_exact(2).take(count).map(|c| u16::from_le_bytes([c[0], c[1]]));
        if count == 0 || count > 2047 || ids.clone().any(|id| id != CNTLID) {
            return CONTROLLER_LIST_INVALID;
        }
        let Some(ns) = self.namespaces.iter_mut().find(|n| n.cfg.nsid == cmd.nsid) else {
            return INVALID_FIELD;
        };
        match (attach, ns.active) {
            (true, true) => return ALREADY_ATTACHED,
            (false, false) => return NOT_ATTACHED,
            _ => ns.active = attach,
        }
        self.namespace_changed(cmd.nsid);
        SUCCESS
    }

    /// Identify CNS 10h: the allocated NSIDs above `nsid`.
    pub(super) fn allocated_list(&self, nsid: u32, page: &mut [u8]) {
        let allocated = self.namespaces.iter().filter(|n| n.cfg.nsid > nsid).take(1024);
        for (i, ns) in allocated.enumerate() {
            page[i * 4..i * 4 + 4].copy_from_slice(&ns.cfg.nsid.to_le_bytes());
        }
    }

    /// Identify CNS 12h (the controllers `nsid` is attached to) and 13h
    /// (every controller), from CNTID up: this one, or none.
    pub(super) fn controller_list(&self, attached_to: Option<u32>, from: u16, page: &mut [u8]) -> u16 {
        if let Some(nsid) = attached_to {
            let Some(ns) = self.namespaces.iter().find(|n| n.cfg.nsid == nsid) else {
                return INVALID_FIELD;
            };
            if !ns.active {
                return SUCCESS;
            }
        }
        if from <= CNTLID {
            page[0..2].copy_from_slice(&1u16.to_le_bytes());
            page[2..4].copy_from_slice(&CNTLID.to_le_bytes());
        }
        SUCCESS
    }
}
