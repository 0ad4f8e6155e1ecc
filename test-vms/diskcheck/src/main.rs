//! A test VM with a small virtio-blk driver of its own (the queue logic is
//! the `virtio` crate's, the same the ring-3 driver uses): it finds the
//! first virtio-blk PCI function on bus 0, sets it up with MSI-X (the
//! queue's vector to the local APIC, vector [`VECTOR`]) and runs a
//! write-flush-verify workload: each round writes [`WRITES`] 4 KiB blocks
//! at pseudo-random places of the first MiB with a pattern that names the
//! block and the round ([`DEPTH`] requests in flight), flushes, and reads
//! back every block written that round and [`OLDER`] blocks of earlier
//! rounds, each of which must hold the last pattern flushed to it. It
//! also reads the device id, and when the device offers them zeroes a
//! block with a write-zeroes request (it must read back as zeros) and
//! discards another. Any status but OK, or one wrong byte, fails the test
//! (`TEST diskcheck FAIL: ...`); after [`ROUNDS`] rounds it prints the
//! requests and interrupts counted and passes. On the first
//! disk it then measures the path: `BENCH` lines (TSC ticks per request,
//! instructions under icount, at depths 1, 8 and 32) and two host-timed
//! runs between `TIMED-START` / `TIMED-END` lines (throughput, which the
//! build tool's `bench` takes from the lines' arrival times).
//!
//! Booted as a multiboot kernel (it links `guest-multiboot`; the build
//! tool writes its ELF32 copy, `vm-diskcheck.elf32`) with `campaign=1` on
//! its command line, it runs its campaign mode instead ([`campaign`]):
//! rounds without end (or `rounds=N`), `CHECK disk ok|LOST|BROKEN ...`
//! lines, no failure and no benchmark. Without that argument it runs as
//! above, however it was booted.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use guest_runtime::devices;
use guest_runtime::hypervisor::Costs;
use guest_runtime::virtio_pci::{self, Dma, Function};
use guest_runtime::{interrupts, println};
use virtio::DmaMemory;
use virtio::blk::{self, RequestHeader};
use virtio::pci as vpci;
use virtio::queue::{Segment, SplitQueue};

mod campaign;

guest_runtime::entry!("diskcheck", main);

/// The interrupt vector of the first disk's queue (the next disks take
/// the next vectors).
const VECTOR: u8 = 0x60;
/// The most disks checked (each takes [`DMA_PER_DISK`] of the DMA area).
const MAX_DISKS: usize = 4;
const DMA_PER_DISK: u64 = 0x20000;
const ROUNDS: u32 = 40;
const WRITES: usize = 16;
const OLDER: usize = 8;
const DEPTH: usize = 8;
/// Blocks of 4 KiB the workload uses (the first MiB).
const BLOCKS: usize = 256;
const BLOCK: u32 = 4096;

/// The DMA area's layout: the queue, request headers, status bytes, data.
const QUEUE_AT: u64 = 0;
const HEADERS_AT: u64 = 0x2000;
const STATUS_AT: u64 = 0x2400;
const DATA_AT: u64 = 0x4000;
const QUEUE_SIZE: u16 = 128;
/// The most requests the benchmark keeps in flight.
const MAX_IN_FLIGHT: usize = 32;
/// Data buffers of a disk: the workload's [`DEPTH`] requests each have
/// their own; the benchmark's deeper batches share them (its data is
/// never checked).
const DATA_SLOTS: u64 = (DMA_PER_DISK - DATA_AT) / BLOCK as u64;

struct Disk {
    dma: Dma,
    vector: u8,
    queue: SplitQueue,
    notify: u64,
    capacity: u64,
    /// The chain head of the request in each slot.
    heads: [Option<u16>; MAX_IN_FLIGHT],
    requests: u64,
    /// Notifies written (each one exit).
    notifies: u64,
    /// The device takes discard and write-zeroes requests.
    zeroing: bool,
}

#[derive(Clone, Copy)]
enum Op {
    Read,
    Write,
    Flush,
    Id,
    /// Write zeros over the block (no data: a range).
    WriteZeroes,
    /// Discard the block.
    Discard,
}

fn main() -> u32 {
    let settings = campaign::Settings::read();
    // Firmware may leave the 8259 routing the PIT to vector 8.
    interrupts::mask_legacy_pic();
    if let Some(settings) = settings {
        return campaign::run(settings);
    }
    let mut checked = 0;
    for (index, device) in virtio_pci::functions(&[vpci::DEVICE_ID_BLK])
        .take(MAX_DISKS)
        .enumerate()
    {
        if check(device, index).is_err() {
            return 1;
        }
        checked += 1;
    }
    if checked == 0 {
        println!("TEST diskcheck FAIL: no virtio-blk function on bus 0");
        return 1;
    }
    println!("TEST diskcheck PASS");
    0
}

/// Prints the test's failure for the disk at `device` and fails.
macro_rules! fail {
    ($device:expr, $($why:tt)*) => {{
        println!("TEST diskcheck FAIL: 00:{:02x}.0: {}", $device, format_args!($($why)*));
        return Err(());
    }};
}

/// Sets up the function at bus 0 `device` as disk `index` (its own part
/// of the DMA area and its own interrupt vector) and runs the workload on
/// it; a failure is printed.
fn check(device: u8, index: usize) -> Result<(), ()> {
    let mut disk = match set_up(device, index) {
        Ok(disk) => disk,
        Err(why) => fail!(device, "{why}"),
    };
    println!(
        "diskcheck: virtio-blk at 00:{device:02x}.0, {} sectors ({} KiB)",
        disk.capacity,
        disk.capacity / 2
    );
    if disk.capacity < (BLOCKS as u64 * u64::from(BLOCK)) / 512 {
        fail!(device, "the disk is smaller than 1 MiB");
    }
    let mut id = [0u8; 20];
    if let Err(why) = disk.run(&[(Op::Id, 0)]) {
        fail!(device, "get id: {why}");
    }
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = disk.dma.read8(DATA_AT + i as u64);
    }
    let length = id.iter().position(|&b| b == 0).unwrap_or(id.len());
    println!(
        "diskcheck: device id '{}'",
        core::str::from_utf8(&id[..length]).unwrap_or("?")
    );
    // The round each block was last written in (0: never, so it is not
    // checked).
    let mut written = [0u32; BLOCKS];
    let mut random = 0x9e37_79b9_7f4a_7c15u64;
    for round in 1..=ROUNDS {
        let mut blocks = [0usize; WRITES];
        for block in blocks.iter_mut() {
            *block = (next(&mut random) % BLOCKS as u64) as usize;
        }
        // Write in batches of DEPTH.
        for batch in blocks.chunks(DEPTH) {
            let mut ops = [(Op::Write, 0u64); DEPTH];
            for (slot, &block) in batch.iter().enumerate() {
                fill(&disk.dma, slot, block, round);
                ops[slot] = (Op::Write, block as u64);
            }
            if let Err(why) = disk.run(&ops[..batch.len()]) {
                fail!(device, "round {round}: write: {why}");
            }
        }
        if let Err(why) = disk.run(&[(Op::Flush, 0)]) {
            fail!(device, "round {round}: flush: {why}");
        }
        for &block in &blocks {
            written[block] = round;
        }
        // Read back this round's blocks and some older ones.
        let mut checks = [0usize; WRITES + OLDER];
        checks[..WRITES].copy_from_slice(&blocks);
        for check in checks[WRITES..].iter_mut() {
            *check = (next(&mut random) % BLOCKS as u64) as usize;
        }
        for batch in checks.chunks(DEPTH) {
            let mut ops = [(Op::Read, 0u64); DEPTH];
            for (slot, &block) in batch.iter().enumerate() {
                ops[slot] = (Op::Read, block as u64);
            }
            if let Err(why) = disk.run(&ops[..batch.len()]) {
                fail!(device, "round {round}: read: {why}");
            }
            for (slot, &block) in batch.iter().enumerate() {
                if let Some(at) = mismatch(&disk.dma, slot, block, written[block]) {
                    fail!(
                        device,
                        "round {round}: block {block} (written in round {}) read back wrong at byte {at}",
                        written[block]
                    );
                }
            }
        }
        if round % 10 == 0 {
            println!(
                "diskcheck: round {round}/{ROUNDS}: every flushed block read back right ({} requests, {} interrupts)",
                disk.requests,
                interrupts::count(disk.vector)
            );
        }
    }
    if disk.zeroing {
        // A written block zeroed reads back as zeros; a discard succeeds
        // (what a discarded block then reads is the device's choice).
        let block = (next(&mut random) % BLOCKS as u64) as usize;
        if let Err(why) = disk.run(&[(Op::WriteZeroes, block as u64)]) {
            fail!(device, "write-zeroes: {why}");
        }
        if let Err(why) = disk.run(&[(Op::Read, block as u64)]) {
            fail!(device, "read after write-zeroes: {why}");
        }
        if let Some(at) = mismatch(&disk.dma, 0, block, 0) {
            fail!(
                device,
                "block {block} is not zero at byte {at} after write-zeroes"
            );
        }
        let other = (block + 1) % BLOCKS;
        if let Err(why) = disk.run(&[(Op::Discard, other as u64)]) {
            fail!(device, "discard: {why}");
        }
        println!(
            "diskcheck: block {block} zeroed (write-zeroes reads back zeros), block {other} discarded"
        );
    }
    println!(
        "diskcheck: 00:{device:02x}.0: {ROUNDS} rounds, {} requests, {} interrupts, no error",
        disk.requests,
        interrupts::count(disk.vector)
    );
    if index == 0 {
        bench(&mut disk, &mut random);
        timed(&mut disk, &mut random);
    }
    Ok(())
}

/// Requests per benchmark figure.
const BENCH_REQUESTS: usize = 64;
/// The batches the benchmark keeps in flight besides one at a time.
const BENCH_DEPTHS: [usize; 2] = [DEPTH, MAX_IN_FLIGHT];

/// The cost of the whole path (guest driver, exit, world switcher,
/// store, driver, device, interrupt back) as the guest sees it: TSC ticks
/// per 4 KiB request at random places of the first MiB, which under
/// `-icount shift=0` are instructions; one request at a time (median) and
/// [`BENCH_DEPTHS`] at a time (mean), with the interrupts and notifies (exits)
/// per request. Blocks written here hold patterns no check looks at again.
fn bench(disk: &mut Disk, random: &mut u64) {
    let counted = matches!(
        guest_runtime::detect(),
        guest_runtime::Hypervisor::Microvisor { .. }
    );
    for (op, name) in [(Op::Read, "read"), (Op::Write, "write")] {
        let mut ticks = [0u64; BENCH_REQUESTS];
        let (interrupts_before, notifies_before) = (interrupts::count(disk.vector), disk.notifies);
        let costs = Costs::now(counted);
        for tick in ticks.iter_mut() {
            let block = next(random) % BLOCKS as u64;
            let start = guest_runtime::rdtsc_ordered();
            if disk.run(&[(op, block)]).is_err() {
                println!("diskcheck: benchmark {name} failed");
                return;
            }
            *tick = guest_runtime::rdtsc_ordered() - start;
        }
        let spent = costs.since(BENCH_REQUESTS, Some("request"));
        ticks.sort_unstable();
        let interrupts = interrupts::count(disk.vector) - interrupts_before;
        let notifies = disk.notifies - notifies_before;
        println!(
            "BENCH guest-disk-{name}-4k {} instructions/request (one in flight, median of {BENCH_REQUESTS}, slowest {}; {:.2} interrupts and {:.2} notify exits per request{spent})",
            ticks[BENCH_REQUESTS / 2],
            ticks[BENCH_REQUESTS - 1],
            f64::from(interrupts) / BENCH_REQUESTS as f64,
            notifies as f64 / BENCH_REQUESTS as f64
        );
        for depth in BENCH_DEPTHS {
            let (interrupts_before, notifies_before) =
                (interrupts::count(disk.vector), disk.notifies);
            let costs = Costs::now(counted);
            let start = guest_runtime::rdtsc_ordered();
            for _ in 0..BENCH_REQUESTS / depth {
                let mut ops = [(op, 0u64); MAX_IN_FLIGHT];
                for item in ops[..depth].iter_mut() {
                    item.1 = next(random) % BLOCKS as u64;
                }
                if disk.run(&ops[..depth]).is_err() {
                    println!("diskcheck: benchmark {name} failed");
                    return;
                }
            }
            let per_request = (guest_runtime::rdtsc_ordered() - start) / BENCH_REQUESTS as u64;
            let spent = costs.since(BENCH_REQUESTS, Some("request"));
            let interrupts = interrupts::count(disk.vector) - interrupts_before;
            let notifies = disk.notifies - notifies_before;
            println!(
                "BENCH guest-disk-{name}-4k-depth{depth} {per_request} instructions/request ({depth} in flight, mean of {BENCH_REQUESTS}; {:.2} interrupts and {:.2} notify exits per request{spent})",
                f64::from(interrupts) / BENCH_REQUESTS as f64,
                notifies as f64 / BENCH_REQUESTS as f64
            );
        }
    }
}

/// Requests of each host-timed run.
const TIMED_REQUESTS: usize = 4096;

/// Throughput as the host's clock sees it: [`TIMED_REQUESTS`] random 4 KiB
/// reads, then writes, [`MAX_IN_FLIGHT`] at a time, between a
/// `TIMED-START` and a `TIMED-END` line whose arrival times the build
/// tool's `bench` takes (in a run without icount, where they are the
/// host's time; see `build/src/bench.rs`).
fn timed(disk: &mut Disk, random: &mut u64) {
    for (op, name) in [(Op::Read, "read"), (Op::Write, "write")] {
        println!("TIMED-START guest-disk-{name}-4k-depth{MAX_IN_FLIGHT}");
        for _ in 0..TIMED_REQUESTS / MAX_IN_FLIGHT {
            let mut ops = [(op, 0u64); MAX_IN_FLIGHT];
            for item in ops.iter_mut() {
                item.1 = next(random) % BLOCKS as u64;
            }
            if disk.run(&ops).is_err() {
                println!("diskcheck: timed {name} failed");
                return;
            }
        }
        println!(
            "TIMED-END guest-disk-{name}-4k-depth{MAX_IN_FLIGHT} {} bytes",
            TIMED_REQUESTS * BLOCK as usize
        );
    }
}

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The pattern of `block` as written in `round` (round 0: zeros, a disk
/// never written): `workload_check::disk::pattern` without a salt.
fn pattern(block: usize, round: u32, word: u64) -> u64 {
    workload_check::disk::pattern(block as u64, round, 0, word)
}

fn fill(dma: &Dma, slot: usize, block: usize, round: u32) {
    let at = DATA_AT + slot as u64 * u64::from(BLOCK);
    for word in 0..u64::from(BLOCK / 8) {
        dma.write64(at + word * 8, pattern(block, round, word));
    }
}

fn mismatch(dma: &Dma, slot: usize, block: usize, round: u32) -> Option<u64> {
    let at = DATA_AT + slot as u64 * u64::from(BLOCK);
    (0..u64::from(BLOCK / 8))
        .find(|&word| dma.read64(at + word * 8) != pattern(block, round, word))
        .map(|word| word * 8)
}

fn set_up(device: u8, index: usize) -> Result<Disk, &'static str> {
    let vector = VECTOR + index as u8;
    let function = Function::locate(device)?;
    let flush = 1u64 << blk::VIRTIO_BLK_F_FLUSH;
    let zeroing = 1u64 << blk::VIRTIO_BLK_F_DISCARD | 1 << blk::VIRTIO_BLK_F_WRITE_ZEROES;
    let accepted = function.negotiate(
        zeroing,
        flush | 1 << virtio::VIRTIO_F_VERSION_1,
        "the device lacks VERSION_1 or FLUSH",
    )?;
    // MSI-X: entry 1 for the queue, to this CPU's local APIC.
    function.route_msix(&[(1, vector)], None);
    let dma = Dma::from_offset(index as u64 * DMA_PER_DISK);
    let (queue, notify) = function
        .set_up_queue(&dma, 0, QUEUE_AT, QUEUE_SIZE, 1)
        .map_err(|error| error.why(true))?;
    function.driver_ok();
    let device_at = function.device_config;
    let capacity = u64::from(devices::read32(device_at + u64::from(blk::CONFIG_CAPACITY)))
        | u64::from(devices::read32(
            device_at + u64::from(blk::CONFIG_CAPACITY) + 4,
        )) << 32;
    Ok(Disk {
        dma,
        vector,
        queue,
        notify,
        capacity,
        zeroing: accepted & zeroing == zeroing,
        heads: [None; MAX_IN_FLIGHT],
        requests: 0,
        notifies: 0,
    })
}

impl Disk {
    /// Submits `ops` (one per slot: slot i's data buffer for block
    /// `ops[i].1`), notifies once, and waits for all of them, halting
    /// until the interrupt; every status must be OK.
    fn run(&mut self, ops: &[(Op, u64)]) -> Result<(), &'static str> {
        self.submit(ops)?;
        let mut left = ops.len();
        while left > 0 {
            interrupts::disable();
            match self.queue.pop_used(&self.dma) {
                Ok(Some(used)) => {
                    interrupts::enable();
                    let slot = self
                        .heads
                        .iter()
                        .position(|head| *head == Some(used.head))
                        .ok_or("the device completed a chain not in flight")?;
                    self.heads[slot] = None;
                    if self.status(slot) != blk::Status::Ok {
                        return Err("a request failed (status not OK)");
                    }
                    left -= 1;
                }
                // Halt until the completion interrupt (STI; HLT).
                Ok(None) => interrupts::wait(),
                Err(_) => return Err("the device broke the queue protocol"),
            }
        }
        Ok(())
    }

    /// The status the device wrote for the request in `slot`.
    fn status(&self, slot: usize) -> blk::Status {
        blk::read_status(&self.dma, STATUS_AT + slot as u64)
    }

    /// Puts `ops` (one per slot: slot i's data buffer for block
    /// `ops[i].1`) on the queue and notifies the device once.
    fn submit(&mut self, ops: &[(Op, u64)]) -> Result<(), &'static str> {
        for (slot, &(op, block)) in ops.iter().enumerate() {
            let header_at = HEADERS_AT + slot as u64 * 16;
            let status_at = STATUS_AT + slot as u64;
            let data_at = DATA_AT + (slot as u64 % DATA_SLOTS) * u64::from(BLOCK);
            let sector = block * u64::from(BLOCK) / 512;
            let (header, data) = match op {
                Op::Read => (RequestHeader::read(sector), Some((BLOCK, true))),
                Op::Write => (RequestHeader::write(sector), Some((BLOCK, false))),
                Op::Flush => (RequestHeader::flush(), None),
                Op::Id => (RequestHeader::get_id(), Some((blk::ID_SIZE, true))),
                Op::WriteZeroes | Op::Discard => {
                    // The range, where the block's data would be.
                    blk::write_range(&self.dma, data_at, sector, BLOCK / 512);
                    let header = match op {
                        Op::Discard => RequestHeader::discard(),
                        _ => RequestHeader::write_zeroes(),
                    };
                    (header, Some((blk::RANGE_SIZE, false)))
                }
            };
            header.write_to(&self.dma, header_at);
            blk::prepare_status(&self.dma, status_at);
            let data = data.map(|(length, device_writes)| Segment {
                physical: self.dma.physical(data_at),
                length,
                device_writes,
            });
            let (segments, count) = blk::request_segments(
                self.dma.physical(header_at),
                data,
                self.dma.physical(status_at),
            );
            let head = self
                .queue
                .add(&self.dma, &segments[..count])
                .map_err(|_| "the queue is full")?;
            self.heads[slot] = Some(head);
        }
        if self.queue.device_wants_notification(&self.dma) {
            devices::write16(self.notify, 0);
            self.notifies += 1;
        }
        self.requests += ops.len() as u64;
        Ok(())
    }
}
