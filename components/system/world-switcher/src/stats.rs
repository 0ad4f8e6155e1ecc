//! The VM's statistics: every VM exit by kind, virtual interrupts
//! injected and time halted, counted as the switcher goes
//! (`qos_api::VmStatistics`). The STATISTICS hypercall answers the totals;
//! when the system gives the switcher a queue `<switcher>-stats` (capdl
//! makes one to a QoS controller), the running totals are sent on it at
//! most every `qos_api::REPORT_EVERY_NS`, checked (one TSC read) at
//! every exit and every wake-up: no system call but the send itself, which
//! signals nobody unless the controller waits for it, and a report that
//! finds the queue full is dropped (the next one carries the totals).
//!
//! On the queue `<switcher>-control` the controller asks for observations
//! that cost something ([`qos_api::control`]): the switcher follows the
//! latest request it finds when it reports and at every poke (the
//! controller's message pokes the vCPU). Processes and periods are
//! charged the switcher's own consumed CPU time, read from the core
//! (one system call per CR3 write, wake-up and HLT while asked for).

use qos_api::{Control, PeriodTracker, ProcessTable, REPORT_EVERY_NS, VmStatistics, control};
use runtime::abi::start::ResourceView;
use runtime::queue::{Receiver, Sender};
use runtime::syscall;
use vm_platform::clock::Clock;

/// The counts, and where they go.
pub struct Statistics {
    pub totals: VmStatistics,
    queue: Option<Sender<VmStatistics>>,
    /// The controller's requests, and the [`control`] bits followed now.
    control: Option<Receiver<Control>>,
    pub following: u64,
    /// CPU time per guest process (with [`control::TRACK_PROCESSES`]).
    pub processes: ProcessTable,
    /// The guest timer's periods (with [`control::TRACK_PERIODS`]).
    pub periods: PeriodTracker,
    /// TSC ticks spent halted, and the TSC at the last report.
    halted_ticks: u64,
    sent_at: u64,
    /// TSC ticks between reports, and TSC ticks to nanoseconds.
    every: u64,
    nanoseconds: Clock,
}

impl Statistics {
    /// Counting from now; reporting on the queue ending in
    /// [`qos_api::QUEUE_SUFFIX`] the system gives, if any.
    pub fn new(start: &runtime::Start, nanoseconds: Clock) -> Self {
        let queue = start.views().find_map(|(name, view)| {
            matches!(view, ResourceView::QueueSend(_))
                .then_some(name)
                .filter(|name| name.ends_with(qos_api::QUEUE_SUFFIX))
                .and_then(|name| Sender::open(start, name).ok())
        });
        let control = start.views().find_map(|(name, view)| {
            matches!(view, ResourceView::QueueReceive(_))
                .then_some(name)
                .filter(|name| name.ends_with(qos_api::CONTROL_SUFFIX))
                .and_then(|name| Receiver::open(start, name).ok())
        });
        if let Some(queue) = &control {
            queue.arm();
        }
        Self {
            totals: VmStatistics::default(),
            queue,
            control,
            following: 0,
            processes: ProcessTable::new(),
            periods: PeriodTracker::new(),
            halted_ticks: 0,
            sent_at: runtime::rdtsc(),
            every: nanoseconds.tsc_for(REPORT_EVERY_NS),
            nanoseconds,
        }
    }

    /// An exit of reason number `reason`; `entries` reads the guest
    /// entries in all (the core counts them in the state page), wanted only
    /// for a report. `true` when a report went out (the time to look for
    /// the controller's requests).
    #[inline(always)]
    pub fn exit(&mut self, reason: u32, entries: impl FnOnce() -> u64) -> bool {
        self.totals.count_exit(reason);
        self.report_if_due(entries)
    }

    /// The controller's latest request, if it asks for something other
    /// than what is followed now (unknown bits dropped).
    pub fn requested(&mut self) -> Option<u64> {
        let queue = self.control.as_mut()?;
        let mut latest = None;
        while let Ok(message) = queue.try_receive() {
            latest = Some(message.flags & control::ALL);
        }
        // Every message signals the switcher (which pokes a running
        // vCPU), so a request reaches even a guest that never exits, and
        // every message is a chance to report. Armed again each time: a
        // restarted controller's queue forgets it.
        queue.arm();
        latest.filter(|&flags| flags != self.following)
    }

    /// Whether the controller asks for any of `bit`.
    pub fn follows(&self, bit: u64) -> bool {
        self.following & bit != 0
    }

    /// A virtual interrupt injected.
    pub fn injected(&mut self) {
        self.totals.injections += 1;
    }

    /// The vCPU was halted for `ticks` TSC ticks (`entries` as for
    /// [`Statistics::exit`]).
    pub fn halted(&mut self, ticks: u64, entries: impl FnOnce() -> u64) -> bool {
        self.halted_ticks += ticks;
        self.report_if_due(entries)
    }

    /// Sends the totals if a report is due; `true` when it went out. The
    /// test for a statistics queue is inlined into every exit; the rest is
    /// not.
    #[inline(always)]
    fn report_if_due(&mut self, entries: impl FnOnce() -> u64) -> bool {
        self.queue.is_some() && self.report_if_late(entries())
    }

    /// [`Statistics::report_if_due`] with a queue to report to, the core
    /// having counted `entries` guest entries (no entry happens between an
    /// exit and its handling, so this is the count at the last exit).
    #[inline(never)]
    fn report_if_late(&mut self, entries: u64) -> bool {
        let Some(queue) = self.queue.as_mut() else {
            return false;
        };
        let now = runtime::rdtsc();
        if now.wrapping_sub(self.sent_at) < self.every {
            return false;
        }
        self.sent_at = now;
        let totals = &mut self.totals;
        totals.sequence += 1;
        totals.entries = entries;
        totals.time_ns = syscall::time_ns();
        totals.halted_ns = self.nanoseconds.ticks_in(self.halted_ticks);
        totals.following = self.following;
        if self.processes.is_tracking() {
            self.processes.charge(syscall::consumed_ns(None));
        }
        totals.process_count = self.processes.entries().len() as u64;
        totals.processes = self.processes.table();
        let periods = &mut self.periods;
        totals.periods = periods.periods;
        totals.overruns = periods.overruns;
        totals.period_ns = periods.period();
        totals.busy_ns = periods.busy;
        totals.busy_max_ns = periods.max();
        // Full (the controller is behind) or its controller restarted:
        // the next report carries the totals, and the heaviest period
        // since the last report that went out.
        if queue.try_send(totals).is_ok() {
            periods.take_max();
        }
        true
    }
}
