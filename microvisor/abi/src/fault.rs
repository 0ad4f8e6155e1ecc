//! What the core records when it stops a component.
//!
//! A fault is anything that ends a component against its will: a CPU
//! exception raised in ring 3, a misused system call, a panic reported by the
//! component's runtime. The core prints the report on the console and (from
//! the supervision work on) hands it to the component's supervisor.

/// The class of a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum FaultKind {
    /// A page fault: `address` is CR2, `detail` the error code.
    PageFault = 1,
    /// An invalid or undefined instruction (#UD).
    InvalidInstruction = 2,
    /// A general-protection fault (#GP), e.g. a privileged instruction.
    GeneralProtection = 3,
    /// Another CPU exception: `detail` is the vector.
    Exception = 4,
    /// A system call with an unknown number: `detail` is the number.
    BadSyscall = 5,
    /// A system-call argument pointing outside the caller's readable memory:
    /// `address` is the bad pointer, `detail` the length.
    BadPointer = 6,
    /// A system-call argument out of range: `detail` is the argument's value.
    BadArgument = 7,
    /// The component's own panic handler reported a panic.
    Panic = 8,
}

impl FaultKind {
    /// A short human description, used in console reports.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::PageFault => "page fault",
            Self::InvalidInstruction => "invalid instruction",
            Self::GeneralProtection => "general protection fault",
            Self::Exception => "CPU exception",
            Self::BadSyscall => "unknown system call",
            Self::BadPointer => "bad pointer passed to a system call",
            Self::BadArgument => "bad system-call argument",
            Self::Panic => "panic",
        }
    }
}

/// Page-fault error-code bits (Intel SDM vol. 3, 4.7), for reports.
pub mod page_fault {
    /// The page was present (a protection violation, not a missing page).
    pub const PRESENT: u64 = 1 << 0;
    /// The access was a write.
    pub const WRITE: u64 = 1 << 1;
    /// The access came from ring 3.
    pub const USER: u64 = 1 << 2;
    /// A reserved bit was set in a paging entry.
    pub const RESERVED: u64 = 1 << 3;
    /// The access was an instruction fetch.
    pub const FETCH: u64 = 1 << 4;
}
