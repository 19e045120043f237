//! Apply with an index: the position in a caller's log (a Raft log, say)
//! up to which this database holds the caller's entries.
//!
//! A replica applies its log's entries in order, and after a crash must
//! know exactly which ones its database holds, to replay the rest. So the
//! index goes into the same mini-transaction as what the entry changed —
//! the commit record of a transaction (`Transaction::set_applied_index`,
//! with `commit`, `commit_at` or `prepare`), or a record of its own for an
//! entry that changes nothing else (`Db::set_applied_index`) — and redo
//! restores both or neither: `Db::applied_index` after any crash names
//! the last entry whose effects are all there. An index must rise (Raft's
//! do): one at or below the one recorded is refused with
//! `Error::IndexRefused`, changing nothing, under the same latch that
//! records it, so two appliers cannot interleave out of order.
//!
//! ```text
//!  meta: APPLIED_INDEX u64 LE — 0 until an index is first recorded
//! ```

use crate::buffer::mtr::{Mtr, PageAccess};
use crate::codec::{put_u64, u64_at};
use crate::error::{Error, Result};
use crate::store::meta::{APPLIED_INDEX, META};

/// The index recorded last (0: none).
pub fn get(acc: &mut impl PageAccess) -> Result<u64> {
    acc.with_page(META, |m| u64_at(m, APPLIED_INDEX).unwrap_or(0))
}

/// Records `index` in `mtr`, the mini-transaction of what the entry
/// changed; refused unless above the index recorded.
pub(crate) fn record(mtr: &mut Mtr<'_>, index: u64) -> Result<()> {
    let applied = get(mtr)?;
    if index <= applied {
        return Err(Error::IndexRefused { index, applied });
    }
    let m = mtr.page_mut_in(META, &[(APPLIED_INDEX, APPLIED_INDEX + 8)])?;
    put_u64(m, APPLIED_INDEX, index);
    Ok(())
}
