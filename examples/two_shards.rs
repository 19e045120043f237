//! Moves money between accounts that live in two databases, atomically,
//! with the two-phase-commit coordinator; then kills the coordinator
//! (a real `kill -9` of a child process) between the phases and shows
//! the in-doubt transactions and how a restart finishes them.
//!
//! `cargo run --release --example two_shards [DIR]`

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use strata::twopc::{Coordinator, Outcome, Timing};
use strata::RealFs;
use strata::{Db, Isolation, Options, Transaction};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn shards(dir: &Path) -> Result<Vec<Db>> {
    let opts = || Options::default().lock_timeout(Some(Duration::from_millis(300)));
    Ok(vec![
        Db::open_with(dir.join("shard-a"), opts())?,
        Db::open_with(dir.join("shard-b"), opts())?,
    ])
}

fn coordinator(dir: &Path, shards: &[Db]) -> Result<Coordinator<Db>> {
    Ok(Coordinator::open(
        Arc::new(RealFs),
        &dir.join("coordinator.log"),
        "bank",
        shards.to_vec(),
        Timing::default(),
    )?)
}

fn balance(db: &Db, who: &str) -> Result<i64> {
    let t = db.table("accounts")?;
    let tx = db.begin_with(Isolation::Snapshot)?;
    Ok(tx
        .get(&t, who)?
        .map_or(Ok(0), |v| String::from_utf8_lossy(&v).parse())?)
}

/// The work of a transfer: one transaction per shard.
fn transfer(shards: &[Db], amount: i64) -> Result<Vec<Transaction>> {
    let mut work = Vec::new();
    for (db, who, delta) in [(&shards[0], "alice", -amount), (&shards[1], "bob", amount)] {
        let t = db.table("accounts")?;
        let mut tx = db.begin()?;
        let now: i64 = tx
            .get(&t, who)?
            .map_or(Ok(0), |v| String::from_utf8_lossy(&v).parse())?;
        tx.put(&t, who, (now + delta).to_string())?;
        work.push(tx);
    }
    Ok(work)
}

fn show(shards: &[Db], when: &str) -> Result<()> {
    println!(
        "{when}: alice {} (shard a), bob {} (shard b)",
        balance(&shards[0], "alice")?,
        balance(&shards[1], "bob")?
    );
    Ok(())
}

/// The child: prepares a transfer everywhere, logs the decision, and
/// stops before telling anyone. The parent kills it there.
fn child(dir: &Path) -> Result<()> {
    let shards = shards(dir)?;
    let mut c = coordinator(dir, &shards)?;
    let gid = c.begin(transfer(&shards, 25)?)?;
    // Step until both shards have voted and the decision is logged: the
    // first persist (PREPARED), two prepares, the persist of COMMITTED.
    for _ in 0..4 {
        c.step()?;
    }
    println!("child: {gid} prepared on both shards, COMMITTED logged, nobody told yet");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn main() -> Result<()> {
    if let Some(dir) = std::env::var_os("TWO_SHARDS_CHILD") {
        return child(Path::new(&dir));
    }
    let tmp;
    let dir: PathBuf = match std::env::args().nth(1) {
        Some(d) => d.into(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    {
        let shards = shards(&dir)?;
        for (db, who) in [(&shards[0], "alice"), (&shards[1], "bob")] {
            let t = db.table("accounts")?;
            let mut tx = db.begin()?;
            tx.put(&t, who, "100")?;
            tx.commit()?;
        }
        show(&shards, "start")?;
        let mut c = coordinator(&dir, &shards)?;
        let outcome = c.execute(transfer(&shards, 10)?)?;
        println!("transfer of 10: {outcome:?}");
        show(&shards, "after it")?;
        // A transfer that shard b refuses: someone else updated bob after
        // the transfer's snapshot, so its write fails (first updater wins)
        // and its prepare votes no. Both shards roll back.
        let t = shards[1].table("accounts")?;
        let mut late = shards[1].begin()?;
        late.get(&t, "bob")?;
        let mut other = shards[1].begin()?;
        other.put(&t, "bob", "110")?;
        other.commit()?;
        let refused = late.put(&t, "bob", "1000");
        println!("shard b's part of the next transfer: {refused:?}");
        let mut work = transfer(&shards, 1_000)?;
        work[1] = late;
        let outcome = c.execute(work)?;
        assert_eq!(outcome, Outcome::Aborted);
        println!("a transfer with a no vote: {outcome:?}");
        show(&shards, "after it")?;
    }

    println!("\nnow a coordinator that is killed (SIGKILL) between the phases:");
    let mut child = Command::new(std::env::current_exe()?)
        .env("TWO_SHARDS_CHILD", &dir)
        .stdout(Stdio::piped())
        .spawn()?;
    let out = child.stdout.take().ok_or("no stdout")?;
    for line in BufReader::new(out).lines() {
        let line = line?;
        println!("{line}");
        if line.starts_with("child:") {
            break;
        }
    }
    child.kill()?;
    child.wait()?;
    println!("killed the coordinator");

    let shards = shards(&dir)?;
    for (name, db) in ["a", "b"].iter().zip(&shards) {
        for p in db.prepared_transactions()? {
            println!("shard {name}: in doubt: {} (xid {})", p.gid, p.xid.0);
        }
    }
    show(&shards, "while in doubt (the transfer is invisible)")?;
    let t = shards[0].table("accounts")?;
    let mut w = shards[0].begin()?;
    match w.put(&t, "alice", "0") {
        Err(e) => {
            println!("a writer to alice meanwhile: {e} (the in-doubt transfer holds the row)")
        }
        Ok(()) => println!("unexpected: the row was free"),
    }
    drop(w);
    let _c = coordinator(&dir, &shards)?;
    println!("coordinator restarted: it found COMMITTED in its log and finished the transfer");
    for (name, db) in ["a", "b"].iter().zip(&shards) {
        println!(
            "shard {name}: {} in doubt",
            db.prepared_transactions()?.len()
        );
    }
    show(&shards, "end")?;
    Ok(())
}
