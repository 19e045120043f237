//! `Db`: the public front of a database — opening it, its tables, and
//! the doors to transactions, maintenance and reports, each a call into
//! the layer that does the work.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::sync::Mutex;

use crate::buffer::BufferPool;
use crate::catalog;
use crate::catalog::Table;
use crate::clock::Timestamp;
use crate::control::Control;
use crate::dir::{self, DATA_FILE, WAL_DIR};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ids::{Lsn, PageId, Xid};
use crate::io::{RealFs, Vfs};
use crate::maintenance::vacuum::{self, VacuumStats};
use crate::maintenance::{checkpoint, worker, worker::Worker};
use crate::mvcc::clog::{self, Clog};
use crate::mvcc::manager::TxnManager;
use crate::options::{Isolation, Options};
use crate::page::PageType;
use crate::recovery;
use crate::redo::record::{Kind, Op};
use crate::store::meta::{self, Field, META};
use crate::store::Store;
use crate::txn::prepare::PreparedTransaction;
use crate::txn::{Core, Transaction, TxnSystem};
use crate::wal::Wal;

/// Table handles a `Db` keeps to hand out again.
const TABLE_HANDLES_CACHED: usize = 4096;

/// What every clone of a `Db` shares. Transactions hold it too, so the
/// database closes (the worker stopped, a final checkpoint) only once the
/// last handle and the last transaction are gone.
struct Shared {
    core: Arc<Core>,
    /// Table handles already made, by name.
    tables: Mutex<HashMap<String, Table>>,
    /// The database directory, as table handles carry it.
    dir: Arc<Path>,
    worker: Arc<Worker>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Whether the final checkpoint was written (or tried).
    closed: bool,
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
            .field("dir", &self.shared.core.engine.dir())
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
        let span = tracing::info_span!(
            target: "strata::db",
            "open",
            dir = %dir.display(),
            read_only = opts.read_only,
        );
        let _in = span.enter();
        let vfs: Arc<dyn Vfs> = Arc::new(crate::io::Named(vfs));
        let (inner, replayed) = open_inner(vfs, dir, opts)?;
        wait_out_recovered_commits(&inner)?;
        let inner = Arc::new(inner);
        let worker = Arc::new(Worker::new());
        let thread = if inner.engine.opts().background && !inner.engine.opts().read_only {
            let (inner, worker) = (inner.clone(), worker.clone());
            // The worker reports to the subscriber in force where the
            // database was opened (a scoped one too, not only the global).
            let dispatch = tracing::dispatcher::get_default(|d| d.clone());
            let spawned = std::thread::Builder::new()
                .name("strata-maintenance".into())
                .spawn(move || {
                    let _report = tracing::dispatcher::set_default(&dispatch);
                    worker::run(&inner, &worker, replayed)
                })?;
            Some(spawned)
        } else {
            None
        };
        Ok(Db {
            shared: Arc::new(Shared {
                core: inner,
                tables: Mutex::new(HashMap::new()),
                dir: Arc::from(dir),
                worker,
                closed: false,
                thread: Mutex::new(thread),
            }),
        })
    }

    pub(crate) fn core(&self) -> &Core {
        &self.shared.core
    }

    /// The shared core, for what outlives a borrow of this handle.
    pub(crate) fn core_arc(&self) -> Arc<Core> {
        self.shared.core.clone()
    }

    /// What a transaction holds to keep this database open.
    pub(crate) fn holder(&self) -> Arc<dyn Send + Sync> {
        self.shared.clone()
    }

    /// This open's identity.
    #[cfg(feature = "twopc")]
    pub(crate) fn id(&self) -> u64 {
        self.core().engine.id()
    }

    /// A handle to the table called `name`. It creates nothing: the
    /// table comes into being with the first committed write to it (a
    /// `put` through a read-write transaction), atomically with that
    /// transaction's data. Until then a read-write transaction reads it
    /// as empty, and a read-only one (`begin_read`, a read-only open) gets
    /// `Error::NoSuchTable`. Handles name tables: each transaction
    /// resolves the name against its own snapshot.
    ///
    /// `InvalidTableName` unless `name` is 1..=255 bytes.
    pub fn table(&self, name: &str) -> Result<Table> {
        crate::txn::valid_name(name)?;
        let mut tables = self.shared.tables.lock();
        if let Some(t) = tables.get(name) {
            return Ok(t.clone());
        }
        let engine = &self.core().engine;
        let t = Table::new(engine.id(), self.shared.dir.clone(), name);
        // Handles are cheap, but a loop over generated names should not
        // grow this map without bound: it only saves an allocation.
        if tables.len() < TABLE_HANDLES_CACHED {
            tables.insert(name.to_string(), t.clone());
        }
        Ok(t)
    }

    /// Names of the tables that exist now (created by committed
    /// transactions and not dropped by one), in name order.
    pub fn table_names(&self) -> Result<Vec<String>> {
        let core = self.core();
        let snap = core.txns.manager().snapshot();
        let list = catalog::list(
            &mut core.engine.store().read().view,
            core.catalog,
            &snap,
            core.txns.manager().clog(),
        )?;
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
        Transaction::begin_read(self.shared.core.clone(), self.holder())
    }

    /// Begins a read-only transaction that sees exactly the commits
    /// stamped at or before `ts` ([`CommitInfo::ts`](crate::CommitInfo)):
    /// the same answer every time it is asked, here and on any database
    /// that applied the same commits at the same timestamps. Never
    /// aborted by a conflict, and it holds back no writer.
    ///
    /// A `ts` not yet safe waits: until the clock's `earliest` has passed
    /// it, and until every commit that may still land at or below it has
    /// finished (one in its fsync or commit wait, or a prepared
    /// transaction whose prepare timestamp is at or below `ts`). From then
    /// on every new commit here takes a timestamp above `ts`. The wait is
    /// bounded by the lock timeout: `TimestampRefused` if the clock is
    /// further behind `ts` than that, `LockTimeout` if a prepared
    /// transaction stays undecided that long.
    ///
    /// Errors: `SnapshotTooOld` if `ts` is older than the history vacuum
    /// keeps (`Options::history_retention`); `ClockUncertain` if the clock
    /// cannot say and `ts` is above every timestamp the database assigned.
    pub fn begin_at(&self, ts: Timestamp) -> Result<Transaction> {
        crate::txn::as_of::begin(self.shared.core.clone(), self.holder(), ts)
    }

    /// The index of the last entry of a caller's log (a Raft log) whose
    /// effects this database holds, recorded with them
    /// (`Transaction::set_applied_index`, [`Db::set_applied_index`]); 0
    /// before any. Reported once the entry has landed — its record
    /// flushed as the durability setting flushes (synced under
    /// `Immediate`; under `Eventual` a power loss may still take it), a
    /// commit visible — and every lower index has too. After a crash,
    /// exactly the entries up to it are here: replay the log from the
    /// next one.
    pub fn applied_index(&self) -> Result<u64> {
        Ok(self.core().txns.applied().get())
    }

    /// The highest [`applied_index`](Db::applied_index) whose record is
    /// synced: what a power loss cannot take back. Under `Immediate` the
    /// two are the same; under `Eventual` this one follows the log's
    /// syncs (the background flush, a checkpoint). A replica purges its
    /// own log only up to here.
    pub fn durable_applied_index(&self) -> Result<u64> {
        let synced = self.core().engine.store().wal.durable();
        Ok(self.core().txns.applied().durable(synced))
    }

    /// Records `index` as applied for an entry of a caller's log that
    /// changes nothing else (a no-op, a membership change, a transaction
    /// its validation aborted), durable as a commit is.
    /// `Error::IndexRefused` unless `index` is above the one recorded.
    pub fn set_applied_index(&self, index: u64) -> Result<()> {
        crate::txn::applied_alone(self.core(), index).map(|_| ())
    }

    /// Begins a transaction at `level`.
    pub fn begin_with(&self, level: Isolation) -> Result<Transaction> {
        Transaction::begin(self.shared.core.clone(), self.holder(), level)
    }

    /// Commits the prepared transaction `gid` (two-phase commit, phase
    /// two), durably whatever the durability setting. `UnknownTransaction`
    /// if no transaction waits under that id (never prepared, or decided);
    /// `CommitOutcomeUnknown` as for `Transaction::commit`. The commit
    /// takes a timestamp and waits out the clock's uncertainty as
    /// `Transaction::commit` does; `ClockUncertain` leaves it in doubt.
    pub fn commit_prepared(&self, gid: &str) -> Result<()> {
        crate::txn::prepare::decide(self.core(), gid, (true, None), None)
    }

    /// Commits the prepared transaction `gid` at timestamp `ts`, chosen by
    /// the caller (a two-phase-commit coordinator's commit timestamp,
    /// which is at least every participant's prepare timestamp). As
    /// [`Db::commit_prepared`] otherwise: durable, then waits out the
    /// clock's uncertainty about `ts` (commit wait).
    ///
    /// Refused with `Error::TimestampRefused`, the transaction still
    /// prepared, if `ts` is below its prepare timestamp
    /// ([`PreparedTransaction::prepare_ts`]) or lies further past the
    /// clock's `earliest` than a commit may wait. `ts` need not be above
    /// commits made here after the prepare: they could not touch its rows.
    pub fn commit_prepared_at(&self, gid: &str, ts: Timestamp) -> Result<()> {
        crate::txn::prepare::decide(self.core(), gid, (true, Some(ts)), None)
    }

    /// Rolls back the prepared transaction `gid`, durably.
    /// `UnknownTransaction` as for `commit_prepared`.
    pub fn rollback_prepared(&self, gid: &str) -> Result<()> {
        crate::txn::prepare::decide(self.core(), gid, (false, None), None)
    }

    /// [`commit_prepared_at`](Db::commit_prepared_at), recording the
    /// applied log `index` of the decision's entry with it, atomically (as
    /// [`Transaction::set_applied_index`] does for a commit): a replica
    /// applying a decision entry of its log. As
    /// [`Transaction::commit_applying`], the outcome is the data's alone:
    /// the clock is not read (no bound on how far ahead `ts` lies, no
    /// commit wait) and `ts` is taken even below the prepare timestamp
    /// (one a replica took from its log with
    /// [`Transaction::prepare_applying`] is the same on every replica, and
    /// a log deciding at or above it is never below). `IndexRefused` (the transaction still
    /// prepared) unless `index` is above the one recorded.
    pub fn commit_prepared_applying(&self, gid: &str, ts: Timestamp, index: u64) -> Result<()> {
        crate::txn::prepare::decide(self.core(), gid, (true, Some(ts)), Some(index))
    }

    /// [`rollback_prepared`](Db::rollback_prepared), recording the applied
    /// log `index` with it, as `commit_prepared_applying` does.
    pub fn rollback_prepared_applying(&self, gid: &str, index: u64) -> Result<()> {
        crate::txn::prepare::decide(self.core(), gid, (false, None), Some(index))
    }

    /// The prepared transactions waiting for a decision (in doubt), in gid
    /// order. They hold their row locks until decided, across restarts:
    /// the blocking window two-phase commit is known for.
    pub fn prepared_transactions(&self) -> Result<Vec<PreparedTransaction>> {
        Ok(self.core().txns.prepared().list())
    }

    /// Writes every dirty page, records a new redo point, drops log
    /// segments no longer needed and cuts the data file back to the pages
    /// in use (after a vacuum freed its end).
    pub fn checkpoint(&self) -> Result<()> {
        checkpoint::run(self.core())
    }

    /// Removes versions no transaction can see any more and returns their
    /// space. When that leaves the file sparse, it merges sparse leaves,
    /// moves live rows and nodes down the file and frees its end, which the
    /// next checkpoint cuts off.
    pub fn vacuum(&self) -> Result<VacuumStats> {
        vacuum::run(self.core())
    }

    /// Walks every page, tuple and index entry and verifies them (see
    /// `IntegrityReport`). Writers wait while it runs; readers do not.
    pub fn check_integrity(&self) -> Result<crate::integrity::IntegrityReport> {
        self.check_integrity_with(&mut |_, _| {})
    }

    /// `check_integrity`, telling `progress` (pages reached, page count)
    /// as it goes, for progress bars.
    pub fn check_integrity_with(
        &self,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<crate::integrity::IntegrityReport> {
        let inner = self.core();
        let r = inner.engine.store().read();
        crate::integrity::check(
            r.view,
            inner.engine.store().pool.path().to_path_buf(),
            inner.txns.manager().high_water(),
            progress,
        )
    }

    /// Figures about the database: sizes, log range, tables with their
    /// rows, versions and dead versions, prepared transactions. Walks every
    /// table (a full read); writers are not blocked.
    pub fn stats(&self) -> Result<crate::stat::Stats> {
        crate::stat::collect(self.core())
    }

    /// Why the database was poisoned, if it was: the first failed write
    /// or fsync on the durability path, or the damage the background
    /// worker met and could not work past (a `Corruption` a background
    /// vacuum or checkpoint read). From then on, beginning a transaction,
    /// writing, committing, checkpointing and vacuuming return
    /// `Error::Poisoned` naming the same cause.
    pub fn poison_cause(&self) -> Option<String> {
        self.core().engine.store().wal.poison_cause()
    }

    /// The last failure the background worker met and worked past, if it
    /// met one: an I/O error reading a page, which changed nothing and
    /// which its next try (after a pause that grows while the failure
    /// repeats, up to a minute) may not meet. Damage it cannot work past
    /// poisons the database instead (`poison_cause`).
    ///
    /// The worker has no caller to return its errors to, so it keeps the
    /// last here, and reports each as a `tracing` event (target
    /// `strata::maintenance`). It is kept, not cleared by a later success,
    /// so a health check that looks now and then still sees it; and it is
    /// a method of its own rather than a field of `Stats` because
    /// `Db::stats` walks every table, while this is a cheap look a
    /// monitor can take every second.
    pub fn background_error(&self) -> Option<Error> {
        self.shared.worker.last_error()
    }

    /// Log fsyncs so far (commits per fsync shows group commit at work).
    pub fn wal_syncs(&self) -> u64 {
        self.core().engine.store().wal.syncs()
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        self.core().engine.dir()
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
        self.worker.stop();
        if let Some(t) = self.thread.lock().take() {
            // A worker that panicked did no harm the log cannot repair.
            let _ = t.join();
        }
        self.final_checkpoint()
    }

    fn final_checkpoint(&mut self) -> Result<()> {
        let core = &self.core;
        if core.engine.opts().read_only || std::mem::replace(&mut self.closed, true) {
            return Ok(());
        }
        match checkpoint::run(core) {
            // What poisoned the database says more than that it is.
            Err(Error::Poisoned { cause }) => Err(core
                .engine
                .store()
                .wal
                .poison_error()
                .unwrap_or(Error::Poisoned { cause })),
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
fn open_inner(vfs: Arc<dyn Vfs>, dir: &Path, opts: Options) -> Result<(Core, bool)> {
    let ((lock, control, data), created) = if opts.read_only {
        (dir::open_read_only(vfs.as_ref(), dir)?, None)
    } else {
        dir::open_writable(vfs.as_ref(), dir, opts.create)?
    };
    match recover(vfs.clone(), dir, opts, control, data) {
        Ok((mut inner, replayed)) => {
            inner.engine.hold(lock);
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
) -> Result<(Core, bool)> {
    let read_only = opts.read_only;
    let (wal_dir, data_path) = (dir.join(WAL_DIR), dir.join(DATA_FILE));
    let mut pool = BufferPool::new(data, data_path, opts.cache_size)?;
    if read_only {
        pool = pool.read_only();
    }
    let (redo, next_xid, end, replayed) = match control {
        Some(c) => {
            let span = tracing::info_span!(
                target: "strata::db",
                "recovery",
                redo = c.redo.0,
                records = tracing::field::Empty,
                bytes = tracing::field::Empty,
                replay_us = tracing::field::Empty,
            );
            let _in = span.enter();
            let started = std::time::Instant::now();
            let r = recovery::replay(vfs.as_ref(), &wal_dir, c.redo, &pool, read_only)?;
            span.record("records", r.records);
            span.record("bytes", r.bytes);
            span.record("replay_us", started.elapsed().as_micros() as u64);
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
        let m = crate::store::meta::read(&mut r.view)?;
        meta::validate(&m)?;
        clog::load(&mut r.view, PageId(meta::get(&m, Field::ClogDir)), next_xid)?
    };
    let manager = TxnManager::new(next_xid, Clog::new(bits, next_xid));
    let catalog = catalog::root(&mut store.read().view)?;
    let horizon = crate::mvcc::commit_ts::horizon(&mut store.read().view)?;
    let applied = crate::txn::applied::get(&mut store.read().view)?;
    let inner = Core {
        engine: Engine::new(store, opts, vfs, dir),
        txns: TxnSystem::new(
            manager,
            crate::mvcc::history::History::new(horizon),
            applied,
        ),
        catalog,
        changes: crate::txn::change_readers::Registry::default(),
    };
    crate::txn::prepare::adopt(&inner)?;
    // After a replay, the maintenance thread checkpoints at its first
    // turn, and the database is open meanwhile: until then the log it
    // replayed stays, and a crash replays it again. Without that thread,
    // here and now.
    let background = inner.engine.opts().background;
    if !read_only && (control.is_none() || (replayed && !background)) {
        checkpoint::run(&inner)?;
    }
    Ok((inner, replayed))
}

fn init_pages(store: &Store) -> Result<()> {
    let mut w = store.write();
    meta::init(w.mtr.new_page(META, PageType::Meta)?);
    catalog::init(&mut w.mtr)?;
    crate::txn::prepare::init(&mut w.mtr)?;
    crate::mvcc::commit_ts::init(&mut w.mtr)?;
    if let Some(lsn) = w.commit(Kind::Pages, Op::Init as u8, Xid::NONE)? {
        store.wal.flush(lsn, true)?;
    }
    Ok(())
}

/// Waits until the clock has passed every commit timestamp the database
/// assigned, before anything is served: a commit whose record reached the
/// log but whose process died in its commit wait is committed after
/// recovery, and would otherwise be visible before its timestamp passed
/// (a commit elsewhere, on a clock behind this one within its error,
/// could then take a lower timestamp although it began after this one
/// was seen). Normally the mark is in the past and this is one reading.
/// A clock that cannot say (unsynchronised) or that lies further behind
/// the mark than a commit may wait (`COMMIT_WAIT_MAX`) is not waited for:
/// reads go on, and commits fail with `ClockUncertain` until the clock
/// is back (a WARN event says so).
fn wait_out_recovered_commits(inner: &Core) -> Result<()> {
    let high = crate::mvcc::commit_ts::high_water(&mut inner.engine.store().read().view)?;
    if high == crate::clock::Timestamp::ZERO {
        return Ok(());
    }
    let clock = &*inner.engine.opts().clock.0;
    let Ok(reading) = crate::clock::read(clock) else {
        return Ok(());
    };
    if reading.now.earliest > high {
        return Ok(());
    }
    if high.since(reading.now.earliest) > crate::limits::COMMIT_WAIT_MAX {
        tracing::warn!(
            target: "strata::db",
            dir = %inner.engine.dir().display(),
            high_water = %high,
            earliest = %reading.now.earliest,
            "the clock is behind the commit timestamps this database assigned; commits fail until it passes them"
        );
        return Ok(());
    }
    crate::clock::commit_wait(clock, high, reading);
    Ok(())
}
