//! Fault injection: what [`crate::syscall::Syscall::Inject`] can do to a
//! component, for fault-injection campaigns.
//!
//! Only a component holding an [`crate::spec::CapabilityKind::Injection`]
//! capability for the target may inject, and `capdl` grants those only in
//! a system's `[test]` table (its listing shows them), so a production
//! system cannot carry one. Every kind models something a real fault
//! does, and the core does it exactly as the fault would happen: a crash
//! is the fault the core reports for a bad address; a hang stops
//! scheduling the target without telling anyone (its supervisor's
//! watchdog must notice); corruption writes pseudo-random bytes into the
//! target's own writable memory or one of its queues; a flood fills one
//! of the queues the target receives from with pseudo-random messages.
//! The bytes and places come from the caller's seed (a 64-bit xorshift),
//! so a campaign that names its seed replays the same writes.

/// What to inject: [`crate::syscall::Syscall::Inject`]'s `rsi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Kind {
    /// The target faults now, as if it had read the unmapped address in
    /// the argument: reported, stopped, its supervisor notified. Answers 0.
    Crash = 1,
    /// The target is not scheduled for the argument's microseconds (at
    /// most [`MAX_HANG_US`]); nobody is told. Signals still reach it and
    /// its timeouts still end; it runs again when the time is up or when
    /// it is restarted. Answers 0.
    Hang = 2,
    /// Writes `count` (1..=[`MAX_BYTES`]) pseudo-random bytes, seeded by
    /// the argument, each at a pseudo-random place of the target's own
    /// writable memory (its program's data and its stack; not queues,
    /// DMA buffers or guest memory, which are others' too). Answers the
    /// address of the first byte written.
    CorruptMemory = 3,
    /// Writes `count` (1..=[`MAX_BYTES`]) pseudo-random bytes, seeded by
    /// the argument, at pseudo-random places of one of the target's
    /// queues (chosen by the seed): half the time in its header's fields
    /// (indices, flags, magic, sizes, generation, stamps), else in its
    /// slots. Answers the queue's index in the boot spec, or
    /// [`NO_QUEUE`] when the target has none.
    CorruptQueue = 4,
    /// Fills one of the queues the target receives from (chosen by the
    /// seed in the argument) with up to `count` (1..=[`MAX_FLOOD`])
    /// pseudo-random messages, as a babbling sender would — each slot
    /// written and stamped, the tail advanced past them — and signals the
    /// target. Answers the queue's index, or [`NO_QUEUE`].
    FloodQueue = 5,
}

impl Kind {
    /// Decodes a kind, or `None`.
    pub const fn from_u64(value: u64) -> Option<Self> {
        Some(match value {
            1 => Self::Crash,
            2 => Self::Hang,
            3 => Self::CorruptMemory,
            4 => Self::CorruptQueue,
            5 => Self::FloodQueue,
            _ => return None,
        })
    }

    /// Every kind, in number order.
    pub const ALL: [Self; 5] = [
        Self::Crash,
        Self::Hang,
        Self::CorruptMemory,
        Self::CorruptQueue,
        Self::FloodQueue,
    ];

    /// The name campaigns and reports use.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Crash => "crash",
            Self::Hang => "hang",
            Self::CorruptMemory => "memory",
            Self::CorruptQueue => "queue",
            Self::FloodQueue => "flood",
        }
    }

    /// The kind of a name from [`Kind::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// The longest hang, in microseconds (60 s).
pub const MAX_HANG_US: u64 = 60_000_000;
/// The most bytes one corruption writes.
pub const MAX_BYTES: u64 = 4096;
/// The most messages one flood writes (a ring holds fewer: it stops there).
pub const MAX_FLOOD: u64 = 4096;
/// The answer of a queue injection into a component without such a queue.
pub const NO_QUEUE: u64 = u64::MAX;

/// The pseudo-random stream of an injection (xorshift64*): the same seed
/// gives the same places and bytes, in the core and in host tests. A zero
/// seed is replaced by a fixed odd constant (xorshift's one fixed point).
/// The fuzzer (`fuzz_edges::random`) and the build tool's campaign plans
/// draw from it too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream(u64);

impl Stream {
    pub const fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value below `bound` (> 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        // The multiply-shift maps the 64-bit value onto the range without
        // the bias a remainder has for large bounds.
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// Picks `count` places in memory of `total` bytes made of ranges, as
/// offsets into their concatenation: the core's corruption of a
/// component's memory and of a queue use it, and host tests check it
/// never leaves the ranges.
pub fn place_in(ranges: &[(u64, u64)], stream: &mut Stream) -> Option<u64> {
    let total: u64 = ranges.iter().map(|&(start, end)| end - start).sum();
    if total == 0 {
        return None;
    }
    let mut offset = stream.below(total);
    for &(start, end) in ranges {
        if offset < end - start {
            return Some(start + offset);
        }
        offset -= end - start;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_by_number_and_name() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_u64(kind as u64), Some(kind));
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(Kind::from_u64(0), None);
        assert_eq!(Kind::from_u64(6), None);
        assert_eq!(Kind::from_name("reboot"), None);
    }

    #[test]
    fn a_seed_replays_and_zero_is_not_stuck() {
        let (mut a, mut b) = (Stream::new(42), Stream::new(42));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut zero = Stream::new(0);
        assert_ne!(zero.next_u64(), 0);
        assert_ne!(zero.next_u64(), zero.next_u64());
    }

    #[test]
    fn places_stay_inside_their_ranges_and_cover_them() {
        let ranges = [(0x1000, 0x1003), (0x8000, 0x8001), (0x20_0000, 0x20_0002)];
        let mut stream = Stream::new(7);
        let mut seen = [false; 6];
        for _ in 0..10_000 {
            let at = place_in(&ranges, &mut stream).unwrap();
            let index = match at {
                0x1000..0x1003 => at - 0x1000,
                0x8000 => 3,
                0x20_0000..0x20_0002 => 4 + at - 0x20_0000,
                _ => panic!("{at:#x} outside every range"),
            };
            seen[index as usize] = true;
        }
        assert!(seen.iter().all(|&hit| hit), "{seen:?}");
        assert_eq!(place_in(&[], &mut stream), None);
        assert_eq!(place_in(&[(5, 5)], &mut stream), None);
    }

    #[test]
    fn below_stays_below() {
        let mut stream = Stream::new(3);
        for bound in [1, 2, 3, 1000, u64::MAX] {
            for _ in 0..1000 {
                assert!(stream.below(bound) < bound);
            }
        }
    }
}
