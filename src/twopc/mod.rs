//! Two-phase commit across several strata databases (shards): a
//! coordinator with its own durable decision log.
//!
//! The protocol is a sans-IO state machine (`Machine`) in the style of
//! etcd's raft: events in, a `Ready` of records to persist and messages
//! to send out. [`Coordinator`] is the thin loop that persists (fsync),
//! then delivers to [`Participant`]s — `Db` for a local shard. Tests drive
//! the machine directly to lose, duplicate, delay and reorder messages.
//!
//! What two-phase commit costs: after a participant votes yes and before
//! it hears the decision, its transaction is in doubt and holds its row
//! locks. If the coordinator is down in that window the locks stay held
//! (`Db::prepared_transactions` shows them) until the coordinator is
//! opened again and finishes the transaction — the protocol's known
//! blocking window. `Db::commit_prepared` / `Db::rollback_prepared` decide
//! by hand when the coordinator is gone for good.

mod coordinator;
pub(crate) mod log;
pub(crate) mod machine;
mod participant;

pub use coordinator::{Coordinator, Timing};
pub use machine::Outcome;
pub use participant::Participant;
