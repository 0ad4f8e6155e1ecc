//! The runtime every test VM links: entry, console, exceptions, hypervisor
//! detection and hypercalls, and the end of the test.
//!
//! A guest image boots three ways — real mode at its first byte, PVH
//! (QEMU's `-kernel`), or long mode at its ELF entry — all described in
//! [`boot`] and recorded as an [`EntryMode`]. The runtime then sets up the
//! console ([`println!`] to the 16550 at [`guest_api::UART_BASE`]) and the
//! IDT ([`exceptions`]: every exception prints a `FAULT ...` line and ends
//! the VM unless expected with [`expect_fault`]), and calls the guest's
//! `main`. A guest crate writes
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! guest_runtime::entry!("hello", main);
//! fn main() -> u32 { guest_runtime::println!("TEST hello PASS"); 0 }
//! ```
//!
//! `main`'s return value is passed to [`exit`]: a 32-bit `out` to
//! [`guest_api::STATUS_PORT`] (0 = the test passed), then `cli; hlt`
//! forever. A panic prints `PANIC: ...` and `TEST <name> FAIL: panic`, and
//! exits with 1. The VMM prefixes each console line with the VM's name, so
//! lines carry no prefix of their own.
//!
//! A test VM that drives a device itself finds it through [`devices`] (PCI
//! configuration space, register and DMA memory) and, for a virtio PCI
//! device, sets it up through [`virtio_pci`] (the `virtio` crate's logic on
//! that hardware; a virtio-net NIC through [`virtio_net`]); [`interrupts`]
//! counts what the device raises. [`clock`] gives the TSC's rate and drives
//! the PIT as a periodic interrupt; [`paging`] switches between page-table
//! roots that map the same memory (guest "processes" for a hypervisor
//! that tells them apart by CR3); [`hints`] writes the guest-hints page
//! (no work, priority) where our hypervisor offers it.
#![no_std]

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};

pub mod arch;
pub mod boot;
pub mod clock;
pub mod devices;
pub mod exceptions;
pub mod hints;
pub mod hypervisor;
pub mod interrupts;
pub mod multiboot;
pub mod paging;
pub mod virtio_net;
pub mod virtio_pci;

pub use arch::{cpuid, rdtsc, rdtsc_ordered};
pub use exceptions::{catch_fault, expect_fault, take_fault};
/// The guest interface (ports, CPUID leaves, hypercall numbers).
pub use guest_api as api;
pub use hypervisor::{Hypervisor, detect};

/// How the image was entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// The 16-bit stub at the image's first byte.
    Real,
    /// The PVH note's 32-bit entry.
    Pvh,
    /// The ELF entry, `_start64`, already in long mode.
    Long,
    /// The multiboot header's 32-bit entry.
    Multiboot,
    /// Not one of the values the boot code passes.
    Unknown,
}

impl EntryMode {
    fn from_number(number: u32) -> Self {
        match number {
            1 => Self::Real,
            2 => Self::Pvh,
            3 => Self::Long,
            4 => Self::Multiboot,
            _ => Self::Unknown,
        }
    }

    /// `real`, `pvh`, `long` (or `unknown`), as guests print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Real => "real",
            Self::Pvh => "pvh",
            Self::Long => "long",
            Self::Multiboot => "multiboot",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for EntryMode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

static ENTRY: AtomicU32 = AtomicU32::new(0);
static mut NAME: &str = "guest";

/// How this run entered the image.
pub fn entry_mode() -> EntryMode {
    EntryMode::from_number(ENTRY.load(Ordering::Relaxed))
}

/// The test's name, as given to [`entry!`].
pub fn name() -> &'static str {
    // SAFETY: NAME is written once in `start`, before `main` runs and
    // before any exception handler or panic can read it; there is one CPU
    // and no interrupt handler writes it.
    unsafe { NAME }
}

/// Defines the image's Rust entry: `entry!("name", main)` with
/// `fn main() -> u32` returning the exit status (0 = the test passed).
#[macro_export]
macro_rules! entry {
    ($name:expr, $main:path) => {
        #[unsafe(no_mangle)]
        extern "C" fn guest_main(entry: u32) -> ! {
            $crate::start(entry, $name, $main)
        }
    };
}

/// Called by `guest_main` from [`entry!`]: sets up the runtime, runs
/// `main`, exits with its status.
#[doc(hidden)]
pub fn start(entry: u32, name: &'static str, main: fn() -> u32) -> ! {
    ENTRY.store(entry, Ordering::Relaxed);
    // SAFETY: the only write, before anything reads it (see `name`).
    unsafe { NAME = name };
    console::init();
    exceptions::init();
    hypervisor::init();
    exit(main())
}

/// Ends the VM: writes `status` (0 = the test passed) to
/// [`guest_api::STATUS_PORT`] with a 32-bit `out`, then halts forever.
pub fn exit(status: u32) -> ! {
    // SAFETY: the status port only ends the VM (or QEMU).
    unsafe { arch::outl(guest_api::STATUS_PORT, status) };
    arch::halt_forever()
}

/// The 16550 UART console.
pub mod console {
    use guest_api::UART_BASE;

    use crate::arch::{inb, outb};

    /// Line status register: bit 5, the transmitter holding register is
    /// empty.
    const LINE_STATUS: u16 = UART_BASE + 5;
    const TRANSMIT_READY: u8 = 1 << 5;

    /// Programs 8 data bits, no parity, one stop bit, no interrupts (the
    /// divisor is left as the firmware or VMM set it).
    pub(crate) fn init() {
        // SAFETY: the UART's interrupt-enable (+1) and line-control (+3)
        // registers only change how it transmits.
        unsafe {
            outb(UART_BASE + 1, 0);
            outb(UART_BASE + 3, 0x03);
        }
    }

    /// Sends one byte, waiting until the UART can take it.
    pub fn write_byte(byte: u8) {
        // SAFETY: reading the line status and writing the transmit
        // register of COM1 only print.
        unsafe {
            while inb(LINE_STATUS) & TRANSMIT_READY == 0 {
                core::hint::spin_loop();
            }
            outb(UART_BASE, byte);
        }
    }

    /// Sends bytes.
    pub fn write_bytes(bytes: &[u8]) {
        bytes.iter().copied().for_each(write_byte);
    }
}

/// A [`fmt::Write`] to the console.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        console::write_bytes(text.as_bytes());
        Ok(())
    }
}

/// Prints formatted text to the console (used by [`print!`] and
/// [`println!`]).
#[doc(hidden)]
pub fn print_arguments(arguments: fmt::Arguments<'_>) {
    let _ = Console.write_fmt(arguments);
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($argument:tt)*) => {
        $crate::print_arguments(format_args!($($argument)*))
    };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => {
        $crate::print_arguments(format_args!("\n"))
    };
    ($($argument:tt)*) => {{
        $crate::print_arguments(format_args!($($argument)*));
        $crate::print_arguments(format_args!("\n"));
    }};
}

/// Prints `TEST <name> FAIL: <why>` and exits with status 1.
pub fn fail(why: fmt::Arguments<'_>) -> ! {
    println!("TEST {} FAIL: {}", name(), why);
    exit(1)
}

/// One step of the arithmetic the computing test VMs run (a 64-bit
/// linear congruential generator), kept from being optimised away: the
/// same instructions in every VM, so their loops are comparable work.
#[inline(always)]
pub fn compute_step(state: u64) -> u64 {
    core::hint::black_box(
        state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407),
    )
}

/// Busy-waits about `ticks` time-stamp-counter ticks.
pub fn spin_ticks(ticks: u64) {
    let start = rdtsc();
    while rdtsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    print!("PANIC: {}", info.message());
    if let Some(location) = info.location() {
        print!(" at {}:{}", location.file(), location.line());
    }
    println!();
    fail(format_args!("panic"))
}
