//! Commit timestamps, kept beside the commit log for good.
//!
//! A read-write commit's timestamp goes into a B+tree (xid, big-endian →
//! timestamp, little-endian u64; root in the meta page) in the same
//! mini-transaction that sets its commit-log bits, so the commit record
//! carries both and redo restores both; the meta page keeps the highest
//! timestamp assigned, which the next commit must exceed. A restart reads
//! that mark from the recovered meta page: no scan, and it survives
//! checkpoints because the pages do.
//!
//! Why a tree beside the commit log and not in the tuples: a version's
//! `xmin` already leads to its commit's outcome; its timestamp is one more
//! lookup by the same key, kept as long as the commit log (never pruned,
//! like the commit-log bits), so vacuum, which removes versions, never
//! removes a timestamp a surviving version needs, and a read as of a
//! timestamp (`mvcc::history`) can judge any version it meets. It costs
//! about 25 bytes per commit on disk.
//!
//! ```text
//!  key: xid u64 BE (8)   value: timestamp u64 LE (8), nanoseconds since the epoch
//!  meta: COMMIT_TS_HIGH u64 LE — every assigned timestamp, and every
//!        timestamp a read was served at, is ≤ it
//!        HISTORY_HORIZON u64 LE — reads as of a timestamp below it are refused
//! ```

use crate::btree;
use crate::buffer::mtr::{Mtr, PageAccess};
use crate::clock::{stamp_with, Clock, Reading, Timestamp};
use crate::codec::{put_u64, u64_at};
use crate::error::{Error, Result};
use crate::ids::{PageId, Xid};
use crate::page::PageType;
use crate::store::meta::{self, Field, COMMIT_TS_HIGH, HISTORY_HORIZON, META};

/// Starts an empty tree (database creation).
pub fn init(mtr: &mut Mtr<'_>) -> Result<()> {
    let root = meta::alloc(mtr, PageType::Leaf)?;
    btree::create(mtr, root)?;
    meta::set(mtr.page_mut(META)?, Field::CommitTsRoot, root.0);
    Ok(())
}

fn root(acc: &mut impl PageAccess) -> Result<PageId> {
    let r = acc.with_page(META, |m| meta::get(m, Field::CommitTsRoot))?;
    if r == 0 {
        return Err(Error::corruption(acc.file(), 0, "no commit-timestamp root"));
    }
    Ok(PageId(r))
}

/// The highest timestamp this database has assigned (`ZERO`: none yet).
pub fn high_water(acc: &mut impl PageAccess) -> Result<Timestamp> {
    let v = acc.with_page(META, |m| u64_at(m, COMMIT_TS_HIGH).unwrap_or(0))?;
    Ok(Timestamp::from_nanos(v))
}

/// Gives committing `xid` its timestamp — at least `now.latest`, above
/// every one assigned before (`clock::commit_ts`) — and records it in
/// `mtr`, the commit's mini-transaction. Fails, changing nothing the
/// caller keeps (the mini-transaction is dropped), when the clock lags the
/// high-water mark by more than a commit may wait.
pub(crate) fn stamp(
    mtr: &mut Mtr<'_>,
    xid: Xid,
    clock: &dyn Clock,
    reading: &mut Reading,
) -> Result<Timestamp> {
    let ts = reserve(mtr, clock, reading)?;
    record(mtr, xid, ts)?;
    Ok(ts)
}

/// Takes a timestamp as `stamp` does, without a commit: the high-water
/// mark rises to it, so every later timestamp is above it. A prepare
/// takes its prepare timestamp so, in the prepare's mini-transaction.
pub(crate) fn reserve(
    mtr: &mut Mtr<'_>,
    clock: &dyn Clock,
    reading: &mut Reading,
) -> Result<Timestamp> {
    let high = high_water(mtr)?;
    let ts = stamp_with(clock, reading, high)?;
    raise(mtr, ts)?;
    Ok(ts)
}

/// Takes `ts`, a prepare timestamp a replicated log or a snapshot
/// stream gave, as `reserve` takes one from the clock, but refusing
/// nothing: the high-water mark rises to it if below
/// (`Transaction::prepare_applying`).
pub(crate) fn reserve_at(mtr: &mut Mtr<'_>, ts: Timestamp) -> Result<()> {
    if ts > high_water(mtr)? {
        raise(mtr, ts)?;
    }
    Ok(())
}

/// Records that `xid` committed at `ts`, a timestamp chosen by the caller
/// and already checked (`Transaction::commit_at`,
/// `Db::commit_prepared_at`); the high-water mark rises to it if below.
pub fn stamp_at(mtr: &mut Mtr<'_>, xid: Xid, ts: Timestamp) -> Result<()> {
    if ts > high_water(mtr)? {
        raise(mtr, ts)?;
    }
    record(mtr, xid, ts)
}

/// Records that a read as of `ts` was served: the high-water mark rises
/// to it if below, so every later commit here takes a timestamp above it
/// and the read stays the same answer. True if the mark moved.
pub(crate) fn serve(mtr: &mut Mtr<'_>, ts: Timestamp) -> Result<bool> {
    if ts <= high_water(mtr)? {
        return Ok(false);
    }
    raise(mtr, ts)?;
    Ok(true)
}

/// The history horizon: reads as of a timestamp below it are refused,
/// vacuum having freed what they would see (`mvcc::history`).
pub fn horizon(acc: &mut impl PageAccess) -> Result<Timestamp> {
    let v = acc.with_page(META, |m| u64_at(m, HISTORY_HORIZON).unwrap_or(0))?;
    Ok(Timestamp::from_nanos(v))
}

/// Records a raised history horizon, before vacuum frees anything it
/// allows.
pub(crate) fn set_horizon(mtr: &mut Mtr<'_>, ts: Timestamp) -> Result<()> {
    let m = mtr.page_mut_in(META, &[(HISTORY_HORIZON, HISTORY_HORIZON + 8)])?;
    put_u64(m, HISTORY_HORIZON, ts.as_nanos());
    Ok(())
}

fn raise(mtr: &mut Mtr<'_>, ts: Timestamp) -> Result<()> {
    let m = mtr.page_mut_in(META, &[(COMMIT_TS_HIGH, COMMIT_TS_HIGH + 8)])?;
    put_u64(m, COMMIT_TS_HIGH, ts.as_nanos());
    Ok(())
}

fn record(mtr: &mut Mtr<'_>, xid: Xid, ts: Timestamp) -> Result<()> {
    let root = root(mtr)?;
    btree::insert(
        mtr,
        root,
        &xid.0.to_be_bytes(),
        &ts.as_nanos().to_le_bytes(),
    )
}

/// The timestamp `xid`, a committed transaction, committed at: every
/// commit is stamped, so none is damage.
pub fn of_committed(acc: &mut impl PageAccess, xid: Xid) -> Result<Timestamp> {
    lookup(acc, xid)?.ok_or_else(|| {
        Error::corruption(
            acc.file(),
            0,
            format!("committed xid {} has no commit timestamp", xid.0),
        )
    })
}

/// The timestamp `xid` committed at, if it committed with one.
pub fn lookup(acc: &mut impl PageAccess, xid: Xid) -> Result<Option<Timestamp>> {
    let root = root(acc)?;
    let Some(v) = btree::get(acc, root, &xid.0.to_be_bytes())? else {
        return Ok(None);
    };
    match (v.len(), u64_at(&v, 0)) {
        (8, Some(ts)) => Ok(Some(Timestamp::from_nanos(ts))),
        _ => Err(Error::corruption(
            acc.file(),
            0,
            format!("commit timestamp of xid {} is {} bytes", xid.0, v.len()),
        )),
    }
}
