//! virtio-net (spec 5.1) as a driver sees it: the device's ids, the
//! feature bits a plain NIC driver takes, its configuration (MAC address,
//! link status) and the `virtio_net_hdr` that precedes every frame in
//! both directions.
//!
//! A driver that accepts no offloads writes an all-zero header before each
//! frame it transmits and skips the header of each frame it receives; with
//! VIRTIO_F_VERSION_1 the header is always [`HEADER_SIZE`] bytes (its
//! `num_buffers` field is present whether or not buffers are merged).

use crate::DmaMemory;

/// PCI device id of virtio-net, modern.
pub const DEVICE_ID_NET: u16 = 0x1041;
/// The device's MAC address is in its configuration.
pub const VIRTIO_NET_F_MAC: u32 = 5;
/// The link status is in its configuration.
pub const VIRTIO_NET_F_STATUS: u32 = 16;
/// Bytes of `virtio_net_hdr` under VIRTIO_F_VERSION_1.
pub const HEADER_SIZE: u32 = 12;
/// The largest Ethernet frame without offloads (no FCS): 1514 bytes.
pub const MAX_FRAME: u32 = 1514;
/// A receive buffer that holds any frame the device may deliver without
/// offloads or merged buffers: header and the largest frame.
pub const RECEIVE_BUFFER: u32 = HEADER_SIZE + MAX_FRAME;
/// Configuration: `mac: [u8; 6]`.
pub const CONFIG_MAC: u32 = 0;
/// Configuration: `status: u16` (with VIRTIO_NET_F_STATUS).
pub const CONFIG_STATUS: u32 = 6;
/// `status`: the link is up.
pub const STATUS_LINK_UP: u16 = 1;
/// The receive queue's index.
pub const RECEIVE_QUEUE: u16 = 0;
/// The transmit queue's index.
pub const TRANSMIT_QUEUE: u16 = 1;

/// Writes the all-zero header (no checksum, no segmentation) at `offset`.
pub fn write_header<M: DmaMemory + ?Sized>(memory: &M, offset: u64) {
    memory.write64(offset, 0);
    memory.write32(offset + 8, 0);
}

/// The length of the frame in a receive buffer of which the device says it
/// wrote `written` bytes: `None` for less than a header and an Ethernet
/// header, or more than a buffer holds (a device not to be believed).
pub fn received_frame_length(written: u32) -> Option<u32> {
    let frame = written.checked_sub(HEADER_SIZE)?;
    (14..=MAX_FRAME).contains(&frame).then_some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::TestMemory;

    #[test]
    fn the_header_is_twelve_zero_bytes() {
        let memory = TestMemory::new(64);
        for offset in 0..32 {
            memory.write8(offset, 0xaa);
        }
        write_header(&memory, 8);
        for offset in 0..32 {
            let expected = if (8..20).contains(&offset) { 0 } else { 0xaa };
            assert_eq!(memory.read8(offset), expected, "byte {offset}");
        }
    }

    #[test]
    fn received_lengths_are_checked() {
        assert_eq!(received_frame_length(0), None);
        assert_eq!(received_frame_length(HEADER_SIZE + 13), None);
        assert_eq!(received_frame_length(HEADER_SIZE + 14), Some(14));
        assert_eq!(received_frame_length(RECEIVE_BUFFER), Some(MAX_FRAME));
        assert_eq!(received_frame_length(RECEIVE_BUFFER + 1), None);
        assert_eq!(received_frame_length(u32::MAX), None);
    }
}
