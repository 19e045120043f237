//! The replicated mode's storage, over openraft (feature `raft`): a Raft
//! log store and a state machine that is a [`Db`](crate::Db). No network
//! and no replicated handle yet: these are the two halves openraft's
//! `Raft::new` takes, tested against openraft's own storage suite.
//!
//! ```text
//!  <node>/raft/meta, <node>/raft/<index>.log   LogStore   (log.rs, log_store.rs)
//!  <node>/sm/CURRENT, <node>/sm/db.<n>/        StateMachine (state_machine.rs)
//!
//!  openraft ──append(entries, LogFlushed)──▶ LogStore ──frames──▶ segment files
//!           ◀──────── callback after fsync (flusher thread) ────┘
//!  openraft ──apply(committed entries)─────▶ StateMachine ──▶ Db (Eventual)
//!                                             └─ PurgeBound = Db::durable_applied_index
//!  LogStore::purge(id) deletes bytes only up to the PurgeBound
//! ```
//!
//! **One durable write per replicated commit.** The Raft log is the
//! durable record: an append is acknowledged only once synced. The state
//! machine's database runs under `Durability::Eventual`: applying an entry
//! writes its log record without waiting for a sync. After a power loss
//! the database comes back at its durable applied index, and the log still
//! holds every entry after it, because the log deletes bytes only up to
//! that index ([`PurgeBound`], raised by the state machine from
//! `Db::durable_applied_index()`). openraft's purge is logical at once
//! (those entries are no longer read) and physical as far as the bound
//! allows; on reopening the log reports the physical purge point, which is
//! never past what the database holds, and openraft replays the rest.
//!
//! **The log** (log.rs) is segment files of the WAL's CRC frames
//! (`wal::frame`) holding entries in this module's own encoding
//! (encode.rs; FORMAT.md, "The Raft log"), and a meta file with the vote
//! and the purge point, replaced whole (written, synced, renamed, the
//! directory synced). Appends share fsyncs: a flusher thread syncs the
//! files a batch of appends wrote, then calls their `LogFlushed`
//! callbacks. Truncation and vote are synced before they return. A torn
//! last frame is cut on opening; a bad frame followed by a whole one, or
//! in any segment but the last, is `Error::Corruption` with file and
//! offset (openraft sees it as a storage error). So is a segment header
//! that is neither this segment's nor torn (cut short or zeros: a creation
//! cut short, since the header is synced before any frame), and a gap in
//! the indexes the purge point does not explain: recovery never drops
//! entries to make the log whole. Truncation deletes the later segments
//! from the last back, syncing the directory after each, before cutting
//! the segment holding the first entry removed, so at every step the disk
//! holds a prefix of the log (recording the cut in the meta file first
//! would do too, at the price of a meta write per truncation and a format
//! change; the order alone costs a directory sync per segment deleted,
//! and truncations are rare). Any failure on the write path — a write,
//! an fsync (the flusher's or the log's own), a truncation, a purge, a
//! vote — poisons the log: every later append, truncation, purge and vote
//! fails, and callbacks waiting fail, as the engine's WAL does after a
//! failed fsync (a retried fsync may report success for pages the failed
//! one lost). All fsyncs of segments go through one lock that keeps the
//! first failure, so none succeeds after one has failed.
//!
//! **Apply** (state_machine.rs). Raft index `i` is the database's applied
//! index `i + 1` (the database's 0 means "none"; openraft's first index is
//! 0). Each command is decided by the entry and the database alone:
//!
//! - a transaction (snapshot timestamp, read ranges, write set, commit
//!   timestamp) runs in a nowait transaction: every read range and written
//!   key is checked with `changed_since(snapshot)`; a change is
//!   `SerializationFailure`, a held row `LockNotAvailable`, a commit
//!   timestamp not above the newest the log gave before
//!   `TimestampRefused`; otherwise it writes, records the index
//!   (`set_applied_index`) and commits at the entry's timestamp
//!   (`Transaction::commit_applying`), under `Eventual`;
//! - prepare (gid + the same) validates and writes the same way, then
//!   prepares (`Transaction::prepare_applying`) at the timestamp just
//!   above the newest the log gave: the entry carries no prepare
//!   timestamp of its own, and that one is the log's, the same on every
//!   replica (it does not raise the newest timestamp the log gave);
//!   commit-prepared and rollback-prepared use
//!   `commit_prepared_applying` / `rollback_prepared_applying`;
//! - nothing of the replica's own decides: `commit_applying`,
//!   `prepare_applying` and `commit_prepared_applying` read no clock (a
//!   replica whose clock is off by more than a commit may wait still
//!   applies its leader's timestamps, and prepares at the same timestamp
//!   as every other replica) and take the log's timestamp even at or
//!   below the database's high-water mark, which a local read as of a
//!   timestamp raises (the mark still rises to it). The newest timestamp
//!   the log gave is the state machine's, kept in the `_raft/applied` row;
//! - a refusal the data decided ([`is_decision`]) is the entry's outcome,
//!   [`Outcome::Aborted`], and the entry still records its index (nothing
//!   else); a failure of this replica (I/O, damage) stops the state
//!   machine with a storage error, and the entry is applied again after a
//!   restart. An entry at or below the applied index is skipped: nothing
//!   is applied twice.
//!
//! **The `_raft` table** holds the log id of the last entry applied (and
//! of the one before) and the last membership with its log id, written in
//! the same transaction as the entry (blank and membership entries, and
//! refused ones, get a transaction of their own, stamped just above the
//! newest timestamp the log gave, kept in the applied row: the same on
//! every replica, whatever its clock or its local reads). So `applied_state` after a restart is the database alone,
//! atomically: `Db::applied_index()` says which entry, the row its term,
//! the other row the membership — whatever the log kept or purged, and
//! after a snapshot install with no log at all. (Prepare and the
//! decisions on prepared transactions record their index through the
//! core, which writes no row with them: their row is written just before,
//! and one ahead of the index means the `prev` it carries is the applied
//! entry.) A separate file would not commit with the data; the log may
//! not hold the entry (purged, or behind an installed snapshot).
//!
//! **Snapshots** are `Db::export` (rows, the applied index, prepared
//! transactions in doubt) taken under the state machine's lock, so the
//! export is exactly at the last applied entry; the `_raft` rows travel
//! in it. Install imports the stream into a fresh directory `db.<n+1>`
//! (import itself builds beside and renames), checks that its `_raft`
//! rows agree with the snapshot's meta, then rewrites `CURRENT` (new file,
//! synced, renamed, directory synced) and drops the old database. A crash
//! before the rename of `CURRENT` leaves the old database current and the
//! new directory an orphan; after it, the new one is current and the old
//! an orphan; orphans are removed at the next open. Either way the Raft
//! log still holds what the current database needs. A snapshot at or
//! below the entry applied is ignored: the applied state never goes back.
//!
//! **Reads on a follower** must stay at or below the timestamps it has
//! applied. A read as of `T` raises the database's mark to `T` so that no
//! later commit lands at or below it; applying takes the leader's
//! timestamp regardless (a replica may not refuse what its log decided),
//! so a read served above what was applied could see a later entry land
//! beneath it and answer differently when asked again. The replicated
//! handle (not yet built) enforces it; `Db::begin_at` on the state
//! machine's database does not.
//!
//! **Another consensus library** drives the same core hooks. A Multi-Paxos
//! replica applies each chosen slot in order exactly as [`StateMachine`]
//! does with a log index: validate with `changed_since`, write nowait,
//! `set_applied_index(slot + 1)` and `commit_at`, prepares through
//! `prepare_applying`, decisions through `commit_prepared_applying`; recover from `Db::applied_index()`; let its
//! acceptor log forget slots only up to `Db::durable_applied_index()`;
//! ship `Db::export` / `import` to a lagging learner. Only the adapters
//! (this module's `LogStore` and the openraft trait impls) are openraft's.
//!
//! **Not yet / weak.** No network, no `Raft` node assembled, no
//! replicated handle (leader reads at a snapshot, proposes commands).
//! Snapshots are built and held in memory. A prepare entry carries no
//! prepare timestamp: it is derived from the log (just above the newest
//! timestamp it gave), not chosen by the leader or a coordinator, so it
//! says nothing of the leader's clock; a coordinator needing one it chose
//! would need the entry to carry it (a new log version).
//! `SnapshotTooOld` depends on the replica's history retention: replicas
//! must keep the same. An entry is at most `WAL_RECORD_MAX` encoded.
//! `save_committed` is not kept (openraft then re-applies from the applied
//! index when the leader says what is committed).

mod command;
mod encode;
mod log;
mod log_store;
mod state_machine;

pub use command::{is_decision, Command, Outcome, ReadRange, TxnBody, Write};
pub use encode::RAFT_LOG_VERSION;
pub use log::PurgeBound;
pub use log_store::LogStore;
pub use state_machine::{StateMachine, REPLICA_HISTORY_RETENTION, SYSTEM_TABLE};

use openraft::{AnyError, StorageError, StorageIOError};

openraft::declare_raft_types!(
    /// strata's openraft type configuration: node ids are `u64`, nodes
    /// carry an address, entries carry a [`Command`] and answer an
    /// [`Outcome`], snapshots are `Db::export` streams in memory.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// A Raft log entry of [`TypeConfig`].
pub type Entry = openraft::Entry<TypeConfig>;

/// Runs the synchronous `f` on tokio's blocking pool (the core never runs
/// on an async worker thread); its error becomes openraft's by `err`.
async fn blocking<T, F>(
    f: F,
    err: fn(&crate::Error) -> StorageError<u64>,
) -> Result<T, StorageError<u64>>
where
    F: FnOnce() -> crate::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| err(&e)),
        Err(e) => Err(StorageIOError::write(AnyError::new(&e)).into()),
    }
}
