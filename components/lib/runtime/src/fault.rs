//! Deliberate misbehaviour for fault-injection components.
//!
//! Each function performs one illegal action the core must catch and turn
//! into a fault report. They live in the runtime so that test components
//! stay free of `unsafe`. Calling them in a normal component is a bug.

/// Writes `value` to the raw address `address`.
pub fn write_u64(address: u64, value: u64) {
    // SAFETY: deliberately unsound; used to provoke a page fault that the
    // core reports. A volatile write so the compiler keeps it.
    unsafe { core::ptr::write_volatile(address as *mut u64, value) }
}

/// Reads from the raw address `address`.
pub fn read_u64(address: u64) -> u64 {
    // SAFETY: deliberately unsound; see `write_u64`.
    unsafe { core::ptr::read_volatile(address as *const u64) }
}

/// Calls code at `address`.
pub fn call(address: u64) {
    // SAFETY: deliberately unsound; jumps to `address` to provoke a fault
    // (an instruction fetch from a non-executable page).
    unsafe { core::arch::asm!("call {0}", in(reg) address, clobber_abi("C")) }
}

/// Executes `ud2`.
pub fn invalid_instruction() {
    // SAFETY: raises #UD, which the core reports.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) }
}

/// Executes `hlt`, which ring 3 may not.
pub fn privileged_instruction() {
    // SAFETY: raises #GP in ring 3, which the core reports.
    unsafe { core::arch::asm!("hlt", options(nomem, nostack)) }
}
