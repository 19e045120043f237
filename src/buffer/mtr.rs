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
//! A whole before-image costs an 8 KiB copy and, at commit, an 8 KiB
//! comparison per page — together most of a small write's cost. So the
//! hot paths (tuple insert, xmax stamp, leaf insert and remove, repointing
//! an index entry, commit-log bits) say up front which byte ranges they
//! will change ([`Mtr::page_mut_in`]): only those bytes are kept (in one
//! arena reused across mini-transactions) and logged. [`Mtr::page_mut`]
//! keeps the whole page and compares it at commit, as any change may
//! follow. Debug builds keep the whole page always and panic if anything
//! outside the declared ranges changed.
//!
//! Callers hold the store's write latch, so at most one mini-transaction
//! runs at a time; readers take the latch shared and see whole ones only.

use super::{BufferPool, PageMut, Pinned};
use crate::error::{Error, Result};
use crate::ids::{Lsn, PageId, Xid};
use crate::limits::{MTR_PAGES_MAX, PAGE_SIZE};
use crate::page::{self, PageBuf, PageType};
use crate::redo::diff::{diff, fits_delta};
pub use crate::redo::record::Shift;
use crate::redo::record::{encode_into, ChangeRef, Head, Kind};
use crate::wal::Wal;

/// Read access to pages, shared by readers and mini-transactions so that
/// search code is written once.
pub trait PageAccess {
    /// Runs `f` on the bytes of page `pid`.
    fn with_page<R>(&mut self, pid: PageId, f: impl FnOnce(&PageBuf) -> R) -> Result<R> {
        self.with_page_near(pid, 0, f)
    }
    /// `with_page`, where `f` reads the page at byte `near` first: a hint
    /// that lets a reader start loading that line early.
    fn with_page_near<R>(
        &mut self,
        pid: PageId,
        near: usize,
        f: impl FnOnce(&PageBuf) -> R,
    ) -> Result<R>;
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
}

impl PageAccess for ReadView<'_> {
    fn with_page_near<R>(
        &mut self,
        pid: PageId,
        near: usize,
        f: impl FnOnce(&PageBuf) -> R,
    ) -> Result<R> {
        self.pool.read_near(pid, near, f)
    }

    fn file(&self) -> &std::path::Path {
        self.pool.path()
    }
}

/// What a mini-transaction keeps of a page it changes, to undo the
/// changes and to log them.
enum Before {
    /// Not changed.
    Untouched,
    /// Changed within declared ranges only: their old bytes are the
    /// mini-transaction's undo entries for this page.
    Ranges,
    /// The whole page as it was.
    Page(Box<PageBuf>),
}

struct Touched<'a> {
    guard: PageMut<'a>,
    before: Before,
    /// A shift declared as the page's first change in this
    /// mini-transaction: logged as a move ahead of the declared ranges.
    shift: Option<Shift>,
    fresh: bool,
    pin: Pinned<'a>,
    /// Debug builds: the whole page as it was, to check declarations.
    #[cfg(debug_assertions)]
    check: Option<Box<PageBuf>>,
}

impl Touched<'_> {
    fn changed(&self) -> bool {
        !matches!(self.before, Before::Untouched)
    }
}

/// Old bytes of a declared range: (touched index, page offset, length,
/// arena offset). The index carries `SHIFTED` for a shift's destination:
/// restored on rollback like any range, but logged as the shift.
type Undo = (u32, u32, u32, u32);

const SHIFTED: u32 = 1 << 31;

/// The memory a mini-transaction keeps what it changes in, kept by the
/// pool between mini-transactions so that a small write allocates nothing.
#[derive(Default)]
pub(crate) struct Buffers {
    /// Whole before-images.
    pages: Vec<Box<PageBuf>>,
    /// Declared ranges' old bytes, in declaration order...
    undo: Vec<Undo>,
    /// ...held here.
    arena: Vec<u8>,
    /// The log record being encoded.
    log: Vec<u8>,
    /// At commit, the changed pages (by index into `touched`) with their
    /// changed ranges (a span of `ranges`) or `None`, logged whole...
    logged: Vec<(usize, Option<(usize, usize)>)>,
    /// ...and every page's ranges, one after another.
    ranges: Vec<(usize, usize)>,
}

impl Buffers {
    /// Empties them for the next mini-transaction, dropping what grew past
    /// an ordinary one's needs.
    pub(crate) fn reset(&mut self) {
        self.pages.truncate(MTR_PAGES_MAX);
        if self.arena.capacity() > 4 * PAGE_SIZE
            || self.undo.capacity() > 4 * MTR_PAGES_MAX
            || self.ranges.capacity() > 4 * MTR_PAGES_MAX
        {
            (self.undo, self.arena, self.ranges) = Default::default();
        }
        if self.log.capacity() > 16 * PAGE_SIZE {
            self.log = Vec::new();
        }
        self.undo.clear();
        self.arena.clear();
    }
}

/// An atomic group of page changes.
pub struct Mtr<'a> {
    pool: &'a BufferPool,
    redo: Lsn,
    touched: Vec<Touched<'a>>,
    /// Borrowed from the pool for the mini-transaction's life.
    bufs: Buffers,
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
            bufs: pool.take_buffers(),
            done: false,
        }
    }

    /// Undo entries of page `i`, in declaration order.
    fn undo_of(&self, i: usize) -> impl DoubleEndedIterator<Item = (usize, &[u8])> + '_ {
        self.bufs
            .undo
            .iter()
            .filter(move |u| (u.0 & !SHIFTED) as usize == i)
            .map(|&(_, at, len, off)| {
                let (at, len, off) = (at as usize, len as usize, off as usize);
                (at, &self.bufs.arena[off..off + len])
            })
    }

    /// Keeps page `i`'s whole before-image, once.
    fn keep_page(&mut self, i: usize) {
        if matches!(self.touched[i].before, Before::Page(_)) {
            return;
        }
        let mut b = self.bufs.pages.pop().unwrap_or_else(page::zeroed);
        *b = *self.touched[i].guard;
        if let Before::Ranges = self.touched[i].before {
            for (at, old) in self.undo_of(i).rev() {
                b[at..at + old.len()].copy_from_slice(old);
            }
        }
        let t = &mut self.touched[i];
        #[cfg(debug_assertions)]
        if t.check.is_none() {
            t.check = Some(b.clone());
        }
        // The whole page is compared at commit: a shift is logged as the
        // bytes it changed.
        t.shift = None;
        t.before = Before::Page(b);
    }

    fn index(&mut self, pid: PageId, read: bool) -> Result<usize> {
        self.index_near(pid, read, 0)
    }

    /// Where `pid` is among the touched pages, if it is.
    fn touched_at(&self, pid: PageId) -> Option<usize> {
        self.touched.iter().position(|t| t.pin.pid() == pid)
    }

    /// `index`, for a first read at byte `near` (`BufferPool::fetch_near`).
    fn index_near(&mut self, pid: PageId, read: bool, near: usize) -> Result<usize> {
        if let Some(i) = self.touched_at(pid) {
            return Ok(i);
        }
        if self.touched.len() >= MTR_PAGES_MAX {
            return Err(Error::Unsupported(
                "operation touches too many pages at once",
            ));
        }
        let pin = if read {
            self.pool.fetch_near(pid, near)?
        } else {
            self.pool.fetch_new(pid)?
        };
        let guard = pin.write_guard();
        self.touched.push(Touched {
            guard,
            before: Before::Untouched,
            shift: None,
            fresh: !read,
            pin,
            #[cfg(debug_assertions)]
            check: None,
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

    /// Modifies a page (any byte of it).
    pub fn page_mut(&mut self, pid: PageId) -> Result<&mut PageBuf> {
        let i = self.index(pid, true)?;
        self.keep_page(i);
        Ok(&mut self.touched[i].guard)
    }

    /// Modifies a page within `ranges` (`start..end` byte offsets) only:
    /// just those bytes are kept for undo and logged. A change outside
    /// them would be missing from the log, so only code that knows its page
    /// layout calls this, with ranges from that layout (debug builds check
    /// every declaration at commit).
    pub fn page_mut_in(&mut self, pid: PageId, ranges: &[(usize, usize)]) -> Result<&mut PageBuf> {
        let i = self.index(pid, true)?;
        let t = &mut self.touched[i];
        #[cfg(debug_assertions)]
        if t.check.is_none() {
            t.check = Some(Box::new(*t.guard));
        }
        if let Before::Untouched = t.before {
            t.before = Before::Ranges;
        }
        if let Before::Ranges = t.before {
            for &(s, e) in ranges {
                keep_range(&mut self.bufs, &t.guard, i as u32, s, e);
            }
        }
        Ok(&mut t.guard)
    }

    /// Modifies a page by `shift` first and then within `ranges` only, as
    /// `page_mut_in` (the caller moves the bytes itself). When the shift is
    /// the page's first change in this mini-transaction it is logged as a
    /// move; otherwise its destination is logged as bytes, like a range
    /// (replay moves bytes before writing ranges, so a move is exact only
    /// on the page as it was before the mini-transaction).
    pub fn page_mut_shift(
        &mut self,
        pid: PageId,
        shift: Shift,
        ranges: &[(usize, usize)],
    ) -> Result<&mut PageBuf> {
        let i = self.index(pid, true)?;
        let dst = (shift.to, shift.to + shift.len);
        let t = &mut self.touched[i];
        if matches!(t.before, Before::Untouched) && shift.len > 0 && shift.in_page() {
            #[cfg(debug_assertions)]
            if t.check.is_none() {
                t.check = Some(Box::new(*t.guard));
            }
            t.before = Before::Ranges;
            t.shift = Some(shift);
            keep_range(&mut self.bufs, &t.guard, i as u32 | SHIFTED, dst.0, dst.1);
            return self.page_mut_in(pid, ranges);
        }
        self.page_mut_in(pid, &[dst])?;
        self.page_mut_in(pid, ranges)
    }

    /// Starts page `pid` afresh as type `ty` (a newly allocated page); it
    /// is logged as a full image.
    pub fn new_page(&mut self, pid: PageId, ty: PageType) -> Result<&mut PageBuf> {
        let i = self.index(pid, false)?;
        self.keep_page(i);
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
        let mut logged = std::mem::take(&mut self.bufs.logged);
        let mut ranges = std::mem::take(&mut self.bufs.ranges);
        self.changes_to_log(&mut logged, &mut ranges);
        if logged.is_empty() && kind == Kind::Pages {
            (self.bufs.logged, self.bufs.ranges) = (logged, ranges);
            self.done = true;
            return Ok(None);
        }
        let pages = logged.iter().map(|&(i, span)| {
            let t = &self.touched[i];
            let change = match span {
                Some((a, b)) => ChangeRef::Ranges(&t.guard, &ranges[a..b], t.shift),
                None => ChangeRef::Full(&t.guard[page::LOGGED_FROM..]),
            };
            (t.pin.pid(), change)
        });
        let head = Head {
            kind,
            op,
            xid,
            aux: u64::from(table.0),
            key,
        };
        // Encoded straight from the pages into a buffer kept across
        // mini-transactions.
        let mut payload = std::mem::take(&mut self.bufs.log);
        payload.clear();
        encode_into(&head, pages, &mut payload);
        let appended = wal.append_payload(&payload);
        (self.bufs.log, self.bufs.logged, self.bufs.ranges) = (payload, logged, ranges);
        let end = appended?;
        self.publish(end);
        Ok(Some(end))
    }

    /// Decides how each changed page is logged: into `logged` (cleared
    /// first) its index with a span of `ranges` holding its changed byte
    /// ranges (a delta), or `None` for a full image — a fresh page, the
    /// first change since the redo point (torn-write protection), or a
    /// delta that would not be smaller.
    fn changes_to_log(
        &self,
        logged: &mut Vec<(usize, Option<(usize, usize)>)>,
        ranges: &mut Vec<(usize, usize)>,
    ) {
        logged.clear();
        ranges.clear();
        for (i, t) in self.touched.iter().enumerate() {
            let from = ranges.len();
            let delta = match &t.before {
                Before::Untouched => continue,
                _ if t.fresh || page::lsn(&t.guard) <= self.redo => false,
                Before::Page(b) => diff(b, &t.guard, ranges),
                Before::Ranges => self.declared_ranges(i, ranges),
            };
            if !delta {
                ranges.truncate(from);
                logged.push((i, None));
            } else if ranges.len() > from {
                logged.push((i, Some((from, ranges.len()))));
            }
        }
        debug_assert!(
            logged.iter().all(|&(i, span)| self.touched[i].changed()
                && span.is_none_or(|(a, b)| a < b && b <= ranges.len())),
            "only changed pages are logged, each delta a span of the ranges"
        );
    }

    /// Appends to `ranges` the byte ranges page `i` declared (merged);
    /// whether they make a delta worth logging.
    fn declared_ranges(&self, i: usize, ranges: &mut Vec<(usize, usize)>) -> bool {
        let from = ranges.len();
        merged(
            self.bufs
                .undo
                .iter()
                .filter(|u| u.0 as usize == i)
                .map(|&(_, at, len, _)| (at as usize, (at + len) as usize)),
            ranges,
        );
        #[cfg(debug_assertions)]
        {
            let t = &self.touched[i];
            if let Some(check) = &t.check {
                assert!(
                    replays_to(check, &t.guard, t.shift, &ranges[from..]),
                    "page {} changed outside its declared shift {:?} and ranges {:?}",
                    t.pin.pid(),
                    t.shift,
                    &ranges[from..]
                );
            }
        }
        fits_delta(&ranges[from..])
    }

    /// Stamps every changed page with `end`, the LSN just past the record
    /// that logged it, and marks it dirty: from here the pool writes it
    /// only once the log is durable up to `end`.
    fn publish(&mut self, end: Lsn) {
        assert!(
            end > self.redo,
            "a record ends at {end}, at or before the redo point {}",
            self.redo
        );
        for t in &mut self.touched {
            if t.changed() {
                page::set_lsn(&mut t.guard, end);
                t.pin.mark_dirty();
            }
        }
        self.done = true;
    }
}

/// Appends `ranges` (byte ranges of a page, `start..end`) to `out`
/// sorted, clipped to the logged part of a page, overlapping and adjacent
/// ones merged.
fn merged(ranges: impl Iterator<Item = (usize, usize)>, out: &mut Vec<(usize, usize)>) {
    let from = out.len();
    out.extend(
        ranges
            .map(|(s, e)| (s.max(page::LOGGED_FROM), e))
            .filter(|(s, e)| s < e),
    );
    out[from..].sort_unstable();
    // In place: a range that starts within the one kept before it joins it.
    let mut kept = from;
    for i in from..out.len() {
        let next = out[i];
        if i > from && next.0 <= out[kept].1 {
            out[kept].1 = out[kept].1.max(next.1);
        } else {
            if i > from {
                kept += 1;
            }
            out[kept] = next;
        }
    }
    out.truncate((kept + 1).min(out.len()));
}

/// Whether replaying what is logged — `shift` on `before`, then `ranges`
/// copied from `after` — gives `after`: a change outside them would be
/// missing from the log.
#[cfg(debug_assertions)]
fn replays_to(
    before: &PageBuf,
    after: &PageBuf,
    shift: Option<Shift>,
    ranges: &[(usize, usize)],
) -> bool {
    let mut p = Box::new(*before);
    if let Some(sh) = shift {
        sh.apply(&mut p);
    }
    for &(s, e) in ranges {
        p[s..e].copy_from_slice(&after[s..e]);
    }
    p[page::LOGGED_FROM..] == after[page::LOGGED_FROM..]
}

/// Keeps the old bytes of `s..e` (clipped to the page) for undo.
fn keep_range(bufs: &mut Buffers, page: &PageBuf, tag: u32, s: usize, e: usize) {
    let (s, e) = (s.min(PAGE_SIZE), e.min(PAGE_SIZE));
    if s < e {
        let off = bufs.arena.len();
        bufs.arena.extend_from_slice(&page[s..e]);
        bufs.undo.push((tag, s as u32, (e - s) as u32, off as u32));
    }
}

impl PageAccess for Mtr<'_> {
    fn with_page_near<R>(
        &mut self,
        pid: PageId,
        near: usize,
        f: impl FnOnce(&PageBuf) -> R,
    ) -> Result<R> {
        if let Some(i) = self.touched_at(pid) {
            return Ok(f(&self.touched[i].guard));
        }
        // A page only read takes no place among the touched: no other
        // writer can change it meanwhile (the mini-transaction runs under
        // the store's exclusive latch), and a descent reads its inner
        // nodes this way, then changes at most the leaf.
        ReadView::new(self.pool).with_page_near(pid, near, f)
    }

    fn file(&self) -> &std::path::Path {
        self.pool.path()
    }
}

impl Drop for Mtr<'_> {
    fn drop(&mut self) {
        let b = &mut self.bufs;
        if !self.done {
            for &(i, at, len, off) in b.undo.iter().rev() {
                let t = &mut self.touched[(i & !SHIFTED) as usize];
                if let Before::Ranges = t.before {
                    let (at, len, off) = (at as usize, len as usize, off as usize);
                    t.guard[at..at + len].copy_from_slice(&b.arena[off..off + len]);
                }
            }
        }
        for t in &mut self.touched {
            if let Before::Page(p) = std::mem::replace(&mut t.before, Before::Untouched) {
                if !self.done {
                    *t.guard = *p;
                }
                b.pages.push(p);
            }
            #[cfg(debug_assertions)]
            if let (false, Some(check)) = (self.done, &t.check) {
                debug_assert!(
                    *t.guard == **check,
                    "undo did not restore page {}",
                    t.pin.pid()
                );
            }
        }
        self.pool.return_buffers(std::mem::take(b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::{HDR, LOGGED_FROM};
    use crate::redo::record::Change;
    use crate::store::{meta, testing};
    use crate::wal::reader::LogReader;

    #[test]
    fn dropped_mtr_puts_pages_back() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = testing::store(tmp.path(), 1 << 20);
        let before = crate::store::meta::read(&mut store.read().view).expect("meta");
        {
            let mut w = store.write();
            w.mtr.page_mut(meta::META).expect("meta")[HDR + 100] = 0xEE;
            let p = meta::alloc(&mut w.mtr, PageType::Heap).expect("alloc");
            assert_eq!(p, PageId(2), "page 1 is the first free map");
            // dropped without commit
        }
        assert_eq!(
            crate::store::meta::read(&mut store.read().view).expect("meta"),
            before
        );
        let end = store.wal.end();
        store.with_mtr(0, Xid::NONE, |_| Ok(())).expect("empty mtr");
        assert_eq!(store.wal.end(), end, "an mtr without changes logs nothing");
    }

    /// The page changes logged since `start`, each also applied to `page`
    /// (they all change the meta page).
    fn logged_since(
        store: &crate::store::Store,
        dir: &std::path::Path,
        start: Lsn,
        page: &mut PageBuf,
    ) -> Vec<Change> {
        store.wal.flush(store.wal.end(), true).expect("flush");
        let mut r = LogReader::open(&crate::io::RealFs, dir, start).expect("reader");
        let mut changes = Vec::new();
        while let Some(e) = r.next_ref().expect("entry") {
            for (_, c) in e.record.changes() {
                crate::redo::diff::apply(page, &c);
                changes.push(c.to_owned());
            }
        }
        changes
    }

    #[test]
    fn declared_ranges_are_undone_and_logged_exactly() {
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
        let original = crate::store::meta::read(&mut store.read().view).expect("meta");
        let edit = |m: &mut Mtr<'_>| -> Result<()> {
            m.page_mut_in(meta::META, &[(3000, 3010)])?[3000..3010].fill(1);
            // Overlapping the first: its undo must still restore the
            // original bytes.
            let p = m.page_mut_in(meta::META, &[(3005, 3020)])?;
            p[3005..3020].fill(2);
            Ok(())
        };
        {
            let mut w = store.write();
            edit(&mut w.mtr).expect("edit");
            // dropped without commit: undone
        }
        assert_eq!(
            crate::store::meta::read(&mut store.read().view).expect("meta"),
            original
        );
        {
            // Declared, then the whole page taken: undo restores both.
            let mut w = store.write();
            edit(&mut w.mtr).expect("edit");
            w.mtr.page_mut(meta::META).expect("meta")[5000] = 9;
        }
        assert_eq!(
            crate::store::meta::read(&mut store.read().view).expect("meta"),
            original
        );
        let start = store.wal.end();
        store.with_mtr(0, Xid::NONE, edit).expect("declared");
        store
            .with_mtr(0, Xid::NONE, |m| {
                m.page_mut_in(meta::META, &[(4000, 4001)])?[4000] = 3;
                m.page_mut(meta::META)?[6000] = 7; // now compared as a whole
                Ok(())
            })
            .expect("declared then whole");
        let after = crate::store::meta::read(&mut store.read().view).expect("meta");
        let mut replayed = original.clone();
        let deltas: Vec<Vec<(u16, usize)>> = logged_since(&store, tmp.path(), start, &mut replayed)
            .into_iter()
            .filter_map(|c| match c {
                Change::Delta(ranges) => {
                    Some(ranges.iter().map(|(at, b)| (*at, b.len())).collect())
                }
                _ => None,
            })
            .collect();
        assert_eq!(deltas[0], [(3000, 20)], "the union of the declared ranges");
        assert_eq!(deltas[1], [(4000, 1), (6000, 1)], "whole-page comparison");
        assert_eq!(replayed[LOGGED_FROM..], after[LOGGED_FROM..]);
    }

    #[test]
    fn a_first_shift_is_logged_as_a_move_a_later_one_as_bytes() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = testing::store(tmp.path(), 1 << 20);
        store.begin_checkpoint().expect("checkpoint");
        store
            .with_mtr(0, Xid::NONE, |m| {
                let p = m.page_mut(meta::META)?;
                for (i, b) in p[3000..4000].iter_mut().enumerate() {
                    *b = i as u8;
                }
                Ok(())
            })
            .expect("full image");
        let original = crate::store::meta::read(&mut store.read().view).expect("meta");
        let sh = Shift {
            from: 3000,
            to: 3006,
            len: 600,
        };
        let edit = |m: &mut Mtr<'_>| -> Result<()> {
            let p = m.page_mut_shift(meta::META, sh, &[(3000, 3006)])?;
            sh.apply(p);
            p[3000..3006].fill(0xEE);
            Ok(())
        };
        {
            let mut w = store.write();
            edit(&mut w.mtr).expect("edit");
            // dropped without commit: undone
        }
        assert_eq!(
            crate::store::meta::read(&mut store.read().view).expect("meta"),
            original
        );
        let start = store.wal.end();
        store.with_mtr(0, Xid::NONE, edit).expect("shift first");
        store
            .with_mtr(0, Xid::NONE, |m| {
                m.page_mut_in(meta::META, &[(5000, 5001)])?[5000] = 1;
                edit(m)
            })
            .expect("shift after a change");
        let after = crate::store::meta::read(&mut store.read().view).expect("meta");
        let mut replayed = original.clone();
        let changes = logged_since(&store, tmp.path(), start, &mut replayed);
        assert_eq!(
            changes[0],
            Change::Shifted(sh, vec![(3000, vec![0xEE; 6])]),
            "a move and the one slot written"
        );
        let Change::Delta(runs) = &changes[1] else {
            panic!(
                "a shift after another change is logged as bytes: {:?}",
                changes[1]
            );
        };
        let spans: Vec<(u16, usize)> = runs.iter().map(|(at, b)| (*at, b.len())).collect();
        assert_eq!(spans, [(3000, 606), (5000, 1)]);
        assert_eq!(replayed[LOGGED_FROM..], after[LOGGED_FROM..]);
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
                    crate::page::lsn(page) <= durable,
                    "page on disk ahead of the durable log"
                );
                seen += 1;
            }
            assert!(seen > crate::limits::CACHE_PAGES_MIN, "nothing was evicted");
        }
    }

    proptest::proptest! {
        /// `merged` appends exactly the bytes its ranges cover (clipped to
        /// the logged part), as sorted ranges with gaps between them, and
        /// leaves what `out` already held alone.
        #[test]
        fn merged_ranges_cover_the_same_bytes_sorted_and_apart(
            held in proptest::collection::vec((0usize..64, 0usize..64), 0..3),
            rs in proptest::collection::vec((0usize..256, 0usize..40), 0..12),
        ) {
            let rs: Vec<(usize, usize)> = rs.iter().map(|&(s, l)| (s, s + l)).collect();
            let mut out = held.clone();
            merged(rs.iter().copied(), &mut out);
            proptest::prop_assert_eq!(&out[..held.len()], &held[..]);
            let got = &out[held.len()..];
            let covered = |ranges: &[(usize, usize)], b: usize| {
                ranges.iter().any(|&(s, e)| s <= b && b < e)
            };
            for b in 0..300 {
                let want = b >= LOGGED_FROM && covered(&rs, b);
                proptest::prop_assert_eq!(covered(got, b), want, "byte {}", b);
            }
            for w in got.windows(2) {
                proptest::prop_assert!(w[0].1 < w[1].0, "{:?} not apart", w);
            }
            proptest::prop_assert!(got.iter().all(|&(s, e)| s < e));
        }
    }
}
