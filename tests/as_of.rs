//! Reads as of a timestamp (`Db::begin_at`): exactly the commits stamped
//! at or before it, the same answer after restart, checkpoint and vacuum,
//! history kept for live reads and for the retention, `SnapshotTooOld`
//! past it, waits for a timestamp not yet safe (the clock, a commit in
//! flight, a prepared transaction), and the marks that keep later commits
//! above every timestamp read at.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::xorshift;
use strata::clock::{Clock, FixedEpsilon, SimClock, Timestamp};
use strata::{Db, Durability, Error, Options, Table};

/// 2026-12-07, in nanoseconds since the epoch.
const START: u64 = 1_796_601_600_000_000_000;

type State = BTreeMap<Vec<u8>, Vec<u8>>;

fn sim_opts(clock: &SimClock) -> Options {
    Options::default()
        .cache_size(4 << 20)
        .durability(Durability::Eventual)
        .background(false)
        .clock(Arc::new(clock.clone()))
}

fn state_at(db: &Db, t: &Table, ts: Timestamp) -> State {
    let tx = db.begin_at(ts).expect("begin_at");
    assert_eq!(tx.read_ts(), Some(ts));
    let rows: State = match tx.scan(t, ..) {
        Ok(scan) => scan.collect::<Result<_, _>>().expect("rows"),
        // Before the first commit, which created the table.
        Err(Error::NoSuchTable { .. }) => {
            assert!(matches!(tx.get(t, b"k"), Err(Error::NoSuchTable { .. })));
            return State::new();
        }
        Err(e) => panic!("scan as of {ts}: {e}"),
    };
    // Point reads agree with the scan, for every key ever written.
    for k in 0..8u8 {
        let key = [b'k', k];
        assert_eq!(
            tx.get(t, key).expect("get"),
            rows.get(&key[..]).cloned(),
            "get and scan disagree at {ts}"
        );
    }
    rows
}

/// A seeded history of puts, updates and deletes over eight keys, each
/// commit a millisecond of simulated time after the last. Returns each
/// commit's timestamp with the state it left.
fn history(
    db: &Db,
    t: &Table,
    clock: &SimClock,
    seed: u64,
    commits: usize,
) -> Vec<(Timestamp, State)> {
    let mut rng = xorshift(seed);
    let mut model = State::new();
    let mut out = Vec::new();
    for i in 0..commits {
        clock.advance(Duration::from_millis(1));
        let mut tx = db.begin().expect("begin");
        for _ in 0..1 + rng(3) {
            let key = vec![b'k', rng(8) as u8];
            if rng(4) == 0 {
                tx.delete(t, &key).expect("delete");
                model.remove(&key);
            } else {
                let v = format!("v{i}-{}", rng(1000)).into_bytes();
                tx.put(t, &key, &v).expect("put");
                model.insert(key, v);
            }
        }
        let info = tx.commit().expect("commit");
        out.push((info.ts, model.clone()));
    }
    out
}

/// Checks every commit's state at its timestamp, halfway to the next and
/// just before the next, and nothing before the first.
fn check_history(db: &Db, t: &Table, h: &[(Timestamp, State)], what: &str) {
    let first = h[0].0;
    assert_eq!(
        state_at(db, t, Timestamp::from_nanos(first.as_nanos() - 1)),
        State::new(),
        "{what}: before the first commit"
    );
    for (i, (ts, want)) in h.iter().enumerate() {
        let mut probes = vec![*ts];
        if let Some((next, _)) = h.get(i + 1) {
            let (a, b) = (ts.as_nanos(), next.as_nanos());
            probes.push(Timestamp::from_nanos(a + (b - a) / 2));
            probes.push(Timestamp::from_nanos(b - 1));
        }
        for p in probes {
            assert_eq!(
                &state_at(db, t, p),
                want,
                "{what}: state as of {p} (commit {i} at {ts})"
            );
        }
    }
}

#[test]
fn reads_as_of_every_timestamp_see_exactly_the_commits_at_or_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let opts = sim_opts(&clock).history_retention(Duration::from_secs(3600));
    let db = Db::open_with(dir.path(), opts.clone()).expect("open");
    let t = db.table("t").expect("table");
    let h = history(&db, &t, &clock, 7, 60);
    check_history(&db, &t, &h, "live");
    db.checkpoint().expect("checkpoint");
    check_history(&db, &t, &h, "after a checkpoint");
    let v = db.vacuum().expect("vacuum");
    assert_eq!(v.versions_removed, 0, "an hour of history is kept: {v:?}");
    check_history(&db, &t, &h, "after vacuum");
    db.close().expect("close");
    let db = Db::open_with(dir.path(), opts).expect("reopen");
    let t = db.table("t").expect("table");
    check_history(&db, &t, &h, "after a restart");
}

#[test]
fn vacuum_keeps_the_retention_and_refuses_reads_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let retention = Duration::from_millis(20);
    let opts = sim_opts(&clock).history_retention(retention);
    let db = Db::open_with(dir.path(), opts.clone()).expect("open");
    let t = db.table("t").expect("table");
    let h = history(&db, &t, &clock, 11, 40);
    // 40 ms of history; the vacuum pass keeps the last 20, and the
    // statistics said beforehand what it would remove.
    let dead: u64 = db
        .stats()
        .expect("stats")
        .tables
        .iter()
        .map(|t| t.dead_versions)
        .sum();
    let v = db.vacuum().expect("vacuum");
    assert!(v.versions_removed > 0, "older history goes: {v:?}");
    assert_eq!(v.versions_removed, dead, "dead versions in the statistics");
    let horizon = db.stats().expect("stats").history_horizon;
    assert_eq!(
        horizon,
        clock.now().expect("now").earliest.saturating_sub(retention)
    );
    for (i, (ts, want)) in h.iter().enumerate() {
        if *ts >= horizon {
            assert_eq!(&state_at(&db, &t, *ts), want, "commit {i} at {ts}, kept");
        } else {
            match db.begin_at(*ts) {
                Err(Error::SnapshotTooOld {
                    ts: asked,
                    horizon: h,
                }) => {
                    assert_eq!((asked, h), (*ts, horizon));
                }
                other => panic!("commit {i} at {ts} below {horizon}: {other:?}"),
            }
        }
    }
    // The state at the horizon itself is the last commit's before it.
    let before = h
        .iter()
        .rev()
        .find(|(ts, _)| *ts <= horizon)
        .map(|(_, s)| s.clone());
    assert_eq!(Some(state_at(&db, &t, horizon)), before);
    // The horizon is kept across a restart: still refused.
    db.close().expect("close");
    let db = Db::open_with(dir.path(), opts).expect("reopen");
    assert!(matches!(
        db.begin_at(h[0].0),
        Err(Error::SnapshotTooOld { .. })
    ));
    assert_eq!(db.stats().expect("stats").history_horizon, horizon);
}

#[test]
fn vacuum_without_retention_keeps_what_a_live_read_as_of_a_timestamp_sees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let db = Db::open_with(dir.path(), sim_opts(&clock)).expect("open");
    let t = db.table("t").expect("table");
    let h = history(&db, &t, &clock, 3, 20);
    let (ts, want) = h[9].clone();
    let reader = db.begin_at(ts).expect("begin_at");
    let h2 = history(&db, &t, &clock, 5, 20);
    let v = db.vacuum().expect("vacuum");
    assert!(v.versions_removed > 0, "what no one sees goes: {v:?}");
    let rows: State = reader
        .scan(&t, ..)
        .expect("scan")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(rows, want, "the live read as of {ts} after vacuum");
    // A new read at the same timestamp is still served, the horizon held
    // at the live one.
    assert_eq!(state_at(&db, &t, ts), want);
    drop(reader);
    db.vacuum().expect("vacuum");
    assert!(matches!(db.begin_at(ts), Err(Error::SnapshotTooOld { .. })));
    let last = h2.last().expect("commits");
    let now = clock.now().expect("now").earliest;
    assert_eq!(state_at(&db, &t, now), last.1);
}

#[test]
fn a_read_at_a_future_timestamp_waits_for_the_clock_and_commits_follow_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    clock.set_epsilon(Duration::from_millis(2));
    let db = Db::open_with(
        dir.path(),
        sim_opts(&clock).lock_timeout(Some(Duration::from_secs(1))),
    )
    .expect("open");
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"k", b"1").expect("put");
    let first = tx.commit().expect("commit");
    let future = clock
        .now()
        .expect("now")
        .latest
        .saturating_add(Duration::from_millis(300));
    let reader = db.begin_at(future).expect("begin_at");
    assert!(
        clock.now().expect("now").earliest > future,
        "begin_at returned before the clock passed {future}"
    );
    assert!(first.ts < future);
    assert_eq!(reader.get(&t, b"k").expect("get"), Some(b"1".to_vec()));
    // Every later commit is above the timestamp read at, even one whose
    // clock stepped back further than its interval is wide (2ε), so that
    // only the raised mark keeps it above.
    clock.set_offset(-5_000_000);
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"k", b"2").expect("put");
    let next = tx.commit().expect("commit");
    assert!(next.ts > future, "{} after a read at {future}", next.ts);
    assert_eq!(reader.get(&t, b"k").expect("get"), Some(b"1".to_vec()));
    assert_eq!(
        state_at(&db, &t, future).get(&b"k"[..]),
        Some(&b"1".to_vec())
    );
    // Further ahead than the lock timeout: refused at once.
    let far = clock
        .now()
        .expect("now")
        .latest
        .saturating_add(Duration::from_secs(5));
    assert!(matches!(
        db.begin_at(far),
        Err(Error::TimestampRefused { .. })
    ));
}

#[test]
fn a_timestamp_read_at_stays_below_commits_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let db = Db::open_with(dir.path(), sim_opts(&clock)).expect("open");
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"k", b"1").expect("put");
    tx.commit().expect("commit");
    clock.advance(Duration::from_millis(100));
    let read_at = clock
        .now()
        .expect("now")
        .latest
        .saturating_sub(Duration::from_millis(1));
    drop(db.begin_at(read_at).expect("begin_at"));
    assert!(db.stats().expect("stats").newest_ts >= read_at);
    db.close().expect("close");
    // The clock steps back past the read, within what a commit may wait.
    clock.set_offset(-50_000_000);
    let db = Db::open_with(dir.path(), sim_opts(&clock)).expect("reopen");
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"k", b"2").expect("put");
    let info = tx.commit().expect("commit");
    assert!(info.ts > read_at, "{} after a read at {read_at}", info.ts);
    assert_eq!(
        state_at(&db, &t, read_at).get(&b"k"[..]),
        Some(&b"1".to_vec())
    );
}

#[test]
fn an_unsynchronised_clock_serves_reads_at_timestamps_already_assigned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let db = Db::open_with(dir.path(), sim_opts(&clock)).expect("open");
    let t = db.table("t").expect("table");
    let h = history(&db, &t, &clock, 13, 5);
    clock.set_unsynchronized(true);
    assert_eq!(state_at(&db, &t, h[2].0), h[2].1);
    let after = h[4].0.saturating_add(Duration::from_millis(1));
    assert!(matches!(
        db.begin_at(after),
        Err(Error::ClockUncertain { .. })
    ));
}

#[test]
fn a_read_as_of_a_timestamp_is_read_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = common::open(dir.path());
    let t = common::create(&db, "t");
    let now = FixedEpsilon::system_now().expect("now");
    let mut tx = db.begin_at(now).expect("begin_at");
    assert!(matches!(
        tx.put(&t, b"k", b"v"),
        Err(Error::ReadOnlyTransaction)
    ));
    assert_eq!(db.begin().expect("begin").read_ts(), None);
}

/// A database with lock timeout `timeout` and a table `t` where a put of
/// `k` is prepared under `g1`; with the prepare timestamp.
fn with_prepared_put(dir: &std::path::Path, timeout: Duration) -> (Db, Table, Timestamp) {
    let db = Db::open_with(
        dir,
        Options::default()
            .cache_size(4 << 20)
            .lock_timeout(Some(timeout)),
    )
    .expect("open");
    let t = common::create(&db, "t");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"k", b"prepared").expect("put");
    let prepared = tx.prepare("g1").expect("prepare");
    (db, t, prepared)
}

#[test]
fn a_read_at_or_after_a_prepare_waits_for_the_decision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, t, prepared) = with_prepared_put(dir.path(), Duration::from_secs(10));
    let read_at = prepared.saturating_add(Duration::from_millis(1));
    let seen = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let tx = db.begin_at(read_at).expect("begin_at");
            tx.get(&t, b"k").expect("get")
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !reader.is_finished(),
            "the read did not wait for the prepared transaction"
        );
        // The coordinator commits at the prepare timestamp, below the read.
        db.commit_prepared_at("g1", prepared)
            .expect("commit_prepared_at");
        reader.join().expect("reader")
    });
    assert_eq!(
        seen,
        Some(b"prepared".to_vec()),
        "the commit at {prepared} is below {read_at}"
    );
    // A read before the prepare timestamp need not wait, and does not see it.
    let before = db
        .begin_at(Timestamp::from_nanos(prepared.as_nanos() - 1))
        .expect("begin_at");
    assert_eq!(before.get(&t, b"k").expect("get"), None);
}

#[test]
fn a_prepared_transaction_left_undecided_times_the_read_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, t, prepared) = with_prepared_put(dir.path(), Duration::from_millis(200));
    assert!(matches!(db.begin_at(prepared), Err(Error::LockTimeout)));
    db.rollback_prepared("g1").expect("rollback");
    assert_eq!(
        db.begin_at(prepared)
            .expect("begin_at")
            .get(&t, b"k")
            .expect("get"),
        None
    );
}

/// Writers commit increments beside readers at the clock's current time;
/// every read is checked against the commits, ordered by their
/// timestamps, at or before its timestamp — and again once the writers
/// are done. A read that began before a commit at or below its timestamp
/// finished would miss it the first time.
#[test]
fn reads_as_of_now_beside_writers_match_the_commits_by_timestamp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(FixedEpsilon(Duration::from_micros(200)));
    let db = Db::open_with(
        dir.path(),
        Options::default()
            .cache_size(4 << 20)
            .clock(clock.clone())
            .lock_timeout(Some(Duration::from_secs(10))),
    )
    .expect("open");
    let t = common::create(&db, "t");
    const WRITERS: u64 = 2;
    const COMMITS: u64 = 150;
    let (commits, reads) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (db, t) = (&db, &t);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..COMMITS {
                        let key = vec![b'k', (w * 3 + i % 3) as u8];
                        let mut tx = db.begin().expect("begin");
                        tx.put(t, &key, i.to_le_bytes()).expect("put");
                        mine.push((tx.commit().expect("commit").ts, key, i));
                    }
                    mine
                })
            })
            .collect();
        let mut reads = Vec::new();
        while reads.len() < 400 && !writers.iter().all(|w| w.is_finished()) {
            let at = clock.now().expect("now").earliest;
            let tx = db.begin_at(at).expect("begin_at");
            reads.push((at, common::rows(&tx, &t)));
        }
        let commits: Vec<_> = writers
            .into_iter()
            .flat_map(|w| w.join().expect("writer"))
            .collect();
        (commits, reads)
    });
    let mut ordered = commits;
    ordered.sort();
    assert!(reads.len() > 10, "only {} reads", reads.len());
    for (at, rows) in &reads {
        let mut want = State::new();
        for (ts, key, i) in ordered.iter().take_while(|(ts, _, _)| ts <= at) {
            let _ = ts;
            want.insert(key.clone(), i.to_le_bytes().to_vec());
        }
        let got: State = rows.iter().cloned().collect();
        assert_eq!(got, want, "read as of {at} beside writers");
        assert_eq!(state_at(&db, &t, *at), want, "read as of {at} again");
    }
}

/// The mark a read raised survives a crash right after the read: a
/// commit at a chosen timestamp at or below the read's, which the clock
/// would allow, is refused after the restart as before it, so the read's
/// answer stands.
#[test]
fn the_mark_a_read_raised_survives_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let opts = sim_opts(&clock).durability(Durability::Immediate);
    let db = Db::open_with(dir.path(), opts.clone()).expect("open");
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"k", b"1").expect("put");
    tx.commit().expect("commit");
    clock.advance(Duration::from_millis(100));
    let read_at = clock
        .now()
        .expect("now")
        .earliest
        .saturating_sub(Duration::from_millis(10));
    let first = db
        .begin_at(read_at)
        .expect("begin_at")
        .get(&t, b"k")
        .expect("get");
    assert_eq!(first, Some(b"1".to_vec()));
    let below = Timestamp::from_nanos(read_at.as_nanos() - 1);
    let refused = |db: &Db, what: &str| {
        let t = db.table("t").expect("table");
        let mut tx = db.begin().expect("begin");
        tx.put(&t, b"k", b"2").expect("put");
        match tx.commit_at(below) {
            Err(Error::TimestampRefused { .. }) => {}
            other => panic!("{what}: a commit at {below}, below a read at {read_at}: {other:?}"),
        }
    };
    refused(&db, "live");
    // kill -9: the files as they are.
    common::copy_dir(dir.path(), copy.path());
    std::mem::forget(db);
    let db = Db::open_with(copy.path(), opts).expect("reopen");
    refused(&db, "after a crash");
    let t = db.table("t").expect("table");
    assert_eq!(
        state_at(&db, &t, read_at).get(&b"k"[..]),
        Some(&b"1".to_vec())
    );
}

/// A read-only open cannot raise the mark: it serves reads at timestamps
/// the database assigned, and refuses later ones (a commit after it
/// closes could land below them).
#[test]
fn a_read_only_open_serves_only_timestamps_already_assigned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let h = {
        let db = Db::open_with(dir.path(), sim_opts(&clock)).expect("open");
        let t = db.table("t").expect("table");
        let h = history(&db, &t, &clock, 17, 5);
        db.close().expect("close");
        h
    };
    clock.advance(Duration::from_millis(100));
    let ro = Db::open_with(dir.path(), sim_opts(&clock).read_only(true)).expect("read-only");
    let t = ro.table("t").expect("table");
    for (ts, want) in &h {
        assert_eq!(&state_at(&ro, &t, *ts), want);
    }
    let later = h[4].0.saturating_add(Duration::from_millis(1));
    assert!(matches!(
        ro.begin_at(later),
        Err(Error::TimestampRefused { .. })
    ));
}

/// A read as of a timestamp sees the tables of that time, under the
/// names they had: one dropped since, one renamed since, not one created
/// since.
#[test]
fn a_read_as_of_a_timestamp_sees_the_tables_of_its_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let opts = sim_opts(&clock).history_retention(Duration::from_secs(60));
    let db = Db::open_with(dir.path(), opts).expect("open");
    let (gone, old) = (db.table("gone").expect("t"), db.table("old").expect("t"));
    let mut tx = db.begin().expect("begin");
    tx.put(&gone, b"a", b"1").expect("put");
    tx.put(&old, b"b", b"2").expect("put");
    let at = tx.commit().expect("commit").ts;
    clock.advance(Duration::from_millis(1));
    let mut tx = db.begin().expect("begin");
    tx.drop_table(&gone).expect("drop");
    tx.rename_table(&old, "new").expect("rename");
    tx.put(&db.table("later").expect("t"), b"c", b"3")
        .expect("put");
    tx.commit().expect("commit");
    db.vacuum().expect("vacuum");
    let then = db.begin_at(at).expect("begin_at");
    assert_eq!(then.table_names().expect("names"), ["gone", "old"]);
    assert_eq!(then.get(&gone, b"a").expect("get"), Some(b"1".to_vec()));
    assert_eq!(then.get(&old, b"b").expect("get"), Some(b"2".to_vec()));
    let now = db.begin().expect("begin");
    assert_eq!(now.table_names().expect("names"), ["later", "new"]);
}
