//! A driver's side of an interrupt line.
//!
//! capdl gives a driver that lists `interrupts = [N]` three things for
//! line N: the incoming bit `irqN` (set by the interrupt forwarder when
//! the line fires), and two signals to the forwarder, `irqN.ack` ("I dealt
//! with the device; let the line interrupt again") and `irqN.ready` ("I
//! (re)started; deliver what is pending"). A driver finds them with
//! [`Line::find`], says [`Line::ready`] once its device is set up, then
//! waits for [`Line::bits`] and acknowledges each delivery with
//! [`Line::acknowledge`] after it has cleared the device's cause. The
//! line stays masked from the moment it fires until that acknowledgement,
//! so a driver never sees a second interrupt for a cause it has not
//! cleared.

use crate::Start;

/// One interrupt line as its driver sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line {
    /// The IOAPIC input.
    pub line: u32,
    /// The bit the forwarder sets in this component's word.
    pub bits: u64,
    acknowledge: u64,
    ready: u64,
}

/// What is missing from the start page for a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotGranted(pub u32);

impl core::fmt::Display for NotGranted {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "interrupt line {} is not granted (the system file lists it in `interrupts` and names an interrupt_forwarder)",
            self.0
        )
    }
}

impl Line {
    /// Line `line` as the start page gives it.
    pub fn find(start: &Start, line: u32) -> Result<Self, NotGranted> {
        let missing = NotGranted(line);
        let mut buffer = [0u8; 32];
        let bits = name(&mut buffer, u64::from(line), "")
            .and_then(|base| start.incoming(base))
            .ok_or(missing)?;
        let capability = |suffix| {
            let mut buffer = [0u8; 32];
            name(&mut buffer, u64::from(line), suffix)
                .and_then(|name| start.capability(name))
                .ok_or(missing)
        };
        Ok(Self {
            line,
            bits,
            acknowledge: capability(".ack")?,
            ready: capability(".ready")?,
        })
    }

    /// Tells the forwarder this driver can take the line's interrupts:
    /// one pending while it was (re)starting is delivered now.
    pub fn ready(&self) {
        crate::syscall::signal(self.ready);
    }

    /// Tells the forwarder the device's cause is cleared: the line may
    /// interrupt again. Sent with the next wait (one system call for both).
    pub fn acknowledge(&self) {
        crate::notification::defer_signal(self.acknowledge);
    }

    /// Waits for the line (at most `timeout_us`); `true` if it fired.
    pub fn wait(&self, timeout_us: Option<u64>) -> bool {
        crate::notification::wait_for(self.bits, timeout_us).is_some()
    }
}

/// The name capdl gives line `line`'s resources: `irqN` followed by
/// `suffix` (`""`, `".ack"`, `".ready"`), written into `buffer`.
pub fn name<'a>(buffer: &'a mut [u8; 32], line: u64, suffix: &str) -> Option<&'a str> {
    let mut cursor = Cursor { buffer, length: 0 };
    core::fmt::write(&mut cursor, format_args!("irq{line}{suffix}")).ok()?;
    let length = cursor.length;
    core::str::from_utf8(&buffer[..length]).ok()
}

/// A `fmt::Write` into a fixed buffer.
struct Cursor<'a> {
    buffer: &'a mut [u8],
    length: usize,
}

impl core::fmt::Write for Cursor<'_> {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        let end = self.length + text.len();
        let slot = self
            .buffer
            .get_mut(self.length..end)
            .ok_or(core::fmt::Error)?;
        slot.copy_from_slice(text.as_bytes());
        self.length = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_ones_capdl_gives() {
        let mut buffer = [0u8; 32];
        assert_eq!(name(&mut buffer, 8, ""), Some("irq8"));
        assert_eq!(name(&mut buffer, 23, ".ready"), Some("irq23.ready"));
        assert_eq!(
            name(&mut buffer, u64::MAX, ".ready"),
            Some("irq18446744073709551615.ready")
        );
        assert_eq!(
            name(&mut buffer, u64::MAX, ".acknowledged"),
            None,
            "past 32 bytes"
        );
    }
}
