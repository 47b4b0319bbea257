//! The QEMU boot demo: a bare-metal x86_64 kernel that finds every NVMe
//! controller on the PCI bus and runs the conformance suite
//! (`nvme-conformance`) on each.
//!
//! Booted with `qemu-system-x86_64 -kernel <this ELF>` (PVH entry, see
//! `boot.rs`). Kernel command line switches (`-append`):
//! - `shadow-doorbells`: every second controller with shadow doorbells
//!   (the test configurations leave them off: QEMU 7.2 crashed once with them);
//! - `plant-mismatch`: corrupt the first read-back, to prove a failure fails;
//! - `dump-identify`: print the first controller's Identify Controller and
//!   Identify Namespace (NSID 1) data in hex, for test fixtures;
//! - `raise-exception`: execute UD2, to prove a CPU exception fails the run
//!   (with a message) instead of triple-faulting;
//! - `smart-warning`: the first controller waits for a SMART critical
//!   warning raised over QMP (`cargo xtask` sets `smart_critical_warning`
//!   when the kernel prints that it waits);
//! - `format=NSID`: format that namespace (a scratch one) to 4096-byte
//!   blocks and back;
//! - `skip-restore`: leave the blocks the checks overwrote as they are, to
//!   prove that `cargo xtask test`'s before/after comparison of the disk
//!   images notices;
//! - `bench [key=value ...]`: instead of the self-test, measure random reads
//!   on the first controller, driver against a raw loop (see `bench/mod.rs`).
//!
//! The verdict leaves through `isa-debug-exit`: status 33 passed, 35 failed.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod bench;
mod boot;
mod exceptions;
mod start_info;

use core::fmt::Write;
use core::ptr::NonNull;
use hal_baremetal::exit::exit_qemu;
use hal_baremetal::pci::{self, BarWindow, MemoryBar, NvmeFunction, PortConfigAccess};
use hal_baremetal::serial::Serial;
use hal_baremetal::{BareMetalBus, BareMetalHal, Claim, DmaPool, LinearMap, TscClock};
use hal_traits::faulty::FaultyBus;
use hal_traits::pci::PciBus;
use hal_traits::MmioRegion;
use nvme_conformance::{reason, Options, Outcome, Reason, Totals};
use nvme_nostd::probe;
use nvme_nostd::spec::ids::Cns;
use pci_types::PciAddress;

/// Pages of DMA memory for the driver: 48 MiB, enough for the largest transfers
/// of the self-test on several controllers.
const DMA_PAGES: usize = 12288;

#[repr(C, align(4096))]
struct DmaArea([u8; DMA_PAGES * 4096]);

/// The DMA region, in .bss (zeroed at boot). The kernel is identity mapped, so
/// its address is its physical address.
static mut DMA_AREA: DmaArea = DmaArea([0; DMA_PAGES * 4096]);
static DMA_POOL: spin::Once<DmaPool> = spin::Once::new();
static CLOCK: spin::Once<TscClock> = spin::Once::new();
static SERIAL: spin::Mutex<Option<Serial>> = spin::Mutex::new(None);

/// Writes to COM1 (used by the panic and exception handlers too).
struct Console;

impl Console {
    /// A console for a handler that may have interrupted a writer holding the
    /// serial lock: it skips the lock rather than deadlock.
    fn emergency() -> EmergencyConsole {
        EmergencyConsole
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        match SERIAL.lock().as_mut() {
            Some(serial) => serial.write_str(s),
            None => Ok(()),
        }
    }
}

/// See [`Console::emergency`].
struct EmergencyConsole;

impl Write for EmergencyConsole {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        match SERIAL.try_lock() {
            Some(mut guard) => match guard.as_mut() {
                Some(serial) => serial.write_str(s),
                None => Ok(()),
            },
            // SAFETY: the lock holder was interrupted and never runs again
            // (the handler exits QEMU); a fresh handle to COM1 is the only way
            // to get the message out.
            None => unsafe { Serial::init() }.write_str(s),
        }
    }
}

/// QEMU's q35 leaves 0xC000_0000..0xFEC0_0000 to PCI memory BARs; qboot
/// assigns none, so the kernel places them there.
const BAR_WINDOW: (u64, u64) = (0xc000_0000, 0xfec0_0000);
/// The boot code identity-maps the first 4 GiB.
const MAPPED_LIMIT: u64 = 1 << 32;

#[no_mangle]
extern "C" fn kernel_main(start_info: u32) -> ! {
    // SAFETY: the kernel is the only user of COM1.
    *SERIAL.lock() = Some(unsafe { Serial::init() });
    exceptions::install();
    let mut out = Console;
    // SAFETY: `start_info` is the physical address QEMU's PVH loader passed,
    // identity mapped by the boot code.
    let cmdline = unsafe { start_info::command_line(start_info) };
    let plant_mismatch = cmdline.split(' ').any(|w| w == "plant-mismatch");
    let dump_identify = cmdline.split(' ').any(|w| w == "dump-identify");
    let skip_restore = cmdline.split(' ').any(|w| w == "skip-restore");
    if cmdline.split(' ').any(|w| w == "raise-exception") {
        let _ = writeln!(out, "raising an invalid-opcode exception on purpose");
        // SAFETY: UD2 raises #UD, whose handler reports it and exits QEMU.
        unsafe { core::arch::asm!("ud2") };
    }
    let _ = writeln!(out, "nvme-nostd QEMU demo; command line: \"{cmdline}\"");

    // SAFETY: the kernel owns the PIT.
    let clock = CLOCK.call_once(|| unsafe { TscClock::calibrate() });
    let _ = writeln!(out, "TSC: {} ticks/ms", clock.ticks_per_ms());
    let pool = DMA_POOL.call_once(|| {
        // SAFETY: DMA_AREA is used by nothing else; it is page-aligned, in RAM,
        // identity mapped (virtual = physical) and physically contiguous.
        unsafe {
            let base = core::ptr::addr_of_mut!(DMA_AREA) as *mut u8;
            DmaPool::new(NonNull::new_unchecked(base), base as u64, DMA_PAGES)
        }
    });

    // SAFETY: the kernel owns the PCI configuration ports.
    let access = unsafe { PortConfigAccess::new() };
    let functions = pci::find_nvme::<8>(&access);
    let mut window = BarWindow::new(BAR_WINDOW.0, BAR_WINDOW.1);
    if bench::requested(cmdline) {
        exit_qemu(bench(cmdline, &access, functions.first(), &mut window, pool, clock, &mut out));
    }
    let mut totals = Totals::default();
    // `format=NSID`: Format NVM that namespace (a scratch one) and back.
    let format = cmdline.split(' ').find_map(|w| w.strip_prefix("format=")).and_then(|n| n.parse().ok());
    // `smart-warning`: the first controller waits for a SMART critical
    // warning that `cargo xtask` raises over QMP.
    let smart_warning = cmdline.split(' ').any(|w| w == "smart-warning");
    // `shadow-doorbells`: every second controller with shadow doorbells
    // (not in the test configurations: see `controller_options_for`).
    let shadow = cmdline.split(' ').any(|w| w == "shadow-doorbells");
    let options = Options::default()
        .with_plant_mismatch(plant_mismatch)
        .with_skip_restore(skip_restore)
        .with_format_nsid(format);
    let found = if functions.is_empty() {
        Outcome::Failed("no NVMe controller on the PCI bus".try_into().unwrap_or_default())
    } else {
        Outcome::Ok
    };
    totals.record(&mut out, format_args!("find NVMe controllers ({} found)", functions.len()), found);

    // The driver probes the bus: every NVMe function is shown to the probe
    // callback, which sets the suite's options; each is claimed, its BARs
    // assigned, and attached; the attach callback runs the suite on it.
    // SAFETY: the kernel owns configuration space (the scan above is done
    // with it); the window is free address space on q35; the first 4 GiB
    // are identity mapped, uncached where BARs live, and there is no IOMMU.
    let bus = unsafe {
        BareMetalBus::new(PortConfigAccess::new(), window, pool, clock, identity_map(), identity_map())
    };
    let mut bus = FaultyBus(bus);
    if dump_identify {
        if let Some(first) = bus.0.nvme_function(0) {
            match bus.0.open(&first) {
                // The dump's controller releases the claim when dropped.
                Ok(hal) => dump(hal, &mut out),
                Err(e) => {
                    let _ = writeln!(out, "dump-identify: {e:?}");
                }
            }
        }
    }
    // Accepted functions are attached in the order they are probed.
    let index = core::cell::Cell::new(0);
    let label_of = |i: usize, a: PciAddress| {
        let mut label: heapless::String<32> = heapless::String::new();
        let _ = write!(label, "nvme{i} ({:02x}:{:02x}.{})", a.bus(), a.device(), a.function());
        label
    };
    let attached = probe(
        &mut bus,
        None,
        |found, wanted| {
            let f = found.function;
            let label = label_of(index.get(), f.address);
            let _ = writeln!(Console, "{label}: PCI {:04x}:{:04x}, {}", f.vendor_id, f.device_id, found.trid);
            *wanted = nvme_conformance::controller_options_for(index.get(), shadow);
            true
        },
        |found, result| {
            let label = label_of(index.get(), found.function.address);
            let first = index.get() == 0;
            index.set(index.get() + 1);
            let options = options.with_external_smart_warning(smart_warning && first);
            nvme_conformance::run_attached(result, &label, &options, &mut Console, &mut totals);
        },
    );
    let _ = writeln!(out, "probe: {attached} of {} controllers attached", functions.len());
    totals.summary(&mut out);
    let _ = writeln!(out, "DMA pool: {} of {} pages free", pool.free_pages(), DMA_PAGES);
    exit_qemu(totals.success())
}

/// The identity map of the first 4 GiB the boot code sets up.
fn identity_map() -> LinearMap {
    LinearMap { virt_start: 0, phys_start: 0, len: MAPPED_LIMIT as usize }
}

/// Claims the function at `function` for this kernel's driver.
fn claim(function: PciAddress) -> Result<Claim, Reason> {
    hal_baremetal::claim(function).ok_or(reason!("controller claimed by another driver"))
}

/// Enables the claimed function and returns its BAR0 if the kernel can use
/// it: inside the identity map and large enough for the registers and the
/// first doorbells.
fn usable_bar0(
    access: &PortConfigAccess,
    claim: &Claim,
    window: &mut BarWindow,
) -> Result<MemoryBar, Reason> {
    match pci::enable(access, claim, window) {
        Ok(bar) if bar.address + bar.size <= MAPPED_LIMIT && bar.size >= 0x2000 => Ok(bar),
        Ok(bar) => {
            Err(reason!("BAR0 {:#x}+{:#x} is outside the identity map or too small", bar.address, bar.size))
        }
        Err(e) => Err(reason!("{e:?}")),
    }
}

/// The HAL of the claimed controller whose BAR0 is `bar0`.
pub(crate) fn hal_for(
    claim: Claim,
    bar0: MemoryBar,
    pool: &'static DmaPool,
    clock: &'static TscClock,
) -> BareMetalHal {
    // SAFETY: BAR0 was just assigned or found enabled, lies below 4 GiB in
    // the uncached part of the identity map (`usable_bar0`), and nothing else
    // maps it.
    let mmio =
        unsafe { MmioRegion::new(NonNull::new_unchecked(bar0.address as *mut u8), bar0.size as usize) };
    // The boot code identity-maps the first 4 GiB; there is no IOMMU.
    let map = LinearMap { virt_start: 0, phys_start: 0, len: MAPPED_LIMIT as usize };
    // SAFETY: `mmio` is this function's BAR0; the identity map lasts for the
    // kernel's lifetime and no IOMMU is set up.
    unsafe { BareMetalHal::new(claim, mmio, pool, clock, map) }
}

/// Bench mode on the first controller; true when every measurement worked.
fn bench(
    cmdline: &'static str,
    access: &PortConfigAccess,
    first: Option<&NvmeFunction>,
    window: &mut BarWindow,
    pool: &'static DmaPool,
    clock: &'static TscClock,
    out: &mut Console,
) -> bool {
    let plan = bench::Plan::parse(cmdline);
    let first = first.ok_or(reason!("no NVMe controller on the PCI bus"));
    // Each measurement claims the function again for itself.
    let setup = first
        .and_then(|f| claim(f.address))
        .and_then(|c| usable_bar0(access, &c, window).map(|bar| (c.address(), bar)));
    match (plan, setup) {
        (Ok(plan), Ok((function, bar0))) => {
            let target = bench::Target { function, bar0, pool, clock };
            let ok = bench::run(&plan, target, out);
            let _ = writeln!(out, "DMA pool: {} of {} pages free", pool.free_pages(), DMA_PAGES);
            ok
        }
        (Err(why), _) | (_, Err(why)) => {
            let _ = writeln!(out, "bench FAILED: {why}");
            false
        }
    }
}

/// Prints Identify Controller and Identify Namespace 1 in hex, 32 bytes a line.
fn dump(hal: BareMetalHal, out: &mut Console) {
    let ctrlr = match nvme_nostd::Controller::new(hal, Default::default()) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(out, "dump-identify: attach failed: {e}");
            return;
        }
    };
    let mut page = [0u8; 4096];
    for (name, cns, nsid) in [("controller", Cns::CONTROLLER, 0u32), ("namespace-1", Cns::NAMESPACE, 1)] {
        if ctrlr.identify_raw(cns, nsid, &mut page).is_err() {
            continue;
        }
        let _ = writeln!(out, "identify-{name}:");
        for line in page.chunks(32) {
            for b in line {
                let _ = write!(out, "{b:02x}");
            }
            let _ = writeln!(out);
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // Never wait on a lock the panicking code may hold.
    if let Some(mut serial) = SERIAL.try_lock() {
        if let Some(s) = serial.as_mut() {
            let _ = writeln!(s, "PANIC: {info}");
        }
    }
    exit_qemu(false)
}
