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

    /// A clock for a TSC known to run at `ticks_per_ms` ticks per millisecond
    /// (at least 1), starting now.
    ///
    /// For kernels that know the TSC frequency already, from CPUID leaf 0x15
    /// or from the firmware, and so need not spend 10 ms and the PIT on
    /// [`calibrate`](TscClock::calibrate).
    pub fn from_rate(ticks_per_ms: u64) -> Self {
        // At least 1: `now` divides by it.
        TscClock { start: rdtsc(), ticks_per_ms: ticks_per_ms.max(1) }
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
        hal_traits::ticks_to_duration(self.ticks(), self.ticks_per_second())
    }

    /// Busy-waits for `d`.
    pub fn delay(&self, d: Duration) {
        let end = self.now() + d;
        while self.now() < end {
            core::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_rate_reports_its_rate() {
        let clock = TscClock::from_rate(2_500_000);
        assert_eq!(clock.ticks_per_ms(), 2_500_000);
        assert_eq!(clock.ticks_per_second(), 2_500_000_000);
        assert_eq!(TscClock::from_rate(0).ticks_per_ms(), 1, "a zero rate would divide by zero in now");
        assert_eq!(TscClock::from_rate(u64::MAX).ticks_per_second(), u64::MAX, "saturates");
    }

    #[test]
    fn now_is_ticks_at_the_given_rate() {
        // Started 7.5 ms of clock time ago at a made-up rate: the host's real
        // TSC frequency does not matter, only the conversion.
        let rate = 1_000_000;
        let clock = TscClock { start: rdtsc().wrapping_sub(7 * rate + rate / 2), ticks_per_ms: rate };
        let before = clock.ticks();
        let now = clock.now();
        let after = clock.ticks();
        assert!(before >= 7 * rate + rate / 2);
        assert!(after >= before, "monotonic");
        // `now` reads the counter between the two `ticks`, so it lies between
        // their conversions (nanoseconds = ticks * 1e6 / ticks per ms).
        assert!(now >= Duration::from_nanos(before * 1_000_000 / rate), "{now:?} before {before} ticks");
        assert!(now <= Duration::from_nanos(after * 1_000_000 / rate), "{now:?} after {after} ticks");
        assert!(now >= Duration::from_micros(7500));
    }

    #[test]
    fn now_keeps_sub_millisecond_ticks() {
        // A slow made-up rate (1000 ticks per ms, one per microsecond) so the
        // remainder arithmetic shows: 2.5 ms is 2500 ticks, not 2 ms.
        let clock = TscClock { start: rdtsc().wrapping_sub(2500), ticks_per_ms: 1000 };
        let now = clock.now();
        assert!(now >= Duration::from_micros(2500), "{now:?}");
    }

    #[test]
    fn delay_waits_at_least_its_duration_in_clock_time() {
        // 1000 ticks per ms: 200 us of clock time is 200 ticks of the host's
        // TSC, so the test takes no measurable wall time.
        let clock = TscClock::from_rate(1000);
        let before = clock.now();
        clock.delay(Duration::from_micros(200));
        assert!(clock.now() - before >= Duration::from_micros(200));
    }
}
