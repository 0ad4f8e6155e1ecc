//! A per-NIC rate limit for the bridge: a token bucket of frames. A NIC
//! may send `per_second` frames a second on average and bursts of up to a
//! tenth of that (at least [`MIN_BURST`]); a frame over the limit is
//! dropped by the bridge and counted as throttled, so that a guest flooding
//! its network takes no more than its share of the bridge's time and of its
//! peers' queues. A limit of 0 is no limit.

/// The smallest burst a limit allows (a guest's receive-side batch).
pub const MIN_BURST: u64 = 64;

/// One NIC's bucket.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    per_second: u64,
    burst: u64,
    /// Tokens, in frames times 10^9 (so that refills of a fraction of a
    /// frame add up).
    tokens: u128,
    last_ns: u64,
}

impl RateLimit {
    /// A full bucket for `per_second` frames a second (0: unlimited).
    pub const fn new(per_second: u64) -> Self {
        let burst = if per_second / 10 > MIN_BURST {
            per_second / 10
        } else {
            MIN_BURST
        };
        Self {
            per_second,
            burst,
            tokens: burst as u128 * 1_000_000_000,
            last_ns: 0,
        }
    }

    /// Whether a frame sent at `now_ns` is within the limit (taking its
    /// token if so).
    pub fn allow(&mut self, now_ns: u64) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        let full = self.burst as u128 * 1_000_000_000;
        self.tokens = (self.tokens + elapsed as u128 * self.per_second as u128).min(full);
        if self.tokens >= 1_000_000_000 {
            self.tokens -= 1_000_000_000;
            true
        } else {
            false
        }
    }

    /// The limit, in frames a second (0: none).
    pub fn per_second(&self) -> u64 {
        self.per_second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_burst_then_the_steady_rate() {
        let mut limit = RateLimit::new(10_000);
        // A burst of a tenth of a second's worth at once.
        let burst = (0..2_000).filter(|_| limit.allow(0)).count();
        assert_eq!(burst, 1_000);
        // Then 10 frames a millisecond, however many are offered.
        let mut allowed = 0;
        for ms in 1..=100 {
            allowed += (0..50).filter(|_| limit.allow(ms * MS)).count();
        }
        assert_eq!(allowed, 1_000);
        // An idle second refills only up to the burst.
        assert_eq!(
            (0..5_000).filter(|_| limit.allow(1_200 * MS)).count(),
            1_000
        );
    }

    #[test]
    fn small_limits_still_allow_a_batch_and_zero_is_none() {
        let mut limit = RateLimit::new(100);
        assert_eq!(
            (0..100).filter(|_| limit.allow(0)).count(),
            MIN_BURST as usize
        );
        // One frame every 10 ms.
        assert!(!limit.allow(9 * MS));
        assert!(limit.allow(10 * MS));
        let mut none = RateLimit::new(0);
        assert!((0..1_000_000).all(|_| none.allow(0)));
        assert_eq!(none.per_second(), 0);
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let mut limit = RateLimit::new(1_000);
        while limit.allow(5 * MS) {}
        assert!(!limit.allow(MS), "an earlier time adds no tokens");
        assert!(limit.allow(6 * MS));
    }
}
