//! A VM controller: asks a world switcher to restart its VM.
//!
//! Every `interval_ms` (default 300) it signals the notification `notify`
//! (default `restart`), and pokes the vCPU capability `vcpu` when it holds
//! one, so that a running guest leaves at once and the world switcher sees
//! the request; after `count` requests (default 2) it ends.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use runtime::arguments::OrExit;
use runtime::{println, syscall};

runtime::component!(main);

fn main(start: &runtime::Start) -> i32 {
    let arguments = start
        .arguments(&["interval_ms", "count", "notify", "vcpu"])
        .or_exit();
    let number = |key, default| arguments.number::<u64>(key, default).or_exit();
    let (interval_ms, count) = (number("interval_ms", 300), number("count", 2));
    let notify = arguments.text("notify").unwrap_or("restart");
    let Some(request) = start.capability(notify) else {
        println!("no notification '{notify}' was given");
        return 1;
    };
    let vcpu = match arguments.text("vcpu") {
        Some(name) => match start.capability(name) {
            Some(vcpu) => Some(vcpu),
            None => {
                println!("no vCPU capability '{name}' was given");
                return 1;
            }
        },
        None => None,
    };
    for round in 1..=count {
        syscall::wait(Some(interval_ms * 1000));
        println!("restart request {round} of {count}");
        syscall::signal(request);
        if let Some(vcpu) = vcpu {
            syscall::vcpu_poke(vcpu);
        }
    }
    0
}
