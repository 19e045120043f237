//! The ledger of removed writes: who wrote the versions vacuum freed
//! while a serializable transaction that does not see those writers runs.
//!
//! Serializable snapshot isolation takes a read's rw-antidependencies from
//! the versions the read skips (`chain::read_visible`): the creator of
//! every newer version it cannot see. Vacuum keeps only versions some
//! snapshot *sees*, so a version a live serializable transaction would
//! merely skip may go, and with it the edge. Before vacuum frees such a
//! version it writes `(table, key) → creator` here; a serializable read
//! of the key (a get, or a scan over it) takes the creators it does not
//! see from the ledger as if it had skipped their versions.
//!
//! ```text
//!   chain of k:  [xmin 9] → [xmin 7] → [xmin 3]      R's snapshot sees 3
//!   vacuum:      [xmin 9] → ........ → [xmin 3]      ledger: (t, k) → {7}
//!   R reads k:   skips 9, sees 3, meets 7 in the ledger: edges R → 9, R → 7
//! ```
//!
//! Invariants: an entry is written before its version leaves the heap
//! (under the same store latch), and a reader consults the ledger after
//! it read the chain, so a version is always met in one place or the
//! other. An entry goes once every live serializable snapshot sees its
//! writer (no reader can take an edge to it any more).
//!
//! Bounded by `LEDGER_BYTES_MAX`: when full, `record` refuses and vacuum
//! keeps the version in the heap instead. Nothing here is persistent: no
//! transaction outlives a restart, and no edge is needed after one.
//! The ledger only reports writers; SSI decides what an edge means.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::ids::{PageId, Xid};
use crate::limits::LEDGER_BYTES_MAX;
use crate::sync::{AtomicU64, Mutex, Ordering};

/// Bytes charged for an entry beyond its key and xids (map node share,
/// vector header).
const ENTRY_OVERHEAD: usize = 64;

#[derive(Default)]
struct State {
    writers: BTreeMap<(PageId, Vec<u8>), Vec<Xid>>,
    bytes: usize,
    /// Lowest xid recorded (`None` when empty): pruning below a horizon
    /// that has not passed it has nothing to do.
    lowest: Option<Xid>,
}

/// Writers of removed versions, by table and key.
pub struct Ledger {
    state: Mutex<State>,
    /// Entries held: readers skip the lock while it is zero.
    entries: AtomicU64,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            state: Mutex::new(State::default()),
            entries: AtomicU64::new(0),
        }
    }
}

impl Ledger {
    /// Whether the ledger is empty (readers' fast path).
    pub fn is_empty(&self) -> bool {
        self.entries.load(Ordering::Acquire) == 0
    }

    /// Records that `xid` wrote a version of `key` in `table` that is about
    /// to be removed. False if the ledger is full: keep the version.
    pub fn record(&self, table: PageId, key: &[u8], xid: Xid) -> bool {
        assert!(xid != Xid::NONE);
        let mut guard = self.state.lock();
        let s = &mut *guard;
        let cost = std::mem::size_of::<Xid>();
        match s.writers.get_mut(&(table, key.to_vec())) {
            Some(list) if list.contains(&xid) => return true,
            Some(list) => {
                if s.bytes + cost > LEDGER_BYTES_MAX {
                    return false;
                }
                list.push(xid);
                s.bytes += cost;
            }
            None => {
                let cost = cost + key.len() + ENTRY_OVERHEAD;
                if s.bytes + cost > LEDGER_BYTES_MAX {
                    return false;
                }
                s.writers.insert((table, key.to_vec()), vec![xid]);
                s.bytes += cost;
                self.entries.fetch_add(1, Ordering::Release);
            }
        }
        s.lowest = Some(s.lowest.map_or(xid, |l| l.min(xid)));
        true
    }

    /// Appends the recorded writers of `key` in `table` to `out`.
    pub fn writers(&self, table: PageId, key: &[u8], out: &mut Vec<Xid>) {
        if self.is_empty() {
            return;
        }
        let s = self.state.lock();
        if let Some(list) = s.writers.get(&(table, key.to_vec())) {
            out.extend_from_slice(list);
        }
    }

    /// Appends the recorded writers of every key of `table` within
    /// `(lo, hi)` to `out`.
    pub fn writers_in(
        &self,
        table: PageId,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        out: &mut Vec<Xid>,
    ) {
        if self.is_empty() {
            return;
        }
        let at = |b: Bound<&[u8]>| b.map(|k| (table, k.to_vec()));
        let lo = match at(lo) {
            Bound::Unbounded => Bound::Included((table, Vec::new())),
            b => b,
        };
        let hi = match at(hi) {
            // Keys of the next table sort after every key of this one.
            Bound::Unbounded => Bound::Excluded((PageId(table.0 + 1), Vec::new())),
            b => b,
        };
        if matches!((&lo, &hi), (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) if a > b)
        {
            return;
        }
        let s = self.state.lock();
        for list in s.writers.range((lo, hi)).map(|(_, l)| l) {
            out.extend_from_slice(list);
        }
    }

    /// Forgets every writer below `horizon`: each is seen by every live
    /// serializable snapshot (`None`: there is none, forget everything).
    pub fn prune(&self, horizon: Option<Xid>) {
        if self.is_empty() {
            return;
        }
        let mut s = self.state.lock();
        let Some(h) = horizon else {
            *s = State::default();
            self.entries.store(0, Ordering::Release);
            return;
        };
        if s.lowest.is_none_or(|l| l >= h) {
            return;
        }
        let mut freed = 0;
        s.writers.retain(|(_, key), list| {
            let before = list.len();
            list.retain(|&x| x >= h);
            freed += (before - list.len()) * std::mem::size_of::<Xid>();
            if list.is_empty() {
                freed += key.len() + ENTRY_OVERHEAD;
            }
            !list.is_empty()
        });
        s.bytes -= freed;
        s.lowest = s.writers.values().flatten().min().copied();
        self.entries
            .store(s.writers.len() as u64, Ordering::Release);
        debug_assert!(s.writers.is_empty() == (s.bytes == 0));
    }

    /// Bytes the ledger holds, as charged against `LEDGER_BYTES_MAX`.
    pub fn bytes(&self) -> usize {
        self.state.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: PageId = PageId(7);

    #[test]
    fn writers_by_key_and_range_and_pruned_below_a_horizon() {
        let l = Ledger::default();
        assert!(l.is_empty());
        assert!(l.record(T, b"b", Xid(5)));
        assert!(l.record(T, b"b", Xid(9)));
        assert!(l.record(T, b"b", Xid(9)), "a repeat costs nothing");
        assert!(l.record(T, b"d", Xid(6)));
        assert!(l.record(PageId(8), b"a", Xid(4)));
        let mut out = Vec::new();
        l.writers(T, b"b", &mut out);
        assert_eq!(out, [Xid(5), Xid(9)]);
        out.clear();
        l.writers_in(T, Bound::Excluded(b"b"), Bound::Unbounded, &mut out);
        assert_eq!(out, [Xid(6)], "other tables' keys are outside the range");
        out.clear();
        l.writers_in(T, Bound::Unbounded, Bound::Included(b"b"), &mut out);
        assert_eq!(out, [Xid(5), Xid(9)]);
        l.prune(Some(Xid(6)));
        out.clear();
        l.writers_in(T, Bound::Unbounded, Bound::Unbounded, &mut out);
        assert_eq!(out, [Xid(9), Xid(6)]);
        l.prune(None);
        assert!(l.is_empty());
        assert_eq!(l.bytes(), 0);
    }

    #[test]
    fn a_full_ledger_refuses() {
        let l = Ledger::default();
        let key = vec![1u8; 2000];
        let mut n = 0u64;
        while l.record(T, &key[..(n % 2000) as usize], Xid(n + 1)) {
            n += 1;
            assert!(n < 1 << 24, "never full");
        }
        assert!(l.bytes() <= LEDGER_BYTES_MAX);
        l.prune(Some(Xid(n / 2)));
        assert!(l.record(T, b"x", Xid(n + 5)), "pruning makes room");
    }
}
