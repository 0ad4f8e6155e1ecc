//! The 32-bit entry point, shared by both boot protocols.
//!
//! QEMU's PVH loader (found through the `XEN_ELFNOTE_PHYS32_ENTRY` note) and
//! GRUB's multiboot2 loader (found through the header below) both enter
//! `_start32` in 32-bit protected mode with paging off, `eax`/`ebx` holding
//! the protocol's magic and information pointer, and no stack. The code
//! here checks for long mode, builds boot page tables — the first 4 GiB
//! identity-mapped and again at the direct-map base, and the first GiB at
//! the core's link address, all with 2 MiB pages — enables PAE, long mode,
//! NX (when present), paging and write protection, and jumps to
//! `kernel_main(eax, ebx)` on the core's stack. These boot tables are
//! writable and executable; they live only until `kernel_main` installs the
//! core's real tables, which the W^X self-check then proves clean.
//! A CPU without long mode gets a message on COM1 and a failure exit.

core::arch::global_asm!(
    r#"
    .pushsection .boot.header, "a"
    .balign 8
multiboot2_header:
    .long 0xe85250d6
    .long 0
    .long multiboot2_header_end - multiboot2_header
    .long 0x100000000 - (0xe85250d6 + (multiboot2_header_end - multiboot2_header))
    .balign 8
    .short 3, 0
    .long 12
    .long _start32
    .balign 8
    .short 0, 0
    .long 8
multiboot2_header_end:
    .popsection

    .pushsection .note.pvh, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .balign 4
    .long _start32
    .balign 4
    .popsection

    .pushsection .boot.bss, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt_low:
    .skip 4096
boot_pdpt_high:
    .skip 4096
boot_pd:
    .skip 4 * 4096
    .popsection

    .pushsection .boot.data, "aw"
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
boot_gdt_pointer:
    .short boot_gdt_pointer - boot_gdt - 1
    .long boot_gdt
boot_eax:
    .long 0
boot_ebx:
    .long 0
no_long_mode_message:
    .asciz "microvisor: this CPU has no long mode (x86-64); cannot boot\r\n"
    .popsection

    .pushsection .boot.text, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    movl %eax, boot_eax
    movl %ebx, boot_ebx

    movl $0x80000000, %eax
    cpuid
    cmpl $0x80000001, %eax
    jb no_long_mode
    movl $0x80000001, %eax
    cpuid
    testl $(1 << 29), %edx
    jz no_long_mode
    movl %edx, %ebp

    movl $boot_pml4, %edi
    xorl %eax, %eax
    movl $(7 * 1024), %ecx
    rep stosl

    movl $boot_pdpt_low, %eax
    orl $3, %eax
    movl %eax, boot_pml4
    movl %eax, boot_pml4 + 256 * 8
    movl $boot_pdpt_high, %eax
    orl $3, %eax
    movl %eax, boot_pml4 + 511 * 8

    movl $boot_pd, %eax
    orl $3, %eax
    movl %eax, boot_pdpt_low
    movl %eax, boot_pdpt_high + 510 * 8
    addl $4096, %eax
    movl %eax, boot_pdpt_low + 8
    addl $4096, %eax
    movl %eax, boot_pdpt_low + 16
    addl $4096, %eax
    movl %eax, boot_pdpt_low + 24

    movl $boot_pd, %edi
    movl $0x83, %eax
    movl $2048, %ecx
1:
    movl %eax, (%edi)
    addl $0x200000, %eax
    addl $8, %edi
    loop 1b

    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $(1 << 5), %eax
    movl %eax, %cr4
    movl $0xc0000080, %ecx
    rdmsr
    orl $(1 << 8), %eax
    testl $(1 << 20), %ebp
    jz 2f
    orl $(1 << 11), %eax
2:
    wrmsr
    movl %cr0, %eax
    orl $0x80010001, %eax
    movl %eax, %cr0
    lgdt boot_gdt_pointer
    ljmp $0x08, $long_mode_entry

no_long_mode:
    movl $no_long_mode_message, %esi
3:
    lodsb
    testb %al, %al
    jz 5f
    movb %al, %bl
    movw $0x3fd, %dx
4:
    inb %dx, %al
    testb $0x20, %al
    jz 4b
    movw $0x3f8, %dx
    movb %bl, %al
    outb %al, %dx
    jmp 3b
5:
    movw $0xf4, %dx
    movb $1, %al
    outb %al, %dx
6:
    cli
    hlt
    jmp 6b

    .code64
long_mode_entry:
    movl $0x10, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    xorl %eax, %eax
    movl %eax, %fs
    movl %eax, %gs
    movabsq $__stack_top, %rsp
    movl boot_eax, %edi
    movl boot_ebx, %esi
    xorl %ebp, %ebp
    movabsq $kernel_main, %rax
    call *%rax
7:
    cli
    hlt
    jmp 7b
    .popsection
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static __boot_start: u8;
    static __boot_end: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __data_end: u8;
    static __stack_bottom: u8;
    static __stack_top: u8;
    static __fault_stack_bottom: u8;
    static __fault_stack_top: u8;
    static __kernel_end: u8;
}

/// The virtual address the core is linked at, less its physical address.
pub const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;

/// A range of the core's image, by virtual address.
#[derive(Clone, Copy, Debug)]
pub struct ImageRange {
    pub start: u64,
    pub end: u64,
}

/// The core image's parts, from the linker script's symbols.
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    /// The boot segment (physical = virtual, below the core proper).
    pub boot: ImageRange,
    pub text: ImageRange,
    pub rodata: ImageRange,
    /// Data and bss.
    pub data: ImageRange,
    pub stack: ImageRange,
    pub fault_stack: ImageRange,
    /// Up to the end of the last stack.
    pub end: u64,
}

/// Reads the layout from the linker-script symbols.
pub fn image_layout() -> ImageLayout {
    fn at(symbol: &u8) -> u64 {
        core::ptr::from_ref(symbol) as u64
    }
    // SAFETY: only the addresses of these linker symbols are taken; the
    // bytes behind them are never read through these references.
    unsafe {
        ImageLayout {
            boot: ImageRange {
                start: at(&__boot_start),
                end: at(&__boot_end),
            },
            text: ImageRange {
                start: at(&__text_start),
                end: at(&__text_end),
            },
            rodata: ImageRange {
                start: at(&__rodata_start),
                end: at(&__rodata_end),
            },
            data: ImageRange {
                start: at(&__data_start),
                end: at(&__data_end),
            },
            stack: ImageRange {
                start: at(&__stack_bottom),
                end: at(&__stack_top),
            },
            fault_stack: ImageRange {
                start: at(&__fault_stack_bottom),
                end: at(&__fault_stack_top),
            },
            end: at(&__kernel_end),
        }
    }
}
