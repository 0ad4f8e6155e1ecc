//! External programs and files the build tool drives (emulators, ISO
//! makers, firmware), each with the Debian/Ubuntu package that provides it,
//! and which of them each emulator needs ([`needed_by`]).
//!
//! [`crate::setup`] installs what is missing before a command needs it;
//! [`require`] is the last check before a tool is spawned, and a tool still
//! missing then is reported as one sentence with the install command, e.g.
//! "qemu-system-x86_64 not found: install it with `sudo apt-get install
//! qemu-system-x86`", instead of a stack trace.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::emulator::Emulator;

/// What must exist on the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// An executable found on `PATH`.
    Program(&'static str),
    /// A file or directory at this absolute path (firmware, GRUB's
    /// platform files).
    Path(&'static str),
}

/// Something a command needs and the Debian package that provides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tool {
    pub needs: Needs,
    pub package: &'static str,
}

pub const QEMU: Tool = Tool::program("qemu-system-x86_64", "qemu-system-x86");
pub const BOCHS: Tool = Tool::program("bochs", "bochs");
/// The system BIOS Bochs boots ([`crate::bochs::BIOS`]).
pub const BOCHS_BIOS: Tool = Tool::path(crate::bochs::BIOS, "bochsbios");
/// The VGA BIOS Bochs loads ([`crate::bochs::VGA_BIOS`]).
pub const VGA_BIOS: Tool = Tool::path(crate::bochs::VGA_BIOS, "vgabios");
pub const GRUB_MKRESCUE: Tool = Tool::program("grub-mkrescue", "grub-common");
/// GRUB's BIOS platform files, without which `grub-mkrescue` makes no
/// BIOS-bootable ISO ([`crate::bochs::GRUB_PC`]).
pub const GRUB_PC: Tool = Tool::path(crate::bochs::GRUB_PC, "grub-pc-bin");
/// `grub-mkrescue` runs it to write the ISO.
pub const XORRISO: Tool = Tool::program("xorriso", "xorriso");
/// `grub-mkrescue` runs it for the ISO's EFI image.
pub const MFORMAT: Tool = Tool::program("mformat", "mtools");
/// Makes the ext4 image the Linux disk test imports (`crate::debian`);
/// looked for where Debian keeps it, since `/usr/sbin` is not on every
/// user's `PATH`.
pub const MKFS_EXT4: Tool = Tool::path("/usr/sbin/mkfs.ext4", "e2fsprogs");

/// Everything booting in `emulator` needs.
pub fn needed_by(emulator: Emulator) -> &'static [Tool] {
    match emulator {
        Emulator::Qemu => &[QEMU, MKFS_EXT4],
        Emulator::Bochs => &[
            BOCHS,
            BOCHS_BIOS,
            VGA_BIOS,
            GRUB_MKRESCUE,
            GRUB_PC,
            XORRISO,
            MFORMAT,
        ],
    }
}

impl Tool {
    /// An executable on `PATH` from `package`.
    pub const fn program(name: &'static str, package: &'static str) -> Self {
        Self {
            needs: Needs::Program(name),
            package,
        }
    }

    /// A file or directory from `package`.
    pub const fn path(path: &'static str, package: &'static str) -> Self {
        Self {
            needs: Needs::Path(path),
            package,
        }
    }

    /// The program or path as a person would look for it.
    pub fn name(&self) -> &'static str {
        match self.needs {
            Needs::Program(name) | Needs::Path(name) => name,
        }
    }

    /// Where the tool is, if it is there.
    pub fn find(&self) -> Option<PathBuf> {
        match self.needs {
            Needs::Program(program) => find_in_path(program),
            Needs::Path(path) => Path::new(path).exists().then(|| PathBuf::from(path)),
        }
    }
}

/// The install advice for a missing package.
pub fn install_hint(package: &str) -> String {
    format!("install it with `sudo apt-get install {package}`")
}

/// The full path of a tool, or an error with the install command.
pub fn require(tool: Tool) -> Result<PathBuf> {
    match tool.find() {
        Some(path) => Ok(path),
        None => bail!("{} not found: {}", tool.name(), install_hint(tool.package)),
    }
}

/// Searches `PATH` for an executable file.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(program))
        .find(|candidate| {
            candidate.metadata().is_ok_and(|metadata| {
                metadata.is_file() && metadata.permissions().mode() & 0o111 != 0
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_the_package() {
        let tool = Tool::program("mvbuild-no-such-program", "no-such-package");
        assert_eq!(
            require(tool).unwrap_err().to_string(),
            "mvbuild-no-such-program not found: install it with `sudo apt-get install no-such-package`"
        );
        assert!(find_in_path("sh").is_some());
        let file = Tool::path("/no/such/bios", "bochsbios");
        assert_eq!(
            require(file).unwrap_err().to_string(),
            "/no/such/bios not found: install it with `sudo apt-get install bochsbios`"
        );
        let root = Tool::path("/", "base-files");
        assert_eq!(require(root).unwrap(), Path::new("/"));
    }

    #[test]
    fn qemu_needs_qemu_and_mkfs_and_bochs_needs_its_iso_tools() {
        let packages = |emulator| {
            needed_by(emulator)
                .iter()
                .map(|tool| tool.package)
                .collect::<Vec<_>>()
        };
        assert_eq!(packages(Emulator::Qemu), ["qemu-system-x86", "e2fsprogs"]);
        assert_eq!(
            packages(Emulator::Bochs),
            [
                "bochs",
                "bochsbios",
                "vgabios",
                "grub-common",
                "grub-pc-bin",
                "xorriso",
                "mtools"
            ]
        );
        assert_eq!(VGA_BIOS.name(), "/usr/share/vgabios/vgabios.bin");
    }
}
