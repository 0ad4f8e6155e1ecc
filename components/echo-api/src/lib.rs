//! The message ping sends and pong echoes: a sequence number and a payload
//! derived from it, so either end can check that every message arrived
//! once, in order, with its content. A sequence of [`STOP`] ends the
//! exchange.
#![no_std]
#![forbid(unsafe_code)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The sequence number that ends the exchange.
pub const STOP: u64 = u64::MAX;

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
    /// The request with `sequence`.
    pub fn request(sequence: u64) -> Self {
        let mut payload = [0; 7];
        for (i, word) in payload.iter_mut().enumerate() {
            *word = sequence
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(i as u32 * 9)
                ^ i as u64;
        }
        Self { sequence, payload }
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
        *self == Self::request(sequence)
    }

    /// Whether this is exactly the reply to the request with `sequence`.
    pub fn is_reply(&self, sequence: u64) -> bool {
        *self == Self::request(sequence).reply()
    }
}
