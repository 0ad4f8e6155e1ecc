//! Tries to reach outside the VM: an unassigned I/O port (read and write),
//! an MSR nobody owns (read and write must raise #GP), and memory beyond
//! the VM's 2 MiB. Under our hypervisor the VM is stopped at that read;
//! if the read returns, the test fails.
#![no_std]
#![no_main]

use guest_runtime::exceptions::GENERAL_PROTECTION;
use guest_runtime::{arch, fail, println};

guest_runtime::entry!("escape", main);

/// A port no device of a VM decodes (the PS/2 controller's on a PC).
const UNASSIGNED_IN_PORT: u16 = 0x60;
/// A port nothing decodes.
const UNASSIGNED_OUT_PORT: u16 = 0x1234;
/// An MSR no CPU defines.
const UNKNOWN_MSR: u32 = 0xc001_1234;
/// Bytes of `rdmsr` and `wrmsr`.
const MSR_INSTRUCTION_LENGTH: u8 = 2;
/// 1 GiB: inside the guest's identity map, outside its 2 MiB of memory.
const OUTSIDE: u64 = 0x4000_0000;

fn main() -> u32 {
    // SAFETY: no device a test VM uses sits at either port; under our
    // hypervisor both are unassigned.
    let value = unsafe {
        let value = arch::inb(UNASSIGNED_IN_PORT);
        arch::outb(UNASSIGNED_OUT_PORT, 0x5a);
        value
    };
    println!("escape: port {UNASSIGNED_IN_PORT:#x} read {value:#04x}");
    println!("escape: port {UNASSIGNED_OUT_PORT:#x} written");

    let (_, fault) =
        guest_runtime::catch_fault(MSR_INSTRUCTION_LENGTH, || arch::rdmsr(UNKNOWN_MSR));
    check_gp("rdmsr", fault);
    let (_, fault) = guest_runtime::catch_fault(MSR_INSTRUCTION_LENGTH, || {
        // SAFETY: the MSR does not exist; the write faults (#GP, caught)
        // and changes nothing.
        unsafe { arch::wrmsr(UNKNOWN_MSR, 0x1234_5678) }
    });
    check_gp("wrmsr", fault);

    println!("escape: reading outside guest memory at {OUTSIDE:#x}");
    let pointer = OUTSIDE as *mut u64;
    // SAFETY: the runtime's page tables identity-map the first 4 GiB, so
    // the access itself is mapped; the address holds no Rust object (the
    // image ends below 2 MiB). What happens is the test: the hypervisor
    // must stop the VM here.
    let value = unsafe { pointer.read_volatile() };
    println!("escape: read returned {value:#x}");
    // SAFETY: as for the read.
    unsafe { pointer.write_volatile(0x5afe_5afe_5afe_5afe) };
    println!("escape: write returned");
    fail(format_args!("read outside memory returned"))
}

/// Fails the test unless `fault` is a #GP.
fn check_gp(what: &str, fault: Option<u8>) {
    match fault {
        Some(GENERAL_PROTECTION) => {
            println!("escape: {what} {UNKNOWN_MSR:#x} raised #GP");
        }
        Some(vector) => fail(format_args!(
            "{what} {UNKNOWN_MSR:#x} raised vector {vector}, expected #GP"
        )),
        None => fail(format_args!("{what} {UNKNOWN_MSR:#x} did not fault")),
    }
}
