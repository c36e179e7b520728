//! The environment seam of weir.
//!
//! Engine crates (`weir-log`, `weir-stream`, ...) never touch `std::fs`,
//! `std::net`, the wall clock, threads or a global random number generator.
//! Everything they need from the outside world comes through the traits in
//! this crate:
//!
//! - [`Storage`]: one directory of offset-addressed [`File`]s and
//!   subdirectories. Writes are visible at once and durable only after
//!   [`File::sync`]; a created, renamed or removed entry is durable only after
//!   [`Storage::sync_dir`] of the directory that holds it.
//! - [`Clock`]: the time of day in milliseconds.
//!
//! Two implementations of [`Storage`] are provided:
//!
//! - [`OsStorage`] on `std::fs`, with `memmap2` for read-only views of files
//!   (the segment indexes);
//! - [`SimStorage`], in memory, seeded, with the durability model and the
//!   injectable faults described in [`sim`] and in `docs/FAULT-MODEL.md`.
//!
//! A parity test (`tests/parity.rs`) runs the same test bodies against both,
//! so the fake cannot drift from the real thing.

#![warn(missing_docs)]
// Lossy `as` casts are refused in the engines: each conversion either
// cannot lose (checked with `try_from`) or says why losing is intended.
#![cfg_attr(
    not(test),
    warn(clippy::cast_possible_truncation, clippy::cast_sign_loss)
)]

use std::fmt::Debug;
use std::io;
use std::ops::Deref;
use std::sync::Arc;

mod agreed;
mod clock;
mod os;
pub mod sim;
pub mod sync;

pub use agreed::{read_agreed, read_whole_file_agreed, AGREEING_READS, AGREEMENT_READS_MAX};
pub use clock::{Clock, ManualClock, SystemClock};
pub use os::OsStorage;
pub use sim::{CrashWeights, Faults, SimDisk, SimStorage};

/// The longest file or directory name a [`Storage`] accepts, in bytes.
pub const NAME_BYTES_MAX: usize = 255;

/// How [`Storage::open_file`] treats a missing or an existing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file; `NotFound` if it is missing.
    Existing,
    /// Open the file, creating it empty if it is missing.
    CreateIfMissing,
    /// Create a new empty file; `AlreadyExists` if one is there.
    CreateNew,
}

/// What a directory entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A subdirectory.
    Directory,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DirEntry {
    /// The entry's name (one path component).
    pub name: String,
    /// File or directory.
    pub kind: EntryKind,
}

/// One directory of files and subdirectories.
///
/// Every name is a single path component (see [`validate_name`]). Durability
/// follows POSIX as the strictest file systems implement it:
///
/// - data written to a file is durable only after [`File::sync`] of that file;
/// - a file or directory created, renamed or removed is durable only after
///   [`Storage::sync_dir`] of the directory holding the entry.
pub trait Storage: Send + Sync + Debug {
    /// Opens a file in this directory for reading and writing.
    fn open_file(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn File>>;

    /// Creates an empty subdirectory; `AlreadyExists` if the name is taken.
    fn create_dir(&self, name: &str) -> io::Result<()>;

    /// Opens an existing subdirectory as a storage of its own.
    fn open_dir(&self, name: &str) -> io::Result<Arc<dyn Storage>>;

    /// Lists the entries of this directory, sorted by name.
    fn list(&self) -> io::Result<Vec<DirEntry>>;

    /// Renames an entry of this directory, atomically replacing a file that
    /// already has the target name.
    fn rename(&self, source: &str, target: &str) -> io::Result<()>;

    /// Removes a file.
    fn remove_file(&self, name: &str) -> io::Result<()>;

    /// Removes an empty subdirectory.
    fn remove_dir(&self, name: &str) -> io::Result<()>;

    /// Makes the entries of this directory (creations, renames, removals)
    /// durable.
    fn sync_dir(&self) -> io::Result<()>;

    /// Whether an entry with this name exists.
    fn exists(&self, name: &str) -> io::Result<bool> {
        validate_name(name)?;
        Ok(self.list()?.iter().any(|entry| entry.name == name))
    }

    /// Opens the subdirectory `name`, creating it (and making its entry
    /// durable) if it is missing.
    fn open_or_create_dir(&self, name: &str) -> io::Result<Arc<dyn Storage>> {
        match self.create_dir(name) {
            Ok(()) => self.sync_dir()?,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
        self.open_dir(name)
    }

    /// Removes the subdirectory `name` and everything below it. The removal
    /// is durable only after [`Storage::sync_dir`].
    fn remove_dir_all(&self, name: &str) -> io::Result<()> {
        let child = self.open_dir(name)?;
        for entry in child.list()? {
            match entry.kind {
                EntryKind::File => child.remove_file(&entry.name)?,
                EntryKind::Directory => child.remove_dir_all(&entry.name)?,
            }
        }
        self.remove_dir(name)
    }
}

/// An open file: offset-addressed reads and writes, shared between threads.
pub trait File: Send + Sync + Debug {
    /// Reads into `buffer` from `offset`, returning the number of bytes read:
    /// `buffer.len()` unless the end of the file came first.
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Writes all of `data` at `offset`, extending the file if needed (a gap
    /// reads as zeros). The write is visible at once, durable after
    /// [`File::sync`].
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()>;

    /// Writes `parts` back to back at `offset`, as one write of their
    /// concatenation (one `pwritev` on a real file, one operation for the
    /// simulated disk's crash model).
    fn write_vectored_at(&self, parts: &[&[u8]], offset: u64) -> io::Result<()> {
        self.write_at(&parts.concat(), offset)
    }

    /// Reserves disk space for `length` bytes from `offset` without changing
    /// the file's length (Linux's `fallocate` with `FALLOC_FL_KEEP_SIZE`),
    /// so that later appends there do not allocate blocks one write at a
    /// time. A hint: an implementation may do nothing, and nothing about
    /// durability or the file's content changes.
    fn allocate(&self, offset: u64, length: u64) -> io::Result<()> {
        let _ = (offset, length);
        Ok(())
    }

    /// The current length of the file in bytes.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Truncates or extends (with zeros) the file to `length` bytes.
    fn set_len(&self, length: u64) -> io::Result<()>;

    /// Makes the file's data and length durable (`fdatasync`).
    ///
    /// After a failed sync the state of the file's unsynced writes is
    /// unknown: they may be lost even from what later reads return. Callers
    /// treat a failed sync as fatal for the file and recover from its last
    /// durable state.
    fn sync(&self) -> io::Result<()>;

    /// A read-only view of the whole file as it is now (memory-mapped where
    /// the implementation can). The file must not be shrunk while a view of
    /// it is alive; weir only maps files that it replaces by rename and never
    /// truncates.
    fn view(&self) -> io::Result<FileView>;

    /// Reads exactly `buffer.len()` bytes at `offset`; `UnexpectedEof` if the
    /// file is shorter.
    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()> {
        let read = self.read_at(buffer, offset)?;
        if read == buffer.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read {read} of {} bytes at offset {offset}: end of file",
                    buffer.len()
                ),
            ))
        }
    }
}

/// A read-only view of a file's bytes (see [`File::view`]).
pub struct FileView {
    inner: ViewInner,
}

enum ViewInner {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl FileView {
    /// A view of bytes held in memory.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Self {
            inner: ViewInner::Owned(bytes),
        }
    }

    pub(crate) fn from_mmap(map: memmap2::Mmap) -> Self {
        Self {
            inner: ViewInner::Mapped(map),
        }
    }

    /// Whether the bytes are memory-mapped rather than copied.
    pub fn is_mapped(&self) -> bool {
        matches!(self.inner, ViewInner::Mapped(_))
    }
}

impl Deref for FileView {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.inner {
            ViewInner::Mapped(map) => map,
            ViewInner::Owned(bytes) => bytes,
        }
    }
}

impl Debug for FileView {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FileView")
            .field("length", &self.len())
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

/// Checks that `name` is one path component that every [`Storage`] accepts:
/// not empty, not `.` or `..`, no `/` or NUL, at most [`NAME_BYTES_MAX`]
/// bytes.
pub fn validate_name(name: &str) -> io::Result<()> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name == "." || name == ".." {
        Some("is a relative directory")
    } else if name.contains('/') || name.contains('\0') {
        Some("contains '/' or NUL")
    } else if name.len() > NAME_BYTES_MAX {
        Some("is longer than NAME_BYTES_MAX")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("storage name {name:?} {problem}"),
        )),
    }
}

/// Writes `data` to `name` in `storage` so that after a crash the file holds
/// either its previous content or exactly `data`, never a mix: the bytes go
/// to a temporary file that is synced and then renamed over `name`, and the
/// directory is synced.
pub fn write_file_atomically(storage: &dyn Storage, name: &str, data: &[u8]) -> io::Result<()> {
    let temporary = format!("{name}.tmp");
    validate_name(&temporary)?;
    let file = storage.open_file(&temporary, OpenMode::CreateIfMissing)?;
    file.set_len(0)?;
    file.write_at(data, 0)?;
    file.sync()?;
    drop(file);
    storage.rename(&temporary, name)?;
    storage.sync_dir()
}

/// Reads the whole of file `name`, or `None` if it does not exist.
pub fn read_whole_file(storage: &dyn Storage, name: &str) -> io::Result<Option<Vec<u8>>> {
    let file = match storage.open_file(name, OpenMode::Existing) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let length = usize::try_from(file.len()?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large to read"))?;
    let mut bytes = vec![0; length];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(Some(bytes))
}

/// The crate's README, whose examples `cargo test --doc` compiles.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
