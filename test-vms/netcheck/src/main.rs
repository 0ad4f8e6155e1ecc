//! A test VM with a small virtio-net driver of its own (the queue logic is
//! the `virtio` crate's, as in `diskcheck`) that exchanges checksummed
//! frames with a peer VM on the same network.
//!
//! The driver finds the first virtio-net PCI function on bus 0 (modern
//! 1af4:1041, or transitional 1af4:1000 through its modern interface),
//! accepts VERSION_1 (required) and MAC (wanted) and nothing else, sets up
//! the receive queue (0) and the transmit queue (1), at most
//! [`QUEUE_MAX`] descriptors each, with MSI-X to the local APIC
//! (configuration, receive and transmit on vectors [`CONFIG_VECTOR`],
//! [`RX_VECTOR`], [`TX_VECTOR`]; the transmit queue's interrupt is
//! suppressed, as its buffers are taken back by polling), and keeps [`RX_BUFFERS`] receive buffers
//! of [`BUFFER`] bytes posted at all times (each re-posted once its frame
//! is copied out; the device is notified every [`RX_KICK_BATCH`]) and
//! [`TX_BUFFERS`] transmit buffers. Every frame sits behind a 12-byte
//! `virtio_net_hdr`, all zero on transmit. Frames to send are queued and
//! go out together with one notify (one exit): at once for a single
//! frame, or, for the echoes of frames received, once every frame that
//! arrived is taken and the driver would wait. A frame that finds every
//! transmit buffer busy is dropped, as Ethernet may.
//!
//! The run: [`DEFAULT_FRAMES`] PINGs and the benchmark, unless the VM was
//! booted as a multiboot kernel (it links `guest-multiboot`; the build
//! tool writes its ELF32 copy, `vm-netcheck.elf32`, which a `kind =
//! "multiboot"` VM or QEMU's `-kernel` boots). Then its command line, whose
//! first word is the kernel's name, may say `frames=N` (1..=[`MAX_FRAMES`]
//! PINGs) and `bench=0|1` (whether the benchmark runs; default 1); any
//! other word, or a value out of range, fails the test naming it (see
//! [`Settings`]). Both VMs must be given the same frame count: the echoer
//! refuses a PING beyond its own and a DONE for another count. With
//! `campaign=1` both run the campaign mode instead ([`campaign`]: frames
//! without end unless `frames=N`, `CHECK net ok|BROKEN ...` lines, no
//! failure, no benchmark).
//!
//! Timeouts: the TSC, at the rate the hypervisor's paravirtual clock gives
//! where it offers one (with the local APIC timer's rate measured against
//! the TSC, which a VM that is not run for a while cannot skew), else
//! calibrated at start against the RTC's periodic interrupt (1024 Hz
//! through IOAPIC pin 8), together with the local APIC timer's rate;
//! while waiting for a frame the guest halts (STI; HLT) with
//! the LAPIC timer armed one-shot for the deadline, so a receive interrupt
//! or the timer wakes it.
//!
//! The protocol (ethertype [`ETHERTYPE`], a local experimental one; see
//! [`Message`] for the frame layout):
//!
//! 1. Discovery: each VM broadcasts a HELLO asking for an answer every
//!    [`HELLO_EVERY_MS`] until it sees a frame of ours from another MAC,
//!    the peer; in every phase a HELLO that asks is answered with a
//!    unicast HELLO, so a late starter learns us. The lower MAC is the
//!    pinger, the other the echoer.
//! 2. The pinger sends PINGs numbered 1..=N ([`Settings::frames`]), one at
//!    a time, with Ethernet payloads of 46..=1500 bytes (each length once
//!    in every 1455 frames, in a scrambled order: see [`payload_length`]),
//!    data derived from the sequence number ([`pattern`]) and an FNV-1a
//!    checksum; the echoer checks each and
//!    sends it back unchanged but for the addresses and the type (ECHO);
//!    the pinger checks the echo byte for byte against what it sent, and
//!    resends the same PING when no echo came within [`ECHO_TIMEOUT_MS`].
//!    An echo of an older number is a duplicate and ignored (counted).
//!    A wrong checksum or byte fails the test.
//! 3. The benchmark ([`bench`]; skipped with `bench=0`): the pinger sends
//!    BENCH-PINGs of 1514 bytes, one at a time and in batches, which the
//!    echoer sends back as BENCH-ECHOs unchecked; the pinger prints `BENCH` lines, the echoer
//!    what it counted per phase. A frame lost here gives up a figure, not
//!    the test.
//! 4. After the last echo the pinger sends DONE until a DONE-ACK comes (at
//!    most [`DONE_TRIES`] times); the echoer answers each DONE and leaves
//!    once none came for [`LINGER_MS`].
//!
//! Lines: booted through multiboot, first `netcheck: multiboot command
//! line '<line>': N frames, benchmark on|off`; then `netcheck: TSC at N
//! MHz, LAPIC timer at M MHz (against the hypervisor's clock, or the RTC)`, `netcheck: virtio-net at
//! 00:NN.0, MAC xx:xx:xx:xx:xx:xx`, `netcheck: peer xx:xx:xx:xx:xx:xx, we
//! ping (the lower MAC)` (or `we echo (the higher MAC)`), `netcheck:
//! 500/2000 frames` every 500 frames (in runs of more than [`SHORT_RUN`]
//! frames, `netcheck: 10000/N frames` every 10,000), the pinger's `BENCH
//! net-frame-round-trip ...` and `BENCH net-batch{1,8,64} ...` (or
//! `netcheck: benchmark <name> lost a frame`; with `bench=0`, `netcheck:
//! benchmark skipped (bench=0)`), then `netcheck: pinger: 2000 frames
//! echoed intact (R resent, D duplicates ignored)` or `netcheck: echoer:
//! echoed 2000 frames` (and, if PINGs came again, `netcheck: echoer: N
//! PINGs came again and were echoed again`, and a `netcheck: echoer:
//! benchmark <name>: ...` line per phase), a line of counters (`netcheck: N frames sent, ...`) and `TEST netcheck PASS`. A
//! failure prints `TEST netcheck FAIL: <why>` and exits with 1.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use guest_runtime::devices::{self, DMA_BYTES};
use guest_runtime::hypervisor::Costs;
use guest_runtime::interrupts::{self, lapic_read, lapic_write};
use guest_runtime::virtio_net::{self, BROADCAST, Mac, RECEIVE, TRANSMIT};
use guest_runtime::virtio_pci::Dma;
use guest_runtime::{fail, println, rdtsc_ordered};
use virtio::DmaMemory;
use virtio::queue::{Segment, SplitQueue};

mod campaign;
mod gateway;

guest_runtime::entry!("netcheck", main);

/// PINGs the pinger sends (and the echoer expects) unless the multiboot
/// command line says otherwise ([`Settings`]).
const DEFAULT_FRAMES: u32 = 2000;
/// The most PINGs `frames=` may ask for.
const MAX_FRAMES: u32 = 1_000_000;
/// A progress line every [`PROGRESS_SHORT`] frames in a run of at most
/// [`SHORT_RUN`] frames, every [`PROGRESS_LONG`] in a longer one.
const PROGRESS_SHORT: u32 = 500;
const SHORT_RUN: u32 = 2000;
const PROGRESS_LONG: u32 = 10_000;
/// IEEE 802 local experimental ethertype 1.
const ETHERTYPE: u16 = 0x88b5;

/// Interrupt vectors.
const RX_VECTOR: u8 = 0x60;
const TX_VECTOR: u8 = 0x61;
const CONFIG_VECTOR: u8 = 0x62;
const TIMER_VECTOR: u8 = 0x63;
const RTC_VECTOR: u8 = 0x64;

/// Timing, in milliseconds.
const HELLO_EVERY_MS: u64 = 2;
/// How long discovery may take (the other VM may boot much later).
const DISCOVERY_MS: u64 = 60_000;
const ECHO_TIMEOUT_MS: u64 = 20;
/// The longest one PING may stay unanswered (resent every
/// [`ECHO_TIMEOUT_MS`]) before the pinger gives up.
const PING_GIVE_UP_MS: u64 = 20_000;
/// The longest the echoer waits without a frame from the peer.
const SILENCE_MS: u64 = 30_000;
/// DONEs the pinger sends at most (one per [`ECHO_TIMEOUT_MS`]).
const DONE_TRIES: u32 = 50;
/// The echoer leaves once no DONE came for this long.
const LINGER_MS: u64 = 500;

/// The DMA area's layout: both queues, then the receive buffers, then the
/// transmit buffers.
const RX_QUEUE_AT: u64 = 0;
const TX_QUEUE_AT: u64 = 0x1000;
const RX_BUFFERS_AT: u64 = 0x2000;
const TX_BUFFERS_AT: u64 = RX_BUFFERS_AT + RX_BUFFERS as u64 * BUFFER;
/// Bytes per buffer (at least 12 + 1514, what a receive buffer needs
/// without mergeable buffers).
const BUFFER: u64 = 2048;
/// Receive buffers kept posted (at most the queue's size are used): room
/// for the largest benchmark batch ([`BENCH_PHASES`]) twice over.
const RX_BUFFERS: usize = 128;
/// Transmit buffers (at most the queue's size are used): the largest
/// benchmark batch at once, and some to spare.
const TX_BUFFERS: usize = 96;
/// The largest queue set up (the device allows 256; 128 descriptors hold
/// every buffer, and each queue then fits in its 4 KiB).
const QUEUE_MAX: u16 = 128;
/// Reposted receive buffers after which the device is notified. The
/// device looks at the available ring whenever it delivers, so a notify
/// only matters once it has run out of buffers — after every posted one
/// was filled, when the driver reposts all of them as it takes the frames
/// out. Half the buffers keeps that wait short and the notifies (each an
/// exit) rare.
const RX_KICK_BATCH: u32 = RX_BUFFERS as u32 / 2;
/// The NIC's set-up: MSI-X to this CPU's local APIC, the MAC address
/// wanted (made up when the device offers none). The driver takes
/// transmit buffers back when it next sends or receives, never waiting
/// for them: no interrupt for their completions (an injection and an EOI
/// exit per batch saved).
const NET: virtio_net::Setup = virtio_net::Setup {
    queues_at: [RX_QUEUE_AT, TX_QUEUE_AT],
    queue_max: QUEUE_MAX,
    mac_required: false,
    vectors: Some(virtio_net::Vectors {
        config: CONFIG_VECTOR,
        receive: RX_VECTOR,
        transmit: TX_VECTOR,
    }),
    no_interrupt: [false, true],
};
const _: () = assert!(TX_BUFFERS_AT + TX_BUFFERS as u64 * BUFFER <= DMA_BYTES as u64);
const _: () = assert!(SplitQueue::layout(QUEUE_MAX).bytes <= TX_QUEUE_AT - RX_QUEUE_AT);
const _: () = assert!(SplitQueue::layout(QUEUE_MAX).bytes <= RX_BUFFERS_AT - TX_QUEUE_AT);
const _: () = assert!(RX_BUFFERS <= 256 && RX_BUFFERS <= QUEUE_MAX as usize);
const _: () = assert!(TX_BUFFERS <= 128 && TX_BUFFERS <= QUEUE_MAX as usize);

/// `virtio_net_hdr` with `num_buffers` (VERSION_1).
const NET_HEADER: usize = 12;
/// The Ethernet header.
const ETH: usize = 14;
/// Our header after it (see [`Message`]).
const OURS: usize = 12;
const MIN_PAYLOAD: usize = 46;
const MAX_PAYLOAD: usize = 1500;
const _: () = assert!(NET_HEADER + ETH + MAX_PAYLOAD <= BUFFER as usize);

/// Message kinds.
const HELLO: u8 = 1;
const PING: u8 = 2;
const ECHO: u8 = 3;
const DONE: u8 = 4;
const DONE_ACK: u8 = 5;
/// Benchmark frames (see [`bench`]): a BENCH-PING carries its phase's
/// index in [`BENCH_PHASES`] as its flags; its data is a fixed pattern
/// and its checksum field is not kept, and neither is checked.
const BENCH_PING: u8 = 6;
const BENCH_ECHO: u8 = 7;
/// HELLO flag: answer with a unicast HELLO.
const ASK: u8 = 1;

/// The benchmark's phases: each figure's name and the frames in each of
/// its batches (the round trip: one frame, its echo awaited).
const BENCH_PHASES: [(&str, usize); 4] = [
    ("net-frame-round-trip", 1),
    ("net-batch1", 1),
    ("net-batch8", 8),
    ("net-batch64", 64),
];
/// Round trips the round-trip figure is the median of.
const BENCH_ROUND_TRIPS: usize = 64;
/// Frames each batch figure spans, in at least [`BENCH_MIN_BATCHES`]
/// batches.
const BENCH_FRAMES: usize = 64;
const BENCH_MIN_BATCHES: usize = 4;
/// How long the pinger waits for one round trip's or one batch's echoes
/// before it gives the figure up.
const BENCH_TIMEOUT_MS: u64 = 500;
const _: () = {
    let mut phase = 0;
    while phase < BENCH_PHASES.len() {
        // A batch's echoes are a bit each in a u64 (see `await_echoes`),
        // and the whole batch fits the transmit and receive buffers.
        assert!(BENCH_PHASES[phase].1 <= 64);
        assert!(BENCH_PHASES[phase].1 <= TX_BUFFERS);
        assert!(BENCH_PHASES[phase].1 <= RX_BUFFERS);
        phase += 1;
    }
};

/// Offsets in a frame (without the virtio header).
const AT_KIND: usize = 14;
const AT_FLAGS: usize = 15;
const AT_LENGTH: usize = 16;
const AT_SEQUENCE: usize = 18;
const AT_CHECKSUM: usize = 22;
const AT_DATA: usize = ETH + OURS;

/// LAPIC registers.
const SPURIOUS: u32 = 0xf0;
const LVT_TIMER: u32 = 0x320;
const INITIAL_COUNT: u32 = 0x380;
const CURRENT_COUNT: u32 = 0x390;
const DIVIDE: u32 = 0x3e0;

fn main() -> u32 {
    let settings = Settings::read();
    // Firmware may leave the 8259 routing the PIT to vector 8.
    interrupts::mask_legacy_pic();
    // First, while no device interrupts: the calibration takes the time
    // of each RTC interrupt as the last interrupt's.
    let (clock, against) = match guest_runtime::clock::pvclock_tsc_hz() {
        Some(tsc_hz) => (Clock::against_tsc(tsc_hz), "the hypervisor's clock"),
        None => (Clock::calibrate(), "the RTC"),
    };
    println!(
        "netcheck: TSC at {} MHz, LAPIC timer at {} MHz (against {against})",
        clock.tsc_hz / 1_000_000,
        (u128::from(clock.tsc_hz) * u128::from(clock.lapic_counts) / u128::from(clock.lapic_ticks))
            / 1_000_000
    );
    let net = virtio_net::open(&NET);
    let device = net.device;
    let mut nic = match Nic::new(net) {
        Ok(nic) => nic,
        Err(why) => fail(format_args!("00:{device:02x}.0: {why}")),
    };
    println!(
        "netcheck: virtio-net at 00:{device:02x}.0, MAC {}{}",
        Mac(nic.mac),
        if nic.mac_generated {
            " (generated: the device offers none)"
        } else {
            ""
        }
    );
    let mut frame = [0u8; BUFFER as usize];
    if let Some(addresses) = settings.gateway {
        gateway::run(&mut nic, &clock, &mut frame, addresses, &settings);
        counters(&nic);
        println!("TEST netcheck PASS");
        return 0;
    }
    let (peer, pending) = discover(&mut nic, &clock, &mut frame, settings.campaign);
    let pinger = nic.mac < peer;
    println!(
        "netcheck: peer {}, {}",
        Mac(peer),
        if pinger {
            "we ping (the lower MAC)"
        } else {
            "we echo (the higher MAC)"
        }
    );
    if settings.campaign {
        // No failure and no TEST line: a campaign judges by the CHECK
        // lines.
        if pinger {
            campaign::ping(&mut nic, &clock, peer, &mut frame, &settings);
        } else {
            campaign::echo(&mut nic, &clock, peer, &mut frame, pending);
        }
        counters(&nic);
        return 0;
    }
    if pinger {
        ping(&mut nic, &clock, peer, &mut frame, &settings);
    } else {
        echo(&mut nic, &clock, peer, &mut frame, pending, &settings);
    }
    counters(&nic);
    println!("TEST netcheck PASS");
    0
}

/// The NIC's counters line, and which other MACs frames of ours came
/// from.
fn counters(nic: &Nic) {
    match nic.senders_seen {
        0 => {}
        1 => println!(
            "netcheck: frames of ours came from 1 other MAC, {}",
            Mac(nic.senders[0])
        ),
        seen => {
            println!("netcheck: frames of ours came from {seen} other MACs:");
            for mac in &nic.senders[..seen.min(SENDERS)] {
                println!("netcheck:   {}", Mac(*mac));
            }
        }
    }
    println!(
        "netcheck: {} frames sent, {} received ({} not for this test), {} dropped for a full transmit queue, {} receive interrupts, {} notifies",
        nic.sent,
        nic.received,
        nic.ignored,
        nic.dropped,
        interrupts::count(RX_VECTOR),
        nic.notifies()
    );
}

/// What a run does. Booted as a multiboot kernel (the build tool's ELF32
/// copy, `vm-netcheck.elf32`), netcheck reads it from its command line,
/// whose first word is the kernel's name (the VM's name under our world
/// switcher, the file's path under GRUB and QEMU) and the rest
/// `frames=N` (1..=[`MAX_FRAMES`]), `bench=0|1`, `campaign=0|1` and
/// the gateway mode's `ip=` and `gateway=`, in any order; anything else
/// fails the test, naming the word. Booted any other way,
/// or without arguments, it runs [`Settings::DEFAULT`].
#[derive(Clone, Copy)]
struct Settings {
    /// PINGs the pinger sends and the echoer expects.
    frames: u32,
    /// Whether the pinger runs its benchmark ([`bench`]).
    bench: bool,
    /// The gateway mode ([`gateway`]): our address and the gateway's.
    gateway: Option<(gateway::Ip, gateway::Ip)>,
    /// The campaign mode ([`campaign`], `campaign=1`).
    campaign: bool,
    /// Whether `frames=` was given (in the campaign mode, the pinger runs
    /// without end without it).
    frames_given: bool,
}

impl Settings {
    const DEFAULT: Self = Self {
        frames: DEFAULT_FRAMES,
        bench: true,
        gateway: None,
        campaign: false,
        frames_given: false,
    };

    /// The settings of this boot (see [`Settings`]); when booted through
    /// multiboot, prints them with the command line.
    fn read() -> Self {
        // Links the multiboot header (see `guest_multiboot::linked`).
        if !guest_multiboot::linked() {
            return Self::DEFAULT;
        }
        let Some(info) = guest_runtime::multiboot::info() else {
            return Self::DEFAULT;
        };
        if info.flags & guest_runtime::multiboot::COMMAND_LINE == 0 {
            println!("netcheck: booted through multiboot without a command line");
            return Self::DEFAULT;
        }
        let line = info.command_line.as_str();
        // What was read and the whole string's length differ when it is
        // longer than what is kept, or not UTF-8 (then "").
        if line.len() as u64 + 1 != info.command_line.span {
            fail(format_args!(
                "the multiboot command line ({} bytes) is not UTF-8 or is longer than the {} bytes read",
                info.command_line.span - 1,
                line.len()
            ));
        }
        let settings = Self::parse(line);
        match settings.gateway {
            Some((ip, gateway)) => println!(
                "netcheck: multiboot command line '{line}': {} echo requests from {} to the gateway {}",
                settings.frames,
                gateway::IpText(ip),
                gateway::IpText(gateway)
            ),
            None if settings.campaign && settings.frames_given => println!(
                "netcheck: multiboot command line '{line}': campaign mode, {} frames",
                settings.frames
            ),
            None if settings.campaign => println!(
                "netcheck: multiboot command line '{line}': campaign mode, frames without end"
            ),
            None => println!(
                "netcheck: multiboot command line '{line}': {} frames, benchmark {}",
                settings.frames,
                if settings.bench { "on" } else { "off" }
            ),
        }
        settings
    }

    /// Parses a command line (the kernel's name, then the arguments);
    /// fails the test on a word it does not take.
    fn parse(line: &str) -> Self {
        let mut settings = Self::DEFAULT;
        let (mut ip, mut gateway) = (None, None);
        let mut words = line.split_ascii_whitespace();
        if words.next().is_none() {
            fail(format_args!(
                "the multiboot command line is empty: its first word must be the kernel's name"
            ));
        }
        for word in words {
            if let Some(value) = word.strip_prefix("frames=") {
                // Digits only: `parse` would take a sign.
                let number = if value.bytes().all(|byte| byte.is_ascii_digit()) {
                    value.parse::<u32>().ok()
                } else {
                    None
                };
                settings.frames = number
                    .filter(|frames| (1..=MAX_FRAMES).contains(frames))
                    .unwrap_or_else(|| {
                        fail(format_args!(
                            "bad argument '{word}': frames=N takes 1..={MAX_FRAMES} frames"
                        ))
                    });
                settings.frames_given = true;
            } else if let Some(value) = word.strip_prefix("bench=") {
                settings.bench = match value {
                    "0" => false,
                    "1" => true,
                    _ => fail(format_args!("bad argument '{word}': bench= takes 0 or 1")),
                };
            } else if let Some(value) = word.strip_prefix("campaign=") {
                settings.campaign = match value {
                    "0" => false,
                    "1" => true,
                    _ => fail(format_args!(
                        "bad argument '{word}': campaign= takes 0 or 1"
                    )),
                };
            } else if let Some(value) = word.strip_prefix("ip=") {
                ip = Some(gateway::parse_ip(value).unwrap_or_else(|| {
                    fail(format_args!("bad argument '{word}': ip= takes A.B.C.D"))
                }));
            } else if let Some(value) = word.strip_prefix("gateway=") {
                gateway = Some(gateway::parse_ip(value).unwrap_or_else(|| {
                    fail(format_args!(
                        "bad argument '{word}': gateway= takes A.B.C.D"
                    ))
                }));
            } else {
                fail(format_args!(
                    "unknown argument '{word}' (netcheck takes frames=N, bench=0|1, campaign=0|1, ip=A.B.C.D and gateway=A.B.C.D)"
                ));
            }
        }
        settings.gateway = match (ip, gateway) {
            (Some(ip), Some(gateway)) => Some((ip, gateway)),
            (None, None) => None,
            _ => fail(format_args!(
                "ip= and gateway= go together (the gateway mode needs both)"
            )),
        };
        if settings.campaign {
            if settings.gateway.is_some() {
                fail(format_args!(
                    "campaign=1 and the gateway mode (ip=, gateway=) do not go together"
                ));
            }
            // The campaign mode never runs the benchmark.
            settings.bench = false;
        }
        settings
    }

    /// Frames between progress lines.
    fn progress(&self) -> u32 {
        if self.frames <= SHORT_RUN {
            PROGRESS_SHORT
        } else {
            PROGRESS_LONG
        }
    }
}

/// Broadcasts asking HELLOs until a frame of ours comes from another MAC;
/// answers an asking HELLO. Returns the peer and, when the frame that
/// taught us is something else (a PING), its length in `frame`.
fn discover(
    nic: &mut Nic,
    clock: &Clock,
    frame: &mut [u8; BUFFER as usize],
    campaign: bool,
) -> ([u8; 6], Option<usize>) {
    let start = rdtsc_ordered();
    let mut give_up = start + clock.ms(DISCOVERY_MS);
    let mut next_hello = start;
    let mut hellos = 0u32;
    loop {
        let now = rdtsc_ordered();
        if now >= give_up && campaign {
            // The campaign mode goes on looking.
            println!(
                "{}",
                workload_check::line::broken(
                    workload_check::line::NET,
                    format_args!(
                        "no peer after {} s ({hellos} HELLOs broadcast); still looking",
                        (now - start) / clock.ms(1000)
                    )
                )
            );
            give_up = now + clock.ms(DISCOVERY_MS);
        } else if now >= give_up {
            fail(format_args!(
                "no peer after {} s ({hellos} HELLOs broadcast)",
                DISCOVERY_MS / 1000
            ));
        }
        if now >= next_hello {
            let length = hello(frame, BROADCAST, nic.mac, ASK);
            nic.send(&frame[..NET_HEADER + length]);
            hellos += 1;
            next_hello = now + clock.ms(HELLO_EVERY_MS);
        }
        let Some(length) = nic.receive(clock, next_hello.min(give_up), frame) else {
            continue;
        };
        let Some(message) = Message::parse(&frame[NET_HEADER..NET_HEADER + length]) else {
            nic.ignored += 1;
            continue;
        };
        if message.src == nic.mac || message.src[0] & 1 != 0 {
            nic.ignored += 1;
            continue;
        }
        let peer = message.src;
        if message.kind == HELLO {
            if message.flags & ASK != 0 {
                let length = hello(frame, peer, nic.mac, 0);
                nic.send(&frame[..NET_HEADER + length]);
            }
            return (peer, None);
        }
        return (peer, Some(length));
    }
}

/// What every phase after discovery does with a received frame of
/// `length` bytes: answers an asking HELLO (from anyone), and ignores
/// frames not of ours, not from `peer` or not to us. Returns a message
/// for the phase.
fn common(
    nic: &mut Nic,
    peer: [u8; 6],
    frame: &mut [u8; BUFFER as usize],
    length: usize,
) -> Option<Message> {
    let Some(message) = Message::parse(&frame[NET_HEADER..NET_HEADER + length]) else {
        nic.ignored += 1;
        return None;
    };
    if message.src == nic.mac || message.src[0] & 1 != 0 {
        nic.ignored += 1;
        return None;
    }
    nic.saw(message.src);
    if message.kind == HELLO {
        if message.flags & ASK != 0 {
            let length = hello(frame, message.src, nic.mac, 0);
            nic.send(&frame[..NET_HEADER + length]);
        }
        return None;
    }
    if message.src != peer || message.dst != nic.mac {
        nic.ignored += 1;
        return None;
    }
    Some(message)
}

/// The pinger's side: every PING echoed intact, the benchmark (if
/// [`Settings::bench`]), then DONE.
fn ping(
    nic: &mut Nic,
    clock: &Clock,
    peer: [u8; 6],
    received: &mut [u8; BUFFER as usize],
    settings: &Settings,
) {
    let frames = settings.frames;
    let mut sent = [0u8; BUFFER as usize];
    let (mut resent, mut duplicates) = (0u32, 0u32);
    for sequence in 1..=frames {
        let length = build(&mut sent, peer, nic.mac, PING, sequence);
        let first = rdtsc_ordered();
        let mut tries = 0u32;
        'resend: loop {
            if tries > 0 {
                resent += 1;
                if rdtsc_ordered() - first >= clock.ms(PING_GIVE_UP_MS) {
                    fail(format_args!(
                        "no echo of frame {sequence} in {} s ({tries} tries)",
                        PING_GIVE_UP_MS / 1000
                    ));
                }
            }
            nic.send(&sent[..NET_HEADER + length]);
            tries += 1;
            let deadline = rdtsc_ordered() + clock.ms(ECHO_TIMEOUT_MS);
            loop {
                let Some(got) = nic.receive(clock, deadline, received) else {
                    continue 'resend;
                };
                let Some(message) = common(nic, peer, received, got) else {
                    continue;
                };
                match message.kind {
                    ECHO if message.sequence < sequence => {
                        check_checksum("a duplicate ECHO", &received[NET_HEADER..NET_HEADER + got]);
                        duplicates += 1;
                    }
                    ECHO if message.sequence == sequence => {
                        check_echo(
                            &sent[NET_HEADER..NET_HEADER + length],
                            &received[NET_HEADER..NET_HEADER + got],
                        );
                        break 'resend;
                    }
                    ECHO => fail(format_args!(
                        "an ECHO of frame {} while frame {sequence} is the latest sent",
                        message.sequence
                    )),
                    PING | DONE => fail(format_args!(
                        "the peer sent a {} as if it pinged too",
                        kind_name(message.kind)
                    )),
                    _ => nic.ignored += 1,
                }
            }
        }
        if sequence.is_multiple_of(settings.progress()) {
            println!("netcheck: {sequence}/{frames} frames");
        }
    }
    if settings.bench {
        bench(nic, clock, peer, &mut sent, received);
    } else {
        println!("netcheck: benchmark skipped (bench=0)");
    }
    let length = control(&mut sent, peer, nic.mac, DONE, frames);
    let mut tries = 0u32;
    'done: loop {
        if tries == DONE_TRIES {
            fail(format_args!("no DONE-ACK after {DONE_TRIES} DONEs"));
        }
        nic.send(&sent[..NET_HEADER + length]);
        tries += 1;
        let deadline = rdtsc_ordered() + clock.ms(ECHO_TIMEOUT_MS);
        while let Some(got) = nic.receive(clock, deadline, received) {
            let Some(message) = common(nic, peer, received, got) else {
                continue;
            };
            match message.kind {
                DONE_ACK if message.sequence == frames => break 'done,
                DONE_ACK => fail(format_args!(
                    "the echoer acknowledged DONE having echoed {} frames, not {frames}",
                    message.sequence
                )),
                ECHO => duplicates += 1,
                // A benchmark echo that came too late: ours, not counted.
                BENCH_ECHO => {}
                _ => nic.ignored += 1,
            }
        }
    }
    println!(
        "netcheck: pinger: {frames} frames echoed intact ({resent} resent, {duplicates} duplicates ignored)"
    );
}

/// The pinger's benchmark, after the checked exchange and before DONE: the
/// cost of the whole path (driver, notify exit, world switcher, bridge,
/// the peer's switcher and driver, and back) as the pinger sees it, in
/// TSC ticks, which under `-icount shift=0` are instructions, with every
/// frame [`MAX_PAYLOAD`] bytes of payload (1514 bytes). First one frame
/// sent and its echo awaited, [`BENCH_ROUND_TRIPS`] times (the median);
/// then for each batch size B of [`BENCH_PHASES`], B frames queued and
/// sent with one notify, all B echoes awaited, [`BENCH_FRAMES`] / B times
/// (at least [`BENCH_MIN_BATCHES`]): the mean per frame. Under our
/// hypervisor the STATISTICS hypercall adds every VM exit and injected
/// interrupt per round trip or batch ([`Costs`]). A wait longer than
/// [`BENCH_TIMEOUT_MS`] gives the figure up (`netcheck: benchmark <name>
/// lost a frame`); nothing here fails the test.
fn bench(
    nic: &mut Nic,
    clock: &Clock,
    peer: [u8; 6],
    sent: &mut [u8; BUFFER as usize],
    received: &mut [u8; BUFFER as usize],
) {
    let counted = matches!(
        guest_runtime::detect(),
        guest_runtime::Hypervisor::Microvisor { .. }
    );
    let length = write_frame(
        sent,
        (peer, nic.mac),
        (BENCH_PING, 0, 0),
        MAX_PAYLOAD,
        |index| pattern(0, index),
    );
    let frame = NET_HEADER + length;
    // The last benchmark sequence number used.
    let mut sequence = 0u32;

    let (name, _) = BENCH_PHASES[0];
    let mut ticks = [0u64; BENCH_ROUND_TRIPS];
    let costs = Costs::now(counted);
    let mut complete = true;
    for tick in ticks.iter_mut() {
        sequence += 1;
        set_sequence(sent, sequence);
        let start = rdtsc_ordered();
        nic.send(&sent[..frame]);
        let deadline = start + clock.ms(BENCH_TIMEOUT_MS);
        if !await_echoes(nic, clock, peer, received, (sequence, 1), deadline) {
            complete = false;
            break;
        }
        *tick = rdtsc_ordered() - start;
    }
    let spent = costs.since(BENCH_ROUND_TRIPS, Some("round trip"));
    if complete {
        ticks.sort_unstable();
        println!(
            "BENCH {name} {} instructions/round-trip (1514-byte frames, VM to VM and back through the bridge, median of {BENCH_ROUND_TRIPS}{spent})",
            ticks[BENCH_ROUND_TRIPS / 2]
        );
    } else {
        println!("netcheck: benchmark {name} lost a frame");
    }

    for (phase, &(name, batch)) in BENCH_PHASES.iter().enumerate().skip(1) {
        if batch > nic.tx_buffers || batch > nic.rx_buffers {
            println!(
                "netcheck: benchmark {name} skipped: {} transmit and {} receive buffers",
                nic.tx_buffers, nic.rx_buffers
            );
            continue;
        }
        sent[NET_HEADER + AT_FLAGS] = phase as u8;
        let batches = (BENCH_FRAMES / batch).max(BENCH_MIN_BATCHES);
        let (tx_notifies, rx_notifies) = (nic.tx_notifies, nic.rx_notifies);
        let (rx_interrupts, tx_interrupts) =
            (interrupts::count(RX_VECTOR), interrupts::count(TX_VECTOR));
        let costs = Costs::now(counted);
        let start = rdtsc_ordered();
        let mut complete = true;
        for _ in 0..batches {
            let first = sequence + 1;
            for _ in 0..batch {
                sequence += 1;
                set_sequence(sent, sequence);
                complete &= nic.queue(&sent[..frame]);
            }
            nic.flush();
            let deadline = rdtsc_ordered() + clock.ms(BENCH_TIMEOUT_MS);
            complete =
                complete && await_echoes(nic, clock, peer, received, (first, batch), deadline);
            if !complete {
                break;
            }
        }
        let ticks = rdtsc_ordered() - start;
        let spent = costs.since(batches, None);
        if !complete {
            println!("netcheck: benchmark {name} lost a frame");
            continue;
        }
        // At most 256 bytes, what the console keeps of a line.
        let per_batch = |count: u64| count as f64 / batches as f64;
        println!(
            "BENCH {name} {} instructions/frame ({batch} 1514-byte frames per notify, mean of {batches} batches; per batch {:.2} tx notifies, {:.2} rx-buffer notifies, {:.2} rx and {:.2} tx interrupts{})",
            ticks / (batches * batch) as u64,
            per_batch(nic.tx_notifies - tx_notifies),
            per_batch(nic.rx_notifies - rx_notifies),
            per_batch(u64::from(
                interrupts::count(RX_VECTOR).wrapping_sub(rx_interrupts)
            )),
            per_batch(u64::from(
                interrupts::count(TX_VECTOR).wrapping_sub(tx_interrupts)
            )),
            spent
        );
    }
}

/// Waits until the echoes of benchmark frames `first..first + count`
/// (`count` at most 64) have all come, or the TSC reaches `deadline`;
/// whether they came. Late echoes of earlier frames are ignored.
fn await_echoes(
    nic: &mut Nic,
    clock: &Clock,
    peer: [u8; 6],
    received: &mut [u8; BUFFER as usize],
    (first, count): (u32, usize),
    deadline: u64,
) -> bool {
    let mut missing = u64::MAX >> (64 - count);
    while missing != 0 {
        let Some(got) = nic.receive(clock, deadline, received) else {
            return false;
        };
        let Some(message) = common(nic, peer, received, got) else {
            continue;
        };
        match message.kind {
            BENCH_ECHO => {
                let index = message.sequence.wrapping_sub(first);
                if got == ETH + MAX_PAYLOAD && (index as usize) < count {
                    missing &= !(1 << index);
                }
            }
            // Late echoes of the checked exchange: ours, not counted.
            ECHO => {}
            _ => nic.ignored += 1,
        }
    }
    true
}

/// Writes benchmark sequence number `sequence` into the frame in `buffer`.
fn set_sequence(buffer: &mut [u8; BUFFER as usize], sequence: u32) {
    buffer[NET_HEADER + AT_SEQUENCE..NET_HEADER + AT_CHECKSUM]
        .copy_from_slice(&sequence.to_be_bytes());
}

/// Checks that an echo is the PING `sent` with the addresses swapped and
/// the kind ECHO, its checksum first; fails the test otherwise.
fn check_echo(sent: &[u8], echo: &[u8]) {
    if let Err(problem) = verify_echo(sent, echo) {
        fail(format_args!("{problem}"));
    }
}

/// [`check_echo`]'s check: what is wrong, if anything.
fn verify_echo(sent: &[u8], echo: &[u8]) -> Result<(), Problem> {
    verify_checksum("an ECHO", echo)?;
    let sequence = be32(&sent[AT_SEQUENCE..]);
    if echo.len() != sent.len() {
        return Err(Problem::EchoLength {
            sequence,
            length: echo.len(),
            sent: sent.len(),
        });
    }
    let mut expected = [0u8; ETH + MAX_PAYLOAD];
    let expected = &mut expected[..sent.len()];
    expected.copy_from_slice(sent);
    expected[..6].copy_from_slice(&sent[6..12]);
    expected[6..12].copy_from_slice(&sent[..6]);
    expected[AT_KIND] = ECHO;
    if let Some(at) = (0..sent.len()).find(|&at| echo[at] != expected[at]) {
        return Err(Problem::EchoByte {
            sequence,
            length: echo.len(),
            at,
            got: echo[at],
            expected: expected[at],
        });
    }
    Ok(())
}

/// What is wrong with a frame of ours (see [`verify_checksum`],
/// [`verify_echo`] and [`verify_ping`]); its [`core::fmt::Display`] says
/// it as a failure of the test (or, in the campaign mode, a BROKEN line).
#[derive(Clone, Copy, Debug)]
enum Problem {
    /// The frame's length differs from what its header says.
    Length {
        what: &'static str,
        sequence: u32,
        length: usize,
        says: usize,
    },
    Checksum {
        what: &'static str,
        sequence: u32,
        length: usize,
        computed: u32,
        stored: u32,
    },
    EchoLength {
        sequence: u32,
        length: usize,
        sent: usize,
    },
    EchoByte {
        sequence: u32,
        length: usize,
        at: usize,
        got: u8,
        expected: u8,
    },
    PingLength {
        sequence: u32,
        length: usize,
        expected: usize,
    },
    PingByte {
        sequence: u32,
        length: usize,
        at: usize,
        got: u8,
        expected: u8,
    },
}

impl core::fmt::Display for Problem {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Length {
                what,
                sequence,
                length,
                says,
            } => write!(
                formatter,
                "{what} numbered {sequence} is {length} bytes long, its header says {says}"
            ),
            Self::Checksum {
                what,
                sequence,
                length,
                computed,
                stored,
            } => write!(
                formatter,
                "{what} numbered {sequence} ({length} bytes) has checksum {computed:#010x}, its header says {stored:#010x}"
            ),
            Self::EchoLength {
                sequence,
                length,
                sent,
            } => write!(
                formatter,
                "the echo of frame {sequence} is {length} bytes long, the PING was {sent}"
            ),
            Self::EchoByte {
                sequence,
                length,
                at,
                got,
                expected,
            } => write!(
                formatter,
                "the echo of frame {sequence} ({length} bytes) differs at byte {at}: {got:#04x}, expected {expected:#04x}"
            ),
            Self::PingLength {
                sequence,
                length,
                expected,
            } => write!(
                formatter,
                "PING {sequence} is {length} bytes long, expected {expected}"
            ),
            Self::PingByte {
                sequence,
                length,
                at,
                got,
                expected,
            } => write!(
                formatter,
                "PING {sequence} ({length} bytes) is wrong at byte {at}: {got:#04x}, expected {expected:#04x}"
            ),
        }
    }
}

/// The echoer's side: checks and echoes every PING until DONE.
fn echo(
    nic: &mut Nic,
    clock: &Clock,
    peer: [u8; 6],
    frame: &mut [u8; BUFFER as usize],
    mut pending: Option<usize>,
    settings: &Settings,
) {
    let frames = settings.frames;
    // The highest sequence number echoed, and PINGs echoed again.
    let mut last = 0u32;
    let mut repeats = 0u32;
    let mut heard = rdtsc_ordered();
    // Once DONE came: until when to stay for another.
    let mut linger: Option<u64> = None;
    // Per benchmark phase, and the phase of the last BENCH-PING echoed.
    let mut bench = [EchoCounts::default(); BENCH_PHASES.len()];
    let mut bench_phase: Option<usize> = None;
    loop {
        let deadline = match linger {
            Some(until) => until,
            None => heard + clock.ms(SILENCE_MS),
        };
        let before = (
            nic.tx_notifies,
            nic.rx_notifies,
            interrupts::count(RX_VECTOR),
        );
        let got = match pending.take() {
            Some(length) => Some(length),
            None => nic.receive(clock, deadline, frame),
        };
        // A transmit notify while receiving (before the wait) sent what
        // the frames taken before had queued.
        if let Some(phase) = bench_phase {
            bench[phase].tx_notifies += nic.tx_notifies - before.0;
        }
        let Some(length) = got else {
            if linger.is_some() {
                break;
            }
            fail(format_args!(
                "nothing from the peer for {} s after {last} frames",
                SILENCE_MS / 1000
            ));
        };
        let Some(message) = common(nic, peer, frame, length) else {
            continue;
        };
        heard = rdtsc_ordered();
        match message.kind {
            PING => {
                let received = &frame[NET_HEADER..NET_HEADER + length];
                check_ping(received, message.sequence);
                if message.sequence > frames {
                    fail(format_args!(
                        "PING {} when we expect {frames} frames (do both VMs have the same command line?)",
                        message.sequence
                    ));
                }
                if message.sequence > last + 1 {
                    fail(format_args!(
                        "PING {} after PING {last}: the pinger skipped one",
                        message.sequence
                    ));
                }
                if message.sequence <= last {
                    repeats += 1;
                } else {
                    last = message.sequence;
                    if last.is_multiple_of(settings.progress()) {
                        println!("netcheck: {last}/{frames} frames");
                    }
                }
                let frame_bytes = &mut frame[NET_HEADER..NET_HEADER + length];
                frame_bytes[..6].copy_from_slice(&peer);
                frame_bytes[6..12].copy_from_slice(&nic.mac);
                frame_bytes[AT_KIND] = ECHO;
                // Sent with every other frame taken meanwhile once no
                // more wait (see `Nic::receive`): one notify per batch.
                nic.queue(&frame[..NET_HEADER + length]);
            }
            BENCH_PING => {
                // Echoed unchecked, with the receive interrupts and
                // buffer notifies that brought it counted for its phase.
                if let Some(counts) = bench.get_mut(usize::from(message.flags)) {
                    counts.frames += 1;
                    counts.rx_notifies += nic.rx_notifies - before.1;
                    counts.rx_interrupts += interrupts::count(RX_VECTOR).wrapping_sub(before.2);
                    bench_phase = Some(usize::from(message.flags));
                }
                let frame_bytes = &mut frame[NET_HEADER..NET_HEADER + length];
                frame_bytes[..6].copy_from_slice(&peer);
                frame_bytes[6..12].copy_from_slice(&nic.mac);
                frame_bytes[AT_KIND] = BENCH_ECHO;
                nic.queue(&frame[..NET_HEADER + length]);
            }
            DONE => {
                if message.sequence != frames || last != frames {
                    fail(format_args!(
                        "DONE for {} frames after {last} echoed, expected {frames}",
                        message.sequence
                    ));
                }
                let length = control(frame, peer, nic.mac, DONE_ACK, last);
                nic.send(&frame[..NET_HEADER + length]);
                linger = Some(rdtsc_ordered() + clock.ms(LINGER_MS));
            }
            ECHO => fail(format_args!("the peer sent an ECHO as if we pinged")),
            _ => nic.ignored += 1,
        }
    }
    println!("netcheck: echoer: echoed {last} frames");
    if repeats > 0 {
        println!("netcheck: echoer: {repeats} PINGs came again and were echoed again");
    }
    for (counts, &(name, batch)) in bench.iter().zip(&BENCH_PHASES) {
        if counts.frames == 0 {
            continue;
        }
        let batches = f64::from(counts.frames) / batch as f64;
        println!(
            "netcheck: echoer: benchmark {name}: {} frames echoed; per batch of {batch}, {:.2} transmit notifies, {:.2} receive interrupts and {:.2} receive-buffer notifies",
            counts.frames,
            counts.tx_notifies as f64 / batches,
            f64::from(counts.rx_interrupts) / batches,
            counts.rx_notifies as f64 / batches
        );
    }
}

/// What the echoer counts for one benchmark phase: the BENCH-PINGs it
/// echoed, the transmit notifies that sent their echoes, and the receive
/// interrupts and receive-buffer notifies while it took them.
#[derive(Clone, Copy, Default)]
struct EchoCounts {
    frames: u32,
    tx_notifies: u64,
    rx_notifies: u64,
    rx_interrupts: u32,
}

/// Checks a received PING against what its sequence number says it
/// holds; fails the test otherwise.
fn check_ping(frame: &[u8], sequence: u32) {
    if let Err(problem) = verify_ping(frame, sequence) {
        fail(format_args!("{problem}"));
    }
}

/// [`check_ping`]'s check: what is wrong, if anything.
fn verify_ping(frame: &[u8], sequence: u32) -> Result<(), Problem> {
    verify_checksum("a PING", frame)?;
    let expected = ETH + payload_length(sequence);
    if frame.len() != expected {
        return Err(Problem::PingLength {
            sequence,
            length: frame.len(),
            expected,
        });
    }
    if let Some(at) =
        (AT_DATA..frame.len()).find(|&at| frame[at] != pattern(sequence, at - AT_DATA))
    {
        return Err(Problem::PingByte {
            sequence,
            length: frame.len(),
            at,
            got: frame[at],
            expected: pattern(sequence, at - AT_DATA),
        });
    }
    Ok(())
}

/// Fails the test unless `frame` (`what`) holds the checksum of its
/// length, sequence number and data, and as many bytes as it says.
fn check_checksum(what: &'static str, frame: &[u8]) {
    if let Err(problem) = verify_checksum(what, frame) {
        fail(format_args!("{problem}"));
    }
}

/// [`check_checksum`]'s check: what is wrong, if anything.
fn verify_checksum(what: &'static str, frame: &[u8]) -> Result<(), Problem> {
    let sequence = be32(&frame[AT_SEQUENCE..]);
    let payload = usize::from(be16(&frame[AT_LENGTH..]));
    if ETH + payload != frame.len() {
        return Err(Problem::Length {
            what,
            sequence,
            length: frame.len(),
            says: ETH + payload,
        });
    }
    let (stored, computed) = (be32(&frame[AT_CHECKSUM..]), checksum(frame));
    if stored != computed {
        return Err(Problem::Checksum {
            what,
            sequence,
            length: frame.len(),
            computed,
            stored,
        });
    }
    Ok(())
}

/// A frame of ours, as parsed: Ethernet header (destination, source,
/// [`ETHERTYPE`]), then kind (u8), flags (u8), the Ethernet payload's
/// length (u16, big-endian, our 12 bytes included, 46..=1500), the
/// sequence number (u32), the FNV-1a checksum (u32) of the length,
/// sequence and data bytes, then the data.
#[derive(Clone, Copy, Debug)]
struct Message {
    dst: [u8; 6],
    src: [u8; 6],
    kind: u8,
    flags: u8,
    sequence: u32,
}

impl Message {
    /// `None` for a frame not of ours, or (but for a PING or an ECHO,
    /// whose length and checksum their checks look at, so that a damaged
    /// one fails the test) too short for the length it gives.
    fn parse(frame: &[u8]) -> Option<Self> {
        if frame.len() < AT_DATA || be16(&frame[12..]) != ETHERTYPE {
            return None;
        }
        let payload = usize::from(be16(&frame[AT_LENGTH..]));
        let kind = frame[AT_KIND];
        if !matches!(kind, PING | ECHO) && (payload < OURS || ETH + payload > frame.len()) {
            return None;
        }
        let mut dst = [0u8; 6];
        let mut src = [0u8; 6];
        dst.copy_from_slice(&frame[..6]);
        src.copy_from_slice(&frame[6..12]);
        Some(Self {
            dst,
            src,
            kind,
            flags: frame[AT_FLAGS],
            sequence: be32(&frame[AT_SEQUENCE..]),
        })
    }
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        HELLO => "HELLO",
        PING => "PING",
        ECHO => "ECHO",
        DONE => "DONE",
        DONE_ACK => "DONE-ACK",
        BENCH_PING => "BENCH-PING",
        BENCH_ECHO => "BENCH-ECHO",
        _ => "frame of an unknown kind",
    }
}

/// The Ethernet payload length of PING `sequence`: 46, then every length
/// up to 1500 in a scrambled order, every 1455 frames.
fn payload_length(sequence: u32) -> usize {
    let span = (MAX_PAYLOAD - MIN_PAYLOAD + 1) as u64;
    MIN_PAYLOAD + (u64::from(sequence.wrapping_sub(1)) * 797 % span) as usize
}

/// Data byte `index` of PING `sequence`.
fn pattern(sequence: u32, index: usize) -> u8 {
    let mut x = (u64::from(sequence) << 16 | index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 29;
    (x >> 24) as u8
}

/// FNV-1a over a frame's length, sequence and data
/// (`workload_check::fnv1a32`).
fn checksum(frame: &[u8]) -> u32 {
    let payload = usize::from(be16(&frame[AT_LENGTH..]));
    let end = (ETH + payload).min(frame.len());
    workload_check::fnv1a32_more(
        workload_check::fnv1a32(&frame[AT_LENGTH..AT_CHECKSUM]),
        &frame[AT_DATA.min(end)..end],
    )
}

fn be16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Writes a zero virtio header and a frame of ours into `buffer`, with
/// `payload` bytes of Ethernet payload whose data `data` gives; returns
/// the frame's length (without the virtio header).
fn write_frame(
    buffer: &mut [u8; BUFFER as usize],
    (dst, src): ([u8; 6], [u8; 6]),
    (kind, flags, sequence): (u8, u8, u32),
    payload: usize,
    data: impl Fn(usize) -> u8,
) -> usize {
    buffer[..NET_HEADER].fill(0);
    let frame = &mut buffer[NET_HEADER..NET_HEADER + ETH + payload];
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    frame[AT_KIND] = kind;
    frame[AT_FLAGS] = flags;
    frame[AT_LENGTH..AT_SEQUENCE].copy_from_slice(&(payload as u16).to_be_bytes());
    frame[AT_SEQUENCE..AT_CHECKSUM].copy_from_slice(&sequence.to_be_bytes());
    for (index, byte) in frame[AT_DATA..].iter_mut().enumerate() {
        *byte = data(index);
    }
    let sum = checksum(frame);
    frame[AT_CHECKSUM..AT_DATA].copy_from_slice(&sum.to_be_bytes());
    ETH + payload
}

/// PING `sequence`.
fn build(
    buffer: &mut [u8; BUFFER as usize],
    dst: [u8; 6],
    src: [u8; 6],
    kind: u8,
    sequence: u32,
) -> usize {
    write_frame(
        buffer,
        (dst, src),
        (kind, 0, sequence),
        payload_length(sequence),
        |index| pattern(sequence, index),
    )
}

/// A HELLO (minimum size, zero data).
fn hello(buffer: &mut [u8; BUFFER as usize], dst: [u8; 6], src: [u8; 6], flags: u8) -> usize {
    write_frame(buffer, (dst, src), (HELLO, flags, 0), MIN_PAYLOAD, |_| 0)
}

/// A DONE or DONE-ACK carrying a frame count.
fn control(
    buffer: &mut [u8; BUFFER as usize],
    dst: [u8; 6],
    src: [u8; 6],
    kind: u8,
    count: u32,
) -> usize {
    write_frame(buffer, (dst, src), (kind, 0, count), MIN_PAYLOAD, |_| 0)
}

/// The TSC's rate, and the local APIC timer's against the TSC.
struct Clock {
    tsc_hz: u64,
    /// LAPIC timer counts (divide by 1) in `lapic_ticks` TSC ticks.
    lapic_counts: u64,
    lapic_ticks: u64,
}

impl Clock {
    /// RTC periodic interrupts the calibration spans (at 1024 Hz).
    const RTC_TICKS: u32 = 32;

    /// Measures the TSC and the LAPIC timer over [`Self::RTC_TICKS`]
    /// periods of the RTC's 1024 Hz interrupt (through IOAPIC pin 8);
    /// leaves the LAPIC timer one-shot on [`TIMER_VECTOR`], stopped. The
    /// timer, started at its largest count, also ends the calibration if
    /// the RTC stays silent. A VM that was not run for a while during a
    /// measurement sees fewer RTC interrupts than time passed (they
    /// coalesce), and so a TSC far too fast: such a measurement is taken
    /// again, up to [`Self::TRIES`] times.
    fn calibrate() -> Self {
        let mut last = (0, 0, 0);
        for _ in 0..Self::TRIES {
            let clock = Self::measure();
            if (100_000_000..=10_000_000_000).contains(&clock.tsc_hz)
                && clock.lapic_counts != 0
                && clock.lapic_ticks != 0
            {
                return clock;
            }
            last = (clock.tsc_hz, clock.lapic_counts, clock.lapic_ticks);
        }
        let (tsc_hz, lapic_counts, lapic_ticks) = last;
        fail(format_args!(
            "implausible clocks {} times: the TSC at {tsc_hz} Hz, {lapic_counts} LAPIC timer counts in {lapic_ticks} TSC ticks",
            Self::TRIES
        ));
    }

    /// Measurements [`Self::calibrate`] takes at most.
    const TRIES: u32 = 8;

    /// The TSC at `tsc_hz` (the hypervisor's paravirtual clock) and the
    /// LAPIC timer (divide by 1) measured against the TSC over 2 ms: both
    /// count host time, so a VM that is not run for part of it still
    /// measures the right ratio, where the RTC's coalesced interrupts
    /// would not.
    fn against_tsc(tsc_hz: u64) -> Self {
        interrupts::disable();
        lapic_write(SPURIOUS, 0x1ff);
        interrupts::use_lapic();
        lapic_write(DIVIDE, 0xb);
        lapic_write(LVT_TIMER, u32::from(TIMER_VECTOR) | 1 << 16);
        let start = rdtsc_ordered();
        lapic_write(INITIAL_COUNT, u32::MAX);
        while rdtsc_ordered() - start < tsc_hz / 500 {}
        let count = lapic_read(CURRENT_COUNT);
        let end = rdtsc_ordered();
        lapic_write(INITIAL_COUNT, 0);
        lapic_write(LVT_TIMER, u32::from(TIMER_VECTOR));
        interrupts::enable();
        Self {
            tsc_hz,
            lapic_counts: u64::from(u32::MAX - count).max(1),
            lapic_ticks: (end - start).max(1),
        }
    }

    /// One measurement.
    fn measure() -> Self {
        const RTC_PIN: u8 = 8;
        const REGISTER_A: u8 = 0x0a;
        const REGISTER_B: u8 = 0x0b;
        const REGISTER_C: u8 = 0x0c;
        const PERIODIC_ENABLE: u8 = 1 << 6;
        interrupts::disable();
        lapic_write(SPURIOUS, 0x1ff);
        interrupts::use_lapic();
        lapic_write(DIVIDE, 0xb);
        lapic_write(LVT_TIMER, u32::from(TIMER_VECTOR));
        interrupts::ioapic_route(RTC_PIN, RTC_VECTOR);
        interrupts::cmos_write(REGISTER_A, 0x26); // 32.768 kHz base, 1024 Hz
        let _ = interrupts::cmos_read(REGISTER_C);
        let b = interrupts::cmos_read(REGISTER_B);
        interrupts::cmos_write(REGISTER_B, b | PERIODIC_ENABLE);
        lapic_write(INITIAL_COUNT, u32::MAX);
        let timer = interrupts::count(TIMER_VECTOR);
        // (TSC at the first RTC interrupt; TSC and LAPIC count read then.)
        let mut first: Option<(u64, u64, u32)> = None;
        let mut seen = 0u32;
        let result = loop {
            let before = interrupts::count(RTC_VECTOR);
            interrupts::wait();
            interrupts::disable();
            if interrupts::count(TIMER_VECTOR) != timer {
                break None;
            }
            if interrupts::count(RTC_VECTOR) == before {
                continue;
            }
            let at = interrupts::last_tsc();
            let now = rdtsc_ordered();
            let count = lapic_read(CURRENT_COUNT);
            let _ = interrupts::cmos_read(REGISTER_C);
            match first {
                None => first = Some((at, now, count)),
                Some((first_at, first_now, first_count)) => {
                    seen += 1;
                    if seen == Self::RTC_TICKS {
                        break Some((
                            at - first_at,
                            now - first_now,
                            u64::from(first_count.saturating_sub(count)),
                        ));
                    }
                }
            }
        };
        interrupts::cmos_write(REGISTER_B, b & !PERIODIC_ENABLE);
        let _ = interrupts::cmos_read(REGISTER_C);
        interrupts::ioapic_mask(RTC_PIN);
        lapic_write(INITIAL_COUNT, 0);
        interrupts::enable();
        let Some((rtc_ticks, lapic_ticks, lapic_counts)) = result else {
            fail(format_args!(
                "the RTC's periodic interrupt did not come {} times before the LAPIC timer ran out (TSC calibration)",
                Self::RTC_TICKS + 1
            ));
        };
        let tsc_hz = rtc_ticks * 1024 / u64::from(Self::RTC_TICKS);
        Self {
            tsc_hz,
            lapic_counts,
            lapic_ticks,
        }
    }

    /// TSC ticks in `ms` milliseconds.
    fn ms(&self, ms: u64) -> u64 {
        self.tsc_hz / 1000 * ms
    }

    /// Arms the LAPIC timer (one-shot) to fire in about `ticks` TSC ticks
    /// (at most its largest count; the caller checks the TSC when woken).
    fn arm(&self, ticks: u64) {
        let counts =
            u128::from(ticks) * u128::from(self.lapic_counts) / u128::from(self.lapic_ticks);
        lapic_write(INITIAL_COUNT, counts.clamp(1, u128::from(u32::MAX)) as u32);
    }
}

struct Nic {
    dma: Dma,
    /// Receive, transmit.
    queues: [SplitQueue; 2],
    notify: [u64; 2],
    mac: [u8; 6],
    mac_generated: bool,
    /// The buffer slot of each chain in flight, by head.
    rx_slot: [u8; QUEUE_MAX as usize],
    tx_slot: [u8; QUEUE_MAX as usize],
    /// Transmit buffers in use (at most the queue's size).
    tx_buffers: usize,
    /// Free transmit slots, a bit each.
    tx_free: u128,
    /// Frames queued for sending since the last transmit notify.
    tx_unkicked: u32,
    /// Receive buffers kept posted (at most the queue's size).
    rx_buffers: usize,
    /// Receive buffers posted since the last notify, and how many make
    /// a notify ([`RX_KICK_BATCH`], at most half the buffers).
    rx_unkicked: u32,
    rx_kick_batch: u32,
    sent: u64,
    received: u64,
    ignored: u64,
    dropped: u64,
    /// Notifies written (each one exit): on the transmit queue (one per
    /// batch of frames queued) and on the receive queue (reposted
    /// buffers).
    tx_notifies: u64,
    rx_notifies: u64,
    /// The other MACs frames of ours came from (at most [`SENDERS`] kept;
    /// `senders_seen` counts them all): one, the peer, on a network of
    /// two that keeps to itself.
    senders: [[u8; 6]; SENDERS],
    senders_seen: usize,
}

/// Distinct senders [`Nic::senders`] keeps.
const SENDERS: usize = 8;

impl Nic {
    /// Notes that a frame of ours came from `mac`.
    fn saw(&mut self, mac: [u8; 6]) {
        let kept = self.senders_seen.min(SENDERS);
        if self.senders[..kept].contains(&mac) {
            return;
        }
        if kept < SENDERS {
            self.senders[kept] = mac;
            self.senders_seen += 1;
        } else if self.senders_seen < usize::MAX {
            // Beyond what is kept, each frame from one not kept counts.
            self.senders_seen += 1;
        }
    }

    /// The driver of `net`, set up ([`NET`]): posts the receive
    /// buffers.
    fn new(net: virtio_net::Net) -> Result<Self, &'static str> {
        let mut nic = Self {
            dma: net.dma,
            queues: net.queues,
            notify: net.notify,
            mac: net.mac,
            mac_generated: net.mac_generated,
            rx_slot: [0; QUEUE_MAX as usize],
            tx_slot: [0; QUEUE_MAX as usize],
            tx_buffers: 0,
            tx_free: 0,
            tx_unkicked: 0,
            rx_buffers: 0,
            rx_unkicked: 0,
            rx_kick_batch: 1,
            sent: 0,
            received: 0,
            ignored: 0,
            dropped: 0,
            tx_notifies: 0,
            rx_notifies: 0,
            senders: [[0; 6]; SENDERS],
            senders_seen: 0,
        };
        let rx_buffers = RX_BUFFERS.min(usize::from(nic.queues[RECEIVE].size()));
        let tx_buffers = TX_BUFFERS.min(usize::from(nic.queues[TRANSMIT].size()));
        nic.rx_buffers = rx_buffers;
        nic.rx_kick_batch = RX_KICK_BATCH.min(rx_buffers as u32 / 2).max(1);
        nic.tx_buffers = tx_buffers;
        nic.tx_free = if tx_buffers == 128 {
            u128::MAX
        } else {
            (1u128 << tx_buffers) - 1
        };
        for slot in 0..rx_buffers {
            nic.post(slot as u8)?;
        }
        nic.kick(RECEIVE);
        Ok(nic)
    }

    /// Offers receive buffer `slot` to the device (not notified).
    fn post(&mut self, slot: u8) -> Result<(), &'static str> {
        let segment = Segment {
            physical: self.dma.physical(RX_BUFFERS_AT + u64::from(slot) * BUFFER),
            length: BUFFER as u32,
            device_writes: true,
        };
        let head = self.queues[RECEIVE]
            .add(&self.dma, &[segment])
            .map_err(|_| "the receive queue is full")?;
        self.rx_slot[usize::from(head)] = slot;
        self.rx_unkicked += 1;
        Ok(())
    }

    /// Notifies `queue` if the device wants it.
    fn kick(&mut self, queue: usize) {
        if queue == RECEIVE {
            self.rx_unkicked = 0;
        } else {
            self.tx_unkicked = 0;
        }
        if self.queues[queue].device_wants_notification(&self.dma) {
            devices::write16(self.notify[queue], queue as u16);
            if queue == RECEIVE {
                self.rx_notifies += 1;
            } else {
                self.tx_notifies += 1;
            }
        }
    }

    /// Notifies written on both queues.
    fn notifies(&self) -> u64 {
        self.tx_notifies + self.rx_notifies
    }

    /// Takes back the transmit buffers the device is done with.
    fn reclaim(&mut self) {
        loop {
            match self.queues[TRANSMIT].pop_used(&self.dma) {
                Ok(Some(used)) => self.tx_free |= 1 << self.tx_slot[usize::from(used.head)],
                Ok(None) => return,
                Err(_) => fail(format_args!(
                    "the device broke the transmit queue's protocol"
                )),
            }
        }
    }

    /// Sends `buffer` (a virtio header and a frame) and notifies, with
    /// every frame queued before it: one exit.
    fn send(&mut self, buffer: &[u8]) {
        self.queue(buffer);
        self.flush();
    }

    /// Notifies the transmit queue if frames were queued since the last
    /// notify: one exit for all of them.
    fn flush(&mut self) {
        if self.tx_unkicked > 0 {
            self.kick(TRANSMIT);
        }
    }

    /// Queues `buffer` (a virtio header and a frame) for sending without
    /// notifying ([`Nic::flush`] does); drops it (counted) when every
    /// transmit buffer is busy, even after a notify of those queued.
    /// Whether it was queued.
    fn queue(&mut self, buffer: &[u8]) -> bool {
        self.reclaim();
        if self.tx_free == 0 && self.tx_unkicked > 0 {
            // The device completes the frames a notify sends before the
            // notify returns: their buffers come back at once.
            self.flush();
            self.reclaim();
        }
        if self.tx_free == 0 {
            self.dropped += 1;
            return false;
        }
        let slot = self.tx_free.trailing_zeros() as u8;
        let at = TX_BUFFERS_AT + u64::from(slot) * BUFFER;
        for (index, chunk) in buffer.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.dma
                .write64(at + 8 * index as u64, u64::from_le_bytes(word));
        }
        let segment = Segment {
            physical: self.dma.physical(at),
            length: buffer.len() as u32,
            device_writes: false,
        };
        match self.queues[TRANSMIT].add(&self.dma, &[segment]) {
            Ok(head) => {
                self.tx_free &= !(1 << slot);
                self.tx_slot[usize::from(head)] = slot;
                self.sent += 1;
                self.tx_unkicked += 1;
                true
            }
            Err(_) => {
                self.dropped += 1;
                false
            }
        }
    }

    /// The next received frame, copied with its virtio header into
    /// `buffer` (its buffer posted again), or `None` once the TSC reaches
    /// `deadline`; while there is none, sends what was queued (one
    /// notify, [`Nic::flush`]) and halts until an interrupt. Returns the
    /// frame's length (without the header).
    fn receive(
        &mut self,
        clock: &Clock,
        deadline: u64,
        buffer: &mut [u8; BUFFER as usize],
    ) -> Option<usize> {
        loop {
            self.reclaim();
            interrupts::disable();
            let now = rdtsc_ordered();
            if now >= deadline {
                interrupts::enable();
                self.flush();
                return None;
            }
            let used = match self.queues[RECEIVE].pop_used(&self.dma) {
                Ok(Some(used)) => used,
                Ok(None) if self.tx_unkicked > 0 => {
                    // Every frame taken: what they made us queue goes
                    // out now, in one notify, before we wait.
                    interrupts::enable();
                    self.flush();
                    continue;
                }
                Ok(None) => {
                    clock.arm(deadline - now);
                    // Halt until a completion or the timer (STI; HLT).
                    interrupts::wait();
                    continue;
                }
                Err(_) => fail(format_args!(
                    "the device broke the receive queue's protocol"
                )),
            };
            interrupts::enable();
            let slot = self.rx_slot[usize::from(used.head)];
            let at = RX_BUFFERS_AT + u64::from(slot) * BUFFER;
            // At most BUFFER: the queue checks it against the chain.
            let length = used.length as usize;
            for (index, chunk) in buffer[..length].chunks_mut(8).enumerate() {
                let word = self.dma.read64(at + 8 * index as u64).to_le_bytes();
                chunk.copy_from_slice(&word[..chunk.len()]);
            }
            if let Err(why) = self.post(slot) {
                fail(format_args!("{why}"));
            }
            if self.rx_unkicked >= self.rx_kick_batch {
                self.kick(RECEIVE);
            }
            self.received += 1;
            if length < NET_HEADER + ETH {
                self.ignored += 1;
                continue;
            }
            return Some(length - NET_HEADER);
        }
    }
}
