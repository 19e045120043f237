//! Xid allocation, the set of running transactions, and snapshot
//! acquisition.
//!
//! One mutex orders three things: handing out xids, publishing a
//! transaction's outcome (commit-log bits + removal from the running set),
//! and taking snapshots. So a snapshot sees a commit entirely or not at all.
//!
//! Xids are handed out lazily, at a transaction's first write; read-only
//! transactions never take one. Before xids past the logged high-water
//! mark are handed out, a new mark is logged, so a restart never reuses an
//! xid.

use crate::sync::Mutex;
use std::collections::{BTreeMap, BTreeSet};

use super::clog::Clog;
use super::snapshot::{Snapshot, Status};
use crate::error::Result;
use crate::ids::{Lsn, Xid};
use crate::limits::XID_BATCH;
use crate::redo::record::{Kind, Record};
use crate::wal::Wal;

/// What vacuum must preserve for one live transaction.
#[derive(Clone, Debug)]
pub struct View {
    /// The transaction's snapshot. A Read Committed transaction takes one
    /// per operation: this is its latest get's (`None` before its first),
    /// kept until the next operation replaces it, so vacuum never frees a
    /// version a get is reading.
    pub snapshot: Option<Snapshot>,
    /// Snapshots of a Read Committed transaction's scans still open, by
    /// pin id: a scan outlives the operations begun while it runs.
    pub pinned: Vec<(u64, Snapshot)>,
    /// Its xid, once it wrote.
    pub xid: Xid,
    /// Serializable: SSI takes edges from the versions it skips, so
    /// vacuum accounts for the writers it does not see (`vacuum`).
    pub serializable: bool,
    /// Snapshot or Serializable, and may write: its writes check first
    /// updater wins against its snapshot, so vacuum records in the ledger
    /// the creators of removed versions this snapshot does not see
    /// (`vacuum`, `mvcc::ledger`).
    pub writes: bool,
}

struct State {
    next: u64,
    high_water: u64,
    running: BTreeSet<Xid>,
    /// For each running xid, an LSN at or below its first log record (the
    /// log's end when it got its xid; 0 for one adopted at open, whose
    /// records may lie anywhere before): where a change reader must read
    /// from to see all of its writes (`Db::change_position`).
    first_lsn: BTreeMap<Xid, Lsn>,
    views: BTreeMap<u64, View>,
    next_token: u64,
    /// Running xids that changed the catalog (created, dropped or renamed
    /// a table).
    catalog_writers: BTreeSet<Xid>,
    /// Bumped when one of them commits, in the step that publishes it: a
    /// table resolved under a snapshot of one epoch resolves the same under
    /// any snapshot of the same epoch (a Read Committed transaction's cache).
    catalog_epoch: u64,
}

/// The transaction manager.
pub struct TxnManager {
    state: Mutex<State>,
    /// Commit statuses.
    pub clog: Clog,
}

impl TxnManager {
    /// Starts handing out xids at `next` (everything below may be in use).
    pub fn new(next: Xid, clog: Clog) -> TxnManager {
        let next = next.0.max(Xid::FIRST.0);
        TxnManager {
            state: Mutex::new(State {
                next,
                high_water: next,
                running: BTreeSet::new(),
                first_lsn: BTreeMap::new(),
                views: BTreeMap::new(),
                next_token: 0,
                catalog_writers: BTreeSet::new(),
                catalog_epoch: 0,
            }),
            clog,
        }
    }

    fn snapshot_locked(s: &State) -> Snapshot {
        let xmax = Xid(s.next);
        let xmin = s.running.first().copied().unwrap_or(xmax);
        Snapshot {
            xmin,
            xmax,
            xip: s.running.iter().copied().collect::<Vec<_>>().into(),
        }
    }

    /// A snapshot of this instant.
    pub fn snapshot(&self) -> Snapshot {
        Self::snapshot_locked(&self.state.lock())
    }

    /// Registers a new transaction; returns its token and, unless it is
    /// Read Committed, its snapshot.
    pub fn begin_new(&self, per_operation: bool) -> (u64, Snapshot) {
        let token = self.next_token();
        (token, self.begin(token, per_operation, false))
    }

    /// A fresh transaction token.
    pub fn next_token(&self) -> u64 {
        let mut s = self.state.lock();
        s.next_token += 1;
        s.next_token
    }

    /// Registers transaction `token` and takes its snapshot (kept for
    /// vacuum unless `per_operation`, Read Committed, whose operations
    /// register their own: [`Self::operation`], [`Self::pin`]).
    pub fn begin(&self, token: u64, per_operation: bool, serializable: bool) -> Snapshot {
        let mut s = self.state.lock();
        let snap = Self::snapshot_locked(&s);
        let view = View {
            snapshot: (!per_operation).then(|| snap.clone()),
            pinned: Vec::new(),
            xid: Xid::NONE,
            serializable,
            writes: !per_operation,
        };
        s.views.insert(token, view);
        snap
    }

    /// Declares transaction `token` read-only: it never writes, so vacuum
    /// keeps nothing for its writes' conflict checks. Until this is called
    /// vacuum counts it as a writer, which only keeps more.
    pub fn read_only(&self, token: u64) {
        if let Some(v) = self.state.lock().views.get_mut(&token) {
            v.writes = false;
        }
    }

    /// A snapshot for one operation of Read Committed transaction `token`,
    /// registered in the same step (vacuum gathering views in between
    /// would not know it): it stands for the transaction until its next
    /// operation. Costs no lock beyond the one any snapshot takes.
    pub fn operation(&self, token: u64) -> Snapshot {
        self.operation_at(token).0
    }

    /// [`Self::operation`], with the catalog epoch of the snapshot.
    pub fn operation_at(&self, token: u64) -> (Snapshot, u64) {
        let mut s = self.state.lock();
        let snap = Self::snapshot_locked(&s);
        if let Some(v) = s.views.get_mut(&token) {
            v.snapshot = Some(snap.clone());
        }
        (snap, s.catalog_epoch)
    }

    /// Records that `xid` changed the catalog: its commit starts a new
    /// catalog epoch.
    pub fn catalog_write(&self, xid: Xid) {
        self.state.lock().catalog_writers.insert(xid);
    }

    /// The catalog epoch of a snapshot taken now.
    pub fn catalog_epoch(&self) -> u64 {
        self.state.lock().catalog_epoch
    }

    /// A snapshot for a scan of Read Committed transaction `token`, held
    /// for vacuum until [`Self::unpin`] with the returned id.
    pub fn pin(&self, token: u64) -> (u64, Snapshot) {
        let (id, snap, _) = self.pin_at(token);
        (id, snap)
    }

    /// [`Self::pin`], with the catalog epoch of the snapshot.
    pub fn pin_at(&self, token: u64) -> (u64, Snapshot, u64) {
        let mut s = self.state.lock();
        s.next_token += 1;
        let id = s.next_token;
        let snap = Self::snapshot_locked(&s);
        if let Some(v) = s.views.get_mut(&token) {
            // A transaction holds as many pins as it has open scans.
            debug_assert!(v.pinned.iter().all(|(p, _)| *p != id));
            v.pinned.push((id, snap.clone()));
        }
        (id, snap, s.catalog_epoch)
    }

    /// Releases a scan's snapshot.
    pub fn unpin(&self, token: u64, id: u64) {
        let mut s = self.state.lock();
        if let Some(v) = s.views.get_mut(&token) {
            v.pinned.retain(|(p, _)| *p != id);
        }
    }

    /// Hands an xid to transaction `token`.
    pub fn assign(&self, token: u64, wal: &Wal) -> Result<Xid> {
        let mut s = self.state.lock();
        if s.next >= s.high_water {
            let mark = s.next + XID_BATCH;
            wal.append(&Record::bare(Kind::XidHighWater, Xid::NONE, mark))?;
            s.high_water = mark;
        }
        let xid = Xid(s.next);
        s.next += 1;
        s.running.insert(xid);
        // Its first record is appended after this, so at or past the end.
        s.first_lsn.insert(xid, wal.end());
        if let Some(v) = s.views.get_mut(&token) {
            v.xid = xid;
        }
        Ok(xid)
    }

    /// Registers a prepared transaction found at open, writing as `xid`
    /// (below the next xid; `Xid::NONE` if it wrote nothing) and holding no
    /// snapshot; returns its token.
    pub fn adopt(&self, xid: Xid) -> u64 {
        let mut s = self.state.lock();
        s.next_token += 1;
        let token = s.next_token;
        // A read-only transaction has no xid to hold in progress, and
        // `finish` removes none for it: `Xid::NONE` in the running set would
        // stay there for good, the xmin of every later snapshot.
        if xid != Xid::NONE {
            s.running.insert(xid);
            s.first_lsn.insert(xid, Lsn(0));
            // Whether it changed the catalog is not recorded: count it as
            // if it did.
            s.catalog_writers.insert(xid);
        }
        s.views.insert(
            token,
            View {
                snapshot: None,
                pinned: Vec::new(),
                xid,
                serializable: false,
                writes: false,
            },
        );
        token
    }

    /// Publishes the outcome of `xid` (if any) and forgets transaction `token`.
    pub fn finish(&self, token: u64, xid: Xid, outcome: Status) {
        let mut s = self.state.lock();
        if xid != Xid::NONE {
            self.clog.set(xid, outcome);
            s.running.remove(&xid);
            s.first_lsn.remove(&xid);
            if s.catalog_writers.remove(&xid) && outcome == Status::Committed {
                s.catalog_epoch += 1;
            }
        }
        s.views.remove(&token);
    }

    /// `end()` (the log's end) and an LSN at or below the first log
    /// record of every transaction running then (`None` if none has
    /// written), read in one step with xids handed out: one that gets its
    /// xid later logs after the end read.
    pub fn oldest_first_lsn(&self, end: impl FnOnce() -> Lsn) -> (Option<Lsn>, Lsn) {
        let s = self.state.lock();
        (s.first_lsn.values().min().copied(), end())
    }

    /// Views of every live transaction, plus a fresh snapshot standing for
    /// every transaction that starts from now on.
    pub fn views(&self) -> (Vec<View>, Snapshot) {
        let s = self.state.lock();
        (
            s.views.values().cloned().collect(),
            Self::snapshot_locked(&s),
        )
    }

    /// Xids below this may have been handed out.
    pub fn high_water(&self) -> Xid {
        Xid(self.state.lock().high_water)
    }

    /// Number of transactions holding an xid that have not finished.
    pub fn running(&self) -> usize {
        self.state.lock().running.len()
    }

    /// Number of registered transactions.
    pub fn live(&self) -> usize {
        self.state.lock().views.len()
    }

    /// The commit log, shared.
    pub fn clog(&self) -> &Clog {
        &self.clog
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::RealFs;
    use crate::mvcc::snapshot::StatusOf;
    use std::sync::Arc;

    #[test]
    fn snapshot_sees_a_commit_entirely_or_not() {
        let tmp = tempfile::tempdir().expect("tmp");
        let wal = Wal::resume(Arc::new(RealFs), tmp.path(), crate::ids::Lsn(0)).expect("wal");
        let m = TxnManager::new(Xid(1), Clog::new(Vec::new(), Xid(1)));
        let (t1, _) = m.begin_new(false);
        let x1 = m.assign(t1, &wal).expect("assign");
        let before = m.snapshot();
        assert!(before.xip.contains(&x1));
        m.finish(t1, x1, Status::Committed);
        let after = m.snapshot();
        assert!(
            !before.sees(x1, Xid::NONE, &m.clog),
            "old snapshot must not see a later commit"
        );
        assert!(after.sees(x1, Xid::NONE, &m.clog));
        assert_eq!(m.clog.status(x1), Status::Committed);
        assert_eq!(m.live(), 0);
    }

    // Guards against a Read Committed transaction's reads standing in
    // vacuum's views only as "now": each operation's snapshot must be
    // there, and a scan's for as long as it is pinned.
    #[test]
    fn read_committed_operations_register_their_snapshots() {
        let tmp = tempfile::tempdir().expect("tmp");
        let wal = Wal::resume(Arc::new(RealFs), tmp.path(), crate::ids::Lsn(0)).expect("wal");
        let m = TxnManager::new(Xid(1), Clog::new(Vec::new(), Xid(1)));
        let (rc, _) = m.begin_new(true);
        let view = |m: &TxnManager| m.views().0.into_iter().next().expect("one view");
        assert!(view(&m).snapshot.is_none(), "no operation yet");
        let scan = m.pin(rc);
        let get = m.operation(rc);
        let (w, _) = m.begin_new(false);
        let x = m.assign(w, &wal).expect("assign");
        m.finish(w, x, Status::Committed);
        let later = m.operation(rc);
        assert!(!get.sees(x, Xid::NONE, &m.clog) && later.sees(x, Xid::NONE, &m.clog));
        let v = view(&m);
        assert_eq!(v.snapshot.as_ref(), Some(&later), "the latest operation's");
        assert_eq!(v.pinned, vec![scan.clone()], "the scan's, while it runs");
        m.unpin(rc, scan.0);
        assert!(view(&m).pinned.is_empty());
    }

    #[test]
    fn xids_are_unique_and_high_water_stays_ahead() {
        let tmp = tempfile::tempdir().expect("tmp");
        let wal = Wal::resume(Arc::new(RealFs), tmp.path(), crate::ids::Lsn(0)).expect("wal");
        let m = TxnManager::new(Xid(1), Clog::new(Vec::new(), Xid(1)));
        let mut seen = BTreeSet::new();
        for _ in 0..3000 {
            let (t, _) = m.begin_new(false);
            let x = m.assign(t, &wal).expect("assign");
            assert!(seen.insert(x));
            assert!(x < m.high_water());
            m.finish(t, x, Status::Aborted);
        }
    }
}
