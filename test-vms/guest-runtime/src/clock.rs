//! Time for test VMs: the TSC's rate, and the PIT as a periodic interrupt.
//!
//! [`tsc_rate`] takes the rate from the paravirtual clock where the
//! hypervisor offers KVM's (ours does, with the rate the core measured, the
//! one its world switcher converts TSC ticks to nanoseconds with:
//! [`pvclock_tsc_hz`]) and otherwise measures it against the PIT
//! ([`pit_tsc_hz`]): channel 2, gated through port 0x61 with the speaker
//! off, counts [`CALIBRATION_COUNT`] clocks (10 ms) in mode 0 while the
//! TSC is read until the channel's output (port 0x61 bit 5) rises, as
//! Linux's `pit_calibrate_tsc` does; the shortest of [`CALIBRATION_RUNS`]
//! runs counts (a run during which the program was paused only gets
//! longer). Neither takes interrupts.
//!
//! [`pit_periodic`] makes PIT channel 0 a rate generator (mode 2): ISA IRQ
//! 0, which reaches IOAPIC pin [`PIT_IOAPIC_PIN`] (the MADT's override, on
//! QEMU and under our world switcher alike) and the 8259's IRQ 0;
//! [`pit_stop`] stops it.

use core::cell::UnsafeCell;
use core::fmt;

use guest_api::CPUID_1_ECX_HYPERVISOR;
use guest_api::kvm;

use crate::arch::{cpuid, inb, outb, rdtsc_ordered, wrmsr};

/// The PIT's input clock, in Hz.
pub const PIT_HZ: u64 = 1_193_182;
/// The IOAPIC pin the PIT's channel 0 (ISA IRQ 0) drives.
pub const PIT_IOAPIC_PIN: u8 = 2;
/// PIT clocks in one calibration run: 10 ms.
pub const CALIBRATION_COUNT: u16 = 11_932;
/// Calibration runs against the PIT; the shortest counts.
pub const CALIBRATION_RUNS: u32 = 5;

/// PIT ports: channel 0's and channel 2's data, the mode/command register,
/// and the PC's system control port B (bit 0: channel 2's gate, bit 1:
/// the speaker, bit 5: channel 2's output).
const CHANNEL0: u16 = 0x40;
const CHANNEL2: u16 = 0x42;
const COMMAND: u16 = 0x43;
const PORT_B: u16 = 0x61;
const GATE2: u8 = 1 << 0;
const SPEAKER: u8 = 1 << 1;
const OUTPUT2: u8 = 1 << 5;

/// Where [`tsc_rate`] took the rate from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TscSource {
    /// KVM's paravirtual clock ([`pvclock_tsc_hz`]).
    Pvclock,
    /// Measured against PIT channel 2 ([`pit_tsc_hz`]).
    Pit,
}

impl fmt::Display for TscSource {
    /// `from the paravirtual clock` or `against the PIT`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Pvclock => "from the paravirtual clock",
            Self::Pit => "against the PIT",
        })
    }
}

/// The TSC's rate and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscRate {
    pub hz: u64,
    pub source: TscSource,
}

impl TscRate {
    /// TSC ticks in `microseconds`.
    pub fn ticks(&self, microseconds: u64) -> u64 {
        (u128::from(self.hz) * u128::from(microseconds) / 1_000_000) as u64
    }

    /// Microseconds in `ticks` TSC ticks.
    pub fn microseconds(&self, ticks: u64) -> u64 {
        (u128::from(ticks) * 1_000_000 / u128::from(self.hz.max(1))) as u64
    }

    /// Nanoseconds in `ticks` TSC ticks.
    pub fn nanoseconds(&self, ticks: u64) -> u64 {
        (u128::from(ticks) * 1_000_000_000 / u128::from(self.hz.max(1))) as u64
    }
}

/// The TSC's rate: [`pvclock_tsc_hz`] where offered, else [`pit_tsc_hz`].
pub fn tsc_rate() -> TscRate {
    match pvclock_tsc_hz() {
        Some(hz) => TscRate {
            hz,
            source: TscSource::Pvclock,
        },
        None => TscRate {
            hz: pit_tsc_hz(),
            source: TscSource::Pit,
        },
    }
}

/// KVM's `pvclock_vcpu_time_info`, 32 bytes, which the hypervisor fills
/// (aligned so that it never crosses a page).
#[repr(C, align(32))]
struct TimeInfo(UnsafeCell<[u8; 32]>);

// SAFETY: a test VM runs one CPU; the structure is written by the
// hypervisor and read only through volatile reads in `pvclock_tsc_hz`.
unsafe impl Sync for TimeInfo {}

static TIME_INFO: TimeInfo = TimeInfo(UnsafeCell::new([0; 32]));

/// Where KVM itself puts its signature (ours offers it at
/// [`kvm::CPUID_BASE`]).
const KVM_ITSELF: u32 = 0x4000_0000;

/// The TSC rate KVM's paravirtual clock gives (`(10^9 << 32) /
/// multiplier`, shifted), if the hypervisor offers it (KVM's signature at
/// [`kvm::CPUID_BASE`], as ours does, or at `0x40000000`, as KVM does,
/// with [`kvm::features::CLOCKSOURCE2`] in the next leaf): the time
/// information is enabled at a static of the runtime, read once and
/// disabled again.
pub fn pvclock_tsc_hz() -> Option<u64> {
    if cpuid(1).ecx & CPUID_1_ECX_HYPERVISOR == 0 {
        return None;
    }
    let offers_clock = |leaf: u32| {
        let base = cpuid(leaf);
        let mut signature = [0u8; 12];
        signature[0..4].copy_from_slice(&base.ebx.to_le_bytes());
        signature[4..8].copy_from_slice(&base.ecx.to_le_bytes());
        signature[8..12].copy_from_slice(&base.edx.to_le_bytes());
        signature == kvm::SIGNATURE
            && base.eax > leaf
            && cpuid(leaf + 1).eax & kvm::features::CLOCKSOURCE2 != 0
    };
    if !offers_clock(KVM_ITSELF) && !offers_clock(kvm::CPUID_BASE) {
        return None;
    }
    let info = TIME_INFO.0.get().cast::<u8>();
    // SAFETY: the MSR makes the hypervisor write the 32-byte structure at
    // the address given (bit 0 enables it), a static of ours that no Rust
    // reference points into: it is only read below, with volatile reads.
    unsafe { wrmsr(kvm::MSR_SYSTEM_TIME, info as u64 | 1) };
    // SAFETY: the structure's fields, inside the static, read as
    // plain bytes (any value is valid).
    let (version, multiplier, shift) = unsafe {
        (
            info.cast::<u32>().read_volatile(),
            info.add(24).cast::<u32>().read_volatile(),
            info.add(28).cast::<i8>().read_volatile(),
        )
    };
    // SAFETY: disabling the clock only stops the hypervisor's writes.
    unsafe { wrmsr(kvm::MSR_SYSTEM_TIME, 0) };
    if version == 0 || version & 1 != 0 || multiplier == 0 {
        return None;
    }
    let hz = (1_000_000_000u128 << 32) / u128::from(multiplier);
    let hz = if shift < 0 { hz << -shift } else { hz >> shift };
    u64::try_from(hz).ok().filter(|&hz| hz != 0)
}

/// The TSC's rate measured against PIT channel 2 (see the module
/// documentation). Leaves channel 2 stopped at its terminal count and
/// its gate high.
pub fn pit_tsc_hz() -> u64 {
    let shortest = (0..CALIBRATION_RUNS)
        .map(|_| pit_run(CALIBRATION_COUNT))
        .min()
        .unwrap_or(0);
    shortest * PIT_HZ / u64::from(CALIBRATION_COUNT)
}

/// TSC ticks while channel 2 counts `count` clocks in mode 0.
fn pit_run(count: u16) -> u64 {
    // SAFETY: port B's gate and speaker bits and channel 2 drive only the
    // speaker, which stays off; the refresh and parity bits it also holds
    // are read-only or kept as read.
    unsafe {
        let port_b = inb(PORT_B);
        outb(PORT_B, (port_b & !SPEAKER) | GATE2);
        // Channel 2, low then high byte, mode 0 (its output goes low),
        // binary.
        outb(COMMAND, 0xb0);
        outb(CHANNEL2, count as u8);
        outb(CHANNEL2, (count >> 8) as u8);
    }
    let start = rdtsc_ordered();
    // SAFETY: reading port B has no side effect.
    while unsafe { inb(PORT_B) } & OUTPUT2 == 0 {
        core::hint::spin_loop();
    }
    rdtsc_ordered() - start
}

/// Makes PIT channel 0 a rate generator (mode 2) dividing [`PIT_HZ`] by
/// `divisor` (0 = 65536): an IRQ 0 edge every `divisor` clocks.
pub fn pit_periodic(divisor: u16) {
    // SAFETY: the command port and channel 0's data port program only
    // channel 0, whose output is IRQ 0.
    unsafe {
        // Channel 0, low then high byte, mode 2, binary.
        outb(COMMAND, 0x34);
        outb(CHANNEL0, divisor as u8);
        outb(CHANNEL0, (divisor >> 8) as u8);
    }
}

/// Stops PIT channel 0: a mode-0 command without a count leaves it waiting
/// for one, its output (IRQ 0) low.
pub fn pit_stop() {
    // SAFETY: as `pit_periodic`.
    unsafe { outb(COMMAND, 0x30) }
}
