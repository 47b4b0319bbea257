//! `perf`, after spdk_nvme_perf: a fixed-depth workload on one namespace of
//! an NVMe controller on VFIO, from one or more threads (one queue pair
//! each, optionally pinned to cores), reporting IOPS, MiB/s and latency
//! (min, average, max and percentiles) per thread and in total.
//!
//! Write workloads overwrite the blocks they touch: use a scratch device.

use clap::{Parser, ValueEnum};
use hal_linux_vfio::{VfioHal, VfioOptions};
use hdrhistogram::Histogram;
use nvme_nostd::{
    Controller, ControllerOptions, DmaBuffer, IoQueuePair, Namespace, PollLimit, QpairOptions, Registered,
};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The most requests one queue pair keeps in flight.
const MAX_DEPTH: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    Read,
    Write,
    Randread,
    Randwrite,
    /// Sequential, reads and writes mixed by --rwmixread.
    Rw,
    /// Random, reads and writes mixed by --rwmixread.
    Randrw,
}

impl Workload {
    fn random(self) -> bool {
        matches!(self, Workload::Randread | Workload::Randwrite | Workload::Randrw)
    }

    /// Percent of reads.
    fn reads(self, mix: u8) -> u8 {
        match self {
            Workload::Read | Workload::Randread => 100,
            Workload::Write | Workload::Randwrite => 0,
            Workload::Rw | Workload::Randrw => mix.min(100),
        }
    }
}

/// A fixed-depth I/O workload on an NVMe namespace through VFIO (after
/// spdk_nvme_perf). Write workloads destroy the data they touch.
#[derive(Parser, Clone)]
#[command(version)]
struct Args {
    /// The controller's PCI address (default: the first NVMe controller
    /// bound to vfio-pci).
    #[arg(long, short)]
    device: Option<String>,
    /// The namespace (default: the first active one).
    #[arg(long, short)]
    namespace: Option<u32>,
    /// Requests in flight per queue pair (1 to 256).
    #[arg(long, short = 'q', default_value_t = 32)]
    queue_depth: usize,
    /// Bytes per I/O, a multiple of the block size.
    #[arg(long, short = 'o', default_value_t = 4096)]
    io_size: usize,
    /// The access pattern.
    #[arg(long, short = 'w', value_enum, default_value_t = Workload::Randread)]
    workload: Workload,
    /// Percent of reads in the rw and randrw workloads.
    #[arg(long, short = 'M', default_value_t = 50)]
    rwmixread: u8,
    /// Seconds to measure.
    #[arg(long, short = 't', default_value_t = 10.0)]
    time: f64,
    /// Seconds to run before measuring.
    #[arg(long, short = 'a', default_value_t = 0.0)]
    warmup: f64,
    /// Threads, each with its own queue pair.
    #[arg(long, short = 'j', default_value_t = 1)]
    threads: usize,
    /// The cores to pin the threads to, in order (e.g. 0,1).
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
    /// Only the first this many blocks of the namespace.
    #[arg(long)]
    blocks: Option<u64>,
    /// Prints the results as JSON on standard output (progress still goes
    /// to standard error).
    #[arg(long)]
    json: bool,
}

/// One thread's results.
struct Outcome {
    core: Option<usize>,
    ios: u64,
    errors: u64,
    histogram: Histogram<u64>,
}

/// What the threads share.
struct Shared {
    /// Completions so far (for the progress line), all threads.
    done: AtomicU64,
    /// Set when the warm-up is over: counts start from zero.
    measuring: AtomicBool,
    /// Set when the time is up.
    stop: AtomicBool,
    /// Threads with their queue pair and buffers ready.
    ready: std::sync::atomic::AtomicUsize,
    /// Set once every thread is ready: the clock starts.
    go: AtomicBool,
}

/// Buffers in the back-end's DMA memory, registered with the controller
/// (translated once, not per I/O), as SPDK's perf uses its own memory.
type Buf<'a> = Registered<DmaBuffer<'a, VfioHal>>;
type Qp<'a> = IoQueuePair<'a, VfioHal, Buf<'a>, u64, MAX_DEPTH>;

/// A xorshift generator per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Where a thread's next I/O goes and whether it reads.
struct Pattern {
    workload: Workload,
    reads: u8,
    per_io: u64,
    slots: u64,
    cursor: u64,
    rng: Rng,
}

impl Pattern {
    fn next(&mut self) -> (u64, bool) {
        let slot = if self.workload.random() {
            self.rng.next() % self.slots
        } else {
            let s = self.cursor;
            self.cursor = (self.cursor + 1) % self.slots;
            s
        };
        let read = (self.rng.next() % 100) < u64::from(self.reads);
        (slot * self.per_io, read)
    }
}

/// Sends the pattern's next I/O with `buf`; the buffer back on a refusal.
fn submit<'a>(
    qp: &mut Qp<'a>,
    ns: &Namespace,
    pattern: &mut Pattern,
    buf: Buf<'a>,
    at: u64,
) -> Result<nvme_nostd::Cid, (nvme_nostd::Error, Buf<'a>)> {
    let (lba, read) = pattern.next();
    let blocks = pattern.per_io as u32;
    if read { qp.read(ns, lba, blocks, buf, at) } else { qp.write(ns, lba, blocks, buf, at) }
        .map_err(|e| (e.error, e.buffer))
}

fn worker(
    args: &Args,
    t: usize,
    ctrlr: &Controller<VfioHal>,
    ns: &Namespace,
    shared: &Shared,
) -> Result<Outcome, String> {
    let core = args.cores.get(t).copied();
    if let Some(c) = core {
        let mut set = rustix::thread::CpuSet::new();
        set.set(c);
        rustix::thread::sched_setaffinity(None, &set)
            .map_err(|e| format!("thread {t}: pinning to core {c}: {e}"))?;
    }
    let bs = ns.block_size() as u64;
    let per_io = args.io_size as u64 / bs;
    let range = args.blocks.unwrap_or(ns.blocks()).min(ns.blocks());
    let slots = range / per_io;
    let mut pattern = Pattern {
        workload: args.workload,
        reads: args.workload.reads(args.rwmixread),
        per_io,
        slots,
        cursor: slots * t as u64 / args.threads as u64,
        rng: Rng(0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d)),
    };
    let options = QpairOptions::default()
        .with_entries(args.queue_depth as u16 + 1)
        .with_max_transfer_bytes(args.io_size.max(4096));
    let mut qp: Qp<'_> =
        ctrlr.create_io_qpair(options).map_err(|e| format!("thread {t}: queue pair: {e}"))?;
    let base = Instant::now();
    let now_ns = || base.elapsed().as_nanos() as u64;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())?;
    let (mut ios, mut errors) = (0u64, 0u64);
    let mut measuring = false;
    // Buffers that could not go out yet (a full queue): sent on the next pass.
    let mut idle: Vec<Buf<'_>> = Vec::new();
    for _ in 0..args.queue_depth {
        let buf =
            DmaBuffer::new(ctrlr.hal(), args.io_size).map_err(|e| format!("thread {t}: DMA memory: {e}"))?;
        idle.push(ctrlr.register(buf).map_err(|(e, _)| format!("thread {t}: register: {e}"))?);
    }
    // Everyone starts together, once every queue pair exists.
    shared.ready.fetch_add(1, Ordering::SeqCst);
    while !shared.go.load(Ordering::SeqCst) {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(Outcome { core, ios, errors, histogram });
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    loop {
        let stopping = shared.stop.load(Ordering::Relaxed);
        if !measuring && shared.measuring.load(Ordering::Relaxed) {
            // The warm-up is over: what came before does not count.
            measuring = true;
            histogram.reset();
            ios = 0;
            errors = 0;
        }
        if !stopping {
            while let Some(buf) = idle.pop() {
                if let Err((e, buf)) = submit(&mut qp, ns, &mut pattern, buf, now_ns()) {
                    idle.push(buf);
                    if !matches!(e, nvme_nostd::Error::QueueFull) {
                        return Err(format!("thread {t}: submission refused: {e}"));
                    }
                    break;
                }
            }
        } else if qp.in_flight() == 0 {
            break;
        }
        let mut done = 0;
        qp.poll(PollLimit::All, |resubmit, c| {
            let end = base.elapsed().as_nanos() as u64;
            done += 1;
            if c.result().is_ok() {
                ios += 1;
                // Beyond the histogram's 60 s: counted at its top.
                let _ = histogram.record(end.saturating_sub(c.context).clamp(1, 60_000_000_000));
            } else {
                errors += 1;
            }
            let Some(buf) = c.buffer else { return };
            if stopping {
                idle.push(buf);
                return;
            }
            let (lba, read) = pattern.next();
            let sent = if read {
                resubmit.read(ns, lba, per_io as u32, buf, end)
            } else {
                resubmit.write(ns, lba, per_io as u32, buf, end)
            };
            if let Err(e) = sent {
                idle.push(e.buffer);
            }
        });
        if done > 0 {
            shared.done.fetch_add(done, Ordering::Relaxed);
        }
    }
    Ok(Outcome { core, ios, errors, histogram })
}

/// Latency figures in microseconds.
fn latency(h: &Histogram<u64>) -> serde_json::Value {
    let us = |ns: u64| ns as f64 / 1000.0;
    if h.is_empty() {
        return serde_json::json!(null);
    }
    serde_json::json!({
        "min": us(h.min()),
        "avg": h.mean() / 1000.0,
        "max": us(h.max()),
        "p50": us(h.value_at_quantile(0.50)),
        "p90": us(h.value_at_quantile(0.90)),
        "p99": us(h.value_at_quantile(0.99)),
        "p99.9": us(h.value_at_quantile(0.999)),
        "p99.99": us(h.value_at_quantile(0.9999)),
    })
}

fn check(args: &Args, ns: &Namespace) -> Result<(), String> {
    let bs = ns.block_size() as usize;
    if args.queue_depth == 0 || args.queue_depth > MAX_DEPTH {
        return Err(format!("a queue depth of {} (1 to {MAX_DEPTH})", args.queue_depth));
    }
    if args.io_size == 0 || !args.io_size.is_multiple_of(bs) {
        return Err(format!(
            "an I/O size of {} bytes is not a multiple of the block size ({bs})",
            args.io_size
        ));
    }
    let range = args.blocks.unwrap_or(ns.blocks()).min(ns.blocks());
    if range < (args.io_size / bs) as u64 {
        return Err(format!("{range} blocks cannot hold one {}-byte I/O", args.io_size));
    }
    if args.threads == 0
        || !args.time.is_finite()
        || args.time <= 0.0
        || !args.warmup.is_finite()
        || args.warmup < 0.0
    {
        return Err("threads, --time and --warmup must be positive".into());
    }
    Ok(())
}

fn run(args: &Args, address: &str) -> Result<(), String> {
    let hal = VfioHal::open(address, VfioOptions::default()).map_err(|e| e.to_string())?;
    let options = ControllerOptions::default().with_io_queues(args.threads.min(u16::MAX as usize) as u16);
    let ctrlr = Controller::new(hal, options).map_err(|e| format!("attach: {e}"))?;
    let nsid = match args.namespace {
        Some(n) => n,
        None => ctrlr
            .namespace_ids()
            .next()
            .ok_or("the controller has no active namespace")?
            .map_err(|e| format!("active namespaces: {e}"))?,
    };
    let ns = ctrlr.namespace(nsid).map_err(|e| format!("namespace {nsid}: {e}"))?;
    check(args, &ns)?;
    if ctrlr.io_queues() < args.threads as u16 {
        return Err(format!(
            "{} threads, but the controller granted {} I/O queues",
            args.threads,
            ctrlr.io_queues()
        ));
    }
    let shared = Shared {
        done: AtomicU64::new(0),
        measuring: AtomicBool::new(args.warmup == 0.0),
        stop: AtomicBool::new(false),
        ready: std::sync::atomic::AtomicUsize::new(0),
        go: AtomicBool::new(false),
    };
    let label = format!("PCIE ({address}) NSID {nsid}");
    if !args.json {
        println!(
            "Attached to NVMe Controller at {address}; {} workload, {} bytes, queue depth {}",
            format!("{:?}", args.workload).to_lowercase(),
            args.io_size,
            args.queue_depth
        );
    }
    let mut began = Instant::now();
    let mut measured_from = began;
    let mut stopped_at = began;
    let results: Vec<Result<Outcome, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.threads)
            .map(|t| {
                let (ctrlr, ns, shared) = (&ctrlr, &ns, &shared);
                s.spawn(move || worker(args, t, ctrlr, ns, shared))
            })
            .collect();
        // The clock starts when every thread is ready (or one gave up).
        while shared.ready.load(Ordering::SeqCst) < args.threads && !handles.iter().any(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(1));
        }
        began = Instant::now();
        measured_from = began;
        shared.go.store(true, Ordering::SeqCst);
        // The clock: warm-up, then the measurement, with a progress line
        // each second.
        let warmup = Duration::from_secs_f64(args.warmup);
        let total = warmup + Duration::from_secs_f64(args.time);
        let mut last = (Instant::now(), 0u64);
        let mut second = 0;
        // A thread that ends before the stop failed: stop the others.
        while began.elapsed() < total && !handles.iter().any(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(20));
            if !shared.measuring.load(Ordering::Relaxed) && began.elapsed() >= warmup {
                measured_from = Instant::now();
                shared.measuring.store(true, Ordering::Relaxed);
            }
            if last.0.elapsed() >= Duration::from_secs(1) {
                second += 1;
                let done = shared.done.load(Ordering::Relaxed);
                let iops = (done - last.1) as f64 / last.0.elapsed().as_secs_f64();
                let phase = if began.elapsed() < warmup { " (warm-up)" } else { "" };
                eprintln!(
                    "[{second:>4} s] {iops:>10.0} IOPS {:>9.2} MiB/s{phase}",
                    iops * args.io_size as f64 / (1 << 20) as f64
                );
                last = (Instant::now(), done);
            }
        }
        stopped_at = Instant::now();
        shared.stop.store(true, Ordering::Relaxed);
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a thread panicked".into()))).collect()
    });
    // The measured window: from the end of the warm-up to the stop (what
    // was in flight then still completes, and counts).
    let seconds = stopped_at.duration_since(measured_from).as_secs_f64().max(1e-9);
    if let Some(advice) = ctrlr.hal().hugepage_advice() {
        eprintln!("perf: {advice}");
    }
    let outcomes = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())?;
    let (mut ios, mut errors) = (0, 0);
    for o in &outcomes {
        total.add(&o.histogram).map_err(|e| e.to_string())?;
        ios += o.ios;
        errors += o.errors;
    }
    let mib = |n: u64| n as f64 * args.io_size as f64 / (1 << 20) as f64 / seconds;
    if args.json {
        let threads: Vec<serde_json::Value> = outcomes
            .iter()
            .enumerate()
            .map(|(t, o)| {
                serde_json::json!({
                    "thread": t, "core": o.core, "ios": o.ios, "errors": o.errors,
                    "iops": o.ios as f64 / seconds, "mib_s": mib(o.ios), "latency_us": latency(&o.histogram),
                })
            })
            .collect();
        let report = serde_json::json!({
            "device": address, "nsid": nsid, "workload": format!("{:?}", args.workload).to_lowercase(),
            "rwmixread": args.workload.reads(args.rwmixread), "io_size": args.io_size,
            "queue_depth": args.queue_depth, "seconds": seconds, "warmup": args.warmup,
            "threads": threads,
            "total": { "ios": ios, "errors": errors, "iops": ios as f64 / seconds, "mib_s": mib(ios), "latency_us": latency(&total) },
        });
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else {
        let row = |name: &str, n: u64, h: &Histogram<u64>| {
            let us = |ns: u64| ns as f64 / 1000.0;
            println!(
                "{name:<44}: {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
                n as f64 / seconds,
                mib(n),
                h.mean() / 1000.0,
                us(h.min()),
                us(h.max())
            );
        };
        println!("========================================================");
        println!("{:>90}", "Latency(us)");
        println!(
            "{:<44}: {:>10} {:>10} {:>10} {:>10} {:>10}",
            "Device Information", "IOPS", "MiB/s", "Average", "min", "max"
        );
        for (t, o) in outcomes.iter().enumerate() {
            let core = o.core.map(|c| format!(" core {c}")).unwrap_or_default();
            row(&format!("{label} thread {t}{core}"), o.ios, &o.histogram);
        }
        println!("========================================================");
        row("Total", ios, &total);
        let p = |q: f64| total.value_at_quantile(q) as f64 / 1000.0;
        println!();
        println!(
            "Latency percentiles (us): 50%: {:.2}  90%: {:.2}  99%: {:.2}  99.9%: {:.2}  99.99%: {:.2}",
            p(0.5),
            p(0.9),
            p(0.99),
            p(0.999),
            p(0.9999)
        );
        if errors > 0 {
            println!("{errors} I/Os completed with an error");
        }
    }
    if errors > 0 {
        return Err(format!("{errors} I/Os completed with an error"));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    hal_linux_vfio::tool::run("perf", args.device.clone(), |address| run(&args, address))
}
