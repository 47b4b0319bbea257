//! Data transfer: walking a command's PRP1/PRP2 and PRP lists (NVMe 1.4
//! section 4.3) and moving data between host memory and the controller.
//! Every address comes from the host and is checked: a bad one fails the
//! command with Data Transfer Error (or PRP Offset Invalid), never a panic.

use super::status::{DATA_TRANSFER_ERROR, PRP_OFFSET_INVALID, SUCCESS};
use super::{State, PAGE};
use hal_traits::PAGE_SIZE;
use nvme_spec::command::SubmissionEntry;

impl State {
    /// The memory segments (device address, length) that PRP1/PRP2 describe
    /// for `len` bytes, walking PRP lists (NVMe 1.4 section 4.3). Every list
    /// entry read is bounds-checked; the data pages are checked by the caller.
    fn prp_segments(&self, prp1: u64, prp2: u64, len: usize) -> Result<Vec<(u64, usize)>, u16> {
        let mut segs = Vec::new();
        if len == 0 {
            return Ok(segs);
        }
        if prp1 & 3 != 0 {
            return Err(PRP_OFFSET_INVALID);
        }
        let first = len.min((PAGE - prp1 % PAGE) as usize);
        segs.push((prp1, first));
        let mut left = len - first;
        if left == 0 {
            return Ok(segs);
        }
        if left <= PAGE_SIZE {
            if !prp2.is_multiple_of(PAGE) {
                return Err(PRP_OFFSET_INVALID);
            }
            segs.push((prp2, left));
            return Ok(segs);
        }
        // PRP2 points to a list; its entries are qwords.
        if prp2 & 7 != 0 {
            return Err(PRP_OFFSET_INVALID);
        }
        let mut at = prp2;
        while left > 0 {
            let entry = self.mem.device_read_u64(at).ok_or(DATA_TRANSFER_ERROR)?;
            if at % PAGE == PAGE - 8 && left > PAGE_SIZE {
                // The last entry of a full list page points to the next list page.
                if !entry.is_multiple_of(PAGE) {
                    return Err(PRP_OFFSET_INVALID);
                }
                at = entry;
                continue;
            }
            if !entry.is_multiple_of(PAGE) {
                return Err(PRP_OFFSET_INVALID);
            }
            let n = left.min(PAGE_SIZE);
            segs.push((entry, n));
            left -= n;
            at = at.checked_add(8).ok_or(DATA_TRANSFER_ERROR)?;
        }
        Ok(segs)
    }

    /// Device -> host: writes `data` where the command's PRPs point.
    pub(super) fn write_to_host(&mut self, cmd: &SubmissionEntry, data: &[u8]) -> u16 {
        let segs = match self.prp_segments(cmd.prp1, cmd.prp2, data.len()) {
            Ok(s) => s,
            Err(status) => return status,
        };
        if segs.iter().any(|&(addr, n)| self.mem.device_range(addr, n).is_none()) {
            return DATA_TRANSFER_ERROR;
        }
        let mut at = 0;
        for (addr, n) in segs {
            self.mem.device_write(addr, &data[at..at + n]);
            at += n;
        }
        SUCCESS
    }

    /// Host -> device: reads `len` bytes from where the command's PRPs point.
    pub(super) fn read_from_host(&self, cmd: &SubmissionEntry, len: usize) -> Result<Vec<u8>, u16> {
        let segs = self.prp_segments(cmd.prp1, cmd.prp2, len)?;
        let mut data = vec![0u8; len];
        let mut at = 0;
        for (addr, n) in segs {
            if !self.mem.device_read(addr, &mut data[at..at + n]) {
                return Err(DATA_TRANSFER_ERROR);
            }
            at += n;
        }
        Ok(data)
    }
}
