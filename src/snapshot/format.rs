//! The snapshot stream's bytes: frames, the header and trailer, and the
//! records between them (FORMAT.md §"Snapshot streams").
//!
//! ```text
//!  stream:  header frame | data frame * n | trailer frame
//!  frame:   | len u32 | crc32c u32 | payload |        (the log's frame, `wal::frame`)
//!  header:  | 1 u8 | magic "STRSNAP\0" | version u16 | flags u16 | applied index u64 |
//!           | newest ts u64 | hash lo u64 | hash hi u64 |
//!           flags: 1 = a hash range, 2 = its hi is the end of the hash space
//!  data:    | 2 u8 | seq u64 | record bytes (a record may span frames) |
//!  trailer: | 3 u8 | data frames u64 | record bytes u64 | tables u64 | rows u64 |
//!           | prepared u64 | writes u64 |
//!  records: TABLE    | 1 | len u16 | name |
//!           ROW      | 2 | len u16 | key | len u32 | value |          (of the last TABLE)
//!           PREPARED | 3 | len u16 | gid | prepare ts u64 | prepared at µs u64 | writes u32 |
//!           PUT      | 4 | len u16 | table | len u16 | key | len u32 | value |
//!           DELETE   | 5 | len u16 | table | len u16 | key |
//! ```
//!
//! Records are a byte stream cut into frames of at most `SNAPSHOT_CHUNK`
//! bytes, not one record a frame: a 64 MiB value would not fit the log's
//! frame limit, and cutting anywhere keeps the writer's memory bounded by
//! one chunk. Each data frame carries its sequence number, so a frame
//! dropped or repeated whole (each checksummed, each valid alone) is
//! caught where it happens, and the trailer's counts catch a stream cut at
//! a frame boundary. The reader trusts nothing: every length is checked
//! against its limit before anything is allocated, and every fault is
//! `Error::Corruption` naming the stream and the byte offset.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::clock::Timestamp;
use crate::codec::{u16_at, u32_at, u64_at};
use crate::error::{Error, Result};
use crate::limits::{GID_MAX, KEY_MAX, SNAPSHOT_CHUNK, TABLE_NAME_MAX, VALUE_MAX};
use crate::wal::frame::{frame, unframe, Framed, FRAME_HDR};

use super::HashRange;

/// The header's magic bytes.
pub(crate) const MAGIC: [u8; 8] = *b"STRSNAP\0";
/// The stream format's version (not the data file's `FORMAT_VERSION`).
pub(crate) const STREAM_VERSION: u16 = 1;

const HEADER: u8 = 1;
const DATA: u8 = 2;
const TRAILER: u8 = 3;

const TABLE: u8 = 1;
const ROW: u8 = 2;
const PREPARED: u8 = 3;
const PUT: u8 = 4;
const DELETE: u8 = 5;

const HAS_RANGE: u16 = 1;
const HI_IS_END: u16 = 2;

/// Bytes of the header frame's payload.
const HEADER_LEN: usize = 1 + 8 + 2 + 2 + 8 * 4;
/// Bytes of the trailer frame's payload.
const TRAILER_LEN: usize = 1 + 8 * 6;

/// What the header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub applied_index: u64,
    pub newest_ts: Timestamp,
    pub range: Option<HashRange>,
}

/// How many of each record a stream holds (the trailer's counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub frames: u64,
    pub bytes: u64,
    pub tables: u64,
    pub rows: u64,
    pub prepared: u64,
    pub writes: u64,
}

/// One record.
#[derive(Debug)]
pub(crate) enum Record {
    Table(String),
    Row(Vec<u8>, Vec<u8>),
    Prepared {
        gid: String,
        prepare_ts: Timestamp,
        prepared_at_us: u64,
        writes: u32,
    },
    /// A prepared transaction's write: table, key, value (`None`: delete).
    Write(String, Vec<u8>, Option<Vec<u8>>),
}

/// Writes a stream: the header, records cut into data frames, the trailer.
pub(crate) struct StreamWriter<'w, W: Write> {
    w: &'w mut W,
    /// Record bytes not yet framed (at most one chunk).
    pending: Vec<u8>,
    counts: Counts,
    /// Bytes written to `w`.
    written: u64,
    out: Vec<u8>,
}

fn write_err(e: std::io::Error) -> Error {
    Error::io("write snapshot stream", Path::new("stream"), e)
}

impl<'w, W: Write> StreamWriter<'w, W> {
    /// Starts a stream with its header.
    pub(crate) fn new(w: &'w mut W, h: &Header) -> Result<Self> {
        let mut s = StreamWriter {
            w,
            pending: Vec::with_capacity(SNAPSHOT_CHUNK),
            counts: Counts::default(),
            written: 0,
            out: Vec::new(),
        };
        let mut p = Vec::with_capacity(HEADER_LEN);
        p.push(HEADER);
        p.extend_from_slice(&MAGIC);
        p.extend_from_slice(&STREAM_VERSION.to_le_bytes());
        let (flags, lo, hi) = match h.range {
            None => (0, 0, 0),
            Some(r) => match r.hi {
                Some(hi) => (HAS_RANGE, r.lo, hi),
                None => (HAS_RANGE | HI_IS_END, r.lo, 0),
            },
        };
        p.extend_from_slice(&flags.to_le_bytes());
        p.extend_from_slice(&h.applied_index.to_le_bytes());
        p.extend_from_slice(&h.newest_ts.as_nanos().to_le_bytes());
        p.extend_from_slice(&lo.to_le_bytes());
        p.extend_from_slice(&hi.to_le_bytes());
        assert_eq!(p.len(), HEADER_LEN);
        s.emit(&p)?;
        Ok(s)
    }

    fn emit(&mut self, payload: &[u8]) -> Result<()> {
        self.out.clear();
        frame(payload, &mut self.out);
        self.w.write_all(&self.out).map_err(write_err)?;
        self.written += self.out.len() as u64;
        Ok(())
    }

    /// Appends record bytes, framing each full chunk.
    fn push(&mut self, mut b: &[u8]) -> Result<()> {
        self.counts.bytes += b.len() as u64;
        while !b.is_empty() {
            let room = SNAPSHOT_CHUNK - self.pending.len();
            let (now, rest) = b.split_at(room.min(b.len()));
            self.pending.extend_from_slice(now);
            b = rest;
            if self.pending.len() == SNAPSHOT_CHUNK {
                self.flush_chunk()?;
            }
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        debug_assert!(self.pending.len() <= SNAPSHOT_CHUNK);
        let mut p = Vec::with_capacity(9 + self.pending.len());
        p.push(DATA);
        p.extend_from_slice(&self.counts.frames.to_le_bytes());
        p.extend_from_slice(&self.pending);
        self.emit(&p)?;
        self.counts.frames += 1;
        self.pending.clear();
        Ok(())
    }

    fn push_short(&mut self, tag: u8, b: &[u8]) -> Result<()> {
        self.push(&[tag])?;
        self.push(&(b.len() as u16).to_le_bytes())?;
        self.push(b)
    }

    fn push_value(&mut self, v: &[u8]) -> Result<()> {
        self.push(&(v.len() as u32).to_le_bytes())?;
        self.push(v)
    }

    /// A table; the rows that follow are its.
    pub(crate) fn table(&mut self, name: &str) -> Result<()> {
        assert!(!name.is_empty() && name.len() <= TABLE_NAME_MAX);
        self.counts.tables += 1;
        self.push_short(TABLE, name.as_bytes())
    }

    /// A row of the last table.
    pub(crate) fn row(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        assert!(key.len() <= KEY_MAX && value.len() <= VALUE_MAX);
        self.counts.rows += 1;
        self.push_short(ROW, key)?;
        self.push_value(value)
    }

    /// A prepared transaction; its `writes` writes follow.
    pub(crate) fn prepared(
        &mut self,
        gid: &str,
        ts: Timestamp,
        at_us: u64,
        writes: u32,
    ) -> Result<()> {
        assert!(!gid.is_empty() && gid.len() <= GID_MAX);
        self.counts.prepared += 1;
        self.push_short(PREPARED, gid.as_bytes())?;
        self.push(&ts.as_nanos().to_le_bytes())?;
        self.push(&at_us.to_le_bytes())?;
        self.push(&writes.to_le_bytes())
    }

    /// A write of the last prepared transaction.
    pub(crate) fn write(&mut self, table: &str, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        assert!(key.len() <= KEY_MAX);
        self.counts.writes += 1;
        let tag = if value.is_some() { PUT } else { DELETE };
        self.push_short(tag, table.as_bytes())?;
        self.push(&(key.len() as u16).to_le_bytes())?;
        self.push(key)?;
        match value {
            Some(v) => self.push_value(v),
            None => Ok(()),
        }
    }

    /// Frames what is pending, writes the trailer and flushes; the counts
    /// and the bytes written.
    pub(crate) fn finish(mut self) -> Result<(Counts, u64)> {
        self.flush_chunk()?;
        let c = self.counts;
        let mut p = Vec::with_capacity(TRAILER_LEN);
        p.push(TRAILER);
        for n in [c.frames, c.bytes, c.tables, c.rows, c.prepared, c.writes] {
            p.extend_from_slice(&n.to_le_bytes());
        }
        self.emit(&p)?;
        self.w.flush().map_err(write_err)?;
        Ok((c, self.written))
    }
}

/// Where the records are: among rows, or among a prepared transaction's
/// writes (how many still to come).
enum Section {
    Rows { table: bool },
    Writes(u32),
}

/// Reads a stream, checking every frame, sequence number, length and
/// count; every fault is `Corruption` naming `name` and a byte offset.
pub(crate) struct StreamReader<'r, R: Read> {
    r: &'r mut R,
    name: PathBuf,
    /// Stream offset of the next byte `r` gives.
    off: u64,
    /// The current data frame's records, and where the reader is in them.
    data: Vec<u8>,
    pos: usize,
    /// Stream offset of `data[0]`.
    data_at: u64,
    counts: Counts,
    section: Section,
    done: bool,
    /// The header's hash range: every key must be in it.
    range: Option<HashRange>,
    /// The last table name, row key (in that table), gid, and write
    /// (table, key, in that transaction): each must rise.
    last_table: Option<String>,
    last_key: Option<Vec<u8>>,
    last_gid: Option<String>,
    last_write: Option<(String, Vec<u8>)>,
}

impl<'r, R: Read> StreamReader<'r, R> {
    /// Reads and checks the header.
    pub(crate) fn new(r: &'r mut R, name: &Path) -> Result<(Self, Header)> {
        let mut s = StreamReader {
            r,
            name: name.to_path_buf(),
            off: 0,
            data: Vec::new(),
            pos: 0,
            data_at: 0,
            counts: Counts::default(),
            section: Section::Rows { table: false },
            done: false,
            range: None,
            last_table: None,
            last_key: None,
            last_gid: None,
            last_write: None,
        };
        let (at, p) = s.frame()?;
        let h = s.header(at, &p)?;
        s.range = h.range;
        Ok((s, h))
    }

    /// The bytes read so far.
    pub(crate) fn offset(&self) -> u64 {
        self.off
    }

    fn bad(&self, offset: u64, what: impl Into<String>) -> Error {
        Error::corruption(self.name.clone(), offset, what)
    }

    /// Fills `buf` from the stream; `false` if it ended first.
    fn fill(&mut self, buf: &mut [u8]) -> Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            match self.r.read(&mut buf[got..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    got += n;
                    self.off += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read snapshot stream", &self.name, e)),
            }
        }
        Ok(true)
    }

    /// The next frame's offset and checked payload.
    fn frame(&mut self) -> Result<(u64, Vec<u8>)> {
        let at = self.off;
        let mut buf = vec![0u8; FRAME_HDR];
        if !self.fill(&mut buf)? {
            return Err(self.bad(at, "stream truncated: it ends inside a frame header"));
        }
        let len = u32_at(&buf, 0).unwrap_or(0) as usize;
        if len == 0 || len > SNAPSHOT_CHUNK + 9 {
            return Err(self.bad(at, format!("frame length {len} out of range")));
        }
        buf.resize(FRAME_HDR + len, 0);
        if !self.fill(&mut buf[FRAME_HDR..])? {
            return Err(self.bad(at, "stream truncated: it ends inside a frame"));
        }
        match unframe(&buf) {
            Framed::Ok(p, n) if n == buf.len() => Ok((at, p.to_vec())),
            Framed::Ok(..) | Framed::End => Err(self.bad(at, "malformed frame")),
            Framed::Bad(what) => Err(self.bad(at, what)),
        }
    }

    fn header(&self, at: u64, p: &[u8]) -> Result<Header> {
        if p.len() != HEADER_LEN || p[0] != HEADER || p[1..9] != MAGIC {
            return Err(self.bad(at, "not a strata snapshot stream (no header)"));
        }
        let field = |o: usize| u64_at(p, o).unwrap_or(0);
        let version = u16_at(p, 9).unwrap_or(0);
        if version != STREAM_VERSION {
            return Err(self.bad(
                at,
                format!("snapshot stream version {version}; this build reads {STREAM_VERSION}"),
            ));
        }
        let flags = u16_at(p, 11).unwrap_or(0);
        if flags & !(HAS_RANGE | HI_IS_END) != 0 || flags == HI_IS_END {
            return Err(self.bad(at, format!("unknown header flags {flags:#x}")));
        }
        let range = (flags & HAS_RANGE != 0).then(|| HashRange {
            lo: field(29),
            hi: (flags & HI_IS_END == 0).then(|| field(37)),
        });
        if range.is_some_and(|r| r.hi.is_some_and(|hi| hi < r.lo)) {
            return Err(self.bad(at, "hash range ends below its start"));
        }
        Ok(Header {
            applied_index: field(13),
            newest_ts: Timestamp::from_nanos(field(21)),
            range,
        })
    }

    /// Moves to the next data frame; `false` at the trailer (checked).
    fn next_frame(&mut self) -> Result<bool> {
        let (at, p) = self.frame()?;
        match p.first() {
            Some(&DATA) if p.len() > 9 => {
                let seq = u64_at(&p, 1).unwrap_or(u64::MAX);
                if seq != self.counts.frames {
                    return Err(self.bad(
                        at,
                        format!(
                            "data frame {seq} where frame {} belongs",
                            self.counts.frames
                        ),
                    ));
                }
                self.counts.frames += 1;
                self.counts.bytes += (p.len() - 9) as u64;
                self.data = p;
                self.pos = 9;
                self.data_at = at + FRAME_HDR as u64;
                Ok(true)
            }
            Some(&TRAILER) if p.len() == TRAILER_LEN => {
                self.trailer(at, &p)?;
                Ok(false)
            }
            _ => Err(self.bad(at, "unexpected frame")),
        }
    }

    fn trailer(&mut self, at: u64, p: &[u8]) -> Result<()> {
        let c = &self.counts;
        let want = [c.frames, c.bytes, c.tables, c.rows, c.prepared, c.writes];
        let names = [
            "data frames",
            "record bytes",
            "tables",
            "rows",
            "prepared",
            "writes",
        ];
        for (i, (&n, name)) in want.iter().zip(names).enumerate() {
            let said = u64_at(p, 1 + 8 * i).unwrap_or(u64::MAX);
            if said != n {
                return Err(self.bad(
                    at,
                    format!("trailer says {said} {name}, the stream holds {n}"),
                ));
            }
        }
        if let Section::Writes(n @ 1..) = self.section {
            return Err(self.bad(
                at,
                format!("stream ends {n} writes short of a prepared transaction"),
            ));
        }
        let mut extra = [0u8; 1];
        if self.fill(&mut extra)? {
            return Err(self.bad(self.off - 1, "bytes after the trailer"));
        }
        self.done = true;
        Ok(())
    }

    /// Offset of the next record byte.
    fn here(&self) -> u64 {
        self.data_at + self.pos as u64
    }

    /// `n` record bytes, across frames; the trailer inside a record is
    /// truncation.
    fn take(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n.min(SNAPSHOT_CHUNK));
        while out.len() < n {
            if self.pos == self.data.len() {
                let at = self.off;
                if !self.next_frame()? {
                    return Err(self.bad(at, "stream ends inside a record"));
                }
            }
            let k = (n - out.len()).min(self.data.len() - self.pos);
            out.extend_from_slice(&self.data[self.pos..self.pos + k]);
            self.pos += k;
        }
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16_at(&self.take(2)?, 0).unwrap_or(0))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32_at(&self.take(4)?, 0).unwrap_or(0))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64_at(&self.take(8)?, 0).unwrap_or(0))
    }

    /// A u16-length field of at most `max` bytes (at least one if `min1`).
    fn short(&mut self, max: usize, min1: bool, what: &str) -> Result<Vec<u8>> {
        let at = self.here();
        let n = self.u16()? as usize;
        if n > max || (min1 && n == 0) {
            return Err(self.bad(at, format!("{what} length {n} out of range")));
        }
        self.take(n)
    }

    fn name(&mut self, max: usize, what: &str) -> Result<String> {
        let at = self.here();
        let b = self.short(max, true, what)?;
        String::from_utf8(b).map_err(|_| self.bad(at, format!("{what} is not UTF-8")))
    }

    /// `key`'s hash must be in the header's range.
    fn in_range(&self, at: u64, key: &[u8]) -> Result<()> {
        if self.range.is_some_and(|r| !r.holds_key(key)) {
            return Err(self.bad(at, "key outside the stream's hash range"));
        }
        Ok(())
    }

    fn value(&mut self) -> Result<Vec<u8>> {
        let at = self.here();
        let n = self.u32()? as usize;
        if n > VALUE_MAX {
            return Err(self.bad(at, format!("value length {n} out of range")));
        }
        self.take(n)
    }

    /// The next record, or `None` once the trailer is read and checked
    /// (and nothing follows it).
    pub(crate) fn next(&mut self) -> Result<Option<Record>> {
        if self.done {
            return Ok(None);
        }
        if self.pos == self.data.len() && !self.next_frame()? {
            return Ok(None);
        }
        let at = self.here();
        let tag = self.take(1)?[0];
        let rec = match (tag, &self.section) {
            (TABLE, Section::Rows { .. }) => {
                self.counts.tables += 1;
                self.section = Section::Rows { table: true };
                let name = self.name(TABLE_NAME_MAX, "table name")?;
                if self.last_table.as_ref().is_some_and(|l| *l >= name) {
                    return Err(self.bad(
                        at,
                        format!("table {name:?} out of order (tables are in ascending name order, each once)"),
                    ));
                }
                self.last_table = Some(name.clone());
                self.last_key = None;
                Record::Table(name)
            }
            (ROW, Section::Rows { table: true }) => {
                self.counts.rows += 1;
                let key = self.short(KEY_MAX, false, "key")?;
                if self.last_key.as_ref().is_some_and(|l| *l >= key) {
                    return Err(self.bad(
                        at,
                        "row key out of order (a table's rows are in ascending key order, each once)",
                    ));
                }
                self.in_range(at, &key)?;
                self.last_key = Some(key.clone());
                Record::Row(key, self.value()?)
            }
            (PREPARED, Section::Rows { .. } | Section::Writes(0)) => {
                self.counts.prepared += 1;
                let gid = self.name(GID_MAX, "gid")?;
                if self.last_gid.as_ref().is_some_and(|l| *l >= gid) {
                    return Err(self.bad(
                        at,
                        format!("prepared transaction {gid:?} out of order (in ascending gid order, each once)"),
                    ));
                }
                self.last_gid = Some(gid.clone());
                self.last_write = None;
                let prepare_ts = Timestamp::from_nanos(self.u64()?);
                let prepared_at_us = self.u64()?;
                let writes = self.u32()?;
                self.section = Section::Writes(writes);
                Record::Prepared {
                    gid,
                    prepare_ts,
                    prepared_at_us,
                    writes,
                }
            }
            (PUT | DELETE, &Section::Writes(n)) if n > 0 => {
                self.counts.writes += 1;
                self.section = Section::Writes(n - 1);
                let table = self.name(TABLE_NAME_MAX, "table name")?;
                let key = self.short(KEY_MAX, false, "key")?;
                if self.last_write.as_ref().is_some_and(|(t, k)| {
                    (t.as_str(), k.as_slice()) >= (table.as_str(), key.as_slice())
                }) {
                    return Err(self.bad(
                        at,
                        "prepared write out of order (a transaction's writes are in ascending table and key order, each key once)",
                    ));
                }
                self.in_range(at, &key)?;
                self.last_write = Some((table.clone(), key.clone()));
                let value = match tag {
                    PUT => Some(self.value()?),
                    _ => None,
                };
                Record::Write(table, key, value)
            }
            _ => return Err(self.bad(at, format!("unexpected record tag {tag}"))),
        };
        Ok(Some(rec))
    }
}
