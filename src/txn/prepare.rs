//! Two-phase commit, the participant's side: prepared transactions.
//!
//! `Transaction::prepare(gid)` runs every check a commit runs (the SSI
//! dangerous-structure check; write conflicts were settled when the rows
//! were written), then records the transaction in a B+tree of prepared
//! transactions and forces that record to disk. From then on only
//! `Db::commit_prepared` or `Db::rollback_prepared` ends it.
//!
//! ```text
//!  key: gid (1..=GID_MAX bytes)
//!  value: | xid u64 | prepared_at µs since 1970 u64 | prepare_ts u64 | n u16 | table root u32 * n |
//!         n = 0xFFFF: read every table (too many to list); 0xFFFE: not serializable
//! ```
//! The prepare timestamp (`commit_ts::reserve`, in the same
//! mini-transaction) raises the database's high-water mark, so every
//! commit after the prepare, the prepared transaction's own included, is
//! above it: a coordinator may commit it at any timestamp not below it.
//! Nothing else needs saving: a transaction's row locks are its xid on the
//! versions it wrote (already in the heap and the log), and its writes
//! stay invisible while the commit log says "in progress". At open, each
//! entry is adopted: its xid is kept in progress although it is below the
//! crash horizon, so snapshots skip its versions and writers wait for it.
//! The tables it read (serializable transactions) become table-wide SIREAD
//! marks, since the finer marks did not survive.
//!
//! The decision is one mini-transaction: commit sets the commit-log bit
//! and removes the entry; rollback removes the entry (an xid below the
//! crash horizon with no outcome is aborted). Both are forced to disk
//! whatever the durability setting: a coordinator that has heard "done"
//! forgets the transaction, so the answer must not be lost. While a
//! decision is under way its gid is taken (`Slot::Deciding`): not listed
//! by `Db::prepared_transactions`, and `Prepared::settled` answers `None`
//! until the decision is visible and the gid released, so an export's cut
//! never falls between the unlisting and the decision's visibility
//! (`snapshot`'s essay).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::btree::{self, Dir};
use crate::buffer::mtr::{Mtr, PageAccess};
use crate::clock::{self, Timestamp};
use crate::codec::{u16_at, u32_at, u64_at};
use crate::error::{Error, Result};
use crate::ids::{PageId, Xid};
use crate::limits::{GID_MAX, PREPARED_MAX, PREPARED_TABLES_MAX};
use crate::mvcc::{clog, commit_ts, Status};
use crate::page::PageType;
use crate::redo::record::{Kind, Op};
use crate::store::meta::{self, Field, META};
use crate::sync::Mutex;
use crate::txn::Core;

use super::ssi::ReadSet;
use super::Versions;

/// A transaction prepared for two-phase commit and waiting for the
/// decision (`Db::prepared_transactions`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PreparedTransaction {
    /// Its global id, given to `Transaction::prepare`.
    pub gid: String,
    /// Its xid (`Xid::NONE` if it wrote nothing).
    pub xid: Xid,
    /// When it was prepared (wall clock).
    pub prepared_at: SystemTime,
    /// Its prepare timestamp (`Transaction::prepare` returned it): a lower
    /// bound for its commit timestamp, above every timestamp the database
    /// had assigned before it.
    pub prepare_ts: Timestamp,
}

/// What the database keeps of a prepared transaction until the decision.
pub(crate) struct InDoubt {
    pub token: u64,
    pub xid: Xid,
    pub prepared_at: SystemTime,
    pub prepare_ts: Timestamp,
    /// Its SSI marks, if it runs under SSI (recovered ones hold table marks
    /// in the graph and an empty set here).
    pub reads: Option<ReadSet>,
    /// Versions it wrote and replaced, counted as dead by the decision.
    pub versions: Versions,
}

enum Slot {
    /// A `prepare` under way: the gid is taken.
    Preparing,
    Waiting(InDoubt),
    /// A decision under way: the gid cannot be decided twice.
    Deciding,
}

/// The prepared transactions of one database, by gid.
#[derive(Default)]
pub(crate) struct Prepared {
    slots: Mutex<BTreeMap<String, Slot>>,
}

/// Checks a gid's length.
pub(crate) fn check_gid(gid: &str) -> Result<()> {
    if gid.is_empty() || gid.len() > GID_MAX {
        return Err(Error::InvalidGid { len: gid.len() });
    }
    Ok(())
}

impl Prepared {
    /// Takes `gid` for a prepare.
    pub fn reserve(&self, gid: &str) -> Result<()> {
        check_gid(gid)?;
        let mut slots = self.slots.lock();
        if slots.contains_key(gid) {
            return Err(Error::DuplicateTransaction);
        }
        if slots.len() >= PREPARED_MAX {
            return Err(Error::TooManyPrepared);
        }
        slots.insert(gid.to_owned(), Slot::Preparing);
        Ok(())
    }

    /// Gives `gid` back after a failed prepare or a finished decision.
    pub fn release(&self, gid: &str) {
        self.slots.lock().remove(gid);
    }

    /// The prepare of `gid` succeeded (or it was found at open).
    pub fn waiting(&self, gid: &str, t: InDoubt) {
        self.slots.lock().insert(gid.to_owned(), Slot::Waiting(t));
    }

    /// Takes `gid` for a decision.
    pub fn decide(&self, gid: &str) -> Result<InDoubt> {
        check_gid(gid)?;
        let mut slots = self.slots.lock();
        match slots.get_mut(gid) {
            Some(slot @ Slot::Waiting(_)) => match std::mem::replace(slot, Slot::Deciding) {
                Slot::Waiting(t) => Ok(t),
                _ => Err(Error::UnknownTransaction),
            },
            _ => Err(Error::UnknownTransaction),
        }
    }

    /// The waiting ones, in gid order.
    pub fn list(&self) -> Vec<PreparedTransaction> {
        Self::waiting_in(&self.slots.lock())
    }

    /// The waiting ones, in gid order, if no decision is under way; `None`
    /// while one is. A decision takes its gid off `list` before it commits
    /// or rolls back (under the store latch, then flushed, then visible),
    /// so a snapshot taken meanwhile sees the transaction neither in doubt
    /// nor decided: an export's bracket (`snapshot::export`) takes a
    /// deciding transaction as in flight and tries again.
    pub fn settled(&self) -> Option<Vec<PreparedTransaction>> {
        let slots = self.slots.lock();
        if slots.values().any(|s| matches!(s, Slot::Deciding)) {
            return None;
        }
        Some(Self::waiting_in(&slots))
    }

    fn waiting_in(slots: &BTreeMap<String, Slot>) -> Vec<PreparedTransaction> {
        slots
            .iter()
            .filter_map(|(gid, s)| match s {
                Slot::Waiting(t) => Some(PreparedTransaction {
                    gid: gid.clone(),
                    xid: t.xid,
                    prepared_at: t.prepared_at,
                    prepare_ts: t.prepare_ts,
                }),
                _ => None,
            })
            .collect()
    }
}

/// What a prepared transaction read, as far as SSI must remember.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reads {
    /// It is not serializable: SSI does not track it.
    Untracked,
    /// These tables.
    Tables(Vec<PageId>),
    /// More tables than an entry lists: take it as every table.
    Every,
}

const EVERY: u16 = u16::MAX;
const UNTRACKED: u16 = u16::MAX - 1;
/// Bytes of an entry before its table list.
const HEAD: usize = 26;

/// One entry of the on-disk registry.
pub(crate) struct Entry {
    pub gid: String,
    pub xid: Xid,
    pub prepared_at: SystemTime,
    pub prepare_ts: Timestamp,
    pub reads: Reads,
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros().min(u64::MAX as u128) as u64)
}

fn encode(e: &Entry) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEAD + 4 * PREPARED_TABLES_MAX);
    v.extend_from_slice(&e.xid.0.to_le_bytes());
    v.extend_from_slice(&micros(e.prepared_at).to_le_bytes());
    v.extend_from_slice(&e.prepare_ts.as_nanos().to_le_bytes());
    match &e.reads {
        Reads::Tables(t) if t.len() <= PREPARED_TABLES_MAX => {
            v.extend_from_slice(&(t.len() as u16).to_le_bytes());
            for p in t {
                v.extend_from_slice(&p.0.to_le_bytes());
            }
        }
        Reads::Tables(_) | Reads::Every => v.extend_from_slice(&EVERY.to_le_bytes()),
        Reads::Untracked => v.extend_from_slice(&UNTRACKED.to_le_bytes()),
    }
    v
}

fn decode(acc: &impl PageAccess, gid: &[u8], v: &[u8]) -> Result<Entry> {
    let bad = |what: &str| {
        Error::corruption(
            acc.file(),
            0,
            format!(
                "prepared transaction {:?}: {what}",
                String::from_utf8_lossy(gid)
            ),
        )
    };
    let gid = String::from_utf8(gid.to_vec()).map_err(|_| bad("gid is not UTF-8"))?;
    if gid.is_empty() || gid.len() > GID_MAX {
        return Err(bad("gid length out of range"));
    }
    let (Some(xid), Some(at), Some(ts), Some(n)) =
        (u64_at(v, 0), u64_at(v, 8), u64_at(v, 16), u16_at(v, 24))
    else {
        return Err(bad("entry too short"));
    };
    let reads = match n {
        EVERY if v.len() == HEAD => Reads::Every,
        UNTRACKED if v.len() == HEAD => Reads::Untracked,
        n if (n as usize) <= PREPARED_TABLES_MAX && v.len() == HEAD + 4 * n as usize => {
            Reads::Tables(
                (0..n as usize)
                    .map(|i| {
                        u32_at(v, HEAD + 4 * i)
                            .map(PageId)
                            .ok_or_else(|| bad("table list"))
                    })
                    .collect::<Result<Vec<_>>>()?,
            )
        }
        _ => return Err(bad("malformed table list")),
    };
    Ok(Entry {
        gid,
        xid: Xid(xid),
        prepared_at: UNIX_EPOCH + Duration::from_micros(at),
        prepare_ts: Timestamp::from_nanos(ts),
        reads,
    })
}

/// Starts an empty registry (database creation).
pub fn init(mtr: &mut Mtr<'_>) -> Result<()> {
    let root = meta::alloc(mtr, PageType::Leaf)?;
    btree::create(mtr, root)?;
    meta::set(mtr.page_mut(META)?, Field::PreparedRoot, root.0);
    Ok(())
}

fn root(acc: &mut impl PageAccess) -> Result<PageId> {
    let r = acc.with_page(META, |m| meta::get(m, Field::PreparedRoot))?;
    if r == 0 {
        return Err(Error::corruption(
            acc.file(),
            0,
            "no prepared-transaction root",
        ));
    }
    Ok(PageId(r))
}

/// Records a prepared transaction.
pub(crate) fn insert(mtr: &mut Mtr<'_>, e: &Entry) -> Result<()> {
    let root = root(mtr)?;
    btree::insert(mtr, root, e.gid.as_bytes(), &encode(e))
}

/// Removes a decided one.
pub(crate) fn remove(mtr: &mut Mtr<'_>, gid: &str) -> Result<()> {
    let root = root(mtr)?;
    btree::remove(mtr, root, gid.as_bytes())?;
    Ok(())
}

/// Every recorded prepared transaction.
pub(crate) fn load(view: &mut impl PageAccess) -> Result<Vec<Entry>> {
    let root = root(view)?;
    let mut rows = Vec::new();
    btree::range(
        view,
        root,
        Bound::Unbounded,
        Bound::Unbounded,
        Dir::Forward,
        PREPARED_MAX + 1,
        &mut rows,
    )?;
    if rows.len() > PREPARED_MAX {
        return Err(Error::corruption(
            view.file(),
            0,
            format!("more than {PREPARED_MAX} prepared transactions recorded"),
        ));
    }
    rows.iter().map(|(k, v)| decode(view, k, v)).collect()
}

/// Commits (`commit`; at timestamp `at` if given) or rolls back prepared
/// transaction `gid`.
///
/// A chosen timestamp need only be at or above the prepare timestamp, not
/// above the high-water mark: the prepare raised the mark to its prepare
/// timestamp, so nothing this database assigned before the vote is above
/// it, and what was assigned since went to transactions that could not
/// touch its rows (it holds their locks). Requiring more would let any
/// local commit after the vote make the coordinator's decision impossible
/// to apply.
///
/// With `index`, the decision records that applied log index in its own
/// record (`txn::applied`), reported once the decision has landed.
pub(crate) fn decide(
    inner: &Core,
    gid: &str,
    (commit, at): (bool, Option<Timestamp>),
    index: Option<u64>,
) -> Result<()> {
    inner.engine.writable()?;
    // A commit takes a timestamp as any other: no clock, no decision (the
    // transaction stays in doubt).
    // A replica applying a decision entry (an index, a chosen timestamp)
    // reads no clock: its outcome is the data's alone
    // (`Db::commit_prepared_applying`).
    let applying = index.is_some() && at.is_some();
    let clock = &*inner.engine.opts().clock.0;
    let mut reading = if commit && !applying {
        Some(clock::read(clock)?)
    } else {
        None
    };
    let t = inner.txns.prepared().decide(gid)?;
    if let (Some(ts), Some(r)) = (at, reading) {
        if let Err(e) = clock::check_chosen(ts, r.now, Timestamp::ZERO, t.prepare_ts) {
            inner.txns.prepared().waiting(gid, t);
            return Err(e);
        }
    }
    let poisoned_before = inner.engine.store().wal.is_poisoned();
    let logged = (|| {
        let (lsn, ts, flight) = {
            let mut w = inner.engine.store().write();
            let flight = index
                .map(|i| super::applied::record(&mut w.mtr, inner.txns.applied(), i))
                .transpose()?;
            let mut ts = None;
            if commit && t.xid != Xid::NONE {
                ts = Some(match (at, reading.as_mut()) {
                    (Some(ts), _) => {
                        commit_ts::stamp_at(&mut w.mtr, t.xid, ts)?;
                        ts
                    }
                    (None, Some(r)) => commit_ts::stamp(&mut w.mtr, t.xid, clock, r)?,
                    (None, None) => {
                        return Err(Error::Unsupported(
                            "a commit at the clock without a reading",
                        ))
                    }
                });
                clog::set_committed(&mut w.mtr, t.xid)?;
            }
            remove(&mut w.mtr, gid)?;
            let kind = if commit { Kind::Commit } else { Kind::Abort };
            (w.commit(kind, Op::Prepared as u8, t.xid)?, ts, flight)
        };
        if let Some(lsn) = lsn {
            inner.engine.store().wal.flush(lsn, true)?;
        }
        Ok((ts.zip(reading), lsn.zip(flight)))
    })();
    if let Ok((Some((ts, reading)), _)) = &logged {
        super::commit_wait(inner, *ts, *reading);
    }
    let landing = match logged {
        Ok((_, landing)) => landing,
        Err(e) => {
            // Undecided as far as the disk knows: it stays in doubt here too
            // (the database is poisoned; reopening finds it prepared).
            inner.txns.prepared().waiting(gid, t);
            if commit {
                return Err(super::outcome_unknown(
                    &inner.engine.store().wal,
                    poisoned_before,
                    e,
                ));
            }
            return Err(e);
        }
    };
    let outcome = if commit {
        Status::Committed
    } else {
        Status::Aborted
    };
    inner.txns.ssi().finish(
        inner.txns.manager(),
        t.token,
        t.xid,
        outcome,
        t.reads,
        inner.engine.opts(),
    );
    let dead = if commit {
        t.versions.dead_if_committed()
    } else {
        t.versions.dead_if_aborted()
    };
    inner.engine.note_dead(dead);
    inner.txns.waits().finished();
    inner.changes.notify();
    inner.txns.prepared().release(gid);
    if let Some((lsn, flight)) = landing {
        flight.landed(lsn, inner.engine.store().wal.durable());
    }
    Ok(())
}

/// Takes up the prepared transactions recorded on disk (at open): each
/// keeps its xid in progress, and SSI remembers it conservatively.
pub(crate) fn adopt(inner: &Core) -> Result<()> {
    let (entries, every, roots) = {
        let mut r = inner.engine.store().read();
        let entries = load(&mut r.view)?;
        // Which tables a prepared transaction wrote is not recorded: it
        // counts as a writer of every table there is, so a drop or rename
        // waits for its decision as for a running writer's.
        let roots = if entries
            .iter()
            .any(|e| e.xid != Xid::NONE || e.reads == Reads::Every)
        {
            crate::catalog::all_roots(&mut r.view)?
        } else {
            Vec::new()
        };
        let every = if entries.iter().any(|e| e.reads == Reads::Every) {
            let mut every = roots.clone();
            every.push(crate::catalog::root(&mut r.view)?);
            every
        } else {
            Vec::new()
        };
        (entries, every, roots)
    };
    for e in entries {
        if e.xid != Xid::NONE {
            inner.txns.manager().clog().keep_in_doubt(e.xid);
            inner.txns.writers().recovered(&roots, e.xid);
        }
        let token = inner.txns.manager().adopt(e.xid);
        let reads = match &e.reads {
            Reads::Untracked => None,
            Reads::Tables(t) => Some(inner.txns.ssi().lock().recovered(token, e.xid, t)),
            Reads::Every => Some(inner.txns.ssi().lock().recovered(token, e.xid, &every)),
        };
        inner.txns.prepared().waiting(
            &e.gid,
            InDoubt {
                token,
                xid: e.xid,
                prepared_at: e.prepared_at,
                prepare_ts: e.prepare_ts,
                reads,
                versions: Versions::default(),
            },
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gids_are_bounded_and_unique_and_decided_once() {
        let r = Prepared::default();
        assert!(matches!(r.reserve(""), Err(Error::InvalidGid { len: 0 })));
        let long = "x".repeat(GID_MAX + 1);
        assert!(matches!(r.reserve(&long), Err(Error::InvalidGid { .. })));
        r.reserve("a").expect("first");
        assert!(matches!(r.reserve("a"), Err(Error::DuplicateTransaction)));
        assert!(
            matches!(r.decide("a"), Err(Error::UnknownTransaction)),
            "a gid still preparing cannot be decided"
        );
        r.waiting(
            "a",
            InDoubt {
                token: 1,
                xid: Xid(5),
                prepared_at: UNIX_EPOCH,
                prepare_ts: Timestamp::ZERO,
                reads: None,
                versions: Versions::default(),
            },
        );
        assert_eq!(r.list().len(), 1);
        let t = r.decide("a").expect("decide");
        assert_eq!(t.xid, Xid(5));
        assert!(matches!(r.decide("a"), Err(Error::UnknownTransaction)));
        assert!(
            r.list().is_empty(),
            "a transaction being decided is not listed"
        );
        assert!(
            r.settled().is_none(),
            "a decision under way leaves the list unsettled"
        );
        r.release("a");
        assert_eq!(r.settled(), Some(Vec::new()));
        r.reserve("a").expect("a decided gid can be used again");
    }
}
