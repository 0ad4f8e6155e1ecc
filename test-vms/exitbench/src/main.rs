//! Measures VM-exit round trips in TSC ticks (under QEMU's
//! `-icount shift=0` a tick is an executed instruction, hypervisor
//! included): `cpuid` of the hypervisor leaf, and a one-byte `out` to the
//! UART's scratch register. Each is timed as `rdtsc; <insn>; rdtsc` 100
//! times to warm up and 1000 times to measure; the minimum of an empty
//! `rdtsc; rdtsc` pair is subtracted. Both figures include the one
//! instruction that loads the exiting instruction's operand.
//!
//! Prints `BENCH cpuid-exit <min> ticks/round-trip (median <m>, ...)`, the
//! same for `io-exit` (the build tool's `bench` format), and passes.
#![no_std]
#![no_main]

use core::arch::asm;

use guest_runtime::println;

guest_runtime::entry!("exitbench", main);

const WARM_UP: usize = 100;
const ROUNDS: usize = 1000;
/// The UART's scratch register: an exit under a hypervisor, no effect.
const SCRATCH_PORT: u16 = guest_runtime::api::UART_BASE + 7;

fn main() -> u32 {
    let mut samples = [0u64; ROUNDS];
    let (empty, empty_median) = measure(&mut samples, empty_pair);
    println!("exitbench: empty rdtsc pair ticks_min={empty} ticks_median={empty_median}");
    let (minimum, median) = measure(&mut samples, cpuid_exit);
    println!(
        "BENCH cpuid-exit {} ticks/round-trip (median {}, {ROUNDS} rounds, empty rdtsc pair {empty} subtracted)",
        minimum.saturating_sub(empty),
        median.saturating_sub(empty)
    );
    let (minimum, median) = measure(&mut samples, io_exit);
    println!(
        "BENCH io-exit {} ticks/round-trip (median {}, {ROUNDS} rounds, empty rdtsc pair {empty} subtracted)",
        minimum.saturating_sub(empty),
        median.saturating_sub(empty)
    );
    println!("TEST exitbench PASS");
    0
}

/// Warms up, then fills `samples`; returns their minimum and median.
fn measure(samples: &mut [u64; ROUNDS], probe: fn() -> u64) -> (u64, u64) {
    for _ in 0..WARM_UP {
        probe();
    }
    for sample in samples.iter_mut() {
        *sample = probe();
    }
    samples.sort_unstable();
    (samples[0], samples[ROUNDS / 2])
}

/// Combines two `rdtsc` results into the difference.
fn ticks(low_before: u32, high_before: u32, low_after: u32, high_after: u32) -> u64 {
    let before = (u64::from(high_before) << 32) | u64::from(low_before);
    let after = (u64::from(high_after) << 32) | u64::from(low_after);
    after.wrapping_sub(before)
}

/// `rdtsc; rdtsc` with nothing between but saving the first result.
fn empty_pair() -> u64 {
    let (low, high, low_after, high_after): (u32, u32, u32, u32);
    // SAFETY: RDTSC and register moves only.
    unsafe {
        asm!(
            "rdtsc",
            "mov {low:e}, eax",
            "mov {high:e}, edx",
            "rdtsc",
            low = out(reg) low,
            high = out(reg) high,
            out("eax") low_after,
            out("edx") high_after,
            options(nomem, nostack),
        );
    }
    ticks(low, high, low_after, high_after)
}

/// `rdtsc; cpuid(0x40000000); rdtsc`.
fn cpuid_exit() -> u64 {
    let (low, high, low_after, high_after): (u32, u32, u32, u32);
    // SAFETY: RDTSC and CPUID only read processor state; rbx (reserved by
    // LLVM) is exchanged with a scratch register around them.
    unsafe {
        asm!(
            "xchg {save}, rbx",
            "rdtsc",
            "mov {low:e}, eax",
            "mov {high:e}, edx",
            "mov eax, {leaf}",
            "cpuid",
            "rdtsc",
            "xchg {save}, rbx",
            leaf = const guest_runtime::api::CPUID_BASE,
            save = out(reg) _,
            low = out(reg) low,
            high = out(reg) high,
            out("eax") low_after,
            out("ecx") _,
            out("edx") high_after,
            options(nomem, nostack),
        );
    }
    ticks(low, high, low_after, high_after)
}

/// `rdtsc; out 0x3ff, al; rdtsc`.
fn io_exit() -> u64 {
    let (low, high, low_after, high_after): (u32, u32, u32, u32);
    // SAFETY: the UART's scratch register holds a byte for software and
    // drives nothing.
    unsafe {
        asm!(
            "rdtsc",
            "mov {low:e}, eax",
            "mov {high:e}, edx",
            "mov edx, {port}",
            "out dx, al",
            "rdtsc",
            port = const SCRATCH_PORT,
            low = out(reg) low,
            high = out(reg) high,
            out("eax") low_after,
            out("edx") high_after,
            options(nomem, nostack),
        );
    }
    ticks(low, high, low_after, high_after)
}
