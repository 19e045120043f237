//! Reads log records from any retained LSN, in order.
//!
//! The reader tells a torn tail from damage. A bad frame in any segment but
//! the last is `Error::Corruption` (the writer fsyncs a segment before it
//! starts the next). In the last segment, a bad frame ends the log — the
//! bytes from there on were never acknowledged — unless a durable mark
//! further on says the log had been fsynced past it: then the bad frame is
//! damage to acknowledged data, and also `Error::Corruption`, never cut.

use std::path::{Path, PathBuf};

use super::frame::{unframe, Framed, FRAME_HDR};
use super::segment::{self, SEG_HDR};
use crate::codec::u32_at;
use crate::error::{Error, Result};
use crate::ids::Lsn;
use crate::io::{Vfs, VfsFile};
use crate::limits::WAL_RECORD_MAX;
use crate::redo::record::{Kind, Record, RecordRef, PAYLOAD_HDR};

/// A record as read: where it starts and ends, and what it says.
#[derive(Debug)]
pub struct Entry {
    /// LSN of the frame's first byte.
    pub start: Lsn,
    /// LSN just past the frame.
    pub end: Lsn,
    /// The record.
    pub record: Record,
}

/// A record as read, borrowed from the reader's buffer until the next read.
#[derive(Debug)]
pub struct EntryRef<'r> {
    /// LSN of the frame's first byte.
    pub start: Lsn,
    /// LSN just past the frame.
    pub end: Lsn,
    /// The record.
    pub record: RecordRef<'r>,
}

/// Sequential reader over the segments of a log directory.
pub struct LogReader<'a> {
    vfs: &'a dyn Vfs,
    dir: PathBuf,
    segments: Vec<u64>,
    seg_idx: usize,
    file: Option<(Box<dyn VfsFile>, u64)>,
    pos: u64,
    buf: Vec<u8>,
    buf_at: u64,
    /// Where the valid log ends, once the reader got there.
    pub end: Option<Lsn>,
}

impl<'a> LogReader<'a> {
    /// Opens the log at `from`, which must lie in a retained segment.
    pub fn open(vfs: &'a dyn Vfs, dir: &Path, from: Lsn) -> Result<Self> {
        let segments = segment::list(vfs, dir)?;
        let seg_idx = match segments.iter().rposition(|&s| s <= from.0) {
            Some(i) => i,
            None => {
                return Err(Error::corruption(
                    segment::path(dir, from.0),
                    0,
                    format!("no log segment holds the redo point {from}"),
                ))
            }
        };
        let mut r = LogReader {
            vfs,
            dir: dir.to_path_buf(),
            segments,
            seg_idx,
            file: None,
            pos: from.0,
            buf: Vec::new(),
            buf_at: 0,
            end: None,
        };
        r.open_segment()?;
        // The log was durable up to the redo point before CONTROL named it,
        // so a point past the end of its segment is damage; taken as the
        // log's end, it would have the writer grow the segment up to it.
        let start = r.segments[seg_idx];
        let seg_end = r.file.as_ref().map_or(start + SEG_HDR, |(_, e)| *e);
        if from.0 > seg_end {
            return Err(Error::corruption(
                segment::path(dir, start),
                seg_end - start,
                format!("the redo point {from} lies past the end of its segment, {seg_end}"),
            ));
        }
        if r.file.is_some() {
            r.pos = r.pos.max(start + SEG_HDR);
        }
        Ok(r)
    }

    fn is_last(&self) -> bool {
        self.seg_idx + 1 == self.segments.len()
    }

    fn open_segment(&mut self) -> Result<()> {
        let start = self.segments[self.seg_idx];
        let p = segment::path(&self.dir, start);
        let f = self.vfs.open_read(&p)?;
        if !segment::header_ok(f.as_ref(), &p, start)? {
            if self.is_last() {
                self.file = None;
                self.end = Some(Lsn(self.pos));
                return Ok(());
            }
            return Err(Error::corruption(p, 0, "segment header missing or torn"));
        }
        let len = f.len()?;
        self.file = Some((f, start + len));
        self.buf.clear();
        Ok(())
    }

    /// Bytes at `pos` within the current segment, at least `want` if the file has them.
    fn bytes(&mut self, want: usize) -> Result<&[u8]> {
        let Some((file, seg_end)) = &self.file else {
            return Ok(&[]);
        };
        let seg_start = self.segments[self.seg_idx];
        let buf_end = self.buf_at + self.buf.len() as u64;
        if self.pos < self.buf_at || self.pos + want as u64 > buf_end {
            let avail = seg_end.saturating_sub(self.pos) as usize;
            let n = want.max(1 << 20).min(avail);
            self.buf.resize(n, 0);
            file.read_at(&mut self.buf, self.pos - seg_start)?;
            self.buf_at = self.pos;
        }
        let off = (self.pos - self.buf_at) as usize;
        let end = (off + want).min(self.buf.len());
        Ok(&self.buf[off..end])
    }

    /// After a bad frame at `bad` in the last segment: the highest durable
    /// LSN claimed by a durable mark further on, if it lies beyond `bad`.
    /// Such a claim means the bad bytes had been fsynced: damage, not a
    /// torn tail. (The writer appends a mark to every batch it flushes.)
    fn durable_beyond(&mut self, bad: u64) -> Result<Option<u64>> {
        const MARK: usize = FRAME_HDR + PAYLOAD_HDR;
        const CHUNK: usize = 1 << 20;
        let Some((file, seg_end)) = &self.file else {
            return Ok(None);
        };
        let seg_start = self.segments[self.seg_idx];
        let mut buf = vec![0u8; CHUNK + MARK];
        let mut best = None;
        let mut pos = bad + 1;
        while pos + MARK as u64 <= *seg_end {
            let n = file.read_at(&mut buf, pos - seg_start)?;
            for i in 0..n.saturating_sub(MARK - 1).min(CHUNK) {
                let w = &buf[i..i + MARK];
                if u32_at(w, 0) != Some(PAYLOAD_HDR as u32)
                    || w[FRAME_HDR] != Kind::DurableMark as u8
                {
                    continue;
                }
                if let Framed::Ok(payload, _) = unframe(w) {
                    if let Ok(rec) = RecordRef::parse(payload) {
                        if rec.aux > bad {
                            best = best.max(Some(rec.aux));
                        }
                    }
                }
            }
            pos += CHUNK as u64;
        }
        Ok(best)
    }

    /// Finds the next whole, checksummed frame, moving on to the next
    /// segment at the end of one: its start LSN and payload length, the
    /// frame left in the buffer from `buf_at` on. `None` at the end of the
    /// valid log (then `end` is set).
    fn next_frame(&mut self) -> Result<Option<(u64, usize)>> {
        loop {
            if self.end.is_some() {
                return Ok(None);
            }
            let Some(seg_end) = self.file.as_ref().map(|(_, e)| *e) else {
                self.end = Some(Lsn(self.pos));
                return Ok(None);
            };
            if self.pos >= seg_end {
                if !self.next_segment()? {
                    return Ok(None);
                }
                continue;
            }
            let len = crate::codec::u32_at(self.bytes(FRAME_HDR)?, 0).unwrap_or(0) as usize;
            let want = FRAME_HDR + len.min(WAL_RECORD_MAX);
            let start = self.pos;
            // What the frame holds, as an owned outcome: the payload is
            // borrowed again by the caller, once the reader has moved past it.
            let framed = match unframe(self.bytes(want)?) {
                Framed::Ok(payload, _) => Ok(payload.len()),
                Framed::End => Err(None),
                Framed::Bad(why) => Err(Some(why)),
            };
            return match framed {
                Ok(len) => {
                    assert!(
                        self.buf_at <= start && len <= WAL_RECORD_MAX,
                        "frame at {start} outside the buffer from {} or longer than the limit",
                        self.buf_at
                    );
                    Ok(Some((start, len)))
                }
                Err(why) => self.bad_frame(start, why).map(|()| None),
            };
        }
    }

    /// At the end of a segment: opens the next one, which must start where
    /// this one ended. False after the last segment (the log's end set).
    fn next_segment(&mut self) -> Result<bool> {
        if self.is_last() {
            self.end = Some(Lsn(self.pos));
            return Ok(false);
        }
        let next = self.segments[self.seg_idx + 1];
        if next != self.pos {
            return Err(Error::corruption(
                segment::path(&self.dir, next),
                0,
                format!(
                    "segment starts at LSN {next}, previous one ends at {}",
                    self.pos
                ),
            ));
        }
        self.seg_idx += 1;
        self.open_segment()?;
        self.pos = next + SEG_HDR;
        Ok(true)
    }

    /// A frame at `start` that is bad (`why`) or zero bytes (`None`). In
    /// the last segment it ends the log (sets `end`) — a torn tail — unless
    /// a durable mark beyond says the log had been fsynced past it; in any
    /// other segment, and in that case, it is damage.
    fn bad_frame(&mut self, start: u64, why: Option<String>) -> Result<()> {
        let seg_start = self.segments[self.seg_idx];
        assert!(
            start >= seg_start + SEG_HDR,
            "frame at {start} before its segment's records"
        );
        if self.is_last() {
            if let Some(durable) = self.durable_beyond(start)? {
                return Err(Error::corruption(
                    self.seg_path(),
                    start - seg_start,
                    format!("damaged log record at LSN {start}, though the log was durable up to LSN {durable}"),
                ));
            }
            self.end = Some(Lsn(start));
            return Ok(());
        }
        let why = why.unwrap_or_else(|| "zero bytes inside a closed log segment".to_string());
        Err(Error::corruption(self.seg_path(), start - seg_start, why))
    }

    fn seg_path(&self) -> PathBuf {
        segment::path(&self.dir, self.segments[self.seg_idx])
    }

    /// The next record, or `None` at the end of the valid log.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        Ok(self.next_ref()?.map(|e| Entry {
            start: e.start,
            end: e.end,
            record: e.record.to_owned(),
        }))
    }

    /// The next record, decoded in place, or `None` at the end of the
    /// valid log.
    pub fn next_ref(&mut self) -> Result<Option<EntryRef<'_>>> {
        let Some((start, len)) = self.next_frame()? else {
            return Ok(None);
        };
        self.pos = start + (FRAME_HDR + len) as u64;
        // `bytes` left the frame in the buffer, from `buf_at` on.
        let at = (start - self.buf_at) as usize + FRAME_HDR;
        let payload = &self.buf[at..at + len];
        match RecordRef::parse(payload) {
            Ok(record) => Ok(Some(EntryRef {
                start: Lsn(start),
                end: Lsn(self.pos),
                record,
            })),
            // The path is built only for an error: building it for every
            // record was a measurable share of replay.
            Err(e) => Err(Error::corruption(
                self.seg_path(),
                start - self.segments[self.seg_idx],
                e,
            )),
        }
    }
}
