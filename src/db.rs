//! `Db`: opening, tables, transactions, checkpoints, and the background
//! worker.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sync::{AtomicU64, Condvar, Mutex, Ordering};

use crate::buffer::page::PageType;
use crate::buffer::BufferPool;
use crate::catalog;
use crate::control::{self, Control};
use crate::dir;
use crate::error::{Error, Result};
use crate::ids::{Lsn, PageId, Xid};
use crate::io::{RealFs, Vfs, VfsLock};
use crate::limits::TABLE_NAME_MAX;
use crate::mvcc::clog::{self, Clog};
use crate::mvcc::manager::TxnManager;
use crate::options::{Isolation, Options};
use crate::policy;
use crate::recovery;
use crate::store::meta::{self, Field, META};
use crate::store::Store;
use crate::txn::locks::LockWaits;
use crate::txn::prepare::PreparedTransaction;
use crate::txn::Transaction;
use crate::wal::record::{Kind, Op};
use crate::wal::Wal;

/// File name of the data file.
pub const DATA_FILE: &str = "data.strata";
/// Directory of log segments.
pub const WAL_DIR: &str = "wal";
/// Lock file.
pub const LOCK_FILE: &str = "LOCK";

// Identity of each open, to refuse tables of other databases (not a
// synchronization protocol, so plain std, also under loom).
static NEXT_DB_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A handle to a table; cheap to clone, valid for the `Db` that made it.
#[derive(Clone, Debug)]
pub struct Table {
    pub(crate) root: PageId,
    pub(crate) db: u64,
    name: Arc<str>,
}

impl Table {
    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How log records name the table (the `aux` of its put and delete
    /// records, FORMAT.md §3.3): its root page, fixed for its life.
    pub fn log_id(&self) -> u64 {
        self.root.0 as u64
    }
}

/// What a successful commit reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// The transaction's id (`Xid::NONE` if it wrote nothing).
    pub xid: Xid,
    /// LSN just past its commit record (0 if it wrote nothing). With
    /// `Durability::Immediate` the log is durable up to here.
    pub lsn: Lsn,
}

/// Figures from one vacuum pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VacuumStats {
    /// Keys examined.
    pub keys: u64,
    /// Versions removed.
    pub versions_removed: u64,
    /// Keys removed from the index (every version dead).
    pub keys_removed: u64,
    /// Overflow pages freed.
    pub overflow_pages_freed: u64,
    /// Emptied heap pages freed.
    pub heap_pages_freed: u64,
    /// Versions moved down the file to let its end go.
    pub versions_moved: u64,
    /// B+tree nodes moved down the file likewise.
    pub nodes_moved: u64,
    /// Sparse neighbouring leaves merged into one.
    pub leaves_merged: u64,
    /// Free pages cut off the end of the data file (the file itself is
    /// cut at the next checkpoint).
    pub pages_cut: u64,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) mgr: TxnManager,
    pub(crate) waits: LockWaits,
    pub(crate) ssi: crate::txn::ssi::SsiLock,
    /// The SSI key marks, taken by reads without the `ssi` lock.
    pub(crate) siread: Arc<crate::txn::ssi::KeyMarks>,
    /// Writers of versions vacuum removed that a serializable reader
    /// would have skipped.
    pub(crate) ledger: crate::mvcc::ledger::Ledger,
    /// Prepared transactions waiting for a decision.
    pub(crate) prepared: crate::txn::prepare::Registry,
    pub(crate) opts: Options,
    pub(crate) vfs: Arc<dyn Vfs>,
    pub(crate) dir: PathBuf,
    pub(crate) id: u64,
    tables: Mutex<HashMap<String, Table>>,
    /// Versions made dead since the last vacuum (updates, deletes, aborts).
    pub(crate) dead: AtomicU64,
    /// Keys the last vacuum pass examined.
    pub(crate) keys_last_vacuum: AtomicU64,
    checkpointing: Mutex<()>,
    pub(crate) vacuuming: Mutex<()>,
    /// Whether the final checkpoint was written (or tried).
    closed: Mutex<bool>,
    _lock: Option<Box<dyn VfsLock>>,
}

impl Inner {
    /// `Error::ReadOnly` for a database opened read-only.
    pub(crate) fn writable(&self) -> Result<()> {
        if self.opts.read_only {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }
}

struct Worker {
    stop: Mutex<bool>,
    wake: Condvar,
}

struct Shared {
    inner: Arc<Inner>,
    worker: Arc<Worker>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// An open database. Cheap to clone; all clones share one engine, which
/// closes (final checkpoint, lock released) when the last clone and the
/// last transaction are dropped.
#[derive(Clone)]
pub struct Db {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("dir", &self.shared.inner.dir)
            .finish()
    }
}

impl Db {
    /// Opens the database in `dir` with default options, creating it if
    /// `dir` is missing or empty (a directory holding other files is
    /// refused with `Error::NotEmpty`). `Options::create(false)` opens
    /// only an existing database. A failed open leaves no file behind.
    pub fn open(dir: impl AsRef<Path>) -> Result<Db> {
        Self::open_with(dir, Options::default())
    }

    /// Opens the database in `dir`, creating it as `Db::open` does unless
    /// `opts` say `create(false)` or `read_only(true)`.
    pub fn open_with(dir: impl AsRef<Path>, opts: Options) -> Result<Db> {
        Self::open_vfs(Arc::new(RealFs), dir.as_ref(), opts)
    }

    /// Opens the database through a custom file system (fault injection).
    /// Its I/O errors are reported naming their operation and path.
    pub fn open_vfs(vfs: Arc<dyn Vfs>, dir: &Path, opts: Options) -> Result<Db> {
        let vfs: Arc<dyn Vfs> = Arc::new(crate::io::Named(vfs));
        let (inner, replayed) = open_inner(vfs, dir, opts)?;
        let inner = Arc::new(inner);
        let worker = Arc::new(Worker {
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let thread = if inner.opts.background && !inner.opts.read_only {
            let (inner, worker) = (inner.clone(), worker.clone());
            let spawned = std::thread::Builder::new()
                .name("strata-maintenance".into())
                .spawn(move || maintenance(&inner, &worker, replayed))?;
            Some(spawned)
        } else {
            None
        };
        Ok(Db {
            shared: Arc::new(Shared {
                inner,
                worker,
                thread: Mutex::new(thread),
            }),
        })
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.shared.inner
    }

    /// The table called `name`, created (durably) if it does not exist.
    pub fn table(&self, name: &str) -> Result<Table> {
        let inner = self.inner();
        if name.is_empty() || name.len() > TABLE_NAME_MAX {
            return Err(Error::InvalidTableName);
        }
        let mut tables = inner.tables.lock();
        if let Some(t) = tables.get(name) {
            return Ok(t.clone());
        }
        let existing = catalog::lookup(&mut inner.store.read().view, name)?;
        let root = match existing {
            Some(root) => root,
            None => catalog::create(&inner.store, name)?,
        };
        let t = Table {
            root,
            db: inner.id,
            name: name.into(),
        };
        tables.insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// Names of all tables.
    pub fn table_names(&self) -> Result<Vec<String>> {
        let list = catalog::list(&mut self.inner().store.read().view)?;
        Ok(list.into_iter().map(|(name, _)| name).collect())
    }

    /// Begins a transaction at the default level, `Isolation::Serializable`.
    pub fn begin(&self) -> Result<Transaction> {
        self.begin_with(Isolation::default())
    }

    /// Begins a read-only serializable transaction: writes fail with
    /// `Error::ReadOnlyTransaction`, and serializability is judged by the
    /// read-only rule, which aborts fewer transactions.
    pub fn begin_read(&self) -> Result<Transaction> {
        Transaction::begin_read(self.clone())
    }

    /// Begins a transaction at `level`.
    pub fn begin_with(&self, level: Isolation) -> Result<Transaction> {
        Transaction::begin(self.clone(), level)
    }

    /// Commits the prepared transaction `gid` (two-phase commit, phase
    /// two), durably whatever the durability setting. `UnknownTransaction`
    /// if no transaction waits under that id (never prepared, or decided);
    /// `CommitOutcomeUnknown` as for `Transaction::commit`.
    pub fn commit_prepared(&self, gid: &str) -> Result<()> {
        crate::txn::prepare::decide(self.inner(), gid, true)
    }

    /// Rolls back the prepared transaction `gid`, durably.
    /// `UnknownTransaction` as for `commit_prepared`.
    pub fn rollback_prepared(&self, gid: &str) -> Result<()> {
        crate::txn::prepare::decide(self.inner(), gid, false)
    }

    /// The prepared transactions waiting for a decision (in doubt), in gid
    /// order. They hold their row locks until decided, across restarts:
    /// the blocking window two-phase commit is known for.
    pub fn prepared_transactions(&self) -> Result<Vec<PreparedTransaction>> {
        Ok(self.inner().prepared.list())
    }

    /// Writes every dirty page, records a new redo point, drops log
    /// segments no longer needed and cuts the data file back to the pages
    /// in use (after a vacuum freed its end).
    pub fn checkpoint(&self) -> Result<()> {
        checkpoint(self.inner())
    }

    /// Removes versions no transaction can see any more and returns their
    /// space. When that leaves the file sparse, it merges sparse leaves,
    /// moves live rows and nodes down the file and frees its end, which the
    /// next checkpoint cuts off.
    pub fn vacuum(&self) -> Result<VacuumStats> {
        crate::vacuum::run(self.inner())
    }

    /// Walks every page, tuple and index entry and verifies them (see
    /// `IntegrityReport`). Writers wait while it runs; readers do not.
    pub fn check_integrity(&self) -> Result<crate::IntegrityReport> {
        self.check_integrity_with(&mut |_, _| {})
    }

    /// `check_integrity`, telling `progress` (pages reached, page count)
    /// as it goes, for progress bars.
    pub fn check_integrity_with(
        &self,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<crate::IntegrityReport> {
        let inner = self.inner();
        let r = inner.store.read();
        crate::integrity::check(
            r.view,
            inner.store.pool.path().to_path_buf(),
            inner.mgr.high_water(),
            progress,
        )
    }

    /// Figures about the database: sizes, log range, tables with their
    /// rows, versions and dead versions, prepared transactions. Walks every
    /// table (a full read); writers are not blocked.
    pub fn stats(&self) -> Result<crate::Stats> {
        crate::stat::collect(self.inner())
    }

    /// Why the database was poisoned (the first failed write or fsync), if it was.
    pub fn poison_cause(&self) -> Option<String> {
        self.inner().store.wal.poison_cause()
    }

    /// Log fsyncs so far (commits per fsync shows group commit at work).
    pub fn wal_syncs(&self) -> u64 {
        self.inner().store.wal.syncs()
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner().dir
    }

    /// Closes the database: stops the background worker, writes a final
    /// checkpoint and lets go of the directory lock, reporting what went
    /// wrong (dropping the last handle does the same silently, leaving a
    /// failure to recovery at the next open). A poisoned database reports
    /// the error that poisoned it. Other clones of this `Db`, or transactions
    /// (which hold one), keep it open: then `Error::InUse`, and it closes
    /// when the last of them is dropped.
    pub fn close(self) -> Result<()> {
        let path = self.path().to_path_buf();
        match Arc::try_unwrap(self.shared) {
            Ok(mut shared) => shared.close(),
            Err(_) => Err(Error::InUse { path }),
        }
    }
}

impl Shared {
    /// Stops the worker and writes the final checkpoint (once).
    fn close(&mut self) -> Result<()> {
        *self.worker.stop.lock() = true;
        self.worker.wake.notify_all();
        if let Some(t) = self.thread.lock().take() {
            // A worker that panicked did no harm the log cannot repair.
            let _ = t.join();
        }
        self.final_checkpoint()
    }

    fn final_checkpoint(&mut self) -> Result<()> {
        let inner = &self.inner;
        if inner.opts.read_only || std::mem::replace(&mut *inner.closed.lock(), true) {
            return Ok(());
        }
        match checkpoint(inner) {
            // What poisoned the database says more than that it is.
            Err(Error::Poisoned) => Err(inner.store.wal.poison_error().unwrap_or(Error::Poisoned)),
            r => r,
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Best effort: recovery at the next open covers a failure, and
        // `Db::close` is how a caller learns of one.
        let _ = self.close();
    }
}

/// Opens (recovering if need be) a database; also whether the log was
/// replayed. A database this open was creating is removed again if the
/// open fails.
fn open_inner(vfs: Arc<dyn Vfs>, dir: &Path, opts: Options) -> Result<(Inner, bool)> {
    let ((lock, control, data), created) = if opts.read_only {
        (dir::open_read_only(vfs.as_ref(), dir)?, None)
    } else {
        dir::open_writable(vfs.as_ref(), dir, opts.create)?
    };
    match recover(vfs.clone(), dir, opts, control, data) {
        Ok((mut inner, replayed)) => {
            inner._lock = lock;
            Ok((inner, replayed))
        }
        Err(e) => {
            if let Some(c) = created {
                // Under the lock; best effort, the open's error is the news.
                let _ = c.undo(vfs.as_ref());
            }
            drop(lock);
            Err(e)
        }
    }
}

/// `open_inner` once the files are open: recovery, and the first
/// checkpoint of a new database.
fn recover(
    vfs: Arc<dyn Vfs>,
    dir: &Path,
    opts: Options,
    control: Option<Control>,
    data: Box<dyn crate::io::VfsFile>,
) -> Result<(Inner, bool)> {
    let read_only = opts.read_only;
    let (wal_dir, data_path) = (dir.join(WAL_DIR), dir.join(DATA_FILE));
    let mut pool = BufferPool::new(data, data_path, opts.cache_size)?;
    if read_only {
        pool = pool.read_only();
    }
    let (redo, next_xid, end, replayed) = match control {
        Some(c) => {
            let r = recovery::replay(vfs.as_ref(), &wal_dir, c.redo, &pool, read_only)?;
            (c.redo, c.next_xid.max(r.next_xid), r.end, r.records > 0)
        }
        None => (Lsn(0), Xid::FIRST, Lsn(0), false),
    };
    let wal = if read_only {
        Wal::read_only(vfs.clone(), &wal_dir, end)?
    } else {
        Wal::resume(vfs.clone(), &wal_dir, end)?.with_segment_size(opts.wal_segment_size)
    };
    let wal = Arc::new(wal);
    pool.attach_wal(wal.clone());
    let store = Store::new(pool, wal, redo);
    if control.is_none() {
        init_pages(&store)?;
    }
    let bits = {
        let mut r = store.read();
        let m = r.view.read_meta()?;
        meta::validate(&m)?;
        clog::load(&mut r.view, PageId(meta::get(&m, Field::ClogDir)), next_xid)?
    };
    let mgr = TxnManager::new(next_xid, Clog::new(bits, next_xid));
    let ssi = crate::txn::ssi::Ssi::default();
    let inner = Inner {
        store,
        mgr,
        waits: LockWaits::default(),
        siread: ssi.marks(),
        ledger: Default::default(),
        ssi: crate::txn::ssi::SsiLock::new(ssi),
        prepared: Default::default(),
        opts,
        vfs,
        dir: dir.to_path_buf(),
        id: NEXT_DB_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        tables: Mutex::new(HashMap::new()),
        dead: AtomicU64::new(0),
        keys_last_vacuum: AtomicU64::new(0),
        checkpointing: Mutex::new(()),
        vacuuming: Mutex::new(()),
        closed: Mutex::new(false),
        _lock: None,
    };
    crate::txn::prepare::adopt(&inner)?;
    // After a replay, the maintenance thread checkpoints at its first
    // turn, and the database is open meanwhile: until then the log it
    // replayed stays, and a crash replays it again. Without that thread,
    // here and now.
    let background = inner.opts.background;
    if !read_only && (control.is_none() || (replayed && !background)) {
        checkpoint(&inner)?;
    }
    Ok((inner, replayed))
}

fn init_pages(store: &Store) -> Result<()> {
    let mut w = store.write();
    meta::init(w.mtr.new_page(META, PageType::Meta)?);
    catalog::init(&mut w.mtr)?;
    crate::txn::prepare::init(&mut w.mtr)?;
    if let Some(lsn) = w.commit(Kind::Pages, Op::Init as u8, Xid::NONE)? {
        store.wal.flush(lsn, true)?;
    }
    Ok(())
}

pub(crate) fn checkpoint(inner: &Inner) -> Result<()> {
    inner.writable()?;
    let _one = inner.checkpointing.lock();
    let store = &inner.store;
    if store.wal.is_poisoned() {
        return Err(Error::Poisoned);
    }
    let redo = store.begin_checkpoint()?;
    // LSN 0 in the control file marks an unfinished creation.
    assert!(
        redo > Lsn(0),
        "a checkpoint's redo point is past the log's first header"
    );
    let next_xid = inner.mgr.high_water();
    store.pool.flush_all()?;
    store.wal.flush(redo, true)?;
    let r = control::write(inner.vfs.as_ref(), &inner.dir, &Control { redo, next_xid });
    store.wal.fail(r)?;
    store.wal.recycle(redo)?;
    store.cut_file()
}

/// The background thread: log flushes, checkpoints (the first at once
/// when the open replayed the log), vacuum.
fn maintenance(inner: &Inner, worker: &Worker, replayed: bool) {
    let tick = if inner.opts.durability == crate::Durability::Eventual {
        inner.opts.flush_interval
    } else {
        Duration::from_millis(100)
    };
    let mut last_checkpoint = Instant::now();
    let mut checkpoint_due = replayed;
    loop {
        {
            let mut stop = worker.stop.lock();
            if *stop {
                return;
            }
            worker.wake.wait_for(&mut stop, tick);
            if *stop {
                return;
            }
        }
        let wal = &inner.store.wal;
        if wal.is_poisoned() {
            continue;
        }
        // Errors here need no handling: a failed fsync or write has
        // poisoned the database, and the next foreground call reports it.
        let _ = wal.flush(wal.end(), true);
        let since_redo = wal.end().0.saturating_sub(inner.store.redo().0);
        let opts = &inner.opts;
        if checkpoint_due
            || policy::should_checkpoint(
                last_checkpoint.elapsed(),
                opts.checkpoint_interval,
                since_redo,
                opts.checkpoint_wal_bytes,
            )
        {
            let _ = checkpoint(inner);
            checkpoint_due = false;
            last_checkpoint = Instant::now();
        }
        let dead = inner.dead.load(Ordering::Relaxed);
        let keys = inner.keys_last_vacuum.load(Ordering::Relaxed);
        if policy::should_vacuum(dead, keys, opts.vacuum_threshold) {
            let _ = crate::vacuum::run(inner);
        }
    }
}
