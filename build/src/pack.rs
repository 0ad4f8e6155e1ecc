//! Packs a lowered system into a boot image file.
//!
//! The image starts with the boot spec (entry `spec`; every image has one),
//! then holds each program entry the spec names: the program's ELF from the
//! build artifacts, with its test-only corruption applied if it has one,
//! written with `microvisor_abi::image::ImageBuilder`. When the spec
//! declares VMs, the guest image each starts from (`Artifacts::guests`,
//! built from `test-vms/<image>`) follows as an entry `vm-<image>` of kind
//! `Guest`, once per image, in the order of first use. Which guests to pack
//! is read from the spec itself, so an image always holds what its spec
//! names. Called by every command that boots a system after
//! [`crate::workspace::Workspace::build_target`].

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use microvisor_abi::image::{EntryKind, ImageBuilder};
use microvisor_abi::spec::{Spec, name_of};

use capdl::diagnostic::closest;

use crate::system::ImageProgram;
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
/// first use.
pub fn guest_images(spec: &[u8]) -> Result<Vec<GuestUse>> {
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

/// Writes the image of `spec`, its `programs` and the guests it names to
/// `output`, creating its directory.
pub fn pack(
    programs: &[ImageProgram],
    spec: &[u8],
    kernels: &[(String, capdl::KernelGuest)],
    artifacts: &Artifacts,
    output: &Path,
) -> Result<()> {
    let guests = guest_images(spec)?;
    let mut builder = ImageBuilder::new();
    builder
        .add(capdl::SPEC_ENTRY, EntryKind::Spec, "", spec.to_vec())
        .map_err(|message| anyhow!(message))?;
    for program in programs {
        let path = artifacts
            .programs
            .get(&program.program)
            .with_context(|| format!("program '{}' was not built", program.program))?;
        let mut elf =
            std::fs::read(path).with_context(|| format!("could not read {}", path.display()))?;
        if let Some(corruption) = program.corruption {
            corruption.apply(&mut elf).with_context(|| {
                format!(
                    "could not apply corruption '{}' to program '{}' (entry '{}')",
                    corruption.name(),
                    program.program,
                    program.entry
                )
            })?;
        }
        builder
            .add(&program.entry, EntryKind::Component, "", elf)
            .map_err(|message| anyhow!(message))?;
    }
    for (entry, kernel) in kernels {
        let bundle = bundle_of(entry, kernel)?;
        builder
            .add(entry, EntryKind::Guest, "", bundle)
            .map_err(|message| anyhow!(message))?;
    }
    for guest in &guests {
        if kernels.iter().any(|(entry, _)| *entry == guest.entry()) {
            continue;
        }
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

/// The guest bundle of an unmodified guest (`vm_platform::bundle`): its
/// kernel, initrd and command line read from the files the system names.
pub fn bundle_of(entry: &str, kernel: &capdl::KernelGuest) -> Result<Vec<u8>> {
    let vm = entry.strip_prefix(GUEST_PREFIX).unwrap_or(entry);
    let read = |what: &str, path: &Path| {
        std::fs::read(path)
            .with_context(|| format!("VM '{vm}': could not read its {what} {}", path.display()))
    };
    let image = read("kernel", &kernel.kernel)?;
    let initrd = match &kernel.initrd {
        Some(path) => read("initrd", path)?,
        None => Vec::new(),
    };
    let kind = match kernel.kind {
        capdl::GuestKind::Linux => vm_platform::bundle::Kind::Linux,
        capdl::GuestKind::Multiboot => vm_platform::bundle::Kind::Multiboot,
    };
    Ok(vm_platform::bundle::write(
        kind,
        &image,
        &initrd,
        &kernel.command_line,
    ))
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
    use std::path::PathBuf;

    use microvisor_abi::image::Image;

    use super::*;
    use crate::system::System;

    /// A directory with programs `hello` and `world-switcher`, test VMs
    /// `hello` and `dos`, and the system `text` loaded from it.
    fn fixture(tag: &str, text: &str) -> (PathBuf, Artifacts, System) {
        let directory =
            std::env::temp_dir().join(format!("mvbuild-pack-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let mut programs = BTreeMap::new();
        for program in ["hello", "world-switcher"] {
            let path = directory.join(program);
            std::fs::write(&path, format!("\x7fELF-{program}")).unwrap();
            programs.insert(program.to_string(), path);
        }
        let mut guests = BTreeMap::new();
        for guest in ["hello", "dos"] {
            let path = directory.join(format!("guest-{guest}"));
            std::fs::write(&path, format!("\x7fELF-guest-{guest}")).unwrap();
            guests.insert(guest.to_string(), path);
        }
        let artifacts = Artifacts {
            core: directory.join("core"),
            programs,
            guests,
            multiboot: BTreeMap::new(),
        };
        let path = directory.join("system.toml");
        std::fs::write(&path, text).unwrap();
        let set = capdl::ProgramSet::new("components/", ["hello", "world-switcher"]);
        let system = crate::system::load(&path, &set).unwrap();
        (directory, artifacts, system)
    }

    /// A system of VMs starting from `images`.
    fn vm_system(tag: &str, images: &[&str]) -> (PathBuf, Artifacts, System) {
        let mut text = String::new();
        for (index, image) in images.iter().enumerate() {
            text.push_str(&format!(
                "[components.ws{index}]\nprogram = \"world-switcher\"\n\
                 [vms.g{index}]\nswitcher = \"ws{index}\"\nimage = \"{image}\"\n"
            ));
        }
        fixture(tag, &text)
    }

    fn entries(output: &Path) -> Vec<(String, EntryKind, Vec<u8>)> {
        let bytes = std::fs::read(output).unwrap();
        let image = Image::parse(&bytes).unwrap();
        image
            .entries()
            .map(|entry| (entry.name.to_string(), entry.kind, entry.contents.to_vec()))
            .collect()
    }

    #[test]
    fn packs_the_spec_and_each_program_entry_with_its_corruption() {
        let (directory, artifacts, system) = fixture(
            "list",
            "[[component]]\nname = \"first\"\nprogram = \"hello\"\nargs = \"name=first\"\n\
             [[component]]\nname = \"second\"\nprogram = \"hello\"\ncorrupt = \"bad-magic\"\n\
             [[component]]\nname = \"third\"\nprogram = \"hello\"\n",
        );
        let output = directory.join("images/test.img");
        pack(&system.programs, &system.spec, &[], &artifacts, &output).unwrap();
        assert_eq!(
            entries(&output),
            [
                ("spec".to_string(), EntryKind::Spec, system.spec.clone()),
                (
                    "hello".to_string(),
                    EntryKind::Component,
                    b"\x7fELF-hello".to_vec()
                ),
                (
                    "second".to_string(),
                    EntryKind::Component,
                    b"\x7fBAD-hello".to_vec()
                ),
            ]
        );

        let missing = [ImageProgram {
            entry: "absent".into(),
            program: "absent".into(),
            corruption: None,
        }];
        let error = pack(&missing, &system.spec, &[], &artifacts, &output).unwrap_err();
        assert_eq!(error.to_string(), "program 'absent' was not built");
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn packs_an_unmodified_guest_as_a_bundle_of_its_files() {
        let (directory, artifacts, system) = fixture(
            "kernel",
            "[components.ws]\nprogram = \"world-switcher\"\n\
             [vms.linux]\nswitcher = \"ws\"\nkernel = \"bzImage\"\ninitrd = \"initrd.cpio\"\n\
             cmdline = \"console=ttyS0\"\n\
             [components.ws2]\nprogram = \"world-switcher\"\n\
             [vms.test]\nswitcher = \"ws2\"\nimage = \"hello\"\n",
        );
        std::fs::write(directory.join("bzImage"), b"HdrS-kernel").unwrap();
        std::fs::write(directory.join("initrd.cpio"), b"070701").unwrap();
        let output = directory.join("images/linux.img");
        pack(
            &system.programs,
            &system.spec,
            &system.kernels,
            &artifacts,
            &output,
        )
        .unwrap();
        let packed = entries(&output);
        let (_, kind, bundle) = packed
            .iter()
            .find(|(name, _, _)| name == "vm-linux")
            .unwrap();
        assert_eq!(*kind, EntryKind::Guest);
        let bundle = vm_platform::bundle::Bundle::parse(bundle).unwrap();
        assert_eq!(bundle.kernel, b"HdrS-kernel");
        assert_eq!(bundle.initrd, b"070701");
        assert_eq!(bundle.command_line, "console=ttyS0");
        assert!(packed.iter().any(|(name, _, contents)| name == "vm-hello" && contents == b"\x7fELF-guest-hello"));
        // A kernel that is not there is named with its VM.
        std::fs::remove_file(directory.join("bzImage")).unwrap();
        let error = pack(
            &system.programs,
            &system.spec,
            &system.kernels,
            &artifacts,
            &output,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("VM 'linux': could not read its kernel "),
            "{error}"
        );
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn packs_each_guest_the_spec_names_once() {
        let (directory, artifacts, system) = vm_system("guests", &["hello", "dos", "hello"]);
        assert_eq!(
            guest_images(&system.spec).unwrap(),
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
        pack(&system.programs, &system.spec, &[], &artifacts, &output).unwrap();
        assert_eq!(
            entries(&output),
            [
                ("spec".to_string(), EntryKind::Spec, system.spec.clone()),
                (
                    "world-switcher".to_string(),
                    EntryKind::Component,
                    b"\x7fELF-world-switcher".to_vec()
                ),
                (
                    "vm-hello".to_string(),
                    EntryKind::Guest,
                    b"\x7fELF-guest-hello".to_vec()
                ),
                (
                    "vm-dos".to_string(),
                    EntryKind::Guest,
                    b"\x7fELF-guest-dos".to_vec()
                ),
            ]
        );
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn a_guest_that_was_not_built_is_named_with_the_test_vms() {
        let (directory, mut artifacts, system) = vm_system("missing", &["helo"]);
        let output = directory.join("images/vms.img");
        let spec = &system.spec;
        let error = pack(&[], spec, &[], &artifacts, &output).unwrap_err();
        assert_eq!(
            error.to_string(),
            "VM 'g0' starts from guest image 'helo', but no test VM 'helo' was built \
             (test-vms/helo/): did you mean 'hello'? Test VMs built: dos, hello."
        );
        artifacts.guests.clear();
        let error = pack(&[], spec, &[], &artifacts, &output).unwrap_err();
        assert_eq!(
            error.to_string(),
            "VM 'g0' starts from guest image 'helo', but no test VM 'helo' was built \
             (test-vms/helo/). No test VMs were built."
        );
        artifacts
            .guests
            .insert("helo".into(), directory.join("not-there"));
        let error = pack(&[], spec, &[], &artifacts, &output).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("could not read guest image 'helo' of VM 'g0' ("),
            "{error}"
        );
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
