//! Two-phase commit, the participant's side: prepared transactions keep
//! their writes invisible and their row locks across kill -9 and restarts,
//! until `commit_prepared` or `rollback_prepared` decides.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use strata::{Db, Durability, Error, Isolation, Options, Xid};

fn options() -> Options {
    // Eventual durability: prepare and the decisions must force the log
    // to disk anyway.
    Options::default()
        .durability(Durability::Eventual)
        .cache_size(1 << 20)
        .lock_timeout(Some(Duration::from_millis(200)))
}

/// The committed value of `key` (at Snapshot: a serializable reader that
/// skips an in-doubt version after a restart fails, see the last test).
fn value(db: &Db, key: &str) -> Option<Vec<u8>> {
    let t = db.table("t").expect("table");
    let tx = db.begin_with(Isolation::Snapshot).expect("begin");
    tx.get(&t, key).expect("get")
}

/// The child: commits a base row, prepares two transactions, says so, and
/// waits to be killed.
fn child(dir: &Path) {
    let db = Db::open_with(dir, options()).expect("open");
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "a", "1").expect("put");
    tx.commit().expect("commit");
    let mut g1 = db.begin().expect("begin");
    g1.put(&t, "a", "2").expect("put");
    g1.put(&t, "b", "new").expect("put");
    g1.prepare("g1").expect("prepare g1");
    let mut g2 = db.begin_with(Isolation::Snapshot).expect("begin");
    g2.put(&t, "c", "doomed").expect("put");
    g2.prepare("g2").expect("prepare g2");
    println!("\nchild: both prepared");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn prepared_transactions_survive_kill_nine_holding_their_locks() {
    if let Ok(dir) = std::env::var("STRATA_TWOPC_CHILD") {
        child(Path::new(&dir));
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "prepared_transactions_survive_kill_nine_holding_their_locks",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("STRATA_TWOPC_CHILD", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let out = child.stdout.take().expect("stdout");
    let prepared = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.trim() == "child: both prepared");
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    assert!(prepared, "the child never prepared");

    let db = Db::open_with(tmp.path(), options()).expect("reopen after kill -9");
    let listed = db.prepared_transactions().expect("list");
    let gids: Vec<&str> = listed.iter().map(|p| p.gid.as_str()).collect();
    assert_eq!(gids, ["g1", "g2"], "both in doubt after the crash");
    assert!(listed.iter().all(|p| p.xid != Xid::NONE));
    assert_eq!(value(&db, "a").as_deref(), Some(&b"1"[..]), "g1 invisible");
    assert_eq!(value(&db, "b"), None, "g1's insert invisible");
    assert_eq!(value(&db, "c"), None, "g2's insert invisible");
    let t = db.table("t").expect("table");
    let mut w = db.begin().expect("begin");
    assert!(
        matches!(w.put(&t, "a", "3"), Err(Error::LockTimeout)),
        "g1 still holds its row lock on a"
    );
    drop(w);
    db.checkpoint()
        .expect("a checkpoint keeps what in-doubt transactions need");
    db.vacuum().expect("so does vacuum");
    assert_eq!(
        value(&db, "a").as_deref(),
        Some(&b"1"[..]),
        "the version g1 replaces survives vacuum while g1 is in doubt"
    );

    db.rollback_prepared("g2").expect("rollback g2");
    db.commit_prepared("g1").expect("commit g1");
    assert_eq!(value(&db, "a").as_deref(), Some(&b"2"[..]));
    assert_eq!(value(&db, "b").as_deref(), Some(&b"new"[..]));
    assert_eq!(value(&db, "c"), None, "g2 rolled back");
    assert!(matches!(
        db.commit_prepared("g1"),
        Err(Error::UnknownTransaction)
    ));
    assert!(matches!(
        db.rollback_prepared("g2"),
        Err(Error::UnknownTransaction)
    ));
    drop(db);

    let db = Db::open_with(tmp.path(), options()).expect("reopen again");
    assert!(db.prepared_transactions().expect("list").is_empty());
    assert_eq!(value(&db, "a").as_deref(), Some(&b"2"[..]));
    assert_eq!(value(&db, "b").as_deref(), Some(&b"new"[..]));
    assert_eq!(value(&db, "c"), None);
    db.check_integrity().expect("integrity");
}

#[test]
fn gids_are_checked() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = Db::open_with(tmp.path(), options()).expect("open");
    let t = common::create(&db, "t");
    let mut a = db.begin().expect("begin");
    a.put(&t, "x", "1").expect("put");
    a.prepare("same").expect("prepare");
    let mut b = db.begin().expect("begin");
    b.put(&t, "y", "1").expect("put");
    assert!(matches!(
        b.prepare("same"),
        Err(Error::DuplicateTransaction)
    ));
    assert_eq!(value(&db, "y"), None, "a failed prepare rolls back");
    let c = db.begin().expect("begin");
    assert!(matches!(c.prepare(""), Err(Error::InvalidGid { len: 0 })));
    let d = db.begin().expect("begin");
    let long = "g".repeat(strata::limits::GID_MAX + 1);
    assert!(matches!(d.prepare(&long), Err(Error::InvalidGid { .. })));
    assert!(matches!(
        db.commit_prepared("never"),
        Err(Error::UnknownTransaction)
    ));
    db.commit_prepared("same").expect("commit");
    assert_eq!(value(&db, "x").as_deref(), Some(&b"1"[..]));
}

/// A writer blocked on a prepared transaction's row lock proceeds once the
/// decision comes from another thread; a read-only prepare works too.
#[test]
fn a_decision_releases_the_row_locks() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = Db::open_with(
        tmp.path(),
        options().lock_timeout(Some(Duration::from_secs(10))),
    )
    .expect("open");
    let t = db.table("t").expect("table");
    let mut p = db.begin_with(Isolation::ReadCommitted).expect("begin");
    p.put(&t, "k", "prepared").expect("put");
    p.prepare("p").expect("prepare");
    let decider = {
        let db = db.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            db.rollback_prepared("p").expect("rollback");
        })
    };
    let mut w = db.begin_with(Isolation::ReadCommitted).expect("begin");
    w.put(&t, "k", "writer").expect("waits, then writes");
    w.commit().expect("commit");
    decider.join().expect("decider");
    assert_eq!(value(&db, "k").as_deref(), Some(&b"writer"[..]));
    let r = db.begin_read().expect("begin");
    r.prepare("read-only").expect("a read-only prepare");
    db.commit_prepared("read-only").expect("commit");
}

/// After a restart a prepared serializable transaction is assumed to have
/// conflicts out (its SSI state is lost): a serializable reader that has
/// to skip its versions and then writes fails, as in PostgreSQL.
#[test]
fn recovered_prepared_transactions_are_conflicts_out() {
    let tmp = tempfile::tempdir().expect("tmp");
    {
        let db = Db::open_with(tmp.path(), options()).expect("open");
        let t = common::create(&db, "t");
        let mut p = db.begin().expect("begin");
        assert_eq!(p.get(&t, "x").expect("read"), None);
        p.put(&t, "y", "p").expect("put");
        p.prepare("p").expect("prepare");
    }
    let db = Db::open_with(tmp.path(), options()).expect("reopen");
    let t = db.table("t").expect("table");
    let mut r = db.begin().expect("begin");
    let failed = (|| {
        assert_eq!(r.get(&t, "y")?, None, "p's version is skipped");
        r.put(&t, "z", "r")?;
        r.commit().map(drop)
    })();
    assert!(
        matches!(failed, Err(Error::SerializationFailure { .. })),
        "{failed:?}"
    );
    // Unrelated work goes on, and a write to what p read is no problem
    // until p commits first.
    let mut w = db.begin().expect("begin");
    w.put(&t, "x", "w").expect("put");
    w.commit().expect("commit");
    db.commit_prepared("p").expect("commit p");
    assert_eq!(value(&db, "y").as_deref(), Some(&b"p"[..]));
}

/// Guards against a recovered read-only prepared transaction leaving xid 0 in the running set for good.
#[test]
fn recovered_read_only_prepared_transactions_leave_nothing_running() {
    let tmp = tempfile::tempdir().expect("tmp");
    {
        let db = Db::open_with(tmp.path(), options()).expect("open");
        let t = common::create(&db, "t");
        let mut w = db.begin().expect("begin");
        w.put(&t, "k", "w").expect("put");
        w.prepare("writer").expect("prepare");
        let r = db.begin_with(Isolation::Snapshot).expect("begin");
        assert_eq!(r.get(&t, "x").expect("read"), None);
        r.prepare("reader").expect("prepare");
        let s = db.begin_read().expect("begin");
        assert_eq!(s.get(&t, "x").expect("read"), None);
        s.prepare("serializable-reader").expect("prepare");
    }
    let db = Db::open_with(tmp.path(), options()).expect("reopen");
    let listed = db.prepared_transactions().expect("list");
    assert_eq!(listed.len(), 3);
    assert_eq!(
        listed.iter().filter(|p| p.xid == Xid::NONE).count(),
        2,
        "the readers wrote nothing"
    );
    assert_eq!(
        db.stats().expect("stats").running_xids,
        1,
        "only the writer holds an xid while in doubt"
    );
    db.commit_prepared("reader").expect("commit");
    db.rollback_prepared("serializable-reader")
        .expect("rollback");
    db.commit_prepared("writer").expect("commit");
    assert_eq!(
        db.stats().expect("stats").running_xids,
        0,
        "every decided transaction left the running set"
    );
    assert_eq!(value(&db, "k").as_deref(), Some(&b"w"[..]));
}

// ---- The coordinator, crashed at every step -------------------------

#[cfg(feature = "twopc")]
mod coordinator {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use strata::clock::Timestamp;
    use strata::fault::FaultFs;
    use strata::internals::twopc::{parse, Coordinator, Entry, Timing};
    use strata::{Db, Isolation, Options, Transaction, Xid};

    const LOG: &str = "/coordinator/decisions";

    fn timing() -> Timing {
        Timing {
            vote_timeout: Duration::from_secs(5),
            resend: Duration::from_millis(2),
            ack_wait: Duration::from_secs(5),
        }
    }

    fn shard(fs: &FaultFs) -> Db {
        Db::open_vfs(
            Arc::new(fs.clone()),
            Path::new("/shard"),
            Options::default()
                .cache_size(1 << 20)
                .lock_timeout(Some(Duration::from_millis(200))),
        )
        .expect("open shard")
    }

    fn coordinator(fs: &FaultFs, shards: &[Db], lazy: bool) -> Coordinator<Db> {
        let f = if lazy {
            Coordinator::restore
        } else {
            Coordinator::open
        };
        f(
            Arc::new(fs.clone()),
            Path::new(LOG),
            "bank",
            shards.to_vec(),
            timing(),
        )
        .expect("open coordinator")
    }

    fn balance(db: &Db) -> i64 {
        let t = db.table("accounts").expect("table");
        let tx = db.begin_with(Isolation::Snapshot).expect("begin");
        tx.get(&t, "balance")
            .expect("get")
            .map_or(0, |v| String::from_utf8_lossy(&v).parse().expect("number"))
    }

    fn set(db: &Db, v: i64) -> Transaction {
        let t = db.table("accounts").expect("table");
        let mut tx = db.begin_with(Isolation::Snapshot).expect("begin");
        tx.put(&t, "balance", v.to_string()).expect("put");
        tx
    }

    /// Two shards with 100 and 0; the transfer moves 10.
    fn world() -> ([FaultFs; 3], [Db; 2]) {
        let fs = [FaultFs::new(), FaultFs::new(), FaultFs::new()];
        let shards = [shard(&fs[0]), shard(&fs[1])];
        set(&shards[0], 100).commit().expect("seed");
        set(&shards[1], 0).commit().expect("seed");
        (fs, shards)
    }

    fn transfer(shards: &[Db; 2]) -> Vec<Transaction> {
        vec![
            set(&shards[0], balance(&shards[0]) - 10),
            set(&shards[1], balance(&shards[1]) + 10),
        ]
    }

    /// Steps of one whole transfer, from begin to the last acknowledgement.
    fn steps_of_a_transfer() -> usize {
        let (fs, shards) = world();
        let mut c = coordinator(&fs[2], &shards, false);
        c.begin(transfer(&shards)).expect("begin");
        let mut n = 0;
        while c.step().expect("step") {
            n += 1;
        }
        assert_eq!((balance(&shards[0]), balance(&shards[1])), (90, 10));
        n
    }

    /// The prepare timestamps the shards list now (in doubt).
    fn prepare_timestamps(shards: &[Db]) -> Vec<Timestamp> {
        shards
            .iter()
            .flat_map(|s| s.prepared_transactions().expect("list"))
            .map(|p| p.prepare_ts)
            .collect()
    }

    /// Crashes the coordinator — and with it none, one or both shards (a
    /// power loss on each crashed machine) — after every step of a
    /// transfer; optionally crashes the coordinator again in the middle of
    /// its recovery. After recovery both shards agree, no transaction is
    /// left in doubt, and a logged COMMITTED decision was carried out. A
    /// committed transfer has one commit timestamp on both shards: the one
    /// logged with COMMITTED, at least every prepare timestamp seen before
    /// and after the crash, and each prepare timestamp a crashed shard
    /// lists after its restart is the one it listed before.
    #[test]
    fn crash_at_every_step_never_splits_the_outcome() {
        let n = steps_of_a_transfer();
        assert!(n >= 7, "a transfer has at least 7 steps, saw {n}");
        let mut points = 0;
        let mut committed = 0;
        for k in 0..=n {
            for crashed in 0..4u8 {
                for again in [None, Some(1), Some(3)] {
                    let (fs, shards) = world();
                    let mut c = coordinator(&fs[2], &shards, false);
                    let work = transfer(&shards);
                    let xids: Vec<Xid> = work.iter().map(|t| t.xid()).collect();
                    c.begin(work).expect("begin");
                    for _ in 0..k {
                        c.step().expect("step");
                    }
                    let mut prepared = prepare_timestamps(&shards);
                    let seed = (k * 8 + crashed as usize) as u64;
                    let mut log_fs = fs[2].power_loss_image(seed);
                    drop(c);
                    let shards: Vec<Db> = (0..2)
                        .map(|i| {
                            if crashed & (1 << i) != 0 {
                                let img = fs[i].power_loss_image(seed + 100);
                                shard(&img)
                            } else {
                                shards[i].clone()
                            }
                        })
                        .collect();
                    for (i, s) in shards.iter().enumerate() {
                        if crashed & (1 << i) != 0 {
                            for p in prepare_timestamps(std::slice::from_ref(s)) {
                                assert!(
                                    prepared.contains(&p),
                                    "step {k}: shard {i} lists prepare ts {p} after its crash, \
                                     not one of {prepared:?}"
                                );
                            }
                        }
                    }
                    prepared.extend(prepare_timestamps(&shards));
                    if let Some(m) = again {
                        let mut c = coordinator(&log_fs, &shards, true);
                        for _ in 0..m {
                            c.step().expect("recovery step");
                        }
                        log_fs = log_fs.power_loss_image(seed + 200);
                    }
                    let logged = log_fs
                        .read_file(Path::new(LOG))
                        .map(|b| parse(Path::new(LOG), &b).expect("log parses").0)
                        .unwrap_or_default();
                    let decided_commit =
                        logged.iter().any(|r| matches!(r, Entry::Committed { .. }));
                    let logged_ts = logged.iter().find_map(|r| match r {
                        Entry::Committed { ts, .. } => Some(*ts),
                        _ => None,
                    });
                    let c = coordinator(&log_fs, &shards, false);
                    drop(c);
                    let got = (balance(&shards[0]), balance(&shards[1]));
                    let what = format!("step {k}, crashed {crashed:02b}, again {again:?}");
                    assert!(
                        got == (100, 0) || got == (90, 10),
                        "{what}: mixed outcome {got:?}"
                    );
                    if decided_commit {
                        assert_eq!(got, (90, 10), "{what}: a logged commit was lost");
                        committed += 1;
                    }
                    if got == (90, 10) {
                        let ts: Vec<Option<Timestamp>> = (0..2)
                            .map(|i| strata::internals::commit_ts(&shards[i], xids[i]).expect("ts"))
                            .collect();
                        assert!(ts[0].is_some(), "{what}: no commit timestamp");
                        assert_eq!(ts[0], ts[1], "{what}: the shards' commit timestamps");
                        if let Some(l) = logged_ts {
                            assert_eq!(ts[0], Some(l), "{what}: not the logged timestamp");
                        }
                        for p in &prepared {
                            assert!(
                                ts[0] >= Some(*p),
                                "{what}: committed at {ts:?}, below prepare ts {p}"
                            );
                        }
                    }
                    for s in &shards {
                        assert!(
                            s.prepared_transactions().expect("list").is_empty(),
                            "{what}: left in doubt"
                        );
                    }
                    points += 1;
                }
            }
        }
        eprintln!("{points} crash points over {n} steps, {committed} after the commit decision");
        assert!(committed > 0 && committed < points, "both outcomes reached");
    }
}

// ---- Preparing at a timestamp a log gave ------------------------------

fn now_ts() -> strata::clock::Timestamp {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    strata::clock::Timestamp::from_nanos(ns as u64)
}

#[test]
fn prepare_applying_takes_its_timestamp_below_the_mark_and_keeps_it() {
    use strata::clock::Timestamp;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_with(dir.path(), options()).expect("open");
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "a", "1").expect("put");
    let high = tx.commit().expect("commit").ts;
    // Two seconds below every timestamp this database gave out.
    let ts = Timestamp::from_nanos(high.as_nanos() - 2_000_000_000);
    let mut p = db.begin().expect("begin");
    p.put(&t, "a", "2").expect("put");
    let got = p.prepare_applying("g", ts).expect("prepare below the mark");
    assert_eq!(got, ts, "prepared at exactly the timestamp given");
    let listed = db.prepared_transactions().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].gid, "g");
    assert_eq!(listed[0].prepare_ts, ts, "listed at the timestamp given");
    db.close().expect("close");

    let db = Db::open_with(dir.path(), options()).expect("reopen");
    let listed = db.prepared_transactions().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].prepare_ts, ts, "recovered at the timestamp given");
    // A coordinator may decide at the prepare timestamp it is shown.
    db.commit_prepared_at("g", ts)
        .expect("commit at the prepare ts");
    assert_eq!(value(&db, "a").as_deref(), Some(&b"2"[..]));

    // A decision applied from a log, above it, after a restart too.
    let t = db.table("t").expect("table");
    let mut p = db.begin().expect("begin");
    p.put(&t, "b", "1").expect("put");
    p.set_applied_index(7);
    let ts2 = Timestamp::from_nanos(ts.as_nanos() + 1_000);
    assert_eq!(p.prepare_applying("h", ts2).expect("prepare"), ts2);
    assert_eq!(db.applied_index().expect("index"), 7, "index recorded");
    db.close().expect("close");
    let db = Db::open_with(dir.path(), options()).expect("reopen");
    assert_eq!(db.prepared_transactions().expect("list")[0].prepare_ts, ts2);
    db.commit_prepared_applying("h", Timestamp::from_nanos(ts2.as_nanos() + 1), 8)
        .expect("commit applying");
    assert_eq!(value(&db, "b").as_deref(), Some(&b"1"[..]));
}

#[test]
fn prepare_applying_raises_the_mark_and_refuses_the_first_and_last() {
    use strata::clock::Timestamp;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_with(dir.path(), options()).expect("open");
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "base", "1").expect("put");
    tx.commit().expect("commit");
    for bad in [Timestamp::ZERO, Timestamp::MAX] {
        let mut p = db.begin().expect("begin");
        p.put(&t, "a", "1").expect("put");
        match p.prepare_applying("g", bad) {
            Err(Error::TimestampRefused { .. }) => {}
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert!(db.prepared_transactions().expect("list").is_empty());
    // Ahead of the clock, within a commit's wait: a later commit here is
    // above it, as after a prepare at the clock.
    let ahead = Timestamp::from_nanos(now_ts().as_nanos() + 300_000_000);
    let mut p = db.begin().expect("begin");
    p.put(&t, "a", "1")
        .expect("put (the gid and the row are free again)");
    assert_eq!(p.prepare_applying("g", ahead).expect("prepare"), ahead);
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "other", "1").expect("put");
    let later = tx.commit().expect("commit").ts;
    assert!(later > ahead, "commit at {later}, prepared at {ahead}");
    db.rollback_prepared("g").expect("rollback");
}
