//! `Db::export`: the cut (the module's essay), then the stream.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use super::format::{Header, StreamWriter};
use super::{ExportOptions, HashRange, SnapshotStats};
use crate::error::{Error, Result};
use crate::ids::Xid;
use crate::limits::EXPORT_CUT_ATTEMPTS;
use crate::mvcc::commit_ts;
use crate::options::Isolation;
use crate::txn::written::Written;
use crate::txn::Transaction;
use crate::{Db, PreparedTransaction};

/// A prepared transaction in doubt at the cut, with its writes by table.
struct InDoubt {
    entry: PreparedTransaction,
    writes: Vec<(String, Written)>,
}

/// The snapshot, the applied index it holds exactly, and the prepared
/// transactions in doubt at it.
struct Cut {
    tx: Transaction,
    applied_index: u64,
    in_doubt: Vec<InDoubt>,
}

impl Db {
    /// Writes a consistent snapshot of the database (or of the keys whose
    /// [`key_hash`](crate::key_hash) is in `opts.range`) to `w` as a
    /// checksummed stream that [`import`](crate::import) builds a database
    /// from: every table's rows as of one snapshot, the applied index that
    /// snapshot holds exactly, the newest timestamp given out, and the
    /// prepared transactions in doubt at it with their writes. Writers
    /// keep running meanwhile. The stream's format is in FORMAT.md.
    ///
    /// `LockTimeout` if no cut was found (indexes or prepared transactions
    /// kept changing, or a decision stayed under way, around every
    /// attempt); `InDoubtTableChange` if a prepared transaction in doubt
    /// created, dropped or renamed a table (decide it first); an `Io`
    /// error naming "stream" if `w` fails.
    pub fn export(&self, w: &mut impl Write, opts: ExportOptions) -> Result<SnapshotStats> {
        let range = opts.range;
        if let Some(r) = range {
            if r.hi.is_some_and(|hi| hi < r.lo) {
                return Err(Error::Unsupported("a hash range that ends below its start"));
            }
        }
        let cut = self.cut(range)?;
        // Read after the snapshot: at least every timestamp it holds, and
        // every prepare timestamp.
        let newest_ts = commit_ts::high_water(&mut self.core().engine.store().read().view)?;
        let header = Header {
            applied_index: cut.applied_index,
            newest_ts,
            range,
        };
        let mut s = StreamWriter::new(w, &header)?;
        for name in cut.tx.table_names()? {
            s.table(&name)?;
            let table = self.table(&name)?;
            for row in cut.tx.scan(&table, ..)? {
                let (k, v) = row?;
                if range.is_none_or(|r| r.holds_key(&k)) {
                    s.row(&k, &v)?;
                }
            }
        }
        for d in &cut.in_doubt {
            let at_us = d
                .entry
                .prepared_at
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_micros()
                .min(u128::from(u64::MAX)) as u64;
            let n = u32::try_from(d.writes.len())
                .map_err(|_| Error::Unsupported("a prepared transaction with over 2^32 writes"))?;
            s.prepared(&d.entry.gid, d.entry.prepare_ts, at_us, n)?;
            for (table, wr) in &d.writes {
                s.write(table, &wr.key, wr.value.as_deref())?;
            }
        }
        let (c, bytes) = s.finish()?;
        Ok(SnapshotStats {
            applied_index: cut.applied_index,
            newest_ts,
            range,
            tables: c.tables,
            rows: c.rows,
            prepared: c.prepared,
            writes: c.writes,
            bytes,
        })
    }

    /// Finds a cut (the module's essay), trying again while indexes or
    /// prepared transactions change around the snapshot.
    fn cut(&self, range: Option<HashRange>) -> Result<Cut> {
        let applied = self.core().txns.applied();
        let prepared = self.core().txns.prepared();
        let clock = &*self.core().engine.opts().clock.0;
        for attempt in 0..EXPORT_CUT_ATTEMPTS {
            if attempt > 0 {
                // Let what is in flight land: 50 µs, growing to 2 ms.
                clock.sleep(Duration::from_micros(50 * u64::from(attempt.min(40))));
            }
            let Some(before) = applied.settled() else {
                continue;
            };
            // No decision under way (one is in flight until it is visible).
            let Some(listed) = prepared.settled() else {
                continue;
            };
            let tx = self.begin_with(Isolation::Snapshot)?;
            if prepared.settled().as_ref() != Some(&listed) || applied.settled() != Some(before) {
                continue;
            }
            let in_doubt = self.writes_in_doubt(&tx, &listed, range)?;
            // A decision while the writes were read could have changed
            // them: they are the in-doubt writes only if none came.
            if prepared.settled().as_ref() != Some(&listed) {
                continue;
            }
            return Ok(Cut {
                tx,
                applied_index: before.0,
                in_doubt,
            });
        }
        Err(Error::LockTimeout)
    }

    /// The writes of each of `listed` (in doubt at `tx`'s snapshot) to
    /// the tables `tx` sees, those in `range`.
    fn writes_in_doubt(
        &self,
        tx: &Transaction,
        listed: &[PreparedTransaction],
        range: Option<HashRange>,
    ) -> Result<Vec<InDoubt>> {
        let mut out: Vec<InDoubt> = listed
            .iter()
            .map(|e| InDoubt {
                entry: e.clone(),
                writes: Vec::new(),
            })
            .collect();
        let xids: Vec<Xid> = listed
            .iter()
            .map(|e| e.xid)
            .filter(|&x| x != Xid::NONE)
            .collect();
        if !xids.is_empty() {
            self.find_writes(tx, listed, &xids, range, &mut out)?;
        }
        // In a range, a transaction that wrote none of its keys is not
        // this range's to carry; one that wrote nothing at all belongs to
        // no key, and the range holding hash 0 carries it (ranges that
        // partition the hash space carry it once).
        if let Some(r) = range {
            out.retain(|d| !d.writes.is_empty() || (d.entry.xid == Xid::NONE && r.contains(0)));
        }
        Ok(out)
    }

    /// Fills in the writes of `xids` (of `listed`) to the tables `tx` sees.
    fn find_writes(
        &self,
        tx: &Transaction,
        listed: &[PreparedTransaction],
        xids: &[Xid],
        range: Option<HashRange>,
        out: &mut [InDoubt],
    ) -> Result<()> {
        // Its writes to a table it created (or renamed) are in a table the
        // snapshot does not see, and a drop or rename would not come back
        // with it: refused, never a partial write set.
        if let Some((xid, table)) = tx.tables_changed_by(xids)? {
            let gid = listed
                .iter()
                .find(|e| e.xid == xid)
                .map(|e| e.gid.clone())
                .unwrap_or_default();
            return Err(Error::InDoubtTableChange { gid, table });
        }
        for name in tx.table_names()? {
            let table = self.table(&name)?;
            for w in tx.writes_of(&table, xids)? {
                if !range.is_none_or(|r| r.holds_key(&w.key)) {
                    continue;
                }
                if let Some(d) = out.iter_mut().find(|d| d.entry.xid == w.xid) {
                    d.writes.push((name.clone(), w));
                }
            }
        }
        Ok(())
    }
}
