//! Checkpoints: the redo point moves forward, so recovery replays less
//! and the log before it can go.
//!
//! Order matters (FORMAT.md §7): the redo point is taken first
//! (`Store::begin_checkpoint`), then every page changed before it is
//! written and fsynced (`BufferPool::flush_all` waits for writes already
//! under way), the log is made durable to the redo point, and only then
//! does `CONTROL` name it; segments before it are recycled and the data
//! file is cut to the pages in use last.

use crate::control::{self, Control};
use crate::error::Result;
use crate::ids::Lsn;
use crate::options::RacePoint;
use crate::txn::Core;

/// Writes every dirty page, records a new redo point in `CONTROL`, drops
/// the log segments before it and cuts the data file to the pages in use.
///
/// Traced as the span `checkpoint` (target `strata::maintenance`) with the
/// database's `dir`; `redo` (the new redo point's LSN) and
/// `pages_flushed` are recorded as the work reaches them.
pub(crate) fn run(inner: &Core) -> Result<()> {
    let span = tracing::info_span!(
        target: "strata::maintenance",
        "checkpoint",
        dir = %inner.engine.dir().display(),
        redo = tracing::field::Empty,
        pages_flushed = tracing::field::Empty,
    );
    let _in = span.enter();
    inner.engine.writable()?;
    let _one = inner.engine.checkpoint_lock();
    let store = inner.engine.store();
    store.wal.check()?;
    let redo = store.begin_checkpoint()?;
    // LSN 0 in the control file marks an unfinished creation.
    assert!(
        redo > Lsn(0),
        "a checkpoint's redo point is past the log's first header"
    );
    span.record("redo", redo.0);
    let next_xid = inner.txns.manager().high_water();
    inner.engine.race(RacePoint::CheckpointFlush);
    let flushed = store.pool.flush_all()?;
    span.record("pages_flushed", flushed as u64);
    store.wal.flush(redo, true)?;
    let r = control::write(
        inner.engine.vfs(),
        inner.engine.dir(),
        &Control { redo, next_xid },
    );
    store.wal.fail(r)?;
    // Change readers hold back the log they still need, up to their bound.
    let limit = inner.engine.opts().change_retention_bytes;
    inner.changes.recycle(
        redo,
        store.wal.end(),
        limit,
        |bound| store.wal.recycle(bound).map(|_| ()),
        || store.wal.oldest(),
    )?;
    store.cut_file()
}
