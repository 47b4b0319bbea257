//! Why a device could not be opened, and what to do about it.

use core::fmt;
use rustix::io::Errno;

/// An error of [`VfioHal::open`](crate::VfioHal::open): each says what was
/// wrong and, where a person can fix it, how.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VfioError {
    /// The address is not of the form `0000:00:03.0` (or `00:03.0`).
    BadAddress(String),
    /// No PCI device has this address.
    NoDevice(String),
    /// The device is bound to another driver (`nvme`, say).
    BoundElsewhere {
        /// The device's address.
        address: String,
        /// The driver it is bound to.
        driver: String,
    },
    /// The device is bound to no driver at all.
    Unbound(String),
    /// The device has no IOMMU group: the IOMMU is off.
    NoIommuGroup(String),
    /// `/dev/vfio/vfio` is missing: the modules are not loaded.
    NoVfio,
    /// Opening a VFIO file was refused.
    Permission(String),
    /// Another process (or this one) holds the device's group.
    GroupBusy(String),
    /// Other devices of the group are bound to host drivers.
    GroupNotViable {
        /// The device's address.
        address: String,
        /// The group number.
        group: u32,
    },
    /// The device is in a VFIO no-IOMMU group, and
    /// [`VfioOptions::allow_no_iommu`](crate::VfioOptions::allow_no_iommu)
    /// is off.
    NoIommuRefused(String),
    /// Opening a no-IOMMU group was refused: it takes `CAP_SYS_RAWIO`.
    NoIommuRawIo(String),
    /// No-IOMMU mode cannot learn physical addresses (`/proc/self/pagemap`
    /// shows them to `CAP_SYS_ADMIN` only): why.
    NoIommuPhysical(String),
    /// The kernel's VFIO lacks what this back-end needs.
    Unsupported(String),
    /// The device's BAR0 cannot be mapped.
    Bar(String),
    /// Memory could not be registered ([`VfioHal::register`](crate::VfioHal::register)).
    Registration(String),
    /// A system call failed where nothing above explains it.
    Os {
        /// What was being done.
        what: String,
        /// The error.
        errno: Errno,
    },
}

/// The commands that hand a device to vfio-pci, for the messages.
fn bind_hint(address: &str) -> String {
    format!(
        "bind it to vfio-pci: `modprobe vfio-pci; echo vfio-pci > /sys/bus/pci/devices/{address}/driver_override; \
         echo {address} > /sys/bus/pci/devices/{address}/driver/unbind; echo {address} > /sys/bus/pci/drivers_probe` \
         (or `nvme-vfio-bind {address}`)"
    )
}

impl fmt::Display for VfioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VfioError::BadAddress(a) => {
                write!(f, "'{a}' is not a PCI address: give it as domain:bus:device.function, e.g. 0000:00:03.0")
            }
            VfioError::NoDevice(a) => {
                write!(f, "no PCI device {a} (/sys/bus/pci/devices/{a} does not exist): `lspci -D` lists them")
            }
            VfioError::BoundElsewhere { address, driver } => {
                write!(f, "{address} is bound to {driver}; {}", bind_hint(address))
            }
            VfioError::Unbound(a) => write!(f, "{a} is bound to no driver; {}", bind_hint(a)),
            VfioError::NoIommuGroup(a) => write!(
                f,
                "{a} has no IOMMU group: turn the IOMMU on (VT-d or AMD-Vi in the firmware; on Intel also \
                 `intel_iommu=on` on the kernel command line; AMD's is on unless `amd_iommu=off`)"
            ),
            VfioError::NoVfio => write!(
                f,
                "/dev/vfio/vfio does not exist: load the modules (`modprobe vfio-pci`), or build the kernel with \
                 CONFIG_VFIO_PCI"
            ),
            VfioError::Permission(path) => write!(
                f,
                "no permission to open {path}: run as root, or give your user the device (`chown $USER {path}`) \
                 and enough locked memory (`ulimit -l`)"
            ),
            VfioError::GroupBusy(path) => {
                write!(f, "{path} is busy: another process (or another handle in this one) holds the device's group")
            }
            VfioError::GroupNotViable { address, group } => write!(
                f,
                "IOMMU group {group} of {address} is not viable: every device in /sys/kernel/iommu_groups/{group}/devices \
                 must be bound to vfio-pci (or to no driver)"
            ),
            VfioError::NoIommuRefused(a) => write!(
                f,
                "{a} is in a VFIO no-IOMMU group (the kernel runs with vfio.enable_unsafe_noiommu_mode=1 and no IOMMU \
                 covers the device), which these options refuse: turn the IOMMU on, or allow no-IOMMU mode \
                 (VfioOptions::with_no_iommu(true)) where a device that reaches all of memory is acceptable"
            ),
            VfioError::NoIommuRawIo(path) => write!(
                f,
                "no permission to use {path}: a VFIO no-IOMMU group takes CAP_SYS_RAWIO (run as root); owning the \
                 file is not enough"
            ),
            VfioError::NoIommuPhysical(why) => write!(f, "VFIO no-IOMMU mode needs physical addresses: {why}"),
            VfioError::Unsupported(what) => write!(f, "this kernel's VFIO lacks {what}"),
            VfioError::Bar(what) => write!(f, "BAR0 cannot be used: {what}"),
            VfioError::Registration(why) => write!(f, "cannot register memory: {why}"),
            VfioError::Os { what, errno } => write!(f, "{what}: {errno}"),
        }
    }
}

impl std::error::Error for VfioError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        let e = VfioError::BoundElsewhere { address: "0000:00:03.0".into(), driver: "nvme".into() };
        let text = e.to_string();
        assert!(text.starts_with("0000:00:03.0 is bound to nvme; bind it to vfio-pci"), "{text}");
        assert!(text.contains("/sys/bus/pci/devices/0000:00:03.0/driver_override"), "{text}");
        assert!(VfioError::NoVfio.to_string().contains("modprobe vfio-pci"));
        let e = VfioError::GroupNotViable { address: "0000:00:03.0".into(), group: 7 };
        assert!(e.to_string().contains("/sys/kernel/iommu_groups/7/devices"));
    }
}
