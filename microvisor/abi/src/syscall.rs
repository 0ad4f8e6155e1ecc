//! System-call numbers and the register convention.
//!
//! A component enters the core with the `syscall` instruction: the call
//! number in `rax`, arguments in `rdi`, `rsi`, `rdx`, `r10`, `r8`, `r9`.
//! The core answers in `rax` (a [`Status`]) and `rdx` (a value). `rcx` and
//! `r11` are clobbered by the instruction itself; every other caller-saved
//! register may be clobbered too (the call behaves like a function call),
//! callee-saved registers are preserved.
//!
//! Misuse — an unknown number, a pointer that is not readable user memory, a
//! length out of range — is not an error code: the core stops the caller and
//! reports a fault (see [`crate::fault`]). Error codes are reserved for
//! conditions a correct program can meet.
//!
//! Capabilities are named by handles: the slot index in the caller's
//! capability table in bits 0..16 and the caller's generation (its restart
//! count plus one) in bits 32..64. A handle with a wrong generation (kept
//! from a previous life, or forged) or an index past the table faults the
//! caller, as does a capability of the wrong kind.

/// The system calls, by number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Syscall {
    /// Does nothing and returns [`Status::Ok`]; measures the entry/exit path.
    Null = 0,
    /// Write bytes (`rdi` = address, `rsi` = length, at most
    /// [`LOG_WRITE_MAX`]) to the system console, as one line prefixed with the
    /// component's name. Trailing newlines are dropped.
    LogWrite = 1,
    /// Give the CPU to the next runnable thread.
    Yield = 2,
    /// End the component: `rdi` is its exit code (0 = success). Never returns.
    Exit = 3,
    /// The component panicked: `rdi`/`rsi` are the message. The core stops
    /// it and reports a fault of kind [`crate::fault::FaultKind::Panic`].
    Panic = 4,
    /// Signal a notification: `rdi` is a [`crate::spec::CapabilityKind::Notification`]
    /// capability handle; its badge bits are OR-ed into the target's word.
    Signal = 5,
    /// Wait on the caller's own notification word: `rdi` is a timeout in
    /// microseconds ([`WAIT_FOREVER`], or 0 to poll). Answers the bits that
    /// were set (and clears them) in `rdx`, or [`Status::TimedOut`].
    Wait = 6,
    /// Nanoseconds since boot, in `rdx`.
    Time = 7,
    /// CPU time consumed by a scheduling context, in nanoseconds, in `rdx`:
    /// `rdi` is a [`crate::spec::CapabilityKind::SchedulingContext`] handle or
    /// [`SELF`].
    SchedulingRead = 8,
    /// Reconfigure a scheduling context: `rdi` the scheduling-control
    /// handle, `rsi` a scheduling-context handle, `rdx` budget (µs), `r10`
    /// period (µs), `r8` priority.
    SchedulingConfigure = 9,
    /// Read the last fault of a supervised component: `rdi` a
    /// component-control handle, `rsi` the address of a
    /// [`crate::fault::FaultRecord`] to fill. [`Status::NoFault`] if none.
    ComponentFault = 10,
    /// Restart a supervised component from its image: `rdi` a
    /// component-control handle. Memory is re-initialised, its queues are
    /// reset and their generation bumped so peers notice.
    ComponentRestart = 11,
    /// Stop a supervised component (it stays stopped): `rdi` a handle.
    ComponentStop = 12,
    /// [`Syscall::Signal`] with `rdi` (unless it is [`NO_SIGNAL`]), then
    /// [`Syscall::Wait`] with the timeout in `rsi`: one entry for "wake the
    /// peer, then sleep until it answers".
    SignalWait = 13,
    /// Enter the guest: `rdi` a [`crate::spec::CapabilityKind::Vcpu`]
    /// handle, `rsi` a mask of [`crate::vcpu::dirty`] bits naming the
    /// state-page fields to write back first, `rdx` a time limit in
    /// microseconds ([`WAIT_FOREVER`] for none), after which the call returns
    /// [`crate::vcpu::ExitReason::TimeLimit`]. Returns at the next VM exit
    /// with the [`crate::vcpu::ExitReason`] in `rdx` and the exit and guest
    /// state in the VM's state page. Host interrupts that arrive meanwhile
    /// are handled by the core without returning.
    VcpuRun = 14,
    /// Make the vCPU `rdi` leave the guest (or not enter it) with
    /// [`crate::vcpu::ExitReason::Poked`] at its next `VcpuRun`.
    VcpuPoke = 15,
    /// Set the optional intercepts of the VMCS `rdi` to the
    /// [`crate::vcpu::intercept`] mask in `rsi`.
    VmcsControl = 16,
    /// Reset the VMCS `rdi` to power-on state: registers zeroed, intercepts
    /// back to the core's set, a fresh address-space tag for the TLB. Guest
    /// memory is left to the world switcher, which has it mapped.
    VmcsReset = 17,
    /// Like [`Syscall::LogWrite`], but the line is prefixed with the name of
    /// the VM whose VMCS handle is in `rdi` (`rsi`/`rdx` are the text).
    GuestLog = 18,
}

/// [`Syscall::SignalWait`]'s `rdi` when there is nothing to signal.
pub const NO_SIGNAL: u64 = u64::MAX;

/// [`Syscall::Wait`] timeout meaning "no timeout".
pub const WAIT_FOREVER: u64 = u64::MAX;
/// [`Syscall::SchedulingRead`] argument meaning "the caller's own context".
pub const SELF: u64 = u64::MAX;

impl Syscall {
    /// Decodes a call number, or `None` when it names no call.
    pub const fn from_number(number: u64) -> Option<Self> {
        Some(match number {
            0 => Self::Null,
            1 => Self::LogWrite,
            2 => Self::Yield,
            3 => Self::Exit,
            4 => Self::Panic,
            5 => Self::Signal,
            6 => Self::Wait,
            7 => Self::Time,
            8 => Self::SchedulingRead,
            9 => Self::SchedulingConfigure,
            10 => Self::ComponentFault,
            11 => Self::ComponentRestart,
            12 => Self::ComponentStop,
            13 => Self::SignalWait,
            14 => Self::VcpuRun,
            15 => Self::VcpuPoke,
            16 => Self::VmcsControl,
            17 => Self::VmcsReset,
            18 => Self::GuestLog,
            _ => return None,
        })
    }
}

/// The longest message one [`Syscall::LogWrite`] or [`Syscall::Panic`] takes.
pub const LOG_WRITE_MAX: u64 = 512;

/// What a system call answers in `rax`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Status {
    /// The call did what was asked.
    Ok = 0,
    /// [`Syscall::Wait`] ended by its timeout with no bit set.
    TimedOut = 1,
    /// [`Syscall::ComponentFault`]: the component has not faulted.
    NoFault = 2,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for call in [
            Syscall::Null,
            Syscall::LogWrite,
            Syscall::Yield,
            Syscall::Exit,
            Syscall::Panic,
            Syscall::Signal,
            Syscall::Wait,
            Syscall::Time,
            Syscall::SchedulingRead,
            Syscall::SchedulingConfigure,
            Syscall::ComponentFault,
            Syscall::ComponentRestart,
            Syscall::ComponentStop,
            Syscall::SignalWait,
            Syscall::VcpuRun,
            Syscall::VcpuPoke,
            Syscall::VmcsControl,
            Syscall::VmcsReset,
            Syscall::GuestLog,
        ] {
            assert_eq!(Syscall::from_number(call as u64), Some(call));
        }
        assert_eq!(Syscall::from_number(19), None);
        assert_eq!(Syscall::from_number(u64::MAX), None);
    }
}
