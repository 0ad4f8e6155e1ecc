//! Runs the hostile test: counts the calls the `hostile` component
//! reports on the `progress` queue (each message the number of calls it
//! made since its last report: [`fuzz_edges::calls::report`]), restarts it
//! whenever it faults, and once `calls` (default 10,000) have been made,
//! stops it and reports. With `calls=forever` it never stops: a
//! fault-injection campaign runs it beside the system it attacks for as
//! long as the campaign lasts.
//!
//! Every `every` calls (default 100,000) and at the end it prints
//! `FUZZ total <n> calls, <f> faults, <r> restarts` and the faults by
//! kind (`FUZZ faults: <n> unknown call, <n> bad pointer, ...`). Every
//! fault should be the core refusing a call the rules say it refuses; a
//! fault of another kind (a page fault, an invalid instruction, ... in the
//! fuzzer's own code: the core corrupted its state, or the fuzzer has a
//! bug), a fault at a call the rules say returns (one after a message
//! without `MAY_FAULT`), and a call the rules say faults that returned
//! (a `SURVIVED` message) are each counted, the first few reported, and
//! fail the test. The end adds `TEST hostile PASS: ...` with the rate by
//! the core's clock. The monitor supervises `hostile` (its control
//! capability is named so).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use fuzz_edges::calls::report::Report;
use runtime::abi::fault::{FaultKind, FaultRecord};
use runtime::abi::start::{ResourceKind, ResourceView};
use runtime::arguments::OrExit;
use runtime::queue::{QueueError, Receiver};
use runtime::{notification, println, syscall};

runtime::component!(main);

/// Unexpected faults reported one by one; the rest are counted.
const REPORTED_OTHERS: u64 = 8;

/// What has happened so far.
#[derive(Default)]
struct Tally {
    calls: u64,
    faults: u64,
    restarts: u64,
    /// When the next `FUZZ total` line is due (calls).
    next_line: u64,
    /// Faults by kind: the core refusing a call, and the rest.
    unknown_call: u64,
    bad_pointer: u64,
    bad_argument: u64,
    bad_capability: u64,
    panic: u64,
    other: u64,
    /// The last message of this life announced a call that may fault.
    armed: bool,
    /// The monitor restarted `hostile`: the queue's next reset is that.
    restarted: bool,
    /// Faults the rules did not predict; calls predicted to fault that
    /// returned.
    unpredicted: u64,
    survived: u64,
}

impl Tally {
    /// Adds everything reported so far.
    fn drain(&mut self, progress: &mut Receiver<u64>) {
        let mut batch = [0u64; 64];
        loop {
            match progress.try_receive_batch(&mut batch) {
                Ok(0) | Err(QueueError::WouldBlock) => return,
                Ok(count) => {
                    for &word in &batch[..count] {
                        let report = Report::decode(word);
                        self.calls = self.calls.saturating_add(report.calls);
                        self.armed = report.may_fault;
                        if let Some(number) = report.survived {
                            self.survived += 1;
                            if self.survived <= REPORTED_OTHERS {
                                println!(
                                    "FUZZ hostile's call {number} returned where the rules say it faults"
                                );
                            }
                        }
                    }
                }
                // After a restart of `hostile` the queue is new; a reset by
                // one of its calls loses what was in it (whether a call
                // that may fault was announced: assume so).
                Err(QueueError::PeerRestarted(_)) => {
                    self.armed = !core::mem::take(&mut self.restarted);
                }
            }
        }
    }

    /// Counts a fault of `hostile`; one that is not the core refusing a
    /// call is reported (the first few).
    fn fault(&mut self, record: &FaultRecord) {
        self.faults += 1;
        if !core::mem::take(&mut self.armed) {
            self.unpredicted += 1;
            if self.unpredicted <= REPORTED_OTHERS {
                println!(
                    "FUZZ hostile faulted at a call the rules say returns: kind {}, address {:#x}, detail {:#x}, rip {:#x}",
                    record.kind, record.address, record.detail, record.rip
                );
            }
        }
        match FaultKind::from_u32(record.kind) {
            Some(FaultKind::BadSyscall) => self.unknown_call += 1,
            Some(FaultKind::BadPointer) => self.bad_pointer += 1,
            Some(FaultKind::BadArgument) => self.bad_argument += 1,
            Some(FaultKind::BadCapability) => self.bad_capability += 1,
            Some(FaultKind::Panic) => self.panic += 1,
            kind => {
                self.other += 1;
                if self.other <= REPORTED_OTHERS {
                    println!(
                        "FUZZ unexpected fault of hostile: {} (kind {}), address {:#x}, detail {:#x}, rip {:#x}",
                        kind.map_or("unknown kind", FaultKind::describe),
                        record.kind,
                        record.address,
                        record.detail,
                        record.rip
                    );
                }
            }
        }
    }

    fn line(&self) {
        println!(
            "FUZZ total {} calls, {} faults, {} restarts",
            self.calls, self.faults, self.restarts
        );
        println!(
            "FUZZ faults: {} unknown call, {} bad pointer, {} bad argument, {} bad capability, {} panic, {} other; {} not predicted; {} predicted calls returned",
            self.unknown_call,
            self.bad_pointer,
            self.bad_argument,
            self.bad_capability,
            self.panic,
            self.other,
            self.unpredicted,
            self.survived
        );
    }

    /// Prints the totals when another `every` calls have been counted.
    fn maybe_line(&mut self, every: u64) {
        if every > 0 && self.calls >= self.next_line {
            self.line();
            while self.next_line <= self.calls {
                self.next_line = self.next_line.saturating_add(every);
            }
        }
    }
}

fn main(start: &runtime::Start) -> i32 {
    let arguments = start.arguments(&["calls", "every"]).or_exit();
    // `calls=forever`, or a number.
    let target: Option<u64> = match arguments.text("calls") {
        Some("forever") => None,
        _ => Some(arguments.number("calls", 10_000).or_exit()),
    };
    let every: u64 = arguments.number("every", 100_000).or_exit();
    let hostile = start
        .resource("hostile", ResourceKind::Supervised)
        .and_then(|r| r.view());
    let (Ok(mut progress), Some(ResourceView::Supervised(hostile))) =
        (Receiver::<u64>::open(start, "progress"), hostile)
    else {
        println!("TEST hostile FAIL: needs a 'progress' queue and to supervise 'hostile'");
        return 1;
    };
    let (handle, fault_bit) = (hostile.control, hostile.fault_bit);
    let mut tally = Tally {
        next_line: every,
        ..Tally::default()
    };
    let begun_ns = syscall::time_ns();
    let done = |tally: &Tally| target.is_some_and(|target| tally.calls >= target);
    while !done(&tally) {
        tally.drain(&mut progress);
        tally.maybe_line(every);
        let mask = (1 << fault_bit) | (1 << progress.bit());
        let bits = notification::wait_for(mask, Some(1_000_000));
        if bits.is_some_and(|bits| bits & (1 << fault_bit) != 0) {
            // Count everything the dead life reported before the restart
            // resets the queue.
            tally.drain(&mut progress);
            let Some(record) = syscall::component_fault(handle) else {
                println!("TEST hostile FAIL: hostile exited on its own");
                return 1;
            };
            tally.fault(&record);
            if !done(&tally) {
                syscall::component_restart(handle);
                tally.restarts += 1;
                tally.restarted = true;
            }
        }
    }
    syscall::component_stop(handle);
    tally.line();
    if tally.other + tally.unpredicted + tally.survived > 0 {
        println!(
            "TEST hostile FAIL: the core and its rules disagree: of {} faults {} were not the core refusing a call and {} came at calls the rules say return; {} calls the rules say fault returned",
            tally.faults, tally.other, tally.unpredicted, tally.survived
        );
        return 1;
    }
    let ms = ((syscall::time_ns() - begun_ns) / 1_000_000).max(1);
    println!(
        "TEST hostile PASS: {} hostile calls, {} of them fatal to the caller, in {ms} ms ({} calls/s); the core and the other components carried on",
        tally.calls,
        tally.faults,
        tally.calls.saturating_mul(1000) / ms
    );
    0
}
