//! Device clocks measured against the TSC.
//!
//! The timer models ([`crate::lapic`], [`crate::pit`]) never tick: they
//! remember the TSC value at which they started counting and compute their
//! counters from it when asked. A [`Clock`] converts exactly between a span
//! of TSC ticks and whole ticks of a device clock (the APIC bus, the PIT's
//! 1.193182 MHz crystal) with 128-bit intermediates, so a periodic timer
//! whose expiries are computed as "origin + k periods" never drifts: every
//! expiry is rounded once, from the origin, and the rounding errors do not
//! add up.

/// A device clock of `device_hz` driven alongside a TSC of `tsc_hz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    tsc_hz: u64,
    device_hz: u64,
}

/// The shortest period a periodic timer is allowed, in microseconds: a
/// guest that programs a shorter one gets this one, so that it cannot make
/// the world switcher spin on timer exits (KVM has the same kind of floor).
pub const MINIMUM_PERIOD_MICROSECONDS: u64 = 100;

impl Clock {
    /// A clock, or `None` when either frequency is zero.
    pub const fn new(tsc_hz: u64, device_hz: u64) -> Option<Self> {
        if tsc_hz == 0 || device_hz == 0 {
            None
        } else {
            Some(Self { tsc_hz, device_hz })
        }
    }

    pub const fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }

    pub const fn device_hz(&self) -> u64 {
        self.device_hz
    }

    /// Whole device ticks that have passed in `tsc_ticks` TSC ticks
    /// (rounded down; saturates at `u64::MAX`).
    pub fn ticks_in(&self, tsc_ticks: u64) -> u64 {
        let ticks = u128::from(tsc_ticks) * u128::from(self.device_hz) / u128::from(self.tsc_hz);
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    /// The fewest TSC ticks in which `ticks` device ticks have passed
    /// (rounded up; saturates at `u64::MAX`): `ticks_in(tsc_for(n)) >= n`
    /// and `ticks_in(tsc_for(n) - 1) < n`.
    pub fn tsc_for(&self, ticks: u64) -> u64 {
        let tsc =
            (u128::from(ticks) * u128::from(self.tsc_hz)).div_ceil(u128::from(self.device_hz));
        u64::try_from(tsc).unwrap_or(u64::MAX)
    }

    /// [`MINIMUM_PERIOD_MICROSECONDS`] in device ticks (at least one).
    pub fn minimum_period(&self) -> u64 {
        let tsc = self
            .tsc_hz
            .div_ceil(1_000_000 / MINIMUM_PERIOD_MICROSECONDS);
        self.ticks_in(tsc).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zero_frequencies_are_refused() {
        assert_eq!(Clock::new(0, 1), None);
        assert_eq!(Clock::new(1, 0), None);
    }

    #[test]
    fn converts_exactly() {
        // A 2.6 GHz TSC and the PIT.
        let clock = Clock::new(2_600_000_000, 1_193_182).unwrap();
        assert_eq!(clock.ticks_in(2_600_000_000), 1_193_182);
        assert_eq!(clock.tsc_for(1_193_182), 2_600_000_000);
        // One PIT tick is 2179.06 TSC ticks: rounded up.
        assert_eq!(clock.tsc_for(1), 2180);
        assert_eq!(clock.ticks_in(2179), 0);
        assert_eq!(clock.ticks_in(2180), 1);
        assert_eq!(clock.minimum_period(), 119);
        let fast = Clock::new(1, u64::MAX).unwrap();
        assert_eq!(fast.ticks_in(2), u64::MAX, "saturates");
    }

    proptest! {
        #[test]
        fn tsc_for_is_the_least_inverse(
            tsc_hz in 1u64..=10_000_000_000,
            device_hz in 1u64..=10_000_000_000,
            ticks in 0u64..=1 << 40,
        ) {
            let clock = Clock::new(tsc_hz, device_hz).unwrap();
            let tsc = clock.tsc_for(ticks);
            prop_assert!(clock.ticks_in(tsc) >= ticks);
            if tsc > 0 {
                prop_assert!(clock.ticks_in(tsc - 1) < ticks);
            }
        }
    }
}
