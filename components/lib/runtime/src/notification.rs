//! Waiting on this component's notification word without losing bits.
//!
//! The core answers a `Wait` with *all* bits set since the last one and
//! clears them. Several parts of one component (two queues, a supervisor
//! loop) may wait for different bits, so the bits one waiter does not want
//! are kept in [`PENDING`] for the others. Components are single-threaded;
//! the atomics only make the statics safe to share.
//!
//! A signal may also be *deferred* ([`defer_signal`]): it is then sent by
//! the next wait in the same entry into the core (`SignalWait`), or by
//! [`flush`], a yield or an exit — whichever comes first. A component that
//! sends and then waits for the answer (a client, a server between
//! requests) so pays one system call instead of two.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::syscall;

/// The TSC's rate (from the start page), for [`wait_for`]'s clock.
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// Tells [`wait_for`] the TSC's rate (`runtime::enter` calls it).
pub(crate) fn set_tsc_hz(hz: u64) {
    TSC_HZ.store(hz, Ordering::Relaxed);
}

/// Microseconds on the TSC — no system call, so that a wait costs no
/// more than it did before it kept time — or from the core's clock when
/// the rate is unknown.
fn now_us() -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed);
    if hz == 0 {
        return syscall::time_ns() / 1000;
    }
    (u128::from(crate::rdtsc()) * 1_000_000 / u128::from(hz)) as u64
}

/// Bits received from the core but not yet taken by a waiter.
static PENDING: AtomicU64 = AtomicU64::new(0);

/// A signal to send with the next wait, or [`NONE`].
static DEFERRED: AtomicU64 = AtomicU64::new(NONE);
const NONE: u64 = u64::MAX;

/// Sends `handle`'s signal with the next wait (see the module
/// documentation). A different signal already deferred is sent now.
pub fn defer_signal(handle: u64) {
    let previous = DEFERRED.swap(handle, Ordering::Relaxed);
    if previous != NONE && previous != handle {
        syscall::signal(previous);
    }
}

/// Sends a deferred signal now, if there is one.
pub fn flush() {
    let deferred = DEFERRED.swap(NONE, Ordering::Relaxed);
    if deferred != NONE {
        syscall::signal(deferred);
    }
}

/// Waits until any bit in `mask` is set, for at most `timeout_us` (`None`
/// = forever). Returns the bits of `mask` that were set (and clears them),
/// or `None` on timeout. Unrelated bits that arrive meanwhile are kept
/// for their waiters; the timeout counts from the call.
///
/// A component with queues also never goes longer than
/// [`crate::queue::RECHECK_US`] without looking for queue ends with work
/// whose signal was lost (a stray write to a `*_waiting` flag), and
/// counts them as signalled ([`crate::queue::due_bits`]).
pub fn wait_for(mask: u64, timeout_us: Option<u64>) -> Option<u64> {
    let watching = crate::queue::watching();
    let start = if watching || timeout_us.is_some() {
        now_us()
    } else {
        0
    };
    let deadline = timeout_us.map(|us| start.saturating_add(us));
    let mut looked = start;
    // The core is asked at least once, so that a poll (`Some(0)`) takes
    // the bits already set and sends a deferred signal.
    let mut asked = false;
    loop {
        let pending = PENDING.load(Ordering::Relaxed);
        if pending & mask != 0 {
            PENDING.fetch_and(!(pending & mask), Ordering::Relaxed);
            return Some(pending & mask);
        }
        let now = if watching || deadline.is_some() {
            now_us()
        } else {
            0
        };
        if watching && now.saturating_sub(looked) >= crate::queue::RECHECK_US {
            looked = now;
            let due = crate::queue::due_bits();
            if due & mask != 0 {
                PENDING.fetch_or(due, Ordering::Relaxed);
                continue;
            }
        }
        let left = deadline.map(|deadline| deadline.saturating_sub(now));
        if left == Some(0) && asked {
            return None;
        }
        asked = true;
        // Only the look of a wait without a deadline is lazy: one with a
        // deadline keeps the system alive until then anyway.
        let (step, lazy) = if watching {
            let until_look = crate::queue::RECHECK_US - now.saturating_sub(looked);
            match left {
                Some(left) => (Some(left.min(until_look)), false),
                None => (Some(until_look), true),
            }
        } else {
            (left, false)
        };
        let deferred = DEFERRED.swap(NONE, Ordering::Relaxed);
        if let Some(bits) =
            syscall::signal_wait_lazily((deferred != NONE).then_some(deferred), step, lazy)
        {
            PENDING.fetch_or(bits, Ordering::Relaxed);
        }
    }
}

/// Takes the bits of `mask` that are already set, without waiting.
pub fn poll(mask: u64) -> u64 {
    flush();
    if let Some(bits) = syscall::wait(Some(0)) {
        PENDING.fetch_or(bits, Ordering::Relaxed);
    }
    PENDING.fetch_and(!mask, Ordering::Relaxed) & mask
}
