//! The 8254 programmable interval timer (ports 0x40–0x43) and the PC's
//! port 0x61 (channel 2's gate, the speaker, channel 2's output).
//!
//! The three counters run from the 1.193182 MHz crystal, measured against
//! the TSC by a [`Clock`]: like the LAPIC timer they never tick, but
//! compute their count and output from the TSC value at which they were
//! loaded. Channel 0's output is IRQ0: [`Pit::next_deadline`] says when its
//! next rising edge is due, and [`Pit::tick`] reports whether one happened
//! since the last call (several missed edges are one interrupt; periodic
//! edges are computed from the load, so they never drift). Channel 1 counts
//! and drives nothing. Channel 2's gate is port 0x61 bit 0 and its output
//! is port 0x61 bit 5: Linux calibrates the TSC by counting TSC ticks
//! while that output is low, or while the count's high byte steps, and
//! gets the TSC's true frequency because the count is computed from the
//! TSC.
//!
//! Modes 0 (interrupt on terminal count), 1 (gate-triggered one-shot), 2
//! (rate generator), 3 (square wave), 4 (software strobe) and 5
//! (gate-triggered strobe) are modelled, with the latch and read-back
//! commands and low/high/word access. Not modelled: BCD counting (the BCD
//! bit is kept in the status but the count is binary), and a count written
//! in mode 2 or 3 while running waits for the end of the period on
//! hardware but restarts the counter here (as in QEMU). A periodic
//! interrupt shorter than [`crate::clock::MINIMUM_PERIOD_MICROSECONDS`] is
//! slowed down to it. The model resets with every channel unprogrammed
//! (no IRQ0 until the guest loads channel 0).

use crate::clock::Clock;

/// The crystal's frequency.
pub const FREQUENCY: u64 = 1_193_182;

/// Channel data ports and the control port.
pub const CHANNEL0: u16 = 0x40;
pub const CHANNEL2: u16 = 0x42;
pub const CONTROL: u16 = 0x43;
/// System control port B: bit 0 gates channel 2, bit 1 enables the
/// speaker, bit 4 toggles with memory refresh, bit 5 is channel 2's output.
pub const PORT_B: u16 = 0x61;

/// Port B bits.
pub mod port_b {
    pub const GATE2: u8 = 1 << 0;
    pub const SPEAKER: u8 = 1 << 1;
    pub const REFRESH: u8 = 1 << 4;
    pub const OUT2: u8 = 1 << 5;
}

/// PIT clocks between refresh toggles (15.08 µs).
const REFRESH_CLOCKS: u64 = 18;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Low = 1,
    High = 2,
    Word = 3,
}

/// Where a counter is between a mode set and its count running out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Counting {
    /// No count written since the mode was set.
    Idle,
    /// Loaded in mode 1 or 5, waiting for the gate to rise.
    Waiting,
    /// Counting since TSC `start`, with `before` clocks counted earlier.
    Running { start: u64, before: u64 },
    /// Gate low: modes 0 and 4 hold `elapsed`; modes 2 and 3 restart when
    /// it rises.
    Paused { elapsed: u64 },
}

#[derive(Clone, Copy)]
struct Channel {
    mode: u8,
    access: Access,
    bcd: bool,
    /// The count written; 0 means 65536.
    reload: u16,
    /// The low byte of a word write, until the high byte comes.
    low_written: Option<u8>,
    /// The next read of a word is the high byte.
    read_high: bool,
    latch: Option<u16>,
    status: Option<u8>,
    gate: bool,
    counting: Counting,
    null_count: bool,
}

impl Channel {
    const fn new(gate: bool) -> Self {
        Self {
            mode: 0,
            access: Access::Word,
            bcd: false,
            reload: 0,
            low_written: None,
            read_high: false,
            latch: None,
            status: None,
            gate,
            counting: Counting::Idle,
            null_count: true,
        }
    }

    /// The count's length in clocks.
    fn length(&self) -> u64 {
        if self.reload == 0 {
            0x1_0000
        } else {
            u64::from(self.reload)
        }
    }

    fn elapsed(&self, clock: &Clock, now: u64) -> Option<u64> {
        match self.counting {
            Counting::Running { start, before } => {
                Some(before.saturating_add(clock.ticks_in(now.saturating_sub(start))))
            }
            Counting::Paused { elapsed } if matches!(self.mode, 0 | 4) => Some(elapsed),
            _ => None,
        }
    }

    /// The counter's value at `now`.
    fn value(&self, clock: &Clock, now: u64) -> u16 {
        let Some(elapsed) = self.elapsed(clock, now) else {
            return self.reload;
        };
        let length = self.length();
        let value = match self.mode {
            2 => length - elapsed % length,
            3 => {
                // Down by two each clock, twice a period.
                let half = length.div_ceil(2);
                let phase = elapsed % length;
                let into = if phase < half { phase } else { phase - half };
                (length & !1).saturating_sub(2 * into)
            }
            // Down by one, wrapping after zero.
            _ => (length + 0x1_0000 - (elapsed & 0xffff)) & 0xffff,
        };
        value as u16
    }

    /// The output at `now`.
    fn out(&self, clock: &Clock, now: u64) -> bool {
        let Some(elapsed) = self.elapsed(clock, now) else {
            // Mode 0 drives its output low from the mode set until its
            // count runs out; the others idle high (modes 2 and 3 also
            // while their gate is low).
            return self.mode != 0;
        };
        let length = self.length();
        match self.mode {
            0 | 1 => elapsed >= length,
            2 => elapsed % length != length - 1,
            3 => elapsed % length < length.div_ceil(2),
            _ => elapsed != length,
        }
    }

    /// The clocks between periodic rising edges (never shorter than the
    /// minimum period).
    fn period(&self, clock: &Clock) -> u64 {
        self.length().max(clock.minimum_period())
    }

    /// Rising edges of the output after `elapsed` clocks.
    fn edges(&self, clock: &Clock, elapsed: u64) -> u64 {
        let length = self.length();
        match self.mode {
            0 | 1 => u64::from(elapsed >= length),
            2 | 3 => elapsed / self.period(clock),
            _ => u64::from(elapsed > length),
        }
    }

    /// The clocks after which rising edge `edge` (from 1) comes.
    fn edge_at(&self, clock: &Clock, edge: u64) -> Option<u64> {
        let length = self.length();
        match self.mode {
            0 | 1 => (edge == 1).then_some(length),
            2 | 3 => Some(edge.saturating_mul(self.period(clock))),
            _ => (edge == 1).then_some(length + 1),
        }
    }

    fn status_byte(&self, clock: &Clock, now: u64) -> u8 {
        u8::from(self.out(clock, now)) << 7
            | u8::from(self.null_count) << 6
            | (self.access as u8) << 4
            | self.mode << 1
            | u8::from(self.bcd)
    }

    fn load(&mut self, count: u16, now: u64) {
        self.reload = count;
        self.null_count = false;
        self.counting = match self.mode {
            1 | 5 => Counting::Waiting,
            _ if self.gate => Counting::Running {
                start: now,
                before: 0,
            },
            _ => Counting::Paused { elapsed: 0 },
        };
    }

    fn set_gate(&mut self, gate: bool, clock: &Clock, now: u64) {
        if gate == self.gate {
            return;
        }
        self.gate = gate;
        let counting = self.counting;
        self.counting = match (self.mode, gate, counting) {
            (_, _, Counting::Idle) => Counting::Idle,
            // Modes 0 and 4 pause and resume.
            (0 | 4, false, _) => Counting::Paused {
                elapsed: self.elapsed(clock, now).unwrap_or(0),
            },
            (0 | 4, true, Counting::Paused { elapsed }) => Counting::Running {
                start: now,
                before: elapsed,
            },
            // The others (re)start on a rising edge; 2 and 3 stop while low.
            (_, true, _) => Counting::Running {
                start: now,
                before: 0,
            },
            (2 | 3, false, _) => Counting::Paused { elapsed: 0 },
            (_, false, counting) => counting,
        };
    }
}

/// The three counters and port B.
pub struct Pit {
    clock: Clock,
    channels: [Channel; 3],
    port_b: u8,
    /// Channel 0's rising edges reported by [`Pit::tick`] since its load.
    reported: u64,
}

impl Pit {
    /// A PIT beside a TSC of `tsc_hz`; `None` if that is zero.
    pub fn new(tsc_hz: u64) -> Option<Self> {
        Some(Self {
            clock: Clock::new(tsc_hz, FREQUENCY)?,
            channels: [Channel::new(true), Channel::new(true), Channel::new(false)],
            port_b: 0,
            reported: 0,
        })
    }

    /// Whether `port` is one of the PIT's (0x40–0x43, 0x61).
    pub fn owns_port(port: u16) -> bool {
        (CHANNEL0..=CONTROL).contains(&port) || port == PORT_B
    }

    /// IN from `port` at TSC `now`; others read all-ones.
    pub fn read(&mut self, port: u16, now: u64) -> u8 {
        match port {
            CHANNEL0..=CHANNEL2 => self.read_channel(usize::from(port - CHANNEL0), now),
            PORT_B => {
                let refresh = self.clock.ticks_in(now) / REFRESH_CLOCKS % 2 == 1;
                let out2 = self.channels[2].out(&self.clock, now);
                self.port_b
                    | if refresh { port_b::REFRESH } else { 0 }
                    | if out2 { port_b::OUT2 } else { 0 }
            }
            // The control port cannot be read.
            _ => 0xff,
        }
    }

    /// OUT to `port` at TSC `now`; others are ignored.
    pub fn write(&mut self, port: u16, value: u8, now: u64) {
        match port {
            CHANNEL0..=CHANNEL2 => self.write_channel(usize::from(port - CHANNEL0), value, now),
            CONTROL => self.write_control(value, now),
            PORT_B => {
                self.port_b = value & (port_b::GATE2 | port_b::SPEAKER | 0x0c);
                self.channels[2].set_gate(value & port_b::GATE2 != 0, &self.clock, now);
            }
            _ => {}
        }
    }

    fn read_channel(&mut self, index: usize, now: u64) -> u8 {
        let value = self.channels[index].value(&self.clock, now);
        let channel = &mut self.channels[index];
        if let Some(status) = channel.status.take() {
            return status;
        }
        let value = channel.latch.unwrap_or(value);
        let high = match channel.access {
            Access::Low => false,
            Access::High => true,
            Access::Word => {
                channel.read_high = !channel.read_high;
                !channel.read_high
            }
        };
        if high || channel.access == Access::Low {
            channel.latch = None;
        }
        if high {
            (value >> 8) as u8
        } else {
            value as u8
        }
    }

    fn write_channel(&mut self, index: usize, value: u8, now: u64) {
        let channel = &mut self.channels[index];
        let count = match (channel.access, channel.low_written.take()) {
            (Access::Low, _) => u16::from(value),
            (Access::High, _) => u16::from(value) << 8,
            (Access::Word, Some(low)) => u16::from(low) | u16::from(value) << 8,
            (Access::Word, None) => {
                channel.low_written = Some(value);
                if channel.mode == 0 {
                    // The first byte stops a mode-0 count.
                    channel.counting = Counting::Idle;
                }
                return;
            }
        };
        channel.load(count, now);
        if index == 0 {
            self.reported = 0;
        }
    }

    fn write_control(&mut self, value: u8, now: u64) {
        let select = usize::from(value >> 6);
        if select == 3 {
            // Read-back: bit 5 clear latches counts, bit 4 clear statuses,
            // of the channels in bits 1-3.
            for index in (0..3).filter(|index| value & 2 << index != 0) {
                let status = self.channels[index].status_byte(&self.clock, now);
                let count = self.channels[index].value(&self.clock, now);
                let channel = &mut self.channels[index];
                if value & 0x20 == 0 && channel.latch.is_none() {
                    channel.latch = Some(count);
                }
                if value & 0x10 == 0 && channel.status.is_none() {
                    channel.status = Some(status);
                }
            }
            return;
        }
        let count = self.channels[select].value(&self.clock, now);
        let channel = &mut self.channels[select];
        let access = match (value >> 4) & 3 {
            0 => {
                // The counter-latch command.
                if channel.latch.is_none() {
                    channel.latch = Some(count);
                }
                return;
            }
            1 => Access::Low,
            2 => Access::High,
            _ => Access::Word,
        };
        *channel = Channel {
            mode: match (value >> 1) & 7 {
                mode @ (6 | 7) => mode - 4,
                mode => mode,
            },
            access,
            bcd: value & 1 != 0,
            ..Channel::new(channel.gate)
        };
        if select == 0 {
            self.reported = 0;
        }
    }

    /// Whether channel 0's output rose (IRQ0) since the last call.
    pub fn tick(&mut self, now: u64) -> bool {
        let channel = &self.channels[0];
        let Some(elapsed) = channel.elapsed(&self.clock, now) else {
            return false;
        };
        let edges = channel.edges(&self.clock, elapsed);
        if edges > self.reported {
            self.reported = edges;
            true
        } else {
            false
        }
    }

    /// Channel 0's period in TSC ticks while it counts as a rate or
    /// square-wave generator (modes 2 and 3): the guest's periodic timer,
    /// exactly as programmed. `None` otherwise.
    pub fn periodic_tsc(&self) -> Option<u64> {
        let channel = &self.channels[0];
        let running = matches!(channel.counting, Counting::Running { .. });
        (running && matches!(channel.mode, 2 | 3))
            .then(|| self.clock.tsc_for(channel.period(&self.clock)))
    }

    /// The TSC at which channel 0's output next rises (perhaps already
    /// past), when [`Pit::tick`] must run; `None` if it will not.
    pub fn next_deadline(&self) -> Option<u64> {
        let channel = &self.channels[0];
        let Counting::Running { start, before } = channel.counting else {
            return None;
        };
        let clocks = channel.edge_at(&self.clock, self.reported + 1)?;
        Some(start.saturating_add(self.clock.tsc_for(clocks.saturating_sub(before))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TSC_HZ: u64 = 2_600_000_000;

    fn tsc_after(clocks: u64) -> u64 {
        (u128::from(clocks) * u128::from(TSC_HZ)).div_ceil(u128::from(FREQUENCY)) as u64
    }

    /// Programs channel 0 as Linux's i8253 clockevent does for periodic
    /// mode at HZ=250: mode `mode`, word access, LATCH = 4773.
    fn linux_tick(mode: u8, start: u64) -> Pit {
        let mut pit = Pit::new(TSC_HZ).unwrap();
        pit.write(CONTROL, 0x30 | mode << 1, start);
        pit.write(CHANNEL0, 0xa5, start);
        pit.write(CHANNEL0, 0x12, start);
        pit
    }

    /// Runs the world switcher's loop for `seconds`: sleep to the next
    /// deadline, tick. Returns the IRQ0 times.
    fn irq0_times(pit: &mut Pit, until: u64) -> Vec<u64> {
        let mut times = Vec::new();
        while let Some(due) = pit.next_deadline().filter(|&due| due <= until) {
            assert!(!pit.tick(due - 1), "not before {due}");
            assert!(pit.tick(due));
            times.push(due);
        }
        times
    }

    #[test]
    fn rate_generator_and_square_wave_tick_at_hz() {
        for mode in [2, 3] {
            let start = 777;
            let mut pit = linux_tick(mode, start);
            let times = irq0_times(&mut pit, start + 10 * TSC_HZ);
            // 10 s of 1193182 Hz over 4773 clocks: 2499.85 periods.
            assert_eq!(times.len(), 2499, "mode {mode}");
            for (k, time) in times.iter().enumerate() {
                assert_eq!(*time, start + tsc_after((k as u64 + 1) * 4773));
            }
        }
    }

    #[test]
    fn a_periodic_channel_0_says_its_period() {
        for mode in [2, 3] {
            let pit = linux_tick(mode, 0);
            assert_eq!(pit.periodic_tsc(), Some(tsc_after(4773)), "mode {mode}");
        }
        // One-shot (mode 0) and an unprogrammed channel: no period.
        let mut pit = Pit::new(TSC_HZ).unwrap();
        assert_eq!(pit.periodic_tsc(), None);
        pit.write(CONTROL, 0x30, 0);
        pit.write(CHANNEL0, 0xa5, 0);
        pit.write(CHANNEL0, 0x12, 0);
        assert_eq!(pit.periodic_tsc(), None);
    }

    #[test]
    fn missed_edges_are_one_interrupt() {
        let mut pit = linux_tick(2, 0);
        assert!(pit.tick(tsc_after(3 * 4773 + 10)));
        assert!(!pit.tick(tsc_after(3 * 4773 + 20)));
        assert_eq!(pit.next_deadline(), Some(tsc_after(4 * 4773)));
    }

    #[test]
    fn counts_read_live_and_latched() {
        let mut pit = linux_tick(2, 0);
        let at = tsc_after(1000);
        assert_eq!(pit.read(CHANNEL0, at), (4773 - 1000) as u8);
        assert_eq!(pit.read(CHANNEL0, at), ((4773 - 1000) >> 8) as u8);
        // Linux's i8253 clocksource: latch, then low and high bytes.
        pit.write(CONTROL, 0x00, at);
        let later = tsc_after(2000);
        assert_eq!(pit.read(CHANNEL0, later), (4773 - 1000) as u8);
        pit.write(CONTROL, 0x00, later);
        assert_eq!(
            pit.read(CHANNEL0, later),
            ((4773 - 1000) >> 8) as u8,
            "one latch at a time"
        );
        assert_eq!(pit.read(CHANNEL0, later), (4773 - 2000) as u8, "live again");
        assert_eq!(pit.read(CHANNEL0, later), ((4773 - 2000) >> 8) as u8);
        // Mode 2 reloads after one: the count at 4773 clocks is 4773 again.
        let reloaded = tsc_after(4773 + 1);
        assert_eq!(pit.read(CHANNEL0, reloaded), (4772u16) as u8);
    }

    #[test]
    fn one_shot_modes() {
        // Mode 0: output low, rises once when the count runs out.
        let mut pit = Pit::new(TSC_HZ).unwrap();
        pit.write(CONTROL, 0x30, 0);
        pit.write(CHANNEL0, 0x10, 0);
        assert_eq!(pit.next_deadline(), None, "the first byte stops it");
        pit.write(CHANNEL0, 0x00, 5);
        assert_eq!(irq0_times(&mut pit, TSC_HZ), vec![5 + tsc_after(16)]);
        // The count wraps on after zero.
        assert_eq!(pit.read(CHANNEL0, 5 + tsc_after(20)), 0xfc);
        // Mode 4: the strobe ends one clock after the count runs out.
        let mut pit = Pit::new(TSC_HZ).unwrap();
        pit.write(CONTROL, 0x18, 0);
        pit.write(CHANNEL0, 100, 0);
        assert_eq!(irq0_times(&mut pit, TSC_HZ), vec![tsc_after(101)]);
        // Low byte only and high byte only.
        pit.write(CONTROL, 0x24, 0);
        pit.write(CHANNEL0, 0x02, 0);
        assert_eq!(pit.next_deadline(), Some(tsc_after(0x200)));
        assert_eq!(pit.read(CHANNEL0, tsc_after(0x100)), 0x01);
    }

    #[test]
    fn read_back_reports_status_and_count() {
        let mut pit = Pit::new(TSC_HZ).unwrap();
        pit.write(PORT_B, port_b::GATE2, 0);
        pit.write(CONTROL, 0xb0, 0);
        // Mode set, no count: output low, null count.
        pit.write(CONTROL, 0xe8, 0);
        assert_eq!(pit.read(CHANNEL2, 0), 0x70);
        pit.write(CHANNEL2, 0x00, 0);
        pit.write(CHANNEL2, 0x01, 0);
        // Status then count, latched together.
        pit.write(CONTROL, 0xc8, tsc_after(16));
        assert_eq!(pit.read(CHANNEL2, tsc_after(300)), 0x30);
        assert_eq!(pit.read(CHANNEL2, tsc_after(300)), 0xf0);
        assert_eq!(pit.read(CHANNEL2, tsc_after(300)), 0x00);
        // After the terminal count the output is high.
        pit.write(CONTROL, 0xe8, tsc_after(300));
        assert_eq!(pit.read(CHANNEL2, tsc_after(300)), 0xb0);
    }

    #[test]
    fn channel_2_gate_and_output_in_port_b() {
        let mut pit = Pit::new(TSC_HZ).unwrap();
        pit.write(CONTROL, 0xb0, 0);
        pit.write(CHANNEL2, 0xe8, 0);
        pit.write(CHANNEL2, 0x03, 0);
        // Gate low: not counting.
        assert_eq!(pit.read(PORT_B, tsc_after(2000)) & port_b::OUT2, 0);
        assert_eq!(pit.read(CHANNEL2, tsc_after(2000)), 0xe8);
        let start = tsc_after(2000);
        pit.write(PORT_B, port_b::GATE2 | port_b::SPEAKER, start);
        assert_eq!(
            pit.read(PORT_B, start) & 0x0f,
            port_b::GATE2 | port_b::SPEAKER
        );
        assert_eq!(pit.read(PORT_B, start + tsc_after(999)) & port_b::OUT2, 0);
        // Lowering the gate halfway pauses mode 0.
        pit.write(PORT_B, 0, start + tsc_after(500));
        pit.write(PORT_B, port_b::GATE2, start + tsc_after(700));
        assert_eq!(pit.read(PORT_B, start + tsc_after(1199)) & port_b::OUT2, 0);
        assert_eq!(
            pit.read(PORT_B, start + tsc_after(1201)) & port_b::OUT2,
            port_b::OUT2
        );
        // Channel 2 never interrupts.
        assert!(!pit.tick(start + TSC_HZ));
        // The refresh bit toggles every 18 clocks.
        let toggles = (0..36).map(|clock| pit.read(PORT_B, tsc_after(clock)) & port_b::REFRESH);
        assert_eq!(toggles.filter(|&bit| bit != 0).count(), 18);
        // Mode 1 waits for a gate edge.
        pit.write(CONTROL, 0xb2, 0);
        pit.write(CHANNEL2, 10, 0);
        pit.write(CHANNEL2, 0, 0);
        assert_ne!(
            pit.read(PORT_B, tsc_after(100)) & port_b::OUT2,
            0,
            "idle high"
        );
        pit.write(PORT_B, 0, tsc_after(100));
        pit.write(PORT_B, port_b::GATE2, tsc_after(100));
        assert_eq!(pit.read(PORT_B, tsc_after(105)) & port_b::OUT2, 0);
        assert_ne!(pit.read(PORT_B, tsc_after(110)) & port_b::OUT2, 0);
    }

    /// A guest's view of the PIT: every port access costs `io_cost` TSC
    /// ticks, RDTSC a little.
    struct Guest {
        pit: Pit,
        now: u64,
        io_cost: u64,
    }

    impl Guest {
        fn new(tsc_hz: u64, io_nanoseconds: u64) -> Self {
            Self {
                pit: Pit::new(tsc_hz).unwrap(),
                now: 1 << 32,
                io_cost: tsc_hz * io_nanoseconds / 1_000_000_000,
            }
        }
        fn inb(&mut self, port: u16) -> u8 {
            self.now += self.io_cost;
            self.pit.read(port, self.now)
        }
        fn outb(&mut self, value: u8, port: u16) {
            self.now += self.io_cost;
            self.pit.write(port, value, self.now);
        }
        fn rdtsc(&mut self) -> u64 {
            self.now += 25;
            self.now
        }
    }

    /// Linux's `pit_verify_msb`: the low byte, then whether the high byte
    /// is `value`.
    fn verify_msb(guest: &mut Guest, value: u8) -> bool {
        guest.inb(0x42);
        guest.inb(0x42) == value
    }

    /// Linux's `pit_expect_msb`: the last TSC at which the high byte was
    /// `value`, and the TSC spent seeing it change.
    fn expect_msb(guest: &mut Guest, value: u8) -> Option<(u64, u64)> {
        let mut count = 0;
        let mut tsc = 0;
        while count < 50_000 && verify_msb(guest, value) {
            tsc = guest.rdtsc();
            count += 1;
        }
        let delta = guest.rdtsc() - tsc;
        (count > 5).then_some((tsc, delta))
    }

    /// Linux's `quick_pit_calibrate`: the TSC in kHz from the steps of
    /// channel 2's high byte in mode 0.
    fn quick_calibration(guest: &mut Guest) -> Option<u64> {
        let gate = guest.inb(0x61);
        guest.outb((gate & !0x02) | 0x01, 0x61);
        guest.outb(0xb0, 0x43);
        guest.outb(0xff, 0x42);
        guest.outb(0xff, 0x42);
        verify_msb(guest, 0);
        let (start, first_error) = expect_msb(guest, 0xff)?;
        let iterations = 25 * FREQUENCY / 1000 / 256;
        for i in 1..=iterations {
            let (tsc, error) = expect_msb(guest, 0xff - i as u8)?;
            let delta = tsc - start;
            if first_error + error >= delta >> 11 {
                continue;
            }
            if !verify_msb(guest, 0xfe - i as u8) {
                return None;
            }
            let centred = delta.checked_add_signed((error as i64 - first_error as i64) / 2)?;
            return Some(centred * FREQUENCY / (i * 256 * 1000));
        }
        None
    }

    /// Linux's `pit_calibrate_tsc(latch, ms, loopmin)`: TSC ticks while a
    /// mode-0 count of `ms` milliseconds runs out on channel 2, in kHz.
    fn slow_calibration(guest: &mut Guest, ms: u64, loop_minimum: u64) -> Option<u64> {
        let latch = FREQUENCY / (1000 / ms);
        let gate = guest.inb(0x61);
        guest.outb((gate & !0x02) | 0x01, 0x61);
        guest.outb(0xb0, 0x43);
        guest.outb(latch as u8, 0x42);
        guest.outb((latch >> 8) as u8, 0x42);
        let first = guest.rdtsc();
        let (mut last, mut previous) = (first, first);
        let (mut shortest, mut longest, mut loops) = (u64::MAX, 0, 0);
        while guest.inb(0x61) & 0x20 == 0 {
            last = guest.rdtsc();
            let delta = last - previous;
            previous = last;
            shortest = shortest.min(delta);
            longest = longest.max(delta);
            loops += 1;
        }
        (loops >= loop_minimum && longest <= 10 * shortest).then(|| (last - first) / ms)
    }

    #[test]
    fn linux_calibrates_the_tsc_within_a_thousandth() {
        for tsc_hz in [2_600_000_000, 1_000_000_000, 3_312_345_678] {
            for io_nanoseconds in [300, 1_000, 2_000] {
                let true_khz = tsc_hz as f64 / 1000.0;
                let mut guest = Guest::new(tsc_hz, io_nanoseconds);
                let quick = quick_calibration(&mut guest).expect("fast calibration");
                let error = (quick as f64 - true_khz).abs() / true_khz;
                assert!(error < 0.001, "quick: {quick} kHz for {tsc_hz} Hz");
                let slow = slow_calibration(&mut guest, 10, 1000).expect("PIT calibration");
                let error = (slow as f64 - true_khz).abs() / true_khz;
                assert!(error < 0.001, "slow: {slow} kHz for {tsc_hz} Hz");
            }
        }
    }

    #[test]
    fn short_periods_are_slowed_down() {
        let mut pit = Pit::new(TSC_HZ).unwrap();
        pit.write(CONTROL, 0x34, 0);
        pit.write(CHANNEL0, 2, 0);
        pit.write(CHANNEL0, 0, 0);
        // 100 µs is 119 clocks.
        assert_eq!(pit.next_deadline(), Some(tsc_after(119)));
        assert!(!Pit::owns_port(0x44) && Pit::owns_port(PORT_B));
        assert_eq!(pit.read(CONTROL, 0), 0xff);
        assert!(Pit::new(0).is_none());
    }
}
