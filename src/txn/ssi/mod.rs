//! Serializable snapshot isolation: snapshot isolation plus detection of
//! the dangerous structures of read-write antidependencies (Cahill et al.
//! 2008; Ports & Grittner, VLDB 2012 — PostgreSQL's design).
//!
//! ```text
//!   T1 ──rw──► T2 ──rw──► T3        T3 commits first: T2 is the pivot
//! ```
//! An rw-antidependency R → W means R read a version that W's write
//! supersedes: R did not see W's change, so R must come before W in any
//! serial order. A cycle in the serialization graph needs two consecutive
//! rw edges; it is dangerous when the out-neighbour T3 committed before
//! both others. Then one of T1, T2 is aborted — the pivot T2 if it has not
//! started to commit, else T1 — never before T3 has committed.
//!
//! Edges are found both ways:
//! - a read leaves SIREAD marks on the keys it read (found or not) and the
//!   ranges it scanned; a later write by a concurrent transaction to a
//!   marked key gives an edge reader → writer;
//! - a read that skips a version (or sees a deletion) by a concurrent
//!   transaction gives an edge reader → writer at once.
//!
//! A read marks before it reads; a write writes before it checks the
//! marks. So of a concurrent read and write of one key, whichever comes
//! second finds the other — as a mark, or as a version to skip — and no
//! edge is lost. (Marking after reading lost edges: the bank test caught it.)
//!
//! A delete reads too (whether its key existed). If it stamped a row, it
//! leaves no mark: every concurrent writer of the row meets the stamp and
//! waits or fails first-updater-wins, as PostgreSQL drops a tuple's
//! SIREAD lock once its transaction writes the tuple. If it found no row,
//! it marks the key before letting go of the store latch under which it
//! looked, which every writer holds while it writes and lets go of before
//! it checks marks: the mark comes after the read, yet still first.
//!
//! Bookkeeping: each serializable transaction has an entry; one counter
//! orders snapshots, commit starts ("prepared") and commit publications.
//! A committed entry, with its marks, stays until no transaction
//! concurrent with it is running; its out-edges then live on as a summary
//! (the earliest commit start among the out-neighbours), as in PostgreSQL.
//! Too many key marks of one transaction on one table are coarsened into
//! ranges, too many ranges into the whole table (see `reads`).
//!
//! Locks: key marks live in a partitioned table of their own (`marks`), so
//! a read takes one partition lock and never this graph's lock; the graph's
//! lock is taken at begin, at each write, for scans, when a read skipped a
//! version, and twice at commit.
//!
//! Order against MVCC. What a snapshot sees is decided by the MVCC
//! manager, under its own lock; SSI keeps its own counter. The two must
//! agree on "committed before the snapshot", and they do not take each
//! other's locks at commit. A commit goes:
//! ```text
//!   SSI prepare (p = ++counter)  →  log  →  MVCC publish  →  SSI committed (c = ++counter)
//! ```
//! and a serializable `begin` takes its counter value `s` and its MVCC
//! snapshot in one critical section of this graph's lock. So for every
//! transaction T and snapshot S:
//! - `c ≤ s` ⇒ S sees T: T was published before it was counted committed,
//!   which was before S's critical section;
//! - S sees T ⇒ `p ≤ s`: T was published before S's snapshot was taken,
//!   and prepared before that, under this lock, which S held throughout.
//!
//! Between publication and `c` a commit is visible yet not counted
//! committed; rules are written so that this window never matters. Where
//! T must certainly be visible (a reader too old to be concurrent with a
//! writer, an entry no running transaction can still conflict with), they
//! compare `c`. Where T must possibly be visible (the read-only rule: T3
//! committed before T1's snapshot; the safe-snapshot test), they compare
//! `p`, as PostgreSQL compares `prepareSeqNo` with a snapshot's
//! `lastCommitBeforeSnapshot`, taken under the lock its snapshot is taken
//! under. The cost is a `begin` that copies the MVCC running set while
//! holding this lock. Counting T committed before publishing it instead
//! would break the first implication (a snapshot counted after T could
//! still miss T), on which the concurrency test and cleanup rely;
//! publishing under this lock would make every serializable commit hold
//! it across its publication.
//!
//! A transaction declared read-only (`Db::begin_read`) is judged by the
//! read-only rule from the start: as T1 of a structure it is in danger only
//! if T3 committed before its snapshot. It watches the read-write
//! transactions running when it began, a set taken in the critical section
//! of its snapshot (a writer that finished before it is visible to it; one
//! that finishes after it is watched). Once all finished without an
//! out-conflict to a transaction prepared at or before its snapshot, the
//! snapshot is *safe*: it leaves SSI (no marks, never aborted).
//!
//! When more than `SSI_COMMITTED_MAX` committed entries are retained (a
//! long-running transaction keeps everything after it), the oldest are
//! folded into one summary entry, conservatively, so memory stays bounded:
//! it keeps the earliest commit start of what it folded (as T3 it counts
//! as committed before any snapshot one of them was before) and the latest
//! commit (as T1 or T2 it stays concurrent with whatever one of them was).

mod marks;
mod order;
mod reads;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use crate::hash::{IntMap, IntSet};
pub use marks::{key_hash, KeyMarks};
pub use order::SsiLock;
pub use reads::{mark_absence_under_latch, mark_then_read, Coarsening, ReadSet};

use crate::error::{Error, Result};
use crate::ids::{PageId, Xid};
use crate::limits::{SIREAD_KEYS_PER_TABLE_MAX, SSI_COMMITTED_MAX};
use crate::sync::{AtomicBool, Ordering};

/// The entry that stands for every summarised committed transaction.
const OLD: u64 = u64::MAX;
/// Ranges the summary entry keeps per table before it marks the whole table.
const OLD_RANGES_MAX: usize = 64;
/// A scanned (or coarsened) key range.
pub type Range = (Bound<Vec<u8>>, Bound<Vec<u8>>);

#[derive(Default)]
struct Entry {
    xid: Xid,
    /// Counter value when the snapshot was taken (under this graph's
    /// lock): a transaction counted committed at or below it is visible to
    /// it, and one visible to it was prepared at or below it.
    snapshot: u64,
    /// Set when the commit begins; from then on it cannot be aborted.
    prepared: Option<u64>,
    /// Set when the commit is published.
    committed: Option<u64>,
    /// Chosen as a victim; its next operation fails.
    doomed: bool,
    /// Declared read-only at `begin` (`Db::begin_read`).
    read_only: bool,
    /// For a read-only entry: the read-write transactions that were running
    /// when it began; its snapshot is safe once they all finish without an
    /// out-conflict to a transaction committed before it.
    watch: IntSet<u64>,
    /// A watched transaction led out to one committed before this
    /// read-only entry's snapshot: the snapshot will never be safe.
    unsafe_snapshot: bool,
    /// Shared with a read-only transaction's `ReadSet`: set when its
    /// snapshot became safe.
    safe: Option<Arc<AtomicBool>>,
    /// Readers with an edge to this transaction (reader → self).
    ins: IntSet<u64>,
    /// Writers this transaction has an edge to (self → writer).
    outs: IntSet<u64>,
    /// Earliest `prepared` of out-neighbours already cleaned up.
    out_summary: Option<u64>,
    /// Key marks (by hash), handed over by the transaction when it ends
    /// (the summary entry keeps its own in `Ssi::old_keys`).
    keys: Vec<(PageId, u64)>,
}

impl Entry {
    /// Whether `self`, which began committing at `prepared`, did so before
    /// `other`'s commit became visible (or `other` has not committed):
    /// PostgreSQL's rule, comparing T3's prepare with the others' commits.
    fn committed_first(prepared: u64, other: &Entry) -> bool {
        other.committed.is_none_or(|c| prepared <= c)
    }
}

/// The SSI bookkeeping of one database.
#[derive(Default)]
pub struct Ssi {
    entries: IntMap<u64, Entry>,
    by_xid: IntMap<Xid, u64>,
    /// Lowest and highest xid folded into the summary entry. An unseen
    /// xid in this range that no live entry owns is taken for the summary
    /// (conservatively: it may also be a non-serializable writer), so the
    /// summary needs no per-xid memory.
    old_xids: Option<(Xid, Xid)>,
    /// The summary entry's key marks, and how many on each table.
    old_keys: HashSet<(PageId, u64)>,
    old_tables: HashMap<PageId, usize>,
    /// Key marks, partitioned, outside this graph's lock.
    marks: Arc<KeyMarks>,
    range_marks: HashMap<PageId, BTreeMap<u64, Vec<Range>>>,
    counter: u64,
    /// Running entries by snapshot: the first is the oldest running.
    running: BTreeMap<u64, u64>,
    /// Committed entries (not the summary) in commit order: cleanup and
    /// folding take them from the front.
    finished: VecDeque<(u64, u64)>,
    /// Read-only entries still watching read-write transactions.
    watchers: IntSet<u64>,
}

fn covers(r: &Range, key: &[u8]) -> bool {
    let above = match &r.0 {
        Bound::Included(b) => key >= b.as_slice(),
        Bound::Excluded(b) => key > b.as_slice(),
        Bound::Unbounded => true,
    };
    let below = match &r.1 {
        Bound::Included(b) => key <= b.as_slice(),
        Bound::Excluded(b) => key < b.as_slice(),
        Bound::Unbounded => true,
    };
    above && below
}

impl Ssi {
    /// The key-mark table, which readers use without this graph's lock.
    pub fn marks(&self) -> Arc<KeyMarks> {
        self.marks.clone()
    }

    /// Registers serializable transaction `id`. The caller takes the
    /// transaction's MVCC snapshot before it lets go of this graph's lock
    /// (see the module's essay: the two must agree on which commits came
    /// before the snapshot). The transaction keeps the returned set of its
    /// marks and hands it back when it ends.
    pub fn begin(&mut self, id: u64) -> ReadSet {
        self.counter += 1;
        self.running.insert(self.counter, id);
        self.entries.insert(
            id,
            Entry {
                snapshot: self.counter,
                ..Default::default()
            },
        );
        ReadSet::new(id)
    }

    /// Registers `id` as a transaction declared read-only, under the same
    /// rule as [`Ssi::begin`] for its snapshot: the read-only rule applies
    /// to it at once, and once its snapshot is known safe it leaves SSI
    /// altogether and the returned set stops marking. The read-write
    /// transactions it must watch are the ones running now, in the
    /// critical section of its snapshot: one that finishes later is
    /// watched, one that finished earlier is visible to it.
    pub fn begin_read_only(&mut self, id: u64) -> ReadSet {
        let watch: IntSet<u64> = self
            .running
            .values()
            .filter(|&&w| self.entries.get(&w).is_some_and(|e| !e.read_only))
            .copied()
            .collect();
        let mut reads = self.begin(id);
        let safe = reads.watch_safety();
        if let Some(e) = self.entries.get_mut(&id) {
            e.read_only = true;
            e.watch = watch;
            e.safe = Some(safe);
            self.watchers.insert(id);
        }
        self.settle(id);
        reads
    }

    /// A read-only entry whose watch set emptied is safe: its marks and
    /// edges go (no dangerous structure can pass through it).
    fn settle(&mut self, id: u64) {
        let done = self
            .entries
            .get(&id)
            .is_some_and(|e| e.read_only && !e.unsafe_snapshot && e.watch.is_empty() && !e.doomed);
        if done {
            if let Some(safe) = self.entries.get(&id).and_then(|e| e.safe.as_ref()) {
                safe.store(true, Ordering::Release);
            }
            self.remove(id, false);
        }
    }

    /// A read-write transaction finished: update the read-only entries
    /// watching it. `out_before` is the earliest commit start among its
    /// out-neighbours (summarised ones included), if it committed.
    fn unwatch(&mut self, w: u64, out_before: Option<u64>) {
        let watchers: Vec<u64> = self
            .watchers
            .iter()
            .filter(|r| self.entries.get(r).is_some_and(|e| e.watch.contains(&w)))
            .copied()
            .collect();
        for r in watchers {
            let Some(e) = self.entries.get_mut(&r) else {
                continue;
            };
            if out_before.is_some_and(|p| p <= e.snapshot) {
                // W leads out to a transaction that may have committed
                // before R's snapshot: R's snapshot is not safe; it stays
                // a normal read-only serializable transaction.
                e.watch.clear();
                e.unsafe_snapshot = true;
                self.watchers.remove(&r);
                continue;
            }
            e.watch.remove(&w);
            self.settle(r);
        }
    }

    /// Records the xid `id` writes under.
    pub fn assign(&mut self, id: u64, xid: Xid) {
        if xid == Xid::NONE {
            return;
        }
        if let Some(e) = self.entries.get_mut(&id).filter(|e| e.xid != xid) {
            e.xid = xid;
            self.by_xid.insert(xid, id);
        }
    }

    /// Fails if `id` was chosen as a victim.
    pub fn check(&self, id: u64) -> Result<()> {
        match self.entries.get(&id) {
            Some(e) if e.doomed => Err(Error::rw_dependencies()),
            _ => Ok(()),
        }
    }

    /// Edges to the writers of versions the reader did not see.
    pub fn read_unseen(&mut self, id: u64, unseen: &[Xid]) -> Result<()> {
        for x in unseen {
            let owner = match self.by_xid.get(x) {
                Some(&w) => Some(w),
                None => self
                    .old_xids
                    .filter(|(lo, hi)| lo <= x && x <= hi)
                    .map(|_| OLD),
            };
            if let Some(w) = owner {
                self.edge(id, w, id)?;
            }
        }
        self.check(id)
    }

    /// A scan of `range` of `table`. Returns where the mark went among
    /// `id`'s range marks on `table` (for `narrow_range`); `None` if `id`
    /// is not tracked.
    pub fn read_range(&mut self, id: u64, table: PageId, range: Range) -> Option<usize> {
        if !self.entries.contains_key(&id) {
            return None; // not tracked (a safe read-only snapshot)
        }
        let rs = self
            .range_marks
            .entry(table)
            .or_default()
            .entry(id)
            .or_default();
        rs.push(range);
        Some(rs.len() - 1)
    }

    /// Replaces `id`'s mark on `wide`, the `at`-th of its range marks on
    /// `table` (as `read_range` returned), by one on `narrow`, a part of
    /// it: a read that marked all it might depend on before reading
    /// (`first`, `last`) and then learnt what it did depend on. Safe after
    /// the read: a write in `narrow` that the read missed is still
    /// covered, and one outside it did not change the result. The mark is
    /// named by position, not by value: an equal mark (a coarsening into
    /// the whole table) may stand for other reads. If it is not there as
    /// pushed, the wider mark stays.
    pub fn narrow_range(&mut self, id: u64, table: PageId, at: usize, wide: &Range, narrow: Range) {
        let mark = self
            .range_marks
            .get_mut(&table)
            .and_then(|m| m.get_mut(&id))
            .and_then(|rs| rs.get_mut(at));
        if let Some(r) = mark.filter(|r| *r == wide) {
            *r = narrow;
        }
    }

    /// Replaces key marks of a transaction by range marks (a coarsening
    /// its `ReadSet` decided). The ranges are in place before the keys go,
    /// so a writer never finds the keys uncovered.
    pub fn coarsen(&mut self, id: u64, c: Coarsening) {
        if self.entries.contains_key(&id) {
            let whole = c
                .ranges
                .iter()
                .any(|r| r.0 == Bound::Unbounded && r.1 == Bound::Unbounded);
            let m = self
                .range_marks
                .entry(c.table)
                .or_default()
                .entry(id)
                .or_default();
            if whole {
                *m = c.ranges;
            } else {
                m.extend(c.ranges);
            }
        }
        for h in c.hashes {
            self.marks.remove(h, id);
        }
    }

    /// Replaces the summary entry's key marks on `table` by one mark on
    /// the whole table (it keeps no keys to cut ranges from).
    fn coarsen_old(&mut self, table: PageId) {
        let keys: Vec<(PageId, u64)> = self
            .old_keys
            .iter()
            .filter(|k| k.0 == table)
            .copied()
            .collect();
        for k in &keys {
            self.old_keys.remove(k);
        }
        self.old_tables.insert(table, 0);
        self.read_range(OLD, table, (Bound::Unbounded, Bound::Unbounded));
        for (_, h) in keys {
            self.marks.remove(h, OLD);
        }
    }

    /// A write of `key` by `id`: edges from every concurrent reader that
    /// marked it.
    pub fn write(&mut self, id: u64, table: PageId, key: &[u8]) -> Result<()> {
        let mut readers = Vec::new();
        self.marks.holders(key_hash(table, key), &mut readers);
        if let Some(ranges) = self.range_marks.get(&table) {
            for (&r, rs) in ranges {
                // A transaction's own marks never make an edge.
                if r != id && rs.iter().any(|range| covers(range, key)) {
                    readers.push(r);
                }
            }
        }
        let snapshot = self.entries.get(&id).map_or(0, |e| e.snapshot);
        for r in readers {
            if r == id {
                continue;
            }
            // Only a reader concurrent with the writer: one whose commit
            // was not yet visible when the writer's snapshot was taken.
            let concurrent = self
                .entries
                .get(&r)
                .is_some_and(|e| e.committed.is_none_or(|c| c > snapshot));
            if concurrent {
                self.edge(r, id, id)?;
            }
        }
        self.check(id)
    }

    /// Adds `reader → writer` and looks for a dangerous structure through
    /// it. `actor` is the transaction whose operation found the edge.
    fn edge(&mut self, reader: u64, writer: u64, actor: u64) -> Result<()> {
        if reader == writer
            || !self.entries.contains_key(&reader)
            || !self.entries.contains_key(&writer)
        {
            return Ok(());
        }
        if let Some(e) = self.entries.get_mut(&reader) {
            e.outs.insert(writer);
        }
        if let Some(e) = self.entries.get_mut(&writer) {
            e.ins.insert(reader);
        }
        // reader → writer → C, with C first: writer is the pivot.
        let outs: Vec<u64> = self.entries[&writer].outs.iter().copied().collect();
        for c in outs {
            self.judge(reader, writer, Some(c), actor)?;
        }
        if self.entries[&writer].out_summary.is_some() {
            self.judge(reader, writer, None, actor)?;
        }
        // D → reader → writer, with writer first: reader is the pivot.
        let ins: Vec<u64> = self.entries[&reader].ins.iter().copied().collect();
        for d in ins {
            self.judge(d, reader, Some(writer), actor)?;
        }
        Ok(())
    }

    /// Decides about `t1 → t2 → t3` (`t3` = `None`: the summarised,
    /// cleaned-up out-neighbours of `t2`); dooms a victim if it is
    /// dangerous, or fails the actor when no one else can go.
    fn judge(&mut self, t1: u64, t2: u64, t3: Option<u64>, actor: u64) -> Result<()> {
        let (Some(e1), Some(e2)) = (self.entries.get(&t1), self.entries.get(&t2)) else {
            return Ok(());
        };
        let first = match t3 {
            Some(t3) => {
                let Some(e3) = self.entries.get(&t3) else {
                    return Ok(());
                };
                let Some(p3) = e3.prepared else { return Ok(()) }; // nobody committed yet
                let before_t1 = t1 == t3 || Entry::committed_first(p3, e1);
                // A read-only T1 is safe unless T3 committed before its
                // snapshot. T3's commit start, not its commit, is what
                // bounds it: a T3 that T1 sees began committing below T1's
                // snapshot counter (see the module's essay), and for the
                // summary entry it is the earliest of everything folded.
                let read_only_t1 = e1.read_only || (e1.xid == Xid::NONE && e1.prepared.is_some());
                let before_snapshot = p3 <= e1.snapshot;
                Entry::committed_first(p3, e2) && before_t1 && (!read_only_t1 || before_snapshot)
            }
            None => {
                let Some(s) = e2.out_summary else {
                    return Ok(());
                };
                Entry::committed_first(s, e2) && Entry::committed_first(s, e1)
            }
        };
        if !first {
            return Ok(());
        }
        let victim = if e2.prepared.is_none() {
            t2
        } else if e1.prepared.is_none() {
            t1
        } else {
            actor
        };
        if let Some(v) = self.entries.get_mut(&victim) {
            v.doomed = true;
        }
        if victim == actor {
            return Err(Error::rw_dependencies());
        }
        Ok(())
    }

    /// The commit of `id` begins: last check of `id` as pivot, then it can
    /// no longer be aborted, and structures in which it is the first to
    /// commit doom their pivots.
    pub fn prepare(&mut self, id: u64) -> Result<()> {
        self.check(id)?;
        let Some(e) = self.entries.get(&id) else {
            return Ok(());
        };
        let ins: Vec<u64> = e.ins.iter().copied().collect();
        let outs: Vec<u64> = e.outs.iter().copied().collect();
        for &d in &ins {
            for &c in &outs {
                self.judge(d, id, Some(c), id)?;
            }
            self.judge(d, id, None, id)?;
        }
        // As T1: doom a pivot whose out-neighbour already committed.
        for &b in &outs {
            let cs: Vec<u64> = self
                .entries
                .get(&b)
                .map(|e| e.outs.iter().copied().collect())
                .unwrap_or_default();
            for c in cs {
                self.judge(id, b, Some(c), id)?;
            }
            self.judge(id, b, None, id)?;
        }
        self.check(id)?;
        self.counter += 1;
        if let Some(e) = self.entries.get_mut(&id) {
            e.prepared = Some(self.counter);
        }
        // As T3: every structure d → b → id now has its first committer.
        for b in ins {
            let ds: Vec<u64> = self
                .entries
                .get(&b)
                .map(|e| e.ins.iter().copied().collect())
                .unwrap_or_default();
            for d in ds {
                self.judge(d, b, Some(id), id)?;
            }
        }
        Ok(())
    }

    /// Tables `id` read (by key or by scan), recorded when it prepares for
    /// two-phase commit.
    pub fn tables_read(&self, id: u64, reads: &ReadSet) -> Vec<PageId> {
        let mut tables: Vec<PageId> = reads.tables().collect();
        for (table, m) in &self.range_marks {
            if m.contains_key(&id) {
                tables.push(*table);
            }
        }
        tables.sort_unstable();
        tables.dedup();
        tables
    }

    /// Registers a prepared transaction found at open, after a restart
    /// lost its SSI state. Conservatively, as PostgreSQL does: a mark on
    /// every table it read, and an out-conflict to a transaction that
    /// committed before everything (so a reader that meets its versions
    /// forms a dangerous structure with it). The returned set is empty.
    pub fn recovered(&mut self, id: u64, xid: Xid, tables: &[PageId]) -> ReadSet {
        let reads = self.begin(id);
        self.assign(id, xid);
        for &table in tables {
            self.read_range(id, table, (Bound::Unbounded, Bound::Unbounded));
        }
        self.counter += 1;
        if let Some(e) = self.entries.get_mut(&id) {
            e.prepared = Some(self.counter);
            e.out_summary = Some(0);
        }
        reads
    }

    /// The commit of `id` is published (visible to new snapshots); `reads`
    /// are its marks, kept as long as a concurrent transaction runs.
    pub fn committed(&mut self, id: u64, reads: ReadSet) {
        self.counter += 1;
        let mut out_before = None;
        let marks = reads.into_marks();
        if let Some(e) = self.entries.get_mut(&id) {
            e.committed = Some(self.counter);
            out_before = e.out_summary;
            e.keys = marks;
            self.running.remove(&e.snapshot);
            self.finished.push_back((self.counter, id));
        } else {
            // Left SSI on a safe snapshot: nobody needs its marks.
            for (_, h) in marks {
                self.marks.remove(h, id);
            }
        }
        if let Some(e) = self.entries.get(&id) {
            // Commit starts, as in the read-only rule. An out-neighbour
            // that has started committing but is not yet counted committed
            // here may already be visible to a watcher: it counts too.
            for p in e
                .outs
                .iter()
                .filter_map(|o| self.entries.get(o))
                .filter_map(|o| o.prepared)
            {
                out_before = Some(out_before.map_or(p, |b: u64| b.min(p)));
            }
        }
        self.unwatch(id, out_before);
        self.cleanup();
    }

    /// `id` rolled back (or failed to commit): it, its marks and its
    /// edges vanish.
    pub fn aborted(&mut self, id: u64, reads: ReadSet) {
        self.remove(id, false);
        for (_, h) in reads.into_marks() {
            self.marks.remove(h, id);
        }
        self.unwatch(id, None);
        self.cleanup();
    }

    fn remove(&mut self, id: u64, summarise: bool) {
        let Some(e) = self.entries.remove(&id) else {
            return;
        };
        if e.committed.is_none() {
            self.running.remove(&e.snapshot);
        }
        self.watchers.remove(&id);
        let keys = if id == OLD {
            self.old_tables.clear();
            self.old_keys.drain().collect()
        } else {
            e.keys
        };
        for (_, h) in keys {
            self.marks.remove(h, id);
        }
        if id == OLD {
            self.old_xids = None;
        } else if e.xid != Xid::NONE && self.by_xid.get(&e.xid) == Some(&id) {
            self.by_xid.remove(&e.xid);
        }
        for r in &e.ins {
            if let Some(x) = self.entries.get_mut(r) {
                x.outs.remove(&id);
                if summarise {
                    let p = e.prepared.unwrap_or(u64::MAX);
                    x.out_summary = Some(x.out_summary.map_or(p, |s| s.min(p)));
                }
            }
        }
        for w in &e.outs {
            if let Some(x) = self.entries.get_mut(w) {
                x.ins.remove(&id);
            }
        }
        self.range_marks.retain(|_, m| {
            m.remove(&id);
            !m.is_empty()
        });
    }

    /// Folds the oldest committed entries into one summary entry once more
    /// than `SSI_COMMITTED_MAX` are retained (a long-running transaction
    /// keeps every later one): the summary takes over their marks, edges and
    /// xids. Each of its counters takes the value that can only find more
    /// dangerous structures, never fewer: the earliest snapshot and commit
    /// start (as T3 it committed as early as any of them, which the
    /// read-only rule and the safe-snapshot test read), the latest commit
    /// (as T1 or T2 it committed as late as any, and stays concurrent with
    /// whoever any of them was concurrent with). Memory then follows the
    /// keys read, not the number of transactions.
    fn summarise(&mut self) {
        if self.finished.len() <= SSI_COMMITTED_MAX {
            return;
        }
        while self.finished.len() > SSI_COMMITTED_MAX / 2 {
            if let Some((_, id)) = self.finished.pop_front() {
                self.fold(id);
            }
        }
    }

    /// Folds committed entry `id` into the summary (see `summarise`).
    fn fold(&mut self, id: u64) {
        assert!(id != OLD, "the summary is never folded into itself");
        let Some(e) = self.entries.remove(&id) else {
            return;
        };
        self.fold_counters(&e);
        self.redirect_edges(id, &e);
        if e.xid != Xid::NONE {
            self.by_xid.remove(&e.xid);
            self.old_xids = Some(match self.old_xids {
                Some((lo, hi)) => (lo.min(e.xid), hi.max(e.xid)),
                None => (e.xid, e.xid),
            });
        }
        self.fold_marks(id, e.keys);
    }

    /// The summary takes `e`'s counters (each the value that can only find
    /// more dangerous structures) and its edges.
    fn fold_counters(&mut self, e: &Entry) {
        // The summary is never judged by the read-only rule (a relaxation),
        // hence its placeholder xid.
        let old = self.entries.entry(OLD).or_insert_with(|| Entry {
            xid: Xid(u64::MAX),
            snapshot: e.snapshot,
            prepared: e.prepared,
            committed: e.committed,
            ..Default::default()
        });
        let earliest = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        old.snapshot = old.snapshot.min(e.snapshot);
        old.prepared = earliest(old.prepared, e.prepared);
        old.committed = old.committed.max(e.committed);
        old.out_summary = earliest(old.out_summary, e.out_summary);
        old.ins.extend(e.ins.iter().filter(|&&r| r != OLD));
        old.outs.extend(e.outs.iter().filter(|&&w| w != OLD));
        assert!(
            !old.ins.contains(&OLD) && !old.outs.contains(&OLD),
            "the summary has no edge to itself"
        );
    }

    /// Points the edges of `e`'s neighbours at the summary instead of `id`.
    fn redirect_edges(&mut self, id: u64, e: &Entry) {
        for r in &e.ins {
            if let Some(x) = self.entries.get_mut(r) {
                x.outs.remove(&id);
                if *r != OLD {
                    x.outs.insert(OLD);
                }
            }
        }
        for w in &e.outs {
            if let Some(x) = self.entries.get_mut(w) {
                x.ins.remove(&id);
                if *w != OLD {
                    x.ins.insert(OLD);
                }
            }
        }
        debug_assert!(
            e.ins.iter().chain(&e.outs).all(|n| {
                self.entries
                    .get(n)
                    .is_none_or(|x| !x.ins.contains(&id) && !x.outs.contains(&id))
            }),
            "a neighbour's edge still names folded entry {id}"
        );
    }

    /// The summary takes `id`'s key marks (`keys`) and range marks, and
    /// tables where it now holds too many key marks are coarsened to one
    /// mark for the whole table.
    fn fold_marks(&mut self, id: u64, keys: Vec<(PageId, u64)>) {
        for k in keys {
            self.marks.transfer(k.1, id, OLD);
            if self.old_keys.insert(k) {
                *self.old_tables.entry(k.0).or_insert(0) += 1;
            }
        }
        for m in self.range_marks.values_mut() {
            if let Some(ranges) = m.remove(&id) {
                let mine = m.entry(OLD).or_default();
                mine.extend(ranges);
                if mine.len() > OLD_RANGES_MAX {
                    *mine = vec![(Bound::Unbounded, Bound::Unbounded)];
                }
            }
        }
        let crowded: Vec<PageId> = self
            .old_tables
            .iter()
            .filter(|(_, &n)| n > SIREAD_KEYS_PER_TABLE_MAX)
            .map(|(t, _)| *t)
            .collect();
        for table in crowded {
            self.coarsen_old(table);
        }
    }

    /// Drops committed entries no running transaction is concurrent with.
    fn cleanup(&mut self) {
        let oldest_running = self.running.keys().next().copied();
        while let Some(&(c, id)) = self.finished.front() {
            if oldest_running.is_some_and(|s| c > s) {
                break;
            }
            self.finished.pop_front();
            self.remove(id, true);
        }
        let old_done = self
            .entries
            .get(&OLD)
            .and_then(|e| e.committed)
            .is_some_and(|c| oldest_running.is_none_or(|s| c <= s));
        if old_done {
            self.remove(OLD, true);
        }
        self.summarise();
    }

    /// Whether the edge `reader → writer` is recorded (for tests and models).
    pub fn has_edge(&self, reader: u64, writer: u64) -> bool {
        self.entries
            .get(&reader)
            .is_some_and(|e| e.outs.contains(&writer))
    }

    /// Entries retained (running and recently committed), for tests.
    pub fn retained(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{SIREAD_RANGES_PER_COARSENING, SIREAD_RANGES_PER_TABLE_MAX};
    use std::ops::{Deref, DerefMut};

    const T: PageId = PageId(7);

    /// The graph plus the read sets its transactions would keep.
    #[derive(Default)]
    struct Sim {
        s: Ssi,
        reads: HashMap<u64, ReadSet>,
    }

    impl Deref for Sim {
        type Target = Ssi;
        fn deref(&self) -> &Ssi {
            &self.s
        }
    }

    impl DerefMut for Sim {
        fn deref_mut(&mut self) -> &mut Ssi {
            &mut self.s
        }
    }

    impl Sim {
        fn begin(&mut self, id: u64) {
            let r = self.s.begin(id);
            self.reads.insert(id, r);
        }

        fn read_key(&mut self, id: u64, table: PageId, key: &[u8], unseen: &[Xid]) -> Result<()> {
            let marks = self.s.marks();
            let c = self
                .reads
                .get_mut(&id)
                .and_then(|r| r.mark(&marks, table, key));
            if let Some(c) = c {
                self.s.coarsen(id, c);
            }
            self.s.read_unseen(id, unseen)
        }

        fn committed(&mut self, id: u64) {
            let r = self.reads.remove(&id).expect("a running transaction");
            self.s.committed(id, r);
        }

        fn begin_read(&mut self, id: u64) {
            let r = self.s.begin_read_only(id);
            self.reads.insert(id, r);
        }

        fn is_safe(&self, id: u64) -> bool {
            self.reads.get(&id).is_some_and(|r| r.is_safe())
        }
    }

    #[test]
    fn write_skew_dooms_the_second_committer() {
        // T1 reads x, T2 reads y; T1 writes y, T2 writes x.
        let mut s = Sim::default();
        s.begin(1);
        s.begin(2);
        s.assign(1, Xid(1));
        s.assign(2, Xid(2));
        s.read_key(1, T, b"x", &[]).expect("read");
        s.read_key(2, T, b"y", &[]).expect("read");
        s.write(1, T, b"y").expect("2 -> 1");
        s.write(2, T, b"x")
            .expect("1 -> 2: structure 2 -> 1 -> 2 without a committer yet");
        s.prepare(1).expect("the first committer goes");
        s.committed(1);
        assert!(matches!(
            s.prepare(2),
            Err(Error::SerializationFailure { .. })
        ));
    }

    #[test]
    fn disjoint_transactions_never_conflict_and_entries_are_cleaned_up() {
        let mut s = Sim::default();
        for round in 0..100u64 {
            let (a, b) = (2 * round, 2 * round + 1);
            s.begin(a);
            s.begin(b);
            s.read_key(a, T, b"a", &[]).expect("read");
            s.write(a, T, b"a").expect("write");
            s.read_key(b, T, b"b", &[]).expect("read");
            s.write(b, T, b"b").expect("write");
            s.prepare(a).expect("a");
            s.committed(a);
            s.prepare(b).expect("b");
            s.committed(b);
        }
        assert_eq!(s.retained(), 0, "finished transactions must not pile up");
        assert!(s.marks.is_empty() && s.range_marks.is_empty());
    }

    #[test]
    fn range_marks_catch_phantoms() {
        let mut s = Sim::default();
        s.begin(1);
        s.begin(2);
        s.assign(1, Xid(1));
        s.assign(2, Xid(2));
        s.read_range(
            1,
            T,
            (
                Bound::Included(b"a".to_vec()),
                Bound::Excluded(b"m".to_vec()),
            ),
        );
        s.read_range(
            2,
            T,
            (
                Bound::Included(b"a".to_vec()),
                Bound::Excluded(b"m".to_vec()),
            ),
        );
        s.write(1, T, b"c").expect("2 -> 1");
        s.write(2, T, b"d").expect("1 -> 2");
        s.prepare(1).expect("first");
        s.committed(1);
        assert!(
            s.prepare(2).is_err(),
            "inserts into each other's scanned range: write skew over a predicate"
        );
    }

    // Guards `first`/`last` narrowing a mark by value: an equal
    // whole-table mark (a coarsening) stands for other reads and must stay.
    #[test]
    fn narrowing_replaces_only_the_mark_it_names() {
        let mut s = Sim::default();
        s.begin(1);
        let whole: Range = (Bound::Unbounded, Bound::Unbounded);
        let upto_c: Range = (Bound::Unbounded, Bound::Included(b"c".to_vec()));
        let coarse = s.read_range(1, T, whole.clone()).expect("tracked");
        let first = s.read_range(1, T, whole.clone()).expect("tracked");
        s.narrow_range(1, T, first, &whole, upto_c.clone());
        s.narrow_range(1, T, first + 1, &whole, upto_c.clone());
        let rs = &s.range_marks[&T][&1];
        assert_eq!(rs[coarse], whole, "the other mark stays whole");
        assert_eq!(rs[first], upto_c);
        assert_eq!(rs.len(), 2, "narrowing a mark that is not there adds none");
        assert_eq!(s.read_range(3, T, whole), None, "not tracked");
    }

    /// Runs one committed transaction that reads `r` and writes `w`.
    fn small(s: &mut Sim, id: u64, r: &[u8], w: &[u8]) {
        s.begin(id);
        s.assign(id, Xid(id));
        s.read_key(id, T, r, &[]).expect("read");
        s.write(id, T, w).expect("write");
        s.prepare(id).expect("prepare");
        s.committed(id);
    }

    #[test]
    fn a_long_reader_does_not_make_memory_grow() {
        let mut s = Sim::default();
        s.begin(1);
        s.read_key(1, T, b"x", &[]).expect("long reader");
        for id in 2..20_000u64 {
            let k = [(id % 100) as u8];
            small(&mut s, id, &k, &[(id * 7 % 100) as u8]);
            assert!(
                s.retained() <= SSI_COMMITTED_MAX + 2,
                "{} entries retained",
                s.retained()
            );
        }
        assert!(
            s.marks.len() <= 101,
            "marks follow keys, not transactions: {}",
            s.marks.len()
        );
        assert!(
            s.by_xid.len() <= SSI_COMMITTED_MAX + 2,
            "xids of folded transactions are not kept one by one"
        );
        s.prepare(1).expect("the reader commits");
        s.committed(1);
        assert_eq!(s.retained(), 0, "everything goes once the long reader ends");
        assert!(s.marks.is_empty(), "{} key marks left", s.marks.len());
        assert!(s.by_xid.is_empty(), "{} xids left", s.by_xid.len());
        assert!(
            s.range_marks.is_empty(),
            "{} range marks left",
            s.range_marks.len()
        );
    }

    #[test]
    fn write_skew_is_still_caught_after_its_first_committer_was_summarised() {
        let mut s = Sim::default();
        s.begin(1); // keeps everything after it retained
        s.begin(10);
        s.begin(11);
        s.assign(10, Xid(10));
        s.assign(11, Xid(11));
        s.read_key(10, T, b"x", &[]).expect("read");
        s.read_key(11, T, b"y", &[]).expect("read");
        s.write(10, T, b"y").expect("11 -> 10");
        s.prepare(10).expect("10 commits first");
        s.committed(10);
        for id in 100..(100 + 2 * SSI_COMMITTED_MAX as u64) {
            small(&mut s, id, b"filler-r", b"filler-w");
        }
        assert!(
            !s.entries.contains_key(&10),
            "10 should have been folded into the summary"
        );
        // 11 now writes x, which 10 (summarised) read: 10 -> 11 -> 10.
        assert!(
            s.write(11, T, b"x").is_err() || s.prepare(11).is_err(),
            "write skew through a summarised transaction"
        );
    }

    #[test]
    fn a_version_by_a_summarised_writer_still_gives_an_edge() {
        let mut s = Sim::default();
        s.begin(1);
        s.begin(10);
        s.assign(10, Xid(10));
        s.write(10, T, b"y").expect("write");
        s.prepare(10).expect("prepare");
        s.committed(10);
        for id in 100..(100 + 2 * SSI_COMMITTED_MAX as u64) {
            small(&mut s, id, b"filler-r", b"filler-w");
        }
        assert!(
            !s.entries.contains_key(&10) && !s.by_xid.contains_key(&Xid(10)),
            "10 folded away"
        );
        // Reader 1 skips 10's version of y.
        s.read_key(1, T, b"y", &[]).expect("mark");
        s.read_unseen(1, &[Xid(10)]).expect("unseen");
        assert!(s.has_edge(1, OLD), "the rw edge must reach the summary");
    }

    #[test]
    fn read_only_snapshot_without_concurrent_writers_is_safe_at_once() {
        let mut s = Sim::default();
        s.begin_read(1);
        assert!(s.is_safe(1));
        s.read_key(1, T, b"x", &[]).expect("read");
        s.read_range(1, T, (Bound::Unbounded, Bound::Unbounded));
        assert!(
            s.marks.is_empty() && s.range_marks.is_empty(),
            "a safe snapshot takes no marks"
        );
        s.prepare(1).expect("commit");
        s.committed(1);
        assert!(!s.is_safe(1) && s.retained() == 0);
    }

    #[test]
    fn read_only_snapshot_becomes_safe_when_writers_finish_cleanly() {
        let mut s = Sim::default();
        s.begin(2);
        s.assign(2, Xid(2));
        s.begin_read(1);
        assert!(!s.is_safe(1), "a read-write transaction was running");
        s.read_key(1, T, b"x", &[]).expect("read");
        s.write(2, T, b"x").expect("1 -> 2");
        s.prepare(2).expect("prepare");
        s.committed(2);
        assert!(s.is_safe(1), "2 committed with no out-conflict: 1 is safe");
        s.prepare(1).expect("a safe snapshot never aborts");
    }

    #[test]
    fn read_only_snapshot_stays_unsafe_after_an_out_conflict_to_an_earlier_commit() {
        // The read-only anomaly's shape: 2 reads y, 3 writes y and commits,
        // then read-only 1 begins; 2 commits with its out-conflict to 3.
        let mut s = Sim::default();
        s.begin(2);
        s.assign(2, Xid(2));
        s.begin(3);
        s.assign(3, Xid(3));
        s.read_key(2, T, b"y", &[]).expect("read");
        s.write(3, T, b"y").expect("2 -> 3");
        s.prepare(3).expect("prepare");
        s.committed(3);
        s.begin_read(1);
        s.write(2, T, b"x").expect("write");
        s.prepare(2).expect("prepare");
        s.committed(2);
        assert!(
            !s.is_safe(1),
            "2 leads out to 3, committed before 1's snapshot"
        );
    }

    /// The read-only anomaly's shape with T3 published (visible to new
    /// snapshots) but not yet counted committed when read-only 1 begins.
    fn t3_published_then_read_only_t1(s: &mut Sim) {
        s.begin(2);
        s.assign(2, Xid(2));
        s.begin(3);
        s.assign(3, Xid(3));
        s.read_key(2, T, b"y", &[]).expect("read");
        s.write(3, T, b"y").expect("2 -> 3");
        s.prepare(3).expect("prepare");
        s.begin_read(1);
    }

    // Guards against the read-only rule comparing T3's commit, counted
    // after MVCC publication, with T1's snapshot: T1 may see T3 before SSI
    // counts T3 committed.
    #[test]
    fn read_only_rule_counts_a_t3_that_began_committing_before_the_snapshot() {
        let mut s = Sim::default();
        t3_published_then_read_only_t1(&mut s);
        s.read_key(1, T, b"x", &[]).expect("read");
        assert!(
            s.write(2, T, b"x").is_err(),
            "1 -> 2 -> 3 with 3 prepared before 1's snapshot: 2 is the victim"
        );
    }

    // Guards against the safe-snapshot test looking only at out-neighbours
    // counted committed: one published but not yet counted may be visible.
    #[test]
    fn read_only_snapshot_stays_unsafe_past_a_pivot_to_a_published_t3() {
        let mut s = Sim::default();
        t3_published_then_read_only_t1(&mut s);
        s.write(2, T, b"x").expect("write");
        s.prepare(2).expect("prepare");
        s.committed(2);
        s.committed(3);
        assert!(
            !s.is_safe(1),
            "2 led out to 3, prepared before 1's snapshot and counted committed after 2"
        );
        assert!(
            s.read_unseen(1, &[Xid(2)]).is_err(),
            "1 skips 2's version of x: 1 -> 2 -> 3, and only 1 can go"
        );
    }

    #[test]
    fn many_key_marks_coarsen_to_ranges_then_to_the_table() {
        let key = |round: u32, i: u32| ((round << 24) | (2 * i)).to_be_bytes();
        let mut s = Sim::default();
        s.begin(1);
        let n = SIREAD_KEYS_PER_TABLE_MAX as u32 + 1;
        for i in 0..n {
            s.read_key(1, T, &key(0, i), &[]).expect("read");
        }
        assert!(s.marks.is_empty(), "{} key marks left", s.marks.len());
        s.begin(2);
        s.write(2, T, &(n | 1).to_be_bytes())
            .expect("an unread key amid the read ones");
        assert!(
            s.entries[&2].ins.contains(&1),
            "a range cut from the keys read covers the gaps between them"
        );
        s.begin(3);
        s.write(3, T, &key(200, 0)).expect("write");
        assert!(
            !s.entries[&3].ins.contains(&1),
            "ranges do not reach keys beyond the last one read"
        );
        let rounds = (SIREAD_RANGES_PER_TABLE_MAX / SIREAD_RANGES_PER_COARSENING) as u32;
        for round in 1..=rounds {
            for i in 0..n {
                s.read_key(1, T, &key(round, i), &[]).expect("read");
            }
        }
        s.begin(4);
        s.write(4, T, &key(200, 0)).expect("write");
        assert!(
            s.entries[&4].ins.contains(&1),
            "past the range limit, one mark covers the whole table"
        );
        let ranges = s.range_marks[&T][&1].len();
        assert_eq!(ranges, 1, "the table mark replaces the ranges");
    }
}
