//! A monotonic clock from the time-stamp counter, calibrated against the PIT.

use core::time::Duration;
use x86_64::instructions::port::Port;

/// The PIT's input clock, in Hz.
const PIT_HZ: u64 = 1_193_182;

/// Reads the time-stamp counter.
fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects; every x86_64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Time from the TSC, in nanoseconds since calibration.
#[derive(Debug, Clone, Copy)]
pub struct TscClock {
    start: u64,
    /// TSC ticks per millisecond.
    ticks_per_ms: u64,
}

impl TscClock {
    /// Measures the TSC against PIT channel 2 over about 10 ms.
    ///
    /// # Safety
    ///
    /// The caller owns the PIT's channel 2 and port 0x61 (the PC speaker gate).
    pub unsafe fn calibrate() -> Self {
        const MS: u64 = 10;
        let count = (PIT_HZ * MS / 1000) as u16;
        let mut gate: Port<u8> = Port::new(0x61);
        let mut command: Port<u8> = Port::new(0x43);
        let mut channel2: Port<u8> = Port::new(0x42);
        // SAFETY: programming PIT channel 2 in mode 0 (one shot) and polling its
        // output bit in port 0x61, ports the caller owns.
        let ticks = unsafe {
            let g = gate.read();
            gate.write((g & !0x02) | 0x01); // gate on, speaker off
            command.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0
            channel2.write(count as u8);
            channel2.write((count >> 8) as u8);
            // Restart the count by toggling the gate.
            let g = gate.read();
            gate.write(g & !0x01);
            gate.write(g | 0x01);
            let t0 = rdtsc();
            let mut spins: u64 = 0;
            while gate.read() & 0x20 == 0 && spins < 200_000_000 {
                spins += 1;
            }
            rdtsc().wrapping_sub(t0)
        };
        TscClock { start: rdtsc(), ticks_per_ms: (ticks / MS).max(1) }
    }

    /// TSC ticks per millisecond, as measured.
    pub fn ticks_per_ms(&self) -> u64 {
        self.ticks_per_ms
    }

    /// TSC ticks since calibration.
    pub fn ticks(&self) -> u64 {
        rdtsc().wrapping_sub(self.start)
    }

    /// TSC ticks per second, as measured.
    pub fn ticks_per_second(&self) -> u64 {
        self.ticks_per_ms.saturating_mul(1000)
    }

    /// Time since calibration.
    pub fn now(&self) -> Duration {
        let ticks = rdtsc().wrapping_sub(self.start);
        let ms = ticks / self.ticks_per_ms;
        let rem = ticks % self.ticks_per_ms;
        Duration::from_millis(ms) + Duration::from_nanos(rem * 1_000_000 / self.ticks_per_ms)
    }

    /// Busy-waits for `d`.
    pub fn delay(&self, d: Duration) {
        let end = self.now() + d;
        while self.now() < end {
            core::hint::spin_loop();
        }
    }
}
