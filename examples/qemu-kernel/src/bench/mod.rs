//! Bench mode: 4 KiB random reads (and writes) on namespace 1 of the first controller, at
//! fixed queue depths, through the driver ([`driver`]) and through a raw
//! register loop that uses no driver code ([`raw`]), in the same boot.
//!
//! Selected by the word `bench` on the kernel command line, with options
//! (`key=value`, all optional):
//! - `backing=LABEL`: echoed in the result lines (the kernel cannot tell what
//!   backs the drive); default `unknown`;
//! - `seconds=S`: measured time per measurement, decimal seconds (default 2);
//! - `warmup=S`: time before the measurement starts, decimal (default 0.5);
//! - `qd=1,32`: the queue depths, 1 to [`MAX_QD`], in this order;
//! - `first=raw|driver`: which mode runs first at the first queue depth; the
//!   order alternates at each further depth (default `raw`);
//! - `seed=N`: the PRNG seed of the LBA sequence, the same for both modes;
//! - `rw=read,write`: the operations, each at every depth (default `read`);
//! - `shadow=on|off`: the driver with shadow doorbells (default `off`).
//!
//! Each measurement prints one line,
//! `bench result backing=file rw=read qd=32 mode=driver ios=123456 seconds=2.000 iops=61728 bringup_us=2345`,
//! where `bringup_us` is the time from the start of bring-up (the driver's
//! attach, the raw loop's controller disable) to the first completed I/O;
//! at QD 1 the line ends with ` lat_avg_ns=N lat_p99_ns=N`, the latency from
//! submission to completion of the measured I/Os;
//! or `bench FAILED backing=... qd=... mode=...: reason`, and the boot ends
//! with `bench done: N measurements, N failed`.

mod driver;
mod raw;

use core::fmt::Write;
use core::time::Duration;
use hal_baremetal::pci::MemoryBar;
use hal_baremetal::{DmaPool, TscClock};
use nvme_conformance::{reason, Reason};
use pci_types::PciAddress;

/// The deepest queue depth either mode runs (request slots of the driver's
/// queue pair, buffers of the raw loop).
pub const MAX_QD: usize = 128;
/// Bytes per read.
pub const IO_BYTES: usize = 4096;
/// A measurement with commands in flight and no completion for this long has
/// failed (the driver's own I/O timeout is longer; this keeps a hung device
/// from looking like a slow one).
const STALL: Duration = Duration::from_secs(10);
/// Most queue depths on one command line.
const MAX_DEPTHS: usize = 8;

/// True when the kernel command line asks for bench mode.
pub fn requested(cmdline: &str) -> bool {
    cmdline.split_ascii_whitespace().any(|w| w == "bench")
}

/// The bench options, from the kernel command line.
pub struct Plan {
    backing: &'static str,
    measure: Duration,
    warmup: Duration,
    depths: heapless::Vec<usize, MAX_DEPTHS>,
    raw_first: bool,
    seed: u64,
    /// The driver side uses shadow doorbells (`shadow=on`).
    pub(crate) shadow: bool,
    /// The operations: false reads, true writes (`rw=`).
    ops: heapless::Vec<bool, 2>,
}

impl Plan {
    /// Parses the words after `bench`; an unknown word or a bad value is an
    /// error, so a typo never runs a different benchmark than asked for.
    pub fn parse(cmdline: &'static str) -> Result<Plan, Reason> {
        let mut plan = Plan {
            backing: "unknown",
            measure: Duration::from_secs(2),
            warmup: Duration::from_millis(500),
            depths: heapless::Vec::new(),
            raw_first: true,
            seed: 0x6e76_6d65_2d62_656e,
            shadow: false,
            ops: heapless::Vec::new(),
        };
        let _ = plan.depths.extend_from_slice(&[1, 32]);
        let _ = plan.ops.push(false);
        for word in cmdline.split_ascii_whitespace().filter(|w| *w != "bench") {
            let bad = || reason!("bad bench option \"{word}\"");
            let (key, value) = word.split_once('=').ok_or_else(bad)?;
            match key {
                "backing" => plan.backing = value,
                "seconds" => plan.measure = parse_seconds(value).filter(|d| !d.is_zero()).ok_or_else(bad)?,
                "warmup" => plan.warmup = parse_seconds(value).ok_or_else(bad)?,
                "qd" => plan.depths = parse_depths(value).ok_or_else(bad)?,
                "first" if value == "raw" || value == "driver" => plan.raw_first = value == "raw",
                "seed" => plan.seed = value.parse().map_err(|_| bad())?,
                "shadow" if value == "on" || value == "off" => plan.shadow = value == "on",
                "rw" => {
                    plan.ops.clear();
                    for op in value.split(',') {
                        let write = match op {
                            "read" => false,
                            "write" => true,
                            _ => return Err(bad()),
                        };
                        plan.ops.push(write).map_err(|_| bad())?;
                    }
                }
                _ => return Err(bad()),
            }
        }
        Ok(plan)
    }
}

/// Decimal seconds with at most three decimals ("2", "0.5", "1.25").
fn parse_seconds(s: &str) -> Option<Duration> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || frac.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let frac: u64 =
        if frac.is_empty() { 0 } else { frac.parse::<u64>().ok()? * 10u64.pow(3 - frac.len() as u32) };
    Some(Duration::from_millis(whole.checked_mul(1000)?.checked_add(frac)?))
}

/// A comma-separated list of queue depths, each 1 to [`MAX_QD`].
fn parse_depths(s: &str) -> Option<heapless::Vec<usize, MAX_DEPTHS>> {
    let mut depths = heapless::Vec::new();
    for part in s.split(',') {
        let qd: usize = part.parse().ok()?;
        if !(1..=MAX_QD).contains(&qd) {
            return None;
        }
        depths.push(qd).ok()?;
    }
    Some(depths)
}

/// The device the bench runs on, and what the kernel lends it. Each
/// measurement claims the function for itself (the driver through its HAL,
/// the raw loop directly), so only one of them drives it at a time.
#[derive(Clone, Copy)]
pub struct Target {
    /// The controller's PCI function.
    pub function: PciAddress,
    /// BAR0 of the controller.
    pub bar0: MemoryBar,
    /// DMA memory for the raw loop's queues and buffers.
    pub pool: &'static DmaPool,
    /// The calibrated clock.
    pub clock: &'static TscClock,
}

/// Who issues the reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Driver,
    Raw,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Driver => "driver",
            Mode::Raw => "raw",
        }
    }
}

/// Runs every measurement of `plan` on `target`, printing one line each.
/// True when all of them produced a result.
pub fn run(plan: &Plan, target: Target, out: &mut impl Write) -> bool {
    let _ = writeln!(
        out,
        "bench: backing={} seconds={} warmup={} qd={} first={} seed={} shadow={}",
        plan.backing,
        Secs(plan.measure),
        Secs(plan.warmup),
        Depths(&plan.depths),
        if plan.raw_first { "raw" } else { "driver" },
        plan.seed,
        if plan.shadow { "on" } else { "off" }
    );
    let mut failed = 0;
    let mut done = 0;
    for &write in &plan.ops {
        let rw = if write { "write" } else { "read" };
        for (i, &qd) in plan.depths.iter().enumerate() {
            // Alternate the order so that neither mode always runs on a device
            // (and a host page cache) the other one has just warmed.
            let order = if plan.raw_first == (i % 2 == 0) {
                [Mode::Raw, Mode::Driver]
            } else {
                [Mode::Driver, Mode::Raw]
            };
            for mode in order {
                let result = match mode {
                    Mode::Driver => driver::measure(target, qd, write, plan),
                    Mode::Raw => raw::measure(target, qd, write, plan),
                };
                done += 1;
                let (backing, name) = (plan.backing, mode.name());
                match result {
                    Ok(c) => {
                        let _ = write!(
                        out,
                        "bench result backing={backing} rw={rw} qd={qd} mode={name} ios={} seconds={} iops={} bringup_us={}",
                        c.ios,
                        Secs(c.elapsed),
                        c.iops(),
                        c.bringup.as_micros()
                    );
                        if let Some(l) = c.latency {
                            let _ = write!(out, " lat_avg_ns={} lat_p99_ns={}", l.avg_ns, l.p99_ns);
                        }
                        let _ = writeln!(out);
                    }
                    Err(why) => {
                        failed += 1;
                        let _ = writeln!(
                            out,
                            "bench FAILED backing={backing} rw={rw} qd={qd} mode={name}: {why}"
                        );
                    }
                }
            }
        }
    }
    let _ = writeln!(out, "bench done: {done} measurements, {failed} failed");
    failed == 0 && done > 0
}

/// A duration printed as seconds with three decimals.
struct Secs(Duration);

impl core::fmt::Display for Secs {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let ms = self.0.as_millis();
        write!(f, "{}.{:03}", ms / 1000, ms % 1000)
    }
}

/// Queue depths printed as on the command line ("1,32").
struct Depths<'a>(&'a [usize]);

impl core::fmt::Display for Depths<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, qd) in self.0.iter().enumerate() {
            write!(f, "{}{qd}", if i == 0 { "" } else { "," })?;
        }
        Ok(())
    }
}

/// Reads completed in a measured interval.
#[derive(Clone, Copy)]
pub struct Count {
    ios: u64,
    elapsed: Duration,
    /// From the start of bring-up to the first completed I/O.
    bringup: Duration,
    /// At QD 1: the latency of the I/Os of the measured interval, from the
    /// submission call to the completion's delivery.
    latency: Option<LatencySummary>,
}

/// Average and 99th percentile of a [`Latency`] histogram, in nanoseconds.
#[derive(Clone, Copy)]
pub struct LatencySummary {
    avg_ns: u64,
    p99_ns: u64,
}

/// A histogram of latencies in nanoseconds: exact below 32 ns, then 16
/// buckets per power of two (6 % resolution), on the stack (4 KiB).
pub struct Latency {
    counts: [u32; 1024],
    total_ns: u128,
    n: u64,
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        Latency { counts: [0; 1024], total_ns: 0, n: 0 }
    }

    fn bucket(ns: u64) -> usize {
        if ns < 32 {
            return ns as usize;
        }
        let e = 63 - ns.leading_zeros() as usize - 4;
        ((e + 1) * 16 + ((ns >> e) & 15) as usize).min(1023)
    }

    /// The smallest latency bucket `i` holds.
    fn lower_bound(i: usize) -> u64 {
        if i < 32 {
            i as u64
        } else {
            (16 + (i % 16) as u64) << (i / 16 - 1)
        }
    }

    /// Counts one I/O that took `ticks` of `clock`.
    pub fn record_ticks(&mut self, clock: &TscClock, ticks: u64) {
        let ns = hal_traits::ticks_to_duration(ticks, clock.ticks_per_second()).as_nanos();
        self.record(u64::try_from(ns).unwrap_or(u64::MAX));
    }

    /// Counts one I/O that took `ns`.
    pub fn record(&mut self, ns: u64) {
        let i = Self::bucket(ns);
        self.counts[i] = self.counts[i].saturating_add(1);
        self.total_ns += u128::from(ns);
        self.n += 1;
    }

    /// Average and 99th percentile (the upper end of the bucket that holds
    /// it), if anything was recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.n == 0 {
            return None;
        }
        let wanted = self.n - self.n / 100;
        let mut seen = 0u64;
        let mut p99 = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= wanted {
                p99 = Self::lower_bound(i + 1);
                break;
            }
        }
        Some(LatencySummary { avg_ns: (self.total_ns / u128::from(self.n)) as u64, p99_ns: p99 })
    }
}

impl Count {
    fn iops(&self) -> u64 {
        let ns = self.elapsed.as_nanos().max(1);
        (self.ios as u128 * 1_000_000_000 / ns) as u64
    }
}

/// Random 4 KiB-aligned start blocks over a namespace (splitmix64, so both
/// modes read the same sequence from the same seed).
pub struct Lbas {
    state: u64,
    /// Number of 4 KiB-aligned positions.
    slots: u64,
    blocks_per_io: u32,
}

impl Lbas {
    /// The sequence for a namespace of `blocks` blocks of `block_size` bytes.
    pub fn new(seed: u64, blocks: u64, block_size: u32) -> Result<Self, Reason> {
        if block_size == 0 || block_size as usize > IO_BYTES || !IO_BYTES.is_multiple_of(block_size as usize)
        {
            return Err(reason!("block size {block_size} does not divide {IO_BYTES}"));
        }
        let blocks_per_io = (IO_BYTES / block_size as usize) as u32;
        let slots = blocks / blocks_per_io as u64;
        if slots == 0 {
            return Err(reason!("namespace of {blocks} blocks is smaller than one read"));
        }
        Ok(Lbas { state: seed, slots, blocks_per_io })
    }

    /// Blocks per 4 KiB read.
    pub fn blocks_per_io(&self) -> u32 {
        self.blocks_per_io
    }

    /// The next start block.
    pub fn next_lba(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // Multiply-shift maps z onto 0..slots without a division.
        let slot = ((z as u128 * self.slots as u128) >> 64) as u64;
        slot * self.blocks_per_io as u64
    }
}

/// What the I/O loop should do after a pass.
pub enum Tick {
    /// Keep going.
    Run,
    /// The measured interval is over.
    Done(Count),
    /// Nothing completed for [`STALL`].
    Stalled,
}

/// Warm-up, then the measured interval; both loops call [`Meter::tick`] once
/// per pass with their running count of completed reads.
pub struct Meter {
    clock: &'static TscClock,
    /// When bring-up began.
    started: Duration,
    /// When the first I/O completed.
    first: Option<Duration>,
    warmup_end: Duration,
    measure: Duration,
    /// Completions and time when the measured interval began.
    start: Option<(u64, Duration)>,
    last_count: u64,
    last_progress: Duration,
}

impl Meter {
    /// A meter whose warm-up starts now, for a loop whose bring-up began
    /// at `started` (by `clock`).
    pub fn new(clock: &'static TscClock, plan: &Plan, started: Duration) -> Self {
        let now = clock.now();
        Meter {
            clock,
            started,
            first: None,
            warmup_end: now + plan.warmup,
            measure: plan.measure,
            start: None,
            last_count: 0,
            last_progress: now,
        }
    }

    /// True once the warm-up is over (latencies are recorded from then on).
    pub fn measuring(&self) -> bool {
        self.start.is_some()
    }

    /// Looks at the clock after a pass that brought the total to `completed`.
    pub fn tick(&mut self, completed: u64) -> Tick {
        let now = self.clock.now();
        if completed > 0 && self.first.is_none() {
            self.first = Some(now);
        }
        if completed != self.last_count {
            self.last_count = completed;
            self.last_progress = now;
        } else if now.saturating_sub(self.last_progress) > STALL {
            return Tick::Stalled;
        }
        match self.start {
            None if now >= self.warmup_end => self.start = Some((completed, now)),
            None => {}
            Some((count, at)) if now.saturating_sub(at) >= self.measure => {
                let bringup = self.first.unwrap_or(now).saturating_sub(self.started);
                return Tick::Done(Count {
                    ios: completed - count,
                    elapsed: now - at,
                    bringup,
                    latency: None,
                });
            }
            Some(_) => {}
        }
        Tick::Run
    }
}
