//! The anomaly suite: one scenario per anomaly of Adya's and Berenson's
//! taxonomies (the ones Hermitage tests against PostgreSQL), run at each
//! isolation level, with the outcome each level must give. "Prevented"
//! means the anomalous history cannot complete: a read returns the
//! non-anomalous value, or a transaction fails with a retryable error.

mod common;

use common::open;
use strata::{Db, Error, Isolation, Table, Transaction};

const LEVELS: [Isolation; 3] = [
    Isolation::ReadCommitted,
    Isolation::Snapshot,
    Isolation::Serializable,
];

fn setup() -> (tempfile::TempDir, Db, Table) {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("test").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "1", "10").expect("put");
    tx.put(&t, "2", "20").expect("put");
    tx.commit().expect("commit");
    (tmp, db, t)
}

fn num(tx: &Transaction, t: &Table, k: &str) -> strata::Result<i64> {
    Ok(tx.get(t, k)?.map_or(0, |v| {
        String::from_utf8(v).expect("utf8").parse().expect("int")
    }))
}

fn set(tx: &mut Transaction, t: &Table, k: &str, v: i64) -> strata::Result<()> {
    tx.put(t, k, v.to_string())
}

fn keys_in(tx: &Transaction, t: &Table, lo: &str, hi: &str) -> strata::Result<Vec<Vec<u8>>> {
    tx.scan(t, lo..hi)?.map(|r| r.map(|(k, _)| k)).collect()
}

/// Runs `f`; a retryable error means the anomaly was prevented.
fn prevented(f: impl FnOnce() -> strata::Result<bool>) -> bool {
    match f() {
        Ok(anomaly) => !anomaly,
        Err(e) if e.is_retryable() => true,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// G0, write cycles: two transactions' writes to x and y interleave.
fn g0(level: Isolation) -> bool {
    let (_d, db, t) = setup();
    prevented(|| {
        let mut t1 = db.begin_with(level)?;
        let mut t2 = db.begin_with(level)?;
        set(&mut t1, &t, "1", 11)?;
        set(&mut t1, &t, "2", 21)?;
        t1.commit()?;
        set(&mut t2, &t, "1", 12)?;
        set(&mut t2, &t, "2", 22)?;
        t2.commit()?;
        let r = db.begin()?;
        // A write cycle would leave the two keys from different transactions.
        Ok((num(&r, &t, "1")?, num(&r, &t, "2")?) != (12, 22))
    })
}

/// G1a, aborted reads.
fn g1a(level: Isolation) -> bool {
    let (_d, db, t) = setup();
    prevented(|| {
        let mut t1 = db.begin_with(level)?;
        let t2 = db.begin_with(level)?;
        set(&mut t1, &t, "1", 101)?;
        let during = num(&t2, &t, "1")?;
        t1.rollback()?;
        Ok(during == 101 || num(&t2, &t, "1")? == 101)
    })
}

/// G1b, intermediate reads.
fn g1b(level: Isolation) -> bool {
    let (_d, db, t) = setup();
    prevented(|| {
        let mut t1 = db.begin_with(level)?;
        let t2 = db.begin_with(level)?;
        set(&mut t1, &t, "1", 101)?;
        set(&mut t1, &t, "1", 11)?;
        let during = num(&t2, &t, "1")?;
        t1.commit()?;
        Ok(during == 101 || num(&t2, &t, "1")? == 101)
    })
}

/// G1c, circular information flow.
fn g1c(level: Isolation) -> bool {
    let (_d, db, t) = setup();
    prevented(|| {
        let mut t1 = db.begin_with(level)?;
        let mut t2 = db.begin_with(level)?;
        set(&mut t1, &t, "1", 11)?;
        set(&mut t2, &t, "2", 22)?;
        let t1_sees = num(&t1, &t, "2")?;
        let t2_sees = num(&t2, &t, "1")?;
        t1.commit()?;
        t2.commit()?;
        Ok(t1_sees == 22 && t2_sees == 11)
    })
}

/// OTV, observed transaction vanishes.
fn otv(level: Isolation) -> bool {
    let (_d, db, t) = setup();
    prevented(|| {
        let mut t1 = db.begin_with(level)?;
        let mut t2 = db.begin_with(level)?;
        let t3 = db.begin_with(level)?;
        set(&mut t1, &t, "1", 11)?;
        set(&mut t1, &t, "2", 19)?;
        t1.commit()?;
        set(&mut t2, &t, "1", 12)?;
        let x = num(&t3, &t, "1")?;
        set(&mut t2, &t, "2", 18)?;
        let y = num(&t3, &t, "2")?;
        t2.commit()?;
        // T3 saw part of T1 and then part of T2 (or T1 vanished).
        Ok((x, y) == (11, 18) || (x, y) == (12, 19))
    })
}

/// PMP, predicate-many-preceders: a repeated scan sees a new row.
fn pmp(level: Isolation) -> bool {
    let (_d, db, t) = setup();
    prevented(|| {
        let t1 = db.begin_with(level)?;
        let mut t2 = db.begin_with(level)?;
        let before = keys_in(&t1, &t, "3", "4")?;
        set(&mut t2, &t, "3", 30)?;
        t2.commit()?;
        let after = keys_in(&t1, &t, "3", "4")?;
        Ok(before != after)
    })
}

/// P4, lost update: two increments, one lost.
fn p4(level: Isolation) -> bool {
    let (_d, db, t) = setup();
    prevented(|| {
        let mut t1 = db.begin_with(level)?;
        let mut t2 = db.begin_with(level)?;
        let a = num(&t1, &t, "1")?;
        let b = num(&t2, &t, "1")?;
        set(&mut t1, &t, "1", a + 1)?;
        t1.commit()?;
        set(&mut t2, &t, "1", b + 1)?;
        t2.commit()?;
        Ok(num(&db.begin()?, &t, "1")? != 12)
    })
}

/// G-single, read skew.
fn g_single(level: Isolation) -> bool {
    let (_d, db, t) = setup();
    prevented(|| {
        let t1 = db.begin_with(level)?;
        let mut t2 = db.begin_with(level)?;
        let x = num(&t1, &t, "1")?;
        set(&mut t2, &t, "1", 12)?;
        set(&mut t2, &t, "2", 18)?;
        t2.commit()?;
        let y = num(&t1, &t, "2")?;
        Ok(x + y != 30)
    })
}

/// G2-item, write skew: the on-call doctors. Each checks both are on call
/// (x + y = 30 means both) and takes itself off; at least one must stay.
fn g2_item(level: Isolation) -> bool {
    let (_d, db, t) = setup();
    prevented(|| {
        let mut t1 = db.begin_with(level)?;
        let mut t2 = db.begin_with(level)?;
        let s1 = num(&t1, &t, "1")? + num(&t1, &t, "2")?;
        let s2 = num(&t2, &t, "1")? + num(&t2, &t, "2")?;
        if s1 == 30 {
            set(&mut t1, &t, "1", 0)?;
        }
        if s2 == 30 {
            set(&mut t2, &t, "2", 0)?;
        }
        t1.commit()?;
        t2.commit()?;
        let r = db.begin()?;
        Ok(num(&r, &t, "1")? + num(&r, &t, "2")? == 0)
    })
}

/// G2, write skew over a predicate: each scans a range, finds it empty,
/// and inserts into it (at most one row is allowed).
fn g2(level: Isolation) -> bool {
    let (_d, db, t) = setup();
    prevented(|| {
        let mut t1 = db.begin_with(level)?;
        let mut t2 = db.begin_with(level)?;
        if keys_in(&t1, &t, "5", "6")?.is_empty() {
            set(&mut t1, &t, "5a", 1)?;
        }
        if keys_in(&t2, &t, "5", "6")?.is_empty() {
            set(&mut t2, &t, "5b", 1)?;
        }
        t1.commit()?;
        t2.commit()?;
        Ok(keys_in(&db.begin()?, &t, "5", "6")?.len() == 2)
    })
}

/// The read-only anomaly (Fekete, O'Neil, O'Neil 2004): checking x,
/// savings y, both 0. T2 withdraws 10 from checking with a penalty of 1 if
/// x + y would go negative; T1 deposits 20 into savings; read-only T3 sees
/// T1's deposit but not T2's withdrawal, and T2 then charges the penalty
/// that no serial order explains.
fn read_only(level: Isolation) -> bool {
    read_only_anomaly(level, false)
}

fn read_only_anomaly(level: Isolation, declared: bool) -> bool {
    let (_d, db, t) = setup();
    let mut init = db.begin().expect("begin");
    set(&mut init, &t, "x", 0).expect("x");
    set(&mut init, &t, "y", 0).expect("y");
    init.commit().expect("commit");
    prevented(|| {
        let mut t2 = db.begin_with(level)?;
        let (x, y) = (num(&t2, &t, "x")?, num(&t2, &t, "y")?);
        let mut t1 = db.begin_with(level)?;
        let y1 = num(&t1, &t, "y")?;
        set(&mut t1, &t, "y", y1 + 20)?;
        t1.commit()?;
        let t3 = if declared {
            db.begin_read()?
        } else {
            db.begin_with(level)?
        };
        let seen = (num(&t3, &t, "x")?, num(&t3, &t, "y")?);
        t3.commit()?;
        let penalty = if x + y - 10 < 0 { 1 } else { 0 };
        set(&mut t2, &t, "x", x - 10 - penalty)?;
        t2.commit()?;
        // T3 saw (0, 20): any serial order with T3 there has T2 after T1,
        // so no penalty; yet T2 charged it.
        Ok(seen == (0, 20) && num(&db.begin()?, &t, "x")? == -11)
    })
}

type Scenario = fn(Isolation) -> bool;

/// (name, scenario, prevented at [ReadCommitted, Snapshot, Serializable]).
const SUITE: &[(&str, Scenario, [bool; 3])] = &[
    ("G0", g0, [true, true, true]),
    ("G1a", g1a, [true, true, true]),
    ("G1b", g1b, [true, true, true]),
    ("G1c", g1c, [true, true, true]),
    ("OTV", otv, [true, true, true]),
    ("PMP", pmp, [false, true, true]),
    ("P4", p4, [false, true, true]),
    ("G-single", g_single, [false, true, true]),
    ("G2-item", g2_item, [false, false, true]),
    ("G2", g2, [false, false, true]),
    ("read-only anomaly", read_only, [false, false, true]),
];

#[test]
fn each_level_prevents_exactly_its_anomalies() {
    let mut failures = Vec::new();
    for (name, scenario, expected) in SUITE {
        for (level, want) in LEVELS.iter().zip(expected) {
            let got = scenario(*level);
            if got != *want {
                failures.push(format!(
                    "{name} at {level:?}: prevented={got}, expected {want}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn serializable_aborts_are_retryable_and_a_retry_succeeds() {
    let (_d, db, t) = setup();
    let mut t1 = db.begin_with(Isolation::Serializable).expect("t1");
    let mut t2 = db.begin_with(Isolation::Serializable).expect("t2");
    let _ = (num(&t1, &t, "1").expect("r"), num(&t1, &t, "2").expect("r"));
    let _ = (num(&t2, &t, "1").expect("r"), num(&t2, &t, "2").expect("r"));
    set(&mut t1, &t, "1", 0).expect("w");
    set(&mut t2, &t, "2", 0).expect("w");
    t1.commit().expect("the first committer wins");
    let err = t2.commit().expect_err("the pivot must fail");
    assert!(matches!(err, Error::SerializationFailure) && err.is_retryable());
    // The retry sees T1's change and decides differently.
    let t3 = db.begin_with(Isolation::Serializable).expect("t3");
    assert_eq!(
        num(&t3, &t, "1").expect("r") + num(&t3, &t, "2").expect("r"),
        20
    );
    t3.commit().expect("retry commits");
}

/// Every interleaving of two write-skew transactions (read x, read y,
/// write one, commit): at Serializable none lets both commit.
#[test]
fn write_skew_is_prevented_in_every_interleaving() {
    // op 0: read x, 1: read y, 2: write own key, 3: commit
    let mut failures = Vec::new();
    for mask in 0u32..256 {
        if mask.count_ones() != 4 {
            continue;
        }
        let (_d, db, t) = setup();
        let mut txs = [
            Some(db.begin_with(Isolation::Serializable).expect("t0")),
            Some(db.begin_with(Isolation::Serializable).expect("t1")),
        ];
        let mut step = [0usize; 2];
        let mut sums = [0i64; 2];
        let mut committed = [false; 2];
        for bit in 0..8 {
            let who = ((mask >> bit) & 1) as usize;
            let Some(tx) = txs[who].as_mut() else {
                continue;
            };
            let r: strata::Result<()> = match step[who] {
                0 => num(tx, &t, "1").map(|v| sums[who] += v),
                1 => num(tx, &t, "2").map(|v| sums[who] += v),
                2 if sums[who] == 30 => set(tx, &t, if who == 0 { "1" } else { "2" }, 0),
                2 => Ok(()),
                _ => {
                    let tx = txs[who].take().expect("tx");
                    tx.commit().map(|_| committed[who] = true)
                }
            };
            step[who] += 1;
            if r.is_err() {
                txs[who] = None;
            }
        }
        let r = db.begin().expect("begin");
        if num(&r, &t, "1").expect("r") + num(&r, &t, "2").expect("r") == 0 {
            failures.push(format!("{mask:08b}"));
        }
    }
    assert!(
        failures.is_empty(),
        "write skew in interleavings {failures:?} (bit i = which transaction runs step i)"
    );
}

#[test]
fn read_only_transactions_refuse_writes_and_still_serialize() {
    let (_d, db, t) = setup();
    let mut r = db.begin_read().expect("begin_read");
    assert!(matches!(
        r.put(&t, "1", "x"),
        Err(Error::ReadOnlyTransaction)
    ));
    assert!(matches!(r.delete(&t, "1"), Err(Error::ReadOnlyTransaction)));
    assert!(!Error::ReadOnlyTransaction.is_retryable());
    assert_eq!(num(&r, &t, "1").expect("still readable"), 10);
    r.commit().expect("commit");
    assert!(
        read_only_anomaly(Isolation::Serializable, true),
        "a declared read-only T3 must not let the anomaly through"
    );
}

/// Write skew where one side read so many keys that its marks were
/// coarsened into ranges (key → range → table): the write into a gap
/// between keys it read still conflicts, so one transaction fails at
/// Serializable (and both commit at Snapshot, so the scenario is live).
#[test]
fn write_skew_is_caught_after_marks_are_coarsened() {
    let key = |i: u32| format!("k{:06}", 2 * i);
    for level in [Isolation::Snapshot, Isolation::Serializable] {
        let (_tmp, db, t) = setup();
        let mut tx = db.begin().expect("begin");
        for i in 0..5_000 {
            tx.put(&t, key(i), "1").expect("put");
        }
        tx.commit().expect("commit");
        let r = prevented(|| {
            let mut a = db.begin_with(level)?;
            let mut b = db.begin_with(level)?;
            // `a` reads 5 000 keys, past the per-table limit of key marks.
            let mut sum = 0;
            for i in 0..5_000 {
                sum += num(&a, &t, &key(i))?;
            }
            // b -rw-> a: b reads "2", which a then writes.
            let seen = num(&b, &t, "2")?;
            set(&mut a, &t, "2", sum)?;
            // a -rw-> b: b writes into a gap between keys a read.
            b.put(&t, "k000001", seen.to_string())?;
            a.commit()?;
            b.commit()?;
            Ok(true) // both committed: the anomaly happened
        });
        assert_eq!(
            r,
            level == Isolation::Serializable,
            "{level:?}: a -rw-> b (through a coarsened range) and b -rw-> a"
        );
    }
}

/// A delete that finds no row has read the key's absence: in every
/// interleaving of `a: delete x (absent), write 1` with `b: read 1,
/// insert x`, Serializable lets at most one commit with that outcome (a
/// -rw-> b on x, b -rw-> a on 1). Snapshot lets both commit in some, so
/// the scenario is live.
#[test]
fn deleting_an_absent_key_conflicts_with_its_concurrent_insert() {
    for level in [Isolation::Snapshot, Isolation::Serializable] {
        let mut anomalies = Vec::new();
        for mask in 0u32..64 {
            if mask.count_ones() != 3 {
                continue;
            }
            let order: Vec<usize> = (0..6).map(|bit| ((mask >> bit) & 1) as usize).collect();
            // b inserting x before a's delete, and still running at it,
            // makes a wait for b: not a single-threaded history.
            let at = |who: usize, step: usize| {
                order
                    .iter()
                    .enumerate()
                    .filter(|(_, &w)| w == who)
                    .nth(step)
                    .map(|(i, _)| i)
            };
            if at(1, 1) < at(0, 0) && at(0, 0) < at(1, 2) {
                continue;
            }
            let (_d, db, t) = setup();
            let mut txs = [
                Some(db.begin_with(level).expect("a")),
                Some(db.begin_with(level).expect("b")),
            ];
            let (mut step, mut committed) = ([0usize; 2], [false; 2]);
            let (mut a_deleted, mut b_read) = (None, None);
            for &who in &order {
                let Some(tx) = txs[who].as_mut() else {
                    continue;
                };
                let r: strata::Result<()> = match (who, step[who]) {
                    (0, 0) => tx.delete(&t, "x").map(|d| a_deleted = Some(d)),
                    (0, 1) => set(tx, &t, "1", 0),
                    (1, 0) => num(tx, &t, "1").map(|v| b_read = Some(v)),
                    (1, 1) => set(tx, &t, "x", 1),
                    _ => {
                        let tx = txs[who].take().expect("tx");
                        tx.commit().map(|_| committed[who] = true)
                    }
                };
                step[who] += 1;
                if let Err(e) = r {
                    assert!(e.is_retryable(), "{mask:06b}: {e}");
                    txs[who] = None;
                }
            }
            if committed == [true; 2] && a_deleted == Some(false) && b_read == Some(10) {
                anomalies.push(format!("{mask:06b}"));
            }
        }
        match level {
            Isolation::Serializable => assert!(
                anomalies.is_empty(),
                "interleavings {anomalies:?} (bit i = which transaction runs step i)"
            ),
            _ => assert!(!anomalies.is_empty(), "{level:?}: scenario never ran"),
        }
    }
}

/// A delete that stamps a row needs no SIREAD mark on it (as PostgreSQL
/// drops a tuple's SIREAD lock when the same transaction writes it): any
/// concurrent writer of the row meets the stamp and fails first-updater-
/// wins. So a bulk delete does not coarsen into range marks that a
/// concurrent writer of an untouched key would run into.
#[test]
fn a_bulk_delete_leaves_no_read_marks_on_the_keys_it_did_not_touch() {
    let key = |i: u32| format!("k{:06}", 2 * i);
    let (_tmp, db, t) = setup();
    let mut tx = db.begin().expect("begin");
    for i in 0..5_000 {
        tx.put(&t, key(i), "1").expect("put");
    }
    tx.commit().expect("commit");
    let mut a = db.begin_with(Isolation::Serializable).expect("a");
    let mut b = db.begin_with(Isolation::Serializable).expect("b");
    // b -rw-> a: b reads a row that a then deletes.
    assert_eq!(num(&b, &t, &key(0)).expect("read"), 1);
    // 5 000 deletes: past the per-table limit of key marks.
    for i in 0..5_000 {
        assert!(a.delete(&t, key(i)).expect("delete"));
    }
    // A write into a gap between the deleted keys reads nothing a wrote.
    b.put(&t, "k000001", "b").expect("put");
    a.commit().expect("a commits");
    b.commit()
        .expect("b commits: b before a is a serial order of the two");
}

/// The read-only anomaly's first steps, with T3 folded into the SSI
/// summary before T1 reads: x = y = 0; T2 reads x and y; T3 adds 20 to y
/// and commits; read-only T1 begins; then more than `SSI_COMMITTED_MAX`
/// small serializable commits (on another table) fold T3 into the
/// summary of old committed transactions, while T2 keeps its out-edge to
/// it. Returns T1, T2 (still running) and T2's reads.
fn anomaly_with_t3_folded(db: &Db, t: &Table) -> (Transaction, Transaction, (i64, i64)) {
    let mut init = db.begin().expect("begin");
    set(&mut init, t, "x", 0).expect("x");
    set(&mut init, t, "y", 0).expect("y");
    init.commit().expect("init");
    let t2 = db.begin().expect("t2");
    let read = (num(&t2, t, "x").expect("x"), num(&t2, t, "y").expect("y"));
    let mut t3 = db.begin().expect("t3");
    let y = num(&t3, t, "y").expect("y");
    set(&mut t3, t, "y", y + 20).expect("y");
    t3.commit().expect("t3 commits first");
    let t1 = db.begin_read().expect("t1");
    let filler = db.table("filler").expect("filler");
    for i in 0..strata::limits::SSI_COMMITTED_MAX + 8 {
        let mut f = db.begin().expect("filler");
        f.put(&filler, (i as u64).to_be_bytes(), b"f").expect("put");
        f.commit()
            .expect("a filler touches nothing the others read");
    }
    (t1, t2, read)
}

fn eventual(dir: &std::path::Path) -> Db {
    Db::open_with(
        dir,
        strata::Options::default().durability(strata::Durability::Eventual),
    )
    .expect("open")
}

// Guards against the SSI summary hiding a folded T3 from the read-only
// rule (it kept the latest commit of what it folded, after T1's snapshot).
#[test]
fn read_only_anomaly_is_caught_with_t3_folded_into_the_summary() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = eventual(tmp.path());
    let t = db.table("test").expect("table");
    let (t1, mut t2, (x, y)) = anomaly_with_t3_folded(&db, &t);
    assert!(prevented(|| {
        // T1 reads while T2 still runs: T1 -rw-> T2 -rw-> T3 (folded).
        let seen = (num(&t1, &t, "x")?, num(&t1, &t, "y")?);
        let penalty = if x + y - 10 < 0 { 1 } else { 0 };
        set(&mut t2, &t, "x", x - 10 - penalty)?;
        t2.commit()?;
        t1.commit()?;
        Ok(seen == (0, 20) && penalty == 1)
    }));
}

// Guards against the safe-snapshot test trusting the SSI summary's latest
// commit: a read-only T1 watching T2 was declared safe when T2 committed
// with its out-edge to a folded T3, and then read unchecked.
#[test]
fn read_only_snapshot_is_not_declared_safe_past_a_folded_t3() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = eventual(tmp.path());
    let t = db.table("test").expect("table");
    let (t1, mut t2, (x, y)) = anomaly_with_t3_folded(&db, &t);
    let penalty = if x + y - 10 < 0 { 1 } else { 0 };
    set(&mut t2, &t, "x", x - 10 - penalty).expect("no reader marked x yet");
    t2.commit().expect("T2 commits before T1 reads anything");
    assert!(prevented(|| {
        // T2 committed after T1's snapshot: T1 -rw-> T2 -rw-> T3 (folded).
        let seen = (num(&t1, &t, "x")?, num(&t1, &t, "y")?);
        t1.commit()?;
        Ok(seen == (0, 20) && penalty == 1)
    }));
}
