//! The one error type of the crate.
//!
//! Subsystems fold their failures into [`Error`] at the boundary: a bad WAL
//! frame or page checksum becomes [`Error::Corruption`] naming the file and
//! byte offset, an I/O failure on the durability path becomes
//! [`Error::Poisoned`] for every later write (and
//! [`Error::CommitOutcomeUnknown`] for the commit whose record it may have
//! lost).

use std::fmt;
use std::path::PathBuf;

/// Result alias used throughout strata.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in strata.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The transaction conflicts with a concurrent one (first updater wins).
    /// Retry the whole transaction from `begin`.
    SerializationFailure,
    /// Waiting for a row lock would have closed a cycle of waiting
    /// transactions. Retry from `begin`.
    Deadlock,
    /// A row lock was not granted within `Options::lock_timeout`. Retry from `begin`.
    LockTimeout,
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
    Io(std::io::Error),
    /// An earlier write or fsync failed; nothing more is acknowledged. Reopen
    /// the database to recover from the log.
    Poisoned,
    /// Writing or syncing the log failed after this commit's record was
    /// appended: the record may or may not be durable, so the transaction
    /// may have committed. The database is poisoned (later calls return
    /// `Poisoned`); reopen it and read back to learn the outcome.
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
    /// A write in a transaction begun with `Db::begin_read`.
    ReadOnlyTransaction,
    /// A change (write, checkpoint, vacuum, decision, new table) to a
    /// database opened with `Options::read_only`.
    ReadOnly,
    /// `Options::read_only` on a directory that holds no strata database.
    NotADatabase {
        /// The directory.
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
    /// The feature is not available in this version (for example
    /// `Isolation::Serializable` before SSI lands).
    Unsupported(&'static str),
}

impl Error {
    /// True when retrying the transaction from `begin` may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::SerializationFailure | Error::Deadlock | Error::LockTimeout
        )
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
            Error::SerializationFailure => write!(
                f,
                "could not serialize access due to a concurrent update; retry the transaction"
            ),
            Error::Deadlock => write!(f, "deadlock detected; retry the transaction"),
            Error::LockTimeout => write!(f, "lock wait timed out; retry the transaction"),
            Error::Corruption {
                file,
                offset,
                reason,
            } => write!(
                f,
                "corruption in {} at byte {offset}: {reason}",
                file.display()
            ),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Poisoned => write!(
                f,
                "database poisoned by an earlier write or fsync failure; reopen it to recover"
            ),
            Error::CommitOutcomeUnknown { cause } => write!(
                f,
                "the outcome of the commit is unknown: the log write or fsync failed ({cause}) after the commit record was appended, so it may or may not be durable; the database is poisoned: reopen it and read back to learn whether the transaction committed"
            ),
            Error::PrepareOutcomeUnknown { cause } => write!(
                f,
                "the outcome of the prepare is unknown: the log write or fsync failed ({cause}) after the prepare record was appended, so the transaction may be in doubt after reopening; the database is poisoned: reopen it and decide the gid if prepared_transactions lists it"
            ),
            Error::Locked { path } => write!(
                f,
                "database {} is already open (in this or another process); close that handle or process first",
                path.display()
            ),
            Error::IncompatibleFormat { reason } => write!(f, "incompatible format: {reason}"),
            Error::KeyTooLarge { len } => write!(
                f,
                "key of {len} bytes exceeds the limit of {} bytes",
                crate::limits::KEY_MAX
            ),
            Error::ValueTooLarge { len } => write!(
                f,
                "value of {len} bytes exceeds the limit of {} bytes",
                crate::limits::VALUE_MAX
            ),
            Error::InvalidTableName => write!(
                f,
                "table names must be 1..={} bytes",
                crate::limits::TABLE_NAME_MAX
            ),
            Error::ForeignTable => write!(f, "the table handle belongs to another database"),
            Error::ReadOnlyTransaction => write!(
                f,
                "cannot write in a read-only transaction (begun with begin_read)"
            ),
            Error::ReadOnly => write!(
                f,
                "the database was opened read-only; open it without read_only to change it"
            ),
            Error::NotADatabase { path } => write!(
                f,
                "{} holds no strata database (no control file)",
                path.display()
            ),
            Error::UnknownTransaction => write!(f, "no such prepared transaction"),
            Error::DuplicateTransaction => {
                write!(f, "a prepared transaction with that id already exists")
            }
            Error::InvalidGid { len } => write!(
                f,
                "global transaction id of {len} bytes; ids must be 1..={} bytes",
                crate::limits::GID_MAX
            ),
            Error::TooManyPrepared => write!(
                f,
                "{} transactions are already prepared; commit or roll back some (commit_prepared / rollback_prepared) first",
                crate::limits::PREPARED_MAX
            ),
            Error::Unsupported(what) => write!(f, "not supported: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}
