//! Firmware slots, Firmware Image Download and Firmware Commit. Three
//! slots, slot 1 read-only and holding the firmware the controller starts
//! with; activation at the next reset or at once (FRMW 17h). An image is
//! downloaded in order (each piece at the offset where the last ended) in
//! pieces that honour FWUG ([`SimConfig::fwug`](crate::SimConfig::fwug)); a
//! valid image starts with `SIMFW` and carries its 8-byte revision at bytes
//! 8 to 15.

use super::status::{
    spec, INVALID_FIELD, INVALID_FIRMWARE_IMAGE, INVALID_FIRMWARE_SLOT, OVERLAPPING_RANGE, SUCCESS,
};
use super::State;
use nvme_spec::command::SubmissionEntry;
use nvme_spec::dwords::FirmwareCommitCdw10;
use nvme_spec::status::command_specific as cs;

/// The firmware revision in slot 1 and in Identify Controller at start.
pub(super) const FIRMWARE_REVISION: &[u8; 8] = b"1.0     ";

/// How many slots there are.
const SLOTS: usize = 3;

/// FRMW: slot 1 read-only, three slots, activation without reset.
pub(super) const FRMW: u8 = 0x01 | (SLOTS as u8) << 1 | 0x10;

/// The slots and the download in progress.
pub(super) struct Firmware {
    /// The revision in slots 1 to 3 (`None`: empty).
    slots: [Option<[u8; 8]>; SLOTS],
    /// The slot running (1 to 3).
    pub(super) active: u8,
    /// The slot activated at the next reset.
    next: Option<u8>,
    /// The image downloaded so far.
    image: Vec<u8>,
}

impl Default for Firmware {
    fn default() -> Self {
        Firmware { slots: [Some(*FIRMWARE_REVISION), None, None], active: 1, next: None, image: Vec::new() }
    }
}

impl Firmware {
    /// The revision running.
    pub(super) fn revision(&self) -> [u8; 8] {
        self.slots[usize::from(self.active - 1)].unwrap_or([b' '; 8])
    }

    /// The Firmware Slot Information log page (512 bytes).
    pub(super) fn log(&self) -> Vec<u8> {
        let mut page = vec![0u8; 512];
        page[0] = self.active | self.next.unwrap_or(0) << 4;
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(rev) = slot {
                page[8 + 8 * i..16 + 8 * i].copy_from_slice(rev);
            }
        }
        page
    }

    /// A controller reset activates the slot committed for it.
    pub(super) fn on_reset(&mut self) {
        if let Some(next) = self.next.take() {
            self.active = next;
        }
    }
}

impl State {
    /// Firmware Image Download: NUMD (0-based dwords) at OFST (dwords).
    pub(super) fn firmware_download(&mut self, cmd: &SubmissionEntry) -> u16 {
        let len = (cmd.cdw10 as usize + 1) * 4;
        let offset = cmd.cdw11 as usize * 4;
        let granularity = match self.cfg.fwug {
            0 | 0xff => 4,
            units => usize::from(units) * 4096,
        };
        if !offset.is_multiple_of(granularity) || !(len.is_multiple_of(granularity) || len < granularity) {
            return INVALID_FIELD;
        }
        let fw = &self.firmware;
        if offset < fw.image.len() {
            return OVERLAPPING_RANGE;
        }
        if offset > fw.image.len() || len > 1 << 20 {
            return INVALID_FIELD;
        }
        match self.read_from_host(cmd, len) {
            Ok(data) => {
                self.firmware.image.extend_from_slice(&data);
                SUCCESS
            }
            Err(status) => status,
        }
    }

    /// Firmware Commit: FS and CA. Actions 0, 1 and 3 consume the image
    /// downloaded; 2 activates a slot that holds one.
    pub(super) fn firmware_commit(&mut self, cmd: &SubmissionEntry) -> u16 {
        let c = FirmwareCommitCdw10::from_bits(cmd.cdw10);
        let (action, mut slot) = (c.action(), usize::from(c.slot()));
        if slot > SLOTS {
            return INVALID_FIRMWARE_SLOT;
        }
        let fw = &mut self.firmware;
        match action {
            0 | 1 | 3 => {
                if slot == 0 {
                    // The controller chooses: the first writable slot that
                    // is not running.
                    slot = (2..=SLOTS).find(|&s| s as u8 != fw.active).unwrap_or(2);
                }
                if slot == 1 {
                    return INVALID_FIRMWARE_SLOT;
                }
                let image = core::mem::take(&mut fw.image);
                if image.len() < 16 || &image[..5] != b"SIMFW" {
                    return INVALID_FIRMWARE_IMAGE;
                }
                let mut revision = [0u8; 8];
                revision.copy_from_slice(&image[8..16]);
                fw.slots[slot - 1] = Some(revision);
                match action {
                    1 => fw.next = Some(slot as u8),
                    3 => fw.active = slot as u8,
                    _ => {}
                }
                SUCCESS
            }
            2 => {
                if slot == 0 || fw.slots[slot - 1].is_none() {
                    return INVALID_FIRMWARE_SLOT;
                }
                fw.next = Some(slot as u8);
                // Activation needs a Controller Level Reset.
                spec(cs::FIRMWARE_ACTIVATION_REQUIRES_CONTROLLER_RESET)
            }
            _ => INVALID_FIELD,
        }
    }
}
