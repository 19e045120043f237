//! [`StateMachine`]: openraft's `RaftStateMachine` whose state is a
//! [`Db`] (the module essay: apply, the `_raft` table, snapshots).
//!
//! ```text
//!  <root>/CURRENT     names the live database directory ("db.<n>\n")
//!  <root>/db.<n>/     the Db the entries are applied to
//! ```

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, EntryPayload, LogId, StorageError, StorageIOError, StoredMembership,
};
use parking_lot::Mutex;

use super::command::{is_decision, Command, Outcome, TxnBody};
use super::encode::{self, Reader, Writer};
use super::log::PurgeBound;
use super::{blocking, Entry, TypeConfig};
use crate::clock::Timestamp;
use crate::error::{Conflict, Error, Result};
use crate::options::{Durability, Isolation, Options};
use crate::snapshot::ExportOptions;
use crate::txn::Transaction;
use crate::Db;

/// The table holding the state machine's own rows, written in the same
/// transactions as the entries they describe. Commands may not write it.
pub const SYSTEM_TABLE: &str = "_raft";
/// `_raft` row: the log id of the last entry applied, and of the one
/// before, and the newest timestamp the applied entries gave.
const APPLIED_KEY: &[u8] = b"applied";
/// `_raft` row: the last membership applied, with its entry's log id.
const MEMBERSHIP_KEY: &[u8] = b"membership";
const CURRENT: &str = "CURRENT";
/// History kept when the options keep none: validation reads as of each
/// transaction's snapshot, and below the horizon it would be
/// `SnapshotTooOld` (README, "Hooks for replication").
pub const REPLICA_HISTORY_RETENTION: Duration = Duration::from_secs(60);

type StoreResult<T> = std::result::Result<T, StorageError<u64>>;
type Membership = StoredMembership<u64, BasicNode>;

fn snapshot_err(e: &Error) -> StorageError<u64> {
    StorageIOError::write_snapshot(None, AnyError::new(e)).into()
}

fn sm_err(e: &Error) -> StorageError<u64> {
    StorageIOError::write_state_machine(AnyError::new(e)).into()
}

/// The state: the database and what is known about it.
struct Inner {
    root: PathBuf,
    opts: Options,
    db: Db,
    dir_no: u64,
    /// The last entry applied (`None`: none), from the `_raft` row.
    applied: Option<LogId<u64>>,
    membership: Membership,
    /// The newest timestamp the applied entries gave: of the transactions
    /// committed, and of every commit-prepared entry (not a prepare's,
    /// which is taken just above it), from the `_raft/applied` row. The
    /// same on every replica: the log's, never the database's mark, which
    /// local reads raise.
    newest: Timestamp,
    current: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
    snapshots: u64,
    bound: PurgeBound,
}

/// The state machine of a node: a [`Db`] the committed entries are
/// applied to. Clones share it (the snapshot builder is one).
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine").finish_non_exhaustive()
    }
}

fn db_dir(root: &Path, n: u64) -> PathBuf {
    root.join(format!("db.{n}"))
}

fn io<'a>(op: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(op, p, e)
}

/// Writes `CURRENT` naming `db.<n>`: a new file, synced, renamed over the
/// old, the directory synced.
fn write_current(root: &Path, n: u64) -> Result<()> {
    let tmp = root.join("CURRENT.tmp");
    std::fs::write(&tmp, format!("db.{n}\n")).map_err(io("write CURRENT", &tmp))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io("sync CURRENT", &tmp))?;
    let cur = root.join(CURRENT);
    std::fs::rename(&tmp, &cur).map_err(io("rename CURRENT", &cur))?;
    std::fs::File::open(root)
        .and_then(|f| f.sync_all())
        .map_err(io("sync directory", root))
}

fn read_current(root: &Path) -> Result<Option<u64>> {
    let cur = root.join(CURRENT);
    let s = match std::fs::read_to_string(&cur) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read CURRENT", &cur, e)),
    };
    s.trim_end()
        .strip_prefix("db.")
        .and_then(|n| n.parse().ok())
        .map(Some)
        .ok_or_else(|| Error::corruption(&cur, 0, format!("CURRENT names {s:?}")))
}

/// Removes the database directories and import leftovers `CURRENT` does
/// not name (a swap or an import interrupted by a crash).
fn remove_orphans(root: &Path, keep: u64) -> Result<()> {
    let keep = format!("db.{keep}");
    for e in std::fs::read_dir(root).map_err(io("list", root))? {
        let e = e.map_err(io("list", root))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let orphan = (name.starts_with("db.") || name.starts_with(".db.")) && name != keep;
        if orphan {
            std::fs::remove_dir_all(e.path()).map_err(io("remove", &e.path()))?;
        }
    }
    Ok(())
}

fn get_row(db: &Db, key: &[u8]) -> Result<Option<Vec<u8>>> {
    let t = db.table(SYSTEM_TABLE)?;
    let tx = db.begin_with(Isolation::Snapshot)?;
    let v = tx.get(&t, key);
    tx.rollback()?;
    match v {
        Err(Error::NoSuchTable { .. }) => Ok(None),
        v => v,
    }
}

/// What the `_raft` rows say: the last applied log id, the membership,
/// the newest timestamp the log gave.
type State = (Option<LogId<u64>>, Membership, Timestamp);

/// Reads the `_raft` rows of `db`: the last applied log id (checked
/// against `Db::applied_index`), membership, newest timestamp.
fn read_state(db: &Db) -> Result<State> {
    let corrupt =
        |why: String| Error::corruption(db.path(), 0, format!("{SYSTEM_TABLE} table: {why}"));
    let index = db.applied_index()?;
    let mut newest = Timestamp::ZERO;
    let applied = match get_row(db, APPLIED_KEY)? {
        None if index == 0 => None,
        None => return Err(corrupt(format!("no applied row at applied index {index}"))),
        Some(b) => {
            let mut r = Reader::new(&b);
            let cur = encode::get_opt_log_id(&mut r).map_err(&corrupt)?;
            let prev = encode::get_opt_log_id(&mut r).map_err(&corrupt)?;
            newest = encode::get_ts(&mut r).map_err(&corrupt)?;
            r.finish().map_err(&corrupt)?;
            // The row is written with the entry, or just before an entry
            // whose index the core records on its own (prepare, decisions):
            // one ahead of the index, its `prev` is the applied entry.
            let db_index = |id: Option<LogId<u64>>| id.map_or(0, |i| i.index + 1);
            if db_index(cur) == index {
                cur
            } else if db_index(prev) == index {
                prev
            } else {
                return Err(corrupt(format!(
                    "applied row names {cur:?} (before it {prev:?}), the database index {index}"
                )));
            }
        }
    };
    let membership = match get_row(db, MEMBERSHIP_KEY)? {
        None => Membership::default(),
        Some(b) => {
            let mut r = Reader::new(&b);
            let id = encode::get_opt_log_id(&mut r).map_err(&corrupt)?;
            let m = encode::get_membership(&mut r).map_err(&corrupt)?;
            r.finish().map_err(&corrupt)?;
            Membership::new(id, m)
        }
    };
    Ok((applied, membership, newest))
}

impl StateMachine {
    /// Opens (creating) the state machine in `root`. Its database is
    /// opened with `opts` under `Durability::Eventual` (the Raft log is
    /// the durable record) and, if `opts` keeps no history, with
    /// [`REPLICA_HISTORY_RETENTION`].
    pub fn open(root: impl AsRef<Path>, opts: Options) -> Result<StateMachine> {
        let root = root.as_ref().to_path_buf();
        if !root.exists() {
            std::fs::create_dir_all(&root).map_err(io("create", &root))?;
            // Its name in its parent, synced like the rest.
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::File::open(parent)
                    .and_then(|f| f.sync_all())
                    .map_err(io("sync directory", parent))?;
            }
        }
        let mut opts = opts.durability(Durability::Eventual);
        if opts.history_retention.is_zero() {
            opts = opts.history_retention(REPLICA_HISTORY_RETENTION);
        }
        let n = match read_current(&root)? {
            Some(n) => n,
            None => {
                write_current(&root, 0)?;
                0
            }
        };
        remove_orphans(&root, n)?;
        let db = Db::open_with(db_dir(&root, n), opts.clone())?;
        let (applied, membership, newest) = read_state(&db)?;
        let bound = PurgeBound::new();
        bound.raise(db.durable_applied_index()?);
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(Inner {
                root,
                opts,
                db,
                dir_no: n,
                applied,
                membership,
                newest,
                current: None,
                snapshots: 0,
                bound,
            })),
        })
    }

    /// The bound the log store purges up to (give it to
    /// [`super::LogStore::open`]): the database's durable applied index,
    /// raised after every batch applied and every snapshot installed.
    pub fn purge_bound(&self) -> PurgeBound {
        self.inner.lock().bound.clone()
    }

    /// The database (a handle: after a snapshot is installed, the old one
    /// no longer follows the log).
    pub fn db(&self) -> Db {
        self.inner.lock().db.clone()
    }

    /// The last entry applied and the last membership (sync).
    pub fn applied(&self) -> (Option<LogId<u64>>, Membership) {
        let g = self.inner.lock();
        (g.applied, g.membership.clone())
    }

    /// Applies `entries` in order (sync): one outcome each.
    pub fn apply_entries(&self, entries: &[Entry]) -> Result<Vec<Outcome>> {
        let mut g = self.inner.lock();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            out.push(g.apply(e)?);
        }
        let durable = g.db.durable_applied_index()?;
        g.bound.raise(durable);
        Ok(out)
    }
}

impl Inner {
    fn apply(&mut self, e: &Entry) -> Result<Outcome> {
        let index = e.log_id.index + 1;
        let have = self.db.applied_index()?;
        if index <= have {
            // Replayed after a restart, or handed twice: applied once only.
            return Ok(Outcome::Applied);
        }
        let outcome = match &e.payload {
            EntryPayload::Blank => {
                self.system_tx(e.log_id, true, None)?;
                Outcome::Applied
            }
            EntryPayload::Membership(m) => {
                let m = Membership::new(Some(e.log_id), m.clone());
                self.system_tx(e.log_id, true, Some(&m))?;
                self.membership = m;
                Outcome::Applied
            }
            EntryPayload::Normal(c) => self.command(e.log_id, c)?,
        };
        self.applied = Some(e.log_id);
        Ok(outcome)
    }

    /// The `_raft/applied` row: this entry, the last one applied, and
    /// `newest`, the newest timestamp given with this entry applied.
    fn applied_row(&self, id: LogId<u64>, newest: Timestamp) -> Vec<u8> {
        let mut w = Writer::default();
        encode::put_opt_log_id(&mut w, Some(&id));
        encode::put_opt_log_id(&mut w, self.applied.as_ref());
        encode::put_ts(&mut w, newest);
        w.0
    }

    /// A transaction writing only `_raft` rows — the applied row, the
    /// membership if given, the entry's index if `record` — committed just
    /// above the newest timestamp the log gave (the same on every replica,
    /// whatever local reads did to the database's mark), as an entry is
    /// applied: `commit_applying`.
    fn system_tx(&mut self, id: LogId<u64>, record: bool, m: Option<&Membership>) -> Result<()> {
        let t = self.db.table(SYSTEM_TABLE)?;
        let mut tx = self.db.begin_with(Isolation::Snapshot)?;
        tx.set_nowait(true);
        tx.put(&t, APPLIED_KEY, self.applied_row(id, self.newest))?;
        if let Some(m) = m {
            let mut w = Writer::default();
            encode::put_opt_log_id(&mut w, m.log_id().as_ref());
            encode::put_membership(&mut w, m.membership());
            tx.put(&t, MEMBERSHIP_KEY, w.0)?;
        }
        if record {
            tx.set_applied_index(id.index + 1);
        }
        let ts = Timestamp::from_nanos(self.newest.as_nanos().saturating_add(1));
        tx.commit_applying(ts)?;
        Ok(())
    }

    fn command(&mut self, id: LogId<u64>, c: &Command) -> Result<Outcome> {
        let r = match c {
            Command::Transaction { body, commit_ts } => self.transaction(id, body, *commit_ts),
            Command::Prepare { gid, body } => {
                self.system_tx(id, false, None)?;
                self.prepare(id, gid, body)
            }
            Command::CommitPrepared { gid, ts } => {
                // The decision's timestamp counts whatever its outcome: the
                // row written before it carries it.
                self.newest = self.newest.max(*ts);
                self.system_tx(id, false, None)?;
                let r = self.db.commit_prepared_applying(gid, *ts, id.index + 1);
                r.map(|()| Outcome::Committed { ts: *ts })
            }
            Command::RollbackPrepared { gid } => {
                self.system_tx(id, false, None)?;
                let r = self.db.rollback_prepared_applying(gid, id.index + 1);
                r.map(|()| Outcome::RolledBack)
            }
        };
        match r {
            Ok(o) => {
                if let Outcome::Committed { ts } = o {
                    self.newest = self.newest.max(ts);
                }
                Ok(o)
            }
            Err(e) if is_decision(&e) => {
                // Refused: the entry changes nothing but its index.
                self.system_tx(id, true, None)?;
                Ok(Outcome::Aborted(e))
            }
            Err(e) => Err(e),
        }
    }

    /// Validation and writes of `body` in a nowait transaction.
    fn stage(&self, body: &TxnBody) -> Result<Transaction> {
        let mut tx = self.db.begin_with(Isolation::Snapshot)?;
        tx.set_nowait(true);
        let conflict = |table: &str, key: Vec<u8>| Error::SerializationFailure {
            cause: Conflict::ConcurrentUpdate,
            key: Some(key),
            table: Some(table.to_string()),
        };
        for r in &body.reads {
            let t = self.db.table(&r.table)?;
            let changed = match &r.end {
                Some(end) => {
                    tx.changed_since(&t, r.start.as_slice()..end.as_slice(), body.snapshot_ts)?
                }
                None => tx.changed_since(&t, r.start.as_slice().., body.snapshot_ts)?,
            };
            if let Some(k) = changed {
                return Err(conflict(&r.table, k));
            }
        }
        for w in &body.writes {
            if w.table == SYSTEM_TABLE {
                return Err(Error::Unsupported("writes to the _raft table"));
            }
            let t = self.db.table(&w.table)?;
            let k = w.key.as_slice();
            if let Some(k) = tx.changed_since(&t, k..=k, body.snapshot_ts)? {
                return Err(conflict(&w.table, k));
            }
        }
        for w in &body.writes {
            let t = self.db.table(&w.table)?;
            match &w.value {
                Some(v) => tx.put(&t, &w.key, v)?,
                None => {
                    tx.delete(&t, &w.key)?;
                }
            }
        }
        Ok(tx)
    }

    /// A transaction entry: refused unless its timestamp is above every
    /// one the log gave before (the log's rule, not this database's mark),
    /// then validated, written and committed at that timestamp with the
    /// entry's index (`commit_applying`: no clock, no local mark).
    fn transaction(&mut self, id: LogId<u64>, body: &TxnBody, ts: Timestamp) -> Result<Outcome> {
        if ts <= self.newest {
            return Err(Error::TimestampRefused {
                reason: format!(
                    "{ts} is not above {}, the newest timestamp of the log applied",
                    self.newest
                ),
            });
        }
        let mut tx = self.stage(body)?;
        let t = self.db.table(SYSTEM_TABLE)?;
        tx.put(&t, APPLIED_KEY, self.applied_row(id, ts))?;
        tx.set_applied_index(id.index + 1);
        let info = tx.commit_applying(ts)?;
        Ok(Outcome::Committed { ts: info.ts })
    }

    /// A prepare entry: validated and written as a transaction entry, then
    /// prepared with the entry's index at the timestamp just above the
    /// newest the log gave (the entry carries none of its own): the same
    /// on every replica, whatever its clock or its local reads
    /// (`prepare_applying`). It does not raise `newest`: a later entry's
    /// commit timestamp is judged as before.
    fn prepare(&mut self, id: LogId<u64>, gid: &str, body: &TxnBody) -> Result<Outcome> {
        let mut tx = self.stage(body)?;
        tx.set_applied_index(id.index + 1);
        let ts = Timestamp::from_nanos(self.newest.as_nanos().saturating_add(1));
        let ts = tx.prepare_applying(gid, ts)?;
        Ok(Outcome::Prepared { ts })
    }

    /// Exports the database into a snapshot, as of the last entry applied
    /// (the lock keeps apply out meanwhile).
    fn build(&mut self) -> Result<(SnapshotMeta<u64, BasicNode>, Vec<u8>)> {
        let mut bytes = Vec::new();
        let stats = self.db.export(&mut bytes, ExportOptions::default())?;
        let want = self.applied.map_or(0, |i| i.index + 1);
        if stats.applied_index != want {
            return Err(Error::corruption(
                self.db.path(),
                0,
                format!(
                    "export at index {}, state machine at {want}",
                    stats.applied_index
                ),
            ));
        }
        self.snapshots += 1;
        let id = self.applied.map_or("none".to_string(), |i| {
            format!("{}-{}", i.leader_id.term, i.index)
        });
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("{id}-{}", self.snapshots),
        };
        self.current = Some((meta.clone(), bytes.clone()));
        Ok((meta, bytes))
    }

    /// Builds a database from the snapshot in a new directory, then swaps
    /// it in by rewriting `CURRENT` (module essay, "Install").
    /// A snapshot at or below the entry applied is ignored: the applied
    /// state never goes back.
    fn install(&mut self, meta: &SnapshotMeta<u64, BasicNode>, bytes: Vec<u8>) -> Result<()> {
        let index = |id: Option<LogId<u64>>| id.map_or(0, |i| i.index + 1);
        if index(meta.last_log_id) <= index(self.applied) {
            return Ok(());
        }
        let n = self.dir_no + 1;
        let dir = db_dir(&self.root, n);
        // Left by an install that failed in this process (at open,
        // orphans go anyway).
        for d in [dir.clone(), self.root.join(format!(".db.{n}.import"))] {
            if d.exists() {
                std::fs::remove_dir_all(&d).map_err(io("remove", &d))?;
            }
        }
        crate::snapshot::import(&mut bytes.as_slice(), &dir, self.opts.clone())?;
        let db = Db::open_with(&dir, self.opts.clone())?;
        let (applied, membership, newest) = read_state(&db)?;
        if applied != meta.last_log_id || membership != meta.last_membership {
            return Err(Error::corruption(
                &dir,
                0,
                format!(
                    "snapshot holds {applied:?} {membership:?}, its meta says {:?} {:?}",
                    meta.last_log_id, meta.last_membership
                ),
            ));
        }
        write_current(&self.root, n)?;
        let old = std::mem::replace(&mut self.db, db);
        let old_dir = db_dir(&self.root, self.dir_no);
        drop(old);
        self.dir_no = n;
        self.applied = applied;
        self.membership = membership;
        self.newest = newest;
        self.bound.raise(self.db.durable_applied_index()?);
        self.current = Some((meta.clone(), bytes));
        // Another handle of the old database may still be open; it is
        // removed at the next open at the latest.
        let _ = std::fs::remove_dir_all(old_dir);
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<TypeConfig>> {
        let inner = self.inner.clone();
        let (meta, bytes) = blocking(move || inner.lock().build(), snapshot_err).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> StoreResult<(Option<LogId<u64>>, Membership)> {
        // The lock is held across applies and exports: waited for on the
        // blocking pool, not on a runtime thread.
        let sm = self.clone();
        blocking(move || Ok(sm.applied()), sm_err).await
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<Outcome>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let sm = self.clone();
        blocking(move || sm.apply_entries(&entries), sm_err).await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StoreResult<()> {
        let inner = self.inner.clone();
        let meta = meta.clone();
        blocking(
            move || inner.lock().install(&meta, snapshot.into_inner()),
            snapshot_err,
        )
        .await
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<TypeConfig>>> {
        let inner = self.inner.clone();
        let current = blocking(move || Ok(inner.lock().current.clone()), snapshot_err).await?;
        Ok(current.map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
