//! virtio-net as the test VMs' own drivers set it up (`netcheck`,
//! `netflood`), on the transport of [`crate::virtio_pci`]: the device's
//! ids and feature bits, and finding the first NIC on bus 0 and setting
//! it up ([`open`], [`set_up`]) with a receive queue ([`RECEIVE`]) and a
//! transmit queue ([`TRANSMIT`]) in the DMA area, with or without MSI-X,
//! and its MAC address read (or made up). What a driver then does with
//! its queues (buffers, frames) stays in the test VM.

use core::fmt;

use virtio::DmaMemory;
use virtio::pci::{NO_VECTOR, common};
use virtio::queue::SplitQueue;

use crate::devices;
use crate::virtio_pci::{self, Dma, Function};

/// PCI device id of virtio-net, modern.
pub const DEVICE_ID_NET: u16 = 0x1041;
/// PCI device id of virtio-net, transitional (which also has the modern
/// interface, the one used).
pub const DEVICE_ID_NET_TRANSITIONAL: u16 = 0x1000;
/// The device's feature bit: its MAC address is in its configuration.
pub const VIRTIO_NET_F_MAC: u32 = 5;
/// The Ethernet broadcast address.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// The receive queue's index.
pub const RECEIVE: usize = 0;
/// The transmit queue's index.
pub const TRANSMIT: usize = 1;
/// The available ring's flag `VIRTQ_AVAIL_F_NO_INTERRUPT`: the driver
/// wants no interrupt for the queue's completions.
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// The first virtio-net function on bus 0 (modern 1af4:1041, or
/// transitional 1af4:1000): its device number.
pub fn find() -> Option<u8> {
    virtio_pci::functions(&[DEVICE_ID_NET, DEVICE_ID_NET_TRANSITIONAL]).next()
}

/// The interrupt vectors of a NIC set up with MSI-X.
#[derive(Clone, Copy, Debug)]
pub struct Vectors {
    /// Configuration changes.
    pub config: u8,
    /// The receive queue.
    pub receive: u8,
    /// The transmit queue.
    pub transmit: u8,
}

/// How [`set_up`] sets a NIC up (a test VM's constant).
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    /// Where in the DMA area (from its start) the receive and transmit
    /// queues go.
    pub queues_at: [u64; 2],
    /// The most descriptors a queue gets.
    pub queue_max: u16,
    /// Whether a device that offers no MAC address is refused (else
    /// [`set_up`] makes one up).
    pub mac_required: bool,
    /// MSI-X to this CPU's local APIC on these vectors, or `None`: no
    /// interrupts at all (no queue has an MSI-X entry).
    pub vectors: Option<Vectors>,
    /// Which queues (receive, transmit) say NO_INTERRUPT in their
    /// available ring.
    pub no_interrupt: [bool; 2],
}

/// A NIC [`set_up`] brought to DRIVER_OK.
pub struct Net {
    /// Its device number on bus 0 (function 0).
    pub device: u8,
    /// The DMA area, from its start: the queues are at
    /// [`Setup::queues_at`] in it.
    pub dma: Dma,
    /// Receive, transmit.
    pub queues: [SplitQueue; 2],
    /// The addresses to write to notify each queue.
    pub notify: [u64; 2],
    /// Its MAC address: the device's, or, if it offers none, one made up
    /// (locally administered, unicast, from the TSC and the device
    /// number).
    pub mac: [u8; 6],
    /// Whether `mac` was made up.
    pub mac_generated: bool,
}

/// The first virtio-net function on bus 0 ([`find`]), set up as `setup`
/// says ([`set_up`]). Fails the test (`no virtio-net function on bus 0`,
/// or `00:NN.0: <why>`) if there is none or it cannot be set up.
pub fn open(setup: &Setup) -> Net {
    let Some(device) = find() else {
        crate::fail(format_args!("no virtio-net function on bus 0"));
    };
    match set_up(device, setup) {
        Ok(net) => net,
        Err(why) => crate::fail(format_args!("00:{device:02x}.0: {why}")),
    }
}

/// Sets up the virtio-net function at bus 0 `device`: accepts VERSION_1
/// (required) and MAC (wanted; required with [`Setup::mac_required`]) and
/// nothing else, checks for two queues, routes MSI-X as
/// [`Setup::vectors`] says (entries 0, 1, 2 for the configuration,
/// receive and transmit; with fewer than three entries, both queues share
/// entry 0 and configuration changes go unsignalled), sets up both queues
/// (NO_INTERRUPT where [`Setup::no_interrupt`] says), sets DRIVER_OK and
/// reads the MAC address (or makes one up: see [`Net::mac`]).
pub fn set_up(device: u8, setup: &Setup) -> Result<Net, &'static str> {
    let function = Function::locate(device)?;
    let mac_feature = 1u64 << VIRTIO_NET_F_MAC;
    let accepted = function.negotiate(
        mac_feature,
        1 << virtio::VIRTIO_F_VERSION_1,
        "the device lacks VERSION_1",
    )?;
    let offers_mac = accepted & mac_feature != 0;
    if setup.mac_required && !offers_mac {
        return Err("the device offers no MAC address");
    }
    if devices::read16(function.register(common::NUM_QUEUES)) < 2 {
        return Err("the device has fewer than two queues");
    }
    let entries = match setup.vectors {
        Some(vectors) => route_msix(&function, vectors),
        None => [NO_VECTOR; 2],
    };

    let dma = Dma::from_offset(0);
    let mut queues: [Option<SplitQueue>; 2] = [None, None];
    let mut notify = [0u64; 2];
    for index in [RECEIVE, TRANSMIT] {
        let (queue, address) = function
            .set_up_queue(
                &dma,
                index as u16,
                setup.queues_at[index],
                setup.queue_max,
                entries[index],
            )
            .map_err(|error| error.why(false))?;
        notify[index] = address;
        queues[index] = Some(queue);
    }
    let [Some(rx), Some(tx)] = queues else {
        return Err("a queue was not set up");
    };
    for (index, queue) in [(RECEIVE, &rx), (TRANSMIT, &tx)] {
        if setup.no_interrupt[index] {
            dma.write16(
                setup.queues_at[index] + SplitQueue::layout(queue.size()).avail,
                AVAIL_F_NO_INTERRUPT,
            );
        }
    }
    function.driver_ok();
    let status = devices::read8(function.register(common::DEVICE_STATUS));
    if status & (virtio::status::NEEDS_RESET | virtio::status::FAILED) != 0 {
        return Err("the device needs a reset right after DRIVER_OK");
    }

    let mac = if offers_mac {
        read_mac(
            function.register(common::CONFIG_GENERATION),
            function.device_config,
        )
        .ok_or("the device configuration kept changing")?
    } else {
        // Locally administered, unicast, from the TSC and the slot.
        let seed = crate::rdtsc() ^ u64::from(device) << 40;
        let bytes = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes();
        [0x02, bytes[2], bytes[3], bytes[4], bytes[5], device]
    };
    Ok(Net {
        device,
        dma,
        queues: [rx, tx],
        notify,
        mac,
        mac_generated: !offers_mac,
    })
}

/// Routes MSI-X to this CPU's local APIC: entries 0, 1, 2 for the
/// configuration, receive and transmit, or, with fewer entries, entry 0
/// for both queues and none for the configuration. Returns the queues'
/// entries (receive, transmit).
fn route_msix(function: &Function, vectors: Vectors) -> [u16; 2] {
    if function.msix.table_size >= 3 {
        let entries = [1u16, 2];
        function.route_msix(
            &[
                (0, vectors.config),
                (entries[RECEIVE], vectors.receive),
                (entries[TRANSMIT], vectors.transmit),
            ],
            Some(0),
        );
        entries
    } else {
        let entries = [0u16, 0];
        function.route_msix(&[(entries[RECEIVE], vectors.receive)], None);
        entries
    }
}

/// Reads the MAC address from the device configuration, consistently
/// (the configuration generation unchanged across the read).
fn read_mac(generation_at: u64, device_at: u64) -> Option<[u8; 6]> {
    for _ in 0..16 {
        let before = devices::read8(generation_at);
        let mut mac = [0u8; 6];
        for (index, byte) in mac.iter_mut().enumerate() {
            *byte = devices::read8(device_at + index as u64);
        }
        if devices::read8(generation_at) == before {
            return Some(mac);
        }
    }
    None
}

/// A MAC address, printed `xx:xx:xx:xx:xx:xx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, f] = self.0;
        write!(formatter, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
    }
}
