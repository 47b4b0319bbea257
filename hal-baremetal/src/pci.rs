//! PCI configuration access through ports 0xCF8/0xCFC, enumeration of NVMe
//! functions, and memory BAR assignment where firmware left BARs unassigned
//! (qboot does; SeaBIOS and OVMF assign them).

use pci_types::{
    Bar, CommandRegister, ConfigRegionAccess, EndpointHeader, HeaderType, PciAddress, PciHeader,
};
use spin::Mutex;
use x86_64::instructions::port::Port;

/// PCI class code of a mass storage controller.
const CLASS_STORAGE: u8 = 0x01;
/// Subclass of a non-volatile memory controller.
const SUBCLASS_NVM: u8 = 0x08;
/// Programming interface of NVM Express (NVMe I/O controller).
const PROG_IF_NVME: u8 = 0x02;

/// Configuration mechanism #1: address to port 0xCF8, data at 0xCFC.
pub struct PortConfigAccess {
    lock: Mutex<()>,
}

impl PortConfigAccess {
    /// The access method.
    ///
    /// # Safety
    ///
    /// The caller owns ports 0xCF8-0xCFF; there is one such value per system.
    pub const unsafe fn new() -> Self {
        PortConfigAccess { lock: Mutex::new(()) }
    }

    fn address(address: PciAddress, offset: u16) -> u32 {
        0x8000_0000
            | (address.bus() as u32) << 16
            | (address.device() as u32) << 11
            | (address.function() as u32) << 8
            | (offset as u32 & 0xfc)
    }
}

impl ConfigRegionAccess for PortConfigAccess {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        let _guard = self.lock.lock();
        let mut addr: Port<u32> = Port::new(0xcf8);
        let mut data: Port<u32> = Port::new(0xcfc);
        // SAFETY: the ports belong to this value (see `new`); the lock keeps the
        // address/data pair together.
        unsafe {
            addr.write(Self::address(address, offset));
            data.read()
        }
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        let _guard = self.lock.lock();
        let mut addr: Port<u32> = Port::new(0xcf8);
        let mut data: Port<u32> = Port::new(0xcfc);
        // SAFETY: as in `read`.
        unsafe {
            addr.write(Self::address(address, offset));
            data.write(value)
        }
    }
}

/// An NVMe function found on the bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NvmeFunction {
    /// Its PCI address.
    pub address: PciAddress,
    /// PCI vendor and device identifiers.
    pub id: (u16, u16),
}

/// Every NVMe function on buses 0 to 255 (at most `M`).
pub fn find_nvme<const M: usize>(access: &impl ConfigRegionAccess) -> heapless::Vec<NvmeFunction, M> {
    let mut found = heapless::Vec::new();
    for bus in 0..=255u8 {
        for device in 0..32u8 {
            let header = PciHeader::new(PciAddress::new(0, bus, device, 0));
            if header.id(access).0 == 0xffff {
                continue;
            }
            let functions = if header.has_multiple_functions(access) { 8 } else { 1 };
            for function in 0..functions {
                let header = PciHeader::new(PciAddress::new(0, bus, device, function));
                let (vendor, device_id) = header.id(access);
                if vendor == 0xffff || header.header_type(access) != HeaderType::Endpoint {
                    continue;
                }
                let (_, class, subclass, prog_if) = header.revision_and_class(access);
                if (class, subclass, prog_if) == (CLASS_STORAGE, SUBCLASS_NVM, PROG_IF_NVME) {
                    let _ = found.push(NvmeFunction { address: header.address(), id: (vendor, device_id) });
                }
            }
        }
    }
    found
}

/// A window of physical address space for BARs that firmware left unassigned.
#[derive(Debug)]
pub struct BarWindow {
    next: u64,
    end: u64,
}

impl BarWindow {
    /// Addresses `start..end` are free for BARs (on QEMU's q35 below 4 GiB:
    /// 0xC000_0000 to 0xFEC0_0000).
    pub const fn new(start: u64, end: u64) -> Self {
        BarWindow { next: start, end }
    }

    fn take(&mut self, size: u64) -> Option<u64> {
        let size = size.max(4096);
        let base = self.next.checked_add(size - 1)? & !(size - 1);
        let end = base.checked_add(size)?;
        if end > self.end {
            return None;
        }
        self.next = end;
        Some(base)
    }
}

/// Why a function could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// BAR0 is missing or not a memory BAR.
    NoMemoryBar0,
    /// The window has no room for a BAR of this size.
    WindowFull(u64),
}

/// BAR0 of an enabled function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBar {
    /// Physical address.
    pub address: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Gives every unassigned memory BAR of `function` an address from `window`,
/// then enables memory decoding and bus mastering (and disables INTx: the
/// driver polls). Returns BAR0.
pub fn enable(
    access: &impl ConfigRegionAccess,
    function: &NvmeFunction,
    window: &mut BarWindow,
) -> Result<MemoryBar, PciError> {
    let header = PciHeader::new(function.address);
    let Some(mut endpoint) = EndpointHeader::from_header(header, access) else {
        return Err(PciError::NoMemoryBar0);
    };
    // Decoding off while BARs are sized (sizing writes all ones to them).
    endpoint
        .update_command(access, |c| c - CommandRegister::MEMORY_ENABLE - CommandRegister::BUS_MASTER_ENABLE);

    let mut bar0 = None;
    let mut slot = 0u8;
    while slot < 6 {
        // SAFETY: reading a BAR of an existing endpoint function.
        let raw = unsafe { access.read(function.address, 0x10 + slot as u16 * 4) };
        let is_io = raw & 1 == 1;
        let kind = (raw >> 1) & 3;
        // Reserved memory types (01b, 11b) are skipped rather than decoded
        // (pci_types panics on them).
        if is_io || kind == 1 || kind == 3 {
            slot += 1;
            continue;
        }
        let bar = endpoint.bar(slot, access);
        let (address, size, width) = match bar {
            Some(Bar::Memory32 { address, size, .. }) => (address as u64, size as u64, 1),
            Some(Bar::Memory64 { address, size, .. }) => (address, size, 2),
            _ => (0, 0, 1),
        };
        let mut address = address;
        if size > 0 && address == 0 {
            address = window.take(size).ok_or(PciError::WindowFull(size))?;
            if width == 1 && address + size > 1 << 32 {
                return Err(PciError::WindowFull(size));
            }
            // SAFETY: a naturally aligned address in a window that the caller
            // says is free; a 32-bit BAR gets one below 4 GiB (checked above).
            if unsafe { endpoint.write_bar(slot, access, address as usize) }.is_err() {
                return Err(PciError::NoMemoryBar0);
            }
        }
        if slot == 0 && size > 0 {
            bar0 = Some(MemoryBar { address, size });
        }
        slot += width;
    }
    endpoint.update_command(access, |c| {
        c | CommandRegister::MEMORY_ENABLE
            | CommandRegister::BUS_MASTER_ENABLE
            | CommandRegister::INTERRUPT_DISABLE
    });
    bar0.ok_or(PciError::NoMemoryBar0)
}
