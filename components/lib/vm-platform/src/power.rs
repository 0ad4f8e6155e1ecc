//! The guest's power-off and reset registers: three I/O ports that the
//! FADT names as the hardware-reduced sleep control, sleep status and reset
//! registers (ACPI 6.5, 4.8.3.7 and 4.8.3.6), in the layout of QEMU's
//! generic event device but in I/O space, so no MMIO decoding is needed.
//!
//! Linux powers off by writing `SLP_TYP` (from `\_S5`, which the DSDT sets
//! to [`S5_SLEEP_TYPE`]) with `SLP_EN` to the sleep control register, after
//! clearing `WAK_STS` in the status register; it reboots by writing the
//! FADT's reset value to the reset register. [`write`] turns those writes
//! into a [`PowerEvent`]; every other value is ignored (the guest cannot
//! sleep, so S1-S4 requests do nothing) and every read answers 0. Nothing
//! here keeps state.
//!
//! Two older reset paths lead to the same event. The keyboard controller's
//! "pulse reset" command ([`KEYBOARD_RESET`] written to [`KEYBOARD_COMMAND`]):
//! [`keyboard_write`]. And the firmware's reset vector: a guest that jumps
//! to `F000:FFF0` in real mode expects a BIOS to reset the machine. Linux
//! does exactly that on a hardware-reduced ACPI platform, where it reboots
//! through EFI and, without EFI, through the BIOS (`reboot_init`,
//! `efi_reboot_required`), never trying the reset register first; the
//! world switcher puts [`reset_vector_code`] at [`RESET_VECTOR`], which
//! writes the reset register.

/// The first of the three ports.
pub const PORT_BASE: u16 = 0x600;
/// Sleep control: bits 2-4 `SLP_TYP`, bit 5 `SLP_EN`.
pub const SLEEP_CONTROL: u16 = PORT_BASE;
/// Sleep status: bit 7 `WAK_STS` (never set: the guest never wakes).
pub const SLEEP_STATUS: u16 = PORT_BASE + 1;
/// Reset: writing [`RESET_VALUE`] resets the VM (part of the guest-visible
/// contract, `guest_api`).
pub const RESET: u16 = guest_api::ACPI_RESET_PORT;
/// How many ports the device decodes.
pub const PORT_COUNT: u16 = 3;

const _: () = assert!(
    RESET == PORT_BASE + 2,
    "the reset port follows the sleep registers"
);

/// The value the FADT tells the guest to write to [`RESET`].
pub const RESET_VALUE: u8 = guest_api::ACPI_RESET_VALUE;
/// The sleep type the `\_S5` package announces for soft-off.
pub const S5_SLEEP_TYPE: u8 = 5;

const SLEEP_TYPE_SHIFT: u8 = 2;
const SLEEP_TYPE_MASK: u8 = 0x7 << SLEEP_TYPE_SHIFT;
const SLEEP_ENABLE: u8 = 1 << 5;

/// The 8042 keyboard controller's command port, and the command that
/// pulses the CPU's reset line.
pub const KEYBOARD_COMMAND: u16 = 0x64;
pub const KEYBOARD_RESET: u8 = 0xfe;
/// Where a real-mode jump to `F000:FFF0` lands.
pub const RESET_VECTOR: u64 = 0xf_fff0;

/// The 16 bytes of 16-bit code at [`RESET_VECTOR`]: `mov dx, RESET`,
/// `mov al, RESET_VALUE`, `out dx, al`, then `cli; hlt` forever should the
/// write not reset.
pub const fn reset_vector_code() -> [u8; 16] {
    let [port_low, port_high] = RESET.to_le_bytes();
    [
        0xba,
        port_low,
        port_high, // mov dx, RESET
        0xb0,
        RESET_VALUE, // mov al, RESET_VALUE
        0xee,        // out dx, al
        0xfa,        // cli
        0xf4,        // hlt
        0xeb,
        0xfd, // jmp back to hlt
        0xf4,
        0xf4,
        0xf4,
        0xf4,
        0xf4,
        0xf4,
    ]
}

/// A byte written to the keyboard controller's command port: only the
/// reset pulse means anything (there is no keyboard controller).
pub fn keyboard_write(value: u8) -> Option<PowerEvent> {
    (value == KEYBOARD_RESET).then_some(PowerEvent::Reset)
}

/// What the guest asked the platform to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerEvent {
    /// Soft-off (S5): stop the VM.
    Off,
    /// Reset the VM, as a warm reboot.
    Reset,
}

/// Whether `port` is one of the power ports.
pub fn decodes(port: u16) -> bool {
    (PORT_BASE..PORT_BASE + PORT_COUNT).contains(&port)
}

/// A byte written to `port`: the event it asks for, if any.
pub fn write(port: u16, value: u8) -> Option<PowerEvent> {
    match port {
        SLEEP_CONTROL
            if value & SLEEP_ENABLE != 0
                && (value & SLEEP_TYPE_MASK) >> SLEEP_TYPE_SHIFT == S5_SLEEP_TYPE =>
        {
            Some(PowerEvent::Off)
        }
        RESET if value == RESET_VALUE => Some(PowerEvent::Reset),
        _ => None,
    }
}

/// A byte read from `port`: the registers hold nothing worth reading.
pub fn read(port: u16) -> u8 {
    if decodes(port) { 0 } else { 0xff }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_s5_write_powers_off() {
        // acpi_hw_extended_sleep: clear WAK_STS, then SLP_TYP | SLP_EN.
        assert_eq!(write(SLEEP_STATUS, 0x80), None);
        assert_eq!(write(SLEEP_CONTROL, 5 << 2 | 0x20), Some(PowerEvent::Off));
    }

    #[test]
    fn other_sleep_writes_are_ignored() {
        assert_eq!(write(SLEEP_CONTROL, 5 << 2), None, "SLP_EN clear");
        assert_eq!(write(SLEEP_CONTROL, 3 << 2 | 0x20), None, "S3");
        assert_eq!(write(SLEEP_CONTROL, 0xff), None, "type 7");
    }

    #[test]
    fn only_the_reset_value_resets() {
        assert_eq!(write(RESET, RESET_VALUE), Some(PowerEvent::Reset));
        assert_eq!(write(RESET, 0x06), None);
        assert_eq!(write(SLEEP_STATUS, RESET_VALUE), None);
        assert_eq!(read(RESET), 0);
        assert_eq!(read(PORT_BASE + PORT_COUNT), 0xff);
        assert!(decodes(SLEEP_CONTROL) && !decodes(PORT_BASE - 1));
    }

    #[test]
    fn the_keyboard_controller_pulse_resets() {
        assert_eq!(keyboard_write(KEYBOARD_RESET), Some(PowerEvent::Reset));
        assert_eq!(keyboard_write(0xd1), None, "write output port");
        assert_eq!(keyboard_write(0xff), None);
    }

    #[test]
    fn the_reset_vector_writes_the_reset_register() {
        let code = reset_vector_code();
        // mov dx, imm16; mov al, imm8; out dx, al.
        assert_eq!(code[0], 0xba);
        assert_eq!(u16::from_le_bytes([code[1], code[2]]), RESET);
        assert_eq!(&code[3..6], &[0xb0, RESET_VALUE, 0xee]);
        assert_eq!(write(RESET, code[4]), Some(PowerEvent::Reset));
        // cli; hlt; jmp -3 lands on the hlt.
        assert_eq!(&code[6..10], &[0xfa, 0xf4, 0xeb, 0xfd]);
        assert_eq!(10 + (code[9] as i8) as isize, 7);
        // Ends within the first megabyte, as real mode addresses it.
        assert_eq!(RESET_VECTOR + code.len() as u64, 0x10_0000);
    }
}
