//! Where random instruction bytes run, and how the guest gets back from
//! them.
//!
//! The guest replaces the runtime's IDT and GDT with its own: the GDT
//! adds ring-3 code and data segments and a TSS, and every IDT gate runs
//! its handler on an IST stack (NMIs on a second one), so whatever the
//! random code did to its stack pointer, an exception lands on a good
//! stack. A random run ([`run`]) enters the bytes with `iretq`, in ring 3
//! (most runs: privileged instructions, port I/O, `cli` and `hlt` fault
//! there) or in ring 0, with RFLAGS.TF set, so that every instruction
//! traps (#DB) and the handler counts them up to the run's limit, and
//! with RFLAGS.IF set, so that the guest's LAPIC timer (the watchdog,
//! armed by the caller) ends a run that cleared TF and loops. The run
//! ends at the limit, at the first exception or interrupt: the handler
//! switches back to the boot page tables, restores CR0, CR4, the GDT, the
//! IDT, the segments and DR7, and returns from [`run`] to its caller with
//! the outcome in [`Outcome`].
//!
//! Random runs use their own page tables ([`init`]): the image is mapped
//! supervisor-only and read-only (CR0.WP is set), except the IST stacks
//! and the page the entry frame is built on; the scratch region (2 to
//! 4 MiB of guest memory, [`SCRATCH`]) is user-writable, and the code runs
//! from its first page; in ring 3 the device pages (the IOAPIC's, the
//! guest-hints page, the PCI BARs at 0xfe000000; not the local APIC's,
//! where the watchdog is) are user-writable, so random instructions reach
//! the world switcher's MMIO decoder.
//! Everything else, RAM or not, is not mapped: a wild access is a page
//! fault in the guest, not a stop of the VM.
//!
//! Outside runs the same IDT serves probes ([`probe`]): an exception
//! raised by the probed instruction is recorded and the instruction
//! skipped, as the runtime's `catch_fault` does. Any other exception is a
//! bug of this guest: it is printed and the boot ends.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use fuzz_edges::guest::{HINTS, IOAPIC, LAPIC, PAGE};

/// The scratch region: user-writable in random runs, where their code,
/// stack and data pointers are.
pub const SCRATCH: u64 = 0x20_0000;
/// Its size (the guest needs 4 MiB of memory).
pub const SCRATCH_SIZE: u64 = 0x20_0000;
/// Where the PCI BARs of the world switcher's functions start.
pub const BARS: u64 = 0xfe00_0000;
/// The vector of the watchdog (the LAPIC timer).
pub const WATCHDOG_VECTOR: u8 = 0xf0;

/// Selectors of this guest's GDT (the first three as the runtime's).
const KERNEL_CODE: u64 = 0x18;
const KERNEL_DATA: u64 = 0x10;
const USER_DATA: u64 = 0x23;
const USER_CODE: u64 = 0x2b;
const TSS_SELECTOR: u16 = 0x30;

/// Page-table entry bits.
const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const UNCACHED: u64 = (1 << 3) | (1 << 4);
const LARGE: u64 = 1 << 7;

/// RFLAGS bits.
const TF: u64 = 1 << 8;
const IF: u64 = 1 << 9;
const AC: u64 = 1 << 18;

#[repr(C, align(4096))]
struct Table([u64; 512]);

#[repr(C, align(4096))]
struct Stack([u8; 16384]);

/// The random runs' page tables: the root, one PDPT, the directories of
/// the first and the fourth GiB, a table for the image's 2 MiB and one
/// per device region (BARs, hints, IOAPIC, LAPIC).
static mut PML4: Table = Table([0; 512]);
static mut PDPT: Table = Table([0; 512]);
/// The ring-0 runs' root and PDPT: the same first GiB, no device pages
/// (a ring-0 run that reached the LAPIC could stop its own watchdog).
static mut PML4_KERNEL: Table = Table([0; 512]);
static mut PDPT_KERNEL: Table = Table([0; 512]);
static mut PD_LOW: Table = Table([0; 512]);
static mut PD_HIGH: Table = Table([0; 512]);
static mut PT_IMAGE: Table = Table([0; 512]);
static mut PT_DEVICES: [Table; 4] = [const { Table([0; 512]) }; 4];
/// The device regions' 2 MiB-aligned bases, as `PT_DEVICES` covers them.
const DEVICE_REGIONS: [u64; 4] = [
    BARS,
    HINTS & !0x1f_ffff,
    IOAPIC & !0x1f_ffff,
    LAPIC & !0x1f_ffff,
];

static mut IST: [Stack; 2] = [const { Stack([0; 16384]) }; 2];
/// The page `hostile_run` builds its `iretq` frame on (writable in the
/// random runs' tables).
static mut LAUNCH_STACK: Stack = Stack([0; 16384]);
static mut GDT: [u64; 8] = [0; 8];
#[repr(C, align(16))]
struct Tss([u8; 104]);
static mut TSS: Tss = Tss([0; 104]);
static mut IDT: [u64; 512] = [0; 512];

/// What `lgdt`/`lidt` load: limit, then base.
#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
static mut hostile_gdt_pointer: Pointer = Pointer { limit: 0, base: 0 };
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
static mut hostile_idt_pointer: Pointer = Pointer { limit: 0, base: 0 };
/// What the abort path restores.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
static hostile_boot_cr3: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
static hostile_saved_cr0: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
static hostile_saved_cr4: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
static hostile_resume_rsp: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
static hostile_launch_top: AtomicU64 = AtomicU64::new(0);

/// The state a random run starts from.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Launch {
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub cr3: u64,
    /// rax, rcx, rdx, rbx, (rsp: unused), rbp, rsi, rdi, r8..r15.
    pub registers: [u64; 16],
}

/// The random runs' launch, in the image (readable in their tables).
static mut LAUNCH: Launch = Launch {
    rip: 0,
    cs: 0,
    rflags: 0,
    rsp: 0,
    ss: 0,
    cr3: 0,
    registers: [0; 16],
};

/// How the handler treats an exception.
const IDLE: u8 = 0;
const PROBE: u8 = 1;
const RUN: u8 = 2;
static MODE: AtomicU8 = AtomicU8::new(IDLE);
/// Probe: bytes to skip; the vector caught plus one.
static SKIP: AtomicU8 = AtomicU8::new(0);
static CAUGHT: AtomicU8 = AtomicU8::new(0);
/// Run: instructions stepped, the limit, and how it ended.
static STEPS: AtomicU32 = AtomicU32::new(0);
static LIMIT: AtomicU32 = AtomicU32::new(0);
static END_VECTOR: AtomicU32 = AtomicU32::new(0);
/// NMIs taken (any mode).
static NMIS: AtomicU32 = AtomicU32::new(0);

/// How a random run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It ran its limit of instructions.
    Limit,
    /// An exception (vector below 32).
    Exception(u8),
    /// An interrupt (the watchdog or a device's).
    Interrupt(u8),
}

global_asm!(
    r#"
    .pushsection .text.hostile_sandbox, "ax"
    .code64
    .macro hostile_stub vector, has_error
    .balign 16
    .if \has_error == 0
    pushq $0
    .endif
    pushq $\vector
    jmp hostile_trap_common
    .endm

    .balign 16
    .global hostile_stubs
hostile_stubs:
    hostile_stub 0, 0
    hostile_stub 1, 0
    hostile_stub 2, 0
    hostile_stub 3, 0
    hostile_stub 4, 0
    hostile_stub 5, 0
    hostile_stub 6, 0
    hostile_stub 7, 0
    hostile_stub 8, 1
    hostile_stub 9, 0
    hostile_stub 10, 1
    hostile_stub 11, 1
    hostile_stub 12, 1
    hostile_stub 13, 1
    hostile_stub 14, 1
    hostile_stub 15, 0
    hostile_stub 16, 0
    hostile_stub 17, 1
    hostile_stub 18, 0
    hostile_stub 19, 0
    hostile_stub 20, 0
    hostile_stub 21, 1
    hostile_stub 22, 0
    hostile_stub 23, 0
    hostile_stub 24, 0
    hostile_stub 25, 0
    hostile_stub 26, 0
    hostile_stub 27, 0
    hostile_stub 28, 0
    hostile_stub 29, 1
    hostile_stub 30, 1
    hostile_stub 31, 0
    .set hostile_vector, 32
    .rept 224
    hostile_stub hostile_vector, 0
    .set hostile_vector, hostile_vector + 1
    .endr

hostile_trap_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    /* The interrupted page tables, then padding: 24 quadwords above the
       16-byte aligned IST top keep the call aligned. */
    movq %cr3, %rax
    pushq %rax
    pushq %rax
    movq hostile_boot_cr3(%rip), %rax
    movq %rax, %cr3
    cld
    movq %rsp, %rdi
    call hostile_trap
    testq %rax, %rax
    jnz hostile_abort
    addq $8, %rsp
    popq %rax
    movq %rax, %cr3
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq

    /* The end of a random run: on the boot tables (switched above), back
       to the state hostile_run saved. */
hostile_abort:
    movq hostile_saved_cr0(%rip), %rax
    movq %rax, %cr0
    movq hostile_saved_cr4(%rip), %rax
    movq %rax, %cr4
    xorl %eax, %eax
    movq %rax, %dr7
    lgdt hostile_gdt_pointer(%rip)
    lidt hostile_idt_pointer(%rip)
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss
    movq hostile_resume_rsp(%rip), %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbp
    popq %rbx
    popfq
    ret

    /* hostile_run(launch: *const Launch): enters the random code as the
       launch says; returns through hostile_abort. */
    .global hostile_run
hostile_run:
    pushfq
    pushq %rbx
    pushq %rbp
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, hostile_resume_rsp(%rip)
    movq hostile_launch_top(%rip), %rsp
    pushq 32(%rdi)
    pushq 24(%rdi)
    pushq 16(%rdi)
    pushq 8(%rdi)
    pushq 0(%rdi)
    movq 40(%rdi), %rax
    movq %rax, %cr3
    movq 48(%rdi), %rax
    movq 56(%rdi), %rcx
    movq 64(%rdi), %rdx
    movq 72(%rdi), %rbx
    movq 88(%rdi), %rbp
    movq 96(%rdi), %rsi
    movq 112(%rdi), %r8
    movq 120(%rdi), %r9
    movq 128(%rdi), %r10
    movq 136(%rdi), %r11
    movq 144(%rdi), %r12
    movq 152(%rdi), %r13
    movq 160(%rdi), %r14
    movq 168(%rdi), %r15
    movq 104(%rdi), %rdi
    iretq
    .popsection
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static hostile_stubs: u8;
    static __image_start: u8;
    static __image_end: u8;
    fn hostile_run(launch: *const Launch);
}

/// What the common path saved, lowest address first.
#[repr(C)]
#[allow(dead_code)]
struct Frame {
    padding: u64,
    cr3: u64,
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rbp: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rbx: u64,
    rax: u64,
    vector: u64,
    error: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

/// Called by the common path: 0 resumes the interrupted code, anything
/// else ends the random run.
#[unsafe(no_mangle)]
extern "C" fn hostile_trap(frame: &mut Frame) -> u64 {
    let vector = frame.vector as u8;
    if vector == 2 {
        NMIS.fetch_add(1, Ordering::Relaxed);
        return 0;
    }
    let mode = MODE.load(Ordering::Relaxed);
    if vector >= 32 {
        if vector != 0xff {
            guest_runtime::interrupts::lapic_write(0xb0, 0);
        }
        if mode != RUN {
            return 0;
        }
        END_VECTOR.store(0x100 | u32::from(vector), Ordering::Relaxed);
        return 1;
    }
    match mode {
        RUN => {
            if vector == 1 {
                // SAFETY: DR6 only reports debug conditions; writing its
                // reset value clears them.
                unsafe {
                    asm!("mov {0}, 0xffff0ff0", "mov dr6, {0}", out(reg) _, options(nomem, nostack))
                };
                let steps = STEPS.fetch_add(1, Ordering::Relaxed) + 1;
                if steps < LIMIT.load(Ordering::Relaxed) {
                    return 0;
                }
                END_VECTOR.store(0x200, Ordering::Relaxed);
            } else {
                END_VECTOR.store(u32::from(vector), Ordering::Relaxed);
            }
            1
        }
        PROBE if SKIP.load(Ordering::Relaxed) != 0 => {
            CAUGHT.store(vector + 1, Ordering::Relaxed);
            frame.rip = frame
                .rip
                .wrapping_add(u64::from(SKIP.swap(0, Ordering::Relaxed)));
            0
        }
        _ => {
            MODE.store(IDLE, Ordering::Relaxed);
            guest_runtime::fail(format_args!(
                "unexpected exception {vector} (error {:#x}) at rip {:#x}, cr2 {:#x}",
                frame.error,
                frame.rip,
                guest_runtime::arch::read_cr2()
            ))
        }
    }
}

/// Runs `probe`, which executes one instruction of `length` bytes that may
/// fault; returns its value and the vector it raised, if any (the
/// instruction is then skipped).
pub fn probe<T>(length: u8, probe: impl FnOnce() -> T) -> (T, Option<u8>) {
    CAUGHT.store(0, Ordering::Relaxed);
    SKIP.store(length, Ordering::Relaxed);
    MODE.store(PROBE, Ordering::SeqCst);
    let value = probe();
    MODE.store(IDLE, Ordering::SeqCst);
    SKIP.store(0, Ordering::Relaxed);
    (value, CAUGHT.swap(0, Ordering::Relaxed).checked_sub(1))
}

/// NMIs taken so far.
pub fn nmis() -> u32 {
    NMIS.load(Ordering::Relaxed)
}

/// The page tables of random runs: for ring 3 (with the device pages)
/// and for ring 0 (without).
#[derive(Clone, Copy, Debug)]
pub struct Tables {
    pub user: u64,
    pub kernel: u64,
}

/// Builds and loads the GDT (with ring-3 segments and the TSS), the IDT
/// (every gate on an IST stack) and the random runs' page tables for a
/// guest of `memory` bytes (the scratch region needs 4 MiB), and sets
/// CR0.WP and CR0.AM. Returns the random runs' tables (`None`: no scratch
/// region, no random runs).
pub fn init(memory: u64) -> Option<Tables> {
    // SAFETY: called once per boot before anything else uses these
    // statics; one CPU, interrupts off; the tables and descriptors are
    // complete before they are loaded.
    unsafe {
        let stubs = &raw const hostile_stubs as u64;
        let idt = &raw mut IDT;
        for vector in 0..256u64 {
            let handler = stubs + vector * 16;
            let ist = if vector == 2 { 2 } else { 1 };
            (*idt)[2 * vector as usize] = (handler & 0xffff)
                | KERNEL_CODE << 16
                | ist << 32
                | 0x8e << 40
                | ((handler >> 16) & 0xffff) << 48;
            (*idt)[2 * vector as usize + 1] = handler >> 32;
        }
        let ist = &raw mut IST;
        let ist_top = |index: usize| (&raw mut (*ist)[index]) as u64 + 16384;
        // A reference through the raw pointer: `static mut` references
        // are not taken directly.
        #[allow(clippy::deref_addrof)]
        let tss = &mut *(&raw mut TSS);
        let mut put = |offset: usize, value: &[u8]| {
            tss.0[offset..offset + value.len()].copy_from_slice(value);
        };
        put(4, &ist_top(0).to_le_bytes());
        put(36, &ist_top(0).to_le_bytes());
        put(44, &ist_top(1).to_le_bytes());
        // No I/O permission map: ring-3 port access faults.
        put(102, &104u16.to_le_bytes());
        let base = &raw const TSS as u64;
        let gdt = &raw mut GDT;
        *gdt = [
            0,
            0x00cf_9b00_0000_ffff,
            0x00cf_9300_0000_ffff,
            0x00af_9b00_0000_ffff,
            0x00cf_f300_0000_ffff,
            0x00af_fb00_0000_ffff,
            103 | (base & 0xff_ffff) << 16 | 0x89 << 40 | ((base >> 24) & 0xff) << 56,
            base >> 32,
        ];
        let gdt_pointer = &raw mut hostile_gdt_pointer;
        *gdt_pointer = Pointer {
            limit: (size_of::<[u64; 8]>() - 1) as u16,
            base: gdt as u64,
        };
        let idt_pointer = &raw mut hostile_idt_pointer;
        *idt_pointer = Pointer {
            limit: (size_of::<[u64; 512]>() - 1) as u16,
            base: idt as u64,
        };
        asm!(
            "lgdt [{gdt}]",
            "lidt [{idt}]",
            "ltr {tss:x}",
            "mov {scratch}, cr0",
            // WP: supervisor writes honour read-only pages; AM: ring-3
            // accesses with RFLAGS.AC are alignment-checked.
            "or {scratch}, 0x50000",
            "mov cr0, {scratch}",
            gdt = in(reg) gdt_pointer,
            idt = in(reg) idt_pointer,
            tss = in(reg) TSS_SELECTOR,
            scratch = out(reg) _,
            options(nostack),
        );
        let launch = &raw mut LAUNCH_STACK;
        hostile_launch_top.store(launch as u64 + 16384, Ordering::Relaxed);
        hostile_boot_cr3.store(guest_runtime::arch::read_cr3(), Ordering::Relaxed);
        let (cr0, cr4): (u64, u64);
        asm!("mov {}, cr0", "mov {}, cr4", out(reg) cr0, out(reg) cr4, options(nomem, nostack));
        hostile_saved_cr0.store(cr0, Ordering::Relaxed);
        hostile_saved_cr4.store(cr4, Ordering::Relaxed);
        if memory < SCRATCH + SCRATCH_SIZE {
            return None;
        }
        let (pml4, pdpt) = (&raw mut PML4, &raw mut PDPT);
        let (low, high, image) = (&raw mut PD_LOW, &raw mut PD_HIGH, &raw mut PT_IMAGE);
        (*pml4).0[0] = pdpt as u64 | PRESENT | WRITABLE | USER;
        (*pdpt).0[0] = low as u64 | PRESENT | WRITABLE | USER;
        (*pdpt).0[3] = high as u64 | PRESENT | WRITABLE | USER;
        (*low).0[0] = image as u64 | PRESENT | WRITABLE | USER;
        (*low).0[1] = SCRATCH | PRESENT | WRITABLE | USER | LARGE;
        let start = &raw const __image_start as u64;
        let end = (&raw const __image_end as u64).next_multiple_of(PAGE);
        let mut page = start;
        while page < end && page < SCRATCH {
            (*image).0[(page / PAGE) as usize] = page | PRESENT;
            page += PAGE;
        }
        // The stacks the CPU and hostile_run write to in a run.
        let writable = |address: u64, size: u64| {
            let mut page = address;
            while page < address + size {
                (*image).0[(page / PAGE) as usize % 512] |= WRITABLE;
                page += PAGE;
            }
        };
        writable(ist as u64, 2 * 16384);
        writable(launch as u64, 16384);
        let devices = &raw mut PT_DEVICES;
        for (index, region) in DEVICE_REGIONS.iter().enumerate() {
            let table = &raw mut (*devices)[index];
            (*high).0[((region - 0xc000_0000) >> 21) as usize] =
                table as u64 | PRESENT | WRITABLE | USER;
        }
        // Not the LAPIC's page: a run that reached it could stop its own
        // watchdog (a `rep stos` over its timer registers, say, one
        // element per exit for as long as RCX says).
        for device in [HINTS, IOAPIC] {
            map_device(device);
        }
        let (kernel, kernel_pdpt) = (&raw mut PML4_KERNEL, &raw mut PDPT_KERNEL);
        (*kernel).0[0] = kernel_pdpt as u64 | PRESENT | WRITABLE;
        (*kernel_pdpt).0[0] = low as u64 | PRESENT | WRITABLE | USER;
        Some(Tables {
            user: pml4 as u64,
            kernel: kernel as u64,
        })
    }
}

/// Maps the device page at `address` user-writable in the random runs'
/// tables, if it lies in one of their device regions.
pub fn map_device(address: u64) {
    let Some(index) = DEVICE_REGIONS
        .iter()
        .position(|region| (*region..region + 0x20_0000).contains(&address))
    else {
        return;
    };
    let page = address & !(PAGE - 1);
    // SAFETY: the tables are only read by the CPU in random runs, which
    // are not running now (one CPU).
    unsafe {
        let devices = &raw mut PT_DEVICES;
        (*devices)[index].0[((page >> 12) & 511) as usize] =
            page | PRESENT | WRITABLE | USER | UNCACHED;
    }
}

/// Unmaps every page of the BAR region (before the BARs are mapped again
/// where the guest finds them now).
pub fn unmap_bars() {
    // SAFETY: as in `map_device`.
    unsafe {
        let devices = &raw mut PT_DEVICES;
        (*devices)[0].0 = [0; 512];
    }
}

/// The random runs' launch, to fill before [`run`].
pub fn launch() -> &'static mut Launch {
    // SAFETY: one CPU; the launch is only read by `hostile_run`, after the
    // caller is done with this reference (each run takes a new one).
    #[allow(clippy::deref_addrof)]
    unsafe {
        &mut *(&raw mut LAUNCH)
    }
}

/// Enters the code at `launch.rip` in ring 3 (`user`) or ring 0 with TF,
/// IF (and, in ring 3, `alignment_check`: RFLAGS.AC) set, for at most
/// `limit` instructions; returns how the run ended and how many
/// instructions it stepped.
pub fn run(user: bool, alignment_check: bool, limit: u32) -> (Outcome, u32) {
    let launch = launch();
    (launch.cs, launch.ss) = if user {
        (USER_CODE, USER_DATA)
    } else {
        (KERNEL_CODE, KERNEL_DATA)
    };
    launch.rflags = 0x2 | TF | IF | if user && alignment_check { AC } else { 0 };
    STEPS.store(0, Ordering::Relaxed);
    LIMIT.store(limit.max(1), Ordering::Relaxed);
    END_VECTOR.store(0, Ordering::Relaxed);
    MODE.store(RUN, Ordering::SeqCst);
    // SAFETY: the launch names code in the scratch region and the random
    // runs' tables (user or supervisor); whatever it does, it comes back
    // through the IDT to hostile_abort, which restores this thread's
    // registers, stack, tables and descriptors and returns here (or the
    // machine shuts down, which ends the boot).
    unsafe { hostile_run(&raw const LAUNCH) };
    MODE.store(IDLE, Ordering::SeqCst);
    let steps = STEPS.load(Ordering::Relaxed);
    let end = END_VECTOR.load(Ordering::Relaxed);
    let outcome = match end {
        0x200 => Outcome::Limit,
        0x100..=0x1ff => Outcome::Interrupt(end as u8),
        vector => Outcome::Exception(vector as u8),
    };
    (outcome, steps)
}
