//! What the fault-injection campaigns' self-checking workloads check and
//! how they say it (issue 16).
//!
//! A campaign boots guests that run their own workloads (`diskcheck` and
//! `netcheck` in campaign mode, `test-vms/README.md`), injects faults into
//! components, and decides from the guests' console lines whether each
//! workload went on and whether an acknowledged write was lost. This crate
//! is the part both sides share, `no_std` and host-tested:
//!
//! - [`line`](mod@line): the line contract, `CHECK <workload> ok <n>`, `CHECK
//!   <workload> LOST <detail>` and `CHECK <workload> BROKEN <detail>`,
//!   printed by the workloads ([`line::ok`], [`line::lost`],
//!   [`line::broken`]) and parsed by a campaign ([`line::parse`],
//!   [`line::parse_console`]); [`line::Limiter`] keeps a workload that
//!   sees the same breakage on every frame from flooding the console.
//! - [`disk`]: diskcheck's block patterns and what a block that reads back
//!   wrong holds instead ([`disk::identify`]).
//! - [`pace`]: when a workload prints its next `ok` line.
//! - [`held`]: the held write of the block store's deliberately broken
//!   fixture (`fixture=hold-write`), which loses an acknowledged, flushed
//!   write when the store restarts; a campaign's checks are tested
//!   against it.
//! - [`fnv1a32`]: the checksum netcheck's frames carry.
#![no_std]
#![forbid(unsafe_code)]

pub mod disk;
pub mod held;
pub mod line;
pub mod pace;

/// FNV-1a's 32-bit offset basis: the hash of nothing.
pub const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// FNV-1a (32 bits) of `bytes`.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    fnv1a32_more(FNV_OFFSET, bytes)
}

/// Continues the FNV-1a hash `hash` over `bytes` (so that a hash over
/// several pieces is `fnv1a32_more(fnv1a32(a), b)`).
pub fn fnv1a32_more(hash: u32, bytes: &[u8]) -> u32 {
    bytes.iter().fold(hash, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a32_matches_the_reference_vectors() {
        // From the FNV reference (draft-eastlake-fnv): "", "a", "foobar".
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn fnv1a32_continues_over_pieces() {
        assert_eq!(fnv1a32_more(fnv1a32(b"foo"), b"bar"), fnv1a32(b"foobar"));
        assert_eq!(fnv1a32_more(FNV_OFFSET, b""), FNV_OFFSET);
    }
}
