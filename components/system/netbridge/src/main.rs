//! The network bridge: a ring-3 component that switches Ethernet frames
//! between VMs' NICs on virtual networks.
//!
//! Each NIC is a queue pair `<nic>-tx` (frames from the NIC's world
//! switcher) / `<nic>-rx` (frames to it), of `net_api` frames; the system
//! file's `[networks.NAME]` tables make them, named `<network>-<vm>`, and
//! pass the networks this bridge serves as `networks=NAME,...`, so that a
//! NIC belongs to the network its name starts with (the longest such
//! name). The switching is `net_api::switch`: learning per network,
//! flooding of broadcast, multicast and unknown destinations, ageing, and
//! never a frame to a NIC of another network. A frame that is malformed
//! (a length outside 14..=1514) or that finds its destination's queue full
//! is dropped and counted — Ethernet semantics; the guest's protocols
//! resend.
//!
//! The bridge sleeps until a NIC sends, then takes every frame waiting,
//! NIC after NIC, in batches of at most [`BATCH`] per NIC so that one
//! flooding guest cannot hold the others off; a destination is woken once
//! per batch (its queue's signal deferred to the end of the batch), as the
//! switchers wake the bridge once per transmitted batch. Each frame is copied twice:
//! out of its NIC's slot into the bridge's own memory (so a guest changing
//! it meanwhile cannot make the bridge deliver what it did not check), and
//! into each destination's slot.
//!
//! Each VM NIC's own address (`net_api::mac_of` of its name) is pinned to
//! its port, so it is known before the guest sends, and it is the only
//! source address the NIC may send from: a frame from another is dropped,
//! counted and reported (the first and every [`REPORT_EVERY`]th), so no
//! guest can take over another's address or an outside one.
//!
//! An uplink — a network card's driver component, `<network>-<driver>-in`
//! (frames from the outside) / `<network>-<driver>-out` (frames to send
//! out) — is a port of its network like a NIC, but frames from it to a
//! unicast address no port of the network has are filtered, not flooded
//! (`net_api::switch`): they are other machines' traffic on the wire.
//!
//! Restart: the core resets the NICs' queues, the switchers carry on with
//! the new bridge, and the table is learnt again from the next frames;
//! frames in flight are lost. A switcher that ends sends a detach message
//! last; when every VM NIC has detached, the bridge sends each uplink a
//! detach message (its driver resets the card and answers with one), and
//! once they have answered it prints each port's counters and ends.
//!
//! Each NIC may send `rate=N` frames a second on average (default
//! [`DEFAULT_RATE`]; 0: no limit) in bursts of a tenth of that
//! (`net_api::rate`): what a flooding guest sends beyond is dropped,
//! counted as throttled and reported, so that it takes no more than its
//! share of the bridge and of its peers' queues.
//!
//! For fault-injection tests, `crash_every=N crashes=K` makes each of its
//! first K lives panic after a pseudo-random 1..=N frames switched.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use net_api::rate::RateLimit;
use net_api::switch::Switch;
use net_api::{Frame, FrameHeader, MacText, mac_of};
use runtime::abi::start::ResourceView;
use runtime::arguments::OrExit;
use runtime::queue::{QueueError, Receiver, Sender};
use runtime::{notification, println, syscall};

runtime::component!(main);

/// Learnt addresses.
const ENTRIES: usize = 256;
/// How long a learnt address lives unless seen again.
const AGEING_NS: u64 = 300_000_000_000;
/// Frames taken from one NIC before the next NIC's turn: a flooding guest
/// cannot hold the others off.
const BATCH: usize = 32;
/// Drops toward a NIC, and frames a NIC sends over its rate limit, are
/// reported the first time and then every this many.
const REPORT_EVERY: u64 = 10_000;
/// Frames a second a NIC may send unless `rate=` says otherwise: far
/// above what a guest here sends in earnest (about 20,000 under icount),
/// well below a guest flooding as fast as it can.
const DEFAULT_RATE: u64 = 100_000;

/// One NIC: a port of the switch.
struct Nic {
    name: String,
    /// What it may send.
    limit: RateLimit,
    from: Receiver<Frame>,
    to: Sender<Frame>,
    /// An uplink (a card's driver), not a VM's NIC.
    uplink: bool,
    /// Its switcher ended (it sent its detach message), or for an uplink,
    /// its driver answered the bridge's.
    gone: bool,
    /// An uplink was sent the detach message.
    told: bool,
}

fn main(start: &runtime::Start) -> i32 {
    let arguments = start
        .arguments(&["networks", "rate", "crash_every", "crashes"])
        .or_exit();
    let networks: Vec<&str> = arguments
        .text("networks")
        .unwrap_or("")
        .split(',')
        .filter(|name| !name.is_empty())
        .collect();
    if networks.is_empty() {
        println!("netbridge: no networks to serve (networks=NAME,...)");
        return 2;
    }
    let rate: u64 = arguments.number("rate", DEFAULT_RATE).or_exit();
    let crash_every: Option<u64> = arguments.optional_number("crash_every").or_exit();
    let crashes: u32 = arguments.number("crashes", 0).or_exit();
    let crash_after = crash_every
        .filter(|&every| every > 0 && start.generation() <= crashes)
        .map(|every| pseudo_random(start.generation()) % every + 1);

    let mut switch: Box<Switch<ENTRIES>> = Box::new(Switch::new(AGEING_NS));
    let mut nics: Vec<Nic> = Vec::new();
    for (queue, view) in start.views() {
        let ResourceView::QueueReceive(_) = view else {
            continue;
        };
        // `<nic>-tx` / `<nic>-rx`, or an uplink's `<uplink>-in` / `-out`.
        let (name, answers, uplink) = if let Some(name) = queue.strip_suffix("-tx") {
            (name, alloc::format!("{name}-rx"), false)
        } else if let Some(name) = queue.strip_suffix("-in") {
            (name, alloc::format!("{name}-out"), true)
        } else {
            continue;
        };
        let (Ok(from), Ok(to)) = (
            Receiver::<Frame>::open(start, queue),
            // Deferred: a NIC is woken once per batch delivered to it.
            Sender::<Frame>::open(start, &answers).map(Sender::deferring),
        ) else {
            println!("netbridge: the queue '{queue}' comes without '{answers}'");
            return 2;
        };
        let Some(network) = network_of(name, &networks) else {
            println!(
                "netbridge: {} '{name}' is on none of the networks it serves ({})",
                if uplink { "uplink" } else { "NIC" },
                arguments.text("networks").unwrap_or("")
            );
            return 2;
        };
        let port = nics.len();
        let attached = if uplink {
            switch.attach_uplink(port, network as u8)
        } else {
            switch.attach(port, network as u8) && switch.pin(port, mac_of(name))
        };
        if !attached {
            println!(
                "netbridge: '{name}' not attached: at most {} ports, each NIC with an address of its own",
                net_api::switch::MAX_PORTS
            );
            continue;
        }
        nics.push(Nic {
            name: String::from(name),
            limit: RateLimit::new(rate),
            from,
            to,
            uplink,
            gone: false,
            told: false,
        });
    }
    if nics.is_empty() {
        println!("netbridge: no NIC queues ('<nic>-tx' and '<nic>-rx')");
        return 2;
    }
    for (index, network) in networks.iter().enumerate() {
        let mut members = String::new();
        for (port, nic) in nics.iter().enumerate() {
            if switch.network(port) == Some(index as u8) {
                let separator = if members.is_empty() { "" } else { ", " };
                if nic.uplink {
                    members.push_str(&alloc::format!("{separator}uplink '{}'", nic.name));
                } else {
                    members.push_str(&alloc::format!(
                        "{separator}'{}' {}",
                        nic.name,
                        MacText(mac_of(&nic.name))
                    ));
                }
            }
        }
        println!(
            "netbridge: network '{network}': {members} (generation {})",
            start.generation()
        );
    }

    let mut frame: Box<Frame> = Box::new(Frame {
        header: FrameHeader::default(),
        data: [0; net_api::DATA_BYTES],
    });
    let mut switched = 0u64;
    loop {
        let mut busy = false;
        for port in 0..nics.len() {
            // The time, read once per batch (a system call), when the
            // batch has a frame.
            let mut batch_time = None;
            for _ in 0..BATCH {
                match nics[port].from.try_receive_into(&mut frame) {
                    Ok(()) => {}
                    Err(QueueError::WouldBlock) => break,
                    // The switcher (or driver) restarted: its queue was
                    // reset; go on. A driver told to detach before its
                    // restart is told again.
                    Err(QueueError::PeerRestarted(_)) => {
                        nics[port].told = false;
                        continue;
                    }
                }
                busy = true;
                if frame.header.kind == net_api::KIND_DETACH {
                    nics[port].gone = true;
                    println!("netbridge: '{}' detached", nics[port].name);
                    switch.detach(port);
                    break;
                }
                if nics[port].gone {
                    // An uplink told to detach: nobody is left to take it.
                    continue;
                }
                let Some(length) = frame.header.valid_length() else {
                    switch.dropped(port);
                    continue;
                };
                let now = *batch_time.get_or_insert_with(syscall::time_ns);
                if !nics[port].limit.allow(now) {
                    switch.throttled(port);
                    let throttled = switch.counters(port).throttled;
                    if throttled % REPORT_EVERY == 1 {
                        println!(
                            "netbridge: '{}' sends more than {rate} frames a second: throttled, {throttled} dropped so far",
                            nics[port].name
                        );
                    }
                    continue;
                }
                let spoofed = switch.counters(port).spoofed;
                let out = switch.forward(port, &frame.data[..length], now);
                let spoofs = switch.counters(port).spoofed;
                if spoofs != spoofed && spoofs % REPORT_EVERY == 1 {
                    let mut source = [0u8; 6];
                    source.copy_from_slice(&frame.data[6..12]);
                    println!(
                        "netbridge: '{}' sent a frame from {}, not its own address: dropped, {spoofs} so far",
                        nics[port].name,
                        MacText(source)
                    );
                }
                for destination in out.iter() {
                    let nic = &mut nics[destination];
                    let length = frame.sent_bytes();
                    let sent = match nic.to.try_send_prefix(&frame, length) {
                        Err(QueueError::PeerRestarted(_)) => nic.to.try_send_prefix(&frame, length),
                        other => other,
                    };
                    if sent.is_err() {
                        switch.dropped(destination);
                        // Reported the first time and every REPORT_EVERY.
                        let drops = switch.counters(destination).dropped;
                        if drops % REPORT_EVERY == 1 {
                            println!(
                                "netbridge: '{}' takes frames more slowly than they come: its queue is full, {drops} dropped so far",
                                nic.name
                            );
                        }
                    }
                }
                switched += 1;
                if crash_after.is_some_and(|after| switched >= after) {
                    println!("netbridge: crashing after {switched} frames (crash_every)");
                    panic!("crash requested (crash_every)");
                }
            }
            // The destinations of this NIC's batch are woken now, once.
            notification::flush();
        }
        // Once every VM NIC has detached, each uplink's driver is told
        // to detach too (and again after a restart of it).
        if nics.iter().all(|nic| nic.uplink || nic.gone) {
            for nic in nics
                .iter_mut()
                .filter(|nic| nic.uplink && !nic.gone && !nic.told)
            {
                frame.header = FrameHeader::detach();
                let length = frame.sent_bytes();
                let sent = match nic.to.try_send_prefix(&frame, length) {
                    Err(QueueError::PeerRestarted(_)) => nic.to.try_send_prefix(&frame, length),
                    other => other,
                };
                if sent.is_ok() {
                    nic.told = true;
                    println!(
                        "netbridge: every VM NIC detached; detaching uplink '{}'",
                        nic.name
                    );
                } else {
                    busy = true;
                }
            }
            notification::flush();
        }
        if busy {
            continue;
        }
        if nics.iter().all(|nic| nic.gone) {
            report(&nics, &switch);
            return 0;
        }
        // Sleep until a NIC sends.
        let mut bits = 0u64;
        let mut waiting = true;
        for nic in nics.iter().filter(|nic| !nic.gone) {
            waiting &= nic.from.arm();
            bits |= 1 << nic.from.bit();
        }
        if waiting {
            notification::wait_for(bits, None);
        }
        for nic in &nics {
            nic.from.disarm();
        }
    }
}

/// The index of the network NIC `name` is on: the longest of `networks`
/// that, followed by '-', starts the name.
fn network_of(name: &str, networks: &[&str]) -> Option<usize> {
    networks
        .iter()
        .enumerate()
        .filter(|(_, network)| {
            name.strip_prefix(**network)
                .is_some_and(|rest| rest.starts_with('-') && rest.len() > 1)
        })
        .max_by_key(|(_, network)| network.len())
        .map(|(index, _)| index)
}

/// Each NIC's counters.
fn report(nics: &[Nic], switch: &Switch<ENTRIES>) {
    for (port, nic) in nics.iter().enumerate() {
        let counters = switch.counters(port);
        let filtered = if nic.uplink {
            alloc::format!(
                ", {} to no address of the network filtered",
                counters.filtered
            )
        } else {
            alloc::format!(", {} from another address refused", counters.spoofed)
        };
        println!(
            "netbridge: '{}': {} frames in, {} out ({} flooded), {} dropped, {} throttled{filtered}",
            nic.name,
            counters.received,
            counters.delivered,
            counters.flooded,
            counters.dropped,
            counters.throttled
        );
    }
}

/// splitmix64 of `seed`.
fn pseudo_random(seed: u32) -> u64 {
    let mut x = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
