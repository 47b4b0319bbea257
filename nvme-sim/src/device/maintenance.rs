//! Sanitize (NVMe 1.4 section 5.24, with its status log 81h) and Security
//! Send / Receive (sections 5.25, 5.26), which QEMU 7.2's controller lacks.
//!
//! A sanitize completes at once: Block Erase and Crypto Erase zero every
//! namespace, Overwrite fills them with the pattern of CDW11; the status log
//! then says completed, with the CDW10 that started it. Security offers
//! protocol 00h (the supported protocol list: 00h and F0h) and a vendor
//! protocol F0h that keeps what was last sent and gives it back.

use super::status::{INVALID_FIELD, SUCCESS};
use super::State;
use nvme_spec::command::SubmissionEntry;

/// The vendor protocol the simulator keeps a mailbox for.
pub const MAILBOX_PROTOCOL: u8 = 0xf0;

/// Sanitize and security state.
#[derive(Default)]
pub(crate) struct Maintenance {
    /// SSTAT and SCDW10 of the last sanitize.
    pub(crate) sanitized: Option<(u16, u32)>,
    /// What protocol F0h last received.
    mailbox: Vec<u8>,
}

impl State {
    /// Sanitize: the action must be one SANICAP offers.
    pub(super) fn sanitize(&mut self, cmd: &SubmissionEntry) -> u16 {
        let action = cmd.cdw10 & 7;
        let offered = match action {
            1 => self.cfg.sanicap & 7 != 0,
            2 => self.cfg.sanicap & 2 != 0,
            3 => self.cfg.sanicap & 4 != 0,
            4 => self.cfg.sanicap & 1 != 0,
            _ => false,
        };
        if !offered {
            return INVALID_FIELD;
        }
        if action != 1 {
            let pattern = cmd.cdw11.to_le_bytes();
            for ns in &mut self.namespaces {
                for (i, b) in ns.data.iter_mut().enumerate() {
                    *b = if action == 3 { pattern[i % 4] } else { 0 };
                }
            }
            // Completed; for Overwrite, one pass done (bits 7:3).
            let passes = if action == 3 { 1 << 3 } else { 0 };
            self.maintenance.sanitized = Some((1 | passes, cmd.cdw10));
        }
        self.stats.sanitizes += 1;
        SUCCESS
    }

    /// The Sanitize Status log page (512 bytes).
    pub(super) fn sanitize_log(&self) -> Vec<u8> {
        let mut page = vec![0u8; 512];
        let (sstat, scdw10) = self.maintenance.sanitized.unwrap_or((0, 0));
        page[0..2].copy_from_slice(&u16::MAX.to_le_bytes()); // nothing in progress
        page[2..4].copy_from_slice(&sstat.to_le_bytes());
        page[4..8].copy_from_slice(&scdw10.to_le_bytes());
        for at in [8, 12, 16] {
            page[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes()); // no estimates
        }
        page
    }

    /// Security Send: protocol F0h keeps the data (CDW11 bytes).
    pub(super) fn security_send(&mut self, cmd: &SubmissionEntry) -> u16 {
        let (protocol, len) = ((cmd.cdw10 >> 24) as u8, cmd.cdw11 as usize);
        if !self.cfg.security || protocol != MAILBOX_PROTOCOL || len > 4096 {
            return INVALID_FIELD;
        }
        match self.read_from_host(cmd, len) {
            Ok(data) => {
                self.maintenance.mailbox = data;
                SUCCESS
            }
            Err(status) => status,
        }
    }

    /// Security Receive: protocol 00h lists the protocols, F0h gives the
    /// mailbox back (zero-padded to the length asked for).
    pub(super) fn security_receive(&mut self, cmd: &SubmissionEntry) -> u16 {
        let (protocol, specific, len) =
            ((cmd.cdw10 >> 24) as u8, (cmd.cdw10 >> 8) as u16, cmd.cdw11 as usize);
        if !self.cfg.security || len > 4096 {
            return INVALID_FIELD;
        }
        let mut data = match (protocol, specific) {
            // Supported Security Protocols List (SPC-5): 6 reserved bytes,
            // the list length, then the protocol identifiers.
            (0, 0) => vec![0, 0, 0, 0, 0, 0, 0, 2, 0x00, MAILBOX_PROTOCOL],
            (MAILBOX_PROTOCOL, _) => self.maintenance.mailbox.clone(),
            _ => return INVALID_FIELD,
        };
        data.resize(len, 0);
        self.write_to_host(cmd, &data)
    }
}
