//! Where device memory may not be granted: the physical ranges the boot
//! map calls RAM, the core's own image and the boot modules. A component's
//! `mmio` grant over any of them is refused at boot (capdl refuses what it
//! can know earlier: RAM up to the machine's size and the core's own
//! device pages, `microvisor_abi::spec::CORE_DEVICE_PAGES`).

/// Ranges kept (more are merged into the last one's neighbours rather
/// than dropped: see [`NotDevices::add`]).
pub const MAX_RANGES: usize = 32;

/// Physical ranges `[start, end)` that are not device memory.
#[derive(Clone, Copy, Debug)]
pub struct NotDevices {
    ranges: [(u64, u64); MAX_RANGES],
    count: usize,
}

impl Default for NotDevices {
    fn default() -> Self {
        Self::new()
    }
}

impl NotDevices {
    pub const fn new() -> Self {
        Self {
            ranges: [(0, 0); MAX_RANGES],
            count: 0,
        }
    }

    /// Adds `[start, end)`. With every slot used, the range is merged
    /// into the last slot (which then covers everything between), so the
    /// set only ever grows: a grant is refused too often, never allowed
    /// over RAM.
    pub fn add(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        if self.count < MAX_RANGES {
            self.ranges[self.count] = (start, end);
            self.count += 1;
        } else {
            let last = &mut self.ranges[MAX_RANGES - 1];
            *last = (last.0.min(start), last.1.max(end));
        }
    }

    /// Whether `[start, start + size)` meets any range.
    pub fn overlaps(&self, start: u64, size: u64) -> bool {
        let end = start.saturating_add(size);
        self.ranges[..self.count]
            .iter()
            .any(|&(from, to)| start < to && from < end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_meets_a_range_and_never_forgets_one() {
        let mut not = NotDevices::new();
        not.add(0, 0xa_0000);
        not.add(0x10_0000, 0x2000_0000);
        not.add(5, 5);
        assert!(not.overlaps(0x9_f000, 0x1000));
        assert!(!not.overlaps(0xa_0000, 0x6_0000), "the legacy window");
        assert!(not.overlaps(0xf_f000, 0x2000), "reaches into RAM");
        assert!(!not.overlaps(0xfe00_0000, 0x1000));
        assert!(!not.overlaps(0x2000_0000, 0x1000));
        // Overflowing the slots widens the last one.
        let mut full = NotDevices::new();
        for index in 0..MAX_RANGES as u64 + 3 {
            full.add(index * 0x10_0000, index * 0x10_0000 + 0x1000);
        }
        for index in 0..MAX_RANGES as u64 + 3 {
            assert!(full.overlaps(index * 0x10_0000, 1), "range {index} kept");
        }
        assert!(!full.overlaps(0x5000, 0x1000));
        assert!(!full.overlaps(u64::MAX - 1, 1));
    }
}
