//! Measures the CPU share of another component from its scheduling
//! context's consumed-time readouts: after a warm-up it sleeps through a
//! window of `window_ms` (default 1000) and divides the other's consumed
//! time by the window. `target` names the observed component (default
//! `spinner`, through the capability `<target>.sc`), `expect` and
//! `tolerance` the expected share in percent (default 20 ± 2).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use runtime::{println, syscall};

runtime::component!(main);

fn main(start: &runtime::Start) -> i32 {
    let arg = |key, default| {
        start
            .arg(key)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let target = start.arg("target").unwrap_or("spinner");
    let (window_ms, expect, tolerance) = (
        arg("window_ms", 1000),
        arg("expect", 20),
        arg("tolerance", 2),
    );
    let mut capability = [0u8; 40];
    let name = {
        let n = target.len().min(32);
        capability[..n].copy_from_slice(&target.as_bytes()[..n]);
        capability[n..n + 3].copy_from_slice(b".sc");
        core::str::from_utf8(&capability[..n + 3]).unwrap_or("")
    };
    let Some(context) = start.capability(name) else {
        println!("TEST budget FAIL: no capability '{name}'");
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
    let low = (expect - tolerance) * 10;
    let high = (expect + tolerance) * 10;
    if (low..=high).contains(&share_permille) {
        println!(
            "TEST budget PASS: {target} got {}.{}% (expected {expect}% +- {tolerance}%)",
            share_permille / 10,
            share_permille % 10
        );
        0
    } else {
        println!(
            "TEST budget FAIL: {target} got {}.{}% (expected {expect}% +- {tolerance}%)",
            share_permille / 10,
            share_permille % 10
        );
        1
    }
}
