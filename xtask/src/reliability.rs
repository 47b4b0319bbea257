//! The reliability tasks: the property suite on the simulator, Miri, fuzzing.

use crate::{cargo, run, Tally};
use std::process::{Command, Stdio};

/// The fixed seed `cargo xtask test` uses for the property suite.
pub const DEFAULT_SEED: u64 = 0x6e76_6d65_2d73_696d;

/// Runs `schedules` random fault schedules from `seed` (release build; the
/// test prints the counts).
pub fn schedules(schedules: u64, seed: u64) -> bool {
    run(cargo()
        .args(["test", "--release", "-p", "nvme-sim", "--test", "schedules", "--", "--nocapture"])
        .env("NVME_SCHEDULES", schedules.to_string())
        .env("NVME_SEED", seed.to_string()))
}

/// The threaded stress test in a release build: 8 runs of 20,000 operations
/// per worker, 4 workers and a fault thread (the test prints its counts).
pub fn threads() -> bool {
    run(cargo().args(["test", "--release", "-p", "nvme-sim", "--test", "threads", "--", "--nocapture"]))
}

fn have_miri() -> bool {
    Command::new("cargo")
        .args(["+nightly", "miri", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The core's unit tests and the simulator subset under Miri, or a visible
/// "skipped" line where there is no nightly toolchain with Miri.
pub fn miri(tally: &mut Tally) {
    if !have_miri() {
        tally.skip("miri", "no nightly toolchain with the miri component");
        return;
    }
    let miri = |flags: &str, args: &[&str]| {
        let mut cmd = Command::new("cargo");
        cmd.args(["+nightly", "miri", "test"]).args(args).env("MIRIFLAGS", flags);
        run(&mut cmd)
    };
    // Stacked Borrows (Miri's default) over everything; Tree Borrows, with
    // implicit writes for `&mut` arguments, over the buffer model: a buffer's
    // pointer is taken at submission and used by the device (and `unshare`)
    // after the buffer has moved into its request slot. (Miri's
    // `-Zmiri-unique-is-unique` no longer exists: this nightly refuses it.)
    const SB: &str = "-Zmiri-strict-provenance";
    const TB: &str = "-Zmiri-strict-provenance -Zmiri-tree-borrows -Zmiri-tree-borrows-implicit-writes";
    tally
        .step("miri: nvme-nostd unit tests", miri(SB, &["-p", "nvme-nostd", "--features", "alloc", "--lib"]));
    tally.step("miri: simulator subset", miri(SB, &["-p", "nvme-sim", "--test", "miri_subset"]));
    tally.step(
        "miri (tree borrows): buffers",
        miri(TB, &["-p", "nvme-nostd", "--features", "alloc", "--lib", "buffer"]),
    );
    tally.step(
        "miri (tree borrows): simulator subset",
        miri(TB, &["-p", "nvme-sim", "--test", "miri_subset"]),
    );
    // Leaks on purpose (buffers of a pair dropped on a hung controller),
    // then writes into them when the quarantine is released.
    let leaks = |flags: &str| format!("{flags} -Zmiri-ignore-leaks");
    tally.step("miri: quarantine", miri(&leaks(SB), &["-p", "nvme-sim", "--test", "miri_leaks"]));
    tally.step(
        "miri (tree borrows): quarantine",
        miri(&leaks(TB), &["-p", "nvme-sim", "--test", "miri_leaks"]),
    );
}

/// The cargo-fuzz targets, two at a time, `seconds` each.
pub fn fuzz(seconds: u64) -> bool {
    let have = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !have && !run(cargo().args(["install", "cargo-fuzz", "--locked"])) {
        eprintln!("xtask: cargo-fuzz is missing and could not be installed: cargo install cargo-fuzz");
        return false;
    }
    let targets = ["identify", "completion_queue", "prp", "trid", "log_events", "split", "sgl"];
    let mut tally = Tally::default();
    for pair in targets.chunks(2) {
        let children: Vec<_> = pair
            .iter()
            .map(|t| {
                eprintln!("xtask: fuzzing {t} for {seconds} s");
                let child = Command::new("cargo")
                    .current_dir(crate::setup::root())
                    .args(["+nightly", "fuzz", "run", t, "--", &format!("-max_total_time={seconds}")])
                    .spawn();
                (t, child)
            })
            .collect();
        for (t, child) in children {
            let ok = child.and_then(|mut c| c.wait()).map(|s| s.success()).unwrap_or(false);
            tally.step(&format!("fuzz {t}"), ok);
        }
    }
    tally.finish()
}
