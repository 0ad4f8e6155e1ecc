//! Interrupt controllers.
//!
//! Until interrupt forwarding exists, the core takes no device interrupts:
//! the legacy 8259 PICs are remapped to vectors 0x20..0x2f (so a spurious
//! one cannot look like a CPU exception) and fully masked.

use super::cpu::out8;

/// Remaps both 8259 PICs to 0x20..0x2f and masks every line.
pub fn disable_legacy_pic() {
    const PRIMARY: u16 = 0x20;
    const SECONDARY: u16 = 0xa0;
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
