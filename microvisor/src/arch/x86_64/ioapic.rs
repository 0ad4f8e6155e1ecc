//! The IOAPIC, for device interrupt lines delivered to the interrupt
//! forwarder (`microvisor::interrupt_lines`): its register window is
//! mapped uncached at [`IOAPIC_VIRTUAL`] (the PC's fixed address
//! [`IOAPIC_PHYSICAL`]). Line n arrives on vector [`LINE_VECTOR_BASE`] + n,
//! sampled as the system file's wiring says (by default as firmware wires
//! a PC: ISA lines 0-15 edge-triggered and active high, PCI lines 16-23
//! level-triggered and active low). The core keeps each line's redirection
//! entry here so that masking and unmasking are one register write.

use core::sync::atomic::{AtomicU32, Ordering};

use microvisor_abi::spec::Wiring;

use super::timer::APIC_VIRTUAL;

/// Where the IOAPIC's registers are on a PC.
pub const IOAPIC_PHYSICAL: u64 = 0xfec0_0000;
/// Where the core maps them (the page after the local APIC's).
pub const IOAPIC_VIRTUAL: u64 = APIC_VIRTUAL + 0x1000;
/// The vector of line 0; line n uses this plus n.
pub const LINE_VECTOR_BASE: u64 = 0x50;
/// Lines the core routes.
pub const LINES: u64 = 24;

const MASKED: u32 = 1 << 16;
const LEVEL: u32 = 1 << 15;
const ACTIVE_LOW: u32 = 1 << 13;

fn write(index: u32, value: u32) {
    // SAFETY: IOAPIC_VIRTUAL maps the IOAPIC's window uncached (the core's
    // page tables, built at boot); the index register selects, the data
    // register writes; only the IOAPIC changes.
    unsafe {
        (IOAPIC_VIRTUAL as *mut u32).write_volatile(index);
        ((IOAPIC_VIRTUAL + 0x10) as *mut u32).write_volatile(value);
    }
}

/// The low word of each line's redirection entry, unmasked (0: not routed).
static ENTRIES: [AtomicU32; LINES as usize] = [const { AtomicU32::new(0) }; LINES as usize];

/// Routes `line` (below [`LINES`]) to the local APIC `apic_id` on its
/// vector, sampled as `wiring` says, unmasked.
pub fn route(line: u64, wiring: Wiring, apic_id: u8) {
    let wiring = wiring.resolve(line as u32);
    let mut low = (LINE_VECTOR_BASE + line) as u32;
    if wiring.level() {
        low |= LEVEL;
    }
    if wiring.active_low() {
        low |= ACTIVE_LOW;
    }
    ENTRIES[line as usize].store(low, Ordering::Relaxed);
    let index = 0x10 + 2 * line as u32;
    write(index + 1, u32::from(apic_id) << 24);
    write(index, low);
}

/// Masks routed `line` (it fired; the forwarder unmasks it). Lines past
/// the IOAPIC's inputs (MSI vectors) have nothing to mask.
pub fn mask(line: u64) {
    let Some(entry) = ENTRIES.get(line as usize) else {
        return;
    };
    let low = entry.load(Ordering::Relaxed);
    write(0x10 + 2 * line as u32, low | MASKED);
}

/// Unmasks routed `line`: a level-triggered line still asserted
/// interrupts again at once.
pub fn unmask(line: u64) {
    let Some(entry) = ENTRIES.get(line as usize) else {
        return;
    };
    let low = entry.load(Ordering::Relaxed);
    write(0x10 + 2 * line as u32, low);
}
