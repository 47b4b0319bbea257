//! Log pages returned by Get Log Page (NVMe Base Specification 1.4, section
//! 5.14.1): Error Information, SMART / Health Information, Firmware Slot
//! Information, Changed Namespace List, Commands Supported and Effects.
//!
//! Fields the specification places at offsets their width does not divide
//! (the SMART page's composite temperature, its 128-bit counters) are byte
//! arrays with accessors, so every layout is `#[repr(C)]` without padding.

use crate::identify::{assert_layout, le_u128};
use crate::status::Status;
use bitfield_struct::bitfield;
use core::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Error Information Log Entry (log page 01h, section 5.14.1.1, figure 193):
/// 64 bytes each; the page holds ELPE + 1 of them, newest first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ErrorInformation {
    /// Error Count (offset 0): a unique, increasing number for this error; 0
    /// marks an empty entry.
    pub error_count: u64,
    /// Submission Queue ID (offset 8) of the command that failed.
    pub sqid: u16,
    /// Command ID (offset 10) of the command that failed.
    pub cid: u16,
    /// Status Field (offset 12) of its completion, with the phase tag in bit 0.
    pub status: u16,
    /// Parameter Error Location (offset 14): byte (bits 7:0) and bit (10:8) of
    /// the command in error.
    pub parameter_error_location: u16,
    /// LBA (offset 16): the first logical block of the error, if any.
    pub lba: u64,
    /// Namespace (offset 24) of the error, if any.
    pub nsid: u32,
    /// Vendor Specific Information Available (offset 28): a log page
    /// identifier with more, or 0.
    pub vendor_specific_log: u8,
    /// Transport Type (offset 29).
    pub trtype: u8,
    _rsvd30: [u8; 2],
    /// Command Specific Information (offset 32).
    pub command_specific: u64,
    /// Transport Type Specific Information (offset 40).
    pub trtype_specific: u16,
    _rsvd42: [u8; 22],
}

assert_layout!(ErrorInformation, 64, {
    error_count: 0, sqid: 8, cid: 10, status: 12, parameter_error_location: 14,
    lba: 16, nsid: 24, vendor_specific_log: 28, trtype: 29, command_specific: 32,
    trtype_specific: 40,
});

impl ErrorInformation {
    /// Size in bytes of one entry.
    pub const SIZE: usize = 64;

    /// Decodes one entry.
    pub const fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        zerocopy::transmute!(*bytes)
    }

    /// Whether the entry holds an error (its error count is not 0).
    pub const fn is_valid(&self) -> bool {
        self.error_count != 0
    }

    /// The completion status of the command in error (without the phase tag).
    pub const fn status(&self) -> Status {
        Status::from_bits(self.status).without_phase()
    }
}

/// Critical Warning of the SMART / Health log (offset 0, figure 194): each bit
/// a condition the controller warns of.
#[bitfield(u8)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CriticalWarning {
    /// Available spare capacity fell below its threshold.
    pub spare_below_threshold: bool,
    /// A temperature is above an over-temperature or below an
    /// under-temperature threshold.
    pub temperature: bool,
    /// NVM subsystem reliability is degraded (media or internal errors).
    pub reliability_degraded: bool,
    /// All media is read-only.
    pub read_only: bool,
    /// The volatile memory backup device failed.
    pub volatile_backup_failed: bool,
    /// The Persistent Memory Region became read-only or unreliable.
    pub pmr_read_only: bool,
    #[bits(2)]
    __: u8,
}

/// SMART / Health Information (log page 02h, section 5.14.1.2, figure 194):
/// 512 bytes, for the controller (NSID FFFFFFFFh) or one namespace (LPA bit
/// 0). Counters are 128-bit; see the accessors.
#[repr(C)]
#[derive(Clone, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SmartHealth {
    /// Critical Warning (offset 0).
    pub critical_warning: CriticalWarning,
    /// Composite Temperature (offset 1), in kelvins; see [`Self::temperature`].
    pub composite_temperature: [u8; 2],
    /// Available Spare (offset 3): percentage of spare capacity left.
    pub available_spare: u8,
    /// Available Spare Threshold (offset 4), a percentage.
    pub available_spare_threshold: u8,
    /// Percentage Used (offset 5): estimate of life used (may exceed 100).
    pub percentage_used: u8,
    /// Endurance Group Critical Warning Summary (offset 6).
    pub endurance_group_warning: u8,
    _rsvd7: [u8; 25],
    /// Data Units Read (offset 32), in thousands of 512-byte units.
    pub data_units_read: [u8; 16],
    /// Data Units Written (offset 48), in thousands of 512-byte units.
    pub data_units_written: [u8; 16],
    /// Host Read Commands (offset 64).
    pub host_read_commands: [u8; 16],
    /// Host Write Commands (offset 80).
    pub host_write_commands: [u8; 16],
    /// Controller Busy Time (offset 96), in minutes.
    pub controller_busy_time: [u8; 16],
    /// Power Cycles (offset 112).
    pub power_cycles: [u8; 16],
    /// Power On Hours (offset 128).
    pub power_on_hours: [u8; 16],
    /// Unsafe Shutdowns (offset 144).
    pub unsafe_shutdowns: [u8; 16],
    /// Media and Data Integrity Errors (offset 160).
    pub media_errors: [u8; 16],
    /// Number of Error Information Log Entries (offset 176) over the life of
    /// the controller.
    pub error_log_entries: [u8; 16],
    /// Warning Composite Temperature Time (offset 192), in minutes.
    pub warning_temperature_time: u32,
    /// Critical Composite Temperature Time (offset 196), in minutes.
    pub critical_temperature_time: u32,
    /// Temperature Sensors 1 to 8 (offset 200), in kelvins; 0 when absent.
    pub temperature_sensors: [u16; 8],
    /// Thermal Management Temperature 1 Transition Count (offset 216).
    pub tmt1_transitions: u32,
    /// Thermal Management Temperature 2 Transition Count (offset 220).
    pub tmt2_transitions: u32,
    /// Total Time For Thermal Management Temperature 1 (offset 224), seconds.
    pub tmt1_time: u32,
    /// Total Time For Thermal Management Temperature 2 (offset 228), seconds.
    pub tmt2_time: u32,
    _rsvd232: [u8; 280],
}

assert_layout!(SmartHealth, 512, {
    critical_warning: 0, composite_temperature: 1, available_spare: 3,
    available_spare_threshold: 4, percentage_used: 5, endurance_group_warning: 6,
    data_units_read: 32, data_units_written: 48, host_read_commands: 64,
    host_write_commands: 80, controller_busy_time: 96, power_cycles: 112,
    power_on_hours: 128, unsafe_shutdowns: 144, media_errors: 160,
    error_log_entries: 176, warning_temperature_time: 192,
    critical_temperature_time: 196, temperature_sensors: 200,
    tmt1_transitions: 216, tmt2_transitions: 220, tmt1_time: 224, tmt2_time: 228,
});

impl SmartHealth {
    /// Size in bytes.
    pub const SIZE: usize = 512;

    /// Decodes the page.
    pub const fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        zerocopy::transmute!(*bytes)
    }

    /// Composite Temperature, in kelvins.
    pub const fn temperature(&self) -> u16 {
        u16::from_le_bytes(self.composite_temperature)
    }

    /// Data Units Read (each 1000 units of 512 bytes).
    pub const fn data_units_read(&self) -> u128 {
        le_u128(&self.data_units_read)
    }

    /// Data Units Written (each 1000 units of 512 bytes).
    pub const fn data_units_written(&self) -> u128 {
        le_u128(&self.data_units_written)
    }

    /// Host Read Commands.
    pub const fn host_read_commands(&self) -> u128 {
        le_u128(&self.host_read_commands)
    }

    /// Host Write Commands.
    pub const fn host_write_commands(&self) -> u128 {
        le_u128(&self.host_write_commands)
    }

    /// Power Cycles.
    pub const fn power_cycles(&self) -> u128 {
        le_u128(&self.power_cycles)
    }

    /// Power On Hours.
    pub const fn power_on_hours(&self) -> u128 {
        le_u128(&self.power_on_hours)
    }

    /// Unsafe Shutdowns.
    pub const fn unsafe_shutdowns(&self) -> u128 {
        le_u128(&self.unsafe_shutdowns)
    }

    /// Media and Data Integrity Errors.
    pub const fn media_errors(&self) -> u128 {
        le_u128(&self.media_errors)
    }

    /// Number of Error Information Log Entries over the controller's life.
    pub const fn error_log_entries(&self) -> u128 {
        le_u128(&self.error_log_entries)
    }
}

impl fmt::Debug for SmartHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmartHealth")
            .field("critical_warning", &self.critical_warning)
            .field("temperature_k", &self.temperature())
            .field("available_spare", &self.available_spare)
            .field("percentage_used", &self.percentage_used)
            .field("data_units_read", &self.data_units_read())
            .field("data_units_written", &self.data_units_written())
            .field("power_on_hours", &self.power_on_hours())
            .field("media_errors", &self.media_errors())
            .finish_non_exhaustive()
    }
}

/// Firmware Slot Information (log page 03h, section 5.14.1.3, figure 195):
/// 512 bytes.
#[repr(C)]
#[derive(Clone, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct FirmwareSlot {
    /// AFI (offset 0): Active Firmware Info; see [`Self::active_slot`] and
    /// [`Self::next_slot`].
    pub afi: u8,
    _rsvd1: [u8; 7],
    /// FRS1 to FRS7 (offset 8): the firmware revision in each slot (ASCII,
    /// all zeros for an empty slot).
    pub frs: [[u8; 8]; 7],
    _rsvd64: [u8; 448],
}

assert_layout!(FirmwareSlot, 512, { afi: 0, frs: 8 });

impl FirmwareSlot {
    /// Size in bytes.
    pub const SIZE: usize = 512;

    /// Decodes the page.
    pub const fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        zerocopy::transmute!(*bytes)
    }

    /// The slot (1 to 7) the running firmware came from.
    pub const fn active_slot(&self) -> u8 {
        self.afi & 0x7
    }

    /// The slot activated at the next controller reset, if one is set.
    pub const fn next_slot(&self) -> Option<u8> {
        match (self.afi >> 4) & 0x7 {
            0 => None,
            slot => Some(slot),
        }
    }

    /// The firmware revision in `slot` (1 to 7), if the slot holds one.
    pub fn revision(&self, slot: u8) -> Option<&[u8; 8]> {
        let rev = self.frs.get(usize::from(slot).checked_sub(1)?)?;
        (rev != &[0; 8]).then_some(rev)
    }
}

impl fmt::Debug for FirmwareSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirmwareSlot")
            .field("active_slot", &self.active_slot())
            .field("next_slot", &self.next_slot())
            .finish_non_exhaustive()
    }
}

/// Changed Namespace List (log page 04h, section 5.14.1.4): up to 1024
/// namespace identifiers whose Identify Namespace data changed since the
/// page was last read, terminated by the first zero; FFFFFFFFh in the first
/// entry means more than 1024 changed. 4096 bytes.
#[repr(C)]
#[derive(Clone, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ChangedNamespaceList(pub [u32; 1024]);

assert_layout!(ChangedNamespaceList, 4096, {});

impl ChangedNamespaceList {
    /// Size in bytes.
    pub const SIZE: usize = 4096;

    /// Decodes the page.
    pub const fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        zerocopy::transmute!(*bytes)
    }

    /// More than 1024 namespaces changed: every namespace must be checked.
    pub const fn overflowed(&self) -> bool {
        self.0[0] == u32::MAX
    }

    /// The changed namespace identifiers (none when [`overflowed`](Self::overflowed)).
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let skip = if self.overflowed() { self.0.len() } else { 0 };
        self.0.iter().copied().skip(skip).take_while(|&nsid| nsid != 0)
    }
}

impl fmt::Debug for ChangedNamespaceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.overflowed() {
            return f.write_str("ChangedNamespaceList(more than 1024)");
        }
        f.debug_list().entries(self.iter()).finish()
    }
}

/// One entry of the Commands Supported and Effects log (figure 197).
#[bitfield(u32)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CommandEffects {
    /// CSUPP: the controller supports the command.
    pub supported: bool,
    /// LBCC: it may change logical block content.
    pub lba_content_change: bool,
    /// NCC: it may change namespace capabilities.
    pub namespace_capability_change: bool,
    /// NIC: it may change the namespace inventory.
    pub namespace_inventory_change: bool,
    /// CCC: it may change controller capabilities.
    pub controller_capability_change: bool,
    #[bits(11)]
    __: u16,
    /// CSE: Command Submission and Execution restrictions (0: none; 1: no
    /// other command to the same namespace; 2: no other command at all).
    #[bits(3)]
    pub submission_restrictions: u8,
    /// UUID Selection Supported.
    pub uuid_selection: bool,
    #[bits(12)]
    __: u16,
}

/// Commands Supported and Effects (log page 05h, section 5.14.1.5, figure
/// 196): one [`CommandEffects`] per admin opcode and per I/O opcode. 4096
/// bytes.
#[repr(C)]
#[derive(Clone, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CommandsSupportedAndEffects {
    /// ACS0 to ACS255 (offset 0): admin commands, by opcode.
    pub admin: [CommandEffects; 256],
    /// IOCS0 to IOCS255 (offset 1024): I/O commands, by opcode.
    pub io: [CommandEffects; 256],
    _rsvd2048: [u8; 2048],
}

assert_layout!(CommandsSupportedAndEffects, 4096, { admin: 0, io: 1024 });

impl CommandsSupportedAndEffects {
    /// Size in bytes.
    pub const SIZE: usize = 4096;

    /// Decodes the page.
    pub const fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        zerocopy::transmute!(*bytes)
    }
}

impl fmt::Debug for CommandsSupportedAndEffects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let admin = (0..=255u8).filter(|&op| self.admin[usize::from(op)].supported());
        let io = (0..=255u8).filter(|&op| self.io[usize::from(op)].supported());
        f.debug_struct("CommandsSupportedAndEffects")
            .field("admin", &DebugOpcodes(admin))
            .field("io", &DebugOpcodes(io))
            .finish()
    }
}

struct DebugOpcodes<I>(I);

impl<I: Iterator<Item = u8> + Clone> fmt::Debug for DebugOpcodes<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.clone().map(Hex)).finish()
    }
}

struct Hex(u8);

impl fmt::Debug for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}h", self.0)
    }
}

/// One result of the Device Self-test log (figure 200): 28 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SelfTestResult {
    /// Device Self-test Status (offset 0): the result in bits 3:0 (0 no
    /// error, 1 aborted by a Device Self-test command, 2 aborted by a reset,
    /// 3 aborted by a namespace removal, 4 aborted by a format, 5 fatal
    /// error, 6 unknown segment failed, 7 segments failed, 8 aborted for
    /// another reason, Fh entry unused) and the test's code in bits 7:4.
    pub status: u8,
    /// Segment Number (offset 1) that failed, if any.
    pub segment: u8,
    /// Valid Diagnostic Information (offset 2): which of NSID, failing LBA,
    /// SCT and SC below are valid.
    pub valid: u8,
    _rsvd3: u8,
    /// Power On Hours (offset 4) when the test completed.
    pub power_on_hours: [u8; 8],
    /// Namespace Identifier (offset 12).
    pub nsid: [u8; 4],
    /// Failing LBA (offset 16).
    pub failing_lba: [u8; 8],
    /// Status Code Type (offset 24) of an error found.
    pub sct: u8,
    /// Status Code (offset 25) of an error found.
    pub sc: u8,
    /// Vendor Specific (offset 26).
    pub vendor: [u8; 2],
}

assert_layout!(SelfTestResult, 28, {
    status: 0, segment: 1, valid: 2, power_on_hours: 4, nsid: 12, failing_lba: 16,
    sct: 24, sc: 25, vendor: 26,
});

impl SelfTestResult {
    /// The result (bits 3:0 of the status): 0 no error; Fh the entry is
    /// unused.
    pub const fn result(&self) -> u8 {
        self.status & 0xf
    }

    /// The test's code (bits 7:4): 1 short, 2 extended, Eh vendor specific.
    pub const fn code(&self) -> u8 {
        self.status >> 4
    }
}

/// Device Self-test (log page 06h, section 5.14.1.6, figure 199): the test
/// in progress and the last 20 results, newest first. 564 bytes.
#[repr(C)]
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DeviceSelfTest {
    /// Current Device Self-test Operation (offset 0): 0 none, 1 short, 2
    /// extended, Eh vendor specific.
    pub current: u8,
    /// Current Device Self-test Completion (offset 1): percent done.
    pub completion: u8,
    _rsvd2: [u8; 2],
    /// Newest Self-test Result Data Structure first (offset 4).
    pub results: [SelfTestResult; 20],
}

assert_layout!(DeviceSelfTest, 564, { current: 0, completion: 1, results: 4 });

impl DeviceSelfTest {
    /// Size in bytes.
    pub const SIZE: usize = 564;

    /// Decodes the page.
    pub const fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        zerocopy::transmute!(*bytes)
    }

    /// The results held (the entries whose result is not Fh, unused).
    pub fn iter(&self) -> impl Iterator<Item = &SelfTestResult> + '_ {
        self.results.iter().filter(|r| r.result() != 0xf)
    }
}

/// Sanitize Status (log page 81h, section 5.14.1.16, figure 213): the
/// progress and outcome of the last sanitize operation. 512 bytes; the
/// fields are its first 20.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SanitizeStatus {
    /// SPROG (offset 0): progress of the sanitize in progress, in 65536ths
    /// (FFFFh when none is).
    pub sprog: u16,
    /// SSTAT (offset 2): bits 2:0 the status (0 never sanitized, 1
    /// completed, 2 in progress, 3 failed, 4 completed with no-deallocate
    /// inhibited), bits 7:3 overwrite passes done, bit 8 global data erased.
    pub sstat: u16,
    /// SCDW10 (offset 4): CDW10 of the Sanitize command that started it.
    pub scdw10: u32,
    /// Estimated time for overwrite (offset 8), in seconds (FFFFFFFFh:
    /// not given).
    pub eto: u32,
    /// Estimated time for block erase (offset 12).
    pub etbe: u32,
    /// Estimated time for crypto erase (offset 16).
    pub etce: u32,
}

assert_layout!(SanitizeStatus, 20, { sprog: 0, sstat: 2, scdw10: 4, eto: 8, etbe: 12, etce: 16 });

impl SanitizeStatus {
    /// The bytes of the page decoded (its first 20).
    pub const SIZE: usize = 20;

    /// Decodes the first 20 bytes of the page.
    pub const fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        zerocopy::transmute!(*bytes)
    }

    /// SSTAT bits 2:0: 0 never sanitized, 1 completed, 2 in progress, 3
    /// failed, 4 completed without deallocating.
    pub const fn status(&self) -> u8 {
        (self.sstat & 7) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_status_fields_at_their_offsets() {
        let mut b = [0u8; 20];
        b[0..2].copy_from_slice(&0xffffu16.to_le_bytes());
        b[2..4].copy_from_slice(&0x0101u16.to_le_bytes());
        b[4..8].copy_from_slice(&0x0000_0202u32.to_le_bytes());
        b[16..20].copy_from_slice(&7u32.to_le_bytes());
        let s = SanitizeStatus::from_bytes(&b);
        assert_eq!((s.sprog, s.status(), s.sstat >> 8, s.scdw10, s.etce), (0xffff, 1, 1, 0x202, 7));
    }

    fn put(b: &mut [u8], at: usize, bytes: &[u8]) {
        b[at..at + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn smart_health_fields_at_their_offsets() {
        let mut b = [0u8; 512];
        b[0] = 0b0000_1010; // temperature, read-only
        put(&mut b, 1, &0x0143u16.to_le_bytes()); // 323 K
        b[3] = 97;
        b[4] = 10;
        b[5] = 3;
        put(&mut b, 32, &0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10u128.to_le_bytes());
        put(&mut b, 48, &7u128.to_le_bytes());
        put(&mut b, 128, &(u128::MAX - 1).to_le_bytes());
        put(&mut b, 160, &5u128.to_le_bytes());
        put(&mut b, 192, &11u32.to_le_bytes());
        put(&mut b, 202, &300u16.to_le_bytes());
        put(&mut b, 228, &99u32.to_le_bytes());
        let s = SmartHealth::from_bytes(&b);
        assert!(s.critical_warning.temperature() && s.critical_warning.read_only());
        assert!(!s.critical_warning.spare_below_threshold());
        assert_eq!(s.temperature(), 323);
        assert_eq!((s.available_spare, s.available_spare_threshold, s.percentage_used), (97, 10, 3));
        assert_eq!(s.data_units_read(), 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
        assert_eq!(s.data_units_written(), 7);
        assert_eq!(s.power_on_hours(), u128::MAX - 1);
        assert_eq!(s.media_errors(), 5);
        assert_eq!(s.warning_temperature_time, 11);
        assert_eq!(s.temperature_sensors[1], 300);
        assert_eq!(s.tmt2_time, 99);
    }

    #[test]
    fn error_information_entry() {
        let mut b = [0u8; 64];
        put(&mut b, 0, &42u64.to_le_bytes());
        put(&mut b, 8, &3u16.to_le_bytes());
        put(&mut b, 10, &0x1234u16.to_le_bytes());
        // Invalid Field in Command (SCT 0, SC 02h), phase tag set.
        put(&mut b, 12, &((0x02u16 << 1) | 1).to_le_bytes());
        put(&mut b, 16, &0x1_0000_0000u64.to_le_bytes());
        put(&mut b, 24, &9u32.to_le_bytes());
        let e = ErrorInformation::from_bytes(&b);
        assert!(e.is_valid());
        assert_eq!((e.error_count, e.sqid, e.cid, e.lba, e.nsid), (42, 3, 0x1234, 0x1_0000_0000, 9));
        assert_eq!(e.status().sc().0, 0x02);
        assert!(!ErrorInformation::default().is_valid());
    }

    #[test]
    fn firmware_slots() {
        let mut b = [0u8; 512];
        b[0] = 0x21; // active slot 1, slot 2 next
        put(&mut b, 8, b"1.0     ");
        put(&mut b, 16, b"2.0-rc1 ");
        let f = FirmwareSlot::from_bytes(&b);
        assert_eq!((f.active_slot(), f.next_slot()), (1, Some(2)));
        assert_eq!(f.revision(1), Some(b"1.0     "));
        assert_eq!(f.revision(2), Some(b"2.0-rc1 "));
        assert_eq!(f.revision(3), None);
        assert_eq!(f.revision(0), None);
        assert_eq!(f.revision(8), None);
        b[0] = 0x03;
        assert_eq!(FirmwareSlot::from_bytes(&b).next_slot(), None);
    }

    #[test]
    fn device_self_test_log() {
        let mut b = [0u8; 564];
        b[0] = 1; // a short test in progress
        b[1] = 40;
        for i in 0..20 {
            b[4 + 28 * i] = 0x0f; // unused
        }
        b[4] = 0x10; // newest: short, no error
        b[4 + 28] = 0x27; // extended, segments failed
        b[4 + 28 + 1] = 3;
        put(&mut b, 4 + 28 + 16, &77u64.to_le_bytes());
        let log = DeviceSelfTest::from_bytes(&b);
        assert_eq!((log.current, log.completion), (1, 40));
        let mut held = log.iter().map(|r| (r.code(), r.result()));
        assert_eq!((held.next(), held.next(), held.next()), (Some((1, 0)), Some((2, 7)), None));
        assert_eq!(log.results[1].segment, 3);
        assert_eq!(u64::from_le_bytes(log.results[1].failing_lba), 77);
    }

    #[test]
    fn changed_namespace_list() {
        let mut b = [0u8; 4096];
        put(&mut b, 0, &5u32.to_le_bytes());
        put(&mut b, 4, &9u32.to_le_bytes());
        let l = ChangedNamespaceList::from_bytes(&b);
        assert!(!l.overflowed());
        assert!(l.iter().eq([5, 9]));
        put(&mut b, 0, &u32::MAX.to_le_bytes());
        let l = ChangedNamespaceList::from_bytes(&b);
        assert!(l.overflowed());
        assert_eq!(l.iter().count(), 0);
    }

    #[test]
    fn commands_supported_and_effects() {
        let mut b = [0u8; 4096];
        // Admin Identify (06h): supported. I/O Write (01h): supported, LBCC,
        // CSE 1.
        put(&mut b, 6 * 4, &1u32.to_le_bytes());
        put(&mut b, 1024 + 4, &(1u32 | 2 | (1 << 16)).to_le_bytes());
        let e = CommandsSupportedAndEffects::from_bytes(&b);
        assert!(e.admin[6].supported() && !e.admin[6].lba_content_change());
        assert!(e.io[1].supported() && e.io[1].lba_content_change());
        assert_eq!(e.io[1].submission_restrictions(), 1);
        assert!(!e.io[2].supported());
    }
}
