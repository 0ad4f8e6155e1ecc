//! The message ping sends and pong echoes: a sequence number and a payload
//! derived from it, so either end can check that every message arrived
//! once, in order, with its content. A sequence of [`STOP`] ends the
//! exchange; one of [`SILENT`] is taken and not answered. Checks compare word by word against the expected values, so
//! no whole message is built or compared on the hot path.
#![no_std]
#![forbid(unsafe_code)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The sequence number that ends the exchange.
pub const STOP: u64 = u64::MAX;

/// The sequence number of a request pong takes and does not answer (to
/// show that a timed receive times out on time).
pub const SILENT: u64 = u64::MAX - 1;

/// One 64-byte message.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Message {
    pub sequence: u64,
    pub payload: [u64; 7],
}

impl Message {
    /// Word `index` of the payload of request `sequence`.
    fn word(sequence: u64, index: usize) -> u64 {
        sequence
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(index as u32 * 9)
            ^ index as u64
    }

    /// The request with `sequence`.
    pub fn request(sequence: u64) -> Self {
        let mut message = Self::default();
        message.make_request(sequence);
        message
    }

    /// Turns this message into the request with `sequence`, in place.
    pub fn make_request(&mut self, sequence: u64) {
        self.sequence = sequence;
        for (index, word) in self.payload.iter_mut().enumerate() {
            *word = Self::word(sequence, index);
        }
    }

    /// The reply to this request: the same sequence, the payload inverted.
    pub fn reply(&self) -> Self {
        Self {
            sequence: self.sequence,
            payload: self.payload.map(|word| !word),
        }
    }

    /// Whether this is exactly the request with `sequence`.
    pub fn is_request(&self, sequence: u64) -> bool {
        self.sequence == sequence
            && self
                .payload
                .iter()
                .enumerate()
                .all(|(index, &word)| word == Self::word(sequence, index))
    }

    /// Whether this is exactly the reply to the request with `sequence`.
    pub fn is_reply(&self, sequence: u64) -> bool {
        self.sequence == sequence
            && self
                .payload
                .iter()
                .enumerate()
                .all(|(index, &word)| word == !Self::word(sequence, index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_check_each_other() {
        let request = Message::request(7);
        assert!(request.is_request(7));
        assert!(!request.is_request(8));
        let reply = request.reply();
        assert!(reply.is_reply(7));
        assert!(!reply.is_request(7));
        let mut damaged = reply;
        damaged.payload[6] ^= 1;
        assert!(!damaged.is_reply(7));
        let mut reused = Message::default();
        reused.make_request(7);
        assert_eq!(reused, request);
    }
}
