//! Freeing tables no one can see any more: the catalog's vacuum.
//!
//! A table's root is named by catalog versions (`catalog`): one per name it
//! had. Once every version naming a root is dead to every view — its
//! creator rolled back (or crashed), or a drop committed before every
//! live snapshot — no transaction can reach the table again (a new name
//! for it could only be made from a version someone sees), and its pages
//! are garbage. A pass:
//!
//! 1. *plan* (under the read latch): every catalog version with the root
//!    it names and whether a view needs it (`vacuum::needed`); the
//!    orphans are the roots named by dead versions alone. Dead stays dead
//!    (the views are fixed for the pass, and a status only moves from
//!    running to finished), so an orphan stays one;
//! 2. *empty* each orphan key by key, every version of every key freed
//!    with its large value, one mini-transaction per round as vacuum's
//!    rounds (a crash leaves a smaller table, still named by its dead
//!    catalog versions, which the next pass goes on emptying);
//! 3. *sweep* the catalog key by key: remove the versions the plan found
//!    dead (only those: one it found needed may have lost its need since,
//!    and its root is not planned for), and in the mini-transaction that
//!    removes the last version naming an orphan, free the orphan's root,
//!    empty by then. So no crash point leaves a root no version names.
//!
//! The sweep records in the ledger the creators a live serializable or
//! writing snapshot does not see, as vacuum does for any row: a catalog
//! row is read and written like one.

use std::collections::{HashMap, HashSet};

use super::vacuum::{self, VacuumStats, Views};
use crate::btree::{self, Dir};
use crate::buffer::mtr::{Mtr, PageAccess};
use crate::catalog;
use crate::error::Result;
use crate::ids::{PageId, Tid, Xid};
use crate::limits::VACUUM_BATCH;
use crate::mvcc::chain::{self, Cursor};
use crate::redo::record::{Kind, Op};
use crate::store::meta;
use crate::txn::Core;

/// Rounds per key (a pass never loops forever on one key).
const ROUNDS_MAX: usize = 1 << 16;

/// What the plan found.
#[derive(Default)]
struct Plan {
    /// Catalog versions no view needs.
    dead: HashSet<Tid>,
    /// Roots named by dead versions alone, with how many name them.
    orphans: HashMap<PageId, usize>,
    /// Catalog keys with dead versions.
    keys: Vec<Vec<u8>>,
}

/// Frees the tables no one can see and sweeps the catalog.
pub(super) fn run(inner: &Core, stats: &mut VacuumStats) -> Result<()> {
    let views = vacuum::gather_advancing(inner)?;
    let plan = plan(inner, &views)?;
    for &root in plan.orphans.keys() {
        empty(inner, root, stats)?;
    }
    let mut left = plan.orphans.clone();
    for key in &plan.keys {
        sweep(inner, key, &views, &plan, &mut left, stats)?;
    }
    Ok(())
}

fn plan(inner: &Core, views: &Views) -> Result<Plan> {
    let mut r = inner.engine.store().read();
    let clog = inner.txns.manager().clog();
    let mut plan = Plan::default();
    // Root → (versions a view needs, dead versions) naming it.
    let mut named: HashMap<PageId, (usize, usize)> = HashMap::new();
    for (name, head) in catalog::rows(&mut r.view)? {
        let (mut versions, mut roots) = (Vec::new(), Vec::new());
        let mut c = Cursor::new(head);
        while let Some((v, bytes)) = c.step(&mut r.view)? {
            let t = chain::decode(&r.view, &bytes, v.tid)?;
            roots.push(catalog::root_of(r.view.file(), &name, t.body)?);
            versions.push(v);
        }
        let need = vacuum::needed(&mut r.view, &versions, views, clog)?;
        let mut any = false;
        for ((v, root), &n) in versions.iter().zip(&roots).zip(&need) {
            let e = named.entry(*root).or_default();
            if n {
                e.0 += 1;
            } else {
                e.1 += 1;
                plan.dead.insert(v.tid);
                any = true;
            }
        }
        if any {
            plan.keys.push(name);
        }
    }
    plan.orphans = named
        .into_iter()
        .filter(|(_, (live, _))| *live == 0)
        .map(|(root, (_, dead))| (root, dead))
        .collect();
    Ok(plan)
}

/// Frees every version of every key of the table at `root`, leaving an
/// empty root leaf.
fn empty(inner: &Core, root: PageId, stats: &mut VacuumStats) -> Result<()> {
    let mut keys = btree::Batches::new(root);
    loop {
        let batch = keys.next(&mut inner.engine.store().read().view, VACUUM_BATCH)?;
        if batch.is_empty() {
            return Ok(());
        }
        for (key, _) in &batch {
            empty_key(inner, root, key, stats)?;
        }
    }
}

fn empty_key(inner: &Core, root: PageId, key: &[u8], stats: &mut VacuumStats) -> Result<()> {
    let fsm = &inner.engine.store().fsm;
    for _ in 0..ROUNDS_MAX {
        let mut w = inner.engine.store().write();
        let Some(entry) = btree::get(&mut w.mtr, root, key)? else {
            return Ok(());
        };
        let head = chain::head(&w.mtr, &entry)?;
        let (versions, tail) = vacuum::walk(&mut w.mtr, fsm, head)?;
        // A large value goes first, a group of pages per round.
        let big = versions
            .iter()
            .find_map(|v| v.overflow.filter(|&(_, len)| len > 0).map(|o| (v.tid, o)));
        match big {
            Some((tid, (first, len))) => {
                vacuum::shrink_overflow(&mut w.mtr, tid, first, len as usize, stats)?
            }
            None => {
                let none = vec![false; versions.len()];
                let at = (root, key);
                vacuum::remove(&mut w.mtr, inner, at, (head, tail), &versions, &none, stats)?;
            }
        }
        w.commit_yielding(Kind::Pages, Op::Vacuum as u8, Xid::NONE)?;
    }
    Ok(())
}

/// Removes the dead versions of catalog key `name`, freeing the root of
/// an orphan whose last version goes.
fn sweep(
    inner: &Core,
    name: &[u8],
    views: &Views,
    plan: &Plan,
    left: &mut HashMap<PageId, usize>,
    stats: &mut VacuumStats,
) -> Result<()> {
    let cat = inner.catalog;
    let mut w = inner.engine.store().write();
    let mtr = &mut w.mtr;
    let Some(entry) = btree::get(mtr, cat, name)? else {
        return Ok(());
    };
    let head = chain::head(mtr, &entry)?;
    let (versions, tail) = vacuum::walk(mtr, &inner.engine.store().fsm, head)?;
    let mut need: Vec<bool> = versions
        .iter()
        .map(|v| !plan.dead.contains(&v.tid))
        .collect();
    vacuum::record_unseen(inner, (cat, name), &versions, &mut need, views, false);
    let mut freed = Vec::new();
    for (v, n) in versions.iter().zip(need.iter_mut()) {
        if *n {
            continue;
        }
        let bytes = crate::heap::read(mtr, v.tid)?;
        let t = chain::decode(mtr, &bytes, v.tid)?;
        let root = catalog::root_of(mtr.file(), name, t.body)?;
        let Some(count) = left.get_mut(&root) else {
            // A root some version the plan found needed still names (and
            // that version is not removed in this pass).
            continue;
        };
        if *count > 1 {
            *count -= 1;
        } else if *count == 1 && is_empty(mtr, root)? {
            *count = 0;
            freed.push(root);
        } else {
            *n = true;
        }
    }
    vacuum::remove(
        mtr,
        inner,
        (cat, name),
        (head, tail),
        &versions,
        &need,
        stats,
    )?;
    for root in freed {
        meta::free(mtr, root)?;
        stats.tables_freed += 1;
    }
    w.commit_yielding(Kind::Pages, Op::Vacuum as u8, Xid::NONE)?;
    Ok(())
}

/// Whether the tree at `root` is a single empty leaf.
fn is_empty(mtr: &mut Mtr<'_>, root: PageId) -> Result<bool> {
    if btree::children(mtr, root)?.is_some() {
        return Ok(false);
    }
    let mut first = Vec::new();
    let all = std::ops::Bound::Unbounded;
    btree::range(mtr, root, all, all, Dir::Forward, 1, &mut first)?;
    Ok(first.is_empty())
}
