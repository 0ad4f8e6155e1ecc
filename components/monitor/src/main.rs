//! Runs the hostile test: counts the calls the `hostile` component
//! announces on the `progress` queue, restarts it whenever it faults, and
//! once `calls` (default 10,000) have been made, stops it and reports. The
//! monitor supervises `hostile` (its control capability is named so).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use runtime::abi::start::ResourceKind;
use runtime::queue::{QueueError, Receiver};
use runtime::{notification, println, syscall};

runtime::component!(main);

fn main(start: &runtime::Start) -> i32 {
    let target: u64 = start
        .arg("calls")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let (Ok(mut progress), Some(hostile)) = (
        Receiver::<u64>::open(start, "progress"),
        start.resource("hostile", ResourceKind::Supervised),
    ) else {
        println!("TEST hostile FAIL: needs a 'progress' queue and to supervise 'hostile'");
        return 1;
    };
    let (handle, fault_bit) = (hostile.handle, hostile.bit);
    let (mut calls, mut faults, mut last) = (0u64, 0u64, 0u64);
    let mut batch = [0u64; 64];
    while calls < target {
        match progress.try_receive_batch(&mut batch) {
            Ok(0) => {}
            Ok(count) => {
                for &announced in &batch[..count] {
                    // Count each call once: numbers restart at 1 in each life.
                    calls += if announced > last {
                        announced - last
                    } else {
                        announced
                    };
                    last = announced;
                }
                continue;
            }
            Err(QueueError::PeerRestarted(_)) => last = 0,
            Err(QueueError::WouldBlock) => {}
        }
        let mask = (1 << fault_bit) | (1 << progress.bit());
        if notification::wait_for(mask, Some(1_000_000))
            .is_some_and(|bits| bits & (1 << fault_bit) != 0)
        {
            if syscall::component_fault(handle).is_some() {
                faults += 1;
                syscall::component_restart(handle);
            } else {
                println!("TEST hostile FAIL: hostile exited on its own");
                return 1;
            }
        }
    }
    syscall::component_stop(handle);
    println!(
        "TEST hostile PASS: {calls} hostile calls, {faults} of them fatal to the caller; the core and the other components carried on"
    );
    0
}
