//! `strata`: look inside, verify, dump, load, back up, restore and edit a
//! strata database.
//!
//! Every subcommand takes the database directory first (`restore`: the
//! snapshot file, then the directory of the database it builds). `stat`,
//! `verify`, `dump`, `tables`, `waldump`, `get`, `scan` and `backup` open
//! it read-only (they never change a byte, even when the log needs
//! replaying); the others open it for writing. Only `load`, `restore`, and
//! `put` and `shell` given `--create`, create a database: on a mistyped
//! path every other command says there is none and changes nothing.
//! Errors are one line on stderr saying what went wrong and what
//! to do, and the exit status is 0 on success, 1 when the command failed
//! (for `verify`, `stat` and `dump --salvage`: the database is damaged,
//! whatever they could still print printed), 2 when the database could
//! not be opened or the command line was wrong.
//!
//! Keys and values are printed as shell words (escape.rs): what `get`,
//! `scan` and `tables` print pastes back into `get`, `put` and `delete`, at
//! a shell prompt or in `strata shell`.

mod dump;
mod escape;
mod report;
mod scan;
mod shell;
mod waldump;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata::clock::Timestamp;
use strata::{Db, Error, Isolation, Options, Table};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Inspect, verify, dump, load and edit a strata database",
    after_help = "Keys and values are written with escapes: \\\\, \\t, \\n, \\r and \\xHH stand for bytes; \
                  other printable ASCII stands for itself. They are printed single-quoted when a shell \
                  would change them, so they paste back as arguments."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Format, sizes, tables with rows and versions, log range, prepared transactions.
    Stat {
        /// Database directory.
        dir: PathBuf,
    },
    /// Check every page, tuple and index entry; exit 0 clean, 1 damaged, 2 could not open.
    Verify {
        /// Database directory.
        dir: PathBuf,
    },
    /// Write every row (or one table's) as portable text to stdout.
    Dump {
        /// Database directory.
        dir: PathBuf,
        /// Only this table.
        #[arg(long)]
        table: Option<String>,
        /// Step over damaged pages, writing every row still readable, and
        /// report on stderr what was skipped (exit status 1 if anything was).
        #[arg(long)]
        salvage: bool,
        /// Read as of this commit timestamp (seconds since the epoch, as
        /// `stat` prints them): exactly the commits at or before it.
        #[arg(long, value_name = "TS", conflicts_with = "salvage")]
        as_of: Option<String>,
    },
    /// List the tables, one a line (with --rows, each with its row count).
    Tables {
        /// Database directory.
        dir: PathBuf,
        /// Count each table's rows too (reads every row).
        #[arg(long)]
        rows: bool,
    },
    /// Read a dump from stdin into the database (created if missing or empty), in batches.
    Load {
        /// Database directory.
        dir: PathBuf,
        /// Rows per committed batch.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
    },
    /// One line per log record from the oldest retained one (or --from).
    Waldump {
        /// Database directory.
        dir: PathBuf,
        /// First LSN to show.
        #[arg(long)]
        from: Option<u64>,
    },
    /// Print one key's value.
    Get {
        /// Database directory.
        dir: PathBuf,
        /// Table name.
        table: String,
        /// Key (escaped).
        #[arg(allow_hyphen_values = true)]
        key: String,
        /// Write the value's raw bytes instead of its escaped form.
        #[arg(long)]
        raw: bool,
        /// Read as of this commit timestamp (seconds since the epoch).
        #[arg(long, value_name = "TS")]
        as_of: Option<String>,
    },
    /// Set one key (one durable transaction).
    Put {
        /// Create the database if the directory is missing or empty.
        #[arg(long)]
        create: bool,
        /// Database directory.
        dir: PathBuf,
        /// Table name (created if missing).
        table: String,
        /// Key (escaped).
        #[arg(allow_hyphen_values = true)]
        key: String,
        /// Value (escaped), or `-` to read it from stdin byte for byte
        /// (a lone `-` as the value itself is written \x2d).
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Delete one key (one durable transaction).
    Delete {
        /// Database directory.
        dir: PathBuf,
        /// Table name.
        table: String,
        /// Key (escaped).
        #[arg(allow_hyphen_values = true)]
        key: String,
    },
    /// Print the rows of a key range, one `key<TAB>value` line each.
    Scan {
        /// Database directory.
        dir: PathBuf,
        /// Table name.
        table: String,
        #[command(flatten)]
        opts: scan::ScanOpts,
        /// Read as of this commit timestamp (seconds since the epoch).
        #[arg(long, value_name = "TS")]
        as_of: Option<String>,
    },
    /// An interactive prompt: begin/commit/rollback, get/put/delete/scan, isolation.
    Shell {
        /// Create the database if the directory is missing or empty.
        #[arg(long)]
        create: bool,
        /// Database directory.
        dir: PathBuf,
    },
    /// Write a consistent snapshot of the database to FILE (a checksummed
    /// stream: rows, applied index, timestamp horizon, prepared transactions).
    Backup {
        /// Replace FILE if it exists (without it, an existing FILE is refused).
        #[arg(long)]
        force: bool,
        /// Database directory.
        dir: PathBuf,
        /// The snapshot file to write (written beside as FILE.partial, then renamed).
        file: PathBuf,
    },
    /// Build a new database in DIR (missing or empty) from a snapshot FILE `backup` wrote.
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// Directory for the new database: missing or empty.
        dir: PathBuf,
    },
    /// Write every dirty page and trim the log.
    Checkpoint {
        /// Database directory.
        dir: PathBuf,
    },
    /// Remove versions no transaction can see and return their space.
    Vacuum {
        /// Database directory.
        dir: PathBuf,
    },
}

/// A failure and the exit status it earns.
pub struct Failure {
    message: String,
    status: u8,
}

impl Failure {
    /// A failed command (status 1).
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            status: 1,
        }
    }

    /// A database that could not be opened (status 2, or 1 when it is
    /// damaged).
    fn open(dir: &Path, e: Error) -> Failure {
        let status = if matches!(e, Error::Corruption { .. }) {
            1
        } else {
            2
        };
        if let Error::Locked { .. } = e {
            return Failure::locked(dir);
        }
        let hint = match &e {
            Error::Corruption { .. } => {
                " (the database is damaged; `strata verify` reports what it can)"
            }
            Error::IncompatibleFormat { .. } => " (written by another version of strata)",
            Error::NotADatabase { .. } => {
                " (`strata load` or `--create` on put and shell make a new one)"
            }
            _ => "",
        };
        // These name the directory themselves.
        let prefix = match &e {
            Error::NotADatabase { .. } | Error::NotEmpty { .. } => String::new(),
            _ => format!("cannot open {}: ", dir.display()),
        };
        Failure {
            message: format!("{prefix}{e}{hint}"),
            status,
        }
    }

    /// The database is open in a program (or elsewhere in this one):
    /// said once, with what can be done meanwhile.
    fn locked(dir: &Path) -> Failure {
        let d = dir.display();
        Failure {
            message: format!(
                "{d} is open in another program (one program at a time may open a database).\n\
                 Meanwhile `strata waldump {d}` reads its log. To read its rows, close the \
                 database there (or stop the program) and run this again, or point strata at a \
                 copy of the directory made while that program was stopped or idle (a copy made \
                 while it writes may not open)."
            ),
            status: 2,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        if e.io_kind() == Some(std::io::ErrorKind::BrokenPipe) {
            return std::io::Error::from(std::io::ErrorKind::BrokenPipe).into();
        }
        let hint = match e {
            Error::Corruption { .. } => {
                "\nthe database is damaged: `strata verify` reports where; \
                 `strata dump --salvage` saves every row still readable"
            }
            _ => "",
        };
        Failure::new(format!("{e}{hint}"))
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // The reader went away (`strata dump | head`): nothing to say.
            return Failure {
                message: String::new(),
                status: 1,
            };
        }
        Failure::new(format!("I/O error: {e}"))
    }
}

type Outcome = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("strata: {}", f.message);
            }
            ExitCode::from(f.status)
        }
    }
}

fn run(command: Command) -> Outcome {
    match command {
        Command::Stat { dir } => report::stat(&open_read(&dir)?, &dir),
        Command::Verify { dir } => report::verify(&dir),
        Command::Dump {
            dir,
            table,
            salvage: false,
            as_of,
        } => {
            let db = open_read(&dir)?;
            dump::dump(&db, &reader(&db, as_of.as_deref())?, table.as_deref())
        }
        Command::Dump {
            dir,
            table,
            salvage: true,
            ..
        } => dump::salvage(&open_read(&dir)?, table.as_deref()),
        Command::Tables { dir, rows } => tables(&open_read(&dir)?, rows),
        Command::Load { dir, batch } => {
            dump::stdin_is_a_dump()?;
            dump::load(&open_write(&dir, true)?, batch.max(1))
        }
        Command::Waldump { dir, from } => waldump::run(&dir, from),
        Command::Get {
            dir,
            table,
            key,
            raw,
            as_of,
        } => get(&open_read(&dir)?, &table, &key, raw, as_of.as_deref()),
        Command::Put {
            create,
            dir,
            table,
            key,
            value,
        } => {
            let db = open_write(&dir, create)?;
            let t = db.table(&table)?;
            let mut tx = db.begin()?;
            let value = match value.as_str() {
                "-" => stdin_value()?,
                text => arg(text)?,
            };
            tx.put(&t, arg(&key)?, value)?;
            tx.commit()?;
            Ok(())
        }
        Command::Delete { dir, table, key } => {
            let db = open_write(&dir, false)?;
            let t = existing_table(&db, &table)?;
            let mut tx = db.begin()?;
            let existed = tx.delete(&t, arg(&key)?)?;
            tx.commit()?;
            if existed {
                Ok(())
            } else {
                Err(Failure::new(format!("no key {key} in table {table}")))
            }
        }
        Command::Scan {
            dir,
            table,
            opts,
            as_of,
        } => scan(&open_read(&dir)?, &table, &opts, as_of.as_deref()),
        Command::Shell { create, dir } => shell::run(open_write(&dir, create)?),
        Command::Backup { force, dir, file } => {
            if !force && file.symlink_metadata().is_ok() {
                return Err(Failure::new(format!(
                    "{} exists; choose another name, or --force to replace it",
                    file.display()
                )));
            }
            backup(&open_read(&dir)?, &file)
        }
        Command::Restore { file, dir } => {
            let s = strata::import_file(&file, &dir, Options::default()).map_err(|e| match e {
                // The stream is damaged, not a database.
                Error::Corruption { .. } => Failure::new(format!(
                    "{e}\nthe snapshot file is damaged; nothing was restored into {}",
                    dir.display()
                )),
                e => Failure::from(e),
            })?;
            println!(
                "restored {} into {}: {}",
                file.display(),
                dir.display(),
                summary(&s)
            );
            Ok(())
        }
        Command::Checkpoint { dir } => Ok(open_write(&dir, false)?.checkpoint()?),
        Command::Vacuum { dir } => {
            let s = open_write(&dir, false)?.vacuum()?;
            println!(
                "examined {} keys; removed {} versions and {} keys; freed {} heap and {} overflow pages",
                s.keys, s.versions_removed, s.keys_removed, s.heap_pages_freed, s.overflow_pages_freed
            );
            Ok(())
        }
    }
}

/// Opens `dir` without changing any of its files.
pub fn read_only(dir: &Path) -> strata::Result<Db> {
    Db::open_with(dir, Options::default().read_only(true))
}

fn open_read(dir: &Path) -> Result<Db, Failure> {
    read_only(dir).map_err(|e| Failure::open(dir, e))
}

/// Opens `dir` for writing; `create`: a new database if it is missing or
/// empty.
fn open_write(dir: &Path, create: bool) -> Result<Db, Failure> {
    Db::open_with(dir, Options::default().create(create)).map_err(|e| Failure::open(dir, e))
}

// Reads run at Snapshot isolation: one consistent snapshot, and no
// serialization failure from prepared transactions recovered in doubt
// (which Serializable readers of their tables must avoid).

/// The transaction a read command reads in: a snapshot of now, or a read
/// as of the timestamp `as_of` (seconds since the epoch).
fn reader(db: &Db, as_of: Option<&str>) -> Result<strata::Transaction, Failure> {
    Ok(match as_of {
        None => db.begin_with(Isolation::Snapshot)?,
        Some(text) => db.begin_at(timestamp(text)?)?,
    })
}

/// A timestamp as `stat` prints it: seconds since the epoch, with up to
/// nine digits of fraction (`1796601600.000000042`, or `1796601600`).
fn timestamp(text: &str) -> Result<Timestamp, Failure> {
    let bad = || {
        Failure::new(format!(
            "not a timestamp: {text} (seconds since the epoch, as stat prints them, e.g. 1796601600.5)"
        ))
    };
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(secs) || (!frac.is_empty() && !digits(frac)) || frac.len() > 9 {
        return Err(bad());
    }
    let secs: u64 = secs.parse().map_err(|_| bad())?;
    let nanos: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().map_err(|_| bad())?
    };
    secs.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(nanos))
        .map(Timestamp::from_nanos)
        .ok_or_else(bad)
}

/// A key or value from the command line.
pub fn arg(text: &str) -> Result<Vec<u8>, Failure> {
    escape::unescape(text).map_err(Failure::new)
}

/// Bounds of a key range, as `Transaction::scan` takes them.
pub type KeyBounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// The keys `from` (inclusive) up to `to` (exclusive), escaped; either end
/// may be open.
pub fn key_range(from: Option<&str>, to: Option<&str>) -> Result<KeyBounds, Failure> {
    let lo = match from {
        Some(k) => Bound::Included(arg(k)?),
        None => Bound::Unbounded,
    };
    let hi = match to {
        Some(k) => Bound::Excluded(arg(k)?),
        None => Bound::Unbounded,
    };
    Ok((lo, hi))
}

/// The table `name`, which must exist (listing the ones that do).
pub fn existing_table(db: &Db, name: &str) -> Result<Table, Failure> {
    named_table(db, &db.table_names()?, name)
}

/// `existing_table` among the tables `tx` sees (for a read as of a
/// timestamp, those that existed then).
pub fn table_seen(db: &Db, tx: &strata::Transaction, name: &str) -> Result<Table, Failure> {
    named_table(db, &tx.table_names()?, name)
}

fn named_table(db: &Db, names: &[String], name: &str) -> Result<Table, Failure> {
    if names.iter().any(|n| n == name) {
        return Ok(db.table(name)?);
    }
    let known = if names.is_empty() {
        "it has no tables".to_string()
    } else {
        format!("its tables: {}", names.join(", "))
    };
    Err(Failure::new(format!(
        "no table {name:?} in {}; {known}",
        db.path().display()
    )))
}

fn get(db: &Db, table: &str, key: &str, raw: bool, as_of: Option<&str>) -> Outcome {
    let tx = reader(db, as_of)?;
    let t = table_seen(db, &tx, table)?;
    match tx.get(&t, arg(key)?)? {
        Some(v) if raw => {
            use std::io::Write;
            std::io::stdout().write_all(&v)?;
            Ok(())
        }
        Some(v) => {
            println!("{}", escape::word(&v));
            Ok(())
        }
        None => Err(Failure::new(format!("no key {key} in table {table}"))),
    }
}

fn scan(db: &Db, table: &str, opts: &scan::ScanOpts, as_of: Option<&str>) -> Outcome {
    use std::io::Write;
    let tx = reader(db, as_of)?;
    let t = table_seen(db, &tx, table)?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    for row in opts
        .rows(&tx, &t, opts.bounds()?)?
        .take(opts.limit.unwrap_or(usize::MAX))
    {
        let (k, v) = row?;
        writeln!(out, "{}\t{}", escape::word(&k), escape::word(&v))?;
    }
    out.flush()?;
    Ok(())
}

/// `put`'s value from stdin, byte for byte (nothing trimmed: `printf`, not
/// `echo`, for a value without a newline). Read up to one byte past the
/// limit, so an endless stream is refused rather than held.
fn stdin_value() -> Result<Vec<u8>, Failure> {
    use std::io::Read;
    let mut value = Vec::new();
    let limit = strata::limits::VALUE_MAX as u64 + 1;
    std::io::stdin()
        .lock()
        .take(limit)
        .read_to_end(&mut value)?;
    if value.len() as u64 == limit {
        return Err(Failure::new(format!(
            "the value on stdin is longer than {} bytes, the limit",
            strata::limits::VALUE_MAX
        )));
    }
    Ok(value)
}

/// Every table's name as a shell word, with its row count when `rows`
/// (`Transaction::len`: a walk of each table's index and version headers,
/// no value read — the engine keeps no running count).
fn tables(db: &Db, rows: bool) -> Outcome {
    use std::io::Write;
    let names = db.table_names()?;
    let tx = db.begin_with(Isolation::Snapshot)?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    for name in &names {
        let name_word = escape::word(name.as_bytes());
        if rows {
            let n = tx.len(&db.table(name)?)?;
            writeln!(out, "{name_word}\t{n}")?;
        } else {
            writeln!(out, "{name_word}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// What a snapshot holds, in one line.
fn summary(s: &strata::SnapshotStats) -> String {
    format!(
        "{} tables, {} rows, {} prepared transactions in doubt ({} writes), applied index {}, newest timestamp {}, {} bytes",
        s.tables, s.rows, s.prepared, s.writes, s.applied_index, s.newest_ts, s.bytes
    )
}

/// Exports `db` to `file`: written as `file.partial`, synced, then renamed,
/// so a failed or interrupted backup never leaves a file by that name.
fn backup(db: &Db, file: &Path) -> Outcome {
    use std::io::Write;
    let mut partial = file.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let written = (|| -> Result<strata::SnapshotStats, Failure> {
        let f = std::fs::File::create(&partial)
            .map_err(|e| Failure::new(format!("cannot create {}: {e}", partial.display())))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let s = db.export(&mut w, strata::ExportOptions::default())?;
        let f = w.into_inner().map_err(|e| {
            Failure::new(format!("cannot write {}: {}", partial.display(), e.error()))
        })?;
        f.sync_all()
            .map_err(|e| Failure::new(format!("cannot sync {}: {e}", partial.display())))?;
        std::fs::rename(&partial, file).map_err(|e| {
            Failure::new(format!(
                "cannot rename {} to {}: {e}",
                partial.display(),
                file.display()
            ))
        })?;
        // The new name is durable once its directory is synced.
        let parent = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| Failure::new(format!("cannot sync {}: {e}", parent.display())))?;
        Ok(s)
    })();
    match written {
        Ok(s) => {
            let mut out = std::io::stdout();
            writeln!(
                out,
                "backed up {} to {}: {}",
                db.path().display(),
                file.display(),
                summary(&s)
            )?;
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}
