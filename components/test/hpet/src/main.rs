//! A driver for the HPET through the device memory the system grants it
//! (`mmio = [{ physical = "0xfed00000", size = "4KiB" }]` on QEMU's q35):
//! reads the general capabilities (vendor and counter period), starts the
//! main counter, sees it advance across a yield, stops it again, and then
//! touches the byte after its grant, where the core must fault it.
//!
//! With `mode=latency` it measures interrupt delivery to a ring-3 driver
//! instead: from the moment the HPET raises its line until this driver's
//! handler runs, the core and the interrupt forwarder's hop included. Its
//! timer 0 interrupts on an IOAPIC input the system grants (`interrupts =
//! ["N edge-high"]`, `line=N`, default 23; QEMU's q35 lets timer 0 use 2,
//! 8 and 16-23). Each round sets the comparator 100 µs ahead of the main
//! counter, waits for the interrupt, and reads the counter first thing in
//! the handler: the difference is the delivery latency in counter ticks
//! (10 ns on QEMU). Under `-icount shift=0` every nanosecond is one
//! instruction, so the figure it prints (`BENCH interrupt-to-driver`, the
//! median of `rounds=` rounds, default 50) is the instructions executed
//! from the device's interrupt to the driver.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use runtime::arguments::OrExit;
use runtime::irq::Line;
use runtime::mmio::Region;
use runtime::{println, syscall};

runtime::component!(main);

const CAPABILITIES: u64 = 0x000;
const CONFIGURATION: u64 = 0x010;
const MAIN_COUNTER: u64 = 0x0f0;
const TIMER0_CONFIGURATION: u64 = 0x100;
const TIMER0_COMPARATOR: u64 = 0x108;
/// General configuration: the main counter runs.
const ENABLE: u64 = 1;
/// Timer configuration: interrupt enable, and the routing field's shift.
const TIMER_INTERRUPT: u64 = 1 << 2;
const ROUTE_SHIFT: u64 = 9;
/// The most latency rounds.
const MAX_ROUNDS: usize = 256;

fn main(start: &runtime::Start) -> i32 {
    let arguments = start.arguments(&["mode", "line", "rounds"]).or_exit();
    let mode = arguments
        .choice("mode", &["grant", "latency"], "grant")
        .or_exit();
    let Some(hpet) = Region::granted(start, 0) else {
        println!("hpet: no device memory was granted");
        return 2;
    };
    if mode == "latency" {
        let line: u32 = arguments.number("line", 23).or_exit();
        let rounds: u32 = arguments.number("rounds", 50).or_exit();
        return latency(start, &hpet, line, rounds as usize);
    }
    let Some(capabilities) = hpet.read64(CAPABILITIES) else {
        println!("hpet: the grant is too small for the capabilities register");
        return 2;
    };
    let vendor = (capabilities >> 16) & 0xffff;
    let period_fs = capabilities >> 32;
    println!(
        "hpet: vendor {vendor:#06x}, counter period {period_fs} fs, {} timers",
        ((capabilities >> 8) & 0x1f) + 1
    );
    let configuration = hpet.read64(CONFIGURATION).unwrap_or(0);
    hpet.write64(CONFIGURATION, configuration | ENABLE);
    let before = hpet.read64(MAIN_COUNTER).unwrap_or(0);
    for _ in 0..3 {
        syscall::yield_now();
    }
    let after = hpet.read64(MAIN_COUNTER).unwrap_or(0);
    hpet.write64(CONFIGURATION, configuration);
    if after <= before {
        println!("hpet: the main counter did not advance ({before} -> {after})");
        return 1;
    }
    println!("hpet: the main counter advanced across a yield");
    // One byte past the grant: a page the core did not map.
    println!("hpet: reading past the grant");
    let _ = runtime::fault::read_u64(hpet.end());
    println!("hpet: the read past the grant returned");
    1
}

/// Measures `rounds` timer interrupts on `line_number` (see the module
/// documentation).
fn latency(start: &runtime::Start, hpet: &Region, line_number: u32, rounds: usize) -> i32 {
    if rounds == 0 || rounds > MAX_ROUNDS {
        println!("hpet: rounds={rounds} must be 1 to {MAX_ROUNDS}");
        return 2;
    }
    let line = match Line::find(start, line_number) {
        Ok(line) => line,
        Err(error) => {
            println!("hpet: {error}");
            return 2;
        }
    };
    let (Some(capabilities), Some(timer)) =
        (hpet.read64(CAPABILITIES), hpet.read64(TIMER0_CONFIGURATION))
    else {
        println!("hpet: the grant is too small for the HPET's registers");
        return 2;
    };
    let period_fs = capabilities >> 32;
    let routes = timer >> 32;
    if line_number >= 32 || routes & (1 << line_number) == 0 {
        println!(
            "hpet: HPET timer 0 cannot interrupt on line {line_number} (it can on {routes:#x})"
        );
        return 2;
    }
    // One-shot, edge-triggered, on our line; the counter running.
    let timer = (timer & 0xffff_ffff & !(0x1f << ROUTE_SHIFT) & !0b1010)
        | u64::from(line_number) << ROUTE_SHIFT
        | TIMER_INTERRUPT;
    hpet.write64(TIMER0_CONFIGURATION, timer);
    let configuration = hpet.read64(CONFIGURATION).unwrap_or(0);
    hpet.write64(CONFIGURATION, configuration | ENABLE);
    line.ready();

    // 100 µs ahead: far enough that the comparator is set before it passes.
    let ahead = 100_000_000_000 / period_fs.max(1);
    let mut latencies = [0u64; MAX_ROUNDS];
    for latency in latencies.iter_mut().take(rounds) {
        let target = hpet.read64(MAIN_COUNTER).unwrap_or(0) + ahead;
        hpet.write64(TIMER0_COMPARATOR, target);
        if !line.wait(Some(1_000_000)) {
            println!(
                "hpet: no interrupt within a second (timer 0 configuration {:#x}, comparator {:#x}, counter {:#x}, status {:#x})",
                hpet.read64(TIMER0_CONFIGURATION).unwrap_or(0),
                hpet.read64(TIMER0_COMPARATOR).unwrap_or(0),
                hpet.read64(MAIN_COUNTER).unwrap_or(0),
                hpet.read64(0x20).unwrap_or(0)
            );
            hpet.write64(TIMER0_CONFIGURATION, timer & !TIMER_INTERRUPT);
            return 1;
        }
        let now = hpet.read64(MAIN_COUNTER).unwrap_or(0);
        line.acknowledge();
        *latency = now.saturating_sub(target) * period_fs / 1_000_000;
    }
    hpet.write64(TIMER0_CONFIGURATION, timer & !TIMER_INTERRUPT);
    hpet.write64(CONFIGURATION, configuration);
    let measured = &mut latencies[..rounds];
    measured.sort_unstable();
    let median = measured[rounds / 2];
    println!(
        "hpet: {rounds} interrupts on line {line_number}, {} to {} ns from the HPET's comparator to the driver",
        measured[0],
        measured[rounds - 1]
    );
    println!(
        "BENCH interrupt-to-driver {median} instructions (HPET timer 0 -> core -> forwarder -> driver, median of {rounds}, 10 ns resolution; only under -icount shift=0 is a ns an instruction)"
    );
    0
}
