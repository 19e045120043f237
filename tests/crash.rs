//! Kill -9 in a loop: a child process commits transactions and reports
//! each acknowledged commit on stdout; the parent kills it at a random
//! moment, reopens the database, and checks that every acknowledged commit
//! is there and that the data equals a model with no partial transaction.
//!
//! Set `STRATA_CRASH_ROUNDS` to run more rounds (default 6).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata::{Db, Durability, Isolation, Options};

const KEYS: u64 = 200;

fn durability(name: &str) -> Durability {
    if name == "eventual" {
        Durability::Eventual
    } else {
        Durability::Immediate
    }
}

fn options(durability: Durability) -> Options {
    Options::default()
        .durability(durability)
        .cache_size(1 << 20)
        .checkpoint_interval(Duration::from_millis(150))
        .checkpoint_wal_bytes(1 << 20)
        .vacuum_threshold(300)
}

fn big(i: u64) -> Vec<u8> {
    (0..20_000u64).map(|j| ((i * 31 + j) % 251) as u8).collect()
}

/// Transaction `i` of the model workload, as (key, Some(value) | None for delete).
fn txn(i: u64) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut ops = vec![(
        format!("k{:03}", i % KEYS).into_bytes(),
        Some(format!("v{i}").into_bytes()),
    )];
    if i.is_multiple_of(3) {
        ops.push((format!("k{:03}", (i * 7) % KEYS).into_bytes(), None));
    }
    if i.is_multiple_of(50) {
        ops.push((b"big".to_vec(), Some(big(i))));
    }
    ops.push((b"counter".to_vec(), Some(i.to_string().into_bytes())));
    ops
}

fn model(upto: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = BTreeMap::new();
    for i in 1..=upto {
        for (k, v) in txn(i) {
            match v {
                Some(v) => m.insert(k, v),
                None => m.remove(&k),
            };
        }
    }
    m
}

fn counter(db: &Db) -> u64 {
    let t = db.table("model").expect("table");
    let tx = db.begin().expect("begin");
    tx.get(&t, b"counter").expect("get").map_or(0, |v| {
        String::from_utf8(v).expect("utf8").parse().expect("int")
    })
}

/// The child: commit model transactions forever (plus noise from other
/// threads), printing each acknowledged one.
fn child(dir: &Path) {
    let d = durability(&std::env::var("STRATA_CRASH_DURABILITY").unwrap_or_default());
    let db = Db::open_with(dir, options(d)).expect("child open");
    for n in 0..2u64 {
        let db = db.clone();
        std::thread::spawn(move || {
            let t = db.table("noise").expect("noise");
            for i in 0u64.. {
                let mut tx = db.begin_with(Isolation::ReadCommitted).expect("begin");
                tx.put(
                    &t,
                    format!("n{n}-{}", i % 500),
                    vec![n as u8; (i % 3000) as usize],
                )
                .expect("noise put");
                tx.commit().expect("noise commit");
            }
        });
    }
    let t = db.table("model").expect("table");
    let start = counter(&db) + 1;
    for i in start.. {
        let mut tx = db.begin().expect("begin");
        for (k, v) in txn(i) {
            match v {
                Some(v) => tx.put(&t, &k, &v).expect("put"),
                None => {
                    tx.delete(&t, &k).expect("delete");
                }
            }
        }
        tx.commit().expect("commit");
        println!("ack {i}");
    }
}

#[test]
fn kill_nine_loses_no_acknowledged_commit() {
    if let Ok(dir) = std::env::var("STRATA_CRASH_CHILD") {
        child(Path::new(&dir));
        return;
    }
    let rounds: u64 = std::env::var("STRATA_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    kill_loop(
        "kill_nine_loses_no_acknowledged_commit",
        "immediate",
        rounds,
    );
}

/// A process crash (not a power loss) keeps what `Eventual` wrote to the
/// OS, so no acknowledged commit may be lost here either.
#[test]
fn kill_nine_with_eventual_durability_loses_nothing() {
    if let Ok(dir) = std::env::var("STRATA_CRASH_CHILD") {
        child(Path::new(&dir));
        return;
    }
    kill_loop(
        "kill_nine_with_eventual_durability_loses_nothing",
        "eventual",
        3,
    );
}

fn kill_loop(test_name: &str, mode: &str, rounds: u64) {
    let tmp = tempfile::tempdir().expect("tmp");
    let exe = std::env::current_exe().expect("exe");
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_nanos() as u64
        | 1;
    let mut total_acked = 0;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
            .env("STRATA_CRASH_CHILD", tmp.path())
            .env("STRATA_CRASH_DURABILITY", mode)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let acked = Arc::new(Mutex::new(0u64));
        let out = child.stdout.take().expect("stdout");
        let reader = {
            let acked = acked.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Some(n) = line.strip_prefix("ack ") {
                        *acked.lock().expect("lock") = n.trim().parse().expect("ack number");
                    }
                }
            })
        };
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(300 + seed % 700));
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        reader.join().expect("reader");
        let acked = *acked.lock().expect("lock");
        let db =
            Db::open_with(tmp.path(), options(durability(mode))).expect("reopen after kill -9");
        let c = counter(&db);
        assert!(
            c >= acked,
            "round {round}: acknowledged commit {acked} lost (recovered up to {c})"
        );
        let t = db.table("model").expect("table");
        let tx = db.begin().expect("begin");
        let got: BTreeMap<Vec<u8>, Vec<u8>> = tx
            .scan(&t, ..)
            .expect("scan")
            .map(|r| r.expect("row"))
            .collect();
        let want = model(c);
        assert_eq!(
            got.len(),
            want.len(),
            "round {round}: row count differs from the model at {c}"
        );
        assert!(
            got == want,
            "round {round}: data differs from the model at transaction {c}"
        );
        db.check_integrity()
            .unwrap_or_else(|e| panic!("round {round}: integrity check after recovery: {e}"));
        eprintln!("round {round}: {acked} acknowledged, {c} recovered");
        total_acked = acked;
        drop(tx);
        if round % 2 == 1 {
            db.vacuum().expect("vacuum after recovery");
        }
    }
    assert!(
        total_acked > 10,
        "the child committed too little to test anything"
    );
}
