//! The ACPI power-management timer: a free-running 24-bit counter at
//! 3.579545 MHz that the FADT names (`PM_TMR_BLK`, `X_PM_TMR_BLK`).
//!
//! Linux uses it as the reference against which it calibrates the TSC
//! when the PIT loop cannot be trusted — and under emulation it cannot:
//! every port read of that loop is a VM exit, so it runs too few rounds
//! (or is interrupted by other VMs) and Linux gives up ("Unable to
//! calibrate against PIT"). The timer is computed from the TSC like the
//! other timers here, never ticked, and raises no interrupt (the FADT's
//! `TMR_VAL_EXT` flag is clear: 24 bits).

use crate::clock::Clock;

/// The I/O port of the counter (QEMU's q35 uses the same).
pub const PORT: u16 = 0x608;
/// The counter's rate.
pub const FREQUENCY: u64 = 3_579_545;
/// The counter's width.
const MASK: u64 = (1 << 24) - 1;

/// The timer of one VM.
#[derive(Clone, Copy, Debug)]
pub struct PmTimer {
    clock: Clock,
}

impl PmTimer {
    /// A timer over a TSC of `tsc_hz`; `None` for an unusable rate.
    pub fn new(tsc_hz: u64) -> Option<Self> {
        Some(Self {
            clock: Clock::new(tsc_hz, FREQUENCY)?,
        })
    }

    /// Whether `port` is the timer's.
    pub fn decodes(port: u16) -> bool {
        (PORT..PORT + 4).contains(&port)
    }

    /// An IN of `size` bytes at `port` at TSC `now`: the counter's bytes
    /// from the port's offset (an access past the register reads zeros).
    pub fn read(&self, port: u16, size: u8, now: u64) -> u32 {
        let value = self.clock.ticks_in(now) & MASK;
        let shift = u32::from(port.wrapping_sub(PORT)) * 8;
        let value = value.checked_shr(shift).unwrap_or(0);
        let mask = match size {
            1 => 0xff,
            2 => 0xffff,
            _ => 0xffff_ffff,
        };
        (value & mask) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_at_its_rate_in_24_bits() {
        // A 1 GHz TSC: one second is 3,579,545 counts, which wrap at 2^24.
        let timer = PmTimer::new(1_000_000_000).unwrap();
        assert_eq!(timer.read(PORT, 4, 0), 0);
        assert_eq!(timer.read(PORT, 4, 1_000_000_000), 3_579_545);
        let five_seconds = 5 * 3_579_545u64;
        assert_eq!(
            u64::from(timer.read(PORT, 4, 5_000_000_000)),
            five_seconds & MASK,
            "wraps at 24 bits"
        );
        assert_eq!(timer.read(PORT, 1, 1_000_000_000), 3_579_545 & 0xff);
        assert_eq!(
            timer.read(PORT + 1, 1, 1_000_000_000),
            (3_579_545 >> 8) & 0xff
        );
        assert_eq!(
            timer.read(PORT + 3, 1, 1_000_000_000),
            0,
            "the top byte is 0"
        );
        assert!(PmTimer::decodes(PORT + 3) && !PmTimer::decodes(PORT + 4));
        assert!(PmTimer::new(0).is_none());
    }

    #[test]
    fn linux_calibrates_a_tsc_against_it() {
        // calc_pmtimer_ref: ticks * 1,000,000,000 / (3,579,545 * ...): the
        // TSC rate follows from two readings 10 ms apart.
        let tsc_hz = 2_712_000_000u64;
        let timer = PmTimer::new(tsc_hz).unwrap();
        let (start, end) = (123_456_789, 123_456_789 + tsc_hz / 100);
        let counts = u64::from(timer.read(PORT, 4, end))
            .wrapping_sub(u64::from(timer.read(PORT, 4, start)))
            & MASK;
        let measured = (end - start) * FREQUENCY / counts;
        assert!(
            measured.abs_diff(tsc_hz) * 1000 < tsc_hz,
            "{measured} vs {tsc_hz}"
        );
    }
}
