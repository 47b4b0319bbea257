//! COM1 (a 16550 UART at port 0x3F8), for the kernel's log and verdict.

use core::fmt;
use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;

/// The first serial port, polled.
#[derive(Debug)]
pub struct Serial {
    data: Port<u8>,
    line_status: Port<u8>,
}

impl Serial {
    /// Programs COM1 for 115200 baud, 8N1, FIFOs on, interrupts off.
    ///
    /// # Safety
    ///
    /// The caller owns COM1: nothing else programs the port meanwhile.
    pub unsafe fn init() -> Self {
        let reg = |off: u16, v: u8| {
            let mut p: Port<u8> = Port::new(COM1 + off);
            // SAFETY: writing the 16550's own registers at COM1, which the
            // caller owns.
            unsafe { p.write(v) }
        };
        reg(1, 0x00); // no interrupts
        reg(3, 0x80); // DLAB on
        reg(0, 0x01); // divisor 1: 115200 baud
        reg(1, 0x00);
        reg(3, 0x03); // 8N1, DLAB off
        reg(2, 0xc7); // FIFO on, cleared, 14-byte threshold
        reg(4, 0x03); // DTR, RTS
        Serial { data: Port::new(COM1), line_status: Port::new(COM1 + 5) }
    }

    /// Sends one byte, waiting for room in the transmitter.
    pub fn send(&mut self, byte: u8) {
        // Bounded wait: a missing UART reads 0xFF and counts as ready.
        for _ in 0..100_000 {
            // SAFETY: reading the line status register of COM1.
            if unsafe { self.line_status.read() } & 0x20 != 0 {
                break;
            }
        }
        // SAFETY: writing the transmit register of COM1.
        unsafe { self.data.write(byte) }
    }
}

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.send(b'\r');
            }
            self.send(b);
        }
        Ok(())
    }
}
