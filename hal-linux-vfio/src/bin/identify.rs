//! `identify`: everything Identify says about an NVMe controller on VFIO
//! and its active namespaces, in the layout of nvme-cli's `id-ctrl` and
//! `id-ns`, or as JSON with nvme-cli's field names.

use clap::Parser;
use hal_linux_vfio::show;
use hal_linux_vfio::{VfioHal, VfioOptions};
use nvme_nostd::{Controller, ControllerOptions};
use std::process::ExitCode;

/// Prints Identify Controller and Identify Namespace of every active
/// namespace (or one) of an NVMe controller bound to vfio-pci.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The controller's PCI address (default: the first NVMe controller
    /// bound to vfio-pci).
    #[arg(long, short)]
    device: Option<String>,
    /// Only this namespace.
    #[arg(long, short)]
    namespace: Option<u32>,
    /// JSON: an object with "controller" (nvme-cli's id-ctrl object) and
    /// "namespaces" (nvme-cli's id-ns objects, each with its "nsid").
    #[arg(long)]
    json: bool,
}

fn run(args: &Args, address: &str) -> Result<(), String> {
    let hal = VfioHal::open(address, VfioOptions::default()).map_err(|e| e.to_string())?;
    let ctrlr = Controller::new(hal, ControllerOptions::default()).map_err(|e| format!("attach: {e}"))?;
    let id = ctrlr.identify();
    let nsids: Vec<u32> = match args.namespace {
        Some(n) => vec![n],
        None => {
            ctrlr.namespace_ids().collect::<Result<_, _>>().map_err(|e| format!("active namespaces: {e}"))?
        }
    };
    let mut namespaces = Vec::new();
    for nsid in nsids {
        let ns = ctrlr.identify_namespace(nsid).map_err(|e| format!("Identify Namespace {nsid}: {e}"))?;
        namespaces.push((nsid, ns));
    }
    if args.json {
        let list: Vec<serde_json::Value> = namespaces
            .iter()
            .map(|(nsid, ns)| {
                let mut j = show::namespace_json(ns);
                if let Some(o) = j.as_object_mut() {
                    o.insert("nsid".into(), (*nsid).into());
                }
                j
            })
            .collect();
        let all = serde_json::json!({ "controller": show::controller_json(&id), "namespaces": list });
        println!("{}", serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?);
    } else {
        print!("{}", show::controller_text(&id));
        for (nsid, ns) in &namespaces {
            print!("{}", show::namespace_text(*nsid, ns));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    hal_linux_vfio::tool::run("identify", args.device.clone(), |address| run(&args, address))
}
