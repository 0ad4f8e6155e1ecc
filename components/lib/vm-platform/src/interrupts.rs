//! What to inject before each guest entry, and the platform that wires the
//! interrupt controllers and timers together.
//!
//! The [`Arbiter`] looks at what is pending (an NMI; the LAPIC's highest
//! deliverable vector, which IOAPIC deliveries, self-IPIs and the LAPIC
//! timer put there; the 8259's output when LAPIC LINT0 passes ExtINT or the
//! LAPIC is disabled) and at what the guest's CPU allows, and decides:
//! [`Decision::Inject`] (the vector moves from the IRR to the ISR, or the
//! 8259 is acknowledged, at that moment: an injected event is always
//! delivered, the core re-injecting it if an exit interrupts its delivery),
//! [`Decision::RequestWindow`] (something is pending but RFLAGS.IF is
//! clear, the guest is in an interrupt shadow, or the core is about to
//! re-inject an interrupted event: the world switcher must have the next
//! entry exit as soon as the guest can take an interrupt),
//! [`Decision::AwaitPriority`] (a LAPIC vector the task priority alone
//! holds back: a 64-bit guest lowers it with MOV to CR8, which does not
//! exit by itself, so the next entry asks for an exit at the guest's next
//! CR8 write, [`window::CR8`]), or [`Decision::Nothing`].
//!
//! CR8 is the TPR's class: [`Platform::guest_cr8`] takes the guest's value
//! at every exit, [`Platform::prepare_entry`] gives it the LAPIC's when an
//! MMIO or MSR write of the TPR changed it.
//!
//! The LAPIC's vectors come first, then the 8259's (ExtINT is not subject
//! to the TPR). An NMI goes before both and ignores IF; after one, NMIs are
//! blocked until the guest has executed an IRET, as on hardware: while one
//! is blocked the entry asks the core for an exit before the guest's next
//! IRET ([`window::IRET`]), the world switcher reports that exit with
//! [`Arbiter::iret_reached`], and the first later exit at another RIP
//! ([`Arbiter::exit_seen`]) finds the IRET done and NMIs open again. An
//! NMI raised meanwhile is delivered at that exit: late, never lost, never
//! nested. An NMI that meets an interrupt shadow asks for a window, which
//! opens only once IF is set: a rare, late NMI rather than a lost one.
//!
//! [`Platform`] owns one of each model and does the wiring the PC defines:
//! ISA IRQs go to the 8259 and to the IOAPIC (IRQ0 on pin 2, the
//! interrupt-source override the MADT must describe), PIT channel 0 pulses
//! IRQ0, level EOIs from the LAPIC go to the IOAPIC, and port, MMIO and
//! MSR accesses go to the model that owns them. The 8259 and the PIT are
//! optional, to match the firmware tables the guest is given (the ACPI
//! platform of Linux's reference has neither).

use microvisor_abi::vcpu::{VcpuState, dirty, event, window};

use crate::MmioIgnored;
use crate::ioapic::{self, IoApic};
use crate::lapic::{Lapic, LevelEoi, PAGE_SIZE};
use crate::msr::GeneralProtection;
use crate::pic::Pic;
use crate::pit::Pit;

/// RFLAGS.IF.
const INTERRUPT_FLAG: u64 = 1 << 9;

/// What the guest's CPU allows at the next entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestInterruptState {
    /// RFLAGS.IF.
    pub interrupts_enabled: bool,
    /// The shadow of STI or MOV SS.
    pub interrupt_shadow: bool,
    /// The core will re-inject an event whose delivery the last exit
    /// interrupted, unless the world switcher injects another (which would
    /// lose it).
    pub event_pending: bool,
}

impl GuestInterruptState {
    /// Read from the state page after an exit.
    pub fn of(state: &VcpuState) -> Self {
        Self {
            interrupts_enabled: state.rflags & INTERRUPT_FLAG != 0,
            interrupt_shadow: state.interrupt_shadow & 1 != 0,
            event_pending: state.exit_event & event::VALID != 0,
        }
    }
}

/// An event to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// An external interrupt with this vector.
    Interrupt(u8),
    Nmi,
}

impl Event {
    /// The state page's [`event`] encoding.
    pub const fn encode(self) -> u64 {
        match self {
            Self::Interrupt(vector) => event::interrupt(vector),
            Self::Nmi => event::VALID | event::NMI | 2,
        }
    }
}

/// The arbiter's answer for the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing is pending that the guest could take.
    Nothing,
    /// Inject this event (already taken from the controller).
    Inject(Event),
    /// Something is pending that the guest cannot take yet: exit at the
    /// next interrupt window.
    RequestWindow,
    /// A LAPIC vector of this priority class waits behind the guest's task
    /// priority: exit at the guest's next write of CR8.
    AwaitPriority(u8),
}

impl Decision {
    /// Writes the decision into `state`: an injection, or a request for an
    /// interrupt-window exit, and an IRET exit when `iret_exit`
    /// (`VcpuState::interrupt_window`), cancelling requests no longer
    /// needed. Returns the dirty bits to pass with the next `VcpuRun` (0
    /// when nothing changes).
    pub fn apply(self, state: &mut VcpuState, iret_exit: bool) -> u64 {
        let mut windows = match self {
            Self::RequestWindow => window::INTERRUPT,
            // Any MOV to CR8 exits: the world switcher emulates it and
            // decides again.
            Self::AwaitPriority(_) => window::CR8,
            _ => 0,
        };
        if iret_exit {
            windows |= window::IRET;
        }
        let mut mask = 0;
        if state.interrupt_window != windows {
            state.interrupt_window = windows;
            mask |= dirty::INTERRUPT_WINDOW;
        }
        if let Self::Inject(event) = self {
            state.inject = event.encode();
            mask |= dirty::INJECT;
        }
        mask
    }
}

/// Decides injections; remembers NMI blocking.
#[derive(Debug, Default)]
pub struct Arbiter {
    nmi_blocked: bool,
    /// The RIP of the IRET that ends the blocking, once the guest reached
    /// it.
    iret_at: Option<u64>,
}

impl Arbiter {
    pub const fn new() -> Self {
        Self {
            nmi_blocked: false,
            iret_at: None,
        }
    }

    /// Whether an injected NMI's handler has not returned yet (NMIs are
    /// held until the guest has executed an IRET).
    pub fn nmi_blocked(&self) -> bool {
        self.nmi_blocked
    }

    /// Whether the next entry should exit before the guest's next IRET:
    /// an NMI is blocked and its IRET not yet reached.
    pub fn wants_iret_exit(&self) -> bool {
        self.nmi_blocked && self.iret_at.is_none()
    }

    /// The guest is about to execute the IRET at `rip` (an
    /// [`ExitReason::Iret`](microvisor_abi::vcpu::ExitReason::Iret) exit).
    pub fn iret_reached(&mut self, rip: u64) {
        if self.nmi_blocked {
            self.iret_at = Some(rip);
        }
    }

    /// Whether the guest reached the IRET that ends the blocking and has
    /// not been seen past it: a pending NMI waits for the next exit. Only
    /// while an NMI is blocked.
    pub fn awaiting_iret(&self) -> bool {
        self.iret_at.is_some()
    }

    /// An exit with the guest at `rip`: once it is past the IRET it
    /// reached, NMIs may be delivered again.
    pub fn exit_seen(&mut self, rip: u64) {
        if self.iret_at.is_some_and(|at| at != rip) {
            self.nmi_blocked = false;
            self.iret_at = None;
        }
    }

    /// The decision for the next entry (see the module's documentation).
    pub fn decide(
        &mut self,
        guest: GuestInterruptState,
        lapic: &mut Lapic,
        pic: Option<&mut Pic>,
    ) -> Decision {
        let nmi = lapic.nmi_pending() && !self.nmi_blocked;
        let extint = match pic {
            Some(pic) if lapic.passes_extint() && pic.output() => Some(pic),
            _ => None,
        };
        let maskable = lapic.pending_interrupt().is_some() || extint.is_some();
        let held = if maskable {
            None
        } else {
            lapic.held_by_task_priority()
        };
        let waiting = held.map_or(Decision::Nothing, Decision::AwaitPriority);
        if guest.event_pending {
            return if nmi || maskable {
                Decision::RequestWindow
            } else {
                waiting
            };
        }
        if nmi {
            if guest.interrupt_shadow {
                return Decision::RequestWindow;
            }
            lapic.take_nmi();
            self.nmi_blocked = true;
            return Decision::Inject(Event::Nmi);
        }
        if !maskable {
            return waiting;
        }
        if !guest.interrupts_enabled || guest.interrupt_shadow {
            return Decision::RequestWindow;
        }
        if let Some(vector) = lapic.take_interrupt() {
            return Decision::Inject(Event::Interrupt(vector));
        }
        match extint {
            Some(pic) => Decision::Inject(Event::Interrupt(pic.acknowledge())),
            None => Decision::Nothing,
        }
    }
}

/// The IOAPIC pin of ISA IRQ `irq`: the same number, but IRQ0 on pin 2.
pub const fn isa_pin(irq: u8) -> usize {
    if irq == 0 { 2 } else { irq as usize }
}

/// The interrupt controllers and timers of one VM.
pub struct Platform {
    pub lapic: Lapic,
    pub ioapic: IoApic,
    pub pic: Option<Pic>,
    pub pit: Option<Pit>,
    pub arbiter: Arbiter,
}

impl Platform {
    /// The guest's periodic timer's period in TSC ticks, as programmed:
    /// the LAPIC timer's in periodic mode, else the PIT's channel 0 as a
    /// rate generator; `None` without either.
    pub fn periodic_timer_tsc(&self) -> Option<u64> {
        self.lapic
            .periodic_tsc()
            .or_else(|| self.pit.as_ref().and_then(Pit::periodic_tsc))
    }

    /// A platform around `lapic`, with a reset IOAPIC and the legacy
    /// devices given.
    pub fn new(lapic: Lapic, pic: Option<Pic>, pit: Option<Pit>) -> Self {
        Self {
            lapic,
            ioapic: IoApic::new(),
            pic,
            pit,
            arbiter: Arbiter::new(),
        }
    }

    /// A device raises or lowers ISA IRQ `irq` (0–15): the 8259's input and
    /// the IOAPIC's pin.
    pub fn set_isa_irq(&mut self, irq: u8, high: bool) {
        if irq >= 16 {
            return;
        }
        if let Some(pic) = &mut self.pic {
            pic.set_irq(irq, high);
        }
        self.ioapic.set_line(isa_pin(irq), high, &mut self.lapic);
    }

    /// A device drives IOAPIC pin `gsi` (a PCI function's INTx, GSIs 16
    /// and up; ISA lines go through [`Platform::set_isa_irq`]).
    pub fn set_gsi(&mut self, gsi: u8, high: bool) {
        self.ioapic
            .set_line(usize::from(gsi), high, &mut self.lapic);
    }

    /// A device's MSI write of `data` to `address` (the LAPIC's message
    /// window, 0xfee0_0000-0xfeef_ffff): a fixed or lowest-priority
    /// interrupt, or an NMI, to the destination in address bits 19:12
    /// (logical when bit 2 is set). Returns whether the LAPIC took a
    /// fixed interrupt; messages outside the window, for another
    /// destination or in other delivery modes are dropped, as the bus
    /// drops them.
    pub fn deliver_msi(&mut self, address: u64, data: u32) -> bool {
        if address >> 20 != 0xfee {
            return false;
        }
        let destination = (address >> 12) as u8;
        if !self.lapic.accepts(destination, address & 0b100 != 0) {
            return false;
        }
        match (data >> 8) & 0b111 {
            0 | 1 => self.lapic.accept_interrupt(data as u8, false),
            4 => {
                self.lapic.accept_nmi();
                false
            }
            _ => false,
        }
    }

    /// Makes the timers' due interrupts pending.
    pub fn tick(&mut self, now: u64) {
        self.lapic.tick(now);
        if self.pit.as_mut().is_some_and(|pit| pit.tick(now)) {
            self.set_isa_irq(0, true);
            self.set_isa_irq(0, false);
        }
    }

    /// The TSC at which [`Platform::tick`] must next run (perhaps already
    /// past); `None` when no timer is armed. An idle guest may sleep until
    /// then.
    pub fn next_deadline(&self) -> Option<u64> {
        let pit = self.pit.as_ref().and_then(Pit::next_deadline);
        match (self.lapic.next_deadline(), pit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether a maskable interrupt waits for the guest to take it: one the
    /// LAPIC would deliver, or the 8259's output through LINT0 (ExtINT). A
    /// guest halted with interrupts on wakes for it.
    pub fn interrupt_waiting(&self) -> bool {
        self.lapic.pending_interrupt().is_some()
            || self
                .pic
                .as_ref()
                .is_some_and(|pic| self.lapic.passes_extint() && pic.output())
    }

    /// Whether the next decision may be anything but
    /// [`Decision::Nothing`]: a cheap test that needs no priority logic.
    #[inline]
    pub fn may_deliver(&self) -> bool {
        self.lapic.has_requests() || self.pic.as_ref().is_some_and(Pic::has_requests)
    }

    /// The decision for the next entry, from the state page.
    pub fn decide(&mut self, state: &VcpuState) -> Decision {
        if !self.may_deliver() {
            return Decision::Nothing;
        }
        let guest = GuestInterruptState::of(state);
        self.arbiter
            .decide(guest, &mut self.lapic, self.pic.as_mut())
    }

    /// Decides for the next entry and writes the decision into `state`
    /// (an injection; interrupt-window and IRET exit requests); returns
    /// the dirty bits.
    ///
    /// The common entry is answered inline with a few tests: nothing is
    /// requested (no LAPIC vector or NMI, no unmasked 8259 input), no
    /// NMI's handler is running (so no IRET exit is wanted), no window
    /// request is left in `state`, and the guest's CR8 is the LAPIC's.
    /// The general path would then decide [`Decision::Nothing`] and
    /// change nothing either; anything else takes it.
    #[inline]
    pub fn prepare_entry(&mut self, state: &mut VcpuState) -> u64 {
        self.prepare_entry_tracked(state, false).0
    }

    /// [`Platform::prepare_entry`] for a caller that follows whether the
    /// platform is idle ([`Platform::idle`]) from one entry to the next:
    /// `known_idle` says it was at the last entry and nothing has changed
    /// the models since but [`Platform::guest_cr8`] and the arbiter's
    /// [`Arbiter::exit_seen`] and [`Arbiter::iret_reached`] (none of which
    /// can end idleness), so that only the state page's part of the quick
    /// tests is made again; `false` when not known (then the models are
    /// looked at). Returns the dirty bits, and whether the platform is idle
    /// at this entry (`false` when not known) for the next call.
    #[inline]
    pub fn prepare_entry_tracked(
        &mut self,
        state: &mut VcpuState,
        known_idle: bool,
    ) -> (u64, bool) {
        debug_assert!(!known_idle || self.idle(), "the platform is not idle");
        let idle = known_idle || self.idle();
        if idle && self.entry_settled(state) {
            return (0, true);
        }
        // An idle platform stays idle through the general path: it
        // decides nothing, so it takes nothing from the models.
        (self.prepare_entry_general(state), idle)
    }

    /// Whether nothing is requested (no LAPIC vector or NMI, no unmasked
    /// 8259 input) and no NMI's handler is running (so no IRET exit is
    /// wanted, and none is awaited: [`Arbiter::awaiting_iret`] implies a
    /// blocked NMI): the arbiter then decides [`Decision::Nothing`]
    /// whatever the guest's state. Only the models' own changes end it (an
    /// interrupt raised, an NMI injected); the TPR plays no part.
    #[inline(always)]
    pub fn idle(&self) -> bool {
        !self.may_deliver() && !self.arbiter.nmi_blocked
    }

    /// The state page's part of [`Platform::prepare_entry`]'s quick
    /// tests: no window request is left in `state` and the guest's CR8 is
    /// the LAPIC's. On an idle platform ([`Platform::idle`]) this is
    /// everything `prepare_entry` looks at: it then returns 0 and changes
    /// nothing.
    #[inline(always)]
    pub fn entry_settled(&self, state: &VcpuState) -> bool {
        state.interrupt_window == 0 && state.cr8 == self.lapic.cr8()
    }

    /// [`Platform::prepare_entry`]'s quick tests: whether the entry is
    /// settled with nothing to do (shared with the property test that
    /// holds it to the general path).
    #[cfg(test)]
    fn settles_nothing(&self, state: &VcpuState) -> bool {
        self.idle() && self.entry_settled(state)
    }

    /// [`Platform::prepare_entry`] when its quick tests do not settle it.
    #[inline(never)]
    fn prepare_entry_general(&mut self, state: &mut VcpuState) -> u64 {
        let decision = self.decide(state);
        let mut mask = decision.apply(state, self.arbiter.wants_iret_exit());
        let cr8 = self.lapic.cr8();
        if state.cr8 != cr8 {
            state.cr8 = cr8;
            mask |= dirty::CR8;
        }
        mask
    }

    /// At an exit, before anything reads the LAPIC: the guest's CR8 (its
    /// MOV to CR8 does not exit) becomes the TPR's class. The TPR's low
    /// bits survive while the class is unchanged.
    pub fn guest_cr8(&mut self, cr8: u64) {
        if cr8 != self.lapic.cr8() {
            let _ = self.lapic.set_cr8(cr8 & 0xf);
        }
    }

    fn end_of_interrupt(&mut self, eoi: Option<LevelEoi>) {
        if let Some(LevelEoi { vector }) = eoi {
            self.ioapic.end_of_interrupt(vector, &mut self.lapic);
        }
    }

    /// IN from `port` (one byte); `None` if no model here owns it.
    pub fn read_port(&mut self, port: u16, now: u64) -> Option<u8> {
        match (&mut self.pic, &mut self.pit) {
            (Some(pic), _) if Pic::owns_port(port) => Some(pic.read(port)),
            (_, Some(pit)) if Pit::owns_port(port) => Some(pit.read(port, now)),
            _ => None,
        }
    }

    /// OUT to `port` (one byte); `false` if no model here owns it.
    pub fn write_port(&mut self, port: u16, value: u8, now: u64) -> bool {
        match (&mut self.pic, &mut self.pit) {
            (Some(pic), _) if Pic::owns_port(port) => pic.write(port, value),
            (_, Some(pit)) if Pit::owns_port(port) => pit.write(port, value, now),
            _ => return false,
        }
        true
    }

    /// Whether anything outside the guest could send it an NMI (an
    /// unmasked IOAPIC pin in NMI mode; the LAPIC's LINT pins carry only
    /// the 8259's ExtINT): if not, a vCPU halted with interrupts off never
    /// runs again.
    pub fn nmi_possible(&self) -> bool {
        self.ioapic.routes_nmi()
    }

    /// Whether a write at guest-physical `address` can move a timer's
    /// deadline ([`Lapic::write_moves_deadline`]; the IOAPIC has no timer),
    /// so that the caller must look at [`Platform::next_deadline`] again.
    pub fn mmio_write_moves_deadline(&self, address: u64) -> bool {
        match self.mmio_target(address) {
            Some((true, offset)) => Lapic::write_moves_deadline((offset & 0xff0) as u32),
            _ => false,
        }
    }

    /// Whether guest-physical `address` lies in a register page of this
    /// platform (the LAPIC's, in any mode, or the IOAPIC's).
    pub fn owns_mmio(&self, address: u64) -> bool {
        self.mmio_target(address).is_some()
    }

    /// Which model's page holds guest-physical `address`, and the offset.
    fn mmio_target(&self, address: u64) -> Option<(bool, u64)> {
        // The LAPIC's page stays its own while it does not decode it
        // (disabled, x2APIC): those accesses are answered as ignored, as
        // the bus would, rather than ending the VM.
        let base = self.lapic.page();
        if (base..base + PAGE_SIZE).contains(&address) {
            return Some((true, address - base));
        }
        (ioapic::BASE..ioapic::BASE + PAGE_SIZE)
            .contains(&address)
            .then(|| (false, address - ioapic::BASE))
    }

    /// A read at guest-physical `address`; `None` if it is not a register
    /// page of this platform.
    pub fn read_mmio(
        &mut self,
        address: u64,
        size: u8,
        now: u64,
    ) -> Option<Result<u64, MmioIgnored>> {
        let (lapic, offset) = self.mmio_target(address)?;
        Some(if lapic {
            self.lapic.read_mmio(offset, size, now)
        } else {
            self.ioapic.read_mmio(offset, size).map(u64::from)
        })
    }

    /// A write at guest-physical `address`; `None` if it is not a register
    /// page of this platform.
    pub fn write_mmio(
        &mut self,
        address: u64,
        size: u8,
        value: u64,
        now: u64,
    ) -> Option<Result<(), MmioIgnored>> {
        let (lapic, offset) = self.mmio_target(address)?;
        Some(if lapic {
            self.lapic
                .write_mmio(offset, size, value, now)
                .map(|eoi| self.end_of_interrupt(eoi))
        } else {
            self.ioapic
                .write_mmio(offset, size, value as u32, &mut self.lapic)
        })
    }

    /// RDMSR; `None` if the MSR is not the LAPIC's.
    pub fn read_msr(&self, msr: u32, now: u64) -> Option<Result<u64, GeneralProtection>> {
        Lapic::owns_msr(msr).then(|| self.lapic.read_msr(msr, now))
    }

    /// WRMSR; `None` if the MSR is not the LAPIC's.
    pub fn write_msr(
        &mut self,
        msr: u32,
        value: u64,
        now: u64,
    ) -> Option<Result<(), GeneralProtection>> {
        if !Lapic::owns_msr(msr) {
            return None;
        }
        Some(
            self.lapic
                .write_msr(msr, value, now)
                .map(|eoi| self.end_of_interrupt(eoi)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::lapic::{DEFAULT_BASE, lvt, register};
    use crate::pic;
    use crate::pit;
    use proptest::prelude::*;
    use zerocopy::{FromZeros, IntoBytes};

    const TSC_HZ: u64 = 2_600_000_000;

    fn lapic() -> Lapic {
        Lapic::new(Clock::new(TSC_HZ, 1_000_000_000).unwrap(), 48)
    }

    /// The ACPI platform: LAPIC and IOAPIC only, the LAPIC enabled.
    fn acpi_platform() -> Platform {
        let mut platform = Platform::new(lapic(), None, None);
        write_lapic(&mut platform, register::SPURIOUS_VECTOR, 0x1ff);
        platform
    }

    /// The legacy platform: LAPIC in virtual-wire mode, 8259, PIT.
    fn legacy_platform() -> Platform {
        Platform::new(lapic(), Some(Pic::new()), Pit::new(TSC_HZ))
    }

    fn write_lapic(platform: &mut Platform, offset: u32, value: u32) {
        let address = DEFAULT_BASE + u64::from(offset);
        let done = platform.write_mmio(address, 4, u64::from(value), 0);
        assert_eq!(done, Some(Ok(())));
    }

    fn program_ioapic(platform: &mut Platform, pin: u8, low: u32) {
        for (offset, value) in [(0x00, u32::from(0x10 + 2 * pin)), (0x10, low)] {
            let done = platform.write_mmio(ioapic::BASE + offset, 4, u64::from(value), 0);
            assert_eq!(done, Some(Ok(())));
        }
    }

    fn guest(interrupts_enabled: bool, interrupt_shadow: bool) -> GuestInterruptState {
        GuestInterruptState {
            interrupts_enabled,
            interrupt_shadow,
            event_pending: false,
        }
    }

    #[test]
    fn msi_messages_reach_the_lapic_they_name() {
        let mut platform = acpi_platform();
        // Fixed, vector 0x41, physical destination 0 (this LAPIC's id).
        assert!(platform.deliver_msi(0xfee0_0000, 0x41));
        assert_eq!(platform.lapic.pending_interrupt(), Some(0x41));
        // Another destination, outside the window, or a reserved mode:
        // dropped.
        assert!(!platform.deliver_msi(0xfee0_1000, 0x42));
        assert!(!platform.deliver_msi(0xfed0_0000, 0x43));
        assert!(!platform.deliver_msi(0xfee0_0000, 0x0300 | 0x44));
        // Broadcast reaches it; NMI is taken as an NMI.
        assert!(platform.deliver_msi(0xfeef_f000, 0x45));
        assert!(!platform.deliver_msi(0xfee0_0000, 0x0400));
        assert!(platform.lapic.nmi_pending());
    }

    #[test]
    fn a_pci_line_drives_its_ioapic_pin() {
        let mut platform = acpi_platform();
        // Pin 20: vector 0x50, level, active high, unmasked.
        program_ioapic(&mut platform, 20, 0x50 | 1 << 15);
        platform.set_gsi(20, true);
        assert_eq!(platform.lapic.pending_interrupt(), Some(0x50));
        platform.set_gsi(99, true);
    }

    #[test]
    fn the_guest_state_comes_from_the_state_page() {
        let mut state = VcpuState::new_zeroed();
        assert_eq!(
            GuestInterruptState::of(&state),
            GuestInterruptState::default()
        );
        state.rflags = 0x202;
        state.interrupt_shadow = 1;
        state.exit_event = event::interrupt(0x30);
        assert_eq!(
            GuestInterruptState::of(&state),
            GuestInterruptState {
                interrupts_enabled: true,
                interrupt_shadow: true,
                event_pending: true
            }
        );
        assert_eq!(Event::Nmi.encode(), 0x8000_0202);
        assert_eq!(
            Decision::Inject(Event::Interrupt(0x31)).apply(&mut state, false),
            dirty::INJECT
        );
        assert_eq!(state.inject, 0x8000_0031);
        // A window is requested once, and cancelled when no longer needed.
        assert_eq!(
            Decision::RequestWindow.apply(&mut state, false),
            dirty::INTERRUPT_WINDOW
        );
        assert_eq!(state.interrupt_window, window::INTERRUPT);
        assert_eq!(
            Decision::RequestWindow.apply(&mut state, false),
            0,
            "still pending"
        );
        assert_eq!(
            Decision::Inject(Event::Nmi).apply(&mut state, true),
            dirty::INJECT | dirty::INTERRUPT_WINDOW
        );
        assert_eq!(state.interrupt_window, window::IRET);
        assert_eq!(Decision::Nothing.apply(&mut state, true), 0);
        assert_eq!(
            Decision::RequestWindow.apply(&mut state, true),
            dirty::INTERRUPT_WINDOW
        );
        assert_eq!(state.interrupt_window, window::INTERRUPT | window::IRET);
        assert_eq!(
            Decision::Nothing.apply(&mut state, false),
            dirty::INTERRUPT_WINDOW
        );
        assert_eq!(state.interrupt_window, 0);
    }

    #[test]
    fn the_task_priority_holds_interrupts_back_until_cr8_drops() {
        let mut platform = acpi_platform();
        let mut state = VcpuState::new_zeroed();
        state.rflags = 0x202;
        // The guest raised CR8 to 5 without an exit; the next exit syncs it.
        state.cr8 = 5;
        platform.guest_cr8(state.cr8);
        assert_eq!(platform.lapic.cr8(), 5);
        assert!(platform.lapic.accept_interrupt(0x51, false));
        assert_eq!(platform.decide(&state), Decision::AwaitPriority(5));
        // The next CR8 write exits.
        assert_eq!(platform.prepare_entry(&mut state), dirty::INTERRUPT_WINDOW);
        assert_eq!(state.interrupt_window, window::CR8);
        // A higher class is not held back.
        assert!(platform.lapic.accept_interrupt(0x61, false));
        assert_eq!(
            platform.decide(&state),
            Decision::Inject(Event::Interrupt(0x61))
        );
        // Behind the one in service, a lower class needs no window.
        assert_eq!(platform.decide(&state), Decision::Nothing);
        write_lapic(&mut platform, 0xb0, 0);
        // CR8 dropped to 3 in the guest: the vector is delivered.
        state.cr8 = 3;
        platform.guest_cr8(state.cr8);
        assert_eq!(
            platform.decide(&state),
            Decision::Inject(Event::Interrupt(0x51))
        );
        // An MMIO write of the TPR reaches the guest's CR8 at the entry.
        write_lapic(&mut platform, 0x80, 0x72);
        assert_eq!(platform.prepare_entry(&mut state) & dirty::CR8, dirty::CR8);
        assert_eq!(state.cr8, 7);
        assert_eq!(platform.prepare_entry(&mut state) & dirty::CR8, 0);
        // An unchanged class keeps the TPR's low bits.
        platform.guest_cr8(7);
        assert_eq!(platform.lapic.processor_priority() & 0xff, 0x72);
    }

    #[test]
    fn maskable_interrupts_wait_for_if_and_the_shadow() {
        let mut platform = acpi_platform();
        let mut arbiter = Arbiter::new();
        let lapic = &mut platform.lapic;
        assert_eq!(
            arbiter.decide(guest(true, false), lapic, None),
            Decision::Nothing
        );
        lapic.accept_interrupt(0x40, false);
        assert_eq!(
            arbiter.decide(guest(false, false), lapic, None),
            Decision::RequestWindow
        );
        assert_eq!(
            arbiter.decide(guest(true, true), lapic, None),
            Decision::RequestWindow
        );
        let pending = GuestInterruptState {
            event_pending: true,
            ..guest(true, false)
        };
        assert_eq!(
            arbiter.decide(pending, lapic, None),
            Decision::RequestWindow
        );
        assert_eq!(lapic.pending_interrupt(), Some(0x40), "still in the IRR");
        assert_eq!(
            arbiter.decide(guest(true, false), lapic, None),
            Decision::Inject(Event::Interrupt(0x40))
        );
        // A lower class waits behind the one in service, without a window.
        lapic.accept_interrupt(0x35, false);
        assert_eq!(
            arbiter.decide(guest(true, false), lapic, None),
            Decision::Nothing
        );
        assert_eq!(
            arbiter.decide(guest(false, false), lapic, None),
            Decision::Nothing
        );
        lapic.accept_interrupt(0x90, false);
        assert_eq!(
            arbiter.decide(guest(true, false), lapic, None),
            Decision::Inject(Event::Interrupt(0x90)),
            "a higher class nests"
        );
    }

    #[test]
    fn nmis_ignore_if_and_wait_for_iret() {
        let mut platform = acpi_platform();
        let mut arbiter = Arbiter::new();
        let lapic = &mut platform.lapic;
        lapic.accept_nmi();
        lapic.accept_interrupt(0x40, false);
        assert_eq!(
            arbiter.decide(guest(false, true), lapic, None),
            Decision::RequestWindow
        );
        assert_eq!(
            arbiter.decide(guest(false, false), lapic, None),
            Decision::Inject(Event::Nmi)
        );
        assert!(arbiter.nmi_blocked() && arbiter.wants_iret_exit());
        lapic.accept_nmi();
        assert_eq!(
            arbiter.decide(guest(true, false), lapic, None),
            Decision::Inject(Event::Interrupt(0x40)),
            "the second NMI waits; the interrupt does not"
        );
        assert_eq!(
            arbiter.decide(guest(true, false), lapic, None),
            Decision::Nothing
        );
        // The handler reaches its IRET: still blocked until it has run.
        arbiter.exit_seen(0x1000);
        arbiter.iret_reached(0x2000);
        assert!(!arbiter.wants_iret_exit() && arbiter.awaiting_iret());
        arbiter.exit_seen(0x2000);
        assert_eq!(
            arbiter.decide(guest(false, false), lapic, None),
            Decision::Nothing,
            "not past the IRET yet"
        );
        arbiter.exit_seen(0x1003);
        assert!(!arbiter.nmi_blocked());
        assert_eq!(
            arbiter.decide(guest(false, false), lapic, None),
            Decision::Inject(Event::Nmi)
        );
        assert!(
            arbiter.wants_iret_exit(),
            "and the next handler's IRET is watched"
        );
        // An IRET exit without a blocked NMI changes nothing.
        let mut idle = Arbiter::new();
        idle.iret_reached(0x2000);
        idle.exit_seen(0x3000);
        assert!(!idle.nmi_blocked() && !idle.wants_iret_exit());
    }

    #[test]
    fn legacy_platform_delivers_irq0_through_the_8259_and_lint0() {
        let mut platform = legacy_platform();
        assert!(platform.lapic.passes_extint(), "virtual wire from power-on");
        // Linux: init_8259A, unmask IRQ0, then the PIT at HZ=250 in mode 2.
        for (port, value) in [
            (0x21, 0xff),
            (0x20, 0x11),
            (0x21, 0x30),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xa0, 0x11),
            (0xa1, 0x38),
            (0xa1, 0x02),
            (0xa1, 0x01),
            (0x21, 0xfa),
            (0xa1, 0xff),
            (0x43, 0x34),
            (0x40, 0xa5),
            (0x40, 0x12),
        ] {
            assert!(platform.write_port(port, value, 1000));
        }
        let mut state = VcpuState::new_zeroed();
        state.rflags = 0x202;
        let mut times = Vec::new();
        while times.len() < 5 {
            let due = platform.next_deadline().unwrap();
            assert!(!platform.interrupt_waiting());
            platform.tick(due);
            // A guest halted with IF set must wake for the 8259's output,
            // which the LAPIC does not hold.
            assert!(platform.interrupt_waiting());
            assert!(platform.lapic.pending_interrupt().is_none());
            assert_eq!(
                platform.decide(&state),
                Decision::Inject(Event::Interrupt(0x30))
            );
            // The handler ends it with a specific EOI.
            assert_eq!(platform.read_port(pic::MASTER_COMMAND, due), Some(0));
            platform.write_port(pic::MASTER_COMMAND, 0x60, due);
            times.push(due);
        }
        let period = Clock::new(TSC_HZ, pit::FREQUENCY)
            .unwrap()
            .tsc_for(4773 * 5);
        assert_eq!(times[4], 1000 + period);
        // ExtINT is not subject to the TPR, and waits for IF.
        write_lapic(&mut platform, register::SPURIOUS_VECTOR, 0x1ff);
        write_lapic(&mut platform, register::TASK_PRIORITY, 0xf0);
        platform.tick(platform.next_deadline().unwrap());
        state.rflags = 0x2;
        assert_eq!(platform.decide(&state), Decision::RequestWindow);
        state.rflags = 0x202;
        assert_eq!(
            platform.decide(&state),
            Decision::Inject(Event::Interrupt(0x30))
        );
        // With LINT0 masked the 8259 no longer reaches the CPU.
        platform.write_port(pic::MASTER_COMMAND, 0x60, 0);
        write_lapic(
            &mut platform,
            register::LVT_LINT0,
            lvt::EXTINT | lvt::MASKED,
        );
        platform.tick(platform.next_deadline().unwrap());
        assert_eq!(platform.decide(&state), Decision::Nothing);
        // Ports that are not the platform's.
        assert_eq!(platform.read_port(0x3f8, 0), None);
        assert!(!platform.write_port(0x3f8, 0, 0));
    }

    #[test]
    fn acpi_platform_delivers_through_the_ioapic() {
        let mut platform = acpi_platform();
        assert_eq!(platform.read_port(0x20, 0), None, "no 8259");
        let mut state = VcpuState::new_zeroed();
        state.rflags = 0x202;
        // COM1 on pin 4, edge-triggered.
        program_ioapic(&mut platform, 4, 0x24);
        platform.set_isa_irq(4, true);
        assert_eq!(
            platform.decide(&state),
            Decision::Inject(Event::Interrupt(0x24))
        );
        write_lapic(&mut platform, register::END_OF_INTERRUPT, 0);
        platform.set_isa_irq(4, false);
        // A level-triggered pin: the LAPIC's EOI reaches the IOAPIC, which
        // delivers again while the line is high.
        program_ioapic(&mut platform, 9, 0x39 | 1 << 15);
        platform.set_isa_irq(9, true);
        assert_eq!(
            platform.decide(&state),
            Decision::Inject(Event::Interrupt(0x39))
        );
        write_lapic(&mut platform, register::END_OF_INTERRUPT, 0);
        assert_eq!(
            platform.decide(&state),
            Decision::Inject(Event::Interrupt(0x39))
        );
        platform.set_isa_irq(9, false);
        write_lapic(&mut platform, register::END_OF_INTERRUPT, 0);
        assert_eq!(platform.decide(&state), Decision::Nothing);
        assert_eq!(
            platform.ioapic.entry(9).unwrap() & ioapic::entry::REMOTE_IRR,
            0
        );
        // The same through the x2APIC EOI MSR.
        platform
            .write_msr(0x1b, DEFAULT_BASE | 0xc00, 0)
            .unwrap()
            .unwrap();
        platform.set_isa_irq(9, true);
        assert_eq!(
            platform.decide(&state),
            Decision::Inject(Event::Interrupt(0x39))
        );
        platform.set_isa_irq(9, false);
        assert_eq!(platform.write_msr(0x80b, 0, 0), Some(Ok(())));
        assert_eq!(
            platform.ioapic.entry(9).unwrap() & ioapic::entry::REMOTE_IRR,
            0
        );
        assert_eq!(platform.read_msr(0x80b, 0), Some(Err(GeneralProtection)));
        assert_eq!(platform.read_msr(0x10, 0), None, "not the LAPIC's");
        assert_eq!(platform.write_msr(0x10, 0, 0), None);
        // In x2APIC mode the xAPIC page is still the LAPIC's, but not
        // decoded: the caller answers as an empty bus, the VM goes on.
        assert!(platform.owns_mmio(DEFAULT_BASE + 0x20));
        assert_eq!(
            platform.read_mmio(DEFAULT_BASE + 0x20, 4, 0),
            Some(Err(MmioIgnored::NotDecoded)),
            "x2APIC mode"
        );
        assert_eq!(
            platform.write_mmio(DEFAULT_BASE + 0x80, 4, 0x10, 0),
            Some(Err(MmioIgnored::NotDecoded))
        );
        assert_eq!(platform.read_mmio(0x1000, 4, 0), None);
        assert!(!platform.owns_mmio(0x1000));
        // Only the timer's registers move its deadline.
        assert!(platform.mmio_write_moves_deadline(DEFAULT_BASE + 0x380));
        assert!(platform.mmio_write_moves_deadline(DEFAULT_BASE + 0x320));
        assert!(!platform.mmio_write_moves_deadline(DEFAULT_BASE + 0x80));
        assert!(!platform.mmio_write_moves_deadline(DEFAULT_BASE + 0xb0));
        assert!(!platform.mmio_write_moves_deadline(ioapic::BASE + 0x10));
        // NMIs: only an unmasked pin in NMI mode can send one.
        assert!(!platform.nmi_possible());
        program_ioapic(&mut platform, 5, 4 << 8 | 1 << 16);
        assert!(!platform.nmi_possible(), "masked");
        program_ioapic(&mut platform, 5, 4 << 8);
        assert!(platform.nmi_possible());
    }

    #[test]
    fn the_platform_sleeps_until_the_first_timer() {
        let mut platform = legacy_platform();
        assert_eq!(platform.next_deadline(), None);
        platform.write_port(0x43, 0x30, 0);
        platform.write_port(0x40, 0x00, 0);
        platform.write_port(0x40, 0x10, 0);
        let pit_due = platform.next_deadline().unwrap();
        write_lapic(&mut platform, register::SPURIOUS_VECTOR, 0x1ff);
        write_lapic(
            &mut platform,
            register::LVT_TIMER,
            0xec | lvt::TIMER_DEADLINE,
        );
        platform.write_msr(0x6e0, pit_due / 2, 0).unwrap().unwrap();
        assert_eq!(platform.next_deadline(), Some(pit_due / 2));
        platform.tick(pit_due / 2);
        assert_eq!(platform.next_deadline(), Some(pit_due));
        // PIT IRQ0 reaches IOAPIC pin 2 too.
        program_ioapic(&mut platform, 2, 0x22);
        platform.tick(pit_due);
        let mut state = VcpuState::new_zeroed();
        state.rflags = 0x202;
        assert_eq!(
            platform.decide(&state),
            Decision::Inject(Event::Interrupt(0xec))
        );
        assert_eq!(
            platform.decide(&state),
            Decision::Nothing,
            "0x22 is below 0xec"
        );
        write_lapic(&mut platform, register::END_OF_INTERRUPT, 0);
        assert_eq!(
            platform.decide(&state),
            Decision::Inject(Event::Interrupt(0x22))
        );
    }

    /// One thing a hostile guest (or its devices) can do.
    #[derive(Clone, Debug)]
    enum Action {
        Port(u16, u8),
        ReadPort(u16),
        Mmio(u64, u8, u64),
        ReadMmio(u64, u8),
        Msr(u32, u64),
        ReadMsr(u32),
        Irq(u8, bool),
        Run(bool, bool, bool),
        /// An entry's preparation, with the guest's CR8 as given.
        Enter(u8),
        Iret,
    }

    fn action() -> impl Strategy<Value = Action> {
        let port = prop::sample::select(vec![
            0x20u16, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1, 0x40, 0x41, 0x42, 0x43, 0x61,
        ]);
        let page = prop_oneof![
            Just(DEFAULT_BASE),
            Just(ioapic::BASE),
            (0u64..1 << 32).prop_map(|address| address & !0x3ff),
            any::<u64>().prop_map(|address| address & !0x3ff),
        ];
        let size = prop::sample::select(vec![1u8, 2, 4, 8]);
        let msr = prop_oneof![Just(0x1bu32), Just(0x6e0), 0x800u32..=0x8ff];
        prop_oneof![
            (port.clone(), any::<u8>()).prop_map(|(p, v)| Action::Port(p, v)),
            port.prop_map(Action::ReadPort),
            (page.clone(), 0u64..0x400, size.clone(), any::<u64>())
                .prop_map(|(base, offset, size, value)| Action::Mmio(base + offset, size, value)),
            (page, 0u64..0x400, size)
                .prop_map(|(base, offset, size)| Action::ReadMmio(base + offset, size)),
            (msr.clone(), any::<u64>()).prop_map(|(msr, value)| Action::Msr(msr, value)),
            msr.prop_map(Action::ReadMsr),
            (0u8..17, any::<bool>()).prop_map(|(irq, high)| Action::Irq(irq, high)),
            (any::<bool>(), any::<bool>(), any::<bool>())
                .prop_map(|(enabled, shadow, pending)| Action::Run(enabled, shadow, pending)),
            (0u8..16).prop_map(Action::Enter),
            Just(Action::Iret),
        ]
    }

    proptest! {
        /// Whatever a guest writes, reads and raises, nothing panics, and
        /// without an 8259 (whose ExtINT vectors are the guest's choice, as
        /// on hardware) no vector below 16 is ever injected.
        #[test]
        fn hostile_guests_cannot_break_the_platform(
            legacy in any::<bool>(),
            actions in prop::collection::vec((action(), 0u64..2_000_000), 1..400),
        ) {
            let mut platform = if legacy { legacy_platform() } else { acpi_platform() };
            let mut state = VcpuState::new_zeroed();
            let mut now = 1u64 << 36;
            // Whether the platform was idle at the last entry, as a world
            // switcher follows it: only entries and IRETs keep it.
            let mut idle = false;
            for (action, step) in actions {
                now += step;
                if !matches!(action, Action::Enter(_) | Action::Iret) {
                    idle = false;
                }
                match action {
                    Action::Port(port, value) => { platform.write_port(port, value, now); }
                    Action::ReadPort(port) => { platform.read_port(port, now); }
                    Action::Mmio(address, size, value) => {
                        let _ = platform.write_mmio(address, size, value, now);
                    }
                    Action::ReadMmio(address, size) => { let _ = platform.read_mmio(address, size, now); }
                    Action::Msr(msr, value) => { let _ = platform.write_msr(msr, value, now); }
                    Action::ReadMsr(msr) => { let _ = platform.read_msr(msr, now); }
                    Action::Irq(irq, high) => platform.set_isa_irq(irq, high),
                    Action::Enter(cr8) => {
                        state.cr8 = u64::from(cr8);
                        platform.guest_cr8(state.cr8);
                        // Sometimes the LAPIC's TPR moves behind the
                        // guest's back, as an MMIO write would.
                        if cr8 & 1 != 0 {
                            let _ = platform.lapic.set_cr8(u64::from(cr8 >> 1));
                        }
                        let quick = platform.settles_nothing(&state);
                        let before = state.as_bytes().to_vec();
                        let was_idle = platform.idle();
                        prop_assert!(!idle || was_idle, "idleness ended unseen");
                        let mask = if quick {
                            // What the general path does then: nothing.
                            platform.prepare_entry_general(&mut state)
                        } else {
                            let (mask, now_idle) =
                                platform.prepare_entry_tracked(&mut state, idle);
                            idle = now_idle;
                            mask
                        };
                        if quick {
                            prop_assert_eq!(mask, 0);
                            prop_assert_eq!(&before[..], state.as_bytes());
                            // The tracked entry's own quick answer, on
                            // what the general path left unchanged: the
                            // same nothing, and idle.
                            let tracked = platform.prepare_entry_tracked(&mut state, idle);
                            prop_assert_eq!(tracked, (0, true));
                            prop_assert_eq!(&before[..], state.as_bytes());
                            idle = true;
                        }
                        // What is reported idle is, and stays so through
                        // the entry.
                        prop_assert!(!idle || (was_idle && platform.idle()));
                        // An idle platform awaits no IRET (a world
                        // switcher's `calm` relies on it).
                        prop_assert!(!platform.idle() || !platform.arbiter.awaiting_iret());
                        if mask & dirty::INJECT != 0 {
                            state.exit_event = 0;
                        }
                    }
                    Action::Iret => {
                        platform.arbiter.iret_reached(now);
                        platform.arbiter.exit_seen(now + 1);
                    }
                    Action::Run(enabled, shadow, pending) => {
                        if let Some(due) = platform.next_deadline() {
                            now = now.max(due);
                        }
                        platform.tick(now);
                        state.rflags = if enabled { 0x202 } else { 0x2 };
                        state.interrupt_shadow = u64::from(shadow);
                        state.exit_event = if pending { event::interrupt(0x80) } else { 0 };
                        let blocked = platform.arbiter.nmi_blocked();
                        let decision = platform.decide(&state);
                        if let Decision::Inject(Event::Interrupt(vector)) = decision {
                            prop_assert!(legacy || vector >= 16, "vector {vector}");
                            prop_assert!(enabled && !shadow && !pending);
                        }
                        if decision == Decision::Inject(Event::Nmi) {
                            prop_assert!(!blocked, "an NMI nested in its handler");
                        }
                    }
                }
            }
        }
    }
}
