//! The change readers (`changes`) a database has: what log each still needs, which a
//! checkpoint recycled past, and the wakeup a commit gives them.
//!
//! A checkpoint recycles the log under this registry's lock, so a reader
//! registering (and checking that its log is there) and a recycle never
//! interleave: either the reader sees the segments gone and fails at once,
//! or the checkpoint sees the reader and keeps them — unless the reader is
//! further behind than its bound, and then it is marked lost in the same
//! step, so its next read fails instead of skipping what was removed. A
//! reader's hold on the history horizon lives here too, so that a reader
//! marked lost lets history go at once, not only when it is next read or
//! dropped.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::ids::Lsn;
use crate::mvcc::history::Hold;
use crate::sync::{Condvar, Mutex};

#[derive(Default)]
struct State {
    next_id: u64,
    /// Each registered reader's restart LSN (the oldest log it needs) and
    /// its hold on the history horizon.
    held: BTreeMap<u64, (Lsn, Hold)>,
    /// Readers a checkpoint recycled past, with the oldest LSN it kept.
    lost: BTreeMap<u64, Lsn>,
}

/// The change readers of one database.
#[derive(Default)]
pub(crate) struct Registry {
    state: Mutex<State>,
    /// Bumped at every commit and decision on a prepared transaction.
    /// A mutex of its own: a commit never waits for a checkpoint's
    /// recycle, which holds `state` across its file removals.
    seq: Mutex<u64>,
    wake: Condvar,
}

impl Registry {
    /// Registers a reader needing the log from `at` and the history
    /// `hold` keeps, if the log still holds `at`: `oldest` lists where the
    /// log starts now.
    pub(crate) fn register(
        &self,
        at: Lsn,
        hold: Hold,
        oldest: impl FnOnce() -> Result<Lsn>,
    ) -> Result<u64> {
        let mut s = self.state.lock();
        let first = oldest()?;
        if at < first {
            return Err(Error::ChangesLost {
                from: at,
                oldest: first,
            });
        }
        s.next_id += 1;
        let id = s.next_id;
        s.held.insert(id, (at, hold));
        Ok(id)
    }

    /// Reader `id` now needs the log only from `at` (never moves back),
    /// and the history from `hold` on (when given, and later than the one
    /// it replaces: taken before the old one drops, so the horizon never
    /// passes both).
    pub(crate) fn advance(&self, id: u64, at: Lsn, hold: Option<Hold>) {
        let mut s = self.state.lock();
        if let Some((h, kept)) = s.held.get_mut(&id) {
            *h = (*h).max(at);
            if let Some(new) = hold.filter(|n| n.ts() > kept.ts()) {
                *kept = new;
            }
        }
    }

    /// Forgets reader `id`.
    pub(crate) fn unregister(&self, id: u64) {
        let mut s = self.state.lock();
        s.held.remove(&id);
        s.lost.remove(&id);
    }

    /// If a checkpoint recycled log reader `id` needed: the oldest LSN
    /// kept then.
    pub(crate) fn lost(&self, id: u64) -> Option<Lsn> {
        self.state.lock().lost.get(&id).copied()
    }

    /// The checkpoint's recycle: `recycle(bound)` removes the segments
    /// before `bound`, and `oldest` lists where the log then starts. The
    /// bound is `redo`, held back to every reader no more than `limit`
    /// bytes behind `end`; a reader whose log went anyway is marked lost —
    /// also when the recycle fails part way, having removed some segments
    /// (the error is returned after), so that such a reader's next read is
    /// `ChangesLost`, never a log that ends in a gap.
    pub(crate) fn recycle(
        &self,
        redo: Lsn,
        end: Lsn,
        limit: u64,
        recycle: impl FnOnce(Lsn) -> Result<()>,
        oldest: impl FnOnce() -> Result<Lsn>,
    ) -> Result<()> {
        let mut s = self.state.lock();
        let bound = s
            .held
            .values()
            .map(|(at, _)| *at)
            .filter(|at| end.0.saturating_sub(at.0) <= limit)
            .fold(redo, Lsn::min);
        assert!(bound <= redo, "recycling past the redo point");
        let removed = recycle(bound);
        // Where the log starts now, whatever the recycle managed. If even
        // that cannot be listed, every reader behind the bound is taken
        // as lost: the segments before it may be gone.
        let oldest = match oldest() {
            Ok(o) => o,
            Err(e) => {
                Self::mark_lost(&mut s, bound);
                return Err(removed.err().unwrap_or(e));
            }
        };
        Self::mark_lost(&mut s, oldest);
        removed
    }

    /// Marks lost (dropping their holds) the readers needing log before
    /// `oldest`.
    fn mark_lost(s: &mut State, oldest: Lsn) {
        let gone: Vec<u64> = s
            .held
            .iter()
            .filter(|(_, (at, _))| *at < oldest)
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            // Its hold on the history drops with it.
            s.held.remove(&id);
            s.lost.insert(id, oldest);
        }
    }

    /// The number of commits and decisions so far (for `wait`).
    pub(crate) fn seq(&self) -> u64 {
        *self.seq.lock()
    }

    /// A commit or a decision on a prepared transaction was published.
    pub(crate) fn notify(&self) {
        let mut s = self.seq.lock();
        *s = s.wrapping_add(1);
        self.wake.notify_all();
    }

    /// Waits up to `d` for a commit after the one `seen` counted.
    pub(crate) fn wait(&self, seen: u64, d: Duration) {
        let mut s = self.seq.lock();
        if *s == seen {
            let _ = self.wake.wait_for(&mut s, d);
        }
    }
}
