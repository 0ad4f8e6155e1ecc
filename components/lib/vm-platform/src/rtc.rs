//! The MC146818 CMOS real-time clock at ports 0x70 (index, bit 7 masks
//! NMIs) and 0x71 (data), as Linux's `mc146818_get_time` and `rtc_cmos`
//! use it.
//!
//! Time is the caller's: a Unix time in seconds at creation, then the
//! nanoseconds elapsed since (the world switcher derives them from the
//! TSC), passed as `now` to every call; `now` going backwards counts as not
//! moving. The clock's own time is an offset from `now`, so nothing runs
//! between accesses: the flags an update would have set are worked out
//! when the guest next looks ([`Rtc::update`]).
//!
//! - Time and date registers read in BCD or binary and in 24- or 12-hour
//!   form per register B; the century is CMOS byte 0x32 (the FADT says so).
//!   Day of week is derived from the date (1 = Sunday) and not writable.
//! - Setting `SET` in register B, or holding the divider in reset (register
//!   A bits 6-4 = 11x), stops the clock; writes then change single fields,
//!   as on the chip, and the whole date is only normalised (31 February
//!   becomes 3 March) when the clock runs again, 500 ms before its first
//!   update. Written values outside a field's range, or invalid BCD, are
//!   ignored.
//! - `UIP` (register A bit 7) reads 1 only in the last 244 µs before each
//!   update, as on the chip, so Linux's wait for it to clear is short.
//! - Register C's `UF`, `AF` and `PF` flags are set by updates, alarm
//!   matches (alarm bytes 0xC0-0xFF match anything) and the periodic rate
//!   of register A; `IRQF` and [`Rtc::irq_line`] follow the enabled ones
//!   until register C is read. The line is for IOAPIC pin 8 (ISA IRQ 8).
//!   [`Rtc::next_deadline`] tells the caller when to look again.
//! - The rest of the 128 bytes are CMOS memory; the memory sizes firmware
//!   leaves there are filled in from [`GuestRam`] as QEMU does.
//! - [`Rtc::reset`] is the machine's reset: the clock and memory outlive
//!   it (the caller keeps the `Rtc` across a guest's reboot).

use crate::GuestRam;

pub const INDEX_PORT: u16 = 0x70;
pub const DATA_PORT: u16 = 0x71;

const SECONDS: u8 = 0x00;
const SECONDS_ALARM: u8 = 0x01;
const MINUTES: u8 = 0x02;
const MINUTES_ALARM: u8 = 0x03;
const HOURS: u8 = 0x04;
const HOURS_ALARM: u8 = 0x05;
const DAY_OF_WEEK: u8 = 0x06;
const DAY_OF_MONTH: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const REGISTER_A: u8 = 0x0a;
const REGISTER_B: u8 = 0x0b;
const REGISTER_C: u8 = 0x0c;
const REGISTER_D: u8 = 0x0d;
const CENTURY: u8 = crate::acpi::CENTURY_REGISTER;

const A_UIP: u8 = 0x80;
const A_DIVIDER_RESET: u8 = 0x60;
const A_RATE: u8 = 0x0f;
const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_SQWE: u8 = 0x08;
const B_BINARY: u8 = 0x04;
const B_24_HOUR: u8 = 0x02;
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;
const D_VRT: u8 = 0x80;
const HOUR_PM: u8 = 0x80;
const ALARM_ANY: u8 = 0xc0;

const NANOS: i128 = 1_000_000_000;
/// How long before an update `UIP` is set: 8 cycles of 32.768 kHz.
const UIP_NANOS: i128 = 244_141;
/// The divider's input clock.
const BASE_HZ: u128 = 32_768;
/// How far an alarm search looks back: every alarm matches once a day.
const DAY: i64 = 86_400;
/// The last second of 9999, past which the registers cannot show years.
const MAX_SECONDS: i64 = 253_402_300_799;

/// A broken-down date and time; fields may be out of step (day 31 of a
/// 30-day month) while the clock is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (days past the end
/// of a month run into the next).
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (i64::from(month) + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

impl DateTime {
    fn from_seconds(seconds: i64) -> Self {
        let days = seconds.div_euclid(DAY);
        let time = seconds.rem_euclid(DAY);
        let shifted = days + 719_468;
        let era = shifted.div_euclid(146_097);
        let day_of_era = shifted.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_index = (5 * day_of_year + 2) / 153;
        let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u8;
        let month = if month_index < 10 {
            month_index + 3
        } else {
            month_index - 9
        } as u8;
        Self {
            year: year_of_era + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: (time / 3600) as u8,
            minute: (time / 60 % 60) as u8,
            second: (time % 60) as u8,
        }
    }

    fn to_seconds(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * DAY
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }

    /// 1 = Sunday .. 7 = Saturday; 1970-01-01 was a Thursday.
    fn day_of_week(self) -> u8 {
        (days_from_civil(self.year, self.month, self.day) + 4).rem_euclid(7) as u8 + 1
    }
}

/// Whether the clock counts, and from where.
#[derive(Clone, Copy, Debug)]
enum Clock {
    /// Time in nanoseconds since 1970 is `offset + now`.
    Running { offset: i128 },
    /// Stopped with these register values.
    Stopped(DateTime),
}

/// The RTC and CMOS memory.
pub struct Rtc {
    index: u8,
    nmi_masked: bool,
    clock: Clock,
    register_a: u8,
    register_b: u8,
    flags: u8,
    alarm: [u8; 3],
    /// When the flags were last brought up to date.
    last: u64,
    memory: [u8; 128],
}

fn to_bcd(value: u8) -> u8 {
    ((value / 10) << 4) | (value % 10)
}

fn from_bcd(value: u8) -> Option<u8> {
    let (high, low) = (value >> 4, value & 0x0f);
    (high <= 9 && low <= 9).then_some(high * 10 + low)
}

/// The nanosecond within the second of a running clock, and its second.
fn split(nanos: i128) -> (i64, i128) {
    let seconds = nanos.div_euclid(NANOS).clamp(0, i128::from(MAX_SECONDS)) as i64;
    (seconds, nanos.rem_euclid(NANOS))
}

impl Rtc {
    /// A clock showing Unix time `unix_seconds` at `now` = 0, with CMOS
    /// memory describing `ram`.
    pub fn new(unix_seconds: u64, ram: GuestRam) -> Self {
        let seconds = i64::try_from(unix_seconds)
            .unwrap_or(MAX_SECONDS)
            .min(MAX_SECONDS);
        let mut rtc = Self {
            index: 0,
            nmi_masked: false,
            clock: Clock::Running {
                offset: i128::from(seconds) * NANOS,
            },
            // 32.768 kHz time base, 1024 Hz periodic rate; 24-hour BCD.
            register_a: 0x26,
            register_b: B_24_HOUR,
            flags: 0,
            alarm: [0; 3],
            last: 0,
            memory: [0; 128],
        };
        rtc.store_memory_sizes(ram);
        rtc
    }

    /// The memory sizes a PC BIOS leaves in CMOS: base memory in KiB
    /// (0x15), extended memory above 1 MiB in KiB (0x17, 0x30), memory
    /// above 16 MiB in 64 KiB units (0x34) and above 4 GiB in 64 KiB units
    /// (0x5b, three bytes).
    fn store_memory_sizes(&mut self, ram: GuestRam) {
        let kib = |bytes: u64| bytes / 1024;
        let chunks = |bytes: u64| bytes / 0x1_0000;
        let base = 640u16.to_le_bytes();
        let extended = (kib(ram.below_4g.saturating_sub(1 << 20)).min(0xffff) as u16).to_le_bytes();
        let above_16m =
            (chunks(ram.below_4g.saturating_sub(16 << 20)).min(0xffff) as u16).to_le_bytes();
        let above_4g = (chunks(ram.above_4g).min(0xff_ffff) as u32).to_le_bytes();
        self.memory[0x15..0x17].copy_from_slice(&base);
        self.memory[0x17..0x19].copy_from_slice(&extended);
        self.memory[0x30..0x32].copy_from_slice(&extended);
        self.memory[0x34..0x36].copy_from_slice(&above_16m);
        self.memory[0x5b..0x5e].copy_from_slice(&above_4g[..3]);
    }

    /// The machine's reset, which reaches the chip on its RESET line: the
    /// interrupt enables (`PIE`, `AIE`, `UIE`) and the square-wave enable
    /// of register B and every flag of register C are cleared; the time,
    /// the alarm, register A and the CMOS memory stay, as the battery
    /// keeps them (MC146818 data sheet, "RESET").
    pub fn reset(&mut self) {
        self.register_b &= !(B_PIE | B_AIE | B_UIE | B_SQWE);
        self.flags = 0;
        self.index = 0;
        self.nmi_masked = false;
    }

    /// Whether the guest has masked NMIs (bit 7 of the last index write).
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    /// The IRQ 8 output: high while an enabled flag is set in register C.
    pub fn irq_line(&self) -> bool {
        self.flags & self.register_b & (B_PIE | B_AIE | B_UIE) != 0
    }

    /// A read of `port` at time `now`.
    pub fn read(&mut self, port: u16, now: u64) -> u8 {
        if port != DATA_PORT {
            return 0xff; // the index register is write-only
        }
        self.update(now);
        let now = self.last;
        let time = self.time(now);
        match self.index {
            SECONDS => self.encode(time.second),
            MINUTES => self.encode(time.minute),
            HOURS => self.encode_hour(time.hour),
            SECONDS_ALARM | MINUTES_ALARM | HOURS_ALARM => self.alarm[usize::from(self.index / 2)],
            DAY_OF_WEEK => self.encode(time.day_of_week()),
            DAY_OF_MONTH => self.encode(time.day),
            MONTH => self.encode(time.month),
            YEAR => self.encode(time.year.rem_euclid(100) as u8),
            CENTURY => self.encode((time.year / 100).rem_euclid(100) as u8),
            REGISTER_A => self.register_a | if self.in_update(now) { A_UIP } else { 0 },
            REGISTER_B => self.register_b,
            REGISTER_C => {
                let value = self.flags | if self.irq_line() { C_IRQF } else { 0 };
                self.flags = 0;
                value
            }
            REGISTER_D => D_VRT,
            index => self.memory[usize::from(index)],
        }
    }

    /// A write of `value` to `port` at time `now`.
    pub fn write(&mut self, port: u16, value: u8, now: u64) {
        if port == INDEX_PORT {
            self.index = value & 0x7f;
            self.nmi_masked = value & 0x80 != 0;
            return;
        }
        if port != DATA_PORT {
            return;
        }
        self.update(now);
        let now = self.last;
        match self.index {
            SECONDS => self.set_field(now, |time, rtc| {
                time.second = rtc.decode(value).filter(|&v| v < 60)?;
                Some(())
            }),
            MINUTES => self.set_field(now, |time, rtc| {
                time.minute = rtc.decode(value).filter(|&v| v < 60)?;
                Some(())
            }),
            HOURS => self.set_field(now, |time, rtc| {
                time.hour = rtc.decode_hour(value)?;
                Some(())
            }),
            SECONDS_ALARM | MINUTES_ALARM | HOURS_ALARM => {
                self.alarm[usize::from(self.index / 2)] = value;
            }
            DAY_OF_MONTH => self.set_field(now, |time, rtc| {
                time.day = rtc.decode(value).filter(|v| (1..=31).contains(v))?;
                Some(())
            }),
            MONTH => self.set_field(now, |time, rtc| {
                time.month = rtc.decode(value).filter(|v| (1..=12).contains(v))?;
                Some(())
            }),
            YEAR => self.set_field(now, |time, rtc| {
                let year = rtc.decode(value).filter(|&v| v < 100)?;
                time.year = time.year - time.year.rem_euclid(100) + i64::from(year);
                Some(())
            }),
            CENTURY => self.set_field(now, |time, rtc| {
                let century = rtc.decode(value).filter(|&v| v < 100)?;
                time.year = i64::from(century) * 100 + time.year.rem_euclid(100);
                Some(())
            }),
            REGISTER_A => {
                let was_running = self.running();
                self.register_a = value & !A_UIP;
                self.clock_changed(was_running, now);
            }
            REGISTER_B => {
                let was_running = self.running();
                self.register_b = value;
                if value & B_SET != 0 {
                    self.register_b &= !B_UIE; // SET clears UIE on the chip
                }
                self.clock_changed(was_running, now);
            }
            DAY_OF_WEEK | REGISTER_C | REGISTER_D => {}
            index => self.memory[usize::from(index)] = value,
        }
    }

    /// Brings the flags up to `now`: the updates, alarm matches and
    /// periodic ticks since the last look.
    pub fn update(&mut self, now: u64) {
        let now = now.max(self.last);
        let last = self.last;
        self.last = now;
        // The clock runs exactly while `running()`; `clock_changed` keeps
        // the two in step.
        let Clock::Running { offset } = self.clock else {
            return;
        };
        if let Some(period) = self.period_ticks() {
            let tick = |at: u64| u128::from(at) * BASE_HZ / NANOS as u128 / period;
            if tick(now) > tick(last) {
                self.flags |= C_PF;
            }
        }
        let (before, _) = split(offset + i128::from(last));
        let (after, _) = split(offset + i128::from(now));
        if after > before {
            self.flags |= C_UF;
            let first = (before + 1).max(after - DAY + 1);
            if (first..=after).any(|second| self.alarm_matches(DateTime::from_seconds(second))) {
                self.flags |= C_AF;
            }
        }
    }

    /// The elapsed time by which [`Rtc::irq_line`] may next rise (the next
    /// update or periodic tick that an enabled interrupt waits for), if
    /// any; the caller calls [`Rtc::update`] then and looks again.
    pub fn next_deadline(&self, now: u64) -> Option<u64> {
        let now = now.max(self.last);
        if !self.running() {
            return None;
        }
        let mut deadline: Option<u64> = None;
        if self.register_b & (B_UIE | B_AIE) != 0
            && let Clock::Running { offset } = self.clock
        {
            let (second, _) = split(offset + i128::from(now));
            let next = (i128::from(second) + 1) * NANOS - offset;
            deadline = u64::try_from(next).ok();
        }
        if self.register_b & B_PIE != 0
            && let Some(period) = self.period_ticks()
        {
            let ticks = (u128::from(now) * BASE_HZ / NANOS as u128 / period + 1) * period;
            let next = (ticks * NANOS as u128).div_ceil(BASE_HZ);
            if let Ok(next) = u64::try_from(next) {
                deadline = Some(deadline.map_or(next, |d| d.min(next)));
            }
        }
        deadline
    }

    /// The periodic interrupt's period in 32.768 kHz ticks (rate select 1
    /// and 2 repeat 8 and 9, as on the chip).
    fn period_ticks(&self) -> Option<u128> {
        match self.register_a & A_RATE {
            0 => None,
            rate @ 1..=2 => Some(1 << (rate + 6)),
            rate => Some(1 << (rate - 1)),
        }
    }

    /// Counting: not `SET` and the divider not held in reset.
    fn running(&self) -> bool {
        self.register_b & B_SET == 0 && self.register_a & A_DIVIDER_RESET != A_DIVIDER_RESET
    }

    /// Stops or restarts the clock after a register A or B write.
    fn clock_changed(&mut self, was_running: bool, now: u64) {
        match (was_running, self.running(), self.clock) {
            (true, false, _) => self.clock = Clock::Stopped(self.time(now)),
            (false, true, Clock::Stopped(time)) => {
                // The first update comes 500 ms after the divider starts.
                let seconds = time.to_seconds().clamp(0, MAX_SECONDS);
                self.clock = Clock::Running {
                    offset: i128::from(seconds) * NANOS + NANOS / 2 - i128::from(now),
                };
            }
            _ => {}
        }
    }

    fn time(&self, now: u64) -> DateTime {
        match self.clock {
            Clock::Running { offset } => DateTime::from_seconds(split(offset + i128::from(now)).0),
            Clock::Stopped(time) => time,
        }
    }

    fn in_update(&self, now: u64) -> bool {
        match self.clock {
            Clock::Running { offset } => split(offset + i128::from(now)).1 >= NANOS - UIP_NANOS,
            Clock::Stopped(_) => false,
        }
    }

    /// Changes one field with `change` (which returns `None` for a value
    /// it refuses); a running clock keeps its phase within the second.
    fn set_field(&mut self, now: u64, change: impl FnOnce(&mut DateTime, &Self) -> Option<()>) {
        let mut time = self.time(now);
        if change(&mut time, self).is_none() {
            return;
        }
        self.clock = match self.clock {
            Clock::Running { offset } => {
                let (_, phase) = split(offset + i128::from(now));
                let seconds = time.to_seconds().clamp(0, MAX_SECONDS);
                Clock::Running {
                    offset: i128::from(seconds) * NANOS + phase - i128::from(now),
                }
            }
            Clock::Stopped(_) => Clock::Stopped(time),
        };
    }

    fn alarm_matches(&self, time: DateTime) -> bool {
        let matches = |alarm: u8, value: u8| alarm >= ALARM_ANY || alarm == value;
        matches(self.alarm[0], self.encode(time.second))
            && matches(self.alarm[1], self.encode(time.minute))
            && matches(self.alarm[2], self.encode_hour(time.hour))
    }

    fn binary(&self) -> bool {
        self.register_b & B_BINARY != 0
    }

    fn encode(&self, value: u8) -> u8 {
        if self.binary() { value } else { to_bcd(value) }
    }

    fn decode(&self, value: u8) -> Option<u8> {
        if self.binary() {
            Some(value)
        } else {
            from_bcd(value)
        }
    }

    fn encode_hour(&self, hour: u8) -> u8 {
        if self.register_b & B_24_HOUR != 0 {
            return self.encode(hour);
        }
        let pm = if hour >= 12 { HOUR_PM } else { 0 };
        let twelve = match hour % 12 {
            0 => 12,
            hour => hour,
        };
        self.encode(twelve) | pm
    }

    fn decode_hour(&self, value: u8) -> Option<u8> {
        if self.register_b & B_24_HOUR != 0 {
            return self.decode(value).filter(|&hour| hour < 24);
        }
        let twelve = self
            .decode(value & !HOUR_PM)
            .filter(|h| (1..=12).contains(h))?;
        let pm = if value & HOUR_PM != 0 { 12 } else { 0 };
        Some(twelve % 12 + pm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: u64 = 1_000_000_000;
    /// 2024-02-28 23:59:58 UTC, a Wednesday, in a leap year.
    const LEAP_EVE: u64 = 1_709_164_798;

    fn ram() -> GuestRam {
        GuestRam {
            below_4g: 256 << 20,
            above_4g: 0,
        }
    }

    fn read(rtc: &mut Rtc, index: u8, now: u64) -> u8 {
        rtc.write(INDEX_PORT, index, now);
        rtc.read(DATA_PORT, now)
    }

    fn write(rtc: &mut Rtc, index: u8, value: u8, now: u64) {
        rtc.write(INDEX_PORT, index, now);
        rtc.write(DATA_PORT, value, now);
    }

    /// (century, year, month, day, hour, minute, second, day of week) as
    /// the registers show them.
    fn registers(rtc: &mut Rtc, now: u64) -> [u8; 8] {
        [
            CENTURY,
            YEAR,
            MONTH,
            DAY_OF_MONTH,
            HOURS,
            MINUTES,
            SECONDS,
            DAY_OF_WEEK,
        ]
        .map(|index| read(rtc, index, now))
    }

    #[test]
    fn date_conversion_round_trips_and_knows_leap_years() {
        for seconds in [0, 951_782_400, LEAP_EVE as i64, 4_107_542_399, -86_400] {
            assert_eq!(DateTime::from_seconds(seconds).to_seconds(), seconds);
        }
        let time = DateTime::from_seconds(LEAP_EVE as i64 + 2 * 86_400);
        assert_eq!((time.year, time.month, time.day), (2024, 3, 1));
        // 2100 is not a leap year, 2000 was.
        assert_eq!(DateTime::from_seconds(4_107_542_400).month, 3);
        assert_eq!(DateTime::from_seconds(951_782_400).day, 29);
    }

    #[test]
    fn reads_bcd_time_and_rolls_over_midnight_and_leap_february() {
        let mut rtc = Rtc::new(LEAP_EVE, ram());
        assert_eq!(
            registers(&mut rtc, 0),
            [0x20, 0x24, 0x02, 0x28, 0x23, 0x59, 0x58, 4]
        );
        assert_eq!(
            registers(&mut rtc, 2 * SECOND),
            [0x20, 0x24, 0x02, 0x29, 0x00, 0x00, 0x00, 5],
            "midnight into the leap day"
        );
        assert_eq!(
            registers(&mut rtc, (2 + 86_400) * SECOND),
            [0x20, 0x24, 0x03, 0x01, 0x00, 0x00, 0x00, 6],
            "the leap day ends February"
        );
    }

    #[test]
    fn year_and_century_roll_over_together() {
        // 2099-12-31 23:59:59 UTC.
        let mut rtc = Rtc::new(4_102_444_799, ram());
        assert_eq!(registers(&mut rtc, 0)[..4], [0x20, 0x99, 0x12, 0x31]);
        assert_eq!(
            registers(&mut rtc, SECOND),
            [0x21, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 6]
        );
    }

    #[test]
    fn binary_and_twelve_hour_modes() {
        let mut rtc = Rtc::new(LEAP_EVE, ram());
        write(&mut rtc, REGISTER_B, B_BINARY | B_24_HOUR, 0);
        assert_eq!(registers(&mut rtc, 0)[..7], [20, 24, 2, 28, 23, 59, 58]);
        write(&mut rtc, REGISTER_B, B_BINARY, 0);
        assert_eq!(read(&mut rtc, HOURS, 0), 11 | HOUR_PM);
        assert_eq!(read(&mut rtc, HOURS, 2 * SECOND), 12, "midnight is 12 AM");
        write(&mut rtc, REGISTER_B, 0, 0);
        assert_eq!(read(&mut rtc, HOURS, 2 * SECOND), 0x12);
        // Noon is 12 PM.
        assert_eq!(
            read(&mut rtc, HOURS, (2 + 12 * 3600) * SECOND),
            0x12 | HOUR_PM
        );
        // Writing 1 PM in 12-hour BCD.
        write(&mut rtc, HOURS, 0x01 | HOUR_PM, 0);
        write(&mut rtc, REGISTER_B, B_24_HOUR, 0);
        assert_eq!(read(&mut rtc, HOURS, 0), 0x13);
    }

    #[test]
    fn uip_is_set_only_just_before_an_update() {
        let mut rtc = Rtc::new(LEAP_EVE, ram());
        let uip = |rtc: &mut Rtc, now: u64| read(rtc, REGISTER_A, now) & A_UIP != 0;
        assert!(!uip(&mut rtc, 0));
        assert!(!uip(&mut rtc, SECOND - 245_000));
        assert!(uip(&mut rtc, SECOND - 244_000));
        assert!(uip(&mut rtc, SECOND - 1));
        assert!(!uip(&mut rtc, SECOND));
        assert_eq!(read(&mut rtc, REGISTER_A, SECOND), 0x26);
        let busy = (0..10_000u64)
            .filter(|&step| uip(&mut rtc, SECOND + step * 997_331))
            .count();
        assert!(busy < 10, "UIP is set in {busy} of 10000 reads");
    }

    #[test]
    fn setting_the_time_as_linux_does() {
        // mc146818_set_time: SET, divider reset, fields, then restore.
        let mut rtc = Rtc::new(LEAP_EVE, ram());
        let now = 5 * SECOND;
        write(&mut rtc, REGISTER_B, B_SET | B_24_HOUR, now);
        write(&mut rtc, REGISTER_A, 0x70, now);
        // 2023-04-30 12:34:56, written day first while it is still February.
        for (index, value) in [
            (SECONDS, 0x56),
            (MINUTES, 0x34),
            (HOURS, 0x12),
            (DAY_OF_MONTH, 0x30),
            (MONTH, 0x04),
            (YEAR, 0x23),
            (CENTURY, 0x20),
        ] {
            write(&mut rtc, index, value, now);
        }
        assert_eq!(read(&mut rtc, SECONDS, now + 10 * SECOND), 0x56, "stopped");
        write(&mut rtc, REGISTER_B, B_24_HOUR, now + 10 * SECOND);
        write(&mut rtc, REGISTER_A, 0x26, now + 10 * SECOND);
        let start = now + 10 * SECOND;
        assert_eq!(
            registers(&mut rtc, start + SECOND / 2 - 1),
            [0x20, 0x23, 0x04, 0x30, 0x12, 0x34, 0x56, 1]
        );
        assert_eq!(read(&mut rtc, SECONDS, start + SECOND / 2), 0x57);
    }

    #[test]
    fn out_of_range_writes_are_ignored_and_dates_normalise() {
        let mut rtc = Rtc::new(LEAP_EVE, ram());
        write(&mut rtc, SECONDS, 0x60, 0);
        write(&mut rtc, MINUTES, 0x3a, 0);
        write(&mut rtc, MONTH, 0x13, 0);
        write(&mut rtc, DAY_OF_WEEK, 1, 0);
        assert_eq!(
            registers(&mut rtc, 0),
            [0x20, 0x24, 0x02, 0x28, 0x23, 0x59, 0x58, 4]
        );
        write(&mut rtc, REGISTER_B, B_SET | B_24_HOUR, 0);
        write(&mut rtc, DAY_OF_MONTH, 0x31, 0);
        assert_eq!(read(&mut rtc, DAY_OF_MONTH, 0), 0x31, "kept while stopped");
        write(&mut rtc, REGISTER_B, B_24_HOUR, 0);
        assert_eq!(
            registers(&mut rtc, 0)[2..4],
            [0x03, 0x02],
            "31 Feb 2024 = 2 Mar"
        );
    }

    #[test]
    fn update_alarm_and_periodic_flags_drive_irq8() {
        let mut rtc = Rtc::new(LEAP_EVE, ram());
        // Flags are set even while their interrupts are disabled.
        assert_eq!(read(&mut rtc, REGISTER_C, SECOND) & C_UF, C_UF);
        assert!(!rtc.irq_line());
        write(&mut rtc, REGISTER_B, B_UIE | B_24_HOUR, SECOND);
        assert_eq!(rtc.next_deadline(SECOND + 1), Some(2 * SECOND));
        rtc.update(2 * SECOND - 1);
        assert!(!rtc.irq_line());
        rtc.update(2 * SECOND);
        assert!(rtc.irq_line());
        // The alarm registers hold 00:00:00, which the clock now shows.
        assert_eq!(
            read(&mut rtc, REGISTER_C, 2 * SECOND),
            C_IRQF | C_UF | C_AF | C_PF
        );
        assert!(!rtc.irq_line(), "reading C lowers the line");
        assert_eq!(read(&mut rtc, REGISTER_C, 2 * SECOND), 0);

        // Alarm at 00:00:05 (the clock reads 00:00:00 at 2 s).
        write(&mut rtc, REGISTER_B, B_AIE | B_24_HOUR, 2 * SECOND);
        write(&mut rtc, SECONDS_ALARM, 0x05, 2 * SECOND);
        write(&mut rtc, MINUTES_ALARM, 0x00, 2 * SECOND);
        write(&mut rtc, HOURS_ALARM, ALARM_ANY, 2 * SECOND);
        rtc.update(6 * SECOND);
        assert!(!rtc.irq_line());
        rtc.update(7 * SECOND);
        assert!(rtc.irq_line());
        assert_eq!(read(&mut rtc, REGISTER_C, 7 * SECOND) & C_AF, C_AF);

        // 1024 Hz periodic interrupt: a tick every 32 ticks of 32768 Hz.
        write(&mut rtc, REGISTER_B, B_PIE | B_24_HOUR, 7 * SECOND);
        let deadline = rtc.next_deadline(7 * SECOND).unwrap();
        assert_eq!(deadline, 7 * SECOND + 976_563);
        rtc.update(deadline - 1);
        assert!(!rtc.irq_line());
        rtc.update(deadline);
        assert!(rtc.irq_line());
    }

    #[test]
    fn a_reset_keeps_time_and_memory_and_clears_interrupts() {
        let mut rtc = Rtc::new(LEAP_EVE, ram());
        write(&mut rtc, REGISTER_B, B_UIE | B_PIE | B_SQWE | B_24_HOUR, 0);
        write(&mut rtc, 0x70, 0x5a, 0);
        rtc.update(2 * SECOND);
        assert!(rtc.irq_line());
        let before = registers(&mut rtc, 3 * SECOND);
        rtc.reset();
        assert!(!rtc.irq_line(), "interrupts cleared");
        assert_eq!(read(&mut rtc, REGISTER_B, 3 * SECOND), B_24_HOUR);
        assert_eq!(read(&mut rtc, REGISTER_C, 3 * SECOND), 0);
        assert_eq!(registers(&mut rtc, 3 * SECOND), before, "the clock ran on");
        assert_eq!(read(&mut rtc, 0x70, 3 * SECOND), 0x5a, "CMOS memory kept");
        assert_eq!(
            read(&mut rtc, 0x15, 3 * SECOND),
            0x80,
            "640 KiB of base memory"
        );
    }

    #[test]
    fn cmos_memory_holds_the_ram_sizes() {
        let mut rtc = Rtc::new(
            0,
            GuestRam {
                below_4g: 3 << 30,
                above_4g: 1 << 30,
            },
        );
        let word = |rtc: &mut Rtc, index: u8| {
            u64::from(read(rtc, index, 0)) | u64::from(read(rtc, index + 1, 0)) << 8
        };
        assert_eq!(word(&mut rtc, 0x15), 640);
        assert_eq!(word(&mut rtc, 0x17), 0xffff, "capped at 64 MiB");
        assert_eq!(word(&mut rtc, 0x30), 0xffff);
        assert_eq!(word(&mut rtc, 0x34), ((3 << 30) - (16 << 20)) / 0x1_0000);
        assert_eq!(word(&mut rtc, 0x5b), (1 << 30) / 0x1_0000);
        assert_eq!(read(&mut rtc, 0x5d, 0), 0);
        let mut small = Rtc::new(
            0,
            GuestRam {
                below_4g: 32 << 20,
                above_4g: 0,
            },
        );
        assert_eq!(word(&mut small, 0x17), 31 * 1024);
        assert_eq!(word(&mut small, 0x34), 16 * 16);
        write(&mut small, 0x40, 0xab, 0);
        assert_eq!(read(&mut small, 0x40, 0), 0xab);
        assert_eq!(read(&mut small, REGISTER_D, 0), D_VRT);
        small.write(INDEX_PORT, 0x80 | 0x40, 0);
        assert!(small.nmi_masked());
        assert_eq!(
            small.read(DATA_PORT, 0),
            0xab,
            "bit 7 is not part of the index"
        );
        assert_eq!(small.read(INDEX_PORT, 0), 0xff);
    }

    proptest! {
        #[test]
        fn hostile_port_sequences_never_panic(
            start in any::<u64>(),
            accesses in proptest::collection::vec(
                (any::<bool>(), 0x70u16..0x72, any::<u8>(), any::<u64>()), 0..200),
        ) {
            let mut rtc = Rtc::new(start, ram());
            for (is_write, port, value, now) in accesses {
                if is_write {
                    rtc.write(port, value, now);
                } else {
                    rtc.read(port, now);
                }
                let _ = rtc.next_deadline(now);
                let _ = rtc.irq_line();
            }
        }
    }
}
