//! The frame interface of the network path: a VM's NIC (its world
//! switcher) and the network bridge exchange Ethernet frames over one
//! queue each way — `<nic>-tx` toward the bridge and `<nic>-rx` from it —
//! each message one [`Frame`] (a [`FrameHeader`] and at most [`MAX_FRAME`]
//! bytes; queues carry [`FRAME_BYTES`]-byte slots). Frames in flight when a
//! bridge restarts may be lost, as Ethernet allows; nothing else is.
//!
//! A NIC's MAC address is derived from its name ([`mac_of`]: locally
//! administered, unicast), so the switcher that shows it and the tools that
//! list it agree without being told. [`switch`] is the bridge's learning
//! switch and [`rate`] its per-NIC rate limit, kept here so that they are
//! host-tested.
#![no_std]
#![forbid(unsafe_code)]

pub mod rate;
pub mod switch;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The largest frame: an Ethernet header and 1500 bytes of payload (no
/// frame check sequence).
pub const MAX_FRAME: usize = 1514;
/// The smallest frame: an Ethernet header.
pub const MIN_FRAME: usize = 14;
/// The broadcast address.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// A frame message's fields before its data.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct FrameHeader {
    /// Bytes of frame in `data`.
    pub length: u32,
    /// [`KIND_FRAME`], or [`KIND_DETACH`]: the NIC's switcher ends and
    /// sends nothing more (no data).
    pub kind: u32,
}

/// A message carrying a frame.
pub const KIND_FRAME: u32 = 0;
/// The last message of a NIC whose switcher ends.
pub const KIND_DETACH: u32 = 1;

/// One frame as a queue message.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Frame {
    pub header: FrameHeader,
    /// The frame, padded to a multiple of 8 bytes.
    pub data: [u8; DATA_BYTES],
}

/// The data area of a [`Frame`]: [`MAX_FRAME`] rounded up to 8.
pub const DATA_BYTES: usize = MAX_FRAME.div_ceil(8) * 8;
/// Where a frame's data starts in its message.
pub const DATA_OFFSET: usize = size_of::<FrameHeader>();
/// The queue slot size a frame needs.
pub const FRAME_BYTES: usize = size_of::<Frame>();

const _: () = assert!(core::mem::offset_of!(Frame, data) == DATA_OFFSET && FRAME_BYTES == 1528);

impl FrameHeader {
    /// The header of a frame of `length` bytes.
    pub const fn new(length: usize) -> Self {
        Self {
            length: length as u32,
            kind: KIND_FRAME,
        }
    }

    /// The message a NIC's switcher sends last.
    pub const fn detach() -> Self {
        Self {
            length: 0,
            kind: KIND_DETACH,
        }
    }

    /// The frame's length if this carries a frame a NIC may carry.
    pub fn valid_length(&self) -> Option<usize> {
        let length = self.length as usize;
        (self.kind == KIND_FRAME && (MIN_FRAME..=MAX_FRAME).contains(&length)).then_some(length)
    }
}

impl Frame {
    /// How much of it a queue must carry (`queue::Sender::try_send_prefix`):
    /// the header and the frame's bytes (a frame's length is at most
    /// [`MAX_FRAME`]; the rest reads as zero at the other end).
    pub fn sent_bytes(&self) -> usize {
        DATA_OFFSET + (self.header.length as usize).min(DATA_BYTES)
    }
}

/// A frame's destination address (its first six bytes).
pub fn destination(frame: &[u8]) -> Option<[u8; 6]> {
    frame.get(..6)?.try_into().ok()
}

/// A frame's source address (bytes 6 to 12).
pub fn source(frame: &[u8]) -> Option<[u8; 6]> {
    frame.get(6..12)?.try_into().ok()
}

/// Whether `mac` is a group address (broadcast or multicast).
pub const fn is_group(mac: &[u8; 6]) -> bool {
    mac[0] & 1 != 0
}

/// The MAC address of the NIC named `nic`: the 64-bit FNV-1a hash of the
/// name, its first byte marked locally administered and unicast.
pub fn mac_of(nic: &str) -> [u8; 6] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in nic.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let bytes = hash.to_le_bytes();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&bytes[..6]);
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

/// Writes `mac` as `xx:xx:xx:xx:xx:xx`.
pub struct MacText(pub [u8; 6]);

impl core::fmt::Display for MacText {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [a, b, c, d, e, f] = self.0;
        write!(formatter, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn a_frame_sends_its_header_and_its_bytes() {
        let mut frame = <Frame as zerocopy::FromZeros>::new_zeroed();
        frame.header = FrameHeader::new(60);
        assert_eq!(frame.sent_bytes(), DATA_OFFSET + 60);
        frame.header = FrameHeader::new(MAX_FRAME);
        assert_eq!(frame.sent_bytes(), DATA_OFFSET + MAX_FRAME);
        frame.header = FrameHeader::detach();
        assert_eq!(frame.sent_bytes(), DATA_OFFSET);
        // A length no frame has sends no more than the message.
        frame.header.length = u32::MAX;
        assert_eq!(frame.sent_bytes(), FRAME_BYTES);
    }

    #[test]
    fn macs_are_local_unicast_and_differ_by_name() {
        let a = mac_of("lan-a");
        let b = mac_of("lan-b");
        assert_ne!(a, b);
        for mac in [a, b, mac_of(""), mac_of("a-very-long-nic-name-of-32-chars")] {
            assert_eq!(mac[0] & 0b11, 0b10, "locally administered, unicast");
            assert!(!is_group(&mac));
        }
        assert_eq!(mac_of("lan-a"), a, "the same name, the same address");
        assert!(is_group(&BROADCAST));
        assert!(is_group(&[0x01, 0, 0x5e, 0, 0, 1]), "IPv4 multicast");
    }

    #[test]
    fn headers_carry_only_frames_a_nic_may_carry() {
        assert_eq!(FrameHeader::new(60).valid_length(), Some(60));
        assert_eq!(FrameHeader::new(14).valid_length(), Some(14));
        assert_eq!(FrameHeader::new(1514).valid_length(), Some(1514));
        assert_eq!(FrameHeader::new(13).valid_length(), None);
        assert_eq!(FrameHeader::new(1515).valid_length(), None);
        assert_eq!(FrameHeader::detach().valid_length(), None);
        let mut odd = FrameHeader::new(60);
        odd.kind = 7;
        assert_eq!(odd.valid_length(), None);
        let frame = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0x00];
        assert_eq!(destination(&frame), Some([1, 2, 3, 4, 5, 6]));
        assert_eq!(source(&frame), Some([7, 8, 9, 10, 11, 12]));
        assert_eq!(source(&frame[..11]), None);
        assert_eq!(
            std::format!("{}", MacText([0x02, 0xab, 0, 1, 0x10, 0xff])),
            "02:ab:00:01:10:ff"
        );
    }
}
