//! Measures the CPU share of another component from its scheduling
//! context's consumed-time readouts: after a warm-up of `delay_ms`
//! (default 100) it sleeps through a window of `window_ms` (default 1000)
//! and divides the other's consumed time by the window. `target` names the
//! observed component (default `spinner`, through the capability
//! `<target>.sc`), `expect` and `tolerance` the expected share in percent
//! (default 20 ± 2), or `at_least` a lower bound or `at_most` an upper
//! bound instead. `test` names the
//! result line (default `budget`).
//!
//! With `other=NAME` it measures two scheduling contexts, `<target>.sc`
//! and `<other>.sc`, over the same window and checks the ratio of their
//! consumed times, target over other, against `ratio` in hundredths
//! (`ratio=200` is 2.00) within `tolerance` percent of it (default 2).
//! `other` and `ratio` go together, and neither goes with `expect` or
//! `at_least`; a contradiction ends the component with exit code 2. The
//! ratio's error is also printed as `BENCH <test>-error <e> %` for the
//! benchmark table.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::fmt::Write;

use runtime::arguments::{EXIT_BAD_ARGUMENT, OrExit};
use runtime::{println, syscall};

runtime::component!(main);

fn main(start: &runtime::Start) -> i32 {
    let arguments = start
        .arguments(&[
            "target",
            "other",
            "test",
            "delay_ms",
            "window_ms",
            "expect",
            "tolerance",
            "at_least",
            "at_most",
            "ratio",
        ])
        .or_exit();
    let number = |key, default| arguments.number::<u64>(key, default).or_exit();
    let target = arguments.text("target").unwrap_or("spinner");
    let other = arguments.text("other");
    let test = arguments.text("test").unwrap_or("budget");
    let at_least = arguments.optional_number::<u64>("at_least").or_exit();
    let at_most = arguments.optional_number::<u64>("at_most").or_exit();
    if let (Some(least), Some(most)) = (at_least, at_most) {
        println!(
            "arguments 'at_least={least}' and 'at_most={most}': one bound at a time (expect=P tolerance=T for both)"
        );
        return EXIT_BAD_ARGUMENT;
    }
    let ratio = arguments.optional_number::<u64>("ratio").or_exit();
    let (delay_ms, window_ms, expect, tolerance) = (
        number("delay_ms", 100),
        number("window_ms", 1000),
        number("expect", 20),
        number("tolerance", 2),
    );
    let ratio_word = arguments.text("ratio").unwrap_or("");
    let share_key = ["expect", "at_least", "at_most"]
        .into_iter()
        .find(|key| arguments.text(key).is_some());
    match (other, ratio, share_key) {
        (Some(name), None, _) => {
            println!(
                "argument 'other={name}': needs ratio=P too ({target}'s time over {name}'s, in hundredths)"
            );
            return EXIT_BAD_ARGUMENT;
        }
        (None, Some(_), _) => {
            println!(
                "argument 'ratio={ratio_word}': needs other=NAME too (the context to divide {target}'s time by)"
            );
            return EXIT_BAD_ARGUMENT;
        }
        (Some(_), Some(_), Some(key)) => {
            println!(
                "argument 'ratio={ratio_word}': does not go with '{key}={}' (a ratio of two contexts, not a share of the CPU)",
                arguments.text(key).unwrap_or("")
            );
            return EXIT_BAD_ARGUMENT;
        }
        _ => {}
    }
    let Some(context) = start.capability_of(target, ".sc") else {
        println!("TEST {test} FAIL: no capability '{target}.sc'");
        return 1;
    };
    let second = match other {
        Some(name) => match start.capability_of(name, ".sc") {
            Some(handle) => Some((name, handle)),
            None => {
                println!("TEST {test} FAIL: no capability '{name}.sc'");
                return 1;
            }
        },
        None => None,
    };
    // Warm up: let the target run a few periods.
    syscall::wait(Some(delay_ms.saturating_mul(1000)));
    let consumed = |handle: Option<u64>| handle.map_or(0, |h| syscall::consumed_ns(Some(h)));
    let second_handle = second.map(|(_, handle)| handle);
    let (time0, used0, other0) = (
        syscall::time_ns(),
        syscall::consumed_ns(Some(context)),
        consumed(second_handle),
    );
    syscall::wait(Some(window_ms.saturating_mul(1000)));
    let (time1, used1, other1) = (
        syscall::time_ns(),
        syscall::consumed_ns(Some(context)),
        consumed(second_handle),
    );
    if let (Some((other, _)), Some(ratio)) = (second, ratio) {
        let measured = Measured {
            used: used1 - used0,
            other_used: other1 - other0,
            elapsed: time1 - time0,
        };
        return check_ratio(test, target, other, &measured, ratio, tolerance);
    }
    let share_permille = (used1 - used0) * 1000 / (time1 - time0).max(1);
    println!(
        "{target} used {} us of {} us: {}.{}% of the CPU",
        (used1 - used0) / 1000,
        (time1 - time0) / 1000,
        share_permille / 10,
        share_permille % 10
    );
    let (low, high) = match (at_least, at_most) {
        (Some(bound), _) => (bound * 10, 1000),
        (_, Some(bound)) => (0, bound * 10),
        _ => (
            expect.saturating_sub(tolerance) * 10,
            (expect + tolerance) * 10,
        ),
    };
    let verdict = if (low..=high).contains(&share_permille) {
        "PASS"
    } else {
        "FAIL"
    };
    let mut expected = runtime::LineWriter::new();
    let _ = match (at_least, at_most) {
        (Some(bound), _) => write!(expected, "at least {bound}%"),
        (_, Some(bound)) => write!(expected, "at most {bound}%"),
        _ => write!(expected, "{expect}% +- {tolerance}%"),
    };
    println!(
        "TEST {test} {verdict}: {target} got {}.{}% (expected {})",
        share_permille / 10,
        share_permille % 10,
        core::str::from_utf8(expected.as_bytes()).unwrap_or("")
    );
    i32::from(verdict != "PASS")
}

/// Two contexts' consumed time over one window, in nanoseconds.
struct Measured {
    used: u64,
    other_used: u64,
    elapsed: u64,
}

/// Prints both contexts' times and their ratio and checks it: PASS when
/// |used / other_used - ratio / 100| <= ratio / 100 * tolerance / 100.
/// Returns the exit code.
fn check_ratio(
    test: &str,
    target: &str,
    other: &str,
    measured: &Measured,
    ratio: u64,
    tolerance: u64,
) -> i32 {
    let (x, y) = (u128::from(measured.used), u128::from(measured.other_used));
    let mut shown = runtime::LineWriter::new();
    let _ = match (x * 100 + y / 2).checked_div(y) {
        Some(hundredths) => write!(shown, "{}.{:02}", hundredths / 100, hundredths % 100),
        None => write!(shown, "none"),
    };
    let shown = core::str::from_utf8(shown.as_bytes()).unwrap_or("");
    println!(
        "{target} used {} us and {other} used {} us of {} us: ratio {shown}",
        measured.used / 1000,
        measured.other_used / 1000,
        measured.elapsed / 1000
    );
    // Scaled by 100 * 100 * y: |x * 10000 - ratio * 100 * y| <= ratio * tolerance * y.
    let (p, t) = (u128::from(ratio), u128::from(tolerance));
    let pass = y != 0 && (x * 10_000).abs_diff(p * 100 * y) <= p * t * y;
    let verdict = if pass { "PASS" } else { "FAIL" };
    if y != 0 && p != 0 {
        // The error in thousandths of a percent, and the ratio in
        // thousandths, for the benchmark table.
        let error = (x * 10_000).abs_diff(p * 100 * y) * 100_000 / (p * 100 * y);
        let thousandths = x * 1000 / y;
        println!(
            "BENCH {test}-error {}.{:03} % (ratio {}.{:03} against {}.{:02}, over {} ms)",
            error / 1000,
            error % 1000,
            thousandths / 1000,
            thousandths % 1000,
            ratio / 100,
            ratio % 100,
            measured.elapsed / 1_000_000
        );
    }
    println!(
        "TEST {test} {verdict}: {target}/{other} got {shown} (expected {}.{:02} +- {tolerance}%)",
        ratio / 100,
        ratio % 100
    );
    i32::from(!pass)
}
