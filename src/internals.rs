//! The engine's internal modules, re-exported for strata's own tests, fuzz
//! targets, loom models and command-line tool (`strata::internals`,
//! hidden from the documentation). Not part of the public API: any release
//! may change anything here. The modules themselves are `pub(crate)`; this
//! file only re-exports their `pub` items.

pub use crate::codec::FUZZ_CRC;
pub use crate::options::RacePoint;

/// The B+tree.
pub mod btree {
    pub use crate::btree::*;
}
/// The page cache and mini-transactions.
pub mod buffer {
    pub use crate::buffer::*;
}
/// The heap of versioned tuples.
pub mod heap {
    pub use crate::heap::*;
}
/// Identifiers.
pub mod ids {
    pub use crate::ids::*;
}
/// The file-system interface and its implementations.
pub mod io {
    pub use crate::io::*;
}
/// Every limit, the internal ones included.
pub mod limits {
    pub use crate::limits::tuning::*;
    pub use crate::limits::*;
}
/// Visibility rules, the commit log and the transaction manager.
pub mod mvcc {
    pub use crate::mvcc::*;
}
/// Reading what is left of a damaged database.
pub mod salvage {
    pub use crate::salvage::*;
}
/// Page layout.
pub mod page {
    pub use crate::page::*;
}
/// Redo records: encoding, diffing, applying.
pub mod redo {
    pub use crate::redo::*;
}
/// The data file: meta page, free list, free-space map.
pub mod store {
    pub use crate::store::*;
}
/// Transactions: locks, SSI, prepared transactions.
pub mod txn {
    pub use crate::txn::*;
}
/// The write-ahead log.
pub mod wal {
    pub use crate::wal::*;
}
/// Building a database from a snapshot stream through any file system.
pub use crate::snapshot::import_vfs;

/// The two-phase-commit machine and decision log.
#[cfg(feature = "twopc")]
pub mod twopc {
    pub use crate::twopc::log::*;
    pub use crate::twopc::machine::*;
    pub use crate::twopc::*;
}

/// The tables that exist now, each with the root page log records name it
/// by (their `aux`), and the catalog itself as `(catalog)`: for log dumps.
pub fn table_log_ids(db: &crate::Db) -> crate::Result<Vec<(u64, String)>> {
    let core = db.core();
    let snap = core.txns.manager().snapshot();
    let list = crate::catalog::list(
        &mut core.engine.store().read().view,
        core.catalog,
        &snap,
        core.txns.manager().clog(),
    )?;
    let mut out: Vec<(u64, String)> = list
        .into_iter()
        .map(|(name, root)| (u64::from(root.0), name))
        .collect();
    out.push((u64::from(core.catalog.0), "(catalog)".to_string()));
    Ok(out)
}

/// The timestamp `xid` committed at, read from the database's pages (as
/// a restart, checkpoint and vacuum leave them).
pub fn commit_ts(
    db: &crate::Db,
    xid: crate::Xid,
) -> crate::Result<Option<crate::clock::Timestamp>> {
    let mut r = db.core().engine.store().read();
    crate::mvcc::commit_ts::lookup(&mut r.view, xid)
}

/// The highest commit timestamp the database has assigned.
pub fn commit_ts_high_water(db: &crate::Db) -> crate::Result<crate::clock::Timestamp> {
    let mut r = db.core().engine.store().read();
    crate::mvcc::commit_ts::high_water(&mut r.view)
}
