//! x86-64: boot trampoline, CPU control, serial port, descriptor tables,
//! trap and system-call entry, and the core's own page tables.

pub mod boot;
pub mod cpu;
pub mod descriptors;
pub mod entry;
pub mod interrupts;
pub mod ioapic;
pub mod memory;
pub mod pci;
pub mod serial;
pub mod svm;
pub mod timer;
