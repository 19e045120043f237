//! Page 0: the roots and counters of the data file, and page allocation.
//!
//! ```text
//!  24        32        36         40           44          48             52             56              60
//!  | magic 8 | version | page size | page count | free hint | catalog root | clog dir head | next table id | prepared root |
//!  64               68                         76                    84                    92
//!  | commit-ts root | commit-ts high water u64 | history horizon u64 | applied index u64 |
//! ```
//! `page count` is the high-water mark: pages [0, count) exist. Which of
//! them are free the free map says (`freemap`); no page below `free hint`
//! is free. Every change to this page goes through a mini-transaction, so
//! allocation is logged with the operation that needed the page.

use super::freemap;
use crate::buffer::mtr::{Mtr, PageAccess};
use crate::codec::{put_u32, u32_at};
use crate::error::{Error, Result};
use crate::ids::PageId;
use crate::limits::PAGE_SIZE;
use crate::page::{self, PageBuf, PageType, HDR};

/// The meta page's id.
pub const META: PageId = PageId(0);

/// A copy of the meta page.
pub fn read(acc: &mut impl PageAccess) -> Result<Box<PageBuf>> {
    acc.with_page(META, |p| Box::new(*p))
}
/// Magic bytes identifying a strata data file.
pub const MAGIC: &[u8; 8] = b"STRATADB";
/// Version of the on-disk format described in FORMAT.md.
pub const FORMAT_VERSION: u32 = 13;

const VERSION: usize = HDR + 8;
const PAGE_SIZE_AT: usize = HDR + 12;
const PAGE_COUNT: usize = HDR + 16;
const FREE_HINT: usize = HDR + 20;
const CATALOG_ROOT: usize = HDR + 24;
const CLOG_DIR: usize = HDR + 28;
const NEXT_TABLE: usize = HDR + 32;
const PREPARED_ROOT: usize = HDR + 36;
const COMMIT_TS_ROOT: usize = HDR + 40;
/// The u64 high-water mark of commit timestamps (`mvcc::commit_ts`).
pub const COMMIT_TS_HIGH: usize = HDR + 44;
/// The u64 history horizon: reads as of a timestamp below it are refused
/// (`mvcc::history`).
pub const HISTORY_HORIZON: usize = HDR + 52;
/// The u64 index of the last entry of a caller's log (a Raft log) applied
/// (`txn::applied`).
pub const APPLIED_INDEX: usize = HDR + 60;

/// Named fields of the meta page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// High-water mark of allocated pages.
    PageCount,
    /// No page below it is free.
    FreeHint,
    /// Root of the catalog B+tree.
    CatalogRoot,
    /// First commit-log directory page.
    ClogDir,
    /// Next table id to hand out.
    NextTable,
    /// Root of the B+tree of prepared transactions (two-phase commit).
    PreparedRoot,
    /// Root of the B+tree of commit timestamps (xid → timestamp).
    CommitTsRoot,
}

fn offset(f: Field) -> usize {
    match f {
        Field::PageCount => PAGE_COUNT,
        Field::FreeHint => FREE_HINT,
        Field::CatalogRoot => CATALOG_ROOT,
        Field::ClogDir => CLOG_DIR,
        Field::NextTable => NEXT_TABLE,
        Field::PreparedRoot => PREPARED_ROOT,
        Field::CommitTsRoot => COMMIT_TS_ROOT,
    }
}

/// Reads a field.
pub fn get(p: &PageBuf, f: Field) -> u32 {
    u32_at(p, offset(f)).unwrap_or(0)
}

/// Writes a field.
pub fn set(p: &mut PageBuf, f: Field, v: u32) {
    put_u32(p, offset(f), v);
}

/// Formats a new meta page.
pub fn init(p: &mut PageBuf) {
    page::init(p, META, PageType::Meta);
    p[HDR..HDR + 8].copy_from_slice(MAGIC);
    put_u32(p, VERSION, FORMAT_VERSION);
    put_u32(p, PAGE_SIZE_AT, PAGE_SIZE as u32);
    set(p, Field::PageCount, 1);
    set(p, Field::FreeHint, 1);
}

/// Checks magic, version and page size.
pub fn validate(p: &PageBuf) -> Result<()> {
    if page::page_type(p) != Some(PageType::Meta) || &p[HDR..HDR + 8] != MAGIC {
        return Err(Error::IncompatibleFormat {
            reason: "data file does not start with a strata meta page".into(),
        });
    }
    let v = u32_at(p, VERSION).unwrap_or(0);
    if v != FORMAT_VERSION {
        return Err(Error::IncompatibleFormat {
            reason: format!("format version {v}; this build reads version {FORMAT_VERSION}"),
        });
    }
    let ps = u32_at(p, PAGE_SIZE_AT).unwrap_or(0);
    if ps as usize != PAGE_SIZE {
        return Err(Error::IncompatibleFormat {
            reason: format!("page size {ps}, expected {PAGE_SIZE}"),
        });
    }
    Ok(())
}

/// Writes a field through a declared range.
fn set_in(mtr: &mut Mtr<'_>, f: Field, v: u32) -> Result<()> {
    let at = offset(f);
    put_u32(mtr.page_mut_in(META, &[(at, at + 4)])?, at, v);
    Ok(())
}

/// Allocates a page (the lowest free one, else one past the count) and
/// starts it as type `ty`.
pub fn alloc(mtr: &mut Mtr<'_>, ty: PageType) -> Result<PageId> {
    let meta = mtr.page(META)?;
    let hint = get(meta, Field::FreeHint);
    let count = get(meta, Field::PageCount);
    let pid = match freemap::lowest(mtr, hint, count)? {
        Some(pid) => {
            // A map bit is no licence to overwrite a live page.
            let freed = mtr.with_page(pid, |p| page::page_type(p) == Some(PageType::Freed))?;
            if !freed || pid == META || freemap::is_map(pid) {
                return Err(Error::corruption(
                    mtr.file(),
                    pid.0 as u64 * PAGE_SIZE as u64,
                    format!("page {pid} is marked free but is not a freed page"),
                ));
            }
            freemap::mark_used(mtr, pid)?;
            set_in(mtr, Field::FreeHint, pid.0 + 1)?;
            pid
        }
        None => {
            let mut next = count;
            if freemap::is_map(PageId(next)) {
                freemap::create(mtr, PageId(next))?;
                next += 1;
            }
            if next >= u32::MAX - 1 {
                return Err(Error::Unsupported("data file reached its page limit"));
            }
            set_in(mtr, Field::PageCount, next + 1)?;
            set_in(mtr, Field::FreeHint, next + 1)?;
            PageId(next)
        }
    };
    mtr.new_page(pid, ty)?;
    Ok(pid)
}

/// The free page `alloc` would take next, if it lies below `limit`.
pub fn lowest_free(mtr: &mut Mtr<'_>, limit: PageId) -> Result<Option<PageId>> {
    let meta = mtr.page(META)?;
    let hint = get(meta, Field::FreeHint);
    let count = get(meta, Field::PageCount);
    freemap::lowest(mtr, hint, count.min(limit.0))
}

/// Frees a page: it is marked `Freed` and in the free map.
pub fn free(mtr: &mut Mtr<'_>, pid: PageId) -> Result<()> {
    assert!(
        pid != META && !freemap::is_map(pid),
        "the meta page and the free maps are never freed"
    );
    let hint = get(mtr.page(META)?, Field::FreeHint);
    mtr.new_page(pid, PageType::Freed)?;
    freemap::mark_free(mtr, pid)?;
    if pid.0 < hint {
        set_in(mtr, Field::FreeHint, pid.0)?;
    }
    Ok(())
}

/// Moves page `old` (of type `ty`, header aside) to a newly allocated page
/// and frees `old`; the caller repoints what named it in the same
/// mini-transaction. Compaction moves nodes and commit-log pages this way.
pub fn relocate(mtr: &mut Mtr<'_>, old: PageId, ty: PageType) -> Result<PageId> {
    let body = mtr.page(old)?[HDR..].to_vec();
    let new = alloc(mtr, ty)?;
    mtr.page_mut(new)?[HDR..].copy_from_slice(&body);
    free(mtr, old)?;
    Ok(new)
}

/// Cuts free pages off the end: lowers the count past the trailing run of
/// free pages (and map pages left with nothing after them), at most
/// `SHRINK_MAX` of them. Returns how many went. The data file keeps its
/// length until the next checkpoint cuts it.
pub fn shrink(mtr: &mut Mtr<'_>) -> Result<u32> {
    let meta = mtr.page(META)?;
    let count = get(meta, Field::PageCount);
    let hint = get(meta, Field::FreeHint);
    let mut new = count;
    // Pages 0 (meta) and 1 (the first map) always stay.
    while new > 2 && count - new < SHRINK_MAX {
        let p = PageId(new - 1);
        let gone =
            freemap::is_map(p) || mtr.with_page(freemap::map_of(p), |m| freemap::is_free(m, p))?;
        if !gone {
            break;
        }
        new -= 1;
    }
    if new == count {
        return Ok(0);
    }
    freemap::clear(mtr, new, count)?;
    set_in(mtr, Field::PageCount, new)?;
    if hint > new {
        set_in(mtr, Field::FreeHint, new)?;
    }
    Ok(count - new)
}

/// Pages one `shrink` cuts at most (one mini-transaction's worth of map
/// changes: the bits of this many pages lie in at most two map pages).
pub const SHRINK_MAX: u32 = 4096;
