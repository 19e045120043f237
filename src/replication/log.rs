//! The Raft log on disk: segment files of CRC-framed entries (the WAL's
//! frame, `wal::frame`) and a meta file holding the vote and the purge
//! point. Synchronous; [`super::log_store`] adapts it to openraft.
//!
//! ```text
//!  raft/meta                         header | frame(vote, purged log id)   replaced whole
//!  raft/<sequence, 16 hex>.log       header | frame(entry) | frame(entry) | ...
//! ```
//!
//! **Acknowledged means synced.** `append` writes frames and hands the
//! sync to the flusher ([`super::log_store`]), which acknowledges only
//! after the segment is synced; `truncate`, `save_vote` and `purge` sync
//! before they return. So after a crash the log holds every acknowledged
//! entry, and at its tail maybe part of an unacknowledged batch.
//!
//! **Recovery.** Segments are read in order, and the frames placed in
//! the order they were written ([`RaftLog::place`]: a frame at or below
//! the last entry replaces it and what follows). In the last segment, the first frame that is cut short or fails
//! its checksum ends the log and is cut off (a torn tail: never
//! acknowledged) — unless a whole frame follows it, which means the bytes
//! were written, and later ones after them: that is damage, and so is a bad
//! frame in any earlier segment: `Error::Corruption` with the file and
//! offset, never cut.
//!
//! **Purge** is logical first: entries up to the asked log id stop being
//! read at once (openraft's view), but the bytes go — segments deleted and
//! the purge point written to the meta file — only up to the purge bound,
//! the state machine's `Db::durable_applied_index()`: a replica whose
//! database lost its unsynced tail to a power failure replays it from here.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::{LogId, Vote};
use parking_lot::Mutex;

use super::encode::{self, Reader, Writer, RAFT_LOG_VERSION};
use super::Entry;
use crate::codec::{u32_at, u64_at};
use crate::error::{Error, Result};
use crate::io::{Vfs, VfsFile};
use crate::limits::{RAFT_SEGMENT_SIZE, WAL_RECORD_MAX};
use crate::wal::frame::{frame, unframe, Framed, FRAME_HDR};

/// Bytes of a segment's or the meta file's header.
pub const HDR: u64 = 24;
const SEG_MAGIC: &[u8; 8] = b"STRRAFTL";
const META_MAGIC: &[u8; 8] = b"STRRAFTM";
const META: &str = "meta";
const META_TMP: &str = "meta.tmp";

/// How far the log may really be purged: one past the highest Raft index
/// the state machine's database has made durable
/// (`Db::durable_applied_index()`, which counts Raft index `i` as `i + 1`),
/// 0 for none. The state machine raises it; the log reads it.
#[derive(Clone, Debug, Default)]
pub struct PurgeBound(Arc<AtomicU64>);

impl PurgeBound {
    /// A bound allowing no purge until raised.
    pub fn new() -> Self {
        Self::default()
    }
    /// Raises the bound to `durable` (a `Db::durable_applied_index()`);
    /// never lowers it.
    pub fn raise(&self, durable: u64) {
        self.0.fetch_max(durable, Ordering::AcqRel);
    }
    /// The highest Raft index whose purge is allowed, if any.
    pub fn allowed(&self) -> Option<u64> {
        self.0.load(Ordering::Acquire).checked_sub(1)
    }
}

/// The log's poisoning: the first failure on its write path. Once set,
/// every later append, truncation, purge and vote fails with
/// `Error::Poisoned`, as the engine's WAL does after a failed fsync: the
/// log can no longer say what is on disk (a retried fsync may report
/// success for pages the failed one lost). Every fsync of a segment goes
/// through [`sync`](Self::sync), under its lock, so none can succeed after
/// one has failed.
#[derive(Clone, Debug, Default)]
pub struct Poison(Arc<Mutex<Option<String>>>);

impl Poison {
    /// `Error::Poisoned` if poisoned.
    pub fn check(&self) -> Result<()> {
        match &*self.0.lock() {
            Some(cause) => Err(Error::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Poisons the log with `e`, unless poisoned already.
    pub fn set(&self, e: &Error) {
        self.0.lock().get_or_insert_with(|| e.to_string());
    }

    /// Syncs `f`, unless poisoned; a failure poisons.
    pub fn sync(&self, f: &dyn VfsFile) -> Result<()> {
        let mut g = self.0.lock();
        if let Some(cause) = &*g {
            return Err(Error::Poisoned {
                cause: cause.clone(),
            });
        }
        f.sync().inspect_err(|e| *g = Some(e.to_string()))
    }
}

/// Where an entry's frame lies.
#[derive(Clone, Copy, Debug)]
struct Loc {
    log_id: LogId<u64>,
    /// The segment's sequence number.
    seg: u64,
    off: u64,
    len: u64,
}

/// An open segment: its file and the length of its valid bytes.
pub struct Segment {
    /// The file, shared with the flusher.
    pub file: Arc<dyn VfsFile>,
    len: u64,
}

/// The log: segments, the locations of the entries in them, vote and
/// purge points.
pub struct RaftLog {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    segments: BTreeMap<u64, Segment>,
    /// Locations of the entries after `purged_physical`, in index order.
    locs: VecDeque<Loc>,
    vote: Option<Vote<u64>>,
    /// The purge point openraft asked for (entries up to it are not read).
    purged: Option<LogId<u64>>,
    /// The purge point in the meta file: entries up to it are gone.
    purged_physical: Option<LogId<u64>>,
    bound: PurgeBound,
    segment_size: u64,
    poison: Poison,
}

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.log"))
}

fn header(magic: &[u8; 8], seq: u64) -> [u8; HDR as usize] {
    let mut h = [0u8; HDR as usize];
    h[..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&RAFT_LOG_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    h
}

/// Checks a header; `Ok(false)` when it is torn: cut short, or all
/// zeros. Anything else that is not this header is damage (the header is
/// synced before anything follows it): `Corruption` with file and offset.
fn header_ok(h: &[u8], magic: &[u8; 8], seq: u64, p: &Path) -> Result<bool> {
    if h.len() < HDR as usize || h[..HDR as usize].iter().all(|&b| b == 0) {
        return Ok(false);
    }
    if &h[..8] != magic {
        return Err(Error::corruption(
            p,
            0,
            format!("magic {:02x?}, not {:02x?}", &h[..8], magic),
        ));
    }
    let version = u32_at(h, 8).unwrap_or(0);
    if version != RAFT_LOG_VERSION {
        return Err(Error::IncompatibleFormat {
            reason: format!(
                "{}: Raft log version {version}, this build reads {RAFT_LOG_VERSION}",
                p.display()
            ),
        });
    }
    match u64_at(h, 16) {
        Some(f) if f == seq => Ok(true),
        f => Err(Error::corruption(
            p,
            16,
            format!("header names segment {f:?}, the file name {seq}"),
        )),
    }
}

fn read_all(f: &dyn VfsFile) -> Result<Vec<u8>> {
    let len = f.len()?;
    let mut b = vec![0u8; len as usize];
    let n = f.read_at(&mut b, 0)?;
    b.truncate(n);
    Ok(b)
}

/// Whether a whole, checksummed frame starts anywhere in `b`. Only
/// offsets whose length field fits what follows are checksummed, and no
/// more than [`SCAN_BUDGET`] times `b`'s length in all: past that (a
/// crafted tail, not a torn one) the answer is yes, and the log is
/// refused rather than cut.
fn whole_frame_in(b: &[u8]) -> bool {
    let mut budget = (b.len() as u64).saturating_mul(SCAN_BUDGET);
    for i in 0..b.len() {
        let Some(len) = u32_at(b, i) else {
            return false;
        };
        let len = len as usize;
        if len == 0 || len > WAL_RECORD_MAX || b.len() - i < FRAME_HDR + len {
            continue;
        }
        budget = match budget.checked_sub(len as u64) {
            Some(left) => left,
            None => return true,
        };
        if matches!(unframe(&b[i..]), Framed::Ok(..)) {
            return true;
        }
    }
    false
}

/// Bytes checksummed per byte of a torn tail, at most, looking for a
/// whole frame after it.
const SCAN_BUDGET: u64 = 16;

impl RaftLog {
    /// Opens (creating) the log in `dir`, recovering from a torn tail.
    pub fn open(vfs: Arc<dyn Vfs>, dir: &Path, bound: PurgeBound) -> Result<RaftLog> {
        // Directories made here are names in their parents: synced, or a
        // power loss takes the whole log with them.
        let mut made = Vec::new();
        for a in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
            if vfs.exists(a)? {
                break;
            }
            made.push(a.to_path_buf());
        }
        vfs.create_dir_all(dir)?;
        for a in &made {
            if let Some(parent) = a.parent().filter(|p| !p.as_os_str().is_empty()) {
                vfs.sync_dir(parent)?;
            }
        }
        let mut log = RaftLog {
            vfs,
            dir: dir.to_path_buf(),
            segments: BTreeMap::new(),
            locs: VecDeque::new(),
            vote: None,
            purged: None,
            purged_physical: None,
            bound,
            segment_size: RAFT_SEGMENT_SIZE,
            poison: Poison::default(),
        };
        log.read_meta()?;
        log.purged = log.purged_physical;
        let mut seqs = Vec::new();
        for p in log.vfs.list(dir)? {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(hex) = name.strip_suffix(".log") {
                if let (16, Ok(seq)) = (hex.len(), u64::from_str_radix(hex, 16)) {
                    seqs.push(seq);
                }
            }
        }
        seqs.sort_unstable();
        let n = seqs.len();
        for (i, seq) in seqs.into_iter().enumerate() {
            log.recover_segment(seq, i + 1 == n)?;
        }
        log.drop_purged_segments()?;
        Ok(log)
    }

    /// Sets the size past which a new segment starts (tests use small ones).
    pub fn set_segment_size(&mut self, bytes: u64) {
        self.segment_size = bytes.max(HDR + 1);
    }

    fn read_meta(&mut self) -> Result<()> {
        let p = self.dir.join(META);
        if !self.vfs.exists(&p)? {
            return Ok(());
        }
        let b = read_all(self.vfs.open_read(&p)?.as_ref())?;
        // The meta file is renamed into place only once synced whole: any
        // damage in it is damage.
        if !header_ok(&b, META_MAGIC, 0, &p)? {
            return Err(Error::corruption(&p, 0, "meta header missing or torn"));
        }
        let body = &b[HDR as usize..];
        let Framed::Ok(payload, n) = unframe(body) else {
            return Err(Error::corruption(&p, HDR, "meta frame damaged"));
        };
        let mut r = Reader::new(payload);
        let decoded = encode::get_opt_vote(&mut r)
            .and_then(|v| Ok((v, encode::get_opt_log_id(&mut r)?)))
            .and_then(|x| r.finish().map(|()| x));
        let (vote, purged) =
            decoded.map_err(|e| Error::corruption(&p, HDR + FRAME_HDR as u64, e))?;
        if HDR as usize + n != b.len() {
            return Err(Error::corruption(
                &p,
                HDR + n as u64,
                "bytes after the meta frame",
            ));
        }
        self.vote = vote;
        self.purged_physical = purged;
        Ok(())
    }

    /// Writes the vote and the physical purge point: a new file, synced,
    /// renamed over the old, the directory synced.
    fn write_meta(&self, vote: Option<&Vote<u64>>, purged: Option<&LogId<u64>>) -> Result<()> {
        let mut w = Writer::default();
        encode::put_opt_vote(&mut w, vote);
        encode::put_opt_log_id(&mut w, purged);
        let mut b = header(META_MAGIC, 0).to_vec();
        frame(&w.0, &mut b);
        let tmp = self.dir.join(META_TMP);
        let f = self.vfs.open(&tmp, true)?;
        f.set_len(0)?;
        f.write_at(&b, 0)?;
        f.sync()?;
        drop(f);
        self.vfs.rename(&tmp, &self.dir.join(META))?;
        self.vfs.sync_dir(&self.dir)
    }

    fn recover_segment(&mut self, seq: u64, last: bool) -> Result<()> {
        let p = seg_path(&self.dir, seq);
        let file: Arc<dyn VfsFile> = Arc::from(self.vfs.open(&p, false)?);
        let b = read_all(file.as_ref())?;
        if !header_ok(&b, SEG_MAGIC, seq, &p)? {
            // A torn header: the segment's creation was cut short — unless
            // bytes follow, which were written after it was synced.
            if let Some(at) = b
                .iter()
                .position(|&x| x != 0)
                .filter(|_| b.len() > HDR as usize)
            {
                return Err(Error::corruption(
                    &p,
                    at as u64,
                    "bytes in a segment whose header is zeros",
                ));
            }
            if last {
                // Created just before a crash: nothing in it was acknowledged.
                drop(file);
                self.vfs.remove(&p)?;
                return self.vfs.sync_dir(&self.dir);
            }
            return Err(Error::corruption(&p, 0, "segment header missing or torn"));
        }
        let mut off = HDR as usize;
        loop {
            let rest = &b[off..];
            match unframe(rest) {
                Framed::Ok(payload, n) => {
                    let e = encode::decode_entry(payload)
                        .map_err(|e| Error::corruption(&p, off as u64, e))?;
                    self.place(Loc {
                        log_id: e.log_id,
                        seg: seq,
                        off: off as u64,
                        len: n as u64,
                    })?;
                    off += n;
                }
                Framed::End if rest.iter().all(|&x| x == 0) => break,
                bad => {
                    let why = match bad {
                        Framed::Bad(why) => why,
                        _ => "nonzero bytes after the end of the log".into(),
                    };
                    if !last || whole_frame_in(&rest[1..]) {
                        return Err(Error::corruption(&p, off as u64, why));
                    }
                    break;
                }
            }
        }
        if off < b.len() {
            // The torn tail is cut, durably, before anything is appended.
            file.set_len(off as u64)?;
            self.poison.sync(file.as_ref())?;
        }
        self.segments.insert(
            seq,
            Segment {
                file,
                len: off as u64,
            },
        );
        Ok(())
    }

    /// Takes a frame into the entries held, in the order frames were
    /// written: one at or below the physical purge point is gone; one at
    /// or below the last entry replaces it and what follows (a truncation
    /// written as an append); otherwise it must follow the last entry (or
    /// the purge point, if none is held). A gap the purge point does not
    /// explain is damage — entries acknowledged once are missing —
    /// `Corruption` naming the frame, never a log started anew.
    fn place(&mut self, loc: Loc) -> Result<()> {
        let index = loc.log_id.index;
        if self.purged_physical.is_some_and(|p| index <= p.index) {
            return Ok(());
        }
        while self.locs.back().is_some_and(|b| b.log_id.index >= index) {
            self.locs.pop_back();
        }
        let after = match self.locs.back() {
            Some(b) => Some(b.log_id.index),
            None => self.purged_physical.map(|p| p.index),
        };
        if let Some(after) = after.filter(|&a| a + 1 != index) {
            return Err(Error::corruption(
                seg_path(&self.dir, loc.seg),
                loc.off,
                format!(
                    "entry {} follows entry {after}: the entries between are missing",
                    loc.log_id
                ),
            ));
        }
        self.locs.push_back(loc);
        Ok(())
    }

    /// The vote saved last.
    pub fn vote(&self) -> Option<Vote<u64>> {
        self.vote
    }

    /// Saves the vote, durably, before returning.
    pub fn save_vote(&mut self, vote: &Vote<u64>) -> Result<()> {
        self.guarded(|log| {
            log.write_meta(Some(vote), log.purged_physical.as_ref())?;
            log.vote = Some(*vote);
            Ok(())
        })
    }

    /// The log's poisoning (the flusher syncs through it).
    pub fn poison(&self) -> Poison {
        self.poison.clone()
    }

    /// Runs `f`, a step on the write path, unless the log is poisoned; an
    /// error of `f` poisons it.
    fn guarded<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.poison.check()?;
        f(self).inspect_err(|e| self.poison.set(e))
    }

    /// The purge point (openraft's: logical) and the last entry's id (or
    /// the purge point, if it is past every entry).
    pub fn state(&self) -> (Option<LogId<u64>>, Option<LogId<u64>>) {
        let last = self.locs.back().map(|l| l.log_id);
        let last = match (last, self.purged) {
            (Some(l), Some(p)) if p.index >= l.index => Some(p),
            (None, p) => p,
            (l, _) => l,
        };
        (self.purged, last)
    }

    /// The purge point in the meta file.
    pub fn purged_physical(&self) -> Option<LogId<u64>> {
        self.purged_physical
    }

    fn pos(&self, index: u64) -> Option<usize> {
        let first = self.locs.front()?.log_id.index;
        let i = index.checked_sub(first)? as usize;
        (i < self.locs.len()).then_some(i)
    }

    /// Reads the entries with indexes in `[lo, hi)` that are held and not
    /// purged.
    pub fn read(&self, lo: u64, hi: u64) -> Result<Vec<Entry>> {
        let (Some(front), Some(back)) = (self.locs.front(), self.locs.back()) else {
            return Ok(Vec::new());
        };
        let mut lo = lo.max(front.log_id.index);
        if let Some(p) = self.purged {
            lo = lo.max(p.index.saturating_add(1));
        }
        let hi = hi.min(back.log_id.index.saturating_add(1));
        let mut out = Vec::with_capacity(hi.saturating_sub(lo).min(1024) as usize);
        for index in lo..hi {
            if let Some(i) = self.pos(index) {
                out.push(self.read_at(&self.locs[i])?);
            }
        }
        Ok(out)
    }

    fn read_at(&self, loc: &Loc) -> Result<Entry> {
        let p = seg_path(&self.dir, loc.seg);
        let seg = self
            .segments
            .get(&loc.seg)
            .ok_or_else(|| Error::corruption(&p, loc.off, "segment gone"))?;
        let mut b = vec![0u8; loc.len as usize];
        seg.file.read_at(&mut b, loc.off)?;
        let e = match unframe(&b) {
            Framed::Ok(payload, _) => {
                encode::decode_entry(payload).map_err(|e| Error::corruption(&p, loc.off, e))?
            }
            Framed::End => return Err(Error::corruption(&p, loc.off, "entry gone")),
            Framed::Bad(why) => return Err(Error::corruption(&p, loc.off, why)),
        };
        if e.log_id != loc.log_id {
            return Err(Error::corruption(
                &p,
                loc.off,
                format!("entry {} where {} was written", e.log_id, loc.log_id),
            ));
        }
        Ok(e)
    }

    /// Writes `entries` (not synced: the caller hands the returned files
    /// to the flusher, which syncs them before it acknowledges). They are
    /// placed as [`place`](Self::place) says: openraft appends after the
    /// last entry, or after truncating, or past a purge point beyond every
    /// entry.
    /// An entry too large is refused before anything is written; any
    /// other failure poisons the log.
    pub fn append(&mut self, entries: &[Entry]) -> Result<Vec<Arc<dyn VfsFile>>> {
        self.poison.check()?;
        let mut payloads = Vec::with_capacity(entries.len());
        for e in entries {
            let payload = encode::encode_entry(e);
            if payload.len() > WAL_RECORD_MAX {
                return Err(Error::ValueTooLarge { len: payload.len() });
            }
            payloads.push(payload);
        }
        self.guarded(|log| log.append_encoded(entries, &payloads))
    }

    fn append_encoded(
        &mut self,
        entries: &[Entry],
        payloads: &[Vec<u8>],
    ) -> Result<Vec<Arc<dyn VfsFile>>> {
        let mut dirty: Vec<Arc<dyn VfsFile>> = Vec::new();
        for (e, payload) in entries.iter().zip(payloads) {
            if self
                .locs
                .back()
                .is_some_and(|b| b.log_id.index >= e.log_id.index)
            {
                // Overwriting: cut the old suffix off the disk first, so no
                // replaced frame lies before the new one.
                self.truncate_from(e.log_id.index)?;
                dirty.retain(|f| self.segments.values().any(|s| Arc::ptr_eq(&s.file, f)));
            }
            let after = match self.locs.back() {
                Some(b) => Some(b.log_id.index),
                None => self.purged_physical.map(|p| p.index),
            };
            if after.is_some_and(|a| a + 1 < e.log_id.index) {
                match self.purged {
                    Some(p) if p.index + 1 == e.log_id.index => self.purge_past(p)?,
                    _ => {
                        return Err(Error::Unsupported(
                            "an append leaving a gap in the Raft log",
                        ))
                    }
                }
            }
            let mut buf = Vec::with_capacity(payload.len() + FRAME_HDR);
            frame(payload, &mut buf);
            let seq = self.writable_segment(buf.len() as u64)?;
            let Some(s) = self.segments.get_mut(&seq) else {
                return Err(Error::corruption(
                    seg_path(&self.dir, seq),
                    0,
                    "segment gone",
                ));
            };
            s.file.write_at(&buf, s.len)?;
            let loc = Loc {
                log_id: e.log_id,
                seg: seq,
                off: s.len,
                len: buf.len() as u64,
            };
            s.len += buf.len() as u64;
            if !dirty.iter().any(|f| Arc::ptr_eq(f, &s.file)) {
                dirty.push(s.file.clone());
            }
            self.place(loc)?;
        }
        Ok(dirty)
    }

    /// The segment the next frame of `len` bytes goes to, starting one
    /// when the last is full (or there is none).
    fn writable_segment(&mut self, len: u64) -> Result<u64> {
        match self.segments.last_key_value() {
            Some((&seq, s)) if s.len + len <= self.segment_size || s.len == HDR => Ok(seq),
            last => {
                let seq = last.map_or(0, |(&q, _)| q + 1);
                self.start_segment(seq)?;
                Ok(seq)
            }
        }
    }

    fn start_segment(&mut self, seq: u64) -> Result<()> {
        if let Some((_, s)) = self.segments.last_key_value() {
            // The full segment is synced before the next starts: only the
            // last segment may have a torn tail.
            self.poison.sync(s.file.as_ref())?;
        }
        let p = seg_path(&self.dir, seq);
        let f: Arc<dyn VfsFile> = Arc::from(self.vfs.open(&p, true)?);
        f.set_len(0)?;
        f.write_at(&header(SEG_MAGIC, seq), 0)?;
        self.poison.sync(f.as_ref())?;
        self.vfs.sync_dir(&self.dir)?;
        self.segments.insert(seq, Segment { file: f, len: HDR });
        Ok(())
    }

    /// Removes the entries from `index` on, durably, before returning:
    /// later segments are deleted from the last back, the directory synced
    /// after each, then the segment holding the first is cut at its frame.
    /// So at every step the disk holds a prefix of the log — a power loss
    /// inside leaves no gap, at most entries past `index` that the
    /// truncation, not having returned, had not yet removed.
    pub fn truncate(&mut self, index: u64) -> Result<()> {
        self.guarded(|log| log.truncate_from(index))
    }

    fn truncate_from(&mut self, index: u64) -> Result<()> {
        let Some(front) = self.locs.front() else {
            return Ok(());
        };
        let i = if index <= front.log_id.index {
            0
        } else {
            match self.pos(index) {
                Some(i) => i,
                None => return Ok(()),
            }
        };
        let loc = self.locs[i];
        self.locs.truncate(i);
        let later: Vec<u64> = self
            .segments
            .range(loc.seg + 1..)
            .map(|(&k, _)| k)
            .rev()
            .collect();
        for seq in later {
            self.segments.remove(&seq);
            self.vfs.remove(&seg_path(&self.dir, seq))?;
            self.vfs.sync_dir(&self.dir)?;
        }
        if let Some(s) = self.segments.get_mut(&loc.seg) {
            s.file.set_len(loc.off)?;
            self.poison.sync(s.file.as_ref())?;
            s.len = loc.off;
        }
        Ok(())
    }

    /// Purges the entries up to `log_id`: at once from what is read, and
    /// from the disk as far as the purge bound allows.
    pub fn purge(&mut self, log_id: LogId<u64>) -> Result<()> {
        self.guarded(|log| {
            if log.purged.is_some_and(|p| p.index >= log_id.index) {
                return Ok(());
            }
            log.purged = Some(log_id);
            log.purge_allowed()
        })
    }

    /// Deletes what the logical purge point and the bound allow: the meta
    /// file names the new point first, then whole segments go.
    pub fn purge_physical(&mut self) -> Result<()> {
        self.guarded(Self::purge_allowed)
    }

    fn purge_allowed(&mut self) -> Result<()> {
        let (Some(want), Some(allowed)) = (self.purged, self.bound.allowed()) else {
            return Ok(());
        };
        let upto = want.index.min(allowed);
        let point = if upto == want.index {
            want
        } else {
            // The bound stops short of the asked point: the last entry held
            // at or below it.
            match self.locs.iter().rev().find(|l| l.log_id.index <= upto) {
                Some(l) => l.log_id,
                None => return Ok(()),
            }
        };
        if self.purged_physical.is_some_and(|p| p.index >= point.index) {
            return Ok(());
        }
        self.write_meta(self.vote.as_ref(), Some(&point))?;
        self.purged_physical = Some(point);
        while self
            .locs
            .front()
            .is_some_and(|l| l.log_id.index <= point.index)
        {
            self.locs.pop_front();
        }
        self.drop_purged_segments()
    }

    /// Makes `point`, a purge point past every entry held, the physical
    /// one: openraft appends past such a point after installing a snapshot
    /// there, so the state machine holds everything up to it. The disk then
    /// never holds a gap the purge point does not explain.
    fn purge_past(&mut self, point: LogId<u64>) -> Result<()> {
        self.write_meta(self.vote.as_ref(), Some(&point))?;
        self.purged_physical = Some(point);
        self.locs.clear();
        self.drop_purged_segments()
    }

    /// Deletes the segments before the one holding the first entry held
    /// (all but the last when none is held): nothing in them is read, and
    /// reading the rest alone places the same entries.
    fn drop_purged_segments(&mut self) -> Result<()> {
        if self.purged_physical.is_none() {
            return Ok(());
        }
        let keep_from = match (self.locs.front(), self.segments.last_key_value()) {
            (Some(l), _) => l.seg,
            (None, Some((&last, _))) => last,
            (None, None) => return Ok(()),
        };
        let gone: Vec<u64> = self.segments.range(..keep_from).map(|(&k, _)| k).collect();
        for seq in &gone {
            self.segments.remove(seq);
            self.vfs.remove(&seg_path(&self.dir, *seq))?;
        }
        if !gone.is_empty() {
            self.vfs.sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The segment files, in order (for tests and tools).
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments
            .keys()
            .map(|&f| seg_path(&self.dir, f))
            .collect()
    }
}
