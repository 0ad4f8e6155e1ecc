//! The client half of the ping-pong test: sends `rounds` requests (default
//! 100,000) to pong over the `requests` queue, in batches, and checks that
//! every reply on `replies` arrives once, in order, with its content. Then,
//! if `bench=N` is given, measures N strict round trips (one message each
//! way) in instructions under `-icount`. Ends by sending the stop message.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use echo_api::{Message, STOP};
use runtime::arguments::OrExit;
use runtime::queue::{Receiver, Sender};
use runtime::{println, rdtsc};

runtime::component!(main);

/// Requests in flight at most (well under the ring size).
const WINDOW: u64 = 64;

fn main(start: &runtime::Start) -> i32 {
    let arguments = start.arguments(&["rounds", "bench"]).or_exit();
    let rounds: u64 = arguments.number("rounds", 100_000).or_exit();
    let bench: u64 = arguments.number("bench", 0).or_exit();
    let (Ok(mut requests), Ok(mut replies)) = (
        Sender::<Message>::open(start, "requests").map(Sender::deferring),
        Receiver::<Message>::open(start, "replies"),
    ) else {
        println!("TEST ping-pong FAIL: the 'requests' and 'replies' queues were not given");
        return 1;
    };
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut batch = [Message::default(); WINDOW as usize];
    while received < rounds {
        let room = (WINDOW - (sent - received)).min(rounds - sent);
        for (i, message) in batch[..room as usize].iter_mut().enumerate() {
            *message = Message::request(sent + i as u64);
        }
        if let Err(error) = requests.send_batch(&batch[..room as usize]) {
            println!("TEST ping-pong FAIL: send failed: {error:?}");
            return 1;
        }
        sent += room;
        let count = match replies.receive_batch(&mut batch) {
            Ok(count) => count,
            Err(error) => {
                println!("TEST ping-pong FAIL: receive failed: {error:?}");
                return 1;
            }
        };
        for reply in &batch[..count] {
            if !reply.is_reply(received) {
                println!(
                    "TEST ping-pong FAIL: reply {received} wrong or out of order (got sequence {})",
                    reply.sequence
                );
                return 1;
            }
            received += 1;
        }
    }
    println!("TEST ping-pong PASS: {rounds} messages each way, every one once, in order, intact");
    if bench > 0 {
        let (mut request, mut reply) = (Message::default(), Message::default());
        let begin = rdtsc();
        for sequence in 0..bench {
            request.make_request(sequence);
            let answered = requests
                .send(&request)
                .and_then(|()| replies.receive_into(&mut reply));
            if answered.is_err() || !reply.is_reply(sequence) {
                println!("BENCH ipc-round-trip failed at {sequence}");
                return 1;
            }
        }
        let per = (rdtsc() - begin) / bench;
        println!(
            "BENCH ipc-round-trip {per} instructions/round-trip ({bench} round trips, 64-byte messages, two address spaces)"
        );
    }
    let stop = Message {
        sequence: STOP,
        payload: [0; 7],
    };
    if requests.send(&stop).is_err() {
        return 1;
    }
    0
}
