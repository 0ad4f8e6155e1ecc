//! A virtio-net device for guests: a modern PCI function on the shared
//! transport ([`crate::virtio_pci`]) with a receive queue ([`RECEIVE`]) and
//! a transmit queue ([`TRANSMIT`]), three MSI-X vectors (configuration,
//! receive, transmit), and its MAC address and link status in its
//! configuration.
//!
//! Features: VERSION_1, MAC and STATUS only — no checksum or segmentation
//! offloads and no mergeable receive buffers, so every frame is a whole
//! Ethernet frame of at most [`MAX_FRAME`] bytes behind the 12-byte
//! `virtio_net_hdr` ([`HEADER_BYTES`]), which the guest may lay out across
//! its buffers as it likes. A transmit chain must be readable, inside
//! guest RAM, hold a header that asks for no offload and a frame of
//! [`MIN_FRAME`] to [`MAX_FRAME`] bytes; a receive chain must be writable,
//! inside guest RAM and hold at least [`RECEIVE_BUFFER_MIN`] bytes (what
//! the specification asks of a driver without mergeable buffers). What
//! breaks these is refused with a reason; its owner completes it with
//! nothing written, so a hostile guest loses only its own frame.
//!
//! The device moves no data itself: [`VirtioNet::next_transmit`] hands
//! back where a frame lies in guest memory and [`VirtioNet::next_receive`]
//! where one may go, so that the world switcher copies each frame once,
//! between guest memory and its queue to the bridge ([`Buffers::pieces`]).
//! It keeps nothing of the guest's but ring indices.

use crate::guest_paging::GuestPhysical;
use crate::pci::ConfigSpace;
use crate::virtio_pci::{self, Chain, Descriptor, Identity, MAX_CHAIN, Transport};
pub use crate::virtio_pci::{BAR_SIZE, Interrupt, Written, bar_address};
use crate::{GuestRead, Memory, MmioIgnored};

/// 0x1040 + 1, a modern-only network device.
pub const DEVICE: u16 = 0x1041;
/// Network controller, Ethernet.
pub const CLASS: u32 = 0x02_00_00;
/// The receive queue.
pub const RECEIVE: u16 = 0;
/// The transmit queue.
pub const TRANSMIT: u16 = 1;
/// Each queue's largest size.
pub const QUEUE_MAX: u16 = 256;
/// MSI-X vectors: configuration changes and one per queue.
pub const MSIX_VECTORS: u16 = 3;
/// `virtio_net_hdr` with `num_buffers` (VERSION_1).
pub const HEADER_BYTES: u32 = 12;
/// The largest frame: 1500 bytes of payload behind the Ethernet header.
pub const MAX_FRAME: u32 = 1514;
/// The smallest frame: an Ethernet header.
pub const MIN_FRAME: u32 = 14;
/// The smallest receive chain: a header and the largest frame.
pub const RECEIVE_BUFFER_MIN: u32 = HEADER_BYTES + MAX_FRAME;

const FEATURE_MAC: u64 = 1 << 5;
const FEATURE_STATUS: u64 = 1 << 16;
const FEATURES: u64 = FEATURE_MAC | FEATURE_STATUS | virtio_pci::FEATURE_VERSION_1;
/// mac[6], status, max_virtqueue_pairs.
const DEVICE_CONFIG_BYTES: usize = 10;
const STATUS_LINK_UP: u16 = 1;

/// The function's configuration space: ids, BAR 0 at `bar`, interrupt pin
/// A, and the virtio and MSI-X capabilities.
pub fn config_space(bar: u64) -> ConfigSpace {
    virtio_pci::config_space(
        bar,
        &Identity {
            device: DEVICE,
            class: CLASS,
            subsystem: 0x1100,
            vectors: MSIX_VECTORS,
            device_config_bytes: DEVICE_CONFIG_BYTES as u32,
        },
    )
}

/// A chain's buffers, checked to lie in guest RAM and to run the one way
/// the queue needs; `bytes` in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffers {
    pub head: u16,
    descriptors: [Descriptor; MAX_CHAIN],
    count: usize,
    pub bytes: u32,
}

impl Buffers {
    /// The guest-physical pieces of `length` bytes from `offset` in the
    /// buffers taken end to end: `(address, bytes)` in order.
    pub fn pieces(&self, offset: u32, length: u32) -> impl Iterator<Item = (u64, u32)> + '_ {
        // In u64: a chain's lengths sum to less than 4 GiB (checked when
        // it was taken), but the arithmetic need not rely on it.
        let end = (u64::from(offset) + u64::from(length)).min(u64::from(self.bytes));
        let offset = u64::from(offset);
        let mut at = 0u64;
        self.descriptors[..self.count]
            .iter()
            .filter_map(move |descriptor| {
                let (start, stop) = (at, at + u64::from(descriptor.length));
                at = stop;
                let from = start.max(offset);
                let to = stop.min(end);
                (from < to).then(|| (descriptor.address + (from - start), (to - from) as u32))
            })
    }
}

/// A frame the guest queued for sending: where its bytes lie (after the
/// header) and how many there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub buffers: Buffers,
    pub length: u32,
}

impl Transmit {
    /// The frame's pieces in guest memory, in order.
    pub fn frame(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.buffers.pieces(HEADER_BYTES, self.length)
    }
}

/// A chain the device refuses; its owner completes it on `queue` with
/// nothing written and reports `why`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub queue: u16,
    pub head: u16,
    pub why: &'static str,
}

/// The device: the transport and the MAC address it shows. Its link is
/// always up: a restart of the bridge loses the frames in flight, as a
/// short link flap would, without the guest being told.
#[derive(Clone, Debug)]
pub struct VirtioNet {
    transport: Transport,
    mac: [u8; 6],
}

impl VirtioNet {
    /// A device with address `mac`, reset.
    pub fn new(mac: [u8; 6]) -> Self {
        Self {
            transport: Transport::new(FEATURES, 2, QUEUE_MAX, MSIX_VECTORS),
            mac,
        }
    }

    /// Its MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Follows the MSI-X capability's control word after the guest wrote
    /// configuration space.
    pub fn config_written(&mut self, config: &ConfigSpace) {
        self.transport.config_written(config);
    }

    /// Whether INTx is asserted.
    pub fn intx_asserted(&self) -> bool {
        self.transport.intx_asserted()
    }

    fn device_config(&self) -> [u8; DEVICE_CONFIG_BYTES] {
        let mut config = [0u8; DEVICE_CONFIG_BYTES];
        config[..6].copy_from_slice(&self.mac);
        config[6..8].copy_from_slice(&STATUS_LINK_UP.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config
    }

    /// A guest read of `size` bytes at `offset` in BAR 0.
    pub fn read(&mut self, offset: u64, size: u8) -> Result<u64, MmioIgnored> {
        let config = self.device_config();
        self.transport.read(offset, size, &config)
    }

    /// A guest write of `size` bytes of `value` at `offset` in BAR 0: a
    /// notification names its queue.
    pub fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<Written, MmioIgnored> {
        self.transport.write(offset, size, value)
    }

    /// Whether the guest has queued receive buffers not yet taken.
    pub fn has_receive_buffers(&self, memory: &impl GuestRead) -> bool {
        self.transport.has_chains(RECEIVE, memory)
    }

    /// The next frame the guest queued for sending, checked, or refused.
    pub fn next_transmit(&mut self, memory: &impl GuestRead) -> Option<Result<Transmit, Refused>> {
        let chain = self.transport.next_chain(TRANSMIT, memory)?;
        Some(transmit(memory, chain))
    }

    /// The next receive buffer the guest queued, checked, or refused.
    pub fn next_receive(&mut self, memory: &impl GuestRead) -> Option<Result<Buffers, Refused>> {
        let chain = self.transport.next_chain(RECEIVE, memory)?;
        Some(receive(memory, chain))
    }

    /// Writes the header of a received frame (no offloads, one buffer) at
    /// the start of `buffers`; the caller writes the frame after it.
    pub fn write_receive_header(memory: &mut impl Memory, buffers: &Buffers) -> bool {
        let mut header = [0u8; HEADER_BYTES as usize];
        header[10..12].copy_from_slice(&1u16.to_le_bytes());
        let mut done = 0usize;
        for (address, length) in buffers.pieces(0, HEADER_BYTES) {
            let length = length as usize;
            if !memory.write(address, &header[done..done + length]) {
                return false;
            }
            done += length;
        }
        done == header.len()
    }

    /// Ends chain `head` on `queue` with `written` bytes written (0 for a
    /// transmit). The caller raises [`Self::interrupt`] once per batch.
    pub fn complete(
        &mut self,
        queue: u16,
        memory: &mut impl Memory,
        head: u16,
        written: u32,
    ) -> bool {
        self.transport.complete(queue, memory, head, written)
    }

    /// The interrupt for `queue`'s completions just written, if the guest
    /// wants one.
    pub fn interrupt(&mut self, queue: u16, memory: &impl GuestRead) -> Option<Interrupt> {
        self.transport.interrupt(queue, memory)
    }
}

/// Checks a chain's buffers: all in the direction `writable`, all inside
/// guest memory.
fn buffers(
    memory: &impl GuestRead,
    queue: u16,
    chain: Chain,
    writable: bool,
) -> Result<Buffers, Refused> {
    let refuse = |why| Refused {
        queue,
        head: chain.head,
        why,
    };
    let mut bytes = 0u32;
    for descriptor in chain.as_slice() {
        if descriptor.writable != writable {
            return Err(refuse("a buffer in the wrong direction"));
        }
        if !virtio_pci::inside(memory, descriptor.address, descriptor.length) {
            return Err(refuse("a buffer outside guest memory"));
        }
        let Some(total) = bytes.checked_add(descriptor.length) else {
            return Err(refuse("buffers of 4 GiB or more"));
        };
        bytes = total;
    }
    Ok(Buffers {
        head: chain.head,
        descriptors: chain.descriptors,
        count: chain.count,
        bytes,
    })
}

fn transmit(
    memory: &impl GuestRead,
    chain: Result<Chain, virtio_pci::BadChain>,
) -> Result<Transmit, Refused> {
    let chain = chain.map_err(|bad| Refused {
        queue: TRANSMIT,
        head: bad.head,
        why: bad.why,
    })?;
    let head = chain.head;
    let refuse = |why| Refused {
        queue: TRANSMIT,
        head,
        why,
    };
    let buffers = buffers(memory, TRANSMIT, chain, false)?;
    let Some(length) = buffers.bytes.checked_sub(HEADER_BYTES) else {
        return Err(refuse("shorter than its header"));
    };
    if !(MIN_FRAME..=MAX_FRAME).contains(&length) {
        return Err(refuse("a frame shorter than 14 or longer than 1514 bytes"));
    }
    let mut header = [0u8; HEADER_BYTES as usize];
    let mut done = 0usize;
    for (address, bytes) in buffers.pieces(0, HEADER_BYTES) {
        let bytes = bytes as usize;
        if !memory.read(GuestPhysical(address), &mut header[done..done + bytes]) {
            return Err(refuse("a buffer outside guest memory"));
        }
        done += bytes;
    }
    // flags and gso_type: no checksum or segmentation was offered.
    if header[0] != 0 || header[1] != 0 {
        return Err(refuse("a header asking for an offload not offered"));
    }
    Ok(Transmit { buffers, length })
}

fn receive(
    memory: &impl GuestRead,
    chain: Result<Chain, virtio_pci::BadChain>,
) -> Result<Buffers, Refused> {
    let chain = chain.map_err(|bad| Refused {
        queue: RECEIVE,
        head: bad.head,
        why: bad.why,
    })?;
    let head = chain.head;
    let buffers = buffers(memory, RECEIVE, chain, true)?;
    if buffers.bytes < RECEIVE_BUFFER_MIN {
        return Err(Refused {
            queue: RECEIVE,
            head,
            why: "a receive buffer under 1526 bytes",
        });
    }
    Ok(buffers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{VecMemory, descriptor};
    use crate::virtio_pci::{DESCRIPTOR_NEXT, DESCRIPTOR_WRITE};
    use proptest::prelude::*;

    const RX: u64 = 0x1_0000;
    const TX: u64 = 0x2_0000;
    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    fn put(memory: &mut VecMemory, address: u64, bytes: &[u8]) {
        assert!(Memory::write(memory, address, bytes));
    }

    /// A device set up as a driver would: both queues of 16, at RX and TX
    /// (descriptors, then avail at +0x1000, used at +0x2000).
    fn running() -> VirtioNet {
        let mut device = VirtioNet::new(MAC);
        device.write(0x14, 1, 1 | 2).unwrap();
        device.write(0x08, 4, 0).unwrap();
        device
            .write(0x0c, 4, (FEATURE_MAC | FEATURE_STATUS) as u32 as u64)
            .unwrap();
        device.write(0x08, 4, 1).unwrap();
        device.write(0x0c, 4, 1).unwrap();
        device.write(0x14, 1, 1 | 2 | 8).unwrap();
        assert_eq!(device.read(0x14, 1).unwrap() & 8, 8, "features accepted");
        for (queue, base) in [(RECEIVE, RX), (TRANSMIT, TX)] {
            device.write(0x16, 2, u64::from(queue)).unwrap();
            device.write(0x18, 2, 16).unwrap();
            device.write(0x20, 8, base).unwrap();
            device.write(0x28, 8, base + 0x1000).unwrap();
            device.write(0x30, 8, base + 0x2000).unwrap();
            device.write(0x1c, 2, 1).unwrap();
        }
        device.write(0x14, 1, 1 | 2 | 8 | 4).unwrap();
        device
    }

    /// Queues chain `head` as the `number`-th on the queue at `table`.
    fn offer(memory: &mut VecMemory, table: u64, number: u16, head: u16) {
        put(
            memory,
            table + 0x1004 + 2 * u64::from(number % 16),
            &head.to_le_bytes(),
        );
        put(
            memory,
            table + 0x1002,
            &number.wrapping_add(1).to_le_bytes(),
        );
    }

    #[test]
    fn the_configuration_shows_the_mac_and_the_link() {
        let mut device = VirtioNet::new(MAC);
        let features = device.read(0x04, 4).unwrap();
        assert_eq!(features, FEATURE_MAC | FEATURE_STATUS);
        assert_eq!(device.read(0x12, 2), Ok(2), "two queues");
        let mac: Vec<u8> = (0..6)
            .map(|i| device.read(virtio_pci::DEVICE_CONFIG + i, 1).unwrap() as u8)
            .collect();
        assert_eq!(mac, MAC);
        assert_eq!(
            device.read(virtio_pci::DEVICE_CONFIG + 6, 2),
            Ok(1),
            "link up"
        );
        let config = config_space(0xfe00_0000);
        assert_eq!(config.read(0x00, 4), 0x1041_1af4);
        assert_eq!(config.read(0x08, 4) >> 8, CLASS);
        assert_eq!(config.read(0x42, 2), 2, "three MSI-X vectors");
    }

    #[test]
    fn a_frame_split_anyhow_is_sent_and_received_through_pieces() {
        let mut memory = VecMemory(vec![0; 1 << 20]);
        let mut device = running();
        // Transmit: the header and 6 bytes in one buffer, 94 more in another.
        descriptor(&mut memory, TX, 0, 0x5000, 18, DESCRIPTOR_NEXT, 1);
        descriptor(&mut memory, TX, 1, 0x6000, 94, 0, 0);
        offer(&mut memory, TX, 0, 0);
        assert_eq!(
            device.write(virtio_pci::NOTIFY, 2, 1),
            Ok(Written::Notify(TRANSMIT))
        );
        let frame = device.next_transmit(&memory).unwrap().unwrap();
        assert_eq!(frame.length, 100);
        assert_eq!(
            frame.frame().collect::<Vec<_>>(),
            [(0x5000 + 12, 6), (0x6000, 94)]
        );
        assert!(device.next_transmit(&memory).is_none());
        assert!(device.complete(TRANSMIT, &mut memory, 0, 0));
        // Receive: two writable buffers, 1000 and 600 bytes.
        assert!(!device.has_receive_buffers(&memory));
        descriptor(
            &mut memory,
            RX,
            4,
            0x8000,
            1000,
            DESCRIPTOR_NEXT | DESCRIPTOR_WRITE,
            5,
        );
        descriptor(&mut memory, RX, 5, 0x9000, 600, DESCRIPTOR_WRITE, 0);
        offer(&mut memory, RX, 0, 4);
        assert!(device.has_receive_buffers(&memory));
        let buffers = device.next_receive(&memory).unwrap().unwrap();
        assert_eq!((buffers.head, buffers.bytes), (4, 1600));
        assert!(VirtioNet::write_receive_header(&mut memory, &buffers));
        assert_eq!(
            &memory.0[0x8000..0x800c],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]
        );
        assert_eq!(
            buffers.pieces(HEADER_BYTES, 1200).collect::<Vec<_>>(),
            [(0x800c, 988), (0x9000, 212)]
        );
        assert!(device.complete(RECEIVE, &mut memory, 4, 1212));
        assert_eq!(&memory.0[0x1_2004..0x1_200c], &[4, 0, 0, 0, 0xbc, 4, 0, 0]);
    }

    #[test]
    fn malformed_chains_are_refused_with_a_reason() {
        let mut memory = VecMemory(vec![0; 1 << 20]);
        let mut device = running();
        let mut number = 0;
        let mut send = |memory: &mut VecMemory, device: &mut VirtioNet| {
            offer(memory, TX, number, 0);
            number += 1;
            device
                .next_transmit(memory)
                .unwrap()
                .map(|frame| frame.length)
        };
        let why = |result: Result<u32, Refused>| result.unwrap_err().why;
        descriptor(&mut memory, TX, 0, 0x5000, 12 + 1515, 0, 0);
        assert_eq!(
            why(send(&mut memory, &mut device)),
            "a frame shorter than 14 or longer than 1514 bytes"
        );
        descriptor(&mut memory, TX, 0, 0x5000, 12 + 13, 0, 0);
        assert_eq!(
            why(send(&mut memory, &mut device)),
            "a frame shorter than 14 or longer than 1514 bytes"
        );
        descriptor(&mut memory, TX, 0, 0x5000, 8, 0, 0);
        assert_eq!(
            why(send(&mut memory, &mut device)),
            "shorter than its header"
        );
        descriptor(&mut memory, TX, 0, 0x5000, 100, DESCRIPTOR_WRITE, 0);
        assert_eq!(
            why(send(&mut memory, &mut device)),
            "a buffer in the wrong direction"
        );
        descriptor(&mut memory, TX, 0, 0xff_ff00, 0x200, 0, 0);
        assert_eq!(
            why(send(&mut memory, &mut device)),
            "a buffer outside guest memory"
        );
        put(&mut memory, 0x5000, &[1]);
        descriptor(&mut memory, TX, 0, 0x5000, 100, 0, 0);
        assert_eq!(
            why(send(&mut memory, &mut device)),
            "a header asking for an offload not offered"
        );
        put(&mut memory, 0x5000, &[0]);
        assert_eq!(send(&mut memory, &mut device), Ok(88));
        // Receive buffers too small, read-only, or looping.
        descriptor(&mut memory, RX, 0, 0x8000, 1525, DESCRIPTOR_WRITE, 0);
        offer(&mut memory, RX, 0, 0);
        assert_eq!(
            device.next_receive(&memory).unwrap().unwrap_err().why,
            "a receive buffer under 1526 bytes"
        );
        descriptor(&mut memory, RX, 0, 0x8000, 2048, 0, 0);
        offer(&mut memory, RX, 1, 0);
        assert_eq!(
            device.next_receive(&memory).unwrap().unwrap_err().why,
            "a buffer in the wrong direction"
        );
        descriptor(
            &mut memory,
            RX,
            0,
            0x8000,
            2048,
            DESCRIPTOR_WRITE | DESCRIPTOR_NEXT,
            0,
        );
        offer(&mut memory, RX, 2, 0);
        assert_eq!(
            device.next_receive(&memory),
            Some(Err(Refused {
                queue: RECEIVE,
                head: 0,
                why: "chain too long (or a loop)"
            }))
        );
    }

    proptest! {
        #[test]
        fn hostile_rings_never_panic(table in proptest::collection::vec(any::<u8>(), 16 * 16), heads in proptest::collection::vec(0u16..32, 1..20)) {
            let mut memory = VecMemory(vec![0; 1 << 20]);
            let mut device = running();
            put(&mut memory, TX, &table);
            put(&mut memory, RX, &table);
            for (number, head) in heads.iter().enumerate() {
                offer(&mut memory, TX, number as u16, *head);
                offer(&mut memory, RX, number as u16, *head);
                if let Some(Ok(frame)) = device.next_transmit(&memory) {
                    let total: u32 = frame.frame().map(|(_, length)| length).sum();
                    prop_assert_eq!(total, frame.length);
                }
                if let Some(Ok(buffers)) = device.next_receive(&memory) {
                    let total: u32 = buffers.pieces(0, u32::MAX).map(|(_, length)| length).sum();
                    prop_assert_eq!(total, buffers.bytes);
                }
            }
        }
    }
}
