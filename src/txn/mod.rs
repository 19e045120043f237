//! Transactions: the user-facing unit of work.
//!
//! A transaction holds a snapshot (taken at `begin` for Snapshot, per
//! operation for Read Committed; either way registered with the manager,
//! so vacuum keeps what it reads), takes an xid at its first write, and ends
//! by publishing its outcome. Its writes go straight into the heap and
//! index, stamped with its xid, so its own reads see them through the same
//! visibility rule as everyone else's; rollback only has to mark the xid
//! aborted.
//!
//! After a retryable error (serialization failure, deadlock, lock timeout)
//! the transaction is doomed: every later operation returns that error.

pub(crate) mod applied;
pub(crate) mod as_of;
pub(crate) mod change_readers;
pub mod locks;
pub(crate) mod prepare;
mod ranges;
mod scan;
pub mod ssi;
mod system;
mod tables;
mod validate;
mod write;
pub(crate) mod written;

pub use scan::{KeyRange, Prefix, Scan};
pub(crate) use system::{Core, TxnSystem};
pub(crate) use tables::valid_name;

use std::borrow::Cow;
use std::cell::RefCell;
use std::ops::Bound;

use std::sync::Arc;

use crate::catalog::Table;
use crate::clock::{self, Timestamp};
use crate::error::{Error, Result};
use crate::ids::{Lsn, PageId, Xid};
use crate::limits::KEY_MAX;
use crate::mvcc::chain;
use crate::mvcc::clog;
use crate::mvcc::commit_ts;
use crate::mvcc::history::{AsOf, Statuses};
use crate::mvcc::{Snapshot, Status};
use crate::options::{Durability, Isolation};
use crate::redo::record::{Kind, Op};
use ssi::Coarsening;

/// The versions a transaction's writes leave behind, counted toward the
/// background vacuum's trigger only once the outcome makes them dead: a
/// long delete must not set off vacuum passes that can remove nothing
/// while it is still in progress.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Versions {
    /// New versions it wrote: dead if it aborts.
    pub written: u64,
    /// Older versions its writes replaced or deleted: dead once it commits.
    pub superseded: u64,
}

impl Versions {
    pub fn dead_if_committed(self) -> u64 {
        self.superseded
    }

    pub fn dead_if_aborted(self) -> u64 {
        self.written
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
    /// Its commit timestamp (`Timestamp::ZERO` if it wrote nothing): at
    /// least the clock's `latest` when it committed, above every earlier
    /// commit's on this database, and already in the past by the clock's
    /// `earliest` when `commit` returns (see [`crate::clock`]).
    pub ts: Timestamp,
}

/// Waits out the clock's uncertainty about commit timestamp `ts` (unless
/// the test-only switch turned it off).
pub(crate) fn commit_wait(inner: &Core, ts: Timestamp, reading: clock::Reading) {
    let opts = inner.engine.opts();
    if opts.commit_wait {
        clock::commit_wait(&*opts.clock.0, ts, reading);
    }
}

/// Where a commit's timestamp comes from.
#[derive(Clone, Copy, Debug)]
enum At {
    /// The clock (`commit`).
    Clock,
    /// The caller, checked against the mark and the clock (`commit_at`).
    Chosen(Timestamp),
    /// A replicated log, taken as it is (`commit_applying`).
    Applying(Timestamp),
}

/// Where a prepare's timestamp comes from.
#[derive(Clone, Copy)]
enum PrepareAt {
    /// The clock and the high-water mark (`prepare`).
    Clock,
    /// A replicated log or a snapshot stream, taken as it is
    /// (`prepare_applying`).
    Applying(Timestamp),
}

/// A transaction. Dropping it without `commit` rolls it back.
pub struct Transaction {
    core: Arc<Core>,
    /// Keeps the database open while the transaction lives.
    _holder: Arc<dyn Send + Sync>,
    token: u64,
    level: Isolation,
    snapshot: Snapshot,
    xid: Xid,
    versions: Versions,
    /// The retryable error that doomed it, repeated by every later call.
    doomed: RefCell<Option<Error>>,
    finished: bool,
    read_only: bool,
    /// The SSI marks of a serializable transaction (`None` below it).
    reads: RefCell<Option<ssi::ReadSet>>,
    /// The tables it resolved, by name (`tables`).
    tables: RefCell<tables::Cache>,
    /// Set for a read as of a timestamp (`Db::begin_at`).
    as_of: Option<as_of::AsOfRead>,
    /// The caller's log index its commit or prepare records
    /// (`set_applied_index`).
    applied: Option<u64>,
    /// Writes fail at once on a row another transaction holds
    /// (`set_nowait`).
    nowait: bool,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("xid", &self.xid)
            .field("level", &self.level)
            .finish()
    }
}

impl Transaction {
    pub(crate) fn begin_read(core: Arc<Core>, holder: Arc<dyn Send + Sync>) -> Result<Transaction> {
        Self::begin_as(core, holder, Isolation::Serializable, true)
    }

    pub(crate) fn begin(
        core: Arc<Core>,
        holder: Arc<dyn Send + Sync>,
        level: Isolation,
    ) -> Result<Transaction> {
        Self::begin_as(core, holder, level, false)
    }

    fn begin_as(
        core: Arc<Core>,
        holder: Arc<dyn Send + Sync>,
        level: Isolation,
        read_only: bool,
    ) -> Result<Transaction> {
        let inner = &*core;
        inner.engine.store().wal.check()?;
        let token = inner.txns.manager().next_token();
        let (reads, snapshot) = if level == Isolation::Serializable {
            let (reads, snapshot) =
                inner
                    .txns
                    .ssi()
                    .begin(inner.txns.manager(), token, read_only, inner.engine.opts());
            if read_only {
                inner.txns.manager().read_only(token);
            }
            (Some(reads), snapshot)
        } else {
            let per_operation = level == Isolation::ReadCommitted;
            (
                None,
                inner.txns.manager().begin(token, per_operation, false),
            )
        };
        Ok(Transaction {
            core,
            _holder: holder,
            token,
            level,
            snapshot,
            xid: Xid::NONE,
            versions: Versions::default(),
            doomed: RefCell::new(None),
            finished: false,
            read_only,
            reads: RefCell::new(reads),
            tables: RefCell::default(),
            as_of: None,
            applied: None,
            nowait: false,
        })
    }

    /// With `true`, a write that meets a row another transaction holds
    /// (running, or prepared and in doubt) fails at once with
    /// `Error::LockNotAvailable` instead of waiting for it (PostgreSQL's
    /// `NOWAIT`); likewise a drop or rename of a table another
    /// transaction writes. What a replica applying its log needs: apply
    /// never blocks, and every replica meets the same held rows in the
    /// same order, so each decides the same. Like other retryable
    /// errors, the failure dooms the transaction.
    pub fn set_nowait(&mut self, on: bool) {
        self.nowait = on;
    }

    /// Records `index` — the position of the entry this transaction
    /// applies in a caller's log, such as a Raft log — with its commit
    /// (`commit`, `commit_at`) or its `prepare`, atomically: after any
    /// crash [`Db::applied_index`](crate::Db::applied_index) is `index`
    /// exactly when this transaction's effects are there. A transaction
    /// that wrote nothing records it alone. The commit (or prepare) fails
    /// with `Error::IndexRefused`, rolling back, unless `index` is above
    /// the index recorded before.
    pub fn set_applied_index(&mut self, index: u64) {
        self.applied = Some(index);
    }

    /// A read-only transaction as of a timestamp, once `as_of::begin` has
    /// made it safe: a snapshot taken now, which every commit at or below
    /// the timestamp precedes, read by timestamp.
    pub(crate) fn begin_as_of(
        core: Arc<Core>,
        holder: Arc<dyn Send + Sync>,
        read: as_of::AsOfRead,
    ) -> Result<Transaction> {
        let mut t = Self::begin_as(core, holder, Isolation::Snapshot, true)?;
        t.core().txns.manager().read_only(t.token);
        t.as_of = Some(read);
        Ok(t)
    }

    /// The timestamp a read as of a timestamp reads at (`Db::begin_at`);
    /// `None` for any other transaction.
    pub fn read_ts(&self) -> Option<Timestamp> {
        self.as_of.as_ref().map(|a| a.hold.ts())
    }

    /// The commit statuses this transaction's reads judge versions by.
    pub(crate) fn statuses(&self) -> Statuses<'_> {
        let clog = self.core().txns.manager().clog();
        match &self.as_of {
            None => Statuses::Now(clog),
            Some(a) => Statuses::AsOf(AsOf::new(
                clog,
                a.hold.ts(),
                &a.known,
                self.core().txns.history().stamps(),
            )),
        }
    }

    /// The isolation level.
    pub fn isolation(&self) -> Isolation {
        self.level
    }

    /// The identity of the database the transaction runs on.
    #[cfg(feature = "twopc")]
    pub(crate) fn db_id(&self) -> u64 {
        self.core.engine.id()
    }

    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    /// The transaction's id, once it has written (`Xid::NONE` before).
    pub fn xid(&self) -> Xid {
        self.xid
    }

    fn check(&self, table: &Table) -> Result<()> {
        if let Some(e) = self.doomed() {
            return Err(e);
        }
        if table.db() != self.core().engine.id() {
            // A handle of the same directory came from an earlier open.
            return Err(if table.dir() == self.core().engine.dir() {
                Error::StaleTable {
                    name: table.name().to_string(),
                }
            } else {
                Error::ForeignTable
            });
        }
        // A transaction SSI chose as a victim learns it from its next SSI
        // call (every read and write makes one, and commit checks first),
        // so operations need no extra trip through the SSI lock here.
        Ok(())
    }

    fn serializable(&self) -> bool {
        self.level == Isolation::Serializable
    }

    /// Reports a write to SSI: edges from concurrent readers of the key.
    /// The xid is registered in the same step, before the marks are
    /// checked, so a reader that meets the new version later can name it.
    fn ssi_write(&self, table: &Table, key: &[u8]) -> Result<()> {
        self.ssi_write_at(table.root, table.name(), key)
    }

    /// `ssi_write` of `key` in the tree rooted at `root` (a table, or the
    /// catalog), named `name` in a failure.
    fn ssi_write_at(&self, root: PageId, name: &str, key: &[u8]) -> Result<()> {
        if !self.serializable() {
            return Ok(());
        }
        let mut ssi = self.core().txns.ssi().lock();
        ssi.assign(self.token, self.xid);
        // A doom from an earlier conflict is told apart from one this
        // write finds, which alone is at this row.
        let r = ssi.check(self.token).and_then(|()| {
            ssi.write(self.token, root, key)
                .map_err(|e| e.at(name, key))
        });
        drop(ssi);
        self.note(r)
    }

    /// The mark itself, which takes only a partition lock (so the write
    /// path may take it under the store latch); the coarsening it may ask
    /// for takes the graph's lock and is left to [`Self::ssi_coarsen`].
    fn ssi_mark_key(&self, table: &Table, key: &[u8]) -> Option<Coarsening> {
        let inner = self.core();
        self.reads
            .borrow_mut()
            .as_mut()
            .and_then(|reads| reads.mark(inner.txns.marks(), table.root, key))
    }

    fn ssi_coarsen(&self, c: Option<Coarsening>) {
        if let Some(c) = c {
            self.core().txns.ssi().lock().coarsen(self.token, c);
        }
    }

    /// Reports the writers of versions a read skipped (edges reader → writer).
    /// `at`: the row read, named in a failure.
    fn ssi_unseen(&self, unseen: &[Xid], at: Option<(&Table, &[u8])>) -> Result<()> {
        if !self.serializable() || unseen.is_empty() {
            return Ok(());
        }
        let mut ssi = self.core().txns.ssi().lock();
        // As in `ssi_write`: only a conflict this read finds is at its row.
        let r = ssi.check(self.token).and_then(|()| {
            ssi.read_unseen(self.token, unseen).map_err(|e| match at {
                Some((table, key)) => e.at(table.name(), key),
                None => e,
            })
        });
        drop(ssi);
        self.note(r)
    }

    fn note<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if e.is_retryable() {
                *self.doomed.borrow_mut() = Some(e.clone());
            }
        }
        r
    }

    /// The error that doomed the transaction, if one did.
    fn doomed(&self) -> Option<Error> {
        self.doomed.borrow().clone()
    }

    /// The snapshot for one read, registered for vacuum under Read
    /// Committed (the view vacuum keeps for this transaction), with its
    /// catalog epoch (Read Committed; 0 otherwise).
    pub(crate) fn read_snapshot(&self) -> (Cow<'_, Snapshot>, u64) {
        match self.level {
            Isolation::ReadCommitted => {
                let (snap, epoch) = self.core().txns.manager().operation_at(self.token);
                (Cow::Owned(snap), epoch)
            }
            _ => (Cow::Borrowed(&self.snapshot), 0),
        }
    }

    /// The snapshot for one write. Not registered: a write judges versions
    /// under the store's write latch, which vacuum needs to free any.
    fn snapshot_now(&self) -> Cow<'_, Snapshot> {
        match self.level {
            Isolation::ReadCommitted => Cow::Owned(self.core().txns.manager().snapshot()),
            _ => Cow::Borrowed(&self.snapshot),
        }
    }

    /// The value of `key`, as this transaction sees it.
    pub fn get(&self, table: &Table, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        self.check(table)?;
        let key = key.as_ref();
        if key.len() > KEY_MAX {
            return Err(Error::KeyTooLarge { len: key.len() });
        }
        let (snap, epoch) = self.read_snapshot();
        // The root alone: a hot loop of gets clones no handle.
        let Some(root) = self.root_for_read(table, &snap, epoch)? else {
            return Ok(None);
        };
        let inner = self.core();
        let mut unseen = Vec::new();
        let (coarsening, value) = ssi::mark_then_read(
            self.reads.borrow_mut().as_mut(),
            inner.txns.marks(),
            root,
            key,
            || -> Result<Option<Vec<u8>>> {
                let mut r = inner.engine.store().read();
                match crate::btree::get_with(&mut r.view, root, key, chain::tid_of)? {
                    Some(tid) => {
                        let head = chain::valid(&r.view, tid)?;
                        chain::read_visible(
                            &mut r.view,
                            head,
                            &snap,
                            self.xid,
                            &self.statuses(),
                            &mut unseen,
                        )
                    }
                    None => Ok(None),
                }
            },
        );
        self.ssi_coarsen(coarsening);
        let value = value?;
        self.removed_writers(&snap, root, key, &mut unseen);
        self.ssi_unseen(&unseen, Some((table, key)))?;
        Ok(value)
    }

    /// Keeps, of writers met in the ledger of removed versions (after
    /// those met in chains), the ones this read does not see: the chain
    /// would have had it skip their versions.
    /// Adds, for a serializable read of `key`, the writers of its versions
    /// vacuum removed (the ledger) to those met in its chain, and keeps
    /// the ones this read does not see.
    fn removed_writers(&self, snap: &Snapshot, table: PageId, key: &[u8], unseen: &mut Vec<Xid>) {
        let ledger = &self.core().txns.ledger();
        if self.serializable() && ledger.concerns(snap) {
            ledger.writers(table, key, unseen);
            self.keep_unseen(snap, unseen);
        }
    }

    fn keep_unseen(&self, snap: &Snapshot, xids: &mut Vec<Xid>) {
        let clog = self.core().txns.manager().clog();
        xids.retain(|&x| x != self.xid && !snap.sees(x, self.xid, clog));
    }

    /// Inserts or replaces `key` → `value`.
    pub fn put(
        &mut self,
        table: &Table,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<()> {
        self.check(table)?;
        let table = match self.table_for_write(table, true) {
            Ok(Some(t)) => t,
            Ok(None) => return Err(Error::Unsupported("table was not created")),
            Err(e) => return self.note(Err(e)),
        };
        let r = write::write(self, &table, key.as_ref(), Some(value.as_ref()));
        self.note(r)?;
        self.ssi_write(&table, key.as_ref())
    }

    /// Deletes `key`; returns whether it existed (for this transaction).
    pub fn delete(&mut self, table: &Table, key: impl AsRef<[u8]>) -> Result<bool> {
        self.check(table)?;
        // A table that does not exist has no key to delete: no table is
        // created for it (its absence was read, and marked, on the way).
        let table = match self.table_for_write(table, false) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(false),
            Err(e) => return self.note(Err(e)),
        };
        let table = &table;
        // Whether the key existed is a read, too. Finding no row, the write
        // path marks the key; a row it stamps needs no mark (see there),
        // and a delete that wrote nothing has no write to report.
        let r = write::write(self, table, key.as_ref(), None);
        let existed = self.note(r)?;
        if existed {
            self.ssi_write(table, key.as_ref())?;
        }
        Ok(existed)
    }

    /// Rows with keys in `range`, in key order, including this
    /// transaction's own writes. Iterate with `.rev()` for descending
    /// order: the B+tree is walked backwards, batch by batch, as it is
    /// walked forwards. `range` may be a [`Prefix`].
    pub fn scan<R: KeyRange>(&self, table: &Table, range: R) -> Result<Scan<'_>> {
        self.check(table)?;
        let (lo, hi) = bounds(range)?;
        Ok(self.scan_in(table, lo, hi, Mark::Range)?.0)
    }

    /// A scan of `table` from `lo` to `hi`, every read over a range goes
    /// through: the table resolved as this read sees the catalog (one that
    /// does not exist reads as empty); with `Mark::Range`, a serializable
    /// transaction's SSI mark on the range goes before any row is read
    /// (its read depends on every key in it, present or not), and the
    /// table's root with where the mark went among the transaction's marks
    /// comes back (for `Ssi::narrow_range`; `None` if untracked or no
    /// table).
    fn scan_in(
        &self,
        table: &Table,
        lo: Bound<Vec<u8>>,
        hi: Bound<Vec<u8>>,
        mark: Mark,
    ) -> Result<(Scan<'_>, Option<(PageId, usize)>)> {
        // A scan's snapshot outlives the call: under Read Committed it is
        // pinned for vacuum until the scan is dropped.
        let (pin, snap, epoch) = match self.level {
            Isolation::ReadCommitted => {
                let (id, snap, epoch) = self.core().txns.manager().pin_at(self.token);
                (
                    Some(scan::Pin::new(self.core.clone(), self.token, id)),
                    snap,
                    epoch,
                )
            }
            _ => (None, self.snapshot.clone(), 0),
        };
        let Some(table) = self.table_for_read(table, &snap, epoch)? else {
            let none = || Bound::Excluded(Vec::new());
            let scan = Scan::new(self, table.clone(), snap, pin, none(), none());
            return Ok((scan, None));
        };
        // A safe read-only snapshot takes no marks (and skips the SSI lock).
        let tracked = self.reads.borrow().as_ref().is_some_and(|r| !r.is_safe());
        let at = match (tracked, mark) {
            (true, Mark::Range) => {
                let range = (lo.clone(), hi.clone());
                self.core
                    .txns
                    .ssi()
                    .lock()
                    .read_range(self.token, table.root, range)
                    .map(|at| (table.root, at))
            }
            _ => None,
        };
        Ok((Scan::new(self, table, snap, pin, lo, hi), at))
    }

    pub(crate) fn ensure_xid(&mut self) -> Result<Xid> {
        if self.read_only {
            return Err(Error::ReadOnlyTransaction);
        }
        if self.xid == Xid::NONE {
            let inner = self.core();
            self.xid = inner
                .txns
                .manager()
                .assign(self.token, &inner.engine.store().wal)?;
        }
        Ok(self.xid)
    }

    /// Commits. With `Durability::Immediate` the commit is on disk when this returns.
    ///
    /// A transaction that wrote takes a commit timestamp from the
    /// database's clock ([`CommitInfo::ts`]) and, before it becomes
    /// visible and this returns, waits until the clock's `earliest` has
    /// passed it (commit wait; see [`crate::clock`]). A clock that cannot
    /// bound its error fails the commit with `Error::ClockUncertain`
    /// before anything is written: the transaction is rolled back.
    ///
    /// If writing or syncing the log fails once the commit record is
    /// appended, `Error::CommitOutcomeUnknown`: the transaction may have
    /// committed (reopen and read back); the database is poisoned.
    ///
    /// Traced as the span `commit` (target `strata::txn`, level DEBUG) with
    /// the transaction's `xid`, its commit record's `lsn` and
    /// `fsync_wait_us`, the microseconds it waited for the log flush (its
    /// own fsync or a group commit's). With no subscriber interested the
    /// span costs a check of one atomic, and the clock is not read.
    pub fn commit(self) -> Result<CommitInfo> {
        self.commit_with(At::Clock)
    }

    /// Commits at timestamp `ts`, chosen by the caller instead of the
    /// clock: a participant told the timestamp by a protocol above (a
    /// replica applying a log already decided uses
    /// [`commit_applying`](Self::commit_applying)). Otherwise as
    /// [`commit`](Self::commit): durable, then visible once the clock's
    /// `earliest` has passed `ts` (commit wait), and `CommitInfo::ts` is
    /// `ts` (`ZERO` if the transaction wrote nothing: nothing is stamped).
    ///
    /// Refused with `Error::TimestampRefused`, the transaction rolled
    /// back, if `ts` is not above every timestamp this database has
    /// assigned (commits and prepares), or lies further past the clock's
    /// `earliest` than a commit may wait
    /// ([`COMMIT_WAIT_MAX`](crate::clock::COMMIT_WAIT_MAX)).
    pub fn commit_at(self, ts: Timestamp) -> Result<CommitInfo> {
        self.commit_with(At::Chosen(ts))
    }

    /// Commits at timestamp `ts` taken from a replicated log: a replica
    /// applying an entry whose timestamp its leader chose. Unlike
    /// [`commit_at`](Self::commit_at) the outcome depends on nothing of
    /// this replica's but its data: the clock is not read (no bound on how
    /// far ahead `ts` lies, no commit wait), and `ts` is taken even if
    /// not above the high-water mark (a read as of a timestamp served here
    /// may have raised it); the mark still rises to `ts` if below. So every
    /// replica applying the same entry to the same data commits it, at the
    /// same timestamp. With [`set_applied_index`](Self::set_applied_index)
    /// the index is recorded with the commit, as for any commit.
    ///
    /// What the mark no longer guards is the replica's own reads: a read
    /// as of a timestamp at or above `ts`, served here before this commit,
    /// would now answer differently. A replica serves reads only at or
    /// below the timestamps it has applied.
    ///
    /// Refused with `Error::TimestampRefused`, the transaction rolled
    /// back, only for `Timestamp::ZERO` and `Timestamp::MAX` (no commit
    /// takes either).
    pub fn commit_applying(self, ts: Timestamp) -> Result<CommitInfo> {
        self.commit_with(At::Applying(ts))
    }

    fn commit_with(mut self, at: At) -> Result<CommitInfo> {
        let span = tracing::debug_span!(
            target: "strata::txn",
            "commit",
            xid = self.xid.0,
            lsn = tracing::field::Empty,
            fsync_wait_us = tracing::field::Empty,
        );
        let _in = span.enter();
        if let Some(e) = self.doomed() {
            return Err(e);
        }
        self.finished = true;
        self.ssi_prepare()?;
        if self.read_only && self.applied.is_some() {
            // Recording an index is a write.
            self.abort();
            return Err(Error::ReadOnlyTransaction);
        }
        if self.xid == Xid::NONE {
            let lsn = match self.applied {
                Some(index) => applied_alone(self.core(), index),
                None => Ok(Lsn(0)),
            };
            let outcome = if lsn.is_ok() {
                Status::Committed
            } else {
                Status::Aborted
            };
            self.finish(outcome);
            return Ok(CommitInfo {
                xid: Xid::NONE,
                lsn: lsn?,
                ts: Timestamp::ZERO,
            });
        }
        // The clock is read before the latch (a system call less under
        // it); the timestamp is still at least that reading's `latest`.
        // Applying a replicated entry does not read it at all.
        let clock = &*self.core().engine.opts().clock.0;
        let mut reading = match at {
            At::Applying(ts) if ts == Timestamp::ZERO || ts == Timestamp::MAX => {
                self.abort();
                return Err(Error::TimestampRefused {
                    reason: format!("{ts}: no commit takes the first or last timestamp"),
                });
            }
            At::Applying(_) => None,
            At::Clock | At::Chosen(_) => match clock::read(clock) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.abort();
                    return Err(e);
                }
            },
        };
        let inner = self.core();
        let poisoned_before = inner.engine.store().wal.is_poisoned();
        let durable = self
            .log_commit(clock, &mut reading, at)
            .and_then(|(lsn, ts, flight)| {
                flush_commit(inner, &span, lsn)?;
                Ok((lsn, ts, flight))
            });
        match durable {
            Ok((lsn, ts, flight)) => {
                let info = self.publish_commit(lsn, ts, reading);
                // Flushed and visible: the index may be reported.
                if let Some(f) = flight {
                    f.landed(lsn, inner.engine.store().wal.durable());
                }
                Ok(info)
            }
            Err(e) => {
                let e = outcome_unknown(&inner.engine.store().wal, poisoned_before, e);
                self.abort();
                Err(e)
            }
        }
    }

    /// For a serializable transaction, SSI's last dangerous-structure
    /// check; past it, this transaction can no longer be chosen as a
    /// victim. A failure aborts the transaction.
    fn ssi_prepare(&mut self) -> Result<()> {
        if !self.serializable() {
            return Ok(());
        }
        let prepared = self.core().txns.ssi().lock().prepare(self.token);
        if let Err(e) = prepared {
            self.abort();
            return Err(e);
        }
        Ok(())
    }

    /// Under the store's write latch: stamps the commit timestamp (`at`, if
    /// chosen and allowed, else from `reading`, taken again if too old), marks the transaction committed in
    /// the clog and appends the commit record, with the applied index if
    /// set. Returns the record's LSN, the timestamp, and the index in
    /// flight.
    fn log_commit(
        &self,
        clock: &dyn clock::Clock,
        reading: &mut Option<clock::Reading>,
        at: At,
    ) -> Result<(Lsn, Timestamp, Option<applied::Flight>)> {
        // Only a transaction that wrote has an xid to log.
        assert!(self.xid != Xid::NONE);
        let mut w = self.core().engine.store().write();
        let applied = self.core().txns.applied();
        let flight = self
            .applied
            .map(|i| applied::record(&mut w.mtr, applied, i))
            .transpose()?;
        let ts = match (at, reading.as_mut()) {
            (At::Clock, Some(reading)) => commit_ts::stamp(&mut w.mtr, self.xid, clock, reading)?,
            (At::Chosen(ts), Some(reading)) => {
                let high = commit_ts::high_water(&mut w.mtr)?;
                clock::check_chosen(ts, reading.now, high, Timestamp::ZERO)?;
                commit_ts::stamp_at(&mut w.mtr, self.xid, ts)?;
                ts
            }
            (At::Applying(ts), _) => {
                commit_ts::stamp_at(&mut w.mtr, self.xid, ts)?;
                ts
            }
            (At::Clock | At::Chosen(_), None) => {
                return Err(Error::Unsupported(
                    "a commit at the clock without a reading",
                ))
            }
        };
        clog::set_committed(&mut w.mtr, self.xid)?;
        let lsn = w.commit(Kind::Commit, Op::Clog as u8, self.xid)?;
        lsn.map(|lsn| (lsn, ts, flight))
            .ok_or(Error::Unsupported("commit record was not written"))
    }

    /// Once durable: waits out the commit timestamp, then makes the commit
    /// visible and counts the versions it left dead.
    fn publish_commit(
        &self,
        lsn: Lsn,
        ts: Timestamp,
        reading: Option<clock::Reading>,
    ) -> CommitInfo {
        let inner = self.core();
        // The commit hook's seam: past every check, durable, not yet
        // visible. No latch is held, so other commits' fsyncs go on.
        // (A replicated entry's leader waited out its timestamp.)
        if let Some(reading) = reading {
            commit_wait(inner, ts, reading);
        }
        self.finish(Status::Committed);
        inner.engine.note_dead(self.versions.dead_if_committed());
        inner.txns.waits().finished();
        inner.changes.notify();
        CommitInfo {
            xid: self.xid,
            lsn,
            ts,
        }
    }

    /// Publishes the outcome to MVCC, then reports it to SSI.
    fn finish(&self, outcome: Status) {
        let inner = self.core();
        let reads = self.reads.take();
        inner.txns.ssi().finish(
            inner.txns.manager(),
            self.token,
            self.xid,
            outcome,
            reads,
            inner.engine.opts(),
        );
    }

    /// Prepares the transaction for two-phase commit under the global id
    /// `gid`: runs every check a commit runs, then records it durably
    /// (always forced to disk). From then on it can no longer fail on its
    /// own; it keeps its row locks and stays invisible, across restarts,
    /// until [`Db::commit_prepared`](crate::Db::commit_prepared) or
    /// [`Db::rollback_prepared`](crate::Db::rollback_prepared) decides.
    ///
    /// Returns its prepare timestamp (also in
    /// [`PreparedTransaction::prepare_ts`](crate::PreparedTransaction)): at
    /// least the clock's `latest`, above every timestamp the database
    /// assigned, and logged with the prepare, so it survives restarts. It
    /// raises the database's high-water mark: every later commit here,
    /// this transaction's own included, is above it, and a coordinator may
    /// commit it at any timestamp not below it
    /// ([`Db::commit_prepared_at`](crate::Db::commit_prepared_at)).
    ///
    /// Errors: `DuplicateTransaction` (the gid is in use), `InvalidGid`,
    /// `TooManyPrepared`, `ClockUncertain` (no clock, no vote), or what
    /// `commit` would return; after an error
    /// the transaction is rolled back — except `PrepareOutcomeUnknown`
    /// (the log failed once the prepare record was appended): the database
    /// is poisoned, and after reopening the gid may be in doubt.
    pub fn prepare(self, gid: &str) -> Result<Timestamp> {
        self.prepare_with(gid, PrepareAt::Clock)
    }

    /// Prepares as [`prepare`](Self::prepare), at the prepare timestamp
    /// `ts` taken from a replicated log or a snapshot stream: a replica
    /// applying a prepare entry, or an import re-preparing a transaction
    /// carried in doubt. As [`commit_applying`](Self::commit_applying)
    /// for a commit, the outcome depends on nothing of this database's but
    /// its data: the clock is not read (no `ClockUncertain`, no bound on
    /// how far ahead `ts` lies), and `ts` is taken even if not above the
    /// high-water mark; the mark still rises to `ts` if below. `ts` is
    /// logged with the prepare and returned, and survives restarts, as a
    /// prepare timestamp from the clock does. Everything else is
    /// `prepare`'s: the same checks and errors, nowait, and with
    /// [`set_applied_index`](Self::set_applied_index) the index recorded
    /// with the prepare.
    ///
    /// What the mark no longer guards is the replica's own reads: a read
    /// as of a timestamp at or above `ts`, served here before this
    /// prepare, would answer differently once the transaction commits at
    /// or below it. A replica serves reads only at or below the
    /// timestamps it has applied. A decision at a chosen timestamp is
    /// still held to no less than `ts`
    /// ([`Db::commit_prepared_at`](crate::Db::commit_prepared_at)).
    ///
    /// Refused with `Error::TimestampRefused`, the transaction rolled
    /// back and the gid free, for `Timestamp::ZERO` and `Timestamp::MAX`.
    pub fn prepare_applying(self, gid: &str, ts: Timestamp) -> Result<Timestamp> {
        self.prepare_with(gid, PrepareAt::Applying(ts))
    }

    fn prepare_with(mut self, gid: &str, at: PrepareAt) -> Result<Timestamp> {
        if let Some(e) = self.doomed() {
            return Err(e);
        }
        self.core().engine.writable()?;
        self.core().txns.prepared().reserve(gid)?;
        self.finished = true;
        let poisoned_before = self.core().engine.store().wal.is_poisoned();
        let r = self.prepare_reserved(gid, at);
        if let Err(e) = r {
            self.core().txns.prepared().release(gid);
            self.abort();
            let wal = &self.core().engine.store().wal;
            return Err(match poisoned_cause(wal, poisoned_before, &e) {
                Some(cause) => Error::PrepareOutcomeUnknown { cause },
                None => e,
            });
        }
        r
    }

    fn prepare_reserved(&mut self, gid: &str, at: PrepareAt) -> Result<Timestamp> {
        let inner = self.core();
        let clock = &*inner.engine.opts().clock.0;
        // Applying a replicated prepare does not read the clock at all.
        let mut reading = match at {
            PrepareAt::Applying(ts) if ts == Timestamp::ZERO || ts == Timestamp::MAX => {
                return Err(Error::TimestampRefused {
                    reason: format!("{ts}: no prepare takes the first or last timestamp"),
                });
            }
            PrepareAt::Applying(_) => None,
            PrepareAt::Clock => Some(clock::read(clock)?),
        };
        let mut reads = prepare::Reads::Untracked;
        if self.serializable() {
            let mut ssi = inner.txns.ssi().lock();
            ssi.prepare(self.token)?;
            if let Some(set) = self.reads.borrow().as_ref() {
                reads = prepare::Reads::Tables(ssi.tables_read(self.token, set));
            }
        }
        let mut entry = prepare::Entry {
            gid: gid.to_owned(),
            xid: self.xid,
            prepared_at: std::time::SystemTime::now(),
            prepare_ts: Timestamp::ZERO,
            reads,
        };
        let (lsn, flight) = {
            let mut w = inner.engine.store().write();
            // Taken under the latch, as a commit's: no commit can slip in
            // between reading the high-water mark and raising it.
            let flight = self
                .applied
                .map(|i| applied::record(&mut w.mtr, inner.txns.applied(), i))
                .transpose()?;
            entry.prepare_ts = match (at, reading.as_mut()) {
                (PrepareAt::Clock, Some(reading)) => {
                    commit_ts::reserve(&mut w.mtr, clock, reading)?
                }
                (PrepareAt::Applying(ts), _) => {
                    commit_ts::reserve_at(&mut w.mtr, ts)?;
                    ts
                }
                (PrepareAt::Clock, None) => {
                    return Err(Error::Unsupported(
                        "a prepare at the clock without a reading",
                    ))
                }
            };
            prepare::insert(&mut w.mtr, &entry)?;
            (w.commit(Kind::Pages, Op::Prepared as u8, self.xid)?, flight)
        };
        if let Some(lsn) = lsn {
            inner.engine.store().wal.flush(lsn, true)?;
        }
        // Listed before its index is reported: whoever sees the index (an
        // export's cut, `snapshot::export`) finds the transaction in doubt.
        let landed = lsn.zip(flight);
        inner.txns.prepared().waiting(
            gid,
            prepare::InDoubt {
                token: self.token,
                xid: self.xid,
                prepared_at: entry.prepared_at,
                prepare_ts: entry.prepare_ts,
                reads: self.reads.take(),
                versions: self.versions,
            },
        );
        if let Some((lsn, f)) = landed {
            f.landed(lsn, inner.engine.store().wal.durable());
        }
        Ok(entry.prepare_ts)
    }

    /// Rolls back: every write of the transaction is discarded.
    pub fn rollback(mut self) -> Result<()> {
        self.finished = true;
        self.abort();
        Ok(())
    }

    fn abort(&mut self) {
        let inner = self.core();
        self.finish(Status::Aborted);
        if self.xid != Xid::NONE {
            inner.engine.note_dead(self.versions.dead_if_aborted());
            inner.txns.waits().finished();
        }
    }
}

/// Whether a scan marks its range for SSI (`Transaction::scan_in`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Range,
    /// The caller marked a range that holds this one.
    Covered,
}

/// A range's bounds, refused if a bound is longer than any key can be.
fn bounds<R: KeyRange>(range: R) -> Result<ssi::Range> {
    let (lo, hi) = range.into_bounds();
    for b in [&lo, &hi] {
        if let Bound::Included(k) | Bound::Excluded(k) = b {
            if k.len() > KEY_MAX {
                return Err(Error::KeyTooLarge { len: k.len() });
            }
        }
    }
    Ok((lo, hi))
}

/// Records the applied index `index` in a record of its own, durable as
/// a commit is (`Db::set_applied_index`, and a transaction that wrote
/// nothing).
/// A failure once the record may be in the log is `CommitOutcomeUnknown`,
/// as a commit's.
pub(crate) fn applied_alone(inner: &Core, index: u64) -> Result<Lsn> {
    inner.engine.writable()?;
    let wal = &inner.engine.store().wal;
    let poisoned_before = wal.is_poisoned();
    let logged = (|| {
        let mut w = inner.engine.store().write();
        let flight = applied::record(&mut w.mtr, inner.txns.applied(), index)?;
        let lsn = w
            .commit(Kind::Pages, Op::Applied as u8, Xid::NONE)?
            .ok_or(Error::Unsupported("applied index record was not written"))?;
        Ok((lsn, flight))
    })();
    let (lsn, flight) = logged.map_err(|e| outcome_unknown(wal, poisoned_before, e))?;
    flush_commit(inner, &tracing::Span::none(), lsn)
        .map_err(|e| outcome_unknown(wal, poisoned_before, e))?;
    flight.landed(lsn, wal.durable());
    Ok(lsn)
}

/// Flushes the log through a commit's record `lsn` (synced under
/// `Durability::Immediate`), recording in `span`, when a subscriber wants
/// it, the record's LSN and the microseconds the flush waited.
fn flush_commit(inner: &Core, span: &tracing::Span, lsn: Lsn) -> Result<()> {
    let started = (!span.is_disabled()).then(std::time::Instant::now);
    inner
        .engine
        .store()
        .wal
        .flush(lsn, inner.engine.opts().durability == Durability::Immediate)?;
    if let Some(t) = started {
        span.record("lsn", lsn.0);
        span.record("fsync_wait_us", t.elapsed().as_micros() as u64);
    }
    Ok(())
}

/// What a failed commit (or `commit_prepared`) reports. If the log was
/// poisoned after the commit began, its record may be on disk although the
/// call failed: a failed write may have landed in part, and the kernel may
/// still write back what a failed fsync left dirty, so reopening can find
/// it committed. Reporting that as `Poisoned` would read as an abort. If
/// the log was poisoned before, the record was never appended (appends
/// fail first), and the transaction did not commit.
pub(crate) fn outcome_unknown(wal: &crate::wal::Wal, poisoned_before: bool, e: Error) -> Error {
    match poisoned_cause(wal, poisoned_before, &e) {
        Some(cause) => Error::CommitOutcomeUnknown { cause },
        None => e,
    }
}

/// The failure that poisoned the log during an operation whose record may
/// have reached the disk (`None` if the log was poisoned before it began,
/// so nothing was appended, or is not poisoned).
fn poisoned_cause(wal: &crate::wal::Wal, poisoned_before: bool, e: &Error) -> Option<String> {
    if poisoned_before || !wal.is_poisoned() {
        return None;
    }
    Some(wal.poison_cause().unwrap_or_else(|| e.to_string()))
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if !self.finished {
            self.finished = true;
            self.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Db, Options};

    // Guards against counting a delete's version as dead while the delete
    // is still in progress: a long delete set off background vacuum passes
    // that could remove nothing and fought the deleter for the latch.
    #[test]
    fn versions_count_as_dead_only_once_the_outcome_is_known() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = Options::default().vacuum_threshold(0);
        let db = Db::open_with(dir.path(), opts).expect("open");
        let t = db.table("t").expect("table");
        let dead = || db.core().engine.vacuum_due().0;
        let mut tx = db.begin().expect("begin");
        for i in 0..10u8 {
            tx.put(&t, [i], b"v").expect("put");
        }
        tx.commit().expect("commit");
        assert_eq!(dead(), 0, "new rows replace nothing");

        let mut tx = db.begin().expect("begin");
        for i in 0..6u8 {
            assert!(tx.delete(&t, [i]).expect("delete"));
        }
        tx.put(&t, [9], b"w").expect("update");
        tx.put(&t, [20], b"new").expect("insert");
        assert_eq!(dead(), 0, "nothing is dead while the writer runs");
        tx.commit().expect("commit");
        assert_eq!(dead(), 7, "six deleted and one updated version");

        let mut tx = db.begin().expect("begin");
        tx.put(&t, [7], b"x").expect("update");
        tx.put(&t, [30], b"y").expect("insert");
        tx.delete(&t, [8]).expect("delete");
        tx.rollback().expect("rollback");
        assert_eq!(dead(), 9, "an abort leaves its two new versions dead");
    }
}
