//! Leaving QEMU with a verdict through `-device isa-debug-exit,iobase=0xf4`.
//!
//! Writing `v` to the port makes QEMU exit with status `(v << 1) | 1`. A triple
//! fault or a plain power-off exits with 0, so neither code below is 0 and the
//! two differ: a crash never looks like success.

use x86_64::instructions::port::Port;

/// The `isa-debug-exit` port that the QEMU command lines of this project use.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// Written for success: QEMU exits with status 33.
pub const SUCCESS_VALUE: u32 = 0x10;
/// Written for failure (and on panic): QEMU exits with status 35.
pub const FAILURE_VALUE: u32 = 0x11;
/// QEMU's exit status after [`SUCCESS_VALUE`].
pub const SUCCESS_STATUS: i32 = ((SUCCESS_VALUE << 1) | 1) as i32;
/// QEMU's exit status after [`FAILURE_VALUE`].
pub const FAILURE_STATUS: i32 = ((FAILURE_VALUE << 1) | 1) as i32;

/// Exits QEMU with the success or failure status. If no debug-exit device is
/// present, halts forever.
pub fn exit_qemu(success: bool) -> ! {
    let mut port: Port<u32> = Port::new(DEBUG_EXIT_PORT);
    // SAFETY: a write to the isa-debug-exit port ends the virtual machine; on
    // a machine without that device, port 0xf4 is unused.
    unsafe { port.write(if success { SUCCESS_VALUE } else { FAILURE_VALUE }) };
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
