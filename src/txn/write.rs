//! The write path: put and delete under PostgreSQL's rules for concurrent
//! writers.
//!
//! Under the store latch, find the key's newest version that was not rolled
//! back, then decide:
//! - its creator or deleter is another running transaction → release the
//!   latch and wait for it (the row lock), then start over;
//! - (Snapshot) it was created, or deleted, by a transaction that committed
//!   after our snapshot → `SerializationFailure` (first updater wins);
//! - otherwise write: a new version whose `prev` is the current chain head,
//!   the old version's `xmax` stamped, the index pointed at the new one —
//!   all one mini-transaction.
//!
//! Large values are written to overflow pages before the latch is taken,
//! and freed again if the write fails.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Transaction;
use crate::btree;
use crate::buffer::mtr::{Mtr, PageAccess};
use crate::db::{Inner, Table};
use crate::error::{Error, Result};
use crate::heap::{self, overflow, tuple};
use crate::ids::{PageId, Tid, Xid};
use crate::limits::{KEY_MAX, OVERFLOW_PAGES_PER_RECORD, PAGE_SIZE, TUPLE_INLINE_MAX, VALUE_MAX};
use crate::mvcc::chain::{self, CHAIN_MAX};
use crate::mvcc::{visible, Seen, Snapshot, Status, StatusOf};
use crate::options::Isolation;
use crate::store::meta;
use crate::wal::record::{Kind, Op};

/// Decodes an index entry's tid.
pub(crate) fn decode_tid(acc: &impl PageAccess, v: &[u8]) -> Result<Tid> {
    Tid::decode(v)
        .filter(|t| v.len() == Tid::LEN && !t.is_null())
        .ok_or_else(|| Error::corruption(acc.file(), 0, "index entry holds a malformed tuple id"))
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
    let me = tx.ensure_xid()?;
    let db = tx.db.clone();
    let inner = db.inner();
    let big = match value {
        Some(v) if tuple::HEADER + key.len() + v.len() > TUPLE_INLINE_MAX => {
            Some(write_overflow(inner, me, v)?)
        }
        _ => None,
    };
    let r = write_loop(tx, inner, table, key, value, big, me);
    if r.is_err() {
        if let (Some(first), Some(v)) = (big, value) {
            // Best effort: on failure the pages are merely unreferenced.
            let _ = free_overflow(inner, first, v.len());
        }
    }
    r
}

fn write_loop(
    tx: &mut Transaction,
    inner: &Inner,
    table: &Table,
    key: &[u8],
    value: Option<&[u8]>,
    big: Option<PageId>,
    me: Xid,
) -> Result<bool> {
    let deadline = inner.opts.lock_timeout.map(|t| Instant::now() + t);
    loop {
        let step = {
            let mut w = inner.store.write();
            let snap = tx.snapshot_now();
            let step = apply(
                &mut w.mtr, inner, table, key, value, big, me, &snap, tx.level,
            )?;
            let op = if value.is_some() { Op::Put } else { Op::Delete };
            w.commit(Kind::Pages, op as u8, me)?;
            step
        };
        match step {
            Step::Done { existed } => {
                tx.writes += 1;
                if existed {
                    inner.dead.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(existed);
            }
            Step::Wait(holder) => inner
                .waits
                .wait_for(me, holder, inner.mgr.clog(), deadline)?,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn apply(
    mtr: &mut Mtr<'_>,
    inner: &Inner,
    table: &Table,
    key: &[u8],
    value: Option<&[u8]>,
    big: Option<PageId>,
    me: Xid,
    snap: &Snapshot,
    level: Isolation,
) -> Result<Step> {
    let clog = inner.mgr.clog();
    let head = match btree::get(mtr, table.root, key)? {
        Some(v) => Some(decode_tid(mtr, &v)?),
        None => None,
    };
    // The newest version not rolled back.
    let mut newest = None;
    let mut cur = head.unwrap_or(Tid::NULL);
    let mut steps = 0;
    while !cur.is_null() {
        let bytes = heap::read(mtr, cur)?;
        let t = chain::decode(mtr, &bytes, cur)?;
        if t.xmin == me || clog.status(t.xmin) != Status::Aborted {
            newest = Some((cur, t.xmin, t.xmax));
            break;
        }
        cur = t.prev;
        steps += 1;
        if steps > CHAIN_MAX {
            return Err(Error::corruption(
                mtr.file(),
                cur.page.0 as u64 * PAGE_SIZE as u64,
                "version chain does not end",
            ));
        }
    }
    let mut live = None;
    if let Some((tid, xmin, xmax)) = newest {
        if xmin != me && clog.status(xmin) == Status::InProgress {
            return Ok(Step::Wait(xmin));
        }
        let deleter_running =
            xmax != Xid::NONE && xmax != me && clog.status(xmax) == Status::InProgress;
        if deleter_running {
            return Ok(Step::Wait(xmax));
        }
        if level != Isolation::ReadCommitted {
            let created_unseen = xmin != me && !snap.sees(xmin, me, clog);
            let deleted_unseen = xmax != Xid::NONE
                && xmax != me
                && clog.status(xmax) == Status::Committed
                && !snap.sees(xmax, me, clog);
            if created_unseen || deleted_unseen {
                return Err(Error::SerializationFailure);
            }
        }
        if visible(xmin, xmax, snap, me, clog) == Seen::Visible {
            live = Some((tid, xmax));
        }
    }
    match value {
        None => {
            let Some((tid, _)) = live else {
                return Ok(Step::Done { existed: false });
            };
            heap::modify(mtr, tid, |b| tuple::set_xmax(b, me))?;
        }
        Some(v) => {
            let body = match big {
                Some(first) => tuple::Inline::Overflow {
                    first,
                    len: v.len() as u32,
                },
                None => tuple::Inline::Bytes(v),
            };
            let bytes = tuple::encode(me, head.unwrap_or(Tid::NULL), key, body);
            let tid = heap::insert(mtr, &inner.store.fsm, &bytes)?;
            if let Some((old, xmax)) = live {
                if xmax != me {
                    heap::modify(mtr, old, |b| tuple::set_xmax(b, me))?;
                }
            }
            btree::insert(mtr, table.root, key, &tid.encode())?;
        }
    }
    Ok(Step::Done {
        existed: live.is_some(),
    })
}

fn write_overflow(inner: &Inner, me: Xid, v: &[u8]) -> Result<PageId> {
    overflow::write(v, |f| {
        inner
            .store
            .with_mtr(Op::Overflow as u8, me, |mtr| f(mtr))
            .map(|_| ())
    })
}

/// Returns an overflow chain's pages to the free list.
pub(crate) fn free_overflow(inner: &Inner, first: PageId, len: usize) -> Result<u64> {
    let pages = {
        let mut r = inner.store.read();
        overflow::pages(&mut r.view, first, len)?
    };
    for group in pages.chunks(OVERFLOW_PAGES_PER_RECORD) {
        inner.store.with_mtr(Op::Vacuum as u8, Xid::NONE, |mtr| {
            for &pid in group {
                meta::free(mtr, pid)?;
            }
            Ok(())
        })?;
    }
    Ok(pages.len() as u64)
}
