//! Idles forever: NO_WORK for 5 ms per round under our hypervisor (a busy
//! wait of a few million TSC ticks elsewhere, since nothing would wake a
//! HLT with interrupts off), printing `idle: rounds=<n>` every 100 rounds.
//! Never exits by itself.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use guest_runtime::println;

guest_runtime::entry!("idle", main);

/// How long one round waits.
const ROUND_MICROSECONDS: u64 = 5000;
/// How long one round waits without our hypervisor, in TSC ticks.
const ROUND_TICKS: u64 = 5_000_000;

fn main() -> u32 {
    let no_work = guest_runtime::detect().has_no_work();
    println!(
        "idle: waiting with {}",
        if no_work { "NO_WORK" } else { "a busy loop" }
    );
    let mut rounds: u64 = 0;
    loop {
        if no_work {
            guest_runtime::hypervisor::no_work(ROUND_MICROSECONDS);
        } else {
            guest_runtime::spin_ticks(ROUND_TICKS);
        }
        rounds += 1;
        if rounds.is_multiple_of(100) {
            println!("idle: rounds={rounds}");
        }
    }
}
