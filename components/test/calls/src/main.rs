//! The semantics of synchronous calls beyond the fast paths'
//! (`build/scenarios/systems/ipc-call-semantics.toml`): one server, two
//! clients and a nudge, by `role=`:
//!
//! - `server` (priority 150) serves `low` (100) and `high` (150);
//! - `nudge` (50, the lowest) runs only when every other component is
//!   blocked, so each of its signals (`poke` to the server, `go-low` and
//!   `go-high` to the clients) starts the next step once the last one
//!   has settled: the steps are ordered by priorities and notifications,
//!   not by sleeps.
//!
//! The checks, each with its own `TEST` line:
//!
//! - `call-callers` (server): its start page lists `low` and `high` as
//!   `Caller`s with distinct nonzero badges; `call-names` (each client):
//!   the server answers `HELLO` with the name it found for the request's
//!   badge, which must be the caller's own.
//! - `call-decline` (low): a request the server declines (`ReplyWait`
//!   without a reply) ends `Unanswered`.
//! - `call-signal` (server): the nudge's `poke` while the server waits in
//!   `ReplyWait` ends it with `Served::Signalled`, the bit then in
//!   `notification::take`.
//! - `call-queue` (server): while the server waits on its notification
//!   instead, `low` calls and then `high`: both requests wait, and the
//!   server's first two `ReplyWait`s (polls) take high's first.
//! - `call-timeout` (high): a 20 ms call made while the server computes
//!   for [`SPIN_MS`] without a system call times out on time; the
//!   server's first request after computing must be high's next call
//!   (`call-after-timeout`), not the timed-out one.
//! - `call-server-gone` (each client): the server exits (no supervisor)
//!   with high's request taken and low's waiting: both end `Unanswered`,
//!   and a call after that too, at once.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use runtime::arguments::OrExit;
use runtime::endpoint::Message;
use runtime::{println, syscall};

mod client;
mod server;

runtime::component!(main);

/// The clients' names (and so the server's callers).
const LOW: &str = "low";
const HIGH: &str = "high";

/// How long the server computes after answering [`SLOW`].
const SPIN_MS: u64 = 600;

// The kinds of request, in word 0 (a reply has the kind inverted there).
/// Answered with the caller's name, as the server found it.
const HELLO: u64 = 1;
/// Declined.
const DECLINE: u64 = 2;
/// Made while the server is busy; answered with the order it was taken in.
const QUEUED: u64 = 3;
/// Answered, and then the server computes for [`SPIN_MS`].
const SLOW: u64 = 4;
/// Made with a short timeout while the server computes: never taken.
const TIMED: u64 = 5;
/// The call after the timed-out one.
const AFTER: u64 = 6;
/// Taken, and the server exits without answering it.
const EXIT: u64 = 7;
/// Waiting when the server exits.
const LAST: u64 = 8;
/// Made after the server has gone.
const AGAIN: u64 = 9;

/// What the nudge signals, in order, each once the last step settled.
const SCRIPT: [&str; 8] = [
    "poke",    // the server, serving: `call-signal`; it then waits for a poke
    "go-low",  // low calls QUEUED: it waits
    "go-high", // high calls QUEUED: it waits too
    "poke",    // the server takes both: `call-queue`
    "go-high", // high: SLOW, TIMED, AFTER: `call-timeout`
    "go-high", // high calls EXIT: taken; the server waits for a poke
    "go-low",  // low calls LAST: it waits
    "poke",    // the server exits: `call-server-gone`
];

fn main(start: &runtime::Start) -> i32 {
    let arguments = start.arguments(&["role"]).or_exit();
    let role = arguments
        .choice("role", &["server", "low", "high", "nudge"], "server")
        .or_exit();
    match role {
        "server" => server::run(start),
        "low" => client::run(start, false),
        "high" => client::run(start, true),
        _ => nudge(start),
    }
}

/// A request of `kind`: only word 0 says anything, so that an answer
/// naming the caller cannot have been copied from it.
fn request(kind: u64) -> Message {
    let mut message = [0; 8];
    message[0] = kind;
    message
}

/// The answer to a request of `kind` from the caller called `name`, the
/// `order`th taken (0 when it does not matter): the kind inverted, the
/// name packed into words 1..=4 and its length in word 5.
fn answer(kind: u64, name: &str, order: u64) -> Message {
    let mut message = [0; 8];
    message[0] = !kind;
    for (index, byte) in name.bytes().take(32).enumerate() {
        message[1 + index / 8] |= u64::from(byte) << (8 * (index % 8));
    }
    message[5] = name.len() as u64;
    message[6] = order;
    message
}

/// The bits of every notification this component may receive (each role
/// but the nudge has one: the server's `poke`, a client's `go-NAME`);
/// `None` (after a FAIL line for `test`) when there are none.
fn incoming(start: &runtime::Start, test: &str) -> Option<u64> {
    let bits = start
        .views()
        .map(|(_, view)| match view {
            runtime::abi::start::ResourceView::Incoming { mask } => mask,
            _ => 0,
        })
        .fold(0, |bits, mask| bits | mask);
    if bits == 0 {
        println!("TEST {test} FAIL: no notification to wait for");
    }
    (bits != 0).then_some(bits)
}

/// Signals [`SCRIPT`]'s notifications in order. Each signal wakes a
/// component above the nudge, which runs at once; the nudge runs again
/// only when all of them are blocked, the step done.
fn nudge(start: &runtime::Start) -> i32 {
    for (step, name) in SCRIPT.iter().enumerate() {
        let Some(handle) = start.capability(name) else {
            println!("TEST call-nudge FAIL: no notification '{name}' to signal");
            return 1;
        };
        println!("step {}: signal '{name}'", step + 1);
        syscall::signal(handle);
    }
    println!("all {} steps done", SCRIPT.len());
    0
}
