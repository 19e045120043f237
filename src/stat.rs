//! `Db::stats`: what a database holds and how much of it is dead, for
//! inspection tools (`strata stat`) and for deciding when to vacuum.
//!
//! The figures come from one walk over every table's index and version
//! chains (so they cost a full read of the tables), a walk of the free
//! list, and the log directory's listing. A version counts as dead when
//! vacuum would remove it now: the same views and the same test vacuum
//! uses (`vacuum::gather`, `vacuum::needed`), so the two never disagree.
//! Rows are keys whose newest committed version is live for a snapshot
//! taken at the start of the walk.

use std::collections::HashSet;

use crate::btree;
use crate::buffer::mtr::PageAccess;
use crate::catalog;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::heap;
use crate::ids::{Lsn, PageId, Xid};
use crate::limits::{PAGE_SIZE, VACUUM_BATCH};
use crate::maintenance::vacuum;
use crate::mvcc::chain::{self, Cursor};
use crate::mvcc::{visible, Seen};
use crate::store::freemap;
use crate::store::meta::{self, Field, FORMAT_VERSION};
use crate::store::Store;
use crate::txn::prepare::PreparedTransaction;
use crate::txn::Core;
use crate::wal::segment;

/// Versions of one chain judged together (bounds memory on long chains).
const WINDOW: usize = 1024;

/// Figures about one open database (`Db::stats`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Stats {
    /// On-disk format version (FORMAT.md).
    pub format_version: u32,
    /// Bytes per page.
    pub page_size: usize,
    /// Length of the data file.
    pub data_file_bytes: u64,
    /// Pages allocated in the data file (the meta page's count).
    pub pages: u64,
    /// Free pages, waiting for reuse.
    pub free_pages: u64,
    /// Heap pages holding the tables' versions.
    pub heap_pages: u64,
    /// Unused bytes inside those heap pages.
    pub heap_free_bytes: u64,
    /// Log segment files.
    pub wal_segments: u64,
    /// Bytes in them.
    pub wal_bytes: u64,
    /// First LSN the log still holds.
    pub wal_start: Lsn,
    /// LSN just past the last record.
    pub wal_end: Lsn,
    /// Redo point of the last checkpoint: recovery replays from here.
    pub checkpoint_redo: Lsn,
    /// Next transaction id to be handed out.
    pub next_xid: Xid,
    /// Transactions holding an xid that have not finished: writers under
    /// way and prepared transactions waiting for a decision. Every snapshot
    /// lists them as in progress.
    pub running_xids: u64,
    /// The highest timestamp this database has assigned a commit or
    /// served a read as of a timestamp at (`ZERO`: none yet); every later
    /// commit takes one above it.
    pub newest_ts: Timestamp,
    /// The history horizon: reads as of a timestamp below it fail with
    /// `SnapshotTooOld` (`Options::history_retention`).
    pub history_horizon: Timestamp,
    /// Every table, in name order.
    pub tables: Vec<TableStats>,
    /// Prepared transactions waiting for a decision.
    pub prepared: Vec<PreparedTransaction>,
    /// Page cache size in bytes.
    pub cache_bytes: usize,
    /// Pages read from the data file since the database was opened: the
    /// page cache's misses. Many of them per operation mean the working
    /// set outgrew `cache_size`. Taken before this call's own walk.
    pub page_reads: u64,
    /// Pages written to the data file since the database was opened.
    pub page_writes: u64,
    /// Whether the database was opened read-only.
    pub read_only: bool,
    /// Damage met while collecting (each an `Error::Corruption` naming
    /// file and offset), in the order met: a damaged table's walk stops at
    /// its first damaged page (its figures count what was read before, and
    /// its `TableStats::damage` names the page), damage to the free map
    /// leaves `free_pages` 0, and damage to the catalog leaves `tables`
    /// empty. Empty for a sound database; `Db::check_integrity` checks
    /// everything.
    pub damage: Vec<Error>,
}

/// Figures about one table.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct TableStats {
    /// Its name.
    pub name: String,
    /// Keys with a live newest version.
    pub rows: u64,
    /// Index entries (keys with any version, live or not).
    pub keys: u64,
    /// Tuple versions in all chains.
    pub versions: u64,
    /// Versions vacuum would remove now.
    pub dead_versions: u64,
    /// The damage that stopped the walk of this table, if any: the figures
    /// above count only what was read before it.
    pub damage: Option<Error>,
}

impl Stats {
    /// Share of all versions that are dead (0 for an empty database).
    pub fn dead_share(&self) -> f64 {
        let all: u64 = self.tables.iter().map(|t| t.versions).sum();
        let dead: u64 = self.tables.iter().map(|t| t.dead_versions).sum();
        if all == 0 {
            0.0
        } else {
            dead as f64 / all as f64
        }
    }
}

/// A registered snapshot, let go when dropped.
struct Registered<'a>(&'a crate::mvcc::manager::TxnManager, u64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.finish(
            self.1,
            crate::ids::Xid::NONE,
            crate::mvcc::Status::Committed,
        );
    }
}

pub(crate) fn collect(inner: &Core) -> Result<Stats> {
    let store = inner.engine.store();
    let (page_reads, page_writes) = store.pool.io_counts();
    let mut damage = Vec::new();
    let (pages, free_pages) = page_counts(store, &mut damage)?;
    let (tables, heap) = walk_tables(inner, &mut damage)?;
    let wal = wal_figures(inner)?;
    Ok(Stats {
        format_version: FORMAT_VERSION,
        page_size: PAGE_SIZE,
        data_file_bytes: store.pool.file_pages()? * PAGE_SIZE as u64,
        pages,
        free_pages,
        heap_pages: heap.pages,
        heap_free_bytes: heap.free_bytes,
        wal_segments: wal.segments,
        wal_bytes: wal.bytes,
        wal_start: wal.start,
        wal_end: store.wal.end(),
        checkpoint_redo: store.redo(),
        next_xid: inner.txns.manager().high_water(),
        running_xids: inner.txns.manager().running() as u64,
        newest_ts: crate::mvcc::commit_ts::high_water(&mut store.read().view)?,
        history_horizon: inner.txns.history().horizon(),
        tables,
        prepared: inner.txns.prepared().list(),
        cache_bytes: store.pool.capacity_bytes(),
        page_reads,
        page_writes,
        read_only: inner.engine.opts().read_only,
        damage,
    })
}

/// The data file's pages and how many of them are free (none counted if
/// the free map is damaged: see `kept`).
fn page_counts(store: &Store, damage: &mut Vec<Error>) -> Result<(u64, u64)> {
    let mut r = store.read();
    let m = crate::store::meta::read(&mut r.view)?;
    let count = meta::get(&m, Field::PageCount);
    let free = freemap::count_free(&mut r.view, count);
    let free = kept(free, damage)?.unwrap_or(0);
    // The free map is counted only up to the page count, whatever it holds.
    assert!(free <= u64::from(count), "{free} free of {count} pages");
    Ok((count as u64, free))
}

/// The heap pages the tables' chains lie on, counted once each.
#[derive(Default)]
struct HeapFigures {
    pages: u64,
    free_bytes: u64,
}

/// Each table's figures, and the heap's over all of them.
fn walk_tables(inner: &Core, damage: &mut Vec<Error>) -> Result<(Vec<TableStats>, HeapFigures)> {
    let store = inner.engine.store();
    let mut heap_pages = HashSet::new();
    let mut heap_free_bytes = 0u64;
    let mut tables = Vec::new();
    // The tables that exist now, under a snapshot registered for vacuum
    // while they are walked: a table dropped meanwhile keeps its pages.
    let manager = inner.txns.manager();
    let (token, snap) = manager.begin_new(false);
    let _registered = Registered(manager, token);
    manager.read_only(token);
    let list = catalog::list(&mut store.read().view, inner.catalog, &snap, manager.clog());
    for (name, root) in kept(list, damage)?.unwrap_or_default() {
        let mut t = TableStats {
            name,
            ..TableStats::default()
        };
        let walked = walk_table(inner, root, &mut t, &mut |pid, free| {
            if heap_pages.insert(pid) {
                heap_free_bytes += free as u64;
            }
        });
        if let Err(e @ Error::Corruption { .. }) = &walked {
            t.damage = Some(e.clone());
        }
        kept(walked, damage)?;
        tables.push(t);
    }
    let heap = HeapFigures {
        pages: heap_pages.len() as u64,
        free_bytes: heap_free_bytes,
    };
    Ok((tables, heap))
}

/// The log's segments: how many, their bytes, and the first one's start.
struct WalFigures {
    segments: u64,
    bytes: u64,
    start: Lsn,
}

/// The log's figures, from its segment files' sizes.
fn wal_figures(inner: &Core) -> Result<WalFigures> {
    let wal_dir = inner.engine.dir().join(crate::dir::WAL_DIR);
    let starts = segment::list(inner.engine.vfs(), &wal_dir)?;
    let mut bytes = 0;
    for &s in &starts {
        bytes += inner
            .engine
            .vfs()
            .open_read(&segment::path(&wal_dir, s))?
            .len()?;
    }
    Ok(WalFigures {
        segments: starts.len() as u64,
        bytes,
        start: Lsn(starts.first().copied().unwrap_or(0)),
    })
}

/// `r`'s value; damage (`Error::Corruption`) is added to `damage` and
/// gives `None`, so the figures it hides are left out and the rest still
/// collected; other errors pass.
fn kept<T>(r: Result<T>, damage: &mut Vec<Error>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e @ Error::Corruption { .. }) => {
            damage.push(e);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Counts one table's keys, rows and versions, a batch of keys per read
/// latch; reports each heap page visited with its free space.
fn walk_table(
    inner: &Core,
    root: PageId,
    t: &mut TableStats,
    heap_page: &mut dyn FnMut(PageId, usize),
) -> Result<()> {
    let views = vacuum::gather_for_pass(inner);
    let clog = inner.txns.manager().clog();
    let mut keys = btree::Batches::new(root);
    loop {
        // Chains are read under the same latch as their index entries.
        let mut r = inner.engine.store().read();
        let batch = keys.next(&mut r.view, VACUUM_BATCH)?;
        if batch.is_empty() {
            return Ok(());
        }
        for (_, entry) in &batch {
            t.keys += 1;
            let mut c = Cursor::new(chain::head(&r.view, entry)?);
            let mut window = Vec::new();
            let mut row_decided = false;
            loop {
                let at = c.at();
                if !at.is_null() {
                    let free = r.view.with_page(at.page, heap::page::free_space)?;
                    heap_page(at.page, free);
                }
                let Some(v) = c.next(&mut r.view)? else {
                    break;
                };
                t.versions += 1;
                if !row_decided {
                    match visible(v.xmin, v.xmax, &views.now, Xid::NONE, clog) {
                        Seen::Visible => {
                            t.rows += 1;
                            row_decided = true;
                        }
                        Seen::Deleted => row_decided = true,
                        Seen::Invisible => {}
                    }
                }
                window.push(v);
                if window.len() == WINDOW {
                    t.dead_versions += dead(&mut r.view, &window, &views, clog)?;
                    window.clear();
                }
            }
            t.dead_versions += dead(&mut r.view, &window, &views, clog)?;
        }
    }
}

fn dead(
    acc: &mut impl crate::buffer::mtr::PageAccess,
    window: &[chain::Version],
    views: &vacuum::Views,
    clog: &crate::mvcc::clog::Clog,
) -> Result<u64> {
    Ok(vacuum::needed(acc, window, views, clog)?
        .iter()
        .filter(|&&n| !n)
        .count() as u64)
}
