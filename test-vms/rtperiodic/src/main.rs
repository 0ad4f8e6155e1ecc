//! A real-time guest: it needs about 2 ms of CPU every 10 ms, and counts
//! the deadlines it misses.
//!
//! The period is PIT channel 0 as a 100 Hz rate generator (divisor
//! [`DIVISOR`]; [`guest_runtime::clock::pit_periodic`]), through IOAPIC pin
//! 2 to vector [`TICK_VECTOR`] on the local APIC (the 8259 masked). The
//! work is a fixed number of iterations of arithmetic, calibrated before
//! the timer starts: with the TSC's rate (from the paravirtual clock, or
//! measured against the PIT), the fastest of several timed runs of the
//! loop (the least interrupted) gives the iterations in
//! [`WORK_MICROSECONDS`]. Then for [`PERIODS`] periods (8 s): at each tick
//! the work, with interrupts off (as a small real-time kernel runs its
//! task), then `sti; hlt` until the next tick. A period's deadline is
//! missed when its work is done more than a period after its tick (by the
//! TSC the tick's handler read): the next tick is then waiting at the HLT,
//! which is how a hypervisor sees it too; a period whose tick arrives while
//! an earlier one's work still runs, or while the VM was not run at all,
//! starts at once, and a period that passed wholly without its work is
//! missed too.
//!
//! Prints `rtperiodic: TSC at <n> MHz (from the paravirtual clock|against
//! the PIT)`, `rtperiodic: work of N iterations takes about 2000 us, every
//! 10000 us`, `rtperiodic: second N: 100 periods, M missed` after each 100
//! periods (N = 1..8; second 1 is periods 0-99), `rtperiodic: 800 periods
//! took <ms> ms by the TSC` and `rtperiodic: M deadlines missed in seconds
//! 2 to 8` (the time from 2 s to 8 s: periods 200-799, the lines of
//! seconds 3 to 8). The seconds' lines come after the last period, not
//! as they pass: a line printed between a period's work and its HLT
//! would be part of that period's CPU time as a hypervisor measures it
//! (the console is slow), and make the guest's need look larger than
//! its work (under our hypervisor they go through the LOG hypercall,
//! one exit rather than two a byte). The first 2 s are while a controller
//! learns what the guest needs: misses there are only reported. Last line
//! `TEST rtperiodic PASS` when none was missed from 2 s on, else `TEST
//! rtperiodic FAIL: M deadlines missed after second 2` (exit status 1).
//! The same natively.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::fmt::{self, Write};
use core::hint::black_box;

use guest_runtime::api::OK;
use guest_runtime::clock::{self, PIT_HZ, PIT_IOAPIC_PIN, TscRate};
use guest_runtime::interrupts::{self, lapic_write};
use guest_runtime::{hypervisor, println, rdtsc_ordered};

guest_runtime::entry!("rtperiodic", main);

/// The PIT's divisor for 100 Hz (10,000.15 µs).
const DIVISOR: u16 = 11_932;
/// The tick's vector.
const TICK_VECTOR: u8 = 0x30;
/// The work per period.
const WORK_MICROSECONDS: u64 = 2_000;
/// Periods in the run, and per reported second.
const PERIODS: usize = 800;
const PER_SECOND: usize = 100;
const SECONDS: usize = PERIODS / PER_SECOND;
/// Periods while a controller learns (misses only reported).
const LEARNING_PERIODS: usize = 200;
/// Iterations of the first timing runs, and how many runs of each size.
const PROBE_ITERATIONS: u64 = 10_000;
const PROBE_RUNS: u32 = 4;
/// The calibration's runs: about this long, this many.
const CALIBRATION_MICROSECONDS: u64 = 500;
const CALIBRATION_RUNS: u32 = 8;
/// The LAPIC's spurious-interrupt register: bit 8 enables it.
const SPURIOUS: u32 = 0xf0;

fn main() -> u32 {
    interrupts::disable();
    let log = guest_runtime::detect().has_hypercalls();
    // Firmware may leave the 8259 routing the PIT to vector 8.
    interrupts::mask_legacy_pic();
    let rate = clock::tsc_rate();
    println!(
        "rtperiodic: TSC at {} MHz ({})",
        rate.hz / 1_000_000,
        rate.source
    );
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let (iterations, ticks) = calibrate(&rate, &mut state);
    println!(
        "rtperiodic: work of {iterations} iterations takes about {} us, every {} us",
        rate.microseconds(ticks),
        u64::from(DIVISOR) * 1_000_000 / PIT_HZ
    );

    lapic_write(SPURIOUS, 0x1ff);
    interrupts::use_lapic();
    interrupts::ioapic_route(PIT_IOAPIC_PIN, TICK_VECTOR);
    let base = interrupts::count(TICK_VECTOR);
    // Ticks since the timer started: period p begins with tick p + 1.
    let ticks = || interrupts::count(TICK_VECTOR).wrapping_sub(base) as usize;
    clock::pit_periodic(DIVISOR);
    let period_ticks = rate.ticks(u64::from(DIVISOR) * 1_000_000 / PIT_HZ);

    let mut missed = [0u32; SECONDS];
    let mut next = 0;
    let mut reported = 0;
    let mut first_tick = None;
    loop {
        // Until period `next` has begun (interrupts off between the look
        // and the halt, so no tick slips in unseen).
        interrupts::disable();
        while ticks() < next + 1 {
            interrupts::wait();
            interrupts::disable();
        }
        let begun = ticks();
        let tick_at = interrupts::last_tsc();
        let current = begun - 1;
        first_tick.get_or_insert_with(interrupts::last_tsc);
        for period in next..current.min(PERIODS) {
            missed[period / PER_SECOND] += 1;
        }
        if current >= PERIODS {
            break;
        }
        work(iterations, &mut state);
        if rdtsc_ordered().wrapping_sub(tick_at) > period_ticks {
            missed[current / PER_SECOND] += 1;
        }
        next = current + 1;
        if next >= PERIODS {
            break;
        }
    }
    // Until the tick that ends the last period.
    interrupts::disable();
    while ticks() < PERIODS + 1 {
        interrupts::wait();
        interrupts::disable();
    }
    let last_tick = interrupts::last_tsc();
    clock::pit_stop();
    interrupts::ioapic_mask(PIT_IOAPIC_PIN);
    black_box(state);
    while reported < SECONDS {
        report(log, reported, missed[reported]);
        reported += 1;
    }
    let elapsed = last_tick - first_tick.unwrap_or(last_tick);
    println!(
        "rtperiodic: {PERIODS} periods took {} ms by the TSC",
        rate.microseconds(elapsed) / 1000
    );
    let late: u32 = missed[LEARNING_PERIODS / PER_SECOND..].iter().sum();
    println!(
        "rtperiodic: {late} deadlines missed in seconds {} to {SECONDS}",
        LEARNING_PERIODS / PER_SECOND
    );
    if late == 0 {
        println!("TEST rtperiodic PASS");
        0
    } else {
        guest_runtime::fail(format_args!(
            "{late} deadlines missed after second {}",
            LEARNING_PERIODS / PER_SECOND
        ))
    }
}

/// Prints a second's line: under our hypervisor through the LOG
/// hypercall, one exit, rather than the UART's two exits a byte.
fn report(log: bool, second: usize, missed: u32) {
    let mut line = Line {
        bytes: [0; 96],
        length: 0,
        overflowed: false,
    };
    let _ = write!(
        line,
        "rtperiodic: second {}: {PER_SECOND} periods, {missed} missed",
        second + 1
    );
    match line.text() {
        Some(text) if log && hypervisor::log(text) == OK => {}
        Some(text) => println!("{text}"),
        None => println!("rtperiodic: second {}: (line too long)", second + 1),
    }
}

/// A line formatted into a buffer, for the LOG hypercall.
struct Line {
    bytes: [u8; 96],
    length: usize,
    overflowed: bool,
}

impl Line {
    /// The line, unless it did not fit.
    fn text(&self) -> Option<&str> {
        if self.overflowed {
            return None;
        }
        core::str::from_utf8(&self.bytes[..self.length]).ok()
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.length + text.len();
        if end > self.bytes.len() {
            self.overflowed = true;
            return Err(fmt::Error);
        }
        self.bytes[self.length..end].copy_from_slice(text.as_bytes());
        self.length = end;
        Ok(())
    }
}

/// The period's work: `iterations` steps of arithmetic. Never inlined:
/// calibration and the periods must run the same instructions (inlined
/// into the main loop it took 7 instructions an iteration where the
/// calibration's copy took 6, and the work was a sixth longer than
/// calibrated).
#[inline(never)]
fn work(iterations: u64, state: &mut u64) {
    for _ in 0..iterations {
        *state = guest_runtime::compute_step(*state);
    }
}

/// The TSC ticks of the fastest of `runs` runs of `iterations`.
fn fastest(iterations: u64, runs: u32, state: &mut u64) -> u64 {
    (0..runs)
        .map(|_| {
            let start = rdtsc_ordered();
            work(iterations, state);
            rdtsc_ordered() - start
        })
        .min()
        .unwrap_or(0)
        .max(1)
}

/// The iterations in [`WORK_MICROSECONDS`], and the TSC ticks they take
/// (by the fastest calibration run): a first guess from short runs, then
/// runs of about [`CALIBRATION_MICROSECONDS`].
fn calibrate(rate: &TscRate, state: &mut u64) -> (u64, u64) {
    let probe = fastest(PROBE_ITERATIONS, PROBE_RUNS, state);
    let run = (u128::from(PROBE_ITERATIONS) * u128::from(rate.ticks(CALIBRATION_MICROSECONDS))
        / u128::from(probe))
    .max(u128::from(PROBE_ITERATIONS)) as u64;
    let ticks = fastest(run, CALIBRATION_RUNS, state);
    let iterations = (u128::from(run) * u128::from(rate.ticks(WORK_MICROSECONDS))
        / u128::from(ticks))
    .max(1) as u64;
    let work_ticks = (u128::from(ticks) * u128::from(iterations) / u128::from(run)) as u64;
    (iterations, work_ticks)
}
