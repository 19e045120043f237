//! Commit timestamps and commit wait: external consistency across
//! databases whose clocks disagree within their ε, monotonic timestamps
//! when a clock steps back and across restarts, timestamps kept through
//! checkpoint and vacuum, and a clock that cannot vouch for itself
//! refusing commits while reads go on.
//!
//! Every clock here is a `SimClock`: time moves only when a test (or a
//! commit wait, which advances the simulated world) moves it, so each
//! seeded run repeats exactly and nothing sleeps.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{copy_dir, xorshift};
use strata::clock::{Clock, FixedEpsilon, SimClock, Timestamp};
use strata::{Db, Durability, Error, Options};

/// 2026-12-07, in nanoseconds since the epoch.
const START: u64 = 1_796_601_600_000_000_000;
const EPSILON: Duration = Duration::from_millis(5);
const EPS_NS: i64 = 5_000_000;

fn opts(clock: &SimClock) -> Options {
    Options::default()
        .cache_size(4 << 20)
        .durability(Durability::Eventual)
        .background(false)
        .clock(Arc::new(clock.clone()))
}

fn put(db: &Db, key: &[u8]) -> strata::CommitInfo {
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, key, b"v").expect("put");
    tx.commit().expect("commit")
}

/// Runs `runs` seeded rounds of "T1 commits on one database and returns,
/// then T2 begins and commits on the other", the two databases' clocks
/// set to random offsets within ε of the shared true time. Returns the
/// rounds in which ts(T2) ≤ ts(T1): external consistency broken.
fn violations(commit_wait: bool, runs: u64) -> Vec<String> {
    let a_dir = tempfile::tempdir().expect("tempdir");
    let b_dir = tempfile::tempdir().expect("tempdir");
    let a_clock = SimClock::new(Timestamp::from_nanos(START));
    a_clock.set_epsilon(EPSILON);
    let b_clock = a_clock.sibling();
    let a = Db::open_with(a_dir.path(), opts(&a_clock).commit_wait(commit_wait)).expect("open a");
    let b = Db::open_with(b_dir.path(), opts(&b_clock).commit_wait(commit_wait)).expect("open b");
    let mut found = Vec::new();
    for seed in 0..runs {
        let mut rng = xorshift(seed * 7919 + 1);
        // Offsets within ε either way: each clock's interval holds the
        // true time, as the contract demands.
        let within = |rng: &mut dyn FnMut(u64) -> u64| rng(2 * EPS_NS as u64 + 1) as i64 - EPS_NS;
        a_clock.set_offset(within(&mut rng));
        b_clock.set_offset(within(&mut rng));
        a_clock.advance(Duration::from_micros(rng(20_000)));
        let (first, second) = if rng(2) == 0 { (&a, &b) } else { (&b, &a) };
        let (first_clock, second_clock) = if std::ptr::eq(first, &a) {
            (&a_clock, &b_clock)
        } else {
            (&b_clock, &a_clock)
        };
        let t1 = put(first, format!("k{seed}").as_bytes());
        if commit_wait {
            let earliest = first_clock.now().expect("now").earliest;
            assert!(
                earliest > t1.ts,
                "seed {seed}: commit returned before its commit wait"
            );
        }
        // T2 begins after T1 returned (a little later, or at once).
        a_clock.advance(Duration::from_micros(rng(3) * rng(500)));
        let before = second_clock.now().expect("now").latest;
        let t2 = put(second, format!("k{seed}").as_bytes());
        assert!(t2.ts >= before, "seed {seed}: ts below the clock's latest");
        if t2.ts <= t1.ts {
            found.push(format!("seed {seed}: ts(T2) {} ≤ ts(T1) {}", t2.ts, t1.ts));
        }
    }
    found
}

#[test]
fn commits_in_real_time_order_get_increasing_timestamps_across_skewed_clocks() {
    let v = violations(true, 300);
    assert!(v.is_empty(), "external consistency broken: {v:?}");
}

#[test]
fn without_commit_wait_skewed_clocks_break_external_consistency() {
    // The check above is alive: the same runs without the wait find the
    // anomaly commit wait exists to prevent.
    let v = violations(false, 300);
    assert!(!v.is_empty(), "no violation found without commit wait");
}

#[test]
fn timestamps_stay_monotonic_when_the_clock_steps_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    clock.set_epsilon(Duration::from_millis(1));
    let db = Db::open_with(dir.path(), opts(&clock)).expect("open");
    let mut last = Timestamp::ZERO;
    let mut rng = xorshift(42);
    for i in 0..200u32 {
        // Steps of up to 400 ms either way, the clock's ε unchanged: a
        // reading behind the high-water mark must not lower a timestamp.
        clock.set_offset(rng(800_000_001) as i64 - 400_000_000);
        let latest = clock.now().expect("now").latest;
        let info = put(&db, &i.to_le_bytes());
        assert!(info.ts > last, "commit {i}: {} after {last}", info.ts);
        assert!(info.ts >= latest, "commit {i}: below the clock's latest");
        last = info.ts;
    }
    // Read-only commits take no timestamp.
    let tx = db.begin_read().expect("begin");
    assert_eq!(tx.commit().expect("commit").ts, Timestamp::ZERO);
    assert_eq!(
        strata::internals::commit_ts_high_water(&db).expect("mark"),
        last
    );
}

/// Opens a copy of `dir` (what `kill -9` leaves) with `clock`.
fn reopen_copy(dir: &Path, to: &Path, clock: &SimClock) -> Db {
    copy_dir(dir, to);
    Db::open_with(to, opts(clock)).expect("reopen")
}

#[test]
fn timestamps_stay_monotonic_across_restart_and_checkpoint() {
    let root = tempfile::tempdir().expect("tempdir");
    let live = root.path().join("live");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let db = Db::open_with(&live, opts(&clock).durability(Durability::Immediate)).expect("open");
    let mut last = Timestamp::ZERO;
    for i in 0..20u32 {
        last = put(&db, &i.to_le_bytes()).ts;
    }
    // A restart from the log alone (no checkpoint since the commits)
    // with a clock set 900 ms behind: the mark comes back from the log.
    let behind = SimClock::new(Timestamp::from_nanos(START - 900_000_000));
    let crashed = reopen_copy(&live, &root.path().join("crash"), &behind);
    let after = put(&crashed, b"after crash").ts;
    assert!(after > last, "after restart: {after} ≤ {last}");
    drop(crashed);
    // Again after a checkpoint, the log behind it recycled.
    db.checkpoint().expect("checkpoint");
    last = put(&db, b"after checkpoint").ts;
    db.checkpoint().expect("checkpoint");
    let behind = SimClock::new(Timestamp::from_nanos(START - 900_000_000));
    let reopened = reopen_copy(&live, &root.path().join("checkpointed"), &behind);
    let after = put(&reopened, b"after reopen").ts;
    assert!(
        after > last,
        "after checkpoint and restart: {after} ≤ {last}"
    );
}

#[test]
fn timestamps_survive_restart_checkpoint_and_vacuum() {
    let root = tempfile::tempdir().expect("tempdir");
    let live = root.path().join("live");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    clock.set_epsilon(Duration::from_micros(300));
    let db = Db::open_with(&live, opts(&clock).durability(Durability::Immediate)).expect("open");
    let t = db.table("t").expect("table");
    let mut stamped = Vec::new();
    for i in 0..30u32 {
        clock.advance(Duration::from_micros(137));
        let mut tx = db.begin().expect("begin");
        tx.put(&t, (i % 7).to_le_bytes(), i.to_le_bytes())
            .expect("put");
        if i % 5 == 0 {
            tx.delete(&t, ((i + 3) % 7).to_le_bytes()).expect("delete");
        }
        let info = tx.commit().expect("commit");
        stamped.push((info.xid, info.ts));
    }
    // A prepared transaction's commit is stamped too.
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"prepared", b"v").expect("put");
    let xid = tx.xid();
    tx.prepare("g1").expect("prepare");
    db.commit_prepared("g1").expect("commit prepared");
    let ts = strata::internals::commit_ts(&db, xid).expect("lookup");
    let ts = ts.expect("a prepared commit has a timestamp");
    assert!(ts > stamped.last().expect("stamped").1);
    stamped.push((xid, ts));
    // A rolled-back transaction has none.
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"gone", b"v").expect("put");
    let aborted = tx.xid();
    tx.rollback().expect("rollback");

    let check = |db: &Db, what: &str| {
        for &(xid, ts) in &stamped {
            let got = strata::internals::commit_ts(db, xid).expect("lookup");
            assert_eq!(got, Some(ts), "{what}: xid {xid:?}");
        }
        assert_eq!(
            strata::internals::commit_ts(db, aborted).expect("lookup"),
            None,
            "{what}: aborted"
        );
        let report = db.check_integrity().expect("integrity");
        assert_eq!(report.leaked_pages, 0, "{what}: {report:?}");
    };
    check(&db, "live");
    let crashed = reopen_copy(&live, &root.path().join("crash"), &clock.sibling());
    check(&crashed, "after restart");
    drop(crashed);
    db.vacuum().expect("vacuum");
    db.checkpoint().expect("checkpoint");
    check(&db, "after vacuum and checkpoint");
    drop(db);
    let db = Db::open_with(&live, opts(&clock)).expect("reopen");
    check(&db, "reopened");
}

#[test]
fn an_unsynchronised_clock_fails_commits_and_reads_still_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let db = Db::open_with(dir.path(), opts(&clock)).expect("open");
    put(&db, b"before");
    let t = db.table("t").expect("table");
    clock.set_unsynchronized(true);
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"during", b"v").expect("put");
    let err = tx
        .commit()
        .expect_err("an unsynchronised clock commits nothing");
    assert!(matches!(err, Error::ClockUncertain { .. }), "{err}");
    assert!(err.to_string().contains("unsynchronised"), "{err}");
    // Reads work, and see nothing of the failed commit.
    let tx = db.begin_read().expect("begin");
    assert!(tx.get(&t, b"before").expect("get").is_some());
    assert_eq!(tx.get(&t, b"during").expect("get"), None);
    tx.commit().expect("a read-only commit takes no timestamp");
    // The clock back, commits work again.
    clock.set_unsynchronized(false);
    put(&db, b"after");
}

#[test]
fn a_clock_too_uncertain_or_too_far_behind_fails_commits() {
    // ε of 1 s either way: a commit would wait 2 s, past COMMIT_WAIT_MAX.
    let dir = tempfile::tempdir().expect("tempdir");
    let wide = Options::default()
        .background(false)
        .clock(Arc::new(FixedEpsilon(Duration::from_secs(1))));
    let db = Db::open_with(dir.path(), wide).expect("open");
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"k", b"v").expect("put");
    let err = tx.commit().expect_err("too uncertain");
    assert!(matches!(err, Error::ClockUncertain { .. }), "{err}");
    drop(db);
    // A clock 5 s behind the timestamps already assigned.
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let db = Db::open_with(dir.path(), opts(&clock)).expect("open");
    let before = put(&db, b"k").ts;
    clock.set_offset(-5_000_000_000);
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"k", b"w").expect("put");
    let err = tx.commit().expect_err("too far behind");
    assert!(matches!(err, Error::ClockUncertain { .. }), "{err}");
    let tx = db.begin_read().expect("begin");
    assert_eq!(tx.get(&t, b"k").expect("get").as_deref(), Some(&b"v"[..]));
    drop(tx);
    clock.set_offset(0);
    assert!(put(&db, b"k").ts > before);
}

/// With the `truetime` feature: commits follow what the kernel says of
/// its clock. On a machine without a synchronised clock they fail with
/// the clear error; with one, they succeed.
#[cfg(feature = "truetime")]
#[test]
fn truetime_commits_only_while_the_kernel_vouches_for_its_clock() {
    use strata::clock::TrueTime;
    let tt = TrueTime::with_ceiling(Duration::from_millis(20));
    let k = TrueTime::kernel().expect("adjtimex");
    println!("the kernel's clock: {k:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_with(
        dir.path(),
        Options::default().background(false).clock(Arc::new(tt)),
    )
    .expect("open");
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"k", b"v").expect("put");
    let r = tx.commit();
    if k.unsynchronized || k.max_error > tt.ceiling {
        assert!(
            matches!(r, Err(Error::ClockUncertain { .. })),
            "{k:?}: {r:?}"
        );
    } else {
        assert!(r.is_ok(), "{k:?}: {r:?}");
    }
}

/// The background worker's timers read the database's clock: a
/// checkpoint interval of an hour passes when the simulated clock says
/// so, not in real time.
#[test]
fn the_checkpoint_interval_runs_on_the_database_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let o = opts(&clock)
        .background(true)
        .durability(Durability::Immediate)
        .checkpoint_interval(Duration::from_secs(3600));
    let db = Db::open_with(dir.path(), o).expect("open");
    put(&db, b"k");
    let redo = db.stats().expect("stats").checkpoint_redo;
    let mut moved = false;
    for _ in 0..400 {
        // Again each round: the worker may start its timer after the first.
        clock.advance(Duration::from_secs(7200));
        if db.stats().expect("stats").checkpoint_redo > redo {
            moved = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(moved, "no checkpoint after the simulated hour passed");
}

/// The two-phase-commit coordinator's resends and its wait for
/// acknowledgements run on its clock: a participant that fails to apply
/// the commit three times is sent it again every ten simulated minutes,
/// and the whole exchange takes no real time to speak of.
#[cfg(feature = "twopc")]
#[test]
fn the_coordinators_resends_run_on_its_clock() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use strata::twopc::{Coordinator, Outcome, Participant, Timing};
    use strata::Transaction;

    /// A shard whose first `fails` commit requests fail (unreachable).
    struct Flaky {
        db: Db,
        fails: AtomicU32,
        asked: AtomicU32,
    }
    impl Participant for Flaky {
        type Work = Transaction;
        fn prepare(&self, gid: &str, work: Transaction) -> strata::Result<Timestamp> {
            Participant::prepare(&self.db, gid, work)
        }
        fn commit_prepared(&self, gid: &str, ts: Timestamp) -> strata::Result<()> {
            self.asked.fetch_add(1, Ordering::Relaxed);
            if self.fails.load(Ordering::Relaxed) > 0 {
                self.fails.fetch_sub(1, Ordering::Relaxed);
                return Err(Error::Unsupported("unreachable"));
            }
            Participant::commit_prepared(&self.db, gid, ts)
        }
        fn rollback_prepared(&self, gid: &str) -> strata::Result<()> {
            self.db.rollback_prepared(gid)
        }
        fn in_doubt(&self) -> strata::Result<Vec<String>> {
            Participant::in_doubt(&self.db)
        }
    }

    const RESEND: Duration = Duration::from_secs(600);
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let path = dir.path().to_path_buf();
    let world = clock.clone();
    let run = std::thread::spawn(move || {
        let db = Db::open_with(path.join("shard"), opts(&world)).expect("open");
        let t = db.table("t").expect("table");
        let shard = Flaky {
            db: db.clone(),
            fails: AtomicU32::new(3),
            asked: AtomicU32::new(0),
        };
        let timing = Timing {
            vote_timeout: Duration::from_secs(3600),
            resend: RESEND,
            ack_wait: Duration::from_secs(10 * 3600),
        };
        let mut c = Coordinator::open_with_clock(
            Arc::new(strata::RealFs),
            &path.join("decisions"),
            "c",
            vec![shard],
            timing,
            Arc::new(world.clone()),
        )
        .expect("coordinator");
        let mut tx = db.begin().expect("begin");
        tx.put(&t, b"k", b"v").expect("put");
        let outcome = c.execute(vec![tx]).expect("execute");
        let tx = db.begin_read().expect("begin");
        let got = tx.get(&t, b"k").expect("get");
        (outcome, got)
    });
    // Bounded: on the real clock the resends would take half an hour.
    for _ in 0..2000 {
        if run.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(run.is_finished(), "the coordinator waited in real time");
    let (outcome, got) = run.join().expect("coordinator thread");
    assert_eq!(outcome, Outcome::Committed);
    assert_eq!(got.as_deref(), Some(&b"v"[..]), "the commit was applied");
    let passed = clock.true_now().as_nanos() - START;
    assert!(
        passed >= 3 * RESEND.as_nanos() as u64,
        "three resends take three resend intervals of simulated time, not {passed} ns"
    );
}

/// `Db::transaction` pauses between attempts on the database's clock: on a
/// simulated one the pauses pass in simulated time.
#[test]
fn retry_pauses_pass_on_the_database_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let db = Db::open_with(dir.path(), opts(&clock)).expect("open");
    let t = db.table("t").expect("table");
    let mut attempts = 0;
    let before = clock.true_now();
    db.transaction(|tx| {
        attempts += 1;
        if attempts < 4 {
            return Err(Error::Deadlock);
        }
        tx.put(&t, b"k", b"v")
    })
    .expect("the fourth attempt commits");
    assert_eq!(attempts, 4);
    // Three pauses of at least TRANSACTION_BACKOFF_MIN_MICROS each.
    let min = 3 * strata::limits::TRANSACTION_BACKOFF_MIN_MICROS * 1000;
    let passed = clock.true_now().as_nanos() - before.as_nanos();
    assert!(passed >= min, "{passed} ns of simulated time passed");
}

/// A clock whose next commit wait blocks until the test releases it,
/// so a test can look at the database while a commit waits.
struct Gate {
    inner: SimClock,
    /// (hold the next wait, a wait is held)
    state: std::sync::Mutex<(bool, bool)>,
    changed: std::sync::Condvar,
}

impl Clock for Gate {
    fn now(&self) -> strata::Result<strata::clock::Interval> {
        self.inner.now()
    }
    fn monotonic(&self) -> Duration {
        self.inner.monotonic()
    }
    fn wait_until(&self, ts: Timestamp, by: Duration) -> strata::Result<()> {
        let mut s = self.state.lock().expect("gate");
        if s.0 {
            *s = (false, true);
            self.changed.notify_all();
            while s.1 {
                s = self.changed.wait(s).expect("gate");
            }
        }
        drop(s);
        self.inner.wait_until(ts, by)
    }
}

impl Gate {
    /// Waits (bounded) until `f` holds of the state.
    fn until(&self, f: impl Fn(&(bool, bool)) -> bool) -> bool {
        let mut s = self.state.lock().expect("gate");
        for _ in 0..200 {
            if f(&s) {
                return true;
            }
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(50))
                .expect("gate")
                .0;
        }
        f(&s)
    }
}

/// Polls (bounded, 20 s) until `h` finishes.
fn finishes<T>(h: &std::thread::JoinHandle<T>) -> bool {
    for _ in 0..2000 {
        if h.is_finished() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A commit in its commit wait is durable but not yet visible, and it
/// holds up nobody: another commit (with its own fsync) goes through
/// while it waits.
#[test]
fn a_commit_is_invisible_during_its_wait_and_holds_up_no_other_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gate = Arc::new(Gate {
        inner: SimClock::new(Timestamp::from_nanos(START)),
        state: std::sync::Mutex::new((false, false)),
        changed: std::sync::Condvar::new(),
    });
    let o = Options::default()
        .cache_size(4 << 20)
        .background(false)
        .clock(gate.clone());
    let db = Db::open_with(dir.path(), o).expect("open");
    // The table exists before: both commits below write rows, not it.
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.create_table(&t).expect("create");
    tx.commit().expect("commit");
    gate.state.lock().expect("gate").0 = true;
    let first = {
        let (db, t) = (db.clone(), t.clone());
        std::thread::spawn(move || {
            let mut tx = db.begin().expect("begin");
            tx.put(&t, b"waiting", b"1").expect("put");
            tx.commit().expect("commit")
        })
    };
    assert!(
        gate.until(|s| s.1),
        "the first commit never reached its wait"
    );
    let syncs = db.wal_syncs();
    let tx = db.begin_read().expect("begin");
    assert_eq!(
        tx.get(&t, b"waiting").expect("get"),
        None,
        "visible before its commit wait ended"
    );
    drop(tx);
    let second = {
        let (db, t) = (db.clone(), t.clone());
        std::thread::spawn(move || {
            let mut tx = db.begin().expect("begin");
            tx.put(&t, b"other", b"2").expect("put");
            tx.commit().expect("commit")
        })
    };
    assert!(
        finishes(&second),
        "a commit waited for another's commit wait"
    );
    let second = second.join().expect("second");
    assert!(
        db.wal_syncs() > syncs,
        "the second commit had its own fsync"
    );
    assert!(
        !first.is_finished(),
        "the first commit returned during its wait"
    );
    {
        let mut s = gate.state.lock().expect("gate");
        s.1 = false;
        gate.changed.notify_all();
    }
    assert!(finishes(&first), "the first commit never returned");
    let first = first.join().expect("first");
    assert!(first.ts < second.ts, "stamped in commit order");
    let tx = db.begin_read().expect("begin");
    assert_eq!(
        tx.get(&t, b"waiting").expect("get").as_deref(),
        Some(&b"1"[..])
    );
}

/// A prepare timestamp is above every earlier commit and at least the
/// clock's `latest`; it raises the high-water mark, so every later commit
/// is above it — after a restart with the clock set back too, where it
/// comes back with the prepared transaction.
#[test]
fn the_prepare_timestamp_raises_the_mark_and_survives_restart() {
    let root = tempfile::tempdir().expect("tempdir");
    let live = root.path().join("live");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let db = Db::open_with(&live, opts(&clock)).expect("open");
    let t = db.table("t").expect("table");
    let last = put(&db, b"before").ts;
    let latest = clock.now().expect("now").latest;
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"prepared", b"v").expect("put");
    let pts = tx.prepare("g").expect("prepare");
    assert!(pts > last, "prepare ts {pts} ≤ earlier commit {last}");
    assert!(
        pts >= latest,
        "prepare ts {pts} below the clock's latest {latest}"
    );
    let listed = db.prepared_transactions().expect("list");
    assert_eq!(listed[0].prepare_ts, pts);
    let next = put(&db, b"after").ts;
    assert!(next > pts, "a commit after the prepare: {next} ≤ {pts}");
    // kill -9, then open with a clock 900 ms behind: only the recovered
    // mark keeps the next commit above the prepare timestamp.
    let behind = SimClock::new(Timestamp::from_nanos(START - 900_000_000));
    let copy = root.path().join("crash");
    copy_dir(&live, &copy);
    drop(db);
    let db = Db::open_with(&copy, opts(&behind)).expect("reopen");
    let listed = db.prepared_transactions().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].prepare_ts, pts, "the prepare timestamp came back");
    let after = put(&db, b"after restart").ts;
    assert!(after > pts, "after restart: {after} ≤ {pts}");
    db.commit_prepared("g").expect("commit prepared");
}

/// `commit_at` commits at the caller's timestamp only above every one the
/// database assigned (commits and prepares); refused, the transaction is
/// rolled back. `commit_prepared_at` takes any timestamp not below the
/// prepare timestamp, even below commits made after the prepare.
#[test]
fn chosen_timestamps_are_refused_at_or_below_what_was_assigned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(START));
    let db = Db::open_with(dir.path(), opts(&clock)).expect("open");
    let t = db.table("t").expect("table");
    let high = put(&db, b"a").ts;
    for ts in [high, Timestamp::from_nanos(high.as_nanos() - 1)] {
        let mut tx = db.begin().expect("begin");
        tx.put(&t, b"refused", b"v").expect("put");
        let r = tx.commit_at(ts);
        assert!(
            matches!(r, Err(Error::TimestampRefused { .. })),
            "commit_at({ts}) with {high} assigned: {r:?}"
        );
    }
    assert_eq!(
        db.begin().expect("begin").get(&t, b"refused").expect("get"),
        None
    );
    // Too far ahead of the clock for a commit wait: refused too.
    let far = clock
        .now()
        .expect("now")
        .latest
        .saturating_add(Duration::from_secs(3600));
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"refused", b"v").expect("put");
    assert!(matches!(
        tx.commit_at(far),
        Err(Error::TimestampRefused { .. })
    ));
    // Above the mark: committed at exactly that timestamp, which the next
    // commit then exceeds.
    let chosen = Timestamp::from_nanos(high.as_nanos() + 1_000);
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"chosen", b"v").expect("put");
    let info = tx.commit_at(chosen).expect("commit_at");
    assert_eq!(info.ts, chosen);
    let mark = strata::internals::commit_ts_high_water;
    assert_eq!(
        strata::internals::commit_ts(&db, info.xid).expect("ts"),
        Some(chosen)
    );
    assert_eq!(mark(&db).expect("mark"), chosen, "the mark rose to it");
    assert!(put(&db, b"b").ts > chosen);

    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"prepared", b"v").expect("put");
    let pts = tx.prepare("g").expect("prepare");
    // The prepare raised the mark: commit_at at the prepare timestamp is
    // refused.
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"at prepare ts", b"v").expect("put");
    assert!(matches!(
        tx.commit_at(pts),
        Err(Error::TimestampRefused { .. })
    ));
    let later = put(&db, b"c").ts;
    assert!(later > pts);
    let below = Timestamp::from_nanos(pts.as_nanos() - 1);
    let r = db.commit_prepared_at("g", below);
    assert!(matches!(r, Err(Error::TimestampRefused { .. })), "{r:?}");
    assert_eq!(
        db.prepared_transactions().expect("list").len(),
        1,
        "still prepared"
    );
    // At the prepare timestamp, below the later commit: applied.
    let xid = db.prepared_transactions().expect("list")[0].xid;
    db.commit_prepared_at("g", pts).expect("commit_prepared_at");
    assert_eq!(
        strata::internals::commit_ts(&db, xid).expect("ts"),
        Some(pts)
    );
    assert_eq!(mark(&db).expect("mark"), later, "the mark never falls");
    assert!(db.prepared_transactions().expect("list").is_empty());
    assert!(db
        .begin()
        .expect("begin")
        .get(&t, b"prepared")
        .expect("get")
        .is_some());
}

/// The coordinator picks the commit timestamp as Spanner's does: at least
/// every participant's prepare timestamp (a shard whose clock runs 300 ms
/// ahead) and its own clock's `latest` (a coordinator 600 ms ahead), the
/// same on both shards; `execute` reports the commit only once its own
/// clock's `earliest` has passed it (a coordinator 150 ms behind, whose
/// wait the shards' own commit waits do not cover).
#[cfg(feature = "twopc")]
#[test]
fn the_coordinator_commits_every_shard_at_one_timestamp_above_every_prepare() {
    use strata::twopc::{Coordinator, Outcome, Timing};
    const AHEAD: i64 = 300_000_000;
    for coordinator_ahead in [-AHEAD / 2, 0, 2 * AHEAD] {
        let dir = tempfile::tempdir().expect("tempdir");
        let world = SimClock::new(Timestamp::from_nanos(START));
        let clocks = [world.sibling(), world.sibling()];
        clocks[1].set_offset(AHEAD);
        let own = world.sibling();
        own.set_offset(coordinator_ahead);
        let shards: Vec<Db> = (0..2)
            .map(|i| {
                Db::open_with(dir.path().join(format!("s{i}")), opts(&clocks[i])).expect("open")
            })
            .collect();
        let mut c = Coordinator::open_with_clock(
            Arc::new(strata::RealFs),
            &dir.path().join("decisions"),
            "c",
            shards.clone(),
            Timing::default(),
            Arc::new(own.clone()),
        )
        .expect("coordinator");
        let floor = [clocks[1].now(), own.now()]
            .map(|n| n.expect("now").latest)
            .into_iter()
            .max()
            .expect("two");
        let work: Vec<strata::Transaction> = shards
            .iter()
            .map(|s| {
                let t = s.table("t").expect("table");
                let mut tx = s.begin().expect("begin");
                tx.put(&t, b"k", b"v").expect("put");
                tx
            })
            .collect();
        let xids: Vec<strata::Xid> = work.iter().map(|t| t.xid()).collect();
        assert_eq!(c.execute(work).expect("execute"), Outcome::Committed);
        let ts: Vec<Timestamp> = (0..2)
            .map(|i| {
                strata::internals::commit_ts(&shards[i], xids[i])
                    .expect("lookup")
                    .expect("committed with a timestamp")
            })
            .collect();
        let what = format!("coordinator {coordinator_ahead} ns ahead");
        assert_eq!(ts[0], ts[1], "{what}: one timestamp on both shards");
        assert!(ts[0] >= floor, "{what}: {} below {floor}", ts[0]);
        let earliest = own.now().expect("now").earliest;
        assert!(
            earliest > ts[0],
            "{what}: reported at {earliest}, before {}",
            ts[0]
        );
    }
}

/// A ClockBound segment (protocol version 2, native byte order) as the
/// daemon writes it.
#[cfg(feature = "truetime")]
fn clockbound_segment(
    path: &Path,
    generation: u16,
    (as_of_s, void_after_s): (i64, i64),
    bound_ns: i64,
    drift_ppb: u32,
    status: i32,
) {
    let mut b = vec![0u8; 80];
    b[0..4].copy_from_slice(&0x414D_5A4Eu32.to_ne_bytes());
    b[4..8].copy_from_slice(&0x4342_0200u32.to_ne_bytes());
    b[8..12].copy_from_slice(&80u32.to_ne_bytes());
    b[12..14].copy_from_slice(&2u16.to_ne_bytes());
    b[14..16].copy_from_slice(&generation.to_ne_bytes());
    b[16..24].copy_from_slice(&as_of_s.to_ne_bytes());
    b[32..40].copy_from_slice(&void_after_s.to_ne_bytes());
    b[48..56].copy_from_slice(&bound_ns.to_ne_bytes());
    b[64..68].copy_from_slice(&drift_ppb.to_ne_bytes());
    b[68..72].copy_from_slice(&status.to_ne_bytes());
    std::fs::write(path, b).expect("segment");
}

/// ClockBound's segment: a synchronised clock's interval is the real
/// time ± the published bound, grown by the drift since it was published;
/// an unknown or disrupted status, a void bound, a bound past the
/// ceiling, a segment the daemon is still writing, a wrong magic or
/// version are each `ClockUncertain` — and a database on such a clock
/// refuses commits.
#[cfg(feature = "truetime")]
#[test]
fn clockbound_segments_bound_the_clock_or_refuse() {
    use strata::clock::ClockBound;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shm0");
    let cb = ClockBound::at(&path);
    let forever = i64::MAX / 4;
    // As of monotonic time 0, no drift: the bound as published.
    clockbound_segment(&path, 2, (0, forever), 1_000_000, 0, 1);
    let before = FixedEpsilon::system_now().expect("now");
    let iv = cb.now().expect("synchronised");
    let after = FixedEpsilon::system_now().expect("now");
    assert_eq!(iv.width(), Duration::from_millis(2), "{iv:?}");
    let mid = Timestamp::from_nanos(iv.earliest.as_nanos() + 1_000_000);
    assert!(
        before <= mid && mid <= after,
        "{iv:?} is not around the real time"
    );
    // Free running: still bounded, the bound grown by 1 µs a second of
    // monotonic time since 0 (the machine has been up for some seconds,
    // perhaps days: under a ceiling of an hour, whatever its uptime).
    clockbound_segment(&path, 4, (0, forever), 1_000_000, 1_000, 2);
    let loose = ClockBound {
        ceiling: Duration::from_secs(3600),
        ..cb.clone()
    };
    let grown = loose.now().expect("free running").width();
    assert!(grown > Duration::from_millis(2), "no drift: {grown:?}");
    let refused = |what: &str| match cb.now() {
        Err(Error::ClockUncertain { reason }) => println!("{what}: {reason}"),
        other => panic!("{what}: {other:?}"),
    };
    clockbound_segment(&path, 6, (0, forever), 1_000_000, 0, 0);
    refused("status unknown");
    clockbound_segment(&path, 6, (0, forever), 1_000_000, 0, 3);
    refused("status disrupted");
    clockbound_segment(&path, 6, (0, 0), 1_000_000, 0, 1);
    refused("void after monotonic 0");
    clockbound_segment(&path, 6, (0, forever), 50_000_000, 0, 1);
    refused("50 ms, past the 10 ms ceiling");
    clockbound_segment(&path, 6, (0, forever), 1_000_000, 1_000_000_000, 2);
    refused("drifting a second a second");
    clockbound_segment(&path, 7, (0, forever), 1_000_000, 0, 1);
    refused("generation odd: the daemon is writing");
    std::fs::write(&path, [0u8; 80]).expect("zeros");
    refused("no magic");
    std::fs::remove_file(&path).expect("rm");
    refused("no segment");
    // A database on the clock refuses commits while it cannot bound it.
    clockbound_segment(&path, 8, (0, forever), 1_000_000, 0, 0);
    let db_dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_with(
        db_dir.path(),
        Options::default()
            .background(false)
            .clock(Arc::new(cb.clone())),
    )
    .expect("open");
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"k", b"v").expect("put");
    assert!(matches!(tx.commit(), Err(Error::ClockUncertain { .. })));
    clockbound_segment(&path, 10, (0, forever), 1_000_000, 0, 1);
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"k", b"v").expect("put");
    tx.commit()
        .expect("commit once the daemon vouches for the clock");
}
