//! `cargo xtask vfio-test`: the VFIO back-end in a Linux guest.
//!
//! Builds the back-end's programs as static binaries (musl), puts them in an
//! initramfs with `busybox` and the VFIO modules of a Debian kernel (both
//! fetched with `apt-get download` into a cache, nothing installed into the
//! host's `/boot`), boots QEMU with an emulated IOMMU and NVMe controllers,
//! hands the controllers to vfio-pci and runs the programs. The guest's
//! `/init` reports the verdict through `isa-debug-exit`.

use crate::qemu::{disk, disk_unchanged, slug, wait_for, work_dir, PASS_STATUS};
use crate::setup::root;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TARGET: &str = "x86_64-unknown-linux-musl";
/// The programs the guest runs, each with its arguments (`$SUITE`: the
/// controllers on bus 0, which `/init` hands to vfio-pci). The tools run
/// last, for their output in the log (the README quotes it).
const PROGRAMS: [(&str, &str); 5] = [
    ("nvme-vfio-selftest", "$SUITE"),
    ("nvme-vfio-tests", ""),
    ("hello_world", "--device 0000:00:04.0"),
    ("identify", "--device 0000:00:04.0 --namespace 1"),
    ("perf", "--device 0000:00:05.0 --namespace 2 -w randread -q 16 -t 2"),
];
/// Programs that go into the guest for the others to run.
const HELPERS: [&str; 1] = ["nvme-vfio-bind"];
/// The modules VFIO needs (their dependencies come along).
const VFIO_MODULES: [&str; 2] = ["vfio-pci", "vfio_iommu_type1"];
/// The kernel's own NVMe driver, and the CRC algorithms its protection
/// information support asks the crypto API for (loaded by hand: the guest
/// has no modprobe).
const NVME_MODULES: [&str; 7] =
    ["crct10dif_generic", "crc64_rocksoft_generic", "nvme", "vfat", "nls_cp437", "nls_ascii", "nls_utf8"];
/// Debian's nvme-cli and everything it loads (it is dynamically linked),
/// to read the kernel driver's view of a controller in the guest.
const NVME_CLI_PACKAGES: [&str; 14] = [
    "nvme-cli",
    "libnvme1",
    "libjson-c5",
    "zlib1g",
    "libssl3",
    "libc6",
    // libnvme-mi's D-Bus, and what libsystemd brings.
    "libdbus-1-3",
    "libsystemd0",
    "libcap2",
    "libgcrypt20",
    "libgpg-error0",
    "liblz4-1",
    "liblzma5",
    "libzstd1",
];
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// Where downloads and what is made of them are kept between runs (a fresh
/// clone of the repository finds them there too).
fn cache_dir() -> PathBuf {
    cache_subdir("vfio")
}

pub(crate) fn cache_subdir(name: &str) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| root().join("target"));
    let dir = base.join("nvme-nostd-xtask").join(name);
    let _ = fs::create_dir_all(&dir);
    dir
}

pub(crate) fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The Debian package of the current kernel image (`linux-image-6.1.0-N-amd64`).
/// On a machine whose package lists were never fetched, after an `apt-get
/// update`.
fn kernel_package() -> Option<String> {
    let look = || {
        let deps = output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
        deps.lines().find_map(|l| l.trim().strip_prefix("Depends: ").map(str::to_string))
    };
    look().or_else(|| {
        eprintln!("xtask: apt-cache knows no linux-image-amd64; updating the package lists");
        crate::run(Command::new("apt-get").args(["update", "-qq"])).then(look).flatten()
    })
}

/// `apt-get download` of `package` into `dir`, once; after an `apt-get
/// update` when the package lists are missing. The path of the `.deb`.
fn download(package: &str, dir: &Path) -> Option<PathBuf> {
    let find = || {
        fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&format!("{package}_")) && n.ends_with(".deb")
            })
        })
    };
    if let Some(deb) = find() {
        return Some(deb);
    }
    let get = || {
        eprintln!("$ apt-get download {package} (into {})", dir.display());
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(dir)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !get() {
        eprintln!("xtask: apt-get download {package} failed; updating the package lists");
        if !crate::run(Command::new("apt-get").args(["update", "-qq"])) || !get() {
            return None;
        }
    }
    find()
}

/// Unpacks a `.deb` into `into` (once).
fn unpack(deb: &Path, into: &Path) -> bool {
    if into.join(".unpacked").exists() {
        return true;
    }
    let _ = fs::remove_dir_all(into);
    crate::run(Command::new("dpkg").arg("-x").arg(deb).arg(into))
        && fs::write(into.join(".unpacked"), b"").is_ok()
}

/// The kernel's uncompressed ELF (`vmlinux`) out of a `vmlinuz`: QEMU boots
/// it through PVH, about twice as fast as the bzImage. `None` when it cannot
/// be extracted (the bzImage is used then).
fn vmlinux(vmlinuz: &Path, out: &Path) -> Option<PathBuf> {
    if out.exists() {
        return Some(out.to_path_buf());
    }
    let image = fs::read(vmlinuz).ok()?;
    let magic = [0xfd, b'7', b'z', b'X', b'Z', 0x00];
    let at = image.windows(magic.len()).position(|w| w == magic)?;
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let tail = image[at..].to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&tail);
    });
    let mut elf = Vec::new();
    child.stdout.take()?.read_to_end(&mut elf).ok()?;
    let _ = child.wait();
    let _ = feeder.join();
    if !elf.starts_with(b"\x7fELF") {
        return None;
    }
    fs::write(out, &elf).ok()?;
    Some(out.to_path_buf())
}

/// Module name as the kernel compares them (`-` and `_` alike).
fn module_key(name: &str) -> String {
    name.replace('-', "_")
}

/// The `depends=` of a module's `.modinfo`.
fn module_depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    ko.split(|b| *b == 0)
        .find_map(|field| field.strip_prefix(key.as_slice()))
        .map(|deps| {
            String::from_utf8_lossy(deps).split(',').filter(|d| !d.is_empty()).map(module_key).collect()
        })
        .unwrap_or_default()
}

/// The modules `wanted` needs, dependencies first: (name, path).
fn module_order(modules: &Path, wanted: &[&str]) -> Result<Vec<(String, PathBuf)>, String> {
    let mut files = BTreeMap::new();
    let mut stack = vec![modules.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(name) =
                p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko"))
            {
                files.insert(module_key(name), p);
            }
        }
    }
    let mut order: Vec<(String, PathBuf)> = Vec::new();
    fn visit(
        name: &str,
        files: &BTreeMap<String, PathBuf>,
        order: &mut Vec<(String, PathBuf)>,
        depth: usize,
    ) -> Result<(), String> {
        if order.iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        let path = files.get(name).ok_or_else(|| format!("module {name} not found"))?;
        if depth > 16 {
            return Err(format!("module dependencies loop at {name}"));
        }
        let ko = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for dep in module_depends(&ko) {
            visit(&dep, files, order, depth + 1)?;
        }
        order.push((name.to_string(), path.clone()));
        Ok(())
    }
    for w in wanted {
        visit(&module_key(w), &files, &mut order, 0)?;
    }
    Ok(order)
}

/// An initramfs in the `newc` cpio format.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields =
            [self.ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, executable: bool, data: &[u8]) {
        self.entry(name, if executable { 0o100755 } else { 0o100644 }, (0, 0), data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

/// The start of every guest's `/init`: busybox's applets, `/proc`, `/sys`
/// and `/dev`, a `verdict` function that reports through `isa-debug-exit`
/// and powers off, and `hugepages` 2 MiB hugepages.
pub(crate) fn init_preamble(hugepages: u32) -> String {
    format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         verdict() {{ printf \"$1\" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null; poweroff -f; }}\n\
         echo {hugepages} > /proc/sys/vm/nr_hugepages\n"
    )
}

/// Lines of `/init` that load `modules` (dependencies first), failing the
/// guest if one does not load.
pub(crate) fn insmod(s: &mut String, modules: &[String]) {
    for m in modules {
        s.push_str(&format!(
            "insmod /lib/modules/{m}.ko || {{ echo \"insmod {m} failed\"; verdict '\\021'; }}\n"
        ));
    }
}

/// QEMU for a guest with an emulated Intel IOMMU (interrupt remapping,
/// caching mode for VFIO) and the kernel told to use it.
fn qemu_with_iommu(kvm: bool, kernel: &Path, initrd: &Path, cpus: u32) -> Command {
    qemu_with_iommu_in(Command::new("qemu-system-x86_64"), kvm, kernel, initrd, cpus)
}

/// As [`qemu_with_iommu`], with `cmd` as the start of the command line (for
/// example `taskset -c 0 qemu-system-x86_64`).
pub(crate) fn qemu_with_iommu_in(
    cmd: Command,
    kvm: bool,
    kernel: &Path,
    initrd: &Path,
    cpus: u32,
) -> Command {
    let mut cmd = qemu_in(cmd, kvm, kernel, initrd, "intel_iommu=on iommu=pt", cpus);
    cmd.args(["-machine", "kernel-irqchip=split", "-device", "intel-iommu,intremap=on,caching-mode=on"]);
    cmd
}

/// The guest's `/init`: mounts, reserves hugepages, loads the VFIO
/// modules, hands every NVMe controller to vfio-pci but the first one behind
/// the bridge (which the kernel's nvme driver, loaded next, takes), runs the
/// programs, and reports through `isa-debug-exit` (0x10: QEMU exits with 33,
/// pass; 0x11: 35, fail).
fn init_script(vfio_modules: &[String], nvme_modules: &[String]) -> String {
    let mut s = init_preamble(16);
    insmod(&mut s, vfio_modules);
    s.push_str(
        "SUITE=\n\
         for d in /sys/bus/pci/devices/*; do\n\
         \x20 [ \"$(cat $d/class)\" = 0x010802 ] || continue\n\
         \x20 a=${d##*/}\n\
         \x20 case $a in 0000:00:*) SUITE=\"$SUITE $a\";; *:01.0) continue;; esac\n\
         \x20 echo vfio-pci > $d/driver_override\n\
         \x20 echo $a > /sys/bus/pci/drivers_probe\n\
         done\n",
    );
    insmod(&mut s, nvme_modules);
    // A filesystem mounted on the kernel's controller: the bind tool must
    // refuse to take it.
    s.push_str(
        "for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /dev/nvme0n1 ] && break; sleep 1; done\n\
         mkdosfs /dev/nvme0n1 >/dev/null && mkdir -p /mnt && mount -t vfat /dev/nvme0n1 /mnt || echo \"mount failed\"\n",
    );
    s.push_str(
        "\
         for d in /sys/bus/pci/devices/*; do\n\
         \x20 [ \"$(cat $d/class)\" = 0x010802 ] || continue\n\
         \x20 echo \"${d##*/} -> $(basename \"$(readlink $d/driver)\"), IOMMU group $(basename $(readlink $d/iommu_group))\"\n\
         done\n\
         status=0\n\
         export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu\n",
    );
    for (p, args) in PROGRAMS {
        s.push_str(&format!(
            "echo \"== {p} {args}\"\n/bin/{p} {args} || {{ echo \"{p} exited with $?\"; status=1; }}\n"
        ));
    }
    // Last, without VFIO: the modules unloaded (which unbinds the devices).
    s.push_str("for m in vfio_pci vfio_pci_core vfio_iommu_type1 vfio_virqfd vfio; do rmmod $m; done\n");
    s.push_str(
        "echo \"== nvme-vfio-tests --without-vfio\"\n\
         /bin/nvme-vfio-tests --without-vfio 0000:00:04.0 || { echo \"nvme-vfio-tests --without-vfio exited with $?\"; status=1; }\n",
    );
    s.push_str("if [ $status = 0 ]; then verdict '\\020'; else verdict '\\021'; fi\n");
    s
}

/// Builds the initramfs of the test guest; its path.
fn initramfs(guest: &Guest) -> Result<PathBuf, String> {
    let names = |m: &[(String, PathBuf)]| m.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let init = init_script(&names(&guest.vfio_modules), &names(&guest.nvme_modules));
    initramfs_with(guest, &init, "vfio-initramfs.cpio")
}

/// Builds an initramfs with the guest's programs and `init`, as `file` in
/// the work directory; its path.
fn initramfs_with(guest: &Guest, init: &str, file: &str) -> Result<PathBuf, String> {
    initramfs_with_extra(guest, init, file, &[])
}

/// As [`initramfs_with`], with `extra` files too (where they go, where they
/// are; executable).
pub(crate) fn initramfs_with_extra(
    guest: &Guest,
    init: &str,
    file: &str,
    extra: &[(&str, &Path)],
) -> Result<PathBuf, String> {
    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "lib", "lib/modules", "lib/x86_64-linux-gnu", "lib64", "tmp"] {
        cpio.dir(d);
    }
    // The console, so that /init has a standard output before devtmpfs.
    cpio.entry("dev/console", 0o020600, (5, 1), &[]);
    let read = |p: &Path| fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    cpio.file("bin/busybox", true, &read(&guest.busybox)?);
    for (at, path) in &guest.nvme_cli {
        cpio.file(at, true, &read(path)?);
    }
    for (name, path) in guest.vfio_modules.iter().chain(&guest.nvme_modules) {
        cpio.file(&format!("lib/modules/{name}.ko"), false, &read(path)?);
    }
    let bins = root().join("target").join(TARGET).join("release");
    for p in PROGRAMS.iter().map(|(p, _)| *p).chain(HELPERS) {
        cpio.file(&format!("bin/{p}"), true, &read(&bins.join(p))?);
    }
    for (at, path) in extra {
        cpio.file(at, true, &read(path)?);
    }
    cpio.file("init", true, init.as_bytes());
    let out = work_dir().join(file);
    fs::write(&out, cpio.finish()).map_err(|e| e.to_string())?;
    Ok(out)
}

/// What the guest is made of, from the cache.
pub(crate) struct Guest {
    pub(crate) kernel: PathBuf,
    /// VFIO's module names and files, dependencies first.
    pub(crate) vfio_modules: Vec<(String, PathBuf)>,
    /// The kernel NVMe driver's, after what VFIO's already load.
    pub(crate) nvme_modules: Vec<(String, PathBuf)>,
    busybox: PathBuf,
    /// nvme-cli and its libraries: where they go in the initramfs, and
    /// where they are.
    nvme_cli: Vec<(String, PathBuf)>,
}

/// A package downloaded and unpacked into the cache (once); its tree.
fn unpacked(package: &str, cache: &Path) -> Result<PathBuf, String> {
    let deb = download(package, cache).ok_or(format!("cannot download {package}"))?;
    let tree = cache.join(package);
    if !unpack(&deb, &tree) {
        return Err(format!("cannot unpack {}", deb.display()));
    }
    Ok(tree)
}

/// nvme-cli, its shared libraries and the dynamic loader, laid out as the
/// guest needs them.
fn nvme_cli(cache: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    for package in NVME_CLI_PACKAGES {
        let tree = unpacked(package, cache)?;
        for dir in ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"] {
            for e in fs::read_dir(tree.join(dir)).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.contains(".so") && !e.path().is_dir() {
                    files.entry(format!("lib/x86_64-linux-gnu/{name}")).or_insert(e.path());
                }
            }
        }
        if package == "nvme-cli" {
            files.insert("bin/nvme".into(), tree.join("usr/sbin/nvme"));
        }
        if package == "libc6" {
            files.insert(
                "lib64/ld-linux-x86-64.so.2".into(),
                tree.join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
            );
        }
    }
    Ok(files.into_iter().collect())
}

/// The kernel and the modules and busybox of the guest, from the cache.
fn guest_inputs() -> Result<Guest, String> {
    let cache = cache_dir();
    let package =
        kernel_package().ok_or("apt-cache knows no linux-image-amd64, even after apt-get update")?;
    let deb = download(&package, &cache).ok_or(format!("cannot download {package}"))?;
    let tree = cache.join(&package);
    if !unpack(&deb, &tree) {
        return Err(format!("cannot unpack {}", deb.display()));
    }
    let bb_tree = unpacked("busybox-static", &cache)?;
    let version = package.strip_prefix("linux-image-").unwrap_or(&package).to_string();
    let vmlinuz = tree.join("boot").join(format!("vmlinuz-{version}"));
    let kernel = vmlinux(&vmlinuz, &cache.join(format!("vmlinux-{version}"))).unwrap_or(vmlinuz);
    let dir = tree.join("lib/modules").join(&version).join("kernel");
    let vfio_modules = module_order(&dir, &VFIO_MODULES)?;
    let mut nvme_modules = module_order(&dir, &NVME_MODULES)?;
    nvme_modules.retain(|m| !vfio_modules.contains(m));
    let nvme_cli = nvme_cli(&cache)?;
    Ok(Guest { kernel, vfio_modules, nvme_modules, busybox: bb_tree.join("bin/busybox"), nvme_cli })
}

/// QEMU, the guest's programs built, and its kernel, modules and busybox;
/// `None`, said why, when one of them cannot be had.
pub(crate) fn ready_guest() -> Option<Guest> {
    if !crate::setup::ensure_qemu() || !build_programs() {
        return None;
    }
    guest_inputs().map_err(|e| eprintln!("xtask: guest inputs: {e}")).ok()
}

/// The musl target and the static programs.
fn build_programs() -> bool {
    let installed =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if !installed.lines().any(|l| l.trim() == TARGET)
        && !crate::run(Command::new("rustup").args(["target", "add", TARGET]))
    {
        eprintln!("xtask: cannot add the {TARGET} target: rustup target add {TARGET}");
        return false;
    }
    // Without debug information: the initramfs stays small (it boots faster).
    crate::run(
        crate::cargo()
            .args(["build", "--release", "-p", "hal-linux-vfio", "--bins", "--target", TARGET])
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .env("CARGO_PROFILE_RELEASE_STRIP", "true"),
    )
}

/// QEMU for a guest: a q35 machine with 512 MiB and 2 CPUs, the serial
/// console on standard output, `isa-debug-exit` for the verdict, `kernel`
/// and `initrd`, and `append` after the kernel options every guest has.
fn qemu(kvm: bool, kernel: &Path, initrd: &Path, append: &str) -> Command {
    qemu_with_cpus(kvm, kernel, initrd, append, 2)
}

/// As [`qemu`], with `cpus` vCPUs.
fn qemu_with_cpus(kvm: bool, kernel: &Path, initrd: &Path, append: &str, cpus: u32) -> Command {
    qemu_in(Command::new("qemu-system-x86_64"), kvm, kernel, initrd, append, cpus)
}

/// QEMU's options for a guest, after `cmd` (QEMU itself, or a wrapper of it).
fn qemu_in(mut cmd: Command, kvm: bool, kernel: &Path, initrd: &Path, append: &str, cpus: u32) -> Command {
    cmd.args(["-machine", "q35", "-m", "512M", "-smp", &cpus.to_string()]);
    cmd.args(["-nodefaults", "-display", "none", "-no-reboot", "-accel", if kvm { "kvm" } else { "tcg" }]);
    cmd.args(["-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    cmd.arg("-kernel").arg(kernel).arg("-initrd").arg(initrd);
    cmd.arg("-append").arg(format!("console=ttyS0 panic=-1 quiet no_timer_check {append}"));
    cmd
}

/// Runs QEMU (`cmd`, its serial console on standard output) with its log
/// under `name`, up to [`BOOT_TIMEOUT`]; prints the lines that say how the
/// guest's programs did. QEMU's exit status and the log.
fn boot(name: &str, mut cmd: Command) -> Option<(Option<i32>, String)> {
    let tag = slug(name);
    let log = work_dir().join("logs").join(format!("{tag}.log"));
    eprintln!("xtask: booting '{name}' (log: {})", log.display());
    let file = fs::File::create(&log).ok()?;
    if let Ok(err) = file.try_clone() {
        cmd.stderr(err);
    }
    cmd.stdout(file);
    let status = match cmd.spawn() {
        Ok(mut child) => wait_for(&mut child, BOOT_TIMEOUT),
        Err(e) => {
            eprintln!("xtask: cannot start QEMU: {e}");
            return None;
        }
    };
    let text = fs::read_to_string(&log).unwrap_or_default();
    for line in text.lines().filter(|l| {
        ["FAILED", "exited with", "insmod", " passed, ", "-> ", "Hello world", "hello_world:"]
            .iter()
            .any(|w| l.contains(w))
    }) {
        eprintln!("    {line}");
    }
    Some((status, text))
}

/// The disk images of a guest's controllers, attached to `cmd`: for each
/// controller (its `-device` options) its namespaces (block size, scratch).
/// The images whose contents must survive the run, and their sizes.
fn controllers(
    cmd: &mut Command,
    tag: &str,
    layout: &[(&str, &[(u32, bool)])],
) -> Result<Vec<(PathBuf, u64)>, String> {
    let disks = work_dir().join("disks");
    let mut images = Vec::new();
    for (i, (at, namespaces)) in layout.iter().enumerate() {
        cmd.args(["-device", &format!("nvme,id=nvme{i},serial=vfio{i},{at}")]);
        for (j, (block, scratch)) in namespaces.iter().enumerate() {
            let img = disks.join(format!("{tag}-{i}-{j}.img"));
            let bytes = 16 << 20;
            disk(&img, bytes).map_err(|e| format!("disk image: {e}"))?;
            if !scratch {
                images.push((img.clone(), bytes));
            }
            cmd.arg("-drive").arg(format!("file={},if=none,id=d{i}n{j},format=raw", img.display()));
            cmd.args([
                "-device",
                &format!(
                    "nvme-ns,drive=d{i}n{j},bus=nvme{i},nsid={},logical_block_size={block},physical_block_size={block}",
                    j + 1
                ),
            ]);
        }
    }
    Ok(images)
}

/// Boots a guest (`cmd`, with the controllers of `layout` attached) and
/// judges it: QEMU's pass status, `summaries` test summaries all clean,
/// `hello_world`'s greeting, what `also` checks in the log, and every disk
/// image as it was.
fn run_guest(
    name: &str,
    mut cmd: Command,
    tag: &str,
    layout: &[(&str, &[(u32, bool)])],
    summaries: usize,
    also: impl Fn(&str) -> bool,
) -> bool {
    let images = match controllers(&mut cmd, tag, layout) {
        Ok(images) => images,
        Err(e) => {
            eprintln!("xtask: {e}");
            return false;
        }
    };
    let Some((status, text)) = boot(name, cmd) else { return false };
    // Each program's exit status counts in /init's verdict; the summaries,
    // the greeting and the rest are checked here too.
    let found = text.lines().filter(|l| l.contains(" passed, ")).count();
    let clean = found == summaries
        && text.lines().filter(|l| l.contains(" passed, 0 failed")).count() == summaries
        && text.lines().any(|l| l.trim_end() == "Hello world!");
    let ok = status == Some(PASS_STATUS) && clean && also(&text);
    if !ok {
        eprintln!(
            "xtask: QEMU exit status {status:?}; expected {PASS_STATUS}, {summaries} clean summaries, the greeting \
             and the guest's own marks"
        );
    }
    images_unchanged(&images) && ok
}

/// Whether every image is as [`disk`] made it.
fn images_unchanged(images: &[(PathBuf, u64)]) -> bool {
    let mut ok = true;
    for (img, bytes) in images {
        if let Err(why) = disk_unchanged(img, *bytes) {
            eprintln!("xtask: disk image not restored: {why}");
            ok = false;
        }
    }
    ok
}

/// `cargo xtask vfio-test`: true when the guest reported a pass and every
/// disk image is as it was.
pub fn vfio_test(kvm: bool) -> bool {
    let Some(guest) = ready_guest() else { return false };
    let initrd = match initramfs(&guest) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("xtask: initramfs: {e}");
            return false;
        }
    };
    let name = "vfio conformance suite in a Linux guest";
    let tag = slug(name);
    let mut cmd = qemu_with_iommu(kvm, &guest.kernel, &initrd, 2);
    // On bus 0, for the suite: one controller with a 512-byte and a
    // 4096-byte namespace, one with a controller memory buffer and a
    // 4096-byte and a 512-byte namespace (a scratch one: perf writes to it). Behind a PCI bridge (one IOMMU
    // group for both): one for the kernel's nvme driver (a scratch disk:
    // /init puts a filesystem on it) and one for vfio-pci, whose group is
    // then not viable. (block size, scratch) per namespace.
    let layout: [(&str, &[(u32, bool)]); 4] = [
        ("bus=pcie.0,addr=0x4", &[(512, false), (4096, false)]),
        ("bus=pcie.0,addr=0x5,cmb_size_mb=16", &[(4096, false), (512, true)]),
        ("bus=bridge,addr=0x1", &[(512, true)]),
        ("bus=bridge,addr=0x2", &[(512, false)]),
    ];
    cmd.args(["-device", "pci-bridge,id=bridge,chassis_nr=1,bus=pcie.0,addr=0x6"]);
    run_guest(name, cmd, &tag, &layout, 3, |_| true)
}

/// The programs of the no-IOMMU guest, as [`PROGRAMS`].
const NO_IOMMU_PROGRAMS: [(&str, &str); 4] = [
    ("nvme-vfio-selftest", "$SUITE"),
    ("nvme-vfio-tests", "--no-iommu 0000:00:06.0"),
    ("hello_world", "--device 0000:00:04.0"),
    ("perf", "--device 0000:00:05.0 --namespace 2 -w randrw -M 50 -q 16 -t 1"),
];

/// What the no-IOMMU guest's kernel is built with, on top of `make
/// tinyconfig`: a PVH-bootable x86_64 kernel with a serial console, an
/// initramfs, hugepages, `/proc/self/pagemap`, PCI with MSI, and VFIO's
/// PCI driver with no-IOMMU mode, all built in (no modules).
const NO_IOMMU_CONFIG: &[&str] = &[
    "64BIT",
    "SMP",
    "X86_LOCAL_APIC",
    "X86_IO_APIC",
    "X86_X2APIC",
    "X86_MPPARSE",
    "ACPI",
    "CPU_SUP_INTEL",
    "CPU_SUP_AMD",
    "HYPERVISOR_GUEST",
    "PARAVIRT",
    "KVM_GUEST",
    "PVH",
    "PRINTK",
    "TTY",
    "SERIAL_8250",
    "SERIAL_8250_CONSOLE",
    "BLK_DEV_INITRD",
    "BINFMT_ELF",
    "BINFMT_SCRIPT",
    "DEVTMPFS",
    "PROC_FS",
    "PROC_SYSCTL",
    "PROC_PAGE_MONITOR",
    "SYSFS",
    "TMPFS",
    "SHMEM",
    "HUGETLBFS",
    "HUGETLB_PAGE",
    "MULTIUSER",
    "FUTEX",
    "EPOLL",
    "SIGNALFD",
    "TIMERFD",
    "EVENTFD",
    "AIO",
    "POSIX_TIMERS",
    "HIGH_RES_TIMERS",
    "UNIX",
    "NET",
    "FILE_LOCKING",
    "PCI",
    "PCI_MSI",
    "PCI_MMCONFIG",
    "DEVPORT",
    "VIRTUALIZATION",
    "VFIO",
    "VFIO_PCI",
    "VFIO_PCI_MMAP",
    "VFIO_NOIOMMU",
    "UNWINDER_GUESS",
];
/// And without (objtool's ORC tables and the mitigations only cost build time).
const NO_IOMMU_CONFIG_OFF: &[&str] = &["UNWINDER_ORC", "SPECULATION_MITIGATIONS", "RETPOLINE", "MODULES"];
/// What building it needs on the host, each found by a file it installs.
const KERNEL_BUILD_PACKAGES: [(&str, &str); 6] = [
    ("/usr/bin/make", "make"),
    ("/usr/bin/gcc", "gcc"),
    ("/usr/bin/flex", "flex"),
    ("/usr/bin/bison", "bison"),
    ("/usr/bin/bc", "bc"),
    ("/usr/include/libelf.h", "libelf-dev"),
];

/// A kernel with VFIO's no-IOMMU mode, which Debian's kernels lack: built
/// from Debian's `linux-source-6.1` package with [`NO_IOMMU_CONFIG`] (a few
/// minutes, once: the `vmlinux` is cached under a name that changes with
/// the source package and the configuration).
fn no_iommu_kernel() -> Result<PathBuf, String> {
    use std::hash::{Hash, Hasher};
    let cache = cache_subdir("noiommu");
    let deb = download("linux-source-6.1", &cache).ok_or("cannot download linux-source-6.1")?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (deb.file_name(), NO_IOMMU_CONFIG, NO_IOMMU_CONFIG_OFF).hash(&mut hasher);
    let out = cache.join(format!("vmlinux-noiommu-{:016x}", hasher.finish()));
    if out.exists() {
        return Ok(out);
    }
    if !crate::setup::ensure_packages(&KERNEL_BUILD_PACKAGES) {
        return Err("the kernel build's packages are missing".into());
    }
    let (src, build) = (cache.join("src"), cache.join("build"));
    for dir in [&src, &build] {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    eprintln!("xtask: building a kernel with VFIO no-IOMMU mode (once; cached in {})", cache.display());
    // The package holds the source as a tarball: straight out of the
    // package into the tree.
    let unpack = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -xO --wildcards '*/linux-source-6.1.tar.xz' | tar -xJ -C '{}'",
        deb.display(),
        src.display()
    );
    if !crate::run(Command::new("sh").args(["-c", &unpack])) {
        return Err(format!("cannot unpack {}", deb.display()));
    }
    let tree = src.join("linux-source-6.1");
    let make = |args: &[&str]| {
        let mut cmd = Command::new("make");
        cmd.arg("-C").arg(&tree).arg(format!("O={}", build.display())).arg("-s").args(args);
        // What the configuration targets print goes; errors stay.
        crate::run(cmd.stdout(std::process::Stdio::null()))
    };
    let mut config = Command::new(tree.join("scripts/config"));
    config.arg("--file").arg(build.join(".config"));
    for o in NO_IOMMU_CONFIG {
        config.args(["-e", o]);
    }
    for o in NO_IOMMU_CONFIG_OFF {
        config.args(["-d", o]);
    }
    if !make(&["tinyconfig"]) || !crate::run(&mut config) || !make(&["olddefconfig"]) {
        return Err("the kernel configuration failed".into());
    }
    let got = fs::read_to_string(build.join(".config")).unwrap_or_default();
    let missing: Vec<&str> = NO_IOMMU_CONFIG
        .iter()
        .copied()
        .filter(|o| !got.lines().any(|l| l == format!("CONFIG_{o}=y")))
        .collect();
    if !missing.is_empty() {
        return Err(format!("the kernel configuration lacks {}", missing.join(", ")));
    }
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    if !make(&[&format!("-j{jobs}"), "vmlinux"]) {
        return Err("the kernel build failed".into());
    }
    fs::copy(build.join("vmlinux"), &out).map_err(|e| format!("{}: {e}", out.display()))?;
    // The tree and the objects (about 2 GB) go; the kernel stays.
    let _ = fs::remove_dir_all(&src);
    let _ = fs::remove_dir_all(&build);
    Ok(out)
}

/// The no-IOMMU guest's `/init`: reserves hugepages, hands every NVMe
/// controller to vfio-pci (VFIO puts each in a no-IOMMU group of its own),
/// runs [`NO_IOMMU_PROGRAMS`] (the suite on all but 00:06.0, which is for
/// the back-end's checks), and reports as [`init_script`]'s does.
fn no_iommu_init() -> String {
    let mut s = init_preamble(64);
    s.push_str(
        "SUITE=\n\
         for d in /sys/bus/pci/devices/*; do\n\
         \x20 [ \"$(cat $d/class)\" = 0x010802 ] || continue\n\
         \x20 a=${d##*/}\n\
         \x20 case $a in 0000:00:06.0) ;; *) SUITE=\"$SUITE $a\";; esac\n\
         \x20 echo vfio-pci > $d/driver_override\n\
         \x20 echo $a > /sys/bus/pci/drivers_probe\n\
         \x20 echo \"$a -> $(basename \"$(readlink $d/driver)\"), IOMMU group $(cat $d/iommu_group/name 2>/dev/null)\"\n\
         done\n\
         echo \"/dev/vfio: $(ls /dev/vfio | tr '\\n' ' ')\"\n\
         status=0\n",
    );
    for (p, args) in NO_IOMMU_PROGRAMS {
        s.push_str(&format!(
            "echo \"== {p} {args}\"\n/bin/{p} {args} || {{ echo \"{p} exited with $?\"; status=1; }}\n"
        ));
    }
    s.push_str("if [ $status = 0 ]; then verdict '\\020'; else verdict '\\021'; fi\n");
    s
}

/// `cargo xtask vfio-test`'s second guest: a kernel with VFIO's no-IOMMU
/// mode and a machine without an IOMMU. True when the guest reported a pass
/// with both summaries clean, the greeting and the warning printed, and
/// every disk image as it was.
pub fn no_iommu_test(kvm: bool) -> bool {
    if !crate::setup::ensure_qemu() || !build_programs() {
        return false;
    }
    let kernel = match no_iommu_kernel() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("xtask: no-IOMMU kernel: {e}");
            return false;
        }
    };
    let initrd = (|| -> Result<PathBuf, String> {
        let busybox = unpacked("busybox-static", &cache_dir())?.join("bin/busybox");
        let mut cpio = Cpio::default();
        for d in ["bin", "dev", "proc", "sys", "tmp"] {
            cpio.dir(d);
        }
        cpio.entry("dev/console", 0o020600, (5, 1), &[]);
        let read = |p: &Path| fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        cpio.file("bin/busybox", true, &read(&busybox)?);
        let bins = root().join("target").join(TARGET).join("release");
        for (p, _) in NO_IOMMU_PROGRAMS {
            cpio.file(&format!("bin/{p}"), true, &read(&bins.join(p))?);
        }
        cpio.file("init", true, no_iommu_init().as_bytes());
        let out = work_dir().join("vfio-noiommu-initramfs.cpio");
        fs::write(&out, cpio.finish()).map_err(|e| e.to_string())?;
        Ok(out)
    })();
    let initrd = match initrd {
        Ok(p) => p,
        Err(e) => {
            eprintln!("xtask: initramfs: {e}");
            return false;
        }
    };
    let name = "vfio no-IOMMU mode in a Linux guest";
    let tag = slug(name);
    let cmd = qemu(kvm, &kernel, &initrd, "vfio.enable_unsafe_noiommu_mode=1");
    // The first guest's two controllers on bus 0 (for the suite), without
    // an IOMMU, and one for the back-end's checks that takes 4 MiB in a
    // command (MDTS 10): one command's buffer then spans two hugepages.
    let layout: [(&str, &[(u32, bool)]); 3] = [
        ("bus=pcie.0,addr=0x4", &[(512, false), (4096, false)]),
        ("bus=pcie.0,addr=0x5,cmb_size_mb=16", &[(4096, false), (512, true)]),
        ("bus=pcie.0,addr=0x6,mdts=10", &[(512, false)]),
    ];
    run_guest(name, cmd, &tag, &layout, 2, |text| {
        let warnings = text.lines().filter(|l| l.contains("WARNING: VFIO no-IOMMU mode")).count();
        eprintln!("    (each open warned of no-IOMMU mode: {warnings} warnings)");
        warnings > 0
    })
}

/// One `perf` run: total IOPS, and each thread's.
type Run = (f64, Vec<f64>);

/// Queue depth of the VFIO scaling bench.
const SCALING_QD: u32 = 32;
/// Seconds measured per run of the VFIO scaling bench (after half a second
/// of warm-up).
const SCALING_SECONDS: &str = "2";

/// The init of the scaling guest: the controller at 00:04.0 to vfio-pci,
/// then `perf` (4 KiB random reads at [`SCALING_QD`] per queue pair) with
/// one and with two threads, each with its own queue pair, pinned to vCPUs
/// `cores` (one list per thread count); each JSON report between markers.
fn scaling_init(vfio_modules: &[String], cores: [&str; 2]) -> String {
    let mut s = init_preamble(32);
    insmod(&mut s, vfio_modules);
    s.push_str(
        "echo vfio-pci > /sys/bus/pci/devices/0000:00:04.0/driver_override\n\
         echo 0000:00:04.0 > /sys/bus/pci/drivers_probe\n\
         status=0\n",
    );
    for (threads, cores) in [(1, cores[0]), (2, cores[1])] {
        s.push_str(&format!(
            "echo \"== perf threads={threads}\"\n\
             /bin/perf --device 0000:00:04.0 -w randread -q {SCALING_QD} -t {SCALING_SECONDS} -a 0.5 -j {threads} --cores {cores} --json || status=1\n\
             echo \"== end\"\n"
        ));
    }
    s.push_str("if [ $status = 0 ]; then verdict '\\020'; else verdict '\\021'; fi\n");
    s
}

/// The total and per-thread IOPS of each `perf` report in a scaling
/// guest's log: (threads, total, per thread).
fn scaling_results(text: &str) -> Vec<(u32, f64, Vec<f64>)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(threads) = line.trim().strip_prefix("== perf threads=").and_then(|t| t.parse().ok()) else {
            continue;
        };
        let mut iops = Vec::new();
        for l in lines.by_ref() {
            let l = l.trim();
            if l == "== end" {
                break;
            }
            if let Some(v) = l.strip_prefix("\"iops\":") {
                if let Ok(v) = v.trim().trim_end_matches(',').parse::<f64>() {
                    iops.push(v);
                }
            }
        }
        // The threads' reports come first, the total last.
        if let Some(total) = iops.pop() {
            out.push((threads, total, iops));
        }
    }
    out
}

/// `cargo xtask vfio-bench [--reps N] [--label TEXT] [--out FILE]`: `perf`
/// through VFIO in a Linux guest with 1 and 2 vCPUs, each with 1 and 2
/// queue pairs (threads), on a `null-co` controller; appends a section.
pub fn vfio_bench(kvm: bool, args: &[String]) -> bool {
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let reps: u32 = value("--reps").and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(3);
    let label = value("--label").unwrap_or_else(|| "VFIO perf: vCPUs and queue pairs".into());
    let out = value("--out").map(PathBuf::from).unwrap_or_else(|| root().join("BENCHMARKS.md"));
    let Some(guest) = ready_guest() else { return false };
    let modules: Vec<String> = guest.vfio_modules.iter().map(|(n, _)| n.clone()).collect();
    let date = crate::bench::output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let commit = crate::bench::commit(&out);
    // (vCPUs, cores for one thread, cores for two threads).
    let shapes: [(u32, [&str; 2]); 2] = [(1, ["0", "0,0"]), (2, ["0", "0,1"])];
    let mut cells: BTreeMap<(u32, u32), Vec<Run>> = BTreeMap::new();
    let mut failures = Vec::new();
    for rep in 0..reps {
        for (cpus, cores) in shapes {
            let initrd =
                match initramfs_with(&guest, &scaling_init(&modules, cores), "vfio-bench-initramfs.cpio") {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("xtask: initramfs: {e}");
                        return false;
                    }
                };
            let name = format!("vfio bench {cpus} vCPU {}", rep + 1);
            let mut cmd = qemu_with_iommu(kvm, &guest.kernel, &initrd, cpus);
            cmd.args(["-drive", "driver=null-co,size=1G,read-zeroes=on,if=none,id=bench0"]);
            cmd.args(["-device", "nvme,serial=bench,drive=bench0,bus=pcie.0,addr=0x4,max_ioqpairs=4"]);
            let Some((status, text)) = boot(&name, cmd) else {
                failures.push(format!("{name}: did not run"));
                continue;
            };
            let results = scaling_results(&text);
            if status != Some(PASS_STATUS) || results.len() != 2 {
                failures.push(format!("{name}: exit status {status:?}, {} reports", results.len()));
                continue;
            }
            for (threads, total, per) in results {
                eprintln!("    {cpus} vCPU, {threads} queue pair(s): {total:.0} IOPS {per:?}");
                cells.entry((cpus, threads)).or_default().push((total, per));
            }
        }
    }
    let median = |v: Vec<f64>| if v.is_empty() { 0.0 } else { crate::bench::median(&v) };
    use std::fmt::Write as _;
    let mut section = String::new();
    let quoted: Vec<String> = args.iter().map(|a| crate::bench::shell_quote(a)).collect();
    let _ = writeln!(section, "## {label}\n");
    let _ = writeln!(section, "- Command: `cargo xtask {}`", quoted.join(" "));
    let _ = writeln!(section, "- Date: {date}");
    let _ = writeln!(section, "- Commit: {commit}");
    let _ = writeln!(
        section,
        "- Guest: Debian's kernel with intel-iommu (QEMU {}), `perf` through VFIO on a `null-co` controller (max_ioqpairs=4): 4 KiB random reads, QD {SCALING_QD} per queue pair, 0.5 s warm-up, {SCALING_SECONDS} s measured; each thread its own queue pair, pinned to vCPU 0 (and 1); {reps} boot(s) per vCPU count",
        if kvm { "KVM" } else { "TCG" }
    );
    for f in &failures {
        let _ = writeln!(section, "- Failed boot (left out): {f}");
    }
    let _ = writeln!(section);
    let _ = writeln!(section, "| vCPUs | queue pairs | IOPS (median) | per queue pair (median) | boots |");
    let _ = writeln!(section, "|---:|---:|---:|---|---:|");
    for ((cpus, threads), runs) in &cells {
        let total = median(runs.iter().map(|r| r.0).collect());
        let per: Vec<String> = (0..*threads as usize)
            .map(|t| format!("{:.0}", median(runs.iter().filter_map(|r| r.1.get(t).copied()).collect())))
            .collect();
        let _ =
            writeln!(section, "| {cpus} | {threads} | {total:.0} | {} | {} |", per.join(" / "), runs.len());
    }
    print!("{section}");
    if cells.is_empty() {
        eprintln!("xtask: vfio-bench: no boot produced results");
        return false;
    }
    if let Err(e) = crate::bench::append_section(&out, &section) {
        eprintln!("xtask: vfio-bench: {}: {e}", out.display());
        return false;
    }
    failures.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_depends() {
        let ko = b"\x7fELF...\0license=GPL v2\0depends=vfio,vfio-pci-core,irqbypass\0vermagic=6.1\0";
        assert_eq!(module_depends(ko), vec!["vfio", "vfio_pci_core", "irqbypass"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
        assert!(module_depends(b"nothing here").is_empty());
    }

    #[test]
    fn cpio_entries_are_aligned() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("bin/x", true, b"abcde");
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        // name "bin/x" follows the 110-byte header, data on a 4-byte boundary.
        let second = out.windows(5).position(|w| w == b"bin/x").unwrap();
        let data = out.windows(5).position(|w| w == b"abcde").unwrap();
        assert_eq!(data % 4, 0);
        assert_eq!(&out[second - 110..second - 104], b"070701");
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn scaling_reports_parse() {
        let text = "boot noise\n== perf threads=2\n{\n  \"threads\": [\n    {\n      \"iops\": 10.5,\n    },\n    {\n      \"iops\": 20.5,\n    }\n  ],\n  \"total\": {\n    \"iops\": 31.0,\n  }\n}\n== end\n== perf threads=1\n(crashed)\n== end\n";
        let r = scaling_results(text);
        assert_eq!(r.len(), 1, "a report without numbers is left out");
        assert_eq!(r[0], (2, 31.0, vec![10.5, 20.5]));
    }
}
