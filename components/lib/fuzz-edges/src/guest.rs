//! What the `hostile` test VM attacks: I/O ports, MSRs, and addresses and
//! widths of MMIO accesses, drawn from tables of the platform's edges
//! (`docs/VIRTUALIZATION.md`): every port a device of the world
//! switcher's PC decodes and its neighbours, the MSRs the switcher
//! emulates or refuses, the register pages of the local APIC and the
//! IOAPIC, the guest-hints page, the BARs of PCI functions, offsets at
//! and across page ends, unaligned ones.
//!
//! Some accesses end the VM's boot (the test-status port, the ACPI power
//! and reset registers, the keyboard controller's reset, the EFER and APIC
//! base MSRs the guest itself stands on): [`port_write_ends_boot`] and
//! [`msr_write_breaks_guest`] name them, so a round avoids them and the
//! guest uses them only on purpose, to end a boot.

use crate::Random;

/// The local APIC's register page (its default base).
pub const LAPIC: u64 = 0xfee0_0000;
/// The IOAPIC's register page.
pub const IOAPIC: u64 = 0xfec0_0000;
/// The guest-hints page our hypervisor maps outside RAM.
pub const HINTS: u64 = 0xfeb0_0000;
/// A page.
pub const PAGE: u64 = 4096;

/// Ports of the world switcher's platform and their neighbours: the 8259
/// pair, the PIT and port 0x61, the keyboard controller, the CMOS RTC, the
/// POST port, fast A20 and reset (0x92), the ELCR, COM1, the test-status
/// port, QEMU's fw_cfg, the ACPI registers, PCI configuration, a PC's
/// reset control (0xcf9), and the ends of the port space.
pub const PORTS: [u16; 44] = [
    0x00, 0x20, 0x21, 0x40, 0x41, 0x42, 0x43, 0x60, 0x61, 0x64, 0x70, 0x71, 0x72, 0x80, 0x92, 0xa0,
    0xa1, 0xf0, 0xf4, 0xf5, 0x4d0, 0x4d1, 0x3f8, 0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3fe, 0x3ff,
    0x510, 0x511, 0x514, 0x600, 0x601, 0x602, 0x603, 0x608, 0xcf8, 0xcf9, 0xcfc, 0xcfe, 0xfffe,
    0xffff,
];

/// Whether a write to `port` (of any width that covers it, from `port`)
/// ends the VM's boot or prints: the test-status port, the ACPI sleep and
/// reset registers, the keyboard controller's command port (0xfe resets),
/// a PC's reset control and COM1's transmit register (a byte there is
/// console output).
pub fn port_write_ends_boot(port: u16, width: u8) -> bool {
    let first = u32::from(port);
    let last = first + u32::from(width.max(1)) - 1;
    let hits = |from: u32, to: u32| first <= to && last >= from;
    hits(0xf4, 0xf7)
        || hits(0x600, 0x603)
        || hits(0x64, 0x64)
        || hits(0xcf9, 0xcf9)
        || hits(0x3f8, 0x3f8)
}

/// A port: one of [`PORTS`] (perhaps moved by one or two), or any.
pub fn port(random: &mut Random) -> u16 {
    match random.below(4) {
        0 => random.next_u64() as u16,
        1 => random.pick(&PORTS).wrapping_add(random.below(3) as u16),
        _ => random.pick(&PORTS),
    }
}

/// An access width in bytes: 1, 2 or 4.
pub fn port_width(random: &mut Random) -> u8 {
    random.pick(&[1, 2, 4])
}

/// MSRs the switcher emulates, refuses or hands to a device model: the
/// TSC, the APIC base, feature control, MTRRs, PAT, SYSENTER, debug
/// control, the TSC deadline, the x2APIC range, EFER and the syscall
/// MSRs, the segment bases, TSC_AUX, AMD's performance counters and SVM
/// MSRs, the KVM clock's, the hypervisor range, and numbers nothing has.
pub const MSRS: [u32; 40] = [
    0x0,
    0x10,
    0x1b,
    0x3a,
    0x8b,
    0xfe,
    0x174,
    0x175,
    0x176,
    0x179,
    0x1a0,
    0x1d9,
    0x200,
    0x20f,
    0x250,
    0x277,
    0x2ff,
    0x480,
    0x6e0,
    0x800,
    0x802,
    0x808,
    0x80b,
    0x830,
    0x832,
    0x838,
    0x83e,
    0x8ff,
    0xc000_0080,
    0xc000_0081,
    0xc000_0082,
    0xc000_0100,
    0xc000_0102,
    0xc000_0103,
    0xc001_0000,
    0xc001_0114,
    0xc001_0117,
    0x4b56_4d00,
    0x4b56_4d01,
    0x4000_0000,
];

/// An MSR: one of [`MSRS`] (perhaps moved by a few), one in the three
/// ranges the CPU's permission map covers, or any.
pub fn msr(random: &mut Random) -> u32 {
    match random.below(6) {
        0 => random.next_u64() as u32,
        1 => random.below(0x2000) as u32,
        2 => 0xc000_0000 + random.below(0x2000) as u32,
        3 => 0xc001_0000 + random.below(0x2000) as u32,
        4 => random.pick(&MSRS).wrapping_add(random.below(4) as u32),
        _ => random.pick(&MSRS),
    }
}

/// Whether writing `msr` can break the guest that writes it (so a round
/// only reads it): EFER, the APIC base and the x2APIC range (its own
/// watchdog timer), the TSC deadline, the segment bases, debug control
/// (single-stepping), PAT, the SYSENTER and syscall targets.
pub fn msr_write_breaks_guest(msr: u32) -> bool {
    matches!(
        msr,
        0x1b | 0x6e0 | 0x800..=0x8ff | 0x1d9 | 0x277 | 0x174..=0x176 | 0xc000_0080..=0xc000_0084 | 0xc000_0100..=0xc000_0102
    )
}

/// A value to write: 0, all ones, one bit, the value read with a bit
/// flipped, or random.
pub fn value(random: &mut Random, read: u64) -> u64 {
    match random.below(5) {
        0 => 0,
        1 => u64::MAX,
        2 => 1 << random.below(64),
        3 => read ^ (1 << random.below(64)),
        _ => random.next_u64(),
    }
}

/// An MMIO access width in bytes: 1, 2, 4 or 8.
pub fn mmio_width(random: &mut Random) -> u8 {
    random.pick(&[1, 2, 4, 8])
}

/// An offset in a register region of `size` bytes for an access of
/// `width`: a register (a multiple of 16, as the APICs lay them out), its
/// neighbour bytes (unaligned), the region's last bytes (so the access
/// straddles its end), or any.
pub fn mmio_offset(random: &mut Random, size: u64, width: u8) -> u64 {
    let size = size.max(PAGE);
    let width = u64::from(width.max(1));
    match random.below(8) {
        0 => random.below(size),
        1 if width > 1 => size - width + 1 + random.below(width - 1),
        2 => size - width,
        3 => (random.below(size / 16) * 16) + 1 + random.below(15),
        _ => random.below(size / 16) * 16,
    }
}

/// The local APIC's registers (offsets in its page): ID, version, TPR,
/// APR, PPR, EOI, RRD, LDR, DFR, SVR, ISR/TMR/IRR, ESR, the LVTs, ICR,
/// the timer's counts and divider, and the x2APIC-only SELF IPI.
pub const LAPIC_REGISTERS: [u64; 28] = [
    0x20, 0x30, 0x80, 0x90, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0, 0x100, 0x170, 0x180, 0x200, 0x270,
    0x280, 0x2f0, 0x300, 0x310, 0x320, 0x330, 0x340, 0x350, 0x360, 0x370, 0x380, 0x390, 0x3e0,
];

/// The IOAPIC's index register values worth selecting: its ID, version
/// and arbitration registers, the redirection table (0x10..0x40), past it.
pub fn ioapic_index(random: &mut Random) -> u32 {
    match random.below(4) {
        0 => random.next_u64() as u32 & 0xff,
        1 => random.pick(&[0, 1, 2, 0x3f, 0x40, 0x41, 0xff]),
        _ => 0x10 + random.below(48) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ending_ports_are_known() {
        assert!(port_write_ends_boot(0xf4, 4));
        assert!(port_write_ends_boot(0xf2, 4), "a dword at 0xf2 covers 0xf4");
        assert!(port_write_ends_boot(0x602, 1));
        assert!(port_write_ends_boot(0x600, 2));
        assert!(port_write_ends_boot(0x64, 1));
        assert!(port_write_ends_boot(0x3f8, 1));
        assert!(!port_write_ends_boot(0x3f9, 1));
        assert!(!port_write_ends_boot(0x60, 1));
        assert!(!port_write_ends_boot(0x70, 2));
        assert!(!port_write_ends_boot(0xffff, 4));
    }

    #[test]
    fn draws_cover_the_tables_and_beyond() {
        let mut random = Random::new(5);
        let ports: std::collections::HashSet<u16> =
            (0..20_000).map(|_| port(&mut random)).collect();
        assert!(PORTS.iter().all(|port| ports.contains(port)));
        assert!(ports.len() > PORTS.len() + 1000, "random ports too");
        let msrs: std::collections::HashSet<u32> = (0..20_000).map(|_| msr(&mut random)).collect();
        assert!(MSRS.iter().all(|msr| msrs.contains(msr)));
        assert!(msr_write_breaks_guest(0xc000_0080) && msr_write_breaks_guest(0x1b));
        assert!(!msr_write_breaks_guest(0x10) && !msr_write_breaks_guest(0xc001_0117));
    }

    #[test]
    fn mmio_offsets_stay_in_or_straddle_the_region() {
        let mut random = Random::new(6);
        let (mut straddling, mut unaligned) = (0, 0);
        for _ in 0..10_000 {
            let width = mmio_width(&mut random);
            let offset = mmio_offset(&mut random, PAGE, width);
            assert!(offset < PAGE, "{offset:#x}");
            straddling += usize::from(offset + u64::from(width) > PAGE);
            unaligned += usize::from(!offset.is_multiple_of(u64::from(width)));
        }
        assert!(
            straddling > 500 && unaligned > 1000,
            "{straddling} {unaligned}"
        );
        assert!((0..1000).all(|_| (0x00..=0xff).contains(&ioapic_index(&mut random))));
        assert!(
            LAPIC_REGISTERS
                .iter()
                .all(|offset| offset % 16 == 0 && *offset < PAGE)
        );
    }
}
