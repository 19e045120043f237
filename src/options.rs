//! Options a database is opened with, and the isolation levels.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, FixedEpsilon};

/// When `commit` returns relative to the fsync of its log record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// The commit record is fsynced before `commit` returns (group commit
    /// shares one fsync among concurrent committers).
    #[default]
    Immediate,
    /// The commit record is written to the OS before `commit` returns and
    /// fsynced by a background flusher within [`Options::flush_interval`].
    /// A power loss may lose the last moments of commits, never corrupt.
    Eventual,
}

/// Transaction isolation level. What each level prevents, in the terms of
/// Adya's anomalies (as Hermitage tests PostgreSQL):
///
/// | anomaly | ReadCommitted | Snapshot | Serializable |
/// |---|---|---|---|
/// | G0 dirty write, G1a/b/c dirty and circular reads, OTV | prevented | prevented | prevented |
/// | PMP phantom in a repeated scan | possible | prevented | prevented |
/// | P4 lost update | possible | prevented | prevented |
/// | G-single read skew | possible | prevented | prevented |
/// | G2-item write skew | possible | possible | prevented |
/// | G2 write skew over a scanned range | possible | possible | prevented |
/// | read-only anomaly (Fekete et al.) | possible | possible | prevented |
///
/// Prevention may take the form of `Error::SerializationFailure` (or
/// `Deadlock`, `LockTimeout`): retry the transaction when
/// `err.is_retryable()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Every operation sees the data committed before it started.
    ReadCommitted,
    /// The whole transaction sees one snapshot taken at `begin`; concurrent
    /// updates of the same key fail with `Error::SerializationFailure`.
    Snapshot,
    /// Snapshot isolation plus serializable-snapshot-isolation checks
    /// (PostgreSQL's SSI): every committed history is equivalent to a
    /// serial one. The default of `Db::begin`.
    #[default]
    Serializable,
}

/// How a database is opened. Built with chained setters:
///
/// ```
/// # use std::time::Duration;
/// let opts = strata::Options::default()
///     .cache_size(16 << 20)
///     .durability(strata::Durability::Immediate)
///     .lock_timeout(Some(Duration::from_secs(1)));
/// # let _ = opts;
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    pub(crate) cache_size: usize,
    pub(crate) durability: Durability,
    pub(crate) lock_timeout: Option<Duration>,
    pub(crate) flush_interval: Duration,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) checkpoint_wal_bytes: u64,
    pub(crate) vacuum_threshold: u64,
    pub(crate) background: bool,
    pub(crate) wal_segment_size: u64,
    pub(crate) read_only: bool,
    pub(crate) create: bool,
    pub(crate) race_hook: Option<RaceHook>,
    pub(crate) clock: ClockHandle,
    pub(crate) commit_wait: bool,
    pub(crate) history_retention: Duration,
    pub(crate) change_retention_bytes: u64,
}

/// The clock behind `Options::clock`.
#[derive(Clone)]
pub(crate) struct ClockHandle(pub Arc<dyn Clock>);

impl std::fmt::Debug for ClockHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// A point on the begin and commit paths, or in vacuum, between two steps
/// whose order against other threads matters, where the hook set with
/// `Options::race_hook` (feature `fault-injection`) is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RacePoint {
    /// A serializable transaction is registered with SSI and about to take
    /// its MVCC snapshot.
    BeforeSnapshot,
    /// A serializable transaction has taken its MVCC snapshot.
    AfterSnapshot,
    /// A transaction's outcome is published to MVCC (a commit is visible
    /// to new snapshots) and not yet reported to SSI.
    Published,
    /// Compaction is about to visit a B+tree node, the store latch let go
    /// since its last visit.
    CompactionVisit,
    /// A checkpoint has set its redo point and is about to collect the
    /// dirty pages to flush: an eviction that takes a page's dirty bit
    /// now writes it beside the flush.
    CheckpointFlush,
    /// A change reader has checked that no checkpoint marked it lost
    /// (letting its hold on the history go) and is about to read a
    /// transaction's values; it checks again once it has read them.
    ChangeRead,
}

/// The hook behind `Options::race_hook`.
#[derive(Clone)]
pub(crate) struct RaceHook(Arc<dyn Fn(RacePoint) + Send + Sync>);

impl std::fmt::Debug for RaceHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RaceHook")
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cache_size: 64 << 20,
            durability: Durability::Immediate,
            lock_timeout: Some(Duration::from_secs(5)),
            flush_interval: Duration::from_millis(10),
            checkpoint_interval: Duration::from_secs(30),
            checkpoint_wal_bytes: 256 << 20,
            vacuum_threshold: 10_000,
            background: true,
            wal_segment_size: crate::limits::WAL_SEGMENT_SIZE,
            read_only: false,
            create: true,
            race_hook: None,
            clock: ClockHandle(Arc::new(FixedEpsilon::default())),
            commit_wait: true,
            history_retention: Duration::ZERO,
            change_retention_bytes: crate::limits::CHANGE_RETENTION_DEFAULT,
        }
    }
}

impl Options {
    /// Bytes of page cache (default 64 MiB; at least
    /// [`crate::limits::CACHE_PAGES_MIN`] pages are always kept).
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.cache_size = bytes;
        self
    }

    /// Commit durability (default [`Durability::Immediate`]).
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Longest wait for a row lock; `None` waits forever (deadlocks are
    /// still detected). Default 5 s.
    pub fn lock_timeout(mut self, t: Option<Duration>) -> Self {
        self.lock_timeout = t;
        self
    }

    /// Longest time a commit under [`Durability::Eventual`] stays unsynced
    /// (default 10 ms).
    pub fn flush_interval(mut self, t: Duration) -> Self {
        self.flush_interval = t.max(Duration::from_millis(1));
        self
    }

    /// Time between background checkpoints (default 30 s).
    pub fn checkpoint_interval(mut self, t: Duration) -> Self {
        self.checkpoint_interval = t;
        self
    }

    /// Log bytes after which a background checkpoint runs early (default 256 MiB).
    pub fn checkpoint_wal_bytes(mut self, bytes: u64) -> Self {
        self.checkpoint_wal_bytes = bytes.max(1 << 20);
        self
    }

    /// Whether a background thread flushes `Eventual` commits, checkpoints
    /// and vacuums (default true). Without it the application calls
    /// [`crate::Db::checkpoint`] and [`crate::Db::vacuum`] itself, `Eventual`
    /// commits are synced only by later `Immediate` work or a checkpoint,
    /// and every I/O happens on the caller's thread, in a repeatable order
    /// (which is what crash-point tests need).
    pub fn background(mut self, on: bool) -> Self {
        self.background = on;
        self
    }

    /// Size at which a log segment is closed and the next begins (default
    /// 16 MiB, at least 64 KiB). Checkpoints delete whole segments, so
    /// smaller segments return log space sooner at the cost of more files.
    pub fn wal_segment_size(mut self, bytes: u64) -> Self {
        self.wal_segment_size = bytes.clamp(64 << 10, 1 << 30);
        self
    }

    /// Updates, deletes and aborts after which background vacuum runs
    /// (default 10 000; 0 disables background vacuum).
    pub fn vacuum_threshold(mut self, n: u64) -> Self {
        self.vacuum_threshold = n;
        self
    }

    /// Whether opening may create a database (default true), as
    /// rusqlite's `Connection::open` and redb's `Database::create` do. A
    /// database is created only in a new or empty directory: a directory
    /// holding other files gives [`crate::Error::NotEmpty`]. With `false`
    /// the directory must hold a database already, or the open fails with
    /// [`crate::Error::NotADatabase`] and changes nothing — for tools and
    /// applications that take a path from a user, where a typo must not
    /// make a new, empty database. (A read-only open never creates.)
    pub fn create(mut self, on: bool) -> Self {
        self.create = on;
        self
    }

    /// Opens an existing database without changing a byte of its files
    /// (default false): for inspection tools and for copies on read-only
    /// media. The log since the last checkpoint is replayed into memory
    /// only (pages it changes stay in memory, beyond the cache size, until
    /// the database is closed); no torn tail is cut, nothing is
    /// checkpointed or vacuumed, no background thread runs. Writes,
    /// `checkpoint`, `vacuum`, decisions on prepared transactions and new
    /// tables fail with [`crate::Error::ReadOnly`]; read transactions work
    /// as usual. The directory lock is still taken, so a database open
    /// elsewhere gives [`crate::Error::Locked`].
    pub fn read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }

    /// The clock commit timestamps come from (default
    /// [`FixedEpsilon`]`(0)`: the system clock, trusted exactly — right
    /// among databases on one machine; across machines give the error
    /// their clocks keep, or `TrueTime`; see [`crate::clock`]). Every read-write commit takes a timestamp
    /// `≥ now().latest` and waits, before it becomes visible and returns,
    /// until `now().earliest` has passed it.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = ClockHandle(clock);
        self
    }

    /// How far behind the clock reads as of a timestamp
    /// ([`Db::begin_at`](crate::Db::begin_at)) are served (default zero).
    /// Vacuum keeps every version such a read may see: a version deleted
    /// or replaced by a commit stamped less than `retention` before the
    /// clock's `earliest` (read as vacuum goes) stays, as does anything
    /// a live read as of a timestamp sees. A read further back fails with
    /// `Error::SnapshotTooOld`. With zero, a read may go back to the
    /// clock's time when vacuum last ran; history costs space only while
    /// such reads run. The horizon this sets is in
    /// `Stats::history_horizon`.
    pub fn history_retention(mut self, retention: Duration) -> Self {
        self.history_retention = retention;
        self
    }

    /// The most log one change reader ([`Db::change_reader`](crate::Db::change_reader))
    /// may hold back from recycling, in bytes behind the log's end (default
    /// 1 GiB). A checkpoint recycles past a reader further behind, and that
    /// reader's next read fails with `Error::ChangesLost`: a reader that
    /// stopped reading costs bounded disk, and never misses a change
    /// unnoticed.
    pub fn change_retention_bytes(mut self, bytes: u64) -> Self {
        self.change_retention_bytes = bytes;
        self
    }

    /// For tests only: `false` skips the commit wait, which breaks
    /// external consistency (tests show that it does).
    #[doc(hidden)]
    pub fn commit_wait(mut self, on: bool) -> Self {
        self.commit_wait = on;
        self
    }

    /// For tests under real concurrency: `hook` is called at each
    /// `RacePoint` and may pause the calling thread there. Races between
    /// those steps and other threads last a few instructions, too short
    /// for a test to hit often by chance; a pause makes them wide, so a
    /// test fails within seconds if the order between the steps is not
    /// sound. Not for production use; only with the `fault-injection`
    /// feature.
    #[doc(hidden)]
    #[cfg(feature = "fault-injection")]
    pub fn race_hook(mut self, hook: impl Fn(RacePoint) + Send + Sync + 'static) -> Self {
        self.race_hook = Some(RaceHook(Arc::new(hook)));
        self
    }

    /// Calls the race hook, if any, at `point`.
    pub(crate) fn race(&self, point: RacePoint) {
        if let Some(h) = &self.race_hook {
            (h.0)(point);
        }
    }
}
