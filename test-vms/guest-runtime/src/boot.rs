//! The three ways into a guest image, and the path they share into Rust.
//!
//! 1. **Real mode** (`guest_start16`, section `.boot16`, the first byte of
//!    the image at 0x100000): the VMM starts the CPU as at a reset vector
//!    with CS.base = 0x100000 and IP = 0, CR0.PE clear. The stub reaches its
//!    data only through `%cs:` offsets from the image start (so CS.selector
//!    and the other segment registers do not matter), loads the GDT below,
//!    sets CR0.PE and far-jumps (`ljmpl`, operand-size prefix) to 32-bit code.
//! 2. **PVH** (`guest_start_pvh`, named by the `XEN_ELFNOTE_PHYS32_ENTRY`
//!    note; QEMU's `-kernel`): 32-bit protected mode, flat segments, paging
//!    off. **Multiboot** (`guest_start_multiboot`, named by the multiboot
//!    v1 header the `guest-multiboot` crate adds to images that link it)
//!    is the same 32-bit entry, with the loader's magic in EAX and its
//!    information structure in EBX ([`crate::multiboot`]).
//! 3. **Long mode** (`_start64`, the ELF entry): paging on with some identity
//!    map, some 64-bit code segment, some stack. Nothing of it is kept: this
//!    path sets its stack, builds the guest's own page tables (unless CR3
//!    already points at them), loads its own GDT and CR3 and reloads every
//!    segment register.
//!
//! The 32-bit path (used by 1 and 2) builds the same page tables, enables
//! PAE, EFER.LME and paging (and clears CR0.CD/NW) and far-jumps to 64-bit
//! code. All paths then load the stack, clear `.bss` and call `guest_main`
//! (defined by [`crate::entry!`]) with the entry mode ([`crate::EntryMode`]
//! as a number) as argument.
//!
//! The page tables identity-map the first 4 GiB with 2 MiB pages (PML4,
//! one PDPT, four page directories: 24 KiB in `.boot.bss`, page-aligned),
//! present, writable, supervisor, cacheable; the PML4 (`guest_pml4`) is the
//! boot root [`crate::paging`] names. The stack is 64 KiB, also in
//! `.boot.bss`. GDT selectors: 0x08 32-bit code, 0x10 flat data, 0x18
//! 64-bit code (descriptors are pre-marked accessed, so the CPU never writes
//! them).

use guest_api::{STATUS_PORT, UART_BASE};

/// The 64-bit code selector (used by the IDT too).
pub const CODE64_SELECTOR: u16 = 0x18;
/// The stack size.
pub const STACK_SIZE: usize = 64 * 1024;

core::arch::global_asm!(
    r#"
    .pushsection .boot16, "ax"
    .code16
    .global guest_start16
guest_start16:
    cli
    cld
    lgdtl %cs:(guest_gdt_pointer - guest_start16)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $guest_start32_real

    .balign 8
guest_gdt:
    .quad 0
    .quad 0x00cf9b000000ffff
    .quad 0x00cf93000000ffff
    .quad 0x00af9b000000ffff
guest_gdt_end:
    .balign 8
    .global guest_gdt_pointer
guest_gdt_pointer:
    .short guest_gdt_end - guest_gdt - 1
    .quad guest_gdt
    .popsection

    .pushsection .note.pvh, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .balign 4
    .long guest_start_pvh
    .balign 4
    .popsection

    .pushsection .data.guest_multiboot, "aw"
    .balign 4
    .global guest_multiboot_magic
guest_multiboot_magic:
    .long 0
    .global guest_multiboot_info
guest_multiboot_info:
    .long 0
    .popsection

    .pushsection .boot.bss, "aw", @nobits
    .balign 4096
    .global guest_pml4
guest_pml4:
    .skip 4096
guest_pdpt:
    .skip 4096
guest_pd:
    .skip 4 * 4096
    .balign 16
guest_stack_bottom:
    .skip {stack_size}
guest_stack_top:
    .popsection

    .pushsection .rodata.guest_no_long_mode, "a"
guest_no_long_mode_message:
    .asciz "guest: this CPU has no long mode (x86-64)\n"
    .popsection

    .pushsection .text.guest_boot, "ax"
    .code32
guest_start32_real:
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $1, %esi
    jmp guest_start32

    .global guest_start_pvh
guest_start_pvh:
    cli
    cld
    movl $2, %esi
    jmp guest_start32

    /* Multiboot (v1): EAX holds the loader's magic, EBX its information
       structure (below 4 GiB, identity-mapped later). */
    .global guest_start_multiboot
guest_start_multiboot:
    cli
    cld
    movl %eax, guest_multiboot_magic
    movl %ebx, guest_multiboot_info
    movl $4, %esi

    /* From here on %esi holds the entry mode. */
guest_start32:
    lgdtl guest_gdt_pointer
    ljmpl $0x08, $1f
1:
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss

    movl $0x80000000, %eax
    cpuid
    cmpl $0x80000001, %eax
    jb guest_no_long_mode
    movl $0x80000001, %eax
    cpuid
    testl $(1 << 29), %edx
    jz guest_no_long_mode

    movl $guest_pml4, %edi
    xorl %eax, %eax
    movl $(6 * 1024), %ecx
    rep stosl
    movl $(guest_pdpt + 3), guest_pml4
    movl $(guest_pd + 0x0003), guest_pdpt
    movl $(guest_pd + 0x1003), guest_pdpt + 8
    movl $(guest_pd + 0x2003), guest_pdpt + 16
    movl $(guest_pd + 0x3003), guest_pdpt + 24
    movl $guest_pd, %edi
    movl $0x83, %eax
    movl $2048, %ecx
2:
    movl %eax, (%edi)
    addl $0x200000, %eax
    addl $8, %edi
    loop 2b

    movl $guest_pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $(1 << 5), %eax
    movl %eax, %cr4
    movl $0xc0000080, %ecx
    rdmsr
    orl $(1 << 8), %eax
    wrmsr
    movl %cr0, %eax
    andl $0x9fffffff, %eax
    orl $0x80000001, %eax
    movl %eax, %cr0
    ljmpl $0x18, $guest_start64_from32

guest_no_long_mode:
    movl $guest_no_long_mode_message, %esi
3:
    lodsb
    testb %al, %al
    jz 5f
    movb %al, %bl
    movw ${uart_lsr}, %dx
4:
    inb %dx, %al
    testb $0x20, %al
    jz 4b
    movw ${uart_thr}, %dx
    movb %bl, %al
    outb %al, %dx
    jmp 3b
5:
    movw ${status_port}, %dx
    movl $1, %eax
    outl %eax, %dx
6:
    cli
    hlt
    jmp 6b

    .code64
    .global _start64
_start64:
    cli
    cld
    leaq guest_stack_top(%rip), %rsp
    movl $3, %esi

    /* Already on these tables (a re-entry): do not clear them under us. */
    movq %cr3, %rax
    andq $-4096, %rax
    leaq guest_pml4(%rip), %rdx
    cmpq %rdx, %rax
    je 9f

    leaq guest_pml4(%rip), %rdi
    xorl %eax, %eax
    movl $(6 * 512), %ecx
    rep stosq
    leaq guest_pdpt+3(%rip), %rax
    movq %rax, guest_pml4(%rip)
    leaq guest_pd+3(%rip), %rax
    movq %rax, guest_pdpt(%rip)
    addq $0x1000, %rax
    movq %rax, guest_pdpt+8(%rip)
    addq $0x1000, %rax
    movq %rax, guest_pdpt+16(%rip)
    addq $0x1000, %rax
    movq %rax, guest_pdpt+24(%rip)
    leaq guest_pd(%rip), %rdi
    movl $0x83, %eax
    movl $2048, %ecx
7:
    movq %rax, (%rdi)
    addq $0x200000, %rax
    addq $8, %rdi
    loop 7b

9:
    lgdt guest_gdt_pointer(%rip)
    leaq guest_pml4(%rip), %rax
    movq %rax, %cr3
    pushq $0x18
    leaq guest_start64_from32(%rip), %rax
    pushq %rax
    lretq

    /* 64-bit code, CS = 0x18; %esi = the entry mode. */
guest_start64_from32:
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss
    leaq guest_stack_top(%rip), %rsp
    xorl %ebp, %ebp
    leaq __bss_start(%rip), %rdi
    leaq __bss_end(%rip), %rcx
    subq %rdi, %rcx
    xorl %eax, %eax
    rep stosb
    movl %esi, %edi
    call guest_main
8:
    cli
    hlt
    jmp 8b
    .popsection
"#,
    stack_size = const STACK_SIZE,
    uart_thr = const UART_BASE,
    uart_lsr = const UART_BASE + 5,
    status_port = const STATUS_PORT,
    options(att_syntax)
);
