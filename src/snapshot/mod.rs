//! Snapshot export and import: a consistent online copy of a database —
//! or of a hash range of its keys, for a shard move — as one checksummed
//! stream, and a new database built from one.
//!
//! **Logical, not physical.** An export is a read-only snapshot
//! transaction walking every table ([`Db::export`]): rows, not pages. The
//! pages hold history, free space and dead versions a new replica does
//! not want, and their layout is the data file's (`FORMAT_VERSION`),
//! while a stream of rows outlives layout changes and filters by key
//! hash for free. Writers keep running throughout: the snapshot holds
//! back vacuum, nothing else.
//!
//! ```text
//!  header (applied index, newest ts, hash range)
//!  TABLE a | ROW k v | ROW k v | ... | TABLE b | ROW ...        one snapshot
//!  PREPARED gid ts n | PUT/DELETE * n | PREPARED ...             in doubt at it
//!  trailer (counts)
//! ```
//!
//! **The cut.** The applied index the header records must be exactly
//! what the rows hold: every entry up to it, none after. Reading it
//! before or after taking the snapshot is not enough — an entry is
//! recorded under the store latch, becomes visible after its flush and
//! commit wait, and is reported (`txn::applied::Published`) only after
//! that, possibly out of order with a neighbour. So the export brackets
//! its snapshot: it reads the applied index when no index is in flight,
//! with the count of indexes ever recorded, and the list of prepared
//! transactions; takes the snapshot; and reads both again. Equal answers
//! mean that every index recorded before the snapshot had landed
//! (visible to it) and none was recorded around it — and an entry is
//! recorded before it can be visible — so the snapshot holds exactly the
//! entries up to that index. Otherwise it tries again, a bounded number
//! of times (`EXPORT_CUT_ATTEMPTS`, then `LockTimeout`): appliers leave
//! gaps between entries, which is all it needs.
//!
//! **Prepared transactions** unchanged across the bracket were in doubt
//! at the snapshot (a decision takes the gid off the list before it
//! commits or rolls back, a prepare lists it before its index is
//! reported). Their writes are read from the heap (`txn::written`)
//! before any byte is written — held in memory until the rows are out,
//! which a prepared transaction's size bounds — and the list is checked a
//! third time: a decision before the writes were read would have let them
//! change, and the export starts over. Import re-prepares each under its gid with the
//! same writes, in doubt, for the coordinator to decide.
//!
//! **Import** ([`import`]) builds the database in a directory beside the
//! target (`.<name>.import/db`), loads the rows in large transactions
//! under `Durability::Eventual` (nothing is acknowledged to anyone until
//! the end), re-prepares the prepared transactions, records the applied
//! index and raises the commit-timestamp high water to the stream's
//! newest timestamp (so the new database never gives out a lower one),
//! checkpoints, closes, syncs its directories, renames it into place and
//! syncs the parent. A crash before the rename leaves the target absent
//! (or the empty directory it was) and the build directory, which is not
//! a database (it holds `db`) and makes the next import refuse to start
//! until it is removed; after the rename the database is complete.
//!
//! **Not carried**: history (reads as of a timestamp before the import
//! see nothing), commit timestamps of the rows (they are re-stamped,
//! below the restored high water only in the sense that later commits
//! are above it), prepare timestamps (a re-prepare takes a new one,
//! above the old: a coordinator committing at a chosen timestamp must
//! choose at least the new one, which `prepared_transactions` shows),
//! the SIREAD marks of prepared serializable transactions, and table
//! creations, drops or renames by a transaction in doubt.

mod export;
pub(crate) mod format;
mod import;

pub use import::{import, import_file, import_vfs};

use crate::clock::Timestamp;

/// The hash of a key that hash ranges are over: xxh3-64 of its bytes,
/// the same in every table (a shard owns a key's hash in all of them).
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// A range `[lo, hi)` of [`key_hash`] values; `hi: None` runs to the end
/// of the hash space (`u64::MAX` included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HashRange {
    /// The first hash in the range.
    pub lo: u64,
    /// The first hash past it (`None`: none).
    pub hi: Option<u64>,
}

impl HashRange {
    /// `[lo, hi)`.
    pub fn new(lo: u64, hi: Option<u64>) -> HashRange {
        HashRange { lo, hi }
    }

    /// Whether `hash` is in the range.
    pub fn contains(&self, hash: u64) -> bool {
        hash >= self.lo && self.hi.is_none_or(|hi| hash < hi)
    }

    /// Whether `key`'s hash is in the range.
    pub fn holds_key(&self, key: &[u8]) -> bool {
        self.contains(key_hash(key))
    }
}

/// What [`Db::export`](crate::Db::export) exports.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ExportOptions {
    /// Only keys whose hash is in this range (rows and prepared writes);
    /// `None`: every key.
    pub range: Option<HashRange>,
}

impl ExportOptions {
    /// Only the keys whose [`key_hash`] is in `range`.
    pub fn range(mut self, range: HashRange) -> Self {
        self.range = Some(range);
        self
    }
}

/// What an export wrote or an import loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotStats {
    /// The applied index the stream carries (`Db::applied_index` at the
    /// snapshot).
    pub applied_index: u64,
    /// The newest timestamp the exporting database had given out.
    pub newest_ts: Timestamp,
    /// The hash range exported, if not every key.
    pub range: Option<HashRange>,
    /// Tables (every one, though none of its keys be in the range).
    pub tables: u64,
    /// Rows.
    pub rows: u64,
    /// Prepared transactions, in doubt.
    pub prepared: u64,
    /// Their writes.
    pub writes: u64,
    /// Bytes of the stream.
    pub bytes: u64,
}
