//! The workspace on disk: where sources and build outputs live, which
//! packages exist, and the cargo invocations that build the core and the
//! component programs for the bare-metal target.
//!
//! Everything that needs a path asks a [`Workspace`] (loaded once per command
//! from `cargo metadata`, so `CARGO_TARGET_DIR` and `build.target-dir` are
//! respected). Conventions it relies on, checked here with a clear error:
//! `components/` has three groups ([`PROGRAM_GROUPS`] and `lib/`): a
//! *component program* is a directory `components/system/<name>/` (the
//! system's components) or `components/test/<name>/` (test and demo
//! programs) holding `src/main.rs`, and it is the workspace member named
//! `<name>` whose binary is also `<name>`; `components/lib/` holds only
//! libraries. The core is the member `microvisor` with the binary
//! `microvisor`. A *test VM* (guest image) is a directory `test-vms/<name>/`
//! holding `src/main.rs`, and it is the member `vm-<name>` with the binary
//! `vm-<name>`; `test-vms/guest-runtime/` is their runtime library. All target
//! builds go through [`Workspace::build_target`] in one cargo invocation, so
//! there is one lock and one dependency graph; it always builds every test
//! VM.

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
/// The folders under `components/` that hold component programs: the
/// system's components and the test and demo programs (`components/lib/`
/// holds the libraries they link). capdl's list, so the two agree.
pub use capdl::PROGRAM_GROUPS;
/// The directory of the test VMs, relative to the workspace root.
pub const TEST_VMS: &str = "test-vms";
/// A test VM's package and binary name is this prefix and its image name.
pub const GUEST_PACKAGE_PREFIX: &str = "vm-";

/// One workspace member, as `cargo metadata` describes it.
#[derive(Clone, Debug)]
pub struct Package {
    pub name: String,
    /// The directory holding the package's `Cargo.toml`.
    pub directory: PathBuf,
    /// The names of its binary targets.
    pub binaries: Vec<String>,
    /// What the program is for, from `[package.metadata.microvisor] role`
    /// (one of [`capdl::ROLES`]; `world-switcher` for the program a VM's
    /// switcher runs).
    pub role: Option<String>,
    /// It depends on the runtime, so it builds for the target only (a
    /// library that drivers share, such as `virtio-driver`).
    pub links_runtime: bool,
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
    /// ELF32 copies (`vm-<name>.elf32`) of the test VMs that carry a
    /// multiboot header, for multiboot loaders (see [`crate::elf32`]).
    pub multiboot: BTreeMap<String, PathBuf>,
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
    /// `[package.metadata]`, `null` when there is none.
    #[serde(default)]
    metadata: serde_json::Value,
    #[serde(default)]
    dependencies: Vec<MetadataDependency>,
}

#[derive(Deserialize)]
struct MetadataDependency {
    name: String,
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
            .map(|package| {
                Ok(Package {
                    role: role(&package)?,
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
                    links_runtime: package
                        .dependencies
                        .iter()
                        .any(|dependency| dependency.name == RUNTIME),
                    name: package.name,
                })
            })
            .collect::<Result<_>>()?;
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

    /// The component programs and which of them are world switchers, as
    /// capdl checks systems against them: every
    /// `components/<group>/<name>/src/main.rs` (for each of
    /// [`PROGRAM_GROUPS`]) that is also a workspace member `<name>` with a
    /// binary `<name>`. Two programs of one name in different groups are
    /// refused: the boot image names programs without their group.
    pub fn programs(&self) -> Result<capdl::ProgramSet> {
        let mut programs: Vec<String> = Vec::new();
        let mut switchers: Vec<String> = Vec::new();
        for group in PROGRAM_GROUPS {
            let directory = self.components_directory().join(group);
            if !directory.is_dir() {
                continue;
            }
            let entries = std::fs::read_dir(&directory)
                .with_context(|| format!("could not list {}", directory.display()))?;
            for entry in entries {
                let entry =
                    entry.with_context(|| format!("could not list {}", directory.display()))?;
                if !entry.path().join("src/main.rs").is_file() {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = format!("components/{group}/{name}");
                if programs.contains(&name) {
                    bail!(
                        "{path} has the name of a program in another group of components/; \
                         program names must be unique"
                    );
                }
                let member = self.packages.iter().find(|package| package.name == name);
                match member {
                    Some(package) if package.binaries.contains(&name) => {
                        if package.role.as_deref() == Some(capdl::WORLD_SWITCHER) {
                            switchers.push(name.clone());
                        }
                        programs.push(name);
                    }
                    Some(_) => bail!(
                        "{path} is a workspace member but has no binary named '{name}'; \
                         a component program's binary must carry its directory's name"
                    ),
                    None => bail!(
                        "{path}/src/main.rs exists but no workspace member is named \
                         '{name}'; add \"{path}\" to the members in Cargo.toml"
                    ),
                }
            }
        }
        Ok(capdl::ProgramSet::new("components/", programs).with_world_switchers(switchers))
    }

    /// The directory holding the test VMs and their runtime.
    pub fn test_vms_directory(&self) -> PathBuf {
        self.root.join(TEST_VMS)
    }

    /// The image names of all test VMs, sorted: every
    /// `test-vms/<name>/src/main.rs` that is also a workspace member
    /// `vm-<name>` with a binary `vm-<name>`. None without `test-vms/`.
    pub fn guests(&self) -> Result<Vec<String>> {
        let directory = self.test_vms_directory();
        if !directory.is_dir() {
            return Ok(Vec::new());
        }
        let entries = std::fs::read_dir(&directory)
            .with_context(|| format!("could not list {}", directory.display()))?;
        let mut guests = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("could not list {}", directory.display()))?;
            if !entry.path().join("src/main.rs").is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let package_name = guest_package(&name);
            let member = self
                .packages
                .iter()
                .find(|package| package.name == package_name);
            match member {
                Some(package) if package.binaries.contains(&package_name) => guests.push(name),
                Some(_) => bail!(
                    "{TEST_VMS}/{name} is the workspace member '{package_name}' but has no binary \
                     named '{package_name}'; a test VM's binary must carry its package's name"
                ),
                None => bail!(
                    "{TEST_VMS}/{name}/src/main.rs exists but no workspace member is named \
                     '{package_name}'; name the package '{package_name}' and add \
                     \"{TEST_VMS}/{name}\" to the members in Cargo.toml"
                ),
            }
        }
        guests.sort();
        Ok(guests)
    }

    /// Where cargo puts a release binary for the bare-metal target.
    pub fn target_binary(&self, name: &str) -> PathBuf {
        self.target_directory
            .join(TARGET)
            .join("release")
            .join(name)
    }

    /// Builds the core, the given component programs and every test VM
    /// ([`Workspace::guests`]) in one release cargo invocation for
    /// [`TARGET`], adding the target to the toolchain first if it lacks it
    /// ([`crate::setup::rust`]); cargo's progress and errors go to this
    /// process's stderr.
    pub fn build_target(&self, programs: &[String]) -> Result<Artifacts> {
        crate::setup::rust(&self.root, false)?;
        let guests = self.guests()?;
        let mut command = cargo();
        command
            .args(["build", "--release", "--target", TARGET, "-p", CORE])
            .current_dir(&self.root);
        for program in programs {
            command.args(["-p", program]);
        }
        for guest in &guests {
            command.args(["-p", &guest_package(guest)]);
        }
        let status = command
            .status()
            .context("could not start cargo to build the core, components and test VMs")?;
        if !status.success() {
            bail!(
                "building the core, components and test VMs for {TARGET} failed (cargo output \
                 above)"
            );
        }
        let artifacts = Artifacts {
            core: self.target_binary(CORE),
            programs: programs
                .iter()
                .map(|program| (program.clone(), self.target_binary(program)))
                .collect(),
            guests: guests
                .iter()
                .map(|guest| (guest.clone(), self.target_binary(&guest_package(guest))))
                .collect(),
            multiboot: BTreeMap::new(),
        };
        for path in std::iter::once(&artifacts.core)
            .chain(artifacts.programs.values())
            .chain(artifacts.guests.values())
        {
            if !path.is_file() {
                bail!("cargo succeeded but {} does not exist", path.display());
            }
        }
        let multiboot = crate::elf32::write_copies(&artifacts.guests)?;
        Ok(Artifacts {
            multiboot,
            ..artifacts
        })
    }

    /// The packages `cargo test` runs on the host: every member except the
    /// component programs, the runtime and everything under `test-vms/`
    /// (they only build for the target). The core is listed separately
    /// because only its library is host code.
    pub fn host_packages(&self) -> Vec<&Package> {
        let components = self.components_directory();
        let test_vms = self.test_vms_directory();
        self.packages
            .iter()
            .filter(|package| package.name != RUNTIME && package.name != CORE)
            .filter(|package| !package.links_runtime)
            .filter(|package| {
                let is_program =
                    package.directory.starts_with(&components) && !package.binaries.is_empty();
                !is_program && !package.directory.starts_with(&test_vms)
            })
            .collect()
    }

    /// The members under `test-vms/`: the guest runtime and the test VMs
    /// (for lints; they build only for the target).
    pub fn test_vm_packages(&self) -> Vec<&Package> {
        let test_vms = self.test_vms_directory();
        self.packages
            .iter()
            .filter(|package| package.directory.starts_with(&test_vms))
            .collect()
    }

    /// The component programs that are workspace members, and the
    /// libraries under `components/` that link the runtime (for lints).
    pub fn program_packages(&self) -> Vec<&Package> {
        let components = self.components_directory();
        self.packages
            .iter()
            .filter(|package| package.name != RUNTIME)
            .filter(|package| {
                package.directory.starts_with(&components)
                    && (!package.binaries.is_empty() || package.links_runtime)
            })
            .collect()
    }

    /// Whether the workspace has a member of this name.
    pub fn has_package(&self, name: &str) -> bool {
        self.packages.iter().any(|package| package.name == name)
    }
}

/// A package's `[package.metadata.microvisor] role`, checked.
fn role(package: &MetadataPackage) -> Result<Option<String>> {
    let Some(role) = package
        .metadata
        .get("microvisor")
        .and_then(|table| table.get("role"))
    else {
        return Ok(None);
    };
    let place = format!(
        "{}: [package.metadata.microvisor] role",
        package.manifest_path.display()
    );
    let Some(role) = role.as_str() else {
        bail!("{place} must be a string, not {role}");
    };
    capdl::check_role(role).map_err(|message| anyhow::anyhow!("{place}: {message}"))?;
    Ok(Some(role.to_string()))
}

/// The package (and binary) name of test VM `guest`: `vm-<guest>`.
pub fn guest_package(guest: &str) -> String {
    format!("{GUEST_PACKAGE_PREFIX}{guest}")
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
                {"name": "runtime", "manifest_path": "/w/components/lib/runtime/Cargo.toml",
                 "targets": [{"name": "runtime", "kind": ["lib"]}]},
                {"name": "hello", "manifest_path": "/w/components/test/hello/Cargo.toml",
                 "targets": [{"name": "hello", "kind": ["bin"]}], "metadata": null},
                {"name": "world-switcher",
                 "manifest_path": "/w/components/system/world-switcher/Cargo.toml",
                 "targets": [{"name": "world-switcher", "kind": ["bin"]}],
                 "metadata": {"microvisor": {"role": "world-switcher"}}},
                {"name": "vmkfs", "manifest_path": "/w/components/lib/vmkfs/Cargo.toml",
                 "targets": [{"name": "vmkfs", "kind": ["lib"]}]},
                {"name": "virtio-driver", "manifest_path": "/w/components/lib/virtio-driver/Cargo.toml",
                 "targets": [{"name": "virtio_driver", "kind": ["lib"]}],
                 "dependencies": [{"name": "runtime"}, {"name": "virtio"}]},
                {"name": "build", "manifest_path": "/w/build/Cargo.toml",
                 "targets": [{"name": "mvbuild", "kind": ["bin"]}]},
                {"name": "guest-runtime", "manifest_path": "/w/test-vms/guest-runtime/Cargo.toml",
                 "targets": [{"name": "guest_runtime", "kind": ["lib"]}]},
                {"name": "vm-hello", "manifest_path": "/w/test-vms/hello/Cargo.toml",
                 "targets": [{"name": "vm-hello", "kind": ["bin"]},
                             {"name": "build-script-build", "kind": ["custom-build"]}]}
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
        // A library that links the runtime builds for the target only.
        assert_eq!(programs, ["hello", "world-switcher", "virtio-driver"]);
        let test_vms: Vec<_> = workspace
            .test_vm_packages()
            .iter()
            .map(|package| package.name.as_str())
            .collect();
        assert_eq!(test_vms, ["guest-runtime", "vm-hello"]);
    }

    /// A workspace on disk with test VM directories, for [`Workspace::guests`].
    fn guests_in(directories: &[&str], members: &[(&str, &str)]) -> Result<Vec<String>> {
        let root = std::env::temp_dir().join(format!(
            "mvbuild-guests-{}-{}",
            std::process::id(),
            directories.join("+")
        ));
        let _ = std::fs::remove_dir_all(&root);
        for directory in directories {
            let source = root.join(TEST_VMS).join(directory).join("src");
            std::fs::create_dir_all(&source).unwrap();
            let file = if *directory == "guest-runtime" {
                "lib.rs"
            } else {
                "main.rs"
            };
            std::fs::write(source.join(file), "").unwrap();
        }
        let workspace = Workspace {
            root: root.clone(),
            target_directory: root.join("target"),
            packages: members
                .iter()
                .map(|(name, binary)| Package {
                    name: name.to_string(),
                    directory: root.join(TEST_VMS).join(name.trim_start_matches("vm-")),
                    binaries: if binary.is_empty() {
                        Vec::new()
                    } else {
                        vec![binary.to_string()]
                    },
                    role: None,
                    links_runtime: false,
                })
                .collect(),
        };
        let result = workspace.guests();
        let _ = std::fs::remove_dir_all(&root);
        result
    }

    #[test]
    fn guests_follow_the_naming_convention() {
        let found = guests_in(
            &["guest-runtime", "spin", "cpuid"],
            &[
                ("guest-runtime", ""),
                ("vm-spin", "vm-spin"),
                ("vm-cpuid", "vm-cpuid"),
            ],
        )
        .unwrap();
        assert_eq!(found, ["cpuid", "spin"]);
        let error = guests_in(&["idle"], &[]).unwrap_err().to_string();
        assert!(
            error.contains("no workspace member is named 'vm-idle'"),
            "{error}"
        );
        let error = guests_in(&["idle"], &[("vm-idle", "idle")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("has no binary named 'vm-idle'"), "{error}");
        assert_eq!(guests_in(&[], &[]).unwrap(), Vec::<String>::new());
        assert_eq!(guest_package("hello"), "vm-hello");
    }

    #[test]
    fn roles_come_from_package_metadata() {
        let workspace = sample();
        let roles: Vec<_> = workspace
            .packages
            .iter()
            .filter_map(|package| Some((package.name.as_str(), package.role.as_deref()?)))
            .collect();
        assert_eq!(roles, [("world-switcher", "world-switcher")]);
        let json = r#"{"workspace_root": "/w", "target_directory": "/w/target", "packages": [
            {"name": "ws", "manifest_path": "/w/components/system/ws/Cargo.toml", "targets": [],
             "metadata": {"microvisor": {"role": "world-swticher"}}}]}"#;
        let error = Workspace::from_metadata(json.as_bytes())
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "/w/components/system/ws/Cargo.toml: [package.metadata.microvisor] role: unknown role \
             \"world-swticher\" (the roles are: world-switcher); did you mean 'world-switcher'?"
        );
    }

    #[test]
    fn the_world_switcher_declares_its_role() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../components/system/world-switcher/Cargo.toml");
        let text = std::fs::read_to_string(manifest).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            table["package"]["metadata"]["microvisor"]["role"].as_str(),
            Some(capdl::WORLD_SWITCHER)
        );
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
