//! Version chains: from a key's newest version along `prev` links to the
//! one a reader sees.

use super::snapshot::{visible, Seen, Snapshot, Status, StatusOf};
use crate::buffer::mtr::PageAccess;
use crate::error::{Error, Result};
use crate::heap::{self, overflow, tuple::Tuple};
use crate::ids::{PageId, Tid, Xid};
use crate::limits::PAGE_SIZE;

/// Longest chain walked before the links are declared cyclic.
pub const CHAIN_MAX: usize = 1 << 24;

/// The header of one version, as read.
#[derive(Clone, Copy, Debug)]
pub struct Version {
    /// Where it lives.
    pub tid: Tid,
    /// Creator.
    pub xmin: Xid,
    /// Deleter or superseder (0: none).
    pub xmax: Xid,
    /// Next older version.
    pub prev: Tid,
    /// First overflow page and the bytes the chain holds (the value's
    /// length less the tail kept in the tuple), for out-of-line values.
    pub overflow: Option<(PageId, u32)>,
}

/// Walks a chain from newest to oldest. Bounded: damaged links that form a
/// cycle give `Corruption`, not an endless loop.
pub struct Cursor {
    at: Tid,
    steps: usize,
}

impl Cursor {
    /// A cursor at `head`.
    pub fn new(head: Tid) -> Cursor {
        Cursor { at: head, steps: 0 }
    }

    /// Where the cursor stands (the version the next step reads).
    pub fn at(&self) -> Tid {
        self.at
    }

    /// The next older version (its header, read in place); `None` past the
    /// oldest.
    pub fn next(&mut self, acc: &mut impl PageAccess) -> Result<Option<Version>> {
        let tid = self.at;
        if tid.is_null() {
            return Ok(None);
        }
        self.steps += 1;
        if self.steps > CHAIN_MAX {
            return Err(Error::corruption(
                acc.file(),
                tid.page.0 as u64 * PAGE_SIZE as u64,
                "version chain does not end",
            ));
        }
        let v = heap::with_tuple(acc, tid, |t| Version {
            tid,
            xmin: t.xmin,
            xmax: t.xmax,
            prev: t.prev,
            overflow: t.overflow(),
        })?;
        self.at = v.prev;
        Ok(Some(v))
    }

    /// `next`, with a copy of the version's tuple bytes.
    pub fn step(&mut self, acc: &mut impl PageAccess) -> Result<Option<(Version, Vec<u8>)>> {
        let tid = self.at;
        let Some(v) = self.next(acc)? else {
            return Ok(None);
        };
        Ok(Some((v, heap::read(acc, tid)?)))
    }
}

/// Decodes an index entry: the tid of a key's newest version.
pub fn head(acc: &impl PageAccess, entry: &[u8]) -> Result<Tid> {
    valid(acc, tid_of(entry))
}

/// The tuple id an index entry holds, if it is well formed.
pub fn tid_of(entry: &[u8]) -> Option<Tid> {
    Tid::decode(entry).filter(|t| entry.len() == Tid::LEN && !t.is_null())
}

/// `tid`, or the corruption of an index entry that held none.
pub fn valid(acc: &impl PageAccess, tid: Option<Tid>) -> Result<Tid> {
    tid.ok_or_else(|| Error::corruption(acc.file(), 0, "index entry holds a malformed tuple id"))
}

/// The value a reader sees for the key whose index entry is `entry`.
///
/// `unseen` collects the writers whose change of this key the reader does
/// not see — the creator of every newer version it skips, and the deleter
/// of the version it sees — rolled-back ones excepted: the rw-antidependencies
/// serializable snapshot isolation needs.
///
/// Each version is judged where it lies in its page, and only the value
/// seen is copied out: a lookup copies one value, not every tuple it
/// passes.
pub fn read_visible(
    acc: &mut impl PageAccess,
    head: Tid,
    snap: &Snapshot,
    me: Xid,
    clog: &impl StatusOf,
    unseen: &mut Vec<Xid>,
) -> Result<Option<Vec<u8>>> {
    walk(acc, head, snap, me, clog, unseen, true)
}

/// Whether a reader sees a version of the key whose newest version is at
/// `head`, collecting `unseen` as `read_visible` does — without copying
/// the value or reading its overflow pages: what a count needs.
pub fn sees_row(
    acc: &mut impl PageAccess,
    head: Tid,
    snap: &Snapshot,
    me: Xid,
    clog: &impl StatusOf,
    unseen: &mut Vec<Xid>,
) -> Result<bool> {
    Ok(walk(acc, head, snap, me, clog, unseen, false)?.is_some())
}

/// `read_visible`; with `copy` false the value seen is `Some(empty)`.
fn walk(
    acc: &mut impl PageAccess,
    head: Tid,
    snap: &Snapshot,
    me: Xid,
    clog: &impl StatusOf,
    unseen: &mut Vec<Xid>,
    copy: bool,
) -> Result<Option<Vec<u8>>> {
    enum Step {
        Inline(Vec<u8>),
        Overflow(PageId, u32, Vec<u8>),
        Gone,
        Older(Tid),
    }
    let live = |x: Xid| x != Xid::NONE && x != me && clog.status(x) != Status::Aborted;
    let mut at = head;
    for _ in 0..CHAIN_MAX {
        if at.is_null() {
            return Ok(None);
        }
        let mark = unseen.len();
        let step = heap::with_tuple(acc, at, |t| match visible(t.xmin, t.xmax, snap, me, clog) {
            Seen::Visible => {
                if live(t.xmax) && !snap.sees(t.xmax, me, clog) {
                    unseen.push(t.xmax);
                }
                match t.overflow() {
                    _ if !copy => Step::Inline(Vec::new()),
                    None => Step::Inline(t.body.to_vec()),
                    Some((first, chain)) => Step::Overflow(first, chain, t.tail().to_vec()),
                }
            }
            Seen::Deleted => Step::Gone,
            Seen::Invisible => {
                if live(t.xmin) {
                    unseen.push(t.xmin);
                }
                Step::Older(t.prev)
            }
        })?;
        if clog.settle(acc)? {
            // Judged with a status only now known: judge it again.
            unseen.truncate(mark);
            continue;
        }
        match step {
            Step::Inline(v) => return Ok(Some(v)),
            Step::Overflow(first, chain, tail) => {
                return overflow::read(acc, first, chain as usize, &tail).map(Some)
            }
            Step::Gone => return Ok(None),
            Step::Older(prev) => at = prev,
        }
    }
    Err(Error::corruption(
        acc.file(),
        at.page.0 as u64 * PAGE_SIZE as u64,
        "version chain does not end",
    ))
}

/// Decodes tuple bytes read from `tid`, reporting damage as corruption.
pub fn decode<'b>(acc: &impl PageAccess, bytes: &'b [u8], tid: Tid) -> Result<Tuple<'b>> {
    Tuple::decode(bytes).ok_or_else(|| {
        Error::corruption(
            acc.file(),
            tid.page.0 as u64 * PAGE_SIZE as u64,
            format!("tuple {tid} malformed"),
        )
    })
}
