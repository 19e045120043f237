//! The transaction system of one database: what all its transactions
//! share — xids, snapshots and the commit log (`TxnManager`), row-lock
//! waits, SSI's graph and key marks, the ledger of writers whose versions
//! vacuum removed, and the prepared transactions — and `Core`, the engine
//! and this system together, which a `Db` and its transactions hold.

use std::sync::Arc;

use super::locks::LockWaits;
use super::prepare::Prepared;
use super::ssi::{KeyMarks, Ssi, SsiLock};
use crate::engine::Engine;
use crate::mvcc::history::History;
use crate::mvcc::ledger::Ledger;
use crate::mvcc::manager::TxnManager;

/// Shared state of every transaction of one database.
pub(crate) struct TxnSystem {
    manager: TxnManager,
    waits: LockWaits,
    ssi: SsiLock,
    /// SSI's key marks, taken by reads without the `ssi` lock.
    marks: Arc<KeyMarks>,
    /// Writers of versions vacuum removed that a serializable reader
    /// would have skipped.
    ledger: Ledger,
    /// Prepared transactions waiting for a decision.
    prepared: Prepared,
    /// Running writers of each table, whom a drop or rename waits for.
    writers: super::tables::Writers,
    /// The history horizon and the reads as of a timestamp holding it.
    history: History,
    /// The applied log index as reported (`txn::applied`).
    applied: Arc<super::applied::Published>,
}

impl TxnSystem {
    /// A system handing out xids from `manager`, with no transaction yet,
    /// serving reads as of a timestamp from `history` on.
    pub(crate) fn new(manager: TxnManager, history: History, applied: u64) -> TxnSystem {
        let ssi = Ssi::default();
        TxnSystem {
            manager,
            waits: LockWaits::default(),
            marks: ssi.marks(),
            ssi: SsiLock::new(ssi),
            ledger: Ledger::default(),
            prepared: Prepared::default(),
            writers: Default::default(),
            history,
            applied: Arc::new(super::applied::Published::new(applied)),
        }
    }

    /// Xids, snapshots, the commit log.
    pub(crate) fn manager(&self) -> &TxnManager {
        &self.manager
    }

    /// Waits for row locks (and deadlock detection).
    pub(crate) fn waits(&self) -> &LockWaits {
        &self.waits
    }

    /// SSI's graph, behind its lock.
    pub(crate) fn ssi(&self) -> &SsiLock {
        &self.ssi
    }

    /// SSI's key marks.
    pub(crate) fn marks(&self) -> &Arc<KeyMarks> {
        &self.marks
    }

    /// Writers of versions vacuum removed.
    pub(crate) fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The prepared transactions.
    pub(crate) fn prepared(&self) -> &Prepared {
        &self.prepared
    }

    /// The applied log index as reported.
    pub(crate) fn applied(&self) -> &Arc<super::applied::Published> {
        &self.applied
    }

    /// The history horizon and the reads as of a timestamp.
    pub(crate) fn history(&self) -> &History {
        &self.history
    }

    /// The running writers of each table.
    pub(crate) fn writers(&self) -> &super::tables::Writers {
        &self.writers
    }
}

/// A database's engine and the transaction system on it: what its `Db`
/// handles and its transactions share.
pub(crate) struct Core {
    pub(crate) engine: Engine,
    pub(crate) txns: TxnSystem,
    /// The catalog's root (fixed for the database's life).
    pub(crate) catalog: crate::ids::PageId,
    /// The change readers, and their wakeup at each commit.
    pub(crate) changes: super::change_readers::Registry,
}
