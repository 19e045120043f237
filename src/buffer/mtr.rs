//! Mini-transactions: the unit of atomic page change.
//!
//! A mini-transaction write-locks and pins every page it touches, keeps a
//! before-image of each page it modifies, and at `commit` turns the
//! modifications into one log record (a full image for pages untouched
//! since the last checkpoint's redo point, byte ranges otherwise), stamps
//! the record's end LSN on the pages and marks them dirty. Dropped without
//! commit — an error halfway through a B+tree split, say — it puts the
//! before-images back, so memory never holds a change the log lacks.
//!
//! Finding the byte ranges means comparing two whole pages — a quarter of
//! an insert's cost. So the hot paths (tuple insert and stamp, leaf insert
//! and remove, commit-log bits) say which ranges they changed
//! ([`Mtr::changed`]) and the page is not compared; a page changed through
//! [`Mtr::page_mut`] without such a note is compared as before. Debug
//! builds compare anyway and assert the note covered every change.
//!
//! Callers hold the store's write latch, so at most one mini-transaction
//! runs at a time; readers take the latch shared and see whole ones only.

use crate::sync::RwLockWriteGuard;

use super::page::{self, PageBuf, PageType};
use super::{BufferPool, Pinned};
use crate::error::{Error, Result};
use crate::ids::{Lsn, PageId, Xid};
use crate::limits::MTR_PAGES_MAX;
use crate::wal::record::{diff, Change, Kind, Record};
use crate::wal::Wal;

/// Read access to pages, shared by readers and mini-transactions so that
/// search code is written once.
pub trait PageAccess {
    /// Runs `f` on the bytes of page `pid`.
    fn with_page<R>(&mut self, pid: PageId, f: impl FnOnce(&PageBuf) -> R) -> Result<R>;
    /// Path of the data file, for corruption reports.
    fn file(&self) -> &std::path::Path;
}

/// Page access for readers (under the store's shared latch).
#[derive(Clone, Copy)]
pub struct ReadView<'a> {
    pool: &'a BufferPool,
}

impl<'a> ReadView<'a> {
    /// A reader over `pool`.
    pub fn new(pool: &'a BufferPool) -> Self {
        ReadView { pool }
    }

    /// A copy of the meta page.
    pub fn read_meta(&mut self) -> Result<Box<PageBuf>> {
        self.with_page(crate::store::meta::META, |p| Box::new(*p))
    }
}

impl PageAccess for ReadView<'_> {
    fn with_page<R>(&mut self, pid: PageId, f: impl FnOnce(&PageBuf) -> R) -> Result<R> {
        let p = self.pool.fetch(pid)?;
        let g = p.read();
        Ok(f(&g))
    }

    fn file(&self) -> &std::path::Path {
        self.pool.path()
    }
}

struct Touched<'a> {
    guard: RwLockWriteGuard<'a, Box<PageBuf>>,
    before: Option<Box<PageBuf>>,
    fresh: bool,
    pin: Pinned<'a>,
    /// Byte ranges declared changed through `changed`.
    ranges: Vec<(usize, usize)>,
    /// Handed out by `page_mut` and not yet followed by `changed`.
    undeclared: bool,
    /// Some change was never declared: compare the whole page.
    compare: bool,
}

/// An atomic group of page changes.
pub struct Mtr<'a> {
    pool: &'a BufferPool,
    redo: Lsn,
    touched: Vec<Touched<'a>>,
    /// Buffers for before-images, borrowed from the pool for the
    /// mini-transaction's life.
    spares: Vec<Box<PageBuf>>,
    done: bool,
}

impl<'a> Mtr<'a> {
    /// Starts a mini-transaction; pages last changed at or before `redo`
    /// (the latest checkpoint's redo point) are logged as full images.
    pub fn new(pool: &'a BufferPool, redo: Lsn) -> Self {
        Mtr {
            pool,
            redo,
            touched: Vec::new(),
            spares: pool.take_spares(),
            done: false,
        }
    }

    /// Saves page `i`'s before-image, once.
    fn keep_before(&mut self, i: usize) {
        let t = &mut self.touched[i];
        if t.before.is_none() {
            let mut b = self.spares.pop().unwrap_or_else(page::zeroed);
            *b = **t.guard;
            t.before = Some(b);
        }
    }

    fn index(&mut self, pid: PageId, read: bool) -> Result<usize> {
        if let Some(i) = self.touched.iter().position(|t| t.pin.pid() == pid) {
            return Ok(i);
        }
        if self.touched.len() >= MTR_PAGES_MAX {
            return Err(Error::Unsupported(
                "operation touches too many pages at once",
            ));
        }
        let pin = if read {
            self.pool.fetch(pid)?
        } else {
            self.pool.fetch_new(pid)?
        };
        let guard = pin.write_guard();
        self.touched.push(Touched {
            guard,
            before: None,
            fresh: !read,
            pin,
            ranges: Vec::new(),
            undeclared: false,
            compare: false,
        });
        Ok(self.touched.len() - 1)
    }

    /// The pool, for error reports while a page is borrowed.
    pub fn pool(&self) -> &'a BufferPool {
        self.pool
    }

    /// Reads a page (write-locked until commit).
    pub fn page(&mut self, pid: PageId) -> Result<&PageBuf> {
        let i = self.index(pid, true)?;
        Ok(&self.touched[i].guard)
    }

    /// Modifies a page.
    pub fn page_mut(&mut self, pid: PageId) -> Result<&mut PageBuf> {
        let i = self.index(pid, true)?;
        self.keep_before(i);
        let t = &mut self.touched[i];
        t.compare |= t.undeclared;
        t.undeclared = true;
        Ok(&mut t.guard)
    }

    /// Declares the byte ranges (`start..end`) that the change made through
    /// the last `page_mut(pid)` touched; the log then carries exactly
    /// those instead of a comparison of the whole page. A range too small
    /// loses redo, so only code that knows its page layout calls this, and
    /// debug builds check it at commit.
    pub fn changed(&mut self, pid: PageId, ranges: &[(usize, usize)]) {
        if let Some(t) = self.touched.iter_mut().find(|t| t.pin.pid() == pid) {
            if t.undeclared {
                t.undeclared = false;
                t.ranges.extend_from_slice(ranges);
            }
        }
    }

    /// Starts page `pid` afresh as type `ty` (a newly allocated page); it
    /// is logged as a full image.
    pub fn new_page(&mut self, pid: PageId, ty: PageType) -> Result<&mut PageBuf> {
        let i = self.index(pid, false)?;
        self.keep_before(i);
        let t = &mut self.touched[i];
        t.fresh = true;
        page::init(&mut t.guard, pid, ty);
        Ok(&mut t.guard)
    }

    /// Logs the changes as one record and publishes them. Returns the
    /// record's end LSN, or `None` if nothing changed and `kind` is
    /// `Pages`.
    pub fn commit(self, wal: &Wal, kind: Kind, op: u8, xid: Xid) -> Result<Option<Lsn>> {
        self.commit_noted(wal, kind, op, xid, PageId(0), &[])
    }

    /// `commit`, naming the table (by its root page) and key the change
    /// is for, so log dumps can show them.
    pub fn commit_noted(
        mut self,
        wal: &Wal,
        kind: Kind,
        op: u8,
        xid: Xid,
        table: PageId,
        key: &[u8],
    ) -> Result<Option<Lsn>> {
        let mut rec = Record {
            kind,
            op,
            xid,
            aux: table.0 as u64,
            key: key.to_vec(),
            pages: Vec::new(),
        };
        for t in &self.touched {
            let Some(before) = &t.before else { continue };
            let delta = if t.fresh || page::lsn(before) <= self.redo {
                None
            } else if t.compare || t.undeclared {
                diff(before, &t.guard)
            } else {
                let declared = declared(&t.guard, &t.ranges);
                debug_assert!(
                    covers(before, &t.guard, declared.as_ref()),
                    "page {} changed outside its declared ranges {:?}",
                    t.pin.pid(),
                    t.ranges
                );
                declared
            };
            let change = match delta {
                Some(r) if r.is_empty() => continue,
                Some(r) => Change::Delta(r),
                None => Change::Full(t.guard[page::LOGGED_FROM..].into()),
            };
            rec.pages.push((t.pin.pid(), change));
        }
        if rec.pages.is_empty() && kind == Kind::Pages {
            self.done = true;
            return Ok(None);
        }
        let end = wal.append(&rec)?;
        for t in &mut self.touched {
            if t.before.is_some() {
                page::set_lsn(&mut t.guard, end);
                t.pin.mark_dirty();
            }
        }
        self.done = true;
        Ok(Some(end))
    }
}

/// The declared ranges as a delta: sorted, clipped to the logged part of
/// the page, overlapping and adjacent ones merged. `None` when a full
/// image is smaller.
fn declared(after: &PageBuf, ranges: &[(usize, usize)]) -> Option<Vec<(u16, Vec<u8>)>> {
    let mut rs: Vec<(usize, usize)> = ranges
        .iter()
        .map(|&(s, e)| (s.max(page::LOGGED_FROM), e.min(after.len())))
        .filter(|(s, e)| s < e)
        .collect();
    rs.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(rs.len());
    for (s, e) in rs {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let bytes: usize = merged.iter().map(|(s, e)| e - s + 4).sum();
    if bytes >= after.len() / 2 {
        return None;
    }
    Some(
        merged
            .into_iter()
            .map(|(s, e)| (s as u16, after[s..e].to_vec()))
            .collect(),
    )
}

/// Whether `delta` (a full image when `None`) turns `before` into `after`.
fn covers(before: &PageBuf, after: &PageBuf, delta: Option<&Vec<(u16, Vec<u8>)>>) -> bool {
    let Some(delta) = delta else { return true };
    let mut p = Box::new(*before);
    crate::wal::record::apply(&mut p, &Change::Delta(delta.clone()));
    p[page::LOGGED_FROM..] == after[page::LOGGED_FROM..]
}

impl PageAccess for Mtr<'_> {
    fn with_page<R>(&mut self, pid: PageId, f: impl FnOnce(&PageBuf) -> R) -> Result<R> {
        Ok(f(self.page(pid)?))
    }

    fn file(&self) -> &std::path::Path {
        self.pool.path()
    }
}

impl Drop for Mtr<'_> {
    fn drop(&mut self) {
        for t in &mut self.touched {
            if let Some(before) = t.before.take() {
                if !self.done {
                    **t.guard = *before;
                }
                self.spares.push(before);
            }
        }
        self.pool.return_spares(std::mem::take(&mut self.spares));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::page::HDR;
    use crate::store::{meta, testing};
    use crate::wal::reader::LogReader;

    #[test]
    fn dropped_mtr_puts_pages_back() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = testing::store(tmp.path(), 1 << 20);
        let before = store.read().view.read_meta().expect("meta");
        {
            let mut w = store.write();
            w.mtr.page_mut(meta::META).expect("meta")[HDR + 100] = 0xEE;
            let p = meta::alloc(&mut w.mtr, PageType::Heap).expect("alloc");
            assert_eq!(p, PageId(1));
            // dropped without commit
        }
        assert_eq!(store.read().view.read_meta().expect("meta"), before);
        let end = store.wal.end();
        store.with_mtr(0, Xid::NONE, |_| Ok(())).expect("empty mtr");
        assert_eq!(store.wal.end(), end, "an mtr without changes logs nothing");
    }

    #[test]
    fn declared_changes_are_logged_as_declared_and_undeclared_ones_compared() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = testing::store(tmp.path(), 1 << 20);
        store.begin_checkpoint().expect("checkpoint");
        // The first change after the redo point is a full image; deltas follow.
        store
            .with_mtr(0, Xid::NONE, |m| {
                m.page_mut(meta::META)?[HDR + 1000] = 1;
                Ok(())
            })
            .expect("mtr");
        let start = store.wal.end();
        store
            .with_mtr(0, Xid::NONE, |m| {
                m.page_mut(meta::META)?[3000..3010].fill(1);
                m.changed(meta::META, &[(3000, 3010)]);
                Ok(())
            })
            .expect("declared");
        store
            .with_mtr(0, Xid::NONE, |m| {
                m.page_mut(meta::META)?[4000] = 9; // never declared
                m.page_mut(meta::META)?[5000] = 7;
                m.changed(meta::META, &[(5000, 5001)]);
                Ok(())
            })
            .expect("undeclared");
        store.wal.flush(store.wal.end(), true).expect("flush");
        let mut r = LogReader::open(&crate::io::RealFs, tmp.path(), start).expect("reader");
        let mut deltas = Vec::new();
        while let Some(e) = r.next_entry().expect("entry") {
            for (_, c) in e.record.pages {
                if let Change::Delta(ranges) = c {
                    deltas.push(
                        ranges
                            .iter()
                            .map(|(at, b)| (*at, b.len()))
                            .collect::<Vec<_>>(),
                    );
                }
            }
        }
        assert_eq!(deltas[0], [(3000, 10)], "declared range logged as is");
        assert_eq!(
            deltas[1],
            [(4000, 1), (5000, 1)],
            "an undeclared change is found by comparison"
        );
    }

    #[test]
    fn first_change_after_redo_point_is_a_full_image_then_deltas() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = testing::store(tmp.path(), 1 << 20);
        let redo = store.begin_checkpoint().expect("checkpoint");
        for i in 0..3u8 {
            store
                .with_mtr(0, Xid::NONE, |m| {
                    m.page_mut(meta::META)?[HDR + 200] = i;
                    Ok(())
                })
                .expect("mtr");
        }
        store.wal.flush(store.wal.end(), true).expect("flush");
        let mut r = LogReader::open(&crate::io::RealFs, tmp.path(), redo).expect("reader");
        let mut forms = Vec::new();
        while let Some(e) = r.next_entry().expect("entry") {
            for (_, c) in e.record.pages {
                forms.push(matches!(c, Change::Full(_)));
            }
        }
        assert_eq!(forms, vec![true, false, false]);
    }

    #[test]
    fn pages_reach_disk_only_after_their_log() {
        let tmp = tempfile::tempdir().expect("tmp");
        // The smallest cache forces evictions of dirty pages.
        let store = testing::store(tmp.path(), 0);
        for round in 0..3u32 {
            for chunk in 0..40u32 {
                store
                    .with_mtr(0, Xid::NONE, |m| {
                        for _ in 0..20 {
                            let p = meta::alloc(m, PageType::Heap)?;
                            m.page_mut(p)?[HDR] = (round + chunk) as u8;
                        }
                        Ok(())
                    })
                    .expect("mtr");
            }
            let durable = store.wal.durable();
            let bytes = std::fs::read(tmp.path().join("data")).expect("data");
            let mut seen = 0;
            for page in bytes.chunks(crate::limits::PAGE_SIZE) {
                let page: &PageBuf = page.try_into().expect("whole page");
                assert!(
                    super::super::page::lsn(page) <= durable,
                    "page on disk ahead of the durable log"
                );
                seen += 1;
            }
            assert!(seen > crate::limits::CACHE_PAGES_MIN, "nothing was evicted");
        }
    }
}
