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
//! **Prepared transactions** are bracketed the same way. A decision
//! takes its gid off the list (`Db::prepared_transactions`) before it
//! commits or rolls back — under the store latch, then flushed, then
//! visible — so a snapshot taken in that window would see the
//! transaction neither in doubt nor decided, and an export whose cut fell
//! there would lose it (with `commit_prepared_applying`, its index is not
//! yet in flight there either). So the bracket reads the list only when
//! no decision is under way (`Prepared::settled`: a gid being decided is
//! in flight, as an index is), before and after the snapshot. Equal
//! answers mean no decision began before the first reading and was
//! unfinished at it, and none finished between the two (a finished one
//! changes the list); a decision that began after the first reading and
//! is still under way at the second makes the second `None`. So a
//! transaction listed at both was in doubt at the snapshot — a decision
//! becomes visible only after it leaves the list — and one listed at
//! neither was decided and visible before it, or prepared after it (a
//! prepare lists it before its index is reported). Their writes are read
//! from the heap (`txn::written`) before any byte is written — held in
//! memory until the rows are out, which a prepared transaction's size
//! bounds — and the list is read a third time, settled and unchanged: a
//! decision before the writes were read would have let them change, and
//! the export starts over. Import re-prepares each under its gid with the
//! same writes at its carried prepare timestamp
//! (`Transaction::prepare_applying`), in doubt, for the coordinator to
//! decide.
//!
//! A transaction in doubt that created, dropped or renamed a table cannot
//! be carried: its writes to a table it created are in a table the
//! snapshot does not see, and the stream has no record for a table
//! change. The export finds it (a catalog row whose newest version names
//! the transaction) and refuses with `Error::InDoubtTableChange` naming
//! the gid and the table — never a partial write set. In a range export,
//! a transaction with no writes at all belongs to no key: the range
//! holding hash 0 carries it, so ranges that partition the hash space
//! carry it once.
//!
//! **Import** ([`import`]) takes a missing or empty directory (not a
//! symbolic link: the rename would replace the link), creates the
//! directory beside it (`.<name>.import`) exclusively — a second import
//! into the same target fails there rather than share it — and builds
//! the database in it (`db`): raises the commit-timestamp high water to
//! the stream's newest timestamp first, so that every commit of the
//! build is stamped above it whatever the importing machine's clock says
//! (a re-prepare takes its carried timestamp, at or below it); loads the rows in large transactions under
//! `Durability::Eventual` (nothing is acknowledged to anyone until the
//! end); re-prepares the prepared transactions; records the applied
//! index; checkpoints, closes, syncs its directories, renames it into
//! place and syncs the parent (if that sync fails, the database is
//! renamed back). Any error after the build directory was created removes
//! it (best effort) and names its operation and path; a crash before the
//! rename leaves the target absent (or the empty directory it was) and
//! the build directory, which is not a database (it holds `db`) and makes
//! the next import refuse to start until it is removed; after the rename
//! the database is complete.
//!
//! The reader holds a stream to the order the export writes: tables in
//! ascending name order, each once; a table's rows in ascending key
//! order, each once; gids ascending; a transaction's writes ascending by
//! table and key, each key once; in a range stream, every key's hash in
//! the range. A record edited in place or repeated with checksums and
//! counts made to agree is `Corruption` at its offset, not an overwrite
//! leaving fewer rows than the stream claims.
//!
//! Prepare timestamps are carried: a re-prepare takes the one the stream
//! gives (a stream giving `ZERO` gets one from the clock), so a
//! coordinator's decision at a timestamp chosen against it holds on the
//! imported database as on the exported one.
//!
//! **Not carried**: history (reads as of a timestamp before the import
//! see nothing), commit timestamps of the rows (they are re-stamped above
//! the carried newest timestamp), and the SIREAD marks of
//! prepared serializable transactions. Table creations, drops or renames
//! by a transaction in doubt are refused at export (above).

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
