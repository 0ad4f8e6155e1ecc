//! The VM's ACPI tables, built per VM into a caller's buffer: RSDP (v2),
//! XSDT, FADT (revision 6, hardware-reduced), MADT and a DSDT, modelled on
//! what QEMU's `microvm` machine gives the Debian cloud kernel
//! (`docs/VIRTUALIZATION.md`, "Platform devices").
//!
//! - **FADT**: `HW_REDUCED_ACPI`, so there is no PM timer, SCI, GPE or
//!   FACS; the sleep control/status and reset registers are the I/O ports
//!   of [`crate::power`], so a guest's `poweroff` and `reboot` reach the
//!   world switcher as [`crate::power::PowerEvent`]s. No 8042 and no VGA
//!   are announced; the RTC century is CMOS register [`CENTURY_REGISTER`].
//! - **MADT**: the local APIC at [`LOCAL_APIC_ADDRESS`], one enabled
//!   Processor Local APIC per vCPU (APIC id = processor UID = index), one
//!   IOAPIC (id 0, as QEMU's) at [`IOAPIC_ADDRESS`] with GSI base 0, a
//!   LAPIC NMI on LINT1 for all processors. `PCAT_COMPAT` is set only with
//!   an 8259 pair. The only interrupt source override is ISA IRQ 0 -> GSI 2,
//!   and only with a PIT: as on PCs the PIT drives IOAPIC pin 2 (pin 0
//!   belongs to the 8259's ExtINT). Every other ISA IRQ is identity-mapped,
//!   edge-triggered and active high, which is what Linux assumes without an
//!   override.
//! - **DSDT**: `\_SB.COM1` (PNP0501, ports 0x3f8-0x3ff, IRQ 4), `\_SB.RTC`
//!   (PNP0B00, ports 0x70-0x71, IRQ 8), optionally `\_SB.FWCF` (QEMU0002,
//!   the fw_cfg ports), one `\_SB.VRnn` (LNRO0005) per virtio-mmio window
//!   with its level-triggered GSI (Linux has no other way to find them),
//!   optionally `\_SB.PCI0` (PNP0A03, the PCI root bridge of bus 0),
//!   and `\_S5` = {5, 0, 0, 0} so Linux offers power-off. No GED device:
//!   a guest-initiated power-off needs only the FADT registers and `\_S5`;
//!   a GED would only deliver host-initiated power-button events.
//!
//! Placement: the RSDP must be 16-byte aligned, and a guest that is not
//! told where it is scans 0xE0000-0xFFFFF ([`BIOS_AREA`]); [`install`] puts
//! every table there. Boot protocols that carry the address
//! (`boot_params.acpi_rsdp_addr`, `hvm_start_info.rsdp_paddr`) take
//! [`Tables::rsdp`]. The loader must keep that area out of the guest's
//! usable RAM in its memory map.
//!
//! rust-vmm's `acpi_tables` crate is not used: it needs `alloc` (its AML
//! objects are `Vec`s of trait objects), and the world switcher has no
//! heap; [`crate::aml`] is the small subset the DSDT needs.

use crate::aml::{self, Polarity, Trigger};
use crate::writer::{self, Writer};
use crate::{Memory, power};

/// Where the local APICs are, as every PC has them.
pub const LOCAL_APIC_ADDRESS: u32 = 0xfee0_0000;
/// Where the one IOAPIC is.
pub const IOAPIC_ADDRESS: u32 = 0xfec0_0000;
/// The IOAPIC's pins: GSIs 0..24.
pub const IOAPIC_PINS: u32 = 24;
/// The most vCPUs the MADT describes (xAPIC ids 0..=254; 255 is broadcast).
pub const MAX_CPUS: u8 = 255;
/// The most virtio-mmio devices (named VR00..VR99).
pub const MAX_VIRTIO_MMIO: usize = 100;
/// The CMOS register that holds the century, as the FADT announces it.
pub const CENTURY_REGISTER: u8 = 0x32;

/// The region a guest scans for the RSDP, and where [`install`] puts all
/// tables.
pub const BIOS_AREA: u64 = 0xe_0000;
/// One past the end of the scanned region.
pub const BIOS_AREA_END: u64 = 0x10_0000;
/// Room [`install`] gives the tables (they take under 1 KiB with a few
/// virtio devices).
pub const TABLES_MAX: usize = 4096;

pub const OEM_ID: [u8; 6] = *b"MCRVSR";
pub const OEM_TABLE_ID: [u8; 8] = *b"MVPLATFM";
pub const CREATOR_ID: [u8; 4] = *b"MVSR";

/// The COM1 and RTC resources the DSDT announces.
pub const COM1_PORT: u16 = 0x3f8;
pub const COM1_IRQ: u8 = 4;
pub const RTC_PORT: u16 = 0x70;
pub const RTC_IRQ: u8 = 8;
/// The fw_cfg selector and data ports.
pub const FW_CFG_PORT: u16 = 0x510;

const RSDP_LENGTH: usize = 36;

/// FADT flags (ACPI 6.5, table 5.10).
const FADT_RESET_REG_SUP: u32 = 1 << 10;
const FADT_HW_REDUCED_ACPI: u32 = 1 << 20;
/// IA-PC boot architecture flags: VGA not present (8042 absent: bit 1
/// clear).
const IAPC_BOOT_ARCH: u16 = 1 << 2;
/// Generic address space id for system I/O.
const SYSTEM_IO: u8 = 1;

/// A virtio-mmio transport the DSDT announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioMmio {
    /// Guest-physical base of its register window.
    pub base: u32,
    /// Bytes in the window (virtio-mmio uses 0x200).
    pub size: u32,
    /// Its IOAPIC input, level-triggered and active high.
    pub gsi: u32,
}

/// What the tables describe.
#[derive(Clone, Copy, Debug)]
pub struct Platform<'a> {
    /// vCPUs, 1..=[`MAX_CPUS`].
    pub cpus: u8,
    /// An 8254 PIT on IOAPIC pin 2 (adds the IRQ0 override).
    pub pit: bool,
    /// An 8259 pair (sets `PCAT_COMPAT`).
    pub pic: bool,
    /// The fw_cfg device is in the DSDT.
    pub fw_cfg: bool,
    /// Virtio-mmio devices, in DSDT order.
    pub virtio_mmio: &'a [VirtioMmio],
    /// A PCI host bridge (`\_SB.PCI0`, PNP0A03, bus 0) is in the DSDT:
    /// without it Linux under ACPI does not scan the bus for the
    /// platform's PCI functions (its disks).
    pub pci_root: bool,
}

/// Why the tables could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The buffer is too small.
    TooSmall,
    /// The platform or base address cannot be described (no vCPU, a GSI
    /// past the IOAPIC, a base that is not 16-byte aligned...).
    Invalid,
    /// Guest memory does not cover [`BIOS_AREA`].
    Memory,
}

impl From<writer::Error> for Error {
    fn from(error: writer::Error) -> Self {
        match error {
            writer::Error::Overflow => Error::TooSmall,
            writer::Error::Invalid => Error::Invalid,
        }
    }
}

/// Guest-physical addresses of the built tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tables {
    /// The RSDP: what boot protocols and the legacy scan find.
    pub rsdp: u64,
    pub xsdt: u64,
    pub fadt: u64,
    pub madt: u64,
    pub dsdt: u64,
    /// Bytes used from the start of the buffer.
    pub length: usize,
}

/// Builds all tables into `buffer`, which the guest will see at
/// guest-physical `base` (16-byte aligned).
pub fn build(platform: &Platform, base: u64, buffer: &mut [u8]) -> Result<Tables, Error> {
    let valid = (1..=MAX_CPUS).contains(&platform.cpus)
        && platform.virtio_mmio.len() <= MAX_VIRTIO_MMIO
        && platform.virtio_mmio.iter().all(|device| {
            device.gsi < IOAPIC_PINS && device.base.checked_add(device.size).is_some()
        })
        && base.is_multiple_of(16)
        && base.checked_add(buffer.len() as u64).is_some();
    if !valid {
        return Err(Error::Invalid);
    }
    let mut writer = Writer::new(buffer);
    let w = &mut writer;
    let address = |w: &Writer| base + w.position() as u64;

    let dsdt = address(w);
    table(w, *b"DSDT", 2, |w| dsdt_body(w, platform));
    align(w);
    let fadt = address(w);
    table(w, *b"FACP", 6, |w| fadt_body(w, dsdt));
    align(w);
    let madt = address(w);
    table(w, *b"APIC", 5, |w| madt_body(w, platform));
    align(w);
    let xsdt = address(w);
    table(w, *b"XSDT", 1, |w| {
        w.u64(fadt);
        w.u64(madt);
    });
    align(w);
    let rsdp = address(w);
    rsdp_bytes(w, xsdt);
    let length = writer.finish()?;
    Ok(Tables {
        rsdp,
        xsdt,
        fadt,
        madt,
        dsdt,
        length,
    })
}

/// Builds the tables at [`BIOS_AREA`] in guest memory, where a guest that
/// scans for the RSDP finds it.
pub fn install(platform: &Platform, memory: &mut impl Memory) -> Result<Tables, Error> {
    let mut buffer = [0u8; TABLES_MAX];
    let tables = build(platform, BIOS_AREA, &mut buffer)?;
    if memory.write(BIOS_AREA, &buffer[..tables.length]) {
        Ok(tables)
    } else {
        Err(Error::Memory)
    }
}

fn align(w: &mut Writer) {
    w.zeros(w.position().next_multiple_of(16) - w.position());
}

/// A table: the standard header, `body`, then its length and checksum.
fn table(w: &mut Writer, signature: [u8; 4], revision: u8, body: impl FnOnce(&mut Writer)) {
    let start = w.position();
    w.bytes(&signature);
    w.u32(0); // length, patched below
    w.u8(revision);
    w.u8(0); // checksum, patched below
    w.bytes(&OEM_ID);
    w.bytes(&OEM_TABLE_ID);
    w.u32(1); // OEM revision
    w.bytes(&CREATOR_ID);
    w.u32(1); // creator revision
    body(w);
    let length = (w.position() - start) as u32;
    w.patch(start + 4, &length.to_le_bytes());
    w.checksum(start, start + 9);
}

fn rsdp_bytes(w: &mut Writer, xsdt: u64) {
    let start = w.position();
    w.bytes(b"RSD PTR ");
    w.u8(0); // checksum of the first 20 bytes
    w.bytes(&OEM_ID);
    w.u8(2); // revision: ACPI 2.0+ layout
    w.u32(0); // no RSDT: the XSDT is used
    w.u32(RSDP_LENGTH as u32);
    w.u64(xsdt);
    w.u8(0); // extended checksum of all 36 bytes
    w.zeros(3);
    // The first checksum covers bytes 0..20 only.
    let first: u8 = w
        .written_since(start)
        .iter()
        .take(20)
        .fold(0u8, |sum, &byte| sum.wrapping_add(byte));
    w.patch(start + 8, &[0u8.wrapping_sub(first)]);
    w.checksum(start, start + 32);
}

/// A generic address structure for a byte-wide I/O port.
fn io_register(w: &mut Writer, port: u16) {
    w.bytes(&[SYSTEM_IO, 8, 0, 1]); // 8 bits at bit 0, byte access
    w.u64(u64::from(port));
}

/// A 32-bit I/O register read with doubleword accesses (the PM timer).
fn io_register_32(w: &mut Writer, port: u16) {
    w.bytes(&[SYSTEM_IO, 32, 0, 3]); // 32 bits at bit 0, dword access
    w.u64(u64::from(port));
}

fn null_register(w: &mut Writer) {
    w.zeros(12);
}

fn fadt_body(w: &mut Writer, dsdt: u64) {
    w.u32(0); // FIRMWARE_CTRL: no FACS on hardware-reduced platforms
    w.u32(u32::try_from(dsdt).unwrap_or(0)); // 40: DSDT (X_DSDT below wins)
    w.u8(0); // 44: reserved
    w.u8(0); // 45: preferred PM profile: unspecified
    w.u16(0); // 46: SCI_INT: none
    w.u32(0); // 48: SMI_CMD: none
    w.zeros(4); // 52: ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT
    w.zeros(5 * 4); // 56: PM1a/b event, PM1a/b control, PM2 blocks: none
    w.u32(u32::from(crate::pm_timer::PORT)); // 76: PM_TMR_BLK
    w.zeros(2 * 4); // 80: GPE0/1 blocks: none
    w.zeros(3); // 88: PM1_EVT_LEN, PM1_CNT_LEN, PM2_CNT_LEN
    w.u8(4); // 91: PM_TMR_LEN
    w.zeros(4); // 92: GPE0/1 lengths, GPE1_BASE, CST_CNT
    w.zeros(8); // 96: P_LVL2/3_LAT, FLUSH_SIZE/STRIDE
    w.zeros(4); // 104: DUTY_OFFSET, DUTY_WIDTH, DAY_ALRM, MON_ALRM
    w.u8(CENTURY_REGISTER); // 108
    w.u16(IAPC_BOOT_ARCH); // 109
    w.u8(0); // 111: reserved
    w.u32(FADT_HW_REDUCED_ACPI | FADT_RESET_REG_SUP); // 112: flags
    io_register(w, power::RESET); // 116: RESET_REG
    w.u8(power::RESET_VALUE); // 128
    w.u16(0); // 129: ARM_BOOT_ARCH
    w.u8(5); // 131: FADT minor version (ACPI 6.5)
    w.u64(0); // 132: X_FIRMWARE_CTRL
    w.u64(dsdt); // 140: X_DSDT
    for _ in 0..5 {
        null_register(w); // 148..208: X_PM1a_EVT_BLK .. X_PM2_CNT_BLK
    }
    io_register_32(w, crate::pm_timer::PORT); // 208: X_PM_TMR_BLK
    null_register(w); // 220: X_GPE0_BLK
    null_register(w); // 232: X_GPE1_BLK
    io_register(w, power::SLEEP_CONTROL); // 244
    io_register(w, power::SLEEP_STATUS); // 256
    w.bytes(b"MCRVSRHV"); // 268: hypervisor vendor identity
}

fn madt_body(w: &mut Writer, platform: &Platform) {
    w.u32(LOCAL_APIC_ADDRESS);
    w.u32(u32::from(platform.pic)); // PCAT_COMPAT
    for cpu in 0..platform.cpus {
        // Processor Local APIC: UID, APIC id, enabled.
        w.bytes(&[0, 8, cpu, cpu]);
        w.u32(1);
    }
    // I/O APIC: id 0, its address, GSI base 0.
    w.bytes(&[1, 12, 0, 0]);
    w.u32(IOAPIC_ADDRESS);
    w.u32(0);
    if platform.pit {
        // Interrupt source override: ISA IRQ 0 -> GSI 2, bus-conforming.
        w.bytes(&[2, 10, 0, 0]);
        w.u32(2);
        w.u16(0);
    }
    // Local APIC NMI: all processors, bus-conforming, LINT1.
    w.bytes(&[4, 6, 0xff]);
    w.u16(0);
    w.u8(1);
}

fn dsdt_body(w: &mut Writer, platform: &Platform) {
    aml::scope(w, "\\_SB", |w| {
        aml::device(w, "COM1", |w| {
            aml::name(w, "_HID", |w| aml::eisa_id(w, "PNP0501"));
            aml::name(w, "_UID", |w| aml::integer(w, 1));
            aml::name(w, "_CRS", |w| {
                aml::resource_template(w, |w| {
                    aml::io(w, COM1_PORT, 8);
                    aml::irq(w, COM1_IRQ);
                })
            });
        });
        aml::device(w, "RTC", |w| {
            aml::name(w, "_HID", |w| aml::eisa_id(w, "PNP0B00"));
            aml::name(w, "_CRS", |w| {
                aml::resource_template(w, |w| {
                    aml::io(w, RTC_PORT, 2);
                    aml::irq(w, RTC_IRQ);
                })
            });
        });
        if platform.fw_cfg {
            aml::device(w, "FWCF", |w| {
                aml::name(w, "_HID", |w| aml::string(w, "QEMU0002"));
                // Present and decoding, not shown in the UI.
                aml::name(w, "_STA", |w| aml::integer(w, 0x0b));
                aml::name(w, "_CRS", |w| {
                    aml::resource_template(w, |w| aml::io(w, FW_CFG_PORT, 2))
                });
            });
        }
        if platform.pci_root {
            // No _CRS: Linux then gives the root bus the whole I/O and
            // memory space, so it keeps the BARs the functions come with.
            aml::device(w, "PCI0", |w| {
                aml::name(w, "_HID", |w| aml::eisa_id(w, "PNP0A03"));
                aml::name(w, "_UID", |w| aml::integer(w, 0));
                aml::name(w, "_BBN", |w| aml::integer(w, 0));
            });
        }
        for (index, device) in platform.virtio_mmio.iter().enumerate() {
            virtio_mmio_device(w, index, device);
        }
    });
    aml::name(w, "_S5", |w| {
        aml::package(w, &[u64::from(power::S5_SLEEP_TYPE), 0, 0, 0])
    });
}

/// `Device(VRnn)`: a virtio-mmio transport as Linux's `virtio_mmio` driver
/// matches it (`_HID "LNRO0005"`, one memory window, one interrupt).
fn virtio_mmio_device(w: &mut Writer, index: usize, device: &VirtioMmio) {
    let Some(digits) = u8::try_from(index).ok().filter(|&index| index < 100) else {
        w.fail(writer::Error::Invalid);
        return;
    };
    let name = [b'V', b'R', b'0' + digits / 10, b'0' + digits % 10];
    let name = core::str::from_utf8(&name).unwrap_or("VR__");
    aml::device(w, name, |w| {
        aml::name(w, "_HID", |w| aml::string(w, "LNRO0005"));
        aml::name(w, "_UID", |w| aml::integer(w, index as u64));
        aml::name(w, "_CCA", |w| aml::integer(w, 1));
        aml::name(w, "_CRS", |w| {
            aml::resource_template(w, |w| {
                aml::memory32_fixed(w, device.base, device.size, true);
                aml::interrupt(w, device.gsi, Trigger::Level, Polarity::High);
            })
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::VecMemory;

    const HEADER_LENGTH: usize = 36;

    const VIRTIO: [VirtioMmio; 2] = [
        VirtioMmio {
            base: 0xfeb0_0000,
            size: 0x200,
            gsi: 16,
        },
        VirtioMmio {
            base: 0xfeb0_0200,
            size: 0x200,
            gsi: 17,
        },
    ];

    fn platform() -> Platform<'static> {
        Platform {
            cpus: 1,
            pit: false,
            pic: false,
            fw_cfg: false,
            virtio_mmio: &[],
            pci_root: false,
        }
    }

    /// The tables built at `base`, and the buffer they are in.
    fn built(platform: &Platform, base: u64) -> (Tables, Vec<u8>) {
        let mut buffer = vec![0u8; TABLES_MAX];
        let tables = build(platform, base, &mut buffer).unwrap();
        buffer.truncate(tables.length);
        (tables, buffer)
    }

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b))
    }

    fn u16_at(bytes: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap())
    }
    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }
    fn u64_at(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    }

    /// The table at guest address `address`, checked for its signature,
    /// length and checksum.
    fn table_at<'a>(bytes: &'a [u8], base: u64, address: u64, signature: &[u8]) -> &'a [u8] {
        let start = (address - base) as usize;
        assert_eq!(&bytes[start..start + 4], signature);
        let length = u32_at(bytes, start + 4) as usize;
        let table = &bytes[start..start + length];
        assert_eq!(
            sum(table),
            0,
            "{} checksum",
            String::from_utf8_lossy(signature)
        );
        assert_eq!(&table[10..16], &OEM_ID);
        table
    }

    #[test]
    fn rsdp_points_at_the_xsdt_which_lists_fadt_and_madt() {
        let base = 0xe_0000;
        let (tables, bytes) = built(&platform(), base);
        let rsdp_at = (tables.rsdp - base) as usize;
        let rsdp = &bytes[rsdp_at..rsdp_at + RSDP_LENGTH];
        assert_eq!(tables.rsdp % 16, 0);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0, "ACPI 1.0 checksum");
        assert_eq!(sum(rsdp), 0, "extended checksum");
        assert_eq!(rsdp[15], 2, "revision");
        assert_eq!(u32_at(rsdp, 16), 0, "no RSDT");
        assert_eq!(u32_at(rsdp, 20), 36, "length");
        assert_eq!(u64_at(rsdp, 24), tables.xsdt);

        let xsdt = table_at(&bytes, base, tables.xsdt, b"XSDT");
        assert_eq!(xsdt.len(), 36 + 16);
        assert_eq!(u64_at(xsdt, 36), tables.fadt);
        assert_eq!(u64_at(xsdt, 44), tables.madt);
    }

    #[test]
    fn fadt_is_hardware_reduced_with_power_registers() {
        let base = 0x10_0000;
        let (tables, bytes) = built(&platform(), base);
        let fadt = table_at(&bytes, base, tables.fadt, b"FACP");
        assert_eq!(fadt.len(), 276);
        assert_eq!(fadt[8], 6, "revision");
        assert_eq!(fadt[131], 5, "minor version");
        assert_eq!(u32_at(fadt, 36), 0, "no FACS");
        assert_eq!(u32_at(fadt, 40) as u64, tables.dsdt);
        assert_eq!(u64_at(fadt, 140), tables.dsdt, "X_DSDT");
        assert_eq!(u16_at(fadt, 46), 0, "no SCI");
        assert_eq!(fadt[108], CENTURY_REGISTER);
        assert_eq!(u16_at(fadt, 109), 1 << 2, "no VGA, no 8042");
        let flags = u32_at(fadt, 112);
        assert_eq!(flags, 1 << 20 | 1 << 10, "HW_REDUCED_ACPI, RESET_REG_SUP");
        let io_byte = |port: u16| {
            let mut gas = vec![1u8, 8, 0, 1];
            gas.extend_from_slice(&u64::from(port).to_le_bytes());
            gas
        };
        assert_eq!(fadt[116..128], io_byte(power::RESET)[..]);
        assert_eq!(fadt[128], power::RESET_VALUE);
        assert_eq!(fadt[244..256], io_byte(power::SLEEP_CONTROL)[..]);
        assert_eq!(fadt[256..268], io_byte(power::SLEEP_STATUS)[..]);
        assert!(fadt[148..208].iter().all(|&b| b == 0), "no PM1/PM2 blocks");
        assert!(fadt[220..244].iter().all(|&b| b == 0), "no GPE blocks");
        assert!(
            fadt[56..76].iter().all(|&b| b == 0),
            "no legacy PM1/PM2 blocks"
        );
        assert!(fadt[80..88].iter().all(|&b| b == 0), "no legacy GPE blocks");
        // The PM timer, Linux's TSC calibration reference: 4 bytes at its
        // port, and the same as a 32-bit GAS.
        assert_eq!(u32_at(fadt, 76), u32::from(crate::pm_timer::PORT));
        assert_eq!(fadt[91], 4, "PM_TMR_LEN");
        let mut timer = vec![1u8, 32, 0, 3];
        timer.extend_from_slice(&u64::from(crate::pm_timer::PORT).to_le_bytes());
        assert_eq!(fadt[208..220], timer[..], "X_PM_TMR_BLK");
        assert_eq!(flags & 1 << 8, 0, "TMR_VAL_EXT clear: 24 bits");
    }

    /// MADT entries as (type, bytes after the type and length).
    fn madt_entries(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut entries = Vec::new();
        let mut at = 44;
        while at < madt.len() {
            let (kind, length) = (madt[at], madt[at + 1] as usize);
            assert!(length >= 2 && at + length <= madt.len());
            entries.push((kind, madt[at + 2..at + length].to_vec()));
            at += length;
        }
        entries
    }

    #[test]
    fn madt_describes_apics_and_the_nmi_line() {
        let base = 0x8000;
        let mut platform = platform();
        platform.cpus = 2;
        let (tables, bytes) = built(&platform, base);
        let madt = table_at(&bytes, base, tables.madt, b"APIC");
        assert_eq!(madt[8], 5, "revision");
        assert_eq!(u32_at(madt, 36), 0xfee0_0000);
        assert_eq!(u32_at(madt, 40), 0, "no PCAT_COMPAT without an 8259");
        assert_eq!(
            madt_entries(madt),
            vec![
                (0, vec![0, 0, 1, 0, 0, 0]),
                (0, vec![1, 1, 1, 0, 0, 0]),
                (1, vec![0, 0, 0x00, 0x00, 0xc0, 0xfe, 0, 0, 0, 0]),
                (4, vec![0xff, 0, 0, 1]),
            ]
        );
        assert_eq!(madt.len(), 44 + 2 * 8 + 12 + 6);
    }

    #[test]
    fn pit_adds_the_irq0_override_and_pic_sets_pcat_compat() {
        let base = 0x8000;
        let mut platform = platform();
        platform.pit = true;
        platform.pic = true;
        let (tables, bytes) = built(&platform, base);
        let madt = table_at(&bytes, base, tables.madt, b"APIC");
        assert_eq!(u32_at(madt, 40), 1, "PCAT_COMPAT");
        let overrides: Vec<_> = madt_entries(madt)
            .into_iter()
            .filter(|(kind, _)| *kind == 2)
            .collect();
        assert_eq!(overrides, vec![(2, vec![0, 0, 2, 0, 0, 0, 0, 0])]);
    }

    /// A decoder for the AML subset the DSDT uses, printing ASL-like text;
    /// it checks every package length and buffer size on the way.
    struct Decoder<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    impl Decoder<'_> {
        fn byte(&mut self) -> u8 {
            self.at += 1;
            self.bytes[self.at - 1]
        }

        fn little(&mut self, width: usize) -> u64 {
            let mut value = 0;
            for i in 0..width {
                value |= u64::from(self.byte()) << (8 * i);
            }
            value
        }

        /// The end offset of the package whose length starts here.
        fn package_end(&mut self) -> usize {
            let start = self.at;
            let lead = self.byte();
            let count = (lead >> 6) as usize;
            let mut length = if count == 0 {
                (lead & 0x3f) as usize
            } else {
                (lead & 0x0f) as usize
            };
            for i in 0..count {
                length |= (self.byte() as usize) << (4 + 8 * i);
            }
            start + length
        }

        fn name(&mut self) -> String {
            let mut text = String::new();
            while matches!(self.bytes[self.at], b'\\' | b'^') {
                text.push(self.byte() as char);
            }
            let count = match self.bytes[self.at] {
                0x2e => {
                    self.at += 1;
                    2
                }
                0x2f => {
                    self.at += 1;
                    self.byte()
                }
                _ => 1,
            };
            for i in 0..count {
                if i > 0 {
                    text.push('.');
                }
                let segment = &self.bytes[self.at..self.at + 4];
                text.push_str(std::str::from_utf8(segment).unwrap().trim_end_matches('_'));
                self.at += 4;
            }
            text
        }

        fn integer(&mut self) -> u64 {
            match self.byte() {
                0x00 => 0,
                0x01 => 1,
                0x0a => self.little(1),
                0x0b => self.little(2),
                0x0c => self.little(4),
                0x0e => self.little(8),
                other => panic!("not an integer: {other:#x} at {}", self.at - 1),
            }
        }

        fn object(&mut self) -> String {
            match self.bytes[self.at] {
                0x0d => {
                    self.at += 1;
                    let end = self.at + self.bytes[self.at..].iter().position(|&b| b == 0).unwrap();
                    let text = String::from_utf8(self.bytes[self.at..end].to_vec()).unwrap();
                    self.at = end + 1;
                    format!("\"{text}\"")
                }
                0x12 => {
                    self.at += 1;
                    let end = self.package_end();
                    let count = self.byte();
                    let elements: Vec<_> = (0..count).map(|_| self.integer().to_string()).collect();
                    assert_eq!(self.at, end, "package length");
                    format!("Package{{{}}}", elements.join(","))
                }
                0x11 => {
                    self.at += 1;
                    let end = self.package_end();
                    let size = self.integer() as usize;
                    assert_eq!(self.at + size, end, "buffer size");
                    let text = resources(&self.bytes[self.at..end]);
                    self.at = end;
                    text
                }
                _ => format!("{:#x}", self.integer()),
            }
        }

        fn terms(&mut self, end: usize) -> String {
            let mut terms = Vec::new();
            while self.at < end {
                terms.push(match self.byte() {
                    0x10 => {
                        let end = self.package_end();
                        let name = self.name();
                        format!("Scope({name}){{{}}}", self.terms(end))
                    }
                    0x5b => {
                        assert_eq!(self.byte(), 0x82, "only Device is used");
                        let end = self.package_end();
                        let name = self.name();
                        format!("Device({name}){{{}}}", self.terms(end))
                    }
                    0x08 => {
                        let name = self.name();
                        format!("Name({name},{})", self.object())
                    }
                    other => panic!("unexpected opcode {other:#x} at {}", self.at - 1),
                });
            }
            assert_eq!(self.at, end, "term list overran its package");
            terms.join(" ")
        }
    }

    /// Resource descriptors as text; checks each length and the end tag.
    fn resources(bytes: &[u8]) -> String {
        let mut items = Vec::new();
        let mut at = 0;
        loop {
            let tag = bytes[at];
            let (kind, body) = if tag & 0x80 == 0 {
                let length = (tag & 7) as usize;
                ((tag >> 3) & 0x0f, &bytes[at + 1..at + 1 + length])
            } else {
                let length = u16_at(bytes, at + 1) as usize;
                (tag, &bytes[at + 3..at + 3 + length])
            };
            at += body.len() + if tag & 0x80 == 0 { 1 } else { 3 };
            items.push(match (kind, body.len()) {
                (0x08, 7) => format!(
                    "IO({:#x},{:#x},{},{})",
                    u16_at(body, 1),
                    u16_at(body, 3),
                    body[5],
                    body[6]
                ),
                (0x04, 2) => format!("IRQ({:#x})", u16_at(body, 0)),
                (0x86, 9) => format!(
                    "Memory32Fixed({},{:#x},{:#x})",
                    body[0],
                    u32_at(body, 1),
                    u32_at(body, 5)
                ),
                (0x89, 6) => format!("Interrupt({:#x},{})", body[0], u32_at(body, 2)),
                (0x0f, 1) => {
                    assert_eq!(at, bytes.len(), "end tag is last");
                    return format!("RT{{{}}}", items.join(" "));
                }
                other => panic!("unexpected descriptor {other:?}"),
            });
        }
    }

    fn decode_dsdt(platform: &Platform) -> String {
        let base = 0x1000;
        let (tables, bytes) = built(platform, base);
        let dsdt = table_at(&bytes, base, tables.dsdt, b"DSDT");
        assert_eq!(dsdt[8], 2, "revision 2: 64-bit integers");
        let mut decoder = Decoder {
            bytes: dsdt,
            at: HEADER_LENGTH,
        };
        decoder.terms(dsdt.len())
    }

    #[test]
    fn dsdt_describes_com1_rtc_and_s5() {
        assert_eq!(
            decode_dsdt(&platform()),
            "Scope(\\_SB){\
             Device(COM1){Name(_HID,0x105d041) Name(_UID,0x1) \
             Name(_CRS,RT{IO(0x3f8,0x3f8,1,8) IRQ(0x10)})} \
             Device(RTC){Name(_HID,0xbd041) Name(_CRS,RT{IO(0x70,0x70,1,2) IRQ(0x100)})}\
             } Name(_S5,Package{5,0,0,0})"
        );
    }

    #[test]
    fn dsdt_describes_fw_cfg_and_virtio_mmio_devices() {
        let mut platform = platform();
        platform.fw_cfg = true;
        platform.virtio_mmio = &VIRTIO;
        let text = decode_dsdt(&platform);
        assert!(text.contains(
            "Device(FWCF){Name(_HID,\"QEMU0002\") Name(_STA,0xb) \
             Name(_CRS,RT{IO(0x510,0x510,1,2)})}"
        ));
        assert!(text.contains(
            "Device(VR00){Name(_HID,\"LNRO0005\") Name(_UID,0x0) Name(_CCA,0x1) \
             Name(_CRS,RT{Memory32Fixed(1,0xfeb00000,0x200) Interrupt(0x1,16)})}"
        ));
        assert!(text.contains("Device(VR01)"));
        assert!(text.contains("Interrupt(0x1,17)"));
        assert!(text.ends_with("} Name(_S5,Package{5,0,0,0})"));
    }

    #[test]
    fn dsdt_describes_the_pci_root_bridge_when_asked() {
        let mut platform = platform();
        assert!(!decode_dsdt(&platform).contains("PCI0"));
        platform.pci_root = true;
        assert!(
            decode_dsdt(&platform)
                .contains("Device(PCI0){Name(_HID,0x30ad041) Name(_UID,0x0) Name(_BBN,0x0)}")
        );
    }

    #[test]
    fn virtio_mmio_device_matches_hand_encoding() {
        let mut buffer = [0u8; 128];
        let mut w = Writer::new(&mut buffer);
        virtio_mmio_device(&mut w, 3, &VIRTIO[0]);
        let length = w.finish().unwrap();
        let mut expected = vec![0x5b, 0x82, 0x42, 0x04]; // Device, PkgLength 66
        expected.extend_from_slice(b"VR03");
        expected.extend_from_slice(b"\x08_HID\x0dLNRO0005\x00");
        expected.extend_from_slice(b"\x08_UID\x0a\x03");
        expected.extend_from_slice(b"\x08_CCA\x01");
        expected.extend_from_slice(b"\x08_CRS\x11\x1a\x0a\x17"); // Buffer(23)
        expected.extend_from_slice(&[0x86, 0x09, 0x00, 0x01, 0, 0, 0xb0, 0xfe, 0, 2, 0, 0]);
        expected.extend_from_slice(&[0x89, 0x06, 0x00, 0x01, 0x01, 16, 0, 0, 0]);
        expected.extend_from_slice(&[0x79, 0x00]);
        assert_eq!(expected.len(), 2 + 66);
        assert_eq!(buffer[..length], expected[..]);
    }

    #[test]
    fn install_puts_the_rsdp_where_the_legacy_scan_looks() {
        let mut memory = VecMemory(vec![0; 1 << 20]);
        let mut platform = platform();
        platform.virtio_mmio = &VIRTIO;
        let tables = install(&platform, &mut memory).unwrap();
        assert!((BIOS_AREA..BIOS_AREA_END).contains(&tables.rsdp));
        // The scan: 16-byte steps through 0xE0000-0xFFFFF.
        let found = (BIOS_AREA..BIOS_AREA_END)
            .step_by(16)
            .find(|&at| memory.0[at as usize..at as usize + 8] == *b"RSD PTR ");
        assert_eq!(found, Some(tables.rsdp));
        let mut small = VecMemory(vec![0; 0xe_0000]);
        assert_eq!(install(&platform, &mut small), Err(Error::Memory));
    }

    #[test]
    fn bad_platforms_and_small_buffers_are_refused() {
        let mut buffer = [0u8; TABLES_MAX];
        let mut bad = platform();
        bad.cpus = 0;
        assert_eq!(build(&bad, 0, &mut buffer), Err(Error::Invalid));
        let gsi = [VirtioMmio {
            gsi: IOAPIC_PINS,
            ..VIRTIO[0]
        }];
        bad = platform();
        bad.virtio_mmio = &gsi;
        assert_eq!(build(&bad, 0, &mut buffer), Err(Error::Invalid));
        assert_eq!(build(&platform(), 8, &mut buffer), Err(Error::Invalid));
        let many = [VIRTIO[0]; MAX_VIRTIO_MMIO];
        bad = platform();
        bad.virtio_mmio = &many;
        assert_eq!(build(&bad, 0, &mut buffer), Err(Error::TooSmall));
        let mut tiny = [0u8; 200];
        assert_eq!(build(&platform(), 0, &mut tiny), Err(Error::TooSmall));
    }
}
