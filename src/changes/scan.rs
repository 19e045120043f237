//! Reading the log for the change stream: which transaction wrote which
//! keys, and where each one's commit lies.
//!
//! The scan keeps, for every transaction whose records it has met and
//! whose outcome it has not, the keys it wrote and its first record's LSN.
//! A commit record moves the transaction to the queue of commits to
//! return, with the restart LSN at that point: the oldest first record of
//! the transactions still open there, from which a later scan finds all
//! of their writes. An abort record drops it; a rollback is not logged, so
//! a transaction neither running nor committed is dropped too (`prune`).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ids::{Lsn, Xid};
use crate::io::Vfs;
use crate::limits::CHANGES_AHEAD_MAX;
use crate::mvcc::{Snapshot, Status, StatusOf};
use crate::redo::record::{Kind, Op};
use crate::wal::reader::LogReader;
use crate::wal::segment;

/// The segment file holding `lsn`, and its offset there (for errors).
pub(crate) fn locate(vfs: &dyn Vfs, dir: &Path, lsn: Lsn) -> (PathBuf, u64) {
    let starts = segment::list(vfs, dir).unwrap_or_default();
    let start = starts.iter().rev().find(|&&s| s <= lsn.0).copied();
    match start {
        Some(s) => (segment::path(dir, s), lsn.0 - s),
        None => (dir.to_path_buf(), lsn.0),
    }
}

/// What a transaction did to one key or table, as its records name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Touch {
    /// A put or delete of `key` in the table rooted at page `root`.
    Key { root: u64, key: Vec<u8> },
    /// A table created (by name).
    Create(Vec<u8>),
    /// A table dropped: its name, and the table's root page, which its
    /// record names.
    Drop { name: Vec<u8>, root: u64 },
    /// A table renamed: its old name, and the root page as for `Drop`.
    Rename { old: Vec<u8>, root: u64 },
}

/// A transaction met in the log, not yet decided there.
struct Open {
    first: Lsn,
    touched: Vec<Touch>,
}

/// A commit read from the log, to be returned.
pub(crate) struct Commit {
    pub(crate) xid: Xid,
    /// LSN just past its commit record.
    pub(crate) end: Lsn,
    /// The oldest log a scan resuming after it must read.
    pub(crate) restart: Lsn,
    pub(crate) touched: Vec<Touch>,
}

/// The scan's state between reads.
pub(crate) struct Scan {
    /// The next record to read starts at or after this.
    pub(crate) pos: Lsn,
    /// Commits ending at or before this were returned already.
    pub(crate) after: Lsn,
    open: BTreeMap<Xid, Open>,
    pub(crate) ready: VecDeque<Commit>,
}

impl Scan {
    /// A scan from `restart`, returning the commits ending after `after`.
    pub(crate) fn new(restart: Lsn, after: Lsn) -> Scan {
        Scan {
            pos: restart,
            after,
            open: BTreeMap::new(),
            ready: VecDeque::new(),
        }
    }

    /// Reads the records from `pos` up to `limit` (a record boundary: the
    /// log is durable there), or until the queue is full.
    pub(crate) fn read(&mut self, vfs: &dyn Vfs, dir: &Path, limit: Lsn) -> Result<()> {
        if self.pos >= limit || self.ready.len() >= CHANGES_AHEAD_MAX {
            return Ok(());
        }
        let mut log = LogReader::open(vfs, dir, self.pos)?;
        while self.pos < limit && self.ready.len() < CHANGES_AHEAD_MAX {
            let Some(e) = log.next_ref()? else {
                // A new segment's header may be all there is up to `limit`.
                if let Some(end) = log.end.filter(|&end| end >= limit) {
                    self.pos = end;
                    break;
                }
                // The log was durable up to `limit`: ending before it is damage.
                return Err(Error::corruption(
                    dir,
                    self.pos.0,
                    format!(
                        "the log ends at LSN {} before its durable end {limit}",
                        self.pos
                    ),
                ));
            };
            let (start, end, r) = (e.start, e.end, e.record);
            self.pos = end;
            if r.xid == Xid::NONE {
                continue;
            }
            match r.kind {
                Kind::Pages => {
                    let o = self.open.entry(r.xid).or_insert(Open {
                        first: start,
                        touched: Vec::new(),
                    });
                    let key = r.key.to_vec();
                    match Op::from_u8(r.op) {
                        Some(Op::Put | Op::Delete) => {
                            o.touched.push(Touch::Key { root: r.aux, key })
                        }
                        Some(Op::CreateTable) => o.touched.push(Touch::Create(key)),
                        Some(Op::DropTable) => o.touched.push(Touch::Drop {
                            name: key,
                            root: r.aux,
                        }),
                        Some(Op::RenameTable) => o.touched.push(Touch::Rename {
                            old: key,
                            root: r.aux,
                        }),
                        _ => {}
                    }
                }
                Kind::Commit => self.committed(r.xid, end),
                Kind::Abort => {
                    self.open.remove(&r.xid);
                }
                Kind::XidHighWater | Kind::DurableMark => {}
            }
        }
        Ok(())
    }

    fn committed(&mut self, xid: Xid, end: Lsn) {
        let o = self.open.remove(&xid);
        if end <= self.after {
            return;
        }
        // None of its records seen: it logged none (a delete of a key that
        // was not there takes an xid and writes nothing), so it changed
        // nothing — or they lie before a bare LSN this scan began at,
        // which only positions this module returns rule out.
        let touched = o.map_or_else(Vec::new, |o| o.touched);
        let restart = self.open.values().map(|o| o.first).fold(end, Lsn::min);
        self.ready.push_back(Commit {
            xid,
            end,
            restart,
            touched,
        });
    }

    /// Drops the transactions that ended without a logged outcome: not
    /// running in `running` (taken before the log was read) and not
    /// committed. A committed one's record is in the log already.
    pub(crate) fn prune(&mut self, running: &Snapshot, clog: &impl StatusOf) {
        self.open.retain(|&x, _| {
            let live = x >= running.xmax || running.xip.binary_search(&x).is_ok();
            live || clog.status(x) == Status::Committed
        });
    }
}
