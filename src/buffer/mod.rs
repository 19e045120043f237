//! The page cache: a fixed set of frames over the data file.
//!
//! ```text
//!  page table (lock-free)    frames
//!  PageId -> frame idx  ──►  [ RwLock<slot> | pid | pins | ref bit | dirty ] * n
//!  (table.rs)                     │  ▲ clock hand (miss lock) claims an unpinned frame
//!                                 ▼
//!                            one mapping of n pages (huge pages advised: frames.rs)
//! ```
//! A hit takes no lock: it finds the frame in the table, pins it, and
//! checks that the frame still holds its page. A miss takes the miss lock,
//! claims a victim (its pin count from 0 to `CLAIMED`, which turns hits on
//! it away), writes it out if dirty, reads the page in and publishes it.
//!
//! Invariants:
//! - a pinned frame is never evicted, and its page id does not change;
//! - a dirty page is written only after the log is durable up to the
//!   page's LSN (WAL-before-data), and is sealed with its checksum then;
//! - every page read from disk has its checksum and page id verified.
//!
//! During recovery a page that fails verification is handed out zeroed and
//! remembered as torn: the first log record that touches it must carry a
//! full image, or recovery reports corruption.

mod frames;
pub mod mtr;

mod table;

use std::collections::{HashMap, HashSet};

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::sync::{AtomicBool, AtomicU32, AtomicU64, Mutex, Ordering, RwLock};

use crate::error::{Error, Result};
use crate::ids::PageId;
use crate::io::VfsFile;
use crate::limits::{CACHE_PAGES_MIN, PAGE_SIZE};
use crate::page::{self, PageBuf};
use crate::wal::Wal;
pub use frames::{PageMut, PageRef};

const NO_PAGE: u32 = u32::MAX;

/// A frame's pin count while the miss lock's holder evicts or loads it:
/// a hit that pins it sees the bit and backs off.
const CLAIMED: u32 = 1 << 31;

struct Frame {
    data: RwLock<frames::Slot>,
    pid: AtomicU32,
    /// Pins, plus `CLAIMED` while the frame changes pages.
    pins: AtomicU32,
    referenced: AtomicBool,
    dirty: AtomicBool,
    /// Held from taking the dirty bit until the write that follows has
    /// landed (PostgreSQL's I/O-in-progress state): a page whose bit is
    /// clear may still be on its way to the file, and a checkpoint waits
    /// here for such writes before its fsync.
    io: Mutex<()>,
}

impl Frame {
    /// Claims an unpinned frame for eviction.
    fn claim(&self) -> bool {
        self.pins
            .compare_exchange(0, CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Ends a claim, leaving `pins` pins (0 or 1). Hits that bumped the
    /// count meanwhile take their pin back themselves.
    fn release(&self, pins: u32) {
        self.pins.fetch_sub(CLAIMED - pins, Ordering::AcqRel);
    }

    /// Sets the clock's reference bit for a hit. Read first: a store on
    /// every hit would bounce the line between cores for pages every
    /// reader visits.
    fn touch(&self) {
        if !self.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Release);
        }
    }
}

/// The bounded page cache.
pub struct BufferPool {
    frames: Box<[Frame]>,
    /// The memory of every frame's page.
    memory: frames::Memory,
    /// Page → frame, read without a lock (table.rs).
    table: table::PageTable,
    /// Held by the one thread at a time that changes the table: a miss
    /// (its clock hand), a cut.
    miss: Mutex<usize>,
    file: Box<dyn VfsFile>,
    path: PathBuf,
    wal: OnceLock<Arc<Wal>>,
    recovering: AtomicBool,
    torn: Mutex<HashSet<PageId>>,
    /// Before-images and undo bytes, kept between mini-transactions so a
    /// write does not allocate them anew.
    buffers: Mutex<mtr::Buffers>,
    /// Read-only pools never write the data file: a dirty page leaving the
    /// cache (changed by replay) is kept here instead, and read back from
    /// here.
    overlay: Option<Mutex<HashMap<PageId, Box<PageBuf>>>>,
    /// Pages read from the data file (cache misses) and written to it,
    /// since the pool was made (`Db::stats`).
    io: [AtomicU64; 2],
}

/// A pinned page: it stays in its frame until this is dropped.
pub struct Pinned<'a> {
    pool: &'a BufferPool,
    idx: usize,
    pid: PageId,
}

impl<'a> Pinned<'a> {
    /// The page's id.
    pub fn pid(&self) -> PageId {
        self.pid
    }

    /// Shared access to the page bytes.
    pub fn read(&self) -> PageRef<'_> {
        frames::read(&self.pool.frames[self.idx].data)
    }

    /// Exclusive access, for the lifetime of the pool borrow (the caller
    /// keeps the pin alive at least as long as the guard).
    pub(crate) fn write_guard(&self) -> PageMut<'a> {
        frames::write(&self.pool.frames[self.idx].data)
    }

    pub(crate) fn mark_dirty(&self) {
        self.pool.frames[self.idx]
            .dirty
            .store(true, Ordering::Release);
    }
}

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        self.pool.frames[self.idx]
            .pins
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl BufferPool {
    /// A cache of `bytes` (at least `CACHE_PAGES_MIN` pages) over `file`.
    pub fn new(file: Box<dyn VfsFile>, path: PathBuf, bytes: usize) -> Result<BufferPool> {
        let n = (bytes / PAGE_SIZE).max(CACHE_PAGES_MIN);
        let (memory, slots) = frames::Memory::new(n)?;
        let frames = slots
            .into_iter()
            .map(|slot| Frame {
                data: RwLock::new(slot),
                pid: AtomicU32::new(NO_PAGE),
                pins: AtomicU32::new(0),
                referenced: AtomicBool::new(false),
                dirty: AtomicBool::new(false),
                io: Mutex::new(()),
            })
            .collect();
        Ok(BufferPool {
            frames,
            memory,
            table: table::PageTable::new(n),
            miss: Mutex::new(0),
            file,
            path,
            wal: OnceLock::new(),
            recovering: AtomicBool::new(false),
            torn: Mutex::new(HashSet::new()),
            buffers: Mutex::new(mtr::Buffers::default()),
            overlay: None,
            io: Default::default(),
        })
    }

    /// Makes the pool read-only: the data file is never written or synced;
    /// evicted dirty pages are kept in memory.
    pub(crate) fn read_only(mut self) -> Self {
        self.overlay = Some(Mutex::new(HashMap::new()));
        self
    }

    /// Takes the kept mini-transaction buffers (for one mini-transaction).
    pub(crate) fn take_buffers(&self) -> mtr::Buffers {
        std::mem::take(&mut *self.buffers.lock())
    }

    /// Gives a mini-transaction's buffers back for the next one.
    pub(crate) fn return_buffers(&self, mut b: mtr::Buffers) {
        b.reset();
        *self.buffers.lock() = b;
    }

    /// Bytes of page cache (frames × page size).
    pub fn capacity_bytes(&self) -> usize {
        self.frames.len() * PAGE_SIZE
    }

    /// Pages read from the data file, and pages written to it, so far.
    pub fn io_counts(&self) -> (u64, u64) {
        let [r, w] = &self.io;
        (r.load(Ordering::Relaxed), w.load(Ordering::Relaxed))
    }

    /// The data file's path, for error messages.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Connects the log once recovery has found its end. Until then (during
    /// replay) pages are written without waiting for the log: recovery
    /// fsyncs the log it replays before replaying it.
    pub(crate) fn attach_wal(&self, wal: Arc<Wal>) {
        let _ = self.wal.set(wal);
    }

    /// A failed page write or data-file fsync poisons the database (once
    /// the log is attached; during recovery the error simply fails the open).
    fn fail<T>(&self, r: Result<T>) -> Result<T> {
        match self.wal.get() {
            Some(w) => w.fail(r),
            None => r,
        }
    }

    pub(crate) fn set_recovering(&self, on: bool) {
        self.recovering.store(on, Ordering::Release);
    }

    /// Pages found torn during recovery and not yet repaired by a full image.
    pub(crate) fn take_torn(&self) -> Vec<PageId> {
        self.torn.lock().drain().collect()
    }

    pub(crate) fn is_torn(&self, pid: PageId) -> bool {
        self.torn.lock().contains(&pid)
    }

    pub(crate) fn repaired(&self, pid: PageId) {
        self.torn.lock().remove(&pid);
    }

    /// Pins page `pid`, reading it from disk if it is not cached.
    pub fn fetch(&self, pid: PageId) -> Result<Pinned<'_>> {
        self.get(pid, true, 0)
    }

    /// `fetch`, for a caller that will read the page at byte `near` next
    /// (a heap slot, say): on a hit, that line is loaded alongside the
    /// header.
    pub fn fetch_near(&self, pid: PageId, near: usize) -> Result<Pinned<'_>> {
        self.get(pid, true, near)
    }

    /// Starts loading what a fetch of `pid` that reads byte `near` first
    /// will touch (its frame, the page's header and that line), if the
    /// page is cached: a scan calls it for the row after the one it reads,
    /// so that row's misses overlap this one's work.
    pub fn prefetch(&self, pid: PageId, near: usize) {
        if let Some(idx) = self.table.find(pid) {
            if let Some(f) = self.frames.get(idx) {
                frames::prefetch(f);
            }
            self.warm(idx, near);
        }
    }

    /// Starts loading the line at the byte `at` finds in `pid`'s page, if
    /// the page is cached and its frame free to read at once (a hint: the
    /// page may be leaving its frame; `at` reads it under the frame's
    /// latch all the same). A scan calls it for the row after the one it
    /// reads, whose slot line the previous call loaded, to start loading
    /// the tuple that slot points at.
    pub fn prefetch_within(&self, pid: PageId, at: impl FnOnce(&PageBuf) -> usize) {
        let Some(idx) = self.table.find(pid) else {
            return;
        };
        let Some(f) = self.frames.get(idx) else {
            return;
        };
        if let Some(page) = frames::try_read(&f.data) {
            if f.pid.load(Ordering::Acquire) == pid.0 {
                self.memory.prefetch(idx, at(&page));
            }
        }
    }

    /// Runs `f` on page `pid`, which on a hit is read-latched but not
    /// pinned. The latch stands in for the pin (as in `prefetch_within`):
    /// an eviction may claim the frame meanwhile, but it loads another
    /// page only under the frame's write latch, so the bytes stay `pid`'s
    /// until `f` returns. A hit then costs the latch's two atomic
    /// operations, not the pin's two more, on a line every reader of the
    /// page shares (the B+tree's root and inner nodes are read by every
    /// lookup). A page not in the table is loaded without looking again;
    /// a frame changing pages, pinned the usual way.
    pub fn read_near<R>(
        &self,
        pid: PageId,
        near: usize,
        f: impl FnOnce(&PageBuf) -> R,
    ) -> Result<R> {
        match self.latched(pid, near) {
            Ok(page) => Ok(f(&page)),
            Err(listed) => {
                let pinned = self.pin_missed(pid, near, listed)?;
                let g = pinned.read();
                Ok(f(&g))
            }
        }
    }

    /// `read_near`'s hit: the page read-latched, or whether the table
    /// listed it (its frame was changing pages). Kept apart from the
    /// generic caller so that the lookup and latch inline here.
    fn latched(&self, pid: PageId, near: usize) -> std::result::Result<PageRef<'_>, bool> {
        let idx = self.table.find(pid).ok_or(false)?;
        self.warm(idx, near);
        let f = self.frames.get(idx).ok_or(true)?;
        let page = frames::read(&f.data);
        if f.pid.load(Ordering::Acquire) != pid.0 {
            return Err(true);
        }
        f.touch();
        Ok(page)
    }

    /// `read_near`'s miss, pinned: a page the table did not list is
    /// loaded without looking again.
    #[cold]
    fn pin_missed(&self, pid: PageId, near: usize, listed: bool) -> Result<Pinned<'_>> {
        if listed {
            self.get(pid, true, near)
        } else {
            self.load(pid, true, near)
        }
    }

    /// Starts loading frame `idx`'s page header and the line at byte
    /// `near`.
    fn warm(&self, idx: usize, near: usize) {
        self.memory.prefetch(idx, 0);
        if near > 0 {
            self.memory.prefetch(idx, near);
        }
    }

    /// Starts loading where a lookup of `pid` in the page table begins: a
    /// scan calls it two rows ahead, so that the lookup `prefetch` makes
    /// one row ahead finds its entry in the CPU cache.
    pub fn prefetch_lookup(&self, pid: PageId) {
        self.table.prefetch(pid);
    }

    /// Pins page `pid` without reading it: for freshly allocated pages,
    /// whose old bytes do not matter.
    pub fn fetch_new(&self, pid: PageId) -> Result<Pinned<'_>> {
        self.get(pid, false, 0)
    }

    fn get(&self, pid: PageId, read: bool, near: usize) -> Result<Pinned<'_>> {
        if let Some(idx) = self.hit(pid, near) {
            return Ok(Pinned {
                pool: self,
                idx,
                pid,
            });
        }
        self.load(pid, read, near)
    }

    /// `get` after a lock-free look found no page: looks again under the
    /// miss lock, then loads the page into a victim frame.
    fn load(&self, pid: PageId, read: bool, near: usize) -> Result<Pinned<'_>> {
        if pid.0 == NO_PAGE {
            return Err(Error::corruption(
                &self.path,
                0,
                format!("reference to reserved page id {pid}"),
            ));
        }
        let mut hand = self.miss.lock();
        // Whoever held the lock may have loaded it.
        if let Some(idx) = self.hit(pid, near) {
            return Ok(Pinned {
                pool: self,
                idx,
                pid,
            });
        }
        let idx = self.victim(&mut hand)?;
        let f = &self.frames[idx];
        {
            let mut data = frames::write(&f.data);
            let r = if read {
                self.read_page(pid, &mut data)
            } else {
                data.fill(0);
                Ok(())
            };
            if let Err(e) = r {
                drop(data);
                f.release(0);
                return Err(e);
            }
            f.pid.store(pid.0, Ordering::Release);
        }
        f.referenced.store(true, Ordering::Release);
        f.dirty.store(false, Ordering::Release);
        self.table.insert(pid, idx);
        f.release(1);
        Ok(Pinned {
            pool: self,
            idx,
            pid,
        })
    }

    /// Pins `pid`'s frame if the page is cached, without a lock: the pin
    /// holds only if the frame was not claimed and still holds the page.
    fn hit(&self, pid: PageId, near: usize) -> Option<usize> {
        let idx = self.table.find(pid)?;
        self.warm(idx, near);
        let f = self.frames.get(idx)?;
        let before = f.pins.fetch_add(1, Ordering::AcqRel);
        if before & CLAIMED == 0 && f.pid.load(Ordering::Acquire) == pid.0 {
            f.touch();
            return Some(idx);
        }
        f.pins.fetch_sub(1, Ordering::AcqRel);
        None
    }

    fn read_page(&self, pid: PageId, data: &mut PageBuf) -> Result<()> {
        if let Some(overlay) = &self.overlay {
            // Kept for good: a clean copy of it may be evicted later
            // without being written anywhere.
            if let Some(kept) = overlay.lock().get(&pid) {
                *data = **kept;
                return Ok(());
            }
        }
        let off = pid.0 as u64 * PAGE_SIZE as u64;
        self.file.read_at(data, off)?;
        self.io[0].fetch_add(1, Ordering::Relaxed);
        if let Err(why) = page::verify(data, pid) {
            if self.recovering.load(Ordering::Acquire) {
                data.fill(0);
                self.torn.lock().insert(pid);
                return Ok(());
            }
            return Err(Error::corruption(&self.path, off, why));
        }
        Ok(())
    }

    /// Claims a frame to reuse (clock), writing its page out if dirty and
    /// taking it out of the table. The caller holds the miss lock (`hand`).
    fn victim(&self, hand: &mut usize) -> Result<usize> {
        let n = self.frames.len();
        for _ in 0..3 * n {
            let idx = *hand;
            *hand = (*hand + 1) % n;
            let f = &self.frames[idx];
            if f.pins.load(Ordering::Acquire) > 0 {
                continue;
            }
            if f.referenced.swap(false, Ordering::AcqRel) {
                continue;
            }
            if !f.claim() {
                continue;
            }
            let old = f.pid.load(Ordering::Acquire);
            if old != NO_PAGE {
                if f.dirty.load(Ordering::Acquire) {
                    if let Err(e) = self.write_frame(f) {
                        f.release(0);
                        return Err(e);
                    }
                }
                self.table.remove(PageId(old));
                f.pid.store(NO_PAGE, Ordering::Release);
            }
            return Ok(idx);
        }
        Err(Error::Unsupported(
            "page cache exhausted: every frame is pinned",
        ))
    }

    /// Writes one frame's page if dirty, after the log covering it is
    /// durable. The frame stays read-locked through the write, so an
    /// eviction cannot reload the page from disk before it lands; its page
    /// id is read under that lock before the dirty bit is taken, so it is
    /// the id of the bytes written even if an eviction that found the page
    /// clean (this write having taken the bit) clears it meanwhile. The
    /// bit is taken, and the write made, under the frame's `io` lock.
    fn write_frame(&self, f: &Frame) -> Result<()> {
        let data = frames::read(&f.data);
        let _io = f.io.lock();
        let pid = PageId(f.pid.load(Ordering::Acquire));
        if pid.0 == NO_PAGE || !f.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some(overlay) = &self.overlay {
            overlay.lock().insert(pid, Box::new(*data));
            return Ok(());
        }
        let mut copy: Box<PageBuf> = Box::new(*data);
        let r = self.write_page(pid, &mut copy);
        if r.is_err() {
            f.dirty.store(true, Ordering::Release);
        }
        self.fail(r)
    }

    fn write_page(&self, pid: PageId, data: &mut PageBuf) -> Result<()> {
        if let Some(w) = self.wal.get() {
            w.flush(page::lsn(data), true)?;
        }
        page::seal(data);
        self.file.write_at(data, pid.0 as u64 * PAGE_SIZE as u64)?;
        self.io[1].fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes every dirty page and fsyncs the data file (a checkpoint's
    /// flush). Pages dirtied meanwhile stay dirty for the next one.
    ///
    /// Every change made before the call is in the file and durable when
    /// it returns, including changes to pages an eviction is writing
    /// meanwhile: such a page's dirty bit is already clear, so the flush
    /// would pass it by, and its write could land after the fsync — after
    /// the checkpoint's CONTROL had moved the redo point past the changes.
    /// The flush therefore waits on every frame's `io` lock before the
    /// fsync, as PostgreSQL's checkpoint waits for a buffer's I/O in
    /// progress.
    pub fn flush_all(&self) -> Result<usize> {
        if self.overlay.is_some() {
            return Err(Error::ReadOnly);
        }
        // In page order, so the file is written front to back. (A frame
        // may change pages before its turn: `write_frame` looks again.)
        let mut dirty: Vec<(u32, usize)> = self
            .frames
            .iter()
            .enumerate()
            .filter(|(_, f)| f.dirty.load(Ordering::Acquire))
            .map(|(idx, f)| (f.pid.load(Ordering::Acquire), idx))
            .filter(|&(pid, _)| pid != NO_PAGE)
            .collect();
        dirty.sort_unstable_by_key(|&(pid, _)| pid);
        for &(pid, idx) in &dirty {
            // Pinned through the write, so a miss does not pick the frame
            // and wait for its latch while the write waits for the log. A
            // frame an eviction has claimed is written by whichever of the
            // two takes its dirty bit first.
            let pin = self.pin_frame(idx, PageId(pid));
            self.write_frame(&self.frames[idx])?;
            drop(pin);
        }
        for f in self.frames.iter() {
            drop(f.io.lock());
        }
        self.fail(self.file.sync())?;
        Ok(dirty.len())
    }

    /// Pins frame `idx` whatever page it holds (`pid` is what the caller
    /// expects it to be), unless an eviction has claimed it.
    fn pin_frame(&self, idx: usize, pid: PageId) -> Option<Pinned<'_>> {
        let f = &self.frames[idx];
        if f.pins.fetch_add(1, Ordering::AcqRel) & CLAIMED != 0 {
            f.pins.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Pinned {
            pool: self,
            idx,
            pid,
        })
    }

    /// Drops pages `from` and beyond: their frames are emptied unwritten
    /// and the file is cut to `from` pages. Nothing may hold them; a frame
    /// still pinned leaves the file as it is.
    pub(crate) fn cut(&self, from: PageId) -> Result<()> {
        let _hand = self.miss.lock();
        let mut gone: Vec<&Frame> = Vec::new();
        for f in self.frames.iter() {
            let pid = f.pid.load(Ordering::Acquire);
            if pid == NO_PAGE || pid < from.0 {
                continue;
            }
            if !f.claim() {
                for g in gone {
                    g.release(0);
                }
                return Ok(());
            }
            gone.push(f);
        }
        for f in gone {
            let pid = f.pid.load(Ordering::Acquire);
            f.dirty.store(false, Ordering::Release);
            f.pid.store(NO_PAGE, Ordering::Release);
            self.table.remove(PageId(pid));
            f.release(0);
        }
        let r = self.file.set_len(u64::from(from.0) * PAGE_SIZE as u64);
        self.fail(r)
    }

    /// Length of the data file in pages.
    pub fn file_pages(&self) -> Result<u64> {
        Ok(self.file.len()?.div_ceil(PAGE_SIZE as u64))
    }
}
