//! Measures the CPU share of another component from its scheduling
//! context's consumed-time readouts: after a warm-up it sleeps through a
//! window of `window_ms` (default 1000) and divides the other's consumed
//! time by the window. `target` names the observed component (default
//! `spinner`, through the capability `<target>.sc`), `expect` and
//! `tolerance` the expected share in percent (default 20 ± 2), or
//! `at_least` a lower bound instead. `test` names the result line (default
//! `budget`).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::fmt::Write;

use runtime::arguments::OrExit;
use runtime::{println, syscall};

runtime::component!(main);

fn main(start: &runtime::Start) -> i32 {
    let arguments = start
        .arguments(&[
            "target",
            "test",
            "window_ms",
            "expect",
            "tolerance",
            "at_least",
        ])
        .or_exit();
    let number = |key, default| arguments.number::<u64>(key, default).or_exit();
    let target = arguments.text("target").unwrap_or("spinner");
    let test = arguments.text("test").unwrap_or("budget");
    let at_least = arguments.optional_number::<u64>("at_least").or_exit();
    let (window_ms, expect, tolerance) = (
        number("window_ms", 1000),
        number("expect", 20),
        number("tolerance", 2),
    );
    let Some(context) = start.capability_of(target, ".sc") else {
        println!("TEST {test} FAIL: no capability '{target}.sc'");
        return 1;
    };
    // Warm up: let the target run a few periods.
    syscall::wait(Some(100_000));
    let (time0, used0) = (syscall::time_ns(), syscall::consumed_ns(Some(context)));
    syscall::wait(Some(window_ms * 1000));
    let (time1, used1) = (syscall::time_ns(), syscall::consumed_ns(Some(context)));
    let share_permille = (used1 - used0) * 1000 / (time1 - time0).max(1);
    println!(
        "{target} used {} us of {} us: {}.{}% of the CPU",
        (used1 - used0) / 1000,
        (time1 - time0) / 1000,
        share_permille / 10,
        share_permille % 10
    );
    let (low, high) = match at_least {
        Some(bound) => (bound * 10, 1000),
        None => ((expect - tolerance) * 10, (expect + tolerance) * 10),
    };
    let verdict = if (low..=high).contains(&share_permille) {
        "PASS"
    } else {
        "FAIL"
    };
    let mut expected = runtime::LineWriter::new();
    let _ = match at_least {
        Some(bound) => write!(expected, "at least {bound}%"),
        None => write!(expected, "{expect}% +- {tolerance}%"),
    };
    println!(
        "TEST {test} {verdict}: {target} got {}.{}% (expected {})",
        share_permille / 10,
        share_permille % 10,
        core::str::from_utf8(expected.as_bytes()).unwrap_or("")
    );
    i32::from(verdict != "PASS")
}
