//! Computes forever without causing exits (no I/O but a line every 2^24
//! iterations: `spin: iterations=<n>`). Never exits by itself; it is the
//! guest a scheduler must preempt.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use guest_runtime::println;

guest_runtime::entry!("spin", main);

/// Iterations between two lines.
const REPORT_EVERY: u64 = 1 << 24;

fn main() -> u32 {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut iterations: u64 = 0;
    loop {
        for _ in 0..REPORT_EVERY {
            state = guest_runtime::compute_step(state);
        }
        iterations += REPORT_EVERY;
        println!("spin: iterations={iterations}");
    }
}
