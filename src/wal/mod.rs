//! The write-ahead log: every change reaches the log before it reaches a
//! data page, and a commit is acknowledged once its record is durable.
//!
//! ```text
//!   appenders ──► [ in-memory buffer ] ──write──► segment file ──fsync──► durable
//!                     (inner mutex)          (one flush leader at a time)
//! ```
//! **Group commit.** A committer appends its record, then calls
//! [`Wal::flush`]. If no flush is under way it becomes the leader: it
//! writes everything buffered so far and fsyncs once; everyone who arrived
//! meanwhile waits, and on wake-up finds its LSN durable (or leads the next
//! round). Appends continue while the leader fsyncs.
//!
//! **Gathering.** A leader that starts at once fsyncs only the committers
//! that happened to arrive first: the ones it just woke are still on their
//! way back with their next commits, so batches hold about half the
//! committers. So a leader first waits until as many committers are queued
//! as its predecessor served, for at most as long as an fsync takes (and
//! `GROUP_COMMIT_WAIT_MAX`). The expectation sizes itself: a lone
//! committer expects nobody and never waits, and a committer that stops
//! coming costs one bounded wait, after which the next round expects one
//! fewer.
//!
//! **Fail-stop.** The first failed write or fsync poisons the log: every
//! later append and flush returns `Error::Poisoned`. Retrying an fsync is
//! unsafe (the kernel may have dropped the dirty pages), so the only way
//! back is to reopen and recover from what is durable.
//!
//! The log does not interpret records; recovery and the buffer pool do.

pub mod frame;
pub mod reader;
pub mod segment;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sync::{thread, AtomicBool, AtomicU64, Mutex, Ordering};

use crate::error::{Error, Result};
use crate::ids::Lsn;
use crate::ids::Xid;
use crate::io::{Vfs, VfsFile};
use crate::limits::{
    GROUP_COMMIT_WAIT_MAX, WAL_BUFFER_MAX, WAL_EXTENT_MAX, WAL_EXTENT_MIN, WAL_SEGMENT_SIZE,
};
use crate::redo::record::{Kind, Record};
use frame::{frame, FRAME_HDR};
use segment::SEG_HDR;

struct Segment {
    start: u64,
    file: Box<dyn VfsFile>,
}

struct Inner {
    buf: Vec<u8>,
    /// LSN of `buf[0]`.
    buf_lsn: u64,
    /// LSN just past the last appended byte.
    end: u64,
    seg: Arc<Segment>,
    /// Length of the current segment's file: its log, then zeros written
    /// ahead (see [`WAL_EXTENT_MIN`]).
    seg_len: u64,
}

/// The state of the current flush round.
#[derive(Default)]
struct Round {
    /// Whether a leader is at work.
    leading: bool,
    /// The threads waiting for it to finish.
    waiting: Vec<thread::Thread>,
    /// A leader gathering committers (`Wal::gather`), and how many it
    /// waits for: the committer that completes the count wakes it.
    gatherer: Option<(std::thread::Thread, u64)>,
}

/// The log writer.
pub struct Wal {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Whether a flush leader is at work.
    flush_lock: Mutex<Round>,
    /// Everything below this LSN is fsynced.
    durable: AtomicU64,
    /// Everything below this LSN is written to the OS.
    written: AtomicU64,
    poisoned: AtomicBool,
    cause: Mutex<Option<Error>>,
    syncs: AtomicU64,
    /// Durable flushes asked for since the last leader took its batch, and
    /// how many the last batch served (`gather`).
    queued: AtomicU64,
    last_batch: AtomicU64,
    /// How long the last fsync took, in microseconds.
    sync_micros: AtomicU64,
    segment_size: u64,
    /// Opened by `read_only`: appends fail with `Error::ReadOnly`.
    read_only: bool,
}

impl Wal {
    /// Opens the log for appending at `end` (as found by recovery): cuts
    /// any torn tail behind it and drops segments that start after it.
    pub fn resume(vfs: Arc<dyn Vfs>, dir: &Path, end: Lsn) -> Result<Wal> {
        let mut starts = segment::list(vfs.as_ref(), dir)?;
        while let Some(&last) = starts.last() {
            if last > end.0 || (last == end.0 && starts.len() > 1) {
                vfs.remove(&segment::path(dir, last))?;
                starts.pop();
            } else {
                break;
            }
        }
        let seg = match starts.last() {
            Some(&start) if end.0 >= start + SEG_HDR => {
                let file = vfs.open(&segment::path(dir, start), false)?;
                file.set_len(end.0 - start)?;
                file.sync()?;
                Segment { start, file }
            }
            _ => {
                // No usable segment: the last one (if any) has a torn header.
                for &s in &starts {
                    vfs.remove(&segment::path(dir, s))?;
                }
                let file = segment::create(vfs.as_ref(), dir, end.0)?;
                file.sync()?;
                vfs.sync_dir(dir)?;
                Segment { start: end.0, file }
            }
        };
        let end = end.0.max(seg.start + SEG_HDR);
        vfs.sync_dir(dir)?;
        let len = end - seg.start;
        Ok(Self::with(vfs, dir, seg, end, len, false))
    }

    /// Opens the log without changing it (for a read-only database): the
    /// segment holding `end` is opened for reading, nothing is cut or
    /// removed, and every append fails with `Error::ReadOnly`.
    pub fn read_only(vfs: Arc<dyn Vfs>, dir: &Path, end: Lsn) -> Result<Wal> {
        let starts = segment::list(vfs.as_ref(), dir)?;
        let Some(&start) = starts.iter().rev().find(|&&s| s <= end.0) else {
            return Err(Error::corruption(
                segment::path(dir, end.0),
                0,
                format!("no log segment holds the end of the log {end}"),
            ));
        };
        let file = vfs.open_read(&segment::path(dir, start))?;
        let end = end.0.max(start + SEG_HDR);
        let len = file.len()?;
        Ok(Self::with(
            vfs,
            dir,
            Segment { start, file },
            end,
            len,
            true,
        ))
    }

    fn with(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        seg: Segment,
        end: u64,
        seg_len: u64,
        read_only: bool,
    ) -> Wal {
        Wal {
            vfs,
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                buf: Vec::with_capacity(if read_only { 0 } else { WAL_BUFFER_MAX }),
                buf_lsn: end,
                end,
                seg: Arc::new(seg),
                seg_len,
            }),
            flush_lock: Mutex::new(Round::default()),
            durable: AtomicU64::new(end),
            written: AtomicU64::new(end),
            poisoned: AtomicBool::new(false),
            cause: Mutex::new(None),
            syncs: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            last_batch: AtomicU64::new(0),
            sync_micros: AtomicU64::new(0),
            segment_size: WAL_SEGMENT_SIZE,
            read_only,
        }
    }

    /// Closes segments once they pass `bytes` (default 16 MiB).
    pub fn with_segment_size(mut self, bytes: u64) -> Wal {
        self.segment_size = bytes.max(SEG_HDR + 1);
        self
    }

    /// `Error::Poisoned` naming the cause, if the log is poisoned.
    pub(crate) fn check(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poisoned_error());
        }
        Ok(())
    }

    /// `Error::Poisoned` naming what poisoned the log (the error path
    /// only: it takes a lock and formats the cause).
    #[cold]
    fn poisoned_error(&self) -> Error {
        Error::Poisoned {
            cause: self
                .poison_cause()
                .unwrap_or_else(|| "an earlier failure".to_string()),
        }
    }

    /// Marks the log (and so the database) failed; the first cause is
    /// kept. The durability path calls it through `fail`; the background
    /// worker calls it for damage it cannot work past.
    pub fn poison(&self, cause: &Error) {
        let mut first = self.cause.lock();
        if first.is_none() {
            *first = Some(cause.clone());
        }
        self.poisoned.store(true, Ordering::Release);
    }

    /// What poisoned the log, if anything did.
    pub fn poison_cause(&self) -> Option<String> {
        self.cause.lock().as_ref().map(Error::to_string)
    }

    /// The error that poisoned the log, if any did.
    pub fn poison_error(&self) -> Option<Error> {
        self.cause.lock().clone()
    }

    /// Whether an earlier I/O failure poisoned the log.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Fail-stop: an error on the durability path poisons the log and is
    /// reported as `Error::Poisoned` naming the first cause (also kept for
    /// `poison_cause`).
    pub(crate) fn fail<T>(&self, r: Result<T>) -> Result<T> {
        r.map_err(|e| {
            self.poison(&e);
            self.poisoned_error()
        })
    }

    /// Appends a record; returns the LSN just past it. Not yet durable.
    pub fn append(&self, rec: &Record) -> Result<Lsn> {
        self.append_payload(&rec.encode())
    }

    /// Appends an encoded record (`record::encode_into`); returns the LSN
    /// just past it.
    pub fn append_payload(&self, payload: &[u8]) -> Result<Lsn> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        self.check()?;
        let mut inner = self.inner.lock();
        let size = (FRAME_HDR + payload.len()) as u64;
        if inner.end + size - inner.seg.start > self.segment_size
            && inner.end > inner.seg.start + SEG_HDR
        {
            let r = self.roll(&mut inner);
            self.fail(r)?;
        }
        let end = Self::push(&mut inner, payload);
        if inner.buf.len() >= WAL_BUFFER_MAX {
            let r = Self::write_out(&mut inner);
            self.fail(r)?;
            self.written.fetch_max(end, Ordering::AcqRel);
        }
        Ok(Lsn(end))
    }

    fn push(inner: &mut Inner, payload: &[u8]) -> u64 {
        frame(payload, &mut inner.buf);
        inner.end += (FRAME_HDR + payload.len()) as u64;
        inner.end
    }

    /// Writes the buffer to the segment file, then zeros ahead of it when
    /// it reached the file's end: the next fdatasyncs overwrite blocks the
    /// file has, and do not wait for the journal to record a new length.
    fn write_out(inner: &mut Inner) -> Result<()> {
        if inner.buf.is_empty() {
            return Ok(());
        }
        inner
            .seg
            .file
            .write_at(&inner.buf, inner.buf_lsn - inner.seg.start)?;
        inner.buf_lsn = inner.end;
        inner.buf.clear();
        let at = inner.end - inner.seg.start;
        if at >= inner.seg_len {
            let ahead = at.clamp(WAL_EXTENT_MIN, WAL_EXTENT_MAX);
            let len = (at + ahead).next_multiple_of(WAL_EXTENT_MIN);
            let zeros = vec![0u8; (len - at) as usize];
            inner.seg.file.write_at(&zeros, at)?;
            inner.seg_len = len;
        }
        Ok(())
    }

    /// Starts a new segment if the current one holds at least `bytes`, so
    /// a checkpoint can delete the old one whole (otherwise a quiet database
    /// keeps up to a segment of log it no longer needs). Returns whether it
    /// rolled.
    pub fn roll_if_over(&self, bytes: u64) -> Result<bool> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        self.check()?;
        let mut inner = self.inner.lock();
        if inner.end - inner.seg.start < bytes.max(SEG_HDR + 1) {
            return Ok(false);
        }
        let r = self.roll(&mut inner);
        self.fail(r)?;
        Ok(true)
    }

    /// Closes the current segment (written and fsynced) and starts the next.
    fn roll(&self, inner: &mut Inner) -> Result<()> {
        Self::write_out(inner)?;
        // A closed segment ends at its last frame: zeros are the end of
        // the log only in the last one.
        inner.seg.file.set_len(inner.end - inner.seg.start)?;
        inner.seg.file.sync()?;
        let start = inner.end;
        let file = segment::create(self.vfs.as_ref(), &self.dir, start)?;
        self.vfs.sync_dir(&self.dir)?;
        inner.seg = Arc::new(Segment { start, file });
        inner.seg_len = SEG_HDR;
        inner.end = start + SEG_HDR;
        inner.buf_lsn = inner.end;
        self.durable.fetch_max(start, Ordering::AcqRel);
        Ok(())
    }

    /// Makes the log durable (`sync`) or written to the OS (`!sync`) at
    /// least up to `upto`. One caller (the leader) writes and fsyncs for
    /// everyone; the others park, and the leader unparks each when the
    /// round ends. (A condition variable hands its waiters the mutex one
    /// after another, each woken by the one before: with batches gathered
    /// to 15 committers on 2 cores, that chain was the round's longest
    /// part.)
    pub fn flush(&self, upto: Lsn, sync: bool) -> Result<()> {
        let mark = if sync { &self.durable } else { &self.written };
        if sync && mark.load(Ordering::Acquire) < upto.0 {
            self.queued.fetch_add(1, Ordering::AcqRel);
        }
        loop {
            if mark.load(Ordering::Acquire) >= upto.0 {
                return self.check();
            }
            {
                let mut round = self.flush_lock.lock();
                self.check()?;
                if mark.load(Ordering::Acquire) >= upto.0 {
                    return Ok(());
                }
                if round.leading {
                    if let Some((leader, want)) = &round.gatherer {
                        if self.queued.load(Ordering::Acquire) >= *want {
                            leader.unpark();
                        }
                    }
                    round.waiting.push(thread::current());
                    drop(round);
                    // Woken by the leader when its round ends (or at once,
                    // if it ended already: an unpark before the park is
                    // kept); then look again.
                    thread::park();
                    continue;
                }
                round.leading = true;
            }
            let r = self.flush_as_leader(sync);
            let waiting = {
                let mut round = self.flush_lock.lock();
                round.leading = false;
                std::mem::take(&mut round.waiting)
            };
            for t in waiting {
                t.unpark();
            }
            r?;
        }
    }

    fn flush_as_leader(&self, sync: bool) -> Result<()> {
        if sync {
            self.gather();
        }
        let (target, seg) = {
            let mut inner = self.inner.lock();
            if sync {
                let batch = self.queued.swap(0, Ordering::AcqRel);
                self.last_batch.store(batch, Ordering::Release);
            }
            if !inner.buf.is_empty() {
                // Tells recovery how far the log was durable when this batch
                // was written: damage below that is corruption, not a torn tail.
                let mark = Record::bare(
                    Kind::DurableMark,
                    Xid::NONE,
                    self.durable.load(Ordering::Acquire),
                );
                Self::push(&mut inner, &mark.encode());
            }
            let r = Self::write_out(&mut inner);
            self.fail(r)?;
            (inner.end, inner.seg.clone())
        };
        self.written.fetch_max(target, Ordering::AcqRel);
        if sync {
            let began = Instant::now();
            let r = seg.file.sync();
            self.sync_micros
                .store(began.elapsed().as_micros() as u64, Ordering::Release);
            self.fail(r)?;
            self.syncs.fetch_add(1, Ordering::Relaxed);
            self.durable.fetch_max(target, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Waits until as many durable flushes are queued as the last batch
    /// served, for at most as long as the last fsync took (see the
    /// module's essay); the committer that completes the count wakes it. A
    /// heuristic only: whatever is queued when it returns goes into the
    /// batch. Under loom it returns at once, as the wait is about time,
    /// which loom does not model.
    fn gather(&self) {
        if cfg!(loom) {
            return;
        }
        let want = self.last_batch.load(Ordering::Acquire);
        if want <= 1 {
            return;
        }
        let limit = Duration::from_micros(self.sync_micros.load(Ordering::Acquire))
            .min(GROUP_COMMIT_WAIT_MAX);
        let since = Instant::now();
        self.flush_lock.lock().gatherer = Some((std::thread::current(), want));
        while self.queued.load(Ordering::Acquire) < want {
            let waited = since.elapsed();
            if waited >= limit {
                break;
            }
            std::thread::park_timeout(limit - waited);
        }
        self.flush_lock.lock().gatherer = None;
    }

    /// LSN just past the last appended record.
    pub fn end(&self) -> Lsn {
        Lsn(self.inner.lock().end)
    }

    /// Number of log fsyncs issued for commits and flushes so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Everything below this LSN survives power loss.
    pub fn durable(&self) -> Lsn {
        Lsn(self.durable.load(Ordering::Acquire))
    }

    /// Where the log starts: the first retained segment's first LSN.
    pub fn oldest(&self) -> Result<Lsn> {
        let starts = segment::list(self.vfs.as_ref(), &self.dir)?;
        Ok(Lsn(starts
            .first()
            .copied()
            .unwrap_or(self.inner.lock().seg.start)))
    }

    /// Removes segments that hold only log before `redo`.
    pub fn recycle(&self, redo: Lsn) -> Result<usize> {
        let current = self.inner.lock().seg.start;
        let starts = segment::list(self.vfs.as_ref(), &self.dir)?;
        let mut removed = 0;
        for pair in starts.windows(2) {
            let (start, next) = (pair[0], pair[1]);
            if next <= redo.0 && next <= current {
                self.vfs.remove(&segment::path(&self.dir, start))?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.vfs.sync_dir(&self.dir)?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::reader::LogReader;
    use super::*;
    use crate::ids::Xid;
    use crate::io::RealFs;
    use crate::redo::record::{self, Kind};

    fn rec(i: u64, pad: usize) -> Record {
        let mut r = Record::bare(Kind::XidHighWater, Xid(i), i);
        r.op = (pad % 200) as u8;
        r
    }

    fn big_record() -> Record {
        let mut big = Record::bare(Kind::Pages, Xid(0), 0);
        for p in 1..=8 {
            let image = vec![p as u8; crate::limits::PAGE_SIZE - crate::page::LOGGED_FROM];
            big.pages
                .push((crate::ids::PageId(p), record::Change::Full(image.into())));
        }
        big
    }

    fn read_all(vfs: &dyn Vfs, dir: &Path) -> (Vec<u64>, Lsn) {
        let mut r = LogReader::open(vfs, dir, Lsn(0)).expect("open reader");
        let mut xs = Vec::new();
        while let Some(e) = r.next_entry().expect("read") {
            if e.record.kind != Kind::DurableMark {
                xs.push(e.record.xid.0);
            }
        }
        (xs, r.end.expect("end known"))
    }

    #[test]
    fn appended_records_read_back_across_segments_and_resume() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let vfs: Arc<dyn Vfs> = Arc::new(RealFs);
        let wal = Wal::resume(vfs.clone(), tmp.path(), Lsn(0)).expect("create");
        let big = big_record();
        let mut n = 0;
        while segment::list(vfs.as_ref(), tmp.path()).expect("list").len() < 3 {
            n += 1;
            let mut r = big.clone();
            r.xid = Xid(n);
            wal.append(&r).expect("append");
        }
        wal.flush(wal.end(), true).expect("flush");
        let end = wal.end();
        drop(wal);
        let (xs, found_end) = read_all(vfs.as_ref(), tmp.path());
        assert_eq!(xs, (1..=n).collect::<Vec<_>>());
        assert_eq!(found_end, end);
        let wal = Wal::resume(vfs.clone(), tmp.path(), found_end).expect("resume");
        wal.append(&rec(n + 1, 3)).expect("append after resume");
        wal.flush(wal.end(), true).expect("flush");
        assert_eq!(read_all(vfs.as_ref(), tmp.path()).0.last(), Some(&(n + 1)));
    }

    #[test]
    fn the_log_is_zero_filled_ahead_and_closed_segments_end_at_their_last_frame() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let vfs: Arc<dyn Vfs> = Arc::new(RealFs);
        let wal = Wal::resume(vfs.clone(), tmp.path(), Lsn(0)).expect("create");
        let big = big_record();
        let seg_len = |start: u64| {
            vfs.open_read(&segment::path(tmp.path(), start))
                .and_then(|f| f.len())
                .expect("len")
        };
        let mut lens = Vec::new();
        while segment::list(vfs.as_ref(), tmp.path()).expect("list").len() < 2 {
            wal.append(&big).expect("append");
            wal.flush(wal.end(), true).expect("flush");
            let starts = segment::list(vfs.as_ref(), tmp.path()).expect("list");
            let last = *starts.last().expect("segment");
            let len = seg_len(last);
            let at = wal.end().0 - last;
            assert!(len > at, "zeros ahead of the log: file {len}, log {at}");
            assert_eq!(len % WAL_EXTENT_MIN, 0);
            assert!(len - at <= WAL_EXTENT_MAX + WAL_EXTENT_MIN);
            if last == 0 {
                lens.push(len);
            }
        }
        assert!(lens.windows(2).all(|w| w[0] <= w[1]));
        assert!(
            lens.iter().any(|&l| l >= 2 * WAL_EXTENT_MAX),
            "extents grow"
        );
        let starts = segment::list(vfs.as_ref(), tmp.path()).expect("list");
        assert_eq!(
            starts[0] + seg_len(starts[0]),
            starts[1],
            "a closed segment is cut to its last frame"
        );
    }

    #[test]
    fn torn_tail_is_cut_and_log_continues() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let vfs: Arc<dyn Vfs> = Arc::new(RealFs);
        let wal = Wal::resume(vfs.clone(), tmp.path(), Lsn(0)).expect("create");
        for i in 1..=10 {
            wal.append(&rec(i, 0)).expect("append");
        }
        wal.flush(wal.end(), true).expect("flush");
        let end = wal.end().0;
        drop(wal);
        // Tear the last record (before the flush's durable mark): the
        // mark claims nothing beyond what was durable before this batch.
        let mark = (FRAME_HDR + record::PAYLOAD_HDR) as u64;
        let p = segment::path(tmp.path(), 0);
        let f = vfs.open(&p, false).expect("open");
        f.set_len(end - mark - 5).expect("truncate");
        let (xs, found) = read_all(vfs.as_ref(), tmp.path());
        assert_eq!(xs, (1..=9).collect::<Vec<_>>());
        let wal = Wal::resume(vfs.clone(), tmp.path(), found).expect("resume");
        wal.append(&rec(11, 0)).expect("append");
        wal.flush(wal.end(), true).expect("flush");
        drop(wal);
        let (xs, _) = read_all(vfs.as_ref(), tmp.path());
        assert_eq!(xs, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 11]);
    }

    #[test]
    fn damage_before_a_durable_mark_is_corruption_not_a_tail() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let vfs: Arc<dyn Vfs> = Arc::new(RealFs);
        let wal = Wal::resume(vfs.clone(), tmp.path(), Lsn(0)).expect("create");
        let mut ends = Vec::new();
        for i in 1..=10 {
            let end = wal.append(&rec(i, 0)).expect("append");
            wal.flush(end, true).expect("flush"); // one batch (and mark) each
            ends.push(end.0);
        }
        drop(wal);
        // Flip a byte inside record 3, which later marks say was durable.
        let p = segment::path(tmp.path(), 0);
        let f = vfs.open(&p, false).expect("open");
        f.write_at(&[0xAA], ends[2] - 3).expect("damage");
        let mut r = LogReader::open(vfs.as_ref(), tmp.path(), Lsn(0)).expect("open");
        let err = loop {
            match r.next_entry() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("damaged acknowledged record was cut as if it were a torn tail"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, Error::Corruption { .. }), "{err}");
    }

    // A redo point past the end of its segment is damage, not the log's end to grow the segment to.
    #[test]
    fn a_redo_point_past_the_end_of_its_segment_is_corruption() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let vfs: Arc<dyn Vfs> = Arc::new(RealFs);
        let wal = Wal::resume(vfs.clone(), tmp.path(), Lsn(0)).expect("create");
        wal.append(&rec(1, 3)).expect("append");
        wal.flush(wal.end(), true).expect("flush");
        drop(wal);
        let len = vfs
            .open_read(&segment::path(tmp.path(), 0))
            .and_then(|f| f.len())
            .expect("len");
        assert!(LogReader::open(vfs.as_ref(), tmp.path(), Lsn(len)).is_ok());
        match LogReader::open(vfs.as_ref(), tmp.path(), Lsn(len + 1 + (1 << 40))) {
            Err(Error::Corruption { file, offset, .. }) => {
                assert_eq!(file, segment::path(tmp.path(), 0));
                assert_eq!(offset, len);
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a redo point past the log was taken as its end"),
        }
    }

    #[test]
    fn damage_in_a_closed_segment_is_corruption() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let vfs: Arc<dyn Vfs> = Arc::new(RealFs);
        let wal = Wal::resume(vfs.clone(), tmp.path(), Lsn(0)).expect("create");
        let big = big_record();
        while segment::list(vfs.as_ref(), tmp.path()).expect("list").len() < 2 {
            wal.append(&big).expect("append");
        }
        wal.flush(wal.end(), true).expect("flush");
        drop(wal);
        let p = segment::path(tmp.path(), 0);
        let f = vfs.open(&p, false).expect("open");
        f.write_at(&[0xff; 4], 100).expect("damage");
        let mut r = LogReader::open(vfs.as_ref(), tmp.path(), Lsn(0)).expect("open");
        let err = loop {
            match r.next_entry() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("damage in a closed segment was taken for the end of the log"),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(err, Error::Corruption { ref file, .. } if file == &p),
            "{err}"
        );
    }

    #[test]
    fn group_commit_flushes_for_all_waiters() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let vfs: Arc<dyn Vfs> = Arc::new(RealFs);
        let wal = Arc::new(Wal::resume(vfs.clone(), tmp.path(), Lsn(0)).expect("create"));
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let wal = wal.clone();
                s.spawn(move || {
                    for i in 0..50 {
                        let end = wal.append(&rec(t * 1000 + i, 0)).expect("append");
                        wal.flush(end, true).expect("flush");
                        assert!(wal.durable() >= end);
                    }
                });
            }
        });
        drop(wal);
        assert_eq!(read_all(vfs.as_ref(), tmp.path()).0.len(), 400);
    }

    #[test]
    fn a_leader_expecting_committers_that_never_come_flushes_and_expects_fewer() {
        // Guards the gathering wait: it is bounded, and it sizes itself
        // from the batch that went out.
        let tmp = tempfile::tempdir().expect("tempdir");
        let wal = Wal::resume(Arc::new(RealFs), tmp.path(), Lsn(0)).expect("create");
        wal.last_batch.store(16, Ordering::Release);
        wal.sync_micros.store(u64::MAX >> 24, Ordering::Release);
        for i in 0..3 {
            let end = wal.append(&rec(i, 0)).expect("append");
            wal.flush(end, true).expect("flush");
            assert!(wal.durable() >= end);
            assert_eq!(wal.last_batch.load(Ordering::Acquire), 1);
        }
        assert_eq!(wal.syncs(), 3);
    }
}
