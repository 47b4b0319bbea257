//! PCI configuration access through ports 0xCF8/0xCFC, enumeration of NVMe
//! functions, and memory BAR assignment where firmware left BARs unassigned
//! (qboot does; SeaBIOS and OVMF assign them).

use crate::claim::Claim;
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

/// Gives every unassigned memory BAR of the claimed function an address from
/// `window`, then enables memory decoding and bus mastering (and disables
/// INTx: the driver polls). Returns BAR0.
///
/// Sizing a BAR turns decoding off for a moment, which would pull the
/// registers from under a driver: only the holder of the function's
/// [`Claim`] may do it.
pub fn enable(
    access: &impl ConfigRegionAccess,
    claim: &Claim,
    window: &mut BarWindow,
) -> Result<MemoryBar, PciError> {
    enable_all(access, claim, window).map(|bars| bars.0[0].unwrap_or(MemoryBar { address: 0, size: 0 }))
}

/// The memory BARs of an enabled function, by index (a 64-bit BAR at its
/// lower index); BAR0 is always there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBars(pub [Option<MemoryBar>; 6]);

/// [`enable`], returning every memory BAR (BAR2 may hold the controller
/// memory buffer).
pub fn enable_all(
    access: &impl ConfigRegionAccess,
    claim: &Claim,
    window: &mut BarWindow,
) -> Result<MemoryBars, PciError> {
    let address = claim.address();
    let header = PciHeader::new(address);
    let Some(mut endpoint) = EndpointHeader::from_header(header, access) else {
        return Err(PciError::NoMemoryBar0);
    };
    // Decoding off while BARs are sized (sizing writes all ones to them).
    endpoint
        .update_command(access, |c| c - CommandRegister::MEMORY_ENABLE - CommandRegister::BUS_MASTER_ENABLE);

    let mut bars = [None; 6];
    let mut slot = 0u8;
    while slot < 6 {
        // SAFETY: reading a BAR of an existing endpoint function.
        let raw = unsafe { access.read(address, 0x10 + slot as u16 * 4) };
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
            // pci_types 0.10 sizes a 64-bit BAR below 4 GiB as an i32 shift:
            // 2 GiB comes back sign-extended (0xffff_ffff_8000_0000). Sizes are
            // powers of two, so the lowest set bit is the size.
            Some(Bar::Memory64 { address, size, .. }) => (address, size & size.wrapping_neg(), 2),
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
        if size > 0 {
            bars[slot as usize] = Some(MemoryBar { address, size });
        }
        slot += width;
    }
    endpoint.update_command(access, |c| {
        c | CommandRegister::MEMORY_ENABLE
            | CommandRegister::BUS_MASTER_ENABLE
            | CommandRegister::INTERRUPT_DISABLE
    });
    match bars[0] {
        Some(_) => Ok(MemoryBars(bars)),
        None => Err(PciError::NoMemoryBar0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};

    const COMMAND: u16 = 0x04;
    /// QEMU's NVMe controller (Red Hat vendor ID), as the fake functions say.
    const QEMU_NVME: (u16, u16) = (0x1b36, 0x0010);

    fn bar_offset(slot: u8) -> u16 {
        0x10 + slot as u16 * 4
    }

    /// One BAR register as a device implements it: software sets only the
    /// `writable` bits; the `fixed` bits (the type) read back as they are, and
    /// the bits below the size read back as zero. Writing all ones and reading
    /// back therefore gives the size mask (PCI Local Bus 3.0, 6.2.5.1).
    #[derive(Clone, Copy, Debug)]
    struct BarRegister {
        writable: u32,
        fixed: u32,
    }

    impl BarRegister {
        /// Not implemented: reads as zero whatever is written.
        const ABSENT: BarRegister = BarRegister { writable: 0, fixed: 0 };

        fn memory32(size: u32) -> Self {
            BarRegister { writable: !(size - 1) & !0xf, fixed: 0b000 }
        }

        fn memory32_prefetchable(size: u32) -> Self {
            BarRegister { writable: !(size - 1) & !0xf, fixed: 0b1000 }
        }

        /// The lower and upper register of a 64-bit memory BAR (type 10b).
        fn memory64(size: u64) -> [Self; 2] {
            let mask = !(size - 1);
            [
                BarRegister { writable: mask as u32 & !0xf, fixed: 0b100 },
                BarRegister { writable: (mask >> 32) as u32, fixed: 0 },
            ]
        }

        fn io(size: u32) -> Self {
            BarRegister { writable: !(size - 1) & !0x3, fixed: 0b1 }
        }

        /// A memory BAR of a reserved type (01b or 11b).
        fn reserved(kind: u32) -> Self {
            BarRegister { writable: 0xffff_f000, fixed: kind << 1 }
        }

        fn value(&self, written: u32) -> u32 {
            (written & self.writable) | self.fixed
        }
    }

    /// The configuration space of one function.
    struct FakeFunction {
        address: PciAddress,
        registers: [Cell<u32>; 64],
        bars: [BarRegister; 6],
    }

    impl FakeFunction {
        /// An NVMe endpoint (class 01h, subclass 08h, prog-if 02h) with no BARs
        /// and decoding off.
        fn nvme(address: PciAddress) -> Self {
            let function = FakeFunction {
                address,
                registers: core::array::from_fn(|_| Cell::new(0)),
                bars: [BarRegister::ABSENT; 6],
            };
            function.set(0x00, (QEMU_NVME.1 as u32) << 16 | QEMU_NVME.0 as u32);
            function.set(0x08, 0x0108_0201); // class, subclass, prog-if, revision 1
            function.set(0x0c, 0); // header type 0: endpoint, single function
            function
        }

        fn class(self, class: u8, subclass: u8, prog_if: u8) -> Self {
            self.set(0x08, (class as u32) << 24 | (subclass as u32) << 16 | (prog_if as u32) << 8);
            self
        }

        fn header_type(self, header_type: u8) -> Self {
            self.set(0x0c, (header_type as u32) << 16);
            self
        }

        fn command(self, command: CommandRegister) -> Self {
            self.set(COMMAND, command.bits() as u32);
            self
        }

        /// A BAR in `slot`, holding `assigned` (0: left unassigned).
        fn bar(mut self, slot: u8, register: BarRegister, assigned: u32) -> Self {
            self.bars[slot as usize] = register;
            self.set(bar_offset(slot), register.value(assigned));
            self
        }

        /// A 64-bit BAR in `slot` and `slot + 1`.
        fn bar64(self, slot: u8, size: u64, assigned: u64) -> Self {
            let [low, high] = BarRegister::memory64(size);
            self.bar(slot, low, assigned as u32).bar(slot + 1, high, (assigned >> 32) as u32)
        }

        fn get(&self, offset: u16) -> u32 {
            assert!(offset.is_multiple_of(4) && offset < 256, "config offset {offset:#x}");
            self.registers[offset as usize / 4].get()
        }

        fn set(&self, offset: u16, value: u32) {
            self.registers[offset as usize / 4].set(value)
        }

        fn write(&self, offset: u16, value: u32) {
            match offset {
                // Command is read-write; status (the upper half) is left alone.
                COMMAND => self.set(offset, (self.get(offset) & 0xffff_0000) | (value & 0xffff)),
                0x10..=0x24 => {
                    let slot = (offset - 0x10) / 4;
                    self.set(offset, self.bars[slot as usize].value(value));
                }
                // Identification and the rest are read-only here.
                _ => {}
            }
        }
    }

    /// Configuration space of a few functions; every other function is absent
    /// and reads as all ones. Records every write, in order.
    struct FakeConfig {
        functions: Vec<FakeFunction>,
        writes: RefCell<Vec<(PciAddress, u16, u32)>>,
    }

    impl FakeConfig {
        fn new(functions: Vec<FakeFunction>) -> Self {
            FakeConfig { functions, writes: RefCell::new(Vec::new()) }
        }

        fn function(&self, address: PciAddress) -> Option<&FakeFunction> {
            self.functions.iter().find(|f| f.address == address)
        }

        fn register(&self, address: PciAddress, offset: u16) -> u32 {
            self.function(address).expect("present").get(offset)
        }

        fn command(&self, address: PciAddress) -> CommandRegister {
            CommandRegister::from_bits_retain(self.register(address, COMMAND) as u16)
        }

        /// The writes to BAR registers of `address`, in order.
        fn bar_writes(&self, address: PciAddress) -> Vec<(u16, u32)> {
            let writes = self.writes.borrow();
            writes
                .iter()
                .filter(|w| w.0 == address && (0x10..=0x24).contains(&w.1))
                .map(|w| (w.1, w.2))
                .collect()
        }
    }

    impl ConfigRegionAccess for FakeConfig {
        unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
            match self.function(address) {
                Some(function) => function.get(offset),
                None => 0xffff_ffff,
            }
        }

        unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
            self.writes.borrow_mut().push((address, offset, value));
            if let Some(function) = self.function(address) {
                function.write(offset, value);
            }
        }
    }

    fn at(bus: u8, device: u8, function: u8) -> PciAddress {
        PciAddress::new(0, bus, device, function)
    }

    fn nvme_function(address: PciAddress) -> NvmeFunction {
        NvmeFunction { address, id: QEMU_NVME }
    }

    /// The claim `enable` needs; tests running in parallel may want the same
    /// address, so wait for it.
    fn claimed(function: NvmeFunction) -> Claim {
        loop {
            if let Some(c) = crate::claim::claim(function.address) {
                return c;
            }
            std::thread::yield_now();
        }
    }

    /// The usual q35 window below 4 GiB.
    fn q35_window() -> BarWindow {
        BarWindow::new(0xc000_0000, 0xfec0_0000)
    }

    const DECODING: CommandRegister =
        CommandRegister::MEMORY_ENABLE.union(CommandRegister::BUS_MASTER_ENABLE);

    // --- The window on its own ---

    #[test]
    fn window_places_each_bar_at_its_natural_alignment() {
        let mut window = BarWindow::new(0xc000_1000, 0xd000_0000);
        assert_eq!(window.take(0x4000), Some(0xc000_4000), "16 KiB on a 16 KiB boundary");
        assert_eq!(window.take(0x1000), Some(0xc000_8000), "packed right after");
        assert_eq!(window.take(0x10_0000), Some(0xc010_0000), "1 MiB on a 1 MiB boundary");
        assert_eq!(window.take(0x2000), Some(0xc020_0000));
        assert_eq!(
            window.take(0x4000),
            Some(0xc020_4000),
            "the gap at 0xc020_2000 is too small for 16 KiB alignment"
        );
    }

    #[test]
    fn window_gives_at_least_a_page() {
        // A BAR smaller than a page still gets a page of its own, so the
        // kernel can map it without sharing the page with another BAR.
        let mut window = BarWindow::new(0xc000_0000, 0xc001_0000);
        assert_eq!(window.take(0x10), Some(0xc000_0000));
        assert_eq!(window.take(0x100), Some(0xc000_1000));
        assert_eq!(window.take(0), Some(0xc000_2000), "nothing breaks on a zero size");
        assert_eq!(window.next, 0xc000_3000);
    }

    #[test]
    fn window_refuses_what_does_not_fit() {
        let mut window = BarWindow::new(0xc000_0000, 0xc000_4000);
        assert_eq!(window.take(0x8000), None, "larger than the window");
        assert_eq!(window.take(0x2000), Some(0xc000_0000));
        assert_eq!(window.take(0x2000), Some(0xc000_2000), "ends exactly at the end");
        assert_eq!(window.take(0x1000), None, "full");
        // Alignment alone can push a BAR out: 0x8000 aligns to 0xc000_8000.
        let mut window = BarWindow::new(0xc000_1000, 0xc000_c000);
        assert_eq!(window.take(0x8000), None);
        assert_eq!(window.next, 0xc000_1000, "a refusal takes nothing");
        assert_eq!(window.take(0x1000), Some(0xc000_1000));
    }

    #[test]
    fn window_near_the_top_of_the_address_space_does_not_overflow() {
        let mut window = BarWindow::new(u64::MAX - 0xfff, u64::MAX);
        assert_eq!(window.take(0x1000), None, "its end would be 2^64");
        let mut window = BarWindow::new(u64::MAX - 0x1fff, u64::MAX);
        assert_eq!(window.take(0x1000), Some(u64::MAX - 0x1fff));
        assert_eq!(window.take(0x1000), None);
        let mut window = BarWindow::new((1 << 63) + 1, u64::MAX);
        assert_eq!(window.take(1 << 63), None, "aligning up wraps past 2^64");
        let mut window = BarWindow::new(u64::MAX, u64::MAX);
        assert_eq!(window.take(0x1000), None, "rounding the start up overflows");
    }

    // --- enable, against a fake configuration space ---

    #[test]
    fn enable_assigns_an_unassigned_bar0_and_turns_decoding_on() {
        let nvme = at(0, 4, 0);
        let config = FakeConfig::new(vec![FakeFunction::nvme(nvme).bar(0, BarRegister::memory32(0x4000), 0)]);
        let mut window = BarWindow::new(0xc000_1000, 0xc010_0000);
        let bar0 = enable(&config, &claimed(nvme_function(nvme)), &mut window).expect("enabled");
        assert_eq!(bar0, MemoryBar { address: 0xc000_4000, size: 0x4000 }, "naturally aligned");
        assert_eq!(config.register(nvme, 0x10), 0xc000_4000, "written to the register");
        assert_eq!(window.next, 0xc000_8000);
        let command = config.command(nvme);
        assert!(command.contains(DECODING | CommandRegister::INTERRUPT_DISABLE), "{command:?}");
    }

    #[test]
    fn decoding_is_off_while_bars_are_sized_and_written() {
        // Firmware left decoding on: sizing writes all ones to the BAR, which
        // would move the device's registers over whatever lives at the top of
        // the address space if decoding stayed on (PCI 3.0, 6.2.5.1).
        let nvme = at(0, 4, 0);
        let function = FakeFunction::nvme(nvme)
            .command(DECODING)
            .bar(0, BarRegister::memory32(0x4000), 0)
            .bar64(2, 0x10_0000, 0)
            .bar(4, BarRegister::memory32(0x1000), 0xc000_0000);
        let config = FakeConfig::new(vec![function]);
        enable(&config, &claimed(nvme_function(nvme)), &mut q35_window()).expect("enabled");
        let writes = config.writes.borrow();
        let mut decoding = true;
        let mut bar_writes = 0;
        for &(address, offset, value) in writes.iter() {
            assert_eq!(address, nvme);
            match offset {
                COMMAND => decoding = value & CommandRegister::MEMORY_ENABLE.bits() as u32 != 0,
                0x10..=0x24 => {
                    assert!(!decoding, "BAR {offset:#x} written with {value:#x} while decoding");
                    bar_writes += 1;
                }
                _ => panic!("unexpected write of {value:#x} to {offset:#x}"),
            }
        }
        assert!(bar_writes > 0, "the BARs were sized");
        assert!(decoding, "decoding on again at the end");
        let commands: Vec<u32> = writes.iter().filter(|w| w.1 == COMMAND).map(|w| w.2).collect();
        assert_eq!(commands.len(), 2, "off once, on once: {commands:x?}");
    }

    #[test]
    fn a_bar0_assigned_by_firmware_is_kept() {
        // SeaBIOS and OVMF assign BARs; the window must not move them.
        let nvme = at(0, 3, 0);
        let function =
            FakeFunction::nvme(nvme).command(DECODING).bar(0, BarRegister::memory32(0x4000), 0xfebd_0000);
        let config = FakeConfig::new(vec![function]);
        let mut window = q35_window();
        let bar0 = enable(&config, &claimed(nvme_function(nvme)), &mut window).expect("enabled");
        assert_eq!(bar0, MemoryBar { address: 0xfebd_0000, size: 0x4000 });
        assert_eq!(config.register(nvme, 0x10), 0xfebd_0000, "restored after sizing");
        assert_eq!(window.next, 0xc000_0000, "nothing taken from the window");
        for (offset, value) in config.bar_writes(nvme).into_iter().filter(|w| w.0 == 0x10) {
            assert!(value == 0xffff_ffff || value == 0xfebd_0000, "{offset:#x} written with {value:#x}");
        }
    }

    #[test]
    fn a_64_bit_bar0_takes_two_slots() {
        // BAR1 holds BAR0's upper half: read as a BAR of its own it would look
        // like an unassigned 32-bit BAR of 16 bytes and take window space.
        let nvme = at(0, 4, 0);
        let function = FakeFunction::nvme(nvme).bar64(0, 0x4000, 0).bar(2, BarRegister::memory32(0x1000), 0);
        let config = FakeConfig::new(vec![function]);
        let mut window = BarWindow::new(0xc000_0000, 0xc010_0000);
        let bar0 = enable(&config, &claimed(nvme_function(nvme)), &mut window).expect("enabled");
        assert_eq!(bar0, MemoryBar { address: 0xc000_0000, size: 0x4000 });
        assert_eq!(config.register(nvme, 0x10), 0xc000_0004, "address and the 64-bit type");
        assert_eq!(config.register(nvme, 0x14), 0, "upper half below 4 GiB");
        assert_eq!(config.register(nvme, 0x18), 0xc000_4000, "BAR2 right after BAR0");
        assert_eq!(window.next, 0xc000_5000, "16 KiB + 4 KiB taken, nothing for BAR1");
        assert!(config.bar_writes(nvme).iter().all(|w| w.0 != 0x14 || w.1 == 0xffff_ffff || w.1 == 0));
    }

    #[test]
    fn every_memory_bar_is_reported_by_index() {
        // QEMU's controller with a CMB: BAR0 64-bit registers, BAR2 a 64-bit
        // prefetchable CMB of 4 MiB (naturally aligned in the window).
        let nvme = at(0, 4, 0);
        let function = FakeFunction::nvme(nvme).bar64(0, 0x4000, 0).bar64(2, 4 << 20, 0);
        let config = FakeConfig::new(vec![function]);
        let mut window = BarWindow::new(0xc000_0000, 0xc100_0000);
        let bars = enable_all(&config, &claimed(nvme_function(nvme)), &mut window).expect("enabled");
        assert_eq!(
            bars.0,
            [
                Some(MemoryBar { address: 0xc000_0000, size: 0x4000 }),
                None,
                Some(MemoryBar { address: 0xc040_0000, size: 4 << 20 }),
                None,
                None,
                None
            ]
        );
    }

    #[test]
    fn a_64_bit_bar_is_assigned_above_4_gib() {
        let nvme = at(0, 4, 0);
        let function = FakeFunction::nvme(nvme).bar64(0, 0x4000, 0);
        let config = FakeConfig::new(vec![function]);
        let mut window = BarWindow::new(0x80_0000_0000, 0x80_1000_0000);
        let bar0 = enable(&config, &claimed(nvme_function(nvme)), &mut window).expect("enabled");
        assert_eq!(bar0, MemoryBar { address: 0x80_0000_0000, size: 0x4000 });
        assert_eq!(config.register(nvme, 0x10), 0x0000_0004);
        assert_eq!(config.register(nvme, 0x14), 0x80);
    }

    #[test]
    fn a_64_bit_bar_of_4_gib_or_more_is_sized_from_its_upper_half() {
        let nvme = at(0, 4, 0);
        let function = FakeFunction::nvme(nvme).bar64(0, 8 << 30, 0);
        let config = FakeConfig::new(vec![function]);
        let mut window = BarWindow::new(0x80_0000_0000, 0x90_0000_0000);
        let bar0 = enable(&config, &claimed(nvme_function(nvme)), &mut window).expect("enabled");
        assert_eq!(bar0, MemoryBar { address: 0x80_0000_0000, size: 8 << 30 });
    }

    #[test]
    fn a_64_bit_bar_of_2_gib_is_sized_right() {
        let nvme = at(0, 4, 0);
        let function = FakeFunction::nvme(nvme).bar64(0, 2 << 30, 0);
        let config = FakeConfig::new(vec![function]);
        let mut window = BarWindow::new(0x80_0000_0000, 0x90_0000_0000);
        let bar0 = enable(&config, &claimed(nvme_function(nvme)), &mut window).expect("enabled");
        assert_eq!(bar0, MemoryBar { address: 0x80_0000_0000, size: 2 << 30 });
        assert_eq!(config.register(nvme, 0x14), 0x80);
    }

    #[test]
    fn a_32_bit_bar_is_never_placed_above_4_gib() {
        let nvme = at(0, 4, 0);
        let config = FakeConfig::new(vec![FakeFunction::nvme(nvme).bar(0, BarRegister::memory32(0x4000), 0)]);
        let mut window = BarWindow::new(0x1_0000_0000, 0x2_0000_0000);
        assert_eq!(
            enable(&config, &claimed(nvme_function(nvme)), &mut window),
            Err(PciError::WindowFull(0x4000))
        );
        assert_eq!(config.register(nvme, 0x10), 0, "left unassigned");

        // A window across 4 GiB: the first BAR ends exactly at 4 GiB, which
        // fits; the second would start at 4 GiB, which does not.
        let function = FakeFunction::nvme(nvme).bar(0, BarRegister::memory32(0x4000), 0).bar(
            1,
            BarRegister::memory32_prefetchable(0x4000),
            0,
        );
        let config = FakeConfig::new(vec![function]);
        let mut window = BarWindow::new(0xffff_c000, 0x1_0001_0000);
        assert_eq!(
            enable(&config, &claimed(nvme_function(nvme)), &mut window),
            Err(PciError::WindowFull(0x4000))
        );
        assert_eq!(config.register(nvme, 0x10), 0xffff_c000);
        assert_eq!(config.register(nvme, 0x14), 0x8, "left unassigned (only its prefetchable bit)");
    }

    #[test]
    fn io_bars_and_reserved_memory_types_are_skipped() {
        // pci_types panics on the reserved types; enable must not hand them
        // to it, nor size or move I/O BARs.
        let nvme = at(0, 4, 0);
        let function = FakeFunction::nvme(nvme)
            .bar(0, BarRegister::memory32(0x4000), 0)
            .bar(1, BarRegister::io(0x100), 0xc000)
            .bar(2, BarRegister::reserved(0b01), 0)
            .bar(3, BarRegister::reserved(0b11), 0)
            .bar(4, BarRegister::io(0x20), 0);
        let config = FakeConfig::new(vec![function.bar(5, BarRegister::memory32(0x1000), 0)]);
        let mut window = BarWindow::new(0xc000_0000, 0xc010_0000);
        let bar0 = enable(&config, &claimed(nvme_function(nvme)), &mut window).expect("enabled");
        assert_eq!(bar0, MemoryBar { address: 0xc000_0000, size: 0x4000 });
        assert_eq!(config.register(nvme, 0x24), 0xc000_4000, "BAR5 assigned after the skipped ones");
        let touched: Vec<u16> = config.bar_writes(nvme).iter().map(|w| w.0).collect();
        for skipped in [0x14, 0x18, 0x1c, 0x20] {
            assert!(!touched.contains(&skipped), "BAR at {skipped:#x} written: {touched:x?}");
        }
        assert_eq!(config.register(nvme, 0x14), 0xc001, "I/O BAR untouched");
    }

    #[test]
    fn an_io_or_reserved_bar0_is_no_memory_bar0() {
        let nvme = at(0, 4, 0);
        for register in [BarRegister::io(0x100), BarRegister::reserved(0b01), BarRegister::reserved(0b11)] {
            let config = FakeConfig::new(vec![FakeFunction::nvme(nvme).bar(0, register, 0)]);
            let result = enable(&config, &claimed(nvme_function(nvme)), &mut q35_window());
            assert_eq!(result, Err(PciError::NoMemoryBar0), "{register:?}");
        }
    }

    #[test]
    fn a_window_too_small_is_window_full() {
        let nvme = at(0, 4, 0);
        let config = FakeConfig::new(vec![FakeFunction::nvme(nvme).bar(0, BarRegister::memory32(0x4000), 0)]);
        let mut window = BarWindow::new(0xc000_0000, 0xc000_2000);
        assert_eq!(
            enable(&config, &claimed(nvme_function(nvme)), &mut window),
            Err(PciError::WindowFull(0x4000))
        );
        assert_eq!(config.register(nvme, 0x10), 0, "left unassigned");
        // A later BAR that does not fit fails the function too.
        let function = FakeFunction::nvme(nvme).bar(0, BarRegister::memory32(0x1000), 0).bar(
            1,
            BarRegister::memory32(0x10_0000),
            0,
        );
        let config = FakeConfig::new(vec![function]);
        let mut window = BarWindow::new(0xc000_0000, 0xc001_0000);
        assert_eq!(
            enable(&config, &claimed(nvme_function(nvme)), &mut window),
            Err(PciError::WindowFull(0x10_0000))
        );
    }

    #[test]
    fn a_missing_bar0_is_no_memory_bar0() {
        let nvme = at(0, 4, 0);
        let config = FakeConfig::new(vec![FakeFunction::nvme(nvme).bar(1, BarRegister::memory32(0x4000), 0)]);
        let mut window = q35_window();
        assert_eq!(enable(&config, &claimed(nvme_function(nvme)), &mut window), Err(PciError::NoMemoryBar0));
    }

    #[test]
    fn a_bridge_is_no_memory_bar0() {
        let nvme = at(0, 4, 0);
        let config = FakeConfig::new(vec![FakeFunction::nvme(nvme).header_type(0x01)]);
        assert_eq!(
            enable(&config, &claimed(nvme_function(nvme)), &mut q35_window()),
            Err(PciError::NoMemoryBar0)
        );
        assert!(config.writes.borrow().is_empty(), "a bridge is not touched");
    }

    // --- find_nvme ---

    #[test]
    fn find_nvme_finds_nvme_endpoints_on_every_bus() {
        let function =
            |address, class: (u8, u8, u8)| FakeFunction::nvme(address).class(class.0, class.1, class.2);
        let nvme = (0x01, 0x08, 0x02);
        let config = FakeConfig::new(vec![
            function(at(0, 0, 0), (0x06, 0x00, 0x00)), // host bridge
            function(at(0, 3, 0), nvme),
            function(at(0, 4, 0), (0x01, 0x06, 0x01)), // AHCI
            function(at(0, 5, 0), (0x01, 0x08, 0x03)), // NVM, not NVMe
            // A multi-function device whose function 2 is NVMe.
            function(at(1, 0, 0), (0x02, 0x00, 0x00)).header_type(0x80),
            function(at(1, 0, 2), nvme),
            // Function 1 of a single-function device is not looked at.
            function(at(2, 0, 0), (0x02, 0x00, 0x00)),
            function(at(2, 0, 1), nvme),
            // A bridge with NVMe's class code is not an endpoint.
            function(at(3, 0, 0), nvme).header_type(0x01),
            function(at(255, 31, 0), nvme),
        ]);
        let found = find_nvme::<8>(&config);
        let addresses: Vec<PciAddress> = found.iter().map(|f| f.address).collect();
        assert_eq!(addresses, [at(0, 3, 0), at(1, 0, 2), at(255, 31, 0)]);
        assert!(found.iter().all(|f| f.id == QEMU_NVME));
        assert!(config.writes.borrow().is_empty(), "a scan writes nothing");
    }

    #[test]
    fn find_nvme_keeps_the_first_m() {
        let config = FakeConfig::new((0..4).map(|device| FakeFunction::nvme(at(0, device, 0))).collect());
        let found = find_nvme::<2>(&config);
        assert_eq!(found.iter().map(|f| f.address).collect::<Vec<_>>(), [at(0, 0, 0), at(0, 1, 0)]);
    }
}
