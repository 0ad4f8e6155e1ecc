//! The virtio-blk driver: a ring-3 component that drives one virtio 1.x
//! block device on PCI (QEMU's `virtio-blk-pci`) and serves it to one
//! client over a queue pair (`block_api`).
//!
//! It is given its PCI function (`pci = { vendor = "0x1af4", device =
//! "0x1042", msi = 1 }`), one DMA buffer (`dma = [{ size = "128KiB" }]`)
//! and the queues `requests` (from the client) and `completions` (to it):
//! by default `dev-requests` / `dev-completions`, the block store's, when
//! the system gives those, else `requests` / `completions`.
//! At start it resets the device (its last life may have left it running
//! over this same buffer), negotiates features (virtio 1.x, flush), sets
//! up request queue 0 in the DMA buffer, programs MSI-X vector 0 with the
//! message the core gave it and says ready to the interrupt forwarder.
//! Then it only waits: a request from the client is put on the device's
//! queue at once (up to [`IN_FLIGHT`] at a time, each in its own slot of
//! the buffer, data copied in for a write), the device is notified once
//! per batch, and each interrupt completes every request the device
//! finished (data copied out for a read) before the line is acknowledged.
//! No polling. Without an MSI vector it falls back to INTx: `intx=N` names
//! the IOAPIC line the function's interrupt pin is wired to (granted with
//! `interrupts = [N]`; on QEMU's q35 the chipset wires pin A of slot s to
//! line 20 + s mod 4), and each interrupt reads the ISR status register,
//! which deasserts the level-triggered line.
//!
//! The device is trusted no further than the queue logic allows: a used
//! entry naming a chain not in flight, or claiming more bytes than its
//! buffers hold, stops the driver with a report (`virtio::queue`), and its
//! supervisor restarts it; the client sends again what was in flight.
//!
//! With `bench=1`, it prints at detach the mean of its own work per request
//! (a `BENCH` line: instructions under `-icount shift=0`).
//!
//! For fault-injection tests, `crash_after=N` makes its first life panic
//! at the first completion from the N-th on that leaves requests in
//! flight.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use block_api::{Completion, DATA_OFFSET, Operation, Request, Status as BlockStatus};
use runtime::arguments::OrExit;
use runtime::dma::Buffer;
use runtime::irq::Line;
use runtime::pci::Function;
use runtime::queue::{QueueError, Receiver, Sender};
use runtime::{notification, println, rdtsc};
use virtio::DmaMemory;
use virtio::blk::{self, RequestHeader};
use virtio::queue::Segment;
use virtio_driver::{Device, Dma, OpenError, Queue, Signal};

runtime::component!(main);

/// Requests on the device at once, each with its own slot in the buffer.
const IN_FLIGHT: usize = 16;
/// The device queue's size (descriptors): three per request.
const QUEUE_SIZE: u16 = 64;
/// Where things are in the DMA buffer: the queue, the request headers
/// (16 bytes each), the status bytes, the data (4 KiB each).
const QUEUE_AT: u64 = 0;
const HEADERS_AT: u64 = 0x4000;
const STATUS_AT: u64 = 0x4800;
const DATA_AT: u64 = 0x8000;
/// The DMA buffer this layout needs.
const DMA_BYTES: u64 = DATA_AT + IN_FLIGHT as u64 * block_api::BLOCK as u64;

/// A request on the device.
#[derive(Clone, Copy)]
struct Slot {
    id: u64,
    operation: Operation,
    sectors: u32,
    head: u16,
}

/// The device, set up.
struct Blk {
    device: Device,
    queue: Queue,
    capacity: u64,
    flush: bool,
}

fn main(start: &runtime::Start) -> i32 {
    let arguments = start
        .arguments(&["requests", "completions", "crash_after", "bench", "intx"])
        .or_exit();
    let bench = arguments.number::<u32>("bench", 0).or_exit() != 0;
    // Unless named, the pair the block store uses (`dev-requests` /
    // `dev-completions`) if the system gives it, else `requests` /
    // `completions`.
    let store_pair = start
        .resource(
            "dev-requests",
            runtime::abi::start::ResourceKind::QueueReceive,
        )
        .is_some();
    let (default_requests, default_completions) = if store_pair {
        ("dev-requests", "dev-completions")
    } else {
        ("requests", "completions")
    };
    let requests_name = arguments.text("requests").unwrap_or(default_requests);
    let completions_name = arguments.text("completions").unwrap_or(default_completions);
    let crash_after: Option<u64> = arguments
        .optional_number("crash_after")
        .or_exit()
        .filter(|_| start.generation() == 1);
    let Some(function) = Function::given(start) else {
        println!("virtio-blk: no PCI function was given (pci = {{ vendor = ..., device = ... }})");
        return 2;
    };
    let Some(buffer) = Buffer::granted(start, 0).filter(|b| b.size() >= DMA_BYTES) else {
        println!(
            "virtio-blk: needs a DMA buffer of at least {DMA_BYTES} bytes (dma = [{{ size = \"128KiB\" }}])"
        );
        return 2;
    };
    let dma = Dma(buffer);
    // MSI-X when the system gives a vector, else INTx on the line the
    // system file says the function's pin is wired to (`intx=N` with
    // `interrupts = [N]`).
    let intx: Option<u32> = arguments.optional_number("intx").or_exit();
    let Some(signal) = Signal::choose(&function, intx) else {
        println!(
            "virtio-blk: needs an MSI vector (pci = {{ ..., msi = 1 }}) or an INTx line (intx=N with interrupts = [N])"
        );
        return 2;
    };
    let line_number = signal.line();
    let line = match Line::find(start, line_number) {
        Ok(line) => line,
        Err(error) => {
            println!("virtio-blk: {error}");
            return 2;
        }
    };
    let mut requests = match Receiver::<Request>::open(start, requests_name) {
        Ok(queue) => queue,
        Err(error) => {
            println!("virtio-blk: cannot open the queue '{requests_name}': {error:?}");
            return 2;
        }
    };
    let mut completions = match Sender::<Completion>::open(start, completions_name) {
        Ok(queue) => queue,
        Err(error) => {
            println!("virtio-blk: cannot open the queue '{completions_name}': {error:?}");
            return 2;
        }
    };
    let mut device = match set_up(start, &function, &dma, signal) {
        Ok(device) => device,
        Err(why) => {
            println!("virtio-blk: {why}");
            return 1;
        }
    };
    let (bus, slot, number) = function.location();
    println!(
        "virtio-blk: {bus:02x}:{slot:02x}.{number} {:04x}:{:04x}, {} sectors ({} KiB){}, queue of {}, {} as line {line_number} (generation {})",
        function.vendor,
        function.device,
        device.capacity,
        device.capacity / 2,
        if device.flush { ", flush" } else { "" },
        device.queue.queue.size(),
        signal.describe(),
        start.generation()
    );
    line.ready();

    let mut slots: [Option<Slot>; IN_FLIGHT] = [None; IN_FLIGHT];
    let mut interrupts = 0u64;
    let mut completed = 0u64;
    let watched = line.bits | 1 << requests.bit();
    let mut request = Request::new(0, Operation::Read, 0, 0);
    let mut completion = Completion::new(0, BlockStatus::Ok);
    let mut detaching: Option<u64> = None;
    // The driver's own time per request: taking requests to notifying the
    // device, and the interrupt to the completions sent.
    let mut own_ticks = 0u64;
    loop {
        if let Some(id) = detaching.filter(|_| slots.iter().all(Option::is_none)) {
            device.device.reset();
            completion.id = id;
            completion.status = BlockStatus::Ok as u32;
            completion.value = interrupts;
            send(&mut completions, &completion, DATA_OFFSET);
            println!(
                "virtio-blk: the client detached after {completed} requests and {interrupts} interrupts; device reset"
            );
            if bench && completed > 0 {
                println!(
                    "BENCH block-driver-path {} instructions (the driver's own work per request, taking it to notifying the device plus the interrupt to its completion sent, 4 KiB copies included; mean of {completed} requests)",
                    own_ticks / completed
                );
            }
            return 0;
        }
        // Take requests while a slot is free; answer what needs no device.
        let taking = rdtsc();
        let mut added = false;
        while let Some(free) = slots
            .iter()
            .position(Option::is_none)
            .filter(|_| detaching.is_none())
        {
            match requests.try_receive_into(&mut request) {
                Ok(()) => {}
                Err(QueueError::WouldBlock) => break,
                // A restarted client resends what it misses.
                Err(QueueError::PeerRestarted(_)) => continue,
            }
            match submit(&mut device, &dma, free, &request) {
                Ok(Some(submitted)) => {
                    slots[free] = Some(submitted);
                    added = true;
                    // A client that keeps one request in flight (the
                    // block store) has none left at its completion: crash
                    // with this one on the device instead.
                    if crash_after.is_some_and(|after| completed >= after) {
                        device.device.notify(&device.queue);
                        println!(
                            "virtio-blk: crashing after {completed} completions with requests in flight (crash_after)"
                        );
                        panic!("crash requested (crash_after)");
                    }
                }
                Ok(None) if request.operation == Operation::Detach as u32 => {
                    detaching = Some(request.id);
                }
                Ok(None) => {
                    completion.id = request.id;
                    completion.status = BlockStatus::Ok as u32;
                    completion.sectors = completed.min(u64::from(u32::MAX)) as u32;
                    completion.value = match Operation::from_u32(request.operation) {
                        Some(Operation::Size) => device.capacity,
                        _ => interrupts,
                    };
                    send(&mut completions, &completion, DATA_OFFSET);
                }
                Err(status) => {
                    completion.id = request.id;
                    completion.status = status as u32;
                    completion.sectors = 0;
                    completion.value = 0;
                    send(&mut completions, &completion, DATA_OFFSET);
                }
            }
        }
        if added && device.queue.queue.device_wants_notification(&dma) {
            device.device.notify(&device.queue);
        }
        if added {
            own_ticks += rdtsc() - taking;
        }
        // Sleep only while no request waits (and with a free slot, ask to
        // be woken for the next one).
        let idle = slots.iter().all(Option::is_none);
        if detaching.is_some() && idle {
            continue;
        }
        let full = slots.iter().all(Option::is_some) || detaching.is_some();
        if !full && !requests.arm() {
            continue;
        }
        let bits = notification::wait_for(watched, None).unwrap_or(0);
        requests.disarm();
        if bits & line.bits == 0 {
            continue;
        }
        let woken = rdtsc();
        interrupts += 1;
        // On INTx, reading the ISR status deasserts the line; a read with
        // the queue bit clear is another device's interrupt on a shared
        // line.
        if !device.device.interrupt_is_ours() {
            line.acknowledge();
            continue;
        }
        loop {
            let used = match device.queue.queue.pop_used(&dma) {
                Ok(Some(used)) => used,
                Ok(None) => break,
                Err(error) => {
                    println!(
                        "virtio-blk: the device broke the queue protocol: {error:?}; stopping"
                    );
                    device.device.fail();
                    return 1;
                }
            };
            let Some(index) = slots
                .iter()
                .position(|slot| slot.is_some_and(|slot| slot.head == used.head))
            else {
                println!(
                    "virtio-blk: chain {} completed but no request holds it",
                    used.head
                );
                return 1;
            };
            let Some(done) = slots[index].take() else {
                continue;
            };
            complete(&dma, index, &done, used.length, &mut completion);
            let length = completion.sent_bytes(done.operation as u32);
            send(&mut completions, &completion, length);
            completed += 1;
            if crash_after.is_some_and(|after| completed >= after)
                && slots.iter().any(Option::is_some)
            {
                println!(
                    "virtio-blk: crashing after {completed} completions with requests in flight (crash_after)"
                );
                panic!("crash requested (crash_after)");
            }
        }
        line.acknowledge();
        own_ticks += rdtsc() - woken;
    }
}

/// Sets up the device: features, queue 0, its interrupt.
fn set_up(
    start: &runtime::Start,
    function: &Function,
    dma: &Dma,
    signal: Signal,
) -> Result<Blk, OpenError> {
    let version = 1u64 << virtio::VIRTIO_F_VERSION_1;
    let flush_bit = 1u64 << blk::VIRTIO_BLK_F_FLUSH;
    let device = Device::open(start, function, signal, flush_bit, version)?;
    let config = device.config.as_ref().ok_or(OpenError::Function(
        "the device configuration's BAR is not mapped",
    ))?;
    let capacity = u64::from(config.read32(blk::CONFIG_CAPACITY))
        | u64::from(config.read32(blk::CONFIG_CAPACITY + 4)) << 32;
    let queue = device.queue(dma, 0, QUEUE_AT, QUEUE_SIZE)?;
    device.ready();
    Ok(Blk {
        flush: device.features & flush_bit != 0,
        device,
        queue,
        capacity,
    })
}

/// Puts `request` on the device in slot `slot`; `Ok(None)` for one that
/// needs no device (size, counters), `Err` for one refused.
fn submit(
    device: &mut Blk,
    dma: &Dma,
    slot: usize,
    request: &Request,
) -> Result<Option<Slot>, BlockStatus> {
    let operation = Operation::from_u32(request.operation).ok_or(BlockStatus::Invalid)?;
    let bytes = request.bytes().ok_or(BlockStatus::Invalid)?;
    let header_at = HEADERS_AT + slot as u64 * 16;
    let status_at = STATUS_AT + slot as u64;
    let data_at = DATA_AT + slot as u64 * block_api::BLOCK as u64;
    let header = match operation {
        Operation::Size | Operation::Counters | Operation::Detach => return Ok(None),
        // The block store zeroes with writes; the device is not asked.
        Operation::Zero => return Err(BlockStatus::Unsupported),
        Operation::Flush if !device.flush => return Err(BlockStatus::Unsupported),
        Operation::Flush => RequestHeader::flush(),
        Operation::Read | Operation::Write => {
            blk::check_range(device.capacity, request.sector, bytes as u32)
                .map_err(|_| BlockStatus::Invalid)?;
            if operation == Operation::Read {
                RequestHeader::read(request.sector)
            } else {
                dma.0.write(data_at, &request.data[..bytes]);
                RequestHeader::write(request.sector)
            }
        }
    };
    header.write_to(dma, header_at);
    blk::prepare_status(dma, status_at);
    let data = (bytes > 0).then_some(Segment {
        physical: dma.physical(data_at),
        length: bytes as u32,
        device_writes: operation == Operation::Read,
    });
    let (segments, count) =
        blk::request_segments(dma.physical(header_at), data, dma.physical(status_at));
    let head = device
        .queue
        .queue
        .add(dma, &segments[..count])
        .map_err(|_| BlockStatus::IoError)?;
    Ok(Some(Slot {
        id: request.id,
        operation,
        sectors: request.sectors,
        head,
    }))
}

/// The completion of the request in slot `slot`, of whose buffers the
/// device says it wrote `written` bytes: a read that wrote less than its
/// data and status byte is an I/O error, not stale data.
fn complete(dma: &Dma, slot: usize, done: &Slot, written: u32, completion: &mut Completion) {
    completion.id = done.id;
    completion.sectors = done.sectors;
    completion.value = 0;
    let data = if done.operation == Operation::Read {
        done.sectors * block_api::SECTOR as u32
    } else {
        0
    };
    completion.status = match blk::read_status(dma, STATUS_AT + slot as u64) {
        _ if written < data + 1 => BlockStatus::IoError,
        blk::Status::Ok => BlockStatus::Ok,
        blk::Status::Unsupported => BlockStatus::Unsupported,
        _ => BlockStatus::IoError,
    } as u32;
    if done.operation == Operation::Read && completion.status == BlockStatus::Ok as u32 {
        let bytes = done.sectors as usize * block_api::SECTOR as usize;
        let data_at = DATA_AT + slot as u64 * block_api::BLOCK as u64;
        dma.0.read(data_at, &mut completion.data[..bytes]);
    }
}

/// Sends a completion's first `length` bytes (its header, and a read's
/// data), waiting for space; a restarted client is simply sent to anew
/// (it resends what it misses).
fn send(completions: &mut Sender<Completion>, completion: &Completion, length: usize) {
    loop {
        match completions.send_prefix(completion, length) {
            Err(QueueError::PeerRestarted(_)) => {}
            _ => return,
        }
    }
}
