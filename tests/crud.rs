//! Basic operations through the public API: put/get/delete, scans with
//! bounds and own writes, tables, big values, reopen.

mod common;

use std::ops::Bound;

use common::{open, rows};
use strata::{Db, Error, Isolation};

#[test]
fn put_get_delete_commit_and_reopen() {
    let tmp = tempfile::tempdir().expect("tmp");
    {
        let db = open(tmp.path());
        let t = db.table("users").expect("table");
        let mut tx = db.begin().expect("begin");
        tx.put(&t, b"alice", b"1").expect("put");
        tx.put(&t, b"bob", b"2").expect("put");
        assert_eq!(
            tx.get(&t, b"alice").expect("get").as_deref(),
            Some(&b"1"[..]),
            "own write visible"
        );
        assert!(tx.delete(&t, b"bob").expect("delete"));
        assert!(!tx.delete(&t, b"bob").expect("delete again"));
        assert_eq!(tx.get(&t, b"bob").expect("get"), None);
        let info = tx.commit().expect("commit");
        assert_ne!(info.xid, strata::Xid::NONE);
        let tx = db.begin().expect("begin");
        assert_eq!(
            tx.get(&t, "alice").expect("get").as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(tx.get(&t, "bob").expect("get"), None);
    }
    let db = open(tmp.path());
    let t = db.table("users").expect("table");
    let tx = db.begin().expect("begin");
    assert_eq!(rows(&tx, &t), vec![(b"alice".to_vec(), b"1".to_vec())]);
}

#[test]
fn rollback_and_drop_discard_everything() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"k", b"committed").expect("put");
    tx.commit().expect("commit");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"k", b"rolled back").expect("put");
    tx.put(&t, b"new", b"x").expect("put");
    tx.rollback().expect("rollback");
    {
        let mut tx = db.begin().expect("begin");
        tx.delete(&t, b"k").expect("delete");
    } // dropped
    let tx = db.begin().expect("begin");
    assert_eq!(rows(&tx, &t), vec![(b"k".to_vec(), b"committed".to_vec())]);
}

#[test]
fn scans_respect_bounds_direction_and_own_writes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    for i in 0..1000u32 {
        tx.put(&t, format!("k{i:04}"), i.to_string()).expect("put");
    }
    tx.commit().expect("commit");
    let mut tx = db.begin().expect("begin");
    tx.delete(&t, "k0100").expect("delete");
    tx.put(&t, "k0100x", "own").expect("put");
    fn keys(it: impl Iterator<Item = strata::Result<(Vec<u8>, Vec<u8>)>>) -> Vec<String> {
        it.map(|r| String::from_utf8(r.expect("row").0).expect("utf8"))
            .collect()
    }
    assert_eq!(
        keys(tx.scan(&t, "k0099".."k0102").expect("scan")),
        vec!["k0099", "k0100x", "k0101"]
    );
    assert_eq!(
        keys(tx.scan(&t, "k0099"..="k0101").expect("scan")),
        vec!["k0099", "k0100x", "k0101"]
    );
    assert_eq!(
        keys(tx.scan(&t, "k0998"..).expect("scan")),
        vec!["k0998", "k0999"]
    );
    assert_eq!(
        keys(tx.scan(&t, .."k0002").expect("scan")),
        vec!["k0000", "k0001"]
    );
    assert_eq!(
        keys(tx.scan(&t, ..="k0001").expect("scan")),
        vec!["k0000", "k0001"]
    );
    assert_eq!(
        keys(
            tx.scan(&t, (Bound::Excluded("k0500"), Bound::Excluded("k0503")))
                .expect("scan")
        ),
        vec!["k0501", "k0502"]
    );
    let all = keys(tx.scan(&t, ..).expect("scan"));
    assert_eq!(all.len(), 1000);
    let mut rev = keys(tx.scan(&t, ..).expect("scan").rev());
    rev.reverse();
    assert_eq!(rev, all);
    // Both ends at once meet in the middle without repeating a row.
    let mut it = tx.scan(&t, ..).expect("scan");
    let mut seen = Vec::new();
    loop {
        match (it.next(), it.next_back()) {
            (None, None) => break,
            (a, b) => seen.extend(a.into_iter().chain(b).map(|r| r.expect("row").0)),
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 1000);
    assert_eq!(
        keys(tx.scan(&t, "z".."a").expect("scan")),
        Vec::<String>::new(),
        "inverted range is empty"
    );
}

#[test]
fn tables_are_separate_and_persist() {
    let tmp = tempfile::tempdir().expect("tmp");
    {
        let db = open(tmp.path());
        let a = db.table("a").expect("a");
        let b = db.table("b").expect("b");
        let mut tx = db.begin().expect("begin");
        tx.put(&a, b"k", b"in a").expect("put");
        tx.put(&b, b"k", b"in b").expect("put");
        tx.commit().expect("commit");
        assert!(matches!(db.table(""), Err(Error::InvalidTableName)));
        assert!(matches!(
            db.table(&"x".repeat(300)),
            Err(Error::InvalidTableName)
        ));
    }
    let db = open(tmp.path());
    let mut names = db.table_names().expect("names");
    names.sort();
    assert_eq!(names, vec!["a", "b"]);
    let tx = db.begin().expect("begin");
    assert_eq!(
        tx.get(&db.table("a").expect("a"), b"k")
            .expect("get")
            .as_deref(),
        Some(&b"in a"[..])
    );
    assert_eq!(
        tx.get(&db.table("b").expect("b"), b"k")
            .expect("get")
            .as_deref(),
        Some(&b"in b"[..])
    );
    let other = tempfile::tempdir().expect("tmp");
    let db2 = open(other.path());
    let foreign = db2.table("a").expect("a");
    assert!(matches!(tx.get(&foreign, b"k"), Err(Error::ForeignTable)));
}

#[test]
fn big_values_and_limits() {
    let tmp = tempfile::tempdir().expect("tmp");
    let big: Vec<u8> = (0..(5 << 20))
        .map(|i: u32| (i.wrapping_mul(31) >> 3) as u8)
        .collect();
    {
        let db = open(tmp.path());
        let t = db.table("t").expect("table");
        let mut tx = db.begin().expect("begin");
        tx.put(&t, b"big", &big).expect("put big");
        tx.put(&t, b"mid", vec![9u8; 5000]).expect("put mid");
        assert_eq!(tx.get(&t, b"big").expect("get").as_deref(), Some(&big[..]));
        tx.commit().expect("commit");
        let mut tx = db.begin().expect("begin");
        let long_key = vec![b'k'; strata::limits::KEY_MAX + 1];
        assert!(matches!(
            tx.put(&t, &long_key, b"v"),
            Err(Error::KeyTooLarge { .. })
        ));
        let max_key = vec![b'k'; strata::limits::KEY_MAX];
        tx.put(&t, &max_key, b"v").expect("max key");
        tx.commit().expect("commit");
    }
    let db = open(tmp.path());
    let t = db.table("t").expect("table");
    let tx = db.begin().expect("begin");
    assert_eq!(tx.get(&t, b"big").expect("get").as_deref(), Some(&big[..]));
    assert_eq!(tx.get(&t, b"mid").expect("get"), Some(vec![9u8; 5000]));
}

/// Value lengths at each edge of how a value is split between its tuple
/// and an overflow chain, for a key of `klen` bytes: the tuple limit
/// (4 000 bytes), one page's worth (8 160), and a tail past whole pages
/// that just fits in the tuple beside the chain's page id, or just not.
fn split_edges(klen: usize) -> Vec<usize> {
    let room = 4_000 - 30 - klen;
    let page = 8_160;
    let mut lens = vec![room, room + 1, page - 1, page, page + 1];
    for whole in [page, 2 * page, 5 * page] {
        lens.extend([
            whole + room - 5,
            whole + room - 4,
            whole + room - 3,
            whole + 1,
        ]);
    }
    lens
}

fn patterned(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|j| ((j * 7 + seed * 13 + j / 251) % 251) as u8)
        .collect()
}

#[test]
fn values_at_every_split_round_trip() {
    let tmp = tempfile::tempdir().expect("tmp");
    let keys: Vec<(Vec<u8>, usize)> = [3, 900, strata::limits::KEY_MAX]
        .iter()
        .flat_map(|&klen| split_edges(klen).into_iter().map(move |len| (klen, len)))
        .enumerate()
        .map(|(i, (klen, len))| {
            let mut k = format!("{i:03}").into_bytes();
            k.resize(klen, b'k');
            (k, len)
        })
        .collect();
    let check = |db: &Db, t: &strata::Table, round: usize| {
        let tx = db.begin_read().expect("reader");
        for (i, (k, len)) in keys.iter().enumerate() {
            let want = match (round, i % 3) {
                (0, _) | (1, 1) => Some(patterned(*len, i)),
                (1, 0) => Some(patterned(keys[keys.len() - 1 - i].1, i + 1)),
                _ => None,
            };
            let got = tx.get(t, k).expect("get");
            assert!(got == want, "key {i} ({} bytes): generation {round}", len);
        }
        let scanned: Vec<(Vec<u8>, Vec<u8>)> = tx
            .scan(t, ..)
            .expect("scan")
            .map(|r| r.expect("row"))
            .collect();
        let gotten: Vec<(Vec<u8>, Vec<u8>)> = keys
            .iter()
            .filter_map(|(k, _)| Some((k.clone(), tx.get(t, k).expect("get")?)))
            .collect();
        assert_eq!(scanned.len(), gotten.len(), "rows scanned");
        assert!(scanned == gotten, "a scan reads what gets read");
    };
    let db = open(tmp.path());
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    for (i, (k, len)) in keys.iter().enumerate() {
        tx.put(&t, k, patterned(*len, i)).expect("put");
        assert_eq!(tx.get(&t, k).expect("own write"), Some(patterned(*len, i)));
    }
    tx.commit().expect("commit");
    check(&db, &t, 0);
    // Overwrite a third with another edge's length, delete a third.
    let mut tx = db.begin().expect("begin");
    for (i, (k, _)) in keys.iter().enumerate() {
        match i % 3 {
            0 => tx
                .put(&t, k, patterned(keys[keys.len() - 1 - i].1, i + 1))
                .expect("put"),
            2 => assert!(tx.delete(&t, k).expect("delete")),
            _ => {}
        }
    }
    tx.commit().expect("commit");
    check(&db, &t, 1);
    db.vacuum().expect("vacuum");
    check(&db, &t, 1);
    db.check_integrity().expect("sound");
    drop((t, db));
    let db = open(tmp.path());
    let t = db.table("t").expect("table");
    check(&db, &t, 1);
    db.check_integrity().expect("sound after reopen");
}

#[test]
fn sixty_four_mib_value_round_trips() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("table");
    let v: Vec<u8> = (0..strata::limits::VALUE_MAX)
        .map(|i| (i % 253) as u8)
        .collect();
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"v", &v).expect("put");
    tx.commit().expect("commit");
    let tx = db.begin().expect("begin");
    assert!(tx.get(&t, b"v").expect("get").as_deref() == Some(&v[..]));
    drop(tx);
    let mut tx = db.begin().expect("begin");
    let too_big = vec![0u8; strata::limits::VALUE_MAX + 1];
    assert!(matches!(
        tx.put(&t, b"w", &too_big),
        Err(Error::ValueTooLarge { .. })
    ));
}

#[test]
fn serializable_is_the_default() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    assert_eq!(tx.isolation(), Isolation::Serializable);
    tx.put(&t, "k", "v").expect("put");
    tx.commit().expect("commit");
}

#[test]
fn second_open_of_the_same_directory_is_locked() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let err = Db::open(tmp.path()).expect_err("second open must fail");
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    drop(db);
    Db::open(tmp.path()).expect("reopen after close");
}

#[test]
fn handles_are_send_sync_and_static() {
    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    fn send_static<T: Send + 'static>() {}
    fn error_like<T: std::error::Error + Send + Sync + 'static>() {}
    send_sync::<strata::Db>();
    send_sync::<strata::Table>();
    send_static::<strata::Transaction>();
    error_like::<strata::Error>();
    // A transaction can move to another thread and commit there.
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "k", "v").expect("put");
    std::thread::spawn(move || tx.commit().expect("commit"))
        .join()
        .expect("join");
    assert!(db.begin().expect("b").get(&t, "k").expect("get").is_some());
}

#[test]
fn scans_over_large_values_split_batches_without_losing_rows() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    for i in 0..12u8 {
        tx.put(&t, [i], vec![i; 300_000]).expect("put");
    }
    tx.commit().expect("commit");
    let tx = db.begin().expect("begin");
    let fwd: Vec<u8> = tx
        .scan(&t, ..)
        .expect("scan")
        .map(|r| r.expect("row").0[0])
        .collect();
    assert_eq!(fwd, (0..12).collect::<Vec<u8>>());
    let rev: Vec<u8> = tx
        .scan(&t, ..)
        .expect("scan")
        .rev()
        .map(|r| r.expect("row").0[0])
        .collect();
    assert_eq!(rev, (0..12).rev().collect::<Vec<u8>>());
    for row in tx.scan(&t, [3u8]..[9u8]).expect("scan") {
        let (k, v) = row.expect("row");
        assert!(v.len() == 300_000 && v.iter().all(|&b| b == k[0]));
    }
}
