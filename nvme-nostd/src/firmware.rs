//! Firmware Image Download and Firmware Commit (NVMe Base Specification
//! 1.4, the admin commands of those names, opcodes 11h and 10h; OACS bit 2): an image sent in pieces
//! through the admin data page, at offsets and lengths that honour the
//! controller's Firmware Update Granularity (FWUG), then committed to a slot
//! with one of the commit actions.

use crate::controller::Controller;
use crate::error::{Argument, Error, Feature, Result};
use crate::spec::command::{AdminOpcode, SubmissionEntry};
use crate::spec::dwords::FirmwareCommitCdw10;
use crate::spec::status::{command_specific as cs, StatusCodeType};
use hal_traits::{Hal, PAGE_SIZE};

/// What Firmware Commit does with the image downloaded so far, or with a
/// slot (the Commit Action, CA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitAction {
    /// CA 0: the downloaded image replaces the one in the slot; not
    /// activated.
    Replace,
    /// CA 1: the downloaded image replaces the one in the slot, which is
    /// activated at the next reset.
    ReplaceAndActivateOnReset,
    /// CA 2: the image already in the slot is activated at the next reset.
    ActivateOnReset,
    /// CA 3: the downloaded image replaces the one in the slot and is
    /// activated now, without a reset (FRMW bit 4).
    ReplaceAndActivateNow,
}

impl CommitAction {
    /// The CA field.
    const fn code(self) -> u8 {
        match self {
            CommitAction::Replace => 0,
            CommitAction::ReplaceAndActivateOnReset => 1,
            CommitAction::ActivateOnReset => 2,
            CommitAction::ReplaceAndActivateNow => 3,
        }
    }

    /// Whether it writes the downloaded image into the slot.
    const fn replaces(self) -> bool {
        !matches!(self, CommitAction::ActivateOnReset)
    }
}

/// What a successful Firmware Commit leaves to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Activation {
    /// Nothing: committed (and activated now, for
    /// [`CommitAction::ReplaceAndActivateNow`]; at the next reset, for the
    /// actions that say so).
    Done,
    /// The new firmware runs after a Controller Level Reset
    /// ([`Controller::reset`]); status 11h.
    NeedsControllerReset,
    /// ... after a Conventional Reset (a PCIe reset of the function); 0Bh.
    NeedsConventionalReset,
    /// ... after an NVM Subsystem Reset; 10h.
    NeedsSubsystemReset,
}

/// Firmware Image Download: NUMD 0-based dwords in CDW10, OFST
/// in dwords in CDW11.
fn download_command(offset: usize, len: usize) -> SubmissionEntry {
    let mut cmd = SubmissionEntry::new(AdminOpcode::FIRMWARE_IMAGE_DOWNLOAD.0, 0);
    cmd.cdw10 = (len / 4).saturating_sub(1) as u32;
    cmd.cdw11 = (offset / 4) as u32;
    cmd
}

/// Firmware Commit: FS and CA in CDW10.
fn commit_command(slot: u8, action: CommitAction) -> SubmissionEntry {
    let mut cmd = SubmissionEntry::new(AdminOpcode::FIRMWARE_COMMIT.0, 0);
    cmd.cdw10 = FirmwareCommitCdw10::new().with_slot(slot).with_action(action.code()).into_bits();
    cmd
}

impl<H: Hal> Controller<H> {
    fn check_firmware(&self) -> Result {
        if self.identify().oacs.firmware() {
            Ok(())
        } else {
            Err(Error::Unsupported(Feature::Firmware))
        }
    }

    /// The Firmware Update Granularity in bytes: FWUG in 4 KiB units; 4
    /// bytes (a dword) when the controller states none (0) or no
    /// restriction (FFh).
    pub fn firmware_granularity(&self) -> usize {
        match self.identify().fwug {
            0 | 0xff => 4,
            units => usize::from(units) * 4096,
        }
    }

    /// Firmware Image Download of one piece of an image: `piece` (at most
    /// 4 KiB) at byte `offset` of the image. Refused before anything is
    /// sent ([`Argument::FirmwarePiece`]): an empty piece, one above 4 KiB,
    /// an offset or length not a multiple of 4, an offset not a multiple of
    /// the granularity ([`firmware_granularity`](Self::firmware_granularity)),
    /// a length that is neither a multiple of it nor shorter than it (the
    /// image's last piece); and a controller without firmware commands
    /// (OACS bit 2; [`Feature::Firmware`]).
    pub fn firmware_image_download(&self, offset: usize, piece: &[u8]) -> Result {
        self.check_firmware()?;
        let g = self.firmware_granularity();
        let len = piece.len();
        let aligned = offset.is_multiple_of(g) && (len.is_multiple_of(g) || len < g);
        if len == 0 || len > PAGE_SIZE || !len.is_multiple_of(4) || !aligned || offset / 4 > u32::MAX as usize
        {
            return Err(Error::InvalidArgument(Argument::FirmwarePiece));
        }
        self.admin_write(download_command(offset, len), piece).map(|_| ())
    }

    /// Downloads a whole image (a non-empty multiple of 4 bytes) in 4 KiB
    /// pieces. A controller whose granularity is above 4 KiB, which the
    /// admin data page cannot carry in one piece, is refused unsent
    /// ([`Feature::FirmwareGranularity`]), as are the inputs
    /// [`firmware_image_download`](Self::firmware_image_download) refuses.
    pub fn download_firmware(&self, image: &[u8]) -> Result {
        self.check_firmware()?;
        if self.firmware_granularity() > PAGE_SIZE {
            return Err(Error::Unsupported(Feature::FirmwareGranularity));
        }
        if image.is_empty() || !image.len().is_multiple_of(4) {
            return Err(Error::InvalidArgument(Argument::FirmwarePiece));
        }
        for (i, piece) in image.chunks(PAGE_SIZE).enumerate() {
            self.firmware_image_download(i * PAGE_SIZE, piece)?;
        }
        Ok(())
    }

    /// Firmware Commit of `slot` (1 to the controller's number of slots; 0
    /// lets the controller choose, for the actions that replace) with
    /// `action`. The statuses that say which reset activates the new
    /// firmware are successes here ([`Activation`]); others are errors.
    ///
    /// Refused before anything is sent ([`Argument::FirmwareSlot`]): a slot
    /// above FRMW's number of slots, slot 0 for
    /// [`CommitAction::ActivateOnReset`], and replacing read-only slot 1;
    /// [`CommitAction::ReplaceAndActivateNow`] on a controller that cannot
    /// activate without a reset (FRMW bit 4; [`Feature::FirmwareActivation`]);
    /// a controller without firmware commands ([`Feature::Firmware`]).
    pub fn commit_firmware(&self, slot: u8, action: CommitAction) -> Result<Activation> {
        self.check_firmware()?;
        let frmw = self.identify().frmw;
        let read_only = slot == 1 && frmw.slot1_read_only() && action.replaces();
        if slot > frmw.slots() || (slot == 0 && !action.replaces()) || read_only {
            return Err(Error::InvalidArgument(Argument::FirmwareSlot));
        }
        if action == CommitAction::ReplaceAndActivateNow && !frmw.activation_without_reset() {
            return Err(Error::Unsupported(Feature::FirmwareActivation));
        }
        match self.admin_exec(commit_command(slot, action), None) {
            Ok(_) => Ok(Activation::Done),
            Err(Error::Command(s)) if s.sct() == StatusCodeType::COMMAND_SPECIFIC => match s.sc() {
                cs::FIRMWARE_ACTIVATION_REQUIRES_CONTROLLER_RESET => Ok(Activation::NeedsControllerReset),
                cs::FIRMWARE_ACTIVATION_REQUIRES_CONVENTIONAL_RESET => Ok(Activation::NeedsConventionalReset),
                cs::FIRMWARE_ACTIVATION_REQUIRES_NVM_SUBSYSTEM_RESET => Ok(Activation::NeedsSubsystemReset),
                _ => Err(Error::Command(s)),
            },
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte by byte against the layouts of Firmware Commit CDW10 and
    /// Firmware Image Download CDW10 and CDW11.
    #[test]
    fn encodings() {
        let d = download_command(8192, 4096);
        assert_eq!((d.cdw0.opc(), d.cdw10, d.cdw11), (0x11, 1023, 2048));
        assert_eq!(download_command(0, 4).cdw10, 0, "NUMD is 0-based");
        let c = commit_command(2, CommitAction::ReplaceAndActivateOnReset);
        assert_eq!((c.cdw0.opc(), c.cdw10), (0x10, 2 | 1 << 3));
        assert_eq!(commit_command(0, CommitAction::ReplaceAndActivateNow).cdw10, 3 << 3);
        assert_eq!(commit_command(7, CommitAction::ActivateOnReset).cdw10, 7 | 2 << 3);
        assert_eq!(commit_command(3, CommitAction::Replace).cdw10, 3);
    }
}
