//! The heap: tuple versions in slotted pages, large values in overflow
//! chains, and a free-space map that points inserts at pages with room.
//!
//! One heap serves every table; a version is reached from its table's
//! B+tree (key → newest version) and then along `prev` links. The heap
//! itself knows nothing of visibility.
//!
//! Inserts find room through the free-space hints (`store::fsm`), and
//! check each hint against the page before using it.

pub mod overflow;
pub mod page;
pub mod tuple;

use crate::buffer::mtr::{Mtr, PageAccess};
use crate::error::{Error, Result};
use crate::ids::{PageId, Tid};
use crate::limits::PAGE_SIZE;
use crate::page::{PageBuf, PageType};
use crate::store::fsm::Fsm;
use crate::store::meta;

/// Free-space hints tried per insert before a new page is taken.
const FSM_TRIES: usize = 4;

fn corrupt(acc: &impl PageAccess, tid: Tid, what: &str) -> Error {
    Error::corruption(
        acc.file(),
        tid.page.0 as u64 * PAGE_SIZE as u64,
        format!("heap tuple {tid}: {what}"),
    )
}

/// Stores tuple bytes somewhere with room; returns its id.
pub fn insert(mtr: &mut Mtr<'_>, fsm: &Fsm, t: &[u8]) -> Result<Tid> {
    match insert_below(mtr, fsm, t, None)? {
        Some(tid) => Ok(tid),
        None => Err(Error::Unsupported("tuple larger than a page")),
    }
}

/// `insert`, on a page below `limit` only: `None`, with nothing changed, if
/// no such page has room and none below it is free.
pub fn insert_below(
    mtr: &mut Mtr<'_>,
    fsm: &Fsm,
    t: &[u8],
    limit: Option<PageId>,
) -> Result<Option<Tid>> {
    // A few stale hints are corrected on the way; past that, a new page
    // keeps the mini-transaction small.
    for _ in 0..FSM_TRIES {
        let Some(pid) = fsm.find(t.len(), limit) else {
            break;
        };
        let p = mtr.page(pid)?;
        if crate::page::page_type(p) != Some(PageType::Heap) {
            fsm.forget(pid);
            continue;
        }
        let free = page::free_space(p);
        if free < t.len() {
            fsm.set(pid, free);
            continue;
        }
        let p = match page::insert_ranges(p, t.len()) {
            Some(r) => mtr.page_mut_in(pid, &r)?,
            None => mtr.page_mut(pid)?,
        };
        if let Some(slot) = page::insert(p, t) {
            fsm.set(pid, page::free_space(p));
            return Ok(Some(Tid { page: pid, slot }));
        }
        fsm.set(pid, 0);
    }
    if let Some(limit) = limit {
        if meta::lowest_free(mtr, limit)?.is_none() {
            return Ok(None);
        }
    }
    let pid = meta::alloc(mtr, PageType::Heap)?;
    let p = mtr.page_mut(pid)?;
    page::init(p, pid);
    // Callers bound tuples by TUPLE_INLINE_MAX, which always fits an empty page.
    let slot = page::insert(p, t).ok_or(Error::Unsupported("tuple larger than a page"))?;
    fsm.set(pid, page::free_space(p));
    Ok(Some(Tid { page: pid, slot }))
}

/// Copies out the tuple at `tid`, checking it decodes.
pub fn read(acc: &mut impl PageAccess, tid: Tid) -> Result<Vec<u8>> {
    let bytes = acc.with_page(tid.page, |p| {
        if crate::page::page_type(p) != Some(PageType::Heap) {
            return None;
        }
        page::get(p, tid.slot)
            .filter(|b| tuple::Tuple::decode(b).is_some())
            .map(<[u8]>::to_vec)
    })?;
    bytes.ok_or_else(|| corrupt(acc, tid, "missing or malformed"))
}

/// Runs `f` on the decoded tuple at `tid`, in place in its page.
pub fn with_tuple<R>(
    acc: &mut impl PageAccess,
    tid: Tid,
    f: impl FnOnce(&tuple::Tuple<'_>) -> R,
) -> Result<R> {
    let r = acc.with_page_near(tid.page, page::slot_offset(tid.slot), |p| {
        if crate::page::page_type(p) != Some(PageType::Heap) {
            return None;
        }
        page::get(p, tid.slot)
            .and_then(tuple::Tuple::decode)
            .map(|t| f(&t))
    })?;
    r.ok_or_else(|| corrupt(acc, tid, "missing or malformed"))
}

/// Runs `f` on the tuple's bytes for modification.
pub fn modify(mtr: &mut Mtr<'_>, tid: Tid, f: impl FnOnce(&mut [u8])) -> Result<()> {
    let p = mtr.page_mut(tid.page)?;
    let ok = crate::page::page_type(p) == Some(PageType::Heap);
    match page::get_mut(p, tid.slot).filter(|_| ok) {
        Some(b) => {
            f(b);
            Ok(())
        }
        None => Err(corrupt(mtr, tid, "missing")),
    }
}

/// Stamps `xmax` on the tuple at `tid` (a delete or a newer version): the
/// eight bytes of the field are all that change, kept and logged.
pub fn stamp_xmax(mtr: &mut Mtr<'_>, tid: Tid, xmax: crate::ids::Xid) -> Result<()> {
    let p = mtr.page(tid.page)?;
    let heap = crate::page::page_type(p) == Some(PageType::Heap);
    let range = page::tuple_range(p, tid.slot).filter(|(s, e)| heap && e - s >= tuple::HEADER);
    let Some((start, end)) = range else {
        return Err(corrupt(mtr, tid, "missing"));
    };
    let field = (start + tuple::XMAX.start, start + tuple::XMAX.end);
    let p = mtr.page_mut_in(tid.page, &[field])?;
    tuple::set_xmax(&mut p[start..end], xmax);
    Ok(())
}

/// Removes the tuple at `tid` and updates the free-space hint.
pub fn remove(mtr: &mut Mtr<'_>, fsm: &Fsm, tid: Tid) -> Result<()> {
    let p: &mut PageBuf = mtr.page_mut(tid.page)?;
    page::remove(p, tid.slot);
    fsm.note_removal();
    fsm.set(tid.page, page::free_space(p));
    Ok(())
}

/// Frees `pid` if it is a heap page with no tuples
/// left, so any kind of page can reuse it.
pub fn release_if_empty(mtr: &mut Mtr<'_>, fsm: &Fsm, pid: PageId) -> Result<bool> {
    let p = mtr.page(pid)?;
    if crate::page::page_type(p) != Some(PageType::Heap) || !page::is_empty(p) {
        return Ok(false);
    }
    fsm.forget(pid);
    meta::free(mtr, pid)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_prefer_pages_below_the_ceiling_and_limits_are_kept() {
        let fsm = Fsm::default();
        fsm.set(PageId(10), 500);
        fsm.set(PageId(90), 300);
        assert_eq!(
            fsm.find(200, None),
            Some(PageId(90)),
            "the fullest page that fits"
        );
        fsm.set_ceiling(Some(PageId(50)));
        assert_eq!(
            fsm.find(200, None),
            Some(PageId(10)),
            "below the ceiling first"
        );
        assert_eq!(fsm.find(400, None), Some(PageId(10)));
        assert_eq!(fsm.find(200, Some(PageId(50))), Some(PageId(10)));
        fsm.set(PageId(10), 100);
        assert_eq!(
            fsm.find(200, None),
            Some(PageId(90)),
            "past the ceiling rather than a new page for every insert"
        );
        assert_eq!(fsm.find(200, Some(PageId(50))), None, "a limit is a limit");
        fsm.set_ceiling(None);
        fsm.forget(PageId(90));
        assert_eq!(fsm.find(200, None), None);
    }
}
