//! Host-side helpers for image files (the `std` feature): what the `disk`
//! commands of the build tool, and later the system-config code that names a
//! VMKFS image and the files backing each VM's disk, call.
//!
//! Purpose: turn paths and human sizes into mounted stores, and move whole
//! files between the host and an image. An image is one host file per device;
//! several paths make a multi-device file system (order matters).
//!
//! Invariants: every function that changes an image unmounts (flushes) it
//! before returning success; errors carry the path or name involved. Every
//! image file is locked while it is open (advisory `flock` locks, taken
//! without waiting): exclusively by whatever may change it, shared by what
//! only reads it, so two commands never change one image at once and a
//! reader never sees one half changed; a conflict is refused with
//! [`HostError::InUse`].
//!
//! Callers: `build/src/disk.rs`, the benchmark driver, tests.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::device::{BlockDevice, DeviceError, FileDevice, SECTOR_SIZE};
use crate::error::{FormatError, MountError, StoreError};
use crate::format::{FormatOptions, Layout};
use crate::store::{OpenMode, Store};

/// Why a host-side image operation failed.
#[derive(Debug)]
pub enum HostError {
    Open {
        path: PathBuf,
        error: DeviceError,
    },
    File {
        path: PathBuf,
        error: std::io::Error,
    },
    Mount {
        paths: Vec<PathBuf>,
        error: MountError,
    },
    Format {
        paths: Vec<PathBuf>,
        error: FormatError,
    },
    Store(StoreError),
    Size(String),
    Exists {
        path: PathBuf,
    },
    /// mkfs failed after truncating files that existed before (`--force`).
    Overwritten {
        paths: Vec<PathBuf>,
        error: alloc::boxed::Box<HostError>,
    },
    /// An export's target is one of the image's own files.
    TargetIsImage {
        path: PathBuf,
        device: usize,
    },
    /// One file named twice in an image's list (by the same path or
    /// another): as device `first` and as device `second`.
    ListedTwice {
        path: PathBuf,
        first: usize,
        second: usize,
    },
    /// An import source whose length cannot be known before it is read (a
    /// pipe, a FIFO, a character device), given without a length.
    UnsizedSource {
        path: PathBuf,
        kind: &'static str,
    },
    /// Another process (another disk command) holds a lock on this image
    /// file that conflicts with the one wanted: `exclusive` when this
    /// command would change the image.
    InUse {
        path: PathBuf,
        exclusive: bool,
    },
}

impl fmt::Display for HostError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |paths: &[PathBuf]| {
            paths
                .iter()
                .map(|path| path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Self::Open { path, error } => write!(formatter, "{}: {error}", path.display()),
            Self::File { path, error } => write!(formatter, "{}: {error}", path.display()),
            Self::Mount { paths, error } => {
                write!(formatter, "{}: cannot mount: {error}", list(paths))
            }
            Self::Format { paths, error } => {
                write!(formatter, "{}: mkfs failed: {error}", list(paths))
            }
            Self::Store(error) => write!(formatter, "{error}"),
            Self::Size(message) => write!(formatter, "{message}"),
            Self::Exists { path } => {
                write!(
                    formatter,
                    "{} already exists (pass --force to overwrite it)",
                    path.display()
                )
            }
            Self::Overwritten { paths, error } => write!(
                formatter,
                "{error}; {} existed before and now hold(s) no file system",
                list(paths)
            ),
            Self::TargetIsImage { path, device } => write!(
                formatter,
                "{} is the image's own file (device {device}); exporting onto it would destroy the image",
                path.display()
            ),
            Self::ListedTwice {
                path,
                first,
                second,
            } => write!(
                formatter,
                "{} is listed twice, as device {first} and as device {second}: \
                 each device of a file system is its own file",
                path.display()
            ),
            Self::UnsizedSource { path, kind } => write!(
                formatter,
                "{} is a {kind}, not a regular file: its length is not known until it is read; \
                 pass --size with the disk's length (the import reads at most that many bytes \
                 from it, and what it does not supply reads as zero)",
                path.display()
            ),
            Self::InUse { path, exclusive } => write!(
                formatter,
                "image {} is in use by another disk command{}; try again when it has finished",
                path.display(),
                if *exclusive {
                    " (this command changes the image, so it must be the only one using it)"
                } else {
                    " that changes it"
                }
            ),
        }
    }
}

impl std::error::Error for HostError {}

impl From<StoreError> for HostError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

/// Parses a size such as `4096`, `64K`, `512M`, `1G`, `2GiB`, `1T` (binary units).
pub fn parse_size(text: &str) -> Result<u64, HostError> {
    let trimmed = text.trim();
    let digits = trimmed
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits);
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => {
            return Err(HostError::Size(alloc::format!(
                "'{text}' is not a size (use e.g. 4096, 64K, 512M, 1G)"
            )));
        }
    };
    let value: u64 = number
        .parse()
        .map_err(|_| HostError::Size(alloc::format!("'{text}' is not a size")))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| HostError::Size(alloc::format!("'{text}' is too large")))
}

/// Rounds a byte count up to whole sectors; refuses a count so close to
/// 2^64 that the rounded value does not fit.
pub fn round_up_to_sector(length: u64) -> Result<u64, HostError> {
    length
        .checked_next_multiple_of(SECTOR_SIZE as u64)
        .ok_or_else(|| {
            HostError::Size(alloc::format!(
                "a length of {length} bytes is too large: rounded up to whole {SECTOR_SIZE}-byte sectors it exceeds 2^64 - 1 bytes"
            ))
        })
}

/// A file-system identifier unlikely to repeat: time, process id and a counter.
pub fn new_file_system_id() -> [u8; 16] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanoseconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let mut random = crate::fault::SplitMix64::new(
        nanoseconds
            ^ (u64::from(std::process::id()) << 32)
            ^ COUNTER.fetch_add(1, Ordering::Relaxed),
    );
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&random.next_u64().to_le_bytes());
    id[8..].copy_from_slice(&random.next_u64().to_le_bytes());
    id
}

/// Creates one image file per path, each `size` bytes, and formats them as one file system.
///
/// A failed mkfs leaves nothing half made that it made itself: the layout
/// (size, block size, limits) is checked before any file is touched, every
/// path is opened before any is truncated, and on a later failure the files
/// this call created are removed. A file that existed before (allowed by
/// `force`) is never removed — it is the user's (its permissions, its
/// links, perhaps a path other tools hold), and they asked for it to be
/// overwritten, not deleted — but once truncated it holds no file system,
/// and the error says so ([`HostError::Overwritten`]).
pub fn format_image(
    paths: &[PathBuf],
    size: u64,
    options: &FormatOptions,
    force: bool,
) -> Result<Store<FileDevice>, HostError> {
    let format_error = |error| HostError::Format {
        paths: paths.to_vec(),
        error,
    };
    let sizes = alloc::vec![size - size % SECTOR_SIZE as u64; paths.len()];
    Layout::compute(&sizes, options).map_err(|error| format_error(FormatError::Layout(error)))?;
    let mut files = Vec::with_capacity(paths.len());
    let mut created = Vec::new();
    let mut overwritten = Vec::new();
    let result = open_for_format(paths, force, &mut files, &mut created).and_then(|()| {
        let mut devices = Vec::with_capacity(files.len());
        for (path, file) in paths.iter().zip(files) {
            let file_error = |error| HostError::File {
                path: path.clone(),
                error,
            };
            if !created.contains(path) {
                file.set_len(0).map_err(file_error)?;
                overwritten.push(path.clone());
            }
            devices.push(FileDevice::from_empty_file(file, size).map_err(|error| {
                HostError::Open {
                    path: path.clone(),
                    error,
                }
            })?);
        }
        Store::format(devices, options).map_err(format_error)
    });
    result.map_err(|error| {
        for path in &created {
            let _ = std::fs::remove_file(path);
        }
        if overwritten.is_empty() {
            error
        } else {
            HostError::Overwritten {
                paths: overwritten,
                error: alloc::boxed::Box::new(error),
            }
        }
    })
}

/// Opens every path for mkfs without changing any existing file: new files
/// are created (and listed in `created`), existing ones are refused unless
/// `force`. Each is locked exclusively ([`lock`]) as it is opened, so an
/// image another command is using is refused before any file is truncated.
fn open_for_format(
    paths: &[PathBuf],
    force: bool,
    files: &mut Vec<File>,
    created: &mut Vec<PathBuf>,
) -> Result<(), HostError> {
    for path in paths {
        let file_error = |error| HostError::File {
            path: path.clone(),
            error,
        };
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true);
        let file = match options.clone().create_new(true).open(path) {
            Ok(file) => {
                created.push(path.clone());
                file
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                if !force {
                    // Perhaps it exists because this list made it already.
                    if let Ok(existing) = File::open(path) {
                        check_listed_once(files.iter(), &existing, path, files.len())?;
                    }
                    return Err(HostError::Exists { path: path.clone() });
                }
                options.open(path).map_err(file_error)?
            }
            Err(error) => return Err(file_error(error)),
        };
        check_listed_once(files.iter(), &file, path, files.len())?;
        lock(&file, path, true)?;
        files.push(file);
    }
    Ok(())
}

/// Refuses `file`, about to be device `index` at `path`, when it is one of
/// the files `opened` already (the same device and inode, whatever the
/// path): locking it again would conflict with this very command.
fn check_listed_once<'a>(
    opened: impl IntoIterator<Item = &'a File>,
    file: &File,
    path: &Path,
    index: usize,
) -> Result<(), HostError> {
    use std::os::unix::fs::MetadataExt;
    let identity = |file: &File| {
        file.metadata()
            .map(|metadata| (metadata.dev(), metadata.ino()))
            .map_err(|error| HostError::File {
                path: path.to_path_buf(),
                error,
            })
    };
    let mine = identity(file)?;
    for (first, other) in opened.into_iter().enumerate() {
        if identity(other)? == mine {
            return Err(HostError::ListedTwice {
                path: path.to_path_buf(),
                first,
                second: index,
            });
        }
    }
    Ok(())
}

/// Locks an open image file without waiting: exclusively when the caller
/// may change the image, shared when it only reads it. The lock is the
/// open file's (`flock`), so it ends when the file is closed, also when the
/// process is killed. A conflicting lock held elsewhere is
/// [`HostError::InUse`].
pub fn lock(file: &File, path: &Path, exclusive: bool) -> Result<(), HostError> {
    let locked = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match locked {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(HostError::InUse {
            path: path.to_path_buf(),
            exclusive,
        }),
        Err(std::fs::TryLockError::Error(error)) => Err(HostError::File {
            path: path.to_path_buf(),
            error,
        }),
    }
}

/// Opens the image files (in file-system order) and mounts them; without
/// `writable` the files are opened read-only and the store never writes (a
/// journal transaction not yet in place is replayed in RAM only). The files
/// stay locked ([`open_devices`]) until the store is dropped or unmounted.
pub fn mount_image(paths: &[PathBuf], writable: bool) -> Result<Store<FileDevice>, HostError> {
    let devices = open_devices(paths, writable)?;
    let mounted = if writable {
        Store::mount(devices)
    } else {
        Store::mount_read_only(devices)
    };
    mounted.map_err(|error| HostError::Mount {
        paths: paths.to_vec(),
        error,
    })
}

/// Opens the image files without mounting (for fsck), each locked
/// ([`lock`]): exclusively when `writable`, shared otherwise.
pub fn open_devices(paths: &[PathBuf], writable: bool) -> Result<Vec<FileDevice>, HostError> {
    let mut devices: Vec<FileDevice> = Vec::with_capacity(paths.len());
    for path in paths {
        let device = FileDevice::open(path, writable).map_err(|error| HostError::Open {
            path: path.clone(),
            error,
        })?;
        check_listed_once(
            devices.iter().map(FileDevice::file),
            device.file(),
            path,
            devices.len(),
        )?;
        lock(device.file(), path, writable)?;
        devices.push(device);
    }
    Ok(devices)
}

const TRANSFER: usize = 1 << 20;

/// What [`import_file`] copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Imported {
    /// The new disk's length in bytes.
    pub length: u64,
    /// Bytes read from the source and written at the start of the disk;
    /// the rest of the disk reads as zero.
    pub read: u64,
    /// The source (a pipe or a device, never a regular file) had more than
    /// the disk holds: the import stopped at the disk's length, as `--size`
    /// asked (an endless source such as `/dev/zero` always does).
    pub cut: bool,
}

/// A test of a file's type.
type IsKind = fn(&std::fs::FileType) -> bool;

/// What kind of file a source that is not a regular file is, for messages.
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    use std::fs::FileType;
    use std::os::unix::fs::FileTypeExt;
    let kinds: [(IsKind, &str); 5] = [
        (FileType::is_dir, "directory"),
        (FileType::is_fifo, "pipe"),
        (FileType::is_char_device, "character device"),
        (FileType::is_block_device, "block device"),
        (FileType::is_socket, "socket"),
    ];
    kinds
        .iter()
        .find(|(is, _)| is(&file_type))
        .map_or("special file", |&(_, kind)| kind)
}

/// Copies a host file into the image as a new virtual disk named `name`,
/// `length` bytes long (default: the host file's size rounded up to sectors);
/// bytes past the host file read as zero.
///
/// A regular file (or a block device) has a length before it is read; a
/// larger one than `length` is refused. Any other source — a pipe (`<(cmd)`,
/// `/dev/stdin` fed by one), a FIFO, a character device such as
/// `/dev/zero` — says nothing of its length until it is read, so it needs
/// `length` and is read up to that many bytes (rounded up to sectors) or
/// to its end, whichever comes first; [`Imported`] says how much was read
/// and whether the source had more. Without `length` it is refused before
/// it is opened.
///
/// All or nothing: the disk is created in RAM only, filled, and committed in
/// one journal transaction at the end, so a crash (or a kill) at any point
/// leaves either no file or the whole file, and a failed copy (say, a read
/// error in the source, or a regular file that shrank while it was read)
/// leaves no file either.
pub fn import_file<D: BlockDevice>(
    store: &mut Store<D>,
    name: &str,
    source: &Path,
    length: Option<u64>,
) -> Result<Imported, HostError> {
    let file_error = |error| HostError::File {
        path: source.to_path_buf(),
        error,
    };
    let file_type = std::fs::metadata(source).map_err(file_error)?.file_type();
    let sized = file_type.is_file() || {
        use std::os::unix::fs::FileTypeExt;
        file_type.is_block_device()
    };
    if !sized && length.is_none() {
        return Err(HostError::UnsizedSource {
            path: source.to_path_buf(),
            kind: kind_of(file_type),
        });
    }
    let mut file = File::open(source).map_err(file_error)?;
    let source_length = if sized {
        // A block device's metadata says 0 bytes; its end is its size.
        let end = std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(file_error)?;
        std::io::Seek::rewind(&mut file).map_err(file_error)?;
        Some(end)
    } else {
        None
    };
    let length = match (length, source_length) {
        (Some(length), _) | (None, Some(length)) => round_up_to_sector(length)?,
        (None, None) => unreachable!("refused above"),
    };
    if let Some(source_length) = source_length
        && source_length > length
    {
        return Err(HostError::Size(alloc::format!(
            "{} holds {source_length} bytes, more than the {length}-byte disk",
            source.display()
        )));
    }
    store.create_uncommitted(name, length)?;
    let limit = source_length.unwrap_or(length);
    let copied =
        copy_in(store, name, &mut file, limit, source).and_then(|read| match source_length {
            Some(expected) if read < expected => Err(HostError::Size(alloc::format!(
                "{} ended after {read} of its {expected} bytes (it changed while it was read)",
                source.display()
            ))),
            Some(_) => Ok((read, false)),
            None => Ok((read, read == limit && has_more(&mut file, source)?)),
        });
    let (read, cut) = match copied {
        Ok(copied) => copied,
        Err(error) => {
            store.forget_uncommitted(name);
            return Err(error);
        }
    };
    // The one transaction that makes the disk exist, after its data is durable.
    store.flush()?;
    Ok(Imported { length, read, cut })
}

/// Reads into `buffer` until it is full or the source ends; returns the
/// bytes read.
fn fill(source: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match source.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Whether a source read up to the disk's length has another byte.
fn has_more(file: &mut File, source: &Path) -> Result<bool, HostError> {
    fill(file, &mut [0u8]).map_or_else(
        |error| {
            Err(HostError::File {
                path: source.to_path_buf(),
                error,
            })
        },
        |count| Ok(count == 1),
    )
}

/// Writes at most `limit` bytes of `file` at the start of the disk `name`;
/// returns how many it read (fewer when the source ended first).
fn copy_in<D: BlockDevice>(
    store: &mut Store<D>,
    name: &str,
    file: &mut File,
    limit: u64,
    source: &Path,
) -> Result<u64, HostError> {
    let handle = store.open(name, OpenMode::ReadWrite)?;
    let mut buffer = alloc::vec![0u8; TRANSFER];
    let mut offset = 0u64;
    let mut copy = || {
        while offset < limit {
            let want = (limit - offset).min(TRANSFER as u64) as usize;
            let got = fill(file, &mut buffer[..want]).map_err(|error| HostError::File {
                path: source.to_path_buf(),
                error,
            })?;
            if got == 0 {
                break;
            }
            let padded = (got.div_ceil(SECTOR_SIZE)) * SECTOR_SIZE;
            buffer[got..padded].fill(0);
            store.write(handle, offset, &buffer[..padded])?;
            offset += got as u64;
            if got < want {
                break;
            }
        }
        Ok(offset)
    };
    let copied = copy();
    store.close(handle)?;
    copied
}

/// Copies the virtual disk `name` (as seen through its redo logs, if it is
/// one) to a host file. Refuses a target that is one of the image's own
/// files (by device and inode, so also through a symbolic or hard link),
/// before changing it.
pub fn export_file(
    store: &mut Store<FileDevice>,
    name: &str,
    target: &Path,
) -> Result<u64, HostError> {
    let file_error = |error| HostError::File {
        path: target.to_path_buf(),
        error,
    };
    let handle = store.open(name, OpenMode::ReadOnly)?;
    let length = store.length(handle)?;
    // Opened without truncating, so it can be compared with the image first.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(target)
        .map_err(file_error)?;
    for (device, image) in store.devices().iter().enumerate() {
        let same = image.is_same_file(&file).map_err(|error| HostError::Open {
            path: target.to_path_buf(),
            error,
        })?;
        if same {
            return Err(HostError::TargetIsImage {
                path: target.to_path_buf(),
                device,
            });
        }
    }
    file.set_len(0).map_err(file_error)?;
    let mut buffer = alloc::vec![0u8; TRANSFER];
    let mut offset = 0u64;
    while offset < length {
        let step = (length - offset).min(TRANSFER as u64) as usize;
        store.read(handle, offset, &mut buffer[..step])?;
        file.write_all(&buffer[..step]).map_err(file_error)?;
        offset += step as u64;
    }
    store.close(handle)?;
    file.sync_all().map_err(file_error)?;
    Ok(length)
}

/// Makes sure the image holds a virtual disk `name` of `length` bytes,
/// creating it (from `source` when given) if it does not exist: the one call
/// a system configuration needs per VM disk.
pub fn ensure_disk(
    paths: &[PathBuf],
    name: &str,
    length: u64,
    source: Option<&Path>,
) -> Result<(), HostError> {
    let rounded = round_up_to_sector(length)?;
    let mut store = mount_image(paths, true)?;
    match store.stat(name) {
        Ok(info) if info.length == rounded => {}
        Ok(_) => store.resize(name, rounded)?,
        Err(StoreError::NotFound { .. }) => match source {
            Some(source) => {
                import_file(&mut store, name, source, Some(length))?;
            }
            None => store.create(name, rounded)?,
        },
        Err(error) => return Err(error.into()),
    }
    store.unmount()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn lengths_round_up_to_sectors_without_overflow() {
        assert_eq!(round_up_to_sector(0).unwrap(), 0);
        assert_eq!(round_up_to_sector(1).unwrap(), 512);
        assert_eq!(round_up_to_sector(1024).unwrap(), 1024);
        assert_eq!(round_up_to_sector(u64::MAX - 511).unwrap(), u64::MAX - 511);
        for length in [u64::MAX - 510, u64::MAX] {
            let message = round_up_to_sector(length).unwrap_err().to_string();
            assert!(
                message.contains(&length.to_string()) && message.contains("too large"),
                "{message}"
            );
        }
    }

    #[test]
    fn a_failed_mkfs_says_which_existing_files_it_overwrote() {
        let directory = tempfile::tempdir().unwrap();
        let existing = directory.path().join("existing.img");
        std::fs::write(&existing, b"old contents").unwrap();
        let options = FormatOptions {
            block_size: 4096,
            max_files: 8,
            pointer_blocks_per_file: 4,
            ..FormatOptions::default()
        };
        // /dev/full opens for writing but cannot be truncated: the failure
        // comes after the existing file was.
        let paths = [existing.clone(), PathBuf::from("/dev/full")];
        let error = format_image(&paths, 2 << 20, &options, true).err().unwrap();
        let message = error.to_string();
        assert!(
            matches!(&error, HostError::Overwritten { paths, .. } if *paths == [existing.clone()])
                && message.contains("/dev/full")
                && message.contains("now hold(s) no file system"),
            "{message}"
        );
        // Not removed: it is the user's file, overwritten (with zeros) as they asked.
        let contents = std::fs::read(&existing).unwrap();
        assert!(!contents.is_empty() && contents.iter().all(|&byte| byte == 0));
    }

    #[test]
    fn image_round_trip_through_host_files() {
        let directory =
            std::env::temp_dir().join(alloc::format!("vmkfs-host-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let image = directory.join("store.img");
        let source = directory.join("source.bin");
        let images = vec![image.clone()];
        let target = directory.join("target.bin");
        let contents: Vec<u8> = (0..10_000u32).map(|index| (index % 251) as u8).collect();
        std::fs::write(&source, &contents).unwrap();
        let options = FormatOptions {
            block_size: 4096,
            max_files: 8,
            pointer_blocks_per_file: 4,
            ..FormatOptions::default()
        };
        format_image(&images, 2 << 20, &options, true)
            .unwrap()
            .unmount()
            .unwrap();
        assert!(matches!(
            format_image(&images, 2 << 20, &options, false),
            Err(HostError::Exists { .. })
        ));
        let mut store = mount_image(&images, true).unwrap();
        assert_eq!(
            import_file(&mut store, "disk", &source, None)
                .unwrap()
                .length,
            10_240
        );
        store.unmount().unwrap();
        ensure_disk(&images, "disk", 10_240, None).unwrap();
        ensure_disk(&images, "second", 4096, Some(&source)).unwrap_err();
        ensure_disk(&images, "third", 8192, None).unwrap();
        let mut store = mount_image(&images, false).unwrap();
        assert_eq!(export_file(&mut store, "disk", &target).unwrap(), 10_240);
        let exported = std::fs::read(&target).unwrap();
        assert_eq!(&exported[..10_000], &contents[..]);
        assert!(exported[10_000..].iter().all(|&byte| byte == 0));
        assert_eq!(store.stat("third").unwrap().length, 8192);
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
