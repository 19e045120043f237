//! Range scans: a double-ended iterator over the rows a transaction sees.
//!
//! A scan holds no latch between calls. It fetches index entries in
//! batches (one shared-latch visit to the B+tree each) and remembers how
//! far each end got as a key, so the tree may change freely between
//! batches; each row's version chain is read when the row is taken, under
//! the latch again, and the scan's snapshot decides what it sees.
//!
//! The two ends are fetched independently: `next_back` walks the tree
//! backwards, a batch at a time, as `next` walks it forwards (leaves have
//! no back links, so each leaf boundary re-descends from the root below
//! the leaf's lower fence), and a reverse scan collects nothing to
//! reverse. A scan may also run keys-only (`count`, `delete_range`): each
//! row is judged from its version headers, its value neither copied nor
//! read from overflow pages.
//!
//! Vacuum must not free what the scan will read. A Read Committed scan's
//! snapshot is its own, so it is pinned with the transaction manager
//! while the scan lives (`Pin`). A serializable scan also needs the
//! writers of versions it would skip: for those vacuum has removed, it
//! looks each batch's span up in the ledger of removed writes (and a
//! fetched key whose versions went since, by itself).

use std::collections::VecDeque;
use std::ops::{Bound, Range, RangeFrom, RangeFull, RangeInclusive, RangeTo, RangeToInclusive};

use super::Transaction;
use crate::btree::{self, Dir};
use std::sync::Arc;

use crate::catalog::Table;
use crate::error::Result;
use crate::heap;
use crate::ids::{PageId, Tid};
use crate::limits::{SCAN_BATCH, SCAN_BATCH_FIRST};
use crate::mvcc::chain;
use crate::mvcc::Snapshot;
use crate::txn::Core;

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

/// The keys that start with a prefix, as a [`KeyRange`]:
/// `tx.scan(&t, Prefix("user:"))`. A range rather than a `scan_prefix`
/// method, so that every call taking a range takes a prefix too (`count`,
/// `delete_range`, the reverse of a scan).
///
/// The range is `[prefix, end)`, `end` being the least key above every key
/// with the prefix: the prefix without its trailing `0xFF` bytes, its last
/// byte plus one. A prefix of `0xFF` bytes only has no such key and the
/// range runs to the end of the table; the empty prefix is the whole table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix<K>(pub K);

impl<K: AsRef<[u8]>> KeyRange for Prefix<K> {
    fn into_bounds(self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        let p = self.0.as_ref();
        let lo = match p.is_empty() {
            true => Bound::Unbounded,
            false => Bound::Included(p.to_vec()),
        };
        (lo, prefix_end(p))
    }
}

/// The least key above every key that starts with `p`, or `Unbounded` if
/// there is none (`p` empty or all `0xFF`).
fn prefix_end(p: &[u8]) -> Bound<Vec<u8>> {
    match p.iter().rposition(|&b| b != 0xFF) {
        Some(i) => {
            let mut end = p[..=i].to_vec();
            end[i] += 1;
            debug_assert!(end.as_slice() > p && !p.starts_with(&end));
            Bound::Excluded(end)
        }
        None => Bound::Unbounded,
    }
}

type Row = (Vec<u8>, Vec<u8>);

/// Moves a scan's bound past `key` (exclusive), reusing the bound's buffer.
fn past(bound: &mut Bound<Vec<u8>>, key: &[u8]) {
    let mut buf = match std::mem::replace(bound, Bound::Unbounded) {
        Bound::Included(b) | Bound::Excluded(b) => b,
        Bound::Unbounded => Vec::new(),
    };
    buf.clear();
    buf.extend_from_slice(key);
    *bound = Bound::Excluded(buf);
}

/// An index entry fetched but not yet read: where its key lies in its
/// end's key buffer, the tid of its newest version then (`None`: the entry
/// was malformed), and the heap's removal count at that moment.
struct Pending {
    key: (u32, u32),
    tid: Option<Tid>,
    removals: u64,
}

/// The entries fetched from one end of the range and not yet taken, with
/// their keys in one buffer (a row's key is copied out only when the row
/// is returned: a batch holds more entries than most scans take).
#[derive(Default)]
struct End {
    pending: VecDeque<Pending>,
    keys: Vec<u8>,
}

impl End {
    fn key(&self, p: &Pending) -> &[u8] {
        let (at, len) = (p.key.0 as usize, p.key.1 as usize);
        // Offsets were taken from this buffer, which is cleared only when
        // no entry is pending.
        self.keys.get(at..at + len).unwrap_or_default()
    }

    /// Fetches into this end, which has nothing pending, at most `batch`
    /// index entries of the tree at `root` within `bounds`, from its `dir`
    /// end, under one visit with the store's read latch. Whether they
    /// reach the range's end.
    fn fetch(
        &mut self,
        inner: &Core,
        root: PageId,
        bounds: (Bound<&[u8]>, Bound<&[u8]>),
        dir: Dir,
        batch: usize,
    ) -> Result<bool> {
        // Called only when this end has nothing pending.
        debug_assert!(self.pending.is_empty());
        // Keys are at most KEY_MAX bytes and a batch at most SCAN_BATCH
        // entries: offsets fit in u32.
        assert!(batch <= SCAN_BATCH);
        self.keys.clear();
        // Grown once to the batch (and keys of up to 32 bytes), not doubled
        // up to it entry by entry.
        self.pending.reserve(batch);
        self.keys.reserve(batch * 32);
        let mut r = inner.engine.store().read();
        // Read under the latch that the entries are read under: a removal
        // after it makes them suspect (`resolve`).
        let removals = inner.engine.store().fsm.removals();
        let done = btree::range_with(&mut r.view, root, bounds, dir, batch, |k, e| {
            let key = (self.keys.len() as u32, k.len() as u32);
            self.keys.extend_from_slice(k);
            self.pending.push_back(Pending {
                key,
                tid: chain::tid_of(e),
                removals,
            })
        })?;
        drop(r);
        Ok(done)
    }
}

/// The span of the index a batch fetched from the `dir` end covered: the
/// scan's `bounds`, cut at the batch's `last` key unless the batch reached
/// the range's end (`done`).
#[inline]
fn batch_span<'a>(
    dir: Dir,
    (lo, hi): (Bound<&'a [u8]>, Bound<&'a [u8]>),
    last: Option<&'a [u8]>,
    done: bool,
) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    match (dir, last, done) {
        (Dir::Forward, Some(k), false) => (lo, Bound::Included(k)),
        (Dir::Reverse, Some(k), false) => (Bound::Included(k), hi),
        _ => (lo, hi),
    }
}

/// Iterator over `Result<(key, value)>` in key order (or reverse with `.rev()`).
pub struct Scan<'t> {
    tx: &'t Transaction,
    table: Table,
    snap: Snapshot,
    /// `snap`'s registration for vacuum (Read Committed).
    _pin: Option<Pin>,
    /// Everything below (forward end) / above (back end) was fetched.
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    front: End,
    back: End,
    exhausted: bool,
    failed: bool,
    /// Entries the next batch fetches: small first (most scans stop
    /// early), doubling up to `SCAN_BATCH`.
    batch: usize,
    /// Whether rows carry their values; without, a row's value is empty and
    /// neither copied nor read from overflow pages (`count`, `delete_range`).
    values: bool,
}

impl<'t> Scan<'t> {
    pub(super) fn new(
        tx: &'t Transaction,
        table: Table,
        snap: Snapshot,
        pin: Option<Pin>,
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
            _pin: pin,
            lo,
            hi,
            front: End::default(),
            back: End::default(),
            exhausted: empty,
            failed: false,
            batch: SCAN_BATCH_FIRST,
            values: true,
        }
    }

    /// The same scan yielding keys only (each row's value empty).
    pub(super) fn keys_only(mut self) -> Self {
        self.values = false;
        self
    }

    /// How many rows the scan would yield, judged from version headers
    /// alone: no key or value is copied out.
    pub(super) fn count_rows(mut self) -> Result<u64> {
        self.values = false;
        let mut n = 0;
        while let Some((p, from)) = self.next_pending(Dir::Forward)? {
            self.warm_next(Dir::Forward);
            let key = self.end(from).key(&p);
            if self.resolve(&p, key)?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Fetches the next batch of index entries from one end, at most
    /// `batch` of them. Their versions are read one row at a time as the
    /// caller takes rows, so a scan that stops early reads no more heap
    /// tuples than rows it returns.
    fn fill(&mut self, dir: Dir) -> Result<()> {
        let inner = self.tx.core();
        let side = match dir {
            Dir::Forward => &mut self.front,
            Dir::Reverse => &mut self.back,
        };
        let bounds = (
            self.lo.as_ref().map(Vec::as_slice),
            self.hi.as_ref().map(Vec::as_slice),
        );
        let done = side.fetch(inner, self.table.root, bounds, dir, self.batch)?;
        self.batch = (self.batch * 2).min(SCAN_BATCH);
        self.exhausted = done;
        // Writers of versions vacuum removed before this batch was fetched,
        // in the span the batch covered (later removals: `resolve`).
        let mut unseen = Vec::new();
        if self.tx.serializable() && inner.txns.ledger().concerns(&self.snap) {
            let last = side.pending.back().map(|p| side.key(p));
            let (lo, hi) = batch_span(dir, bounds, last, done);
            inner
                .txns
                .ledger()
                .writers_in(self.table.root, lo, hi, &mut unseen);
        }
        if let Some(last) = side.pending.back() {
            let bound = match dir {
                Dir::Forward => &mut self.lo,
                Dir::Reverse => &mut self.hi,
            };
            past(bound, side.key(last));
        }
        if !unseen.is_empty() {
            self.tx.keep_unseen(&self.snap, &mut unseen);
            self.tx.ssi_unseen(&unseen, None)?;
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
    fn resolve(&self, p: &Pending, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let inner = self.tx.core();
        let mut unseen = Vec::new();
        let mut removed = false;
        let value = {
            let mut r = inner.engine.store().read();
            let tid = if inner.engine.store().fsm.removals() == p.removals {
                Some(p.tid)
            } else {
                // The key's versions may all have gone since: not a row,
                // but perhaps writers in the ledger.
                removed = true;
                btree::get_with(&mut r.view, self.table.root, key, chain::tid_of)?
            };
            match tid {
                Some(tid) => {
                    let head = chain::valid(&r.view, tid)?;
                    let clog = &self.tx.statuses();
                    match self.values {
                        true => chain::read_visible(
                            &mut r.view,
                            head,
                            &self.snap,
                            self.tx.xid,
                            clog,
                            &mut unseen,
                        )?,
                        false => chain::sees_row(
                            &mut r.view,
                            head,
                            &self.snap,
                            self.tx.xid,
                            clog,
                            &mut unseen,
                        )?
                        .then(Vec::new),
                    }
                }
                None => None,
            }
        };
        if removed {
            self.tx
                .removed_writers(&self.snap, self.table.root, key, &mut unseen);
        }
        self.tx.ssi_unseen(&unseen, None)?;
        Ok(value)
    }

    /// The next entry from `dir`'s end, and the end whose buffer holds its
    /// key.
    fn next_pending(&mut self, dir: Dir) -> Result<Option<(Pending, Dir)>> {
        let other_dir = match dir {
            Dir::Forward => Dir::Reverse,
            Dir::Reverse => Dir::Forward,
        };
        loop {
            if let Some(p) = self.end_mut(dir).pending.pop_front() {
                return Ok(Some((p, dir)));
            }
            if self.exhausted {
                // The other end may hold entries fetched from its side.
                return Ok(self
                    .end_mut(other_dir)
                    .pending
                    .pop_back()
                    .map(|p| (p, other_dir)));
            }
            self.fill(dir)?;
        }
    }

    fn end(&self, dir: Dir) -> &End {
        match dir {
            Dir::Forward => &self.front,
            Dir::Reverse => &self.back,
        }
    }

    fn end_mut(&mut self, dir: Dir) -> &mut End {
        match dir {
            Dir::Forward => &mut self.front,
            Dir::Reverse => &mut self.back,
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
        let side = &self.end(dir).pending;
        let pool = &self.tx.core().engine.store().pool;
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
        while let Some((p, from)) = self.next_pending(dir)? {
            self.warm_next(dir);
            let key = self.end(from).key(&p);
            if let Some(value) = self.resolve(&p, key)? {
                return Ok(Some((key.to_vec(), value)));
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

/// A Read Committed scan's snapshot, registered with the transaction
/// manager until the scan is dropped. It owns a handle on the database's core
/// rather than borrowing the transaction, so a scan needs no drop glue
/// that outlives its borrow (`tx.scan(..)?.count()` as a block's value).
pub(super) struct Pin {
    core: Arc<Core>,
    token: u64,
    id: u64,
}

impl Pin {
    pub(super) fn new(core: Arc<Core>, token: u64, id: u64) -> Pin {
        Pin { core, token, id }
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.core.txns.manager().unpin(self.token, self.id);
    }
}

impl DoubleEndedIterator for Scan<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.next_from(Dir::Reverse)
    }
}
