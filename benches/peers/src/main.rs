//! strata against its peers on the same workloads, in one run.
//!
//! `cargo run --release -p strata-bench -- [--quick] [--engines strata,redb]` (add
//! `--features rocksdb` for RocksDB; it needs libclang and a long C++ build).
//!
//! The workloads of redb's benchmark (24-byte random keys, 150-byte
//! values), scaled to fit a few minutes on two cores, then what it does not
//! measure: durable commits from several threads, a read-write mix, space
//! held by a long-running reader, open time after `kill -9` with a large
//! log. Each engine gets a fresh directory, makes
//! every commit durable (fsync) and a 64 MiB cache where it has one.
//! Printed: a markdown table; each peer's cell carries strata's advantage
//! over it (`×2.0`: strata twice as fast or half the size; below 1: the peer
//! leads).

mod engines;
mod probe;

use std::time::Instant;

use engines::{dir_size, Engine, Kv};

/// Sizes of one run.
struct Scale {
    bulk: usize,
    individual: usize,
    batches: usize,
    reads: usize,
    ranges: usize,
    commits: usize,
    mixed: usize,
    kill_mib: usize,
}

const FULL: Scale = Scale {
    bulk: 200_000,
    individual: 1_000,
    batches: 100,
    reads: 200_000,
    ranges: 50_000,
    commits: 4_000,
    mixed: 2_000,
    kill_mib: 128,
};

const QUICK: Scale = Scale {
    bulk: 40_000,
    individual: 200,
    batches: 20,
    reads: 40_000,
    ranges: 10_000,
    commits: 1_000,
    mixed: 400,
    kill_mib: 16,
};

/// How a figure compares: lower is better (time, bytes) or higher (rates).
#[derive(Clone, Copy, PartialEq)]
enum Unit {
    Ms,
    PerSec,
    MiB,
}

struct Row {
    name: String,
    unit: Unit,
    /// One figure per engine, `None` where the engine cannot do it.
    values: Vec<Option<f64>>,
}

/// A seeded xorshift stream: the same keys for every engine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn key(&mut self) -> Vec<u8> {
        let mut k = Vec::with_capacity(24);
        for _ in 0..3 {
            k.extend_from_slice(&self.next().to_le_bytes());
        }
        k
    }
}

fn value(i: usize) -> Vec<u8> {
    vec![(i % 251) as u8; 150]
}

fn pairs(rng: &mut Rng, n: usize) -> Vec<Kv> {
    (0..n).map(|i| (rng.key(), value(i))).collect()
}

fn ms(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// redb's benchmark, in order, on one engine: one figure per row.
fn redb_suite(
    e: &dyn Engine,
    dir: &std::path::Path,
    s: &Scale,
) -> Vec<(String, Unit, Option<f64>)> {
    let mut out = Vec::new();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let loaded = pairs(&mut rng, s.bulk);
    out.push((
        format!("bulk load ({} rows, one transaction)", s.bulk),
        Unit::Ms,
        Some(ms(|| e.insert(&loaded))),
    ));
    let single = pairs(&mut rng, s.individual);
    out.push((
        format!("individual writes ({} durable commits)", s.individual),
        Unit::Ms,
        Some(ms(|| {
            single
                .iter()
                .for_each(|kv| e.insert(std::slice::from_ref(kv)))
        })),
    ));
    let batches: Vec<Vec<Kv>> = (0..s.batches).map(|_| pairs(&mut rng, 1_000)).collect();
    out.push((
        format!("batch writes ({} × 1 000 rows)", s.batches),
        Unit::Ms,
        Some(ms(|| batches.iter().for_each(|b| e.insert(b)))),
    ));
    let total = (s.bulk + s.individual + s.batches * 1_000) as u64;
    let mut n = 0;
    out.push(("count".into(), Unit::Ms, Some(ms(|| n = e.count()))));
    assert_eq!(n, total, "{}: count", e.name());
    let mut probe = Rng(7);
    let keys: Vec<Vec<u8>> = (0..s.reads)
        .map(|_| loaded[probe.next() as usize % loaded.len()].0.clone())
        .collect();
    let mut got = 0;
    out.push((
        format!("random reads ({})", s.reads),
        Unit::Ms,
        Some(ms(|| got = e.reads(&keys))),
    ));
    assert_eq!(got, 150 * s.reads, "{}: reads", e.name());
    let starts = &keys[..s.ranges];
    out.push((
        format!("range reads ({} × 10 rows)", s.ranges),
        Unit::Ms,
        Some(ms(|| got = e.ranges(starts, 10))),
    ));
    for threads in [4usize, 8] {
        let t = Instant::now();
        std::thread::scope(|sc| {
            for _ in 0..threads {
                sc.spawn(|| assert_eq!(e.reads(&keys), 150 * s.reads));
            }
        });
        let rate = (threads * s.reads) as f64 / t.elapsed().as_secs_f64();
        out.push((
            format!("random reads, {threads} threads (reads/s)"),
            Unit::PerSec,
            Some(rate),
        ));
    }
    let victims: Vec<Vec<u8>> = loaded.iter().step_by(2).map(|kv| kv.0.clone()).collect();
    out.push((
        format!("removals ({} rows, one transaction)", victims.len()),
        Unit::Ms,
        Some(ms(|| e.remove(&victims))),
    ));
    out.push((
        "file size after removals (MiB)".into(),
        Unit::MiB,
        Some(mib(dir_size(dir))),
    ));
    let compacted = e.compact().then(|| mib(dir_size(dir)));
    out.push((
        "file size after compaction / vacuum (MiB)".into(),
        Unit::MiB,
        compacted,
    ));
    out
}

/// Durable one-row commits from `threads` threads: commits per second.
fn durable_commits(e: &dyn Engine, threads: usize, total: usize) -> f64 {
    let per = total / threads;
    let t = Instant::now();
    std::thread::scope(|sc| {
        for th in 0..threads {
            sc.spawn(move || {
                let mut rng = Rng(0xC0FFEE + th as u64);
                for i in 0..per {
                    e.insert(&[(rng.key(), value(i))]);
                }
            });
        }
    });
    (threads * per) as f64 / t.elapsed().as_secs_f64()
}

/// 4 threads of transactions that read 4 random keys and update one:
/// committed transactions per second.
fn mixed(e: &dyn Engine, keys: &[Vec<u8>], total: usize) -> f64 {
    let per = total / 4;
    let t = Instant::now();
    let done: usize = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4u64)
            .map(|th| {
                sc.spawn(move || {
                    let mut rng = Rng(0xBEEF + th);
                    let mut ok = 0;
                    for i in 0..per {
                        let reads: Vec<Vec<u8>> = (0..4)
                            .map(|_| keys[rng.next() as usize % keys.len()].clone())
                            .collect();
                        let w = (keys[rng.next() as usize % keys.len()].clone(), value(i));
                        ok += usize::from(e.read_write(&reads, &w));
                    }
                    ok
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    done as f64 / t.elapsed().as_secs_f64()
}

/// Space a long-running reader holds: the directory's growth while 5
/// rounds overwrite 20 000 rows (in 1 000-row commits) under an open read
/// snapshot.
fn reader_space(e: &dyn Engine, dir: &std::path::Path, keys: &[Kv]) -> f64 {
    let before = dir_size(dir);
    e.with_reader(&mut || {
        for round in 0..5 {
            for chunk in keys.chunks(1_000) {
                let kv: Vec<Kv> = chunk
                    .iter()
                    .map(|(k, _)| (k.clone(), value(round)))
                    .collect();
                e.insert(&kv);
            }
        }
    });
    mib(dir_size(dir).saturating_sub(before))
}

/// The child of the open-after-kill workload: writes `mib` MiB of rows in
/// 1 000-row durable commits, with the engine's log left to grow, says so
/// on stdout and waits for its `kill -9`.
fn child(args: &[String]) {
    let (name, dir, mib) = (&args[0], std::path::Path::new(&args[1]), &args[2]);
    let mib: usize = mib.parse().expect("MiB");
    let e = engines::open_named(name, dir, true);
    let mut rng = Rng(99);
    let mut written = 0;
    while written < mib << 20 {
        let kv = pairs(&mut rng, 1_000);
        e.insert(&kv);
        written += kv.len() * 174;
    }
    println!("filled");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Opens an engine after `kill -9` of a process that wrote `mib` MiB since
/// it last checkpointed (where the engine has a log): milliseconds to open
/// and read one row.
fn open_after_kill(name: &str, dir: &std::path::Path, mib: usize) -> f64 {
    use std::io::BufRead;
    let mut c = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--child", name])
        .arg(dir)
        .arg(mib.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn child");
    let out = c.stdout.take().expect("stdout");
    let filled = std::io::BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .any(|l| l == "filled");
    c.kill().expect("kill -9");
    c.wait().expect("wait");
    assert!(filled, "{name}: the child did not finish writing");
    let t = Instant::now();
    let e = engines::open_named(name, dir, false);
    e.reads(&[vec![0u8; 24]]);
    t.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "--child") {
        return child(&args[2..]);
    }
    let quick = std::env::args().any(|a| a == "--quick");
    // `--engines strata,redb` runs only those.
    let only: Vec<String> = std::env::args()
        .skip_while(|a| a != "--engines")
        .nth(1)
        .map(|l| l.split(',').map(str::to_lowercase).collect())
        .unwrap_or_default();
    let s = if quick { &QUICK } else { &FULL };
    // `--runs N`: medians of N whole runs (default 3, 1 with --quick).
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 });
    let results: Vec<Run> = (0..runs.max(1)).map(|_| run_once(s, &only)).collect();
    let first = &results[0];
    let rows: Vec<Row> = first
        .rows
        .iter()
        .enumerate()
        .map(|(r, row)| Row {
            name: row.name.clone(),
            unit: row.unit,
            values: (0..row.values.len())
                .map(|i| {
                    let mut v: Vec<f64> =
                        results.iter().filter_map(|x| x.rows[r].values[i]).collect();
                    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
                    v.get(v.len() / 2).copied()
                })
                .collect(),
        })
        .collect();
    let median = |f: &dyn Fn(&Run) -> f64| {
        let mut v: Vec<f64> = results.iter().map(f).collect();
        v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        v[v.len() / 2]
    };
    let snap = (
        median(&|r| r.levels.0),
        median(&|r| r.levels.1),
        median(&|r| r.levels.2),
    );
    let fsyncs = median(&|r| r.fsyncs);
    println!("strata-bench, medians of {} run(s)", results.len());
    print_table(&first.names, &rows, quick);
    println!();
    println!(
        "strata alone: the same mix at Snapshot isolation {:.0} commits/s, at Serializable {:.0}; Serializable/Snapshot {:.1}% (median of {LEVEL_ROUNDS} alternating rounds per run)",
        snap.0,
        snap.1,
        100.0 * snap.2
    );
    let strata_commits = |threads: &str| {
        rows.iter()
            .find(|r| {
                r.name
                    .starts_with(&format!("durable 1-row commits, {threads} thread"))
            })
            .and_then(|r| r.values[0])
    };
    if let Some(one) = strata_commits("1") {
        println!(
            "file system: 4 KiB overwrite + fdatasync {fsyncs:.0}/s; strata's one-thread durable commits reach {:.0}% of it",
            100.0 * one / fsyncs
        );
    }
    let ceiling: Vec<f64> = (0..3).map(|i| median(&|r| r.ceiling[i])).collect();
    println!(
        "group commit with no database (128-byte records, one leader writes and fsyncs each batch): 1 thread {:.0}/s; 16 threads {:.0}/s ({:.1}×) with the leader writing at once, {:.0}/s ({:.1}×) with it waiting for all 16",
        ceiling[0],
        ceiling[1],
        ceiling[1] / ceiling[0],
        ceiling[2],
        ceiling[2] / ceiling[0],
    );
    if let (Some(one), Some(sixteen)) = (strata_commits("1"), strata_commits("16")) {
        println!(
            "strata: 16 threads {:.1}× its one-thread rate, {:.0}% of the no-database rate with the leader writing at once",
            sixteen / one,
            100.0 * sixteen / ceiling[1]
        );
    }
    println!();
    println!("How each engine is configured:");
    for c in &first.configs {
        println!("{c}");
    }
}

/// What one run measured.
struct Run {
    names: Vec<&'static str>,
    configs: Vec<String>,
    rows: Vec<Row>,
    /// strata's mix at Snapshot and at Serializable, and their ratio
    /// (`strata_levels`).
    levels: (f64, f64, f64),
    /// `probe::fsync`.
    fsyncs: f64,
    /// `probe::group_commit`: one thread, then 16 threads with the leader
    /// writing at once and waiting for all.
    ceiling: [f64; 3],
}

fn run_once(s: &Scale, only: &[String]) -> Run {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut names = Vec::new();
    let mut configs = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    let put = |rows: &mut Vec<Row>, i: usize, name: String, unit: Unit, v: Option<f64>| {
        if let Some(r) = rows.iter_mut().find(|r| r.name == name) {
            r.values[i] = v;
        } else {
            let mut values = vec![None; 8];
            values[i] = v;
            rows.push(Row { name, unit, values });
        }
    };
    for (i, e) in engines::all(&tmp.path().join("suite"), only)
        .into_iter()
        .enumerate()
    {
        eprintln!("{}: redb's workloads", e.name());
        names.push(e.name());
        configs.push(format!("- {}: {}", e.name(), e.config()));
        let dir = tmp.path().join("suite").join(dir_name(e.name()));
        for (name, unit, v) in redb_suite(e.as_ref(), &dir, s) {
            put(&mut rows, i, name, unit, v);
        }
    }
    let n = names.len();
    let mut fsyncs = 0.0;
    for threads in [1usize, 4, 16] {
        for (i, e) in engines::all(&tmp.path().join(format!("commits{threads}")), only)
            .into_iter()
            .enumerate()
        {
            eprintln!("{}: durable commits, {threads} threads", e.name());
            // The file system's rate, measured on either side of strata's
            // one-thread run: the disk's speed drifts within a run.
            let probe = threads == 1 && i == 0;
            if probe {
                fsyncs += probe::fsync(&tmp.path().join("probe")) / 2.0;
            }
            let rate = durable_commits(e.as_ref(), threads, s.commits);
            if probe {
                fsyncs += probe::fsync(&tmp.path().join("probe")) / 2.0;
            }
            put(
                &mut rows,
                i,
                format!("durable 1-row commits, {threads} thread(s) (commits/s)"),
                Unit::PerSec,
                Some(rate),
            );
        }
    }
    let ceiling = group_commit_ceiling(&tmp.path().join("probe"), s.commits);
    let mut rng = Rng(42);
    let base = pairs(&mut rng, 20_000);
    let keys: Vec<Vec<u8>> = base.iter().map(|kv| kv.0.clone()).collect();
    for (i, e) in engines::all(&tmp.path().join("mixed"), only)
        .into_iter()
        .enumerate()
    {
        eprintln!("{}: read-write mix and a long reader", e.name());
        e.insert(&base);
        let rate = mixed(e.as_ref(), &keys, s.mixed);
        put(
            &mut rows,
            i,
            "4 threads × (4 reads + 1 write) transactions (commits/s)".into(),
            Unit::PerSec,
            Some(rate),
        );
        let dir = tmp.path().join("mixed").join(dir_name(e.name()));
        let grown = reader_space(e.as_ref(), &dir, &base);
        put(
            &mut rows,
            i,
            "growth while a reader stays open (5 × 20 000 overwrites, MiB)".into(),
            Unit::MiB,
            Some(grown),
        );
    }
    for (i, name) in names.iter().enumerate() {
        eprintln!("{name}: open after kill -9");
        let mib = s.kill_mib;
        let ms = open_after_kill(name, &tmp.path().join("kill").join(dir_name(name)), mib);
        put(
            &mut rows,
            i,
            format!("open after kill -9, {mib} MiB written since the last checkpoint (ms)"),
            Unit::Ms,
            Some(ms),
        );
    }
    let levels = strata_levels(&tmp.path().join("levels"), &keys, &base, s.mixed);
    let n = n.min(names.len());
    names.truncate(n);
    for r in &mut rows {
        r.values.truncate(n);
    }
    Run {
        names,
        configs,
        rows,
        levels,
        fsyncs,
        ceiling,
    }
}

/// `probe::group_commit` at one thread and at 16 (both leaders), with as
/// many commits as the engines make.
fn group_commit_ceiling(dir: &std::path::Path, n: usize) -> [f64; 3] {
    eprintln!("group commit with no database");
    [
        probe::group_commit(dir, 1, n, probe::Leader::AtOnce),
        probe::group_commit(dir, 16, n, probe::Leader::AtOnce),
        probe::group_commit(dir, 16, n, probe::Leader::WaitsForAll),
    ]
}

/// Rounds of the Snapshot/Serializable comparison in each run.
const LEVEL_ROUNDS: usize = 5;

/// The mixed workload on strata at Snapshot and at Serializable, each on
/// its own database, in alternating rounds (so a slow moment of the
/// machine falls on both): the median rate at each level and the median of
/// the rounds' Serializable/Snapshot ratios.
fn strata_levels(
    dir: &std::path::Path,
    keys: &[Vec<u8>],
    base: &[Kv],
    total: usize,
) -> (f64, f64, f64) {
    let engines: Vec<_> = [strata::Isolation::Snapshot, strata::Isolation::Serializable]
        .into_iter()
        .enumerate()
        .map(|(i, level)| {
            let e = engines::strata::Strata::open_at(&dir.join(format!("{i}")), level);
            e.insert(base);
            e
        })
        .collect();
    let rounds: Vec<(f64, f64)> = (0..LEVEL_ROUNDS)
        .map(|_| {
            (
                mixed(&engines[0], keys, total),
                mixed(&engines[1], keys, total),
            )
        })
        .collect();
    let mid = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        v[v.len() / 2]
    };
    (
        mid(rounds.iter().map(|r| r.0).collect()),
        mid(rounds.iter().map(|r| r.1).collect()),
        mid(rounds.iter().map(|r| r.1 / r.0).collect()),
    )
}

fn dir_name(engine: &str) -> String {
    match engine {
        "LMDB" => "lmdb".into(),
        "SQLite" => "sqlite".into(),
        "RocksDB" => "rocksdb".into(),
        other => other.to_string(),
    }
}

fn fmt(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Ms => format!("{v:.0} ms"),
        Unit::PerSec => format!("{v:.0}/s"),
        Unit::MiB => format!("{v:.1} MiB"),
    }
}

fn print_table(names: &[&str], rows: &[Row], quick: bool) {
    println!(
        "{}each peer's cell shows strata's advantage over it (×1.5: strata 1.5 times faster or smaller)\n",
        if quick { "--quick: " } else { "" }
    );
    println!("| workload | {} |", names.join(" | "));
    println!("|---|{}", "---|".repeat(names.len()));
    for r in rows {
        let ours = r.values[0];
        let cells: Vec<String> = (0..names.len())
            .map(|i| match (r.values[i], ours) {
                (None, _) => "n/a".into(),
                (Some(v), _) if i == 0 => fmt(v, r.unit),
                (Some(v), Some(o)) => {
                    let adv = match r.unit {
                        Unit::PerSec => o / v,
                        Unit::Ms | Unit::MiB => v / o.max(1e-9),
                    };
                    format!("{} (×{adv:.2})", fmt(v, r.unit))
                }
                (Some(v), None) => fmt(v, r.unit),
            })
            .collect();
        println!("| {} | {} |", r.name, cells.join(" | "));
    }
}
