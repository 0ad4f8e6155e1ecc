//! A multiboot (v1) header for a test VM: flags "memory information
//! wanted" and "address fields valid", so a loader maps the image as a flat
//! file from 0x100000 (its ELF is 64-bit, which multiboot loaders do not
//! read) and enters the guest runtime's `guest_start_multiboot` in 32-bit
//! protected mode. The guest runtime's linker script keeps the `.multiboot`
//! section right after the real-mode stub, in the file's first 8 KiB, as
//! the specification requires. A test VM links this crate by calling
//! [`linked`] (only an object something refers to is linked); booted some
//! other way, the header does nothing.
#![no_std]

core::arch::global_asm!(
    r#"
    .pushsection .multiboot, "a"
    .balign 4
    .set guest_multiboot_flags, (1 << 1) | (1 << 16)
guest_multiboot_header:
    .long 0x1badb002
    .long guest_multiboot_flags
    .long -(0x1badb002 + guest_multiboot_flags)
    .long guest_multiboot_header
    .long __image_start
    .long __data_end
    .long __image_end
    .long guest_start_multiboot
    .popsection
"#,
    options(att_syntax)
);

/// Makes the linker keep this crate's object, and so the header.
#[inline(never)]
pub fn linked() -> bool {
    true
}
