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
use crate::error::{Error, Result};
use crate::ids::Lsn;
use crate::txn::Core;

/// Writes every dirty page, records a new redo point in `CONTROL`, drops
/// the log segments before it and cuts the data file to the pages in use.
pub(crate) fn run(inner: &Core) -> Result<()> {
    inner.engine.writable()?;
    let _one = inner.engine.checkpoint_lock();
    let store = inner.engine.store();
    if store.wal.is_poisoned() {
        return Err(Error::Poisoned);
    }
    let redo = store.begin_checkpoint()?;
    // LSN 0 in the control file marks an unfinished creation.
    assert!(
        redo > Lsn(0),
        "a checkpoint's redo point is past the log's first header"
    );
    let next_xid = inner.txns.mgr().high_water();
    store.pool.flush_all()?;
    store.wal.flush(redo, true)?;
    let r = control::write(
        inner.engine.vfs(),
        inner.engine.dir(),
        &Control { redo, next_xid },
    );
    store.wal.fail(r)?;
    store.wal.recycle(redo)?;
    store.cut_file()
}
