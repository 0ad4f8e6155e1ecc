//! The runtime every ring-3 component links.
//!
//! It owns the only `unsafe` code a component needs: the `_start` entry
//! point the core jumps to, the `syscall` instruction, and the panic handler
//! that turns a panic into a fault report. A component crate writes
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! runtime::component!(main);
//! fn main(start: &runtime::Start) -> i32 { runtime::println!("hi"); 0 }
//! ```
//!
//! and stays `#![forbid(unsafe_code)]`. The return value of `main` becomes
//! the component's exit code. Its arguments are read strictly through
//! [`Start::arguments`] ([`arguments`]): a bad one ends it with exit code 2.
//!
//! The library also builds for the host (`cargo test -p runtime --lib`):
//! the entry point and panic handler exist only on the target, and the
//! queue tests run the real ring code between host threads.
#![cfg_attr(not(test), no_std)]

use core::fmt::{self, Write};

pub use microvisor_abi as abi;
pub use microvisor_abi::start::StartInfo;
use microvisor_abi::start::{Resource, ResourceKind, ResourceView, START_MAGIC};
use microvisor_abi::syscall::LOG_WRITE_MAX;

pub mod arguments;
pub mod dma;
pub mod endpoint;
pub mod fault;
#[cfg(feature = "heap")]
pub mod heap;
pub mod hints;
pub mod irq;
pub mod mmio;
pub mod notification;
pub mod pci;
pub mod ports;
pub mod queue;
pub mod syscall;
pub mod vm;

/// What a component learns about itself at start.
pub struct Start {
    info: &'static StartInfo,
}

impl Start {
    /// The component's name in the system description.
    pub fn name(&self) -> &str {
        self.info.name()
    }

    /// The component's argument string, unchecked; components read it
    /// through [`Start::arguments`].
    pub fn args(&self) -> &str {
        self.info.args()
    }

    /// The argument string checked against the keys this component takes
    /// (every word `key=value`, each key known and given once), as a view
    /// that reads typed values; see [`arguments`]. A component ends on a
    /// bad argument with `start.arguments(&[...]).or_exit()`.
    pub fn arguments<'a>(
        &'a self,
        known: &'a [&'a str],
    ) -> Result<arguments::Arguments<'a>, arguments::ArgumentError<'a>> {
        arguments::Arguments::parse(self.args(), known)
    }

    /// This component's index in the system.
    pub fn index(&self) -> u32 {
        self.info.component_index
    }

    /// 1 at first start, one more after each restart.
    pub fn generation(&self) -> u32 {
        self.info.generation
    }

    /// The time-stamp counter's rate, ticks per second (calibrated by the
    /// core at boot).
    pub fn tsc_hz(&self) -> u64 {
        self.info.tsc_hz
    }

    /// Everything the system description gave this component.
    pub fn resources(&self) -> &[Resource] {
        self.info.resources()
    }

    /// The resource called `name` of kind `kind`.
    pub fn resource(&self, name: &str, kind: ResourceKind) -> Option<&Resource> {
        self.info.resource(name, kind)
    }

    /// Every resource with its name, read through its kind.
    pub fn views(&self) -> impl Iterator<Item = (&str, ResourceView)> {
        self.info.views()
    }

    /// The handle of the capability called `name`.
    pub fn capability(&self, name: &str) -> Option<u64> {
        match self.resource(name, ResourceKind::Capability)?.view()? {
            ResourceView::Capability { handle, .. } => Some(handle),
            _ => None,
        }
    }

    /// The bits of the incoming notification called `name`.
    pub fn incoming(&self, name: &str) -> Option<u64> {
        match self.resource(name, ResourceKind::Incoming)?.view()? {
            ResourceView::Incoming { mask } => Some(mask),
            _ => None,
        }
    }

    /// The handle of the capability called `<object><suffix>` (e.g.
    /// `spinner` + `.sc`), the naming capdl uses for per-object rights.
    pub fn capability_of(&self, object: &str, suffix: &str) -> Option<u64> {
        let mut buffer = [0u8; 32];
        let length = object.len() + suffix.len();
        let name = buffer.get_mut(..length)?;
        name[..object.len()].copy_from_slice(object.as_bytes());
        name[object.len()..].copy_from_slice(suffix.as_bytes());
        self.capability(core::str::from_utf8(name).ok()?)
    }
}

/// Defines the component's entry point around `fn main(&Start) -> i32`.
#[macro_export]
macro_rules! component {
    ($main:path) => {
        #[unsafe(no_mangle)]
        extern "C" fn component_main(info: u64) -> ! {
            $crate::enter(info, $main)
        }
    };
}

/// Called by the entry point: checks the start page, runs `main`, exits.
#[doc(hidden)]
pub fn enter(info: u64, main: fn(&Start) -> i32) -> ! {
    if info != abi::START_INFO_ADDRESS {
        panic!(
            "start-information page at {info:#x}, expected {:#x}",
            abi::START_INFO_ADDRESS
        );
    }
    // SAFETY: the core maps one read-only page holding a `StartInfo` at
    // START_INFO_ADDRESS before entering the component, and never unmaps it
    // while the component runs; `StartInfo` is valid for any bytes.
    let info: &'static StartInfo = unsafe { &*(info as *const StartInfo) };
    if info.magic != START_MAGIC {
        panic!("start-information page has a bad magic");
    }
    queue::watch_for_lost_wakeups(info);
    notification::set_tsc_hz(info.tsc_hz);
    #[cfg(feature = "heap")]
    heap::init();
    let code = main(&Start { info });
    syscall::exit(code)
}

#[cfg(not(test))]
core::arch::global_asm!(
    ".pushsection .text._start, \"ax\"",
    ".global _start",
    "_start:",
    // The core enters with rsp 16-byte aligned and rdi = start page; the
    // call pushes a return address as the ABI expects at function entry.
    "xor ebp, ebp",
    "call component_main",
    "ud2",
    ".popsection",
);

/// A console line being assembled; written with one system call.
pub struct LineWriter {
    buffer: [u8; LOG_WRITE_MAX as usize],
    len: usize,
}

impl LineWriter {
    /// An empty line.
    pub const fn new() -> Self {
        Self {
            buffer: [0; LOG_WRITE_MAX as usize],
            len: 0,
        }
    }

    /// Sends the line to the console (truncated at [`LOG_WRITE_MAX`] bytes).
    pub fn flush(&mut self) {
        syscall::log_write(&self.buffer[..self.len]);
        self.len = 0;
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

impl Default for LineWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for LineWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buffer.len() - self.len;
        let n = s.len().min(room);
        self.buffer[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Prints one line to the system console, prefixed by the core with this
/// component's name.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        let mut line = $crate::LineWriter::new();
        let _ = core::fmt::Write::write_fmt(&mut line, format_args!($($arg)*));
        line.flush();
    }};
}

#[cfg(not(test))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut line = LineWriter::new();
    let _ = write!(line, "{}", info.message());
    if let Some(location) = info.location() {
        let _ = write!(line, " at {}:{}", location.file(), location.line());
    }
    syscall::panic(line.as_bytes())
}

/// Reads the time-stamp counter (for measurements).
#[inline(always)]
pub fn rdtsc() -> u64 {
    let low: u32;
    let high: u32;
    // SAFETY: rdtsc only reads the time-stamp counter; CR4.TSD is clear so it
    // is allowed in ring 3.
    unsafe {
        core::arch::asm!("lfence", "rdtsc", out("eax") low, out("edx") high, options(nomem, nostack))
    };
    (u64::from(high) << 32) | u64::from(low)
}
