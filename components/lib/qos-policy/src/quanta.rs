//! Processor-state quanta: a time slice per VM from a profile of how it
//! uses the processor, with history.
//!
//! A VM switched away loses its warm caches and TLB; how much that costs
//! depends on what it does. Each window the controller hands a VM's
//! [`History`] a [`Sample`] (exits per second, WBINVD exits per second,
//! the share of time halted), and the history answers a [`Quantum`]:
//!
//! - a VM in a tight loop (few exits, hardly halting) keeps its cache and
//!   TLB warm and loses most by being switched: a long slice
//!   ([`LONG_QUANTUM_US`]);
//! - a VM that exits often is switched to its world switcher at every
//!   exit anyway, so a long slice gains it little and keeps others
//!   waiting: a short one ([`SHORT_QUANTUM_US`], never below
//!   [`MIN_QUANTUM_US`]);
//! - a VM that flushes its caches often (WBINVD) has nothing warm to keep:
//!   the short slice too, and its switcher gives the processor away at
//!   each flush ([`Quantum::yield_on_flush`]), when switching costs it
//!   nothing;
//! - anything else: no quantum ([`NO_QUANTUM`]): the core's own round
//!   robin, which rotates among equals at every scheduling decision and
//!   at least every 10 ms.
//!
//! The history is an exponentially weighted average ([`HISTORY_WEIGHT`]);
//! rates are averaged as logarithms (a geometric mean), as they vary over
//! orders of magnitude: one window a hundred times busier moves the
//! average about three times up (the fourth root of 100), not
//! twenty-six times. Every profile is entered
//! at one threshold and left at another ([`Profile`]), so a VM near a
//! threshold does not flip from one window to the next.
//!
//! All arithmetic is in integers (logarithms in 16.16 fixed point).

use crate::WHOLE;

/// The slice of a VM in a tight loop (µs): twice the core's round-robin
/// slice.
pub const LONG_QUANTUM_US: u32 = 20_000;
/// The quantum of a VM with no marked profile: none (0, as the core's
/// `SchedulingConfigure` takes it), so the core rotates among equals at
/// every decision and at least every 10 ms (`docs/CORE.md`, "Quanta").
pub const NO_QUANTUM: u32 = 0;
/// The slice of an exit-heavy or flushing VM (µs).
pub const SHORT_QUANTUM_US: u32 = 2_000;
/// No slice is shorter (µs): below a millisecond the switches themselves
/// (through the core and, at each exit, the world switcher) take a
/// noticeable part of it.
pub const MIN_QUANTUM_US: u32 = 1_000;
const _: () = assert!(SHORT_QUANTUM_US >= MIN_QUANTUM_US);

/// Each window moves the history a quarter of the way to what it saw:
/// a lasting change is more than three-quarters taken within five windows
/// (half a second), and one odd window moves a rate by only the fourth
/// root of its oddness (the share halted by a quarter of its).
pub const HISTORY_WEIGHT: i64 = 4;

/// Exits per second at or below which a VM that hardly halts is in a
/// tight loop: two a millisecond. A computing guest's timer ticks (a few
/// exits each, at 250 Hz or so) stay below it.
pub const TIGHT_ENTER_EXITS: u32 = 2_000;
/// ... and above which it is no longer.
pub const TIGHT_LEAVE_EXITS: u32 = 5_000;
/// The share of time halted (parts per million) at or below which a VM
/// with few exits is in a tight loop: 5%.
pub const TIGHT_ENTER_HALTED: u32 = WHOLE / 20;
/// ... and above which it is no longer: 30% (one window spent halted
/// moves the average only to 25%).
pub const TIGHT_LEAVE_HALTED: u32 = WHOLE * 3 / 10;
/// Exits per second of running from which a VM is exit-heavy: one every
/// 100 µs, each a switch to its world switcher and back, so little of its
/// cache state survives from one exit to the next anyway. (Under QEMU's
/// TCG an exit round trip takes about 45 µs of host time, so a guest
/// that does nothing but exit reaches about 22,000 a second: the
/// threshold must be well below that for emulated runs to show it.)
pub const HEAVY_ENTER_EXITS: u32 = 10_000;
/// ... and below which it is no longer (2.5 times lower: a VM at the
/// threshold that has one window ten times quieter stays), still above
/// where a tight loop ends.
pub const HEAVY_LEAVE_EXITS: u32 = 6_000;
/// WBINVD exits per second from which a VM flushes often: each flush
/// empties the caches (its own warm state and everyone's), so a VM that
/// flushes this often keeps nothing warm for a long slice.
pub const FLUSH_ENTER_PER_S: u32 = 10;
/// ... and below which it no longer does.
pub const FLUSH_LEAVE_PER_S: u32 = 4;

/// What a VM did over one window. Rates are per second of the VM's own
/// running (its consumed CPU time), not of the window: a profile is how
/// the VM behaves when it runs, whatever share it is given (an exit-heavy
/// VM given a third of the processor exits a third as often per second
/// of the window, but as often per second it runs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// VM exits per second of running, of every kind.
    pub exits_per_s: u32,
    /// WBINVD exits per second of running.
    pub wbinvd_per_s: u32,
    /// The share of the window its vCPU was halted, in parts per million.
    pub halted: u32,
}

impl Sample {
    /// From counts over a span of `span_ns` in which the VM ran for
    /// `running_ns`: `exits` and `wbinvd` exits, and `halted_ns` halted.
    /// `None` for an empty span; a VM that did not run has no rates.
    pub fn from_counts(
        exits: u64,
        wbinvd: u64,
        halted_ns: u64,
        (span_ns, running_ns): (u64, u64),
    ) -> Option<Self> {
        if span_ns == 0 {
            return None;
        }
        let rate = |count: u64| {
            (u128::from(count) * 1_000_000_000 / u128::from(running_ns.max(1)))
                .min(u128::from(u32::MAX)) as u32
        };
        Some(Self {
            exits_per_s: rate(exits),
            wbinvd_per_s: rate(wbinvd),
            halted: (u128::from(halted_ns) * u128::from(WHOLE) / u128::from(span_ns))
                .min(u128::from(WHOLE)) as u32,
        })
    }
}

/// How a VM uses the processor, as its history says. Each is entered at
/// its `*_ENTER_*` thresholds and kept until its `*_LEAVE_*` ones; a
/// profile earlier in this list is entered even from a later one that
/// still holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Flushes its caches often: the short slice, and a yield at each
    /// flush.
    Flushing,
    /// Exits often: the short slice.
    ExitHeavy,
    /// A tight loop (few exits, hardly halting): the long slice.
    TightLoop,
    /// None of these: no quantum.
    Balanced,
}

impl Profile {
    /// In order of precedence.
    const ALL: [Self; 4] = [
        Self::Flushing,
        Self::ExitHeavy,
        Self::TightLoop,
        Self::Balanced,
    ];

    /// The quantum (µs; [`NO_QUANTUM`]: none).
    pub const fn quantum_us(self) -> u32 {
        match self {
            Self::Flushing | Self::ExitHeavy => SHORT_QUANTUM_US,
            Self::TightLoop => LONG_QUANTUM_US,
            Self::Balanced => NO_QUANTUM,
        }
    }

    /// Whether its switcher gives the processor away at each WBINVD.
    pub const fn yield_on_flush(self) -> bool {
        matches!(self, Self::Flushing)
    }

    /// Whether `averages` reach its entry thresholds.
    fn enters(self, averages: &Averages) -> bool {
        match self {
            Self::Flushing => averages.wbinvd >= log2(FLUSH_ENTER_PER_S),
            Self::ExitHeavy => averages.exits >= log2(HEAVY_ENTER_EXITS),
            Self::TightLoop => {
                averages.exits <= log2(TIGHT_ENTER_EXITS) && averages.halted <= TIGHT_ENTER_HALTED
            }
            Self::Balanced => true,
        }
    }

    /// Whether `averages` are still within its exit thresholds.
    fn holds(self, averages: &Averages) -> bool {
        match self {
            Self::Flushing => averages.wbinvd >= log2(FLUSH_LEAVE_PER_S),
            Self::ExitHeavy => averages.exits >= log2(HEAVY_LEAVE_EXITS),
            Self::TightLoop => {
                averages.exits <= log2(TIGHT_LEAVE_EXITS) && averages.halted <= TIGHT_LEAVE_HALTED
            }
            Self::Balanced => true,
        }
    }

    /// Its place in [`Profile::ALL`] (0 first).
    fn precedence(self) -> usize {
        Self::ALL
            .iter()
            .position(|&p| p == self)
            .unwrap_or(Self::ALL.len())
    }
}

/// What to set for a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantum {
    /// Its time slice (µs), from [`MIN_QUANTUM_US`] to
    /// [`LONG_QUANTUM_US`], or [`NO_QUANTUM`] (the core's round robin).
    pub slice_us: u32,
    /// Whether its world switcher gives the processor away at each WBINVD
    /// exit.
    pub yield_on_flush: bool,
    /// The profile they come from.
    pub profile: Profile,
}

/// The averages a history keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Averages {
    /// log2(1 + exits per second), 16.16 fixed point.
    exits: i64,
    /// log2(1 + WBINVD exits per second), 16.16 fixed point.
    wbinvd: i64,
    /// The share of time halted, parts per million.
    halted: u32,
}

/// One VM's history and profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    averages: Averages,
    profile: Profile,
    /// Whether it has seen a sample.
    started: bool,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// No history: no quantum until the first sample.
    pub const fn new() -> Self {
        Self {
            averages: Averages {
                exits: 0,
                wbinvd: 0,
                halted: 0,
            },
            profile: Profile::Balanced,
            started: false,
        }
    }

    /// Takes one window's sample and answers the VM's quantum.
    pub fn observe(&mut self, sample: &Sample) -> Quantum {
        let exits = log2(sample.exits_per_s);
        let wbinvd = log2(sample.wbinvd_per_s);
        let halted = sample.halted.min(WHOLE);
        if self.started {
            let a = &mut self.averages;
            a.exits = towards(a.exits, exits);
            a.wbinvd = towards(a.wbinvd, wbinvd);
            a.halted = towards(i64::from(a.halted), i64::from(halted)) as u32;
        } else {
            // The first sample is all there is.
            self.averages = Averages {
                exits,
                wbinvd,
                halted,
            };
            self.started = true;
        }
        let candidate = Profile::ALL
            .into_iter()
            .find(|p| p.enters(&self.averages))
            .unwrap_or(Profile::Balanced);
        if candidate.precedence() < self.profile.precedence() || !self.profile.holds(&self.averages)
        {
            self.profile = candidate;
        }
        self.quantum()
    }

    /// The quantum as the history stands.
    pub fn quantum(&self) -> Quantum {
        Quantum {
            slice_us: match self.profile.quantum_us() {
                NO_QUANTUM => NO_QUANTUM,
                slice => slice.clamp(MIN_QUANTUM_US, LONG_QUANTUM_US),
            },
            yield_on_flush: self.profile.yield_on_flush(),
            profile: self.profile,
        }
    }

    /// The profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The average exits per second (a geometric mean), for reports.
    pub fn exits_per_s(&self) -> u32 {
        exp2(self.averages.exits)
    }

    /// The average WBINVD exits per second (a geometric mean).
    pub fn wbinvd_per_s(&self) -> u32 {
        exp2(self.averages.wbinvd)
    }

    /// The average share of time halted (parts per million).
    pub fn halted(&self) -> u32 {
        self.averages.halted
    }
}

/// `average` moved a [`HISTORY_WEIGHT`]th of the way to `value`, rounded
/// away from `average` (so a steady value is reached exactly).
fn towards(average: i64, value: i64) -> i64 {
    let step = value - average;
    average + (step + step.signum() * (HISTORY_WEIGHT - 1)) / HISTORY_WEIGHT
}

/// Fractional bits of the fixed-point logarithms.
const FRACTION: u32 = 16;

/// log2(1 + `rate`) in 16.16 fixed point, linear between powers of two
/// (within 0.09 of the true logarithm, and monotonic).
const fn log2(rate: u32) -> i64 {
    let x = rate as u64 + 1;
    let whole = 63 - x.leading_zeros();
    let rest = x - (1 << whole);
    ((whole as i64) << FRACTION) + ((rest << FRACTION) >> whole) as i64
}

/// The inverse of [`log2`]: the rate whose logarithm is `log` (rounded
/// down).
fn exp2(log: i64) -> u32 {
    let log = log.clamp(0, 32 << FRACTION);
    let whole = (log >> FRACTION) as u32;
    let fraction = (log & ((1 << FRACTION) - 1)) as u64;
    let power = 1u64 << whole;
    let x = power + ((power * fraction) >> FRACTION);
    (x - 1).min(u64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PERCENT: u32 = WHOLE / 100;

    fn sample(exits_per_s: u32, wbinvd_per_s: u32, halted_percent: u32) -> Sample {
        Sample {
            exits_per_s,
            wbinvd_per_s,
            halted: halted_percent * PERCENT,
        }
    }

    /// `windows` windows of the same sample; the last answer.
    fn steady(history: &mut History, sample: Sample, windows: usize) -> Quantum {
        let mut quantum = history.quantum();
        for _ in 0..windows {
            quantum = history.observe(&sample);
        }
        quantum
    }

    #[test]
    fn a_tight_loop_gets_the_long_quantum() {
        let mut history = History::new();
        assert_eq!(history.quantum().slice_us, NO_QUANTUM, "no history yet");
        // A spinning guest: its timer's few exits, never halted.
        let quantum = history.observe(&sample(300, 0, 0));
        assert_eq!(
            quantum,
            Quantum {
                slice_us: LONG_QUANTUM_US,
                yield_on_flush: false,
                profile: Profile::TightLoop,
            }
        );
        // Few exits but mostly halted: idle, not a tight loop.
        let mut history = History::new();
        assert_eq!(
            history.observe(&sample(300, 0, 90)).profile,
            Profile::Balanced
        );
    }

    #[test]
    fn an_exit_heavy_vm_gets_the_short_quantum() {
        let mut history = History::new();
        let quantum = steady(&mut history, sample(80_000, 0, 10), 5);
        assert_eq!(
            quantum,
            Quantum {
                slice_us: SHORT_QUANTUM_US,
                yield_on_flush: false,
                profile: Profile::ExitHeavy,
            }
        );
        assert!(quantum.slice_us >= MIN_QUANTUM_US);
        // In between: no quantum.
        let mut history = History::new();
        assert_eq!(
            steady(&mut history, sample(7_000, 0, 0), 5).slice_us,
            NO_QUANTUM
        );
    }

    #[test]
    fn a_flushing_vm_gets_the_short_quantum_and_yields() {
        // Whether it spins or exits often besides.
        for exits in [300, 10_000, 80_000] {
            let mut history = History::new();
            let quantum = steady(&mut history, sample(exits, 50, 0), 3);
            assert_eq!(
                quantum,
                Quantum {
                    slice_us: SHORT_QUANTUM_US,
                    yield_on_flush: true,
                    profile: Profile::Flushing,
                }
            );
        }
        // A tight loop that starts flushing: within a few windows.
        let mut history = History::new();
        steady(&mut history, sample(300, 0, 0), 10);
        let windows = (1..20)
            .find(|_| history.observe(&sample(300, 50, 0)).yield_on_flush)
            .unwrap();
        assert!(windows <= 4, "{windows} windows");
        // And stops: it leaves the profile within a few more.
        let windows = (1..20)
            .find(|_| !history.observe(&sample(300, 0, 0)).yield_on_flush)
            .unwrap();
        assert!(windows <= 5, "{windows} windows");
    }

    /// Between the entry and the exit thresholds the profile is whatever
    /// it was: a VM whose exits rise through 6,000/s to 10,000/s becomes
    /// exit-heavy at 10,000 and stays so falling back to 6,000.
    #[test]
    fn hysteresis_keeps_a_vm_near_a_threshold_where_it_was() {
        let mut rising = History::new();
        let mut falling = History::new();
        steady(&mut rising, sample(5_500, 0, 0), 20);
        steady(&mut falling, sample(40_000, 0, 0), 20);
        for exits in [6_500, 7_500, 8_500, 9_500] {
            assert_eq!(
                steady(&mut rising, sample(exits, 0, 0), 20).profile,
                Profile::Balanced
            );
            assert_eq!(
                steady(&mut falling, sample(exits, 0, 0), 20).profile,
                Profile::ExitHeavy
            );
        }
        assert_eq!(
            steady(&mut rising, sample(10_500, 0, 0), 20).profile,
            Profile::ExitHeavy
        );
        assert_eq!(
            steady(&mut falling, sample(5_500, 0, 0), 20).profile,
            Profile::Balanced
        );
        // Wavering about the entry threshold, ±40% each window: once in,
        // it never flips.
        let mut history = History::new();
        steady(&mut history, sample(10_000, 0, 0), 1);
        for window in 0..100 {
            let exits = if window % 2 == 0 { 6_000 } else { 14_000 };
            assert_eq!(
                history.observe(&sample(exits, 0, 0)).profile,
                Profile::ExitHeavy
            );
        }
        // The same for a tight loop between 2,000 and 5,000 exits/s,
        // and halted between 5% and 30%.
        let mut history = History::new();
        steady(&mut history, sample(1_000, 0, 0), 5);
        for window in 0..100 {
            let (exits, halted) = if window % 2 == 0 {
                (1_500, 2)
            } else {
                (4_500, 25)
            };
            assert_eq!(
                history.observe(&sample(exits, 0, halted)).profile,
                Profile::TightLoop
            );
        }
        // Flushing between 4/s and 10/s.
        let mut history = History::new();
        steady(&mut history, sample(1_000, 20, 0), 5);
        assert!(steady(&mut history, sample(1_000, 5, 0), 30).yield_on_flush);
        let mut history = History::new();
        steady(&mut history, sample(1_000, 0, 0), 5);
        assert!(!steady(&mut history, sample(1_000, 9, 0), 30).yield_on_flush);
    }

    /// One odd window does not flip a profile; the same change kept up
    /// does.
    #[test]
    fn one_odd_window_is_smoothed_away() {
        let cases: [(Sample, Sample, Profile); 5] = [
            // A tight loop with a burst of 200,000 exits/s.
            (sample(500, 0, 0), sample(200_000, 0, 0), Profile::TightLoop),
            // A tight loop halted for a whole window (waiting for a disk).
            (sample(500, 0, 0), sample(500, 0, 100), Profile::TightLoop),
            // An exit-heavy VM with a window ten times quieter.
            (
                sample(30_000, 0, 20),
                sample(3_000, 0, 20),
                Profile::ExitHeavy,
            ),
            // A flushing VM with a window without flushes.
            (
                sample(5_000, 50, 10),
                sample(5_000, 0, 10),
                Profile::Flushing,
            ),
            // A balanced VM that flushes 200 times in one window (a
            // driver's set-up, say).
            (
                sample(5_000, 0, 10),
                sample(5_000, 200, 10),
                Profile::Balanced,
            ),
        ];
        for (usual, odd, profile) in cases {
            let mut history = History::new();
            assert_eq!(steady(&mut history, usual, 10).profile, profile);
            assert_eq!(
                history.observe(&odd).profile,
                profile,
                "{usual:?} then {odd:?}"
            );
            // And back to the usual: still the same.
            assert_eq!(steady(&mut history, usual, 10).profile, profile);
            // Kept up, the change is taken within a few windows.
            let windows = (1..=10).find(|_| history.observe(&odd).profile != profile);
            assert!(
                windows.is_some_and(|w| w <= 6),
                "{usual:?} -> {odd:?}: {windows:?}"
            );
        }
    }

    #[test]
    fn averages_are_geometric_means() {
        let mut history = History::new();
        steady(&mut history, sample(1_000, 0, 0), 1);
        assert!(history.exits_per_s().abs_diff(1_000) <= 1);
        // A window a hundred times busier: the fourth root of 100, about
        // 3.2 times.
        history.observe(&sample(100_000, 0, 40));
        assert!(
            (3_000..=3_400).contains(&history.exits_per_s()),
            "{}",
            history.exits_per_s()
        );
        assert_eq!(history.halted(), 10 * PERCENT);
        assert_eq!(history.wbinvd_per_s(), 0);
        // Converges on a steady rate.
        steady(&mut history, sample(123_456, 7, 0), 60);
        assert!(history.exits_per_s().abs_diff(123_456) <= 123);
        assert_eq!(history.wbinvd_per_s(), 7);
        assert_eq!(history.halted(), 0);
    }

    #[test]
    fn samples_from_counts() {
        // 2,500 exits in 50 ms of running over a 100 ms window.
        assert_eq!(
            Sample::from_counts(2_500, 5, 25_000_000, (100_000_000, 50_000_000)),
            Some(Sample {
                exits_per_s: 50_000,
                wbinvd_per_s: 100,
                halted: 25 * PERCENT,
            })
        );
        assert_eq!(Sample::from_counts(1, 0, 0, (0, 0)), None);
        let idle = Sample::from_counts(0, 0, 100, (100, 0)).unwrap();
        assert_eq!((idle.exits_per_s, idle.halted), (0, WHOLE));
        let huge = Sample::from_counts(u64::MAX, 0, u64::MAX, (1, 1)).unwrap();
        assert_eq!((huge.exits_per_s, huge.halted), (u32::MAX, WHOLE));
    }

    #[test]
    fn logarithms_are_close_and_invertible() {
        assert_eq!(log2(0), 0);
        assert_eq!(log2(1), 1 << FRACTION);
        assert_eq!(log2(u32::MAX), 32 << FRACTION);
        for rate in [
            0u32,
            1,
            2,
            3,
            7,
            10,
            999,
            1_000,
            65_535,
            1 << 20,
            u32::MAX - 1,
            u32::MAX,
        ] {
            assert!(
                exp2(log2(rate)).abs_diff(rate) <= rate / 30_000 + 1,
                "{rate}"
            );
            let exact = (f64::from(rate) + 1.0).log2();
            assert!(
                (log2(rate) as f64 / 65_536.0 - exact).abs() < 0.09,
                "{rate}"
            );
        }
    }

    proptest! {
        /// Whatever the samples: the slice is within its bounds (or none,
        /// for the balanced profile only), the yield goes with the
        /// flushing profile and nothing else, and the answer is the
        /// profile's.
        #[test]
        fn answers_stay_within_bounds(
            samples in proptest::collection::vec((any::<u32>(), any::<u32>(), any::<u32>()), 1..50)
        ) {
            let mut history = History::new();
            for (exits_per_s, wbinvd_per_s, halted) in samples {
                let quantum = history.observe(&Sample { exits_per_s, wbinvd_per_s, halted });
                prop_assert!(
                    quantum.slice_us == NO_QUANTUM
                        || (MIN_QUANTUM_US..=LONG_QUANTUM_US).contains(&quantum.slice_us)
                );
                prop_assert_eq!(quantum.slice_us == NO_QUANTUM, quantum.profile == Profile::Balanced);
                prop_assert_eq!(quantum.yield_on_flush, quantum.profile == Profile::Flushing);
                prop_assert_eq!(quantum.slice_us, quantum.profile.quantum_us());
                prop_assert!(history.halted() <= WHOLE);
            }
        }

        /// A steady sample, from any history: after a settling time the
        /// profile never changes again, and it is the one the entry
        /// thresholds give wherever the sample is clear of every band
        /// between an entry and an exit threshold.
        #[test]
        fn a_steady_vm_settles(
            before in proptest::collection::vec((0u32..500_000, 0u32..100, 0u32..=100), 0..10),
            exits in 0u32..500_000,
            wbinvd in 0u32..100,
            halted in 0u32..=100,
        ) {
            let mut history = History::new();
            for (e, w, h) in before {
                history.observe(&sample(e, w, h));
            }
            let now = sample(exits, wbinvd, halted);
            steady(&mut history, now, 60);
            let settled = history.profile();
            for _ in 0..20 {
                prop_assert_eq!(history.observe(&now).profile, settled);
            }
            let between = |value: u32, low: u32, high: u32| value >= low * 9 / 10 && value <= high * 11 / 10;
            let clear = !between(wbinvd, FLUSH_LEAVE_PER_S, FLUSH_ENTER_PER_S)
                && !between(exits, HEAVY_LEAVE_EXITS, HEAVY_ENTER_EXITS)
                && !between(exits, TIGHT_ENTER_EXITS, TIGHT_LEAVE_EXITS)
                && !between(halted * PERCENT, TIGHT_ENTER_HALTED, TIGHT_LEAVE_HALTED);
            if clear {
                let expected = if wbinvd >= FLUSH_ENTER_PER_S {
                    Profile::Flushing
                } else if exits >= HEAVY_ENTER_EXITS {
                    Profile::ExitHeavy
                } else if exits <= TIGHT_ENTER_EXITS && halted * PERCENT <= TIGHT_ENTER_HALTED {
                    Profile::TightLoop
                } else {
                    Profile::Balanced
                };
                prop_assert_eq!(settled, expected);
            }
        }
    }
}
