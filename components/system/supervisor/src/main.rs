//! The supervisor: restarts the components it supervises when they fault,
//! with exponential back-off, up to each one's restart limit; past the
//! limit it holds the component stopped and says so. It never blocks on a
//! peer: it only waits on its own notification word, where the core sets a
//! component's bit when that component faults or exits.
//!
//! Each supervised component comes from the start page (its control
//! capability, its bit, its limit, initial back-off and watchdog, all from
//! the system description). The back-off doubles with each restart in a
//! row and starts over once the component has run for a second without
//! faulting. A component with a watchdog is also checked every quarter of
//! its watchdog time: when the core says it has been runnable that long
//! without coming back to `Wait` (hung, looping, or not scheduled at all),
//! it is restarted like a faulted one. The supervisor exits when every
//! supervised component has exited or is held.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use runtime::abi::fault::FaultKind;
use runtime::abi::start::ResourceView;
use runtime::arguments::OrExit;
use runtime::{notification, println, syscall};

runtime::component!(main);

const MAX_CHILDREN: usize = 16;

#[derive(Clone, Copy)]
struct Child<'a> {
    name: &'a str,
    handle: u64,
    bit: u32,
    limit: u32,
    backoff_ms: u64,
    watchdog_ms: u64,
    restarts: u32,
    /// Restarts in a row (for the back-off), and when the last was.
    streak: u32,
    restarted_at_ns: u64,
    done: bool,
}

/// A component that ran this long since its last restart without
/// faulting starts its back-off over.
const STABLE_NS: u64 = 1_000_000_000;

fn main(start: &runtime::Start) -> i32 {
    start.arguments(&[]).or_exit();
    let mut children = [None::<Child<'_>>; MAX_CHILDREN];
    let mut count = 0;
    for (name, child) in start.views().filter_map(|(name, view)| match view {
        ResourceView::Supervised(child) => Some((name, child)),
        _ => None,
    }) {
        if count == MAX_CHILDREN {
            println!("more than {MAX_CHILDREN} supervised components; ignoring the rest");
            break;
        }
        children[count] = Some(Child {
            name,
            handle: child.control,
            bit: child.fault_bit,
            limit: child.max_restarts,
            backoff_ms: child.backoff_ms,
            watchdog_ms: u64::from(child.watchdog_ms),
            restarts: 0,
            streak: 0,
            restarted_at_ns: 0,
            done: false,
        });
        count += 1;
    }
    let children = &mut children[..count];
    println!("supervising {count} component(s)");
    loop {
        let mask = children
            .iter()
            .flatten()
            .filter(|c| !c.done)
            .fold(0u64, |mask, c| mask | 1 << c.bit);
        if mask == 0 {
            println!("every supervised component has exited or is held; supervisor done");
            return 0;
        }
        // The watchdogs are checked every quarter of the shortest.
        let check_us = children
            .iter()
            .flatten()
            .filter(|c| !c.done && c.watchdog_ms > 0)
            .map(|c| (c.watchdog_ms * 1000 / 4).max(1000))
            .min();
        let bits = notification::wait_for(mask, check_us).unwrap_or(0);
        for child in children.iter_mut().flatten().filter(|c| !c.done) {
            if bits & (1 << child.bit) != 0 {
                handle_event(child);
            } else if child.watchdog_ms > 0 {
                watch(child);
            }
        }
    }
}

/// Restarts `child` if it has been busy without waiting for longer than
/// its watchdog allows.
fn watch(child: &mut Child<'_>) {
    let Some(busy_us) = syscall::component_status(child.handle) else {
        return;
    };
    if busy_us < child.watchdog_ms * 1000 {
        return;
    }
    println!(
        "'{}' unresponsive for {} ms (watchdog {} ms)",
        child.name,
        busy_us / 1000,
        child.watchdog_ms
    );
    restart(child);
}

fn handle_event(child: &mut Child<'_>) {
    let Some(fault) = syscall::component_fault(child.handle) else {
        // A bit from a life the watchdog already ended: that life's fault
        // went with it, and the new life runs.
        if syscall::component_status(child.handle).is_some() {
            return;
        }
        println!("'{}' exited", child.name);
        child.done = true;
        return;
    };
    let kind = FaultKind::from_u32(fault.kind).map_or("unknown fault", FaultKind::describe);
    println!(
        "'{}' faulted: {kind} (address {:#x}, rip {:#x}), fault {} of its life",
        child.name, fault.address, fault.rip, fault.count
    );
    restart(child);
}

/// Restarts `child` after its back-off, or holds it stopped past its
/// limit.
fn restart(child: &mut Child<'_>) {
    if child.restarts >= child.limit {
        println!(
            "'{}' reached its restart limit ({}); holding it stopped",
            child.name, child.limit
        );
        syscall::component_stop(child.handle);
        child.done = true;
        return;
    }
    if syscall::time_ns().saturating_sub(child.restarted_at_ns) >= STABLE_NS {
        child.streak = 0;
    }
    let delay_ms = child.backoff_ms << child.streak.min(16);
    if delay_ms > 0 {
        notification::wait_for(0, Some(delay_ms * 1000));
    }
    child.restarts += 1;
    child.streak += 1;
    child.restarted_at_ns = syscall::time_ns();
    println!(
        "restarting '{}' after {delay_ms} ms (restart {} of {})",
        child.name, child.restarts, child.limit
    );
    syscall::component_restart(child.handle);
}
