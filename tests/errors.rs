//! What errors say and carry: serialization failures name their cause
//! (a concurrent update, or read/write dependencies) and the table and key
//! where known; errors are `Clone` and comparable.

use std::error::Error as _;

use strata::{Db, Error, Isolation};

fn setup() -> (tempfile::TempDir, Db, strata::Table) {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = Db::open(tmp.path()).expect("open");
    let t = db.table("accounts").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "alice", "1").expect("put");
    tx.put(&t, "bob", "1").expect("put");
    tx.commit().expect("commit");
    (tmp, db, t)
}

#[test]
fn a_concurrent_update_says_so_and_names_the_row() {
    let (_tmp, db, t) = setup();
    for level in [Isolation::Snapshot, Isolation::Serializable] {
        let mut t1 = db.begin_with(level).expect("begin");
        let mut t2 = db.begin_with(level).expect("begin");
        t2.put(&t, "alice", "2").expect("put");
        t2.commit().expect("commit");
        let err = t1.put(&t, "alice", "3").expect_err("first updater wins");
        assert!(err.is_retryable(), "{err}");
        assert!(matches!(err, Error::SerializationFailure { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("could not serialize access due to concurrent update"),
            "{text}"
        );
        assert!(
            text.contains("accounts") && text.contains("alice"),
            "{text}"
        );
        // The doomed transaction repeats the same error.
        assert_eq!(t1.commit().expect_err("doomed").to_string(), text);
    }
}

/// Guards against write skew reading "due to a concurrent update", which
/// sends the reader looking for a row two transactions both wrote.
#[test]
fn write_skew_says_read_write_dependencies() {
    let (_tmp, db, t) = setup();
    let mut t1 = db.begin().expect("begin");
    let mut t2 = db.begin().expect("begin");
    for tx in [&t1, &t2] {
        tx.get(&t, "alice").expect("get");
        tx.get(&t, "bob").expect("get");
    }
    t1.put(&t, "alice", "0").expect("put");
    let second = t2.put(&t, "bob", "0");
    let first = t1.commit();
    let err = match (first, second) {
        (Err(e), _) | (Ok(_), Err(e)) => e,
        (Ok(_), Ok(())) => t2.commit().expect_err("write skew"),
    };
    assert!(err.is_retryable(), "{err}");
    assert!(matches!(err, Error::SerializationFailure { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(
            "could not serialize access due to read/write dependencies among transactions"
        ),
        "{text}"
    );
    assert!(!text.contains("concurrent update"), "{text}");
}

#[test]
fn errors_clone_and_compare() {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("plain");
    std::fs::write(&file, "x").expect("write");
    let err = Db::open(file.join("db")).expect_err("under a file");
    let copy = err.clone();
    assert_eq!(copy, err);
    assert_eq!(copy.to_string(), err.to_string());
    let kind = |e: &Error| {
        e.source()
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .map(std::io::Error::kind)
    };
    assert!(kind(&copy).is_some());
    assert_eq!(kind(&copy), kind(&err));
    assert_eq!(Error::Deadlock, Error::Deadlock.clone());
    assert_ne!(Error::Deadlock, Error::LockTimeout);
    assert_ne!(
        err,
        Error::Poisoned {
            cause: String::new()
        }
    );
}
