//! Initial RAM file systems for Linux guests: a `newc` cpio archive
//! written from a list of entries, byte-reproducible (every time stamp
//! is 0, inode numbers follow the order of entries).
//!
//! Linux unpacks an uncompressed `newc` archive into its rootfs and runs
//! `/init` from it; no compression is used, so the archive needs no tool
//! and its bytes are exactly what the entries say. Names are relative
//! paths (`bin/busybox`, no leading `/`); directories must come before
//! what they hold, which [`Archive`] checks.

use anyhow::{Result, bail};

/// File-type bits of a cpio `mode`.
const REGULAR: u32 = 0o100_000;
const DIRECTORY: u32 = 0o040_000;
const SYMLINK: u32 = 0o120_000;
const CHARACTER_DEVICE: u32 = 0o020_000;

/// The archive's last entry.
const TRAILER: &str = "TRAILER!!!";

/// A `newc` cpio archive being written.
#[derive(Debug, Default)]
pub struct Archive {
    bytes: Vec<u8>,
    inode: u32,
    directories: Vec<String>,
    names: Vec<String>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory (permissions `0755`).
    pub fn directory(&mut self, name: &str) -> Result<&mut Self> {
        self.entry(name, DIRECTORY | 0o755, &[], (0, 0))?;
        self.directories.push(name.to_string());
        Ok(self)
    }

    /// A regular file with permission bits `permissions`.
    pub fn file(&mut self, name: &str, permissions: u32, contents: &[u8]) -> Result<&mut Self> {
        self.entry(name, REGULAR | (permissions & 0o7777), contents, (0, 0))
    }

    /// A symbolic link `name` pointing at `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> Result<&mut Self> {
        self.entry(name, SYMLINK | 0o777, target.as_bytes(), (0, 0))
    }

    /// A character device node (e.g. `dev/console`, 5:1).
    pub fn character_device(&mut self, name: &str, major: u32, minor: u32) -> Result<&mut Self> {
        self.entry(name, CHARACTER_DEVICE | 0o600, &[], (major, minor))
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        data: &[u8],
        device: (u32, u32),
    ) -> Result<&mut Self> {
        if name.is_empty() || name.starts_with('/') || name.ends_with('/') || name.contains("//") {
            bail!("initramfs entry '{name}': names are relative paths like 'bin/busybox'");
        }
        if name.split('/').any(|part| part == "." || part == "..") {
            bail!("initramfs entry '{name}': '.' and '..' are not allowed");
        }
        if self.names.iter().any(|known| known == name) {
            bail!("initramfs entry '{name}' is given twice");
        }
        if let Some((parent, _)) = name.rsplit_once('/')
            && !self.directories.iter().any(|directory| directory == parent)
        {
            bail!("initramfs entry '{name}': its directory '{parent}' must come first");
        }
        let Ok(size) = u32::try_from(data.len()) else {
            bail!("initramfs entry '{name}' is larger than 4 GiB");
        };
        self.inode += 1;
        self.header(self.inode, mode, size, device, name);
        self.bytes.extend_from_slice(data);
        self.pad();
        self.names.push(name.to_string());
        Ok(self)
    }

    fn header(&mut self, inode: u32, mode: u32, size: u32, device: (u32, u32), name: &str) {
        let nlink = if mode & DIRECTORY == DIRECTORY && mode & REGULAR == 0 {
            2
        } else {
            1
        };
        let fields = [
            inode,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            size,
            0, // device major
            0, // device minor
            device.0,
            device.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08X}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    /// The archive's bytes, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.header(0, 0, 0, (0, 0), TRAILER);
        self.bytes
    }
}

/// A static x86-64 Linux program, written here byte by byte, that prints
/// the time-stamp counter in decimal and exits: `/bin/tsc` of the
/// initramfs. Under `-icount shift=0` the TSC counts every instruction
/// since the machine started, so its first output is the cost of booting
/// to userspace, comparable between the hypervisor and bare QEMU.
pub fn tsc_program() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const CODE: [u8; 70] = [
        0x0f, 0x31, // rdtsc
        0x48, 0xc1, 0xe2, 0x20, // shl rdx, 32
        0x48, 0x09, 0xd0, // or rax, rdx
        0x48, 0x89, 0xe6, // mov rsi, rsp
        0x48, 0xff, 0xce, // dec rsi
        0xc6, 0x06, 0x0a, // mov byte [rsi], '\n'
        0x48, 0xc7, 0xc1, 0x0a, 0x00, 0x00, 0x00, // mov rcx, 10
        0x31, 0xd2, // digit: xor edx, edx
        0x48, 0xf7, 0xf1, // div rcx
        0x80, 0xc2, 0x30, // add dl, '0'
        0x48, 0xff, 0xce, // dec rsi
        0x88, 0x16, // mov [rsi], dl
        0x48, 0x85, 0xc0, // test rax, rax
        0x75, 0xee, // jnz digit
        0x48, 0x89, 0xe2, // mov rdx, rsp
        0x48, 0x29, 0xf2, // sub rdx, rsi
        0xbf, 0x01, 0x00, 0x00, 0x00, // mov edi, 1 (stdout)
        0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1 (write)
        0x0f, 0x05, // syscall
        0xb8, 0x3c, 0x00, 0x00, 0x00, // mov eax, 60 (exit)
        0x31, 0xff, // xor edi, edi
        0x0f, 0x05, // syscall
    ];
    let total = (64 + 56 + CODE.len()) as u64;
    let mut elf = Vec::new();
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // executable
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(BASE + 64 + 56).to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // program headers
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, 1, 0, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // read, execute
    for quad in [0, BASE, BASE, total, total, 0x1000] {
        elf.extend_from_slice(&quad.to_le_bytes());
    }
    elf.extend_from_slice(&CODE);
    elf
}

/// The `/init` of the busybox initramfs: mounts the kernel's file
/// systems, prints what the boot test checks, and powers off. Two kernel
/// command-line words (which Linux hands to init as environment
/// variables) add to that: `guest_reboot=once` sets the RTC and reboots
/// once, `guest_shell=1` opens a shell on the console before powering off.
pub const BUSYBOX_INIT: &str = r#"#!/bin/sh
tsc=$(/bin/tsc)
echo "guest: userspace reached at TSC $tsc"
echo "BENCH linux-userspace $tsc instructions (from machine start to the first userspace instruction, under -icount)"
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "guest: userspace up, kernel $(uname -r)"
# guest_disk=1: the virtio-blk disk. Its first boot mounts the file
# system on it (or, on a blank disk, makes one with mke2fs, which the
# kernel's ext4 driver mounts), writes /mnt/data with a known checksum
# and reboots; booted again, it reads the file back, prints its checksum
# and the whole disk's, and powers off.
if [ "$guest_disk" = 1 ]; then
    for module in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
        insmod /lib/modules/$module.ko || echo "guest: disk: insmod $module failed"
    done
    tries=0
    while [ ! -b /dev/vda ] && [ $tries -lt 100 ]; do sleep 0.1; tries=$((tries + 1)); done
    if [ ! -b /dev/vda ]; then
        echo "guest: disk: no /dev/vda"
        poweroff -f
    fi
    echo "guest: disk: /dev/vda of $(cat /sys/block/vda/size) sectors"
    if mount -t ext4 /dev/vda /mnt 2>/dev/null; then
        if [ -f /mnt/data ]; then
            echo "guest: disk: mounted; /mnt/data sha256 $(sha256sum /mnt/data | cut -d' ' -f1)"
            umount /mnt
            # The whole disk as the guest reads it, for the host's export.
            echo "guest: disk: /dev/vda sha256 $(sha256sum /dev/vda | cut -d' ' -f1)"
            # A second disk, if any: whether it is read-only, and its bytes.
            if [ -b /dev/vdb ]; then
                echo "guest: disk: /dev/vdb read-only $(cat /sys/block/vdb/ro), sha256 $(sha256sum /dev/vdb | cut -d' ' -f1)"
            fi
            echo "guest: disk: powering off"
            poweroff -f
        fi
        echo "guest: disk: mounted a file system without /mnt/data"
    else
        echo "guest: disk: no file system; making one"
        mke2fs -F -L vmkfs /dev/vda >/dev/null
        mount -t ext4 /dev/vda /mnt || { echo "guest: disk: the new file system does not mount"; poweroff -f; }
    fi
    seq 1 100000 > /mnt/data
    # guest_disk_tag=T: a last line of the VM's own, so VMs over one base
    # write different files.
    if [ -n "$guest_disk_tag" ]; then echo "$guest_disk_tag" >> /mnt/data; fi
    echo "guest: disk: wrote /mnt/data, sha256 $(sha256sum /mnt/data | cut -d' ' -f1)"
    umount /mnt
    sync
    echo "guest: disk: rebooting to read it back"
    reboot -f
fi
# guest_ip=A guest_peer=B[,C...]: the virtio-net NIC as eth0 with address
# A/24; for each peer in turn, once it answers one ping, 20 more, and the
# loss is printed; then power off.
if [ -n "$guest_ip" ]; then
    for module in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net; do
        insmod /lib/modules/$module.ko || echo "guest: net: insmod $module failed"
    done
    tries=0
    while [ ! -e /sys/class/net/eth0 ] && [ $tries -lt 100 ]; do sleep 0.1; tries=$((tries + 1)); done
    if [ ! -e /sys/class/net/eth0 ]; then
        echo "guest: net: no eth0"
        poweroff -f
    fi
    ip link set lo up
    ip link set eth0 up
    ip addr add "$guest_ip/24" dev eth0
    echo "guest: net: eth0 $(cat /sys/class/net/eth0/address) is $guest_ip/24"
    for peer in $(echo "$guest_peer" | tr ',' ' '); do
        tries=0
        until ping -c 1 -W 1 "$peer" >/dev/null 2>&1; do
            tries=$((tries + 1))
            if [ $tries -ge 60 ]; then
                echo "guest: net: $peer does not answer"
                poweroff -f
            fi
        done
        echo "guest: net: $peer answers; pinging it 20 times"
        ping -c 20 -i 0.2 "$peer" | tail -2 | head -1 | sed "s/^/guest: net: $peer: /"
    done
    # Stay a little so the peer's last pings are answered too.
    sleep 3
    echo "guest: net: powering off"
    poweroff -f
fi
# guest_reboot=once on the kernel command line (init's environment): set
# the RTC to 2030 and reboot; booted again, the RTC must still say 2030.
if [ "$guest_reboot" = once ]; then
    if [ "$(date -u +%Y)" = 2030 ]; then
        echo "guest: booted again after a reboot; the RTC kept the date it was set to: $(date -u +%Y-%m-%d)"
    else
        date -u -s "2030-01-01 00:00:00" >/dev/null
        hwclock -w -u
        echo "guest: RTC set to 2030-01-01; rebooting"
        reboot -f
    fi
fi
# Serial and timer interrupts: the LAPIC timer (LOC) or, without an APIC
# (acpi=off), the PIT's IRQ 0 through the 8259.
counts() { awk '/ttyS0/ { s = $2 } /LOC:/ || / timer$/ { t += $2 } END { print s " " t }' /proc/interrupts; }
cat /proc/interrupts
before=$(counts)
start=$(cut -d' ' -f1 /proc/uptime)
echo "guest: clock before sleep 4: $start"
sleep 4
end=$(cut -d' ' -f1 /proc/uptime)
echo "guest: clock after sleep 4: $end"
after=$(counts)
cat /proc/interrupts
# The interval holds starting sleep and cut too, which under a loaded
# emulator (two VMs on one CPU beside another test) take a while.
awk -v a="$start" -v b="$end" 'BEGIN { d = b - a; r = (d >= 3.98 && d <= 4.5) ? "PASS" : "FAIL"; print "guest: sleep 4 took " d " s: " r }'
awk -v a="$before" -v b="$after" 'BEGIN { split(a, x, " "); split(b, y, " "); r = (y[1] > x[1] && y[2] > x[2]) ? "PASS" : "FAIL"; print "guest: interrupts rising (serial " x[1] " -> " y[1] ", timer " x[2] " -> " y[2] "): " r }'
# guest_shell=1 on the kernel command line: a shell on the console (the
# VM must read the system console: console_input = true); exit powers off.
if [ "$guest_shell" = 1 ]; then
    echo "guest: a shell on the console; type exit to power off"
    sh
fi
echo "guest: powering off"
poweroff -f
"#;

/// The kernel modules the initramfs carries, in the order `/init` loads
/// them (each after what it depends on), as paths under the kernel
/// package's `lib/modules/<release>/kernel/`: the virtio core, the PCI
/// transport, the block driver, and the network driver with the failover
/// modules it needs (the Debian cloud kernel builds them as modules; ext4
/// is built in).
pub const MODULES: [&str; 9] = [
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/block/virtio_blk.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
];

/// An initramfs with a static `busybox` as `/bin/busybox` (and `/bin/sh`
/// pointing at it), `init` as `/init` and `modules` (file name, bytes)
/// in `/lib/modules`.
pub fn busybox(busybox: &[u8], init: &str, modules: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut archive = Archive::new();
    for directory in [
        "bin",
        "dev",
        "proc",
        "sys",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "lib",
        "lib/modules",
        "mnt",
    ] {
        archive.directory(directory)?;
    }
    archive.character_device("dev/console", 5, 1)?;
    archive.file("bin/busybox", 0o755, busybox)?;
    archive.file("bin/tsc", 0o755, &tsc_program())?;
    for applet in [
        "sh",
        "mount",
        "echo",
        "cat",
        "cut",
        "sleep",
        "uname",
        "poweroff",
        "reboot",
        "date",
        "hwclock",
        "insmod",
        "mke2fs",
        "umount",
        "sync",
        "seq",
        "sha256sum",
        "ls",
    ] {
        archive.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    for (name, bytes) in modules {
        archive.file(&format!("lib/modules/{name}"), 0o644, bytes)?;
    }
    archive.file("init", 0o755, init.as_bytes())?;
    Ok(archive.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the archive back: (name, mode, data) per entry, checking the
    /// format as the kernel's unpacker does.
    fn entries(bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            assert_eq!(&bytes[at..at + 6], b"070701", "magic at {at}");
            let field = |index: usize| {
                let start = at + 6 + index * 8;
                u32::from_str_radix(std::str::from_utf8(&bytes[start..start + 8]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, name_size) = (field(1), field(6) as usize, field(11) as usize);
            assert_eq!(field(5), 0, "mtime is 0");
            let name_start = at + 110;
            let name = std::str::from_utf8(&bytes[name_start..name_start + name_size - 1])
                .unwrap()
                .to_string();
            assert_eq!(bytes[name_start + name_size - 1], 0);
            let data_start = (name_start + name_size).next_multiple_of(4);
            let data = bytes[data_start..data_start + size].to_vec();
            at = (data_start + size).next_multiple_of(4);
            if name == TRAILER {
                assert_eq!(at, bytes.len(), "nothing after the trailer");
                return out;
            }
            out.push((name, mode, data));
        }
    }

    #[test]
    fn entries_round_trip_with_alignment() {
        let mut archive = Archive::new();
        archive.directory("bin").unwrap();
        archive.file("bin/a", 0o644, b"x").unwrap();
        archive.file("bin/abcde", 0o755, b"hello").unwrap();
        archive.symlink("bin/sh", "a").unwrap();
        archive.character_device("bin/tty", 5, 0).unwrap();
        let bytes = archive.finish();
        assert_eq!(bytes.len() % 4, 0);
        let read = entries(&bytes);
        let names: Vec<_> = read.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["bin", "bin/a", "bin/abcde", "bin/sh", "bin/tty"]);
        assert_eq!(read[0].1, DIRECTORY | 0o755);
        assert_eq!(
            read[2],
            ("bin/abcde".into(), REGULAR | 0o755, b"hello".to_vec())
        );
        assert_eq!(read[3].2, b"a");
        assert_eq!(read[3].1 & 0o170_000, SYMLINK);
    }

    #[test]
    fn the_same_entries_give_the_same_bytes() {
        let make = || {
            busybox(
                b"\x7fELF...",
                BUSYBOX_INIT,
                &[("m.ko".into(), b"ko".to_vec())],
            )
            .unwrap()
        };
        assert_eq!(make(), make());
        let read = entries(&make());
        assert!(
            read.iter()
                .any(|(n, m, d)| n == "init" && m & 0o111 != 0 && d.starts_with(b"#!/bin/sh"))
        );
        assert!(
            read.iter()
                .any(|(n, _, d)| n == "bin/sh" && d == b"busybox")
        );
    }

    /// The program runs here too (the host is x86-64 Linux): it prints a
    /// plausible counter value and exits with 0.
    #[test]
    fn the_tsc_program_prints_the_counter() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("mvbuild-tsc-{}", std::process::id()));
        std::fs::write(&path, tsc_program()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let output = std::process::Command::new(&path).output().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(output.status.success(), "{output:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(text.ends_with('\n'), "{text:?}");
        let value: u64 = text.trim().parse().unwrap();
        assert!(value > 0);
    }

    #[test]
    fn bad_names_are_refused() {
        let mut archive = Archive::new();
        for name in ["", "/init", "bin/", "a//b", "../x", "bin/./x"] {
            assert!(archive.file(name, 0o644, b"").is_err(), "{name:?}");
        }
        let error = archive.file("lib/x", 0o644, b"").unwrap_err().to_string();
        assert!(
            error.contains("its directory 'lib' must come first"),
            "{error}"
        );
        archive.file("x", 0o644, b"").unwrap();
        let error = archive.file("x", 0o644, b"").unwrap_err().to_string();
        assert!(error.contains("given twice"), "{error}");
    }
}
