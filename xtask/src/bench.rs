//! `cargo xtask bench`: boots the kernel in bench mode (see
//! `examples/qemu-kernel/src/bench/mod.rs`) several times per drive backing
//! and CPU pinning, and appends a table of medians to `BENCHMARKS.md`.
//!
//! Each boot measures the driver and the raw loop at QD1 and QD32; the ratio
//! driver/raw is taken per boot, so that both sides of a ratio saw the same
//! QEMU process, pinning and host load.

use crate::qemu::{self, PASS_STATUS};
use crate::setup::{self, root};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The file-backed drive's size.
const IMAGE_BYTES: u64 = 256 << 20;
/// The queue depths every boot measures.
const DEPTHS: [u32; 4] = [1, 8, 32, 128];
/// The operations every boot measures, at every depth.
const OPS: [&str; 2] = ["read", "write"];
/// Seconds of reads before each measurement starts (the kernel's default).
const WARMUP: &str = "0.5";
/// How long to look for QEMU's vCPU thread before giving up on pinning.
const FIND_VCPU: Duration = Duration::from_secs(5);
/// When to check that the pinning held: after the kernel's first warm-up has
/// begun, when the threads QEMU starts for I/O exist.
const CHECK_PINNING: Duration = Duration::from_secs(1);

const HEADER: &str = "\
# Benchmarks

`cargo xtask bench` boots the bare-metal kernel (`examples/qemu-kernel`) in QEMU
(TCG) and measures 4 KiB random I/O on namespace 1 of QEMU's emulated NVMe
controller (reads at queue depth 1 and 32 until the fast path; since then reads
and writes at 1, 8, 32 and 128): the driver through its public API, and a raw
register loop that uses no driver code (`examples/qemu-kernel/src/bench/raw.rs`),
in the same boot. driver/raw is computed per boot; the table gives its median.
Each run appends a section (and, since the fast path, a plot in `bench-plots/`
and a section of instruction counts, as `cargo xtask instructions` writes
it; since the comparison with the Linux kernel driver, a section as `cargo
xtask vfio-compare` writes it: the VFIO back-end's `perf` and fio on the
kernel's `nvme` driver in the same Linux guest boot); earlier sections stay
as they were.
";

/// What backs the namespace.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Backing {
    /// A raw image file, in the host's page cache.
    File,
    /// QEMU's `null-co` driver: reads return zeros without touching a file.
    Null,
}

impl Backing {
    fn name(self) -> &'static str {
        match self {
            Backing::File => "file",
            Backing::Null => "null",
        }
    }
}

/// Where QEMU's threads may run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pinning {
    /// The whole process on core 0: the vCPU and the main loop (which runs the
    /// device model) take turns.
    Shared,
    /// The vCPU thread on core 0, every other thread on core 1.
    Split,
    /// No `taskset`: wherever the scheduler puts them.
    Unpinned,
}

impl Pinning {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Pinning::Shared => "shared",
            Pinning::Split => "split",
            Pinning::Unpinned => "unpinned",
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Pinning::Shared => "shared = all of QEMU on core 0",
            Pinning::Split => "split = vCPU thread on core 0, all other threads on core 1",
            Pinning::Unpinned => "unpinned = taskset missing, threads wherever the scheduler puts them",
        }
    }
}

/// The command-line options of `cargo xtask bench`.
struct Options {
    reps: u32,
    seconds: String,
    label: String,
    out: PathBuf,
    /// The driver side with shadow doorbells (`--shadow`).
    shadow: bool,
    /// Without the comparison with the Linux kernel driver (`--no-vfio`).
    no_vfio: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut options = Options {
        reps: if quick { 1 } else { 5 },
        seconds: if quick { "1" } else { "2" }.to_string(),
        label: String::new(),
        // A quick run is a smoke test: it stays out of BENCHMARKS.md unless asked.
        out: if quick { qemu::work_dir().join("bench-quick.md") } else { root().join("BENCHMARKS.md") },
        shadow: false,
        no_vfio: false,
    };
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned();
        let need = || value.clone().ok_or(format!("{} needs a value", args[i]));
        match args[i].as_str() {
            "--quick" | "--shadow" | "--no-vfio" => {
                options.shadow |= args[i] == "--shadow";
                options.no_vfio |= args[i] == "--no-vfio";
                i += 1;
                continue;
            }
            "--reps" => options.reps = need()?.parse().ok().filter(|&n| n > 0).ok_or("--reps needs N > 0")?,
            "--seconds" => options.seconds = need()?,
            "--label" => options.label = need()?,
            "--out" => options.out = PathBuf::from(need()?),
            other => return Err(format!("unknown option {other}")),
        }
        i += 2;
    }
    if !valid_seconds(&options.seconds) {
        return Err(format!("--seconds {}: decimal seconds above 0, at most 3 decimals", options.seconds));
    }
    if options.label.is_empty() {
        options.label = if quick { "quick run, not a measurement" } else { "unlabelled run" }.to_string();
    }
    Ok(options)
}

/// The format the kernel accepts for `seconds=`.
fn valid_seconds(s: &str) -> bool {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    !whole.is_empty()
        && digits(whole)
        && digits(frac)
        && frac.len() <= 3
        && s.bytes().any(|b| (b'1'..=b'9').contains(&b))
}

/// `cargo xtask bench [options]`; true when every boot produced its results.
pub fn bench(args: &[String]) -> bool {
    let options = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("xtask bench: {e}\n\n{}", crate::USAGE);
            return false;
        }
    };
    if !setup::ensure_tools() {
        return false;
    }
    // Recorded before the run: the code that was measured, not what changed
    // while it ran.
    let meta = Meta::collect(args, &options.out);
    let Some(kernel) = qemu::build_kernel() else {
        return false;
    };
    let image = qemu::work_dir().join("disks").join("bench-file.img");
    if let Err(e) = ensure_image(&image) {
        eprintln!("xtask: bench image {}: {e}", image.display());
        return false;
    }
    let pinnings = pinnings();
    let backings = [Backing::File, Backing::Null];
    let total = options.reps as usize * backings.len() * pinnings.len();
    let mut results = Vec::new();
    let mut failures = Vec::new();
    let mut n = 0;
    // Repetitions outermost, so that a change in host load spreads over every
    // cell instead of falling on one.
    for rep in 0..options.reps {
        for &backing in &backings {
            for &pinning in &pinnings {
                n += 1;
                let boot = Boot { backing, pinning, rep, raw_first: rep % 2 == 0, shadow: options.shadow };
                eprintln!(
                    "xtask: bench boot {n}/{total}: backing {}, pinning {}, repetition {} ({} first)",
                    backing.name(),
                    pinning.name(),
                    rep + 1,
                    if boot.raw_first { "raw" } else { "driver" }
                );
                match boot.run(&kernel, &image, &options.seconds) {
                    Ok(pairs) => results.extend(pairs),
                    Err(why) => {
                        eprintln!("xtask: bench boot FAILED: {why}");
                        failures.push(why);
                    }
                }
            }
        }
    }
    if results.is_empty() {
        eprintln!("xtask: bench: no boot produced results; {} left as it was", options.out.display());
        return false;
    }
    let rows = table_rows(&results, &backings, &pinnings);
    // The plot goes beside the results file, named by the run's date.
    let stamp: String = meta.date.chars().filter(|c| c.is_ascii_digit()).collect();
    let plot_name = format!("bench-plots/{stamp}{}.svg", if options.shadow { "-shadow" } else { "" });
    let plot_path = options.out.parent().unwrap_or(Path::new("")).join(&plot_name);
    let plotted = fs::create_dir_all(plot_path.parent().unwrap_or(Path::new(".")))
        .map_err(|e| e.to_string())
        .and_then(|()| plot(&plot_path, &rows));
    let plot_link = match plotted {
        Ok(()) => Some(plot_name),
        Err(e) => {
            eprintln!("xtask: bench: no plot ({}): {e}", plot_path.display());
            None
        }
    };
    let section = meta.section(&options, &pinnings, &rows, &results, plot_link.as_deref(), &failures);
    println!("{section}");
    match append_section(&options.out, &section) {
        Ok(()) => eprintln!("xtask: bench: section \"{}\" added to {}", options.label, options.out.display()),
        Err(e) => {
            eprintln!("xtask: bench: cannot write {}: {e}", options.out.display());
            return false;
        }
    }
    if !failures.is_empty() {
        eprintln!("xtask: bench: {} of {total} boots FAILED", failures.len());
    }
    // Instructions per I/O and memory, in the same run (a section of its
    // own, as `cargo xtask instructions` writes it).
    let counted = crate::instructions::instructions(&[
        "instructions".to_string(),
        "--label".to_string(),
        format!("{}: instructions per I/O and memory", options.label),
        "--out".to_string(),
        options.out.display().to_string(),
    ]);
    // The VFIO back-end's perf beside the Linux kernel driver with fio, in
    // a Linux guest (a section of its own, as `cargo xtask vfio-compare`
    // writes it).
    let compared = options.no_vfio
        || crate::compare::vfio_compare(
            false,
            &[
                "vfio-compare".to_string(),
                "--reps".to_string(),
                options.reps.min(3).to_string(),
                "--seconds".to_string(),
                options.seconds.clone(),
                "--label".to_string(),
                format!("{}: VFIO perf beside the Linux kernel driver with fio", options.label),
                "--out".to_string(),
                options.out.display().to_string(),
            ],
        );
    failures.is_empty() && counted && compared
}

/// The pinning modes this machine can run.
pub(crate) fn pinnings() -> Vec<Pinning> {
    let taskset =
        Command::new("taskset").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !taskset {
        eprintln!("xtask: bench: taskset (util-linux) not found: running UNPINNED, results mix both modes");
        return vec![Pinning::Unpinned];
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        eprintln!("xtask: bench: one CPU only: skipping the split pinning (needs two cores)");
        return vec![Pinning::Shared];
    }
    vec![Pinning::Shared, Pinning::Split]
}

/// A raw image with data in every block (a sparse file would be read from
/// holes, not from cached pages), made once and kept.
fn ensure_image(path: &Path) -> io::Result<()> {
    if fs::metadata(path).is_ok_and(|m| m.len() == IMAGE_BYTES) {
        return Ok(());
    }
    eprintln!("xtask: writing the {} MiB bench image {}", IMAGE_BYTES >> 20, path.display());
    let mut f = io::BufWriter::new(fs::File::create(path)?);
    let mut block = [0u8; 4096];
    for i in 0..IMAGE_BYTES / 4096 {
        block.iter_mut().enumerate().for_each(|(j, b)| *b = (i as usize + j) as u8 | 1);
        f.write_all(&block)?;
    }
    f.flush()
}

/// Reads the image once so that the boot finds it in the page cache, as the
/// "file" backing is meant to be (another program may have evicted it).
fn warm_page_cache(path: &Path) -> io::Result<()> {
    io::copy(&mut fs::File::open(path)?, &mut io::sink()).map(|_| ())
}

/// One QEMU boot of the bench.
struct Boot {
    backing: Backing,
    pinning: Pinning,
    rep: u32,
    raw_first: bool,
    /// The driver side with shadow doorbells.
    shadow: bool,
}

/// The driver's and the raw loop's IOPS at one depth, from one boot.
struct Pair {
    backing: Backing,
    pinning: Pinning,
    rw: &'static str,
    qd: u32,
    driver: u64,
    raw: u64,
    /// Microseconds from the start of bring-up to the first completed I/O:
    /// the driver's (attach, queue pair, first I/O) and the raw loop's.
    bringup: (u64, u64),
    /// At QD 1: (average, 99th percentile) latency in nanoseconds, the
    /// driver's and the raw loop's.
    latency: Option<Latencies>,
}

/// QD 1 latency, (average, 99th percentile) in nanoseconds: the driver's,
/// then the raw loop's.
type Latencies = ((u64, u64), (u64, u64));

impl Boot {
    fn name(&self) -> String {
        format!("bench-{}-{}-{}", self.backing.name(), self.pinning.name(), self.rep + 1)
    }

    fn command(&self, kernel: &Path, image: &Path, seconds: &str) -> Command {
        let mut cmd = match self.pinning {
            Pinning::Shared => taskset("0"),
            // Everything starts on core 1, so threads QEMU creates later (I/O
            // workers) land there too; the vCPU thread moves to core 0 after.
            Pinning::Split => taskset("1"),
            Pinning::Unpinned => Command::new("qemu-system-x86_64"),
        };
        // debug-threads names the vCPU thread "CPU 0/TCG", which `split` looks for.
        cmd.args(["-name", "bench,debug-threads=on"]);
        cmd.args(["-machine", "q35", "-m", "256M", "-nodefaults", "-display", "none", "-no-reboot"]);
        cmd.args(["-accel", "tcg", "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        cmd.arg("-kernel").arg(kernel);
        let first = if self.raw_first { "raw" } else { "driver" };
        let qd = DEPTHS.map(|d| d.to_string()).join(",");
        let rw = OPS.join(",");
        cmd.arg("-append").arg(format!(
            "bench backing={} seconds={seconds} warmup={WARMUP} qd={qd} rw={rw} first={first} shadow={}",
            self.backing.name(),
            if self.shadow { "on" } else { "off" }
        ));
        let drive = match self.backing {
            Backing::File => format!("file={},if=none,id=bench0,format=raw", image.display()),
            Backing::Null => "driver=null-co,size=1G,read-zeroes=on,if=none,id=bench0".to_string(),
        };
        cmd.args(["-drive", &drive, "-device", "nvme,serial=bench,drive=bench0"]);
        cmd
    }

    /// Boots, pins, waits, and returns one pair per depth; any failure (exit
    /// status, a missing or failed measurement, pinning) discards the boot.
    fn run(&self, kernel: &Path, image: &Path, seconds: &str) -> Result<Vec<Pair>, String> {
        let name = self.name();
        if self.backing == Backing::File {
            warm_page_cache(image).map_err(|e| format!("{name}: reading {}: {e}", image.display()))?;
        }
        let log = qemu::work_dir().join("logs").join(format!("{name}.log"));
        let file = fs::File::create(&log).map_err(|e| format!("{name}: {}: {e}", log.display()))?;
        let mut cmd = self.command(kernel, image, seconds);
        cmd.stdout(file.try_clone().map_err(|e| e.to_string())?).stderr(file);
        // Quoted, so the line can be pasted into a shell to boot this by hand.
        let words: Vec<String> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|w| shell_quote(&w.to_string_lossy()))
            .collect();
        eprintln!("$ {}", words.join(" "));
        let mut child = cmd.spawn().map_err(|e| format!("{name}: cannot start QEMU: {e}"))?;
        let pinned = match self.pinning {
            Pinning::Split => split(child.id()),
            _ => Ok(()),
        };
        let checked = pinned.and_then(|()| check_pinning(child.id(), self.pinning));
        if let Err(e) = checked {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{name}: pinning: {e}"));
        }
        let status = qemu::wait_for(&mut child, boot_timeout(seconds));
        let mut text = String::new();
        let _ = fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut text));
        if status != Some(PASS_STATUS) {
            let why =
                text.lines().find(|l| l.contains("FAILED") || l.contains("PANIC") || l.contains("EXCEPTION"));
            return Err(format!(
                "{name}: QEMU exit status {status:?}, not {PASS_STATUS}: {} (log: {})",
                why.unwrap_or("no failure line"),
                log.display()
            ));
        }
        self.pairs(&text).map_err(|e| format!("{name}: {e} (log: {})", log.display()))
    }

    /// The driver/raw pairs of the boot's result lines; every depth must have
    /// both.
    fn pairs(&self, text: &str) -> Result<Vec<Pair>, String> {
        let mut pairs = Vec::new();
        for rw in OPS {
            for qd in DEPTHS {
                let result = |mode: &str| {
                    results(text)
                        .find(|r| r.rw == rw && r.qd == qd && r.mode == mode)
                        .ok_or(format!("no {mode} result for {rw} at qd={qd}"))
                };
                let (driver, raw) = (result("driver")?, result("raw")?);
                if raw.iops == 0 {
                    return Err(format!("raw loop completed nothing for {rw} at qd={qd}"));
                }
                eprintln!(
                    "    {rw:<5} qd={qd:<3} driver {:>7} IOPS  raw {:>7} IOPS  driver/raw {:.2}",
                    driver.iops,
                    raw.iops,
                    driver.iops as f64 / raw.iops as f64
                );
                pairs.push(Pair {
                    backing: self.backing,
                    pinning: self.pinning,
                    rw,
                    qd,
                    driver: driver.iops,
                    raw: raw.iops,
                    bringup: (driver.bringup_us, raw.bringup_us),
                    latency: driver.latency.zip(raw.latency),
                });
            }
        }
        Ok(pairs)
    }
}

/// The longest a boot may take: every measurement with its warm-up, plus a
/// minute for booting, bring-up and draining.
fn boot_timeout(seconds: &str) -> Duration {
    let per = seconds.parse::<f64>().unwrap_or(2.0) + WARMUP.parse::<f64>().unwrap_or(0.5);
    Duration::from_secs(60) + Duration::from_secs_f64(per * 2.0 * (DEPTHS.len() * OPS.len()) as f64)
}

/// `taskset -c <cores> qemu-system-x86_64`.
pub(crate) fn taskset(cores: &str) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cores, "qemu-system-x86_64"]);
    cmd
}

/// One `bench result` line of the kernel.
struct Measured {
    rw: String,
    qd: u32,
    mode: String,
    iops: u64,
    /// From the start of bring-up to the first completed I/O.
    bringup_us: u64,
    /// At QD 1: average and 99th percentile latency, nanoseconds.
    latency: Option<(u64, u64)>,
}

fn results(text: &str) -> impl Iterator<Item = Measured> + '_ {
    text.lines().filter_map(|line| {
        let rest = line.trim().strip_prefix("bench result ")?;
        let field = |key: &str| rest.split(' ').find_map(|w| w.strip_prefix(key)?.strip_prefix('='));
        Some(Measured {
            rw: field("rw").unwrap_or("read").to_string(),
            bringup_us: field("bringup_us").and_then(|v| v.parse().ok()).unwrap_or(0),
            latency: field("lat_avg_ns")
                .and_then(|v| v.parse().ok())
                .zip(field("lat_p99_ns").and_then(|v| v.parse().ok())),
            qd: field("qd")?.parse().ok()?,
            mode: field("mode")?.to_string(),
            iops: field("iops")?.parse().ok()?,
        })
    })
}

/// QEMU's threads: (thread id, name).
fn threads(pid: u32) -> Vec<(u32, String)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
        Some((tid, comm.trim().to_string()))
    })
    .collect()
}

/// TCG names its vCPU threads `CPU <n>/TCG` (with `-name ...,debug-threads=on`).
fn is_vcpu(name: &str) -> bool {
    name.starts_with("CPU ") && name.ends_with("/TCG")
}

/// Moves the vCPU thread(s) of the QEMU process `pid`, started on core 1, to
/// core 0 as soon as they exist.
pub(crate) fn split(pid: u32) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let vcpus: Vec<u32> =
            threads(pid).into_iter().filter(|(_, name)| is_vcpu(name)).map(|(tid, _)| tid).collect();
        if !vcpus.is_empty() {
            for tid in vcpus {
                let ok = Command::new("taskset")
                    .args(["-p", "-c", "0", &tid.to_string()])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    return Err(format!("taskset -p -c 0 {tid} failed"));
                }
            }
            return Ok(());
        }
        if start.elapsed() > FIND_VCPU {
            return Err(format!("no \"CPU n/TCG\" thread in /proc/{pid}/task after {FIND_VCPU:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Checks, once the kernel is running, that every thread of `pid` is where
/// `pinning` wants it; prints what it found.
pub(crate) fn check_pinning(pid: u32, pinning: Pinning) -> Result<(), String> {
    if pinning == Pinning::Unpinned {
        return Ok(());
    }
    std::thread::sleep(CHECK_PINNING);
    let mut summary = Vec::new();
    for (tid, name) in threads(pid) {
        let status = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
        let Some(cores) = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")) else {
            continue; // the thread ended meanwhile
        };
        let cores = cores.trim();
        let want = match pinning {
            Pinning::Split if !is_vcpu(&name) => "1",
            _ => "0",
        };
        if cores != want {
            return Err(format!("thread {tid} \"{name}\" may run on {cores}, not {want}"));
        }
        summary.push(format!("{name}:{cores}"));
    }
    if summary.is_empty() {
        return Err("QEMU ended before its pinning could be checked".to_string());
    }
    eprintln!("    pinning {}: {} threads checked ({})", pinning.name(), summary.len(), summary.join(", "));
    Ok(())
}

/// One row of the table.
struct Row {
    backing: Backing,
    pinning: Pinning,
    rw: &'static str,
    qd: u32,
    driver: Vec<u64>,
    raw: Vec<u64>,
    ratios: Vec<f64>,
}

fn table_rows(pairs: &[Pair], backings: &[Backing], pinnings: &[Pinning]) -> Vec<Row> {
    let mut rows = Vec::new();
    for &backing in backings {
        for &pinning in pinnings {
            for rw in OPS {
                for qd in DEPTHS {
                    let cell: Vec<&Pair> = pairs
                        .iter()
                        .filter(|p| p.backing == backing && p.pinning == pinning && p.rw == rw && p.qd == qd)
                        .collect();
                    rows.push(Row {
                        backing,
                        pinning,
                        rw,
                        qd,
                        driver: cell.iter().map(|p| p.driver).collect(),
                        raw: cell.iter().map(|p| p.raw).collect(),
                        ratios: cell.iter().map(|p| p.driver as f64 / p.raw as f64).collect(),
                    });
                }
            }
        }
    }
    rows
}

/// Draws the rows' median IOPS against queue depth, one panel per backing,
/// pinning and operation.
fn plot(path: &Path, rows: &[Row]) -> Result<(), String> {
    let mut panels: Vec<crate::plot::Panel> = Vec::new();
    for r in rows {
        let title = format!("{} backing, {} pinning, {}", r.backing.name(), r.pinning.name(), r.rw);
        if panels.last().is_none_or(|p| p.title != title) {
            panels.push(crate::plot::Panel { title, driver: Vec::new(), raw: Vec::new() });
        }
        let Some(panel) = panels.last_mut() else { continue };
        let median_of = |v: &[u64]| (!v.is_empty()).then(|| median_u64(v));
        panel.driver.push(median_of(&r.driver));
        panel.raw.push(median_of(&r.raw));
    }
    crate::plot::draw(path, &DEPTHS, &panels, OPS.len() * 2)
}

/// The median (the mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn median_u64(values: &[u64]) -> f64 {
    median(&values.iter().map(|&v| v as f64).collect::<Vec<_>>())
}

/// What the section says about the run besides its numbers.
struct Meta {
    command: String,
    date: String,
    machine: String,
    commit: String,
}

impl Meta {
    fn collect(args: &[String], out: &Path) -> Meta {
        let quoted: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        let command = format!("cargo xtask bench {}", quoted.join(" ")).trim_end().to_string();
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| Some(l.strip_prefix("model name")?.split_once(':')?.1.trim().to_string()))
            })
            .unwrap_or_else(|| "unknown CPU".to_string());
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        let qemu = output("qemu-system-x86_64", &["--version"]);
        let qemu = qemu.lines().next().unwrap_or("unknown QEMU");
        Meta {
            command,
            date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            machine: format!("nproc {nproc}, {cpu}, {qemu}"),
            commit: commit(out),
        }
    }

    fn section(
        &self,
        options: &Options,
        pinnings: &[Pinning],
        rows: &[Row],
        pairs: &[Pair],
        plot: Option<&str>,
        failures: &[String],
    ) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## {}\n", options.label);
        let _ = writeln!(s, "- Command: `{}`", self.command);
        let _ = writeln!(s, "- Date: {}", self.date);
        let _ = writeln!(s, "- Machine: {}", self.machine);
        let _ = writeln!(s, "- Commit: {}", self.commit);
        let _ = writeln!(
            s,
            "- Per boot: 4 KiB random {} at QD {}, driver and raw each ({WARMUP} s warm-up, then {} s measured), order alternated; {} boot(s) per backing and pinning; the driver with {} doorbells",
            OPS.join(" and "),
            DEPTHS.map(|d| d.to_string()).join(", "),
            options.seconds,
            options.reps,
            if options.shadow { "shadow (Doorbell Buffer Config)" } else { "MMIO" }
        );
        let _ = writeln!(
            s,
            "- Backing: file = {} MiB raw image, page-cached; null = `null-co,read-zeroes=on`",
            IMAGE_BYTES >> 20
        );
        let described: Vec<&str> = pinnings.iter().map(|p| p.describe()).collect();
        let _ = writeln!(s, "- Pinning: {}", described.join("; "));
        if !failures.is_empty() {
            let _ = writeln!(s, "- Failed boots (left out of the table): {}", failures.len());
            for f in failures {
                let _ = writeln!(s, "  - {f}");
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "| backing | pinning | op | QD | driver IOPS (median) | raw IOPS (median) | driver/raw (median of same-boot ratios) | ratio min–max | boots |"
        );
        let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|---:|");
        for r in rows {
            let (b, p, rw, qd, n) = (r.backing.name(), r.pinning.name(), r.rw, r.qd, r.ratios.len());
            if r.ratios.is_empty() {
                let _ = writeln!(s, "| {b} | {p} | {rw} | {qd} | – | – | – | – | 0 |");
                continue;
            }
            let lo = r.ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = r.ratios.iter().copied().fold(0.0, f64::max);
            let _ = writeln!(
                s,
                "| {b} | {p} | {rw} | {qd} | {:.0} | {:.0} | {:.2} | {lo:.2}–{hi:.2} | {n} |",
                median_u64(&r.driver),
                median_u64(&r.raw),
                median(&r.ratios)
            );
        }
        // Bring-up: from the driver's attach (the raw loop's controller
        // disable) to the first completed I/O, over every measurement.
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "| backing | pinning | bring-up to the first I/O, driver (median, µs) | raw loop (median, µs) | measurements |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|");
        for backing in [Backing::File, Backing::Null] {
            for &pinning in pinnings {
                let cell: Vec<&Pair> =
                    pairs.iter().filter(|p| p.backing == backing && p.pinning == pinning).collect();
                if cell.is_empty() {
                    continue;
                }
                let driver: Vec<u64> = cell.iter().map(|p| p.bringup.0).collect();
                let raw: Vec<u64> = cell.iter().map(|p| p.bringup.1).collect();
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.0} | {:.0} | {} |",
                    backing.name(),
                    pinning.name(),
                    median_u64(&driver),
                    median_u64(&raw),
                    cell.len()
                );
            }
        }
        // QD 1 latency, submission to completion.
        let timed: Vec<&Pair> = pairs.iter().filter(|p| p.latency.is_some()).collect();
        if !timed.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "| backing | pinning | op | QD 1 latency, driver: average / 99th percentile (median, µs) | raw loop (median, µs) | boots |"
            );
            let _ = writeln!(s, "|---|---|---|---:|---:|---:|");
            for backing in [Backing::File, Backing::Null] {
                for &pinning in pinnings {
                    for rw in OPS {
                        let cell: Vec<Latencies> = timed
                            .iter()
                            .filter(|p| p.backing == backing && p.pinning == pinning && p.rw == rw)
                            .filter_map(|p| p.latency)
                            .collect();
                        if cell.is_empty() {
                            continue;
                        }
                        let us = |f: &dyn Fn(&Latencies) -> u64| {
                            median_u64(&cell.iter().map(f).collect::<Vec<_>>()) / 1000.0
                        };
                        let _ = writeln!(
                            s,
                            "| {} | {} | {rw} | {:.1} / {:.1} | {:.1} / {:.1} | {} |",
                            backing.name(),
                            pinning.name(),
                            us(&|l| l.0 .0),
                            us(&|l| l.0 .1),
                            us(&|l| l.1 .0),
                            us(&|l| l.1 .1),
                            cell.len()
                        );
                    }
                }
            }
        }
        if let Some(plot) = plot {
            let _ = writeln!(s, "\nIOPS against queue depth (medians): [{plot}]({plot})");
        }
        s
    }
}

/// `arg` as a POSIX shell word.
pub(crate) fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=,:+".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// A command's standard output, trimmed ("unknown" if it cannot run).
pub(crate) fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// `git rev-parse --short HEAD` and whether the tree has changes, not
/// counting the results file itself (earlier runs leave it modified).
pub(crate) fn commit(out: &Path) -> String {
    let hash = output("git", &["rev-parse", "--short", "HEAD"]);
    let mut status = Command::new("git");
    status.args(["status", "--porcelain", "--", "."]).current_dir(root());
    let absolute = std::env::current_dir().map(|d| d.join(out)).unwrap_or_else(|_| out.to_path_buf());
    if let Ok(inside) = absolute.strip_prefix(root()) {
        status.arg(format!(":(exclude){}", inside.display()));
    }
    match status.output() {
        Ok(o) if o.status.success() && o.stdout.is_empty() => format!("{hash} (clean)"),
        Ok(o) if o.status.success() => format!("{hash} (dirty: uncommitted changes)"),
        _ => format!("{hash} (tree state unknown)"),
    }
}

/// Appends `section` to `path` after a blank line, creating the file with
/// its header first.
pub(crate) fn append_section(path: &Path, section: &str) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let existing = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let lead = if existing.is_empty() {
        format!("{HEADER}\n")
    } else if existing.ends_with("\n\n") {
        String::new()
    } else if existing.ends_with('\n') {
        "\n".to_string()
    } else {
        "\n\n".to_string()
    };
    let mut f = fs::OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(lead.as_bytes())?;
    f.write_all(section.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_format_matches_the_kernel() {
        for ok in ["2", "0.5", "1.25", "10.125"] {
            assert!(valid_seconds(ok), "{ok}");
        }
        for bad in ["", "0", "0.000", ".5", "1.2345", "-1", "1e3", "2s"] {
            assert!(!valid_seconds(bad), "{bad}");
        }
    }

    #[test]
    fn result_lines_parse() {
        let text = "noise\r\nbench result backing=null rw=write qd=32 mode=driver ios=10 seconds=2.000 iops=5 bringup_us=77 lat_avg_ns=900 lat_p99_ns=1500\r\n\
                    bench FAILED backing=null rw=read qd=1 mode=raw: why\n";
        let r: Vec<Measured> = results(text).collect();
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].rw.as_str(), r[0].qd, r[0].mode.as_str(), r[0].iops), ("write", 32, "driver", 5));
        assert_eq!(r[0].bringup_us, 77);
        assert_eq!(r[0].latency, Some((900, 1500)));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median_u64(&[7]), 7.0);
    }

    #[test]
    fn commands_are_quoted_for_a_shell() {
        assert_eq!(shell_quote("--reps"), "--reps");
        assert_eq!(shell_quote("before Hal v2"), "'before Hal v2'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn sections_append_after_one_blank_line() {
        let path = std::env::temp_dir().join(format!("xtask-bench-test-{}.md", std::process::id()));
        let _ = fs::remove_file(&path);
        append_section(&path, "## a\n").unwrap();
        append_section(&path, "## b\n").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let _ = fs::remove_file(&path);
        assert_eq!(text, format!("{HEADER}\n## a\n\n## b\n"));
        assert_eq!(
            fs::read_to_string(root().join("BENCHMARKS.md")).map(|t| t.starts_with(HEADER)).ok(),
            Some(true),
            "BENCHMARKS.md starts with the header the writer uses"
        );
    }

    #[test]
    fn rows_pair_driver_and_raw_of_the_same_boot() {
        let pair = |driver, raw| Pair {
            backing: Backing::Null,
            pinning: Pinning::Split,
            rw: "read",
            qd: 1,
            driver,
            raw,
            bringup: (0, 0),
            latency: None,
        };
        let rows =
            table_rows(&[pair(90, 100), pair(50, 100), pair(80, 80)], &[Backing::Null], &[Pinning::Split]);
        assert_eq!(rows.len(), DEPTHS.len() * OPS.len());
        assert_eq!(rows[0].ratios, vec![0.9, 0.5, 1.0]);
        assert_eq!(median(&rows[0].ratios), 0.9);
        assert!(rows[1].ratios.is_empty(), "no QD 8 data");
        assert!(rows[DEPTHS.len()].ratios.is_empty(), "no write data");
    }
}
