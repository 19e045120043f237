//! `Db::transaction`: begin, run the closure, commit, and retry what
//! `is_retryable` says may succeed on a second try, a bounded number of
//! times; never a commit whose outcome is unknown.

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;

use strata::fault::{FaultFs, FaultKind};
use strata::{Db, Error, Options};

#[test]
fn a_conflict_is_retried_and_the_value_returned() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = Db::open(tmp.path()).expect("open");
    let t = db.table("t").expect("table");
    let calls = Cell::new(0);
    let got = db
        .transaction(|tx| {
            calls.set(calls.get() + 1);
            let seen = tx.get(&t, "k")?;
            if calls.get() == 1 {
                // Another transaction updates the row after our snapshot:
                // our write must fail (first updater wins), then retry.
                let mut other = db.begin()?;
                other.put(&t, "k", "other")?;
                other.commit()?;
            }
            tx.put(&t, "k", "mine")?;
            Ok(seen)
        })
        .expect("succeeds on the second attempt");
    assert_eq!(calls.get(), 2);
    assert_eq!(
        got.as_deref(),
        Some(&b"other"[..]),
        "the retry saw the update"
    );
    let tx = db.begin().expect("begin");
    assert_eq!(tx.get(&t, "k").expect("get").as_deref(), Some(&b"mine"[..]));
}

#[test]
fn concurrent_increments_all_land() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = Db::open(tmp.path()).expect("open");
    let t = db.table("t").expect("table");
    let increment = |db: &Db, t: &strata::Table| {
        db.transaction(|tx| {
            let n = tx
                .get(t, "n")?
                .map_or(0, |v| v[0] as u64 + ((v[1] as u64) << 8));
            tx.put(t, "n", [(n + 1) as u8, ((n + 1) >> 8) as u8])?;
            Ok(n + 1)
        })
    };
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..25 {
                    increment(&db, &t).expect("increment");
                }
            });
        }
    });
    assert_eq!(increment(&db, &t).expect("last"), 101);
}

#[test]
fn retries_are_bounded() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = Db::open(tmp.path()).expect("open");
    let calls = Cell::new(0u32);
    let err = db
        .transaction(|_| -> strata::Result<()> {
            calls.set(calls.get() + 1);
            Err(Error::LockTimeout)
        })
        .expect_err("never succeeds");
    assert_eq!(err, Error::LockTimeout);
    assert_eq!(calls.get(), strata::limits::TRANSACTION_ATTEMPTS_MAX);
}

#[test]
fn other_errors_roll_back_at_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = Db::open(tmp.path()).expect("open");
    let t = db.table("t").expect("table");
    let calls = Cell::new(0);
    let err = db
        .transaction(|tx| {
            calls.set(calls.get() + 1);
            tx.put(&t, "a", "1")?;
            tx.put(&t, vec![0u8; strata::limits::KEY_MAX + 1], "x")?;
            Ok(())
        })
        .expect_err("key too large");
    assert!(matches!(err, Error::KeyTooLarge { .. }), "{err:?}");
    assert_eq!(calls.get(), 1);
    let tx = db.begin().expect("begin");
    assert_eq!(tx.get(&t, "a").expect("get"), None, "rolled back");
}

/// Guards against retrying a commit that may have committed: a second
/// attempt would apply the transaction twice.
#[test]
fn a_commit_with_an_unknown_outcome_is_not_retried() {
    let fs = FaultFs::new();
    let opts = Options::default().background(false);
    let db = Db::open_vfs(Arc::new(fs.clone()), Path::new("/db"), opts).expect("open");
    let t = db.table("t").expect("table");
    let calls = Cell::new(0);
    let err = db
        .transaction(|tx| {
            calls.set(calls.get() + 1);
            tx.put(&t, "k", "v")?;
            // The commit's log write fails, and everything after it.
            fs.fail_at(fs.ops() + 1, FaultKind::Io, true);
            Ok(())
        })
        .expect_err("the log write fails");
    assert!(matches!(err, Error::CommitOutcomeUnknown { .. }), "{err:?}");
    assert_eq!(calls.get(), 1, "an unknown outcome was retried");
}
