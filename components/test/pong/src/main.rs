//! The server half of the ping-pong test: answers every request on
//! `requests` with its reply on `replies`, checking that requests arrive
//! once and in order, until the stop message. A request of
//! [`echo_api::SILENT`] is taken and not answered, and pong then keeps
//! the CPU for [`SILENT_SPIN_MS`] without a system call, so that only the
//! core's alarm can end ping's timed wait for the answer meanwhile. The first request of
//! each life sets the sequence it expects (after a restart, ping sends
//! again from the first request it has no answer to). With `calls=1` it
//! serves the same exchange as calls instead (`serve_calls`). With
//! `go_at=N` it signals the notification `go` once, while it serves the
//! Nth request: what that wakes becomes ready between a request and its
//! answer (scenarios `ipc-fast-woken-rival`, `ipc-call-woken-rival`).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use echo_api::{Message, SILENT, STOP, is_all};
use runtime::abi::start::ResourceView;
use runtime::arguments::OrExit;
use runtime::endpoint::{Served, Server};
use runtime::notification;
use runtime::println;
use runtime::queue::{Receiver, Sender};

runtime::component!(main);

/// How long pong computes after a [`SILENT`] request.
const SILENT_SPIN_MS: u64 = 100;

fn main(start: &runtime::Start) -> i32 {
    let arguments = start
        .arguments(&[
            "calls",
            "serve_timeout_ms",
            "yielding",
            "kicks",
            "go_at",
            "hold_at",
            "hold_ms",
            "poke",
        ])
        .or_exit();
    if arguments.number("poke", 0u64).or_exit() != 0 {
        return poke(start);
    }
    let kicks: u64 = arguments.number("kicks", 0).or_exit();
    if kicks > 0 {
        return kick(start, kicks);
    }
    if arguments.number("yielding", 0u64).or_exit() != 0 {
        return serve_yielding(start);
    }
    let go = match arguments.optional_number::<u64>("go_at").or_exit() {
        None => None,
        Some(at) => match start.capability("go") {
            Some(go) => Some((at, go)),
            None => {
                println!("'go_at={at}' without the notification 'go' to signal");
                return 1;
            }
        },
    };
    if arguments.number("calls", 0u64).or_exit() != 0 {
        let timeout_ms: u64 = arguments.number("serve_timeout_ms", 0).or_exit();
        let timeout_us = (timeout_ms > 0).then_some(timeout_ms * 1000);
        let hold = arguments
            .optional_number::<u64>("hold_at")
            .or_exit()
            .map(|at| (at, arguments.number("hold_ms", 20u64).or_exit() * 1000));
        return serve_calls(start, timeout_us, go, hold);
    }
    // The check for `go` costs nothing where there is none (the
    // benchmark's loop): the loop is made once for each case.
    match go {
        None => serve_queues(start, None),
        Some(go) => serve_queues(start, Some(go)),
    }
}

/// Answers every request on `requests` with its reply on `replies`
/// until the stop message (see the module's description).
#[inline(always)]
fn serve_queues(start: &runtime::Start, go: Option<(u64, u64)>) -> i32 {
    let (Ok(mut requests), Ok(mut replies)) = (
        Receiver::<Message>::open(start, "requests"),
        Sender::<Message>::open(start, "replies").map(Sender::deferring),
    ) else {
        println!("the 'requests' and 'replies' queues were not given");
        return 1;
    };
    let mut expected = 0u64;
    let mut first = true;
    let mut served = 0u64;
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
            served += 1;
            if go.is_some_and(|(at, _)| served == at) {
                at_event(served, go, None);
            }
        }
        if let Err(error) = replies.send_batch(&answers[..replied]) {
            println!("send failed: {error:?}");
            return 1;
        }
    }
}

/// Serves ping's calls (`calls=1`, a `[calls.echo]` from ping): every
/// request answered with its words inverted after checking it is the
/// next in order (ping checks every word of the reply:
/// [`echo_api::call_request`]); a [`SILENT`] request is
/// answered only after computing for [`SILENT_SPIN_MS`]; [`STOP`] is
/// answered and ends pong. With `serve_timeout_ms=N` each wait for a
/// call ends after N ms (and pong waits again): an alarm always armed.
///
/// With `hold_at=N` it waits `hold_ms` (default 20) before replying to
/// the Nth call, its caller blocked in `Call` meanwhile (scenario
/// `ipc-fast-calling-target`).
fn serve_calls(
    start: &runtime::Start,
    timeout_us: Option<u64>,
    go: Option<(u64, u64)>,
    hold: Option<(u64, u64)>,
) -> i32 {
    // One compare per call for both (the benchmark's loop has neither).
    let next = |served: u64| {
        [go, hold]
            .into_iter()
            .flatten()
            .map(|(at, _)| at)
            .filter(|&at| at > served)
            .min()
            .unwrap_or(u64::MAX)
    };
    let mut due = next(0);
    let mut server = Server::new();
    let mut message = [0u64; 8];
    let mut reply = false;
    // The sequence expected next; none before the first request of a life.
    let mut expected = None;
    let mut served = 0u64;
    loop {
        let request = server.reply_wait(&mut message, reply, timeout_us);
        reply = matches!(request, Served::Request { .. });
        if !reply {
            continue;
        }
        let sequence = message[0];
        // The common case first: the next request in order.
        if Some(sequence) != expected {
            if sequence == STOP && is_all(&message, STOP) {
                message = [!STOP; 8];
                let _ = server.reply_wait(&mut message, true, Some(0));
                println!("served {served} calls, all in order");
                return 0;
            }
            if sequence == SILENT && is_all(&message, SILENT) {
                spin(start.tsc_hz() / 1000 * SILENT_SPIN_MS);
                message = [!SILENT; 8];
                continue;
            }
            // The first request of a life sets the order; the bench
            // phase restarts it at 0. The order here; ping checks every
            // word of the reply, which is this request inverted.
            if expected.is_some() && sequence != 0 {
                println!(
                    "call {} out of order (got sequence {sequence:#x})",
                    expected.unwrap_or(0)
                );
                return 1;
            }
        }
        expected = Some(sequence.wrapping_add(1));
        served += 1;
        if served == due {
            at_event(served, go, hold);
            due = next(served);
        }
        for word in &mut message {
            *word = !*word;
        }
    }
}

/// What `go_at=` and `hold_at=` ask at the `served`-th call.
#[cold]
#[inline(never)]
fn at_event(served: u64, go: Option<(u64, u64)>, hold: Option<(u64, u64)>) {
    if let Some((at, go)) = go
        && served == at
    {
        runtime::syscall::signal(go);
    }
    if let Some((at, hold_us)) = hold
        && served == at
    {
        runtime::syscall::wait(Some(hold_us));
    }
}

/// `poke=1`: signals the notification `poke` once with `SignalWait`,
/// waiting [`POKE_WAIT_MS`] for nothing after it, and ends. At the
/// lowest priority it runs only when every other component is blocked:
/// with a `hold_at=` pong, while pong holds its caller's reply — so the
/// signal goes to a component blocked in `Call`, which must stay blocked
/// with the bit pending, not be woken as if from `Wait` with its request
/// taken for the reply (scenario `ipc-fast-calling-target`).
fn poke(start: &runtime::Start) -> i32 {
    let Some(poke) = start.capability("poke") else {
        println!("'poke=1' without the notification 'poke' to signal");
        return 1;
    };
    println!("poking");
    runtime::syscall::signal_wait(Some(poke), Some(POKE_WAIT_MS * 1000));
    println!("poked");
    0
}

/// How long `poke=1` waits after its signal: past a `hold_ms` alarm, so
/// that the signal could take the fast path.
const POKE_WAIT_MS: u64 = 200;

/// `yielding=1`: serves every caller on its start page at once, each
/// one's requests checked in order by badge, and gives up the processor
/// before each reply, so that another caller's request arrives while one
/// is being answered. The reply must then not take the fast path, which
/// would switch to its caller and leave that request waiting on a server
/// that waits for requests (scenario `ipc-call-waiting`: the other caller
/// would hang). Ends after a stop from every caller. Given the capability
/// `ack`, it acknowledges every signal (a `kicks=` pong's kick) at once.
fn serve_yielding(start: &runtime::Start) -> i32 {
    let callers = start
        .views()
        .filter(|(_, view)| matches!(view, ResourceView::Caller { .. }))
        .count();
    let ack = start.capability("ack");
    let mut server = Server::new();
    let mut message = [0u64; 8];
    let mut reply = false;
    // The next sequence of each caller, by badge.
    let mut expected = [0u64; 8];
    let (mut stops, mut served) = (0, 0u64);
    loop {
        let Served::Request { badge } = server.reply_wait(&mut message, reply, None) else {
            // A kick (`kicks=`): acknowledged at once.
            if let Some(ack) = ack
                && notification::take(!0) != 0
            {
                runtime::syscall::signal(ack);
            }
            reply = false;
            continue;
        };
        reply = true;
        let Some(next) = expected.get_mut(badge as usize) else {
            println!("a caller with badge {badge}: more than this test serves");
            return 1;
        };
        if is_all(&message, STOP) {
            stops += 1;
            message = [!STOP; 8];
            if stops == callers {
                let _ = server.reply_wait(&mut message, true, Some(0));
                println!("served {served} calls from {callers} callers, each in order");
                return 0;
            }
            continue;
        }
        if message[0] != *next {
            println!(
                "call {} of badge {badge} out of order (got sequence {:#x})",
                *next, message[0]
            );
            return 1;
        }
        *next += 1;
        served += 1;
        runtime::syscall::yield_now();
        for word in &mut message {
            *word = !*word;
        }
    }
}

/// `kicks=N`: signals the serving pong (capability `kick`) N times, each
/// time waiting at most [`KICK_LATE_MS`] for its acknowledgement (bit
/// `ack`). A kick lands while pong yields between a request and its
/// reply, so the reply's `ReplyWait` finds the bit pending: it must end
/// with the bit at once, not take the fast path to the caller and leave
/// the bit for after the next request (scenario `ipc-call-kicked`:
/// without that test, pong sees the kick only once its callers stop).
fn kick(start: &runtime::Start, kicks: u64) -> i32 {
    let (Some(kick), Some(ack)) = (start.capability("kick"), start.incoming("ack")) else {
        println!("TEST call-kicked FAIL: the 'kick' and 'ack' notifications were not given");
        return 1;
    };
    for count in 0..kicks {
        runtime::syscall::signal(kick);
        if notification::wait_for(ack, Some(KICK_LATE_MS * 1000)).is_none() {
            println!(
                "TEST call-kicked FAIL: kick {count} not acknowledged within {KICK_LATE_MS} ms"
            );
            return 1;
        }
    }
    println!("TEST call-kicked PASS: {kicks} kicks of a serving pong acknowledged");
    0
}

/// How long a kick may wait for its acknowledgement.
const KICK_LATE_MS: u64 = 500;

/// Runs for `ticks` TSC ticks without a system call.
fn spin(ticks: u64) {
    let begin = runtime::rdtsc();
    while runtime::rdtsc().wrapping_sub(begin) < ticks {
        core::hint::spin_loop();
    }
}
