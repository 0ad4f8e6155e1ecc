//! Ping over a synchronous call (`[calls.echo]`) instead of the queues:
//! the same checks and the same benchmark, one request in flight.
//!
//! Each request is `sequence` followed by seven words made from it
//! ([`echo_api::call_request`]); pong answers every word inverted, and
//! ping checks all eight. With `restarts=1` a call pong took and could not answer (it
//! crashed) is sent again and counted; pong's next life takes the
//! sequence from the first request it sees. `timeout_check=1` calls with
//! a request pong computes on for 100 ms before answering and a 5 ms
//! timeout, which must end the call within 30 ms; `spin_check=1` makes
//! the same call without a timeout and waits for the answer.
//! `bench=N` times N calls. `held_check=1` expects pong to end and be
//! held by its supervisor: a call ends `Unanswered`, and the next one at
//! once (a call to a server that will not serve again must not wait).
//! `hang_check=1` pauses while pong is hung and checks that the next call
//! waits for the hang's end.

use echo_api::{SILENT, STOP, call_request as request, is_call_reply as is_reply};
use runtime::endpoint::{CallError, Client};
use runtime::{println, rdtsc, syscall};

/// The most a call to a held server may take (`held_check`).
const HELD_LATE_MS: u64 = 500;

/// The timed call of `timeout_check`, and the most it may take.
const TIMEOUT_US: u64 = 5_000;
const TIMEOUT_LATE_MS: u64 = 30;

/// What ping runs, from its arguments.
pub struct Plan {
    pub rounds: u64,
    pub for_ms: u64,
    pub restarts_allowed: bool,
    pub timeout_check: bool,
    pub spin_check: bool,
    pub bench: u64,
    pub held_check: bool,
    pub hang_check: bool,
}

/// Runs `plan` against pong through `client`.
pub fn run(client: &Client, plan: &Plan) -> i32 {
    let begin_ns = syscall::time_ns();
    let running_ms = || (syscall::time_ns() - begin_ns) / 1_000_000;
    let mut sequence = 0u64;
    let mut restarts = 0u64;
    let mut unanswered_in_a_row = 0u32;
    let mut answered_ns = 0;
    // (The clock is read every 64 calls once the rounds are done.)
    while sequence < plan.rounds
        || (plan.for_ms > 0 && (!sequence.is_multiple_of(64) || running_ms() < plan.for_ms))
    {
        let mut message = request(sequence);
        match client.call(&mut message, None) {
            Ok(()) if is_reply(&message, sequence) => {
                sequence += 1;
                unanswered_in_a_row = 0;
                if plan.held_check {
                    answered_ns = syscall::time_ns();
                }
            }
            Ok(()) => {
                println!(
                    "TEST ping-pong FAIL: reply {sequence} wrong (got sequence {:#x})",
                    message[0]
                );
                return 1;
            }
            // Held by its supervisor (`held_check`): one call ends
            // Unanswered when pong crashes, and the next at once.
            Err(CallError::Unanswered) if plan.held_check && unanswered_in_a_row > 0 => {
                // Pong crashed while ping called it flat out, and its
                // supervisor holds it at once: both calls are over soon
                // after the last answer.
                let waited_us = (syscall::time_ns() - answered_ns) / 1000;
                if waited_us > HELD_LATE_MS * 1000 {
                    println!(
                        "TEST call-held FAIL: the calls to the held pong ended Unanswered only {waited_us} us after its last answer"
                    );
                    return 1;
                }
                println!(
                    "TEST call-held PASS: after {sequence} calls pong ended and was held; two calls ended Unanswered within {waited_us} us of its last answer"
                );
                return 0;
            }
            Err(CallError::Unanswered) if plan.held_check => unanswered_in_a_row += 1,
            // Pong took the request and crashed: send it again.
            Err(CallError::Unanswered) if plan.restarts_allowed => restarts += 1,
            Err(error) => {
                println!("TEST ping-pong FAIL: call {sequence} failed: {error:?}");
                return 1;
            }
        }
    }
    if plan.held_check {
        println!("TEST call-held FAIL: pong was never held");
        return 1;
    }
    if plan.restarts_allowed {
        println!(
            "TEST ping-pong PASS: {sequence} calls answered, every one once, in order, intact; {restarts} calls made again after pong ended unanswered"
        );
    } else {
        println!(
            "TEST ping-pong PASS: {sequence} calls answered, every one once, in order, intact"
        );
    }
    if plan.hang_check && !waits_while_pong_hangs(client, sequence) {
        return 1;
    }
    if plan.timeout_check && !times_out_on_time(client) {
        return 1;
    }
    if plan.spin_check {
        // A request pong computes on for 100 ms before answering, awaited
        // without a timeout (so the reply may take the fast path).
        let mut message = [SILENT; 8];
        match client.call(&mut message, None) {
            Ok(()) if echo_api::is_all(&message, !SILENT) => {
                println!("TEST ipc-spin PASS: pong answered after computing for 100 ms");
            }
            other => {
                println!("TEST ipc-spin FAIL: the long call ended with {other:?}");
                return 1;
            }
        }
    }
    if plan.bench > 0 {
        let begin = rdtsc();
        for sequence in 0..plan.bench {
            let mut message = request(sequence);
            let answered = client.call(&mut message, None);
            if answered.is_err() || !is_reply(&message, sequence) {
                println!("BENCH ipc-round-trip failed at call {sequence}");
                return 1;
            }
        }
        let per = (rdtsc() - begin) / plan.bench;
        println!(
            "BENCH ipc-round-trip {per} instructions/round-trip ({} calls, 64-byte request and reply in registers, two address spaces)",
            plan.bench
        );
    }
    let mut message = [STOP; 8];
    if client.call(&mut message, None).is_err() || !echo_api::is_all(&message, !STOP) {
        println!("TEST ping-pong FAIL: pong did not acknowledge the stop");
        return 1;
    }
    0
}

/// `hang_check`: pauses [`HANG_PAUSE_MS`] with pong waiting for requests
/// (the scenario has it hung for 1 s meanwhile, on the line this
/// prints), then calls: a hung server is not scheduled, so the call must
/// wait for the hang's end — the fast path must not switch to it. The
/// next call, pong's order kept, is request `sequence`.
#[inline(never)]
fn waits_while_pong_hangs(client: &Client, sequence: u64) -> bool {
    println!("HANG pong may be hung now");
    let _ = runtime::notification::wait_for(0, Some(HANG_PAUSE_MS * 1000));
    let begin_ns = syscall::time_ns();
    let mut message = request(sequence);
    let answered = client.call(&mut message, None);
    let waited_us = (syscall::time_ns() - begin_ns) / 1000;
    match answered {
        Ok(()) if is_reply(&message, sequence) && waited_us >= HANG_WAIT_MS * 1000 => {
            println!("TEST call-hang PASS: a call to the hung pong waited {waited_us} us");
            true
        }
        Ok(()) if is_reply(&message, sequence) => {
            println!(
                "TEST call-hang FAIL: a call to the hung pong was answered after {waited_us} us"
            );
            false
        }
        other => {
            println!("TEST call-hang FAIL: the call ended with {other:?}");
            false
        }
    }
}

/// `hang_check`'s pause, and the least its call must wait (the hang is
/// 1 s from about the pause's start: the console's delay may take up to
/// the pause's length and leave the call still waiting 600 ms).
const HANG_PAUSE_MS: u64 = 400;
const HANG_WAIT_MS: u64 = 100;

/// Calls with a request pong computes on for 100 ms, with a 5 ms timeout:
/// the call must time out, and by [`TIMEOUT_LATE_MS`] (the fast path
/// must not take it without arming the timeout).
fn times_out_on_time(client: &Client) -> bool {
    let begin_ns = syscall::time_ns();
    let outcome = client.call(&mut [SILENT; 8], Some(TIMEOUT_US));
    let waited_us = (syscall::time_ns() - begin_ns) / 1000;
    match outcome {
        Err(CallError::TimedOut) if waited_us < TIMEOUT_LATE_MS * 1000 => {
            println!("TEST ipc-timeout PASS: a 5 ms call timed out after {waited_us} us");
            true
        }
        Err(CallError::TimedOut) => {
            println!("TEST ipc-timeout FAIL: a 5 ms call timed out only after {waited_us} us");
            false
        }
        other => {
            println!("TEST ipc-timeout FAIL: the call ended with {other:?}");
            false
        }
    }
}
