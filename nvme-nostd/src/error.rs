//! The driver's one error type, with kinds to match on and
//! [`Error::origin`] to say whose fault an error is.

use crate::spec::status::Status;
use core::fmt;
use hal_traits::HalError;

/// Whose fault an [`Error`] is, which says what to do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The caller's: bad input, or a resource it must free first (a full
    /// request pool). Nothing was submitted; fix the call or retry later.
    Caller,
    /// The device's: an error status, a timeout, a fatal status, data the
    /// driver refuses, a reset, a removal. Retry, reset, or give up on the
    /// device.
    Device,
    /// The back-end's (the [`Hal`](crate::Hal)): it could not allocate, map or
    /// translate memory.
    Backend,
}

/// An argument the driver refused ([`Error::InvalidArgument`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Argument {
    /// A namespace identifier of 0 or FFFFFFFFh.
    NamespaceId,
    /// The namespace is not active (its Identify Namespace data is zero).
    InactiveNamespace,
    /// A namespace handle that another controller identified.
    ForeignNamespace,
    /// A namespace handle that may no longer describe its namespace: from
    /// before a Format NVM, or a change seen after a reset or a Namespace
    /// Attribute Changed notice, or a revalidation whose Identify failed
    /// (nothing vouches for it then). Get a new one
    /// (`Controller::namespace`).
    StaleNamespace,
    /// A transfer of zero blocks or bytes.
    ZeroLength,
    /// More than 65536 blocks in one command (NLB is 16 bits).
    TooManyBlocks,
    /// `ControllerOptions::io_queues` outside 1 to 64.
    IoQueues,
    /// A queue of fewer than 2 entries (after CAP.MQES), or no request slot.
    QueueEntries,
    /// A queue priority (QPRIO) above 3.
    Priority,
    /// A transfer limit below one page.
    MaxTransfer,
    /// A raw command that carries data pointers (PRP1, PRP2, MPTR), SGLs or
    /// fused operation bits the driver does not set itself.
    RawCommandPointers,
    /// A buffer for an opcode that transfers no data.
    DataForNoDataOpcode,
    /// A CID that names no request in flight on this queue pair.
    UnknownCid,
    /// A log page read of 0 bytes, or whose length or offset is not a
    /// multiple of 4 (Get Log Page counts dwords).
    LogPageAlignment,
    /// A log page read past the end of the page.
    LogPageRange,
    /// Set Features of a feature the driver sets itself (Number of Queues,
    /// Host Behavior Support, Keep Alive Timer, Host Memory Buffer).
    DriverOwnedFeature,
    /// Get or Set Features without data of a feature that moves a data
    /// structure (LBA Range Type, Autonomous Power State Transition, Host
    /// Memory Buffer attributes, Timestamp, Host Behavior Support, Host
    /// Identifier): the controller would move it to or from address 0.
    /// Their typed helpers carry the data.
    FeatureWithData,
    /// A power state above NPSS.
    PowerState,
    /// Dataset Management with no range, more than 256, or a range of no
    /// blocks.
    DsmRanges,
    /// Copy with no source range, more ranges than the namespace's MSRC + 1
    /// allows, a range of no blocks or above MSSRL, or more blocks in all
    /// than MCL.
    CopyRanges,
    /// A Copy whose PRINFOR and PRINFOW differ in PRACT (controllers refuse
    /// it with Invalid Field; QEMU does).
    CopyPract,
    /// A Copy's read protection with a reference tag: the expected
    /// reference tags are each source range's
    /// ([`CopyRange::with_reference_tag`](crate::CopyRange::with_reference_tag)).
    CopyReferenceTag,
    /// A reservation type, or a Persist Through Power Loss change, that the
    /// namespace's RESCAP does not offer.
    Reservation,
    /// Protection information actions or checks on a namespace formatted
    /// without protection information.
    ProtectionInformation,
    /// The metadata of a separate-metadata namespace is not one contiguous
    /// dword-aligned run in device space, as MPTR needs, and the controller
    /// takes no SGL for metadata (Identify Controller SGLS bit 19; where it
    /// does, up to 32 runs go by one, PSDT 10b, unless the request is split
    /// above the transfer limit, whose parts each need one run). A caller's
    /// buffer that the HAL shares page by page (behind an IOMMU, or through
    /// bounce pages) gives one run only where its metadata lies within one
    /// page; a [`DmaBuffer`](crate::DmaBuffer) (or memory the HAL registered
    /// ahead of time) always does.
    MetadataNotContiguous,
    /// A scatter list where one cannot go: with separate metadata, for a
    /// raw command, for admin data; or a scatter list as a piece of
    /// another.
    ScatterList,
    /// An LBA that starts no zone of the zoned namespace.
    ZoneStart,
    /// A zone action, or a zone state filter, the specification does not
    /// name.
    ZoneAction,
    /// More pieces of one scatter list than
    /// [`MAX_SHARED_PIECES`](crate::MAX_SHARED_PIECES) that the HAL cannot
    /// translate and has to share (translated pieces, its DMA memory or
    /// memory registered up front, do not count).
    ScatterTooManyShared,
    /// A buffer [`Controller::register`](crate::Controller::register)
    /// cannot keep a device address for: empty, a scatter list, or bytes
    /// the controller's HAL does not reach ahead of time as one run in
    /// device space (it does not translate them: such a buffer is shared
    /// per request instead, unregistered).
    NotRegistrable,
    /// A temperature sensor above 8.
    TemperatureSensor,
    /// Admin command data above 4 KiB (one page, through PRP1).
    AdminDataTooLarge,
    /// A timestamp above 48 bits of milliseconds.
    Timestamp,
    /// An LBA format index above the namespace's NLBAF (or above 15), or a
    /// protection information type above 3.
    LbaFormat,
    /// A namespace size or capacity of 0, or a capacity above the size.
    NamespaceSize,
    /// A controller list that is empty or holds more than 2047 identifiers.
    ControllerList,
    /// A firmware image piece that is empty, above 4 KiB, not a multiple of
    /// 4 bytes, or off the update granularity (FWUG).
    FirmwarePiece,
    /// A firmware slot above FRMW's number of slots, slot 0 where the
    /// action needs a slot, or read-only slot 1 to replace.
    FirmwareSlot,
}

impl Argument {
    /// A short description.
    pub const fn describe(self) -> &'static str {
        match self {
            Argument::NamespaceId => "namespace identifier 0 or FFFFFFFFh",
            Argument::InactiveNamespace => "namespace is not active (NSZE is 0)",
            Argument::ForeignNamespace => "namespace handle of another controller",
            Argument::StaleNamespace => {
                "namespace handle out of date (a format, a change, or unverified); get a new one"
            }
            Argument::ZeroLength => "zero-length transfer",
            Argument::TooManyBlocks => "more than 65536 blocks in one command",
            Argument::IoQueues => "io_queues must be 1 to 64",
            Argument::QueueEntries => {
                "queue needs at least 2 entries (capped by CAP.MQES) and 1 request slot"
            }
            Argument::Priority => "priority is 0 to 3",
            Argument::MaxTransfer => "max_transfer_bytes below one page",
            Argument::RawCommandPointers => "raw commands may not carry data pointers, SGLs or fused bits",
            Argument::DataForNoDataOpcode => "this opcode transfers no data",
            Argument::UnknownCid => "no request with this CID is in flight",
            Argument::LogPageAlignment => {
                "log page length must be a non-zero multiple of 4, its offset a multiple of 4"
            }
            Argument::LogPageRange => "log page read past the end of the page",
            Argument::DriverOwnedFeature => "the driver sets this feature itself",
            Argument::FeatureWithData => "this feature moves data: use its typed helper",
            Argument::PowerState => "power state above NPSS",
            Argument::DsmRanges => "dataset management needs 1 to 256 ranges of at least one block",
            Argument::CopyRanges => "copy ranges outside the namespace's MSRC, MSSRL or MCL",
            Argument::CopyPract => "a copy's read and write protection settings differ in PRACT",
            Argument::CopyReferenceTag => "a copy's expected reference tags are per source range",
            Argument::Reservation => "reservation type or PTPL change not in the namespace's RESCAP",
            Argument::ProtectionInformation => "protection information asked of a namespace without it",
            Argument::MetadataNotContiguous => {
                "metadata not one contiguous dword-aligned run in device space"
            }
            Argument::ScatterList => {
                "a scatter list carries data only: not with separate metadata or raw commands"
            }
            Argument::ZoneStart => "an LBA that starts no zone",
            Argument::ZoneAction => "a zone action or state filter the specification does not name",
            Argument::ScatterTooManyShared => {
                "more scatter list pieces than MAX_SHARED_PIECES that the HAL has to share (use DMA memory or \
                 register it)"
            }
            Argument::NotRegistrable => {
                "not registrable: empty, a scatter list, or not one run of memory the HAL reaches ahead of time"
            }
            Argument::TemperatureSensor => "temperature sensor above 8",
            Argument::AdminDataTooLarge => "admin command data above 4 KiB",
            Argument::Timestamp => "timestamp above 48 bits of milliseconds",
            Argument::LbaFormat => "LBA format index beyond NLBAF, or protection information type above 3",
            Argument::NamespaceSize => "namespace size or capacity 0, or capacity above size",
            Argument::ControllerList => "controller list empty or above 2047 identifiers",
            Argument::FirmwarePiece => {
                "firmware piece empty, above 4 KiB, not dword-sized or off the granularity"
            }
            Argument::FirmwareSlot => "firmware slot out of range, or read-only slot 1 to replace",
        }
    }
}

/// Something the driver or the controller cannot do ([`Error::Unsupported`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Feature {
    /// The controller lacks the NVM command set (CAP.CSS bit 0).
    NvmCommandSet,
    /// The controller's minimum memory page size is above 4 KiB (CAP.MPSMIN).
    PageSize,
    /// A zoned namespace (its own command set).
    ZonedNamespace,
    /// Zone descriptor extensions: the zoned namespace has none (ZDES 0).
    ZoneDescriptorExtension,
    /// Copy on a namespace with the 64-bit guard, whose source ranges take
    /// descriptor format 1h, which the driver does not build.
    CopyFormat1,
    /// A namespace of a command set other than NVM.
    OtherCommandSet,
    /// Get Log Page with an offset or more than 4 KiB: the controller lacks
    /// extended data (Identify Controller LPA bit 2).
    ExtendedLogPage,
    /// SMART / Health information per namespace (LPA bit 0).
    SmartPerNamespace,
    /// A log page the controller does not advertise.
    LogPage,
    /// A feature the controller does not advertise.
    FeatureId,
    /// Saved values and the SEL field of Get Features (ONCS bit 4).
    SaveSelect,
    /// Format NVM (OACS bit 1).
    Format,
    /// Device Self-test (OACS bit 4).
    SelfTest,
    /// The Sanitize action asked for (SANICAP).
    Sanitize,
    /// Security Send and Receive (OACS bit 0).
    Security,
    /// An asynchronous event notice the controller does not advertise (OAES).
    AsyncEvent,
    /// Namespace Management and Attachment (OACS bit 3).
    NamespaceManagement,
    /// An NVM command the controller does not advertise (ONCS: Compare bit
    /// 0, Write Uncorrectable bit 1, Dataset Management bit 2, Write Zeroes
    /// bit 3, Reservations bit 5, Verify bit 7, Copy bit 8 with OCFS bit
    /// 0).
    NvmCommand,
    /// Firmware Commit and Firmware Image Download (OACS bit 2).
    Firmware,
    /// A firmware update granularity (FWUG) above the 4 KiB a piece of the
    /// image can be.
    FirmwareGranularity,
    /// Firmware activation without a reset (FRMW bit 4).
    FirmwareActivation,
    /// Weighted round robin arbitration with urgent priority (CAP.AMS bit 0).
    WeightedRoundRobin,
}

impl Feature {
    /// A short description.
    pub const fn describe(self) -> &'static str {
        match self {
            Feature::NvmCommandSet => "controller lacks the NVM command set (CAP.CSS)",
            Feature::PageSize => "controller's minimum page size is above 4 KiB (CAP.MPSMIN)",
            Feature::ZonedNamespace => "a zoned namespace on a controller without the zoned command set",
            Feature::ZoneDescriptorExtension => "zoned namespace without zone descriptor extensions (ZDES 0)",
            Feature::CopyFormat1 => "copy on a 64-bit guard namespace (source ranges of format 1h)",
            Feature::OtherCommandSet => "namespace of a command set other than NVM",
            Feature::ExtendedLogPage => "controller lacks extended Get Log Page data (LPA bit 2)",
            Feature::SmartPerNamespace => "controller keeps no SMART / health information per namespace",
            Feature::LogPage => "controller does not advertise this log page",
            Feature::FeatureId => "controller does not advertise this feature",
            Feature::SaveSelect => "controller cannot save features or select their values (ONCS bit 4)",
            Feature::Format => "controller lacks Format NVM (OACS bit 1)",
            Feature::SelfTest => "controller lacks Device Self-test (OACS bit 4)",
            Feature::Sanitize => "controller does not offer this sanitize action (SANICAP)",
            Feature::Security => "controller lacks Security Send and Receive (OACS bit 0)",
            Feature::AsyncEvent => "controller does not advertise this asynchronous event notice (OAES)",
            Feature::NamespaceManagement => {
                "controller lacks Namespace Management and Attachment (OACS bit 3)"
            }
            Feature::Firmware => "controller lacks Firmware Commit and Image Download (OACS bit 2)",
            Feature::NvmCommand => "controller does not advertise this NVM command (ONCS)",
            Feature::FirmwareGranularity => "firmware update granularity (FWUG) above 4 KiB",
            Feature::FirmwareActivation => "controller cannot activate firmware without a reset (FRMW bit 4)",
            Feature::WeightedRoundRobin => {
                "controller lacks weighted round robin arbitration (CAP.AMS bit 0)"
            }
        }
    }
}

/// Data from the device that the driver refuses to use
/// ([`Error::MalformedDevice`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Malformed {
    /// CAP.MQES is 0.
    MqesZero,
    /// SQES or CQES do not allow 64-byte submission and 16-byte completion
    /// entries.
    EntrySizes,
    /// FLBAS names an LBA format beyond NLBAF.
    LbaFormatIndex,
    /// The LBA data size is outside 512 bytes to 64 KiB.
    LbaDataSize,
    /// The admin submission queue never drained.
    AdminQueueStuck,
    /// The active namespace list does not increase, or names FFFFFFFFh.
    NamespaceList,
    /// A completion queue kept posting entries that name no command.
    CompletionFlood,
    /// Namespace Management / create returned NSID 0 or FFFFFFFFh.
    NamespaceId,
    /// After a reset, the controller refused the CMB address it had
    /// accepted at attach (CMBSTS.CBAI), with submission queues there.
    CmbAddress,
    /// DPS names a protection information type above 3, or one the LBA
    /// format's metadata has no room for (MS under 8 bytes).
    ProtectionInformation,
    /// A zoned namespace whose format has a zone size of 0.
    ZoneSize,
}

impl Malformed {
    /// A short description.
    pub const fn describe(self) -> &'static str {
        match self {
            Malformed::MqesZero => "CAP.MQES is 0",
            Malformed::EntrySizes => "SQES/CQES do not allow 64/16-byte entries",
            Malformed::LbaFormatIndex => "FLBAS names an LBA format beyond NLBAF",
            Malformed::LbaDataSize => "LBA data size outside 512 B to 64 KiB",
            Malformed::AdminQueueStuck => "admin submission queue never drained",
            Malformed::NamespaceList => "active namespace list not increasing",
            Malformed::NamespaceId => "namespace created with identifier 0 or FFFFFFFFh",
            Malformed::CompletionFlood => "completion queue flooded with entries that name no command",
            Malformed::CmbAddress => "CMB address refused after a reset",
            Malformed::ProtectionInformation => "DPS names protection information the format cannot hold",
            Malformed::ZoneSize => "a zoned namespace with a zone size of 0",
        }
    }
}

/// What the driver was waiting for when time ran out ([`Error::Timeout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Wait {
    /// An admin command's completion.
    AdminCommand,
    /// An I/O command's completion.
    IoCommand,
    /// CSTS.RDY = 1 after CC.EN = 1.
    Enable,
    /// CSTS.RDY = 0 after CC.EN = 0.
    Disable,
    /// A request the caller waited for ([`IoQueuePair::wait`](crate::IoQueuePair::wait)).
    Request,
    /// CSTS.SHST = shutdown complete after CC.SHN.
    Shutdown,
}

impl Wait {
    /// A short description.
    pub const fn describe(self) -> &'static str {
        match self {
            Wait::AdminCommand => "admin command",
            Wait::IoCommand => "I/O command",
            Wait::Enable => "CSTS.RDY=1 after enable",
            Wait::Disable => "CSTS.RDY=0 after disable",
            Wait::Request => "the request did not complete in the time given",
            Wait::Shutdown => "CSTS.SHST=complete after CC.SHN",
        }
    }
}

/// Why a buffer's device segments cannot be described by PRPs (NVMe 1.4
/// section 4.3), nor, where the controller has them, by an SGL (section
/// 4.4) ([`Error::NotPrpShaped`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PrpShape {
    /// The first segment does not start on a dword boundary.
    FirstNotDwordAligned,
    /// A segment after the first does not start on a page boundary.
    InnerStartNotPageAligned,
    /// A segment before the last does not end on a page boundary.
    InnerEndNotPageAligned,
    /// The segments do not add up to the buffer's length.
    LengthMismatch,
    /// More pages than the request slot's PRP list pages can name.
    TooManyPages,
    /// More SGL descriptors than the request slot's list pages hold.
    TooManyDescriptors,
    /// A piece that does not start and end on a dword, for a controller
    /// whose SGLs need dword alignment and granularity (SGLS 10b).
    SglNotDwordGranular,
}

impl PrpShape {
    /// A short description.
    pub const fn describe(self) -> &'static str {
        match self {
            PrpShape::FirstNotDwordAligned => "first segment not dword aligned",
            PrpShape::TooManyDescriptors => "more SGL descriptors than the request's list pages hold",
            PrpShape::SglNotDwordGranular => {
                "a piece not dword aligned and sized, as the controller's SGLs need"
            }
            PrpShape::InnerStartNotPageAligned => {
                "a segment after the first does not start on a page boundary"
            }
            PrpShape::InnerEndNotPageAligned => "a segment before the last does not end on a page boundary",
            PrpShape::LengthMismatch => "segments do not add up to the buffer length",
            PrpShape::TooManyPages => "more pages than the PRP list can name",
        }
    }
}

/// The step of a queue pair's recovery that failed ([`Broken::step`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecoveryStep {
    /// Create I/O Completion Queue (NVMe 1.4 section 5.3), re-creating the
    /// queues after a controller reset.
    CreateIoCq,
    /// Create I/O Submission Queue (section 5.4), likewise.
    CreateIoSq,
    /// Resetting the controller, which a timed-out request needs: the
    /// driver's resets failed `recovery_attempts` times in a row.
    ResetController,
}

impl RecoveryStep {
    /// A short description.
    pub const fn describe(self) -> &'static str {
        match self {
            RecoveryStep::CreateIoCq => "Create I/O Completion Queue",
            RecoveryStep::CreateIoSq => "Create I/O Submission Queue",
            RecoveryStep::ResetController => "controller reset",
        }
    }
}

/// What made a step of recovery fail ([`Broken::cause`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// The controller was reset, which deleted the queues; the step has not
    /// been tried since (or a reset on another thread cut it short).
    Reset,
    /// The controller completed the step's command with this error status.
    Command(Status),
    /// The step's admin command timed out (the controller was reset).
    Timeout,
    /// CSTS.CFS was set during the step (the controller was reset).
    ControllerFatal,
    /// The admin queue was unusable: a reset of the controller had failed.
    ControllerFailed,
    /// The controller answered with data the driver refuses.
    Malformed(Malformed),
}

impl Cause {
    /// The cause that an admin call's error stands for.
    pub(crate) const fn of(e: Error) -> Cause {
        match e {
            Error::Command(status) => Cause::Command(status),
            Error::Timeout(_) => Cause::Timeout,
            Error::ControllerFatal => Cause::ControllerFatal,
            Error::MalformedDevice(m) => Cause::Malformed(m),
            Error::Reset => Cause::Reset,
            // Nothing else comes out of the admin path but `ControllerFailed`
            // (and removal, which the queue pair reports as `DeviceRemoved`).
            _ => Cause::ControllerFailed,
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Reset => write!(f, "controller reset"),
            Cause::Command(status) => write!(f, "{status}"),
            Cause::Timeout => write!(f, "admin command timed out"),
            Cause::ControllerFatal => write!(f, "controller fatal status (CSTS.CFS)"),
            Cause::ControllerFailed => write!(f, "admin queue unusable after a failed reset"),
            Cause::Malformed(m) => write!(f, "{}", m.describe()),
        }
    }
}

/// Why a queue pair takes no requests ([`Error::QueuePairBroken`]): its
/// queues are not on the controller, because a reset deleted them and
/// re-creating them has not worked yet.
///
/// While `terminal` is false the driver heals it by itself: each
/// [`poll`](crate::IoQueuePair::poll) that is due tries again, with a backoff
/// that doubles from `ControllerOptions::recovery_backoff`. It gives up
/// (`terminal`) on a status with Do Not Retry set, or after
/// `ControllerOptions::recovery_attempts` failed attempts; then only a
/// [`Controller::reset`](crate::Controller::reset) (and a `poll`) or a new
/// queue pair helps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Broken {
    /// The step that failed, or comes next.
    pub step: RecoveryStep,
    /// Why it failed ([`Cause::Reset`] before the first attempt).
    pub cause: Cause,
    /// Failed attempts so far.
    pub attempts: u8,
    /// The driver gave up: it no longer tries by itself.
    pub terminal: bool,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "queue pair broken at {} ({}", self.step.describe(), self.cause)?;
        if self.attempts > 0 {
            write!(f, ", {} failed attempts", self.attempts)?;
        }
        if self.terminal {
            write!(f, "): gave up; reset the controller and poll, or drop the queue pair")
        } else {
            write!(f, "): poll() retries it")
        }
    }
}

/// Everything that can go wrong, in kinds to match on; [`Error::origin`] says
/// whose fault it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    // --- bad input from the caller: nothing was submitted ---
    /// An argument is out of its range.
    InvalidArgument(Argument),
    /// The buffer is shorter than the transfer needs.
    BufferTooSmall {
        /// Bytes the transfer needs.
        needed: usize,
        /// Bytes the buffer has.
        actual: usize,
    },
    /// The buffer's start (or, for a buffer the device writes, its start or
    /// length) is not a multiple of `required` bytes: a dword for PRP entries
    /// (NVMe 1.4 section 4.3), or the back-end's
    /// [`DMA_ALIGNMENT`](hal_traits::Hal::DMA_ALIGNMENT).
    BufferMisaligned {
        /// The alignment needed, in bytes.
        required: usize,
    },
    /// The range of logical blocks ends beyond the namespace.
    LbaOutOfRange,
    /// The transfer is larger than the controller (MDTS) or the queue pair
    /// allows; `max` is the limit in bytes.
    TransferTooLarge {
        /// Bytes asked for.
        requested: usize,
        /// The largest transfer allowed.
        max: usize,
    },
    /// Every request slot of the queue pair is in use: poll and try again.
    QueueFull,
    /// No I/O queue identifier is left.
    NoQueueAvailable,
    /// The driver cannot do this yet, or the controller does not support it.
    Unsupported(Feature),

    // --- bad behaviour from the device ---
    /// The controller's registers read all ones: it is gone.
    DeviceRemoved,
    /// CSTS.CFS is set: the controller reports a fatal error.
    ControllerFatal,
    /// The controller did not answer in time.
    Timeout(Wait),
    /// The command completed with an error status.
    Command(Status),
    /// The device returned data the driver refuses to use.
    MalformedDevice(Malformed),
    /// The admin queue is unusable: a reset of the controller failed (or an
    /// admin command just timed out and the reset it caused failed). The
    /// driver tries the reset again on later admin calls (a queue pair's
    /// `poll` makes them) after a doubling backoff, up to
    /// `ControllerOptions::recovery_attempts` failures in a row; after that
    /// only [`Controller::reset`](crate::Controller::reset) helps.
    ControllerFailed,
    /// The controller was reset while the command was outstanding; the
    /// command may or may not have been carried out.
    Reset,
    /// The queue pair cannot take requests (its queues are not on the
    /// controller); the request itself was fine and nothing was submitted.
    /// [`Broken`] says which step of recovery failed, why, and whether the
    /// driver still heals it by itself.
    QueuePairBroken(Broken),

    // --- the back-end ---
    /// The HAL could not allocate or map memory.
    Hal(HalError),
    /// The HAL reported device segments that PRPs cannot describe; nothing
    /// was submitted.
    NotPrpShaped(PrpShape),
}

impl Error {
    /// Whose fault the error is.
    pub const fn origin(&self) -> Origin {
        match self {
            Error::InvalidArgument(_)
            | Error::BufferTooSmall { .. }
            | Error::BufferMisaligned { .. }
            | Error::LbaOutOfRange
            | Error::TransferTooLarge { .. }
            | Error::QueueFull
            | Error::NoQueueAvailable
            | Error::Unsupported(_) => Origin::Caller,
            Error::DeviceRemoved
            | Error::ControllerFatal
            | Error::Timeout(_)
            | Error::Command(_)
            | Error::MalformedDevice(_)
            | Error::ControllerFailed
            | Error::Reset
            | Error::QueuePairBroken(_) => Origin::Device,
            Error::Hal(_) | Error::NotPrpShaped(_) => Origin::Backend,
        }
    }
}

impl From<HalError> for Error {
    fn from(e: HalError) -> Self {
        Error::Hal(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(a) => write!(f, "invalid argument: {}", a.describe()),
            Error::BufferTooSmall { needed, actual } => {
                write!(f, "buffer too small: {actual} bytes, {needed} needed")
            }
            Error::BufferMisaligned { required } => write!(f, "buffer not {required}-byte aligned"),
            Error::LbaOutOfRange => write!(f, "LBA range beyond the namespace"),
            Error::TransferTooLarge { requested, max } => {
                write!(f, "transfer of {requested} bytes exceeds the maximum of {max}")
            }
            Error::QueueFull => write!(f, "no free request slot"),
            Error::NoQueueAvailable => write!(f, "no I/O queue identifier left"),
            Error::Unsupported(what) => write!(f, "unsupported: {}", what.describe()),
            Error::DeviceRemoved => write!(f, "device removed (registers read all ones)"),
            Error::ControllerFatal => write!(f, "controller fatal status (CSTS.CFS)"),
            Error::Timeout(what) => write!(f, "timeout: {}", what.describe()),
            Error::Command(status) => write!(f, "command failed: {status}"),
            Error::MalformedDevice(what) => write!(f, "malformed device data: {}", what.describe()),
            Error::ControllerFailed => write!(f, "controller failed: its reset did not work"),
            Error::Reset => write!(f, "controller reset while the command was outstanding"),
            Error::QueuePairBroken(broken) => write!(f, "{broken}"),
            Error::Hal(e) => write!(f, "HAL: {e}"),
            Error::NotPrpShaped(shape) => {
                write!(f, "buffer segments cannot be described by PRPs: {}", shape.describe())
            }
        }
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Error::Hal(e) => Some(e),
            _ => None,
        }
    }
}

/// The driver's result type.
pub type Result<T = (), E = Error> = core::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_names_its_origin() {
        assert_eq!(Error::QueueFull.origin(), Origin::Caller);
        assert_eq!(Error::InvalidArgument(Argument::Priority).origin(), Origin::Caller);
        assert_eq!(Error::Timeout(Wait::IoCommand).origin(), Origin::Device);
        assert_eq!(Error::Reset.origin(), Origin::Device);
        let hal = HalError::new(hal_traits::HalErrorKind::MapFailed, "x");
        assert_eq!(Error::from(hal).origin(), Origin::Backend);
        assert_eq!(Error::NotPrpShaped(PrpShape::LengthMismatch).origin(), Origin::Backend);
        let e: &dyn core::error::Error = &Error::Hal(hal);
        assert!(e.source().is_some());
    }
}
