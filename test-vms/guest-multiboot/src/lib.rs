//! A multiboot (v1) header for a test VM: flags "page-align modules" and
//! "memory information wanted", no address fields, so a loader reads the
//! image as an ELF file and enters the guest runtime's
//! `guest_start_multiboot` (the ELF's `e_entry`) in 32-bit protected mode.
//! Multiboot loaders read ELF32 only: the build tool writes an ELF32 copy,
//! `vm-<name>.elf32`, of every test VM that carries this header (the
//! symbol `guest_multiboot_header`; see `build/src/elf32.rs`), and QEMU's
//! `-kernel` and `kind = "multiboot"` VMs boot that copy. The guest
//! runtime's linker script keeps the `.multiboot` section right after the
//! real-mode stub, in the file's first 8 KiB, as the specification
//! requires. A test VM links this crate by calling [`linked`] (only an
//! object something refers to is linked); booted some other way, the
//! header does nothing.
#![no_std]

core::arch::global_asm!(
    r#"
    .pushsection .multiboot, "a"
    .balign 4
    .set guest_multiboot_flags, (1 << 0) | (1 << 1)
    .global guest_multiboot_header
guest_multiboot_header:
    .long 0x1badb002
    .long guest_multiboot_flags
    .long -(0x1badb002 + guest_multiboot_flags)
    .popsection
"#,
    options(att_syntax)
);

/// Makes the linker keep this crate's object, and so the header.
#[inline(never)]
pub fn linked() -> bool {
    true
}
