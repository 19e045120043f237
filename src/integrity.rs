//! The integrity check: walks every structure in the data file and
//! verifies what the engine relies on.
//!
//! - every page reached is read (so its checksum and self-id are checked),
//!   reached once from exactly one owner, below the page count, and of the
//!   type its owner expects;
//! - B+trees: keys strictly ascending, inside the bounds their parents set,
//!   every leaf at the same depth;
//! - version chains: every index entry leads to tuples of that key, each
//!   reached once; creators and deleters below the xid high-water mark;
//!   overflow chains as long as their tuples say;
//! - heap pages: every tuple in use belongs to some chain, and the header's
//!   free-space accounting adds up;
//! - the free map marks only freed pages, and the commit-log directory is
//!   well formed.
//!
//! Pages no structure reaches are counted as leaked (space, not data: for
//! example overflow pages of a large value whose tuple was never written
//! before a crash). Any other finding is `Error::Corruption`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::btree::node;
use crate::buffer::mtr::{PageAccess, ReadView};
use crate::codec::{u32_at, u64_at};
use crate::error::{Error, Result};
use crate::heap::{self, overflow};
use crate::ids::{PageId, Tid, Xid};
use crate::limits::PAGE_SIZE;
use crate::mvcc::chain::{self, Cursor};
use crate::page::{self, PageType, HDR};
use crate::store::freemap::{self, MAP_BITS};
use crate::store::meta::{self, Field, COMMIT_TS_HIGH, META};

/// What the check found in a sound database.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntegrityReport {
    /// Pages in the data file (the meta page's page count).
    pub pages: u64,
    /// B+tree nodes (catalog, prepared transactions and tables).
    pub btree_pages: u64,
    /// Prepared transactions recorded (waiting for a decision).
    pub prepared: u64,
    /// Heap pages holding tuples.
    pub heap_pages: u64,
    /// Overflow pages of large values.
    pub overflow_pages: u64,
    /// Commit-log pages and their directories.
    pub clog_pages: u64,
    /// Free pages, waiting for reuse.
    pub free_pages: u64,
    /// Free-map pages (one bit per page).
    pub free_map_pages: u64,
    /// Allocated pages nothing refers to.
    pub leaked_pages: u64,
    /// Tables: every root a catalog version names (with tables dropped, or
    /// created by a transaction rolled back, whose pages vacuum has not
    /// freed yet).
    pub tables: u64,
    /// Keys in all table indexes.
    pub keys: u64,
    /// Tuple versions.
    pub versions: u64,
}

/// The keys a B+tree node may hold: (low inclusive, high exclusive).
type Bounds = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A B+tree node as the check reads it.
struct TreeNode {
    is_leaf: bool,
    /// (key, value) in a leaf; (separator, empty) in an internal node.
    cells: Vec<(Vec<u8>, Vec<u8>)>,
    /// An internal node's children (one more than its cells); none in a
    /// leaf.
    children: Vec<PageId>,
}

/// Called for each entry of a B+tree leaf, in key order.
type LeafFn<'f, C> = dyn FnMut(&mut C, &[u8], &[u8]) -> Result<()> + 'f;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    Meta,
    Map,
    Free,
    Clog,
    Tree,
    Heap,
    Overflow,
}

struct Checker<'a, 'p> {
    view: ReadView<'a>,
    file: PathBuf,
    count: u32,
    owner: HashMap<u32, Owner>,
    tuples: HashSet<Tid>,
    next_xid: Xid,
    report: IntegrityReport,
    /// While the catalog is walked: the table roots its versions name.
    catalog_roots: Option<Vec<PageId>>,
    /// Told (pages reached, page count) every `PROGRESS_EVERY` pages.
    progress: &'p mut dyn FnMut(u64, u64),
}

const PROGRESS_EVERY: usize = 1024;

/// Runs the check over a consistent view (the caller holds the store
/// latch), telling `progress` how many of the pages it has reached.
pub fn check(
    view: ReadView<'_>,
    file: PathBuf,
    next_xid: Xid,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<IntegrityReport> {
    let mut view = view;
    let m = meta::read(&mut view)?;
    meta::validate(&m)?;
    let count = meta::get(&m, Field::PageCount);
    let mut c = Checker {
        view,
        file,
        count,
        owner: HashMap::new(),
        tuples: HashSet::new(),
        catalog_roots: None,
        next_xid,
        report: IntegrityReport {
            pages: count as u64,
            ..Default::default()
        },
        progress,
    };
    c.claim(META, Owner::Meta)?;
    c.free_map(meta::get(&m, Field::FreeHint))?;
    c.clog(PageId(meta::get(&m, Field::ClogDir)))?;
    // The catalog is a table whose rows name the tables' roots; every
    // version counts (a dropped table keeps its pages until vacuum frees
    // them), its rows not among the tables' keys.
    let (keys, versions) = (c.report.keys, c.report.versions);
    c.catalog_roots = Some(Vec::new());
    c.table(PageId(meta::get(&m, Field::CatalogRoot)))?;
    let mut tables = c.catalog_roots.take().unwrap_or_default();
    (c.report.keys, c.report.versions) = (keys, versions);
    tables.sort_unstable();
    tables.dedup();
    let mut prepared = 0;
    c.tree(
        PageId(meta::get(&m, Field::PreparedRoot)),
        &mut |_, _, _| {
            prepared += 1;
            Ok(())
        },
    )?;
    c.report.prepared = prepared;
    // Commit timestamps: 8-byte xid → 8-byte timestamp, none above the
    // high-water mark the next commit must exceed.
    let high = u64_at(&m[..], COMMIT_TS_HIGH).unwrap_or(0);
    c.tree(
        PageId(meta::get(&m, Field::CommitTsRoot)),
        &mut |c, key, value| match (key.len(), u64_at(value, 0)) {
            (8, Some(ts)) if value.len() == 8 && ts <= high => Ok(()),
            (8, Some(ts)) if value.len() == 8 => Err(c.err(
                META,
                format!("commit timestamp {ts} above the high-water mark {high}"),
            )),
            _ => Err(c.err(META, "commit-timestamp entry malformed".into())),
        },
    )?;
    for root in tables {
        c.report.tables += 1;
        c.table(root)?;
    }
    c.heap_pages()?;
    c.report.leaked_pages = count as u64 - c.owner.len() as u64;
    (c.progress)(count as u64, count as u64);
    Ok(c.report)
}

impl Checker<'_, '_> {
    fn err(&self, pid: PageId, what: String) -> Error {
        Error::corruption(&self.file, pid.0 as u64 * PAGE_SIZE as u64, what)
    }

    fn claim(&mut self, pid: PageId, owner: Owner) -> Result<()> {
        if pid.0 >= self.count {
            let what = format!(
                "page {pid} referenced but beyond the page count {}",
                self.count
            );
            return Err(self.err(pid, what));
        }
        match self.owner.insert(pid.0, owner) {
            None => {}
            Some(Owner::Heap) if owner == Owner::Heap => return Ok(()),
            Some(_) => return Err(self.err(pid, format!("page {pid} is referenced twice"))),
        }
        if self.owner.len().is_multiple_of(PROGRESS_EVERY) {
            (self.progress)(self.owner.len() as u64, self.count as u64);
        }
        match owner {
            Owner::Tree => self.report.btree_pages += 1,
            Owner::Heap => self.report.heap_pages += 1,
            Owner::Overflow => self.report.overflow_pages += 1,
            Owner::Clog => self.report.clog_pages += 1,
            Owner::Free => self.report.free_pages += 1,
            Owner::Map => self.report.free_map_pages += 1,
            Owner::Meta => {}
        }
        Ok(())
    }

    fn page_type(&mut self, pid: PageId) -> Result<Option<PageType>> {
        self.view.with_page(pid, page::page_type)
    }

    fn expect_type(&mut self, pid: PageId, want: PageType) -> Result<()> {
        let got = self.page_type(pid)?;
        if got != Some(want) {
            return Err(self.err(pid, format!("page {pid} should be {want:?}, is {got:?}")));
        }
        Ok(())
    }

    /// Every map page below the count, and every page they mark free.
    fn free_map(&mut self, hint: u32) -> Result<()> {
        for k in freemap::maps(self.count) {
            let pages = freemap::range_of(k, self.count);
            let map = freemap::map_of(PageId(pages.start));
            if map.0 < self.count {
                self.claim(map, Owner::Map)?;
                self.expect_type(map, PageType::FreeMap)?;
            }
            // The whole range: a bit set past the count is damage too.
            let all = pages.start..pages.start.saturating_add(MAP_BITS);
            let free: Vec<u32> = self.view.with_page(map, |p| {
                all.filter(|&pid| freemap::is_free(p, PageId(pid)))
                    .collect()
            })?;
            for pid in free.into_iter().map(PageId) {
                if pid.0 >= self.count || pid.0 < hint || pid == META || freemap::is_map(pid) {
                    let what = format!(
                        "free map {map} marks page {pid} free (count {}, hint {hint})",
                        self.count
                    );
                    return Err(self.err(map, what));
                }
                self.claim(pid, Owner::Free)?;
                self.expect_type(pid, PageType::Freed)?;
            }
        }
        Ok(())
    }

    fn clog(&mut self, mut dir: PageId) -> Result<()> {
        while dir.0 != 0 {
            self.claim(dir, Owner::Clog)?;
            self.expect_type(dir, PageType::ClogDir)?;
            let (count, next, entries) = self.view.with_page(dir, |p| {
                let count = u32_at(p, HDR).unwrap_or(u32::MAX) as usize;
                let entries: Vec<u32> = (0..count.min(PAGE_SIZE))
                    .filter_map(|i| u32_at(p, HDR + 8 + 4 * i))
                    .collect();
                (count, u32_at(p, HDR + 4).unwrap_or(0), entries)
            })?;
            if entries.len() != count {
                return Err(self.err(
                    dir,
                    format!("commit-log directory {dir} claims {count} entries"),
                ));
            }
            for e in entries.into_iter().filter(|&e| e != 0) {
                self.claim(PageId(e), Owner::Clog)?;
                self.expect_type(PageId(e), PageType::Clog)?;
            }
            dir = PageId(next);
        }
        Ok(())
    }

    /// Walks a B+tree, calling `leaf` for every entry in key order.
    fn tree(&mut self, root: PageId, leaf: &mut LeafFn<'_, Self>) -> Result<()> {
        let mut stack: Vec<(PageId, Bounds, usize)> = vec![(root, (None, None), 0)];
        let mut leaf_depth = None;
        while let Some((pid, bounds, depth)) = stack.pop() {
            if depth > 32 {
                return Err(self.err(pid, format!("B+tree below page {root} is too deep")));
            }
            self.claim(pid, Owner::Tree)?;
            let node = self.tree_node(pid)?;
            self.keys_in_order_within(pid, &node.cells, &bounds)?;
            if node.is_leaf {
                if *leaf_depth.get_or_insert(depth) != depth {
                    return Err(self.err(
                        pid,
                        format!("B+tree below page {root}: leaves at different depths"),
                    ));
                }
                for (k, v) in &node.cells {
                    leaf(self, k, v)?;
                }
                continue;
            }
            // Push children right to left so leaves come out in key order.
            let (lo, hi) = bounds;
            let cells = &node.cells;
            for (i, &child) in node.children.iter().enumerate().rev() {
                let clo = if i == 0 {
                    lo.clone()
                } else {
                    Some(cells[i - 1].0.clone())
                };
                let chi = if i < cells.len() {
                    Some(cells[i].0.clone())
                } else {
                    hi.clone()
                };
                stack.push((child, (clo, chi), depth + 1));
            }
        }
        Ok(())
    }

    /// B+tree node `pid` as read: its cells (keys, and values in a
    /// leaf) and children, or the corruption of a malformed node.
    fn tree_node(&mut self, pid: PageId) -> Result<TreeNode> {
        let node = self.view.with_page(pid, |p| {
            let is_leaf = node::is_leaf(p)?;
            if !node::header_ok(p) {
                return None;
            }
            let n = node::count(p);
            let mut cells = Vec::with_capacity(n);
            for i in 0..n {
                if !node::head_ok(p, i) {
                    return None;
                }
                let k = node::key(p, i)?.to_vec();
                let v = if is_leaf {
                    node::value(p, i)?.to_vec()
                } else {
                    Vec::new()
                };
                cells.push((k, v));
            }
            let children: Option<Vec<PageId>> = if is_leaf {
                Some(Vec::new())
            } else {
                (0..=n).map(|i| node::child(p, i)).collect()
            };
            Some(TreeNode {
                is_leaf,
                cells,
                children: children?,
            })
        })?;
        let node = node.ok_or_else(|| self.err(pid, format!("B+tree page {pid} is malformed")))?;
        assert!(
            node.is_leaf == node.children.is_empty()
                && (node.is_leaf || node.children.len() == node.cells.len() + 1),
            "B+tree page {pid} read with {} cells and {} children",
            node.cells.len(),
            node.children.len()
        );
        Ok(node)
    }

    /// Whether the keys of node `pid` ascend strictly and lie within the
    /// bounds its parent set (low inclusive, high exclusive).
    fn keys_in_order_within(
        &self,
        pid: PageId,
        cells: &[(Vec<u8>, Vec<u8>)],
        (lo, hi): &Bounds,
    ) -> Result<()> {
        for w in cells.windows(2) {
            if w[0].0 >= w[1].0 {
                return Err(self.err(pid, format!("B+tree page {pid}: keys out of order")));
            }
        }
        let out_of_bounds = cells.iter().any(|(k, _)| {
            lo.as_ref().is_some_and(|l| k < l) || hi.as_ref().is_some_and(|h| k >= h)
        });
        if out_of_bounds {
            return Err(self.err(
                pid,
                format!("B+tree page {pid}: key outside its parent's range"),
            ));
        }
        Ok(())
    }

    fn table(&mut self, root: PageId) -> Result<()> {
        self.tree(root, &mut |c, key, entry| {
            c.report.keys += 1;
            let head = chain::head(&c.view, entry)?;
            c.chain(key, head)
        })
    }

    fn chain(&mut self, key: &[u8], head: Tid) -> Result<()> {
        let mut cursor = Cursor::new(head);
        loop {
            let at = cursor.at();
            if at.is_null() {
                return Ok(());
            }
            if at.page.0 >= self.count {
                return Err(self.err(at.page, format!("tuple {at} beyond the page count")));
            }
            if !self.tuples.insert(at) {
                return Err(self.err(at.page, format!("tuple {at} is reached twice")));
            }
            self.claim(at.page, Owner::Heap)?;
            let Some((v, bytes)) = cursor.step(&mut self.view)? else {
                return Ok(());
            };
            self.report.versions += 1;
            let t = chain::decode(&self.view, &bytes, at)?;
            if t.key != key {
                return Err(self.err(
                    at.page,
                    format!("tuple {at} holds another key than its index entry"),
                ));
            }
            if v.xmin == Xid::NONE || v.xmin >= self.next_xid || v.xmax >= self.next_xid {
                return Err(self.err(
                    at.page,
                    format!(
                        "tuple {at} carries xids {}/{} beyond {}",
                        v.xmin, v.xmax, self.next_xid
                    ),
                ));
            }
            if let Some(roots) = self.catalog_roots.as_mut() {
                roots.push(crate::catalog::root_of(&self.file, t.key, t.body)?);
            }
            if let Some((first, len)) = v.overflow {
                for pid in overflow::pages(&mut self.view, first, len as usize)? {
                    self.claim(pid, Owner::Overflow)?;
                }
            }
        }
    }

    /// Every used slot of every heap page belongs to a chain, and the
    /// page's free-space accounting adds up.
    fn heap_pages(&mut self) -> Result<()> {
        let mut pages: Vec<PageId> = self
            .owner
            .iter()
            .filter(|(_, &o)| o == Owner::Heap)
            .map(|(&p, _)| PageId(p))
            .collect();
        pages.sort_unstable();
        for pid in pages {
            let info = self.view.with_page(pid, |p| {
                (
                    page::page_type(p),
                    heap::page::header_ok(p),
                    heap::page::used_slots(p),
                    heap::page::accounting(p),
                )
            })?;
            let (ty, ok, slots, (frag, upper)) = info;
            if ty != Some(PageType::Heap) || !ok {
                return Err(self.err(pid, format!("heap page {pid} is malformed")));
            }
            let used: usize = slots.iter().map(|(_, len)| len).sum();
            if used + frag != PAGE_SIZE - upper {
                return Err(self.err(pid, format!("heap page {pid}: {used} bytes of tuples and {frag} of holes do not fill {}", PAGE_SIZE - upper)));
            }
            if let Some((s, _)) = slots.iter().find(|(s, _)| {
                !self.tuples.contains(&Tid {
                    page: pid,
                    slot: *s,
                })
            }) {
                return Err(self.err(pid, format!("tuple ({pid},{}) belongs to no key", s.0)));
            }
        }
        Ok(())
    }
}
