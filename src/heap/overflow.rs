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
use crate::heap::tuple;
use crate::ids::PageId;
use crate::limits::{OVERFLOW_PAGES_PER_RECORD, PAGE_SIZE, TUPLE_INLINE_MAX};
use crate::page::{self, PageType, HDR};
use crate::store::meta;

const NEXT: usize = HDR;
const LEN: usize = HDR + 4;
const DATA: usize = HDR + 8;
/// Value bytes per overflow page.
pub const CAPACITY: usize = PAGE_SIZE - DATA;

/// How many of a value's bytes go to an overflow chain, for a tuple
/// whose key is `klen` bytes: `None` if the whole value fits in the tuple;
/// else the whole pages' worth when what is left fits in the tuple beside
/// the page id (the tail), or all of it. Below a page's worth there is no
/// whole page to fill, and a value alone on its page wastes the rest
/// whichever way it is split.
pub fn split(klen: usize, vlen: usize) -> Option<usize> {
    let Some(room) = TUPLE_INLINE_MAX.checked_sub(tuple::HEADER + klen) else {
        return Some(vlen);
    };
    if vlen <= room {
        return None;
    }
    let whole = vlen - vlen % CAPACITY;
    let tail_fits = whole > 0 && vlen - whole + 4 <= room;
    Some(if tail_fits { whole } else { vlen })
}

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

/// The link and byte count of overflow page `pid`, validated.
fn step(acc: &mut impl PageAccess, pid: PageId) -> Result<(u32, usize)> {
    let step = acc.with_page(pid, |p| {
        (page::page_type(p) == Some(PageType::Overflow)).then(|| {
            (
                u32_at(p, NEXT).unwrap_or(0),
                u32_at(p, LEN).unwrap_or(0) as usize,
            )
        })
    })?;
    step.filter(|&(_, n)| n <= CAPACITY && n > 0)
        .ok_or_else(|| corrupt(acc, pid, format!("page {pid} is not a valid overflow page")))
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
        let (next, n) = step(acc, pid)?;
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

/// How far `move_below` got through a chain when it stopped at its
/// limit of moves: the page holding the chain's bytes from `index *
/// CAPACITY` on comes after `before` (where that page lies now, below the
/// limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    /// The page before, where it lies now.
    pub before: PageId,
    /// The place in the chain of the page to go on from.
    pub index: usize,
}

/// What `move_below` did.
#[derive(Debug)]
pub struct Moved {
    /// The chain's first page (new if that one moved: the caller repoints
    /// the tuple).
    pub head: PageId,
    /// Pages moved.
    pub moved: usize,
    /// Whether a free page below the limit is left.
    pub room: bool,
    /// Where to go on, if it stopped at its limit of moves.
    pub resume: Option<Resume>,
}

/// Moves the pages of the chain at `first` (holding `len` bytes) found at
/// or past `limit` into free pages below it, at most `max` of them,
/// relinking each from the page before it; from the start of the chain,
/// or from where an earlier call stopped (`from`). Compaction moves large
/// values this way; everything happens in the caller's mini-transaction,
/// under whose latch every reader of the value reads it.
pub fn move_below(
    mtr: &mut Mtr<'_>,
    (first, len): (PageId, usize),
    limit: PageId,
    max: usize,
    from: Option<Resume>,
) -> Result<Moved> {
    let mut done = Moved {
        head: first,
        moved: 0,
        room: true,
        resume: None,
    };
    let (mut before, mut index, mut pid) = match from {
        None => (None, 0, first),
        Some(r) => resume_after(mtr, r, len)?,
    };
    let mut seen = index * CAPACITY;
    while seen < len {
        if pid.0 == 0 || index > len / CAPACITY {
            return Err(corrupt(
                mtr,
                pid,
                format!("overflow chain ends after {seen} of {len} bytes"),
            ));
        }
        let (next, n) = step(mtr, pid)?;
        let mut at = pid;
        if pid >= limit {
            if done.moved == max {
                done.resume = before.map(|before| Resume { before, index });
                return Ok(done);
            }
            let Some(moved) = relocate_below(mtr, pid, limit, before)? else {
                done.room = false;
                return Ok(done);
            };
            if before.is_none() {
                done.head = moved;
            }
            at = moved;
            done.moved += 1;
        }
        before = Some(at);
        seen += n;
        index += 1;
        pid = PageId(next);
    }
    if seen != len {
        return Err(corrupt(
            mtr,
            first,
            format!("overflow chain holds {seen} bytes, tuple says {len}"),
        ));
    }
    Ok(done)
}

/// Where a move that stopped at `r` goes on in a chain of `len` bytes:
/// (the page before, its index, the page to look at next). The page
/// before must be a full page of the chain with a link that goes on.
fn resume_after(
    mtr: &mut Mtr<'_>,
    r: Resume,
    len: usize,
) -> Result<(Option<PageId>, usize, PageId)> {
    let (next, n) = step(mtr, r.before)?;
    if n != CAPACITY || r.index == 0 || r.index * CAPACITY >= len {
        return Err(corrupt(
            mtr,
            r.before,
            format!(
                "page {} is not page {} of an overflow chain",
                r.before,
                r.index.saturating_sub(1)
            ),
        ));
    }
    Ok((Some(r.before), r.index, PageId(next)))
}

/// Moves overflow page `pid` into the lowest free page, which must lie
/// below `limit`, and points the page `before` it (if any; else the
/// caller repoints the tuple) at the new place. `None`, moving nothing,
/// if no free page lies below `limit`.
fn relocate_below(
    mtr: &mut Mtr<'_>,
    pid: PageId,
    limit: PageId,
    before: Option<PageId>,
) -> Result<Option<PageId>> {
    if meta::lowest_free(mtr, limit)?.is_none() {
        return Ok(None);
    }
    // The lowest free page is below `limit`, and `alloc` takes it.
    let at = meta::relocate(mtr, pid, PageType::Overflow)?;
    assert!(
        at < limit && at != pid,
        "overflow page {pid} moved to {at}, not below the limit {limit}"
    );
    if let Some(b) = before {
        put_u32(mtr.page_mut(b)?, NEXT, at.0);
    }
    Ok(Some(at))
}

/// Reads the `len` bytes a chain holds, then appends `tail` (the value's
/// end kept in its tuple).
pub fn read(acc: &mut impl PageAccess, first: PageId, len: usize, tail: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len + tail.len());
    for pid in pages(acc, first, len)? {
        acc.with_page(pid, |p| {
            let n = u32_at(p, LEN).unwrap_or(0) as usize;
            out.extend_from_slice(&p[DATA..DATA + n.min(CAPACITY)]);
        })?;
    }
    out.extend_from_slice(tail);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_stays_in_the_tuple_only_past_whole_pages_and_when_it_fits() {
        let room = TUPLE_INLINE_MAX - tuple::HEADER - 10;
        assert_eq!(split(10, room), None);
        // Under a page's worth: all of it in the chain.
        assert_eq!(split(10, room + 1), Some(room + 1));
        assert_eq!(split(10, CAPACITY), Some(CAPACITY));
        // Past whole pages: the pages, and a tail that fits with the page id.
        assert_eq!(split(10, CAPACITY + 1), Some(CAPACITY));
        assert_eq!(split(10, 3 * CAPACITY + room - 4), Some(3 * CAPACITY));
        assert_eq!(
            split(10, 3 * CAPACITY + room - 3),
            Some(3 * CAPACITY + room - 3)
        );
        // A key too long for any tuple is refused before this is asked.
        assert_eq!(split(TUPLE_INLINE_MAX, 1), Some(1));
    }
}
