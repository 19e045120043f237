//! Maintenance: the work a database does besides its transactions, each
//! piece a decision and a deed. `policy` decides when (pure functions of
//! counters and clocks, tested without a database); `worker` runs in the
//! background and asks it; `checkpoint`, `vacuum` and `compact` do the
//! work, whether the worker or the application calls them.

pub(crate) mod checkpoint;
pub(crate) mod compact;
pub(crate) mod dropped;
pub(crate) mod policy;
pub(crate) mod vacuum;
pub(crate) mod worker;
