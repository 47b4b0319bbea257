//! `nvme-nostd`: an NVMe host driver for kernels, unikernels and firmware.
//!
//! `#![no_std]`, no heap. The driver is generic over a [`Hal`] (from
//! `hal-traits`) that gives it register access, DMA memory and a clock; it never
//! names an operating system or an architecture.
//!
//! ```text
//! Controller::new(hal, options)        bring-up: disable, admin queue, enable, identify
//!   .namespaces() / .namespace(nsid)   checked Namespace handles
//!   .register(buffer)                  a Registered buffer: translated once, not per I/O
//!   .create_io_qpair::<B, C, N>(opts)  an IoQueuePair with N request slots
//!       .read / .write / .flush / .submit_raw (buffer, context)  -> Cid
//!       .poll(limit, |resubmit, completion| ...)  hands buffer and context back
//!       .wait(cid, timeout, ...)       blocking helper for slow paths
//! ```
//!
//! Layout: [`spec`] (the `nvme-spec` crate) holds the wire formats of the NVMe
//! specification (no logic); the modules here hold one concept each: register
//! view, queue rings, request slots, PRP lists, DMA memory ownership, the
//! admin queue, the controller, namespaces, I/O queue pairs.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs, unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod admin;
mod admin_requests;
mod buffer;
mod cmb;
mod controller;
mod dma;
mod error;
mod events;
mod features;
mod firmware;
mod format;
mod hmb;
mod log;
mod maintenance;
mod namespace;
mod nsmgmt;
mod probe;
mod protection;
mod prp;
mod qpair;
mod quarantine;
mod queue;
mod registers;
mod reservation;
mod sgl;
mod slots;
#[cfg(test)]
mod test_hal;
mod trid;
mod zones;

pub use admin_requests::{AdminCompletion, AdminRequests};
pub use buffer::{DmaBuffer, IoBuffer, Registered, ScatterList};
pub use cmb::CmbInfo;
pub use controller::{
    ArbitrationMechanism, Controller, ControllerOptions, NamespaceIds, RemoveCallback, TimeoutCallback,
    TimeoutEvent, MAX_IO_QUEUES,
};
pub use error::{
    Argument, Broken, Cause, Error, Feature, Malformed, Origin, PrpShape, RecoveryStep, Result, Wait,
};
pub use events::AsyncEvent;
pub use firmware::{Activation, CommitAction};
pub use format::{FormatNvm, SecureErase};
pub use hal_traits::{self, Hal};
pub use hmb::{HmbInfo, HMB_MAX_PIECES};
pub use log::ALL_NAMESPACES;
pub use maintenance::{SanitizeAction, SelfTest};
pub use namespace::{CopyLimits, Namespace, PiFormat, ZoneGeometry, TRACKED_NAMESPACES};
pub use nsmgmt::NamespaceDescription;
/// The wire formats of the specification (the `nvme-spec` crate).
pub use nvme_spec as spec;
pub use nvme_spec::status::Status;
pub use probe::{probe, Probed};
pub use protection::{fill_protection_information, Protection};
pub use qpair::{
    AbortOutcome, Completion, CopyRange, DoorbellMode, IoFlags, IoQueuePair, PollLimit, QpairOptions,
    QueueStats, Resubmit, SubmitError, MAX_SHARED_PIECES, SHADOW_WATCHDOG_PASSES,
};
pub use reservation::{
    AcquireAction, PtplChange, RegisterAction, Registrant, ReleaseAction, ReservationRegister,
    ReservationStatus, ReservationType,
};
pub use slots::Cid;
pub use trid::{
    AddressFamily, PciAddress, ServiceId, SubsystemNqn, TransportId, TransportType, TridError, TridErrorKind,
    TridText,
};
pub use zones::{ZoneDescriptor, ZoneReport, ZoneSendAction, ZoneState};

/// Internals for the fuzz targets in `fuzz/` (feature `fuzzing`); not a stable
/// API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::namespace::csi_from_descriptors;
    pub use crate::prp::{build as prp_build, list_pages_for, pages_touched, Prp, PrpBuilder, PrpListSink};
    pub use crate::qpair::split_chunks;
    pub use crate::sgl::SglBuilder;

    /// [`crate::Namespace`]'s checks of identify data.
    pub fn namespace(
        nsid: u32,
        id: &crate::spec::identify::IdentifyNamespace,
        csi: crate::spec::ids::Csi,
        max_transfer: Option<usize>,
    ) -> crate::Result<crate::Namespace> {
        crate::Namespace::from_identify(
            nsid,
            id,
            None,
            csi,
            max_transfer,
            crate::namespace::Binding::detached(),
        )
    }
}
