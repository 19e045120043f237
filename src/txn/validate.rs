//! Optimistic validation: did a key, or any key of a range, change after
//! a timestamp?
//!
//! A replicated transaction reads on its leader at a snapshot, then every
//! replica decides at apply whether it may commit: whether what it read
//! (Serializable) or wrote (Snapshot) changed after its snapshot's
//! timestamp (FoundationDB's resolver, on MVCC). The versions answer it:
//! a key changed after `T` iff, walking its chain from the newest, a
//! version was created by a commit stamped after `T`, or the first one
//! created at or before `T` was deleted (or replaced) by one after `T`.
//! A change not yet decided — by a running or prepared transaction other
//! than this one, or a commit still in its commit wait — counts as a
//! change: it may land after `T`, and apply must not wait to find out.
//! Rolled-back versions are not changes.
//!
//! The table is a row too: its name's catalog row (`catalog`). If the
//! table the name meant at `T` was dropped or renamed since, or a
//! transaction not yet decided changes the name, what was read at `T`
//! under the name is not what the name holds now, key by key or at all:
//! the check fails with a serialization failure (a concurrent table
//! change), whatever the keys say. A table created under the name since
//! `T`, where none was at `T`, is new: each of its keys changed since,
//! and the first one answers. A name no one ever created is an empty
//! table that did not change.
//!
//! Vacuum keeps every version deleted after the history horizon, so a
//! check at `T` registers `T` as a read as of a timestamp does
//! (`History::hold`): below the horizon it is `SnapshotTooOld`, at or
//! above it no version it needs can go while it runs.

use std::ops::Bound;

use super::{bounds, KeyRange, Transaction};
use crate::btree::{self, Dir};
use crate::buffer::mtr::PageAccess;
use crate::catalog::Table;
use crate::clock::Timestamp;
use crate::error::{Conflict, Error, Result};
use crate::ids::{Tid, Xid};
use crate::limits::SCAN_BATCH;
use crate::mvcc::chain::{self, Cursor};
use crate::mvcc::clog::Clog;
use crate::mvcc::{commit_ts, Status, StatusOf};

impl Transaction {
    /// The first key of `range` in `table` (in key order) that changed
    /// after `ts`: a version of it created or deleted by a commit stamped
    /// after `ts`, or by a transaction not yet decided (running, prepared,
    /// or in its commit wait) other than this one. `None` if no key did.
    /// The check for a replica applying an optimistic transaction: abort
    /// it if what it read or wrote changed after its snapshot.
    ///
    /// A change of the table itself after `ts` — created, dropped or
    /// renamed since, or by an undecided transaction — is a
    /// `SerializationFailure` (`Conflict::ConcurrentTableChange`): every
    /// key read under the name may now mean another. A table that never
    /// existed did not change (`None`). `SnapshotTooOld` if `ts` is below
    /// the history horizon (vacuum may have freed the versions that would
    /// answer).
    pub fn changed_since<R: KeyRange>(
        &self,
        table: &Table,
        range: R,
        ts: Timestamp,
    ) -> Result<Option<Vec<u8>>> {
        self.check(table)?;
        let (lo, hi) = bounds(range)?;
        let inner = self.core();
        let _hold = inner.txns.history().hold(ts)?;
        let clog = inner.txns.manager().clog();
        {
            let mut r = inner.engine.store().read();
            let name = table.name().as_bytes();
            let row = btree::get_with(&mut r.view, inner.catalog, name, chain::tid_of)?;
            if let Some(tid) = row {
                let head = chain::valid(&r.view, tid)?;
                if table_changed(&mut r.view, head, (self.xid, ts), clog)? {
                    return Err(Error::SerializationFailure {
                        cause: Conflict::ConcurrentTableChange,
                        table: Some(table.name().to_string()),
                        key: None,
                    });
                }
            }
        }
        let (snap, epoch) = self.read_snapshot();
        // Unchanged since `ts`, and absent: never created, nothing to see.
        let root = match self.root_for_read(table, &snap, epoch) {
            Ok(Some(root)) => root,
            Ok(None) | Err(Error::NoSuchTable { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut from: Bound<Vec<u8>> = lo.clone();
        loop {
            let mut r = inner.engine.store().read();
            let mut batch: Vec<(Vec<u8>, Option<Tid>)> = Vec::new();
            let exhausted = btree::range_with(
                &mut r.view,
                root,
                (from.as_ref().map(|k| &k[..]), hi.as_ref().map(|k| &k[..])),
                Dir::Forward,
                SCAN_BATCH,
                |k, v| batch.push((k.to_vec(), chain::tid_of(v))),
            )?;
            for (key, tid) in &batch {
                let head = chain::valid(&r.view, *tid)?;
                if changed(&mut r.view, head, (self.xid, ts), clog)? {
                    return Ok(Some(key.clone()));
                }
            }
            match batch.pop() {
                Some((last, _)) if !exhausted => from = Bound::Excluded(last),
                _ => return Ok(None),
            }
        }
    }
}

/// Whether the key whose newest version is `head` changed after `ts`
/// for transaction `me` (see the module essay).
fn changed(
    acc: &mut impl PageAccess,
    head: Tid,
    (me, ts): (Xid, Timestamp),
    clog: &Clog,
) -> Result<bool> {
    let mut c = Cursor::new(head);
    while let Some(v) = c.next(acc)? {
        match after(acc, v.xmin, (me, ts), clog)? {
            Some(true) => return Ok(true),
            // Created at or before `ts`: changed since only if deleted since.
            Some(false) => return Ok(after(acc, v.xmax, (me, ts), clog)? == Some(true)),
            // This transaction's own version, or a rolled-back one: what
            // lies under it tells.
            None => {}
        }
    }
    Ok(false)
}

/// Whether the name whose catalog row's newest version is `head` meant,
/// at `ts`, a table dropped or renamed since, or has an undecided change.
fn table_changed(
    acc: &mut impl PageAccess,
    head: Tid,
    (me, ts): (Xid, Timestamp),
    clog: &Clog,
) -> Result<bool> {
    let mut c = Cursor::new(head);
    while let Some(v) = c.next(acc)? {
        let undecided = |x: Xid| x != me && x != Xid::NONE && clog.status(x) == Status::InProgress;
        if undecided(v.xmin) || undecided(v.xmax) {
            return Ok(true);
        }
        // Created at or before `ts`: the table of that time, if not gone
        // by then; changed if it went since.
        if after(acc, v.xmin, (me, ts), clog)? == Some(false) {
            return Ok(after(acc, v.xmax, (me, ts), clog)? == Some(true));
        }
    }
    // No table under the name at `ts`: one made since is new.
    Ok(false)
}

/// Whether `x`'s change came after `ts` or is not yet decided; `None` if
/// it is no change of another's (no one, `me`, or rolled back).
fn after(
    acc: &mut impl PageAccess,
    x: Xid,
    (me, ts): (Xid, Timestamp),
    clog: &Clog,
) -> Result<Option<bool>> {
    if x == Xid::NONE || x == me {
        return Ok(None);
    }
    match clog.status(x) {
        Status::Aborted => Ok(None),
        Status::InProgress => Ok(Some(true)),
        Status::Committed => Ok(Some(commit_ts::of_committed(acc, x)? > ts)),
    }
}
