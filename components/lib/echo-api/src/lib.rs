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

/// Request `sequence` of the call version of ping-pong: the sequence,
/// then seven words that depend on it (each differs from the others and
/// from every other request's); the reply is every word inverted. Cheap
/// to make and check (one instruction a word), so that a call's
/// benchmark measures the call: pong checks each request's sequence (the
/// order), ping every word of each reply, which covers both directions.
#[inline(always)]
pub fn call_request(sequence: u64) -> [u64; 8] {
    let mut message = [sequence; 8];
    for (index, word) in message.iter_mut().enumerate() {
        *word ^= index as u64 * 0x0101_0101;
    }
    message
}

/// Whether `reply` answers call request `sequence`, every word.
#[inline(always)]
pub fn is_call_reply(reply: &[u64; 8], sequence: u64) -> bool {
    differs(reply, &call_request(sequence).map(|word| !word)) == 0
}

/// Whether `message` is call request `sequence`, every word.
#[inline(always)]
pub fn is_call_request(message: &[u64; 8], sequence: u64) -> bool {
    differs(message, &call_request(sequence)) == 0
}

/// Whether `message` is `[word; 8]`: [`STOP`] and [`SILENT`] as calls.
#[inline(always)]
pub fn is_all(message: &[u64; 8], word: u64) -> bool {
    differs(message, &[word; 8]) == 0
}

/// Nonzero when `a` and `b` differ: the words' differences OR-ed, with
/// no early exit and no `memcmp` call (which a slice compare becomes).
#[inline(always)]
fn differs(a: &[u64; 8], b: &[u64; 8]) -> u64 {
    a.iter().zip(b).fold(0, |differ, (a, b)| differ | (a ^ b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_requests_differ_in_every_word_and_replies_check_all() {
        let (one, two) = (call_request(1), call_request(2));
        assert!(one.iter().zip(&two).all(|(a, b)| a != b));
        // Words of one request differ from each other, and from those
        // of other requests.
        for (i, a) in one.iter().enumerate() {
            assert!(one[i + 1..].iter().all(|b| a != b));
            assert!(!two.contains(a) && !call_request(0).contains(a));
        }
        let reply = one.map(|word| !word);
        assert!(is_call_reply(&reply, 1));
        assert!(!is_call_reply(&reply, 2));
        assert!(is_call_request(&one, 1) && !is_call_request(&one, 2));
        assert!(is_all(&[STOP; 8], STOP) && !is_all(&one, STOP));
        let mut almost = [SILENT; 8];
        almost[7] = 0;
        assert!(!is_all(&almost, SILENT));
        for index in 0..8 {
            let mut damaged = reply;
            damaged[index] ^= 1 << 40;
            assert!(!is_call_reply(&damaged, 1));
        }
    }

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
