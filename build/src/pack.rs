//! Packs checked components into a boot image file.
//!
//! Reads each component's program ELF from the build artifacts, applies its
//! test-only corruption if it has one, and writes the image with
//! `microvisor_abi::image::ImageBuilder` in system-file order (the order the
//! core loads and reports them). Called by every command that boots a
//! system after [`crate::workspace::Workspace::build_target`].

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use microvisor_abi::image::{EntryKind, ImageBuilder};

use crate::system::Component;
use crate::workspace::Artifacts;

/// Writes the image for `components` to `output`, creating its directory.
pub fn pack(
    components: &[Component],
    spec: Option<&[u8]>,
    artifacts: &Artifacts,
    output: &Path,
) -> Result<()> {
    let mut builder = ImageBuilder::new();
    if let Some(spec) = spec {
        builder
            .add("spec", EntryKind::Spec, "", spec.to_vec())
            .map_err(|message| anyhow!(message))?;
    }
    for component in components {
        let program = artifacts
            .programs
            .get(&component.program)
            .with_context(|| format!("program '{}' was not built", component.program))?;
        let mut elf = std::fs::read(program)
            .with_context(|| format!("could not read {}", program.display()))?;
        if let Some(corruption) = component.corruption {
            corruption.apply(&mut elf).with_context(|| {
                format!(
                    "could not apply corruption '{}' to component '{}'",
                    corruption.name(),
                    component.name
                )
            })?;
        }
        builder
            .add(&component.name, EntryKind::Component, &component.args, elf)
            .map_err(|message| anyhow!(message))?;
    }
    if let Some(directory) = output.parent() {
        std::fs::create_dir_all(directory)
            .with_context(|| format!("could not create {}", directory.display()))?;
    }
    std::fs::write(output, builder.finish())
        .with_context(|| format!("could not write the boot image {}", output.display()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use microvisor_abi::image::Image;

    use super::*;
    use crate::corrupt::Corruption;

    #[test]
    fn packs_in_order_with_corruption() {
        let directory = std::env::temp_dir().join(format!("mvbuild-pack-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let program = directory.join("hello");
        std::fs::write(&program, b"\x7fELF-and-more").unwrap();
        let artifacts = Artifacts {
            core: directory.join("core"),
            programs: BTreeMap::from([("hello".to_string(), program)]),
            guests: BTreeMap::new(),
        };
        let component = |name: &str, corruption| Component {
            name: name.into(),
            program: "hello".into(),
            args: format!("name={name}"),
            corruption,
        };
        let components = [
            component("first", None),
            component("second", Some(Corruption::BadMagic)),
        ];
        let output = directory.join("images/test.img");
        pack(&components, None, &artifacts, &output).unwrap();
        let bytes = std::fs::read(&output).unwrap();
        let image = Image::parse(&bytes).unwrap();
        let entries: Vec<_> = image.entries().collect();
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].name, entries[0].args), ("first", "name=first"));
        assert_eq!(entries[0].contents, b"\x7fELF-and-more");
        assert_eq!(entries[1].name, "second");
        assert_eq!(&entries[1].contents[..4], b"\x7fBAD");

        let missing = [Component {
            program: "absent".into(),
            ..component("third", None)
        }];
        let error = pack(&missing, None, &artifacts, &output).unwrap_err();
        assert_eq!(error.to_string(), "program 'absent' was not built");
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
