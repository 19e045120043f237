//! Writes that do not wait (`Transaction::set_nowait`): a row or table
//! another transaction holds — running or prepared — fails the write at
//! once with `LockNotAvailable`, where a waiting write would block.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use strata::{Db, Error, Isolation, Options, Table};

fn open(dir: &std::path::Path) -> Db {
    // No lock timeout: a write that waits would wait for good.
    Db::open_with(dir, Options::default().lock_timeout(None)).expect("open")
}

/// Runs `f` on another thread; its result, or a failure if it has not
/// returned in 20 s (it is waiting).
fn returns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the write waited instead of failing at once")
}

fn nowait_write(db: &Db, t: &Table, delete: bool) -> Result<(), Error> {
    let (db, t) = (db.clone(), t.clone());
    returns(move || {
        let mut tx = db.begin_with(Isolation::Snapshot).expect("begin");
        tx.set_nowait(true);
        let r = if delete {
            tx.delete(&t, b"k").map(|_| ())
        } else {
            tx.put(&t, b"k", b"mine")
        };
        if r.is_ok() {
            tx.commit().map(|_| ())
        } else {
            r
        }
    })
}

fn held(r: Result<(), Error>, what: &str) {
    match r {
        Err(Error::LockNotAvailable { table, key }) => {
            assert_eq!(
                (table.as_deref(), key.as_deref()),
                (Some("t"), Some(&b"k"[..])),
                "{what}"
            );
        }
        other => panic!("{what}: {other:?}"),
    }
}

#[test]
fn a_write_that_does_not_wait_fails_on_a_row_another_transaction_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    let t = common::create(&db, "t");
    let mut holder = db.begin().expect("begin");
    holder.put(&t, b"k", b"theirs").expect("put");
    held(
        nowait_write(&db, &t, false),
        "a put of a row a running transaction wrote",
    );
    held(nowait_write(&db, &t, true), "a delete of it");
    holder.prepare("g").expect("prepare");
    held(
        nowait_write(&db, &t, false),
        "a put of a row a prepared transaction wrote",
    );
    db.commit_prepared("g").expect("commit");
    // Released: the same write goes through.
    nowait_write(&db, &t, false).expect("a write once the holder committed");
    let tx = db.begin().expect("begin");
    assert_eq!(tx.get(&t, b"k").expect("get"), Some(b"mine".to_vec()));
}

#[test]
fn a_drop_that_does_not_wait_fails_on_a_table_another_transaction_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    let t = common::create(&db, "t");
    let mut writer = db.begin().expect("begin");
    writer.put(&t, b"k", b"v").expect("put");
    let (db2, t2) = (db.clone(), t.clone());
    let r = returns(move || {
        let mut tx = db2.begin().expect("begin");
        tx.set_nowait(true);
        tx.drop_table(&t2).map(|_| ())
    });
    match r {
        Err(Error::LockNotAvailable { table, key: None }) => {
            assert_eq!(table.as_deref(), Some("t"))
        }
        other => panic!("a drop of a table being written: {other:?}"),
    }
    writer.commit().expect("commit");
}
