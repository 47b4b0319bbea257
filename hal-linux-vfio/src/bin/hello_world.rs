//! `hello_world`, after SPDK's: writes "Hello world!" to the first block of
//! the first active namespace of an NVMe controller on VFIO, reads it back
//! and prints it, then writes back what the block held before.

use clap::Parser;
use hal_linux_vfio::{VfioHal, VfioOptions};
use nvme_nostd::{Controller, ControllerOptions, DmaBuffer, IoQueuePair, QpairOptions};
use std::process::ExitCode;
use std::time::Duration;

/// Writes "Hello world!" to LBA 0 of the first namespace, reads it back and
/// prints it; the block is restored afterwards.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The controller's PCI address (default: the first NVMe controller
    /// bound to vfio-pci).
    #[arg(long, short)]
    device: Option<String>,
}

type Qp<'a> = IoQueuePair<'a, VfioHal, DmaBuffer<'a, VfioHal>, (), 4>;

/// Longer than the driver's I/O timeout (30 s by default), which ends a
/// stuck request (abort, then reset) before this gives up on it: the
/// restoring write never overtakes a greeting still in flight.
const TIMEOUT: Duration = Duration::from_secs(90);

fn run(address: &str) -> Result<(), String> {
    println!("Attaching to {address}");
    let hal = VfioHal::open(address, VfioOptions::default()).map_err(|e| e.to_string())?;
    let ctrlr = Controller::new(hal, ControllerOptions::default()).map_err(|e| format!("attach: {e}"))?;
    println!("Attached to {address}");
    let nsid = ctrlr
        .namespace_ids()
        .next()
        .ok_or("the controller has no active namespace")?
        .map_err(|e| format!("active namespace list: {e}"))?;
    let ns = ctrlr.namespace(nsid).map_err(|e| format!("namespace {nsid}: {e}"))?;
    println!("  Namespace ID: {nsid} size: {}MB", ns.size_bytes() / 1_000_000);
    let mut qp: Qp<'_> =
        ctrlr.create_io_qpair(QpairOptions::default()).map_err(|e| format!("queue pair: {e}"))?;
    println!("Initialization complete.");
    let bytes = ns.buffer_bytes(1, false);
    let mut io = |write: Option<&[u8]>| -> Result<Vec<u8>, String> {
        let mut buf = DmaBuffer::new(ctrlr.hal(), bytes).map_err(|e| e.to_string())?;
        let cid = match write {
            Some(data) => {
                buf[..data.len()].copy_from_slice(data);
                qp.write(&ns, 0, 1, buf, ())
            }
            None => qp.read(&ns, 0, 1, buf, ()),
        }
        .map_err(|e| e.error.to_string())?;
        let done = qp.wait(cid, TIMEOUT, drop).map_err(|e| e.to_string())?;
        done.result().map_err(|e| e.to_string())?;
        Ok(done.buffer.map(|b| b.to_vec()).unwrap_or_default())
    };
    let saved = io(None).map_err(|e| format!("read of LBA 0: {e}"))?;
    let mut hello = vec![0u8; bytes];
    let text = b"Hello world!\n";
    hello[..text.len()].copy_from_slice(text);
    let written = io(Some(&hello)).map_err(|e| format!("write of LBA 0: {e}"));
    let read = written.and_then(|_| io(None).map_err(|e| format!("read back of LBA 0: {e}")));
    // The block goes back to what it was, whatever happened.
    let restored = io(Some(&saved)).map_err(|e| format!("restoring LBA 0: {e}"));
    // A failed restore is the worst news: it comes first.
    restored?;
    let read = read?;
    let end = read.iter().position(|&b| b == 0).unwrap_or(read.len());
    print!("{}", String::from_utf8_lossy(&read[..end]));
    if read[..text.len()] != text[..] {
        return Err("the block read back is not what was written".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    hal_linux_vfio::tool::run("hello_world", args.device, run)
}
