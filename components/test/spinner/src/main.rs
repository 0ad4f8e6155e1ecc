//! Burns CPU for `seconds` (default 3) of wall time, or `ms`
//! milliseconds when given, then exits: the load whose share of the CPU
//! the `budget` test measures, and the work that keeps the CPU from
//! idling while the interrupt benchmark runs. With `max_gap_ms=N` it also
//! keeps the longest time between two of its looks at the clock — the
//! longest it was kept off the CPU — and fails (`TEST spinner-gap FAIL`)
//! when that exceeds N ms: below a budget-limited component, it shows
//! that the component was stopped when its budget ran out. With
//! `after=NAME` it waits for the incoming notification NAME first, so
//! that it becomes ready when another component says (a rival woken in
//! the middle of a call).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

runtime::component!(main);

use runtime::arguments::OrExit;

fn main(start: &runtime::Start) -> i32 {
    let arguments = start
        .arguments(&["seconds", "ms", "max_gap_ms", "after"])
        .or_exit();
    if let Some(name) = arguments.text("after") {
        let Some(bits) = start.incoming(name) else {
            runtime::println!("'after={name}': no incoming notification '{name}'");
            return 1;
        };
        runtime::notification::wait_for(bits, None);
        runtime::println!("woken by '{name}'");
    }
    let seconds: u64 = arguments.number("seconds", 3).or_exit();
    let milliseconds = arguments
        .optional_number::<u64>("ms")
        .or_exit()
        .unwrap_or(seconds * 1000);
    let max_gap_ms = arguments.optional_number::<u64>("max_gap_ms").or_exit();
    let mut last = runtime::syscall::time_ns();
    let end = last + milliseconds * 1_000_000;
    let mut longest = 0u64;
    let mut spins = 0u64;
    loop {
        let now = runtime::syscall::time_ns();
        longest = longest.max(now - last);
        last = now;
        if now >= end {
            break;
        }
        for _ in 0..10_000 {
            spins = core::hint::black_box(spins + 1);
        }
    }
    if milliseconds.is_multiple_of(1000) {
        runtime::println!("spun for {} s", milliseconds / 1000);
    } else {
        runtime::println!("spun for {milliseconds} ms");
    }
    if let Some(limit) = max_gap_ms {
        let longest_us = longest / 1000;
        if longest_us > limit * 1000 {
            runtime::println!(
                "TEST spinner-gap FAIL: kept off the CPU for {longest_us} us at a stretch (at most {limit} ms expected)"
            );
            return 1;
        }
        runtime::println!(
            "TEST spinner-gap PASS: kept off the CPU for at most {longest_us} us at a stretch"
        );
    }
    0
}
