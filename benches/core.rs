//! Core figures of the engine, measured on this machine (peers come in the
//! benchmark crate of a later issue). Each figure is the median of several
//! runs. Run: `cargo bench --bench core` (set `STRATA_BENCH_DIR` to measure
//! on another file system; the default is the system temp directory).
//! `STRATA_BENCH_ONLY_TIME=1` runs only the commit-wait figures and those
//! of reads as of a timestamp; `STRATA_BENCH_ONLY_AS_OF=1` only the latter;
//! `STRATA_BENCH_ONLY_SNAPSHOT=1` only snapshot export and import.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata::{Db, Durability, Options, Table};

const RUNS: usize = 5;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("STRATA_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).expect("bench dir"),
        None => tempfile::tempdir().expect("tmp"),
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    xs[xs.len() / 2]
}

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

/// The file system's fastest durable write: a 4 KiB block of a file
/// already zero-filled (no new length to journal) overwritten and
/// fdatasync'ed, 2 000 times; writes per second.
fn fsync_per_sec(dir: &Path) -> f64 {
    use std::os::unix::fs::FileExt;
    const N: usize = 2000;
    let f = std::fs::File::create(dir.join("fsync-probe")).expect("probe");
    f.write_all_at(&vec![0u8; N * 4096], 0).expect("zero-fill");
    f.sync_all().expect("fsync");
    let start = Instant::now();
    for i in 0..N {
        f.write_all_at(&[7u8; 4096], (i * 4096) as u64)
            .expect("write");
        f.sync_data().expect("sync");
    }
    N as f64 / start.elapsed().as_secs_f64()
}

/// Puts `value` under `key(i)` for every `i` of `keys` (`Some`), or deletes
/// those keys (`None`), in one committed transaction.
fn write_all(db: &Db, t: &Table, keys: impl Iterator<Item = u64>, value: Option<&[u8]>) {
    let mut tx = db.begin().expect("begin");
    for i in keys {
        match value {
            Some(v) => tx.put(t, key(i), v).map(drop).expect("put"),
            None => tx.delete(t, key(i)).map(drop).expect("delete"),
        }
    }
    tx.commit().expect("commit");
}

fn put_get_rates() -> (f64, f64) {
    let tmp = bench_dir();
    let db = Db::open(tmp.path()).expect("open");
    let t = db.table("t").expect("t");
    let n = 200_000u64;
    let start = Instant::now();
    for chunk in 0..n / 10_000 {
        write_all(
            &db,
            &t,
            chunk * 10_000..(chunk + 1) * 10_000,
            Some(&[1u8; 100]),
        );
    }
    let puts = n as f64 / start.elapsed().as_secs_f64();
    let tx = db.begin().expect("begin");
    let start = Instant::now();
    for i in 0..n {
        let j = (i * 7919) % n;
        assert!(tx.get(&t, key(j)).expect("get").is_some());
    }
    let gets = n as f64 / start.elapsed().as_secs_f64();
    (puts, gets)
}

/// Median of `n` timings of `f`, in microseconds.
fn median_us(n: u64, f: &mut dyn FnMut(u64)) -> f64 {
    median(
        (0..n)
            .map(|i| {
                let t = Instant::now();
                f(i);
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect(),
    )
}

/// Median latency in microseconds of a one-row durable transaction, three
/// ways: a plain commit; prepare + commit_prepared on the same database;
/// the coordinator across two databases (log fsync + two prepares + two
/// commits).
fn twopc_latency() -> (f64, f64, f64) {
    let tmp = bench_dir();
    let opts = || Options::default().durability(Durability::Immediate);
    let a = Db::open_with(tmp.path().join("a"), opts()).expect("open");
    let b = Db::open_with(tmp.path().join("b"), opts()).expect("open");
    let ta = a.table("t").expect("t");
    let plain = median_us(200, &mut |i| {
        let mut tx = a.begin().expect("begin");
        tx.put(&ta, key(i), [1u8; 100]).expect("put");
        tx.commit().expect("commit");
    });
    let prepared = median_us(200, &mut |i| {
        let mut tx = a.begin().expect("begin");
        tx.put(&ta, key(i), [2u8; 100]).expect("put");
        let gid = format!("bench-{i}");
        tx.prepare(&gid).expect("prepare");
        a.commit_prepared(&gid).expect("commit prepared");
    });
    (plain, prepared, coordinated_latency(tmp.path(), &a, &b))
}

#[cfg(feature = "twopc")]
fn coordinated_latency(dir: &Path, a: &Db, b: &Db) -> f64 {
    let (ta, tb) = (a.table("t").expect("t"), b.table("t").expect("t"));
    let mut c = strata::twopc::Coordinator::open(
        std::sync::Arc::new(strata::RealFs),
        &dir.join("coordinator.log"),
        "bench",
        vec![a.clone(), b.clone()],
        strata::twopc::Timing::default(),
    )
    .expect("coordinator");
    median_us(200, &mut |i| {
        let mut x = a.begin().expect("begin");
        x.put(&ta, key(i), [3u8; 100]).expect("put");
        let mut y = b.begin().expect("begin");
        y.put(&tb, key(i), [3u8; 100]).expect("put");
        let o = c.execute(vec![x, y]).expect("execute");
        assert_eq!(o, strata::twopc::Outcome::Committed);
    })
}

#[cfg(not(feature = "twopc"))]
fn coordinated_latency(_: &Path, _: &Db, _: &Db) -> f64 {
    f64::NAN
}

/// Durable commits per second and commits per log fsync.
fn durable_commits_per_sec(threads: u64) -> (f64, f64) {
    let tmp = bench_dir();
    let db = Db::open_with(
        tmp.path(),
        Options::default().durability(Durability::Immediate),
    )
    .expect("open");
    let t = db.table("t").expect("t");
    let per_thread = 4000 / threads.max(1) + 200;
    let start = Instant::now();
    std::thread::scope(|s| {
        for th in 0..threads {
            let (db, t) = (db.clone(), t.clone());
            s.spawn(move || {
                for i in 0..per_thread {
                    let mut tx = db.begin().expect("begin");
                    tx.put(&t, key(th * 1_000_000 + i), [2u8; 100])
                        .expect("put");
                    tx.commit().expect("commit");
                }
            });
        }
    });
    let commits = (threads * per_thread) as f64;
    (
        commits / start.elapsed().as_secs_f64(),
        commits / db.wal_syncs().max(1) as f64,
    )
}

/// Child mode: write WAL without checkpoints until killed.
fn wal_child(dir: &Path) {
    let opts = Options::default()
        .checkpoint_interval(Duration::from_secs(3600))
        .checkpoint_wal_bytes(u64::MAX)
        .durability(Durability::Eventual);
    let db = Db::open_with(dir, opts).expect("open");
    let t = db.table("t").expect("t");
    for i in 0u64.. {
        let mut tx = db.begin().expect("begin");
        for j in 0..1000 {
            tx.put(&t, key(i * 1000 + j), [3u8; 200]).expect("put");
        }
        tx.commit().expect("commit");
        let wal: u64 = std::fs::read_dir(dir.join("wal"))
            .expect("wal")
            .map(|e| e.expect("e").metadata().expect("m").len())
            .sum();
        println!("wal {wal}");
    }
}

/// Open time after kill -9 with about `mib` MiB of log to replay.
fn open_after_kill(mib: u64) -> (f64, f64) {
    let tmp = bench_dir();
    let exe = std::env::current_exe().expect("exe");
    let mut child = Command::new(exe)
        .env("STRATA_BENCH_WAL_CHILD", tmp.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::BufRead;
        let out = child.stdout.take().expect("stdout");
        for line in std::io::BufReader::new(out).lines() {
            let line = line.expect("line");
            let bytes: u64 = line.trim_start_matches("wal ").parse().expect("n");
            if bytes >= mib << 20 {
                break;
            }
        }
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
    let wal: u64 = std::fs::read_dir(tmp.path().join("wal"))
        .expect("wal")
        .map(|e| e.expect("e").metadata().expect("m").len())
        .sum();
    let start = Instant::now();
    let db = Db::open(tmp.path()).expect("open after kill");
    let secs = start.elapsed().as_secs_f64();
    drop(db);
    (secs, wal as f64 / secs / (1 << 20) as f64)
}

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).expect("dir") {
        let e = e.expect("e");
        let m = e.metadata().expect("m");
        n += if m.is_dir() {
            dir_size(&e.path())
        } else {
            m.len()
        };
    }
    n
}

/// Directory size over live logical bytes after updates, deletes and vacuum.
fn space_amplification() -> f64 {
    let tmp = bench_dir();
    let db = Db::open(tmp.path()).expect("open");
    let t = db.table("t").expect("t");
    let n = 100_000u64;
    for round in 0..3u8 {
        for chunk in 0..n / 10_000 {
            write_all(
                &db,
                &t,
                chunk * 10_000..(chunk + 1) * 10_000,
                Some(&[round; 150]),
            );
        }
        db.vacuum().expect("vacuum");
    }
    write_all(&db, &t, (0..n).step_by(2), None);
    db.vacuum().expect("vacuum");
    db.checkpoint().expect("checkpoint");
    let live = (n / 2) * (16 + 150);
    dir_size(tmp.path()) as f64 / live as f64
}

/// Milliseconds to delete 100 000 of 200 000 rows in one transaction,
/// with `db.vacuum()` at work on another thread removing 100 000 rows
/// deleted before (`beside_vacuum`), or with nothing else running: what a
/// vacuum pass costs the writers it runs beside.
fn deletes_ms(beside_vacuum: bool) -> f64 {
    let tmp = bench_dir();
    let db = Db::open_with(tmp.path(), Options::default().vacuum_threshold(0)).expect("open");
    let t = db.table("t").expect("t");
    let n = 200_000u64;
    write_all(&db, &t, 0..n, Some(&[7u8; 150]));
    write_all(&db, &t, (0..n).step_by(2), None);
    std::thread::scope(|s| {
        if beside_vacuum {
            let db = db.clone();
            s.spawn(move || db.vacuum().expect("vacuum"));
        }
        let start = Instant::now();
        write_all(&db, &t, (1..n).step_by(2), None);
        start.elapsed().as_secs_f64() * 1e3
    })
}

/// The same read-write mix (4 threads; each transaction reads 4 random
/// keys of 10 000 and updates 1) at `level`: committed transactions per
/// second and the share that failed with a retryable error. Eventual
/// durability, so the isolation machinery rather than fsync is measured.
fn mixed(level: strata::Isolation, durability: Durability, per_thread: u64) -> (f64, f64) {
    let tmp = bench_dir();
    // No background vacuum: its passes land at random moments and would
    // dominate the difference being measured.
    let opts = Options::default()
        .durability(durability)
        .vacuum_threshold(0);
    let db = Db::open_with(tmp.path(), opts).expect("open");
    let t = db.table("t").expect("t");
    let keys = 10_000u64;
    write_all(&db, &t, 0..keys, Some(&[0u8; 100]));
    let start = Instant::now();
    let failed: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u64)
            .map(|th| {
                let (db, t) = (db.clone(), t.clone());
                s.spawn(move || {
                    let mut seed = th.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    let mut next = move || {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed % keys
                    };
                    let mut failed = 0;
                    for _ in 0..per_thread {
                        let mut tx = db.begin_with(level).expect("begin");
                        let r = (|| {
                            for _ in 0..4 {
                                tx.get(&t, key(next()))?;
                            }
                            tx.put(&t, key(next()), [1u8; 100])?;
                            tx.commit().map(drop)
                        })();
                        match r {
                            Ok(()) => {}
                            Err(e) if e.is_retryable() => failed += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    failed
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    let total = 4 * per_thread;
    (
        (total - failed) as f64 / start.elapsed().as_secs_f64(),
        failed as f64 / total as f64,
    )
}

fn twopc_rows() -> Vec<String> {
    let runs: Vec<_> = (0..3).map(|_| twopc_latency()).collect();
    let med = |f: fn(&(f64, f64, f64)) -> f64| median(runs.iter().map(f).collect());
    let (plain, prepared, coordinated) = (med(|r| r.0), med(|r| r.1), med(|r| r.2));
    vec![
        format!("| one-row durable commit, median latency | {plain:.0} µs |"),
        format!(
            "| prepare + commit_prepared, median latency | {prepared:.0} µs ({:.2}x) |",
            prepared / plain
        ),
        format!(
            "| coordinator across two databases, median latency | {coordinated:.0} µs ({:.2}x) |",
            coordinated / plain
        ),
    ]
}

const LEVELS: [strata::Isolation; 2] =
    [strata::Isolation::Snapshot, strata::Isolation::Serializable];

/// The mixed workload at each level, the levels taking turns so a slow
/// spell of the machine hits both; table rows with medians, and the
/// median ratio of paired runs when two levels are compared.
fn mixed_rows(
    levels: &[strata::Isolation],
    durability: Durability,
    per_thread: u64,
) -> Vec<String> {
    let runs: Vec<Vec<(f64, f64)>> = (0..2 * RUNS + 1)
        .map(|_| {
            levels
                .iter()
                .map(|&level| mixed(level, durability, per_thread))
                .collect()
        })
        .collect();
    let mut rows: Vec<String> = levels
        .iter()
        .enumerate()
        .map(|(i, level)| {
            format!(
                "| mixed 4 reads + 1 write, 4 threads, {durability:?} durability, {level:?}: commits/s (serialization failures) | {:.0} ({:.2}%) |",
                median(runs.iter().map(|r| r[i].0).collect()),
                100.0 * median(runs.iter().map(|r| r[i].1).collect())
            )
        })
        .collect();
    if levels.len() == 2 {
        rows.push(format!(
            "| {durability:?}: Serializable / Snapshot, median of {} paired runs | {:.1}% |",
            runs.len(),
            100.0 * median(runs.iter().map(|r| r[1].0 / r[0].0).collect())
        ));
    }
    rows
}

/// Commits per second with `threads` committers, each committing
/// `per_thread` one-row transactions, and the median commit latency in
/// microseconds (every commit timed).
fn clocked_commits(opts: Options, threads: u64, per_thread: u64) -> (f64, f64) {
    let tmp = bench_dir();
    let db = Db::open_with(tmp.path(), opts).expect("open");
    let t = db.table("t").expect("t");
    let start = Instant::now();
    let lat: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|th| {
                let (db, t) = (db.clone(), t.clone());
                s.spawn(move || {
                    (0..per_thread)
                        .map(|i| {
                            let began = Instant::now();
                            let mut tx = db.begin().expect("begin");
                            tx.put(&t, key(th * 1_000_000 + i), [4u8; 100])
                                .expect("put");
                            tx.commit().expect("commit");
                            began.elapsed().as_secs_f64() * 1e6
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("committer"))
            .collect()
    });
    let rate = (threads * per_thread) as f64 / start.elapsed().as_secs_f64();
    (rate, median(lat))
}

/// Commit wait's cost: commit latency (1 thread) and throughput (64 and
/// 256 threads: a committer's rate is at most one over its latency, so
/// it takes many to show whether waits hold up others) with the clock's ε at 0, 1 ms and
/// 5 ms, against commits that skip the wait, for durable and eventual
/// commits. The configurations take turns within each round, so a drift
/// of the machine's speed touches them all alike.
fn commit_wait_rows() -> Vec<String> {
    use std::sync::Arc;
    use strata::clock::FixedEpsilon;
    const ROUNDS: usize = 3;
    let mut rows = vec![
        format!("| commit wait: durability, ε | median latency, 1 thread, 300 commits interleaved (µs) | commits/s, 64 threads (median of {ROUNDS}) | commits/s, 256 threads (median of {ROUNDS}) | median latency, 256 threads (µs) |"),
        "|---|---|---|---|---|".into(),
    ];
    let configs: [(&str, Duration, bool); 4] = [
        ("no wait", Duration::ZERO, false),
        ("ε = 0", Duration::ZERO, true),
        ("ε = 1 ms", Duration::from_millis(1), true),
        ("ε = 5 ms", Duration::from_millis(5), true),
    ];
    for durability in [Durability::Immediate, Durability::Eventual] {
        let opts = |eps: Duration, wait: bool| {
            Options::default()
                .durability(durability)
                .clock(Arc::new(FixedEpsilon(eps)))
                .commit_wait(wait)
        };
        // Latency: one database per configuration, one commit on each in
        // turn, so the disk's drift (large on a shared VM) touches all
        // alike.
        let tmp = bench_dir();
        let dbs: Vec<(Db, Table)> = configs
            .iter()
            .enumerate()
            .map(|(c, &(_, eps, wait))| {
                let db =
                    Db::open_with(tmp.path().join(c.to_string()), opts(eps, wait)).expect("open");
                let t = db.table("t").expect("t");
                (db, t)
            })
            .collect();
        let mut one = vec![Vec::new(); configs.len()];
        let mut order: Vec<usize> = (0..dbs.len()).collect();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..300 {
            // A new order every turn: a commit right after a long commit
            // wait finds the disk idle, and must not always be the same one.
            for k in (1..order.len()).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                order.swap(k, (seed % (k as u64 + 1)) as usize);
            }
            for &c in &order {
                let (db, t) = &dbs[c];
                let began = Instant::now();
                let mut tx = db.begin().expect("begin");
                tx.put(t, key(i), [4u8; 100]).expect("put");
                tx.commit().expect("commit");
                one[c].push(began.elapsed().as_secs_f64() * 1e6);
            }
        }
        drop(dbs);
        let mut some = vec![Vec::new(); configs.len()];
        let mut many = vec![Vec::new(); configs.len()];
        for _ in 0..ROUNDS {
            for (c, &(_, eps, wait)) in configs.iter().enumerate() {
                some[c].push(clocked_commits(opts(eps, wait), 64, 60));
                many[c].push(clocked_commits(opts(eps, wait), 256, 40));
            }
        }
        for (c, (name, _, _)) in configs.iter().enumerate() {
            rows.push(format!(
                "| {durability:?}, {name} | {:.0} | {:.0} | {:.0} | {:.0} |",
                median(one[c].clone()),
                median(some[c].iter().map(|r| r.0).collect()),
                median(many[c].iter().map(|r| r.0).collect()),
                median(many[c].iter().map(|r| r.1).collect()),
            ));
        }
    }
    rows
}

/// Reads as of a timestamp against plain snapshot reads: random gets over
/// rows written by one commit per 10 000 rows (the commit timestamps of a
/// few xids, looked up once) and by one commit per row (a lookup for
/// every row a transaction meets first), each read transaction doing
/// 20 000 gets; and the cost of beginning one (`begin_at` the clock's
/// `earliest`, which waits nothing at ε = 0 but takes the write latch)
/// against `begin`. The two kinds take turns within each round.
fn as_of_rows() -> Vec<String> {
    use strata::clock::{Clock, FixedEpsilon};
    const ROWS: u64 = 20_000;
    const GETS: u64 = 20_000;
    let mut rows = vec![
        format!("| reads as of a timestamp ({ROWS} rows, {GETS} random gets per transaction, median of {RUNS}) | snapshot read | read as of a timestamp: first after open | ratio | later | ratio |"),
        "|---|---|---|---|---|---|".into(),
    ];
    let clock = FixedEpsilon::default();
    for per_commit in [10_000u64, 1] {
        let tmp = bench_dir();
        let open = || {
            Db::open_with(
                tmp.path(),
                Options::default().durability(Durability::Eventual),
            )
            .expect("open")
        };
        let mut db = open();
        let t = db.table("t").expect("t");
        let mut last = strata::clock::Timestamp::ZERO;
        for chunk in 0..ROWS / per_commit {
            let mut tx = db.begin().expect("begin");
            for i in chunk * per_commit..(chunk + 1) * per_commit {
                tx.put(&t, key(i), [5u8; 100]).expect("put");
            }
            last = tx.commit().expect("commit").ts;
        }
        let gets = |t: &Table, tx: &strata::Transaction| {
            let began = Instant::now();
            let mut x = 0x2545_F491_4F6C_DD1Du64;
            for _ in 0..GETS {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let v = tx.get(t, key(x % ROWS)).expect("get");
                assert!(v.is_some());
            }
            GETS as f64 / began.elapsed().as_secs_f64()
        };
        let (mut plain, mut first, mut later) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..RUNS {
            // A new open: no commit timestamp looked up yet (one warm-up
            // pass fills the page cache for all three).
            drop(db);
            db = open();
            let t = db.table("t").expect("t");
            let snapshot = || db.begin_with(strata::Isolation::Snapshot).expect("begin");
            gets(&t, &snapshot());
            plain.push(gets(&t, &snapshot()));
            first.push(gets(&t, &db.begin_at(last).expect("begin_at")));
            later.push(gets(&t, &db.begin_at(last).expect("begin_at")));
        }
        let (p, f, l) = (median(plain), median(first), median(later));
        rows.push(format!(
            "| gets/s, {per_commit} row(s) per commit | {p:.0} | {f:.0} | {:.2} | {l:.0} | {:.2} |",
            f / p,
            l / p
        ));
    }
    let tmp = bench_dir();
    let db = Db::open_with(tmp.path(), Options::default()).expect("open");
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"k", b"v").expect("put");
    let assigned = tx.commit().expect("commit").ts;
    let (mut plain, mut past, mut now) = (Vec::new(), Vec::new(), Vec::new());
    let per_begin = |begin: &dyn Fn() -> strata::Transaction| {
        let began = Instant::now();
        for _ in 0..1000 {
            drop(begin());
        }
        // Milliseconds for 1 000: microseconds each.
        began.elapsed().as_secs_f64() * 1e3
    };
    for _ in 0..RUNS {
        plain.push(per_begin(&|| {
            db.begin_with(strata::Isolation::Snapshot).expect("begin")
        }));
        past.push(per_begin(&|| db.begin_at(assigned).expect("begin_at")));
        now.push(per_begin(&|| {
            let at = clock.now().expect("now").earliest;
            db.begin_at(at).expect("begin_at")
        }));
    }
    let p = median(plain);
    for (what, xs) in [
        ("a timestamp already assigned: writes nothing", past),
        (
            "the clock's earliest: waits out ε = 0, raises the mark and flushes it",
            now,
        ),
    ] {
        let a = median(xs);
        rows.push(format!(
            "| begin, µs (`begin` against `begin_at` {what}) | {p:.1} | {a:.1} | {:.1} | | |",
            a / p
        ));
    }
    rows
}

/// Export against a scan of the same rows, import against loading them
/// with puts: what a snapshot stream costs beyond reading or writing them.
fn snapshot_rows() -> Vec<String> {
    const ROWS: u64 = 200_000;
    let value = [7u8; 100];
    // Seconds to load, scan, export and import, and the stream's bytes.
    type Run = (f64, f64, f64, f64, usize);
    let mut rates: Vec<Run> = Vec::new();
    for _ in 0..RUNS {
        let tmp = bench_dir();
        let src = tmp.path().join("src");
        let opts = || Options::default().durability(Durability::Eventual);
        let db = Db::open_with(&src, opts()).expect("open");
        let t = db.table("t").expect("t");
        let start = Instant::now();
        write_all(&db, &t, 0..ROWS, Some(&value));
        db.checkpoint().expect("checkpoint");
        let load = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let tx = db.begin_read().expect("reader");
        let mut n = 0u64;
        for row in tx.scan(&t, ..).expect("scan") {
            let (k, v) = row.expect("row");
            n += u64::from(!k.is_empty() && !v.is_empty());
        }
        let scan = start.elapsed().as_secs_f64();
        assert_eq!(n, ROWS);
        drop(tx);
        let mut stream = Vec::new();
        let start = Instant::now();
        db.export(&mut stream, strata::ExportOptions::default())
            .expect("export");
        let export = start.elapsed().as_secs_f64();
        let start = Instant::now();
        strata::import(&mut stream.as_slice(), tmp.path().join("copy"), opts()).expect("import");
        let import = start.elapsed().as_secs_f64();
        rates.push((load, scan, export, import, stream.len()));
    }
    let m = |f: &dyn Fn(&Run) -> f64| median(rates.iter().map(f).collect());
    let per_s = |secs: f64| ROWS as f64 / secs;
    vec![
        format!("| snapshot streams ({ROWS} rows of 16-byte keys and 100-byte values, median of {RUNS}) | rows/s | against | rows/s | ratio |"),
        "|---|---|---|---|---|".into(),
        format!(
            "| export ({:.1} MB stream) | {:.0} | a snapshot scan | {:.0} | {:.2} |",
            m(&|r| r.4 as f64) / 1e6,
            m(&|r| per_s(r.2)),
            m(&|r| per_s(r.1)),
            m(&|r| r.1 / r.2)
        ),
        format!(
            "| import (to a closed, synced database) | {:.0} | the same puts in one transaction, then a checkpoint | {:.0} | {:.2} |",
            m(&|r| per_s(r.3)),
            m(&|r| per_s(r.0)),
            m(&|r| r.0 / r.3)
        ),
    ]
}

fn main() {
    if let Some(dir) = std::env::var_os("STRATA_BENCH_WAL_CHILD") {
        wal_child(&PathBuf::from(dir));
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if std::env::var_os("STRATA_BENCH_ONLY_SPACE").is_some() {
        let amp = median((0..3).map(|_| space_amplification()).collect());
        println!("| directory size / live data after vacuum | {amp:.2} |");
        return;
    }
    if std::env::var_os("STRATA_BENCH_ONLY_SNAPSHOT").is_some() {
        for row in snapshot_rows() {
            println!("{row}");
        }
        return;
    }
    if std::env::var_os("STRATA_BENCH_ONLY_TWOPC").is_some() {
        for row in twopc_rows() {
            println!("{row}");
        }
        return;
    }
    if std::env::var_os("STRATA_BENCH_ONLY_AS_OF").is_some() {
        for row in as_of_rows() {
            println!("{row}");
        }
        return;
    }
    if std::env::var_os("STRATA_BENCH_ONLY_TIME").is_some() {
        for row in commit_wait_rows() {
            println!("{row}");
        }
        println!();
        for row in as_of_rows() {
            println!("{row}");
        }
        return;
    }
    if let Some(only) = std::env::var_os("STRATA_BENCH_ONLY_MIXED") {
        // `si` or `ser` runs one level alone (for a profiler), `durable`
        // compares them with durable commits; anything else compares them
        // with eventual durability.
        let levels: &[strata::Isolation] = match only.to_str() {
            Some("si") => &[strata::Isolation::Snapshot],
            Some("ser") => &[strata::Isolation::Serializable],
            _ => &LEVELS,
        };
        let (durability, per_thread) = match only.to_str() {
            Some("durable") => (Durability::Immediate, 250),
            _ => (Durability::Eventual, 5_000),
        };
        for row in mixed_rows(levels, durability, per_thread) {
            println!("{row}");
        }
        return;
    }
    let probe = bench_dir();
    println!("| figure | median of {RUNS} |");
    println!("|---|---|");
    let rates: Vec<_> = (0..RUNS).map(|_| put_get_rates()).collect();
    println!(
        "| single-thread puts/s (100-byte values, 10k per commit) | {:.0} |",
        median(rates.iter().map(|r| r.0).collect())
    );
    println!(
        "| single-thread gets/s (random keys, 200k rows, cached) | {:.0} |",
        median(rates.iter().map(|r| r.1).collect())
    );
    // One thread's commits, each run beside a probe of the file system
    // (the disk's speed drifts from minute to minute).
    let pairs: Vec<_> = (0..RUNS)
        .map(|_| {
            let fsyncs = fsync_per_sec(probe.path());
            (fsyncs, durable_commits_per_sec(1))
        })
        .collect();
    let fsyncs = median(pairs.iter().map(|p| p.0).collect());
    println!("| file system: 4 KiB overwrite + fdatasync per second | {fsyncs:.0} |");
    let one = median(pairs.iter().map(|p| p.1 .0).collect());
    println!(
        "| durable commits/s, 1 thread | {one:.0} ({:.0}% of the probe run beside it, median of {RUNS} pairs) |",
        100.0 * median(pairs.iter().map(|p| p.1 .0 / p.0).collect())
    );
    for threads in [8, 16] {
        let runs: Vec<_> = (0..RUNS)
            .map(|_| durable_commits_per_sec(threads))
            .collect();
        let rate = median(runs.iter().map(|r| r.0).collect());
        let per_sync = median(runs.iter().map(|r| r.1).collect());
        println!(
            "| durable commits/s, {threads} thread(s) | {rate:.0} ({:.2}x one thread, {per_sync:.1} commits per fsync) |",
            rate / one
        );
    }
    let opens: Vec<_> = (0..3).map(|_| open_after_kill(256)).collect();
    println!(
        "| open after kill -9 with ~256 MiB of log | {:.2} s ({:.0} MiB/s replayed) |",
        median(opens.iter().map(|o| o.0).collect()),
        median(opens.iter().map(|o| o.1).collect())
    );
    for row in mixed_rows(&LEVELS, Durability::Eventual, 5_000)
        .into_iter()
        .chain(mixed_rows(&LEVELS, Durability::Immediate, 250))
    {
        println!("{row}");
    }
    for row in twopc_rows() {
        println!("{row}");
    }
    for row in commit_wait_rows() {
        println!("{row}");
    }
    let amp = median((0..3).map(|_| space_amplification()).collect());
    println!("| directory size / live data after vacuum | {amp:.2} |");
    let alone = median((0..3).map(|_| deletes_ms(false)).collect());
    let beside = median((0..3).map(|_| deletes_ms(true)).collect());
    println!(
        "| 100k deletes in one transaction, alone / beside a vacuum pass | {alone:.0} / {beside:.0} ms ({:.1}x) |",
        beside / alone
    );
}
