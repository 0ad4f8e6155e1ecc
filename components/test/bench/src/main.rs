//! Measures core paths in instructions, for `cargo run -p build -- bench`.
//!
//! Under QEMU's `-icount shift=0` the time-stamp counter advances exactly
//! once per executed instruction, so an RDTSC delta is a path length in
//! instructions, core code included. Each measurement runs `rounds`
//! iterations (default 1000) of the operation and of an empty loop of the
//! same shape, and reports the difference per iteration, so the loop's own
//! cost is not charged to the operation. Lines have the form
//! `BENCH <name> <value> <unit> (<detail>)`.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use runtime::arguments::OrExit;
use runtime::{println, rdtsc, syscall};

runtime::component!(main);

fn main(start: &runtime::Start) -> i32 {
    let rounds: u64 = start
        .arguments(&["rounds"])
        .or_exit()
        .number("rounds", 1000)
        .or_exit();
    // Warm up: first touches of code and stack pages.
    for _ in 0..10 {
        syscall::null();
    }
    let empty = measure(rounds, || core::hint::black_box(0u64));
    let null = measure(rounds, syscall::null);
    let per_call = (null.saturating_sub(empty)) / rounds;
    println!(
        "BENCH null-syscall {per_call} instructions/call ({rounds} calls, {null} total, loop {empty})"
    );
    0
}

/// The RDTSC delta of `rounds` calls of `operation`.
fn measure(rounds: u64, mut operation: impl FnMut() -> u64) -> u64 {
    let begin = rdtsc();
    for _ in 0..rounds {
        core::hint::black_box(operation());
    }
    rdtsc() - begin
}
