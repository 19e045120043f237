//! Serializable isolation under concurrency: a randomized history checker
//! (in the style of Elle's list-append workload) and a bank invariant that
//! write skew would break.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::open;
use strata::internals::RacePoint;
use strata::{Db, Isolation, Table};

/// What one committed transaction did: lists read (whole values) and
/// elements appended, per key.
#[derive(Default, Clone, Debug)]
struct Txn {
    xid: u64,
    read_only: bool,
    reads: Vec<(u8, Vec<String>)>,
    appends: Vec<(u8, String)>,
}

fn parse(v: Option<Vec<u8>>) -> Vec<String> {
    match v {
        None => Vec::new(),
        Some(b) if b.is_empty() => Vec::new(),
        Some(b) => String::from_utf8(b)
            .expect("utf8")
            .split(',')
            .map(str::to_owned)
            .collect(),
    }
}

/// Runs `threads` workers of read-and-append transactions at `level`,
/// one in three of them read-only (declared so at Serializable), with the
/// engine pausing threads at its race points; returns the committed
/// transactions and the final lists.
fn history(
    level: Isolation,
    threads: u64,
    per_thread: u64,
) -> (Vec<Txn>, HashMap<u8, Vec<String>>) {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = Db::open_with(
        tmp.path(),
        strata::Options::default()
            .lock_timeout(Some(Duration::from_secs(2)))
            .race_hook(race_pauses(threads ^ per_thread)),
    )
    .expect("open");
    let t = common::create(&db, "lists");
    let committed: Vec<Txn> = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                let (db, t) = (db.clone(), t.clone());
                s.spawn(move || worker(&db, &t, level, w, per_thread))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    });
    let r = db.begin().expect("begin");
    let finals = (0..KEYS)
        .map(|k| (k, parse(r.get(&t, [k]).expect("get"))))
        .collect();
    (committed, finals)
}

const KEYS: u8 = 5;

fn worker(db: &Db, t: &Table, level: Isolation, w: u64, n: u64) -> Vec<Txn> {
    worker_deciding(db, t, level, w, n, None)
}

/// [`worker`], with one in three read-write transactions prepared (gid
/// `w.i`) instead of committed and handed to `decider`, if there is one.
fn worker_deciding(
    db: &Db,
    t: &Table,
    level: Isolation,
    w: u64,
    n: u64,
    decider: Option<&mpsc::Sender<(String, Txn)>>,
) -> Vec<Txn> {
    let mut rnd = common::xorshift(w.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut out = Vec::new();
    for i in 0..n {
        if rnd(3) == 0 {
            let keys = [0, 1, 2].map(|_| rnd(KEYS as u64) as u8);
            if let Some(rec) = read_only(db, t, level, &keys) {
                out.push(rec);
            }
            continue;
        }
        let mut tx = db.begin_with(level).expect("begin");
        let mut rec = Txn::default();
        let result = (|| {
            // Read two keys, append to one of them: the write-skew shape.
            let (a, b) = (rnd(KEYS as u64) as u8, rnd(KEYS as u64) as u8);
            for k in [a, b] {
                rec.reads.push((k, parse(tx.get(t, [k])?)));
            }
            let target = if rnd(2) == 0 { a } else { b };
            let mut list = parse(tx.get(t, [target])?);
            rec.reads.push((target, list.clone()));
            let e = format!("{w}.{i}");
            list.push(e.clone());
            tx.put(t, [target], list.join(","))?;
            rec.appends.push((target, e.clone()));
            rec.xid = tx.xid().0;
            match decider {
                Some(_) if rnd(3) == 0 => tx.prepare(&e).map(|_| Some(e)),
                _ => tx.commit().map(|_| None),
            }
        })();
        match result {
            Ok(None) => out.push(rec),
            Ok(Some(gid)) => {
                if let Some(d) = decider {
                    d.send((gid, rec)).expect("the decider runs");
                }
            }
            Err(e) if e.is_retryable() => {}
            Err(e) => panic!("worker {w}: {e}"),
        }
    }
    out
}

/// A transaction that reads `keys` and writes nothing: declared read-only
/// at Serializable (judged by the read-only rule, and possibly on a safe
/// snapshot). `None` if it failed with a retryable error.
fn read_only(db: &Db, t: &Table, level: Isolation, keys: &[u8]) -> Option<Txn> {
    let tx = if level == Isolation::Serializable {
        db.begin_read()
    } else {
        db.begin_with(level)
    }
    .expect("begin");
    let mut rec = Txn {
        read_only: true,
        ..Txn::default()
    };
    let result = (|| {
        for &k in keys {
            rec.reads.push((k, parse(tx.get(t, [k])?)));
            thread::yield_now(); // let writers commit between the reads
        }
        tx.commit()
    })();
    match result {
        Ok(_) => Some(rec),
        Err(e) if e.is_retryable() => None,
        Err(e) => panic!("read-only: {e}"),
    }
}

/// Dependency edges between committed transactions (indexes), inferred
/// from the lists: ww and wr from the order of elements, rw from what a
/// reader did not see. Every committed append must be in the lists, and
/// nothing else.
fn edges(txns: &[Txn], finals: &HashMap<u8, Vec<String>>) -> Vec<Vec<usize>> {
    let mut writer: HashMap<&str, usize> = HashMap::new();
    for (i, t) in txns.iter().enumerate() {
        for (_, e) in &t.appends {
            writer.insert(e.as_str(), i);
        }
    }
    let in_finals: HashSet<(u8, &str)> = finals
        .iter()
        .flat_map(|(&k, list)| list.iter().map(move |e| (k, e.as_str())))
        .collect();
    for t in txns {
        for (k, e) in &t.appends {
            assert!(
                in_finals.contains(&(*k, e.as_str())),
                "key {k} lacks {e}, which a committed transaction appended"
            );
        }
    }
    let mut g = vec![HashSet::new(); txns.len()];
    for (k, list) in finals {
        for e in list {
            assert!(
                writer.contains_key(e.as_str()),
                "key {k} holds {e}, which no committed transaction wrote"
            );
        }
        for pair in list.windows(2) {
            let (a, b) = (writer[pair[0].as_str()], writer[pair[1].as_str()]);
            if a != b {
                g[a].insert(b); // ww
            }
        }
    }
    for (i, t) in txns.iter().enumerate() {
        for (k, seen) in &t.reads {
            let list = &finals[k];
            assert!(
                list.starts_with(seen),
                "a read of key {k} is not a prefix of its final value"
            );
            if let Some(last) = seen.last() {
                let w = writer[last.as_str()];
                if w != i {
                    g[w].insert(i); // wr
                }
            }
            if let Some(next) = list.get(seen.len()) {
                let w = writer[next.as_str()];
                if w != i {
                    g[i].insert(w); // rw: i did not see w's append
                }
            }
        }
    }
    g.into_iter().map(|s| s.into_iter().collect()).collect()
}

#[test]
fn serializable_histories_have_no_dependency_cycles() {
    let rounds: usize = std::env::var("STRATA_HISTORY_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    for round in 0..rounds {
        let (txns, finals) = history(Isolation::Serializable, 4, 150);
        let read_only = txns.iter().filter(|t| t.read_only).count();
        let writers = txns.len() - read_only;
        eprintln!(
            "round {round}: {writers} read-write and {read_only} read-only transactions committed"
        );
        // A floor on commits of both kinds: an engine that aborts
        // everything has no cycles either. (Of the 600 transactions about
        // 200 are read-only, of which nearly all commit, and 400 are
        // read-write ones on five keys, of which about two in three do.)
        assert!(
            writers >= 100 && read_only >= 120,
            "round {round}: only {writers} read-write and {read_only} read-only transactions committed"
        );
        let g = edges(&txns, &finals);
        if let Some(c) = common::find_cycle(&g) {
            let detail: Vec<String> = c.iter().map(|&i| format!("T{i}: {:?}", txns[i])).collect();
            panic!(
                "round {round}: dependency cycle among committed serializable transactions {c:?}:\n{}",
                detail.join("\n")
            );
        }
    }
}

/// The checker is alive: snapshot isolation does produce cycles (write
/// skew) on the same workload.
#[test]
fn snapshot_histories_do_show_cycles() {
    for _ in 0..10 {
        let (txns, finals) = history(Isolation::Snapshot, 4, 150);
        if common::find_cycle(&edges(&txns, &finals)).is_some() {
            return;
        }
    }
    panic!("no cycle in ten snapshot-isolation histories: the checker may be blind");
}

/// Decides the prepared transactions that arrive on `prepared`, a few
/// held in doubt at a time and taken in random order, three in four
/// committed; returns the committed ones and how many were rolled back.
/// Every decision must succeed.
fn decider(db: &Db, prepared: mpsc::Receiver<(String, Txn)>, seed: u64) -> (Vec<Txn>, usize) {
    let mut rng = Rng::new(seed);
    let (mut committed, mut rolled_back) = (Vec::new(), 0);
    let mut waiting: Vec<(String, Txn)> = Vec::new();
    let mut open = true;
    // Bounded: each turn takes a transaction, decides one, or waits 1 ms
    // for one (at most ten minutes of waiting).
    for _ in 0..1_000_000 {
        if !open && waiting.is_empty() {
            return (committed, rolled_back);
        }
        if open && waiting.len() < 3 {
            match prepared.recv_timeout(Duration::from_millis(1)) {
                Ok(p) => waiting.push(p),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
            }
            if open && waiting.len() < 3 && rng.below(2) == 0 {
                continue;
            }
        }
        if waiting.is_empty() {
            continue;
        }
        rng.pause();
        let (gid, rec) = waiting.swap_remove(rng.below(waiting.len() as u64) as usize);
        if rng.below(4) == 0 {
            db.rollback_prepared(&gid)
                .unwrap_or_else(|e| panic!("rollback_prepared {gid}: {e}"));
            rolled_back += 1;
        } else {
            db.commit_prepared(&gid)
                .unwrap_or_else(|e| panic!("commit_prepared {gid}: {e}"));
            committed.push(rec);
        }
    }
    panic!("the decider was still deciding after a million turns");
}

// Guards serializable histories in which some transactions commit through
// two-phase commit: four workers of read-and-append transactions (one in
// three read-only, through `begin_read`), one in three of the read-write
// ones prepared and handed to a decider thread that commits or rolls them
// back while the others run, beside a vacuum loop with a checkpoint every
// 16 passes and the engine's race points pausing threads. The dependency
// graph over every committed transaction — prepared-then-committed ones
// included — must be acyclic, no rolled-back append may show, every
// failure must be retryable, and each round must commit a floor of each
// kind.
#[test]
fn serializable_histories_across_two_phase_decisions_have_no_cycles() {
    let rounds: usize = std::env::var("STRATA_HISTORY_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    for round in 0..rounds as u64 {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = Db::open_with(
            tmp.path(),
            strata::Options::default()
                .lock_timeout(Some(Duration::from_secs(2)))
                .vacuum_threshold(0)
                .durability(strata::Durability::Eventual)
                .race_hook(race_pauses(round ^ 0x2bc)),
        )
        .expect("open");
        let t = common::create(&db, "lists");
        let done = AtomicBool::new(false);
        let (mut txns, decided, rolled_back, passes, scans) = thread::scope(|s| {
            let (to_decider, prepared) = mpsc::channel();
            let decide = s.spawn(|| decider(&db, prepared, round));
            let scanner = s.spawn(|| read_committed_scans(&db, &t, &done));
            let vac = s.spawn(|| {
                let mut passes = 0u64;
                while !done.load(Ordering::Relaxed) && passes < 100_000 {
                    db.vacuum().expect("vacuum");
                    passes += 1;
                    if passes.is_multiple_of(16) {
                        db.checkpoint().expect("checkpoint");
                    }
                }
                passes
            });
            let workers: Vec<_> = (0..4u64)
                .map(|w| {
                    let (db, t, to_decider) = (&db, &t, to_decider.clone());
                    s.spawn(move || {
                        worker_deciding(
                            db,
                            t,
                            Isolation::Serializable,
                            w + 4 * round,
                            150,
                            Some(&to_decider),
                        )
                    })
                })
                .collect();
            drop(to_decider);
            let txns: Vec<Txn> = workers
                .into_iter()
                .flat_map(|h| h.join().expect("worker"))
                .collect();
            let (decided, rolled_back) = decide.join().expect("decider");
            done.store(true, Ordering::Relaxed);
            let scans = scanner.join().expect("scanner");
            (
                txns,
                decided,
                rolled_back,
                vac.join().expect("vacuum"),
                scans,
            )
        });
        assert!(
            db.prepared_transactions().expect("list").is_empty(),
            "round {round}: a prepared transaction was left in doubt"
        );
        let prepared_committed = decided.len();
        txns.extend(decided);
        let read_only = txns.iter().filter(|t| t.read_only).count();
        let writers = txns.len() - read_only;
        eprintln!(
            "round {round}: {writers} read-write ({prepared_committed} of them prepared, \
             {rolled_back} more prepared and rolled back) and {read_only} read-only \
             transactions committed; {passes} vacuum passes; {} Read Committed scans",
            scans.len()
        );
        // Floors: an engine that fails every prepare, or every transaction,
        // has no cycles either.
        assert!(
            writers >= 100 && read_only >= 80 && prepared_committed >= 20 && rolled_back >= 5,
            "round {round}: only {writers} read-write ({prepared_committed} prepared), \
             {rolled_back} rolled back and {read_only} read-only transactions committed"
        );
        let r = db.begin().expect("begin");
        let finals = (0..KEYS)
            .map(|k| (k, parse(r.get(&t, [k]).expect("get"))))
            .collect();
        check_read_committed_scans(round, &scans, &txns, &finals);
        let g = edges(&txns, &finals);
        if let Some(c) = common::find_cycle(&g) {
            let detail: Vec<String> = c.iter().map(|&i| format!("T{i}: {:?}", txns[i])).collect();
            panic!(
                "round {round}: dependency cycle among committed serializable transactions {c:?}:\n{}",
                detail.join("\n")
            );
        }
    }
}

/// Read Committed scans of the whole table, one after another until
/// `done` (at most 100 000): each scan's lists, per key.
fn read_committed_scans(db: &Db, t: &Table, done: &AtomicBool) -> Vec<HashMap<u8, Vec<String>>> {
    let mut out = Vec::new();
    while !done.load(Ordering::Relaxed) && out.len() < 100_000 {
        let tx = db.begin_with(Isolation::ReadCommitted).expect("begin");
        let mut state = HashMap::new();
        for row in tx.scan(t, ..).expect("scan") {
            let (k, v) = row.expect("a Read Committed scan fails only on damage");
            state.insert(k[0], parse(Some(v)));
        }
        tx.commit().expect("a read-only commit");
        out.push(state);
        // A pause between scans, so the scanner takes a share of the CPU
        // and not the workers' (the floors below count their commits).
        thread::sleep(Duration::from_millis(1));
    }
    out
}

/// Each Read Committed scan is one operation, so it must see one state
/// some commit produced: every list a prefix of the key's final list (no
/// rolled-back append, no element lost to vacuum or reordered), and
/// closed under what its writers read — a scan that shows T's append
/// shows at least the lists T read, whose writers committed before T.
fn check_read_committed_scans(
    round: u64,
    scans: &[HashMap<u8, Vec<String>>],
    txns: &[Txn],
    finals: &HashMap<u8, Vec<String>>,
) {
    let by_element: HashMap<&str, &Txn> = txns
        .iter()
        .flat_map(|t| t.appends.iter().map(move |(_, e)| (e.as_str(), t)))
        .collect();
    let empty = Vec::new();
    let shows = |state: &HashMap<u8, Vec<String>>, k: u8, list: &[String]| {
        let seen = state.get(&k).unwrap_or(&empty);
        seen.len() >= list.len() && seen[..list.len()] == *list
    };
    let mut closures = 0;
    for (i, state) in scans.iter().enumerate() {
        for (&k, list) in state {
            assert!(
                shows(finals, k, list),
                "round {round}: Read Committed scan {i} saw key {k} as {list:?}, \
                 not a prefix of its final list {:?}",
                finals.get(&k)
            );
            for e in list {
                let writer = by_element[e.as_str()];
                for (k2, read) in &writer.reads {
                    closures += 1;
                    assert!(
                        shows(state, *k2, read),
                        "round {round}: Read Committed scan {i} shows {e}'s append but \
                         key {k2} as {:?}, short of the {read:?} its writer read",
                        state.get(k2)
                    );
                }
            }
        }
    }
    // Liveness: the scans ran while the lists grew and checked something.
    assert!(
        scans.len() >= 10 && closures > 0,
        "round {round}: {} scans, {closures} closure checks",
        scans.len()
    );
}

// Guards a delete's read of an absent key under real concurrency. Each
// round, two threads start together: T1 deletes a (absent) and inserts b,
// T2 deletes b (absent) and inserts a. If both deletes found nothing,
// each read an absence the other then filled (T1 -rw-> T2 -rw-> T1), so
// both may not commit. The edge of a delete that marks the key's absence
// only after letting the store latch go is lost when the other's insert
// slips in between; at least a quarter of the rounds must commit both
// (those that did not overlap), and every failure must be retryable.
#[test]
fn absent_key_write_skew_never_commits_under_concurrency() {
    let rounds: u32 = std::env::var("STRATA_ABSENT_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6_000);
    let tmp = tempfile::tempdir().expect("tmp");
    let db = Db::open_with(
        tmp.path(),
        strata::Options::default()
            .durability(strata::Durability::Eventual)
            .lock_timeout(Some(Duration::from_secs(2))),
    )
    .expect("open");
    let t = db.table("t").expect("table");
    let start = std::sync::Barrier::new(2);
    // Round r's outcome: whether the delete found its key, if it committed.
    let run = |me: &str, other: &str| -> Vec<Option<bool>> {
        (0..rounds)
            .map(|r| {
                start.wait();
                let mut tx = db.begin().expect("begin");
                let result = (|| {
                    let found = tx.delete(&t, format!("{me}{r}"))?;
                    tx.put(&t, format!("{other}{r}"), "v")?;
                    tx.commit()?;
                    Ok::<_, strata::Error>(found)
                })();
                match result {
                    Ok(found) => Some(found),
                    Err(e) if e.is_retryable() => None,
                    Err(e) => panic!("round {r}: {e}"),
                }
            })
            .collect()
    };
    let (one, two) = thread::scope(|s| {
        let one = s.spawn(|| run("a", "b"));
        let two = s.spawn(|| run("b", "a"));
        (one.join().expect("T1"), two.join().expect("T2"))
    });
    let both = one
        .iter()
        .zip(&two)
        .filter(|(a, b)| a.is_some() && b.is_some())
        .count();
    let skew: Vec<usize> = (0..rounds as usize)
        .filter(|&r| one[r] == Some(false) && two[r] == Some(false))
        .collect();
    eprintln!("{rounds} rounds: both committed in {both}");
    assert!(
        skew.is_empty(),
        "in {} of {rounds} rounds both deletes read an absence the other filled, and both committed (rounds {:?})",
        skew.len(),
        &skew[..skew.len().min(10)]
    );
    assert!(
        both >= rounds as usize / 4,
        "only {both} of {rounds} rounds committed both transactions"
    );
}

/// Two accounts of one customer may not go negative together: a
/// withdrawal of 30 checks that the pair holds at least 30 and debits one
/// of the two accounts. Each customer starts with 20 + 20, enough for one
/// withdrawal; four threads go through the customers together, two of them
/// debiting account a and two account b. Two concurrent withdrawals from
/// different accounts of one customer are write skew. Returns the lowest
/// pair balance at the end.
/// Runs the bank: the lowest customer balance left, after checking that
/// at least a quarter of the 1 200 attempts committed (an engine that
/// aborted everything would keep every balance) and that every failure
/// was retryable.
fn bank(level: Isolation) -> i64 {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("accounts").expect("table");
    let customers = 300u64;
    let mut tx = db.begin().expect("begin");
    for c in 0..customers {
        tx.put(&t, format!("{c}/a"), 20i64.to_le_bytes())
            .expect("put");
        tx.put(&t, format!("{c}/b"), 20i64.to_le_bytes())
            .expect("put");
    }
    tx.commit().expect("commit");
    let bal =
        |v: Option<Vec<u8>>| v.map_or(0, |b| i64::from_le_bytes(b[..8].try_into().expect("8")));
    let commits = std::sync::atomic::AtomicU64::new(0);
    thread::scope(|s| {
        for w in 0..4u64 {
            let (db, t, commits) = (&db, &t, &commits);
            s.spawn(move || {
                let acct = if w % 2 == 0 { "a" } else { "b" };
                for c in 0..customers {
                    let mut tx = db.begin_with(level).expect("begin");
                    let r = (|| {
                        let a = bal(tx.get(t, format!("{c}/a"))?);
                        let b = bal(tx.get(t, format!("{c}/b"))?);
                        thread::yield_now(); // let others check the same pair
                        if a + b >= 30 {
                            let mine = if acct == "a" { a } else { b };
                            tx.put(t, format!("{c}/{acct}"), (mine - 30).to_le_bytes())?;
                        }
                        tx.commit().map(drop)
                    })();
                    match r {
                        Ok(()) => {
                            commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(e) => assert!(e.is_retryable(), "{e}"),
                    }
                }
            });
        }
    });
    let commits = commits.into_inner();
    assert!(
        commits >= customers,
        "{level:?}: only {commits} of {} transfers committed",
        4 * customers
    );
    let r = db.begin().expect("begin");
    (0..customers)
        .map(|c| {
            bal(r.get(&t, format!("{c}/a")).expect("get"))
                + bal(r.get(&t, format!("{c}/b")).expect("get"))
        })
        .min()
        .unwrap_or(0)
}

#[test]
fn bank_rule_holds_under_serializable() {
    for _ in 0..3 {
        let worst = bank(Isolation::Serializable);
        assert!(
            worst >= 0,
            "a customer went negative ({worst}): write skew slipped through"
        );
    }
}

/// The bank test is alive: snapshot isolation lets write skew through.
#[test]
fn bank_rule_breaks_under_snapshot() {
    for _ in 0..10 {
        if bank(Isolation::Snapshot) < 0 {
            return;
        }
    }
    panic!("snapshot isolation never broke the rule: the bank test may be blind");
}

/// One serializable transaction stays open while a million others run:
/// memory stays flat (finished transactions are folded into a summary,
/// versions the long reader cannot see are vacuumed).
/// `cargo test --release --test serializable -- --ignored`
#[test]
#[ignore = "soak: a million transactions"]
fn a_long_reader_keeps_memory_flat() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = Db::open_with(
        tmp.path(),
        strata::Options::default()
            .durability(strata::Durability::Eventual)
            .cache_size(16 << 20),
    )
    .expect("open");
    let t = db.table("t").expect("t");
    let n: u64 = std::env::var("STRATA_SOAK_TXNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let long = db.begin().expect("long reader");
    assert!(long.get(&t, "k0").expect("read").is_none());
    let (mut baseline, mut committed) = (0, 0u64);
    for i in 0..n {
        committed += u64::from(common::soak_step(&db, &t, i));
        if i == n / 10 {
            baseline = common::status_kib("VmRSS");
        }
    }
    let end = common::status_kib("VmRSS");
    eprintln!(
        "{n} transactions beside one open reader: RSS {} MiB after 10%, {} MiB at the end",
        baseline >> 10,
        end >> 10
    );
    // One writer at a time has nobody to conflict with but the reader,
    // which only reads: nearly all commit.
    assert!(committed >= n / 2, "only {committed} of {n} committed");
    assert!(
        end <= baseline + baseline / 5 + (16 << 10),
        "memory grew from {baseline} KiB to {end} KiB"
    );
    assert!(
        long.get(&t, "k0").expect("read").is_none(),
        "the long reader's snapshot held"
    );
    long.commit().expect("the long reader commits");
}

/// A seeded xorshift generator (tests take no entropy from the clock).
struct Rng(u64);

impl Rng {
    /// Seeds through splitmix64's finaliser, so nearby seeds give
    /// unrelated streams.
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn below(&mut self, m: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % m
    }

    /// A short random pause: a few spins, sometimes a yield.
    fn pause(&mut self) {
        for _ in 0..self.below(2_000) {
            std::hint::spin_loop();
        }
        if self.below(4) == 0 {
            thread::yield_now();
        }
    }
}

/// A race hook that pauses a thread at random at the engine's race points
/// (around a serializable transaction's MVCC snapshot, and between a
/// commit's publication and its report to SSI). Without it a test waits
/// for the scheduler to preempt a thread inside a window of a few
/// instructions, which on a small machine it seldom does: a read-only
/// transaction's watch set taken after its snapshot, outside SSI's lock,
/// then lets anomalies through too rarely for the test to notice.
fn race_pauses(seed: u64) -> impl Fn(RacePoint) + Send + Sync + 'static {
    let calls = AtomicU64::new(0);
    move |_| {
        let mut rng = Rng::new(seed ^ calls.fetch_add(1, Ordering::Relaxed));
        match rng.below(4) {
            0 => thread::yield_now(),
            1 => thread::sleep(Duration::from_micros(rng.below(1_000))),
            _ => {}
        }
    }
}

/// A step of a round that other threads wait for. Waiters sleep rather
/// than spin, so on a small machine the threads with work get the cores
/// and a woken waiter runs at once.
#[derive(Default)]
struct Flag {
    up: Mutex<bool>,
    raised: Condvar,
}

impl Flag {
    fn raise(&self) {
        *self.up.lock().expect("flag") = true;
        self.raised.notify_all();
    }

    fn is_up(&self) -> bool {
        *self.up.lock().expect("flag")
    }

    /// Waits until the flag is raised, at most `WAIT_MAX` (then gives up:
    /// the round it belongs to may go differently, which the checks allow).
    fn wait(&self) {
        const WAIT_MAX: Duration = Duration::from_secs(10);
        let up = self.up.lock().expect("flag");
        drop(
            self.raised
                .wait_timeout_while(up, WAIT_MAX, |up| !*up)
                .expect("flag"),
        );
    }
}

/// How one round of the read-only anomaly went.
#[derive(Default)]
struct Round {
    t2_read: Flag,
    t3_done: Flag,
    t2_commits: Flag,
    t1_read: Flag,
    t2_done: Flag,
    t1_done: Flag,
    /// T2 committed, having read (0, 0): it charged the penalty.
    t2_penalty: AtomicBool,
    /// T1 saw (0, 20) at its reads.
    t1_saw: AtomicBool,
    /// ... and committed.
    t1_committed: AtomicBool,
}

impl Round {
    fn over(&self) -> bool {
        [&self.t1_done, &self.t2_done, &self.t3_done]
            .iter()
            .all(|f| f.is_up())
    }
}

fn int(v: Option<Vec<u8>>) -> i64 {
    v.map_or(0, |b| {
        String::from_utf8(b)
            .expect("utf8")
            .parse()
            .expect("an integer")
    })
}

/// T2 of round `r`: reads x and y, writes x (minus 10, minus a penalty of
/// 1 if x + y would go negative), and commits either once T3 has
/// committed, racing T1's begin, or (`late`) once T1 has read.
fn fekete_t2(
    db: &Db,
    t: &Table,
    key: impl Fn(&str) -> String,
    round: &Round,
    late: bool,
    rng: &mut Rng,
) {
    let r = (|| {
        let mut t2 = db.begin()?;
        let (x, y) = (int(t2.get(t, key("x"))?), int(t2.get(t, key("y"))?));
        round.t2_read.raise();
        let penalty = i64::from(x + y - 10 < 0);
        t2.put(t, key("x"), (x - 10 - penalty).to_string())?;
        if late {
            round.t1_read.wait();
        } else {
            round.t3_done.wait();
            round.t2_commits.raise();
            thread::sleep(Duration::from_micros(rng.below(100)));
        }
        t2.commit()?;
        Ok::<_, strata::Error>(penalty == 1)
    })();
    match r {
        Ok(penalty) => round.t2_penalty.store(penalty, Ordering::Release),
        Err(e) => assert!(e.is_retryable(), "T2: {e}"),
    }
    round.t2_read.raise();
    round.t2_commits.raise();
    round.t2_done.raise();
}

/// T3 of round `r`: adds 20 to y and commits, after T2 has read y.
fn fekete_t3(db: &Db, t: &Table, key: impl Fn(&str) -> String, round: &Round, rng: &mut Rng) {
    round.t2_read.wait();
    rng.pause();
    let r = (|| {
        let mut t3 = db.begin()?;
        let y = int(t3.get(t, key("y"))?);
        t3.put(t, key("y"), (y + 20).to_string())?;
        t3.commit().map(drop)
    })();
    if let Err(e) = r {
        assert!(e.is_retryable(), "T3: {e}");
    }
    round.t3_done.raise();
}

/// T1 of round `r`: once T3 has committed, begins one read-only
/// transaction as T2 commits; or (`late`) begins read-only transactions
/// while T3 commits until one sees T3's y (so its snapshot is taken close
/// behind T3's commit). Then reads y and x, and commits.
fn fekete_t1(db: &Db, t: &Table, key: impl Fn(&str) -> String, round: &Round, late: bool) {
    const TRIES_MAX: u32 = 100_000;
    let start = Instant::now();
    if !late {
        round.t2_commits.wait();
    }
    let r = (|| {
        for tries in 0..TRIES_MAX {
            let t1 = db.begin_read()?;
            let y = int(t1.get(t, key("y"))?);
            let give_up = tries % 64 == 63 && start.elapsed() > Duration::from_secs(10);
            if y != 20 && !give_up {
                t1.commit()?;
                continue;
            }
            let x = int(t1.get(t, key("x"))?);
            round.t1_saw.store((x, y) == (0, 20), Ordering::Release);
            round.t1_read.raise();
            if late {
                round.t2_done.wait();
            }
            t1.commit()?;
            return Ok(true);
        }
        Ok::<_, strata::Error>(false)
    })();
    match r {
        Ok(committed) => round.t1_committed.store(committed, Ordering::Release),
        Err(e) => assert!(e.is_retryable(), "T1: {e}"),
    }
    round.t1_read.raise();
    round.t1_done.raise();
}

/// Rounds of the read-only anomaly (Fekete, O'Neil, O'Neil 2004; see
/// tests/isolation.rs) run by `groups` trios of threads at once, each
/// trio on its own keys, with seeded random pauses: T2 reads x and y and
/// writes x; T3 adds 20 to y and commits; read-only T1 reads y and x.
/// T1 begins as T2 commits (`early`), or else while T3 commits (until it
/// sees T3's y), and T2 commits after T1's reads. Returns the rounds in
/// which T1 saw (0, 20) while T2 read (0, 0), and those in which all
/// three then committed: the anomaly.
fn fekete_rounds(seed: u64, groups: u64, rounds: usize, early: bool) -> (usize, usize) {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = Db::open_with(
        tmp.path(),
        strata::Options::default()
            .durability(strata::Durability::Eventual)
            .race_hook(race_pauses(seed)),
    )
    .expect("open");
    let t = db.table("fekete").expect("table");
    let key = |g: u64, r: usize, k: &str| format!("{g}/{r}/{k}");
    let mut init = db.begin().expect("begin");
    for g in 0..groups {
        for r in 0..rounds {
            for k in ["x", "y"] {
                init.put(&t, key(g, r, k), "0").expect("put");
            }
        }
    }
    init.commit().expect("init");
    let all: Vec<Vec<Round>> = (0..groups)
        .map(|_| (0..rounds).map(|_| Round::default()).collect())
        .collect();
    thread::scope(|s| {
        for (g, rs) in (0..groups).zip(&all) {
            let (db, t) = (&db, &t);
            s.spawn(move || {
                let mut rng = Rng::new(seed ^ (g << 40) ^ 2);
                for (r, round) in rs.iter().enumerate() {
                    if r > 0 {
                        for f in [&rs[r - 1].t1_done, &rs[r - 1].t3_done] {
                            f.wait();
                        }
                    }
                    fekete_t2(db, t, |k| key(g, r, k), round, !early, &mut rng);
                }
            });
            s.spawn(move || {
                let mut rng = Rng::new(seed ^ (g << 40) ^ 3);
                for (r, round) in rs.iter().enumerate() {
                    fekete_t3(db, t, |k| key(g, r, k), round, &mut rng);
                }
            });
            s.spawn(move || {
                for (r, round) in rs.iter().enumerate() {
                    round.t2_read.wait();
                    fekete_t1(db, t, |k| key(g, r, k), round, !early);
                }
            });
        }
    });
    let rounds = all.iter().flatten();
    let dangerous = rounds
        .clone()
        .filter(|r| r.t1_saw.load(Ordering::Acquire))
        .count();
    let anomalies = rounds
        .filter(|r| r.over())
        .filter(|r| {
            r.t1_saw.load(Ordering::Acquire)
                && r.t1_committed.load(Ordering::Acquire)
                && r.t2_penalty.load(Ordering::Acquire)
        })
        .count();
    (dangerous, anomalies)
}

// Guards against SSI judging "committed before T1's snapshot" on its own
// counter while MVCC visibility decides what T1 sees (a commit published
// but not yet counted), and against a read-only T1 building the set of
// writers it watches after its snapshot (a pivot committing in between
// went unwatched): in both, the read-only anomaly committed.
#[test]
fn read_only_anomaly_never_commits_under_concurrency() {
    let rounds: usize = std::env::var("STRATA_FEKETE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    // T1 begins as T3 commits, three trios at once; then T1 begins as T2
    // commits, one trio alone (a read-only transaction's snapshot becomes
    // safe only once every writer it watches has finished, and other
    // trios' writers would keep it watching).
    for (groups, early) in [(3, false), (1, true)] {
        let (dangerous, anomalies) = fekete_rounds(0x5EED, groups, rounds, early);
        eprintln!("{dangerous} dangerous rounds, {anomalies} anomalies");
        assert_eq!(anomalies, 0, "read-only anomalies committed");
        assert!(
            dangerous >= rounds / 4,
            "only {dangerous} of {} rounds set the anomaly up",
            groups as usize * rounds
        );
    }
}
