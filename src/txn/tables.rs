//! Tables in a transaction: resolving a handle's name against the
//! transaction's snapshot, and creating, dropping and renaming tables as
//! writes of catalog rows (`catalog` argues why the catalog is an MVCC
//! table).
//!
//! Reads resolve a name by reading its catalog row as any row is read
//! (with an SSI mark on the catalog key, so a serializable reader that
//! found a table absent meets a concurrent creator as an rw-conflict). A
//! table no visible transaction created reads as empty in a read-write
//! transaction (as redb's write transactions open-or-create) and fails
//! with `NoSuchTable` in a read-only one.
//!
//! Writes check the catalog row under the store's write latch, once per
//! transaction and table, with the write path's rules (`txn::write`): a
//! row created, dropped or renamed by a running transaction is waited
//! for; one changed by a transaction that committed unseen by the
//! snapshot fails Snapshot and Serializable (first updater wins); Read
//! Committed goes on with the catalog as it is now. A name with no live
//! row gets one: the table is created, in the same mini-transaction as
//! its root page, by the writing transaction.
//!
//! A drop or rename concurrent with a writer of the table: PostgreSQL's
//! `DROP TABLE` takes an exclusive lock and waits for every transaction
//! holding one on the table. Here a writer registers in `Writers` (under
//! the latch, at its first write to the table), and a drop or rename waits
//! for every running writer registered for the table, as for a row lock
//! (bounded by the lock timeout, deadlocks detected). A writer coming
//! after the drop's stamp waits for the dropper instead, and if the drop
//! commits, fails (Snapshot, Serializable) or, under Read Committed,
//! writes into a new table of that name. So no commit ever lands in a
//! table dropped before it. Readers never wait: an old snapshot keeps
//! reading a dropped table, whose pages vacuum frees only once no
//! snapshot sees it.
//!
//! The cache: each transaction remembers what each name resolved to.
//! Snapshot and Serializable transactions read one snapshot, so an answer
//! holds for their life; a Read Committed answer holds while the catalog
//! epoch (bumped in the step that publishes a commit that changed the
//! catalog, `TxnManager`) is the one its snapshot was taken at. A name
//! checked for writing holds for good: the transaction is a registered
//! writer, and no one drops or renames the table under it.

use super::locks::Deadline;
use std::collections::HashMap;

use super::Transaction;
use crate::btree;
use crate::buffer::mtr::{Mtr, PageAccess};
use crate::catalog::{self, Table};
use crate::error::{Error, Result};
use crate::heap::{self, tuple};
use crate::ids::{PageId, Tid, Xid};
use crate::limits::TABLE_NAME_MAX;
use crate::mvcc::chain::{self, Cursor, Version};
use crate::mvcc::{visible, Seen, Snapshot, Status, StatusOf};
use crate::options::Isolation;
use crate::redo::record::Op;
use crate::sync::Mutex;

/// Entries a transaction's cache searches in order before it indexes them.
const LINEAR_MAX: usize = 16;
/// Tables the writer registry holds before it drops finished writers.
const WRITERS_PRUNE_AT: usize = 1024;
/// Waits for holders of a catalog row in one operation (each bounded by
/// the lock timeout; every wait ends a holder, so this is never reached
/// in practice).
const WAITS_MAX: usize = 1 << 16;

/// What a transaction found a name to be.
struct Resolved {
    /// The handle it was asked with.
    table: Table,
    root: Option<PageId>,
    /// The catalog epoch of the snapshot it was resolved under (Read
    /// Committed).
    epoch: u64,
    /// Checked for writing: holds for the rest of the transaction.
    written: bool,
}

/// A transaction's resolved tables.
#[derive(Default)]
pub(super) struct Cache {
    entries: Vec<Resolved>,
    /// Name → entry, once there are more than `LINEAR_MAX`.
    index: HashMap<Box<str>, usize>,
}

impl Cache {
    fn find(&self, t: &Table) -> Option<usize> {
        if self.entries.len() > LINEAR_MAX {
            return self.index.get(t.name()).copied();
        }
        self.entries
            .iter()
            .position(|e| e.table.same_handle(t) || e.table.name() == t.name())
    }

    fn set(&mut self, t: &Table, root: Option<PageId>, epoch: u64, written: bool) {
        let r = Resolved {
            table: t.clone(),
            root,
            epoch,
            written,
        };
        match self.find(t) {
            Some(i) => self.entries[i] = r,
            None => {
                self.entries.push(r);
                if self.entries.len() > LINEAR_MAX {
                    if self.index.is_empty() {
                        for (i, e) in self.entries.iter().enumerate() {
                            self.index.insert(e.table.name().into(), i);
                        }
                    } else {
                        self.index.insert(t.name().into(), self.entries.len() - 1);
                    }
                }
            }
        }
    }
}

/// The running writers of each table (by root): whom a drop or rename of
/// it waits for. Entries are taken under the store's write latch, and a
/// drop looks under it too, so a writer either registered before the
/// drop looked or meets the drop's stamp on the catalog row.
#[derive(Default)]
pub(crate) struct Writers {
    map: Mutex<HashMap<PageId, Vec<Xid>>>,
}

impl Writers {
    fn register(&self, root: PageId, xid: Xid, clog: &impl StatusOf) {
        let mut map = self.map.lock();
        if map.len() >= WRITERS_PRUNE_AT {
            map.retain(|_, xs| {
                xs.retain(|&x| clog.status(x) == Status::InProgress);
                !xs.is_empty()
            });
        }
        let xs = map.entry(root).or_default();
        xs.retain(|&x| clog.status(x) == Status::InProgress);
        if !xs.contains(&xid) {
            xs.push(xid);
        }
    }

    /// A prepared transaction found at open, whose written tables are not
    /// recorded: a writer of each of `roots` (every table there is).
    pub(super) fn recovered(&self, roots: &[PageId], xid: Xid) {
        let mut map = self.map.lock();
        for &root in roots {
            map.entry(root).or_default().push(xid);
        }
    }

    /// A running writer of `root` other than `me`.
    fn other(&self, root: PageId, me: Xid, clog: &impl StatusOf) -> Option<Xid> {
        let map = self.map.lock();
        map.get(&root)?
            .iter()
            .copied()
            .find(|&x| x != me && clog.status(x) == Status::InProgress)
    }
}

/// A name's catalog row, as a writer finds it under the latch.
enum Row {
    /// No live version: the name is free. `head` is the chain to link a
    /// new version to (`Tid::NULL` if none).
    Absent { head: Tid },
    /// A live version: the table rooted at `root`, with the row's value.
    Live {
        version: Version,
        root: PageId,
        value: Vec<u8>,
    },
    /// Another transaction holds the row.
    Wait(Xid),
}

/// Checks a table name.
pub(crate) fn valid_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > TABLE_NAME_MAX {
        return Err(Error::InvalidTableName);
    }
    Ok(())
}

impl Transaction {
    /// Whether reading a table no one created is an error rather than an
    /// empty table: a read-only transaction or open.
    fn reads_only(&self) -> bool {
        self.read_only || self.core().engine.opts().read_only
    }

    /// `table` as this transaction's reads see it under `snap` (of catalog
    /// epoch `epoch`): a copy resolved to its root, or `None` if it does not
    /// exist for the transaction (`NoSuchTable` if it is read-only).
    pub(super) fn table_for_read(
        &self,
        table: &Table,
        snap: &Snapshot,
        epoch: u64,
    ) -> Result<Option<Table>> {
        Ok(self
            .root_for_read(table, snap, epoch)?
            .map(|root| table.at(root)))
    }

    /// [`Self::table_for_read`], giving the root alone.
    pub(super) fn root_for_read(
        &self,
        table: &Table,
        snap: &Snapshot,
        epoch: u64,
    ) -> Result<Option<PageId>> {
        let cached = {
            let cache = self.tables.borrow();
            cache.find(table).and_then(|i| {
                let e = &cache.entries[i];
                let fresh = e.written || self.level != Isolation::ReadCommitted || e.epoch == epoch;
                fresh.then_some(e.root)
            })
        };
        let root = match cached {
            Some(root) => root,
            None => {
                let root = self.lookup(table.name(), snap)?;
                self.tables.borrow_mut().set(table, root, epoch, false);
                root
            }
        };
        match root {
            Some(root) => Ok(Some(root)),
            None if self.reads_only() => Err(Error::NoSuchTable {
                name: table.name().to_string(),
            }),
            None => Ok(None),
        }
    }

    /// The names of the tables this transaction sees, in name order: the
    /// committed ones its snapshot sees (for a read as of a timestamp,
    /// those that existed then) and the ones it created. Not a read that
    /// serializable isolation tracks: a table created or dropped
    /// concurrently is no conflict.
    pub fn table_names(&self) -> Result<Vec<String>> {
        if let Some(e) = self.doomed() {
            return Err(e);
        }
        let (snap, _) = self.read_snapshot();
        let core = self.core();
        let list = catalog::list_as(
            &mut core.engine.store().read().view,
            core.catalog,
            (&snap, self.xid),
            &self.statuses(),
        )?;
        Ok(list.into_iter().map(|(name, _)| name).collect())
    }

    /// The tables this transaction sees, as `table_names`, each with its
    /// root page (what log records name a table by).
    pub(crate) fn tables_with_roots(&self) -> Result<Vec<(String, PageId)>> {
        let (snap, _) = self.read_snapshot();
        let core = self.core();
        catalog::list_as(
            &mut core.engine.store().read().view,
            core.catalog,
            (&snap, self.xid),
            &self.statuses(),
        )
    }

    /// Reads the catalog row of `name` as any row is read: marked for SSI,
    /// the writers it skips reported.
    fn lookup(&self, name: &str, snap: &Snapshot) -> Result<Option<PageId>> {
        let inner = self.core();
        let cat = inner.catalog;
        let mut unseen = Vec::new();
        let (coarsening, root) = super::ssi::mark_then_read(
            self.reads.borrow_mut().as_mut(),
            inner.txns.marks(),
            cat,
            name.as_bytes(),
            || {
                let mut r = inner.engine.store().read();
                let clog = self.statuses();
                catalog::lookup(&mut r.view, cat, name, snap, self.xid, &clog, &mut unseen)
            },
        );
        self.ssi_coarsen(coarsening);
        let root = root?;
        self.removed_writers(snap, cat, name.as_bytes(), &mut unseen);
        self.ssi_unseen(&unseen, None)?;
        Ok(root)
    }

    /// `table` checked for writing: a copy resolved to its root. With
    /// `create`, a table no one created is created (by this transaction);
    /// without, `None`.
    pub(super) fn table_for_write(&mut self, table: &Table, create: bool) -> Result<Option<Table>> {
        {
            let cache = self.tables.borrow();
            if let Some(i) = cache.find(table) {
                let e = &cache.entries[i];
                if e.written {
                    if let Some(root) = e.root {
                        return Ok(Some(table.at(root)));
                    }
                }
            }
        }
        self.core().engine.writable()?;
        let me = self.ensure_xid()?;
        if self.serializable() {
            // The read that leaves the catalog key's mark.
            let snap = self.snapshot.clone();
            self.table_for_read(table, &snap, 0)?;
        }
        let core = self.core.clone();
        let name = table.name();
        let mut created = false;
        let root = self.row_loop(
            me,
            |tx, mtr| {
                let snap = tx.snapshot_now();
                match tx.row(mtr, name, me, &snap)? {
                    Row::Wait(x) => Ok(Err(x)),
                    Row::Live { root, .. } => {
                        core.txns
                            .writers()
                            .register(root, me, core.txns.manager().clog());
                        Ok(Ok(Some(root)))
                    }
                    Row::Absent { .. } if !create => Ok(Ok(None)),
                    Row::Absent { head } => {
                        let (root, value) = catalog::alloc_table(mtr)?;
                        insert_row(mtr, &core, me, head, name, &value)?;
                        created = true;
                        Ok(Ok(Some(root)))
                    }
                }
            },
            Op::CreateTable,
            name,
        )?;
        let Some(root) = root else {
            return Ok(None);
        };
        if created {
            core.txns.manager().catalog_write(me);
            self.versions.written += 1;
            self.ssi_write_at(core.catalog, name, name.as_bytes())?;
        }
        self.tables.borrow_mut().set(table, Some(root), 0, true);
        Ok(Some(table.at(root)))
    }

    /// Creates `table` unless it exists (for this transaction): an empty
    /// table, there for others once this transaction commits. Returns
    /// whether it created it. A `put` creates a table as well; this is for
    /// a table that must exist before its first row (PostgreSQL's `CREATE
    /// TABLE IF NOT EXISTS`). Waits and conflicts as
    /// [`Transaction::drop_table`].
    pub fn create_table(&mut self, table: &Table) -> Result<bool> {
        self.check(table)?;
        let before = self.versions.written;
        let r = self.table_for_write(table, true).map(|_| ());
        self.note(r)?;
        Ok(self.versions.written > before)
    }

    /// Drops `table`, as of this transaction's commit: transactions whose
    /// snapshots are older keep reading it, and vacuum frees its pages once
    /// none can. Returns whether it existed (for this transaction).
    ///
    /// Waits for running writers of the table (and they, coming later,
    /// for the drop). If another transaction committed a create, drop or
    /// rename of the name after this one's snapshot, Snapshot and
    /// Serializable transactions fail with `SerializationFailure`.
    pub fn drop_table(&mut self, table: &Table) -> Result<bool> {
        self.check(table)?;
        let r = self.drop_inner(table);
        self.note(r)
    }

    fn drop_inner(&mut self, table: &Table) -> Result<bool> {
        self.core().engine.writable()?;
        let me = self.ensure_xid()?;
        if self.serializable() {
            let snap = self.snapshot.clone();
            self.table_for_read(table, &snap, 0)?;
        }
        let core = self.core.clone();
        let catalog = core.catalog;
        let name = table.name();
        // The record names the table by its root (as a rename's does).
        let dropped = self.row_loop_as(
            me,
            |tx, mtr| {
                let snap = tx.snapshot_now();
                match tx.row(mtr, name, me, &snap)? {
                    Row::Wait(x) => Ok(Err(x)),
                    Row::Absent { .. } => Ok(Ok(None)),
                    Row::Live { version, root, .. } => {
                        if let Some(x) =
                            core.txns
                                .writers()
                                .other(root, me, core.txns.manager().clog())
                        {
                            return Ok(Err(x));
                        }
                        heap::stamp_xmax(mtr, version.tid, me)?;
                        Ok(Ok(Some(root)))
                    }
                }
            },
            Op::DropTable,
            name,
            |root: &Option<PageId>| root.unwrap_or(catalog),
        )?;
        let dropped = dropped.is_some();
        if dropped {
            core.txns.manager().catalog_write(me);
            self.versions.superseded += 1;
            self.ssi_write_at(core.catalog, name, name.as_bytes())?;
            // This transaction holds the name's row: the answer holds.
            self.tables.borrow_mut().set(table, None, 0, true);
        }
        // A drop that found no table holds nothing: another transaction
        // may create one, and Read Committed must see it once committed.
        Ok(dropped)
    }

    /// Renames `table` to `new_name`, as of this transaction's commit (older
    /// snapshots keep the old name). The table keeps its rows; handles name
    /// tables, so after the commit `table` names no table and
    /// `db.table(new_name)` this one.
    ///
    /// `NoSuchTable` if the table does not exist for this transaction,
    /// `TableExists` if `new_name` does; waits and conflicts as
    /// [`Transaction::drop_table`], on both names.
    pub fn rename_table(&mut self, table: &Table, new_name: &str) -> Result<()> {
        self.check(table)?;
        valid_name(new_name)?;
        let r = self.rename_inner(table, new_name);
        self.note(r)
    }

    fn rename_inner(&mut self, table: &Table, new_name: &str) -> Result<()> {
        self.core().engine.writable()?;
        let me = self.ensure_xid()?;
        let target = Table::new(table.db(), table.dir().into(), new_name);
        if self.serializable() {
            self.read_both_names(table, &target)?;
        }
        let name = table.name();
        // The record names the table by its root, its identity across
        // renames: the change stream follows a table by it.
        let root = self.row_loop_as(
            me,
            |tx, mtr| tx.rename_row(mtr, me, name, new_name),
            Op::RenameTable,
            name,
            |root| *root,
        )?;
        if name == new_name {
            return Ok(());
        }
        self.note_renamed(me, table, &target, root)
    }

    /// Reads both names' catalog rows as a serializable transaction reads
    /// a table, so that SSI sees the rename depend on them.
    fn read_both_names(&mut self, table: &Table, target: &Table) -> Result<()> {
        let snap = self.snapshot.clone();
        for t in [table, target] {
            // Absent is what the decision under the latch reports.
            match self.table_for_read(t, &snap, 0) {
                Ok(_) | Err(Error::NoSuchTable { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `rename_inner`'s step under the latch: the table's root once its row
    /// `name` is superseded by one under `new_name` (nothing written for a
    /// rename to the same name), or the transaction to wait for.
    fn rename_row(
        &self,
        mtr: &mut Mtr<'_>,
        me: Xid,
        name: &str,
        new_name: &str,
    ) -> Result<std::result::Result<PageId, Xid>> {
        let core = self.core();
        let snap = self.snapshot_now();
        let (version, root, value) = match self.row(mtr, name, me, &snap)? {
            Row::Wait(x) => return Ok(Err(x)),
            Row::Absent { .. } => {
                return Err(Error::NoSuchTable {
                    name: name.to_string(),
                })
            }
            Row::Live {
                version,
                root,
                value,
                ..
            } => (version, root, value),
        };
        if name == new_name {
            return Ok(Ok(root));
        }
        let head = match self.row(mtr, new_name, me, &snap)? {
            Row::Wait(x) => return Ok(Err(x)),
            Row::Live { .. } => {
                return Err(Error::TableExists {
                    name: new_name.to_string(),
                })
            }
            Row::Absent { head } => head,
        };
        if let Some(x) = core
            .txns
            .writers()
            .other(root, me, core.txns.manager().clog())
        {
            return Ok(Err(x));
        }
        heap::stamp_xmax(mtr, version.tid, me)?;
        insert_row(mtr, core, me, head, new_name, &value)?;
        Ok(Ok(root))
    }

    /// After a rename is logged: the catalog written, one version
    /// superseded and one written, both names marked for SSI, and the
    /// table cache told the table moved from `table`'s name to `target`'s.
    fn note_renamed(&mut self, me: Xid, table: &Table, target: &Table, root: PageId) -> Result<()> {
        // A rename to the same name changes nothing and records nothing.
        assert!(table.name() != target.name());
        let catalog = self.core().catalog;
        self.core().txns.manager().catalog_write(me);
        self.versions.superseded += 1;
        self.versions.written += 1;
        self.ssi_write_at(catalog, table.name(), table.name().as_bytes())?;
        self.ssi_write_at(catalog, target.name(), target.name().as_bytes())?;
        let mut cache = self.tables.borrow_mut();
        cache.set(table, None, 0, true);
        cache.set(target, Some(root), 0, true);
        Ok(())
    }

    /// Runs `step` under the store's write latch until it does not meet a
    /// row held by another transaction (then it waits for that one, as the
    /// write path does). A step that decided logs its changes as `op` on
    /// the catalog key `name`, and this transaction, having changed the
    /// catalog or registered as a writer, is recorded as such.
    fn row_loop<T>(
        &mut self,
        me: Xid,
        step: impl FnMut(&Transaction, &mut Mtr<'_>) -> Result<std::result::Result<T, Xid>>,
        op: Op,
        name: &str,
    ) -> Result<T> {
        let catalog = self.core.catalog;
        self.row_loop_as(me, step, op, name, |_| catalog)
    }

    /// `row_loop`, its record naming in `aux` the page `aux(decided)`
    /// (the table's root for a rename, FORMAT.md §3.3) for the catalog's.
    fn row_loop_as<T>(
        &mut self,
        me: Xid,
        mut step: impl FnMut(&Transaction, &mut Mtr<'_>) -> Result<std::result::Result<T, Xid>>,
        op: Op,
        name: &str,
        aux: impl Fn(&T) -> PageId,
    ) -> Result<T> {
        let core = self.core.clone();
        let mut deadline = None;
        for _ in 0..WAITS_MAX {
            let mut w = core.engine.store().write();
            let decided = step(self, &mut w.mtr)?;
            match decided {
                Ok(t) => {
                    // Nothing is logged if nothing changed.
                    w.commit_write(op as u8, me, aux(&t), name.as_bytes())?;
                    return Ok(t);
                }
                Err(_) if self.nowait => {
                    return Err(Error::LockNotAvailable {
                        table: Some(name.to_string()),
                        key: None,
                    });
                }
                Err(holder) => {
                    drop(w);
                    let opts = core.engine.opts();
                    let deadline = *deadline.get_or_insert_with(|| {
                        opts.lock_timeout
                            .map(|t| Deadline::after(&*opts.clock.0, t))
                    });
                    core.txns
                        .waits()
                        .wait_for(me, holder, core.txns.manager().clog(), deadline)?;
                }
            }
        }
        Err(Error::LockTimeout)
    }

    /// The catalog row of `name`, judged as the write path judges a row
    /// (`txn::write`): held, changed unseen (an error under Snapshot and
    /// Serializable), live or absent.
    fn row(&self, mtr: &mut Mtr<'_>, name: &str, me: Xid, snap: &Snapshot) -> Result<Row> {
        let core = self.core();
        let clog = core.txns.manager().clog();
        let cat = core.catalog;
        let Some(tid) = btree::get_with(mtr, cat, name.as_bytes(), chain::tid_of)? else {
            return Ok(Row::Absent { head: Tid::NULL });
        };
        let head = chain::valid(mtr, tid)?;
        let mut c = Cursor::new(head);
        let mut newest = None;
        while let Some(v) = c.next(mtr)? {
            if v.xmin == me || clog.status(v.xmin) != Status::Aborted {
                newest = Some(v);
                break;
            }
        }
        let strict = self.level != Isolation::ReadCommitted;
        if strict && self.removed_unseen(cat, name, me, snap) {
            return Err(Error::concurrent_table_change(name));
        }
        let Some(v) = newest else {
            return Ok(Row::Absent { head });
        };
        if v.xmin != me && clog.status(v.xmin) == Status::InProgress {
            return Ok(Row::Wait(v.xmin));
        }
        let deleted_by_other = v.xmax != Xid::NONE && v.xmax != me;
        if deleted_by_other && clog.status(v.xmax) == Status::InProgress {
            return Ok(Row::Wait(v.xmax));
        }
        if strict {
            let created_unseen = v.xmin != me && !snap.sees(v.xmin, me, clog);
            let deleted_unseen = deleted_by_other
                && clog.status(v.xmax) == Status::Committed
                && !snap.sees(v.xmax, me, clog);
            if created_unseen || deleted_unseen {
                return Err(Error::concurrent_table_change(name));
            }
        }
        if visible(v.xmin, v.xmax, snap, me, clog) != Seen::Visible {
            return Ok(Row::Absent { head });
        }
        let bytes = heap::read(mtr, v.tid)?;
        let t = chain::decode(mtr, &bytes, v.tid)?;
        let value = t.body.to_vec();
        let root = catalog::root_of(mtr.file(), name.as_bytes(), &value)?;
        Ok(Row::Live {
            version: v,
            root,
            value,
        })
    }

    /// Whether vacuum removed a version of the catalog row whose creator
    /// committed unseen by `snap` (`mvcc::ledger`; `txn::write` argues it).
    fn removed_unseen(&self, cat: PageId, name: &str, me: Xid, snap: &Snapshot) -> bool {
        let core = self.core();
        if !core.txns.ledger().concerns(snap) {
            return false;
        }
        let mut xids = Vec::new();
        core.txns.ledger().writers(cat, name.as_bytes(), &mut xids);
        let clog = core.txns.manager().clog();
        xids.iter()
            .any(|&x| x != me && clog.status(x) == Status::Committed && !snap.sees(x, me, clog))
    }
}

/// Inserts a catalog row version for `name` with `value`, linked to `head`.
fn insert_row(
    mtr: &mut Mtr<'_>,
    core: &super::Core,
    me: Xid,
    head: Tid,
    name: &str,
    value: &[u8],
) -> Result<()> {
    let bytes = tuple::encode(me, head, name.as_bytes(), tuple::Inline::Bytes(value));
    let tid = heap::insert(mtr, &core.engine.store().fsm, &bytes)?;
    btree::insert(mtr, core.catalog, name.as_bytes(), &tid.encode())
}
