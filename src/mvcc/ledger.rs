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
use crate::mvcc::Snapshot;
use crate::sync::{AtomicU64, Mutex, Ordering};

/// Bytes charged for an entry beyond its key and xids (map node share,
/// vector header).
const ENTRY_OVERHEAD: usize = 64;

/// Writers per key, per table.
type Writers = BTreeMap<PageId, BTreeMap<Vec<u8>, Vec<Xid>>>;

#[derive(Default)]
struct State {
    writers: Writers,
    bytes: usize,
    /// Lowest xid recorded (`None` when empty): pruning below a horizon
    /// that has not passed it has nothing to do.
    lowest: Option<Xid>,
}

/// Writers of removed versions, by table and key.
pub struct Ledger {
    state: Mutex<State>,
    /// Highest xid recorded (0: none). A reader whose snapshot sees every
    /// xid up to it has nothing to look up, and skips the lock: in the
    /// usual case every reader but an old one.
    highest: AtomicU64,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            state: Mutex::new(State::default()),
            highest: AtomicU64::new(0),
        }
    }
}

impl Ledger {
    /// Whether a reader with snapshot `snap` might find a writer here it
    /// does not see (every recorded writer committed, so one below the
    /// snapshot's xmin is seen).
    pub fn concerns(&self, snap: &Snapshot) -> bool {
        self.highest.load(Ordering::Acquire) >= snap.xmin.0
    }

    /// Records that `xid` wrote a version of `key` in `table` that is about
    /// to be removed. False if the ledger is full: keep the version.
    pub fn record(&self, table: PageId, key: &[u8], xid: Xid) -> bool {
        assert!(xid != Xid::NONE);
        let mut guard = self.state.lock();
        let s = &mut *guard;
        let cost = std::mem::size_of::<Xid>();
        let keys = s.writers.entry(table).or_default();
        match keys.get_mut(key) {
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
                    if keys.is_empty() {
                        s.writers.remove(&table);
                    }
                    return false;
                }
                keys.insert(key.to_vec(), vec![xid]);
                s.bytes += cost;
            }
        }
        s.lowest = Some(s.lowest.map_or(xid, |l| l.min(xid)));
        self.highest.fetch_max(xid.0, Ordering::Release);
        true
    }

    /// Appends the recorded writers of `key` in `table` to `out`.
    pub fn writers(&self, table: PageId, key: &[u8], out: &mut Vec<Xid>) {
        let s = self.state.lock();
        if let Some(list) = s.writers.get(&table).and_then(|keys| keys.get(key)) {
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
        let empty = match (lo, hi) {
            (Bound::Included(a), Bound::Included(b)) => a > b,
            (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
                a >= b
            }
            _ => false,
        };
        if empty {
            return; // BTreeMap::range panics on an inverted range
        }
        let s = self.state.lock();
        if let Some(keys) = s.writers.get(&table) {
            for list in keys.range::<[u8], _>((lo, hi)).map(|(_, l)| l) {
                out.extend_from_slice(list);
            }
        }
    }

    /// Forgets every writer below `horizon`: each is seen by every live
    /// serializable snapshot (`None`: there is none, forget everything).
    pub fn prune(&self, horizon: Option<Xid>) {
        if self.highest.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut s = self.state.lock();
        let Some(h) = horizon else {
            *s = State::default();
            self.highest.store(0, Ordering::Release);
            return;
        };
        if s.lowest.is_none_or(|l| l >= h) {
            return;
        }
        let mut freed = 0;
        for keys in s.writers.values_mut() {
            keys.retain(|key, list| {
                let before = list.len();
                list.retain(|&x| x >= h);
                freed += (before - list.len()) * std::mem::size_of::<Xid>();
                if list.is_empty() {
                    freed += key.len() + ENTRY_OVERHEAD;
                }
                !list.is_empty()
            });
        }
        s.writers.retain(|_, keys| !keys.is_empty());
        s.bytes -= freed;
        let (lowest, highest) = {
            let all = || s.writers.values().flat_map(|k| k.values()).flatten();
            (all().min().copied(), all().max().map_or(0, |x| x.0))
        };
        s.lowest = lowest;
        self.highest.store(highest, Ordering::Release);
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
        let old = Snapshot {
            xmin: Xid(5),
            xmax: Xid(5),
            xip: Vec::new().into(),
        };
        let new = Snapshot {
            xmin: Xid(10),
            xmax: Xid(10),
            xip: Vec::new().into(),
        };
        assert!(!l.concerns(&old));
        assert!(l.record(T, b"b", Xid(5)));
        assert!(l.record(T, b"b", Xid(9)));
        assert!(l.record(T, b"b", Xid(9)), "a repeat costs nothing");
        assert!(l.record(T, b"d", Xid(6)));
        assert!(l.record(PageId(8), b"a", Xid(4)));
        assert!(l.concerns(&old) && !l.concerns(&new), "9 is the highest");
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
        assert!(!l.concerns(&old));
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
