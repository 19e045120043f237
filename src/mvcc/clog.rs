//! The commit log: two bits per xid.
//!
//! In memory, chunks of the same bits (one per commit-log page) answer
//! status questions for the visibility function. On disk, the same bits live in `Clog` pages listed by a chain
//! of `ClogDir` pages (headed from the meta page); a commit is the
//! mini-transaction that sets its xid's bits, so the commit record *is*
//! the commit-log change, replayed like any other page change.
//!
//! ```text
//!  clog page:  24: bits, 2 per xid, xid = page index * XIDS_PER_PAGE + i
//!  dir page:   24: count u32 | 28: next dir u32 | 32: clog page ids u32 * count (0: none yet)
//!  bits: 00 no outcome recorded, 01 committed, 10 aborted
//! ```
//! Aborts are not logged: an xid below the crash horizon (the first xid
//! handed out after the last restart) with no recorded outcome is aborted.

use std::cell::Cell;

use crate::hash::IntMap;

use crate::sync::{AtomicU64, Ordering, RwLock};

use super::snapshot::{Status, StatusOf};
use crate::buffer::mtr::{Mtr, PageAccess};
use crate::codec::{put_u32, u32_at};
use crate::error::{Error, Result};
use crate::ids::{PageId, Xid};
use crate::limits::PAGE_SIZE;
use crate::page::{self, PageType, HDR};
use crate::store::meta::{self, Field, META};

/// Xids covered by one commit-log page.
pub const XIDS_PER_PAGE: u64 = ((PAGE_SIZE - HDR) * 4) as u64;
const DIR_COUNT: usize = HDR;
const DIR_NEXT: usize = HDR + 4;
const DIR_ENTRIES: usize = HDR + 8;
const DIR_MAX: usize = (PAGE_SIZE - DIR_ENTRIES) / 4;
const COMMITTED: u8 = 1;
const ABORTED: u8 = 2;

/// Bytes of commit-log bits per page (and per in-memory chunk).
const CHUNK: usize = PAGE_SIZE - HDR;

/// Loaded commit-log pages: (page index, its bits).
pub type Chunks = Vec<(u64, Box<[u8]>)>;

/// In-memory commit statuses: one chunk of bits per commit-log page that
/// exists, so memory follows the xids actually used, whatever numbers
/// damaged input might claim.
pub struct Clog {
    /// Tells this commit log's entries in a thread's `LAST` apart from
    /// another database's, and from its own before `keep_in_doubt`.
    id: AtomicU64,
    chunks: RwLock<IntMap<u64, Box<[u8]>>>,
    crash_horizon: Xid,
    /// Prepared transactions found at open: below the horizon, yet still
    /// in progress until `commit_prepared` or `rollback_prepared`.
    in_doubt: RwLock<std::collections::BTreeSet<Xid>>,
}

fn locate(xid: Xid) -> (u64, usize, u64) {
    let k = xid.0 / XIDS_PER_PAGE;
    let bit = xid.0 % XIDS_PER_PAGE;
    (k, (bit / 4) as usize, (bit % 4) * 2)
}

impl Clog {
    /// Statuses loaded from disk; xids below `crash_horizon` without an
    /// outcome count as aborted.
    pub fn new(chunks: Chunks, crash_horizon: Xid) -> Clog {
        Clog {
            id: AtomicU64::new(fresh_id()),
            chunks: RwLock::new(chunks.into_iter().collect()),
            crash_horizon,
            in_doubt: RwLock::new(Default::default()),
        }
    }

    /// Keeps `xid`, a prepared transaction that survived a restart, in
    /// progress although it is below the crash horizon.
    pub fn keep_in_doubt(&self, xid: Xid) {
        self.in_doubt.write().insert(xid);
        // Open calls this before any reader runs; a fresh id still makes
        // sure no thread answers "aborted" for `xid` from `LAST`.
        self.id.store(fresh_id(), Ordering::Release);
    }

    /// Records an outcome.
    pub fn set(&self, xid: Xid, st: Status) {
        let v = match st {
            Status::Committed => COMMITTED,
            Status::Aborted => ABORTED,
            Status::InProgress => 0,
        };
        let (k, byte, shift) = locate(xid);
        let mut chunks = self.chunks.write();
        let c = chunks
            .entry(k)
            .or_insert_with(|| vec![0u8; CHUNK].into_boxed_slice());
        c[byte] = (c[byte] & !(3 << shift)) | (v << shift);
        drop(chunks);
        if st != Status::InProgress && xid < self.crash_horizon {
            self.in_doubt.write().remove(&xid);
        }
    }

    /// The status as the chunk table has it (`status` asks `LAST` first).
    fn lookup(&self, xid: Xid) -> Status {
        let (k, byte, shift) = locate(xid);
        let v = self
            .chunks
            .read()
            .get(&k)
            .map_or(0, |c| (c[byte] >> shift) & 3);
        match v {
            COMMITTED => Status::Committed,
            ABORTED => Status::Aborted,
            _ if xid < self.crash_horizon && !self.in_doubt.read().contains(&xid) => {
                Status::Aborted
            }
            _ => Status::InProgress,
        }
    }
}

thread_local! {
    /// The last final status this thread looked up: (commit log, xid,
    /// status), as PostgreSQL keeps the last xid it fetched
    /// (`cachedFetchXid`). Rows are mostly read in runs written by one
    /// transaction, and a hit skips the chunk table's lock. Only final
    /// outcomes are kept: an xid in progress may finish any moment, but
    /// committed and aborted never change.
    static LAST: Cell<(u64, Xid, Status)> = const { Cell::new((u64::MAX, Xid::NONE, Status::InProgress)) };
}

/// A commit-log id no other commit log in this process had.
fn fresh_id() -> u64 {
    static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl StatusOf for Clog {
    fn status(&self, xid: Xid) -> Status {
        let id = self.id.load(Ordering::Acquire);
        let last = LAST.with(Cell::get);
        if last.0 == id && last.1 == xid {
            return last.2;
        }
        let st = self.lookup(xid);
        if st != Status::InProgress {
            LAST.with(|l| l.set((id, xid, st)));
        }
        st
    }
}

fn corrupt(acc: &impl PageAccess, pid: PageId, what: &str) -> Error {
    Error::corruption(
        acc.file(),
        pid.0 as u64 * PAGE_SIZE as u64,
        format!("commit log page {pid}: {what}"),
    )
}

fn dir_entry(acc: &mut impl PageAccess, dir: PageId, i: usize) -> Result<(usize, PageId, PageId)> {
    let r = acc.with_page(dir, |p| {
        if page::page_type(p) != Some(PageType::ClogDir) {
            return None;
        }
        let count = u32_at(p, DIR_COUNT)? as usize;
        let next = PageId(u32_at(p, DIR_NEXT)?);
        let entry = if i < count.min(DIR_MAX) {
            PageId(u32_at(p, DIR_ENTRIES + 4 * i)?)
        } else {
            PageId(0)
        };
        Some((count.min(DIR_MAX), entry, next))
    })?;
    r.ok_or_else(|| corrupt(acc, dir, "not a commit-log directory page"))
}

/// Records `xid` as committed in the on-disk commit log, allocating
/// pages as needed.
pub fn set_committed(mtr: &mut Mtr<'_>, xid: Xid) -> Result<()> {
    let k = (xid.0 / XIDS_PER_PAGE) as usize;
    let mut dir = PageId(meta::get(mtr.page(META)?, Field::ClogDir));
    if dir.0 == 0 {
        dir = meta::alloc(mtr, PageType::ClogDir)?;
        meta::set(mtr.page_mut(META)?, Field::ClogDir, dir.0);
    }
    let mut idx = k;
    let mut hops = 0;
    let clog = loop {
        let (count, entry, next) = dir_entry(mtr, dir, idx)?;
        if idx < DIR_MAX {
            if entry.0 != 0 {
                break entry;
            }
            // Entries are sparse: a page is made only for a range of xids
            // in which something committed.
            let fresh = meta::alloc(mtr, PageType::Clog)?;
            let d = mtr.page_mut(dir)?;
            put_u32(d, DIR_ENTRIES + 4 * idx, fresh.0);
            put_u32(d, DIR_COUNT, count.max(idx + 1) as u32);
            break fresh;
        }
        idx -= DIR_MAX;
        hops += 1;
        if hops > 1 << 20 {
            return Err(corrupt(mtr, dir, "directory chain does not end"));
        }
        dir = if next.0 == 0 {
            let n = meta::alloc(mtr, PageType::ClogDir)?;
            put_u32(mtr.page_mut(dir)?, DIR_NEXT, n.0);
            n
        } else {
            next
        };
    };
    let bit = (xid.0 % XIDS_PER_PAGE) as usize;
    if page::page_type(mtr.page(clog)?) != Some(PageType::Clog) {
        return Err(corrupt(mtr, clog, "not a commit-log page"));
    }
    let (byte, shift) = (HDR + bit / 4, (bit % 4) * 2);
    let p = mtr.page_mut_in(clog, &[(byte, byte + 1)])?;
    p[byte] = (p[byte] & !(3 << shift)) | (COMMITTED << shift);
    Ok(())
}

/// Moves the first commit-log or directory page found at or past `limit`
/// to the page `meta::alloc` gives (compaction), repointing the directory
/// entry or link that named it. False if none lies past the limit.
pub fn move_one(mtr: &mut Mtr<'_>, limit: PageId) -> Result<bool> {
    // Where the current directory page is named: the meta page, or the
    // previous directory's `next`.
    let mut named_at: Option<PageId> = None;
    let mut dir = PageId(meta::get(mtr.page(META)?, Field::ClogDir));
    let mut hops = 0;
    while dir.0 != 0 {
        if dir >= limit {
            let new = relocate(mtr, dir, PageType::ClogDir)?;
            match named_at {
                None => meta::set(mtr.page_mut(META)?, Field::ClogDir, new.0),
                Some(prev) => put_u32(mtr.page_mut(prev)?, DIR_NEXT, new.0),
            }
            return Ok(true);
        }
        let (count, _, next) = dir_entry(mtr, dir, 0)?;
        for i in 0..count {
            let (_, entry, _) = dir_entry(mtr, dir, i)?;
            if entry >= limit {
                let new = relocate(mtr, entry, PageType::Clog)?;
                put_u32(mtr.page_mut(dir)?, DIR_ENTRIES + 4 * i, new.0);
                return Ok(true);
            }
        }
        hops += 1;
        if hops > 1 << 20 {
            return Err(corrupt(mtr, dir, "directory chain does not end"));
        }
        named_at = Some(dir);
        dir = next;
    }
    Ok(false)
}

/// Checks `old` is of type `ty` and relocates it.
fn relocate(mtr: &mut Mtr<'_>, old: PageId, ty: PageType) -> Result<PageId> {
    if page::page_type(mtr.page(old)?) != Some(ty) {
        return Err(corrupt(mtr, old, "not a commit-log page"));
    }
    meta::relocate(mtr, old, ty)
}

/// Reads every commit-log page. Directory `d`'s entry `i` covers
/// commit-log page `d * DIR_MAX + i`; a directory may be partly filled when
/// xids were skipped. Entries for xids at or above `next_xid` cannot exist
/// and are corruption.
pub fn load(acc: &mut impl PageAccess, first_dir: PageId, next_xid: Xid) -> Result<Chunks> {
    let max_pages = (next_xid.0 / XIDS_PER_PAGE) as usize + 1;
    let mut chunks = Vec::new();
    let mut dir = first_dir;
    let mut d = 0usize;
    while dir.0 != 0 {
        let (count, _, next) = dir_entry(acc, dir, 0)?;
        for i in 0..count {
            let (_, pid, _) = dir_entry(acc, dir, i)?;
            if pid.0 == 0 {
                continue;
            }
            if d * DIR_MAX + i >= max_pages {
                return Err(corrupt(
                    acc,
                    dir,
                    "commit-log page for xids never handed out",
                ));
            }
            let chunk = acc.with_page(pid, |p| {
                (page::page_type(p) == Some(PageType::Clog)).then(|| p[HDR..].into())
            })?;
            let chunk = chunk.ok_or_else(|| corrupt(acc, pid, "not a commit-log page"))?;
            chunks.push(((d * DIR_MAX + i) as u64, chunk));
        }
        dir = next;
        d += 1;
        if d * DIR_MAX > max_pages + DIR_MAX {
            return Err(corrupt(acc, dir, "directory chain does not end"));
        }
    }
    Ok(chunks)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The one-entry cache answers only for its own commit log, never
    /// keeps an xid in progress, and forgets an xid `keep_in_doubt`
    /// turns back to in progress.
    #[test]
    fn the_last_status_cache_never_answers_wrongly() {
        let a = Clog::new(Vec::new(), Xid(10));
        let b = Clog::new(Vec::new(), Xid(0));
        a.set(Xid(20), Status::Committed);
        assert_eq!(a.status(Xid(20)), Status::Committed);
        assert_eq!(b.status(Xid(20)), Status::InProgress, "another database");
        assert_eq!(a.status(Xid(21)), Status::InProgress);
        a.set(Xid(21), Status::Aborted);
        assert_eq!(
            a.status(Xid(21)),
            Status::Aborted,
            "in progress is not kept"
        );
        assert_eq!(a.status(Xid(5)), Status::Aborted, "below the crash horizon");
        a.keep_in_doubt(Xid(5));
        assert_eq!(a.status(Xid(5)), Status::InProgress, "prepared, in doubt");
        a.set(Xid(5), Status::Committed);
        assert_eq!(a.status(Xid(5)), Status::Committed);
    }
}
