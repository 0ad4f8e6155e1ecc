//! A test VM with a hostile virtio-net driver: it breaks every rule the
//! device model (`vm_platform::virtio_net`) sets for transmit chains and
//! receive buffers, and floods its network with broadcast frames. Its own
//! pass says only that the hypervisor never stopped it and completed
//! everything it posted; what matters is around it: in its scenario the
//! other VMs on the network still pass, and the world switcher reports
//! the refusals without flooding its log.
//!
//! The driver finds the first virtio-net PCI function on bus 0 (1af4:1041,
//! or transitional 1af4:1000 through its modern interface), accepts
//! VERSION_1 and MAC (both required), and sets up the receive queue
//! (0) and the transmit queue (1) with [`QUEUE_MAX`] descriptors at most,
//! without interrupts: MSI-X stays off, no queue has a vector, and both
//! available rings say NO_INTERRUPT. The device completes a transmit chain
//! while it handles the notify; the driver still polls the used ring,
//! giving up after [`COMPLETION_TICKS`] TSC ticks.
//!
//! In order:
//!
//! 1. Hostile transmit chains ([`HOSTILE`]), each posted and notified
//!    alone and checked to come back with length 0: a frame of 2000 bytes,
//!    one of 10, headers with `flags` = 1 or `gso_type` = 1, a buffer far
//!    outside guest memory and one across the end of the VM's 2 MiB (the
//!    default memory), a device-writable descriptor after the frame, a
//!    descriptor whose `next` is itself, a chain of 19 descriptors (more
//!    than the device walks), a `next` out of the queue, an indirect
//!    descriptor.
//! 2. The flood, early, while the other VMs on the network find each
//!    other and exchange frames: [`FLOOD`] broadcast frames of 1514 bytes
//!    (ethertype [`ETHERTYPE`], not netcheck's), in batches of at most
//!    [`BATCH`] per notify, reusing the transmit buffers as they come back.
//!    Then [`SPOOFED`] broadcast frames from source addresses not its own
//!    (locally administered unicast ones it makes up), which the bridge
//!    must refuse: a NIC sends from its own address only.
//! 3. [`ROUNDS`] - 1 more rounds of the hostile chains, one notify per
//!    round: [`ROUNDS`] × 11 refusals in all, a multiple of the switcher's
//!    report interval (it reports the first refusal and every 1000th, and
//!    counts receive and transmit refusals together), so that the
//!    reports are the same every run and the next refusal, of a receive
//!    buffer below, is reported too.
//! 4. Receive chains too small for a frame ([`SMALL_RX`]: 512 bytes,
//!    1525 — one under the 1526 a frame needs without mergeable buffers —
//!    and 1000 + 525 in two descriptors), each alone in a page filled with
//!    a pattern, posted and notified only now, after every transmit
//!    refusal. They come back (length 0) as frames for this NIC reach
//!    them: the netcheck VMs' broadcasts wait in its queue from the bridge
//!    meanwhile. Waits up to [`RX_WAIT_TICKS`] TSC ticks for all of them
//!    and checks that every one that came back has length 0 and that
//!    nothing in their pages was written. None coming back (no frame
//!    reached this NIC) is not a failure.
//!
//! Lines: `netflood: virtio-net at 00:NN.0, MAC xx:xx:xx:xx:xx:xx`,
//! `netflood: hostile chain (<what>) completed by the device, nothing
//! sent` for each hostile chain, `netflood: flooded 20000 broadcast frames
//! (N notifies)`, `netflood: sent 1000 frames from addresses not its
//! own`, `netflood: 999 more rounds of the 11 hostile chains
//! completed (11000 in all)`, `netflood: 3 receive chains under 1526 bytes
//! posted (...)`, `netflood: N of 3 small receive chains came back
//! refused, nothing written` (or `netflood: none of the 3 ... came back:
//! no frame reached this NIC`), and `TEST netflood PASS`. A failure prints
//! `TEST netflood FAIL: <why>` and exits with 1. (That the device sent
//! none of the hostile chains only the switcher's counters show: a
//! transmit completion says nothing either way.)
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use guest_runtime::devices::{self, DMA_BYTES};
use guest_runtime::virtio_net::{self, BROADCAST, Mac, RECEIVE, TRANSMIT};
use guest_runtime::virtio_pci::Dma;
use guest_runtime::{fail, println, rdtsc};
use virtio::DmaMemory;
use virtio::queue::{Segment, SplitQueue};

guest_runtime::entry!("netflood", main);

/// Broadcast frames the flood sends.
const FLOOD: u32 = 20_000;
/// Frames sent from addresses not the NIC's own.
const SPOOFED: u32 = 1000;
/// Frames per notify during the flood, at most.
const BATCH: usize = 32;
/// Rounds of the hostile chains (the first checked chain by chain).
const ROUNDS: u32 = 1000;
/// IEEE 802 local experimental ethertype 2 (netcheck uses 1).
const ETHERTYPE: u16 = 0x88b6;

/// How long the device may take to complete a notified chain, in TSC
/// ticks (seconds at any plausible rate; it completes them at once).
const COMPLETION_TICKS: u64 = 20_000_000_000;
/// How long to wait at the end for the receive buffers to come back.
const RX_WAIT_TICKS: u64 = 5_000_000_000;

/// The DMA area's layout.
const RX_QUEUE_AT: u64 = 0;
const TX_QUEUE_AT: u64 = 0x1000;
/// The receive chains too small for a frame, one page each (the rest of
/// the page guard bytes): the lengths of their descriptors, the second at
/// the middle of the page.
const RX_BUFFERS_AT: u64 = 0x2000;
const RX_PAGE: u64 = 0x1000;
const SMALL_RX: [&[u32]; 3] = [&[512], &[1525], &[1000, 525]];
/// What the receive buffers and their guards are filled with.
const RX_FILL: u64 = 0xa5a5_5a5a_a5a5_5a5a;
/// One page per hostile chain's buffers.
const HOSTILE_AT: u64 = 0x8000;
const HOSTILE_PAGE: u64 = 0x1000;
/// The flood's transmit buffers, one per descriptor.
const TX_BUFFERS_AT: u64 = 0x20000;
const TX_BUFFER: u64 = 2048;
/// The largest queue set up.
const QUEUE_MAX: u16 = 64;
/// The NIC's set-up: without interrupts (the driver polls), MSI-X off
/// and both available rings NO_INTERRUPT; the MAC address required.
const NET: virtio_net::Setup = virtio_net::Setup {
    queues_at: [RX_QUEUE_AT, TX_QUEUE_AT],
    queue_max: QUEUE_MAX,
    mac_required: true,
    vectors: None,
    no_interrupt: [true, true],
};
const _: () = assert!(SplitQueue::layout(QUEUE_MAX).bytes <= TX_QUEUE_AT - RX_QUEUE_AT);
const _: () = assert!(SplitQueue::layout(QUEUE_MAX).bytes <= RX_BUFFERS_AT - TX_QUEUE_AT);
const _: () = assert!(RX_BUFFERS_AT + SMALL_RX.len() as u64 * RX_PAGE <= HOSTILE_AT);
const _: () = assert!(HOSTILE_AT + HOSTILE.len() as u64 * HOSTILE_PAGE <= TX_BUFFERS_AT);
const _: () = assert!(TX_BUFFERS_AT + QUEUE_MAX as u64 * TX_BUFFER <= DMA_BYTES as u64);
const _: () = assert!(BATCH <= QUEUE_MAX as usize);

/// `virtio_net_hdr` with `num_buffers` (VERSION_1).
const NET_HEADER: u64 = 12;
/// The largest Ethernet frame the device takes.
const MAX_FRAME: u64 = 1514;
/// The frame most hostile chains carry: a valid one of this length.
const SMALL_FRAME: u64 = 60;
const _: () = assert!(NET_HEADER + MAX_FRAME <= TX_BUFFER);

/// Descriptor flags (the `virtio` crate keeps its own private).
const DESC_F_NEXT: u16 = 1;
const DESC_F_INDIRECT: u16 = 4;

/// The default memory of a VM, whose end one hostile buffer crosses.
const VM_MEMORY: u64 = 2 << 20;
/// An address far outside any guest memory.
const FAR_AWAY: u64 = 0xffff_f000_0000;

/// The hostile transmit chains, in the order posted: what each is.
const HOSTILE: [&str; 11] = [
    "a frame of 2000 bytes, oversized",
    "a frame of 10 bytes, a runt",
    "a header with flags=1, NEEDS_CSUM not offered",
    "a header with gso_type=1, TCPv4 segmentation not offered",
    "a buffer at 0xffff_f000_0000, outside guest memory",
    "a buffer across the end of the VM's 2 MiB",
    "a device-writable descriptor after the frame, the wrong direction",
    "a descriptor whose next is itself, a loop",
    "a chain of 19 descriptors, longer than the device walks",
    "a next index beyond the queue",
    "an indirect descriptor, not offered",
];

fn main() -> u32 {
    let net = virtio_net::open(&NET);
    let device = net.device;
    let mut nic = Nic {
        dma: net.dma,
        queues: net.queues,
        notify: net.notify,
        mac: net.mac,
    };
    println!(
        "netflood: virtio-net at 00:{device:02x}.0, MAC {}",
        Mac(nic.mac)
    );

    // 1. Hostile transmit chains, one at a time.
    nic.write_hostile_buffers();
    for (kind, what) in HOSTILE.iter().enumerate() {
        let head = nic.post_hostile(kind);
        nic.notify(TRANSMIT);
        let used = nic.wait_used(TRANSMIT, what);
        if used.head != head {
            fail(format_args!(
                "the device completed chain {} when chain {head} ({what}) was the only one",
                used.head
            ));
        }
        println!("netflood: hostile chain ({what}) completed by the device, nothing sent");
    }

    // 2. The flood, while the other VMs on the network are at work.
    let notifies = nic.flood(FLOOD, false);
    println!("netflood: flooded {FLOOD} broadcast frames ({notifies} notifies)");
    nic.flood(SPOOFED, true);
    println!("netflood: sent {SPOOFED} frames from addresses not its own");

    // 3. The hostile chains again, in rounds.
    for round in 1..ROUNDS {
        for kind in 0..HOSTILE.len() {
            nic.post_hostile(kind);
        }
        nic.notify(TRANSMIT);
        for _ in 0..HOSTILE.len() {
            nic.wait_used(TRANSMIT, "a chain of a round of hostile chains");
        }
        if nic.queues[TRANSMIT].in_flight() != 0 {
            fail(format_args!(
                "round {round}: {} hostile chains completed twice or not at all",
                nic.queues[TRANSMIT].in_flight()
            ));
        }
    }
    println!(
        "netflood: {} more rounds of the {} hostile chains completed ({} in all)",
        ROUNDS - 1,
        HOSTILE.len(),
        ROUNDS as usize * HOSTILE.len()
    );

    // 4. Receive buffers too small for a frame: refused, nothing written.
    nic.post_small_receive_buffers();
    println!(
        "netflood: {} receive chains under 1526 bytes posted (512, 1525, 1000 + 525 in two descriptors)",
        SMALL_RX.len()
    );
    let back = nic.small_receive_buffers_back();
    if back == 0 {
        println!(
            "netflood: none of the {} small receive chains came back: no frame reached this NIC",
            SMALL_RX.len()
        );
    } else {
        println!(
            "netflood: {back} of {} small receive chains came back refused, nothing written",
            SMALL_RX.len()
        );
    }
    println!("TEST netflood PASS");
    0
}

struct Nic {
    dma: Dma,
    /// Receive, transmit.
    queues: [SplitQueue; 2],
    notify: [u64; 2],
    mac: [u8; 6],
}

impl Nic {
    /// Notifies `queue`, whatever the device says it wants.
    fn notify(&self, queue: usize) {
        devices::write16(self.notify[queue], queue as u16);
    }

    /// Copies `bytes` to `at` in the DMA area (8 bytes at a time; `at`
    /// 8-aligned, the last word zero-padded).
    fn write_bytes(&self, at: u64, bytes: &[u8]) {
        for (index, chunk) in bytes.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.dma
                .write64(at + 8 * index as u64, u64::from_le_bytes(word));
        }
    }

    /// Writes a zero virtio header and a broadcast frame of ours of
    /// `length` bytes (its payload numbered `sequence`) at `at`; with
    /// `spoofed`, from a made-up address instead of the NIC's.
    fn write_frame(&self, at: u64, length: u64, sequence: u32, spoofed: bool) {
        let mut buffer = [0u8; (NET_HEADER + MAX_FRAME) as usize];
        let total = (NET_HEADER + length) as usize;
        let frame = &mut buffer[NET_HEADER as usize..total];
        frame[..6].copy_from_slice(&BROADCAST);
        if spoofed {
            let [a, b, c, d] = sequence.to_be_bytes();
            frame[6..12].copy_from_slice(&[0x02, 0x5f, a, b, c, d]);
        } else {
            frame[6..12].copy_from_slice(&self.mac);
        }
        frame[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
        frame[14..18].copy_from_slice(&sequence.to_be_bytes());
        for (index, byte) in frame[18..].iter_mut().enumerate() {
            *byte = (index as u32).wrapping_mul(31).wrapping_add(sequence) as u8;
        }
        self.write_bytes(at, &buffer[..total]);
    }

    /// The DMA offset of hostile chain `kind`'s page.
    fn hostile_page(kind: usize) -> u64 {
        HOSTILE_AT + kind as u64 * HOSTILE_PAGE
    }

    /// Fills each hostile chain's page: a valid small frame (a 2000-byte
    /// one for the first), with the header's flags or gso_type set for
    /// the two that ask for an offload.
    fn write_hostile_buffers(&self) {
        for kind in 0..HOSTILE.len() {
            let page = Self::hostile_page(kind);
            let length = if kind == 0 { 2000 } else { SMALL_FRAME };
            self.write_large_frame(page, length);
        }
        // flags = NEEDS_CSUM; gso_type = TCPV4 (bytes 0 and 1).
        self.dma.write8(Self::hostile_page(2), 1);
        self.dma.write8(Self::hostile_page(3) + 1, 1);
    }

    /// A frame of `length` bytes at `at`, longer ones than
    /// [`MAX_FRAME`] too (the 2000-byte one): past it, a fixed pattern.
    fn write_large_frame(&self, at: u64, length: u64) {
        let first = length.min(MAX_FRAME);
        self.write_frame(at, first, 0, false);
        // The rest (past 1514 bytes): more pattern, 8 bytes at a time
        // from the next 8-aligned offset.
        let mut offset = (NET_HEADER + first).next_multiple_of(8);
        while offset < NET_HEADER + length {
            self.dma.write64(at + offset, 0x0123_4567_89ab_cdef);
            offset += 8;
        }
    }

    /// Posts hostile chain `kind` (see [`HOSTILE`]) on the transmit queue
    /// without notifying; returns its head. The chains the `virtio`
    /// crate's queue would not write as they are (a loop, a next beyond
    /// the queue, an indirect descriptor) are added as one plain
    /// descriptor and then rewritten in the table before the notify: the
    /// queue keeps its own state and never reads the table back, so it
    /// frees the chain as it added it.
    fn post_hostile(&mut self, kind: usize) -> u16 {
        let page = self.dma.physical(Self::hostile_page(kind));
        let read = |physical: u64, length: u64| Segment {
            physical,
            length: length as u32,
            device_writes: false,
        };
        let small = NET_HEADER + SMALL_FRAME;
        let mut segments = [read(page, small); 19];
        let (count, rewrite) = match kind {
            0 => {
                segments[0] = read(page, NET_HEADER + 2000);
                (1, None)
            }
            1 => {
                segments[0] = read(page, NET_HEADER + 10);
                (1, None)
            }
            2 | 3 => (1, None),
            4 => {
                segments[0] = read(FAR_AWAY, small);
                (1, None)
            }
            5 => {
                segments[0] = read(VM_MEMORY - 0x100, 0x200);
                (1, None)
            }
            6 => {
                segments[1] = Segment {
                    physical: page + HOSTILE_PAGE / 2,
                    length: 64,
                    device_writes: true,
                };
                (2, None)
            }
            // Flags and next to write over the one descriptor; `None` as
            // next: the head itself.
            7 => (1, Some((DESC_F_NEXT, None))),
            8 => {
                // 19 × 4 bytes: the header and a frame of 64.
                for (index, segment) in segments.iter_mut().enumerate() {
                    *segment = read(page + 4 * index as u64, 4);
                }
                (19, None)
            }
            9 => (1, Some((DESC_F_NEXT, Some(1000)))),
            10 => (1, Some((DESC_F_INDIRECT, Some(0)))),
            _ => unreachable!("no hostile chain {kind}"),
        };
        let head = match self.queues[TRANSMIT].add(&self.dma, &segments[..count]) {
            Ok(head) => head,
            Err(error) => fail(format_args!(
                "the transmit queue took no hostile chain ({}): {error:?}",
                HOSTILE[kind]
            )),
        };
        if let Some((flags, next)) = rewrite {
            let size = self.queues[TRANSMIT].size();
            let at = TX_QUEUE_AT + SplitQueue::layout(size).desc + 16 * u64::from(head);
            self.dma.write16(at + 12, flags);
            self.dma.write16(at + 14, next.unwrap_or(head));
        }
        head
    }

    /// The next chain the device completed on `queue`, which must have
    /// written nothing into it; fails the test when none comes within
    /// [`COMPLETION_TICKS`] or the device breaks the queue's protocol.
    fn wait_used(&mut self, queue: usize, what: &str) -> virtio::queue::Used {
        let start = rdtsc();
        loop {
            match self.queues[queue].pop_used(&self.dma) {
                Ok(Some(used)) if used.length == 0 => return used,
                Ok(Some(used)) => fail(format_args!(
                    "the device wrote {} bytes into {what}",
                    used.length
                )),
                Ok(None) => {}
                Err(error) => fail(format_args!(
                    "the device broke the queue's protocol after {what}: {error:?}"
                )),
            }
            if rdtsc().wrapping_sub(start) > COMPLETION_TICKS {
                fail(format_args!(
                    "{what}: not completed within {COMPLETION_TICKS} TSC ticks of the notify"
                ));
            }
            core::hint::spin_loop();
        }
    }

    /// Fills the pages of the small receive chains with [`RX_FILL`] and
    /// posts the chains; notifies.
    fn post_small_receive_buffers(&mut self) {
        let end = RX_BUFFERS_AT + SMALL_RX.len() as u64 * RX_PAGE;
        for offset in (RX_BUFFERS_AT..end).step_by(8) {
            self.dma.write64(offset, RX_FILL);
        }
        for (index, lengths) in SMALL_RX.iter().enumerate() {
            let page = RX_BUFFERS_AT + index as u64 * RX_PAGE;
            let mut segments = [Segment {
                physical: 0,
                length: 0,
                device_writes: true,
            }; 2];
            for (piece, (segment, &length)) in segments.iter_mut().zip(*lengths).enumerate() {
                segment.physical = self.dma.physical(page + piece as u64 * RX_PAGE / 2);
                segment.length = length;
            }
            if let Err(error) = self.queues[RECEIVE].add(&self.dma, &segments[..lengths.len()]) {
                fail(format_args!("the receive queue took no chain: {error:?}"));
            }
        }
        self.notify(RECEIVE);
    }

    /// Waits up to [`RX_WAIT_TICKS`] for every small receive chain to
    /// come back; checks that nothing was written in their pages. Returns
    /// how many came back.
    fn small_receive_buffers_back(&mut self) -> usize {
        let start = rdtsc();
        let mut back = 0;
        while back < SMALL_RX.len() && rdtsc().wrapping_sub(start) < RX_WAIT_TICKS {
            match self.queues[RECEIVE].pop_used(&self.dma) {
                Ok(Some(used)) if used.length == 0 => back += 1,
                Ok(Some(used)) => fail(format_args!(
                    "the device wrote {} bytes into a receive chain under 1526 bytes",
                    used.length
                )),
                Ok(None) => core::hint::spin_loop(),
                Err(error) => fail(format_args!(
                    "the device broke the receive queue's protocol: {error:?}"
                )),
            }
        }
        let end = RX_BUFFERS_AT + SMALL_RX.len() as u64 * RX_PAGE;
        for offset in (RX_BUFFERS_AT..end).step_by(8) {
            let word = self.dma.read64(offset);
            if word != RX_FILL {
                fail(format_args!(
                    "the page of small receive chain {} written at offset {:#x}: {word:#018x}",
                    (offset - RX_BUFFERS_AT) / RX_PAGE,
                    (offset - RX_BUFFERS_AT) % RX_PAGE
                ));
            }
        }
        back
    }

    /// Sends `count` broadcast frames of [`MAX_FRAME`] bytes (from made-up
    /// addresses with `spoofed`), up to [`BATCH`] per notify, each
    /// transmit buffer reused once the device completed its chain.
    /// Returns the notifies written.
    fn flood(&mut self, count: u32, spoofed: bool) -> u32 {
        let size = self.queues[TRANSMIT].size();
        // The buffer of each chain in flight, by head, and the free ones.
        let mut slot_of = [0u8; QUEUE_MAX as usize];
        let mut free: u64 = if size == 64 {
            u64::MAX
        } else {
            (1u64 << size) - 1
        };
        let mut sent = 0u32;
        let mut notifies = 0u32;
        while sent < count {
            let mut batch = 0;
            while batch < BATCH && sent < count && free != 0 {
                let slot = free.trailing_zeros() as u8;
                let at = TX_BUFFERS_AT + u64::from(slot) * TX_BUFFER;
                self.write_frame(at, MAX_FRAME, sent, spoofed);
                let segment = Segment {
                    physical: self.dma.physical(at),
                    length: (NET_HEADER + MAX_FRAME) as u32,
                    device_writes: false,
                };
                match self.queues[TRANSMIT].add(&self.dma, &[segment]) {
                    Ok(head) => slot_of[usize::from(head)] = slot,
                    Err(error) => fail(format_args!(
                        "the transmit queue took no frame with {} buffers free: {error:?}",
                        free.count_ones()
                    )),
                }
                free &= !(1 << slot);
                batch += 1;
                sent += 1;
            }
            if batch > 0 {
                self.notify(TRANSMIT);
                notifies += 1;
            }
            // At least one back before the next batch (all of them, with
            // this device, which completes them during the notify).
            let used = self.wait_used(TRANSMIT, "a broadcast frame");
            free |= 1 << slot_of[usize::from(used.head)];
            loop {
                match self.queues[TRANSMIT].pop_used(&self.dma) {
                    Ok(Some(used)) if used.length == 0 => {
                        free |= 1 << slot_of[usize::from(used.head)];
                    }
                    Ok(Some(used)) => fail(format_args!(
                        "the device wrote {} bytes into a broadcast frame",
                        used.length
                    )),
                    Ok(None) => break,
                    Err(error) => fail(format_args!(
                        "the device broke the transmit queue's protocol: {error:?}"
                    )),
                }
            }
        }
        while self.queues[TRANSMIT].in_flight() > 0 {
            self.wait_used(TRANSMIT, "a broadcast frame");
        }
        notifies
    }
}
