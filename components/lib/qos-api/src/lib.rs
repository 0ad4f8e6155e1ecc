//! What a world switcher tells the QoS controller about its VM.
//!
//! When the system's scheduling controller is the QoS controller, capdl
//! gives each VM's world switcher a queue `<switcher>-stats` to it. The
//! switcher counts as it goes — every VM exit by kind, virtual interrupts
//! injected, the time its vCPU spent halted (HLT, or the NO_WORK
//! hypercall) — and sends its running totals ([`VmStatistics`]) at most
//! every [`REPORT_EVERY_NS`], when it handles an exit anyway: no system
//! call per exit, and a report dropped on a full queue loses nothing (the
//! next carries the totals). The controller takes the latest at each of
//! its windows, without being woken for them.
//!
//! The other way, capdl gives the controller a queue
//! `<switcher>-control` to each switcher, on which it asks for what costs
//! the VM something to observe ([`Control`]): the guest's processes
//! (the switcher intercepts MOV to CR3 and charges CPU time per page-table
//! root, [`processes`]), its periodic timer's periods (CPU time from each
//! wake-up to the next HLT, and deadlines missed), and a yield at every
//! cache flush (WBINVD).
#![no_std]
#![forbid(unsafe_code)]

pub mod periods;
pub mod processes;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use periods::PeriodTracker;
pub use processes::{MAX_PROCESSES, ProcessCharge, ProcessTable};

/// The suffix of a switcher's statistics queue's name.
pub const QUEUE_SUFFIX: &str = "-stats";
/// The suffix of the queue on which the controller asks a switcher for
/// observations ([`Control`]).
pub const CONTROL_SUFFIX: &str = "-control";
/// Slots of a control queue.
pub const CONTROL_SLOTS: u32 = 2;
/// Slots of a statistics queue.
pub const SLOTS: u32 = 4;
/// Kinds of exit counted: the core's exit reason numbers
/// (`microvisor_abi::vcpu::ExitReason`) below this, 0 for any other.
pub const KINDS: usize = 24;
/// A switcher reports at most this often.
pub const REPORT_EVERY_NS: u64 = 50_000_000;

/// A switcher's running totals for its VM since it started.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VmStatistics {
    /// Reports sent so far, this one included.
    pub sequence: u64,
    /// The core's time (ns since boot) when taken.
    pub time_ns: u64,
    /// VM exits of every kind.
    pub exits: u64,
    /// Virtual interrupts injected.
    pub injections: u64,
    /// Time the vCPU spent halted (ns).
    pub halted_ns: u64,
    /// Exits by the core's exit reason number (index 0: any other).
    pub by_kind: [u64; KINDS],
    /// Guest entries so far (the core's count): the VM's CPU time over
    /// the entries between two reports is what it runs per slice (from
    /// one entry to the next exit, the exit's handling included).
    pub entries: u64,
    /// The [`control`] bits the switcher follows now.
    pub following: u64,
    /// With [`control::TRACK_PERIODS`]: the guest's periods (a wake-up
    /// from HLT by a timer to its next HLT) completed so far.
    pub periods: u64,
    /// Periods whose work was not done when the next timer interrupt
    /// came (the guest found an interrupt waiting at its HLT): deadlines
    /// missed.
    pub overruns: u64,
    /// The guest's timer period: the median of its last wake-up intervals
    /// (ns; 0 before there are any).
    pub period_ns: u64,
    /// CPU time of all completed periods (ns), and of the longest one
    /// completed since the previous report.
    pub busy_ns: u64,
    pub busy_max_ns: u64,
    /// With [`control::YIELD_ON_FLUSH`]: times the switcher gave the CPU
    /// away at a WBINVD.
    pub flush_yields: u64,
    /// With [`control::TRACK_PROCESSES`]: processes seen (at most
    /// [`MAX_PROCESSES`]; the last entry then takes all others).
    pub process_count: u64,
    pub processes: [ProcessCharge; MAX_PROCESSES],
}

/// What the controller asks a switcher to observe or do ([`Control::flags`]).
pub mod control {
    /// Intercept MOV to CR3 and charge CPU time per guest process.
    pub const TRACK_PROCESSES: u64 = 1 << 0;
    /// Measure the periods of the guest's timer: CPU time from a wake-up
    /// to the next HLT, and overruns.
    pub const TRACK_PERIODS: u64 = 1 << 1;
    /// Intercept WBINVD and give the CPU away at each: the guest's cache
    /// state is gone anyway, so switching now costs the least.
    pub const YIELD_ON_FLUSH: u64 = 1 << 2;
    /// Intercept WBINVD to count it (exit kind 18), without a yield: what
    /// tells the controller a VM flushes its caches.
    pub const COUNT_FLUSHES: u64 = 1 << 3;
    /// Every bit.
    pub const ALL: u64 = TRACK_PROCESSES | TRACK_PERIODS | YIELD_ON_FLUSH | COUNT_FLUSHES;
}

/// A request from the controller: the [`control`] bits to follow from now
/// on (each message replaces the last).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Control {
    pub flags: u64,
}

/// Bytes of a control message.
pub const CONTROL_BYTES: u32 = core::mem::size_of::<Control>() as u32;

/// Bytes of a statistics message (a queue slot).
pub const SLOT_BYTES: u32 = core::mem::size_of::<VmStatistics>() as u32;

impl VmStatistics {
    /// Counts one exit of reason number `reason`.
    pub fn count_exit(&mut self, reason: u32) {
        self.exits += 1;
        let kind = if (reason as usize) < KINDS {
            reason as usize
        } else {
            0
        };
        self.by_kind[kind] += 1;
    }

    /// The kind with the most exits between `earlier` and this, and how
    /// many: (reason number, exits), or `None` without exits.
    pub fn busiest_kind_since(&self, earlier: &Self) -> Option<(usize, u64)> {
        (0..KINDS)
            .map(|kind| {
                (
                    kind,
                    self.by_kind[kind].saturating_sub(earlier.by_kind[kind]),
                )
            })
            .filter(|&(_, exits)| exits > 0)
            .max_by_key(|&(kind, exits)| (exits, core::cmp::Reverse(kind)))
    }
}

/// A short name for exit reason number `reason` (the core's
/// `ExitReason`), for reports.
pub fn kind_name(reason: usize) -> &'static str {
    match reason {
        1 => "cpuid",
        2 => "io",
        3 => "msr",
        4 => "hlt",
        5 => "hypercall",
        6 => "npf",
        7 => "shutdown",
        8 => "invalid",
        9 => "exception",
        10 => "poke",
        11 => "other",
        12 => "time-limit",
        13 => "interrupt-window",
        14 => "iret",
        15 => "xsetbv",
        16 => "cr8",
        17 => "cr3",
        18 => "wbinvd",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_counted_by_kind() {
        let mut earlier = VmStatistics::default();
        earlier.count_exit(4);
        let mut now = earlier;
        for reason in [2, 2, 4, 99] {
            now.count_exit(reason);
        }
        assert_eq!(now.exits, 5);
        assert_eq!(now.by_kind[2], 2);
        assert_eq!(now.by_kind[0], 1, "an unknown reason counts as kind 0");
        assert_eq!(now.busiest_kind_since(&earlier), Some((2, 2)));
        assert_eq!(earlier.busiest_kind_since(&earlier), None);
        assert_eq!(kind_name(2), "io");
        assert_eq!(
            SLOT_BYTES,
            40 + 8 * KINDS as u32 + 9 * 8 + 24 * MAX_PROCESSES as u32
        );
    }
}
