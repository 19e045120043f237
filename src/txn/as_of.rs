//! Beginning a read as of a timestamp: waiting until the answer is fixed.
//!
//! A read as of `T` must give the same answer every time it is asked, so
//! it may begin only once no commit at or below `T` can still appear
//! (Spanner's "safe time"). Three sources of such commits, and what
//! closes each:
//!
//! 1. *Commits not yet stamped.* Under the store's write latch, where
//!    every timestamp is taken, the read raises the high-water mark to
//!    `T` (`commit_ts::serve`): every later stamp is above it. So that a
//!    read never pushes commits into the future, it first waits until the
//!    clock's `earliest` has passed `T` — as a commit waits out its own
//!    timestamp — and a `T` further ahead than the lock timeout is refused.
//!    Waiting for `earliest` also covers a crash that loses the raised
//!    mark (no later commit was durable): after a restart the clock's
//!    `latest`, hence every new stamp, is past the true time, which was
//!    past `T` when the read began.
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
//! Opened read-only, nothing commits: no mark to raise, nothing in
//! flight; a prepared transaction at or below `T` is refused at once, its
//! decision being out of reach.
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
    let deadline = opts.lock_timeout.map(|t| Deadline::after(clock, t));
    wait_past(inner, ts, opts.lock_timeout)?;
    let pending = serve(inner, ts)?;
    if !pending.is_empty() {
        inner
            .txns
            .waits()
            .wait_finished(&pending, inner.txns.manager().clog(), deadline)?;
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

/// Waits until the clock's `earliest` has passed `ts` (source 1).
fn wait_past(inner: &Core, ts: Timestamp, limit: Option<Duration>) -> Result<()> {
    let clock = &*inner.engine.opts().clock.0;
    let reading = match clock::read(clock) {
        Ok(r) => r,
        Err(e) => {
            let high = commit_ts::high_water(&mut inner.engine.store().read().view)?;
            return if ts <= high { Ok(()) } else { Err(e) };
        }
    };
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

/// Under the write latch: raises the high-water mark to `ts` (logged, not
/// forced: a later commit's flush carries it) and returns the running
/// transactions that may still commit at or below `ts` (sources 2 and 3).
fn serve(inner: &Core, ts: Timestamp) -> Result<Vec<Xid>> {
    if inner.engine.opts().read_only {
        return serve_read_only(inner, ts);
    }
    let mut w = inner.engine.store().write();
    commit_ts::serve(&mut w.mtr, ts)?;
    let running = inner.txns.manager().snapshot();
    let mut pending = Vec::new();
    for &x in running.xip.iter() {
        if commit_ts::lookup(&mut w.mtr, x)?.is_some_and(|t| t <= ts) {
            pending.push(x);
        }
    }
    for e in prepare::load(&mut w.mtr)? {
        if e.prepare_ts <= ts {
            pending.push(e.xid);
        }
    }
    w.commit(Kind::Pages, Op::Timestamp as u8, Xid::NONE)?;
    Ok(pending)
}

/// `serve` on a database opened read-only: nothing commits while it is
/// open, so there is no mark to raise and no commit in flight; but a
/// transaction recovered prepared at or below `ts` may commit there after
/// it closes, and no decision can come meanwhile: refused at once.
fn serve_read_only(inner: &Core, ts: Timestamp) -> Result<Vec<Xid>> {
    let undecided: Vec<String> = prepare::load(&mut inner.engine.store().read().view)?
        .into_iter()
        .filter(|e| e.prepare_ts <= ts)
        .map(|e| format!("{} (prepared at {})", e.gid, e.prepare_ts))
        .collect();
    if undecided.is_empty() {
        return Ok(Vec::new());
    }
    Err(Error::TimestampRefused {
        reason: format!(
            "a read as of {ts} waits for the decision on {}, which a read-only open cannot take",
            undecided.join(", ")
        ),
    })
}
