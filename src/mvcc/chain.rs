//! Version chains: from a key's newest version along `prev` links to the
//! one a reader sees.

use super::snapshot::{visible, Seen, Snapshot, StatusOf};
use crate::buffer::mtr::PageAccess;
use crate::error::{Error, Result};
use crate::heap::{self, overflow, tuple::Tuple};
use crate::ids::{Tid, Xid};
use crate::limits::PAGE_SIZE;

/// Longest chain walked before the links are declared cyclic.
pub const CHAIN_MAX: usize = 1 << 24;

/// The tuple bytes of the version `snap` sees, starting at `head`.
pub fn find_visible(
    acc: &mut impl PageAccess,
    head: Tid,
    snap: &Snapshot,
    me: Xid,
    clog: &impl StatusOf,
) -> Result<Option<Vec<u8>>> {
    let mut cur = head;
    let mut steps = 0;
    while !cur.is_null() {
        let bytes = heap::read(acc, cur)?;
        let t = decode(acc, &bytes, cur)?;
        match visible(t.xmin, t.xmax, snap, me, clog) {
            Seen::Visible => return Ok(Some(bytes)),
            Seen::Deleted => return Ok(None),
            Seen::Invisible => cur = t.prev,
        }
        steps += 1;
        if steps > CHAIN_MAX {
            return Err(Error::corruption(
                acc.file(),
                head.page.0 as u64 * PAGE_SIZE as u64,
                "version chain does not end",
            ));
        }
    }
    Ok(None)
}

/// Decodes tuple bytes read from `tid`, reporting damage as corruption.
pub fn decode<'b>(acc: &impl PageAccess, bytes: &'b [u8], tid: Tid) -> Result<Tuple<'b>> {
    Tuple::decode(bytes).ok_or_else(|| {
        Error::corruption(
            acc.file(),
            tid.page.0 as u64 * PAGE_SIZE as u64,
            format!("tuple {tid} malformed"),
        )
    })
}

/// The value held by tuple bytes (reading overflow pages if needed).
pub fn value(acc: &mut impl PageAccess, bytes: &[u8], at: Tid) -> Result<Vec<u8>> {
    let t = decode(acc, bytes, at)?;
    match t.overflow() {
        None => Ok(t.body.to_vec()),
        Some(first) => overflow::read(acc, first, t.vlen as usize),
    }
}
