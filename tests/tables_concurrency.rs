//! Transactional tables against two-phase commit, Read Committed and SSI:
//! drops against prepared writers across a restart, handles across drops
//! and re-creates, range reads.

mod common;

use std::time::Duration;

use common::{open, rows};
use strata::{Db, Isolation, Options};

fn options() -> Options {
    Options::default()
        .cache_size(4 << 20)
        .lock_timeout(Some(Duration::from_millis(200)))
}

// A prepared transaction that wrote table t, recovered at open, is still
// a writer of t: a drop must wait for it (or fail), never commit under
// it, or COMMIT PREPARED lands rows in a table nobody can see.
#[test]
fn a_recovered_prepared_writer_holds_off_a_drop() {
    let tmp = tempfile::tempdir().expect("tmp");
    {
        let db = Db::open_with(tmp.path(), options()).expect("open");
        let t = common::create(&db, "t");
        let mut p = db.begin().expect("begin");
        p.put(&t, "k", "prepared").expect("put");
        p.prepare("p").expect("prepare");
        // dropped without close: the prepared transaction stays in doubt
    }
    let db = Db::open_with(tmp.path(), options()).expect("reopen");
    let t = db.table("t").expect("table");
    let mut d = db.begin_with(Isolation::ReadCommitted).expect("begin");
    let dropped = d.drop_table(&t);
    let committed = match dropped {
        Ok(true) => d.commit().is_ok(),
        other => {
            eprintln!("drop: {other:?}");
            false
        }
    };
    db.commit_prepared("p").expect("commit p");
    let r = db.begin_read().expect("read");
    let seen = r.get(&t, "k");
    eprintln!("drop committed: {committed}; after commit_prepared, read: {seen:?}");
    assert!(
        !committed,
        "the drop committed while a prepared writer of the table was in doubt; \
         its committed row is now in a dropped table: {seen:?}"
    );
}

// The same, carried through: the drop commits, vacuum frees the table
// under the in-doubt writer, COMMIT PREPARED reports success, and the
// committed row is gone for every later reader.
#[test]
fn a_recovered_prepared_writers_commit_is_lost_to_a_drop_and_vacuum() {
    let tmp = tempfile::tempdir().expect("tmp");
    {
        let db = Db::open_with(tmp.path(), options()).expect("open");
        let t = common::create(&db, "t");
        let mut w = db.begin().expect("begin");
        w.put(&t, "base", "1").expect("put");
        w.commit().expect("commit");
        let mut p = db.begin().expect("begin");
        p.put(&t, "k", "prepared").expect("put");
        p.prepare("p").expect("prepare");
    }
    let db = Db::open_with(tmp.path(), options()).expect("reopen");
    let t = db.table("t").expect("table");
    let mut d = db.begin_with(Isolation::ReadCommitted).expect("begin");
    let dropped = d.drop_table(&t);
    let dropped = matches!(dropped, Ok(true)) && d.commit().is_ok();
    let freed = db.vacuum().expect("vacuum").tables_freed;
    db.commit_prepared("p").expect("commit p");
    let integrity = db.check_integrity().expect("integrity");
    eprintln!(
        "drop committed {dropped}, tables freed {freed}, leaked {}, names {:?}",
        integrity.leaked_pages,
        db.table_names()
    );
    let r = db.begin().expect("begin");
    let after = rows(&r, &t);
    assert!(
        !dropped || after.iter().any(|(k, _)| k == b"k"),
        "commit_prepared succeeded but its row is in no table: {after:?}"
    );
}

// Invariant "a or b exists": each serializable transaction sees both and
// drops one. Committing both leaves neither: write skew through drops.
#[test]
fn serializable_drops_of_two_tables_meet_as_write_skew() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let a = common::create(&db, "a");
    let b = common::create(&db, "b");
    let mut t1 = db.begin().expect("t1");
    let mut t2 = db.begin().expect("t2");
    assert_eq!(t1.len(&a).expect("a"), 0);
    assert_eq!(t1.len(&b).expect("b"), 0);
    assert_eq!(t2.len(&a).expect("a"), 0);
    assert_eq!(t2.len(&b).expect("b"), 0);
    assert!(t1.drop_table(&a).expect("t1 drops a"));
    assert!(t2.drop_table(&b).expect("t2 drops b"));
    let c1 = t1.commit();
    let c2 = t2.commit();
    assert!(
        c1.is_err() || c2.is_err(),
        "{c1:?} {c2:?}; names {:?}",
        db.table_names()
    );
}

// Write skew through existence alone: each creates a table only if the
// other's is absent (create_table returns whether it created).
#[test]
fn serializable_creates_guarded_by_absence_meet_as_write_skew() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let a = db.table("a").expect("a");
    let b = db.table("b").expect("b");
    let mut t1 = db.begin().expect("t1");
    let mut t2 = db.begin().expect("t2");
    assert_eq!(t1.first(&b).expect("b"), None);
    assert_eq!(t2.last(&a).expect("a"), None);
    assert!(t1.create_table(&a).expect("t1 creates a"));
    assert!(t2.create_table(&b).expect("t2 creates b"));
    let c1 = t1.commit();
    let c2 = t2.commit();
    assert!(
        c1.is_err() || c2.is_err(),
        "{c1:?} {c2:?}; names {:?}",
        db.table_names()
    );
}

// A table created by a prepared transaction survives a restart in doubt,
// is not freed by vacuum meanwhile, and after a rollback is freed with no
// page leaked; after a commit, it is there with its rows.
#[test]
fn a_table_created_by_a_recovered_prepared_transaction() {
    for commit in [false, true] {
        let tmp = tempfile::tempdir().expect("tmp");
        {
            let db = Db::open_with(tmp.path(), options()).expect("open");
            let t = db.table("new").expect("t");
            let mut p = db.begin().expect("begin");
            for i in 0..50u32 {
                p.put(&t, format!("k{i:03}"), vec![7u8; 300]).expect("put");
            }
            p.put(&t, "big", vec![1u8; 30_000]).expect("put");
            p.prepare("p").expect("prepare");
        }
        let db = Db::open_with(tmp.path(), options()).expect("reopen");
        let before = db.check_integrity().expect("integrity");
        assert_eq!(before.leaked_pages, 0, "in doubt: {before:?}");
        db.vacuum().expect("vacuum");
        let t = db.table("new").expect("t");
        // A writer of the name waits for the creator and times out.
        let mut w = db.begin_with(Isolation::ReadCommitted).expect("begin");
        assert!(w.put(&t, "x", "y").is_err());
        drop(w);
        if commit {
            db.commit_prepared("p").expect("commit");
        } else {
            db.rollback_prepared("p").expect("rollback");
        }
        db.vacuum().expect("vacuum");
        let after = db.check_integrity().expect("integrity");
        assert_eq!(after.leaked_pages, 0, "{after:?}");
        let r = db.begin().expect("begin");
        let n = if commit { 51 } else { 0 };
        assert_eq!(rows(&r, &t).len(), n, "commit {commit}");
        assert_eq!(db.table_names().expect("names").len(), commit as usize);
    }
}

// first/last narrow their SIREAD mark to what they depended on: a key
// inserted beyond the returned end must still meet the mark.
#[test]
fn first_and_last_still_meet_an_insert_beyond_the_returned_key() {
    for last in [false, true] {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = open(tmp.path());
        let t = db.table("t").expect("t");
        let u = db.table("u").expect("u");
        let mut s = db.begin().expect("seed");
        for k in ["k3", "k5", "k7"] {
            s.put(&t, k, "x").expect("put");
        }
        s.put(&u, "end", "none").expect("put");
        s.commit().expect("commit");
        let mut t1 = db.begin().expect("t1");
        let mut t2 = db.begin().expect("t2");
        let end = if last { t1.last(&t) } else { t1.first(&t) }
            .expect("end")
            .expect("row");
        t1.put(&u, "end", &end.0).expect("t1 writes u");
        assert!(t2.get(&u, "end").expect("t2 reads u").is_some());
        let beyond = if last { "k9" } else { "k1" };
        t2.put(&t, beyond, "y").expect("t2 inserts");
        let c1 = t1.commit();
        let c2 = t2.commit();
        assert!(c1.is_err() || c2.is_err(), "last {last}: {c1:?} {c2:?}");
    }
}

// A Read Committed scan open across a drop, a vacuum and a re-create of
// the name reads the table it started on, whole; nothing leaks after.
#[test]
fn a_read_committed_scan_outlives_a_drop_vacuum_and_recreate() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let mut s = db.begin().expect("seed");
    for i in 0..600u32 {
        s.put(&t, format!("k{i:04}"), vec![3u8; 200]).expect("put");
    }
    s.commit().expect("commit");
    let r = db.begin_with(Isolation::ReadCommitted).expect("rc");
    let mut scan = r.scan(&t, ..).expect("scan");
    let first = scan.next().expect("row").expect("ok");
    assert_eq!(first.0, b"k0000");
    let mut d = db.begin().expect("dropper");
    assert!(d.drop_table(&t).expect("drop"));
    d.commit().expect("commit");
    let mut c = db.begin().expect("creator");
    for i in 0..600u32 {
        c.put(&t, format!("k{i:04}"), vec![9u8; 200]).expect("put");
    }
    c.commit().expect("commit");
    assert_eq!(db.vacuum().expect("vacuum").tables_freed, 0);
    let rest: Vec<_> = scan.collect::<Result<_, _>>().expect("rest");
    assert_eq!(rest.len(), 599);
    assert!(rest.iter().all(|(_, v)| v[0] == 3), "old table's rows");
    assert_eq!(r.get(&t, "k0001").expect("get").expect("row")[0], 9);
    drop(r);
    assert_eq!(db.vacuum().expect("vacuum").tables_freed, 1);
    let i = db.check_integrity().expect("integrity");
    assert_eq!(i.leaked_pages, 0, "{i:?}");
}

// A dropped table whose index has grown levels is freed whole: emptying
// must leave a root vacuum recognises as empty.
#[test]
fn a_dropped_multi_level_table_is_freed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let mut s = db.begin().expect("seed");
    for i in 0..3000u32 {
        let key = format!("{i:06}{}", "k".repeat(200));
        s.put(&t, key, "v").expect("put");
    }
    s.commit().expect("commit");
    let keep = common::create(&db, "keep");
    let mut w = db.begin().expect("w");
    w.put(&keep, "a", "b").expect("put");
    w.commit().expect("commit");
    let mut d = db.begin().expect("d");
    assert!(d.drop_table(&t).expect("drop"));
    d.commit().expect("commit");
    let mut freed = 0;
    for _ in 0..3 {
        freed += db.vacuum().expect("vacuum").tables_freed;
    }
    let i = db.check_integrity().expect("integrity");
    eprintln!("freed {freed}: {i:?}");
    assert_eq!(freed, 1, "{i:?}");
    assert_eq!(i.leaked_pages, 0, "{i:?}");
}

// A Read Committed reader's resolved tables are refreshed when a prepared
// drop and create are committed by COMMIT PREPARED (with and without a
// restart in between).
#[test]
fn read_committed_sees_a_prepared_drop_once_committed() {
    for restart in [false, true] {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut db = Db::open_with(tmp.path(), options()).expect("open");
        let t = db.table("t").expect("t");
        let mut s = db.begin().expect("seed");
        s.put(&t, "k", "old").expect("put");
        s.commit().expect("commit");
        let mut p = db.begin().expect("p");
        assert!(p.drop_table(&t).expect("drop"));
        p.put(&t, "k", "new").expect("re-create");
        p.prepare("p").expect("prepare");
        if restart {
            drop(db);
            db = Db::open_with(tmp.path(), options()).expect("reopen");
        }
        let t = db.table("t").expect("t");
        let r = db.begin_with(Isolation::ReadCommitted).expect("rc");
        assert_eq!(r.get(&t, "k").expect("get").as_deref(), Some(&b"old"[..]));
        db.commit_prepared("p").expect("commit");
        assert_eq!(
            r.get(&t, "k").expect("get").as_deref(),
            Some(&b"new"[..]),
            "restart {restart}"
        );
    }
}

// A Read Committed drop of a table that does not exist holds nothing:
// a table another transaction then creates and commits must be seen by
// the next statement, as every committed change is under Read Committed.
#[test]
fn read_committed_sees_a_table_created_after_its_drop_found_none() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let mut r = db.begin_with(Isolation::ReadCommitted).expect("rc");
    assert!(!r.drop_table(&t).expect("drop of nothing"));
    let mut c = db.begin().expect("creator");
    c.put(&t, "k", "v").expect("put");
    c.commit().expect("commit");
    // The statement after the creator's commit.
    let other = db.begin_with(Isolation::ReadCommitted).expect("rc");
    assert_eq!(other.get(&t, "k").expect("get").as_deref(), Some(&b"v"[..]));
    assert_eq!(
        r.get(&t, "k").expect("get").as_deref(),
        Some(&b"v"[..]),
        "a Read Committed read after the commit misses the created table"
    );
}
