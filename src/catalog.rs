//! The catalog: a B+tree (root in the meta page) from table name to the
//! table's id and the root page of its index.
//!
//! ```text
//!  key: table name (1..=255 bytes)   value: | table id u32 | root page u32 |
//! ```
//! Tables are created by one mini-transaction (root page, catalog entry,
//! meta counter) whose record is fsynced before the table is handed out.

use std::ops::Bound;
use std::sync::Arc;

use crate::btree::{self, Dir};
use crate::buffer::mtr::{Mtr, PageAccess, ReadView};
use crate::error::{Error, Result};
use crate::ids::{PageId, Xid};
use crate::page::PageType;
use crate::redo::record::Op;
use crate::store::meta::{self, Field, META};
use crate::store::Store;

pub(crate) fn root_of(acc: &impl PageAccess, name: &[u8], v: &[u8]) -> Result<PageId> {
    // A name no table could have been created under (`Db::table` takes
    // 1..=255 bytes of UTF-8) is damage, not a table to list or open.
    let named = !name.is_empty()
        && name.len() <= crate::limits::TABLE_NAME_MAX
        && std::str::from_utf8(name).is_ok();
    v.get(4..8)
        .filter(|_| named && v.len() == 8)
        .map(|b| PageId(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .filter(|p| p.0 != 0)
        .ok_or_else(|| {
            let name = String::from_utf8_lossy(name);
            Error::corruption(
                acc.file(),
                0,
                format!("catalog entry for table {name:?} malformed"),
            )
        })
}

/// The catalog's root page.
pub(crate) fn root(view: &mut ReadView<'_>) -> Result<PageId> {
    Ok(PageId(meta::get(&*meta::read(view)?, Field::CatalogRoot)))
}

/// Starts an empty catalog (database creation).
/// A handle to a table; cheap to clone, valid for the `Db` that made it.
#[derive(Clone, Debug)]
pub struct Table {
    pub(crate) root: PageId,
    pub(crate) db: u64,
    name: Arc<str>,
}

impl Table {
    pub(crate) fn new(root: PageId, db: u64, name: &str) -> Table {
        Table {
            root,
            db,
            name: name.into(),
        }
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How log records name the table (the `aux` of its put and delete
    /// records, FORMAT.md §3.3): its root page, fixed for its life.
    pub fn log_id(&self) -> u64 {
        self.root.0 as u64
    }
}

pub fn init(mtr: &mut Mtr<'_>) -> Result<()> {
    let root = meta::alloc(mtr, PageType::Leaf)?;
    btree::create(mtr, root)?;
    let m = mtr.page_mut(META)?;
    meta::set(m, Field::CatalogRoot, root.0);
    meta::set(m, Field::NextTable, 1);
    Ok(())
}

/// Root page of table `name`, if it exists.
pub fn lookup(view: &mut ReadView<'_>, name: &str) -> Result<Option<PageId>> {
    let cat = root(view)?;
    match btree::get(view, cat, name.as_bytes())? {
        Some(v) => root_of(view, name.as_bytes(), &v).map(Some),
        None => Ok(None),
    }
}

/// Every table: name and root page, in name order.
pub fn list(view: &mut ReadView<'_>) -> Result<Vec<(String, PageId)>> {
    let cat = root(view)?;
    let mut entries = Vec::new();
    btree::range(
        view,
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
            Ok((
                String::from_utf8_lossy(&k).into_owned(),
                root_of(view, &k, &v)?,
            ))
        })
        .collect()
}

/// Creates table `name` durably; returns its root page.
pub fn create(store: &Store, name: &str) -> Result<PageId> {
    let (root, lsn) = store.with_mtr(Op::CreateTable as u8, Xid::NONE, |mtr| {
        let cat = PageId(meta::get(mtr.page(META)?, Field::CatalogRoot));
        let id = meta::get(mtr.page(META)?, Field::NextTable);
        let root = meta::alloc(mtr, PageType::Leaf)?;
        btree::create(mtr, root)?;
        let mut v = id.to_le_bytes().to_vec();
        v.extend_from_slice(&root.0.to_le_bytes());
        btree::insert(mtr, cat, name.as_bytes(), &v)?;
        meta::set(mtr.page_mut(META)?, Field::NextTable, id + 1);
        Ok(root)
    })?;
    if let Some(lsn) = lsn {
        store.wal.flush(lsn, true)?;
    }
    Ok(root)
}
