//! A block server's test client (a block driver's, or the block store's):
//! writes `blocks=` 4 KiB blocks (default 64) of a pattern that names each
//! block (and `seed=`), flushes, reads them all back
//! and checks every byte, keeping `depth=` requests in flight (default 8)
//! over the queues `<disk>-requests` and `<disk>-completions` for `disk=`
//! (else `requests` and `completions`; `block_api`). It then
//! asks the driver for its counters and prints how many interrupts the
//! I/O took. When the server (the driver, or the block store in front of
//! it) restarts, the queues report it and the client sends again every
//! request it has no completion for; the run must still
//! end with every block right. With `bench=N` it then times N single 4 KiB
//! reads (one in flight), request to completion, and prints the median as
//! a `BENCH` line (instructions under `-icount shift=0`). Last it detaches,
//! and the driver resets the device and exits.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use block_api::{BLOCK, Completion, Operation, Request, Status};
use runtime::arguments::OrExit;
use runtime::queue::{QueueError, Receiver, Sender};
use runtime::{println, rdtsc};

runtime::component!(main);

/// The most blocks (one bit each in the bookkeeping).
const MAX_BLOCKS: usize = 256;
/// Sectors per block.
const SECTORS: u32 = (BLOCK / 512) as u32;
/// The most timed reads.
const MAX_BENCH: usize = 512;

/// The byte at `offset` of block `block` in pass `pass`.
fn pattern(block: u64, offset: usize) -> u8 {
    (block
        .wrapping_mul(0x9e37_79b9)
        .wrapping_add(offset as u64 * 7)
        >> 3) as u8
        ^ offset as u8
}

struct Client {
    requests: Sender<Request>,
    completions: Receiver<Completion>,
    request: Request,
    completion: Completion,
    resends: u64,
    seed: u64,
}

impl Client {
    /// Sends request `id` (block `id`'s read or write, or a bare
    /// operation); `false` when the driver restarted meanwhile.
    fn send(&mut self, id: u64, operation: Operation) -> bool {
        self.request.id = id;
        let id_pattern = id ^ self.seed;
        self.request.operation = operation as u32;
        self.request.sector = id * u64::from(SECTORS);
        self.request.sectors = SECTORS;
        if operation == Operation::Write {
            for (offset, byte) in self.request.data.iter_mut().enumerate() {
                *byte = pattern(id_pattern, offset);
            }
        }
        self.requests.send(&self.request).is_ok()
    }

    /// Waits for a completion; `None` when the driver restarted.
    fn receive(&mut self) -> Option<&Completion> {
        match self.completions.receive_into(&mut self.completion) {
            Ok(()) => Some(&self.completion),
            Err(QueueError::PeerRestarted(_)) | Err(QueueError::WouldBlock) => None,
        }
    }

    /// Runs `operation` over blocks `0..blocks` with `depth` in flight,
    /// checking each completion with `check`; resends after a restart.
    fn pass(
        &mut self,
        operation: Operation,
        blocks: u64,
        depth: u64,
        mut check: impl FnMut(u64, &Completion) -> bool,
    ) -> bool {
        let mut done = [0u64; MAX_BLOCKS / 64];
        let mut sent = [0u64; MAX_BLOCKS / 64];
        let mut finished = 0;
        let mut in_flight = 0;
        let bit =
            |map: &[u64; MAX_BLOCKS / 64], id: u64| map[(id / 64) as usize] & 1 << (id % 64) != 0;
        while finished < blocks {
            // Fill the window with blocks neither done nor sent.
            let mut restarted = false;
            for id in 0..blocks {
                if in_flight >= depth {
                    break;
                }
                if bit(&done, id) || bit(&sent, id) {
                    continue;
                }
                if !self.send(id, operation) {
                    restarted = true;
                    break;
                }
                sent[(id / 64) as usize] |= 1 << (id % 64);
                in_flight += 1;
            }
            if !restarted {
                match self.receive() {
                    Some(completion) => {
                        let id = completion.id;
                        if id < blocks && bit(&sent, id) && !bit(&done, id) {
                            if !check(id, completion) {
                                return false;
                            }
                            done[(id / 64) as usize] |= 1 << (id % 64);
                            sent[(id / 64) as usize] &= !(1 << (id % 64));
                            finished += 1;
                            in_flight -= 1;
                        }
                        continue;
                    }
                    None => restarted = true,
                }
            }
            if restarted {
                // The driver restarted: what was sent and not completed
                // is lost with it; send it again.
                let lost = in_flight;
                self.resends += lost;
                sent = [0; MAX_BLOCKS / 64];
                in_flight = 0;
                // (Both queues report one restart; the second finds none.)
                if lost > 0 {
                    println!("blkcheck: the server restarted; sending {lost} request(s) again");
                }
            }
        }
        true
    }

    /// One request that moves no block; its completion.
    fn simple(&mut self, id: u64, operation: Operation) -> Option<Completion> {
        loop {
            if !self.send(id, operation) {
                continue;
            }
            loop {
                match self.receive() {
                    Some(completion) if completion.id == id => return Some(*completion),
                    Some(_) => {}
                    None => break,
                }
            }
        }
    }
}

fn main(start: &runtime::Start) -> i32 {
    let arguments = start
        .arguments(&["blocks", "depth", "bench", "disk", "seed"])
        .or_exit();
    let mut names = [runtime::LineWriter::new(), runtime::LineWriter::new()];
    let (requests_name, completions_name) = match arguments.text("disk") {
        None => ("requests", "completions"),
        Some(disk) => {
            use core::fmt::Write;
            let _ = write!(names[0], "{disk}-requests");
            let _ = write!(names[1], "{disk}-completions");
            let [requests, completions] = &names;
            (
                core::str::from_utf8(requests.as_bytes()).unwrap_or(""),
                core::str::from_utf8(completions.as_bytes()).unwrap_or(""),
            )
        }
    };
    let seed: u64 = arguments.number("seed", 0).or_exit();
    let blocks: u64 = arguments.number("blocks", 64).or_exit();
    let depth: u64 = arguments.number("depth", 8).or_exit();
    let bench: u64 = arguments.number("bench", 0).or_exit();
    if blocks == 0 || blocks > MAX_BLOCKS as u64 || depth == 0 || bench > MAX_BENCH as u64 {
        println!("blkcheck: blocks=1..{MAX_BLOCKS}, depth>=1 and bench<={MAX_BENCH}");
        return 2;
    }
    let (Ok(requests), Ok(completions)) = (
        Sender::<Request>::open(start, requests_name),
        Receiver::<Completion>::open(start, completions_name),
    ) else {
        println!(
            "blkcheck: needs the queues '{requests_name}' (to the server) and '{completions_name}'"
        );
        return 2;
    };
    let mut client = Client {
        requests,
        completions,
        request: Request::new(0, Operation::Read, 0, 0),
        completion: Completion::new(0, Status::Ok),
        resends: 0,
        seed,
    };
    // Ids above the blocks' for requests that move none.
    let size = client
        .simple(1 << 40, Operation::Size)
        .map_or(0, |c| c.value);
    if size < blocks * u64::from(SECTORS) {
        println!("blkcheck: the disk has {size} sectors, fewer than {blocks} blocks need");
        return 1;
    }
    let mut bad = 0u64;
    let wrote = client.pass(Operation::Write, blocks, depth, |id, completion| {
        if completion.status != Status::Ok as u32 {
            println!(
                "blkcheck: writing block {id} failed (status {})",
                completion.status
            );
            bad += 1;
        }
        true
    });
    let flushed = client.simple(1 << 41, Operation::Flush);
    if flushed.is_none_or(|c| c.status != Status::Ok as u32) {
        println!("blkcheck: the flush failed");
        bad += 1;
    }
    let read = client.pass(Operation::Read, blocks, depth, |id, completion| {
        let right = completion.status == Status::Ok as u32
            && completion
                .data
                .iter()
                .enumerate()
                .all(|(offset, byte)| *byte == pattern(id ^ seed, offset));
        if !right {
            println!(
                "blkcheck: block {id} read back wrong (status {})",
                completion.status
            );
            bad += 1;
        }
        true
    });
    let counters = client.simple(1 << 42, Operation::Counters);
    let interrupts = counters.map_or(0, |c| c.value);
    if !(wrote && read) || bad > 0 {
        println!("blkcheck: FAILED: {bad} block(s) wrong");
        return 1;
    }
    println!(
        "blkcheck: wrote, flushed and read back {blocks} blocks of 4 KiB ({depth} in flight): every byte right; the driver took {interrupts} interrupts; {} request(s) sent again after restarts",
        client.resends
    );
    let bench_result = if bench > 0 {
        let mut times = [0u64; MAX_BENCH];
        for (round, time) in times.iter_mut().take(bench as usize).enumerate() {
            let id = round as u64 % blocks;
            let before = rdtsc();
            client.send(id, Operation::Read);
            while client.receive().is_some_and(|c| c.id != id) {}
            *time = rdtsc() - before;
        }
        let measured = &mut times[..bench as usize];
        measured.sort_unstable();
        Some(measured[bench as usize / 2])
    } else {
        None
    };
    // Done: the driver lets the device go and exits.
    client.simple(1 << 43, Operation::Detach);
    if let Some(median) = bench_result {
        println!(
            "BENCH block-read-4k {median} instructions (one 4 KiB read, client -> driver -> device -> interrupt -> forwarder -> driver -> client, median of {bench}; the device's own time included)"
        );
    }
    0
}
