//! The heap: tuple versions in slotted pages, large values in overflow
//! chains, and a free-space map that points inserts at pages with room.
//!
//! One heap serves every table; a version is reached from its table's
//! B+tree (key → newest version) and then along `prev` links. The heap
//! itself knows nothing of visibility.
//!
//! The free-space map is a hint kept in memory: it is refilled by vacuum
//! (which measures every page it cleans) and by inserts, and lost at a
//! restart, when inserts simply go to fresh pages until the next vacuum.
//! A hint is always checked against the page before use.

pub mod overflow;
pub mod page;
pub mod tuple;

use std::collections::{BTreeSet, HashMap};

use crate::sync::{AtomicU64, Mutex, Ordering};

use crate::buffer::mtr::{Mtr, PageAccess};
use crate::buffer::page::{PageBuf, PageType};
use crate::error::{Error, Result};
use crate::ids::{PageId, Tid};
use crate::limits::PAGE_SIZE;
use crate::store::meta;

/// Free-space hints tried per insert before a new page is taken.
const FSM_TRIES: usize = 4;

/// In-memory free-space hints, and a count of tuples removed.
#[derive(Default)]
pub struct Fsm {
    inner: Mutex<FsmInner>,
    removed: AtomicU64,
}

#[derive(Default)]
struct FsmInner {
    by_space: BTreeSet<(usize, PageId)>,
    space: HashMap<PageId, usize>,
    /// Pages at or past it are not offered (they are being emptied).
    ceiling: Option<PageId>,
}

impl Fsm {
    /// Records that `pid` has `free` bytes.
    pub fn set(&self, pid: PageId, free: usize) {
        let mut f = self.inner.lock();
        if let Some(old) = f.space.remove(&pid) {
            f.by_space.remove(&(old, pid));
        }
        if f.ceiling.is_none_or(|c| pid < c) {
            f.space.insert(pid, free);
            f.by_space.insert((free, pid));
        }
    }

    /// Offers only pages below `ceiling` (all pages with `None`), while
    /// compaction empties the pages past it.
    pub fn set_ceiling(&self, ceiling: Option<PageId>) {
        let mut f = self.inner.lock();
        f.ceiling = ceiling;
        if let Some(c) = ceiling {
            let gone: Vec<(PageId, usize)> = f
                .space
                .iter()
                .filter(|(&pid, _)| pid >= c)
                .map(|(&pid, &free)| (pid, free))
                .collect();
            for (pid, free) in gone {
                f.space.remove(&pid);
                f.by_space.remove(&(free, pid));
            }
        }
    }

    /// Every hint: page → free bytes.
    pub fn snapshot(&self) -> HashMap<PageId, usize> {
        self.inner.lock().space.clone()
    }

    /// Forgets `pid` (it is no longer a heap page).
    pub fn forget(&self, pid: PageId) {
        let mut f = self.inner.lock();
        if let Some(old) = f.space.remove(&pid) {
            f.by_space.remove(&(old, pid));
        }
    }

    /// Tuples removed so far (by vacuum: nothing else frees a slot). A
    /// reader that keeps tuple ids across latch releases trusts them only
    /// while this is unchanged; read it under the store latch.
    pub fn removals(&self) -> u64 {
        self.removed.load(Ordering::Relaxed)
    }

    /// A page believed to have at least `need` free bytes: the fullest such
    /// page, so free space is packed rather than spread.
    pub fn find(&self, need: usize) -> Option<PageId> {
        let f = self.inner.lock();
        f.by_space
            .range((need, PageId(0))..)
            .next()
            .map(|&(_, pid)| pid)
    }
}

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

/// `insert`, on a page below `limit` only (the free-space hints must not
/// offer pages past it): `None`, with nothing changed, if no such page has
/// room and none below it is free.
pub fn insert_below(
    mtr: &mut Mtr<'_>,
    fsm: &Fsm,
    t: &[u8],
    limit: Option<PageId>,
) -> Result<Option<Tid>> {
    // A few stale hints are corrected on the way; past that, a new page
    // keeps the mini-transaction small.
    for _ in 0..FSM_TRIES {
        let Some(pid) = fsm.find(t.len()) else { break };
        if limit.is_some_and(|l| pid >= l) {
            break;
        }
        let p = mtr.page(pid)?;
        if crate::buffer::page::page_type(p) != Some(PageType::Heap) {
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
        if crate::buffer::page::page_type(p) != Some(PageType::Heap) {
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
    let r = acc.with_page(tid.page, |p| {
        if crate::buffer::page::page_type(p) != Some(PageType::Heap) {
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
    let ok = crate::buffer::page::page_type(p) == Some(PageType::Heap);
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
    let heap = crate::buffer::page::page_type(p) == Some(PageType::Heap);
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
    fsm.removed.fetch_add(1, Ordering::Relaxed);
    fsm.set(tid.page, page::free_space(p));
    Ok(())
}

/// Frees `pid` if it is a heap page with no tuples
/// left, so any kind of page can reuse it.
pub fn release_if_empty(mtr: &mut Mtr<'_>, fsm: &Fsm, pid: PageId) -> Result<bool> {
    let p = mtr.page(pid)?;
    if crate::buffer::page::page_type(p) != Some(PageType::Heap) || !page::is_empty(p) {
        return Ok(false);
    }
    fsm.forget(pid);
    meta::free(mtr, pid)?;
    Ok(true)
}
