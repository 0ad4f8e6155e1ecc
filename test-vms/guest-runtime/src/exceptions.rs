//! The IDT: a handler for each of the 32 exception vectors, and faults a
//! test expects on purpose.
//!
//! Each vector has a 16-byte stub (pushing a zero error code where the CPU
//! pushes none, then the vector) that jumps to a common path saving every
//! general-purpose register into an [`ExceptionFrame`] and calling
//! [`guest_exception`]. By default that prints
//! `FAULT vector=<n> error=<hex> rip=<hex>` (plus `cr2=<hex>` for a page
//! fault) and ends the VM with status 1. After [`expect_fault`]`(skip)` the
//! next exception is recorded instead: its saved RIP advances by `skip`
//! bytes (the length of the faulting instruction) and the handler returns,
//! so the test continues after the instruction; [`take_fault`] reports it.
//! A fault inside the reporting itself prints `FAULT nested` and ends the
//! VM.
//! Vectors 32-255 are interrupts: [`crate::interrupts`] counts them (and
//! signals the local APIC's end of interrupt when asked to) and the
//! interrupted code goes on.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use crate::boot::CODE64_SELECTOR;

/// What the common path saved, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// The invalid-opcode exception (#UD).
pub const INVALID_OPCODE: u8 = 6;
/// The non-maskable interrupt: counted, like external interrupts.
pub const NMI: u8 = 2;
/// The general-protection exception (#GP).
pub const GENERAL_PROTECTION: u8 = 13;
/// The page-fault exception (#PF).
pub const PAGE_FAULT: u8 = 14;

/// How many vectors the IDT holds: the exceptions and the interrupts.
const VECTORS: usize = 256;
/// Bytes per handler stub (`.balign 16`; link.ld checks the total).
const STUB_SIZE: u64 = 16;

core::arch::global_asm!(
    r#"
    .pushsection .text.guest_exceptions, "ax"
    .code64
    .macro guest_stub vector, has_error
    .balign 16
    .if \has_error == 0
    pushq $0
    .endif
    pushq $\vector
    jmp guest_exception_common
    .endm

    .balign 16
    .global guest_exception_stubs
guest_exception_stubs:
    guest_stub 0, 0
    guest_stub 1, 0
    guest_stub 2, 0
    guest_stub 3, 0
    guest_stub 4, 0
    guest_stub 5, 0
    guest_stub 6, 0
    guest_stub 7, 0
    guest_stub 8, 1
    guest_stub 9, 0
    guest_stub 10, 1
    guest_stub 11, 1
    guest_stub 12, 1
    guest_stub 13, 1
    guest_stub 14, 1
    guest_stub 15, 0
    guest_stub 16, 0
    guest_stub 17, 1
    guest_stub 18, 0
    guest_stub 19, 0
    guest_stub 20, 0
    guest_stub 21, 1
    guest_stub 22, 0
    guest_stub 23, 0
    guest_stub 24, 0
    guest_stub 25, 0
    guest_stub 26, 0
    guest_stub 27, 0
    guest_stub 28, 0
    guest_stub 29, 1
    guest_stub 30, 1
    guest_stub 31, 0
    .set guest_vector, 32
    .rept 224
    guest_stub guest_vector, 0
    .set guest_vector, guest_vector + 1
    .endr
    .balign 16
    .global guest_exception_stubs_end
guest_exception_stubs_end:

guest_exception_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    /* 22 quadwords above the 16-byte aligned interrupt frame base: the
       stack is 16-byte aligned for the call. */
    movq %rsp, %rdi
    cld
    call guest_exception
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq
    .popsection
"#,
    options(att_syntax)
);

unsafe extern "C" {
    /// The first of the 256 handler stubs, [`STUB_SIZE`] bytes apart.
    static guest_exception_stubs: u8;
}

/// The IDT: 256 gate descriptors of two quadwords each.
static IDT: [AtomicU64; 2 * VECTORS] = [const { AtomicU64::new(0) }; 2 * VECTORS];

/// Armed by [`expect_fault`]: how many bytes to skip; 0 when not armed.
static SKIP: AtomicU8 = AtomicU8::new(0);
/// The vector caught while armed, plus one; 0 if none.
static CAUGHT: AtomicU8 = AtomicU8::new(0);
/// Set while the handler runs, to stop a fault inside it from recursing.
static HANDLING: AtomicBool = AtomicBool::new(false);

/// Fills and loads the IDT.
pub(crate) fn init() {
    let stubs = (&raw const guest_exception_stubs) as u64;
    for vector in 0..VECTORS {
        let handler = stubs + vector as u64 * STUB_SIZE;
        // A present 64-bit interrupt gate, DPL 0, no IST.
        let low = (handler & 0xffff)
            | (u64::from(CODE64_SELECTOR) << 16)
            | (0x8e << 40)
            | (((handler >> 16) & 0xffff) << 48);
        IDT[2 * vector].store(low, Ordering::Relaxed);
        IDT[2 * vector + 1].store(handler >> 32, Ordering::Relaxed);
    }
    crate::arch::load_idt(
        IDT.as_ptr() as u64,
        (core::mem::size_of_val(&IDT) - 1) as u16,
    );
}

/// Arms the handler for the next exception: instead of ending the VM it
/// records the vector and resumes `skip_bytes` after the faulting
/// instruction (use that instruction's length: 2 for `rdmsr`/`wrmsr`, 3 for
/// `vmmcall`/`vmcall`). Clears an earlier record.
pub fn expect_fault(skip_bytes: u8) {
    assert!(skip_bytes > 0, "expect_fault needs the instruction length");
    CAUGHT.store(0, Ordering::SeqCst);
    SKIP.store(skip_bytes, Ordering::SeqCst);
}

/// Disarms the handler and returns the vector caught since
/// [`expect_fault`], if any.
pub fn take_fault() -> Option<u8> {
    SKIP.store(0, Ordering::SeqCst);
    CAUGHT.swap(0, Ordering::SeqCst).checked_sub(1)
}

/// Runs `probe` with the handler armed ([`expect_fault`]) and returns the
/// vector of the exception it raised, if any. `probe` should execute one
/// instruction of length `skip_bytes` that may fault (inline assembly
/// without `nomem`, so that it stays between arming and disarming).
pub fn catch_fault<T>(skip_bytes: u8, probe: impl FnOnce() -> T) -> (T, Option<u8>) {
    expect_fault(skip_bytes);
    let value = probe();
    (value, take_fault())
}

/// Called by the common stub path with the saved state.
#[unsafe(no_mangle)]
extern "C" fn guest_exception(frame: &mut ExceptionFrame) {
    if frame.vector >= 32 {
        crate::interrupts::taken(frame.vector as u8);
        return;
    }
    if frame.vector == u64::from(NMI) {
        crate::interrupts::nmi_taken();
        return;
    }
    if HANDLING.swap(true, Ordering::SeqCst) {
        // A fault while reporting one: say so without formatting and stop.
        crate::console::write_bytes(b"\nFAULT nested\n");
        crate::exit(1)
    }
    let skip = SKIP.swap(0, Ordering::SeqCst);
    if skip != 0 {
        // The vector is below 32: it was pushed by one of the stubs.
        CAUGHT.store(frame.vector as u8 + 1, Ordering::SeqCst);
        frame.rip = frame.rip.wrapping_add(u64::from(skip));
        HANDLING.store(false, Ordering::SeqCst);
        return;
    }
    if frame.vector == u64::from(PAGE_FAULT) {
        crate::println!(
            "FAULT vector={} error={:#x} rip={:#x} cr2={:#x}",
            frame.vector,
            frame.error,
            frame.rip,
            crate::arch::read_cr2()
        );
    } else {
        crate::println!(
            "FAULT vector={} error={:#x} rip={:#x}",
            frame.vector,
            frame.error,
            frame.rip
        );
    }
    crate::exit(1)
}
