//! What a coordinator needs from each participant, and the local
//! implementation by `Db`.
//!
//! A participant runs the work of a global transaction under a gid, votes
//! by preparing it, and applies the decision. The work itself travels with
//! the prepare request: for a local database it is the open `Transaction`;
//! for a remote shard (the example server, later) it would be the request
//! that shard runs.

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::{Db, Transaction};

/// One shard taking part in two-phase commit.
pub trait Participant {
    /// The work a prepare request carries.
    type Work;

    /// Phase one: makes `work` durable under `gid` without committing it.
    /// `Ok` is a yes vote, with the prepare timestamp: the commit
    /// timestamp the coordinator picks is not below it. An error is a no.
    fn prepare(&self, gid: &str, work: Self::Work) -> Result<Timestamp>;

    /// Phase two: commits prepared `gid` at the coordinator's commit
    /// timestamp `ts` (`Timestamp::ZERO`: a decision logged without one;
    /// the participant stamps its own). `Error::UnknownTransaction` if
    /// there is none (for example, already committed).
    fn commit_prepared(&self, gid: &str, ts: Timestamp) -> Result<()>;

    /// Phase two: rolls back prepared `gid`; `Error::UnknownTransaction`
    /// as above.
    fn rollback_prepared(&self, gid: &str) -> Result<()>;

    /// The gids of the transactions it holds prepared (in doubt).
    fn in_doubt(&self) -> Result<Vec<String>>;
}

impl Participant for Db {
    type Work = Transaction;

    fn prepare(&self, gid: &str, work: Transaction) -> Result<Timestamp> {
        if work.db_id() != self.id() {
            return Err(Error::Unsupported(
                "preparing a transaction at a participant it does not belong to",
            ));
        }
        work.prepare(gid)
    }

    fn commit_prepared(&self, gid: &str, ts: Timestamp) -> Result<()> {
        if ts == Timestamp::ZERO {
            return Db::commit_prepared(self, gid);
        }
        Db::commit_prepared_at(self, gid, ts)
    }

    fn rollback_prepared(&self, gid: &str) -> Result<()> {
        Db::rollback_prepared(self, gid)
    }

    fn in_doubt(&self) -> Result<Vec<String>> {
        Ok(self
            .prepared_transactions()?
            .into_iter()
            .map(|p| p.gid)
            .collect())
    }
}
