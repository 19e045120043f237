//! Apply with an index: a caller's log index recorded with what its entry
//! changed (`Transaction::set_applied_index`, `Db::set_applied_index`),
//! rising only, and after power loss naming exactly the entries whose
//! effects are there.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata::clock::FixedEpsilon;
use strata::fault::{FaultFs, FaultKind, OpKind, OpMatch};
use strata::{Db, Durability, Error, Options};

/// Options without background work, at durability `d`.
fn quiet(d: Durability) -> Options {
    Options::default().background(false).durability(d)
}

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
    let prepared_at = tx.prepare("g").expect("prepare");
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
    // A decision records it too; refused, the transaction stays prepared.
    assert!(matches!(
        db.commit_prepared_applying("g", prepared_at, 8),
        Err(Error::IndexRefused { .. })
    ));
    assert_eq!(db.prepared_transactions().expect("list").len(), 1);
    db.commit_prepared_applying("g", prepared_at, 9)
        .expect("decide");
    assert_eq!(db.applied_index().expect("index"), 9);
    // A read-only transaction records nothing: an index is a write.
    let mut ro = db.begin_read().expect("begin_read");
    ro.set_applied_index(10);
    assert!(matches!(ro.commit(), Err(Error::ReadOnlyTransaction)));
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"e", b"5").expect("put");
    tx.set_applied_index(10);
    tx.prepare("r").expect("prepare");
    db.rollback_prepared_applying("r", 11).expect("roll back");
    db.close().expect("close");
    let db = common::open(dir.path());
    assert_eq!(db.applied_index().expect("index"), 11, "after a reopen");
    assert!(db.prepared_transactions().expect("list").is_empty());
    let t = db.table("t").expect("table");
    let tx = db.begin().expect("begin");
    assert_eq!(
        tx.get(&t, b"b").expect("get"),
        None,
        "a refused commit, after a reopen"
    );
    assert_eq!(tx.get(&t, b"c").expect("get"), Some(b"3".to_vec()));
}

/// The log cut after every one of its records in turn — every state a
/// crash can leave, whatever the write and sector boundaries — holds
/// exactly the entries up to its applied index.
#[test]
fn every_log_prefix_holds_exactly_the_entries_up_to_its_index() {
    use strata::internals::ids::Lsn;
    use strata::internals::wal::{reader::LogReader, segment};
    let dir = Path::new("/db");
    let fs = FaultFs::new();
    let o = || quiet(Durability::Immediate);
    let db = Db::open_vfs(Arc::new(fs.clone()), dir, o()).expect("open");
    let t = common::create(&db, "t");
    db.checkpoint().expect("checkpoint");
    let effect = |i: u64| (!i.is_multiple_of(3)).then_some(i % 5);
    for i in 1..=30 {
        match effect(i) {
            None => db.set_applied_index(i).expect("alone"),
            Some(k) => {
                let mut tx = db.begin().expect("begin");
                tx.put(&t, k.to_be_bytes(), i.to_be_bytes()).expect("put");
                tx.set_applied_index(i);
                tx.commit().expect("commit");
            }
        }
    }
    // Entry 31 prepares a write of key 9, entry 32 commits it.
    let mut tx = db.begin().expect("begin");
    tx.put(&t, 9u64.to_be_bytes(), 32u64.to_be_bytes())
        .expect("put");
    tx.set_applied_index(31);
    let prepared_at = tx.prepare("g").expect("prepare");
    db.commit_prepared_applying("g", prepared_at, 32)
        .expect("decide");
    let full = fs.process_crash_image();
    drop(db);
    let wal_dir = dir.join(strata::WAL_DIR);
    let segs = segment::list(&full, &wal_dir).expect("segments");
    assert_eq!(segs.len(), 1, "one segment");
    let seg_path = segment::path(&wal_dir, segs[0]);
    let bytes = full.read_file(&seg_path).expect("segment");
    let mut ends = Vec::new();
    let mut r = LogReader::open(&full, &wal_dir, Lsn(segs[0])).expect("reader");
    while let Some(e) = r.next_ref().expect("record") {
        ends.push(e.end.0);
    }
    let mut seen = BTreeSet::new();
    for end in ends {
        let img = full.synced_image();
        let mut cut = bytes.clone();
        cut.truncate((end - segs[0]) as usize);
        img.write_file(&seg_path, cut);
        let db = match Db::open_vfs(Arc::new(img), dir, o()) {
            // A cut before the checkpoint's redo point is no crash state.
            Err(Error::Corruption { reason, .. })
                if seen.is_empty() && reason.contains("redo point") =>
            {
                continue
            }
            r => r.expect("reopen"),
        };
        let applied = db.applied_index().expect("index");
        seen.insert(applied);
        let mut want = BTreeMap::new();
        for i in 1..=applied.min(30) {
            if let Some(k) = effect(i) {
                want.insert(k.to_be_bytes().to_vec(), i.to_be_bytes().to_vec());
            }
        }
        if applied >= 32 {
            want.insert(9u64.to_be_bytes().to_vec(), 32u64.to_be_bytes().to_vec());
        }
        let prepared = db.prepared_transactions().expect("list").len();
        assert_eq!(
            prepared,
            usize::from(applied == 31),
            "log cut at LSN {end}: in doubt"
        );
        let tx = db.begin_with(strata::Isolation::Snapshot).expect("begin");
        let rows: BTreeMap<Vec<u8>, Vec<u8>> = common::rows(&tx, &db.table("t").expect("table"))
            .into_iter()
            .collect();
        assert_eq!(rows, want, "log cut at LSN {end}: applied index {applied}");
    }
    assert_eq!(
        seen.len(),
        33,
        "every index from 0 to 32 was a cut: {seen:?}"
    );
}

/// `applied_index` reports an entry only once it is visible: a follower
/// that serves a read once the index reaches the read's index finds the
/// entry's write (here in a commit wait of 700 ms).
#[test]
fn the_applied_index_is_reported_only_once_the_entry_is_visible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = common::open(dir.path());
    let t = common::create(&db, "t");
    let ts = FixedEpsilon::system_now()
        .expect("now")
        .saturating_add(Duration::from_millis(700));
    let seen = std::thread::scope(|s| {
        s.spawn(|| {
            let mut tx = db.begin().expect("begin");
            tx.put(&t, b"k", b"v").expect("put");
            tx.set_applied_index(1);
            tx.commit_at(ts).expect("commit_at");
        });
        let start = Instant::now();
        while db.applied_index().expect("index") < 1 {
            assert!(start.elapsed() < Duration::from_secs(20), "never applied");
            std::thread::sleep(Duration::from_millis(1));
        }
        db.begin_read().expect("begin").get(&t, b"k").expect("get")
    });
    assert_eq!(
        seen,
        Some(b"v".to_vec()),
        "index 1 reported, its write not visible"
    );
}

/// Under `Immediate`, `applied_index` reports an entry only once it is
/// durable: a power loss while its fsync is held leaves the database at
/// or above every index reported.
#[test]
fn the_applied_index_is_reported_only_once_the_entry_is_durable() {
    let dir = Path::new("/db");
    let fs = FaultFs::new();
    let o = || quiet(Durability::Immediate);
    let db = Db::open_vfs(Arc::new(fs.clone()), dir, o()).expect("open");
    let t = db.table("t").expect("table");
    let hold = fs.hold(
        OpMatch {
            kind: OpKind::Sync,
            file: "",
        },
        OpMatch {
            kind: OpKind::Remove,
            file: "never",
        },
        Duration::from_secs(3),
    );
    let (reported, image) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut tx = db.begin().expect("begin");
            tx.put(&t, b"k", b"v").expect("put");
            tx.set_applied_index(1);
            tx.commit().expect("commit");
        });
        assert!(hold.wait_holding(Duration::from_secs(20)), "no fsync held");
        (db.applied_index().expect("index"), fs.synced_image())
    });
    let db = Db::open_vfs(Arc::new(image), dir, o()).expect("reopen");
    let after = db.applied_index().expect("index");
    assert!(
        after >= reported,
        "reported {reported}, after power loss {after}"
    );
}

/// An index recorded alone whose fsync fails says the outcome is unknown
/// (the record may be in the log), as a commit does.
#[test]
fn a_failed_fsync_of_an_index_alone_says_the_outcome_is_unknown() {
    let dir = Path::new("/db");
    let fs = FaultFs::new();
    let o = || quiet(Durability::Immediate);
    let db = Db::open_vfs(Arc::new(fs.clone()), dir, o()).expect("open");
    db.set_applied_index(1).expect("first");
    let before = fs.ops();
    db.set_applied_index(2).expect("second");
    let per = fs.ops() - before;
    // The last operation of the next one: its fsync.
    fs.fail_at(fs.ops() + per, FaultKind::Io, false);
    let r = db.set_applied_index(3);
    assert!(
        matches!(r, Err(Error::CommitOutcomeUnknown { .. })),
        "{r:?}"
    );
    assert_eq!(db.applied_index().expect("index"), 2, "not reported");
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

/// Under `Eventual`, `durable_applied_index` is what a power loss cannot
/// take back: power-loss images taken along an apply loop each recover
/// an applied index at or above the durable one reported just before,
/// which lags the applied index until the log is synced.
#[test]
fn the_durable_applied_index_survives_power_loss() {
    let dir = Path::new("/db");
    let fs = FaultFs::new();
    let o = || quiet(Durability::Eventual);
    let db = Db::open_vfs(Arc::new(fs.clone()), dir, o()).expect("open");
    let t = db.table("t").expect("table");
    let mut lagged = false;
    let mut images = Vec::new();
    for i in 1..=200u64 {
        let mut tx = db.begin().expect("begin");
        tx.put(&t, i.to_be_bytes(), [1u8; 500]).expect("put");
        tx.set_applied_index(i);
        tx.commit().expect("commit");
        if i % 50 == 0 {
            db.checkpoint().expect("checkpoint");
            assert_eq!(
                db.durable_applied_index().expect("durable"),
                i,
                "after a checkpoint"
            );
        }
        let durable = db.durable_applied_index().expect("durable");
        assert!(durable <= db.applied_index().expect("applied"));
        lagged |= durable < i;
        if i % 10 == 5 {
            images.push((durable, fs.power_loss_image(i)));
        }
    }
    for (n, (durable, img)) in images.into_iter().enumerate() {
        let db = Db::open_vfs(Arc::new(img), dir, o()).expect("reopen");
        let after = db.applied_index().expect("index");
        assert!(
            after >= durable,
            "image {n}: reported durable {durable}, recovered {after}"
        );
    }
    assert!(lagged, "the durable index never lagged: nothing was tested");
}
