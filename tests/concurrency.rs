//! Concurrent transactions: isolation levels, row-lock waits, deadlocks,
//! timeouts, and invariants under many threads.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::open;
use strata::{Db, Error, Isolation, Options};

fn int(v: Option<Vec<u8>>) -> i64 {
    v.map(|b| String::from_utf8(b).expect("utf8").parse().expect("int"))
        .unwrap_or(0)
}

#[test]
fn snapshot_reads_are_stable_read_committed_sees_new_commits() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let mut w = db.begin().expect("begin");
    w.put(&t, "x", "1").expect("put");
    w.commit().expect("commit");
    let snap = db.begin_with(Isolation::Snapshot).expect("snap");
    let rc = db.begin_with(Isolation::ReadCommitted).expect("rc");
    assert_eq!(int(snap.get(&t, "x").expect("get")), 1);
    assert_eq!(int(rc.get(&t, "x").expect("get")), 1);
    let mut w = db.begin().expect("begin");
    w.put(&t, "x", "2").expect("put");
    w.put(&t, "y", "5").expect("put");
    assert_eq!(
        int(rc.get(&t, "x").expect("get")),
        1,
        "uncommitted write visible to read committed"
    );
    w.commit().expect("commit");
    assert_eq!(int(snap.get(&t, "x").expect("get")), 1, "snapshot moved");
    assert_eq!(
        snap.scan(&t, ..).expect("scan").count(),
        1,
        "phantom in snapshot scan"
    );
    assert_eq!(
        int(rc.get(&t, "x").expect("get")),
        2,
        "read committed must see the new commit"
    );
    assert_eq!(rc.scan(&t, ..).expect("scan").count(), 2);
}

#[test]
fn first_updater_wins_under_snapshot_read_committed_proceeds() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let mut w = db.begin().expect("begin");
    w.put(&t, "x", "10").expect("put");
    w.commit().expect("commit");

    let mut a = db.begin_with(Isolation::Snapshot).expect("a");
    let mut b = db.begin_with(Isolation::Snapshot).expect("b");
    a.put(&t, "x", "11").expect("a put");
    a.commit().expect("a commit");
    let err = b.put(&t, "x", "12").expect_err("b must fail");
    assert!(matches!(err, Error::SerializationFailure { .. }) && err.is_retryable());
    assert!(
        matches!(b.get(&t, "x"), Err(Error::SerializationFailure { .. })),
        "doomed transaction keeps failing"
    );
    assert!(matches!(
        b.commit(),
        Err(Error::SerializationFailure { .. })
    ));

    let mut a = db.begin_with(Isolation::ReadCommitted).expect("a");
    let mut b = db.begin_with(Isolation::ReadCommitted).expect("b");
    let x = int(a.get(&t, "x").expect("get"));
    a.put(&t, "x", (x + 1).to_string()).expect("a put");
    a.commit().expect("a commit");
    b.put(&t, "x", "99")
        .expect("read committed overwrites the newer version");
    b.commit().expect("b commit");
    assert_eq!(int(db.begin().expect("r").get(&t, "x").expect("get")), 99);
}

#[test]
fn writer_waits_for_row_lock_and_then_fails_or_proceeds() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let mut w = db.begin().expect("begin");
    w.put(&t, "x", "0").expect("put");
    w.commit().expect("commit");

    for (level, holder_commits, expect_ok) in [
        (Isolation::Snapshot, true, false),
        (Isolation::Snapshot, false, true),
        (Isolation::ReadCommitted, true, true),
    ] {
        let mut holder = db.begin().expect("holder");
        holder.put(&t, "x", "holder").expect("holder put");
        let released = Arc::new(AtomicBool::new(false));
        let (db2, t2, rel2) = (db.clone(), t.clone(), released.clone());
        let waiter = thread::spawn(move || {
            let mut tx = db2.begin_with(level).expect("waiter");
            let r = tx.put(&t2, "x", "waiter");
            let was_released = rel2.load(Ordering::SeqCst);
            (r.and_then(|_| tx.commit().map(|_| ())), was_released)
        });
        thread::sleep(Duration::from_millis(100));
        released.store(true, Ordering::SeqCst);
        if holder_commits {
            holder.commit().expect("holder commit");
        } else {
            holder.rollback().expect("holder rollback");
        }
        let (r, was_released) = waiter.join().expect("join");
        assert!(
            was_released,
            "waiter proceeded before the holder finished ({level:?})"
        );
        assert_eq!(
            r.is_ok(),
            expect_ok,
            "{level:?} holder_commits={holder_commits}: {r:?}"
        );
        if !expect_ok {
            assert!(matches!(r, Err(Error::SerializationFailure { .. })));
        }
    }
}

#[test]
fn deadlock_is_detected_and_one_side_proceeds() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = Db::open_with(
        tmp.path(),
        Options::default().lock_timeout(Some(Duration::from_secs(20))),
    )
    .expect("open");
    let t = common::create(&db, "t");
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = [("a", "b"), ("b", "a")]
        .into_iter()
        .map(|(first, second)| {
            let (db, t, barrier) = (db.clone(), t.clone(), barrier.clone());
            thread::spawn(move || {
                let mut tx = db.begin().expect("begin");
                tx.put(&t, first, "1").expect("first put");
                barrier.wait();
                match tx.put(&t, second, "1") {
                    Ok(()) => tx.commit().map(|_| ()),
                    Err(e) => Err(e),
                }
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("join"))
        .collect();
    let deadlocks = results
        .iter()
        .filter(|r| matches!(r, Err(Error::Deadlock)))
        .count();
    assert_eq!(deadlocks, 1, "{results:?}");
    // The other side commits; a timeout (20 s) would have given LockTimeout.
    assert!(results.iter().any(|r| r.is_ok()), "{results:?}");
}

#[test]
fn lock_wait_times_out() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = Db::open_with(
        tmp.path(),
        Options::default().lock_timeout(Some(Duration::from_millis(200))),
    )
    .expect("open");
    let t = db.table("t").expect("t");
    let mut holder = db.begin().expect("holder");
    holder.put(&t, "x", "1").expect("put");
    let mut waiter = db.begin().expect("waiter");
    let err = waiter.put(&t, "x", "2").expect_err("must time out");
    assert!(
        matches!(err, Error::LockTimeout) && err.is_retryable(),
        "{err}"
    );
    assert!(matches!(waiter.commit(), Err(Error::LockTimeout)));
    holder.commit().expect("holder unaffected");
}

/// Transfers between accounts from many threads keep the total; every
/// snapshot reader sees the same total throughout.
#[test]
fn bank_transfers_keep_the_total_and_readers_see_consistent_snapshots() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("accounts").expect("t");
    const ACCOUNTS: u64 = 20;
    const TOTAL: i64 = 20 * 1000;
    let mut tx = db.begin().expect("begin");
    for i in 0..ACCOUNTS {
        tx.put(&t, format!("acct{i:02}"), "1000").expect("put");
    }
    tx.commit().expect("commit");
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for w in 0..4u64 {
        let (db, t, stop, committed) = (db.clone(), t.clone(), stop.clone(), committed.clone());
        handles.push(thread::spawn(move || {
            let mut seed = w * 7 + 1;
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            while !stop.load(Ordering::Relaxed) {
                let (a, b) = (next() % ACCOUNTS, next() % ACCOUNTS);
                if a == b {
                    continue;
                }
                // Read-modify-write needs Snapshot: Read Committed would
                // lose updates here, as it does in PostgreSQL.
                let mut tx = db.begin_with(Isolation::Snapshot).expect("begin");
                let r = (|| {
                    let ka = format!("acct{a:02}");
                    let kb = format!("acct{b:02}");
                    let va = int(tx.get(&t, &ka)?);
                    let vb = int(tx.get(&t, &kb)?);
                    let amount = (next() % 50) as i64;
                    tx.put(&t, &ka, (va - amount).to_string())?;
                    tx.put(&t, &kb, (vb + amount).to_string())?;
                    Ok::<_, Error>(())
                })();
                match r.and_then(|_| tx.commit()) {
                    Ok(_) => {
                        committed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.is_retryable() => {}
                    Err(e) => panic!("transfer failed: {e}"),
                }
            }
        }));
    }
    for _ in 0..2 {
        let (db, t, stop) = (db.clone(), t.clone(), stop.clone());
        handles.push(thread::spawn(move || {
            let mut checks = 0;
            while !stop.load(Ordering::Relaxed) || checks < 5 {
                let tx = db.begin_with(Isolation::Snapshot).expect("begin");
                let mut sum = 0;
                for row in tx.scan(&t, ..).expect("scan") {
                    sum += int(Some(row.expect("row").1));
                }
                assert_eq!(sum, TOTAL, "a snapshot saw a torn transfer");
                let mut sum2 = 0;
                for i in 0..ACCOUNTS {
                    sum2 += int(tx.get(&t, format!("acct{i:02}")).expect("get"));
                }
                assert_eq!(sum2, TOTAL);
                checks += 1;
            }
        }));
    }
    thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("thread panicked");
    }
    assert!(
        committed.load(Ordering::Relaxed) > 50,
        "too few transfers committed"
    );
    let tx = db.begin().expect("begin");
    let sum: i64 = tx
        .scan(&t, ..)
        .expect("scan")
        .map(|r| int(Some(r.expect("row").1)))
        .sum();
    assert_eq!(sum, TOTAL);
    drop(tx);
    db.vacuum().expect("vacuum");
    let tx = db.begin().expect("begin");
    let sum: i64 = tx
        .scan(&t, ..)
        .expect("scan")
        .map(|r| int(Some(r.expect("row").1)))
        .sum();
    assert_eq!(sum, TOTAL, "vacuum changed the data");
}

#[test]
fn readers_never_wait_for_writers() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = Db::open_with(
        tmp.path(),
        Options::default().lock_timeout(Some(Duration::from_secs(30))),
    )
    .expect("open");
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    for i in 0..100 {
        tx.put(&t, format!("k{i:03}"), "old").expect("put");
    }
    tx.commit().expect("commit");
    // A writer holds every row, uncommitted.
    let mut writer = db.begin().expect("writer");
    for i in 0..100 {
        writer.put(&t, format!("k{i:03}"), "new").expect("put");
    }
    // The readers run while the writer stays uncommitted: if a read waited
    // for the writer, the answer would never come (the writer commits only
    // after it), and the generous receive bound turns that hang into a failure.
    let (send, recv) = std::sync::mpsc::channel();
    for level in [Isolation::ReadCommitted, Isolation::Snapshot] {
        let (db, t, send) = (db.clone(), t.clone(), send.clone());
        thread::spawn(move || {
            let r = db.begin_with(level).expect("reader");
            let one = r.get(&t, "k050").expect("get");
            let rows: Vec<_> = r
                .scan(&t, ..)
                .expect("scan")
                .map(|x| x.expect("row").1)
                .collect();
            send.send((level, one, rows)).expect("send");
        });
    }
    for _ in 0..2 {
        let (level, one, rows) = recv
            .recv_timeout(Duration::from_secs(120))
            .expect("a reader blocked on the writer");
        assert_eq!(one.as_deref(), Some(&b"old"[..]), "{level:?}");
        assert_eq!(rows.len(), 100);
        assert!(
            rows.iter().all(|v| v == b"old"),
            "{level:?} saw uncommitted data"
        );
    }
    writer.commit().expect("commit");
}
