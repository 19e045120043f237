//! The database directory: which files make a database, creating them
//! crash-safely, and opening them.
//!
//! ```text
//!   <dir>/CONTROL   data.strata   wal/<segments>   (LOCK: not a database file)
//!   missing, or empty        → a new database: created here (if asked to)
//!   other files only         → refused (Error::NotEmpty; NotADatabase
//!                              when not creating)
//!   a regular file           → refused (Error::NotADatabase)
//!   CONTROL, redo LSN 0      → a creation a crash interrupted: created again
//!   CONTROL                  → a database: recovered from its redo point
//!   data file or log alone   → refused (Error::Corruption naming CONTROL)
//! ```
//! Creation writes the control file before any other database file, so
//! the last case is never what a crash leaves (FORMAT.md §1, §5). A
//! creation that fails with an error (not a crash) is undone by
//! [`Created::undo`]: the open leaves nothing behind. This module opens
//! files only; recovery and the first checkpoint are `db::open_inner`'s.

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

/// Names in a database directory that are the database's own.
const OWN: [&str; 5] = [control::NAME, "CONTROL.tmp", DATA_FILE, WAL_DIR, LOCK_FILE];
/// Names of the files that make a directory a database (or a creation
/// under way) rather than a new one.
pub(crate) const DATABASE: [&str; 3] = [control::NAME, DATA_FILE, WAL_DIR];
/// Foreign names an error shows.
const FOUND_SHOWN: usize = 3;

/// What is at a database path before it is opened.
enum Found {
    Missing,
    Empty,
    Database,
    /// Other files and no database file: some of their names.
    Foreign(String),
}

/// Looks at `dir` without changing anything.
fn survey(vfs: &dyn Vfs, dir: &Path) -> Result<Found> {
    if dir.as_os_str().is_empty() {
        return Err(not_a_database(
            dir,
            "the path is empty (\".\" is the current directory)",
        ));
    }
    if !vfs.exists(dir)? {
        return Ok(Found::Missing);
    }
    let entries = match vfs.list(dir) {
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotADirectory) => {
            return Err(not_a_database(dir, "it is a regular file, not a directory"))
        }
        r => r?,
    };
    let name = |p: &PathBuf| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let names: Vec<String> = entries.iter().filter_map(name).collect();
    if names.iter().any(|n| DATABASE.contains(&n.as_str())) {
        return Ok(Found::Database);
    }
    let foreign: Vec<&String> = names
        .iter()
        .filter(|n| !OWN.contains(&n.as_str()))
        .collect();
    if foreign.is_empty() {
        return Ok(Found::Empty);
    }
    let mut shown: Vec<String> = foreign
        .iter()
        .take(FOUND_SHOWN)
        .map(|n| n.to_string())
        .collect();
    if foreign.len() > FOUND_SHOWN {
        shown.push(format!("and {} more", foreign.len() - FOUND_SHOWN));
    }
    Ok(Found::Foreign(shown.join(", ")))
}

fn not_a_database(dir: &Path, reason: impl Into<String>) -> Error {
    Error::NotADatabase {
        path: dir.to_path_buf(),
        reason: reason.into(),
    }
}

/// What an open made, to be removed if it fails after all.
pub(crate) struct Created {
    dir: PathBuf,
    /// Directories that did not exist, deepest first.
    dirs: Vec<PathBuf>,
    /// Whether the lock file is new.
    lock: bool,
    /// Whether it began creating the database's files.
    files: bool,
}

impl Created {
    /// Removes what the failed open made: the database files if it was
    /// creating them, the lock file and the directories. Stops at the
    /// first failure (what remains is then an interrupted creation, which
    /// the next open starts over). Creation's order reversed, so no crash
    /// leaves a data file or log without the control file marking them as
    /// a creation under way: they go, durably, before it.
    pub(crate) fn undo(&self, vfs: &dyn Vfs) -> Result<()> {
        let dir = &self.dir;
        if self.files {
            let wal_dir = dir.join(WAL_DIR);
            if vfs.exists(&wal_dir)? {
                for s in segment::list(vfs, &wal_dir)? {
                    vfs.remove(&segment::path(&wal_dir, s))?;
                }
                vfs.sync_dir(&wal_dir)?;
                vfs.remove_dir(&wal_dir)?;
            }
            let data = dir.join(DATA_FILE);
            if vfs.exists(&data)? {
                vfs.remove(&data)?;
            }
            vfs.sync_dir(dir)?;
            for name in [control::NAME, "CONTROL.tmp"] {
                if vfs.exists(&dir.join(name))? {
                    vfs.remove(&dir.join(name))?;
                }
            }
        }
        if self.lock && vfs.exists(&dir.join(LOCK_FILE))? {
            vfs.remove(&dir.join(LOCK_FILE))?;
        }
        for d in &self.dirs {
            vfs.remove_dir(d)?;
        }
        Ok(())
    }
}

/// Opens the files of a database for writing, creating them (`create`)
/// in a new or empty directory, and starting a creation a crash
/// interrupted over again. With the files, what the open made if it
/// created the database (for `db::open_inner` to undo should recovery or
/// the first checkpoint fail).
pub(crate) fn open_writable(
    vfs: &dyn Vfs,
    dir: &Path,
    create: bool,
) -> Result<(Files, Option<Created>)> {
    match survey(vfs, dir)? {
        Found::Database => {}
        Found::Missing | Found::Empty if create => {}
        Found::Missing => return Err(not_a_database(dir, "the directory does not exist")),
        Found::Empty => return Err(not_a_database(dir, "the directory is empty")),
        Found::Foreign(found) if create => {
            return Err(Error::NotEmpty {
                path: dir.to_path_buf(),
                found,
            })
        }
        Found::Foreign(found) => {
            return Err(not_a_database(
                dir,
                format!("it holds other files ({found})"),
            ))
        }
    }
    let mut made = Created {
        dir: dir.to_path_buf(),
        dirs: Vec::new(),
        lock: false,
        files: false,
    };
    for d in dir.ancestors().filter(|d| !d.as_os_str().is_empty()) {
        if vfs.exists(d)? {
            break;
        }
        made.dirs.push(d.to_path_buf());
    }
    made.lock = !vfs.exists(&dir.join(LOCK_FILE))?;
    let mut lock = None;
    match open_made(vfs, dir, create, &mut made, &mut lock) {
        Ok((control, data)) => Ok(((lock, control, data), made.files.then_some(made))),
        Err(e) => {
            // Best effort: the error that stopped the open is the one to
            // report. Under the lock, if it was taken, so that no
            // concurrent open makes files here meanwhile.
            let _ = made.undo(vfs);
            drop(lock);
            Err(e)
        }
    }
}

/// `open_writable` once the directory is one to open or create in.
/// The lock goes to `lock` as soon as it is taken.
fn open_made(
    vfs: &dyn Vfs,
    dir: &Path,
    may_create: bool,
    made: &mut Created,
    lock: &mut Option<Box<dyn VfsLock>>,
) -> Result<(Option<Control>, Box<dyn crate::io::VfsFile>)> {
    let entries = make_dir(vfs, dir)?;
    *lock = Some(vfs.lock(&dir.join(LOCK_FILE))?);
    let control = match existing(vfs, dir)? {
        Some(c) if !c.creating() => Some(c),
        found if !may_create => {
            let reason = match found {
                Some(_) => "its creation was not finished (open it with create to finish it)",
                None => "it holds no database file",
            };
            return Err(not_a_database(dir, reason));
        }
        found => {
            made.files = true;
            create(vfs, dir, &entries, found.is_some())?;
            None
        }
    };
    let data = vfs.open(&dir.join(DATA_FILE), true)?;
    Ok((control, data))
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
            Err(e) if i > 0 && e.io_kind() == Some(std::io::ErrorKind::PermissionDenied) => {}
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
    let reason = match survey(vfs, dir)? {
        Found::Missing => "the directory does not exist".to_string(),
        Found::Empty => "the directory is empty".to_string(),
        Found::Foreign(found) => format!("it holds other files ({found})"),
        Found::Database => "its creation was not finished (no control file)".to_string(),
    };
    let control = match existing(vfs, dir)? {
        Some(c) if !c.creating() => c,
        _ => return Err(not_a_database(dir, reason)),
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
