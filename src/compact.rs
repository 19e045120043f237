//! Compaction: moving what lives near the end of the data file down into
//! free space nearer its start, so that vacuum can cut the end off.
//!
//! After a vacuum pass has removed dead versions, heap pages are often
//! half empty and free pages are scattered; the file cannot shrink while
//! one live page sits near its end. Compaction picks a *limit* — about the
//! number of pages the live data needs — and moves, one mini-transaction
//! at a time:
//!
//! - every version on a heap page at or past the limit into a page below
//!   it, relinking the newer version (or the index entry) that pointed at
//!   it, and freeing heap pages it empties;
//! - every B+tree node at or past the limit, roots excepted (they never
//!   move), into a free page below it, repointing its parent.
//!
//! ```text
//!   before:  [meta|map|..live..|free|.half.|..live..|.half.|node|.half.]
//!                                                   limit ^
//!   after:   [meta|map|..live..|full|.full.|..live..]  free ... free   → cut
//! ```
//! Before planning, a pass that removed keys merges sparse neighbouring
//! leaves (`btree::merge_pass`), which frees pages for the plan to count.
//!
//! Compaction works in many short mini-transactions and lets the store
//! latch go between them, so writers run between any two of its steps:
//! a commit or rollback of a prepared transaction removes entries from
//! the registry's tree (freeing emptied leaves, collapsing the root),
//! inserts split nodes, and a freed page is soon reused for anything.
//! Hence the rule: **no page id outlives the latch hold it was read
//! under.** What compaction carries from one step to the next names a
//! place, not a page, and each step finds the page again from a fixed
//! point under its own latch:
//!
//! - a B+tree node by the way to it, a key and a depth, re-descended
//!   from the root (roots never move and are never freed) — the node
//!   moves here and `btree::merge_pass`;
//! - a key's versions by the key, looked up in the index, and the chain
//!   walked under the same latch (`move_round`);
//! - a table's keys by the last key done (`btree::Batches`);
//! - commit-log pages by the commit-log directory (`clog::move_one`).
//!
//! A tree that changed between two steps costs at most something not
//! moved this pass, never an error: a step that finds its way ends at a
//! leaf, or a page it would move no longer past the limit, skips it. The
//! plan alone uses page ids from several latch holds (the set of node
//! pages, the free-space hints), and only as an estimate: it reads no
//! page by them, a node allocated meanwhile only counts as one that
//! cannot move (the cut stops before it), and each move checks again.
//!
//! Readers never notice: nothing they keep across latch releases names a
//! page except a scan's fetched entries, and those check the heap's
//! removal count (moving a version removes its old copy). Writers find
//! versions through the index, as always. While compaction runs, the
//! free-space hints offer ordinary inserts a page past the limit only when
//! none below has room, and never offer one to compaction's own moves.
//! Commit-log pages move like nodes. Overflow pages and roots are not
//! moved: one of them near the end stops the cut there.

use std::collections::HashSet;

use crate::btree;
use crate::buffer::mtr::{Mtr, PageAccess};
use crate::buffer::page::{self, PageType};
use crate::catalog;
use crate::db::{Inner, VacuumStats};
use crate::error::Result;
use crate::heap::{self, tuple};
use crate::ids::{PageId, Tid, Xid};
use crate::limits::{PAGE_SIZE, VACUUM_BATCH};
use crate::mvcc::chain::{self, Cursor};
use crate::mvcc::clog;
use crate::options::RacePoint;
use crate::store::freemap;
use crate::store::meta::{self, Field};
use crate::wal::record::{self, Op};

/// Versions moved per mini-transaction (each touches up to three pages
/// besides the meta page and a free map).
const MOVES_PER_ROUND: usize = 4;
/// Versions of one chain examined per round.
const WINDOW: usize = 256;
/// B+tree nodes moved per mini-transaction.
const NODE_MOVES_PER_ROUND: usize = 4;
/// Pages the plan reads under one hold of the store latch.
const PLAN_READS_PER_LATCH: u32 = 256;

/// What a page is, as far as planning a compaction goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageKind {
    /// Free: room for a node or a heap page.
    Free,
    /// A whole page that can move: a B+tree node (not a root) or a
    /// commit-log page.
    Node,
    /// A heap page: bytes in use and free.
    Heap { used: u64, free: u64 },
    /// Goes with the cut, nothing to move (a free map past the limit).
    Gone,
    /// Cannot move: the meta page, roots, overflow pages.
    Fixed,
}

/// Share of free bytes that moved tuples are counted on filling (slots,
/// holes, tuples that do not fit the last bytes of a page).
const FILL: (u64, u64) = (99, 100);

/// Where compaction moves things below: heap versions under `heap`, B+tree
/// nodes under `nodes`. Moving the heap out of the pages between the two
/// frees the pages the nodes past `nodes` move into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub heap: PageId,
    pub nodes: PageId,
}

/// Plans a compaction, scanning pages from the end (`kind` says what page
/// `p` is): the heap limit is the lowest page such that the heap bytes at
/// or past it fit the room below it (free bytes of heap pages and free
/// pages); the node limit leaves room above the heap limit for every node
/// there. `None` if that would not cut at least an eighth of the file and
/// 16 pages. `free_pages` and `heap_free` are totals over the whole file.
pub(crate) fn plan(
    count: u32,
    free_pages: u64,
    heap_free: u64,
    mut kind: impl FnMut(PageId) -> Result<PageKind>,
) -> Result<Option<Limits>> {
    let (mut free_above, mut nodes_above, mut used_above, mut heap_free_above) = (0, 0, 0, 0);
    let mut best = None;
    // Pages 0 and 1 (meta, first free map) never move.
    for p in (2..count).rev() {
        match kind(PageId(p))? {
            PageKind::Free => free_above += 1,
            PageKind::Node => nodes_above += 1,
            PageKind::Heap { used, free } => {
                used_above += used;
                heap_free_above += free;
            }
            PageKind::Gone => {}
            PageKind::Fixed => break,
        }
        let free_below = free_pages.saturating_sub(free_above);
        let room = (heap_free.saturating_sub(heap_free_above) + free_below * PAGE_SIZE as u64)
            * FILL.0
            / FILL.1;
        if used_above > room {
            break;
        }
        best = Some((p, nodes_above));
    }
    let Some((heap, nodes)) = best else {
        return Ok(None);
    };
    let limits = Limits {
        heap: PageId(heap),
        nodes: PageId((u64::from(heap) + nodes + nodes / 16 + 2).min(u64::from(count)) as u32),
    };
    let count = u64::from(count);
    let gain = count - u64::from(limits.nodes.0);
    Ok((gain >= 16 && gain >= count / 8).then_some(limits))
}

/// Merges sparse leaves (when the pass removed keys), then moves what it
/// can from past the planned limits; moves nothing if the plan finds too
/// little to gain.
pub(crate) fn run(inner: &Inner, stats: &mut VacuumStats) -> Result<()> {
    let (roots, tables) = roots(inner)?;
    if stats.keys_removed > 0 {
        for &root in &tables {
            let (merged, _) = btree::merge_pass(&inner.store, root, Op::Vacuum as u8)?;
            stats.leaves_merged += merged;
        }
    }
    let (count, free, mut nodes) = {
        let mut r = inner.store.read();
        let m = r.view.read_meta()?;
        let count = meta::get(&m, Field::PageCount);
        let free = freemap::count_free(&mut r.view, count)?;
        let mut nodes = HashSet::new();
        for &root in &roots {
            btree::node_pages(&mut r.view, root, &mut nodes)?;
        }
        (count, free, nodes)
    };
    for root in &roots {
        nodes.remove(root);
    }
    let hints = inner.store.fsm.snapshot();
    let heap_free = hints.values().map(|&f| f as u64).sum();
    // The plan is an estimate (each move checks again), so the latch is
    // let go now and then: writers are not held up by a long scan.
    let mut latch = None;
    let mut reads = 0u32;
    let limit = plan(count, free, heap_free, |p| {
        if freemap::is_map(p) {
            return Ok(PageKind::Gone);
        }
        if nodes.contains(&p) {
            return Ok(PageKind::Node);
        }
        if let Some(&f) = hints.get(&p) {
            let f = f as u64;
            return Ok(PageKind::Heap {
                used: PAGE_SIZE as u64 - f,
                free: f,
            });
        }
        reads += 1;
        if reads.is_multiple_of(PLAN_READS_PER_LATCH) {
            // Let go before taking it again: a writer waiting in between
            // would otherwise wait for us while we wait for it.
            latch = None;
        }
        let r = latch.get_or_insert_with(|| inner.store.read());
        r.view.with_page(p, |b| match page::page_type(b) {
            Some(PageType::Freed) => PageKind::Free,
            Some(PageType::Heap) => {
                let f = heap::page::free_space(b) as u64;
                PageKind::Heap {
                    used: PAGE_SIZE as u64 - f,
                    free: f,
                }
            }
            Some(PageType::Clog | PageType::ClogDir) => PageKind::Node,
            _ => PageKind::Fixed,
        })
    })?;
    drop(latch);
    let Some(limits) = limit else {
        return Ok(());
    };
    inner.store.fsm.set_ceiling(Some(limits.heap));
    let r = move_all(inner, (&roots, &tables), limits, count, stats);
    inner.store.fsm.set_ceiling(None);
    r
}

/// Every tree's root (the catalog, the prepared transactions, the
/// tables), and the tables' alone.
fn roots(inner: &Inner) -> Result<(Vec<PageId>, Vec<PageId>)> {
    let mut r = inner.store.read();
    let m = r.view.read_meta()?;
    let mut roots: Vec<PageId> = [Field::CatalogRoot, Field::PreparedRoot]
        .map(|f| PageId(meta::get(&m, f)))
        .into_iter()
        .filter(|p| p.0 != 0)
        .collect();
    let tables: Vec<PageId> = catalog::list(&mut r.view)?
        .into_iter()
        .map(|(_, root)| root)
        .collect();
    roots.extend(&tables);
    Ok((roots, tables))
}

fn move_all(
    inner: &Inner,
    (roots, tables): (&[PageId], &[PageId]),
    limits: Limits,
    count: u32,
    stats: &mut VacuumStats,
) -> Result<()> {
    // The heap first: emptying its pages past the heap limit frees the
    // pages the nodes move into.
    'tables: for &root in tables {
        let mut keys = btree::Batches::new(root);
        loop {
            let batch = keys.next(&mut inner.store.read().view, VACUUM_BATCH)?;
            if batch.is_empty() {
                break;
            }
            for (key, _) in &batch {
                if !move_key(inner, root, key, limits.heap, stats)? {
                    break 'tables;
                }
            }
        }
    }
    // Each internal node is visited once and once more per few children
    // moved; the bound stops a walk that trees growing meanwhile would
    // keep long.
    let visits = 2 * u64::from(count) + 1;
    for &root in roots {
        if !move_nodes(inner, root, limits.nodes, visits, stats)? {
            return Ok(());
        }
    }
    // Commit-log pages count as nodes: whole pages, moved into free ones.
    loop {
        let mut w = inner.store.write();
        if meta::lowest_free(&mut w.mtr, limits.nodes)?.is_none() {
            return Ok(());
        }
        let moved = clog::move_one(&mut w.mtr, limits.nodes)?;
        w.commit_yielding(record::Kind::Pages, Op::Vacuum as u8, Xid::NONE)?;
        if !moved {
            return Ok(());
        }
        stats.nodes_moved += 1;
    }
}

/// Moves the nodes of one tree found past `limit`, top down, in at most
/// `visits` visits of its internal nodes. False once no free page below
/// the limit is left.
///
/// Between visits the latch is let go, and a decision on a prepared
/// transaction (or any remover) may free a node or collapse the root:
/// the walk keeps no page id across that. Its to-do list names each
/// internal node by the way to it, a key and a depth, and each visit
/// descends from the root again under the latch it moves under. A tree
/// that changed meanwhile costs at most a node not moved this pass.
fn move_nodes(
    inner: &Inner,
    root: PageId,
    limit: PageId,
    visits: u64,
    stats: &mut VacuumStats,
) -> Result<bool> {
    let mut todo: Vec<(Option<Vec<u8>>, usize)> = vec![(None, 0)];
    for _ in 0..visits {
        let Some((way, depth)) = todo.pop() else {
            return Ok(true);
        };
        inner.opts.race(RacePoint::CompactionVisit);
        let mut w = inner.store.write();
        let fan = match btree::internal_at(&mut w.mtr, root, way.as_deref(), depth)? {
            Some(parent) => btree::fanout(&mut w.mtr, parent)?.map(|fan| (parent, fan)),
            None => None,
        };
        let Some((parent, fan)) = fan else {
            continue;
        };
        let (room, done) = move_kids(&mut w.mtr, parent, &fan.kids, limit, stats)?;
        w.commit_yielding(record::Kind::Pages, Op::Vacuum as u8, Xid::NONE)?;
        if !room {
            return Ok(false);
        }
        if !done {
            // More children to move than one round takes: visit again.
            todo.push((way, depth));
            continue;
        }
        if !fan.leaves {
            for (kid_way, _) in fan.kids {
                todo.push((kid_way.or_else(|| way.clone()), depth + 1));
            }
        }
    }
    Ok(true)
}

/// Moves up to `NODE_MOVES_PER_ROUND` children of `parent` (all of them
/// read under this latch) from past `limit`. Returns whether room below
/// the limit remains and whether no child past it is left.
fn move_kids(
    mtr: &mut Mtr<'_>,
    parent: PageId,
    kids: &[(Option<Vec<u8>>, PageId)],
    limit: PageId,
    stats: &mut VacuumStats,
) -> Result<(bool, bool)> {
    for (moved, &(_, kid)) in kids.iter().filter(|(_, kid)| *kid >= limit).enumerate() {
        if moved == NODE_MOVES_PER_ROUND {
            return Ok((true, false));
        }
        if meta::lowest_free(mtr, limit)?.is_none() {
            return Ok((false, true));
        }
        // Read under this latch, it is a child (`None` would leave it be).
        let new = btree::move_child(mtr, parent, kid)?;
        debug_assert!(new.is_some(), "child {kid} of {parent} went");
        stats.nodes_moved += u64::from(new.is_some());
    }
    Ok((true, true))
}

/// Moves one key's versions found past `limit`, a few per round. False once
/// no room below the limit is left.
fn move_key(
    inner: &Inner,
    root: PageId,
    key: &[u8],
    limit: PageId,
    stats: &mut VacuumStats,
) -> Result<bool> {
    loop {
        let mut w = inner.store.write();
        let (moved, room) = move_round(&mut w.mtr, inner, root, key, limit)?;
        w.commit_yielding(record::Kind::Pages, Op::Vacuum as u8, Xid::NONE)?;
        stats.versions_moved += moved as u64;
        if !room {
            return Ok(false);
        }
        if moved < MOVES_PER_ROUND {
            return Ok(true);
        }
    }
}

/// Moves up to `MOVES_PER_ROUND` versions of `key` from past `limit`.
/// Returns how many moved and whether room below the limit remains.
fn move_round(
    mtr: &mut Mtr<'_>,
    inner: &Inner,
    root: PageId,
    key: &[u8],
    limit: PageId,
) -> Result<(usize, bool)> {
    let fsm = &inner.store.fsm;
    let Some(entry) = btree::get(mtr, root, key)? else {
        return Ok((0, true));
    };
    let mut c = Cursor::new(chain::head(mtr, &entry)?);
    // Who points at the version under the cursor: the index entry, or the
    // newer version (where it lies now).
    let mut newer: Option<Tid> = None;
    let mut moved = 0;
    for _ in 0..WINDOW {
        let Some(v) = c.next(mtr)? else {
            break;
        };
        if v.tid.page < limit {
            newer = Some(v.tid);
            continue;
        }
        let bytes = heap::read(mtr, v.tid)?;
        let Some(to) = heap::insert_below(mtr, fsm, &bytes, Some(limit))? else {
            return Ok((moved, false));
        };
        match newer {
            None => btree::insert(mtr, root, key, &to.encode())?,
            Some(n) => heap::modify(mtr, n, |b| tuple::set_prev(b, to))?,
        }
        heap::remove(mtr, fsm, v.tid)?;
        heap::release_if_empty(mtr, fsm, v.tid.page)?;
        newer = Some(to);
        moved += 1;
        if moved == MOVES_PER_ROUND {
            break;
        }
    }
    Ok((moved, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(pages: &[PageKind]) -> Option<(u32, u32)> {
        let free = pages.iter().filter(|k| **k == PageKind::Free).count() as u64;
        let heap_free = pages
            .iter()
            .map(|k| match k {
                PageKind::Heap { free, .. } => *free,
                _ => 0,
            })
            .sum();
        plan(pages.len() as u32, free, heap_free, |p| {
            Ok(pages[p.0 as usize])
        })
        .expect("plan")
        .map(|l| (l.heap.0, l.nodes.0))
    }

    #[test]
    fn the_limit_is_as_low_as_what_lies_past_it_fits_below() {
        let half = PageKind::Heap {
            used: 4096,
            free: 4096,
        };
        let mut pages = vec![PageKind::Fixed, PageKind::Fixed];
        pages.extend([half; 60]);
        pages.extend([PageKind::Free; 20]);
        pages.extend([PageKind::Node; 10]);
        pages.extend([half; 10]);
        // The last 10 half pages, the nodes and the free pages go above the
        // heap limit, then 24 more half pages: 34 · 4 KiB fit 99% of the
        // other 36 pages' free halves. The 10 nodes get room above it.
        assert_eq!(plan_of(&pages), Some((38, 50)));
        let tiny = [
            PageKind::Fixed,
            PageKind::Fixed,
            PageKind::Node,
            PageKind::Node,
        ];
        assert_eq!(plan_of(&tiny), None);
    }

    #[test]
    fn nothing_moves_past_a_page_that_cannot() {
        let half = PageKind::Heap {
            used: 4096,
            free: 4096,
        };
        let mut pages = vec![PageKind::Fixed, PageKind::Fixed];
        pages.extend([PageKind::Free; 100]);
        pages.push(PageKind::Fixed);
        pages.extend([half; 40]);
        pages.truncate(pages.len() - 25);
        assert_eq!(plan_of(&pages), None, "only 15 of 118 pages could go");
        pages.extend([half; 85]);
        assert_eq!(
            plan_of(&pages),
            Some((103, 105)),
            "the fixed page stops the cut"
        );
    }

    #[test]
    fn a_full_file_is_left_alone() {
        let full = PageKind::Heap {
            used: 8000,
            free: 192,
        };
        let pages = vec![full; 500];
        assert_eq!(plan_of(&pages), None);
    }
}
