//! The 16550 UART on COM1 (I/O port 0x3f8): the system console.
//!
//! Initialised to 115200 8N1 with FIFOs; every byte waits for the
//! transmit-holding register to empty, which Bochs needs to keep every
//! character. Only the console module writes here. When the system
//! delivers console input to a component, the receive interrupt is turned
//! on ([`enable_receive_interrupt`]) and the trap handler drains what
//! arrived with [`received`].

use super::cpu::{in8, out8};

const COM1: u16 = 0x3f8;
const DATA: u16 = COM1;
const INTERRUPT_ENABLE: u16 = COM1 + 1;
const FIFO_CONTROL: u16 = COM1 + 2;
const LINE_CONTROL: u16 = COM1 + 3;
const MODEM_CONTROL: u16 = COM1 + 4;
const LINE_STATUS: u16 = COM1 + 5;
const TRANSMIT_EMPTY: u8 = 1 << 5;
const DATA_READY: u8 = 1 << 0;
/// IER: received data available.
const RECEIVE_INTERRUPT: u8 = 1 << 0;
/// MCR: OUT2, which gates the UART's interrupt line on a PC.
const OUT2: u8 = 1 << 3;

/// Programs the UART: no interrupts, 115200 baud, 8 data bits, no parity,
/// one stop bit, FIFOs on.
pub fn init() {
    out8(INTERRUPT_ENABLE, 0);
    out8(LINE_CONTROL, 0x80); // divisor latch
    out8(DATA, 1); // divisor 1 = 115200 baud
    out8(INTERRUPT_ENABLE, 0);
    out8(LINE_CONTROL, 0x03); // 8N1, latch off
    out8(FIFO_CONTROL, 0xc7);
    out8(MODEM_CONTROL, 0x03);
}

/// Raises the UART's interrupt line (COM1's IRQ 4) whenever received data
/// waits; only the receive interrupt, so writes stay polled.
pub fn enable_receive_interrupt() {
    out8(MODEM_CONTROL, 0x03 | OUT2);
    out8(INTERRUPT_ENABLE, RECEIVE_INTERRUPT);
}

/// The next received byte, if one waits (reading it lowers the
/// interrupt once the FIFO is empty).
pub fn received() -> Option<u8> {
    (in8(LINE_STATUS) & DATA_READY != 0).then(|| in8(DATA))
}

/// Waits (bounded) until the UART has sent every byte, so that nothing is
/// lost when the machine is switched off next.
pub fn drain() {
    const TRANSMITTER_EMPTY: u8 = 1 << 6;
    for _ in 0..1_000_000 {
        if in8(LINE_STATUS) & TRANSMITTER_EMPTY != 0 {
            break;
        }
    }
}

/// Sends one byte, waiting until the UART can take it (bounded, so a
/// missing UART cannot hang the core).
pub fn write_byte(byte: u8) {
    for _ in 0..100_000 {
        if in8(LINE_STATUS) & TRANSMIT_EMPTY != 0 {
            break;
        }
    }
    out8(DATA, byte);
}
