//! The client half of the ping-pong test: sends `rounds` requests (default
//! 100,000) to pong over the `requests` queue, in batches, and checks that
//! every reply on `replies` arrives once, in order, with its content.
//! `for_ms=N` keeps the exchange going until N ms have passed as well (the
//! load the IPC fast path's scenarios run beside their rivals);
//! `restarts=1` lets pong restart meanwhile: the queues then report it,
//! the requests not yet answered are sent again, and the restarts are
//! counted. `timeout_check=1` then sends a request pong does not answer
//! ([`echo_api::SILENT`]; pong computes for 100 ms instead) and checks
//! that a 5 ms timed receive times out within 30 ms. `spin_check=1` sends
//! such a request and then one pong answers, and waits for the answer
//! without a timeout. Then, if `bench=N` is given, measures N strict round
//! trips (one message each way) in instructions under `-icount`. Ends by
//! sending the stop message. Given the endpoint capability `echo` (a
//! `[calls.echo]` to pong; `endpoint=NAME` names another) it does all of
//! this over calls instead (`calls`).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use echo_api::{Message, SILENT, STOP};
use runtime::arguments::OrExit;
use runtime::endpoint::Client;
use runtime::queue::{QueueError, Receiver, Sender};
use runtime::{println, rdtsc, syscall};

mod calls;

runtime::component!(main);

/// Requests in flight at most (well under the ring size).
const WINDOW: u64 = 64;

/// The timed receive of `timeout_check`, and the most it may take.
const TIMEOUT_US: u64 = 5_000;
const TIMEOUT_LATE_MS: u64 = 30;

fn main(start: &runtime::Start) -> i32 {
    let arguments = start
        .arguments(&[
            "rounds",
            "bench",
            "for_ms",
            "restarts",
            "timeout_check",
            "spin_check",
            "endpoint",
            "held_check",
            "hang_check",
        ])
        .or_exit();
    let rounds: u64 = arguments.number("rounds", 100_000).or_exit();
    let bench: u64 = arguments.number("bench", 0).or_exit();
    let for_ms: u64 = arguments.number("for_ms", 0).or_exit();
    let restarts_allowed = arguments.number("restarts", 0u64).or_exit() != 0;
    let timeout_check = arguments.number("timeout_check", 0u64).or_exit() != 0;
    let spin_check = arguments.number("spin_check", 0u64).or_exit() != 0;
    let held_check = arguments.number("held_check", 0u64).or_exit() != 0;
    let hang_check = arguments.number("hang_check", 0u64).or_exit() != 0;
    let endpoint = arguments.text("endpoint").unwrap_or("echo");
    if let Some(client) = Client::open(start, endpoint) {
        let plan = calls::Plan {
            rounds,
            for_ms,
            restarts_allowed,
            timeout_check,
            spin_check,
            bench,
            held_check,
            hang_check,
        };
        return calls::run(&client, &plan);
    }
    let (Ok(mut requests), Ok(mut replies)) = (
        Sender::<Message>::open(start, "requests").map(Sender::deferring),
        Receiver::<Message>::open(start, "replies"),
    ) else {
        println!("TEST ping-pong FAIL: the 'requests' and 'replies' queues were not given");
        return 1;
    };
    let begin_ns = syscall::time_ns();
    let running_ms = || (syscall::time_ns() - begin_ns) / 1_000_000;
    // With a time to run, the count only sets the least.
    let limit = if for_ms > 0 { u64::MAX } else { rounds };
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut restarts = 0u64;
    let mut batch = [Message::default(); WINDOW as usize];
    while received < limit {
        if for_ms > 0 && received >= rounds && sent == received && running_ms() >= for_ms {
            break;
        }
        let room = (WINDOW - (sent - received)).min(limit - sent);
        for (i, message) in batch[..room as usize].iter_mut().enumerate() {
            *message = Message::request(sent + i as u64);
        }
        let outcome = requests
            .send_batch(&batch[..room as usize])
            .map(|()| sent += room)
            .and_then(|()| replies.receive_batch(&mut batch));
        let count = match outcome {
            Ok(count) => count,
            Err(QueueError::PeerRestarted(_)) if restarts_allowed => {
                // Both queues were reset (the core resets every queue
                // between the two at a restart): the other end learns of
                // it now too, so that one restart is not taken for two,
                // and what was not answered is sent again.
                let _ = requests.try_send_batch(&[]);
                let _ = replies.try_receive_batch(&mut []);
                restarts += 1;
                sent = received;
                continue;
            }
            Err(error) => {
                println!("TEST ping-pong FAIL: exchange failed: {error:?}");
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
    if restarts_allowed {
        println!(
            "TEST ping-pong PASS: {received} messages each way, every one once, in order, intact; {restarts} restarts of pong"
        );
    } else {
        println!(
            "TEST ping-pong PASS: {received} messages each way, every one once, in order, intact"
        );
    }
    if timeout_check && !times_out_on_time(&mut requests, &mut replies) {
        return 1;
    }
    if spin_check {
        // A request pong computes on for 100 ms, then one it answers,
        // awaited without a timeout (so the wake-up may take the fast path).
        let silent = Message {
            sequence: SILENT,
            payload: [0; 7],
        };
        let mut reply = Message::default();
        let answered = requests
            .send(&silent)
            .and_then(|()| requests.send(&Message::request(received)))
            .and_then(|()| replies.receive_into(&mut reply));
        if answered.is_err() || !reply.is_reply(received) {
            println!("TEST ping-pong FAIL: no answer after pong's long request");
            return 1;
        }
        println!("TEST ipc-spin PASS: pong answered after computing for 100 ms");
    }
    if bench > 0 && !bench_queues(&mut requests, &mut replies, bench) {
        return 1;
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

/// Times `bench` strict round trips through the queues and prints the
/// figure; `false` when one fails. Its own function, so that the send and
/// the receive are compiled into the timed loop whatever else `main`
/// holds.
#[inline(never)]
fn bench_queues(
    requests: &mut Sender<Message>,
    replies: &mut Receiver<Message>,
    bench: u64,
) -> bool {
    let (mut request, mut reply) = (Message::default(), Message::default());
    let begin = rdtsc();
    for sequence in 0..bench {
        request.make_request(sequence);
        let answered = requests
            .send(&request)
            .and_then(|()| replies.receive_into(&mut reply));
        if answered.is_err() || !reply.is_reply(sequence) {
            println!("BENCH queue-round-trip failed at {sequence}");
            return false;
        }
    }
    let per = (rdtsc() - begin) / bench;
    println!(
        "BENCH queue-round-trip {per} instructions/round-trip ({bench} round trips, 64-byte messages through a queue pair, two address spaces)"
    );
    true
}

/// Sends a request pong leaves unanswered and waits for its reply for
/// [`TIMEOUT_US`]: the receive must time out, and by
/// [`TIMEOUT_LATE_MS`] (the wake-up rides on the same `SignalWait` as the
/// request's signal, so the core's IPC fast path must not take it
/// without arming the timeout).
fn times_out_on_time(requests: &mut Sender<Message>, replies: &mut Receiver<Message>) -> bool {
    let silent = Message {
        sequence: SILENT,
        payload: [0; 7],
    };
    if requests.send(&silent).is_err() {
        println!("TEST ipc-timeout FAIL: the request could not be sent");
        return false;
    }
    let begin_ns = syscall::time_ns();
    let outcome = replies.receive_timeout(Some(TIMEOUT_US));
    let waited_us = (syscall::time_ns() - begin_ns) / 1000;
    match outcome {
        Err(QueueError::WouldBlock) if waited_us < TIMEOUT_LATE_MS * 1000 => {
            println!("TEST ipc-timeout PASS: a 5 ms receive timed out after {waited_us} us");
            true
        }
        Err(QueueError::WouldBlock) => {
            println!("TEST ipc-timeout FAIL: a 5 ms receive timed out only after {waited_us} us");
            false
        }
        other => {
            println!("TEST ipc-timeout FAIL: the receive ended with {other:?}");
            false
        }
    }
}
