//! PCI configuration space through the legacy configuration ports
//! (0xcf8 address, 0xcfc data), which the core keeps for itself: the
//! hardware side of `microvisor::pci`. The core runs with interrupts off,
//! so an address write and its data access are never interleaved.

use microvisor::pci::{Address, ConfigSpace};

use super::cpu;

const ADDRESS_PORT: u16 = 0xcf8;
const DATA_PORT: u16 = 0xcfc;

/// The configuration ports.
pub struct Ports;

impl Ports {
    fn select(address: Address, offset: u8) {
        cpu::out32(
            ADDRESS_PORT,
            1 << 31 | address << 8 | u32::from(offset & 0xfc),
        );
    }
}

impl ConfigSpace for Ports {
    fn read32(&mut self, address: Address, offset: u8) -> u32 {
        Self::select(address, offset);
        cpu::in32(DATA_PORT)
    }

    fn write32(&mut self, address: Address, offset: u8, value: u32) {
        Self::select(address, offset);
        cpu::out32(DATA_PORT, value);
    }
}

/// Reads `width` bytes (1, 2 or 4, aligned) at `offset` of `address`.
pub fn read(address: Address, offset: u8, width: u8) -> u32 {
    Ports::select(address, offset);
    let port = DATA_PORT + u16::from(offset & 3);
    match width {
        1 => u32::from(cpu::in8(port)),
        2 => u32::from(cpu::in16(port)),
        _ => cpu::in32(DATA_PORT),
    }
}

/// Writes `width` bytes (1, 2 or 4, aligned) at `offset` of `address`:
/// only those bytes (the data port's byte lanes), so the status register's
/// write-one-to-clear bits beside the command register are left alone.
pub fn write(address: Address, offset: u8, width: u8, value: u32) {
    Ports::select(address, offset);
    let port = DATA_PORT + u16::from(offset & 3);
    match width {
        1 => cpu::out8(port, value as u8),
        2 => cpu::out16(port, value as u16),
        _ => cpu::out32(DATA_PORT, value),
    }
}
