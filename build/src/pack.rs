//! Packs checked components into a boot image file.
//!
//! Reads each component's program ELF from the build artifacts, applies its
//! test-only corruption if it has one, and writes the image with
//! `microvisor_abi::image::ImageBuilder` in system-file order (the order the
//! core loads and reports them). When the boot spec declares VMs, the guest
//! image each starts from (`Artifacts::guests`, built from `test-vms/<image>`)
//! follows as an entry `vm-<image>` of kind `Guest`, once per image, in the
//! order of first use. Which guests to pack is read from the spec itself, so
//! an image always holds what its spec names. Called by every command that
//! boots a system after [`crate::workspace::Workspace::build_target`].

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use microvisor_abi::image::{EntryKind, ImageBuilder};
use microvisor_abi::spec::{Spec, name_of};

use capdl::diagnostic::closest;

use crate::system::Component;
use crate::workspace::Artifacts;

/// Boot-image entries holding guest images are named `vm-<image>`.
pub const GUEST_PREFIX: &str = "vm-";

/// A guest image a spec's VM starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestUse {
    /// The first VM (in spec order) that starts from it.
    pub vm: String,
    /// The image name: `hello` for `test-vms/hello`.
    pub image: String,
}

impl GuestUse {
    /// The boot-image entry: `vm-<image>`.
    pub fn entry(&self) -> String {
        format!("{GUEST_PREFIX}{}", self.image)
    }
}

/// The distinct guest images the VMs of `spec` start from, in order of
/// first use (none without a spec).
pub fn guest_images(spec: Option<&[u8]>) -> Result<Vec<GuestUse>> {
    let Some(spec) = spec else {
        return Ok(Vec::new());
    };
    let spec = Spec::parse(spec).map_err(|error| anyhow!("the boot spec is invalid: {error}"))?;
    let mut guests: Vec<GuestUse> = Vec::new();
    for (index, vm) in spec.vms.iter().enumerate() {
        let name = name_of(&vm.name).unwrap_or("?");
        let Some(image) = name_of(&vm.image).and_then(|entry| entry.strip_prefix(GUEST_PREFIX))
        else {
            bail!(
                "VM {index} ('{name}') names boot-image entry {:?}, not '{GUEST_PREFIX}<image>'",
                String::from_utf8_lossy(&vm.image).trim_end_matches('\0')
            );
        };
        if !guests.iter().any(|guest| guest.image == image) {
            guests.push(GuestUse {
                vm: name.to_string(),
                image: image.to_string(),
            });
        }
    }
    Ok(guests)
}

/// Writes the image for `components` (and the guests `spec` names) to
/// `output`, creating its directory.
pub fn pack(
    components: &[Component],
    spec: Option<&[u8]>,
    artifacts: &Artifacts,
    output: &Path,
) -> Result<()> {
    let guests = guest_images(spec)?;
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
    for guest in &guests {
        let Some(path) = artifacts.guests.get(&guest.image) else {
            bail!("{}", missing_guest(guest, artifacts));
        };
        let elf = std::fs::read(path).with_context(|| {
            format!(
                "could not read guest image '{}' of VM '{}' ({})",
                guest.image,
                guest.vm,
                path.display()
            )
        })?;
        builder
            .add(&guest.entry(), EntryKind::Guest, "", elf)
            .map_err(|message| anyhow!(message))?;
    }
    if let Some(directory) = output.parent() {
        std::fs::create_dir_all(directory)
            .with_context(|| format!("could not create {}", directory.display()))?;
    }
    std::fs::write(output, builder.finish())
        .with_context(|| format!("could not write the boot image {}", output.display()))
}

/// "VM 'x' starts from guest image 'y', which was not built", with the
/// test VMs that were.
fn missing_guest(guest: &GuestUse, artifacts: &Artifacts) -> String {
    let built: Vec<String> = artifacts.guests.keys().cloned().collect();
    let mut message = format!(
        "VM '{}' starts from guest image '{}', but no test VM '{}' was built (test-vms/{}/)",
        guest.vm, guest.image, guest.image, guest.image
    );
    match closest(&guest.image, built.iter().map(String::as_str)) {
        Some(close) => message.push_str(&format!(": did you mean '{close}'?")),
        None => message.push('.'),
    }
    if built.is_empty() {
        message.push_str(" No test VMs were built.");
    } else {
        message.push_str(&format!(" Test VMs built: {}.", built.join(", ")));
    }
    message
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

    /// A directory with a world-switcher program, test VMs `hello` and
    /// `dos`, and a system file of VMs starting from `images`.
    fn vm_system(tag: &str, images: &[&str]) -> (std::path::PathBuf, Artifacts, Vec<u8>) {
        let directory =
            std::env::temp_dir().join(format!("mvbuild-pack-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let program = directory.join("world-switcher");
        std::fs::write(&program, b"\x7fELF-switcher").unwrap();
        let mut guests = BTreeMap::new();
        for guest in ["hello", "dos"] {
            let path = directory.join(format!("guest-{guest}"));
            std::fs::write(&path, format!("\x7fELF-guest-{guest}")).unwrap();
            guests.insert(guest.to_string(), path);
        }
        let artifacts = Artifacts {
            core: directory.join("core"),
            programs: BTreeMap::from([("world-switcher".to_string(), program)]),
            guests,
        };
        let mut text = String::new();
        for (index, image) in images.iter().enumerate() {
            text.push_str(&format!(
                "[components.ws{index}]\nprogram = \"world-switcher\"\n\
                 [vms.g{index}]\nswitcher = \"ws{index}\"\nimage = \"{image}\"\n"
            ));
        }
        let path = directory.join("system.toml");
        std::fs::write(&path, text).unwrap();
        let system =
            crate::system::load_description(&path, &["world-switcher".to_string()]).unwrap();
        (directory, artifacts, system.spec.unwrap())
    }

    #[test]
    fn packs_each_guest_the_spec_names_once() {
        let (directory, artifacts, spec) = vm_system("guests", &["hello", "dos", "hello"]);
        let components = [Component {
            name: "world-switcher".into(),
            program: "world-switcher".into(),
            args: String::new(),
            corruption: None,
        }];
        assert_eq!(
            guest_images(Some(&spec)).unwrap(),
            [
                GuestUse {
                    vm: "g0".into(),
                    image: "hello".into()
                },
                GuestUse {
                    vm: "g1".into(),
                    image: "dos".into()
                },
            ]
        );
        let output = directory.join("images/vms.img");
        pack(&components, Some(&spec), &artifacts, &output).unwrap();
        let bytes = std::fs::read(&output).unwrap();
        let image = Image::parse(&bytes).unwrap();
        let entries: Vec<_> = image
            .entries()
            .map(|entry| (entry.name, entry.kind, entry.contents))
            .collect();
        assert_eq!(
            entries,
            [
                ("spec", EntryKind::Spec, spec.as_slice()),
                (
                    "world-switcher",
                    EntryKind::Component,
                    b"\x7fELF-switcher".as_slice()
                ),
                (
                    "vm-hello",
                    EntryKind::Guest,
                    b"\x7fELF-guest-hello".as_slice()
                ),
                ("vm-dos", EntryKind::Guest, b"\x7fELF-guest-dos".as_slice()),
            ]
        );
        assert!(guest_images(None).unwrap().is_empty());
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn a_guest_that_was_not_built_is_named_with_the_test_vms() {
        let (directory, mut artifacts, spec) = vm_system("missing", &["helo"]);
        let output = directory.join("images/vms.img");
        let error = pack(&[], Some(&spec), &artifacts, &output).unwrap_err();
        assert_eq!(
            error.to_string(),
            "VM 'g0' starts from guest image 'helo', but no test VM 'helo' was built \
             (test-vms/helo/): did you mean 'hello'? Test VMs built: dos, hello."
        );
        artifacts.guests.clear();
        let error = pack(&[], Some(&spec), &artifacts, &output).unwrap_err();
        assert_eq!(
            error.to_string(),
            "VM 'g0' starts from guest image 'helo', but no test VM 'helo' was built \
             (test-vms/helo/). No test VMs were built."
        );
        artifacts
            .guests
            .insert("helo".into(), directory.join("not-there"));
        let error = pack(&[], Some(&spec), &artifacts, &output).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("could not read guest image 'helo' of VM 'g0' ("),
            "{error}"
        );
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
