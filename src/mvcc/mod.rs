//! Multi-version concurrency control: who may see which version.
//!
//! - [`manager`]: xids, running transactions, snapshots.
//! - [`clog`]: the commit log, in memory and in pages.
//! - [`snapshot`]: snapshots and `visible`, the one visibility rule.
//! - [`chain`]: walking a key's versions to the visible one.

pub mod chain;
pub mod clog;
pub mod manager;
pub mod snapshot;

pub use snapshot::{visible, Seen, Snapshot, Status, StatusOf};
