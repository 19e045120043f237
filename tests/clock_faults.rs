//! Commit timestamps under adversarial timing: a commit held between its
//! clock reading and the store latch, a crash in the middle of a commit
//! wait, a clock at the end of time, and the tree of timestamps through
//! compaction.

mod common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::copy_dir;
use strata::clock::{Clock, Interval, SimClock, Timestamp};
use strata::{Db, Durability, Options};

/// 2026-12-07, in nanoseconds since the epoch.
const START: u64 = 1_796_601_600_000_000_000;

/// A pause point: armed, the next thread to pass it stops there until
/// released (bounded: 20 s).
#[derive(Default)]
struct Gate {
    /// (armed, a thread is held)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl Gate {
    fn arm(&self) {
        self.state.lock().expect("gate").0 = true;
    }

    fn pass(&self) {
        let mut s = self.state.lock().expect("gate");
        if !s.0 {
            return;
        }
        *s = (false, true);
        self.changed.notify_all();
        for _ in 0..200 {
            if !s.1 {
                return;
            }
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(100))
                .expect("gate")
                .0;
        }
    }

    /// Waits (bounded) until a thread is held; whether one is.
    fn held(&self) -> bool {
        let mut s = self.state.lock().expect("gate");
        for _ in 0..200 {
            if s.1 {
                return true;
            }
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(100))
                .expect("gate")
                .0;
        }
        false
    }

    fn release(&self) {
        self.state.lock().expect("gate").1 = false;
        self.changed.notify_all();
    }
}

/// A `SimClock` with two pause points: after a reading is taken (before
/// `now` returns it) and at the start of a commit wait.
struct Gated {
    sim: SimClock,
    after_now: Gate,
    in_wait: Gate,
}

impl Clock for Gated {
    fn now(&self) -> strata::Result<Interval> {
        let r = self.sim.now();
        self.after_now.pass();
        r
    }
    fn monotonic(&self) -> Duration {
        self.sim.monotonic()
    }
    fn sleep(&self, d: Duration) {
        self.sim.sleep(d)
    }
    fn wait_until(&self, ts: Timestamp, by: Duration) -> strata::Result<()> {
        self.in_wait.pass();
        self.sim.wait_until(ts, by)
    }
}

fn gated(sim: &SimClock) -> Arc<Gated> {
    Arc::new(Gated {
        sim: sim.clone(),
        after_now: Gate::default(),
        in_wait: Gate::default(),
    })
}

fn opts(clock: Arc<dyn Clock>) -> Options {
    Options::default()
        .cache_size(4 << 20)
        .background(false)
        .clock(clock)
}

fn put(db: &Db, key: &[u8]) -> strata::Result<strata::CommitInfo> {
    let t = db.table("t")?;
    let mut tx = db.begin()?;
    tx.put(&t, key, b"v")?;
    tx.commit()
}

/// A commit whose thread is held up between reading the clock and taking
/// the store latch — preempted, or queued behind a long latch hold —
/// while another commit stamps a fresher reading, must still commit: the
/// clock is sound, only its own reading went stale.
#[test]
fn a_commit_delayed_after_its_clock_reading_is_not_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = SimClock::new(Timestamp::from_nanos(START));
    let clock = gated(&sim);
    let db = Db::open_with(dir.path(), opts(clock.clone())).expect("open");
    put(&db, b"setup").expect("setup");
    let slow = std::thread::scope(|s| {
        let slow = s.spawn(|| {
            let t = db.table("t").expect("table");
            let mut tx = db.begin().expect("begin");
            tx.put(&t, b"slow", b"1").expect("put");
            clock.after_now.arm();
            tx.commit()
        });
        assert!(clock.after_now.held(), "the commit never read the clock");
        // 1.5 s of true time pass while it is held; another commit goes by.
        sim.advance(Duration::from_millis(1500));
        let fast = put(&db, b"fast").expect("fast commit");
        clock.after_now.release();
        let slow = slow.join().expect("join");
        (slow, fast)
    });
    let (slow, fast) = slow;
    match slow {
        Ok(info) => assert!(info.ts > fast.ts, "{} ≤ {}", info.ts, fast.ts),
        Err(e) => panic!("a commit on a sound clock was refused: {e}"),
    }
}

/// A commit record that reached the disk before a crash in the middle of
/// its commit wait: recovery makes it visible at once, before the clock's
/// `earliest` has passed its timestamp. Another database whose clock is
/// behind by up to ε could then stamp a commit that follows it in real
/// time (a client read it here, then wrote there) with a lower timestamp.
#[test]
fn a_commit_recovered_from_the_log_is_not_visible_before_its_timestamp_passes() {
    let root = tempfile::tempdir().expect("tempdir");
    let live = root.path().join("live");
    let sim = SimClock::new(Timestamp::from_nanos(START));
    sim.set_epsilon(Duration::from_millis(5));
    let clock = gated(&sim);
    let db =
        Db::open_with(&live, opts(clock.clone()).durability(Durability::Immediate)).expect("open");
    put(&db, b"setup").expect("setup");
    std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            clock.in_wait.arm();
            put(&db, b"in its wait")
        });
        assert!(clock.in_wait.held(), "the commit never reached its wait");
        // The process dies here: what is on disk is the fsynced log.
        let crashed = root.path().join("crashed");
        copy_dir(&live, &crashed);
        let reopened = Db::open_with(&crashed, opts(Arc::new(sim.clone()))).expect("reopen");
        let ts = strata::internals::commit_ts_high_water(&reopened).expect("mark");
        let t = reopened.table("t").expect("table");
        let tx = reopened.begin_read().expect("begin");
        let seen = tx.get(&t, b"in its wait").expect("get").is_some();
        let earliest = sim.now().expect("now").earliest;
        drop(tx);
        drop(reopened);
        clock.in_wait.release();
        waiting.join().expect("join").expect("commit");
        assert!(seen, "a durable commit was lost");
        assert!(
            earliest > ts,
            "visible after recovery while the clock reads earliest {earliest} ≤ its timestamp {ts}"
        );
    });
}

/// A clock at the end of representable time: commits must fail with an
/// error, never panic (the high-water mark cannot be exceeded).
#[test]
fn commits_at_the_end_of_time_fail_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = SimClock::new(Timestamp::MAX);
    let db = Db::open_with(dir.path(), opts(Arc::new(sim.clone()))).expect("open");
    let mut outcomes = Vec::new();
    for i in 0..3u8 {
        let db = db.clone();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            put(&db, &[i]).map(|c| c.ts)
        }));
        match r {
            Ok(r) => outcomes.push(format!("{r:?}")),
            Err(_) => panic!("commit {i} panicked; earlier: {outcomes:?}"),
        }
    }
}

/// Every acknowledged commit's (xid, timestamp) and the high-water mark
/// survive power loss: a tree of several levels built under a tiny cache
/// (its pages evicted and written back), checkpoints between, the clock
/// stepped back between rounds so the mark, not the clock, sets the
/// timestamps.
#[test]
fn commit_timestamps_survive_power_loss_under_cache_pressure() {
    use strata::fault::FaultFs;
    let dir = std::path::Path::new("/db");
    let fs = FaultFs::new();
    let sim = SimClock::new(Timestamp::from_nanos(START));
    sim.set_epsilon(Duration::from_micros(10));
    let o = || {
        Options::default()
            .background(false)
            .cache_size(0)
            .wal_segment_size(1 << 20)
            .clock(Arc::new(sim.clone()))
    };
    let db = Db::open_vfs(Arc::new(fs.clone()), dir, o()).expect("open");
    let t = db.table("t").expect("table");
    let mut acked = Vec::new();
    for round in 0..4u32 {
        for i in 0..400u32 {
            let mut tx = db.begin().expect("begin");
            tx.put(&t, (round * 1000 + i).to_be_bytes(), [7u8; 300])
                .expect("put");
            let c = tx.commit().expect("commit");
            acked.push((c.xid, c.ts));
        }
        if round % 2 == 0 {
            db.checkpoint().expect("checkpoint");
        }
        sim.set_offset(-(200_000_000 * (round as i64 + 1)));
    }
    let high = acked.iter().map(|a| a.1).max().expect("commits");
    let check = |img: FaultFs, what: &str| {
        let db = Db::open_vfs(Arc::new(img), dir, o()).unwrap_or_else(|e| panic!("{what}: {e}"));
        for &(xid, ts) in &acked {
            let got = strata::internals::commit_ts(&db, xid).expect("lookup");
            assert_eq!(got, Some(ts), "{what}: xid {xid:?}");
        }
        let mark = strata::internals::commit_ts_high_water(&db).expect("mark");
        assert!(mark >= high, "{what}: mark {mark} below {high}");
        let next = put(&db, b"next").expect("commit after recovery");
        assert!(next.ts > high, "{what}: {} ≤ {high}", next.ts);
        let r = db.check_integrity().expect("integrity");
        assert_eq!(r.leaked_pages, 0, "{what}: {r:?}");
    };
    check(fs.synced_image(), "synced");
    for seed in 0..3 {
        check(fs.power_loss_image(seed), &format!("power loss {seed}"));
    }
}

/// Compaction moves the nodes of the tree of commit timestamps (built
/// interleaved with a table's pages) down the file and cuts the end: every
/// timestamp is still found, live and after reopening, and nothing leaks.
#[test]
fn compaction_keeps_every_commit_timestamp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = SimClock::new(Timestamp::from_nanos(START));
    let o = || opts(Arc::new(sim.clone())).durability(Durability::Eventual);
    let db = Db::open_with(dir.path(), o()).expect("open");
    let t = db.table("t").expect("table");
    let mut acked = Vec::new();
    for i in 0..2500u32 {
        let mut tx = db.begin().expect("begin");
        tx.put(&t, i.to_be_bytes(), [1u8; 600]).expect("put");
        let c = tx.commit().expect("commit");
        acked.push((c.xid, c.ts));
    }
    let mut tx = db.begin().expect("begin");
    for i in 0..2500u32 {
        if i % 50 != 0 {
            tx.delete(&t, i.to_be_bytes()).expect("delete");
        }
    }
    tx.commit().expect("commit");
    let mut moved = 0;
    let mut cut = 0;
    for _ in 0..4 {
        let s = db.vacuum().expect("vacuum");
        moved += s.nodes_moved;
        cut += s.pages_cut;
    }
    assert!(
        moved > 0 && cut > 0,
        "nothing compacted: moved {moved}, cut {cut}"
    );
    let check = |db: &Db, what: &str| {
        for &(xid, ts) in &acked {
            let got = strata::internals::commit_ts(db, xid).expect("lookup");
            assert_eq!(got, Some(ts), "{what}: xid {xid:?}");
        }
        let r = db.check_integrity().expect("integrity");
        assert_eq!(r.leaked_pages, 0, "{what}: {r:?}");
    };
    check(&db, "live");
    db.close().expect("close");
    let db = Db::open_with(dir.path(), o()).expect("reopen");
    check(&db, "reopened");
}

/// The system clock read through a fixed ε of zero, stepped back an hour
/// from its second reading on (an operator or NTP stepping the clock in
/// the middle of a commit). The trait's own `wait_until` serves the wait.
struct SteppedBack {
    readings: std::sync::atomic::AtomicU64,
}

impl Clock for SteppedBack {
    fn now(&self) -> strata::Result<Interval> {
        use std::sync::atomic::Ordering;
        let n = self.readings.fetch_add(1, Ordering::SeqCst);
        let t = strata::clock::FixedEpsilon::system_now()?;
        let t = if n == 0 {
            t
        } else {
            t.saturating_sub(Duration::from_secs(3600))
        };
        Ok(Interval {
            earliest: t,
            latest: t,
        })
    }
}

/// A clock stepped back while a commit waits: the commit's reading proved
/// that true time passes its timestamp within nanoseconds of monotonic
/// time (`clock::commit_wait` relies on that very bound when the clock
/// fails), yet the wait sleeps for the whole step — an hour, the commit
/// durable but invisible and its row locks held.
#[test]
fn a_clock_stepped_back_during_a_commit_wait_does_not_stall_the_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(SteppedBack {
        readings: Default::default(),
    });
    let db = Db::open_with(dir.path(), opts(clock)).expect("open");
    let h = {
        let db = db.clone();
        std::thread::spawn(move || put(&db, b"k"))
    };
    // Bounded poll, 20 s: a commit wait of ε = 0 takes nanoseconds.
    for _ in 0..2000 {
        if h.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        h.is_finished(),
        "the commit is still in its wait 20 s after the clock stepped back"
    );
    h.join().expect("join").expect("commit");
}

/// Commits and prepared commits from several threads while the clock
/// steps back and forth: no two share a timestamp, the mark is the highest.
#[test]
fn concurrent_commits_and_prepared_commits_take_distinct_timestamps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = SimClock::new(Timestamp::from_nanos(START));
    sim.set_epsilon(Duration::from_micros(50));
    let db = Db::open_with(dir.path(), opts(Arc::new(sim.clone()))).expect("open");
    let t = db.table("t").expect("table");
    put(&db, b"setup").expect("setup");
    let mut all = std::thread::scope(|s| {
        let stepper = s.spawn(|| {
            let mut rng = common::xorshift(9);
            for _ in 0..300 {
                sim.set_offset(rng(600_000_001) as i64 - 300_000_000);
                std::thread::yield_now();
            }
        });
        let workers: Vec<_> = (0..3u32)
            .map(|w| {
                let (db, t) = (&db, &t);
                s.spawn(move || {
                    let mut out = Vec::new();
                    for i in 0..60u32 {
                        let mut tx = db.begin().expect("begin");
                        tx.put(t, (w * 1000 + i).to_be_bytes(), b"v").expect("put");
                        let xid = tx.xid();
                        if i % 3 == 0 {
                            let gid = format!("g{w}-{i}");
                            tx.prepare(&gid).expect("prepare");
                            db.commit_prepared(&gid).expect("commit prepared");
                        } else {
                            tx.commit().expect("commit");
                        }
                        out.push(xid);
                    }
                    out
                })
            })
            .collect();
        stepper.join().expect("stepper");
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect::<Vec<_>>()
    });
    // Xids are handed out at first write, not at commit: compare by ts only.
    let mut ts: Vec<_> = all
        .drain(..)
        .map(|x| {
            strata::internals::commit_ts(&db, x)
                .expect("lookup")
                .expect("stamped")
        })
        .collect();
    let n = ts.len();
    ts.sort();
    ts.dedup();
    assert_eq!(ts.len(), n, "two commits share a timestamp");
    let mark = strata::internals::commit_ts_high_water(&db).expect("mark");
    assert_eq!(Some(&mark), ts.last());
}

/// A clock slow to answer (200 ms between the call and its sample, as a
/// remote time service or a descheduled thread makes it), ε = 50 ms, that
/// fails every reading after the first: the commit wait falls back on the
/// monotonic bound from the first reading. True time here is the system
/// clock, which the intervals contain.
struct SlowThenUnsynchronised {
    readings: std::sync::atomic::AtomicU64,
}

const SLOW_EPSILON: Duration = Duration::from_millis(50);

impl Clock for SlowThenUnsynchronised {
    fn now(&self) -> strata::Result<Interval> {
        use std::sync::atomic::Ordering;
        if self.readings.fetch_add(1, Ordering::SeqCst) > 0 {
            return Err(strata::Error::ClockUncertain {
                reason: "lost synchronisation".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
        let t = strata::clock::FixedEpsilon::system_now()?;
        Ok(Interval::around(t, SLOW_EPSILON))
    }
}

/// The fallback of the commit wait counts monotonic time from an instant
/// taken before `now()` was called, not after its answer: it credits the
/// reading with time that passed before the clock sampled, and lets the
/// commit return while true time is still below its timestamp.
#[test]
fn the_commit_wait_fallback_does_not_return_before_true_time_passes_the_timestamp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(SlowThenUnsynchronised {
        readings: Default::default(),
    });
    let db = Db::open_with(dir.path(), opts(clock)).expect("open");
    let info = put(&db, b"k").expect("commit");
    let true_now = strata::clock::FixedEpsilon::system_now().expect("system clock");
    assert!(
        true_now > info.ts,
        "commit returned at true time {true_now}, not past its timestamp {}",
        info.ts
    );
}
