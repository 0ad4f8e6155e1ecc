//! The VM's disks: for each queue pair `<disk>-requests` (to the block
//! store) and `<disk>-completions` (back) the system gives this world
//! switcher, the guest sees a virtio-blk PCI function
//! ([`vm_platform::virtio_blk`]) at bus 0, device [`FIRST_SLOT`] + n, its
//! registers in a 32 KiB BAR from [`BAR_BASE`], interrupting through
//! MSI-X or INTx on IOAPIC pin [`FIRST_GSI`] + n (the function's interrupt
//! line register says which).
//!
//! A guest's notify is one exit: the switcher takes every request the
//! guest queued, cuts each into parts of at most 4 KiB
//! ([`vm_platform::disk_requests`]) and sends as many as the request queue
//! holds, the write data copied once, from guest memory straight into the
//! queue slot. Answers come back the same way (read data copied once, from
//! the slot into the guest's buffers); when all parts of a request have
//! answered it is completed in the used ring, and one interrupt covers
//! every request completed in one pass. The table of requests in flight
//! is the only record of them: when the store restarts (its queues reset),
//! every part without an answer is sent again, so the guest sees a delay
//! and never an error.
//!
//! The store answers only when it runs; its completions notify this
//! component, and the core pokes the vCPU of a switcher that is not
//! waiting, so they are taken at once rather than at the guest's next
//! exit.

use block_api::{
    Completion, CompletionHeader, DATA_OFFSET, Operation, Request, RequestHeader, SECTOR,
    SIZE_READ_ONLY, Status,
};
use runtime::queue::{InPlace, QueueError, Receiver, Sender};
use runtime::vm::GuestMemory;
use vm_platform::disk_requests::{PartKind, Requests};
use vm_platform::pci::{ConfigSpace, PciHost};
use vm_platform::virtio_blk::{
    self, GuestRequest, Kind, STATUS_IOERR, STATUS_OK, VirtioBlk, Written,
};
use zerocopy::IntoBytes;

use crate::Loader;
use crate::function::{Intx, Placement, Registers, Service, open_pairs};

/// The most disks one VM has.
pub const MAX_DISKS: usize = 4;
/// The PCI device number of the first disk.
pub const FIRST_SLOT: u8 = 3;
/// Where the first disk's BAR starts (below the IOAPIC; the next disk's
/// follows it).
pub const BAR_BASE: u64 = 0xfe00_0000;
/// The IOAPIC pin of the first disk's INTx.
pub const FIRST_GSI: u8 = 16;
/// Guest requests in flight per disk (the rest wait in the guest's ring).
const IN_FLIGHT: usize = 16;
/// The device id a guest reads (`GET_ID`): the disk's name, cut.
const ID_BYTES: usize = 20;

/// One disk: the guest-side device and the store-side queues.
pub struct Disk {
    name: [u8; ID_BYTES],
    placement: Placement,
    /// Sectors, as the store reported at start.
    capacity: u64,
    /// The store serves it read-only: the guest sees VIRTIO_BLK_F_RO.
    read_only: bool,
    device: VirtioBlk,
    requests: Sender<Request>,
    completions: Receiver<Completion>,
    table: Requests<IN_FLIGHT>,
    intx: Intx,
    /// Parts sent since start and store restarts seen (for the report).
    pub parts_sent: u64,
    pub store_restarts: u32,
}

/// Fills `disks` with the disks the start page gives, each asked for its
/// size (which waits for the store); stops at [`MAX_DISKS`]. A pair without its other half,
/// or a store that answers the size with an error, is reported and
/// skipped.
pub fn open_all(start: &runtime::Start, vm: &str, disks: &mut [Option<Disk>; MAX_DISKS]) {
    let suffixes = ("-requests", "-completions");
    open_pairs(
        start,
        vm,
        "disk",
        suffixes,
        MAX_DISKS,
        |count, name, requests, completions| {
            let mut id = [0u8; ID_BYTES];
            let cut = name.len().min(ID_BYTES);
            id[..cut].copy_from_slice(&name.as_bytes()[..cut]);
            let mut disk = Disk {
                name: id,
                placement: Placement::nth(count as u8, FIRST_SLOT, FIRST_GSI, BAR_BASE),
                capacity: 0,
                read_only: false,
                device: VirtioBlk::new(0),
                requests,
                completions,
                table: Requests::new(),
                intx: Intx::new(FIRST_GSI + count as u8),
                parts_sent: 0,
                store_restarts: 0,
            };
            let Some((sectors, read_only)) = disk.ask_size() else {
                runtime::println!(
                    "VM '{vm}': disk '{name}' not attached: the store did not give its size"
                );
                return false;
            };
            disk.capacity = sectors;
            disk.read_only = read_only;
            disk.device = disk.new_device();
            runtime::println!(
                "VM '{vm}': disk '{name}' ({} KiB{}) at PCI 00:{:02x}.0",
                sectors * SECTOR / 1024,
                if read_only { ", read-only" } else { "" },
                disk.slot()
            );
            disks[count] = Some(disk);
            true
        },
    );
}

impl Disk {
    /// Its PCI device number.
    pub fn slot(&self) -> u8 {
        self.placement.slot
    }

    /// Asks the store for the disk's size in sectors and whether it is
    /// read-only, waiting for the answer.
    fn ask_size(&mut self) -> Option<(u64, bool)> {
        self.call(Operation::Size)
            .map(|answer| (answer.value, answer.sectors & SIZE_READ_ONLY != 0))
    }

    /// The guest-side device, reset.
    fn new_device(&self) -> VirtioBlk {
        if self.read_only {
            VirtioBlk::new_read_only(self.capacity)
        } else {
            VirtioBlk::new(self.capacity)
        }
    }

    /// The guest is gone and this switcher ends: the store flushes the
    /// disk and lets it go. Whether it said the flush succeeded.
    pub fn detach(&mut self) -> bool {
        self.table.clear();
        self.call(Operation::Detach).is_some()
    }

    /// One request without data to the store, waiting for its answer
    /// (resending while the store restarts); the answer if it succeeded.
    /// Only outside the guest's requests: answers to those that arrive
    /// meanwhile are dropped.
    fn call(&mut self, operation: Operation) -> Option<CompletionHeader> {
        let id = u64::MAX - operation as u64;
        loop {
            let header = RequestHeader::new(id, operation, 0, 0);
            let header = |slot: &mut runtime::queue::SlotWriter<'_>| slot.put(0, header.as_bytes());
            match self.requests.try_send_in_place(header) {
                Ok(()) => {}
                Err(_) => {
                    runtime::syscall::wait(Some(1000));
                    continue;
                }
            }
            loop {
                let answer = self
                    .completions
                    .try_receive_in_place(|slot| slot.header::<CompletionHeader>());
                match answer {
                    Ok(InPlace::Whole(Some(answer))) if answer.id == id => {
                        return (answer.status == Status::Ok as u32).then_some(answer);
                    }
                    Ok(InPlace::Whole(_)) => {}
                    Err(QueueError::WouldBlock) => {
                        if self.completions.arm() {
                            runtime::notification::wait_for(1 << self.completions.bit(), None);
                        }
                        self.completions.disarm();
                    }
                    Ok(InPlace::Torn(_)) | Err(QueueError::PeerRestarted(_)) => break,
                }
            }
        }
    }

    /// A new boot: the device reset, requests forgotten, the function
    /// placed on `pci`.
    pub fn attach(&mut self, pci: &mut PciHost) -> bool {
        self.device = self.new_device();
        self.table.clear();
        self.intx = Intx::new(self.placement.gsi);
        let config: ConfigSpace = virtio_blk::config_space(self.placement.bar);
        self.placement.add(pci, config)
    }

    /// INTx's level when it changed.
    fn intx_service(&mut self) -> Service {
        self.intx.level(self.device.intx_asserted())
    }

    /// Takes the requests the guest queued (while the table has room),
    /// answers those the switcher answers itself (the id, refused chains)
    /// and sends parts of the rest.
    fn take_requests(&mut self, memory: GuestMemory) -> Service {
        let mut loader = Loader(memory);
        let mut completed = false;
        while self.table.has_room() {
            let Some(taken) = self.device.next_request(&loader) else {
                break;
            };
            match taken {
                Ok(request) if request.kind == Kind::GetId => {
                    let written = self.write_id(&request, memory);
                    let status = if written > 0 { STATUS_OK } else { STATUS_IOERR };
                    completed |= self.device.complete(
                        &mut loader,
                        request.head,
                        Some(request.status),
                        status,
                        written + 1,
                    );
                }
                Ok(request) => {
                    let _ = self.table.admit(request);
                }
                Err(refused) => {
                    completed |= self.device.complete(
                        &mut loader,
                        refused.head,
                        refused.status,
                        STATUS_IOERR,
                        u32::from(refused.status.is_some()),
                    );
                }
            }
        }
        self.send_parts(memory);
        if completed {
            self.interrupt(memory)
        } else {
            Service::default()
        }
    }

    /// The disk's name into a `GET_ID` buffer; bytes written.
    fn write_id(&self, request: &GuestRequest, memory: GuestMemory) -> u32 {
        let Some(segment) = request.segments[..request.count].first() else {
            return 0;
        };
        let length = (segment.length as usize).min(ID_BYTES);
        match memory.write(segment.address, &self.name[..length]) {
            Ok(()) => length as u32,
            Err(_) => 0,
        }
    }

    /// Sends parts while the request queue has room.
    fn send_parts(&mut self, memory: GuestMemory) {
        while let Some(part) = self.table.next_part() {
            let pieces = self
                .table
                .pieces(part.slot, part.offset, part.sectors * SECTOR as u32);
            let operation = match part.kind {
                PartKind::Read => Operation::Read,
                PartKind::Write => Operation::Write,
                PartKind::Flush => Operation::Flush,
                PartKind::Zero => Operation::Zero,
            };
            let fill = |slot: &mut runtime::queue::SlotWriter<'_>| {
                let header = RequestHeader::new(part.id, operation, part.sector, part.sectors);
                let mut ok = slot.put(0, header.as_bytes());
                if part.kind == PartKind::Write {
                    let mut at = DATA_OFFSET;
                    for piece in pieces.as_slice() {
                        ok &= slot.put_guest(at, &memory, piece.address, piece.length as usize);
                        at += piece.length as usize;
                    }
                }
                ok
            };
            match self.requests.try_send_in_place(fill) {
                Ok(()) => {
                    self.table.sent(&part);
                    self.parts_sent += 1;
                }
                Err(QueueError::PeerRestarted(_)) => self.store_restarted(),
                Err(QueueError::WouldBlock) => break,
            }
        }
        // Answers are wanted now: the store signals when one comes.
        if !self.table.is_empty() {
            self.completions.arm();
        } else {
            self.completions.disarm();
        }
    }

    /// The store restarted: whatever it had not answered goes again.
    fn store_restarted(&mut self) {
        self.store_restarts += 1;
        self.table.resend_all();
    }

    /// Whether answers wait in the completion queue (or the store
    /// restarted): then [`Disk::service`] has work.
    pub fn has_answers(&self) -> bool {
        !self.table.is_empty() && !self.completions.arm()
    }

    /// Takes every answer the store sent, completes the guest requests
    /// whose parts have all answered, sends more parts, and returns the
    /// interrupt for the batch.
    pub fn service(&mut self, memory: GuestMemory) -> Service {
        let mut loader = Loader(memory);
        let mut completed = false;
        loop {
            // The read copies a read's data to the guest; the part is
            // marked answered only once the message proved whole.
            let table = &self.table;
            let taken = self.completions.try_receive_in_place(|slot| {
                let header = slot.header::<CompletionHeader>()?;
                let (id, ok) = (header.id, header.status == Status::Ok as u32);
                let part = table.part(id)?;
                let mut copied = true;
                if ok && part.kind == PartKind::Read {
                    let pieces = table.pieces(part.slot, part.offset, part.sectors * SECTOR as u32);
                    let mut at = DATA_OFFSET;
                    for piece in pieces.as_slice() {
                        copied &= slot.to_guest(at, piece.length as usize, &memory, piece.address);
                        at += piece.length as usize;
                    }
                }
                Some((id, ok && copied))
            });
            match taken {
                Ok(InPlace::Whole(Some((id, ok)))) => {
                    if let Some(finished) = self.table.answered(id, ok) {
                        completed |= self.device.complete(
                            &mut loader,
                            finished.head,
                            Some(finished.status_address),
                            finished.status,
                            finished.written,
                        );
                    }
                }
                Ok(InPlace::Whole(None)) => {}
                // A torn answer may have left part of a read's data in the
                // guest's buffer, which the request resent overwrites
                // before the guest is told of it.
                Ok(InPlace::Torn(_)) | Err(QueueError::PeerRestarted(_)) => self.store_restarted(),
                Err(QueueError::WouldBlock) => break,
            }
        }
        // Room in the table and the queue: more of the guest's requests.
        let mut service = self.take_requests(memory);
        if completed && service.msi.is_none() {
            let batch = self.interrupt(memory);
            service.msi = batch.msi;
            service.intx = service.intx.or(batch.intx);
        }
        service
    }

    /// The interrupt for completions just written.
    fn interrupt(&mut self, memory: GuestMemory) -> Service {
        let interrupt = self.device.interrupt(&Loader(memory));
        self.intx.interrupt(interrupt, self.device.intx_asserted())
    }
}

impl Registers for Disk {
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

    /// A notify takes the guest's requests and sends them; a reset
    /// forgets them.
    fn write(&mut self, offset: u64, size: u8, value: u64, memory: GuestMemory) -> Service {
        match self.device.write(offset, size, value) {
            Ok(Written::Notify) => self.take_requests(memory),
            Ok(Written::Reset) => {
                self.table.clear();
                self.intx_service()
            }
            _ => self.intx_service(),
        }
    }
}
