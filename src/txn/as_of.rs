//! Beginning a read as of a timestamp: waiting until the answer is fixed.
//!
//! A read as of `T` must give the same answer every time it is asked, so
//! it may begin only once no commit at or below `T` can still appear
//! (Spanner's "safe time"). Three sources of such commits, and what
//! closes each:
//!
//! 1. *Commits not yet stamped.* Under the store's write latch, where
//!    every timestamp is taken, the read raises the high-water mark to
//!    `T` (`commit_ts::serve`): every later stamp is above it, a chosen
//!    one (`commit_at`) too. If the mark moved, its record is flushed
//!    before the read is served: a chosen timestamp need not follow the
//!    clock, so after a crash only the durable mark keeps one from
//!    landing at or below `T`. So that a read never pushes commits into
//!    the future, it first waits until the clock's `earliest` has passed
//!    `T` — as a commit waits out its own timestamp — and a `T` further
//!    ahead than the lock timeout is refused. A read at or below the mark
//!    (a timestamp already assigned or read at) neither waits for the
//!    clock nor writes.
//! 2. *Commits stamped but not yet finished* (in their fsync or commit
//!    wait): they are still in progress to every reader. Still under the
//!    latch, the read finds the running transactions stamped at or below
//!    `T`, and waits for them to finish.
//! 3. *Prepared transactions*, which a coordinator may commit at any
//!    timestamp not below their prepare timestamp, even one below the
//!    mark (`prepare::decide`). Each one prepared at or below `T` may
//!    commit at or below it: the read waits for its decision, as Spanner
//!    waits for a prepared transaction below its read timestamp. Those
//!    prepared above `T` commit above it.
//!
//! Both waits are bounded by the lock timeout (`LockTimeout`). After them
//! the read takes an ordinary snapshot, which every commit at or below
//! `T` precedes, and judges "committed" by timestamp (`mvcc::history`).
//!
//! Opened read-only, nothing commits while it is open, but the mark
//! cannot be raised either, and a commit after it closes could land at or
//! below a `T` above the mark: such a `T` is refused, as is one at or
//! after an undecided prepared transaction, whose decision is out of
//! reach. Reads at timestamps the database assigned are served.
//!
//! A commit that was stamped at or below `T` and then failed (its log
//! write poisoned the database) may still be committed after a reopen:
//! a read that waited for it is refused with the poisoning error rather
//! than served without it.
//!
//! A replica applying its leader's commits at the leader's timestamps
//! (`commit_applying`, which the raised mark does not refuse) must not
//! serve a read above what it applied: the leader's next commit may land
//! at or below `T` and change the answer. Its reads wait for its own safe
//! time — the timestamps it has applied — as Spanner's replicas do;
//! `begin_at` is the local rule.
//!
//! With no clock (unsynchronised), a read at a `T` the database has
//! already assigned or served is still safe: no commit can take a
//! timestamp without the clock, and once it is back, stamps are above the
//! mark. A later `T` fails with the clock's error.

use std::sync::Arc;
use std::time::Duration;

use super::locks::Deadline;
use super::{prepare, Core, Transaction};
use crate::clock::{self, Timestamp};
use crate::error::{Error, Result};
use crate::ids::Xid;
use crate::mvcc::commit_ts;
use crate::mvcc::history::{Hold, Known};
use crate::redo::record::{Kind, Op};

/// What a transaction reading as of a timestamp keeps.
pub(crate) struct AsOfRead {
    /// Its registration, which keeps vacuum's horizon at or below it.
    pub(crate) hold: Hold,
    /// The commit timestamps it has looked up.
    pub(crate) known: Known,
}

/// Begins a read-only transaction as of `ts` (`Db::begin_at`).
pub(crate) fn begin(
    core: Arc<Core>,
    holder: Arc<dyn Send + Sync>,
    ts: Timestamp,
) -> Result<Transaction> {
    let inner = &*core;
    inner.engine.store().wal.check()?;
    // First registered, so vacuum's horizon stays at or below `ts` while
    // the read waits.
    let hold = inner.txns.history().hold(ts)?;
    let opts = inner.engine.opts();
    let clock = &*opts.clock.0;
    let high = commit_ts::high_water(&mut inner.engine.store().read().view)?;
    if opts.read_only {
        serve_read_only(inner, ts, high)?;
    } else {
        if ts > high {
            wait_past(inner, ts, opts.lock_timeout)?;
        }
        let pending = serve(inner, ts)?;
        if !pending.is_empty() {
            let deadline = opts.lock_timeout.map(|t| Deadline::after(clock, t));
            let waits = inner.txns.waits();
            waits.wait_finished(&pending, inner.txns.manager().clog(), deadline)?;
            // One that failed may be committed after a reopen.
            inner.engine.store().wal.check()?;
        }
    }
    Transaction::begin_as_of(
        core.clone(),
        holder,
        AsOfRead {
            hold,
            known: Known::default(),
        },
    )
}

/// Waits until the clock's `earliest` has passed `ts` (source 1), for a
/// `ts` above the mark.
fn wait_past(inner: &Core, ts: Timestamp, limit: Option<Duration>) -> Result<()> {
    let clock = &*inner.engine.opts().clock.0;
    let reading = clock::read(clock)?;
    if reading.now.earliest > ts {
        return Ok(());
    }
    let need = ts.since(reading.now.earliest);
    // With no lock timeout, no longer than a commit may wait.
    let limit = limit.unwrap_or(crate::limits::COMMIT_WAIT_MAX);
    if need > limit {
        return Err(Error::TimestampRefused {
            reason: format!(
                "a read as of {ts} would wait {need:?} for the clock (its earliest is {}); \
                 a read waits at most the lock timeout, {limit:?}",
                reading.now.earliest
            ),
        });
    }
    clock::commit_wait(clock, ts, reading);
    Ok(())
}

/// Under the write latch: raises the high-water mark to `ts` (durably,
/// before the read is served) and returns the running transactions that
/// may still commit at or below `ts` (sources 2 and 3).
fn serve(inner: &Core, ts: Timestamp) -> Result<Vec<Xid>> {
    let mut w = inner.engine.store().write();
    let raised = commit_ts::serve(&mut w.mtr, ts)?;
    let running = inner.txns.manager().snapshot();
    let mut pending = Vec::new();
    for &x in running.xip.iter() {
        if commit_ts::lookup(&mut w.mtr, x)?.is_some_and(|t| t <= ts) {
            pending.push(x);
        }
    }
    for e in prepare::load(&mut w.mtr)? {
        // A prepared transaction that wrote nothing changes no answer.
        if e.prepare_ts <= ts && e.xid != Xid::NONE {
            pending.push(e.xid);
        }
    }
    let lsn = w.commit(Kind::Pages, Op::Timestamp as u8, Xid::NONE)?;
    if let Some(lsn) = lsn.filter(|_| raised) {
        inner.engine.store().wal.flush(lsn, true)?;
    }
    Ok(pending)
}

/// `serve` on a database opened read-only: nothing commits while it is
/// open and nothing is in flight, but the mark `high` cannot be raised,
/// so a `ts` above it is refused; and a transaction recovered prepared at
/// or below `ts` may commit there after it closes, with no decision to
/// wait for meanwhile: refused too.
fn serve_read_only(inner: &Core, ts: Timestamp, high: Timestamp) -> Result<()> {
    if ts > high {
        return Err(Error::TimestampRefused {
            reason: format!(
                "a read-only open serves reads only at timestamps the database has already \
                 assigned or read at (up to {high}): a commit could still land at or below {ts}"
            ),
        });
    }
    let undecided: Vec<String> = prepare::load(&mut inner.engine.store().read().view)?
        .into_iter()
        .filter(|e| e.prepare_ts <= ts && e.xid != Xid::NONE)
        .map(|e| format!("{} (prepared at {})", e.gid, e.prepare_ts))
        .collect();
    if undecided.is_empty() {
        return Ok(());
    }
    Err(Error::TimestampRefused {
        reason: format!(
            "a read as of {ts} waits for the decision on {}, which a read-only open cannot take",
            undecided.join(", ")
        ),
    })
}
