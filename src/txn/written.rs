//! The writes of a transaction in doubt, read back from the heap.
//!
//! A prepared transaction keeps no list of what it wrote: its writes are
//! its xid on the versions themselves (`prepare`). Its row locks mean no
//! one has written over them, so for each key it wrote, the newest
//! version is its own (xmin: put) or carries it as the deleter (xmax:
//! delete). An export's snapshot walks a table's index once, keeps the
//! keys whose newest version names one of the transactions asked about,
//! and reads each key as that transaction sees it — the one visibility
//! function, with the transaction as `me` — which gives its final value,
//! or `None` for a delete, however many times it wrote the key.
//!
//! It does not see a table the transaction created, dropped or renamed:
//! only the tables the snapshot sees are walked. So the export asks
//! first whether any of them did ([`Transaction::tables_changed_by`]: a
//! catalog row whose newest version names it) and refuses rather than
//! carry a partial write set (the export's essay).

use std::ops::Bound;

use super::Transaction;
use crate::btree::{self, Dir};
use crate::catalog::{self, Table};
use crate::error::Result;
use crate::ids::Xid;
use crate::limits::SCAN_BATCH;
use crate::mvcc::chain;

/// One write of a transaction in doubt.
pub(crate) struct Written {
    pub xid: Xid,
    pub key: Vec<u8>,
    /// `None`: the key was deleted.
    pub value: Option<Vec<u8>>,
}

impl Transaction {
    /// A table name whose catalog row one of `xids` created, dropped or
    /// renamed (its newest version names it as xmin or xmax), with that
    /// xid: the first in name order, if any.
    pub(crate) fn tables_changed_by(&self, xids: &[Xid]) -> Result<Option<(Xid, String)>> {
        let inner = self.core();
        let mut r = inner.engine.store().read();
        for (name, head) in catalog::rows(&mut r.view)? {
            let Some(v) = chain::Cursor::new(head).next(&mut r.view)? else {
                continue;
            };
            if let Some(&x) = xids.iter().find(|&&x| x == v.xmin || x == v.xmax) {
                return Ok(Some((x, String::from_utf8_lossy(&name).into_owned())));
            }
        }
        Ok(None)
    }

    /// The writes of the transactions `xids` to `table`, in key order.
    pub(crate) fn writes_of(&self, table: &Table, xids: &[Xid]) -> Result<Vec<Written>> {
        let snap = self.snapshot.clone();
        let Some(t) = self.table_for_read(table, &snap, 0)? else {
            return Ok(Vec::new());
        };
        let inner = self.core();
        let mut out = Vec::new();
        let mut lo: Bound<Vec<u8>> = Bound::Unbounded;
        loop {
            let mut batch = Vec::new();
            let mut r = inner.engine.store().read();
            let bounds = (lo.as_ref().map(Vec::as_slice), Bound::Unbounded);
            let done = btree::range_with(
                &mut r.view,
                t.root,
                bounds,
                Dir::Forward,
                SCAN_BATCH,
                |k, e| batch.push((k.to_vec(), chain::tid_of(e))),
            )?;
            // Read under the latch the entries were fetched under: vacuum
            // removes nothing meanwhile.
            for (key, tid) in &batch {
                let head = chain::valid(&r.view, *tid)?;
                let Some(v) = chain::Cursor::new(head).next(&mut r.view)? else {
                    continue;
                };
                let Some(&x) = xids.iter().find(|&&x| x == v.xmin || x == v.xmax) else {
                    continue;
                };
                let mut unseen = Vec::new();
                let value = chain::read_visible(
                    &mut r.view,
                    head,
                    &snap,
                    x,
                    &self.statuses(),
                    &mut unseen,
                )?;
                out.push(Written {
                    xid: x,
                    key: key.clone(),
                    value,
                });
            }
            drop(r);
            match batch.pop() {
                Some((k, _)) if !done => lo = Bound::Excluded(k),
                _ => break,
            }
        }
        Ok(out)
    }
}
