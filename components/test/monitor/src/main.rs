//! Runs the hostile test: counts the calls the `hostile` component
//! announces on the `progress` queue, restarts it whenever it faults, and
//! once `calls` (default 10,000) have been made, stops it and reports. The
//! monitor supervises `hostile` (its control capability is named so).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use runtime::abi::start::{ResourceKind, ResourceView};
use runtime::arguments::OrExit;
use runtime::queue::{QueueError, Receiver};
use runtime::{notification, println, syscall};

runtime::component!(main);

/// Counts announced calls; numbers restart at 1 in each life of `hostile`.
struct Counter {
    calls: u64,
    last: u64,
}

impl Counter {
    fn drain(&mut self, progress: &mut Receiver<u64>) {
        let mut batch = [0u64; 64];
        loop {
            match progress.try_receive_batch(&mut batch) {
                Ok(0) | Err(QueueError::WouldBlock) => return,
                Ok(count) => {
                    for &announced in &batch[..count] {
                        self.calls += if announced > self.last {
                            announced - self.last
                        } else {
                            announced
                        };
                        self.last = announced;
                    }
                }
                Err(QueueError::PeerRestarted(_)) => self.last = 0,
            }
        }
    }
}

fn main(start: &runtime::Start) -> i32 {
    let target: u64 = start
        .arguments(&["calls"])
        .or_exit()
        .number("calls", 10_000)
        .or_exit();
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
    let mut counter = Counter { calls: 0, last: 0 };
    let mut faults = 0u64;
    while counter.calls < target {
        counter.drain(&mut progress);
        let mask = (1 << fault_bit) | (1 << progress.bit());
        let bits = notification::wait_for(mask, Some(1_000_000));
        if bits.is_some_and(|bits| bits & (1 << fault_bit) != 0) {
            // Count everything the dead life announced before the restart
            // resets the queue.
            counter.drain(&mut progress);
            if syscall::component_fault(handle).is_none() {
                println!("TEST hostile FAIL: hostile exited on its own");
                return 1;
            }
            faults += 1;
            if counter.calls < target {
                syscall::component_restart(handle);
            }
        }
    }
    syscall::component_stop(handle);
    println!(
        "TEST hostile PASS: {} hostile calls, {faults} of them fatal to the caller; the core and the other components carried on",
        counter.calls
    );
    0
}
