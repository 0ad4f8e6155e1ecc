//! Idles forever: NO_WORK for 5 ms per round under our hypervisor (a busy
//! wait of a few million TSC ticks elsewhere, since nothing would wake a
//! HLT with interrupts off), printing `idle: rounds=<n>` every 100 rounds.
//! Never exits by itself.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use guest_runtime::println;

guest_runtime::entry!("idle", main);

fn main() -> u32 {
    let no_work = guest_runtime::detect().has_no_work();
    println!(
        "idle: waiting with {}",
        if no_work { "NO_WORK" } else { "a busy loop" }
    );
    guest_runtime::hypervisor::idle_forever(no_work, |rounds| println!("idle: rounds={rounds}"))
}
