#![no_std]
#![no_main]

mod boot;

use core::fmt::Write;
use hal_baremetal::serial::Serial;

#[no_mangle]
extern "C" fn kernel_main(_start_info: u32) -> ! {
    // SAFETY: first and only user of COM1.
    let mut serial = unsafe { Serial::init() };
    let _ = writeln!(serial, "hello from the kernel");
    hal_baremetal::exit::exit_qemu(true)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hal_baremetal::exit::exit_qemu(false)
}
