//! Tables as a transactional catalog: a table comes into being with the
//! first committed write to it; reading one that no visible transaction
//! created is empty in a read-write transaction and `NoSuchTable` in a
//! read-only one; drop and rename are visible only at commit and never to
//! older snapshots; concurrent creators meet as writers of one row; vacuum
//! frees what no one can see; a handle from an earlier open says so.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{open, rows};
use strata::{Conflict, Db, Error, Isolation, Options};

fn names(db: &Db) -> Vec<String> {
    db.table_names().expect("names")
}

fn put(db: &Db, table: &str, k: &[u8], v: &[u8]) {
    let t = db.table(table).expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, k, v).expect("put");
    tx.commit().expect("commit");
}

fn read_only(dir: &std::path::Path) -> Db {
    Db::open_with(dir, Options::default().read_only(true)).expect("read-only open")
}

// Guards against `db.table` creating the table: a typo in a reader made
// a table durably.
#[test]
fn a_handle_and_a_reader_create_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    {
        let db = open(tmp.path());
        put(&db, "users", b"alice", b"1");
        let typo = db.table("usres").expect("handle");
        let tx = db.begin_read().expect("begin_read");
        let err = tx.get(&typo, b"alice").expect_err("no such table");
        assert!(
            matches!(&err, Error::NoSuchTable { name } if name == "usres"),
            "{err:?}"
        );
        assert!(err.to_string().contains("\"usres\""), "{err}");
        drop(tx);
        // A read-write transaction that only reads creates nothing either.
        let tx = db.begin().expect("begin");
        assert_eq!(tx.get(&typo, b"alice").expect("get"), None);
        assert!(rows(&tx, &typo).is_empty());
        tx.commit().expect("commit");
        assert_eq!(names(&db), vec!["users"]);
        db.close().expect("close");
    }
    let db = open(tmp.path());
    assert_eq!(names(&db), vec!["users"], "nothing created across a reopen");
    let integrity = db.check_integrity().expect("integrity");
    assert_eq!(integrity.tables, 1);
    assert_eq!(integrity.leaked_pages, 0);
}

// Guards against the table and its first rows being separate steps: the
// table must exist exactly when its creator's data does.
#[test]
fn the_first_write_creates_the_table_with_its_data() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"k", b"v").expect("put");
    // Not yet visible to others, nor listed.
    assert!(names(&db).is_empty());
    let reader = db.begin_read().expect("begin_read");
    assert!(matches!(
        reader.get(&t, b"k"),
        Err(Error::NoSuchTable { .. })
    ));
    assert_eq!(tx.get(&t, b"k").expect("own").as_deref(), Some(&b"v"[..]));
    let untouched = db.begin_read().expect("begin_read");
    tx.commit().expect("commit");
    assert_eq!(names(&db), vec!["t"]);
    // A snapshot taken before the commit, first asking after it.
    assert!(matches!(
        untouched.scan(&t, ..).map(|_| ()),
        Err(Error::NoSuchTable { .. })
    ));
    // The reader's snapshot predates the creation.
    assert!(matches!(
        reader.get(&t, b"k"),
        Err(Error::NoSuchTable { .. })
    ));
    let later = db.begin_read().expect("begin_read");
    assert_eq!(
        later.get(&t, b"k").expect("get").as_deref(),
        Some(&b"v"[..])
    );
}

// Guards against a rolled-back or crashed creation leaving a table, or
// its pages, behind.
#[test]
fn rollback_and_crash_leave_no_table_and_vacuum_frees_its_pages() {
    let tmp = tempfile::tempdir().expect("tmp");
    let copy = tempfile::tempdir().expect("copy");
    {
        let db = open(tmp.path());
        put(&db, "kept", b"k", b"v");
        let t = db.table("gone").expect("gone");
        let mut tx = db.begin().expect("begin");
        for i in 0..200u32 {
            tx.put(&t, i.to_be_bytes(), [7u8; 100]).expect("put");
        }
        tx.rollback().expect("rollback");
        assert_eq!(names(&db), vec!["kept"]);
        let stats = db.vacuum().expect("vacuum");
        assert_eq!(stats.tables_freed, 1, "{stats:?}");
        let r = db.check_integrity().expect("integrity");
        assert_eq!((r.tables, r.leaked_pages), (1, 0), "{r:?}");

        // A creation in flight when the process dies.
        let crashed = db.table("crashed").expect("crashed");
        let mut tx = db.begin().expect("begin");
        tx.put(&crashed, b"k", b"v").expect("put");
        db.checkpoint().expect("checkpoint");
        common::copy_dir(tmp.path(), copy.path());
        drop(tx);
    }
    let db = open(copy.path());
    assert_eq!(names(&db), vec!["kept"]);
    let tx = db.begin_read().expect("begin_read");
    assert!(matches!(
        tx.get(&db.table("crashed").expect("t"), b"k"),
        Err(Error::NoSuchTable { .. })
    ));
    drop(tx);
    let stats = db.vacuum().expect("vacuum");
    assert_eq!(stats.tables_freed, 1, "{stats:?}");
    let r = db.check_integrity().expect("integrity");
    assert_eq!((r.tables, r.leaked_pages), (1, 0), "{r:?}");
}

// Guards against read-only opens creating or pretending: they must say
// which table is missing.
#[test]
fn read_only_opens_report_no_such_table() {
    let tmp = tempfile::tempdir().expect("tmp");
    {
        let db = open(tmp.path());
        put(&db, "t", b"k", b"v");
    }
    let db = read_only(tmp.path());
    let tx = db.begin().expect("begin");
    let t = db.table("t").expect("t");
    assert_eq!(tx.get(&t, b"k").expect("get").as_deref(), Some(&b"v"[..]));
    let missing = db.table("missing").expect("handle");
    assert!(matches!(
        tx.get(&missing, b"k"),
        Err(Error::NoSuchTable { name }) if name == "missing"
    ));
    assert!(matches!(
        tx.scan(&missing, ..).map(|_| ()),
        Err(Error::NoSuchTable { .. })
    ));
}

// Guards against drop and rename acting before commit, or reaching
// snapshots older than the commit.
#[test]
fn drop_and_rename_take_effect_at_commit_for_later_snapshots() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    put(&db, "a", b"k", b"in a");
    put(&db, "b", b"k", b"in b");
    let (a, b, c) = (
        db.table("a").expect("a"),
        db.table("b").expect("b"),
        db.table("c").expect("c"),
    );
    let old = db.begin_read().expect("old snapshot");
    let mut tx = db.begin().expect("begin");
    assert!(tx.drop_table(&a).expect("drop"));
    tx.rename_table(&b, "c").expect("rename");
    // Its own changes it sees at once.
    assert_eq!(tx.get(&a, b"k").expect("get"), None);
    assert_eq!(tx.get(&b, b"k").expect("get"), None);
    assert_eq!(
        tx.get(&c, b"k").expect("get").as_deref(),
        Some(&b"in b"[..])
    );
    assert!(!tx.drop_table(&a).expect("drop again"), "already dropped");
    // Others do not, before the commit.
    assert_eq!(names(&db), vec!["a", "b"]);
    tx.commit().expect("commit");
    assert_eq!(names(&db), vec!["c"]);
    // The older snapshot still reads both as they were.
    assert_eq!(
        old.get(&a, b"k").expect("old a").as_deref(),
        Some(&b"in a"[..])
    );
    assert_eq!(
        old.get(&b, b"k").expect("old b").as_deref(),
        Some(&b"in b"[..])
    );
    assert!(matches!(old.get(&c, b"k"), Err(Error::NoSuchTable { .. })));
    let now = db.begin_read().expect("begin_read");
    assert!(matches!(now.get(&a, b"k"), Err(Error::NoSuchTable { .. })));
    assert_eq!(now.get(&c, b"k").expect("c").as_deref(), Some(&b"in b"[..]));
    // Renaming onto an existing name, or renaming what is not there.
    put(&db, "d", b"k", b"in d");
    let mut tx = db.begin().expect("begin");
    assert!(matches!(
        tx.rename_table(&c, "d"),
        Err(Error::TableExists { name }) if name == "d"
    ));
    let mut tx2 = db.begin().expect("begin");
    assert!(matches!(
        tx2.rename_table(&a, "e"),
        Err(Error::NoSuchTable { name }) if name == "a"
    ));
    drop((tx, tx2, old, now));
    // A dropped name can be created anew, empty.
    put(&db, "a", b"new", b"1");
    let tx = db.begin_read().expect("begin_read");
    assert_eq!(rows(&tx, &a), vec![(b"new".to_vec(), b"1".to_vec())]);
}

// Guards against two creators of one name both creating it: the second
// waits for the first and, as with a row, fails if the first committed.
#[test]
fn concurrent_creators_of_one_name_meet_as_writers_of_one_row() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let mut first = db.begin_with(Isolation::Snapshot).expect("first");
    first.put(&t, b"a", b"1").expect("create");
    let (tx_done, rx_done) = mpsc::channel();
    let db2 = db.clone();
    let second = std::thread::spawn(move || {
        let t = db2.table("t").expect("t");
        let mut second = db2.begin_with(Isolation::Snapshot).expect("second");
        let r = second.put(&t, b"b", b"2");
        tx_done.send(()).expect("send");
        r
    });
    // The second blocks on the first's catalog row.
    assert!(rx_done.recv_timeout(Duration::from_millis(200)).is_err());
    first.commit().expect("commit first");
    let r = second.join().expect("join");
    assert!(
        matches!(
            &r,
            Err(Error::SerializationFailure {
                cause: Conflict::ConcurrentTableChange,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(r.as_ref().err().is_some_and(Error::is_retryable));

    // If the first rolls back, the second creates the table.
    let u = db.table("u").expect("u");
    let mut first = db.begin_with(Isolation::Snapshot).expect("first");
    first.put(&u, b"a", b"1").expect("create");
    let db2 = db.clone();
    let second = std::thread::spawn(move || -> strata::Result<()> {
        let u = db2.table("u").expect("u");
        let mut second = db2.begin_with(Isolation::Snapshot)?;
        second.put(&u, b"b", b"2")?;
        second.commit().map(|_| ())
    });
    std::thread::sleep(Duration::from_millis(50));
    first.rollback().expect("rollback");
    second.join().expect("join").expect("second creates");
    let tx = db.begin_read().expect("read");
    assert_eq!(rows(&tx, &u), vec![(b"b".to_vec(), b"2".to_vec())]);

    // Read Committed waits too, then writes into the table the first made.
    let v = db.table("v").expect("v");
    let mut first = db.begin().expect("first");
    first.put(&v, b"a", b"1").expect("create");
    let db2 = db.clone();
    let second = std::thread::spawn(move || -> strata::Result<()> {
        let v = db2.table("v").expect("v");
        let mut second = db2.begin_with(Isolation::ReadCommitted)?;
        second.put(&v, b"b", b"2")?;
        second.commit().map(|_| ())
    });
    std::thread::sleep(Duration::from_millis(50));
    first.commit().expect("commit");
    second
        .join()
        .expect("join")
        .expect("read committed joins in");
    let tx = db.begin_read().expect("read");
    assert_eq!(rows(&tx, &v).len(), 2);
}

// Guards against SSI missing the dependency through a table's absence:
// T1 reads table x absent and writes y, T2 reads y absent and creates x
// by writing it — write skew through the catalog.
#[test]
fn a_serializable_read_of_an_absent_table_conflicts_with_its_creator() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    put(&db, "y", b"seed", b"0");
    let (x, y) = (db.table("x").expect("x"), db.table("y").expect("y"));
    let mut t1 = db.begin().expect("t1");
    let mut t2 = db.begin().expect("t2");
    assert!(rows(&t1, &x).is_empty(), "x is absent for t1");
    assert_eq!(t2.get(&y, b"k").expect("t2 reads y"), None);
    t1.put(&y, b"k", b"from t1").expect("t1 writes y");
    t2.put(&x, b"k", b"from t2").expect("t2 creates x");
    let c1 = t1.commit();
    let c2 = t2.commit();
    assert!(
        c1.is_err() || c2.is_err(),
        "one of the two must fail: {c1:?} {c2:?}"
    );
}

// Guards against a dropped table's pages staying allocated for good, or
// being freed while an older snapshot still reads it.
#[test]
fn vacuum_frees_a_dropped_table_once_no_snapshot_sees_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = Db::open_with(
        tmp.path(),
        Options::default().background(false).cache_size(4 << 20),
    )
    .expect("open");
    let t = db.table("big").expect("big");
    let mut tx = db.begin().expect("begin");
    for i in 0..2000u32 {
        tx.put(&t, i.to_be_bytes(), [i as u8; 200]).expect("put");
    }
    tx.put(&t, b"large", vec![9u8; 100_000])
        .expect("large value");
    tx.commit().expect("commit");
    put(&db, "small", b"k", b"v");
    db.checkpoint().expect("checkpoint");
    let used = |db: &Db| {
        let r = db.check_integrity().expect("integrity");
        assert_eq!(r.leaked_pages, 0, "{r:?}");
        r.pages - r.free_pages
    };
    let before = used(&db);
    let old = db.begin_read().expect("old snapshot");
    let mut tx = db.begin().expect("begin");
    assert!(tx.drop_table(&t).expect("drop"));
    tx.commit().expect("commit");
    let stats = db.vacuum().expect("vacuum");
    assert_eq!(stats.tables_freed, 0, "the old snapshot still sees it");
    assert_eq!(
        old.get(&t, b"large").expect("old read").map(|v| v.len()),
        Some(100_000)
    );
    assert_eq!(rows(&old, &t).len(), 2001);
    drop(old);
    let stats = db.vacuum().expect("vacuum");
    assert_eq!(stats.tables_freed, 1, "{stats:?}");
    db.checkpoint().expect("checkpoint");
    let after = used(&db);
    assert!(
        after * 4 < before,
        "pages in use {before} -> {after}: the table's pages were not freed"
    );
    assert_eq!(names(&db), vec!["small"]);
    let r = db.check_integrity().expect("integrity");
    assert_eq!(r.tables, 1);
}

// Guards against a drop losing a concurrent writer's commit: the drop
// waits for the writer, and a writer after the drop's commit fails.
#[test]
fn a_drop_waits_for_writers_of_the_table() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    put(&db, "t", b"a", b"1");
    let t = db.table("t").expect("t");
    let mut writer = db.begin_with(Isolation::Snapshot).expect("writer");
    writer.put(&t, b"b", b"2").expect("write");
    let (done_tx, done_rx) = mpsc::channel();
    let db2 = db.clone();
    let dropper = std::thread::spawn(move || -> strata::Result<bool> {
        let t = db2.table("t").expect("t");
        let mut d = db2.begin_with(Isolation::Snapshot)?;
        let r = d.drop_table(&t)?;
        done_tx.send(()).expect("send");
        d.commit()?;
        Ok(r)
    });
    assert!(
        done_rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "the drop waits"
    );
    writer.commit().expect("the writer commits first");
    assert!(dropper.join().expect("join").expect("drop"));
    assert!(names(&db).is_empty());
    // A writer whose snapshot predates a committed drop fails.
    put(&db, "u", b"a", b"1");
    let u = db.table("u").expect("u");
    let mut late = db.begin_with(Isolation::Snapshot).expect("late");
    assert_eq!(
        late.get(&u, b"a").expect("read").as_deref(),
        Some(&b"1"[..])
    );
    let mut d = db.begin().expect("drop");
    d.drop_table(&u).expect("drop");
    d.commit().expect("commit");
    assert!(matches!(
        late.put(&u, b"b", b"2"),
        Err(Error::SerializationFailure {
            cause: Conflict::ConcurrentTableChange,
            ..
        })
    ));
}

// Guards against a handle from a closed `Db` reading whatever the new
// open has at that place, or failing with a message that does not say why.
#[test]
fn a_handle_from_an_earlier_open_says_so() {
    let tmp = tempfile::tempdir().expect("tmp");
    let stale = {
        let db = open(tmp.path());
        put(&db, "t", b"k", b"v");
        let t = db.table("t").expect("t");
        db.close().expect("close");
        t
    };
    let db = open(tmp.path());
    let tx = db.begin().expect("begin");
    let err = tx.get(&stale, b"k").expect_err("stale handle");
    assert!(
        matches!(&err, Error::StaleTable { name } if name == "t"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("earlier open") && msg.contains("db.table"),
        "{msg}"
    );
    let other = tempfile::tempdir().expect("other");
    let foreign = open(other.path()).table("t").expect("t");
    assert!(matches!(tx.get(&foreign, b"k"), Err(Error::ForeignTable)));
}

// Guards against a Read Committed transaction keeping its first answer
// for a table: each operation sees the catalog as of its own snapshot.
#[test]
fn read_committed_sees_tables_created_and_dropped_meanwhile() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let rc = db.begin_with(Isolation::ReadCommitted).expect("rc");
    assert_eq!(rc.get(&t, b"k").expect("absent"), None);
    put(&db, "t", b"k", b"v");
    assert_eq!(
        rc.get(&t, b"k").expect("created").as_deref(),
        Some(&b"v"[..])
    );
    let mut d = db.begin().expect("drop");
    d.drop_table(&t).expect("drop");
    d.commit().expect("commit");
    assert_eq!(rc.get(&t, b"k").expect("dropped"), None);
    assert!(rows(&rc, &t).is_empty());
}
