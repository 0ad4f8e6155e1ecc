//! Triple-faults on purpose: loads an IDT with limit 0 and executes `int3`.
//! Under the hypervisor that is a shutdown exit; QEMU with `-no-reboot`
//! stops.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use guest_runtime::println;

guest_runtime::entry!("crash", main);

fn main() -> u32 {
    println!("crash: about to triple fault");
    guest_runtime::arch::triple_fault()
}
