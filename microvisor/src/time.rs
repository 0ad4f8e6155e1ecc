//! Time arithmetic: converting between TSC ticks, microseconds, nanoseconds
//! and local-APIC timer counts, and turning a relative timeout into a
//! deadline.
//!
//! The core's clock is the TSC; the rates here are measured once at boot
//! (`arch::timer::init` calibrates against the PIT) and never change.
//! Conversions use 32.32 fixed-point factors worked out once, so converting
//! never divides, and saturate instead of overflowing: a huge timeout is
//! "never", not a wrapped-around "now". The hardware half (reading the TSC,
//! arming the timer) stays in `arch::timer`.

/// The calibrated clock rates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// TSC ticks per millisecond.
    pub tsc_per_ms: u64,
    /// APIC timer counts per millisecond (divide by 16).
    pub apic_per_ms: u64,
    /// TSC at boot.
    pub boot_tsc: u64,
    /// TSC ticks per microsecond, 32.32 fixed point.
    ticks_per_us: u64,
    /// Nanoseconds per TSC tick, 32.32 fixed point.
    ns_per_tick: u64,
    /// APIC counts per TSC tick, 32.32 fixed point.
    counts_per_tick: u64,
    /// The timer runs in TSC-deadline mode (deadlines are TSC values).
    pub tsc_deadline: bool,
}

fn scaled(value: u64, factor: u64) -> u64 {
    ((u128::from(value) * u128::from(factor)) >> 32).min(u128::from(u64::MAX)) as u64
}

fn fixed(numerator: u64, denominator: u64) -> u64 {
    ((u128::from(numerator) << 32) / u128::from(denominator.max(1))).min(u128::from(u64::MAX))
        as u64
}

impl Clock {
    /// A clock from calibrated rates (a zero TSC rate counts as 1).
    pub fn new(tsc_per_ms: u64, apic_per_ms: u64, boot_tsc: u64, tsc_deadline: bool) -> Self {
        let tsc_per_ms = tsc_per_ms.max(1);
        Self {
            tsc_per_ms,
            apic_per_ms,
            boot_tsc,
            ticks_per_us: fixed(tsc_per_ms, 1000),
            ns_per_tick: fixed(1_000_000, tsc_per_ms),
            counts_per_tick: fixed(apic_per_ms, tsc_per_ms),
            tsc_deadline,
        }
    }

    /// TSC ticks in `us` microseconds.
    pub fn ticks_from_us(&self, us: u64) -> u64 {
        scaled(us, self.ticks_per_us)
    }

    /// Nanoseconds in `ticks` TSC ticks.
    pub fn ns_from_ticks(&self, ticks: u64) -> u64 {
        scaled(ticks, self.ns_per_tick)
    }

    /// Nanoseconds from boot to TSC value `now`.
    pub fn since_boot_ns(&self, now: u64) -> u64 {
        self.ns_from_ticks(now.saturating_sub(self.boot_tsc))
    }

    /// APIC timer counts for a delay of `ticks` TSC ticks, clamped to what
    /// the 32-bit counter can hold and at least one (a zero count would
    /// never fire).
    pub fn apic_counts(&self, ticks: u64) -> u32 {
        scaled(ticks, self.counts_per_tick).clamp(1, u64::from(u32::MAX)) as u32
    }

    /// The TSC deadline `timeout_us` after `now`; `None` (no timeout) stays
    /// `None`. Saturates at the end of time.
    pub fn deadline(&self, now: u64, timeout_us: Option<u64>) -> Option<u64> {
        timeout_us.map(|us| now.saturating_add(self.ticks_from_us(us)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn conversions_at_a_round_rate() {
        // 2 GHz TSC, APIC at 1/16 of 100 MHz.
        let clock = Clock::new(2_000_000, 6_250, 1_000, true);
        assert_eq!(clock.ticks_from_us(1), 2_000);
        assert_eq!(clock.ticks_from_us(10_000), 20_000_000);
        assert_eq!(clock.ns_from_ticks(2_000), 1_000);
        assert_eq!(clock.since_boot_ns(1_000 + 2_000_000), 1_000_000);
        assert_eq!(clock.since_boot_ns(0), 0, "before boot is boot");
        // 32.32 fixed point truncates: one count short of 6,250 at most.
        assert!((6_249..=6_250).contains(&clock.apic_counts(2_000_000)));
        assert_eq!(clock.apic_counts(0), 1, "a zero count never fires");
        assert_eq!(clock.apic_counts(u64::MAX), u32::MAX);
    }

    #[test]
    fn deadlines_saturate_and_none_is_forever() {
        let clock = Clock::new(1_000, 1_000, 0, false);
        assert_eq!(clock.deadline(500, None), None);
        assert_eq!(clock.deadline(500, Some(0)), Some(500));
        assert_eq!(clock.deadline(500, Some(3)), Some(503));
        assert_eq!(clock.deadline(u64::MAX - 1, Some(10)), Some(u64::MAX));
        assert_eq!(clock.deadline(7, Some(u64::MAX - 1)), Some(u64::MAX));
    }

    #[test]
    fn a_zero_rate_does_not_divide_by_zero() {
        let clock = Clock::new(0, 0, 0, false);
        assert_eq!(clock.tsc_per_ms, 1);
        assert_eq!(clock.apic_counts(1_000), 1);
    }

    proptest! {
        /// Converting is monotonic and never overflows, whatever the rate.
        #[test]
        fn conversions_are_monotonic(rate in 1u64..10_000_000, a in any::<u64>(), b in any::<u64>()) {
            let clock = Clock::new(rate, rate / 16, 0, false);
            let (low, high) = (a.min(b), a.max(b));
            prop_assert!(clock.ticks_from_us(low) <= clock.ticks_from_us(high));
            prop_assert!(clock.ns_from_ticks(low) <= clock.ns_from_ticks(high));
            prop_assert!(clock.apic_counts(low) <= clock.apic_counts(high));
        }
    }
}
