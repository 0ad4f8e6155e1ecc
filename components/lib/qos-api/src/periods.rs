//! The periods of a guest's timer, as a world switcher measures them
//! while the controller asks (`control::TRACK_PERIODS`), for learning a
//! real-time guest's need ("X µs every Y µs").
//!
//! A period starts when the guest wakes from HLT (its timer's interrupt
//! is due) and ends at its next HLT: the CPU time between the two
//! (the switcher's consumed time, which the core keeps exactly) is the
//! work of that period. When the guest reaches its HLT with an interrupt
//! already waiting, the next tick came before the work was done: an
//! overrun, a deadline missed (its CPU time is not a period's need, so
//! it is not counted as one). The period itself is the guest's periodic
//! timer's, as programmed, when the switcher knows it
//! ([`PeriodTracker::programmed`]: the LAPIC timer in periodic mode or the
//! PIT as a rate generator), which lets the controller set a context
//! period that keeps in step with the guest's ticks; else the median of
//! the last [`INTERVALS`] intervals between wake-ups (a late wake-up
//! moves one interval, not the median).

/// Wake-up intervals the period's median is taken over.
pub const INTERVALS: usize = 8;

/// The running figures.
#[derive(Clone, Debug, Default)]
pub struct PeriodTracker {
    /// The consumed time at the wake-up that opened the current period.
    open: Option<u64>,
    /// The time of the last wake-up.
    last_wake: Option<u64>,
    intervals: [u64; INTERVALS],
    filled: usize,
    next: usize,
    /// The period of the guest's timer as programmed (0: not known).
    programmed: u64,
    /// Periods completed, overruns, CPU time of completed periods, and the
    /// longest completed since [`PeriodTracker::take_max`].
    pub periods: u64,
    pub overruns: u64,
    pub busy: u64,
    max: u64,
}

impl PeriodTracker {
    /// Nothing measured yet.
    pub const fn new() -> Self {
        Self {
            open: None,
            last_wake: None,
            intervals: [0; INTERVALS],
            filled: 0,
            next: 0,
            programmed: 0,
            periods: 0,
            overruns: 0,
            busy: 0,
            max: 0,
        }
    }

    /// The guest woke from HLT at time `now` having consumed `consumed`.
    pub fn woke(&mut self, now: u64, consumed: u64) {
        if let Some(last) = self.last_wake
            && now > last
        {
            self.intervals[self.next] = now - last;
            self.next = (self.next + 1) % INTERVALS;
            self.filled = (self.filled + 1).min(INTERVALS);
        }
        self.last_wake = Some(now);
        self.open = Some(consumed);
    }

    /// The guest executed HLT having consumed `consumed`; `late` when an
    /// interrupt was already waiting for it.
    pub fn halted(&mut self, consumed: u64, late: bool) {
        let Some(opened) = self.open.take() else {
            return;
        };
        if late {
            self.overruns += 1;
            return;
        }
        let work = consumed.saturating_sub(opened);
        self.periods += 1;
        self.busy = self.busy.saturating_add(work);
        self.max = self.max.max(work);
    }

    /// The period of the guest's periodic timer as programmed (`None`:
    /// it has none, or it is not known).
    pub fn programmed(&mut self, period: Option<u64>) {
        self.programmed = period.unwrap_or(0);
    }

    /// The programmed period if known, else the median interval between
    /// wake-ups (0 before two wake-ups).
    pub fn period(&self) -> u64 {
        if self.programmed > 0 {
            return self.programmed;
        }
        if self.filled == 0 {
            return 0;
        }
        let mut sorted = [0; INTERVALS];
        sorted[..self.filled].copy_from_slice(&self.intervals[..self.filled]);
        sorted[..self.filled].sort_unstable();
        sorted[self.filled / 2]
    }

    /// The longest completed period's CPU time since the last
    /// [`PeriodTracker::take_max`].
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The longest completed period's CPU time since the last call, and
    /// starts over.
    pub fn take_max(&mut self) -> u64 {
        core::mem::take(&mut self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_between_wake_up_and_hlt_is_a_period() {
        let mut tracker = PeriodTracker::new();
        tracker.halted(5, false); // no period open yet
        assert_eq!(tracker.periods, 0);
        let mut consumed = 0;
        for n in 0..10u64 {
            tracker.woke(n * 10_000, consumed);
            consumed += 2_000 + n;
            tracker.halted(consumed, false);
        }
        assert_eq!((tracker.periods, tracker.overruns), (10, 0));
        assert_eq!(tracker.period(), 10_000);
        assert_eq!(tracker.busy, 20_045);
        assert_eq!(tracker.take_max(), 2_009);
        assert_eq!(tracker.take_max(), 0);
    }

    #[test]
    fn a_late_hlt_is_an_overrun_and_one_late_wake_up_moves_no_median() {
        let mut tracker = PeriodTracker::new();
        let wakes = [0, 10_000, 20_000, 33_000, 40_000, 50_000];
        for (n, &at) in wakes.iter().enumerate() {
            tracker.woke(at, n as u64 * 5_000);
            tracker.halted(n as u64 * 5_000 + 4_000, n == 3);
        }
        assert_eq!((tracker.periods, tracker.overruns), (5, 1));
        assert_eq!(tracker.period(), 10_000);
        assert_eq!(PeriodTracker::new().period(), 0);
        // The timer as programmed wins over the wake-ups.
        tracker.programmed(Some(10_001));
        assert_eq!(tracker.period(), 10_001);
        tracker.programmed(None);
        assert_eq!(tracker.period(), 10_000);
    }
}
