//! Handing a PCI device to vfio-pci and back (what `nvme-vfio-bind` does),
//! through sysfs.

use crate::hal::{bound_driver, canonical_address};
use crate::VfioError;
use std::path::Path;

/// Why a device was not (re)bound.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindError {
    /// The address is bad or names no device.
    Device(VfioError),
    /// Filesystems (or swap) on the device's namespaces are in use.
    InUse {
        /// The device's address.
        address: String,
        /// What is mounted where (`/dev/nvme0n1p1 on /mnt`).
        mounts: Vec<String>,
    },
    /// vfio-pci is not there and loading it failed.
    NoVfioPci,
    /// A sysfs write failed.
    Sysfs {
        /// The file.
        path: String,
        /// The error.
        error: String,
    },
    /// The device did not end up where asked.
    NotBound {
        /// The device's address.
        address: String,
        /// The driver wanted.
        wanted: String,
        /// The driver it has.
        has: Option<String>,
    },
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::Device(e) => write!(f, "{e}"),
            BindError::InUse { address, mounts } => write!(
                f,
                "{address} is in use, refusing to take it from its driver: {}; unmount (or swapoff) first",
                mounts.join(", ")
            ),
            BindError::NoVfioPci => {
                write!(f, "the vfio-pci driver is not loaded and `modprobe vfio-pci` failed")
            }
            BindError::Sysfs { path, error } => write!(f, "writing {path}: {error}"),
            BindError::NotBound { address, wanted, has } => {
                write!(
                    f,
                    "{address} is bound to {} after binding it to {wanted}",
                    has.as_deref().unwrap_or("nothing")
                )
            }
        }
    }
}

impl std::error::Error for BindError {}

fn write(path: &str, value: &str) -> Result<(), BindError> {
    std::fs::write(path, value).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied { " (run as root)" } else { "" };
        BindError::Sysfs { path: path.into(), error: format!("{e}{hint}") }
    })
}

/// The block devices of a controller: its namespaces and their partitions,
/// under the controller's own name or, with native multipath, the
/// subsystem's (`nvme0c0n1` is one path of `nvme0n1`).
fn block_devices(address: &str) -> Vec<String> {
    let mut found = Vec::new();
    let push_with_partitions = |name: String, found: &mut Vec<String>| {
        let dir = format!("/sys/class/block/{name}");
        for part in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = part.file_name().to_string_lossy().into_owned();
            if p.starts_with(&name) && part.path().join("partition").exists() && !found.contains(&p) {
                found.push(p);
            }
        }
        if !found.contains(&name) {
            found.push(name);
        }
    };
    let nvme = format!("/sys/bus/pci/devices/{address}/nvme");
    for ctrl in std::fs::read_dir(&nvme).into_iter().flatten().flatten() {
        let ctrl_name = ctrl.file_name().to_string_lossy().into_owned();
        for ns in std::fs::read_dir(ctrl.path()).into_iter().flatten().flatten() {
            let name = ns.file_name().to_string_lossy().into_owned();
            if !name.starts_with("nvme") || name == ctrl_name || !ns.path().join("dev").exists() {
                continue;
            }
            // A multipath path (nvme<S>c<C>n<N>): the head nvme<S>n<N> is
            // what gets mounted.
            if let Some((subsys, rest)) = name.strip_prefix("nvme").and_then(|r| r.split_once('c')) {
                if let Some((_, nsid)) = rest.split_once('n') {
                    push_with_partitions(format!("nvme{subsys}n{nsid}"), &mut found);
                }
            }
            push_with_partitions(name, &mut found);
        }
    }
    found
}

/// What keeps the controller's block devices busy: mounts (matched by device
/// number in `/proc/self/mountinfo`, so `/dev/root` counts too), swap,
/// holders (device-mapper, md, bcache on top), and anything else holding a
/// device open exclusively (an `O_EXCL` open fails with `EBUSY`). Empty when
/// nothing does (or `address` names no device).
pub fn in_use(address: &str) -> Vec<String> {
    let Ok(address) = canonical_address(address) else { return Vec::new() };
    let devices = block_devices(&address);
    let mut used = Vec::new();
    let numbers: Vec<(String, String)> = devices
        .iter()
        .filter_map(|d| {
            let n = std::fs::read_to_string(format!("/sys/class/block/{d}/dev")).ok()?;
            Some((n.trim().to_string(), d.clone()))
        })
        .collect();
    for line in std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let (Some(number), Some(on)) = (f.get(2), f.get(4)) {
            if let Some((_, dev)) = numbers.iter().find(|(n, _)| n == number) {
                used.push(format!("/dev/{dev} on {on}"));
            }
        }
    }
    for line in std::fs::read_to_string("/proc/swaps").unwrap_or_default().lines().skip(1) {
        if let Some(dev) = line.split_whitespace().next() {
            if dev.strip_prefix("/dev/").is_some_and(|d| devices.iter().any(|b| b == d)) {
                used.push(format!("{dev} as swap"));
            }
        }
    }
    for dev in &devices {
        for holder in
            std::fs::read_dir(format!("/sys/class/block/{dev}/holders")).into_iter().flatten().flatten()
        {
            used.push(format!("/dev/{dev} held by {}", holder.file_name().to_string_lossy()));
        }
        let node = format!("/dev/{dev}");
        let reported = used.iter().any(|u| u.starts_with(&format!("{node} ")));
        if !reported && std::path::Path::new(&node).exists() {
            let busy = rustix::fs::open(
                &node,
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::EXCL,
                rustix::fs::Mode::empty(),
            );
            if matches!(busy, Err(rustix::io::Errno::BUSY)) {
                used.push(format!("{node} open exclusively by another program"));
            }
        }
    }
    used
}

fn device(address: &str) -> Result<String, BindError> {
    let address = canonical_address(address).map_err(BindError::Device)?;
    if !Path::new(&format!("/sys/bus/pci/devices/{address}")).exists() {
        return Err(BindError::Device(VfioError::NoDevice(address)));
    }
    Ok(address)
}

/// Binds the device at `address` to vfio-pci (loading the module if need
/// be), unless something uses its block devices ([`in_use`]): nothing is
/// changed then. A rebind that fails half-way (vfio-pci refusing a device
/// without an IOMMU group, say) can leave the device bound to no driver:
/// [`BindError::NotBound`] says so, and [`bind_kernel`] gives it back.
pub fn bind_vfio(address: &str) -> Result<(), BindError> {
    let address = device(address)?;
    if bound_driver(&address).as_deref() == Some("vfio-pci") {
        return Ok(());
    }
    let mounts = in_use(&address);
    if !mounts.is_empty() {
        return Err(BindError::InUse { address, mounts });
    }
    if !Path::new("/sys/bus/pci/drivers/vfio-pci").exists() {
        let loaded =
            std::process::Command::new("modprobe").arg("vfio-pci").status().is_ok_and(|s| s.success());
        if !loaded || !Path::new("/sys/bus/pci/drivers/vfio-pci").exists() {
            return Err(BindError::NoVfioPci);
        }
    }
    rebind(&address, "vfio-pci")
}

/// Gives the device back to the kernel's own driver (clears the override
/// and lets the kernel probe it).
pub fn bind_kernel(address: &str) -> Result<(), BindError> {
    let address = device(address)?;
    rebind(&address, "")
}

fn rebind(address: &str, to: &str) -> Result<(), BindError> {
    let sysfs = format!("/sys/bus/pci/devices/{address}");
    write(&format!("{sysfs}/driver_override"), if to.is_empty() { "\n" } else { to })?;
    if Path::new(&format!("{sysfs}/driver")).exists() {
        write(&format!("{sysfs}/driver/unbind"), address)?;
    }
    write("/sys/bus/pci/drivers_probe", address)?;
    let has = bound_driver(address);
    let ok = if to.is_empty() {
        has.is_some() && has.as_deref() != Some("vfio-pci")
    } else {
        has.as_deref() == Some(to)
    };
    if ok {
        Ok(())
    } else {
        let wanted = if to.is_empty() { "its kernel driver".into() } else { to.to_string() };
        Err(BindError::NotBound { address: address.to_string(), wanted, has })
    }
}
