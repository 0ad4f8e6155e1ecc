//! The fault injector of test systems: carries out a plan of faults —
//! each a target, a kind, a delay and a seed — against the components its
//! `[test]` table lets it inject into (one injection capability each,
//! named after the target), and says what it did on the console.
//!
//! The plan comes from the system console (the build tool's `campaign`
//! types it, one step at a time, as the system recovers), one line per
//! fault:
//!
//! ```text
//! inject <n> <target> <kind> <delay_ms> <seed>
//! ```
//!
//! or, without a console, from its arguments: `faults=N seed=S
//! every_ms=M`, which cycles through every target and kind with seeds
//! drawn from `S`. Each fault is answered with one line,
//! `INJECT <n> <target> <kind> seed=<seed> <what was done>`, after
//! waiting `delay_ms`. What each kind does to the target (the core's
//! `microvisor_abi::inject`), with its parameters drawn from the seed:
//!
//! - `crash`: faults it at an unmapped address (`0xdead0000` + bits of the seed);
//! - `hang`: stops scheduling it for 10 ms .. 3 s (`10 + seed % 3000`
//!   ms): a short hang ends by itself, a long one must be caught by its
//!   supervisor's watchdog;
//! - `memory`: writes 1..=32 random bytes into its own writable memory;
//! - `queue`: writes 1..=8 random bytes into one of its queues' header
//!   fields, stamps or slots;
//! - `flood`: fills one of the queues it receives from with random
//!   (stamped) messages.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use runtime::abi::inject::{Kind, MAX_FLOOD, Stream};
use runtime::abi::spec::CapabilityKind;
use runtime::abi::start::{CONSOLE_RESOURCE, ResourceView};
use runtime::arguments::OrExit;
use runtime::{notification, println, syscall};

runtime::component!(main);

/// The most targets one injector holds (a component holds at most 32
/// capabilities).
const MAX_TARGETS: usize = 32;
/// The longest plan line.
const LINE_MAX: usize = 128;

#[derive(Clone, Copy)]
struct Target<'a> {
    name: &'a str,
    handle: u64,
}

fn main(start: &runtime::Start) -> i32 {
    let arguments = start.arguments(&["faults", "seed", "every_ms"]).or_exit();
    let mut targets = [None::<Target<'_>>; MAX_TARGETS];
    let mut count = 0;
    for (name, view) in start.views() {
        if let ResourceView::Capability { handle, kind } = view
            && kind == CapabilityKind::Injection as u32
        {
            if count == MAX_TARGETS {
                println!("more than {MAX_TARGETS} targets; '{name}' and later ones are not used");
                break;
            }
            targets[count] = Some(Target { name, handle });
            count += 1;
        }
    }
    let targets: &[Option<Target<'_>>] = &targets[..count];
    if targets.is_empty() {
        println!("no injection capability was given (a system grants them in its [test] table)");
        return 1;
    }
    let mut names = [""; MAX_TARGETS];
    for (name, target) in names.iter_mut().zip(targets.iter().flatten()) {
        *name = target.name;
    }
    let console = start.views().find_map(|(name, view)| match view {
        ResourceView::Interrupt { bit, .. } if name == CONSOLE_RESOURCE => Some(bit),
        _ => None,
    });
    println!(
        "INJECTOR ready: targets {}; kinds crash hang memory queue flood; plan from {}",
        Joined(&names[..count]),
        if console.is_some() {
            "the console"
        } else {
            "arguments"
        }
    );
    match console {
        Some(bit) => from_console(targets, bit),
        None => {
            let number = |key, default| arguments.number::<u64>(key, default).or_exit();
            from_arguments(
                targets,
                number("faults", 10),
                number("seed", 1),
                number("every_ms", 500),
            )
        }
    }
}

/// Reads plan lines from the console forever.
fn from_console(targets: &[Option<Target<'_>>], bit: u32) -> i32 {
    let mut line = [0u8; LINE_MAX];
    let mut length = 0;
    let mut overlong = false;
    loop {
        notification::wait_for(1 << bit, None);
        let mut buffer = [0u8; 64];
        loop {
            let read = syscall::console_read(&mut buffer);
            if read == 0 {
                break;
            }
            for &byte in &buffer[..read] {
                if byte == b'\n' || byte == b'\r' {
                    if overlong {
                        println!("INJECT error: a plan line longer than {LINE_MAX} bytes");
                    } else if length > 0 {
                        step(targets, &line[..length]);
                    }
                    (length, overlong) = (0, false);
                } else if length < LINE_MAX {
                    line[length] = byte;
                    length += 1;
                } else {
                    overlong = true;
                }
            }
        }
    }
}

/// Carries out one plan line.
fn step(targets: &[Option<Target<'_>>], line: &[u8]) {
    let Ok(text) = core::str::from_utf8(line) else {
        println!("INJECT error: a plan line that is not UTF-8");
        return;
    };
    let mut words = text.split(' ');
    let parsed = (|| {
        if words.next()? != "inject" {
            return None;
        }
        let number = words.next()?.parse::<u64>().ok()?;
        let target = words.next()?;
        let kind = words.next()?;
        let delay_ms = words.next()?.parse::<u64>().ok()?;
        let seed = words.next()?.parse::<u64>().ok()?;
        words
            .next()
            .is_none()
            .then_some((number, target, kind, delay_ms, seed))
    })();
    let Some((number, target, kind, delay_ms, seed)) = parsed else {
        println!("INJECT error: '{text}' is not 'inject <n> <target> <kind> <delay_ms> <seed>'");
        return;
    };
    let Some(found) = targets.iter().flatten().find(|t| t.name == target) else {
        println!("INJECT {number} error: no injection capability for '{target}'");
        return;
    };
    let Some(kind) = Kind::from_name(kind) else {
        println!(
            "INJECT {number} error: unknown kind '{kind}' (crash, hang, memory, queue or flood)"
        );
        return;
    };
    if delay_ms > 0 {
        notification::wait_for(0, Some(delay_ms.min(60_000) * 1000));
    }
    inject(number, found, kind, seed);
}

/// Cycles through every target and kind, `faults` times.
fn from_arguments(targets: &[Option<Target<'_>>], faults: u64, seed: u64, every_ms: u64) -> i32 {
    let mut stream = Stream::new(seed);
    let targets: &[Option<Target<'_>>] = targets;
    for number in 1..=faults {
        notification::wait_for(0, Some(every_ms * 1000));
        let target = targets[(number - 1) as usize % targets.len()]
            .as_ref()
            .expect("targets are listed without gaps");
        let kind = Kind::ALL[((number - 1) / targets.len() as u64) as usize % Kind::ALL.len()];
        inject(number, target, kind, stream.next_u64());
    }
    println!("INJECT done: {faults} faults");
    0
}

/// Injects fault `number` of `kind` with parameters drawn from `seed`.
fn inject(number: u64, target: &Target<'_>, kind: Kind, seed: u64) {
    let (argument, count) = match kind {
        Kind::Crash => (0xdead_0000 | (seed & 0xfff8), 0),
        Kind::Hang => ((10 + seed % 3000) * 1000, 0),
        Kind::CorruptMemory => (seed, 1 + seed % 32),
        Kind::CorruptQueue => (seed, 1 + seed % 8),
        Kind::FloodQueue => (seed, MAX_FLOOD),
    };
    let name = kind.name();
    let target_name = target.name;
    match syscall::inject(target.handle, kind, argument, count) {
        None => println!("INJECT {number} {target_name} {name} seed={seed} not running"),
        Some(value) => match kind {
            Kind::Crash => println!(
                "INJECT {number} {target_name} {name} seed={seed} faulted at {argument:#x}"
            ),
            Kind::Hang => println!(
                "INJECT {number} {target_name} {name} seed={seed} hung for {} ms",
                argument / 1000
            ),
            Kind::CorruptMemory => println!(
                "INJECT {number} {target_name} {name} seed={seed} {count} bytes from {value:#x}"
            ),
            Kind::CorruptQueue | Kind::FloodQueue if value == runtime::abi::inject::NO_QUEUE => {
                println!("INJECT {number} {target_name} {name} seed={seed} no such queue")
            }
            Kind::CorruptQueue => println!(
                "INJECT {number} {target_name} {name} seed={seed} {count} bytes in queue {value}"
            ),
            Kind::FloodQueue => {
                println!("INJECT {number} {target_name} {name} seed={seed} flooded queue {value}")
            }
        },
    }
}

/// Names separated by commas.
struct Joined<'a>(&'a [&'a str]);

impl core::fmt::Display for Joined<'_> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (index, name) in self.0.iter().enumerate() {
            if index > 0 {
                formatter.write_str(",")?;
            }
            formatter.write_str(name)?;
        }
        Ok(())
    }
}
