//! System-call numbers and the register convention.
//!
//! A component enters the core with the `syscall` instruction: the call
//! number in `rax`, arguments in `rdi`, `rsi`, `rdx`, `r10`, `r8`, `r9`.
//! The core answers in `rax` (a [`Status`]) and `rdx` (a value). `rcx` and
//! `r11` are clobbered by the instruction itself; every other caller-saved
//! register may be clobbered too (the call behaves like a function call),
//! callee-saved registers are preserved — except by [`Syscall::Call`] and
//! [`Syscall::ReplyWait`], whose messages travel in
//! [`MESSAGE_REGISTERS`], four of them callee-saved (`r12`..`r15`).
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
    /// period (µs), `r8` priority in its low 32 bits, with
    /// [`SCHEDULING_SLACK`] set if the context may run on slack once its
    /// budget is spent (when nothing with budget left is ready), and a
    /// quantum in microseconds from bit [`SCHEDULING_QUANTUM_SHIFT`] up.
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
    /// A component that has faulted (or not yet started) is held where it
    /// is: it stays stopped, and the calls waiting for its next life end
    /// with [`Status::Unanswered`].
    ComponentStop = 12,
    /// [`Syscall::Signal`] with `rdi` (unless it is [`NO_SIGNAL`]), then
    /// [`Syscall::Wait`] with the timeout in `rsi`: one entry for "wake the
    /// peer, then sleep until it answers". With `rdx` = [`LAZY_TIMEOUT`]
    /// the timeout only looks for work a lost signal left (the runtime's
    /// recheck of its queues): it does not keep a system whose components
    /// all wait with nothing else to come from ending.
    SignalWait = 13,
    /// Enter the guest: `rdi` a [`crate::spec::CapabilityKind::Vcpu`]
    /// handle, `rsi` a mask of [`crate::vcpu::dirty`] bits naming the
    /// state-page fields to write back first, `rdx` a time limit in
    /// microseconds ([`WAIT_FOREVER`] for none), after which the call returns
    /// [`crate::vcpu::ExitReason::TimeLimit`]. Returns at the next VM exit
    /// with the [`crate::vcpu::ExitReason`] in `rdx` and the exit and guest
    /// state in the VM's state page. Host interrupts that arrive meanwhile
    /// are handled by the core without returning. A run that returns
    /// without entering (a poke, or a limit already passed) leaves the
    /// state page as it was and keeps its mask: those fields are written
    /// back at the next entry, with that run's own.
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
    /// Take the bytes the system console received (`rdi` = address, `rsi`
    /// = length): answers how many were copied in `rdx` (0 when none
    /// waited). Only the component the console's input is delivered to
    /// (the interrupt line [`CONSOLE_LINE`], granted by `console_input`)
    /// may call it; any other faults.
    ConsoleRead = 19,
    /// The interrupt forwarder lets device line `rdi` interrupt again: the
    /// core masks a line when it fires (and sets the forwarder's bit for
    /// it) until this call. Only the forwarder may make it, for a line
    /// granted to it; anything else faults.
    InterruptUnmask = 20,
    /// The interrupt forwarder asks which lines fired and are still masked
    /// (bit n: line n), in `rdx`: after a restart it rebuilds its state
    /// from this. Only the forwarder may make it.
    InterruptPending = 21,
    /// Reads (`rdx` = 0) or writes (`rdx` = 1, value `r10`) `rsi` bytes
    /// (1, 2 or 4, aligned) at offset `rdi` of the configuration space of
    /// the PCI function the caller drives; the value read is returned. The
    /// BARs and the expansion-ROM address may not be written (a driver
    /// could move its device over memory it does not own). A caller
    /// without a PCI function faults.
    PciConfig = 22,
    /// Injects a fault into a component (test systems only): `rdi` an
    /// [`crate::spec::CapabilityKind::Injection`] handle, `rsi` the
    /// [`crate::inject::Kind`], `rdx` its argument (a duration in
    /// microseconds, a seed or an address), `r10` a count (bytes or
    /// messages). Answers [`Status::Ended`] when the target is not
    /// running (exited, faulted, stopped, not started), else what was done
    /// in `rdx` (see [`crate::inject`]).
    Inject = 23,
    /// How long a supervised component has been unresponsive: `rdi` a
    /// component-control handle; answers in `rdx` the microseconds since
    /// it became runnable without having come back to `Wait` (0 while it
    /// waits), the figure a supervisor's watchdog compares with its
    /// limit; [`Status::Ended`] when it is not running.
    ComponentStatus = 24,
    /// Resets a queue the caller is an end of, and every other queue
    /// between the same two components, as a restart of either end would
    /// (indices and stamps cleared, generations bumped, the other end
    /// woken on each): `rdi` the address of the queue in the caller. An end that finds the
    /// indices impossible (the ring holding more than its slots, a stamp
    /// that names another message) recovers with this instead of reading
    /// stale slots. An address that is no queue of the caller faults.
    QueueReset = 25,
    /// Call a server and wait for its answer: `rdi` a
    /// [`crate::spec::CapabilityKind::Endpoint`] handle, `rsi` a timeout
    /// in microseconds for the whole call ([`WAIT_FOREVER`] for none; 0,
    /// a call that could only time out, faults the caller), the request
    /// in the [`MESSAGE_REGISTERS`]. Answers the server's reply in the
    /// same registers with [`Status::Ok`]; [`Status::TimedOut`] when the
    /// timeout ended the call first (the request may have been taken,
    /// and its reply is dropped; a timeout is noticed at the core's next
    /// scheduling decision, so a reply may still win shortly after it);
    /// [`Status::Unanswered`] when the server took the request and then
    /// ended (faulted, exited, stopped or restarted) or declined it, or
    /// cannot serve again (it exited, was stopped or held by its
    /// supervisor, or faulted with no live supervisor to start it). A
    /// request the server has not taken waits across its restart for its
    /// next life (or until the timeout).
    /// The message registers include callee-saved `r12`..`r15`: the
    /// runtime's wrapper names them all as clobbered.
    Call = 26,
    /// A server answers its last caller and waits for the next call:
    /// `rdi` is [`REPLY`] to send the reply in the [`MESSAGE_REGISTERS`]
    /// to the caller whose request it took last (dropped when that caller
    /// has since ended or timed out), or [`NO_REPLY`] to only wait (a
    /// request taken and not answered ends with [`Status::Unanswered`]);
    /// `rsi`
    /// a timeout as [`Syscall::Wait`]'s. Answers [`Status::Ok`] with the
    /// caller's badge (never 0) in `rdi` and its request in the message
    /// registers (of the waiting callers, the highest priority first);
    /// or, when notification bits were pending or arrive first, [`Status::Ok`] with 0 in `rdi` and the bits in `rsi` (the
    /// server's notification word is bound to its endpoint, so one thread
    /// serves calls and signals); or [`Status::TimedOut`].
    ReplyWait = 27,
}

/// The registers a [`Syscall::Call`] request or reply travels in, in
/// message-word order: 8 words, 64 bytes.
pub const MESSAGE_REGISTERS: [&str; MESSAGE_WORDS] =
    ["rdx", "r10", "r8", "r9", "r12", "r13", "r14", "r15"];

/// Words in one call's request or reply.
pub const MESSAGE_WORDS: usize = 8;

/// [`Syscall::ReplyWait`]'s `rdi`: send the reply.
pub const REPLY: u64 = 1;

/// [`Syscall::ReplyWait`]'s `rdi`: no reply to send (the first wait, or
/// after a call the server will not answer).
pub const NO_REPLY: u64 = 0;

/// The interrupt line of the system console (COM1's IRQ 4). The core owns
/// the device; a component granted this line is told (by the grant's
/// notification bit) when input arrived and takes it with
/// [`Syscall::ConsoleRead`].
pub const CONSOLE_LINE: u32 = 4;

/// [`Syscall::SignalWait`]'s `rdi` when there is nothing to signal.
pub const NO_SIGNAL: u64 = u64::MAX;

/// [`Syscall::SignalWait`]'s `rdx`: the timeout is lazy (see there).
pub const LAZY_TIMEOUT: u64 = 1;

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
            19 => Self::ConsoleRead,
            20 => Self::InterruptUnmask,
            21 => Self::InterruptPending,
            22 => Self::PciConfig,
            23 => Self::Inject,
            24 => Self::ComponentStatus,
            25 => Self::QueueReset,
            26 => Self::Call,
            27 => Self::ReplyWait,
            _ => return None,
        })
    }
}

/// In [`Syscall::SchedulingConfigure`]'s `r8`, above the priority: the
/// context may run on slack once its budget is spent. Bits 33..40 must be
/// clear.
pub const SCHEDULING_SLACK: u64 = 1 << 32;

/// In [`Syscall::SchedulingConfigure`]'s `r8`, from this bit up: the
/// context's quantum in microseconds (at most [`MAX_QUANTUM_US`]). With a
/// quantum, a thread once dispatched keeps the processor against ready
/// threads of its own priority and rank until the quantum has passed (or
/// it waits or yields); 0 is the core's round robin, which gives the
/// processor to the next equal at every scheduling decision and at least
/// every 10 ms.
pub const SCHEDULING_QUANTUM_SHIFT: u32 = 40;

/// The longest quantum, in microseconds (1 s).
pub const MAX_QUANTUM_US: u64 = 1_000_000;

/// The longest scheduling-context period [`Syscall::SchedulingConfigure`]
/// accepts, in microseconds (10 s); budgets are at most the period. The one
/// limit for periods: `capdl` refuses longer budgets and periods in a
/// system file, and the boot spec's check ([`crate::spec`]) longer ones in
/// a spec.
pub const MAX_PERIOD_US: u64 = 10_000_000;

/// The registers of one system call: the number in `rax` and the arguments
/// in `rdi`, `rsi`, `rdx`, `r10`, `r8`, in that order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Registers {
    pub number: u64,
    pub arguments: [u64; 5],
}

/// Bytes in the caller's memory, as the caller claims them: an allegation
/// until the core has checked every page is the caller's (see the core's
/// `user` module).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserBytes {
    pub address: u64,
    pub length: u64,
}

/// A system call with its arguments named. [`Call::decode`] and
/// [`Call::encode`] are the only translation between calls and registers,
/// shared by the core and the runtime. `None` where a call takes an
/// optional handle or time stands for the register value `u64::MAX`
/// ([`NO_SIGNAL`], [`SELF`], [`WAIT_FOREVER`]); capability handles are
/// checked by the core, not here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Null,
    LogWrite {
        text: UserBytes,
    },
    Yield,
    Exit {
        code: i32,
    },
    Panic {
        message: UserBytes,
    },
    Signal {
        notification: u64,
    },
    /// `timeout_us`: `None` waits forever, `Some(0)` polls.
    Wait {
        timeout_us: Option<u64>,
    },
    Time,
    /// `context`: `None` is the caller's own.
    SchedulingRead {
        context: Option<u64>,
    },
    SchedulingConfigure {
        control: u64,
        context: u64,
        budget_us: u64,
        period_us: u64,
        priority: u64,
    },
    ComponentFault {
        component: u64,
        record: u64,
    },
    ComponentRestart {
        component: u64,
    },
    ComponentStop {
        component: u64,
    },
    SignalWait {
        notification: Option<u64>,
        timeout_us: Option<u64>,
        /// The timeout does not keep a finished system alive.
        lazy: bool,
    },
    VcpuRun {
        vcpu: u64,
        dirty: u64,
        limit_us: Option<u64>,
    },
    VcpuPoke {
        vcpu: u64,
    },
    VmcsControl {
        vmcs: u64,
        intercepts: u64,
    },
    VmcsReset {
        vmcs: u64,
    },
    GuestLog {
        vmcs: u64,
        text: UserBytes,
    },
    ConsoleRead {
        buffer: UserBytes,
    },
    InterruptUnmask {
        line: u64,
    },
    InterruptPending,
    PciConfig {
        offset: u64,
        width: u64,
        write: bool,
        value: u64,
    },
    Inject {
        injection: u64,
        kind: u64,
        argument: u64,
        count: u64,
    },
    ComponentStatus {
        component: u64,
    },
    QueueReset {
        address: u64,
    },
    /// The message travels in [`MESSAGE_REGISTERS`], outside
    /// [`Registers`].
    Call {
        endpoint: u64,
        timeout_us: Option<u64>,
    },
    /// `reply`: `rdi` was [`REPLY`] (anything else is [`NO_REPLY`]).
    ReplyWait {
        reply: bool,
        timeout_us: Option<u64>,
    },
}

/// Two argument registers as claimed bytes.
#[inline(always)]
const fn bytes(address: u64, length: u64) -> UserBytes {
    UserBytes { address, length }
}

/// `u64::MAX` as `None`.
#[inline(always)]
const fn optional(value: u64) -> Option<u64> {
    if value == u64::MAX { None } else { Some(value) }
}

/// `None` as `u64::MAX`.
#[inline(always)]
const fn or_max(value: Option<u64>) -> u64 {
    match value {
        Some(value) => value,
        None => u64::MAX,
    }
}

impl Call {
    /// The call `registers` make, or `Err(number)` when the number names
    /// no call. Argument registers a call does not use are ignored.
    #[inline(always)]
    pub const fn decode(registers: Registers) -> Result<Self, u64> {
        let [a0, a1, a2, a3, a4] = registers.arguments;
        let Some(call) = Syscall::from_number(registers.number) else {
            return Err(registers.number);
        };
        Ok(match call {
            Syscall::Null => Self::Null,
            Syscall::LogWrite => Self::LogWrite {
                text: bytes(a0, a1),
            },
            Syscall::Yield => Self::Yield,
            Syscall::Exit => Self::Exit {
                code: a0 as u32 as i32,
            },
            Syscall::Panic => Self::Panic {
                message: bytes(a0, a1),
            },
            Syscall::Signal => Self::Signal { notification: a0 },
            Syscall::Wait => Self::Wait {
                timeout_us: optional(a0),
            },
            Syscall::Time => Self::Time,
            Syscall::SchedulingRead => Self::SchedulingRead {
                context: optional(a0),
            },
            Syscall::SchedulingConfigure => Self::SchedulingConfigure {
                control: a0,
                context: a1,
                budget_us: a2,
                period_us: a3,
                priority: a4,
            },
            Syscall::ComponentFault => Self::ComponentFault {
                component: a0,
                record: a1,
            },
            Syscall::ComponentRestart => Self::ComponentRestart { component: a0 },
            Syscall::ComponentStop => Self::ComponentStop { component: a0 },
            Syscall::SignalWait => Self::SignalWait {
                notification: optional(a0),
                timeout_us: optional(a1),
                lazy: a2 == LAZY_TIMEOUT,
            },
            Syscall::VcpuRun => Self::VcpuRun {
                vcpu: a0,
                dirty: a1,
                limit_us: optional(a2),
            },
            Syscall::VcpuPoke => Self::VcpuPoke { vcpu: a0 },
            Syscall::VmcsControl => Self::VmcsControl {
                vmcs: a0,
                intercepts: a1,
            },
            Syscall::VmcsReset => Self::VmcsReset { vmcs: a0 },
            Syscall::GuestLog => Self::GuestLog {
                vmcs: a0,
                text: bytes(a1, a2),
            },
            Syscall::ConsoleRead => Self::ConsoleRead {
                buffer: bytes(a0, a1),
            },
            Syscall::InterruptUnmask => Self::InterruptUnmask { line: a0 },
            Syscall::InterruptPending => Self::InterruptPending,
            Syscall::PciConfig => Self::PciConfig {
                offset: a0,
                width: a1,
                write: a2 != 0,
                value: a3,
            },
            Syscall::Inject => Self::Inject {
                injection: a0,
                kind: a1,
                argument: a2,
                count: a3,
            },
            Syscall::ComponentStatus => Self::ComponentStatus { component: a0 },
            Syscall::QueueReset => Self::QueueReset { address: a0 },
            Syscall::Call => Self::Call {
                endpoint: a0,
                timeout_us: optional(a1),
            },
            Syscall::ReplyWait => Self::ReplyWait {
                reply: a0 == REPLY,
                timeout_us: optional(a1),
            },
        })
    }

    /// The registers that make this call (unused arguments are 0).
    #[inline(always)]
    pub const fn encode(&self) -> Registers {
        let (call, arguments) = match *self {
            Self::Null => (Syscall::Null, [0; 5]),
            Self::LogWrite { text } => (Syscall::LogWrite, [text.address, text.length, 0, 0, 0]),
            Self::Yield => (Syscall::Yield, [0; 5]),
            Self::Exit { code } => (Syscall::Exit, [code as u32 as u64, 0, 0, 0, 0]),
            Self::Panic { message } => (Syscall::Panic, [message.address, message.length, 0, 0, 0]),
            Self::Signal { notification } => (Syscall::Signal, [notification, 0, 0, 0, 0]),
            Self::Wait { timeout_us } => (Syscall::Wait, [or_max(timeout_us), 0, 0, 0, 0]),
            Self::Time => (Syscall::Time, [0; 5]),
            Self::SchedulingRead { context } => {
                (Syscall::SchedulingRead, [or_max(context), 0, 0, 0, 0])
            }
            Self::SchedulingConfigure {
                control,
                context,
                budget_us,
                period_us,
                priority,
            } => (
                Syscall::SchedulingConfigure,
                [control, context, budget_us, period_us, priority],
            ),
            Self::ComponentFault { component, record } => {
                (Syscall::ComponentFault, [component, record, 0, 0, 0])
            }
            Self::ComponentRestart { component } => {
                (Syscall::ComponentRestart, [component, 0, 0, 0, 0])
            }
            Self::ComponentStop { component } => (Syscall::ComponentStop, [component, 0, 0, 0, 0]),
            Self::SignalWait {
                notification,
                timeout_us,
                lazy,
            } => (
                Syscall::SignalWait,
                [
                    or_max(notification),
                    or_max(timeout_us),
                    if lazy { LAZY_TIMEOUT } else { 0 },
                    0,
                    0,
                ],
            ),
            Self::VcpuRun {
                vcpu,
                dirty,
                limit_us,
            } => (Syscall::VcpuRun, [vcpu, dirty, or_max(limit_us), 0, 0]),
            Self::VcpuPoke { vcpu } => (Syscall::VcpuPoke, [vcpu, 0, 0, 0, 0]),
            Self::VmcsControl { vmcs, intercepts } => {
                (Syscall::VmcsControl, [vmcs, intercepts, 0, 0, 0])
            }
            Self::VmcsReset { vmcs } => (Syscall::VmcsReset, [vmcs, 0, 0, 0, 0]),
            Self::GuestLog { vmcs, text } => {
                (Syscall::GuestLog, [vmcs, text.address, text.length, 0, 0])
            }
            Self::ConsoleRead { buffer } => (
                Syscall::ConsoleRead,
                [buffer.address, buffer.length, 0, 0, 0],
            ),
            Self::InterruptUnmask { line } => (Syscall::InterruptUnmask, [line, 0, 0, 0, 0]),
            Self::InterruptPending => (Syscall::InterruptPending, [0; 5]),
            Self::PciConfig {
                offset,
                width,
                write,
                value,
            } => (Syscall::PciConfig, [offset, width, write as u64, value, 0]),
            Self::Inject {
                injection,
                kind,
                argument,
                count,
            } => (Syscall::Inject, [injection, kind, argument, count, 0]),
            Self::ComponentStatus { component } => {
                (Syscall::ComponentStatus, [component, 0, 0, 0, 0])
            }
            Self::QueueReset { address } => (Syscall::QueueReset, [address, 0, 0, 0, 0]),
            Self::Call {
                endpoint,
                timeout_us,
            } => (Syscall::Call, [endpoint, or_max(timeout_us), 0, 0, 0]),
            Self::ReplyWait { reply, timeout_us } => (
                Syscall::ReplyWait,
                [
                    if reply { REPLY } else { NO_REPLY },
                    or_max(timeout_us),
                    0,
                    0,
                    0,
                ],
            ),
        };
        Registers {
            number: call as u64,
            arguments,
        }
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
    /// [`Syscall::SchedulingRead`]: the context's component has ended
    /// (exited, faulted, stopped or refused); its consumed time is still
    /// answered.
    Ended = 3,
    /// [`Syscall::Call`]: the server took the request and will not
    /// answer it — it ended (faulted, exited, stopped, restarted) or
    /// declined ([`Syscall::ReplyWait`] with [`NO_REPLY`]); it may or may
    /// not have carried the request out — or it has ended for good.
    Unanswered = 4,
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
            Syscall::ConsoleRead,
            Syscall::InterruptUnmask,
            Syscall::InterruptPending,
            Syscall::PciConfig,
            Syscall::Inject,
            Syscall::ComponentStatus,
            Syscall::QueueReset,
            Syscall::Call,
            Syscall::ReplyWait,
        ] {
            assert_eq!(Syscall::from_number(call as u64), Some(call));
        }
        assert_eq!(Syscall::from_number(28), None);
        assert_eq!(Syscall::from_number(u64::MAX), None);
    }

    fn registers(number: u64, arguments: [u64; 5]) -> Registers {
        Registers { number, arguments }
    }

    #[test]
    fn calls_decode_with_named_arguments() {
        assert_eq!(
            Call::decode(registers(14, [0x1_0000_0002, 0b101, 250, 9, 9])),
            Ok(Call::VcpuRun {
                vcpu: 0x1_0000_0002,
                dirty: 0b101,
                limit_us: Some(250),
            })
        );
        assert_eq!(
            Call::decode(registers(13, [NO_SIGNAL, WAIT_FOREVER, 0, 0, 0])),
            Ok(Call::SignalWait {
                notification: None,
                timeout_us: None,
                lazy: false,
            })
        );
        assert_eq!(
            Call::decode(registers(3, [0xffff_ffff_ffff_fffe, 0, 0, 0, 0])),
            Ok(Call::Exit { code: -2 })
        );
        assert_eq!(
            Call::decode(registers(18, [7, 0x20_0000, 12, 0, 0])),
            Ok(Call::GuestLog {
                vmcs: 7,
                text: UserBytes {
                    address: 0x20_0000,
                    length: 12,
                },
            })
        );
        assert_eq!(
            Call::decode(registers(19, [0x20_0000, 64, 0, 0, 0])),
            Ok(Call::ConsoleRead {
                buffer: UserBytes {
                    address: 0x20_0000,
                    length: 64,
                },
            })
        );
        assert_eq!(
            Call::decode(registers(20, [8, 0, 0, 0, 0])),
            Ok(Call::InterruptUnmask { line: 8 })
        );
        assert_eq!(
            Call::decode(registers(21, [0; 5])),
            Ok(Call::InterruptPending)
        );
        assert_eq!(
            Call::decode(registers(22, [0x3c, 1, 1, 0xff, 0])),
            Ok(Call::PciConfig {
                offset: 0x3c,
                width: 1,
                write: true,
                value: 0xff
            })
        );
        assert_eq!(
            Call::decode(registers(23, [0x1_0000_0004, 3, 99, 16, 7])),
            Ok(Call::Inject {
                injection: 0x1_0000_0004,
                kind: 3,
                argument: 99,
                count: 16,
            })
        );
        assert_eq!(
            Call::decode(registers(24, [0x1_0000_0001, 0, 0, 0, 0])),
            Ok(Call::ComponentStatus {
                component: 0x1_0000_0001
            })
        );
        assert_eq!(
            Call::decode(registers(25, [0x4000_0000, 0, 0, 0, 0])),
            Ok(Call::QueueReset {
                address: 0x4000_0000
            })
        );
        assert_eq!(
            Call::decode(registers(26, [0x1_0000_0003, WAIT_FOREVER, 7, 7, 7])),
            Ok(Call::Call {
                endpoint: 0x1_0000_0003,
                timeout_us: None,
            })
        );
        assert_eq!(
            Call::decode(registers(27, [REPLY, 500, 7, 7, 7])),
            Ok(Call::ReplyWait {
                reply: true,
                timeout_us: Some(500),
            })
        );
        // Anything but REPLY only waits.
        assert_eq!(
            Call::decode(registers(27, [2, WAIT_FOREVER, 0, 0, 0])),
            Ok(Call::ReplyWait {
                reply: false,
                timeout_us: None,
            })
        );
        assert_eq!(Call::decode(registers(28, [0; 5])), Err(28));
        assert_eq!(Call::decode(registers(u64::MAX, [0; 5])), Err(u64::MAX));
        assert_eq!(Call::Null.encode(), registers(0, [0; 5]));
        assert_eq!(
            Call::Wait {
                timeout_us: Some(0)
            }
            .encode(),
            registers(6, [0; 5])
        );
        assert_eq!(
            Call::SchedulingRead { context: None }.encode(),
            registers(8, [SELF, 0, 0, 0, 0])
        );
    }

    proptest::proptest! {
        /// Whatever registers a component passes, the call they decode to
        /// encodes to registers that decode to the same call, and unknown
        /// numbers are refused with the number.
        #[test]
        fn decode_and_encode_agree(number in 0u64..30, arguments in proptest::array::uniform5(proptest::prelude::any::<u64>())) {
            match Call::decode(registers(number, arguments)) {
                Ok(call) => {
                    let encoded = call.encode();
                    proptest::prop_assert_eq!(encoded.number, number);
                    proptest::prop_assert_eq!(Call::decode(encoded), Ok(call));
                    // Arguments the call uses are passed through unchanged.
                    for (sent, kept) in arguments.iter().zip(encoded.arguments) {
                        // (A 32-bit field; PciConfig's write flag, any
                        // nonzero value, is 1.)
                        proptest::prop_assert!(kept == 0 || kept == *sent || (number == 3 && kept == *sent & 0xffff_ffff) || (number == 22 && kept == 1) || (number == 27 && kept == REPLY));
                    }
                }
                Err(refused) => {
                    proptest::prop_assert_eq!(refused, number);
                    proptest::prop_assert!(Syscall::from_number(number).is_none());
                }
            }
        }
    }
}
