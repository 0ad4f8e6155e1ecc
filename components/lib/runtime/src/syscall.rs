//! Typed wrappers around the `syscall` instruction.
//!
//! Every call is built as a [`Call`] and turned into registers by
//! [`Call::encode`], the counterpart of the core's `Call::decode` (both in
//! `microvisor_abi::syscall`, round-trip tested there): number in `rax`,
//! arguments in `rdi`, `rsi`, `rdx`, `r10`, `r8`; status in `rax`, value in
//! `rdx`; every caller-saved register clobbered. Misuse is not reported
//! here: the core stops a component that misuses a call.

use microvisor_abi::fault::FaultRecord;
use microvisor_abi::syscall::{Call, LOG_WRITE_MAX, Status, Syscall, UserBytes};

/// Issues `call` and returns `(rax, rdx)`.
#[inline(always)]
fn call(call: Call) -> (u64, u64) {
    let registers = call.encode();
    issue(registers.number, registers.arguments)
}

/// Issues call `number` with five arguments and returns `(rax, rdx)`.
#[inline(always)]
fn issue(number: u64, args: [u64; 5]) -> (u64, u64) {
    let status: u64;
    let value: u64;
    // SAFETY: the core preserves callee-saved registers and the stack; all
    // caller-saved registers are declared clobbered, as the ABI allows the
    // core to overwrite them. Memory passed by pointer is only read, except
    // by ComponentFault and ConsoleRead, whose buffers callers pass as
    // `&mut`.
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

/// The bytes of `bytes`, at most `limit` of them, as a call argument.
#[inline(always)]
fn user_bytes(bytes: &[u8], limit: u64) -> UserBytes {
    UserBytes {
        address: bytes.as_ptr() as u64,
        length: (bytes.len() as u64).min(limit),
    }
}

/// Writes one console line (at most [`LOG_WRITE_MAX`] bytes are sent).
#[inline]
pub fn log_write(bytes: &[u8]) {
    let text = user_bytes(bytes, LOG_WRITE_MAX);
    call(Call::LogWrite { text });
}

/// Gives the CPU to the next runnable thread (after sending any deferred
/// signal).
#[inline]
pub fn yield_now() {
    crate::notification::flush();
    call(Call::Yield);
}

/// Ends this component with `code` (0 = success), after sending any
/// deferred signal.
#[inline]
pub fn exit(code: i32) -> ! {
    crate::notification::flush();
    call(Call::Exit { code });
    unreachable_exit()
}

/// Reports a panic; the core stops this component.
#[inline]
pub fn panic(message: &[u8]) -> ! {
    let message = user_bytes(message, LOG_WRITE_MAX);
    call(Call::Panic { message });
    unreachable_exit()
}

/// Sets the badge bits of notification capability `handle` in its target.
#[inline]
pub fn signal(handle: u64) {
    call(Call::Signal {
        notification: handle,
    });
}

/// Waits for bits in this component's notification word. `timeout_us`
/// of `None` waits forever, `Some(0)` polls. Returns the bits, or `None`
/// on timeout. Prefer [`crate::notification::wait_for`], which keeps bits
/// other waiters of this component are interested in.
#[inline]
pub fn wait(timeout_us: Option<u64>) -> Option<u64> {
    let (status, bits) = call(Call::Wait { timeout_us });
    (status == Status::Ok as u64).then_some(bits)
}

/// Signals `handle` (unless `None`), then waits like [`wait`]: one entry
/// into the core.
#[inline]
pub fn signal_wait(handle: Option<u64>, timeout_us: Option<u64>) -> Option<u64> {
    signal_wait_lazily(handle, timeout_us, false)
}

/// [`signal_wait`] whose timeout, when `lazy`, only looks for work a lost
/// signal left: it does not keep a finished system from ending (see
/// `microvisor_abi::syscall::Syscall::SignalWait`).
#[inline]
pub fn signal_wait_lazily(handle: Option<u64>, timeout_us: Option<u64>, lazy: bool) -> Option<u64> {
    let (status, bits) = call(Call::SignalWait {
        notification: handle,
        timeout_us,
        lazy,
    });
    (status == Status::Ok as u64).then_some(bits)
}

/// Nanoseconds since boot.
#[inline]
pub fn time_ns() -> u64 {
    call(Call::Time).1
}

/// CPU time consumed by the scheduling context `handle` (or this
/// component's own with `None`), in nanoseconds.
#[inline]
pub fn consumed_ns(handle: Option<u64>) -> u64 {
    call(Call::SchedulingRead { context: handle }).1
}

/// [`consumed_ns`] of the context `handle`, and whether its component has
/// ended (exited, faulted, stopped or refused).
#[inline]
pub fn scheduling_read(handle: u64) -> (u64, bool) {
    let (status, consumed) = call(Call::SchedulingRead {
        context: Some(handle),
    });
    (consumed, status == Status::Ended as u64)
}

/// Reconfigures a scheduling context (needs the scheduling-control
/// capability). Budget and period are in microseconds; the period is at
/// most [`microvisor_abi::syscall::MAX_PERIOD_US`]. With `slack`, the
/// context may run on slack once its budget is spent (when nothing with
/// budget left is ready); with a quantum (µs, at most
/// [`microvisor_abi::syscall::MAX_QUANTUM_US`]; 0 for none), once
/// dispatched it keeps the processor against its equals that long.
#[inline]
pub fn configure_scheduling(
    control: u64,
    context: u64,
    (budget_us, period_us): (u64, u64),
    priority: u32,
    (slack, quantum_us): (bool, u64),
) {
    use microvisor_abi::syscall::{SCHEDULING_QUANTUM_SHIFT, SCHEDULING_SLACK};
    let flags = if slack { SCHEDULING_SLACK } else { 0 } | quantum_us << SCHEDULING_QUANTUM_SHIFT;
    call(Call::SchedulingConfigure {
        control,
        context,
        budget_us,
        period_us,
        priority: u64::from(priority) | flags,
    });
}

/// The last fault of a supervised component, if it has one.
#[inline]
pub fn component_fault(handle: u64) -> Option<FaultRecord> {
    let mut record = FaultRecord::default();
    let (status, _) = call(Call::ComponentFault {
        component: handle,
        record: &raw mut record as u64,
    });
    (status == Status::Ok as u64).then_some(record)
}

/// Restarts a supervised component from its image.
#[inline]
pub fn component_restart(handle: u64) {
    call(Call::ComponentRestart { component: handle });
}

/// Stops a supervised component for good.
#[inline]
pub fn component_stop(handle: u64) {
    call(Call::ComponentStop { component: handle });
}

/// How long a supervised component has been busy without coming back
/// to `Wait`, in microseconds (0 while it waits); `None` once it has
/// ended. A supervisor's watchdog compares it with its limit.
#[inline]
pub fn component_status(handle: u64) -> Option<u64> {
    let (status, busy_us) = call(Call::ComponentStatus { component: handle });
    (status == Status::Ok as u64).then_some(busy_us)
}

/// Injects a fault of `kind` into the target of injection capability
/// `handle` (test systems only; see `microvisor_abi::inject`): answers
/// what the core did (an address, a queue index), or `None` when the
/// target is not running.
#[inline]
pub fn inject(
    handle: u64,
    kind: microvisor_abi::inject::Kind,
    argument: u64,
    count: u64,
) -> Option<u64> {
    let (status, value) = call(Call::Inject {
        injection: handle,
        kind: kind as u64,
        argument,
        count,
    });
    (status == Status::Ok as u64).then_some(value)
}

/// Resets the queue mapped at `address` in this component, as a restart
/// of either end would (see `runtime::queue`).
#[inline]
pub fn queue_reset(address: u64) {
    call(Call::QueueReset { address });
}

/// Raw access for components that misuse the interface on purpose (the
/// hostile and fault-injection components): issues call `number` with the
/// given arguments, exactly as given. The message registers of `Call`
/// and `ReplyWait` (`r9`, `r12`..`r15` besides the argument registers)
/// are taken as clobbered, so any number is sound to issue.
pub fn raw(number: u64, args: [u64; 5]) -> (u64, u64) {
    let status: u64;
    let value: u64;
    // SAFETY: as in `issue`, with every register a call may write
    // (including the callee-saved message registers r12..r15) declared
    // clobbered.
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
            lateout("r12") _, lateout("r13") _, lateout("r14") _, lateout("r15") _,
            options(nostack),
        );
    }
    (status, value)
}

fn unreachable_exit() -> ! {
    // The core never returns from Exit or Panic; if it did, trap.
    // SAFETY: ud2 raises #UD, which the core reports as a fault.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack, noreturn)) }
}

/// Enters the guest of vCPU `handle` after writing back the state-page
/// fields in `dirty`; returns the raw exit reason at the next VM exit (or
/// when `limit_us` microseconds passed). See [`crate::vm::Vm::run`].
#[inline]
pub fn vcpu_run(handle: u64, dirty: u64, limit_us: Option<u64>) -> u64 {
    call(Call::VcpuRun {
        vcpu: handle,
        dirty,
        limit_us,
    })
    .1
}

/// Makes vCPU `handle` leave the guest at its next run.
#[inline]
pub fn vcpu_poke(handle: u64) {
    call(Call::VcpuPoke { vcpu: handle });
}

/// Sets the optional intercepts of VMCS `handle`.
#[inline]
pub fn vmcs_control(handle: u64, intercepts: u64) {
    call(Call::VmcsControl {
        vmcs: handle,
        intercepts,
    });
}

/// Resets VMCS `handle` to power-on state.
#[inline]
pub fn vmcs_reset(handle: u64) {
    call(Call::VmcsReset { vmcs: handle });
}

/// Writes one console line prefixed with the name of the VM of VMCS
/// `handle`.
#[inline]
pub fn guest_log(handle: u64, bytes: &[u8]) {
    let text = user_bytes(bytes, LOG_WRITE_MAX);
    call(Call::GuestLog { vmcs: handle, text });
}

/// Takes the console input that waits into `buffer` (at most 256 bytes per
/// call); returns how many bytes were copied (0: none waited). Only the
/// component the system delivers console input to may call it (any other
/// faults).
#[inline]
pub fn console_read(buffer: &mut [u8]) -> usize {
    let (status, count) = call(Call::ConsoleRead {
        buffer: UserBytes {
            address: buffer.as_mut_ptr() as u64,
            length: buffer.len() as u64,
        },
    });
    if status == Status::Ok as u64 {
        (count as usize).min(buffer.len())
    } else {
        0
    }
}

/// The interrupt forwarder lets device line `line` interrupt again (the
/// core masked it when it fired). `false` for a line not forwarded. Only
/// the forwarder may call it (any other component faults).
#[inline]
pub fn interrupt_unmask(line: u64) -> bool {
    call(Call::InterruptUnmask { line }).0 == Status::Ok as u64
}

/// The lines that fired and are still masked (bit n: line n), for the
/// interrupt forwarder (any other component faults): after a restart it
/// rebuilds its state from them.
#[inline]
pub fn interrupt_pending() -> u32 {
    call(Call::InterruptPending).1 as u32
}

/// Reads (`write` false) or writes `width` bytes (1, 2 or 4, aligned) at
/// `offset` of the configuration space of the PCI function this component
/// drives; the value read, or `None` when the core refused the access
/// (BARs and the expansion-ROM address are not writable). A component
/// without a PCI function faults.
#[inline]
pub fn pci_config(offset: u64, width: u64, write: bool, value: u64) -> Option<u32> {
    let (status, read) = call(Call::PciConfig {
        offset,
        width,
        write,
        value,
    });
    (status == Status::Ok as u64).then_some(read as u32)
}
