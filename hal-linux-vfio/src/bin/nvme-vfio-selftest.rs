//! The conformance suite (the same checks the bare-metal kernel runs) on
//! NVMe controllers bound to vfio-pci.
//!
//! `nvme-vfio-selftest [PCI-ADDRESS...]`: every controller named, or every
//! NVMe controller bound to vfio-pci when none is. Prints one line per check
//! and `N passed, N failed, N skipped`; exits 1 when a check failed or none
//! passed. It writes to the namespaces, saving and restoring the blocks it
//! overwrites: run it on scratch devices.

use hal_linux_vfio::{VfioHal, VfioOptions};
use nvme_conformance::{Options, Outcome, Totals};
use nvme_nostd::hal_traits::faulty::FaultyHal;
use std::process::ExitCode;

/// Lines of the suite go to standard output.
struct Stdout;

impl core::fmt::Write for Stdout {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        use std::io::Write as _;
        std::io::stdout().write_all(s.as_bytes()).map_err(|_| core::fmt::Error)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: nvme-vfio-selftest [--shadow-doorbells] [PCI-ADDRESS...]\n\nRuns the conformance suite on each controller (default: every NVMe controller bound to vfio-pci); --shadow-doorbells: every second controller with shadow doorbells. It overwrites and then restores blocks of every namespace: use scratch devices.");
        return ExitCode::SUCCESS;
    }
    // --shadow-doorbells: every second controller with shadow doorbells.
    let shadow = args.iter().any(|a| a == "--shadow-doorbells");
    let args: Vec<String> = args.into_iter().filter(|a| a != "--shadow-doorbells").collect();
    let addresses = if args.is_empty() { hal_linux_vfio::tool::vfio_controllers() } else { args };
    let mut out = Stdout;
    let mut totals = Totals::default();
    let found = if addresses.is_empty() {
        Outcome::Failed("no NVMe controller bound to vfio-pci".try_into().unwrap_or_default())
    } else {
        Outcome::Ok
    };
    totals.record(&mut out, format_args!("find NVMe controllers ({} found)", addresses.len()), found);
    for (i, address) in addresses.iter().enumerate() {
        let label = format!("nvme{i} ({address})");
        match VfioHal::open(address, VfioOptions::default()) {
            Ok(hal) => {
                totals.record(&mut out, format_args!("{label} open through VFIO"), Outcome::Ok);
                // Shadow doorbells on every second controller, if asked.
                let options = nvme_conformance::controller_options_for(i, shadow);
                let attach = nvme_nostd::Controller::new(FaultyHal::new(hal), options);
                nvme_conformance::run_attached(attach, &label, &Options::default(), &mut out, &mut totals);
            }
            Err(e) => {
                let why = nvme_conformance::reason!("{e}");
                totals.record(&mut out, format_args!("{label} open through VFIO"), Outcome::Failed(why));
            }
        }
    }
    totals.summary(&mut out);
    if totals.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
