//! The VM's NICs: for each queue pair `<nic>-tx` (to the network bridge)
//! and `<nic>-rx` (from it) the system gives this world switcher, the
//! guest sees a virtio-net PCI function ([`vm_platform::virtio_net`]) at
//! bus 0, device [`FIRST_SLOT`] + n, its registers in a 32 KiB BAR after
//! the disks' ([`BAR_BASE`]), interrupting through MSI-X or INTx on IOAPIC
//! pin [`FIRST_GSI`] + n. Its MAC address is derived from the NIC's name
//! (`net_api::mac_of`), as the system's listing shows it.
//!
//! A guest's transmit notify is one exit for however many frames it
//! queued: the switcher takes them all, copies each once from guest memory
//! straight into the bridge's queue slot, and completes them with one
//! interrupt. Frames from the bridge are copied once from the slot into
//! the guest's receive buffers; one interrupt covers every frame delivered
//! in one pass. A frame finds no room — the bridge's queue full, or the
//! guest without receive buffers until it posts more — and waits or is
//! dropped (counted), as on Ethernet; a hostile chain is refused with a
//! report and harms only its own frame. When the bridge restarts, its
//! queues reset and traffic resumes with the next frame.

use net_api::{DATA_OFFSET, Frame, FrameHeader, MacText, mac_of};
use runtime::queue::{InPlace, QueueError, Receiver, Sender};
use runtime::vm::GuestMemory;
use vm_platform::pci::{ConfigSpace, PciHost};
use vm_platform::virtio_net::{
    self, BAR_SIZE, HEADER_BYTES, RECEIVE, Refused, TRANSMIT, VirtioNet, Written,
};
use zerocopy::IntoBytes;

use crate::Loader;
use crate::function::{Intx, Placement, Registers, Service, open_pairs};

/// The most NICs one VM has.
pub const MAX_NICS: usize = 4;
/// The PCI device number of the first NIC.
pub const FIRST_SLOT: u8 = 8;
/// Where the first NIC's BAR starts: after the disks' BARs.
pub const BAR_BASE: u64 = crate::disk::BAR_BASE + crate::disk::MAX_DISKS as u64 * BAR_SIZE;
/// The IOAPIC pin of the first NIC's INTx (after the disks' pins).
pub const FIRST_GSI: u8 = crate::disk::FIRST_GSI + crate::disk::MAX_DISKS as u8;
/// The longest NIC name kept (queue names are at most 32 bytes).
const NAME_BYTES: usize = 32;

/// One NIC: the guest-side device and the bridge-side queues.
pub struct Nic {
    name: [u8; NAME_BYTES],
    name_length: usize,
    placement: Placement,
    device: VirtioNet,
    to_bridge: Sender<Frame>,
    from_bridge: Receiver<Frame>,
    intx: Intx,
    /// Frames sent to the bridge, delivered to the guest, and dropped
    /// (refused chains, a full bridge queue), for the report.
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
    /// Chains refused.
    refused: u64,
}

/// A refused chain is reported the first time and then every this many.
const REPORT_EVERY: u64 = 1000;

/// Fills `nics` with the NICs the start page gives; stops at
/// [`MAX_NICS`]. A pair without its other half is reported and skipped.
pub fn open_all(start: &runtime::Start, vm: &str, nics: &mut [Option<Nic>; MAX_NICS]) {
    let suffixes = ("-tx", "-rx");
    open_pairs(
        start,
        vm,
        "NIC",
        suffixes,
        MAX_NICS,
        |count, name, to_bridge: Sender<Frame>, from_bridge| {
            // One wake-up of the bridge per transmitted batch: the signal
            // is deferred and sent when the batch is in (`transmit`).
            let to_bridge = to_bridge.deferring();
            let mut stored = [0u8; NAME_BYTES];
            let name_length = name.len().min(NAME_BYTES);
            stored[..name_length].copy_from_slice(&name.as_bytes()[..name_length]);
            let nic = Nic {
                name: stored,
                name_length,
                placement: Placement::nth(count as u8, FIRST_SLOT, FIRST_GSI, BAR_BASE),
                device: VirtioNet::new(mac_of(name)),
                to_bridge,
                from_bridge,
                intx: Intx::new(FIRST_GSI + count as u8),
                sent: 0,
                delivered: 0,
                dropped: 0,
                refused: 0,
            };
            runtime::println!(
                "VM '{vm}': NIC '{name}' (MAC {}) at PCI 00:{:02x}.0",
                MacText(nic.device.mac()),
                nic.slot()
            );
            nics[count] = Some(nic);
            true
        },
    );
}

impl Nic {
    /// Its name (its queues' prefix).
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_length]).unwrap_or("?")
    }

    /// Its PCI device number.
    pub fn slot(&self) -> u8 {
        self.placement.slot
    }

    /// A new boot: the device reset, the function placed on `pci`.
    pub fn attach(&mut self, pci: &mut PciHost) -> bool {
        self.device = VirtioNet::new(self.device.mac());
        self.intx = Intx::new(self.placement.gsi);
        self.from_bridge.disarm();
        let config: ConfigSpace = virtio_net::config_space(self.placement.bar);
        self.placement.add(pci, config)
    }

    /// INTx's level when it changed.
    fn intx_service(&mut self) -> Service {
        self.intx.level(self.device.intx_asserted())
    }

    /// Completes a refused chain with nothing written, and reports it: the
    /// first, then every [`REPORT_EVERY`]th, so that a guest posting bad
    /// chains in a loop cannot flood the log.
    fn refuse(&mut self, loader: &mut Loader, refused: Refused) {
        self.refused += 1;
        if self.refused % REPORT_EVERY == 1 {
            runtime::println!(
                "NIC '{}': a {} chain refused: {} ({} refused so far)",
                self.name(),
                if refused.queue == TRANSMIT {
                    "transmit"
                } else {
                    "receive"
                },
                refused.why,
                self.refused
            );
        }
        self.dropped += 1;
        self.device.complete(refused.queue, loader, refused.head, 0);
    }

    /// Sends every frame the guest queued, each copied once into the
    /// bridge's queue; one interrupt for the batch.
    fn transmit(&mut self, memory: GuestMemory) -> Service {
        let mut loader = Loader(memory);
        let mut completed = false;
        while let Some(taken) = self.device.next_transmit(&loader) {
            let frame = match taken {
                Ok(frame) => frame,
                Err(refused) => {
                    self.refuse(&mut loader, refused);
                    completed = true;
                    continue;
                }
            };
            let header = FrameHeader::new(frame.length as usize);
            let fill = |slot: &mut runtime::queue::SlotWriter<'_>| {
                let mut ok = slot.put(0, header.as_bytes());
                let mut at = DATA_OFFSET;
                for (address, length) in frame.frame() {
                    ok &= slot.put_guest(at, &memory, address, length as usize);
                    at += length as usize;
                }
                ok
            };
            let sent = match self.to_bridge.try_send_in_place(fill) {
                // The bridge restarted (its queues reset): send again.
                Err(QueueError::PeerRestarted(_)) => self.to_bridge.try_send_in_place(fill),
                other => other,
            };
            match sent {
                Ok(()) => self.sent += 1,
                // The bridge's queue is full: dropped, as on a busy wire.
                Err(_) => self.dropped += 1,
            }
            completed |= self
                .device
                .complete(TRANSMIT, &mut loader, frame.buffers.head, 0);
        }
        // The bridge is woken once, for the whole batch.
        runtime::notification::flush();
        if completed {
            self.interrupt(TRANSMIT, memory)
        } else {
            Service::default()
        }
    }

    /// Whether frames from the bridge wait for the guest and it has
    /// buffers for them (so the vCPU must not sleep).
    pub fn has_frames(&self, memory: GuestMemory) -> bool {
        self.device.has_receive_buffers(&Loader(memory)) && !self.from_bridge.arm()
    }

    /// Delivers frames from the bridge into the guest's receive buffers
    /// while both last, each copied once; one interrupt for the batch.
    /// Without buffers the frames wait in the queue (and the bridge drops
    /// what no longer fits); the queue is armed only while the guest has
    /// buffers, so that the bridge's frames wake the switcher only then.
    pub fn deliver(&mut self, memory: GuestMemory) -> Service {
        let mut loader = Loader(memory);
        let mut completed = false;
        loop {
            if !self.device.has_receive_buffers(&loader) {
                self.from_bridge.disarm();
                break;
            }
            // The read takes a guest buffer and copies the frame into it;
            // the buffer is handed back after, filled only if the frame
            // proved whole.
            let device = &mut self.device;
            let taken = self.from_bridge.try_receive_in_place(|slot| {
                let header = slot.header::<FrameHeader>()?;
                let length = header.valid_length()?;
                let buffers = match device.next_receive(&loader)? {
                    Ok(buffers) => buffers,
                    Err(bad) => return Some(Err(bad)),
                };
                let mut ok = VirtioNet::write_receive_header(&mut loader, &buffers);
                let mut at = DATA_OFFSET;
                for (address, bytes) in buffers.pieces(HEADER_BYTES, length as u32) {
                    ok &= slot.to_guest(at, bytes as usize, &memory, address);
                    at += bytes as usize;
                }
                let written = if ok { HEADER_BYTES + length as u32 } else { 0 };
                Some(Ok((buffers.head, written)))
            });
            let frame = match taken {
                Ok(InPlace::Whole(frame)) => frame,
                // What a torn frame filled goes back empty: the frame is
                // lost, as frames may be.
                Ok(InPlace::Torn(frame)) => frame.map(|frame| frame.map(|(head, _)| (head, 0))),
                Err(QueueError::PeerRestarted(_)) => continue,
                Err(QueueError::WouldBlock) => {
                    // Nothing waits: ask the bridge to signal the next
                    // frame (and look again if one came meanwhile).
                    if self.from_bridge.arm() {
                        break;
                    }
                    continue;
                }
            };
            match frame {
                Some(Ok((head, written))) => {
                    completed |= self.device.complete(RECEIVE, &mut loader, head, written);
                    if written == 0 {
                        self.dropped += 1;
                    } else {
                        self.delivered += 1;
                    }
                }
                // The guest's buffer refused (counted dropped there).
                Some(Err(bad)) => {
                    self.refuse(&mut loader, bad);
                    completed = true;
                }
                // Malformed from the bridge: the frame is dropped.
                None => self.dropped += 1,
            }
        }
        if completed {
            self.interrupt(RECEIVE, memory)
        } else {
            self.intx_service()
        }
    }

    /// The switcher ends: the bridge is told the NIC is gone.
    pub fn detach(&mut self) {
        let header = FrameHeader::detach();
        for _ in 0..100 {
            match self
                .to_bridge
                .try_send_in_place(|slot| slot.put(0, header.as_bytes()))
            {
                Ok(()) => {
                    runtime::notification::flush();
                    return;
                }
                Err(_) => runtime::syscall::wait(Some(1000)),
            };
        }
    }

    /// The interrupt for `queue`'s completions just written.
    fn interrupt(&mut self, queue: u16, memory: GuestMemory) -> Service {
        let interrupt = self.device.interrupt(queue, &Loader(memory));
        self.intx.interrupt(interrupt, self.device.intx_asserted())
    }
}

impl Registers for Nic {
    fn placement(&self) -> Placement {
        self.placement
    }

    fn follow_config(&mut self, config: &ConfigSpace) {
        self.device.config_written(config);
    }

    fn read(&mut self, offset: u64, size: u8) -> (u64, Service) {
        let value = self.device.read(offset, size).unwrap_or(0);
        (value, self.intx_service())
    }

    /// A transmit notify sends the guest's frames; a receive notify (new
    /// buffers) delivers frames waiting for them.
    fn write(&mut self, offset: u64, size: u8, value: u64, memory: GuestMemory) -> Service {
        match self.device.write(offset, size, value) {
            Ok(Written::Notify(TRANSMIT)) => self.transmit(memory),
            Ok(Written::Notify(RECEIVE)) => self.deliver(memory),
            _ => self.intx_service(),
        }
    }
}
