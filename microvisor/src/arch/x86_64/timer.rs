//! Time: the time-stamp counter as the clock, the local APIC timer as the
//! one-shot alarm that enforces scheduling-context budgets.
//!
//! At boot both are calibrated against the legacy PIT (channel 2, gate on
//! port 0x61) over 10 ms, so TSC ticks convert to nanoseconds and to APIC
//! timer counts on QEMU (TCG, with or without `-icount`), Bochs and
//! hardware alike. The APIC registers are reached through an uncached
//! mapping at [`APIC_VIRTUAL`] that the core's page tables provide. Where
//! the APIC has TSC-deadline mode (Bochs' Skylake-X, most hardware) the
//! alarm is a TSC value; otherwise (QEMU TCG) a one-shot count. The core
//! arms the timer for the earliest event it must act on (a budget
//! running out, a time slice ending, a timeout, a refill) before resuming a
//! thread; the interrupt arrives on [`TIMER_VECTOR`].

use super::cpu::{self, in8, out8};
use microvisor::time::Clock;

/// Vector of the local APIC timer interrupt.
pub const TIMER_VECTOR: u64 = 0x40;
/// Vector the APIC uses for spurious interrupts.
pub const SPURIOUS_VECTOR: u64 = 0xff;
/// Where the core maps the local APIC's registers.
pub const APIC_VIRTUAL: u64 = 0xffff_ff00_0000_0000;
const APIC_BASE_MSR: u32 = 0x1b;

const REGISTER_EOI: u64 = 0xb0;
const REGISTER_SPURIOUS: u64 = 0xf0;
const REGISTER_TASK_PRIORITY: u64 = 0x80;
const REGISTER_LVT_TIMER: u64 = 0x320;
const REGISTER_INITIAL_COUNT: u64 = 0x380;
const REGISTER_CURRENT_COUNT: u64 = 0x390;
const REGISTER_DIVIDE: u64 = 0x3e0;
const LVT_MASKED: u32 = 1 << 16;
/// LVT timer mode 0b10: TSC-deadline.
const LVT_TSC_DEADLINE: u32 = 2 << 17;
const TSC_DEADLINE_MSR: u32 = 0x6e0;

/// The physical address of the local APIC's registers.
pub fn apic_physical() -> u64 {
    cpu::read_msr(APIC_BASE_MSR) & 0x000f_ffff_ffff_f000
}

fn read(register: u64) -> u32 {
    // SAFETY: APIC_VIRTUAL maps the local APIC's register page uncached;
    // `register` is one of the architectural offsets above.
    unsafe { ((APIC_VIRTUAL + register) as *const u32).read_volatile() }
}

fn write(register: u64, value: u32) {
    // SAFETY: as for `read`.
    unsafe { ((APIC_VIRTUAL + register) as *mut u32).write_volatile(value) }
}

/// This CPU's local APIC ID (where device interrupts are sent).
pub fn apic_id() -> u8 {
    (read(0x20) >> 24) as u8
}

/// Reads the time-stamp counter.
pub fn now() -> u64 {
    // SAFETY: rdtsc only reads the counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The alarm: the local APIC timer, programmed from the calibrated
/// [`Clock`] (whose arithmetic is host-tested in `microvisor::time`).
pub trait Alarm {
    /// Fires [`TIMER_VECTOR`] once, `delay` TSC ticks from now.
    fn arm(&self, delay: u64);
    /// Cancels the alarm.
    fn disarm(&self);
}

impl Alarm for Clock {
    /// In TSC-deadline mode exactly `delay` ticks from now, otherwise after
    /// the equivalent APIC count (at least one, at most the counter's
    /// range).
    fn arm(&self, delay: u64) {
        if self.tsc_deadline {
            write(REGISTER_LVT_TIMER, TIMER_VECTOR as u32 | LVT_TSC_DEADLINE);
            // SAFETY: the MSR exists (CPUID said so); a deadline only
            // schedules the timer interrupt.
            unsafe { cpu::write_msr(TSC_DEADLINE_MSR, now().saturating_add(delay.max(1))) };
            return;
        }
        let counts = self.apic_counts(delay);
        write(REGISTER_LVT_TIMER, TIMER_VECTOR as u32);
        write(REGISTER_INITIAL_COUNT, counts);
    }

    fn disarm(&self) {
        if self.tsc_deadline {
            // SAFETY: writing 0 disarms the deadline timer.
            unsafe { cpu::write_msr(TSC_DEADLINE_MSR, 0) };
            return;
        }
        write(REGISTER_LVT_TIMER, TIMER_VECTOR as u32 | LVT_MASKED);
        write(REGISTER_INITIAL_COUNT, 0);
    }
}

/// Signals the end of an interrupt to the local APIC.
pub fn end_of_interrupt() {
    write(REGISTER_EOI, 0);
}

/// LVT LINT0: where a legacy PIC's output enters.
const REGISTER_LVT_LINT0: u64 = 0x350;
/// LVT delivery mode ExtINT (the PIC supplies the vector), unmasked.
const LVT_EXTINT: u32 = 0x700;

/// Lets the legacy PIC's interrupts in through LINT0 (virtual-wire mode),
/// for the console's line ([`super::interrupts::route_console`]).
pub fn accept_legacy_pic() {
    write(REGISTER_LVT_LINT0, LVT_EXTINT);
}

/// Enables the local APIC (timer masked) and calibrates the TSC and the
/// APIC timer against 10 ms of PIT channel 2. With `tsc_deadline` (CPUID
/// says the APIC has the mode) the timer then runs in TSC-deadline mode.
///
/// # Safety
/// The APIC's register page must be mapped at [`APIC_VIRTUAL`]; call once
/// at boot with interrupts disabled.
pub unsafe fn init(tsc_deadline: bool) -> Clock {
    // SAFETY: setting the global-enable bit keeps the APIC at its base.
    unsafe { cpu::write_msr(APIC_BASE_MSR, cpu::read_msr(APIC_BASE_MSR) | (1 << 11)) };
    write(REGISTER_SPURIOUS, 0x100 | SPURIOUS_VECTOR as u32);
    write(REGISTER_TASK_PRIORITY, 0);
    write(REGISTER_DIVIDE, 0x3);
    write(REGISTER_LVT_TIMER, TIMER_VECTOR as u32 | LVT_MASKED);

    const PIT_HZ: u64 = 1_193_182;
    const MILLISECONDS: u64 = 10;
    let count = (PIT_HZ * MILLISECONDS / 1000) as u16;
    let gate = in8(0x61);
    out8(0x61, (gate & !0x02) | 0x01);
    out8(0x43, 0xb0); // channel 2, low then high byte, mode 0
    out8(0x42, count as u8);
    out8(0x42, (count >> 8) as u8);
    let gate = in8(0x61) & !0x01;
    out8(0x61, gate);
    out8(0x61, gate | 0x01);
    write(REGISTER_INITIAL_COUNT, u32::MAX);
    let start = now();
    let mut spins = 0u64;
    while in8(0x61) & 0x20 == 0 && spins < 1_000_000_000 {
        spins += 1;
    }
    let tsc = now() - start;
    let apic = u64::from(u32::MAX - read(REGISTER_CURRENT_COUNT));
    write(REGISTER_INITIAL_COUNT, 0);
    if tsc_deadline {
        write(
            REGISTER_LVT_TIMER,
            TIMER_VECTOR as u32 | LVT_TSC_DEADLINE | LVT_MASKED,
        );
    }
    Clock::new(
        tsc / MILLISECONDS,
        (apic / MILLISECONDS).max(1),
        start,
        tsc_deadline,
    )
}
