//! The virtio-net driver: a ring-3 component that drives one virtio 1.x
//! network card on PCI (QEMU's `virtio-net-pci`) and makes it the uplink
//! of a virtual network, a port of the network bridge.
//!
//! It is given its PCI function (`pci = { vendor = "0x1af4", device =
//! "0x1041", msi = 1 }`), one DMA buffer of at least [`DMA_BYTES`]
//! (`dma = [{ size = "288KiB" }]`) and one queue pair of `net_api` frames
//! with the bridge, which the system file's `uplink = ...` makes:
//! `<network>-<driver>-in` (frames from the outside, to the bridge) and
//! `<network>-<driver>-out` (frames from the bridge, to send).
//!
//! At start it resets the card (its last life may have left it running
//! over this same buffer), accepts VERSION_1 (required), MAC and STATUS
//! and no offloads, sets up the receive queue (0) and the transmit queue
//! (1), both on MSI-X vector 0 (or INTx: `intx=N` with `interrupts =
//! [N]`, as the virtio-blk driver), posts [`RX_BUFFERS`] receive buffers
//! and says ready to the interrupt forwarder. Then it only waits, for its
//! interrupt or for frames from the bridge:
//!
//! - a frame from the bridge is copied into a free transmit buffer behind
//!   an all-zero `virtio_net_hdr`, and the card is notified once per batch
//!   (while every transmit buffer is busy it takes no more: the bridge's
//!   queue fills and the bridge drops, as a full link does);
//! - an interrupt takes back every transmit buffer the card is done with
//!   and every frame it received: each is checked (a length outside an
//!   Ethernet frame is counted and dropped), copied to the bridge and its
//!   buffer posted again; the bridge is woken once per batch, the card
//!   notified once per batch of buffers re-posted.
//!
//! The card is trusted no further than the queue logic allows: a used
//! entry naming a buffer not posted, or claiming more bytes than it
//! holds, stops the driver with a report (`virtio::queue`), and its
//! supervisor restarts it; frames in flight are lost, as Ethernet allows.
//!
//! The bridge ends the uplink when the last VM NIC of its network has
//! detached: a detach message on `-out`, to which the driver resets the
//! card, prints its counters, answers with a detach on `-in` and ends.
//!
//! For fault-injection tests, `crash_every=N crashes=K` makes each of its
//! first K lives panic after a pseudo-random 1..=N frames moved (either
//! way).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use net_api::{Frame, FrameHeader, KIND_DETACH, MacText};
use runtime::abi::start::ResourceView;
use runtime::arguments::OrExit;
use runtime::dma::Buffer;
use runtime::irq::Line;
use runtime::pci::Function;
use runtime::queue::{QueueError, Receiver, Sender};
use runtime::{notification, println};
use virtio::DmaMemory;
use virtio::net::{self as vnet, HEADER_SIZE};
use virtio::queue::{AddError, DeviceError, Segment};
use virtio_driver::{Device, Dma, OpenError, Queue, Signal};

runtime::component!(main);

/// Receive buffers posted at all times.
const RX_BUFFERS: usize = 64;
/// Transmit buffers: frames on their way out at once.
const TX_BUFFERS: usize = 64;
/// Descriptors per queue: one per buffer.
const QUEUE_SIZE: u16 = 64;
/// Bytes per buffer: a `virtio_net_hdr` and the largest frame fit.
const BUFFER: u64 = 2048;
/// Where things are in the DMA buffer: the two queues, then the receive
/// buffers, then the transmit buffers.
const RX_QUEUE_AT: u64 = 0;
const TX_QUEUE_AT: u64 = 0x4000;
const RX_AT: u64 = 0x8000;
const TX_AT: u64 = RX_AT + RX_BUFFERS as u64 * BUFFER;
/// The DMA buffer this layout needs.
pub const DMA_BYTES: u64 = TX_AT + TX_BUFFERS as u64 * BUFFER;
/// Frames from the bridge taken before the card is notified.
const BATCH: usize = 32;
/// Drops and bad frames are reported the first time and then every this
/// many.
const REPORT_EVERY: u64 = 10_000;

/// What went through the card.
#[derive(Default)]
struct Counters {
    /// Frames the card received and the bridge was given.
    received: u64,
    /// Frames the card received that the bridge's full queue dropped.
    dropped_in: u64,
    /// Frames from the card with a length no Ethernet frame has.
    bad: u64,
    /// Frames the card sent.
    sent: u64,
    /// Malformed frames from the bridge, not sent.
    refused: u64,
    interrupts: u64,
}

/// The card, set up.
struct Card {
    device: Device,
    rx: Queue,
    tx: Queue,
    /// The chain head of the frame in each transmit buffer, while the
    /// card holds it.
    tx_busy: [Option<u16>; TX_BUFFERS],
    /// The receive buffer each chain head is.
    rx_head: [u16; RX_BUFFERS],
}

fn main(start: &runtime::Start) -> i32 {
    let arguments = start
        .arguments(&["intx", "crash_every", "crashes"])
        .or_exit();
    let crash_every: Option<u64> = arguments.optional_number("crash_every").or_exit();
    let crashes: u32 = arguments.number("crashes", 0).or_exit();
    let crash_after = crash_every
        .filter(|&every| every > 0 && start.generation() <= crashes)
        .map(|every| pseudo_random(start.generation()) % every + 1);
    let Some(function) = Function::given(start) else {
        println!("virtio-net: no PCI function was given (pci = {{ vendor = ..., device = ... }})");
        return 2;
    };
    let Some(buffer) = Buffer::granted(start, 0).filter(|b| b.size() >= DMA_BYTES) else {
        println!(
            "virtio-net: needs a DMA buffer of at least {DMA_BYTES} bytes (dma = [{{ size = \"288KiB\" }}])"
        );
        return 2;
    };
    let dma = Dma(buffer);
    let intx: Option<u32> = arguments.optional_number("intx").or_exit();
    let Some(signal) = Signal::choose(&function, intx) else {
        println!(
            "virtio-net: needs an MSI vector (pci = {{ ..., msi = 1 }}) or an INTx line (intx=N with interrupts = [N])"
        );
        return 2;
    };
    let line = match Line::find(start, signal.line()) {
        Ok(line) => line,
        Err(error) => {
            println!("virtio-net: {error}");
            return 2;
        }
    };
    // The one queue pair with the bridge.
    let (mut to_bridge, mut from_bridge, name) = match open_pair(start) {
        Ok(pair) => pair,
        Err(why) => {
            println!("virtio-net: {why}");
            return 2;
        }
    };
    let (mut card, mac, link) = match set_up(start, &function, &dma, signal) {
        Ok(card) => card,
        Err(why) => {
            println!("virtio-net: {why}");
            return 1;
        }
    };
    let (bus, slot, number) = function.location();
    println!(
        "virtio-net: {bus:02x}:{slot:02x}.{number} {:04x}:{:04x}, MAC {}, link {}, uplink '{name}', {} receive and {} transmit buffers, {} as line {} (generation {})",
        function.vendor,
        function.device,
        MacText(mac),
        match link {
            Some(true) => "up",
            Some(false) => "down",
            None => "status not reported",
        },
        RX_BUFFERS,
        TX_BUFFERS,
        signal.describe(),
        signal.line(),
        start.generation()
    );
    line.ready();

    let mut frame = Frame {
        header: FrameHeader::default(),
        data: [0; net_api::DATA_BYTES],
    };
    let mut counters = Counters::default();
    let mut moved = 0u64;
    let watched = line.bits | 1 << from_bridge.bit();
    loop {
        // Frames from the bridge, while a transmit buffer is free.
        let mut added = false;
        let mut detach = false;
        for _ in 0..BATCH {
            let Some(free) = card.tx_busy.iter().position(Option::is_none) else {
                break;
            };
            match from_bridge.try_receive_into(&mut frame) {
                Ok(()) => {}
                Err(QueueError::WouldBlock) => break,
                // The bridge restarted: its queues were reset; go on.
                Err(QueueError::PeerRestarted(_)) => continue,
            }
            if frame.header.kind == KIND_DETACH {
                detach = true;
                break;
            }
            let Some(length) = frame.header.valid_length() else {
                counters.refused += 1;
                if counters.refused % REPORT_EVERY == 1 {
                    println!(
                        "virtio-net: the bridge sent a malformed frame (length {}, kind {}): not sent, {} so far",
                        frame.header.length, frame.header.kind, counters.refused
                    );
                }
                continue;
            };
            match transmit(&mut card, &dma, free, &frame.data[..length]) {
                Ok(()) => {
                    added = true;
                    counters.sent += 1;
                    moved += 1;
                }
                Err(why) => {
                    println!("virtio-net: {why}; stopping");
                    card.device.fail();
                    return 1;
                }
            }
        }
        if added && card.tx.queue.device_wants_notification(&dma) {
            card.device.notify(&card.tx);
        }
        if detach {
            card.device.reset();
            println!(
                "virtio-net: uplink '{name}' detached by the bridge: {} frames in ({} dropped by a full bridge queue, {} malformed), {} out ({} refused), {} interrupts; card reset",
                counters.received,
                counters.dropped_in,
                counters.bad,
                counters.sent,
                counters.refused,
                counters.interrupts
            );
            let detached = Frame {
                header: FrameHeader::detach(),
                data: [0; net_api::DATA_BYTES],
            };
            let _ = to_bridge.send(&detached);
            notification::flush();
            return 0;
        }
        crash_if_due(crash_after, moved);
        // Wait for the card, and for the bridge while a transmit buffer is
        // free (and nothing already waits).
        let room = card.tx_busy.iter().any(Option::is_none);
        if room && !from_bridge.arm() {
            from_bridge.disarm();
            continue;
        }
        let bits = notification::wait_for(watched, None).unwrap_or(0);
        from_bridge.disarm();
        if bits & line.bits == 0 {
            continue;
        }
        counters.interrupts += 1;
        if !card.device.interrupt_is_ours() {
            line.acknowledge();
            continue;
        }
        if let Err(why) = take_back(&mut card, &dma) {
            println!("virtio-net: the card broke the transmit queue's protocol: {why:?}; stopping");
            card.device.fail();
            return 1;
        }
        match receive(&mut card, &dma, &mut frame, &mut to_bridge, &mut counters) {
            Ok(count) => moved += count,
            Err(why) => {
                println!(
                    "virtio-net: the card broke the receive queue's protocol: {why}; stopping"
                );
                card.device.fail();
                return 1;
            }
        }
        // The bridge is woken once for the whole batch.
        notification::flush();
        line.acknowledge();
        crash_if_due(crash_after, moved);
    }
}

/// The queue pair with the bridge: the one `...-in` this component sends
/// on and the one `...-out` it receives from, and the uplink's name.
fn open_pair(
    start: &runtime::Start,
) -> Result<(Sender<Frame>, Receiver<Frame>, &str), &'static str> {
    let mut send = None;
    let mut receive = None;
    for (queue, view) in start.views() {
        match view {
            ResourceView::QueueSend(_)
                if queue.ends_with("-in") && send.replace(queue).is_some() =>
            {
                return Err("given more than one queue ending in '-in'");
            }
            ResourceView::QueueReceive(_)
                if queue.ends_with("-out") && receive.replace(queue).is_some() =>
            {
                return Err("given more than one queue ending in '-out'");
            }
            _ => {}
        }
    }
    let (Some(send), Some(receive)) = (send, receive) else {
        return Err(
            "needs the queue pair of an uplink ('<network>-<driver>-in' to the bridge and '-out' from it: uplink = ... in [networks.NAME])",
        );
    };
    let name = &send[..send.len() - "-in".len()];
    if receive.strip_suffix("-out") != Some(name) {
        return Err("its '-in' and '-out' queues name different uplinks");
    }
    let to = Sender::<Frame>::open(start, send)
        .map_err(|_| "cannot open the queue to the bridge")?
        // Deferred: the bridge is woken once per batch received.
        .deferring();
    let from = Receiver::<Frame>::open(start, receive)
        .map_err(|_| "cannot open the queue from the bridge")?;
    Ok((to, from, name))
}

/// Sets the card up: features, its two queues, every receive buffer
/// posted. Its MAC address and, if it reports one, its link status.
fn set_up(
    start: &runtime::Start,
    function: &Function,
    dma: &Dma,
    signal: Signal,
) -> Result<(Card, [u8; 6], Option<bool>), OpenError> {
    let version = 1u64 << virtio::VIRTIO_F_VERSION_1;
    let mac_bit = 1u64 << vnet::VIRTIO_NET_F_MAC;
    let status_bit = 1u64 << vnet::VIRTIO_NET_F_STATUS;
    let device = Device::open(start, function, signal, mac_bit | status_bit, version)?;
    let mut mac = [0u8; 6];
    let mut link = None;
    if let Some(config) = &device.config {
        if device.features & mac_bit != 0 {
            for (index, byte) in mac.iter_mut().enumerate() {
                *byte = config.read8(vnet::CONFIG_MAC + index as u32);
            }
        }
        if device.features & status_bit != 0 {
            link = Some(config.read16(vnet::CONFIG_STATUS) & vnet::STATUS_LINK_UP != 0);
        }
    }
    let rx = device.queue(dma, vnet::RECEIVE_QUEUE, RX_QUEUE_AT, QUEUE_SIZE)?;
    let tx = device.queue(dma, vnet::TRANSMIT_QUEUE, TX_QUEUE_AT, QUEUE_SIZE)?;
    let mut card = Card {
        device,
        rx,
        tx,
        tx_busy: [None; TX_BUFFERS],
        rx_head: [0; RX_BUFFERS],
    };
    for buffer in 0..RX_BUFFERS {
        card.rx_head[buffer] = post(&mut card, dma, buffer).map_err(|_| {
            OpenError::Function("the receive queue holds fewer buffers than posted")
        })?;
    }
    card.device.ready();
    card.device.notify(&card.rx);
    Ok((card, mac, link))
}

/// Posts receive buffer `buffer`: its chain head.
fn post(card: &mut Card, dma: &Dma, buffer: usize) -> Result<u16, AddError> {
    card.rx.queue.add(
        dma,
        &[Segment {
            physical: dma.physical(RX_AT + buffer as u64 * BUFFER),
            length: BUFFER as u32,
            device_writes: true,
        }],
    )
}

/// Puts `frame` in transmit buffer `slot`, behind its header, on the card.
fn transmit(card: &mut Card, dma: &Dma, slot: usize, frame: &[u8]) -> Result<(), &'static str> {
    let at = TX_AT + slot as u64 * BUFFER;
    vnet::write_header(dma, at);
    dma.0.write(at + u64::from(HEADER_SIZE), frame);
    let head = card
        .tx
        .queue
        .add(
            dma,
            &[Segment {
                physical: dma.physical(at),
                length: HEADER_SIZE + frame.len() as u32,
                device_writes: false,
            }],
        )
        .map_err(|_| "the transmit queue refused a buffer it has room for")?;
    card.tx_busy[slot] = Some(head);
    Ok(())
}

/// Takes back every transmit buffer the card is done with.
fn take_back(card: &mut Card, dma: &Dma) -> Result<(), DeviceError> {
    while let Some(used) = card.tx.queue.pop_used(dma)? {
        if let Some(slot) = card
            .tx_busy
            .iter_mut()
            .find(|slot| **slot == Some(used.head))
        {
            *slot = None;
        }
    }
    Ok(())
}

/// How the card broke a queue's protocol.
enum Broken {
    /// What it wrote in the used ring.
    Device(DeviceError),
    /// A buffer it gave back could not be posted again.
    Repost(AddError),
}

impl core::fmt::Display for Broken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Device(error) => write!(f, "{error:?}"),
            Self::Repost(error) => write!(
                f,
                "a buffer it gave back cannot be posted again ({error:?})"
            ),
        }
    }
}

/// Gives the bridge every frame the card received and posts each buffer
/// again: the frames received.
fn receive(
    card: &mut Card,
    dma: &Dma,
    frame: &mut Frame,
    to_bridge: &mut Sender<Frame>,
    counters: &mut Counters,
) -> Result<u64, Broken> {
    let mut count = 0u64;
    let mut reposted = false;
    while let Some(used) = card.rx.queue.pop_used(dma).map_err(Broken::Device)? {
        let Some(buffer) = card.rx_head.iter().position(|&head| head == used.head) else {
            continue;
        };
        match vnet::received_frame_length(used.length) {
            Some(length) => {
                let at = RX_AT + buffer as u64 * BUFFER + u64::from(HEADER_SIZE);
                dma.0.read(at, &mut frame.data[..length as usize]);
                frame.header = FrameHeader::new(length as usize);
                let length = frame.sent_bytes();
                let sent = match to_bridge.try_send_prefix(frame, length) {
                    Err(QueueError::PeerRestarted(_)) => to_bridge.try_send_prefix(frame, length),
                    other => other,
                };
                if sent.is_ok() {
                    counters.received += 1;
                    count += 1;
                } else {
                    counters.dropped_in += 1;
                    if counters.dropped_in % REPORT_EVERY == 1 {
                        println!(
                            "virtio-net: the bridge takes frames more slowly than they come: its queue is full, {} dropped so far",
                            counters.dropped_in
                        );
                    }
                }
            }
            None => {
                counters.bad += 1;
                if counters.bad % REPORT_EVERY == 1 {
                    println!(
                        "virtio-net: the card wrote {} bytes, no Ethernet frame: dropped, {} so far",
                        used.length, counters.bad
                    );
                }
            }
        }
        card.rx_head[buffer] = post(card, dma, buffer).map_err(Broken::Repost)?;
        reposted = true;
    }
    if reposted && card.rx.queue.device_wants_notification(dma) {
        card.device.notify(&card.rx);
    }
    Ok(count)
}

/// Panics (a fault-injection test's crash) once `moved` frames reach
/// `crash_after`.
fn crash_if_due(crash_after: Option<u64>, moved: u64) {
    if crash_after.is_some_and(|after| moved >= after) {
        println!("virtio-net: crashing after {moved} frames (crash_every)");
        panic!("crash requested (crash_every)");
    }
}

/// splitmix64 of `seed`.
fn pseudo_random(seed: u32) -> u64 {
    let mut x = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
