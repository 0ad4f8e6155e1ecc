//! The server half of the ping-pong test: answers every request on
//! `requests` with its reply on `replies`, checking that requests arrive
//! once and in order, until the stop message. A request of
//! [`echo_api::SILENT`] is taken and not answered, and pong then keeps
//! the CPU for [`SILENT_SPIN_MS`] without a system call, so that only the
//! core's alarm can end ping's timed wait for the answer meanwhile. The first request of
//! each life sets the sequence it expects (after a restart, ping sends
//! again from the first request it has no answer to).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use echo_api::{Message, SILENT, STOP};
use runtime::arguments::OrExit;
use runtime::println;
use runtime::queue::{Receiver, Sender};

runtime::component!(main);

/// How long pong computes after a [`SILENT`] request.
const SILENT_SPIN_MS: u64 = 100;

fn main(start: &runtime::Start) -> i32 {
    start.arguments(&[]).or_exit();
    let (Ok(mut requests), Ok(mut replies)) = (
        Receiver::<Message>::open(start, "requests"),
        Sender::<Message>::open(start, "replies").map(Sender::deferring),
    ) else {
        println!("the 'requests' and 'replies' queues were not given");
        return 1;
    };
    let mut expected = 0u64;
    let mut first = true;
    let mut batch = [Message::default(); 64];
    let mut answers = [Message::default(); 64];
    loop {
        let count = match requests.receive_batch(&mut batch) {
            Ok(count) => count,
            Err(error) => {
                println!("receive failed: {error:?}");
                return 1;
            }
        };
        let mut replied = 0;
        for request in &batch[..count] {
            if request.sequence == STOP {
                let _ = replies.send_batch(&answers[..replied]);
                println!("served {expected} requests, all in order and intact");
                return 0;
            }
            if request.sequence == SILENT {
                spin(start.tsc_hz() / 1000 * SILENT_SPIN_MS);
                continue;
            }
            // The bench phase restarts its sequence at 0.
            if first || (request.sequence == 0 && expected != 0) {
                expected = request.sequence;
                first = false;
            }
            if !request.is_request(expected) {
                println!(
                    "request {expected} wrong or out of order (got sequence {})",
                    request.sequence
                );
                return 1;
            }
            answers[replied] = request.reply();
            replied += 1;
            expected += 1;
        }
        if let Err(error) = replies.send_batch(&answers[..replied]) {
            println!("send failed: {error:?}");
            return 1;
        }
    }
}

/// Runs for `ticks` TSC ticks without a system call.
fn spin(ticks: u64) {
    let begin = runtime::rdtsc();
    while runtime::rdtsc().wrapping_sub(begin) < ticks {
        core::hint::spin_loop();
    }
}
