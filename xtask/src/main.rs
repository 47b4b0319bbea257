//! `cargo xtask demo | test | lint | bench`: the project's tasks, in Rust so that they
//! run wherever cargo does. See `README.md`.

mod barriers;
mod bench;
mod compare;
mod instructions;
mod plot;
mod qemu;
mod reliability;
mod setup;
mod vfio;

use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: cargo xtask <task> [options]

tasks:
  demo [--kvm] [-- <extra qemu args>]
        build the bare-metal kernel, make a disk image, boot QEMU (q35, TCG)
        with an NVMe controller and show the self-test live; exits with the
        kernel's verdict
  test [--kvm]
        host unit tests, the core built for three bare-metal targets, the
        device barriers checked in the core's aarch64 and riscv64 assembly
        (xtask/barrier-probe: dmb oshst / fence ow,o before the doorbell
        store, dmb oshld / fence ir,ir after the phase-tag load), the
        kernel under every QEMU configuration, vfio-test; ends with
        'N passed, N failed'
  qemu [--kvm] <text>
        the kernel under the QEMU configurations of 'test' whose name
        contains <text>
  vfio-test [--kvm] [--no-iommu]
        hal-linux-vfio in a Linux guest: the back-end's programs built static
        (musl), a Debian kernel and busybox (apt-get download, cached in
        ~/.cache/nvme-nostd-xtask), QEMU with an emulated IOMMU and NVMe
        controllers bound to vfio-pci; runs the conformance suite, the
        back-end's checks and the tools there. Then a second guest without
        an IOMMU, on a kernel built from Debian's linux-source-6.1 with
        VFIO's no-IOMMU mode (once, cached); --no-iommu: that one only
  lint  rustfmt check, clippy -D warnings (host crates and the kernel on its
        target), rustdoc -D warnings
  soak [--schedules N] [--seed S]
        the fault-injection property suite on the simulator, N schedules
        (default 100000) from seed S
  barriers
        check the device barriers in the aarch64 and riscv64 assembly of the
        driver's doorbell and poll paths
  miri  the core's unit tests and a simulator subset under Miri (nightly)
  fuzz [--seconds N]
        each cargo-fuzz target for N seconds (default 60), two at a time
  bench [--reps N] [--seconds S] [--label TEXT] [--out FILE] [--quick] [--shadow] [--no-vfio]
        4 KiB random reads and writes at QD 1, 8, 32 and 128 in QEMU (TCG):
        the driver against a raw register loop in the same boot, for each
        drive backing (file, null-co) and CPU pinning (shared, split); N
        boots each (default 5), S seconds per measurement (default 2), and
        the bring-up time to the first I/O. Appends a section titled TEXT to
        FILE (default BENCHMARKS.md) and writes a plot of IOPS against queue
        depth beside it (bench-plots/DATE.svg); then appends the instruction
        counts and memory of 'instructions'. --quick: 1 boot, 1 s, written to
        target/xtask/bench-quick.md unless --out says otherwise. --shadow:
        the driver with shadow doorbells (Doorbell Buffer Config). Then
        'vfio-compare' with min(N, 3) boots (--no-vfio: not). Takes about
        half an hour; not part of 'test'
  vfio-bench [--kvm] [--reps N] [--label TEXT] [--out FILE]
        perf through VFIO in a Linux guest (the vfio-test rig) with 1 and 2
        vCPUs, each with 1 and 2 queue pairs on their own threads, 4 KiB
        random reads at QD 32 on a null-co controller; N boots each (default
        3); appends a section to FILE (default BENCHMARKS.md)
  vfio-compare [--kvm] [--reps N] [--seconds S] [--label TEXT] [--out FILE]
               [--pinning shared|split]
        perf through VFIO beside the Linux kernel's nvme driver driven by fio
        (io_uring, with interrupts and polled), in the same Linux guest boot:
        4 KiB random reads and writes at QD 1, 8, 32 and 128 on a null-co
        controller, 1 vCPU, each CPU pinning (shared, split); N boots each
        (default 3), S seconds per measurement (default 2). A kernel-side
        run that stalls (QEMU 7.2 does that to the kernel driver) ends its
        boot and is measured again in a fresh one, twice at most per side.
        fio is built static from Debian's source package (once, cached).
        Appends a section to FILE (default BENCHMARKS.md)
  instructions [--label TEXT] [--out FILE]
        instructions per I/O in the driver (submission and completion apart,
        the simulator's share apart) counted by valgrind's callgrind against
        the simulator with zero latency, and a queue pair's memory at 256 and
        1024 entries; appends a section titled TEXT to FILE (default
        BENCHMARKS.md). About a minute

--kvm uses KVM if a quick probe shows it works (TCG otherwise).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kvm = args.iter().any(|a| a == "--kvm");
    let extra: Vec<String> = match args.iter().position(|a| a == "--") {
        Some(i) => args[i + 1..].to_vec(),
        None => Vec::new(),
    };
    let number = |flag: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let ok = match args.first().map(String::as_str) {
        Some("demo") => qemu::demo(kvm, &extra),
        Some("test") => test(kvm),
        Some("qemu") => {
            let wanted = args.iter().skip(1).find(|a| !a.starts_with("--")).cloned().unwrap_or_default();
            qemu_matching(kvm, &wanted)
        }
        Some("vfio-test") => {
            let mut tally = Tally::default();
            // `--no-iommu`: the second guest only.
            if !args.iter().any(|a| a == "--no-iommu") {
                tally.step("vfio: conformance suite in a Linux guest", vfio::vfio_test(kvm));
            }
            tally.step("vfio: no-IOMMU mode in a Linux guest", vfio::no_iommu_test(kvm));
            tally.finish()
        }
        Some("lint") => lint(),
        Some("soak") => {
            let mut tally = Tally::default();
            let seed = number("--seed", reliability::DEFAULT_SEED);
            tally.step("property schedules", reliability::schedules(number("--schedules", 100_000), seed));
            tally.finish()
        }
        Some("barriers") => barriers::check(),
        Some("miri") => {
            let mut tally = Tally::default();
            reliability::miri(&mut tally);
            tally.finish()
        }
        Some("fuzz") => reliability::fuzz(number("--seconds", 60)),
        Some("bench") => bench::bench(&args[1..]),
        Some("instructions") => instructions::instructions(&args),
        Some("vfio-bench") => vfio::vfio_bench(kvm, &args[..]),
        Some("vfio-compare") => compare::vfio_compare(kvm, &args[..]),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs a command from the workspace root, echoing it; true on success.
pub fn run(cmd: &mut Command) -> bool {
    cmd.current_dir(setup::root());
    eprintln!("$ {}", show(cmd));
    match cmd.status() {
        Ok(s) => s.success(),
        Err(e) => {
            eprintln!("xtask: cannot run {}: {e}", show(cmd));
            false
        }
    }
}

pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The core must build with no std for these (proves `no_std` and no heap).
pub const CORE_TARGETS: [&str; 3] =
    ["x86_64-unknown-none", "aarch64-unknown-none", "riscv64gc-unknown-none-elf"];

fn test(kvm: bool) -> bool {
    if !setup::ensure_tools() {
        return false;
    }
    let mut tally = Tally::default();
    tally
        .step("host unit tests", run(cargo().args(["test", "--workspace", "--exclude", "nvme-qemu-kernel"])));
    for t in CORE_TARGETS {
        tally.step(
            &format!("nvme-nostd builds for {t}"),
            run(cargo().args(["build", "-p", "nvme-nostd", "--target", t])),
        );
    }
    tally.step("device barriers in the aarch64 and riscv64 disassembly", barriers::check());
    tally.step(
        "property schedules (10000, fixed seed)",
        reliability::schedules(10_000, reliability::DEFAULT_SEED),
    );
    tally.step("threaded stress (4 queue pairs, faults and resets; release)", reliability::threads());
    reliability::miri(&mut tally);
    match qemu::build_kernel() {
        Some(kernel) => {
            for config in qemu::test_configs() {
                let ok = qemu::run_config(&kernel, &config, kvm);
                tally.step(&format!("qemu {}", config.name), ok);
            }
        }
        None => tally.step("kernel build", false),
    }
    tally.step("vfio: conformance suite in a Linux guest", vfio::vfio_test(kvm));
    tally.step("vfio: no-IOMMU mode in a Linux guest", vfio::no_iommu_test(kvm));
    tally.finish()
}

/// The QEMU configurations whose name contains `wanted`.
fn qemu_matching(kvm: bool, wanted: &str) -> bool {
    if !setup::ensure_tools() {
        return false;
    }
    let mut tally = Tally::default();
    match qemu::build_kernel() {
        Some(kernel) => {
            for config in qemu::test_configs().into_iter().filter(|c| c.name.contains(wanted)) {
                let ok = qemu::run_config(&kernel, &config, kvm);
                tally.step(&format!("qemu {}", config.name), ok);
            }
        }
        None => tally.step("kernel build", false),
    }
    tally.finish()
}

fn lint() -> bool {
    if !setup::ensure_targets() {
        return false;
    }
    let mut tally = Tally::default();
    tally.step("rustfmt", run(cargo().args(["fmt", "--all", "--", "--check"])));
    tally.step(
        "clippy (host)",
        run(cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            "nvme-qemu-kernel",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])),
    );
    tally.step(
        "clippy (kernel, x86_64-unknown-none)",
        run(cargo().args([
            "clippy",
            "-p",
            "nvme-qemu-kernel",
            "-p",
            "nvme-nostd",
            "-p",
            "hal-baremetal",
            "--target",
            "x86_64-unknown-none",
            "--",
            "-D",
            "warnings",
        ])),
    );
    tally.step(
        "rustdoc",
        run(cargo()
            // With `alloc`, so the `Vec<u8>` buffers are documented too.
            .args([
                "doc",
                "--workspace",
                "--exclude",
                "nvme-qemu-kernel",
                "--no-deps",
                "--features",
                "nvme-nostd/alloc",
            ])
            .env("RUSTDOCFLAGS", "-D warnings")),
    );
    tally.finish()
}

/// Counts steps and prints the closing line.
#[derive(Default)]
pub struct Tally {
    passed: u32,
    failed: Vec<String>,
    skipped: Vec<String>,
}

impl Tally {
    /// Records a step that could not run here, visibly.
    pub fn skip(&mut self, name: &str, why: &str) {
        eprintln!("xtask: {name} ... skipped: {why}");
        println!("skipped: {name} ({why})");
        self.skipped.push(name.to_string());
    }

    /// Records a step's outcome.
    pub fn step(&mut self, name: &str, ok: bool) {
        if ok {
            self.passed += 1;
            eprintln!("xtask: {name} ... ok");
        } else {
            self.failed.push(name.to_string());
            eprintln!("xtask: {name} ... FAILED");
        }
    }

    fn finish(self) -> bool {
        for f in &self.failed {
            println!("failed: {f}");
        }
        if self.skipped.is_empty() {
            println!("{} passed, {} failed", self.passed, self.failed.len());
        } else {
            println!("{} passed, {} failed, {} skipped", self.passed, self.failed.len(), self.skipped.len());
        }
        self.failed.is_empty()
    }
}
