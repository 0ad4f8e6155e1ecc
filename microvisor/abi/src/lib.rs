//! The binary contract shared by the microvisor core, the ring-3 components
//! and the host build tool.
//!
//! Everything here is plain data: system-call numbers and register
//! conventions ([`syscall`]), the fault report a stopped component leaves
//! behind ([`fault`]), the start-information page a component finds at entry
//! ([`start`]), the boot image that carries the components into the
//! machine ([`image`]) and the system description inside it ([`spec`]). Nothing in this crate trusts its input: every parser
//! returns an error naming what is wrong instead of panicking, because the
//! core reads these bytes before anything else can check them.
#![cfg_attr(not(test), no_std)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod fault;
pub mod image;
pub mod inject;
pub mod queue;
pub mod spec;
pub mod start;
pub mod syscall;
pub mod vcpu;

/// The lowest user virtual address a component may map: the first 2 MiB stay
/// unmapped so that null and near-null pointers always fault.
pub const USER_MIN: u64 = 0x20_0000;
/// One past the highest user virtual address (the top of the lower canonical
/// half, less one guard page).
pub const USER_END: u64 = 0x0000_7fff_ffff_f000;
/// Where the core maps the read-only start-information page of a component.
pub const START_INFO_ADDRESS: u64 = 0x0000_7fff_0000_0000;
/// The top of every component's initial stack (the stack grows down from here).
pub const STACK_TOP: u64 = 0x0000_7ffe_0000_0000;
/// Page size used for all user mappings.
pub const PAGE_SIZE: u64 = 4096;

/// Value written to QEMU's isa-debug-exit port (0xf4) when the system ends
/// well; QEMU exits with status `2 * value + 1` = 1.
pub const EXIT_SUCCESS: u8 = 0;
/// Value written to the isa-debug-exit port when the system ends badly; QEMU
/// exits with status 3.
pub const EXIT_FAILURE: u8 = 1;
/// The console line prefix of the core's final verdict. The build tool reads
/// it where the emulator has no exit-status device (Bochs).
pub const HALT_LINE: &str = "[core] system halted: ";
/// The longest boot command line the core keeps, in bytes (without the
/// terminating NUL). The core reads the longest valid UTF-8 prefix of at most
/// this many bytes and reports a longer line as truncated; the build tool
/// refuses a longer one before it boots anything.
pub const COMMAND_LINE_MAX: usize = 256;
