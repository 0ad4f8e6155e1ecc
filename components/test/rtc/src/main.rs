//! An interrupt-driven driver for the CMOS RTC's periodic interrupt, to
//! show device interrupts reaching a ring-3 driver through the interrupt
//! forwarder.
//!
//! It needs `ports = ["0x70-0x71"]` and `interrupts = [8]` (the RTC's
//! IOAPIC input). It sets the periodic rate (`rate=`, the RTC's divider
//! code 3-15: 32768 >> (rate - 1) Hz, default 10 = 64 Hz), enables the
//! periodic interrupt, says ready, and then only waits on its notification
//! word: each delivery it reads register C (which clears the device's
//! cause), counts it when the periodic flag is set, and acknowledges,
//! which lets the forwarder release the line. A delivery that finds no
//! cause is counted apart: the line is edge-triggered, and QEMU's RTC
//! raises it again at a tick that comes before register C is read, which
//! the core keeps as one more edge (see `microvisor::interrupt_lines`).
//! After `count=` periodic interrupts (default 20) it turns the interrupt
//! off, signals `report` if the system gives it that notification (to the
//! forwarder, which then prints its counters, and sends them on the queue
//! `counters`, which this driver reads back when it is given its receiving
//! end) and exits. No polling: a wait that sees nothing for `timeout=` ms
//! (default 2000) ends it with an error.
//!
//! Test modes: `mode=crash` panics on the `crash_at=`-th interrupt
//! (default 5) of its first life, before reading register C or
//! acknowledging, so the forwarder must deliver that interrupt again to
//! the restarted driver. `mode=storm` never reads register C: on a line
//! wired level-triggered (`interrupts = ["8 level-high"]`) the RTC then
//! holds its interrupt asserted, and each acknowledgement brings the next
//! interrupt at once: an interrupt storm, which the forwarder must mask.
//! It storms for `storm_ms=` milliseconds (default 2000) instead of
//! counting.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use irq_routing::LineReport;
use runtime::arguments::OrExit;
use runtime::irq::Line;
use runtime::ports::{inb, outb};
use runtime::println;
use runtime::queue::Receiver;

runtime::component!(main);

const CMOS_INDEX: u16 = 0x70;
const CMOS_DATA: u16 = 0x71;
const REGISTER_A: u8 = 0x0a;
const REGISTER_B: u8 = 0x0b;
const REGISTER_C: u8 = 0x0c;
/// Register B: periodic interrupt enable.
const PERIODIC_ENABLE: u8 = 0x40;
/// Register C: periodic interrupt flag.
const PERIODIC_FLAG: u8 = 0x40;

fn read(register: u8) -> u8 {
    outb(CMOS_INDEX, register);
    inb(CMOS_DATA)
}

fn write(register: u8, value: u8) {
    outb(CMOS_INDEX, register);
    outb(CMOS_DATA, value);
}

fn main(start: &runtime::Start) -> i32 {
    let arguments = start
        .arguments(&[
            "line", "rate", "count", "timeout", "mode", "crash_at", "storm_ms",
        ])
        .or_exit();
    let line: u32 = arguments.number("line", 8).or_exit();
    let rate: u32 = arguments.number("rate", 10).or_exit();
    let count: u64 = arguments.number("count", 20).or_exit();
    let timeout_ms: u64 = arguments.number("timeout", 2000).or_exit();
    let mode = arguments
        .choice("mode", &["normal", "crash", "storm"], "normal")
        .or_exit();
    let crash_at: u64 = arguments.number("crash_at", 5).or_exit();
    let storm_ms: u64 = arguments.number("storm_ms", 2000).or_exit();
    let rate = match u8::try_from(rate) {
        Ok(rate @ 3..=15) => rate,
        _ => {
            println!("rtc: rate={rate} is not an RTC rate (3 to 15)");
            return 2;
        }
    };
    let line = match Line::find(start, line) {
        Ok(line) => line,
        Err(error) => {
            println!("rtc: {error}");
            return 2;
        }
    };
    let generation = start.generation();
    // Rate and enable; register C is left as it is, so an interrupt an
    // earlier life did not clear is still there to be delivered again.
    write(REGISTER_A, (read(REGISTER_A) & 0xf0) | rate);
    write(REGISTER_B, read(REGISTER_B) | PERIODIC_ENABLE);
    let hz = 32768u32 >> (rate - 1);
    if mode == "storm" {
        println!(
            "rtc: generation {generation}: periodic interrupt at {hz} Hz on line {}; never clearing it for {storm_ms} ms",
            line.line
        );
    } else {
        println!(
            "rtc: generation {generation}: periodic interrupt at {hz} Hz on line {}; waiting for {count} of them",
            line.line
        );
    }
    line.ready();

    let storm = mode == "storm";
    let storm_end = runtime::syscall::time_ns() + storm_ms * 1_000_000;
    let mut delivered = 0u64;
    let mut periodic = 0u64;
    loop {
        let now = runtime::syscall::time_ns();
        if (storm && now >= storm_end) || (!storm && periodic >= count) {
            break;
        }
        let mut wait_us = timeout_ms * 1000;
        if storm {
            wait_us = wait_us.min((storm_end - now).div_ceil(1000));
        }
        if !line.wait(Some(wait_us)) {
            if storm && runtime::syscall::time_ns() >= storm_end {
                break;
            }
            println!("rtc: no interrupt within {timeout_ms} ms after {delivered}");
            stop();
            return 1;
        }
        delivered += 1;
        if mode == "crash" && generation == 1 && delivered == crash_at {
            println!("rtc: crashing with interrupt {delivered} delivered but not acknowledged");
            panic!("crash requested (mode=crash)");
        }
        if !storm {
            let flags = read(REGISTER_C);
            if flags & PERIODIC_FLAG != 0 {
                periodic += 1;
            }
            if delivered == 1 && generation > 1 {
                println!(
                    "rtc: generation {generation}: first interrupt, register C {flags:#04x} (the cause left by the last life)"
                );
            }
        }
        line.acknowledge();
        if delivered.is_multiple_of(1000) {
            println!("rtc: {delivered} interrupts");
        }
    }
    stop();
    // Ask the forwarder for its counters, when the system connects us,
    // and read ours back when it also gives us its `counters` queue.
    if let Some(report) = start.capability("report") {
        runtime::syscall::signal(report);
        if let Ok(mut counters) = Receiver::<LineReport>::open(start, "counters") {
            match counters.receive_timeout(Some(1_000_000)) {
                Ok(counted) => println!(
                    "rtc: the forwarder counts {} deliveries on line {} ({} coalesced, {} redelivered, {} storms); this driver saw {delivered}: {}",
                    counted.delivered,
                    counted.line,
                    counted.coalesced,
                    counted.redelivered,
                    counted.storms,
                    if counted.delivered == delivered {
                        "they agree"
                    } else {
                        "MISMATCH"
                    }
                ),
                Err(error) => println!("rtc: no counters from the forwarder: {error:?}"),
            }
        }
    }
    if storm {
        println!(
            "rtc: {delivered} interrupts in {storm_ms} ms without clearing the device; stopped"
        );
    } else {
        println!(
            "rtc: generation {generation}: {periodic} periodic interrupts, each waited for (no polling); {} deliveries found no cause",
            delivered - periodic
        );
    }
    0
}

/// Turns the periodic interrupt off and clears what is pending.
fn stop() {
    write(REGISTER_B, read(REGISTER_B) & !PERIODIC_ENABLE);
    read(REGISTER_C);
}
