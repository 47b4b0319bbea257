//! Completion queue entry status field decoding.
//!
//! NVM Express Base Specification 2.0, section 4.2.3 ("Status Field
//! Definition") and its figures for the Status Code Type and the Generic,
//! Command Specific, Media and Data Integrity, and Path Related status codes
//! (1.4: section 4.6.1.2); NVM Command Set 1.0 section 3.5.1 adds the
//! NVM-specific values.
//!
//! Completion queue entry dword 3 bits 31:17 hold the status field; bit 16 is
//! the phase tag. [`Status::from_dw3_upper`] takes bits 31:16 as a `u16`:
//!
//! | `u16` bits | DW3 bits | field |
//! |------------|----------|-------|
//! | 0          | 16       | P (phase tag, ignored) |
//! | 8:1        | 24:17    | SC, Status Code |
//! | 11:9       | 27:25    | SCT, Status Code Type |
//! | 13:12      | 29:28    | CRD, Command Retry Delay |
//! | 14         | 30       | M, More |
//! | 15         | 31       | DNR, Do Not Retry |
//!
//! The value comes from the device; every decoding here is total and cannot
//! panic.

use bitfield_struct::bitfield;
use core::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Status Code Type (SCT), a 3-bit field. Open: any value may appear.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCodeType(pub u8);

impl StatusCodeType {
    /// From the 3-bit field (for `bitfield-struct`).
    #[inline]
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }

    /// The raw value (for `bitfield-struct`).
    #[inline]
    pub const fn into_bits(self) -> u8 {
        self.0
    }

    /// 0h: Generic Command Status.
    pub const GENERIC: Self = Self(0);
    /// 1h: Command Specific Status.
    pub const COMMAND_SPECIFIC: Self = Self(1);
    /// 2h: Media and Data Integrity Errors.
    pub const MEDIA_DATA_INTEGRITY: Self = Self(2);
    /// 3h: Path Related Status.
    pub const PATH_RELATED: Self = Self(3);
    /// 7h: Vendor Specific.
    pub const VENDOR_SPECIFIC: Self = Self(7);

    /// A short lowercase name for the type, `"unknown"` for reserved values.
    #[inline]
    pub const fn name(self) -> &'static str {
        match self.0 {
            0 => "generic command status",
            1 => "command specific status",
            2 => "media and data integrity error",
            3 => "path related status",
            7 => "vendor specific",
            _ => "unknown",
        }
    }
}

/// Status Code (SC), an 8-bit value whose meaning depends on the
/// [`StatusCodeType`]. Open: any value may appear.
///
/// Named values live in the [`generic`], [`command_specific`], [`media`] and
/// [`path`] modules because the numbering restarts for every type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCode(pub u8);

impl StatusCode {
    /// From the 8-bit field (for `bitfield-struct`).
    #[inline]
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }

    /// The raw value (for `bitfield-struct`).
    #[inline]
    pub const fn into_bits(self) -> u8 {
        self.0
    }
}

/// Defines a module of named [`StatusCode`] constants and a lookup function
/// from code to lowercase description, from a single table.
macro_rules! status_codes {
    (
        $(#[$modmeta:meta])*
        mod $module:ident, fn $lookup:ident {
            $( $name:ident = $value:literal => $desc:literal, )*
        }
    ) => {
        $(#[$modmeta])*
        pub mod $module {
            use super::StatusCode;
            $(
                #[doc = concat!("`", stringify!($value), "`: ", $desc, ".")]
                pub const $name: StatusCode = StatusCode($value);
            )*
        }

        const fn $lookup(sc: u8) -> Option<&'static str> {
            match sc {
                $( $value => Some($desc), )*
                _ => None,
            }
        }
    };
}

status_codes! {
    /// Generic Command Status values (SCT 0h), including the NVM command set
    /// values from 80h.
    mod generic, fn generic_name {
        SUCCESS = 0x00 => "successful completion",
        INVALID_OPCODE = 0x01 => "invalid command opcode",
        INVALID_FIELD = 0x02 => "invalid field in command",
        COMMAND_ID_CONFLICT = 0x03 => "command ID conflict",
        DATA_TRANSFER_ERROR = 0x04 => "data transfer error",
        ABORTED_POWER_LOSS = 0x05 => "commands aborted due to power loss notification",
        INTERNAL_ERROR = 0x06 => "internal error",
        ABORTED_BY_REQUEST = 0x07 => "command abort requested",
        ABORTED_SQ_DELETION = 0x08 => "command aborted due to SQ deletion",
        ABORTED_FAILED_FUSED = 0x09 => "command aborted due to failed fused command",
        ABORTED_MISSING_FUSED = 0x0a => "command aborted due to missing fused command",
        INVALID_NAMESPACE_OR_FORMAT = 0x0b => "invalid namespace or format",
        COMMAND_SEQUENCE_ERROR = 0x0c => "command sequence error",
        INVALID_SGL_SEGMENT_DESCRIPTOR = 0x0d => "invalid SGL segment descriptor",
        INVALID_NUMBER_OF_SGL_DESCRIPTORS = 0x0e => "invalid number of SGL descriptors",
        DATA_SGL_LENGTH_INVALID = 0x0f => "data SGL length invalid",
        METADATA_SGL_LENGTH_INVALID = 0x10 => "metadata SGL length invalid",
        SGL_DESCRIPTOR_TYPE_INVALID = 0x11 => "SGL descriptor type invalid",
        INVALID_USE_OF_CMB = 0x12 => "invalid use of controller memory buffer",
        PRP_OFFSET_INVALID = 0x13 => "PRP offset invalid",
        ATOMIC_WRITE_UNIT_EXCEEDED = 0x14 => "atomic write unit exceeded",
        OPERATION_DENIED = 0x15 => "operation denied",
        SGL_OFFSET_INVALID = 0x16 => "SGL offset invalid",
        HOST_ID_INCONSISTENT_FORMAT = 0x18 => "host identifier inconsistent format",
        KEEP_ALIVE_EXPIRED = 0x19 => "keep alive timer expired",
        KEEP_ALIVE_INVALID = 0x1a => "keep alive timeout invalid",
        ABORTED_PREEMPT = 0x1b => "command aborted due to preempt and abort",
        SANITIZE_FAILED = 0x1c => "sanitize failed",
        SANITIZE_IN_PROGRESS = 0x1d => "sanitize in progress",
        SGL_DATA_BLOCK_GRANULARITY_INVALID = 0x1e => "SGL data block granularity invalid",
        COMMAND_NOT_SUPPORTED_FOR_QUEUE_IN_CMB = 0x1f => "command not supported for queue in CMB",
        NAMESPACE_WRITE_PROTECTED = 0x20 => "namespace is write protected",
        COMMAND_INTERRUPTED = 0x21 => "command interrupted",
        TRANSIENT_TRANSPORT_ERROR = 0x22 => "transient transport error",
        PROHIBITED_BY_LOCKDOWN = 0x23 => "command prohibited by command and feature lockdown",
        ADMIN_COMMAND_MEDIA_NOT_READY = 0x24 => "admin command media not ready",
        LBA_OUT_OF_RANGE = 0x80 => "LBA out of range",
        CAPACITY_EXCEEDED = 0x81 => "capacity exceeded",
        NAMESPACE_NOT_READY = 0x82 => "namespace not ready",
        RESERVATION_CONFLICT = 0x83 => "reservation conflict",
        FORMAT_IN_PROGRESS = 0x84 => "format in progress",
    }
}

status_codes! {
    /// Command Specific Status values (SCT 1h). Values from 80h are those of
    /// the NVM command set I/O commands.
    mod command_specific, fn command_specific_name {
        COMPLETION_QUEUE_INVALID = 0x00 => "completion queue invalid",
        INVALID_QUEUE_IDENTIFIER = 0x01 => "invalid queue identifier",
        INVALID_QUEUE_SIZE = 0x02 => "invalid queue size",
        ABORT_COMMAND_LIMIT_EXCEEDED = 0x03 => "abort command limit exceeded",
        ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED = 0x05 => "asynchronous event request limit exceeded",
        INVALID_FIRMWARE_SLOT = 0x06 => "invalid firmware slot",
        INVALID_FIRMWARE_IMAGE = 0x07 => "invalid firmware image",
        INVALID_INTERRUPT_VECTOR = 0x08 => "invalid interrupt vector",
        INVALID_LOG_PAGE = 0x09 => "invalid log page",
        INVALID_FORMAT = 0x0a => "invalid format",
        FIRMWARE_ACTIVATION_REQUIRES_CONVENTIONAL_RESET = 0x0b => "firmware activation requires conventional reset",
        INVALID_QUEUE_DELETION = 0x0c => "invalid queue deletion",
        FEATURE_ID_NOT_SAVEABLE = 0x0d => "feature identifier not saveable",
        FEATURE_NOT_CHANGEABLE = 0x0e => "feature not changeable",
        FEATURE_NOT_NAMESPACE_SPECIFIC = 0x0f => "feature not namespace specific",
        FIRMWARE_ACTIVATION_REQUIRES_NVM_SUBSYSTEM_RESET = 0x10 => "firmware activation requires NVM subsystem reset",
        FIRMWARE_ACTIVATION_REQUIRES_CONTROLLER_RESET = 0x11 => "firmware activation requires controller level reset",
        FIRMWARE_ACTIVATION_REQUIRES_MAXIMUM_TIME_VIOLATION = 0x12 => "firmware activation requires maximum time violation",
        FIRMWARE_ACTIVATION_PROHIBITED = 0x13 => "firmware activation prohibited",
        OVERLAPPING_RANGE = 0x14 => "overlapping range",
        NAMESPACE_INSUFFICIENT_CAPACITY = 0x15 => "namespace insufficient capacity",
        NAMESPACE_ID_UNAVAILABLE = 0x16 => "namespace identifier unavailable",
        NAMESPACE_ALREADY_ATTACHED = 0x18 => "namespace already attached",
        NAMESPACE_IS_PRIVATE = 0x19 => "namespace is private",
        NAMESPACE_NOT_ATTACHED = 0x1a => "namespace not attached",
        THIN_PROVISIONING_NOT_SUPPORTED = 0x1b => "thin provisioning not supported",
        CONTROLLER_LIST_INVALID = 0x1c => "controller list invalid",
        DEVICE_SELF_TEST_IN_PROGRESS = 0x1d => "device self-test in progress",
        BOOT_PARTITION_WRITE_PROHIBITED = 0x1e => "boot partition write prohibited",
        INVALID_CONTROLLER_IDENTIFIER = 0x1f => "invalid controller identifier",
        INVALID_SECONDARY_CONTROLLER_STATE = 0x20 => "invalid secondary controller state",
        INVALID_NUMBER_OF_CONTROLLER_RESOURCES = 0x21 => "invalid number of controller resources",
        INVALID_RESOURCE_IDENTIFIER = 0x22 => "invalid resource identifier",
        SANITIZE_PROHIBITED_WHILE_PMR_ENABLED = 0x23 => "sanitize prohibited while persistent memory region is enabled",
        ANA_GROUP_IDENTIFIER_INVALID = 0x24 => "ANA group identifier invalid",
        ANA_ATTACH_FAILED = 0x25 => "ANA attach failed",
        INSUFFICIENT_CAPACITY = 0x26 => "insufficient capacity",
        NAMESPACE_ATTACHMENT_LIMIT_EXCEEDED = 0x27 => "namespace attachment limit exceeded",
        PROHIBITION_OF_COMMAND_EXECUTION_NOT_SUPPORTED = 0x28 => "prohibition of command execution not supported",
        IO_COMMAND_SET_NOT_SUPPORTED = 0x29 => "I/O command set not supported",
        IO_COMMAND_SET_NOT_ENABLED = 0x2a => "I/O command set not enabled",
        IO_COMMAND_SET_COMBINATION_REJECTED = 0x2b => "I/O command set combination rejected",
        INVALID_IO_COMMAND_SET = 0x2c => "invalid I/O command set",
        IDENTIFIER_UNAVAILABLE = 0x2d => "identifier unavailable",
        CONFLICTING_ATTRIBUTES = 0x80 => "conflicting attributes",
        INVALID_PROTECTION_INFORMATION = 0x81 => "invalid protection information",
        ATTEMPTED_WRITE_TO_READ_ONLY_RANGE = 0x82 => "attempted write to read only range",
        COMMAND_SIZE_LIMIT_EXCEEDED = 0x83 => "command size limit exceeded",
        ZONE_BOUNDARY_ERROR = 0xb8 => "zone boundary error",
        ZONE_IS_FULL = 0xb9 => "zone is full",
        ZONE_IS_READ_ONLY = 0xba => "zone is read only",
        ZONE_IS_OFFLINE = 0xbb => "zone is offline",
        ZONE_INVALID_WRITE = 0xbc => "zone invalid write",
        TOO_MANY_ACTIVE_ZONES = 0xbd => "too many active zones",
        TOO_MANY_OPEN_ZONES = 0xbe => "too many open zones",
        INVALID_ZONE_STATE_TRANSITION = 0xbf => "invalid zone state transition",
    }
}

status_codes! {
    /// Media and Data Integrity Error values (SCT 2h).
    mod media, fn media_name {
        WRITE_FAULT = 0x80 => "write fault",
        UNRECOVERED_READ_ERROR = 0x81 => "unrecovered read error",
        END_TO_END_GUARD_CHECK_ERROR = 0x82 => "end-to-end guard check error",
        END_TO_END_APPLICATION_TAG_CHECK_ERROR = 0x83 => "end-to-end application tag check error",
        END_TO_END_REFERENCE_TAG_CHECK_ERROR = 0x84 => "end-to-end reference tag check error",
        COMPARE_FAILURE = 0x85 => "compare failure",
        ACCESS_DENIED = 0x86 => "access denied",
        DEALLOCATED_OR_UNWRITTEN_LOGICAL_BLOCK = 0x87 => "deallocated or unwritten logical block",
        END_TO_END_STORAGE_TAG_CHECK_ERROR = 0x88 => "end-to-end storage tag check error",
    }
}

status_codes! {
    /// Path Related Status values (SCT 3h).
    mod path, fn path_name {
        INTERNAL_PATH_ERROR = 0x00 => "internal path error",
        ANA_PERSISTENT_LOSS = 0x01 => "asymmetric access persistent loss",
        ANA_INACCESSIBLE = 0x02 => "asymmetric access inaccessible",
        ANA_TRANSITION = 0x03 => "asymmetric access transition",
        CONTROLLER_PATHING_ERROR = 0x60 => "controller pathing error",
        HOST_PATHING_ERROR = 0x70 => "host pathing error",
        COMMAND_ABORTED_BY_HOST = 0x71 => "command aborted by host",
    }
}

/// The status field of a completion queue entry (DW3 bits 31:17), with the
/// phase tag (DW3 bit 16) in bit 0.
///
/// Equality and hashing ignore the phase tag: two statuses compare equal
/// exactly when SC, SCT, CRD, M and DNR all match.
#[bitfield(u16, debug = false)]
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Status {
    /// P: the phase tag (meaningful only inside a completion entry).
    pub p: bool,
    /// SC: Status Code.
    #[bits(8)]
    pub sc: StatusCode,
    /// SCT: Status Code Type.
    #[bits(3)]
    pub sct: StatusCodeType,
    /// CRD: Command Retry Delay; 0 means retry at once, 1 to 3 select CRDT1 to
    /// CRDT3 of Identify Controller.
    #[bits(2)]
    pub crd: u8,
    /// M: More; more status information is in the Error Information log.
    pub more: bool,
    /// DNR: Do Not Retry; the command is expected to fail again if submitted
    /// again.
    pub dnr: bool,
}

impl PartialEq for Status {
    fn eq(&self, other: &Self) -> bool {
        self.raw() == other.raw()
    }
}

impl Eq for Status {}

impl core::hash::Hash for Status {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.raw().hash(state)
    }
}

impl Status {
    /// Successful completion (SCT 0h, SC 00h, no flags).
    pub const SUCCESS: Self = Self::new();

    /// Decodes DW3 bits 31:16 of a completion entry (`(dw3 >> 16) as u16`);
    /// the phase tag in bit 0 is cleared. Accepts any value.
    #[inline]
    pub const fn from_dw3_upper(raw: u16) -> Self {
        Self::from_bits(raw & !1)
    }

    /// A status with the given type and code and no CRD, M or DNR flags.
    /// SCT values above 7 are truncated to 3 bits.
    #[inline]
    pub const fn of(sct: StatusCodeType, sc: StatusCode) -> Self {
        Self::new().with_sct(StatusCodeType(sct.0 & 7)).with_sc(sc)
    }

    /// The status as DW3 bits 31:16 with the phase tag bit clear.
    #[inline]
    pub const fn raw(self) -> u16 {
        self.into_bits() & !1
    }

    /// The same status with the phase tag clear (as handed to a command's
    /// owner).
    #[inline]
    pub const fn without_phase(self) -> Self {
        // P is bit 0 (a test checks this against the bitfield).
        Self::from_bits(self.into_bits() & !1)
    }

    /// SCT is Generic and SC is Successful Completion.
    #[inline]
    pub const fn is_success(self) -> bool {
        // SC is bits 8:1 and SCT bits 11:9, both 0 (Generic, Successful
        // Completion); a test checks this against the bitfield for every
        // value. (Plain bit operations: the bitfield's accessors are not
        // inlined across crates, and this runs once per completion.)
        self.into_bits() & 0x0ffe == 0
    }

    /// DNR, Do Not Retry (bit 15), as [`dnr`](Self::dnr), inlined.
    #[inline]
    pub const fn do_not_retry(self) -> bool {
        self.into_bits() & 0x8000 != 0
    }

    /// The command failed and the controller did not set DNR, so it may
    /// succeed if submitted again (after the CRD delay).
    #[inline]
    pub const fn is_retryable(self) -> bool {
        !self.is_success() && !self.do_not_retry()
    }

    /// Lowercase description of the (SCT, SC) pair, or `"unknown status"` for
    /// reserved or unlisted values (`"vendor specific status"` for SCT 7h).
    #[inline]
    pub const fn name(&self) -> &'static str {
        let sc = self.sc().0;
        let found = match self.sct().0 {
            0 => generic_name(sc),
            1 => command_specific_name(sc),
            2 => media_name(sc),
            3 => path_name(sc),
            7 => Some("vendor specific status"),
            _ => None,
        };
        match found {
            Some(name) => name,
            None => "unknown status",
        }
    }
}

impl fmt::Display for Status {
    /// Formats as e.g. `invalid field in command (sct 0x0, sc 0x02, dnr)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (sct {:#x}, sc {:#04x}", self.name(), self.sct().0, self.sc().0)?;
        if self.crd() != 0 {
            write!(f, ", crd {}", self.crd())?;
        }
        if self.more() {
            f.write_str(", more")?;
        }
        if self.dnr() {
            f.write_str(", dnr")?;
        }
        f.write_str(")")
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_helpers_match_the_bitfield() {
        for raw in 0..=u16::MAX {
            let s = Status::from_bits(raw);
            assert_eq!(s.is_success(), s.sct().0 == 0 && s.sc().0 == 0, "{raw:#06x}");
            assert_eq!(s.do_not_retry(), s.dnr(), "{raw:#06x}");
            assert_eq!(s.without_phase(), s.with_p(false), "{raw:#06x}");
            assert_eq!(s.without_phase().into_bits(), s.with_p(false).into_bits(), "{raw:#06x}");
        }
    }
    use core::fmt::Write;

    /// Builds DW3 bits 31:16 from parts, with the phase bit set to check it is ignored.
    fn raw(sct: u16, sc: u16, crd: u16, more: bool, dnr: bool) -> u16 {
        1 | (sc << 1) | (sct << 9) | (crd << 12) | (u16::from(more) << 14) | (u16::from(dnr) << 15)
    }

    struct Buf {
        bytes: [u8; 160],
        len: usize,
    }

    impl Buf {
        fn new() -> Self {
            Self { bytes: [0; 160], len: 0 }
        }

        fn as_str(&self) -> &str {
            core::str::from_utf8(&self.bytes[..self.len]).unwrap()
        }
    }

    impl Write for Buf {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
            let dst = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
            dst.copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }

    fn display(s: Status) -> Buf {
        let mut buf = Buf::new();
        write!(buf, "{s}").expect("display fits in the buffer");
        buf
    }

    #[test]
    fn success() {
        for phase in [0, 1] {
            let s = Status::from_dw3_upper(phase);
            assert!(s.is_success());
            assert!(!s.is_retryable());
            assert_eq!(s, Status::SUCCESS);
            assert_eq!(s.name(), "successful completion");
            assert_eq!(display(s).as_str(), "successful completion (sct 0x0, sc 0x00)");
        }
        assert_eq!(Status::default(), Status::SUCCESS);
    }

    #[test]
    fn invalid_field_with_dnr() {
        let s = Status::from_dw3_upper(raw(0, 0x02, 0, false, true));
        assert_eq!(s.sct(), StatusCodeType::GENERIC);
        assert_eq!(s.sc(), generic::INVALID_FIELD);
        assert!(s.dnr());
        assert!(!s.more());
        assert_eq!(s.crd(), 0);
        assert!(!s.is_success());
        assert!(!s.is_retryable());
        assert_eq!(s.name(), "invalid field in command");
        assert_eq!(display(s).as_str(), "invalid field in command (sct 0x0, sc 0x02, dnr)");
        let mut dbg = Buf::new();
        write!(dbg, "{s:?}").unwrap();
        assert_eq!(dbg.as_str(), "Status(invalid field in command (sct 0x0, sc 0x02, dnr))");
    }

    #[test]
    fn compare_failure() {
        let s = Status::from_dw3_upper(raw(2, 0x85, 2, true, false));
        assert_eq!(s.sct(), StatusCodeType::MEDIA_DATA_INTEGRITY);
        assert_eq!(s.sc(), media::COMPARE_FAILURE);
        assert_eq!(s.crd(), 2);
        assert!(s.more());
        assert!(s.is_retryable());
        assert_eq!(s.name(), "compare failure");
        assert_eq!(display(s).as_str(), "compare failure (sct 0x2, sc 0x85, crd 2, more)");
    }

    #[test]
    fn invalid_queue_identifier() {
        let s = Status::from_dw3_upper(raw(1, 0x01, 0, false, true));
        assert_eq!(s.sct(), StatusCodeType::COMMAND_SPECIFIC);
        assert_eq!(s.sc(), command_specific::INVALID_QUEUE_IDENTIFIER);
        assert_eq!(s.name(), "invalid queue identifier");
        assert_eq!(s, Status::from_dw3_upper(s.raw()));
        let mut built =
            Status::of(StatusCodeType::COMMAND_SPECIFIC, command_specific::INVALID_QUEUE_IDENTIFIER);
        assert_eq!(built.name(), s.name());
        built = Status::from_dw3_upper(built.raw() | (1 << 15));
        assert_eq!(built, s);
    }

    #[test]
    fn other_types() {
        let s = Status::from_dw3_upper(raw(0, 0x80, 0, false, false));
        assert_eq!(s.name(), "LBA out of range");
        let s = Status::from_dw3_upper(raw(3, 0x03, 0, false, false));
        assert_eq!(s.sct(), StatusCodeType::PATH_RELATED);
        assert_eq!(s.sc(), path::ANA_TRANSITION);
        assert_eq!(s.name(), "asymmetric access transition");
        assert!(s.is_retryable());
        let s = Status::from_dw3_upper(raw(7, 0xc0, 0, false, false));
        assert_eq!(s.sct(), StatusCodeType::VENDOR_SPECIFIC);
        assert_eq!(s.name(), "vendor specific status");
        assert_eq!(StatusCodeType(4).name(), "unknown");
        assert_eq!(StatusCodeType::GENERIC.name(), "generic command status");
    }

    #[test]
    fn unknown_status() {
        let s = Status::from_dw3_upper(raw(5, 0xff, 3, true, true));
        assert_eq!(s.sct(), StatusCodeType(5));
        assert_eq!(s.sc(), StatusCode(0xff));
        assert_eq!(s.name(), "unknown status");
        assert_eq!(s.sct().name(), "unknown");
        assert_eq!(display(s).as_str(), "unknown status (sct 0x5, sc 0xff, crd 3, more, dnr)");
        // Reserved code within a known type.
        let s = Status::from_dw3_upper(raw(0, 0x17, 0, false, false));
        assert_eq!(s.name(), "unknown status");
    }

    #[test]
    fn exhaustive_total() {
        // Every value natively; a spread sample under Miri, which is slow.
        let step = if cfg!(miri) { 251 } else { 1 };
        for raw in (0..=u16::MAX).step_by(step) {
            let s = Status::from_dw3_upper(raw);
            assert_eq!(s.raw(), raw & !1);
            assert_eq!(u16::from(s.sc().0) << 1, raw & 0x01fe);
            assert!(s.sct().0 <= 7);
            assert!(s.crd() <= 3);
            assert!(!s.name().is_empty());
            let _ = s.sct().name();
            assert_eq!(s.is_retryable(), !s.is_success() && !s.dnr());
            let buf = display(s);
            assert!(buf.as_str().starts_with(s.name()));
            let mut dbg = Buf::new();
            write!(dbg, "{s:?}").expect("debug fits in the buffer");
        }
    }
}
