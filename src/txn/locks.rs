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
use std::time::Instant;

use crate::sync::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::ids::Xid;
use crate::limits::WAIT_CHAIN_MAX;
use crate::mvcc::{Status, StatusOf};

/// The wait-for graph.
#[derive(Default)]
pub struct LockWaits {
    edges: Mutex<HashMap<Xid, Xid>>,
    wake: Condvar,
}

impl LockWaits {
    /// Blocks `me` until `holder` finishes. `Deadlock` if `holder` waits
    /// (transitively) for `me`; `LockTimeout` past `deadline`.
    pub fn wait_for(
        &self,
        me: Xid,
        holder: Xid,
        clog: &impl StatusOf,
        deadline: Option<Instant>,
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
                    if self.wake.wait_until(&mut edges, d).timed_out()
                        && clog.status(holder) == Status::InProgress
                    {
                        break Err(Error::LockTimeout);
                    }
                }
                None => self.wake.wait(&mut edges),
            }
        };
        edges.remove(&me);
        result
    }

    /// Wakes waiters after a transaction finished (its outcome must already
    /// be published in the commit log).
    pub fn finished(&self) {
        let edges = self.edges.lock();
        if !edges.is_empty() {
            self.wake.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::clog::Clog;
    use std::sync::Arc;
    use std::time::Duration;

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
                Some(Instant::now() + Duration::from_secs(5)),
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
            Some(Instant::now() + Duration::from_millis(20)),
        );
        assert!(matches!(r, Err(Error::LockTimeout)), "{r:?}");
        clog.set(Xid(2), Status::Aborted);
        w.finished();
        t.join().expect("join").expect("first waiter proceeds");
    }
}
