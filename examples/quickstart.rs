//! Opens a database in a temporary directory, writes and reads in
//! transactions from several threads, reopens it, and prints what it did.
//!
//! Run: `cargo run --release --example quickstart`

use std::time::Instant;

use strata::{Db, Error, Isolation};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("strata-quickstart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    println!("database directory: {}", dir.display());

    let db = Db::open(&dir)?;
    let accounts = db.table("accounts")?;

    // One transaction creates 100 accounts with 1000 each.
    let mut tx = db.begin()?;
    for i in 0..100 {
        tx.put(&accounts, format!("acct-{i:03}"), 1000u64.to_le_bytes())?;
    }
    let info = tx.commit()?;
    println!(
        "created 100 accounts in transaction {} (commit LSN {})",
        info.xid, info.lsn
    );

    // Four threads move money between random accounts; conflicting
    // transactions fail with a retryable error and are retried.
    let start = Instant::now();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (db, accounts) = (db.clone(), accounts.clone());
            std::thread::spawn(move || -> Result<(u64, u64), Error> {
                let (mut done, mut retries) = (0, 0);
                let mut seed = t + 1;
                while done < 250 {
                    seed = seed
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1442695040888963407);
                    let (a, b) = ((seed >> 33) % 100, (seed >> 13) % 100);
                    if a == b {
                        continue;
                    }
                    match transfer(&db, &accounts, a, b, 1 + seed % 10) {
                        Ok(()) => done += 1,
                        Err(e) if e.is_retryable() => retries += 1,
                        Err(e) => return Err(e),
                    }
                }
                Ok((done, retries))
            })
        })
        .collect();
    let (mut done, mut retries) = (0, 0);
    for t in threads {
        let (d, r) = t.join().expect("worker thread panicked")?;
        done += d;
        retries += r;
    }
    println!(
        "4 threads committed {done} durable transfers in {:.2?} ({retries} conflicts retried)",
        start.elapsed()
    );

    // A snapshot reader sees a consistent total.
    let total = |db: &Db| -> Result<u64, Error> {
        let tx = db.begin_with(Isolation::Snapshot)?;
        let mut sum = 0;
        for row in tx.scan(&accounts, ..)? {
            let (_, v) = row?;
            sum += u64::from_le_bytes(v[..8].try_into().expect("8-byte balance"));
        }
        Ok(sum)
    };
    println!("total across accounts: {} (expected 100000)", total(&db)?);

    let stats = db.vacuum()?;
    println!("vacuum removed {} old versions", stats.versions_removed);
    drop(db);

    // Everything is still there after reopening.
    let db = Db::open(&dir)?;
    let accounts = db.table("accounts")?;
    let tx = db.begin()?;
    let first = tx
        .get(&accounts, "acct-000")?
        .map(|v| u64::from_le_bytes(v[..8].try_into().expect("8 bytes")));
    println!(
        "after reopen: acct-000 = {first:?}, {} accounts",
        tx.scan(&accounts, ..)?.count()
    );
    drop(tx);
    let sum = {
        let tx = db.begin()?;
        tx.scan(&accounts, ..)?
            .map(|r| r.map(|(_, v)| u64::from_le_bytes(v[..8].try_into().expect("8"))))
            .sum::<Result<u64, _>>()?
    };
    assert_eq!(sum, 100_000, "money was created or destroyed");
    drop(db);
    std::fs::remove_dir_all(&dir)?;
    println!("ok");
    Ok(())
}

fn transfer(
    db: &Db,
    accounts: &strata::Table,
    from: u64,
    to: u64,
    amount: u64,
) -> Result<(), Error> {
    let mut tx = db.begin()?;
    let (ka, kb) = (format!("acct-{from:03}"), format!("acct-{to:03}"));
    let balance = |v: Option<Vec<u8>>| {
        v.map_or(0, |v| {
            u64::from_le_bytes(v[..8].try_into().expect("8 bytes"))
        })
    };
    let a = balance(tx.get(accounts, &ka)?);
    let b = balance(tx.get(accounts, &kb)?);
    if a < amount {
        return Ok(());
    }
    tx.put(accounts, &ka, (a - amount).to_le_bytes())?;
    tx.put(accounts, &kb, (b + amount).to_le_bytes())?;
    tx.commit()?;
    Ok(())
}
