//! The one error type of the crate.
//!
//! Subsystems fold their failures into [`Error`] at the boundary: a bad WAL
//! frame or page checksum becomes [`Error::Corruption`] naming the file and
//! byte offset, an I/O failure on the durability path (or damage the
//! background worker cannot work past) becomes [`Error::Poisoned`], naming
//! that first failure, for every later write (and
//! [`Error::CommitOutcomeUnknown`] for the commit whose record it may have
//! lost).
//!
//! `Error` is `Clone` (an operating-system error is shared behind an
//! `Arc`), so a doomed transaction repeats the very error that doomed it,
//! and `PartialEq` (operating-system errors compare by kind and code).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Result alias used throughout strata.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in strata.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// The transaction conflicts with a concurrent one and cannot commit
    /// at its isolation level. Retry the whole transaction from `begin`.
    SerializationFailure {
        /// Why: another transaction updated a row this one writes (first
        /// updater wins), or the transaction would close a cycle of
        /// read/write dependencies (serializable snapshot isolation).
        cause: Conflict,
        /// The table of the row where the conflict was found, if known.
        table: Option<String>,
        /// The key of that row, if known.
        key: Option<Vec<u8>>,
    },
    /// Waiting for a row lock would have closed a cycle of waiting
    /// transactions. Retry from `begin`.
    Deadlock,
    /// A row lock was not granted within `Options::lock_timeout`. Retry from `begin`.
    LockTimeout,
    /// A write of a transaction set not to wait (`Transaction::set_nowait`)
    /// met a row, or a table, another transaction holds. Retry from
    /// `begin` once that one has finished.
    LockNotAvailable {
        /// The table of the row, or the table dropped or renamed.
        table: Option<String>,
        /// The row's key (`None` for a table).
        key: Option<Vec<u8>>,
    },
    /// Bytes on disk are damaged or inconsistent.
    Corruption {
        /// The file holding the damaged bytes.
        file: PathBuf,
        /// Byte offset of the damaged structure in that file.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// An operating-system I/O error.
    Io {
        /// What was being done: `open`, `read`, `write`, `sync`, `create
        /// directory`, … (empty if the error came from elsewhere).
        op: &'static str,
        /// The file or directory it was done to, if known.
        path: Option<PathBuf>,
        /// The operating system's error (also `std::error::Error::source`).
        source: IoSource,
    },
    /// An earlier failure stopped the database: a write or fsync on the
    /// durability path, or damage the background worker met (a vacuum or
    /// checkpoint finding a corrupt page). Nothing more is acknowledged.
    /// Reopen the database to recover from the log (and, after damage,
    /// `Db::check_integrity` to see how far it goes).
    Poisoned {
        /// The first failure, as `Db::poison_cause` also reports it.
        cause: String,
    },
    /// Writing or syncing the log failed after this commit's record was
    /// appended: the record may or may not be durable, so the transaction
    /// may have committed. The database is poisoned (later calls return
    /// `Poisoned { .. }`); reopen it and read back to learn the outcome.
    CommitOutcomeUnknown {
        /// The write or fsync failure that poisoned the database.
        cause: String,
    },
    /// Writing or syncing the log failed after this prepare's record was
    /// appended: the transaction may be in doubt after a reopen (listed by
    /// `Db::prepared_transactions`, holding its row locks) or gone. The
    /// database is poisoned; reopen it, and decide the gid if it is listed
    /// (a coordinator that took the failure as a no vote rolls it back).
    PrepareOutcomeUnknown {
        /// The write or fsync failure that poisoned the database.
        cause: String,
    },
    /// The directory is open in this or another process.
    Locked {
        /// The database directory.
        path: PathBuf,
    },
    /// The files were written by a foreign program or by an incompatible
    /// (newer) format version.
    IncompatibleFormat {
        /// What did not match.
        reason: String,
    },
    /// A key longer than [`crate::limits::KEY_MAX`] bytes.
    KeyTooLarge {
        /// The key's length.
        len: usize,
    },
    /// A value longer than [`crate::limits::VALUE_MAX`] bytes.
    ValueTooLarge {
        /// The value's length.
        len: usize,
    },
    /// A table name that is empty or longer than [`crate::limits::TABLE_NAME_MAX`].
    InvalidTableName,
    /// A `Table` handle of another database was passed to this one.
    ForeignTable,
    /// A `Table` handle from an earlier open of this database directory
    /// (a closed `Db`): ask the open `Db` for the table again.
    StaleTable {
        /// The table's name.
        name: String,
    },
    /// A read-only transaction (`Db::begin_read`, or any on a read-only
    /// open) read a table that no transaction it can see created; or a
    /// rename of a table that does not exist.
    NoSuchTable {
        /// The table's name.
        name: String,
    },
    /// Renaming a table to a name another table has.
    TableExists {
        /// The name taken.
        name: String,
    },
    /// A write in a transaction begun with `Db::begin_read`.
    ReadOnlyTransaction,
    /// A change (write, checkpoint, vacuum, decision, new table) to a
    /// database opened with `Options::read_only`.
    ReadOnly,
    /// Opening a database where there is none, without creating one
    /// (`Options::create(false)`, `Options::read_only`), or at a path
    /// that is not a directory.
    NotADatabase {
        /// The path given.
        path: PathBuf,
        /// What is there instead: nothing, an empty directory, a regular
        /// file, other files.
        reason: String,
    },
    /// Creating a database in a directory that holds other files and no
    /// strata database: its files would be mixed with someone else's.
    NotEmpty {
        /// The directory.
        path: PathBuf,
        /// Some of the names found in it.
        found: String,
    },
    /// `Db::close` while other clones of the `Db`, or transactions, still
    /// use it; it closes when the last of them is dropped.
    InUse {
        /// The database directory.
        path: PathBuf,
    },
    /// No prepared transaction with that global id exists.
    UnknownTransaction,
    /// A prepared transaction with that global id already exists.
    DuplicateTransaction,
    /// A global transaction id that is empty or longer than
    /// [`crate::limits::GID_MAX`] bytes.
    InvalidGid {
        /// Its length in bytes.
        len: usize,
    },
    /// [`crate::limits::PREPARED_MAX`] transactions are already prepared
    /// and waiting for a decision.
    TooManyPrepared,
    /// The clock cannot bound its error (unsynchronised, or uncertain past
    /// its ceiling), or it lags the timestamps the database has already
    /// assigned by more than a commit may wait
    /// ([`crate::clock::COMMIT_WAIT_MAX`]). Commits fail with it before
    /// writing anything; reads go on working.
    ClockUncertain {
        /// What the clock reported.
        reason: String,
    },
    /// A commit at a chosen timestamp (`Transaction::commit_at`,
    /// `Db::commit_prepared_at`) was refused: the timestamp is not above
    /// every one this database assigned, or is below the prepared
    /// transaction's prepare timestamp, or lies further ahead of the clock
    /// than a commit may wait. Nothing was committed. Also a read as of a
    /// timestamp (`Db::begin_at`) further ahead of the clock than the
    /// lock timeout lets it wait.
    TimestampRefused {
        /// The timestamp asked for, and why it was refused.
        reason: String,
    },
    /// An applied log index (`Transaction::set_applied_index`,
    /// `Db::set_applied_index`) not above the one the database recorded:
    /// indexes must rise. Nothing was applied.
    IndexRefused {
        /// The index offered.
        index: u64,
        /// The index recorded.
        applied: u64,
    },
    /// A read as of `ts` (`Db::begin_at`) asked for history vacuum has
    /// already freed: `ts` is below the history horizon, which follows
    /// `Options::history_retention` behind the clock.
    SnapshotTooOld {
        /// The timestamp asked for.
        ts: crate::ids::Timestamp,
        /// The oldest timestamp a read may be at.
        horizon: crate::ids::Timestamp,
    },
    /// A change reader (`Db::change_reader`) asked for log the database no
    /// longer keeps: its position `from` is before the oldest retained
    /// log, `oldest`, because a checkpoint recycled it (the reader fell
    /// further behind than `Options::change_retention_bytes`, or no reader
    /// held it). Changes from `from` on can no longer be read; nothing was
    /// skipped silently.
    ChangesLost {
        /// Where the reader needed the log from.
        from: crate::ids::Lsn,
        /// The oldest LSN the log still holds.
        oldest: crate::ids::Lsn,
    },
    /// A change position past the end of the log (`Db::change_reader`):
    /// not a position this database's log reached — one taken from another
    /// database, or from a log a crash cut shorter (the positions strata
    /// hands out are durable, so a crash never does). Reading from it
    /// would skip whatever commits below it, so it is refused.
    ChangePositionAhead {
        /// The position's `next` LSN.
        next: crate::ids::Lsn,
        /// Where the log ends.
        end: crate::ids::Lsn,
    },
    /// An export (`Db::export`) met a prepared transaction in doubt that
    /// created, dropped or renamed a table: a snapshot stream carries a
    /// transaction in doubt as its row writes only, so it cannot carry
    /// this one whole. Decide it (`Db::commit_prepared`,
    /// `Db::rollback_prepared`) and export again.
    InDoubtTableChange {
        /// The prepared transaction's global id.
        gid: String,
        /// The table it created, dropped or renamed.
        table: String,
    },
    /// An import (`import`) into a directory that is not empty: a strata
    /// database is there already, or other files are. Nothing was written.
    TargetNotEmpty {
        /// The target directory.
        path: PathBuf,
        /// Whether what is there is a strata database.
        database: bool,
        /// Some of the names found in it.
        found: String,
    },
    /// The feature is not available in this version (for example
    /// `Isolation::Serializable` before SSI lands).
    Unsupported(&'static str),
}

/// Why a transaction could not be serialized (PostgreSQL's two messages
/// for its `serialization_failure`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Conflict {
    /// Another transaction committed an update or delete of a row this one
    /// writes, after this one's snapshot: first updater wins.
    ConcurrentUpdate,
    /// Committing would leave a cycle of read/write dependencies among
    /// concurrent serializable transactions (write skew and its kin).
    ReadWriteDependencies,
    /// Another transaction committed the creation, drop or rename of a
    /// table this one writes, creates, drops or renames, after this one's
    /// snapshot: first updater wins, on the table's catalog row.
    ConcurrentTableChange,
}

/// An operating-system error, shared so that [`Error`] can be cloned.
/// Dereferences to the `std::io::Error`; two compare equal when their kind
/// and OS error code do.
#[derive(Clone, Debug)]
pub struct IoSource(Arc<std::io::Error>);

impl IoSource {
    /// The operating system's error.
    pub fn get_ref(&self) -> &std::io::Error {
        &self.0
    }
}

impl std::ops::Deref for IoSource {
    type Target = std::io::Error;
    fn deref(&self) -> &std::io::Error {
        &self.0
    }
}

impl PartialEq for IoSource {
    fn eq(&self, other: &Self) -> bool {
        self.0.kind() == other.0.kind() && self.0.raw_os_error() == other.0.raw_os_error()
    }
}

impl fmt::Display for IoSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Error {
    /// True when retrying the transaction from `begin` may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::SerializationFailure { .. }
                | Error::Deadlock
                | Error::LockTimeout
                | Error::LockNotAvailable { .. }
        )
    }

    /// The kind of an operating-system error, if this is one.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            Error::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    /// `io` met while doing `op` to `path`.
    pub fn io(op: &'static str, path: &Path, io: std::io::Error) -> Error {
        Error::Io {
            op,
            path: Some(path.to_path_buf()),
            source: IoSource(Arc::new(io)),
        }
    }

    /// Names the operation and path of an I/O error that does not name
    /// them yet; other errors pass unchanged.
    pub(crate) fn doing(self, what: &'static str, at: &Path) -> Error {
        match self {
            Error::Io { op, path, source } if path.is_none() => Error::Io {
                op: if op.is_empty() { what } else { op },
                path: Some(at.to_path_buf()),
                source,
            },
            e => e,
        }
    }

    /// A first-updater-wins failure on `key` of `table`.
    pub(crate) fn concurrent_update(table: &str, key: &[u8]) -> Error {
        Error::SerializationFailure {
            cause: Conflict::ConcurrentUpdate,
            table: Some(table.to_string()),
            key: Some(key.to_vec()),
        }
    }

    /// A concurrent committed change of table `name`'s catalog row.
    pub(crate) fn concurrent_table_change(name: &str) -> Error {
        Error::SerializationFailure {
            cause: Conflict::ConcurrentTableChange,
            table: Some(name.to_string()),
            key: None,
        }
    }

    /// A dangerous structure of read/write dependencies (SSI); where it was
    /// found is added by [`Error::at`] when the caller knows.
    pub(crate) fn rw_dependencies() -> Error {
        Error::SerializationFailure {
            cause: Conflict::ReadWriteDependencies,
            table: None,
            key: None,
        }
    }

    /// Names the row of a serialization failure that does not name one.
    pub(crate) fn at(self, at_table: &str, at_key: &[u8]) -> Error {
        match self {
            Error::SerializationFailure {
                cause,
                table: None,
                key: None,
            } => Error::SerializationFailure {
                cause,
                table: Some(at_table.to_string()),
                key: Some(at_key.to_vec()),
            },
            e => e,
        }
    }

    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::SerializationFailure { cause, table, key } => {
                serialization_failure(f, *cause, table.as_deref(), key.as_deref())
            }
            Error::Deadlock => write!(f, "deadlock detected; retry the transaction"),
            Error::LockTimeout => write!(f, "lock wait timed out; retry the transaction"),
            Error::LockNotAvailable { table, key } => {
                write!(f, "could not obtain the lock without waiting")?;
                at_row(f, table.as_deref(), key.as_deref())?;
                write!(f, ": another transaction holds it; retry the transaction")
            }
            Error::Corruption {
                file,
                offset,
                reason,
            } => write!(
                f,
                "corruption in {} at byte {offset}: {reason}",
                file.display()
            ),
            Error::Io { op, path, source } => io_error(f, op, path.as_deref(), source),
            Error::Poisoned { cause } => write!(
                f,
                "database poisoned by an earlier failure ({cause}); reopen it to recover"
            ),
            Error::CommitOutcomeUnknown { cause } => outcome_unknown(
                f,
                "commit",
                cause,
                "it may or may not be durable; the database is poisoned: reopen it and read back to learn whether the transaction committed",
            ),
            Error::PrepareOutcomeUnknown { cause } => outcome_unknown(
                f,
                "prepare",
                cause,
                "the transaction may be in doubt after reopening; the database is poisoned: reopen it and decide the gid if prepared_transactions lists it",
            ),
            Error::IncompatibleFormat { reason } => write!(f, "incompatible format: {reason}"),
            Error::Locked { .. }
            | Error::NotADatabase { .. }
            | Error::NotEmpty { .. }
            | Error::InUse { .. } => self.fmt_directory(f),
            Error::KeyTooLarge { .. }
            | Error::ValueTooLarge { .. }
            | Error::InvalidTableName
            | Error::InvalidGid { .. }
            | Error::TooManyPrepared => self.fmt_over_limit(f),
            Error::ForeignTable
            | Error::StaleTable { .. }
            | Error::NoSuchTable { .. }
            | Error::TableExists { .. } => self.fmt_table(f),
            Error::ClockUncertain { reason } => {
                write!(f, "cannot take a commit timestamp: {reason}")
            }
            Error::TimestampRefused { reason } => {
                write!(f, "timestamp refused: {reason}")
            }
            Error::IndexRefused { index, applied } => write!(
                f,
                "cannot apply log index {index}: the database holds entries up to {applied}, and indexes must rise"
            ),
            Error::SnapshotTooOld { ts, horizon } => write!(
                f,
                "cannot read as of {ts}: history before {horizon} is gone (see Options::history_retention)"
            ),
            Error::ChangesLost { from, oldest } => write!(
                f,
                "changes from LSN {from} are lost: the log now starts at LSN {oldest} (see Options::change_retention_bytes)"
            ),
            Error::ChangePositionAhead { next, end } => write!(
                f,
                "change position LSN {next} lies past the end of the log at LSN {end}: not a position of this database's log"
            ),
            Error::InDoubtTableChange { gid, table } => write!(
                f,
                "cannot export: prepared transaction {gid:?}, in doubt, created, dropped or renamed table {table:?}, which a snapshot stream cannot carry; decide it (commit or roll it back) and export again"
            ),
            Error::TargetNotEmpty {
                path,
                database: true,
                ..
            } => write!(
                f,
                "cannot import into {}: a strata database is there already; choose a new or empty directory",
                path.display()
            ),
            Error::TargetNotEmpty { path, found, .. } => write!(
                f,
                "cannot import into {}: the directory is not empty (it holds {found}); choose a new or empty directory",
                path.display()
            ),
            Error::Unsupported(what) => write!(f, "not supported: {what}"),
            Error::ReadOnlyTransaction => write!(
                f,
                "cannot write in a read-only transaction (begun with begin_read)"
            ),
            Error::ReadOnly => write!(
                f,
                "the database was opened read-only; open it without read_only to change it"
            ),
            Error::UnknownTransaction => write!(f, "no such prepared transaction"),
            Error::DuplicateTransaction => {
                write!(f, "a prepared transaction with that id already exists")
            }
        }
    }
}

impl Error {
    /// The text of an error about the database directory: open
    /// elsewhere, holding no database, holding other files, still in use.
    fn fmt_directory(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        assert!(
            matches!(
                self,
                Error::Locked { .. }
                    | Error::NotADatabase { .. }
                    | Error::NotEmpty { .. }
                    | Error::InUse { .. }
            ),
            "not a directory error: {self:?}"
        );
        match self {
            Error::Locked { path } => write!(
                f,
                "database {} is already open (in this or another process); close that handle or process first",
                path.display()
            ),
            Error::NotADatabase { path, reason } => write!(
                f,
                "{} holds no strata database: {reason}",
                path.display()
            ),
            Error::NotEmpty { path, found } => write!(
                f,
                "cannot create a database in {}: the directory holds other files ({found}) and no strata database; choose a new or empty directory",
                path.display()
            ),
            Error::InUse { path } => write!(
                f,
                "cannot close {}: other handles (clones of the Db, open transactions) still use it; it closes when the last of them is dropped",
                path.display()
            ),
            // Not sent here by `fmt` (asserted above).
            other => write!(f, "{other:?}"),
        }
    }

    /// The text of an error about a table: a handle from another database
    /// or an earlier open, a name with no table, a name taken.
    fn fmt_table(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        assert!(
            matches!(
                self,
                Error::ForeignTable
                    | Error::StaleTable { .. }
                    | Error::NoSuchTable { .. }
                    | Error::TableExists { .. }
            ),
            "not a table error: {self:?}"
        );
        match self {
            Error::ForeignTable => write!(
                f,
                "the table handle belongs to another database; ask this Db for the table (db.table(name))"
            ),
            Error::StaleTable { name } => write!(
                f,
                "the handle to table {name:?} is from an earlier open of this database; ask the new Db for the table again (db.table({name:?}))"
            ),
            Error::NoSuchTable { name } => write!(
                f,
                "no table {name:?}: no committed transaction this one sees created it (a table comes into being with the first committed write to it)"
            ),
            Error::TableExists { name } => write!(f, "a table named {name:?} exists already"),
            // Not sent here by `fmt` (asserted above).
            other => write!(f, "{other:?}"),
        }
    }

    /// The text of a request over one of the limits (`crate::limits`).
    fn fmt_over_limit(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::limits::{GID_MAX, KEY_MAX, PREPARED_MAX, TABLE_NAME_MAX, VALUE_MAX};
        assert!(
            matches!(
                self,
                Error::KeyTooLarge { .. }
                    | Error::ValueTooLarge { .. }
                    | Error::InvalidTableName
                    | Error::InvalidGid { .. }
                    | Error::TooManyPrepared
            ),
            "not an over-limit error: {self:?}"
        );
        match self {
            Error::KeyTooLarge { len } => too_large(f, "key", *len, KEY_MAX),
            Error::ValueTooLarge { len } => too_large(f, "value", *len, VALUE_MAX),
            Error::InvalidTableName => write!(f, "table names must be 1..={TABLE_NAME_MAX} bytes"),
            Error::InvalidGid { len } => write!(
                f,
                "global transaction id of {len} bytes; ids must be 1..={GID_MAX} bytes"
            ),
            Error::TooManyPrepared => write!(
                f,
                "{PREPARED_MAX} transactions are already prepared; commit or roll back some (commit_prepared / rollback_prepared) first"
            ),
            // Not sent here by `fmt` (asserted above).
            other => write!(f, "{other:?}"),
        }
    }
}

/// `SerializationFailure`'s text: why, where if known, and what to do.
fn serialization_failure(
    f: &mut fmt::Formatter<'_>,
    cause: Conflict,
    table: Option<&str>,
    key: Option<&[u8]>,
) -> fmt::Result {
    let why = match cause {
        Conflict::ConcurrentUpdate => "concurrent update",
        Conflict::ReadWriteDependencies => "read/write dependencies among transactions",
        Conflict::ConcurrentTableChange => "a concurrent create, drop or rename of a table",
    };
    write!(f, "could not serialize access due to {why}")?;
    at_row(f, table, key)?;
    write!(f, "; retry the transaction")
}

/// ` (table "t", key k)`, ` (table "t")`, or nothing: where an error met
/// the row.
fn at_row(f: &mut fmt::Formatter<'_>, table: Option<&str>, key: Option<&[u8]>) -> fmt::Result {
    match (table, key) {
        (Some(t), Some(k)) => write!(f, " (table {t:?}, key {})", Printable(k)),
        (Some(t), None) => write!(f, " (table {t:?})"),
        _ => Ok(()),
    }
}

/// `Io`'s text: the operation and path when known, then the system's
/// error.
fn io_error(
    f: &mut fmt::Formatter<'_>,
    op: &str,
    path: Option<&Path>,
    source: &IoSource,
) -> fmt::Result {
    match path {
        Some(p) if !op.is_empty() => write!(f, "I/O error: cannot {op} {}: {source}", p.display()),
        Some(p) => write!(f, "I/O error on {}: {source}", p.display()),
        None => write!(f, "I/O error: {source}"),
    }
}

/// The text of a commit or prepare (`what`) whose record was appended
/// before the log failed with `cause`; `then` says what follows.
fn outcome_unknown(f: &mut fmt::Formatter<'_>, what: &str, cause: &str, then: &str) -> fmt::Result {
    write!(
        f,
        "the outcome of the {what} is unknown: the log write or fsync failed ({cause}) after the {what} record was appended, so {then}"
    )
}

/// A key or value (`what`) of `len` bytes over its limit `max`.
fn too_large(f: &mut fmt::Formatter<'_>, what: &str, len: usize, max: usize) -> fmt::Result {
    assert!(
        len > max,
        "{what} of {len} bytes reported over a limit of {max}"
    );
    write!(f, "{what} of {len} bytes exceeds the limit of {max} bytes")
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source.get_ref()),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    /// An I/O error whose operation and path are not known here.
    fn from(e: std::io::Error) -> Self {
        Error::Io {
            op: "",
            path: None,
            source: IoSource(Arc::new(e)),
        }
    }
}

/// A key as text: printable ASCII as itself, other bytes as `\xHH`, cut
/// after [`crate::limits::KEY_SHOWN_MAX`] bytes.
struct Printable<'a>(&'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for &b in self.0.iter().take(crate::limits::KEY_SHOWN_MAX) {
            match b {
                b'"' | b'\\' => write!(f, "\\{}", b as char)?,
                0x20..=0x7e => write!(f, "{}", b as char)?,
                _ => write!(f, "\\x{b:02x}")?,
            }
        }
        if self.0.len() > crate::limits::KEY_SHOWN_MAX {
            write!(f, "…({} bytes)", self.0.len())?;
        }
        f.write_str("\"")
    }
}
