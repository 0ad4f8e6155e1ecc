//! One IOAPIC with 24 pins (GSIs 0–23), delivering to the VM's one LAPIC.
//!
//! The guest reaches it through two 32-bit registers at [`BASE`]: IOREGSEL
//! (offset 0) selects a register, IOWIN (offset 0x10) reads or writes it.
//! The registers are the ID, the version (0x11, maximum redirection entry
//! 23; no EOI register, so level-triggered interrupts end through the
//! LAPIC's EOI broadcast), the arbitration ID and 24 redirection entries.
//!
//! Devices drive pins with [`IoApic::set_line`], giving whether the line is
//! *asserted*: polarity is kept in the entry for the guest to read, but the
//! platform's firmware tables describe every line with the polarity its
//! device uses, so the model does not invert. An edge-triggered pin
//! delivers on each rising edge (lost while masked, as on hardware); a
//! level-triggered pin delivers while asserted, sets its remote IRR, and
//! delivers again after the LAPIC's EOI for its vector
//! ([`IoApic::end_of_interrupt`]) if still asserted, or when it is unmasked
//! while asserted.
//!
//! With one CPU, delivery is a destination check against the LAPIC
//! ([`Lapic::accepts`]: physical ID 0, a matching logical destination, or
//! broadcast 0xff) followed by fixed delivery; lowest-priority delivery is
//! fixed delivery to that CPU. NMI entries send an NMI. SMI, INIT and
//! ExtINT entries (virtual-wire mode through the IOAPIC, which Linux falls
//! back to only when IRQ0 does not work through pin 2) and the reserved
//! modes deliver nothing. Delivery is immediate, so the delivery-status bit
//! always reads idle.

use crate::MmioIgnored;
use crate::lapic::Lapic;

/// The register window's address.
pub const BASE: u64 = 0xfec0_0000;
/// The window's size as firmware tables describe it.
pub const WINDOW_SIZE: u64 = 0x20;
/// Pins, and so redirection entries.
pub const PINS: usize = 24;

/// Offsets in the window.
pub const REGISTER_SELECT: u64 = 0x00;
pub const REGISTER_WINDOW: u64 = 0x10;

/// Register indices.
pub const ID: u8 = 0x00;
pub const VERSION: u8 = 0x01;
pub const ARBITRATION: u8 = 0x02;
/// Entry `n`'s low half is at `REDIRECTION + 2n`, its high half next.
pub const REDIRECTION: u8 = 0x10;

/// Version 0x11 with maximum redirection entry 23.
pub const IOAPIC_VERSION: u32 = ((PINS as u32 - 1) << 16) | 0x11;

/// Redirection-entry bits.
pub mod entry {
    pub const VECTOR: u64 = 0xff;
    pub const DELIVERY_MODE: u64 = 7 << 8;
    pub const FIXED: u64 = 0 << 8;
    pub const LOWEST_PRIORITY: u64 = 1 << 8;
    pub const NMI: u64 = 4 << 8;
    pub const EXTINT: u64 = 7 << 8;
    pub const LOGICAL: u64 = 1 << 11;
    pub const DELIVERY_STATUS: u64 = 1 << 12;
    pub const ACTIVE_LOW: u64 = 1 << 13;
    pub const REMOTE_IRR: u64 = 1 << 14;
    pub const LEVEL: u64 = 1 << 15;
    pub const MASKED: u64 = 1 << 16;
    pub const DESTINATION_SHIFT: u32 = 56;
}

/// The bits of an entry's low half a guest may write.
const LOW_WRITABLE: u64 = 0x0001_afff;

/// The IOAPIC.
pub struct IoApic {
    select: u32,
    id: u32,
    entries: [u64; PINS],
    /// Asserted lines, one bit a pin.
    lines: u32,
}

impl Default for IoApic {
    fn default() -> Self {
        Self::new()
    }
}

impl IoApic {
    /// Reset state: ID 0, every entry masked.
    pub const fn new() -> Self {
        Self {
            select: 0,
            id: 0,
            entries: [entry::MASKED; PINS],
            lines: 0,
        }
    }

    fn check(offset: u64, size: u8) -> Result<(), MmioIgnored> {
        if size != 4 {
            Err(MmioIgnored::Size(size))
        } else if offset >= WINDOW_SIZE {
            Err(MmioIgnored::OutOfRange(offset))
        } else if !offset.is_multiple_of(4) {
            Err(MmioIgnored::Misaligned(offset))
        } else {
            Ok(())
        }
    }

    /// A read of `size` bytes at `offset` in the window; the registers are
    /// 32-bit and only 32-bit accesses reach them.
    pub fn read_mmio(&self, offset: u64, size: u8) -> Result<u32, MmioIgnored> {
        Self::check(offset, size)?;
        Ok(match offset {
            REGISTER_SELECT => self.select,
            REGISTER_WINDOW => self.read_register(self.select as u8),
            _ => 0,
        })
    }

    /// A write of `size` bytes at `offset` in the window. Unmasking an
    /// asserted level-triggered pin delivers at once.
    pub fn write_mmio(
        &mut self,
        offset: u64,
        size: u8,
        value: u32,
        lapic: &mut Lapic,
    ) -> Result<(), MmioIgnored> {
        Self::check(offset, size)?;
        match offset {
            REGISTER_SELECT => self.select = value & 0xff,
            REGISTER_WINDOW => self.write_register(self.select as u8, value, lapic),
            _ => {}
        }
        Ok(())
    }

    fn read_register(&self, index: u8) -> u32 {
        match index {
            ID | ARBITRATION => self.id,
            VERSION => IOAPIC_VERSION,
            _ => match Self::entry_of(index) {
                Some((pin, false)) => self.entries[pin] as u32,
                Some((pin, true)) => (self.entries[pin] >> 32) as u32,
                None => 0,
            },
        }
    }

    /// The pin and half (`true` for the high one) of a redirection index.
    fn entry_of(index: u8) -> Option<(usize, bool)> {
        let number = usize::from(index.checked_sub(REDIRECTION)?);
        (number < 2 * PINS).then_some((number / 2, number % 2 == 1))
    }

    fn write_register(&mut self, index: u8, value: u32, lapic: &mut Lapic) {
        if index == ID {
            self.id = value & 0x0f00_0000;
            return;
        }
        let Some((pin, high)) = Self::entry_of(index) else {
            return;
        };
        let old = self.entries[pin];
        let mut new = if high {
            (old & 0xffff_ffff) | u64::from(value & 0xff00_0000) << 32
        } else {
            let kept = entry::DELIVERY_STATUS | entry::REMOTE_IRR | !0xffff_ffff;
            (old & kept) | (u64::from(value) & LOW_WRITABLE)
        };
        if new & entry::LEVEL == 0 {
            new &= !entry::REMOTE_IRR;
        }
        self.entries[pin] = new;
        self.service(pin, lapic);
    }

    /// Whether some unmasked pin sends an NMI: a device line could then
    /// wake a vCPU halted with interrupts off.
    pub fn routes_nmi(&self) -> bool {
        self.entries
            .iter()
            .any(|&e| e & entry::MASKED == 0 && e & entry::DELIVERY_MODE == entry::NMI)
    }

    /// The redirection entry of `pin` (for the world switcher's reports).
    pub fn entry(&self, pin: usize) -> Option<u64> {
        self.entries.get(pin).copied()
    }

    /// A device asserts (`true`) or deasserts pin `pin`; pins past 23 are
    /// ignored.
    pub fn set_line(&mut self, pin: usize, asserted: bool, lapic: &mut Lapic) {
        if pin >= PINS {
            return;
        }
        let bit = 1 << pin;
        let was = self.lines & bit != 0;
        if asserted {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
        let entry = self.entries[pin];
        if entry & entry::LEVEL != 0 {
            self.service(pin, lapic);
        } else if asserted && !was && entry & entry::MASKED == 0 {
            self.deliver(entry, lapic);
        }
    }

    /// Delivers a level-triggered pin that is asserted, unmasked and not
    /// waiting for its EOI.
    fn service(&mut self, pin: usize, lapic: &mut Lapic) {
        let entry = self.entries[pin];
        let ready = entry::LEVEL | entry::MASKED | entry::REMOTE_IRR;
        if self.lines & 1 << pin != 0 && entry & ready == entry::LEVEL && self.deliver(entry, lapic)
        {
            self.entries[pin] |= entry::REMOTE_IRR;
        }
    }

    /// Sends `entry`'s message; whether the LAPIC took a fixed interrupt.
    fn deliver(&self, entry: u64, lapic: &mut Lapic) -> bool {
        let destination = (entry >> entry::DESTINATION_SHIFT) as u8;
        if !lapic.accepts(destination, entry & entry::LOGICAL != 0) {
            return false;
        }
        match entry & entry::DELIVERY_MODE {
            entry::FIXED | entry::LOWEST_PRIORITY => {
                lapic.accept_interrupt(entry as u8, entry & entry::LEVEL != 0)
            }
            entry::NMI => {
                lapic.accept_nmi();
                false
            }
            _ => false,
        }
    }

    /// The LAPIC's EOI for a level-triggered `vector`: clears the remote
    /// IRR of every level-triggered pin with that vector, and delivers
    /// again those still asserted.
    pub fn end_of_interrupt(&mut self, vector: u8, lapic: &mut Lapic) {
        for pin in 0..PINS {
            let entry = self.entries[pin];
            if entry & entry::REMOTE_IRR != 0 && entry as u8 == vector {
                self.entries[pin] &= !entry::REMOTE_IRR;
                self.service(pin, lapic);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::lapic::{self, LevelEoi};

    /// An enabled LAPIC and a reset IOAPIC.
    fn platform() -> (IoApic, Lapic) {
        let mut lapic = Lapic::new(Clock::new(1_000_000_000, 1_000_000_000).unwrap(), 48);
        lapic
            .write_mmio(u64::from(lapic::register::SPURIOUS_VECTOR), 4, 0x1ff, 0)
            .unwrap();
        (IoApic::new(), lapic)
    }

    fn program(ioapic: &mut IoApic, lapic: &mut Lapic, pin: u8, value: u64) {
        for (half, bits) in [(1, (value >> 32) as u32), (0, value as u32)] {
            ioapic
                .write_mmio(
                    REGISTER_SELECT,
                    4,
                    u32::from(REDIRECTION + 2 * pin + half),
                    lapic,
                )
                .unwrap();
            ioapic.write_mmio(REGISTER_WINDOW, 4, bits, lapic).unwrap();
        }
    }

    fn read(ioapic: &mut IoApic, lapic: &mut Lapic, index: u8) -> u32 {
        ioapic
            .write_mmio(REGISTER_SELECT, 4, u32::from(index), lapic)
            .unwrap();
        ioapic.read_mmio(REGISTER_WINDOW, 4).unwrap()
    }

    /// Takes the LAPIC's pending interrupt and ends it, passing a level EOI
    /// on to the IOAPIC.
    fn serve(ioapic: &mut IoApic, lapic: &mut Lapic) -> Option<u8> {
        let vector = lapic.take_interrupt()?;
        let eoi = lapic
            .write_mmio(u64::from(lapic::register::END_OF_INTERRUPT), 4, 0, 0)
            .unwrap();
        if let Some(LevelEoi { vector }) = eoi {
            ioapic.end_of_interrupt(vector, lapic);
        }
        Some(vector)
    }

    #[test]
    fn identification_registers() {
        let (mut ioapic, mut lapic) = platform();
        assert_eq!(read(&mut ioapic, &mut lapic, VERSION), 0x0017_0011);
        ioapic
            .write_mmio(REGISTER_SELECT, 4, 0, &mut lapic)
            .unwrap();
        ioapic
            .write_mmio(REGISTER_WINDOW, 4, 0xffff_ffff, &mut lapic)
            .unwrap();
        assert_eq!(read(&mut ioapic, &mut lapic, ID), 0x0f00_0000);
        assert_eq!(read(&mut ioapic, &mut lapic, ARBITRATION), 0x0f00_0000);
        assert_eq!(ioapic.read_mmio(REGISTER_SELECT, 4), Ok(0x02));
        // Entries reset masked; indices past the last entry read 0.
        assert_eq!(read(&mut ioapic, &mut lapic, REDIRECTION + 46), 0x0001_0000);
        assert_eq!(read(&mut ioapic, &mut lapic, REDIRECTION + 48), 0);
        assert_eq!(read(&mut ioapic, &mut lapic, 0x03), 0);
        assert_eq!(
            ioapic.read_mmio(REGISTER_WINDOW, 1),
            Err(MmioIgnored::Size(1))
        );
        assert_eq!(
            ioapic.read_mmio(0x12, 4),
            Err(MmioIgnored::Misaligned(0x12))
        );
        assert_eq!(
            ioapic.read_mmio(0x40, 4),
            Err(MmioIgnored::OutOfRange(0x40))
        );
    }

    #[test]
    fn entries_keep_what_is_writable() {
        let (mut ioapic, mut lapic) = platform();
        program(&mut ioapic, &mut lapic, 5, 0xffff_ffff_ffff_ffff);
        let low = read(&mut ioapic, &mut lapic, REDIRECTION + 10);
        assert_eq!(
            low, 0x0001_afff,
            "delivery status and remote IRR are read-only"
        );
        assert_eq!(read(&mut ioapic, &mut lapic, REDIRECTION + 11), 0xff00_0000);
        assert_eq!(ioapic.entry(5), Some(0xff00_0000_0001_afff));
        assert_eq!(ioapic.entry(24), None);
    }

    #[test]
    fn edge_triggered_pins_deliver_on_rising_edges() {
        let (mut ioapic, mut lapic) = platform();
        program(&mut ioapic, &mut lapic, 4, 0x34);
        ioapic.set_line(4, true, &mut lapic);
        assert_eq!(serve(&mut ioapic, &mut lapic), Some(0x34));
        ioapic.set_line(4, true, &mut lapic);
        assert_eq!(serve(&mut ioapic, &mut lapic), None, "no edge");
        ioapic.set_line(4, false, &mut lapic);
        ioapic.set_line(4, true, &mut lapic);
        assert_eq!(serve(&mut ioapic, &mut lapic), Some(0x34));
        // An edge while masked is lost, and unmasking does not bring it back.
        ioapic.set_line(4, false, &mut lapic);
        program(&mut ioapic, &mut lapic, 4, 0x34 | entry::MASKED);
        ioapic.set_line(4, true, &mut lapic);
        program(&mut ioapic, &mut lapic, 4, 0x34);
        assert_eq!(serve(&mut ioapic, &mut lapic), None);
        assert_eq!(read(&mut ioapic, &mut lapic, REDIRECTION + 8) & 1 << 14, 0);
    }

    #[test]
    fn level_triggered_pins_wait_for_the_eoi() {
        let (mut ioapic, mut lapic) = platform();
        program(
            &mut ioapic,
            &mut lapic,
            9,
            0x49 | entry::LEVEL | entry::ACTIVE_LOW,
        );
        ioapic.set_line(9, true, &mut lapic);
        let remote_irr = |ioapic: &IoApic| ioapic.entry(9).unwrap() & entry::REMOTE_IRR != 0;
        assert!(remote_irr(&ioapic));
        assert_eq!(lapic.take_interrupt(), Some(0x49));
        // Still asserted, but nothing more until the EOI.
        ioapic.set_line(9, true, &mut lapic);
        assert_eq!(lapic.pending_interrupt(), None);
        let eoi = lapic
            .write_mmio(u64::from(lapic::register::END_OF_INTERRUPT), 4, 0, 0)
            .unwrap();
        assert_eq!(eoi, Some(LevelEoi { vector: 0x49 }));
        // The EOI delivers again the line still asserted.
        ioapic.end_of_interrupt(0x49, &mut lapic);
        assert!(remote_irr(&ioapic));
        assert_eq!(lapic.take_interrupt(), Some(0x49));
        // The device deasserts before the handler's EOI: nothing more.
        ioapic.set_line(9, false, &mut lapic);
        assert_eq!(serve(&mut ioapic, &mut lapic), None);
        let eoi = lapic
            .write_mmio(u64::from(lapic::register::END_OF_INTERRUPT), 4, 0, 0)
            .unwrap();
        ioapic.end_of_interrupt(eoi.unwrap().vector, &mut lapic);
        assert!(!remote_irr(&ioapic));
        assert_eq!(lapic.pending_interrupt(), None);
        // An EOI for another vector changes nothing.
        ioapic.set_line(9, true, &mut lapic);
        ioapic.end_of_interrupt(0x50, &mut lapic);
        assert!(remote_irr(&ioapic));
    }

    #[test]
    fn masked_level_pins_deliver_when_unmasked() {
        let (mut ioapic, mut lapic) = platform();
        program(
            &mut ioapic,
            &mut lapic,
            11,
            0x5b | entry::LEVEL | entry::MASKED,
        );
        ioapic.set_line(11, true, &mut lapic);
        assert_eq!(lapic.pending_interrupt(), None);
        program(&mut ioapic, &mut lapic, 11, 0x5b | entry::LEVEL);
        assert_eq!(serve(&mut ioapic, &mut lapic), Some(0x5b));
        // Switching to edge clears the remote IRR.
        ioapic.set_line(11, true, &mut lapic);
        assert!(ioapic.entry(11).unwrap() & entry::REMOTE_IRR != 0);
        program(&mut ioapic, &mut lapic, 11, 0x5b);
        assert_eq!(ioapic.entry(11).unwrap() & entry::REMOTE_IRR, 0);
    }

    #[test]
    fn destinations_and_delivery_modes() {
        let (mut ioapic, mut lapic) = platform();
        // Physical 1 is nobody; 0 and broadcast are us.
        program(&mut ioapic, &mut lapic, 1, 1 << 56 | 0x41);
        ioapic.set_line(1, true, &mut lapic);
        assert_eq!(lapic.pending_interrupt(), None);
        program(&mut ioapic, &mut lapic, 2, 0xff << 56 | 0x42);
        ioapic.set_line(2, true, &mut lapic);
        assert_eq!(serve(&mut ioapic, &mut lapic), Some(0x42));
        // Logical flat with our bit, lowest priority.
        lapic
            .write_mmio(
                u64::from(lapic::register::LOGICAL_DESTINATION),
                4,
                0x0100_0000,
                0,
            )
            .unwrap();
        program(
            &mut ioapic,
            &mut lapic,
            3,
            1 << 56 | entry::LOGICAL | entry::LOWEST_PRIORITY | 0x43,
        );
        ioapic.set_line(3, true, &mut lapic);
        assert_eq!(serve(&mut ioapic, &mut lapic), Some(0x43));
        // NMI.
        program(&mut ioapic, &mut lapic, 5, entry::NMI);
        ioapic.set_line(5, true, &mut lapic);
        assert!(lapic.take_nmi());
        // ExtINT delivers nothing; an illegal vector sets the LAPIC's ESR
        // and leaves the remote IRR clear.
        program(&mut ioapic, &mut lapic, 6, entry::EXTINT);
        ioapic.set_line(6, true, &mut lapic);
        program(&mut ioapic, &mut lapic, 7, entry::LEVEL | 0x07);
        ioapic.set_line(7, true, &mut lapic);
        assert_eq!(ioapic.entry(7).unwrap() & entry::REMOTE_IRR, 0);
        assert_eq!(lapic.pending_interrupt(), None);
        let esr = u64::from(lapic::register::ERROR_STATUS);
        lapic.write_mmio(esr, 4, 0, 0).unwrap();
        assert_eq!(
            lapic.read_mmio(esr, 4, 0),
            Ok(u64::from(lapic::error::RECEIVE_ILLEGAL_VECTOR))
        );
        // Pins past 23 are ignored.
        ioapic.set_line(24, true, &mut lapic);
    }
}
