//! A driver for the HPET through the device memory the system grants it
//! (`mmio = [{ physical = "0xfed00000", size = "4KiB" }]` on QEMU's q35):
//! reads the general capabilities (vendor and counter period), starts the
//! main counter, sees it advance across a yield, stops it again, and then
//! touches the byte after its grant, where the core must fault it.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use runtime::mmio::Region;
use runtime::{println, syscall};

runtime::component!(main);

const CAPABILITIES: u64 = 0x000;
const CONFIGURATION: u64 = 0x010;
const MAIN_COUNTER: u64 = 0x0f0;
const ENABLE: u64 = 1;

fn main(start: &runtime::Start) -> i32 {
    let Some(hpet) = Region::granted(start, 0) else {
        println!("hpet: no device memory was granted");
        return 2;
    };
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
