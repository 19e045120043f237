//! `import`: a database built from a snapshot stream, beside its target
//! and renamed into place once complete (the module's essay).

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{Record, StreamReader};
use super::SnapshotStats;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::ids::Xid;
use crate::io::{RealFs, Vfs};
use crate::limits::{IMPORT_BATCH_BYTES, IMPORT_BATCH_ROWS};
use crate::mvcc::commit_ts;
use crate::options::{Durability, Isolation, Options};
use crate::redo::record::{Kind, Op};
use crate::txn::Transaction;
use crate::{Db, Table};

/// Builds a database in `dir` (missing or an empty directory; anything
/// else is `Error::TargetNotEmpty`, a symbolic link `Error::Unsupported`)
/// from the snapshot stream `r` that [`Db::export`] wrote, atomically:
/// until it returns `Ok`, `dir` holds no database, whatever happens. `opts`
/// are the options it is built with (its durability is `Eventual` while
/// loading: the build is synced once, at the end). Prepared transactions
/// come back in doubt, under their gids, at the prepare timestamps the
/// stream carries (`Transaction::prepare_applying`). Damage in the stream is
/// `Error::Corruption` naming "stream" and the byte offset.
///
/// The new database is closed when this returns; open it with `Db::open`.
pub fn import(r: &mut impl Read, dir: impl AsRef<Path>, opts: Options) -> Result<SnapshotStats> {
    import_vfs(Arc::new(RealFs), r, Path::new("stream"), dir.as_ref(), opts)
}

/// [`import`] from the file `file`, which its errors name.
pub fn import_file(
    file: impl AsRef<Path>,
    dir: impl AsRef<Path>,
    opts: Options,
) -> Result<SnapshotStats> {
    let file = file.as_ref();
    let f = std::fs::File::open(file).map_err(|e| Error::io("open snapshot stream", file, e))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    import_vfs(Arc::new(RealFs), &mut r, file, dir.as_ref(), opts)
}

/// `import` through `vfs`, naming the stream `name` in its errors (for
/// crash tests: `strata::internals::import_vfs`).
pub fn import_vfs(
    vfs: Arc<dyn Vfs>,
    r: &mut impl Read,
    name: &Path,
    dir: &Path,
    opts: Options,
) -> Result<SnapshotStats> {
    // Every error names its operation and path.
    let vfs: Arc<dyn Vfs> = Arc::new(crate::io::Named(vfs));
    check_target(&*vfs, dir)?;
    let tmp = build_dir(dir)?;
    if vfs.exists(&tmp)? {
        return Err(Error::NotEmpty {
            path: tmp,
            found: "an interrupted or concurrent import: remove it once no import runs".into(),
        });
    }
    // Directories this import makes are names in their parents, synced
    // with the rest before the rename.
    let parent = parent_of(dir);
    let mut made: Vec<PathBuf> = Vec::new();
    for a in parent.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        if vfs.exists(a)? {
            break;
        }
        made.push(a.to_path_buf());
    }
    if !made.is_empty() {
        vfs.create_dir_all(&parent)?;
    }
    // Exclusively: a concurrent import into the same target fails here
    // rather than build in (and then remove) this one's directory.
    if let Err(e) = vfs.create_dir(&tmp) {
        if e.io_kind() == Some(std::io::ErrorKind::AlreadyExists) {
            return Err(Error::NotEmpty {
                path: tmp,
                found: "a concurrent import: try again once it ends".into(),
            });
        }
        return Err(e);
    }
    // From here every error removes the build directory (best effort):
    // what is left is not a database at `dir`, and would block the next
    // import.
    match build_and_rename(&vfs, r, name, dir, &tmp, &made, opts) {
        Ok(stats) => Ok(stats),
        Err(e) => {
            let _ = remove_tree(&*vfs, &tmp);
            let _ = vfs.sync_dir(&parent);
            Err(e)
        }
    }
}

/// Builds in `tmp/db`, syncs it, renames it to `dir` and removes `tmp`.
fn build_and_rename(
    vfs: &Arc<dyn Vfs>,
    r: &mut impl Read,
    name: &Path,
    dir: &Path,
    tmp: &Path,
    made: &[PathBuf],
    opts: Options,
) -> Result<SnapshotStats> {
    let parent = parent_of(dir);
    for a in made {
        vfs.sync_dir(&parent_of(a))?;
    }
    let build = tmp.join("db");
    let stats = build_in(vfs.clone(), r, name, &build, opts)?;
    vfs.sync_dir(&build.join(crate::dir::WAL_DIR))?;
    vfs.sync_dir(&build)?;
    vfs.sync_dir(tmp)?;
    vfs.rename(&build, dir)?;
    if let Err(e) = vfs.sync_dir(&parent) {
        // Not known durable: taken back out of place (best effort), so an
        // error leaves no database at `dir`.
        let _ = vfs.rename(dir, &build);
        return Err(e);
    }
    // The database is in place: a failure to tidy is not the import's.
    if vfs.remove_dir(tmp).is_ok() {
        let _ = vfs.sync_dir(&parent);
    }
    Ok(stats)
}

/// `dir` must be missing or an empty directory, and not a symbolic link
/// (the rename would replace the link, not fill the directory it names).
fn check_target(vfs: &dyn Vfs, dir: &Path) -> Result<()> {
    if vfs.is_symlink(dir)? {
        return Err(Error::Unsupported(
            "an import target that is a symbolic link: name the directory it points to",
        ));
    }
    if !vfs.exists(dir)? {
        return Ok(());
    }
    let found = vfs.list(dir)?;
    if found.is_empty() {
        return Ok(());
    }
    let leaf = |p: &PathBuf| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let database = found
        .iter()
        .any(|p| crate::dir::DATABASE.contains(&leaf(p).as_str()));
    let names: Vec<String> = found.iter().take(3).map(leaf).collect();
    Err(Error::TargetNotEmpty {
        path: dir.to_path_buf(),
        database,
        found: names.join(", "),
    })
}

fn parent_of(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `.<name>.import` beside `dir`.
fn build_dir(dir: &Path) -> Result<PathBuf> {
    let Some(leaf) = dir.file_name() else {
        return Err(Error::Unsupported(
            "an import target path must end in a name",
        ));
    };
    let mut n = std::ffi::OsString::from(".");
    n.push(leaf);
    n.push(".import");
    Ok(parent_of(dir).join(n))
}

/// Removes `p` and everything under it.
fn remove_tree(vfs: &dyn Vfs, p: &Path) -> Result<()> {
    for child in vfs.list(p)? {
        // A directory with entries first empties; an empty one (which a
        // file removal refuses) is removed as a tree of none.
        if vfs.list(&child).is_ok_and(|c| !c.is_empty()) || vfs.remove(&child).is_err() {
            remove_tree(vfs, &child)?;
        }
    }
    vfs.remove_dir(p)
}

/// Loads the stream into a new database at `build`, then checkpoints and
/// closes it.
fn build_in(
    vfs: Arc<dyn Vfs>,
    r: &mut impl Read,
    name: &Path,
    build: &Path,
    opts: Options,
) -> Result<SnapshotStats> {
    let (mut s, header) = StreamReader::new(r, name)?;
    let db = Db::open_vfs(
        vfs,
        build,
        opts.durability(Durability::Eventual).create(true),
    )?;
    // The high water first: every commit here is stamped above the
    // stream's newest timestamp, whatever this machine's clock says (the
    // re-prepares take their carried timestamps, at or below it).
    raise_high_water(&db, header.newest_ts)?;
    let mut load = Loader::new(&db);
    while let Some(rec) = s.next()? {
        load.record(rec)?;
    }
    let counts = load.finish()?;
    if header.applied_index > 0 {
        db.set_applied_index(header.applied_index)?;
    }
    db.checkpoint()?;
    db.close()?;
    Ok(SnapshotStats {
        applied_index: header.applied_index,
        newest_ts: header.newest_ts,
        range: header.range,
        tables: counts.0,
        rows: counts.1,
        prepared: counts.2,
        writes: counts.3,
        bytes: s.offset(),
    })
}

/// Raises the high-water mark to `ts` (if below) in a record of its own,
/// synced: no later commit or prepare here takes a timestamp at or below
/// it.
fn raise_high_water(db: &Db, ts: Timestamp) -> Result<()> {
    let core = db.core();
    let lsn = {
        let mut w = core.engine.store().write();
        if !commit_ts::serve(&mut w.mtr, ts)? {
            return Ok(());
        }
        w.commit(Kind::Pages, Op::Timestamp as u8, Xid::NONE)?
    };
    if let Some(lsn) = lsn {
        core.engine.store().wal.flush(lsn, true)?;
    }
    Ok(())
}

/// Rows into batched transactions; prepared transactions re-prepared.
struct Loader<'d> {
    db: &'d Db,
    table: Option<Table>,
    tx: Option<Transaction>,
    batch_rows: usize,
    batch_bytes: usize,
    /// The prepared transaction being rebuilt: gid, writes still to come,
    /// its prepare timestamp and time in the exporting database.
    prepared: Option<(String, u32, Timestamp, u64)>,
    /// Tables, rows, prepared transactions, writes.
    counts: (u64, u64, u64, u64),
}

impl<'d> Loader<'d> {
    fn new(db: &'d Db) -> Self {
        Loader {
            db,
            table: None,
            tx: None,
            batch_rows: 0,
            batch_bytes: 0,
            prepared: None,
            counts: (0, 0, 0, 0),
        }
    }

    fn tx(&mut self) -> Result<&mut Transaction> {
        match &mut self.tx {
            Some(tx) => Ok(tx),
            slot => Ok(slot.insert(self.db.begin_with(Isolation::Snapshot)?)),
        }
    }

    fn commit_batch(&mut self) -> Result<()> {
        if let Some(tx) = self.tx.take() {
            tx.commit()?;
        }
        self.batch_rows = 0;
        self.batch_bytes = 0;
        Ok(())
    }

    fn record(&mut self, rec: Record) -> Result<()> {
        match rec {
            Record::Table(name) => {
                self.counts.0 += 1;
                let t = self.db.table(&name)?;
                self.tx()?.create_table(&t)?;
                self.table = Some(t);
            }
            Record::Row(k, v) => {
                self.counts.1 += 1;
                let Some(t) = self.table.clone() else {
                    return Err(Error::Unsupported("a row before any table"));
                };
                self.batch_rows += 1;
                self.batch_bytes += k.len() + v.len();
                self.tx()?.put(&t, &k, &v)?;
                if self.batch_rows >= IMPORT_BATCH_ROWS || self.batch_bytes >= IMPORT_BATCH_BYTES {
                    self.commit_batch()?;
                }
            }
            Record::Prepared {
                gid,
                writes,
                prepare_ts,
                prepared_at_us,
            } => {
                self.counts.2 += 1;
                self.end_prepared()?;
                self.commit_batch()?;
                self.prepared = Some((gid, writes, prepare_ts, prepared_at_us));
                self.end_prepared_if_done()?;
            }
            Record::Write(table, k, v) => {
                self.counts.3 += 1;
                let t = self.db.table(&table)?;
                let tx = self.tx()?;
                match v {
                    Some(v) => tx.put(&t, &k, &v)?,
                    None => {
                        tx.delete(&t, &k)?;
                    }
                }
                if let Some((_, n, ..)) = &mut self.prepared {
                    *n = n.saturating_sub(1);
                }
                self.end_prepared_if_done()?;
            }
        }
        Ok(())
    }

    fn end_prepared_if_done(&mut self) -> Result<()> {
        if matches!(self.prepared, Some((_, 0, ..))) {
            self.end_prepared()?;
        }
        Ok(())
    }

    /// Prepares the transaction being rebuilt under its gid.
    fn end_prepared(&mut self) -> Result<()> {
        if let Some((gid, _, was, at_us)) = self.prepared.take() {
            let tx = match self.tx.take() {
                Some(tx) => tx,
                None => self.db.begin_with(Isolation::Snapshot)?,
            };
            // At its carried prepare timestamp, as a replica applies one:
            // no clock read, not refused by the mark raised above it. A
            // stream with none (ZERO) gets one from the clock.
            let now = if was == Timestamp::ZERO {
                tx.prepare(&gid)?
            } else {
                tx.prepare_applying(&gid, was)?
            };
            tracing::info!(
                target: "strata::snapshot",
                gid = gid.as_str(),
                prepare_ts = %now,
                exported_prepared_at_us = at_us,
                "prepared transaction re-prepared in doubt"
            );
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(u64, u64, u64, u64)> {
        self.end_prepared()?;
        self.commit_batch()?;
        Ok(self.counts)
    }
}
