//! The first component: greets, then prints `count` numbered lines (default
//! 3), yielding between them so that other components interleave.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

runtime::component!(main);

fn main(start: &runtime::Start) -> i32 {
    runtime::println!(
        "Hello from ring 3, I am '{}' (component {})",
        start.name(),
        start.index()
    );
    let count: u32 = start.arg("count").and_then(|c| c.parse().ok()).unwrap_or(3);
    for tick in 1..=count {
        runtime::println!("tick {tick}/{count}");
        runtime::syscall::yield_now();
    }
    runtime::println!("done");
    0
}
