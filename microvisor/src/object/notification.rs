//! A notification word: the bits other components (and the core, for
//! faults and queue resets) set in a component, which it collects with
//! `Wait`.
//!
//! Setting bits never blocks and never fails; collecting takes every set
//! bit at once and clears the word, so no signal is lost and none is
//! delivered twice.

/// One component's notification word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notification {
    word: u64,
}

impl Notification {
    /// No bit set.
    pub const EMPTY: Self = Self { word: 0 };

    /// Sets `bits`.
    pub fn set(&mut self, bits: u64) {
        self.word |= bits;
    }

    /// Takes every set bit, or `None` when none is set.
    pub fn take(&mut self) -> Option<u64> {
        match core::mem::take(&mut self.word) {
            0 => None,
            bits => Some(bits),
        }
    }
}
