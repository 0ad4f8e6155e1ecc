//! The QEMU driver: boots the core's PVH ELF note with `-kernel`, passes the
//! boot image as `-initrd`, reads the serial console from QEMU's stdout.
//!
//! The verdict comes from isa-debug-exit: the core writes
//! `microvisor_abi::EXIT_SUCCESS` (0) or `EXIT_FAILURE` (1) to port 0xf4 and
//! QEMU exits with `2 * value + 1`, so 1 is success and 3 failure. Because
//! QEMU also exits with 1 on its own errors (an unloadable kernel), status 1
//! only counts as success together with the core's success halt line.
//! stdin is /dev/null and the monitor is off, so runs need no terminal.
//! Called through [`crate::emulator::boot`].

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::console::{LineSplitter, Verdict};
use crate::emulator::{
    BootRequest, Ending, HALT_GRACE, Outcome, Watched, describe_status, supervise,
};
use crate::tools;

/// QEMU's exit status when the core wrote `EXIT_SUCCESS`.
pub const STATUS_SUCCESS: i32 = 2 * microvisor_abi::EXIT_SUCCESS as i32 + 1;
/// QEMU's exit status when the core wrote `EXIT_FAILURE`.
pub const STATUS_FAILURE: i32 = 2 * microvisor_abi::EXIT_FAILURE as i32 + 1;
/// The port of QEMU's gdb stub with `-s`.
pub const GDB_PORT: u16 = 1234;

/// The QEMU command line for a request.
pub fn command(qemu: &Path, request: &BootRequest) -> Command {
    let mut command = Command::new(qemu);
    command
        .args([
            "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", "512M",
        ])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .args([
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ])
        .arg("-kernel")
        .arg(&request.core)
        .arg("-initrd")
        .arg(&request.image);
    if request.icount {
        command.args(["-icount", "shift=0"]);
    }
    if !request.command_line.is_empty() {
        command.arg("-append").arg(&request.command_line);
    }
    if request.gdb {
        command.args(["-s", "-S"]);
    }
    command
}

/// Boots the request in QEMU.
pub fn run(request: &BootRequest, sink: &mut dyn FnMut(&str)) -> Result<Outcome> {
    let qemu = tools::require(tools::QEMU)?;
    if request.gdb {
        eprintln!(
            "mvbuild: QEMU waits for a debugger on port {GDB_PORT}; attach with:\n    gdb {} -ex 'target remote :{GDB_PORT}'",
            request.core.display()
        );
    }
    let mut child = command(&qemu, request)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", qemu.display()))?;
    let mut stdout = child.stdout.take().context("QEMU's stdout is not a pipe")?;
    let mut stderr = child.stderr.take().context("QEMU's stderr is not a pipe")?;
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut splitter = LineSplitter::default();
        let mut buffer = [0u8; 4096];
        while let Ok(count @ 1..) = stdout.read(&mut buffer) {
            for line in splitter.push(&buffer[..count]) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        }
        if let Some(line) = splitter.flush() {
            let _ = sender.send(line);
        }
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let watched = supervise(&mut child, &receiver, request.timeout, &|| {}, sink)?;
    let stderr = errors.join().unwrap_or_default();
    let ending = ending(&watched, request.timeout, &stderr);
    Ok(Outcome {
        ending,
        lines: watched.lines,
        elapsed: watched.elapsed,
    })
}

/// Maps what was seen of a QEMU run to its ending.
pub fn ending(watched: &Watched, timeout: Option<Duration>, stderr: &str) -> Ending {
    let stderr = stderr.trim();
    let said = if stderr.is_empty() {
        String::new()
    } else {
        format!(
            "; QEMU said: {}",
            stderr.lines().collect::<Vec<_>>().join(" / ")
        )
    };
    if watched.timed_out {
        return Ending::Timeout(timeout.unwrap_or_default());
    }
    if watched.lingered {
        return Ending::EmulatorError(format!(
            "the core printed its halt line but QEMU was still running {} s later: the core \
             must write its verdict to isa-debug-exit (port 0xf4)",
            HALT_GRACE.as_secs()
        ));
    }
    let Some(status) = watched.status else {
        return Ending::EmulatorError("QEMU was stopped without an exit status".into());
    };
    match (status.code(), &watched.halt) {
        (Some(STATUS_SUCCESS), Some(Verdict::Success)) => Ending::Halted(Verdict::Success),
        (Some(STATUS_SUCCESS), Some(verdict)) => Ending::EmulatorError(format!(
            "QEMU exited with the success status but the core's halt line says {verdict}"
        )),
        (Some(STATUS_SUCCESS), None) => Ending::EmulatorError(format!(
            "QEMU exited with status 1 but the core never printed its halt line (QEMU's own \
             errors also exit with 1){said}"
        )),
        (Some(STATUS_FAILURE), Some(Verdict::Failure { reason })) => {
            Ending::Halted(Verdict::Failure {
                reason: reason.clone(),
            })
        }
        (Some(STATUS_FAILURE), Some(Verdict::Success)) => Ending::Halted(Verdict::Failure {
            reason: "the halt line said success but the core exited with the failure code".into(),
        }),
        (Some(STATUS_FAILURE), None) => Ending::Halted(Verdict::Failure {
            reason: "the core exited with the failure code before its halt line".into(),
        }),
        _ => Ending::EmulatorError(format!(
            "emulator exited unexpectedly ({}){said}",
            describe_status(status)
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::path::PathBuf;
    use std::process::ExitStatus;

    use super::*;
    use crate::emulator::Emulator;

    fn watched(code: Option<i32>, halt: Option<Verdict>) -> Watched {
        Watched {
            status: code.map(|code| ExitStatus::from_raw(code << 8)),
            timed_out: false,
            lingered: false,
            lines: Vec::new(),
            halt,
            elapsed: Duration::ZERO,
        }
    }

    fn failure(reason: &str) -> Verdict {
        Verdict::Failure {
            reason: reason.into(),
        }
    }

    #[test]
    fn exit_statuses_map_to_verdicts() {
        assert_eq!(STATUS_SUCCESS, 1);
        assert_eq!(STATUS_FAILURE, 3);
        let end = |code, halt| ending(&watched(Some(code), halt), None, "");
        assert_eq!(
            end(1, Some(Verdict::Success)),
            Ending::Halted(Verdict::Success)
        );
        assert_eq!(
            end(3, Some(failure("fault"))),
            Ending::Halted(failure("fault"))
        );
        assert!(matches!(
            end(3, None),
            Ending::Halted(Verdict::Failure { .. })
        ));
        assert!(matches!(
            end(3, Some(Verdict::Success)),
            Ending::Halted(Verdict::Failure { .. })
        ));
        assert!(matches!(end(1, None), Ending::EmulatorError(_)));
        assert!(matches!(
            end(1, Some(failure("x"))),
            Ending::EmulatorError(_)
        ));
        assert_eq!(
            end(0, Some(Verdict::Success)),
            Ending::EmulatorError("emulator exited unexpectedly (status 0)".into())
        );
        let error = ending(
            &watched(Some(1), None),
            None,
            "qemu: could not load kernel\n",
        );
        let Ending::EmulatorError(message) = error else {
            panic!()
        };
        assert!(
            message.ends_with("QEMU said: qemu: could not load kernel"),
            "{message}"
        );
    }

    #[test]
    fn timeouts_and_lingering() {
        let mut run = watched(None, None);
        run.timed_out = true;
        let limit = Some(Duration::from_secs(7));
        assert_eq!(
            ending(&run, limit, ""),
            Ending::Timeout(Duration::from_secs(7))
        );
        let mut run = watched(None, Some(Verdict::Success));
        run.lingered = true;
        assert!(matches!(ending(&run, limit, ""), Ending::EmulatorError(_)));
        let killed = Watched {
            status: Some(ExitStatus::from_raw(9)),
            ..watched(None, None)
        };
        assert_eq!(
            ending(&killed, limit, ""),
            Ending::EmulatorError("emulator exited unexpectedly (signal 9)".into())
        );
    }

    #[test]
    fn command_line() {
        let request = BootRequest {
            emulator: Emulator::Qemu,
            core: PathBuf::from("/t/microvisor"),
            image: PathBuf::from("/t/default.img"),
            work_directory: PathBuf::from("/t/work"),
            timeout: None,
            icount: true,
            gdb: true,
            command_line: "selftest=core-fault".to_string(),
        };
        let command = command(Path::new("qemu-system-x86_64"), &request);
        let arguments: Vec<_> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let line = arguments.join(" ");
        assert!(
            line.starts_with(
                "-machine q35 -accel tcg -cpu max -m 512M -display none -serial stdio"
            )
        );
        assert!(line.contains("-device isa-debug-exit,iobase=0xf4,iosize=0x04"));
        assert!(line.contains("-kernel /t/microvisor -initrd /t/default.img"));
        assert!(line.ends_with("-icount shift=0 -append selftest=core-fault -s -S"));
    }
}
