//! When a workload whose checked units are small (netcheck's echoes, a
//! fraction of a millisecond each) prints its next `CHECK <workload> ok
//! <n>` line: once at least an interval has passed since the last one and
//! some unit was checked meanwhile. `n` counts those lines from 1.

/// Paces `ok` lines by a clock the caller reads (TSC ticks, say).
#[derive(Clone, Copy, Debug)]
pub struct Pacer {
    interval: u64,
    last: u64,
    lines: u64,
}

impl Pacer {
    /// A pacer that prints at most one line per `interval`, counting from
    /// `now`.
    pub const fn new(interval: u64, now: u64) -> Self {
        Self {
            interval,
            last: now,
            lines: 0,
        }
    }

    /// A unit was checked at `now`: `Some(n)` when the n-th `ok` line is
    /// due.
    pub fn checked(&mut self, now: u64) -> Option<u64> {
        if now.wrapping_sub(self.last) < self.interval {
            return None;
        }
        self.last = now;
        self.lines += 1;
        Some(self.lines)
    }

    /// `ok` lines due so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_of_progress() {
        let mut pacer = Pacer::new(100, 1000);
        assert_eq!(pacer.checked(1050), None);
        assert_eq!(pacer.checked(1099), None);
        assert_eq!(pacer.checked(1100), Some(1));
        assert_eq!(pacer.checked(1150), None);
        // A long stall: one line when progress comes again, not a burst.
        assert_eq!(pacer.checked(9000), Some(2));
        assert_eq!(pacer.checked(9001), None);
        assert_eq!(pacer.checked(9100), Some(3));
        assert_eq!(pacer.lines(), 3);
    }
}
