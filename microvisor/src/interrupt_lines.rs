//! Device interrupt lines as the core keeps them for the interrupt
//! forwarder.
//!
//! The core takes every device interrupt but decides nothing about who
//! gets it: a line that fires is masked at the IOAPIC, marked pending
//! here, and the forwarder's bit for it is set in the forwarder's
//! notification word. The forwarder passes the interrupt on to the
//! line's driver and, once the driver has dealt with the device, unmasks
//! the line (`InterruptUnmask`). What is pending (fired, still masked)
//! survives a restart of the forwarder, which asks for it
//! (`InterruptPending`) and so loses nothing.

/// IOAPIC inputs a line can name.
pub const LINES: usize = 24;

/// The forwarded lines, their bits in the forwarder's word, and which are
/// pending.
#[derive(Clone, Copy, Debug)]
pub struct InterruptLines {
    forwarder: Option<usize>,
    /// Bit n: line n is forwarded.
    forwarded: u32,
    /// Bit n: line n fired and is masked until the forwarder unmasks it.
    pending: u32,
    /// The forwarder's notification bit for each line.
    bits: [u8; LINES],
    /// The driver each line is passed on to.
    owners: [u8; LINES],
}

impl InterruptLines {
    /// No forwarder, no lines.
    pub const NONE: Self = Self {
        forwarder: None,
        forwarded: 0,
        pending: 0,
        bits: [0; LINES],
        owners: [0; LINES],
    };

    /// Lines delivered to component `forwarder`.
    pub const fn for_forwarder(forwarder: usize) -> Self {
        Self {
            forwarder: Some(forwarder),
            ..Self::NONE
        }
    }

    /// The forwarder, if the system has one.
    pub fn forwarder(&self) -> Option<usize> {
        self.forwarder
    }

    /// Forwards `line` with notification `bit`, for the driver `owner`;
    /// `false` (and nothing changes) for a line past [`LINES`], a bit past
    /// 63, an owner past 255, or without a forwarder.
    pub fn add(&mut self, line: u32, bit: u32, owner: u32) -> bool {
        if self.forwarder.is_none() || line as usize >= LINES || bit >= 64 || owner > 255 {
            return false;
        }
        self.forwarded |= 1 << line;
        self.bits[line as usize] = bit as u8;
        self.owners[line as usize] = owner as u8;
        true
    }

    /// The drivers of lines that can still interrupt (forwarded and not
    /// masked): while one of them and the forwarder live, a device may
    /// wake the system even if no timer is armed.
    pub fn armed_owners(&self) -> impl Iterator<Item = usize> + '_ {
        let armed = self.forwarded & !self.pending;
        (0..LINES)
            .filter(move |line| armed & (1 << line) != 0)
            .map(|line| usize::from(self.owners[line]))
    }

    /// Whether `line` is forwarded.
    pub fn forwards(&self, line: u64) -> bool {
        line < LINES as u64 && self.forwarded & (1 << line) != 0
    }

    /// Line `line` fired (the caller masked it): it is pending; returns
    /// the forwarder and the bits to set in its word, `None` for a line
    /// that is not forwarded.
    pub fn fired(&mut self, line: u64) -> Option<(usize, u64)> {
        if !self.forwards(line) {
            return None;
        }
        self.pending |= 1 << line;
        Some((self.forwarder?, 1 << self.bits[line as usize]))
    }

    /// The forwarder unmasks `line`: `true` when it is forwarded (the
    /// caller unmasks it at the IOAPIC); it is no longer pending.
    pub fn unmask(&mut self, line: u64) -> bool {
        if !self.forwards(line) {
            return false;
        }
        self.pending &= !(1 << line);
        true
    }

    /// Lines that fired and are still masked (bit n: line n).
    pub fn pending(&self) -> u32 {
        self.pending
    }

    /// The forwarded lines (bit n: line n).
    pub fn forwarded(&self) -> u32 {
        self.forwarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_pending_from_firing_to_unmask() {
        let mut lines = InterruptLines::for_forwarder(3);
        assert!(lines.add(8, 5, 1));
        assert!(lines.add(11, 6, 2));
        assert!(!lines.add(24, 7, 1), "no such input");
        assert!(!lines.add(9, 64, 1), "no such bit");
        assert_eq!(lines.armed_owners().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(lines.forwarded(), 1 << 8 | 1 << 11);
        assert_eq!(lines.fired(8), Some((3, 1 << 5)));
        assert_eq!(lines.fired(11), Some((3, 1 << 6)));
        assert_eq!(lines.fired(9), None, "not forwarded");
        assert_eq!(lines.fired(u64::MAX), None);
        assert_eq!(lines.pending(), 1 << 8 | 1 << 11);
        assert_eq!(lines.armed_owners().count(), 0, "both masked");
        assert!(lines.unmask(8));
        assert_eq!(lines.armed_owners().collect::<Vec<_>>(), [1]);
        assert!(!lines.unmask(9));
        assert!(!lines.unmask(400));
        assert_eq!(lines.pending(), 1 << 11);
        let mut none = InterruptLines::NONE;
        assert!(!none.add(8, 5, 1), "no forwarder, no lines");
        assert_eq!(none.forwarder(), None);
    }
}
