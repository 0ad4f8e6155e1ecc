//! diskcheck's campaign mode (issue 16): the write-flush-verify workload
//! run for a fault-injection campaign, which injects faults into the
//! components under the disk (the block store, its driver, the interrupt
//! forwarder) and decides from this VM's console lines whether the
//! workload went on and whether an acknowledged write was lost.
//!
//! Booted as a multiboot kernel (`vm-diskcheck.elf32`, `kind =
//! "multiboot"`) with `campaign=1` on its command line (and, to end,
//! `rounds=N`), it runs rounds like the default run's, four times longer,
//! on the first virtio-blk function only — [`WRITES`] writes of 4 KiB at
//! pseudo-random places of the first MiB ([`DEPTH`] in flight), a flush,
//! and reads of those blocks and [`OLDER`] older ones — without end (or
//! for N rounds), and speaks the line contract of `workload_check::line`:
//!
//! - `CHECK disk ok <round>` after each round in which every request
//!   completed OK and every block read back right;
//! - `CHECK disk LOST block B (written and flushed in round W) read back
//!   in round R holds <what>`: a block whose write completed and whose
//!   flush completed after it reads back with other data
//!   (`workload_check::disk::identify` says what: an earlier round's data,
//!   zeros, another block's, other data). The block is written again in
//!   the same round, flushed, and checked from then on;
//! - `CHECK disk BROKEN <detail>`: a request that completed with an error
//!   status (its blocks are then not checked until written again), a
//!   request with no completion in [`REQUEST_TIMEOUT_MS`] or a device that
//!   breaks the queue's protocol (the device is reset and set up again, the
//!   round abandoned, its blocks unchecked until written again), a device
//!   that cannot be set up (tried again every second).
//!
//! Requests may take long: a restarting store, or a hung one restarted by
//! its watchdog, holds them for seconds, which is no breakage. Each boot
//! writes its patterns under a salt of its own (from the TSC), so data an
//! earlier boot left is never taken for this boot's, and only blocks
//! written in this boot are checked. After N rounds (`rounds=N`) it prints
//! `diskcheck: campaign: ...` with its counts and exits with status 0:
//! a campaign judges by the lines, not by the status.

use core::fmt;

use guest_runtime::interrupts::{self, lapic_write};
use guest_runtime::virtio_pci;
use guest_runtime::{fail, println, rdtsc_ordered};
use virtio::DmaMemory;
use virtio::blk;
use virtio::pci as vpci;
use workload_check::disk::{self as patterns, BLOCK_WORDS, Content};
use workload_check::line::{self, DISK, Limiter};

use crate::{BLOCK, BLOCKS, DATA_AT, DEPTH, Disk, Op, next, set_up};

/// Blocks written in a round, and older blocks read back besides them:
/// four times the default run's round, so that a round takes some 60 ms
/// under QEMU's TCG (its `ok` lines about as often as the contract
/// wants).
const WRITES: usize = 64;
const OLDER: usize = 32;

/// The longest a request may go without a completion.
const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// How long to wait before setting up a device that failed to set up.
const SET_UP_AGAIN_MS: u64 = 1000;
/// The LAPIC timer's vector, which ends a halt at a request's deadline.
const TIMER_VECTOR: u8 = 0x70;

/// LAPIC registers and bits.
const SPURIOUS: u32 = 0xf0;
const LVT_TIMER: u32 = 0x320;
const INITIAL_COUNT: u32 = 0x380;
const DIVIDE: u32 = 0x3e0;
const LVT_TSC_DEADLINE: u32 = 1 << 18;
/// CPUID leaf 1 ECX: the LAPIC timer has TSC-deadline mode.
const CPUID_TSC_DEADLINE: u32 = 1 << 24;

/// What the command line asked for.
#[derive(Clone, Copy)]
pub struct Settings {
    /// Rounds to run; `None`: without end.
    rounds: Option<u32>,
}

impl Settings {
    /// The campaign mode's settings when the VM was booted through
    /// multiboot with `campaign=1` (and perhaps `rounds=N`) after the
    /// kernel's name; `None` for the default run (no such argument, or
    /// `campaign=0`). Any other word fails the test, naming it.
    pub fn read() -> Option<Self> {
        // Links the multiboot header (see `guest_multiboot::linked`).
        if !guest_multiboot::linked() {
            return None;
        }
        let info = guest_runtime::multiboot::info()?;
        if info.flags & guest_runtime::multiboot::COMMAND_LINE == 0 {
            return None;
        }
        let line = info.command_line.as_str();
        if line.len() as u64 + 1 != info.command_line.span {
            fail(format_args!(
                "the multiboot command line ({} bytes) is not UTF-8 or is longer than the {} bytes read",
                info.command_line.span - 1,
                line.len()
            ));
        }
        let settings = Self::parse(line)?;
        match settings.rounds {
            Some(rounds) => println!(
                "diskcheck: multiboot command line '{line}': campaign mode, {rounds} rounds"
            ),
            None => println!(
                "diskcheck: multiboot command line '{line}': campaign mode, rounds without end"
            ),
        }
        Some(settings)
    }

    fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_ascii_whitespace();
        // The kernel's name (QEMU's: its path) or nothing at all.
        words.next()?;
        let (mut campaign, mut rounds) = (false, None);
        for word in words {
            if let Some(value) = word.strip_prefix("campaign=") {
                campaign = match value {
                    "0" => false,
                    "1" => true,
                    _ => fail(format_args!(
                        "bad argument '{word}': campaign= takes 0 or 1"
                    )),
                };
            } else if let Some(value) = word.strip_prefix("rounds=") {
                let number = if value.bytes().all(|byte| byte.is_ascii_digit()) {
                    value.parse::<u32>().ok()
                } else {
                    None
                };
                rounds = Some(number.filter(|&rounds| rounds > 0).unwrap_or_else(|| {
                    fail(format_args!(
                        "bad argument '{word}': rounds=N takes 1..={}",
                        u32::MAX
                    ))
                }));
            } else {
                fail(format_args!(
                    "unknown argument '{word}' (diskcheck takes campaign=0|1 and rounds=N)"
                ));
            }
        }
        if !campaign && rounds.is_some() {
            fail(format_args!("rounds= needs campaign=1"));
        }
        campaign.then_some(Self { rounds })
    }
}

/// The local APIC timer, to end a halt at a deadline: in TSC-deadline
/// mode where CPUID offers it (our platform does), else one-shot at its
/// largest count (a wake-up every few seconds at most, after which the
/// caller looks at the TSC again).
struct Timer {
    tsc_hz: u64,
    deadline_mode: bool,
    /// The TSC deadline armed last.
    armed: u64,
}

impl Timer {
    fn new() -> Self {
        interrupts::disable();
        lapic_write(SPURIOUS, 0x1ff);
        interrupts::use_lapic();
        let deadline_mode = guest_runtime::cpuid(1).ecx & CPUID_TSC_DEADLINE != 0;
        if deadline_mode {
            lapic_write(LVT_TIMER, u32::from(TIMER_VECTOR) | LVT_TSC_DEADLINE);
        } else {
            lapic_write(DIVIDE, 0xb);
            lapic_write(LVT_TIMER, u32::from(TIMER_VECTOR));
        }
        interrupts::enable();
        Self {
            tsc_hz: guest_runtime::clock::tsc_rate().hz,
            deadline_mode,
            armed: 0,
        }
    }

    /// The TSC `ms` milliseconds from now.
    fn after_ms(&self, ms: u64) -> u64 {
        rdtsc_ordered() + (u128::from(self.tsc_hz) * u128::from(ms) / 1000) as u64
    }

    /// Makes the timer end a halt at `deadline` (TSC) or earlier.
    fn arm(&mut self, deadline: u64) {
        if !self.deadline_mode {
            lapic_write(INITIAL_COUNT, u32::MAX);
            return;
        }
        // A deadline still ahead and no later than this one will do: it
        // only wakes the halt early, and the caller arms again then. So
        // the WRMSR (an exit) comes about once per timeout, not once per
        // batch of requests.
        if self.armed > rdtsc_ordered() && self.armed <= deadline {
            return;
        }
        interrupts::set_tsc_deadline(deadline);
        self.armed = deadline;
    }

    /// Halts until `ms` milliseconds have passed.
    fn sleep(&mut self, ms: u64) {
        let deadline = self.after_ms(ms);
        loop {
            interrupts::disable();
            if rdtsc_ordered() >= deadline {
                interrupts::enable();
                return;
            }
            self.arm(deadline);
            interrupts::wait();
        }
    }
}

/// Why a batch of requests did not all complete.
enum Trouble {
    /// No completion for `left` of them within [`REQUEST_TIMEOUT_MS`].
    TimedOut { left: usize },
    /// The device broke the queue's protocol.
    Protocol(&'static str),
}

/// The workload's state.
struct Campaign {
    device: u8,
    disk: Disk,
    timer: Timer,
    /// This boot's pattern salt (never 0, the default run's).
    salt: u64,
    random: u64,
    /// The round each block was last written and flushed in, in this
    /// boot (0: not, or not known: not checked).
    written: [u32; BLOCKS],
    /// Rounds that printed `ok`.
    clean: u64,
    lost: Limiter,
    broken: Limiter,
}

/// The campaign mode's run (see the module's documentation); its exit
/// status.
pub fn run(settings: Settings) -> u32 {
    let Some(device) = virtio_pci::functions(&[vpci::DEVICE_ID_BLK]).next() else {
        println!(
            "{}",
            line::broken(DISK, format_args!("no virtio-blk function on bus 0"))
        );
        return 1;
    };
    let mut timer = Timer::new();
    let salt = (rdtsc_ordered().wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 1) | 1;
    let mut broken = Limiter::new();
    let disk = set_up_until_done(device, &mut timer, &mut broken);
    println!(
        "diskcheck: campaign on virtio-blk at 00:{device:02x}.0, {} sectors ({} KiB): rounds of {WRITES} writes, a flush and {} reads (salt {salt:#018x})",
        disk.capacity,
        disk.capacity / 2,
        WRITES + OLDER
    );
    if disk.capacity < (BLOCKS as u64 * u64::from(BLOCK)) / 512 {
        println!(
            "{}",
            line::broken(
                DISK,
                format_args!("the disk is smaller than 1 MiB ({} sectors)", disk.capacity)
            )
        );
        return 1;
    }
    let mut campaign = Campaign {
        device,
        disk,
        timer,
        salt,
        random: 0x9e37_79b9_7f4a_7c15 ^ salt,
        written: [0; BLOCKS],
        clean: 0,
        lost: Limiter::new(),
        broken,
    };
    let mut round = 0u32;
    while settings.rounds.is_none_or(|rounds| round < rounds) {
        round = round.wrapping_add(1).max(1);
        if campaign.round(round) {
            campaign.clean += 1;
            println!("{}", line::ok(DISK, u64::from(round)));
        }
    }
    println!(
        "diskcheck: campaign: {round} rounds, {} ok, {} requests, {} interrupts, {} lost writes, {} broken",
        campaign.clean,
        campaign.disk.requests,
        interrupts::count(campaign.disk.vector),
        campaign.lost.seen(),
        campaign.broken.seen()
    );
    0
}

/// Sets up the function at `device` as disk 0, trying again every
/// [`SET_UP_AGAIN_MS`] until it works (each failure a BROKEN line).
fn set_up_until_done(device: u8, timer: &mut Timer, broken: &mut Limiter) -> Disk {
    let mut tries = 0u32;
    loop {
        match set_up(device, 0) {
            Ok(disk) => {
                if tries > 0 {
                    println!("diskcheck: 00:{device:02x}.0 set up again after {tries} failures");
                }
                return disk;
            }
            Err(why) => {
                tries += 1;
                report(
                    broken,
                    line::broken,
                    format_args!("setting up 00:{device:02x}.0 failed: {why} (try {tries})"),
                );
                timer.sleep(SET_UP_AGAIN_MS);
            }
        }
    }
}

/// Prints a LOST or BROKEN line unless `limiter` leaves it out.
fn report(
    limiter: &mut Limiter,
    kind: for<'a> fn(&'a str, fmt::Arguments<'a>) -> line::Report<'a>,
    detail: fmt::Arguments<'_>,
) {
    match limiter.admit() {
        Some(0) => println!("{}", kind(DISK, format_args!("{detail}"))),
        Some(left_out) => println!(
            "{}",
            kind(
                DISK,
                format_args!("{detail} ({left_out} like reports not shown)")
            )
        ),
        None => {}
    }
}

/// A request, as a BROKEN line names it ("write of block 17", "flush").
struct Request {
    op: Op,
    block: u64,
}

impl fmt::Display for Request {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.op {
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => return formatter.write_str("flush"),
            Op::Id => return formatter.write_str("get-id"),
            Op::WriteZeroes => "write-zeroes",
            Op::Discard => "discard",
        };
        write!(formatter, "{name} of block {}", self.block)
    }
}

impl Campaign {
    /// Round `round`; whether everything in it went right.
    fn round(&mut self, round: u32) -> bool {
        let mut clean = true;
        let mut blocks = [0usize; WRITES];
        for block in blocks.iter_mut() {
            *block = (next(&mut self.random) % BLOCKS as u64) as usize;
        }
        // Write in batches of DEPTH.
        let mut failed = [false; WRITES];
        for (batch_index, batch) in blocks.chunks(DEPTH).enumerate() {
            let mut ops = [(Op::Write, 0u64); DEPTH];
            for (slot, &block) in batch.iter().enumerate() {
                self.fill(slot, block, round);
                ops[slot] = (Op::Write, block as u64);
            }
            let Some(statuses) = self.batch(&ops[..batch.len()], round) else {
                self.forget(&blocks);
                return false;
            };
            for (slot, status) in statuses[..batch.len()].iter().enumerate() {
                if *status != blk::Status::Ok {
                    clean = false;
                    failed[batch_index * DEPTH + slot] = true;
                    self.broken(format_args!(
                        "write of block {} in round {round} completed with status {status:?}",
                        batch[slot]
                    ));
                }
            }
        }
        match self.batch(&[(Op::Flush, 0)], round) {
            None => {
                self.forget(&blocks);
                return false;
            }
            Some([blk::Status::Ok, ..]) => {}
            Some([status, ..]) => {
                // Whether the writes are durable is not known.
                self.broken(format_args!(
                    "flush in round {round} completed with status {status:?}"
                ));
                self.forget(&blocks);
                return false;
            }
        }
        for (&block, &failed) in blocks.iter().zip(&failed) {
            if !failed {
                self.written[block] = round;
            }
        }
        for (&block, &failed) in blocks.iter().zip(&failed) {
            if failed {
                self.written[block] = 0;
            }
        }
        // Read back this round's blocks and some older ones.
        let mut checks = [0usize; WRITES + OLDER];
        checks[..WRITES].copy_from_slice(&blocks);
        for check in checks[WRITES..].iter_mut() {
            *check = (next(&mut self.random) % BLOCKS as u64) as usize;
        }
        let mut lost = [0usize; WRITES + OLDER];
        let mut lost_count = 0;
        for batch in checks.chunks(DEPTH) {
            let mut ops = [(Op::Read, 0u64); DEPTH];
            for (slot, &block) in batch.iter().enumerate() {
                ops[slot] = (Op::Read, block as u64);
            }
            let Some(statuses) = self.batch(&ops[..batch.len()], round) else {
                return false;
            };
            for (slot, &block) in batch.iter().enumerate() {
                if statuses[slot] != blk::Status::Ok {
                    clean = false;
                    self.broken(format_args!(
                        "read of block {block} in round {round} completed with status {:?}",
                        statuses[slot]
                    ));
                    continue;
                }
                let expected = self.written[block];
                if expected == 0 || lost[..lost_count].contains(&block) {
                    continue;
                }
                let content = self.content(slot, block, expected);
                if content != Content::Expected {
                    clean = false;
                    lost[lost_count] = block;
                    lost_count += 1;
                    report(
                        &mut self.lost,
                        line::lost,
                        format_args!(
                            "block {block} (written and flushed in round {expected}) read back in round {round} holds {}",
                            content.describe(block as u64)
                        ),
                    );
                }
            }
        }
        // Write what was lost again, so that it is checked from now on.
        for batch in lost[..lost_count].chunks(DEPTH) {
            let mut ops = [(Op::Write, 0u64); DEPTH];
            for (slot, &block) in batch.iter().enumerate() {
                self.fill(slot, block, round);
                self.written[block] = 0;
                ops[slot] = (Op::Write, block as u64);
            }
            let Some(statuses) = self.batch(&ops[..batch.len()], round) else {
                return false;
            };
            if statuses[..batch.len()]
                .iter()
                .any(|status| *status != blk::Status::Ok)
            {
                self.broken(format_args!(
                    "rewriting a lost block in round {round} failed"
                ));
                return false;
            }
        }
        if lost_count > 0 {
            match self.batch(&[(Op::Flush, 0)], round) {
                Some([blk::Status::Ok, ..]) => {
                    for &block in &lost[..lost_count] {
                        self.written[block] = round;
                    }
                }
                Some([status, ..]) => self.broken(format_args!(
                    "flush after rewriting lost blocks in round {round} completed with status {status:?}"
                )),
                None => {}
            }
        }
        clean
    }

    /// Prints a BROKEN line (unless the limiter leaves it out).
    fn broken(&mut self, detail: fmt::Arguments<'_>) {
        report(&mut self.broken, line::broken, detail);
    }

    /// Marks `blocks` as not known (not checked until written again).
    fn forget(&mut self, blocks: &[usize]) {
        for &block in blocks {
            self.written[block] = 0;
        }
    }

    /// Fills data slot `slot` with `block`'s pattern of `round`.
    fn fill(&self, slot: usize, block: usize, round: u32) {
        let at = DATA_AT + slot as u64 * u64::from(BLOCK);
        for word in 0..BLOCK_WORDS as u64 {
            self.disk.dma.write64(
                at + word * 8,
                patterns::pattern(block as u64, round, self.salt, word),
            );
        }
    }

    /// What data slot `slot`, read from `block`, holds against its
    /// pattern of `round`.
    fn content(&self, slot: usize, block: usize, round: u32) -> Content {
        let at = DATA_AT + slot as u64 * u64::from(BLOCK);
        patterns::identify(
            |word| self.disk.dma.read64(at + word as u64 * 8),
            block as u64,
            round,
            self.salt,
        )
    }

    /// Runs `ops` (slot i's data buffer for block `ops[i].1`) and waits
    /// for all of them: their statuses, by slot. `None` when they did not
    /// all complete (a BROKEN line printed, the device reset and set up
    /// again).
    fn batch(&mut self, ops: &[(Op, u64)], round: u32) -> Option<[blk::Status; DEPTH]> {
        let trouble = match self.disk.submit(ops) {
            Ok(()) => match self.complete(ops.len()) {
                Ok(statuses) => return Some(statuses),
                Err(trouble) => trouble,
            },
            Err(why) => Trouble::Protocol(why),
        };
        let slot = self
            .disk
            .heads
            .iter()
            .position(Option::is_some)
            .unwrap_or(0);
        let (op, block) = ops.get(slot).copied().unwrap_or((Op::Read, 0));
        let what = Request { op, block };
        match trouble {
            Trouble::TimedOut { left } => self.broken(format_args!(
                "request timed out: {what} in round {round} got no completion in {} s ({left} of {} in flight); resetting the device",
                REQUEST_TIMEOUT_MS / 1000,
                ops.len()
            )),
            Trouble::Protocol(why) => self.broken(format_args!(
                "{why} ({what} in round {round}); resetting the device"
            )),
        }
        let (requests, notifies) = (self.disk.requests, self.disk.notifies);
        self.disk = set_up_until_done(self.device, &mut self.timer, &mut self.broken);
        self.disk.requests = requests;
        self.disk.notifies = notifies;
        None
    }

    /// Waits for the completions of the `count` requests submitted, halting
    /// until an interrupt or [`REQUEST_TIMEOUT_MS`] after the start.
    fn complete(&mut self, count: usize) -> Result<[blk::Status; DEPTH], Trouble> {
        let deadline = self.timer.after_ms(REQUEST_TIMEOUT_MS);
        let mut statuses = [blk::Status::Ok; DEPTH];
        let mut left = count;
        while left > 0 {
            interrupts::disable();
            match self.disk.queue.pop_used(&self.disk.dma) {
                Ok(Some(used)) => {
                    interrupts::enable();
                    let slot = self
                        .disk
                        .heads
                        .iter()
                        .position(|head| *head == Some(used.head))
                        .ok_or(Trouble::Protocol(
                            "the device completed a chain not in flight",
                        ))?;
                    self.disk.heads[slot] = None;
                    statuses[slot] = self.disk.status(slot);
                    left -= 1;
                }
                Ok(None) => {
                    if rdtsc_ordered() >= deadline {
                        interrupts::enable();
                        return Err(Trouble::TimedOut { left });
                    }
                    self.timer.arm(deadline);
                    // Halt until the completion interrupt or the timer.
                    interrupts::wait();
                }
                Err(_) => {
                    interrupts::enable();
                    return Err(Trouble::Protocol("the device broke the queue protocol"));
                }
            }
        }
        Ok(statuses)
    }
}
