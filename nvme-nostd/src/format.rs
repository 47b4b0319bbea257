//! Format NVM (NVM Express Base Specification 1.4, section 5.23): a new LBA
//! format (block size, metadata, protection information) and an optional
//! secure erase for a namespace or all of them.
//!
//! A format changes what a block is, so it must not meet I/O in flight:
//! [`Controller::format_nvm`] takes the controller by `&mut`, which no queue
//! pair can coexist with (each borrows the controller), and every
//! [`Namespace`](crate::Namespace) handle from before it is refused from then
//! on with [`Argument::StaleNamespace`]: get new ones.

use crate::controller::Controller;
use crate::error::{Argument, Error, Feature, Result};
use crate::log::ALL_NAMESPACES;
use crate::spec::command::{AdminOpcode, SubmissionEntry};
use hal_traits::Hal;

/// SES: the Secure Erase Setting of Format NVM (figure 325).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SecureErase {
    /// No secure erase (the data may or may not read as zeros afterwards).
    #[default]
    None = 0,
    /// User Data Erase.
    UserData = 1,
    /// Cryptographic Erase (FNA bit 2).
    Cryptographic = 2,
}

/// What Format NVM sets (CDW10, figure 325).
///
/// ```
/// use nvme_nostd::{FormatNvm, SecureErase};
/// let format = FormatNvm::lba_format(4).with_secure_erase(SecureErase::UserData);
/// assert_eq!(format.lbaf, 4);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FormatNvm {
    /// LBAF: the index of the LBA format in Identify Namespace (0 to NLBAF).
    pub lbaf: u8,
    /// MSET: metadata inline with each block's data (an extended LBA) rather
    /// than in a separate buffer.
    pub metadata_inline: bool,
    /// PI: the protection information type, 0 (none) to 3.
    pub pi: u8,
    /// PIL: protection information in the first bytes of the metadata rather
    /// than the last.
    pub pi_first: bool,
    /// SES: the secure erase to do.
    pub secure_erase: SecureErase,
}

impl FormatNvm {
    /// LBA format `lbaf`, no protection information, no secure erase.
    pub const fn lba_format(lbaf: u8) -> Self {
        FormatNvm { lbaf, metadata_inline: false, pi: 0, pi_first: false, secure_erase: SecureErase::None }
    }

    /// Sets [`secure_erase`](Self::secure_erase).
    pub const fn with_secure_erase(mut self, secure_erase: SecureErase) -> Self {
        self.secure_erase = secure_erase;
        self
    }

    /// Sets [`pi`](Self::pi) and [`pi_first`](Self::pi_first).
    pub const fn with_protection(mut self, pi: u8, pi_first: bool) -> Self {
        self.pi = pi;
        self.pi_first = pi_first;
        self
    }

    /// Sets [`metadata_inline`](Self::metadata_inline).
    pub const fn with_metadata_inline(mut self, inline: bool) -> Self {
        self.metadata_inline = inline;
        self
    }
}

/// Format NVM for `nsid` (section 5.23, figure 325): LBAF in CDW10 bits
/// 3:0, MSET bit 4, PI bits 7:5, PIL bit 8, SES bits 11:9.
fn format_command(nsid: u32, format: FormatNvm) -> SubmissionEntry {
    let mut cmd = SubmissionEntry::new(AdminOpcode::FORMAT_NVM.0, nsid);
    cmd.cdw10 = u32::from(format.lbaf & 0xf)
        | u32::from(format.metadata_inline) << 4
        | u32::from(format.pi & 0x7) << 5
        | u32::from(format.pi_first) << 8
        | (format.secure_erase as u32) << 9;
    cmd
}

impl<H: Hal> Controller<H> {
    /// Format NVM (section 5.23) of namespace `nsid` ([`ALL_NAMESPACES`] for
    /// every one) with `format`. The controller is taken by `&mut`, so no
    /// queue pair exists and no I/O is in flight; afterwards every
    /// `Namespace` handle from before is refused
    /// ([`Argument::StaleNamespace`]), whatever the outcome (a failed or
    /// timed-out format may have changed the namespace all the same). The
    /// wait is bounded by `ControllerOptions::admin_timeout`: a secure erase
    /// of a large drive may need a longer one.
    ///
    /// Refused before anything is sent: a controller without Format NVM
    /// (OACS bit 1; [`Feature::Format`]), NSID 0, a protection information
    /// type above 3, or an LBA format index above the namespace's NLBAF
    /// ([`Argument::LbaFormat`]; checked against Identify Namespace, read
    /// first, for one namespace).
    ///
    /// ```no_run
    /// # fn f<H: nvme_nostd::Hal>(mut ctrlr: nvme_nostd::Controller<H>) -> nvme_nostd::Result {
    /// use nvme_nostd::{DmaBuffer, FormatNvm, QpairOptions};
    /// let qp = ctrlr.create_io_qpair::<DmaBuffer<'_, H>, u32, 4>(QpairOptions::default())?;
    /// // ... I/O ...
    /// drop(qp);
    /// ctrlr.format_nvm(1, FormatNvm::lba_format(1))?;
    /// let ns = ctrlr.namespace(1)?; // the new geometry
    /// # Ok(()) }
    /// ```
    ///
    /// With a queue pair alive, it does not compile:
    ///
    /// ```compile_fail,E0502
    /// # fn f<H: nvme_nostd::Hal>(mut ctrlr: nvme_nostd::Controller<H>) -> nvme_nostd::Result {
    /// use nvme_nostd::{DmaBuffer, FormatNvm, QpairOptions};
    /// let qp = ctrlr.create_io_qpair::<DmaBuffer<'_, H>, u32, 4>(QpairOptions::default())?;
    /// ctrlr.format_nvm(1, FormatNvm::lba_format(1))?;
    /// drop(qp);
    /// # Ok(()) }
    /// ```
    pub fn format_nvm(&mut self, nsid: u32, format: FormatNvm) -> Result {
        if !self.identify().oacs.format() {
            return Err(Error::Unsupported(Feature::Format));
        }
        if nsid == 0 {
            return Err(Error::InvalidArgument(Argument::NamespaceId));
        }
        if format.pi > 3 || format.lbaf > 15 {
            return Err(Error::InvalidArgument(Argument::LbaFormat));
        }
        if nsid != ALL_NAMESPACES {
            let id = self.identify_namespace(nsid)?;
            if format.lbaf > id.nlbaf {
                return Err(Error::InvalidArgument(Argument::LbaFormat));
            }
        }
        let result = self.admin_exec(format_command(nsid, format), None).map(|_| ());
        // FNA bit 0: a format of one namespace formats them all.
        if self.identify().fna.format_all_namespaces() {
            self.namespaces_changed();
        } else {
            self.namespace_changed(nsid);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte by byte against figure 325.
    #[test]
    fn format_encoding() {
        let cmd = format_command(3, FormatNvm::lba_format(4));
        assert_eq!((cmd.cdw0.opc(), cmd.nsid, cmd.cdw10), (0x80, 3, 0x0000_0004));
        let all = FormatNvm::lba_format(0xb)
            .with_metadata_inline(true)
            .with_protection(2, true)
            .with_secure_erase(SecureErase::Cryptographic);
        // LBAF Bh, MSET, PI 2 (bits 7:5), PIL, SES 2 (bits 11:9).
        assert_eq!(format_command(ALL_NAMESPACES, all).cdw10, 0xb | 1 << 4 | 2 << 5 | 1 << 8 | 2 << 9);
        assert_eq!(format_command(1, FormatNvm::default()).cdw10, 0);
    }
}
