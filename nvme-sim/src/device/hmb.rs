//! The host memory buffer (NVMe 1.4 section 8.9; Set and Get Features FID
//! 0Dh, section 5.21.1.13): host memory the controller asks for (HMPRE,
//! HMMIN, HMMINDS, HMMAXD) and then owns. The simulated controller checks
//! the descriptor list as the specification asks, and then uses the buffer:
//! with every I/O command it fetches, it checks the mark it last left at the
//! start of one piece and leaves a new one there. So a host that writes the
//! buffer, frees it while it is enabled, or hands back other memory with
//! Memory Return, shows in [`SimStats`](super::SimStats).

use super::status::{COMMAND_SEQUENCE_ERROR, INVALID_FIELD, SUCCESS};
use super::State;
use nvme_spec::command::SubmissionEntry;
use nvme_spec::dwords::HostMemoryBuffer;

const PAGE: u64 = 4096;

/// The buffer the host handed over.
pub(crate) struct Hmb {
    /// The pieces, (device address, bytes), in descriptor order.
    pieces: Vec<(u64, u64)>,
    /// The descriptor list: address and entries.
    list: (u64, u32),
    pages: u32,
    /// The controller uses it: enabled, and neither disabled nor reset since.
    enabled: bool,
    /// The mark last left at the start of each piece.
    marks: Vec<u64>,
    touches: u64,
}

impl Hmb {
    /// The device address ranges the controller relies on while enabled:
    /// every piece, and the descriptor list.
    pub(crate) fn spans(&self) -> impl Iterator<Item = core::ops::Range<u64>> + '_ {
        let list = self.list.0..self.list.0 + u64::from(self.list.1) * 16;
        self.pieces
            .iter()
            .filter(|_| self.enabled)
            .map(|&(a, n)| a..a + n)
            .chain(self.enabled.then_some(list))
    }
}

impl State {
    /// Set Features / Host Memory Buffer.
    pub(super) fn set_hmb(&mut self, cmd: &SubmissionEntry) -> u16 {
        let dw = HostMemoryBuffer::from_bits(cmd.cdw11);
        let enabled = self.hmb.as_ref().is_some_and(|h| h.enabled);
        if !dw.ehm() {
            if let Some(h) = self.hmb.as_mut() {
                h.enabled = false;
            }
            return SUCCESS;
        }
        if enabled {
            return COMMAND_SEQUENCE_ERROR;
        }
        let (pages, count) = (cmd.cdw12, cmd.cdw15);
        let list = u64::from(cmd.cdw13) | u64::from(cmd.cdw14) << 32;
        let max = if self.cfg.hmmaxd == 0 { 256 } else { u32::from(self.cfg.hmmaxd) };
        if count == 0 || count > max || !list.is_multiple_of(16) || pages < self.cfg.hmmin {
            return INVALID_FIELD;
        }
        let mut raw = vec![0u8; count as usize * 16];
        if !self.mem.device_read(list, &mut raw) {
            return INVALID_FIELD;
        }
        let mut pieces = Vec::new();
        let mut total = 0u64;
        for e in raw.chunks_exact(16) {
            let badd = u64::from_le_bytes(e[..8].try_into().unwrap_or_default());
            let bsize = u32::from_le_bytes(e[8..12].try_into().unwrap_or_default());
            let bytes = u64::from(bsize) * PAGE;
            if !badd.is_multiple_of(PAGE)
                || bsize < self.cfg.hmminds.max(1)
                || self.mem.device_range(badd, bytes as usize).is_none()
            {
                return INVALID_FIELD;
            }
            pieces.push((badd, bytes));
            total += u64::from(bsize);
        }
        if total != u64::from(pages) {
            return INVALID_FIELD;
        }
        self.stats.hmb_enables += 1;
        let returned = match self.hmb.take() {
            Some(old) if dw.mr() => {
                // Memory Return: the same pieces, and what the controller
                // left in them.
                let same = old.pieces == pieces;
                let intact = same
                    && old
                        .pieces
                        .iter()
                        .zip(&old.marks)
                        .all(|(&(a, _), &m)| self.mem.device_read_u64(a) == Some(m));
                if !intact {
                    self.stats.hmb_lost += 1;
                }
                intact.then_some(old.marks)
            }
            _ => None,
        };
        let marks = match returned {
            Some(marks) => marks,
            None => {
                let marks: Vec<u64> = (0..pieces.len() as u64).map(|i| 0x4842_0000_0000_0000 | i).collect();
                for (&(a, _), &m) in pieces.iter().zip(&marks) {
                    self.mem.device_write(a, &m.to_le_bytes());
                }
                marks
            }
        };
        self.hmb = Some(Hmb { pieces, list: (list, count), pages, enabled: true, marks, touches: 0 });
        SUCCESS
    }

    /// Get Features / Host Memory Buffer (SEL current): EHM in DW0, the
    /// attributes in the 4096-byte data structure.
    pub(super) fn get_hmb(&mut self, cmd: &SubmissionEntry) -> (u16, u32) {
        let mut attrs = vec![0u8; 4096];
        let mut ehm = 0;
        if let Some(h) = self.hmb.as_ref().filter(|h| h.enabled) {
            ehm = 1;
            attrs[0..4].copy_from_slice(&h.pages.to_le_bytes());
            attrs[4..12].copy_from_slice(&h.list.0.to_le_bytes());
            attrs[12..16].copy_from_slice(&h.list.1.to_le_bytes());
        }
        (self.write_to_host(cmd, &attrs), ehm)
    }

    /// The controller uses the buffer (with each I/O command): checks the
    /// mark at the start of the next piece and leaves a new one.
    pub(super) fn touch_hmb(&mut self) {
        let Some(h) = self.hmb.as_mut().filter(|h| h.enabled) else { return };
        let i = (h.touches % h.pieces.len() as u64) as usize;
        h.touches += 1;
        let addr = h.pieces[i].0;
        let next = h.marks[i].wrapping_add(1 << 16);
        let found = self.mem.device_read_u64(addr);
        self.stats.hmb_touches += 1;
        if found != Some(h.marks[i]) || !self.mem.device_write(addr, &next.to_le_bytes()) {
            self.stats.hmb_corrupted += 1;
        }
        h.marks[i] = next;
    }

    /// A controller reset disables the buffer (the pieces are remembered,
    /// for Memory Return).
    pub(super) fn hmb_reset(&mut self) {
        if let Some(h) = self.hmb.as_mut() {
            h.enabled = false;
        }
    }
}
