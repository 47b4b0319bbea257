//! Building the kernel, making disk images and running QEMU configurations.

use crate::setup::{self, root};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// QEMU's exit status when the kernel reports success (`isa-debug-exit`, value 0x10).
pub const PASS_STATUS: i32 = 33;
/// QEMU's exit status when the kernel reports failure or panics (value 0x11).
pub const FAIL_STATUS: i32 = 35;
/// The longest one boot may take.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const QBOOT: &str = "/usr/share/qemu/qboot.rom";

/// Builds the kernel (release) and returns the ELF's path.
pub fn build_kernel() -> Option<PathBuf> {
    let ok = crate::run(crate::cargo().args([
        "build",
        "--release",
        "-p",
        "nvme-qemu-kernel",
        "--target",
        "x86_64-unknown-none",
    ]));
    let elf = root().join("target/x86_64-unknown-none/release/nvme-qemu-kernel");
    (ok && elf.exists()).then_some(elf)
}

/// Firmware QEMU starts the kernel with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Bios {
    /// QEMU's default: assigns BARs and enables the devices.
    SeaBios,
    /// Leaves BARs unassigned; the kernel assigns them.
    Qboot,
}

/// A namespace: its NSID, block size, extra `nvme-ns` properties and size.
pub struct Ns {
    nsid: u32,
    block: u32,
    props: &'static str,
    mib: u64,
    /// Formatted by the run (`-append format=NSID`): its image is not
    /// compared afterwards.
    scratch: bool,
}

const fn ns(nsid: u32, block: u32) -> Ns {
    Ns { nsid, block, props: "", mib: 16, scratch: false }
}

/// A controller: extra `-device nvme` properties and its namespaces. With
/// `legacy_drive`, the single namespace is attached the old way (`drive=` on
/// the controller) instead of as an `nvme-ns` device. With `subsys`, the
/// controller is in an NVM subsystem of its own (`nvme-subsys`), where a
/// namespace may start detached.
pub struct Ctrl {
    props: &'static str,
    namespaces: Vec<Ns>,
    legacy_drive: bool,
    subsys: bool,
}

/// One QEMU run of the test matrix.
pub struct Config {
    /// Its name in the output.
    pub name: String,
    bios: Bios,
    append: &'static str,
    expect_pass: bool,
    /// For a run that must fail: text its output must contain.
    failure_text: &'static str,
    /// The run must leave a changed disk image (the canary of the image
    /// check).
    image_must_change: bool,
    /// Raise a SMART critical warning over QMP (`smart_critical_warning`
    /// of the first controller) when the kernel says it waits for one.
    qmp_warning: bool,
    controllers: Vec<Ctrl>,
}

fn simple(props: &'static str) -> Ctrl {
    Ctrl { props, namespaces: vec![ns(1, 512)], legacy_drive: true, subsys: false }
}

fn config(name: &str, bios: Bios, controllers: Vec<Ctrl>) -> Config {
    let fw = if bios == Bios::Qboot { "qboot" } else { "SeaBIOS" };
    Config {
        name: format!("{name} ({fw})"),
        bios,
        append: "",
        expect_pass: true,
        failure_text: "",
        image_must_change: false,
        qmp_warning: false,
        controllers,
    }
}

/// The configurations `cargo xtask test` boots.
pub fn test_configs() -> Vec<Config> {
    let two_ns =
        || Ctrl { props: "", namespaces: vec![ns(2, 4096), ns(5, 4096)], legacy_drive: false, subsys: false };
    let eight_ns = || Ctrl {
        props: "",
        namespaces: [1, 2, 3, 5, 8, 13, 21, 34]
            .iter()
            .enumerate()
            .map(|(i, &nsid)| ns(nsid, if i % 2 == 0 { 512 } else { 4096 }))
            .collect(),
        legacy_drive: false,
        subsys: false,
    };
    // Metadata of every shape the driver handles, with and without
    // protection information; a zoned namespace.
    let metadata = || {
        Ctrl {
        props: "",
        namespaces: vec![
            Ns { props: ",ms=8", ..ns(1, 512) },
            Ns { props: ",ms=8,pi=1", ..ns(2, 512) },
            // Zoned: 32 zones of 4 MiB, 64-byte descriptor extensions, at
            // most 2 zones open and 3 active; a scratch namespace (zone
            // writes cannot be undone, so its image is not compared).
            Ns {
                props: ",zoned=true,zoned.zone_size=4M,zoned.descr_ext_size=64,zoned.max_open=2,zoned.max_active=3",
                mib: 128,
                scratch: true,
                ..ns(3, 4096)
            },
            Ns { props: ",ms=16,mset=1", ..ns(4, 4096) },
            ns(6, 512),
            Ns { props: ",ms=16,mset=1,pi=2", ..ns(7, 512) },
            Ns { props: ",ms=8,mset=1,pi=3,pil=1", ..ns(8, 4096) },
            Ns { props: ",ms=16,pi=1,pil=1", ..ns(9, 4096) },
            // The 64-bit guard: 16-byte tuples.
            Ns { props: ",ms=16,pi=1,pif=2", ..ns(10, 512) },
            Ns { props: ",ms=16,mset=1,pi=2,pif=2,pil=1", ..ns(11, 4096) },
        ],
        legacy_drive: false,
        subsys: false,
    }
    };
    let mut planted = config("planted verify mismatch must fail", Bios::SeaBios, vec![simple("")]);
    planted.append = "plant-mismatch";
    planted.expect_pass = false;
    planted.failure_text = "FAILED: verify mismatch";
    let mut unrestored = config("a block left unrestored must be caught", Bios::SeaBios, vec![simple("")]);
    unrestored.append = "skip-restore";
    unrestored.image_must_change = true;
    let scratch = Ctrl {
        props: "",
        namespaces: vec![ns(1, 512), Ns { scratch: true, ..ns(2, 512) }],
        legacy_drive: false,
        subsys: false,
    };
    let mut format = config(
        "Format NVM of a scratch namespace, 512 to 4096-byte blocks and back",
        Bios::SeaBios,
        vec![scratch],
    );
    format.append = "format=2";
    let subsystem = Ctrl {
        props: "",
        namespaces: vec![ns(1, 512), Ns { props: ",detached=on", ..ns(2, 4096) }],
        legacy_drive: false,
        subsys: true,
    };
    let mut warning =
        config("a SMART critical warning raised over QMP during the run", Bios::SeaBios, vec![simple("")]);
    warning.append = "smart-warning";
    warning.qmp_warning = true;
    let mut exception = config("CPU exception must fail", Bios::SeaBios, vec![simple("")]);
    exception.append = "raise-exception";
    exception.expect_pass = false;
    exception.failure_text = "CPU EXCEPTION: invalid opcode";
    vec![
        config("default", Bios::SeaBios, vec![simple("")]),
        config("default", Bios::Qboot, vec![simple("")]),
        config("two controllers", Bios::SeaBios, vec![simple(""), simple("")]),
        config("two controllers", Bios::Qboot, vec![simple(""), simple("")]),
        config("two namespaces, 4096-byte blocks, NSIDs 2 and 5", Bios::SeaBios, vec![two_ns()]),
        config("two namespaces, 4096-byte blocks, NSIDs 2 and 5", Bios::Qboot, vec![two_ns()]),
        config("mdts=1", Bios::SeaBios, vec![simple("mdts=1")]),
        config("mdts=1", Bios::Qboot, vec![simple("mdts=1")]),
        config("max_ioqpairs=1 with a CMB", Bios::Qboot, vec![simple("max_ioqpairs=1,cmb_size_mb=4")]),
        config(
            "four controllers, eight namespaces on one, mdts=2, CMB, max_ioqpairs=2",
            Bios::SeaBios,
            vec![eight_ns(), simple("mdts=2"), simple("cmb_size_mb=4"), simple("max_ioqpairs=2,mdts=0")],
        ),
        config(
            "metadata separate and extended, protection information types 1 to 3 first and last, 16- and 64-bit guards; a zoned namespace",
            Bios::SeaBios,
            vec![metadata()],
        ),
        config("NVM subsystem, namespace 2 detached: attach and detach", Bios::SeaBios, vec![subsystem]),
        format,
        warning,
        planted,
        unrestored,
        exception,
    ]
}

/// The directory for disk images and logs.
pub fn work_dir() -> PathBuf {
    let dir = root().join("target/xtask");
    let _ = fs::create_dir_all(dir.join("disks"));
    let _ = fs::create_dir_all(dir.join("logs"));
    dir
}

pub fn slug(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

/// A fresh zero-filled (sparse) raw image.
/// How much of each disk image starts random: more than any check writes
/// (the saved window is at most the largest transfer plus a few blocks).
const RANDOM_PREFIX: u64 = 8 << 20;

/// The bytes of a disk image: `RANDOM_PREFIX` bytes from a generator seeded
/// by the image's name, then zeros. A disk full of random bytes is what a
/// user's disk looks like: a check that writes a block and does not restore
/// it shows up as a changed image.
fn image_bytes(path: &Path, offset: u64, out: &mut [u8]) {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let seed =
        name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let at = offset + (i * 8) as u64;
        let word = if at < RANDOM_PREFIX { splitmix(seed ^ at) } else { 0 };
        chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A raw image of `bytes` bytes holding [`image_bytes`].
pub fn disk(path: &Path, bytes: u64) -> std::io::Result<()> {
    let mut f = fs::File::create(path)?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < bytes.min(RANDOM_PREFIX) {
        image_bytes(path, at, &mut chunk);
        std::io::Write::write_all(&mut f, &chunk)?;
        at += chunk.len() as u64;
    }
    f.set_len(bytes)
}

/// Checks that the image at `path` still holds exactly [`image_bytes`];
/// returns the first differing byte offset otherwise.
pub fn disk_unchanged(path: &Path, bytes: u64) -> Result<(), String> {
    let mut f = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len != bytes {
        return Err(format!("{}: {len} bytes, {bytes} expected", path.display()));
    }
    let (mut want, mut got) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0;
    while at < bytes {
        let n = ((bytes - at) as usize).min(got.len());
        f.read_exact(&mut got[..n]).map_err(|e| e.to_string())?;
        image_bytes(path, at, &mut want[..n]);
        if let Some(i) = got[..n].iter().zip(&want[..n]).position(|(a, b)| a != b) {
            let offset = at + i as u64;
            return Err(format!("{}: byte {offset} (block {} of 512) changed", path.display(), offset / 512));
        }
        at += n as u64;
    }
    Ok(())
}

/// The QEMU command line of `config`, creating its disk images; and the
/// images with their sizes.
fn command(kernel: &Path, config: &Config, kvm: bool) -> std::io::Result<(Command, Vec<(PathBuf, u64)>)> {
    let disks = work_dir().join("disks");
    let mut images = Vec::new();
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-machine", "q35", "-m", "256M", "-nodefaults", "-display", "none", "-no-reboot"]);
    cmd.args(["-accel", if kvm { "kvm" } else { "tcg" }]);
    cmd.args(["-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    cmd.arg("-kernel").arg(kernel);
    if config.bios == Bios::Qboot {
        cmd.args(["-bios", QBOOT]);
    }
    if !config.append.is_empty() {
        cmd.args(["-append", config.append]);
    }
    let tag = slug(&config.name);
    if config.qmp_warning {
        let socket = qmp_socket(config);
        let _ = fs::remove_file(&socket);
        cmd.arg("-qmp").arg(format!("unix:{},server=on,wait=off", socket.display()));
    }
    for (i, ctrl) in config.controllers.iter().enumerate() {
        let mut dev = format!("nvme,id=nvme{i},serial=xtask{i}");
        if ctrl.subsys {
            cmd.args(["-device", &format!("nvme-subsys,id=subsys{i},nqn=xtask-subsys{i}")]);
            dev.push_str(&format!(",subsys=subsys{i}"));
        }
        if !ctrl.props.is_empty() {
            dev.push(',');
            dev.push_str(ctrl.props);
        }
        for j in 0..ctrl.namespaces.len() {
            let img = disks.join(format!("{tag}-{i}-{j}.img"));
            let bytes = ctrl.namespaces[j].mib << 20;
            disk(&img, bytes)?;
            // A scratch namespace's image is not compared afterwards.
            if !ctrl.namespaces[j].scratch {
                images.push((img.clone(), bytes));
            }
            let id = format!("d{i}n{j}");
            cmd.arg("-drive").arg(format!("file={},if=none,id={id},format=raw", img.display()));
            if ctrl.legacy_drive {
                dev.push_str(&format!(",drive={id}"));
            }
        }
        cmd.args(["-device", &dev]);
        if !ctrl.legacy_drive {
            for (j, ns) in ctrl.namespaces.iter().enumerate() {
                cmd.args([
                    "-device",
                    &format!(
                        "nvme-ns,drive=d{i}n{j},bus=nvme{i},nsid={},logical_block_size={b},physical_block_size={b}{}",
                        ns.nsid,
                        ns.props,
                        b = ns.block
                    ),
                ]);
            }
        }
    }
    Ok((cmd, images))
}

/// Waits for `child` up to the boot timeout; kills it after that.
fn wait(child: &mut std::process::Child) -> Option<i32> {
    wait_for(child, BOOT_TIMEOUT)
}

/// Waits for `child` up to `timeout`; kills it after that.
pub fn wait_for(child: &mut std::process::Child, timeout: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.code(),
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                eprintln!("xtask: QEMU timed out after {timeout:?}");
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return None,
        }
    }
}

/// True when KVM was asked for and a quick boot under it works.
fn use_kvm(kernel: &Path, asked: bool) -> bool {
    if !asked {
        return false;
    }
    let probe = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "q35",
            "-m",
            "64M",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-accel",
            "kvm",
        ])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel"])
        .arg(kernel)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    // Without NVMe the kernel reports failure (35): that still proves it ran.
    let ran = match probe {
        Ok(mut child) => matches!(wait(&mut child), Some(PASS_STATUS) | Some(FAIL_STATUS)),
        Err(_) => false,
    };
    if !ran {
        eprintln!("xtask: KVM does not work here; using TCG");
    }
    ran
}

/// Boots one configuration with output captured to a log; true when the
/// verdict is the expected one.
pub fn run_config(kernel: &Path, config: &Config, kvm: bool) -> bool {
    let log = work_dir().join("logs").join(format!("{}.log", slug(&config.name)));
    let (mut cmd, images) = match command(kernel, config, use_kvm(kernel, kvm)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xtask: disk images: {e}");
            return false;
        }
    };
    eprintln!("xtask: booting '{}' (log: {})", config.name, log.display());
    let Ok(file) = fs::File::create(&log) else {
        return false;
    };
    let err = file.try_clone().ok();
    cmd.stdout(file);
    if let Some(e) = err {
        cmd.stderr(e);
    }
    let status = match cmd.spawn() {
        Ok(mut child) => {
            if config.qmp_warning {
                raise_smart_warning(&mut child, &log, &qmp_socket(config));
            }
            wait(&mut child)
        }
        Err(e) => {
            eprintln!("xtask: cannot start QEMU: {e}");
            return false;
        }
    };
    let mut text = String::new();
    let _ = fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut text));
    for line in text
        .lines()
        .filter(|l| ["FAILED", "PANIC", "CPU EXCEPTION", " passed, "].iter().any(|w| l.contains(w)))
    {
        eprintln!("    {line}");
    }
    let summary_clean = text.lines().any(|l| l.contains(" passed, 0 failed"));
    let verdict = if config.expect_pass {
        status == Some(PASS_STATUS) && summary_clean
    } else {
        status == Some(FAIL_STATUS) && text.contains(config.failure_text)
    };
    if !verdict {
        eprintln!(
            "xtask: QEMU exit status {status:?}; expected {}",
            if config.expect_pass { PASS_STATUS } else { FAIL_STATUS }
        );
    }
    // Every block the self-test overwrote must have been written back.
    let mut restored = true;
    for (img, bytes) in &images {
        if let Err(why) = disk_unchanged(img, *bytes) {
            eprintln!("xtask: disk image not restored: {why}");
            restored = false;
        }
    }
    if config.image_must_change {
        if restored {
            eprintln!("xtask: the image check missed blocks the run did not restore");
        }
        return verdict && !restored;
    }
    verdict && restored
}

/// `cargo xtask demo`: one controller, output live on the terminal.
pub fn demo(kvm: bool, extra: &[String]) -> bool {
    if !setup::ensure_tools() {
        return false;
    }
    let Some(kernel) = build_kernel() else {
        return false;
    };
    let config = config("demo", Bios::SeaBios, vec![simple("")]);
    let mut cmd = match command(&kernel, &config, use_kvm(&kernel, kvm)) {
        Ok((c, _)) => c,
        Err(e) => {
            eprintln!("xtask: disk image: {e}");
            return false;
        }
    };
    cmd.args(extra);
    eprintln!("$ {}", crate::show(&cmd));
    let status = match cmd.spawn() {
        Ok(mut child) => wait(&mut child),
        Err(e) => {
            eprintln!("xtask: cannot start QEMU: {e}");
            return false;
        }
    };
    match status {
        Some(PASS_STATUS) => {
            eprintln!("xtask: demo passed (QEMU exit status {PASS_STATUS})");
            true
        }
        other => {
            eprintln!("xtask: demo FAILED (QEMU exit status {other:?}; {PASS_STATUS} means pass)");
            false
        }
    }
}

/// The QMP socket of `config`'s run.
fn qmp_socket(config: &Config) -> PathBuf {
    work_dir().join("logs").join(format!("{}.qmp", slug(&config.name)))
}

/// The line the kernel prints when it waits for the warning (the
/// conformance suite's `SMART_WARNING_MARKER`).
const SMART_WARNING_MARKER: &str = "waiting for a SMART critical warning (spare below threshold)";

/// Watches the run's log for the kernel's marker, then sets
/// `smart_critical_warning` of controller `nvme0` to 1 (spare below
/// threshold) over QMP. Gives up (and lets the kernel's own timeout fail the
/// check) when QEMU exits first or the boot timeout passes.
fn raise_smart_warning(child: &mut std::process::Child, log: &Path, socket: &Path) {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let start = Instant::now();
    loop {
        if matches!(child.try_wait(), Ok(Some(_))) || start.elapsed() > BOOT_TIMEOUT {
            return;
        }
        if fs::read_to_string(log).is_ok_and(|t| t.contains(SMART_WARNING_MARKER)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let talk = || -> std::io::Result<String> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        let mut line = String::new();
        reader.read_line(&mut line)?; // the greeting
        let mut answers = String::new();
        for command in [
            r#"{"execute":"qmp_capabilities"}"#,
            r#"{"execute":"qom-set","arguments":{"path":"/machine/peripheral/nvme0","property":"smart_critical_warning","value":1}}"#,
        ] {
            writeln!(writer, "{command}")?;
            // Skip asynchronous events until the command's answer.
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                if line.contains("\"return\"") || line.contains("\"error\"") || line.is_empty() {
                    break;
                }
            }
            answers.push_str(line.trim());
        }
        Ok(answers)
    };
    match talk() {
        Ok(answers) if !answers.contains("error") => {
            eprintln!("xtask: QMP: smart_critical_warning set on nvme0")
        }
        Ok(answers) => eprintln!("xtask: QMP refused: {answers}"),
        Err(e) => eprintln!("xtask: QMP: {e}"),
    }
}
