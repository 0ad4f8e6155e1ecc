//! Capability handles: how a component names a slot of its capability
//! table.
//!
//! A handle is the slot index in bits 0..16 and the holder's generation in
//! bits 32..64; bits 16..32 are zero. The generation is the holder's life
//! (1 at first start, +1 per restart), so a handle kept from an earlier life
//! — written to shared memory, say — no longer names anything, and a made-up
//! number almost never does. [`decode`] is the only way the core turns a
//! handle back into a slot; anything it refuses faults the caller.

/// The handle of `slot` for a holder in `generation`.
pub const fn encode(slot: usize, generation: u32) -> u64 {
    (slot as u64 & 0xffff) | ((generation as u64) << 32)
}

/// The slot `handle` names for a holder in `generation` with `count`
/// capabilities, or `None` if it is stale, forged or out of range.
pub const fn decode(handle: u64, generation: u32, count: usize) -> Option<usize> {
    let slot = (handle & 0xffff) as usize;
    let reserved = (handle >> 16) & 0xffff;
    if reserved != 0 || handle >> 32 != generation as u64 || slot >= count {
        return None;
    }
    Some(slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        for slot in [0, 1, 31] {
            assert_eq!(decode(encode(slot, 7), 7, 32), Some(slot));
        }
    }

    #[test]
    fn stale_forged_and_out_of_range_handles_are_refused() {
        let handle = encode(3, 1);
        // The holder restarted: generation 2 no longer accepts it.
        assert_eq!(decode(handle, 2, 8), None);
        // Past the table.
        assert_eq!(decode(encode(8, 1), 1, 8), None);
        // Reserved bits set.
        assert_eq!(decode(handle | 1 << 20, 1, 8), None);
        // Random numbers.
        assert_eq!(decode(u64::MAX, 1, 8), None);
        assert_eq!(decode(0, 1, 8), None);
    }

    proptest! {
        #[test]
        fn only_exact_handles_decode(handle in any::<u64>(), generation in 1u32..1000, count in 0usize..33) {
            if let Some(slot) = decode(handle, generation, count) {
                prop_assert!(slot < count);
                prop_assert_eq!(handle, encode(slot, generation));
            }
        }
    }
}
