//! What a Raft entry asks the state machine to do, and what it answered.
//!
//! A command is decided entirely by the entry and the state the log's
//! earlier entries left: every replica applying the same log answers the
//! same (module essay, "Apply").

use crate::clock::Timestamp;
use crate::error::Error;

/// A key range a replicated transaction read: `[start, end)`, `end: None`
/// running to the end of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRange {
    /// The table read.
    pub table: String,
    /// The first key of the range.
    pub start: Vec<u8>,
    /// The first key past it (`None`: none).
    pub end: Option<Vec<u8>>,
}

impl ReadRange {
    /// The range holding exactly `key` (a point read).
    pub fn point(table: &str, key: &[u8]) -> ReadRange {
        let mut end = key.to_vec();
        end.push(0);
        ReadRange {
            table: table.to_string(),
            start: key.to_vec(),
            end: Some(end),
        }
    }
}

/// One write of a replicated transaction: `value: None` deletes the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The table written.
    pub table: String,
    /// The key.
    pub key: Vec<u8>,
    /// The new value, or `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// The body of an optimistic transaction: what it read at its snapshot
/// and what it writes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TxnBody {
    /// The timestamp the transaction read at.
    pub snapshot_ts: Timestamp,
    /// The ranges it read (validated: unchanged since `snapshot_ts`).
    pub reads: Vec<ReadRange>,
    /// Its writes, applied in order (each key validated too).
    pub writes: Vec<Write>,
}

/// An application command carried by a normal Raft entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Validate, then commit at `commit_ts`.
    Transaction {
        /// Reads and writes.
        body: TxnBody,
        /// The commit timestamp the leader chose.
        commit_ts: Timestamp,
    },
    /// Validate, then prepare under `gid` (two-phase commit participant).
    Prepare {
        /// The global transaction id.
        gid: String,
        /// Reads and writes.
        body: TxnBody,
    },
    /// Commit the prepared transaction `gid` at `ts`.
    CommitPrepared {
        /// The global transaction id.
        gid: String,
        /// The commit timestamp the coordinator chose.
        ts: Timestamp,
    },
    /// Roll back the prepared transaction `gid`.
    RollbackPrepared {
        /// The global transaction id.
        gid: String,
    },
}

/// What applying an entry decided: the response openraft hands the
/// client that proposed it. Equal on every replica.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// A blank or membership entry: recorded, nothing else.
    Applied,
    /// The transaction committed at `ts` (`ZERO` if it wrote nothing).
    Committed {
        /// Its commit timestamp.
        ts: Timestamp,
    },
    /// The transaction is prepared, in doubt, with this prepare
    /// timestamp: just above the newest timestamp the log gave before the
    /// entry, the same on every replica.
    Prepared {
        /// Its prepare timestamp.
        ts: Timestamp,
    },
    /// The prepared transaction was rolled back.
    RolledBack,
    /// Refused, nothing written but the entry's index: a read or written
    /// key changed after the snapshot (`SerializationFailure`), a row held
    /// (`LockNotAvailable`), a timestamp not above those given out
    /// (`TimestampRefused`), an unknown gid, …
    Aborted(Error),
}

/// Whether `e`, met while applying an entry, is a decision the data made
/// — the same on every replica that applied the same log — rather than a
/// failure of this replica (I/O, damage, a poisoned database), which
/// stops the state machine instead of answering the client.
///
/// `SnapshotTooOld` depends on when vacuum ran: it is the same on every
/// replica only when each keeps a `history_retention` longer than any
/// replicated transaction takes (README, "Hooks for replication").
pub fn is_decision(e: &Error) -> bool {
    matches!(
        e,
        Error::SerializationFailure { .. }
            | Error::LockNotAvailable { .. }
            | Error::TimestampRefused { .. }
            | Error::SnapshotTooOld { .. }
            | Error::KeyTooLarge { .. }
            | Error::ValueTooLarge { .. }
            | Error::InvalidTableName
            | Error::NoSuchTable { .. }
            | Error::TableExists { .. }
            | Error::UnknownTransaction
            | Error::DuplicateTransaction
            | Error::InvalidGid { .. }
            | Error::TooManyPrepared
            | Error::Unsupported(_)
    )
}
