//! A component that misbehaves on command, for fault-injection scenarios.
//!
//! `mode=` selects the fault: `unmapped-write`, `unmapped-read`,
//! `kernel-read` (reads a core address), `write-text` (writes its own code),
//! `exec-data` (jumps into its own data), `invalid-instruction`,
//! `privileged` (executes `hlt`), `bad-pointer` (passes an unmapped buffer
//! to the log call), `kernel-pointer` (passes a core address), `bad-syscall`
//! (an unknown call number), `port` (reads the CMOS index port 0x70, which
//! it holds no grant for), `panic`. `after=N` first prints N lines,
//! yielding between them, and sends one item per line on its `work` queue
//! when the system gives it one. Every mode must end with the core stopping this
//! component; if the fault does not happen, it says so and exits with 1.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use runtime::arguments::OrExit;
use runtime::{println, syscall};

runtime::component!(main);

static DATA: [u8; 16] = [0xc3; 16];

/// The faults `mode=` selects.
const MODES: &[&str] = &[
    "unmapped-write",
    "unmapped-read",
    "kernel-read",
    "write-text",
    "exec-data",
    "invalid-instruction",
    "privileged",
    "bad-pointer",
    "kernel-pointer",
    "bad-syscall",
    "port",
    "panic",
];

fn main(start: &runtime::Start) -> i32 {
    let arguments = start.arguments(&["after", "mode"]).or_exit();
    let after: u32 = arguments.number("after", 0).or_exit();
    let mode = arguments.choice("mode", MODES, "unmapped-write").or_exit();
    let mut work = runtime::queue::Sender::<u64>::open(start, "work").ok();
    for i in 1..=after {
        println!("working {i}/{after} (generation {})", start.generation());
        if let Some(queue) = work.as_mut() {
            let _ = queue.send(&u64::from(i));
        }
        syscall::yield_now();
    }
    println!("about to fault: {mode}");
    match mode {
        "unmapped-write" => runtime::fault::write_u64(0x1000_0000, 1),
        "unmapped-read" => {
            let _ = runtime::fault::read_u64(0x1000_0000);
        }
        "kernel-read" => {
            let _ = runtime::fault::read_u64(0xffff_8000_0010_0000);
        }
        "write-text" => runtime::fault::write_u64(main as *const () as u64, 0),
        "exec-data" => runtime::fault::call(DATA.as_ptr() as u64),
        "invalid-instruction" => runtime::fault::invalid_instruction(),
        "privileged" => runtime::fault::privileged_instruction(),
        "bad-pointer" => {
            let _ = syscall::raw(1, [0x1000_0000, 16, 0, 0, 0]);
        }
        "kernel-pointer" => {
            let _ = syscall::raw(1, [0xffff_8000_0010_0000, 16, 0, 0, 0]);
        }
        "bad-syscall" => {
            let _ = syscall::raw(0xdead, [0; 5]);
        }
        "port" => {
            let _ = runtime::ports::inb(0x70);
        }
        "panic" => panic!("deliberate panic"),
        other => {
            println!("unknown mode '{other}'");
            return 2;
        }
    }
    println!("the fault did not happen");
    1
}
