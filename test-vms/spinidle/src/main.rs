//! Computes as `spin` does (no exits) until the CMOS RTC's seconds register
//! has changed 3 times, 2 to 3 seconds after it starts, looking at the RTC
//! only every 2^20 iterations; then idles forever as `idle` does: NO_WORK
//! for 5 ms per round under our hypervisor (a busy wait of a few million
//! TSC ticks elsewhere). Prints `spinidle: spinning until the RTC has
//! ticked 3 times`, `spinidle: spun <n> iterations; idle from now on` when
//! it switches, and `spinidle: idle rounds=<n>` every 100 rounds. Never
//! exits by itself; it is the guest whose demand for the CPU drops while
//! a scheduler is watched.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use guest_runtime::interrupts::cmos_read;
use guest_runtime::println;

guest_runtime::entry!("spinidle", main);

/// Iterations between two looks at the RTC.
const CHECK_EVERY: u64 = 1 << 20;
/// How many changes of the RTC's seconds end the spinning.
const TICKS: u32 = 3;

const SECONDS: u8 = 0x00;
const REGISTER_A: u8 = 0x0a;
const REGISTER_B: u8 = 0x0b;
/// Register A: an update is in progress (or starts within 244 µs).
const A_UPDATE_IN_PROGRESS: u8 = 0x80;
/// Register B: time registers are binary rather than BCD.
const B_BINARY: u8 = 0x04;

/// The RTC's seconds, 0-59, read outside an update: the register is read
/// only while UIP is clear, and twice, so a read that an update (or a
/// long pause of this VM) overtook is not used.
fn rtc_seconds() -> u8 {
    let raw = loop {
        if cmos_read(REGISTER_A) & A_UPDATE_IN_PROGRESS != 0 {
            core::hint::spin_loop();
            continue;
        }
        let first = cmos_read(SECONDS);
        if cmos_read(REGISTER_A) & A_UPDATE_IN_PROGRESS == 0 && cmos_read(SECONDS) == first {
            break first;
        }
    };
    if cmos_read(REGISTER_B) & B_BINARY != 0 {
        raw
    } else {
        (raw >> 4) * 10 + (raw & 0x0f)
    }
}

fn main() -> u32 {
    println!("spinidle: spinning until the RTC has ticked {TICKS} times");
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut iterations: u64 = 0;
    let mut seconds = rtc_seconds();
    let mut ticks = 0;
    while ticks < TICKS {
        for _ in 0..CHECK_EVERY {
            state = guest_runtime::compute_step(state);
        }
        iterations += CHECK_EVERY;
        let now = rtc_seconds();
        if now != seconds {
            seconds = now;
            ticks += 1;
        }
    }
    println!("spinidle: spun {iterations} iterations; idle from now on");
    let no_work = guest_runtime::detect().has_no_work();
    guest_runtime::hypervisor::idle_forever(no_work, |rounds| {
        println!("spinidle: idle rounds={rounds}")
    })
}
