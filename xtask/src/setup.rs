//! Finds or installs what the tasks need: QEMU and the rustup targets.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the workspace").to_path_buf()
}

fn have(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// QEMU for x86_64 (Debian's `qemu-system-x86`), installed when run as root.
pub fn ensure_qemu() -> bool {
    if have("qemu-system-x86_64") {
        return true;
    }
    if !is_root() || !have("apt-get") {
        eprintln!(
            "xtask: qemu-system-x86_64 is missing. Install it, e.g.: sudo apt-get install qemu-system-x86"
        );
        return false;
    }
    eprintln!("xtask: installing qemu-system-x86 with apt-get");
    let update = crate::run(Command::new("apt-get").args(["update", "-qq"]));
    let install = crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", "qemu-system-x86"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    if update && install && have("qemu-system-x86_64") {
        true
    } else {
        eprintln!(
            "xtask: installing qemu-system-x86 failed; install it by hand: apt-get install qemu-system-x86"
        );
        false
    }
}

/// Debian packages that a task needs, each found by a file it installs,
/// installed with apt-get when run as root (else: the command to run).
pub fn ensure_packages(packages: &[(&str, &str)]) -> bool {
    let missing: Vec<&str> =
        packages.iter().filter(|(file, _)| !Path::new(file).exists()).map(|(_, p)| *p).collect();
    if missing.is_empty() {
        return true;
    }
    let hint = format!("apt-get install {}", missing.join(" "));
    if !is_root() || !have("apt-get") {
        eprintln!("xtask: missing packages; install them: sudo {hint}");
        return false;
    }
    eprintln!("xtask: installing {} with apt-get", missing.join(" "));
    let install = || {
        crate::run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install() || (crate::run(Command::new("apt-get").args(["update", "-qq"])) && install()) {
        true
    } else {
        eprintln!("xtask: installing failed; install them by hand: {hint}");
        false
    }
}

/// The rustup targets the kernel and the core builds need.
pub fn ensure_targets() -> bool {
    let installed = match Command::new("rustup").args(["target", "list", "--installed"]).output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(_) => {
            eprintln!("xtask: rustup not found; add the targets by hand: {}", crate::CORE_TARGETS.join(" "));
            // Without rustup the targets may still be there; let cargo decide.
            return true;
        }
    };
    let missing: Vec<&str> =
        crate::CORE_TARGETS.iter().copied().filter(|t| !installed.lines().any(|l| l.trim() == *t)).collect();
    if missing.is_empty() {
        return true;
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add"]).args(&missing);
    crate::run(&mut cmd) || {
        eprintln!("xtask: could not add targets; run: rustup target add {}", missing.join(" "));
        false
    }
}

/// Everything `demo` and `test` need.
pub fn ensure_tools() -> bool {
    ensure_targets() & ensure_qemu()
}
