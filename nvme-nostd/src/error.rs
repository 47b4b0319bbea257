//! The driver's one error type.

use crate::spec::status::Status;
use core::fmt;
use hal_traits::HalError;

/// Everything that can go wrong, split by whose fault it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    // --- bad input from the caller: nothing was submitted ---
    /// An argument is out of its range; the text names it.
    InvalidArgument(&'static str),
    /// The buffer is shorter than the transfer needs.
    BufferTooSmall {
        /// Bytes the transfer needs.
        needed: usize,
        /// Bytes the buffer has.
        actual: usize,
    },
    /// The buffer does not start on a 4-byte boundary (PRP entries need dword
    /// alignment, NVMe 1.4 section 4.3).
    BufferMisaligned,
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
    Unsupported(&'static str),

    // --- bad behaviour from the device ---
    /// The controller's registers read all ones: it is gone.
    DeviceRemoved,
    /// CSTS.CFS is set: the controller reports a fatal error.
    ControllerFatal,
    /// The controller did not answer in time; the text says what it was doing.
    Timeout(&'static str),
    /// The command completed with an error status.
    Command(Status),
    /// The device returned data the driver refuses to use; the text names it.
    MalformedDevice(&'static str),
    /// An earlier failure left the controller unusable until it is reset.
    ControllerFailed,
    /// The controller was reset while the command was outstanding; the
    /// command may or may not have been carried out.
    Reset,

    // --- the back-end ---
    /// The HAL could not allocate or map memory.
    Hal(HalError),
}

impl From<HalError> for Error {
    fn from(e: HalError) -> Self {
        Error::Hal(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::BufferTooSmall { needed, actual } => {
                write!(f, "buffer too small: {actual} bytes, {needed} needed")
            }
            Error::BufferMisaligned => write!(f, "buffer not 4-byte aligned"),
            Error::LbaOutOfRange => write!(f, "LBA range beyond the namespace"),
            Error::TransferTooLarge { requested, max } => {
                write!(f, "transfer of {requested} bytes exceeds the maximum of {max}")
            }
            Error::QueueFull => write!(f, "no free request slot"),
            Error::NoQueueAvailable => write!(f, "no I/O queue identifier left"),
            Error::Unsupported(what) => write!(f, "unsupported: {what}"),
            Error::DeviceRemoved => write!(f, "device removed (registers read all ones)"),
            Error::ControllerFatal => write!(f, "controller fatal status (CSTS.CFS)"),
            Error::Timeout(what) => write!(f, "timeout: {what}"),
            Error::Command(status) => write!(f, "command failed: {status}"),
            Error::MalformedDevice(what) => write!(f, "malformed device data: {what}"),
            Error::ControllerFailed => write!(f, "controller failed; reset required"),
            Error::Reset => write!(f, "controller reset while the command was outstanding"),
            Error::Hal(e) => write!(f, "HAL: {e}"),
        }
    }
}

/// The driver's result type.
pub type Result<T = (), E = Error> = core::result::Result<T, E>;
