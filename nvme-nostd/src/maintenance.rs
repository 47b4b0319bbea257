//! Device Self-test, Sanitize, and Security Send / Receive (NVMe Base
//! Specification 1.4, sections 5.8, 5.24, 5.25 and 5.26): typed where the
//! controller advertises them, and refused with a clear
//! [`Error::Unsupported`] before anything is sent where it does not.

use crate::controller::Controller;
use crate::error::{Argument, Error, Feature, Result};
use crate::spec::command::{AdminOpcode, SubmissionEntry};
use crate::spec::ids::Lid;
use crate::spec::log::{DeviceSelfTest, SanitizeStatus};
use hal_traits::{Hal, PAGE_SIZE};

/// STC: what Device Self-test does (section 5.8, figure 158).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SelfTest {
    /// Start a short device self-test.
    Short = 1,
    /// Start an extended device self-test.
    Extended = 2,
    /// Abort the device self-test in progress.
    Abort = 0xf,
}

/// SANACT: the Sanitize action (section 5.24, figure 373).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SanitizeAction {
    /// Exit Failure Mode, after a sanitize that failed.
    ExitFailureMode = 1,
    /// Block Erase (SANICAP bit 1).
    BlockErase = 2,
    /// Overwrite with a 32-bit pattern (SANICAP bit 2).
    Overwrite = 3,
    /// Crypto Erase (SANICAP bit 0).
    CryptoErase = 4,
}

/// Device Self-test (section 5.8, figure 158): STC in CDW10 bits 3:0.
fn self_test_command(nsid: u32, test: SelfTest) -> SubmissionEntry {
    let mut cmd = SubmissionEntry::new(AdminOpcode::DEVICE_SELF_TEST.0, nsid);
    cmd.cdw10 = test as u32;
    cmd
}

/// Sanitize (section 5.24, figures 373 and 374): SANACT bits 2:0, AUSE bit 3
/// (allow unrestricted sanitize exit), NDAS bit 9 (no deallocate after
/// sanitize); the overwrite pattern in CDW11, one pass.
fn sanitize_command(
    action: SanitizeAction,
    unrestricted_exit: bool,
    no_deallocate: bool,
    pattern: u32,
) -> SubmissionEntry {
    let mut cmd = SubmissionEntry::new(AdminOpcode::SANITIZE.0, 0);
    cmd.cdw10 = action as u32 | u32::from(unrestricted_exit) << 3 | 1 << 4 | u32::from(no_deallocate) << 9;
    if action == SanitizeAction::Overwrite {
        cmd.cdw11 = pattern;
    } else {
        // One overwrite pass (OWPASS, bits 7:4) matters only to Overwrite.
        cmd.cdw10 &= !(0xf << 4);
    }
    cmd
}

/// Security Send / Receive (sections 5.25 and 5.26, figures 377 and 380):
/// SECP in CDW10 bits 31:24, SPSP in 23:8, NSSF in 7:0; the length in CDW11.
fn security_command(opcode: AdminOpcode, protocol: u8, specific: u16, len: usize) -> SubmissionEntry {
    let mut cmd = SubmissionEntry::new(opcode.0, 0);
    cmd.cdw10 = u32::from(protocol) << 24 | u32::from(specific) << 8;
    cmd.cdw11 = len as u32;
    cmd
}

impl<H: Hal> Controller<H> {
    /// Device Self-test (section 5.8): starts a short or extended test of
    /// namespace `nsid` (`ALL_NAMESPACES` for all, 0 for the controller
    /// only), or aborts the one in progress; its progress and results are in
    /// [`self_test_log`](Self::self_test_log). Refused where the controller
    /// lacks it (OACS bit 4; [`Feature::SelfTest`]).
    pub fn device_self_test(&self, nsid: u32, test: SelfTest) -> Result {
        if !self.identify().oacs.self_test() {
            return Err(Error::Unsupported(Feature::SelfTest));
        }
        self.admin_exec(self_test_command(nsid, test), None).map(|_| ())
    }

    /// The Device Self-test log (log page 06h): the test in progress and the
    /// last 20 results.
    pub fn self_test_log(&self) -> Result<DeviceSelfTest> {
        if !self.is_log_page_supported(Lid::DEVICE_SELF_TEST) {
            return Err(Error::Unsupported(Feature::SelfTest));
        }
        let mut page = [0u8; DeviceSelfTest::SIZE];
        self.get_log_page(Lid::DEVICE_SELF_TEST, 0, 0, &mut page)?;
        Ok(DeviceSelfTest::from_bytes(&page))
    }

    /// Sanitize (section 5.24): erases all user data of the NVM subsystem
    /// with `action` (the overwrite `pattern` for [`SanitizeAction::Overwrite`],
    /// one pass), in the background; its progress is in the Sanitize Status
    /// log (81h). Refused where the controller does not offer the action
    /// (SANICAP; [`Feature::Sanitize`]). The data of every namespace is lost
    /// for good.
    pub fn sanitize(&self, action: SanitizeAction, unrestricted_exit: bool, pattern: u32) -> Result {
        let caps = self.identify().sanicap;
        let offered = match action {
            SanitizeAction::CryptoErase => caps & 1 != 0,
            SanitizeAction::BlockErase => caps & 2 != 0,
            SanitizeAction::Overwrite => caps & 4 != 0,
            SanitizeAction::ExitFailureMode => caps & 7 != 0,
        };
        if !offered {
            return Err(Error::Unsupported(Feature::Sanitize));
        }
        self.admin_exec(sanitize_command(action, unrestricted_exit, false, pattern), None).map(|_| ())
    }

    /// The Sanitize Status log (81h): the progress and outcome of the last
    /// sanitize. Where the controller can sanitize (SANICAP; else
    /// [`Feature::Sanitize`], unsent).
    pub fn sanitize_status(&self) -> Result<SanitizeStatus> {
        if !self.is_log_page_supported(Lid::SANITIZE_STATUS) {
            return Err(Error::Unsupported(Feature::Sanitize));
        }
        let mut page = [0u8; SanitizeStatus::SIZE];
        self.get_log_page(Lid::SANITIZE_STATUS, 0, 0, &mut page)?;
        Ok(SanitizeStatus::from_bytes(&page))
    }

    /// Security Send (section 5.25): `data` (at most 4 KiB) to security
    /// protocol `protocol` with its protocol specific field. Refused where
    /// the controller lacks security commands (OACS bit 0;
    /// [`Feature::Security`]) or for more than 4 KiB
    /// ([`Argument::AdminDataTooLarge`]).
    pub fn security_send(&self, protocol: u8, specific: u16, data: &[u8]) -> Result {
        self.check_security(data.len())?;
        let cmd = security_command(AdminOpcode::SECURITY_SEND, protocol, specific, data.len());
        self.admin_write(cmd, data).map(|_| ())
    }

    /// Security Receive (section 5.26): up to `out.len()` bytes (at most
    /// 4 KiB) from security protocol `protocol`. Refused as for
    /// [`security_send`](Self::security_send).
    pub fn security_receive(&self, protocol: u8, specific: u16, out: &mut [u8]) -> Result {
        self.check_security(out.len())?;
        let cmd = security_command(AdminOpcode::SECURITY_RECEIVE, protocol, specific, out.len());
        self.admin_read(cmd, out).map(|_| ())
    }

    fn check_security(&self, len: usize) -> Result {
        if !self.identify().oacs.security() {
            return Err(Error::Unsupported(Feature::Security));
        }
        if len > PAGE_SIZE {
            return Err(Error::InvalidArgument(Argument::AdminDataTooLarge));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte by byte against figures 158, 373, 377 and 380.
    #[test]
    fn encodings() {
        let t = self_test_command(u32::MAX, SelfTest::Extended);
        assert_eq!((t.cdw0.opc(), t.nsid, t.cdw10), (0x14, u32::MAX, 2));
        assert_eq!(self_test_command(0, SelfTest::Abort).cdw10, 0xf);
        let s = sanitize_command(SanitizeAction::Overwrite, true, false, 0xdead_beef);
        // SANACT 3, AUSE, OWPASS 1 (bits 7:4); the pattern in CDW11.
        assert_eq!((s.cdw0.opc(), s.cdw10, s.cdw11), (0x84, 0x3 | 1 << 3 | 1 << 4, 0xdead_beef));
        let s = sanitize_command(SanitizeAction::BlockErase, false, true, 7);
        assert_eq!((s.cdw10, s.cdw11), (0x2 | 1 << 9, 0));
        let r = security_command(AdminOpcode::SECURITY_RECEIVE, 0xea, 0x0102, 512);
        assert_eq!((r.cdw0.opc(), r.cdw10, r.cdw11), (0x82, 0xea01_0200, 512));
        assert_eq!(security_command(AdminOpcode::SECURITY_SEND, 1, 0, 8).cdw0.opc(), 0x81);
    }
}
