//! The core's entry points from the architecture layer: one for traps,
//! one for system calls.
//!
//! The arch stubs (`arch::entry`) save the thread's registers in its frame
//! and call these two functions by their symbol names, `core_trap_entry`
//! and `core_syscall_entry` (as the boot trampoline calls `kernel_main`),
//! so the architecture layer imports nothing from above it. Each turns the
//! raw frame pointer into a typed value at once, makes the entry's one
//! [`Entry`] token, and hands the kernel table to a safe handler
//! (`crate::trap`, `crate::syscall`). Each returns the frame to resume.

use crate::arch::entry::Frame;
use microvisor_abi::syscall::Syscall;

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

/// Called by the system-call stub with the saved frame.
///
/// # Safety
/// Only the stub calls this; the frame is the running thread's record and
/// no other entry is in progress.
#[unsafe(no_mangle)]
unsafe extern "C" fn core_syscall_entry(frame: *mut Frame) -> *const Frame {
    // SAFETY: the stub passes the running thread's frame; nothing else
    // references it during this entry, and the reference ends before the
    // slow path takes the kernel table.
    let saved = unsafe { &mut *frame };
    if crate::syscall::fast_path(saved) {
        return frame;
    }
    // Read again (not kept from the test above), so that the null
    // call's test stays one compare with memory.
    // SAFETY: the same frame; the reference above is no longer used.
    let number = unsafe { core::ptr::addr_of!((*frame).rax).read_volatile() };
    // SAFETY: the start of an entry from ring 3: no token exists.
    let entry = unsafe { Entry::new() };
    // The calls of every IPC and every VM exit have their own entries.
    if number == Syscall::SignalWait as u64 {
        with_kernel(entry, crate::syscall::signal_wait_entry)
    } else if number == Syscall::VcpuRun as u64 {
        with_kernel(entry, crate::syscall::vcpu_run_entry)
    } else if number == Syscall::Call as u64 {
        with_kernel(entry, crate::syscall::call_entry)
    } else if number == Syscall::ReplyWait as u64 {
        with_kernel(entry, crate::syscall::reply_wait_entry)
    } else {
        with_kernel(entry, crate::syscall::dispatch)
    }
}
