//! The change stream: committed transactions in commit order, each with
//! its xid, commit LSN, commit timestamp and the keys it changed, readable
//! from any position the log still holds.
//!
//! ```text
//!   log:     | put t/a x7 | put t/b x8 | commit x8 | del t/a x7 | commit x7 |
//!   stream:    x8 { t/b = its value as of ts8 }, then x7 { t/a deleted }
//!              each with the position after it: (restart, next)
//!                 x8: restart = x7's first record, next = end of x8's commit
//! ```
//!
//! **Where the values come from.** The log names the table and key of every
//! put and delete (FORMAT.md §3.3), but logs values only as page changes,
//! which cannot be read without the page as it was before. Two ways out:
//! log each value a second time, logically (a format change, and every
//! write pays for it), or take only *which* keys a transaction wrote from
//! the log and read their values from the database as of the
//! transaction's commit timestamp. Measured (2026-12-07, 2-core VM,
//! release build, 5 000 puts of 11-byte keys in transactions of ten,
//! `Durability::Eventual`): a put logs 262 bytes with a 16-byte value,
//! 347 with 100 bytes, 1 249 with 1 000; the key and value again would be
//! some 13%, 35% and 82% more log, and a 64 MiB value twice. Reading the
//! same stream back took 0.8–1.1 µs a change (warm cache), against
//! 1.8–3.5 µs a put to write it. strata does the second: no format change
//! and no cost to writers; the price is that a reader must keep vacuum
//! from freeing the versions it has yet to read (below), and a B+tree
//! lookup per key changed.
//!
//! **Why "as of the commit timestamp" is exactly the transaction's
//! writes.** A key's writers hold its row lock until they commit, so the
//! writers of one key commit one after another, and each takes a timestamp
//! above every timestamp assigned before it (a chosen one, `commit_at`,
//! too); a prepared transaction takes its prepare timestamp above every
//! earlier one and commits at or above it. So on each key a transaction
//! wrote, the writer before it is stamped below it and the writer after it
//! above it, and the read as of its timestamp sees its own version of each
//! — whatever other transactions, prepared or not, are stamped near it.
//! Such a read waits for nothing (`Db::begin_at` waits until no commit can
//! still land at or below its timestamp; on these keys none can).
//!
//! **Which transactions, in which order.** The order of commit records in
//! the log: a commit record (`Kind::Commit`, of a transaction or of a
//! decision to commit a prepared one) emits its transaction; an abort
//! record (a prepared one rolled back) drops it; other rollbacks are not
//! logged, so a transaction neither running nor committed is dropped
//! (`scan::Scan::prune`). A commit is returned once its record is durable
//! and it is visible — never one a power loss could take back, under
//! either durability (under `Eventual`, so, only once the background flush
//! or a checkpoint has synced it). Timestamps rise along the stream, except
//! for a prepared transaction committed at a chosen timestamp
//! (`commit_prepared_at`) below later commits.
//!
//! **Positions.** A transaction's writes may precede an earlier one's
//! commit, so a position is two LSNs ([`ChangePos`], PostgreSQL's
//! `restart_lsn` and confirmed position): where to read from to meet every
//! write of every transaction still to come (`restart`), and past which
//! commits are still to come (`next`). Each returned transaction carries
//! the position after it; reading from it returns exactly the rest.
//! `Db::change_position` is the position "now": the end of the log, and
//! the first record of every transaction writing then, which the
//! transaction manager notes when it hands out an xid. It syncs the log
//! up to that end before it returns: a position not yet durable could lie
//! past the log a crash leaves, where new commits would take LSNs below
//! it and a reader from it would skip them. (Capping it at the durable
//! end would not do: a transaction committed in the unsynced tail runs no
//! longer, so `restart` would not reach back to its earlier writes.) Every
//! position strata hands out is so durable; one past the log's end — from
//! another database, or cut off by a crash — is refused
//! (`Error::ChangePositionAhead`), never read as "nothing yet". A writer
//! that began before the oldest retained log and still runs holds
//! `restart` before it: a reader cannot start at `change_position` (it is
//! `ChangesLost`) until that writer ends. A bare LSN is the
//! position `{ restart: lsn, next: lsn }`: right only where no transaction
//! was writing across it. The log cannot tell a transaction whose writes
//! lie before such an LSN from one that logged none (a delete of a key
//! that was not there takes an xid and writes nothing), so the stream
//! cannot detect it: use the positions this module returns.
//!
//! **Retention.** A registered reader holds the log from its last
//! returned `restart` against recycling (`txn::change_readers`), up to
//! `Options::change_retention_bytes` behind the log's end; past it the
//! checkpoint recycles anyway, marks the reader lost, and its next read
//! fails with `Error::ChangesLost` — as does a reader started before the
//! oldest retained log. It also holds the history horizon: at the horizon
//! when it starts, then at the timestamp of the last transaction it
//! returned. A version a later transaction wrote is replaced only by a
//! commit stamped above everything assigned before, so above that hold,
//! and vacuum keeps it. (A reader marked lost drops that hold with its
//! registration, so one that stopped reading costs bounded log and, from
//! then on, no history.) A transaction stamped below the horizon the reader
//! started at may have lost versions to vacuum before the reader came:
//! that is `Error::SnapshotTooOld`, never a wrong value
//! (`Options::history_retention` keeps history for readers resuming after
//! a restart) — unless it was still running when the reader took its
//! hold: a prepared transaction committed since at a timestamp chosen
//! below that horizon. Nothing it wrote can be gone: its versions were not
//! committed before the hold, and a later writer of any of its keys (or of
//! a table it wrote or renamed, which waits for it as well) commits after
//! it, above every timestamp assigned before — above the reader's hold —
//! so vacuum keeps what such a writer replaced; its versions are the
//! newest at the hold, and the read as of its timestamp needs nothing
//! else. A checkpoint that marks a reader lost lets its hold go at once,
//! possibly while the reader is reading a transaction, so the reader
//! checks again after its reads and returns `ChangesLost` rather than what
//! it read.
//!
//! **Errors.** A reader takes a transaction off its queue only once it is
//! built whole: after any error the reader is where it was, and the next
//! call returns the same transaction or the same error. `next`'s timeout
//! is measured on `Options::clock` (a simulated clock moves it only when
//! the clock moves). Nothing persists a reader: after a reopen, a consumer
//! resumes from the position it stored, as far as the log and history
//! still reach.
//!
//! **Tables.** Creating, dropping and renaming a table are changes of
//! their own ([`ChangeKind::TableCreated`], ...); a table created by its
//! first write shows as both. A transaction's table changes come first,
//! in its log order, then its key changes, each under its table's name at
//! the commit: a replica applying them in order has heard of every table
//! before it writes in it. A rename is resolved by the table's identity,
//! its root page, which the rename record names (FORMAT.md §3.3), and the
//! catalog as of the commit timestamp itself: its new name is the one the
//! same table's next rename or drop in the transaction names, else its
//! name at the commit. So a → b → c in one transaction is two renames,
//! a → b and b → c; a table created and renamed in one transaction is
//! created under its first name and renamed, in that order. Nothing older
//! than the commit is read (the catalog row a rename replaced may be gone
//! by then: a prepared rename committed below the reader's hold); only a
//! rename logged before records named the table is resolved through the
//! catalog as of just before its commit, and that read is
//! `SnapshotTooOld` once the horizon has passed it. Writes to a table the
//! same transaction dropped are not shown (the drop is).
//!
//! Not done here: filtering by table, decoding without the database (the
//! log alone does not hold values), persisting readers across reopens.

mod scan;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::ids::{Lsn, PageId, Xid};
use crate::limits::CHANGE_WAIT_SLICE;
use crate::mvcc::commit_ts;
use crate::mvcc::history::Known;
use crate::mvcc::Snapshot;
use crate::options::RacePoint;
use crate::txn::as_of::AsOfRead;
use crate::txn::locks::Deadline;
use crate::txn::{Core, Transaction};
use scan::{Scan, Touch};

/// A position in the change stream: what a consumer stores to resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChangePos {
    /// Reading starts here: at or before the first log record of every
    /// transaction that commits after `next`.
    pub restart: Lsn,
    /// Transactions whose commit record ends after this are still to come.
    pub next: Lsn,
}

impl From<Lsn> for ChangePos {
    /// The position at a bare LSN: right only where no transaction was
    /// writing across it (see `Db::change_position`).
    fn from(lsn: Lsn) -> ChangePos {
        ChangePos {
            restart: lsn,
            next: lsn,
        }
    }
}

/// One committed transaction, as the change stream returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeSet {
    /// Its transaction id.
    pub xid: Xid,
    /// LSN just past its commit record (as `CommitInfo::lsn`).
    pub lsn: Lsn,
    /// Its commit timestamp.
    pub ts: Timestamp,
    /// What it changed: each key once, with its value after the commit, in
    /// the order the transaction first wrote them.
    pub changes: Vec<Change>,
    /// The position just after it: reading from here returns what follows.
    pub resume: ChangePos,
}

/// One change of a committed transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The table's name when the transaction committed (for a rename, the
    /// old name).
    pub table: String,
    /// The key (empty for a change to the table itself).
    pub key: Vec<u8>,
    /// What happened.
    pub kind: ChangeKind,
}

/// What a change did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeKind {
    /// The key holds this value.
    Put(Vec<u8>),
    /// The key was deleted (or written and deleted again).
    Delete,
    /// The table was created.
    TableCreated,
    /// The table was dropped.
    TableDropped,
    /// The table was renamed to `to`.
    TableRenamed {
        /// Its new name.
        to: String,
    },
}

/// A registered reader of the change stream (`Db::change_reader`). While
/// it lives it holds back log recycling (up to
/// `Options::change_retention_bytes`) and vacuum's history horizon;
/// dropping it lets both go.
pub struct ChangeReader {
    db: Db,
    id: u64,
    scan: Scan,
    pos: ChangePos,
    /// The timestamp of the history this reader keeps (its hold, in the
    /// registry): versions replaced by commits stamped above it stay.
    kept: Timestamp,
    /// The history horizon when the reader started: transactions stamped
    /// below it may have lost versions before the reader held them.
    floor: Timestamp,
    /// The transactions running when the reader's hold was in place: one
    /// of them stamped below `floor` (a prepared one committed at a
    /// chosen timestamp) lost nothing (see `poll`).
    running: Snapshot,
}

impl std::fmt::Debug for ChangeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeReader")
            .field("position", &self.pos)
            .finish()
    }
}

fn wal_dir(core: &Core) -> PathBuf {
    core.engine.dir().join(crate::dir::WAL_DIR)
}

impl Db {
    /// Starts reading the change stream at `from` (a position a
    /// [`ChangeSet`] returned, or [`Db::change_position`]): the committed
    /// transactions whose commit records end after `from.next`, in commit
    /// order. Errors: `ChangesLost` if the log no longer holds
    /// `from.restart`; `ChangePositionAhead` if `from.next` lies past the
    /// log's end (not a position of this log).
    pub fn change_reader(&self, from: impl Into<ChangePos>) -> Result<ChangeReader> {
        let from = from.into();
        if from.restart > from.next {
            return Err(Error::Unsupported(
                "a change position's restart LSN lies after its next one",
            ));
        }
        let core = self.core();
        let wal = &core.engine.store().wal;
        let end = wal.end();
        if from.next > end {
            return Err(Error::ChangePositionAhead {
                next: from.next,
                end,
            });
        }
        let hold = core.txns.history().hold_horizon();
        let floor = hold.ts();
        let id = core.changes.register(from.restart, hold, || wal.oldest())?;
        // Taken after the hold: a transaction running here commits after
        // the hold was in place (see `poll`).
        let running = core.txns.manager().snapshot();
        Ok(ChangeReader {
            db: self.clone(),
            id,
            scan: Scan::new(from.restart, from.next),
            pos: from,
            kept: floor,
            floor,
            running,
        })
    }

    /// The change stream's position now: a reader started here returns
    /// every transaction that commits from now on, and nothing before.
    ///
    /// The position is durable before it is returned (the log is synced
    /// up to it: one fsync, if the log's tail was not synced yet), so a
    /// crash cannot cut the log below it and let new commits take LSNs
    /// a reader from it would skip. (Capping it at the durable end instead
    /// would not do: a transaction committed in the unsynced tail, whose
    /// earlier writes lie below the durable end, is no longer running and
    /// so not below `restart`; a reader would meet its commit without its
    /// writes.)
    ///
    /// A writer that began before the oldest retained log and is still
    /// running keeps `restart` there: a reader started here fails with
    /// `ChangesLost` until that writer ends. While a transaction recovered
    /// prepared at open is in doubt, where its writes lie in the log is
    /// not known here: the position then starts at LSN 0, which a reader
    /// finds recycled (`ChangesLost`) — resume from a position the stream
    /// returned instead.
    ///
    /// Errors: those of syncing the log (`Poisoned` once it failed).
    pub fn change_position(&self) -> Result<ChangePos> {
        let core = self.core();
        let wal = &core.engine.store().wal;
        let (first, end) = core.txns.manager().oldest_first_lsn(|| wal.end());
        wal.flush(end, true)?;
        Ok(ChangePos {
            restart: first.map_or(end, |f| f.min(end)),
            next: end,
        })
    }
}

impl ChangeReader {
    /// The next committed transaction, waiting up to `timeout` (measured
    /// on `Options::clock`) for one to commit; `None` if none did.
    ///
    /// Errors: `ChangesLost` once the log this reader needs was recycled
    /// (it fell further behind than `Options::change_retention_bytes`);
    /// `SnapshotTooOld` for a transaction stamped below the history
    /// horizon the reader started at; `Corruption` for a damaged log.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<ChangeSet>> {
        let core = self.db.core_arc();
        let clock = &*core.engine.opts().clock.0;
        let deadline = Deadline::after(clock, timeout);
        loop {
            let seen = core.changes.seq();
            if let Some(set) = self.poll(&core)? {
                return Ok(Some(set));
            }
            let left = deadline.remaining();
            if left.is_zero() {
                return Ok(None);
            }
            core.changes.wait(seen, left.min(CHANGE_WAIT_SLICE));
        }
    }

    /// The position after the last transaction returned (where it started,
    /// before the first).
    pub fn position(&self) -> ChangePos {
        self.pos
    }

    fn check_lost(&self, core: &Core) -> Result<()> {
        match core.changes.lost(self.id) {
            Some(oldest) => Err(Error::ChangesLost {
                from: self.pos.restart,
                oldest,
            }),
            None => Ok(()),
        }
    }

    /// Returns the next transaction if one is durable and visible. It
    /// leaves the queue as it was until the transaction is built whole: an
    /// error leaves the reader where it was, and the next call returns the
    /// same transaction (or the same error).
    fn poll(&mut self, core: &Core) -> Result<Option<ChangeSet>> {
        self.check_lost(core)?;
        if self.scan.ready.is_empty() {
            // Running transactions first: one not running afterwards and
            // not committed has no commit in the log read next.
            let running = core.txns.manager().snapshot();
            let store = core.engine.store();
            let limit = store.wal.durable();
            let read = self.scan.read(core.engine.vfs(), &wal_dir(core), limit);
            if let Err(e) = read {
                self.check_lost(core)?;
                return Err(e);
            }
            self.scan.prune(&running, core.txns.manager().clog());
        }
        let Some(c) = self.scan.ready.front() else {
            return Ok(None);
        };
        // Its record is durable; once it is visible too, its versions are
        // what a read as of its timestamp sees.
        let snap = core.txns.manager().snapshot();
        if c.xid >= snap.xmin && snap.xip.binary_search(&c.xid).is_ok() {
            return Ok(None);
        }
        let ts =
            commit_ts::lookup(&mut core.engine.store().read().view, c.xid)?.ok_or_else(|| {
                let (file, offset) = scan::locate(core.engine.vfs(), &wal_dir(core), c.end);
                Error::corruption(
                    file,
                    offset,
                    format!(
                        "transaction {} has a commit record ending here but no commit timestamp",
                        c.xid.0
                    ),
                )
            })?;
        // Stamped below the horizon the reader started at: vacuum may have
        // freed its versions before the reader held them — unless it was
        // still running when the hold was taken (a prepared transaction,
        // committed since at its chosen timestamp). Then nothing it wrote
        // can be gone: its versions were not committed before the hold,
        // and a later writer of any of its keys (or of a table it wrote or
        // renamed, which waits for it too) commits after it, above every
        // timestamp assigned before, so above this reader's hold — vacuum
        // keeps what such a writer replaced. The read as of `ts` sees its
        // versions, and reads nothing else the hold does not keep.
        if ts < self.floor && !self.running_at_start(c.xid) {
            return Err(Error::SnapshotTooOld {
                ts,
                horizon: self.floor,
            });
        }
        core.engine.race(RacePoint::ChangeRead);
        let changes = self.decode(core, ts, c.xid, &c.touched, c.end)?;
        let (xid, lsn, restart) = (c.xid, c.end, c.restart);
        // A checkpoint may have marked this reader lost (and let its hold
        // on the history go) since the check above, while it read: vacuum
        // could then have freed what it read. Not lost now means the hold
        // was there throughout.
        self.check_lost(core)?;
        self.scan.ready.pop_front();
        let resume = ChangePos { restart, next: lsn };
        self.pos = resume;
        let hold = (ts > self.kept).then(|| core.txns.history().hold_kept(ts));
        self.kept = self.kept.max(ts);
        core.changes.advance(self.id, restart, hold);
        Ok(Some(ChangeSet {
            xid,
            lsn,
            ts,
            changes,
            resume,
        }))
    }

    /// Whether `xid` was running when this reader's hold was taken.
    fn running_at_start(&self, xid: Xid) -> bool {
        xid >= self.running.xmax || self.running.xip.binary_search(&xid).is_ok()
    }

    /// A read as of `ts`, kept by this reader's hold (no wait: see the
    /// module's essay).
    fn read_at(&self, ts: Timestamp) -> Result<Transaction> {
        let core: Arc<Core> = self.db.core_arc();
        let hold = core.txns.history().hold_kept(ts);
        self.read_held(core, hold)
    }

    fn read_held(&self, core: Arc<Core>, hold: crate::mvcc::history::Hold) -> Result<Transaction> {
        Transaction::begin_as_of(
            core,
            self.db.holder(),
            AsOfRead {
                hold,
                known: Known::default(),
            },
        )
    }

    /// The changes of a transaction committed at `ts` that touched
    /// `touched`: its table changes first, in its log order, then its key
    /// changes, each under its table's name at `ts` — so that a replica
    /// applying them in order has heard of every table before it writes in
    /// it.
    fn decode(
        &self,
        core: &Core,
        ts: Timestamp,
        xid: Xid,
        touched: &[Touch],
        end: Lsn,
    ) -> Result<Vec<Change>> {
        let tx = self.read_at(ts)?;
        let tables = tx.tables_with_roots()?;
        let name_of = |root: PageId| tables.iter().find(|(_, r)| *r == root).map(|(n, _)| n);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let damage = |what: String| {
            let (file, offset) = scan::locate(core.engine.vfs(), &wal_dir(core), end);
            Error::corruption(file, offset, what)
        };
        let mut out: Vec<Change> = Vec::new();
        for (i, t) in touched.iter().enumerate() {
            let (table, kind) = match t {
                Touch::Key { .. } => continue,
                Touch::Create(n) => (text(n), ChangeKind::TableCreated),
                Touch::Drop { name, .. } => (text(name), ChangeKind::TableDropped),
                Touch::Rename { old, root } => {
                    // The new name is the one the table's next rename or
                    // drop in this transaction names, else its name at `ts`.
                    let next = touched[i + 1..].iter().find_map(|t| match t {
                        Touch::Rename { old: n, root: r } | Touch::Drop { name: n, root: r }
                            if r == root =>
                        {
                            Some(text(n))
                        }
                        _ => None,
                    });
                    let page = PageId(u32::try_from(*root).unwrap_or(0));
                    let to = match next.or_else(|| name_of(page).cloned()) {
                        Some(to) => to,
                        None => {
                            return Err(damage(format!(
                                "transaction {} committed here renamed table page {page}, \
                                 which no table had at {ts}",
                                xid.0
                            )))
                        }
                    };
                    (text(old), ChangeKind::TableRenamed { to })
                }
            };
            out.push(Change {
                table,
                key: Vec::new(),
                kind,
            });
        }
        let dropped = touched.iter().any(|t| matches!(t, Touch::Drop { .. }));
        let mut seen = std::collections::HashSet::new();
        for t in touched {
            let Touch::Key { root, key } = t else {
                continue;
            };
            if !seen.insert((*root, key.as_slice())) {
                continue;
            }
            let root = PageId(u32::try_from(*root).unwrap_or(0));
            let Some(name) = name_of(root) else {
                // Writes to a table this transaction dropped: the drop is
                // the change.
                if dropped {
                    continue;
                }
                return Err(damage(format!(
                    "the transaction committed here wrote in table page {root}, \
                     which no table had at {ts}"
                )));
            };
            let v = tx.get(&self.db.table(name)?, key)?;
            let kind = v.map_or(ChangeKind::Delete, ChangeKind::Put);
            out.push(Change {
                table: name.clone(),
                key: key.clone(),
                kind,
            });
        }
        Ok(out)
    }
}

impl Drop for ChangeReader {
    fn drop(&mut self) {
        self.db.core().changes.unregister(self.id);
    }
}
