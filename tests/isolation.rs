//! The anomaly suite: one scenario per anomaly of Adya's and Berenson's
//! taxonomies (the ones Hermitage tests against PostgreSQL), run at each
//! isolation level, with the outcome each level must give: either every
//! transaction finishes as scripted and the anomaly shows (the level
//! allows it) or does not (the level's reads or waits keep it out), or one
//! named transaction fails with one named retryable error and every other
//! finishes as scripted. An engine that aborted everything would fail the
//! suite as surely as one that let an anomaly through.

mod common;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::open;
use strata::{Db, Error, Isolation, Options, Prefix, Table, Transaction};

const LEVELS: [Isolation; 3] = [
    Isolation::ReadCommitted,
    Isolation::Snapshot,
    Isolation::Serializable,
];

fn setup() -> (tempfile::TempDir, Db, Table) {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    fill(tmp, db)
}

/// Commits the rows every scenario starts from: 1 = 10, 2 = 20.
fn fill(tmp: tempfile::TempDir, db: Db) -> (tempfile::TempDir, Db, Table) {
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

/// The retryable errors, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fail {
    Serialization,
    Deadlock,
    LockTimeout,
}

fn fail_of(e: &Error) -> Fail {
    match e {
        Error::SerializationFailure { .. } => Fail::Serialization,
        Error::Deadlock => Fail::Deadlock,
        Error::LockTimeout => Fail::LockTimeout,
        e => panic!("not a retryable error: {e}"),
    }
}

/// Which transactions failed, and how, in one run of a scenario.
type Failures = Arc<Mutex<Vec<(u8, Fail)>>>;

/// One database and the failures of the transactions a scenario runs on it.
struct Run {
    _dir: tempfile::TempDir,
    db: Db,
    t: Table,
    failures: Failures,
}

impl Run {
    fn new() -> Run {
        // A wait in a scenario ends when its holder finishes, a few steps
        // later; the long timeout keeps a slow machine from turning that
        // into a `LockTimeout`.
        let tmp = tempfile::tempdir().expect("tmp");
        let opts = Options::default()
            .cache_size(4 << 20)
            .lock_timeout(Some(Duration::from_secs(20)));
        let db = Db::open_with(tmp.path(), opts).expect("open");
        let (_dir, db, t) = fill(tmp, db);
        let failures = Failures::default();
        Run {
            _dir,
            db,
            t,
            failures,
        }
    }

    /// Transaction `n` of the scenario.
    fn begin(&self, n: u8, level: Isolation) -> Tx {
        self.wrap(n, self.db.begin_with(level).expect("begin"))
    }

    /// Transaction `n`, declared read-only.
    fn begin_read(&self, n: u8) -> Tx {
        self.wrap(n, self.db.begin_read().expect("begin_read"))
    }

    fn wrap(&self, n: u8, tx: Transaction) -> Tx {
        Tx {
            n,
            tx: Some(tx),
            t: self.t.clone(),
            failures: self.failures.clone(),
            finished: false,
        }
    }

    /// The committed value of `k` now.
    fn value(&self, k: &str) -> i64 {
        num(&self.db.begin().expect("begin"), &self.t, k).expect("read")
    }

    fn keys(&self, lo: &str, hi: &str) -> Vec<Vec<u8>> {
        keys_in(&self.db.begin().expect("begin"), &self.t, lo, hi).expect("scan")
    }

    fn outcome(&self, anomaly: bool) -> Outcome {
        Outcome {
            failed: self.failures.lock().expect("failures").clone(),
            anomaly,
        }
    }
}

/// A transaction of a scenario. Its first error ends it: the error must be
/// retryable (anything else fails the test at once), is recorded against
/// the transaction's number, and later steps of the transaction do nothing.
struct Tx {
    n: u8,
    tx: Option<Transaction>,
    t: Table,
    failures: Failures,
    /// Committed or rolled back as the script says.
    finished: bool,
}

impl Tx {
    fn step<T>(
        &mut self,
        f: impl FnOnce(&mut Transaction, &Table) -> strata::Result<T>,
    ) -> Option<T> {
        let r = f(self.tx.as_mut()?, &self.t);
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                let fail = fail_of(&e);
                self.failures.lock().expect("failures").push((self.n, fail));
                self.tx = None; // rolls back, releasing its row locks
                None
            }
        }
    }

    fn get(&mut self, k: &str) -> Option<i64> {
        self.step(|tx, t| num(tx, t, k))
    }

    fn set(&mut self, k: &str, v: i64) {
        self.step(|tx, t| set(tx, t, k, v));
    }

    fn keys(&mut self, lo: &str, hi: &str) -> Option<Vec<Vec<u8>>> {
        self.step(|tx, t| keys_in(tx, t, lo, hi))
    }

    fn commit(&mut self) -> bool {
        let Some(tx) = self.tx.take() else {
            return false;
        };
        let r = tx.commit();
        if let Err(e) = r {
            let fail = fail_of(&e);
            self.failures.lock().expect("failures").push((self.n, fail));
            return false;
        }
        self.finished = true;
        true
    }

    fn rollback(&mut self) {
        if let Some(tx) = self.tx.take() {
            tx.rollback().expect("rollback");
            self.finished = true;
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        // A script that leaves a transaction open proves nothing about it.
        if self.tx.is_some() && !thread::panicking() {
            panic!("T{} left open by its scenario", self.n);
        }
    }
}

/// What one run of a scenario gave.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outcome {
    failed: Vec<(u8, Fail)>,
    anomaly: bool,
}

/// What a scenario must give at one level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Every transaction finishes as scripted and the anomaly shows.
    Anomaly,
    /// Every transaction finishes as scripted and no anomaly shows.
    Clean,
    /// Transaction `n` fails with this error, every other finishes as
    /// scripted, and no anomaly shows.
    Fails(u8, Fail),
    /// Exactly one transaction fails, with this error (which one depends
    /// on which of two threads gets there first); no anomaly shows.
    OneFails(Fail),
}

impl Expect {
    fn met_by(self, o: &Outcome) -> bool {
        match self {
            Expect::Anomaly => o.failed.is_empty() && o.anomaly,
            Expect::Clean => o.failed.is_empty() && !o.anomaly,
            Expect::Fails(n, f) => o.failed == [(n, f)] && !o.anomaly,
            Expect::OneFails(f) => o.failed.len() == 1 && o.failed[0].1 == f && !o.anomaly,
        }
    }
}

/// G0, write cycles: T1 writes x, T2 writes y, T1 writes y (and waits for
/// T2), T2 writes x: a cycle of waits at every level, so one of them fails
/// with `Deadlock` at once and the other goes on. No dirty write: the two
/// keys end as one transaction left them.
fn g0(level: Isolation) -> Outcome {
    let run = Run::new();
    let mut t1 = run.begin(1, level);
    let mut t2 = run.begin(2, level);
    t1.set("1", 11);
    t2.set("2", 22);
    let waiter = thread::spawn(move || {
        t1.set("2", 21);
        t1
    });
    // Lets T1 reach its wait first, so T2 usually closes the cycle; if T2
    // gets there first, T1 closes it, which is as good an outcome.
    thread::sleep(Duration::from_millis(50));
    t2.set("1", 12);
    let t2_done = t2.commit();
    let mut t1 = waiter.join().expect("T1's thread");
    let t1_done = t1.commit();
    let end = (run.value("1"), run.value("2"));
    let serial = match (t1_done, t2_done) {
        (true, true) => vec![(11, 21), (12, 22)],
        (true, false) => vec![(11, 21)],
        (false, true) => vec![(12, 22)],
        (false, false) => vec![(10, 20)],
    };
    run.outcome(!serial.contains(&end))
}

/// G0 with the holder committing (Hermitage's G0): T1 writes x, T2's write
/// of x waits for T1, T1 writes y and commits, then T2 writes y and
/// commits. Read Committed lets T2 go on over T1's versions (T1 then T2);
/// Snapshot and Serializable fail T2, first updater wins.
fn g0_holder_commits(level: Isolation) -> Outcome {
    let run = Run::new();
    let mut t1 = run.begin(1, level);
    let mut t2 = run.begin(2, level);
    t1.set("1", 11);
    let waiter = thread::spawn(move || {
        t2.set("1", 12);
        t2
    });
    thread::sleep(Duration::from_millis(50));
    t1.set("2", 21);
    let t1_done = t1.commit();
    let mut t2 = waiter.join().expect("T2's thread");
    t2.set("2", 22);
    let t2_done = t2.commit();
    let end = (run.value("1"), run.value("2"));
    let serial = match (t1_done, t2_done) {
        (true, true) => (12, 22),
        (true, false) => (11, 21),
        (false, true) => (12, 22),
        (false, false) => (10, 20),
    };
    run.outcome(end != serial)
}

/// G1a, aborted reads.
fn g1a(level: Isolation) -> Outcome {
    let run = Run::new();
    let mut t1 = run.begin(1, level);
    let mut t2 = run.begin(2, level);
    t1.set("1", 101);
    let during = t2.get("1");
    t1.rollback();
    let after = t2.get("1");
    t2.commit();
    run.outcome(during == Some(101) || after == Some(101))
}

/// G1b, intermediate reads.
fn g1b(level: Isolation) -> Outcome {
    let run = Run::new();
    let mut t1 = run.begin(1, level);
    let mut t2 = run.begin(2, level);
    t1.set("1", 101);
    t1.set("1", 11);
    let during = t2.get("1");
    t1.commit();
    let after = t2.get("1");
    t2.commit();
    run.outcome(during == Some(101) || after == Some(101))
}

/// G1c, circular information flow: each would have to read the other's
/// uncommitted write. Under Serializable the two reads of old versions are
/// write skew (T1 -rw-> T2 -rw-> T1), so T2, committing second, fails.
fn g1c(level: Isolation) -> Outcome {
    let run = Run::new();
    let mut t1 = run.begin(1, level);
    let mut t2 = run.begin(2, level);
    t1.set("1", 11);
    t2.set("2", 22);
    let t1_sees = t1.get("2");
    let t2_sees = t2.get("1");
    t1.commit();
    t2.commit();
    run.outcome(t1_sees == Some(22) && t2_sees == Some(11))
}

/// OTV, observed transaction vanishes. T2 began before T1 committed, so
/// under Snapshot and Serializable its writes over T1's fail, first
/// updater wins.
fn otv(level: Isolation) -> Outcome {
    let run = Run::new();
    let mut t1 = run.begin(1, level);
    let mut t2 = run.begin(2, level);
    let mut t3 = run.begin(3, level);
    t1.set("1", 11);
    t1.set("2", 19);
    t1.commit();
    t2.set("1", 12);
    let x = t3.get("1");
    t2.set("2", 18);
    let y = t3.get("2");
    t2.commit();
    t3.commit();
    // T3 saw part of T1 and then part of T2 (or T1 vanished).
    let seen = x.zip(y);
    run.outcome(seen == Some((11, 18)) || seen == Some((12, 19)))
}

/// PMP, predicate-many-preceders: a repeated scan sees a new row.
fn pmp(level: Isolation) -> Outcome {
    let run = Run::new();
    let mut t1 = run.begin(1, level);
    let mut t2 = run.begin(2, level);
    let before = t1.keys("3", "4");
    t2.set("3", 30);
    t2.commit();
    let after = t1.keys("3", "4");
    t1.commit();
    run.outcome(before.is_some() && after.is_some() && before != after)
}

/// P4, lost update: two increments, one lost.
fn p4(level: Isolation) -> Outcome {
    let run = Run::new();
    let mut t1 = run.begin(1, level);
    let mut t2 = run.begin(2, level);
    let a = t1.get("1").unwrap_or_default();
    let b = t2.get("1").unwrap_or_default();
    t1.set("1", a + 1);
    let done1 = t1.commit();
    t2.set("1", b + 1);
    let done2 = t2.commit();
    let increments = i64::from(done1) + i64::from(done2);
    run.outcome(run.value("1") != 10 + increments)
}

/// G-single, read skew.
fn g_single(level: Isolation) -> Outcome {
    let run = Run::new();
    let mut t1 = run.begin(1, level);
    let mut t2 = run.begin(2, level);
    let x = t1.get("1");
    t2.set("1", 12);
    t2.set("2", 18);
    t2.commit();
    let y = t1.get("2");
    t1.commit();
    run.outcome(x.zip(y).is_some_and(|(x, y)| x + y != 30))
}

/// G2-item, write skew: the on-call doctors. Each checks both are on call
/// (x + y = 30 means both) and takes itself off; at least one must stay.
fn g2_item(level: Isolation) -> Outcome {
    let run = Run::new();
    let mut t1 = run.begin(1, level);
    let mut t2 = run.begin(2, level);
    let s1 = t1.get("1").zip(t1.get("2")).map(|(x, y)| x + y);
    let s2 = t2.get("1").zip(t2.get("2")).map(|(x, y)| x + y);
    if s1 == Some(30) {
        t1.set("1", 0);
    }
    if s2 == Some(30) {
        t2.set("2", 0);
    }
    t1.commit();
    t2.commit();
    run.outcome(run.value("1") + run.value("2") == 0)
}

/// G2, write skew over a predicate: each scans a range, finds it empty,
/// and inserts into it (at most one row is allowed).
fn g2(level: Isolation) -> Outcome {
    let run = Run::new();
    let mut t1 = run.begin(1, level);
    let mut t2 = run.begin(2, level);
    if t1.keys("5", "6").is_some_and(|k| k.is_empty()) {
        t1.set("5a", 1);
    }
    if t2.keys("5", "6").is_some_and(|k| k.is_empty()) {
        t2.set("5b", 1);
    }
    t1.commit();
    t2.commit();
    run.outcome(run.keys("5", "6").len() == 2)
}

/// The first key a transaction sees.
fn first_key(tx: &Transaction, t: &Table) -> strata::Result<Option<Vec<u8>>> {
    Ok(tx.first(t)?.map(|(k, _)| k))
}

fn last_key(tx: &Transaction, t: &Table) -> strata::Result<Option<Vec<u8>>> {
    Ok(tx.last(t)?.map(|(k, _)| k))
}

/// G2 through `first`: each finds "1" the first key and inserts below it
/// (at most one key below "1" is allowed). `first` depends on every key
/// below what it returned.
fn g2_first(level: Isolation) -> Outcome {
    let run = Run::new();
    let mut t1 = run.begin(1, level);
    let mut t2 = run.begin(2, level);
    if t1.step(|tx, t| first_key(tx, t)) == Some(Some(b"1".to_vec())) {
        t1.set("0a", 1);
    }
    if t2.step(|tx, t| first_key(tx, t)) == Some(Some(b"1".to_vec())) {
        t2.set("0b", 1);
    }
    t1.commit();
    t2.commit();
    run.outcome(run.keys("0", "1").len() == 2)
}

/// G2 through `last`: each finds "2" the last key and appends after it;
/// `last` depends on every key above what it returned.
fn g2_last(level: Isolation) -> Outcome {
    let run = Run::new();
    let mut t1 = run.begin(1, level);
    let mut t2 = run.begin(2, level);
    if t1.step(|tx, t| last_key(tx, t)) == Some(Some(b"2".to_vec())) {
        t1.set("3a", 1);
    }
    if t2.step(|tx, t| last_key(tx, t)) == Some(Some(b"2".to_vec())) {
        t2.set("3b", 1);
    }
    t1.commit();
    t2.commit();
    run.outcome(run.keys("3", "4").len() == 2)
}

/// G2 through a prefix scan: each finds no key with prefix "5" and adds one.
fn g2_prefix(level: Isolation) -> Outcome {
    let run = Run::new();
    let mut t1 = run.begin(1, level);
    let mut t2 = run.begin(2, level);
    let empty = |tx: &mut Transaction, t: &Table| Ok(tx.scan(t, Prefix("5"))?.next().is_none());
    if t1.step(empty) == Some(true) {
        t1.set("5a", 1);
    }
    if t2.step(empty) == Some(true) {
        t2.set("5b", 1);
    }
    t1.commit();
    t2.commit();
    run.outcome(run.keys("5", "6").len() == 2)
}

/// G2 through a reverse scan: as G2, with the range read backwards.
fn g2_reverse(level: Isolation) -> Outcome {
    let run = Run::new();
    let mut t1 = run.begin(1, level);
    let mut t2 = run.begin(2, level);
    let empty = |tx: &mut Transaction, t: &Table| Ok(tx.scan(t, "5".."6")?.next_back().is_none());
    if t1.step(empty) == Some(true) {
        t1.set("5a", 1);
    }
    if t2.step(empty) == Some(true) {
        t2.set("5b", 1);
    }
    t1.commit();
    t2.commit();
    run.outcome(run.keys("5", "6").len() == 2)
}

/// G2 through `len`: each counts two rows and adds a third (at most
/// three are allowed).
fn g2_len(level: Isolation) -> Outcome {
    let run = Run::new();
    let mut t1 = run.begin(1, level);
    let mut t2 = run.begin(2, level);
    if t1.step(|tx, t| tx.len(t)) == Some(2) {
        t1.set("3", 1);
    }
    if t2.step(|tx, t| tx.len(t)) == Some(2) {
        t2.set("4", 1);
    }
    t1.commit();
    t2.commit();
    run.outcome(run.keys("", "9").len() == 4)
}

/// G2 through `delete_range`: T1 empties prefix "5" and adds "6a", T2
/// empties prefix "6" and adds "5a". Either serial order leaves one of
/// the two; both is the anomaly.
fn g2_delete_range(level: Isolation) -> Outcome {
    let run = Run::new();
    let mut t1 = run.begin(1, level);
    let mut t2 = run.begin(2, level);
    t1.step(|tx, t| tx.delete_range(t, Prefix("5")));
    t2.step(|tx, t| tx.delete_range(t, Prefix("6")));
    t1.set("6a", 1);
    t2.set("5a", 1);
    t1.commit();
    t2.commit();
    run.outcome(run.keys("5", "7").len() == 2)
}

/// `first` depends on the keys up to the one it returned, no further: T1
/// reads the first key and writes "9"; T2 reads "9" and writes "5", above
/// T1's first key. T2 before T1 explains both, so nothing may fail (a mark
/// on the whole table would make a cycle of it and fail T2).
fn first_marks_only_up_to_its_key(level: Isolation) -> Outcome {
    let run = Run::new();
    let mut t1 = run.begin(1, level);
    let mut t2 = run.begin(2, level);
    t1.step(|tx, t| first_key(tx, t));
    t2.get("9");
    t2.set("5", 1);
    t1.set("9", 1);
    t1.commit();
    t2.commit();
    run.outcome(false)
}

/// As above for `last`: T2 writes "1a", below T1's last key "2".
fn last_marks_only_from_its_key(level: Isolation) -> Outcome {
    let run = Run::new();
    let mut t1 = run.begin(1, level);
    let mut t2 = run.begin(2, level);
    t1.step(|tx, t| last_key(tx, t));
    t2.get("0");
    t2.set("1a", 1);
    t1.set("0", 1);
    t1.commit();
    t2.commit();
    run.outcome(false)
}

/// The read-only anomaly (Fekete, O'Neil, O'Neil 2004): checking x,
/// savings y, both 0. T2 withdraws 10 from checking with a penalty of 1 if
/// x + y would go negative; T1 deposits 20 into savings; read-only T3 sees
/// T1's deposit but not T2's withdrawal, and T2 then charges the penalty
/// that no serial order explains. Serializable fails T2, the pivot.
fn read_only(level: Isolation) -> Outcome {
    read_only_anomaly(level, false)
}

fn read_only_anomaly(level: Isolation, declared: bool) -> Outcome {
    let run = Run::new();
    let mut init = run.begin(0, Isolation::Serializable);
    init.set("x", 0);
    init.set("y", 0);
    assert!(init.commit(), "setup");
    let mut t2 = run.begin(2, level);
    let xy = t2.get("x").zip(t2.get("y"));
    let mut t1 = run.begin(1, level);
    let y1 = t1.get("y").unwrap_or_default();
    t1.set("y", y1 + 20);
    t1.commit();
    let mut t3 = if declared {
        run.begin_read(3)
    } else {
        run.begin(3, level)
    };
    let seen = t3.get("x").zip(t3.get("y"));
    t3.commit();
    if let Some((x, y)) = xy {
        let penalty = if x + y - 10 < 0 { 1 } else { 0 };
        t2.set("x", x - 10 - penalty);
    }
    t2.commit();
    // T3 saw (0, 20): any serial order with T3 there has T2 after T1,
    // so no penalty; yet T2 charged it.
    run.outcome(seen == Some((0, 20)) && run.value("x") == -11)
}

type Scenario = fn(Isolation) -> Outcome;

use Expect::{Anomaly, Clean, Fails, OneFails};
use Fail::{Deadlock, Serialization};

/// (name, scenario, outcome at [ReadCommitted, Snapshot, Serializable]).
const SUITE: &[(&str, Scenario, [Expect; 3])] = &[
    ("G0", g0, [OneFails(Deadlock); 3]),
    (
        "G0, the holder commits",
        g0_holder_commits,
        [Clean, Fails(2, Serialization), Fails(2, Serialization)],
    ),
    ("G1a", g1a, [Clean; 3]),
    ("G1b", g1b, [Clean; 3]),
    ("G1c", g1c, [Clean, Clean, Fails(2, Serialization)]),
    (
        "OTV",
        otv,
        [Clean, Fails(2, Serialization), Fails(2, Serialization)],
    ),
    ("PMP", pmp, [Anomaly, Clean, Clean]),
    (
        "P4",
        p4,
        [Anomaly, Fails(2, Serialization), Fails(2, Serialization)],
    ),
    ("G-single", g_single, [Anomaly, Clean, Clean]),
    (
        "G2-item",
        g2_item,
        [Anomaly, Anomaly, Fails(2, Serialization)],
    ),
    ("G2", g2, [Anomaly, Anomaly, Fails(2, Serialization)]),
    (
        "G2 via first",
        g2_first,
        [Anomaly, Anomaly, Fails(2, Serialization)],
    ),
    (
        "G2 via last",
        g2_last,
        [Anomaly, Anomaly, Fails(2, Serialization)],
    ),
    (
        "G2 via a prefix",
        g2_prefix,
        [Anomaly, Anomaly, Fails(2, Serialization)],
    ),
    (
        "G2 via a reverse scan",
        g2_reverse,
        [Anomaly, Anomaly, Fails(2, Serialization)],
    ),
    (
        "G2 via len",
        g2_len,
        [Anomaly, Anomaly, Fails(2, Serialization)],
    ),
    (
        "G2 via delete_range",
        g2_delete_range,
        [Anomaly, Anomaly, Fails(2, Serialization)],
    ),
    (
        "first marks only up to its key",
        first_marks_only_up_to_its_key,
        [Clean; 3],
    ),
    (
        "last marks only from its key",
        last_marks_only_from_its_key,
        [Clean; 3],
    ),
    (
        "read-only anomaly",
        read_only,
        [Anomaly, Anomaly, Fails(2, Serialization)],
    ),
];

#[test]
fn each_level_gives_each_scenario_its_outcome() {
    let mut failures = Vec::new();
    for (name, scenario, expected) in SUITE {
        for (level, want) in LEVELS.iter().zip(expected) {
            let got = scenario(*level);
            if !want.met_by(&got) {
                failures.push(format!("{name} at {level:?}: {got:?}, expected {want:?}"));
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
    assert!(matches!(err, Error::SerializationFailure { .. }) && err.is_retryable());
    // The retry sees T1's change and decides differently.
    let t3 = db.begin_with(Isolation::Serializable).expect("t3");
    assert_eq!(
        num(&t3, &t, "1").expect("r") + num(&t3, &t, "2").expect("r"),
        20
    );
    t3.commit().expect("retry commits");
}

/// Every interleaving of two write-skew transactions (read x, read y,
/// write one, commit): at Serializable none lets both commit, and none
/// fails both (the one that commits first needs no other to fail). The
/// two never wait for each other, so every failure is a serialization
/// failure.
#[test]
fn write_skew_is_prevented_in_every_interleaving() {
    // op 0: read x, 1: read y, 2: write own key, 3: commit
    let (mut failures, mut both_failed) = (Vec::new(), Vec::new());
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
            if let Err(e) = r {
                assert!(
                    matches!(e, Error::SerializationFailure { .. }),
                    "{mask:08b}: transaction {who}: {e}"
                );
                txs[who] = None;
            }
        }
        let r = db.begin().expect("begin");
        if num(&r, &t, "1").expect("r") + num(&r, &t, "2").expect("r") == 0 {
            failures.push(format!("{mask:08b}"));
        }
        if committed == [false; 2] {
            both_failed.push(format!("{mask:08b}"));
        }
    }
    assert!(
        failures.is_empty(),
        "write skew in interleavings {failures:?} (bit i = which transaction runs step i)"
    );
    assert!(
        both_failed.is_empty(),
        "both transactions failed in interleavings {both_failed:?}"
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
    let o = read_only_anomaly(Isolation::Serializable, true);
    assert!(
        Fails(2, Serialization).met_by(&o),
        "a declared read-only T3 must not let the anomaly through: {o:?}"
    );
}

/// Write skew where one side read so many keys that its marks were
/// coarsened into ranges (key → range → table): the write into a gap
/// between keys it read still conflicts, so the second to commit fails at
/// Serializable (and both commit at Snapshot, so the scenario is live).
#[test]
fn write_skew_is_caught_after_marks_are_coarsened() {
    let key = |i: u32| format!("k{:06}", 2 * i);
    for (level, want) in [
        (Isolation::Snapshot, Anomaly),
        (Isolation::Serializable, Fails(2, Serialization)),
    ] {
        let run = Run::new();
        let mut tx = run.db.begin().expect("begin");
        for i in 0..5_000 {
            tx.put(&run.t, key(i), "1").expect("put");
        }
        tx.commit().expect("commit");
        let mut a = run.begin(1, level);
        let mut b = run.begin(2, level);
        // `a` reads 5 000 keys, past the per-table limit of key marks.
        let sum: i64 = (0..5_000).filter_map(|i| a.get(&key(i))).sum();
        // b -rw-> a: b reads "2", which a then writes.
        let seen = b.get("2").unwrap_or_default();
        a.set("2", sum);
        // a -rw-> b: b writes into a gap between keys a read.
        b.set("k000001", seen);
        // `&`, not `&&`: b commits (or fails) whatever became of a.
        let both = a.commit() & b.commit();
        let o = run.outcome(both);
        assert!(
            want.met_by(&o),
            "{level:?}: a -rw-> b (through a coarsened range) and b -rw-> a: {o:?}, expected {want:?}"
        );
    }
}

/// A delete that finds no row has read the key's absence: in every
/// interleaving of `a: delete x (absent), write 1` with `b: read 1,
/// insert x`, Serializable lets at most one commit with that outcome (a
/// -rw-> b on x, b -rw-> a on 1), and at least one. Snapshot lets both
/// commit in some, so the scenario is live.
#[test]
fn deleting_an_absent_key_conflicts_with_its_concurrent_insert() {
    for level in [Isolation::Snapshot, Isolation::Serializable] {
        let (mut anomalies, mut both_failed) = (Vec::new(), Vec::new());
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
                    // The interleavings that would wait are left out.
                    assert!(
                        matches!(e, Error::SerializationFailure { .. }),
                        "{mask:06b}: {e}"
                    );
                    txs[who] = None;
                }
            }
            if committed == [true; 2] && a_deleted == Some(false) && b_read == Some(10) {
                anomalies.push(format!("{mask:06b}"));
            }
            if committed == [false; 2] {
                both_failed.push(format!("{mask:06b}"));
            }
        }
        assert!(
            both_failed.is_empty(),
            "{level:?}: both failed in interleavings {both_failed:?}"
        );
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
    for i in 0..strata::internals::limits::SSI_COMMITTED_MAX + 8 {
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
    // T1 reads while T2 still runs: T1 -rw-> T2 -rw-> T3 (folded). T2,
    // the pivot, must fail; read-only T1 commits.
    let seen = (
        num(&t1, &t, "x").expect("T1 reads x"),
        num(&t1, &t, "y").expect("T1 reads y"),
    );
    assert_eq!(seen, (0, 20), "T1 sees T3's write and not T2's");
    let penalty = if x + y - 10 < 0 { 1 } else { 0 };
    let t2_outcome = set(&mut t2, &t, "x", x - 10 - penalty).and_then(|()| t2.commit().map(drop));
    assert!(
        matches!(t2_outcome, Err(strata::Error::SerializationFailure { .. })),
        "T2 is the pivot of T1 -> T2 -> T3 and must fail: {t2_outcome:?}"
    );
    t1.commit().expect("read-only T1 commits");
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
    // T2 committed after T1's snapshot: T1 -rw-> T2 -rw-> T3 (folded), and
    // T1 is the only one left to fail.
    let outcome = (|| {
        let seen = (num(&t1, &t, "x")?, num(&t1, &t, "y")?);
        t1.commit()?;
        Ok(seen)
    })();
    assert!(
        matches!(outcome, Err(strata::Error::SerializationFailure { .. })),
        "T1 must fail, not see {outcome:?}"
    );
}
