//! Page 0: the roots and counters of the data file, and page allocation.
//!
//! ```text
//!  24        32        36         40           44          48             52             56              60
//!  | magic 8 | version | page size | page count | free head | catalog root | clog dir head | next table id | prepared root |
//! ```
//! `page count` is the high-water mark: pages [0, count) exist. Freed pages
//! form a singly linked list through their first body word (type
//! `FreeList`), headed by `free head` (0: empty). Every change to this page
//! goes through a mini-transaction, so allocation is logged with the
//! operation that needed the page.

use crate::buffer::mtr::{Mtr, PageAccess};
use crate::buffer::page::{self, PageBuf, PageType, HDR};
use crate::codec::{put_u32, u32_at};
use crate::error::{Error, Result};
use crate::ids::PageId;
use crate::limits::PAGE_SIZE;

/// The meta page's id.
pub const META: PageId = PageId(0);
/// Magic bytes identifying a strata data file.
pub const MAGIC: &[u8; 8] = b"STRATADB";
/// Version of the on-disk format described in FORMAT.md.
pub const FORMAT_VERSION: u32 = 5;

const VERSION: usize = HDR + 8;
const PAGE_SIZE_AT: usize = HDR + 12;
const PAGE_COUNT: usize = HDR + 16;
const FREE_HEAD: usize = HDR + 20;
const CATALOG_ROOT: usize = HDR + 24;
const CLOG_DIR: usize = HDR + 28;
const NEXT_TABLE: usize = HDR + 32;
const PREPARED_ROOT: usize = HDR + 36;

/// Named fields of the meta page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// High-water mark of allocated pages.
    PageCount,
    /// First page of the free list.
    FreeHead,
    /// Root of the catalog B+tree.
    CatalogRoot,
    /// First commit-log directory page.
    ClogDir,
    /// Next table id to hand out.
    NextTable,
    /// Root of the B+tree of prepared transactions (two-phase commit).
    PreparedRoot,
}

fn offset(f: Field) -> usize {
    match f {
        Field::PageCount => PAGE_COUNT,
        Field::FreeHead => FREE_HEAD,
        Field::CatalogRoot => CATALOG_ROOT,
        Field::ClogDir => CLOG_DIR,
        Field::NextTable => NEXT_TABLE,
        Field::PreparedRoot => PREPARED_ROOT,
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

/// Allocates a page (free list first, then the high-water mark) and starts
/// it as type `ty`.
pub fn alloc(mtr: &mut Mtr<'_>, ty: PageType) -> Result<PageId> {
    let meta = mtr.page(META)?;
    let head = get(meta, Field::FreeHead);
    let count = get(meta, Field::PageCount);
    let pid = if head != 0 {
        if head >= count {
            return Err(Error::corruption(
                mtr.file(),
                0,
                format!("free list head {head} beyond page count {count}"),
            ));
        }
        let next = mtr.with_page(PageId(head), |p| {
            (page::page_type(p) == Some(PageType::FreeList)).then(|| free_next(p))
        })?;
        let Some(next) = next else {
            return Err(Error::corruption(
                mtr.file(),
                head as u64 * PAGE_SIZE as u64,
                format!("page {head} is on the free list but is not a free page"),
            ));
        };
        set(mtr.page_mut(META)?, Field::FreeHead, next);
        PageId(head)
    } else {
        if count == u32::MAX - 1 {
            return Err(Error::Unsupported("data file reached its page limit"));
        }
        set(mtr.page_mut(META)?, Field::PageCount, count + 1);
        PageId(count)
    };
    mtr.new_page(pid, ty)?;
    Ok(pid)
}

/// The page after `p` on the free list (0: none).
pub fn free_next(p: &PageBuf) -> u32 {
    u32_at(p, HDR).unwrap_or(0)
}

/// Returns a page to the free list.
pub fn free(mtr: &mut Mtr<'_>, pid: PageId) -> Result<()> {
    assert!(pid != META, "the meta page is never freed");
    let head = get(mtr.page(META)?, Field::FreeHead);
    let p = mtr.new_page(pid, PageType::FreeList)?;
    put_u32(p, HDR, head);
    set(mtr.page_mut(META)?, Field::FreeHead, pid.0);
    Ok(())
}
