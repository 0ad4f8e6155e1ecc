//! A VM controller: asks a world switcher to restart its VM.
//!
//! Every `interval_ms` (default 300) it signals the notification `notify`
//! (default `restart`), and pokes the vCPU capability `vcpu` when it holds
//! one, so that a running guest leaves at once and the world switcher sees
//! the request; after `count` requests (default 2) it ends.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use runtime::{println, syscall};

runtime::component!(main);

fn main(start: &runtime::Start) -> i32 {
    let number = |key, default| {
        start
            .arg(key)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let (interval_ms, count) = (number("interval_ms", 300), number("count", 2));
    let notify = start.arg("notify").unwrap_or("restart");
    let Some(request) = start.capability(notify) else {
        println!("no notification '{notify}' was given");
        return 1;
    };
    let vcpu = start.arg("vcpu").and_then(|name| start.capability(name));
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
