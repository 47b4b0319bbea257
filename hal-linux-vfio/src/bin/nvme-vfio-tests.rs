//! What only this back-end can be asked: the setup mistakes people make
//! (each must give a message that says what to do), exclusive ownership,
//! caller buffers that share a page, and queue pairs on several threads.
//!
//! Runs in the guest of `cargo xtask vfio-test`, which provides: NVMe
//! controllers bound to vfio-pci on bus 0, and behind a PCI bridge (one IOMMU
//! group) one controller bound to the kernel's nvme driver and one bound to
//! vfio-pci. It unbinds and rebinds the kernel's controller. Prints one line
//! per check and `N passed, N failed, N skipped`; exits 1 on a failure.

use hal_linux_vfio::{bound_driver, nvme_addresses, VfioError, VfioHal, VfioOptions};
use hal_traits::Hal;
use nvme_nostd::{Controller, ControllerOptions, DmaBuffer, IoQueuePair, Namespace, PollLimit, QpairOptions};
use std::fmt::Display;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

type Result<T = ()> = std::result::Result<T, String>;

#[derive(Default)]
struct Totals {
    passed: u32,
    failed: u32,
    skipped: u32,
}

impl Totals {
    fn check(&mut self, name: &str, outcome: Result<Option<String>>) {
        match outcome {
            Ok(None) => {
                self.passed += 1;
                println!("test {name} ... ok");
            }
            Ok(Some(why)) => {
                self.skipped += 1;
                println!("test {name} ... skipped: {why}");
            }
            Err(why) => {
                self.failed += 1;
                println!("test {name} ... FAILED: {why}");
            }
        }
    }
}

fn fail(e: impl Display) -> String {
    e.to_string()
}

/// The controllers bound to `driver`.
fn bound_to(driver: &str) -> Vec<String> {
    nvme_addresses().into_iter().filter(|a| bound_driver(a).as_deref() == Some(driver)).collect()
}

fn iommu_group(address: &str) -> Option<String> {
    let link = std::fs::read_link(format!("/sys/bus/pci/devices/{address}/iommu_group")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// A controller bound to vfio-pci whose group holds no other device.
fn viable() -> Result<String> {
    bound_to("vfio-pci")
        .into_iter()
        .find(|a| {
            iommu_group(a).is_some_and(|g| {
                std::fs::read_dir(format!("/sys/kernel/iommu_groups/{g}/devices"))
                    .map(|d| d.count())
                    .unwrap_or(0)
                    == 1
            })
        })
        .ok_or_else(|| "no controller bound to vfio-pci alone in its IOMMU group".into())
}

/// The open must fail with an error that matches `want` and whose message
/// contains `says`.
fn expect_error(address: &str, want: impl Fn(&VfioError) -> bool, says: &str) -> Result<Option<String>> {
    match VfioHal::open(address, VfioOptions::default()) {
        Ok(_) => Err(format!("{address} opened")),
        Err(e) if want(&e) && e.to_string().contains(says) => Ok(None),
        Err(e) => Err(format!("wrong error: {e}")),
    }
}

fn sysfs_write(path: &str, value: &str) -> Result {
    std::fs::write(path, value).map_err(|e| format!("{path}: {e}"))
}

/// The kernel's controller unbound: the open says it is bound to nothing;
/// then it goes back to nvme.
fn unbound(kernel: &str) -> Result<Option<String>> {
    sysfs_write(&format!("/sys/bus/pci/devices/{kernel}/driver/unbind"), kernel)?;
    let outcome =
        expect_error(kernel, |e| matches!(e, VfioError::Unbound(_)), "is bound to no driver; bind it");
    sysfs_write("/sys/bus/pci/drivers_probe", kernel)?;
    if bound_driver(kernel).as_deref() != Some("nvme") {
        return Err(format!("{kernel} did not go back to nvme"));
    }
    outcome
}

/// The open of a group whose other device is bound to nvme.
fn not_viable() -> Result<Option<String>> {
    let kernel_groups: Vec<String> = bound_to("nvme").iter().filter_map(|a| iommu_group(a)).collect();
    let Some(address) =
        bound_to("vfio-pci").into_iter().find(|a| iommu_group(a).is_some_and(|g| kernel_groups.contains(&g)))
    else {
        return Err("no vfio-pci controller shares a group with an nvme one".into());
    };
    expect_error(
        &address,
        |e| matches!(e, VfioError::GroupNotViable { .. }),
        "is not viable: every device in",
    )
}

/// Opening `address` as an unprivileged user is refused with what to do.
fn as_nobody(address: &str) -> Result<Option<String>> {
    as_nobody_says(address, &["no permission to open /dev/vfio/", "run as root"])
}

/// Two handles on one device: the second is refused, and once the first is
/// gone the device opens again.
fn second_handle(address: &str) -> Result<Option<String>> {
    let first = VfioHal::open(address, VfioOptions::default()).map_err(fail)?;
    let refused = expect_error(address, |e| matches!(e, VfioError::GroupBusy(_)), "is busy");
    drop(first);
    refused?;
    VfioHal::open(address, VfioOptions::default())
        .map_err(|e| format!("after the first handle went: {e}"))?;
    Ok(None)
}

/// This program again, as an unprivileged user, opening `address`: the
/// message must contain each of `says`.
fn as_nobody_says(address: &str, says: &[&str]) -> Result<Option<String>> {
    use std::os::unix::process::CommandExt;
    let me = std::env::current_exe().map_err(fail)?;
    let out = Command::new(me).args(["--open", address]).uid(65534).gid(65534).output().map_err(fail)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Err(format!("opened as uid 65534: {text}"));
    }
    if says.iter().all(|w| text.contains(w)) {
        Ok(None)
    } else {
        Err(format!("wrong message: {}", text.trim()))
    }
}

fn attach(address: &str) -> Result<(Controller<VfioHal>, Namespace)> {
    let hal = VfioHal::open(address, VfioOptions::default()).map_err(fail)?;
    let ctrlr = Controller::new(hal, ControllerOptions::default().with_io_queues(4)).map_err(fail)?;
    let ns = ctrlr.namespace(1).map_err(fail)?;
    Ok((ctrlr, ns))
}

const TIMEOUT: Duration = Duration::from_secs(30);

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Two heap buffers of `len` bytes on one page (among a few allocations).
fn two_on_one_page(len: usize) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for _ in 0..256 {
        let v = vec![0u8; len];
        let page = v.as_ptr() as usize / 4096;
        let aligned = |p: *const u8| (p as usize).is_multiple_of(4);
        if aligned(v.as_ptr()) {
            if let Some(i) =
                kept.iter().position(|k| k.as_ptr() as usize / 4096 == page && aligned(k.as_ptr()))
            {
                return Ok((kept.swap_remove(i), v));
            }
        }
        kept.push(v);
    }
    Err(format!("the allocator put no two {len}-byte buffers on one page in 256 tries"))
}

/// Blocks `lba` and `lba + 1` read together into two heap buffers on one
/// page; `in_flight` looks at the back-end while both are in flight. The
/// two buffers, in block order.
fn two_reads_on_one_page(
    qp: &mut IoQueuePair<'_, VfioHal, Vec<u8>, u32, 8>,
    ns: &Namespace,
    lba: u64,
    in_flight: &dyn Fn() -> Result,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let (a, b) = two_on_one_page(ns.block_size() as usize)?;
    qp.read(ns, lba, 1, a, 1).map_err(|e| fail(e.error))?;
    qp.read(ns, lba + 1, 1, b, 2).map_err(|e| fail(e.error))?;
    let looked = in_flight();
    let mut got: Vec<(u32, Vec<u8>)> = Vec::new();
    let began = Instant::now();
    while got.len() < 2 && began.elapsed() < TIMEOUT {
        qp.poll(PollLimit::All, |_, c| {
            if c.result().is_ok() {
                got.push((c.context, c.buffer.unwrap_or_default()));
            }
        });
    }
    looked?;
    got.sort_by_key(|g| g.0);
    match <[_; 2]>::try_from(got) {
        Ok([(_, a), (_, b)]) => Ok((a, b)),
        Err(got) => Err(format!("{} of the 2 reads came back good", got.len())),
    }
}

/// Heap buffers through `share`: written, then read back by two reads in
/// flight together whose buffers share a page; every page is unmapped after.
fn heap_buffers(address: &str) -> Result<Option<String>> {
    let (ctrlr, ns) = attach(address)?;
    let bs = ns.block_size() as usize;
    if bs != 512 {
        return Ok(Some(format!("namespace 1 has {bs}-byte blocks; the check wants 512")));
    }
    let lba = 8;
    let data = pattern(7, 2 * bs);
    let saved;
    {
        let mut qp: IoQueuePair<'_, VfioHal, Vec<u8>, u32, 8> =
            ctrlr.create_io_qpair(QpairOptions::default()).map_err(fail)?;
        let run = |qp: &mut IoQueuePair<'_, VfioHal, Vec<u8>, u32, 8>, cid| {
            let done = qp.wait(cid, TIMEOUT, drop).map_err(fail)?;
            done.result().map_err(fail)?;
            done.buffer.ok_or_else(|| "no buffer back".to_string())
        };
        let cid = qp.read(&ns, lba, 2, vec![0u8; 2 * bs], 0).map_err(|e| fail(e.error))?;
        saved = run(&mut qp, cid)?;
        let cid = qp.write(&ns, lba, 2, data.clone(), 0).map_err(|e| fail(e.error))?;
        run(&mut qp, cid)?;
        let (a, b) = two_reads_on_one_page(&mut qp, &ns, lba, &|| {
            // Both shared at submission: their page is mapped once, for two.
            let mapped = ctrlr.hal().shared_pages();
            if mapped != 1 {
                return Err(format!("two buffers on one page took {mapped} IOMMU mappings"));
            }
            Ok(())
        })?;
        if a != data[..bs] || b != data[bs..] {
            return Err("a read through a shared page returned the wrong bytes".into());
        }
        let cid = qp.write(&ns, lba, 2, saved, 0).map_err(|e| fail(e.error))?;
        run(&mut qp, cid)?;
    }
    let left = ctrlr.hal().shared_pages();
    if left != 0 {
        return Err(format!("{left} pages still mapped after every request came back"));
    }
    Ok(None)
}

/// A scatter list of heap buffers (the seed's `writev`/`readv`): each
/// piece shared by the back-end (mapped page by page through the IOMMU, or
/// bounced in no-IOMMU mode), described by an SGL (the pieces are not
/// page-shaped); written, read back into other buffers, and every mapping
/// and bounce buffer given back.
fn scatter_of_heap_buffers(address: &str) -> Result<Option<String>> {
    let (ctrlr, ns) = attach(address)?;
    let hal = ctrlr.hal();
    let bs = ns.block_size() as usize;
    let (lba, pieces) = (256u64, 4usize);
    type List = nvme_nostd::ScatterList<Vec<u8>, 8>;
    let list = |seed: Option<u64>| {
        let mut l = List::new();
        for i in 0..pieces {
            let v = seed.map_or_else(|| vec![0x5au8; bs], |s| pattern(s + i as u64, bs));
            let _ = l.push(v);
        }
        l
    };
    let flat = |l: &List| l.as_slice().concat();
    let mut qp: IoQueuePair<'_, VfioHal, List, (), 4> =
        ctrlr.create_io_qpair(QpairOptions::default()).map_err(fail)?;
    let mut run = |write: bool, l: List| -> Result<List> {
        let blocks = pieces as u32;
        let cid = if write { qp.write(&ns, lba, blocks, l, ()) } else { qp.read(&ns, lba, blocks, l, ()) }
            .map_err(|e| fail(e.error))?;
        let held = hal.shared_pages() + hal.bounce_buffers();
        let done = qp.wait(cid, TIMEOUT, drop).map_err(fail)?;
        done.result().map_err(fail)?;
        if held == 0 {
            return Err("nothing was shared for a list of heap buffers".into());
        }
        done.buffer.ok_or_else(|| "no buffer back".into())
    };
    let saved = run(false, list(None))?;
    let data = list(Some(40));
    let want = flat(&data);
    run(true, data)?;
    let back = run(false, list(None))?;
    run(true, saved)?;
    if flat(&back) != want {
        return Err("the scatter list read back differs".into());
    }
    if hal.shared_pages() != 0 || hal.bounce_buffers() != 0 {
        return Err(format!(
            "{} pages mapped and {} bounce buffers after every request",
            hal.shared_pages(),
            hal.bounce_buffers()
        ));
    }
    Ok(None)
}

/// One queue pair per thread, each thread on its own CPU, writing and
/// reading back its own range of blocks.
fn threads(address: &str) -> Result<Option<String>> {
    let (ctrlr, ns) = attach(address)?;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let workers = cpus.clamp(2, 4);
    let bs = ns.block_size() as usize;
    let per = 64u64;
    // The blocks the threads write, saved and written back after.
    let (first, span) = (1024u64, workers as u64 * per);
    let whole = |write: Option<Vec<u8>>| -> Result<Vec<u8>> {
        let mut qp: IoQueuePair<'_, VfioHal, Vec<u8>, (), 4> =
            ctrlr.create_io_qpair(QpairOptions::default().with_max_transfer_bytes(1 << 20)).map_err(fail)?;
        let blocks = span as u32;
        let cid = match write {
            Some(data) => qp.write(&ns, first, blocks, data, ()),
            None => qp.read(&ns, first, blocks, vec![0u8; span as usize * bs], ()),
        }
        .map_err(|e| fail(e.error))?;
        let done = qp.wait(cid, TIMEOUT, drop).map_err(fail)?;
        done.result().map_err(fail)?;
        done.buffer.ok_or_else(|| "no buffer back".into())
    };
    let saved = whole(None)?;
    let results: Vec<Result> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|t| {
                let (ctrlr, ns) = (&ctrlr, &ns);
                s.spawn(move || -> Result {
                    let mut set = rustix::thread::CpuSet::new();
                    set.set(t % cpus);
                    rustix::thread::sched_setaffinity(None, &set).map_err(fail)?;
                    let mut qp: IoQueuePair<'_, VfioHal, DmaBuffer<'_, VfioHal>, u64, 16> =
                        ctrlr.create_io_qpair(QpairOptions::default()).map_err(fail)?;
                    let first = first + t as u64 * per;
                    for round in 0..4u64 {
                        for i in 0..per / 8 {
                            let lba = first + i * 8;
                            let want = pattern(round << 32 | lba, 8 * bs);
                            let mut buf = DmaBuffer::new(ctrlr.hal(), 8 * bs).map_err(fail)?;
                            buf.copy_from_slice(&want);
                            let cid = qp.write(ns, lba, 8, buf, lba).map_err(|e| fail(e.error))?;
                            qp.wait(cid, TIMEOUT, drop).map_err(fail)?.result().map_err(fail)?;
                            let buf = DmaBuffer::new(ctrlr.hal(), 8 * bs).map_err(fail)?;
                            let cid = qp.read(ns, lba, 8, buf, lba).map_err(|e| fail(e.error))?;
                            let done = qp.wait(cid, TIMEOUT, drop).map_err(fail)?;
                            done.result().map_err(fail)?;
                            if done.buffer.as_deref() != Some(&want[..]) {
                                return Err(format!("thread {t}: lba {lba} read back wrong"));
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a thread panicked".into()))).collect()
    });
    let restored = whole(Some(saved));
    results.into_iter().collect::<Result>()?;
    restored.map_err(|e| format!("restoring the blocks: {e}"))?;
    Ok(None)
}

/// The hugepage chunks one DMA allocation of a fresh handle made.
fn huge_chunks(address: &str, options: VfioOptions) -> Result<usize> {
    let hal = VfioHal::open(address, options).map_err(fail)?;
    let region = hal.dma_alloc(1).map_err(fail)?;
    let huge = hal.hugepage_chunks();
    // SAFETY: allocated above and never named to the device.
    unsafe { hal.dma_free(region) };
    Ok(huge)
}

/// DMA memory comes from hugepages when the system has them reserved, and
/// not when the options turn them off.
fn hugepages(address: &str) -> Result<Option<String>> {
    let reserved: u64 = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if reserved == 0 {
        return Ok(Some("no hugepages reserved".into()));
    }
    if huge_chunks(address, VfioOptions::default())? == 0 {
        return Err(format!("{reserved} hugepages reserved, none used"));
    }
    if huge_chunks(address, VfioOptions::default().with_hugepages(false))? != 0 {
        return Err("hugepages used although turned off".into());
    }
    // With every hugepage taken, memory still comes, and the advice says
    // how to get some.
    let hal = VfioHal::open(address, VfioOptions::default()).map_err(fail)?;
    std::fs::write("/proc/sys/vm/nr_hugepages", "0").map_err(fail)?;
    let region = hal.dma_alloc(1);
    let advice = hal.hugepage_advice();
    std::fs::write("/proc/sys/vm/nr_hugepages", reserved.to_string()).map_err(fail)?;
    let region = region.map_err(|e| format!("without hugepages: {e}"))?;
    // SAFETY: allocated above and never named to the device.
    unsafe { hal.dma_free(region) };
    match advice {
        Some(a) if a.contains("/proc/sys/vm/nr_hugepages") && hal.hugepage_chunks() == 0 => Ok(None),
        other => {
            Err(format!("without hugepages: advice {other:?}, {} hugepage chunks", hal.hugepage_chunks()))
        }
    }
}

/// `nvme-vfio-bind` with `args`: its exit status and what it printed.
fn bind_tool(args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new("/bin/nvme-vfio-bind").args(args).output().map_err(fail)?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text.trim().to_string()))
}

/// The bind tool on the kernel's controller, which holds a mounted
/// filesystem: refused with the mount named; after the unmount, bound to
/// vfio-pci and usable through this back-end; then given back to nvme.
fn bind_round_trip(kernel: &str) -> Result<Option<String>> {
    let (ok, text) = bind_tool(&[kernel])?;
    if ok || !text.contains("is in use") || !text.contains("on /mnt") {
        return Err(format!("bind of a mounted device: {text}"));
    }
    if bound_driver(kernel).as_deref() != Some("nvme") {
        return Err("a refused bind moved the device".into());
    }
    let unmounted = Command::new("umount").arg("/mnt").status().map_err(fail)?;
    if !unmounted.success() {
        return Err("umount /mnt failed".into());
    }
    let (ok, text) = bind_tool(&[kernel])?;
    if !ok || bound_driver(kernel).as_deref() != Some("vfio-pci") {
        return Err(format!("bind after the unmount: {text}"));
    }
    let (ctrlr, _) = attach(kernel).map_err(|e| format!("attach after the bind: {e}"))?;
    drop(ctrlr);
    let (ok, text) = bind_tool(&["--unbind", kernel])?;
    if !ok || bound_driver(kernel).as_deref() != Some("nvme") {
        return Err(format!("unbind: {text}"));
    }
    Ok(None)
}

/// The kernel's name of the controller at `address` (`nvme0`).
fn kernel_name(address: &str) -> Result<String> {
    std::fs::read_dir(format!("/sys/bus/pci/devices/{address}/nvme"))
        .map_err(fail)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("nvme"))
        .ok_or_else(|| format!("{address} has no nvme controller in sysfs"))
}

fn json_of(program: &str, args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{program} {}: not JSON: {e}", args.join(" ")))
}

/// Every field both objects have, compared (arrays of objects element by
/// element): the number compared, and the differences.
fn compare(
    path: &str,
    theirs: &serde_json::Value,
    ours: &serde_json::Value,
    diffs: &mut Vec<String>,
) -> usize {
    use serde_json::Value as J;
    match (theirs, ours) {
        (J::Object(t), J::Object(o)) => t
            .iter()
            .filter_map(|(k, tv)| o.get(k).map(|ov| compare(&format!("{path}.{k}"), tv, ov, diffs)))
            .sum(),
        (J::Array(t), J::Array(o)) => {
            if t.len() != o.len() {
                diffs.push(format!("{path}: {} entries against {}", t.len(), o.len()));
            }
            t.iter()
                .zip(o)
                .enumerate()
                .map(|(i, (tv, ov))| compare(&format!("{path}[{i}]"), tv, ov, diffs))
                .sum()
        }
        _ => {
            if theirs != ours {
                diffs.push(format!("{path}: nvme-cli {theirs}, identify {ours}"));
            }
            1
        }
    }
}

/// `identify --json` through VFIO against nvme-cli's `id-ctrl` and `id-ns`
/// of the same controller under the kernel's driver: every field both print
/// agrees.
fn identify_agrees(kernel: &str) -> Result<Option<String>> {
    let name = kernel_name(kernel)?;
    // A controller the kernel just probed answers once it is live.
    let state = format!("/sys/class/nvme/{name}/state");
    let began = Instant::now();
    while std::fs::read_to_string(&state).map(|s| s.trim() != "live").unwrap_or(true) {
        if began.elapsed() > TIMEOUT {
            return Err(format!("{name} never became live"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ctrl = json_of("nvme", &["id-ctrl", &format!("/dev/{name}"), "-o", "json"])?;
    let ns = json_of("nvme", &["id-ns", &format!("/dev/{name}n1"), "-o", "json"])?;
    let (ok, text) = bind_tool(&[kernel])?;
    if !ok {
        return Err(format!("bind: {text}"));
    }
    let ours = json_of("/bin/identify", &["--device", kernel, "--json"]);
    let (back, text) = bind_tool(&["--unbind", kernel])?;
    let ours = ours?;
    if !back {
        return Err(format!("unbind: {text}"));
    }
    let mut diffs = Vec::new();
    let fields = compare("id-ctrl", &ctrl, &ours["controller"], &mut diffs)
        + compare("id-ns", &ns, &ours["namespaces"][0], &mut diffs);
    println!("identify and nvme-cli: {fields} fields compared, {} differ", diffs.len());
    for d in &diffs {
        println!("  {d}");
    }
    // nvme-cli 2.3 prints 85 + 13 (one power state) controller fields and
    // 36 + 3 per LBA format namespace fields: most must be there to compare.
    if fields < 120 {
        return Err(format!("only {fields} fields in common"));
    }
    match diffs.first() {
        None => Ok(None),
        Some(d) => Err(format!("{} fields differ, first {d}", diffs.len())),
    }
}

/// Waits until the kernel's controller at `address` is live; its name.
fn kernel_live(address: &str) -> Result<String> {
    let began = Instant::now();
    loop {
        if let Ok(name) = kernel_name(address) {
            let state = std::fs::read_to_string(format!("/sys/class/nvme/{name}/state")).unwrap_or_default();
            if state.trim() == "live" && std::path::Path::new(&format!("/dev/{name}n1")).exists() {
                return Ok(name);
            }
        }
        if began.elapsed() > TIMEOUT {
            return Err(format!("{address} never became live under the kernel's driver"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn dd(args: &[&str]) -> Result {
    let out = Command::new("dd").args(args).output().map_err(fail)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("dd {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Data crosses between the two drivers: blocks the kernel wrote (dd) read
/// back through VFIO, and blocks written through VFIO read back by the
/// kernel (dd) after the controller went back to it. The namespace is the
/// scratch one /init put a filesystem on.
fn kernel_sees_our_data(kernel: &str) -> Result<Option<String>> {
    let name = kernel_live(kernel)?;
    let (bs, blocks) = (512usize, 64u64);
    let theirs = pattern(11, bs * blocks as usize);
    let ours = pattern(12, bs * blocks as usize);
    std::fs::write("/tmp/theirs", &theirs).map_err(fail)?;
    let dev = format!("/dev/{name}n1");
    dd(&["if=/tmp/theirs", &format!("of={dev}"), "bs=512", "seek=64", "conv=fsync"])?;
    let (ok, text) = bind_tool(&[kernel])?;
    if !ok {
        return Err(format!("bind: {text}"));
    }
    let through_vfio = || -> Result {
        let (ctrlr, ns) = attach(kernel)?;
        if ns.block_size() as usize != bs {
            return Err(format!("{}-byte blocks", ns.block_size()));
        }
        let mut qp: IoQueuePair<'_, VfioHal, Vec<u8>, (), 4> =
            ctrlr.create_io_qpair(QpairOptions::default()).map_err(fail)?;
        let cid = qp.read(&ns, 64, blocks as u32, vec![0u8; theirs.len()], ()).map_err(|e| fail(e.error))?;
        let done = qp.wait(cid, TIMEOUT, drop).map_err(fail)?;
        done.result().map_err(fail)?;
        if done.buffer.as_deref() != Some(&theirs[..]) {
            return Err("blocks the kernel wrote read back differently through VFIO".into());
        }
        let cid = qp.write(&ns, 0, blocks as u32, ours.clone(), ()).map_err(|e| fail(e.error))?;
        qp.wait(cid, TIMEOUT, drop).map_err(fail)?.result().map_err(fail)?;
        Ok(())
    };
    let result = through_vfio();
    let (back, text) = bind_tool(&["--unbind", kernel])?;
    result?;
    if !back {
        return Err(format!("unbind: {text}"));
    }
    let name = kernel_live(kernel)?;
    dd(&[&format!("if=/dev/{name}n1"), "of=/tmp/ours", "bs=512", "count=64"])?;
    let read = std::fs::read("/tmp/ours").map_err(fail)?;
    if read != ours {
        return Err("blocks written through VFIO read back differently by the kernel".into());
    }
    Ok(None)
}

/// True for a number above zero (not NaN).
fn positive(x: f64) -> bool {
    x > 0.0
}

/// True when `a <= b` (neither NaN).
fn ordered(a: f64, b: f64) -> bool {
    a <= b
}

/// `perf` on the scratch namespace 2 of `address`: a mixed random workload
/// from two pinned threads, whose JSON must add up; a bad I/O size refused;
/// the text report with its progress line.
fn perf(address: &str) -> Result<Option<String>> {
    let common = ["--device", address, "--namespace", "2", "-q", "8"];
    let mut args: Vec<&str> = common.to_vec();
    args.extend(["-w", "randrw", "-M", "70", "-t", "1", "-j", "2", "--cores", "0,1", "--json"]);
    let j = json_of("/bin/perf", &args)?;
    let total = &j["total"];
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let (ios, seconds) = (f(&total["ios"]), f(&j["seconds"]));
    if !positive(ios) || f(&total["errors"]) != 0.0 {
        return Err(format!("total: {total}"));
    }
    if (f(&total["iops"]) - ios / seconds).abs() > 1e-6 * ios / seconds {
        return Err(format!("IOPS {} against {ios} I/Os in {seconds} s", total["iops"]));
    }
    let lat = &total["latency_us"];
    let order = ["min", "p50", "p90", "p99", "p99.9", "p99.99", "max"].map(|k| f(&lat[k]));
    if order.windows(2).any(|w| !ordered(w[0], w[1]))
        || !(ordered(order[0], f(&lat["avg"])) && ordered(f(&lat["avg"]), order[6]))
    {
        return Err(format!("latency figures out of order: {lat}"));
    }
    let threads = j["threads"].as_array().cloned().unwrap_or_default();
    let per: Vec<f64> = threads.iter().map(|t| f(&t["ios"])).collect();
    if threads.len() != 2 || per.iter().any(|n| !positive(*n)) || per.iter().sum::<f64>() != ios {
        return Err(format!("threads: {}", j["threads"]));
    }
    if threads[1]["core"] != 1 {
        return Err(format!("thread 1 not on core 1: {}", threads[1]));
    }
    // A size that is not whole blocks is refused before anything is sent.
    let mut bad: Vec<&str> = common.to_vec();
    bad.extend(["-o", "1000", "-t", "1"]);
    let out = Command::new("/bin/perf").args(&bad).output().map_err(fail)?;
    let said = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || !said.contains("not a multiple of the block size") {
        return Err(format!("-o 1000: {}", said.trim()));
    }
    let mut text: Vec<&str> = common.to_vec();
    text.extend(["-w", "read", "-t", "2"]);
    let out = Command::new("/bin/perf").args(&text).output().map_err(fail)?;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() || !stdout.contains("\nTotal ") || !stdout.contains("Latency percentiles") {
        return Err(format!("text report: {stdout}{stderr}"));
    }
    if !stderr.contains("[   1 s]") {
        return Err(format!("no progress line: {stderr}"));
    }
    println!("perf: {ios} I/Os in {seconds:.2} s from two threads, p99 {} us", lat["p99"]);
    Ok(None)
}

/// A piece of registered memory, as an application's buffer type.
struct Piece {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the bytes lie in a mapping that outlives every request (it is
// unmapped after the controller is dropped), pieces never overlap, and the
// pointer is a raw one: moving a Piece asserts nothing over the bytes.
unsafe impl nvme_nostd::IoBuffer for Piece {
    fn as_dma_slice(&mut self) -> std::ptr::NonNull<[u8]> {
        std::ptr::NonNull::slice_from_raw_parts(self.ptr, self.len)
    }
}

/// Memory registered ahead of time: I/O to buffers inside it maps nothing
/// per request, and the data is right; a region that is not whole pages is
/// refused.
fn registered_memory(address: &str) -> Result<Option<String>> {
    let len = 2 << 20;
    // SAFETY: a new private anonymous mapping, unmapped at the end of this
    // function, after the controller (and its HAL) are gone.
    let region = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::PRIVATE,
        )
    }
    .map_err(fail)?;
    let base = std::ptr::NonNull::new(region.cast::<u8>()).ok_or("mmap gave a null pointer")?;
    let outcome = (|| -> Result<Option<String>> {
        let (ctrlr, ns) = attach(address)?;
        let hal = ctrlr.hal();
        // SAFETY: a piece that is not whole pages: refused before anything
        // is mapped.
        let bad = unsafe { hal.register(std::ptr::NonNull::slice_from_raw_parts(base.add(8), 4096)) };
        if !matches!(&bad, Err(VfioError::Registration(why)) if why.contains("whole 4 KiB pages")) {
            return Err(format!("an unaligned region: {bad:?}"));
        }
        // SAFETY: the mapping outlives the HAL (see above), and holds
        // nothing but this check's buffers.
        unsafe { hal.register(std::ptr::NonNull::slice_from_raw_parts(base, len)) }.map_err(fail)?;
        if hal.registered_bytes() != len {
            return Err(format!("{} bytes registered", hal.registered_bytes()));
        }
        let bs = ns.block_size() as usize;
        let (lba, blocks) = (4096u64, 8u32);
        let bytes = bs * blocks as usize;
        // Pieces at offsets that are not page-aligned, to use PRP lists.
        let piece = |i: usize| {
            // SAFETY: 3 pieces of `bytes` + 512 each fit in the 2 MiB.
            Piece { ptr: unsafe { base.add(512 + i * (bytes + 512)) }, len: bytes }
        };
        let mut qp: IoQueuePair<'_, VfioHal, Piece, (), 4> =
            ctrlr.create_io_qpair(QpairOptions::default()).map_err(fail)?;
        let mut run = |write: bool, p: Piece| -> Result<Piece> {
            let cid =
                if write { qp.write(&ns, lba, blocks, p, ()) } else { qp.read(&ns, lba, blocks, p, ()) }
                    .map_err(|e| fail(e.error))?;
            // While it is in flight, nothing of it was mapped per request.
            let mapped = hal.shared_pages();
            let done = qp.wait(cid, TIMEOUT, drop).map_err(fail)?;
            done.result().map_err(fail)?;
            if mapped != 0 {
                return Err(format!("{mapped} pages mapped for a registered buffer"));
            }
            done.buffer.ok_or_else(|| "no buffer back".into())
        };
        let view = |p: &Piece| {
            // SAFETY: the piece is back from the device (its request completed).
            unsafe { std::slice::from_raw_parts_mut(p.ptr.as_ptr(), p.len) }
        };
        let saved = run(false, piece(0))?;
        let mut data = piece(1);
        view(&mut data).copy_from_slice(&pattern(21, bytes));
        run(true, data)?;
        let back = run(false, piece(2))?;
        let good = view(&back) == pattern(21, bytes);
        run(true, saved)?;
        if !good {
            return Err("registered memory read back wrong".into());
        }
        Ok(None)
    })();
    // SAFETY: the controller and its HAL are gone, and so is every request.
    unsafe { rustix::mm::munmap(region, len) }.map_err(fail)?;
    outcome
}

/// No-IOMMU mode: the open succeeds and says so, on standard error and in
/// [`VfioHal::no_iommu`].
fn no_iommu_open_warns(address: &str) -> Result<Option<String>> {
    let me = std::env::current_exe().map_err(fail)?;
    let out = Command::new(me).args(["--open", address]).output().map_err(fail)?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("the open failed: {}", String::from_utf8_lossy(&out.stdout).trim()));
    }
    if !err.contains(hal_linux_vfio::NO_IOMMU_WARNING) || !err.contains(address) {
        return Err(format!("no warning on standard error (it has: {})", err.trim()));
    }
    let hal = VfioHal::open(address, VfioOptions::default()).map_err(fail)?;
    if !hal.no_iommu() {
        return Err("no_iommu() is false".into());
    }
    Ok(None)
}

/// No-IOMMU mode refused by the options, with what to do.
fn no_iommu_refused(address: &str) -> Result<Option<String>> {
    match VfioHal::open(address, VfioOptions::default().with_no_iommu(false)) {
        Ok(_) => Err("opened although the options refuse no-IOMMU mode".into()),
        Err(e @ VfioError::NoIommuRefused(_)) if e.to_string().contains("turn the IOMMU on") => Ok(None),
        Err(e) => Err(format!("wrong error: {e}")),
    }
}

/// Heap buffers in no-IOMMU mode go through bounce buffers: a 3 MiB write
/// and read in one command each (one bounce buffer, so of two pieces: a
/// piece is at most a hugepage), and two reads in flight whose buffers
/// share a page, all with the right bytes; every bounce buffer is given
/// back.
fn no_iommu_bounced(address: &str) -> Result<Option<String>> {
    let (ctrlr, ns) = attach(address)?;
    let hal = ctrlr.hal();
    let bs = ns.block_size() as usize;
    let (lba, big) = (64u64, 3usize << 20);
    let blocks = (big / bs) as u32;
    let mut qp: IoQueuePair<'_, VfioHal, Vec<u8>, u32, 8> =
        ctrlr.create_io_qpair(QpairOptions::default()).map_err(fail)?;
    let run = |qp: &mut IoQueuePair<'_, VfioHal, Vec<u8>, u32, 8>, cid| {
        let done = qp.wait(cid, TIMEOUT, drop).map_err(fail)?;
        done.result().map_err(fail)?;
        done.buffer.ok_or_else(|| "no buffer back".to_string())
    };
    let cid = qp.read(&ns, lba, blocks, vec![0u8; big], 0).map_err(|e| fail(e.error))?;
    let saved = run(&mut qp, cid)?;
    let data = pattern(11, big);
    let cid = qp.write(&ns, lba, blocks, data.clone(), 0).map_err(|e| fail(e.error))?;
    if hal.bounce_buffers() != 1 {
        return Err(format!("a write in flight has {} bounce buffers", hal.bounce_buffers()));
    }
    run(&mut qp, cid)?;
    // Read into a buffer full of other bytes: every byte must be replaced.
    let cid = qp.read(&ns, lba, blocks, vec![0xa5u8; big], 0).map_err(|e| fail(e.error))?;
    let back = run(&mut qp, cid)?;
    if back != data {
        let at = back.iter().zip(&data).position(|(a, b)| a != b).unwrap_or(0);
        return Err(format!("the 3 MiB read back differs from byte {at}"));
    }
    let (a, b) = two_reads_on_one_page(&mut qp, &ns, lba, &|| match hal.bounce_buffers() {
        2 => Ok(()),
        n => Err(format!("two reads in flight have {n} bounce buffers")),
    })?;
    if a != data[..bs] || b != data[bs..2 * bs] {
        return Err("reads through buffers on one page returned the wrong bytes".into());
    }
    let cid = qp.write(&ns, lba, blocks, saved, 0).map_err(|e| fail(e.error))?;
    run(&mut qp, cid)?;
    if hal.bounce_buffers() != 0 {
        return Err(format!("after every request: {} bounce buffers", hal.bounce_buffers()));
    }
    Ok(None)
}

/// DMA memory above 2 MiB in no-IOMMU mode: hugepages that lie together in
/// physical memory, or the device would write past the first into whatever
/// follows it. A 4 MiB write and read in one command each, from and into
/// `DmaBuffer`s, with the right bytes.
fn no_iommu_large_dma(address: &str) -> Result<Option<String>> {
    let (ctrlr, ns) = attach(address)?;
    let (lba, len) = (128u64, 4usize << 20);
    let blocks = (len / ns.block_size() as usize) as u32;
    let mut qp: IoQueuePair<'_, VfioHal, DmaBuffer<'_, VfioHal>, (), 4> =
        ctrlr.create_io_qpair(QpairOptions::default()).map_err(fail)?;
    let mut run = |write: bool, buf| -> Result<DmaBuffer<'_, VfioHal>> {
        let before = qp.stats().submitted;
        let cid =
            if write { qp.write(&ns, lba, blocks, buf, ()) } else { qp.read(&ns, lba, blocks, buf, ()) }
                .map_err(|e| fail(e.error))?;
        let done = qp.wait(cid, TIMEOUT, drop).map_err(fail)?;
        done.result().map_err(fail)?;
        if qp.stats().submitted - before != 1 {
            return Err("4 MiB went out in more than one command (is MDTS 4 MiB or more?)".into());
        }
        done.buffer.ok_or_else(|| "no buffer back".into())
    };
    let saved = run(false, DmaBuffer::new(ctrlr.hal(), len).map_err(fail)?)?;
    let data = pattern(13, len);
    let mut w = DmaBuffer::new(ctrlr.hal(), len).map_err(fail)?;
    w.copy_from_slice(&data);
    run(true, w)?;
    let mut r = DmaBuffer::new(ctrlr.hal(), len).map_err(fail)?;
    r.fill(0xa5);
    let back = run(false, r)?;
    let good = back[..] == data[..];
    run(true, saved)?;
    if !good {
        let at = back.iter().zip(&data).position(|(a, b)| a != b).unwrap_or(0);
        return Err(format!("the 4 MiB read back differs from byte {at}"));
    }
    Ok(None)
}

/// Without CAP_SYS_RAWIO, a no-IOMMU group is refused even when its file
/// lets everyone open it (made so for the check): the kernel's own check
/// answers, and the message says what it wants.
fn no_iommu_raw_io(address: &str) -> Result<Option<String>> {
    use std::os::unix::fs::PermissionsExt;
    let group = iommu_group(address).ok_or("no IOMMU group")?;
    let file = format!("/dev/vfio/noiommu-{group}");
    let mode = std::fs::metadata(&file).map_err(|e| format!("{file}: {e}"))?.permissions().mode();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).map_err(fail)?;
    let outcome = as_nobody_says(address, &["takes CAP_SYS_RAWIO (run as root)"]);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).map_err(fail)?;
    outcome
}

/// Without CAP_SYS_ADMIN, `/proc/self/pagemap` hides physical addresses:
/// the open says so at once (not the first DMA allocation).
fn no_iommu_sys_admin(address: &str) -> Result<Option<String>> {
    let me = std::env::current_exe().map_err(fail)?;
    let out = Command::new(me).args(["--open-without-sys-admin", address]).output().map_err(fail)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Err("opened without CAP_SYS_ADMIN".into());
    }
    if text.contains("needs physical addresses") && text.contains("needs CAP_SYS_ADMIN") {
        Ok(None)
    } else {
        Err(format!("wrong message: {}", text.trim()))
    }
}

/// Registration needs an IOMMU: refused in no-IOMMU mode, with why.
fn no_iommu_register(address: &str) -> Result<Option<String>> {
    let hal = VfioHal::open(address, VfioOptions::default()).map_err(fail)?;
    let mut memory = vec![0u8; 3 * 4096];
    let at = memory.as_ptr().align_offset(4096);
    let page = std::ptr::NonNull::from(&mut memory[at..at + 4096]);
    // SAFETY: refused before anything is mapped (and `memory` outlives the
    // HAL either way).
    match unsafe { hal.register(page) } {
        Err(VfioError::Registration(why)) if why.contains("no-IOMMU mode cannot register") => Ok(None),
        other => Err(format!("register: {other:?}")),
    }
}

/// DMA memory from hugepages only: none reserved, or turned off in the
/// options, and the controller cannot start, with a message that says so.
fn no_iommu_needs_hugepages(address: &str) -> Result<Option<String>> {
    let path = "/proc/sys/vm/nr_hugepages";
    let reserved = std::fs::read_to_string(path).map_err(fail)?;
    let start = |options: VfioOptions| -> Result<String> {
        let hal = VfioHal::open(address, options).map_err(fail)?;
        match Controller::new(hal, ControllerOptions::default()) {
            Ok(_) => Err("the controller started".into()),
            Err(e) => Ok(e.to_string()),
        }
    };
    let off = start(VfioOptions::default().with_hugepages(false))?;
    sysfs_write(path, "0")?;
    let none = start(VfioOptions::default());
    sysfs_write(path, reserved.trim())?;
    let now = std::fs::read_to_string(path).map_err(fail)?;
    if now.trim() != reserved.trim() {
        return Err(format!("{path} is {} again, not {}", now.trim(), reserved.trim()));
    }
    let none = none?;
    if !off.contains("VfioOptions turns them off") {
        return Err(format!("hugepages off: {off}"));
    }
    if !none.contains("nr_hugepages") {
        return Err(format!("no hugepages: {none}"));
    }
    Ok(None)
}

/// The checks of no-IOMMU mode, on `address` (a controller in a no-IOMMU
/// group, in a guest without an IOMMU).
fn no_iommu(t: &mut Totals, address: &str) {
    t.check("no-IOMMU: the open warns on standard error", no_iommu_open_warns(address));
    t.check("no-IOMMU: refused where the options refuse it", no_iommu_refused(address));
    t.check("no-IOMMU: a second handle on one device is refused", second_handle(address));
    t.check(
        "no-IOMMU: without CAP_SYS_RAWIO (uid 65534), the group's file open to all",
        no_iommu_raw_io(address),
    );
    t.check("no-IOMMU: without CAP_SYS_ADMIN, physical addresses hidden", no_iommu_sys_admin(address));
    t.check("no-IOMMU: memory registration is refused", no_iommu_register(address));
    t.check("no-IOMMU: heap buffers through bounce buffers, data right", no_iommu_bounced(address));
    t.check("no-IOMMU: 4 MiB of DMA memory in one command, data right", no_iommu_large_dma(address));
    t.check(
        "no-IOMMU: a scatter list of heap buffers, bounced piece by piece",
        scatter_of_heap_buffers(address),
    );
    t.check("no-IOMMU: one queue pair per thread, each on its own CPU", threads(address));
    // Last: it takes the hugepages away for a moment.
    t.check("no-IOMMU: DMA memory from hugepages only", no_iommu_needs_hugepages(address));
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: nvme-vfio-tests [--no-iommu ADDRESS]\n\nThe VFIO back-end's own checks, for the guest of `cargo xtask vfio-test` (it unbinds and rebinds devices).");
        return ExitCode::SUCCESS;
    }
    if let [flag, address] = args.as_slice() {
        if flag == "--open-without-sys-admin" {
            // CAP_SYS_ADMIN out of every set (CAP_SYS_RAWIO stays): the
            // open must say that physical addresses are hidden.
            let drop_admin = rustix::thread::capabilities(None).and_then(|mut caps| {
                let admin = rustix::thread::CapabilitySet::SYS_ADMIN;
                caps.effective.remove(admin);
                caps.permitted.remove(admin);
                caps.inheritable.remove(admin);
                rustix::thread::set_capabilities(None, caps)
            });
            if let Err(e) = drop_admin {
                println!("cannot drop CAP_SYS_ADMIN: {e}");
                return ExitCode::FAILURE;
            }
        }
        if flag == "--open" || flag == "--open-without-sys-admin" {
            return match VfioHal::open(address, VfioOptions::default()) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    println!("{e}");
                    ExitCode::FAILURE
                }
            };
        }
    }
    let mut t = Totals::default();
    if let [flag, address] = args.as_slice() {
        if flag == "--no-iommu" {
            no_iommu(&mut t, address);
            println!("{} passed, {} failed, {} skipped", t.passed, t.failed, t.skipped);
            return if t.failed == 0 && t.passed > 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE };
        }
    }
    if args.first().map(String::as_str) == Some("--without-vfio") {
        // Run by /init once the VFIO modules are unloaded.
        let device = args.get(1).cloned().unwrap_or_default();
        t.check(
            "open: the VFIO modules are not loaded",
            expect_error(
                &device,
                |e| matches!(e, VfioError::NoVfio),
                "load the modules (`modprobe vfio-pci`)",
            ),
        );
        println!("{} passed, {} failed, {} skipped", t.passed, t.failed, t.skipped);
        return if t.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let kernel = bound_to("nvme").into_iter().next();
    let need_kernel = |f: &dyn Fn(&str) -> Result<Option<String>>| match &kernel {
        Some(k) => f(k),
        None => Err("no controller bound to the kernel's nvme driver".into()),
    };
    t.check(
        "open: not a PCI address",
        expect_error(
            "00:03",
            |e| matches!(e, VfioError::BadAddress(_)),
            "give it as domain:bus:device.function",
        ),
    );
    t.check(
        "open: no such device",
        expect_error("0000:0f:1f.7", |e| matches!(e, VfioError::NoDevice(_)), "lspci -D"),
    );
    t.check(
        "open: bound to nvme",
        need_kernel(&|k| {
            expect_error(
                k,
                |e| matches!(e, VfioError::BoundElsewhere { driver, .. } if driver == "nvme"),
                "is bound to nvme; bind it to vfio-pci",
            )
        }),
    );
    t.check("nvme-vfio-bind: refused while mounted, then there and back", need_kernel(&bind_round_trip));
    t.check("identify --json agrees with nvme-cli on every field both print", need_kernel(&identify_agrees));
    t.check("data written by the kernel read through VFIO, and back", need_kernel(&kernel_sees_our_data));
    t.check("open: bound to no driver", need_kernel(&unbound));
    t.check("open: IOMMU group not viable", not_viable());
    let device = viable();
    let on_device = |f: &dyn Fn(&str) -> Result<Option<String>>| match &device {
        Ok(d) => f(d),
        Err(e) => Err(e.clone()),
    };
    t.check("open: no permission (uid 65534)", on_device(&as_nobody));
    t.check("open: a second handle on one device is refused", on_device(&second_handle));
    t.check("DMA memory from hugepages where reserved", on_device(&hugepages));
    t.check("heap buffers sharing a page, two reads in flight", on_device(&heap_buffers));
    t.check("a scatter list of heap buffers, shared piece by piece", on_device(&scatter_of_heap_buffers));
    t.check(
        "memory registered ahead of time: translated, nothing mapped per I/O",
        on_device(&registered_memory),
    );
    t.check("one queue pair per thread, each on its own CPU", on_device(&threads));
    t.check("perf: a mixed workload from two pinned threads adds up", perf("0000:00:05.0"));
    println!("{} passed, {} failed, {} skipped", t.passed, t.failed, t.skipped);
    if t.failed == 0 && t.passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
