//! Vacuum: remove versions no transaction can see, and give back their space.
//!
//! A version is kept if any *view* picks it: each live transaction's
//! snapshot (with its own xid, so its uncommitted writes count), plus a
//! fresh snapshot standing for every transaction that starts later. A
//! version whose creator had not committed when that fresh snapshot was
//! taken is always kept (unless its creator rolled back): a transaction
//! that started or committed after the views were gathered may need it.
//! So a long-running reader holds back only the versions it can see, not
//! everything newer than it.
//!
//! A Read Committed transaction has no snapshot of its own: each
//! operation takes one and registers it in the same step (`TxnManager::
//! operation`, and `pin` for a scan, which holds its snapshot until it is
//! dropped). Its views are those; before its first read, the fresh
//! snapshot stands for it.
//!
//! Seeing is not all a serializable reader needs. SSI takes its read-side
//! edges from the versions a read *skips*: the creator of each newer
//! version its snapshot does not see. Such a version may be invisible to
//! every view, yet freeing it would hide a writer the reader must meet
//! (a cycle R → W → T3 → R would commit). Two ways out:
//!
//! - PostgreSQL's: keep every version created or deleted by an xid at or
//!   above the oldest live serializable snapshot's xmin. One long
//!   serializable reader then holds back every later version of every key
//!   it might read — all of a hot key's history for as long as it runs,
//!   the unbounded growth the view rule above exists to avoid.
//! - strata's: free the version, but first write its creator to the
//!   ledger of removed writes (`mvcc::ledger`), keyed by table and key,
//!   where serializable gets and scans meet it as if they had skipped the
//!   version. An entry costs its key and an xid instead of a whole tuple,
//!   lives in memory only while a serializable (or, below, writing)
//!   snapshot that does not see its writer runs (pruned at each gathering
//!   of views), and the ledger is bounded: when it is full, vacuum keeps such a version in the heap,
//!   which is PostgreSQL's rule for that version. The deleter of a
//!   version needs no entry: a reader takes an edge to it only from a
//!   version it sees, and vacuum keeps those.
//!
//! Writers need the same care. A Snapshot or Serializable put or delete
//! (a delete that finds no row too) judges first updater wins by the
//! key's newest version (`txn::write`): it fails if that version's creator
//! or deleter committed unseen by its snapshot. Once no view sees a
//! deleted key, vacuum would free that version with its index entry, and
//! an old writer would find no row and commit over a change it never saw.
//! Again two ways out:
//!
//! - keep the newest version of a key while a live writer (a Snapshot or
//!   Serializable transaction not begun read-only) does not see its
//!   creator or deleter: PostgreSQL's horizon, restricted to chain heads.
//!   Only a deleted key's head is at stake (a live head is seen by the
//!   fresh view anyway), but every key deleted while a long writer runs
//!   keeps a whole tuple, value and all, and its index entry, and the
//!   default `begin()` is such a writer.
//! - strata's: the ledger takes those creators too. A removed version's
//!   creator is recorded when a live serializable snapshot *or writer*
//!   does not see it, and a writer's put or delete fails when the ledger
//!   holds a creator of the key it does not see. The creator suffices:
//!   a freed head that a writer does not see deleted is one it does not
//!   see created either (a head it sees is kept), and every version below
//!   a head was created, and committed, before the head's creator wrote,
//!   so a writer that does not see a removed creator does not see the
//!   head's either, and would have failed on it. The cost is the ledger's
//!   (a key and a few bytes) and, on the write path, one atomic load
//!   unless the writer's snapshot is older than a recorded creator; when
//!   the ledger is full the head stays, which is the first rule.
//!
//! Work proceeds key by key, in rounds of one mini-transaction each: a
//! round looks at up to `WINDOW` versions from the head, frees the dead
//! ones, relinks the survivors, and repoints or removes the index entry.
//! Dead large values are first freed a group of overflow pages per round.
//! Every round leaves a consistent, fully linked chain, so a crash at any
//! point loses no space and no data.
//!
//! A pass ends by compacting (`compact`: moving live pages down when the
//! file could lose an eighth of itself) and cutting the free pages off the
//! end of the file.

use crate::btree;
use crate::buffer::mtr::{Mtr, PageAccess};
use crate::catalog;
use crate::clock::Timestamp;
use crate::error::Result;
use crate::heap::{self, overflow, tuple};
use crate::ids::{PageId, Tid, Xid};
use crate::limits::{OVERFLOW_PAGES_PER_RECORD, VACUUM_BATCH};
use crate::mvcc::chain::{self, Cursor, Version};
use crate::mvcc::commit_ts;
use crate::mvcc::{visible, Seen, Snapshot, Status, StatusOf};
use crate::redo::record::{Kind, Op};
use crate::store::meta;
use crate::txn::Core;

/// Versions examined per round.
const WINDOW: usize = 32;
/// Pages with less free space than this are not worth a free-space hint.
const FSM_MIN_FREE: usize = 256;
/// Rounds per key per pass (a pass never loops forever on one key).
const ROUNDS_MAX: usize = 1 << 16;

/// Figures from one vacuum pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VacuumStats {
    /// Keys examined.
    pub keys: u64,
    /// Versions removed.
    pub versions_removed: u64,
    /// Keys removed from the index (every version dead).
    pub keys_removed: u64,
    /// Overflow pages freed.
    pub overflow_pages_freed: u64,
    /// Emptied heap pages freed.
    pub heap_pages_freed: u64,
    /// Versions moved down the file to let its end go.
    pub versions_moved: u64,
    /// B+tree nodes moved down the file likewise.
    pub nodes_moved: u64,
    /// Overflow pages (of values larger than a tuple) moved likewise.
    pub overflow_pages_moved: u64,
    /// Sparse neighbouring leaves merged into one.
    pub leaves_merged: u64,
    /// Free pages cut off the end of the data file (the file itself is
    /// cut at the next checkpoint).
    pub pages_cut: u64,
    /// Tables whose pages were freed: dropped before every live snapshot,
    /// or created by a transaction that rolled back or crashed.
    pub tables_freed: u64,
}

pub(crate) struct Views {
    list: Vec<(Snapshot, Xid)>,
    /// The snapshots of live serializable transactions (with their xids).
    serializable: Vec<(Snapshot, Xid)>,
    /// The snapshots of live Snapshot and Serializable transactions that
    /// may write (with their xids): first updater wins judges their writes
    /// by the chain head.
    writers: Vec<(Snapshot, Xid)>,
    pub(crate) now: Snapshot,
    /// The history horizon: a version deleted by a commit stamped after it
    /// may be seen by a read as of a timestamp (`mvcc::history`).
    history: Timestamp,
}

/// One full pass over every table.
///
/// Traced as the span `vacuum` (target `strata::maintenance`) with the
/// database's `dir`; a pass that finishes records its `VacuumStats` in
/// the span's fields of the same names.
pub(crate) fn run(inner: &Core) -> Result<VacuumStats> {
    use tracing::field::Empty;
    let span = tracing::info_span!(
        target: "strata::maintenance",
        "vacuum",
        dir = %inner.engine.dir().display(),
        keys = Empty,
        versions_removed = Empty,
        keys_removed = Empty,
        overflow_pages_freed = Empty,
        heap_pages_freed = Empty,
        versions_moved = Empty,
        nodes_moved = Empty,
        overflow_pages_moved = Empty,
        leaves_merged = Empty,
        pages_cut = Empty,
        tables_freed = Empty,
    );
    let _in = span.enter();
    let stats = pass(inner)?;
    if !span.is_disabled() {
        record(&span, &stats);
    }
    Ok(stats)
}

/// Records a pass's figures in its span.
fn record(span: &tracing::Span, s: &VacuumStats) {
    span.record("keys", s.keys);
    span.record("versions_removed", s.versions_removed);
    span.record("keys_removed", s.keys_removed);
    span.record("overflow_pages_freed", s.overflow_pages_freed);
    span.record("heap_pages_freed", s.heap_pages_freed);
    span.record("versions_moved", s.versions_moved);
    span.record("nodes_moved", s.nodes_moved);
    span.record("overflow_pages_moved", s.overflow_pages_moved);
    span.record("leaves_merged", s.leaves_merged);
    span.record("pages_cut", s.pages_cut);
    span.record("tables_freed", s.tables_freed);
}

fn pass(inner: &Core) -> Result<VacuumStats> {
    inner.engine.writable()?;
    let _one = inner.engine.vacuum_pass();
    inner.engine.store().wal.check()?;
    // Every table any catalog version names: dropped ones too, until
    // `dropped` frees them.
    let roots: Vec<PageId> = catalog::all_roots(&mut inner.engine.store().read().view)?;
    let mut stats = VacuumStats::default();
    for root in roots {
        let mut keys = btree::Batches::new(root);
        loop {
            // The latch is released before the batch is worked on.
            let batch = keys.next(&mut inner.engine.store().read().view, VACUUM_BATCH)?;
            if batch.is_empty() {
                break;
            }
            // The horizon moves with the views: a version deleted by a
            // commit that finished during the pass may go in this batch
            // (the retention allowing), as the views let it.
            let views = gather_advancing(inner)?;
            for (key, _) in &batch {
                stats.keys += 1;
                vacuum_key(inner, root, key, &views, &mut stats)?;
            }
        }
    }
    super::dropped::run(inner, &mut stats)?;
    let planned = super::compact::run(inner, &mut stats)?;
    loop {
        let cut = inner.engine.store().shrink(Op::Vacuum as u8)?;
        if cut == 0 {
            break;
        }
        stats.pages_cut += u64::from(cut);
    }
    super::compact::settle(inner, planned)?;
    inner.engine.vacuumed(stats.keys);
    Ok(stats)
}

/// `gather`, after raising the history horizon (logged) to where the
/// retention puts it now: what a vacuum round may free by.
pub(crate) fn gather_advancing(inner: &Core) -> Result<Views> {
    advance_history(inner)?;
    Ok(gather(inner))
}

pub(crate) fn gather(inner: &Core) -> Views {
    let (live, now) = inner.txns.manager().views();
    let mut list: Vec<(Snapshot, Xid)> = Vec::with_capacity(live.len() + 1);
    let mut serializable = Vec::new();
    let mut writers = Vec::new();
    for v in live {
        list.extend(v.pinned.into_iter().map(|(_, s)| (s, v.xid)));
        let snap = v.snapshot.unwrap_or_else(|| now.clone());
        if v.serializable {
            serializable.push((snap.clone(), v.xid));
        }
        if v.writes {
            writers.push((snap.clone(), v.xid));
        }
        list.push((snap, v.xid));
    }
    list.push((now.clone(), Xid::NONE));
    list.dedup();
    // Every serializable or writing snapshot sees each committed xid below
    // the oldest one's xmin: the ledger needs no writer below it.
    let horizon = serializable
        .iter()
        .chain(&writers)
        .map(|(s, _)| s.xmin)
        .min();
    inner.txns.ledger().prune(horizon);
    Views {
        list,
        serializable,
        writers,
        now,
        history: inner.txns.history().horizon(),
    }
}

/// Whether a live serializable or writing snapshot does not see the
/// committed creator of `v`: a serializable read would skip `v` and take
/// an edge to its creator, and a write of the key would meet the change
/// and fail (first updater wins).
fn unseen_creator(v: &Version, views: &Views, clog: &impl StatusOf) -> bool {
    clog.status(v.xmin) != Status::Aborted
        && views
            .serializable
            .iter()
            .chain(&views.writers)
            .any(|(s, me)| !s.sees(v.xmin, *me, clog))
}

/// Records in the ledger the creators of `versions` about to be freed
/// that a live serializable or writing snapshot does not see, so its
/// reads and writes still meet them (`mvcc::ledger`). With `dry`, only asks, for versions whose
/// large value still has pages, whether the ledger has room (before the
/// pages go). A version the full ledger cannot take becomes needed: it
/// stays in the heap.
pub(super) fn record_unseen(
    inner: &Core,
    (root, key): (PageId, &[u8]),
    versions: &[Version],
    need: &mut [bool],
    views: &Views,
    dry: bool,
) {
    if views.serializable.is_empty() && views.writers.is_empty() {
        return;
    }
    let clog = inner.txns.manager().clog();
    let mut unseen: Vec<usize> = (0..versions.len())
        .filter(|&i| !need[i] && unseen_creator(&versions[i], views, clog))
        .collect();
    if dry {
        unseen.retain(|&i| versions[i].overflow.is_some_and(|(_, len)| len > 0));
        if !unseen.is_empty() && !inner.txns.ledger().has_room(root, key) {
            unseen.iter().for_each(|&i| need[i] = true);
        }
        return;
    }
    let xids: Vec<Xid> = unseen.iter().map(|&i| versions[i].xmin).collect();
    let taken = inner.txns.ledger().record(root, key, &xids);
    for &i in &unseen[taken..] {
        need[i] = true;
    }
}

fn vacuum_key(
    inner: &Core,
    root: PageId,
    key: &[u8],
    views: &Views,
    stats: &mut VacuumStats,
) -> Result<()> {
    for _ in 0..ROUNDS_MAX {
        let mut w = inner.engine.store().write();
        let progressed = round(&mut w.mtr, inner, root, key, views, stats)?;
        w.commit_yielding(Kind::Pages, Op::Vacuum as u8, Xid::NONE)?;
        if !progressed {
            break;
        }
    }
    Ok(())
}

/// Reads up to `WINDOW` versions from `head`; also records each visited
/// heap page's free space, so after a restart the free-space map fills
/// up again as vacuum passes over the heap.
pub(super) fn walk(
    mtr: &mut Mtr<'_>,
    fsm: &crate::store::fsm::Fsm,
    head: Tid,
) -> Result<(Vec<Version>, Tid)> {
    let mut out = Vec::with_capacity(WINDOW);
    let mut c = Cursor::new(head);
    while out.len() < WINDOW {
        let at = c.at();
        if !at.is_null() {
            let free = heap::page::free_space(mtr.page(at.page)?);
            if free >= FSM_MIN_FREE {
                fsm.set(at.page, free);
            }
        }
        match c.next(mtr)? {
            Some(v) => out.push(v),
            None => break,
        }
    }
    Ok((out, c.at()))
}

/// Which versions of the window someone needs. Versions past the window
/// are never freed in this round, whoever needs them.
pub(crate) fn needed(
    acc: &mut impl PageAccess,
    versions: &[Version],
    views: &Views,
    clog: &impl StatusOf,
) -> Result<Vec<bool>> {
    let mut need: Vec<bool> = versions
        .iter()
        .map(|v| clog.status(v.xmin) != Status::Aborted && !views.now.sees(v.xmin, Xid::NONE, clog))
        .collect();
    for (snap, me) in &views.list {
        for (i, v) in versions.iter().enumerate() {
            match visible(v.xmin, v.xmax, snap, *me, clog) {
                Seen::Visible => {
                    need[i] = true;
                    break;
                }
                Seen::Deleted => break,
                Seen::Invisible => {}
            }
        }
    }
    keep_history(acc, versions, views, clog, &mut need)?;
    Ok(need)
}

/// Marks needed the versions a read as of a timestamp at or above the
/// history horizon may see: created by a commit, deleted (or replaced)
/// by one stamped after the horizon. Nothing to look up while every
/// timestamp assigned is at or below the horizon.
fn keep_history(
    acc: &mut impl PageAccess,
    versions: &[Version],
    views: &Views,
    clog: &impl StatusOf,
    need: &mut [bool],
) -> Result<()> {
    let committed = |x: Xid| x != Xid::NONE && clog.status(x) == Status::Committed;
    let mut high = None;
    for (v, n) in versions.iter().zip(need.iter_mut()) {
        if *n || !committed(v.xmin) || !committed(v.xmax) {
            continue;
        }
        let high = match high {
            Some(h) => h,
            None => *high.insert(commit_ts::high_water(acc)?),
        };
        if high <= views.history {
            return Ok(());
        }
        *n = commit_ts::of_committed(acc, v.xmax)? > views.history;
    }
    Ok(())
}

/// Where the retention puts the horizon now: `retention` behind the
/// clock's `earliest` (`None` if the clock cannot say).
fn horizon_wanted(inner: &Core) -> Option<Timestamp> {
    let opts = inner.engine.opts();
    let now = opts.clock.0.now().ok()?;
    Some(now.earliest.saturating_sub(opts.history_retention))
}

/// The views a vacuum pass starting now would work with, its history
/// horizon included (`gather` takes the horizon as it stands): what
/// `Stats` counts as dead.
pub(crate) fn gather_for_pass(inner: &Core) -> Views {
    let mut views = gather(inner);
    if let Some(to) = horizon_wanted(inner) {
        views.history = inner.txns.history().peek(to);
    }
    views
}

/// Raises the history horizon to `retention` behind the clock's
/// `earliest` (not past a live read as of a timestamp), logging it before
/// anything it lets go is freed. A clock that cannot say leaves it.
fn advance_history(inner: &Core) -> Result<()> {
    let Some(to) = horizon_wanted(inner) else {
        return Ok(());
    };
    let (horizon, moved) = inner.txns.history().advance(to);
    if moved {
        let mut w = inner.engine.store().write();
        commit_ts::set_horizon(&mut w.mtr, horizon)?;
        w.commit(Kind::Pages, Op::Timestamp as u8, Xid::NONE)?;
    }
    Ok(())
}

/// One round on one key; true if it changed something.
fn round(
    mtr: &mut Mtr<'_>,
    inner: &Core,
    root: PageId,
    key: &[u8],
    views: &Views,
    stats: &mut VacuumStats,
) -> Result<bool> {
    let Some(v) = btree::get(mtr, root, key)? else {
        return Ok(false);
    };
    let head = chain::head(mtr, &v)?;
    let (versions, tail) = walk(mtr, &inner.engine.store().fsm, head)?;
    let mut need = needed(mtr, &versions, views, inner.txns.manager().clog())?;
    if need.iter().all(|&n| n) {
        return Ok(false);
    }
    // A dead large value goes first, a group of pages per round, if the
    // ledger will take its creator when the version goes.
    record_unseen(inner, (root, key), &versions, &mut need, views, true);
    for (v, _) in versions.iter().zip(&need).filter(|(_, &n)| !n) {
        if let Some((first, len)) = v.overflow.filter(|&(_, len)| len > 0) {
            shrink_overflow(mtr, v.tid, first, len as usize, stats)?;
            return Ok(true);
        }
    }
    // Before anything is freed, under the latch readers take the chain
    // under: a reader finds each creator in the chain or in the ledger.
    // (A version kept now may have lost its value's pages: no snapshot
    // sees it, and a reader that skips it reads only its header.)
    record_unseen(inner, (root, key), &versions, &mut need, views, false);
    remove(
        mtr,
        inner,
        (root, key),
        (head, tail),
        &versions,
        &need,
        stats,
    )
}

/// Removes the versions of the window not `need`ed, relinking the rest
/// (the last to `tail`) and repointing or removing the index entry;
/// true if it removed any.
pub(super) fn remove(
    mtr: &mut Mtr<'_>,
    inner: &Core,
    (root, key): (PageId, &[u8]),
    (head, tail): (Tid, Tid),
    versions: &[Version],
    need: &[bool],
    stats: &mut VacuumStats,
) -> Result<bool> {
    if need.iter().all(|&n| n) {
        return Ok(false);
    }
    relink_survivors(mtr, (root, key), (head, tail), versions, need, stats)?;
    remove_dead(mtr, inner, versions, need, stats)?;
    Ok(true)
}

/// Links the versions `need` keeps past the dead ones, the last to the
/// chain's `tail`, and points the index entry of `key` at the first (or
/// removes the entry when none is kept and there is no tail).
fn relink_survivors(
    mtr: &mut Mtr<'_>,
    (root, key): (PageId, &[u8]),
    (head, tail): (Tid, Tid),
    versions: &[Version],
    need: &[bool],
    stats: &mut VacuumStats,
) -> Result<()> {
    assert_eq!(versions.len(), need.len(), "a verdict for every version");
    let survivors: Vec<&Version> = versions
        .iter()
        .zip(need)
        .filter(|(_, &n)| n)
        .map(|(v, _)| v)
        .collect();
    assert!(
        survivors.len() < versions.len(),
        "relinking a chain that loses no version"
    );
    for (i, s) in survivors.iter().enumerate() {
        let want = survivors.get(i + 1).map_or(tail, |n| n.tid);
        if s.prev != want {
            heap::modify(mtr, s.tid, |b| tuple::set_prev(b, want))?;
        }
    }
    let new_head = survivors.first().map_or(tail, |s| s.tid);
    if new_head != head {
        if new_head.is_null() {
            btree::remove(mtr, root, key)?;
            stats.keys_removed += 1;
        } else {
            btree::insert(mtr, root, key, &new_head.encode())?;
        }
    }
    Ok(())
}

/// Removes the versions `need` does not keep (no longer linked) from
/// their heap pages, and frees pages left empty.
fn remove_dead(
    mtr: &mut Mtr<'_>,
    inner: &Core,
    versions: &[Version],
    need: &[bool],
    stats: &mut VacuumStats,
) -> Result<()> {
    assert_eq!(versions.len(), need.len(), "a verdict for every version");
    let fsm = &inner.engine.store().fsm;
    let mut touched = Vec::new();
    for (v, _) in versions.iter().zip(need).filter(|(_, &n)| !n) {
        heap::remove(mtr, fsm, v.tid)?;
        stats.versions_removed += 1;
        touched.push(v.tid.page);
    }
    touched.sort_unstable();
    touched.dedup();
    for pid in touched {
        if heap::release_if_empty(mtr, fsm, pid)? {
            stats.heap_pages_freed += 1;
        }
    }
    Ok(())
}

/// Frees the first pages of a dead version's overflow chain and points
/// the tuple at the rest.
pub(super) fn shrink_overflow(
    mtr: &mut Mtr<'_>,
    tid: Tid,
    first: PageId,
    len: usize,
    stats: &mut VacuumStats,
) -> Result<()> {
    let pages = overflow::pages(mtr, first, len)?;
    let cut = pages.len().min(OVERFLOW_PAGES_PER_RECORD);
    let freed_bytes = if cut == pages.len() {
        len
    } else {
        cut * overflow::CAPACITY
    };
    let rest = pages.get(cut).copied().unwrap_or(PageId(0));
    for &pid in &pages[..cut] {
        meta::free(mtr, pid)?;
    }
    stats.overflow_pages_freed += cut as u64;
    let remaining = (len - freed_bytes) as u32;
    heap::modify(mtr, tid, |b| tuple::set_overflow(b, rest, remaining))?;
    Ok(())
}
