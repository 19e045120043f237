//! All file-system access goes through [`Vfs`], so tests can inject faults
//! and simulate crashes (a `FaultFs` plugs in here) without the engine
//! knowing.
//!
//! The trait is deliberately small: positional reads and writes, sync,
//! truncate/extend, rename, remove, directory sync and an advisory lock.
//! Nothing in it buffers; buffering policy belongs to the WAL and the page
//! cache.

#[cfg(feature = "fault-injection")]
mod fault;
mod named;
mod real;

#[cfg(feature = "fault-injection")]
pub use fault::{FaultFs, FaultKind, Hold, OpKind, OpMatch};
pub(crate) use named::Named;
pub use real::RealFs;

use std::path::{Path, PathBuf};

use crate::error::Result;

/// An open file.
pub trait VfsFile: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset`, or returns the number of
    /// bytes read before end of file (the rest of `buf` is zeroed).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;
    /// Makes every completed write durable (fsync).
    fn sync(&self) -> Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> Result<()>;
    /// Current length in bytes.
    fn len(&self) -> Result<u64>;
    /// Whether the file holds no bytes.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// A held directory lock; dropping it releases the lock.
pub trait VfsLock: Send + Sync {}

/// The file system strata runs on.
pub trait Vfs: Send + Sync {
    /// Opens a file for reading and writing, creating it if `create`.
    fn open(&self, path: &Path, create: bool) -> Result<Box<dyn VfsFile>>;
    /// Opens an existing file for reading only (writes through the handle
    /// fail).
    fn open_read(&self, path: &Path) -> Result<Box<dyn VfsFile>> {
        self.open(path, false)
    }
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> Result<()>;
    /// Makes directory entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> Result<()>;
    /// Takes an exclusive lock on `path`, failing with `Error::Locked` if held.
    fn lock(&self, path: &Path) -> Result<Box<dyn VfsLock>>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> Result<()>;
    /// Creates one directory, failing (`ErrorKind::AlreadyExists`) if
    /// the name is taken: two creators cannot both succeed. The default
    /// looks first, which a file system with an exclusive create should
    /// replace.
    fn create_dir(&self, dir: &Path) -> Result<()> {
        if self.exists(dir)? {
            return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists).into());
        }
        self.create_dir_all(dir)
    }
    /// Whether `path` is a symbolic link (not followed). The default: no
    /// file system of its own has them.
    fn is_symlink(&self, path: &Path) -> Result<bool> {
        let _ = path;
        Ok(false)
    }
    /// Removes an empty directory. Only a failed creation of a database
    /// removes one (the directory it made); a file system without this
    /// leaves the empty directory behind.
    fn remove_dir(&self, dir: &Path) -> Result<()> {
        let _ = dir;
        Ok(())
    }
    /// Names of the files in a directory.
    fn list(&self, dir: &Path) -> Result<Vec<PathBuf>>;
    /// Whether a file exists.
    fn exists(&self, path: &Path) -> Result<bool>;
}
