//! The write path: put and delete under PostgreSQL's rules for concurrent
//! writers.
//!
//! Under the store latch, find the key's newest version that was not rolled
//! back, then decide:
//! - its creator or deleter is another running transaction → release the
//!   latch and wait for it (the row lock), then start over;
//! - (Snapshot) it was created, or deleted, by a transaction that committed
//!   after our snapshot → `SerializationFailure` (first updater wins); so
//!   is a creator of a version vacuum removed, found in the ledger
//!   (`mvcc::ledger`), when our snapshot does not see it;
//! - otherwise write: a new version whose `prev` is the current chain head,
//!   the old version's `xmax` stamped, the index pointed at the new one —
//!   all one mini-transaction.
//!
//! Large values are written to overflow pages before the latch is taken,
//! and freed again if the write fails.

use super::locks::Deadline;
use super::ssi::{mark_absence_under_latch, Coarsening};
use super::Transaction;
use crate::btree;
use crate::buffer::mtr::Mtr;
use crate::catalog::Table;
use crate::error::{Error, Result};
use crate::heap::{self, overflow, tuple};
use crate::ids::{PageId, Tid, Xid};
use crate::limits::{KEY_MAX, OVERFLOW_PAGES_PER_RECORD, VALUE_MAX};
use crate::mvcc::chain::{self, Cursor, Version};
use crate::mvcc::{visible, Seen, Snapshot, Status, StatusOf};
use crate::options::Isolation;
use crate::redo::record::Op;
use crate::store::meta;
use crate::txn::Core;

/// One put or delete, as the write path sees it.
struct Write<'a> {
    table: &'a Table,
    key: &'a [u8],
    /// `None` deletes.
    value: Option<&'a [u8]>,
    /// The value's overflow chain, already written, and the bytes it
    /// holds, if the value is large.
    big: Option<(PageId, usize)>,
    me: Xid,
}

enum Step {
    /// Written (or nothing to do); whether a visible version existed.
    Done { existed: bool },
    /// Another transaction holds the row.
    Wait(Xid),
}

/// Puts (`value` is `Some`) or deletes `key`.
pub(super) fn write(
    tx: &mut Transaction,
    table: &Table,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<bool> {
    if key.len() > KEY_MAX {
        return Err(Error::KeyTooLarge { len: key.len() });
    }
    if let Some(v) = value {
        if v.len() > VALUE_MAX {
            return Err(Error::ValueTooLarge { len: v.len() });
        }
    }
    tx.core().engine.writable()?;
    let me = tx.ensure_xid()?;
    let core = tx.core.clone();
    let inner = &*core;
    let big = match value.and_then(|v| Some((v, overflow::split(key.len(), v.len())?))) {
        Some((v, chain)) => Some((write_overflow(inner, me, &v[..chain])?, chain)),
        None => None,
    };
    let w = Write {
        table,
        key,
        value,
        big,
        me,
    };
    let r = write_loop(tx, inner, &w);
    if r.is_err() {
        if let Some((first, chain)) = big {
            // Best effort: on failure the pages are merely unreferenced.
            let _ = free_overflow(inner, first, chain);
        }
    }
    r
}

fn write_loop(tx: &mut Transaction, inner: &Core, w: &Write<'_>) -> Result<bool> {
    // Set at the first wait: most writes never wait, and reading the clock
    // for each was a measurable share of a bulk delete.
    let mut deadline = None;
    let op = if w.value.is_some() {
        Op::Put
    } else {
        Op::Delete
    };
    loop {
        let (coarsening, step) = mark_absence_under_latch(
            inner.engine.store().write(),
            |latch| apply(&mut latch.mtr, inner, w, &tx.snapshot_now(), tx.level),
            |step| absence_mark(tx, w, step),
            |latch| {
                latch
                    .commit_write(op as u8, w.me, w.table.root, w.key)
                    .map(|_| ())
            },
        );
        tx.ssi_coarsen(coarsening);
        let step = step?;
        match step {
            Step::Done { existed } => {
                tx.versions.written += u64::from(w.value.is_some());
                tx.versions.superseded += u64::from(existed);
                return Ok(existed);
            }
            Step::Wait(_) if tx.nowait => {
                return Err(Error::LockNotAvailable {
                    table: Some(w.table.name().to_string()),
                    key: Some(w.key.to_vec()),
                });
            }
            Step::Wait(holder) => {
                let opts = inner.engine.opts();
                let deadline = *deadline.get_or_insert_with(|| {
                    opts.lock_timeout
                        .map(|t| Deadline::after(&*opts.clock.0, t))
                });
                inner
                    .txns
                    .waits()
                    .wait_for(w.me, holder, inner.txns.manager().clog(), deadline)?
            }
        }
    }
}

/// A delete's SIREAD mark. A delete that stamps a row takes none: every
/// concurrent writer of the row meets the stamp and waits or fails
/// (first updater wins), as PostgreSQL drops a tuple's SIREAD lock once
/// the same transaction writes the tuple. A delete that finds no row has
/// read the key's absence, and marks it before the store latch goes
/// (`ssi::mark_absence_under_latch`): every writer inserts under that
/// latch and looks for marks after it, so none can slip in between the
/// read and the mark.
fn absence_mark(tx: &Transaction, w: &Write<'_>, step: &Step) -> Option<Coarsening> {
    match (w.value, step) {
        (None, Step::Done { existed: false }) => tx.ssi_mark_key(w.table, w.key),
        _ => None,
    }
}

/// The key's place in the index, its newest version not rolled back (by
/// someone else), and the chain head.
fn newest(
    mtr: &mut Mtr<'_>,
    inner: &Core,
    w: &Write<'_>,
) -> Result<(btree::Place, Tid, Option<Version>)> {
    let place = btree::place(mtr, w.table.root, w.key)?;
    let Some(tid) = place.value_with(mtr, chain::tid_of)? else {
        return Ok((place, Tid::NULL, None));
    };
    let head = chain::valid(mtr, tid)?;
    let clog = inner.txns.manager().clog();
    let mut c = Cursor::new(head);
    while let Some(v) = c.next(mtr)? {
        if v.xmin == w.me || clog.status(v.xmin) != Status::Aborted {
            return Ok((place, head, Some(v)));
        }
    }
    Ok((place, head, None))
}

/// Decides and, unless the row is held or in conflict, writes.
fn apply(
    mtr: &mut Mtr<'_>,
    inner: &Core,
    w: &Write<'_>,
    snap: &Snapshot,
    level: Isolation,
) -> Result<Step> {
    let clog = inner.txns.manager().clog();
    let me = w.me;
    // The heap pages and the meta page change below, never the index's:
    // the key's place stays valid until the insert.
    let (place, head, newest) = newest(mtr, inner, w)?;
    if level != Isolation::ReadCommitted && removed_unseen(inner, w, snap) {
        return Err(Error::concurrent_update(w.table.name(), w.key));
    }
    let mut live = None;
    if let Some(v) = newest {
        if v.xmin != me && clog.status(v.xmin) == Status::InProgress {
            return Ok(Step::Wait(v.xmin));
        }
        let deleted_by_other = v.xmax != Xid::NONE && v.xmax != me;
        if deleted_by_other && clog.status(v.xmax) == Status::InProgress {
            return Ok(Step::Wait(v.xmax));
        }
        if level != Isolation::ReadCommitted {
            let created_unseen = v.xmin != me && !snap.sees(v.xmin, me, clog);
            let deleted_unseen = deleted_by_other
                && clog.status(v.xmax) == Status::Committed
                && !snap.sees(v.xmax, me, clog);
            if created_unseen || deleted_unseen {
                return Err(Error::concurrent_update(w.table.name(), w.key));
            }
        }
        if visible(v.xmin, v.xmax, snap, me, clog) == Seen::Visible {
            live = Some(v);
        }
    }
    match w.value {
        None => {
            let Some(v) = live else {
                return Ok(Step::Done { existed: false });
            };
            heap::stamp_xmax(mtr, v.tid, me)?;
        }
        Some(value) => {
            let body = match w.big {
                Some((first, chain)) => tuple::Inline::Overflow {
                    first,
                    chain: chain as u32,
                    tail: &value[chain..],
                },
                None => tuple::Inline::Bytes(value),
            };
            let bytes = tuple::encode(me, head, w.key, body);
            let tid = heap::insert(mtr, &inner.engine.store().fsm, &bytes)?;
            if let Some(v) = live.filter(|v| v.xmax != me) {
                heap::stamp_xmax(mtr, v.tid, me)?;
            }
            btree::insert_at(mtr, place, w.key, &tid.encode())?;
        }
    }
    Ok(Step::Done {
        existed: live.is_some(),
    })
}

/// Whether vacuum removed a version of the key whose creator committed
/// unseen by `snap` (`mvcc::ledger`): then the key's newest version, had
/// it stayed, carried a change unseen too, which first updater wins must
/// meet (`vacuum` argues why the creator suffices). Consulted under the
/// store latch vacuum records under, after the chain was read, so a
/// change is met in the chain or here.
fn removed_unseen(inner: &Core, w: &Write<'_>, snap: &Snapshot) -> bool {
    if !inner.txns.ledger().concerns(snap) {
        return false;
    }
    let mut xids = Vec::new();
    inner.txns.ledger().writers(w.table.root, w.key, &mut xids);
    let clog = inner.txns.manager().clog();
    xids.iter()
        .any(|&x| x != w.me && clog.status(x) == Status::Committed && !snap.sees(x, w.me, clog))
}

fn write_overflow(inner: &Core, me: Xid, v: &[u8]) -> Result<PageId> {
    overflow::write(v, |f| {
        inner
            .engine
            .store()
            .with_mtr(Op::Overflow as u8, me, |mtr| f(mtr))
            .map(|_| ())
    })
}

/// Frees an overflow chain's pages.
pub(crate) fn free_overflow(inner: &Core, first: PageId, len: usize) -> Result<u64> {
    let pages = {
        let mut r = inner.engine.store().read();
        overflow::pages(&mut r.view, first, len)?
    };
    for group in pages.chunks(OVERFLOW_PAGES_PER_RECORD) {
        inner
            .engine
            .store()
            .with_mtr(Op::Vacuum as u8, Xid::NONE, |mtr| {
                for &pid in group {
                    meta::free(mtr, pid)?;
                }
                Ok(())
            })?;
    }
    Ok(pages.len() as u64)
}
