//! The two cascaded 8259A interrupt controllers of a PC: the master at
//! ports 0x20/0x21 (IRQs 0–7), the slave at 0xa0/0xa1 (IRQs 8–15, on the
//! master's IR2), and the edge/level control registers (ELCR) at
//! 0x4d0/0x4d1.
//!
//! What is modelled is what PC operating systems use: the ICW1–ICW4
//! initialisation sequence (8086 mode; ICW1's LTIM bit is ignored because
//! the ELCR decides edge or level on a PC, and ICW3 is ignored because the
//! cascade is wired on IR2), OCW1 masks, OCW2 EOIs (non-specific,
//! specific, with and without rotation, set priority, rotate in auto-EOI),
//! OCW3 (read IRR or ISR, poll, special mask), auto-EOI, and the interrupt
//! acknowledge ([`Pic::acknowledge`]) that the arbiter performs when it
//! injects the master's output as an ExtINT through LAPIC LINT0. Special
//! fully nested mode and buffered mode are not modelled.
//!
//! An edge-triggered input latches a request on each rising edge until it
//! is acknowledged; a level-triggered one requests while it is high. An
//! acknowledge with nothing left to deliver (the request went away, or was
//! masked, since the output was seen) returns IRQ7's vector without
//! setting an ISR bit: the spurious interrupt Linux recognises by reading
//! the ISR. (The master's cascade request follows the slave's output at
//! every change, so the slave's own spurious IRQ15 does not arise.)
//!
//! After reset both chips are initialised as PC firmware leaves them
//! (vector bases 0x08 and 0x70) with every line masked, so that nothing
//! reaches a guest that has not programmed them.

/// The master's command and data ports.
pub const MASTER_COMMAND: u16 = 0x20;
pub const MASTER_DATA: u16 = 0x21;
/// The slave's command and data ports.
pub const SLAVE_COMMAND: u16 = 0xa0;
pub const SLAVE_DATA: u16 = 0xa1;
/// The ELCRs of the master and the slave.
pub const MASTER_ELCR: u16 = 0x4d0;
pub const SLAVE_ELCR: u16 = 0x4d1;

/// The master input the slave is wired to.
const CASCADE: u8 = 2;

/// Where a chip is in its initialisation sequence.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Initialisation {
    Ready,
    Icw2,
    Icw3,
    Icw4,
}

/// One 8259A.
#[derive(Clone, Copy)]
struct Chip {
    request: u8,
    in_service: u8,
    mask: u8,
    /// Input levels, for edge detection.
    lines: u8,
    /// Level-triggered inputs (the ELCR).
    level: u8,
    /// ELCR bits that exist.
    level_writable: u8,
    base: u8,
    initialisation: Initialisation,
    icw4_expected: bool,
    single: bool,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    /// The input with the highest priority.
    lowest_priority_below: u8,
    read_in_service: bool,
    poll: bool,
    special_mask: bool,
}

impl Chip {
    const fn new(base: u8, level_writable: u8) -> Self {
        Self {
            request: 0,
            in_service: 0,
            mask: 0xff,
            lines: 0,
            level: 0,
            level_writable,
            base,
            initialisation: Initialisation::Ready,
            icw4_expected: false,
            single: false,
            auto_eoi: false,
            rotate_on_auto_eoi: false,
            lowest_priority_below: 0,
            read_in_service: false,
            poll: false,
            special_mask: false,
        }
    }

    /// The priority rank (0 highest) of the best input in `bits`.
    fn best(&self, bits: u8) -> Option<u8> {
        (0..8).find(|rank| bits & 1 << ((rank + self.lowest_priority_below) & 7) != 0)
    }

    fn input_of(&self, rank: u8) -> u8 {
        (rank + self.lowest_priority_below) & 7
    }

    /// The input this chip would have acknowledged now: the best unmasked
    /// request that beats everything in service (in special mask mode,
    /// masked inputs in service do not count).
    fn pending(&self) -> Option<u8> {
        let rank = self.best(self.request & !self.mask)?;
        let mut in_service = self.in_service;
        if self.special_mask {
            in_service &= !self.mask;
        }
        match self.best(in_service) {
            Some(serving) if serving <= rank => None,
            _ => Some(self.input_of(rank)),
        }
    }

    fn set_line(&mut self, input: u8, high: bool) {
        let bit = 1 << input;
        if high {
            if self.level & bit != 0 || self.lines & bit == 0 {
                self.request |= bit;
            }
            self.lines |= bit;
        } else {
            if self.level & bit != 0 {
                self.request &= !bit;
            }
            self.lines &= !bit;
        }
    }

    /// The acknowledge of `input`: in service (unless auto-EOI), and an
    /// edge request is consumed.
    fn acknowledge(&mut self, input: u8) {
        let bit = 1 << input;
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.lowest_priority_below = (input + 1) & 7;
            }
        } else {
            self.in_service |= bit;
        }
        if self.level & bit == 0 {
            self.request &= !bit;
        }
    }

    fn end_of_interrupt(&mut self, input: u8, rotate: bool) {
        self.in_service &= !(1 << input);
        if rotate {
            self.lowest_priority_below = (input + 1) & 7;
        }
    }

    fn write_command(&mut self, value: u8) {
        if value & 0x10 != 0 {
            // ICW1: the mask, the ISR and the edge detectors reset (a line
            // already high must fall and rise again); level requests stay.
            self.request = self.lines & self.level;
            self.in_service = 0;
            self.mask = 0;
            self.lowest_priority_below = 0;
            self.special_mask = false;
            self.read_in_service = false;
            self.poll = false;
            self.auto_eoi = false;
            self.rotate_on_auto_eoi = false;
            self.icw4_expected = value & 0x01 != 0;
            self.single = value & 0x02 != 0;
            self.initialisation = Initialisation::Icw2;
        } else if value & 0x08 != 0 {
            // OCW3.
            if value & 0x04 != 0 {
                self.poll = true;
            }
            if value & 0x02 != 0 {
                self.read_in_service = value & 0x01 != 0;
            }
            if value & 0x40 != 0 {
                self.special_mask = value & 0x20 != 0;
            }
        } else {
            // OCW2.
            let level = value & 7;
            match value >> 5 {
                0 => self.rotate_on_auto_eoi = false,
                4 => self.rotate_on_auto_eoi = true,
                command @ (1 | 5) => {
                    if let Some(rank) = self.best(self.in_service) {
                        self.end_of_interrupt(self.input_of(rank), command == 5);
                    }
                }
                command @ (3 | 7) => self.end_of_interrupt(level, command == 7),
                6 => self.lowest_priority_below = (level + 1) & 7,
                _ => {}
            }
        }
    }

    fn write_data(&mut self, value: u8) {
        self.initialisation = match self.initialisation {
            Initialisation::Ready => {
                self.mask = value;
                Initialisation::Ready
            }
            Initialisation::Icw2 => {
                self.base = value & 0xf8;
                match (self.single, self.icw4_expected) {
                    (false, _) => Initialisation::Icw3,
                    (true, true) => Initialisation::Icw4,
                    (true, false) => Initialisation::Ready,
                }
            }
            Initialisation::Icw3 if self.icw4_expected => Initialisation::Icw4,
            Initialisation::Icw3 => Initialisation::Ready,
            Initialisation::Icw4 => {
                self.auto_eoi = value & 0x02 != 0;
                Initialisation::Ready
            }
        };
    }

    /// A poll: the pending input, acknowledged, as 0x80 | input; 0 if none.
    fn poll(&mut self) -> u8 {
        self.poll = false;
        match self.pending() {
            Some(input) => {
                self.acknowledge(input);
                0x80 | input
            }
            None => 0,
        }
    }

    fn read(&mut self, data: bool) -> u8 {
        if self.poll {
            self.poll()
        } else if data {
            self.mask
        } else if self.read_in_service {
            self.in_service
        } else {
            self.request
        }
    }
}

/// The master and slave pair.
pub struct Pic {
    master: Chip,
    slave: Chip,
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

impl Pic {
    /// The pair as firmware leaves it, every line masked. IRQs 0–2 of the
    /// master and 8 and 13 of the slave are always edge-triggered.
    pub const fn new() -> Self {
        Self {
            master: Chip::new(0x08, 0xf8),
            slave: Chip::new(0x70, 0xde),
        }
    }

    /// Whether `port` is one of the pair's.
    pub fn owns_port(port: u16) -> bool {
        matches!(
            port,
            MASTER_COMMAND | MASTER_DATA | SLAVE_COMMAND | SLAVE_DATA | MASTER_ELCR | SLAVE_ELCR
        )
    }

    /// IN from one of the pair's ports (a poll acknowledges, so reads
    /// change state); other ports read all-ones.
    pub fn read(&mut self, port: u16) -> u8 {
        let value = match port {
            MASTER_COMMAND | MASTER_DATA => self.master.read(port == MASTER_DATA),
            SLAVE_COMMAND | SLAVE_DATA => self.slave.read(port == SLAVE_DATA),
            MASTER_ELCR => self.master.level,
            SLAVE_ELCR => self.slave.level,
            _ => 0xff,
        };
        self.update_cascade();
        value
    }

    /// OUT to one of the pair's ports; others are ignored.
    pub fn write(&mut self, port: u16, value: u8) {
        match port {
            MASTER_COMMAND => self.master.write_command(value),
            MASTER_DATA => self.master.write_data(value),
            SLAVE_COMMAND => self.slave.write_command(value),
            SLAVE_DATA => self.slave.write_data(value),
            MASTER_ELCR | SLAVE_ELCR => {
                let chip = if port == MASTER_ELCR {
                    &mut self.master
                } else {
                    &mut self.slave
                };
                chip.level = value & chip.level_writable;
                // Level inputs request exactly while high.
                chip.request = (chip.request & !chip.level) | (chip.lines & chip.level);
            }
            _ => {}
        }
        self.update_cascade();
    }

    /// A device raises or lowers IRQ `irq` (0–15; others are ignored).
    pub fn set_irq(&mut self, irq: u8, high: bool) {
        match irq {
            0..=7 => self.master.set_line(irq, high),
            8..=15 => self.slave.set_line(irq - 8, high),
            _ => return,
        }
        self.update_cascade();
    }

    /// The slave's output is the master's IR2, a wire inside the pair: the
    /// request follows it directly.
    fn update_cascade(&mut self) {
        if self.master.single {
            return;
        }
        let bit = 1 << CASCADE;
        if self.slave.pending().is_some() {
            self.master.request |= bit;
        } else {
            self.master.request &= !bit;
        }
    }

    /// Whether the master's INT output is asserted.
    pub fn output(&self) -> bool {
        self.has_requests() && self.master.pending().is_some()
    }

    /// Whether any unmasked input requests an interrupt, on either chip
    /// (whatever is in service): a cheap test before [`Pic::output`].
    #[inline]
    pub fn has_requests(&self) -> bool {
        self.master.request & !self.master.mask != 0 || self.slave.request & !self.slave.mask != 0
    }

    /// The CPU's interrupt acknowledge: the vector of the interrupt taken,
    /// which is now in service (unless auto-EOI). With nothing to deliver
    /// it is IRQ7's vector, and nothing is in service.
    pub fn acknowledge(&mut self) -> u8 {
        let Some(input) = self.master.pending() else {
            return self.master.base | 7;
        };
        self.master.acknowledge(input);
        let vector = if input == CASCADE && !self.master.single {
            match self.slave.pending() {
                Some(slave_input) => {
                    self.slave.acknowledge(slave_input);
                    self.slave.base | slave_input
                }
                None => self.slave.base | 7,
            }
        } else {
            self.master.base | input
        };
        self.update_cascade();
        vector
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Linux's `init_8259A(0)` writes, in order: mask the master,
    /// ICW1-4 to the master (vectors from 0x30, slave on IR2, 8086 mode),
    /// ICW1-4 to the slave (vectors from 0x38, cascade identity 2), then
    /// the cached masks (all masked but the cascade, before any IRQ is
    /// set up).
    const LINUX_INIT: [(u16, u8); 11] = [
        (MASTER_DATA, 0xff),
        (MASTER_COMMAND, 0x11),
        (MASTER_DATA, 0x30),
        (MASTER_DATA, 0x04),
        (MASTER_DATA, 0x01),
        (SLAVE_COMMAND, 0x11),
        (SLAVE_DATA, 0x38),
        (SLAVE_DATA, 0x02),
        (SLAVE_DATA, 0x01),
        (MASTER_DATA, 0xfb),
        (SLAVE_DATA, 0xff),
    ];

    fn linux_pic() -> Pic {
        let mut pic = Pic::new();
        for (port, value) in LINUX_INIT {
            pic.write(port, value);
        }
        pic
    }

    /// Linux's `unmask_8259A_irq`.
    fn unmask(pic: &mut Pic, irq: u8) {
        let port = if irq < 8 { MASTER_DATA } else { SLAVE_DATA };
        let mask = pic.read(port) & !(1 << (irq & 7));
        pic.write(port, mask);
    }

    /// Linux's `mask_and_ack_8259A`: mask, then specific EOIs (the slave's
    /// first, then the master's for the cascade).
    fn mask_and_ack(pic: &mut Pic, irq: u8) {
        if irq >= 8 {
            let mask = pic.read(SLAVE_DATA) | 1 << (irq - 8);
            pic.write(SLAVE_DATA, mask);
            pic.write(SLAVE_COMMAND, 0x60 + (irq - 8));
            pic.write(MASTER_COMMAND, 0x60 + CASCADE);
        } else {
            let mask = pic.read(MASTER_DATA) | 1 << irq;
            pic.write(MASTER_DATA, mask);
            pic.write(MASTER_COMMAND, 0x60 + irq);
        }
    }

    fn in_service(pic: &mut Pic, command: u16) -> u8 {
        pic.write(command, 0x0b);
        let value = pic.read(command);
        pic.write(command, 0x0a);
        value
    }

    #[test]
    fn linux_initialisation_and_probe() {
        let mut pic = linux_pic();
        // probe_8259A: the mask written reads back.
        pic.write(SLAVE_DATA, 0xff);
        pic.write(MASTER_DATA, 0xfb);
        assert_eq!(pic.read(MASTER_DATA), 0xfb);
        assert!(!pic.output(), "everything masked");
        unmask(&mut pic, 0);
        pic.set_irq(0, true);
        assert!(pic.output());
        assert_eq!(pic.acknowledge(), 0x30);
        assert_eq!(in_service(&mut pic, MASTER_COMMAND), 0x01);
        mask_and_ack(&mut pic, 0);
        assert_eq!(in_service(&mut pic, MASTER_COMMAND), 0);
        assert_eq!(pic.read(MASTER_DATA), 0xfb | 0x01);
    }

    #[test]
    fn the_slave_cascades_through_irq2() {
        let mut pic = linux_pic();
        unmask(&mut pic, 8);
        pic.set_irq(8, true);
        assert!(pic.output());
        assert_eq!(pic.acknowledge(), 0x38);
        assert_eq!(in_service(&mut pic, MASTER_COMMAND), 1 << CASCADE);
        assert_eq!(in_service(&mut pic, SLAVE_COMMAND), 0x01);
        // IRQ 14 waits for the slave's and the master's EOIs.
        unmask(&mut pic, 14);
        pic.set_irq(14, true);
        assert!(!pic.output());
        mask_and_ack(&mut pic, 8);
        assert!(pic.output());
        assert_eq!(pic.acknowledge(), 0x3e);
    }

    #[test]
    fn priority_nests_and_non_specific_eoi_ends_the_highest() {
        let mut pic = linux_pic();
        pic.write(MASTER_DATA, 0x00);
        pic.set_irq(5, true);
        assert_eq!(pic.acknowledge(), 0x35);
        pic.set_irq(6, true);
        assert!(!pic.output(), "IRQ6 is below IRQ5");
        pic.set_irq(1, true);
        assert_eq!(pic.acknowledge(), 0x31, "IRQ1 nests");
        assert_eq!(in_service(&mut pic, MASTER_COMMAND), 0x22);
        pic.write(MASTER_COMMAND, 0x20);
        assert_eq!(in_service(&mut pic, MASTER_COMMAND), 0x20);
        pic.write(MASTER_COMMAND, 0x20);
        assert_eq!(pic.acknowledge(), 0x36);
    }

    #[test]
    fn rotation_and_set_priority() {
        let mut pic = linux_pic();
        pic.write(MASTER_DATA, 0x00);
        pic.set_irq(3, true);
        pic.set_irq(4, true);
        assert_eq!(pic.acknowledge(), 0x33);
        // Rotate on non-specific EOI: IRQ3 becomes the lowest priority.
        pic.write(MASTER_COMMAND, 0xa0);
        pic.set_irq(3, false);
        pic.set_irq(3, true);
        assert_eq!(pic.acknowledge(), 0x34);
        pic.write(MASTER_COMMAND, 0x64);
        assert_eq!(pic.acknowledge(), 0x33);
        pic.write(MASTER_COMMAND, 0x63);
        // Set priority: IRQ 6 lowest, so IRQ 7 highest.
        pic.write(MASTER_COMMAND, 0xc6);
        pic.set_irq(0, true);
        pic.set_irq(7, true);
        assert_eq!(pic.acknowledge(), 0x37);
    }

    #[test]
    fn auto_eoi_leaves_nothing_in_service() {
        let mut pic = Pic::new();
        for (port, value) in [
            (MASTER_COMMAND, 0x11),
            (MASTER_DATA, 0x20),
            (MASTER_DATA, 0x04),
            (MASTER_DATA, 0x03),
            (MASTER_DATA, 0xfe),
        ] {
            pic.write(port, value);
        }
        pic.set_irq(0, true);
        assert_eq!(pic.acknowledge(), 0x20);
        assert_eq!(in_service(&mut pic, MASTER_COMMAND), 0);
        pic.set_irq(0, false);
        pic.set_irq(0, true);
        assert_eq!(pic.acknowledge(), 0x20, "no EOI needed");
    }

    #[test]
    fn spurious_interrupts_are_irq7() {
        let mut pic = linux_pic();
        unmask(&mut pic, 3);
        pic.set_irq(3, true);
        assert!(pic.output());
        // Masked between the output and the acknowledge.
        pic.write(MASTER_DATA, 0xff);
        assert_eq!(pic.acknowledge(), 0x37);
        assert_eq!(in_service(&mut pic, MASTER_COMMAND), 0, "Linux checks this");
        // A request the slave drops before the acknowledge takes the
        // master's cascade request with it.
        pic.write(MASTER_DATA, 0xfb);
        unmask(&mut pic, 9);
        pic.write(SLAVE_ELCR, 0x02);
        pic.set_irq(9, true);
        assert_eq!(pic.read(MASTER_COMMAND) & 1 << CASCADE, 1 << CASCADE);
        pic.set_irq(9, false);
        assert!(!pic.output());
        assert_eq!(pic.acknowledge(), 0x37);
    }

    #[test]
    fn level_inputs_request_while_high() {
        let mut pic = linux_pic();
        pic.write(MASTER_ELCR, 0xff);
        assert_eq!(pic.read(MASTER_ELCR), 0xf8, "IRQs 0-2 are always edge");
        pic.write(SLAVE_ELCR, 0xff);
        assert_eq!(pic.read(SLAVE_ELCR), 0xde);
        unmask(&mut pic, 5);
        pic.set_irq(5, true);
        assert_eq!(pic.acknowledge(), 0x35);
        mask_and_ack(&mut pic, 5);
        unmask(&mut pic, 5);
        assert_eq!(pic.acknowledge(), 0x35, "still high");
        mask_and_ack(&mut pic, 5);
        pic.set_irq(5, false);
        unmask(&mut pic, 5);
        assert!(!pic.output());
    }

    #[test]
    fn poll_and_special_mask() {
        let mut pic = linux_pic();
        pic.write(MASTER_DATA, 0x00);
        pic.set_irq(4, true);
        pic.write(MASTER_COMMAND, 0x0c);
        assert_eq!(pic.read(MASTER_COMMAND), 0x84);
        assert_eq!(in_service(&mut pic, MASTER_COMMAND), 0x10);
        pic.write(MASTER_COMMAND, 0x0c);
        assert_eq!(pic.read(MASTER_DATA), 0, "nothing left");
        // Special mask mode: masking IRQ4 in service lets IRQ6 through.
        pic.set_irq(6, true);
        assert!(!pic.output());
        pic.write(MASTER_COMMAND, 0x68);
        pic.write(MASTER_DATA, 0x10);
        assert_eq!(pic.acknowledge(), 0x36);
        pic.write(MASTER_COMMAND, 0x48);
        pic.write(MASTER_DATA, 0x00);
    }

    #[test]
    fn initialisation_resets_edges_and_masks() {
        let mut pic = linux_pic();
        pic.set_irq(1, true);
        for (port, value) in LINUX_INIT.iter().take(5) {
            pic.write(*port, *value);
        }
        assert_eq!(pic.read(MASTER_COMMAND), 0, "the latched edge is gone");
        pic.write(MASTER_DATA, 0x00);
        assert!(!pic.output(), "a line already high must rise again");
        pic.set_irq(1, false);
        pic.set_irq(1, true);
        assert_eq!(pic.acknowledge(), 0x31);
        // A single chip without ICW3 or ICW4.
        let mut single = Pic::new();
        single.write(MASTER_COMMAND, 0x12);
        single.write(MASTER_DATA, 0x40);
        single.write(MASTER_DATA, 0xfb);
        assert_eq!(single.read(MASTER_DATA), 0xfb, "OCW1 after ICW2");
        single.set_irq(2, true);
        single.write(MASTER_DATA, 0x00);
        assert_eq!(single.acknowledge(), 0x42, "IR2 is a plain input");
        assert!(!Pic::owns_port(0x22) && Pic::owns_port(0x4d1));
        assert_eq!(single.read(0x22), 0xff);
    }
}
