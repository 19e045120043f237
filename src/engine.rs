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
use crate::ids::Xid;
use crate::io::{Vfs, VfsLock};
use crate::options::{Options, RacePoint};
use crate::store::Store;
use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering};

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
    /// Where the last compaction's cut stopped short of its plan, for
    /// `compaction_stuck`.
    stuck: Mutex<Option<Stuck>>,
    checkpointing: Mutex<()>,
    vacuuming: Mutex<()>,
    _lock: Option<Box<dyn VfsLock>>,
}

/// A compaction whose cut stopped short of its plan, at a page that did
/// not move or for want of room. Another would stop there again while
/// nothing changed: a page no tuple names, left by a crash, never moves.
/// But the pages of a large value its writer has not named yet (it waits
/// for a row lock) move once the writer is done, and room runs out
/// for a row lock) move once the writer is done. So compaction tries
/// again once the file's length changed, or, if transactions were
/// running when it stopped, once every one of them has ended: at most
/// once per turnover of the running transactions while the cause stays,
/// and never while nothing runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stuck {
    /// The page count the cut left.
    pub count: u32,
    /// The oldest xid running when it stopped (`xmax` if none ran).
    pub xmin: Xid,
    /// Every xid at or above this had not started when it stopped.
    pub xmax: Xid,
}

impl Stuck {
    /// Whether a compaction of a file of `count` pages, with every xid
    /// below `xmin` finished, would stop as this one did.
    pub(crate) fn holds(&self, count: u32, xmin: Xid) -> bool {
        let waited_for = self.xmin < self.xmax;
        count == self.count && !(waited_for && xmin >= self.xmax)
    }
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
            stuck: Mutex::new(None),
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

    /// Where the last compaction ended short of its plan, if it did.
    pub(crate) fn compaction_stuck(&self) -> Option<Stuck> {
        *self.stuck.lock()
    }

    /// Records how the last compaction ended: `Some` if its cut stopped
    /// short.
    pub(crate) fn set_compaction_stuck(&self, stuck: Option<Stuck>) {
        *self.stuck.lock() = stuck;
    }

    /// Held for a checkpoint: one at a time.
    pub(crate) fn checkpoint_lock(&self) -> MutexGuard<'_, ()> {
        self.checkpointing.lock()
    }
}
