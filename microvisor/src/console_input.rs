//! Input from the system console, kept for the one component it is
//! delivered to.
//!
//! The core owns the console (COM1): it logs there, and it takes the
//! UART's receive interrupt when the system grants the console's line
//! ([`microvisor_abi::syscall::CONSOLE_LINE`]) to a component, which the
//! system file does for a VM with `console_input = true` (its world
//! switcher feeds the bytes to the guest's own UART). The interrupt handler
//! moves the received bytes into this ring and sets the grant's bit in the
//! holder's notification word; the holder takes them with
//! `ConsoleRead`. A full ring drops what arrives and counts it: input
//! nobody reads must not cost memory without bound.

/// Bytes the ring holds (about 100 ms of typing at 115200 baud).
pub const CAPACITY: usize = 1024;

/// The ring and who it belongs to.
pub struct ConsoleInput {
    /// The holder's component index and the bits to set in its word.
    holder: Option<(usize, u64)>,
    bytes: [u8; CAPACITY],
    /// Index of the oldest byte.
    head: usize,
    length: usize,
    /// Bytes lost because the ring was full.
    dropped: u64,
}

impl ConsoleInput {
    /// Input delivered to nobody (the UART's interrupt stays off).
    pub const NONE: Self = Self {
        holder: None,
        bytes: [0; CAPACITY],
        head: 0,
        length: 0,
        dropped: 0,
    };

    /// Input for component `holder`, signalled with notification `bit`
    /// (`bit` < 64, as capdl assigns them).
    pub const fn for_component(holder: usize, bit: u32) -> Self {
        Self {
            holder: Some((holder, 1 << (bit % 64))),
            ..Self::NONE
        }
    }

    /// The holder and the bits that tell it input arrived.
    pub fn holder(&self) -> Option<(usize, u64)> {
        self.holder
    }

    /// Keeps `byte`; `false` (and it is counted as dropped) when the ring
    /// is full.
    pub fn push(&mut self, byte: u8) -> bool {
        if self.length == CAPACITY {
            self.dropped = self.dropped.saturating_add(1);
            return false;
        }
        self.bytes[(self.head + self.length) % CAPACITY] = byte;
        self.length += 1;
        true
    }

    /// Moves the oldest bytes into `into`; returns how many.
    pub fn take(&mut self, into: &mut [u8]) -> usize {
        let count = into.len().min(self.length);
        for slot in &mut into[..count] {
            *slot = self.bytes[self.head];
            self.head = (self.head + 1) % CAPACITY;
        }
        self.length -= count;
        count
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.length
    }

    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Bytes dropped so far because nobody took them in time.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bytes_come_out_in_order_and_a_full_ring_drops() {
        let mut input = ConsoleInput::for_component(3, 5);
        assert_eq!(input.holder(), Some((3, 1 << 5)));
        assert!(input.is_empty());
        for byte in b"ls\n" {
            assert!(input.push(*byte));
        }
        let mut buffer = [0u8; 2];
        assert_eq!(input.take(&mut buffer), 2);
        assert_eq!(&buffer, b"ls");
        assert_eq!(input.len(), 1);
        for index in 0..CAPACITY {
            input.push(index as u8);
        }
        assert_eq!(input.len(), CAPACITY);
        assert_eq!(input.dropped(), 1, "the byte that found the ring full");
        let mut all = [0u8; CAPACITY + 8];
        assert_eq!(input.take(&mut all), CAPACITY);
        assert_eq!(all[0], b'\n');
        assert_eq!(all[1], 0);
        assert_eq!(all[CAPACITY - 1], (CAPACITY - 2) as u8);
        assert_eq!(input.take(&mut all), 0);
        assert_eq!(ConsoleInput::NONE.holder(), None);
    }

    proptest! {
        /// The ring is a FIFO of at most CAPACITY bytes whatever the mix
        /// of pushes and takes.
        #[test]
        fn behaves_as_a_bounded_queue(
            steps in proptest::collection::vec((any::<bool>(), 0usize..300, any::<u8>()), 0..200)
        ) {
            let mut input = ConsoleInput::for_component(0, 0);
            let mut model = std::collections::VecDeque::new();
            let mut dropped = 0u64;
            for (push, count, seed) in steps {
                if push {
                    for offset in 0..count {
                        let byte = seed.wrapping_add(offset as u8);
                        if model.len() == CAPACITY {
                            dropped += 1;
                            prop_assert!(!input.push(byte));
                        } else {
                            model.push_back(byte);
                            prop_assert!(input.push(byte));
                        }
                    }
                } else {
                    let mut buffer = vec![0u8; count];
                    let taken = input.take(&mut buffer);
                    prop_assert_eq!(taken, count.min(model.len()));
                    for byte in &buffer[..taken] {
                        prop_assert_eq!(Some(*byte), model.pop_front());
                    }
                }
                prop_assert_eq!(input.len(), model.len());
                prop_assert_eq!(input.dropped(), dropped);
            }
        }
    }
}
