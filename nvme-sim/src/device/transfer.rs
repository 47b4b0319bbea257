//! Data transfer: walking a command's PRP1/PRP2 and PRP lists (NVMe 1.4
//! section 4.3), or its SGL (section 4.4, PSDT 01b, where `SimConfig::sgls`
//! offers them), and moving data between host memory and the controller.
//! Every address comes from the host and is checked: a bad one fails the
//! command with Data Transfer Error (or PRP Offset Invalid), never a panic.

use super::status::{
    DATA_SGL_LENGTH_INVALID, DATA_TRANSFER_ERROR, INVALID_FIELD, INVALID_SGL_SEGMENT,
    METADATA_SGL_LENGTH_INVALID, PRP_OFFSET_INVALID, SGL_GRANULARITY_INVALID, SGL_TYPE_INVALID, SUCCESS,
};
use super::{State, PAGE};
use hal_traits::PAGE_SIZE;
use nvme_spec::command::{SglDescriptor, SubmissionEntry};

/// The most SGL descriptors one command may use (a bound on a hostile
/// chain that loops).
const MAX_SGL_DESCRIPTORS: usize = 8192;

impl State {
    /// The memory segments of `len` bytes of `cmd`'s data: its PRPs, or
    /// its SGL.
    fn data_segments(&self, cmd: &SubmissionEntry, len: usize) -> Result<Vec<(u64, usize)>, u16> {
        match cmd.cdw0.psdt() {
            0 => self.prp_segments(cmd.prp1, cmd.prp2, len),
            1 | 2 if self.psdt_ok(cmd) => self.sgl_segments(cmd.prp1, cmd.prp2, len),
            _ => Err(INVALID_FIELD),
        }
    }

    /// Whether `cmd`'s PSDT is one the controller takes for I/O data: PRPs,
    /// SGLs where SGLS offers them, and SGLs with an SGL for metadata
    /// (10b) where SGLS bit 19 offers that too.
    pub(super) fn psdt_ok(&self, cmd: &SubmissionEntry) -> bool {
        match cmd.cdw0.psdt() {
            0 => true,
            1 => self.cfg.sgls & 3 != 0,
            2 => self.cfg.sgls & 3 != 0 && self.cfg.sgls & 1 << 19 != 0,
            _ => false,
        }
    }

    /// The memory segments of `len` bytes of `cmd`'s separate metadata:
    /// the run at MPTR, or with PSDT 10b the SGL whose one descriptor MPTR
    /// names (qword-aligned).
    fn metadata_segments(&self, cmd: &SubmissionEntry, len: usize) -> Result<Vec<(u64, usize)>, u16> {
        if cmd.cdw0.psdt() != 2 {
            return Ok(vec![(cmd.mptr, len)]);
        }
        if !cmd.mptr.is_multiple_of(8) {
            return Err(INVALID_FIELD);
        }
        let q0 = self.mem.device_read_u64(cmd.mptr).ok_or(DATA_TRANSFER_ERROR)?;
        let q1 = self.mem.device_read_u64(cmd.mptr.checked_add(8).ok_or(DATA_TRANSFER_ERROR)?);
        self.sgl_walk(q0, q1.ok_or(DATA_TRANSFER_ERROR)?, len, METADATA_SGL_LENGTH_INVALID)
    }

    /// `len` bytes of `cmd`'s separate metadata from host memory.
    pub(super) fn read_metadata(&self, cmd: &SubmissionEntry, len: usize) -> Result<Vec<u8>, u16> {
        let mut out = vec![0u8; len];
        let mut at = 0;
        for (addr, n) in self.metadata_segments(cmd, len)? {
            if !self.mem.device_read(addr, &mut out[at..at + n]) {
                return Err(DATA_TRANSFER_ERROR);
            }
            at += n;
        }
        Ok(out)
    }

    /// `meta`, `cmd`'s separate metadata, into host memory.
    pub(super) fn write_metadata(&mut self, cmd: &SubmissionEntry, meta: &[u8]) -> u16 {
        let segments = match self.metadata_segments(cmd, meta.len()) {
            Ok(s) => s,
            Err(status) => return status,
        };
        let mut at = 0;
        for (addr, n) in segments {
            if !self.mem.device_write(addr, &meta[at..at + n]) {
                return DATA_TRANSFER_ERROR;
            }
            at += n;
        }
        SUCCESS
    }

    /// The memory segments an SGL describes for `len` bytes (section 4.4):
    /// Data Block descriptors, in DPTR or in lists that Segment and Last
    /// Segment descriptors name. Every descriptor is read bounds-checked;
    /// the descriptors must describe exactly `len` bytes.
    fn sgl_segments(&self, dptr1: u64, dptr2: u64, len: usize) -> Result<Vec<(u64, usize)>, u16> {
        self.sgl_walk(dptr1, dptr2, len, DATA_SGL_LENGTH_INVALID)
    }

    /// As [`sgl_segments`](Self::sgl_segments), `wrong_length` the status
    /// of a list that describes another length (Data or Metadata SGL
    /// Length Invalid).
    fn sgl_walk(
        &self,
        dptr1: u64,
        dptr2: u64,
        len: usize,
        wrong_length: u16,
    ) -> Result<Vec<(u64, usize)>, u16> {
        let dword = self.cfg.sgls & 3 == 2;
        let mut segs = Vec::new();
        let mut total = 0usize;
        let mut data = |d: SglDescriptor, segs: &mut Vec<(u64, usize)>| -> Result<(), u16> {
            if d.identifier & 0xf != 0 {
                return Err(SGL_TYPE_INVALID);
            }
            if dword && !(d.address.is_multiple_of(4) && d.length.is_multiple_of(4)) {
                return Err(SGL_GRANULARITY_INVALID);
            }
            total = total.checked_add(d.length as usize).ok_or(DATA_SGL_LENGTH_INVALID)?;
            if d.length > 0 {
                segs.push((d.address, d.length as usize));
            }
            Ok(())
        };
        let mut next = SglDescriptor::from_qwords([dptr1, dptr2]);
        let mut seen = 0usize;
        loop {
            match next.kind() {
                SglDescriptor::DATA_BLOCK => {
                    data(next, &mut segs)?;
                    break;
                }
                kind @ (SglDescriptor::SEGMENT | SglDescriptor::LAST_SEGMENT) => {
                    let count = next.length as usize / SglDescriptor::SIZE;
                    if next.length == 0
                        || !(next.length as usize).is_multiple_of(SglDescriptor::SIZE)
                        || next.identifier & 0xf != 0
                    {
                        return Err(INVALID_SGL_SEGMENT);
                    }
                    let mut chained = None;
                    for i in 0..count {
                        seen += 1;
                        if seen > MAX_SGL_DESCRIPTORS {
                            return Err(INVALID_SGL_SEGMENT);
                        }
                        let at = next
                            .address
                            .checked_add((i * SglDescriptor::SIZE) as u64)
                            .ok_or(DATA_TRANSFER_ERROR)?;
                        let q0 = self.mem.device_read_u64(at).ok_or(DATA_TRANSFER_ERROR)?;
                        let q1 = self.mem.device_read_u64(at.checked_add(8).ok_or(DATA_TRANSFER_ERROR)?);
                        let q1 = q1.ok_or(DATA_TRANSFER_ERROR)?;
                        let d = SglDescriptor::from_qwords([q0, q1]);
                        match d.kind() {
                            SglDescriptor::DATA_BLOCK => data(d, &mut segs)?,
                            // Only the last descriptor of a Segment's list
                            // chains on; a Last Segment's list does not.
                            SglDescriptor::SEGMENT | SglDescriptor::LAST_SEGMENT
                                if kind == SglDescriptor::SEGMENT && i + 1 == count =>
                            {
                                chained = Some(d);
                            }
                            SglDescriptor::SEGMENT | SglDescriptor::LAST_SEGMENT => {
                                return Err(INVALID_SGL_SEGMENT)
                            }
                            _ => return Err(SGL_TYPE_INVALID),
                        }
                    }
                    match chained {
                        Some(d) => next = d,
                        None if kind == SglDescriptor::LAST_SEGMENT => break,
                        None => return Err(INVALID_SGL_SEGMENT),
                    }
                }
                _ => return Err(SGL_TYPE_INVALID),
            }
        }
        if total != len {
            return Err(wrong_length);
        }
        Ok(segs)
    }

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
        let segs = match self.data_segments(cmd, data.len()) {
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
        let segs = self.data_segments(cmd, len)?;
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
