//! An idle enlightened guest: it tells the hypervisor it has no work
//! through the guest-hints page ([`guest_runtime::hints`]) instead of a
//! hypercall, and then spins without a single VM exit.
//!
//! Under our hypervisor offering [`guest_runtime::api::features::HINTS`]
//! it prints `enlightened: hints page at 0xfeb00000`, takes the TSC's rate
//! ([`guest_runtime::clock`]: the paravirtual clock), computes `spin`'s
//! arithmetic for [`WORK_MICROSECONDS`] by the TSC, reads the VM's exit
//! count (STATISTICS, e0), writes NO_WORK = 1, spins for
//! [`IDLE_MICROSECONDS`] by the TSC doing nothing but RDTSC and PAUSE (no
//! port I/O, CPUID, hypercall or line printed: nothing that exits), writes
//! NO_WORK = 0 and reads the exit count again (e1). The exits taken while
//! idle are e1 - e0 - 1 (the second STATISTICS call is one). It prints
//! `enlightened: idle for <ms> ms by the TSC with no work in its hints
//! page: <n> exits` (the time from writing NO_WORK = 1 to the end of the
//! spin) and
//! `enlightened: working again`, then `enlightened: urgent work (priority
//! 250)`, writes PRIORITY = 250, computes for [`WORK_MICROSECONDS`] more
//! and writes PRIORITY = 0. Last line `TEST enlightened PASS` when no exit
//! was taken while idle, else `TEST enlightened FAIL: <n> exits while
//! idle` (exit status 1).
//!
//! While it says it has no work the controller gives the VM almost no CPU
//! (about 0.5%): the idle spin is wall time by the TSC, and what follows
//! it runs slowly until the controller notices the 0 (within about 100
//! ms). Nothing here times out on that.
//!
//! Without the page (natively, under another hypervisor, or under ours
//! without the HINTS feature) it prints `enlightened: no hints page
//! (running native)` (or `(another hypervisor)`, `(no HINTS feature)`),
//! computes for [`NATIVE_WORK_MICROSECONDS`] and passes.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::hint::black_box;

use guest_runtime::api::OK;
use guest_runtime::clock::{self, TscRate};
use guest_runtime::hints::Hints;
use guest_runtime::hypervisor;
use guest_runtime::{Hypervisor, fail, println, rdtsc, rdtsc_ordered, spin_ticks};

guest_runtime::entry!("enlightened", main);

/// Each stretch of work, by the TSC.
const WORK_MICROSECONDS: u64 = 1_000_000;
/// The idle spin with NO_WORK = 1, by the TSC.
const IDLE_MICROSECONDS: u64 = 3_000_000;
/// The work done without the page.
const NATIVE_WORK_MICROSECONDS: u64 = 100_000;
/// The priority of the urgent work (at or above
/// [`guest_runtime::api::hints::URGENT`]).
const URGENT_PRIORITY: u32 = 250;

fn main() -> u32 {
    let found = guest_runtime::detect();
    let Some(hints) = Hints::find() else {
        let why = match found {
            Hypervisor::Native => "running native",
            Hypervisor::Other { .. } => "another hypervisor",
            Hypervisor::Microvisor { .. } => "no HINTS feature",
        };
        println!("enlightened: no hints page ({why})");
        let rate = clock::tsc_rate();
        compute(&rate, NATIVE_WORK_MICROSECONDS);
        println!("TEST enlightened PASS");
        return 0;
    };
    if !found.has_hypercalls() {
        fail(format_args!(
            "the hints page is offered without hypercalls: no STATISTICS to count exits with"
        ));
    }
    println!("enlightened: hints page at {:#x}", hints.address());
    let rate = clock::tsc_rate();
    compute(&rate, WORK_MICROSECONDS);

    // From here to the second STATISTICS call: nothing that exits.
    let before = exits();
    hints.set_no_work(true);
    let start = rdtsc_ordered();
    spin_ticks(rate.ticks(IDLE_MICROSECONDS));
    let end = rdtsc_ordered();
    // Work again first: the call after it runs at full speed once the
    // controller sees the 0 (it is one exit, counted below).
    hints.set_no_work(false);
    let after = exits();

    let idle_exits = after.wrapping_sub(before).saturating_sub(1);
    println!(
        "enlightened: idle for {} ms by the TSC with no work in its hints page: {idle_exits} exits",
        rate.microseconds(end - start) / 1000
    );
    println!("enlightened: working again");
    println!("enlightened: urgent work (priority {URGENT_PRIORITY})");
    hints.set_priority(URGENT_PRIORITY);
    compute(&rate, WORK_MICROSECONDS);
    hints.set_priority(0);

    if idle_exits != 0 {
        fail(format_args!("{idle_exits} exits while idle"));
    }
    println!("TEST enlightened PASS");
    0
}

/// The VM's exits so far (STATISTICS), failing the test unless it answers
/// OK.
fn exits() -> u64 {
    let (status, exits, _) = hypervisor::statistics();
    if status != OK {
        fail(format_args!("STATISTICS answered {status:#x}"));
    }
    exits
}

/// `spin`'s arithmetic until `microseconds` have passed by the TSC (read
/// every 16 iterations).
fn compute(rate: &TscRate, microseconds: u64) {
    let end = rdtsc_ordered() + rate.ticks(microseconds);
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    while rdtsc() < end {
        for _ in 0..16 {
            state = guest_runtime::compute_step(state);
        }
    }
    black_box(state);
}
