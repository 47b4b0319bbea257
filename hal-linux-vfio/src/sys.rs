//! The VFIO ioctls this back-end makes (Linux `include/uapi/linux/vfio.h`),
//! with the structures of `vfio-bindings` and the system calls of `rustix`.
//! Every `unsafe` block of the back-end that talks to the kernel is here.

use core::ffi::c_void;
use core::mem::size_of;
use rustix::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use rustix::io::Errno;
use rustix::ioctl::{self, Ioctl, IoctlOutput, Opcode};
use std::ffi::CStr;
use vfio_bindings::bindings::vfio as v;

/// The ioctls, numbered from `VFIO_BASE`: each is `_IO(VFIO_TYPE, VFIO_BASE +
/// n)`, with neither a size nor a direction in the number (the argument
/// structures carry their size in `argsz`).
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
enum Op {
    GetApiVersion = 0,
    CheckExtension = 1,
    SetIommu = 2,
    GroupGetStatus = 3,
    GroupSetContainer = 4,
    GroupGetDeviceFd = 6,
    DeviceGetRegionInfo = 8,
    IommuGetInfo = 12,
    IommuMapDma = 13,
    IommuUnmapDma = 14,
}

/// One VFIO ioctl with a raw argument (a pointer to its structure, or an
/// integer), returning the call's result.
struct Call {
    op: Op,
    arg: *mut c_void,
}

// SAFETY: every `Call` is made through `call`, whose callers pass the
// argument that `op` expects; the result is the ioctl's return value.
unsafe impl Ioctl for Call {
    type Output = IoctlOutput;
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        ioctl::opcode::none(v::VFIO_TYPE, (v::VFIO_BASE + self.op as u32) as u8)
    }

    fn as_ptr(&mut self) -> *mut c_void {
        self.arg
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> rustix::io::Result<IoctlOutput> {
        Ok(out)
    }
}

/// # Safety
///
/// `arg` is what `op` expects on `fd`: a pointer to its structure, valid for
/// the `argsz` it declares, or an integer (cast to a pointer).
unsafe fn call(fd: BorrowedFd<'_>, op: Op, arg: *mut c_void) -> Result<i32, Errno> {
    // SAFETY: forwarded from the caller.
    unsafe { rustix::ioctl::ioctl(fd, Call { op, arg }) }
}

fn argsz<T>() -> u32 {
    size_of::<T>() as u32
}

/// `VFIO_GET_API_VERSION` on the container.
pub(crate) fn api_version(container: &OwnedFd) -> Result<i32, Errno> {
    // SAFETY: the ioctl takes no argument.
    unsafe { call(container.as_fd(), Op::GetApiVersion, core::ptr::null_mut()) }
}

/// `VFIO_CHECK_EXTENSION`: whether the container supports `extension`.
pub(crate) fn check_extension(container: &OwnedFd, extension: u32) -> Result<bool, Errno> {
    // SAFETY: the argument is an integer.
    unsafe { call(container.as_fd(), Op::CheckExtension, extension as usize as *mut c_void) }.map(|r| r > 0)
}

/// `VFIO_SET_IOMMU`: the IOMMU model of the container (after a group joined).
pub(crate) fn set_iommu(container: &OwnedFd, model: u32) -> Result<(), Errno> {
    // SAFETY: the argument is an integer.
    unsafe { call(container.as_fd(), Op::SetIommu, model as usize as *mut c_void) }.map(drop)
}

/// `VFIO_GROUP_GET_STATUS`: the group's flags (`VFIO_GROUP_FLAGS_*`).
pub(crate) fn group_flags(group: &OwnedFd) -> Result<u32, Errno> {
    let mut status = v::vfio_group_status { argsz: argsz::<v::vfio_group_status>(), flags: 0 };
    // SAFETY: a vfio_group_status with its argsz.
    unsafe { call(group.as_fd(), Op::GroupGetStatus, (&raw mut status).cast()) }?;
    Ok(status.flags)
}

/// `VFIO_GROUP_SET_CONTAINER`: the group joins the container.
pub(crate) fn group_set_container(group: &OwnedFd, container: &OwnedFd) -> Result<(), Errno> {
    use rustix::fd::AsRawFd;
    let mut fd: i32 = container.as_raw_fd();
    // SAFETY: a pointer to the container's file descriptor.
    unsafe { call(group.as_fd(), Op::GroupSetContainer, (&raw mut fd).cast()) }.map(drop)
}

/// `VFIO_GROUP_GET_DEVICE_FD`: the device `name` (its PCI address) of the group.
pub(crate) fn group_device(group: &OwnedFd, name: &CStr) -> Result<OwnedFd, Errno> {
    // SAFETY: a NUL-terminated device name, which the kernel only reads.
    let fd = unsafe { call(group.as_fd(), Op::GroupGetDeviceFd, name.as_ptr().cast_mut().cast()) }?;
    // SAFETY: on success the ioctl returns a new file descriptor, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A device region (`VFIO_DEVICE_GET_REGION_INFO`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Region {
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub flags: u32,
    /// Its length in bytes (0: the device has no such region).
    pub size: u64,
    /// Where it lies in the device file (for `pread`, `pwrite` and `mmap`).
    pub offset: u64,
}

/// `VFIO_DEVICE_GET_REGION_INFO` for region `index` (`VFIO_PCI_*_REGION_INDEX`).
pub(crate) fn region(device: &OwnedFd, index: u32) -> Result<Region, Errno> {
    let mut info = v::vfio_region_info {
        argsz: argsz::<v::vfio_region_info>(),
        flags: 0,
        index,
        cap_offset: 0,
        size: 0,
        offset: 0,
    };
    // SAFETY: a vfio_region_info with its argsz.
    unsafe { call(device.as_fd(), Op::DeviceGetRegionInfo, (&raw mut info).cast()) }?;
    Ok(Region { flags: info.flags, size: info.size, offset: info.offset })
}

/// What the type1 IOMMU says of itself (`VFIO_IOMMU_GET_INFO`).
#[derive(Clone, Debug, Default)]
pub(crate) struct IommuInfo {
    /// The page sizes it maps, as a bit mask (`VFIO_IOMMU_INFO_PGSIZES`).
    pub page_sizes: u64,
    /// The ranges of I/O virtual addresses it can map (inclusive ends);
    /// empty when the kernel does not say (then anything is allowed).
    pub iova_ranges: Vec<(u64, u64)>,
    /// How many more mappings the container takes (the type1 driver's
    /// `dma_entry_limit` less those in use), where the kernel says.
    pub dma_avail: Option<u32>,
}

/// `VFIO_IOMMU_GET_INFO`, with its capability chain.
pub(crate) fn iommu_info(container: &OwnedFd) -> Result<IommuInfo, Errno> {
    // First with the bare structure, which the kernel answers with the size
    // the capabilities need; then with room for them.
    let mut head = v::vfio_iommu_type1_info {
        argsz: argsz::<v::vfio_iommu_type1_info>(),
        flags: 0,
        iova_pgsizes: 0,
        cap_offset: 0,
        pad: 0,
    };
    // SAFETY: a vfio_iommu_type1_info with its argsz.
    unsafe { call(container.as_fd(), Op::IommuGetInfo, (&raw mut head).cast()) }?;
    let want = (head.argsz as usize).max(size_of::<v::vfio_iommu_type1_info>());
    // u64 words keep the structure and its capabilities aligned.
    let mut buf = vec![0u64; want.div_ceil(8)];
    let bytes = buf.len() * 8;
    // SAFETY: the buffer holds at least a vfio_iommu_type1_info (u64-aligned);
    // its argsz says how much room follows.
    unsafe {
        let info = buf.as_mut_ptr().cast::<v::vfio_iommu_type1_info>();
        (*info).argsz = bytes as u32;
        call(container.as_fd(), Op::IommuGetInfo, info.cast())?;
    }
    let raw: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    Ok(parse_iommu_info(&raw))
}

fn u16_at(raw: &[u8], at: usize) -> Option<u16> {
    raw.get(at..at + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]))
}

fn u32_at(raw: &[u8], at: usize) -> Option<u32> {
    raw.get(at..at + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(raw: &[u8], at: usize) -> Option<u64> {
    raw.get(at..at + 8).map(|b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
}

/// Reads a `vfio_iommu_type1_info` and its capability chain out of `raw`,
/// trusting no offset in it.
pub(crate) fn parse_iommu_info(raw: &[u8]) -> IommuInfo {
    let flags = u32_at(raw, 4).unwrap_or(0);
    let mut info = IommuInfo {
        page_sizes: if flags & v::VFIO_IOMMU_INFO_PGSIZES != 0 { u64_at(raw, 8).unwrap_or(0) } else { 0 },
        ..IommuInfo::default()
    };
    if flags & v::VFIO_IOMMU_INFO_CAPS == 0 {
        return info;
    }
    let mut at = u32_at(raw, 16).unwrap_or(0) as usize;
    // Each capability's `next` is an offset from the start; a chain that
    // loops or leaves the buffer ends here.
    for _ in 0..16 {
        if at == 0 {
            break;
        }
        let (Some(id), Some(next)) = (u16_at(raw, at), u32_at(raw, at + 4)) else { break };
        match u32::from(id) {
            v::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE => {
                let n = u32_at(raw, at + 8).unwrap_or(0) as usize;
                for i in 0..n.min(256) {
                    let r = at + 16 + i * 16;
                    if let (Some(start), Some(end)) = (u64_at(raw, r), u64_at(raw, r + 8)) {
                        info.iova_ranges.push((start, end));
                    }
                }
            }
            v::VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL => info.dma_avail = u32_at(raw, at + 8),
            _ => {}
        }
        at = next as usize;
    }
    info
}

/// `VFIO_IOMMU_MAP_DMA`: `size` bytes at `vaddr` of this process reach the
/// device at `iova`, for reads and writes.
///
/// # Safety
///
/// `vaddr..vaddr + size` is memory of this process that stays allocated
/// (and is not reused for anything the device must not touch) until it is
/// unmapped with [`unmap_dma`], or until the device can no longer reach it.
pub(crate) unsafe fn map_dma(container: &OwnedFd, vaddr: usize, iova: u64, size: u64) -> Result<(), Errno> {
    let mut map = v::vfio_iommu_type1_dma_map {
        argsz: argsz::<v::vfio_iommu_type1_dma_map>(),
        flags: v::VFIO_DMA_MAP_FLAG_READ | v::VFIO_DMA_MAP_FLAG_WRITE,
        vaddr: vaddr as u64,
        iova,
        size,
    };
    // SAFETY: a vfio_iommu_type1_dma_map with its argsz; the memory it names
    // is the caller's promise.
    unsafe { call(container.as_fd(), Op::IommuMapDma, (&raw mut map).cast()) }.map(drop)
}

/// `VFIO_IOMMU_UNMAP_DMA` of the mapping at `iova`.
pub(crate) fn unmap_dma(container: &OwnedFd, iova: u64, size: u64) -> Result<(), Errno> {
    // The structure ends in a flexible array, unused without flags.
    let mut unmap = v::vfio_iommu_type1_dma_unmap {
        argsz: argsz::<v::vfio_iommu_type1_dma_unmap>(),
        flags: 0,
        iova,
        size,
        data: Default::default(),
    };
    // SAFETY: a vfio_iommu_type1_dma_unmap with its argsz; unmapping takes
    // memory away from the device only.
    unsafe { call(container.as_fd(), Op::IommuUnmapDma, (&raw mut unmap).cast()) }.map(drop)
}

/// The physical address of the byte at `vaddr`, from `/proc/self/pagemap`
/// (`Documentation/admin-guide/mm/pagemap.rst`): one 64-bit entry per page,
/// the page frame number in bits 0 to 54, bit 63 set when the page is
/// present. `Err` with why not.
pub(crate) fn physical_address(pagemap: &OwnedFd, vaddr: usize) -> Result<u64, &'static str> {
    // The system's page size (16 or 64 KiB on some arm64 kernels).
    let size = rustix::param::page_size();
    let mut entry = [0u8; 8];
    match rustix::io::pread(pagemap, &mut entry, (vaddr / size) as u64 * 8) {
        Ok(8) => {}
        _ => return Err("cannot read /proc/self/pagemap"),
    }
    let frame = frame_number(u64::from_ne_bytes(entry))?;
    Ok(frame * size as u64 + (vaddr % size) as u64)
}

/// The page frame number of a pagemap entry.
pub(crate) fn frame_number(entry: u64) -> Result<u64, &'static str> {
    if entry & (1 << 63) == 0 {
        return Err("a page of DMA memory is not present in memory (/proc/self/pagemap)");
    }
    match entry & ((1 << 55) - 1) {
        // Without CAP_SYS_ADMIN the kernel reports frame 0 for every page.
        0 => Err("/proc/self/pagemap hides physical addresses: VFIO no-IOMMU mode needs CAP_SYS_ADMIN (run as root)"),
        frame => Ok(frame),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pagemap_entries() {
        assert_eq!(frame_number((1 << 63) | 0x12345), Ok(0x12345));
        // Soft-dirty (55) and exclusive (56) bits are not part of the frame.
        assert_eq!(frame_number((1 << 63) | (1 << 55) | (1 << 56) | 7), Ok(7));
        assert!(frame_number(0x12345).unwrap_err().contains("not present"));
        assert!(frame_number(1 << 63).unwrap_err().contains("CAP_SYS_ADMIN"));
    }

    use super::*;

    fn put32(raw: &mut [u8], at: usize, v: u32) {
        raw[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn put64(raw: &mut [u8], at: usize, v: u64) {
        raw[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }

    #[test]
    fn iommu_info_capability_chain() {
        let mut raw = vec![0u8; 128];
        put32(&mut raw, 4, v::VFIO_IOMMU_INFO_PGSIZES | v::VFIO_IOMMU_INFO_CAPS);
        put64(&mut raw, 8, 0x4020_1000);
        put32(&mut raw, 16, 24);
        // IOVA ranges at 24: two of them, then DMA_AVAIL at 72.
        raw[24..26].copy_from_slice(&(v::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE as u16).to_ne_bytes());
        put32(&mut raw, 28, 72);
        put32(&mut raw, 32, 2);
        put64(&mut raw, 40, 0);
        put64(&mut raw, 48, 0xfedf_ffff);
        put64(&mut raw, 56, 0xfef0_0000);
        put64(&mut raw, 64, (1 << 39) - 1);
        raw[72..74].copy_from_slice(&(v::VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL as u16).to_ne_bytes());
        put32(&mut raw, 76, 0);
        put32(&mut raw, 80, 65535);
        let info = parse_iommu_info(&raw);
        assert_eq!(info.page_sizes, 0x4020_1000);
        assert_eq!(info.iova_ranges, vec![(0, 0xfedf_ffff), (0xfef0_0000, (1 << 39) - 1)]);
        assert_eq!(info.dma_avail, Some(65535));
    }

    #[test]
    fn iommu_info_bad_offsets_end_the_chain() {
        let mut raw = vec![0u8; 40];
        put32(&mut raw, 4, v::VFIO_IOMMU_INFO_CAPS);
        put32(&mut raw, 16, 24);
        raw[24..26].copy_from_slice(&(v::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE as u16).to_ne_bytes());
        // Points at itself, and claims ranges past the end.
        put32(&mut raw, 28, 24);
        put32(&mut raw, 32, 1000);
        let info = parse_iommu_info(&raw);
        assert!(info.iova_ranges.is_empty());
        assert_eq!(info.page_sizes, 0);
    }
}
