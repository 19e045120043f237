//! Optimistic validation (`Transaction::changed_since`): the first key of
//! a range changed after a timestamp — created, replaced or deleted by a
//! commit stamped after it, or held by a transaction not yet decided —
//! and nothing for what changed at or before it, for rolled-back writes,
//! or for the transaction's own.

mod common;

use std::sync::Arc;
use std::time::Duration;

use strata::clock::{SimClock, Timestamp};
use strata::{Db, Durability, Error, Options, Table};

const START: u64 = 1_796_601_600_000_000_000;

fn commit(db: &Db, clock: &SimClock, f: impl FnOnce(&mut strata::Transaction)) -> Timestamp {
    clock.advance(Duration::from_millis(1));
    let mut tx = db.begin().expect("begin");
    f(&mut tx);
    tx.commit().expect("commit").ts
}

fn changed(db: &Db, t: &Table, range: impl strata::KeyRange, ts: Timestamp) -> Option<Vec<u8>> {
    db.begin()
        .expect("begin")
        .changed_since(t, range, ts)
        .expect("changed_since")
}

/// A database on `clock`, without background work, keeping `retention`
/// of history.
fn sim_db(dir: &std::path::Path, clock: &SimClock, retention: Duration) -> Db {
    let opts = Options::default()
        .durability(Durability::Eventual)
        .background(false)
        .history_retention(retention)
        .clock(Arc::new(clock.clone()));
    Db::open_with(dir, opts).expect("open")
}

#[test]
fn changed_since_finds_the_first_key_changed_after_a_timestamp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let db = sim_db(dir.path(), &clock, Duration::ZERO);
    let t = db.table("t").expect("table");
    let t0 = commit(&db, &clock, |tx| {
        for k in ["a", "b", "c", "d"] {
            tx.put(&t, k, "0").expect("put");
        }
    });
    let t1 = commit(&db, &clock, |tx| tx.put(&t, "b", "1").expect("update"));
    let t2 = commit(&db, &clock, |tx| {
        tx.delete(&t, "c").expect("delete");
    });
    let t3 = commit(&db, &clock, |tx| tx.put(&t, "e", "3").expect("insert"));
    // A rolled-back write is no change.
    let mut rolled = db.begin().expect("begin");
    rolled.put(&t, "a", "never").expect("put");
    rolled.rollback().expect("rollback");

    assert_eq!(
        changed(&db, &t, .., t3),
        None,
        "nothing after the last commit"
    );
    assert_eq!(
        changed(&db, &t, .., t2),
        Some(b"e".to_vec()),
        "inserted at t3"
    );
    assert_eq!(
        changed(&db, &t, .."e", t1),
        Some(b"c".to_vec()),
        "deleted at t2"
    );
    assert_eq!(
        changed(&db, &t, .."c", t1),
        None,
        "b changed at t1 itself, not after"
    );
    assert_eq!(
        changed(&db, &t, .."c", t0),
        Some(b"b".to_vec()),
        "updated at t1"
    );
    assert_eq!(changed(&db, &t, "a"..="a", t0), None);
    let before = Timestamp::from_nanos(t0.as_nanos() - 1);
    assert_eq!(
        changed(&db, &t, .., before),
        Some(b"a".to_vec()),
        "created at t0"
    );

    // Held by a running transaction, then by a prepared one: a change.
    let mut holder = db.begin().expect("begin");
    holder.put(&t, "d", "held").expect("put");
    assert_eq!(
        changed(&db, &t, "d"..="d", t3),
        Some(b"d".to_vec()),
        "running writer"
    );
    holder.prepare("g").expect("prepare");
    assert_eq!(
        changed(&db, &t, "d"..="d", t3),
        Some(b"d".to_vec()),
        "prepared writer"
    );
    db.rollback_prepared("g").expect("rollback");
    assert_eq!(changed(&db, &t, "d"..="d", t3), None, "rolled back");

    // The transaction's own writes are not changes.
    let mut mine = db.begin().expect("begin");
    mine.put(&t, "a", "mine").expect("put");
    mine.delete(&t, "b").expect("delete");
    assert_eq!(
        mine.changed_since(&t, .."c", t1).expect("changed_since"),
        None
    );
    drop(mine);

    // Past the history horizon the versions that would answer may be gone.
    db.vacuum().expect("vacuum");
    match db.begin().expect("begin").changed_since(&t, .., t1) {
        Err(Error::SnapshotTooOld { .. }) => {}
        other => panic!("below the horizon: {other:?}"),
    }
}

/// Over many keys (more than one batch of the scan) with updates spread in
/// time, the answer for every timestamp is the first key whose last change
/// came after it.
#[test]
fn changed_since_agrees_with_a_model_over_many_keys_and_timestamps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let db = sim_db(dir.path(), &clock, Duration::from_secs(3600));
    let t = db.table("t").expect("table");
    let mut rng = common::xorshift(99);
    // key → the timestamps of its changes.
    let mut changes: std::collections::BTreeMap<Vec<u8>, Vec<Timestamp>> = Default::default();
    let mut stamps = Vec::new();
    for round in 0..60 {
        let keys: Vec<Vec<u8>> = (0..1 + rng(8))
            .map(|_| format!("k{:04}", rng(600)).into_bytes())
            .collect();
        // The keys this commit changes (a delete of an absent key is none).
        let mut touched = Vec::new();
        let ts = commit(&db, &clock, |tx| {
            for k in &keys {
                if round > 0 && rng(5) == 0 {
                    if tx.delete(&t, k).expect("delete") {
                        touched.push(k.clone());
                    }
                } else {
                    tx.put(&t, k, [round as u8]).expect("put");
                    touched.push(k.clone());
                }
            }
        });
        for k in touched {
            changes.entry(k).or_default().push(ts);
        }
        stamps.push(ts);
    }
    // Last, a change to the last key alone: found only past every batch.
    let last = b"k9999".to_vec();
    let ts = commit(&db, &clock, |tx| tx.put(&t, &last, "z").expect("put"));
    changes.entry(last).or_default().push(ts);
    stamps.push(ts);
    db.vacuum().expect("vacuum");
    let before_last = stamps[stamps.len() - 2];
    assert_eq!(changed(&db, &t, .., before_last), Some(b"k9999".to_vec()));
    for &at in stamps.iter().step_by(7) {
        let want = changes
            .iter()
            .find(|(_, ts)| ts.iter().any(|&c| c > at))
            .map(|(k, _)| k.clone());
        assert_eq!(changed(&db, &t, .., at), want, "the whole table as of {at}");
        // And from a key in the middle on (a later batch's start).
        let mid = b"k0300".to_vec();
        let want = changes
            .range(mid.clone()..)
            .find(|(_, ts)| ts.iter().any(|&c| c > at))
            .map(|(k, _)| k.clone());
        assert_eq!(changed(&db, &t, mid.., at), want, "from k0300 as of {at}");
    }
}

fn table_change(r: strata::Result<Option<Vec<u8>>>, what: &str) {
    match r {
        Err(Error::SerializationFailure {
            cause: strata::Conflict::ConcurrentTableChange,
            table: Some(_),
            key: None,
        }) => {}
        other => panic!("{what}: {other:?}"),
    }
}

/// The table itself changing after the timestamp is a change of every key
/// read under its name: renamed over, dropped (seen from a snapshot older
/// than the drop), dropped by an undecided transaction, dropped and made
/// again. A table made since where none was is new (its first key
/// answers); a name never made is an empty table that did not change.
#[test]
fn a_change_of_the_table_itself_fails_the_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let db = sim_db(dir.path(), &clock, Duration::from_secs(3600));
    let (t, u, v) = (
        db.table("t").expect("t"),
        db.table("u").expect("u"),
        db.table("v").expect("v"),
    );
    let t0 = commit(&db, &clock, |tx| {
        tx.put(&t, "k", "t's").expect("put");
        tx.put(&u, "k", "u's").expect("put");
        tx.put(&v, "k", "v's").expect("put");
    });
    assert_eq!(changed(&db, &t, .., t0), None);
    // An undecided drop.
    let mut dropper = db.begin().expect("begin");
    assert!(dropper.drop_table(&v).expect("drop"));
    table_change(
        db.begin().expect("b").changed_since(&v, .., t0),
        "undecided drop",
    );
    dropper.rollback().expect("rollback");
    assert_eq!(changed(&db, &v, .., t0), None, "rolled back");
    // A drop, seen from a snapshot older than it.
    let old = db.begin_with(strata::Isolation::Snapshot).expect("begin");
    commit(&db, &clock, |tx| {
        tx.drop_table(&v).expect("drop");
    });
    table_change(old.changed_since(&v, .., t0), "dropped after t0");
    // Dropped and made again, empty.
    commit(&db, &clock, |tx| {
        tx.create_table(&v).expect("create");
    });
    table_change(
        db.begin().expect("b").changed_since(&v, .., t0),
        "dropped and made again",
    );
    // Names swapped: t now holds u's rows, all written at t0.
    commit(&db, &clock, |tx| {
        tx.rename_table(&t, "x").expect("rename");
        tx.rename_table(&u, "t").expect("rename");
    });
    let tx = db.begin().expect("begin");
    assert_eq!(tx.get(&t, "k").expect("get"), Some(b"u's".to_vec()));
    table_change(tx.changed_since(&t, .., t0), "renamed over");
    // A table made since where none was: new, its first key answers.
    let w = db.table("w").expect("w");
    commit(&db, &clock, |tx| tx.put(&w, "a", "1").expect("put"));
    assert_eq!(changed(&db, &w, .., t0), Some(b"a".to_vec()));
    // Never made: nothing changed.
    assert_eq!(changed(&db, &db.table("never").expect("t"), .., t0), None);
}

/// The history horizon is held for the whole check: vacuum passes running
/// beside slow checks (the checker's own versions on every key to walk)
/// never free a version one still needs — each answer is the key deleted
/// after the timestamp, or `SnapshotTooOld`, never "unchanged". By default
/// a short run (20 trials over 100 keys of 50 versions); with
/// `STRATA_VALIDATE_TRIALS=n`, n trials over 300 keys of 200 versions
/// (`.ci/run`: 150, release, where the race is caught).
#[test]
fn vacuum_beside_a_check_never_frees_what_it_needs() {
    let (trials, keys, versions) = match std::env::var("STRATA_VALIDATE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(n) => (n, 300, 200u32),
        None => (20, 100, 50),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let db = sim_db(dir.path(), &clock, Duration::ZERO);
    let t = db.table("t").expect("table");
    let keys: Vec<String> = (0..keys).map(|i| format!("k{i:04}")).collect();
    commit(&db, &clock, |tx| {
        for k in &keys {
            tx.put(&t, k, "0").expect("put");
        }
    });
    let mut me = db
        .begin_with(strata::Isolation::ReadCommitted)
        .expect("begin");
    for round in 0..versions {
        for k in &keys {
            me.put(&t, k, round.to_le_bytes()).expect("put");
        }
    }
    let (mut right, mut too_old) = (0, 0);
    for i in 0..trials {
        let z = format!("z{i:03}");
        let at = commit(&db, &clock, |tx| tx.put(&t, &z, "v").expect("put"));
        commit(&db, &clock, |tx| {
            tx.delete(&t, &z).expect("delete");
        });
        clock.advance(Duration::from_millis(50));
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                barrier.wait();
                db.vacuum().expect("vacuum")
            });
            barrier.wait();
            match me.changed_since(&t, .., at) {
                Ok(Some(k)) if k == z.as_bytes() => right += 1,
                Err(Error::SnapshotTooOld { .. }) => too_old += 1,
                other => panic!("trial {i}: {z} deleted after {at}, answer {other:?}"),
            }
        });
    }
    println!("{right} answered, {too_old} too old");
}
