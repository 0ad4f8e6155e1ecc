//! Typed wrappers around the `syscall` instruction.
//!
//! The register convention is [`microvisor_abi::syscall`]'s: number in
//! `rax`, arguments in `rdi`, `rsi`, `rdx`, `r10`, `r8`, `r9`; status in
//! `rax`, value in `rdx`; every caller-saved register clobbered.

use microvisor_abi::syscall::{LOG_WRITE_MAX, Syscall};

/// Issues a system call with up to two arguments and returns `(rax, rdx)`.
#[inline(always)]
fn call2(number: Syscall, arg0: u64, arg1: u64) -> (u64, u64) {
    let status: u64;
    let value: u64;
    // SAFETY: the core preserves callee-saved registers and the stack; all
    // caller-saved registers are declared clobbered, as the ABI allows the
    // core to overwrite them. Memory passed by pointer is only read.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") number as u64 => status,
            inlateout("rdi") arg0 => _,
            inlateout("rsi") arg1 => _,
            lateout("rdx") value,
            lateout("rcx") _, lateout("r8") _, lateout("r9") _,
            lateout("r10") _, lateout("r11") _,
            options(nostack),
        );
    }
    (status, value)
}

/// The null call: enters and leaves the core, nothing else.
#[inline(always)]
pub fn null() -> u64 {
    call2(Syscall::Null, 0, 0).0
}

/// Writes one console line (at most [`LOG_WRITE_MAX`] bytes are sent).
pub fn log_write(bytes: &[u8]) {
    let len = bytes.len().min(LOG_WRITE_MAX as usize);
    call2(Syscall::LogWrite, bytes.as_ptr() as u64, len as u64);
}

/// Gives the CPU to the next runnable thread.
pub fn yield_now() {
    call2(Syscall::Yield, 0, 0);
}

/// Ends this component with `code` (0 = success).
pub fn exit(code: i32) -> ! {
    call2(Syscall::Exit, code as u32 as u64, 0);
    unreachable_exit()
}

/// Reports a panic; the core stops this component.
pub fn panic(message: &[u8]) -> ! {
    let len = message.len().min(LOG_WRITE_MAX as usize);
    call2(Syscall::Panic, message.as_ptr() as u64, len as u64);
    unreachable_exit()
}

/// Raw access for tests that misuse the interface on purpose (the hostile
/// and fault-injection components): issues call `number` with the given
/// arguments, exactly as given.
pub fn raw(number: u64, args: [u64; 2]) -> (u64, u64) {
    let status: u64;
    let value: u64;
    // SAFETY: as in `call2`; the core validates everything it is given.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") number => status,
            inlateout("rdi") args[0] => _,
            inlateout("rsi") args[1] => _,
            lateout("rdx") value,
            lateout("rcx") _, lateout("r8") _, lateout("r9") _,
            lateout("r10") _, lateout("r11") _,
            options(nostack),
        );
    }
    (status, value)
}

fn unreachable_exit() -> ! {
    // The core never returns from Exit or Panic; if it did, trap.
    loop {
        // SAFETY: ud2 raises #UD, which the core reports as a fault.
        unsafe { core::arch::asm!("ud2", options(nomem, nostack, noreturn)) }
    }
}
