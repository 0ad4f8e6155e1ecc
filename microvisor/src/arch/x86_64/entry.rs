//! Trap and system-call entry and the return to ring 3.
//!
//! Every way into the core from ring 3 — an exception, an interrupt, the
//! `syscall` instruction — saves the thread's registers into one
//! [`Frame`] inside the thread's own record: traps through the TSS (`rsp0`
//! points at the end of the running thread's frame, so the CPU pushes the
//! return state there and the stub pushes the rest), `syscall` by building
//! the same layout by hand. The stub then switches to the core's stack and
//! calls the core's handler (`core_trap_entry`; for a system call one
//! picked by its number: the null call is answered in the stub, `VcpuRun`,
//! `Call`, `ReplyWait` and `SignalWait` have handlers of their own, the
//! rest go to `core_syscall_entry`; all defined above this layer and bound
//! by symbol name), which returns the frame to resume — the same thread or
//! another; `Call` and `ReplyWait` return a [`Resume`], whose message frame,
//! when set, supplies the resumed thread's message registers.
//! [`return_to_frame`] restores a frame with `sysretq` when the thread last
//! entered through `syscall` (fast) and `iretq` otherwise.
//!
//! The per-CPU block reached through `gs` holds the core's stack top, a
//! scratch slot for the user stack pointer, and the current frame's top.
//! `swapgs` is executed exactly when crossing between ring 3 and ring 0.
//! Traps taken in ring 0 are fatal: the handler reports and stops the
//! machine, so they never return into interrupted core code.

use core::cell::UnsafeCell;
use core::mem::offset_of;

use microvisor_abi::syscall::Syscall;

use super::cpu::{self, efer, msr};
use super::descriptors::{self, KERNEL_CODE, USER_CODE, USER_DATA};

/// A thread's saved registers, in the order the entry stubs push them.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(16))]
pub struct Frame {
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
    /// The trap vector, or [`SYSCALL_VECTOR`].
    pub vector: u64,
    /// The CPU's error code, or 0.
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// The stubs depend on this layout.
const _: () = assert!(size_of::<Frame>() == 22 * 8);
const _: () = assert!(offset_of!(Frame, vector) == 15 * 8);
const _: () = assert!(offset_of!(Frame, rip) == 17 * 8);
const _: () = assert!(offset_of!(Frame, cs) == 18 * 8);
const _: () = assert!(offset_of!(Frame, ss) == 21 * 8);

/// What `Call` and `ReplyWait` return to the stub: the frame to resume,
/// and the frame whose message registers
/// (`microvisor_abi::syscall::MESSAGE_REGISTERS`) it resumes with
/// instead of its own — the other side's, when a fast path hands a
/// message over without copying it into the resumed frame — or null.
/// Returned in `rax:rdx`.
#[repr(C)]
pub struct Resume {
    pub frame: *const Frame,
    pub message: *const Frame,
}

impl Resume {
    /// Resume `frame` as it is.
    pub fn frame(frame: *const Frame) -> Self {
        Self {
            frame,
            message: core::ptr::null(),
        }
    }
}

/// The `vector` of a frame saved by `syscall`.
pub const SYSCALL_VECTOR: u64 = 0x100;
/// RFLAGS of a thread at its first instruction: interrupts enabled.
pub const INITIAL_RFLAGS: u64 = 0x202;
/// RFLAGS bits cleared on `syscall`: TF, IF, DF, NT, AC.
const SYSCALL_MASK: u64 = 0x4_4700;

impl Frame {
    /// All registers zero.
    pub const ZERO: Self = Self {
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        rbp: 0,
        rdi: 0,
        rsi: 0,
        rdx: 0,
        rcx: 0,
        rbx: 0,
        rax: 0,
        vector: 0,
        error: 0,
        rip: 0,
        cs: 0,
        rflags: 0,
        rsp: 0,
        ss: 0,
    };

    /// The frame of the core's idle loop: ring 0 on `stack`, interrupts on.
    pub fn idle(entry: u64, stack: u64) -> Self {
        Self {
            rip: entry,
            rsp: stack,
            rflags: INITIAL_RFLAGS,
            cs: u64::from(KERNEL_CODE),
            ss: u64::from(super::descriptors::KERNEL_DATA),
            ..Self::ZERO
        }
    }

    /// The frame of a thread that has not run yet: it will start at `entry`
    /// with `stack` and `argument` in `rdi`.
    pub fn new_thread(entry: u64, stack: u64, argument: u64) -> Self {
        Self {
            rip: entry,
            rsp: stack,
            rdi: argument,
            rflags: INITIAL_RFLAGS,
            cs: u64::from(USER_CODE),
            ss: u64::from(USER_DATA),
            vector: SYSCALL_VECTOR,
            ..Self::ZERO
        }
    }

    /// Whether the frame was saved from ring 3.
    pub fn is_from_user(&self) -> bool {
        self.cs & 3 == 3
    }
}

#[repr(C)]
struct PerCpu {
    kernel_stack_top: u64,
    user_rsp: u64,
    frame_top: u64,
}

struct PerCpuCell(UnsafeCell<PerCpu>);

// SAFETY: one CPU; written with interrupts disabled by the core, read by
// the entry stubs of the same CPU.
unsafe impl Sync for PerCpuCell {}

static PER_CPU: PerCpuCell = PerCpuCell(UnsafeCell::new(PerCpu {
    kernel_stack_top: 0,
    user_rsp: 0,
    frame_top: 0,
}));

core::arch::global_asm!(
    r#"
    // The general registers in Frame order (rax pushed first, r15 last).
    .macro save_registers
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    .endm

    .pushsection .text.entry, "ax"
    .balign 16
    .global trap_stubs
trap_stubs:
    .set vector, 0
    .rept 256
    .balign 16
    .if (vector == 8) || ((vector >= 10) && (vector <= 14)) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)
    .else
    .byte 0x6a, 0x00
    .endif
    .byte 0x68
    .long vector
    jmp trap_common
    .set vector, vector + 1
    .endr

trap_common:
    test byte ptr [rsp + 24], 3
    jz 1f
    swapgs
1:
    save_registers
    mov rdi, rsp
    test byte ptr [rsp + 15 * 8 + 24], 3
    jz 2f
    mov rsp, gs:[0]
    jmp 3f
2:
    and rsp, -16
3:
    cld
    call {trap}
    mov rdi, rax
    jmp return_to_frame

    .balign 16
    .global syscall_entry
syscall_entry:
    swapgs
    mov gs:[8], rsp
    mov rsp, gs:[16]
    push {user_data}
    push qword ptr gs:[8]
    push r11
    push {user_code}
    push rcx
    push 0
    push {syscall_vector}
    save_registers
    mov rdi, rsp
    // The null call needs nothing but the way back: its status (Ok, 0)
    // is the number itself, already in the frame's rax.
    test rax, rax
    jz return_to_frame
    mov rsp, gs:[0]
    // The calls of every VM exit and every IPC have their own handlers.
    cmp rax, {vcpu_run_number}
    je 6f
    cmp rax, {call_number}
    je 7f
    cmp rax, {reply_wait_number}
    je 8f
    cmp rax, {signal_wait_number}
    je 9f
    call {syscall}
    jmp 10f
6:
    call {vcpu_run}
    jmp 10f
7:
    call {call}
    jmp 11f
8:
    call {reply_wait}
11:
    // A `Resume` in rax:rdx: the frame to resume, and the frame whose
    // message registers it resumes with instead of its own (0: none).
    mov rdi, rax
    test rdx, rdx
    jz return_to_frame
    mov r15, [rdx + {r15}]
    mov r14, [rdx + {r14}]
    mov r13, [rdx + {r13}]
    mov r12, [rdx + {r12}]
    mov r10, [rdx + {r10}]
    mov r9, [rdx + {r9}]
    mov r8, [rdx + {r8}]
    mov rdx, [rdx + {rdx}]
    mov rsp, rdi
    mov rbp, [rsp + {rbp}]
    mov rdi, [rsp + {rdi}]
    mov rsi, [rsp + {rsi}]
    mov rbx, [rsp + {rbx}]
    mov rax, [rsp + {rax}]
    // The way back of a frame saved by `syscall`, as below (its rcx and
    // r11 are the return address and flags); any other goes by iretq.
    cmp qword ptr [rsp + {vector}], {syscall_vector}
    jne 13f
    mov rcx, [rsp + {rip}]
    mov r11, [rsp + {rflags}]
    mov rsp, [rsp + {rsp}]
    swapgs
    .byte 0x48, 0x0f, 0x07
13:
    mov r11, [rsp + {r11}]
    mov rcx, [rsp + {rcx}]
    add rsp, {vector}
    jmp 4f
9:
    call {signal_wait}
10:
    mov rdi, rax

    .global return_to_frame
return_to_frame:
    mov rsp, rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    cmp qword ptr [rsp], {syscall_vector}
    jne 4f
    mov rcx, [rsp + 16]
    mov r11, [rsp + 32]
    mov rsp, [rsp + 40]
    swapgs
    .byte 0x48, 0x0f, 0x07
4:
    test byte ptr [rsp + 24], 3
    jz 5f
    swapgs
5:
    add rsp, 16
    iretq
    .popsection
"#,
    trap = sym core_trap_entry,
    syscall = sym core_syscall_entry,
    vcpu_run = sym core_vcpu_run_entry,
    call = sym core_call_entry,
    reply_wait = sym core_reply_wait_entry,
    signal_wait = sym core_signal_wait_entry,
    vcpu_run_number = const Syscall::VcpuRun as u64,
    call_number = const Syscall::Call as u64,
    reply_wait_number = const Syscall::ReplyWait as u64,
    signal_wait_number = const Syscall::SignalWait as u64,
    r15 = const offset_of!(Frame, r15),
    r14 = const offset_of!(Frame, r14),
    r13 = const offset_of!(Frame, r13),
    r12 = const offset_of!(Frame, r12),
    r11 = const offset_of!(Frame, r11),
    r10 = const offset_of!(Frame, r10),
    r9 = const offset_of!(Frame, r9),
    r8 = const offset_of!(Frame, r8),
    rbp = const offset_of!(Frame, rbp),
    rdi = const offset_of!(Frame, rdi),
    rsi = const offset_of!(Frame, rsi),
    rdx = const offset_of!(Frame, rdx),
    rcx = const offset_of!(Frame, rcx),
    rbx = const offset_of!(Frame, rbx),
    rax = const offset_of!(Frame, rax),
    vector = const offset_of!(Frame, vector),
    rip = const offset_of!(Frame, rip),
    rflags = const offset_of!(Frame, rflags),
    rsp = const offset_of!(Frame, rsp),
    user_data = const USER_DATA as u64,
    user_code = const USER_CODE as u64,
    syscall_vector = const SYSCALL_VECTOR,
);

unsafe extern "C" {
    /// The core's trap handler (defined above the architecture layer, in
    /// `crate::entry`): takes the saved frame, returns the frame to resume.
    fn core_trap_entry(frame: *mut Frame) -> *const Frame;
    /// The core's system-call handler (`crate::entry`), likewise, for
    /// every call but the null call (answered here) and the four below.
    fn core_syscall_entry(frame: *mut Frame) -> *const Frame;
    /// The handlers of `VcpuRun`, `Call`, `ReplyWait` and `SignalWait`
    /// (`crate::entry`): they find the frame through the kernel.
    fn core_vcpu_run_entry() -> *const Frame;
    fn core_call_entry() -> Resume;
    fn core_reply_wait_entry() -> Resume;
    fn core_signal_wait_entry() -> *const Frame;
    static trap_stubs: u8;
    fn syscall_entry();
    fn return_to_frame(frame: *const Frame) -> !;
}

/// Programs `syscall`/`sysret`, the per-CPU block and the descriptor
/// tables.
///
/// # Safety
/// Call once at boot with interrupts disabled; `kernel_stack_top` and
/// `fault_stack_top` must be the tops of mapped, otherwise unused stacks.
pub unsafe fn init(kernel_stack_top: u64, fault_stack_top: u64) {
    // SAFETY: boot is single-threaded; nothing reads PER_CPU yet.
    unsafe { (*PER_CPU.0.get()).kernel_stack_top = kernel_stack_top };
    let stubs = core::ptr::addr_of!(trap_stubs) as u64;
    // SAFETY: guaranteed by the caller (once, at boot).
    unsafe { descriptors::load(stubs, fault_stack_top) };
    let star = (u64::from(KERNEL_CODE) << 32) | (u64::from(USER_DATA - 3 - 8) << 48);
    // SAFETY: these MSRs configure `syscall` to enter `syscall_entry` with
    // the segments above, and `gs` to reach PER_CPU in ring 0; the user's
    // GS base starts at zero.
    unsafe {
        cpu::write_msr(msr::STAR, star);
        cpu::write_msr(msr::LSTAR, syscall_entry as *const () as u64);
        cpu::write_msr(msr::FMASK, SYSCALL_MASK);
        cpu::write_msr(msr::GS_BASE, PER_CPU.0.get() as u64);
        cpu::write_msr(msr::KERNEL_GS_BASE, 0);
        cpu::write_msr(msr::EFER, cpu::read_msr(msr::EFER) | efer::SYSCALL);
    }
}

/// Makes `frame` the one the next trap or system call from ring 3 saves
/// into.
pub fn set_current_frame(frame: *const Frame) {
    let top = frame as u64 + size_of::<Frame>() as u64;
    // SAFETY: one CPU, interrupts disabled in the core; the stubs read this
    // field only on the next entry from ring 3.
    unsafe { (*PER_CPU.0.get()).frame_top = top };
    descriptors::set_kernel_entry_stack(top);
}

core::arch::global_asm!(
    ".pushsection .text.idle, \"ax\"",
    ".global idle_loop",
    "idle_loop:",
    "sti",
    "hlt",
    "jmp idle_loop",
    ".popsection",
);

unsafe extern "C" {
    fn idle_loop() -> !;
}

/// The address of the idle loop (`sti; hlt` forever, in ring 0).
pub fn idle_entry() -> u64 {
    idle_loop as *const () as u64
}

/// Resumes the thread whose frame is `frame` in ring 3.
///
/// # Safety
/// `frame` must be the current frame (see [`set_current_frame`]), hold a
/// ring-3 state with a canonical user `rip`, and the matching address space
/// must be loaded.
pub unsafe fn enter_user(frame: *const Frame) -> ! {
    // SAFETY: guaranteed by the caller.
    unsafe { return_to_frame(frame) }
}
