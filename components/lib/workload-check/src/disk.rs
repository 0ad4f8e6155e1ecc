//! diskcheck's block patterns: every 4 KiB block it writes holds 512
//! words that name the block, the round it was written in and the boot's
//! salt, so that a block that reads back wrong tells what it holds
//! instead ([`identify`]): zeros, the data of another round (a lost
//! write: the block still holds what an earlier write left), another
//! block's data (a write that landed in the wrong place), or anything
//! else.

use core::fmt;

/// Bytes of a block.
pub const BLOCK_BYTES: usize = 4096;
/// 64-bit words of a block.
pub const BLOCK_WORDS: usize = BLOCK_BYTES / 8;

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
const MIX: u64 = 0xbf58_476d_1ce4_e5b9;
/// `MIX`'s inverse modulo 2^64 (odd numbers have one), by Newton's
/// iteration: each step doubles the correct low bits.
const MIX_INVERSE: u64 = {
    let mut inverse = MIX;
    let mut step = 0;
    while step < 6 {
        inverse = inverse.wrapping_mul(2u64.wrapping_sub(MIX.wrapping_mul(inverse)));
        step += 1;
    }
    inverse
};
const _: () = assert!(MIX.wrapping_mul(MIX_INVERSE) == 1);

/// Word `word` of `block` as written in `round` under `salt` (round 0:
/// zero, a block never written). diskcheck's default run uses salt 0; its
/// campaign mode a salt of its own each boot, so that what an earlier
/// boot wrote is never taken for this boot's data.
pub fn pattern(block: u64, round: u32, salt: u64, word: u64) -> u64 {
    if round == 0 {
        return 0;
    }
    let mut x = block << 32 | u64::from(round);
    x ^= word.wrapping_mul(GOLDEN);
    x ^= x >> 29;
    x.wrapping_mul(MIX) ^ salted(salt, word)
}

/// What `salt` adds to word `word` (nothing for salt 0): splitmix64 of
/// the two, so that no block and round under one salt write what another
/// block and round write under another.
fn salted(salt: u64, word: u64) -> u64 {
    if salt == 0 {
        return 0;
    }
    let mut z = salt.wrapping_add(word.wrapping_mul(GOLDEN));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The block and round whose word 0 is `value` under `salt` (pattern's
/// inverse for word 0).
fn key_of(value: u64, salt: u64) -> (u64, u32) {
    let y = (value ^ salted(salt, 0)).wrapping_mul(MIX_INVERSE);
    let x = y ^ (y >> 29) ^ (y >> 58);
    (x >> 32, x as u32)
}

/// What a block read back holds, against what was expected of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// What was expected.
    Expected,
    /// Zeros throughout (a block never written, or zeroed).
    Zeros,
    /// Throughout, the pattern `block` was written with in `round` under
    /// the same salt, but not the one expected: an earlier round's data
    /// is a lost write; another block's, a misplaced one.
    Written { block: u64, round: u32 },
    /// Anything else: the first byte that differs from what was
    /// expected, and how many of the block's 8-byte words differ.
    Other {
        first_wrong: usize,
        wrong_words: usize,
    },
}

/// What the block whose words `word(0..BLOCK_WORDS)` gives holds, when it
/// should hold `block`'s pattern of `round` under `salt`.
pub fn identify(word: impl Fn(usize) -> u64, block: u64, round: u32, salt: u64) -> Content {
    let expected = |index: usize| pattern(block, round, salt, index as u64);
    let mut wrong = (0..BLOCK_WORDS).filter(|&index| word(index) != expected(index));
    let Some(first) = wrong.next() else {
        return Content::Expected;
    };
    let wrong_words = 1 + wrong.count();
    if (0..BLOCK_WORDS).all(|index| word(index) == 0) {
        return Content::Zeros;
    }
    let (found_block, found_round) = key_of(word(0), salt);
    if found_round != 0
        && (0..BLOCK_WORDS)
            .all(|index| word(index) == pattern(found_block, found_round, salt, index as u64))
    {
        return Content::Written {
            block: found_block,
            round: found_round,
        };
    }
    let differs = (word(first) ^ expected(first)).to_le_bytes();
    let byte = differs.iter().position(|&byte| byte != 0).unwrap_or(0);
    Content::Other {
        first_wrong: first * 8 + byte,
        wrong_words,
    }
}

impl Content {
    /// Says what block `block` was found to hold ("zeros", "its data of
    /// round 5", "block 9's data of round 2", ...).
    pub fn describe(self, block: u64) -> impl fmt::Display {
        Described {
            content: self,
            block,
        }
    }
}

struct Described {
    content: Content,
    block: u64,
}

impl fmt::Display for Described {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.content {
            Content::Expected => formatter.write_str("the data expected"),
            Content::Zeros => formatter.write_str("zeros"),
            Content::Written { block, round } if block == self.block => {
                write!(formatter, "its data of round {round}")
            }
            Content::Written { block, round } => {
                write!(formatter, "block {block}'s data of round {round}")
            }
            Content::Other {
                first_wrong,
                wrong_words,
            } => write!(
                formatter,
                "other data (first wrong byte {first_wrong}, {} of {BLOCK_BYTES} bytes in wrong words)",
                wrong_words * 8
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;
    use std::vec::Vec;

    use super::*;

    fn block_of(block: u64, round: u32, salt: u64) -> Vec<u64> {
        (0..BLOCK_WORDS as u64)
            .map(|word| pattern(block, round, salt, word))
            .collect()
    }

    fn identify_in(words: &[u64], block: u64, round: u32, salt: u64) -> Content {
        identify(|index| words[index], block, round, salt)
    }

    #[test]
    fn salt_zero_keeps_the_default_runs_pattern() {
        // diskcheck's pattern before campaigns: the same words.
        let old = |block: u64, round: u32, word: u64| {
            let mut x = block << 32 | u64::from(round);
            x ^= word.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^= x >> 29;
            x.wrapping_mul(0xbf58_476d_1ce4_e5b9)
        };
        for (block, round, word) in [(0, 1, 0), (255, 40, 511), (17, 3, 100)] {
            assert_eq!(pattern(block, round, 0, word), old(block, round, word));
        }
        assert_eq!(pattern(5, 0, 0, 3), 0);
        assert_eq!(pattern(5, 0, 77, 3), 0);
    }

    #[test]
    fn word_zero_names_its_block_and_round() {
        for salt in [0, 1, 0xdead_beef_0000_1234, u64::MAX] {
            for (block, round) in [(0, 1), (255, 40), (1 << 20, u32::MAX), (17, 123_456)] {
                assert_eq!(key_of(pattern(block, round, salt, 0), salt), (block, round));
            }
        }
    }

    #[test]
    fn the_expected_block_is_expected() {
        let words = block_of(17, 52, 99);
        assert_eq!(identify_in(&words, 17, 52, 99), Content::Expected);
        // Round 0 expects zeros.
        assert_eq!(identify_in(&[0; BLOCK_WORDS], 17, 0, 99), Content::Expected);
    }

    #[test]
    fn an_older_round_is_a_lost_write() {
        let words = block_of(17, 51, 99);
        let found = identify_in(&words, 17, 52, 99);
        assert_eq!(
            found,
            Content::Written {
                block: 17,
                round: 51
            }
        );
        assert_eq!(found.describe(17).to_string(), "its data of round 51");
        let misplaced = identify_in(&block_of(9, 2, 99), 17, 52, 99);
        assert_eq!(
            misplaced.describe(17).to_string(),
            "block 9's data of round 2"
        );
    }

    #[test]
    fn zeros_and_other_data() {
        let zeros = identify_in(&[0; BLOCK_WORDS], 17, 52, 99);
        assert_eq!(zeros, Content::Zeros);
        assert_eq!(zeros.describe(17).to_string(), "zeros");
        // Another boot's data (another salt) is not taken for this one's.
        let other_boot = identify_in(&block_of(17, 51, 1), 17, 52, 99);
        assert!(matches!(
            other_boot,
            Content::Other {
                first_wrong: 0..8,
                wrong_words: BLOCK_WORDS
            }
        ));
        // One byte flipped in word 3.
        let mut words = block_of(17, 52, 99);
        words[3] ^= 0x0000_ff00;
        assert_eq!(
            identify_in(&words, 17, 52, 99),
            Content::Other {
                first_wrong: 3 * 8 + 1,
                wrong_words: 1
            }
        );
        // A torn block: half of it from the round before.
        let mut torn = block_of(17, 52, 99);
        torn[256..].copy_from_slice(&block_of(17, 51, 99)[256..]);
        let found = identify_in(&torn, 17, 52, 99);
        assert!(
            matches!(
                found,
                Content::Other {
                    wrong_words: 256,
                    ..
                }
            ),
            "{found:?}"
        );
        assert!(
            found
                .describe(17)
                .to_string()
                .starts_with("other data (first wrong byte 20")
        );
    }
}
