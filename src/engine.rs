//! The engine a database runs on, beneath its transactions: the page
//! store (cache, log and latch), the options it was opened with, its file
//! system and directory, and what its maintenance keeps between passes —
//! the count of dead versions that sets off vacuum, and the locks that let
//! one checkpoint and one vacuum pass run at a time.
//!
//! The transaction system (`txn::TxnSystem`) sits on top of it; the two
//! together are what a `Db` and its transactions share (`txn::Core`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::io::{Vfs, VfsLock};
use crate::options::{Options, RacePoint};
use crate::store::Store;
use crate::sync::{AtomicU32, AtomicU64, Mutex, MutexGuard, Ordering};

// Identity of each open, to refuse tables of other databases (not a
// synchronization protocol, so plain std, also under loom).
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The storage engine of one open database.
pub(crate) struct Engine {
    store: Store,
    opts: Options,
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    id: u64,
    /// Versions made dead since the last vacuum (updates, deletes, aborts).
    dead: AtomicU64,
    /// Keys the last vacuum pass examined.
    keys_last_vacuum: AtomicU64,
    /// The page count at which the last compaction's cut stopped short
    /// of its plan (0: it did not), for `compaction_stuck`.
    stuck: AtomicU32,
    checkpointing: Mutex<()>,
    vacuuming: Mutex<()>,
    _lock: Option<Box<dyn VfsLock>>,
}

impl Engine {
    /// The engine over `store`, opened in `dir`.
    pub(crate) fn new(store: Store, opts: Options, vfs: Arc<dyn Vfs>, dir: &Path) -> Engine {
        Engine {
            store,
            opts,
            vfs,
            dir: dir.to_path_buf(),
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            dead: AtomicU64::new(0),
            keys_last_vacuum: AtomicU64::new(0),
            stuck: AtomicU32::new(0),
            checkpointing: Mutex::new(()),
            vacuuming: Mutex::new(()),
            _lock: None,
        }
    }

    /// Keeps the directory `lock` for as long as the engine lives (a
    /// failed open lets it go only after removing what it created).
    pub(crate) fn hold(&mut self, lock: Option<Box<dyn VfsLock>>) {
        self._lock = lock;
    }

    /// Pages, log and latch.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The options the database was opened with.
    pub(crate) fn opts(&self) -> &Options {
        &self.opts
    }

    /// Runs the test hook at `point`, if one is set.
    pub(crate) fn race(&self, point: RacePoint) {
        self.opts.race(point);
    }

    /// The file system.
    pub(crate) fn vfs(&self) -> &dyn Vfs {
        self.vfs.as_ref()
    }

    /// The database directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// This open's identity: tables and transactions carry it.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// `Error::ReadOnly` for a database opened read-only.
    pub(crate) fn writable(&self) -> Result<()> {
        if self.opts.read_only {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }

    /// Counts versions a finished transaction left dead.
    pub(crate) fn note_dead(&self, versions: u64) {
        self.dead.fetch_add(versions, Ordering::Relaxed);
    }

    /// Versions made dead since the last vacuum pass began, and the keys
    /// that pass examined: what the vacuum policy decides on.
    pub(crate) fn vacuum_due(&self) -> (u64, u64) {
        (
            self.dead.load(Ordering::Relaxed),
            self.keys_last_vacuum.load(Ordering::Relaxed),
        )
    }

    /// Held for a vacuum pass: one at a time. Counting dead versions
    /// starts again from the pass's start.
    pub(crate) fn vacuum_pass(&self) -> MutexGuard<'_, ()> {
        let one = self.vacuuming.lock();
        self.dead.store(0, Ordering::Relaxed);
        one
    }

    /// Records how many keys a finished vacuum pass examined.
    pub(crate) fn vacuumed(&self, keys: u64) {
        self.keys_last_vacuum.store(keys, Ordering::Relaxed);
    }

    /// The page count at which the last compaction ended short of its
    /// plan, its cut stopped by a page that did not move: a compaction of
    /// a file still that long would stop there again (a page no tuple
    /// names, left by a crash, is such a page). Any change of the count
    /// lets compaction try again.
    pub(crate) fn compaction_stuck(&self) -> Option<u32> {
        Some(self.stuck.load(Ordering::Relaxed)).filter(|&c| c != 0)
    }

    /// Records how the last compaction ended: `Some(count)` if its cut
    /// stopped short at a file of `count` pages.
    pub(crate) fn set_compaction_stuck(&self, count: Option<u32>) {
        self.stuck.store(count.unwrap_or(0), Ordering::Relaxed);
    }

    /// Held for a checkpoint: one at a time.
    pub(crate) fn checkpoint_lock(&self) -> MutexGuard<'_, ()> {
        self.checkpointing.lock()
    }
}
