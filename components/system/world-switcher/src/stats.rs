//! The VM's statistics: every VM exit by kind, virtual interrupts
//! injected and time halted, counted as the switcher goes
//! (`qos_api::VmStatistics`). The STATISTICS hypercall answers the totals;
//! when the system gives the switcher a queue `<switcher>-stats` (capdl
//! makes one to a QoS controller), the running totals are sent on it at
//! most every `qos_api::REPORT_EVERY_NS`, checked (one TSC read) at
//! every exit and every wake-up: no system call but the send itself, which
//! signals nobody unless the controller waits for it, and a report that
//! finds the queue full is dropped (the next one carries the totals).

use qos_api::{REPORT_EVERY_NS, VmStatistics};
use runtime::abi::start::ResourceView;
use runtime::queue::Sender;
use runtime::syscall;
use vm_platform::clock::Clock;

/// The counts, and where they go.
pub struct Statistics {
    pub totals: VmStatistics,
    queue: Option<Sender<VmStatistics>>,
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
        Self {
            totals: VmStatistics::default(),
            queue,
            halted_ticks: 0,
            sent_at: runtime::rdtsc(),
            every: nanoseconds.tsc_for(REPORT_EVERY_NS),
            nanoseconds,
        }
    }

    /// An exit of reason number `reason`.
    pub fn exit(&mut self, reason: u32) {
        self.totals.count_exit(reason);
        self.report_if_due();
    }

    /// A virtual interrupt injected.
    pub fn injected(&mut self) {
        self.totals.injections += 1;
    }

    /// The vCPU was halted for `ticks` TSC ticks.
    pub fn halted(&mut self, ticks: u64) {
        self.halted_ticks += ticks;
        self.report_if_due();
    }

    /// Sends the totals if a report is due.
    fn report_if_due(&mut self) {
        let Some(queue) = self.queue.as_mut() else {
            return;
        };
        let now = runtime::rdtsc();
        if now.wrapping_sub(self.sent_at) < self.every {
            return;
        }
        self.sent_at = now;
        self.totals.sequence += 1;
        self.totals.time_ns = syscall::time_ns();
        self.totals.halted_ns = self.nanoseconds.ticks_in(self.halted_ticks);
        // Full (the controller is behind) or its controller restarted:
        // the next report carries the totals.
        let _ = queue.try_send(&self.totals);
    }
}
