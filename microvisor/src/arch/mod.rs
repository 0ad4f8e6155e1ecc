//! The architecture layer: everything that touches the CPU directly.
//!
//! One module per architecture, each exporting the same names: `boot` (the
//! entry from the boot loader and the image layout), `cpu` (control
//! registers, MSRs, port I/O, halting), `descriptors` (GDT, TSS, IDT),
//! `entry` (trap and system-call stubs, the saved `Frame`, the return to
//! ring 3, the idle loop), `interrupts` (the legacy interrupt controllers),
//! `ioapic` (device interrupt lines for the interrupt forwarder),
//! `memory` (the core's page tables and the direct map), `serial` (the
//! console UART), `svm` (the virtualization backend: enabling it and
//! entering a guest) and `timer` (the clock and the one-shot alarm). The
//! rest of the core uses only those, and this layer imports nothing from
//! above it: the stubs reach the core's handlers by symbol name
//! (`kernel_main`, `core_trap_entry`, `core_syscall_entry` and the
//! handlers of the calls the syscall stub picks by number). Today there is
//! one architecture.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;

#[cfg(not(target_arch = "x86_64"))]
compile_error!("the microvisor core supports only x86_64");
