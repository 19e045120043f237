//! The catalog: which tables exist, for whom. It is itself an MVCC table.
//!
//! ```text
//!  catalog B+tree (root in the meta page)        heap
//!  key: table name (1..=255 bytes UTF-8)  ──▶  tuple: xmin, xmax, prev, key = name,
//!  value: tid of the name's newest version            value = | table id u32 | root page u32 |
//! ```
//!
//! A table comes into being in a write transaction, as in redb: `Db::table`
//! only names it. The first write through a read-write transaction inserts
//! the catalog row (and allocates the table's root page) in the same
//! mini-transaction, stamped with the writer's xid; a drop stamps the row's
//! `xmax`; a rename stamps the old name's row and inserts one under the new
//! name pointing at the same root. So catalog rows are versioned exactly
//! like the rows of any table, and whether a transaction sees a table is
//! decided by the one visibility function, `mvcc::visible`, on its own
//! snapshot — PostgreSQL's `pg_class`, an MVCC table like the others.
//!
//! Why rows, not a catalog of its own kind (a versioned root pointer per
//! table, or a list of changes applied at commit):
//! - commit and abort need nothing new: an aborted or crashed creator's row
//!   is invisible because its xid never committed, like any row's, and a
//!   creation is atomic with the creator's data because both commit with
//!   its one commit record;
//! - an old snapshot keeps seeing a dropped or renamed table, because
//!   vacuum keeps a version while a view sees it;
//! - concurrent creators, droppers and renamers of one name meet as
//!   writers of one row do: the second waits for the first and, if it
//!   committed, fails under Snapshot and Serializable (first updater wins);
//! - a serializable transaction that found a table absent (or present)
//!   leaves an SSI mark on the catalog key, so a concurrent creator (or
//!   dropper) is an rw-conflict, found by the machinery every key uses.
//!
//! What the catalog does not do by itself, and who does it:
//! - a root page referenced by no catalog version is garbage. Vacuum frees
//!   a table once every version naming its root is dead to every view (its
//!   creator aborted, or a drop committed before every live snapshot): it
//!   empties the table key by key, then removes those versions and frees
//!   the root in one mini-transaction (`maintenance::vacuum`), so a crash
//!   at any point leaks no page;
//! - a drop or rename concurrent with a writer of the table waits for the
//!   writer, as PostgreSQL's `DROP TABLE` waits for its lock
//!   (`txn::tables`);
//! - a transaction resolves a table by name once and caches the result
//!   (`txn::tables`).
//!
//! Table ids are handed out from the meta page's counter; the root page is
//! what log records name a table by (the `aux` of put and delete records),
//! fixed for the table's life and kept across a rename.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use crate::btree::{self, Dir};
use crate::buffer::mtr::{Mtr, PageAccess, ReadView};
use crate::error::{Error, Result};
use crate::ids::{PageId, Xid};
use crate::mvcc::chain::{self, Cursor};
use crate::mvcc::{Snapshot, StatusOf};
use crate::page::PageType;
use crate::store::meta::{self, Field, META};

/// Bytes of a catalog row's value: table id and root page.
pub const ENTRY_LEN: usize = 8;

/// What a `Table` handle names: a table, by name, in one open database.
#[derive(Debug)]
struct Handle {
    /// The identity of the open (`Engine::id`) that made the handle.
    db: u64,
    /// The database directory, to tell an earlier open of it from another
    /// database in errors.
    dir: Arc<Path>,
    name: Box<str>,
}

/// A handle to a table, by name; cheap to clone, valid for the `Db` that
/// made it. A handle does not make the table exist: the first committed
/// write through it does. Each transaction resolves the name against its
/// own snapshot (once; it caches the answer).
#[derive(Clone, Debug)]
pub struct Table {
    handle: Arc<Handle>,
    /// The root of the table's index, in a copy resolved by a transaction
    /// (`PageId(0)` in a handle, which names no table).
    pub(crate) root: PageId,
}

impl Table {
    pub(crate) fn new(db: u64, dir: Arc<Path>, name: &str) -> Table {
        Table {
            handle: Arc::new(Handle {
                db,
                dir,
                name: name.into(),
            }),
            root: PageId(0),
        }
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.handle.name
    }

    /// The open that made the handle.
    pub(crate) fn db(&self) -> u64 {
        self.handle.db
    }

    /// The directory of the database that made the handle.
    pub(crate) fn dir(&self) -> &Path {
        &self.handle.dir
    }

    /// Whether two handles are one (the cache's fast path).
    pub(crate) fn same_handle(&self, other: &Table) -> bool {
        Arc::ptr_eq(&self.handle, &other.handle)
    }

    /// A copy resolved to the table rooted at `root`.
    pub(crate) fn at(&self, root: PageId) -> Table {
        debug_assert!(root.0 != 0, "a table's root is never the meta page");
        Table {
            handle: self.handle.clone(),
            root,
        }
    }
}

/// Decodes a catalog row's value: the table's root page.
pub fn root_of(file: &Path, name: &[u8], v: &[u8]) -> Result<PageId> {
    // A name no table could have been created under (`Db::table` takes
    // 1..=255 bytes of UTF-8) is damage, not a table to list or open.
    let named = !name.is_empty()
        && name.len() <= crate::limits::TABLE_NAME_MAX
        && std::str::from_utf8(name).is_ok();
    v.get(4..8)
        .filter(|_| named && v.len() == ENTRY_LEN)
        .map(|b| PageId(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .filter(|p| p.0 != 0 && *p != META)
        .ok_or_else(|| {
            let name = String::from_utf8_lossy(name);
            Error::corruption(
                file,
                0,
                format!("catalog entry for table {name:?} malformed"),
            )
        })
}

/// The catalog B+tree's root.
pub fn root(acc: &mut impl PageAccess) -> Result<PageId> {
    Ok(PageId(meta::get(&*meta::read(acc)?, Field::CatalogRoot)))
}

/// Starts an empty catalog (database creation).
pub fn init(mtr: &mut Mtr<'_>) -> Result<()> {
    let root = meta::alloc(mtr, PageType::Leaf)?;
    btree::create(mtr, root)?;
    let m = mtr.page_mut(META)?;
    meta::set(m, Field::CatalogRoot, root.0);
    meta::set(m, Field::NextTable, 1);
    Ok(())
}

/// Allocates a new table's id and root page (an empty index) in `mtr`;
/// returns the root and the catalog row's value.
pub fn alloc_table(mtr: &mut Mtr<'_>) -> Result<(PageId, [u8; ENTRY_LEN])> {
    let id = meta::get(mtr.page(META)?, Field::NextTable);
    let root = meta::alloc(mtr, PageType::Leaf)?;
    btree::create(mtr, root)?;
    meta::set(mtr.page_mut(META)?, Field::NextTable, id.wrapping_add(1));
    let mut v = [0u8; ENTRY_LEN];
    v[..4].copy_from_slice(&id.to_le_bytes());
    v[4..].copy_from_slice(&root.0.to_le_bytes());
    Ok((root, v))
}

/// The root of table `name` as `snap` (and `me`) sees it; `unseen` gets the
/// writers of the name's catalog row the snapshot does not see (SSI).
pub fn lookup(
    view: &mut ReadView<'_>,
    cat: PageId,
    name: &str,
    snap: &Snapshot,
    me: Xid,
    clog: &impl StatusOf,
    unseen: &mut Vec<Xid>,
) -> Result<Option<PageId>> {
    let Some(tid) = btree::get_with(view, cat, name.as_bytes(), chain::tid_of)? else {
        return Ok(None);
    };
    let head = chain::valid(view, tid)?;
    match chain::read_visible(view, head, snap, me, clog, unseen)? {
        Some(v) => root_of(view.file(), name.as_bytes(), &v).map(Some),
        None => Ok(None),
    }
}

/// Every table `snap` sees: name and root page, in name order.
pub fn list(
    view: &mut ReadView<'_>,
    cat: PageId,
    snap: &Snapshot,
    clog: &impl StatusOf,
) -> Result<Vec<(String, PageId)>> {
    list_as(view, cat, (snap, Xid::NONE), clog)
}

/// `list`, for transaction `me`, which sees the tables it created.
pub fn list_as(
    view: &mut ReadView<'_>,
    cat: PageId,
    (snap, me): (&Snapshot, Xid),
    clog: &impl StatusOf,
) -> Result<Vec<(String, PageId)>> {
    let mut out = Vec::new();
    let mut unseen = Vec::new();
    for (name, head) in rows_at(view, cat)? {
        if let Some(v) = chain::read_visible(view, head, snap, me, clog, &mut unseen)? {
            let root = root_of(view.file(), &name, &v)?;
            out.push((String::from_utf8_lossy(&name).into_owned(), root));
        }
    }
    Ok(out)
}

/// Every catalog key with the head of its version chain.
pub fn rows(acc: &mut impl PageAccess) -> Result<Vec<(Vec<u8>, crate::ids::Tid)>> {
    let cat = root(acc)?;
    rows_at(acc, cat)
}

fn rows_at(acc: &mut impl PageAccess, cat: PageId) -> Result<Vec<(Vec<u8>, crate::ids::Tid)>> {
    let mut entries = Vec::new();
    btree::range(
        acc,
        cat,
        Bound::Unbounded,
        Bound::Unbounded,
        Dir::Forward,
        usize::MAX,
        &mut entries,
    )?;
    entries
        .into_iter()
        .map(|(k, v)| {
            let head = chain::head(acc, &v)?;
            Ok((k, head))
        })
        .collect()
}

/// Every table root any catalog version names, whoever sees it (tables
/// dropped but not yet freed, and created by transactions still running
/// or rolled back, too): what vacuum, compaction and the checks walk.
pub fn all_roots(acc: &mut impl PageAccess) -> Result<Vec<PageId>> {
    let mut roots = Vec::new();
    for (name, head) in rows(acc)? {
        let mut c = Cursor::new(head);
        while let Some((v, bytes)) = c.step(acc)? {
            let t = chain::decode(acc, &bytes, v.tid)?;
            roots.push(root_of(acc.file(), &name, t.body)?);
        }
    }
    roots.sort_unstable();
    roots.dedup();
    Ok(roots)
}
