//! What the command-line tools share: which controller they work on, and how
//! they end.

use crate::hal::{bound_driver, nvme_addresses};
use std::process::ExitCode;

/// The NVMe controllers bound to vfio-pci, in address order.
pub fn vfio_controllers() -> Vec<String> {
    nvme_addresses().into_iter().filter(|a| bound_driver(a).as_deref() == Some("vfio-pci")).collect()
}

/// Runs tool `name` on `device`, or on the first NVMe controller bound to
/// vfio-pci when none is given: an error goes to standard error after the
/// tool's name, and the exit status says whether it worked.
pub fn run(name: &str, device: Option<String>, tool: impl FnOnce(&str) -> Result<(), String>) -> ExitCode {
    let Some(address) = device.or_else(|| vfio_controllers().into_iter().next()) else {
        eprintln!("{name}: no NVMe controller is bound to vfio-pci (nvme-vfio-bind --list shows them)");
        return ExitCode::FAILURE;
    };
    match tool(&address) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}
