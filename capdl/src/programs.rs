//! The set of programs a system may name: the component crates that exist,
//! and which of them are world switchers.
//!
//! A component's `program` must be one of these. Programs live in the
//! group folders [`PROGRAM_GROUPS`] of `components/` (`system/` for the
//! system's components, `test/` for test and demo programs; `lib/` holds
//! libraries). The build tool makes the set from `cargo metadata` (the
//! workspace's component programs in those groups); the `capdl` command
//! scans the same groups of a directory, where a program is a
//! sub-directory with a `src/main.rs`; tests build a set from a list of
//! names instead. "No program" errors name the group folders.
//!
//! A program's `Cargo.toml` may declare what it is for in
//! `[package.metadata.microvisor] role = "..."`; the one role so far is
//! [`WORLD_SWITCHER`], the program a VM's switcher must run. When the set
//! knows the roles ([`ProgramSet::with_world_switchers`], or a scan), a VM
//! whose switcher runs another program is refused; a set made from names
//! alone knows no roles and refuses nothing for them.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use microvisor_abi::image::{NameKind, is_valid_name};

/// The folders of `components/` that hold component programs, one of each
/// name across them: the system's components and the test and demo
/// programs. The one list both the build tool and [`ProgramSet::scan`]
/// look in.
pub const PROGRAM_GROUPS: [&str; 2] = ["system", "test"];

/// The role of a program that runs a VM's vCPU (`components/system/world-switcher`).
pub const WORLD_SWITCHER: &str = "world-switcher";
/// Every role a program may declare.
pub const ROLES: [&str; 1] = [WORLD_SWITCHER];

/// Checks a role a program declares: an error names the roles, with a
/// "did you mean" when one is close.
pub fn check_role(role: &str) -> Result<(), String> {
    if ROLES.contains(&role) {
        return Ok(());
    }
    let close = crate::diagnostic::suggest(role, ROLES)
        .map_or(String::new(), |suggestion| format!("; {suggestion}"));
    Err(format!(
        "unknown role \"{role}\" (the roles are: {}){close}",
        ROLES.join(", ")
    ))
}

/// Program names, the directory they were found in, and the world
/// switchers among them when known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramSet {
    directory: String,
    names: BTreeSet<String>,
    /// `None` when the roles are not known.
    world_switchers: Option<BTreeSet<String>>,
}

impl ProgramSet {
    /// A set from names (those that cannot be image entry names are left
    /// out), roles unknown; `directory` names where they live in messages.
    pub fn new<N: Into<String>>(
        directory: impl Into<String>,
        names: impl IntoIterator<Item = N>,
    ) -> Self {
        Self {
            directory: directory.into(),
            names: names
                .into_iter()
                .map(Into::into)
                .filter(|name| is_valid_name(name, NameKind::Plain))
                .collect(),
            world_switchers: None,
        }
    }

    /// The same set, knowing that exactly `switchers` are world switchers.
    pub fn with_world_switchers<N: Into<String>>(
        mut self,
        switchers: impl IntoIterator<Item = N>,
    ) -> Self {
        self.world_switchers = Some(switchers.into_iter().map(Into::into).collect());
        self
    }

    /// The programs in the group folders ([`PROGRAM_GROUPS`]) of
    /// `directory`: each sub-directory of a group holding a `src/main.rs`
    /// whose name can be a boot-image entry name, as the build tool finds
    /// them. Each program's role is read from its `Cargo.toml`; an unknown
    /// role, or two programs of one name in different groups (the boot
    /// image names programs without their group), is an error.
    pub fn scan(directory: &Path) -> io::Result<Self> {
        if !std::fs::metadata(directory)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", directory.display()),
            ));
        }
        let mut names = BTreeSet::new();
        let mut switchers = BTreeSet::new();
        for group in PROGRAM_GROUPS {
            let folder = directory.join(group);
            if !folder.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(&folder)? {
                let path = entry?.path();
                let Some(name) = program_name(&path) else {
                    continue;
                };
                if names.contains(&name) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} has the name of a program in another group of {}; \
                             program names must be unique",
                            path.display(),
                            directory.display()
                        ),
                    ));
                }
                if role_of(&path)?.as_deref() == Some(WORLD_SWITCHER) {
                    switchers.insert(name.clone());
                }
                names.insert(name);
            }
        }
        let mut label = directory.display().to_string();
        if !label.ends_with('/') {
            label.push('/');
        }
        Ok(Self {
            directory: label,
            names,
            world_switchers: Some(switchers),
        })
    }

    /// Whether `name` is a program.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Whether program `name` is a world switcher: `None` when the set does
    /// not know (roles unknown, or no such program).
    pub fn is_world_switcher(&self, name: &str) -> Option<bool> {
        let switchers = self.world_switchers.as_ref()?;
        self.contains(name).then(|| switchers.contains(name))
    }

    /// The world switchers, sorted (none when the roles are not known).
    pub fn world_switchers(&self) -> impl Iterator<Item = &str> {
        self.world_switchers.iter().flatten().map(String::as_str)
    }

    /// The programs, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// Whether there are no programs.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Where the programs live, as messages name it (`components/`).
    pub fn directory(&self) -> &str {
        &self.directory
    }

    /// The group folders programs are found in, as messages name them:
    /// `components/system/`, `components/test/`.
    pub fn folders(&self) -> Vec<String> {
        PROGRAM_GROUPS
            .iter()
            .map(|group| format!("{}{group}/", self.directory))
            .collect()
    }
}

/// The program a directory holds: its name, if it has a `src/main.rs` and
/// its name can be a boot-image entry name.
fn program_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    (path.join("src").join("main.rs").is_file() && is_valid_name(name, NameKind::Plain))
        .then(|| name.to_string())
}

/// The role `[package.metadata.microvisor] role` in the `Cargo.toml` of a
/// program directory, if it declares one.
fn role_of(directory: &Path) -> io::Result<Option<String>> {
    let manifest = directory.join("Cargo.toml");
    if !manifest.is_file() {
        return Ok(None);
    }
    let invalid = |message: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {message}", manifest.display()),
        )
    };
    let text = std::fs::read_to_string(&manifest)?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|error| invalid(error.message().to_string()))?;
    let role = table
        .get("package")
        .and_then(|package| package.get("metadata"))
        .and_then(|metadata| metadata.get("microvisor"))
        .and_then(|microvisor| microvisor.get("role"));
    let Some(role) = role else {
        return Ok(None);
    };
    let Some(role) = role.as_str() else {
        return Err(invalid(format!(
            "[package.metadata.microvisor] role must be a string, not {role}"
        )));
    };
    check_role(role)
        .map_err(|message| invalid(format!("[package.metadata.microvisor] {message}")))?;
    Ok(Some(role.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_crates_with_a_main_and_their_roles() {
        let root = std::env::temp_dir().join(format!("capdl-programs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (name, file) in [
            ("test/ping", "src/main.rs"),
            ("lib/runtime", "src/lib.rs"),
            ("test/Bad.Name", "src/main.rs"),
            ("test/hello", "src/main.rs"),
            ("system/world-switcher", "src/main.rs"),
            // Outside the groups: not a program, as for the build tool.
            ("stray", "src/main.rs"),
            ("lib/helper", "src/main.rs"),
        ] {
            let path = root.join(name).join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        std::fs::write(
            root.join("system/world-switcher/Cargo.toml"),
            "[package]\nname = \"world-switcher\"\n\
             [package.metadata.microvisor]\nrole = \"world-switcher\"\n",
        )
        .unwrap();
        std::fs::write(
            root.join("test/ping/Cargo.toml"),
            "[package]\nname = \"ping\"\n",
        )
        .unwrap();
        let set = ProgramSet::scan(&root).unwrap();
        assert!(set.contains("ping"));
        assert!(!set.contains("runtime") && !set.contains("stray") && !set.contains("helper"));
        assert_eq!(
            set.names().collect::<Vec<_>>(),
            ["hello", "ping", "world-switcher"]
        );
        assert_eq!(
            set.world_switchers().collect::<Vec<_>>(),
            ["world-switcher"]
        );
        assert_eq!(set.is_world_switcher("ping"), Some(false));
        assert_eq!(set.is_world_switcher("world-switcher"), Some(true));
        assert_eq!(set.is_world_switcher("absent"), None);
        assert!(set.directory().ends_with('/'));
        let directory = set.directory();
        assert_eq!(
            set.folders(),
            [format!("{directory}system/"), format!("{directory}test/")]
        );

        // One name in two groups: the boot image could not tell them apart.
        std::fs::create_dir_all(root.join("system/hello/src")).unwrap();
        std::fs::write(root.join("system/hello/src/main.rs"), "").unwrap();
        let error = ProgramSet::scan(&root).unwrap_err().to_string();
        assert!(
            error.ends_with(&format!(
                "test/hello has the name of a program in another group of {}; \
                 program names must be unique",
                root.display()
            )),
            "{error}"
        );
        std::fs::remove_dir_all(root.join("system/hello")).unwrap();

        std::fs::write(
            root.join("test/ping/Cargo.toml"),
            "[package.metadata.microvisor]\nrole = \"world-swticher\"\n",
        )
        .unwrap();
        let error = ProgramSet::scan(&root).unwrap_err().to_string();
        assert!(
            error.ends_with(
                "ping/Cargo.toml: [package.metadata.microvisor] unknown role \"world-swticher\" \
                 (the roles are: world-switcher); did you mean 'world-switcher'?"
            ),
            "{error}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_set_of_names_knows_no_roles() {
        let set = ProgramSet::new("components/", ["hello", "world-switcher"]);
        assert_eq!(set.is_world_switcher("hello"), None);
        let set = set.with_world_switchers(["world-switcher"]);
        assert_eq!(set.is_world_switcher("hello"), Some(false));
        assert_eq!(check_role("world-switcher"), Ok(()));
    }
}
