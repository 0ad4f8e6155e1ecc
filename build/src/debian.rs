//! The Debian guest: an unmodified Debian cloud kernel and a busybox
//! initramfs, fetched with `apt-get download` and cached under
//! `target/guests/debian-cloud/`.
//!
//! `linux-image-cloud-amd64` is a metapackage; the kernel is the versioned
//! package it depends on (`linux-image-6.1.0-N-cloud-amd64`), found with
//! `apt-cache depends`. Packages are unpacked with `dpkg-deb -x` (both are
//! on every Debian/Ubuntu machine); the initramfs is written by
//! [`crate::initramfs`] around `busybox-static`'s `/bin/busybox`, so it is
//! byte-reproducible. A complete cache is reused: nothing is downloaded
//! twice. Package lists are updated (as root, or with `sudo -n`) only when
//! apt has none.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::initramfs;

/// The metapackage whose dependency is the kernel.
pub const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";
/// The static busybox.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";

/// The kernel's file name in the cache (the same for every release, so a
/// system file can name it).
pub const KERNEL_FILE: &str = "vmlinuz";
/// The initramfs's file name in the cache.
pub const INITRAMFS_FILE: &str = "initramfs.cpio";
/// An empty journaled ext4 file system of [`EXT4_BYTES`] in the cache, made
/// with the host's `mkfs.ext4`, for systems that give a Linux guest a
/// virtual disk imported from it (`[disks.NAME] from = ...`).
pub const EXT4_FILE: &str = "ext4.img";
/// Its size.
pub const EXT4_BYTES: u64 = 16 << 20;

/// A fetched guest: the kernel (bzImage), the initramfs and the kernel
/// release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guest {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub release: String,
}

/// The versioned kernel package `apt-cache depends` names for the
/// metapackage (`  Depends: linux-image-6.1.0-57-cloud-amd64`).
pub fn kernel_package(depends_output: &str) -> Option<&str> {
    depends_output.lines().find_map(|line| {
        let name = line.trim().strip_prefix("Depends:")?.trim();
        let name = name.trim_start_matches('<').trim_end_matches('>');
        (name.starts_with("linux-image-") && name != KERNEL_METAPACKAGE).then_some(name)
    })
}

/// The kernel release of a versioned kernel package
/// (`linux-image-6.1.0-57-cloud-amd64` → `6.1.0-57-cloud-amd64`).
pub fn release_of(package: &str) -> Option<&str> {
    package
        .strip_prefix("linux-image-")
        .filter(|release| !release.is_empty() && !release.contains('/'))
}

/// The cache directory for the Debian cloud guest.
pub fn cache_directory(target_directory: &Path) -> PathBuf {
    target_directory.join("guests").join("debian-cloud")
}

/// The guest in `cache`, fetching and building what is missing.
pub fn fetch(cache: &Path) -> Result<Guest> {
    std::fs::create_dir_all(cache)
        .with_context(|| format!("could not create {}", cache.display()))?;
    let depends = apt_cache_depends()?;
    let Some(package) = kernel_package(&depends) else {
        bail!(
            "`apt-cache depends {KERNEL_METAPACKAGE}` names no kernel package; its output was:\n{depends}"
        );
    };
    let release = release_of(package)
        .with_context(|| format!("cannot tell the kernel release of package '{package}'"))?
        .to_string();
    let kernel = cache.join(KERNEL_FILE);
    let initramfs = cache.join(INITRAMFS_FILE);
    let release_file = cache.join(RELEASE_FILE);
    let cached = std::fs::read_to_string(&release_file).ok();
    if !kernel.is_file() || cached.as_deref().map(str::trim) != Some(release.as_str()) {
        let unpacked = download_and_unpack(cache, package)?;
        let from = unpacked.join("boot").join(format!("vmlinuz-{release}"));
        let partial = kernel.with_extension("partial");
        std::fs::copy(&from, &partial)
            .with_context(|| format!("package {package} has no {}", from.display()))?;
        std::fs::rename(&partial, &kernel)
            .with_context(|| format!("could not write {}", kernel.display()))?;
        std::fs::write(&release_file, format!("{release}\n"))
            .with_context(|| format!("could not write {}", release_file.display()))?;
    }
    // The init script the cached archive holds: a changed script means a
    // new archive.
    let init_file = cache.join(INIT_FILE);
    if !initramfs.is_file() || !init_current(cache) {
        let unpacked = download_and_unpack(cache, BUSYBOX_PACKAGE)?;
        let path = unpacked.join("bin").join("busybox");
        let busybox = std::fs::read(&path)
            .with_context(|| format!("package {BUSYBOX_PACKAGE} has no {}", path.display()))?;
        let modules = kernel_modules(cache, package, &release)?;
        let archive = initramfs::busybox(&busybox, initramfs::BUSYBOX_INIT, &modules)?;
        let partial = initramfs.with_extension("cpio.partial");
        std::fs::write(&partial, archive)
            .with_context(|| format!("could not write {}", partial.display()))?;
        std::fs::rename(&partial, &initramfs)
            .with_context(|| format!("could not write {}", initramfs.display()))?;
        std::fs::write(&init_file, archive_key(&release))
            .with_context(|| format!("could not write {}", init_file.display()))?;
    }
    Ok(Guest {
        kernel,
        initramfs,
        release,
    })
}

/// The modules the initramfs carries ([`initramfs::MODULES`]), from the
/// kernel package unpacked in `cache` (unpacked again if it is not).
fn kernel_modules(cache: &Path, package: &str, release: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let tree = |root: PathBuf| {
        root.join("lib")
            .join("modules")
            .join(release)
            .join("kernel")
    };
    let mut root = tree(cache.join(package));
    if !root.join(initramfs::MODULES[0]).is_file() {
        root = tree(download_and_unpack(cache, package)?);
    }
    initramfs::MODULES
        .iter()
        .map(|path| {
            let file = root.join(path);
            let bytes = std::fs::read(&file)
                .with_context(|| format!("package {package} has no {}", file.display()))?;
            let name = path.rsplit('/').next().unwrap_or(path).to_string();
            Ok((name, bytes))
        })
        .collect()
}

/// The lock file fetches take turns on.
const LOCK_FILE: &str = "fetch.lock";

/// Where the cache keeps the init script its initramfs holds.
const INIT_FILE: &str = "initramfs-init";

/// Where the cache keeps the release of its kernel.
const RELEASE_FILE: &str = "release";

/// What the cached initramfs is built from: today's init script and
/// module list, and the kernel release its modules come from (a kernel
/// of another release refuses them).
fn archive_key(release: &str) -> String {
    format!(
        "{}\n# modules: {}\n# release: {release}\n",
        initramfs::BUSYBOX_INIT,
        initramfs::MODULES.join(" ")
    )
}

/// Whether the cached initramfs holds today's init script and modules,
/// those of the cached kernel's release.
fn init_current(cache: &Path) -> bool {
    let Ok(release) = std::fs::read_to_string(cache.join(RELEASE_FILE)) else {
        return false;
    };
    std::fs::read_to_string(cache.join(INIT_FILE)).ok() == Some(archive_key(release.trim()))
}

/// Fetches the Debian guest when a system names one of its files (under
/// the cache directory) and the file is missing, or names the initramfs
/// and the cached one holds another init script, so that `run` and `test`
/// of such a system need no separate step; says so first. Boots that start
/// at once (the test suite's threads, two `run` commands) take turns on a
/// lock file in the cache: one fetches, the others then find its files.
pub fn fetch_if_named(
    workspace: &crate::workspace::Workspace,
    kernels: &[(String, capdl::KernelGuest)],
    disks: &[capdl::MachineDisk],
) -> Result<()> {
    let cache = cache_directory(&workspace.target_directory);
    let names = |path: &Path| names_cache_file(&cache, &workspace.root.join(path));
    let ext4 = cache.join(EXT4_FILE);
    let ext4_named = disks
        .iter()
        .flat_map(|disk| &disk.files)
        .any(|file| match &file.kind {
            capdl::StoreFileKind::Disk {
                from: Some(from), ..
            } => names(from),
            _ => false,
        });
    if ext4_named && !ext4.is_file() {
        std::fs::create_dir_all(&cache)
            .with_context(|| format!("could not create {}", cache.display()))?;
        make_ext4(&ext4)?;
    }
    let named = kernels
        .iter()
        .any(|(_, kernel)| names(&kernel.kernel) || kernel.initrd.as_deref().is_some_and(names));
    if !named {
        return Ok(());
    }
    std::fs::create_dir_all(&cache)
        .with_context(|| format!("could not create {}", cache.display()))?;
    let lock_path = cache.join(LOCK_FILE);
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("could not create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("could not lock {}", lock_path.display()))?;
    let missing = |path: &Path| names(path) && !workspace.root.join(path).is_file();
    let needed = kernels.iter().any(|(_, kernel)| {
        missing(&kernel.kernel)
            || kernel
                .initrd
                .as_deref()
                .is_some_and(|initrd| missing(initrd) || (names(initrd) && !init_current(&cache)))
    });
    if needed {
        eprintln!(
            "guest: the system names the Debian cloud guest in {}; fetching it",
            cache.display()
        );
        fetch(&cache)?;
    }
    Ok(())
}

/// Makes [`EXT4_FILE`] at `path`: an empty ext4 file system with its
/// journal, its inode tables written out (so the guest's kernel has no
/// lazy initialisation to do), through a partial file renamed at the end.
fn make_ext4(path: &Path) -> Result<()> {
    let mkfs = crate::tools::require(crate::tools::MKFS_EXT4)?;
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    eprintln!("guest: making {} with {}", path.display(), mkfs.display());
    let status = Command::new(&mkfs)
        .args(["-q", "-F", "-t", "ext4", "-L", "guest-disk", "-E"])
        .arg("lazy_itable_init=0,lazy_journal_init=0")
        .arg(&partial)
        .arg(format!("{}k", EXT4_BYTES / 1024))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("could not run {}", mkfs.display()))?;
    if !status.success() {
        bail!("{} failed making {}", mkfs.display(), partial.display());
    }
    std::fs::rename(&partial, path).with_context(|| format!("could not write {}", path.display()))
}

/// Whether `path` is one of the files the fetcher writes into `cache`.
pub fn names_cache_file(cache: &Path, path: &Path) -> bool {
    let lexical = |path: &Path| -> PathBuf {
        let mut out = PathBuf::new();
        for part in path.components() {
            match part {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::CurDir => {}
                other => out.push(other),
            }
        }
        out
    };
    let (cache, path) = (lexical(cache), lexical(path));
    [KERNEL_FILE, INITRAMFS_FILE, EXT4_FILE]
        .iter()
        .any(|file| path == cache.join(file))
}

/// `apt-cache depends` of the metapackage, updating the package lists
/// first when apt has none.
fn apt_cache_depends() -> Result<String> {
    let query = || {
        Command::new("apt-cache")
            .args(["depends", KERNEL_METAPACKAGE])
            .stdin(Stdio::null())
            .output()
    };
    let output = query().context("could not run apt-cache: is this a Debian/Ubuntu machine?")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() && kernel_package(&text).is_some() {
        return Ok(text);
    }
    crate::setup::update_package_lists().with_context(|| {
        format!(
            "apt knows no package {KERNEL_METAPACKAGE}, and its package lists could not be updated"
        )
    })?;
    let output = query().context("could not run apt-cache")?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Downloads `package` into `cache` and unpacks it into
/// `cache/<package>/`; returns that directory.
fn download_and_unpack(cache: &Path, package: &str) -> Result<PathBuf> {
    eprintln!("guest: downloading {package} (apt-get download {package})");
    let status = Command::new("apt-get")
        .args(["download", "-q", package])
        .current_dir(cache)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .context("could not run apt-get")?;
    if !status.success() {
        bail!("`apt-get download {package}` failed (its output is above)");
    }
    let deb = std::fs::read_dir(cache)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| {
            path.extension().is_some_and(|e| e == "deb")
                && path
                    .file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with(&format!("{package}_")))
        })
        .with_context(|| {
            format!(
                "apt-get download {package} left no .deb in {}",
                cache.display()
            )
        })?;
    let directory = cache.join(package);
    let _ = std::fs::remove_dir_all(&directory);
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&directory)
        .stdin(Stdio::null())
        .status()
        .context("could not run dpkg-deb")?;
    if !status.success() {
        bail!("`dpkg-deb -x {}` failed", deb.display());
    }
    Ok(directory)
}

/// The kernel command line the Debian guest boots with: the serial
/// console, no reboot loop on panic, and no crypto self-tests (about
/// 0.9 G instructions of boot; see the module documentation).
pub const COMMAND_LINE: &str = "console=ttyS0 panic=-1 cryptomgr.notests";

/// The bare-QEMU command booting `guest`: QEMU's microvm with ACPI, one
/// LAPIC, one IOAPIC, the PIT (for TSC calibration), the CMOS RTC and
/// COM1 — the platform the hypervisor's world switcher offers — so the
/// two boots can be compared.
pub fn bare_command(qemu: &Path, guest: &Guest, icount: bool) -> Command {
    let mut command = Command::new(qemu);
    command
        .args([
            "-machine",
            "microvm,pit=on,pic=off,rtc=on,ioapic2=off,isa-serial=on",
        ])
        .args(["-accel", "tcg", "-cpu", "max", "-m", "256M"])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(&guest.kernel)
        .arg("-initrd")
        .arg(&guest.initramfs)
        .args(["-append", COMMAND_LINE]);
    if icount {
        command.args(["-icount", "shift=0,sleep=off"]);
    }
    command
}

/// `guest`: fetches the guest and says where it is; with `bare`, boots
/// it on bare QEMU with its console on this terminal.
pub fn command(bare: bool, icount: bool) -> Result<std::process::ExitCode> {
    let workspace = crate::workspace::Workspace::load()?;
    let guest = fetch(&cache_directory(&workspace.target_directory))?;
    println!("kernel    {} ({})", guest.kernel.display(), guest.release);
    println!("initramfs {}", guest.initramfs.display());
    if !bare {
        return Ok(std::process::ExitCode::SUCCESS);
    }
    crate::setup::emulators(&[crate::emulator::Emulator::Qemu])?;
    let qemu = crate::tools::require(crate::tools::QEMU)?;
    let status = bare_command(&qemu, &guest, icount)
        .stdin(Stdio::null())
        .status()
        .context("could not start QEMU")?;
    Ok(if status.success() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_package_is_the_metapackages_dependency() {
        let output = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-57-cloud-amd64\n";
        assert_eq!(
            kernel_package(output),
            Some("linux-image-6.1.0-57-cloud-amd64")
        );
        let virtual_dependency =
            "linux-image-cloud-amd64\n  Depends: <linux-image-6.1.0-9-cloud-amd64>\n";
        assert_eq!(
            kernel_package(virtual_dependency),
            Some("linux-image-6.1.0-9-cloud-amd64")
        );
        assert_eq!(kernel_package("linux-image-cloud-amd64\n"), None);
        assert_eq!(kernel_package("  Depends: libc6\n"), None);
        assert_eq!(
            release_of("linux-image-6.1.0-57-cloud-amd64"),
            Some("6.1.0-57-cloud-amd64")
        );
        assert_eq!(release_of("linux-image-"), None);
        assert_eq!(release_of("busybox"), None);
    }

    #[test]
    fn an_initramfs_of_another_kernel_release_is_stale() {
        let cache = tempfile::tempdir().unwrap();
        let write = |file: &str, text: &str| std::fs::write(cache.path().join(file), text).unwrap();
        write(RELEASE_FILE, "6.1.0-48-cloud-amd64\n");
        write(INIT_FILE, &archive_key("6.1.0-48-cloud-amd64"));
        assert!(init_current(cache.path()));
        // The archive moved on: the kernel was replaced, the modules not.
        write(RELEASE_FILE, "6.1.0-57-cloud-amd64\n");
        assert!(!init_current(cache.path()));
        std::fs::remove_file(cache.path().join(RELEASE_FILE)).unwrap();
        assert!(!init_current(cache.path()));
    }

    #[test]
    fn only_the_fetchers_own_files_trigger_a_fetch() {
        let cache = Path::new("/w/target/guests/debian-cloud");
        assert!(names_cache_file(
            cache,
            Path::new("/w/target/guests/debian-cloud/vmlinuz")
        ));
        assert!(names_cache_file(
            cache,
            Path::new("/w/examples/../target/guests/debian-cloud/./initramfs.cpio")
        ));
        assert!(!names_cache_file(
            cache,
            Path::new("/w/target/guests/debian-cloud/other")
        ));
        assert!(!names_cache_file(cache, Path::new("/home/me/vmlinuz")));
    }
}
