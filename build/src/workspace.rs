//! The workspace on disk: where sources and build outputs live, which
//! packages exist, and the cargo invocations that build the core and the
//! component programs for the bare-metal target.
//!
//! Everything that needs a path asks a [`Workspace`] (loaded once per command
//! from `cargo metadata`, so `CARGO_TARGET_DIR` and `build.target-dir` are
//! respected). Conventions it relies on, checked here with a clear error:
//! a *component program* is a directory `components/<name>/` holding
//! `src/main.rs`, and it is the workspace member named `<name>` whose binary
//! is also `<name>`. The core is the member `microvisor` with the binary
//! `microvisor`. All target builds go through [`Workspace::build_target`] in
//! one cargo invocation, so there is one lock and one dependency graph.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The bare-metal target the core and components are built for.
pub const TARGET: &str = "x86_64-unknown-none";
/// The core's package and binary name.
pub const CORE: &str = "microvisor";
/// The component runtime library: its library tests run on the host with
/// the core's (`--lib`); it is not one of the plain host packages.
pub const RUNTIME: &str = "runtime";

/// One workspace member, as `cargo metadata` describes it.
#[derive(Clone, Debug)]
pub struct Package {
    pub name: String,
    /// The directory holding the package's `Cargo.toml`.
    pub directory: PathBuf,
    /// The names of its binary targets.
    pub binaries: Vec<String>,
}

/// The workspace root, its build output directory and its members.
#[derive(Clone, Debug)]
pub struct Workspace {
    pub root: PathBuf,
    pub target_directory: PathBuf,
    pub packages: Vec<Package>,
}

/// Paths of the freshly built core and component programs.
#[derive(Clone, Debug)]
pub struct Artifacts {
    pub core: PathBuf,
    pub programs: BTreeMap<String, PathBuf>,
    /// Guest images (test VMs) by image name (`hello` for `test-vms/hello`).
    pub guests: BTreeMap<String, PathBuf>,
}

#[derive(Deserialize)]
struct Metadata {
    workspace_root: PathBuf,
    target_directory: PathBuf,
    packages: Vec<MetadataPackage>,
}

#[derive(Deserialize)]
struct MetadataPackage {
    name: String,
    manifest_path: PathBuf,
    targets: Vec<MetadataTarget>,
}

#[derive(Deserialize)]
struct MetadataTarget {
    name: String,
    kind: Vec<String>,
}

/// A `cargo` command: the cargo that started this tool if any (so the same
/// toolchain is used), else `cargo` from `PATH`.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

impl Workspace {
    /// Loads the workspace this tool belongs to.
    pub fn load() -> Result<Self> {
        // The build package sits directly under the workspace root.
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root_hint = manifest.parent().unwrap_or(manifest);
        let output = cargo()
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .current_dir(root_hint)
            .output()
            .context("could not run `cargo metadata` (is cargo on PATH?)")?;
        if !output.status.success() {
            bail!(
                "`cargo metadata` failed in {}: {}",
                root_hint.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Self::from_metadata(&output.stdout)
    }

    fn from_metadata(json: &[u8]) -> Result<Self> {
        let metadata: Metadata =
            serde_json::from_slice(json).context("`cargo metadata` printed unexpected JSON")?;
        let packages = metadata
            .packages
            .into_iter()
            .map(|package| Package {
                directory: package
                    .manifest_path
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
                binaries: package
                    .targets
                    .iter()
                    .filter(|target| target.kind.iter().any(|kind| kind == "bin"))
                    .map(|target| target.name.clone())
                    .collect(),
                name: package.name,
            })
            .collect();
        Ok(Self {
            root: metadata.workspace_root,
            target_directory: metadata.target_directory,
            packages,
        })
    }

    /// Where packed images, ISOs and emulator work directories go.
    pub fn images_directory(&self) -> PathBuf {
        self.target_directory.join("images")
    }

    /// The directory holding the component crates.
    pub fn components_directory(&self) -> PathBuf {
        self.root.join("components")
    }

    /// The names of all component programs, sorted: every
    /// `components/<name>/src/main.rs` that is also a workspace member
    /// `<name>` with a binary `<name>`.
    pub fn programs(&self) -> Result<Vec<String>> {
        let directory = self.components_directory();
        let entries = std::fs::read_dir(&directory)
            .with_context(|| format!("could not list {}", directory.display()))?;
        let mut programs = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("could not list {}", directory.display()))?;
            if !entry.path().join("src/main.rs").is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let member = self.packages.iter().find(|package| package.name == name);
            match member {
                Some(package) if package.binaries.contains(&name) => programs.push(name),
                Some(_) => bail!(
                    "components/{name} is a workspace member but has no binary named '{name}'; \
                     a component program's binary must carry its directory's name"
                ),
                None => bail!(
                    "components/{name}/src/main.rs exists but no workspace member is named \
                     '{name}'; add \"components/{name}\" to the members in Cargo.toml"
                ),
            }
        }
        programs.sort();
        Ok(programs)
    }

    /// Where cargo puts a release binary for the bare-metal target.
    pub fn target_binary(&self, name: &str) -> PathBuf {
        self.target_directory
            .join(TARGET)
            .join("release")
            .join(name)
    }

    /// Builds the core and the given component programs in one release
    /// cargo invocation for [`TARGET`]; cargo's progress and errors go to
    /// this process's stderr.
    pub fn build_target(&self, programs: &[String]) -> Result<Artifacts> {
        let mut command = cargo();
        command
            .args(["build", "--release", "--target", TARGET, "-p", CORE])
            .current_dir(&self.root);
        for program in programs {
            command.args(["-p", program]);
        }
        let status = command
            .status()
            .context("could not start cargo to build the core and components")?;
        if !status.success() {
            bail!("building the core and components for {TARGET} failed (cargo output above)");
        }
        let artifacts = Artifacts {
            core: self.target_binary(CORE),
            programs: programs
                .iter()
                .map(|program| (program.clone(), self.target_binary(program)))
                .collect(),
            guests: BTreeMap::new(),
        };
        for path in std::iter::once(&artifacts.core).chain(artifacts.programs.values()) {
            if !path.is_file() {
                bail!("cargo succeeded but {} does not exist", path.display());
            }
        }
        Ok(artifacts)
    }

    /// The packages `cargo test` runs on the host: every member except the
    /// component programs and the runtime (they only build for the target).
    /// The core is listed separately because only its library is host code.
    pub fn host_packages(&self) -> Vec<&Package> {
        let components = self.components_directory();
        self.packages
            .iter()
            .filter(|package| package.name != RUNTIME && package.name != CORE)
            .filter(|package| {
                let is_program =
                    package.directory.starts_with(&components) && !package.binaries.is_empty();
                !is_program
            })
            .collect()
    }

    /// The component programs that are workspace members (for lints).
    pub fn program_packages(&self) -> Vec<&Package> {
        let components = self.components_directory();
        self.packages
            .iter()
            .filter(|package| {
                package.directory.starts_with(&components) && !package.binaries.is_empty()
            })
            .collect()
    }

    /// Whether the workspace has a member of this name.
    pub fn has_package(&self, name: &str) -> bool {
        self.packages.iter().any(|package| package.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Workspace {
        let json = r#"{
            "workspace_root": "/w",
            "target_directory": "/w/target",
            "packages": [
                {"name": "microvisor", "manifest_path": "/w/microvisor/Cargo.toml",
                 "targets": [{"name": "microvisor", "kind": ["lib"]},
                             {"name": "microvisor", "kind": ["bin"]}]},
                {"name": "microvisor-abi", "manifest_path": "/w/microvisor/abi/Cargo.toml",
                 "targets": [{"name": "microvisor_abi", "kind": ["lib"]}]},
                {"name": "runtime", "manifest_path": "/w/components/runtime/Cargo.toml",
                 "targets": [{"name": "runtime", "kind": ["lib"]}]},
                {"name": "hello", "manifest_path": "/w/components/hello/Cargo.toml",
                 "targets": [{"name": "hello", "kind": ["bin"]}]},
                {"name": "vmkfs", "manifest_path": "/w/components/vmkfs/Cargo.toml",
                 "targets": [{"name": "vmkfs", "kind": ["lib"]}]},
                {"name": "build", "manifest_path": "/w/build/Cargo.toml",
                 "targets": [{"name": "mvbuild", "kind": ["bin"]}]}
            ],
            "extra": "ignored"
        }"#;
        Workspace::from_metadata(json.as_bytes()).unwrap()
    }

    #[test]
    fn host_packages_leave_out_programs_runtime_and_core() {
        let workspace = sample();
        let names: Vec<_> = workspace
            .host_packages()
            .iter()
            .map(|package| package.name.as_str())
            .collect();
        assert_eq!(names, ["microvisor-abi", "vmkfs", "build"]);
        let programs: Vec<_> = workspace
            .program_packages()
            .iter()
            .map(|package| package.name.as_str())
            .collect();
        assert_eq!(programs, ["hello"]);
    }

    #[test]
    fn target_paths() {
        let workspace = sample();
        assert_eq!(
            workspace.target_binary("hello"),
            Path::new("/w/target/x86_64-unknown-none/release/hello")
        );
        assert_eq!(workspace.images_directory(), Path::new("/w/target/images"));
        assert!(workspace.has_package("vmkfs"));
        assert!(!workspace.has_package("vmkf"));
    }
}
