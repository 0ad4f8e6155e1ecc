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

/// Microseconds per TSC tick in 32.32 fixed point (from the start page's
/// TSC rate), for [`wait_for`]'s clock; 0 while the rate is unknown.
static US_PER_TICK: AtomicU64 = AtomicU64::new(0);

/// Tells [`wait_for`] the TSC's rate (`runtime::enter` calls it).
pub(crate) fn set_tsc_hz(hz: u64) {
    let scale = if hz == 0 {
        0
    } else {
        ((1_000_000u128 << 32) / u128::from(hz)).min(u128::from(u64::MAX)) as u64
    };
    US_PER_TICK.store(scale, Ordering::Relaxed);
}

/// Microseconds on the TSC — no system call and no division, so that a
/// wait costs no more than it did before it kept time — or from the
/// core's clock when the rate is unknown.
fn now_us() -> u64 {
    let scale = US_PER_TICK.load(Ordering::Relaxed);
    if scale == 0 {
        return syscall::time_ns() / 1000;
    }
    ((u128::from(crate::rdtsc()) * u128::from(scale)) >> 32) as u64
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
#[inline]
pub fn flush() {
    // Looked at first: most calls have nothing deferred, and a load is
    // cheaper than the swap's write.
    if DEFERRED.load(Ordering::Relaxed) == NONE {
        return;
    }
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
#[inline]
pub fn wait_for(mask: u64, timeout_us: Option<u64>) -> Option<u64> {
    match timeout_us {
        None => Some(wait_forever(mask)),
        Some(timeout_us) => wait_until(mask, timeout_us),
    }
}

/// Takes the bits of `mask` already received, if any.
#[inline(always)]
fn take_pending(mask: u64) -> Option<u64> {
    let pending = PENDING.load(Ordering::Relaxed) & mask;
    if pending == 0 {
        return None;
    }
    PENDING.fetch_and(!pending, Ordering::Relaxed);
    Some(pending)
}

/// [`wait_for`] without a timeout: the common case of a server or a
/// client awaiting its answer, kept short — the clock is read once at
/// the start and again only when a wait ends without the bits of `mask`.
#[inline(always)]
pub(crate) fn wait_forever(mask: u64) -> u64 {
    let watching = crate::queue::watching();
    let mut looked = if watching { now_us() } else { 0 };
    let mut step = watching.then_some(crate::queue::RECHECK_US);
    loop {
        if let Some(bits) = take_pending(mask) {
            return bits;
        }
        let woken = signal_and_wait(step, watching);
        if let Some(bits) = woken
            && (bits & mask != 0 || !watching)
        {
            continue;
        }
        // A lazy step ran out, or other bits came: is a look due?
        let now = now_us();
        let passed = now.saturating_sub(looked);
        if woken.is_none() || passed >= crate::queue::RECHECK_US {
            looked = now;
            step = Some(crate::queue::RECHECK_US);
            look(mask);
        } else {
            step = Some(crate::queue::RECHECK_US - passed);
        }
    }
}

/// [`wait_for`] with a timeout.
fn wait_until(mask: u64, timeout_us: u64) -> Option<u64> {
    let watching = crate::queue::watching();
    let start = now_us();
    let deadline = start.saturating_add(timeout_us);
    let mut looked = start;
    // The core is asked at least once, so that a poll (a zero timeout)
    // takes the bits already set and sends a deferred signal.
    let mut asked = false;
    loop {
        if let Some(bits) = take_pending(mask) {
            return Some(bits);
        }
        let now = now_us();
        if watching && now.saturating_sub(looked) >= crate::queue::RECHECK_US {
            looked = now;
            if look(mask) {
                continue;
            }
        }
        let left = deadline.saturating_sub(now);
        if left == 0 && asked {
            return None;
        }
        asked = true;
        // A wait with a deadline keeps the system alive until then
        // anyway: its looks are never lazy.
        let step = if watching {
            left.min(crate::queue::RECHECK_US - now.saturating_sub(looked))
        } else {
            left
        };
        signal_and_wait(Some(step), false);
    }
}

/// Sends the deferred signal, if any, and waits for at most `step` µs
/// (`lazy`: see `SignalWait`); the bits received are kept in [`PENDING`]
/// and returned, `None` when the step ran out.
#[inline(always)]
fn signal_and_wait(step: Option<u64>, lazy: bool) -> Option<u64> {
    let deferred = DEFERRED.swap(NONE, Ordering::Relaxed);
    let bits = syscall::signal_wait_lazily((deferred != NONE).then_some(deferred), step, lazy)?;
    PENDING.fetch_or(bits, Ordering::Relaxed);
    Some(bits)
}

/// Looks at this component's queues for work whose signal was lost
/// ([`crate::queue::due_bits`]); when some of it is for `mask`, counts
/// all of it as signalled and says so.
#[inline(always)]
fn look(mask: u64) -> bool {
    let due = crate::queue::due_bits();
    if due & mask == 0 {
        return false;
    }
    PENDING.fetch_or(due, Ordering::Relaxed);
    true
}

/// Bits received and not yet taken by a waiter.
#[inline]
pub fn pending() -> u64 {
    PENDING.load(Ordering::Relaxed)
}

/// Takes the bits of `mask` already received (no system call): what a
/// server's `ReplyWait` ended with [`crate::endpoint::Served::Signalled`]
/// for.
pub fn take(mask: u64) -> u64 {
    take_pending(mask).unwrap_or(0)
}

/// Keeps `bits` received outside a wait here (a server's `ReplyWait`).
pub(crate) fn keep(bits: u64) {
    PENDING.fetch_or(bits, Ordering::Relaxed);
}

/// [`look`] for every queue end: whether any has work whose signal was
/// lost (its bits are then kept).
pub(crate) fn look_all() -> bool {
    look(u64::MAX)
}

/// Takes the bits of `mask` that are already set, without waiting.
pub fn poll(mask: u64) -> u64 {
    flush();
    if let Some(bits) = syscall::wait(Some(0)) {
        PENDING.fetch_or(bits, Ordering::Relaxed);
    }
    PENDING.fetch_and(!mask, Ordering::Relaxed) & mask
}
