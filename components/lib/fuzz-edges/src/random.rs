//! A seeded pseudo-random generator: the core's injection stream
//! (`microvisor_abi::inject::Stream`, xorshift64*) over a state mixed from
//! the seed by one SplitMix64 step, so that seeds 0, 1, 2, ... start far
//! apart and no seed gives the all-zero state xorshift cannot leave.

use microvisor_abi::inject::Stream;

/// The generator. Not for cryptography: for choosing attacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Random(Stream);

impl Random {
    /// A generator whose whole sequence is named by `seed`.
    pub const fn new(seed: u64) -> Self {
        // SplitMix64's finaliser.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Self(Stream::new(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z }))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number below `bound` (0 when `bound` is 0). The modulo's bias is
    /// below 2^-40 for the small bounds used here.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }

    /// True once in `n` draws on average (always for `n` <= 1).
    pub fn one_in(&mut self, n: u64) -> bool {
        n <= 1 || self.below(n) == 0
    }

    /// One of `choices` (which must not be empty).
    pub fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.below(choices.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_name_sequences() {
        let (mut a, mut b, mut c) = (Random::new(7), Random::new(7), Random::new(8));
        let first: [u64; 4] = core::array::from_fn(|_| a.next_u64());
        let again: [u64; 4] = core::array::from_fn(|_| b.next_u64());
        let other: [u64; 4] = core::array::from_fn(|_| c.next_u64());
        assert_eq!(first, again);
        assert_ne!(first, other);
    }

    #[test]
    fn bounded_draws_stay_in_bounds() {
        let mut random = Random::new(1);
        for bound in [1, 2, 3, 10, 1000] {
            for _ in 0..1000 {
                assert!(random.below(bound) < bound);
            }
        }
        assert_eq!(random.below(0), 0);
        assert!(random.one_in(1) && random.one_in(0));
        let hits = (0..64_000).filter(|_| random.one_in(64)).count();
        assert!(
            (800..1200).contains(&hits),
            "{hits} hits of 1 in 64 in 64,000"
        );
    }
}
