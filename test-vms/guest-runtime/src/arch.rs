//! Single x86-64 instructions as functions: CPUID, RDTSC, port I/O, MSRs,
//! control registers, descriptor tables, WBINVD, HLT.
//!
//! Port I/O, `wrmsr` and writes of CR3 and CR4 are `unsafe`: a port, MSR
//! or control register can reprogram the machine under the program (a DMA
//! controller, EFER, the page tables). Safe wrappers for the uses test VMs
//! make sit with the device they drive ([`crate::interrupts`],
//! [`crate::clock`], [`crate::paging`]). Instructions that
//! may fault on purpose (`rdmsr`, `wrmsr`) are written without `nomem`, so
//! the compiler keeps them between [`crate::expect_fault`] and
//! [`crate::take_fault`].

use core::arch::asm;

/// The registers CPUID answers with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpuid {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// CPUID of `leaf` with sub-leaf 0.
pub fn cpuid(leaf: u32) -> Cpuid {
    cpuid_count(leaf, 0)
}

/// CPUID of `leaf` and `subleaf`.
pub fn cpuid_count(leaf: u32, subleaf: u32) -> Cpuid {
    let (eax, ebx, ecx, edx): (u32, u64, u32, u32);
    // SAFETY: CPUID only reads processor information. rbx is reserved by
    // LLVM, so it is exchanged with a scratch register around the
    // instruction and restored.
    unsafe {
        asm!(
            "xchg {rbx}, rbx",
            "cpuid",
            "xchg {rbx}, rbx",
            rbx = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nomem, nostack, preserves_flags),
        );
    }
    Cpuid {
        eax,
        ebx: ebx as u32,
        ecx,
        edx,
    }
}

/// The time-stamp counter (RDTSC, not serialised; under QEMU's
/// `-icount shift=0` one tick is one executed instruction).
#[inline(always)]
pub fn rdtsc() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { asm!("rdtsc", out("eax") low, out("edx") high, options(nomem, nostack)) };
    (u64::from(high) << 32) | u64::from(low)
}

/// The time-stamp counter after all earlier instructions finished (LFENCE;
/// RDTSC).
#[inline(always)]
pub fn rdtsc_ordered() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: LFENCE orders, RDTSC reads the time-stamp counter.
    unsafe { asm!("lfence", "rdtsc", out("eax") low, out("edx") high, options(nomem, nostack)) };
    (u64::from(high) << 32) | u64::from(low)
}

/// RDTSCP: the time-stamp counter and `TSC_AUX` (only where CPUID shows
/// RDTSCP; elsewhere `#UD`).
#[inline(always)]
pub fn rdtscp() -> (u64, u32) {
    let (low, high, aux): (u32, u32, u32);
    // SAFETY: RDTSCP only reads the time-stamp counter and TSC_AUX.
    unsafe {
        asm!("rdtscp", out("eax") low, out("edx") high, out("ecx") aux, options(nomem, nostack));
    }
    ((u64::from(high) << 32) | u64::from(low), aux)
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// Reading some ports changes device state; the caller knows the device.
#[inline(always)]
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller vouches for the port; IN touches no memory.
    unsafe { asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack)) };
    value
}

/// Writes a byte to an I/O port.
///
/// # Safety
/// The write must not reprogram a device in a way that breaks the program
/// (there is no DMA-capable device a test VM uses).
#[inline(always)]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the port; OUT touches no memory.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) };
}

/// Reads a doubleword from an I/O port.
///
/// # Safety
/// As [`inb`].
#[inline(always)]
pub unsafe fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: the caller vouches for the port; IN touches no memory.
    unsafe { asm!("in eax, dx", out("eax") value, in("dx") port, options(nomem, nostack)) };
    value
}

/// Writes a doubleword to an I/O port.
///
/// # Safety
/// As [`outb`].
#[inline(always)]
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller vouches for the port; OUT touches no memory.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack)) };
}

/// Reads a model-specific register. An MSR the CPU (or hypervisor) does
/// not have raises #GP: fatal unless expected ([`crate::expect_fault`],
/// skip 2), in which case the result is meaningless.
#[inline(always)]
pub fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: reading an MSR has no effect on memory; a #GP goes to the
    // guest's own handler. Not `nomem`: see the module documentation.
    unsafe {
        asm!(
            "rdmsr",
            in("ecx") msr,
            inout("eax") 0u32 => low,
            inout("edx") 0u32 => high,
            options(nostack),
        );
    }
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes a model-specific register (#GP as for [`rdmsr`]).
///
/// # Safety
/// The MSR's new value must not break the running program (EFER, the
/// GS base, ...).
#[inline(always)]
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller vouches for the MSR and value; not `nomem`: see
    // the module documentation.
    unsafe {
        asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack),
        );
    }
}

/// Writes `TSC_AUX` (`0xC0000103`), which only RDTSCP and RDPID read, so
/// any value is safe; `#GP` as for [`rdmsr`] (skip 2).
#[inline(always)]
pub fn write_tsc_aux(value: u64) {
    // SAFETY: TSC_AUX feeds nothing but RDTSCP and RDPID.
    unsafe { wrmsr(0xc000_0103, value) }
}

/// CR2: the address of the last page fault.
pub fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// CR3: the page-table root (see [`crate::paging`]).
pub fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes CR3: switches to the page tables rooted at `value` and flushes
/// the TLB's non-global entries. Not `nomem`: the memory the program sees
/// is the new tables' (the compiler must not move accesses across it).
///
/// # Safety
/// The new tables must map the running program (its code, data, stack)
/// where the current ones do; [`crate::paging`] only loads roots that
/// map exactly what the boot tables map.
#[inline(always)]
pub unsafe fn write_cr3(value: u64) {
    // SAFETY: the caller vouches for the tables.
    unsafe { asm!("mov cr3, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// WBINVD: writes every modified cache line back to memory and invalidates
/// the caches. Memory keeps its contents, so the program sees no change,
/// only the time it takes (under a hypervisor it may also be an exit).
#[inline(always)]
pub fn wbinvd() {
    // SAFETY: WBINVD only writes caches back and empties them: memory
    // (and so every Rust object) holds the same values afterwards. Not
    // `nomem`, so the compiler keeps it where the program put it.
    unsafe { asm!("wbinvd", options(nostack, preserves_flags)) };
}

/// CR4.
pub fn read_cr4() -> u64 {
    let value: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Bytes of [`write_cr4`]'s instruction (`mov cr4, rax`), for
/// [`crate::catch_fault`].
pub const WRITE_CR4_LENGTH: u8 = 3;

/// Writes CR4 (`mov cr4, rax`, [`WRITE_CR4_LENGTH`] bytes); a bit the CPU
/// does not have raises #GP.
///
/// # Safety
/// The new value must not break the running program (paging modes,
/// SMEP/SMAP, ...).
#[inline(always)]
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: the caller vouches for the value.
    unsafe { asm!("mov cr4, rax", in("rax") value, options(nostack)) };
}

/// Bytes of `xgetbv` and `xsetbv`, for [`crate::catch_fault`].
pub const XCR_INSTRUCTION_LENGTH: u8 = 3;

/// Reads extended control register `index` (#UD unless CR4.OSXSAVE).
#[inline(always)]
pub fn xgetbv(index: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: reading an XCR has no effect on memory; a fault goes to the
    // guest's own handler.
    unsafe {
        asm!(
            "xgetbv",
            in("ecx") index,
            inout("eax") 0u32 => low,
            inout("edx") 0u32 => high,
            options(nostack),
        );
    }
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes extended control register `index` (#UD unless CR4.OSXSAVE, #GP
/// for a value the CPU refuses).
///
/// # Safety
/// The new state-component set must not break the running program.
#[inline(always)]
pub unsafe fn xsetbv(index: u32, value: u64) {
    // SAFETY: the caller vouches for the value.
    unsafe {
        asm!(
            "xsetbv",
            in("ecx") index,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack),
        );
    }
}

/// Loads the IDT register.
pub(crate) fn load_idt(base: u64, limit: u16) {
    let mut pointer = [0u16; 5];
    pointer[0] = limit;
    pointer[1] = base as u16;
    pointer[2] = (base >> 16) as u16;
    pointer[3] = (base >> 32) as u16;
    pointer[4] = (base >> 48) as u16;
    // SAFETY: the callers pass the runtime's IDT (static, complete gates to
    // its own handlers) or, in `triple_fault`, an empty table on purpose.
    unsafe {
        asm!("lidt [{}]", in(reg) pointer.as_ptr(), options(readonly, nostack, preserves_flags))
    };
}

/// Halts until the next interrupt (with interrupts disabled, for good).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI; HLT stops the CPU and touches no memory.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Ends the machine with a triple fault: loads an IDT with limit 0 and
/// executes `int3`, whose delivery faults (#GP), as does that fault's
/// (#DF), which is a shutdown. Under a hypervisor this is a shutdown exit.
pub fn triple_fault() -> ! {
    load_idt(0, 0);
    // SAFETY: int3 cannot be delivered through an empty IDT; the machine
    // shuts down and nothing after it runs. ud2 is a second try.
    unsafe { asm!("int3", "ud2", options(nomem, nostack)) };
    halt_forever()
}
