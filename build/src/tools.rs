//! External programs the build tool drives (emulators, ISO makers) and the
//! files they need, checked before first use.
//!
//! A missing tool is reported as one sentence with the Debian install
//! command, e.g. "qemu-system-x86_64 not found: install it with `sudo
//! apt-get install qemu-system-x86`", so that a fresh machine gets an
//! instruction instead of a stack trace. Every command that spawns one of
//! these calls [`require`] first.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// An external program and the Debian packages that provide it (and what it
/// needs at run time).
#[derive(Clone, Copy, Debug)]
pub struct Tool {
    pub program: &'static str,
    pub packages: &'static str,
}

pub const QEMU: Tool = Tool {
    program: "qemu-system-x86_64",
    packages: "qemu-system-x86",
};
pub const BOCHS: Tool = Tool {
    program: "bochs",
    packages: "bochs bochsbios vgabios",
};
pub const GRUB_MKRESCUE: Tool = Tool {
    program: "grub-mkrescue",
    packages: "grub-pc-bin grub-common xorriso mtools",
};
pub const XORRISO: Tool = Tool {
    program: "xorriso",
    packages: "xorriso",
};
pub const MFORMAT: Tool = Tool {
    program: "mformat",
    packages: "mtools",
};

/// The install advice for missing packages.
pub fn install_hint(packages: &str) -> String {
    format!("install it with `sudo apt-get install {packages}`")
}

/// The full path of a tool, or an error with the install command.
pub fn require(tool: Tool) -> Result<PathBuf> {
    match find_in_path(tool.program) {
        Some(path) => Ok(path),
        None => bail!(
            "{} not found: {}",
            tool.program,
            install_hint(tool.packages)
        ),
    }
}

/// Checks that a data file a tool needs exists (for example a BIOS image).
pub fn require_file(path: &Path, packages: &str) -> Result<()> {
    if !path.is_file() {
        bail!("{} not found: {}", path.display(), install_hint(packages));
    }
    Ok(())
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
        let tool = Tool {
            program: "mvbuild-no-such-program",
            packages: "no-such-package",
        };
        assert_eq!(
            require(tool).unwrap_err().to_string(),
            "mvbuild-no-such-program not found: install it with `sudo apt-get install no-such-package`"
        );
        assert!(find_in_path("sh").is_some());
        assert!(require_file(Path::new("/no/such/bios"), "bochsbios").is_err());
    }
}
