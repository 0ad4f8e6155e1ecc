//! PCI functions the core gives driver components.
//!
//! A driver names its device in the system file by vendor and device ID
//! (and bus address, when it must be a particular one). At boot the core
//! finds it ([`find`], over any [`ConfigSpace`]: the hardware's ports, or a
//! simulated bus in the tests), sizes its BARs ([`size_bars`]) and maps
//! the memory BARs the driver asked for into its device window
//! ([`place_bars`], one after the other with a guard page after each);
//! nothing else of the bus is mapped. The function's configuration space
//! is reached through the `PciConfig` call, which refuses writes to the
//! BARs and the expansion-ROM address ([`config_access`]): a driver that
//! could move its BARs could lay its device over memory it does not own.

/// A function's bus address: `bus << 8 | device << 3 | function`.
pub type Address = u32;

/// Reads and writes configuration space, 32 bits at a time.
pub trait ConfigSpace {
    fn read32(&mut self, address: Address, offset: u8) -> u32;
    fn write32(&mut self, address: Address, offset: u8, value: u32);
}

/// One BAR as sized: memory or I/O, where and how large (`size` 0: not
/// implemented).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bar {
    pub physical: u64,
    pub size: u64,
    pub memory: bool,
}

/// A function found on the bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    pub address: Address,
    pub vendor: u16,
    pub device: u16,
    pub bars: [Bar; 6],
}

/// Where one memory BAR appears in the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The first page of the BAR, physical.
    pub physical_page: u64,
    pub pages: u64,
    /// The page it is mapped at in the driver.
    pub mapped_page: u64,
    /// The BAR's own address in the driver (the page plus its offset).
    pub address: u64,
    pub size: u64,
}

/// `bus:device.function` as written in the system file.
pub fn format_address(address: Address) -> (u32, u32, u32) {
    (address >> 8, (address >> 3) & 0x1f, address & 7)
}

/// The first endpoint function on the bus with `vendor:device` (at `at`,
/// when given) that `taken` does not already claim; its BARs sized.
pub fn find(
    config: &mut impl ConfigSpace,
    vendor: u16,
    device: u16,
    at: Option<Address>,
    taken: impl Fn(Address) -> bool,
) -> Option<Function> {
    for bus in 0..256u32 {
        for slot in 0..32u32 {
            let first = bus << 8 | slot << 3;
            let ids = config.read32(first, 0);
            if ids & 0xffff == 0xffff {
                continue;
            }
            // Functions 1-7 exist only behind a multi-function device.
            let multi = config.read32(first, 0x0c) >> 16 & 0x80 != 0;
            let functions = if multi { 8 } else { 1 };
            for function in 0..functions {
                let address = first | function;
                let ids = config.read32(address, 0);
                let matches = ids & 0xffff == u32::from(vendor) && ids >> 16 == u32::from(device);
                // Only endpoints (header type 0): a bridge's writable
                // windows would let its driver move memory around.
                let endpoint = config.read32(address, 0x0c) >> 16 & 0x7f == 0;
                if !matches || !endpoint || at.is_some_and(|at| at != address) || taken(address) {
                    continue;
                }
                return Some(Function {
                    address,
                    vendor,
                    device,
                    bars: size_bars(config, address),
                });
            }
        }
    }
    None
}

/// Sizes a function's six BARs the standard way (write all ones, read
/// back, restore) with its decoding turned off meanwhile.
pub fn size_bars(config: &mut impl ConfigSpace, address: Address) -> [Bar; 6] {
    let mut bars = [Bar::default(); 6];
    // Only a type-0 header (an endpoint) has six BARs.
    if config.read32(address, 0x0c) >> 16 & 0x7f != 0 {
        return bars;
    }
    let command = config.read32(address, 0x04);
    config.write32(address, 0x04, command & !0b11);
    let mut index = 0;
    while index < 6 {
        let offset = 0x10 + 4 * index as u8;
        let original = config.read32(address, offset);
        config.write32(address, offset, u32::MAX);
        let mask = config.read32(address, offset);
        config.write32(address, offset, original);
        if original & 1 == 1 {
            // I/O: 32-bit address, low two bits flags.
            let size = (!(mask & !0b11)).wrapping_add(1) & 0xffff;
            bars[index] = Bar {
                physical: u64::from(original & !0b11),
                size: if mask == 0 { 0 } else { u64::from(size) },
                memory: false,
            };
            index += 1;
            continue;
        }
        let wide = original >> 1 & 0b11 == 0b10 && index < 5;
        let (mut base, mut size_mask) = (
            u64::from(original & !0xf),
            u64::from(mask & !0xf) | 0xffff_ffff_0000_0000,
        );
        if wide {
            let high_offset = offset + 4;
            let high = config.read32(address, high_offset);
            config.write32(address, high_offset, u32::MAX);
            let high_mask = config.read32(address, high_offset);
            config.write32(address, high_offset, high);
            base |= u64::from(high) << 32;
            size_mask = size_mask & 0xffff_ffff | u64::from(high_mask) << 32;
        }
        let size = if mask & !0xf == 0 && (!wide || size_mask >> 32 == 0) {
            0
        } else {
            (!size_mask).wrapping_add(1)
        };
        bars[index] = Bar {
            physical: base,
            size,
            memory: true,
        };
        index += if wide { 2 } else { 1 };
    }
    config.write32(address, 0x04, command);
    bars
}

/// Where the memory BARs in `mask` (bit n: BAR n; 0: every memory BAR)
/// appear from `window` on: each from its page, a guard page after it.
pub fn place_bars(function: &Function, mask: u32, window: u64) -> [Option<Placed>; 6] {
    let mut placed = [None; 6];
    let mut cursor = window;
    for (index, bar) in function.bars.iter().enumerate() {
        let wanted = mask == 0 || mask & (1 << index) != 0;
        if !wanted || !bar.memory || bar.size == 0 {
            continue;
        }
        let physical_page = bar.physical & !0xfff;
        let end = bar.physical.saturating_add(bar.size);
        let pages = (end - physical_page).div_ceil(4096);
        placed[index] = Some(Placed {
            physical_page,
            pages,
            mapped_page: cursor,
            address: cursor + (bar.physical - physical_page),
            size: bar.size,
        });
        cursor += (pages + 1) * 4096;
    }
    placed
}

/// The first BAR `mask` names that is not an implemented memory BAR
/// (nothing can be mapped for it).
pub fn missing_bar(function: &Function, mask: u32) -> Option<usize> {
    (0..6).find(|&index| {
        let bar = function.bars[index];
        mask & (1 << index) != 0 && (!bar.memory || bar.size == 0)
    })
}

/// Whether a driver may make this access to its function's configuration
/// space: 1, 2 or 4 bytes, aligned, inside the 256-byte header; a write
/// not touching the BARs (0x10-0x27) or the expansion-ROM address
/// (0x30-0x33).
pub fn config_access(offset: u64, width: u64, write: bool) -> bool {
    let sized = matches!(width, 1 | 2 | 4) && offset.is_multiple_of(width) && offset < 256;
    if !sized || offset + width > 256 {
        return false;
    }
    let end = offset + width;
    let protected = |start: u64, stop: u64| offset < stop && start < end;
    !(write && (protected(0x10, 0x28) || protected(0x30, 0x34)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bus of one virtio-blk-like function at 00:03.0 (a 32-bit memory
    /// BAR 1 of 4 KiB, a 64-bit BAR 4 of 16 KiB, an I/O BAR 0 of 64
    /// ports) and a multi-function device at 00:05 with function 2.
    struct Bus {
        functions: Vec<(Address, [u32; 64], [u32; 6])>,
        writes: usize,
    }

    impl Bus {
        fn new() -> Self {
            let mut blk = [0u32; 64];
            blk[0] = 0x1042_1af4;
            blk[1] = 0b111;
            blk[4] = 0xc041; // BAR0: I/O at 0xc040
            blk[5] = 0xfebd_1000; // BAR1: 32-bit memory
            blk[8] = 0xfe00_000c; // BAR4: 64-bit prefetchable, low
            blk[9] = 0x1; // BAR5: high half
            let mut multi = [0u32; 64];
            multi[0] = 0x1234_8086;
            multi[3] = 0x0080_0000; // multi-function
            let mut second = [0u32; 64];
            second[0] = 0x1042_1af4;
            Self {
                functions: vec![
                    (
                        0x18,
                        blk,
                        [0xffff_ffc1, 0xffff_f000, 0, 0, 0xffff_c00c, 0xffff_ffff],
                    ),
                    (0x28, multi, [0; 6]),
                    (0x2a, second, [0; 6]),
                ],
                writes: 0,
            }
        }
    }

    impl ConfigSpace for Bus {
        fn read32(&mut self, address: Address, offset: u8) -> u32 {
            self.functions
                .iter()
                .find(|(at, ..)| *at == address)
                .map_or(u32::MAX, |(_, space, _)| space[usize::from(offset / 4)])
        }

        fn write32(&mut self, address: Address, offset: u8, value: u32) {
            self.writes += 1;
            if let Some((_, space, masks)) =
                self.functions.iter_mut().find(|(at, ..)| *at == address)
            {
                let index = usize::from(offset / 4);
                space[index] = match index {
                    // A BAR keeps its flag bits and reads back its mask
                    // after all ones are written.
                    4..=9 if value == u32::MAX => masks[index - 4],
                    _ => value,
                };
            }
        }
    }

    #[test]
    fn finds_a_function_and_sizes_its_bars() {
        let mut bus = Bus::new();
        let found = find(&mut bus, 0x1af4, 0x1042, None, |_| false).unwrap();
        assert_eq!(found.address, 0x18);
        assert_eq!(
            found.bars[0],
            Bar {
                physical: 0xc040,
                size: 64,
                memory: false
            }
        );
        assert_eq!(
            found.bars[1],
            Bar {
                physical: 0xfebd_1000,
                size: 4096,
                memory: true
            }
        );
        assert_eq!(
            found.bars[4],
            Bar {
                physical: 0x1_fe00_0000,
                size: 16384,
                memory: true
            }
        );
        assert_eq!(found.bars[5], Bar::default(), "the high half of BAR 4");
        // Sizing restored every BAR and the command register.
        assert_eq!(bus.read32(0x18, 0x14), 0xfebd_1000);
        assert_eq!(bus.read32(0x18, 0x24), 0x1);
        assert_eq!(bus.read32(0x18, 0x04), 0b111);
        // The second match lies behind a multi-function device; a taken
        // function is skipped; a named address must match.
        let second = find(&mut bus, 0x1af4, 0x1042, None, |at| at == 0x18).unwrap();
        assert_eq!(second.address, 0x2a);
        assert!(find(&mut bus, 0x1af4, 0x1042, Some(0x20), |_| false).is_none());
        assert!(find(&mut bus, 0x1af4, 0x1000, None, |_| false).is_none());
        // BAR 0 is I/O and BAR 2 unimplemented: neither can be mapped.
        assert_eq!(missing_bar(&found, 1 << 1 | 1 << 4), None);
        assert_eq!(missing_bar(&found, 1 << 0), Some(0));
        assert_eq!(missing_bar(&found, 1 << 2 | 1 << 4), Some(2));
        assert_eq!(format_address(0x2a), (0, 5, 2));
    }

    #[test]
    fn bars_are_placed_from_their_pages_with_guards() {
        let mut bus = Bus::new();
        let found = find(&mut bus, 0x1af4, 0x1042, None, |_| false).unwrap();
        let window = 0x1000_0000_0000;
        let placed = place_bars(&found, 0, window);
        assert_eq!(placed[0], None, "I/O BARs are not mapped");
        assert_eq!(
            placed[1],
            Some(Placed {
                physical_page: 0xfebd_1000,
                pages: 1,
                mapped_page: window,
                address: window,
                size: 4096
            })
        );
        assert_eq!(placed[4].unwrap().mapped_page, window + 2 * 4096);
        assert_eq!(placed[4].unwrap().pages, 4);
        // Only BAR 4 asked for.
        let only = place_bars(&found, 1 << 4, window);
        assert_eq!(only[1], None);
        assert_eq!(only[4].unwrap().mapped_page, window);
        // A small BAR inside a page keeps its offset.
        let mut small = found;
        small.bars[1] = Bar {
            physical: 0xfebd_1040,
            size: 0x40,
            memory: true,
        };
        let placed = place_bars(&small, 1 << 1, window);
        assert_eq!(placed[1].unwrap().address, window + 0x40);
    }

    #[test]
    fn config_writes_never_reach_the_bars() {
        assert!(config_access(0x04, 2, true), "the command register");
        assert!(config_access(0x3c, 1, true));
        assert!(config_access(0x10, 4, false), "BARs can be read");
        for offset in (0x10..0x28).step_by(4) {
            assert!(!config_access(offset, 4, true));
        }
        assert!(!config_access(0x26, 2, true));
        assert!(!config_access(0x30, 4, true), "the expansion ROM");
        assert!(!config_access(0x33, 1, true));
        assert!(config_access(0x34, 1, true));
        assert!(!config_access(0x02, 4, false), "unaligned");
        assert!(!config_access(0xfe, 4, false), "past the header");
        assert!(!config_access(0x00, 3, false), "odd width");
        assert!(!config_access(u64::MAX - 1, 2, false));
    }
}
