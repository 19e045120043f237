//! Free-space hints for the heap: which pages have room for a tuple.
//!
//! The map is a hint kept in memory: it is refilled by vacuum (which
//! measures every page it cleans) and by inserts, and lost at a restart,
//! when inserts simply go to fresh pages until the next vacuum. Callers
//! check a hint against the page before using it. It also counts the
//! tuples removed, which readers holding tuple ids across latch releases
//! compare (see `Fsm::removals`).

use std::collections::{BTreeSet, HashMap};

use crate::ids::PageId;
use crate::sync::{AtomicU64, Mutex, Ordering};

/// In-memory free-space hints, and a count of tuples removed.
#[derive(Default)]
pub struct Fsm {
    inner: Mutex<FsmInner>,
    removed: AtomicU64,
}

#[derive(Default)]
struct FsmInner {
    /// Pages below the ceiling (all, without one) by free bytes.
    by_space: BTreeSet<(usize, PageId)>,
    /// Pages at or past the ceiling by free bytes: offered only when no
    /// other has room (they are being emptied).
    above: BTreeSet<(usize, PageId)>,
    space: HashMap<PageId, usize>,
    ceiling: Option<PageId>,
}

impl FsmInner {
    fn set_of(&mut self, pid: PageId) -> &mut BTreeSet<(usize, PageId)> {
        if self.ceiling.is_some_and(|c| pid >= c) {
            &mut self.above
        } else {
            &mut self.by_space
        }
    }
}

impl Fsm {
    /// Records that `pid` has `free` bytes.
    pub fn set(&self, pid: PageId, free: usize) {
        let mut f = self.inner.lock();
        if let Some(old) = f.space.insert(pid, free) {
            f.set_of(pid).remove(&(old, pid));
        }
        f.set_of(pid).insert((free, pid));
    }

    /// Prefers pages below `ceiling` (no preference with `None`), while
    /// compaction empties the pages past it.
    pub fn set_ceiling(&self, ceiling: Option<PageId>) {
        let f = &mut *self.inner.lock();
        let mut all: Vec<(usize, PageId)> = f.above.iter().copied().collect();
        all.extend(f.by_space.iter().copied());
        f.above.clear();
        f.by_space.clear();
        f.ceiling = ceiling;
        for e in all {
            f.set_of(e.1).insert(e);
        }
    }

    /// Forgets `pid` (it is no longer a heap page).
    pub fn forget(&self, pid: PageId) {
        let mut f = self.inner.lock();
        if let Some(old) = f.space.remove(&pid) {
            f.set_of(pid).remove(&(old, pid));
        }
    }

    /// Tuples removed so far (by vacuum: nothing else frees a slot). A
    /// reader that keeps tuple ids across latch releases trusts them only
    /// while this is unchanged; read it under the store latch.
    pub fn removals(&self) -> u64 {
        self.removed.load(Ordering::Relaxed)
    }

    /// Counts a removed tuple (under the store's write latch).
    pub fn note_removal(&self) {
        self.removed.fetch_add(1, Ordering::Relaxed);
    }

    /// Every hint: page → free bytes.
    pub fn snapshot(&self) -> HashMap<PageId, usize> {
        self.inner.lock().space.clone()
    }

    /// A page believed to have at least `need` free bytes: the fullest such
    /// page, so free space is packed rather than spread. With `below` (the
    /// ceiling, during compaction), only a page below it; without,
    /// preferably one below the ceiling, else one past it rather than a new
    /// page for every insert.
    pub fn find(&self, need: usize, below: Option<PageId>) -> Option<PageId> {
        let f = self.inner.lock();
        let fits = |set: &BTreeSet<(usize, PageId)>| {
            set.range((need, PageId(0))..)
                .map(|&(_, pid)| pid)
                .find(|&pid| below.is_none_or(|l| pid < l))
        };
        fits(&f.by_space).or_else(|| fits(&f.above).filter(|_| below.is_none()))
    }
}
