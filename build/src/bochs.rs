//! The Bochs driver: the GRUB `multiboot2` path, which is also how real
//! hardware boots the core.
//!
//! It stages `/boot/microvisor.elf`, `/boot/system.img` and
//! `/boot/grub/grub.cfg` in the run's work directory, makes an ISO with
//! `grub-mkrescue`, writes a bochsrc (Skylake-X CPU with VMX, CD-ROM boot,
//! COM1 into `serial.txt`, a headless RFB display that waits for no viewer)
//! and starts `bochs -q -f bochsrc -rc commands`, where `commands` holds `c`
//! because the Debian build stops in its internal debugger otherwise. The
//! console is read by tailing `serial.txt`; the verdict is the core's halt
//! line, since Bochs has no exit-status device (the core ends the run by
//! writing `Shutdown` to port 0x8900). Everything stays in the work
//! directory for inspection after the run. Called through
//! [`crate::emulator::boot`].

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::console::LineSplitter;
use crate::emulator::{BootRequest, Ending, Outcome, Watched, describe_status, supervise};
use crate::tools;

/// The system BIOS from Debian's `bochsbios`.
pub const BIOS: &str = "/usr/share/bochs/BIOS-bochs-latest";
/// The VGA BIOS from Debian's `vgabios`.
pub const VGA_BIOS: &str = "/usr/share/vgabios/vgabios.bin";
/// GRUB's BIOS platform files from `grub-pc-bin`, which `grub-mkrescue`
/// needs to make a BIOS-bootable ISO.
pub const GRUB_PC: &str = "/usr/lib/grub/i386-pc";

/// The GRUB menu: boot the core at once with the image as its module.
pub fn grub_config(command_line: &str) -> String {
    format!(
        "set timeout=0\n\
         set default=0\n\
         menuentry \"microvisor\" {{\n\
         \x20   multiboot2 /boot/microvisor.elf {command_line}\n\
         \x20   module2 /boot/system.img system\n\
         \x20   boot\n\
         }}\n"
    )
}

/// The Bochs configuration for booting `iso` with COM1 written to `serial`.
/// Paths must not contain spaces (Bochs splits on them); the driver passes
/// names relative to the work directory Bochs runs in. The sound settings
/// are not cosmetic: Bochs 2.7 aborts in its ALSA driver on a machine
/// without a sound card.
pub fn bochsrc(iso: &Path, serial: &Path, log: &Path) -> String {
    format!(
        "# Written by mvbuild for one run; see build/src/bochs.rs.\n\
         megs: 512\n\
         cpu: model=corei7_skylake_x\n\
         romimage: file={BIOS}\n\
         vgaromimage: file={VGA_BIOS}\n\
         display_library: rfb, options=\"timeout=0\"\n\
         ata0-master: type=cdrom, path={iso}, status=inserted\n\
         boot: cdrom\n\
         com1: enabled=1, mode=file, dev={serial}\n\
         port_e9_hack: enabled=1\n\
         mouse: enabled=0\n\
         speaker: enabled=0\n\
         sound: driver=dummy\n\
         log: {log}\n\
         panic: action=fatal\n\
         error: action=report\n\
         info: action=ignore\n\
         debug: action=ignore\n",
        iso = iso.display(),
        serial = serial.display(),
        log = log.display(),
    )
}

/// Stages the boot files and makes the ISO; returns its path.
pub fn make_iso(request: &BootRequest) -> Result<PathBuf> {
    let grub_mkrescue = tools::require(tools::GRUB_MKRESCUE)?;
    tools::require(tools::XORRISO)?;
    tools::require(tools::MFORMAT)?;
    tools::require(tools::GRUB_PC)?;
    let staging = request.work_directory.join("iso");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("could not clear {}", staging.display()))?;
    }
    let grub = staging.join("boot/grub");
    std::fs::create_dir_all(&grub)
        .with_context(|| format!("could not create {}", grub.display()))?;
    let copy = |from: &Path, to: &str| {
        std::fs::copy(from, staging.join(to))
            .with_context(|| format!("could not copy {} into the ISO", from.display()))
    };
    copy(&request.core, "boot/microvisor.elf")?;
    copy(&request.image, "boot/system.img")?;
    std::fs::write(grub.join("grub.cfg"), grub_config(&request.command_line))
        .context("could not write grub.cfg")?;
    let iso = request.work_directory.join("system.iso");
    let output = Command::new(&grub_mkrescue)
        .arg("-o")
        .arg(&iso)
        // Only what this menu needs: a smaller ISO that builds faster.
        .args([
            "--install-modules=multiboot2 normal iso9660 biosdisk",
            "--fonts=",
            "--locales=",
            "--themes=",
        ])
        .arg(&staging)
        .stdin(Stdio::null())
        .output()
        .context("could not start grub-mkrescue")?;
    if !output.status.success() {
        bail!(
            "grub-mkrescue failed ({}): {}",
            describe_status(output.status),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(iso)
}

/// What Bochs says when its headless display found no free port: the
/// run never started, so it is made once more.
const RFB_NO_PORT: &str = "RFB could not bind any port";

/// Boots the request in Bochs (once more if Bochs could not start its
/// display for want of a port, which happens rarely on a busy machine).
pub fn run(request: &BootRequest, sink: &mut dyn FnMut(&str)) -> Result<Outcome> {
    let outcome = run_once(request, sink)?;
    let no_port =
        matches!(&outcome.ending, Ending::EmulatorError(why) if why.contains(RFB_NO_PORT));
    if no_port && outcome.lines.is_empty() {
        eprintln!("mvbuild: Bochs found no free display port; starting it again");
        std::thread::sleep(std::time::Duration::from_millis(500));
        return run_once(request, sink);
    }
    Ok(outcome)
}

/// One Bochs run of the request.
fn run_once(request: &BootRequest, sink: &mut dyn FnMut(&str)) -> Result<Outcome> {
    if !request.disks.is_empty() {
        bail!("[machine] disks need QEMU (Bochs runs here attach none)");
    }
    if !request.nics.is_empty() {
        bail!("[machine] nics need QEMU (Bochs runs here attach none)");
    }
    if request.gdb || request.icount {
        bail!(
            "--gdb and icount need QEMU; for Bochs, use its internal debugger by hand: \
             bochs -f {}",
            request.work_directory.join("bochsrc").display()
        );
    }
    let bochs = tools::require(tools::BOCHS)?;
    tools::require(tools::BOCHS_BIOS)?;
    tools::require(tools::VGA_BIOS)?;
    let directory = &request.work_directory;
    std::fs::create_dir_all(directory)
        .with_context(|| format!("could not create {}", directory.display()))?;
    let iso = make_iso(request)?;
    let serial = directory.join("serial.txt");
    let log = directory.join("bochs.log");
    let output = directory.join("bochs.out");
    for stale in [&serial, &log, &output] {
        if stale.exists() {
            std::fs::remove_file(stale)
                .with_context(|| format!("could not remove {}", stale.display()))?;
        }
    }
    let local = |path: &Path| path.strip_prefix(directory).unwrap_or(path).to_path_buf();
    std::fs::write(
        directory.join("bochsrc"),
        bochsrc(&local(&iso), &local(&serial), &local(&log)),
    )
    .context("could not write the bochsrc")?;
    std::fs::write(directory.join("commands"), "c\n")
        .context("could not write the Bochs commands")?;
    let output_file = std::fs::File::create(&output)
        .with_context(|| format!("could not create {}", output.display()))?;
    let mut child = Command::new(&bochs)
        .args(["-q", "-f", "bochsrc", "-rc", "commands"])
        .current_dir(directory)
        .stdin(Stdio::null())
        .stdout(
            output_file
                .try_clone()
                .context("could not share the Bochs output file")?,
        )
        .stderr(output_file)
        .spawn()
        .with_context(|| format!("could not start {}", bochs.display()))?;
    let finished = Arc::new(AtomicBool::new(false));
    let (sender, receiver) = mpsc::channel();
    let tail = {
        let finished = Arc::clone(&finished);
        let serial = serial.clone();
        std::thread::spawn(move || tail_file(&serial, &finished, &sender))
    };
    let stopped = || finished.store(true, Ordering::SeqCst);
    let watched = supervise(&mut child, &receiver, request.timeout, &stopped, sink);
    stopped();
    let _ = tail.join();
    let watched = watched?;
    let ending = ending(&watched, request.timeout, directory);
    Ok(Outcome {
        ending,
        lines: watched.lines,
        arrivals: watched.arrivals,
        elapsed: watched.elapsed,
        disks: request.disks.clone(),
    })
}

/// Sends the lines of a growing file until `finished` is set, then the rest.
fn tail_file(path: &Path, finished: &AtomicBool, sender: &mpsc::Sender<String>) {
    let mut splitter = LineSplitter::default();
    let mut file: Option<std::fs::File> = None;
    let mut position = 0u64;
    loop {
        let last_round = finished.load(Ordering::SeqCst);
        if file.is_none() {
            file = std::fs::File::open(path).ok();
        }
        if let Some(file) = file.as_mut() {
            let mut bytes = Vec::new();
            if file.seek(SeekFrom::Start(position)).is_ok() && file.read_to_end(&mut bytes).is_ok()
            {
                position += bytes.len() as u64;
                for line in splitter.push(&bytes) {
                    if sender.send(line).is_err() {
                        return;
                    }
                }
            }
        }
        if last_round {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(line) = splitter.flush() {
        let _ = sender.send(line);
    }
}

/// Maps what was seen of a Bochs run to its ending: the halt line decides.
pub fn ending(watched: &Watched, timeout: Option<Duration>, directory: &Path) -> Ending {
    if let Some(verdict) = &watched.halt {
        return Ending::Halted(verdict.clone());
    }
    if watched.timed_out {
        return Ending::Timeout(timeout.unwrap_or_default());
    }
    let status = watched.status.map_or_else(
        || "was stopped".to_string(),
        |status| format!("exited ({})", describe_status(status)),
    );
    let mut message = format!("Bochs {status} before the core printed its halt line");
    if let Some(complaint) = last_complaint(&directory.join("bochs.log")) {
        message.push_str(&format!("; Bochs said: {complaint}"));
    }
    message.push_str(&format!(" (files in {})", directory.display()));
    Ending::EmulatorError(message)
}

/// The last panic or error line of a Bochs log, trimmed of its prefix.
fn last_complaint(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .find(|line| line.contains("p[") || line.contains("e["))
        .map(|line| {
            line.split_once("] ")
                .map_or(line, |(_, rest)| rest)
                .trim()
                .to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_nics_are_refused() {
        let request = BootRequest {
            nics: vec![capdl::MachineNic {
                backend: capdl::NicBackend::User,
                mac: capdl::DEFAULT_NIC_MAC,
            }],
            ..BootRequest::for_tests(crate::emulator::Emulator::Bochs)
        };
        // Refused before Bochs is looked for or anything is written.
        let error = run(&request, &mut |_| {}).unwrap_err();
        assert_eq!(
            error.to_string(),
            "[machine] nics need QEMU (Bochs runs here attach none)"
        );
    }

    #[test]
    fn grub_menu_boots_core_with_image() {
        let config = grub_config("selftest=core-fault");
        assert!(config.starts_with("set timeout=0\n"));
        let multiboot = config
            .find("multiboot2 /boot/microvisor.elf selftest=core-fault\n")
            .unwrap();
        let module = config.find("module2 /boot/system.img system").unwrap();
        let boot = config.find("    boot\n").unwrap();
        assert!(multiboot < module && module < boot);
    }

    #[test]
    fn bochsrc_is_headless_and_boots_the_iso() {
        let text = bochsrc(
            Path::new("/w/system.iso"),
            Path::new("/w/serial.txt"),
            Path::new("/w/bochs.log"),
        );
        for expected in [
            "cpu: model=corei7_skylake_x\n",
            "megs: 512\n",
            "display_library: rfb, options=\"timeout=0\"\n",
            "ata0-master: type=cdrom, path=/w/system.iso, status=inserted\n",
            "boot: cdrom\n",
            "com1: enabled=1, mode=file, dev=/w/serial.txt\n",
            "sound: driver=dummy\n",
            "romimage: file=/usr/share/bochs/BIOS-bochs-latest\n",
        ] {
            assert!(text.contains(expected), "{expected}");
        }
    }

    #[test]
    fn the_halt_line_decides() {
        let directory = std::env::temp_dir().join(format!("mvbuild-bochs-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        std::fs::write(
            directory.join("bochs.log"),
            "00000000000i[      ] fine\n00001234567p[CPU0  ] >>PANIC<< triple fault\n",
        )
        .unwrap();
        let mut watched = Watched {
            status: None,
            timed_out: false,
            lingered: true,
            lines: Vec::new(),
            arrivals: Vec::new(),
            halt: Some(crate::console::Verdict::Success),
            elapsed: Duration::ZERO,
        };
        assert_eq!(
            ending(&watched, None, &directory),
            Ending::Halted(crate::console::Verdict::Success)
        );
        watched.halt = None;
        watched.lingered = false;
        watched.timed_out = true;
        let limit = Some(Duration::from_secs(9));
        assert_eq!(
            ending(&watched, limit, &directory),
            Ending::Timeout(Duration::from_secs(9))
        );
        watched.timed_out = false;
        let Ending::EmulatorError(message) = ending(&watched, limit, &directory) else {
            panic!()
        };
        assert!(
            message.contains("Bochs said: >>PANIC<< triple fault"),
            "{message}"
        );
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
