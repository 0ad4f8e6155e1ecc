//! The core's entry points from the architecture layer: one for traps,
//! one for system calls, and one each for the calls of every VM exit and
//! every IPC (`VcpuRun`, `Call`, `ReplyWait`, `SignalWait`), which the
//! system-call stub picks by number so that they skip the dispatcher.
//!
//! The arch stubs (`arch::entry`) save the thread's registers in its frame
//! and call these functions by their symbol names (`core_trap_entry`,
//! `core_syscall_entry`, `core_call_entry`, ...; as the boot trampoline
//! calls `kernel_main`),
//! so the architecture layer imports nothing from above it. Each turns the
//! raw frame pointer into a typed value at once, makes the entry's one
//! [`Entry`] token, and hands the kernel table to a safe handler
//! (`crate::trap`, `crate::syscall`). Each returns the frame to resume.

use crate::arch::entry::{Frame, Resume};

use crate::kernel::{Entry, with_kernel};

/// Called by the trap stub with the saved frame.
///
/// # Safety
/// Only the stub calls this, with `frame` pointing at a complete frame:
/// the running thread's record for traps from ring 3, the core's stack for
/// traps in ring 0; no other entry is in progress.
#[unsafe(no_mangle)]
unsafe extern "C" fn core_trap_entry(frame: *mut Frame) -> *const Frame {
    // SAFETY: the stub passes a pointer to a complete, exclusive frame.
    let saved = unsafe { &*frame };
    if saved.is_from_user() {
        let (vector, error) = (saved.vector, saved.error);
        // SAFETY: the start of an entry from ring 3: no token exists.
        let entry = unsafe { Entry::new() };
        with_kernel(entry, |kernel| {
            crate::trap::user_trap(kernel, vector, error)
        })
    } else if crate::trap::is_idle_interrupt(saved) {
        let vector = saved.vector;
        // SAFETY: the idle loop holds no reference to the kernel table and
        // no other entry is in progress: no token exists.
        let entry = unsafe { Entry::new() };
        with_kernel(entry, |kernel| crate::trap::idle_interrupt(kernel, vector))
    } else {
        crate::trap::kernel_trap(saved)
    }
}

/// Called by the system-call stub with the saved frame, for every call
/// but the null call (which the stub answers: its status is its number)
/// and the four that have entries of their own below.
///
/// # Safety
/// Only the stub calls this; the frame is the running thread's record and
/// no other entry is in progress.
#[unsafe(no_mangle)]
unsafe extern "C" fn core_syscall_entry(_frame: *mut Frame) -> *const Frame {
    // SAFETY: the start of an entry from ring 3: no token exists.
    let entry = unsafe { Entry::new() };
    with_kernel(entry, crate::syscall::dispatch)
}

/// `VcpuRun`, the world switcher's call at every VM exit: the stub calls
/// this directly (no dispatch on the number).
///
/// # Safety
/// Only the stub calls this, after saving the running thread's frame; no
/// other entry is in progress.
#[unsafe(no_mangle)]
unsafe extern "C" fn core_vcpu_run_entry() -> *const Frame {
    // SAFETY: the start of an entry from ring 3: no token exists.
    let entry = unsafe { Entry::new() };
    with_kernel(entry, crate::syscall::vcpu_run_entry)
}

/// `Call`, from the stub directly.
///
/// # Safety
/// As [`core_vcpu_run_entry`].
#[unsafe(no_mangle)]
unsafe extern "C" fn core_call_entry() -> Resume {
    // SAFETY: the start of an entry from ring 3: no token exists.
    let entry = unsafe { Entry::new() };
    with_kernel(entry, crate::syscall::call_entry)
}

/// `ReplyWait`, from the stub directly.
///
/// # Safety
/// As [`core_vcpu_run_entry`].
#[unsafe(no_mangle)]
unsafe extern "C" fn core_reply_wait_entry() -> Resume {
    // SAFETY: the start of an entry from ring 3: no token exists.
    let entry = unsafe { Entry::new() };
    with_kernel(entry, crate::syscall::reply_wait_entry)
}

/// `SignalWait`, from the stub directly.
///
/// # Safety
/// As [`core_vcpu_run_entry`].
#[unsafe(no_mangle)]
unsafe extern "C" fn core_signal_wait_entry() -> *const Frame {
    // SAFETY: the start of an entry from ring 3: no token exists.
    let entry = unsafe { Entry::new() };
    with_kernel(entry, crate::syscall::signal_wait_entry)
}
