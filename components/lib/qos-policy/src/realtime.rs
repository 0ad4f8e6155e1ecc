//! Learning a VM's real-time need, "X µs every Y µs", by a feedback loop.
//!
//! A guest with a periodic timer wakes from HLT at each tick, does its
//! work and halts again before the next one. Its world switcher measures
//! this (an [`Observation`] per controller window): the timer's period,
//! the periods completed (woke, worked, halted before the next tick) and
//! the CPU time of the longest, and the overruns (the next tick came
//! before the work was done: a deadline missed). A [`Learner`] turns these
//! into a reservation on the VM's scheduling context ([`Reservation`]):
//! the period is the guest's own (rounded to a microsecond, clamped to
//! [`MIN_PERIOD_US`]..[`MAX_PERIOD_US`]) and the budget is the learned X.
//!
//! The need is the longest completed period of the last
//! [`NEED_WINDOWS`] windows, and the budget is steered towards it plus a
//! [`MARGIN_PERMILLE`] by a PID controller: the budget is what the VM
//! gets, so the budget is the integral of the controller's corrections;
//! the proportional term alone settles on a steady need without error, the
//! integral term takes out the lag on a need that keeps moving, and the
//! derivative term (on the budget, not the error, so a jump of the target
//! gives no kick) damps the overshoot the integral would cause. An overrun
//! says the need is at least the budget (the work was cut short, so its
//! time was never measured): the budget then grows multiplicatively, by
//! the fraction of periods that overran (all of them: it doubles), and the
//! integral is cleared. Anti-windup: the integral only sums errors within
//! [`INTEGRATE_BAND_PERMILLE`] of the target, is bounded to one target,
//! and stops summing while the budget is held at a bound; the budget
//! stays within [`MIN_BUDGET_US`] and the period. The learner has
//! converged when the budget stayed within [`CONVERGED_BAND_PERMILLE`]
//! for [`CONVERGED_WINDOWS`] windows without an overrun.
//!
//! All arithmetic is in integers (nanoseconds, gains in thousandths): the
//! components have no floating point.

/// The shortest period set on a scheduling context (µs): a guest whose
/// timer ticks faster gets the budget of several of its periods in each.
pub const MIN_PERIOD_US: u64 = 1_000;
/// The longest period set on a scheduling context (µs); a guest whose
/// timer ticks slower gets the budget of its period scaled to this one.
pub const MAX_PERIOD_US: u64 = 1_000_000;
/// The least budget (µs): enough for a guest to take a timer interrupt
/// through its world switcher (a few exits of a few µs each) and halt.
pub const MIN_BUDGET_US: u64 = 50;

/// The budget's margin over the need, in thousandths: 5%. The need is the
/// longest period measured, and a period may need a little more than any
/// measured so far (the simulation's guests vary by ±3%); the longest of
/// three seconds' periods comes within about 0.1% of the true maximum, so the
/// budget settles about 8% above the average need: within the 10% that
/// is the aim, and never below a period's need.
pub const MARGIN_PERMILLE: u64 = 50;
/// Windows (about 100 ms each) over which the longest completed period is
/// the need: three seconds. A heavy period that comes back at least once
/// in three seconds is never cut short, and a need that shrinks is
/// forgotten within three (a decaying maximum would forget a rare heavy
/// period sooner and a shrunken need later). One second was too short
/// under emulation, where a period's CPU time varies by a third from one
/// to the next: the heaviest of a second was now and then below the
/// next second's, and a deadline was missed.
pub const NEED_WINDOWS: usize = 30;

/// The proportional gain, in thousandths: each window the budget moves
/// 80% of the way to its target (less the derivative's damping), so a
/// start at 90% of the period is within 1% of a target at 20% in five
/// windows. Most of the target's movement is the need's: its longest
/// period over three seconds moves little from one window to the next, so a
/// large gain passes little jitter on; in the simulations, 0.6 to 0.8
/// settle alike, 0.8 the soonest.
pub const KP_PERMILLE: i64 = 800;
/// The integral gain, in thousandths: small, as the proportional term
/// already integrates (the budget is the sum of its corrections); it
/// takes out the lag behind a need that keeps growing or shrinking.
pub const KI_PERMILLE: i64 = 50;
/// The derivative gain, in thousandths, on the budget's last move: it
/// damps the overshoot of the integral term, and not much more (it
/// brakes a budget coming down from a doubling too).
pub const KD_PERMILLE: i64 = 50;
/// The integral sums only errors within this many thousandths of the
/// target (10%): far from the target the proportional term does the work,
/// and summing a large transient would overshoot below the need.
pub const INTEGRATE_BAND_PERMILLE: u64 = 100;

/// The budget moves by less than this (thousandths of itself, 2%) for
/// [`CONVERGED_WINDOWS`] windows without an overrun: converged.
pub const CONVERGED_BAND_PERMILLE: u64 = 20;
/// Windows the budget must stay within its band, without an overrun.
pub const CONVERGED_WINDOWS: u32 = 3;
/// A timer slower than this (ns: 10 s) is no real-time need: the learner
/// answers `None`, as for a guest without a periodic timer.
pub const LONGEST_TIMER_PERIOD_NS: u64 = 10_000_000_000;
/// A measured timer period within this many thousandths (1%) of the one
/// learned is the same period (the switcher's measurement wavers); a
/// period further away is a new one and learning starts over.
pub const PERIOD_TOLERANCE_PERMILLE: u64 = 10;

/// What a VM's world switcher measured of its guest's periodic timer over
/// one controller window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// The guest's timer period: ns between its wake-ups from HLT by its
    /// periodic timer (0: unknown, or no periodic timer; above
    /// [`LONGEST_TIMER_PERIOD_NS`]: not a real-time one).
    pub timer_period_ns: u64,
    /// Periods completed in the window: the guest woke from HLT at a
    /// tick, worked, and halted again before the next tick.
    pub periods: u32,
    /// The CPU time (ns) of the longest completed period in the window.
    pub max_period_ns: u64,
    /// Periods whose work was not done when the next tick came: deadlines
    /// missed. Their CPU time is no period's need and is not measured.
    /// Counted when that tick comes, or when the late work is done (the
    /// guest halts with the tick waiting, as `qos_api::PeriodTracker`
    /// counts): the learner works with either, but a switcher that counts
    /// at the halt says nothing while the guest never halts, and the
    /// learner then holds the budget.
    pub overruns: u32,
}

/// What to set on a real-time VM's scheduling context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The budget of every period (µs), at least [`MIN_BUDGET_US`] and at
    /// most the period.
    pub budget_us: u64,
    /// The period (µs): the guest's timer period, rounded to the
    /// microsecond, within [`MIN_PERIOD_US`]..=[`MAX_PERIOD_US`].
    pub period_us: u64,
    /// Whether the budget has settled ([`CONVERGED_WINDOWS`] windows
    /// within [`CONVERGED_BAND_PERMILLE`] without an overrun).
    pub converged: bool,
}

/// The learning state of one VM.
#[derive(Clone, Debug)]
pub struct Learner {
    /// Where the budget starts, in parts per million of the period.
    start: u32,
    /// The guest's timer period being learned (ns; 0: none).
    period_ns: u64,
    /// The budget of one guest period (ns).
    budget_ns: u64,
    /// The budget before the last window's move (for the derivative).
    previous_ns: u64,
    /// The longest completed period of each of the last windows.
    maxima: [u64; NEED_WINDOWS],
    next: usize,
    /// The sum of recent errors (ns), within its bounds.
    integral: i64,
    /// Where the budget entered its band, and windows it has stayed.
    anchor_ns: u64,
    steady: u32,
}

impl Learner {
    /// A learner that starts the budget at `start` parts per million
    /// ([`crate::WHOLE`]: all) of the guest's period once it sees one: the
    /// VM's allotment, say.
    pub const fn new(start: u32) -> Self {
        Self {
            start: if start > crate::WHOLE {
                crate::WHOLE
            } else {
                start
            },
            period_ns: 0,
            budget_ns: 0,
            previous_ns: 0,
            maxima: [0; NEED_WINDOWS],
            next: 0,
            integral: 0,
            anchor_ns: 0,
            steady: 0,
        }
    }

    /// Takes one window's observation, made while the VM ran under what
    /// the last call answered (or under the start budget), and answers
    /// the reservation for the next window, or `None` when the guest has
    /// no periodic timer (not real-time; what was learned is dropped).
    pub fn update(&mut self, observation: &Observation) -> Option<Reservation> {
        let period = observation.timer_period_ns;
        if period == 0 || period > LONGEST_TIMER_PERIOD_NS {
            *self = Self::new(self.start);
            return None;
        }
        if self.period_ns == 0 {
            self.restart(period, start_budget(self.start, period));
        } else if observation.overruns == 0
            && period.abs_diff(self.period_ns) * 1000 > self.period_ns * PERIOD_TOLERANCE_PERMILLE
        {
            // A new period (taken only from a window without overruns:
            // late wake-ups make the measured period waver): the same
            // fraction of it.
            let budget =
                u128::from(self.budget_ns) * u128::from(period) / u128::from(self.period_ns);
            self.restart(period, budget as u64);
        }
        let (low, high) = self.bounds();
        self.maxima[self.next] = observation.max_period_ns.min(self.period_ns);
        self.next = (self.next + 1) % NEED_WINDOWS;
        let before = self.budget_ns;
        if observation.overruns > 0 {
            // The work of some periods did not fit: their need is at least
            // the budget. Grow by the fraction of periods cut short (all:
            // double), at least by the margin, and to the target of what
            // did complete if that is more; start the integral afresh.
            let total = u64::from(observation.overruns) + u64::from(observation.periods);
            let fraction = (u64::from(observation.overruns) * 1000 / total).max(MARGIN_PERMILLE);
            let grown = self.budget_ns + self.budget_ns * fraction / 1000;
            self.budget_ns = grown.max(self.target()).clamp(low, high);
            self.integral = 0;
            self.anchor_ns = self.budget_ns;
            self.steady = 0;
        } else if observation.periods > 0 {
            let target = self.target();
            let error = target as i64 - self.budget_ns as i64;
            let saturated =
                (self.budget_ns <= low && error < 0) || (self.budget_ns >= high && error > 0);
            if !saturated && error.unsigned_abs() * 1000 <= target * INTEGRATE_BAND_PERMILLE {
                let bound = target as i64;
                self.integral = (self.integral + error).clamp(-bound, bound);
            }
            let moved = self.budget_ns as i64 - self.previous_ns as i64;
            let correction =
                (KP_PERMILLE * error + KI_PERMILLE * self.integral - KD_PERMILLE * moved) / 1000;
            self.budget_ns =
                (self.budget_ns as i64 + correction).clamp(low as i64, high as i64) as u64;
            if self.budget_ns.abs_diff(self.anchor_ns) * 1000
                <= self.anchor_ns * CONVERGED_BAND_PERMILLE
            {
                self.steady = self.steady.saturating_add(1);
            } else {
                self.anchor_ns = self.budget_ns;
                self.steady = 0;
            }
        }
        // A window with neither completed periods nor overruns says
        // nothing: the budget stays.
        self.previous_ns = before;
        Some(self.reservation())
    }

    /// The reservation as learned so far (`None` before a period is
    /// known).
    pub fn current(&self) -> Option<Reservation> {
        (self.period_ns != 0).then(|| self.reservation())
    }

    /// The need as measured: the longest completed period (ns) of the
    /// last [`NEED_WINDOWS`] windows.
    pub fn need_ns(&self) -> u64 {
        self.maxima.iter().copied().max().unwrap_or(0)
    }

    /// Whether the budget has settled.
    pub fn converged(&self) -> bool {
        self.steady >= CONVERGED_WINDOWS
    }

    /// What the budget aims for: the need and its margin, within bounds.
    fn target(&self) -> u64 {
        let need = self.need_ns();
        let (low, high) = self.bounds();
        (need + need * MARGIN_PERMILLE / 1000).clamp(low, high)
    }

    /// The budget's bounds for one guest period (ns): the least budget
    /// (as a share of the context's period, where that holds several
    /// guest periods), and the period.
    fn bounds(&self) -> (u64, u64) {
        let context = context_period_us(self.period_ns) * 1000;
        let low = (MIN_BUDGET_US * 1000 * self.period_ns / context).clamp(1, self.period_ns);
        (low, self.period_ns)
    }

    /// Starts learning a new period at `budget_ns` (within bounds).
    fn restart(&mut self, period_ns: u64, budget_ns: u64) {
        *self = Self {
            period_ns,
            ..Self::new(self.start)
        };
        let (low, high) = self.bounds();
        self.budget_ns = budget_ns.clamp(low, high);
        self.previous_ns = self.budget_ns;
        self.anchor_ns = self.budget_ns;
    }

    fn reservation(&self) -> Reservation {
        let period_us = context_period_us(self.period_ns);
        // The budget of one guest period, at the rate of the context's
        // period (the same when the guest's fits), rounded up.
        let budget_ns =
            u128::from(self.budget_ns) * u128::from(period_us) * 1000 / u128::from(self.period_ns);
        Reservation {
            budget_us: (budget_ns.div_ceil(1000) as u64).clamp(MIN_BUDGET_US, period_us),
            period_us,
            converged: self.converged(),
        }
    }
}

impl Default for Learner {
    /// Starts at half the period.
    fn default() -> Self {
        Self::new(crate::WHOLE / 2)
    }
}

/// The scheduling context's period (µs) for a guest timer period of
/// `period_ns`: rounded to the nearest microsecond (half a microsecond
/// off at most: the budget's rate is off by less than 0.05% at the
/// shortest period, far within the margin), within
/// [`MIN_PERIOD_US`]..=[`MAX_PERIOD_US`].
pub fn context_period_us(period_ns: u64) -> u64 {
    (period_ns.saturating_add(500) / 1000).clamp(MIN_PERIOD_US, MAX_PERIOD_US)
}

/// `start` parts per million of `period_ns`.
fn start_budget(start: u32, period_ns: u64) -> u64 {
    (u128::from(period_ns) * u128::from(start) / u128::from(crate::WHOLE)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WHOLE;
    use crate::testing::Prng;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    /// The controller's window.
    const WINDOW_NS: u64 = 100_000_000;

    /// A guest with a periodic timer that needs `need_ns` (± `jitter`
    /// thousandths, uniformly) of CPU at each tick, on a core that gives
    /// its context exactly the budget in each period (aligned with the
    /// ticks). Each tick's work waits for the one before (work beyond the
    /// budget spills into the next periods) and the guest halts after
    /// each. A tick that finds the work of an earlier one not done counts
    /// that one as an overrun (once), whose time is not measured; work
    /// done before the next tick is a completed period with its time.
    /// With `overrun_at_halt`, an overrun is counted only when the late
    /// work is done and the guest halts with the tick waiting (as the
    /// world switcher's `qos_api::PeriodTracker` counts): later, and not
    /// at all while the guest never halts.
    struct Guest {
        period_ns: u64,
        need_ns: u64,
        jitter: u64,
        /// Work of ticks not done yet (what is left, all of it, and
        /// whether it overran), the first partly done.
        queue: VecDeque<(u64, u64, bool)>,
        overrun_at_halt: bool,
        /// Simulated time (ns): of the next tick, and of the window's end.
        tick: u64,
        end: u64,
        rng: Prng,
    }

    impl Guest {
        fn new(period_us: u64, need_us: u64, jitter: u64, seed: u64) -> Self {
            Self {
                period_ns: period_us * 1000,
                need_ns: need_us * 1000,
                jitter,
                queue: VecDeque::new(),
                overrun_at_halt: false,
                tick: 0,
                end: 0,
                rng: Prng(seed),
            }
        }

        /// One window under `reservation` (whose period is the guest's:
        /// the tests' periods are whole microseconds).
        fn run(&mut self, reservation: Reservation) -> Observation {
            assert_eq!(reservation.period_us * 1000, self.period_ns);
            let mut observation = Observation {
                timer_period_ns: self.period_ns,
                ..Observation::default()
            };
            self.end += WINDOW_NS;
            while self.tick < self.end {
                self.tick += self.period_ns;
                // The tick: this period's work.
                let deviation = self.rng.signed(self.jitter);
                let work = (self.need_ns as i64 + self.need_ns as i64 * deviation / 1000) as u64;
                if let Some((_, _, late)) = self.queue.front_mut()
                    && !*late
                {
                    *late = true;
                    if !self.overrun_at_halt {
                        observation.overruns += 1;
                    }
                }
                self.queue.push_back((work, work, false));
                let mut budget = reservation.budget_us * 1000;
                while let Some(&mut (ref mut left, all, late)) = self.queue.front_mut() {
                    let done = (*left).min(budget);
                    *left -= done;
                    budget -= done;
                    if *left > 0 {
                        break;
                    }
                    self.queue.pop_front();
                    if !late {
                        observation.periods += 1;
                        observation.max_period_ns = observation.max_period_ns.max(all);
                    } else if self.overrun_at_halt {
                        observation.overruns += 1;
                    }
                }
            }
            observation
        }
    }

    /// A trace of a learner over a guest: the reservations answered and
    /// the observations made under each.
    struct Run {
        reservations: Vec<Reservation>,
        observations: Vec<Observation>,
    }

    impl Run {
        /// The first window from which the learner said converged.
        fn converged_at(&self) -> Option<usize> {
            self.reservations.iter().position(|r| r.converged)
        }
    }

    /// `windows` windows of `guest` under a learner started at `start`
    /// (parts per million of the period), the first under the start
    /// budget.
    fn simulate(learner: &mut Learner, guest: &mut Guest, start: u32, windows: usize) -> Run {
        let period_us = guest.period_ns / 1000;
        let reservation = Reservation {
            budget_us: period_us * u64::from(start) / u64::from(WHOLE),
            period_us,
            converged: false,
        };
        simulate_from(learner, guest, reservation, windows)
    }

    /// `windows` windows of `guest` under `learner`, the first under
    /// `reservation`; every answer is checked against its bounds.
    fn simulate_from(
        learner: &mut Learner,
        guest: &mut Guest,
        mut reservation: Reservation,
        windows: usize,
    ) -> Run {
        let mut run = Run {
            reservations: Vec::new(),
            observations: Vec::new(),
        };
        for _ in 0..windows {
            let observation = guest.run(reservation);
            reservation = learner.update(&observation).expect("a periodic guest");
            assert!(
                reservation.budget_us <= reservation.period_us,
                "above the period"
            );
            assert!(reservation.budget_us >= MIN_BUDGET_US);
            run.observations.push(observation);
            run.reservations.push(reservation);
        }
        run
    }

    /// Checks a run against the aim: converged in under 20 windows, and
    /// from then on a budget within 1.0..=1.10 times the need and no
    /// overrun. Answers the windows it took (the observations before the
    /// first converged answer).
    fn check_settles(run: &Run, need_us: u64, what: &str) -> usize {
        let at = run
            .converged_at()
            .unwrap_or_else(|| panic!("{what}: never converged: {:?}", trace(run)));
        assert!(
            at + 1 < 20,
            "{what}: converged only after {} windows: {:?}",
            at + 1,
            trace(run)
        );
        for (window, reservation) in run.reservations.iter().enumerate().skip(at) {
            let budget = reservation.budget_us;
            assert!(
                budget >= need_us && budget * 100 <= need_us * 110,
                "{what}: window {window}: budget {budget} us outside 1.0..1.1 x {need_us} us: {:?}",
                trace(run)
            );
            // The window run under it.
            if let Some(observation) = run.observations.get(window + 1) {
                assert_eq!(
                    observation.overruns,
                    0,
                    "{what}: overrun in window {}",
                    window + 1
                );
            }
        }
        at + 1
    }

    /// Each answer's budget, whether converged, and the overruns under
    /// it.
    fn trace(run: &Run) -> Vec<(u64, bool, u32)> {
        run.reservations
            .iter()
            .zip(run.observations.iter().skip(1))
            .map(|(r, o)| (r.budget_us, r.converged, o.overruns))
            .collect()
    }

    /// 2 ms every 10 ms, 0.5 ms every 5 ms and 7 ms every 20 ms, each
    /// ±3% from one period to the next, from a start at 10% and at 90% of
    /// the period, 20 seeds each: converged in under 20 windows (2 s),
    /// then 1.0 to 1.1 times the need without an overrun for the rest of
    /// 10 s, and never a budget above the period; whether overruns are
    /// counted at the tick or at the late halt.
    #[test]
    fn needs_are_learned_from_either_side() {
        let mut slowest = 0;
        for (need_us, period_us) in [(2_000, 10_000), (500, 5_000), (7_000, 20_000)] {
            for start in [WHOLE / 10, WHOLE * 9 / 10] {
                for (seed, overrun_at_halt) in
                    (1..=20).flat_map(|seed| [(seed, false), (seed, true)])
                {
                    let mut guest = Guest::new(period_us, need_us, 30, seed);
                    guest.overrun_at_halt = overrun_at_halt;
                    let mut learner = Learner::new(start);
                    let run = simulate(&mut learner, &mut guest, start, 100);
                    let what = format!(
                        "{need_us} us every {period_us} us from {start} ppm, seed {seed}{}",
                        if overrun_at_halt {
                            ", overruns at the halt"
                        } else {
                            ""
                        }
                    );
                    slowest = slowest.max(check_settles(&run, need_us, &what));
                    assert!(run.reservations.iter().all(|r| r.period_us == period_us));
                    // It learned the need, not only a budget that works:
                    // the longest period of the last second (within ±3%).
                    assert!(learner.need_ns().abs_diff(need_us * 1000) <= need_us * 30);
                }
            }
        }
        println!("slowest convergence: {slowest} windows");
    }

    /// The guest's work grows from 2 to 3 ms: the overruns grow the
    /// budget at once, and the new need is learned as the first was; back
    /// to 2 ms, the larger need is forgotten after three seconds and the
    /// budget comes down.
    #[test]
    fn a_changed_need_is_learned_again() {
        for seed in 1..=20 {
            let mut guest = Guest::new(10_000, 2_000, 30, seed);
            let mut learner = Learner::new(WHOLE / 2);
            let run = simulate(&mut learner, &mut guest, WHOLE / 2, 40);
            check_settles(&run, 2_000, "before");
            guest.need_ns = 3_000_000;
            let run = simulate_from(
                &mut learner,
                &mut guest,
                *run.reservations.last().unwrap(),
                60,
            );
            assert!(
                run.observations[0].overruns > 0,
                "the grown need overruns at first"
            );
            assert!(!run.reservations[0].converged);
            check_settles(&run, 3_000, &format!("grown, seed {seed}"));
            guest.need_ns = 2_000_000;
            let run = simulate_from(
                &mut learner,
                &mut guest,
                *run.reservations.last().unwrap(),
                60,
            );
            assert!(run.observations.iter().all(|o| o.overruns == 0));
            let back = run
                .reservations
                .iter()
                .position(|r| r.budget_us <= 2_200 && r.converged)
                .expect("back to the smaller need");
            assert!(
                back < NEED_WINDOWS + 20,
                "seed {seed}: back after {back} windows"
            );
            assert!(
                run.reservations[back..]
                    .iter()
                    .all(|r| (2_000..=2_200).contains(&r.budget_us))
            );
        }
    }

    #[test]
    fn a_guest_without_a_periodic_timer_is_not_real_time() {
        let mut learner = Learner::default();
        let quiet = Observation::default();
        assert_eq!(learner.update(&quiet), None);
        assert_eq!(learner.current(), None);
        // A timer too slow to be real-time is none either.
        let slow = Observation {
            timer_period_ns: LONGEST_TIMER_PERIOD_NS + 1,
            periods: 1,
            max_period_ns: 1_000_000,
            overruns: 0,
        };
        assert_eq!(learner.update(&slow), None);
        // Learned, then the timer stops: none, and what was learned goes.
        let mut guest = Guest::new(10_000, 2_000, 30, 1);
        let run = simulate(&mut learner, &mut guest, WHOLE / 2, 30);
        assert!(run.reservations.last().unwrap().converged);
        assert_eq!(learner.update(&quiet), None);
        assert_eq!(learner.current(), None);
        assert_eq!(learner.need_ns(), 0);
        // A timer again: learning starts over, at the start budget.
        let first = Observation {
            timer_period_ns: 10_000_000,
            periods: 0,
            max_period_ns: 0,
            overruns: 0,
        };
        let reservation = learner.update(&first).unwrap();
        assert_eq!(
            (reservation.budget_us, reservation.period_us),
            (5_000, 10_000)
        );
        assert!(!reservation.converged);
    }

    #[test]
    fn a_window_without_periods_changes_nothing() {
        let mut learner = Learner::default();
        let mut guest = Guest::new(10_000, 2_000, 30, 3);
        let run = simulate(&mut learner, &mut guest, WHOLE / 2, 30);
        let settled = *run.reservations.last().unwrap();
        let silent = Observation {
            timer_period_ns: 10_000_000,
            ..Observation::default()
        };
        for _ in 0..5 {
            assert_eq!(learner.update(&silent), Some(settled));
        }
    }

    #[test]
    fn the_period_is_the_guests_within_bounds() {
        // A wavering measurement is the same period: nothing starts over.
        let mut learner = Learner::default();
        let mut guest = Guest::new(10_000, 2_000, 30, 4);
        let run = simulate(&mut learner, &mut guest, WHOLE / 2, 30);
        let settled = *run.reservations.last().unwrap();
        assert!(settled.converged);
        let near = Observation {
            timer_period_ns: 10_060_000,
            periods: 10,
            max_period_ns: learner.need_ns(),
            overruns: 0,
        };
        let reservation = learner.update(&near).unwrap();
        assert!(reservation.converged && reservation.period_us == 10_000);
        // A different period measured in a window with overruns (late
        // wake-ups) is not taken.
        let late = Observation {
            timer_period_ns: 4_000_000,
            periods: 2,
            max_period_ns: 2_000_000,
            overruns: 3,
        };
        assert_eq!(learner.update(&late).unwrap().period_us, 10_000);
        // A new period in a clean window: the same fraction of it, and
        // learning starts over.
        let budget = learner.current().unwrap().budget_us;
        let new = Observation {
            timer_period_ns: 4_000_000,
            periods: 25,
            max_period_ns: 800_000,
            overruns: 0,
        };
        let reservation = learner.update(&new).unwrap();
        assert_eq!(reservation.period_us, 4_000);
        assert!(!reservation.converged);
        assert!(reservation.budget_us < budget && reservation.budget_us >= 800);
        // Rounded to the microsecond and clamped.
        assert_eq!(context_period_us(3_333_333), 3_333);
        assert_eq!(context_period_us(9_999_600), 10_000);
        assert_eq!(context_period_us(250_000), MIN_PERIOD_US);
        assert_eq!(context_period_us(5_000_000_000), MAX_PERIOD_US);
        assert_eq!(context_period_us(u64::MAX), MAX_PERIOD_US);
    }

    /// A guest ticking faster than the shortest period gets the budget of
    /// all its periods in each of the context's; one ticking slower than
    /// the longest, its period's budget at the same rate.
    #[test]
    fn short_and_long_timer_periods_keep_the_rate() {
        let window = |period_ns: u64, need_ns: u64, periods: u32| Observation {
            timer_period_ns: period_ns,
            periods,
            max_period_ns: need_ns,
            overruns: 0,
        };
        // 100 µs every 500 µs: 200 µs of every 1 ms, and the margin.
        let mut learner = Learner::default();
        for _ in 0..30 {
            learner.update(&window(500_000, 100_000, 200));
        }
        let fast = learner.current().unwrap();
        assert_eq!(fast.period_us, 1_000);
        assert!((205..=215).contains(&fast.budget_us), "{fast:?}");
        assert!(fast.converged);
        // 300 ms every 2 s: 150 ms of every second, and the margin.
        let mut learner = Learner::default();
        for _ in 0..30 {
            learner.update(&window(2_000_000_000, 300_000_000, 1));
        }
        let slow = learner.current().unwrap();
        assert_eq!(slow.period_us, 1_000_000);
        assert!((155_000..=160_000).contains(&slow.budget_us), "{slow:?}");
        // The least budget holds for a guest that needs (almost) nothing.
        let mut learner = Learner::default();
        for _ in 0..30 {
            learner.update(&window(10_000_000, 1_000, 10));
        }
        assert_eq!(learner.current().unwrap().budget_us, MIN_BUDGET_US);
    }

    /// A guest that needs more than its period: the budget is held at the
    /// period, never above, and never converged; when the need falls to
    /// 2 ms, the integral has not wound up and the budget comes down as
    /// soon as the work left over is done.
    #[test]
    fn a_need_above_the_period_winds_nothing_up() {
        let mut guest = Guest::new(10_000, 12_000, 30, 5);
        let mut learner = Learner::new(WHOLE / 10);
        let run = simulate(&mut learner, &mut guest, WHOLE / 10, 20);
        assert!(
            run.reservations[5..]
                .iter()
                .all(|r| r.budget_us == 10_000 && !r.converged)
        );
        // Two seconds 2 ms short in each period left 400 ms of work,
        // which the whole period catches up on at 8 ms a period (five
        // windows); then it settles as from any start.
        guest.need_ns = 2_000_000;
        let run = simulate_from(
            &mut learner,
            &mut guest,
            *run.reservations.last().unwrap(),
            60,
        );
        check_settles(&run, 2_000, "after the overload");
    }

    /// 80% of the period from a start at 10%: the budget doubles to the
    /// period within four windows, but the work left undone meanwhile
    /// (more than a window's worth) takes the spare 20% some windows to
    /// catch up on; then it settles as the others do.
    #[test]
    fn a_heavy_need_from_far_below_takes_longer() {
        for seed in 1..=10 {
            let mut guest = Guest::new(10_000, 8_000, 30, seed);
            let mut learner = Learner::new(WHOLE / 10);
            let run = simulate(&mut learner, &mut guest, WHOLE / 10, 80);
            assert!(run.reservations[3..].iter().all(|r| r.budget_us >= 8_000));
            let at = run.converged_at().expect("converged");
            assert!(
                at < 40,
                "seed {seed}: after {at} windows: {:?}",
                trace(&run)
            );
            assert!(
                run.reservations[at..]
                    .iter()
                    .all(|r| (8_000..=8_800).contains(&r.budget_us))
            );
            assert!(run.observations[at + 1..].iter().all(|o| o.overruns == 0));
        }
    }

    proptest! {
        /// Whatever the switcher says, the answer is a period within
        /// bounds and a budget between the least and the period.
        #[test]
        fn answers_stay_within_bounds(
            start in 0u32..=WHOLE,
            windows in proptest::collection::vec(
                (prop_oneof![Just(0u64), 1u64..100_000, 100_000u64..2_000_000_000, any::<u64>()],
                 0u32..1000, any::<u64>(), 0u32..1000),
                1..60,
            )
        ) {
            let mut learner = Learner::new(start);
            for (timer_period_ns, periods, max_period_ns, overruns) in windows {
                let observation = Observation { timer_period_ns, periods, max_period_ns, overruns };
                let answer = learner.update(&observation);
                prop_assert_eq!(answer.is_none(), timer_period_ns == 0 || timer_period_ns > LONGEST_TIMER_PERIOD_NS);
                if let Some(reservation) = answer {
                    prop_assert!((MIN_PERIOD_US..=MAX_PERIOD_US).contains(&reservation.period_us));
                    prop_assert!(reservation.budget_us >= MIN_BUDGET_US);
                    prop_assert!(reservation.budget_us <= reservation.period_us);
                    prop_assert_eq!(Some(reservation), learner.current());
                }
            }
        }

        /// Any need from 5% to 50% of any period from 1 to 50 ms, with
        /// ±3% jitter, from any start from 10% to 90%, overruns counted
        /// either way: learned as the fixed cases are. (From further below a larger need, the work
        /// that piles up while the budget grows takes longer to catch up
        /// on: see `a_heavy_need_from_far_below_takes_longer`.)
        #[test]
        fn any_need_is_learned(
            period_us in 1_000u64..=50_000,
            need_permille in 50u64..=500,
            start in WHOLE / 10..=WHOLE * 9 / 10,
            seed in any::<u64>(),
            overrun_at_halt in any::<bool>(),
        ) {
            let need_us = (period_us * need_permille / 1000).max(200);
            let mut guest = Guest::new(period_us, need_us, 30, seed);
            guest.overrun_at_halt = overrun_at_halt;
            let mut learner = Learner::new(start);
            let run = simulate(&mut learner, &mut guest, start, 60);
            check_settles(&run, need_us, &format!("{need_us} us every {period_us} us from {start}"));
        }
    }
}
