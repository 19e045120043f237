//! The operating system's file system.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{Vfs, VfsFile, VfsLock};
use crate::error::{Error, Result};

/// [`Vfs`] over `std::fs` (Unix).
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

struct RealFile(File);

impl VfsFile for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.0.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        buf[done..].fill(0);
        Ok(done)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        Ok(self.0.write_all_at(buf, offset)?)
    }

    fn sync(&self) -> Result<()> {
        Ok(self.0.sync_data()?)
    }

    fn set_len(&self, len: u64) -> Result<()> {
        Ok(self.0.set_len(len)?)
    }

    fn len(&self) -> Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

struct RealLock {
    _file: File,
}

impl VfsLock for RealLock {}

impl Vfs for RealFs {
    fn open(&self, path: &Path, create: bool) -> Result<Box<dyn VfsFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Box::new(RealFile(f)))
    }

    fn open_read(&self, path: &Path) -> Result<Box<dyn VfsFile>> {
        Ok(Box::new(RealFile(File::open(path)?)))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        Ok(fs::rename(from, to)?)
    }

    fn remove(&self, path: &Path) -> Result<()> {
        Ok(fs::remove_file(path)?)
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        Ok(File::open(dir)?.sync_all()?)
    }

    fn lock(&self, path: &Path) -> Result<Box<dyn VfsLock>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // flock(2): held per open file description, so a second open in the
        // same process conflicts too, and the kernel drops it with the process.
        match f.try_lock() {
            Ok(()) => Ok(Box::new(RealLock { _file: f })),
            Err(TryLockError::WouldBlock) => Err(Error::Locked {
                path: path.parent().unwrap_or(path).to_path_buf(),
            }),
            Err(TryLockError::Error(e)) => Err(e.into()),
        }
    }

    fn create_dir_all(&self, dir: &Path) -> Result<()> {
        Ok(fs::create_dir_all(dir)?)
    }

    fn create_dir(&self, dir: &Path) -> Result<()> {
        Ok(fs::create_dir(dir)?)
    }

    fn is_symlink(&self, path: &Path) -> Result<bool> {
        match fs::symlink_metadata(path) {
            Ok(m) => Ok(m.file_type().is_symlink()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn remove_dir(&self, dir: &Path) -> Result<()> {
        Ok(fs::remove_dir(dir)?)
    }

    fn list(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            out.push(entry?.path());
        }
        out.sort();
        Ok(out)
    }

    fn exists(&self, path: &Path) -> Result<bool> {
        Ok(path.try_exists()?)
    }
}
