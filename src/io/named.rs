//! Names the operation and path of every I/O error a [`Vfs`] returns.
//!
//! The engine opens every file system through this wrapper, so an error
//! reads "cannot write /db/data.strata: No space left on device" whatever
//! the file system (the real one, a fault injector, an application's own)
//! put in it. An error that already names its path passes unchanged.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Vfs, VfsFile, VfsLock};
use crate::error::Result;

/// A [`Vfs`] whose errors name their operation and path.
pub(crate) struct Named(pub Arc<dyn Vfs>);

struct NamedFile {
    file: Box<dyn VfsFile>,
    path: PathBuf,
}

impl VfsFile for NamedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        (self.file.read_at(buf, offset)).map_err(|e| e.doing("read", &self.path))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        (self.file.write_at(buf, offset)).map_err(|e| e.doing("write", &self.path))
    }

    fn sync(&self) -> Result<()> {
        self.file.sync().map_err(|e| e.doing("sync", &self.path))
    }

    fn set_len(&self, len: u64) -> Result<()> {
        (self.file.set_len(len)).map_err(|e| e.doing("set the length of", &self.path))
    }

    fn len(&self) -> Result<u64> {
        self.file
            .len()
            .map_err(|e| e.doing("read the length of", &self.path))
    }
}

impl Named {
    fn file(&self, file: Box<dyn VfsFile>, path: &Path) -> Box<dyn VfsFile> {
        Box::new(NamedFile {
            file,
            path: path.to_path_buf(),
        })
    }
}

impl Vfs for Named {
    fn open(&self, path: &Path, create: bool) -> Result<Box<dyn VfsFile>> {
        let what = if create { "create or open" } else { "open" };
        let f = self.0.open(path, create).map_err(|e| e.doing(what, path))?;
        Ok(self.file(f, path))
    }

    fn open_read(&self, path: &Path) -> Result<Box<dyn VfsFile>> {
        let f = self.0.open_read(path).map_err(|e| e.doing("open", path))?;
        Ok(self.file(f, path))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.0
            .rename(from, to)
            .map_err(|e| e.doing("rename to", to))
    }

    fn remove(&self, path: &Path) -> Result<()> {
        self.0.remove(path).map_err(|e| e.doing("remove", path))
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.0
            .sync_dir(dir)
            .map_err(|e| e.doing("sync directory", dir))
    }

    fn lock(&self, path: &Path) -> Result<Box<dyn VfsLock>> {
        self.0.lock(path).map_err(|e| e.doing("lock", path))
    }

    fn create_dir_all(&self, dir: &Path) -> Result<()> {
        (self.0.create_dir_all(dir)).map_err(|e| e.doing("create directory", dir))
    }

    fn create_dir(&self, dir: &Path) -> Result<()> {
        (self.0.create_dir(dir)).map_err(|e| e.doing("create directory", dir))
    }

    fn is_symlink(&self, path: &Path) -> Result<bool> {
        self.0
            .is_symlink(path)
            .map_err(|e| e.doing("look up", path))
    }

    fn remove_dir(&self, dir: &Path) -> Result<()> {
        self.0
            .remove_dir(dir)
            .map_err(|e| e.doing("remove directory", dir))
    }

    fn list(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        self.0.list(dir).map_err(|e| e.doing("list directory", dir))
    }

    fn exists(&self, path: &Path) -> Result<bool> {
        self.0.exists(path).map_err(|e| e.doing("look up", path))
    }
}
