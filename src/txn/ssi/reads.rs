//! One serializable transaction's own record of what it marked.
//!
//! The transaction keeps it, not the SSI graph, so a read touches only its
//! key's partition of the mark table. When the transaction ends it hands
//! the list of its key marks to the graph, which keeps them while
//! concurrent transactions run and removes them after.
//!
//! Coarsening, key → range → table: past `SIREAD_KEYS_PER_TABLE_MAX` keys
//! on one table, the keys are sorted and cut into
//! `SIREAD_RANGES_PER_COARSENING` runs, each replaced by the key range from
//! its first to its last key (covering the gaps between the keys read, as
//! a page lock covers a page's other rows); past
//! `SIREAD_RANGES_PER_TABLE_MAX` such ranges, one mark on the whole table.

use std::ops::Bound;
use std::sync::Arc;

use super::marks::{key_hash, KeyMarks};
use super::{covers, Range};
use crate::hash::IntMap;
use crate::ids::PageId;
use crate::limits::{
    SIREAD_KEYS_PER_TABLE_MAX, SIREAD_RANGES_PER_COARSENING, SIREAD_RANGES_PER_TABLE_MAX,
};
use crate::sync::{AtomicBool, Ordering};

/// A read of `key` under SSI: marks it in `reads` (if the transaction
/// keeps marks), then runs `read`. This order is what keeps the edge
/// between a read and a concurrent write of the key: a writer writes
/// before it looks for marks, so whichever of the two comes second sees
/// the other, as a mark or as a version the read must skip. Reading first
/// loses the edge in some interleaving (`tests/loom.rs` explores this very
/// function). Returns the coarsening the mark asks for, and what `read`
/// returned.
pub fn mark_then_read<R>(
    reads: Option<&mut ReadSet>,
    marks: &KeyMarks,
    table: PageId,
    key: &[u8],
    read: impl FnOnce() -> R,
) -> (Option<Coarsening>, R) {
    let coarsening = reads.and_then(|r| r.mark(marks, table, key));
    (coarsening, read())
}

/// One attempt of a write, in the order that keeps a delete's read of an
/// absent key from losing its rw-antidependency: under the store's
/// exclusive latch (`latch`), `apply` finds the key's row and writes (or
/// finds the row held); `mark` takes the SIREAD mark of an absence it
/// found; only then does `commit` log the mini-transaction and let the
/// latch go. Every writer inserts under that latch and looks for marks
/// after letting it go, so whichever of the two comes second sees the
/// other: the delete meets the new row, or the writer the mark. Marking
/// after `commit` loses the edge in some interleaving (`tests/loom.rs`
/// explores this very function). Returns the coarsening the mark asks for
/// (even if `commit` fails, so the graph still learns of it), and what
/// `apply` returned, or the error of `apply` or `commit`.
pub fn mark_absence_under_latch<L, S, E>(
    mut latch: L,
    apply: impl FnOnce(&mut L) -> Result<S, E>,
    mark: impl FnOnce(&S) -> Option<Coarsening>,
    commit: impl FnOnce(L) -> Result<(), E>,
) -> (Option<Coarsening>, Result<S, E>) {
    let step = match apply(&mut latch) {
        Ok(step) => step,
        Err(e) => return (None, Err(e)),
    };
    let coarsening = mark(&step);
    match commit(latch) {
        Ok(()) => (coarsening, Ok(step)),
        Err(e) => (coarsening, Err(e)),
    }
}

#[derive(Default)]
struct TableReads {
    /// Marked key hashes → where their keys lie in `bytes` (kept to cut
    /// ranges; one buffer rather than an allocation per key).
    keys: IntMap<u64, (u32, u32)>,
    bytes: Vec<u8>,
    /// Ranges coarsened from keys (scans' ranges go straight to the graph).
    ranges: Vec<Range>,
    whole: bool,
}

/// A coarsened range's first key (they are all `Included`).
fn lower(r: &Range) -> &[u8] {
    match &r.0 {
        Bound::Included(k) | Bound::Excluded(k) => k,
        Bound::Unbounded => &[],
    }
}

impl TableReads {
    /// Whether a coarsened range covers `key`. Ranges are sorted by their
    /// first key and only the last one starting at or below `key` is
    /// asked: with overlapping ranges an earlier one might cover it too,
    /// and then the key gets a mark of its own — redundant, never missing.
    fn covered(&self, key: &[u8]) -> bool {
        let i = self.ranges.partition_point(|r| lower(r) <= key);
        i > 0 && covers(&self.ranges[i - 1], key)
    }
}

/// The key marks of one serializable transaction.
pub struct ReadSet {
    id: u64,
    /// For a read-only transaction: set by the graph once its snapshot is
    /// safe (only read-only transactions pay for the allocation).
    safe: Option<Arc<AtomicBool>>,
    tables: IntMap<PageId, TableReads>,
}

/// Key marks to replace by range marks (see [`ReadSet::mark`]).
pub struct Coarsening {
    /// The table.
    pub table: PageId,
    /// The new range marks.
    pub ranges: Vec<Range>,
    /// The key marks they replace.
    pub hashes: Vec<u64>,
}

impl ReadSet {
    pub(super) fn new(id: u64) -> ReadSet {
        ReadSet {
            id,
            safe: None,
            tables: IntMap::default(),
        }
    }

    /// The transaction's SSI id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the transaction runs on a snapshot known to be safe: it
    /// takes no marks and SSI never aborts it.
    pub fn is_safe(&self) -> bool {
        self.safe
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Acquire))
    }

    /// The flag the graph sets when this read-only transaction's snapshot
    /// turns out safe.
    pub(super) fn watch_safety(&mut self) -> Arc<AtomicBool> {
        self.safe
            .get_or_insert_with(|| Arc::new(AtomicBool::new(false)))
            .clone()
    }

    /// Marks a read of `key` (found or absent) before the read happens.
    /// Returns a coarsening for the graph once the table holds too many
    /// key marks.
    pub fn mark(&mut self, marks: &KeyMarks, table: PageId, key: &[u8]) -> Option<Coarsening> {
        if self.is_safe() {
            return None;
        }
        // Sized for a typical short transaction, so its first reads do not
        // each grow the map.
        let t = self.tables.entry(table).or_insert_with(|| TableReads {
            keys: IntMap::with_capacity_and_hasher(16, Default::default()),
            bytes: Vec::with_capacity(16 * 32),
            ..Default::default()
        });
        if t.whole || t.covered(key) {
            return None;
        }
        let h = key_hash(table, key);
        if t.keys.contains_key(&h) {
            return None;
        }
        marks.add(h, self.id);
        // Keys are at most KEY_MAX bytes and a table's buffer is emptied
        // after SIREAD_KEYS_PER_TABLE_MAX keys, so offsets fit in u32.
        t.keys.insert(h, (t.bytes.len() as u32, key.len() as u32));
        t.bytes.extend_from_slice(key);
        if t.keys.len() <= SIREAD_KEYS_PER_TABLE_MAX {
            return None;
        }
        let bytes = std::mem::take(&mut t.bytes);
        let mut keys: Vec<(u64, &[u8])> = t
            .keys
            .drain()
            .map(|(h, (at, len))| (h, &bytes[at as usize..(at + len) as usize]))
            .collect();
        keys.sort_unstable_by(|a, b| a.1.cmp(b.1));
        let run = keys.len().div_ceil(SIREAD_RANGES_PER_COARSENING);
        let mut ranges: Vec<Range> = keys
            .chunks(run)
            .filter_map(|c| Some((c.first()?.1.to_vec(), c.last()?.1.to_vec())))
            .map(|(lo, hi)| (Bound::Included(lo), Bound::Included(hi)))
            .collect();
        if t.ranges.len() + ranges.len() > SIREAD_RANGES_PER_TABLE_MAX {
            t.whole = true;
            t.ranges.clear();
            ranges = vec![(Bound::Unbounded, Bound::Unbounded)];
        } else {
            t.ranges.extend(ranges.iter().cloned());
            t.ranges.sort_by(|a, b| lower(a).cmp(lower(b)));
        }
        Some(Coarsening {
            table,
            ranges,
            hashes: keys.into_iter().map(|(h, _)| h).collect(),
        })
    }

    /// Tables with key marks (or marks coarsened from them).
    pub fn tables(&self) -> impl Iterator<Item = PageId> + '_ {
        self.tables.keys().copied()
    }

    /// The key marks still held, with their tables, for the graph to keep
    /// or remove when the transaction ends.
    pub fn into_marks(self) -> Vec<(PageId, u64)> {
        self.tables
            .into_iter()
            .flat_map(|(table, t)| t.keys.into_keys().map(move |h| (table, h)))
            .collect()
    }
}
