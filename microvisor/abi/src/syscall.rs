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
}

impl Syscall {
    /// Decodes a call number, or `None` when it names no call.
    pub const fn from_number(number: u64) -> Option<Self> {
        Some(match number {
            0 => Self::Null,
            1 => Self::LogWrite,
            2 => Self::Yield,
            3 => Self::Exit,
            4 => Self::Panic,
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
        ] {
            assert_eq!(Syscall::from_number(call as u64), Some(call));
        }
        assert_eq!(Syscall::from_number(5), None);
        assert_eq!(Syscall::from_number(u64::MAX), None);
    }
}
