//! Apply with an index: a caller's log index recorded with what its entry
//! changed (`Transaction::set_applied_index`, `Db::set_applied_index`),
//! rising only, and after power loss naming exactly the entries whose
//! effects are there.

mod common;

use std::path::Path;
use std::sync::Arc;

use strata::fault::FaultFs;
use strata::{Db, Durability, Error, Options};

#[test]
fn the_applied_index_rises_with_commits_prepares_and_entries_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = common::open(dir.path());
    assert_eq!(db.applied_index().expect("index"), 0);
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"a", b"1").expect("put");
    tx.set_applied_index(5);
    tx.commit().expect("commit");
    assert_eq!(db.applied_index().expect("index"), 5);
    // Not above: refused, the transaction rolled back, nothing applied.
    for index in [5, 4] {
        let mut tx = db.begin().expect("begin");
        tx.put(&t, b"b", b"2").expect("put");
        tx.set_applied_index(index);
        match tx.commit() {
            Err(Error::IndexRefused {
                index: i,
                applied: 5,
            }) => assert_eq!(i, index),
            other => panic!("index {index} after 5: {other:?}"),
        }
        assert!(matches!(
            db.set_applied_index(index),
            Err(Error::IndexRefused { .. })
        ));
    }
    assert_eq!(db.begin().expect("begin").get(&t, b"b").expect("get"), None);
    // An entry that changes nothing else, and a transaction that wrote
    // nothing.
    db.set_applied_index(6).expect("no-op entry");
    let mut tx = db.begin().expect("begin");
    tx.set_applied_index(7);
    tx.commit().expect("empty commit");
    assert_eq!(db.applied_index().expect("index"), 7);
    // A prepare records it; the decision is an entry of its own here.
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"c", b"3").expect("put");
    tx.set_applied_index(8);
    tx.prepare("g").expect("prepare");
    assert_eq!(db.applied_index().expect("index"), 8);
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"d", b"4").expect("put");
    tx.set_applied_index(8);
    assert!(matches!(tx.prepare("h"), Err(Error::IndexRefused { .. })));
    assert!(db
        .prepared_transactions()
        .expect("list")
        .iter()
        .all(|p| p.gid != "h"));
    db.commit_prepared("g").expect("decide");
    db.set_applied_index(9).expect("decision entry");
    db.close().expect("close");
    let db = common::open(dir.path());
    assert_eq!(db.applied_index().expect("index"), 9, "after a reopen");
}

/// A replica's apply loop (Durability::Eventual: the caller's log is the
/// durable record) over 600 entries — puts, deletes, entries that
/// change nothing, 1 KB values, a checkpoint every 20 entries, through
/// the smallest cache —
/// and on the synced image and 60 power-loss images taken along the way,
/// the database holds exactly the entries up to its applied index: each
/// key as the entries up to it left it, none of a later one.
#[test]
fn after_power_loss_the_applied_index_names_exactly_what_is_there() {
    let dir = Path::new("/db");
    let fs = FaultFs::new();
    let o = || {
        Options::default()
            .background(false)
            .cache_size(0)
            .durability(Durability::Eventual)
            .wal_segment_size(1 << 20)
    };
    let db = Db::open_vfs(Arc::new(fs.clone()), dir, o()).expect("open");
    let t = db.table("t").expect("table");
    const ENTRIES: u64 = 600;
    // A kilobyte a value, so the log's buffer spills to the file between
    // syncs and power loss has unsynced writes to cut among.
    let value = |v: u64| v.to_be_bytes().repeat(128);
    // The entry's effect: key i % 97 set to i, deleted, or nothing.
    let effect = |i: u64| match i % 7 {
        0 => None,
        3 => Some(None),
        _ => Some(Some(i)),
    };
    let mut images = Vec::new();
    for i in 1..=ENTRIES {
        match effect(i) {
            None => db.set_applied_index(i).expect("no-op"),
            Some(v) => {
                let mut tx = db.begin().expect("begin");
                let key = (i % 97).to_be_bytes();
                match v {
                    Some(v) => tx.put(&t, key, value(v)).expect("put"),
                    None => {
                        tx.delete(&t, key).expect("delete");
                    }
                }
                tx.set_applied_index(i);
                tx.commit().expect("commit");
            }
        }
        // Syncs every 20 entries, so power loss cuts all along the run.
        if i % 20 == 0 {
            db.checkpoint().expect("checkpoint");
        }
        // Power fails here, twice over (each image keeps a different part
        // of what was not yet synced).
        if i % 20 == 10 {
            images.push((i, fs.power_loss_image(i)));
            images.push((i, fs.power_loss_image(i + 1)));
        }
    }
    let state_after = |applied: u64| {
        let mut m = std::collections::BTreeMap::new();
        for i in 1..=applied {
            if let Some(v) = effect(i) {
                match v {
                    Some(v) => m.insert((i % 97).to_be_bytes().to_vec(), value(v)),
                    None => m.remove((i % 97).to_be_bytes().as_slice()),
                };
            }
        }
        m
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut check = |img: FaultFs, what: &str| {
        let db = Db::open_vfs(Arc::new(img), dir, o()).unwrap_or_else(|e| panic!("{what}: {e}"));
        let applied = db.applied_index().expect("index");
        seen.insert(applied);
        let t = db.table("t").expect("table");
        let tx = db.begin().expect("begin");
        let rows: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = match tx.scan(&t, ..) {
            Ok(s) => s.collect::<Result<_, _>>().expect("rows"),
            Err(Error::NoSuchTable { .. }) => Default::default(),
            Err(e) => panic!("{what}: {e}"),
        };
        assert_eq!(
            rows,
            state_after(applied),
            "{what}: applied index {applied}"
        );
    };
    check(fs.synced_image(), "synced");
    for (n, (i, img)) in images.into_iter().enumerate() {
        check(img, &format!("power loss {n} after entry {i}"));
    }
    println!("applied indexes recovered: {seen:?}");
    assert!(
        seen.len() > 20,
        "power loss cut at only {} places",
        seen.len()
    );
}
