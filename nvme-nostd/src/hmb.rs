//! The host memory buffer (NVMe 1.4 section 8.9; Set Features FID 0Dh,
//! section 5.21.1.13): host memory that a controller without DRAM of its own
//! asks for (Identify Controller HMPRE, HMMIN) and then owns. The driver
//! hands it over at attach where [`ControllerOptions::host_memory_buffer`]
//! allows, gives the same memory back after every reset (a reset disables
//! the buffer; Memory Return says its contents are as the controller left
//! them), and frees it only once the controller is disabled. The CPU never
//! reads or writes it after handing it over.
//!
//! [`ControllerOptions::host_memory_buffer`]: crate::ControllerOptions::host_memory_buffer

use crate::dma::{DmaAlloc, DmaMemory};
use crate::spec::command::{AdminOpcode, SubmissionEntry};
use crate::spec::dwords::{FeaturesCdw10, HostMemoryBuffer};
use crate::spec::features::HostMemoryDescriptor;
use crate::spec::identify::IdentifyController;
use crate::spec::ids::Fid;
use hal_traits::{Hal, PAGE_SIZE};

/// The most pieces the buffer is made of (descriptor entries); the
/// descriptor list is one page either way.
pub const HMB_MAX_PIECES: usize = 32;

/// What [`Controller::host_memory_buffer`](crate::Controller::host_memory_buffer)
/// reports: the buffer the controller holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HmbInfo {
    /// Its size in bytes.
    pub bytes: u64,
    /// How many physically contiguous pieces it is made of.
    pub pieces: usize,
}

/// The buffer and its descriptor list.
pub(crate) struct Hmb {
    list: DmaMemory,
    pieces: heapless::Vec<DmaMemory, HMB_MAX_PIECES>,
    pages: u32,
}

impl Hmb {
    /// Allocates a buffer as `id` asks (HMPRE, at most `limit` bytes; not
    /// below HMMIN; pieces of at least HMMINDS, at most HMMAXD of them): one
    /// piece if the HAL has that much contiguous memory, else halves the
    /// piece size until the pieces fit. `None` when the controller asks for
    /// none or the HAL cannot give enough. Nothing is named to the device
    /// yet: a dropped `Hmb` from here must be [`free`](Self::free)d.
    pub(crate) fn allocate<H: Hal>(hal: &H, id: &IdentifyController, limit: usize) -> Option<Hmb> {
        let page = PAGE_SIZE as u64;
        let want = (u64::from(id.hmpre) * 4096).min(limit as u64) / page;
        let min = (u64::from(id.hmmin) * 4096).div_ceil(page);
        if want == 0 || want < min {
            return None;
        }
        let min_piece = (u64::from(id.hmminds) * 4096).div_ceil(page).max(1);
        let max_pieces = match id.hmmaxd {
            0 => HMB_MAX_PIECES,
            d => usize::from(d).min(HMB_MAX_PIECES),
        } as u64;
        let list = DmaAlloc::new(hal, 1).ok()?;
        let mut piece = want;
        while piece >= min_piece {
            let count = (want / piece).min(max_pieces);
            if count * piece >= min.max(1) {
                let mut pieces: heapless::Vec<DmaAlloc<'_, H>, HMB_MAX_PIECES> = heapless::Vec::new();
                for _ in 0..count {
                    match DmaAlloc::new(hal, piece as usize) {
                        // Not yet lent: freed with `pieces` if a later one
                        // fails.
                        Ok(p) => {
                            let _ = pieces.push(p);
                        }
                        Err(_) => break,
                    }
                }
                if pieces.len() as u64 == count {
                    let list = list.lend();
                    let pieces = pieces.into_iter().map(DmaAlloc::lend).collect();
                    let hmb = Hmb { list, pieces, pages: (count * piece) as u32 };
                    hmb.write_list();
                    return Some(hmb);
                }
            }
            piece /= 2;
        }
        None
    }

    fn write_list(&self) {
        for (i, p) in self.pieces.iter().enumerate() {
            let entry = HostMemoryDescriptor::new(p.daddr(0).0, (p.len() / PAGE_SIZE) as u32);
            self.list.write_bytes(i * HostMemoryDescriptor::SIZE, &entry.to_bytes());
        }
    }

    /// Set Features / Host Memory Buffer enabling this buffer; `returned`
    /// sets Memory Return (the controller had it before the last reset).
    pub(crate) fn enable_command(&self, returned: bool) -> SubmissionEntry {
        let mut cmd = SubmissionEntry::new(AdminOpcode::SET_FEATURES.0, 0);
        cmd.cdw10 = FeaturesCdw10::new().with_fid(Fid::HOST_MEMORY_BUFFER).into_bits();
        cmd.cdw11 = HostMemoryBuffer::new().with_ehm(true).with_mr(returned).into_bits();
        cmd.cdw12 = self.pages;
        let list = self.list.daddr(0).0;
        cmd.cdw13 = list as u32;
        cmd.cdw14 = (list >> 32) as u32;
        cmd.cdw15 = self.pieces.len() as u32;
        cmd
    }

    /// Set Features / Host Memory Buffer with EHM clear.
    pub(crate) fn disable_command() -> SubmissionEntry {
        let mut cmd = SubmissionEntry::new(AdminOpcode::SET_FEATURES.0, 0);
        cmd.cdw10 = FeaturesCdw10::new().with_fid(Fid::HOST_MEMORY_BUFFER).into_bits();
        cmd
    }

    pub(crate) fn info(&self) -> HmbInfo {
        HmbInfo { bytes: u64::from(self.pages) * PAGE_SIZE as u64, pieces: self.pieces.len() }
    }

    /// Frees the buffer and its list.
    ///
    /// # Safety
    ///
    /// The controller does not use the buffer: it never enabled it, refused
    /// it, disabled it, or was disabled (CSTS.RDY read 0) since.
    pub(crate) unsafe fn free<H: Hal>(&mut self, hal: &H) {
        // SAFETY: forwarded from the caller.
        unsafe {
            self.list.free(hal);
            for p in &mut self.pieces {
                p.free(hal);
            }
        }
    }
}
