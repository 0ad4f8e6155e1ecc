//! Scheduling: scheduling contexts and the choice of the next thread.
//!
//! A [`SchedulingContext`] grants `budget` time units every `period`
//! (a periodic server, as in seL4's MCS kernel): time a thread runs is
//! charged to its context; when the budget is spent the thread is throttled
//! until the next period begins, and the budget refills. A context whose
//! budget equals its period is never throttled. Consumed time is kept for
//! read-out.
//!
//! The timer that ends a budget fires a little late (interrupt latency,
//! emulator timer slack), so a thread can overrun. Overruns are a debt:
//! they are taken from the following periods' budgets, so over any long
//! window a context gets its configured share exactly, however late the
//! timer.
//!
//! A context may also run on **slack** ([`SchedulingContext::set_slack`]):
//! when its budget is spent it stays a candidate, of the second rank —
//! it runs only when no thread with budget left is ready. Time on slack
//! is counted as consumed but is no overrun (no debt), so a context with
//! slack gets at least its share under contention and whatever others
//! leave when they idle: work conservation, with the shares themselves
//! set by the QoS controller.
//!
//! [`choose`] picks the highest-priority ready thread; among equals it
//! rotates, starting after the one that ran last (round robin); only
//! when none is ready, the same among threads on slack. Time units are
//! whatever the caller uses (the core uses TSC ticks); everything here is
//! pure and tested over simulated time.

/// Budget and period, in time units, and what has been used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulingContext {
    budget: u64,
    period: u64,
    remaining: u64,
    period_start: u64,
    consumed: u64,
    /// Time run beyond the budget, still to be paid from future periods.
    debt: u64,
    /// It may run on slack once its budget is spent.
    slack: bool,
    /// Its quantum (0: none, the core's round robin).
    quantum: u64,
}

impl SchedulingContext {
    /// A context that is never throttled.
    pub const UNLIMITED: Self = Self {
        budget: 1,
        period: 1,
        remaining: 1,
        period_start: 0,
        consumed: 0,
        debt: 0,
        slack: false,
        quantum: 0,
    };

    /// A context granting `budget` every `period` from time `now`
    /// (`budget` is clamped to `period`, a zero period to 1).
    pub fn new(budget: u64, period: u64, now: u64) -> Self {
        let period = period.max(1);
        let budget = budget.clamp(1, period);
        Self {
            budget,
            period,
            remaining: budget,
            period_start: now,
            consumed: 0,
            debt: 0,
            slack: false,
            quantum: 0,
        }
    }

    /// Changes budget and period; the new budget applies from `now`
    /// (whether it may use slack stays as it was). The same budget and
    /// period again change nothing: the period, what is left of it and
    /// any debt stay, so a controller that repeats its settings (after a
    /// restart, say) gives nobody a fresh budget or a forgiven overrun.
    pub fn configure(&mut self, budget: u64, period: u64, now: u64) {
        let fresh = Self::new(budget, period, now);
        if (fresh.budget, fresh.period) == (self.budget, self.period) {
            return;
        }
        let (consumed, slack, quantum) = (self.consumed, self.slack, self.quantum);
        *self = fresh;
        self.consumed = consumed;
        self.slack = slack;
        self.quantum = quantum;
    }

    /// Sets its quantum (0: none): see [`choose_holding`].
    pub fn set_quantum(&mut self, quantum: u64) {
        self.quantum = quantum;
    }

    /// Its quantum (0: none).
    #[inline]
    pub fn quantum(&self) -> u64 {
        self.quantum
    }

    /// Whether, its budget spent, it may run on slack.
    pub fn set_slack(&mut self, slack: bool) {
        self.slack = slack;
    }

    /// Whether it may run on slack once its budget is spent.
    pub fn has_slack(&self) -> bool {
        self.slack
    }

    /// Whether it is spent and may run on slack now.
    #[inline]
    pub fn on_slack(&self) -> bool {
        self.slack && self.is_depleted()
    }

    /// Whether the context is never throttled.
    #[inline]
    pub fn is_unlimited(&self) -> bool {
        self.budget >= self.period
    }

    /// Total time charged.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Budget left in the current period.
    #[inline]
    pub fn remaining(&self) -> u64 {
        if self.is_unlimited() {
            u64::MAX
        } else {
            self.remaining
        }
    }

    /// Starts a new period if `now` has passed the current one; the new
    /// budget first pays off debt (every period that passed pays its budget).
    pub fn refill(&mut self, now: u64) {
        if now >= self.period_start.saturating_add(self.period) {
            let periods = (now - self.period_start) / self.period;
            self.period_start += periods * self.period;
            let paid = self.debt.min(periods.saturating_mul(self.budget));
            self.debt -= paid;
            // What the last period's budget has left after its share of the
            // payment (earlier periods paid in full first).
            let earlier = (periods - 1).saturating_mul(self.budget).min(paid);
            self.remaining = self.budget - (paid - earlier).min(self.budget);
        }
    }

    /// Time still owed from overruns.
    pub fn debt(&self) -> u64 {
        self.debt
    }

    /// Charges `elapsed` units of running, ending at `now`. Run on slack
    /// (dispatched with its budget spent), it is consumed time but no
    /// overrun.
    /// An unlimited context only counts the time (its periods do not
    /// matter: it is never throttled, and a new configuration starts its
    /// period afresh).
    #[inline]
    pub fn charge(&mut self, elapsed: u64, now: u64) {
        self.consumed = self.consumed.saturating_add(elapsed);
        if !self.is_unlimited() {
            self.charge_budget(elapsed, now);
        }
    }

    /// [`Self::charge`]'s part for a limited context.
    fn charge_budget(&mut self, elapsed: u64, now: u64) {
        if !self.on_slack() {
            if elapsed > self.remaining {
                self.debt = self.debt.saturating_add(elapsed - self.remaining);
            }
            self.remaining = self.remaining.saturating_sub(elapsed);
        }
        // Running across a period boundary: the new period starts full
        // (time past the boundary is not carried over; it is at most the
        // overshoot of one timer interrupt).
        self.refill(now);
    }

    /// Whether the budget is spent (the thread must wait for a refill).
    #[inline]
    pub fn is_depleted(&self) -> bool {
        !self.is_unlimited() && self.remaining == 0
    }

    /// When the next period begins.
    pub fn next_refill(&self) -> u64 {
        self.period_start.saturating_add(self.period)
    }
}

/// What [`choose`] needs to know of a thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Candidate {
    /// Runnable with budget left.
    pub ready: bool,
    /// Runnable, its budget spent, and allowed to run on slack.
    pub slack: bool,
    pub priority: u32,
}

/// The next thread to run: the highest priority among ready ones, rotating
/// among equals starting after `last`; if none is ready, the same among
/// those on slack.
pub fn choose(candidates: &[Candidate], last: Option<usize>) -> Option<usize> {
    choose_with(candidates.len(), last, |index| candidates[index])
}

/// [`choose`] over `count` threads described by `candidate(index)`, so the
/// caller need not build an array.
pub fn choose_with(
    count: usize,
    last: Option<usize>,
    candidate: impl Fn(usize) -> Candidate,
) -> Option<usize> {
    if count == 0 {
        return None;
    }
    let start = last.map_or(0, |l| if l + 1 >= count { 0 } else { l + 1 });
    // The best ready thread, and the best on slack should none be ready.
    let mut best: Option<(usize, u32)> = None;
    let mut spare: Option<(usize, u32)> = None;
    let mut index = start;
    for _ in 0..count {
        let this = candidate(index);
        if this.ready && best.is_none_or(|(_, priority)| this.priority > priority) {
            best = Some((index, this.priority));
        } else if this.slack && spare.is_none_or(|(_, priority)| this.priority > priority) {
            spare = Some((index, this.priority));
        }
        index += 1;
        if index == count {
            index = 0;
        }
    }
    best.or(spare).map(|(index, _)| index)
}

/// [`choose_with`], except that `holder` — the running thread while its
/// quantum lasts — keeps the processor when it is still of the best rank
/// (ready, or on slack when nothing is ready) and priority: a quantum
/// lets a thread keep its cache and TLB warm against equals, never
/// against a better thread.
pub fn choose_holding(
    count: usize,
    last: Option<usize>,
    holder: Option<usize>,
    candidate: impl Fn(usize) -> Candidate,
) -> Option<usize> {
    let chosen = choose_with(count, last, &candidate)?;
    if let Some(holder) = holder.filter(|&holder| holder < count) {
        let (held, best) = (candidate(holder), candidate(chosen));
        let same_rank = if best.ready { held.ready } else { held.slack };
        if same_rank && held.priority == best.priority {
            return Some(holder);
        }
    }
    Some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_enforced_and_refilled() {
        let mut sc = SchedulingContext::new(2, 10, 0);
        assert!(!sc.is_unlimited());
        sc.charge(1, 1);
        assert_eq!(sc.remaining(), 1);
        sc.charge(1, 2);
        assert!(sc.is_depleted());
        assert_eq!(sc.next_refill(), 10);
        sc.refill(9);
        assert!(sc.is_depleted());
        sc.refill(10);
        assert!(!sc.is_depleted());
        assert_eq!(sc.remaining(), 2);
        assert_eq!(sc.consumed(), 2);
        // Skipping several periods lands on the right boundary.
        sc.refill(57);
        assert_eq!(sc.next_refill(), 60);
    }

    #[test]
    fn unlimited_contexts_are_never_depleted() {
        let mut sc = SchedulingContext::new(10, 10, 0);
        sc.charge(1000, 1000);
        assert!(!sc.is_depleted());
        assert_eq!(sc.consumed(), 1000);
        let clamped = SchedulingContext::new(50, 10, 0);
        assert!(clamped.is_unlimited());
        let zero = SchedulingContext::new(0, 0, 0);
        assert!(zero.is_unlimited());
    }

    #[test]
    fn reconfiguration_keeps_consumed_time() {
        let mut sc = SchedulingContext::new(5, 10, 0);
        sc.charge(3, 3);
        sc.configure(1, 4, 3);
        assert_eq!(sc.consumed(), 3);
        assert_eq!(sc.remaining(), 1);
        assert_eq!(sc.next_refill(), 7);
    }

    #[test]
    fn the_same_settings_again_change_nothing() {
        let mut sc = SchedulingContext::new(2, 10, 0);
        sc.charge(5, 5);
        assert_eq!(sc.debt(), 3);
        sc.configure(2, 10, 6);
        assert_eq!((sc.debt(), sc.remaining(), sc.next_refill()), (3, 0, 10));
        sc.configure(3, 10, 6);
        assert_eq!((sc.debt(), sc.remaining(), sc.next_refill()), (0, 3, 16));
    }

    #[test]
    fn priority_then_round_robin() {
        let c = |ready, priority| Candidate {
            ready,
            slack: false,
            priority,
        };
        let threads = [c(true, 1), c(true, 5), c(false, 9), c(true, 5)];
        assert_eq!(choose(&threads, None), Some(1));
        assert_eq!(choose(&threads, Some(1)), Some(3));
        assert_eq!(choose(&threads, Some(3)), Some(1));
        assert_eq!(choose(&[c(false, 1)], None), None);
        assert_eq!(choose(&[], None), None);
        assert_eq!(choose(&[c(true, 0)], Some(0)), Some(0));
    }

    #[test]
    fn overruns_are_paid_back() {
        let mut sc = SchedulingContext::new(2, 10, 0);
        sc.charge(5, 5); // 3 over budget
        assert_eq!(sc.debt(), 3);
        sc.refill(10);
        // The new budget of 2 pays 2 of the 3: nothing left to run.
        assert!(sc.is_depleted());
        assert_eq!(sc.debt(), 1);
        sc.refill(20);
        assert_eq!(sc.remaining(), 1);
        assert_eq!(sc.debt(), 0);
        // Running through three period boundaries uses those periods'
        // budgets (1 + 3 x 2); the other 24 are owed. Idle periods then pay
        // the debt off.
        sc.charge(31, 51);
        assert_eq!(sc.debt(), 24);
        sc.refill(200);
        assert_eq!(sc.debt(), 0);
        assert_eq!(sc.remaining(), 2);
    }

    /// The budget timer fires `latency` late every time: with the debt
    /// ledger the long-run share is still exactly budget / period.
    #[test]
    fn late_timer_still_gives_the_exact_share() {
        for latency in [0u64, 1, 3, 7] {
            let mut spinner = SchedulingContext::new(20, 100, 0);
            let mut now = 0u64;
            let end = 100_000;
            while now < end {
                spinner.refill(now);
                if spinner.is_depleted() {
                    now = spinner.next_refill();
                } else {
                    let run = (spinner.remaining() + latency).min(end - now);
                    now += run;
                    spinner.charge(run, now);
                }
            }
            let share = spinner.consumed() as f64 / end as f64;
            assert!(
                (share - 0.2).abs() < 0.002,
                "latency {latency}: share {share}"
            );
        }
    }

    /// Simulates a spinning thread with budget 2/10 next to an always-ready
    /// low-priority thread, with a timer that fires at budget exhaustion and
    /// refills, over 1000 time units: the spinner gets exactly 20%.
    #[test]
    fn simulated_budget_split() {
        let mut spinner = SchedulingContext::new(2, 10, 0);
        let mut background = 0u64;
        let mut now = 0u64;
        while now < 1000 {
            spinner.refill(now);
            if !spinner.is_depleted() {
                let run = spinner.remaining().min(1000 - now);
                now += run;
                spinner.charge(run, now);
            } else {
                let until = spinner.next_refill().min(1000);
                background += until - now;
                now = until;
            }
        }
        assert_eq!(spinner.consumed(), 200);
        assert_eq!(background, 800);
    }

    #[test]
    fn slack_is_second_rank_and_owes_nothing() {
        let c = |ready, slack, priority| Candidate {
            ready,
            slack,
            priority,
        };
        // Any thread with budget beats any on slack, whatever the priority.
        let threads = [c(false, true, 9), c(true, false, 1), c(false, true, 9)];
        assert_eq!(choose(&threads, None), Some(1));
        // Among those on slack: priority, then round robin.
        let spare = [
            c(false, true, 3),
            c(false, true, 5),
            c(false, false, 9),
            c(false, true, 5),
        ];
        assert_eq!(choose(&spare, None), Some(1));
        assert_eq!(choose(&spare, Some(1)), Some(3));

        let mut sc = SchedulingContext::new(2, 10, 0);
        sc.set_slack(true);
        sc.charge(2, 2);
        assert!(sc.on_slack());
        // Run on slack: consumed, no debt; the next period is whole.
        sc.charge(5, 7);
        assert_eq!(sc.debt(), 0);
        assert_eq!(sc.consumed(), 7);
        sc.refill(10);
        assert_eq!(sc.remaining(), 2);
        // Reconfiguring keeps the slack setting.
        sc.configure(3, 10, 10);
        assert!(sc.has_slack());
    }

    /// Two always-ready threads of one priority, scheduled at every time
    /// unit (other threads' wake-ups, say): with quanta of 20 and 2 units
    /// the first runs 20 units at a time, the second 2; without, they
    /// alternate every unit. A better thread always takes over at once.
    #[test]
    fn a_quantum_holds_the_processor_against_equals_only() {
        let c = |ready, priority| Candidate {
            ready,
            slack: false,
            priority,
        };
        let runs = |quanta: [u64; 2]| {
            let mut runs = [Vec::new(), Vec::new()];
            let (mut last, mut until) = (None, 0);
            let mut current: Option<(usize, u64)> = None;
            for now in 0..200u64 {
                let holder = last.filter(|_| now < until);
                let chosen = choose_holding(2, last, holder, |_| c(true, 1)).unwrap();
                if holder != Some(chosen) {
                    until = now + quanta[chosen].max(1);
                }
                match current {
                    Some((index, length)) if index == chosen => {
                        current = Some((index, length + 1));
                    }
                    _ => {
                        if let Some((index, length)) = current {
                            runs[index].push(length);
                        }
                        current = Some((chosen, 1));
                    }
                }
                last = Some(chosen);
            }
            runs
        };
        let held = runs([20, 2]);
        assert!(held[0].iter().all(|&length| length == 20), "{held:?}");
        assert!(held[1].iter().all(|&length| length == 2), "{held:?}");
        let alternating = runs([0, 0]);
        assert!(alternating.iter().flatten().all(|&length| length == 1));
        // Better priority, or budget against slack, wins over a holder.
        let better = [c(true, 1), c(true, 2)];
        assert_eq!(choose_holding(2, Some(0), Some(0), |i| better[i]), Some(1));
        let on_slack = |i: usize| Candidate {
            ready: i == 1,
            slack: i == 0,
            priority: 1,
        };
        assert_eq!(choose_holding(2, Some(0), Some(0), on_slack), Some(1));
        // A holder that is no candidate any more (it waits) does not run.
        let waiting = [c(false, 1), c(true, 1)];
        assert_eq!(choose_holding(2, Some(0), Some(0), |i| waiting[i]), Some(1));
        let mut sc = SchedulingContext::new(2, 10, 0);
        sc.set_quantum(7);
        sc.configure(3, 10, 1);
        assert_eq!(sc.quantum(), 7, "reconfiguring keeps the quantum");
    }

    /// Two spinning threads of one priority with budgets 2 and 1 of every
    /// 3 (shares 2:1) and slack: under contention exactly 2:1; while the
    /// first idles the second takes the whole processor; never a debt.
    #[test]
    fn budgets_with_slack_give_exact_shares_and_conserve_work() {
        let mut contexts = [
            SchedulingContext::new(20, 30, 0),
            SchedulingContext::new(10, 30, 0),
        ];
        for context in &mut contexts {
            context.set_slack(true);
        }
        let mut last = None;
        let mut run =
            |contexts: &mut [SchedulingContext; 2], from: u64, to: u64, awake: [bool; 2]| {
                let mut used = [0u64; 2];
                for now in from..to {
                    for context in contexts.iter_mut() {
                        context.refill(now);
                    }
                    let candidates = [0, 1].map(|index| Candidate {
                        ready: awake[index] && !contexts[index].is_depleted(),
                        slack: awake[index] && contexts[index].on_slack(),
                        priority: 1,
                    });
                    if let Some(index) = choose(&candidates, last) {
                        contexts[index].charge(1, now + 1);
                        used[index] += 1;
                        last = Some(index);
                    }
                }
                used
            };
        assert_eq!(run(&mut contexts, 0, 3000, [true, true]), [2000, 1000]);
        assert_eq!(run(&mut contexts, 3000, 6000, [false, true]), [0, 3000]);
        assert_eq!(run(&mut contexts, 6000, 9000, [true, true]), [2000, 1000]);
        assert!(contexts.iter().all(|context| context.debt() == 0));
    }
}
