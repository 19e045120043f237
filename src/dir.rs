//! The database directory: which files make a database, creating them
//! crash-safely, and opening them.
//!
//! ```text
//!   <dir>/CONTROL   data.strata   wal/<segments>   (LOCK: not a database file)
//!   none of them             → a new database: created here
//!   CONTROL, redo LSN 0      → a creation a crash interrupted: created again
//!   CONTROL                  → a database: recovered from its redo point
//!   data file or log alone   → refused (Error::Corruption naming CONTROL)
//! ```
//! Creation writes the control file before any other database file, so
//! the last case is never what a crash leaves (FORMAT.md §1, §5). This
//! module opens files only; recovery and the first checkpoint are
//! `db::open_inner`'s.

use std::path::{Path, PathBuf};

use crate::control::{self, Control};
use crate::error::{Error, Result};
use crate::io::{Vfs, VfsLock};
use crate::wal::segment;

/// File name of the data file.
pub const DATA_FILE: &str = "data.strata";
/// Directory of log segments.
pub const WAL_DIR: &str = "wal";
/// Lock file.
pub const LOCK_FILE: &str = "LOCK";

/// The lock (if any), control file and data file of an existing or new
/// database.
pub(crate) type Files = (
    Option<Box<dyn VfsLock>>,
    Option<Control>,
    Box<dyn crate::io::VfsFile>,
);

/// Opens the files of a database for writing, creating them in a
/// directory that holds no database file, and starting a creation a crash
/// interrupted over again.
pub(crate) fn open_writable(vfs: &dyn Vfs, dir: &Path) -> Result<Files> {
    let entries = make_dir(vfs, dir)?;
    let lock = vfs.lock(&dir.join(LOCK_FILE))?;
    let control = match existing(vfs, dir)? {
        Some(c) if !c.creating() => Some(c),
        found => {
            create(vfs, dir, &entries, found.is_some())?;
            None
        }
    };
    let data = vfs.open(&dir.join(DATA_FILE), true)?;
    Ok((Some(lock), control, data))
}

/// Creates `dir` and any missing parents; returns the directories whose
/// entries a new database must make durable: every directory above
/// `dir`. Not only those this call made: an earlier open may have made
/// some and failed before their entries were durable, and nothing on disk
/// tells which (a few fsyncs, once per database, settle it).
fn make_dir(vfs: &dyn Vfs, dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = dir
        .ancestors()
        .skip(1)
        .map(|parent| {
            if parent.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                parent.to_path_buf()
            }
        })
        .collect();
    vfs.create_dir_all(dir)?;
    Ok(entries)
}

/// The control file of the database in `dir`, or `None` if the directory
/// holds no database file at all. A data file or log without a control
/// file is refused: it is not what an interrupted creation leaves (that
/// writes the control file first), recovery would not know where to start,
/// and it may hold acknowledged commits (PostgreSQL refuses to start
/// without `pg_control` likewise).
fn existing(vfs: &dyn Vfs, dir: &Path) -> Result<Option<Control>> {
    if let Some(c) = control::read(vfs, dir)? {
        return Ok(Some(c));
    }
    let wal_dir = dir.join(WAL_DIR);
    let log = vfs.exists(&wal_dir)? && !segment::list(vfs, &wal_dir)?.is_empty();
    let data = vfs.exists(&dir.join(DATA_FILE))?;
    if !log && !data {
        return Ok(None);
    }
    let found = match (data, log) {
        (true, true) => "the data file and the log exist",
        (true, false) => "the data file exists",
        _ => "the log exists",
    };
    Err(Error::corruption(
        dir.join(control::NAME),
        0,
        format!("the control file is missing but {found}; refusing to open (restore the control file from a backup of this database)"),
    ))
}

/// Creates the files of a new database, or (`again`) of one whose creation
/// a crash interrupted. The creation is crash-safe (FORMAT.md §5): the
/// directory is made durable in its parent, then `Control::CREATING` is
/// written before any other file, then the data file and the log; the
/// first checkpoint ends it by replacing the control file. A crash leaves
/// no database file at all, or the marker with files no open returned
/// from, so nothing in them was acknowledged and they are made again.
fn create(vfs: &dyn Vfs, dir: &Path, entries: &[PathBuf], again: bool) -> Result<()> {
    for (i, parent) in entries.iter().enumerate() {
        match vfs.sync_dir(parent) {
            // A directory further up that this process may pass through but
            // not read (mode 0711, as home directories often are) cannot
            // have been made by it, so its entries were durable already;
            // the database's own parent must be synced.
            Err(Error::Io(e)) if i > 0 && e.kind() == std::io::ErrorKind::PermissionDenied => {}
            r => r?,
        }
    }
    let (wal_dir, data_path) = (dir.join(WAL_DIR), dir.join(DATA_FILE));
    if again {
        if vfs.exists(&wal_dir)? {
            for s in segment::list(vfs, &wal_dir)? {
                vfs.remove(&segment::path(&wal_dir, s))?;
            }
        }
        if vfs.exists(&data_path)? {
            vfs.remove(&data_path)?;
        }
    } else {
        control::write(vfs, dir, &Control::CREATING)?;
    }
    vfs.create_dir_all(&wal_dir)?;
    drop(vfs.open(&data_path, true)?);
    // The data file and log directory exist durably before the log's
    // first segment is created in them.
    vfs.sync_dir(dir)
}

/// Opens the files of an existing database without creating or changing
/// any, not even the lock file (a copy of a database has none and is open
/// nowhere).
pub(crate) fn open_read_only(vfs: &dyn Vfs, dir: &Path) -> Result<Files> {
    let control = match existing(vfs, dir)? {
        Some(c) if !c.creating() => c,
        _ => {
            return Err(Error::NotADatabase {
                path: dir.to_path_buf(),
            })
        }
    };
    let lock_path = dir.join(LOCK_FILE);
    let lock = if vfs.exists(&lock_path)? {
        Some(vfs.lock(&lock_path)?)
    } else {
        None
    };
    let data = vfs.open_read(&dir.join(DATA_FILE))?;
    Ok((lock, Some(control), data))
}
