//! Vacuum: dead versions are removed and their space reused; a
//! long-running reader holds back only the versions it can see.

mod common;

use common::{open, rows};

fn file_len(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("data.strata"))
        .expect("data file")
        .len()
}

/// A database whose vacuum runs only when the test calls it, with a cache
/// of `cache` bytes.
fn by_hand(dir: &std::path::Path, cache: usize) -> strata::Db {
    strata::Db::open_with(
        dir,
        strata::Options::default()
            .cache_size(cache)
            .vacuum_threshold(0)
            .background(false),
    )
    .expect("open")
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
    let t = common::create(&db, "t");
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
    // Each value took two overflow pages and left 3 680 bytes in its tuple:
    // 200 overflow pages and 50 heap pages at the end of the file.
    assert!(stats.pages_cut >= 240, "{stats:?}");
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

/// A database whose `t` holds filler rows first and then, at the file's
/// end, `pieces` values making `mib` MiB; the filler deleted. Returns the
/// database (nothing in the background) and the values' keys and length.
fn large_values_past_deleted_filler(
    dir: &std::path::Path,
    mib: usize,
    pieces: usize,
) -> (strata::Db, strata::Table, usize) {
    let db = strata::Db::open_with(
        dir,
        strata::Options::default()
            .cache_size(4 << 20)
            .vacuum_threshold(0)
            .background(false),
    )
    .expect("open");
    let t = db.table("t").expect("t");
    for c in 0..mib as u32 {
        let mut tx = db.begin().expect("begin");
        for i in 0..32u32 {
            tx.put(&t, format!("f{c:04}-{i:02}"), vec![1u8; 30_000])
                .expect("put");
        }
        tx.commit().expect("commit");
    }
    let len = (mib << 20) / pieces;
    for p in 0..pieces {
        let mut tx = db.begin().expect("begin");
        tx.put(&t, format!("big{p:05}"), vec![p as u8; len])
            .expect("put");
        tx.commit().expect("commit");
    }
    let mut tx = db.begin().expect("begin");
    for c in 0..mib as u32 {
        for i in 0..32u32 {
            tx.delete(&t, format!("f{c:04}-{i:02}")).expect("delete");
        }
    }
    tx.commit().expect("commit");
    db.checkpoint().expect("checkpoint");
    (db, t, len)
}

#[test]
fn moving_a_large_value_reads_its_chain_about_once() {
    // One value of 12 MiB (about 1 540 overflow pages) past the limit,
    // through a cache of 512 pages: compaction moves its pages 16 to a
    // mini-transaction, and each goes on from where the last stopped
    // (walking the chain from its start each time read it about 100
    // times over: quadratic).
    let tmp = tempfile::tempdir().expect("tmp");
    let (db, t, len) = large_values_past_deleted_filler(tmp.path(), 12, 1);
    let chain = (len as u64).div_ceil(8160);
    let before = db.stats().expect("stats").page_reads;
    let s = db.vacuum().expect("vacuum");
    let reads = db.stats().expect("stats").page_reads - before;
    assert!(
        s.overflow_pages_moved > chain / 2,
        "the value did not move: {s:?}"
    );
    assert!(
        reads < 6 * chain,
        "the pass read {reads} pages to move {} of a {chain}-page chain",
        s.overflow_pages_moved
    );
    let tx = db.begin_read().expect("reader");
    assert_eq!(tx.get(&t, "big00000").expect("get"), Some(vec![0u8; len]));
    drop(tx);
    db.check_integrity().expect("sound");
}

#[test]
fn a_compaction_that_moves_no_large_value_reads_none() {
    // Large values low in the file, then 1 KB rows, three in four deleted:
    // compaction moves rows, and no overflow page lies past its limit, so
    // it walks no chain.
    let tmp = tempfile::tempdir().expect("tmp");
    let db = by_hand(tmp.path(), 16 << 20);
    let big = db.table("big").expect("big");
    let t = db.table("t").expect("t");
    for i in 0..10u32 {
        let mut tx = db.begin().expect("begin");
        tx.put(&big, format!("v{i:02}"), vec![i as u8; 1 << 20])
            .expect("put");
        tx.commit().expect("commit");
    }
    let key = |i: u32| format!("{:08x}", i.wrapping_mul(2_654_435_761));
    for c in 0..8u32 {
        let mut tx = db.begin().expect("begin");
        for i in c * 1_000..(c + 1) * 1_000 {
            tx.put(&t, key(i), [1u8; 1_000]).expect("put");
        }
        tx.commit().expect("commit");
    }
    let mut tx = db.begin().expect("begin");
    for i in (0..8_000).filter(|i| i % 4 != 0) {
        tx.delete(&t, key(i)).expect("delete");
    }
    tx.commit().expect("commit");
    db.checkpoint().expect("checkpoint");
    let before = db.stats().expect("stats").page_reads;
    let s = db.vacuum().expect("vacuum");
    let reads = db.stats().expect("stats").page_reads - before;
    assert!(
        s.versions_moved > 0 && s.pages_cut > 0,
        "no compaction: {s:?}"
    );
    assert_eq!(s.overflow_pages_moved, 0);
    // The values hold 1 290 overflow pages; the rows' pages are about 1 000.
    assert!(reads < 1_290, "the pass read {reads} pages: {s:?}");
}

#[test]
fn passes_with_nothing_to_gain_do_not_scan_the_file() {
    // Mostly large values, nothing deleted: a few updated rows give each
    // pass something to vacuum, and nothing to compact. Counting the free
    // pages and the heap's free bytes says so without a scan from the end.
    let tmp = tempfile::tempdir().expect("tmp");
    let db = by_hand(tmp.path(), 4 << 20);
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    for i in 0..600u32 {
        tx.put(&t, format!("r{i:04}"), [1u8; 1_000]).expect("put");
    }
    tx.commit().expect("commit");
    for i in 0..8u32 {
        let mut tx = db.begin().expect("begin");
        tx.put(&t, format!("v{i:02}"), vec![i as u8; 1 << 20])
            .expect("put");
        tx.commit().expect("commit");
    }
    db.checkpoint().expect("checkpoint");
    let pages = db.stats().expect("stats").pages;
    for pass in 0..3u32 {
        let mut tx = db.begin().expect("begin");
        for i in 0..20u32 {
            tx.put(&t, format!("r{:04}", pass * 20 + i), [2u8; 1_000])
                .expect("put");
        }
        tx.commit().expect("commit");
        let before = db.stats().expect("stats").page_reads;
        let s = db.vacuum().expect("vacuum");
        let reads = db.stats().expect("stats").page_reads - before;
        assert_eq!(s.pages_cut + s.versions_moved + s.overflow_pages_moved, 0);
        assert!(
            reads < pages / 10,
            "pass {pass} read {reads} of {pages} pages: {s:?}"
        );
    }
}

#[test]
fn a_moved_version_keeps_its_deleter() {
    // Deleted rows a reader still sees lie at the end of the file;
    // compaction moves them, and their copies must keep their deleter.
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let key = |i: u32| format!("f{i:05}");
    for c in 0..8u32 {
        let mut tx = db.begin().expect("begin");
        for i in c * 500..(c + 1) * 500 {
            tx.put(&t, key(i), [1u8; 1_000]).expect("put");
        }
        tx.commit().expect("commit");
    }
    let mut tx = db.begin().expect("begin");
    for i in 0..50u32 {
        tx.put(&t, format!("k{i:02}"), [2u8; 1_000]).expect("put");
    }
    tx.commit().expect("commit");
    let mut tx = db.begin().expect("begin");
    for i in 0..4_000u32 {
        tx.delete(&t, key(i)).expect("delete");
    }
    tx.commit().expect("commit");
    let reader = db.begin_with(strata::Isolation::Snapshot).expect("reader");
    assert!(reader.get(&t, "k00").expect("get").is_some());
    let mut tx = db.begin().expect("begin");
    for i in 0..50u32 {
        tx.delete(&t, format!("k{i:02}")).expect("delete");
    }
    tx.commit().expect("commit");
    let s = db.vacuum().expect("vacuum");
    assert!(
        s.versions_moved >= 50,
        "the deleted rows did not move: {s:?}"
    );
    for i in 0..50u32 {
        assert!(reader.get(&t, format!("k{i:02}")).expect("get").is_some());
    }
    drop(reader);
    let tx = db.begin_read().expect("reader");
    for i in 0..50u32 {
        assert_eq!(
            tx.get(&t, format!("k{i:02}")).expect("get"),
            None,
            "k{i:02} came back"
        );
    }
}

#[test]
fn a_page_that_will_not_move_stops_compaction_until_the_file_changes() {
    // A crash in the middle of writing a large value leaves its overflow
    // pages at the end of the file, named by no tuple (FORMAT.md: space,
    // not data, is lost). Compaction cannot move them, so its cut stops
    // there; later passes over a file of the same length do not plan and
    // move rows again for a cut that cannot happen.
    use std::path::Path;
    use std::sync::Arc;
    use strata::fault::FaultFs;
    let dir = Path::new("/db");
    let opts = || {
        strata::Options::default()
            .background(false)
            .cache_size(0)
            .vacuum_threshold(0)
    };
    let workload = |fs: &FaultFs, leak: bool| -> strata::Result<()> {
        let db = strata::Db::open_vfs(Arc::new(fs.clone()), dir, opts())?;
        let t = db.table("t")?;
        let mut tx = db.begin()?;
        for i in 0..600u32 {
            tx.put(&t, format!("r{i:04}"), [1u8; 1_000])?;
        }
        for i in 0..8u32 {
            tx.put(&t, format!("v{i}"), vec![i as u8; 200_000])?;
        }
        tx.commit()?;
        db.checkpoint()?;
        if leak {
            let mut tx = db.begin()?;
            tx.put(&t, "leak", vec![7u8; 4_000_000])?;
            tx.commit()?;
        }
        Ok(())
    };
    let before = FaultFs::new();
    workload(&before, false).expect("fault-free run");
    let full = FaultFs::new();
    workload(&full, true).expect("fault-free run");
    // The first crash point in the large value's write whose image holds
    // some of its pages.
    let db = (before.ops() + 1..=full.ops())
        .find_map(|n| {
            let fs = FaultFs::new();
            fs.crash_at(n);
            workload(&fs, true).err()?;
            let img = fs.process_crash_image();
            let db = strata::Db::open_vfs(Arc::new(img), dir, opts()).expect("recovery");
            let leaked = db.check_integrity().expect("integrity").leaked_pages;
            (leaked > 0).then_some(db)
        })
        .expect("no crash point leaves pages behind");
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    for i in (0..600u32).filter(|i| i % 4 != 0) {
        tx.delete(&t, format!("r{i:04}")).expect("delete");
    }
    for i in 0..6u32 {
        tx.delete(&t, format!("v{i}")).expect("delete");
    }
    tx.commit().expect("commit");
    let first = db.vacuum().expect("vacuum");
    for pass in 1..4 {
        let reads = db.stats().expect("stats").page_reads;
        let s = db.vacuum().expect("vacuum");
        let reads = db.stats().expect("stats").page_reads - reads;
        assert_eq!(s.versions_moved + s.overflow_pages_moved + s.pages_cut, 0);
        assert!(
            reads < 100,
            "pass {pass} read {reads} pages to cut nothing (the first: {first:?})"
        );
    }
    let tx = db.begin_read().expect("reader");
    assert_eq!(rows(&tx, &t).len(), 150 + 2);
    drop(tx);
    db.check_integrity().expect("sound");
}
