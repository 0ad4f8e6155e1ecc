//! Setting up a fresh Debian/Ubuntu machine on first use, so that the
//! README's commands need nothing but Rust installed.
//!
//! Two things can be missing. **Rust pieces** ([`rust`]): the standard
//! library of the bare-metal target [`TARGET`] (rustup does not add the
//! targets of `rust-toolchain.toml` to a toolchain that is already
//! installed) and, for `lint`, the `rustfmt` and `clippy` components; they
//! are added with `rustup`. **Emulator packages** ([`emulators`]): only
//! what the command's emulators need ([`crate::tools::needed_by`]),
//! installed with `apt-get` as root, else through `sudo -n` when sudo needs
//! no password, else the command stops with the one command to run.
//!
//! Each check costs a few file lookups (and one `rustc --print sysroot`)
//! when nothing is missing. Before it changes anything it says what it
//! does and the command line, on stderr (`setup: installing ... (apt-get
//! install ...)`). apt-get runs with `DEBIAN_FRONTEND=noninteractive` and
//! no stdin; `apt-get update` runs only when the package lists are empty or
//! the install failed without it. The decisions (what is missing, which
//! privilege path, which command lines, in which order) are pure functions
//! tested on the host; [`Actions`] is the thin part that runs commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::emulator::Emulator;
use crate::tools::{self, Tool, find_in_path};
use crate::workspace::TARGET;

/// Where apt keeps its package lists.
pub const APT_LISTS: &str = "/var/lib/apt/lists";
/// The components `lint` needs.
pub const LINT_COMPONENTS: [&str; 2] = ["rustfmt", "clippy"];

/// How this process can install packages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    /// It runs as root.
    Root,
    /// `sudo -n` works: sudo asks no password.
    Sudo,
    /// Neither: a person must run the install.
    Neither,
}

/// What [`plan_install`] needs to know about the machine (gathered only
/// when something is missing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Machine {
    pub privilege: Privilege,
    /// `apt-get` is on `PATH` (a Debian or Ubuntu machine).
    pub apt_get: bool,
    /// apt has no package lists yet (as in a fresh container image), so an
    /// install cannot find anything before `apt-get update`.
    pub package_lists_empty: bool,
}

/// One command the set-up runs, and what it does in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// E.g. "installing qemu-system-x86".
    pub what: String,
    pub argv: Vec<String>,
}

impl Step {
    /// The line said before the step runs.
    pub fn announcement(&self) -> String {
        format!("setup: {} ({})", self.what, self.argv.join(" "))
    }
}

/// How to install missing packages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Run `install`; run `update` before it when `update_first`, else only
    /// when `install` fails (then `install` once more).
    Install {
        update: Step,
        install: Step,
        update_first: bool,
    },
    /// Installing is not possible from here: the message says what is
    /// missing and the one command to run.
    Refuse(String),
}

/// The packages that provide the missing tools, each once, in the order of
/// `tools`.
pub fn packages_of(missing: &[Tool]) -> Vec<&'static str> {
    let mut packages = Vec::new();
    for tool in missing {
        if !packages.contains(&tool.package) {
            packages.push(tool.package);
        }
    }
    packages
}

/// The tools the emulators need that `present` says are not there, each
/// once.
pub fn missing_tools(emulators: &[Emulator], present: impl Fn(&Tool) -> bool) -> Vec<Tool> {
    let mut missing: Vec<Tool> = Vec::new();
    for emulator in emulators {
        for tool in tools::needed_by(*emulator) {
            if !present(tool) && !missing.contains(tool) {
                missing.push(*tool);
            }
        }
    }
    missing
}

/// Which privilege path to take.
pub fn privilege(is_root: bool, sudo_without_password: bool) -> Privilege {
    match (is_root, sudo_without_password) {
        (true, _) => Privilege::Root,
        (false, true) => Privilege::Sudo,
        (false, false) => Privilege::Neither,
    }
}

/// An apt-get command line for this privilege: as root apt-get itself
/// (the caller sets `DEBIAN_FRONTEND`), through sudo with the environment
/// set inside sudo, which resets it.
fn apt_get(privilege: Privilege, arguments: &[&str]) -> Vec<String> {
    let prefix: &[&str] = match privilege {
        Privilege::Sudo => &["sudo", "-n", "env", "DEBIAN_FRONTEND=noninteractive"],
        Privilege::Root | Privilege::Neither => &[],
    };
    prefix
        .iter()
        .chain(&["apt-get"])
        .chain(arguments)
        .map(|word| word.to_string())
        .collect()
}

/// Decides how to install the packages of the `missing` tools.
pub fn plan_install(missing: &[Tool], machine: &Machine) -> Plan {
    let packages = packages_of(missing);
    let names: Vec<&str> = missing.iter().map(Tool::name).collect();
    let names = names.join(", ");
    let list = packages.join(" ");
    if !machine.apt_get {
        return Plan::Refuse(format!(
            "{names} not found, and this is not a Debian/Ubuntu machine (no apt-get on PATH): \
             install what provides {} (Debian packages: {list}) and try again",
            if missing.len() == 1 { "it" } else { "them" }
        ));
    }
    if machine.privilege == Privilege::Neither {
        let update = if machine.package_lists_empty {
            "sudo apt-get update && "
        } else {
            ""
        };
        return Plan::Refuse(format!(
            "{names} not found, and installing {list} needs root: this user is not root and \
             sudo asks for a password (or is not installed). Run `{update}sudo apt-get install \
             -y {list}` and try again"
        ));
    }
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(&packages);
    Plan::Install {
        update: Step {
            what: "updating the package lists".into(),
            argv: apt_get(machine.privilege, &["update", "-q"]),
        },
        install: Step {
            what: format!("installing {}", packages.join(", ")),
            argv: apt_get(machine.privilege, &install),
        },
        update_first: machine.package_lists_empty,
    }
}

/// The side of the set-up that touches the machine.
pub trait Actions {
    /// Tells the user what happens next.
    fn say(&mut self, line: &str);
    /// Runs a command with no stdin; whether it succeeded.
    fn run(&mut self, argv: &[String]) -> Result<bool>;
}

/// Announces and runs one step; whether it succeeded.
fn run_step(step: &Step, actions: &mut dyn Actions) -> Result<bool> {
    actions.say(&step.announcement());
    actions.run(&step.argv)
}

/// Carries out a plan (see [`Plan::Install`] for the order).
pub fn carry_out(plan: &Plan, actions: &mut dyn Actions) -> Result<()> {
    let (update, install, update_first) = match plan {
        Plan::Refuse(message) => bail!("{message}"),
        Plan::Install {
            update,
            install,
            update_first,
        } => (update, install, *update_first),
    };
    let failed = |step: &Step| format!("`{}` failed (its output is above)", step.argv.join(" "));
    if update_first {
        actions.say("setup: apt has no package lists yet");
        if !run_step(update, actions)? {
            bail!("{}", failed(update));
        }
    }
    if run_step(install, actions)? {
        return Ok(());
    }
    if update_first {
        bail!("{}", failed(install));
    }
    actions.say("setup: the install failed; updating the package lists and trying once more");
    if !run_step(update, actions)? {
        bail!("{}", failed(update));
    }
    if !run_step(install, actions)? {
        bail!("{}", failed(install));
    }
    Ok(())
}

/// A Rust piece the toolchain lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RustPiece {
    /// The standard library of [`TARGET`].
    Target,
    /// A rustup component (`rustfmt`, `clippy`).
    Component(&'static str),
}

/// The file or directory that shows a piece is installed in `sysroot`.
pub fn evidence(sysroot: &Path, piece: RustPiece) -> PathBuf {
    match piece {
        RustPiece::Target => sysroot.join("lib/rustlib").join(TARGET),
        RustPiece::Component("clippy") => sysroot.join("bin/cargo-clippy"),
        RustPiece::Component(name) => sysroot.join("bin").join(name),
    }
}

/// The pieces missing from `sysroot`: the target always, the lint
/// components when `lint` is set.
pub fn missing_rust(sysroot: &Path, lint: bool, exists: impl Fn(&Path) -> bool) -> Vec<RustPiece> {
    let mut wanted = vec![RustPiece::Target];
    if lint {
        wanted.extend(LINT_COMPONENTS.map(RustPiece::Component));
    }
    wanted
        .into_iter()
        .filter(|piece| !exists(&evidence(sysroot, *piece)))
        .collect()
}

/// The rustup commands that add the missing pieces, or why they cannot be
/// added.
pub fn rust_steps(
    missing: &[RustPiece],
    rustup: bool,
    sysroot: &Path,
) -> Result<Vec<Step>, String> {
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    if !rustup {
        let pieces: Vec<String> = missing
            .iter()
            .map(|piece| match piece {
                RustPiece::Target => format!("the standard library for {TARGET}"),
                RustPiece::Component(name) => format!("the {name} component"),
            })
            .collect();
        let evidence: Vec<String> = missing
            .iter()
            .map(|piece| evidence(sysroot, *piece).display().to_string())
            .collect();
        return Err(format!(
            "this Rust toolchain lacks {} (no {}) and rustup is not on PATH to add it: install \
             Rust with rustup, or add these to the toolchain, and try again",
            pieces.join(" and "),
            evidence.join(", no ")
        ));
    }
    let mut steps = Vec::new();
    if missing.contains(&RustPiece::Target) {
        steps.push(Step {
            what: format!("adding the Rust target {TARGET}"),
            argv: ["rustup", "target", "add", TARGET]
                .map(String::from)
                .to_vec(),
        });
    }
    let components: Vec<&str> = missing
        .iter()
        .filter_map(|piece| match piece {
            RustPiece::Component(name) => Some(*name),
            RustPiece::Target => None,
        })
        .collect();
    if !components.is_empty() {
        let mut argv = vec!["rustup".to_string(), "component".into(), "add".into()];
        argv.extend(components.iter().map(|name| name.to_string()));
        steps.push(Step {
            what: format!("adding the Rust components {}", components.join(", ")),
            argv,
        });
    }
    Ok(steps)
}

/// The effective user id from the text of `/proc/self/status`.
pub fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether apt's list directory (its file names) holds no package list.
pub fn package_lists_empty<I: IntoIterator<Item = String>>(names: I) -> bool {
    !names.into_iter().any(|name| name.contains("_Packages"))
}

/// Runs commands for real: stdin closed, their output on stderr (stdout
/// carries the console and the test report), `DEBIAN_FRONTEND` set.
struct Host {
    directory: PathBuf,
}

impl Actions for Host {
    fn say(&mut self, line: &str) {
        eprintln!("{line}");
    }

    fn run(&mut self, argv: &[String]) -> Result<bool> {
        let (program, arguments) = argv.split_first().context("an empty command line")?;
        let status = Command::new(program)
            .args(arguments)
            .current_dir(&self.directory)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::io::stderr()))
            .status()
            .with_context(|| format!("could not start {}", argv.join(" ")))?;
        Ok(status.success())
    }
}

/// Whether a command runs and succeeds, quietly.
fn succeeds(program: &str, arguments: &[&str]) -> bool {
    Command::new(program)
        .args(arguments)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

impl Machine {
    /// Looks at this machine: who we are, sudo, apt-get and its lists.
    fn inspect() -> Self {
        let is_root = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| effective_uid(&status))
            == Some(0);
        let sudo = !is_root && find_in_path("sudo").is_some() && succeeds("sudo", &["-n", "true"]);
        let lists = std::fs::read_dir(APT_LISTS)
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok())
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        Self {
            privilege: privilege(is_root, sudo),
            apt_get: find_in_path("apt-get").is_some(),
            package_lists_empty: package_lists_empty(lists),
        }
    }
}

/// Installs what booting in `emulators` needs and is missing; an error
/// says what is still missing and how to install it.
pub fn emulators(emulators: &[Emulator]) -> Result<()> {
    let present = |tool: &Tool| tool.find().is_some();
    let missing = missing_tools(emulators, present);
    if missing.is_empty() {
        return Ok(());
    }
    let plan = plan_install(&missing, &Machine::inspect());
    carry_out(
        &plan,
        &mut Host {
            directory: "/".into(),
        },
    )?;
    let still: Vec<&str> = missing_tools(emulators, present)
        .iter()
        .map(Tool::name)
        .collect();
    if !still.is_empty() {
        bail!(
            "apt-get installed {} but {} {} still missing",
            packages_of(&missing).join(" "),
            still.join(", "),
            if still.len() == 1 { "is" } else { "are" }
        );
    }
    Ok(())
}

/// Updates apt's package lists (as root, or with `sudo -n`), saying so
/// first; an error says the one command to run when neither works.
pub fn update_package_lists() -> Result<()> {
    let machine = Machine::inspect();
    if !machine.apt_get {
        bail!("this is not a Debian/Ubuntu machine (no apt-get on PATH)");
    }
    if machine.privilege == Privilege::Neither {
        bail!(
            "updating apt's package lists needs root: this user is not root and sudo asks for a \
             password. Run `sudo apt-get update` and try again"
        );
    }
    let step = Step {
        what: "updating the package lists".into(),
        argv: apt_get(machine.privilege, &["update", "-q"]),
    };
    let mut host = Host {
        directory: "/".into(),
    };
    if !run_step(&step, &mut host)? {
        bail!("`{}` failed (its output is above)", step.argv.join(" "));
    }
    Ok(())
}

/// Whether everything booting in `emulator` needs is there.
pub fn is_ready(emulator: Emulator) -> bool {
    missing_tools(&[emulator], |tool| tool.find().is_some()).is_empty()
}

/// Adds the target's standard library (and with `lint` the rustfmt and
/// clippy components) to the toolchain the workspace at `root` uses.
pub fn rust(root: &Path, lint: bool) -> Result<()> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .context("could not run `rustc --print sysroot` (is Rust on PATH?)")?;
    if !output.status.success() {
        bail!(
            "`rustc --print sysroot` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let missing = missing_rust(&sysroot, lint, Path::exists);
    let steps = rust_steps(&missing, find_in_path("rustup").is_some(), &sysroot)
        .map_err(anyhow::Error::msg)?;
    let mut host = Host {
        directory: root.to_path_buf(),
    };
    for step in &steps {
        if !run_step(step, &mut host)? {
            bail!("`{}` failed (its output is above)", step.argv.join(" "));
        }
    }
    let still = missing_rust(&sysroot, lint, Path::exists);
    if !still.is_empty() {
        bail!(
            "rustup succeeded but {} is still missing",
            evidence(&sysroot, still[0]).display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::{BOCHS, BOCHS_BIOS, GRUB_PC, MFORMAT, MKFS_EXT4, QEMU, VGA_BIOS, XORRISO};

    const ROOT: Machine = Machine {
        privilege: Privilege::Root,
        apt_get: true,
        package_lists_empty: false,
    };

    #[test]
    fn only_what_the_emulators_need_is_missing() {
        let nothing = |_: &Tool| false;
        assert_eq!(missing_tools(&[Emulator::Qemu], nothing), [QEMU, MKFS_EXT4]);
        assert_eq!(missing_tools(&[], nothing), []);
        let all = |_: &Tool| true;
        assert_eq!(missing_tools(&[Emulator::Qemu, Emulator::Bochs], all), []);
        let some = |tool: &Tool| ![BOCHS_BIOS, XORRISO].contains(tool);
        let missing = missing_tools(&[Emulator::Bochs, Emulator::Qemu, Emulator::Bochs], some);
        assert_eq!(missing, [BOCHS_BIOS, XORRISO]);
        assert_eq!(packages_of(&missing), ["bochsbios", "xorriso"]);
        let fresh = missing_tools(&[Emulator::Bochs, Emulator::Qemu], nothing);
        assert_eq!(
            packages_of(&fresh).join(" "),
            "bochs bochsbios vgabios grub-common grub-pc-bin xorriso mtools qemu-system-x86 e2fsprogs"
        );
    }

    #[test]
    fn privilege_paths() {
        assert_eq!(privilege(true, false), Privilege::Root);
        assert_eq!(privilege(true, true), Privilege::Root);
        assert_eq!(privilege(false, true), Privilege::Sudo);
        assert_eq!(privilege(false, false), Privilege::Neither);
        assert_eq!(
            effective_uid("Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t5\n"),
            Some(0)
        );
        assert_eq!(effective_uid("Uid:\t1000\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(effective_uid("Gid:\t0\n"), None);
        let lists = |names: &[&str]| package_lists_empty(names.iter().map(|n| n.to_string()));
        assert!(lists(&["lock", "partial", "auxfiles"]));
        assert!(!lists(&[
            "lock",
            "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4"
        ]));
    }

    #[test]
    fn root_runs_apt_get_itself() {
        let Plan::Install {
            update,
            install,
            update_first,
        } = plan_install(&[QEMU], &ROOT)
        else {
            panic!("root installs")
        };
        assert!(!update_first);
        assert_eq!(
            install.announcement(),
            "setup: installing qemu-system-x86 (apt-get install -y -q --no-install-recommends \
             qemu-system-x86)"
        );
        assert_eq!(update.argv, ["apt-get", "update", "-q"]);
    }

    #[test]
    fn sudo_without_a_password_runs_apt_get_through_sudo() {
        let machine = Machine {
            privilege: Privilege::Sudo,
            package_lists_empty: true,
            ..ROOT
        };
        let Plan::Install {
            update,
            install,
            update_first,
        } = plan_install(&[BOCHS, VGA_BIOS], &machine)
        else {
            panic!("sudo installs")
        };
        assert!(update_first);
        assert_eq!(
            install.argv.join(" "),
            "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
             --no-install-recommends bochs vgabios"
        );
        assert_eq!(install.what, "installing bochs, vgabios");
        assert_eq!(
            update.argv.join(" "),
            "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update -q"
        );
    }

    #[test]
    fn without_root_or_sudo_the_command_to_run_is_printed() {
        let machine = Machine {
            privilege: Privilege::Neither,
            ..ROOT
        };
        assert_eq!(
            plan_install(&[QEMU], &machine),
            Plan::Refuse(
                "qemu-system-x86_64 not found, and installing qemu-system-x86 needs root: this \
                 user is not root and sudo asks for a password (or is not installed). Run `sudo \
                 apt-get install -y qemu-system-x86` and try again"
                    .into()
            )
        );
        let empty = Machine {
            package_lists_empty: true,
            ..machine
        };
        let Plan::Refuse(message) = plan_install(&[GRUB_PC, MFORMAT], &empty) else {
            panic!("no privilege")
        };
        assert!(
            message.starts_with("/usr/lib/grub/i386-pc, mformat not found"),
            "{message}"
        );
        assert!(
            message.contains(
                "Run `sudo apt-get update && sudo apt-get install -y grub-pc-bin mtools`"
            ),
            "{message}"
        );
        let elsewhere = Machine {
            apt_get: false,
            ..ROOT
        };
        assert_eq!(
            plan_install(&[QEMU], &elsewhere),
            Plan::Refuse(
                "qemu-system-x86_64 not found, and this is not a Debian/Ubuntu machine (no \
                 apt-get on PATH): install what provides it (Debian packages: qemu-system-x86) \
                 and try again"
                    .into()
            )
        );
    }

    /// Records what would happen; commands succeed as scripted.
    struct DryRun {
        log: Vec<String>,
        results: Vec<bool>,
    }

    impl Actions for DryRun {
        fn say(&mut self, line: &str) {
            self.log.push(line.to_string());
        }
        fn run(&mut self, argv: &[String]) -> Result<bool> {
            self.log.push(format!("$ {}", argv.join(" ")));
            Ok(self.results.remove(0))
        }
    }

    fn dry_run(machine: &Machine, results: &[bool]) -> (Result<()>, Vec<String>) {
        let mut actions = DryRun {
            log: Vec::new(),
            results: results.to_vec(),
        };
        let result = carry_out(&plan_install(&[QEMU], machine), &mut actions);
        assert!(actions.results.is_empty(), "every scripted command ran");
        (result, actions.log)
    }

    const INSTALL: &str = "apt-get install -y -q --no-install-recommends qemu-system-x86";

    #[test]
    fn update_runs_only_when_the_install_fails_without_it() {
        let (result, log) = dry_run(&ROOT, &[true]);
        result.unwrap();
        assert_eq!(
            log,
            [
                format!("setup: installing qemu-system-x86 ({INSTALL})"),
                format!("$ {INSTALL}")
            ]
        );
        let (result, log) = dry_run(&ROOT, &[false, true, true]);
        result.unwrap();
        let commands: Vec<&String> = log.iter().filter(|line| line.starts_with('$')).collect();
        assert_eq!(
            commands,
            [
                &format!("$ {INSTALL}"),
                &"$ apt-get update -q".to_string(),
                &format!("$ {INSTALL}")
            ]
        );
        assert!(
            log.contains(
                &"setup: the install failed; updating the package lists and trying once more"
                    .to_string()
            )
        );
        let (result, _) = dry_run(&ROOT, &[false, true, false]);
        assert_eq!(
            result.unwrap_err().to_string(),
            format!("`{INSTALL}` failed (its output is above)")
        );
        let (result, _) = dry_run(&ROOT, &[false, false]);
        assert_eq!(
            result.unwrap_err().to_string(),
            "`apt-get update -q` failed (its output is above)"
        );
    }

    #[test]
    fn empty_package_lists_are_updated_first() {
        let machine = Machine {
            package_lists_empty: true,
            ..ROOT
        };
        let (result, log) = dry_run(&machine, &[true, true]);
        result.unwrap();
        assert_eq!(
            log,
            [
                "setup: apt has no package lists yet".to_string(),
                "setup: updating the package lists (apt-get update -q)".into(),
                "$ apt-get update -q".into(),
                format!("setup: installing qemu-system-x86 ({INSTALL})"),
                format!("$ {INSTALL}"),
            ]
        );
        let (result, _) = dry_run(&machine, &[true, false]);
        assert!(result.is_err());
        let refused = Machine {
            privilege: Privilege::Neither,
            ..ROOT
        };
        let (result, log) = dry_run(&refused, &[]);
        assert!(
            result
                .unwrap_err()
                .to_string()
                .contains("Run `sudo apt-get install")
        );
        assert!(log.is_empty(), "nothing runs: {log:?}");
    }

    #[test]
    fn rust_pieces_are_found_in_the_sysroot() {
        let sysroot = Path::new("/r");
        assert_eq!(
            evidence(sysroot, RustPiece::Target),
            Path::new("/r/lib/rustlib/x86_64-unknown-none")
        );
        assert_eq!(
            evidence(sysroot, RustPiece::Component("clippy")),
            Path::new("/r/bin/cargo-clippy")
        );
        assert_eq!(
            evidence(sysroot, RustPiece::Component("rustfmt")),
            Path::new("/r/bin/rustfmt")
        );
        assert_eq!(missing_rust(sysroot, true, |_| true), []);
        assert_eq!(missing_rust(sysroot, false, |_| false), [RustPiece::Target]);
        let has_target = |path: &Path| path.ends_with(TARGET);
        assert_eq!(
            missing_rust(sysroot, true, has_target),
            [
                RustPiece::Component("rustfmt"),
                RustPiece::Component("clippy")
            ]
        );
        assert!(evidence(Path::new("/"), RustPiece::Target) != Path::new("/"));
    }

    #[test]
    fn rustup_adds_what_is_missing() {
        let sysroot = Path::new("/r");
        assert_eq!(rust_steps(&[], false, sysroot), Ok(Vec::new()));
        let all = missing_rust(sysroot, true, |_| false);
        let steps = rust_steps(&all, true, sysroot).unwrap();
        let lines: Vec<String> = steps.iter().map(Step::announcement).collect();
        assert_eq!(
            lines,
            [
                "setup: adding the Rust target x86_64-unknown-none (rustup target add \
                 x86_64-unknown-none)",
                "setup: adding the Rust components rustfmt, clippy (rustup component add rustfmt \
                 clippy)"
            ]
        );
        assert_eq!(
            rust_steps(&[RustPiece::Target], false, sysroot).unwrap_err(),
            "this Rust toolchain lacks the standard library for x86_64-unknown-none (no \
             /r/lib/rustlib/x86_64-unknown-none) and rustup is not on PATH to add it: install \
             Rust with rustup, or add these to the toolchain, and try again"
        );
    }
}
