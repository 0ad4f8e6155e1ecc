//! The surviving end of the fault-restart test: receives work items on
//! the `work` queue and carries on when the sender restarts (the queue
//! reports the restart through its generation). It ends after `idle_ms`
//! (default 500) without messages, reporting what it saw.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use runtime::arguments::OrExit;
use runtime::println;
use runtime::queue::{QueueError, Receiver};

runtime::component!(main);

fn main(start: &runtime::Start) -> i32 {
    let idle_ms: u64 = start
        .arguments(&["idle_ms"])
        .or_exit()
        .number("idle_ms", 500)
        .or_exit();
    let Ok(mut work) = Receiver::<u64>::open(start, "work") else {
        println!("no 'work' queue was given");
        return 1;
    };
    let (mut received, mut restarts) = (0u64, 0u32);
    loop {
        match work.receive_timeout(Some(idle_ms * 1000)) {
            Ok(_) => received += 1,
            Err(QueueError::PeerRestarted(generation)) => {
                restarts += 1;
                println!("the sender restarted (queue generation {generation}); carrying on");
            }
            Err(QueueError::WouldBlock) => {
                println!(
                    "no work for {idle_ms} ms: received {received} items, saw {restarts} restart(s)"
                );
                return 0;
            }
        }
    }
}
