//! A database several times larger than the page cache: every value reads
//! back, and memory stays bounded.
//!
//! The default run writes 64 MiB through an 8 MiB cache; the full
//! figure (300 MiB) runs with `cargo test --release --test large -- --ignored`.

use std::time::{Duration, Instant};

use strata::{Db, Options};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn value(i: u64) -> Vec<u8> {
    let mut v = vec![0u8; 1024];
    for (j, b) in v.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761).wrapping_add(j as u64) % 251) as u8;
    }
    v
}

fn run(mib: u64) {
    let tmp = tempfile::tempdir().expect("tmp");
    let opts = Options::default()
        .cache_size(8 << 20)
        .checkpoint_interval(Duration::from_secs(3600));
    let db = Db::open_with(tmp.path(), opts).expect("open");
    let t = db.table("big").expect("table");
    let rows = mib * 1024;
    let start = Instant::now();
    for batch in 0..rows / 1000 + 1 {
        let mut tx = db.begin().expect("begin");
        for i in batch * 1000..((batch + 1) * 1000).min(rows) {
            tx.put(&t, format!("row{i:09}"), value(i)).expect("put");
        }
        tx.commit().expect("commit");
    }
    let wrote = start.elapsed();
    let start = Instant::now();
    let tx = db.begin().expect("begin");
    let mut n = 0u64;
    for row in tx.scan(&t, ..).expect("scan") {
        let (k, v) = row.expect("row");
        assert_eq!(k, format!("row{n:09}").into_bytes());
        assert!(v == value(n), "row {n} read back wrong");
        n += 1;
    }
    assert_eq!(n, rows);
    let mut x = 12345u64;
    for _ in 0..5000 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let i = (x >> 33) % rows;
        assert!(
            tx.get(&t, format!("row{i:09}")).expect("get") == Some(value(i)),
            "row {i}"
        );
    }
    let read = start.elapsed();
    let file = std::fs::metadata(tmp.path().join("data.strata"))
        .expect("meta")
        .len();
    eprintln!(
        "large: {mib} MiB of values ({rows} rows) through an 8 MiB cache: data file {} MiB, write {:.1}s, read {:.1}s, peak RSS {} MiB",
        file >> 20,
        wrote.as_secs_f64(),
        read.as_secs_f64(),
        peak_rss_kib() >> 10
    );
    assert!(
        file > 4 * (8 << 20),
        "the database must be several times the cache"
    );
}

#[test]
fn database_larger_than_cache_reads_back() {
    run(64);
}

#[test]
#[ignore = "300 MiB soak; run with --ignored"]
fn three_hundred_mib_through_eight_mib_cache() {
    run(300);
}
