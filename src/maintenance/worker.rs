//! The background worker: flushes `Eventual` commits to the log, and
//! checkpoints and vacuums when the policy says so.

use std::time::{Duration, Instant};

use super::policy;
use crate::sync::{Condvar, Mutex};
use crate::txn::Core;

/// How the database tells its worker to stop.
pub(crate) struct Worker {
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Worker {
    pub(crate) fn new() -> Worker {
        Worker {
            stop: Mutex::new(false),
            wake: Condvar::new(),
        }
    }

    /// Tells the worker to stop at its next turn, and wakes it.
    pub(crate) fn stop(&self) {
        *self.stop.lock() = true;
        self.wake.notify_all();
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
    let mut last_checkpoint = Instant::now();
    let mut checkpoint_due = replayed;
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
        // Errors here need no handling: a failed fsync or write has
        // poisoned the database, and the next foreground call reports it.
        let _ = wal.flush(wal.end(), true);
        let since_redo = wal.end().0.saturating_sub(inner.engine.store().redo().0);
        let opts = inner.engine.opts();
        if checkpoint_due
            || policy::should_checkpoint(
                last_checkpoint.elapsed(),
                opts.checkpoint_interval,
                since_redo,
                opts.checkpoint_wal_bytes,
            )
        {
            let _ = super::checkpoint::run(inner);
            checkpoint_due = false;
            last_checkpoint = Instant::now();
        }
        let (dead, keys) = inner.engine.vacuum_due();
        if policy::should_vacuum(dead, keys, opts.vacuum_threshold) {
            let _ = super::vacuum::run(inner);
        }
    }
}
