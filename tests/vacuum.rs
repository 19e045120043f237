//! Vacuum: dead versions are removed and their space reused; a
//! long-running reader holds back only the versions it can see.

mod common;

use common::{open, rows};

fn file_len(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("data.strata"))
        .expect("data file")
        .len()
}

#[test]
fn long_reader_holds_back_only_what_it_sees() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "k", "v0").expect("put");
    tx.commit().expect("commit");
    let reader = db.begin().expect("reader");
    for i in 1..=100 {
        let mut tx = db.begin().expect("begin");
        tx.put(&t, "k", format!("v{i}")).expect("put");
        tx.commit().expect("commit");
    }
    let stats = db.vacuum().expect("vacuum");
    assert_eq!(
        stats.versions_removed, 99,
        "v1..v99 are invisible to everyone: {stats:?}"
    );
    assert_eq!(
        reader.get(&t, "k").expect("get").as_deref(),
        Some(&b"v0"[..]),
        "the reader's version survived"
    );
    assert_eq!(
        db.begin().expect("b").get(&t, "k").expect("get").as_deref(),
        Some(&b"v100"[..])
    );
    drop(reader);
    let stats = db.vacuum().expect("vacuum");
    assert_eq!(
        stats.versions_removed, 1,
        "v0 goes once the reader is gone: {stats:?}"
    );
    assert_eq!(
        db.vacuum().expect("vacuum").versions_removed,
        0,
        "nothing left to remove"
    );
}

#[test]
fn deleted_and_aborted_versions_are_removed_and_the_index_shrinks() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    for i in 0..2000u32 {
        tx.put(&t, format!("k{i:05}"), [7u8; 100]).expect("put");
    }
    tx.commit().expect("commit");
    let mut tx = db.begin().expect("begin");
    for i in 0..2000u32 {
        tx.put(&t, format!("k{i:05}"), [8u8; 100]).expect("put");
    }
    tx.rollback().expect("rollback");
    let mut tx = db.begin().expect("begin");
    for i in 0..1000u32 {
        assert!(tx.delete(&t, format!("k{i:05}")).expect("delete"));
    }
    tx.commit().expect("commit");
    let stats = db.vacuum().expect("vacuum");
    assert_eq!(stats.keys_removed, 1000, "{stats:?}");
    assert_eq!(
        stats.versions_removed,
        2000 + 1000,
        "aborted versions of every key plus deleted ones: {stats:?}"
    );
    assert!(
        stats.heap_pages_freed > 0,
        "pages emptied by the delete go back to the free list: {stats:?}"
    );
    let tx = db.begin().expect("begin");
    let left = rows(&tx, &t);
    assert_eq!(left.len(), 1000);
    assert!(left.iter().all(|(_, v)| v == &[7u8; 100]));
    assert_eq!(
        db.vacuum().expect("vacuum").keys,
        1000,
        "deleted keys left the index"
    );
}

#[test]
fn space_is_reused_across_update_cycles() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let big: Vec<u8> = vec![3; 200_000];
    let mut sizes = Vec::new();
    for round in 0..8u8 {
        let mut tx = db.begin().expect("begin");
        for i in 0..3000u32 {
            tx.put(&t, format!("k{i:05}"), [round; 200]).expect("put");
        }
        tx.put(&t, "big", &big).expect("put big");
        tx.commit().expect("commit");
        let s = db.vacuum().expect("vacuum");
        if round > 0 {
            assert!(
                s.overflow_pages_freed > 0,
                "old big value's pages must be freed: {s:?}"
            );
        }
        db.checkpoint().expect("checkpoint");
        sizes.push(file_len(tmp.path()));
    }
    // After the first cycles the file stops growing: freed space is reused
    // (and a free end is cut, so the size may dip between cycles).
    let (early, late) = (sizes[1..4].iter().max(), sizes[4..].iter().max());
    assert!(late <= early, "data file kept growing: {sizes:?}");
    let tx = db.begin().expect("begin");
    assert_eq!(tx.get(&t, "k00042").expect("get"), Some(vec![7u8; 200]));
    assert_eq!(
        tx.get(&t, "big").expect("get").map(|v| v.len()),
        Some(200_000)
    );
}

#[test]
fn vacuum_during_concurrent_writes_keeps_every_committed_value() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let writers: Vec<_> = (0..2u32)
        .map(|w| {
            let (db, t) = (db.clone(), t.clone());
            std::thread::spawn(move || {
                for i in 0..400u32 {
                    let mut tx = db.begin().expect("begin");
                    tx.put(&t, format!("w{w}-{}", i % 50), i.to_string())
                        .expect("put");
                    if i % 7 == 0 {
                        tx.delete(&t, format!("w{w}-{}", (i + 25) % 50))
                            .expect("delete");
                    }
                    tx.commit().expect("commit");
                }
            })
        })
        .collect();
    let vac = {
        let db = db.clone();
        std::thread::spawn(move || {
            for _ in 0..20 {
                db.vacuum().expect("vacuum");
            }
        })
    };
    for h in writers {
        h.join().expect("writer");
    }
    vac.join().expect("vacuum thread");
    db.vacuum().expect("final vacuum");
    let tx = db.begin().expect("begin");
    for w in 0..2u32 {
        // The last write to each key decides its value.
        let mut model = std::collections::BTreeMap::new();
        for i in 0..400u32 {
            model.insert(format!("w{w}-{}", i % 50), Some(i.to_string()));
            if i % 7 == 0 {
                model.insert(format!("w{w}-{}", (i + 25) % 50), None);
            }
        }
        for (k, v) in model {
            assert_eq!(
                tx.get(&t, &k)
                    .expect("get")
                    .map(|b| String::from_utf8(b).expect("utf8")),
                v,
                "key {k}"
            );
        }
    }
}

#[test]
fn a_scan_that_outlives_a_vacuum_pass_reads_its_own_tables_rows() {
    // Guards the lazy reads of a scan: it keeps the tuple ids of fetched
    // index entries across calls, and vacuum may free one of those tuples
    // and hand its slot to another table's row with the same key.
    let tmp = tempfile::tempdir().expect("tmp");
    let db = strata::Db::open_with(tmp.path(), strata::Options::default().vacuum_threshold(0))
        .expect("open");
    let a = db.table("a").expect("a");
    let b = db.table("b").expect("b");
    let key = |i: u32| format!("k{i:02}");
    let mut tx = db.begin().expect("begin");
    for i in 0..30 {
        tx.put(&a, key(i), "a").expect("put");
    }
    tx.put(&b, key(5), "b-old").expect("put");
    tx.commit().expect("commit");

    // An uncommitted version heads k05 when the scan fetches its entries.
    let mut w = db.begin().expect("writer");
    w.put(&a, key(5), "rolled back").expect("put");
    let reader = db.begin_read().expect("reader");
    let mut scan = reader.scan(&a, ..).expect("scan");
    let first = scan.next().expect("a row").expect("row");
    assert_eq!(first, (key(0).into_bytes(), b"a".to_vec()));

    // Vacuum frees the rolled-back version; b's next version may take
    // its slot, with a link to b's old version, which the reader sees.
    w.rollback().expect("rollback");
    let stats = db.vacuum().expect("vacuum");
    assert_eq!(stats.versions_removed, 1, "{stats:?}");
    let mut tx = db.begin().expect("begin");
    tx.put(&b, key(5), "b-new").expect("put");
    tx.commit().expect("commit");

    let rest: Vec<(Vec<u8>, Vec<u8>)> = scan.collect::<Result<_, _>>().expect("rows");
    let want: Vec<(Vec<u8>, Vec<u8>)> = (1..30)
        .map(|i| (key(i).into_bytes(), b"a".to_vec()))
        .collect();
    assert_eq!(rest, want);
}

#[test]
fn freed_pages_at_the_end_leave_the_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    // Its own table, whose one leaf holds every key: nothing but overflow
    // pages is allocated after the small rows.
    let b = db.table("b").expect("b");
    let mut tx = db.begin().expect("begin");
    for i in 0..300u32 {
        tx.put(&t, format!("small{i:03}"), format!("v{i}"))
            .expect("put");
    }
    tx.commit().expect("commit");
    let mut tx = db.begin().expect("begin");
    for i in 0..100u32 {
        tx.put(&b, format!("big{i:03}"), vec![i as u8; 20_000])
            .expect("put");
    }
    tx.commit().expect("commit");
    db.checkpoint().expect("checkpoint");
    let grown = file_len(tmp.path());
    assert!(grown > 100 * 20_000, "{grown}");

    let mut tx = db.begin().expect("begin");
    for i in 0..100u32 {
        assert!(tx.delete(&b, format!("big{i:03}")).expect("delete"));
    }
    tx.commit().expect("commit");
    let stats = db.vacuum().expect("vacuum");
    assert!(stats.pages_cut >= 300, "{stats:?}");
    assert_eq!(
        file_len(tmp.path()),
        grown,
        "the file is cut at the checkpoint"
    );
    db.checkpoint().expect("checkpoint");
    let cut = file_len(tmp.path());
    assert!(cut < grown / 4, "{cut} of {grown}");
    assert_eq!(db.stats().expect("stats").data_file_bytes, cut);
    db.check_integrity().expect("sound after the cut");

    // The file grows again from its new end, and everything survives a reopen.
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "again", vec![9u8; 50_000]).expect("put");
    tx.commit().expect("commit");
    drop(db);
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let tx = db.begin().expect("begin");
    let all = rows(&tx, &t);
    assert_eq!(all.len(), 301);
    assert_eq!(tx.get(&t, "again").expect("get"), Some(vec![9u8; 50_000]));
    assert_eq!(tx.get(&t, "small123").expect("get"), Some(b"v123".to_vec()));
    db.check_integrity().expect("sound after reopen");
}

#[test]
fn compaction_moves_live_rows_down_and_the_file_shrinks() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = strata::Db::open_with(tmp.path(), strata::Options::default().vacuum_threshold(0))
        .expect("open");
    let t = db.table("t").expect("t");
    let key = |i: u32| format!("{:08x}", i.wrapping_mul(2_654_435_761));
    for round in 0..2u8 {
        let mut tx = db.begin().expect("begin");
        for i in 0..8000u32 {
            tx.put(&t, key(i), [round; 150]).expect("put");
        }
        tx.commit().expect("commit");
    }
    db.vacuum().expect("vacuum");
    db.checkpoint().expect("checkpoint");
    let before = file_len(tmp.path());

    // Every other row goes: each page is left half full.
    let mut tx = db.begin().expect("begin");
    for i in (0..8000u32).step_by(2) {
        assert!(tx.delete(&t, key(i)).expect("delete"));
    }
    tx.commit().expect("commit");
    let reader = db.begin_read().expect("reader");
    let mut scan = reader.scan(&t, ..).expect("scan");
    let first = scan.next().expect("row").expect("row");
    let s = db.vacuum().expect("vacuum");
    assert!(
        s.versions_moved > 0 && s.leaves_merged > 0 && s.nodes_moved > 0,
        "{s:?}"
    );
    assert!(s.pages_cut > 0, "{s:?}");
    db.checkpoint().expect("checkpoint");
    let after = file_len(tmp.path());
    assert!(after * 10 < before * 7, "{after} of {before} bytes: {s:?}");

    // A scan that started before the moves reads on, unharmed.
    let rest: Vec<_> = scan.collect::<Result<_, _>>().expect("rows");
    assert_eq!(rest.len() + 1, 4000);
    assert!(std::iter::once(&first)
        .chain(&rest)
        .all(|(_, v)| v == &[1u8; 150]));
    drop(reader);
    db.check_integrity().expect("sound after compaction");
    drop(db);
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let tx = db.begin().expect("begin");
    for i in 0..8000u32 {
        let want = (i % 2 == 1).then(|| vec![1u8; 150]);
        assert_eq!(tx.get(&t, key(i)).expect("get"), want, "key {i}");
    }
    db.check_integrity().expect("sound after reopen");
}
