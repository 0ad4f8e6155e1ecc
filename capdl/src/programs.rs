//! The set of programs a system may name: the component crates that exist.
//!
//! A component's `program` must be one of these. The build tool (and the
//! `capdl` command) scans the `components/` directory, where a program is a
//! sub-directory with a `src/main.rs`; tests build a set from a list of
//! names instead. The directory's name appears in "no program" errors.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use microvisor_abi::image::is_valid_name;

/// Program names and the directory they were found in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramSet {
    directory: String,
    names: BTreeSet<String>,
}

impl ProgramSet {
    /// A set from names (those that cannot be image entry names are left
    /// out); `directory` names where they live in messages.
    pub fn new<N: Into<String>>(
        directory: impl Into<String>,
        names: impl IntoIterator<Item = N>,
    ) -> Self {
        Self {
            directory: directory.into(),
            names: names
                .into_iter()
                .map(Into::into)
                .filter(|name| is_valid_name(name))
                .collect(),
        }
    }

    /// The sub-directories of `directory` that hold a `src/main.rs` and
    /// whose names can be boot-image entry names.
    pub fn scan(directory: &Path) -> io::Result<Self> {
        let mut names = BTreeSet::new();
        for entry in std::fs::read_dir(directory)? {
            let entry = entry?;
            if entry.path().join("src").join("main.rs").is_file()
                && let Ok(name) = entry.file_name().into_string()
                && is_valid_name(&name)
            {
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
        })
    }

    /// Whether `name` is a program.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The programs, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// Whether there are no programs.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Where the programs live, as messages name it.
    pub fn directory(&self) -> &str {
        &self.directory
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_crates_with_a_main() {
        let root = std::env::temp_dir().join(format!("capdl-programs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (name, file) in [
            ("ping", "src/main.rs"),
            ("runtime", "src/lib.rs"),
            ("Bad.Name", "src/main.rs"),
        ] {
            let path = root.join(name).join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        let set = ProgramSet::scan(&root).unwrap();
        assert!(set.contains("ping"));
        assert!(!set.contains("runtime"));
        assert_eq!(set.names().collect::<Vec<_>>(), ["ping"]);
        assert!(set.directory().ends_with('/'));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
