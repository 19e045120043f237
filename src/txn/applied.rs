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
//! What `Db::applied_index` reports is not the meta page's field, which
//! the latch has let others see before the entry's record is flushed and
//! (for a commit) before its commit wait ends: a follower serving reads
//! once the index reaches a read index, or a snapshot labelled with it,
//! would miss the entry, and a power loss could take the database back
//! below an index already reported. It reports [`Published`]: the highest
//! index whose entry has landed — flushed as its durability setting
//! flushes (under `Eventual`, not yet synced), and visible — with no
//! lower index still in flight (two appliers may land out of order).
//!
//! ```text
//!  meta: APPLIED_INDEX u64 LE — 0 until an index is first recorded
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::buffer::mtr::{Mtr, PageAccess};
use crate::codec::{put_u64, u64_at};
use crate::error::{Error, Result};
use crate::ids::Lsn;
use crate::store::meta::{APPLIED_INDEX, META};
use crate::sync::Mutex;

/// The index recorded last (0: none).
pub fn get(acc: &mut impl PageAccess) -> Result<u64> {
    acc.with_page(META, |m| u64_at(m, APPLIED_INDEX).unwrap_or(0))
}

/// Records `index` in `mtr`, the mini-transaction of what the entry
/// changed, under the store latch; refused unless above the index
/// recorded. In flight in `published` until the returned guard lands —
/// or drops, as it does if the mini-transaction fails after this.
pub(crate) fn record(mtr: &mut Mtr<'_>, published: &Arc<Published>, index: u64) -> Result<Flight> {
    let applied = get(mtr)?;
    if index <= applied {
        return Err(Error::IndexRefused { index, applied });
    }
    let m = mtr.page_mut_in(META, &[(APPLIED_INDEX, APPLIED_INDEX + 8)])?;
    put_u64(m, APPLIED_INDEX, index);
    Ok(published.start(index))
}

/// The applied index as reported: entries landed, none lower in flight.
pub(crate) struct Published(Mutex<Flights>);

struct Flights {
    published: u64,
    /// Recorded under the latch, not yet landed or failed.
    in_flight: BTreeSet<u64>,
    /// Landed above a lower one still in flight, with their records' LSNs.
    landed: BTreeMap<u64, Lsn>,
    /// The highest published index whose record the log has synced.
    durable: u64,
    /// Published indexes whose records may not be synced yet, ascending.
    unsynced: VecDeque<(u64, Lsn)>,
    /// How many indexes were ever recorded in this open (`settled`).
    started: u64,
}

impl Published {
    /// Starting at `index`, the recorded one at open (all of it landed,
    /// and durable: recovery read it from the disk).
    pub(crate) fn new(index: u64) -> Published {
        Published(Mutex::new(Flights {
            published: index,
            in_flight: BTreeSet::new(),
            landed: BTreeMap::new(),
            durable: index,
            unsynced: VecDeque::new(),
            started: 0,
        }))
    }

    /// With no index in flight, the index reported and how many were ever
    /// recorded; `None` while one is in flight. Two equal answers around
    /// a snapshot bracket it: every index recorded before the first had
    /// landed (its entry visible), none was recorded between them, and an
    /// entry is recorded before it can become visible — so the snapshot
    /// holds exactly the entries up to the index reported
    /// (`snapshot::export`).
    pub(crate) fn settled(&self) -> Option<(u64, u64)> {
        let f = self.0.lock();
        (f.in_flight.is_empty() && f.landed.is_empty()).then_some((f.published, f.started))
    }

    /// The index reported.
    pub(crate) fn get(&self) -> u64 {
        self.0.lock().published
    }

    /// The highest index reported whose record is synced, given that the
    /// log is synced below `synced`.
    pub(crate) fn durable(&self, synced: Lsn) -> u64 {
        let mut f = self.0.lock();
        f.sync(synced);
        f.durable
    }

    /// Index `index` is recorded in a mini-transaction under the store
    /// latch: in flight until the returned guard lands, or drops.
    fn start(self: &Arc<Self>, index: u64) -> Flight {
        let mut f = self.0.lock();
        f.in_flight.insert(index);
        f.started += 1;
        drop(f);
        Flight {
            of: self.clone(),
            index: Some(index),
        }
    }

    fn end(&self, index: u64, landed: Option<(Lsn, Lsn)>) {
        let mut f = self.0.lock();
        f.in_flight.remove(&index);
        if let Some((lsn, _)) = landed {
            f.landed.insert(index, lsn);
        }
        let floor = f.in_flight.first().copied().unwrap_or(u64::MAX);
        while let Some((i, lsn)) = f.landed.first_key_value().map(|(&i, &l)| (i, l)) {
            if i >= floor {
                break;
            }
            f.landed.remove(&i);
            f.published = f.published.max(i);
            f.unsynced.push_back((i, lsn));
        }
        if let Some((_, synced)) = landed {
            f.sync(synced);
        }
    }
}

impl Flights {
    /// Moves what the log has synced (below `synced`) to `durable`.
    fn sync(&mut self, synced: Lsn) {
        while let Some(&(i, lsn)) = self.unsynced.front() {
            if lsn > synced {
                break;
            }
            self.unsynced.pop_front();
            self.durable = self.durable.max(i);
        }
    }
}

/// An index in flight; dropped without `landed`, its entry failed (the
/// database is poisoned, or the mini-transaction never committed).
pub(crate) struct Flight {
    of: Arc<Published>,
    /// `None` once landed.
    index: Option<u64>,
}

impl Flight {
    /// The entry, logged at `lsn`, is flushed and visible; the log is
    /// synced below `synced`.
    pub(crate) fn landed(mut self, lsn: Lsn, synced: Lsn) {
        if let Some(i) = self.index.take() {
            self.of.end(i, Some((lsn, synced)));
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if let Some(i) = self.index.take() {
            self.of.end(i, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_is_published_once_it_and_every_lower_one_landed() {
        let p = Arc::new(Published::new(4));
        let five = p.start(5);
        let six = p.start(6);
        let seven = p.start(7);
        six.landed(Lsn(60), Lsn(0));
        assert_eq!(p.get(), 4, "5 is still in flight");
        five.landed(Lsn(50), Lsn(0));
        assert_eq!(p.get(), 6);
        drop(seven);
        assert_eq!(p.get(), 6, "7 failed");
        p.start(8).landed(Lsn(80), Lsn(0));
        assert_eq!(p.get(), 8);
        assert_eq!(p.durable(Lsn(0)), 4, "nothing synced since the open");
        assert_eq!(p.durable(Lsn(59)), 5);
        assert_eq!(p.durable(Lsn(100)), 8);
    }
}
