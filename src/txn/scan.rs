//! Range scans: a double-ended iterator over the rows a transaction sees.
//!
//! A scan holds no latch between calls. It fetches index entries in
//! batches (one shared-latch visit to the B+tree each) and remembers how
//! far each end got as a key, so the tree may change freely between
//! batches; each row's version chain is read when the row is taken, under
//! the latch again, and the scan's snapshot decides what it sees.

use std::collections::VecDeque;
use std::ops::{Bound, Range, RangeFrom, RangeFull, RangeInclusive, RangeTo, RangeToInclusive};

use super::Transaction;
use crate::btree::{self, Dir};
use crate::db::Table;
use crate::error::Result;
use crate::heap;
use crate::ids::Tid;
use crate::limits::{SCAN_BATCH, SCAN_BATCH_FIRST};
use crate::mvcc::chain;
use crate::mvcc::Snapshot;

/// A range of keys: `..`, `a..b`, `a..=b`, `a..`, `..b`, `..=b`, or a pair
/// of `Bound`s, over anything that is `AsRef<[u8]>`.
pub trait KeyRange {
    /// The bounds as owned bytes.
    fn into_bounds(self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>);
}

fn own<K: AsRef<[u8]>>(b: Bound<K>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl KeyRange for RangeFull {
    fn into_bounds(self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (Bound::Unbounded, Bound::Unbounded)
    }
}

impl<K: AsRef<[u8]>> KeyRange for Range<K> {
    fn into_bounds(self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (
            own(Bound::Included(self.start)),
            own(Bound::Excluded(self.end)),
        )
    }
}

impl<K: AsRef<[u8]>> KeyRange for RangeInclusive<K> {
    fn into_bounds(self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        let (s, e) = self.into_inner();
        (own(Bound::Included(s)), own(Bound::Included(e)))
    }
}

impl<K: AsRef<[u8]>> KeyRange for RangeFrom<K> {
    fn into_bounds(self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (own(Bound::Included(self.start)), Bound::Unbounded)
    }
}

impl<K: AsRef<[u8]>> KeyRange for RangeTo<K> {
    fn into_bounds(self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (Bound::Unbounded, own(Bound::Excluded(self.end)))
    }
}

impl<K: AsRef<[u8]>> KeyRange for RangeToInclusive<K> {
    fn into_bounds(self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (Bound::Unbounded, own(Bound::Included(self.end)))
    }
}

impl<K: AsRef<[u8]>> KeyRange for (Bound<K>, Bound<K>) {
    fn into_bounds(self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (own(self.0), own(self.1))
    }
}

type Row = (Vec<u8>, Vec<u8>);

/// An index entry fetched but not yet read: the key, the tid of its
/// newest version then (`None`: the entry was malformed), and the heap's
/// removal count at that moment.
struct Pending {
    key: Vec<u8>,
    tid: Option<Tid>,
    removals: u64,
}

/// Iterator over `Result<(key, value)>` in key order (or reverse with `.rev()`).
pub struct Scan<'t> {
    tx: &'t Transaction,
    table: Table,
    snap: Snapshot,
    /// Everything below (forward end) / above (back end) was fetched.
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    front: VecDeque<Pending>,
    back: VecDeque<Pending>,
    exhausted: bool,
    failed: bool,
    /// Entries the next batch fetches: small first (most scans stop
    /// early), doubling up to `SCAN_BATCH`.
    batch: usize,
}

impl<'t> Scan<'t> {
    pub(super) fn new(
        tx: &'t Transaction,
        table: Table,
        snap: Snapshot,
        lo: Bound<Vec<u8>>,
        hi: Bound<Vec<u8>>,
    ) -> Self {
        let empty = match (&lo, &hi) {
            (Bound::Included(a), Bound::Included(b)) => a > b,
            (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b) | Bound::Included(b)) => {
                a >= b
            }
            _ => false,
        };
        Scan {
            tx,
            table,
            snap,
            lo,
            hi,
            front: VecDeque::new(),
            back: VecDeque::new(),
            exhausted: empty,
            failed: false,
            batch: SCAN_BATCH_FIRST,
        }
    }

    /// Fetches the next batch of index entries from one end, at most
    /// `batch` of them. Their versions are read one row at a time as the
    /// caller takes rows, so a scan that stops early reads no more heap
    /// tuples than rows it returns.
    fn fill(&mut self, dir: Dir) -> Result<()> {
        let inner = self.tx.db.inner();
        let side = match dir {
            Dir::Forward => &mut self.front,
            Dir::Reverse => &mut self.back,
        };
        let before = side.len();
        // Grown once to the batch, not doubled up to it entry by entry.
        side.reserve(self.batch);
        let bounds = (
            self.lo.as_ref().map(Vec::as_slice),
            self.hi.as_ref().map(Vec::as_slice),
        );
        let mut r = inner.store.read();
        // Read under the latch that the entries are read under: a removal
        // after it makes them suspect (`resolve`).
        let removals = inner.store.fsm.removals();
        let done = btree::range_with(
            &mut r.view,
            self.table.root,
            bounds,
            dir,
            self.batch,
            |k, e| {
                side.push_back(Pending {
                    key: k.to_vec(),
                    tid: chain::tid_of(e),
                    removals,
                })
            },
        )?;
        drop(r);
        self.batch = (self.batch * 2).min(SCAN_BATCH);
        self.exhausted = done;
        if let Some(last) = side.range(before..).next_back() {
            let past = Bound::Excluded(last.key.clone());
            match dir {
                Dir::Forward => self.lo = past,
                Dir::Reverse => self.hi = past,
            }
        }
        Ok(())
    }

    /// The value this scan's snapshot sees for a fetched entry. The tid is
    /// trusted only if vacuum removed no tuple since it was fetched (a
    /// removed slot may hold another key's tuple by now); otherwise the
    /// key is looked up again. A head that is no longer the newest version
    /// is still a right place to start: versions newer than the fetch were
    /// written after this scan's snapshot and its SSI marks, so they are
    /// neither visible nor needed to detect a conflict.
    fn resolve(&self, p: &Pending) -> Result<Option<Vec<u8>>> {
        let inner = self.tx.db.inner();
        let mut unseen = Vec::new();
        let value = {
            let mut r = inner.store.read();
            let tid = if inner.store.fsm.removals() == p.removals {
                p.tid
            } else {
                match btree::get_with(&mut r.view, self.table.root, &p.key, chain::tid_of)? {
                    Some(t) => t,
                    None => return Ok(None),
                }
            };
            let head = chain::valid(&r.view, tid)?;
            chain::read_visible(
                &mut r.view,
                head,
                &self.snap,
                self.tx.xid,
                inner.mgr.clog(),
                &mut unseen,
            )?
        };
        self.tx.ssi_unseen(&unseen)?;
        Ok(value)
    }

    fn next_pending(&mut self, dir: Dir) -> Result<Option<Pending>> {
        loop {
            let (mine, other) = match dir {
                Dir::Forward => (&mut self.front, &mut self.back),
                Dir::Reverse => (&mut self.back, &mut self.front),
            };
            if let Some(p) = mine.pop_front() {
                return Ok(Some(p));
            }
            if self.exhausted {
                // The other end may hold entries fetched from its side.
                return Ok(other.pop_back());
            }
            self.fill(dir)?;
        }
    }

    fn next_from(&mut self, dir: Dir) -> Option<Result<Row>> {
        if self.failed {
            return None;
        }
        let r = self.next_row(dir);
        self.failed = r.is_err();
        r.transpose()
    }

    /// Starts loading the heap page of the entries after the one being
    /// resolved: rows in key order lie on pages in no order, so each is a
    /// few cache misses, and this lets the next rows' overlap this one's
    /// work. A hint only: an entry is checked when it is resolved.
    fn warm_next(&self, dir: Dir) {
        let side = match dir {
            Dir::Forward => &self.front,
            Dir::Reverse => &self.back,
        };
        let pool = &self.tx.db.inner().store.pool;
        // A pipeline of the three misses a row costs: three rows ahead,
        // the page-table entry; two ahead, the frame, the page header and
        // the slot; one ahead, the tuple the slot (loaded by now) points at.
        if let Some(tid) = side.get(2).and_then(|n| n.tid) {
            pool.prefetch_lookup(tid.page);
        }
        if let Some(tid) = side.get(1).and_then(|n| n.tid) {
            pool.prefetch(tid.page, heap::page::slot_offset(tid.slot));
        }
        if let Some(tid) = side.front().and_then(|n| n.tid) {
            pool.prefetch_within(tid.page, |p| heap::page::tuple_offset(p, tid.slot));
        }
    }

    /// The next row visible to the scan's snapshot; `None` at the end.
    fn next_row(&mut self, dir: Dir) -> Result<Option<Row>> {
        while let Some(p) = self.next_pending(dir)? {
            self.warm_next(dir);
            if let Some(value) = self.resolve(&p)? {
                return Ok(Some((p.key, value)));
            }
        }
        Ok(None)
    }
}

impl Iterator for Scan<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_from(Dir::Forward)
    }
}

impl DoubleEndedIterator for Scan<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.next_from(Dir::Reverse)
    }
}
