//! Typed wrappers around the `syscall` instruction.
//!
//! The register convention is [`microvisor_abi::syscall`]'s: number in
//! `rax`, arguments in `rdi`, `rsi`, `rdx`, `r10`, `r8`; status in `rax`,
//! value in `rdx`; every caller-saved register clobbered. Misuse is not
//! reported here: the core stops a component that misuses a call.

use microvisor_abi::fault::FaultRecord;
use microvisor_abi::syscall::{LOG_WRITE_MAX, NO_SIGNAL, SELF, Status, Syscall, WAIT_FOREVER};

/// Issues call `number` with five arguments and returns `(rax, rdx)`.
#[inline(always)]
fn call(number: u64, args: [u64; 5]) -> (u64, u64) {
    let status: u64;
    let value: u64;
    // SAFETY: the core preserves callee-saved registers and the stack; all
    // caller-saved registers are declared clobbered, as the ABI allows the
    // core to overwrite them. Memory passed by pointer is only read, except
    // by ComponentFault, whose buffer callers pass as `&mut`.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") number => status,
            inlateout("rdi") args[0] => _,
            inlateout("rsi") args[1] => _,
            inlateout("rdx") args[2] => value,
            inlateout("r10") args[3] => _,
            inlateout("r8") args[4] => _,
            lateout("rcx") _, lateout("r9") _, lateout("r11") _,
            options(nostack),
        );
    }
    (status, value)
}

/// The null call: enters and leaves the core, nothing else. It passes no
/// arguments, so the measurement includes no argument set-up.
#[inline(always)]
pub fn null() -> u64 {
    let status: u64;
    // SAFETY: as in `call`; the null call reads no argument register.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") Syscall::Null as u64 => status,
            lateout("rdi") _, lateout("rsi") _, lateout("rdx") _, lateout("r10") _,
            lateout("r8") _, lateout("rcx") _, lateout("r9") _, lateout("r11") _,
            options(nostack),
        );
    }
    status
}

/// Writes one console line (at most [`LOG_WRITE_MAX`] bytes are sent).
pub fn log_write(bytes: &[u8]) {
    let len = bytes.len().min(LOG_WRITE_MAX as usize);
    call(
        Syscall::LogWrite as u64,
        [bytes.as_ptr() as u64, len as u64, 0, 0, 0],
    );
}

/// Gives the CPU to the next runnable thread (after sending any deferred
/// signal).
pub fn yield_now() {
    crate::notification::flush();
    call(Syscall::Yield as u64, [0; 5]);
}

/// Ends this component with `code` (0 = success), after sending any
/// deferred signal.
pub fn exit(code: i32) -> ! {
    crate::notification::flush();
    call(Syscall::Exit as u64, [code as u32 as u64, 0, 0, 0, 0]);
    unreachable_exit()
}

/// Reports a panic; the core stops this component.
pub fn panic(message: &[u8]) -> ! {
    let len = message.len().min(LOG_WRITE_MAX as usize);
    call(
        Syscall::Panic as u64,
        [message.as_ptr() as u64, len as u64, 0, 0, 0],
    );
    unreachable_exit()
}

/// Sets the badge bits of notification capability `handle` in its target.
pub fn signal(handle: u64) {
    call(Syscall::Signal as u64, [handle, 0, 0, 0, 0]);
}

/// Waits for bits in this component's notification word. `timeout_us`
/// of `None` waits forever, `Some(0)` polls. Returns the bits, or `None`
/// on timeout. Prefer [`crate::notification::wait_for`], which keeps bits
/// other waiters of this component are interested in.
pub fn wait(timeout_us: Option<u64>) -> Option<u64> {
    let (status, bits) = call(
        Syscall::Wait as u64,
        [timeout_us.unwrap_or(WAIT_FOREVER), 0, 0, 0, 0],
    );
    (status == Status::Ok as u64).then_some(bits)
}

/// Signals `handle` (unless `None`), then waits like [`wait`]: one entry
/// into the core.
pub fn signal_wait(handle: Option<u64>, timeout_us: Option<u64>) -> Option<u64> {
    let (status, bits) = call(
        Syscall::SignalWait as u64,
        [
            handle.unwrap_or(NO_SIGNAL),
            timeout_us.unwrap_or(WAIT_FOREVER),
            0,
            0,
            0,
        ],
    );
    (status == Status::Ok as u64).then_some(bits)
}

/// Nanoseconds since boot.
pub fn time_ns() -> u64 {
    call(Syscall::Time as u64, [0; 5]).1
}

/// CPU time consumed by the scheduling context `handle` (or this
/// component's own with `None`), in nanoseconds.
pub fn consumed_ns(handle: Option<u64>) -> u64 {
    call(
        Syscall::SchedulingRead as u64,
        [handle.unwrap_or(SELF), 0, 0, 0, 0],
    )
    .1
}

/// Reconfigures a scheduling context (needs the scheduling-control
/// capability).
pub fn configure_scheduling(
    control: u64,
    context: u64,
    budget_us: u64,
    period_us: u64,
    priority: u32,
) {
    call(
        Syscall::SchedulingConfigure as u64,
        [control, context, budget_us, period_us, u64::from(priority)],
    );
}

/// The last fault of a supervised component, if it has one.
pub fn component_fault(handle: u64) -> Option<FaultRecord> {
    let mut record = FaultRecord::default();
    let (status, _) = call(
        Syscall::ComponentFault as u64,
        [handle, &raw mut record as u64, 0, 0, 0],
    );
    (status == Status::Ok as u64).then_some(record)
}

/// Restarts a supervised component from its image.
pub fn component_restart(handle: u64) {
    call(Syscall::ComponentRestart as u64, [handle, 0, 0, 0, 0]);
}

/// Stops a supervised component for good.
pub fn component_stop(handle: u64) {
    call(Syscall::ComponentStop as u64, [handle, 0, 0, 0, 0]);
}

/// Raw access for components that misuse the interface on purpose (the
/// hostile and fault-injection components): issues call `number` with the
/// given arguments, exactly as given.
pub fn raw(number: u64, args: [u64; 5]) -> (u64, u64) {
    call(number, args)
}

fn unreachable_exit() -> ! {
    // The core never returns from Exit or Panic; if it did, trap.
    // SAFETY: ud2 raises #UD, which the core reports as a fault.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack, noreturn)) }
}

/// Enters the guest of vCPU `handle` after writing back the state-page
/// fields in `dirty`; returns the raw exit reason at the next VM exit (or
/// when `limit_us` microseconds passed). See [`crate::vm::Vm::run`].
pub fn vcpu_run(handle: u64, dirty: u64, limit_us: Option<u64>) -> u64 {
    call(
        Syscall::VcpuRun as u64,
        [handle, dirty, limit_us.unwrap_or(WAIT_FOREVER), 0, 0],
    )
    .1
}

/// Makes vCPU `handle` leave the guest at its next run.
pub fn vcpu_poke(handle: u64) {
    call(Syscall::VcpuPoke as u64, [handle, 0, 0, 0, 0]);
}

/// Sets the optional intercepts of VMCS `handle`.
pub fn vmcs_control(handle: u64, intercepts: u64) {
    call(Syscall::VmcsControl as u64, [handle, intercepts, 0, 0, 0]);
}

/// Resets VMCS `handle` to power-on state.
pub fn vmcs_reset(handle: u64) {
    call(Syscall::VmcsReset as u64, [handle, 0, 0, 0, 0]);
}

/// Writes one console line prefixed with the name of the VM of VMCS
/// `handle`.
pub fn guest_log(handle: u64, bytes: &[u8]) {
    let len = bytes.len().min(LOG_WRITE_MAX as usize);
    call(
        Syscall::GuestLog as u64,
        [handle, bytes.as_ptr() as u64, len as u64, 0, 0],
    );
}
