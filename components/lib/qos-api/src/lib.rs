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
#![no_std]
#![forbid(unsafe_code)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The suffix of a switcher's statistics queue's name.
pub const QUEUE_SUFFIX: &str = "-stats";
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
}

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
        assert_eq!(SLOT_BYTES, 40 + 8 * KINDS as u32);
    }
}
