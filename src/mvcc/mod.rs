//! Multi-version concurrency control: who may see which version.
//!
//! - [`manager`]: xids, running transactions, snapshots.
//! - [`clog`]: the commit log, in memory and in pages.
//! - [`commit_ts`]: commit timestamps, beside the commit log.
//! - [`snapshot`]: snapshots and `visible`, the one visibility rule.
//! - [`chain`]: walking a key's versions to the visible one.
//! - [`history`]: reads as of a timestamp, and the history they need.
//! - [`ledger`]: writers of versions vacuum removed that a serializable
//!   reader would have skipped.

pub mod chain;
pub mod clog;
pub mod commit_ts;
pub mod history;
pub mod ledger;
pub mod manager;
pub mod snapshot;

pub use snapshot::{visible, Seen, Snapshot, Status, StatusOf};
