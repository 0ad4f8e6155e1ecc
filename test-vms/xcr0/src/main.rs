//! Tries to change XCR0, which the CPU shares between every guest and the
//! core. XSETBV must raise #UD while CR4.OSXSAVE is clear; the guest then
//! sets CR4.OSXSAVE behind CPUID's back (which hides XSAVE) and writes the
//! value XCR0 has (allowed: it changes nothing), then x87+SSE+AVX, which
//! must raise #GP and leave XCR0 as it was. On a CPU that ignores the
//! XSETBV intercept (QEMU's TCG does), that last write reaches XCR0: the
//! core finds it changed at the guest's next exit, restores it and its
//! world switcher stops the VM, so this program never reports the write.
//! CPUID's OSXSAVE bit follows CR4 on the way: clear before, set at once
//! after the guest sets CR4.OSXSAVE (with no other exit in between: a
//! CPUID exit does not publish CR4, so its handler must ask for it).
#![no_std]
#![no_main]

use guest_runtime::arch::{self, XCR_INSTRUCTION_LENGTH};
use guest_runtime::exceptions::{GENERAL_PROTECTION, INVALID_OPCODE};
use guest_runtime::{fail, println};

guest_runtime::entry!("xcr0", main);

/// CR4.OSXSAVE.
const CR4_OSXSAVE: u64 = 1 << 18;
/// CPUID.1:ECX.OSXSAVE.
const CPUID_OSXSAVE: u32 = 1 << 27;
/// x87, SSE and AVX state: what a guest enables to use AVX.
const XCR0_AVX: u64 = 0b111;

fn main() -> u32 {
    let (_, fault) = guest_runtime::catch_fault(XCR_INSTRUCTION_LENGTH, || {
        // SAFETY: faults (caught); had it not, x87/SSE/AVX state changes
        // nothing this program relies on (it uses no vector registers).
        unsafe { arch::xsetbv(0, XCR0_AVX) }
    });
    match fault {
        Some(INVALID_OPCODE) => println!("xcr0: xsetbv without CR4.OSXSAVE raised #UD"),
        other => fail(format_args!(
            "xsetbv without CR4.OSXSAVE: {other:?}, expected #UD"
        )),
    }
    let cr4 = arch::read_cr4();
    if arch::cpuid(1).ecx & CPUID_OSXSAVE != 0 {
        fail(format_args!("CPUID reports OSXSAVE with CR4.OSXSAVE clear"));
    }
    let (_, fault) = guest_runtime::catch_fault(arch::WRITE_CR4_LENGTH, || {
        // SAFETY: OSXSAVE only enables XGETBV, XSETBV and XSAVE*.
        unsafe { arch::write_cr4(cr4 | CR4_OSXSAVE) }
    });
    if let Some(vector) = fault {
        println!("xcr0: the CPU has no XSAVE (setting CR4.OSXSAVE raised vector {vector})");
        return 0;
    }
    // No exit between the CR4 write and this CPUID.
    if arch::cpuid(1).ecx & CPUID_OSXSAVE == 0 {
        fail(format_args!(
            "CPUID reports no OSXSAVE right after the guest set CR4.OSXSAVE"
        ));
    }
    println!("xcr0: CPUID's OSXSAVE follows CR4");
    let before = arch::xgetbv(0);
    let (_, fault) = guest_runtime::catch_fault(XCR_INSTRUCTION_LENGTH, || {
        // SAFETY: writes the value XCR0 has.
        unsafe { arch::xsetbv(0, before) }
    });
    if let Some(vector) = fault {
        fail(format_args!(
            "xsetbv of XCR0's own value {before:#x} raised vector {vector}"
        ));
    }
    println!("xcr0: XCR0 is {before:#x}; xsetbv of that value allowed");
    let (_, fault) = guest_runtime::catch_fault(XCR_INSTRUCTION_LENGTH, || {
        // SAFETY: as above.
        unsafe { arch::xsetbv(0, XCR0_AVX) }
    });
    let after = arch::xgetbv(0);
    match fault {
        Some(GENERAL_PROTECTION) if after == before => {
            println!("xcr0: xsetbv {XCR0_AVX:#x} raised #GP, XCR0 still {after:#x}");
        }
        other => fail(format_args!(
            "xsetbv {XCR0_AVX:#x}: {other:?}, XCR0 {before:#x} -> {after:#x}"
        )),
    }
    // SAFETY: restores the CR4 this program started with.
    unsafe { arch::write_cr4(cr4) };
    0
}
