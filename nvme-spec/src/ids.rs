//! The small identifiers of the specification, as open newtypes: any value of
//! the underlying integer is a value (a device may report one this crate does
//! not name), and named constants cover the ones the specification defines.

/// Defines an open newtype over an integer with named constants and the
/// `from_bits` / `into_bits` pair that `bitfield-struct` fields use.
macro_rules! open_newtype {
    (
        $(#[$meta:meta])*
        pub struct $name:ident($int:ty);
        $( $(#[$cmeta:meta])* $cname:ident = $value:literal; )*
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(transparent)]
        pub struct $name(pub $int);

        impl $name {
            $( $(#[$cmeta])* pub const $cname: Self = Self($value); )*

            /// From the raw value (for `bitfield-struct` fields).
            pub const fn from_bits(bits: $int) -> Self {
                Self(bits)
            }

            /// The raw value (for `bitfield-struct` fields).
            pub const fn into_bits(self) -> $int {
                self.0
            }
        }
    };
}

open_newtype! {
    /// CNS: Controller or Namespace Structure, the Identify command's selector
    /// of the data structure to return (section 5.15.1, figure 244; Base 2.0
    /// figure 273).
    pub struct Cns(u8);
    /// 00h: Identify Namespace data structure for the NSID.
    NAMESPACE = 0x00;
    /// 01h: Identify Controller data structure.
    CONTROLLER = 0x01;
    /// 02h: Active Namespace ID list (NSIDs greater than the given NSID).
    ACTIVE_NAMESPACES = 0x02;
    /// 03h: Namespace Identification Descriptor list for the NSID.
    NAMESPACE_ID_DESCRIPTORS = 0x03;
    /// 04h: NVM Set list.
    NVM_SET_LIST = 0x04;
    /// 05h: I/O command set specific Identify Namespace data structure (2.0).
    IO_COMMAND_SET_NAMESPACE = 0x05;
    /// 06h: I/O command set specific Identify Controller data structure (2.0).
    IO_COMMAND_SET_CONTROLLER = 0x06;
    /// 07h: Active Namespace ID list of an I/O command set (2.0).
    IO_COMMAND_SET_ACTIVE_NAMESPACES = 0x07;
    /// 10h: Allocated Namespace ID list.
    ALLOCATED_NAMESPACES = 0x10;
    /// 11h: Identify Namespace data structure for an allocated NSID.
    ALLOCATED_NAMESPACE = 0x11;
    /// 12h: Controller list of controllers attached to the NSID.
    ATTACHED_CONTROLLERS = 0x12;
    /// 13h: Controller list of the controllers in the NVM subsystem.
    SUBSYSTEM_CONTROLLERS = 0x13;
    /// 13h: Controller list of the NVM subsystem.
    CONTROLLERS = 0x13;
    /// 1Ch: I/O Command Set data structure (2.0).
    IO_COMMAND_SETS = 0x1c;
}

open_newtype! {
    /// FID: Feature Identifier of Get Features and Set Features (section
    /// 5.21.1, figure 271).
    pub struct Fid(u8);
    /// 01h: Arbitration.
    ARBITRATION = 0x01;
    /// 02h: Power Management.
    POWER_MANAGEMENT = 0x02;
    /// 03h: LBA Range Type.
    LBA_RANGE_TYPE = 0x03;
    /// 04h: Temperature Threshold.
    TEMPERATURE_THRESHOLD = 0x04;
    /// 05h: Error Recovery.
    ERROR_RECOVERY = 0x05;
    /// 06h: Volatile Write Cache.
    VOLATILE_WRITE_CACHE = 0x06;
    /// 07h: Number of Queues.
    NUMBER_OF_QUEUES = 0x07;
    /// 08h: Interrupt Coalescing.
    INTERRUPT_COALESCING = 0x08;
    /// 09h: Interrupt Vector Configuration.
    INTERRUPT_VECTOR_CONFIG = 0x09;
    /// 0Ah: Write Atomicity Normal.
    WRITE_ATOMICITY = 0x0a;
    /// 0Bh: Asynchronous Event Configuration.
    ASYNC_EVENT_CONFIG = 0x0b;
    /// 0Ch: Autonomous Power State Transition.
    AUTONOMOUS_POWER_STATE_TRANSITION = 0x0c;
    /// 0Dh: Host Memory Buffer.
    HOST_MEMORY_BUFFER = 0x0d;
    /// 0Eh: Timestamp.
    TIMESTAMP = 0x0e;
    /// 0Fh: Keep Alive Timer.
    KEEP_ALIVE_TIMER = 0x0f;
    /// 10h: Host Controlled Thermal Management.
    HOST_CONTROLLED_THERMAL_MANAGEMENT = 0x10;
    /// 11h: Non-Operational Power State Config.
    NON_OPERATIONAL_POWER_STATE = 0x11;
    /// 16h: Host Behavior Support (its byte 0 is ACRE, Advanced Command
    /// Retry Enable).
    HOST_BEHAVIOR_SUPPORT = 0x16;
    /// 80h: Software Progress Marker.
    SOFTWARE_PROGRESS_MARKER = 0x80;
    /// 81h: Host Identifier.
    HOST_IDENTIFIER = 0x81;
    /// 82h: Reservation Notification Mask.
    RESERVATION_NOTIFICATION_MASK = 0x82;
    /// 83h: Reservation Persistence.
    RESERVATION_PERSISTENCE = 0x83;
}

open_newtype! {
    /// CSI: Command Set Identifier (Base 2.0 figure 286).
    pub struct Csi(u8);
    /// 00h: NVM command set.
    NVM = 0x00;
    /// 01h: Key Value command set.
    KEY_VALUE = 0x01;
    /// 02h: Zoned Namespace command set.
    ZONED = 0x02;
}

open_newtype! {
    /// LID: Log Page Identifier of Get Log Page (section 5.14.1, figure 191).
    pub struct Lid(u8);
    /// 01h: Error Information.
    ERROR_INFORMATION = 0x01;
    /// 02h: SMART / Health Information.
    SMART_HEALTH = 0x02;
    /// 03h: Firmware Slot Information.
    FIRMWARE_SLOT = 0x03;
    /// 04h: Changed Namespace List.
    CHANGED_NAMESPACE_LIST = 0x04;
    /// 05h: Commands Supported and Effects.
    COMMANDS_SUPPORTED_AND_EFFECTS = 0x05;
    /// 06h: Device Self-test.
    DEVICE_SELF_TEST = 0x06;
    /// 07h: Telemetry Host-Initiated.
    TELEMETRY_HOST = 0x07;
    /// 08h: Telemetry Controller-Initiated.
    TELEMETRY_CONTROLLER = 0x08;
    /// 0Ch: Asymmetric Namespace Access.
    ASYMMETRIC_NAMESPACE_ACCESS = 0x0c;
    /// 0Dh: Persistent Event Log.
    PERSISTENT_EVENT = 0x0d;
    /// 80h: Reservation Notification.
    RESERVATION_NOTIFICATION = 0x80;
    /// 81h: Sanitize Status.
    SANITIZE_STATUS = 0x81;
}

open_newtype! {
    /// NIDT: Namespace Identifier Type of a Namespace Identification
    /// Descriptor (section 5.15.2.3, figure 249; Base 2.0 figure 274).
    pub struct Nidt(u8);
    /// 1h: IEEE Extended Unique Identifier (8 bytes).
    EUI64 = 1;
    /// 2h: Namespace Globally Unique Identifier (16 bytes).
    NGUID = 2;
    /// 3h: Namespace UUID (16 bytes).
    UUID = 3;
    /// 4h: Command Set Identifier (1 byte).
    CSI = 4;
}

open_newtype! {
    /// Asynchronous Event Type, bits 2:0 of an Asynchronous Event Request's
    /// completion DW0 (section 5.2.1, figure 146).
    pub struct AsyncEventType(u8);
    /// 0h: Error status.
    ERROR = 0;
    /// 1h: SMART / Health status.
    SMART_HEALTH = 1;
    /// 2h: Notice.
    NOTICE = 2;
    /// 6h: I/O Command Set specific status.
    IO_COMMAND_SET = 6;
    /// 7h: Vendor specific.
    VENDOR = 7;
}

open_newtype! {
    /// Asynchronous Event Information, bits 15:8 of an Asynchronous Event
    /// Request's completion DW0 (section 5.2.1, figures 147 to 149). Its
    /// meaning depends on the event type: the constants are named after
    /// theirs.
    pub struct AsyncEventInfo(u8);
    /// Error status 00h: write to an invalid doorbell register.
    ERROR_INVALID_DOORBELL = 0x00;
    /// Error status 01h: invalid doorbell write value.
    ERROR_INVALID_DOORBELL_VALUE = 0x01;
    /// Error status 02h: diagnostic failure.
    ERROR_DIAGNOSTIC_FAILURE = 0x02;
    /// Error status 03h: persistent internal error.
    ERROR_PERSISTENT_INTERNAL = 0x03;
    /// Error status 04h: transient internal error.
    ERROR_TRANSIENT_INTERNAL = 0x04;
    /// Error status 05h: firmware image load error.
    ERROR_FIRMWARE_IMAGE_LOAD = 0x05;
    /// SMART / Health status 00h: NVM subsystem reliability.
    SMART_RELIABILITY = 0x00;
    /// SMART / Health status 01h: temperature threshold.
    SMART_TEMPERATURE_THRESHOLD = 0x01;
    /// SMART / Health status 02h: spare below threshold.
    SMART_SPARE_BELOW_THRESHOLD = 0x02;
    /// Notice 00h: namespace attribute changed.
    NOTICE_NAMESPACE_ATTRIBUTE_CHANGED = 0x00;
    /// Notice 01h: firmware activation starting.
    NOTICE_FIRMWARE_ACTIVATION_STARTING = 0x01;
    /// Notice 02h: telemetry log changed.
    NOTICE_TELEMETRY_LOG_CHANGED = 0x02;
    /// Notice 03h: asymmetric namespace access change.
    NOTICE_ANA_CHANGE = 0x03;
    /// Notice 04h: predictable latency event aggregate log change.
    NOTICE_PREDICTABLE_LATENCY = 0x04;
    /// Notice 05h: LBA status information alert.
    NOTICE_LBA_STATUS = 0x05;
    /// Notice 06h: endurance group event aggregate log page change.
    NOTICE_ENDURANCE_GROUP = 0x06;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_values_round_trip() {
        assert_eq!(Cns::from_bits(0x02), Cns::ACTIVE_NAMESPACES);
        assert_eq!(Fid(0xfe).into_bits(), 0xfe, "an unnamed value is still a value");
        assert_eq!(Csi::ZONED.0, 2);
        assert_eq!(Lid::SMART_HEALTH.into_bits(), 2);
        assert_eq!(Nidt::CSI, Nidt(4));
        assert_eq!(AsyncEventType::NOTICE.0, 2);
    }
}
