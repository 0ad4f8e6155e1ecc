//! The first test VM: greets with the way it was entered (real mode, PVH or
//! long mode), prints three numbered lines and passes.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use guest_runtime::println;

guest_runtime::entry!("hello", main);

fn main() -> u32 {
    println!("hello from a guest entry={}", guest_runtime::entry_mode());
    for line in 1..=3 {
        println!("hello: line {line}/3");
    }
    println!("TEST hello PASS");
    0
}
