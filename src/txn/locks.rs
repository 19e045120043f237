//! Row-lock waits and deadlock detection.
//!
//! A row is locked by the uncommitted transaction whose xid stands on its
//! newest version (as creator or deleter), as in PostgreSQL: there is no
//! lock table to keep in sync with the heap. A writer that meets such a
//! version waits here until that transaction finishes, bounded by the lock
//! timeout.
//!
//! Each waiting transaction waits for exactly one other, so the wait-for
//! graph is a set of chains; before waiting, the waiter follows the chain
//! from the holder and fails with `Deadlock` if it leads back to itself.
//! The check and the insertion of the edge happen under one mutex, so of
//! two transactions closing a cycle the second always sees the first.

use std::collections::HashMap;
use std::time::Duration;

use crate::sync::{AtomicU64, Condvar, Mutex, Ordering};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::ids::Xid;
use crate::limits::{LOCK_WAIT_SLICE, WAIT_CHAIN_MAX};

/// When a lock wait gives up, on a clock's monotonic time (`Options::clock`).
#[derive(Clone, Copy)]
pub struct Deadline<'a> {
    clock: &'a dyn Clock,
    at: Duration,
}

impl<'a> Deadline<'a> {
    /// `timeout` from now on `clock`.
    pub fn after(clock: &'a dyn Clock, timeout: Duration) -> Deadline<'a> {
        Deadline {
            clock,
            at: clock.monotonic().saturating_add(timeout),
        }
    }

    pub(crate) fn remaining(&self) -> Duration {
        self.at.saturating_sub(self.clock.monotonic())
    }
}
use crate::mvcc::{Status, StatusOf};

/// The wait-for graph.
#[derive(Default)]
pub struct LockWaits {
    edges: Mutex<HashMap<Xid, Xid>>,
    wake: Condvar,
    /// Reads as of a timestamp waiting in `wait_finished` (changed only
    /// under `edges`' lock, so `finished` never misses one).
    readers: AtomicU64,
}

impl LockWaits {
    /// Blocks `me` until `holder` finishes. `Deadlock` if `holder` waits
    /// (transitively) for `me`; `LockTimeout` past `deadline`.
    pub fn wait_for(
        &self,
        me: Xid,
        holder: Xid,
        clog: &impl StatusOf,
        deadline: Option<Deadline<'_>>,
    ) -> Result<()> {
        assert_ne!(me, holder, "a transaction never waits for itself");
        let mut edges = self.edges.lock();
        let mut h = holder;
        for _ in 0..WAIT_CHAIN_MAX {
            if h == me {
                return Err(Error::Deadlock);
            }
            match edges.get(&h) {
                Some(&next) => h = next,
                None => break,
            }
        }
        edges.insert(me, holder);
        let result = loop {
            if clog.status(holder) != Status::InProgress {
                break Ok(());
            }
            match deadline {
                Some(d) => {
                    let left = d.remaining();
                    if left.is_zero() {
                        break Err(Error::LockTimeout);
                    }
                    // In slices: the deadline is on the database's clock,
                    // which need not be this thread's.
                    self.wake.wait_for(&mut edges, left.min(LOCK_WAIT_SLICE));
                }
                None => self.wake.wait(&mut edges),
            }
        };
        edges.remove(&me);
        result
    }

    /// Blocks until none of `xids` is in progress in `clog` (a read as of
    /// a timestamp waiting for the commits at or before it to finish).
    /// `LockTimeout` past `deadline`. Not a lock: no edge, no deadlock to
    /// find (a reader holds nothing anyone waits for).
    pub fn wait_finished(
        &self,
        xids: &[Xid],
        clog: &impl StatusOf,
        deadline: Option<Deadline<'_>>,
    ) -> Result<()> {
        let mut edges = self.edges.lock();
        self.readers.fetch_add(1, Ordering::Relaxed);
        let r = self.wait_finished_locked(xids, clog, deadline, &mut edges);
        self.readers.fetch_sub(1, Ordering::Relaxed);
        r
    }

    fn wait_finished_locked(
        &self,
        xids: &[Xid],
        clog: &impl StatusOf,
        deadline: Option<Deadline<'_>>,
        edges: &mut crate::sync::MutexGuard<'_, HashMap<Xid, Xid>>,
    ) -> Result<()> {
        while xids.iter().any(|&x| clog.status(x) == Status::InProgress) {
            match &deadline {
                Some(d) => {
                    let left = d.remaining();
                    if left.is_zero() {
                        return Err(Error::LockTimeout);
                    }
                    self.wake.wait_for(edges, left.min(LOCK_WAIT_SLICE));
                }
                None => {
                    self.wake.wait_for(edges, LOCK_WAIT_SLICE);
                }
            }
        }
        Ok(())
    }

    /// Wakes waiters after a transaction finished (its outcome must already
    /// be published in the commit log).
    pub fn finished(&self) {
        let edges = self.edges.lock();
        if !edges.is_empty() || self.readers.load(Ordering::Relaxed) > 0 {
            self.wake.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{FixedEpsilon, SimClock, Timestamp};
    use crate::mvcc::clog::Clog;
    use std::sync::Arc;
    use std::time::Duration;

    static REAL: FixedEpsilon = FixedEpsilon(Duration::ZERO);

    /// A lock timeout is measured on the database's clock: on a simulated
    /// one it expires when the simulation moves time, not before.
    #[test]
    fn a_lock_timeout_follows_the_simulated_clock() {
        let clog = Arc::new(Clog::new(Vec::new(), Xid(1)));
        let w = Arc::new(LockWaits::default());
        let clock = SimClock::new(Timestamp::from_nanos(1));
        let (c2, w2, clock2) = (clog.clone(), w.clone(), clock.clone());
        let t = std::thread::spawn(move || {
            let d = Deadline::after(&clock2, Duration::from_secs(3600));
            w2.wait_for(Xid(2), Xid(1), c2.as_ref(), Some(d))
        });
        while w.edges.lock().is_empty() {
            std::thread::yield_now();
        }
        clock.advance(Duration::from_secs(3600));
        // Bounded: a wait on the wrong clock would last an hour.
        for _ in 0..2000 {
            if t.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(t.is_finished(), "the waiter did not time out");
        let r = t.join().expect("join");
        assert!(matches!(r, Err(Error::LockTimeout)), "{r:?}");
    }

    #[test]
    fn waiter_wakes_when_holder_finishes() {
        let clog = Arc::new(Clog::new(Vec::new(), Xid(1)));
        let w = Arc::new(LockWaits::default());
        let (c2, w2) = (clog.clone(), w.clone());
        let t = std::thread::spawn(move || w2.wait_for(Xid(2), Xid(1), c2.as_ref(), None));
        std::thread::sleep(Duration::from_millis(50));
        clog.set(Xid(1), Status::Committed);
        w.finished();
        t.join().expect("join").expect("wait succeeds");
    }

    #[test]
    fn cycle_is_detected_and_timeout_fires() {
        let clog = Arc::new(Clog::new(Vec::new(), Xid(1)));
        let w = Arc::new(LockWaits::default());
        let (c2, w2) = (clog.clone(), w.clone());
        let t = std::thread::spawn(move || {
            w2.wait_for(
                Xid(1),
                Xid(2),
                c2.as_ref(),
                Some(Deadline::after(&REAL, Duration::from_secs(5))),
            )
        });
        while w.edges.lock().is_empty() {
            std::thread::yield_now();
        }
        let r = w.wait_for(Xid(2), Xid(1), clog.as_ref(), None);
        assert!(matches!(r, Err(Error::Deadlock)), "{r:?}");
        let r = w.wait_for(
            Xid(3),
            Xid(2),
            clog.as_ref(),
            Some(Deadline::after(&REAL, Duration::from_millis(20))),
        );
        assert!(matches!(r, Err(Error::LockTimeout)), "{r:?}");
        clog.set(Xid(2), Status::Aborted);
        w.finished();
        t.join().expect("join").expect("first waiter proceeds");
    }
}
