//! The background worker: flushes `Eventual` commits to the log, and
//! checkpoints and vacuums when the policy says so.
//!
//! Nobody waits for the worker's work, so nobody would hear of its
//! failures: it sorts each one (`sort`). Damage it cannot work past
//! poisons the database through the log's fail-stop (the next foreground
//! call returns `Error::Poisoned` naming it); a failure a later turn may
//! not meet again is kept for `Db::background_error` and retried after a
//! pause. Either way a `tracing` event says what happened.

use std::time::Duration;

use super::policy;
use crate::clock::Clock;
use crate::error::Error;
use crate::sync::{Condvar, Mutex};
use crate::txn::Core;

/// How the database tells its worker to stop, and what the worker keeps
/// for the database to report.
pub(crate) struct Worker {
    stop: Mutex<bool>,
    wake: Condvar,
    /// The last failure the worker worked past (`Db::background_error`).
    last_error: Mutex<Option<Error>>,
}

impl Worker {
    pub(crate) fn new() -> Worker {
        Worker {
            stop: Mutex::new(false),
            wake: Condvar::new(),
            last_error: Mutex::new(None),
        }
    }

    /// Tells the worker to stop at its next turn, and wakes it.
    pub(crate) fn stop(&self) {
        *self.stop.lock() = true;
        self.wake.notify_all();
    }

    /// The last failure the worker worked past, if any.
    pub(crate) fn last_error(&self) -> Option<Error> {
        self.last_error.lock().clone()
    }
}

/// What becomes of a failure of background work.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The database is poisoned already (by this work's own write or
    /// fsync, or by someone else's): only to be reported.
    Poisoned,
    /// An I/O error that changed nothing: a write or fsync on the
    /// durability path poisons the log itself before its error gets here,
    /// so what remains is a read, which a later turn may get through (and
    /// an unfinished mini-transaction puts its pages back as they were).
    Transient,
    /// Anything else: damage (`Corruption`, a page of the wrong type, an
    /// impossible value) or a failure the worker has no reason to expect.
    /// Working on would build on pages that contradict the log, and no
    /// caller would hear of it: fail-stop.
    Fatal,
}

/// Sorts a failure of background work (`Verdict`).
pub(crate) fn sort(e: &Error) -> Verdict {
    match e {
        Error::Poisoned { .. }
        | Error::CommitOutcomeUnknown { .. }
        | Error::PrepareOutcomeUnknown { .. } => Verdict::Poisoned,
        Error::Io { .. } => Verdict::Transient,
        _ => Verdict::Fatal,
    }
}

/// A piece of background work that failed for a passing reason waits
/// before its next try, longer each time it fails again.
#[derive(Default)]
struct Backoff {
    failures: u32,
    /// On the clock's monotonic time (`Clock::monotonic`).
    until: Option<Duration>,
}

impl Backoff {
    fn ready(&self, clock: &dyn Clock) -> bool {
        self.until.is_none_or(|t| clock.monotonic() >= t)
    }

    fn done(&mut self, ok: bool, tick: Duration, clock: &dyn Clock) {
        if ok {
            *self = Backoff::default();
        } else {
            self.failures = self.failures.saturating_add(1);
            self.until = Some(clock.monotonic() + policy::retry_after(self.failures, tick));
        }
    }
}

/// Reports a failure of background work `what` and acts on it
/// (`Verdict`); returns whether the work may be tried again.
fn met(inner: &Core, worker: &Worker, what: &'static str, e: Error) -> bool {
    let wal = &inner.engine.store().wal;
    match sort(&e) {
        Verdict::Poisoned => {
            let cause = wal.poison_cause();
            tracing::error!(
                target: "strata::maintenance",
                dir = %inner.engine.dir().display(),
                work = what,
                error = %e,
                cause = cause.as_deref().unwrap_or(""),
                "background {what} failed: the database is poisoned"
            );
            false
        }
        Verdict::Transient => {
            tracing::warn!(
                target: "strata::maintenance",
                dir = %inner.engine.dir().display(),
                work = what,
                error = %e,
                "background {what} failed; it will be tried again"
            );
            *worker.last_error.lock() = Some(e);
            true
        }
        Verdict::Fatal => {
            tracing::error!(
                target: "strata::maintenance",
                dir = %inner.engine.dir().display(),
                work = what,
                error = %e,
                "background {what} met damage it cannot work past: the database is poisoned"
            );
            wal.poison(&e);
            false
        }
    }
}

/// The background thread: log flushes, checkpoints (the first at once
/// when the open replayed the log), vacuum.
pub(crate) fn run(inner: &Core, worker: &Worker, replayed: bool) {
    let tick = if inner.engine.opts().durability == crate::options::Durability::Eventual {
        inner.engine.opts().flush_interval
    } else {
        Duration::from_millis(100)
    };
    // Timers run on the database's clock (a simulation's, in tests); the
    // tick itself is a real wait, for the thread has to sleep on something.
    let clock = &*inner.engine.opts().clock.0;
    let mut last_checkpoint = clock.monotonic();
    let mut checkpoint_due = replayed;
    let (mut checkpoint_wait, mut vacuum_wait) = (Backoff::default(), Backoff::default());
    loop {
        {
            let mut stop = worker.stop.lock();
            if *stop {
                return;
            }
            worker.wake.wait_for(&mut stop, tick);
            if *stop {
                return;
            }
        }
        let wal = &inner.engine.store().wal;
        if wal.is_poisoned() {
            continue;
        }
        // A failed write or fsync poisons the log itself; the event says so.
        if let Err(e) = wal.flush(wal.end(), true) {
            met(inner, worker, "log flush", e);
            continue;
        }
        let since_redo = wal.end().0.saturating_sub(inner.engine.store().redo().0);
        let opts = inner.engine.opts();
        if checkpoint_wait.ready(clock)
            && (checkpoint_due
                || policy::should_checkpoint(
                    clock.monotonic().saturating_sub(last_checkpoint),
                    opts.checkpoint_interval,
                    since_redo,
                    opts.checkpoint_wal_bytes,
                ))
        {
            let r = super::checkpoint::run(inner);
            let ok = r.is_ok();
            if let Err(e) = r {
                if !met(inner, worker, "checkpoint", e) {
                    continue;
                }
            }
            checkpoint_wait.done(ok, tick, clock);
            checkpoint_due = !ok && checkpoint_due;
            last_checkpoint = clock.monotonic();
        }
        let (dead, keys) = inner.engine.vacuum_due();
        if vacuum_wait.ready(clock) && policy::should_vacuum(dead, keys, opts.vacuum_threshold) {
            let r = super::vacuum::run(inner);
            let ok = r.is_ok();
            if let Err(e) = r {
                if !met(inner, worker, "vacuum", e) {
                    continue;
                }
            }
            vacuum_wait.done(ok, tick, clock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn damage_is_fatal_reads_are_transient_and_poison_is_only_reported() {
        let corrupt = Error::corruption(PathBuf::from("data"), 8192, "bad checksum".to_string());
        assert_eq!(sort(&corrupt), Verdict::Fatal);
        let read = Error::io("read", &PathBuf::from("data"), std::io::Error::other("EIO"));
        assert_eq!(sort(&read), Verdict::Transient);
        let poisoned = Error::Poisoned {
            cause: "fsync".to_string(),
        };
        assert_eq!(sort(&poisoned), Verdict::Poisoned);
    }
}
