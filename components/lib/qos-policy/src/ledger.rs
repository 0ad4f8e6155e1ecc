//! A debt ledger that keeps long-run shares exact.
//!
//! Each window the controller knows what every entity was entitled to
//! (its fraction of the window's elapsed time, as [`crate::allot`]
//! computed it: [`entitlement`]) and what it received (its context's
//! consumed time, read from the core). A busy entity can receive less than
//! its entitlement — preempted, or it gave the processor away early (at a
//! cache flush, say) — and then another busy entity received more. The
//! [`Ledger`] writes the difference down ([`Ledger::settle`]) and pays it
//! back over the next windows ([`Ledger::adjust`]): a bounded extra share
//! for the entity owed, taken from those ahead, so each busy entity's
//! cumulative received/entitled ratio converges to 1.
//!
//! The ledger is zero-sum: what is owed to some is exactly what others
//! owe. What [`Ledger::adjust`] moved is a payment: it comes off the
//! balances of both sides. The rest of the difference is measured against
//! the adjusted allotment: an entity's shortfall is credit only as far as
//! busy entities were ahead in the same window (time lost to components
//! the controller does not manage is nobody's debt), and a busy entity's
//! surplus is debt only as far as it matches a shortfall (time an idle
//! entity left, which the core hands out as slack, is nobody's credit).
//! Idle entities accrue nothing: they left their time by choice. Every
//! balance is bounded by [`CAP`], so an entity held back for long cannot
//! starve the others afterwards, and each window moves at most
//! [`MAX_EXTRA`] to or from any entity.
//!
//! Units: time in nanoseconds, shares in parts per million
//! ([`crate::WHOLE`]), as `allot` computes them.

use crate::WHOLE;

/// The most an entity may be owed, or owe, as parts per million of a
/// window of the whole processor: half a window (50 ms of a 100 ms
/// window). Large enough for a steady loss to be repaid in full (an
/// entity that loses 10% of a half share settles at about a tenth of a
/// window), small enough that paying it back (at most [`MAX_EXTRA`] a
/// window) is over within a few windows.
pub const CAP: u32 = WHOLE / 2;
/// A balance is paid back over about this many windows: each window pays
/// this fraction of it. Two windows smooth a loss that varies from window
/// to window without leaving much owed.
pub const PAYBACK_WINDOWS: u64 = 2;
/// The most one window's allotment of an entity moves, up or down, in
/// parts per million: a tenth of the processor, so repayment never takes
/// more than that from anyone's share.
pub const MAX_EXTRA: u32 = WHOLE / 10;

/// The entitlement (ns) of `fraction` (parts per million) of a window of
/// `window_ns`.
pub fn entitlement(fraction: u32, window_ns: u64) -> u64 {
    (u128::from(fraction) * u128::from(window_ns) / u128::from(WHOLE)) as u64
}

/// What `N` entities owe each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ledger<const N: usize> {
    /// Per entity (ns): positive, owed to it; negative, it owes.
    balance: [i64; N],
    /// What the last [`Ledger::adjust`] moved (ns of the window it
    /// expected): positive, paid to it; negative, taken from it.
    paid: [i64; N],
    /// Whether it was idle in the last window settled.
    idle: [bool; N],
    /// The last window's length (ns): what a balance is paid back over.
    window_ns: u64,
}

impl<const N: usize> Default for Ledger<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Ledger<N> {
    /// Nobody owes anybody.
    pub const fn new() -> Self {
        Self {
            balance: [0; N],
            paid: [0; N],
            idle: [false; N],
            window_ns: 0,
        }
    }

    /// Writes down one window of `window_ns`: what each entity was
    /// `entitled` to (its unadjusted allotment's time: [`entitlement`])
    /// and what it `received` (ns), and whether it was `idle` (it left
    /// part of its allotment unused: [`crate::Demand`]). What the last
    /// [`Ledger::adjust`] moved is taken as paid. Entities are the
    /// slices' indices; those beyond the shortest slice (or `N`) take no
    /// part.
    pub fn settle(&mut self, window_ns: u64, entitled: &[u64], received: &[u64], idle: &[bool]) {
        let count = N.min(entitled.len()).min(received.len()).min(idle.len());
        self.window_ns = window_ns;
        // The payments: off both sides' balances (zero-sum by making).
        let paid = core::mem::replace(&mut self.paid, [0; N]);
        for (balance, paid) in self.balance.iter_mut().zip(paid) {
            *balance -= paid;
        }
        // The rest against the adjusted allotments.
        let mut short = [0u64; N];
        let mut ahead = [0u64; N];
        for i in 0..count {
            self.idle[i] = idle[i];
            if idle[i] {
                continue;
            }
            let allotted = entitled[i].saturating_add_signed(paid[i]);
            short[i] = allotted.saturating_sub(received[i]);
            ahead[i] = received[i].saturating_sub(allotted);
        }
        // What the entities short lost to those ahead: credit to the one,
        // debt to the other, in proportion to each one's difference.
        let moved = short.iter().sum::<u64>().min(ahead.iter().sum());
        let credit = share_out(moved, &short);
        let debit = share_out(moved, &ahead);
        for i in 0..count {
            self.balance[i] = self.balance[i]
                .saturating_add(credit[i] as i64)
                .saturating_sub(debit[i] as i64);
        }
        self.bound();
    }

    /// Moves the next window's `allotments` (parts per million, as
    /// [`crate::allot`] answered them) to pay what is owed: each busy
    /// entity owed gets an extra of a [`PAYBACK_WINDOWS`]th of its credit
    /// (at most [`MAX_EXTRA`]), taken from the busy entities that owe in
    /// proportion to their debt (at most [`MAX_EXTRA`] from each, and no
    /// more than it has). The sum of the allotments stays the same, so it
    /// never exceeds the whole. Reservations and limits are not consulted:
    /// an entity owed may go past its limit for a window (its long-run
    /// share stays at its limit), and one that owes below its reservation
    /// (it is ahead of it in the long run).
    ///
    /// Entities idle in the last window settled are neither paid nor
    /// charged. The move is remembered as paid (over a window as long as
    /// the last) for the next [`Ledger::settle`]: call this once per
    /// window, with the allotments it will set.
    pub fn adjust(&mut self, allotments: &mut [u32]) {
        let count = N.min(allotments.len());
        self.paid = [0; N];
        if self.window_ns == 0 {
            return;
        }
        let payment = |balance: u64| {
            let ppm = u128::from(balance) * u128::from(WHOLE)
                / (u128::from(self.window_ns) * u128::from(PAYBACK_WINDOWS));
            ppm.min(u128::from(MAX_EXTRA)) as u64
        };
        let mut wants = [0u64; N];
        let mut gives = [0u64; N];
        for i in 0..count {
            if self.idle[i] {
                continue;
            }
            let balance = self.balance[i];
            if balance > 0 {
                wants[i] = payment(balance.unsigned_abs())
                    .min(u64::from(WHOLE - allotments[i].min(WHOLE)));
            } else {
                gives[i] = payment(balance.unsigned_abs()).min(u64::from(allotments[i]));
            }
        }
        let moved = wants.iter().sum::<u64>().min(gives.iter().sum());
        let extra = share_out(moved, &wants);
        let taken = share_out(moved, &gives);
        for i in 0..count {
            allotments[i] = allotments[i] + extra[i] as u32 - taken[i] as u32;
        }
        // In time: what the ones owed get, split exactly among those that
        // owe (each about half its balance at most, so none changes sign).
        let got: [u64; N] = core::array::from_fn(|i| entitlement(extra[i] as u32, self.window_ns));
        let gave = share_out(got.iter().sum(), &taken);
        for i in 0..count {
            self.paid[i] = got[i] as i64 - gave[i] as i64;
        }
    }

    /// What is owed to `entity` (ns; negative: what it owes), 0 for an
    /// index beyond `N`.
    pub fn balance(&self, entity: usize) -> i64 {
        self.balance.get(entity).copied().unwrap_or(0)
    }

    /// Clears what `entity` owes or is owed (it restarted, or left), and
    /// takes the same off the other side, so the ledger stays zero-sum.
    pub fn forgive(&mut self, entity: usize) {
        if let Some(balance) = self.balance.get_mut(entity) {
            *balance = 0;
            self.paid = [0; N];
            self.rebalance();
        }
    }

    /// Keeps every balance within [`CAP`] of a window, and the ledger
    /// zero-sum.
    fn bound(&mut self) {
        let cap = entitlement(CAP, self.window_ns).min(i64::MAX as u64) as i64;
        for balance in &mut self.balance {
            *balance = (*balance).clamp(-cap, cap);
        }
        self.rebalance();
    }

    /// Scales the larger side (owed or owing) down to the other.
    fn rebalance(&mut self) {
        let owed: [u64; N] = core::array::from_fn(|i| self.balance[i].max(0) as u64);
        let owing: [u64; N] = core::array::from_fn(|i| self.balance[i].min(0).unsigned_abs());
        let (credits, debts) = (owed.iter().sum::<u64>(), owing.iter().sum::<u64>());
        if credits > debts {
            let scaled = share_out(debts, &owed);
            for (balance, &new) in self.balance.iter_mut().zip(&scaled) {
                if *balance > 0 {
                    *balance = new as i64;
                }
            }
        } else if debts > credits {
            let scaled = share_out(credits, &owing);
            for (balance, &new) in self.balance.iter_mut().zip(&scaled) {
                if *balance < 0 {
                    *balance = -(new as i64);
                }
            }
        }
    }
}

/// `total` split in proportion to `weights`, exactly: each part rounded
/// down, and what rounding left given one unit each to the first
/// entries with a weight. With `total` at most the weights' sum, no
/// part exceeds its weight.
fn share_out<const N: usize>(total: u64, weights: &[u64; N]) -> [u64; N] {
    let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    let mut parts = [0u64; N];
    if sum == 0 {
        return parts;
    }
    for (part, &weight) in parts.iter_mut().zip(weights) {
        *part = (u128::from(total) * u128::from(weight) / sum) as u64;
    }
    let mut left = total - parts.iter().sum::<u64>();
    for (part, &weight) in parts.iter_mut().zip(weights) {
        if left == 0 {
            break;
        }
        if weight > 0 {
            *part += 1;
            left -= 1;
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Prng;
    use crate::{Demand, Entity, MAX_ENTITIES, allot};
    use proptest::prelude::*;

    /// The controller's window.
    const WINDOW_NS: u64 = 100_000_000;
    const PERCENT: u32 = WHOLE / 100;

    /// Cumulative time of a simulation, per entity.
    #[derive(Default)]
    struct Totals {
        entitled: [u64; 2],
        received: [u64; 2],
    }

    /// Two busy entities with `shares` over `windows` windows; the first
    /// loses 5-10% of what it is allotted in each (it gives the processor
    /// away at its cache flushes) and the second takes it (slack). With
    /// `ledger`, the allotments are adjusted each window.
    fn two_busy(
        shares: [u32; 2],
        mut ledger: Option<&mut Ledger<2>>,
        seed: u64,
        windows: usize,
    ) -> Totals {
        let entities = shares.map(Entity::shares);
        let fractions = allot(&entities, &[Demand::Busy; 2]).unwrap();
        let mut rng = Prng(seed);
        let mut totals = Totals::default();
        for _ in 0..windows {
            let mut allotments = [fractions[0], fractions[1]];
            if let Some(ledger) = ledger.as_deref_mut() {
                ledger.adjust(&mut allotments);
            }
            assert!(allotments.iter().sum::<u32>() <= WHOLE);
            let loss = rng.range(50, 100); // thousandths
            let first = entitlement(allotments[0], WINDOW_NS) * (1000 - loss) / 1000;
            let received = [first, WINDOW_NS - first];
            let entitled = [0, 1].map(|i| entitlement(fractions[i], WINDOW_NS));
            if let Some(ledger) = ledger.as_deref_mut() {
                ledger.settle(WINDOW_NS, &entitled, &received, &[false; 2]);
                assert_eq!(ledger.balance(0), -ledger.balance(1), "zero-sum");
            }
            for i in 0..2 {
                totals.entitled[i] += entitled[i];
                totals.received[i] += received[i];
            }
        }
        totals
    }

    /// One of two busy entities loses 5-10% of every window: over 100
    /// windows the ledger gives it its share within 1% (received over
    /// entitled, and the split between the two); without the ledger it
    /// falls short by the loss.
    #[test]
    fn a_steady_loss_is_paid_back() {
        for shares in [[1, 1], [2, 1], [1, 3]] {
            for seed in 1..=10 {
                let mut ledger = Ledger::<2>::new();
                let totals = two_busy(shares, Some(&mut ledger), seed, 100);
                for i in 0..2 {
                    let ratio = totals.received[i] as f64 / totals.entitled[i] as f64;
                    assert!(
                        (ratio - 1.0).abs() < 0.01,
                        "{shares:?} seed {seed}: entity {i} got {ratio}"
                    );
                }
                let split = totals.received[0] as f64 / totals.received[1] as f64;
                let aim = f64::from(shares[0]) / f64::from(shares[1]);
                assert!(
                    (split / aim - 1.0).abs() < 0.01,
                    "{shares:?} seed {seed}: split {split}"
                );
                // What is still owed is less than a window's loss.
                assert!(ledger.balance(0) > 0 && ledger.balance(0) < WINDOW_NS as i64 / 5);
                // Without it: short by about the loss.
                let totals = two_busy(shares, None, seed, 100);
                let ratio = totals.received[0] as f64 / totals.entitled[0] as f64;
                assert!(ratio < 0.94, "{shares:?}: {ratio} without the ledger");
            }
        }
    }

    /// What the balance converges to under a steady loss: the payback
    /// holds the loss's replacement, and the ledger does not oscillate.
    #[test]
    fn the_payback_settles() {
        let mut ledger = Ledger::<2>::new();
        let fractions = [WHOLE / 2, WHOLE / 2];
        let entitled = fractions.map(|f| entitlement(f, WINDOW_NS));
        let mut history = Vec::new();
        for _ in 0..30 {
            let mut allotments = fractions;
            ledger.adjust(&mut allotments);
            history.push(allotments[0]);
            // 10% of its allotment lost, every window.
            let first = entitlement(allotments[0], WINDOW_NS) * 9 / 10;
            ledger.settle(
                WINDOW_NS,
                &entitled,
                &[first, WINDOW_NS - first],
                &[false; 2],
            );
        }
        // 50% / 0.9: 55.6% to receive 50%.
        let settled = *history.last().unwrap();
        assert!(settled.abs_diff(555_555) < 1_000, "{history:?}");
        assert!(
            history.windows(2).all(|w| w[1] + 2 >= w[0]) && history.iter().all(|&a| a < 555_560),
            "it rises without overshoot: {history:?}"
        );
    }

    /// An entity held back for long (busy, but another took all its time
    /// for 10 s) is owed at most the cap, and paying it back never takes
    /// more than a tenth of the processor a window from the other.
    #[test]
    fn the_cap_bounds_what_a_long_loss_costs_later() {
        let mut ledger = Ledger::<2>::new();
        let fractions = [WHOLE / 2, WHOLE / 2];
        let entitled = fractions.map(|f| entitlement(f, WINDOW_NS));
        for _ in 0..100 {
            ledger.settle(WINDOW_NS, &entitled, &[0, WINDOW_NS], &[false; 2]);
        }
        let cap = entitlement(CAP, WINDOW_NS) as i64;
        assert_eq!(ledger.balance(0), cap);
        assert_eq!(ledger.balance(1), -cap);
        // Then both run as allotted: the first is paid back, the second
        // keeps at least its share less the bound, and within a few
        // windows all is paid back.
        let mut paid = 0;
        for window in 0..100 {
            let mut allotments = fractions;
            ledger.adjust(&mut allotments);
            assert!(allotments[1] >= WHOLE / 2 - MAX_EXTRA);
            assert_eq!(allotments.iter().sum::<u32>(), WHOLE);
            paid += u64::from(allotments[0] - WHOLE / 2);
            let received = allotments.map(|a| entitlement(a, WINDOW_NS));
            ledger.settle(WINDOW_NS, &entitled, &received, &[false; 2]);
            if ledger.balance(0) < cap / 100 {
                assert!(window < 15, "paid back only after {window} windows");
                break;
            }
        }
        assert!(entitlement(paid as u32, WINDOW_NS) as i64 <= cap);
    }

    /// An idle entity that leaves its time earns nothing; nor is the busy
    /// one that takes it (as slack) in debt for it.
    #[test]
    fn idle_entities_earn_nothing() {
        let mut ledger = Ledger::<3>::new();
        for _ in 0..50 {
            let entitled = [50, 30, 20].map(|p| entitlement(p * PERCENT, WINDOW_NS));
            let received = [5, 75, 20].map(|p| entitlement(p * PERCENT, WINDOW_NS));
            ledger.settle(WINDOW_NS, &entitled, &received, &[true, false, false]);
        }
        assert_eq!(
            (0..3).map(|i| ledger.balance(i)).collect::<Vec<_>>(),
            [0, 0, 0]
        );
        let mut allotments = [10 * PERCENT, 60 * PERCENT, 30 * PERCENT];
        ledger.adjust(&mut allotments);
        assert_eq!(allotments, [10 * PERCENT, 60 * PERCENT, 30 * PERCENT]);
    }

    /// Three entities, one idle (it keeps a little allotment and uses
    /// half of it): the busy one that loses time at its flushes gets its
    /// entitlement back from the other busy one; the idle one is neither
    /// paid nor charged.
    #[test]
    fn with_an_idle_one_the_busy_ones_settle_between_them() {
        let entities = [Entity::shares(1), Entity::shares(1), Entity::shares(2)];
        let demands = [Demand::Busy, Demand::Busy, Demand::Idle(10 * PERCENT)];
        let fractions = allot(&entities, &demands).unwrap();
        assert_eq!(&fractions[..3], &[450_000, 450_000, 100_000]);
        let mut ledger = Ledger::<MAX_ENTITIES>::new();
        let mut rng = Prng(9);
        let (mut entitled_total, mut received_total) = (0u64, 0u64);
        for _ in 0..100 {
            let mut allotments = [fractions[0], fractions[1], fractions[2]];
            ledger.adjust(&mut allotments);
            assert_eq!(allotments[2], fractions[2]);
            let loss = rng.range(50, 100);
            let first = entitlement(allotments[0], WINDOW_NS) * (1000 - loss) / 1000;
            let third = WINDOW_NS / 20;
            let received = [first, WINDOW_NS - first - third, third];
            let entitled = [0, 1, 2].map(|i| entitlement(fractions[i], WINDOW_NS));
            ledger.settle(WINDOW_NS, &entitled, &received, &[false, false, true]);
            assert_eq!(ledger.balance(2), 0);
            entitled_total += entitled[0];
            received_total += received[0];
        }
        let ratio = received_total as f64 / entitled_total as f64;
        assert!((ratio - 1.0).abs() < 0.01, "{ratio}");
    }

    /// Time lost to something outside the ledger (nobody busy was ahead)
    /// is nobody's debt.
    #[test]
    fn time_lost_outside_is_nobodys_debt() {
        let mut ledger = Ledger::<2>::new();
        let entitled = [WINDOW_NS / 2; 2];
        ledger.settle(
            WINDOW_NS,
            &entitled,
            &[WINDOW_NS / 4, WINDOW_NS / 2],
            &[false; 2],
        );
        assert_eq!((ledger.balance(0), ledger.balance(1)), (0, 0));
        // Partly: only what the other was ahead.
        ledger.settle(
            WINDOW_NS,
            &entitled,
            &[WINDOW_NS / 4, WINDOW_NS / 2 + 1_000],
            &[false; 2],
        );
        assert_eq!((ledger.balance(0), ledger.balance(1)), (1_000, -1_000));
        // Forgiven: nobody owes anything.
        ledger.forgive(1);
        assert_eq!((ledger.balance(0), ledger.balance(1)), (0, 0));
        assert_eq!(ledger.balance(7), 0);
    }

    #[test]
    fn shares_are_split_exactly() {
        assert_eq!(share_out(10, &[1, 1, 1]), [4, 3, 3]);
        assert_eq!(share_out(0, &[1, 2]), [0, 0]);
        assert_eq!(share_out(5, &[0, 0]), [0, 0]);
        assert_eq!(share_out(7, &[0, 7, 0]), [0, 7, 0]);
        assert_eq!(entitlement(WHOLE / 4, WINDOW_NS), 25_000_000);
    }

    proptest! {
        /// Whatever happens in the windows: the ledger stays zero-sum and
        /// within its cap, idle entities earn no credit, and the adjusted
        /// allotments keep their sum (never above the whole), move by at
        /// most the bound, only up for those owed and only down for those
        /// that owe, and not at all for idle ones.
        #[test]
        fn the_ledger_keeps_its_bounds(
            windows in proptest::collection::vec(
                (1_000_000u64..200_000_000,
                 proptest::collection::vec((0u32..=100, 0u32..=120, any::<bool>()), 4)),
                1..40,
            )
        ) {
            let mut ledger = Ledger::<4>::new();
            for (window_ns, raw) in windows {
                let entitled: Vec<u64> = raw.iter().map(|&(p, _, _)| entitlement(p * PERCENT / 4, window_ns)).collect();
                let received: Vec<u64> = raw.iter().map(|&(_, p, _)| entitlement(p * PERCENT / 4, window_ns)).collect();
                let idle: Vec<bool> = raw.iter().map(|&(_, _, idle)| idle).collect();
                let before: Vec<i64> = (0..4).map(|i| ledger.balance(i)).collect();
                ledger.settle(window_ns, &entitled, &received, &idle);
                let cap = entitlement(CAP, window_ns) as i64;
                prop_assert_eq!((0..4).map(|i| ledger.balance(i)).sum::<i64>(), 0);
                for i in 0..4 {
                    prop_assert!(ledger.balance(i).abs() <= cap);
                    if idle[i] {
                        prop_assert!(ledger.balance(i) <= before[i].max(0), "idle {} earned", i);
                    }
                }
                let mut allotments: Vec<u32> = raw.iter().map(|&(p, _, _)| p * PERCENT / 4).collect();
                let original = allotments.clone();
                ledger.adjust(&mut allotments);
                prop_assert_eq!(allotments.iter().sum::<u32>(), original.iter().sum::<u32>());
                prop_assert!(allotments.iter().sum::<u32>() <= WHOLE);
                for i in 0..4 {
                    prop_assert!(allotments[i].abs_diff(original[i]) <= MAX_EXTRA);
                    if idle[i] || ledger.balance(i) == 0 {
                        prop_assert_eq!(allotments[i], original[i]);
                    } else if ledger.balance(i) > 0 {
                        prop_assert!(allotments[i] >= original[i]);
                    } else {
                        prop_assert!(allotments[i] <= original[i]);
                    }
                }
            }
        }
    }
}
