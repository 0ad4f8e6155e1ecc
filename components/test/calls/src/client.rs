//! The clients' side of the script (see the crate documentation): `low`
//! and `high` each call the server through their one endpoint and wait
//! for their `go-NAME` notification between steps.

use runtime::abi::spec::CapabilityKind;
use runtime::abi::start::ResourceView;
use runtime::endpoint::{CallError, Client};
use runtime::{Start, notification, println, syscall};

use crate::{AFTER, AGAIN, DECLINE, EXIT, HELLO, LAST, QUEUED, SLOW, SPIN_MS, TIMED};
use crate::{answer, request};

/// High's timed call, and the most it may take: well under [`SPIN_MS`],
/// so that a call that waited for the server could not pass.
const TIMEOUT_US: u64 = 20_000;
const TIMEOUT_LATE_US: u64 = 250_000;

/// The most a call to a server gone for good may take.
const GONE_LATE_US: u64 = 50_000;

pub fn run(start: &Start, high: bool) -> i32 {
    let Some(server) = endpoint(start) else {
        println!("TEST call-names FAIL: no endpoint capability");
        return 1;
    };
    let Some(go) = crate::incoming(start, "call-queue") else {
        return 1;
    };
    let name = start.name();
    let passed = if high {
        hello(&server, name)
            && wait(go)
            && queued(&server, name, 1)
            && wait(go)
            && times_out(&server, name)
            && wait(go)
            && server_gone(&server, EXIT, "taken")
    } else {
        declined(&server)
            && hello(&server, name)
            && wait(go)
            && queued(&server, name, 2)
            && wait(go)
            && server_gone(&server, LAST, "waiting")
    };
    if passed { 0 } else { 1 }
}

/// The client's one endpoint capability.
fn endpoint(start: &Start) -> Option<Client> {
    let (name, _) = start.views().find(|(_, view)| {
        matches!(view, ResourceView::Capability { kind, .. } if *kind == CapabilityKind::Endpoint as u32)
    })?;
    Client::open(start, name)
}

/// Waits for the nudge's next `go`.
fn wait(go: u64) -> bool {
    notification::wait_for(go, None);
    true
}

/// `call-names`: the server names this caller from its badge.
fn hello(server: &Client, name: &str) -> bool {
    let mut message = request(HELLO);
    match server.call(&mut message, None) {
        Ok(()) if message == answer(HELLO, name, 0) => {
            println!("TEST call-names PASS: the server knew this caller as '{name}'");
            true
        }
        Ok(()) => {
            println!("TEST call-names FAIL: the answer does not name '{name}': {message:x?}");
            false
        }
        Err(error) => {
            println!("TEST call-names FAIL: HELLO ended {error:?}");
            false
        }
    }
}

/// `call-decline`: a declined request ends `Unanswered`.
fn declined(server: &Client) -> bool {
    let mut message = request(DECLINE);
    match server.call(&mut message, None) {
        Err(CallError::Unanswered) => {
            println!("TEST call-decline PASS: the declined call ended Unanswered");
            true
        }
        other => {
            println!("TEST call-decline FAIL: the declined call ended {other:?}");
            false
        }
    }
}

/// A request made while the server is busy, answered as the `order`th
/// it took (the server prints `call-queue`).
fn queued(server: &Client, name: &str, order: u64) -> bool {
    let mut message = request(QUEUED);
    match server.call(&mut message, None) {
        Ok(()) if message == answer(QUEUED, name, order) => {
            println!("the waiting request was taken as number {order}");
            true
        }
        other => {
            println!(
                "TEST call-queue FAIL: expected to be taken as number {order}: {other:?}, {message:x?}"
            );
            false
        }
    }
}

/// `call-timeout`: after SLOW the server computes for [`SPIN_MS`]; a call
/// with a [`TIMEOUT_US`] timeout waits meanwhile and must time out on
/// time (high shares the server's priority, so it runs again at once),
/// and the next call is answered.
fn times_out(server: &Client, name: &str) -> bool {
    let mut message = request(SLOW);
    if server.call(&mut message, None) != Ok(()) || message != answer(SLOW, name, 0) {
        println!("TEST call-timeout FAIL: SLOW was not answered: {message:x?}");
        return false;
    }
    let begin_ns = syscall::time_ns();
    let outcome = server.call(&mut request(TIMED), Some(TIMEOUT_US));
    let waited_us = (syscall::time_ns() - begin_ns) / 1000;
    let on_time = (TIMEOUT_US..TIMEOUT_LATE_US).contains(&waited_us);
    if outcome != Err(CallError::TimedOut) || !on_time {
        println!(
            "TEST call-timeout FAIL: a {TIMEOUT_US} us call ended {outcome:?} after {waited_us} us"
        );
        return false;
    }
    let mut message = request(AFTER);
    match server.call(&mut message, None) {
        Ok(()) if message == answer(AFTER, name, 0) => {
            println!(
                "TEST call-timeout PASS: a {TIMEOUT_US} us call waiting on a server computing for {SPIN_MS} ms timed out after {waited_us} us; the next call was answered"
            );
            true
        }
        other => {
            println!(
                "TEST call-timeout FAIL: the call after the timeout ended {other:?}, {message:x?}"
            );
            false
        }
    }
}

/// `call-server-gone`: the request `kind` ends `Unanswered` when the
/// server exits (it is `state`: taken or waiting), and so does a call
/// made after that, at once.
fn server_gone(server: &Client, kind: u64, state: &str) -> bool {
    let outcome = server.call(&mut request(kind), None);
    if outcome != Err(CallError::Unanswered) {
        println!("TEST call-server-gone FAIL: the {state} call ended {outcome:?}");
        return false;
    }
    let begin_ns = syscall::time_ns();
    // A timeout, so that a call left waiting shows as TimedOut.
    let again = server.call(&mut request(AGAIN), Some(1_000_000));
    let waited_us = (syscall::time_ns() - begin_ns) / 1000;
    if again != Err(CallError::Unanswered) || waited_us >= GONE_LATE_US {
        println!(
            "TEST call-server-gone FAIL: a call after the server exited ended {again:?} after {waited_us} us"
        );
        return false;
    }
    println!(
        "TEST call-server-gone PASS: the {state} call ended Unanswered when the server exited; the next one after {waited_us} us"
    );
    true
}
