//! `nvme-spec`: the wire formats of the NVM Express specifications, shared by
//! the `nvme-nostd` driver and the `nvme-sim` simulated controller.
//!
//! Plain data only: `#[repr(C)]` layouts with size and offset assertions,
//! `bitfield-struct` types for every register and dword that has fields, and
//! open newtypes (any value of the underlying integer is a value) for opcodes,
//! status codes and the identifiers of the specification (CNS, FID, CSI, LID).
//! No logic beyond decoding, and no `unsafe`: structures read from device
//! memory are built through `zerocopy`, which proves at compile time that every
//! bit pattern is a valid value.
//!
//! Section numbers cite the NVM Express Base Specification 1.4 unless a
//! comment names another document (Base 2.0, NVM Command Set 1.0).
//!
//! | module | what |
//! |---|---|
//! | [`registers`] | CAP, VS, CC, CSTS, AQA, CMBLOC, CMBSZ; register offsets; doorbells |
//! | [`command`] | submission and completion queue entries, CDW0, opcodes |
//! | [`dwords`] | command-specific dwords (CDW10 to CDW15) that have fields |
//! | [`features`] | data structures of features: LBA range type |
//! | [`ids`] | CNS, FID, CSI, LID, NIDT |
//! | [`status`] | the completion status field and named status codes |
//! | [`identify`] | Identify Controller, Identify Namespace, namespace lists |
//! | [`log`] | log pages: error information, SMART / health, firmware slots, changed namespaces, command effects |
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod command;
pub mod dwords;
pub mod features;
pub mod identify;
pub mod ids;
pub mod log;
pub mod pi;
pub mod registers;
pub mod reservation;
pub mod status;
pub mod zns;

const _: () = assert!(
    cfg!(target_endian = "little"),
    "NVMe wire structures are little-endian and are read in place: a little-endian target is needed"
);
