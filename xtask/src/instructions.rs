//! `cargo xtask instructions`: instructions per I/O in the driver, counted
//! by callgrind (repeatable on a noisy machine, unlike a clock), and the
//! memory a queue pair takes; appends a section to `BENCHMARKS.md`.
//!
//! The workload is `nvme-sim/examples/instructions.rs`: reads through the
//! public API against the simulator with zero command latency, completed
//! buffers resubmitted from the poll callback. Each case runs twice, with
//! `SHORT` and `LONG` reads: the difference divided by `LONG - SHORT` is the
//! cost of one I/O, with attach, queue creation and exit cancelled out.
//! Every call into the simulator goes through one never-inlined `Hal` impl
//! (`SimEntry`): the inclusive cost of its calls is the simulator's share,
//! reported apart, as are the example's own source lines (its closure and
//! LBA walk, wherever inlined); the rest is the driver's. The driver's own
//! code that the simulator calls back (the `SegmentSink` a buffer's device
//! segments go to, which builds the PRPs) is the driver's, not the
//! simulator's. A second run of each
//! case collects only inside the submission (`IoQueuePair::read_write_plain`, where read and write begin),
//! which splits the driver's count into submission and completion.

use crate::bench::{append_section, commit, output, shell_quote};
use crate::setup::root;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Reads in the short and the long run of each case.
const SHORT: u64 = 1000;
const LONG: u64 = 3000;

/// The function whose inclusive cost is the submission (the toggle of the
/// second run). Named by its symbol, so an inlining change that removes it
/// shows as a submission count of 0, which `run` refuses.
const SUBMIT_FN: &str = "*IoQueuePair<*>::read_write_plain";

/// The example's source: its own lines are neither driver nor simulator.
const APP_SOURCE: &str = "nvme-sim/examples/instructions.rs";

/// The never-inlined door into the simulator (see the example).
const SIM_DOOR: &str = "<instructions::SimEntry as hal_traits::Hal>::";

/// Whether `callee`, called from `caller`, is the driver's code called back
/// by the HAL: a driver type's `SegmentSink::push` called from outside the
/// driver.
fn is_callback(caller: &str, callee: &str) -> bool {
    callee.contains("nvme_nostd::")
        && callee.ends_with("as hal_traits::SegmentSink>::push")
        && !caller.contains("nvme_nostd::")
}

/// One measured case.
struct Case {
    bytes: u64,
    depth: u64,
    /// The example's words after the counts: `registered` (buffers
    /// translated once, by `Controller::register`, not per request),
    /// `handle` (a 16-byte buffer handle instead of a `DmaBuffer`, translated
    /// per request), `lean` (no I/O timeout, no retries).
    mode: &'static [&'static str],
    what: &'static str,
}

const CASES: [Case; 8] = [
    Case { bytes: 4096, depth: 1, mode: &[], what: "4 KiB read, QD 1 (PRP1 only)" },
    Case { bytes: 4096, depth: 32, mode: &[], what: "4 KiB read, QD 32 (PRP1 only)" },
    Case { bytes: 131072, depth: 1, mode: &[], what: "128 KiB read, QD 1 (PRP list)" },
    Case { bytes: 4096, depth: 1, mode: &["registered"], what: "registered: 4 KiB read, QD 1 (PRP1 only)" },
    Case { bytes: 4096, depth: 32, mode: &["registered"], what: "registered: 4 KiB read, QD 32 (PRP1 only)" },
    Case {
        bytes: 131072,
        depth: 1,
        mode: &["registered"],
        what: "registered: 128 KiB read, QD 1 (PRP list)",
    },
    Case {
        bytes: 4096,
        depth: 32,
        mode: &["handle"],
        what: "a 16-byte buffer handle, translated per request: 4 KiB read, QD 32",
    },
    Case {
        bytes: 4096,
        depth: 32,
        mode: &["registered", "lean"],
        what: "registered, no I/O timeout, no retries: 4 KiB read, QD 32",
    },
];

/// What callgrind counted in one run.
#[derive(Default, Debug, PartialEq)]
struct Counts {
    /// Instructions collected.
    total: u64,
    /// Inclusive instructions of calls into the simulator's door.
    sim: u64,
    /// Inclusive instructions of the driver's code the simulator called
    /// back ([`is_callback`]): inside `sim`, but the driver's.
    callback: u64,
    /// Calls into the door, by method.
    calls: HashMap<String, u64>,
    /// Instructions of the example's own source lines (its loop, closure and
    /// LBA walk), wherever they were inlined.
    app: u64,
}

/// Parses a callgrind output file written with `--compress-strings=no
/// --compress-pos=no`: the `summary:`/`totals:` line, and each call record
/// (`cfn=` names the callee; `calls=` is followed by a line whose second
/// field is the call's inclusive cost).
fn parse(text: &str) -> Counts {
    let mut counts = Counts::default();
    let mut callee = "";
    let mut call: Option<u64> = None;
    // The source file of the cost lines that follow (`fl=` the function's,
    // `fi=`/`fe=` an inlined part's).
    let mut in_app = false;
    // Inside the door: its own lines are in the simulator's inclusive cost.
    let mut in_door = false;
    let mut function = "";
    for line in text.lines() {
        if let Some(file) =
            line.strip_prefix("fl=").or_else(|| line.strip_prefix("fi=")).or_else(|| line.strip_prefix("fe="))
        {
            in_app = file.trim().ends_with(APP_SOURCE);
        } else if let Some(rest) = line.strip_prefix("summary:").or_else(|| line.strip_prefix("totals:")) {
            counts.total = rest.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
        } else if let Some(name) = line.strip_prefix("fn=") {
            function = name.trim();
            in_door = function.starts_with(SIM_DOOR);
        } else if let Some(name) = line.strip_prefix("cfn=") {
            callee = name.trim();
        } else if let Some(rest) = line.strip_prefix("calls=") {
            call = rest.split_whitespace().next().and_then(|v| v.parse().ok());
        } else if let Some(n) = call.take() {
            let inclusive: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            if let Some(method) = callee.strip_prefix(SIM_DOOR) {
                counts.sim += inclusive;
                *counts.calls.entry(method.to_string()).or_default() += n;
            } else if is_callback(function, callee) {
                counts.callback += inclusive;
            }
        } else if in_app
            && !in_door
            && line.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-' || c == '*')
        {
            counts.app += line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    counts
}

/// Runs the example under callgrind and parses what it counted.
fn callgrind(
    binary: &Path,
    dir: &Path,
    case: &Case,
    ios: u64,
    toggle: Option<&str>,
) -> Result<Counts, String> {
    let name = format!(
        "{}-{}-{}-{}{}.out",
        case.bytes,
        case.depth,
        ios,
        toggle.map_or("all", |_| "submit"),
        case.mode.iter().map(|m| format!("-{m}")).collect::<String>()
    );
    let out = dir.join(name);
    let mut cmd = Command::new("valgrind");
    cmd.args(["--tool=callgrind", "--compress-strings=no", "--compress-pos=no"])
        .arg(format!("--callgrind-out-file={}", out.display()));
    if let Some(f) = toggle {
        cmd.args(["--collect-atstart=no", &format!("--toggle-collect={f}")]);
    }
    cmd.arg(binary).args([case.bytes.to_string(), case.depth.to_string(), ios.to_string()]);
    cmd.args(case.mode);
    let o = cmd.output().map_err(|e| format!("valgrind: {e} (apt-get install valgrind)"))?;
    if !o.status.success() {
        return Err(format!(
            "valgrind {}: {}\n{}",
            case.what,
            o.status,
            String::from_utf8_lossy(&o.stderr).lines().rev().take(15).collect::<Vec<_>>().join("\n")
        ));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(parse(&text))
}

/// Per-I/O figures of one case.
struct PerIo {
    driver: f64,
    submit: f64,
    complete: f64,
    sim: f64,
    app: f64,
    calls: Vec<(String, f64)>,
}

fn measure(binary: &Path, dir: &Path, case: &Case) -> Result<PerIo, String> {
    let n = (LONG - SHORT) as f64;
    let short = callgrind(binary, dir, case, SHORT, None)?;
    let long = callgrind(binary, dir, case, LONG, None)?;
    let short_submit = callgrind(binary, dir, case, SHORT, Some(SUBMIT_FN))?;
    let long_submit = callgrind(binary, dir, case, LONG, Some(SUBMIT_FN))?;
    let per = |a: u64, b: u64| (b as f64 - a as f64) / n;
    // The simulator's share without the driver code it called back.
    let sim = |c: &Counts| c.sim.saturating_sub(c.callback);
    let mine = |c: &Counts| c.total - sim(c) - c.app;
    let driver = per(mine(&short), mine(&long));
    let submit = per(mine(&short_submit), mine(&long_submit));
    if submit <= 0.0 {
        return Err(format!("no instructions inside {SUBMIT_FN}: was it inlined or renamed?"));
    }
    // Every case hands a buffer to the simulator's `translate`, which calls
    // the driver's sink back: none found means the names changed, and the
    // driver's PRP work would pass for the simulator's.
    if long.callback == 0 {
        return Err(format!(
            "{}: no driver SegmentSink::push called back from the simulator: renamed? (see is_callback)",
            case.what
        ));
    }
    let mut calls: Vec<(String, f64)> = long
        .calls
        .iter()
        .map(|(m, &c)| (m.clone(), per(short.calls.get(m).copied().unwrap_or(0), c)))
        .filter(|(_, c)| *c > 0.0)
        .collect();
    calls.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(PerIo {
        driver,
        submit,
        complete: driver - submit,
        sim: per(sim(&short), sim(&long)),
        app: per(short.app, long.app),
        calls,
    })
}

/// One queue pair's memory, as the example prints it.
struct Memory {
    entries: u64,
    request_state: u64,
    pair: u64,
    dma: u64,
    max_transfer: u64,
}

fn memory(binary: &Path) -> Result<Vec<Memory>, String> {
    let o = Command::new(binary).arg("memory").output().map_err(|e| format!("{}: {e}", binary.display()))?;
    if !o.status.success() {
        return Err(format!("{} memory: {}", binary.display(), String::from_utf8_lossy(&o.stderr)));
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<Memory> = text
        .lines()
        .filter_map(|l| {
            let fields: HashMap<&str, u64> = l
                .strip_prefix("memory ")?
                .split_whitespace()
                .filter_map(|f| {
                    let (k, v) = f.split_once('=')?;
                    Some((k, v.parse().ok()?))
                })
                .collect();
            Some(Memory {
                entries: *fields.get("entries")?,
                request_state: *fields.get("request_state")?,
                pair: *fields.get("pair")?,
                dma: *fields.get("dma")?,
                max_transfer: *fields.get("max_transfer")?,
            })
        })
        .collect();
    if rows.is_empty() {
        return Err(format!("no memory lines in: {text}"));
    }
    Ok(rows)
}

/// `cargo xtask instructions [--label TEXT] [--out FILE]`.
pub fn instructions(args: &[String]) -> bool {
    let mut label = "instructions per I/O".to_string();
    let mut out = PathBuf::from("BENCHMARKS.md");
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--label", Some(v)) => label = v.clone(),
            ("--out", Some(v)) => out = PathBuf::from(v),
            _ => {
                eprintln!("instructions: unknown or incomplete option {a} (--label TEXT, --out FILE)");
                return false;
            }
        }
    }
    match run(args, &label, &out) {
        Ok(section) => {
            print!("{section}");
            println!("appended to {}", out.display());
            true
        }
        Err(e) => {
            eprintln!("instructions: {e}");
            false
        }
    }
}

fn run(args: &[String], label: &str, out: &Path) -> Result<String, String> {
    if !crate::setup::ensure_packages(&[("/usr/bin/valgrind", "valgrind")]) {
        return Err("valgrind is needed".into());
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-p", "nvme-sim", "--example", "instructions"])
        .current_dir(root())
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err("building the instructions example failed".into());
    }
    let binary = root().join("target/release/examples/instructions");
    let dir = root().join("target/xtask/callgrind");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut rows = Vec::new();
    for case in &CASES {
        eprintln!("instructions: {}", case.what);
        rows.push((case, measure(&binary, &dir, case)?));
    }
    let memory = memory(&binary)?;

    let mut s = String::new();
    let quoted: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    let _ = writeln!(s, "## {label}\n");
    let _ = writeln!(s, "- Command: `cargo xtask {}`", quoted.join(" "));
    let _ = writeln!(s, "- Date: {}", output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]));
    let _ = writeln!(s, "- Commit: {}", commit(out));
    let _ = writeln!(s, "- Counter: {} against the simulator (zero latency), `DmaBuffer`s (translated per request, or registered: translated once), default options (timeouts on, retries on) unless the case says otherwise; per I/O = (count of {LONG} reads − count of {SHORT}) / {}", output("valgrind", &["--version"]), LONG - SHORT);
    let _ = writeln!(s);
    let _ = writeln!(s, "| case | driver instructions per I/O | submission | completion (poll) | simulator (HAL) | the example's own lines | HAL calls per I/O |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---|");
    for (case, r) in &rows {
        let calls: Vec<String> = r.calls.iter().map(|(m, c)| format!("{m} {c:.2}")).collect();
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            case.what,
            r.driver,
            r.submit,
            r.complete,
            r.sim,
            r.app,
            calls.join(", ")
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "| queue entries = request slots | driver state per request slot (bytes) | queue pair struct (bytes, `DmaBuffer` + `u64` context per slot included) | DMA memory (bytes: rings + PRP list pages, max transfer {} KiB) |", memory[0].max_transfer >> 10);
    let _ = writeln!(s, "|---:|---:|---:|---:|");
    for m in &memory {
        let _ = writeln!(s, "| {} | {} | {} | {} |", m.entries, m.request_state, m.pair, m.dma);
    }
    append_section(out, &s).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn door_calls_and_totals_parse() {
        let text = "\
events: Ir
fl=/w/nvme-sim/examples/instructions.rs
fn=main
0 10
fi=/w/nvme-nostd/src/qpair/poll.rs
0 4
fe=/w/nvme-sim/examples/instructions.rs
0 6
cfn=<instructions::SimEntry as hal_traits::Hal>::write32
calls=3 0
0 300
cfn=other
calls=1 0
0 7
fn=<instructions::SimEntry as hal_traits::Hal>::write32
0 5
fl=/w/nvme-sim/src/hal.rs
fn=<nvme_sim::hal::SimHal as hal_traits::Hal>::translate
0 9
cfn=<nvme_nostd::prp::PrpRuns<S> as hal_traits::SegmentSink>::push
calls=1 0
0 40
fl=/w/nvme-nostd/src/prp.rs
fn=<nvme_nostd::prp::PrpRuns<S> as hal_traits::SegmentSink>::push
0 30
cfn=<nvme_nostd::prp::PrpBuilder<S> as hal_traits::SegmentSink>::push
calls=1 0
0 10
totals: 1234
";
        let c = parse(text);
        assert_eq!(c.total, 1234);
        assert_eq!(c.sim, 300, "only calls into the door count, once each");
        assert_eq!(c.calls.get("write32"), Some(&3));
        assert_eq!(c.calls.len(), 1);
        assert_eq!(c.app, 16, "the example's own lines, not the inlined driver line nor calls");
        assert_eq!(
            c.callback, 40,
            "the driver's sink called back from the simulator, once (not its own calls)"
        );
    }
}
