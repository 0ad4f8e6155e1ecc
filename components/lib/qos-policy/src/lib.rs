//! The QoS controller's policy, as pure logic over numbers it is handed,
//! so the host tests run it over simulated time.
//!
//! - [`allot`]: each entity's fraction of the processor (in parts per
//!   million) from its shares, reservation (a minimum) and limit (a
//!   maximum), and from what it is observed to need: water-filling —
//!   reservations first, then limits and idle entities' needs capped, the
//!   rest split in proportion to the shares of the entities still open.
//! - [`Demand`]: whether an entity used its allotment over the last
//!   window (busy) or left part of it (idle: it needs what it used, with
//!   a margin), so an idle entity's share goes to the busy ones as budget,
//!   not only as slack.
//!
//! The controller turns a fraction into a budget over its period
//! ([`budget_us`]); an entity without a limit may run on slack (the core
//! gives a spent context the processor when nothing with budget is
//! ready), so the processor is never left idle while someone could use it.
//!
//! Beside these, three policies of their own, each with its state:
//!
//! - [`realtime`]: a VM's real-time need, "X µs every Y µs", learned by a
//!   feedback loop from its guest's timer periods as its world switcher
//!   measures them, as a budget and period for its scheduling context.
//! - [`ledger`]: what busy entities received against what they were
//!   entitled to, written down each window and paid back by bounded
//!   moves of the next allotments, so long-run shares stay exact.
//! - [`quanta`]: a time slice (quantum) per VM from its profile — tight
//!   loop, exit-heavy, flushing its caches — kept with history, and
//!   whether its switcher gives the processor away at each cache flush.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod ledger;
pub mod quanta;
pub mod realtime;

/// What the modules' simulations share.
#[cfg(test)]
mod testing {
    /// A small seeded generator (SplitMix64) for simulated jitter and
    /// losses.
    pub struct Prng(pub u64);

    impl Prng {
        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform in `low..=high`.
        pub fn range(&mut self, low: u64, high: u64) -> u64 {
            low + self.next() % (high - low + 1)
        }

        /// Uniform in `-range..=range`.
        pub fn signed(&mut self, range: u64) -> i64 {
            (self.next() % (2 * range + 1)) as i64 - range as i64
        }
    }
}

/// The whole processor, in parts per million.
pub const WHOLE: u32 = 1_000_000;
/// The most entities one controller manages.
pub const MAX_ENTITIES: usize = 16;

/// What the system file says of one entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entity {
    /// Its weight under contention (0: only its reservation and slack).
    pub shares: u32,
    /// The least it is given, in parts per million.
    pub reserve: u32,
    /// The most it may have, in parts per million ([`WHOLE`]: no limit).
    /// An entity with a limit never runs on slack.
    pub limit: u32,
}

impl Entity {
    /// `shares` shares, no reservation, no limit.
    pub const fn shares(shares: u32) -> Self {
        Self {
            shares,
            reserve: 0,
            limit: WHOLE,
        }
    }

    /// Whether it may run on slack: it has no limit.
    pub fn slack(&self) -> bool {
        self.limit >= WHOLE
    }
}

/// Why a set of entities cannot be allotted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyError {
    /// More entities than [`MAX_ENTITIES`].
    TooMany,
    /// The reservations add up to more than the whole processor.
    Overbooked { reserved: u64 },
    /// An entity's reservation is above its limit.
    ReserveAboveLimit { entity: usize },
}

/// What an entity is observed to need: all it can get, or about what it
/// used (parts per million).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Demand {
    Busy,
    Idle(u32),
}

impl Demand {
    /// From an entity's allotment and what it used of the processor over
    /// the last window (both in parts per million): idle when it left more
    /// than a tenth of its allotment unused (it waited for work rather
    /// than for the processor); then it needs twice what it used, at least
    /// 2% — room to show it got busy again (an entity that uses all of a
    /// capped allotment is busy at the next window), and enough that an
    /// idle guest's small, uneven use (timer ticks, a round of no-work
    /// calls falling into one window or the next) does not flip it
    /// between idle and busy.
    pub fn observe(allotted: u32, used: u32) -> Self {
        if u64::from(used) * 10 >= u64::from(allotted) * 9 {
            Self::Busy
        } else {
            Self::Idle(used.saturating_mul(2).max(WHOLE / 50))
        }
    }
}

/// Each entity's fraction of the processor (parts per million), from
/// `entities` and their `demands` (one each). The fractions add up to at
/// most [`WHOLE`]; every entity gets at least its reservation and at most
/// its limit, an idle one at most its demand (but its reservation), and
/// the rest is split among the others in proportion to their shares.
pub fn allot(entities: &[Entity], demands: &[Demand]) -> Result<[u32; MAX_ENTITIES], PolicyError> {
    let count = entities.len();
    if count > MAX_ENTITIES || demands.len() != count {
        return Err(PolicyError::TooMany);
    }
    let reserved: u64 = entities.iter().map(|e| u64::from(e.reserve)).sum();
    if reserved > u64::from(WHOLE) {
        return Err(PolicyError::Overbooked { reserved });
    }
    if let Some(entity) = entities.iter().position(|e| e.reserve > e.limit) {
        return Err(PolicyError::ReserveAboveLimit { entity });
    }
    let floor = |i: usize| entities[i].reserve;
    let cap = |i: usize| {
        let limit = entities[i].limit.min(WHOLE);
        match demands[i] {
            Demand::Busy => limit,
            Demand::Idle(need) => need.max(entities[i].reserve).min(limit),
        }
    };
    let mut fixed: [Option<u32>; MAX_ENTITIES] = [None; MAX_ENTITIES];
    // Each round fixes at least one entity at its floor or cap, or ends.
    for _ in 0..=count {
        let taken: u64 = fixed[..count].iter().flatten().map(|&f| u64::from(f)).sum();
        let free = u64::from(WHOLE).saturating_sub(taken);
        let open = (0..count).filter(|&i| fixed[i].is_none());
        let weight: u64 = open.clone().map(|i| u64::from(entities[i].shares)).sum();
        let tentative = |i: usize| {
            (free * u64::from(entities[i].shares))
                .checked_div(weight)
                .unwrap_or(0) as u32
        };
        // Reservations first: an entity whose share falls below its
        // reservation takes the reservation, and the rest is split again.
        let below: [bool; MAX_ENTITIES] =
            core::array::from_fn(|i| i < count && fixed[i].is_none() && tentative(i) < floor(i));
        if below.iter().any(|&b| b) {
            for i in 0..count {
                if below[i] {
                    fixed[i] = Some(floor(i));
                }
            }
            continue;
        }
        let above: [bool; MAX_ENTITIES] =
            core::array::from_fn(|i| i < count && fixed[i].is_none() && tentative(i) > cap(i));
        if above.iter().any(|&a| a) {
            for i in 0..count {
                if above[i] {
                    fixed[i] = Some(cap(i));
                }
            }
            continue;
        }
        for (i, slot) in fixed[..count].iter_mut().enumerate() {
            if slot.is_none() {
                *slot = Some(tentative(i));
            }
        }
        break;
    }
    let mut fractions = [0u32; MAX_ENTITIES];
    for i in 0..count {
        fractions[i] = fixed[i].unwrap_or(floor(i));
    }
    Ok(fractions)
}

/// The budget of `fraction` (parts per million) of every `period_us`, at
/// least 1 µs.
pub fn budget_us(fraction: u32, period_us: u64) -> u64 {
    (u64::from(fraction) * period_us / u64::from(WHOLE)).clamp(1, period_us)
}

/// A list `name:value,...` that is not one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MalformedList;

/// The value of `name` in a list `name:value,name:value,...` (such as
/// `shares=ws-a:2,ws-b:1`'s value): `Ok(None)` when absent, an error
/// when the list is malformed or a value is not a number.
pub fn lookup(list: &str, name: &str) -> Result<Option<u32>, MalformedList> {
    let mut found = None;
    for item in list.split(',').filter(|item| !item.is_empty()) {
        let (key, value) = item.split_once(':').ok_or(MalformedList)?;
        if key.is_empty() || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MalformedList);
        }
        let value: u32 = value.parse().map_err(|_| MalformedList)?;
        if key == name && found.is_none() {
            found = Some(value);
        }
    }
    Ok(found)
}

/// The names of a list `name:value,...`, in order.
pub fn names(list: &str) -> impl Iterator<Item = &str> {
    list.split(',')
        .filter(|item| !item.is_empty())
        .map(|item| item.split_once(':').map_or(item, |(key, _)| key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PERCENT: u32 = WHOLE / 100;

    fn busy(n: usize) -> Vec<Demand> {
        vec![Demand::Busy; n]
    }

    #[test]
    fn shares_split_the_processor() {
        let fractions = allot(&[Entity::shares(2), Entity::shares(1)], &busy(2)).unwrap();
        assert_eq!(&fractions[..2], &[666_666, 333_333]);
        assert_eq!(budget_us(fractions[0], 10_000), 6666);
        assert_eq!(budget_us(fractions[1], 10_000), 3333);
        assert_eq!(budget_us(0, 10_000), 1);
    }

    #[test]
    fn reservations_and_limits_bend_the_split() {
        // 1:9 shares, but the first is reserved 30%: it gets 30%, the
        // other the remaining 70%.
        let reserved = Entity {
            reserve: 30 * PERCENT,
            ..Entity::shares(1)
        };
        let fractions = allot(&[reserved, Entity::shares(9)], &busy(2)).unwrap();
        assert_eq!(&fractions[..2], &[30 * PERCENT, 70 * PERCENT]);
        // 1:1:2, the last limited to 25%: it gets 25%, the others split
        // the rest evenly; it may not run on slack.
        let limited = Entity {
            limit: 25 * PERCENT,
            ..Entity::shares(2)
        };
        let fractions = allot(&[Entity::shares(1), Entity::shares(1), limited], &busy(3)).unwrap();
        assert_eq!(&fractions[..3], &[375_000, 375_000, 250_000]);
        assert!(!limited.slack() && Entity::shares(1).slack());
        // Bad sets are named.
        assert_eq!(
            allot(
                &[Entity {
                    reserve: 60 * PERCENT,
                    ..Entity::shares(1)
                }; 2],
                &busy(2)
            ),
            Err(PolicyError::Overbooked {
                reserved: 1_200_000
            })
        );
        let inverted = Entity {
            reserve: 50 * PERCENT,
            limit: 40 * PERCENT,
            shares: 1,
        };
        assert_eq!(
            allot(&[Entity::shares(1), inverted], &busy(2)),
            Err(PolicyError::ReserveAboveLimit { entity: 1 })
        );
    }

    #[test]
    fn an_idle_entitys_share_goes_to_the_busy_ones() {
        // 2:1:1; the first used 5% of its 50%: idle, it keeps 10%, and
        // the busy two split the rest 1:1.
        let entities = [Entity::shares(2), Entity::shares(1), Entity::shares(1)];
        let idle = Demand::observe(500_000, 50_000);
        assert_eq!(idle, Demand::Idle(100_000));
        let fractions = allot(&entities, &[idle, Demand::Busy, Demand::Busy]).unwrap();
        assert_eq!(&fractions[..3], &[100_000, 450_000, 450_000]);
        // Still idle at the same use: no flipping.
        assert_eq!(Demand::observe(100_000, 50_000), Demand::Idle(100_000));
        // Using (nearly) all of it again, it is busy at the next window and
        // gets its share back.
        assert_eq!(Demand::observe(100_000, 95_000), Demand::Busy);
        let fractions = allot(&entities, &busy(3)).unwrap();
        assert_eq!(&fractions[..3], &[500_000, 250_000, 250_000]);
        // An idle entity keeps at least its reservation, and 2%.
        assert_eq!(Demand::observe(500_000, 0), Demand::Idle(2 * PERCENT));
        let reserved = Entity {
            reserve: 20 * PERCENT,
            ..Entity::shares(1)
        };
        let fractions = allot(
            &[reserved, Entity::shares(1)],
            &[Demand::Idle(PERCENT), Demand::Busy],
        )
        .unwrap();
        assert_eq!(&fractions[..2], &[20 * PERCENT, 80 * PERCENT]);
    }

    #[test]
    fn lists_are_read_strictly() {
        assert_eq!(lookup("ws-a:2,ws-b:1", "ws-b"), Ok(Some(1)));
        assert_eq!(lookup("ws-a:2,ws-b:1", "ws-c"), Ok(None));
        assert_eq!(lookup("ws-a:2,ws-b", "ws-a"), Err(MalformedList));
        assert_eq!(lookup("ws-a:-2", "ws-a"), Err(MalformedList));
        assert_eq!(lookup(":2", "ws-a"), Err(MalformedList));
        assert_eq!(lookup("ws-a:", "ws-a"), Err(MalformedList));
        assert_eq!(names("ws-a:2,ws-b:1").collect::<Vec<_>>(), ["ws-a", "ws-b"]);
    }

    /// The controller's loop over simulated windows: two entities with 2:1
    /// shares on a processor that gives each its allotment and splits the
    /// rest (slack) evenly among those that want more. The first spins,
    /// idles at a steady 1% (its timer ticks), then spins again; the second
    /// always spins.
    #[test]
    fn the_loop_settles_and_recovers_over_simulated_windows() {
        let entities = [Entity::shares(2), Entity::shares(1)];
        let mut fractions = allot(&entities, &busy(2)).unwrap();
        let mut trace = Vec::new();
        for window in 0..30 {
            let wants = |index: usize| match (index, window) {
                (0, 10..20) => PERCENT,
                _ => WHOLE,
            };
            // Each uses what it wants of its allotment; the rest of the
            // processor goes evenly to those that want more.
            let mut used = [0u32; 2];
            for i in 0..2 {
                used[i] = wants(i).min(fractions[i]);
            }
            let spare = WHOLE - used.iter().sum::<u32>();
            let hungry: Vec<usize> = (0..2).filter(|&i| wants(i) > used[i]).collect();
            for &i in &hungry {
                used[i] += (spare / hungry.len() as u32).min(wants(i) - used[i]);
            }
            trace.push(used);
            let demands = [0, 1].map(|i| Demand::observe(fractions[i], used[i]));
            fractions = allot(&entities, &demands).unwrap();
        }
        // Both busy: 2:1 exactly (within rounding).
        assert!(
            trace[..10]
                .iter()
                .all(|u| u[0] == 666_666 && u[1] == 333_333)
        );
        // The first idles: from the first idle window on the second gets
        // everything the first leaves, and the first's allotment settles
        // (no flipping between idle and busy at a steady load).
        assert!(
            trace[10..20]
                .iter()
                .all(|u| u[0] == PERCENT && u[1] == WHOLE - PERCENT)
        );
        // Busy again: for one window it has only its idle allotment (the
        // other's budget leaves no slack), then its share back.
        assert_eq!(trace[20], [2 * PERCENT, WHOLE - 2 * PERCENT]);
        assert!(
            trace[21..]
                .iter()
                .all(|u| u[0] == 666_666 && u[1] == 333_333)
        );
    }

    proptest! {
        /// Whatever the entities and demands: the fractions fit the
        /// processor, each lies between its reservation and its limit, an
        /// idle one gets no more than it needs (or its reservation), and
        /// two busy entities without limits or reservations that bind get
        /// fractions in proportion to their shares (within rounding).
        #[test]
        fn allotments_respect_every_bound(
            raw in proptest::collection::vec(
                (0u32..10, 0u32..20, 20u32..=100, proptest::option::of(0u32..=100)),
                1..MAX_ENTITIES,
            )
        ) {
            let entities: Vec<Entity> = raw.iter().map(|&(shares, reserve, limit, _)| Entity {
                shares,
                reserve: reserve * PERCENT / 2,
                limit: limit * PERCENT,
            }).collect();
            let demands: Vec<Demand> = raw.iter().map(|&(_, _, _, idle)| match idle {
                Some(used) => Demand::Idle(used * PERCENT),
                None => Demand::Busy,
            }).collect();
            let Ok(fractions) = allot(&entities, &demands) else {
                let reserved: u32 = entities.iter().map(|e| e.reserve).sum();
                prop_assert!(reserved > WHOLE);
                return Ok(());
            };
            let total: u64 = fractions.iter().map(|&f| u64::from(f)).sum();
            prop_assert!(total <= u64::from(WHOLE));
            for (i, entity) in entities.iter().enumerate() {
                prop_assert!(fractions[i] >= entity.reserve, "entity {} under its reservation", i);
                prop_assert!(fractions[i] <= entity.limit.max(entity.reserve), "entity {} over its limit", i);
                if let Demand::Idle(need) = demands[i] {
                    prop_assert!(fractions[i] <= need.max(entity.reserve));
                }
            }
            for i in 0..entities.len() {
                for j in 0..entities.len() {
                    let open = |k: usize| demands[k] == Demand::Busy
                        && fractions[k] > entities[k].reserve
                        && fractions[k] < entities[k].limit;
                    if i != j && open(i) && open(j) {
                        let lhs = u64::from(fractions[i]) * u64::from(entities[j].shares);
                        let rhs = u64::from(fractions[j]) * u64::from(entities[i].shares);
                        let slack = u64::from(entities[i].shares.max(entities[j].shares)) * 2;
                        prop_assert!(lhs.abs_diff(rhs) <= slack * u64::from(WHOLE) / 1000 + 100,
                            "{} and {} not in proportion: {:?}", i, j, &fractions[..entities.len()]);
                    }
                }
            }
        }
    }
}
