//! Burns CPU for `seconds` (default 3) of wall time, or `ms`
//! milliseconds when given, then exits: the load whose share of the CPU
//! the `budget` test measures, and the work that keeps the CPU from
//! idling while the interrupt benchmark runs.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

runtime::component!(main);

use runtime::arguments::OrExit;

fn main(start: &runtime::Start) -> i32 {
    let arguments = start.arguments(&["seconds", "ms"]).or_exit();
    let seconds: u64 = arguments.number("seconds", 3).or_exit();
    let milliseconds = arguments
        .optional_number::<u64>("ms")
        .or_exit()
        .unwrap_or(seconds * 1000);
    let end = runtime::syscall::time_ns() + milliseconds * 1_000_000;
    let mut spins = 0u64;
    while runtime::syscall::time_ns() < end {
        for _ in 0..10_000 {
            spins = core::hint::black_box(spins + 1);
        }
    }
    if milliseconds.is_multiple_of(1000) {
        runtime::println!("spun for {} s", milliseconds / 1000);
    } else {
        runtime::println!("spun for {milliseconds} ms");
    }
    0
}
