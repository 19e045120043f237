//! Compaction: moving what lives near the end of the data file down into
//! free space nearer its start, so that vacuum can cut the end off.
//!
//! After a vacuum pass has removed dead versions, heap pages are often
//! half empty and free pages are scattered; the file cannot shrink while
//! one live page sits near its end. Compaction picks two *limits* — about
//! the number of pages the live data needs — and moves, one
//! mini-transaction at a time:
//!
//! - every version on a heap page at or past the heap limit into a page
//!   below it, relinking the newer version (or the index entry) that
//!   pointed at it, and freeing heap pages it empties;
//! - every whole page at or past the node limit into a free page below
//!   it: B+tree nodes, roots excepted (they never move), repointing the
//!   parent; overflow pages of large values, repointing the page before
//!   in the chain or the tuple; commit-log pages.
//!
//! The plan counts what fits in whole tuples: with rows of 1 KiB, a page
//! whose free bytes hold 1.9 rows takes one. It scans from the end with
//! the tuples' average length, then checks the lengths one by one,
//! longest first (a page with room for three rows of the average of
//! 3 000 and 100 bytes takes one of 3 000), raising the limit until they
//! fit. Counting bytes, or the average alone, promised room that was not
//! there, and a compaction that runs out of room strands versions on
//! every page past its limit, in key order, so the end of the file stays.
//!
//! What it costs when there is nothing to gain is kept small: no scan
//! when the free pages and the heap's free bytes could not make a cut
//! worth it; no walk of large values' chains unless one of their pages
//! lies past the node limit; and none at all while the file is as long as
//! when the last compaction's cut stopped short and a transaction that
//! was running then still runs (a page that did not move — overflow
//! pages no tuple names, after a crash — would stop it again; see
//! `engine::Stuck`).
//!
//! The heap's moves go by length class, longest first (`move_heap`), as
//! the plan counts them: moved in key order, short rows whose keys sort
//! first fill the pages below in gaps the long ones cannot use.
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
//! - a key's versions, and their overflow chains, by the key, looked up
//!   in the index, and the chain walked under the same latch
//!   (`move_round`, `move_chains`) — a long value's chain goes on from
//!   the page it stopped at, the one exception (`ChainPlace` argues it);
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
//! removal count (moving a version removes its old copy); a value's
//! overflow pages are read under the latch its tuple is read under. Writers find
//! versions through the index, as always. While compaction runs, the
//! free-space hints offer ordinary inserts a page past the limit only when
//! none below has room, and never offer one to compaction's own moves.
//! Roots are not moved, nor the overflow pages of a value whose tuple is
//! not written yet (or never was, after a crash): one of them near the
//! end stops the cut there.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::vacuum::VacuumStats;
use crate::btree;
use crate::buffer::mtr::{Mtr, PageAccess};
use crate::catalog;
use crate::engine::Stuck;
use crate::error::Result;
use crate::heap::{self, overflow, page as hpage, tuple};
use crate::ids::{PageId, Tid, Xid};
use crate::limits::{PAGE_SIZE, VACUUM_BATCH};
use crate::mvcc::chain::{self, Cursor};
use crate::mvcc::clog;
use crate::options::RacePoint;
use crate::page::{self, PageType};
use crate::redo::record::{self, Op};
use crate::store::freemap;
use crate::store::meta::{self, Field};
use crate::txn::Core;

/// Versions moved per mini-transaction (each touches up to three pages
/// besides the meta page and a free map).
const MOVES_PER_ROUND: usize = 4;
/// Versions of one chain examined per round.
const WINDOW: usize = 256;
/// B+tree nodes moved per mini-transaction.
const NODE_MOVES_PER_ROUND: usize = 4;
/// Overflow pages moved per mini-transaction (each touches the page, its
/// new place and the page or tuple that names it, besides the meta page
/// and free maps).
const OVERFLOW_MOVES_PER_ROUND: usize = 16;
/// Keys a sweep of the heap's moves keeps for the next length class's.
const DEFERRED_MAX: usize = 1 << 16;
/// Pages the plan reads under one hold of the store latch.
const PLAN_READS_PER_LATCH: u32 = 256;

/// What a page is, as far as planning a compaction goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PageKind {
    /// Free: room for a node or a heap page.
    Free,
    /// A whole page that can move: a B+tree node (not a root), a
    /// commit-log page or an overflow page.
    Node,
    /// A heap page: the lengths of its tuples.
    Heap(Vec<u16>),
    /// Goes with the cut, nothing to move (a free map past the limit).
    Gone,
    /// Cannot move: the meta page, roots.
    Fixed,
}

/// Share of the counted room that the plan fills (writers take some of it
/// meanwhile, and moves in key order pack less tightly than the largest
/// tuples first).
const FILL: (u64, u64) = (97, 100);

/// Heap free bytes are counted in steps of this many (rounded down).
const STEP: usize = 32;

/// Where compaction moves things below: heap versions under `heap`, whole
/// pages (nodes, commit-log and overflow pages) under `nodes`. Moving the
/// heap out of the pages between the two frees the pages the rest move
/// into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub heap: PageId,
    pub nodes: PageId,
    /// The length classes of the tuples past the heap limit: bit `c` set
    /// when some tuple's length has its highest bit at `c`. The heap's
    /// moves go class by class, longest first, as the plan counted them.
    pub classes: u16,
}

/// The room below a candidate heap limit: its heap pages by free bytes
/// (from the free-space hints, in steps of `STEP`), and its free pages.
#[derive(Clone)]
struct Room {
    by_free: Vec<u64>,
    free_pages: u64,
}

impl Room {
    fn new(free_pages: u64, hints: &HashMap<PageId, usize>) -> Room {
        let mut by_free = vec![0; PAGE_SIZE / STEP + 1];
        for &f in hints.values() {
            by_free[f.min(PAGE_SIZE) / STEP] += 1;
        }
        Room {
            by_free,
            free_pages,
        }
    }

    /// Page `p` is no longer below the limit.
    fn take(&mut self, hint: Option<usize>, free: bool) {
        if let Some(f) = hint {
            let n = &mut self.by_free[f.min(PAGE_SIZE) / STEP];
            *n = n.saturating_sub(1);
        }
        if free {
            self.free_pages = self.free_pages.saturating_sub(1);
        }
    }

    /// How many tuples of `len` bytes fit, all of one size: a quick
    /// estimate (tuples move whole, so a page with 1.9 tuples' worth of
    /// free bytes takes one).
    fn tuples(&self, len: usize) -> u64 {
        let in_heap: u64 = self
            .by_free
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(b, &n)| n * hpage::fitting(b * STEP, len) as u64)
            .sum();
        in_heap + self.free_pages * hpage::fitting(hpage::EMPTY_FREE, len) as u64
    }

    /// Whether tuples of the lengths counted in `lens` (length → how
    /// many) all fit, with the plan's margin, placed longest first, each
    /// length into the roomiest pages: the check that sizes unlike their
    /// average need (a page whose free bytes hold the average of 3 000-
    /// and 100-byte rows three times takes one 3 000-byte row).
    fn fits(&self, lens: &BTreeMap<u16, u64>) -> bool {
        let mut pages = self.by_free.clone();
        pages[hpage::EMPTY_FREE / STEP] += self.free_pages;
        for (&len, &n) in lens.iter().rev() {
            let len = usize::from(len);
            let mut need = (n * FILL.1).div_ceil(FILL.0);
            for b in (0..pages.len()).rev() {
                let k = hpage::fitting(b * STEP, len) as u64;
                if need == 0 || k == 0 {
                    break;
                }
                let used = pages[b].min(need.div_ceil(k));
                if used == 0 {
                    continue;
                }
                need = need.saturating_sub(used * k);
                pages[b] -= used;
                // What a page that took k of them has left.
                let rest = (b * STEP).saturating_sub(k as usize * (len + 4));
                pages[rest / STEP] += used;
            }
            if need > 0 {
                return false;
            }
        }
        true
    }
}

/// The bit of `len`'s length class (its highest set bit) in
/// `Limits::classes`.
fn class_bit(len: u16) -> u16 {
    1 << (15 - len.max(1).leading_zeros())
}

/// The shortest length of each class in `classes` but the lowest, longest
/// first: the heap's moves take the tuples of at least each in turn, then
/// the rest.
fn class_floors(classes: u16) -> Vec<usize> {
    let lowest = classes.trailing_zeros();
    (lowest + 1..16)
        .rev()
        .filter(|&c| classes & (1 << c) != 0)
        .map(|c| 1usize << c)
        .collect()
}

/// What the plan learned of one page at or past the heap limit.
struct Above {
    hint: Option<usize>,
    free: bool,
    /// Must move whole (`Some(true)`), is left free by the heap's moves
    /// (`Some(false)`), or is a free map (`None`).
    class: Option<bool>,
    lens: Vec<u16>,
}

/// Plans a compaction, scanning pages from the end (`kind` says what page
/// `p` is; `hints` are the heap pages' free bytes, `free_pages` the free
/// pages in the whole file).
///
/// The heap limit is the lowest page such that the tuples at or past it
/// fit whole into the room below it: first estimated at their average
/// length while scanning, then checked class by class (`Room::fits`) and
/// raised until they fit. The node limit is the lowest page at or past
/// that such that the pages between the two that the heap's moves leave
/// free (free pages and heap pages) take every whole page at or past it
/// that must move. `None` if that would not cut at least an eighth of the
/// file and 16 pages — known without a scan when the free pages and the
/// heap's free bytes together could not make that much.
pub(crate) fn plan(
    count: u32,
    free_pages: u64,
    hints: &HashMap<PageId, usize>,
    kind: impl FnMut(PageId) -> Result<PageKind>,
) -> Result<Option<Limits>> {
    if !could_gain(count, free_pages, hints) {
        return Ok(None);
    }
    let full = Room::new(free_pages, hints);
    let Some(mut above) = scan_from_end(count, hints, &full, kind)? else {
        return Ok(None);
    };
    let n = fitting_whole(&full, &above);
    above.truncate(n);
    let heap = count - n as u32;
    let nodes = node_limit(heap, &above);
    assert!(
        heap <= nodes && nodes <= count,
        "limits heap {heap}, nodes {nodes} in a file of {count} pages"
    );
    let classes = above
        .iter()
        .flat_map(|a| &a.lens)
        .fold(0u16, |c, &l| c | class_bit(l));
    let limits = Limits {
        heap: PageId(heap),
        nodes: PageId(nodes),
        classes,
    };
    Ok(worth(count, u64::from(count - nodes)).then_some(limits))
}

/// Scans pages from the end down (`kind` says what page `p` is) while the
/// tuples seen so far, at their average length, fit into the room below
/// the page (`full`, less the pages scanned): what was learned of each
/// page down to the lowest such one, last page first. `None` if not even
/// the last page's tuples fit, or the scan met a page that cannot move
/// first.
fn scan_from_end(
    count: u32,
    hints: &HashMap<PageId, usize>,
    full: &Room,
    mut kind: impl FnMut(PageId) -> Result<PageKind>,
) -> Result<Option<Vec<Above>>> {
    let mut below = full.clone();
    let (mut tuples, mut bytes) = (0u64, 0u64);
    let mut above: Vec<Above> = Vec::new();
    let mut estimate = None;
    // Pages 0 and 1 (meta, first free map) never move.
    for p in (2..count).rev() {
        let k = kind(PageId(p))?;
        let hint = hints.get(&PageId(p)).copied();
        let free = k == PageKind::Free;
        below.take(hint, free);
        let (class, lens) = match k {
            PageKind::Free => (Some(false), Vec::new()),
            PageKind::Node => (Some(true), Vec::new()),
            PageKind::Heap(lens) => {
                tuples += lens.len() as u64;
                bytes += lens.iter().map(|&l| u64::from(l)).sum::<u64>();
                (Some(false), lens)
            }
            PageKind::Gone => (None, Vec::new()),
            PageKind::Fixed => break,
        };
        above.push(Above {
            hint,
            free,
            class,
            lens,
        });
        if tuples > 0 {
            let len = bytes.div_ceil(tuples) as usize;
            if tuples * FILL.1 > below.tuples(len) * FILL.0 {
                break;
            }
        }
        estimate = Some(above.len());
    }
    Ok(estimate.map(|n| {
        above.truncate(n);
        above
    }))
}

/// How many of the pages `above` (last page first) can stay above the
/// heap limit: the most whose tuples fit class by class into the room
/// below them (`Room::fits`), found by halving. Fitting only gets easier
/// as pages leave `above`.
fn fitting_whole(full: &Room, above: &[Above]) -> usize {
    let fits = |n: usize| {
        let mut room = full.clone();
        let mut lens = BTreeMap::new();
        for a in &above[..n] {
            room.take(a.hint, a.free);
            for &l in &a.lens {
                *lens.entry(l).or_insert(0) += 1;
            }
        }
        room.fits(&lens)
    };
    let n = above.len();
    if fits(n) {
        return n;
    }
    let (mut lo, mut hi) = (0, n);
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    assert!(lo < n, "{lo} of {n} pages fit after all of them did not");
    lo
}

/// The node limit for a heap limit of `heap` and the pages `above` it
/// (last page first): walking them upward, the lowest page such that the
/// pages between the two that the heap's moves leave free take every
/// whole page past it, with a margin for nodes writers split meanwhile.
fn node_limit(heap: u32, above: &[Above]) -> u32 {
    let mut to_move = above.iter().filter(|a| a.class == Some(true)).count() as u64;
    let mut room = 0u64;
    let mut nodes = heap;
    for a in above.iter().rev() {
        if to_move == 0 || to_move + to_move / 16 + 2 <= room {
            break;
        }
        match a.class {
            Some(true) => to_move -= 1,
            Some(false) => room += 1,
            None => {}
        }
        nodes += 1;
    }
    nodes
}

/// Whether cutting `gain` pages off a file of `count` is worth a
/// compaction: an eighth of the file, and 16 pages.
fn worth(count: u32, gain: u64) -> bool {
    gain >= 16 && gain >= u64::from(count) / 8
}

/// Whether the free pages and the heap's free bytes together could make
/// a cut worth a compaction: if not, no plan is needed to know there is
/// none (a file of large values with nothing deleted is scanned for
/// nothing otherwise).
fn could_gain(count: u32, free_pages: u64, hints: &HashMap<PageId, usize>) -> bool {
    let heap_free: u64 = hints.values().map(|&f| f as u64).sum();
    worth(count, free_pages + heap_free / hpage::EMPTY_FREE as u64)
}

/// Merges sparse leaves (when the pass removed keys), then moves what it
/// can from past the planned limits; moves nothing if the plan finds too
/// little to gain, or if the last compaction stopped short at a file of
/// this length. Returns the limits it moved below.
pub(crate) fn run(inner: &Core, stats: &mut VacuumStats) -> Result<Option<Limits>> {
    let (roots, tables) = roots(inner)?;
    if stats.keys_removed > 0 {
        for &root in &tables {
            let (merged, _) = btree::merge_pass(inner.engine.store(), root, Op::Vacuum as u8)?;
            stats.leaves_merged += merged;
        }
    }
    let Some((count, free, nodes)) = plan_inputs(inner, &roots)? else {
        return Ok(None);
    };
    let (limit, last_overflow) = plan_reading(inner, count, free, &nodes)?;
    let Some(limits) = limit else {
        return Ok(None);
    };
    // Chains are walked only when one of their pages is to move.
    let chains = last_overflow.is_some_and(|p| p >= limits.nodes);
    inner.engine.store().fsm.set_ceiling(Some(limits.heap));
    let r = move_all(inner, (&roots, &tables), limits, count, chains, stats);
    inner.engine.store().fsm.set_ceiling(None);
    r.map(|()| Some(limits))
}

/// What a plan starts from, read under one latch hold: the page count,
/// the free pages, and the pages of every B+tree node but the roots.
/// `None` (no plan needed) while the last compaction's cut is stuck at
/// this file length, or when the free room could not make a cut worth it.
fn plan_inputs(inner: &Core, roots: &[PageId]) -> Result<Option<(u32, u64, HashSet<PageId>)>> {
    let (count, free, mut nodes) = {
        let mut r = inner.engine.store().read();
        let m = meta::read(&mut r.view)?;
        let count = meta::get(&m, Field::PageCount);
        let xmin = inner.txns.manager().snapshot().xmin;
        if inner
            .engine
            .compaction_stuck()
            .is_some_and(|s| s.holds(count, xmin))
        {
            return Ok(None);
        }
        let free = freemap::count_free(&mut r.view, count)?;
        if !could_gain(count, free, &inner.engine.store().fsm.snapshot()) {
            return Ok(None);
        }
        let mut nodes = HashSet::new();
        for &root in roots {
            btree::node_pages(&mut r.view, root, &mut nodes)?;
        }
        (count, free, nodes)
    };
    for root in roots {
        nodes.remove(root);
    }
    Ok(Some((count, free, nodes)))
}

/// `plan`, reading each page it asks about (nodes known from `nodes`),
/// with the latch let go every `PLAN_READS_PER_LATCH` reads: the plan is
/// an estimate (each move checks again), and writers are not held up by
/// a long scan. Also returns the last overflow page met.
fn plan_reading(
    inner: &Core,
    count: u32,
    free: u64,
    nodes: &HashSet<PageId>,
) -> Result<(Option<Limits>, Option<PageId>)> {
    let hints = inner.engine.store().fsm.snapshot();
    let mut latch = None;
    let mut reads = 0u32;
    let mut last_overflow = None;
    let limit = plan(count, free, &hints, |p| {
        if freemap::is_map(p) {
            return Ok(PageKind::Gone);
        }
        if nodes.contains(&p) {
            return Ok(PageKind::Node);
        }
        reads += 1;
        if reads.is_multiple_of(PLAN_READS_PER_LATCH) {
            // Let go before taking it again: a writer waiting in between
            // would otherwise wait for us while we wait for it.
            latch = None;
        }
        let r = latch.get_or_insert_with(|| inner.engine.store().read());
        r.view.with_page(p, |b| match page::page_type(b) {
            Some(PageType::Freed) => PageKind::Free,
            Some(PageType::Heap) => PageKind::Heap(
                hpage::used_slots(b)
                    .iter()
                    .map(|&(_, len)| len as u16)
                    .collect(),
            ),
            Some(PageType::Overflow) => {
                last_overflow = last_overflow.max(Some(p));
                PageKind::Node
            }
            Some(PageType::Clog | PageType::ClogDir) => PageKind::Node,
            _ => PageKind::Fixed,
        })
    })?;
    drop(latch);
    Ok((limit, last_overflow))
}

/// After the file was cut: notes whether the cut reached the node limit
/// compaction planned (`planned`), so that a page that would not move
/// (one no tuple names, left by a crash) does not set every later pass
/// moving rows for a cut that cannot happen (`engine::Stuck` says when
/// compaction tries again).
pub(crate) fn settle(inner: &Core, planned: Option<Limits>) -> Result<()> {
    let Some(limits) = planned else {
        return Ok(());
    };
    let count = {
        let mut r = inner.engine.store().read();
        meta::get(&*meta::read(&mut r.view)?, Field::PageCount)
    };
    let short = count > limits.nodes.0;
    let now = inner.txns.manager().snapshot();
    inner.engine.set_compaction_stuck(short.then_some(Stuck {
        count,
        xmin: now.xmin,
        xmax: now.xmax,
    }));
    Ok(())
}

/// Every tree's root (the catalog, the prepared transactions, the
/// commit timestamps, the tables), and the tables' alone.
fn roots(inner: &Core) -> Result<(Vec<PageId>, Vec<PageId>)> {
    let mut r = inner.engine.store().read();
    let m = meta::read(&mut r.view)?;
    let mut roots: Vec<PageId> = [Field::CatalogRoot, Field::PreparedRoot, Field::CommitTsRoot]
        .map(|f| PageId(meta::get(&m, f)))
        .into_iter()
        .filter(|p| p.0 != 0)
        .collect();
    // The catalog's rows live in the heap like a table's.
    let mut tables: Vec<PageId> = catalog::all_roots(&mut r.view)?;
    roots.extend(&tables);
    tables.push(catalog::root(&mut r.view)?);
    Ok((roots, tables))
}

fn move_all(
    inner: &Core,
    (roots, tables): (&[PageId], &[PageId]),
    limits: Limits,
    count: u32,
    chains: bool,
    stats: &mut VacuumStats,
) -> Result<()> {
    // The heap first: emptying its pages past the heap limit frees the
    // pages the nodes move into.
    move_heap(inner, tables, limits, stats)?;
    // Each internal node is visited once and once more per few children
    // moved; the bound stops a walk that trees growing meanwhile would
    // keep long.
    let visits = 2 * u64::from(count) + 1;
    for &root in roots {
        if !move_nodes(inner, root, limits.nodes, visits, stats)? {
            return Ok(());
        }
    }
    if chains && !move_overflow(inner, tables, limits.nodes, stats)? {
        return Ok(());
    }
    // Commit-log pages count as nodes: whole pages, moved into free ones.
    loop {
        let mut w = inner.engine.store().write();
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

/// Moves every version past the heap limit below it, the longest first as
/// the plan counted them: rows of 1 000 bytes whose keys sort before rows
/// of 3 000, moved in key order, leave gaps the long ones cannot use. The
/// first sweep walks every key and moves the versions of the longest
/// class; a key it left a shorter version of past the limit is kept for
/// the next class's sweep (up to `DEFERRED_MAX` keys, past which the
/// next sweep walks every key again). Stops once no room is left below.
fn move_heap(
    inner: &Core,
    tables: &[PageId],
    limits: Limits,
    stats: &mut VacuumStats,
) -> Result<()> {
    let mut floors = class_floors(limits.classes);
    floors.push(0);
    let mut deferred: Option<Vec<(PageId, Vec<u8>)>> = None;
    for shortest in floors {
        let mut next = Some(Vec::new());
        let mut sweep = |root: PageId, key: &[u8]| -> Result<bool> {
            let (room, left) = move_key(inner, root, key, limits.heap, shortest, stats)?;
            if left {
                match &mut next {
                    Some(keys) if keys.len() < DEFERRED_MAX => keys.push((root, key.to_vec())),
                    _ => next = None,
                }
            }
            Ok(room)
        };
        match deferred.take() {
            Some(keys) => {
                for (root, key) in keys {
                    if !sweep(root, &key)? {
                        return Ok(());
                    }
                }
            }
            None => {
                for &root in tables {
                    let mut keys = btree::Batches::new(root);
                    loop {
                        let batch =
                            keys.next(&mut inner.engine.store().read().view, VACUUM_BATCH)?;
                        if batch.is_empty() {
                            break;
                        }
                        for (key, _) in &batch {
                            if !sweep(root, key)? {
                                return Ok(());
                            }
                        }
                    }
                }
            }
        }
        deferred = next;
    }
    Ok(())
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
    inner: &Core,
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
        inner.engine.race(RacePoint::CompactionVisit);
        let mut w = inner.engine.store().write();
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

/// Moves the overflow pages past `limit` of every version of every key,
/// key by key like the heap's moves. False once no free page below the
/// limit is left.
fn move_overflow(
    inner: &Core,
    tables: &[PageId],
    limit: PageId,
    stats: &mut VacuumStats,
) -> Result<bool> {
    for &root in tables {
        let mut keys = btree::Batches::new(root);
        loop {
            let batch = keys.next(&mut inner.engine.store().read().view, VACUUM_BATCH)?;
            if batch.is_empty() {
                break;
            }
            for (key, _) in &batch {
                let mut from = None;
                loop {
                    let mut w = inner.engine.store().write();
                    let (moved, room, next) = move_chains(&mut w.mtr, root, key, limit, from)?;
                    w.commit_yielding(record::Kind::Pages, Op::Vacuum as u8, Xid::NONE)?;
                    stats.overflow_pages_moved += moved as u64;
                    if !room {
                        return Ok(false);
                    }
                    if moved < OVERFLOW_MOVES_PER_ROUND {
                        break;
                    }
                    from = next;
                }
            }
        }
    }
    Ok(true)
}

/// Where `move_chains` stopped in a key's versions: the version (by its
/// tuple, and the chain that tuple names) and the place in its chain.
///
/// This carries a page id from one latch hold to the next, which nothing
/// else in compaction does: the chain of a live version changes only by
/// vacuum (freeing a dead version's chain) and by compaction itself, and
/// both run in this pass, under its lock; writers free only chains no
/// tuple names yet, and tuples move only in the heap's moves, which are
/// over. Each round still checks that the tuple names the same chain, and
/// `overflow::move_below` that the page is a full overflow page.
#[derive(Clone, Copy)]
struct ChainPlace {
    version: Tid,
    chain: (PageId, u32),
    at: overflow::Resume,
}

/// Moves up to `OVERFLOW_MOVES_PER_ROUND` overflow pages past `limit` of
/// `key`'s versions, the chain walked under this latch, going on from
/// `from` if given (a long value takes several rounds, and walking its
/// chain from the start each time made its moves quadratic). Returns how
/// many moved, whether room below the limit remains, and where it
/// stopped.
fn move_chains(
    mtr: &mut Mtr<'_>,
    root: PageId,
    key: &[u8],
    limit: PageId,
    mut from: Option<ChainPlace>,
) -> Result<(usize, bool, Option<ChainPlace>)> {
    let Some(entry) = btree::get(mtr, root, key)? else {
        return Ok((0, true, None));
    };
    let mut c = Cursor::new(chain::head(mtr, &entry)?);
    let mut moved = 0;
    for _ in 0..WINDOW {
        let Some(v) = c.next(mtr)? else {
            break;
        };
        let Some((first, len)) = v.overflow else {
            continue;
        };
        // Versions before the one it stopped in were done.
        let resume = match from {
            Some(f) if f.version != v.tid => continue,
            Some(f) => {
                from = None;
                (f.chain == (first, len)).then_some(f.at)
            }
            None => None,
        };
        let max = OVERFLOW_MOVES_PER_ROUND - moved;
        let done = overflow::move_below(mtr, (first, len as usize), limit, max, resume)?;
        if done.head != first {
            heap::modify(mtr, v.tid, |b| tuple::set_overflow(b, done.head, len))?;
        }
        moved += done.moved;
        if !done.room || moved == OVERFLOW_MOVES_PER_ROUND {
            let place = done.resume.map(|at| ChainPlace {
                version: v.tid,
                chain: (done.head, len),
                at,
            });
            return Ok((moved, done.room, place));
        }
    }
    Ok((moved, true, None))
}

/// Moves one key's versions of at least `shortest` bytes found past
/// `limit`, a few per round. Returns whether room below the limit is left,
/// and whether a shorter version was left past it.
fn move_key(
    inner: &Core,
    root: PageId,
    key: &[u8],
    limit: PageId,
    shortest: usize,
    stats: &mut VacuumStats,
) -> Result<(bool, bool)> {
    loop {
        let mut w = inner.engine.store().write();
        let (moved, room, left) = move_round(&mut w.mtr, inner, (root, key), limit, shortest)?;
        w.commit_yielding(record::Kind::Pages, Op::Vacuum as u8, Xid::NONE)?;
        stats.versions_moved += moved as u64;
        if !room || moved < MOVES_PER_ROUND {
            return Ok((room, left));
        }
    }
}

/// Moves up to `MOVES_PER_ROUND` versions of `key` of at least `shortest`
/// bytes from past `limit`. Returns how many moved, whether room below the
/// limit remains, and whether a shorter version was left past it.
fn move_round(
    mtr: &mut Mtr<'_>,
    inner: &Core,
    (root, key): (PageId, &[u8]),
    limit: PageId,
    shortest: usize,
) -> Result<(usize, bool, bool)> {
    let fsm = &inner.engine.store().fsm;
    let Some(entry) = btree::get(mtr, root, key)? else {
        return Ok((0, true, false));
    };
    let mut c = Cursor::new(chain::head(mtr, &entry)?);
    // Who points at the version under the cursor: the index entry, or the
    // newer version (where it lies now).
    let mut newer: Option<Tid> = None;
    let (mut moved, mut left) = (0, false);
    for _ in 0..WINDOW {
        let Some(v) = c.next(mtr)? else {
            break;
        };
        if v.tid.page < limit {
            newer = Some(v.tid);
            continue;
        }
        let bytes = heap::read(mtr, v.tid)?;
        if bytes.len() < shortest {
            // Its turn comes with its class; it stays where it is.
            left = true;
            newer = Some(v.tid);
            continue;
        }
        let Some(to) = heap::insert_below(mtr, fsm, &bytes, Some(limit))? else {
            return Ok((moved, false, left));
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
    Ok((moved, true, left))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heap page holding `tuples` tuples of `len` bytes.
    fn heap(tuples: usize, len: u16) -> PageKind {
        PageKind::Heap(vec![len; tuples])
    }

    /// The plan of a file whose pages are `pages`, every heap page hinted
    /// with its free bytes.
    fn plan_of(pages: &[PageKind]) -> Option<(u32, u32)> {
        let free = pages.iter().filter(|k| **k == PageKind::Free).count() as u64;
        let hints = pages
            .iter()
            .enumerate()
            .filter_map(|(p, k)| match k {
                PageKind::Heap(lens) => Some((
                    PageId(p as u32),
                    hpage::EMPTY_FREE - lens.iter().map(|&l| usize::from(l) + 4).sum::<usize>(),
                )),
                _ => None,
            })
            .collect();
        plan(pages.len() as u32, free, &hints, |p| {
            Ok(pages[p.0 as usize].clone())
        })
        .expect("plan")
        .map(|l| (l.heap.0, l.nodes.0))
    }

    #[test]
    fn the_limit_is_as_low_as_what_lies_past_it_fits_below() {
        // 100 pages of three 1000-byte tuples: a page takes 8, so five
        // more; the last 61 pages' 183 tuples fit 97% of the room of the
        // other 39 pages (195), 62 pages' 186 would not fit 190.
        let mut pages = vec![PageKind::Fixed, PageKind::Fixed];
        pages.extend(vec![heap(3, 1000); 100]);
        assert_eq!(plan_of(&pages), Some((41, 41)));
        let tiny = [
            PageKind::Fixed,
            PageKind::Fixed,
            PageKind::Node,
            PageKind::Node,
        ];
        assert_eq!(plan_of(&tiny), None);
    }

    #[test]
    fn room_is_counted_in_whole_tuples() {
        // Each page holding one tuple of 2800 bytes has 1.9 more tuples'
        // worth of free bytes: one more fits. By bytes, the last 39 pages'
        // tuples would seem to fit the other 21; whole, only the last 29
        // pages' fit (97% of the other 31).
        let mut pages = vec![PageKind::Fixed, PageKind::Fixed];
        pages.extend(vec![heap(1, 2800); 60]);
        assert_eq!(plan_of(&pages), Some((2 + 31, 2 + 31)));
        // Tuples of 2000 bytes: a page holding one takes three more.
        let mut pages = vec![PageKind::Fixed, PageKind::Fixed];
        pages.extend(vec![heap(1, 2000); 60]);
        assert_eq!(plan_of(&pages), Some((2 + 16, 2 + 16)));
    }

    #[test]
    fn tuples_unlike_their_average_are_counted_by_length() {
        // Pages each holding a 3 000- and a 100-byte tuple: 5 048 free
        // bytes take three tuples of their average length (1 550) but one
        // of 3 000. At the average, the last 35 pages' tuples would seem
        // to fit the other 25; the 3 000-byte ones alone need a page
        // each, so only the last 29 go (97% of the other 31 pages).
        let mut pages = vec![PageKind::Fixed, PageKind::Fixed];
        pages.extend(vec![PageKind::Heap(vec![3000, 100]); 60]);
        assert_eq!(plan_of(&pages), Some((2 + 31, 2 + 31)));
    }

    #[test]
    fn whole_pages_move_into_what_the_heap_moves_leave_free() {
        let half = heap(4, 1000);
        let mut pages = vec![PageKind::Fixed, PageKind::Fixed];
        pages.extend(vec![half.clone(); 60]);
        pages.extend(vec![PageKind::Free; 20]);
        pages.extend(vec![PageKind::Node; 10]);
        pages.extend(vec![half.clone(); 10]);
        // 4 tuples of 1000 bytes leave room for 4 more: the 140 tuples on
        // the last 35 heap pages fit 97% of the room on the first 35, plus
        // the 20 free pages' 8 each once the heap limit passes below
        // them. The 10 nodes go to the first 10 + 10/16 + 2 pages past it.
        let (heap_limit, nodes) = plan_of(&pages).expect("a plan");
        assert!(heap_limit < 62, "{heap_limit}");
        assert_eq!(nodes, heap_limit + 12);
        // Overflow pages of values a quarter of which are left, behind a
        // heap page: the live pages need as many free ones below the cut.
        let mut pages = vec![PageKind::Fixed, PageKind::Fixed, heap(50, 60)];
        for _ in 0..100 {
            pages.extend([
                PageKind::Node,
                PageKind::Free,
                PageKind::Free,
                PageKind::Free,
            ]);
        }
        let (heap_limit, nodes) = plan_of(&pages).expect("a plan");
        assert_eq!(heap_limit, 3, "the heap page stays");
        // n pages past the heap limit keep their n/4 live pages and have
        // 3n/4 free for the other 100 - n/4 (and a margin of a sixteenth
        // and 2): n = 106.
        assert_eq!(nodes, 3 + 106);
    }

    #[test]
    fn nothing_moves_past_a_page_that_cannot() {
        let half = heap(4, 1000);
        let mut pages = vec![PageKind::Fixed, PageKind::Fixed];
        pages.extend(vec![PageKind::Free; 100]);
        pages.push(PageKind::Fixed);
        pages.extend(vec![half.clone(); 40]);
        pages.truncate(pages.len() - 25);
        assert_eq!(plan_of(&pages), None, "only 15 of 118 pages could go");
        pages.extend(vec![half.clone(); 85]);
        assert_eq!(
            plan_of(&pages),
            Some((103, 103)),
            "the fixed page stops the cut"
        );
    }

    #[test]
    fn a_full_file_is_left_alone() {
        let pages = vec![heap(8, 1000); 500];
        assert_eq!(plan_of(&pages), None);
    }
}
