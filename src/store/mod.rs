//! The page store: buffer pool + log + the latch that makes each
//! mini-transaction atomic with respect to readers.
//!
//! ```text
//!   readers ── latch (shared) ──► ReadView ─┐
//!   writer  ── latch (exclusive) ► Mtr ─────┴─► BufferPool ──► data file
//!                                   └─ commit ─► Wal
//! ```
//! One mini-transaction runs at a time and readers see only whole ones;
//! transactions themselves run concurrently above this, since a
//! transaction is many short mini-transactions. The latch is held for
//! microseconds (never across a lock wait or an fsync).

pub mod freemap;
pub mod fsm;
pub mod meta;

use std::sync::Arc;

use crate::sync::{AtomicU32, AtomicU64, Ordering, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::buffer::mtr::{Mtr, ReadView};
use crate::buffer::BufferPool;
use crate::error::Result;
use crate::ids::{Lsn, PageId, Xid};
use crate::limits::WAL_ROLL_AT_CHECKPOINT;
use crate::redo::record::Kind;
use crate::wal::Wal;
use fsm::Fsm;

/// Pages, log and latch.
pub struct Store {
    /// The page cache.
    pub pool: BufferPool,
    /// The log.
    pub wal: Arc<Wal>,
    /// Free-space hints for the heap.
    pub fsm: Fsm,
    latch: RwLock<()>,
    /// Redo point of the latest checkpoint: pages last changed at or
    /// before it get a full image on their next change.
    redo: AtomicU64,
    /// The highest page count since the latest checkpoint's redo point
    /// (the count then, or one a shrink since lowered). Records after the
    /// redo point may name pages up to it, and recovery bounds the pages a
    /// record may name by the file's length, so a cut keeps them.
    count_since_redo: AtomicU32,
}

/// Shared access to pages.
pub struct Reader<'a> {
    /// Page access.
    pub view: ReadView<'a>,
    _latch: RwLockReadGuard<'a, ()>,
}

/// Exclusive access to pages through one mini-transaction.
pub struct Writer<'a> {
    /// The mini-transaction.
    pub mtr: Mtr<'a>,
    wal: &'a Wal,
    _latch: RwLockWriteGuard<'a, ()>,
}

impl Writer<'_> {
    /// Logs and publishes the changes.
    pub fn commit(self, kind: Kind, op: u8, xid: Xid) -> Result<Option<Lsn>> {
        self.mtr.commit(self.wal, kind, op, xid)
    }

    /// `commit` for background work (vacuum, compaction), which then hands
    /// the latch to a waiting writer instead of racing it for the next
    /// round: without that, a vacuum pass starved a deleting transaction
    /// to a tenth of its speed.
    pub fn commit_yielding(self, kind: Kind, op: u8, xid: Xid) -> Result<Option<Lsn>> {
        let Writer { mtr, wal, _latch } = self;
        let r = mtr.commit(wal, kind, op, xid);
        crate::sync::unlock_fair(_latch);
        r
    }

    /// `commit` of a write of `key` in the table rooted at `table`.
    pub fn commit_write(self, op: u8, xid: Xid, table: PageId, key: &[u8]) -> Result<Option<Lsn>> {
        self.mtr
            .commit_noted(self.wal, Kind::Pages, op, xid, table, key)
    }
}

impl Store {
    /// Wraps an opened pool and log.
    pub fn new(pool: BufferPool, wal: Arc<Wal>, redo: Lsn) -> Store {
        Store {
            pool,
            wal,
            fsm: Fsm::default(),
            latch: RwLock::new(()),
            redo: AtomicU64::new(redo.0),
            count_since_redo: AtomicU32::new(u32::MAX),
        }
    }

    /// Shared access.
    pub fn read(&self) -> Reader<'_> {
        let latch = self.latch.read();
        Reader {
            view: ReadView::new(&self.pool),
            _latch: latch,
        }
    }

    /// Exclusive access through a fresh mini-transaction.
    pub fn write(&self) -> Writer<'_> {
        let latch = self.latch.write();
        Writer {
            mtr: Mtr::new(&self.pool, self.redo()),
            wal: &self.wal,
            _latch: latch,
        }
    }

    /// Runs `f` in a mini-transaction and logs it as a `Pages` record.
    pub fn with_mtr<R>(
        &self,
        op: u8,
        xid: Xid,
        f: impl FnOnce(&mut Mtr<'_>) -> Result<R>,
    ) -> Result<(R, Option<Lsn>)> {
        let mut w = self.write();
        let r = f(&mut w.mtr)?;
        let lsn = w.commit(Kind::Pages, op, xid)?;
        Ok((r, lsn))
    }

    /// Lowers the page count past free pages at the end of the file (one
    /// logged mini-transaction as `op`); returns how many pages it cut.
    /// The count before is remembered for the next cut (`cut_file`).
    pub fn shrink(&self, op: u8) -> Result<u32> {
        let mut w = self.write();
        let before = meta::get(w.mtr.page(meta::META)?, meta::Field::PageCount);
        let cut = meta::shrink(&mut w.mtr)?;
        // Before the latch goes (with the commit), so no cut sees the
        // lower count without it.
        if cut > 0 {
            self.count_since_redo.fetch_max(before, Ordering::AcqRel);
        }
        w.commit(Kind::Pages, op, Xid::NONE)?;
        Ok(cut)
    }

    /// Cuts the data file back to the meta page's page count, once the
    /// log that lowered the count is durable (else a crash could bring
    /// back a count naming pages the file no longer has), but never below
    /// a count the file had since the checkpoint's redo point: a crash
    /// before the next checkpoint replays records from that point, and
    /// they may name pages a later shrink gave up (the meta page on disk
    /// can be newer than they are, so only the file's length admits
    /// them). Pages past the cut are free and unreferenced; their cached
    /// copies are dropped unwritten. The log is fsynced outside the latch:
    /// the cut keeps the pages past both the count it made durable and the
    /// count now (an allocation meanwhile may have raised it again).
    pub fn cut_file(&self) -> Result<()> {
        let count_now = || -> Result<u32> {
            let p = self.pool.fetch(meta::META)?;
            let count = meta::get(&p.read(), meta::Field::PageCount);
            Ok(count)
        };
        let (durable, end) = {
            let _latch = self.latch.write();
            let since_redo = self.count_since_redo.load(Ordering::Acquire);
            (count_now()?.max(since_redo), self.wal.end())
        };
        if self.pool.file_pages()? <= u64::from(durable) {
            return Ok(());
        }
        self.wal.flush(end, true)?;
        let _latch = self.latch.write();
        let keep = durable.max(count_now()?);
        self.pool.cut(PageId(keep))
    }

    /// Current redo point.
    pub fn redo(&self) -> Lsn {
        Lsn(self.redo.load(Ordering::Acquire))
    }

    /// Starts a checkpoint: with no mini-transaction in flight, the end of
    /// the log becomes the new redo point. Returns it. A log segment
    /// holding `WAL_ROLL_AT_CHECKPOINT` bytes or more is closed first, so
    /// that once the checkpoint is durable the whole segment can go.
    pub fn begin_checkpoint(&self) -> Result<Lsn> {
        let _latch = self.latch.write();
        self.wal.roll_if_over(WAL_ROLL_AT_CHECKPOINT)?;
        let redo = self.wal.end();
        let count = meta::get(&self.pool.fetch(meta::META)?.read(), meta::Field::PageCount);
        self.count_since_redo.store(count, Ordering::Release);
        self.redo.store(redo.0, Ordering::Release);
        Ok(redo)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::io::{RealFs, Vfs};
    use crate::page::PageType;

    /// A fresh store in `dir` with a formatted meta page and a small cache.
    pub fn store(dir: &std::path::Path, cache_bytes: usize) -> Store {
        let vfs: Arc<dyn Vfs> = Arc::new(RealFs);
        let data = vfs.open(&dir.join("data"), true).expect("data file");
        let wal = Arc::new(Wal::resume(vfs.clone(), dir, Lsn(0)).expect("wal"));
        let pool = BufferPool::new(data, dir.join("data"), cache_bytes).expect("pool");
        pool.attach_wal(wal.clone());
        let store = Store::new(pool, wal, Lsn(0));
        store
            .with_mtr(0, Xid::NONE, |m| {
                meta::init(m.new_page(meta::META, PageType::Meta)?);
                Ok(())
            })
            .expect("init");
        store
    }
}
