//! Interrupt controllers.
//!
//! Until interrupt forwarding exists, the core takes one device
//! interrupt, its own console's (COM1, IRQ 4), and only when the system
//! delivers console input to a component: the legacy 8259 PICs are
//! remapped to vectors 0x20..0x2f (so a spurious one cannot look like a
//! CPU exception) and fully masked, then [`route_console`] unmasks IRQ 4,
//! which reaches the CPU through the local APIC's LINT0 in ExtINT mode
//! (the virtual-wire mode firmware sets up, made explicit by the timer
//! module).

use super::cpu::out8;

const PRIMARY: u16 = 0x20;
const SECONDARY: u16 = 0xa0;
/// The vector the primary PIC's line 0 arrives on.
pub const LEGACY_BASE: u64 = 0x20;
/// The console's line (COM1) on the primary PIC.
const CONSOLE_IRQ: u8 = 4;
/// The vector of the console's interrupt.
pub const CONSOLE_VECTOR: u64 = LEGACY_BASE + CONSOLE_IRQ as u64;

/// Remaps both 8259 PICs to 0x20..0x2f and masks every line.
pub fn disable_legacy_pic() {
    out8(PRIMARY, 0x11); // initialise, expect ICW4
    out8(SECONDARY, 0x11);
    out8(PRIMARY + 1, 0x20); // vector base
    out8(SECONDARY + 1, 0x28);
    out8(PRIMARY + 1, 4); // secondary on line 2
    out8(SECONDARY + 1, 2);
    out8(PRIMARY + 1, 1); // 8086 mode
    out8(SECONDARY + 1, 1);
    out8(PRIMARY + 1, 0xff); // mask all
    out8(SECONDARY + 1, 0xff);
}

/// Unmasks the console's line (IRQ 4) on the primary PIC, every other
/// line staying masked.
pub fn route_console() {
    out8(PRIMARY + 1, !(1 << CONSOLE_IRQ));
}

/// Ends the console's interrupt at the PIC (a specific EOI for IRQ 4).
pub fn end_of_console_interrupt() {
    out8(PRIMARY, 0x60 | CONSOLE_IRQ);
}
