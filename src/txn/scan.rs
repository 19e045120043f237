//! Range scans: a double-ended iterator over the rows a transaction sees.
//!
//! A scan holds no latch between calls. It fetches rows in batches (a
//! shared-latch visit to the B+tree and the version chains each), and
//! remembers how far each end got as a key, so the tree may change freely
//! between batches: the scan's snapshot decides what it sees.

use std::collections::VecDeque;
use std::ops::{Bound, Range, RangeFrom, RangeFull, RangeInclusive, RangeTo, RangeToInclusive};

use super::Transaction;
use crate::btree::{self, Dir};
use crate::db::Table;
use crate::error::Result;
use crate::limits::{SCAN_BATCH, SCAN_BATCH_BYTES, SCAN_BATCH_FIRST};
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

/// Iterator over `Result<(key, value)>` in key order (or reverse with `.rev()`).
pub struct Scan<'t> {
    tx: &'t Transaction,
    table: Table,
    snap: Snapshot,
    /// Everything below (forward end) / above (back end) was fetched.
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    front: VecDeque<Row>,
    back: VecDeque<Row>,
    exhausted: bool,
    failed: bool,
    /// Keys the next batch fetches: small first (most scans stop early),
    /// doubling up to `SCAN_BATCH`.
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

    /// Fetches the next batch from one end: at most `SCAN_BATCH` keys and
    /// about `SCAN_BATCH_BYTES` of values, so one batch never holds the
    /// latch for long.
    fn fill(&mut self, dir: Dir) -> Result<()> {
        let inner = self.tx.db.inner();
        let mut r = inner.store.read();
        let mut entries = Vec::new();
        let lo = self.lo.as_ref().map(Vec::as_slice);
        let hi = self.hi.as_ref().map(Vec::as_slice);
        let done = btree::range(
            &mut r.view,
            self.table.root,
            lo,
            hi,
            dir,
            self.batch,
            &mut entries,
        )?;
        self.batch = (self.batch * 2).min(SCAN_BATCH);
        let total = entries.len();
        let mut bytes = 0;
        let mut taken = 0;
        // The last key examined bounds the next batch: kept here when no
        // row carries it, else copied from the row at the end.
        let mut last: Option<Vec<u8>> = None;
        let mut last_is_row = false;
        let mut unseen = Vec::new();
        for (key, entry) in entries {
            taken += 1;
            let rows = if dir == Dir::Forward {
                &mut self.front
            } else {
                &mut self.back
            };
            let seen = chain::read_visible(
                &mut r.view,
                &entry,
                &self.snap,
                self.tx.xid,
                inner.mgr.clog(),
                &mut unseen,
            )?;
            last_is_row = seen.is_some();
            match seen {
                Some(value) => {
                    bytes += key.len() + value.len();
                    rows.push_back((key, value));
                }
                None => last = Some(key),
            }
            if bytes >= SCAN_BATCH_BYTES {
                break;
            }
        }
        drop(r);
        self.tx.ssi_unseen(&unseen)?;
        if done && taken == total {
            self.exhausted = true;
        }
        if last_is_row {
            let rows = if dir == Dir::Forward {
                &self.front
            } else {
                &self.back
            };
            last = rows.back().map(|(k, _)| k.clone());
        }
        if let Some(last) = last {
            match dir {
                Dir::Forward => self.lo = Bound::Excluded(last),
                Dir::Reverse => self.hi = Bound::Excluded(last),
            }
        }
        Ok(())
    }

    fn next_from(&mut self, dir: Dir) -> Option<Result<Row>> {
        if self.failed {
            return None;
        }
        loop {
            let (mine, other) = match dir {
                Dir::Forward => (&mut self.front, &mut self.back),
                Dir::Reverse => (&mut self.back, &mut self.front),
            };
            if let Some(row) = mine.pop_front() {
                return Some(Ok(row));
            }
            if self.exhausted {
                // The other end may hold rows fetched from its side.
                return other.pop_back().map(Ok);
            }
            if let Err(e) = self.fill(dir) {
                self.failed = true;
                return Some(Err(e));
            }
        }
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
