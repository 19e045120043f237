//! Vacuum beside readers: a pass removes no version that a running read
//! still needs, whether to see a row (a Read Committed operation's
//! snapshot) or to see a conflict (a serializable transaction's skipped
//! versions, which SSI takes rw-antidependencies from).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata::{Db, Isolation, Options, Table};

/// No background vacuum: each test decides when a pass runs.
fn open_manual(dir: &std::path::Path) -> Db {
    Db::open_with(
        dir,
        Options::default()
            .cache_size(4 << 20)
            .vacuum_threshold(0)
            .lock_timeout(Some(Duration::from_secs(2))),
    )
    .expect("open")
}

fn key(i: u32) -> String {
    format!("k{i:05}")
}

// Guards against vacuum standing the current snapshot in for a Read
// Committed transaction: its scan's older snapshot lost the rows it needed.
#[test]
fn a_read_committed_scan_keeps_its_snapshot_across_a_vacuum_pass() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open_manual(tmp.path());
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    for i in 0..2000 {
        tx.put(&t, key(i), "old").expect("put");
    }
    tx.commit().expect("commit");

    let rc = db.begin_with(Isolation::ReadCommitted).expect("rc");
    let mut scan = rc.scan(&t, ..).expect("scan");
    let first = scan.next().expect("a row").expect("row");
    assert_eq!(first.0, key(0).into_bytes());

    let mut w = db.begin().expect("writer");
    w.put(&t, key(1000), "new").expect("update");
    assert!(w.delete(&t, key(1500)).expect("delete"));
    w.commit().expect("commit");
    db.vacuum().expect("vacuum");

    let rest: Vec<(Vec<u8>, Vec<u8>)> = scan.collect::<Result<_, _>>().expect("rows");
    assert_eq!(
        rest.len() + 1,
        2000,
        "the scan sees the state it started in"
    );
    assert!(
        rest.iter().all(|(_, v)| v == b"old"),
        "no row of a later state"
    );

    // Once the scan is gone, its versions go too.
    drop(rest);
    let stats = db.vacuum().expect("vacuum");
    assert_eq!(stats.versions_removed, 2, "{stats:?}");
    let rows = common::rows(&rc, &t);
    assert_eq!(rows.len(), 1999);
    assert!(rows
        .iter()
        .any(|(k, v)| k == key(1000).as_bytes() && v == b"new"));
}

/// A table whose every commit keeps `ROWS` rows summing to `ROWS * 100`:
/// transfers between rows, and rows that move to a new key.
const ROWS: u32 = 40;

fn read_state(tx: &strata::Transaction, t: &Table) -> strata::Result<(usize, i64)> {
    let mut n = 0;
    let mut sum = 0;
    for row in tx.scan(t, ..)? {
        let (_, v) = row?;
        n += 1;
        sum += std::str::from_utf8(&v)
            .expect("utf8")
            .parse::<i64>()
            .expect("int");
    }
    Ok((n, sum))
}

/// One committed step of the invariant-keeping workload; retryable
/// failures are given up (the state is unchanged).
fn step(db: &Db, t: &Table, fixed: &Table, rng: &mut u64) -> strata::Result<()> {
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    let mut tx = db.begin_with(Isolation::Snapshot)?;
    let keys: Vec<Vec<u8>> = tx
        .scan(t, ..)?
        .map(|r| r.map(|(k, _)| k))
        .collect::<strata::Result<_>>()?;
    let a = &keys[(next() % keys.len() as u64) as usize];
    let b = &keys[(next() % keys.len() as u64) as usize];
    let val = |tx: &strata::Transaction, k: &[u8]| -> strata::Result<i64> {
        let v = tx.get(t, k)?.expect("a key the scan found");
        Ok(std::str::from_utf8(&v).expect("utf8").parse().expect("int"))
    };
    let (va, vb) = (val(&tx, a)?, val(&tx, b)?);
    if a != b {
        let d = (next() % 7) as i64;
        tx.put(t, a, (va - d).to_string())?;
        tx.put(t, b, (vb + d).to_string())?;
    }
    if next() % 3 == 0 {
        // The row at `a` moves to a fresh key: a delete and an insert.
        let va = val(&tx, a)?;
        tx.delete(t, a)?;
        tx.put(t, format!("m{:016x}", next()), va.to_string())?;
    }
    let n = next() % 8;
    let fv = tx.get(fixed, format!("f{n}"))?.expect("fixed key");
    tx.put(fixed, format!("f{n}"), [&fv[..], b"+"].concat())?;
    tx.commit().map(|_| ())
}

// Guards against vacuum passes freeing versions that running Read
// Committed scans and gets still need (per-operation snapshots were not
// registered): each read must see a state some commit produced.
#[test]
fn read_committed_reads_beside_vacuum_passes_see_committed_states() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open_manual(tmp.path());
    let t = db.table("t").expect("t");
    let fixed = db.table("fixed").expect("fixed");
    let mut tx = db.begin().expect("begin");
    for i in 0..ROWS {
        tx.put(&t, key(i), "100").expect("put");
    }
    for n in 0..8 {
        tx.put(&fixed, format!("f{n}"), "v").expect("put");
    }
    tx.commit().expect("commit");

    let deadline = Instant::now() + Duration::from_secs(4);
    let stop = Arc::new(AtomicBool::new(false));
    let running =
        move |stop: &AtomicBool| !stop.load(Ordering::Relaxed) && Instant::now() < deadline;
    let mut threads = Vec::new();
    for w in 0..2u64 {
        let (db, t, fixed, stop) = (db.clone(), t.clone(), fixed.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = 0x9e37_79b9_7f4a_7c15 ^ (w + 1);
            for _ in 0..3000 {
                if !running(&stop) {
                    break;
                }
                match step(&db, &t, &fixed, &mut rng) {
                    Ok(()) => {}
                    Err(e) if e.is_retryable() => {}
                    Err(e) => panic!("writer: {e}"),
                }
            }
        }));
    }
    {
        let (db, stop) = (db.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            for pass in 0..2000 {
                if !running(&stop) {
                    break;
                }
                db.vacuum().expect("vacuum");
                // Checkpoints too, whose flushes and cuts run beside the scans.
                if pass % 8 == 7 {
                    db.checkpoint().expect("checkpoint");
                }
            }
        }));
    }
    let mut scans = 0;
    let mut gets = 0;
    for round in 0..20_000u32 {
        if !running(&stop) {
            break;
        }
        let rc = db.begin_with(Isolation::ReadCommitted).expect("rc");
        let (n, sum) = read_state(&rc, &t).expect("scan");
        assert_eq!(
            (n, sum),
            (ROWS as usize, i64::from(ROWS) * 100),
            "scan {round} saw no committed state"
        );
        scans += 1;
        for n in 0..8 {
            let v = rc.get(&fixed, format!("f{n}")).expect("get");
            assert!(v.is_some_and(|v| v.starts_with(b"v")), "f{n} vanished");
            gets += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in threads {
        h.join().expect("thread");
    }
    assert!(scans > 0 && gets > 0);
    let tx = db.begin().expect("begin");
    assert_eq!(
        read_state(&tx, &t).expect("scan"),
        (ROWS as usize, i64::from(ROWS) * 100)
    );
    db.check_integrity().expect("sound");
}

// Guards against vacuum freeing the version a Read Committed get is
// about to read (its snapshot was not registered): a key that always
// exists read as absent.
#[test]
fn read_committed_gets_beside_vacuum_passes_always_find_a_live_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open_manual(tmp.path());
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "hot", "0").expect("put");
    tx.commit().expect("commit");
    let deadline = Instant::now() + Duration::from_secs(3);
    let stop = Arc::new(AtomicBool::new(false));
    let running =
        move |stop: &AtomicBool| !stop.load(Ordering::Relaxed) && Instant::now() < deadline;
    let updater = {
        let (db, t, stop) = (db.clone(), t.clone(), stop.clone());
        std::thread::spawn(move || {
            for i in 1..200_000u32 {
                if !running(&stop) {
                    break;
                }
                let mut tx = db.begin_with(Isolation::ReadCommitted).expect("begin");
                tx.put(&t, "hot", i.to_string()).expect("put");
                tx.commit().expect("commit");
            }
        })
    };
    let vacuum = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            for _ in 0..100_000 {
                if !running(&stop) {
                    break;
                }
                db.vacuum().expect("vacuum");
            }
        })
    };
    let rc = db.begin_with(Isolation::ReadCommitted).expect("rc");
    for gets in 0..1_000_000 {
        if !running(&stop) {
            break;
        }
        let found = rc.get(&t, "hot").expect("get").is_some();
        if !found {
            stop.store(true, Ordering::Relaxed);
        }
        assert!(found, "hot vanished after {gets} gets");
    }
    stop.store(true, Ordering::Relaxed);
    updater.join().expect("updater");
    vacuum.join().expect("vacuum");
}

/// Seeds x and y, for the cycle R → W → T3 → R (and a, a row that
/// sorts before k).
fn seed(db: &Db, t: &Table) {
    let mut tx = db.begin().expect("begin");
    tx.put(t, "a", "0").expect("put");
    tx.put(t, "x", "0").expect("put");
    tx.put(t, "y", "0").expect("put");
    tx.commit().expect("commit");
}

/// W reads x, T3 reads y and writes x and commits (W →rw→ T3); then `w`
/// finishes W's writes (to k) and W commits.
fn pivot_w(db: &Db, t: &Table, w_writes: impl FnOnce(&mut strata::Transaction)) {
    let mut w = db.begin().expect("w");
    assert_eq!(
        w.get(t, "x").expect("w reads x").as_deref(),
        Some(&b"0"[..])
    );
    let mut t3 = db.begin().expect("t3");
    assert_eq!(
        t3.get(t, "y").expect("t3 reads y").as_deref(),
        Some(&b"0"[..])
    );
    t3.put(t, "x", "3").expect("t3 writes x");
    t3.commit().expect("t3 commits");
    w_writes(&mut w);
    w.commit().expect("w commits");
}

/// R's side of the cycle: reads k (W's write is unseen: R →rw→ W), writes
/// y (T3 read it: T3 →rw→ R), commits. True if R was stopped.
fn r_closes_the_cycle(r: strata::Transaction, t: &Table) -> bool {
    r_closes_the_cycle_reading(r, t, |r| r.get(t, "k").map(drop))
}

/// `r_closes_the_cycle`, with `read` for R's read of k.
fn r_closes_the_cycle_reading(
    r: strata::Transaction,
    t: &Table,
    read: impl FnOnce(&strata::Transaction) -> strata::Result<()>,
) -> bool {
    let mut r = r;
    let attempt = (|| -> strata::Result<()> {
        read(&r)?;
        r.put(t, "y", "r")?;
        r.commit().map(|_| ())
    })();
    match attempt {
        Ok(()) => false,
        Err(e) if e.is_retryable() => true,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

// Guards against vacuum removing a version whose creator a serializable
// reader must meet: W's insert of k, deleted since, was freed, and the
// cycle R → W → T3 → R committed.
#[test]
fn a_serializable_cycle_through_a_deleted_version_fails_after_vacuum() {
    for vacuum in [false, true] {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = open_manual(tmp.path());
        let t = db.table("t").expect("t");
        seed(&db, &t);
        let r = db.begin().expect("r");
        pivot_w(&db, &t, |w| w.put(&t, "k", "w").expect("w inserts k"));
        let mut w2 = db.begin().expect("w2");
        assert!(w2.delete(&t, "k").expect("w2 deletes k"));
        w2.commit().expect("w2 commits");
        if vacuum {
            // A second pass finds nothing to remove, and must forget
            // nothing R still needs.
            db.vacuum().expect("vacuum");
            db.vacuum().expect("vacuum");
        }
        assert!(
            r_closes_the_cycle(r, &t),
            "the cycle committed (vacuum: {vacuum})"
        );
    }
}

// Guards the edge to a writer that was running when R began (its xid in
// R's snapshot's in-progress list, below its xmax): W inserts k before R
// begins and commits after; W2 deletes k; a pass removes W's version.
#[test]
fn a_serializable_cycle_through_a_writer_running_at_the_readers_begin_fails_after_vacuum() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open_manual(tmp.path());
    let t = db.table("t").expect("t");
    seed(&db, &t);
    let mut w = db.begin().expect("w");
    assert_eq!(
        w.get(&t, "x").expect("w reads x").as_deref(),
        Some(&b"0"[..])
    );
    w.put(&t, "k", "w").expect("w inserts k");
    let r = db.begin().expect("r");
    let mut t3 = db.begin().expect("t3");
    assert_eq!(
        t3.get(&t, "y").expect("t3 reads y").as_deref(),
        Some(&b"0"[..])
    );
    t3.put(&t, "x", "3").expect("t3 writes x");
    t3.commit().expect("t3 commits");
    w.commit().expect("w commits");
    let mut w2 = db.begin().expect("w2");
    assert!(w2.delete(&t, "k").expect("w2 deletes k"));
    w2.commit().expect("w2 commits");
    db.vacuum().expect("vacuum");
    assert!(r_closes_the_cycle(r, &t), "the cycle committed");
}

// Guards the same edge when the version W wrote is overwritten rather
// than deleted.
#[test]
fn a_serializable_cycle_through_an_overwritten_version_fails_after_vacuum() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open_manual(tmp.path());
    let t = db.table("t").expect("t");
    seed(&db, &t);
    let r = db.begin().expect("r");
    pivot_w(&db, &t, |w| w.put(&t, "k", "w").expect("w inserts k"));
    let mut w2 = db.begin().expect("w2");
    w2.put(&t, "k", "w2").expect("w2 overwrites k");
    w2.commit().expect("w2 commits");
    db.vacuum().expect("vacuum");
    assert!(r_closes_the_cycle(r, &t), "the cycle committed");
}

// Guards against vacuum dropping W's version from the middle of a chain
// between two Snapshot-level writes (R sees neither, nor the stamp W left
// on the older one): the edge R → W was lost with it.
#[test]
fn a_serializable_cycle_through_the_middle_of_a_chain_fails_after_vacuum() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open_manual(tmp.path());
    let t = db.table("t").expect("t");
    seed(&db, &t);
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "k", "v0").expect("put");
    tx.commit().expect("commit");
    let r = db.begin().expect("r");
    let mut s1 = db.begin_with(Isolation::Snapshot).expect("s1");
    s1.put(&t, "k", "s1").expect("put");
    s1.commit().expect("commit");
    pivot_w(&db, &t, |w| w.put(&t, "k", "w").expect("w overwrites k"));
    let mut s2 = db.begin_with(Isolation::Snapshot).expect("s2");
    s2.put(&t, "k", "s2").expect("put");
    s2.commit().expect("commit");
    db.vacuum().expect("vacuum");
    assert!(r_closes_the_cycle(r, &t), "the cycle committed");
}

// Guards the scan's side of the removed-version edge: a scan over k,
// begun after the pass removed k entirely, must still meet W.
#[test]
fn a_serializable_scan_after_vacuum_meets_the_writer_of_a_removed_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open_manual(tmp.path());
    let t = db.table("t").expect("t");
    seed(&db, &t);
    let r = db.begin().expect("r");
    pivot_w(&db, &t, |w| w.put(&t, "k", "w").expect("w inserts k"));
    let mut w2 = db.begin().expect("w2");
    assert!(w2.delete(&t, "k").expect("w2 deletes k"));
    w2.commit().expect("w2 commits");
    db.vacuum().expect("vacuum");
    let stopped = r_closes_the_cycle_reading(r, &t, |r| {
        let keys: Vec<_> = r.scan(&t, "b".."m")?.collect::<strata::Result<_>>()?;
        assert!(keys.is_empty(), "k is absent for R");
        Ok(())
    });
    assert!(stopped, "the cycle committed");
}

// Guards a scan that fetched k's index entry before the pass removed k:
// resolving the entry afterwards must still meet W.
#[test]
fn a_serializable_scan_across_a_vacuum_pass_meets_the_writer_of_a_removed_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open_manual(tmp.path());
    let t = db.table("t").expect("t");
    seed(&db, &t);
    let r = db.begin().expect("r");
    pivot_w(&db, &t, |w| w.put(&t, "k", "w").expect("w inserts k"));
    let mut w2 = db.begin().expect("w2");
    assert!(w2.delete(&t, "k").expect("w2 deletes k"));
    w2.commit().expect("w2 commits");
    let stopped = r_closes_the_cycle_reading(r, &t, |r| {
        let mut scan = r.scan(&t, "a".."m")?;
        let first = scan.next().expect("a row")?;
        assert_eq!(first.0, b"a");
        // k's entry is fetched (it shares the first batch with a).
        let stats = db.vacuum().expect("vacuum");
        assert!(stats.keys_removed >= 1, "{stats:?}");
        assert!(scan.next().transpose()?.is_none(), "k is absent for R");
        Ok(())
    });
    assert!(stopped, "the cycle committed");
}

// Guards the span a scan's batch looks up in the ledger: it must include
// the batch's last key, whose chain lost W's version in its middle, from
// either end of the range.
#[test]
fn a_serializable_scan_meets_a_removed_writer_of_a_batchs_last_key() {
    for reverse in [false, true] {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = open_manual(tmp.path());
        let t = db.table("t").expect("t");
        let s = db.table("s").expect("s");
        seed(&db, &t);
        // k is the last entry of the scan's first batch, and more follow.
        let first = strata::internals::limits::SCAN_BATCH_FIRST - 1;
        let (before, after) = if reverse { (10, first) } else { (first, 10) };
        let mut tx = db.begin().expect("begin");
        for i in 0..before {
            tx.put(&s, format!("a{i:02}"), "0").expect("put");
        }
        tx.put(&s, "k", "v0").expect("put");
        for i in 0..after {
            tx.put(&s, format!("m{i:02}"), "0").expect("put");
        }
        tx.commit().expect("commit");
        let r = db.begin().expect("r");
        let mut s1 = db.begin_with(Isolation::Snapshot).expect("s1");
        s1.put(&s, "k", "s1").expect("put");
        s1.commit().expect("commit");
        pivot_w(&db, &t, |w| w.put(&s, "k", "w").expect("w overwrites k"));
        let mut s2 = db.begin_with(Isolation::Snapshot).expect("s2");
        s2.put(&s, "k", "s2").expect("put");
        s2.commit().expect("commit");
        db.vacuum().expect("vacuum");
        let stopped = r_closes_the_cycle_reading(r, &t, |r| {
            let scan = r.scan(&s, ..)?;
            let rows: Vec<_> = if reverse {
                scan.rev().collect::<strata::Result<_>>()?
            } else {
                scan.collect::<strata::Result<_>>()?
            };
            assert_eq!(rows.len(), before + after + 1);
            Ok(())
        });
        assert!(stopped, "the cycle committed (reverse: {reverse})");
    }
}

// Guards the cycle through a deleted version with the background vacuum
// doing the removal.
#[test]
fn a_serializable_cycle_fails_beside_the_background_vacuum() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = Db::open_with(
        tmp.path(),
        Options::default()
            .vacuum_threshold(1)
            .lock_timeout(Some(Duration::from_secs(2))),
    )
    .expect("open");
    let t = db.table("t").expect("t");
    seed(&db, &t);
    let r = db.begin().expect("r");
    pivot_w(&db, &t, |w| w.put(&t, "k", "w").expect("w inserts k"));
    let mut w2 = db.begin().expect("w2");
    assert!(w2.delete(&t, "k").expect("w2 deletes k"));
    w2.commit().expect("w2 commits");
    // The background pass is due (one dead version, threshold one); give
    // it a bounded while to remove the superseded x and the deleted k.
    let versions = || {
        let s = db.stats().expect("stats");
        s.tables
            .iter()
            .find(|t| t.name == "t")
            .map_or(0, |t| t.versions)
    };
    let before = versions();
    for _ in 0..600 {
        if versions() < before {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Without a pass the versions are all there and the test shows nothing.
    assert!(
        versions() < before,
        "no background vacuum pass ran within 30 s"
    );
    assert!(r_closes_the_cycle(r, &t), "the cycle committed");
}

// Guards the ledger's bound: once it is full, vacuum keeps the versions
// it can no longer record (a serializable reader still meets their
// writers), and frees them once no such reader runs.
#[test]
fn versions_the_full_ledger_cannot_take_stay_until_the_reader_ends() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open_manual(tmp.path());
    let t = db.table("t").expect("t");
    // Longest keys: the ledger (4 MiB) holds about 2 000 of them.
    let long = |i: u32| format!("{i:05}{}", "x".repeat(2000));
    const N: u32 = 3000;
    let r = db.begin().expect("r");
    for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
        let mut tx = db.begin().expect("begin");
        for &i in chunk {
            tx.put(&t, long(i), "v").expect("put");
        }
        tx.commit().expect("commit");
    }
    let mut tx = db.begin().expect("begin");
    for i in 0..N {
        assert!(tx.delete(&t, long(i)).expect("delete"));
    }
    tx.commit().expect("commit");
    let held = db.vacuum().expect("vacuum");
    assert!(
        held.keys_removed > 0 && held.keys_removed < u64::from(N),
        "the ledger takes some, not all: {held:?}"
    );
    assert_eq!(
        r.get(&t, long(N - 1)).expect("get"),
        None,
        "deleted for R too (it never saw the rows)"
    );
    drop(r);
    let rest = db.vacuum().expect("vacuum");
    assert_eq!(
        held.keys_removed + rest.keys_removed,
        u64::from(N),
        "the rest go once the reader is gone: {rest:?}"
    );
}

/// One transaction of the register workload, as its thread saw it.
#[derive(Clone, Debug, Default)]
struct Rec {
    id: u64,
    /// Ticks of a shared counter around `begin` and `commit`: a commit
    /// that returned before a begin was called is in its snapshot, one
    /// called after a begin returned is not.
    begin: (u64, u64),
    commit: (u64, u64),
    lsn: u64,
    /// Key and the writer of the value read (`None`: absent).
    reads: Vec<(u8, Option<u64>)>,
    /// Key and whether the write was a put (else a delete).
    writes: Vec<(u8, bool)>,
}

const REGS: u8 = 4;

/// A worker of serializable transactions reading two registers and then
/// overwriting or deleting a third; values name their writer.
fn register_worker(
    db: &Db,
    t: &Table,
    w: u64,
    n: u64,
    clock: &std::sync::atomic::AtomicU64,
) -> Vec<Rec> {
    let tick = || clock.fetch_add(1, Ordering::SeqCst);
    let mut rnd = common::xorshift((w + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut out = Vec::new();
    for i in 0..n {
        let mut rec = Rec {
            id: (w << 32) | (i + 1),
            ..Default::default()
        };
        let b0 = tick();
        let mut tx = db.begin().expect("begin");
        rec.begin = (b0, tick());
        let result = (|| {
            let (a, b, c) = (rnd(4) as u8, rnd(4) as u8, rnd(4) as u8);
            if rnd(2) == 0 {
                // An old snapshot: others commit, and vacuum passes,
                // before this transaction reads.
                std::thread::sleep(Duration::from_micros(1000));
            }
            for k in [a, b] {
                let v = tx.get(t, [k])?;
                let writer = v.map(|v| std::str::from_utf8(&v).expect("utf8").parse().expect("id"));
                rec.reads.push((k, writer));
                if rnd(4) == 0 {
                    // Long enough for others to commit and vacuum to pass.
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
            if rnd(3) == 0 {
                if tx.delete(t, [c])? {
                    rec.writes.push((c, false));
                } else {
                    rec.reads.push((c, None));
                }
            } else {
                tx.put(t, [c], rec.id.to_string())?;
                rec.writes.push((c, true));
            }
            let c0 = tick();
            let info = tx.commit()?;
            rec.commit = (c0, tick());
            rec.lsn = info.lsn.0;
            Ok::<_, strata::Error>(())
        })();
        match result {
            Ok(()) => out.push(rec),
            Err(e) if e.is_retryable() => {}
            Err(e) => panic!("worker {w}: {e}"),
        }
    }
    out
}

/// Dependency edges among committed transactions. Each register's
/// versions are in its writers' commit order (a writer waits for the one
/// before it); a read of a value sits on its writer's version, a read of
/// absence on the one absent state the begin and commit ticks allow
/// (several allowed: no edge — the checker only draws edges it is sure
/// of). Returns the graph and how many absent reads were ambiguous.
fn register_edges(recs: &[Rec]) -> (Vec<Vec<usize>>, usize) {
    // Per register: writers in version order, and whether each deleted.
    let mut order: Vec<Vec<(usize, bool)>> = vec![Vec::new(); REGS as usize];
    for (i, r) in recs.iter().enumerate() {
        for &(k, put) in &r.writes {
            order[k as usize].push((i, put));
        }
    }
    for o in &mut order {
        o.sort_by_key(|&(i, _)| recs[i].lsn);
    }
    let by_id: std::collections::HashMap<u64, usize> =
        recs.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
    let mut g = vec![std::collections::BTreeSet::new(); recs.len()];
    for o in &order {
        for pair in o.windows(2) {
            g[pair[0].0].insert(pair[1].0); // ww
        }
    }
    let mut ambiguous = 0;
    for (i, r) in recs.iter().enumerate() {
        for &(k, seen) in &r.reads {
            let o = &order[k as usize];
            // Position in `o` of the version read (0: the initial absence).
            let pos = match seen {
                Some(id) => {
                    let w = *by_id
                        .get(&id)
                        .unwrap_or_else(|| panic!("read {id}, which never committed"));
                    let p = o.iter().position(|&(x, _)| x == w).expect("a writer of k");
                    Some(p + 1)
                }
                None => {
                    let visible = |j: usize| recs[j].commit.1 < r.begin.0;
                    let invisible = |j: usize| recs[j].commit.0 > r.begin.1;
                    let candidates: Vec<usize> = (0..=o.len())
                        .filter(|&p| p == 0 || !o[p - 1].1)
                        .filter(|&p| p == 0 || !invisible(o[p - 1].0))
                        .filter(|&p| o.get(p).is_none_or(|&(j, _)| !visible(j) || j == i))
                        .collect();
                    assert!(
                        !candidates.is_empty(),
                        "T{i} read an absence no state had: {r:?}"
                    );
                    if candidates.len() > 1 {
                        ambiguous += 1;
                    }
                    (candidates.len() == 1).then(|| candidates[0])
                }
            };
            let Some(p) = pos else { continue };
            if p > 0 && o[p - 1].0 != i {
                g[o[p - 1].0].insert(i); // wr
            }
            if let Some(&(j, _)) = o.get(p) {
                if j != i {
                    g[i].insert(j); // rw
                }
            }
        }
    }
    (
        g.into_iter().map(|s| s.into_iter().collect()).collect(),
        ambiguous,
    )
}

// Guards serializable histories with overwrites and deletes against
// vacuum passes running beside them: no dependency cycle commits.
#[test]
fn serializable_register_histories_beside_vacuum_have_no_cycles() {
    let rounds: usize = std::env::var("STRATA_HISTORY_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let mut moved_total = 0;
    for round in 0..rounds {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = Db::open_with(
            tmp.path(),
            Options::default()
                .vacuum_threshold(0)
                .durability(strata::Durability::Eventual)
                .lock_timeout(Some(Duration::from_secs(2))),
        )
        .expect("open");
        let t = db.table("t").expect("t");
        let filler = db.table("filler").expect("filler");
        let clock = std::sync::atomic::AtomicU64::new(0);
        let done = AtomicBool::new(false);
        let (recs, (passes, moved)) = std::thread::scope(|s| {
            let vac = s.spawn(|| {
                let (mut passes, mut moved) = (0, 0);
                while !done.load(Ordering::Relaxed) && passes < 100_000 {
                    let s = db.vacuum().expect("vacuum");
                    moved += s.versions_moved;
                    passes += 1;
                    if passes % 16 == 0 {
                        db.checkpoint().expect("checkpoint");
                    }
                }
                (passes, moved)
            });
            // In odd rounds, rows of 1 KB written and mostly deleted, over
            // and over: the heap pages the registers' versions share with
            // them empty out, and compaction moves what is left on them
            // (registers' versions too) while the workers read and write.
            // (Even rounds keep vacuum's passes many and quick.)
            if round % 2 == 1 {
                s.spawn(|| churn_filler(&db, &filler, &done));
            }
            let workers: Vec<_> = (0..4)
                .map(|w| {
                    let (db, t, clock) = (&db, &t, &clock);
                    s.spawn(move || register_worker(db, t, w + 4 * round as u64, 250, clock))
                })
                .collect();
            let recs: Vec<Rec> = workers
                .into_iter()
                .flat_map(|h| h.join().expect("worker"))
                .collect();
            done.store(true, Ordering::Relaxed);
            (recs, vac.join().expect("vacuum"))
        });
        assert!(recs.len() > 100, "round {round}: {} committed", recs.len());
        let (g, ambiguous) = register_edges(&recs);
        if let Some(c) = common::find_cycle(&g) {
            let detail: Vec<String> = c.iter().map(|&i| format!("T{i}: {:?}", recs[i])).collect();
            panic!(
                "round {round}: a cycle committed {c:?} ({passes} vacuum passes):\n{}",
                detail.join("\n")
            );
        }
        eprintln!(
            "round {round}: {} committed, {ambiguous} ambiguous absent reads, {passes} vacuum passes, {moved} versions moved",
            recs.len()
        );
        moved_total += moved;
    }
    assert!(moved_total > 0, "compaction never ran beside the histories");
}

/// Writes 64 rows of 1 KB, then deletes three of four and those its
/// previous round kept, until `done` (at most 10 000 rounds).
fn churn_filler(db: &Db, filler: &Table, done: &AtomicBool) {
    for round in 0..10_000u32 {
        if done.load(Ordering::Relaxed) {
            return;
        }
        let key = |r: u32, i: u32| format!("{r:05}-{i:03}");
        let r = (|| {
            let mut tx = db.begin_with(Isolation::Snapshot)?;
            for i in 0..64 {
                tx.put(filler, key(round, i), [7u8; 1000])?;
            }
            tx.commit()?;
            let mut tx = db.begin_with(Isolation::Snapshot)?;
            for i in (0..64).filter(|i| i % 4 != 0) {
                tx.delete(filler, key(round, i))?;
            }
            if let Some(prev) = round.checked_sub(1) {
                for i in (0..64).step_by(4) {
                    tx.delete(filler, key(prev, i))?;
                }
            }
            tx.commit().map(drop)
        })();
        match r {
            Ok(()) => {}
            Err(e) if e.is_retryable() => {}
            Err(e) => panic!("filler: {e}"),
        }
    }
}

/// The write-write scenario: seed "other"; T begins at `level` and reads
/// "other"; W inserts k and commits; W2 deletes k and commits; with
/// `vacuum`, two passes run; T reads k (absent) and `write`s it. Returns
/// T's outcome: true if it failed with `SerializationFailure`.
fn writer_meets_a_concurrent_delete(
    level: Isolation,
    vacuum: bool,
    write: impl FnOnce(&mut strata::Transaction, &Table) -> strata::Result<()>,
) -> bool {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open_manual(tmp.path());
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "other", "0").expect("seed");
    tx.commit().expect("seed commits");
    let mut tx = db.begin_with(level).expect("t");
    assert_eq!(
        tx.get(&t, "other").expect("t reads other").as_deref(),
        Some(&b"0"[..])
    );
    let mut w = db.begin().expect("w");
    w.put(&t, "k", "w").expect("w inserts k");
    w.commit().expect("w commits");
    let mut w2 = db.begin().expect("w2");
    assert!(w2.delete(&t, "k").expect("w2 deletes k"));
    w2.commit().expect("w2 commits");
    if vacuum {
        let stats = db.vacuum().expect("vacuum");
        assert_eq!(stats.keys_removed, 1, "k's only version went: {stats:?}");
        // A second pass prunes what vacuum remembers of removed versions:
        // T's snapshot must still count.
        db.vacuum().expect("vacuum");
    }
    let attempt = (|| -> strata::Result<()> {
        assert_eq!(tx.get(&t, "k")?, None, "t does not see w's insert");
        write(&mut tx, &t)?;
        tx.commit().map(|_| ())
    })();
    match attempt {
        Ok(()) => false,
        // First updater wins names its failure; a timeout or deadlock here
        // would be some other fault.
        Err(strata::Error::SerializationFailure { .. }) => true,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn put_k(tx: &mut strata::Transaction, t: &Table) -> strata::Result<()> {
    tx.put(t, "k", "t")
}

fn delete_k(tx: &mut strata::Transaction, t: &Table) -> strata::Result<()> {
    tx.delete(t, "k").map(drop)
}

// Guards against vacuum freeing a deleted key's last version while a
// Snapshot writer that does not see its creator or deleter runs: the
// writer's put found no row, and first updater wins was lost.
#[test]
fn a_snapshot_put_meets_a_concurrent_insert_and_delete_after_vacuum() {
    for vacuum in [false, true] {
        assert!(
            writer_meets_a_concurrent_delete(Isolation::Snapshot, vacuum, put_k),
            "vacuum {vacuum}: t's put must fail (first updater wins)"
        );
    }
}

// Guards against vacuum freeing a deleted key's last version while a
// Serializable writer that does not see its creator or deleter runs.
#[test]
fn a_serializable_put_meets_a_concurrent_insert_and_delete_after_vacuum() {
    for vacuum in [false, true] {
        assert!(
            writer_meets_a_concurrent_delete(Isolation::Serializable, vacuum, put_k),
            "vacuum {vacuum}: t's put must fail (first updater wins)"
        );
    }
}

// Guards against vacuum hiding a concurrent insert and delete from a
// Snapshot transaction's delete of the (to it) absent key.
#[test]
fn a_snapshot_delete_of_an_absent_key_meets_a_concurrent_delete_after_vacuum() {
    for vacuum in [false, true] {
        assert!(
            writer_meets_a_concurrent_delete(Isolation::Snapshot, vacuum, delete_k),
            "vacuum {vacuum}: t's delete must fail (first updater wins)"
        );
    }
}

// Guards against vacuum hiding a concurrent insert and delete from a
// Serializable transaction's delete of the (to it) absent key.
#[test]
fn a_serializable_delete_of_an_absent_key_meets_a_concurrent_delete_after_vacuum() {
    for vacuum in [false, true] {
        assert!(
            writer_meets_a_concurrent_delete(Isolation::Serializable, vacuum, delete_k),
            "vacuum {vacuum}: t's delete must fail (first updater wins)"
        );
    }
}

// Guards the space a long writer holds: keys inserted and deleted while
// it runs leave the heap at the next pass (vacuum remembers only their
// creators), and its writes of them still fail.
#[test]
fn a_long_writer_holds_back_no_key_deleted_while_it_runs() {
    for level in [Isolation::Snapshot, Isolation::Serializable] {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = open_manual(tmp.path());
        let t = db.table("t").expect("t");
        let mut tx = db.begin().expect("begin");
        tx.put(&t, "other", "0").expect("seed");
        tx.commit().expect("seed commits");
        let mut long = db.begin_with(level).expect("long");
        assert!(long.get(&t, "other").expect("get").is_some());
        const N: u32 = 100;
        for i in 0..N {
            let mut w = db.begin().expect("w");
            w.put(&t, key(i), "w").expect("put");
            w.commit().expect("commit");
            let mut w2 = db.begin().expect("w2");
            assert!(w2.delete(&t, key(i)).expect("delete"));
            w2.commit().expect("commit");
        }
        let stats = db.vacuum().expect("vacuum");
        assert_eq!(stats.keys_removed, u64::from(N), "{level:?}: {stats:?}");
        assert_eq!(stats.versions_removed, u64::from(N), "{level:?}: {stats:?}");
        let err = long
            .put(&t, key(N / 2), "long")
            .expect_err("first updater wins");
        assert!(err.is_retryable(), "{level:?}: {err}");
    }
}
