//! The supervisor: restarts the components it supervises when they fault,
//! with exponential back-off, up to each one's restart limit; past the
//! limit it holds the component stopped and says so. It never blocks on a
//! peer: it only waits on its own notification word, where the core sets a
//! component's bit when that component faults or exits.
//!
//! Each supervised component comes from the start page (its control
//! capability, its bit, its limit and initial back-off, all from the
//! system description). The supervisor exits when every supervised
//! component has exited or is held.
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
    restarts: u32,
    done: bool,
}

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
            restarts: 0,
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
        let Some(bits) = notification::wait_for(mask, None) else {
            continue;
        };
        for child in children
            .iter_mut()
            .flatten()
            .filter(|c| !c.done && bits & (1 << c.bit) != 0)
        {
            handle_event(child);
        }
    }
}

fn handle_event(child: &mut Child<'_>) {
    let Some(fault) = syscall::component_fault(child.handle) else {
        println!("'{}' exited", child.name);
        child.done = true;
        return;
    };
    let kind = FaultKind::from_u32(fault.kind).map_or("unknown fault", FaultKind::describe);
    println!(
        "'{}' faulted: {kind} (address {:#x}, rip {:#x}), fault {} of its life",
        child.name, fault.address, fault.rip, fault.count
    );
    if child.restarts >= child.limit {
        println!(
            "'{}' reached its restart limit ({}); holding it stopped",
            child.name, child.limit
        );
        syscall::component_stop(child.handle);
        child.done = true;
        return;
    }
    let delay_ms = child.backoff_ms << child.restarts.min(16);
    if delay_ms > 0 {
        notification::wait_for(0, Some(delay_ms * 1000));
    }
    child.restarts += 1;
    println!(
        "restarting '{}' after {delay_ms} ms (restart {} of {})",
        child.name, child.restarts, child.limit
    );
    syscall::component_restart(child.handle);
}
