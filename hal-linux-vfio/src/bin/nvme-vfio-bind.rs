//! `nvme-vfio-bind`: hands NVMe controllers to vfio-pci (for the tools of
//! this crate and anything else on VFIO) and back to the kernel's driver.

use clap::Parser;
use hal_linux_vfio::{bind_kernel, bind_vfio, bound_driver, nvme_addresses};
use std::process::ExitCode;

/// Binds NVMe controllers to vfio-pci, or back to the kernel's nvme driver.
///
/// A controller whose namespaces hold a mounted filesystem or active swap is
/// refused. Needs root (it writes to sysfs).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// PCI addresses (0000:00:04.0 or 00:04.0).
    addresses: Vec<String>,
    /// Give the controllers back to the kernel's driver instead.
    #[arg(long)]
    unbind: bool,
    /// List the NVMe controllers, their drivers and IOMMU groups.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list || args.addresses.is_empty() {
        for a in nvme_addresses() {
            let group = std::fs::read_link(format!("/sys/bus/pci/devices/{a}/iommu_group"))
                .ok()
                .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "none".into());
            println!(
                "{a}  driver {}  IOMMU group {group}",
                bound_driver(&a).unwrap_or_else(|| "none".into())
            );
        }
        return ExitCode::SUCCESS;
    }
    let mut ok = true;
    for a in &args.addresses {
        let a = &hal_linux_vfio::canonical_address(a).unwrap_or_else(|_| a.clone());
        let result = if args.unbind { bind_kernel(a) } else { bind_vfio(a) };
        match result {
            Ok(()) => println!("{a}: bound to {}", bound_driver(a).unwrap_or_else(|| "nothing".into())),
            Err(e) => {
                eprintln!("nvme-vfio-bind: {e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
