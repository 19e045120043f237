//! The ledger of removed writes: who wrote the versions vacuum freed
//! while a serializable transaction, or a Snapshot or Serializable writer,
//! that does not see those writers runs.
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
//! Writers meet it too: a Snapshot or Serializable put or delete of a key
//! fails (first updater wins) when the ledger holds a creator of the key
//! its snapshot does not see, as it would have failed on the key's newest
//! version had vacuum left it (`vacuum` argues why creators suffice).
//!
//! Invariants: an entry is written before its version leaves the heap
//! (under the same store latch), and a reader consults the ledger after
//! it read the chain, so a version is always met in one place or the
//! other (a writer consults it under that latch, after it read the chain).
//! An entry goes once every live serializable or writing snapshot sees its
//! writer (no reader can take an edge to it, no writer fail on it, any
//! more).
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

/// Bytes charged for a key's entry beyond its key and encoded xids (map
/// node share, vector headers).
const ENTRY_OVERHEAD: usize = 64;

/// One key's writers, in the order recorded, as zigzag varint deltas:
/// writers of one key are close in xid order, so most take one to three
/// bytes instead of eight.
#[derive(Default)]
struct Xids {
    bytes: Vec<u8>,
    last: u64,
}

impl Xids {
    /// Appends `x` (a repeat of the last one is dropped).
    fn push(&mut self, x: Xid) {
        if x.0 == self.last {
            return;
        }
        let d = x.0.wrapping_sub(self.last) as i64;
        let mut v = ((d << 1) ^ (d >> 63)) as u64;
        while v >= 0x80 {
            self.bytes.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.bytes.push(v as u8);
        self.last = x.0;
    }

    fn each(&self, mut f: impl FnMut(Xid)) {
        let (mut at, mut v, mut shift) = (0u64, 0u64, 0u32);
        for &b in &self.bytes {
            v |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                let d = ((v >> 1) as i64) ^ -((v & 1) as i64);
                at = at.wrapping_add(d as u64);
                f(Xid(at));
                (v, shift) = (0, 0);
            }
        }
    }

    /// Memory held, as charged against `LEDGER_BYTES_MAX`.
    fn cost(&self) -> usize {
        self.bytes.capacity()
    }
}

/// Writers per key, per table.
type Writers = BTreeMap<PageId, BTreeMap<Vec<u8>, Xids>>;

#[derive(Default)]
struct State {
    writers: Writers,
    /// Memory held: keys, encoded xids (their vectors' capacity), and
    /// `ENTRY_OVERHEAD` per key.
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

impl State {
    /// Whether one more record of `key` surely fits: room for a new
    /// entry, or for the key's vector to double.
    fn fits(&self, table: PageId, key: &[u8]) -> bool {
        let grows = self
            .writers
            .get(&table)
            .and_then(|keys| keys.get(key))
            .map_or(0, |x| x.bytes.capacity().max(16));
        self.bytes + (key.len() + ENTRY_OVERHEAD + 16).max(grows) <= LEDGER_BYTES_MAX
    }
}

impl Ledger {
    /// Whether a reader with snapshot `snap` might find a writer here it
    /// does not see (every recorded writer committed, so one below the
    /// snapshot's xmin is seen).
    pub fn concerns(&self, snap: &Snapshot) -> bool {
        self.highest.load(Ordering::Acquire) >= snap.xmin.0
    }

    /// Whether a record of `key` in `table` would be taken now (vacuum
    /// asks before it frees a large value's pages).
    pub fn has_room(&self, table: PageId, key: &[u8]) -> bool {
        self.state.lock().fits(table, key)
    }

    /// Records that each of `xids`, in order, wrote a version of `key` in
    /// `table` that is about to be removed. Returns how many were taken:
    /// the rest did not fit (keep their versions).
    pub fn record(&self, table: PageId, key: &[u8], xids: &[Xid]) -> usize {
        let mut guard = self.state.lock();
        let s = &mut *guard;
        for (taken, &xid) in xids.iter().enumerate() {
            assert!(xid != Xid::NONE);
            if !s.fits(table, key) {
                return taken;
            }
            let keys = s.writers.entry(table).or_default();
            let before = keys.get(key).map_or(0, Xids::cost);
            let list = match keys.get_mut(key) {
                Some(x) => x,
                None => {
                    s.bytes += key.len() + ENTRY_OVERHEAD;
                    keys.entry(key.to_vec()).or_default()
                }
            };
            list.push(xid);
            s.bytes = s.bytes + list.cost() - before;
            s.lowest = Some(s.lowest.map_or(xid, |l| l.min(xid)));
            self.highest.fetch_max(xid.0, Ordering::Release);
        }
        xids.len()
    }

    /// Appends the recorded writers of `key` in `table` to `out`.
    pub fn writers(&self, table: PageId, key: &[u8], out: &mut Vec<Xid>) {
        let s = self.state.lock();
        if let Some(xids) = s.writers.get(&table).and_then(|keys| keys.get(key)) {
            xids.each(|x| out.push(x));
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
            for xids in keys.range::<[u8], _>((lo, hi)).map(|(_, x)| x) {
                xids.each(|x| out.push(x));
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
        let (mut bytes, mut lowest, mut highest) = (0, None::<Xid>, 0);
        for keys in s.writers.values_mut() {
            keys.retain(|key, xids| {
                let mut kept = Xids::default();
                xids.each(|x| {
                    if x >= h {
                        kept.push(x);
                        lowest = Some(lowest.map_or(x, |l| l.min(x)));
                        highest = highest.max(x.0);
                    }
                });
                kept.bytes.shrink_to_fit();
                *xids = kept;
                let keep = !xids.bytes.is_empty();
                if keep {
                    bytes += key.len() + ENTRY_OVERHEAD + xids.cost();
                }
                keep
            });
        }
        s.writers.retain(|_, keys| !keys.is_empty());
        s.bytes = bytes;
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
        assert_eq!(l.record(T, b"b", &[Xid(5)]), 1);
        assert_eq!(l.record(T, b"b", &[Xid(9)]), 1);
        assert_eq!(l.record(T, b"b", &[Xid(9)]), 1, "a repeat costs nothing");
        assert_eq!(l.record(T, b"d", &[Xid(6)]), 1);
        assert_eq!(l.record(PageId(8), b"a", &[Xid(4)]), 1);
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
    fn xids_round_trip_in_any_order() {
        let mut x = Xids::default();
        let want = [
            Xid(1000),
            Xid(990),
            Xid(1 << 40),
            Xid(3),
            Xid(3),
            Xid(u64::MAX),
        ];
        for w in want {
            x.push(w);
        }
        let mut got = Vec::new();
        x.each(|w| got.push(w));
        assert_eq!(
            got,
            [Xid(1000), Xid(990), Xid(1 << 40), Xid(3), Xid(u64::MAX)]
        );
        assert!(x.bytes.len() < 8 * got.len());
    }

    #[test]
    fn a_full_ledger_refuses() {
        let l = Ledger::default();
        let key = vec![1u8; 2000];
        let mut n = 0u64;
        while l.record(T, &key[..(n % 2000) as usize], &[Xid(n + 1)]) == 1 {
            n += 1;
            assert!(n < 1 << 24, "never full");
        }
        assert!(l.bytes() <= LEDGER_BYTES_MAX);
        l.prune(Some(Xid(n / 2)));
        assert_eq!(l.record(T, b"x", &[Xid(n + 5)]), 1, "pruning makes room");
    }
}
