//! The network bridge's learning switch, one per system: ports (VMs' NICs,
//! an uplink) are each attached to one virtual network, and a frame is
//! only ever delivered to other ports of its ingress port's network.
//!
//! Each frame teaches the switch where its source address lives (a unicast
//! source, per network: the same address may live on two networks); a
//! unicast destination it knows goes to that one port (or nowhere, if that
//! is the ingress port); a group destination (broadcast, multicast) or an
//! unknown one is flooded to every other port of the network. Entries age
//! out after [`Switch::new`]'s ageing time unless seen again, and a full
//! table replaces its oldest entry, so a guest sending from ever-new
//! addresses can only churn the table, never block forwarding. Per-port
//! [`Counters`] say what went in and out.
//!
//! A VM NIC's own address can be pinned to its port ([`Switch::pin`]):
//! it never ages and is never replaced, and the port may then send with no
//! other source address (a frame that does is dropped and counted as
//! spoofed), so no guest can take another's traffic, nor an outside
//! address's. An uplink port ([`Switch::attach_uplink`]) is the outside
//! world: frames to a unicast address no port of the network has are
//! flooded when they come from a VM NIC (the address may be outside),
//! but not when they come from the uplink (it is someone else's, seen by
//! a card listening to the whole wire): they are counted as filtered.
//!
//! Invariants (property-tested): no frame goes back to its ingress port,
//! none leaves its network, and a learnt unicast address is delivered to
//! exactly the port it was learnt on.

use crate::{destination, is_group, source};

/// The most ports.
pub const MAX_PORTS: usize = 64;

/// A set of ports: bit `n` is port `n`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ports(pub u64);

impl Ports {
    pub const NONE: Self = Self(0);

    pub fn contains(self, port: usize) -> bool {
        port < MAX_PORTS && self.0 & (1 << port) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The ports, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_PORTS).filter(move |&port| self.contains(port))
    }
}

/// What went through one port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames the port sent into the switch.
    pub received: u64,
    /// Frames the switch gave the port to deliver.
    pub delivered: u64,
    /// Of those, frames that went to every port (group or unknown
    /// destination).
    pub flooded: u64,
    /// Frames that could not be delivered to the port (its queue full,
    /// its peer away) or that it sent malformed.
    pub dropped: u64,
    /// Frames the port sent over its rate limit, not switched.
    pub throttled: u64,
    /// Frames an uplink port sent to an address no port of its network
    /// has (not flooded).
    pub filtered: u64,
    /// Frames a port with a pinned address sent from another address
    /// (not switched).
    pub spoofed: u64,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    mac: [u8; 6],
    network: u8,
    port: u8,
    seen_ns: u64,
    /// A NIC's own address: never ages, never replaced, never moved.
    pinned: bool,
}

/// The switch, with a table of `ENTRIES` learnt addresses.
#[derive(Clone, Debug)]
pub struct Switch<const ENTRIES: usize> {
    /// Each port's network, if attached.
    networks: [Option<u8>; MAX_PORTS],
    /// Uplink ports.
    uplinks: Ports,
    /// Each port's pinned address: the only source it may send from.
    own: [Option<[u8; 6]>; MAX_PORTS],
    table: [Option<Entry>; ENTRIES],
    ageing_ns: u64,
    counters: [Counters; MAX_PORTS],
}

impl<const ENTRIES: usize> Switch<ENTRIES> {
    /// An empty switch whose entries live `ageing_ns` after last seen.
    pub const fn new(ageing_ns: u64) -> Self {
        Self {
            networks: [None; MAX_PORTS],
            uplinks: Ports::NONE,
            own: [None; MAX_PORTS],
            table: [None; ENTRIES],
            ageing_ns,
            counters: [Counters {
                received: 0,
                delivered: 0,
                flooded: 0,
                dropped: 0,
                throttled: 0,
                filtered: 0,
                spoofed: 0,
            }; MAX_PORTS],
        }
    }

    /// Attaches `port` to `network`; `false` if there is no such port.
    pub fn attach(&mut self, port: usize, network: u8) -> bool {
        let Some(slot) = self.networks.get_mut(port) else {
            return false;
        };
        *slot = Some(network);
        true
    }

    /// Attaches `port` to `network` as its uplink; `false` if there is no
    /// such port.
    pub fn attach_uplink(&mut self, port: usize, network: u8) -> bool {
        if !self.attach(port, network) {
            return false;
        }
        self.uplinks.0 |= 1 << port;
        true
    }

    /// Whether `port` is an uplink.
    pub fn is_uplink(&self, port: usize) -> bool {
        self.uplinks.contains(port)
    }

    /// Pins unicast `mac` to attached `port`, its NIC's own address and
    /// from then on the only source address it may send from; `false` if
    /// the port is not attached or is an uplink, already has an address,
    /// the address is a group one, another port has it pinned on the
    /// network, or the table has no room beside its pinned entries for
    /// one more.
    pub fn pin(&mut self, port: usize, mac: [u8; 6]) -> bool {
        let Some(network) = self.network(port) else {
            return false;
        };
        if is_group(&mac) || self.is_uplink(port) || self.own[port].is_some() {
            return false;
        }
        let existing = self
            .table
            .iter()
            .position(|entry| entry.is_some_and(|e| e.mac == mac && e.network == network));
        if let Some(slot) = existing {
            let entry = self.table[slot].as_mut().expect("found above");
            if entry.pinned && usize::from(entry.port) != port {
                return false;
            }
            entry.port = port as u8;
            entry.pinned = true;
            self.own[port] = Some(mac);
            return true;
        }
        let pinned = self.table.iter().flatten().filter(|e| e.pinned).count();
        if pinned + 1 >= ENTRIES {
            return false;
        }
        let slot = self
            .table
            .iter()
            .position(Option::is_none)
            .or_else(|| {
                (0..ENTRIES)
                    .filter(|&slot| self.table[slot].is_some_and(|e| !e.pinned))
                    .min_by_key(|&slot| self.table[slot].map_or(0, |e| e.seen_ns))
            })
            .expect("room counted above");
        self.table[slot] = Some(Entry {
            mac,
            network,
            port: port as u8,
            seen_ns: 0,
            pinned: true,
        });
        self.own[port] = Some(mac);
        true
    }

    /// Detaches `port` and forgets the addresses learnt or pinned on it.
    pub fn detach(&mut self, port: usize) {
        if let Some(slot) = self.networks.get_mut(port) {
            *slot = None;
        }
        if port < MAX_PORTS {
            self.uplinks.0 &= !(1 << port);
            self.own[port] = None;
        }
        for entry in self.table.iter_mut() {
            if entry.is_some_and(|entry| usize::from(entry.port) == port) {
                *entry = None;
            }
        }
    }

    /// `port`'s network, if attached.
    pub fn network(&self, port: usize) -> Option<u8> {
        self.networks.get(port).copied().flatten()
    }

    /// What went through `port`.
    pub fn counters(&self, port: usize) -> Counters {
        self.counters.get(port).copied().unwrap_or_default()
    }

    /// Counts a frame that could not be delivered to `port`, or that it
    /// sent malformed.
    pub fn dropped(&mut self, port: usize) {
        if let Some(counters) = self.counters.get_mut(port) {
            counters.dropped += 1;
        }
    }

    /// Counts a frame `port` sent over its rate limit (not switched).
    pub fn throttled(&mut self, port: usize) {
        if let Some(counters) = self.counters.get_mut(port) {
            counters.throttled += 1;
        }
    }

    /// The ports a frame from `port` goes to, learning its source. A frame
    /// shorter than an Ethernet header, or from a port not attached, goes
    /// nowhere.
    pub fn forward(&mut self, port: usize, frame: &[u8], now_ns: u64) -> Ports {
        let Some(network) = self.network(port) else {
            return Ports::NONE;
        };
        let (Some(to), Some(from)) = (destination(frame), source(frame)) else {
            self.dropped(port);
            return Ports::NONE;
        };
        if frame.len() < crate::MIN_FRAME {
            self.dropped(port);
            return Ports::NONE;
        }
        if self.own[port].is_some_and(|own| own != from) {
            self.counters[port].spoofed += 1;
            return Ports::NONE;
        }
        self.counters[port].received += 1;
        // Look up before learning, so that the source cannot evict the
        // destination from a full table.
        let known = (!is_group(&to))
            .then(|| self.find(to, network, now_ns))
            .flatten();
        if !is_group(&from) {
            self.learn(from, network, port as u8, now_ns);
        }
        let (ports, flooded) = match known {
            Some(out) if out == port => (Ports::NONE, false),
            Some(out) => (Ports(1 << out), false),
            // From the uplink, an unknown unicast address is someone
            // else's on the outside wire.
            None if !is_group(&to) && self.is_uplink(port) => {
                self.counters[port].filtered += 1;
                (Ports::NONE, false)
            }
            None => (self.members(network, port), true),
        };
        for out in ports.iter() {
            self.counters[out].delivered += 1;
            if flooded {
                self.counters[out].flooded += 1;
            }
        }
        ports
    }

    /// Every port of `network` but `except`.
    fn members(&self, network: u8, except: usize) -> Ports {
        let mut ports = 0u64;
        for (port, member) in self.networks.iter().enumerate() {
            if *member == Some(network) && port != except {
                ports |= 1 << port;
            }
        }
        Ports(ports)
    }

    fn alive(&self, entry: &Entry, now_ns: u64) -> bool {
        entry.pinned || now_ns.saturating_sub(entry.seen_ns) < self.ageing_ns
    }

    fn find(&self, mac: [u8; 6], network: u8, now_ns: u64) -> Option<usize> {
        self.table.iter().flatten().find_map(|entry| {
            (entry.mac == mac && entry.network == network && self.alive(entry, now_ns))
                .then_some(usize::from(entry.port))
        })
    }

    /// Records that `mac` lives behind `port` on `network`: its entry is
    /// updated (unless pinned), or takes a free or aged-out slot, or
    /// replaces the oldest unpinned one.
    fn learn(&mut self, mac: [u8; 6], network: u8, port: u8, now_ns: u64) {
        let learnt = Entry {
            mac,
            network,
            port,
            seen_ns: now_ns,
            pinned: false,
        };
        let existing = self
            .table
            .iter()
            .position(|entry| entry.is_some_and(|e| e.mac == mac && e.network == network));
        if existing.is_some_and(|slot| self.table[slot].is_some_and(|e| e.pinned)) {
            return;
        }
        let free = || {
            self.table
                .iter()
                .position(|entry| entry.is_none_or(|e| !self.alive(&e, now_ns)))
        };
        let oldest = || {
            (0..ENTRIES)
                .filter(|&slot| self.table[slot].is_none_or(|entry| !entry.pinned))
                .min_by_key(|&slot| self.table[slot].map_or(0, |entry| entry.seen_ns))
        };
        if let Some(slot) = existing.or_else(free).or_else(oldest) {
            self.table[slot] = Some(learnt);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;

    fn frame(to: [u8; 6], from: [u8; 6]) -> [u8; 60] {
        let mut frame = [0u8; 60];
        frame[..6].copy_from_slice(&to);
        frame[6..12].copy_from_slice(&from);
        frame
    }

    fn mac(n: u8) -> [u8; 6] {
        [0x02, 0, 0, 0, 0, n]
    }

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn it_floods_then_learns_and_keeps_networks_apart() {
        let mut switch = Switch::<8>::new(300 * SECOND);
        // Ports 0, 1, 2 on network 0; port 3 on network 1.
        for (port, network) in [(0, 0), (1, 0), (2, 0), (3, 1)] {
            assert!(switch.attach(port, network));
        }
        assert!(!switch.attach(MAX_PORTS, 0));
        // Unknown destination: every other port of the network.
        assert_eq!(switch.forward(0, &frame(mac(2), mac(1)), 0), Ports(0b110));
        // Known now: mac 1 lives behind port 0.
        assert_eq!(switch.forward(2, &frame(mac(1), mac(3)), 1), Ports(0b001));
        assert_eq!(switch.forward(1, &frame(mac(3), mac(2)), 2), Ports(0b100));
        // Broadcast floods; a frame to an address on its own port goes nowhere.
        assert_eq!(
            switch.forward(0, &frame(crate::BROADCAST, mac(1)), 3),
            Ports(0b110)
        );
        assert_eq!(switch.forward(0, &frame(mac(1), mac(1)), 4), Ports::NONE);
        // Network 1 never sees network 0's frames, nor knows its addresses.
        assert_eq!(switch.forward(3, &frame(mac(1), mac(9)), 5), Ports::NONE);
        assert_eq!(
            switch.forward(3, &frame(crate::BROADCAST, mac(9)), 6),
            Ports::NONE
        );
        // An address ages out and is flooded again.
        assert_eq!(
            switch.forward(1, &frame(mac(1), mac(2)), 4 + 300 * SECOND),
            Ports(0b101)
        );
        // A host that moves is learnt on its new port.
        switch.forward(2, &frame(crate::BROADCAST, mac(1)), 400 * SECOND);
        assert_eq!(
            switch.forward(0, &frame(mac(1), mac(5)), 401 * SECOND),
            Ports(0b100)
        );
        // Detaching forgets the port's addresses.
        switch.detach(2);
        assert_eq!(
            switch.forward(0, &frame(mac(1), mac(5)), 402 * SECOND),
            Ports(0b010)
        );
        // A runt is dropped and counted.
        assert_eq!(switch.forward(0, &[0u8; 13], 403 * SECOND), Ports::NONE);
        let counters = switch.counters(0);
        assert_eq!((counters.received, counters.dropped), (5, 1));
        assert_eq!(switch.counters(1).flooded, 4);
    }

    #[test]
    fn a_full_table_replaces_its_oldest_entry() {
        let mut switch = Switch::<2>::new(300 * SECOND);
        for port in 0..3 {
            switch.attach(port, 0);
        }
        switch.forward(0, &frame(crate::BROADCAST, mac(1)), 1);
        switch.forward(1, &frame(crate::BROADCAST, mac(2)), 2);
        switch.forward(2, &frame(crate::BROADCAST, mac(3)), 3);
        // mac 1 (oldest) was replaced; macs 2 and 3 are known.
        assert_eq!(switch.forward(2, &frame(mac(1), mac(3)), 4), Ports(0b011));
        assert_eq!(switch.forward(0, &frame(mac(2), mac(9)), 5), Ports(0b010));
        // ... until mac 9 took the oldest slot (mac 2's, seen at 2).
        assert_eq!(switch.forward(0, &frame(mac(2), mac(9)), 6), Ports(0b110));
    }

    #[test]
    fn a_pinned_address_stays_with_its_nic() {
        let mut switch = Switch::<4>::new(10);
        for port in 0..3 {
            switch.attach(port, 0);
        }
        assert!(switch.pin(0, mac(1)));
        assert!(!switch.pin(1, mac(1)), "another port's pinned address");
        assert!(!switch.pin(1, crate::BROADCAST), "a group address");
        assert!(!switch.pin(7, mac(7)), "a port not attached");
        // Known before port 0 ever sent, and long after the ageing time.
        assert_eq!(
            switch.forward(1, &frame(mac(1), mac(2)), 1_000),
            Ports(0b001)
        );
        // Port 2 sending as mac 1 does not take its traffic.
        assert_eq!(
            switch.forward(2, &frame(mac(2), mac(1)), 1_001),
            Ports(0b010)
        );
        assert_eq!(
            switch.forward(1, &frame(mac(1), mac(2)), 1_002),
            Ports(0b001)
        );
        // A full table replaces learnt entries, never the pinned one.
        for n in 10..20 {
            switch.forward(2, &frame(crate::BROADCAST, mac(n)), 1_004 + u64::from(n));
        }
        assert_eq!(
            switch.forward(1, &frame(mac(1), mac(2)), 1_100),
            Ports(0b001)
        );
        // Detaching the port forgets it.
        switch.detach(0);
        assert_eq!(
            switch.forward(1, &frame(mac(1), mac(2)), 1_101),
            Ports(0b100)
        );
    }

    #[test]
    fn the_uplink_floods_only_group_and_known_addresses() {
        let mut switch = Switch::<8>::new(300 * SECOND);
        switch.attach(0, 0);
        switch.attach(1, 0);
        assert!(switch.attach_uplink(2, 0));
        switch.attach(3, 1);
        assert!(switch.pin(0, mac(1)));
        assert!(switch.pin(1, mac(2)));
        // From the outside: to a member, to everyone, to someone else.
        assert_eq!(switch.forward(2, &frame(mac(1), mac(9)), 1), Ports(0b001));
        assert_eq!(
            switch.forward(2, &frame(crate::BROADCAST, mac(9)), 2),
            Ports(0b011)
        );
        assert_eq!(switch.forward(2, &frame(mac(8), mac(9)), 3), Ports::NONE);
        assert_eq!(switch.counters(2).filtered, 1);
        // From a member: an unknown address may be outside; a known
        // outside address goes out only.
        assert_eq!(switch.forward(0, &frame(mac(7), mac(1)), 4), Ports(0b110));
        assert_eq!(switch.forward(0, &frame(mac(9), mac(1)), 5), Ports(0b100));
        assert!(switch.is_uplink(2) && !switch.is_uplink(0));
        // No member can take an outside address over.
        assert_eq!(
            switch.forward(1, &frame(crate::BROADCAST, mac(9)), 6),
            Ports::NONE
        );
        assert_eq!(switch.counters(1).spoofed, 1);
        assert_eq!(switch.forward(0, &frame(mac(9), mac(1)), 7), Ports(0b100));
        assert!(
            !switch.pin(2, mac(3)),
            "an uplink has no address of its own"
        );
    }

    proptest! {
        /// Against a model: with room for every address (3 networks of 6),
        /// a unicast frame goes exactly where its destination was last
        /// seen within the ageing time (nowhere if that is its ingress),
        /// anything else to every other port of its network.
        #[test]
        fn frames_go_where_the_model_says_and_never_leave_their_network(
            networks in proptest::collection::vec(0u8..3, 2..10),
            frames in proptest::collection::vec((0usize..10, 0u8..6, 0u8..6, any::<bool>()), 1..200),
        ) {
            let mut switch = Switch::<18>::new(50);
            for (port, network) in networks.iter().enumerate() {
                switch.attach(port, *network);
            }
            let mut last: std::collections::HashMap<(u8, u8), (usize, u64)> = Default::default();
            for (now, (port, from, to, broadcast)) in frames.into_iter().enumerate() {
                let now = now as u64;
                let port = port % networks.len();
                let network = networks[port];
                let to_mac = if broadcast { crate::BROADCAST } else { mac(to) };
                let out = switch.forward(port, &frame(to_mac, mac(from)), now);
                let members = (0..networks.len())
                    .filter(|&p| networks[p] == network && p != port)
                    .fold(0u64, |set, p| set | 1 << p);
                let expected = match last.get(&(network, to)) {
                    Some(&(learnt, seen)) if !broadcast && now - seen < 50 => {
                        if learnt == port { Ports::NONE } else { Ports(1 << learnt) }
                    }
                    _ => Ports(members),
                };
                prop_assert_eq!(out, expected);
                prop_assert!(!out.contains(port), "back to its ingress port");
                for other in out.iter() {
                    prop_assert_eq!(networks.get(other).copied(), Some(network), "left its network");
                }
                last.insert((network, from), (port, now));
            }
        }
    }
}
