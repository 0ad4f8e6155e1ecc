//! Computes as `spin` does and flushes the caches with WBINVD after every
//! [`FLUSH_EVERY`] (2^16) iterations, forever: a guest that hurts its
//! neighbours through the shared caches (every modified line written back,
//! every line dropped) and, where the hypervisor intercepts WBINVD, exits
//! at each flush. Prints `wbinvd: iterations=<n> flushes=<m>` every 2^24
//! iterations (256 flushes per line). Never exits by itself.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use guest_runtime::arch::wbinvd;
use guest_runtime::println;

guest_runtime::entry!("wbinvd", main);

/// Iterations between two lines.
const REPORT_EVERY: u64 = 1 << 24;
/// Iterations between two flushes.
const FLUSH_EVERY: u64 = 1 << 16;

fn main() -> u32 {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut iterations: u64 = 0;
    let mut flushes: u64 = 0;
    loop {
        for _ in 0..REPORT_EVERY / FLUSH_EVERY {
            for _ in 0..FLUSH_EVERY {
                state = guest_runtime::compute_step(state);
            }
            wbinvd();
            flushes += 1;
        }
        iterations += REPORT_EVERY;
        println!("wbinvd: iterations={iterations} flushes={flushes}");
    }
}
