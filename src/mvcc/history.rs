//! Reads as of a timestamp, and the history they need.
//!
//! A read as of `T` sees exactly the commits with a timestamp at or below
//! `T`: a version is visible iff its creator committed at or before `T`
//! and its deleter (if any) did not. That is the snapshot rule
//! (`snapshot::visible`) with one more condition on "committed", so
//! [`AsOf`] is a [`StatusOf`] that answers `Committed` only for commits
//! stamped at or before `T`, and everything else (chains, the catalog,
//! scans) is the code every reader runs.
//!
//! A commit's timestamp lives in a B+tree (`commit_ts`), which a reader
//! can only look up between pages, not while it judges a tuple under a
//! page latch. So `AsOf` answers from what it already knows; an xid it
//! has not met yet it notes as missing and calls in progress, and the
//! chain walk, once out of the page, asks it to [`StatusOf::settle`]:
//! it looks the missing ones up and the walk judges the same version
//! again. A commit's timestamp never changes, so what one read looked up
//! serves every later one: a bounded map shared by the database's reads
//! ([`Stamps`]) keeps it, and each transaction keeps what it judged.
//!
//! The history a read needs is kept by vacuum: it frees a version deleted
//! by a commit only if that commit's timestamp is at or below the
//! *horizon*, which never passes a live reader's `T` nor `now − retention`
//! (`Options::history_retention`), and never moves back. It is raised
//! with each batch of keys a vacuum pass gathers its views for (so
//! versions deleted during a long pass go in the same pass, as the views
//! let them) and logged in the meta page before anything it allows is
//! freed, so after a crash it is at least where the freed
//! versions need it. A read below it fails with `SnapshotTooOld`; one at or
//! above it is registered here first ([`History::hold`]), in the same
//! step as the check, so vacuum cannot pass it afterwards.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::clog::Clog;
use super::commit_ts;
use super::snapshot::{Status, StatusOf};
use crate::buffer::mtr::PageAccess;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::hash::IntMap;
use crate::ids::Xid;
use crate::limits::STAMPS_CACHED_MAX;
use crate::sync::{Mutex, RwLock};

#[derive(Default)]
struct State {
    horizon: Timestamp,
    /// Timestamps of live reads as of a timestamp, with how many read at each.
    readers: BTreeMap<Timestamp, usize>,
}

/// The history horizon and the reads that hold it back.
pub struct History {
    state: Arc<Mutex<State>>,
    stamps: Arc<Stamps>,
}

/// Commit timestamps looked up by reads as of a timestamp, shared by all
/// of them (bounded by `STAMPS_CACHED_MAX`: when full, it starts over).
#[derive(Default)]
pub struct Stamps(RwLock<IntMap<u64, Timestamp>>);

impl Stamps {
    fn get(&self, xid: Xid) -> Option<Timestamp> {
        self.0.read().get(&xid.0).copied()
    }

    fn put(&self, xid: Xid, ts: Timestamp) {
        let mut m = self.0.write();
        if m.len() >= STAMPS_CACHED_MAX {
            m.clear();
        }
        m.insert(xid.0, ts);
    }
}

impl History {
    /// Starts at `horizon`, read from the meta page at open.
    pub fn new(horizon: Timestamp) -> History {
        History {
            state: Arc::new(Mutex::new(State {
                horizon,
                readers: BTreeMap::new(),
            })),
            stamps: Arc::default(),
        }
    }

    /// The commit timestamps reads have looked up.
    pub fn stamps(&self) -> &Stamps {
        &self.stamps
    }

    /// The horizon: vacuum has freed nothing a read at or above it needs.
    pub fn horizon(&self) -> Timestamp {
        self.state.lock().horizon
    }

    /// Registers a read as of `ts`, held until the returned `Hold` drops;
    /// `SnapshotTooOld` if `ts` is below the horizon.
    pub fn hold(&self, ts: Timestamp) -> Result<Hold> {
        let mut s = self.state.lock();
        if ts < s.horizon {
            return Err(Error::SnapshotTooOld {
                ts,
                horizon: s.horizon,
            });
        }
        *s.readers.entry(ts).or_default() += 1;
        Ok(Hold {
            state: self.state.clone(),
            ts,
        })
    }

    /// Registers a hold at the horizon itself (which then stays put until
    /// the hold moves or drops): a change reader's, from its start.
    pub(crate) fn hold_horizon(&self) -> Hold {
        let mut s = self.state.lock();
        let ts = s.horizon;
        *s.readers.entry(ts).or_default() += 1;
        Hold {
            state: self.state.clone(),
            ts,
        }
    }

    /// Registers a read as of `ts` that another registration already
    /// keeps safe, whatever the horizon: a change reader's read of a
    /// transaction it has reached, whose versions its own hold keeps
    /// (`changes`), even when that transaction's timestamp lies below the
    /// horizon its hold allows (a prepared one committed at a chosen
    /// timestamp below later commits).
    pub(crate) fn hold_kept(&self, ts: Timestamp) -> Hold {
        let mut s = self.state.lock();
        *s.readers.entry(ts).or_default() += 1;
        Hold {
            state: self.state.clone(),
            ts,
        }
    }

    /// Raises the horizon towards `to` (`now − retention`), but not past
    /// the oldest live read, and never lowers it. Returns the horizon,
    /// and whether it moved (the caller then logs it before freeing).
    pub fn advance(&self, to: Timestamp) -> (Timestamp, bool) {
        let mut s = self.state.lock();
        let next = Self::next(&s, to);
        let moved = next > s.horizon;
        s.horizon = next;
        (next, moved)
    }

    /// The horizon `advance(to)` would set, leaving it where it is.
    pub fn peek(&self, to: Timestamp) -> Timestamp {
        Self::next(&self.state.lock(), to)
    }

    fn next(s: &State, to: Timestamp) -> Timestamp {
        let oldest = s.readers.keys().next().copied().unwrap_or(Timestamp::MAX);
        to.min(oldest).max(s.horizon)
    }
}

/// A registered read as of `ts`; dropping it lets the horizon pass.
pub struct Hold {
    state: Arc<Mutex<State>>,
    ts: Timestamp,
}

impl Hold {
    /// The timestamp read at.
    pub fn ts(&self) -> Timestamp {
        self.ts
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut s = self.state.lock();
        if let Some(n) = s.readers.get_mut(&self.ts) {
            *n -= 1;
            if *n == 0 {
                s.readers.remove(&self.ts);
            }
        }
    }
}

/// What a read as of a timestamp has learnt of commit timestamps: per
/// xid, whether it committed at or before the read's timestamp.
#[derive(Default)]
pub struct Known {
    at_or_before: RefCell<IntMap<u64, bool>>,
    missing: RefCell<Vec<Xid>>,
}

/// The commit log as seen by a read as of `ts`: an xid committed after
/// `ts` is still in progress to it.
pub struct AsOf<'a> {
    clog: &'a Clog,
    ts: Timestamp,
    known: &'a Known,
    stamps: &'a Stamps,
}

impl<'a> AsOf<'a> {
    /// `clog` as of `ts`, with what the reader learnt so far and what
    /// every reader looked up (`stamps`).
    pub fn new(clog: &'a Clog, ts: Timestamp, known: &'a Known, stamps: &'a Stamps) -> Self {
        AsOf {
            clog,
            ts,
            known,
            stamps,
        }
    }

    /// Whether committed `xid` committed at or before the read, if known
    /// here or to another read.
    fn judged(&self, xid: Xid) -> Option<bool> {
        if let Some(&b) = self.known.at_or_before.borrow().get(&xid.0) {
            return Some(b);
        }
        let b = self.stamps.get(xid)? <= self.ts;
        self.known.at_or_before.borrow_mut().insert(xid.0, b);
        Some(b)
    }
}

impl StatusOf for AsOf<'_> {
    fn status(&self, xid: Xid) -> Status {
        match self.clog.status(xid) {
            Status::Committed => match self.judged(xid) {
                Some(true) => Status::Committed,
                Some(false) => Status::InProgress,
                None => {
                    self.known.missing.borrow_mut().push(xid);
                    Status::InProgress
                }
            },
            other => other,
        }
    }

    fn settle(&self, acc: &mut impl PageAccess) -> Result<bool> {
        let missing = std::mem::take(&mut *self.known.missing.borrow_mut());
        if missing.is_empty() {
            return Ok(false);
        }
        for xid in missing {
            let ts = commit_ts::of_committed(acc, xid)?;
            self.stamps.put(xid, ts);
            self.known
                .at_or_before
                .borrow_mut()
                .insert(xid.0, ts <= self.ts);
        }
        Ok(true)
    }
}

/// The commit log a transaction's reads judge by: the current one, or
/// one as of a timestamp.
pub enum Statuses<'a> {
    /// Every commit counts (a snapshot decides which it sees).
    Now(&'a Clog),
    /// Only commits stamped at or before a timestamp count.
    AsOf(AsOf<'a>),
}

impl StatusOf for Statuses<'_> {
    #[inline]
    fn status(&self, xid: Xid) -> Status {
        match self {
            Statuses::Now(c) => c.status(xid),
            Statuses::AsOf(a) => a.status(xid),
        }
    }

    fn settle(&self, acc: &mut impl PageAccess) -> Result<bool> {
        match self {
            Statuses::Now(_) => Ok(false),
            Statuses::AsOf(a) => a.settle(acc),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_keeps_the_horizon_below_it_until_dropped() {
        let h = History::new(Timestamp::from_nanos(10));
        assert!(matches!(
            h.hold(Timestamp::from_nanos(9)),
            Err(Error::SnapshotTooOld { .. })
        ));
        let a = h.hold(Timestamp::from_nanos(20)).expect("hold");
        let b = h.hold(Timestamp::from_nanos(20)).expect("hold");
        assert_eq!(
            h.advance(Timestamp::from_nanos(50)),
            (Timestamp::from_nanos(20), true)
        );
        drop(a);
        assert_eq!(
            h.advance(Timestamp::from_nanos(50)),
            (Timestamp::from_nanos(20), false),
            "one reader at 20 is left"
        );
        drop(b);
        assert_eq!(
            h.advance(Timestamp::from_nanos(50)),
            (Timestamp::from_nanos(50), true)
        );
        assert_eq!(
            h.advance(Timestamp::from_nanos(30)),
            (Timestamp::from_nanos(50), false),
            "never back"
        );
    }
}
