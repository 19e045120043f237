//! Redo recovery: bring the data file up to the end of the durable log.
//!
//! 1. write again the last segment's bytes past what its durable marks
//!    vouch for (an earlier process whose fsync failed may have left them
//!    in the page cache, clean but never written), then fsync every
//!    retained log segment (checkpoints remove the older ones): what we
//!    are about to replay must not vanish in a later power loss after
//!    pages reflecting it were written (a read-only open writes no pages
//!    and skips this);
//! 2. read records from the control file's redo point; restore each full
//!    page image as it is, and apply each delta to a page whose LSN is
//!    below the record's end LSN (so replay is idempotent and may itself
//!    be interrupted and rerun);
//! 3. a page whose checksum fails (a torn write) is taken as empty; the
//!    first change to it after the redo point is always a full image,
//!    which repairs it; if the next change is a delta instead, or nothing
//!    repairs it, the page is reported as corrupt;
//! 4. stop at the first torn or empty frame of the last segment: that is
//!    the end of the log, cut there by the writer when it resumes.
//!
//! Nothing is undone: transactions without a durable commit record are
//! aborted by the commit log's crash horizon.

use std::path::Path;

use crate::buffer::BufferPool;
use crate::error::{Error, Result};
use crate::ids::{Lsn, PageId, Xid};
use crate::io::Vfs;
use crate::limits::{MTR_PAGES_MAX, PAGE_SIZE};
use crate::page;
use crate::redo::diff::apply;
use crate::redo::record::{ChangeView, Kind, RecordRef};
use crate::store::meta::{self, Field, META};
use crate::wal::reader::LogReader;
use crate::wal::segment;

/// What replay found.
#[derive(Debug, Clone, Copy)]
pub struct Replayed {
    /// End of the valid log.
    pub end: Lsn,
    /// Xids below this may have been used.
    pub next_xid: Xid,
    /// Records applied.
    pub records: u64,
    /// Log bytes read.
    pub bytes: u64,
}

/// Replays the log in `wal_dir` from `redo` onto the pages of `pool`
/// (`read_only`: without syncing the log first; the pool keeps its pages).
pub fn replay(
    vfs: &dyn Vfs,
    wal_dir: &Path,
    redo: Lsn,
    pool: &BufferPool,
    read_only: bool,
) -> Result<Replayed> {
    if !read_only {
        let segments = segment::list(vfs, wal_dir)?;
        if let Some(&last) = segments.last() {
            settle_tail(vfs, wal_dir, last, redo)?;
        }
        for start in segments {
            vfs.open(&segment::path(wal_dir, start), false)?.sync()?;
        }
    }
    pool.set_recovering(true);
    let result = replay_records(vfs, wal_dir, redo, pool);
    pool.set_recovering(false);
    let replayed = result?;
    if let Some(&pid) = pool.take_torn().first() {
        return Err(Error::corruption(
            pool.path(),
            pid.0 as u64 * PAGE_SIZE as u64,
            format!("page {pid} is damaged and the log holds no image to repair it"),
        ));
    }
    Ok(replayed)
}

/// Writes again the log bytes of the last segment that no durable mark
/// vouches for, so the fsync that follows makes them durable. An earlier
/// process whose fsync failed left them in the page cache, marked clean
/// (Linux drops the dirty state of pages whose writeback failed): they
/// read back, so replay would build on them, but no fsync would ever
/// write them, and a later power loss would take them from under commits
/// acknowledged after this open. Each batch ends with a mark naming how
/// far the log was durable before it, so only the bytes past the last
/// mark's claim can be such pages (earlier segments were fsynced before
/// the next began); `last` is the last segment's start.
fn settle_tail(vfs: &dyn Vfs, wal_dir: &Path, last: u64, redo: Lsn) -> Result<()> {
    let mut reader = LogReader::open(vfs, wal_dir, Lsn(last).max(redo))?;
    let mut vouched = Lsn(last).max(redo);
    while let Some(entry) = reader.next_ref()? {
        if entry.record.kind == Kind::DurableMark {
            vouched = vouched.max(Lsn(entry.record.aux));
        }
    }
    let end = reader.end.unwrap_or(vouched);
    let from = vouched.0.max(last);
    if end.0 <= from {
        return Ok(());
    }
    let file = vfs.open(&segment::path(wal_dir, last), false)?;
    let mut bytes = vec![0u8; (end.0 - from) as usize];
    file.read_at(&mut bytes, from - last)?;
    file.write_at(&bytes, from - last)
}

/// Xids (and high-water marks) recovery accepts from the log.
const XID_LIMIT: u64 = 1 << 63;

fn replay_records(vfs: &dyn Vfs, wal_dir: &Path, redo: Lsn, pool: &BufferPool) -> Result<Replayed> {
    let mut reader = LogReader::open(vfs, wal_dir, redo)?;
    let mut out = Replayed {
        end: redo,
        next_xid: Xid::FIRST,
        records: 0,
        bytes: 0,
    };
    // The data file only grows during replay (pages written out as the
    // cache evicts them): its length is asked again only when a record
    // names a page past what it last was.
    let mut file_pages = pool.file_pages()?;
    while let Some(entry) = reader.next_ref()? {
        out.records += 1;
        out.bytes += entry.end.0 - entry.start.0;
        let rec = &entry.record;
        // No database hands out 2^63 xids: one past them is damage a
        // checksum happened to pass, not a transaction to continue after.
        let high = match rec.kind {
            Kind::XidHighWater => rec.aux.max(rec.xid.0.saturating_add(1)),
            _ => rec.xid.0.saturating_add(1),
        };
        if high > XID_LIMIT {
            return Err(Error::corruption(
                pool.path(),
                0,
                format!(
                    "log record at LSN {} carries xid {} or high water {}, past 2^63",
                    entry.start, rec.xid, rec.aux
                ),
            ));
        }
        if rec.kind == Kind::XidHighWater {
            out.next_xid = out.next_xid.max(Xid(rec.aux));
        }
        if rec.xid != Xid::NONE {
            out.next_xid = out.next_xid.max(Xid(high));
        }
        apply_record(pool, rec, entry.start, entry.end, &mut file_pages)?;
    }
    out.end = reader.end.unwrap_or(out.end);
    Ok(out)
}

fn apply_record(
    pool: &BufferPool,
    rec: &RecordRef<'_>,
    start: Lsn,
    end: Lsn,
    file_pages: &mut u64,
) -> Result<()> {
    // A record may name pages up to the meta page's count (or the file's
    // length) plus what it allocates itself; anything further is damage
    // (and replaying it would grow the data file without bound).
    let count = {
        let meta = pool.fetch(META)?;
        let page = meta.read();
        meta::get(&page, Field::PageCount) as u64
    };
    let mut limit = count.max(*file_pages) + MTR_PAGES_MAX as u64;
    for (pid, change) in rec.changes() {
        if pid.0 as u64 >= limit {
            *file_pages = pool.file_pages()?;
            limit = count.max(*file_pages) + MTR_PAGES_MAX as u64;
        }
        if pid.0 as u64 >= limit {
            return Err(Error::corruption(
                pool.path(),
                0,
                format!("log record at LSN {start} names page {pid}, beyond the {limit} pages that can exist"),
            ));
        }
        apply_change(pool, pid, &change, start, end)?;
    }
    Ok(())
}

fn apply_change(
    pool: &BufferPool,
    pid: PageId,
    change: &ChangeView<'_>,
    start: Lsn,
    end: Lsn,
) -> Result<()> {
    if pid.0 == u32::MAX {
        return Err(Error::corruption(
            pool.path(),
            0,
            format!("log record at LSN {start} names page {pid}"),
        ));
    }
    // A full image is restored whatever the page held, without reading it
    // (PostgreSQL restores its full-page images the same way): every later
    // change to the page is further on in the log, and is applied over the
    // image in turn. Nearly every page a log touches starts with one, so
    // this spares recovery a read of each.
    let full = matches!(change, ChangeView::Full { .. });
    let pinned = if full {
        pool.repaired(pid);
        pool.fetch_new(pid)?
    } else {
        pool.fetch(pid)?
    };
    let mut g = pinned.write_guard();
    if !full {
        if page::lsn(&g) >= end {
            return Ok(());
        }
        if pool.is_torn(pid) {
            return Err(Error::corruption(
                pool.path(),
                pid.0 as u64 * PAGE_SIZE as u64,
                format!(
                    "page {pid} is torn and the log record at LSN {start} carries no full image"
                ),
            ));
        }
    }
    apply(&mut g, change);
    page::set_lsn(&mut g, end);
    drop(g);
    pinned.mark_dirty();
    Ok(())
}
