//! Namespace Management and Namespace Attachment (NVMe Base Specification
//! 1.4, the admin commands of those names, opcodes 0Dh and 15h; OACS bit 3),
//! and the Identify lists that go with them (CNS 10h allocated namespaces,
//! 12h controllers attached to a namespace, 13h controllers of the NVM
//! subsystem).
//!
//! Attaching a namespace makes its identifier name new geometry, so it takes
//! the controller by `&mut` (no queue pair alive, so no command in flight
//! that was built for what the identifier named before) and makes every
//! [`Namespace`](crate::Namespace) handle stale, as Format NVM does. The
//! other commands only take namespaces away from this controller (I/O to
//! them then fails with the device's status), and make handles stale too.

use crate::controller::Controller;
use crate::error::{Argument, Error, Feature, Malformed, Result};
use crate::spec::command::{AdminOpcode, SubmissionEntry};
use crate::spec::identify::{ActiveNamespaceList, ControllerList, Dps, Flbas, IdentifyNamespace, Nmic};
use crate::spec::ids::Cns;
use hal_traits::{Hal, PAGE_SIZE};
use zerocopy::IntoBytes;

/// What a new namespace looks like (the host-specified fields of the
/// Identify Namespace structure that Namespace Management / create takes).
///
/// ```
/// use nvme_nostd::NamespaceDescription;
/// let d = NamespaceDescription::new(1 << 20).with_lba_format(1).with_shared(true);
/// assert_eq!((d.blocks, d.capacity, d.lba_format, d.shared), (1 << 20, 1 << 20, 1, true));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NamespaceDescription {
    /// NSZE: size in logical blocks.
    pub blocks: u64,
    /// NCAP: capacity in logical blocks (at most `blocks`; less is thin
    /// provisioning).
    pub capacity: u64,
    /// FLBAS bits 3:0 and 6:5: the LBA format index (0 to 63).
    pub lba_format: u8,
    /// FLBAS bit 4: metadata at the end of each block (extended LBA).
    pub metadata_inline: bool,
    /// DPS: protection information type (0 to 3) and whether it is first in
    /// the metadata.
    pub protection: (u8, bool),
    /// NMIC bit 0: the namespace may be attached to several controllers.
    pub shared: bool,
}

impl NamespaceDescription {
    /// A fully provisioned namespace of `blocks` blocks in LBA format 0,
    /// private, without metadata or protection information.
    pub const fn new(blocks: u64) -> Self {
        NamespaceDescription {
            blocks,
            capacity: blocks,
            lba_format: 0,
            metadata_inline: false,
            protection: (0, false),
            shared: false,
        }
    }

    /// Sets [`capacity`](Self::capacity).
    pub const fn with_capacity(mut self, capacity: u64) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets [`lba_format`](Self::lba_format).
    pub const fn with_lba_format(mut self, index: u8) -> Self {
        self.lba_format = index;
        self
    }

    /// Sets [`metadata_inline`](Self::metadata_inline).
    pub const fn with_metadata_inline(mut self, inline: bool) -> Self {
        self.metadata_inline = inline;
        self
    }

    /// Sets [`protection`](Self::protection).
    pub const fn with_protection(mut self, pi: u8, first: bool) -> Self {
        self.protection = (pi, first);
        self
    }

    /// Sets [`shared`](Self::shared).
    pub const fn with_shared(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }

    /// The data structure Namespace Management / create sends: an Identify
    /// Namespace structure with the host-specified fields set, the rest 0.
    fn data(&self) -> Result<IdentifyNamespace> {
        let (pi, first) = self.protection;
        if self.blocks == 0 || self.capacity == 0 || self.capacity > self.blocks {
            return Err(Error::InvalidArgument(Argument::NamespaceSize));
        }
        if self.lba_format > 63 || pi > 3 {
            return Err(Error::InvalidArgument(Argument::LbaFormat));
        }
        let mut id = IdentifyNamespace::from_bytes(&[0; PAGE_SIZE]);
        id.nsze = self.blocks;
        id.ncap = self.capacity;
        id.flbas = Flbas::new()
            .with_format_low(self.lba_format & 0xf)
            .with_format_high(self.lba_format >> 4)
            .with_extended(self.metadata_inline);
        id.dps = Dps::new().with_pit(pi).with_first(first);
        id.nmic = Nmic::new().with_shared(self.shared);
        Ok(id)
    }
}

/// Namespace Management (opcode 0Dh): SEL in CDW10 bits 3:0, 0 create, 1
/// delete.
fn management_command(nsid: u32, delete: bool) -> SubmissionEntry {
    let mut cmd = SubmissionEntry::new(AdminOpcode::NAMESPACE_MANAGEMENT.0, nsid);
    cmd.cdw10 = u32::from(delete);
    cmd
}

/// Namespace Attachment (opcode 15h): SEL in CDW10 bits 3:0, 0 attach, 1
/// detach; the data is a Controller List.
fn attachment_command(nsid: u32, detach: bool) -> SubmissionEntry {
    let mut cmd = SubmissionEntry::new(AdminOpcode::NAMESPACE_ATTACHMENT.0, nsid);
    cmd.cdw10 = u32::from(detach);
    cmd
}

impl<H: Hal> Controller<H> {
    /// This controller's identifier in its NVM subsystem (Identify
    /// Controller CNTLID), the one to name in
    /// [`attach_namespace`](Self::attach_namespace).
    pub fn controller_id(&self) -> u16 {
        self.identify().cntlid
    }

    fn check_namespace_management(&self) -> Result {
        if self.identify().oacs.namespace_management() {
            Ok(())
        } else {
            Err(Error::Unsupported(Feature::NamespaceManagement))
        }
    }

    /// Namespace Management / create: a namespace as `description` says,
    /// attached to no controller; returns its identifier. Refused before
    /// anything is sent: a controller without namespace management (OACS
    /// bit 3; [`Feature::NamespaceManagement`]), a size or capacity of 0 or
    /// a capacity above the size ([`Argument::NamespaceSize`]), an LBA
    /// format index above 63 or a protection type above 3
    /// ([`Argument::LbaFormat`]).
    pub fn create_namespace(&self, description: &NamespaceDescription) -> Result<u32> {
        self.check_namespace_management()?;
        let data = description.data()?;
        let done = self.admin_write(management_command(0, false), data.as_bytes())?;
        match done.dw0 {
            0 | u32::MAX => Err(Error::MalformedDevice(Malformed::NamespaceId)),
            nsid => Ok(nsid),
        }
    }

    /// Namespace Management / delete of `nsid` ([`ALL_NAMESPACES`] for every
    /// one), which detaches it from every controller first. Every
    /// `Namespace` handle goes stale.
    ///
    /// [`ALL_NAMESPACES`]: crate::ALL_NAMESPACES
    pub fn delete_namespace(&self, nsid: u32) -> Result {
        self.check_namespace_management()?;
        if nsid == 0 {
            return Err(Error::InvalidArgument(Argument::NamespaceId));
        }
        let result = self.admin_exec(management_command(nsid, true), None).map(|_| ());
        self.namespace_changed(nsid);
        result
    }

    /// Namespace Attachment / attach of `nsid` to the controllers in
    /// `controllers` (this one is [`controller_id`](Self::controller_id)).
    /// Every `Namespace` handle goes stale: get new ones with
    /// [`namespace`](Self::namespace). By `&mut`, as
    /// [`format_nvm`](Self::format_nvm), so that no queue pair is alive.
    ///
    /// Refused before anything is sent: no namespace management
    /// ([`Feature::NamespaceManagement`]), NSID 0 or FFFFFFFFh
    /// ([`Argument::NamespaceId`]), an empty list or one above 2047
    /// identifiers ([`Argument::ControllerList`]).
    ///
    /// With a queue pair alive, it does not compile:
    ///
    /// ```compile_fail,E0502
    /// # fn f<H: nvme_nostd::Hal>(mut ctrlr: nvme_nostd::Controller<H>) -> nvme_nostd::Result {
    /// use nvme_nostd::{DmaBuffer, QpairOptions};
    /// let qp = ctrlr.create_io_qpair::<DmaBuffer<'_, H>, u32, 4>(QpairOptions::default())?;
    /// let me = ctrlr.controller_id();
    /// ctrlr.attach_namespace(2, &[me])?;
    /// drop(qp);
    /// # Ok(()) }
    /// ```
    pub fn attach_namespace(&mut self, nsid: u32, controllers: &[u16]) -> Result {
        self.attachment(nsid, controllers, false)
    }

    /// Namespace Attachment / detach of `nsid` from the controllers in
    /// `controllers`; refused as [`attach_namespace`](Self::attach_namespace).
    /// I/O to the namespace through this controller then fails with the
    /// device's status, so queue pairs may stay alive; every `Namespace`
    /// handle goes stale.
    pub fn detach_namespace(&self, nsid: u32, controllers: &[u16]) -> Result {
        self.attachment(nsid, controllers, true)
    }

    fn attachment(&self, nsid: u32, controllers: &[u16], detach: bool) -> Result {
        self.check_namespace_management()?;
        if nsid == 0 || nsid == u32::MAX {
            return Err(Error::InvalidArgument(Argument::NamespaceId));
        }
        if controllers.is_empty() {
            return Err(Error::InvalidArgument(Argument::ControllerList));
        }
        let list = ControllerList::of(controllers).ok_or(Error::InvalidArgument(Argument::ControllerList))?;
        let result = self.admin_write(attachment_command(nsid, detach), list.as_bytes()).map(|_| ());
        self.namespace_changed(nsid);
        result
    }

    /// The allocated namespace identifiers above `after` (Identify CNS
    /// 10h), attached or not, up to 1024; needs namespace management.
    pub fn allocated_namespaces(&self, after: u32) -> Result<ActiveNamespaceList> {
        self.check_namespace_management()?;
        let mut page = [0u8; PAGE_SIZE];
        self.identify_raw(Cns::ALLOCATED_NAMESPACES, after, &mut page)?;
        Ok(ActiveNamespaceList::from_bytes(&page))
    }

    /// Identify Namespace of an allocated namespace, attached or not (CNS
    /// 11h); needs namespace management.
    pub fn identify_allocated_namespace(&self, nsid: u32) -> Result<IdentifyNamespace> {
        self.check_namespace_management()?;
        if nsid == 0 || nsid == u32::MAX {
            return Err(Error::InvalidArgument(Argument::NamespaceId));
        }
        let mut page = [0u8; PAGE_SIZE];
        self.identify_raw(Cns::ALLOCATED_NAMESPACE, nsid, &mut page)?;
        Ok(IdentifyNamespace::from_bytes(&page))
    }

    /// The controllers `nsid` is attached to (CNS 12h), from controller
    /// identifier `from` up; needs namespace management.
    pub fn attached_controllers(&self, nsid: u32, from: u16) -> Result<ControllerList> {
        self.check_namespace_management()?;
        if nsid == 0 || nsid == u32::MAX {
            return Err(Error::InvalidArgument(Argument::NamespaceId));
        }
        self.controller_list(Cns::ATTACHED_CONTROLLERS, nsid, from)
    }

    /// The controllers of the NVM subsystem (CNS 13h), from controller
    /// identifier `from` up; needs namespace management.
    pub fn subsystem_controllers(&self, from: u16) -> Result<ControllerList> {
        self.check_namespace_management()?;
        self.controller_list(Cns::SUBSYSTEM_CONTROLLERS, 0, from)
    }

    fn controller_list(&self, cns: Cns, nsid: u32, from: u16) -> Result<ControllerList> {
        let mut cmd = SubmissionEntry::new(AdminOpcode::IDENTIFY.0, nsid);
        // CNTID (the first identifier wanted) in CDW10 bits 31:16.
        cmd.cdw10 = u32::from(cns.0) | u32::from(from) << 16;
        let mut page = [0u8; PAGE_SIZE];
        self.admin_exec(cmd, Some(&mut page))?;
        Ok(ControllerList::from_bytes(&page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte by byte against the figures of Namespace Management, Namespace
    /// Attachment and Identify (CDW10: CNS in bits 7:0, CNTID in 31:16).
    #[test]
    fn encodings() {
        let create = management_command(0, false);
        assert_eq!((create.cdw0.opc(), create.nsid, create.cdw10), (0x0d, 0, 0));
        let delete = management_command(9, true);
        assert_eq!((delete.nsid, delete.cdw10), (9, 1));
        let detach = attachment_command(3, true);
        assert_eq!((detach.cdw0.opc(), detach.nsid, detach.cdw10), (0x15, 3, 1));
        assert_eq!(attachment_command(3, false).cdw10, 0);

        let d = NamespaceDescription::new(1000)
            .with_capacity(600)
            .with_lba_format(0x25)
            .with_metadata_inline(true)
            .with_protection(2, true)
            .with_shared(true);
        let bytes = d.data().unwrap();
        let bytes = bytes.as_bytes();
        assert_eq!(&bytes[0..8], &1000u64.to_le_bytes(), "NSZE");
        assert_eq!(&bytes[8..16], &600u64.to_le_bytes(), "NCAP");
        // FLBAS: index bits 3:0 = 5, bit 4 extended, bits 6:5 = 2.
        assert_eq!(bytes[26], 0x05 | 1 << 4 | 2 << 5);
        assert_eq!(bytes[29], 2 | 1 << 3, "DPS");
        assert_eq!(bytes[30], 1, "NMIC");
        assert!(bytes[31..].iter().all(|&b| b == 0) && bytes[16..26].iter().all(|&b| b == 0));

        let bad = |d: NamespaceDescription| d.data().err();
        let size = Some(Error::InvalidArgument(Argument::NamespaceSize));
        assert_eq!(bad(NamespaceDescription::new(0)), size);
        assert_eq!(bad(NamespaceDescription::new(8).with_capacity(9)), size);
        assert_eq!(bad(NamespaceDescription::new(8).with_capacity(0)), size);
        let lbaf = Some(Error::InvalidArgument(Argument::LbaFormat));
        assert_eq!(bad(NamespaceDescription::new(8).with_lba_format(64)), lbaf);
        assert_eq!(bad(NamespaceDescription::new(8).with_protection(4, false)), lbaf);
    }
}
