//! `Db::stats`: row, version and dead-version counts agree with what was
//! written and with what vacuum removes; log and prepared figures.

mod common;

use common::open;

fn table<'a>(s: &'a strata::Stats, name: &str) -> &'a strata::TableStats {
    s.tables
        .iter()
        .find(|t| t.name == name)
        .expect("table listed")
}

#[test]
fn stats_count_rows_versions_and_what_vacuum_would_remove() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("a").expect("a");
    common::create(&db, "empty");
    let mut tx = db.begin().expect("begin");
    for i in 0..100 {
        tx.put(&t, format!("k{i:03}"), "v0").expect("put");
    }
    tx.commit().expect("commit");
    let reader = db.begin_read().expect("reader");
    let mut tx = db.begin().expect("begin");
    for i in 0..30 {
        tx.put(&t, format!("k{i:03}"), "v1").expect("update");
    }
    for i in 90..100 {
        assert!(tx.delete(&t, format!("k{i:03}")).expect("delete"));
    }
    tx.commit().expect("commit");

    let s = db.stats().expect("stats");
    let a = table(&s, "a");
    assert_eq!((a.rows, a.keys, a.versions), (90, 100, 130));
    assert_eq!(
        a.dead_versions, 0,
        "the open reader still sees every old version"
    );
    let e = table(&s, "empty");
    assert_eq!((e.rows, e.keys, e.versions, e.dead_versions), (0, 0, 0, 0));
    assert_eq!(s.tables.len(), 2);

    drop(reader);
    let s = db.stats().expect("stats");
    assert_eq!(
        table(&s, "a").dead_versions,
        40,
        "30 overwritten + 10 deleted"
    );
    assert!((s.dead_share() - 40.0 / 130.0).abs() < 1e-9);

    db.vacuum().expect("vacuum");
    let s = db.stats().expect("stats");
    let a = table(&s, "a");
    assert_eq!(
        (a.rows, a.keys, a.versions, a.dead_versions),
        (90, 90, 90, 0)
    );
    assert!(s.heap_pages >= 1 && s.heap_free_bytes > 0);
    assert!(s.pages >= s.heap_pages + s.free_pages);
}

#[test]
fn stats_report_the_log_range_the_checkpoint_and_prepared_transactions() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = common::create(&db, "a");
    db.checkpoint().expect("checkpoint");
    let s = db.stats().expect("stats");
    assert_eq!(
        s.checkpoint_redo, s.wal_end,
        "nothing logged since the checkpoint"
    );
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "k", "v").expect("put");
    tx.prepare("gid-1").expect("prepare");
    let s = db.stats().expect("stats");
    assert!(s.wal_end > s.checkpoint_redo);
    assert!(s.wal_start <= s.checkpoint_redo);
    assert!(s.wal_segments >= 1 && s.wal_bytes >= s.wal_end.0 - s.wal_start.0);
    assert_eq!(s.prepared.len(), 1);
    assert_eq!(s.prepared[0].gid, "gid-1");
    assert_eq!(table(&s, "a").rows, 0, "in doubt is not yet a row");
    assert_eq!(
        s.format_version,
        strata::internals::store::meta::FORMAT_VERSION
    );
    assert_eq!(s.page_size, strata::limits::PAGE_SIZE);
    assert!(s.data_file_bytes >= s.pages * s.page_size as u64 - s.page_size as u64);
    db.commit_prepared("gid-1").expect("commit");
    assert_eq!(table(&db.stats().expect("stats"), "a").rows, 1);
}

/// Guards the space a quiet database kept: the log segment in use was never
/// deleted, so up to a segment (16 MiB) of log outlived every checkpoint.
#[test]
fn a_checkpoint_returns_the_log_it_no_longer_needs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("a").expect("a");
    let mut tx = db.begin().expect("begin");
    for i in 0..20_000u32 {
        tx.put(&t, i.to_be_bytes(), [1u8; 100]).expect("put");
    }
    tx.commit().expect("commit");
    let before = db.stats().expect("stats");
    assert!(
        before.wal_bytes > 2 << 20,
        "the workload wrote {} log bytes",
        before.wal_bytes
    );
    db.checkpoint().expect("checkpoint");
    let after = db.stats().expect("stats");
    assert_eq!(after.wal_segments, 1);
    assert!(
        after.wal_bytes < 4096,
        "{} log bytes kept after the checkpoint",
        after.wal_bytes
    );
    drop(db);
    let db = open(tmp.path());
    let tx = db.begin_read().expect("read");
    assert_eq!(common::rows(&tx, &db.table("a").expect("a")).len(), 20_000);
}

/// `page_reads` counts the page cache's misses: a table three times the
/// cache is read back from the file when scanned, one the cache holds is
/// not. `page_writes` counts what a checkpoint wrote.
#[test]
fn stats_count_page_reads_past_the_cache_and_none_within_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rows = |db: &strata::Db, t: &strata::Table| {
        let r = db.begin_read().expect("reader");
        r.scan(t, ..).expect("scan").count()
    };
    let cache_pages = {
        let opts = strata::Options::default().cache_size(4 << 20);
        let db = strata::Db::open_with(tmp.path(), opts).expect("open");
        let t = db.table("t").expect("t");
        let mut tx = db.begin().expect("begin");
        for i in 0..60_000u32 {
            tx.put(&t, format!("k{i:08}"), [7u8; 180]).expect("put");
        }
        tx.commit().expect("commit");
        db.checkpoint().expect("checkpoint");
        let s = db.stats().expect("stats");
        assert!(
            s.page_writes >= s.heap_pages,
            "{} pages written, {} heap pages on disk",
            s.page_writes,
            s.heap_pages
        );
        let before = s.page_reads;
        assert_eq!(rows(&db, &t), 60_000);
        let s = db.stats().expect("stats");
        let cache_pages = (s.cache_bytes / s.page_size) as u64;
        assert!(
            s.heap_pages > 3 * cache_pages,
            "the table outgrows the cache"
        );
        assert!(
            s.page_reads - before >= s.heap_pages - cache_pages,
            "{} reads for {} heap pages through {} frames",
            s.page_reads - before,
            s.heap_pages,
            cache_pages
        );
        cache_pages
    };
    let opts = strata::Options::default().cache_size(64 << 20);
    let db = strata::Db::open_with(tmp.path(), opts).expect("reopen");
    let t = db.table("t").expect("t");
    db.stats().expect("stats");
    assert_eq!(rows(&db, &t), 60_000);
    let warm = db.stats().expect("stats");
    assert!(
        warm.page_reads > cache_pages,
        "the first pass read the table"
    );
    assert_eq!(rows(&db, &t), 60_000);
    assert_eq!(
        db.stats().expect("stats").page_reads,
        warm.page_reads,
        "everything was cached"
    );
}
