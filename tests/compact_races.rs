//! Compaction racing other work on the same trees: whatever changes
//! between two of its mini-transactions, a vacuum pass reports no damage
//! that is not there, and the database is sound afterwards.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use strata::fault::FaultFs;
use strata::internals::RacePoint;
use strata::{Db, Error, Isolation, Options};

/// Threads preparing and deciding transactions.
const DECIDERS: usize = 4;
/// Transactions each decider keeps prepared at once (all of them stay
/// under `PREPARED_MAX`).
const IN_DOUBT: usize = 250;
/// Transactions each decider prepares, at most.
const PREPARES_MAX: usize = 100_000;
/// Vacuum passes, each after rows that give compaction work.
const PASSES: usize = 10;
/// Rows written and deleted before each pass.
const ROWS: u32 = 600;
/// Decisions compaction waits for each time it lets the latch go between
/// two visits of a tree, and how many times it looks for them.
const DECISIONS_PER_VISIT: u64 = 8;
const LOOKS_MAX: u32 = 200;

/// Long gids: few to a leaf, so the registry's tree has many leaves, and
/// deciding the oldest empties and frees one every few decisions.
fn gid(thread: usize, i: usize) -> String {
    format!("{thread}-{i:06}-{}", "g".repeat(180))
}

/// Prepares transactions and decides the oldest, keeping `IN_DOUBT`
/// prepared, until `stop`; then decides the rest. Counts decisions in
/// `decided`; returns the errors.
fn churn(db: &Db, thread: usize, stop: &AtomicBool, decided: &AtomicU64) -> Vec<Error> {
    let mut errors = Vec::new();
    let mut waiting = VecDeque::new();
    let decide = |i: usize| {
        let gid = gid(thread, i);
        let r = if i.is_multiple_of(2) {
            db.commit_prepared(&gid)
        } else {
            db.rollback_prepared(&gid)
        };
        decided.fetch_add(1, Ordering::Relaxed);
        r.err()
    };
    for i in 0..PREPARES_MAX {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // Read Committed and reading nothing: it holds back no version,
        // so each pass's deleted rows are vacuum's to remove.
        let tx = db.begin_with(Isolation::ReadCommitted).expect("begin");
        match tx.prepare(&gid(thread, i)) {
            Ok(_) => waiting.push_back(i),
            Err(e) => errors.push(e),
        }
        while waiting.len() > IN_DOUBT {
            let Some(j) = waiting.pop_front() else { break };
            errors.extend(decide(j));
        }
    }
    for j in waiting {
        errors.extend(decide(j));
    }
    errors
}

/// Holds compaction, each time it has let the latch go between two visits
/// of a tree, until a few decisions went through (or the deciders stop):
/// it then meets trees changed under it at every step.
fn wait_for_decisions(
    decided: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> impl Fn(RacePoint) + Send + Sync + 'static {
    move |point| {
        if point != RacePoint::CompactionVisit {
            return;
        }
        let until = decided.load(Ordering::Relaxed) + DECISIONS_PER_VISIT;
        for _ in 0..LOOKS_MAX {
            if decided.load(Ordering::Relaxed) >= until || stop.load(Ordering::Relaxed) {
                return;
            }
            thread::sleep(Duration::from_micros(100));
        }
    }
}

// Guards against compaction reading B+tree nodes by page ids it kept
// across a latch release, after a 2PC decision freed them (a false
// `Corruption` from `vacuum`).
#[test]
fn decisions_during_compaction_report_no_corruption() {
    let decided = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let opts = Options::default()
        .vacuum_threshold(0)
        .race_hook(wait_for_decisions(decided.clone(), stop.clone()));
    // In memory: decisions are forced to disk, and real fsyncs would
    // leave compaction few of them to meet.
    let db = Db::open_vfs(Arc::new(FaultFs::new()), Path::new("/db"), opts).expect("open");
    let t = db.table("t").expect("t");
    let deciders: Vec<_> = (0..DECIDERS)
        .map(|thread| {
            let (db, stop, decided) = (db.clone(), stop.clone(), decided.clone());
            thread::spawn(move || churn(&db, thread, &stop, &decided))
        })
        .collect();
    let mut vacuum_errors = Vec::new();
    let mut nodes_moved = 0;
    for pass in 0..PASSES {
        // The prepared transactions' tree's leaves split while these rows go in lie among them, so
        // once they are gone compaction moves those leaves down.
        let key = |i: u32| format!("{pass:02}-{i:06}");
        let mut tx = db.begin().expect("begin");
        for i in 0..ROWS {
            tx.put(&t, key(i), [7u8; 200]).expect("put");
        }
        tx.commit().expect("commit");
        let mut tx = db.begin().expect("begin");
        for i in 0..ROWS {
            tx.delete(&t, key(i)).expect("delete");
        }
        tx.commit().expect("commit");
        match db.vacuum() {
            Ok(s) => nodes_moved += s.nodes_moved,
            Err(e) => {
                vacuum_errors.push(e);
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let decide_errors: Vec<Error> = deciders
        .into_iter()
        .flat_map(|h| h.join().expect("decider"))
        .collect();
    let corrupt = |e: &Error| matches!(e, Error::Corruption { .. });
    assert!(
        !vacuum_errors.iter().any(corrupt),
        "vacuum reported corruption: {vacuum_errors:?}"
    );
    assert!(
        !decide_errors.iter().any(corrupt),
        "a decision reported corruption: {decide_errors:?}"
    );
    assert!(vacuum_errors.is_empty(), "{vacuum_errors:?}");
    assert!(decide_errors.is_empty(), "{decide_errors:?}");
    assert!(nodes_moved > 0, "compaction never moved a node");
    assert!(db.prepared_transactions().expect("list").is_empty());
    db.check_integrity().expect("sound after the races");
}
