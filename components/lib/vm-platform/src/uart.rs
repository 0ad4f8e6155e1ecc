//! A 16550A UART (COM1) as Linux's 8250 driver probes and drives it.
//!
//! - **Transmit** is instant: each byte written to THR is added to a line,
//!   and completed lines go to the caller's `emit` (the system log), so
//!   LSR always shows THRE and TEMT. In loopback mode (MCR bit 4) the
//!   byte goes to the receive FIFO instead, as on the chip.
//! - **Receive**: the caller feeds host input with [`Uart::receive`] into
//!   a 16-byte FIFO (one byte with FIFOs off); a full FIFO drops the byte
//!   and sets the overrun error. Input is ignored in loopback mode.
//! - **Interrupts** in the 16550's priority order: line status (overrun),
//!   received data (at the FCR trigger level; below it the character
//!   timeout is reported at once, as there is no character clock), THR
//!   empty (raised by each transmitted byte and by enabling it in IER while
//!   THR is empty; cleared by reading IIR while it is the one shown, or by
//!   writing THR), modem status (delta bits). IIR bits 7-6 show the FIFOs.
//! - [`Uart::irq_line`] is the level for IOAPIC pin 4 / PIC IRQ 4: an
//!   interrupt pending and MCR OUT2 set, as PC boards gate it; in loopback
//!   the OUT2 pin is inactive, so the line is low.
//! - MSR shows CTS, DSR and DCD (a connected terminal), or in loopback
//!   RTS, DTR, OUT1 and OUT2 looped back, with the delta bits.
//! - The divisor latch, LCR, MCR and scratch keep what is written; there
//!   are no parity, framing or break errors.

use guest_api::LOG_MAX;

/// The longest line kept; longer output is split.
pub const LINE_MAX: usize = LOG_MAX as usize;
/// The receive FIFO's depth.
pub const FIFO_SIZE: usize = 16;

const INTERRUPT_DATA: u8 = 0x01;
const INTERRUPT_THR_EMPTY: u8 = 0x02;
const INTERRUPT_LINE_STATUS: u8 = 0x04;
const INTERRUPT_MODEM_STATUS: u8 = 0x08;

const IIR_NONE: u8 = 0x01;
const IIR_LINE_STATUS: u8 = 0x06;
const IIR_DATA: u8 = 0x04;
const IIR_TIMEOUT: u8 = 0x0c;
const IIR_THR_EMPTY: u8 = 0x02;
const IIR_MODEM_STATUS: u8 = 0x00;
const IIR_FIFOS: u8 = 0xc0;

const FCR_ENABLE: u8 = 0x01;
const FCR_CLEAR_RECEIVE: u8 = 0x02;
const FCR_TRIGGER: u8 = 0xc0;

const LCR_DLAB: u8 = 0x80;

const MCR_DTR: u8 = 0x01;
const MCR_RTS: u8 = 0x02;
const MCR_OUT1: u8 = 0x04;
const MCR_OUT2: u8 = 0x08;
const MCR_LOOP: u8 = 0x10;

const LSR_DATA_READY: u8 = 0x01;
const LSR_OVERRUN: u8 = 0x02;
const LSR_THR_EMPTY: u8 = 0x20;
const LSR_TRANSMITTER_EMPTY: u8 = 0x40;

const MSR_DELTA_CTS: u8 = 0x01;
const MSR_DELTA_DSR: u8 = 0x02;
const MSR_TRAILING_RI: u8 = 0x04;
const MSR_DELTA_DCD: u8 = 0x08;
const MSR_CTS: u8 = 0x10;
const MSR_DSR: u8 = 0x20;
const MSR_RI: u8 = 0x40;
const MSR_DCD: u8 = 0x80;

/// The UART's registers, receive FIFO and the line being assembled.
pub struct Uart {
    line: [u8; LINE_MAX],
    length: usize,
    line_control: u8,
    divisor: u16,
    interrupt_enable: u8,
    fifo_control: u8,
    modem_control: u8,
    scratch: u8,
    receive: [u8; FIFO_SIZE],
    receive_first: usize,
    receive_count: usize,
    overrun: bool,
    thr_empty_pending: bool,
    modem_deltas: u8,
}

impl Default for Uart {
    fn default() -> Self {
        Self::new()
    }
}

impl Uart {
    pub const fn new() -> Self {
        Self {
            line: [0; LINE_MAX],
            length: 0,
            line_control: 0x03,
            divisor: 1,
            interrupt_enable: 0,
            fifo_control: 0,
            modem_control: 0,
            scratch: 0,
            receive: [0; FIFO_SIZE],
            receive_first: 0,
            receive_count: 0,
            overrun: false,
            thr_empty_pending: false,
            modem_deltas: 0,
        }
    }

    /// A write of `value` to register `offset` (0..8). Calls `emit` with
    /// each completed line (without its newline). Returns whether the
    /// write may have changed [`Uart::irq_line`] or [`Uart::room`]: `false`
    /// for the writes [`Uart::write_keeps_line`] names (as it said before
    /// the write), so that the caller may skip re-evaluating the line.
    ///
    /// The registers that only keep what is written whatever DLAB says
    /// (LCR, the scratch register) are written inline: a probe's scratch
    /// test, or a benchmark's, costs no call.
    #[inline]
    pub fn write(&mut self, offset: u16, value: u8, emit: impl FnMut(&[u8])) -> bool {
        match offset {
            3 => self.line_control = value,
            7 => self.scratch = value,
            _ => return self.write_register(offset, value, emit),
        }
        false
    }

    /// [`Uart::write`] of the registers it does not write inline (LCR
    /// and the scratch register are its own).
    #[inline(never)]
    fn write_register(&mut self, offset: u16, value: u8, emit: impl FnMut(&[u8])) -> bool {
        // Decided before the write, as `write_keeps_line` is documented.
        let moves = !self.write_keeps_line(offset);
        let dlab = self.line_control & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.divisor = (self.divisor & 0xff00) | u16::from(value),
            0 => self.transmit(value, emit),
            1 if dlab => self.divisor = (self.divisor & 0xff) | u16::from(value) << 8,
            1 => {
                let enabled = (value & !self.interrupt_enable) & INTERRUPT_THR_EMPTY != 0;
                self.interrupt_enable = value & 0x0f;
                // Enabling the THR-empty interrupt while THR is empty
                // raises it (Linux's start-up test relies on this).
                if enabled {
                    self.thr_empty_pending = true;
                } else if value & INTERRUPT_THR_EMPTY == 0 {
                    self.thr_empty_pending = false;
                }
            }
            2 => self.write_fifo_control(value),
            4 => {
                let before = self.modem_lines();
                self.modem_control = value & 0x1f;
                self.note_modem_change(before);
            }
            _ => {}
        }
        moves
    }

    /// Whether a write of register `offset`, as [`Uart::write`] would take
    /// it now, leaves [`Uart::irq_line`] and [`Uart::room`] as they are:
    /// the scratch register, LCR, and the divisor latch while DLAB is set
    /// touch nothing the interrupt or the receive FIFO depend on. The
    /// caller may then skip re-evaluating the line.
    #[inline]
    pub fn write_keeps_line(&self, offset: u16) -> bool {
        match offset {
            3 | 7 => true,
            0 | 1 => self.line_control & LCR_DLAB != 0,
            _ => false,
        }
    }

    /// A read of register `offset`; reading RBR, IIR, LSR and MSR has the
    /// side effects the chip's have.
    pub fn read(&mut self, offset: u16) -> u8 {
        let dlab = self.line_control & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.divisor as u8,
            0 => self.pop_received(),
            1 if dlab => (self.divisor >> 8) as u8,
            1 => self.interrupt_enable,
            2 => {
                let id = self.pending_interrupt();
                if id == Some(IIR_THR_EMPTY) {
                    self.thr_empty_pending = false;
                }
                let fifos = if self.fifo_enabled() { IIR_FIFOS } else { 0 };
                fifos | id.unwrap_or(IIR_NONE)
            }
            3 => self.line_control,
            4 => self.modem_control,
            5 => {
                let mut status = LSR_THR_EMPTY | LSR_TRANSMITTER_EMPTY;
                if self.receive_count > 0 {
                    status |= LSR_DATA_READY;
                }
                if self.overrun {
                    status |= LSR_OVERRUN;
                    self.overrun = false;
                }
                status
            }
            6 => {
                let status = self.modem_lines() | self.modem_deltas;
                self.modem_deltas = 0;
                status
            }
            7 => self.scratch,
            _ => 0xff,
        }
    }

    /// Host input for the guest: `false` if it was dropped (FIFO full, an
    /// overrun, or loopback mode).
    pub fn receive(&mut self, byte: u8) -> bool {
        if self.modem_control & MCR_LOOP != 0 {
            return false;
        }
        self.push_received(byte)
    }

    /// How many bytes [`Uart::receive`] takes now without an overrun (0 in
    /// loopback mode, where host input is ignored): the caller keeps the
    /// rest until the guest reads.
    pub fn room(&self) -> usize {
        if self.modem_control & MCR_LOOP != 0 {
            return 0;
        }
        self.capacity().saturating_sub(self.receive_count)
    }

    /// The interrupt output as the board wires it: pending and OUT2 set.
    pub fn irq_line(&self) -> bool {
        self.modem_control & (MCR_OUT2 | MCR_LOOP) == MCR_OUT2 && self.pending_interrupt().is_some()
    }

    /// Output not yet ended by a newline, emitted (e.g. when the VM stops).
    pub fn flush(&mut self, mut emit: impl FnMut(&[u8])) {
        if self.length > 0 {
            emit(&self.line[..self.length]);
            self.length = 0;
        }
    }

    fn transmit(&mut self, value: u8, mut emit: impl FnMut(&[u8])) {
        // The byte leaves THR at once, which empties it again.
        self.thr_empty_pending = true;
        if self.modem_control & MCR_LOOP != 0 {
            self.push_received(value);
            return;
        }
        match value {
            b'\n' => {
                emit(&self.line[..self.length]);
                self.length = 0;
            }
            b'\r' => {}
            _ => {
                if self.length == LINE_MAX {
                    emit(&self.line[..self.length]);
                    self.length = 0;
                }
                self.line[self.length] = value;
                self.length += 1;
            }
        }
    }

    fn write_fifo_control(&mut self, value: u8) {
        if (value ^ self.fifo_control) & FCR_ENABLE != 0 || value & FCR_CLEAR_RECEIVE != 0 {
            self.receive_count = 0;
        }
        self.fifo_control = if value & FCR_ENABLE != 0 {
            value & (FCR_ENABLE | FCR_TRIGGER)
        } else {
            0
        };
    }

    fn fifo_enabled(&self) -> bool {
        self.fifo_control & FCR_ENABLE != 0
    }

    fn capacity(&self) -> usize {
        if self.fifo_enabled() { FIFO_SIZE } else { 1 }
    }

    fn trigger_level(&self) -> usize {
        match self.fifo_control >> 6 {
            0 => 1,
            1 => 4,
            2 => 8,
            _ => 14,
        }
    }

    fn push_received(&mut self, byte: u8) -> bool {
        if self.receive_count >= self.capacity() {
            self.overrun = true;
            return false;
        }
        self.receive[(self.receive_first + self.receive_count) % FIFO_SIZE] = byte;
        self.receive_count += 1;
        true
    }

    fn pop_received(&mut self) -> u8 {
        if self.receive_count == 0 {
            return 0;
        }
        let byte = self.receive[self.receive_first];
        self.receive_first = (self.receive_first + 1) % FIFO_SIZE;
        self.receive_count -= 1;
        byte
    }

    /// The highest-priority enabled interrupt's IIR id.
    fn pending_interrupt(&self) -> Option<u8> {
        let enabled = |bit: u8| self.interrupt_enable & bit != 0;
        if enabled(INTERRUPT_LINE_STATUS) && self.overrun {
            Some(IIR_LINE_STATUS)
        } else if enabled(INTERRUPT_DATA) && self.receive_count > 0 {
            if self.fifo_enabled() && self.receive_count < self.trigger_level() {
                Some(IIR_TIMEOUT)
            } else {
                Some(IIR_DATA)
            }
        } else if enabled(INTERRUPT_THR_EMPTY) && self.thr_empty_pending {
            Some(IIR_THR_EMPTY)
        } else if enabled(INTERRUPT_MODEM_STATUS) && self.modem_deltas != 0 {
            Some(IIR_MODEM_STATUS)
        } else {
            None
        }
    }

    /// MSR's upper half: the modem inputs.
    fn modem_lines(&self) -> u8 {
        let control = self.modem_control;
        if control & MCR_LOOP == 0 {
            return MSR_CTS | MSR_DSR | MSR_DCD;
        }
        let mut lines = 0;
        for (output, input) in [
            (MCR_RTS, MSR_CTS),
            (MCR_DTR, MSR_DSR),
            (MCR_OUT1, MSR_RI),
            (MCR_OUT2, MSR_DCD),
        ] {
            if control & output != 0 {
                lines |= input;
            }
        }
        lines
    }

    fn note_modem_change(&mut self, before: u8) {
        let after = self.modem_lines();
        let changed = before ^ after;
        for (line, delta) in [
            (MSR_CTS, MSR_DELTA_CTS),
            (MSR_DSR, MSR_DELTA_DSR),
            (MSR_DCD, MSR_DELTA_DCD),
        ] {
            if changed & line != 0 {
                self.modem_deltas |= delta;
            }
        }
        if before & MSR_RI != 0 && after & MSR_RI == 0 {
            self.modem_deltas |= MSR_TRAILING_RI;
        }
    }
}

/// Host input on its way to a [`Uart`]: bytes taken from the host (the
/// system console) wait here until the guest's FIFO has room, so a burst
/// longer than the FIFO is delivered as the guest reads rather than
/// dropped as an overrun.
pub struct HostInput {
    bytes: [u8; HOST_INPUT_SIZE],
    first: usize,
    count: usize,
    /// The last refill filled the buffer: the host may hold more.
    more: bool,
}

/// Bytes [`HostInput`] holds.
pub const HOST_INPUT_SIZE: usize = 256;

impl HostInput {
    pub const fn new() -> Self {
        Self {
            bytes: [0; HOST_INPUT_SIZE],
            first: 0,
            count: 0,
            more: false,
        }
    }

    /// Refills from the host: `take` copies up to the slice's length into
    /// it and returns how many it gave. Called when the host says input
    /// arrived, and by [`HostInput::feed`] when the buffer ran dry after a
    /// full refill.
    pub fn refill(&mut self, mut take: impl FnMut(&mut [u8]) -> usize) {
        if self.count == 0 {
            self.first = 0;
        }
        let end = self.first + self.count;
        let room = HOST_INPUT_SIZE - end;
        if room == 0 {
            self.more = true;
            return;
        }
        let taken = take(&mut self.bytes[end..]).min(room);
        self.count += taken;
        self.more = taken == room;
    }

    /// Moves what the UART has room for into its receive FIFO, refilling
    /// from the host first if the buffer is empty and the host may hold
    /// more; returns whether any byte moved.
    pub fn feed(&mut self, uart: &mut Uart, take: impl FnMut(&mut [u8]) -> usize) -> bool {
        if self.count == 0 && self.more {
            self.refill(take);
        }
        let moving = uart.room().min(self.count);
        for _ in 0..moving {
            uart.receive(self.bytes[self.first]);
            self.first += 1;
            self.count -= 1;
        }
        moving > 0
    }

    /// Bytes waiting for the guest.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl Default for HostInput {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IER: u16 = 1;
    const IIR: u16 = 2;
    const FCR: u16 = 2;
    const MCR: u16 = 4;
    const LSR: u16 = 5;
    const MSR: u16 = 6;

    fn send(uart: &mut Uart, text: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        for &byte in text {
            uart.write(0, byte, |line| lines.push(line.to_vec()));
        }
        lines
    }

    fn set(uart: &mut Uart, offset: u16, value: u8) {
        uart.write(offset, value, |_| panic!("not output"));
    }

    #[test]
    fn collects_lines() {
        let mut uart = Uart::new();
        let lines = send(&mut uart, b"hello\r\nworld\npartial");
        assert_eq!(lines, vec![b"hello".to_vec(), b"world".to_vec()]);
        let mut rest = Vec::new();
        uart.flush(|line| rest.push(line.to_vec()));
        assert_eq!(rest, vec![b"partial".to_vec()]);
    }

    #[test]
    fn room_says_what_receive_takes_without_an_overrun() {
        let mut uart = Uart::new();
        assert_eq!(uart.room(), 1, "FIFOs off: one byte");
        set(&mut uart, FCR, 0x01);
        assert_eq!(uart.room(), FIFO_SIZE);
        for byte in 0..FIFO_SIZE as u8 {
            assert!(uart.receive(byte));
        }
        assert_eq!(uart.room(), 0);
        assert_eq!(uart.read(0), 0);
        assert_eq!(uart.room(), 1, "a read frees a byte");
        assert_eq!(uart.read(LSR) & LSR_OVERRUN, 0, "no byte was dropped");
        set(&mut uart, MCR, MCR_LOOP);
        assert_eq!(uart.room(), 0, "loopback ignores host input");
    }

    #[test]
    fn host_input_waits_for_room_and_refills_after_a_full_take() {
        let mut uart = Uart::new();
        set(&mut uart, FCR, 0x01);
        // The host holds 300 bytes: 256 come at once, the rest later.
        let host: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut given = 0;
        let mut take = |into: &mut [u8]| {
            let count = into.len().min(host.len() - given);
            into[..count].copy_from_slice(&host[given..given + count]);
            given += count;
            count
        };
        let mut input = HostInput::new();
        input.refill(&mut take);
        assert_eq!(input.len(), HOST_INPUT_SIZE);
        let mut seen = Vec::new();
        while input.feed(&mut uart, &mut take) {
            while uart.read(LSR) & 1 != 0 {
                seen.push(uart.read(0));
            }
        }
        assert_eq!(seen, host, "every byte, in order, none dropped");
        assert!(input.is_empty());
        assert_eq!(uart.read(LSR) & LSR_OVERRUN, 0);
    }

    #[test]
    fn splits_long_lines() {
        let mut uart = Uart::new();
        let long = vec![b'x'; LINE_MAX + 5];
        let lines = send(&mut uart, &long);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), LINE_MAX);
    }

    #[test]
    fn registers_behave_like_a_16550() {
        let mut uart = Uart::new();
        assert_eq!(uart.read(5) & 0x20, 0x20, "always ready to send");
        uart.write(7, 0x5a, |_| {});
        assert_eq!(uart.read(7), 0x5a);
        uart.write(3, 0x83, |_| {});
        uart.write(0, 0x01, |_| panic!("divisor writes are not output"));
        uart.write(1, 0x00, |_| {});
        assert_eq!(uart.read(0), 0x01);
        uart.write(3, 0x03, |_| {});
        assert_eq!(uart.read(2), 0x01);
    }

    #[test]
    fn interrupts_are_identified_in_priority_order() {
        let mut uart = Uart::new();
        set(&mut uart, FCR, 0x01); // FIFOs on, trigger level 1
        set(&mut uart, MCR, MCR_OUT2);
        for _ in 0..FIFO_SIZE + 1 {
            uart.receive(b'a');
        }
        set(&mut uart, IER, 0x0f); // also raises THR empty
        set(&mut uart, MCR, MCR_OUT2 | MCR_RTS); // no delta outside loopback
        assert!(uart.irq_line());
        assert_eq!(uart.read(IIR), 0xc0 | IIR_LINE_STATUS);
        assert_eq!(uart.read(LSR), 0x61 | LSR_OVERRUN);
        assert_eq!(uart.read(LSR), 0x61, "reading LSR clears the overrun");
        assert_eq!(uart.read(IIR), 0xc0 | IIR_DATA);
        for _ in 0..FIFO_SIZE {
            assert_eq!(uart.read(0), b'a');
        }
        assert_eq!(uart.read(IIR), 0xc0 | IIR_THR_EMPTY);
        assert_eq!(uart.read(IIR), 0xc1, "reading IIR cleared THR empty");
        assert!(!uart.irq_line());
        // A modem-status change: loopback toggles the looped-back lines.
        set(&mut uart, MCR, MCR_LOOP);
        assert_eq!(uart.read(IIR), 0xc0 | IIR_MODEM_STATUS);
        assert_eq!(
            uart.read(MSR),
            MSR_DELTA_CTS | MSR_DELTA_DSR | MSR_DELTA_DCD
        );
        assert_eq!(uart.read(IIR), 0xc1);
    }

    #[test]
    fn out2_gates_the_irq_line() {
        let mut uart = Uart::new();
        set(&mut uart, IER, INTERRUPT_THR_EMPTY);
        assert_eq!(uart.read(IIR) & 1, 0, "pending");
        set(&mut uart, IER, 0);
        set(&mut uart, IER, INTERRUPT_THR_EMPTY);
        assert!(!uart.irq_line(), "OUT2 clear");
        set(&mut uart, MCR, MCR_OUT2 | MCR_DTR | MCR_RTS);
        assert!(uart.irq_line());
        set(&mut uart, MCR, MCR_OUT2 | MCR_LOOP);
        assert!(!uart.irq_line(), "loopback disconnects OUT2");
        set(&mut uart, MCR, MCR_OUT2);
        assert!(uart.irq_line());
        set(&mut uart, IER, 0);
        assert!(!uart.irq_line());
    }

    #[test]
    fn thr_empty_follows_linux_startup_test() {
        // serial8250_do_startup: IER=THRI, read IIR, IER=0, IER=THRI, read IIR.
        let mut uart = Uart::new();
        set(&mut uart, IER, INTERRUPT_THR_EMPTY);
        assert_eq!(uart.read(IIR), IIR_THR_EMPTY);
        set(&mut uart, IER, 0);
        set(&mut uart, IER, INTERRUPT_THR_EMPTY);
        assert_eq!(uart.read(IIR), IIR_THR_EMPTY, "re-raised: no UART_BUG_THRE");
        assert_eq!(uart.read(IIR), IIR_NONE);
        send(&mut uart, b"x");
        assert_eq!(uart.read(IIR), IIR_THR_EMPTY, "each byte sent raises it");
    }

    #[test]
    fn loopback_echoes_and_mirrors_modem_lines() {
        let mut uart = Uart::new();
        // Linux's autoconfig: MCR = LOOP | OUT2 | RTS must read MSR 0x90.
        set(&mut uart, MCR, MCR_LOOP | 0x0a);
        assert_eq!(uart.read(MSR) & 0xf0, 0x90);
        set(&mut uart, MCR, MCR_LOOP | MCR_OUT1);
        set(&mut uart, MCR, MCR_LOOP);
        assert_eq!(
            uart.read(MSR),
            MSR_TRAILING_RI | MSR_DELTA_CTS | MSR_DELTA_DCD
        );
        assert!(!uart.receive(b'h'), "input is disconnected in loopback");
        set(&mut uart, 0, b'z');
        assert_eq!(uart.read(LSR) & LSR_DATA_READY, LSR_DATA_READY);
        assert_eq!(uart.read(0), b'z');
        assert_eq!(uart.read(LSR) & LSR_DATA_READY, 0);
        set(&mut uart, MCR, 0);
        assert_eq!(uart.read(MSR) & 0xf0, 0xb0);
    }

    #[test]
    fn fifo_trigger_level_and_non_fifo_overrun() {
        let mut uart = Uart::new();
        set(&mut uart, FCR, 0xc1); // trigger at 14
        set(&mut uart, IER, INTERRUPT_DATA);
        assert_eq!(uart.read(IIR), 0xc1);
        for byte in 0..13 {
            assert!(uart.receive(byte));
        }
        assert_eq!(uart.read(IIR), 0xc0 | IIR_TIMEOUT);
        uart.receive(13);
        assert_eq!(uart.read(IIR), 0xc0 | IIR_DATA);
        assert_eq!(uart.read(0), 0, "first in, first out");
        set(&mut uart, FCR, 0xc1 | FCR_CLEAR_RECEIVE);
        assert_eq!(uart.read(LSR) & LSR_DATA_READY, 0);

        set(&mut uart, FCR, 0); // FIFOs off: one byte of room
        assert_eq!(uart.read(IIR), IIR_NONE);
        assert!(uart.receive(b'1'));
        assert!(!uart.receive(b'2'));
        assert_eq!(uart.read(IIR), IIR_DATA);
        assert_eq!(uart.read(LSR), 0x61 | LSR_OVERRUN);
        assert_eq!(uart.read(0), b'1');
        // 16750 detection: FCR bit 5 must not show in IIR.
        set(&mut uart, FCR, 0x21);
        assert_eq!(uart.read(IIR) & 0x20, 0);
    }

    proptest! {
        #[test]
        fn hostile_register_sequences_never_panic(
            accesses in proptest::collection::vec(
                (0u8..3, 0u16..10, any::<u8>()), 0..400),
        ) {
            let mut uart = Uart::new();
            for (kind, offset, value) in accesses {
                match kind {
                    0 => {
                        uart.write(offset, value, |line| assert!(line.len() <= LINE_MAX));
                    }
                    1 => { uart.read(offset); }
                    _ => { uart.receive(value); }
                }
                prop_assert!(!uart.irq_line() || uart.read(4) & MCR_OUT2 != 0);
            }
        }

        /// A write [`Uart::write_keeps_line`] names changes neither the
        /// interrupt line nor the room in the receive FIFO, from any state.
        #[test]
        fn quiet_writes_keep_the_line(
            accesses in proptest::collection::vec(
                (0u8..3, 0u16..10, any::<u8>()), 0..200),
            offset in 0u16..10,
            value in any::<u8>(),
        ) {
            let mut uart = Uart::new();
            for (kind, offset, value) in accesses {
                match kind {
                    0 => {
                        uart.write(offset, value, |_| {});
                    }
                    1 => { uart.read(offset); }
                    _ => { uart.receive(value); }
                }
            }
            let keeps = uart.write_keeps_line(offset);
            let (line, room) = (uart.irq_line(), uart.room());
            let moves = uart.write(offset, value, |_| {});
            // What the write says is what `write_keeps_line` said.
            prop_assert_eq!(moves, !keeps);
            if keeps {
                prop_assert_eq!(uart.irq_line(), line);
                prop_assert_eq!(uart.room(), room);
            }
        }
    }
}
