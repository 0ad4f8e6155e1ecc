//! Waiting on this component's notification word without losing bits.
//!
//! The core answers a `Wait` with *all* bits set since the last one and
//! clears them. Several parts of one component (two queues, a supervisor
//! loop) may wait for different bits, so the bits one waiter does not want
//! are kept in [`PENDING`] for the others. Components are single-threaded;
//! the atomic only makes the static safe to share.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::syscall;

/// Bits received from the core but not yet taken by a waiter.
static PENDING: AtomicU64 = AtomicU64::new(0);

/// Waits until any bit in `mask` is set, for at most `timeout_us` (`None`
/// = forever). Returns the bits of `mask` that were set (and clears them),
/// or `None` on timeout. A timeout starts over when unrelated bits arrive.
pub fn wait_for(mask: u64, timeout_us: Option<u64>) -> Option<u64> {
    loop {
        let pending = PENDING.load(Ordering::Relaxed);
        if pending & mask != 0 {
            PENDING.fetch_and(!(pending & mask), Ordering::Relaxed);
            return Some(pending & mask);
        }
        let bits = syscall::wait(timeout_us)?;
        PENDING.fetch_or(bits, Ordering::Relaxed);
    }
}

/// Takes the bits of `mask` that are already set, without waiting.
pub fn poll(mask: u64) -> u64 {
    if let Some(bits) = syscall::wait(Some(0)) {
        PENDING.fetch_or(bits, Ordering::Relaxed);
    }
    PENDING.fetch_and(!mask, Ordering::Relaxed) & mask
}
