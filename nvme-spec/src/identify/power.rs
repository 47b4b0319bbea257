//! The Power State Descriptor of Identify Controller.

use super::assert_layout;
use bitfield_struct::bitfield;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Byte 3 of a Power State Descriptor: MXPS and NOPS.
#[bitfield(u8)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct PsdFlags {
    /// MXPS: Max Power Scale: MP is in 0.0001 W units rather than 0.01 W.
    pub mxps: bool,
    /// NOPS: Non-Operational State: no I/O is processed in this state.
    pub nops: bool,
    #[bits(6)]
    __: u8,
}

/// Byte 18 of a Power State Descriptor: IPS.
#[bitfield(u8)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct PsdIdle {
    #[bits(6)]
    __: u8,
    /// IPS: Idle Power Scale (0 not reported, 1 0.0001 W, 2 0.01 W).
    #[bits(2)]
    pub ips: u8,
}

/// Byte 22 of a Power State Descriptor: APW and APS.
#[bitfield(u8)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct PsdActive {
    /// APW: Active Power Workload.
    #[bits(3)]
    pub apw: u8,
    #[bits(3)]
    __: u8,
    /// APS: Active Power Scale.
    #[bits(2)]
    pub aps: u8,
}

/// One Power State Descriptor of the Identify Controller data structure
/// (Base 2.0 figure "Power State Descriptor Data Structure"), 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct PowerStateDescriptor {
    /// MP (offset 0): Maximum Power, in 0.01 W units, or 0.0001 W if MXPS is set.
    pub mp: u16,
    _rsvd2: u8,
    /// MXPS and NOPS (offset 3).
    pub flags: PsdFlags,
    /// ENLAT (offset 4): Entry Latency in microseconds.
    pub enlat: u32,
    /// EXLAT (offset 8): Exit Latency in microseconds.
    pub exlat: u32,
    /// RRT (offset 12, bits 4:0): Relative Read Throughput.
    pub rrt: u8,
    /// RRL (offset 13, bits 4:0): Relative Read Latency.
    pub rrl: u8,
    /// RWT (offset 14, bits 4:0): Relative Write Throughput.
    pub rwt: u8,
    /// RWL (offset 15, bits 4:0): Relative Write Latency.
    pub rwl: u8,
    /// IDLP (offset 16): Idle Power, scaled by IPS.
    pub idlp: u16,
    /// IPS (offset 18).
    pub idle: PsdIdle,
    _rsvd19: u8,
    /// ACTP (offset 20): Active Power, scaled by APS.
    pub actp: u16,
    /// APW and APS (offset 22).
    pub active: PsdActive,
    _rsvd23: [u8; 9],
}

assert_layout!(PowerStateDescriptor, 32, {
    mp: 0, flags: 3, enlat: 4, exlat: 8, rrt: 12, rrl: 13, rwt: 14, rwl: 15,
    idlp: 16, idle: 18, actp: 20, active: 22,
});

impl PowerStateDescriptor {
    /// Maximum power of this state in microwatts (MP scaled by MXPS).
    pub const fn max_power_microwatts(&self) -> u32 {
        let scale = if self.flags.mxps() { 100 } else { 10_000 };
        self.mp as u32 * scale
    }
}
