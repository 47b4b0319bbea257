//! Get Log Page (NVMe Base Specification 1.4, section 5.14): any part of any
//! log page into a caller's buffer, a page at a time through the admin data
//! page, and typed readers for the pages the base specification defines.

use crate::controller::Controller;
use crate::error::{Argument, Error, Feature, Result};
use crate::spec::command::{AdminOpcode, SubmissionEntry};
use crate::spec::dwords::{GetLogPageCdw10, GetLogPageCdw11};
use crate::spec::ids::Lid;
use crate::spec::log::{
    ChangedNamespaceList, CommandsSupportedAndEffects, ErrorInformation, FirmwareSlot, SmartHealth,
};
use hal_traits::{Hal, PAGE_SIZE};

/// The namespace identifier that names the controller as a whole (or every
/// namespace) in Get Log Page.
pub const ALL_NAMESPACES: u32 = u32::MAX;

/// Get Log Page (section 5.14, figures 189 to 192) for `len` bytes (a
/// non-zero multiple of 4) of log page `lid` from byte `offset`: NUMD is
/// 0-based and split into NUMDL (CDW10) and NUMDU (CDW11), LPO into LPOL
/// (CDW12) and LPOU (CDW13). RAE, LSP and LSI are clear.
pub(crate) fn get_log_page_command(lid: Lid, nsid: u32, offset: u64, len: usize) -> SubmissionEntry {
    let dwords = (len / 4).saturating_sub(1) as u32;
    let mut cmd = SubmissionEntry::new(AdminOpcode::GET_LOG_PAGE.0, nsid);
    cmd.cdw10 = GetLogPageCdw10::new().with_lid(lid).with_numdl(dwords as u16).into_bits();
    cmd.cdw11 = GetLogPageCdw11::new().with_numdu((dwords >> 16) as u16).into_bits();
    cmd.cdw12 = offset as u32;
    cmd.cdw13 = (offset >> 32) as u32;
    cmd
}

impl<H: Hal> Controller<H> {
    /// Whether the controller supports log page `lid`: the mandatory pages
    /// (Error Information, SMART / Health, Firmware Slot), and the others as
    /// Identify Controller advertises them (OAES, LPA, OACS, ONCS, SANICAP).
    /// Identifiers this driver does not know are reported unsupported.
    pub fn is_log_page_supported(&self, lid: Lid) -> bool {
        let id = self.identify();
        match lid {
            Lid::ERROR_INFORMATION | Lid::SMART_HEALTH | Lid::FIRMWARE_SLOT => true,
            Lid::CHANGED_NAMESPACE_LIST => id.oaes.namespace_attribute(),
            Lid::COMMANDS_SUPPORTED_AND_EFFECTS => id.lpa.commands_effects(),
            Lid::DEVICE_SELF_TEST => id.oacs.self_test(),
            Lid::TELEMETRY_HOST | Lid::TELEMETRY_CONTROLLER => id.lpa.telemetry(),
            Lid::PERSISTENT_EVENT => id.lpa.persistent_event(),
            Lid::RESERVATION_NOTIFICATION => id.oncs.reservations(),
            Lid::SANITIZE_STATUS => id.sanicap != 0,
            _ => false,
        }
    }

    /// The size in bytes of log page `lid`, where the base specification
    /// fixes it (the error log's from ELPE).
    pub fn log_page_size(&self, lid: Lid) -> Option<usize> {
        match lid {
            Lid::ERROR_INFORMATION => Some((usize::from(self.identify().elpe) + 1) * ErrorInformation::SIZE),
            Lid::SMART_HEALTH => Some(SmartHealth::SIZE),
            Lid::FIRMWARE_SLOT => Some(FirmwareSlot::SIZE),
            Lid::CHANGED_NAMESPACE_LIST => Some(ChangedNamespaceList::SIZE),
            Lid::COMMANDS_SUPPORTED_AND_EFFECTS => Some(CommandsSupportedAndEffects::SIZE),
            Lid::DEVICE_SELF_TEST => Some(crate::spec::log::DeviceSelfTest::SIZE),
            _ => None,
        }
    }

    /// Get Log Page (section 5.14): reads `out.len()` bytes of log page `lid`
    /// for namespace `nsid` ([`ALL_NAMESPACES`] for the controller), from
    /// byte `offset` of the page, one 4 KiB command at a time (LPO carries
    /// the offset of each). Reading a page clears the asynchronous event that
    /// announced it (RAE is clear).
    ///
    /// Refused before anything is sent: a length of 0 or not a multiple of 4,
    /// an offset not a multiple of 4 ([`Argument::LogPageAlignment`]), a range
    /// past the end of a page whose size is known
    /// ([`log_page_size`](Self::log_page_size); [`Argument::LogPageRange`]),
    /// and an offset or more than 4 KiB from a controller without extended
    /// Get Log Page data (LPA bit 2; [`Feature::ExtendedLogPage`]).
    pub fn get_log_page(&self, lid: Lid, nsid: u32, offset: u64, out: &mut [u8]) -> Result {
        if out.is_empty() || !out.len().is_multiple_of(4) || !offset.is_multiple_of(4) {
            return Err(Error::InvalidArgument(Argument::LogPageAlignment));
        }
        if let Some(size) = self.log_page_size(lid) {
            let end = offset.checked_add(out.len() as u64);
            if end.is_none_or(|end| end > size as u64) {
                return Err(Error::InvalidArgument(Argument::LogPageRange));
            }
        }
        if (offset != 0 || out.len() > PAGE_SIZE) && !self.identify().lpa.extended_data() {
            return Err(Error::Unsupported(Feature::ExtendedLogPage));
        }
        let mut page = [0u8; PAGE_SIZE];
        let mut at = offset;
        for chunk in out.chunks_mut(PAGE_SIZE) {
            self.admin_exec(get_log_page_command(lid, nsid, at, chunk.len()), Some(&mut page))?;
            chunk.copy_from_slice(&page[..chunk.len()]);
            at += chunk.len() as u64;
        }
        Ok(())
    }

    /// SMART / Health Information (log page 02h) of the controller
    /// (`nsid` [`ALL_NAMESPACES`]) or of one namespace, where the controller
    /// keeps it per namespace (LPA bit 0; else [`Feature::SmartPerNamespace`]).
    pub fn smart_health(&self, nsid: u32) -> Result<SmartHealth> {
        if nsid != ALL_NAMESPACES && !self.identify().lpa.smart_per_namespace() {
            return Err(Error::Unsupported(Feature::SmartPerNamespace));
        }
        let mut page = [0u8; SmartHealth::SIZE];
        self.get_log_page(Lid::SMART_HEALTH, nsid, 0, &mut page)?;
        Ok(SmartHealth::from_bytes(&page))
    }

    /// Error Information (log page 01h): fills `out` with the newest entries,
    /// at most ELPE + 1, and returns how many of them hold an error (an entry
    /// with error count 0 is empty).
    pub fn error_log(&self, out: &mut [ErrorInformation]) -> Result<usize> {
        let entries = out.len().min(usize::from(self.identify().elpe) + 1);
        if entries == 0 {
            return Err(Error::InvalidArgument(Argument::LogPageAlignment));
        }
        let mut page = [0u8; PAGE_SIZE];
        let mut read = 0;
        while read < entries {
            // A whole page of entries at a time.
            let n = (entries - read).min(PAGE_SIZE / ErrorInformation::SIZE);
            let bytes = &mut page[..n * ErrorInformation::SIZE];
            self.get_log_page(Lid::ERROR_INFORMATION, 0, (read * ErrorInformation::SIZE) as u64, bytes)?;
            for (i, entry) in bytes.chunks_exact(ErrorInformation::SIZE).enumerate() {
                if let Ok(entry) = entry.try_into() {
                    out[read + i] = ErrorInformation::from_bytes(entry);
                }
            }
            read += n;
        }
        Ok(out[..entries].iter().filter(|e| e.is_valid()).count())
    }

    /// Firmware Slot Information (log page 03h).
    pub fn firmware_slot(&self) -> Result<FirmwareSlot> {
        let mut page = [0u8; FirmwareSlot::SIZE];
        self.get_log_page(Lid::FIRMWARE_SLOT, ALL_NAMESPACES, 0, &mut page)?;
        Ok(FirmwareSlot::from_bytes(&page))
    }

    /// Changed Namespace List (log page 04h), where the controller reports
    /// Namespace Attribute Changed events (OAES bit 8; else
    /// [`Feature::LogPage`]). Reading it clears the list.
    pub fn changed_namespaces(&self) -> Result<ChangedNamespaceList> {
        self.fixed_page(Lid::CHANGED_NAMESPACE_LIST, ChangedNamespaceList::from_bytes)
    }

    /// Commands Supported and Effects (log page 05h), where the controller
    /// has it (LPA bit 1; else [`Feature::LogPage`]).
    pub fn commands_supported_and_effects(&self) -> Result<CommandsSupportedAndEffects> {
        self.fixed_page(Lid::COMMANDS_SUPPORTED_AND_EFFECTS, CommandsSupportedAndEffects::from_bytes)
    }

    /// A whole 4 KiB page that the controller must advertise.
    fn fixed_page<T>(&self, lid: Lid, decode: fn(&[u8; PAGE_SIZE]) -> T) -> Result<T> {
        if !self.is_log_page_supported(lid) {
            return Err(Error::Unsupported(Feature::LogPage));
        }
        let mut page = [0u8; PAGE_SIZE];
        self.get_log_page(lid, ALL_NAMESPACES, 0, &mut page)?;
        Ok(decode(&page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte by byte against figures 189 to 192 of the specification.
    #[test]
    fn get_log_page_encoding() {
        let cmd = get_log_page_command(Lid::SMART_HEALTH, ALL_NAMESPACES, 0x1_2345_6788, 512);
        assert_eq!(cmd.cdw0.opc(), 0x02);
        assert_eq!(cmd.nsid, 0xffff_ffff);
        // LID 02h in bits 7:0, RAE (bit 15) clear, NUMDL = 127 in bits 31:16.
        assert_eq!(cmd.cdw10, 0x007f_0002);
        assert_eq!(cmd.cdw11, 0);
        assert_eq!((cmd.cdw12, cmd.cdw13), (0x2345_6788, 0x1));
        // 256 KiB: NUMD = 65535 fits NUMDL; one dword more spills into NUMDU.
        let cmd = get_log_page_command(Lid(0x07), 0, 0, 256 << 10);
        assert_eq!((cmd.cdw10, cmd.cdw11), (0xffff_0007, 0));
        let cmd = get_log_page_command(Lid(0x07), 0, 0, (256 << 10) + 4);
        assert_eq!((cmd.cdw10, cmd.cdw11), (0x0000_0007, 1));
        assert_eq!((cmd.prp1, cmd.prp2, cmd.mptr), (0, 0, 0), "the admin path sets PRP1");
    }
}
