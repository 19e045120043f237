//! Log records: what a record means, and the page changes it carries.
//!
//! ```text
//! payload: | kind u8 | op u8 | xid u64 | aux u64 | pages u16 | page change * |
//! change:  | page u32 | form u8 | form 1 (full): bytes 12..PAGE_SIZE of the page
//!                                | form 2 (delta): n u16, (offset u16, len u16, bytes) * n
//!                                | form 3 (full image with a hole): at u16, len u16, bytes
//!                                | form 4 (shift, then delta): from u16, to u16, len u16, then as form 2
//! ```
//! Every change to pages is physical: a full image, byte ranges, or a move
//! of bytes within the page followed by byte ranges (the approach of
//! PostgreSQL's generic WAL, plus the move it lacks). Access methods therefore need no
//! redo code of their own, and a multi-page operation (a B+tree split, an
//! update touching heap and index) is one record, so replay never sees half
//! of it.

use crate::codec::{u16_at, u32_at, u64_at};
use crate::ids::{PageId, Xid};
use crate::limits::{KEY_MAX, PAGE_SIZE};
use crate::page::{PageBuf, LOGGED_FROM};

/// Bytes of a payload without key and page changes.
pub const PAYLOAD_HDR: usize = 22;

/// What a record means beyond its page changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Page changes of a mini-transaction.
    Pages = 1,
    /// Commit of `xid` (its page changes set the commit-log bits).
    Commit = 2,
    /// Abort of `xid`.
    Abort = 3,
    /// Xids below `aux` may be in use.
    XidHighWater = 4,
    /// Everything below `aux` was durable when this record was written.
    DurableMark = 5,
}

/// Why a `Pages` record was written, for log dumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Not specified.
    Other = 0,
    /// Database creation.
    Init = 1,
    /// Table creation.
    CreateTable = 2,
    /// Insert or update of a key.
    Put = 3,
    /// Delete of a key.
    Delete = 4,
    /// Pages of a large value.
    Overflow = 5,
    /// Vacuum.
    Vacuum = 6,
    /// Commit-log change.
    Clog = 7,
    /// Change to the registry of prepared transactions.
    Prepared = 8,
    /// Table drop (a catalog row's `xmax` stamped).
    DropTable = 9,
    /// Table rename (a catalog row stamped, one inserted under the new name).
    RenameTable = 10,
    /// A timestamp mark in the meta page: the commit-timestamp high-water
    /// mark raised by a read as of a timestamp, or the history horizon
    /// raised by vacuum.
    Timestamp = 11,
    /// A caller's applied log index recorded alone
    /// (`Db::set_applied_index`).
    Applied = 12,
}

impl Op {
    /// Decodes an op byte (`None` for one this version does not know).
    pub fn from_u8(b: u8) -> Option<Op> {
        Some(match b {
            0 => Op::Other,
            1 => Op::Init,
            2 => Op::CreateTable,
            3 => Op::Put,
            4 => Op::Delete,
            5 => Op::Overflow,
            6 => Op::Vacuum,
            7 => Op::Clog,
            8 => Op::Prepared,
            9 => Op::DropTable,
            10 => Op::RenameTable,
            11 => Op::Timestamp,
            12 => Op::Applied,
            _ => return None,
        })
    }
}

/// Zero runs shorter than this are logged as they are.
const HOLE_MIN: usize = 16;

/// The longest run of zero bytes in `b`, as (start, length), the first if
/// several tie — exact for runs of `HOLE_MIN` bytes or more. (Shorter ones
/// are no hole. Every full page image is scanned, and one after each
/// checkpoint is a delete's usual first change to a page: byte by byte the
/// scan was a twentieth of a bulk load's time, a word at a time a sixth of
/// a bulk delete's instructions.)
fn hole(b: &[u8]) -> (usize, usize) {
    let mut runs = ZeroRuns::default();
    // Four words at a time. A run of `HOLE_MIN` bytes holds a whole zero
    // word, so in four words without one, only the run coming in (ending
    // in the first word) and the run going out (starting in the last)
    // can matter; most of a full page is such blocks.
    let blocks = b.chunks_exact(32);
    let rest = blocks.remainder();
    for (k, blk) in blocks.enumerate() {
        runs.block(blk, 32 * k);
    }
    let base = b.len() - rest.len();
    let words = rest.chunks_exact(8);
    let tail = words.remainder();
    for (j, w) in words.enumerate() {
        runs.word(le_word(w), base + 8 * j);
    }
    let base = b.len() - tail.len();
    for (j, &x) in tail.iter().enumerate() {
        runs.byte(x, base + j);
    }
    runs.end_run(runs.at, runs.run);
    let (at, len) = runs.best;
    assert!(
        at + len <= b.len(),
        "hole {at}+{len} past {} bytes",
        b.len()
    );
    runs.best
}

/// The 8 bytes of `w` (exactly 8) as a little-endian word.
#[inline]
fn le_word(w: &[u8]) -> u64 {
    u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])
}

/// `hole`'s scan state: the longest run so far and the one under way.
#[derive(Default)]
struct ZeroRuns {
    /// The longest run ended so far, (start, length).
    best: (usize, usize),
    /// Where the run under way starts.
    at: usize,
    /// The run under way's length so far.
    run: usize,
}

impl ZeroRuns {
    /// A run of `run` bytes from `at` ends.
    #[inline]
    fn end_run(&mut self, at: usize, run: usize) {
        if run > self.best.1 {
            self.best = (at, run);
        }
    }

    /// The run so far meets word `v` at byte `i`.
    #[inline]
    fn word(&mut self, v: u64, i: usize) {
        if v == 0 {
            if self.run == 0 {
                self.at = i;
            }
            self.run += 8;
            return;
        }
        // Little-endian: the word's first bytes are its low ones.
        let lead = (v.trailing_zeros() / 8) as usize;
        if self.run == 0 {
            self.at = i;
        }
        self.end_run(self.at, self.run + lead);
        self.run = (v.leading_zeros() / 8) as usize;
        self.at = i + 8 - self.run;
    }

    /// The 32 bytes `blk` at byte `i`: with no zero word among them, only
    /// the runs ending in the first word and starting in the last count.
    #[inline]
    fn block(&mut self, blk: &[u8], i: usize) {
        let w = [
            le_word(&blk[..8]),
            le_word(&blk[8..16]),
            le_word(&blk[16..24]),
            le_word(&blk[24..]),
        ];
        if w.iter().all(|&v| v != 0) {
            self.word(w[0], i);
            self.run = (w[3].leading_zeros() / 8) as usize;
            self.at = i + 32 - self.run;
            return;
        }
        for (j, &v) in w.iter().enumerate() {
            self.word(v, i + 8 * j);
        }
    }

    /// The run so far meets byte `x` at `i` (the tail shorter than a word).
    #[inline]
    fn byte(&mut self, x: u8, i: usize) {
        if x == 0 {
            if self.run == 0 {
                self.at = i;
            }
            self.run += 1;
        } else {
            self.end_run(self.at, self.run);
            self.run = 0;
        }
    }
}

/// One page's change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The page's bytes from `LOGGED_FROM` on.
    Full(Box<[u8]>),
    /// Byte ranges: (offset, new bytes).
    Delta(Vec<(u16, Vec<u8>)>),
    /// Bytes moved within the page, then byte ranges written.
    Shifted(Shift, Vec<(u16, Vec<u8>)>),
}

/// `len` bytes of a page moved from `from` to `to` (as by `copy_within`):
/// a slotted page's slots moving over to make or close a gap. Logged as a
/// move, not as the moved bytes: a B+tree insert or removal shifts half a
/// node's slot array (about 600 bytes in a full leaf of short keys) to
/// change one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shift {
    /// Where the bytes were.
    pub from: usize,
    /// Where they go.
    pub to: usize,
    /// How many.
    pub len: usize,
}

impl Shift {
    /// Whether it lies within the logged part of a page.
    pub fn in_page(&self) -> bool {
        self.from.min(self.to) >= LOGGED_FROM && self.from.max(self.to) + self.len <= PAGE_SIZE
    }

    /// Moves the bytes.
    pub fn apply(&self, page: &mut PageBuf) {
        page.copy_within(self.from..self.from + self.len, self.to);
    }
}

/// A record's fields before its page changes, borrowed.
pub struct Head<'a> {
    /// Meaning.
    pub kind: Kind,
    /// Purpose, for `Pages` records.
    pub op: u8,
    /// Transaction (0 for none).
    pub xid: Xid,
    /// Kind-specific number.
    pub aux: u64,
    /// The key written, or empty.
    pub key: &'a [u8],
}

/// One page's change as the encoder reads it: borrowed, so a
/// mini-transaction logs straight from its pages, with no copy of the
/// changed bytes in between.
#[derive(Clone, Copy)]
pub enum ChangeRef<'a> {
    /// The page's bytes from `LOGGED_FROM` on.
    Full(&'a [u8]),
    /// The bytes of `page` in each range (sorted, disjoint `start..end`),
    /// after a shift if there is one.
    Ranges(&'a PageBuf, &'a [(usize, usize)], Option<Shift>),
    /// Byte runs already cut out: (offset, bytes), after a shift if there
    /// is one.
    Runs(&'a [(u16, Vec<u8>)], Option<Shift>),
}

impl ChangeRef<'_> {
    /// The delta's shift, if any.
    fn shift(&self) -> Option<Shift> {
        match *self {
            ChangeRef::Ranges(_, _, sh) | ChangeRef::Runs(_, sh) => sh,
            ChangeRef::Full(_) => None,
        }
    }

    /// The delta's runs: (offset, bytes).
    fn runs(&self) -> impl Iterator<Item = (u16, &[u8])> {
        let in_page = match *self {
            ChangeRef::Ranges(page, ranges, _) => Some((page, ranges)),
            _ => None,
        };
        let owned: &[(u16, Vec<u8>)] = match *self {
            ChangeRef::Runs(runs, _) => runs,
            _ => &[],
        };
        // A range is the page's own (clipped to it where declared or found
        // by `diff`): indexing cannot fail, and a range skipped instead would
        // be a change missing from the log.
        in_page
            .into_iter()
            .flat_map(|(page, ranges)| ranges.iter().map(move |&(s, e)| (s as u16, &page[s..e])))
            .chain(owned.iter().map(|(off, b)| (*off, b.as_slice())))
    }
}

/// Appends the payload (without frame) of a record to `out`. A full image
/// leaves out its longest run of zero bytes (form 3), as PostgreSQL leaves
/// out a page's hole: a fresh page, a freed one, and the gap between a
/// slotted page's slots and its cells cost the log nothing.
///
/// `pages` is walked more than once (hence `Clone`): a mini-transaction
/// passes its pages as an iterator rather than collecting them, so that a
/// small write allocates nothing.
pub fn encode_into<'p>(
    head: &Head<'_>,
    pages: impl Iterator<Item = (PageId, ChangeRef<'p>)> + Clone,
    out: &mut Vec<u8>,
) {
    let holes = full_image_holes(pages.clone());
    // Sized exactly up front: records are encoded for every change.
    let size = PAYLOAD_HDR
        + head.key.len()
        + pages
            .clone()
            .enumerate()
            .map(|(i, (_, ch))| change_len(&ch, hole_at(&holes, i)))
            .sum::<usize>();
    let start = out.len();
    out.reserve(size);
    encode_head(head, pages.clone().count(), out);
    for (i, (pid, ch)) in pages.enumerate() {
        out.extend_from_slice(&pid.0.to_le_bytes());
        match ch {
            ChangeRef::Full(bytes) => encode_full(bytes, hole_at(&holes, i), out),
            delta => encode_delta(&delta, out),
        }
    }
    debug_assert_eq!(out.len() - start, size);
}

/// Each full image's hole (`None` where it has none worth leaving out),
/// found once — and no list at all for a record of deltas only, the usual
/// one.
fn full_image_holes<'p>(
    pages: impl Iterator<Item = (PageId, ChangeRef<'p>)> + Clone,
) -> Vec<Option<(usize, usize)>> {
    if !pages
        .clone()
        .any(|(_, ch)| matches!(ch, ChangeRef::Full(_)))
    {
        return Vec::new();
    }
    pages
        .map(|(_, ch)| match ch {
            ChangeRef::Full(bytes) => Some(hole(bytes)).filter(|&(_, len)| len >= HOLE_MIN),
            _ => None,
        })
        .collect()
}

/// The hole of the `i`th change, from `full_image_holes`.
#[inline]
fn hole_at(holes: &[Option<(usize, usize)>], i: usize) -> Option<(usize, usize)> {
    holes.get(i).copied().flatten()
}

/// The encoded size of one page change, its page number and form included.
#[inline]
fn change_len(ch: &ChangeRef<'_>, hole: Option<(usize, usize)>) -> usize {
    5 + match (ch, hole) {
        (ChangeRef::Full(bytes), Some((_, len))) => 4 + bytes.len() - len,
        (ChangeRef::Full(bytes), None) => bytes.len(),
        (delta, _) => {
            let shift = if delta.shift().is_some() { 6 } else { 0 };
            shift + 2 + delta.runs().map(|(_, b)| 4 + b.len()).sum::<usize>()
        }
    }
}

/// The record's fields before its page changes: kind, op, xid, aux, the
/// number of page changes, and the key.
#[inline]
fn encode_head(head: &Head<'_>, pages: usize, out: &mut Vec<u8>) {
    // A count cut to 16 bits would log a record that decodes as another.
    assert!(pages <= usize::from(u16::MAX));
    out.push(head.kind as u8);
    out.push(head.op);
    out.extend_from_slice(&head.xid.0.to_le_bytes());
    out.extend_from_slice(&head.aux.to_le_bytes());
    out.extend_from_slice(&(pages as u16).to_le_bytes());
    debug_assert!(head.key.len() <= KEY_MAX);
    out.extend_from_slice(&(head.key.len() as u16).to_le_bytes());
    out.extend_from_slice(head.key);
}

/// A full page image: form 3 without its hole, or form 1 whole.
#[inline]
fn encode_full(bytes: &[u8], hole: Option<(usize, usize)>, out: &mut Vec<u8>) {
    debug_assert_eq!(bytes.len(), PAGE_SIZE - LOGGED_FROM);
    if let Some((at, len)) = hole {
        out.push(3);
        out.extend_from_slice(&(at as u16).to_le_bytes());
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.extend_from_slice(&bytes[..at]);
        out.extend_from_slice(&bytes[at + len..]);
    } else {
        out.push(1);
        out.extend_from_slice(bytes);
    }
}

/// A delta: form 4 with its shift first, or form 2, then its runs.
#[inline]
fn encode_delta(delta: &ChangeRef<'_>, out: &mut Vec<u8>) {
    match delta.shift() {
        Some(sh) => {
            debug_assert!(sh.in_page());
            out.push(4);
            for f in [sh.from, sh.to, sh.len] {
                out.extend_from_slice(&(f as u16).to_le_bytes());
            }
        }
        None => out.push(2),
    }
    out.extend_from_slice(&(delta.runs().count() as u16).to_le_bytes());
    for (off, bytes) in delta.runs() {
        out.extend_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(bytes);
    }
}

/// A decoded log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Meaning.
    pub kind: Kind,
    /// Purpose, for `Pages` records.
    pub op: u8,
    /// Transaction the record belongs to (0 for none).
    pub xid: Xid,
    /// Kind-specific number (the high-water xid for `XidHighWater`; the
    /// table's root page for `Pages` records of op `Put` and `Delete`).
    pub aux: u64,
    /// The key written, for `Pages` records of op `Put` and `Delete`
    /// (empty otherwise): for log dumps and, later, logical decoding;
    /// recovery does not read it.
    pub key: Vec<u8>,
    /// Page changes, applied in order.
    pub pages: Vec<(PageId, Change)>,
}

impl Record {
    /// A record without page changes.
    pub fn bare(kind: Kind, xid: Xid, aux: u64) -> Record {
        Record {
            kind,
            op: 0,
            xid,
            aux,
            key: Vec::new(),
            pages: Vec::new(),
        }
    }

    /// Encodes the payload (without frame); see [`encode_into`].
    pub fn encode(&self) -> Vec<u8> {
        let pages: Vec<(PageId, ChangeRef<'_>)> = self
            .pages
            .iter()
            .map(|(pid, ch)| {
                let ch = match ch {
                    Change::Full(bytes) => ChangeRef::Full(bytes),
                    Change::Delta(runs) => ChangeRef::Runs(runs, None),
                    Change::Shifted(sh, runs) => ChangeRef::Runs(runs, Some(*sh)),
                };
                (*pid, ch)
            })
            .collect();
        let mut out = Vec::new();
        encode_into(&self.head(), pages.into_iter(), &mut out);
        out
    }

    /// The fields before the page changes.
    pub fn head(&self) -> Head<'_> {
        Head {
            kind: self.kind,
            op: self.op,
            xid: self.xid,
            aux: self.aux,
            key: &self.key,
        }
    }

    /// Decodes and validates a payload; the error says what is malformed.
    pub fn decode(b: &[u8]) -> Result<Record, String> {
        RecordRef::parse(b).map(|r| r.to_owned())
    }
}

/// A record decoded in place: its key and page changes stay in the
/// payload and are read from there as they are applied. Replay reads
/// every record this way, and allocates nothing per record; decoding into
/// a [`Record`] (a vector per record and per byte run) was a quarter of
/// the time it took to open a database after a crash.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    /// Meaning.
    pub kind: Kind,
    /// Purpose, for `Pages` records.
    pub op: u8,
    /// Transaction (0 for none).
    pub xid: Xid,
    /// Kind-specific number (see [`Record::aux`]).
    pub aux: u64,
    /// The key written, or empty.
    pub key: &'a [u8],
    /// The page changes, as logged; validated by `parse`.
    changes: &'a [u8],
    /// How many there are.
    count: usize,
}

/// One page's change, borrowed from a record's payload.
#[derive(Clone, Copy, Debug)]
pub enum ChangeView<'a> {
    /// The page's bytes from `LOGGED_FROM` on: `head`, then `hole` zero
    /// bytes, then `tail` (a form 1 image has no hole and no tail).
    Full {
        /// Bytes before the hole.
        head: &'a [u8],
        /// Zero bytes left out.
        hole: usize,
        /// Bytes after the hole.
        tail: &'a [u8],
    },
    /// Byte runs as logged (`| offset u16 | len u16 | bytes |` each),
    /// written after a shift if there is one.
    Runs {
        /// Bytes moved first, if any.
        shift: Option<Shift>,
        /// How many runs.
        count: usize,
        /// The runs.
        bytes: &'a [u8],
    },
}

impl<'a> RecordRef<'a> {
    /// Decodes and validates a payload, every page change included; the
    /// error says what is malformed.
    pub fn parse(b: &'a [u8]) -> Result<RecordRef<'a>, String> {
        let short = || "record shorter than its fields".to_string();
        let kind = match b.first().copied() {
            Some(1) => Kind::Pages,
            Some(2) => Kind::Commit,
            Some(3) => Kind::Abort,
            Some(4) => Kind::XidHighWater,
            Some(5) => Kind::DurableMark,
            other => return Err(format!("unknown record kind {other:?}")),
        };
        let op = *b.get(1).ok_or_else(short)?;
        let xid = Xid(u64_at(b, 2).ok_or_else(short)?);
        let aux = u64_at(b, 10).ok_or_else(short)?;
        let count = u16_at(b, 18).ok_or_else(short)? as usize;
        let klen = u16_at(b, 20).ok_or_else(short)? as usize;
        if klen > KEY_MAX {
            return Err(format!("key of {klen} bytes, beyond the limit"));
        }
        let key = b.get(PAYLOAD_HDR..PAYLOAD_HDR + klen).ok_or_else(short)?;
        let changes = &b[PAYLOAD_HDR + klen..];
        let mut pos = 0;
        for _ in 0..count {
            change_at(changes, &mut pos)?;
        }
        if pos != changes.len() {
            return Err(format!(
                "{} trailing bytes after the last page change",
                changes.len() - pos
            ));
        }
        Ok(RecordRef {
            kind,
            op,
            xid,
            aux,
            key,
            changes,
            count,
        })
    }

    /// The page changes, in the order they are applied.
    pub fn changes(&self) -> impl Iterator<Item = (PageId, ChangeView<'a>)> + 'a {
        let (changes, mut pos) = (self.changes, 0);
        // `parse` checked every change: none fails here.
        (0..self.count).map_while(move |_| change_at(changes, &mut pos).ok())
    }

    /// How many page changes the record carries.
    pub fn change_count(&self) -> usize {
        self.count
    }

    /// An owned copy.
    pub fn to_owned(&self) -> Record {
        Record {
            kind: self.kind,
            op: self.op,
            xid: self.xid,
            aux: self.aux,
            key: self.key.to_vec(),
            pages: self.changes().map(|(pid, c)| (pid, c.to_owned())).collect(),
        }
    }
}

impl<'a> ChangeView<'a> {
    /// The runs of a delta, (offset, bytes); none for a full image.
    pub fn runs(&self) -> impl Iterator<Item = (usize, &'a [u8])> + 'a {
        let (count, mut b) = match *self {
            ChangeView::Runs { count, bytes, .. } => (count, bytes),
            ChangeView::Full { .. } => (0, &[][..]),
        };
        // `parse` checked every run: none is cut short here.
        (0..count).map_while(move |_| {
            let off = u16_at(b, 0)? as usize;
            let len = u16_at(b, 2)? as usize;
            let bytes = b.get(4..4 + len)?;
            b = &b[4 + len..];
            Some((off, bytes))
        })
    }

    /// An owned copy.
    pub fn to_owned(&self) -> Change {
        match *self {
            ChangeView::Full { head, hole, tail } => {
                let mut page = Vec::with_capacity(PAGE_SIZE - LOGGED_FROM);
                page.extend_from_slice(head);
                page.resize(head.len() + hole, 0);
                page.extend_from_slice(tail);
                Change::Full(page.into())
            }
            ChangeView::Runs { shift, .. } => {
                let runs = self
                    .runs()
                    .map(|(off, b)| (off as u16, b.to_vec()))
                    .collect();
                match shift {
                    Some(sh) => Change::Shifted(sh, runs),
                    None => Change::Delta(runs),
                }
            }
        }
    }
}

/// The page change at `*pos` of a record's changes, validated; `*pos`
/// moves past it.
fn change_at<'a>(b: &'a [u8], pos: &mut usize) -> Result<(PageId, ChangeView<'a>), String> {
    let pid = PageId(u32_at(b, *pos).ok_or_else(short)?);
    let form = *b.get(*pos + 4).ok_or_else(short)?;
    *pos += 5;
    let change = match form {
        1 => whole_image_at(b, pos)?,
        3 => holed_image_at(b, pos)?,
        2 => runs_at(b, pos, None)?,
        4 => {
            let shift = shift_at(b, pos)?;
            runs_at(b, pos, Some(shift))?
        }
        f => return Err(format!("unknown page change form {f}")),
    };
    Ok((pid, change))
}

/// The error for a record that ends inside a field.
fn short() -> String {
    "record shorter than its fields".to_string()
}

/// The bytes a full image covers: the page from `LOGGED_FROM` on.
const IMAGE_BODY: usize = PAGE_SIZE - LOGGED_FROM;

/// Form 1 at `*pos`: a full image with no hole left out.
#[inline]
fn whole_image_at<'a>(b: &'a [u8], pos: &mut usize) -> Result<ChangeView<'a>, String> {
    let head = b.get(*pos..*pos + IMAGE_BODY).ok_or_else(short)?;
    *pos += IMAGE_BODY;
    Ok(ChangeView::Full {
        head,
        hole: 0,
        tail: &[],
    })
}

/// Form 3 at `*pos`: a full image without its hole, the hole checked to lie
/// within the page body.
#[inline]
fn holed_image_at<'a>(b: &'a [u8], pos: &mut usize) -> Result<ChangeView<'a>, String> {
    let at = u16_at(b, *pos).ok_or_else(short)? as usize;
    let len = u16_at(b, *pos + 2).ok_or_else(short)? as usize;
    *pos += 4;
    if at + len > IMAGE_BODY {
        return Err(format!("hole {at}+{len} outside the page body"));
    }
    let bytes = b.get(*pos..*pos + IMAGE_BODY - len).ok_or_else(short)?;
    *pos += IMAGE_BODY - len;
    let (head, tail) = bytes.split_at(at);
    Ok(ChangeView::Full {
        head,
        hole: len,
        tail,
    })
}

/// Form 4's shift at `*pos`, checked to lie within the page body.
#[inline]
fn shift_at(b: &[u8], pos: &mut usize) -> Result<Shift, String> {
    let field = |i: usize| u16_at(b, *pos + 2 * i).map(usize::from);
    let sh = Shift {
        from: field(0).ok_or_else(short)?,
        to: field(1).ok_or_else(short)?,
        len: field(2).ok_or_else(short)?,
    };
    if !sh.in_page() {
        return Err(format!(
            "shift of {} bytes from {} to {} outside the page body",
            sh.len, sh.from, sh.to
        ));
    }
    *pos += 6;
    Ok(sh)
}

/// A delta's runs at `*pos` (forms 2 and 4, after the shift), each checked
/// to lie within the page body and the record.
#[inline]
fn runs_at<'a>(
    b: &'a [u8],
    pos: &mut usize,
    shift: Option<Shift>,
) -> Result<ChangeView<'a>, String> {
    let count = u16_at(b, *pos).ok_or_else(short)? as usize;
    *pos += 2;
    let start = *pos;
    for _ in 0..count {
        let off = u16_at(b, *pos).ok_or_else(short)? as usize;
        let len = u16_at(b, *pos + 2).ok_or_else(short)? as usize;
        if off < LOGGED_FROM || off + len > PAGE_SIZE {
            return Err(format!("delta range {off}+{len} outside the page body"));
        }
        b.get(*pos + 4..*pos + 4 + len).ok_or_else(short)?;
        *pos += 4 + len;
    }
    Ok(ChangeView::Runs {
        shift,
        count,
        bytes: &b[start..*pos],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redo::diff::{apply, diff};
    use proptest::prelude::*;

    fn sample() -> Record {
        let mut full = vec![0u8; PAGE_SIZE - LOGGED_FROM];
        full[5] = 9;
        Record {
            kind: Kind::Commit,
            op: Op::Clog as u8,
            xid: Xid(77),
            aux: 5,
            key: b"the key".to_vec(),
            pages: vec![
                (PageId(3), Change::Full(full.into())),
                (
                    PageId(4),
                    Change::Delta(vec![(12, vec![1, 2, 3]), (8000, vec![4])]),
                ),
                (
                    PageId(5),
                    Change::Shifted(
                        Shift {
                            from: 40,
                            to: 46,
                            len: 600,
                        },
                        vec![(40, vec![5; 6])],
                    ),
                ),
            ],
        }
    }

    fn full(at: usize, bytes: &[u8]) -> Change {
        let mut page = vec![0u8; PAGE_SIZE - LOGGED_FROM];
        page[at..at + bytes.len()].copy_from_slice(bytes);
        Change::Full(page.into())
    }

    /// `hole`, byte by byte: the reference the word-wise scan must match.
    fn hole_bytewise(b: &[u8]) -> (usize, usize) {
        let (mut best, mut at, mut run) = ((0, 0), 0, 0);
        for (i, &x) in b.iter().enumerate() {
            if x == 0 {
                if run == 0 {
                    at = i;
                }
                run += 1;
                if run > best.1 {
                    best = (at, run);
                }
            } else {
                run = 0;
            }
        }
        best
    }

    proptest::proptest! {
        #[test]
        fn hole_finds_the_first_longest_zero_run(
            runs in proptest::collection::vec((0usize..40, 1u8..=255, 0usize..40), 0..60),
            len in 0usize..8180,
        ) {
            // Zero runs of many lengths between non-zero stretches, some long
            // enough to fill four words without a zero one; cut anywhere.
            let mut b = Vec::new();
            for (zeros, x, more) in runs {
                b.extend(std::iter::repeat_n(0u8, zeros));
                b.extend(std::iter::repeat_n(x, more + 1));
            }
            b.resize(b.len().max(len), 0);
            let want = hole_bytewise(&b);
            let got = hole(&b);
            if want.1 >= HOLE_MIN {
                proptest::prop_assert_eq!(got, want);
            } else {
                proptest::prop_assert!(got.1 < HOLE_MIN);
            }
        }
    }

    #[test]
    fn full_images_leave_out_their_longest_zero_run() {
        let zero = full(0, &[]);
        let ends = full(0, &[1; 40]);
        let mut both = vec![7u8; PAGE_SIZE - LOGGED_FROM];
        both[100..4000].fill(0);
        both[5000..5010].fill(0);
        let dense = Change::Full(vec![3u8; PAGE_SIZE - LOGGED_FROM].into());
        let cases = [
            (zero, 0),
            (ends, 40),
            (Change::Full(both.into()), 8180 - 3900),
            (dense, 8180),
        ];
        for (change, body) in cases {
            let rec = Record {
                pages: vec![(PageId(9), change)],
                ..sample()
            };
            let bytes = rec.encode();
            let fixed = PAYLOAD_HDR + rec.key.len() + 5;
            let hole_header = if body < 8180 { 4 } else { 0 };
            assert_eq!(bytes.len(), fixed + hole_header + body);
            assert_eq!(Record::decode(&bytes), Ok(rec));
        }
    }

    #[test]
    fn a_hole_outside_the_page_is_refused() {
        let rec = Record {
            pages: vec![(PageId(9), full(10, &[1; 20]))],
            ..sample()
        };
        let mut bytes = rec.encode();
        let at = PAYLOAD_HDR + rec.key.len() + 5;
        assert_eq!(bytes[at - 1], 3, "form 3");
        bytes[at + 2..at + 4].copy_from_slice(&8000u16.to_le_bytes());
        assert!(Record::decode(&bytes).is_err());
    }

    #[test]
    fn delta_outside_page_is_rejected() {
        let mut rec = sample();
        rec.pages = vec![(PageId(1), Change::Delta(vec![(8190, vec![1, 2, 3])]))];
        assert!(Record::decode(&rec.encode()).is_err());
        rec.pages = vec![(PageId(1), Change::Delta(vec![(4, vec![1])]))];
        assert!(
            Record::decode(&rec.encode()).is_err(),
            "delta over the lsn field accepted"
        );
        // Shift fields written over a valid record's (the encoder asserts
        // its shifts are in the page).
        let sh = Shift {
            from: 40,
            to: 46,
            len: 8,
        };
        rec.pages = vec![(PageId(1), Change::Shifted(sh, Vec::new()))];
        let good = rec.encode();
        assert_eq!(Record::decode(&good).map(|r| r.pages), Ok(rec.pages));
        let at = PAYLOAD_HDR + rec.key.len() + 5;
        for (from, to, len) in [
            (8000u16, 8100u16, 100u16),
            (4, 40, 8),
            (40, 4, 8),
            (100, 8190, 3),
        ] {
            let mut bad = good.clone();
            for (i, f) in [from, to, len].into_iter().enumerate() {
                bad[at + 2 * i..at + 2 * i + 2].copy_from_slice(&f.to_le_bytes());
            }
            assert!(
                Record::decode(&bad).is_err(),
                "shift {len}@{from}->{to} accepted"
            );
        }
    }

    proptest! {
        #[test]
        fn shift_diff_then_apply_reproduces_the_page(
            shift in proptest::option::of((LOGGED_FROM..PAGE_SIZE, LOGGED_FROM..PAGE_SIZE, 0usize..3000)),
            edits in proptest::collection::vec((LOGGED_FROM..PAGE_SIZE, any::<u8>()), 0..200),
        ) {
            let mut before = [0u8; PAGE_SIZE];
            for (i, b) in before.iter_mut().enumerate() { *b = (i % 251) as u8; }
            let shift = shift.map(|(from, to, len)| Shift { from, to, len: len.min(PAGE_SIZE - from.max(to)) });
            let mut after = before;
            if let Some(sh) = shift { sh.apply(&mut after); }
            let shifted = after;
            for (i, v) in edits { after[i] = v; }
            let mut replayed = before;
            // Through the encoder, as a mini-transaction logs it: the
            // shift, then the bytes changed after it.
            let mut ranges = Vec::new();
            let change = match diff(&shifted, &after, &mut ranges) {
                true => ChangeRef::Ranges(&after, &ranges, shift),
                false => ChangeRef::Full(&after[LOGGED_FROM..]),
            };
            let head = Record::bare(Kind::Pages, Xid(1), 0);
            let mut payload = Vec::new();
            encode_into(&head.head(), [(PageId(3), change)].into_iter(), &mut payload);
            let rec = RecordRef::parse(&payload).expect("decodes");
            for (_, ch) in rec.changes() {
                apply(&mut replayed, &ch);
            }
            prop_assert_eq!(&replayed[..], &after[..]);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Record::decode(&bytes);
            // Whatever is accepted applies within a page.
            if let Ok(rec) = RecordRef::parse(&bytes) {
                let mut page = [0u8; PAGE_SIZE];
                for (_, ch) in rec.changes() {
                    apply(&mut page, &ch);
                }
            }
        }
    }
}
