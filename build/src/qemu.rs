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
//!
//! [`run_guest`] boots a test VM's image (`test-vms/<name>`) directly,
//! without the core: through its PVH note with `-kernel`, or through its
//! real-mode entry from a boot sector ([`GuestEntry`]). The CPU is `max`
//! without the CPUID hypervisor bit (TCG otherwise reports itself as a
//! hypervisor, "TCGTCGTCGTCG"), so the guest sees bare hardware. The guest
//! ends through the same isa-debug-exit port: status 1 (it wrote 0) is
//! success once it printed a line, 3 or above is failure, 0 (a reset, as a
//! triple fault makes with `-no-reboot`) is failure too.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::console::{LineSplitter, Verdict};
use crate::emulator::{
    BootRequest, ConsoleFeed, Ending, HALT_GRACE, Outcome, Watched, describe_status, supervise,
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
    attach_disks(&mut command, &request.disks);
    attach_nics(&mut command, &request.nics);
    command
}

/// NICs as virtio-net PCI functions (modern only: device ID 0x1041), in
/// order after the disks, each on its own backend (`user`: QEMU's
/// user-mode network, 10.0.2.0/24 with the gateway 10.0.2.2) with its MAC
/// address.
fn attach_nics(command: &mut Command, nics: &[capdl::MachineNic]) {
    for (index, nic) in nics.iter().enumerate() {
        let backend = match nic.backend {
            capdl::NicBackend::User => "user",
        };
        command.args([
            "-netdev".to_string(),
            format!("{backend},id=nic{index}"),
            "-device".to_string(),
            format!(
                "virtio-net-pci,netdev=nic{index},disable-legacy=on,mac={}",
                nic.mac_text()
            ),
        ]);
    }
}

/// Disks as virtio-blk PCI functions (modern only: device ID 0x1042), in
/// order, so the first takes the first free slot.
fn attach_disks(command: &mut Command, disks: &[PathBuf]) {
    for (index, disk) in disks.iter().enumerate() {
        let mut drive = std::ffi::OsString::from("if=none,format=raw,file=");
        drive.push(disk);
        drive.push(format!(",id=disk{index}"));
        command.arg("-drive").arg(drive).args([
            "-device".to_string(),
            format!("virtio-blk-pci,drive=disk{index},disable-legacy=on"),
        ]);
    }
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
    let (watched, stderr) = watch(
        command(&qemu, request),
        request.timeout,
        &request.input,
        sink,
    )?;
    let ending = ending(&watched, request.timeout, &stderr);
    Ok(Outcome {
        ending,
        lines: watched.lines,
        arrivals: watched.arrivals,
        elapsed: watched.elapsed,
        disks: request.disks.clone(),
    })
}

/// Starts QEMU with `command` (stdin as `input` says: closed, this tool's,
/// or a pipe the script is typed into; stdout and stderr piped) and
/// watches its console until it ends; returns what was seen and its
/// stderr.
fn watch(
    mut command: Command,
    timeout: Option<Duration>,
    input: &ConsoleFeed,
    sink: &mut dyn FnMut(&str),
) -> Result<(Watched, String)> {
    let program = PathBuf::from(command.get_program());
    let stdin = match input {
        ConsoleFeed::Nothing => Stdio::null(),
        ConsoleFeed::Terminal => Stdio::inherit(),
        ConsoleFeed::Script(_) => Stdio::piped(),
    };
    let mut child = command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", program.display()))?;
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
    let mut typist = Typist::new(input, child.stdin.take());
    let watched = supervise(&mut child, &receiver, timeout, &|| {}, &mut |line| {
        typist.saw(line);
        sink(line);
    })?;
    let stderr = errors.join().unwrap_or_default();
    Ok((watched, stderr))
}

/// Types a [`ConsoleFeed::Script`] into QEMU's stdin as its lines appear.
struct Typist<'a> {
    steps: &'a [crate::emulator::Send],
    next: usize,
    stdin: Option<std::process::ChildStdin>,
}

impl<'a> Typist<'a> {
    fn new(input: &'a ConsoleFeed, stdin: Option<std::process::ChildStdin>) -> Self {
        let steps = match input {
            ConsoleFeed::Script(steps) => &steps[..],
            _ => &[],
        };
        Self {
            steps,
            next: 0,
            stdin,
        }
    }

    /// A console line arrived: sends the next step's text if the line is
    /// what it waits for (a write error means QEMU is gone; the run's end
    /// says why).
    fn saw(&mut self, line: &str) {
        use std::io::Write;
        let (Some(step), Some(stdin)) = (self.steps.get(self.next), self.stdin.as_mut()) else {
            return;
        };
        if line.contains(&step.after) {
            let _ = stdin.write_all(step.send.as_bytes());
            let _ = stdin.flush();
            self.next += 1;
        }
    }
}

/// What QEMU wrote to stderr, as a suffix for an error message (empty when
/// it wrote nothing).
fn qemu_said(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        String::new()
    } else {
        format!(
            "; QEMU said: {}",
            stderr.lines().collect::<Vec<_>>().join(" / ")
        )
    }
}

/// Maps what was seen of a QEMU run to its ending.
pub fn ending(watched: &Watched, timeout: Option<Duration>, stderr: &str) -> Ending {
    let said = qemu_said(stderr);
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

/// How a test VM is entered when it boots without the core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestEntry {
    /// QEMU's `-kernel` finds the PVH note and enters 32-bit code, or,
    /// given the ELF32 copy of a test VM with a multiboot header
    /// ([`crate::elf32`]), boots it through its multiboot loader.
    #[default]
    Pvh,
    /// The firmware boots [`BOOT_SECTOR`], which copies the image's first
    /// 4 KiB (the real-mode stub) to 0x10000 and jumps there in real mode
    /// (CS base 0x10000 instead of the 0x100000 a VMM uses: the stub reads
    /// its data through CS-relative offsets and jumps to absolute
    /// addresses, so only CS's base matters). QEMU's generic loader places
    /// the image at its own addresses.
    Real,
}

impl std::fmt::Display for GuestEntry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Self::Pvh => "pvh",
            Self::Real => "real",
        })
    }
}

/// 16-bit code booted as the master boot record for [`GuestEntry::Real`]:
///
/// ```text
/// fa                cli
/// b8 ff ff          mov $0xffff, %ax
/// 8e d8             mov %ax, %ds        ; 0xffff:0x10 = 0x100000 (A20 on)
/// be 10 00          mov $0x10, %si
/// b8 00 10          mov $0x1000, %ax
/// 8e c0             mov %ax, %es        ; 0x1000:0 = 0x10000
/// 31 ff             xor %di, %di
/// b9 00 10          mov $0x1000, %cx    ; 4 KiB
/// fc                cld
/// f3 a4             rep movsb
/// ea 00 00 00 10    ljmp $0x1000, $0    ; CS base 0x10000, IP 0
/// ```
pub const BOOT_SECTOR: [u8; 27] = [
    0xfa, 0xb8, 0xff, 0xff, 0x8e, 0xd8, 0xbe, 0x10, 0x00, 0xb8, 0x00, 0x10, 0x8e, 0xc0, 0x31, 0xff,
    0xb9, 0x00, 0x10, 0xfc, 0xf3, 0xa4, 0xea, 0x00, 0x00, 0x00, 0x10,
];
/// The size of the disk holding [`BOOT_SECTOR`] (SeaBIOS cannot read the
/// boot sector of a disk much smaller than this: 64 KiB fails).
const BOOT_DISK_SIZE: usize = 1024 * 1024;

/// Everything needed to boot one test VM image without the core.
#[derive(Clone, Debug)]
pub struct GuestRequest {
    /// The guest image's ELF file (`vm-<name>`).
    pub image: PathBuf,
    pub entry: GuestEntry,
    /// Where the boot disk of a [`GuestEntry::Real`] boot is written.
    pub work_directory: PathBuf,
    /// None: wait forever.
    pub timeout: Option<Duration>,
    /// QEMU `-icount shift=0`.
    pub icount: bool,
    /// A fresh zeroed disk of this size, QEMU's virtio-blk PCI function.
    pub disk_bytes: Option<u64>,
}

/// Where [`run_guest`] writes a [`GuestRequest::disk_bytes`] disk.
const GUEST_DISK: &str = "guest-disk.img";

/// The boot disk of a [`GuestEntry::Real`] boot: [`BOOT_SECTOR`] with the
/// boot signature, padded with zeros.
pub fn boot_disk() -> Vec<u8> {
    let mut disk = vec![0u8; BOOT_DISK_SIZE];
    disk[..BOOT_SECTOR.len()].copy_from_slice(&BOOT_SECTOR);
    disk[510] = 0x55;
    disk[511] = 0xaa;
    disk
}

/// The QEMU command line booting a test VM image; `disk` is the boot disk
/// for [`GuestEntry::Real`].
pub fn guest_command(qemu: &Path, request: &GuestRequest, disk: &Path) -> Command {
    let mut command = Command::new(qemu);
    command
        .args([
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-cpu",
            "max,-hypervisor",
        ])
        .args(["-m", "128M", "-net", "none"])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .args([
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ]);
    match request.entry {
        GuestEntry::Pvh => {
            command.arg("-kernel").arg(&request.image);
        }
        GuestEntry::Real => {
            let mut drive = std::ffi::OsString::from("format=raw,snapshot=on,file=");
            drive.push(disk);
            let mut loader = std::ffi::OsString::from("loader,file=");
            loader.push(&request.image);
            command.arg("-drive").arg(drive).arg("-device").arg(loader);
        }
    }
    if request.icount {
        command.args(["-icount", "shift=0"]);
    }
    if request.disk_bytes.is_some() {
        attach_disks(&mut command, &[request.work_directory.join(GUEST_DISK)]);
    }
    command
}

/// Boots a test VM image in QEMU without the core.
pub fn run_guest(request: &GuestRequest, sink: &mut dyn FnMut(&str)) -> Result<Outcome> {
    let qemu = tools::require(tools::QEMU)?;
    let disk = request.work_directory.join("boot-disk.img");
    if let Some(bytes) = request.disk_bytes {
        std::fs::create_dir_all(&request.work_directory)
            .with_context(|| format!("could not create {}", request.work_directory.display()))?;
        let path = request.work_directory.join(GUEST_DISK);
        let file = std::fs::File::create(&path)
            .with_context(|| format!("could not create {}", path.display()))?;
        file.set_len(bytes)
            .with_context(|| format!("could not size {}", path.display()))?;
    }
    if request.entry == GuestEntry::Real {
        std::fs::create_dir_all(&request.work_directory)
            .with_context(|| format!("could not create {}", request.work_directory.display()))?;
        std::fs::write(&disk, boot_disk())
            .with_context(|| format!("could not write {}", disk.display()))?;
    }
    let (watched, stderr) = watch(
        guest_command(&qemu, request, &disk),
        request.timeout,
        &ConsoleFeed::Nothing,
        sink,
    )?;
    let ending = guest_ending(&watched, request.timeout, &stderr);
    Ok(Outcome {
        ending,
        lines: watched.lines,
        arrivals: watched.arrivals,
        elapsed: watched.elapsed,
        disks: Vec::new(),
    })
}

/// Maps what was seen of a test VM's run to its ending (see the module
/// documentation).
pub fn guest_ending(watched: &Watched, timeout: Option<Duration>, stderr: &str) -> Ending {
    let said = qemu_said(stderr);
    if watched.timed_out || watched.lingered {
        return Ending::Timeout(timeout.unwrap_or_default());
    }
    let Some(status) = watched.status else {
        return Ending::EmulatorError("QEMU was stopped without an exit status".into());
    };
    match status.code() {
        Some(STATUS_SUCCESS) if watched.lines.is_empty() => Ending::EmulatorError(format!(
            "QEMU exited with status 1 but the guest printed nothing (QEMU's own errors also \
             exit with 1){said}"
        )),
        Some(STATUS_SUCCESS) => Ending::Halted(Verdict::Success),
        Some(0) => Ending::Halted(Verdict::Failure {
            reason: "the machine reset (a triple fault, with -no-reboot)".into(),
        }),
        Some(code) if code > STATUS_SUCCESS && code % 2 == 1 => Ending::Halted(Verdict::Failure {
            reason: format!("the guest exited with status {}", (code - 1) / 2),
        }),
        _ => Ending::EmulatorError(format!(
            "emulator exited unexpectedly ({}){said}",
            describe_status(status)
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_typist_sends_each_step_after_its_line_in_order() {
        use crate::emulator::Send;
        let mut child = std::process::Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let feed = ConsoleFeed::Script(vec![
            Send {
                after: "prompt".into(),
                send: "one\n".into(),
            },
            Send {
                after: "prompt".into(),
                send: "two\n".into(),
            },
        ]);
        let mut typist = Typist::new(&feed, child.stdin.take());
        typist.saw("booting");
        typist.saw("a prompt");
        typist.saw("nothing");
        typist.saw("prompt again");
        typist.saw("prompt, but the script is done");
        drop(typist);
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.stdout, b"one\ntwo\n");
    }

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
            arrivals: Vec::new(),
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
    fn guest_statuses_map_to_verdicts() {
        let end = |code: i32, lines: &[&str]| {
            let mut run = watched(Some(code), None);
            run.lines = lines.iter().map(|line| line.to_string()).collect();
            guest_ending(&run, None, "")
        };
        assert_eq!(
            end(1, &["TEST hello PASS"]),
            Ending::Halted(Verdict::Success)
        );
        assert!(matches!(end(1, &[]), Ending::EmulatorError(_)));
        assert_eq!(
            end(3, &["TEST escape FAIL: x"]),
            Ending::Halted(failure("the guest exited with status 1"))
        );
        assert_eq!(
            end(0, &["crash: about to triple fault"]),
            Ending::Halted(failure(
                "the machine reset (a triple fault, with -no-reboot)"
            ))
        );
        assert!(matches!(end(2, &["x"]), Ending::EmulatorError(_)));
        let mut run = watched(None, None);
        run.timed_out = true;
        assert_eq!(
            guest_ending(&run, Some(Duration::from_secs(3)), ""),
            Ending::Timeout(Duration::from_secs(3))
        );
    }

    #[test]
    fn guest_command_lines() {
        let request = GuestRequest {
            image: PathBuf::from("/t/vm-hello"),
            entry: GuestEntry::Pvh,
            work_directory: PathBuf::from("/t/work"),
            timeout: None,
            icount: true,
            disk_bytes: None,
        };
        let line = |request: &GuestRequest| {
            guest_command(
                Path::new("qemu-system-x86_64"),
                request,
                Path::new("/t/work/disk.img"),
            )
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
        };
        let pvh = line(&request);
        assert!(pvh.starts_with("-machine q35 -accel tcg -cpu max,-hypervisor"));
        assert!(pvh.contains("-device isa-debug-exit,iobase=0xf4,iosize=0x04"));
        assert!(
            pvh.ends_with("-kernel /t/vm-hello -icount shift=0"),
            "{pvh}"
        );
        let with_disk = line(&GuestRequest {
            disk_bytes: Some(4 << 20),
            ..request.clone()
        });
        assert!(
            with_disk.ends_with(
                "-icount shift=0 -drive if=none,format=raw,file=/t/work/guest-disk.img,id=disk0 -device virtio-blk-pci,drive=disk0,disable-legacy=on"
            ),
            "{with_disk}"
        );
        let real = line(&GuestRequest {
            entry: GuestEntry::Real,
            icount: false,
            ..request
        });
        assert!(
            real.ends_with(
                "-drive format=raw,snapshot=on,file=/t/work/disk.img -device loader,file=/t/vm-hello"
            ),
            "{real}"
        );
        let disk = boot_disk();
        assert_eq!(disk.len(), BOOT_DISK_SIZE);
        assert_eq!(&disk[..BOOT_SECTOR.len()], &BOOT_SECTOR);
        assert_eq!(&disk[510..512], &[0x55, 0xaa]);
    }

    #[test]
    fn command_line() {
        let request = BootRequest {
            icount: true,
            gdb: true,
            command_line: "selftest=core-fault".to_string(),
            disks: vec![PathBuf::from("/t/work/disk0.img")],
            ..BootRequest::for_tests(Emulator::Qemu)
        };
        let line = command_line_of(&request);
        assert!(
            line.starts_with(
                "-machine q35 -accel tcg -cpu max -m 512M -display none -serial stdio"
            )
        );
        assert!(line.contains("-device isa-debug-exit,iobase=0xf4,iosize=0x04"));
        assert!(line.contains("-kernel /t/microvisor -initrd /t/default.img"));
        assert!(line.contains("-icount shift=0 -append selftest=core-fault -s -S"));
        assert!(line.ends_with(
            "-drive if=none,format=raw,file=/t/work/disk0.img,id=disk0 -device virtio-blk-pci,drive=disk0,disable-legacy=on"
        ));
    }

    #[test]
    fn machine_nics_follow_the_disks() {
        let request = BootRequest {
            disks: vec![PathBuf::from("/t/work/disk0.img")],
            nics: vec![capdl::MachineNic {
                backend: capdl::NicBackend::User,
                mac: [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef],
            }],
            ..BootRequest::for_tests(Emulator::Qemu)
        };
        let line = command_line_of(&request);
        assert!(
            line.ends_with(
                "-device virtio-blk-pci,drive=disk0,disable-legacy=on \
                 -netdev user,id=nic0 -device virtio-net-pci,netdev=nic0,disable-legacy=on,mac=52:54:00:ab:cd:ef"
            ),
            "{line}"
        );
        // Without NICs there is no -netdev.
        let without = command_line_of(&BootRequest {
            nics: Vec::new(),
            ..request
        });
        assert!(!without.contains("-netdev"), "{without}");
    }

    /// QEMU's arguments for `request`, joined by spaces.
    fn command_line_of(request: &BootRequest) -> String {
        command(Path::new("qemu-system-x86_64"), request)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}
