//! `cargo xtask vfio-compare`: the VFIO back-end's `perf` beside the Linux
//! kernel's NVMe driver driven by fio, in the same guest boot.
//!
//! One controller (QEMU's NVMe on a `null-co` drive) is handed to the
//! kernel's `nvme` driver (loaded with one poll queue), where fio measures it
//! through io_uring twice (interrupts; `hipri`, the polled queue); then to
//! vfio-pci, where `perf` measures it; half the boots in the other order. The
//! same 4 KiB random reads and writes at the same depths, for the same time,
//! on the same vCPU, with QEMU pinned as the bare-metal bench pins it.
//!
//! fio is built once from Debian's source package as a static program (the
//! binary package links Ceph, RDMA and Gluster libraries the guest does not
//! have), and cached.

use crate::bench::{self, Pinning};
use crate::setup::root;
use crate::vfio;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The queue depths measured.
const DEPTHS: [u32; 4] = [1, 8, 32, 128];
/// The workloads, as fio and `perf` both spell them.
const OPS: [&str; 2] = ["randread", "randwrite"];
/// The sides of a comparison: our `perf`, fio on io_uring, fio on io_uring
/// with `hipri` (the kernel driver's poll queue).
const SIDES: [&str; 3] = ["perf", "io_uring", "io_uring-polled"];
/// Warm-up before each measurement, milliseconds.
const WARMUP_MS: u32 = 500;
/// What building fio needs on the host, each found by a file it installs.
const FIO_BUILD_PACKAGES: [(&str, &str); 3] =
    [("/usr/bin/make", "make"), ("/usr/bin/gcc", "gcc"), ("/usr/lib/x86_64-linux-gnu/libc.a", "libc6-dev")];

/// The command-line options.
struct Options {
    reps: u32,
    /// Milliseconds measured per run.
    millis: u32,
    label: String,
    out: PathBuf,
    /// Only this pinning (`--pinning shared|split`).
    pinning: Option<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        reps: 3,
        millis: 2000,
        label: "VFIO perf beside the Linux kernel driver with fio".into(),
        out: root().join("BENCHMARKS.md"),
        pinning: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--kvm" => {}
            "--reps" => {
                o.reps = value()?.parse().ok().filter(|&n| n > 0).ok_or("--reps: a positive count")?
            }
            "--seconds" => {
                let s: f64 = value()?.parse().map_err(|_| "--seconds: a number")?;
                if !(0.1..=600.0).contains(&s) {
                    return Err("--seconds: between 0.1 and 600".into());
                }
                o.millis = (s * 1000.0).round() as u32;
            }
            "--label" => o.label = value()?,
            "--out" => o.out = PathBuf::from(value()?),
            "--pinning" => o.pinning = Some(value()?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

/// Runs `program` with `args`, quietly; whether it succeeded.
fn quiet(program: &str, args: &[&str], dir: &Path) -> bool {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Debian's source package of fio, downloaded into `cache/source` by apt
/// itself through a private configuration: the system's own package
/// sources as `deb-src`, their lists kept apart from the system's. apt checks
/// the Sources index against the archive's signed Release file, and the
/// `.dsc` and the tarball against the index, so what gets built on this
/// host is what Debian signed. The upstream tarball's path.
fn fio_source(cache: &Path) -> Result<PathBuf, String> {
    let apt = cache.join("apt");
    let (parts, lists, source) = (apt.join("sources.list.d"), apt.join("lists"), cache.join("source"));
    let _ = fs::remove_dir_all(&apt);
    let _ = fs::remove_dir_all(&source);
    for dir in [&parts, &lists.join("partial"), &source] {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut list = String::new();
    let mut files: Vec<PathBuf> = vec![PathBuf::from("/etc/apt/sources.list")];
    files.extend(fs::read_dir("/etc/apt/sources.list.d").into_iter().flatten().flatten().map(|e| e.path()));
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else { continue };
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.ends_with(".sources") {
            let src: Vec<String> = text
                .lines()
                .map(|l| {
                    if l.trim_start().starts_with("Types:") {
                        "Types: deb-src".to_string()
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            fs::write(parts.join(&name), src.join("\n") + "\n").map_err(|e| e.to_string())?;
        } else if name.ends_with(".list") || name == "sources.list" {
            for l in text.lines().filter_map(|l| l.trim_start().strip_prefix("deb ")) {
                list.push_str(&format!("deb-src {l}\n"));
            }
        }
    }
    fs::write(apt.join("sources.list"), list).map_err(|e| e.to_string())?;
    let options = [
        format!("Dir::Etc::SourceList={}", apt.join("sources.list").display()),
        format!("Dir::Etc::SourceParts={}", parts.display()),
        format!("Dir::State::Lists={}", lists.display()),
    ];
    let apt_get = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        for o in &options {
            cmd.args(["-o", o]);
        }
        cmd.args(args).current_dir(&source);
        eprintln!("$ (cd {} && {})", source.display(), crate::show(&cmd));
        cmd.status().is_ok_and(|s| s.success())
    };
    if !apt_get(&["update", "-qq"]) || !apt_get(&["source", "--download-only", "-qq", "fio"]) {
        return Err("apt-get source --download-only fio failed".into());
    }
    fs::read_dir(&source)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with("fio_") && n.contains(".orig.tar.") && !n.ends_with(".asc")
            })
        })
        .ok_or("apt-get source left no upstream tarball".into())
}

/// A static fio built from Debian's source package for the `fio` binary
/// package apt would install (once; cached under its version).
fn fio() -> Result<PathBuf, String> {
    let cache = vfio::cache_subdir("fio");
    // apt knows where the binary package is; the source package's files lie
    // beside it in the pool.
    let uris = vfio::output(Command::new("apt-get").args(["download", "--print-uris", "-qq", "fio"]))
        .or_else(|| {
            crate::run(Command::new("apt-get").args(["update", "-qq"])).then(|| {
                vfio::output(Command::new("apt-get").args(["download", "--print-uris", "-qq", "fio"]))
            })?
        })
        .ok_or("apt-get download --print-uris fio failed")?;
    let uri = uris.split_whitespace().next().unwrap_or("").trim_matches('\'').to_string();
    let (_, deb) = uri.rsplit_once('/').ok_or(format!("no package address in {uris:?}"))?;
    let version = deb
        .strip_prefix("fio_")
        .and_then(|d| d.split('_').next())
        .ok_or(format!("no version in {deb}"))?
        .to_string();
    let out = cache.join(format!("fio-{version}-static"));
    if out.exists() {
        return Ok(out);
    }
    if !crate::setup::ensure_packages(&FIO_BUILD_PACKAGES) {
        return Err("fio's build packages are missing".into());
    }
    let tarball = fio_source(&cache)?;
    let build = cache.join("build");
    let _ = fs::remove_dir_all(&build);
    fs::create_dir_all(&build).map_err(|e| e.to_string())?;
    eprintln!("xtask: building a static fio {version} (once; cached in {})", cache.display());
    if !quiet("tar", &["-xf", &tarball.display().to_string(), "--strip-components=1"], &build) {
        return Err(format!("cannot unpack {}", tarball.display()));
    }
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get()).to_string();
    if !quiet("./configure", &["--build-static", "--disable-native"], &build)
        || !quiet("make", &["-s", "-j", &jobs, "fio"], &build)
    {
        return Err("the fio build failed".into());
    }
    let _ = quiet("strip", &["fio"], &build);
    fs::copy(build.join("fio"), &out).map_err(|e| format!("{}: {e}", out.display()))?;
    let _ = fs::remove_dir_all(&build);
    Ok(out)
}

/// A workload at a depth: one cell of the table.
type Cell = (&'static str, u32);

/// Every cell, in the order the guest runs them.
fn all_cells() -> Vec<Cell> {
    OPS.iter().flat_map(|&rw| DEPTHS.iter().map(move |&qd| (rw, qd))).collect()
}

/// What one boot measures: the cells of each of [`SIDES`].
type Plan = [Vec<Cell>; 3];

/// The guest's `/init`: the controller at 00:04.0 first held by no driver,
/// the modules loaded (the kernel's `nvme` with one poll queue), then the
/// kernel side (polled cells first: the interrupt-driven path is the one
/// that stalls) and the VFIO side in the order asked, each over the cells
/// `plan` gives it; each measurement's JSON report between `== <side>
/// rw=<op> qd=<depth>` and `== end`. A measurement still running 10 s after its time prints
/// `== stalled` and ends the boot at once: a stalled controller (QEMU 7.2
/// with the kernel driver, TESTBED.md) spoils the rest of the boot, and the
/// process waiting for it cannot be killed.
fn init(
    vfio_modules: &[String],
    nvme_modules: &[String],
    kernel_first: bool,
    millis: u32,
    plan: &Plan,
) -> String {
    let mut s = vfio::init_preamble(32);
    // Warnings on the console too (a kernel driver's timeouts and resets).
    s.push_str(
        "echo 5 > /proc/sys/kernel/printk\n\
         echo \"== clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)\"\n\
         D=/sys/bus/pci/devices/0000:00:04.0\n\
         echo none > $D/driver_override\n",
    );
    vfio::insmod(&mut s, vfio_modules);
    for m in nvme_modules {
        let params = if m == "nvme" { " poll_queues=1" } else { "" };
        s.push_str(&format!(
            "insmod /lib/modules/{m}.ko{params} || {{ echo \"insmod {m} failed\"; verdict '\\021'; }}\n"
        ));
    }
    let list =
        |cells: &[Cell]| cells.iter().map(|(rw, qd)| format!("{rw}:{qd}")).collect::<Vec<_>>().join(" ");
    s.push_str(&format!(
        "status=0\n\
         PERF=\"{perf}\"\n\
         IRQ=\"{irq}\"\n\
         POLLED=\"{polled}\"\n\
         bind() {{\n\
         \x20 [ -e $D/driver ] && echo 0000:00:04.0 > $D/driver/unbind\n\
         \x20 echo $1 > $D/driver_override\n\
         \x20 echo 0000:00:04.0 > /sys/bus/pci/drivers_probe\n\
         \x20 echo \"== bound to $(basename \"$(readlink $D/driver)\")\"\n\
         }}\n\
         report() {{\n\
         \x20 \"$@\" >/tmp/r.json 2>/tmp/err &\n\
         \x20 p=$!; t=0\n\
         \x20 while kill -0 $p 2>/dev/null; do\n\
         \x20   t=$((t + 1)); [ $t -gt {limit} ] && {{ echo \"== stalled\"; verdict '\\020'; }}\n\
         \x20   sleep 1\n\
         \x20 done\n\
         \x20 if wait $p; then cat /tmp/r.json; else echo \"FAILED: $*\"; cat /tmp/err; status=1; fi\n\
         \x20 echo \"== end\"\n\
         }}\n\
         kernel_side() {{\n\
         \x20 bind nvme\n\
         \x20 for i in $(seq 1 30); do [ -e /dev/nvme0n1 ] && break; sleep 1; done\n\
         \x20 echo \"== io_poll $(cat /sys/block/nvme0n1/queue/io_poll)\"\n\
         \x20 echo \"== scheduler $(cat /sys/block/nvme0n1/queue/scheduler)\"\n\
         \x20 dmesg | grep 'poll queues'\n\
         \x20 for c in $(for c in $POLLED; do echo io_uring-polled:$c; done) $(for c in $IRQ; do echo io_uring:$c; done); do\n\
         \x20   side=${{c%%:*}}; c=${{c#*:}}; rw=${{c%:*}}; qd=${{c#*:}}\n\
         \x20   extra=; [ $side = io_uring-polled ] && extra=--hipri\n\
         \x20   echo \"== $side rw=$rw qd=$qd\"\n\
         \x20   report /bin/fio --name=k --filename=/dev/nvme0n1 --ioengine=io_uring --direct=1 --rw=$rw --bs=4k \
         --iodepth=$qd --fixedbufs --registerfiles $extra --norandommap --randrepeat=0 --time_based \
         --runtime={millis}ms --ramp_time={WARMUP_MS}ms --lat_percentiles=1 --output-format=json\n\
         \x20 done\n\
         }}\n\
         vfio_side() {{\n\
         \x20 bind vfio-pci\n\
         \x20 for c in $PERF; do rw=${{c%:*}}; qd=${{c#*:}}\n\
         \x20   echo \"== perf rw=$rw qd=$qd\"\n\
         \x20   report /bin/perf --device 0000:00:04.0 -w $rw -q $qd -t {seconds} -a {warmup} --json\n\
         \x20 done\n\
         }}\n",
        perf = list(&plan[0]),
        irq = list(&plan[1]),
        polled = list(&plan[2]),
        seconds = f64::from(millis) / 1000.0,
        warmup = f64::from(WARMUP_MS) / 1000.0,
        limit = (millis + WARMUP_MS) / 1000 + 10,
    ));
    let kernel = !plan[1].is_empty() || !plan[2].is_empty();
    let sides: &[&str] = match (kernel, plan[0].is_empty()) {
        (true, false) if kernel_first => &["kernel_side", "vfio_side"],
        (true, false) => &["vfio_side", "kernel_side"],
        (true, true) => &["kernel_side"],
        (false, _) => &["vfio_side"],
    };
    for side in sides {
        s.push_str(&format!("{side}\n"));
    }
    s.push_str("if [ $status = 0 ]; then verdict '\\020'; else verdict '\\021'; fi\n");
    s
}

/// One measurement: IOPS, and average and 99th-percentile latency in
/// microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Sample {
    iops: f64,
    avg_us: f64,
    p99_us: f64,
}

/// (side, workload, depth).
type Key = (&'static str, &'static str, u32);

/// A fio JSON report's figures for `rw`.
fn fio_sample(json: &serde_json::Value, rw: &str) -> Option<Sample> {
    let job = json.get("jobs")?.get(0)?;
    if job.get("error")?.as_u64()? != 0 {
        return None;
    }
    let dir = job.get(if rw.contains("read") { "read" } else { "write" })?;
    let lat = dir.get("lat_ns")?;
    let p99 = lat
        .get("percentile")
        .or_else(|| dir.get("clat_ns")?.get("percentile"))?
        .get("99.000000")?
        .as_f64()?;
    Some(Sample {
        iops: dir.get("iops")?.as_f64()?,
        avg_us: lat.get("mean")?.as_f64()? / 1000.0,
        p99_us: p99 / 1000.0,
    })
}

/// A `perf --json` report's figures (no errors allowed).
fn perf_sample(json: &serde_json::Value) -> Option<Sample> {
    let total = json.get("total")?;
    if total.get("errors")?.as_u64()? != 0 {
        return None;
    }
    let lat = total.get("latency_us")?;
    Some(Sample {
        iops: total.get("iops")?.as_f64()?,
        avg_us: lat.get("avg")?.as_f64()?,
        p99_us: lat.get("p99")?.as_f64()?,
    })
}

/// What a boot's log says.
#[derive(Debug, Default)]
struct Log {
    samples: BTreeMap<Key, Sample>,
    /// The measurement that stalled; the boot ended there.
    stalled: Option<Key>,
    /// Kernel-side measurements that ended with an error (left out, measured
    /// again in another boot).
    kernel_failed: Vec<Key>,
}

/// Whether a console line is the kernel's (`[   38.150605] nvme ...`).
fn is_kernel_line(line: &str) -> bool {
    line.strip_prefix('[').and_then(|r| r.split_once(']')).is_some_and(|(t, _)| {
        t.trim().split_once('.').is_some_and(|(a, b)| {
            !a.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && !b.is_empty()
                && b.bytes().all(|c| c.is_ascii_digit())
        })
    })
}

/// The key of `side`, `rw` and `qd` among the known ones.
fn key(side: &str, rw: &str, qd: u32) -> Option<Key> {
    Some((
        *SIDES.iter().find(|s| **s == side)?,
        *OPS.iter().find(|o| **o == rw)?,
        *DEPTHS.iter().find(|d| **d == qd)?,
    ))
}

/// Reads the log of a boot that ran `plan`. Every measurement must be there
/// and good, but for those after a stall and kernel-side ones that failed;
/// an error says which is not.
fn parse_log(text: &str, plan: &Plan) -> Result<Log, String> {
    let mut log = Log::default();
    let mut seen = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(head) = line.trim().strip_prefix("== ") else { continue };
        let mut words = head.split(' ');
        let (Some(side), Some(rw), Some(qd)) = (words.next(), words.next(), words.next()) else { continue };
        let (Some(rw), Some(qd)) =
            (rw.strip_prefix("rw="), qd.strip_prefix("qd=").and_then(|q| q.parse().ok()))
        else {
            continue;
        };
        let k = key(side, rw, qd).ok_or(format!("unknown measurement {head:?}"))?;
        seen.push(k);
        let what = format!("{side} {rw} at QD {qd}");
        let mut body = Vec::new();
        let mut stalled = false;
        for l in lines.by_ref() {
            match l.trim() {
                "== end" => break,
                "== stalled" => {
                    stalled = true;
                    break;
                }
                // The kernel's own lines on the console (a driver's timeout
                // warning, say) can land inside a report: left out.
                t if is_kernel_line(t) => {}
                _ => body.push(l),
            }
        }
        if stalled {
            if side == "perf" {
                return Err(format!("{what}: perf stalled"));
            }
            log.stalled = Some(k);
            break;
        }
        let body = body.join("\n");
        // The report is the JSON object; anything the console put around
        // it is left out.
        let sample = body
            .find('{')
            .zip(body.rfind('}'))
            .and_then(|(a, b)| serde_json::from_str::<serde_json::Value>(&body[a..=b]).ok())
            .and_then(|json| if side == "perf" { perf_sample(&json) } else { fio_sample(&json, rw) })
            .filter(|s| s.iops > 0.0);
        match sample {
            Some(sample) => {
                log.samples.insert(k, sample);
            }
            // A kernel-side run that failed or left no readable report is
            // measured again elsewhere; perf's must be there.
            None if side != "perf" => log.kernel_failed.push(k),
            None => return Err(format!("{what}: no report, or a failed or empty one")),
        }
    }
    if log.stalled.is_none() {
        for (side, cells) in SIDES.iter().zip(plan) {
            if let Some((rw, qd)) = cells.iter().find(|(rw, qd)| !seen.contains(&(*side, *rw, *qd))) {
                return Err(format!("no {side} {rw} at QD {qd}"));
            }
        }
    }
    Ok(log)
}

/// One boot's results.
struct Boot {
    pinning: Pinning,
    kernel_first: bool,
    log: Log,
    /// `/sys/block/nvme0n1/queue/io_poll`, the scheduler and the driver's
    /// queue line.
    queues: String,
}

impl Boot {
    /// `side`'s measurement of `cell` in this boot.
    fn get(&self, side: &'static str, (rw, qd): Cell) -> Option<Sample> {
        self.log.samples.get(&(side, rw, qd)).copied()
    }

    /// perf's and `side`'s measurements of `cell`, both from this boot.
    fn pair(&self, side: &'static str, cell: Cell) -> Option<(Sample, Sample)> {
        Some((self.get("perf", cell)?, self.get(side, cell)?))
    }
}

/// Boots the comparison guest once, measuring `plan`.
fn boot(
    guest: &vfio::Guest,
    fio: &Path,
    (pinning, kernel_first, n): (Pinning, bool, u32),
    plan: &Plan,
    o: &Options,
    kvm: bool,
) -> Result<Boot, String> {
    let name = format!("vfio-compare-{}-{n}", pinning.name());
    let names = |m: &[(String, PathBuf)]| m.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let script = init(&names(&guest.vfio_modules), &names(&guest.nvme_modules), kernel_first, o.millis, plan);
    let initrd =
        vfio::initramfs_with_extra(guest, &script, "vfio-compare-initramfs.cpio", &[("bin/fio", fio)])?;
    let base = match pinning {
        Pinning::Shared => bench::taskset("0"),
        Pinning::Split => bench::taskset("1"),
        Pinning::Unpinned => Command::new("qemu-system-x86_64"),
    };
    let mut cmd = vfio::qemu_with_iommu_in(base, kvm, &guest.kernel, &initrd, 1);
    cmd.args(["-name", "compare,debug-threads=on"]);
    cmd.args(["-drive", "driver=null-co,size=1G,read-zeroes=on,if=none,id=bench0"]);
    cmd.args(["-device", "nvme,serial=bench,drive=bench0,bus=pcie.0,addr=0x4"]);
    let log = crate::qemu::work_dir().join("logs").join(format!("{name}.log"));
    let file = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    cmd.stdout(file.try_clone().map_err(|e| e.to_string())?).stderr(file);
    eprintln!(
        "xtask: {name}: pinning {}, {} first, {} measurement(s) (log: {})",
        pinning.name(),
        if kernel_first { "kernel" } else { "perf" },
        plan.iter().map(Vec::len).sum::<usize>(),
        log.display()
    );
    let mut child = cmd.spawn().map_err(|e| format!("{name}: cannot start QEMU: {e}"))?;
    let pinned = match pinning {
        Pinning::Split => bench::split(child.id()),
        _ => Ok(()),
    };
    if let Err(e) = pinned.and_then(|()| bench::check_pinning(child.id(), pinning)) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{name}: pinning: {e}"));
    }
    let runs = plan.iter().map(Vec::len).sum::<usize>() as u64;
    // Each run and its start-up, plus one that stalls (the guest gives it
    // 10 s past its time before it ends the boot).
    let timeout =
        Duration::from_secs(130) + Duration::from_millis(runs * u64::from(o.millis + WARMUP_MS + 3000));
    let status = crate::qemu::wait_for(&mut child, timeout);
    let mut text = String::new();
    let _ = fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut text));
    // A failed kernel-side measurement fails /init's verdict too; the log
    // says which it was.
    if status != Some(crate::qemu::PASS_STATUS) && status != Some(crate::qemu::FAIL_STATUS) {
        return Err(format!("{name}: QEMU exit status {status:?} (log: {})", log.display()));
    }
    let parsed = parse_log(&text, plan).map_err(|e| format!("{name}: {e} (log: {})", log.display()))?;
    if status != Some(crate::qemu::PASS_STATUS) && parsed.kernel_failed.is_empty() {
        return Err(format!("{name}: the guest failed (log: {})", log.display()));
    }
    let find = |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix)).unwrap_or("?").trim();
    let queues = text.lines().find(|l| l.contains("poll queues")).map_or("", |l| l.trim());
    let queues = format!(
        "io_poll={}, scheduler {}, {}",
        find("== io_poll "),
        find("== scheduler "),
        queues.split("] ").last().unwrap_or(queues)
    );
    for (rw, qd) in all_cells() {
        let iops =
            |side| parsed.samples.get(&(side, rw, qd)).map_or("-".into(), |s| format!("{:.0}", s.iops));
        eprintln!(
            "    {rw:<9} qd={qd:<3} perf {:>7}  io_uring {:>7}  polled {:>7} IOPS",
            iops("perf"),
            iops("io_uring"),
            iops("io_uring-polled")
        );
    }
    if let Some((side, rw, qd)) = parsed.stalled {
        eprintln!("    {side} {rw} at QD {qd} STALLED: the boot ended there");
    }
    Ok(Boot { pinning, kernel_first, log: parsed, queues })
}

/// The median and the range of `values`, formatted with `digits` decimals.
fn spread(values: &[f64], digits: usize) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match values.len() {
        0 => "—".into(),
        1 => format!("{:.digits$}", values[0]),
        _ => format!("{:.digits$} ({min:.digits$}–{max:.digits$})", bench::median(values)),
    }
}

/// The section for `boots`.
fn section(
    o: &Options,
    args: &[String],
    boots: &[Boot],
    failures: &[String],
    kvm: bool,
    fio: &Path,
) -> String {
    let mut s = String::new();
    let quoted: Vec<String> = args.iter().map(|a| bench::shell_quote(a)).collect();
    let _ = writeln!(s, "## {}\n", o.label);
    let _ = writeln!(s, "- Command: `cargo xtask {}`", quoted.join(" "));
    let _ = writeln!(s, "- Date: {}", bench::output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]));
    let _ = writeln!(s, "- Commit: {}", bench::commit(&o.out));
    let _ = writeln!(
        s,
        "- Machine: {} CPUs; {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        bench::output("qemu-system-x86_64", &["--version"]).lines().next().unwrap_or("QEMU")
    );
    let _ = writeln!(
        s,
        "- Guest: Debian's kernel, 1 vCPU ({}), 512 MiB, intel-iommu; one NVMe controller on a 1 GiB `null-co` drive. \
         Per boot and cell, 4 KiB random I/O over the whole namespace for {} s after {} ms of warm-up: \
         `perf` through VFIO; `{}` on the kernel's `nvme` driver (`poll_queues=1`) with io_uring, `--fixedbufs \
         --registerfiles`, with interrupts and with `--hipri` (polled). {} complete boot(s) per cell and pinning \
         wanted, boots alternating which side goes first; a stalled kernel-side run ends its boot and its cells \
         are measured again in a fresh boot (at most {} boots per pinning)",
        if kvm { "KVM" } else { "TCG" },
        f64::from(o.millis) / 1000.0,
        WARMUP_MS,
        fio.file_name().map_or("fio".into(), |n| n.to_string_lossy().into_owned()),
        o.reps,
        max_boots(o.reps)
    );
    let mut queues: Vec<&str> =
        boots.iter().map(|b| b.queues.as_str()).filter(|q| !q.starts_with("io_poll=?")).collect();
    queues.sort_unstable();
    queues.dedup();
    let _ = writeln!(s, "- Kernel driver's queues: {}", queues.join(" / "));
    for f in failures {
        let _ = writeln!(s, "- Failed boot (left out): {f}");
    }
    let mut pinnings: Vec<Pinning> = Vec::new();
    for b in boots {
        if !pinnings.contains(&b.pinning) {
            pinnings.push(b.pinning);
        }
    }
    for &p in &pinnings {
        let mine: Vec<&Boot> = boots.iter().filter(|b| b.pinning == p).collect();
        let stalls: Vec<String> = mine
            .iter()
            .filter_map(|b| b.log.stalled.map(|(side, rw, qd)| format!("{side} {rw} QD {qd}")))
            .collect();
        let failed: Vec<String> = mine
            .iter()
            .flat_map(|b| b.log.kernel_failed.iter().map(|(side, rw, qd)| format!("{side} {rw} QD {qd}")))
            .collect();
        let _ = writeln!(
            s,
            "- Pinning {}: {} boot(s); kernel-side stalls: {}; kernel-side errors: {}",
            p.describe(),
            mine.len(),
            if stalls.is_empty() {
                "none".to_string()
            } else {
                format!("{} ({})", stalls.len(), stalls.join(", "))
            },
            if failed.is_empty() {
                "none".to_string()
            } else {
                format!("{} ({})", failed.len(), failed.join(", "))
            },
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| pinning | workload | QD | perf IOPS | io_uring IOPS | polled IOPS | perf / io_uring | perf / polled | boots |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---|");
    let median =
        |v: Vec<f64>| if v.is_empty() { "—".to_string() } else { format!("{:.0}", bench::median(&v)) };
    for &p in &pinnings {
        let mine: Vec<&Boot> = boots.iter().filter(|b| b.pinning == p).collect();
        for cell in all_cells() {
            let iops = |side| mine.iter().filter_map(|b| Some(b.get(side, cell)?.iops)).collect::<Vec<f64>>();
            // Ratios within a boot only.
            let ratio = |side| {
                mine.iter()
                    .filter_map(|b| b.pair(side, cell))
                    .map(|(a, b)| a.iops / b.iops)
                    .collect::<Vec<f64>>()
            };
            let counts: Vec<String> = SIDES.iter().map(|&side| iops(side).len().to_string()).collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                p.name(),
                cell.0,
                cell.1,
                median(iops("perf")),
                median(iops("io_uring")),
                median(iops("io_uring-polled")),
                spread(&ratio("io_uring"), 2),
                spread(&ratio("io_uring-polled"), 2),
                counts.join(" / ")
            );
        }
    }
    let _ = writeln!(
        s,
        "\n(boots: how many boots measured perf / io_uring / polled; each ratio is taken within a boot.)"
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "QD 1 latency, microseconds, average / 99th percentile (medians over the boots):\n");
    let _ = writeln!(s, "| pinning | workload | perf | io_uring | polled |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|");
    for &p in &pinnings {
        let mine: Vec<&Boot> = boots.iter().filter(|b| b.pinning == p).collect();
        for rw in OPS {
            let cell = |side| {
                let got: Vec<Sample> = mine.iter().filter_map(|b| b.get(side, (rw, 1))).collect();
                if got.is_empty() {
                    return "—".to_string();
                }
                let avg = bench::median(&got.iter().map(|x| x.avg_us).collect::<Vec<_>>());
                let p99 = bench::median(&got.iter().map(|x| x.p99_us).collect::<Vec<_>>());
                format!("{avg:.1} / {p99:.1}")
            };
            let _ = writeln!(
                s,
                "| {} | {rw} | {} | {} | {} |",
                p.name(),
                cell("perf"),
                cell("io_uring"),
                cell("io_uring-polled")
            );
        }
    }
    let orders: Vec<String> = boots
        .iter()
        .map(|b| {
            format!("{} {}", b.pinning.name(), if b.kernel_first { "kernel first" } else { "perf first" })
        })
        .collect();
    let _ = writeln!(s, "\nBoots in order: {}.", orders.join(", "));
    s
}

/// Stalls of a kernel side in one pinning after which it is not measured
/// there again (QEMU 7.2 stalls some of them every time, TESTBED.md).
const STALL_LIMIT: usize = 2;

/// The most boots per pinning: the wanted count, and one more for each
/// stall the kernel sides may have.
fn max_boots(reps: u32) -> u32 {
    reps + 2 * STALL_LIMIT as u32
}

/// What the next boot in `pinning` measures: each kernel side's cells with
/// fewer than `reps` boots that measured it beside perf (unless that side
/// stalled [`STALL_LIMIT`] times here), and perf wherever a kernel side is
/// measured or perf itself lacks boots.
fn plan_next(boots: &[Boot], pinning: Pinning, reps: usize) -> Plan {
    let mine: Vec<&Boot> = boots.iter().filter(|b| b.pinning == pinning).collect();
    let stalls = |side| mine.iter().filter(|b| b.log.stalled.is_some_and(|(s, _, _)| s == side)).count();
    let mut plan: Plan = Default::default();
    for cell in all_cells() {
        let mut perf = mine.iter().filter(|b| b.get("perf", cell).is_some()).count() < reps;
        for (i, &side) in SIDES.iter().enumerate().skip(1) {
            if mine.iter().filter(|b| b.pair(side, cell).is_some()).count() < reps
                && stalls(side) < STALL_LIMIT
            {
                plan[i].push(cell);
                perf = true;
            }
        }
        if perf {
            plan[0].push(cell);
        }
    }
    plan
}

/// `cargo xtask vfio-compare [--reps N] [--seconds S] [--label TEXT] [--out
/// FILE] [--pinning shared|split]`: true when no boot failed and perf got
/// every cell `reps` times (a kernel side that stalls for QEMU's sake is
/// reported, not a failure).
pub fn vfio_compare(kvm: bool, args: &[String]) -> bool {
    let o = match parse(args.get(1..).unwrap_or(&[])) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("xtask vfio-compare: {e}\n\n{}", crate::USAGE);
            return false;
        }
    };
    let Some(guest) = vfio::ready_guest() else { return false };
    let fio = match fio() {
        Ok(fio) => fio,
        Err(e) => {
            eprintln!("xtask: vfio-compare: fio: {e}");
            return false;
        }
    };
    let pinnings: Vec<Pinning> = bench::pinnings()
        .into_iter()
        .filter(|p| o.pinning.as_ref().is_none_or(|want| want == p.name()))
        .collect();
    let mut boots: Vec<Boot> = Vec::new();
    let mut failures = Vec::new();
    // Rounds outermost, so that a change in host load spreads over both
    // pinnings.
    for round in 0..max_boots(o.reps) {
        for &pinning in &pinnings {
            let plan = plan_next(&boots, pinning, o.reps as usize);
            if plan.iter().all(Vec::is_empty) {
                continue;
            }
            match boot(&guest, &fio, (pinning, round % 2 == 0, round + 1), &plan, &o, kvm) {
                Ok(b) => boots.push(b),
                Err(e) => {
                    eprintln!("xtask: {e}");
                    failures.push(e);
                }
            }
        }
    }
    if boots.is_empty() {
        eprintln!("xtask: vfio-compare: no boot produced results; {} left as it was", o.out.display());
        return false;
    }
    let text = section(&o, args, &boots, &failures, kvm, &fio);
    print!("{text}");
    if let Err(e) = bench::append_section(&o.out, &text) {
        eprintln!("xtask: vfio-compare: {}: {e}", o.out.display());
        return false;
    }
    let short = pinnings.iter().any(|&p| {
        all_cells().into_iter().any(|c| {
            boots.iter().filter(|b| b.pinning == p).filter(|b| b.get("perf", c).is_some()).count()
                < o.reps as usize
        })
    });
    if short {
        eprintln!("xtask: vfio-compare: perf lacks boots in some cells (see the section)");
    }
    failures.is_empty() && !short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fio_and_perf_reports() {
        let fio = r#"{"jobs":[{"jobname":"k","error":0,
            "read":{"iops":1234.5,"lat_ns":{"mean":8000.0,"percentile":{"99.000000":12000}}},
            "write":{"iops":0.0,"lat_ns":{"mean":0.0}}}]}"#;
        let v: serde_json::Value = serde_json::from_str(fio).unwrap();
        assert_eq!(fio_sample(&v, "randread"), Some(Sample { iops: 1234.5, avg_us: 8.0, p99_us: 12.0 }));
        // No percentiles for writes: no sample, rather than a made-up one.
        assert_eq!(fio_sample(&v, "randwrite"), None);
        let failed: serde_json::Value =
            serde_json::from_str(&fio.replace("\"error\":0", "\"error\":5")).unwrap();
        assert_eq!(fio_sample(&failed, "randread"), None);
        let perf = r#"{"total":{"ios":10,"errors":0,"iops":99.0,"latency_us":{"avg":3.5,"p99":7.25}}}"#;
        let v: serde_json::Value = serde_json::from_str(perf).unwrap();
        assert_eq!(perf_sample(&v), Some(Sample { iops: 99.0, avg_us: 3.5, p99_us: 7.25 }));
        let v: serde_json::Value =
            serde_json::from_str(&perf.replace("\"errors\":0", "\"errors\":1")).unwrap();
        assert_eq!(perf_sample(&v), None);
    }

    /// A log as the guest writes it for `plan` (perf first, then the
    /// polled side, then interrupts); IOPS = depth (+0.5 for the kernel
    /// sides).
    fn log_of(plan: &Plan) -> String {
        let mut log = String::from("[  1.0] nvme nvme0: 1/0/1 default/read/poll queues\n");
        for i in [0, 2, 1] {
            let side = SIDES[i];
            for &(rw, qd) in &plan[i] {
                let _ = writeln!(log, "== {side} rw={rw} qd={qd}");
                let dir = if rw == "randread" { "read" } else { "write" };
                if side == "perf" {
                    let _ = writeln!(
                        log,
                        r#"{{"total":{{"errors":0,"iops":{qd}.0,"latency_us":{{"avg":1.0,"p99":2.0}}}}}}"#
                    );
                } else {
                    let _ = writeln!(
                        log,
                        r#"{{"jobs":[{{"error":0,"{dir}":{{"iops":{qd}.5,"lat_ns":{{"mean":1000.0,"percentile":{{"99.000000":3000}}}}}}}}]}}"#
                    );
                }
                let _ = writeln!(log, "== end");
            }
        }
        log
    }

    fn full() -> Plan {
        [all_cells(), all_cells(), all_cells()]
    }

    fn boot_of(log: Log) -> Boot {
        Boot { pinning: Pinning::Shared, kernel_first: false, log, queues: String::new() }
    }

    #[test]
    fn a_log_missing_one_measurement_is_refused() {
        let plan = full();
        let log = log_of(&plan);
        let all = parse_log(&log, &plan).unwrap();
        assert_eq!(all.samples.len(), SIDES.len() * OPS.len() * DEPTHS.len());
        assert_eq!(all.samples[&("io_uring-polled", "randwrite", 32)].iops, 32.5);
        assert_eq!(all.samples[&("perf", "randread", 8)].iops, 8.0);
        assert!(all.stalled.is_none() && all.kernel_failed.is_empty());
        let cut = log.replace("== io_uring rw=randwrite qd=128", "== io_uring rw=randwrite qd=64");
        assert!(parse_log(&cut, &plan).is_err());
        let cut = log.replace("== io_uring rw=randwrite qd=128", "== skipped");
        assert!(parse_log(&cut, &plan).unwrap_err().contains("io_uring randwrite at QD 128"));
        // A perf run that failed fails the boot.
        let failed = log.replacen("\"iops\":1.0", "\"iops\":0.0", 1);
        assert!(parse_log(&failed, &plan).is_err());
    }

    #[test]
    fn a_stall_ends_the_boot_and_leaves_its_cells_unmeasured() {
        let cells = vec![("randread", 1), ("randread", 32)];
        let plan: Plan = [cells.clone(), cells.clone(), cells];
        let log = log_of(&plan);
        // The interrupt side stalls at QD 32: what came before counts.
        let at = log.find("== io_uring rw=randread qd=32").unwrap();
        let stalled = format!(
            "{}== io_uring rw=randread qd=32\n[ 40.1] nvme nvme0: I/O 5 QID 1 timeout\n== stalled\n",
            &log[..at]
        );
        let parsed = parse_log(&stalled, &plan).unwrap();
        assert_eq!(parsed.stalled, Some(("io_uring", "randread", 32)));
        assert_eq!(parsed.samples.len(), 5);
        let boot = boot_of(parsed);
        assert!(boot.pair("io_uring", ("randread", 32)).is_none());
        assert!(boot.pair("io_uring-polled", ("randread", 32)).is_some());
        // perf stalling is not the device model's doing: the boot fails.
        assert!(parse_log("== perf rw=randread qd=1\n== stalled\n", &plan).is_err());
        // A kernel line inside a report is left out.
        let noisy = log.replacen(
            "{\"jobs\":[{\"error\":0,\"read\":{\"iops\":32.5",
            "{\"jobs\":[{\"error\":0,\n[   38.150605] nvme nvme0: I/O 256 QID 1 timeout, aborting\n\"read\":{\"iops\":32.5",
            1,
        );
        assert_eq!(parse_log(&noisy, &plan).unwrap().samples.len(), 6);
        assert!(is_kernel_line("[    2.045822] nvme nvme0: 1/0/1 default/read/poll queues"));
        assert!(!is_kernel_line("[1, 2]") && !is_kernel_line("\"read\" : {"));
        // A kernel-side run that failed is left out, not fatal.
        let err = log.replacen(
            "{\"jobs\":[{\"error\":0,\"read\":{\"iops\":32.5",
            "FAILED: /bin/fio ...\nfio: io_u error\n{\"jobs\":[{\"error\":5,\"read\":{\"iops\":32.5",
            1,
        );
        let parsed = parse_log(&err, &plan).unwrap();
        assert_eq!(parsed.kernel_failed, vec![("io_uring-polled", "randread", 32)]);
        let boot = boot_of(parsed);
        assert!(boot.pair("io_uring-polled", ("randread", 32)).is_none());
        assert!(boot.pair("io_uring", ("randread", 32)).is_some());
    }

    #[test]
    fn stalled_cells_are_planned_again_until_the_side_gives_up() {
        let plan = full();
        assert_eq!(plan_next(&[], Pinning::Shared, 2), plan);
        let good = || boot_of(parse_log(&log_of(&plan), &plan).unwrap());
        // The interrupt side stalled at randread QD 8 in the first boot:
        // everything from there on is planned again, perf beside it.
        let log = log_of(&plan);
        let at = log.find("== io_uring rw=randread qd=8").unwrap();
        let stalled = || {
            let text = format!("{}== io_uring rw=randread qd=8\n== stalled\n", &log[..at]);
            boot_of(parse_log(&text, &plan).unwrap())
        };
        let boots = vec![stalled(), good()];
        let next = plan_next(&boots, Pinning::Shared, 2);
        let rest: Vec<Cell> = all_cells().into_iter().skip(1).collect();
        assert_eq!(next, [rest.clone(), rest, vec![]]);
        // Other pinnings are planned apart.
        assert_eq!(plan_next(&boots, Pinning::Split, 2), plan);
        // After STALL_LIMIT stalls the interrupt side is left alone; perf is
        // measured only where it lacks boots itself.
        let boots = vec![stalled(), stalled(), good()];
        assert_eq!(STALL_LIMIT, 2);
        assert_eq!(plan_next(&boots, Pinning::Shared, 2), [vec![], vec![], vec![]]);
        let boots = vec![stalled(), stalled()];
        assert_eq!(plan_next(&boots, Pinning::Shared, 2), [vec![], vec![], vec![]]);
        assert_eq!(plan_next(&boots, Pinning::Shared, 3), [all_cells(), vec![], all_cells()]);
    }
}
