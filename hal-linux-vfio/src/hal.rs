//! [`VfioHal`]: one NVMe controller handed to this process through VFIO.

use crate::dma::{bounce_spans, Dma, Iommu, Piece};
use crate::error::VfioError;
use crate::iova::IovaSpace;
use crate::sys;
use hal_traits::{DeviceSegment, DmaRegion, HalError, HalErrorKind, MmioRegion, SegmentSink, PAGE_SIZE};
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};
use std::ffi::CString;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::RwLock;
use std::time::{Duration, Instant};
use vfio_bindings::bindings::vfio as v;

/// How to open a device.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct VfioOptions {
    /// Takes DMA memory from 2 MiB hugepages where the system has them
    /// reserved (`/proc/sys/vm/nr_hugepages`), else from ordinary pages.
    pub hugepages: bool,
    /// Accepts a device in a VFIO no-IOMMU group (the kernel's
    /// `vfio.enable_unsafe_noiommu_mode=1`, on a machine without an IOMMU):
    /// the device then reaches all of memory, with nothing to contain a
    /// wrong address. On by default, with a warning on standard error at
    /// [`open`](VfioHal::open); turn it off where a production system must
    /// never run that way ([`VfioError::NoIommuRefused`]).
    pub allow_no_iommu: bool,
}

impl Default for VfioOptions {
    fn default() -> Self {
        VfioOptions { hugepages: true, allow_no_iommu: true }
    }
}

impl VfioOptions {
    /// Sets [`hugepages`](Self::hugepages).
    pub const fn with_hugepages(mut self, on: bool) -> Self {
        self.hugepages = on;
        self
    }

    /// Sets [`allow_no_iommu`](Self::allow_no_iommu).
    pub const fn with_no_iommu(mut self, allow: bool) -> Self {
        self.allow_no_iommu = allow;
        self
    }
}

/// What [`VfioHal::open`] prints on standard error for a device in a
/// no-IOMMU group.
pub const NO_IOMMU_WARNING: &str = "WARNING: VFIO no-IOMMU mode: the device reaches all of memory and \
     nothing contains a wrong address; for development only, turn the IOMMU on for anything else";

/// One NVMe controller, opened through VFIO with the type1 IOMMU: BAR0
/// mapped, bus mastering on, DMA memory and buffer sharing through the
/// IOMMU, and a clock.
///
/// Exclusive by construction: the kernel lets one file hold a VFIO group at
/// a time, so a second `open` of the same device (in this process or
/// another) fails with [`VfioError::GroupBusy`].
pub struct VfioHal {
    address: String,
    bar0: MmioRegion,
    bar0_base: NonNull<u8>,
    bar0_len: usize,
    /// BAR0's address on the bus.
    bar0_bus: u64,
    /// The other memory BARs VFIO lets this process map (for a controller
    /// memory buffer): where, how long, and the BAR's address on the bus.
    bars: [Option<(NonNull<u8>, usize, u64)>; 6],
    /// Read-locked by `translate` (every I/O, any thread), write-locked
    /// by what changes the bookkeeping.
    dma: RwLock<Dma>,
    // Dropped in this order (see `Drop`): device, group, container.
    device: Option<OwnedFd>,
    group: Option<OwnedFd>,
    container: Option<OwnedFd>,
    config_offset: u64,
    epoch: Instant,
    /// `/proc/self/pagemap`, in no-IOMMU mode (where its presence says so).
    pagemap: Option<OwnedFd>,
}

// SAFETY: the registers are reached through volatile accesses of a mapping
// that lives as long as the value; the DMA bookkeeping is behind a lock;
// the file descriptors are used through shared references by ioctls, which
// the kernel serializes.
unsafe impl Send for VfioHal {}
// SAFETY: as above.
unsafe impl Sync for VfioHal {}

fn os(what: impl Into<String>) -> impl FnOnce(Errno) -> VfioError {
    let what = what.into();
    move |errno| VfioError::Os { what, errno }
}

/// Opens a VFIO file, turning the usual refusals into what to do.
fn open_vfio(path: &str) -> Result<OwnedFd, VfioError> {
    rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).map_err(|e| match e {
        Errno::ACCESS | Errno::PERM => VfioError::Permission(path.into()),
        Errno::BUSY => VfioError::GroupBusy(path.into()),
        Errno::NOENT if path == "/dev/vfio/vfio" => VfioError::NoVfio,
        e => VfioError::Os { what: format!("open {path}"), errno: e },
    })
}

/// A PCI address as sysfs names it (`0000:00:03.0`), from that or the short
/// form (`00:03.0`).
pub fn canonical_address(address: &str) -> Result<String, VfioError> {
    let bad = || VfioError::BadAddress(address.into());
    let full =
        if address.matches(':').count() == 1 { format!("0000:{address}") } else { address.to_string() };
    let (head, function) = full.rsplit_once('.').ok_or_else(bad)?;
    let parts: Vec<&str> = head.split(':').collect();
    let hex = |s: &str, max: u32| u32::from_str_radix(s, 16).ok().filter(|v| *v <= max);
    match parts.as_slice() {
        [domain, bus, device] if !domain.is_empty() && !bus.is_empty() && !device.is_empty() => {
            let (d, b, dev, f) = (
                hex(domain, 0xffff).ok_or_else(bad)?,
                hex(bus, 0xff).ok_or_else(bad)?,
                hex(device, 0x1f).ok_or_else(bad)?,
                u32::from_str_radix(function, 8).ok().filter(|f| *f <= 7).ok_or_else(bad)?,
            );
            Ok(format!("{d:04x}:{b:02x}:{dev:02x}.{f}"))
        }
        _ => Err(bad()),
    }
}

/// The driver a PCI device is bound to, if any.
pub fn bound_driver(address: &str) -> Option<String> {
    let link = std::fs::read_link(format!("/sys/bus/pci/devices/{address}/driver")).ok()?;
    link.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// The PCI addresses of the NVMe controllers (class 010802) in the system,
/// in address order, whatever they are bound to.
pub fn nvme_addresses() -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir("/sys/bus/pci/devices")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("class"))
                .is_ok_and(|c| c.trim().eq_ignore_ascii_case("0x010802"))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    found
}

impl VfioHal {
    /// Opens the NVMe controller at `address` (`0000:00:03.0`), which must be
    /// bound to vfio-pci: joins its IOMMU group to a new container with the
    /// type1 IOMMU, maps BAR0, and turns on memory decoding and bus
    /// mastering.
    pub fn open(address: &str, options: VfioOptions) -> Result<VfioHal, VfioError> {
        let address = canonical_address(address)?;
        // Without the modules nothing else can be right: say that first.
        if !Path::new("/dev/vfio/vfio").exists() {
            return Err(VfioError::NoVfio);
        }
        let sysfs = format!("/sys/bus/pci/devices/{address}");
        if !Path::new(&sysfs).exists() {
            return Err(VfioError::NoDevice(address));
        }
        match bound_driver(&address) {
            Some(d) if d == "vfio-pci" => {}
            Some(driver) => return Err(VfioError::BoundElsewhere { address, driver }),
            None => return Err(VfioError::Unbound(address)),
        }
        let group_link = std::fs::read_link(format!("{sysfs}/iommu_group"))
            .map_err(|_| VfioError::NoIommuGroup(address.clone()))?;
        let group_name = group_link.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let group_no: u32 = group_name.parse().map_err(|_| VfioError::NoIommuGroup(address.clone()))?;

        // In no-IOMMU mode (a kernel with `vfio.enable_unsafe_noiommu_mode=1`
        // and no IOMMU for the device) the group's file says so.
        let no_iommu_path = format!("/dev/vfio/noiommu-{group_no}");
        let no_iommu = Path::new(&no_iommu_path).exists();
        if no_iommu && !options.allow_no_iommu {
            return Err(VfioError::NoIommuRefused(address));
        }
        let model = if no_iommu { v::VFIO_NOIOMMU_IOMMU } else { v::VFIO_TYPE1v2_IOMMU };

        let container = open_vfio("/dev/vfio/vfio")?;
        let version = sys::api_version(&container).map_err(os("VFIO_GET_API_VERSION"))?;
        if version != v::VFIO_API_VERSION as i32 {
            return Err(VfioError::Unsupported(format!(
                "API version {} (it has {version})",
                v::VFIO_API_VERSION
            )));
        }
        if !sys::check_extension(&container, model).unwrap_or(false) {
            return Err(VfioError::Unsupported(if no_iommu {
                "no-IOMMU mode (`vfio.enable_unsafe_noiommu_mode=1`)".into()
            } else {
                "the type1v2 IOMMU model (load vfio_iommu_type1: `modprobe vfio_iommu_type1`)".into()
            }));
        }
        let group_path = if no_iommu { no_iommu_path } else { format!("/dev/vfio/{group_no}") };
        let group = open_vfio(&group_path).map_err(|e| match e {
            // Opening a no-IOMMU group takes CAP_SYS_RAWIO, whoever owns the file.
            VfioError::Permission(path) if no_iommu => VfioError::NoIommuRawIo(path),
            e => e,
        })?;
        let flags = sys::group_flags(&group).map_err(os("VFIO_GROUP_GET_STATUS"))?;
        if flags & v::VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(VfioError::GroupNotViable { address, group: group_no });
        }
        // In no-IOMMU mode the kernel checks CAP_SYS_RAWIO again here and at
        // GET_DEVICE_FD.
        let raw_io = |what: String| {
            let path = group_path.clone();
            move |e: Errno| match e {
                Errno::PERM if no_iommu => VfioError::NoIommuRawIo(path),
                errno => VfioError::Os { what, errno },
            }
        };
        sys::group_set_container(&group, &container).map_err(raw_io("VFIO_GROUP_SET_CONTAINER".into()))?;
        sys::set_iommu(&container, model).map_err(|e| match e {
            Errno::PERM if no_iommu => VfioError::NoIommuRawIo(group_path.clone()),
            Errno::PERM => VfioError::Unsupported(
                "interrupt remapping, which VFIO_SET_IOMMU wants (turn it on in the firmware and kernel, or, \
                 trusting the device, load vfio_iommu_type1 with allow_unsafe_interrupts=1)"
                    .into(),
            ),
            e => VfioError::Os { what: format!("VFIO_SET_IOMMU ({})", if no_iommu { "no-IOMMU" } else { "type1v2" }), errno: e },
        })?;
        // No-IOMMU mode has no IOMMU to ask, and gives the device physical
        // addresses, read from the page tables.
        let (info, pagemap) = if no_iommu {
            let pagemap =
                rustix::fs::open("/proc/self/pagemap", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                    .map_err(os("open /proc/self/pagemap"))?;
            // Said now rather than at the first allocation: the physical
            // addresses are shown to CAP_SYS_ADMIN only (a page of this
            // stack is present to look at).
            let probe = 0u64;
            sys::physical_address(&pagemap, &raw const probe as usize)
                .map_err(|why| VfioError::NoIommuPhysical(why.into()))?;
            (sys::IommuInfo::default(), Some(pagemap))
        } else {
            (sys::iommu_info(&container).map_err(os("VFIO_IOMMU_GET_INFO"))?, None)
        };
        if info.page_sizes != 0 && info.page_sizes & PAGE_SIZE as u64 == 0 {
            return Err(VfioError::Unsupported(format!(
                "4 KiB IOMMU pages (it maps sizes {:#x})",
                info.page_sizes
            )));
        }
        let name = CString::new(address.clone()).map_err(|_| VfioError::BadAddress(address.clone()))?;
        let device = sys::group_device(&group, &name)
            .map_err(raw_io(format!("VFIO_GROUP_GET_DEVICE_FD {address}")))?;

        let bar = sys::region(&device, v::VFIO_PCI_BAR0_REGION_INDEX).map_err(os("region info of BAR0"))?;
        if bar.size < 0x1000 {
            return Err(VfioError::Bar(format!("{} bytes, less than the 4 KiB of NVMe registers", bar.size)));
        }
        if bar.flags & v::VFIO_REGION_INFO_FLAG_MMAP == 0 {
            return Err(VfioError::Bar("VFIO does not let it be mapped".into()));
        }
        let config =
            sys::region(&device, v::VFIO_PCI_CONFIG_REGION_INDEX).map_err(os("region info of config"))?;
        let bar0_len = bar.size as usize;
        // SAFETY: a new shared mapping of the device's BAR0 region; nothing
        // else in this process points there.
        let base = unsafe {
            rustix::mm::mmap(
                core::ptr::null_mut(),
                bar0_len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &device,
                bar.offset,
            )
        }
        .map_err(|e| VfioError::Bar(format!("mmap: {e}")))?;
        let base =
            NonNull::new(base.cast::<u8>()).ok_or_else(|| VfioError::Bar("mapped at address 0".into()))?;
        // SAFETY: the mapping covers bar0_len bytes of the registers and is
        // unmapped only in Drop, after the last use; no reference points
        // into it.
        let bar0 = unsafe { MmioRegion::new(base, bar0_len) };

        // The bus addresses of the BARs (`pci_bus_address`), from sysfs: the
        // controller takes addresses in its CMB for its own memory, so no
        // I/O virtual address may fall there.
        let resources = std::fs::read_to_string(format!("{sysfs}/resource")).unwrap_or_default();
        let bus: Vec<(u64, u64)> = resources
            .lines()
            .take(6)
            .map(|l| {
                let mut f = l.split_whitespace().map(|x| u64::from_str_radix(x.trim_start_matches("0x"), 16));
                match (f.next(), f.next()) {
                    (Some(Ok(start)), Some(Ok(end))) if end > start => (start, end - start + 1),
                    _ => (0, 0),
                }
            })
            .collect();
        let mut space = IovaSpace::new(&info.iova_ranges);
        for &(start, len) in &bus {
            space.reserve(start, len);
        }
        let mut bars = [None; 6];
        for (i, slot) in bars.iter_mut().enumerate().skip(1) {
            let Some(&(bus_start, _)) = bus.get(i).filter(|b| b.1 > 0) else { continue };
            let Ok(region) = sys::region(&device, v::VFIO_PCI_BAR0_REGION_INDEX + i as u32) else { continue };
            if region.size == 0 || region.flags & v::VFIO_REGION_INFO_FLAG_MMAP == 0 {
                continue;
            }
            // SAFETY: a new shared mapping of one of the device's BARs;
            // nothing else in this process points there.
            let mapped = unsafe {
                rustix::mm::mmap(
                    core::ptr::null_mut(),
                    region.size as usize,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::SHARED,
                    &device,
                    region.offset,
                )
            };
            if let Ok(p) = mapped {
                *slot = NonNull::new(p.cast::<u8>()).map(|p| (p, region.size as usize, bus_start));
            }
        }

        let hal = VfioHal {
            address,
            bar0,
            bar0_base: base,
            bar0_len,
            bar0_bus: bus.first().map_or(0, |b| b.0),
            bars,
            dma: RwLock::new(Dma::new(space, info.dma_avail, options.hugepages, no_iommu)),
            device: Some(device),
            group: Some(group),
            container: Some(container),
            config_offset: config.offset,
            epoch: Instant::now(),
            pagemap,
        };
        // Memory decoding and bus mastering (PCI Command register, bits 1
        // and 2).
        let command = hal.config_read16(4).map_err(os("read of the PCI command register"))?;
        hal.config_write16(4, command | 0b110).map_err(os("write of the PCI command register"))?;
        if no_iommu {
            eprintln!("hal-linux-vfio: {}: {NO_IOMMU_WARNING}", hal.address);
        }
        Ok(hal)
    }

    /// The device's PCI address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Chunks of DMA memory that came from hugepages.
    pub fn hugepage_chunks(&self) -> usize {
        self.read().huge_chunks
    }

    /// What to do when DMA memory had to come from ordinary pages although
    /// hugepages were asked for (none reserved, or none left); `None`
    /// otherwise. Tools print it: hugepages save IOMMU page-table entries
    /// and TLB misses, and are what SPDK-class setups use.
    pub fn hugepage_advice(&self) -> Option<&'static str> {
        // In no-IOMMU mode there are no 4 KiB pages to fall back on: the
        // allocation fails, and its error says what to do.
        (self.read().hugepages_missing && !self.no_iommu()).then_some(
            "DMA memory comes from 4 KiB pages: no 2 MiB hugepages are free; reserve some with \
             `echo 64 > /proc/sys/vm/nr_hugepages` (as root)",
        )
    }

    /// Registers caller memory ahead of time (SPDK's `spdk_mem_register`):
    /// it is mapped into the IOMMU once, here, and every buffer inside it is
    /// translated on each I/O without a system call, where a buffer outside
    /// costs a map and an unmap `ioctl` per page. The memory must be whole
    /// 4 KiB pages (2 MiB hugepages are best: one IOMMU mapping, and fewer
    /// IOTLB misses), must not overlap memory registered before or the
    /// back-end's own DMA memory, and stays pinned until this value is
    /// dropped. The application's buffers inside it are its own
    /// [`IoBuffer`](nvme_nostd::IoBuffer) type (see that trait's contract).
    ///
    /// # Safety
    ///
    /// `memory` stays allocated until this value is dropped, and nothing
    /// the device must not reach is ever placed in it: the device can reach
    /// all of it (through whatever command names it) for as long as this
    /// value lives, even where this value is leaked.
    pub unsafe fn register(&self, memory: NonNull<[u8]>) -> Result<(), VfioError> {
        let (addr, len) = (memory.cast::<u8>().as_ptr() as usize, memory.len());
        // SAFETY: forwarded from the caller; the container closes only when
        // this value is dropped.
        unsafe { self.lock().register(&self.bus(), addr, len) }.map(drop).map_err(VfioError::Registration)
    }

    /// Bytes of caller memory registered with [`register`](Self::register).
    pub fn registered_bytes(&self) -> usize {
        self.read().registered_bytes()
    }

    /// Pages of DMA memory handed out now.
    pub fn live_dma_pages(&self) -> usize {
        self.read().live_pages()
    }

    /// IOMMU mappings of caller pages in force now: one a page, however many
    /// buffers in flight share it.
    pub fn shared_pages(&self) -> usize {
        self.read().shared_pages()
    }

    fn lock(&self) -> std::sync::RwLockWriteGuard<'_, Dma> {
        // The bookkeeping stays consistent across a panic (every change is
        // made after the system calls that can fail, and no foreign code
        // runs with the lock held).
        self.dma.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Dma> {
        self.dma.read().unwrap_or_else(|e| e.into_inner())
    }

    fn container(&self) -> &OwnedFd {
        self.container.as_ref().expect("the container lives until Drop")
    }

    fn bus(&self) -> Bus<'_> {
        Bus { container: self.container(), pagemap: self.pagemap.as_ref() }
    }

    /// Whether the device is in a VFIO no-IOMMU group (see
    /// [`VfioOptions::allow_no_iommu`]): DMA memory is then at physical
    /// addresses, and caller buffers are copied through bounce buffers
    /// of it.
    pub fn no_iommu(&self) -> bool {
        self.pagemap.is_some()
    }

    /// Bounce buffers in use now (no-IOMMU mode: one for each caller
    /// buffer the device may be using).
    pub fn bounce_buffers(&self) -> usize {
        self.read().bounce_buffers()
    }

    fn config_read16(&self, offset: u64) -> Result<u16, Errno> {
        let mut b = [0u8; 2];
        let device = self.device.as_ref().expect("the device lives until Drop");
        rustix::io::pread(device, &mut b, self.config_offset + offset)?;
        Ok(u16::from_le_bytes(b))
    }

    fn config_write16(&self, offset: u64, value: u16) -> Result<(), Errno> {
        let device = self.device.as_ref().expect("the device lives until Drop");
        rustix::io::pwrite(device, &value.to_le_bytes(), self.config_offset + offset).map(drop)
    }
}

impl Drop for VfioHal {
    fn drop(&mut self) {
        // Bus mastering off, then the device file (vfio-pci resets the
        // function on release), then the group and the container, which
        // takes every IOMMU mapping away: only then can no DMA reach the
        // chunks, and they are unmapped. Caller pages the driver leaked
        // (the device may have been writing them) are unpinned with the
        // container, and are no longer reachable by the device either.
        if let Ok(command) = self.config_read16(4) {
            let _ = self.config_write16(4, command & !0b100);
        }
        // SAFETY: the mapping was made in `open` with this length; the
        // driver is gone (it owned this value), so no register access
        // follows.
        let _ = unsafe { rustix::mm::munmap(self.bar0_base.as_ptr().cast(), self.bar0_len) };
        for (base, len, _) in self.bars.iter().flatten() {
            // SAFETY: mapped in `open` with this length; no access follows.
            let _ = unsafe { rustix::mm::munmap(base.as_ptr().cast(), *len) };
        }
        drop(self.device.take());
        drop(self.group.take());
        drop(self.container.take());
        for (vaddr, len) in self.lock().take_chunks() {
            // SAFETY: the chunk was mapped by this back-end, and the device
            // can no longer reach it (above); the driver is gone.
            let _ = unsafe { rustix::mm::munmap(vaddr as *mut core::ffi::c_void, len) };
        }
    }
}

/// What gives the device its addresses: the container's type1 IOMMU, or
/// in no-IOMMU mode the page tables (through `/proc/self/pagemap`).
struct Bus<'a> {
    container: &'a OwnedFd,
    pagemap: Option<&'a OwnedFd>,
}

impl Iommu for Bus<'_> {
    unsafe fn map(&self, vaddr: usize, iova: u64, size: u64) -> Result<(), Errno> {
        // SAFETY: forwarded from the caller.
        unsafe { sys::map_dma(self.container, vaddr, iova, size) }
    }

    fn unmap(&self, iova: u64, size: u64) -> Result<(), Errno> {
        sys::unmap_dma(self.container, iova, size)
    }

    fn physical(&self, vaddr: usize) -> Result<u64, HalError> {
        let pagemap = self.pagemap.ok_or(HalError::new(HalErrorKind::MapFailed, "not in no-IOMMU mode"))?;
        sys::physical_address(pagemap, vaddr).map_err(|why| HalError::new(HalErrorKind::MapFailed, why))
    }
}

/// What [`VfioHal`]'s `share` hands the driver for `unshare`: which bounce
/// buffer holds the data in no-IOMMU mode (none behind an IOMMU, where the
/// pages themselves are mapped).
#[derive(Debug)]
pub struct VfioMapping {
    bounce: Option<u64>,
}

/// The device segments of a bounce buffer: its bytes in each piece, the
/// pieces that follow one another for the device merged.
fn push_bounce_segments(addr: usize, len: usize, pieces: &[Piece], sink: &mut dyn SegmentSink) {
    let mut run: Option<DeviceSegment> = None;
    for span in bounce_spans(addr, len, pieces) {
        let daddr = pieces[span.piece].daddr + span.offset as u64;
        let seg = DeviceSegment { addr: hal_traits::DeviceAddr(daddr), len: span.len };
        run = match run {
            Some(r) if r.addr.0 + r.len as u64 == daddr => {
                Some(DeviceSegment { addr: r.addr, len: r.len + span.len })
            }
            Some(r) => {
                sink.push(r);
                Some(seg)
            }
            None => Some(seg),
        };
    }
    if let Some(r) = run {
        sink.push(r);
    }
}

/// Segments kept until the lock is released.
struct Collect(Vec<DeviceSegment>);

impl SegmentSink for Collect {
    fn push(&mut self, segment: DeviceSegment) {
        self.0.push(segment);
    }
}

// SAFETY: register accesses go to the mapped BAR0 (MmioRegion bounds them);
// DMA memory is mapped into the IOMMU at the addresses returned, for as long
// as the chunk lives (until Drop, after the container is closed); shared
// buffers are mapped page by page until their last user is unshared.
unsafe impl hal_traits::Hal for VfioHal {
    type Mapping = VfioMapping;

    fn read32(&self, offset: usize) -> u32 {
        self.bar0.read32(offset)
    }

    unsafe fn write32(&self, offset: usize, value: u32) {
        // SAFETY: forwarded from the caller.
        unsafe { self.bar0.write32(offset, value) }
    }

    fn memory_bar(&self, index: u8) -> Option<hal_traits::MemoryBar> {
        if index == 0 {
            let bar0 = hal_traits::MemoryBar { mmio: self.bar0, bus: hal_traits::DeviceAddr(self.bar0_bus) };
            return (self.bar0_bus != 0).then_some(bar0);
        }
        let (base, len, bus) = (*self.bars.get(usize::from(index))?)?;
        // SAFETY: the BAR is mapped for `len` bytes until Drop, and nothing
        // in this process holds a reference into it.
        let mmio = unsafe { MmioRegion::new(base, len) };
        Some(hal_traits::MemoryBar { mmio, bus: hal_traits::DeviceAddr(bus) })
    }

    fn dma_alloc(&self, pages: usize) -> Result<DmaRegion, HalError> {
        let (vaddr, iova) = self.lock().alloc(&self.bus(), pages)?;
        let vaddr = NonNull::new(vaddr as *mut u8).ok_or(HalError::new(HalErrorKind::NoMemory, "null"))?;
        Ok(DmaRegion { vaddr, daddr: hal_traits::DeviceAddr(iova), pages })
    }

    unsafe fn dma_free(&self, region: DmaRegion) {
        let freed = self.lock().free(region.vaddr.as_ptr() as usize, region.pages);
        debug_assert!(freed, "dma_free of memory this back-end did not hand out");
    }

    fn translate(&self, buffer: NonNull<[u8]>, sink: &mut dyn SegmentSink) -> bool {
        let (addr, len) = (buffer.cast::<u8>().as_ptr() as usize, buffer.len());
        // The driver's sink runs without the lock held.
        let found = self.read().translate(addr, len);
        match found {
            Some(daddr) => {
                sink.push(DeviceSegment { addr: daddr, len });
                true
            }
            None => false,
        }
    }

    unsafe fn share(
        &self,
        buffer: NonNull<[u8]>,
        _direction: hal_traits::Direction,
        sink: &mut dyn SegmentSink,
    ) -> Result<VfioMapping, HalError> {
        let (addr, len) = (buffer.cast::<u8>().as_ptr() as usize, buffer.len());
        if self.no_iommu() && len > 0 {
            let (id, pieces) = self.lock().bounce(&self.bus(), addr, len)?;
            // Every direction copies in: where the device writes less than
            // the whole buffer, the rest comes back as it was, not as what
            // the bounce memory held (the bounce memory is this share's
            // alone until `unshare`, so no lock is needed).
            for span in bounce_spans(addr, len, &pieces) {
                // SAFETY: the caller lends `buffer` (valid for reads) until
                // unshare; the piece is DMA memory of this share's alone, and
                // the span lies inside both.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        buffer.cast::<u8>().as_ptr().add(span.at),
                        (pieces[span.piece].vaddr + span.offset) as *mut u8,
                        span.len,
                    )
                };
            }
            push_bounce_segments(addr, len, &pieces, sink);
            return Ok(VfioMapping { bounce: Some(id) });
        }
        // The driver's sink runs without the lock held.
        let mut segments = Collect(Vec::new());
        self.lock().share(&self.bus(), addr, len, &mut segments)?;
        for segment in segments.0 {
            sink.push(segment);
        }
        Ok(VfioMapping { bounce: None })
    }

    unsafe fn unshare(&self, buffer: NonNull<[u8]>, _direction: hal_traits::Direction, mapping: VfioMapping) {
        let (addr, len) = (buffer.cast::<u8>().as_ptr() as usize, buffer.len());
        match mapping.bounce {
            Some(id) => {
                let found = self.lock().unbounce(addr, len, id);
                debug_assert!(found, "unshare of a bounce buffer this back-end does not know");
            }
            None => self.lock().unshare(&self.bus(), addr, len),
        }
    }

    unsafe fn sync_for_cpu(&self, buffer: NonNull<[u8]>, direction: hal_traits::Direction) {
        if !self.no_iommu() || !direction.device_writes() {
            return;
        }
        let (addr, len) = (buffer.cast::<u8>().as_ptr() as usize, buffer.len());
        // A buffer in DMA memory was translated, not bounced.
        let Some(pieces) = self.read().bounced(addr, len) else { return };
        for span in bounce_spans(addr, len, &pieces) {
            // SAFETY: the device is done with the buffer (the caller's
            // promise), which is valid for writes until unshare; the piece is
            // DMA memory of its share's, and the span lies inside both.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    (pieces[span.piece].vaddr + span.offset) as *const u8,
                    buffer.cast::<u8>().as_ptr().add(span.at),
                    span.len,
                )
            };
        }
    }

    fn ticks(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn ticks_per_second(&self) -> u64 {
        1_000_000_000
    }

    fn delay(&self, duration: Duration) {
        if duration >= Duration::from_millis(1) {
            std::thread::sleep(duration);
        } else {
            let until = Instant::now() + duration;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Segments(Vec<DeviceSegment>);

    impl SegmentSink for Segments {
        fn push(&mut self, segment: DeviceSegment) {
            self.0.push(segment);
        }
    }

    #[test]
    fn bounce_segments_merge_where_the_pieces_follow_one_another() {
        let piece = |daddr, pages| Piece { vaddr: 0, daddr, pages };
        let seg = |addr, len| DeviceSegment { addr: hal_traits::DeviceAddr(addr), len };
        let chunk = crate::dma::CHUNK;
        let len = chunk + 100;
        // Two pieces apart for the device: two segments, the first from the
        // buffer's offset in its page to the end of its piece.
        let mut apart = Segments(Vec::new());
        push_bounce_segments(0x7000_0200, len, &[piece(0x4000_0000, 512), piece(0x1000_0000, 1)], &mut apart);
        assert_eq!(apart.0, vec![seg(0x4000_0200, chunk - 0x200), seg(0x1000_0000, 0x200 + 100)]);
        // The same pieces one after the other: one segment.
        let mut together = Segments(Vec::new());
        let next = 0x4000_0000 + chunk as u64;
        push_bounce_segments(0x7000_0200, len, &[piece(0x4000_0000, 512), piece(next, 1)], &mut together);
        assert_eq!(together.0, vec![seg(0x4000_0200, len)]);
    }

    #[test]
    fn addresses() {
        assert_eq!(canonical_address("0000:00:03.0").unwrap(), "0000:00:03.0");
        assert_eq!(canonical_address("00:1f.7").unwrap(), "0000:00:1f.7");
        assert_eq!(canonical_address("0000:00:03.0").unwrap(), canonical_address("00:03.0").unwrap());
        for bad in
            ["", "00:03", "0000:00:20.0", "0000:00:03.8", "x:00:03.0", "0000:100:03.0", "00:03.0.1", ":03.0"]
        {
            assert!(matches!(canonical_address(bad), Err(VfioError::BadAddress(_))), "{bad}");
        }
    }
}
