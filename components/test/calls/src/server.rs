//! The server's side of the script (see the crate documentation): every
//! request is named by its caller, found from its badge on the start
//! page.

use runtime::abi::start::ResourceView;
use runtime::endpoint::{Message, Served, Server};
use runtime::{Start, notification, println};

use crate::{AFTER, DECLINE, EXIT, HELLO, HIGH, LOW, QUEUED, SLOW, SPIN_MS, TIMED, answer};

pub fn run(start: &Start) -> i32 {
    if !callers_listed(start) {
        return 1;
    }
    let Some(poke) = crate::incoming(start, "call-signal") else {
        return 1;
    };
    let mut server = Server::new();
    let mut message = [0; 8];

    // Low's and high's first calls, until the nudge's first poke.
    let mut reply = false;
    loop {
        let served = server.reply_wait(&mut message, reply, None);
        if served == Served::Signalled {
            break;
        }
        let Some((kind, name)) = taken(start, served, &message, "call-names") else {
            return 1;
        };
        reply = match kind {
            HELLO => {
                message = answer(HELLO, name, 0);
                true
            }
            DECLINE => false,
            _ => {
                println!(
                    "TEST call-names FAIL: {name}'s first requests are HELLO and DECLINE, not {kind}"
                );
                return 1;
            }
        };
    }
    let bits = notification::take(poke);
    if bits != poke {
        println!(
            "TEST call-signal FAIL: ReplyWait ended Signalled, but took bits {bits:#x} of {poke:#x}"
        );
        return 1;
    }
    println!(
        "TEST call-signal PASS: a poke while serving ended ReplyWait with Signalled and bit {bits:#x}"
    );

    // Busy, waiting on the notification word instead of in ReplyWait: low
    // and then high call meanwhile. The next poke ends the wait; both
    // requests must be waiting then (polls take them), high's first.
    notification::wait_for(poke, None);
    let mut order = [""; 2];
    for (index, slot) in order.iter_mut().enumerate() {
        let served = server.reply_wait(&mut message, index > 0, Some(0));
        match taken(start, served, &message, "call-queue") {
            Some((QUEUED, name)) => *slot = name,
            Some((kind, name)) => {
                println!("TEST call-queue FAIL: took {name}'s request {kind}, expected QUEUED");
                return 1;
            }
            None => return 1,
        }
        message = answer(QUEUED, slot, index as u64 + 1);
    }
    if order != [HIGH, LOW] {
        println!("TEST call-queue FAIL: the waiting requests were taken in the order {order:?}");
        return 1;
    }
    println!(
        "TEST call-queue PASS: low's and then high's request waited while the server was busy; high's (the higher priority) was taken first"
    );

    // High's SLOW: answered, with nothing else waiting, then computing
    // without a system call while high's TIMED call times out.
    let served = server.reply_wait(&mut message, true, None);
    if !expected(start, served, &message, "call-after-timeout", (SLOW, HIGH)) {
        return 1;
    }
    message = answer(SLOW, HIGH, 0);
    let served = server.reply_wait(&mut message, true, Some(0));
    if served != Served::TimedOut {
        println!(
            "TEST call-after-timeout FAIL: a request waited before the server computed: {served:?}"
        );
        return 1;
    }
    spin(start.tsc_hz() / 1000 * SPIN_MS);
    let served = server.reply_wait(&mut message, false, None);
    match taken(start, served, &message, "call-after-timeout") {
        Some((AFTER, HIGH)) => println!(
            "TEST call-after-timeout PASS: after computing for {SPIN_MS} ms the first request taken was high's next call, not its timed-out one"
        ),
        Some((TIMED, name)) => {
            println!("TEST call-after-timeout FAIL: {name}'s timed-out request was taken");
            return 1;
        }
        Some((kind, name)) => {
            println!(
                "TEST call-after-timeout FAIL: took {name}'s request {kind}, expected high's AFTER"
            );
            return 1;
        }
        None => return 1,
    }

    // High's EXIT is taken and never answered: busy again, low calls
    // meanwhile, and the next poke ends the server with both calls open.
    message = answer(AFTER, HIGH, 0);
    let served = server.reply_wait(&mut message, true, None);
    if !expected(start, served, &message, "call-server-gone", (EXIT, HIGH)) {
        return 1;
    }
    notification::wait_for(poke, None);
    println!("exiting with high's call taken and low's waiting");
    0
}

/// Checks that the start page lists exactly the callers `low` and
/// `high`, with distinct nonzero badges (`call-callers`).
fn callers_listed(start: &Start) -> bool {
    let callers = start
        .views()
        .filter(|(_, view)| matches!(view, ResourceView::Caller { .. }))
        .count();
    let badge_of = |name: &str| {
        start.views().find_map(|(found, view)| match view {
            ResourceView::Caller { badge } if found == name => Some(badge),
            _ => None,
        })
    };
    match (badge_of(LOW), badge_of(HIGH)) {
        (Some(low), Some(high)) if callers == 2 && low != 0 && high != 0 && low != high => {
            println!(
                "TEST call-callers PASS: the start page lists low (badge {low}) and high (badge {high})"
            );
            true
        }
        (low, high) => {
            println!(
                "TEST call-callers FAIL: {callers} callers listed; low's badge {low:?}, high's {high:?}"
            );
            false
        }
    }
}

/// The kind of the request `served` brought in `message` and the name of
/// its caller, found from its badge; `None` (after a FAIL line for
/// `test`) when it brought none or the badge is no caller's.
fn taken<'a>(
    start: &'a Start,
    served: Served,
    message: &Message,
    test: &str,
) -> Option<(u64, &'a str)> {
    let Served::Request { badge } = served else {
        println!("TEST {test} FAIL: expected a request, ReplyWait answered {served:?}");
        return None;
    };
    let name = start.views().find_map(|(name, view)| match view {
        ResourceView::Caller { badge: listed } if listed == badge => Some(name),
        _ => None,
    });
    if name.is_none() {
        println!("TEST {test} FAIL: a request with badge {badge}, which no caller has");
    }
    Some((message[0], name?))
}

/// Whether `served` brought the request `kind` from `from` (a FAIL line
/// for `test` if not).
fn expected(
    start: &Start,
    served: Served,
    message: &Message,
    test: &str,
    (kind, from): (u64, &str),
) -> bool {
    match taken(start, served, message, test) {
        Some(request) if request == (kind, from) => true,
        Some((got, name)) => {
            println!("TEST {test} FAIL: took {name}'s request {got}, expected {from}'s {kind}");
            false
        }
        None => false,
    }
}

/// Runs for `ticks` TSC ticks without a system call.
fn spin(ticks: u64) {
    let begin = runtime::rdtsc();
    while runtime::rdtsc().wrapping_sub(begin) < ticks {
        core::hint::spin_loop();
    }
}
