//! A PCI host bridge on configuration mechanism #1 (PCI Local Bus 3.0,
//! 3.2.2.3.2): a dword write to port 0xCF8 latches an address (enable bit
//! 31, bus, device, function, register), and ports 0xCFC-0xCFF read or
//! write that register's bytes, words or dword at the port's offset.
//!
//! Bus 0 holds the host bridge at 00.0 (Intel's Q35 MCH ids, class 0x0600,
//! as QEMU's `q35` has it, so Linux's conf1 sanity check accepts the bus)
//! and up to [`FUNCTIONS`] more functions added with [`PciHost::add`]: this
//! is the slot structure for future virtio PCI functions. Every other
//! device, function and bus reads all-ones and ignores writes, as an empty
//! slot does; so does an access with the enable bit clear, an access that
//! crosses the dword (a word at 0xCFF), and any access to 0xCF8-0xCFB that
//! is not a dword at 0xCF8 (the PIIX reset register at 0xCF9 is not
//! modelled: [`crate::power`] resets).
//!
//! A function's [`ConfigSpace`] is 256 bytes with a per-bit write mask:
//! guest writes change only the writable bits (command, cache line size,
//! latency timer and interrupt line in a fresh header; a device model marks
//! its BARs' address bits writable, which gives the usual size probing for
//! free) and the rest are read-only. [`PciHost::write`] reports which
//! register of which function changed, so the model owning it can follow
//! a BAR or command change. Status bits are read-only: nothing sets them.
//! Without a `PNP0A03` root bridge in the DSDT, Linux under ACPI answers
//! the conf1 probe but does not scan the bus; the DSDT gets one together
//! with the first PCI device.

pub const ADDRESS_PORT: u16 = 0xcf8;
pub const DATA_PORT: u16 = 0xcfc;

pub const HOST_BRIDGE_VENDOR: u16 = 0x8086;
pub const HOST_BRIDGE_DEVICE: u16 = 0x29c0;
/// Base class 06 (bridge), subclass 00 (host bridge), programming
/// interface 00.
pub const CLASS_HOST_BRIDGE: u32 = 0x06_00_00;

/// Functions besides the host bridge.
pub const FUNCTIONS: usize = 7;

const ENABLE: u32 = 1 << 31;
/// The address bits that are kept: enable, bus, device, function, dword
/// register (bits 30-24 and 1-0 are reserved and read as zero).
const ADDRESS_MASK: u32 = 0x80ff_fffc;

const VENDOR_ID: u8 = 0x00;
const DEVICE_ID: u8 = 0x02;
const COMMAND: u8 = 0x04;
const REVISION: u8 = 0x08;
const CACHE_LINE_SIZE: u8 = 0x0c;
const LATENCY_TIMER: u8 = 0x0d;
const HEADER_TYPE: u8 = 0x0e;
const INTERRUPT_LINE: u8 = 0x3c;
const MULTI_FUNCTION: u8 = 0x80;
/// Command bits a guest may set: I/O, memory, bus master, SERR#, INTx
/// disable.
const COMMAND_WRITABLE: u16 = 0x0507;

/// A function on bus 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// 0..32.
    pub device: u8,
    /// 0..8.
    pub function: u8,
}

impl Location {
    pub const HOST_BRIDGE: Location = Location {
        device: 0,
        function: 0,
    };

    fn valid(self) -> bool {
        self.device < 32 && self.function < 8
    }
}

/// A function's 256-byte configuration space and which bits the guest may
/// write.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; 256],
    writable: [u8; 256],
}

impl ConfigSpace {
    /// A type-0 header with the given ids, `class` (base class, subclass
    /// and programming interface, high to low) and revision.
    pub fn new(vendor: u16, device: u16, class: u32, revision: u8) -> Self {
        let mut config = Self {
            bytes: [0; 256],
            writable: [0; 256],
        };
        config.set(VENDOR_ID, &vendor.to_le_bytes());
        config.set(DEVICE_ID, &device.to_le_bytes());
        let class = class.to_le_bytes();
        config.set(REVISION, &[revision, class[0], class[1], class[2]]);
        config.set_writable(COMMAND, &COMMAND_WRITABLE.to_le_bytes());
        config.set_writable(CACHE_LINE_SIZE, &[0xff]);
        config.set_writable(LATENCY_TIMER, &[0xff]);
        config.set_writable(INTERRUPT_LINE, &[0xff]);
        config
    }

    /// The host bridge at 00.0.
    pub fn host_bridge() -> Self {
        Self::new(HOST_BRIDGE_VENDOR, HOST_BRIDGE_DEVICE, CLASS_HOST_BRIDGE, 0)
    }

    /// Sets bytes from `offset` as the device model (not the guest) sees
    /// fit; bytes past 255 are dropped.
    pub fn set(&mut self, offset: u8, bytes: &[u8]) {
        for (slot, &byte) in self.bytes[usize::from(offset)..].iter_mut().zip(bytes) {
            *slot = byte;
        }
    }

    /// Makes the bits set in `mask` guest-writable from `offset` on.
    pub fn set_writable(&mut self, offset: u8, mask: &[u8]) {
        for (slot, &bits) in self.writable[usize::from(offset)..].iter_mut().zip(mask) {
            *slot = bits;
        }
    }

    /// `size` bytes from `offset`, little-endian (the caller keeps the
    /// access inside the space).
    pub fn read(&self, offset: u8, size: u8) -> u32 {
        (0..size).fold(0, |value, i| {
            let byte = self
                .bytes
                .get(usize::from(offset) + usize::from(i))
                .copied()
                .unwrap_or(0xff);
            value | u32::from(byte) << (8 * i)
        })
    }

    /// A guest write of `size` bytes of `value` at `offset`: only the
    /// writable bits change.
    pub fn write(&mut self, offset: u8, size: u8, value: u32) {
        for (i, byte) in value
            .to_le_bytes()
            .into_iter()
            .take(usize::from(size))
            .enumerate()
        {
            let at = usize::from(offset) + i;
            if let (Some(slot), Some(&mask)) = (self.bytes.get_mut(at), self.writable.get(at)) {
                *slot = (*slot & !mask) | (byte & mask);
            }
        }
    }
}

/// A register the guest wrote, for the model that owns the function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigWrite {
    pub location: Location,
    pub offset: u8,
    pub size: u8,
}

/// Why a function could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Device 32 or more, or function 8 or more.
    Invalid,
    /// A function is already there.
    Occupied,
    /// All [`FUNCTIONS`] slots are used.
    Full,
}

/// The host bridge, its address latch and the functions on bus 0.
pub struct PciHost {
    address: u32,
    host_bridge: ConfigSpace,
    functions: [Option<(Location, ConfigSpace)>; FUNCTIONS],
}

impl Default for PciHost {
    fn default() -> Self {
        Self::new()
    }
}

impl PciHost {
    pub fn new() -> Self {
        Self {
            address: 0,
            host_bridge: ConfigSpace::host_bridge(),
            functions: core::array::from_fn(|_| None),
        }
    }

    /// Whether `port` is one of the configuration ports.
    pub fn decodes(port: u16) -> bool {
        (ADDRESS_PORT..DATA_PORT + 4).contains(&port)
    }

    /// Puts `config` at `location`; a function other than 0 marks its
    /// device's function 0 multi-function, so that guests look for it.
    pub fn add(&mut self, location: Location, config: ConfigSpace) -> Result<(), Error> {
        if !location.valid() {
            return Err(Error::Invalid);
        }
        if self.function(location).is_some() {
            return Err(Error::Occupied);
        }
        let slot = self
            .functions
            .iter_mut()
            .find(|slot| slot.is_none())
            .ok_or(Error::Full)?;
        *slot = Some((location, config));
        for (at, config) in self.functions.iter_mut().flatten() {
            if at.device == location.device && at.function == 0 && location.function != 0 {
                let header = config.read(HEADER_TYPE, 1) as u8;
                config.set(HEADER_TYPE, &[header | MULTI_FUNCTION]);
            }
        }
        if location.device == 0 && location.function != 0 {
            let header = self.host_bridge.read(HEADER_TYPE, 1) as u8;
            self.host_bridge
                .set(HEADER_TYPE, &[header | MULTI_FUNCTION]);
        }
        Ok(())
    }

    /// The function at `location`, if present.
    pub fn function(&self, location: Location) -> Option<&ConfigSpace> {
        if location == Location::HOST_BRIDGE {
            return Some(&self.host_bridge);
        }
        self.functions
            .iter()
            .flatten()
            .find(|(at, _)| *at == location)
            .map(|(_, config)| config)
    }

    /// The function at `location` for its model to change.
    pub fn function_mut(&mut self, location: Location) -> Option<&mut ConfigSpace> {
        if location == Location::HOST_BRIDGE {
            return Some(&mut self.host_bridge);
        }
        self.functions
            .iter_mut()
            .flatten()
            .find(|(at, _)| *at == location)
            .map(|(_, config)| config)
    }

    /// The function and register a data-port access of `size` bytes at
    /// `port` reaches, if any.
    fn target(&self, port: u16, size: u8) -> Option<(Location, u8)> {
        let lane = port.checked_sub(DATA_PORT).filter(|&lane| lane < 4)? as u8;
        if !matches!(size, 1 | 2 | 4) || lane + size > 4 || self.address & ENABLE == 0 {
            return None;
        }
        let bus = (self.address >> 16) as u8;
        let location = Location {
            device: (self.address >> 11) as u8 & 0x1f,
            function: (self.address >> 8) as u8 & 0x07,
        };
        (bus == 0).then_some((location, self.address as u8 + lane))
    }

    /// An IN of `size` bytes from `port`.
    pub fn read(&self, port: u16, size: u8) -> u32 {
        let all_ones = u32::MAX >> (32 - 8 * u32::from(size.clamp(1, 4)));
        if port == ADDRESS_PORT && size == 4 {
            return self.address;
        }
        self.target(port, size)
            .and_then(|(location, offset)| Some(self.function(location)?.read(offset, size)))
            .unwrap_or(all_ones)
    }

    /// An OUT of `size` bytes of `value` to `port`; says which register of
    /// which function the guest wrote, if any.
    pub fn write(&mut self, port: u16, size: u8, value: u32) -> Option<ConfigWrite> {
        if port == ADDRESS_PORT && size == 4 {
            self.address = value & ADDRESS_MASK;
            return None;
        }
        let (location, offset) = self.target(port, size)?;
        self.function_mut(location)?.write(offset, size, value);
        Some(ConfigWrite {
            location,
            offset,
            size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn address(device: u8, function: u8, register: u8) -> u32 {
        ENABLE | u32::from(device) << 11 | u32::from(function) << 8 | u32::from(register)
    }

    fn read(host: &mut PciHost, device: u8, function: u8, register: u8, size: u8) -> u32 {
        host.write(ADDRESS_PORT, 4, address(device, function, register & 0xfc));
        host.read(DATA_PORT + u16::from(register & 3), size)
    }

    #[test]
    fn host_bridge_answers_and_empty_slots_read_all_ones() {
        let mut host = PciHost::new();
        assert_eq!(read(&mut host, 0, 0, 0, 4), 0x29c0_8086);
        assert_eq!(
            read(&mut host, 0, 0, 0x08, 4),
            0x0600_0000,
            "class, revision"
        );
        assert_eq!(read(&mut host, 0, 0, 0x0e, 1), 0, "single-function type 0");
        assert_eq!(read(&mut host, 0, 0, 0x02, 2), 0x29c0);
        assert_eq!(read(&mut host, 0, 0, 0x0b, 1), 0x06);
        assert_eq!(read(&mut host, 1, 0, 0, 4), u32::MAX);
        assert_eq!(read(&mut host, 0, 1, 0, 2), 0xffff);
        assert_eq!(read(&mut host, 31, 7, 0xfc, 1), 0xff);
        host.write(ADDRESS_PORT, 4, address(0, 0, 0) | 1 << 16);
        assert_eq!(host.read(DATA_PORT, 4), u32::MAX, "bus 1");
        host.write(ADDRESS_PORT, 4, address(0, 0, 0) & !ENABLE);
        assert_eq!(host.read(DATA_PORT, 4), u32::MAX, "enable bit clear");
    }

    #[test]
    fn address_latch_keeps_only_defined_bits_and_needs_dwords() {
        let mut host = PciHost::new();
        // Linux's pci_check_type1.
        host.write(ADDRESS_PORT + 3, 1, 0x01);
        host.write(ADDRESS_PORT, 4, 0x8000_0000);
        assert_eq!(host.read(ADDRESS_PORT, 4), 0x8000_0000);
        host.write(ADDRESS_PORT, 4, 0xffff_ffff);
        assert_eq!(host.read(ADDRESS_PORT, 4), 0x80ff_fffc);
        host.write(ADDRESS_PORT, 2, 0);
        assert_eq!(host.read(ADDRESS_PORT, 4), 0x80ff_fffc);
        assert_eq!(host.read(ADDRESS_PORT, 2), 0xffff);
        assert_eq!(host.read(ADDRESS_PORT + 1, 1), 0xff);
    }

    #[test]
    fn misaligned_data_accesses_read_all_ones() {
        let mut host = PciHost::new();
        host.write(ADDRESS_PORT, 4, address(0, 0, 0));
        assert_eq!(host.read(DATA_PORT + 3, 2), 0xffff, "crosses the dword");
        assert_eq!(host.read(DATA_PORT + 1, 4), u32::MAX);
        assert_eq!(host.read(DATA_PORT + 1, 2), 0xc080, "inside the dword");
        assert_eq!(host.read(DATA_PORT + 2, 3), 0xff_ffff, "no 3-byte access");
        assert_eq!(host.write(DATA_PORT + 2, 4, 0), None);
    }

    #[test]
    fn only_writable_bits_change() {
        let mut host = PciHost::new();
        host.write(ADDRESS_PORT, 4, address(0, 0, 0));
        let wrote = host.write(DATA_PORT, 4, 0x1234_5678);
        assert_eq!(
            wrote,
            Some(ConfigWrite {
                location: Location::HOST_BRIDGE,
                offset: 0,
                size: 4
            })
        );
        assert_eq!(host.read(DATA_PORT, 4), 0x29c0_8086, "ids are read-only");
        host.write(ADDRESS_PORT, 4, address(0, 0, COMMAND));
        host.write(DATA_PORT, 4, 0xffff_ffff);
        assert_eq!(host.read(DATA_PORT, 4), 0x0000_0507, "status is read-only");
        host.write(ADDRESS_PORT, 4, address(0, 0, INTERRUPT_LINE));
        host.write(DATA_PORT + 1, 1, 0x55);
        host.write(DATA_PORT, 1, 0x0b);
        assert_eq!(
            host.read(DATA_PORT, 2),
            0x000b,
            "interrupt pin is read-only"
        );
    }

    #[test]
    fn added_functions_answer_and_mark_multi_function() {
        let mut host = PciHost::new();
        let mut virtio = ConfigSpace::new(0x1af4, 0x1042, 0x01_00_00, 1);
        // A 16 KiB memory BAR: the address bits above the size are writable.
        virtio.set_writable(0x10, &0xffff_c000u32.to_le_bytes());
        let at = Location {
            device: 3,
            function: 0,
        };
        assert_eq!(host.add(at, virtio.clone()), Ok(()));
        assert_eq!(host.add(at, virtio.clone()), Err(Error::Occupied));
        assert_eq!(
            host.add(Location::HOST_BRIDGE, virtio.clone()),
            Err(Error::Occupied)
        );
        let bad = Location {
            device: 32,
            function: 0,
        };
        assert_eq!(host.add(bad, virtio.clone()), Err(Error::Invalid));
        assert_eq!(read(&mut host, 3, 0, 0, 4), 0x1042_1af4);
        // BAR sizing.
        host.write(ADDRESS_PORT, 4, address(3, 0, 0x10));
        let wrote = host.write(DATA_PORT, 4, u32::MAX).unwrap();
        assert_eq!((wrote.location, wrote.offset), (at, 0x10));
        assert_eq!(host.read(DATA_PORT, 4), 0xffff_c000);

        let second = Location {
            device: 3,
            function: 1,
        };
        host.add(second, virtio.clone()).unwrap();
        assert_eq!(read(&mut host, 3, 0, 0x0e, 1), 0x80);
        assert_eq!(read(&mut host, 3, 1, 0x0e, 1), 0x00);
        for device in 4..9 {
            let location = Location {
                device,
                function: 0,
            };
            host.add(location, virtio.clone()).unwrap();
        }
        let full = Location {
            device: 20,
            function: 0,
        };
        assert_eq!(host.add(full, virtio), Err(Error::Full));
    }

    proptest! {
        #[test]
        fn hostile_port_sequences_never_panic(
            accesses in proptest::collection::vec(
                (any::<bool>(), 0xcf6u16..0xd02, 0u8..6, any::<u32>()), 0..300),
        ) {
            let mut host = PciHost::new();
            host.add(Location { device: 1, function: 2 }, ConfigSpace::host_bridge()).unwrap();
            for (is_write, port, size, value) in accesses {
                if is_write {
                    host.write(port, size, value);
                } else {
                    let value = host.read(port, size);
                    prop_assert!(size >= 4 || value >> (8 * u32::from(size.max(1))) == 0);
                }
            }
            prop_assert_eq!(host.function(Location::HOST_BRIDGE).unwrap().read(0, 4), 0x29c0_8086);
        }
    }
}
