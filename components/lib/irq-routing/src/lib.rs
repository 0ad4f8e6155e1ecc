//! The interrupt forwarder's policy: which driver each interrupt line goes
//! to, what state each line is in, and when a line is storming.
//!
//! The core masks a device line when it fires and sets the forwarder's bit
//! for it; nothing else in the core decides anything. This crate decides
//! the rest, as a pure state machine over events and a clock the caller
//! passes in (so the host tests run it over simulated time):
//!
//! - **fired**: the line is delivered to its driver (one signal) and waits
//!   for the driver's acknowledgement. A line already delivered is
//!   *coalesced* (the driver has not yet seen the first).
//! - **acknowledged**: the driver cleared its device; the line is unmasked,
//!   unless it is storming: more than [`StormPolicy::limit`] deliveries in
//!   one [`StormPolicy::window_ns`]. A storming line stays masked for a
//!   back-off (doubling on each storm in a row, up to
//!   [`StormPolicy::max_backoff_ns`]), is reported, and is unmasked again
//!   when the back-off ends ([`Router::due`]).
//! - **ready**: the driver (re)started. A line delivered to its previous
//!   life and not acknowledged is delivered again, so nothing is lost
//!   across a driver restart.
//! - **restart of the forwarder itself**: [`Router::adopt_pending`] takes
//!   the lines the core still holds masked and delivers each again.
//!
//! Every transition returns what the forwarder must do ([`Action`]); the
//! forwarder only carries actions out. [`LineReport`] is the message in
//! which it publishes a line's counters to other components.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Interrupt lines: the IOAPIC's 24 inputs, then 8 MSI vectors.
pub const LINES: usize = 32;

/// When a line counts as storming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StormPolicy {
    /// Deliveries allowed in one window.
    pub limit: u32,
    /// The window, in nanoseconds.
    pub window_ns: u64,
    /// How long a storming line first stays masked.
    pub backoff_ns: u64,
    /// The longest back-off.
    pub max_backoff_ns: u64,
}

impl StormPolicy {
    /// 20,000 interrupts in 100 ms (200,000 a second: a busy disk under
    /// QEMU's `-icount shift=0` takes about 50,000, which 1,000 per 100 ms
    /// once mistook for a storm and held for up to 1.6 s), then masked for
    /// 100 ms, doubling to at most 1.6 s. A level-triggered line stuck
    /// high fires as fast as its driver acknowledges it, far above this.
    pub const DEFAULT: Self = Self {
        limit: 20_000,
        window_ns: 100_000_000,
        backoff_ns: 100_000_000,
        max_backoff_ns: 1_600_000_000,
    };
}

/// What a line is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Unmasked, waiting for the device.
    Idle,
    /// Masked, delivered to the driver, waiting for its acknowledgement.
    Delivered,
    /// Masked because it stormed, until the given time.
    Held { until_ns: u64 },
}

/// Per-line counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Interrupts passed on to the driver (redeliveries included).
    pub delivered: u64,
    /// Interrupts that found the line already delivered.
    pub coalesced: u64,
    /// Times the line was masked for storming.
    pub storms: u64,
    /// Deliveries repeated because the driver or the forwarder restarted.
    pub redelivered: u64,
}

/// One line's counters as the forwarder sends them on its `counters`
/// queue (40 bytes; the queue's `slot_size` must be at least that).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct LineReport {
    pub line: u32,
    /// The line's state: 0 idle, 1 delivered, 2 held for storming.
    pub state: u32,
    pub delivered: u64,
    pub coalesced: u64,
    pub storms: u64,
    pub redelivered: u64,
}

impl Router {
    /// The report of `line` (`None` if not routed).
    pub fn report(&self, line: usize) -> Option<LineReport> {
        let route = self.route(line)?;
        Some(LineReport {
            line: line as u32,
            state: match route.state {
                State::Idle => 0,
                State::Delivered => 1,
                State::Held { .. } => 2,
            },
            delivered: route.counters.delivered,
            coalesced: route.counters.coalesced,
            storms: route.counters.storms,
            redelivered: route.counters.redelivered,
        })
    }
}

/// What the forwarder must do after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Signal the line's driver.
    Deliver,
    /// Unmask the line at the core.
    Unmask,
    /// The line stormed: it stays masked; report it (`count` deliveries
    /// in the window, held for `backoff_ns`).
    Storm { count: u32, backoff_ns: u64 },
}

#[derive(Clone, Copy, Debug)]
struct Route {
    state: State,
    counters: Counters,
    window_start_ns: u64,
    window_count: u32,
    /// The next storm's back-off (grows while storms follow each other).
    backoff_ns: u64,
}

/// The routing table and every line's state.
#[derive(Clone, Debug)]
pub struct Router {
    policy: StormPolicy,
    routes: [Option<Route>; LINES],
}

impl Router {
    /// No lines yet.
    pub const fn new(policy: StormPolicy) -> Self {
        Self {
            policy,
            routes: [None; LINES],
        }
    }

    /// Routes `line` (to the driver the caller keeps for it); `false` for
    /// a line past [`LINES`].
    pub fn add(&mut self, line: usize) -> bool {
        let Some(slot) = self.routes.get_mut(line) else {
            return false;
        };
        *slot = Some(Route {
            state: State::Idle,
            counters: Counters::default(),
            window_start_ns: 0,
            window_count: 0,
            backoff_ns: self.policy.backoff_ns,
        });
        true
    }

    /// Whether `line` is routed.
    pub fn routes(&self, line: usize) -> bool {
        self.route(line).is_some()
    }

    fn route(&self, line: usize) -> Option<&Route> {
        self.routes.get(line)?.as_ref()
    }

    fn route_mut(&mut self, line: usize) -> Option<&mut Route> {
        self.routes.get_mut(line)?.as_mut()
    }

    /// The line's state (`None` if not routed).
    pub fn state(&self, line: usize) -> Option<State> {
        Some(self.route(line)?.state)
    }

    /// The line's counters (`None` if not routed).
    pub fn counters(&self, line: usize) -> Option<Counters> {
        Some(self.route(line)?.counters)
    }

    /// The core says `line` fired (and masked it).
    pub fn fired(&mut self, line: usize, now_ns: u64) -> Action {
        let window_ns = self.policy.window_ns;
        let Some(route) = self.route_mut(line) else {
            return Action::None;
        };
        match route.state {
            State::Idle => {
                if now_ns.saturating_sub(route.window_start_ns) >= window_ns {
                    route.window_start_ns = now_ns;
                    route.window_count = 0;
                }
                route.window_count = route.window_count.saturating_add(1);
                route.state = State::Delivered;
                route.counters.delivered += 1;
                Action::Deliver
            }
            State::Delivered | State::Held { .. } => {
                route.counters.coalesced += 1;
                Action::None
            }
        }
    }

    /// The driver acknowledged `line`.
    pub fn acknowledged(&mut self, line: usize, now_ns: u64) -> Action {
        let policy = self.policy;
        let Some(route) = self.route_mut(line) else {
            return Action::None;
        };
        if route.state != State::Delivered {
            // A second acknowledgement (e.g. of a delivery repeated after
            // a restart): the line is already unmasked or held.
            return Action::None;
        }
        let in_window = now_ns.saturating_sub(route.window_start_ns) < policy.window_ns;
        if in_window && route.window_count > policy.limit {
            let backoff_ns = route.backoff_ns;
            route.state = State::Held {
                until_ns: now_ns.saturating_add(backoff_ns),
            };
            route.counters.storms += 1;
            route.backoff_ns = backoff_ns.saturating_mul(2).min(policy.max_backoff_ns);
            let count = route.window_count;
            route.window_count = 0;
            return Action::Storm { count, backoff_ns };
        }
        if !in_window {
            // A whole window without a storm: the next one starts over.
            route.backoff_ns = policy.backoff_ns;
        }
        route.state = State::Idle;
        Action::Unmask
    }

    /// The driver of `line` (re)started and can take interrupts.
    pub fn ready(&mut self, line: usize) -> Action {
        let Some(route) = self.route_mut(line) else {
            return Action::None;
        };
        if route.state == State::Delivered {
            route.counters.delivered += 1;
            route.counters.redelivered += 1;
            Action::Deliver
        } else {
            Action::None
        }
    }

    /// The forwarder (re)started: `pending` (bit n: line n) are the lines
    /// the core holds masked. Each routed one is delivered again; calls
    /// `deliver(line)` for each.
    pub fn adopt_pending(&mut self, pending: u32, mut deliver: impl FnMut(usize)) {
        for line in 0..LINES {
            if pending & (1 << line) == 0 {
                continue;
            }
            let Some(route) = self.route_mut(line) else {
                continue;
            };
            route.state = State::Delivered;
            route.counters.delivered += 1;
            route.counters.redelivered += 1;
            deliver(line);
        }
    }

    /// Held lines whose back-off ended by `now_ns` go back to idle; calls
    /// `unmask(line)` for each.
    pub fn due(&mut self, now_ns: u64, mut unmask: impl FnMut(usize)) {
        for (line, route) in self.routes.iter_mut().enumerate() {
            let Some(route) = route else { continue };
            if let State::Held { until_ns } = route.state
                && until_ns <= now_ns
            {
                route.state = State::Idle;
                route.window_start_ns = now_ns;
                route.window_count = 0;
                unmask(line);
            }
        }
    }

    /// The earliest end of a back-off, if a line is held.
    pub fn next_due(&self) -> Option<u64> {
        self.routes
            .iter()
            .flatten()
            .filter_map(|route| match route.state {
                State::Held { until_ns } => Some(until_ns),
                _ => None,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn policy() -> StormPolicy {
        StormPolicy {
            limit: 10,
            window_ns: 100 * MS,
            backoff_ns: 50 * MS,
            max_backoff_ns: 200 * MS,
        }
    }

    #[test]
    fn a_line_is_delivered_once_until_acknowledged() {
        let mut router = Router::new(policy());
        assert!(router.add(8));
        assert!(!router.add(32));
        assert_eq!(router.fired(8, 0), Action::Deliver);
        assert_eq!(router.state(8), Some(State::Delivered));
        // Fired again before the driver saw it (after a forwarder restart,
        // say): coalesced, not delivered twice.
        assert_eq!(router.fired(8, 1), Action::None);
        assert_eq!(router.acknowledged(8, 2), Action::Unmask);
        assert_eq!(router.acknowledged(8, 3), Action::None, "stale ack");
        assert_eq!(router.state(8), Some(State::Idle));
        let counters = router.counters(8).unwrap();
        assert_eq!((counters.delivered, counters.coalesced), (1, 1));
        assert_eq!(
            router.report(8),
            Some(LineReport {
                line: 8,
                state: 0,
                delivered: 1,
                coalesced: 1,
                storms: 0,
                redelivered: 0
            })
        );
        assert_eq!(router.report(9), None);
        assert_eq!(size_of::<LineReport>(), 40);
        // Lines not routed are ignored.
        assert_eq!(router.fired(9, 0), Action::None);
        assert_eq!(router.acknowledged(9, 0), Action::None);
        assert_eq!(router.ready(9), Action::None);
        assert_eq!(router.fired(usize::MAX, 0), Action::None);
    }

    #[test]
    fn a_restarted_driver_gets_what_its_last_life_missed() {
        let mut router = Router::new(policy());
        router.add(8);
        assert_eq!(router.ready(8), Action::None, "nothing pending");
        assert_eq!(router.fired(8, 0), Action::Deliver);
        // The driver dies before acknowledging; its next life says ready.
        assert_eq!(router.ready(8), Action::Deliver);
        assert_eq!(router.acknowledged(8, 5), Action::Unmask);
        let counters = router.counters(8).unwrap();
        assert_eq!((counters.delivered, counters.redelivered), (2, 1));
    }

    #[test]
    fn a_restarted_forwarder_delivers_what_the_core_holds() {
        let mut router = Router::new(policy());
        router.add(8);
        router.add(11);
        let mut delivered = Vec::new();
        // Line 9 is not ours; 8 is pending at the core.
        router.adopt_pending(1 << 8 | 1 << 9, |line| delivered.push(line));
        assert_eq!(delivered, [8]);
        assert_eq!(router.state(8), Some(State::Delivered));
        assert_eq!(router.state(11), Some(State::Idle));
        assert_eq!(router.acknowledged(8, 0), Action::Unmask);
    }

    #[test]
    fn a_storming_line_is_held_and_retried_with_growing_backoff() {
        let mut router = Router::new(policy());
        router.add(16);
        let mut now = 0;
        // A level line nobody clears: fires right after every unmask.
        let storm = |router: &mut Router, now: &mut u64| loop {
            assert_eq!(router.fired(16, *now), Action::Deliver);
            *now += 10_000;
            match router.acknowledged(16, *now) {
                Action::Unmask => continue,
                other => return other,
            }
        };
        assert_eq!(
            storm(&mut router, &mut now),
            Action::Storm {
                count: 11,
                backoff_ns: 50 * MS
            }
        );
        assert_eq!(router.next_due(), Some(now + 50 * MS));
        let mut unmasked = Vec::new();
        router.due(now + 49 * MS, |line| unmasked.push(line));
        assert!(unmasked.is_empty(), "not yet");
        now += 50 * MS;
        router.due(now, |line| unmasked.push(line));
        assert_eq!(unmasked, [16]);
        assert_eq!(router.next_due(), None);
        // Storms again at once: held twice as long, then four times (the
        // cap is 200 ms).
        for backoff in [100 * MS, 200 * MS, 200 * MS] {
            assert_eq!(
                storm(&mut router, &mut now),
                Action::Storm {
                    count: 11,
                    backoff_ns: backoff
                }
            );
            now += backoff;
            router.due(now, |_| {});
        }
        assert_eq!(router.counters(16).unwrap().storms, 4);
    }

    #[test]
    fn a_busy_but_calm_line_never_storms_and_calm_resets_the_backoff() {
        let mut router = Router::new(policy());
        router.add(8);
        // 10 interrupts per 100 ms (the limit) for ten seconds.
        let mut now = 0;
        for _ in 0..1000 {
            assert_eq!(router.fired(8, now), Action::Deliver);
            assert_eq!(router.acknowledged(8, now + MS), Action::Unmask);
            now += 10 * MS;
        }
        assert_eq!(router.counters(8).unwrap().storms, 0);
    }

    proptest! {
        /// Whatever the events, a line is unmasked only from `Delivered`,
        /// delivered only from `Idle` or on a restart, a held line is
        /// released by `due` no later than its back-off, and counters only
        /// grow.
        #[test]
        fn events_keep_the_line_consistent(events in proptest::collection::vec((0u8..4, 0u64..20 * MS), 1..400)) {
            let mut router = Router::new(policy());
            router.add(3);
            let mut now = 0u64;
            let mut last = Counters::default();
            for (kind, step) in events {
                now += step;
                let before = router.state(3).unwrap();
                let action = match kind {
                    0 => router.fired(3, now),
                    1 => router.acknowledged(3, now),
                    2 => router.ready(3),
                    _ => {
                        let mut released = false;
                        router.due(now, |_| released = true);
                        if released { Action::Unmask } else { Action::None }
                    }
                };
                let after = router.state(3).unwrap();
                match action {
                    Action::Unmask => {
                        let was_masked = matches!(before, State::Delivered | State::Held { .. });
                        prop_assert!(was_masked, "unmasked from {:?}", before);
                        prop_assert_eq!(after, State::Idle);
                    }
                    Action::Deliver => prop_assert_eq!(after, State::Delivered),
                    Action::Storm { backoff_ns, .. } => {
                        prop_assert_eq!(before, State::Delivered);
                        prop_assert_eq!(after, State::Held { until_ns: now + backoff_ns });
                        prop_assert!(backoff_ns <= policy().max_backoff_ns);
                    }
                    Action::None => {}
                }
                if let State::Held { until_ns } = after {
                    prop_assert!(until_ns <= now + policy().max_backoff_ns);
                }
                let counters = router.counters(3).unwrap();
                prop_assert!(counters.delivered >= last.delivered);
                prop_assert!(counters.coalesced >= last.coalesced);
                prop_assert!(counters.storms >= last.storms);
                last = counters;
            }
        }
    }
}
