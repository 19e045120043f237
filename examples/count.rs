//! Counts the rows of a table two ways — `Transaction::len`, which judges
//! each row from its version headers, and `scan(..).count()`, which copies
//! every key and value out — and prints the time each takes (the best of
//! five runs of each, in turns, over a warm cache).
//!
//! Run: `cargo run --release --example count [ROWS] [VALUE_BYTES]`
//! (200 000 rows of 100 bytes by default).

use std::time::{Duration, Instant};

use strata::Db;

/// The best of five runs of each, taken in turns, so that what else the
/// machine does weighs on both alike.
fn best(
    mut a: impl FnMut() -> strata::Result<u64>,
    mut b: impl FnMut() -> strata::Result<u64>,
) -> strata::Result<(u64, Duration, Duration)> {
    let (mut ta, mut tb) = (Duration::MAX, Duration::MAX);
    let mut n = 0;
    for _ in 0..5 {
        let t = Instant::now();
        n = a()?;
        ta = ta.min(t.elapsed());
        let t = Instant::now();
        assert_eq!(b()?, n, "the two counts differ");
        tb = tb.min(t.elapsed());
    }
    Ok((n, ta, tb))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let rows: u64 = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let vlen: usize = args.next().map_or(Ok(100), |a| a.parse())?;
    let dir = std::env::temp_dir().join(format!("strata-count-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = Db::open(&dir)?;
    let t = db.table("t")?;
    let value = vec![b'v'; vlen];
    for chunk in 0..rows.div_ceil(10_000) {
        let mut tx = db.begin()?;
        for i in chunk * 10_000..rows.min((chunk + 1) * 10_000) {
            tx.put(&t, format!("key-{i:010}"), &value)?;
        }
        tx.commit()?;
    }
    let tx = db.begin()?;
    let (n, len, scan) = best(|| tx.len(&t), || Ok(tx.scan(&t, ..)?.count() as u64))?;
    assert_eq!(n, rows);
    println!("{rows} rows of {vlen} bytes: len {len:?}, scan(..).count() {scan:?}");
    drop(tx);
    drop(db);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
