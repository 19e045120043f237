//! A persistent B+tree of byte keys to small byte values, one per table
//! (key → tid of the key's newest version) plus the catalog (name → table).
//!
//! ```text
//!                 [ root (fixed page id) ]
//!                /          |            \
//!         [internal]    [internal]    [internal]
//!         /   |   \        ...           ...
//!     [leaf][leaf][leaf]  sorted cells: key -> value
//! ```
//! - The root never moves: a root split copies its halves into two new
//!   children, so catalogs hold a table's root forever.
//! - Inserts split full nodes bottom-up within one mini-transaction, so a
//!   split is logged as a single record and replays whole.
//! - Removal deletes a leaf once it is empty and unlinks it from its parent
//!   (collapsing the root when it is left with one child). Deletion itself
//!   does not merge underfull nodes, which keeps it simple; vacuum's
//!   compaction merges sparse neighbouring leaves (`merge_pass`).
//! - Leaves have no sibling links; iteration re-descends from the root at
//!   each leaf boundary using the separator "fences" seen on the way down.
//!   That costs a few cached page lookups per leaf and frees deletion from
//!   maintaining links.

pub mod node;

use std::borrow::Cow;
use std::ops::Bound;

use crate::buffer::mtr::{Mtr, PageAccess};
use crate::error::{Error, Result};
use crate::ids::{PageId, Xid};
use crate::limits::{BTREE_CELL_MAX, PAGE_SIZE};
use crate::page::{PageBuf, PageType};
use crate::store::{meta, Store};

/// Deepest tree accepted; deeper means a cycle in damaged pages.
const DEPTH_MAX: usize = 32;

fn corrupt(acc: &impl PageAccess, pid: PageId, what: &str) -> Error {
    corrupt_in(acc.file(), pid, what)
}

fn corrupt_in(file: &std::path::Path, pid: PageId, what: &str) -> Error {
    Error::corruption(
        file,
        pid.0 as u64 * PAGE_SIZE as u64,
        format!("B+tree page {pid}: {what}"),
    )
}

/// Starts an empty tree whose root is the (already allocated) page `root`.
pub fn create(mtr: &mut Mtr<'_>, root: PageId) -> Result<()> {
    node::init(mtr.page_mut(root)?, root, true);
    Ok(())
}

/// How a descent chooses among children.
#[derive(Clone, Copy)]
enum Seek<'k> {
    /// Toward the leaf that holds `k` (or would).
    At(&'k [u8]),
    /// Toward the leaf holding the largest key below `k`.
    Below(&'k [u8]),
    /// Leftmost leaf.
    First,
    /// Rightmost leaf.
    Last,
}

struct Descent {
    leaf: PageId,
    /// (internal page, child index taken)
    path: Vec<(PageId, usize)>,
    /// Where the smallest separator greater than every key of the leaf
    /// lies (internal page, cell), if any. Positions, not copies: writers
    /// descend for every put and never need the keys.
    upper_fence: Option<(PageId, usize)>,
    /// Where the separator at or below every key of the leaf lies, if any.
    lower_fence: Option<(PageId, usize)>,
    /// The heads of the separators either side of the leaf in its parent.
    bounds: Bounds,
}

/// Bounds on a node's heads: the heads of the separators in its parent
/// either side of it (`node::search_within`).
type Bounds = (Option<u32>, Option<u32>);

/// The bounds the separators either side of child `c` of internal node
/// `p` put on the child's heads.
fn child_bounds(p: &PageBuf, c: usize) -> Bounds {
    (
        c.checked_sub(1).and_then(|i| node::head_at(p, i)),
        node::head_at(p, c),
    )
}

impl Descent {
    /// The key of a fence, read from its page (within the same latch hold
    /// as the descent).
    fn fence(acc: &mut impl PageAccess, at: Option<(PageId, usize)>) -> Result<Option<Vec<u8>>> {
        let Some((pid, i)) = at else { return Ok(None) };
        match acc.with_page(pid, |p| node::key(p, i).map(<[u8]>::to_vec))? {
            Some(k) => Ok(Some(k)),
            None => Err(corrupt(acc, pid, "not a valid B+tree node")),
        }
    }
}

/// Where `k` cuts node `p`: the index of its first cell above `k` (`past`)
/// or at or above it, found by a search.
fn edge(p: &PageBuf, k: &[u8], past: bool, bounds: Bounds) -> Option<usize> {
    Some(match node::search_within(p, k, bounds)? {
        Ok(i) if past => i + 1,
        Ok(i) | Err(i) => i,
    })
}

fn child_index(p: &PageBuf, seek: Seek<'_>, bounds: Bounds) -> Option<usize> {
    Some(match seek {
        Seek::At(k) => edge(p, k, true, bounds)?,
        Seek::Below(k) => edge(p, k, false, bounds)?,
        Seek::First => 0,
        Seek::Last => node::count(p),
    })
}

fn descend(acc: &mut impl PageAccess, root: PageId, seek: Seek<'_>) -> Result<Descent> {
    let mut d = Descent {
        leaf: root,
        path: Vec::new(),
        upper_fence: None,
        lower_fence: None,
        bounds: (None, None),
    };
    loop {
        let pid = d.leaf;
        let bounds = d.bounds;
        let step = acc.with_page(pid, |p| {
            let leaf = node::is_leaf(p)?;
            if leaf {
                return Some((true, 0, pid, 0, bounds));
            }
            let i = child_index(p, seek, bounds)?;
            Some((
                false,
                i,
                node::child(p, i)?,
                node::count(p),
                child_bounds(p, i),
            ))
        })?;
        let Some((leaf, i, child, n, bounds)) = step else {
            return Err(corrupt(acc, pid, "not a valid B+tree node"));
        };
        let upper = (i < n).then_some((pid, i));
        let lower = (i > 0).then(|| (pid, i - 1));
        if leaf {
            return Ok(d);
        }
        if d.path.len() >= DEPTH_MAX || child.0 == 0 {
            return Err(corrupt(acc, pid, "bad child pointer or tree too deep"));
        }
        d.path.push((pid, i));
        if upper.is_some() {
            d.upper_fence = upper;
        }
        if lower.is_some() {
            d.lower_fence = lower;
        }
        d.leaf = child;
        d.bounds = bounds;
    }
}

/// Runs `f` on the leaf that holds or would hold `key`, in the same visit
/// that finds the page is a leaf (a lookup visits each page once), with
/// the bounds its parent's separators put on its heads (for
/// `node::search_within`); `f` returns `None` if the leaf is malformed.
/// Unlike `descend`, it collects no path or fences: a lookup allocates
/// nothing on the way down.
fn at_leaf<R>(
    acc: &mut impl PageAccess,
    root: PageId,
    key: &[u8],
    f: impl FnOnce(&PageBuf, Bounds) -> Option<R>,
) -> Result<R> {
    enum Step<R> {
        Leaf(Option<R>),
        Child(PageId, Bounds),
        Bad,
    }
    let mut f = Some(f);
    let mut pid = root;
    let mut bounds: Bounds = (None, None);
    for _ in 0..=DEPTH_MAX {
        let step = acc.with_page(pid, |p| match node::is_leaf(p) {
            Some(true) => Step::Leaf(f.take().and_then(|f| f(p, bounds))),
            Some(false) => match child_index(p, Seek::At(key), bounds) {
                Some(i) => {
                    node::child(p, i).map_or(Step::Bad, |c| Step::Child(c, child_bounds(p, i)))
                }
                None => Step::Bad,
            },
            None => Step::Bad,
        })?;
        match step {
            Step::Leaf(Some(r)) => return Ok(r),
            Step::Leaf(None) => return Err(corrupt(acc, pid, "malformed leaf")),
            Step::Child(child, b) if child.0 != 0 => (pid, bounds) = (child, b),
            _ => return Err(corrupt(acc, pid, "not a valid B+tree node")),
        }
    }
    Err(corrupt(acc, pid, "tree too deep"))
}

/// The value stored under `key`.
pub fn get(acc: &mut impl PageAccess, root: PageId, key: &[u8]) -> Result<Option<Vec<u8>>> {
    get_with(acc, root, key, <[u8]>::to_vec)
}

/// `f` of the value stored under `key`, read in place.
pub fn get_with<R>(
    acc: &mut impl PageAccess,
    root: PageId,
    key: &[u8],
    f: impl FnOnce(&[u8]) -> R,
) -> Result<Option<R>> {
    at_leaf(acc, root, key, |p, bounds| {
        match node::search_within(p, key, bounds)? {
            Ok(i) => Some(Some(f(node::value(p, i)?))),
            Err(_) => Some(None),
        }
    })
}

/// Where a key is, or would go, in a tree: found by one descent, valid
/// while the mini-transaction that found it changes no page of the tree.
/// A put looks its key up and then inserts it through the same place, so
/// it descends once.
pub struct Place {
    d: Descent,
    /// `Ok(i)`: cell `i` of the leaf holds the key; `Err(i)`: it would go there.
    pos: Result<usize, usize>,
}

/// Finds `key`'s place in the tree rooted at `root`.
pub fn place(mtr: &mut Mtr<'_>, root: PageId, key: &[u8]) -> Result<Place> {
    let d = descend(mtr, root, Seek::At(key))?;
    match node::search_within(mtr.page(d.leaf)?, key, d.bounds) {
        Some(pos) => Ok(Place { d, pos }),
        None => Err(corrupt(mtr, d.leaf, "malformed leaf")),
    }
}

impl Place {
    /// `f` of the value stored under the key, read in place, if it is there.
    pub fn value_with<R>(
        &self,
        mtr: &mut Mtr<'_>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>> {
        let Ok(i) = self.pos else { return Ok(None) };
        match node::value(mtr.page(self.d.leaf)?, i) {
            Some(v) => Ok(Some(f(v))),
            None => Err(corrupt(mtr, self.d.leaf, "malformed leaf")),
        }
    }
}

/// Inserts or replaces `key` → `value`.
pub fn insert(mtr: &mut Mtr<'_>, root: PageId, key: &[u8], value: &[u8]) -> Result<()> {
    let at = place(mtr, root, key)?;
    insert_at(mtr, at, key, value)
}

/// Inserts or replaces `key` → `value` at the place `place` found for it.
pub fn insert_at(mtr: &mut Mtr<'_>, at: Place, key: &[u8], value: &[u8]) -> Result<()> {
    let Place { mut d, pos } = at;
    let leaf = d.leaf;
    let p = mtr.page(leaf)?;
    let pos = match pos {
        Ok(i) => {
            if let Some((s, e)) = node::value_range(p, i, value.len()) {
                mtr.page_mut_in(leaf, &[(s, e)])?[s..e].copy_from_slice(value);
                return Ok(());
            }
            let p = match node::remove_ranges(p, i) {
                Some((shift, r)) => mtr.page_mut_shift(leaf, shift, &r)?,
                None => mtr.page_mut(leaf)?,
            };
            node::remove(p, i).ok_or_else(|| corrupt(mtr, leaf, "malformed leaf"))?;
            i
        }
        Err(i) => i,
    };
    let mut pending = (leaf, pos, node::leaf_cell(key, value));
    loop {
        let (pid, pos, cell) = pending;
        let p = match node::insert_ranges(mtr.page(pid)?, pos, cell.len()) {
            Some((shift, r)) => mtr.page_mut_shift(pid, shift, &r)?,
            None => mtr.page_mut(pid)?,
        };
        match node::insert(p, pos, &cell) {
            Some(true) => return Ok(()),
            Some(false) => {}
            None => return Err(corrupt(mtr, pid, "malformed node")),
        }
        let is_root = d.path.is_empty();
        let Some((sep, right)) = split(mtr, pid, pos, cell, is_root)? else {
            return Ok(());
        };
        let Some((parent, idx)) = d.path.pop() else {
            return Err(corrupt(mtr, pid, "split of a non-root without parent"));
        };
        pending = (parent, idx, node::internal_cell(&sep, right));
    }
}

/// Splits node `pid` while inserting `cell` at `pos`. For a non-root,
/// returns the separator and the new right sibling to insert in the
/// parent; a root split is completed here and returns `None`.
fn split(
    mtr: &mut Mtr<'_>,
    pid: PageId,
    pos: usize,
    cell: Vec<u8>,
    is_root: bool,
) -> Result<Option<(Vec<u8>, PageId)>> {
    let pool = mtr.pool();
    let p = mtr.page(pid)?;
    let leaf = node::is_leaf(p).ok_or_else(|| corrupt_in(pool.path(), pid, "not a node"))?;
    let link = node::link(p);
    let mut cells = node::cells(p).ok_or_else(|| corrupt_in(pool.path(), pid, "malformed node"))?;
    cells.insert(pos, cell);
    let total: usize = cells.iter().map(|c| c.len() + node::SLOT).sum();
    // Key limits guarantee at least three cells per full node, and halves
    // that fit; anything else means the node's cells were damaged.
    let enough = cells.len() >= 3 || leaf && cells.len() >= 2;
    let sizes_ok = total <= PAGE_SIZE - node::SLOTS + BTREE_CELL_MAX
        && cells.iter().all(|c| c.len() <= BTREE_CELL_MAX);
    if !enough || !sizes_ok {
        return Err(corrupt_in(pool.path(), pid, "cells too large to split"));
    }
    let mut acc = 0;
    let mut m = 0;
    while m < cells.len() - 1 && acc + cells[m].len() + node::SLOT <= total / 2 {
        acc += cells[m].len() + node::SLOT;
        m += 1;
    }
    let m = m.clamp(1, cells.len() - if leaf { 1 } else { 2 });
    let (left, sep, right, right_link) = if leaf {
        let right = cells.split_off(m);
        let sep = node::cell_key(&right[0], true).to_vec();
        (cells, sep, right, PageId(0))
    } else {
        let mut right = cells.split_off(m);
        let mid = right.remove(0);
        (
            cells,
            node::cell_key(&mid, false).to_vec(),
            right,
            node::cell_child(&mid),
        )
    };
    let ty = if leaf {
        PageType::Leaf
    } else {
        PageType::Internal
    };
    let rpid = meta::alloc(mtr, ty)?;
    let r = mtr.page_mut(rpid)?;
    node::init(r, rpid, leaf);
    node::set_link(r, right_link);
    node::rebuild(r, &right);
    if !is_root {
        node::rebuild(mtr.page_mut(pid)?, &left);
        return Ok(Some((sep, rpid)));
    }
    let lpid = meta::alloc(mtr, ty)?;
    let l = mtr.page_mut(lpid)?;
    node::init(l, lpid, leaf);
    node::set_link(l, link);
    node::rebuild(l, &left);
    let root = mtr.page_mut(pid)?;
    node::init(root, pid, false);
    node::set_link(root, lpid);
    node::rebuild(root, &[node::internal_cell(&sep, rpid)]);
    Ok(None)
}

/// Removes `key`; returns whether it was there. Empty leaves are unlinked
/// and freed.
pub fn remove(mtr: &mut Mtr<'_>, root: PageId, key: &[u8]) -> Result<bool> {
    let pool = mtr.pool();
    let mut d = descend(mtr, root, Seek::At(key))?;
    let leaf = d.leaf;
    let p = mtr.page(leaf)?;
    let i = match node::search(p, key) {
        Some(Ok(i)) => i,
        Some(Err(_)) => return Ok(false),
        None => return Err(corrupt(mtr, leaf, "malformed leaf")),
    };
    let p = match node::remove_ranges(p, i) {
        Some((shift, r)) => mtr.page_mut_shift(leaf, shift, &r)?,
        None => mtr.page_mut(leaf)?,
    };
    node::remove(p, i).ok_or_else(|| corrupt_in(pool.path(), leaf, "malformed leaf"))?;
    if node::count(p) > 0 || d.path.is_empty() {
        return Ok(true);
    }
    // Unlink empty nodes upward.
    let mut gone = leaf;
    while let Some((parent, idx)) = d.path.pop() {
        meta::free(mtr, gone)?;
        let pp = mtr.page_mut(parent)?;
        let n = node::count(pp);
        if n == 0 {
            // The parent's only child went away: the parent is empty too.
            if d.path.is_empty() {
                node::init(pp, parent, true);
                return Ok(true);
            }
            gone = parent;
            continue;
        }
        if idx == 0 {
            let first = node::child(pp, 1)
                .ok_or_else(|| corrupt_in(pool.path(), parent, "malformed node"))?;
            node::set_link(pp, first);
            node::remove(pp, 0)
        } else {
            node::remove(pp, idx - 1)
        }
        .ok_or_else(|| corrupt_in(pool.path(), parent, "malformed node"))?;
        if d.path.is_empty() && node::count(mtr.page(parent)?) == 0 {
            collapse_root(mtr, parent)?;
        }
        return Ok(true);
    }
    Ok(true)
}

/// The root has a single child: pull the child's contents up into it.
fn collapse_root(mtr: &mut Mtr<'_>, root: PageId) -> Result<()> {
    let pool = mtr.pool();
    let only = node::link(mtr.page(root)?);
    let c = mtr.page(only)?;
    let leaf = node::is_leaf(c).ok_or_else(|| corrupt_in(pool.path(), only, "not a node"))?;
    let link = node::link(c);
    let cells = node::cells(c).ok_or_else(|| corrupt_in(pool.path(), only, "malformed node"))?;
    let r = mtr.page_mut(root)?;
    node::init(r, root, leaf);
    node::set_link(r, link);
    node::rebuild(r, &cells);
    meta::free(mtr, only)
}

/// Direction of a range read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Ascending keys.
    Forward,
    /// Descending keys.
    Reverse,
}

fn within(k: &[u8], lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    let above = match lo {
        Bound::Included(b) => k >= b,
        Bound::Excluded(b) => k > b,
        Bound::Unbounded => true,
    };
    let below = match hi {
        Bound::Included(b) => k <= b,
        Bound::Excluded(b) => k < b,
        Bound::Unbounded => true,
    };
    above && below
}

/// The children of node `pid`, or `None` if it is a leaf.
pub fn children(acc: &mut impl PageAccess, pid: PageId) -> Result<Option<Vec<PageId>>> {
    let kids = acc.with_page(pid, |p| match node::is_leaf(p)? {
        true => Some(None),
        false => (0..=node::count(p))
            .map(|i| node::child(p, i))
            .collect::<Option<Vec<_>>>()
            .map(Some),
    })?;
    kids.ok_or_else(|| corrupt(acc, pid, "malformed node"))
}

/// The internal node `depth` levels below `root` on the way to `key` (the
/// leftmost way for `None`), or `None` if that way meets a leaf first. A
/// walk that lets the latch go between nodes names each node by its way
/// (see `fanout`) and finds it again with this, under the latch it works
/// under: a page id from an earlier hold may name a freed page by now.
pub fn internal_at(
    acc: &mut impl PageAccess,
    root: PageId,
    key: Option<&[u8]>,
    depth: usize,
) -> Result<Option<PageId>> {
    let d = descend(acc, root, key.map_or(Seek::First, Seek::At))?;
    Ok(d.path.get(depth).map(|&(pid, _)| pid))
}

/// The children of internal node `pid` with the way to each: the key of
/// the separator before it (`None` for the first child, which the way to
/// `pid` reaches), and whether they are leaves. `None` if `pid` is a leaf.
pub fn fanout(acc: &mut impl PageAccess, pid: PageId) -> Result<Option<Fanout>> {
    let kids = acc.with_page(pid, |p| match node::is_leaf(p)? {
        true => Some(None),
        false => (0..=node::count(p))
            .map(|i| {
                let way = match i.checked_sub(1) {
                    Some(s) => Some(node::key(p, s)?.to_vec()),
                    None => None,
                };
                Some((way, node::child(p, i)?))
            })
            .collect::<Option<Vec<_>>>()
            .map(Some),
    })?;
    let Some(kids) = kids.ok_or_else(|| corrupt(acc, pid, "malformed node"))? else {
        return Ok(None);
    };
    let Some(&(_, first)) = kids.first() else {
        return Err(corrupt(acc, pid, "internal node without children"));
    };
    let leaves = acc.with_page(first, node::is_leaf)?;
    let leaves = leaves.ok_or_else(|| corrupt(acc, first, "not a valid B+tree node"))?;
    Ok(Some(Fanout { kids, leaves }))
}

/// An internal node's children as `fanout` finds them.
pub struct Fanout {
    /// (the separator key before the child, the child), in key order.
    pub kids: Vec<(Option<Vec<u8>>, PageId)>,
    /// Whether the children are leaves.
    pub leaves: bool,
}

/// Adds the page of every node in the tree at `root` to `out`, reading
/// only internal nodes (a level's first node says whether it is of leaves).
pub fn node_pages(
    acc: &mut impl PageAccess,
    root: PageId,
    out: &mut std::collections::HashSet<PageId>,
) -> Result<()> {
    let mut level = vec![root];
    out.insert(root);
    for _ in 0..DEPTH_MAX {
        let Some(first) = level.first() else { break };
        if children(acc, *first)?.is_none() {
            return Ok(());
        }
        let mut next = Vec::new();
        for pid in level {
            next.extend(children(acc, pid)?.unwrap_or_default());
        }
        out.extend(next.iter().copied());
        level = next;
    }
    Err(corrupt(acc, root, "tree too deep"))
}

/// What `merge_leaves` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Merge {
    /// Child `i + 1` went into child `i`.
    Merged,
    /// Child `i` took the first cells of child `i + 1`.
    Shifted,
    /// The two stay apart (too full together, not leaves, or the parent
    /// would be left without a separator).
    Kept,
    /// `parent` has no child `i + 1`.
    End,
}

/// Leaves merged hold at most this many bytes, so the next few inserts do
/// not split them again at once.
const MERGED_MAX: usize = (PAGE_SIZE - node::SLOTS) * 19 / 20;

/// Merges leaf child `i + 1` of internal node `parent` into leaf child `i`
/// when both fit in one leaf with room to spare: the right leaf's cells
/// join the left's, their separator leaves the parent, the right leaf is
/// freed. Leaves that vacuum left sparse give their pages back this way.
fn merge_leaves(mtr: &mut Mtr<'_>, parent: PageId, i: usize) -> Result<Merge> {
    let Some(kids) = children(mtr, parent)? else {
        return Ok(Merge::End);
    };
    if i + 1 >= kids.len() {
        return Ok(Merge::End);
    }
    // A parent keeps at least one separator (two children).
    if kids.len() < 3 {
        return Ok(Merge::Kept);
    }
    let (l, r) = (kids[i], kids[i + 1]);
    let pool = mtr.pool();
    let mut cells = Vec::new();
    for pid in [l, r] {
        let p = mtr.page(pid)?;
        if node::is_leaf(p) != Some(true) {
            return Ok(Merge::Kept);
        }
        cells.extend(node::cells(p).ok_or_else(|| corrupt_in(pool.path(), pid, "malformed leaf"))?);
    }
    let size = |cs: &[Vec<u8>]| cs.iter().map(|c| c.len() + node::SLOT).sum::<usize>();
    if size(&cells) > MERGED_MAX {
        return shift(mtr, parent, i, (l, r), cells);
    }
    node::rebuild(mtr.page_mut(l)?, &cells);
    node::remove(mtr.page_mut(parent)?, i)
        .ok_or_else(|| corrupt_in(pool.path(), parent, "malformed node"))?;
    meta::free(mtr, r)?;
    Ok(Merge::Merged)
}

/// Rounds of `merge_leaves` over one node's children: each merges two or
/// steps one child on, and a node has fewer than `PAGE_SIZE / SLOT`.
const MERGE_ROUNDS_MAX: usize = 2 * PAGE_SIZE / node::SLOT;

/// Runs `merge_leaves` over every pair of neighbouring leaves of the tree
/// at `root`, one mini-transaction (logged with `op`) per pair, the latch
/// let go between them. Returns how many pairs merged and how many leaves
/// took cells from their right neighbour.
///
/// Like compaction's node moves, it keeps no page id across the latch:
/// a parent is named by the way to it (`internal_at`, `fanout`) and found
/// again from the root in each mini-transaction, so a node freed or
/// reused meanwhile is never taken for the parent it was.
pub fn merge_pass(store: &Store, root: PageId, op: u8) -> Result<(u64, u64)> {
    let (mut merged, mut shifted) = (0, 0);
    let count = {
        let mut r = store.read();
        let m = crate::store::meta::read(&mut r.view)?;
        meta::get(&m, meta::Field::PageCount)
    };
    let mut todo: Vec<(Option<Vec<u8>>, usize)> = vec![(None, 0)];
    for _ in 0..=count {
        let Some((way, depth)) = todo.pop() else {
            break;
        };
        let fan = {
            let mut r = store.read();
            match internal_at(&mut r.view, root, way.as_deref(), depth)? {
                Some(parent) => fanout(&mut r.view, parent)?,
                None => None,
            }
        };
        let Some(fan) = fan else { continue };
        if !fan.leaves {
            for (kid_way, _) in fan.kids {
                todo.push((kid_way.or_else(|| way.clone()), depth + 1));
            }
            continue;
        }
        // The node's children are leaves.
        let mut i = 0;
        for _ in 0..MERGE_ROUNDS_MAX {
            let (m, _) = store.with_mtr(op, Xid::NONE, |mtr| {
                match internal_at(mtr, root, way.as_deref(), depth)? {
                    Some(parent) => merge_leaves(mtr, parent, i),
                    None => Ok(Merge::End),
                }
            })?;
            match m {
                Merge::Merged => merged += 1,
                Merge::Shifted => {
                    shifted += 1;
                    i += 1;
                }
                Merge::Kept => i += 1,
                Merge::End => break,
            }
        }
    }
    Ok((merged, shifted))
}

/// Fills leaf `l` up to `MERGED_MAX` with the first cells of its right
/// neighbour `r` (both children of `parent`, `cells` all of theirs in key
/// order) and moves their separator, so that `r`, smaller now, may merge
/// with the leaf after it. `Kept` if that would move little, or if the new
/// separator does not fit the parent.
fn shift(
    mtr: &mut Mtr<'_>,
    parent: PageId,
    i: usize,
    (l, r): (PageId, PageId),
    cells: Vec<Vec<u8>>,
) -> Result<Merge> {
    let pool = mtr.pool();
    let left_len = node::count(mtr.page(l)?);
    let mut fill = 0;
    let mut take = 0;
    for c in &cells {
        if fill + c.len() + node::SLOT > MERGED_MAX {
            break;
        }
        fill += c.len() + node::SLOT;
        take += 1;
    }
    // Worth a record only if a sixteenth of a leaf moves.
    let moved: usize = cells[left_len.min(take)..take]
        .iter()
        .map(|c| c.len() + node::SLOT)
        .sum();
    if take <= left_len || take >= cells.len() || moved < PAGE_SIZE / 16 {
        return Ok(Merge::Kept);
    }
    let sep = node::cell_key(&cells[take], true).to_vec();
    let mut above = node::cells(mtr.page(parent)?)
        .ok_or_else(|| corrupt_in(pool.path(), parent, "malformed node"))?;
    let Some(slot) = above.get_mut(i) else {
        return Err(corrupt_in(pool.path(), parent, "separator missing"));
    };
    *slot = node::internal_cell(&sep, r);
    if node::SLOTS + above.iter().map(|c| c.len() + node::SLOT).sum::<usize>() > PAGE_SIZE {
        return Ok(Merge::Kept);
    }
    node::rebuild(mtr.page_mut(parent)?, &above);
    node::rebuild(mtr.page_mut(l)?, &cells[..take]);
    node::rebuild(mtr.page_mut(r)?, &cells[take..]);
    Ok(Merge::Shifted)
}

/// Moves child `old` of internal node `parent` to the page `alloc` gives
/// (a copy of it, then `old` is freed). `None`, with nothing changed, if
/// `old` is no longer a child of `parent` (a split moved it meanwhile).
pub fn move_child(mtr: &mut Mtr<'_>, parent: PageId, old: PageId) -> Result<Option<PageId>> {
    let Some(kids) = children(mtr, parent)? else {
        return Ok(None);
    };
    let Some(i) = kids.iter().position(|&c| c == old) else {
        return Ok(None);
    };
    let pool = mtr.pool();
    let ty = crate::page::page_type(mtr.page(old)?)
        .filter(|t| matches!(t, PageType::Leaf | PageType::Internal))
        .ok_or_else(|| corrupt_in(pool.path(), old, "not a node"))?;
    let new = meta::relocate(mtr, old, ty)?;
    node::set_child(mtr.page_mut(parent)?, i, new)
        .ok_or_else(|| corrupt_in(pool.path(), parent, "malformed node"))?;
    Ok(Some(new))
}

/// A tree's entries in key order, a batch per call, for passes over a
/// whole table (vacuum, statistics). Where it stopped is kept as a key, so
/// the tree may change between batches and no latch is held across them.
pub struct Batches {
    root: PageId,
    after: Bound<Vec<u8>>,
    done: bool,
}

impl Batches {
    /// A pass over the tree rooted at `root`.
    pub fn new(root: PageId) -> Batches {
        Batches {
            root,
            after: Bound::Unbounded,
            done: false,
        }
    }

    /// The next (key, value) entries, at most `limit`; empty at the end.
    pub fn next(
        &mut self,
        acc: &mut impl PageAccess,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        if self.done {
            return Ok(out);
        }
        let lo = self.after.as_ref().map(Vec::as_slice);
        self.done = range(
            acc,
            self.root,
            lo,
            Bound::Unbounded,
            Dir::Forward,
            limit,
            &mut out,
        )?;
        match out.last() {
            Some((last, _)) => self.after = Bound::Excluded(last.clone()),
            None => self.done = true,
        }
        Ok(out)
    }
}

/// Entries with keys in (`lo`, `hi`), in direction `dir`, at most `limit`
/// of them, appended to `out`. Returns true when the range is exhausted;
/// otherwise resume with the last key returned as an excluded bound.
pub fn range(
    acc: &mut impl PageAccess,
    root: PageId,
    lo: Bound<&[u8]>,
    hi: Bound<&[u8]>,
    dir: Dir,
    limit: usize,
    out: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<bool> {
    range_with(acc, root, (lo, hi), dir, limit, |k, v| {
        out.push((k.to_vec(), v.to_vec()))
    })
}

/// `range`, handing each entry to `take` where it lies in its leaf, so a
/// caller keeps only what it needs of it.
pub fn range_with(
    acc: &mut impl PageAccess,
    root: PageId,
    (lo, hi): (Bound<&[u8]>, Bound<&[u8]>),
    dir: Dir,
    limit: usize,
    mut take: impl FnMut(&[u8], &[u8]),
) -> Result<bool> {
    let range = RangeScan { lo, hi, dir, limit };
    // Borrowed until the range crosses into a second leaf: most ranges
    // end in their first.
    let mut cursor: Bound<Cow<'_, [u8]>> = match dir {
        Dir::Forward => lo.map(Cow::Borrowed),
        Dir::Reverse => hi.map(Cow::Borrowed),
    };
    let mut taken = 0;
    loop {
        let cut = cursor.as_ref().map(|k| &**k);
        let d = descend(acc, root, range.seek(cut))?;
        let ended = acc.with_page(d.leaf, |p| {
            range.take_from_leaf(p, d.bounds, cut, &mut taken, &mut take)
        })?;
        match ended {
            None => return Err(corrupt(acc, d.leaf, "malformed leaf")),
            Some(true) => {
                let past_end = taken < limit;
                return Ok(past_end);
            }
            Some(false) => {}
        }
        match range.next_cursor(acc, &d)? {
            None => return Ok(true),
            Some(b) => cursor = b.map(Cow::Owned),
        }
    }
}

/// A range scan's fixed terms: its bounds, direction and limit.
struct RangeScan<'r> {
    lo: Bound<&'r [u8]>,
    hi: Bound<&'r [u8]>,
    dir: Dir,
    limit: usize,
}

impl RangeScan<'_> {
    /// Where to descend to resume from `cursor` (a bound in the scan's
    /// direction).
    #[inline]
    fn seek<'c>(&self, cursor: Bound<&'c [u8]>) -> Seek<'c> {
        match (cursor, self.dir) {
            (Bound::Unbounded, Dir::Forward) => Seek::First,
            (Bound::Unbounded, Dir::Reverse) => Seek::Last,
            (Bound::Included(k), Dir::Reverse) => Seek::At(k),
            (Bound::Excluded(k), Dir::Reverse) => Seek::Below(k),
            (Bound::Included(k) | Bound::Excluded(k), Dir::Forward) => Seek::At(k),
        }
    }

    /// Hands `take` the entries of leaf `p` from `cursor` on, in the
    /// scan's direction, counting them in `taken`: `Some(true)` once the
    /// limit or the range's end is reached, `Some(false)` at the leaf's
    /// end, `None` for a malformed leaf.
    #[inline]
    fn take_from_leaf(
        &self,
        p: &PageBuf,
        bounds: Bounds,
        cursor: Bound<&[u8]>,
        taken: &mut usize,
        take: &mut impl FnMut(&[u8], &[u8]),
    ) -> Option<bool> {
        let (dir, lo, hi) = (self.dir, self.lo, self.hi);
        let (lo_now, hi_now) = match dir {
            Dir::Forward => (cursor, hi),
            Dir::Reverse => (lo, cursor),
        };
        let n = node::count(p);
        // Where the cursor cuts the leaf, found by a search rather than
        // a walk from its first cell: a short range costs a few key
        // comparisons wherever it starts.
        let from = match cursor {
            Bound::Unbounded => None,
            Bound::Included(k) => Some(edge(p, k, dir == Dir::Reverse, bounds)?),
            Bound::Excluded(k) => Some(edge(p, k, dir == Dir::Forward, bounds)?),
        };
        // A search lands between cells, whatever the page holds.
        assert!(from.unwrap_or(0) <= n, "cut {from:?} past {n} cells");
        // The j-th cell in the scan's direction.
        let (start, cells) = match dir {
            Dir::Forward => (from.unwrap_or(0), n.saturating_sub(from.unwrap_or(0))),
            Dir::Reverse => (from.unwrap_or(n), from.unwrap_or(n)),
        };
        for j in 0..cells {
            let i = match dir {
                Dir::Forward => start + j,
                Dir::Reverse => start - 1 - j,
            };
            let k = node::key(p, i)?;
            if within(k, lo_now, hi_now) {
                take(k, node::value(p, i)?);
                *taken += 1;
                if *taken >= self.limit {
                    return Some(true);
                }
            } else if (dir == Dir::Forward && !within(k, Bound::Unbounded, hi))
                || (dir == Dir::Reverse && !within(k, lo, Bound::Unbounded))
            {
                return Some(true);
            }
        }
        Some(false)
    }

    /// The cursor into the next leaf in the scan's direction after `d`'s,
    /// or `None` where there is none or it lies past the range.
    #[inline]
    fn next_cursor(
        &self,
        acc: &mut impl PageAccess,
        d: &Descent,
    ) -> Result<Option<Bound<Vec<u8>>>> {
        let next = match self.dir {
            Dir::Forward => Descent::fence(acc, d.upper_fence)?.map(Bound::Included),
            Dir::Reverse => Descent::fence(acc, d.lower_fence)?.map(Bound::Excluded),
        };
        let Some(b) = next else { return Ok(None) };
        let outside = match (&b, self.dir) {
            (Bound::Included(k), Dir::Forward) => !within(k, Bound::Unbounded, self.hi),
            (Bound::Excluded(k), Dir::Reverse) => match self.lo {
                Bound::Included(l) | Bound::Excluded(l) => k.as_slice() <= l,
                Bound::Unbounded => false,
            },
            _ => false,
        };
        Ok(if outside { None } else { Some(b) })
    }
}

#[cfg(test)]
mod tests;
