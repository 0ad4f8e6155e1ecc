//! The paravirtual clock ([`guest_api::kvm`]): how a guest learns its TSC
//! rate and the wall-clock time without calibrating anything.
//!
//! The guest hands over the guest-physical addresses of two structures
//! through MSRs; this model fills them, in KVM's layout:
//!
//! - `pvclock_vcpu_time_info` (32 bytes): `version`, `tsc_timestamp`,
//!   `system_time` (nanoseconds at that TSC value), the TSC-to-nanosecond
//!   multiplier and shift, and flags. The guest computes the time as
//!   `system_time + scale(tsc - tsc_timestamp)` and its TSC rate as
//!   `(10^6 << 32) / multiplier`, shifted. The TSC is the host's,
//!   unchanged and constant on the one vCPU, so the structure is written
//!   once, when the guest enables it, with the stable flag.
//! - `pvclock_wall_clock` (12 bytes): the Unix time at which the clock
//!   read 0. The clock counts nanoseconds of the TSC since it read 0, as
//!   the [`crate::rtc`] does, so both show the same time.
//!
//! Each structure is written with an even version (no update in progress:
//! the guest is not running while the world switcher writes). An address
//! whose structure does not lie wholly in guest RAM is refused with `#GP`
//! and nothing is written.

use guest_api::kvm::{MSR_SYSTEM_TIME, MSR_WALL_CLOCK};

use crate::Memory;
use crate::clock::Clock;
use crate::msr::GeneralProtection;

/// The size of `pvclock_vcpu_time_info`.
pub const TIME_INFO_BYTES: usize = 32;
/// The size of `pvclock_wall_clock`.
pub const WALL_CLOCK_BYTES: usize = 12;
/// `PVCLOCK_TSC_STABLE_BIT`.
pub const FLAG_TSC_STABLE: u8 = 1 << 0;
/// The version every structure is written with: even, so "not being
/// updated", and not 0, so distinguishable from memory never written.
const VERSION: u32 = 2;
/// The system-time MSR's enable bit.
const ENABLE: u64 = 1;
const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// A TSC-to-nanosecond scale as pvclock carries it: nanoseconds =
/// `((ticks << shift) * multiplier) >> 32` (a negative shift shifts
/// right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    pub multiplier: u32,
    pub shift: i8,
}

impl Scale {
    /// The most precise scale for a TSC of `tsc_hz`: the smallest shift
    /// whose multiplier (rounded to nearest) fits 32 bits, so it keeps 31
    /// or 32 significant bits. `None` for a rate of 0.
    pub fn new(tsc_hz: u64) -> Option<Self> {
        if tsc_hz == 0 {
            return None;
        }
        (-32i8..=31).find_map(|shift| {
            // multiplier = 10^9 * 2^32 / (tsc_hz * 2^shift)
            let (numerator, denominator) = if shift < 0 {
                (
                    u128::from(NANOS_PER_SECOND) << (32 - i32::from(shift)),
                    u128::from(tsc_hz),
                )
            } else {
                (
                    u128::from(NANOS_PER_SECOND) << 32,
                    u128::from(tsc_hz) << shift,
                )
            };
            let rounded = (numerator + denominator / 2) / denominator;
            let multiplier = u32::try_from(rounded).ok()?;
            Some(Self { multiplier, shift })
        })
    }

    /// Nanoseconds in `ticks`, computed as the guest does
    /// (`pvclock_scale_delta`).
    pub fn nanoseconds(&self, ticks: u64) -> u64 {
        let shifted = if self.shift < 0 {
            ticks >> -self.shift
        } else {
            ticks << self.shift
        };
        ((u128::from(shifted) * u128::from(self.multiplier)) >> 32) as u64
    }

    /// The TSC rate in kHz as the guest derives it (`pvclock_tsc_khz`).
    pub fn khz(&self) -> u64 {
        let khz = (1_000_000u64 << 32) / u64::from(self.multiplier.max(1));
        if self.shift < 0 {
            khz << -self.shift
        } else {
            khz >> self.shift
        }
    }
}

/// The clock's MSRs and what they point at.
#[derive(Clone, Debug)]
pub struct Pvclock {
    scale: Scale,
    /// TSC ticks to nanoseconds, exactly.
    nanoseconds: Clock,
    /// Unix seconds at which the clock read 0.
    epoch: u64,
    system_time: u64,
    wall_clock: u64,
}

impl Pvclock {
    /// The clock of a TSC of `tsc_hz` that read 0 at Unix time `epoch`;
    /// `None` for a rate of 0.
    pub fn new(tsc_hz: u64, epoch: u64) -> Option<Self> {
        Some(Self {
            scale: Scale::new(tsc_hz)?,
            nanoseconds: Clock::new(tsc_hz, NANOS_PER_SECOND)?,
            epoch,
            system_time: 0,
            wall_clock: 0,
        })
    }

    pub fn scale(&self) -> Scale {
        self.scale
    }

    /// Whether `msr` is one of the clock's.
    pub fn decodes(msr: u32) -> bool {
        msr == MSR_SYSTEM_TIME || msr == MSR_WALL_CLOCK
    }

    /// RDMSR: the value last written.
    pub fn read_msr(&self, msr: u32) -> Result<u64, GeneralProtection> {
        match msr {
            MSR_SYSTEM_TIME => Ok(self.system_time),
            MSR_WALL_CLOCK => Ok(self.wall_clock),
            _ => Err(GeneralProtection),
        }
    }

    /// WRMSR at TSC value `tsc`: fills the structure the value points at
    /// (the time information only when enabled).
    pub fn write_msr(
        &mut self,
        msr: u32,
        value: u64,
        tsc: u64,
        memory: &mut impl Memory,
    ) -> Result<(), GeneralProtection> {
        match msr {
            MSR_SYSTEM_TIME => {
                if value & ENABLE != 0 {
                    let info = self.time_info(tsc);
                    write_whole(memory, value & !ENABLE, &info)?;
                }
                self.system_time = value;
            }
            MSR_WALL_CLOCK => {
                write_whole(memory, value, &self.wall_clock_bytes())?;
                self.wall_clock = value;
            }
            _ => return Err(GeneralProtection),
        }
        Ok(())
    }

    /// The time information at TSC value `tsc`.
    pub fn time_info(&self, tsc: u64) -> [u8; TIME_INFO_BYTES] {
        let mut info = [0; TIME_INFO_BYTES];
        info[0..4].copy_from_slice(&VERSION.to_le_bytes());
        info[8..16].copy_from_slice(&tsc.to_le_bytes());
        info[16..24].copy_from_slice(&self.nanoseconds.ticks_in(tsc).to_le_bytes());
        info[24..28].copy_from_slice(&self.scale.multiplier.to_le_bytes());
        info[28] = self.scale.shift as u8;
        info[29] = FLAG_TSC_STABLE;
        info
    }

    /// The wall-clock structure: the epoch, which fits its 32-bit seconds
    /// until 2106 (later epochs are clamped).
    pub fn wall_clock_bytes(&self) -> [u8; WALL_CLOCK_BYTES] {
        let seconds = u32::try_from(self.epoch).unwrap_or(u32::MAX);
        let mut bytes = [0; WALL_CLOCK_BYTES];
        bytes[0..4].copy_from_slice(&VERSION.to_le_bytes());
        bytes[4..8].copy_from_slice(&seconds.to_le_bytes());
        bytes
    }
}

/// Writes `bytes` at `address` if all of them lie in guest RAM.
fn write_whole(
    memory: &mut impl Memory,
    address: u64,
    bytes: &[u8],
) -> Result<(), GeneralProtection> {
    let fits = address
        .checked_add(bytes.len() as u64)
        .is_some_and(|end| end <= memory.size());
    if fits && memory.write(address, bytes) {
        Ok(())
    } else {
        Err(GeneralProtection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::VecMemory;
    use proptest::prelude::*;

    /// The time the guest reads from `info` at TSC value `tsc`
    /// (`__pvclock_read_cycles`).
    fn guest_time(info: &[u8; TIME_INFO_BYTES], tsc: u64) -> u64 {
        let u64_at = |i: usize| u64::from_le_bytes(info[i..i + 8].try_into().unwrap());
        let scale = Scale {
            multiplier: u32::from_le_bytes(info[24..28].try_into().unwrap()),
            shift: info[28] as i8,
        };
        u64_at(16) + scale.nanoseconds(tsc - u64_at(8))
    }

    #[test]
    fn common_rates_scale_as_kvm_does() {
        // A 2.6 GHz TSC: shift -1 (the multiplier would not fit at 0).
        let scale = Scale::new(2_603_385_000).unwrap();
        assert_eq!(scale.shift, -1);
        assert!(scale.multiplier >= 1 << 31);
        assert!((2_603_384..=2_603_385).contains(&scale.khz()));
        // Exactly 1 GHz: one tick is one nanosecond.
        let scale = Scale::new(1_000_000_000).unwrap();
        assert_eq!((scale.shift, scale.multiplier), (1, 1 << 31));
        assert_eq!(scale.nanoseconds(12_345), 12_345);
        assert_eq!(scale.khz(), 1_000_000);
        // A slow counter shifts left.
        assert!(Scale::new(10_000_000).unwrap().shift > 0);
        assert_eq!(Scale::new(0), None);
    }

    proptest! {
        /// The guest derives the rate within 2 ppm (its formula shifts
        /// the quotient left, and the error with it) and times a second to
        /// within a microsecond, for every rate from 1 MHz to 20 GHz.
        #[test]
        fn the_guest_recovers_the_rate(tsc_hz in 1_000_000u64..20_000_000_000) {
            let scale = Scale::new(tsc_hz).unwrap();
            prop_assert!(scale.multiplier >= 1 << 31);
            let error = scale.khz().abs_diff(tsc_hz / 1000);
            prop_assert!(error <= 1 || error * 500_000 <= tsc_hz / 1000, "{}", scale.khz());
            let second = scale.nanoseconds(tsc_hz);
            prop_assert!(second.abs_diff(NANOS_PER_SECOND) <= 1000, "{second}");
        }

        /// Read at any later TSC value, the clock agrees with the exact
        /// conversion to within a microsecond per second elapsed, and
        /// never runs backwards.
        #[test]
        fn the_clock_follows_the_tsc(
            tsc_hz in 1_000_000u64..10_000_000_000,
            start in 0u64..1 << 50,
            steps in proptest::collection::vec(0u64..1 << 36, 1..8),
        ) {
            let clock = Pvclock::new(tsc_hz, 0).unwrap();
            let exact = Clock::new(tsc_hz, NANOS_PER_SECOND).unwrap();
            let info = clock.time_info(start);
            let mut tsc = start;
            let mut last = guest_time(&info, tsc);
            prop_assert_eq!(last, exact.ticks_in(start));
            for step in steps {
                tsc += step;
                let now = guest_time(&info, tsc);
                prop_assert!(now >= last);
                let elapsed_s = exact.ticks_in(tsc - start) / NANOS_PER_SECOND + 1;
                prop_assert!(now.abs_diff(exact.ticks_in(tsc)) <= 1000 * elapsed_s);
                last = now;
            }
        }

        /// No address a guest can give writes outside its memory.
        #[test]
        fn hostile_addresses_are_refused(address in any::<u64>(), wall in any::<bool>()) {
            let mut memory = VecMemory(vec![0; 4096]);
            let mut clock = Pvclock::new(2_000_000_000, 1).unwrap();
            let (msr, bytes) = if wall {
                (MSR_WALL_CLOCK, WALL_CLOCK_BYTES as u64)
            } else {
                (MSR_SYSTEM_TIME, TIME_INFO_BYTES as u64)
            };
            let value = if wall { address } else { address | ENABLE };
            let base = if wall { address } else { address & !ENABLE };
            let fits = base.checked_add(bytes).is_some_and(|end| end <= 4096);
            let result = clock.write_msr(msr, value, 5, &mut memory);
            prop_assert_eq!(result.is_ok(), fits);
            if !fits {
                prop_assert!(memory.0.iter().all(|&b| b == 0));
                prop_assert_eq!(clock.read_msr(msr), Ok(0));
            }
        }
    }

    #[test]
    fn enabling_fills_the_time_information() {
        let mut memory = VecMemory(vec![0xaa; 8192]);
        let mut clock = Pvclock::new(2_000_000_000, 1_767_225_600).unwrap();
        // Disabled: remembered, nothing written.
        clock
            .write_msr(MSR_SYSTEM_TIME, 0x1000, 4_000_000_000, &mut memory)
            .unwrap();
        assert!(memory.0.iter().all(|&b| b == 0xaa));
        assert_eq!(clock.read_msr(MSR_SYSTEM_TIME), Ok(0x1000));
        clock
            .write_msr(MSR_SYSTEM_TIME, 0x1001, 4_000_000_000, &mut memory)
            .unwrap();
        assert_eq!(clock.read_msr(MSR_SYSTEM_TIME), Ok(0x1001));
        let info: [u8; TIME_INFO_BYTES] = memory.0[0x1000..0x1020].try_into().unwrap();
        assert_eq!(&info[0..4], &2u32.to_le_bytes());
        assert_eq!(&info[8..16], &4_000_000_000u64.to_le_bytes());
        // Two seconds of a 2 GHz TSC.
        assert_eq!(&info[16..24], &2_000_000_000u64.to_le_bytes());
        assert_eq!(info[29], FLAG_TSC_STABLE);
        assert_eq!(guest_time(&info, 6_000_000_000), 3_000_000_000);
        assert_eq!(memory.0[0x1020], 0xaa, "nothing past the structure");
        // The wall clock: the epoch at time 0.
        clock
            .write_msr(MSR_WALL_CLOCK, 0x1800, 0, &mut memory)
            .unwrap();
        assert_eq!(&memory.0[0x1800..0x1804], &2u32.to_le_bytes());
        assert_eq!(&memory.0[0x1804..0x1808], &1_767_225_600u32.to_le_bytes());
        assert_eq!(&memory.0[0x1808..0x180c], &[0; 4]);
        assert_eq!(clock.read_msr(MSR_WALL_CLOCK), Ok(0x1800));
        assert_eq!(clock.read_msr(0x10), Err(GeneralProtection));
        assert_eq!(
            clock.write_msr(0x10, 0, 0, &mut memory),
            Err(GeneralProtection)
        );
    }
}
