//! The first component: greets, then prints `count` numbered lines (default
//! 3), yielding between them so that other components interleave.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

runtime::component!(main);

use runtime::arguments::OrExit;

fn main(start: &runtime::Start) -> i32 {
    let count: u32 = start
        .arguments(&["count"])
        .or_exit()
        .number("count", 3)
        .or_exit();
    runtime::println!(
        "Hello from ring 3, I am '{}' (component {})",
        start.name(),
        start.index()
    );
    for tick in 1..=count {
        runtime::println!("tick {tick}/{count}");
        runtime::syscall::yield_now();
    }
    runtime::println!("done");
    0
}
