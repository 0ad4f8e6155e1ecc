//! An exit-heavy guest: `spin`'s arithmetic with one CPUID (leaf 0) after
//! every [`CPUID_EVERY`] iterations, forever. CPUID always exits to the
//! hypervisor, so the VM causes an exit every few hundred nanoseconds of
//! its own work: the guest whose cost lies mostly in its exits, for
//! scheduling and accounting tests. Prints `exitloop: iterations=<n>
//! cpuids=<m>` every 2^20 iterations (about 105,000 CPUIDs per line).
//! Never exits by itself.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use guest_runtime::{cpuid, println};

guest_runtime::entry!("exitloop", main);

/// Iterations between two lines.
const REPORT_EVERY: u64 = 1 << 20;
/// Iterations of arithmetic per CPUID.
const CPUID_EVERY: u32 = 10;

fn main() -> u32 {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut iterations: u64 = 0;
    let mut cpuids: u64 = 0;
    let mut until_cpuid = CPUID_EVERY;
    loop {
        for _ in 0..REPORT_EVERY {
            state = guest_runtime::compute_step(state);
            until_cpuid -= 1;
            if until_cpuid == 0 {
                until_cpuid = CPUID_EVERY;
                // The answer feeds the arithmetic, so the CPUID stays.
                state ^= u64::from(cpuid(0).eax);
                cpuids += 1;
            }
        }
        iterations += REPORT_EVERY;
        println!("exitloop: iterations={iterations} cpuids={cpuids}");
    }
}
