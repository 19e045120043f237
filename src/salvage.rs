//! Salvage: the rows of a damaged database that can still be read, and an
//! account of the ones that cannot (`strata dump --salvage`).
//!
//! A normal read stops at the first damaged page it meets. Salvage walks a
//! B+tree from its root and steps over what it cannot read instead:
//!
//! ```text
//!             [ root ]
//!            /   |    \
//!      [node] [XXXX]  [node]      a damaged node: every key between the
//!       / \     ↑       / \       separators around it is lost (how
//!     [l] [l]  skipped [l] [l]    many is unknown), reported as a range
//!      |
//!   key → [heap XXXX]             a damaged heap or overflow page under a
//!                                 readable leaf: the key is reported by name
//! ```
//! - Only `Error::Corruption` is stepped over; any other error (an I/O
//!   failure, a full disk) ends the walk as it ends any read.
//! - Each row is judged by the one visibility rule (`chain::read_visible`)
//!   at the caller's transaction's snapshot, so a salvage sees what a scan
//!   at that snapshot would have seen, minus the damage. It leaves no SSI
//!   marks: call it from a `Snapshot` transaction.
//! - The walk holds the store's read latch from start to end (writers
//!   wait, as for `check_integrity`), so page ids read in one node stay
//!   meaningful in the next; `visit` must not use the database.
//! - It does not look for rows in heap pages no readable leaf points to:
//!   heap pages do not record their table, so such a search could not
//!   tell whose rows it found.
//!
//! Reached through `strata::internals::salvage`, not the public API: what
//! it reports (page ids, byte offsets, B+tree nodes) is the file format's
//! vocabulary and changes with it, and its one user is the command-line
//! tool, built from the same workspace.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::btree::node;
use crate::buffer::mtr::{PageAccess, ReadView};
use crate::catalog::{self, Table};
use crate::error::{Error, Result};
use crate::ids::{PageId, Xid};
use crate::limits::PAGE_SIZE;
use crate::mvcc::{chain, Snapshot};
use crate::txn::Transaction;

/// Deepest tree walked; deeper means damaged links form a cycle.
const DEPTH_MAX: usize = 32;

/// A damaged page salvage stepped over, and what it cost.
#[derive(Clone, Debug, PartialEq)]
pub struct Skipped {
    /// The file holding the damaged page.
    pub file: PathBuf,
    /// Byte offset of the damage in that file.
    pub offset: u64,
    /// The page: the offset over the page size.
    pub page: PageId,
    /// What was wrong, as the read reported it.
    pub reason: String,
    /// The rows that could not be read because of it.
    pub lost: Lost,
}

/// The rows a damaged page made unreadable.
#[derive(Clone, Debug, PartialEq)]
pub enum Lost {
    /// A B+tree node (or the way to it): every row whose key is at or
    /// above `from` and below `to` (`None`: unbounded) — how many is
    /// unknown, since the node that would say is the damaged one.
    Keys {
        /// Lowest key lost (inclusive).
        from: Option<Vec<u8>>,
        /// Key where the loss ends (exclusive).
        to: Option<Vec<u8>>,
    },
    /// These keys, found in readable leaves, whose version chain or value
    /// runs through the damaged page: whether each row exists, and its
    /// value, could not be read.
    Rows(Vec<Vec<u8>>),
}

impl Skipped {
    /// Rows known to be lost (`None`: an unknown number, a key range).
    pub fn rows_lost(&self) -> Option<u64> {
        match &self.lost {
            Lost::Keys { .. } => None,
            Lost::Rows(keys) => Some(keys.len() as u64),
        }
    }
}

/// Calls `visit` with every readable row of `table`, in key order, as
/// `tx` sees it; returns the damaged pages stepped over, in the order met
/// (a heap page once, with every key it cost).
/// `table` must come from [`tables`] (a handle resolved to its root).
pub fn rows(tx: &Transaction, table: &Table, visit: &mut RowFn<'_>) -> Result<Vec<Skipped>> {
    let core = tx.core();
    if table.db() != core.engine.id() {
        return Err(Error::ForeignTable);
    }
    if table.root.0 == 0 {
        return Err(Error::NoSuchTable {
            name: table.name().to_string(),
        });
    }
    let (snap, _) = tx.read_snapshot();
    let clog = core.txns.manager().clog();
    let mut r = core.engine.store().read();
    let mut walk = Walk {
        skipped: Vec::new(),
    };
    walk.tree(
        &mut r.view,
        table.root,
        &mut |view, walk, leaf, key, entry| {
            let read = visible(view, leaf, entry, (&snap, tx.xid()), clog);
            match read {
                Ok(Some(value)) => visit(key, &value),
                Ok(None) => Ok(()),
                Err(e) => walk.lost_row(e, key),
            }
        },
    )?;
    Ok(walk.skipped)
}

/// The tables the catalog still names, as handles for `rows`, in name
/// order, and the damaged catalog pages stepped over (their `Lost::Keys`
/// are ranges of table names).
pub fn tables(tx: &Transaction) -> Result<(Vec<Table>, Vec<Skipped>)> {
    let core = tx.core();
    let (snap, _) = tx.read_snapshot();
    let clog = core.txns.manager().clog();
    let dir: Arc<Path> = core.engine.dir().into();
    let mut r = core.engine.store().read();
    let root = catalog::root(&mut r.view)?;
    let mut walk = Walk {
        skipped: Vec::new(),
    };
    let mut found = Vec::new();
    walk.tree(&mut r.view, root, &mut |view, walk, leaf, name, entry| {
        let root = visible(view, leaf, entry, (&snap, tx.xid()), clog).and_then(|v| {
            v.map(|v| catalog::root_of(view.file(), name, &v))
                .transpose()
        });
        match root {
            Ok(Some(root)) => {
                let name = String::from_utf8_lossy(name);
                found.push(Table::new(core.engine.id(), dir.clone(), &name).at(root));
                Ok(())
            }
            // Dropped, or not yet created, as the transaction sees it.
            Ok(None) => Ok(()),
            Err(e) => walk.lost_row(e, name),
        }
    })?;
    Ok((found, walk.skipped))
}

/// The version of the row whose index entry (in `leaf`) is `entry` that
/// the reader (`snap`, `me`) sees, if any: a table's row, or a catalog
/// row naming a table.
fn visible(
    view: &mut ReadView<'_>,
    leaf: PageId,
    entry: &[u8],
    (snap, me): (&Snapshot, Xid),
    clog: &crate::mvcc::clog::Clog,
) -> Result<Option<Vec<u8>>> {
    let head = chain::tid_of(entry).ok_or_else(|| {
        Error::corruption(
            view.file(),
            leaf.0 as u64 * PAGE_SIZE as u64,
            "index entry holds a malformed tuple id",
        )
    })?;
    chain::read_visible(view, head, snap, me, clog, &mut Vec::new())
}

/// Called with each readable row: (key, value).
pub type RowFn<'f> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'f;

/// Called for each leaf entry: (access, walk, leaf page, key, value).
type EntryFn<'f> = dyn FnMut(&mut ReadView<'_>, &mut Walk, PageId, &[u8], &[u8]) -> Result<()> + 'f;

/// What a node holds, copied out of its page.
enum Node {
    Leaf(Vec<(Vec<u8>, Vec<u8>)>),
    /// (separator before the child — `None` for the first —, child).
    Internal(Vec<(Option<Vec<u8>>, PageId)>),
}

struct Walk {
    skipped: Vec<Skipped>,
}

impl Walk {
    /// Every readable entry of the tree at `root`, in key order.
    fn tree(
        &mut self,
        view: &mut ReadView<'_>,
        root: PageId,
        each: &mut EntryFn<'_>,
    ) -> Result<()> {
        self.node(view, root, (None, None), 0, each)
    }

    /// The entries under `pid`, whose keys lie in `bounds` (inclusive
    /// low, exclusive high).
    fn node(
        &mut self,
        view: &mut ReadView<'_>,
        pid: PageId,
        bounds: (Option<&[u8]>, Option<&[u8]>),
        depth: usize,
        each: &mut EntryFn<'_>,
    ) -> Result<()> {
        let (from, to) = bounds;
        let lost = || Lost::Keys {
            from: from.map(<[u8]>::to_vec),
            to: to.map(<[u8]>::to_vec),
        };
        let read = if depth >= DEPTH_MAX {
            Err(Error::corruption(
                view.file(),
                pid.0 as u64 * PAGE_SIZE as u64,
                format!("B+tree page {pid}: deeper than {DEPTH_MAX} levels (a cycle)"),
            ))
        } else {
            read_node(view, pid)
        };
        match read {
            Ok(Node::Leaf(entries)) => {
                for (k, v) in &entries {
                    each(view, self, pid, k, v)?;
                }
                Ok(())
            }
            Ok(Node::Internal(kids)) => {
                for (i, (lo, child)) in kids.iter().enumerate() {
                    // A child's keys run from its separator (or the
                    // node's own low bound) to the next one's.
                    let lo = lo.as_deref().or(from);
                    let hi = kids.get(i + 1).and_then(|(s, _)| s.as_deref()).or(to);
                    self.node(view, *child, (lo, hi), depth + 1, each)?;
                }
                Ok(())
            }
            Err(e) => self.skip(e, lost()),
        }
    }

    /// Notes that `key`'s row was lost to the damage `e` (added to the
    /// page's entry if the page was met before); other errors pass.
    fn lost_row(&mut self, e: Error, key: &[u8]) -> Result<()> {
        if let Error::Corruption { file, offset, .. } = &e {
            let same = |s: &&mut Skipped| s.file == *file && s.offset == *offset;
            if let Some(s) = self.skipped.iter_mut().find(same) {
                if let Lost::Rows(keys) = &mut s.lost {
                    keys.push(key.to_vec());
                    return Ok(());
                }
            }
        }
        self.skip(e, Lost::Rows(vec![key.to_vec()]))
    }

    /// Records `e` as a skipped page if it is damage; other errors pass.
    fn skip(&mut self, e: Error, lost: Lost) -> Result<()> {
        let Error::Corruption {
            file,
            offset,
            reason,
        } = e
        else {
            return Err(e);
        };
        self.skipped.push(Skipped {
            page: PageId((offset / PAGE_SIZE as u64) as u32),
            file,
            offset,
            reason,
            lost,
        });
        Ok(())
    }
}

/// The entries or children of node `pid`, or the damage that hides them.
fn read_node(view: &mut ReadView<'_>, pid: PageId) -> Result<Node> {
    let node = view.with_page(pid, |p| {
        if !node::header_ok(p) {
            return None;
        }
        let n = node::count(p);
        if node::is_leaf(p)? {
            let entries = (0..n)
                .map(|i| Some((node::key(p, i)?.to_vec(), node::value(p, i)?.to_vec())))
                .collect::<Option<Vec<_>>>()?;
            return Some(Node::Leaf(entries));
        }
        let kids = (0..=n)
            .map(|i| {
                let sep = match i.checked_sub(1) {
                    Some(s) => Some(node::key(p, s)?.to_vec()),
                    None => None,
                };
                Some((sep, node::child(p, i)?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Node::Internal(kids))
    })?;
    node.ok_or_else(|| {
        Error::corruption(
            view.file(),
            pid.0 as u64 * PAGE_SIZE as u64,
            format!("B+tree page {pid}: not a well-formed node"),
        )
    })
}
