//! External interrupts for test VMs: vectors 32-255 are counted, the time
//! (TSC) of the last one kept, and — once [`use_lapic`] was called — the
//! local APIC's end of interrupt signalled; NMIs are counted too, with any
//! that arrived while the handler of another still ran (which hardware
//! never does: NMIs stay blocked until the handler's IRET). So a test can program the
//! platform's interrupt controllers and see what arrives. Also safe access
//! to the local APIC's registers and to fw_cfg, the two devices the
//! platform tests use.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// The local APIC's registers (xAPIC page at its default base).
pub const LAPIC_BASE: u64 = 0xfee0_0000;
/// The end-of-interrupt register's offset.
const LAPIC_EOI: u32 = 0xb0;

static COUNTS: [AtomicU32; 256] = [const { AtomicU32::new(0) }; 256];
static LAST_TSC: AtomicU64 = AtomicU64::new(0);
static LAPIC_EOI_ON: AtomicBool = AtomicBool::new(false);

/// Called by the interrupt stubs.
pub(crate) fn taken(vector: u8) {
    LAST_TSC.store(crate::arch::rdtsc(), Ordering::SeqCst);
    COUNTS[usize::from(vector)].fetch_add(1, Ordering::SeqCst);
    if LAPIC_EOI_ON.load(Ordering::SeqCst) {
        lapic_write(LAPIC_EOI, 0);
    }
}

static NMIS: AtomicU32 = AtomicU32::new(0);
static NESTED_NMIS: AtomicU32 = AtomicU32::new(0);
static IN_NMI: AtomicBool = AtomicBool::new(false);
/// NMIs the NMI handler raises itself, from inside, before it returns.
static NMIS_FROM_HANDLER: AtomicU32 = AtomicU32::new(0);

/// Called by the exception path for vector 2.
pub(crate) fn nmi_taken() {
    if IN_NMI.swap(true, Ordering::SeqCst) {
        NESTED_NMIS.fetch_add(1, Ordering::SeqCst);
    }
    NMIS.fetch_add(1, Ordering::SeqCst);
    if NMIS_FROM_HANDLER
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        send_nmi_to_self();
        // Long enough for a wrongly unblocked NMI to arrive in here.
        for _ in 0..10_000 {
            core::hint::spin_loop();
        }
    }
    IN_NMI.store(false, Ordering::SeqCst);
}

/// Sends an NMI to this CPU through the local APIC's ICR (destination its
/// APIC ID 0: the "self" shorthand allows only fixed delivery).
pub fn send_nmi_to_self() {
    lapic_write(0x310, 0);
    lapic_write(0x300, 4 << 8);
}

/// Sends an NMI to self whose handler sends `again` more, one from inside
/// each handler.
pub fn raise_nmi_chain(again: u32) {
    NMIS_FROM_HANDLER.store(again, Ordering::SeqCst);
    send_nmi_to_self();
}

/// NMIs taken so far, and how many of them arrived inside another's
/// handler.
pub fn nmi_counts() -> (u32, u32) {
    (
        NMIS.load(Ordering::SeqCst),
        NESTED_NMIS.load(Ordering::SeqCst),
    )
}

/// Masks every line of the legacy 8259 pair, as an OS that uses the
/// local APIC does: firmware may leave it programmed with the PIT running
/// and its vectors over the exceptions' (IRQ 0 at vector 8 under SeaBIOS).
pub fn mask_legacy_pic() {
    // SAFETY: writing the two mask registers only masks the 8259's lines.
    unsafe {
        crate::arch::outb(0x21, 0xff);
        crate::arch::outb(0xa1, 0xff);
    }
}

/// Signal the local APIC's end of interrupt after each one.
pub fn use_lapic() {
    LAPIC_EOI_ON.store(true, Ordering::SeqCst);
}

/// How many interrupts arrived with `vector`.
pub fn count(vector: u8) -> u32 {
    COUNTS[usize::from(vector)].load(Ordering::SeqCst)
}

/// The TSC when the last interrupt arrived.
pub fn last_tsc() -> u64 {
    LAST_TSC.load(Ordering::SeqCst)
}

/// Takes interrupts (STI).
pub fn enable() {
    // SAFETY: the IDT handles every vector (see `exceptions`).
    unsafe { asm!("sti", options(nomem, nostack)) }
}

/// The task priority as CR8 (the LAPIC TPR's class, 0–15).
pub fn cr8() -> u64 {
    let value: u64;
    // SAFETY: reading CR8 has no side effects.
    unsafe { asm!("mov {}, cr8", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Sets the task priority through CR8 (`class` 0–15): interrupts of that
/// class and below wait. Not `nomem`: an interrupt it lets in changes the
/// counters.
pub fn set_cr8(class: u64) {
    // SAFETY: CR8 only masks interrupt classes; values above 15 would
    // raise #GP, so they are cut to four bits.
    unsafe { asm!("mov cr8, {}", in(reg) class & 0xf, options(nostack, preserves_flags)) }
}

/// Holds interrupts off (CLI).
pub fn disable() {
    // SAFETY: CLI only masks interrupts.
    unsafe { asm!("cli", options(nomem, nostack)) }
}

/// Enables interrupts and halts until one arrives (STI; HLT: the STI
/// shadow keeps an interrupt from slipping in between).
pub fn wait() {
    // SAFETY: the IDT handles every vector; HLT resumes after the handler.
    unsafe { asm!("sti", "hlt", options(nomem, nostack)) }
}

/// Reads local APIC register `offset` (16-byte aligned, below 0x400).
pub fn lapic_read(offset: u32) -> u32 {
    let address = LAPIC_BASE + u64::from(offset & 0x3f0);
    // SAFETY: the LAPIC page is device memory at a fixed guest-physical
    // address, identity-mapped by the boot tables; a 32-bit aligned read of
    // a register has no effect on the program's memory.
    unsafe { (address as *const u32).read_volatile() }
}

/// Writes local APIC register `offset` (16-byte aligned, below 0x400).
pub fn lapic_write(offset: u32, value: u32) {
    let address = LAPIC_BASE + u64::from(offset & 0x3f0);
    // SAFETY: as `lapic_read`; a register write changes the LAPIC, never
    // the program's memory.
    unsafe { (address as *mut u32).write_volatile(value) }
}

/// Arms the local APIC timer's TSC deadline (IA32_TSC_DEADLINE; the LVT
/// timer must be in TSC-deadline mode); 0 disarms it.
pub fn set_tsc_deadline(tsc: u64) {
    // SAFETY: the MSR only programs the local APIC timer; a CPU without
    // it raises #GP, which the exception handler reports.
    unsafe { crate::arch::wrmsr(0x6e0, tsc) }
}

/// fw_cfg's selector and data ports.
const FW_CFG_SELECTOR: u16 = 0x510;
const FW_CFG_DATA: u16 = 0x511;

/// Reads `into.len()` bytes of fw_cfg item `selector`.
pub fn fw_cfg_read(selector: u16, into: &mut [u8]) {
    // SAFETY: the selector write and data reads only move the fw_cfg
    // device's read position.
    unsafe {
        asm!("out dx, ax", in("dx") FW_CFG_SELECTOR, in("ax") selector, options(nomem, nostack));
        for byte in into.iter_mut() {
            *byte = crate::arch::inb(FW_CFG_DATA);
        }
    }
}

/// The IOAPIC's register window: index at +0, data at +0x10.
const IOAPIC_BASE: u64 = 0xfec0_0000;

fn ioapic_write(index: u32, value: u32) {
    // SAFETY: the IOAPIC page is device memory at its fixed address,
    // identity-mapped by the boot tables; writes change only the IOAPIC.
    unsafe {
        (IOAPIC_BASE as *mut u32).write_volatile(index);
        ((IOAPIC_BASE + 0x10) as *mut u32).write_volatile(value);
    }
}

/// Routes IOAPIC input `pin` to `vector` on the LAPIC with ID 0: fixed
/// delivery, physical destination, edge-triggered, active high, unmasked.
pub fn ioapic_route(pin: u8, vector: u8) {
    ioapic_write(0x11 + 2 * u32::from(pin), 0);
    ioapic_write(0x10 + 2 * u32::from(pin), u32::from(vector));
}

/// Masks IOAPIC input `pin`.
pub fn ioapic_mask(pin: u8) {
    ioapic_write(0x10 + 2 * u32::from(pin), 1 << 16);
}

/// Reads CMOS/RTC register `index` (NMIs stay enabled).
pub fn cmos_read(index: u8) -> u8 {
    // SAFETY: ports 0x70/0x71 select and read a CMOS register; reading
    // register C clears the RTC's flags, which the caller asks for.
    unsafe {
        crate::arch::outb(0x70, index & 0x7f);
        crate::arch::inb(0x71)
    }
}

/// Writes CMOS/RTC register `index`.
pub fn cmos_write(index: u8, value: u8) {
    // SAFETY: as `cmos_read`; the write changes only the RTC/CMOS.
    unsafe {
        crate::arch::outb(0x70, index & 0x7f);
        crate::arch::outb(0x71, value);
    }
}

/// Reads register `offset` (0 to 7) of the console's 16550 UART.
pub fn uart_read(offset: u16) -> u8 {
    assert!(offset < 8, "the UART has 8 registers");
    // SAFETY: a register of the console UART; reads change at most its
    // interrupt and receive state, which only this program uses.
    unsafe { crate::arch::inb(guest_api::UART_BASE + offset) }
}

/// Writes register `offset` (0 to 7) of the console's 16550 UART (the
/// caller keeps the console usable: the line settings are its own).
pub fn uart_write(offset: u16, value: u8) {
    assert!(offset < 8, "the UART has 8 registers");
    // SAFETY: a register of the console UART; the write changes only the
    // UART, which no memory depends on.
    unsafe { crate::arch::outb(guest_api::UART_BASE + offset, value) }
}

/// IA32_APIC_BASE: the local APIC's base address and its enable bits.
pub fn apic_base() -> u64 {
    crate::arch::rdmsr(0x1b)
}

/// Writes IA32_APIC_BASE (clearing bit 11 disables the local APIC; setting
/// it again brings it back in its reset state).
pub fn set_apic_base(value: u64) {
    // SAFETY: the MSR moves or switches the local APIC only; the program's
    // memory is not affected.
    unsafe { crate::arch::wrmsr(0x1b, value) }
}
