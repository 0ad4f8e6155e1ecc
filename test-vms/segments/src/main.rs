//! Changes its segment state without an exit, makes an exit that does not
//! need it (CPUID, an `out` to the UART's scratch register, RDMSR of the
//! APIC base: the exits after which the hypervisor may leave segment state
//! unpublished), then reads the local APIC's version register through the
//! changed segment: an MMIO access whose emulation depends on it (the
//! decoder computes the address from the segment's base and checks it
//! against the faulting one). A hypervisor that emulated the access with
//! stale segment state would fail it (or stop the VM).
//!
//! - `segments: FS base`: 200 rounds of WRMSR `FS_BASE` (guest-owned, no
//!   exit) with a new base that is never page-aligned, a fast exit, and
//!   `mov eax, fs:[0xfee00030 - base]`;
//! - `segments: GDT`: 200 rounds of a new GDT (`lgdt`, no exit) whose
//!   data descriptor at 0x20 has a new base, `mov fs, 0x20`, a fast exit,
//!   the same read, and SGDT, which must give the table loaded (an exit
//!   must not write stale descriptor-table state back);
//!
//! each compared with the version read at the flat address first. Then
//! the boot GDT and a zero FS base are put back. Prints one line per part
//! and passes; runs natively too.
#![no_std]
#![no_main]

use core::arch::asm;

use guest_runtime::arch::{cpuid, outb, rdmsr, wrmsr};
use guest_runtime::interrupts::lapic_read;
use guest_runtime::{fail, println};

guest_runtime::entry!("segments", main);

const ROUNDS: u64 = 200;
/// The local APIC's version register (guest-physical, identity-mapped).
const VERSION: u64 = 0xfee0_0030;
const FS_BASE: u32 = 0xc000_0100;
const APIC_BASE_MSR: u32 = 0x1b;
/// The UART's scratch register: an exit under a hypervisor, no effect.
const SCRATCH_PORT: u16 = guest_runtime::api::UART_BASE + 7;
/// The selector of the data descriptor this test adds.
const DATA: u16 = 0x20;

/// A GDT: the boot runtime's four descriptors and one data descriptor.
#[repr(C, align(16))]
struct Gdt([u64; 5]);

static mut GDT: Gdt = Gdt([0; 5]);

/// `lgdt`/`sgdt`'s operand.
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct Pointer {
    limit: u16,
    base: u64,
}

fn main() -> u32 {
    let flat = lapic_read(0x30);
    println!("segments: LAPIC version {flat:#x} at the flat address");
    for round in 0..ROUNDS {
        let base = 0x1000_0000 + round * 0x38 + 3;
        // SAFETY: FS is used by nothing else in this program.
        unsafe { wrmsr(FS_BASE, base) };
        fast_exit(round);
        let value = read_fs(VERSION.wrapping_sub(base));
        if value != flat {
            fail(format_args!(
                "round {round}: FS base {base:#x}: read {value:#x}, expected {flat:#x}"
            ));
        }
    }
    println!("segments: FS base: {ROUNDS} rounds read the version through FS");

    let boot = sgdt();
    for round in 0..ROUNDS {
        let base = 0x100 + round * 0x10 + 5;
        let pointer = load_gdt(boot, base as u32);
        // SAFETY: DATA is a present, writable data descriptor of the
        // table just loaded; FS is used by nothing else.
        unsafe { asm!("mov fs, {0:x}", in(reg) DATA, options(nostack, preserves_flags)) };
        fast_exit(round);
        let value = read_fs(VERSION.wrapping_sub(base));
        if value != flat {
            fail(format_args!(
                "GDT round {round}: FS base {base:#x}: read {value:#x}, expected {flat:#x}"
            ));
        }
        let now = sgdt();
        let (limit, at, want_limit, want_at) = (now.limit, now.base, pointer.limit, pointer.base);
        if (limit, at) != (want_limit, want_at) {
            fail(format_args!(
                "GDT round {round}: GDTR {at:#x}/{limit:#x}, loaded {want_at:#x}/{want_limit:#x}"
            ));
        }
    }
    // SAFETY: the boot runtime's table and a null FS, as before.
    unsafe {
        asm!("lgdt [{0}]", in(reg) &boot, options(nostack, preserves_flags));
        asm!("mov fs, {0:x}", in(reg) 0u16, options(nostack, preserves_flags));
        wrmsr(FS_BASE, 0);
    }
    println!("segments: GDT: {ROUNDS} rounds of a new table read the version through FS");
    println!("TEST segments PASS");
    0
}

/// An exit after which segment state may be left unpublished.
fn fast_exit(round: u64) {
    match round % 3 {
        0 => {
            cpuid(0);
        }
        // SAFETY: the scratch register drives nothing.
        1 => unsafe { outb(SCRATCH_PORT, round as u8) },
        _ => {
            rdmsr(APIC_BASE_MSR);
        }
    }
}

/// The 32-bit word at `offset` in FS.
fn read_fs(offset: u64) -> u32 {
    let value: u32;
    // SAFETY: the caller's FS base plus `offset` is the LAPIC's version
    // register, identity-mapped device memory; reading it has no effect.
    unsafe {
        asm!(
            "mov {value:e}, dword ptr fs:[{offset}]",
            offset = in(reg) offset,
            value = out(reg) value,
            options(nostack, readonly, preserves_flags),
        );
    }
    value
}

/// The GDTR.
fn sgdt() -> Pointer {
    let mut pointer = Pointer::default();
    // SAFETY: SGDT stores 10 bytes into `pointer`.
    unsafe {
        asm!("sgdt [{0}]", in(reg) &mut pointer, options(nostack, preserves_flags));
    }
    pointer
}

/// Loads a GDT of the boot table's descriptors (read from `boot`) and a
/// flat 4 GiB data descriptor at [`DATA`] with base `base`; returns what
/// was loaded.
fn load_gdt(boot: Pointer, base: u32) -> Pointer {
    let data = 0x00cf_9300_0000_ffff_u64
        | u64::from(base & 0x00ff_ffff) << 16
        | u64::from(base >> 24) << 56;
    let table = core::ptr::addr_of_mut!(GDT);
    // SAFETY: the boot table has 4 descriptors (its limit says so, 31)
    // and stays mapped; GDT is this program's alone and the table loaded
    // is complete before `lgdt`.
    unsafe {
        let old = boot.base as *const u64;
        for i in 0..4 {
            (*table).0[i] = old.add(i).read();
        }
        (*table).0[4] = data;
    }
    let pointer = Pointer {
        limit: 5 * 8 - 1,
        base: table as u64,
    };
    // SAFETY: the table holds the boot descriptors in their places (the
    // selectors in use stay valid) and one more.
    unsafe { asm!("lgdt [{0}]", in(reg) &pointer, options(nostack, preserves_flags)) };
    pointer
}
