//! What the core records when it stops a component.
//!
//! A fault is anything that ends a component against its will: a CPU
//! exception raised in ring 3, a misused system call, a panic reported by the
//! component's runtime. The core prints the report on the console and (from
//! the supervision work on) hands it to the component's supervisor.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

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
    /// A capability handle that is stale, forged or of the wrong kind:
    /// `detail` is the handle.
    BadCapability = 9,
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
            Self::BadCapability => "bad capability",
        }
    }
}

impl FaultKind {
    /// Decodes a kind, or `None`.
    pub const fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => Self::PageFault,
            2 => Self::InvalidInstruction,
            3 => Self::GeneralProtection,
            4 => Self::Exception,
            5 => Self::BadSyscall,
            6 => Self::BadPointer,
            7 => Self::BadArgument,
            8 => Self::Panic,
            9 => Self::BadCapability,
            _ => return None,
        })
    }
}

/// What a supervisor reads about a faulted component
/// ([`crate::syscall::Syscall::ComponentFault`]).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct FaultRecord {
    /// A [`FaultKind`] as `u32`.
    pub kind: u32,
    /// How many times the component has faulted since boot.
    pub count: u32,
    /// The faulting address (page faults, bad pointers), else 0.
    pub address: u64,
    /// Error code, vector, call number or argument, by kind.
    pub detail: u64,
    /// The instruction pointer at the fault.
    pub rip: u64,
    /// The component's generation when it faulted.
    pub generation: u64,
}

const _: () = assert!(size_of::<FaultRecord>() == 40);

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
