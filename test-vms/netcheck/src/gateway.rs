//! The gateway mode (`ip=A.B.C.D gateway=E.F.G.H` on the multiboot
//! command line): instead of a peer VM, netcheck talks IPv4 to a gateway
//! on the outside of the network's uplink (QEMU's user-mode network
//! answers ARP and ICMP echo for its gateway, 10.0.2.2).
//!
//! 1. ARP: it broadcasts "who has the gateway? tell `ip`" every
//!    [`ARP_EVERY_MS`] until the gateway answers (at most
//!    [`super::DISCOVERY_MS`]); ARP requests for `ip` are answered
//!    throughout, as a host must for the gateway to reach it.
//! 2. It sends ICMP echo requests numbered 1..=`frames`, one at a time,
//!    with 18..=1472 bytes of data (the sequence number, then a pattern
//!    derived from it; lengths as [`super::payload_length`] scrambles
//!    them), IPv4 and ICMP checksums computed; each reply must come from
//!    the gateway's MAC and address, carry valid checksums and the same
//!    identifier, sequence and data byte for byte. A request with no
//!    reply within [`REPLY_TIMEOUT_MS`] is sent again (counted), for at
//!    most [`super::PING_GIVE_UP_MS`]; a reply to an older request is a
//!    duplicate and ignored (counted).
//!
//! Lines: `netcheck: gateway 10.0.2.2 is 52:55:0a:00:02:02 (after N ARP
//! requests)`, progress as in the peer mode, then `netcheck: gateway
//! 10.0.2.2 answered N echo requests intact (R resent, D duplicates
//! ignored, A ARP requests for us answered)`.

use super::*;

/// ARP requests for the gateway go out this often until it answers.
const ARP_EVERY_MS: u64 = 100;
/// A request with no reply within this is sent again (a restarted
/// uplink driver takes some milliseconds to set its card up again).
const REPLY_TIMEOUT_MS: u64 = 50;
/// Ethertypes.
const IPV4: u16 = 0x0800;
const ARP: u16 = 0x0806;
/// ARP opcodes.
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
/// Bytes of an ARP packet for IPv4 over Ethernet.
const ARP_BYTES: usize = 28;
/// Bytes of an IPv4 header without options, and of an ICMP echo header.
const IP_HEADER: usize = 20;
const ICMP_HEADER: usize = 8;
/// ICMP types.
const ECHO_REPLY: u8 = 0;
const ECHO_REQUEST: u8 = 8;
/// The identifier of our echo requests ("NC").
const IDENTIFIER: u16 = 0x4e43;
/// The most ICMP data in one unfragmented 1500-byte packet.
const MAX_DATA: usize = MAX_PAYLOAD - IP_HEADER - ICMP_HEADER;
/// The least: the sequence number (4 bytes) and some pattern.
const MIN_DATA: usize = 18;

/// An IPv4 address.
pub type Ip = [u8; 4];

/// Parses `A.B.C.D`.
pub fn parse_ip(text: &str) -> Option<Ip> {
    let mut ip = [0u8; 4];
    let mut parts = text.split('.');
    for byte in &mut ip {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *byte = part.parse().ok()?;
    }
    parts.next().is_none().then_some(ip)
}

/// An address as `A.B.C.D`.
pub struct IpText(pub Ip);

impl core::fmt::Display for IpText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

/// What the gateway mode counts.
#[derive(Default)]
struct Counts {
    resent: u32,
    duplicates: u32,
    arp_answered: u32,
}

/// Runs the gateway mode: `frames` echo requests to `gateway` from `ip`.
pub fn run(
    nic: &mut Nic,
    clock: &Clock,
    frame: &mut [u8; BUFFER as usize],
    (ip, gateway): (Ip, Ip),
    settings: &Settings,
) {
    let mut counts = Counts::default();
    let gateway_mac = resolve(nic, clock, frame, (ip, gateway), &mut counts);
    let mut sent = [0u8; BUFFER as usize];
    let frames = settings.frames;
    for sequence in 1..=frames {
        let length = echo_request(&mut sent, (nic.mac, gateway_mac), (ip, gateway), sequence);
        let first = rdtsc_ordered();
        let mut tries = 0u32;
        'resend: loop {
            if tries > 0 {
                counts.resent += 1;
                if rdtsc_ordered() - first >= clock.ms(PING_GIVE_UP_MS) {
                    fail(format_args!(
                        "no reply from {} to echo request {sequence} in {} s ({tries} tries)",
                        IpText(gateway),
                        PING_GIVE_UP_MS / 1000
                    ));
                }
            }
            nic.send(&sent[..NET_HEADER + length]);
            tries += 1;
            let deadline = rdtsc_ordered() + clock.ms(REPLY_TIMEOUT_MS);
            loop {
                let Some(got) = nic.receive(clock, deadline, frame) else {
                    continue 'resend;
                };
                let received = &frame[NET_HEADER..NET_HEADER + got];
                if answer_arp(nic, received, ip, &mut counts) {
                    continue;
                }
                let Some(reply) = echo_reply(received, (nic.mac, gateway_mac), (ip, gateway))
                else {
                    nic.ignored += 1;
                    continue;
                };
                let expected = sequence as u16;
                if reply.sequence != expected {
                    counts.duplicates += 1;
                    continue;
                }
                let request =
                    &sent[NET_HEADER + ETH + IP_HEADER + ICMP_HEADER..NET_HEADER + length];
                if reply.data != request {
                    let at = reply
                        .data
                        .iter()
                        .zip(request)
                        .position(|(a, b)| a != b)
                        .unwrap_or(request.len().min(reply.data.len()));
                    fail(format_args!(
                        "the reply to echo request {sequence} differs from it at data byte {at} ({} bytes back, {} sent)",
                        reply.data.len(),
                        request.len()
                    ));
                }
                break 'resend;
            }
        }
        if sequence.is_multiple_of(settings.progress()) {
            println!("netcheck: {sequence}/{frames} frames");
        }
    }
    println!(
        "netcheck: gateway {} answered {frames} echo requests intact ({} resent, {} duplicates ignored, {} ARP requests for us answered)",
        IpText(gateway),
        counts.resent,
        counts.duplicates,
        counts.arp_answered
    );
}

/// The gateway's MAC address, by ARP.
fn resolve(
    nic: &mut Nic,
    clock: &Clock,
    frame: &mut [u8; BUFFER as usize],
    (ip, gateway): (Ip, Ip),
    counts: &mut Counts,
) -> [u8; 6] {
    let mut request = [0u8; BUFFER as usize];
    let length = arp(
        &mut request,
        ARP_REQUEST,
        (nic.mac, BROADCAST),
        (ip, [0; 6], gateway),
    );
    let start = rdtsc_ordered();
    let mut asked = 0u32;
    loop {
        if rdtsc_ordered() - start >= clock.ms(DISCOVERY_MS) {
            fail(format_args!(
                "the gateway {} answered none of {asked} ARP requests in {} s",
                IpText(gateway),
                DISCOVERY_MS / 1000
            ));
        }
        nic.send(&request[..NET_HEADER + length]);
        asked += 1;
        let deadline = rdtsc_ordered() + clock.ms(ARP_EVERY_MS);
        while let Some(got) = nic.receive(clock, deadline, frame) {
            let received = &frame[NET_HEADER..NET_HEADER + got];
            if answer_arp(nic, received, ip, counts) {
                continue;
            }
            match parse_arp(received) {
                Some(packet)
                    if packet.operation == ARP_REPLY
                        && packet.sender_ip == gateway
                        && packet.target_ip == ip =>
                {
                    println!(
                        "netcheck: gateway {} is {} (after {asked} ARP requests)",
                        IpText(gateway),
                        Mac(packet.sender_mac)
                    );
                    return packet.sender_mac;
                }
                _ => nic.ignored += 1,
            }
        }
    }
}

/// An ARP packet's fields.
struct ArpPacket {
    operation: u16,
    sender_mac: [u8; 6],
    sender_ip: Ip,
    target_ip: Ip,
}

/// An ARP packet for IPv4 over Ethernet in `frame`, if it is one.
fn parse_arp(frame: &[u8]) -> Option<ArpPacket> {
    if frame.len() < ETH + ARP_BYTES || be16(&frame[12..]) != ARP {
        return None;
    }
    let arp = &frame[ETH..ETH + ARP_BYTES];
    // Ethernet, IPv4, 6-byte and 4-byte addresses.
    if be16(arp) != 1 || be16(&arp[2..]) != IPV4 || arp[4] != 6 || arp[5] != 4 {
        return None;
    }
    Some(ArpPacket {
        operation: be16(&arp[6..]),
        sender_mac: arp[8..14].try_into().ok()?,
        sender_ip: arp[14..18].try_into().ok()?,
        target_ip: arp[24..28].try_into().ok()?,
    })
}

/// Answers `frame` if it is an ARP request for `ip`; whether it was one.
fn answer_arp(nic: &mut Nic, frame: &[u8], ip: Ip, counts: &mut Counts) -> bool {
    let Some(packet) = parse_arp(frame).filter(|p| p.operation == ARP_REQUEST && p.target_ip == ip)
    else {
        return false;
    };
    let mut reply = [0u8; BUFFER as usize];
    let length = arp(
        &mut reply,
        ARP_REPLY,
        (nic.mac, packet.sender_mac),
        (ip, packet.sender_mac, packet.sender_ip),
    );
    nic.send(&reply[..NET_HEADER + length]);
    counts.arp_answered += 1;
    true
}

/// Writes an ARP packet (padded to the Ethernet minimum) behind a zero
/// virtio header: `operation` from `source` to `destination`, saying
/// `sender_ip` is `source`, about `target`. Its length without the header.
fn arp(
    buffer: &mut [u8; BUFFER as usize],
    operation: u16,
    (source, destination): ([u8; 6], [u8; 6]),
    (sender_ip, target_mac, target_ip): (Ip, [u8; 6], Ip),
) -> usize {
    let length = ETH + MIN_PAYLOAD;
    buffer[..NET_HEADER + length].fill(0);
    let frame = &mut buffer[NET_HEADER..NET_HEADER + length];
    frame[..6].copy_from_slice(&destination);
    frame[6..12].copy_from_slice(&source);
    frame[12..14].copy_from_slice(&ARP.to_be_bytes());
    let arp = &mut frame[ETH..ETH + ARP_BYTES];
    arp[..2].copy_from_slice(&1u16.to_be_bytes());
    arp[2..4].copy_from_slice(&IPV4.to_be_bytes());
    arp[4] = 6;
    arp[5] = 4;
    arp[6..8].copy_from_slice(&operation.to_be_bytes());
    arp[8..14].copy_from_slice(&source);
    arp[14..18].copy_from_slice(&sender_ip);
    arp[18..24].copy_from_slice(&target_mac);
    arp[24..28].copy_from_slice(&target_ip);
    length
}

/// The Internet checksum (RFC 1071) of `bytes`.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// ICMP data bytes of echo request `sequence`.
fn data_length(sequence: u32) -> usize {
    MIN_DATA
        + (payload_length(sequence) - MIN_PAYLOAD) * (MAX_DATA - MIN_DATA)
            / (MAX_PAYLOAD - MIN_PAYLOAD)
}

/// Writes echo request `sequence` behind a zero virtio header; its
/// length without the header.
fn echo_request(
    buffer: &mut [u8; BUFFER as usize],
    (source, destination): ([u8; 6], [u8; 6]),
    (from, to): (Ip, Ip),
    sequence: u32,
) -> usize {
    let data = data_length(sequence);
    let ip_length = IP_HEADER + ICMP_HEADER + data;
    buffer[..NET_HEADER].fill(0);
    let frame = &mut buffer[NET_HEADER..NET_HEADER + ETH + ip_length];
    frame[..6].copy_from_slice(&destination);
    frame[6..12].copy_from_slice(&source);
    frame[12..14].copy_from_slice(&IPV4.to_be_bytes());
    let ip = &mut frame[ETH..];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&(ip_length as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&(sequence as u16).to_be_bytes());
    // Don't fragment, TTL 64, ICMP.
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 1;
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&from);
    ip[16..20].copy_from_slice(&to);
    let sum = internet_checksum(&ip[..IP_HEADER]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let icmp = &mut ip[IP_HEADER..];
    icmp[0] = ECHO_REQUEST;
    icmp[1] = 0;
    icmp[2..4].fill(0);
    icmp[4..6].copy_from_slice(&IDENTIFIER.to_be_bytes());
    icmp[6..8].copy_from_slice(&(sequence as u16).to_be_bytes());
    icmp[ICMP_HEADER..ICMP_HEADER + 4].copy_from_slice(&sequence.to_be_bytes());
    for (index, byte) in icmp[ICMP_HEADER + 4..].iter_mut().enumerate() {
        *byte = pattern(sequence, index);
    }
    let sum = internet_checksum(icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    ETH + ip_length
}

/// An echo reply's sequence number and data.
struct Reply<'a> {
    sequence: u16,
    data: &'a [u8],
}

/// `frame` as an echo reply of ours from the gateway, checked: `None` if
/// it is something else. A frame that claims to be one but has a bad
/// checksum fails the test.
fn echo_reply<'a>(
    frame: &'a [u8],
    (ours, gateway_mac): ([u8; 6], [u8; 6]),
    (ip, gateway): (Ip, Ip),
) -> Option<Reply<'a>> {
    if frame.len() < ETH + IP_HEADER + ICMP_HEADER
        || frame[..6] != ours
        || frame[6..12] != gateway_mac
        || be16(&frame[12..]) != IPV4
    {
        return None;
    }
    let packet = &frame[ETH..];
    let header = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(be16(&packet[2..]));
    if packet[0] >> 4 != 4
        || header < IP_HEADER
        || total < header + ICMP_HEADER
        || total > packet.len()
        || packet[9] != 1
        || packet[12..16] != gateway
        || packet[16..20] != ip
    {
        return None;
    }
    let icmp = &packet[header..total];
    if icmp[0] != ECHO_REPLY || be16(&icmp[4..]) != IDENTIFIER {
        return None;
    }
    if internet_checksum(&packet[..header]) != 0 {
        fail(format_args!(
            "an echo reply with a bad IPv4 header checksum"
        ));
    }
    if internet_checksum(icmp) != 0 {
        fail(format_args!(
            "echo reply {} with a bad ICMP checksum",
            be16(&icmp[6..])
        ));
    }
    Some(Reply {
        sequence: be16(&icmp[6..]),
        data: &icmp[ICMP_HEADER..],
    })
}
