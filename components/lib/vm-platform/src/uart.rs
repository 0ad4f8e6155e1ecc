//! A 16550 UART as guests program it for output: the transmit register
//! collects characters into lines, the line-status register always says
//! "transmitter empty", the divisor latch, line control and scratch
//! registers keep what is written, and nothing ever interrupts.

use guest_api::LOG_MAX;

/// The longest line kept; longer output is split.
pub const LINE_MAX: usize = LOG_MAX as usize;

/// The UART's registers and the line being assembled.
pub struct Uart {
    line: [u8; LINE_MAX],
    length: usize,
    line_control: u8,
    divisor: u16,
    interrupt_enable: u8,
    modem_control: u8,
    scratch: u8,
}

impl Default for Uart {
    fn default() -> Self {
        Self::new()
    }
}

const DLAB: u8 = 0x80;

impl Uart {
    pub const fn new() -> Self {
        Self {
            line: [0; LINE_MAX],
            length: 0,
            line_control: 0x03,
            divisor: 1,
            interrupt_enable: 0,
            modem_control: 0,
            scratch: 0,
        }
    }

    /// A write of `value` to register `offset` (0..8). Calls `emit` with
    /// each completed line (without its newline).
    pub fn write(&mut self, offset: u16, value: u8, mut emit: impl FnMut(&[u8])) {
        let dlab = self.line_control & DLAB != 0;
        match offset {
            0 if dlab => self.divisor = (self.divisor & 0xff00) | u16::from(value),
            0 => match value {
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
            },
            1 if dlab => self.divisor = (self.divisor & 0xff) | u16::from(value) << 8,
            1 => self.interrupt_enable = value & 0x0f,
            3 => self.line_control = value,
            4 => self.modem_control = value & 0x1f,
            7 => self.scratch = value,
            _ => {}
        }
    }

    /// A read of register `offset`.
    pub fn read(&self, offset: u16) -> u8 {
        let dlab = self.line_control & DLAB != 0;
        match offset {
            0 if dlab => self.divisor as u8,
            0 => 0,
            1 if dlab => (self.divisor >> 8) as u8,
            1 => self.interrupt_enable,
            2 => 0x01, // no interrupt pending
            3 => self.line_control,
            4 => self.modem_control,
            5 => 0x60, // transmitter holding register and shifter empty
            6 => 0xb0, // DCD, DSR, CTS
            7 => self.scratch,
            _ => 0xff,
        }
    }

    /// Output not yet ended by a newline, emitted (e.g. when the VM stops).
    pub fn flush(&mut self, mut emit: impl FnMut(&[u8])) {
        if self.length > 0 {
            emit(&self.line[..self.length]);
            self.length = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(uart: &mut Uart, text: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        for &byte in text {
            uart.write(0, byte, |line| lines.push(line.to_vec()));
        }
        lines
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
}
