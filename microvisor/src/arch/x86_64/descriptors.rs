//! The GDT, the TSS and the IDT.
//!
//! Segment layout (fixed by `syscall`/`sysret`): 0x08 core code, 0x10 core
//! data, 0x18 user data, 0x20 user code (64-bit), 0x28 the TSS. `STAR` is
//! programmed so that `syscall` loads 0x08/0x10 and `sysret` 0x23/0x1b.
//! The TSS's `rsp0` always points at the top of the running thread's saved
//! register frame, so a trap from ring 3 stores the thread's state straight
//! into its thread record; IST 1 is a dedicated stack for double faults,
//! NMIs and machine checks. All three tables are written once at boot,
//! except `rsp0`, which the entry module updates on every thread switch
//! (interrupts off), and the I/O permissions.
//!
//! **Ports.** An I/O permission bitmap (8 KiB, one bit per port, set =
//! denied, and the terminating byte) follows the TSS. A component without
//! port grants runs with the TSS's bitmap offset beyond its limit, so every
//! `in`/`out` from ring 3 faults ([`deny_ports`], one store per switch);
//! one with grants runs with the bitmap ([`allow_ports`]), which holds the
//! grants of the last such component to run ([`load_ports`] rewrites only
//! the bits of the ranges that change hands).

use core::cell::UnsafeCell;
use core::mem::size_of;

/// Core code segment selector.
pub const KERNEL_CODE: u16 = 0x08;
/// Core data segment selector.
pub const KERNEL_DATA: u16 = 0x10;
/// User data segment selector (with RPL 3).
pub const USER_DATA: u16 = 0x18 | 3;
/// User code segment selector (with RPL 3).
pub const USER_CODE: u16 = 0x20 | 3;
const TSS_SELECTOR: u16 = 0x28;

/// Vectors that use the dedicated fault stack (NMI, #DF, #MC).
const IST_VECTORS: [usize; 3] = [2, 8, 18];

#[repr(C, packed)]
struct TaskState {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    io_map_base: u16,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

/// Bytes of the I/O permission bitmap: one bit per port.
const IO_BITMAP_BYTES: usize = 0x1_0000 / 8;
/// Where the bitmap starts, from the TSS's base (right after it).
const IO_BITMAP_OFFSET: u16 = size_of::<TaskState>() as u16;
/// A bitmap offset beyond the TSS's limit: no bitmap, every port denied.
const NO_IO_BITMAP: u16 = 0xffff;

#[repr(C, align(16))]
struct Tables {
    gdt: [u64; 7],
    tss: TaskState,
    /// The TSS's I/O permission bitmap and the byte of ones the CPU
    /// requires after it; contiguous with `tss` (both are byte-packed).
    io_bitmap: [u8; IO_BITMAP_BYTES + 1],
    idt: [Gate; 256],
}

const _: () = assert!(
    core::mem::offset_of!(Tables, io_bitmap)
        == core::mem::offset_of!(Tables, tss) + size_of::<TaskState>(),
    "the I/O bitmap must follow the TSS"
);

struct TablesCell(UnsafeCell<Tables>);

// SAFETY: the tables are written during single-threaded boot and afterwards
// only `tss.rsp[0]`, the bitmap offset and the bitmap are written, by the
// one CPU, with interrupts disabled.
unsafe impl Sync for TablesCell {}

static TABLES: TablesCell = TablesCell(UnsafeCell::new(Tables {
    gdt: [
        0,
        0x00af_9b00_0000_ffff, // core code: 64-bit, present, DPL 0
        0x00cf_9300_0000_ffff, // core data
        0x00cf_f300_0000_ffff, // user data: DPL 3
        0x00af_fb00_0000_ffff, // user code: 64-bit, DPL 3
        0,                     // TSS (low), filled at boot
        0,                     // TSS (high)
    ],
    tss: TaskState {
        reserved0: 0,
        rsp: [0; 3],
        reserved1: 0,
        ist: [0; 7],
        reserved2: 0,
        reserved3: 0,
        io_map_base: NO_IO_BITMAP,
    },
    io_bitmap: [0xff; IO_BITMAP_BYTES + 1],
    idt: [Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        attributes: 0,
        offset_middle: 0,
        offset_high: 0,
        reserved: 0,
    }; 256],
}));

#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

/// Fills and loads the GDT, TSS and IDT. `stubs` is the address of the
/// first of 256 trap stubs, 16 bytes apart; `fault_stack_top` the IST 1 stack.
///
/// # Safety
/// Call once, at boot, with interrupts disabled, before any ring-3 code runs.
pub unsafe fn load(stubs: u64, fault_stack_top: u64) {
    // SAFETY: boot is single-threaded and nothing else references TABLES yet.
    let tables = unsafe { &mut *TABLES.0.get() };
    tables.tss.ist[0] = fault_stack_top;
    let tss = core::ptr::addr_of!(tables.tss) as u64;
    // The TSS with its bitmap and terminating byte.
    let limit = (size_of::<TaskState>() + IO_BITMAP_BYTES) as u64;
    tables.gdt[5] = (limit & 0xffff)
        | ((tss & 0xff_ffff) << 16)
        | (0x89 << 40) // present, 64-bit TSS (available)
        | (((limit >> 16) & 0xf) << 48)
        | (((tss >> 24) & 0xff) << 56);
    tables.gdt[6] = tss >> 32;
    for (vector, gate) in tables.idt.iter_mut().enumerate() {
        let handler = stubs + 16 * vector as u64;
        *gate = Gate {
            offset_low: handler as u16,
            selector: KERNEL_CODE,
            ist: if IST_VECTORS.contains(&vector) { 1 } else { 0 },
            attributes: 0x8e, // present, DPL 0, 64-bit interrupt gate
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        };
    }
    let gdt = Pointer {
        limit: (size_of::<[u64; 7]>() - 1) as u16,
        base: tables.gdt.as_ptr() as u64,
    };
    let idt = Pointer {
        limit: (size_of::<[Gate; 256]>() - 1) as u16,
        base: tables.idt.as_ptr() as u64,
    };
    // SAFETY: the GDT keeps the boot selectors' meaning (0x08 code, 0x10
    // data), so reloading segments is safe; the TSS descriptor and IDT were
    // just filled in and live in a static.
    unsafe {
        core::arch::asm!(
            "lgdt [{gdt}]",
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov {tmp:e}, {data}",
            "mov ss, {tmp:e}",
            "mov ds, {tmp:e}",
            "mov es, {tmp:e}",
            "ltr {tss:x}",
            "lidt [{idt}]",
            gdt = in(reg) &gdt,
            idt = in(reg) &idt,
            code = const KERNEL_CODE as u64,
            data = const KERNEL_DATA as u32,
            tss = in(reg) TSS_SELECTOR,
            tmp = out(reg) _,
        );
    }
}

/// Sets the stack the CPU switches to on a trap from ring 3.
pub fn set_kernel_entry_stack(top: u64) {
    // SAFETY: a single aligned-enough store to a field only this function
    // writes after boot; the one CPU runs it with interrupts disabled.
    unsafe {
        let tss = core::ptr::addr_of_mut!((*TABLES.0.get()).tss.rsp);
        core::ptr::write_unaligned(tss.cast::<u64>(), top);
    }
}

/// Every port denied to ring 3 (the running component has no grants).
pub fn deny_ports() {
    set_io_map_base(NO_IO_BITMAP);
}

/// Ring 3 may use the ports the bitmap allows ([`load_ports`]).
pub fn allow_ports() {
    set_io_map_base(IO_BITMAP_OFFSET);
}

fn set_io_map_base(offset: u16) {
    // SAFETY: a store to a field only the port functions write after boot;
    // the one CPU runs them with interrupts disabled.
    unsafe {
        let field = core::ptr::addr_of_mut!((*TABLES.0.get()).tss.io_map_base);
        core::ptr::write_unaligned(field, offset);
    }
}

/// Rewrites the bitmap: the ranges `revoke` (`(first, count)`) denied
/// again, then the ranges `grant` allowed.
pub fn load_ports(
    revoke: impl Iterator<Item = (u16, u16)>,
    grant: impl Iterator<Item = (u16, u16)>,
) {
    // SAFETY: as `set_io_map_base`; nothing else holds a reference to the
    // bitmap, and the CPU reads it only while ring 3 runs.
    let bitmap = unsafe { &mut (*TABLES.0.get()).io_bitmap };
    let mut set = |first: u16, count: u16, denied: bool| {
        for port in u32::from(first)..u32::from(first) + u32::from(count) {
            let (byte, bit) = ((port / 8) as usize, port % 8);
            if denied {
                bitmap[byte] |= 1 << bit;
            } else {
                bitmap[byte] &= !(1 << bit);
            }
        }
    };
    for (first, count) in revoke {
        set(first, count, true);
    }
    for (first, count) in grant {
        set(first, count, false);
    }
}
