//! # strata
//!
//! An embeddable transactional storage engine: a database in a directory,
//! with real multi-version transactions, that survives `kill -9` and power
//! loss.
//!
//! ```
//! # fn main() -> strata::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let db = strata::Db::open(dir.path())?;
//! let users = db.table("users")?;
//!
//! let mut tx = db.begin()?;
//! tx.put(&users, b"alice", b"42")?;
//! tx.put(&users, b"bob", b"7")?;
//! tx.commit()?; // durable (fsynced) when it returns
//!
//! let tx = db.begin()?;
//! assert_eq!(tx.get(&users, b"alice")?.as_deref(), Some(&b"42"[..]));
//! let names: Vec<Vec<u8>> = tx.scan(&users, ..)?.map(|r| r.map(|(k, _)| k)).collect::<Result<_, _>>()?;
//! assert_eq!(names, vec![b"alice".to_vec(), b"bob".to_vec()]);
//! # Ok(()) }
//! ```
//!
//! ## Retrying conflicts
//!
//! [`Db::transaction`] begins a serializable transaction, runs the
//! closure, commits, and starts over (a bounded number of times, with a
//! jittered pause) when the attempt fails with an error
//! [`Error::is_retryable`] names:
//!
//! ```
//! fn increment(db: &strata::Db, t: &strata::Table) -> strata::Result<u64> {
//!     db.transaction(|tx| {
//!         let n = tx.get(t, b"counter")?.map_or(0, |v| u64::from_le_bytes(v[..8].try_into().unwrap()));
//!         tx.put(t, b"counter", (n + 1).to_le_bytes())?;
//!         Ok(n + 1)
//!     })
//! }
//! # fn main() -> strata::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! # let db = strata::Db::open(dir.path())?;
//! # let t = db.table("t")?;
//! let threads: Vec<_> = (0..4).map(|_| {
//!     let (db, t) = (db.clone(), t.clone());
//!     std::thread::spawn(move || (0..25).try_for_each(|_| increment(&db, &t).map(drop)))
//! }).collect();
//! for th in threads { th.join().unwrap()?; }
//! assert_eq!(increment(&db, &t)?, 101);
//! # Ok(()) }
//! ```
//!
//! ## Time
//!
//! Every read-write commit carries a timestamp ([`CommitInfo::ts`]) from
//! the database's [`clock::Clock`] ([`Options::clock`]): at least the
//! clock's `latest` reading, above every timestamp the database assigned
//! before (across clock steps and restarts), and in the past by the
//! clock's `earliest` reading before the commit becomes visible and
//! `commit` returns (commit wait). So commits that follow one another in
//! real time, on any databases whose clocks keep their stated error, get
//! rising timestamps (external consistency). The default clock is the
//! system clock with no error ([`clock::FixedEpsilon`]`(0)`: right for
//! databases sharing one machine); a clock that cannot bound its error
//! fails commits with [`Error::ClockUncertain`].
//!
//! ```
//! # fn main() -> strata::Result<()> {
//! use std::{sync::Arc, time::Duration};
//! use strata::clock::{Clock, SimClock, Timestamp};
//! let dir = tempfile::tempdir()?;
//! let clock = SimClock::new(Timestamp::from_nanos(1_000_000_000));
//! clock.set_epsilon(Duration::from_millis(2));
//! let db = strata::Db::open_with(dir.path(), strata::Options::default().clock(Arc::new(clock.clone())))?;
//! let t = db.table("t")?;
//! let mut tx = db.begin()?;
//! tx.put(&t, b"k", b"v")?;
//! let info = tx.commit()?;
//! assert!(clock.now()?.earliest > info.ts, "commit waited out the uncertainty");
//! # Ok(()) }
//! ```
//!
//! ## Observability
//!
//! The engine reports through the [`tracing`] facade, and is silent until
//! the application installs a subscriber: spans `open` and `recovery`
//! (records and bytes replayed, `replay_us`), `commit` (DEBUG: `xid`,
//! `lsn`, `fsync_wait_us`), `checkpoint` (`redo`, `pages_flushed`) and
//! `vacuum` (its [`VacuumStats`]), and an event for each failure of the
//! background worker, which reports to the subscriber in force where the
//! database was opened. With no subscriber a span costs a check of one
//! atomic.
//!
//! The worker's failures do not go unheard: damage it cannot work past
//! (a [`Error::Corruption`] a background vacuum or checkpoint read)
//! poisons the database, so the next transaction, write or checkpoint
//! returns [`Error::Poisoned`] naming it ([`Db::poison_cause`]); an I/O
//! error reading a page, which changed nothing and may pass, is kept for
//! [`Db::background_error`] and the work is tried again.
//!
//! ## The tour
//! - [`Db`] opens a directory, hands out [`Table`]s and [`Transaction`]s,
//!   and runs checkpoints and vacuum (in the background and on demand).
//!   [`Db::open`] creates a database in a missing or empty directory and
//!   refuses one holding other files ([`Error::NotEmpty`]); a failed open
//!   leaves no file behind. [`Options`] set the cache size, durability,
//!   lock timeout, background work, [`Options::create`] (`false`: open
//!   only an existing database) and [`Options::read_only`].
//!   [`Db::close`] reports the final checkpoint's failure, which dropping
//!   the last handle cannot.
//! - Tables come into being in write transactions: [`Db::table`] is a
//!   handle that creates nothing, the first committed write creates the
//!   table with that transaction's data, and a read-only transaction
//!   reading a table no one created gets [`Error::NoSuchTable`].
//!   [`Transaction::create_table`], [`Transaction::drop_table`] and
//!   [`Transaction::rename_table`] are seen at commit, never by older
//!   snapshots; concurrent changes of one table meet as writers of one
//!   row do. [`Db::table_names`] lists the tables that exist.
//! - A [`Transaction`] is serializable by default
//!   ([`Isolation::Serializable`]: a snapshot plus PostgreSQL's
//!   serializable snapshot isolation); [`Isolation::Snapshot`] and
//!   [`Isolation::ReadCommitted`] trade anomalies for fewer aborts (the
//!   table on [`Isolation`]). Writers of the same key wait for each other
//!   (bounded by `Options::lock_timeout`); deadlocks are detected; a
//!   transaction that would break its level's guarantee fails with
//!   [`Error::SerializationFailure`], whose [`Conflict`] says why (a
//!   concurrent update, or read/write dependencies) and which names the
//!   row where known. Retry when [`Error::is_retryable`] says so, or let
//!   [`Db::transaction`] do it.
//! - Reads: [`Transaction::get`], [`Transaction::scan`] over any
//!   [`KeyRange`] — std ranges, `(Bound, Bound)` pairs, a [`Prefix`] —
//!   forwards or, with `.rev()`, backwards; [`Transaction::first`] and
//!   [`Transaction::last`]; [`Transaction::count`] and
//!   [`Transaction::len`], which count from version headers (no row
//!   count is maintained: each snapshot sees its own); and
//!   [`Transaction::delete_range`]. Under Serializable each depends on
//!   the keys it read, so a concurrent insert that changes its answer is
//!   a conflict.
//! - Time: every read-write commit's [`CommitInfo::ts`] orders it as
//!   real time does, across databases too (commit wait, [`clock`]);
//!   [`Db::begin_at`] reads exactly the commits at or before a timestamp,
//!   the same answer every time, waiting until no commit can still land
//!   there; [`Options::history_retention`] keeps history for such reads,
//!   and a read below it is [`Error::SnapshotTooOld`].
//! - Two-phase commit: [`Transaction::prepare`] makes a transaction
//!   durable and in doubt and returns its prepare timestamp;
//!   [`Db::commit_prepared`] (or [`Db::commit_prepared_at`] a chosen
//!   timestamp) or [`Db::rollback_prepared`] decides it, across restarts
//!   ([`Db::prepared_transactions`] lists the undecided), and the `twopc`
//!   feature adds a coordinator that commits every participant at one
//!   timestamp. [`Transaction::commit_at`] commits at a chosen timestamp
//!   above every one the database assigned.
//! - Every I/O failure is an [`Error::Io`] naming the operation and path,
//!   with the operating system's error as its source. `Error` is `Clone`
//!   and `PartialEq`.
//! - The engine reaches files only through [`Vfs`] ([`RealFs`] by
//!   default; [`Db::open_vfs`] takes another). With the `fault-injection`
//!   feature, `strata::fault::FaultFs` is one that fails operations and
//!   loses power on command, for testing an application's handling of
//!   I/O errors and crashes.
//! - Underneath: a write-ahead log with group commit, a bounded page
//!   cache, a heap of versioned tuples, a B+tree per table, and the
//!   visibility rules of multi-version concurrency control; none of them
//!   is public API. `FORMAT.md` describes every byte on disk.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub(crate) mod btree;
pub(crate) mod buffer;
mod catalog;
mod changes;
pub mod clock;
mod codec;
mod control;
mod db;
mod dir;
mod engine;
mod error;
mod hash;
pub(crate) mod heap;
pub(crate) mod ids;
mod integrity;
pub(crate) mod io;
pub mod limits;
mod maintenance;
pub(crate) mod mvcc;
mod options;
pub(crate) mod page;
mod recovery;
pub(crate) mod redo;
#[cfg(feature = "raft")]
pub mod replication;
mod retry;
mod salvage;
mod snapshot;
mod stat;
pub(crate) mod store;
mod sync;
#[cfg(feature = "twopc")]
pub mod twopc;
pub(crate) mod txn;
pub(crate) mod wal;

pub use catalog::Table;
pub use changes::{Change, ChangeKind, ChangePos, ChangeReader, ChangeSet};
pub use db::Db;
pub use dir::{DATA_FILE, WAL_DIR};
pub use error::{Conflict, Error, IoSource, Result};
pub use ids::{Lsn, Xid};
pub use integrity::IntegrityReport;
pub use io::{RealFs, Vfs, VfsFile, VfsLock};
pub use maintenance::vacuum::VacuumStats;
pub use options::{Durability, Isolation, Options};
pub use snapshot::{import, import_file, key_hash, ExportOptions, HashRange, SnapshotStats};
pub use stat::{Stats, TableStats};
pub use txn::prepare::PreparedTransaction;
pub use txn::CommitInfo;
pub use txn::{KeyRange, Prefix, Scan, Transaction};

/// A file system that fails on command, for testing how an application
/// (and strata) behaves when writes, syncs or renames fail, or when the
/// machine loses power: [`FaultFs`](fault::FaultFs) wraps the real file
/// system, counts operations, fails the ones a rule matches and can
/// "crash", dropping every write not yet synced. Pass it to
/// [`Db::open_vfs`]. Only with the `fault-injection` feature.
#[cfg(feature = "fault-injection")]
pub mod fault {
    pub use crate::io::{FaultFs, FaultKind, Hold, OpKind, OpMatch};
}

/// The engine's internal modules, for strata's own tests, fuzz targets,
/// model checks and command-line tool. Not part of the public API: any
/// release may change anything here.
#[doc(hidden)]
pub mod internals;
