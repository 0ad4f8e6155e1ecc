//! Booting a packed system in an emulator and watching it to the end.
//!
//! [`boot`] dispatches to QEMU ([`crate::qemu`]) or Bochs ([`crate::bochs`]);
//! both feed console lines through [`supervise`], which passes each line to
//! the caller as it arrives, enforces the timeout (killing the emulator),
//! and notes the core's halt line. Every run ends in exactly one [`Ending`]:
//! the system's verdict, a timeout, or an emulator error. Problems that stop
//! a run from starting (a missing tool, an unwritable file) are `Err`s
//! instead. Invariant: an emulator this module started is waited for or
//! killed before `boot` returns; none outlives it.

use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::console::{Verdict, parse_halt_line};

/// Which emulator boots the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Emulator {
    /// QEMU, booting the core's PVH note with `-kernel`.
    Qemu,
    /// Bochs, booting a GRUB ISO with `multiboot2`.
    Bochs,
}

impl std::fmt::Display for Emulator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Self::Qemu => "QEMU",
            Self::Bochs => "Bochs",
        })
    }
}

/// Everything needed to boot one packed system.
#[derive(Clone, Debug)]
pub struct BootRequest {
    pub emulator: Emulator,
    /// The core's ELF file.
    pub core: PathBuf,
    /// The packed boot image.
    pub image: PathBuf,
    /// A directory a Bochs run fills (ISO staging, bochsrc, serial and log
    /// files) and keeps for inspection; QEMU runs do not use it.
    pub work_directory: PathBuf,
    /// None: wait forever (used with a debugger).
    pub timeout: Option<Duration>,
    /// Deterministic instruction counting (`-icount shift=0`, QEMU only).
    pub icount: bool,
    /// Wait for a debugger before the first instruction (QEMU only).
    pub gdb: bool,
    /// The core's boot command line (e.g. `selftest=core-fault`).
    pub command_line: String,
    /// What the system console receives (QEMU's serial input).
    pub input: ConsoleFeed,
    /// Raw disk images to attach as virtio-blk PCI functions (QEMU only).
    pub disks: Vec<PathBuf>,
    /// NICs to attach as virtio-net PCI functions after the disks
    /// (`[machine] nics`, QEMU only).
    pub nics: Vec<capdl::MachineNic>,
}

#[cfg(test)]
impl BootRequest {
    /// A request for tests: the core `/t/microvisor` with the image
    /// `/t/default.img`, work in `/t/work`, nothing else asked.
    pub fn for_tests(emulator: Emulator) -> Self {
        Self {
            emulator,
            core: PathBuf::from("/t/microvisor"),
            image: PathBuf::from("/t/default.img"),
            work_directory: PathBuf::from("/t/work"),
            timeout: None,
            icount: false,
            gdb: false,
            command_line: String::new(),
            input: ConsoleFeed::Nothing,
            disks: Vec::new(),
            nics: Vec::new(),
        }
    }
}

/// What goes to the system console's input (QEMU only: its stdin is the
/// serial port's input).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ConsoleFeed {
    /// Nothing: stdin is closed.
    #[default]
    Nothing,
    /// This tool's own stdin (`run --interactive`).
    Terminal,
    /// Each text once a console line containing its `after` was seen,
    /// in order (scenario key `input`).
    Script(Vec<Send>),
}

/// One [`ConsoleFeed::Script`] step.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Send {
    /// Text of the console line to wait for (after the previous step's).
    pub after: String,
    /// What to type then (`\n` ends a line).
    pub send: String,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The system reached its verdict.
    Halted(Verdict),
    /// The time limit passed first; the emulator was killed.
    Timeout(Duration),
    /// The emulator failed or exited without a verdict.
    EmulatorError(String),
}

/// A finished run: how it ended, every console line, how long it took.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub ending: Ending,
    pub lines: Vec<String>,
    /// When each line arrived, from the start of the run (host time).
    pub arrivals: Vec<Duration>,
    pub elapsed: Duration,
    /// The `[machine]` disk images as the run left them (for checks made
    /// after it, such as a scenario's `export`).
    pub disks: Vec<PathBuf>,
}

/// Boots the request's system, passing each console line to `sink` as it
/// arrives.
pub fn boot(request: &BootRequest, sink: &mut dyn FnMut(&str)) -> Result<Outcome> {
    match request.emulator {
        Emulator::Qemu => crate::qemu::run(request, sink),
        Emulator::Bochs => crate::bochs::run(request, sink),
    }
}

/// What [`supervise`] saw of a running emulator.
pub struct Watched {
    /// The exit status, unless the emulator was killed.
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    /// The emulator was still running `grace` after the halt line and was
    /// killed.
    pub lingered: bool,
    pub lines: Vec<String>,
    /// When each line arrived, from the start (host time).
    pub arrivals: Vec<Duration>,
    pub halt: Option<Verdict>,
    pub elapsed: Duration,
}

/// How long an emulator may take to exit after the halt line.
pub const HALT_GRACE: Duration = Duration::from_secs(5);
/// How long to wait for the last console bytes after the emulator exited.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(50);

/// Watches `child` until it exits, the deadline passes, or it lingers past
/// the halt line. `lines` delivers console lines; its sender side must end
/// (disconnect) once the emulator's output has ended. `stopped` is called
/// once the emulator is gone, before the last lines are drained (a file
/// tailer uses it to know it may stop).
pub fn supervise(
    child: &mut Child,
    lines: &Receiver<String>,
    timeout: Option<Duration>,
    stopped: &dyn Fn(),
    sink: &mut dyn FnMut(&str),
) -> Result<Watched> {
    let start = Instant::now();
    let mut watched = Watched {
        status: None,
        timed_out: false,
        lingered: false,
        lines: Vec::new(),
        arrivals: Vec::new(),
        halt: None,
        elapsed: Duration::ZERO,
    };
    let mut halted_at: Option<Instant> = None;
    let mut take = |line: String, watched: &mut Watched, halted_at: &mut Option<Instant>| {
        if watched.halt.is_none()
            && let Some(verdict) = parse_halt_line(&line)
        {
            watched.halt = Some(verdict);
            *halted_at = Some(Instant::now());
        }
        sink(&line);
        watched.lines.push(line);
        watched.arrivals.push(start.elapsed());
    };
    let mut output_open = true;
    let mut last_check = Instant::now();
    loop {
        if output_open {
            match lines.recv_timeout(POLL) {
                Ok(line) => {
                    take(line, &mut watched, &mut halted_at);
                    // Check the child and the clock at least every POLL,
                    // even when the console never pauses.
                    if last_check.elapsed() < POLL {
                        continue;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => output_open = false,
            }
        } else {
            std::thread::sleep(POLL);
        }
        last_check = Instant::now();
        if let Some(status) = child.try_wait().context("could not poll the emulator")? {
            watched.status = Some(status);
            break;
        }
        if timeout.is_some_and(|limit| start.elapsed() > limit) {
            watched.timed_out = watched.halt.is_none();
            watched.lingered = watched.halt.is_some();
            stop(child);
            break;
        }
        if halted_at.is_some_and(|at| at.elapsed() > HALT_GRACE) {
            watched.lingered = true;
            stop(child);
            break;
        }
    }
    watched.elapsed = start.elapsed();
    stopped();
    let drain_start = Instant::now();
    while drain_start.elapsed() < DRAIN_LIMIT {
        match lines.recv_timeout(POLL) {
            Ok(line) => take(line, &mut watched, &mut halted_at),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    Ok(watched)
}

/// Kills a child this tool started and reaps it.
fn stop(child: &mut Child) {
    // Either may fail only if the child already exited, which is the goal.
    let _ = child.kill();
    let _ = child.wait();
}

/// Describes an exit status for messages: "status N" or "signal N".
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "an unknown status".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};
    use std::sync::mpsc;

    use super::*;

    /// Runs a shell script as a stand-in emulator whose stdout is the console.
    fn watch(script: &str, timeout: Duration) -> Watched {
        let mut child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut splitter = crate::console::LineSplitter::default();
            let mut buffer = [0u8; 256];
            loop {
                let count = std::io::Read::read(&mut stdout, &mut buffer).unwrap_or(0);
                if count == 0 {
                    break;
                }
                for line in splitter.push(&buffer[..count]) {
                    sender.send(line).unwrap();
                }
            }
            if let Some(line) = splitter.flush() {
                sender.send(line).unwrap();
            }
        });
        let mut seen = Vec::new();
        let watched = supervise(&mut child, &receiver, Some(timeout), &|| {}, &mut |line| {
            seen.push(line.to_string())
        })
        .unwrap();
        assert_eq!(seen, watched.lines);
        watched
    }

    #[test]
    fn sees_lines_halt_and_status() {
        let watched = watch(
            "echo 'microvisor 0.1'; echo '[core] system halted: success'; exit 1",
            Duration::from_secs(20),
        );
        assert_eq!(
            watched.lines,
            ["microvisor 0.1", "[core] system halted: success"]
        );
        assert_eq!(watched.halt, Some(Verdict::Success));
        assert_eq!(watched.status.and_then(|status| status.code()), Some(1));
        assert!(!watched.timed_out && !watched.lingered);
    }

    #[test]
    fn kills_on_timeout() {
        let start = Instant::now();
        let watched = watch("echo started; exec sleep 30", Duration::from_millis(300));
        assert!(watched.timed_out);
        assert_eq!(watched.status, None);
        assert_eq!(watched.lines, ["started"]);
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn endless_output_still_times_out() {
        let start = Instant::now();
        let watched = watch("exec yes tick", Duration::from_millis(300));
        assert!(watched.timed_out);
        assert!(watched.lines.len() > 10);
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn describes_statuses() {
        let status = Command::new("sh").args(["-c", "exit 3"]).status().unwrap();
        assert_eq!(describe_status(status), "status 3");
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(describe_status(status), "signal 9");
    }
}
