//! The block store: a ring-3 component that owns a VMKFS file system on a
//! disk served by a block driver and serves its virtual disks to clients. Both sides speak `block_api` over queue pairs: `dev-requests` /
//! `dev-completions` to the driver, one pair from each client.
//!
//! At start it mounts the file system (replaying its journal, so a crash
//! at any point leaves every acknowledged write); with `format=1` a blank
//! disk (its first sector all zeros) is formatted first, never one that
//! holds anything. Each client is a queue pair `<disk>-requests` /
//! `<disk>-completions` (or `requests` / `completions` for the disk
//! `file=`; the system file's `[disks.NAME]` tables make these pairs and
//! say how each disk is opened in `disks=ITEM,...`: `NAME:BYTES`
//! exclusively, created with that size when it does not exist (without an
//! item: `size=` bytes); `NAME:ro` read-only and shared (its writes are
//! refused, and its size answer says so); `NAME:log` exclusively, a redo
//! log over its base that the build tool made (so the VM's writes land in
//! the log and the base stays as it was). It then serves reads, writes,
//! zeroing (a guest's discard or write-zeroes: the range is written with
//! zeros, so it reads back as zeros), flushes and the size, client after
//! client. A flush is acknowledged only
//! once the engine made every earlier write durable on the disk under it.
//!
//! Restart: the core resets the client's queues and the client sends again
//! what it has no completion for; the driver's queues are reset too, and
//! requests this store sent in its last life complete with ids its new life
//! ignores (each life numbers its requests from its generation).
//!
//! For fault-injection tests, `crash_after=N` makes its first life panic
//! once it has served N requests (in odd lives before the last one's
//! answer is sent, in even ones after); `crash_every=N crashes=K` makes each of its
//! first K lives panic after a pseudo-random number of served requests
//! from 1 to N (a different one each life, from its generation).
//!
//! **A deliberately broken store, for tests only**: `fixture=hold-write`
//! makes the store acknowledge each write as soon as it arrives but keep
//! the client's latest written block only in memory
//! (`workload_check::held::HeldWrite`), writing it to the disk when that
//! client's next write (or zeroing, or its detach) arrives; reads of it
//! are answered from memory and a flush is acknowledged without writing
//! it out. So it behaves correctly until it restarts: a crash (say, from
//! `crash_every=`) between a write's acknowledgement and the next write
//! loses an acknowledged, flushed write, which a campaign's disk workload
//! must report (`diskcheck` in campaign mode prints `CHECK disk LOST
//! ...`). It is a fixture to test such checks against (scenario
//! `guest-disk-hold-write-lost`); without the argument nothing of it runs.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use block_api::{BLOCK, Completion, DATA_OFFSET, Operation, Request, SECTOR, Status};
use runtime::abi::start::ResourceView;
use runtime::arguments::OrExit;
use runtime::queue::{QueueError, Receiver, Sender};
use runtime::{notification, println};
use vmkfs::{BlockDevice, DeviceError, FileHandle, FormatOptions, IoKind, OpenMode, Store};
use workload_check::held::HeldWrite;

runtime::component!(main);

/// The disk under the store: a block driver's client, one request at a
/// time.
struct DriverDisk {
    requests: Sender<Request>,
    completions: Receiver<Completion>,
    size: u64,
    next_id: u64,
    request: Box<Request>,
    completion: Box<Completion>,
    /// Device requests made for file data and for metadata (including
    /// the journal), for the report.
    data_ios: u64,
    metadata_ios: u64,
}

impl DriverDisk {
    fn open(start: &runtime::Start) -> Option<Self> {
        let mut disk = Self {
            requests: Sender::open(start, "dev-requests").ok()?,
            completions: Receiver::open(start, "dev-completions").ok()?,
            size: 0,
            next_id: u64::from(start.generation()) << 48,
            request: Box::new(Request::new(0, Operation::Size, 0, 0)),
            completion: Box::new(Completion::new(0, Status::Ok)),
            data_ios: 0,
            metadata_ios: 0,
        };
        disk.size = disk.call(Operation::Size, 0, 0).ok()? * SECTOR;
        Some(disk)
    }

    /// One request to the driver, resent while the driver restarts; the
    /// completion's value.
    fn call(
        &mut self,
        operation: Operation,
        sector: u64,
        sectors: u32,
    ) -> Result<u64, DeviceError> {
        self.next_id += 1;
        let id = self.next_id;
        self.request.id = id;
        self.request.operation = operation as u32;
        self.request.sector = sector;
        self.request.sectors = sectors;
        'send: loop {
            let length = self.request.sent_bytes();
            if self.requests.send_prefix(&self.request, length).is_err() {
                continue;
            }
            loop {
                match self.completions.receive_into(&mut self.completion) {
                    Ok(()) if self.completion.id == id => break 'send,
                    Ok(()) => {}
                    Err(QueueError::PeerRestarted(_)) | Err(QueueError::WouldBlock) => {
                        continue 'send;
                    }
                }
            }
        }
        if self.completion.status != Status::Ok as u32 {
            return Err(DeviceError::Media {
                offset: sector * SECTOR,
            });
        }
        Ok(self.completion.value)
    }
}

impl DriverDisk {
    /// Counts the device requests an engine I/O of `bytes` takes.
    fn count(&mut self, kind: IoKind, bytes: usize) {
        let requests = bytes.div_ceil(BLOCK) as u64;
        match kind {
            IoKind::Data => self.data_ios += requests,
            IoKind::Metadata | IoKind::Journal => self.metadata_ios += requests,
        }
    }
}

impl BlockDevice for DriverDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&mut self, offset: u64, buffer: &mut [u8], kind: IoKind) -> Result<(), DeviceError> {
        vmkfs::device::check_request(offset, buffer.len(), self.size)?;
        self.count(kind, buffer.len());
        for (index, chunk) in buffer.chunks_mut(BLOCK).enumerate() {
            let at = offset + (index * BLOCK) as u64;
            self.call(
                Operation::Read,
                at / SECTOR,
                (chunk.len() as u64 / SECTOR) as u32,
            )?;
            chunk.copy_from_slice(&self.completion.data[..chunk.len()]);
        }
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8], kind: IoKind) -> Result<(), DeviceError> {
        vmkfs::device::check_request(offset, data.len(), self.size)?;
        self.count(kind, data.len());
        for (index, chunk) in data.chunks(BLOCK).enumerate() {
            let at = offset + (index * BLOCK) as u64;
            self.request.data[..chunk.len()].copy_from_slice(chunk);
            self.call(
                Operation::Write,
                at / SECTOR,
                (chunk.len() as u64 / SECTOR) as u32,
            )?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.call(Operation::Flush, 0, 0).map(|_| ())
    }
}

fn main(start: &runtime::Start) -> i32 {
    let arguments = start
        .arguments(&[
            "file",
            "size",
            "format",
            "crash_after",
            "crash_every",
            "crashes",
            "disks",
            "fixture",
        ])
        .or_exit();
    // `disks=ITEM,...` (what the system's [disks.NAME] tables say): how
    // each client's disk is opened.
    let mut declared: Vec<(&str, Declared)> = Vec::new();
    for item in arguments
        .text("disks")
        .unwrap_or("")
        .split(',')
        .filter(|item| !item.is_empty())
    {
        match item
            .split_once(':')
            .and_then(|(name, what)| Some((name, Declared::parse(what)?)))
        {
            Some((name, what)) if !name.is_empty() => declared.push((name, what)),
            _ => {
                println!(
                    "block-store: bad disks= item '{item}' (NAME:BYTES, a multiple of 512; NAME:ro; NAME:log)"
                );
                return 2;
            }
        }
    }
    let name = arguments.text("file").unwrap_or("disk0");
    let size: u64 = arguments.number("size", 4 << 20).or_exit();
    let format = arguments.number::<u32>("format", 0).or_exit() != 0;
    let crash_every: Option<u64> = arguments.optional_number("crash_every").or_exit();
    let crashes: u32 = arguments.number("crashes", 0).or_exit();
    // The deliberately broken store (see the module's documentation).
    let hold_writes = match arguments.text("fixture") {
        None => false,
        Some("hold-write") => true,
        Some(other) => {
            println!(
                "block-store: unknown fixture '{other}' (fixture=hold-write, a broken store for tests)"
            );
            return 2;
        }
    };
    let crash_after: Option<u64> = match crash_every {
        Some(every) if every > 0 && start.generation() <= crashes => {
            // splitmix64 of the generation: a different point each life.
            let mut x = u64::from(start.generation()).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            Some((x ^ (x >> 31)) % every + 1)
        }
        _ => arguments
            .optional_number("crash_after")
            .or_exit()
            .filter(|_| start.generation() == 1),
    };
    let Some(disk) = DriverDisk::open(start) else {
        println!(
            "block-store: needs the queues 'dev-requests' and 'dev-completions' to a block driver"
        );
        return 2;
    };
    let disk_bytes = disk.size;
    let mut store = match Store::mount(vec![disk]) {
        Ok(store) => store,
        Err(error) => {
            let Some(mut blank) = DriverDisk::open(start) else {
                return 1;
            };
            let mut first = [0u8; 512];
            let is_blank = blank.read(0, &mut first, IoKind::Data).is_ok()
                && first.iter().all(|byte| *byte == 0);
            if !(format && is_blank) {
                println!("block-store: the disk does not mount: {error:?}");
                return 1;
            }
            let options = FormatOptions {
                block_size: 64 << 10,
                ..FormatOptions::default()
            };
            match Store::format(vec![blank], &options) {
                Ok(store) => {
                    println!(
                        "block-store: formatted the blank disk ({} KiB)",
                        disk_bytes >> 10
                    );
                    store
                }
                Err(error) => {
                    println!("block-store: formatting the blank disk failed: {error:?}");
                    return 1;
                }
            }
        }
    };
    // The clients: each queue pair `<disk>-requests` / `<disk>-completions`
    // serves the virtual disk `<disk>` (the pair `requests` / `completions`
    // serves `file=`).
    let mut clients: Vec<Client> = Vec::new();
    for (queue, view) in start.views() {
        let ResourceView::QueueReceive(_) = view else {
            continue;
        };
        let (disk, answers) = match queue.strip_suffix("-requests") {
            Some(disk) => (disk, format!("{disk}-completions")),
            None if queue == "requests" => (name, String::from("completions")),
            None => continue,
        };
        let (Ok(requests), Ok(completions)) = (
            Receiver::<Request>::open(start, queue),
            Sender::<Completion>::open(start, &answers),
        ) else {
            println!("block-store: the queue '{queue}' comes without '{answers}'");
            return 2;
        };
        let what = declared
            .iter()
            .find(|(name, _)| *name == disk)
            .map_or(Declared::Disk(size), |(_, what)| *what);
        let handle = match open_client_disk(&mut store, disk, what) {
            Ok(handle) => handle,
            Err(why) => {
                println!("block-store: '{disk}': {why}");
                return 1;
            }
        };
        clients.push(Client {
            disk: String::from(disk),
            length: store.length(handle).unwrap_or(0),
            read_only: what == Declared::ReadOnly,
            handle,
            requests,
            completions,
            detached: false,
            held: hold_writes.then(|| Box::new(HeldWrite::new())),
        });
    }
    if clients.is_empty() {
        println!("block-store: no client queues ('<disk>-requests' and '<disk>-completions')");
        return 2;
    }
    let mut listed = String::new();
    for client in &clients {
        let separator = if listed.is_empty() { "" } else { ", " };
        let parent = store.stat(&client.disk).ok().and_then(|info| info.parent);
        listed.push_str(&format!(
            "{separator}'{}' ({} KiB{}{})",
            client.disk,
            client.length >> 10,
            if client.read_only { ", read-only" } else { "" },
            match &parent {
                Some(base) => format!(", a redo log over '{base}'"),
                None => String::new(),
            }
        ));
    }
    println!(
        "block-store: mounted ({} KiB disk); serving {listed} (generation {})",
        disk_bytes >> 10,
        start.generation()
    );
    if hold_writes {
        println!(
            "block-store: fixture=hold-write: deliberately broken for tests, each client's last write held in memory until its next"
        );
    }
    let mut request = Box::new(Request::new(0, Operation::Read, 0, 0));
    let mut completion = Box::new(Completion::new(0, Status::Ok));
    let mut served = 0u64;
    // Device I/O from here on is the clients' (metadata I/O while serving
    // data should be none: the disks' blocks are all allocated).
    let (data_start, metadata_start) = {
        let device = &store.devices()[0];
        (device.data_ios, device.metadata_ios)
    };
    loop {
        // Every request that waits, client by client.
        let mut busy = false;
        for client in clients.iter_mut().filter(|client| !client.detached) {
            while client.requests.try_receive_into(&mut request).is_ok() {
                busy = true;
                serve(&mut store, client, &request, &mut completion);
                if request.operation == Operation::Detach as u32 {
                    client.detached = true;
                    let flushed = store.flush();
                    completion.status = if flushed.is_ok() {
                        Status::Ok
                    } else {
                        Status::IoError
                    } as u32;
                    let _ = client.completions.send_prefix(&completion, DATA_OFFSET);
                    println!("block-store: '{}' detached", client.disk);
                    break;
                }
                served += 1;
                // A crash point: after serving the request; in odd lives
                // before its answer is sent (the client must resend it),
                // in even ones after.
                let crash = crash_after.is_some_and(|after| served >= after);
                if crash && start.generation() % 2 == 1 {
                    println!(
                        "block-store: crashing after serving {served} requests, the last unanswered (crash_after)"
                    );
                    panic!("crash requested (crash_after)");
                }
                let length = completion.sent_bytes(request.operation);
                while let Err(QueueError::PeerRestarted(_)) =
                    client.completions.send_prefix(&completion, length)
                {}
                if crash {
                    println!("block-store: crashing after {served} requests (crash_after)");
                    panic!("crash requested (crash_after)");
                }
            }
        }
        if clients.iter().all(|client| client.detached) {
            // Every client is done: durable, then the driver lets the
            // device go too.
            let flushed = store.flush();
            let _ = store.devices_mut()[0].call(Operation::Detach, 0, 0);
            let device = &store.devices()[0];
            println!(
                "block-store: every client detached after {served} requests ({} data and {} metadata device requests while serving){}",
                device.data_ios - data_start,
                device.metadata_ios - metadata_start,
                if flushed.is_ok() {
                    ""
                } else {
                    "; the last flush failed"
                }
            );
            return i32::from(flushed.is_err());
        }
        if busy {
            continue;
        }
        // Sleep until a client sends (asking each to signal).
        let mut bits = 0u64;
        let mut waiting = true;
        for client in clients.iter().filter(|client| !client.detached) {
            waiting &= client.requests.arm();
            bits |= 1 << client.requests.bit();
        }
        if waiting {
            notification::wait_for(bits, None);
        }
        for client in &clients {
            client.requests.disarm();
        }
    }
}

/// How the system file says a client's disk is opened (`disks=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Declared {
    /// `NAME:BYTES`: exclusively, created with this size if missing.
    Disk(u64),
    /// `NAME:ro`: read-only, shared; it must exist.
    ReadOnly,
    /// `NAME:log`: a redo log over its base, exclusively; it must exist.
    RedoLog,
}

impl Declared {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "ro" => Some(Self::ReadOnly),
            "log" => Some(Self::RedoLog),
            bytes => match bytes.parse::<u64>() {
                Ok(bytes) if bytes > 0 && bytes % SECTOR == 0 => Some(Self::Disk(bytes)),
                _ => None,
            },
        }
    }
}

/// Opens a client's disk as the system file declares it, creating a
/// plain disk that is missing; what is wrong otherwise.
fn open_client_disk(
    store: &mut Store<DriverDisk>,
    disk: &str,
    what: Declared,
) -> Result<FileHandle, String> {
    let found = store.stat(disk);
    match (what, &found) {
        (Declared::Disk(size), Err(_)) => store
            .create(disk, size)
            .and_then(|()| store.flush())
            .map_err(|error| format!("creating it failed: {error}"))?,
        (_, Err(_)) => return Err(String::from("not in the file system")),
        (Declared::RedoLog, Ok(info)) if info.parent.is_none() => {
            return Err(String::from("declared a redo log, but it is a disk"));
        }
        _ => {}
    }
    let mode = match what {
        Declared::ReadOnly => OpenMode::ReadOnly,
        Declared::Disk(_) | Declared::RedoLog => OpenMode::ReadWrite,
    };
    store
        .open(disk, mode)
        .map_err(|error| format!("opening it failed: {error}"))
}

/// One client and the virtual disk it is served.
struct Client {
    disk: String,
    handle: FileHandle,
    length: u64,
    /// Opened shared, read-only: writes are refused.
    read_only: bool,
    requests: Receiver<Request>,
    completions: Sender<Completion>,
    detached: bool,
    /// `fixture=hold-write` only: the client's last write, acknowledged
    /// but not yet on the disk.
    held: Option<Box<HeldWrite>>,
}

/// `fixture=hold-write`: writes the client's held write (if any) to the
/// disk.
fn write_held(
    store: &mut Store<DriverDisk>,
    handle: FileHandle,
    held: &mut Option<Box<HeldWrite>>,
) -> Result<(), vmkfs::StoreError> {
    match held.as_mut().and_then(|held| held.take()) {
        Some((offset, data)) => store
            .write(handle, offset, data)
            .and_then(|()| durable(store)),
        None => Ok(()),
    }
}

/// Makes a write's metadata durable before it is acknowledged: a write
/// into a redo log that allocated a block changed the log's pointers only
/// in RAM, and the client forgets a write once it is answered, so a crash
/// before the next flush would lose it. (A disk's writes change no
/// metadata: this does nothing for them.)
fn durable(store: &mut Store<DriverDisk>) -> Result<(), vmkfs::StoreError> {
    if store.has_unflushed_metadata() {
        store.flush()
    } else {
        Ok(())
    }
}

/// Writes zeros over `bytes` bytes at `offset` of an open disk (a guest's
/// discard or write-zeroes), a block of [`BLOCK`] bytes at a time: on a
/// disk the bytes go straight to the device; on a redo log, blocks not yet
/// in the log are allocated as by any write.
fn zero(
    store: &mut Store<DriverDisk>,
    handle: FileHandle,
    offset: u64,
    bytes: u64,
) -> Result<(), vmkfs::StoreError> {
    const ZEROS: [u8; BLOCK] = [0; BLOCK];
    let mut at = 0;
    while at < bytes {
        let step = (bytes - at).min(BLOCK as u64) as usize;
        store.write(handle, offset + at, &ZEROS[..step])?;
        at += step as u64;
    }
    Ok(())
}

/// Serves one request from `client`'s virtual disk.
fn serve(
    store: &mut Store<DriverDisk>,
    client: &mut Client,
    request: &Request,
    completion: &mut Completion,
) {
    let (handle, length) = (client.handle, client.length);
    completion.id = request.id;
    completion.sectors = request.sectors;
    completion.value = 0;
    let status = match (Operation::from_u32(request.operation), request.bytes()) {
        (Some(operation @ (Operation::Read | Operation::Write)), Some(bytes)) => {
            let offset = request.sector.saturating_mul(SECTOR);
            let done = if operation == Operation::Read {
                let done = store.read(handle, offset, &mut completion.data[..bytes]);
                if let (Ok(()), Some(held)) = (&done, &client.held) {
                    held.overlay(offset, &mut completion.data[..bytes]);
                }
                done
            } else if client.read_only {
                completion.status = Status::ReadOnly as u32;
                return;
            } else if client.held.is_some() {
                // The fixture: the last write goes to the disk now, this
                // one is only held (and acknowledged).
                write_held(store, handle, &mut client.held).and_then(|()| {
                    match client.held.as_mut() {
                        Some(held) if offset.saturating_add(bytes as u64) <= length => {
                            held.hold(offset, &request.data[..bytes]);
                            Ok(())
                        }
                        // Beyond the disk: the engine refuses it as ever.
                        _ => store.write(handle, offset, &request.data[..bytes]),
                    }
                })
            } else {
                store
                    .write(handle, offset, &request.data[..bytes])
                    .and_then(|()| durable(store))
            };
            match done {
                Ok(()) => Status::Ok,
                Err(_) if offset.saturating_add(bytes as u64) > length => Status::Invalid,
                Err(_) => Status::IoError,
            }
        }
        (Some(Operation::Zero), _) if client.read_only => Status::ReadOnly,
        (Some(Operation::Zero), _) => {
            let offset = request.sector.saturating_mul(SECTOR);
            let bytes = u64::from(request.sectors) * SECTOR;
            if request.sectors == 0
                || request.sectors > block_api::MAX_ZERO_SECTORS
                || offset.saturating_add(bytes) > length
            {
                Status::Invalid
            } else {
                match write_held(store, handle, &mut client.held)
                    .and_then(|()| zero(store, handle, offset, bytes))
                    .and_then(|()| durable(store))
                {
                    Ok(()) => Status::Ok,
                    Err(_) => Status::IoError,
                }
            }
        }
        (Some(Operation::Flush), _) if client.read_only => Status::Ok,
        (Some(Operation::Flush), _) => match store.flush() {
            Ok(()) => Status::Ok,
            Err(_) => Status::IoError,
        },
        (Some(Operation::Size), _) => {
            completion.value = length / SECTOR;
            completion.sectors = if client.read_only {
                block_api::SIZE_READ_ONLY
            } else {
                0
            };
            Status::Ok
        }
        // The driver's counters: the interrupts under this disk.
        (Some(Operation::Counters), _) => {
            match store.devices_mut()[0].call(Operation::Counters, 0, 0) {
                Ok(interrupts) => {
                    completion.value = interrupts;
                    Status::Ok
                }
                Err(_) => Status::IoError,
            }
        }
        // The fixture's held write goes to the disk before the store's
        // flush at detach.
        (Some(Operation::Detach), _) => match write_held(store, handle, &mut client.held) {
            Ok(()) => Status::Ok,
            Err(_) => Status::IoError,
        },
        _ => Status::Invalid,
    };
    completion.status = status as u32;
}
