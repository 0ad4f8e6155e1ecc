//! The virtual local APIC of the VM's one CPU, the bootstrap processor.
//!
//! It is programmed through the xAPIC register page (4 KiB at the
//! `IA32_APIC_BASE` address, 0xfee00000 after reset; aligned 32- and 64-bit
//! accesses only) or, once the guest sets x2APIC mode, through MSRs
//! 0x800–0x8ff with the x2APIC rules (the ICR is one 64-bit MSR, SELF_IPI
//! exists, reserved registers and reserved bits raise `#GP`, which the
//! caller injects). `IA32_APIC_BASE` (0x1b) moves between the disabled,
//! xAPIC and x2APIC modes as the SDM allows; disabling resets every
//! register. `IA32_TSC_DEADLINE` (0x6e0) arms the timer in TSC-deadline
//! mode.
//!
//! Interrupts arrive as messages ([`Lapic::accept_interrupt`] from the
//! IOAPIC, self-IPIs, the timer and error LVT entries) into the IRR; the
//! arbiter ([`crate::interrupts`]) takes the highest one whose priority
//! class beats the PPR into the ISR when the guest can take it. An EOI
//! clears the highest ISR bit and, for a level-triggered vector (TMR set),
//! returns a [`LevelEoi`] the caller hands to the IOAPIC.
//!
//! The timer never ticks: it counts from the TSC value at which it was
//! started, at the APIC bus clock the caller gives (a [`Clock`] against the
//! TSC) divided by the divide configuration. [`Lapic::next_deadline`] says
//! when the world switcher must next call [`Lapic::tick`] (it may sleep
//! until then), and `tick` makes due interrupts pending; periodic expiries
//! are computed from the start, so they never drift. Every register write
//! first brings the timer up to `now`.
//!
//! One CPU means simplifications, all deliberate: INIT, start-up and SMI
//! IPIs are accepted and ignored (there is no other CPU to start, and an
//! INIT of the only CPU is not modelled); an IPI to all-but-self goes
//! nowhere; lowest-priority delivery is fixed delivery to this CPU; the
//! delivery-status bit is always idle because every message is delivered at
//! once; IPIs are always edge-triggered. LINT0 and LINT1 are driven only by
//! the 8259 through LINT0 in ExtINT (virtual-wire) mode, which the arbiter
//! asks about with [`Lapic::passes_extint`]; thermal and performance
//! entries are kept but never fire. Hostile register values never panic:
//! vectors 0–15 in fixed delivery set the ESR instead of becoming pending.

use core::ops::RangeInclusive;

use crate::MmioIgnored;
use crate::clock::Clock;
use crate::msr::GeneralProtection;

/// The register page's address after reset.
pub const DEFAULT_BASE: u64 = 0xfee0_0000;
/// The register page's size.
pub const PAGE_SIZE: u64 = 0x1000;
/// `IA32_APIC_BASE`.
pub const APIC_BASE_MSR: u32 = 0x1b;
/// `IA32_TSC_DEADLINE`.
pub const TSC_DEADLINE_MSR: u32 = 0x6e0;
/// The x2APIC register MSRs: MSR `0x800 + offset / 16` is the xAPIC
/// register at `offset`.
pub const X2APIC_MSRS: RangeInclusive<u32> = 0x800..=0x8ff;

/// `IA32_APIC_BASE` bits.
pub mod base {
    /// This is the bootstrap processor (read-only).
    pub const BSP: u64 = 1 << 8;
    /// x2APIC mode.
    pub const X2APIC: u64 = 1 << 10;
    /// The APIC is enabled.
    pub const ENABLE: u64 = 1 << 11;
}

/// Register offsets in the xAPIC page.
pub mod register {
    pub const ID: u32 = 0x020;
    pub const VERSION: u32 = 0x030;
    pub const TASK_PRIORITY: u32 = 0x080;
    pub const ARBITRATION_PRIORITY: u32 = 0x090;
    pub const PROCESSOR_PRIORITY: u32 = 0x0a0;
    pub const END_OF_INTERRUPT: u32 = 0x0b0;
    pub const REMOTE_READ: u32 = 0x0c0;
    pub const LOGICAL_DESTINATION: u32 = 0x0d0;
    pub const DESTINATION_FORMAT: u32 = 0x0e0;
    pub const SPURIOUS_VECTOR: u32 = 0x0f0;
    /// The first of eight ISR registers (vectors 0–31, 32–63, ...).
    pub const IN_SERVICE: u32 = 0x100;
    /// The first of eight TMR registers.
    pub const TRIGGER_MODE: u32 = 0x180;
    /// The first of eight IRR registers.
    pub const INTERRUPT_REQUEST: u32 = 0x200;
    /// The last IRR register.
    pub const INTERRUPT_REQUEST_LAST: u32 = 0x270;
    pub const ERROR_STATUS: u32 = 0x280;
    pub const INTERRUPT_COMMAND: u32 = 0x300;
    /// xAPIC only: the destination half of the ICR.
    pub const INTERRUPT_COMMAND_HIGH: u32 = 0x310;
    pub const LVT_TIMER: u32 = 0x320;
    pub const LVT_THERMAL: u32 = 0x330;
    pub const LVT_PERFORMANCE: u32 = 0x340;
    pub const LVT_LINT0: u32 = 0x350;
    pub const LVT_LINT1: u32 = 0x360;
    pub const LVT_ERROR: u32 = 0x370;
    pub const TIMER_INITIAL_COUNT: u32 = 0x380;
    pub const TIMER_CURRENT_COUNT: u32 = 0x390;
    pub const TIMER_DIVIDE: u32 = 0x3e0;
    /// x2APIC only.
    pub const SELF_IPI: u32 = 0x3f0;
}

/// LVT entry bits.
pub mod lvt {
    pub const VECTOR: u32 = 0xff;
    pub const DELIVERY_MODE: u32 = 7 << 8;
    pub const NMI: u32 = 4 << 8;
    pub const EXTINT: u32 = 7 << 8;
    pub const MASKED: u32 = 1 << 16;
    pub const TIMER_MODE: u32 = 3 << 17;
    pub const TIMER_PERIODIC: u32 = 1 << 17;
    pub const TIMER_DEADLINE: u32 = 2 << 17;
}

/// ICR bits (the x2APIC layout; the xAPIC one has the destination in bits
/// 56–63 instead of 32–63).
pub mod command {
    pub const FIXED: u64 = 0 << 8;
    pub const NMI: u64 = 4 << 8;
    pub const INIT: u64 = 5 << 8;
    pub const STARTUP: u64 = 6 << 8;
    pub const LOGICAL: u64 = 1 << 11;
    pub const SELF: u64 = 1 << 18;
    pub const ALL_INCLUDING_SELF: u64 = 2 << 18;
    pub const ALL_EXCLUDING_SELF: u64 = 3 << 18;
}

/// ESR bits.
pub mod error {
    pub const SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
    pub const RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
}

/// The spurious-interrupt vector register's software-enable bit.
pub const SOFTWARE_ENABLE: u32 = 1 << 8;

/// Version 0x14 (an integrated APIC), six LVT entries (max LVT 5: timer,
/// thermal, performance, LINT0, LINT1, error; no CMCI), no EOI-broadcast
/// suppression.
pub const APIC_VERSION: u32 = 0x0005_0014;

/// The APIC ID of the one CPU.
const APIC_ID: u32 = 0;

/// LVT indices, in register order.
const TIMER: usize = 0;
const LINT0: usize = 3;
const ERROR: usize = 5;
/// The bits each LVT entry keeps (in register order).
const LVT_WRITABLE: [u32; 6] = [
    0x0007_00ff,
    0x0001_07ff,
    0x0001_07ff,
    0x0001_a7ff,
    0x0001_a7ff,
    0x0001_00ff,
];
/// ICR low bits that exist (x2APIC: the others are reserved).
const COMMAND_WRITABLE: u32 = 0x000c_cfff;
/// Spurious-vector bits that exist: the vector, software enable, focus.
const SPURIOUS_WRITABLE: u32 = 0x3ff;
/// Divide-configuration bits that exist.
const DIVIDE_WRITABLE: u32 = 0xb;

/// How the APIC is reached, from `IA32_APIC_BASE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Globally disabled: it accepts nothing, and the 8259's output goes
    /// straight to the CPU.
    Disabled,
    XApic,
    X2Apic,
}

/// An EOI of a level-triggered vector: the caller passes it to the IOAPIC
/// ([`crate::ioapic::IoApic::end_of_interrupt`]), which clears the remote
/// IRR of the pins using the vector.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelEoi {
    pub vector: u8,
}

/// 256 bits, one a vector, as the ISR, TMR and IRR hold them, with a
/// summary of which of the eight words are not zero (bit `w` set exactly
/// when word `w` has a bit set: only [`Vectors::set`] and
/// [`Vectors::clear`] change the words, and both keep it), so that
/// "anything at all?" is one test.
#[derive(Clone, Copy, Default)]
struct Vectors {
    words: [u32; 8],
    nonzero: u8,
}

impl Vectors {
    fn set(&mut self, vector: u8) {
        let word = usize::from(vector >> 5);
        self.words[word] |= 1 << (vector & 31);
        self.nonzero |= 1 << word;
    }
    fn clear(&mut self, vector: u8) {
        let word = usize::from(vector >> 5);
        self.words[word] &= !(1 << (vector & 31));
        if self.words[word] == 0 {
            self.nonzero &= !(1 << word);
        }
    }
    fn contains(&self, vector: u8) -> bool {
        self.words[usize::from(vector >> 5)] & 1 << (vector & 31) != 0
    }
    fn is_empty(&self) -> bool {
        self.nonzero == 0
    }
    fn highest(&self) -> Option<u8> {
        if self.nonzero == 0 {
            return None;
        }
        let word = 7 - self.nonzero.leading_zeros() as u8;
        let bits = self.words[usize::from(word)];
        Some(word * 32 + (31 - bits.leading_zeros()) as u8)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TimerMode {
    OneShot,
    Periodic,
    Deadline,
}

/// The timer's counting state.
#[derive(Clone, Copy, Default)]
struct Timer {
    initial: u32,
    divide_configuration: u32,
    /// The TSC at which the current run started (or last changed divisor).
    start: u64,
    /// Counts that had passed in this run at `start`.
    counted: u64,
    /// The count (from the run's beginning) at which it next expires;
    /// `None` when not running.
    expiry: Option<u64>,
    /// `IA32_TSC_DEADLINE` in TSC-deadline mode; 0 when disarmed.
    deadline: u64,
}

/// The local APIC.
pub struct Lapic {
    clock: Clock,
    address_mask: u64,
    apic_base: u64,
    id: u32,
    task_priority: u32,
    logical_destination: u32,
    destination_format: u32,
    spurious: u32,
    in_service: Vectors,
    trigger_mode: Vectors,
    requests: Vectors,
    /// What the ESR shows (copied from `errors` at each ESR write).
    error_status: u32,
    /// Errors seen since the last ESR write.
    errors: u32,
    command: u64,
    lvt: [u32; 6],
    timer: Timer,
    nmi: bool,
}

impl Lapic {
    /// A LAPIC in its power-on state whose timer runs at `bus` (the APIC
    /// bus clock against the TSC), in a CPU with `physical_address_bits`
    /// (MAXPHYADDR, clamped to 32–52) for the base address. LINT0 is in
    /// ExtINT mode and unmasked, as PC firmware leaves the BSP (virtual-wire
    /// mode), so the 8259 reaches the CPU before the guest programs the
    /// APIC.
    pub fn new(bus: Clock, physical_address_bits: u8) -> Self {
        let bits = physical_address_bits.clamp(32, 52);
        let mut lapic = Self {
            clock: bus,
            address_mask: ((1u64 << bits) - 1) & !(PAGE_SIZE - 1),
            apic_base: DEFAULT_BASE | base::ENABLE | base::BSP,
            id: 0,
            task_priority: 0,
            logical_destination: 0,
            destination_format: 0,
            spurious: 0,
            in_service: Vectors::default(),
            trigger_mode: Vectors::default(),
            requests: Vectors::default(),
            error_status: 0,
            errors: 0,
            command: 0,
            lvt: [0; 6],
            timer: Timer::default(),
            nmi: false,
        };
        lapic.reset_registers();
        lapic.lvt[LINT0] = lvt::EXTINT;
        lapic
    }

    /// Every register as after reset (the base MSR aside).
    fn reset_registers(&mut self) {
        self.id = APIC_ID << 24;
        self.task_priority = 0;
        self.logical_destination = 0;
        self.destination_format = u32::MAX;
        self.spurious = 0xff;
        self.in_service = Vectors::default();
        self.trigger_mode = Vectors::default();
        self.requests = Vectors::default();
        self.error_status = 0;
        self.errors = 0;
        self.command = 0;
        self.lvt = [lvt::MASKED; 6];
        self.timer = Timer::default();
        self.nmi = false;
    }

    pub fn mode(&self) -> Mode {
        match (
            self.apic_base & base::ENABLE != 0,
            self.apic_base & base::X2APIC != 0,
        ) {
            (true, true) => Mode::X2Apic,
            (true, false) => Mode::XApic,
            (false, _) => Mode::Disabled,
        }
    }

    /// Where the register page is decoded: `Some` in xAPIC mode only.
    pub fn mmio_base(&self) -> Option<u64> {
        (self.mode() == Mode::XApic).then_some(self.page())
    }

    /// Whether a write of register `offset` can move the timer's deadline
    /// ([`Lapic::next_deadline`]) later or make one appear: the LVT timer
    /// entry, the initial count, the divider, and the spurious-vector
    /// register (whose software disable masks every LVT). Any other write
    /// leaves it as it was, or only earlier-than-needed, which costs an
    /// extra look at most.
    pub fn write_moves_deadline(offset: u32) -> bool {
        matches!(
            offset,
            register::LVT_TIMER
                | register::TIMER_INITIAL_COUNT
                | register::TIMER_DIVIDE
                | register::SPURIOUS_VECTOR
        )
    }

    /// The register page `IA32_APIC_BASE` names, whether or not the APIC
    /// decodes it now (globally disabled or in x2APIC mode it does not,
    /// and its accesses are answered [`MmioIgnored::NotDecoded`]).
    pub fn page(&self) -> u64 {
        self.apic_base & self.address_mask
    }

    fn software_enabled(&self) -> bool {
        self.spurious & SOFTWARE_ENABLE != 0
    }

    fn x2apic(&self) -> bool {
        self.mode() == Mode::X2Apic
    }

    // --- Register access --------------------------------------------------

    /// A read of `size` bytes at `offset` in the register page. Registers
    /// are 32 bits wide on 16-byte boundaries; a 64-bit read returns the
    /// register in its low half. Reserved and write-only registers read 0.
    pub fn read_mmio(&self, offset: u64, size: u8, now: u64) -> Result<u64, MmioIgnored> {
        self.check_mmio(offset, size)?;
        if !offset.is_multiple_of(16) {
            return Ok(0);
        }
        Ok(self
            .read_register(offset as u32, now, false)
            .map_or(0, u64::from))
    }

    /// A write of `size` bytes at `offset` in the register page (the low
    /// 32 bits of a 64-bit write reach the register). Writes to read-only
    /// and reserved registers are ignored.
    pub fn write_mmio(
        &mut self,
        offset: u64,
        size: u8,
        value: u64,
        now: u64,
    ) -> Result<Option<LevelEoi>, MmioIgnored> {
        self.check_mmio(offset, size)?;
        if !offset.is_multiple_of(16) {
            return Ok(None);
        }
        // Only a timer register needs the timer brought up to `now` first
        // (a timer that ran out meanwhile raises its interrupt at the
        // caller's next tick, before the guest runs again).
        if Self::write_moves_deadline(offset as u32) {
            self.tick(now);
        }
        Ok(self
            .write_register(offset as u32, value as u32, now, false)
            .unwrap_or(None))
    }

    fn check_mmio(&self, offset: u64, size: u8) -> Result<(), MmioIgnored> {
        if self.mode() != Mode::XApic {
            Err(MmioIgnored::NotDecoded)
        } else if !matches!(size, 4 | 8) {
            Err(MmioIgnored::Size(size))
        } else if offset >= PAGE_SIZE {
            Err(MmioIgnored::OutOfRange(offset))
        } else if !offset.is_multiple_of(u64::from(size)) {
            Err(MmioIgnored::Misaligned(offset))
        } else {
            Ok(())
        }
    }

    /// Whether RDMSR/WRMSR of `msr` belongs here.
    pub fn owns_msr(msr: u32) -> bool {
        msr == APIC_BASE_MSR || msr == TSC_DEADLINE_MSR || X2APIC_MSRS.contains(&msr)
    }

    /// RDMSR of one of [`Lapic::owns_msr`]'s MSRs.
    pub fn read_msr(&self, msr: u32, now: u64) -> Result<u64, GeneralProtection> {
        match msr {
            APIC_BASE_MSR => Ok(self.apic_base),
            TSC_DEADLINE_MSR => Ok(match self.timer_mode() {
                TimerMode::Deadline => self.timer.deadline,
                _ => 0,
            }),
            _ if X2APIC_MSRS.contains(&msr) && self.x2apic() => {
                let offset = (msr - X2APIC_MSRS.start()) << 4;
                if offset == register::INTERRUPT_COMMAND {
                    return Ok(self.command);
                }
                self.read_register(offset, now, true).map(u64::from)
            }
            _ => Err(GeneralProtection),
        }
    }

    /// WRMSR of one of [`Lapic::owns_msr`]'s MSRs.
    pub fn write_msr(
        &mut self,
        msr: u32,
        value: u64,
        now: u64,
    ) -> Result<Option<LevelEoi>, GeneralProtection> {
        self.tick(now);
        match msr {
            APIC_BASE_MSR => self.write_apic_base(value).map(|()| None),
            TSC_DEADLINE_MSR => {
                if self.timer_mode() == TimerMode::Deadline {
                    self.timer.deadline = value;
                    self.tick(now);
                }
                Ok(None)
            }
            _ if X2APIC_MSRS.contains(&msr) && self.x2apic() => {
                let offset = (msr - X2APIC_MSRS.start()) << 4;
                if offset == register::INTERRUPT_COMMAND {
                    if value as u32 & !COMMAND_WRITABLE != 0 {
                        return Err(GeneralProtection);
                    }
                    self.command = value;
                    self.send_command();
                    return Ok(None);
                }
                let low = u32::try_from(value).map_err(|_| GeneralProtection)?;
                self.write_register(offset, low, now, true)
            }
            _ => Err(GeneralProtection),
        }
    }

    /// The register at `offset`, or `Err` for a reserved one (or one the
    /// mode does not have).
    fn read_register(&self, offset: u32, now: u64, x2apic: bool) -> Result<u32, GeneralProtection> {
        use register::*;
        Ok(match offset {
            ID if x2apic => APIC_ID,
            ID => self.id,
            VERSION => APIC_VERSION,
            TASK_PRIORITY => self.task_priority,
            PROCESSOR_PRIORITY => self.processor_priority(),
            LOGICAL_DESTINATION if x2apic => x2apic_logical_id(APIC_ID),
            LOGICAL_DESTINATION => self.logical_destination,
            SPURIOUS_VECTOR => self.spurious,
            IN_SERVICE..=INTERRUPT_REQUEST_LAST if offset.is_multiple_of(16) => {
                let word = ((offset - IN_SERVICE) / 16) as usize;
                let vectors = [&self.in_service, &self.trigger_mode, &self.requests][word / 8];
                vectors.words[word % 8]
            }
            ERROR_STATUS => self.error_status,
            INTERRUPT_COMMAND => self.command as u32,
            LVT_TIMER..=LVT_ERROR if offset.is_multiple_of(16) => {
                self.lvt[((offset - LVT_TIMER) / 16) as usize]
            }
            TIMER_INITIAL_COUNT => self.timer.initial,
            TIMER_CURRENT_COUNT => self.current_count(now),
            TIMER_DIVIDE => self.timer.divide_configuration,
            ARBITRATION_PRIORITY | END_OF_INTERRUPT | REMOTE_READ if !x2apic => 0,
            DESTINATION_FORMAT if !x2apic => self.destination_format,
            INTERRUPT_COMMAND_HIGH if !x2apic => (self.command >> 32) as u32,
            _ => return Err(GeneralProtection),
        })
    }

    /// Writes the register at `offset` (not the x2APIC ICR). In x2APIC
    /// mode reserved bits and read-only registers are `#GP`; in xAPIC mode
    /// reserved bits are dropped and the caller ignores `Err`.
    fn write_register(
        &mut self,
        offset: u32,
        value: u32,
        now: u64,
        x2apic: bool,
    ) -> Result<Option<LevelEoi>, GeneralProtection> {
        use register::*;
        let kept = |bits: u32| {
            if x2apic && value & !bits != 0 {
                Err(GeneralProtection)
            } else {
                Ok(value & bits)
            }
        };
        match offset {
            ID if !x2apic => self.id = value & 0xff00_0000,
            TASK_PRIORITY => self.task_priority = kept(0xff)?,
            END_OF_INTERRUPT => {
                kept(0)?;
                return Ok(self.end_of_interrupt());
            }
            LOGICAL_DESTINATION if !x2apic => self.logical_destination = value & 0xff00_0000,
            DESTINATION_FORMAT if !x2apic => self.destination_format = value | 0x0fff_ffff,
            SPURIOUS_VECTOR => {
                self.spurious = kept(SPURIOUS_WRITABLE)?;
                if !self.software_enabled() {
                    for entry in &mut self.lvt {
                        *entry |= lvt::MASKED;
                    }
                }
            }
            ERROR_STATUS => {
                kept(0)?;
                self.error_status = core::mem::take(&mut self.errors);
            }
            INTERRUPT_COMMAND if !x2apic => {
                self.command = (self.command & !0xffff_ffff) | u64::from(value & COMMAND_WRITABLE);
                self.send_command();
            }
            INTERRUPT_COMMAND_HIGH if !x2apic => {
                self.command = (self.command & 0xffff_ffff) | u64::from(value & 0xff00_0000) << 32;
            }
            LVT_TIMER..=LVT_ERROR if offset.is_multiple_of(16) => {
                let index = ((offset - LVT_TIMER) / 16) as usize;
                let mut entry = kept(LVT_WRITABLE[index])?;
                if !self.software_enabled() {
                    entry |= lvt::MASKED;
                }
                if index == TIMER && (entry ^ self.lvt[TIMER]) & lvt::TIMER_MODE != 0 {
                    // A mode change disarms the timer, as in KVM.
                    self.timer = Timer {
                        divide_configuration: self.timer.divide_configuration,
                        ..Timer::default()
                    };
                }
                self.lvt[index] = entry;
            }
            TIMER_INITIAL_COUNT => self.start_timer(value, now),
            TIMER_DIVIDE => {
                let configuration = kept(DIVIDE_WRITABLE)?;
                if self.timer.expiry.is_some() {
                    self.timer.counted = self.counts_at(now);
                    self.timer.start = now;
                }
                self.timer.divide_configuration = configuration;
            }
            SELF_IPI if x2apic => {
                let vector = kept(0xff)?;
                self.accept_interrupt(vector as u8, false);
            }
            _ => return Err(GeneralProtection),
        }
        Ok(None)
    }

    /// WRMSR `IA32_APIC_BASE`: the SDM's transitions (disabled → xAPIC →
    /// x2APIC, any → disabled, which resets the registers); x2APIC →
    /// xAPIC, disabled → x2APIC, x2APIC without enable and reserved bits
    /// are `#GP`. The BSP bit is read-only.
    fn write_apic_base(&mut self, value: u64) -> Result<(), GeneralProtection> {
        if value & !(self.address_mask | base::BSP | base::X2APIC | base::ENABLE) != 0 {
            return Err(GeneralProtection);
        }
        let old = self.mode();
        let new = match (value & base::ENABLE != 0, value & base::X2APIC != 0) {
            (true, true) => Mode::X2Apic,
            (true, false) => Mode::XApic,
            (false, false) => Mode::Disabled,
            (false, true) => return Err(GeneralProtection),
        };
        match (old, new) {
            (Mode::X2Apic, Mode::XApic) | (Mode::Disabled, Mode::X2Apic) => {
                return Err(GeneralProtection);
            }
            (Mode::XApic | Mode::X2Apic, Mode::Disabled) => self.reset_registers(),
            _ => {}
        }
        self.apic_base = (value & !base::BSP) | base::BSP;
        Ok(())
    }

    // --- Interrupt state --------------------------------------------------

    /// The processor priority: the TPR, or the class of the highest vector
    /// in service if that is higher.
    pub fn processor_priority(&self) -> u32 {
        let in_service = self.in_service.highest().map_or(0, u32::from) & 0xf0;
        if self.task_priority & 0xf0 >= in_service {
            self.task_priority
        } else {
            in_service
        }
    }

    /// CR8 as the guest sees it: TPR bits 7:4.
    #[inline]
    pub fn cr8(&self) -> u64 {
        u64::from(self.task_priority >> 4)
    }

    /// MOV to CR8: sets TPR[7:4] (TPR[3:0] become 0); bits above 3 are
    /// reserved (`#GP`).
    pub fn set_cr8(&mut self, value: u64) -> Result<(), GeneralProtection> {
        if value > 0xf {
            return Err(GeneralProtection);
        }
        self.task_priority = (value as u32) << 4;
        Ok(())
    }

    /// A fixed (or lowest-priority) interrupt message for `vector`,
    /// level-triggered or edge. Dropped when the APIC is disabled
    /// (globally or in software); vectors 0–15 are illegal and set the ESR
    /// instead. Returns whether it is now in the IRR.
    pub fn accept_interrupt(&mut self, vector: u8, level: bool) -> bool {
        if self.mode() == Mode::Disabled || !self.software_enabled() {
            return false;
        }
        if vector < 16 {
            self.record_error(error::RECEIVE_ILLEGAL_VECTOR);
            return false;
        }
        self.requests.set(vector);
        if level {
            self.trigger_mode.set(vector);
        } else {
            self.trigger_mode.clear(vector);
        }
        true
    }

    /// An NMI message (dropped while globally disabled).
    pub fn accept_nmi(&mut self) {
        if self.mode() != Mode::Disabled {
            self.nmi = true;
        }
    }

    /// Whether an 8-bit destination (an IOAPIC redirection entry, an xAPIC
    /// ICR) names this APIC, physical or logical; 0xff is everyone.
    pub fn accepts(&self, destination: u8, logical: bool) -> bool {
        match self.mode() {
            Mode::Disabled => false,
            Mode::X2Apic => {
                let wide = if destination == 0xff {
                    u32::MAX
                } else {
                    u32::from(destination)
                };
                self.accepts_x2apic(wide, logical)
            }
            Mode::XApic if destination == 0xff => true,
            Mode::XApic if !logical => u32::from(destination) == self.id >> 24,
            Mode::XApic => {
                let mine = (self.logical_destination >> 24) as u8;
                if self.destination_format >> 28 == 0xf {
                    destination & mine != 0
                } else {
                    destination >> 4 == mine >> 4 && destination & mine & 0xf != 0
                }
            }
        }
    }

    fn accepts_x2apic(&self, destination: u32, logical: bool) -> bool {
        if destination == u32::MAX {
            return true;
        }
        if !logical {
            return destination == APIC_ID;
        }
        let mine = x2apic_logical_id(APIC_ID);
        destination >> 16 == mine >> 16 && destination & mine & 0xffff != 0
    }

    /// The highest vector in the IRR whose priority class beats the PPR,
    /// if the APIC is enabled.
    pub fn pending_interrupt(&self) -> Option<u8> {
        if self.mode() == Mode::Disabled || !self.software_enabled() {
            return None;
        }
        let vector = self.requests.highest()?;
        (u32::from(vector) & 0xf0 > self.processor_priority() & 0xf0).then_some(vector)
    }

    /// The priority class of the highest requested vector when the TPR
    /// alone holds it back (its class is above what is in service but not
    /// above the TPR's): lowering CR8 below it lets it in. `None` when no
    /// vector waits, one is deliverable, or one in service blocks it.
    pub fn held_by_task_priority(&self) -> Option<u8> {
        if self.mode() == Mode::Disabled || !self.software_enabled() {
            return None;
        }
        let class = self.requests.highest()? >> 4;
        let in_service = self.in_service.highest().map_or(0, |vector| vector >> 4);
        let task = (self.task_priority >> 4) as u8;
        (class > in_service && class <= task).then_some(class)
    }

    /// Whether anything waits for delivery at all (a requested vector or an
    /// NMI), whatever the priorities: a cheap test before
    /// [`Lapic::pending_interrupt`].
    #[inline]
    pub fn has_requests(&self) -> bool {
        // The words' summary: this runs before every entry.
        self.nmi || !self.requests.is_empty()
    }

    /// Takes [`Lapic::pending_interrupt`] for delivery: IRR to ISR.
    pub fn take_interrupt(&mut self) -> Option<u8> {
        let vector = self.pending_interrupt()?;
        self.requests.clear(vector);
        self.in_service.set(vector);
        Some(vector)
    }

    pub fn nmi_pending(&self) -> bool {
        self.nmi
    }

    /// Takes the pending NMI for delivery.
    pub fn take_nmi(&mut self) -> bool {
        core::mem::take(&mut self.nmi)
    }

    /// Whether the 8259's output reaches the CPU: LINT0 unmasked in ExtINT
    /// mode (virtual wire), or the APIC globally disabled.
    pub fn passes_extint(&self) -> bool {
        let lint0 = self.lvt[LINT0];
        self.mode() == Mode::Disabled
            || (lint0 & lvt::MASKED == 0 && lint0 & lvt::DELIVERY_MODE == lvt::EXTINT)
    }

    fn end_of_interrupt(&mut self) -> Option<LevelEoi> {
        let vector = self.in_service.highest()?;
        self.in_service.clear(vector);
        self.trigger_mode
            .contains(vector)
            .then_some(LevelEoi { vector })
    }

    /// Notes an error; an unmasked error LVT entry interrupts (its own
    /// illegal vector only sets another ESR bit).
    fn record_error(&mut self, bit: u32) {
        self.errors |= bit;
        let entry = self.lvt[ERROR];
        if entry & lvt::MASKED == 0 {
            let vector = entry as u8;
            if vector < 16 {
                self.errors |= error::RECEIVE_ILLEGAL_VECTOR;
            } else {
                self.requests.set(vector);
                self.trigger_mode.clear(vector);
            }
        }
    }

    /// Sends the IPI in the ICR.
    fn send_command(&mut self) {
        let command = self.command;
        let vector = command as u8;
        let logical = command & command::LOGICAL != 0;
        let to_self = match (command >> 18) & 3 {
            0 if self.x2apic() => self.accepts_x2apic((command >> 32) as u32, logical),
            0 => self.accepts((command >> 56) as u8, logical),
            1 | 2 => true,
            _ => false,
        };
        match (command >> 8) & 7 {
            // Fixed and lowest priority.
            0 | 1 if vector < 16 => self.record_error(error::SEND_ILLEGAL_VECTOR),
            0 | 1 if to_self => {
                self.accept_interrupt(vector, false);
            }
            4 if to_self => self.accept_nmi(),
            // SMI, INIT, start-up and reserved modes, or nobody addressed.
            _ => {}
        }
    }

    // --- The timer --------------------------------------------------------

    fn timer_mode(&self) -> TimerMode {
        match self.lvt[TIMER] & lvt::TIMER_MODE {
            lvt::TIMER_PERIODIC => TimerMode::Periodic,
            lvt::TIMER_DEADLINE => TimerMode::Deadline,
            // One-shot, and the reserved mode 3 as one-shot.
            _ => TimerMode::OneShot,
        }
    }

    /// The divide configuration's divisor: 2, 4, ... 128, or 1.
    fn divisor(&self) -> u64 {
        let configuration = self.timer.divide_configuration;
        let code = (configuration & 3) | (configuration >> 1 & 4);
        if code == 7 { 1 } else { 2 << code }
    }

    /// The timer's period in TSC ticks while it runs unmasked in periodic
    /// mode: the guest's periodic timer, exactly as programmed.
    pub fn periodic_tsc(&self) -> Option<u64> {
        let running = self.timer.expiry.is_some()
            && self.timer_mode() == TimerMode::Periodic
            && self.lvt[TIMER] & lvt::MASKED == 0;
        running.then(|| {
            self.clock
                .tsc_for(self.period().saturating_mul(self.divisor()))
        })
    }

    /// The periodic reload in counts, at least the minimum period.
    fn period(&self) -> u64 {
        let minimum = self.clock.minimum_period().div_ceil(self.divisor());
        u64::from(self.timer.initial).max(minimum)
    }

    /// Counts that have passed in the current run at `now`.
    fn counts_at(&self, now: u64) -> u64 {
        let bus = self.clock.ticks_in(now.saturating_sub(self.timer.start));
        self.timer.counted.saturating_add(bus / self.divisor())
    }

    /// The TSC at which the current run reaches `count`.
    fn time_of_count(&self, count: u64) -> u64 {
        let bus = count
            .saturating_sub(self.timer.counted)
            .saturating_mul(self.divisor());
        self.timer.start.saturating_add(self.clock.tsc_for(bus))
    }

    fn start_timer(&mut self, initial: u32, now: u64) {
        if self.timer_mode() == TimerMode::Deadline {
            return;
        }
        self.timer.initial = initial;
        self.timer.start = now;
        self.timer.counted = 0;
        self.timer.expiry = match (initial, self.timer_mode()) {
            (0, _) => None,
            (_, TimerMode::Periodic) => Some(self.period()),
            _ => Some(u64::from(initial)),
        };
    }

    fn current_count(&self, now: u64) -> u32 {
        if self.timer.expiry.is_none() {
            return 0;
        }
        let counted = self.counts_at(now);
        let initial = u64::from(self.timer.initial);
        let remaining = match self.timer_mode() {
            TimerMode::Periodic => {
                let period = self.period();
                (period - counted % period).min(initial)
            }
            _ => initial.saturating_sub(counted),
        };
        remaining as u32
    }

    /// Makes the timer's due interrupt pending (at most one, however many
    /// periods passed since the last call) and re-arms a periodic timer
    /// for the next multiple of its period.
    pub fn tick(&mut self, now: u64) {
        let mode = self.timer_mode();
        if mode == TimerMode::Deadline {
            if self.timer.deadline == 0 || now < self.timer.deadline {
                return;
            }
            self.timer.deadline = 0;
        } else {
            let Some(expiry) = self.timer.expiry else {
                return;
            };
            let counted = self.counts_at(now);
            if counted < expiry {
                return;
            }
            self.timer.expiry = (mode == TimerMode::Periodic).then(|| {
                let period = self.period();
                (counted / period).saturating_add(1).saturating_mul(period)
            });
        }
        let entry = self.lvt[TIMER];
        if entry & lvt::MASKED == 0 {
            self.accept_interrupt(entry as u8, false);
        }
    }

    /// The TSC at which [`Lapic::tick`] must next run (perhaps already
    /// past); `None` while the timer is idle or masked (a masked timer is
    /// brought up to date at the register write that unmasks it).
    pub fn next_deadline(&self) -> Option<u64> {
        if self.lvt[TIMER] & lvt::MASKED != 0 {
            return None;
        }
        match self.timer_mode() {
            TimerMode::Deadline => (self.timer.deadline != 0).then_some(self.timer.deadline),
            _ => self.timer.expiry.map(|count| self.time_of_count(count)),
        }
    }
}

/// The x2APIC logical ID: cluster in bits 31:16, one bit of 16 below.
fn x2apic_logical_id(id: u32) -> u32 {
    (id >> 4) << 16 | 1 << (id & 0xf)
}

#[cfg(test)]
mod tests {
    use super::register::*;
    use super::*;

    const TSC_HZ: u64 = 2_600_000_000;
    const BUS_HZ: u64 = 1_000_000_000;

    fn bus(hz: u64) -> Clock {
        Clock::new(TSC_HZ, hz).unwrap()
    }

    /// A software-enabled LAPIC.
    fn lapic() -> Lapic {
        let mut lapic = Lapic::new(bus(BUS_HZ), 48);
        write(&mut lapic, SPURIOUS_VECTOR, 0x1ff, 0);
        lapic
    }

    fn write(lapic: &mut Lapic, offset: u32, value: u32, now: u64) -> Option<LevelEoi> {
        lapic
            .write_mmio(u64::from(offset), 4, u64::from(value), now)
            .unwrap()
    }

    fn read(lapic: &Lapic, offset: u32, now: u64) -> u32 {
        lapic.read_mmio(u64::from(offset), 4, now).unwrap() as u32
    }

    /// The first TSC tick by which `ticks` bus ticks at `hz` have passed.
    fn tsc_after(ticks: u64, hz: u64) -> u64 {
        (u128::from(ticks) * u128::from(TSC_HZ)).div_ceil(u128::from(hz)) as u64
    }

    /// Takes the pending interrupt and ends it, as a guest handler would.
    fn serve(lapic: &mut Lapic, now: u64) -> Option<u8> {
        let vector = lapic.take_interrupt();
        if vector.is_some() {
            let _ = write(lapic, END_OF_INTERRUPT, 0, now);
        }
        vector
    }

    /// Divide-configuration values and their divisors.
    const DIVIDES: [(u32, u64); 5] = [(0xb, 1), (0x0, 2), (0x3, 16), (0x8, 32), (0xa, 128)];

    #[test]
    fn one_shot_fires_when_the_count_runs_out() {
        for (configuration, divisor) in DIVIDES {
            let mut lapic = lapic();
            let start = 1_000_000_007;
            write(&mut lapic, TIMER_DIVIDE, configuration, start);
            write(&mut lapic, LVT_TIMER, 0x40, start);
            write(&mut lapic, TIMER_INITIAL_COUNT, 100_000, start);
            let due = start + tsc_after(100_000 * divisor, BUS_HZ);
            assert_eq!(lapic.next_deadline(), Some(due), "divisor {divisor}");
            assert_eq!(read(&lapic, TIMER_INITIAL_COUNT, start), 100_000);
            assert_eq!(read(&lapic, TIMER_CURRENT_COUNT, start), 100_000);
            let half = start + tsc_after(50_000 * divisor, BUS_HZ);
            assert_eq!(read(&lapic, TIMER_CURRENT_COUNT, half), 50_000);
            lapic.tick(due - 1);
            assert_eq!(lapic.pending_interrupt(), None);
            assert_eq!(read(&lapic, TIMER_CURRENT_COUNT, due - 1), 1);
            lapic.tick(due);
            assert_eq!(serve(&mut lapic, due), Some(0x40));
            assert_eq!(read(&lapic, TIMER_CURRENT_COUNT, due), 0);
            assert_eq!(lapic.next_deadline(), None);
            lapic.tick(due * 3);
            assert_eq!(lapic.pending_interrupt(), None, "one shot only");
        }
    }

    #[test]
    fn a_periodic_timer_says_its_period_unless_masked_or_one_shot() {
        let hz = 100_000_000;
        let mut lapic = Lapic::new(bus(hz), 48);
        write(&mut lapic, SPURIOUS_VECTOR, 0x1ff, 0);
        write(&mut lapic, TIMER_DIVIDE, 0x3, 0); // divide by 16
        write(&mut lapic, LVT_TIMER, 0x31 | lvt::TIMER_PERIODIC, 0);
        assert_eq!(lapic.periodic_tsc(), None, "not started");
        write(&mut lapic, TIMER_INITIAL_COUNT, 62_500, 0);
        // 62,500 x 16 bus ticks at 100 MHz: 10 ms.
        assert_eq!(lapic.periodic_tsc(), Some(tsc_after(1_000_000, hz)));
        write(
            &mut lapic,
            LVT_TIMER,
            0x31 | lvt::TIMER_PERIODIC | lvt::MASKED,
            0,
        );
        assert_eq!(lapic.periodic_tsc(), None, "masked");
        write(&mut lapic, LVT_TIMER, 0x31, 0);
        write(&mut lapic, TIMER_INITIAL_COUNT, 62_500, 0);
        assert_eq!(lapic.periodic_tsc(), None, "one-shot");
    }

    #[test]
    fn periodic_timer_does_not_drift_over_ten_thousand_periods() {
        // 7.8 TSC ticks per bus tick, so every expiry needs rounding.
        let hz = 333_333_333;
        for (configuration, divisor) in [(0x3, 16), (0xb, 1), (0x9, 64)] {
            let mut lapic = Lapic::new(bus(hz), 48);
            write(&mut lapic, SPURIOUS_VECTOR, 0x1ff, 0);
            let start = 12_345;
            let initial = 1_234_567 / divisor as u32;
            write(&mut lapic, TIMER_DIVIDE, configuration, start);
            write(&mut lapic, LVT_TIMER, 0x31 | lvt::TIMER_PERIODIC, start);
            write(&mut lapic, TIMER_INITIAL_COUNT, initial, start);
            let period = u64::from(initial) * divisor;
            for k in 1..=10_000u64 {
                let due = lapic.next_deadline().unwrap();
                assert_eq!(due, start + tsc_after(k * period, hz), "period {k}");
                // The world switcher wakes a little late, differently each
                // time; that must not move the next expiry.
                let woken = due + k % 7 * 100;
                lapic.tick(woken);
                assert_eq!(serve(&mut lapic, woken), Some(0x31));
                assert_eq!(lapic.pending_interrupt(), None);
            }
            // Within one TSC tick of the exact 10,000th expiry.
            let exact = u128::from(start) * u128::from(hz)
                + 10_000 * u128::from(period) * u128::from(TSC_HZ);
            let last = u128::from(start + tsc_after(10_000 * period, hz)) * u128::from(hz);
            assert!(last >= exact && last - exact < u128::from(hz));
        }
    }

    #[test]
    fn periodic_timer_reads_its_count_and_coalesces_missed_periods() {
        let mut lapic = lapic();
        write(&mut lapic, TIMER_DIVIDE, 0xb, 0);
        write(&mut lapic, LVT_TIMER, 0x32 | lvt::TIMER_PERIODIC, 0);
        write(&mut lapic, TIMER_INITIAL_COUNT, 1_000_000, 0);
        let at = |count: u64| tsc_after(count, BUS_HZ);
        assert_eq!(read(&lapic, TIMER_CURRENT_COUNT, at(2_250_000)), 750_000);
        // Three and a half periods later: one interrupt, then the next
        // expiry is the fourth period, not one period from now.
        lapic.tick(at(3_500_000));
        assert_eq!(serve(&mut lapic, at(3_500_000)), Some(0x32));
        assert_eq!(lapic.next_deadline(), Some(at(4_000_000)));
        // Writing 0 stops it.
        write(&mut lapic, TIMER_INITIAL_COUNT, 0, at(3_600_000));
        assert_eq!(lapic.next_deadline(), None);
        assert_eq!(read(&lapic, TIMER_CURRENT_COUNT, at(3_700_000)), 0);
    }

    #[test]
    fn periodic_timer_has_a_minimum_period() {
        let mut lapic = lapic();
        write(&mut lapic, TIMER_DIVIDE, 0xb, 0);
        write(&mut lapic, LVT_TIMER, 0x33 | lvt::TIMER_PERIODIC, 0);
        write(&mut lapic, TIMER_INITIAL_COUNT, 1, 0);
        // 100 µs of a 1 GHz bus, not one bus tick.
        assert_eq!(lapic.next_deadline(), Some(tsc_after(100_000, BUS_HZ)));
        assert_eq!(read(&lapic, TIMER_CURRENT_COUNT, 5), 1);
    }

    #[test]
    fn divide_changes_keep_the_remaining_count() {
        let mut lapic = lapic();
        write(&mut lapic, TIMER_DIVIDE, 0xb, 0);
        write(&mut lapic, LVT_TIMER, 0x34, 0);
        write(&mut lapic, TIMER_INITIAL_COUNT, 1_000_000, 0);
        let t = tsc_after(400_000, BUS_HZ);
        write(&mut lapic, TIMER_DIVIDE, 0x0, t);
        assert_eq!(read(&lapic, TIMER_DIVIDE, t), 0);
        assert_eq!(read(&lapic, TIMER_CURRENT_COUNT, t), 600_000);
        assert_eq!(
            lapic.next_deadline(),
            Some(t + tsc_after(1_200_000, BUS_HZ))
        );
    }

    #[test]
    fn tsc_deadline_mode() {
        let mut lapic = lapic();
        // Outside TSC-deadline mode the MSR is ignored.
        assert_eq!(lapic.write_msr(TSC_DEADLINE_MSR, 5_000, 0), Ok(None));
        assert_eq!(lapic.read_msr(TSC_DEADLINE_MSR, 0), Ok(0));
        write(&mut lapic, LVT_TIMER, 0x45 | lvt::TIMER_DEADLINE, 0);
        lapic.write_msr(TSC_DEADLINE_MSR, 1_000_000, 10).unwrap();
        assert_eq!(lapic.read_msr(TSC_DEADLINE_MSR, 10), Ok(1_000_000));
        assert_eq!(lapic.next_deadline(), Some(1_000_000));
        lapic.tick(999_999);
        assert_eq!(lapic.pending_interrupt(), None);
        lapic.tick(1_000_000);
        assert_eq!(serve(&mut lapic, 1_000_000), Some(0x45));
        assert_eq!(lapic.read_msr(TSC_DEADLINE_MSR, 1_000_001), Ok(0));
        assert_eq!(lapic.next_deadline(), None);
        // A deadline already past fires at once.
        lapic.write_msr(TSC_DEADLINE_MSR, 5, 2_000_000).unwrap();
        assert_eq!(serve(&mut lapic, 2_000_000), Some(0x45));
        // The initial count is ignored in this mode.
        write(&mut lapic, TIMER_INITIAL_COUNT, 100, 2_000_000);
        assert_eq!(read(&lapic, TIMER_INITIAL_COUNT, 2_000_000), 0);
        // Writing 0 disarms; so does a mode change.
        lapic
            .write_msr(TSC_DEADLINE_MSR, 3_000_000, 2_000_000)
            .unwrap();
        lapic.write_msr(TSC_DEADLINE_MSR, 0, 2_000_000).unwrap();
        assert_eq!(lapic.next_deadline(), None);
        lapic
            .write_msr(TSC_DEADLINE_MSR, 3_000_000, 2_000_000)
            .unwrap();
        write(&mut lapic, LVT_TIMER, 0x45, 2_000_001);
        assert_eq!(lapic.next_deadline(), None);
        lapic.tick(4_000_000);
        assert_eq!(lapic.pending_interrupt(), None);
    }

    #[test]
    fn a_masked_timer_counts_but_does_not_interrupt() {
        let mut lapic = lapic();
        write(&mut lapic, TIMER_DIVIDE, 0xb, 0);
        write(&mut lapic, LVT_TIMER, 0x46 | lvt::MASKED, 0);
        write(&mut lapic, TIMER_INITIAL_COUNT, 1000, 0);
        assert_eq!(lapic.next_deadline(), None, "nothing to wake up for");
        let due = tsc_after(1000, BUS_HZ);
        assert_eq!(read(&lapic, TIMER_CURRENT_COUNT, due), 0);
        // Unmasking after the expiry does not deliver it late.
        write(&mut lapic, LVT_TIMER, 0x46, due + 20);
        lapic.tick(due + 30);
        assert_eq!(lapic.pending_interrupt(), None);

        // A masked periodic timer keeps its phase.
        let mut lapic = self::lapic();
        write(&mut lapic, TIMER_DIVIDE, 0xb, 0);
        write(
            &mut lapic,
            LVT_TIMER,
            0x47 | lvt::TIMER_PERIODIC | lvt::MASKED,
            0,
        );
        write(&mut lapic, TIMER_INITIAL_COUNT, 1_000_000, 0);
        write(
            &mut lapic,
            LVT_TIMER,
            0x47 | lvt::TIMER_PERIODIC,
            tsc_after(2_500_000, BUS_HZ),
        );
        assert_eq!(lapic.pending_interrupt(), None);
        assert_eq!(lapic.next_deadline(), Some(tsc_after(3_000_000, BUS_HZ)));
        lapic.tick(tsc_after(3_000_000, BUS_HZ));
        assert_eq!(lapic.pending_interrupt(), Some(0x47));
    }

    #[test]
    fn task_priority_blocks_lower_classes() {
        let mut lapic = lapic();
        assert!(lapic.accept_interrupt(0x35, false));
        write(&mut lapic, TASK_PRIORITY, 0x40, 0);
        assert_eq!(read(&lapic, PROCESSOR_PRIORITY, 0), 0x40);
        assert_eq!(lapic.pending_interrupt(), None);
        write(&mut lapic, TASK_PRIORITY, 0x3f, 0);
        assert_eq!(lapic.pending_interrupt(), None, "same class");
        write(&mut lapic, TASK_PRIORITY, 0x2f, 0);
        assert_eq!(lapic.pending_interrupt(), Some(0x35));
        // CR8 is TPR[7:4].
        assert_eq!(lapic.cr8(), 2);
        lapic.set_cr8(3).unwrap();
        assert_eq!(read(&lapic, TASK_PRIORITY, 0), 0x30);
        assert_eq!(lapic.pending_interrupt(), None);
        assert_eq!(lapic.set_cr8(0x10), Err(GeneralProtection));
        lapic.set_cr8(0).unwrap();
        assert_eq!(lapic.take_interrupt(), Some(0x35));
    }

    #[test]
    fn nested_interrupts_end_in_priority_order() {
        let mut lapic = lapic();
        let isr = |lapic: &Lapic, vector: u32| {
            read(lapic, IN_SERVICE + vector / 32 * 16, 0) & 1 << (vector % 32) != 0
        };
        lapic.accept_interrupt(0x30, false);
        assert_eq!(lapic.take_interrupt(), Some(0x30));
        assert_eq!(read(&lapic, PROCESSOR_PRIORITY, 0), 0x30);
        // A higher class nests; lower ones wait.
        lapic.accept_interrupt(0x50, false);
        assert_eq!(lapic.take_interrupt(), Some(0x50));
        lapic.accept_interrupt(0x40, false);
        lapic.accept_interrupt(0x35, false);
        assert_eq!(lapic.pending_interrupt(), None);
        assert!(isr(&lapic, 0x30) && isr(&lapic, 0x50));
        // EOI ends the highest first.
        assert_eq!(write(&mut lapic, END_OF_INTERRUPT, 0, 0), None);
        assert!(isr(&lapic, 0x30) && !isr(&lapic, 0x50));
        assert_eq!(lapic.take_interrupt(), Some(0x40));
        let _ = write(&mut lapic, END_OF_INTERRUPT, 0, 0);
        assert_eq!(lapic.pending_interrupt(), None, "0x35 is 0x30's class");
        let _ = write(&mut lapic, END_OF_INTERRUPT, 0, 0);
        assert!(!isr(&lapic, 0x30));
        assert_eq!(lapic.take_interrupt(), Some(0x35));
        let _ = write(&mut lapic, END_OF_INTERRUPT, 0, 0);
        assert_eq!(
            write(&mut lapic, END_OF_INTERRUPT, 0, 0),
            None,
            "nothing in service"
        );
        assert_eq!(read(&lapic, PROCESSOR_PRIORITY, 0), 0);
    }

    #[test]
    fn level_triggered_eoi_is_broadcast() {
        let mut lapic = lapic();
        lapic.accept_interrupt(0x61, true);
        assert_eq!(read(&lapic, TRIGGER_MODE + 3 * 16, 0), 1 << 1);
        assert_eq!(read(&lapic, INTERRUPT_REQUEST + 3 * 16, 0), 1 << 1);
        assert_eq!(lapic.take_interrupt(), Some(0x61));
        assert_eq!(
            write(&mut lapic, END_OF_INTERRUPT, 0, 0),
            Some(LevelEoi { vector: 0x61 })
        );
        lapic.accept_interrupt(0x61, false);
        lapic.take_interrupt();
        assert_eq!(write(&mut lapic, END_OF_INTERRUPT, 0, 0), None);
    }

    #[test]
    fn self_ipis() {
        let mut lapic = lapic();
        let send = |lapic: &mut Lapic, destination: u32, low: u64| {
            write(lapic, INTERRUPT_COMMAND_HIGH, destination << 24, 0);
            write(lapic, INTERRUPT_COMMAND, low as u32, 0);
        };
        send(&mut lapic, 0, command::SELF | 0x41);
        assert_eq!(serve(&mut lapic, 0), Some(0x41));
        send(&mut lapic, 0, command::ALL_INCLUDING_SELF | 0x42);
        assert_eq!(serve(&mut lapic, 0), Some(0x42));
        send(&mut lapic, 0, command::ALL_EXCLUDING_SELF | 0x43);
        assert_eq!(serve(&mut lapic, 0), None);
        send(&mut lapic, 0, command::FIXED | 0x44);
        assert_eq!(serve(&mut lapic, 0), Some(0x44), "physical destination 0");
        send(&mut lapic, 1, 0x45);
        assert_eq!(serve(&mut lapic, 0), None, "APIC 1 does not exist");
        send(&mut lapic, 0xff, 0x46);
        assert_eq!(serve(&mut lapic, 0), Some(0x46), "broadcast");
        write(&mut lapic, LOGICAL_DESTINATION, 0x0100_0000, 0);
        send(&mut lapic, 0x03, command::LOGICAL | 0x47);
        assert_eq!(serve(&mut lapic, 0), Some(0x47), "flat logical");
        send(&mut lapic, 0x02, command::LOGICAL | 0x48);
        assert_eq!(serve(&mut lapic, 0), None);
        assert_eq!(read(&lapic, INTERRUPT_COMMAND, 0) & 1 << 12, 0, "idle");
        // Vectors 0-15 are illegal.
        send(&mut lapic, 0, command::SELF | 0x05);
        assert_eq!(serve(&mut lapic, 0), None);
        write(&mut lapic, ERROR_STATUS, 0, 0);
        assert_eq!(read(&lapic, ERROR_STATUS, 0), error::SEND_ILLEGAL_VECTOR);
        // NMI to self; INIT and start-up go nowhere.
        send(&mut lapic, 0, command::SELF | command::NMI);
        assert!(lapic.take_nmi());
        send(&mut lapic, 0, command::ALL_INCLUDING_SELF | command::INIT);
        send(
            &mut lapic,
            0,
            command::ALL_EXCLUDING_SELF | command::STARTUP | 0x9a,
        );
        assert!(!lapic.nmi_pending());
        assert_eq!(lapic.pending_interrupt(), None);
        // The INIT-SIPI-SIPI a kernel sends to bring up an absent CPU
        // (APIC ID 1, as Linux does to each CPU the MADT lists): nothing
        // happens, no error is recorded, and this CPU's state is as it was.
        let before = (
            read(&lapic, ERROR_STATUS, 0),
            read(&lapic, TASK_PRIORITY, 0),
            read(&lapic, SPURIOUS_VECTOR, 0),
        );
        send(&mut lapic, 1, command::INIT | 1 << 14);
        send(&mut lapic, 1, command::INIT | 1 << 15);
        send(&mut lapic, 1, command::STARTUP | 0x9a);
        send(&mut lapic, 1, command::STARTUP | 0x9a);
        // And to an absent CPU by logical destination.
        send(&mut lapic, 0x02, command::LOGICAL | command::INIT);
        assert!(!lapic.nmi_pending());
        assert_eq!(lapic.pending_interrupt(), None);
        assert_eq!(
            (
                read(&lapic, ERROR_STATUS, 0),
                read(&lapic, TASK_PRIORITY, 0),
                read(&lapic, SPURIOUS_VECTOR, 0),
            ),
            before
        );
        // A fixed IPI to the absent CPU is not taken here either.
        send(&mut lapic, 1, command::FIXED | 0x45);
        assert_eq!(lapic.pending_interrupt(), None);
    }

    #[test]
    fn illegal_vectors_set_the_esr_and_may_interrupt() {
        let mut lapic = lapic();
        write(&mut lapic, LVT_ERROR, 0xfe, 0);
        assert!(!lapic.accept_interrupt(3, false));
        assert_eq!(read(&lapic, ERROR_STATUS, 0), 0, "until the ESR is written");
        write(&mut lapic, ERROR_STATUS, 0, 0);
        assert_eq!(read(&lapic, ERROR_STATUS, 0), error::RECEIVE_ILLEGAL_VECTOR);
        assert_eq!(lapic.take_interrupt(), Some(0xfe));
        write(&mut lapic, ERROR_STATUS, 0, 0);
        assert_eq!(read(&lapic, ERROR_STATUS, 0), 0);
        // A timer with an illegal vector sets the ESR too.
        write(&mut lapic, LVT_ERROR, lvt::MASKED, 0);
        write(&mut lapic, LVT_TIMER, 0x0e, 0);
        write(&mut lapic, TIMER_INITIAL_COUNT, 10, 0);
        lapic.tick(1_000);
        write(&mut lapic, ERROR_STATUS, 0, 1_000);
        assert_eq!(read(&lapic, ERROR_STATUS, 0), error::RECEIVE_ILLEGAL_VECTOR);
        assert_eq!(lapic.pending_interrupt(), None);
    }

    #[test]
    fn software_disable_masks_entries_and_drops_interrupts() {
        let mut lapic = Lapic::new(bus(BUS_HZ), 48);
        assert_eq!(read(&lapic, SPURIOUS_VECTOR, 0), 0xff);
        assert!(lapic.passes_extint(), "virtual wire after power-on");
        assert!(!lapic.accept_interrupt(0x40, false));
        write(&mut lapic, LVT_TIMER, 0x40, 0);
        assert_eq!(read(&lapic, LVT_TIMER, 0), 0x40 | lvt::MASKED);
        write(&mut lapic, SPURIOUS_VECTOR, 0x1ff, 0);
        write(&mut lapic, LVT_TIMER, 0x40, 0);
        assert_eq!(read(&lapic, LVT_TIMER, 0), 0x40);
        assert!(lapic.accept_interrupt(0x41, false));
        write(&mut lapic, SPURIOUS_VECTOR, 0xff, 0);
        assert_eq!(read(&lapic, LVT_TIMER, 0), 0x40 | lvt::MASKED);
        assert!(!lapic.passes_extint());
        assert_eq!(lapic.pending_interrupt(), None, "held while disabled");
        write(&mut lapic, SPURIOUS_VECTOR, 0x1ff, 0);
        assert_eq!(lapic.take_interrupt(), Some(0x41));
    }

    #[test]
    fn register_page_accesses() {
        let mut lapic = lapic();
        assert_eq!(lapic.mmio_base(), Some(DEFAULT_BASE));
        assert_eq!(lapic.read_mmio(0x30, 2, 0), Err(MmioIgnored::Size(2)));
        assert_eq!(
            lapic.read_mmio(0x34, 8, 0),
            Err(MmioIgnored::Misaligned(0x34))
        );
        assert_eq!(
            lapic.read_mmio(0x1000, 4, 0),
            Err(MmioIgnored::OutOfRange(0x1000))
        );
        assert_eq!(lapic.read_mmio(0x30, 8, 0), Ok(u64::from(APIC_VERSION)));
        assert_eq!(lapic.read_mmio(0x34, 4, 0), Ok(0), "between registers");
        assert_eq!(
            lapic.write_mmio(0x80, 8, 0xffff_ffff_0000_0025, 0),
            Ok(None)
        );
        assert_eq!(read(&lapic, TASK_PRIORITY, 0), 0x25);
        // Read-only and reserved registers ignore writes.
        write(&mut lapic, VERSION, 0, 0);
        write(&mut lapic, SELF_IPI, 0x40, 0);
        assert_eq!(read(&lapic, VERSION, 0), APIC_VERSION);
        assert_eq!(lapic.pending_interrupt(), None);
        assert_eq!(read(&lapic, DESTINATION_FORMAT, 0), u32::MAX);
        write(&mut lapic, ID, 0x0500_0000, 0);
        assert_eq!(read(&lapic, ID, 0), 0x0500_0000);
        // The page moves with the base MSR.
        lapic
            .write_msr(APIC_BASE_MSR, 0xfed0_0000 | base::ENABLE, 0)
            .unwrap();
        assert_eq!(lapic.mmio_base(), Some(0xfed0_0000));
        assert_eq!(lapic.read_msr(APIC_BASE_MSR, 0), Ok(0xfed0_0900));
    }

    #[test]
    fn destinations() {
        let mut lapic = lapic();
        assert!(lapic.accepts(0, false) && lapic.accepts(0xff, false));
        assert!(!lapic.accepts(1, false));
        write(&mut lapic, LOGICAL_DESTINATION, 0x2100_0000, 0);
        write(&mut lapic, DESTINATION_FORMAT, 0x0fff_ffff, 0);
        assert!(lapic.accepts(0x23, true), "cluster 2, member bit 0");
        assert!(!lapic.accepts(0x13, true), "another cluster");
        assert!(!lapic.accepts(0x22, true));
        lapic
            .write_msr(APIC_BASE_MSR, DEFAULT_BASE | base::ENABLE | base::X2APIC, 0)
            .unwrap();
        assert!(lapic.accepts(0, false) && lapic.accepts(0xff, false));
        assert!(lapic.accepts(1, true) && !lapic.accepts(2, true));
        lapic.write_msr(APIC_BASE_MSR, DEFAULT_BASE, 0).unwrap();
        assert!(!lapic.accepts(0xff, false), "disabled");
    }

    #[test]
    fn apic_base_transitions_follow_the_sdm() {
        let mut lapic = lapic();
        let set = |lapic: &mut Lapic, value: u64| lapic.write_msr(APIC_BASE_MSR, value, 0);
        let xapic = DEFAULT_BASE | base::ENABLE;
        let x2apic = xapic | base::X2APIC;
        assert_eq!(
            lapic.read_msr(0x802, 0),
            Err(GeneralProtection),
            "not x2APIC"
        );
        lapic.accept_interrupt(0x70, false);
        write(&mut lapic, TASK_PRIORITY, 0x10, 0);
        // Disabling resets the registers.
        assert_eq!(set(&mut lapic, DEFAULT_BASE), Ok(None));
        assert_eq!(lapic.mode(), Mode::Disabled);
        assert!(lapic.passes_extint());
        assert_eq!(lapic.read_mmio(0x30, 4, 0), Err(MmioIgnored::NotDecoded));
        assert_eq!(
            set(&mut lapic, x2apic),
            Err(GeneralProtection),
            "disabled to x2APIC"
        );
        assert_eq!(
            set(&mut lapic, DEFAULT_BASE | base::X2APIC),
            Err(GeneralProtection)
        );
        assert_eq!(set(&mut lapic, xapic), Ok(None));
        assert_eq!(read(&lapic, TASK_PRIORITY, 0), 0);
        assert_eq!(read(&lapic, SPURIOUS_VECTOR, 0), 0xff);
        assert_eq!(read(&lapic, LVT_LINT0, 0), lvt::MASKED);
        write(&mut lapic, SPURIOUS_VECTOR, 0x1ff, 0);
        assert_eq!(lapic.pending_interrupt(), None, "the IRR was reset");
        // Reserved bits: the low byte, bit 9, above MAXPHYADDR.
        for bad in [xapic | 1, xapic | 1 << 9, xapic | 1 << 48] {
            assert_eq!(set(&mut lapic, bad), Err(GeneralProtection), "{bad:#x}");
        }
        // The BSP bit cannot be cleared.
        assert_eq!(set(&mut lapic, xapic & !base::BSP), Ok(None));
        assert_eq!(lapic.read_msr(APIC_BASE_MSR, 0), Ok(xapic | base::BSP));
        // xAPIC to x2APIC keeps the state, and there is no way back but
        // through disabled.
        lapic.accept_interrupt(0x71, false);
        assert_eq!(set(&mut lapic, x2apic), Ok(None));
        assert_eq!(lapic.mode(), Mode::X2Apic);
        assert_eq!(lapic.pending_interrupt(), Some(0x71));
        assert_eq!(lapic.read_mmio(0x30, 4, 0), Err(MmioIgnored::NotDecoded));
        assert_eq!(lapic.mmio_base(), None);
        assert_eq!(set(&mut lapic, xapic), Err(GeneralProtection));
        assert_eq!(set(&mut lapic, DEFAULT_BASE), Ok(None));
        assert_eq!(set(&mut lapic, xapic), Ok(None));
    }

    #[test]
    fn x2apic_registers_follow_the_x2apic_rules() {
        let mut lapic = lapic();
        lapic
            .write_msr(APIC_BASE_MSR, DEFAULT_BASE | base::ENABLE | base::X2APIC, 0)
            .unwrap();
        let msr = |offset: u32| 0x800 + offset / 16;
        assert_eq!(lapic.read_msr(msr(ID), 0), Ok(0));
        assert_eq!(lapic.read_msr(msr(VERSION), 0), Ok(u64::from(APIC_VERSION)));
        assert_eq!(lapic.read_msr(msr(LOGICAL_DESTINATION), 0), Ok(1));
        for read_only in [
            ID,
            VERSION,
            PROCESSOR_PRIORITY,
            LOGICAL_DESTINATION,
            IN_SERVICE,
            TIMER_CURRENT_COUNT,
        ] {
            assert_eq!(
                lapic.write_msr(msr(read_only), 0, 0),
                Err(GeneralProtection),
                "{read_only:#x}"
            );
        }
        for reserved in [
            ARBITRATION_PRIORITY,
            REMOTE_READ,
            DESTINATION_FORMAT,
            INTERRUPT_COMMAND_HIGH,
            0x3d0,
            0x40,
        ] {
            assert_eq!(
                lapic.read_msr(msr(reserved), 0),
                Err(GeneralProtection),
                "{reserved:#x}"
            );
            assert_eq!(
                lapic.write_msr(msr(reserved), 0, 0),
                Err(GeneralProtection),
                "{reserved:#x}"
            );
        }
        // Write-only registers.
        assert_eq!(
            lapic.read_msr(msr(END_OF_INTERRUPT), 0),
            Err(GeneralProtection)
        );
        assert_eq!(lapic.read_msr(msr(SELF_IPI), 0), Err(GeneralProtection));
        // Reserved bits.
        assert_eq!(
            lapic.write_msr(msr(END_OF_INTERRUPT), 1, 0),
            Err(GeneralProtection)
        );
        assert_eq!(
            lapic.write_msr(msr(TASK_PRIORITY), 0x100, 0),
            Err(GeneralProtection)
        );
        assert_eq!(
            lapic.write_msr(msr(TASK_PRIORITY), 1 << 32, 0),
            Err(GeneralProtection)
        );
        assert_eq!(
            lapic.write_msr(msr(SPURIOUS_VECTOR), 0x11ff, 0),
            Err(GeneralProtection)
        );
        assert_eq!(
            lapic.write_msr(msr(ERROR_STATUS), 1, 0),
            Err(GeneralProtection)
        );
        assert_eq!(
            lapic.write_msr(msr(LVT_TIMER), 0x40 | 1 << 12, 0),
            Err(GeneralProtection)
        );
        assert_eq!(
            lapic.write_msr(msr(TIMER_DIVIDE), 4, 0),
            Err(GeneralProtection)
        );
        assert_eq!(
            lapic.write_msr(msr(SELF_IPI), 0x140, 0),
            Err(GeneralProtection)
        );
        assert_eq!(
            lapic.write_msr(msr(INTERRUPT_COMMAND), 1 << 13 | 0x40, 0),
            Err(GeneralProtection)
        );
        assert_eq!(lapic.write_msr(msr(TASK_PRIORITY), 0x20, 0), Ok(None));
        assert_eq!(lapic.read_msr(msr(TASK_PRIORITY), 0), Ok(0x20));
        // The ICR is one 64-bit MSR with a 32-bit destination.
        let icr = 0x50;
        assert_eq!(lapic.write_msr(msr(INTERRUPT_COMMAND), icr, 0), Ok(None));
        assert_eq!(lapic.read_msr(msr(INTERRUPT_COMMAND), 0), Ok(icr));
        assert_eq!(lapic.take_interrupt(), Some(0x50));
        lapic
            .write_msr(msr(INTERRUPT_COMMAND), 1 << 32 | 0x61, 0)
            .unwrap();
        assert_eq!(
            lapic.pending_interrupt(),
            None,
            "x2APIC ID 1 does not exist"
        );
        lapic
            .write_msr(msr(INTERRUPT_COMMAND), 0xffff_ffff << 32 | 0x62, 0)
            .unwrap();
        assert_eq!(lapic.pending_interrupt(), Some(0x62), "broadcast");
        lapic.write_msr(msr(SELF_IPI), 0x73, 0).unwrap();
        assert_eq!(lapic.pending_interrupt(), Some(0x73));
        // EOI of 0x50 through the MSR.
        assert_eq!(lapic.write_msr(msr(END_OF_INTERRUPT), 0, 0), Ok(None));
        assert_eq!(lapic.read_msr(msr(IN_SERVICE) + 2, 0), Ok(0));
    }

    proptest::proptest! {
        /// Random register traffic from a hostile guest never panics, and
        /// nothing it does makes a vector below 16 deliverable.
        #[test]
        fn hostile_register_traffic_is_harmless(
            operations in proptest::collection::vec(
                (0u8..7, 0u64..0x1010, proptest::prelude::any::<u64>(), -1_000i64..3_000_000),
                1..300,
            )
        ) {
            let mut lapic = lapic();
            let mut now = 1u64 << 40;
            for (kind, place, value, step) in operations {
                now = now.saturating_add_signed(step);
                let size = [1, 2, 4, 8][(value >> 60) as usize & 3];
                match kind {
                    0 => { let _ = lapic.write_mmio(place & 0xff0, 4, value, now); }
                    1 => { let _ = lapic.write_mmio(place, size, value, now); }
                    2 => { let _ = lapic.read_mmio(place, size, now); }
                    3 => { let _ = lapic.write_msr(0x800 + (place as u32 & 0xff), value, now); }
                    4 => { let _ = lapic.read_msr(0x800 + (place as u32 & 0xff), now); }
                    5 => {
                        let msr = if place & 1 == 0 { APIC_BASE_MSR } else { TSC_DEADLINE_MSR };
                        let value = if msr == APIC_BASE_MSR {
                            DEFAULT_BASE | (value & (base::ENABLE | base::X2APIC | 1))
                        } else {
                            now.saturating_add(value & 0xffff)
                        };
                        let _ = lapic.write_msr(msr, value, now);
                    }
                    _ => {
                        lapic.tick(now);
                        let _ = lapic.next_deadline();
                        if let Some(vector) = lapic.take_interrupt() {
                            proptest::prop_assert!(vector >= 16);
                        }
                    }
                }
                for vectors in [&lapic.requests, &lapic.in_service, &lapic.trigger_mode] {
                    proptest::prop_assert!(summary_holds(vectors));
                }
            }
        }

        /// The word summary follows every set and clear, and `highest`
        /// agrees with a search of all 256 bits.
        #[test]
        fn the_vector_summary_follows_the_words(
            operations in proptest::collection::vec((proptest::prelude::any::<bool>(), proptest::prelude::any::<u8>()), 0..200),
        ) {
            let mut vectors = Vectors::default();
            let mut naive = [false; 256];
            for (set, vector) in operations {
                if set {
                    vectors.set(vector);
                } else {
                    vectors.clear(vector);
                }
                naive[usize::from(vector)] = set;
                proptest::prop_assert!(summary_holds(&vectors));
                proptest::prop_assert_eq!(vectors.is_empty(), !naive.contains(&true));
                let highest = (0..=255u8).rev().find(|&v| naive[usize::from(v)]);
                proptest::prop_assert_eq!(vectors.highest(), highest);
                proptest::prop_assert!((0..=255u8).all(|v| vectors.contains(v) == naive[usize::from(v)]));
            }
        }
    }

    /// Whether a set's summary bit `w` is set exactly when word `w` is not
    /// zero.
    fn summary_holds(vectors: &Vectors) -> bool {
        (0..8).all(|word| (vectors.nonzero >> word & 1 != 0) == (vectors.words[word] != 0))
    }
}
