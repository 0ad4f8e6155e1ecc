//! A component that attacks the core: a system-call fuzzer
//! ([`fuzz_edges::calls`]). It makes calls without end: mostly calls it
//! may make with one argument changed to an edge value (handles of its
//! own slots with the wrong generation, one past its table, pointers at
//! the edges of the user range and of its own pages, lengths at the
//! core's limits, ...) that it survives, and once in `wild` calls (the
//! argument, default 64) one the core's rules say ends it with a fault: a
//! mutation the core must refuse, a wild call (any number, known or not,
//! with edge values in its registers) or noise. It never calls `Exit` or
//! waits longer than 2 µs, and never acts on another component.
//!
//! Progress goes to its monitor on the `progress` queue
//! ([`fuzz_edges::calls::report`]): the number of calls made since the
//! last report, sent every [`REPORT_EVERY`] calls and just before each
//! call that may end it (that call included, and flagged), so the monitor
//! counts calls across the many lives this component has without a
//! message per call; calls after the last report of a life are not
//! counted. When such a call returns, a message says so, and whether the
//! rules said it must fault (a survivor): so the monitor can tell a fault
//! the rules predicted from one they did not, and both kinds of
//! disagreement (the core's or the model's) are seen, never silent.
//!
//! The random stream is seeded by `seed` (default 0) and the generation,
//! so every life attacks differently and a campaign that names its seed
//! makes the same calls.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::sync::atomic::AtomicU64;

use fuzz_edges::calls::report::{self, Report};
use fuzz_edges::calls::{Component, Expect, Fuzzer, MAX_HELD};
use runtime::abi::spec::CapabilityKind;
use runtime::abi::start::ResourceView;
use runtime::arguments::OrExit;
use runtime::queue::{QueueError, Sender};
use runtime::syscall;

runtime::component!(main);

/// Calls between two progress reports when none may fault.
const REPORT_EVERY: u64 = 4096;

/// One call in this many is one predicted to fault, by default.
const DEFAULT_WILD: u64 = 64;

/// Printable bytes its `LogWrite` calls may name: longer than the
/// longest line, so the edge lengths find text.
static TEXT: [u8; 1024] = text();

const fn text() -> [u8; 1024] {
    let pattern = b"hostile probe ";
    let mut text = [b' '; 1024];
    let mut i = 0;
    while i < text.len() {
        text[i] = pattern[i % pattern.len()];
        i += 1;
    }
    text
}

/// A word of writable data, whose page boundaries are pointer edges.
static DATA: AtomicU64 = AtomicU64::new(0);

fn main(start: &runtime::Start) -> i32 {
    let arguments = start.arguments(&["wild", "seed"]).or_exit();
    let wild: u64 = arguments.number("wild", DEFAULT_WILD).or_exit();
    let seed: u64 = arguments.number("seed", 0).or_exit();
    let Ok(mut progress) = Sender::<u64>::open(start, "progress") else {
        runtime::println!("no 'progress' queue was given");
        return 1;
    };
    let stack = 0u64;
    let mut component = Component::new(
        start.generation(),
        (TEXT.as_ptr() as u64, TEXT.len() as u64),
        DATA.as_ptr() as u64,
        &raw const stack as u64,
    );
    learn(start, &mut component);
    let generation = u64::from(start.generation());
    let mut fuzzer = Fuzzer::new(
        seed ^ generation.wrapping_mul(0xff51_afd7_ed55_8ccd),
        component,
        wild,
    );
    let mut unreported = 0u64;
    loop {
        let plan = fuzzer.next_plan();
        unreported += 1;
        let may_fault = plan.may_fault();
        if may_fault || unreported >= REPORT_EVERY {
            let message = Report {
                calls: unreported,
                may_fault,
                survived: None,
            };
            if send(&mut progress, message, may_fault) {
                unreported = 0;
            }
        }
        let _ = syscall::raw(plan.number, plan.args);
        if may_fault {
            // It returned: the monitor must know (a later fault would
            // otherwise look predicted), and whether the rules said it
            // could not.
            let survived =
                (plan.expect == Expect::Faults).then(|| report::number_byte(plan.number));
            let message = Report {
                calls: 0,
                may_fault: false,
                survived,
            };
            send(&mut progress, message, true);
        }
    }
}

/// What the start page says the component holds: every capability
/// handle (queue ends' signals, declared capabilities, supervised
/// components' controls) and whether it has device grants.
fn learn(start: &runtime::Start, component: &mut Component) {
    let mut held = 0;
    for (_, view) in start.views() {
        let (handle, kind) = match view {
            ResourceView::Capability { handle, kind } => (handle, kind),
            ResourceView::QueueSend(end) | ResourceView::QueueReceive(end) => {
                (end.signal, CapabilityKind::Notification as u32)
            }
            ResourceView::Supervised(child) => {
                (child.control, CapabilityKind::ComponentControl as u32)
            }
            ResourceView::Incoming { .. } | ResourceView::Caller { .. } => continue,
            _ => {
                component.devices = true;
                continue;
            }
        };
        if held < MAX_HELD {
            component.hold(handle, kind);
            held += 1;
        }
    }
}

/// Sends `message` to the monitor: without waiting unless `must` (it
/// must arrive before the next call). Whether it was sent.
fn send(progress: &mut Sender<u64>, message: Report, must: bool) -> bool {
    let word = message.encode();
    for _ in 0..2 {
        let sent = if must {
            progress.send(&word)
        } else {
            progress.try_send(&word)
        };
        match sent {
            Ok(()) => return true,
            // The queue was reset under it (a call of its own can do that):
            // send again into the empty queue.
            Err(QueueError::PeerRestarted(_)) => continue,
            Err(QueueError::WouldBlock) => return false,
        }
    }
    false
}
