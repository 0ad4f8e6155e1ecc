//! Device interrupt lines as the core keeps them for the interrupt
//! forwarder.
//!
//! The core takes every device interrupt but decides nothing about who
//! gets it: a line that fires is marked pending here and the forwarder's
//! bit for it is set in the forwarder's notification word. The forwarder
//! passes the interrupt on to the line's driver and, once the driver has
//! dealt with the device, releases the line (`InterruptUnmask`). What is
//! pending survives a restart of the forwarder, which asks for it
//! (`InterruptPending`) and so loses nothing.
//!
//! How a line is held while pending depends on its trigger mode. A
//! level-triggered line is masked at the IOAPIC when it fires (it would
//! fire again at once while its device holds it) and unmasked on release.
//! An edge-triggered line is not masked when it fires: an IOAPIC drops
//! edges on a masked input, so masking would lose an edge that comes
//! between the driver clearing its device and the release. An edge that
//! comes while the line is pending is remembered (one, however many come)
//! and the line masked then, so a pulsing device cannot hold the CPU; on
//! release the remembered edge makes the line pending again and signals
//! the forwarder once more.

/// Lines: the IOAPIC's 24 inputs, then MSI vectors
/// ([`microvisor_abi::spec::FIRST_MSI_LINE`]).
pub const LINES: usize = microvisor_abi::spec::INTERRUPT_LINES as usize;

/// What the core does when a line fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fired {
    /// Not a forwarded line: nothing.
    NotForwarded,
    /// Set `bits` in the forwarder's (`.0`) word; mask the line first when
    /// `mask` (level-triggered).
    Signal { signal: (usize, u64), mask: bool },
    /// An edge while pending: remembered; mask the line.
    Again,
}

/// What the core does when the forwarder releases a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Released {
    /// Signal the forwarder again (an edge came while the line was
    /// pending): set these bits in this component's word.
    pub signal: Option<(usize, u64)>,
}

/// The forwarded lines, their bits in the forwarder's word, and which are
/// pending.
#[derive(Clone, Copy, Debug)]
pub struct InterruptLines {
    forwarder: Option<usize>,
    /// Bit n: line n is forwarded.
    forwarded: u32,
    /// Bit n: line n fired and waits for the forwarder's release.
    pending: u32,
    /// Bit n: line n is level-triggered.
    level: u32,
    /// Bit n: edge-triggered line n fired again while pending (and was
    /// masked then).
    again: u32,
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
        level: 0,
        again: 0,
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

    /// Forwards `line` with notification `bit`, for the driver `owner`,
    /// level- or edge-triggered; `false` (and nothing changes) for a line
    /// past [`LINES`], a bit past 63, an owner past 255, or without a
    /// forwarder.
    pub fn add(&mut self, line: u32, bit: u32, owner: u32, level: bool) -> bool {
        if self.forwarder.is_none() || line as usize >= LINES || bit >= 64 || owner > 255 {
            return false;
        }
        self.forwarded |= 1 << line;
        if level {
            self.level |= 1 << line;
        }
        self.bits[line as usize] = bit as u8;
        self.owners[line as usize] = owner as u8;
        true
    }

    /// The drivers of lines that can still interrupt (forwarded and not
    /// pending): while one of them and the forwarder live, a device may
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

    /// Line `line` fired: what the caller must do (see [`Fired`]).
    pub fn fired(&mut self, line: u64) -> Fired {
        let Some(forwarder) = self.forwarder.filter(|_| self.forwards(line)) else {
            return Fired::NotForwarded;
        };
        let bit = 1 << line;
        let signal = (forwarder, 1 << self.bits[line as usize]);
        if self.level & bit != 0 {
            self.pending |= bit;
            Fired::Signal { signal, mask: true }
        } else if self.pending & bit == 0 {
            self.pending |= bit;
            Fired::Signal {
                signal,
                mask: false,
            }
        } else {
            self.again |= bit;
            Fired::Again
        }
    }

    /// The forwarder releases `line`; `None` when it is not forwarded.
    /// The caller unmasks it at the IOAPIC, and signals the forwarder when
    /// [`Released::signal`] says so (an edge came while it was pending).
    pub fn unmask(&mut self, line: u64) -> Option<Released> {
        let forwarder = self.forwarder.filter(|_| self.forwards(line))?;
        let bit = 1 << line;
        if self.again & bit != 0 {
            self.again &= !bit;
            return Some(Released {
                signal: Some((forwarder, 1 << self.bits[line as usize])),
            });
        }
        self.pending &= !bit;
        Some(Released { signal: None })
    }

    /// Lines that fired and wait for the forwarder's release (bit n:
    /// line n).
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
    fn a_level_line_is_masked_from_firing_to_release() {
        let mut lines = InterruptLines::for_forwarder(3);
        assert!(lines.add(16, 5, 1, true));
        assert!(!lines.add(32, 8, 1, true), "no such line");
        assert!(!lines.add(9, 64, 1, true), "no such bit");
        assert!(!lines.add(9, 6, 256, true), "no such owner");
        // Lines from 24 up are MSI vectors: they exist too.
        let mut msi = InterruptLines::for_forwarder(3);
        assert!(msi.add(24, 7, 2, false));
        assert!(msi.forwards(24));
        assert_eq!(
            lines.fired(16),
            Fired::Signal {
                signal: (3, 1 << 5),
                mask: true
            }
        );
        assert_eq!(lines.pending(), 1 << 16);
        assert_eq!(lines.armed_owners().count(), 0);
        assert_eq!(lines.unmask(16), Some(Released { signal: None }));
        assert_eq!(lines.pending(), 0);
        assert_eq!(lines.armed_owners().collect::<Vec<_>>(), [1]);
        assert_eq!(lines.fired(9), Fired::NotForwarded);
        assert_eq!(lines.fired(u64::MAX), Fired::NotForwarded);
        assert_eq!(lines.unmask(9), None);
        assert_eq!(lines.unmask(400), None);
    }

    #[test]
    fn an_edge_while_pending_is_kept_and_signalled_on_release() {
        let mut lines = InterruptLines::for_forwarder(3);
        assert!(lines.add(8, 5, 1, false));
        // The first edge signals without masking (an IOAPIC drops edges
        // on a masked input).
        assert_eq!(
            lines.fired(8),
            Fired::Signal {
                signal: (3, 1 << 5),
                mask: false
            }
        );
        // Two more before the release: remembered once, masked.
        assert_eq!(lines.fired(8), Fired::Again);
        assert_eq!(lines.fired(8), Fired::Again);
        // The release signals again and the line stays pending.
        assert_eq!(
            lines.unmask(8),
            Some(Released {
                signal: Some((3, 1 << 5))
            })
        );
        assert_eq!(lines.pending(), 1 << 8);
        // The next release ends it.
        assert_eq!(lines.unmask(8), Some(Released { signal: None }));
        assert_eq!(lines.pending(), 0);
        assert_eq!(lines.armed_owners().collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn nothing_without_a_forwarder() {
        let mut none = InterruptLines::NONE;
        assert!(!none.add(8, 5, 1, false));
        assert_eq!(none.forwarder(), None);
        assert_eq!(none.fired(8), Fired::NotForwarded);
    }
}
