//! [`OsStorage`]: the real file system through `std::fs`.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{validate_name, DirEntry, EntryKind, File, FileView, OpenMode, Storage};

/// A directory of the real file system.
///
/// Files are opened read-write; [`File::sync`] is `fdatasync`, and
/// [`Storage::sync_dir`] is `fsync` of the directory. [`File::view`]
/// memory-maps the file.
#[derive(Clone, Debug)]
pub struct OsStorage {
    path: PathBuf,
}

impl OsStorage {
    /// Opens the directory at `path`, creating it (and its parents) if it is
    /// missing.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn child(&self, name: &str) -> io::Result<PathBuf> {
        validate_name(name)?;
        Ok(self.path.join(name))
    }
}

impl Storage for OsStorage {
    fn open_file(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn File>> {
        let path = self.child(name)?;
        let mut options = fs::OpenOptions::new();
        options.read(true).write(true);
        match mode {
            OpenMode::Existing => {}
            OpenMode::CreateIfMissing => {
                options.create(true);
            }
            OpenMode::CreateNew => {
                options.create_new(true);
            }
        }
        let file = options.open(&path)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", path.display()),
            ));
        }
        Ok(Arc::new(OsFile { file, path }))
    }

    fn create_dir(&self, name: &str) -> io::Result<()> {
        fs::create_dir(self.child(name)?)
    }

    fn open_dir(&self, name: &str) -> io::Result<Arc<dyn Storage>> {
        let path = self.child(name)?;
        if !fs::metadata(&path)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", path.display()),
            ));
        }
        Ok(Arc::new(OsStorage { path }))
    }

    fn list(&self) -> io::Result<Vec<DirEntry>> {
        let mut entries = Vec::new();
        for entry in fs::read_dir(&self.path)? {
            let entry = entry?;
            let file_type = entry.file_type()?;
            let kind = if file_type.is_file() {
                EntryKind::File
            } else if file_type.is_dir() {
                EntryKind::Directory
            } else {
                // Symbolic links, sockets and the like are not ours.
                continue;
            };
            let Ok(name) = entry.file_name().into_string() else {
                // weir never creates names that are not UTF-8.
                continue;
            };
            entries.push(DirEntry { name, kind });
        }
        entries.sort();
        Ok(entries)
    }

    fn rename(&self, source: &str, target: &str) -> io::Result<()> {
        fs::rename(self.child(source)?, self.child(target)?)
    }

    fn remove_file(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.child(name)?)
    }

    fn remove_dir(&self, name: &str) -> io::Result<()> {
        fs::remove_dir(self.child(name)?)
    }

    fn sync_dir(&self) -> io::Result<()> {
        fs::File::open(&self.path)?.sync_all()
    }
}

/// The most slices one `pwritev` call takes (Linux's `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

#[derive(Debug)]
struct OsFile {
    file: fs::File,
    /// For `Debug` output, so errors and traces name the file.
    #[allow(dead_code)]
    path: PathBuf,
}

impl File for OsFile {
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buffer.len() {
            let position = offset + done as u64;
            match self.file.read_at(&mut buffer[done..], position) {
                Ok(0) => break,
                Ok(read) => done += read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(done)
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn write_vectored_at(&self, parts: &[&[u8]], offset: u64) -> io::Result<()> {
        let mut slices: Vec<io::IoSlice<'_>> =
            parts.iter().map(|part| io::IoSlice::new(part)).collect();
        let mut remaining: &mut [io::IoSlice<'_>] = &mut slices;
        let mut position = offset;
        while !remaining.is_empty() {
            let count = remaining.len().min(IOV_MAX);
            let offset = libc::off_t::try_from(position)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
            // SAFETY: `IoSlice` is guaranteed to be ABI-compatible with
            // `iovec` on Unix, the pointer and count describe `count` live
            // slices borrowed for the duration of the call, and the file
            // descriptor is owned by `self.file`, which outlives the call.
            #[allow(unsafe_code)]
            let written = unsafe {
                libc::pwritev(
                    self.file.as_raw_fd(),
                    remaining.as_ptr().cast::<libc::iovec>(),
                    libc::c_int::try_from(count).expect("at most IOV_MAX slices"),
                    offset,
                )
            };
            if written < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            if written == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "pwritev wrote nothing",
                ));
            }
            // Not negative: checked above.
            let written = usize::try_from(written).expect("a positive byte count");
            position += written as u64;
            io::IoSlice::advance_slices(&mut remaining, written);
        }
        Ok(())
    }

    fn allocate(&self, offset: u64, length: u64) -> io::Result<()> {
        let (Ok(offset), Ok(length)) =
            (libc::off_t::try_from(offset), libc::off_t::try_from(length))
        else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range too large",
            ));
        };
        // SAFETY: fallocate takes a file descriptor that `self.file` owns for
        // the duration of the call, and integers; it touches no memory of
        // this process.
        #[allow(unsafe_code)]
        let result = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                offset,
                length,
            )
        };
        if result == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            // A file system without fallocate: the hint is ignored.
            Some(libc::EOPNOTSUPP) => Ok(()),
            _ => Err(error),
        }
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, length: u64) -> io::Result<()> {
        self.file.set_len(length)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn view(&self) -> io::Result<FileView> {
        if self.len()? == 0 {
            // Mapping an empty file fails on some platforms; there is
            // nothing to map anyway.
            return Ok(FileView::from_vec(Vec::new()));
        }
        // SAFETY: the mapping is read-only and private to this process.
        // Mapped files are undefined behaviour only if the file is shrunk or
        // modified while mapped. weir maps only index files that it writes
        // whole, under a temporary name, and then renames into place; it
        // never writes to or truncates a file that has been renamed into
        // place, so the inode behind a live mapping does not change. An
        // operator editing the data directory of a running node is outside
        // this contract, as with every storage engine.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::MmapOptions::new().map(&self.file)? };
        Ok(FileView::from_mmap(map))
    }
}
