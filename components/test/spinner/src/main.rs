//! Burns CPU for `seconds` (default 3) of wall time, then exits: the load
//! whose share of the CPU the `budget` test measures.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

runtime::component!(main);

use runtime::arguments::OrExit;

fn main(start: &runtime::Start) -> i32 {
    let seconds: u64 = start
        .arguments(&["seconds"])
        .or_exit()
        .number("seconds", 3)
        .or_exit();
    let end = runtime::syscall::time_ns() + seconds * 1_000_000_000;
    let mut spins = 0u64;
    while runtime::syscall::time_ns() < end {
        for _ in 0..10_000 {
            spins = core::hint::black_box(spins + 1);
        }
    }
    runtime::println!("spun for {seconds} s");
    0
}
