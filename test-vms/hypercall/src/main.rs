//! Exercises every hypercall under our hypervisor: IDENTIFY, LOG, YIELD,
//! NO_WORK, STATISTICS (the exits between two calls must be the CPUIDs
//! made between them plus the second call), and an unknown number, which
//! must raise #UD. Without our
//! hypervisor it says so and passes.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use guest_runtime::api::OK;
use guest_runtime::exceptions::INVALID_OPCODE;
use guest_runtime::hypervisor::{self, HYPERCALL_LENGTH, hypercall};
use guest_runtime::{fail, println};

guest_runtime::entry!("hypercall", main);

/// A hypercall number the interface does not define.
const UNKNOWN: u64 = 0x7777;

fn main() -> u32 {
    let found = guest_runtime::detect();
    if !matches!(found, guest_runtime::Hypervisor::Microvisor { .. }) {
        println!("hypercall: running native, skipped");
        println!("TEST hypercall PASS");
        return 0;
    }
    if !found.has_hypercalls() {
        fail(format_args!("the hypervisor does not offer hypercalls"));
    }

    let identity = hypervisor::identify();
    if identity.status != OK {
        fail(format_args!("IDENTIFY answered {:#x}", identity.status));
    }
    println!(
        "hypercall: identify version={} restarts={} memory={:#x}",
        identity.version, identity.restarts, identity.memory
    );
    if identity.version != u64::from(guest_runtime::api::INTERFACE_VERSION) {
        fail(format_args!(
            "IDENTIFY reports version {}, expected {}",
            identity.version,
            guest_runtime::api::INTERFACE_VERSION
        ));
    }

    let status = hypervisor::log("hello through the log hypercall");
    if status != OK {
        fail(format_args!("LOG answered {status:#x}"));
    }
    println!("hypercall: log done");

    let status = hypervisor::yield_now();
    if status != OK {
        fail(format_args!("YIELD answered {status:#x}"));
    }
    println!("hypercall: yield done");

    let (status, slept) = hypervisor::no_work(1000);
    if status != OK {
        fail(format_args!("NO_WORK answered {status:#x}"));
    }
    println!("hypercall: no_work(1000 us) slept {slept} us");

    // Every CPUID exits: 10 of them between two calls are 11 exits.
    let (status, exits_before, _) = hypervisor::statistics();
    if status != OK {
        fail(format_args!("STATISTICS answered {status:#x}"));
    }
    for leaf in 0..10 {
        core::hint::black_box(guest_runtime::arch::cpuid(leaf));
    }
    let (_, exits_after, injected) = hypervisor::statistics();
    println!(
        "hypercall: statistics: {} exits across 10 CPUIDs and the call; {injected} interrupts injected so far",
        exits_after - exits_before
    );
    if exits_after - exits_before != 11 {
        fail(format_args!(
            "STATISTICS counted {} exits across 10 CPUIDs and itself, expected 11",
            exits_after - exits_before
        ));
    }

    let (_, fault) = guest_runtime::catch_fault(HYPERCALL_LENGTH, || hypercall(UNKNOWN, 0, 0, 0));
    match fault {
        Some(INVALID_OPCODE) => println!("hypercall: unknown number raised #UD"),
        Some(vector) => fail(format_args!(
            "unknown number {UNKNOWN:#x} raised vector {vector}, expected #UD"
        )),
        None => fail(format_args!(
            "unknown number {UNKNOWN:#x} did not raise #UD"
        )),
    }
    println!("TEST hypercall PASS");
    0
}
