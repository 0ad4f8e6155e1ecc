//! Direct CPU access: port I/O, model-specific and control registers,
//! CPUID feature discovery, halting.
//!
//! Each function wraps one instruction. They are safe to call where the
//! instruction cannot break the core's memory safety by itself (reads,
//! port output to devices the core owns); writes that change paging or
//! privileged state are `unsafe` with their contract stated.

use core::arch::asm;

/// Writes a byte to an I/O port.
pub fn out8(port: u16, value: u8) {
    // SAFETY: port output does not touch memory; the core only writes ports
    // of devices it owns (UART, PIC, debug-exit).
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads a byte from an I/O port.
pub fn in8(port: u16) -> u8 {
    let value: u8;
    // SAFETY: port input does not touch memory.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes a 16-bit word to an I/O port.
pub fn out16(port: u16, value: u16) {
    // SAFETY: as `out32`.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads a 16-bit word from an I/O port.
pub fn in16(port: u16) -> u16 {
    let value: u16;
    // SAFETY: port input does not touch memory.
    unsafe {
        asm!("in ax, dx", in("dx") port, out("ax") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes a 32-bit word to an I/O port.
pub fn out32(port: u16, value: u32) {
    // SAFETY: port output does not touch memory; the core only writes ports
    // of devices it owns (here the PCI configuration ports).
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads a 32-bit word from an I/O port.
pub fn in32(port: u16) -> u32 {
    let value: u32;
    // SAFETY: port input does not touch memory.
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Reads a model-specific register.
pub fn read_msr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: rdmsr reads a register; callers name MSRs that exist on every
    // x86-64 CPU (EFER, STAR, LSTAR, FMASK, GS bases).
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags))
    };
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes a model-specific register.
///
/// # Safety
/// The value must be valid for the MSR and must not break the core's
/// invariants (e.g. the system-call entry point must be the real one).
pub unsafe fn write_msr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the value is appropriate.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags));
    }
}

/// MSR numbers used by the core.
pub mod msr {
    pub const EFER: u32 = 0xc000_0080;
    pub const STAR: u32 = 0xc000_0081;
    pub const LSTAR: u32 = 0xc000_0082;
    pub const FMASK: u32 = 0xc000_0084;
    pub const GS_BASE: u32 = 0xc000_0101;
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    pub const TSC_AUX: u32 = 0xc000_0103;
}

/// EFER bits.
pub mod efer {
    pub const SYSCALL: u64 = 1 << 0;
}

/// CR4 bits.
pub mod cr4 {
    pub const GLOBAL_PAGES: u64 = 1 << 7;
    /// FXSAVE/FXRSTOR include the SSE registers (the guests' state).
    pub const OSFXSR: u64 = 1 << 9;
    /// XGETBV, XSETBV and XSAVE* are enabled (the core uses XGETBV to
    /// check XCR0 after guests run).
    pub const OSXSAVE: u64 = 1 << 18;
    pub const SMEP: u64 = 1 << 20;
    pub const SMAP: u64 = 1 << 21;
}

/// Executes CPUID.
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let result = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [result.eax, result.ebx, result.ecx, result.edx]
}

/// The CPU features the core cares about.
#[derive(Clone, Copy, Debug)]
pub struct Features {
    pub vendor: [u8; 12],
    pub no_execute: bool,
    pub smep: bool,
    pub smap: bool,
    pub global_pages: bool,
    pub svm: bool,
    pub vmx: bool,
    /// The local APIC timer has TSC-deadline mode.
    pub tsc_deadline: bool,
}

impl Features {
    /// Reads the features with CPUID.
    pub fn detect() -> Self {
        let [max, b, c, d] = cpuid(0, 0);
        let mut vendor = [0; 12];
        vendor[..4].copy_from_slice(&b.to_le_bytes());
        vendor[4..8].copy_from_slice(&d.to_le_bytes());
        vendor[8..].copy_from_slice(&c.to_le_bytes());
        let [_, _, leaf1_ecx, leaf1_edx] = cpuid(1, 0);
        let leaf7_ebx = if max >= 7 { cpuid(7, 0)[1] } else { 0 };
        let extended_max = cpuid(0x8000_0000, 0)[0];
        let [_, _, ext_ecx, ext_edx] = if extended_max >= 0x8000_0001 {
            cpuid(0x8000_0001, 0)
        } else {
            [0; 4]
        };
        Self {
            vendor,
            no_execute: ext_edx & (1 << 20) != 0,
            smep: leaf7_ebx & (1 << 7) != 0,
            smap: leaf7_ebx & (1 << 20) != 0,
            global_pages: leaf1_edx & (1 << 13) != 0,
            svm: ext_ecx & (1 << 2) != 0,
            vmx: leaf1_ecx & (1 << 5) != 0,
            tsc_deadline: leaf1_ecx & (1 << 24) != 0,
        }
    }

    /// The vendor string.
    pub fn vendor(&self) -> &str {
        core::str::from_utf8(&self.vendor).unwrap_or("unknown")
    }
}

/// Reads CR2 (the faulting address of the last page fault).
pub fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR3.
pub fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Loads CR3.
///
/// # Safety
/// `root` must be a valid PML4 that maps the core (code, stack, data) at
/// the same addresses as the current one.
pub unsafe fn write_cr3(root: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("mov cr3, {}", in(reg) root, options(nostack, preserves_flags)) }
}

/// Reads CR4.
pub fn read_cr4() -> u64 {
    let value: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Loads CR4.
///
/// # Safety
/// Only bits the CPU supports may be set, and enabling SMAP/SMEP requires
/// that the core not touch user pages afterwards.
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack, preserves_flags)) }
}

/// CR0 bits.
pub mod cr0 {
    /// x87 instructions trap: must be clear for FXSAVE/FXRSTOR.
    pub const EMULATION: u64 = 1 << 2;
    /// The next x87/SSE instruction traps: the core switches FPU state
    /// eagerly, so it is kept clear.
    pub const TASK_SWITCHED: u64 = 1 << 3;
}

/// Reads CR0.
pub fn read_cr0() -> u64 {
    let value: u64;
    // SAFETY: reading CR0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Loads CR0.
///
/// # Safety
/// Must keep paging and protection on as the core set them up.
pub unsafe fn write_cr0(value: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("mov cr0, {}", in(reg) value, options(nostack, preserves_flags)) }
}

/// The x87 and SSE state FXSAVE stores: 512 bytes, 16-byte aligned.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct FpuState(pub [u8; 512]);

impl FpuState {
    /// The state after reset (FNINIT, default MXCSR): control word 0x37f,
    /// MXCSR 0x1f80, everything else zero.
    pub const RESET: Self = {
        let mut bytes = [0u8; 512];
        bytes[0] = 0x7f;
        bytes[1] = 0x03;
        bytes[24] = 0x80;
        bytes[25] = 0x1f;
        Self(bytes)
    };
}

/// Stores the CPU's x87/SSE registers into `state`.
pub fn fxsave(state: &mut FpuState) {
    // SAFETY: `state` is 512 writable, 16-byte aligned bytes; CR0.EM and
    // CR0.TS are clear (boot), so FXSAVE cannot trap.
    unsafe {
        asm!("fxsave64 [{}]", in(reg) state.0.as_mut_ptr(), options(nostack, preserves_flags))
    }
}

/// Loads the CPU's x87/SSE registers from `state`.
pub fn fxrstor(state: &FpuState) {
    // SAFETY: `state` is 512 readable, 16-byte aligned bytes written by
    // FXSAVE or `FpuState::RESET` (its reserved MXCSR bits are clear, so
    // FXRSTOR cannot raise #GP); CR0.EM and CR0.TS are clear.
    unsafe { asm!("fxrstor64 [{}]", in(reg) state.0.as_ptr(), options(nostack, preserves_flags)) }
}

/// Reads extended control register `index`.
///
/// # Safety
/// CR4.OSXSAVE must be set and `index` one the CPU has (0 always is).
pub unsafe fn xgetbv(index: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: guaranteed by the caller; XGETBV only reads.
    unsafe {
        asm!("xgetbv", in("ecx") index, out("eax") low, out("edx") high,
            options(nomem, nostack, preserves_flags));
    }
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes XCR0.
///
/// # Safety
/// CR4.OSXSAVE must be set and `value` a set of state components the CPU
/// supports with x87 included.
pub unsafe fn xsetbv0(value: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("xsetbv", in("ecx") 0u32, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nomem, nostack, preserves_flags));
    }
}

/// An XSAVE area's legacy region and header with every component in its
/// initial state (XSTATE_BV 0) and the default MXCSR, which standard-form
/// XRSTOR loads when SSE or AVX state is requested.
#[repr(C, align(64))]
struct InitialXsave([u8; 576]);

static INITIAL_XSAVE: InitialXsave = {
    let mut bytes = [0u8; 576];
    bytes[24] = 0x80;
    bytes[25] = 0x1f;
    InitialXsave(bytes)
};

/// Puts the state components in `components` into their initial state
/// (zeroed registers), erasing what a guest left in them.
///
/// # Safety
/// CR4.OSXSAVE must be set and `components` a subset of XCR0.
pub unsafe fn xrstor_initial(components: u64) {
    // SAFETY: the area is 64-byte aligned, readable, in standard form with
    // XSTATE_BV and XCOMP_BV zero and a valid MXCSR, so XRSTOR only
    // initializes the requested components (a subset of XCR0, the
    // caller's contract) and cannot fault.
    unsafe {
        asm!("xrstor64 [{}]", in(reg) INITIAL_XSAVE.0.as_ptr(),
            in("eax") components as u32, in("edx") (components >> 32) as u32,
            options(readonly, nostack, preserves_flags));
    }
}

/// Stops the CPU for good (interrupts off).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: cli; hlt only stops this CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}
