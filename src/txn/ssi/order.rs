//! The SSI graph behind its lock, with the two steps whose order against
//! the MVCC manager the module's essay argues ("Order against MVCC"):
//!
//! ```text
//!   begin:   ┌ graph lock ─────────────────────────────┐
//!            │ register (counter → s) · MVCC snapshot  │
//!            └─────────────────────────────────────────┘
//!   finish:  MVCC publish  →  graph lock: committed (counter → c) or aborted
//! ```
//! Transactions and the 2PC decision go through these two functions, so
//! the order lives in one place (and `tests/loom.rs` explores it).

use crate::ids::Xid;
use crate::mvcc::manager::TxnManager;
use crate::mvcc::{Snapshot, Status};
use crate::options::{Options, RacePoint};
use crate::sync::{Mutex, MutexGuard};

use super::{ReadSet, Ssi};

/// The SSI bookkeeping of one database, behind its lock.
pub struct SsiLock(Mutex<Ssi>);

impl SsiLock {
    /// Puts `ssi` behind the lock.
    pub fn new(ssi: Ssi) -> SsiLock {
        SsiLock(Mutex::new(ssi))
    }

    /// Locks the graph.
    pub fn lock(&self) -> MutexGuard<'_, Ssi> {
        self.0.lock()
    }

    /// Begins serializable transaction `token` (declared read-only if
    /// `read_only`): registers it with SSI and takes its MVCC snapshot
    /// (kept for vacuum) in one critical section of the graph's lock, so
    /// SSI's counter agrees with what the snapshot sees, and a read-only
    /// transaction watches exactly the writers the snapshot does not count
    /// as finished.
    pub fn begin(
        &self,
        manager: &TxnManager,
        token: u64,
        read_only: bool,
        opts: &Options,
    ) -> (ReadSet, Snapshot) {
        let mut ssi = self.lock();
        let reads = if read_only {
            ssi.begin_read_only(token)
        } else {
            ssi.begin(token)
        };
        opts.race(RacePoint::BeforeSnapshot);
        let snapshot = manager.begin(token, false, true);
        opts.race(RacePoint::AfterSnapshot);
        drop(ssi);
        (reads, snapshot)
    }

    /// Publishes the outcome of transaction `token` (writing as `xid`, if
    /// any) to MVCC, then reports it to SSI with its marks `reads` (`None`:
    /// not serializable). A commit must have passed [`Ssi::prepare`]
    /// first: from publication on, new snapshots see it, and SSI counts it
    /// as possibly before them by its commit start until it is counted
    /// committed here.
    pub fn finish(
        &self,
        manager: &TxnManager,
        token: u64,
        xid: Xid,
        outcome: Status,
        reads: Option<ReadSet>,
        opts: &Options,
    ) {
        manager.finish(token, xid, outcome);
        opts.race(RacePoint::Published);
        if let Some(reads) = reads {
            let mut ssi = self.lock();
            if outcome == Status::Committed {
                ssi.committed(token, reads);
            } else {
                ssi.aborted(token, reads);
            }
        }
    }
}
