//! The `lint` command: formatting and clippy with warnings as errors, on the
//! host crates and on the bare-metal target crates. `.ci/run` calls it.
//!
//! Checks, all run even when one fails: `cargo fmt --all --check`; clippy
//! `--all-targets` on the host crates (the same set the host tests use) and
//! `--lib --tests` on the core; clippy for `x86_64-unknown-none` on the core,
//! the runtime, every component program, and everything under `test-vms/`
//! (the guest runtime and the test VMs); and that the core's modules
//! import each other in no circle ([`crate::layers`]). Exits 1 if any
//! check failed.
//! Adds rustfmt, clippy and the target through rustup first if the
//! toolchain lacks them ([`crate::setup::rust`]).

use std::process::{ExitCode, Stdio};

use anyhow::{Context, Result};

use crate::workspace::{CORE, RUNTIME, TARGET, Workspace, cargo};

/// The cargo argument lists, one per check, in the order they run.
pub fn checks(workspace: &Workspace) -> Vec<Vec<String>> {
    let owned = |arguments: &[&str]| arguments.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let select = |names: Vec<String>| {
        names
            .into_iter()
            .flat_map(|name| ["-p".to_string(), name])
            .collect::<Vec<_>>()
    };
    let deny = owned(&["--", "-D", "warnings"]);
    let mut checks = vec![owned(&["fmt", "--all", "--check"])];
    let host: Vec<String> = workspace
        .host_packages()
        .iter()
        .map(|package| package.name.clone())
        .collect();
    if !host.is_empty() {
        let mut check = owned(&["clippy", "--all-targets"]);
        check.extend(select(host));
        check.extend(deny.clone());
        checks.push(check);
    }
    if workspace.has_package(CORE) {
        let mut check = owned(&["clippy", "-p", CORE, "-p", RUNTIME, "--lib", "--tests"]);
        check.extend(deny.clone());
        checks.push(check);
    }
    let mut target: Vec<String> = [CORE, RUNTIME]
        .into_iter()
        .filter(|name| workspace.has_package(name))
        .map(str::to_string)
        .collect();
    target.extend(
        workspace
            .program_packages()
            .iter()
            .chain(workspace.test_vm_packages().iter())
            .map(|package| package.name.clone()),
    );
    if !target.is_empty() {
        let mut check = owned(&["clippy", "--target", TARGET]);
        check.extend(select(target));
        check.extend(deny);
        checks.push(check);
    }
    checks
}

/// Runs `lint`.
pub fn command() -> Result<ExitCode> {
    let workspace = Workspace::load()?;
    crate::setup::rust(&workspace.root, true)?;
    let mut failed = Vec::new();
    for check in checks(&workspace) {
        let line = format!("cargo {}", check.join(" "));
        eprintln!("mvbuild: {line}");
        let status = cargo()
            .args(&check)
            .current_dir(&workspace.root)
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("could not start {line}"))?;
        if !status.success() {
            failed.push(line);
        }
    }
    eprintln!("mvbuild: the core's modules import each other in no circle");
    if let Err(error) = crate::layers::check_core(&workspace.root.join("microvisor/src")) {
        eprintln!("mvbuild: {error:#}");
        failed.push("the core's layering".to_string());
    }
    if failed.is_empty() {
        eprintln!("mvbuild: lint passed");
        Ok(ExitCode::SUCCESS)
    } else {
        for line in &failed {
            eprintln!("mvbuild: lint failed: {line}");
        }
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::workspace::Package;

    #[test]
    fn checks_cover_host_and_target() {
        let package = |name: &str, directory: &str, binaries: &[&str]| Package {
            name: name.into(),
            directory: PathBuf::from(directory),
            binaries: binaries.iter().map(|b| b.to_string()).collect(),
            role: None,
            links_runtime: false,
        };
        let workspace = Workspace {
            root: PathBuf::from("/w"),
            target_directory: PathBuf::from("/w/target"),
            packages: vec![
                package("microvisor", "/w/microvisor", &["microvisor"]),
                package("microvisor-abi", "/w/microvisor/abi", &[]),
                package("runtime", "/w/components/lib/runtime", &[]),
                package("hello", "/w/components/test/hello", &["hello"]),
                package("build", "/w/build", &["mvbuild"]),
                package("guest-runtime", "/w/test-vms/guest-runtime", &[]),
                package("vm-hello", "/w/test-vms/hello", &["vm-hello"]),
            ],
        };
        let lines: Vec<String> = checks(&workspace)
            .iter()
            .map(|check| check.join(" "))
            .collect();
        assert_eq!(
            lines,
            [
                "fmt --all --check",
                "clippy --all-targets -p microvisor-abi -p build -- -D warnings",
                "clippy -p microvisor -p runtime --lib --tests -- -D warnings",
                "clippy --target x86_64-unknown-none -p microvisor -p runtime -p hello -p guest-runtime -p vm-hello -- -D warnings",
            ]
        );
    }
}
