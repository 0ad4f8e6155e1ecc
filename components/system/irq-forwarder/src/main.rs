//! The interrupt forwarder: the component every device interrupt line
//! reaches first.
//!
//! The core masks a line when it fires and sets this component's bit for
//! it. The forwarder passes the interrupt on to the line's driver (a
//! notification), and unmasks the line when the driver acknowledges. Its
//! routing table comes from the start page: each line it is granted is
//! named after its driver, with the capability `irqN` that signals the
//! driver and the incoming bits `irqN.ack` and `irqN.ready` the driver
//! sets (see `runtime::irq`). The policy — deliveries, coalescing, storm
//! masking with back-off, redelivery after restarts — is the host-tested
//! `irq_routing::Router`; this program only carries out its actions.
//!
//! Restartable: at start it asks the core which lines fired and are still
//! masked and delivers each again, so an interrupt that came while it was
//! down, or that it had not passed on, is not lost. A driver that restarts
//! says ready and is given what its last life did not acknowledge.
//!
//! Arguments: `storm=N` deliveries per `window=MS` milliseconds before a
//! line counts as storming (default 1000 per 100 ms), `backoff=MS` how
//! long a storming line first stays masked (default 100, doubling to 16
//! times that). The incoming notification `report`, if the system gives
//! one, prints every line's counters and, when the system gives it a queue
//! `counters`, sends them there too (one `irq_routing::LineReport` per
//! line), so other components can read them. For fault-injection tests,
//! `crash_after=N` makes its first life panic when the N-th interrupt
//! arrives, before passing it on.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use irq_routing::{Action, LINES, LineReport, Router, StormPolicy};
use runtime::abi::start::ResourceView;
use runtime::arguments::OrExit;
use runtime::queue::{OpenError, Sender};
use runtime::{irq, notification, println, syscall};

runtime::component!(main);

/// A line's driver, as the start page names it.
#[derive(Clone, Copy)]
struct Driver<'a> {
    name: &'a str,
    /// Signals the driver.
    deliver: u64,
    /// This component's bits: the core's for the line, the driver's two.
    fired: u64,
    acknowledged: u64,
    ready: u64,
}

fn main(start: &runtime::Start) -> i32 {
    let arguments = start
        .arguments(&["storm", "window", "backoff", "crash_after"])
        .or_exit();
    let crash_after: Option<u64> = arguments
        .optional_number("crash_after")
        .or_exit()
        .filter(|_| start.generation() == 1);
    let mut arrived = 0u64;
    let defaults = StormPolicy::DEFAULT;
    let limit: u32 = arguments.number("storm", defaults.limit).or_exit();
    let window_ms: u64 = arguments
        .number("window", defaults.window_ns / 1_000_000)
        .or_exit();
    let backoff_ms: u64 = arguments
        .number("backoff", defaults.backoff_ns / 1_000_000)
        .or_exit();
    if limit == 0 || window_ms == 0 || backoff_ms == 0 {
        println!("irq-forwarder: storm=, window= and backoff= must be at least 1");
        return 2;
    }
    let policy = StormPolicy {
        limit,
        window_ns: window_ms * 1_000_000,
        backoff_ns: backoff_ms * 1_000_000,
        max_backoff_ns: backoff_ms * 16_000_000,
    };

    let mut drivers: [Option<Driver<'_>>; LINES] = [None; LINES];
    let mut router = Router::new(policy);
    for (name, view) in start.views() {
        let ResourceView::Interrupt { line, bit } = view else {
            continue;
        };
        match driver(start, name, line, bit) {
            Some(found) if (line as usize) < LINES => {
                drivers[line as usize] = Some(found);
                router.add(line as usize);
                println!("irq-forwarder: line {line} goes to '{name}'");
            }
            _ => {
                println!(
                    "irq-forwarder: line {line} ('{name}') comes without its irq{line}, irq{line}.ack and irq{line}.ready"
                );
                return 2;
            }
        }
    }
    let report = start.incoming("report").unwrap_or(0);
    let mut counters = match Sender::<LineReport>::open(start, "counters") {
        Ok(sender) => Some(sender),
        Err(OpenError::NotGiven) => None,
        Err(error) => {
            println!("irq-forwarder: cannot open the queue 'counters': {error:?}");
            return 2;
        }
    };
    let watched = drivers
        .iter()
        .flatten()
        .fold(report, |bits, d| bits | d.fired | d.acknowledged | d.ready);
    if watched == 0 {
        println!("irq-forwarder: no interrupt lines to forward");
        return 0;
    }

    // Lines the core holds masked were delivered by an earlier life (or
    // fired while none ran): deliver them again.
    let pending = syscall::interrupt_pending();
    if pending != 0 {
        println!("irq-forwarder: lines {pending:#x} were pending at start; delivering them again");
        router.adopt_pending(pending, |line| {
            if let Some(driver) = drivers[line] {
                syscall::signal(driver.deliver);
            }
        });
    }

    loop {
        let now = syscall::time_ns();
        let timeout_us = router
            .next_due()
            .map(|due| due.saturating_sub(now).div_ceil(1000).max(1));
        let bits = notification::wait_for(watched, timeout_us).unwrap_or(0);
        let now = syscall::time_ns();
        for (line, driver) in drivers.iter().enumerate() {
            let Some(driver) = *driver else {
                continue;
            };
            // An acknowledgement first: it ends the delivery before a
            // new one.
            if bits & driver.acknowledged != 0 {
                let action = router.acknowledged(line, now);
                carry_out(&driver, line, action, policy);
            }
            if bits & driver.ready != 0 {
                let action = router.ready(line);
                if action == Action::Deliver {
                    println!(
                        "irq-forwarder: line {line}: '{}' (re)started; delivering the interrupt it did not acknowledge again",
                        driver.name
                    );
                }
                carry_out(&driver, line, action, policy);
            }
            if bits & driver.fired != 0 {
                arrived += 1;
                if crash_after == Some(arrived) {
                    println!(
                        "irq-forwarder: crashing with interrupt {arrived} (line {line}) not passed on (crash_after)"
                    );
                    panic!("crash requested (crash_after)");
                }
                carry_out(&driver, line, router.fired(line, now), policy);
            }
        }
        router.due(now, |line| {
            if let Some(driver) = drivers[line] {
                println!(
                    "irq-forwarder: line {line} ('{}'): storm back-off over, unmasking",
                    driver.name
                );
                syscall::interrupt_unmask(line as u64);
            }
        });
        if bits & report != 0 {
            for (line, driver) in drivers.iter().enumerate() {
                let (Some(driver), Some(report)) = (driver, router.report(line)) else {
                    continue;
                };
                println!(
                    "irq-forwarder: line {line} ('{}'): delivered {}, coalesced {}, redelivered {}, storms {}",
                    driver.name,
                    report.delivered,
                    report.coalesced,
                    report.redelivered,
                    report.storms
                );
                if let Some(queue) = counters.as_mut()
                    && queue.try_send(&report).is_err()
                {
                    println!(
                        "irq-forwarder: the queue 'counters' is full; line {line}'s report dropped"
                    );
                }
            }
        }
    }
}

/// The driver of `line`, found by the names capdl gives.
fn driver<'a>(start: &'a runtime::Start, name: &'a str, line: u64, bit: u32) -> Option<Driver<'a>> {
    let incoming = |suffix| {
        let mut buffer = [0u8; 32];
        start.incoming(irq::name(&mut buffer, line, suffix)?)
    };
    let mut buffer = [0u8; 32];
    Some(Driver {
        name,
        deliver: start.capability(irq::name(&mut buffer, line, "")?)?,
        fired: 1u64.checked_shl(bit)?,
        acknowledged: incoming(".ack")?,
        ready: incoming(".ready")?,
    })
}

fn carry_out(driver: &Driver<'_>, line: usize, action: Action, policy: StormPolicy) {
    match action {
        Action::None => {}
        Action::Deliver => syscall::signal(driver.deliver),
        Action::Unmask => {
            syscall::interrupt_unmask(line as u64);
        }
        Action::Storm { count, backoff_ns } => println!(
            "irq-forwarder: line {line} ('{}'): interrupt storm ({count} interrupts within {} ms); masked for {} ms",
            driver.name,
            policy.window_ns / 1_000_000,
            backoff_ns / 1_000_000
        ),
    }
}
