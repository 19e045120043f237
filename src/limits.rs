//! Every bound in strata, in one place, with the relations between them
//! checked at compile time.
//!
//! The constants here are those an application may need (sizes it must
//! stay within, the retry policy of `Db::transaction`); the engine's
//! internal tuning bounds live beside them, not exported.

pub(crate) use tuning::*;

/// Size of every page in the data file.
pub const PAGE_SIZE: usize = 8192;
/// Longest key, in bytes.
pub const KEY_MAX: usize = 2048;
/// Longest value, in bytes.
pub const VALUE_MAX: usize = 64 << 20;
/// Longest table name, in bytes.
pub const TABLE_NAME_MAX: usize = 255;
/// A WAL segment is closed once it grows past this many bytes.
pub const WAL_SEGMENT_SIZE: u64 = 16 << 20;
/// Smallest page cache, in pages: the deepest mini-transaction must fit
/// pinned. (Loom models run the buffer pool with two frames.)
pub const CACHE_PAGES_MIN: usize = if cfg!(loom) { 2 } else { 4 * MTR_PAGES_MAX };
/// Bytes of a two-phase-commit global transaction id (PostgreSQL's limit).
pub const GID_MAX: usize = 200;
/// Prepared transactions waiting for a decision at once (PostgreSQL's
/// `max_prepared_transactions`; each holds its row locks and xid).
pub const PREPARED_MAX: usize = 1024;
/// Participants of one two-phase-commit transaction.
pub const TWOPC_PARTICIPANTS_MAX: usize = 1024;
/// Attempts `Db::transaction` makes of a transaction that keeps failing
/// with retryable errors before it returns the last one. Under a hot key
/// the pauses, not the attempts, bound the time: a thread that lost
/// 10 times in a row to three others incrementing one key had paused only
/// 0.23 s; 30 attempts pause about 2.3 s.
pub const TRANSACTION_ATTEMPTS_MAX: u32 = 30;
/// Longest commit wait a commit may be asked for: a timestamp this far
/// above the clock's `earliest` (the clock stepped back behind timestamps
/// already assigned, or its uncertainty is this wide) fails the commit
/// with [`crate::Error::ClockUncertain`] instead of stalling it.
pub const COMMIT_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest pause between two attempts of `Db::transaction` (the pause
/// doubles from [`TRANSACTION_BACKOFF_MIN_MICROS`], with jitter).
pub const TRANSACTION_BACKOFF_MAX_MICROS: u64 = 100_000;
/// The first pause between attempts of `Db::transaction`.
pub const TRANSACTION_BACKOFF_MIN_MICROS: u64 = 500;

/// The engine's internal bounds and tuning constants.
pub(crate) mod tuning {
    use super::KEY_MAX;

    /// Largest B+tree cell: a maximal key plus header and a small value.
    pub const BTREE_CELL_MAX: usize = KEY_MAX + 64;
    /// A tuple larger than this moves its value to overflow pages.
    pub const TUPLE_INLINE_MAX: usize = 4000;
    /// Overflow pages written per WAL record when storing a large value.
    pub const OVERFLOW_PAGES_PER_RECORD: usize = 32;
    /// A checkpoint closes the current log segment when it holds at least
    /// this much, so the segment can be deleted once the checkpoint is
    /// durable (smaller ones wait: a file per checkpoint is not worth it).
    pub const WAL_ROLL_AT_CHECKPOINT: u64 = 1 << 20;
    /// The log file is zero-filled ahead of its end in extents of the bytes
    /// the segment already holds, between these bounds: an fdatasync of
    /// blocks a file already has skips the journal commit that one of a
    /// growing file waits for (as PostgreSQL zero-fills its segments), while a
    /// quiet database keeps little more log on disk than it wrote.
    pub const WAL_EXTENT_MIN: u64 = 64 << 10;
    /// See [`WAL_EXTENT_MIN`].
    pub const WAL_EXTENT_MAX: u64 = 1 << 20;
    /// Largest WAL record payload; anything longer on disk is damage.
    pub const WAL_RECORD_MAX: usize = 4 << 20;
    /// A Raft log segment (`replication`) is closed once it grows past
    /// this many bytes; an entry is at most `WAL_RECORD_MAX` encoded.
    #[cfg_attr(not(feature = "raft"), allow(dead_code))]
    pub const RAFT_SEGMENT_SIZE: u64 = 64 << 20;
    /// Pages a single mini-transaction may touch.
    pub const MTR_PAGES_MAX: usize = 96;
    /// Bytes of log buffered before the writer pushes them to the OS.
    pub const WAL_BUFFER_MAX: usize = 1 << 20;
    /// Longest a group commit's leader waits for the committers it expects
    /// before it fsyncs (`Wal::gather`); never longer than its last fsync took.
    pub const GROUP_COMMIT_WAIT_MAX: std::time::Duration = std::time::Duration::from_micros(200);
    /// Xids handed out per logged high-water mark.
    pub const XID_BATCH: u64 = 1024;
    /// Index entries vacuum examines while holding the write latch once.
    pub const VACUUM_BATCH: usize = 64;
    /// Bytes the ledger of removed writes may hold (`mvcc::ledger`); past
    /// it, vacuum keeps the versions it would have recorded.
    pub const LEDGER_BYTES_MAX: usize = 4 << 20;
    /// Index entries a scan fetches per latch acquisition.
    pub const SCAN_BATCH: usize = 128;
    /// Bytes of records one data frame of a snapshot stream carries
    /// (`snapshot::format`); a reader refuses a longer frame.
    pub const SNAPSHOT_CHUNK: usize = 1 << 20;
    /// Bytes of rows an import commits per transaction.
    pub const IMPORT_BATCH_BYTES: usize = 32 << 20;
    /// Rows an import commits per transaction.
    pub const IMPORT_BATCH_ROWS: usize = 50_000;
    /// Attempts an export makes to find a cut (no applied index in flight,
    /// no prepared transaction coming or going) before `LockTimeout`.
    pub const EXPORT_CUT_ATTEMPTS: u32 = 2_000;
    /// Entries of a scan's first batch (later batches double up to `SCAN_BATCH`).
    pub const SCAN_BATCH_FIRST: usize = 16;
    /// Key marks one serializable transaction keeps on one table before they
    /// are coarsened into range marks.
    pub const SIREAD_KEYS_PER_TABLE_MAX: usize = 4096;
    /// Range marks one coarsening turns a transaction's key marks into.
    pub const SIREAD_RANGES_PER_COARSENING: usize = 32;
    /// Range marks one serializable transaction keeps on one table from
    /// coarsening before they are coarsened into a mark on the whole table.
    pub const SIREAD_RANGES_PER_TABLE_MAX: usize = 128;
    /// Partitions of the key-mark table (a power of two): readers of keys in
    /// different partitions never share a lock.
    pub const SIREAD_PARTITIONS: usize = 64;
    /// Committed serializable transactions retained with their own entries;
    /// beyond this the oldest are folded into a summary.
    pub const SSI_COMMITTED_MAX: usize = 2048;
    /// Tables a prepared serializable transaction records as read; past this it
    /// records "every table" (its SIREAD marks after a restart).
    pub const PREPARED_TABLES_MAX: usize = 64;
    /// Length of a deadlock-detection walk along the wait-for graph.
    pub const WAIT_CHAIN_MAX: usize = 4096;
    /// Longest a row-lock waiter sleeps before reading the clock again
    /// (its timeout is measured on `Options::clock`, which a simulation
    /// may advance while it sleeps).
    pub const LOCK_WAIT_SLICE: std::time::Duration = std::time::Duration::from_millis(50);
    /// Bytes of a key an error message shows.
    pub const KEY_SHOWN_MAX: usize = 64;
    /// Commit timestamps reads as of a timestamp keep in memory, shared,
    /// once looked up (about 20 bytes each); when full, they start over.
    pub const STAMPS_CACHED_MAX: usize = 1 << 18;
    /// Default of `Options::change_retention_bytes`: the log one change
    /// reader may hold back from recycling.
    pub const CHANGE_RETENTION_DEFAULT: u64 = 1 << 30;
    /// Longest a waiting change reader sleeps before looking at the log
    /// again: its timeout is measured on `Options::clock`, and under
    /// `Durability::Eventual` the background flush makes commits durable
    /// with no commit to wake it.
    pub const CHANGE_WAIT_SLICE: std::time::Duration = std::time::Duration::from_millis(20);
    /// Transactions a change reader decodes ahead of the one it returns.
    pub const CHANGES_AHEAD_MAX: usize = 1024;
}
// A change reader may hold at least two segments.
const _: () = assert!(CHANGE_RETENTION_DEFAULT >= 2 * WAL_SEGMENT_SIZE);
// In-page offsets, including PAGE_SIZE itself, are u16.
const _: () = assert!(PAGE_SIZE <= u16::MAX as usize);
// A tuple whose value went to overflow must fit inline.
const _: () = assert!(KEY_MAX + 64 < TUPLE_INLINE_MAX);
// The ledger holds at least a few hundred writers of the longest keys.
const _: () = assert!(LEDGER_BYTES_MAX >= 256 * (KEY_MAX + 128));
const _: () = assert!(GID_MAX + 32 + 4 * PREPARED_TABLES_MAX <= BTREE_CELL_MAX);
const _: () = assert!(TUPLE_INLINE_MAX + 64 < PAGE_SIZE);
// A maximal mini-transaction, all full-page images, fits one record.
const _: () = assert!(MTR_PAGES_MAX * (PAGE_SIZE + 16) < WAL_RECORD_MAX);
const _: () = assert!(OVERFLOW_PAGES_PER_RECORD + 4 <= MTR_PAGES_MAX);
const _: () = assert!(VACUUM_BATCH * 3 / 2 <= MTR_PAGES_MAX);
const _: () = assert!(WAL_RECORD_MAX as u64 <= WAL_SEGMENT_SIZE);
const _: () = assert!(WAL_RECORD_MAX as u64 + 64 <= RAFT_SEGMENT_SIZE);
// A snapshot frame goes through the log's frame codec, within its limit.
const _: () = assert!(SNAPSHOT_CHUNK + 64 <= WAL_RECORD_MAX);
const _: () = assert!(WAL_ROLL_AT_CHECKPOINT < WAL_SEGMENT_SIZE);
const _: () = assert!(WAL_EXTENT_MIN <= WAL_EXTENT_MAX && WAL_EXTENT_MAX <= WAL_SEGMENT_SIZE);

const _: () = assert!(TRANSACTION_ATTEMPTS_MAX >= 2);
const _: () = assert!(TRANSACTION_BACKOFF_MIN_MICROS <= TRANSACTION_BACKOFF_MAX_MICROS);
