//! Overflow chains: values too large for a tuple live in a linked list of
//! pages, written before the tuple that points at them.
//!
//! ```text
//!  24          28        32
//!  | next u32  | len u32 | data (len bytes, up to PAGE_SIZE - 32) |
//! ```
//! The chain is written in groups of pages, one log record each, from the
//! end of the value backward, so every page's `next` is known when it is
//! written. A crash after some groups but before the tuple's own record
//! leaves unreferenced pages: space, not data, is lost (see FORMAT.md).

use crate::buffer::mtr::{Mtr, PageAccess};
use crate::codec::{put_u32, u32_at};
use crate::error::{Error, Result};
use crate::ids::PageId;
use crate::limits::{OVERFLOW_PAGES_PER_RECORD, PAGE_SIZE};
use crate::page::{self, PageType, HDR};
use crate::store::meta;

const NEXT: usize = HDR;
const LEN: usize = HDR + 4;
const DATA: usize = HDR + 8;
/// Value bytes per overflow page.
pub const CAPACITY: usize = PAGE_SIZE - DATA;

/// Writes `value` as a chain; `each` runs one mini-transaction per group of
/// pages (the caller supplies latching and logging). Returns the first page.
pub fn write(
    value: &[u8],
    mut each: impl FnMut(&mut dyn FnMut(&mut Mtr<'_>) -> Result<()>) -> Result<()>,
) -> Result<PageId> {
    let chunks: Vec<&[u8]> = value.chunks(CAPACITY).collect();
    let mut next = PageId(0);
    for group in chunks.chunks(OVERFLOW_PAGES_PER_RECORD).rev() {
        let mut first = next;
        each(&mut |mtr: &mut Mtr<'_>| {
            let mut link = next;
            for chunk in group.iter().rev() {
                let pid = meta::alloc(mtr, PageType::Overflow)?;
                let p = mtr.page_mut(pid)?;
                put_u32(p, NEXT, link.0);
                put_u32(p, LEN, chunk.len() as u32);
                p[DATA..DATA + chunk.len()].copy_from_slice(chunk);
                link = pid;
            }
            first = link;
            Ok(())
        })?;
        next = first;
    }
    Ok(next)
}

fn corrupt(acc: &impl PageAccess, pid: PageId, what: String) -> Error {
    Error::corruption(acc.file(), pid.0 as u64 * PAGE_SIZE as u64, what)
}

/// The pages of a chain holding `len` bytes, validated.
pub fn pages(acc: &mut impl PageAccess, first: PageId, len: usize) -> Result<Vec<PageId>> {
    let mut out = Vec::with_capacity(len.div_ceil(CAPACITY));
    let mut pid = first;
    let mut seen = 0;
    while seen < len || (len == 0 && out.is_empty() && pid.0 != 0) {
        if pid.0 == 0 || out.len() > len / CAPACITY + 1 {
            return Err(corrupt(
                acc,
                pid,
                format!("overflow chain ends after {seen} of {len} bytes"),
            ));
        }
        let step = acc.with_page(pid, |p| {
            (page::page_type(p) == Some(PageType::Overflow)).then(|| {
                (
                    u32_at(p, NEXT).unwrap_or(0),
                    u32_at(p, LEN).unwrap_or(0) as usize,
                )
            })
        })?;
        let Some((next, n)) = step.filter(|&(_, n)| n <= CAPACITY && n > 0) else {
            return Err(corrupt(
                acc,
                pid,
                format!("page {pid} is not a valid overflow page"),
            ));
        };
        out.push(pid);
        seen += n;
        pid = PageId(next);
    }
    if seen != len {
        return Err(corrupt(
            acc,
            first,
            format!("overflow chain holds {seen} bytes, tuple says {len}"),
        ));
    }
    Ok(out)
}

/// Moves the pages of the chain at `first` (holding `len` bytes) found at
/// or past `limit` into free pages below it, at most `max` of them,
/// relinking each from the page before it. Returns the chain's first page
/// (new if that one moved: the caller repoints the tuple), how many pages
/// moved, and whether a free page below `limit` is left. Compaction moves
/// large values this way; everything happens in the caller's
/// mini-transaction, under whose latch every reader of the value reads it.
pub fn move_below(
    mtr: &mut Mtr<'_>,
    first: PageId,
    len: usize,
    limit: PageId,
    max: usize,
) -> Result<(PageId, usize, bool)> {
    let mut head = first;
    let mut before: Option<PageId> = None;
    let mut moved = 0;
    for pid in pages(mtr, first, len)? {
        if pid < limit {
            before = Some(pid);
            continue;
        }
        if moved == max {
            break;
        }
        if meta::lowest_free(mtr, limit)?.is_none() {
            return Ok((head, moved, false));
        }
        // The lowest free page is below `limit`, and `alloc` takes it.
        let new = meta::relocate(mtr, pid, PageType::Overflow)?;
        match before {
            None => head = new,
            Some(b) => put_u32(mtr.page_mut(b)?, NEXT, new.0),
        }
        before = Some(new);
        moved += 1;
    }
    Ok((head, moved, true))
}

/// Reads a whole value.
pub fn read(acc: &mut impl PageAccess, first: PageId, len: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    for pid in pages(acc, first, len)? {
        acc.with_page(pid, |p| {
            let n = u32_at(p, LEN).unwrap_or(0) as usize;
            out.extend_from_slice(&p[DATA..DATA + n.min(CAPACITY)]);
        })?;
    }
    Ok(out)
}
