//! Checkpoints racing other threads' I/O, checked on power-loss images.
//!
//! Every workload here is many times the page cache, so pages leave the
//! cache through evictions while a checkpoint flushes; `FaultFs::hold`
//! forces the orderings that matter (an eviction's page write landing
//! after the checkpoint's CONTROL), and every image must hold every
//! acknowledged commit.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strata::io::{FaultFs, OpKind, OpMatch};
use strata::{Db, Options};

const DIR: &str = "/db";
const ROWS: u32 = 10_000;

fn opts() -> Options {
    Options::default()
        .background(false)
        .cache_size(0)
        .wal_segment_size(1 << 20)
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

fn value(i: u32, round: u8) -> Vec<u8> {
    let mut v = vec![round; 400];
    v[..4].copy_from_slice(&i.to_le_bytes());
    v
}

/// Loads `ROWS` rows (about 12 times the smallest cache), checkpoints,
/// then deletes each and inserts a row in its place under a new key: the
/// cache ends full of dirty pages whose changes lie before the next
/// checkpoint's redo point, and every such change shows if it is lost (a
/// deleted row back, an inserted one missing). The second round goes in a
/// scattered order, so that the page the checkpoint writes first (the
/// lowest) is not the frame the clock hand reaches next.
fn loaded(fs: &FaultFs) -> (Db, strata::Table) {
    let db = Db::open_vfs(Arc::new(fs.clone()), Path::new(DIR), opts()).expect("open");
    let t = db.table("t").expect("table");
    for chunk in (0..ROWS).collect::<Vec<_>>().chunks(2_000) {
        let mut tx = db.begin().expect("begin");
        for &i in chunk {
            tx.put(&t, key(i), value(i, 1)).expect("put");
        }
        tx.commit().expect("commit");
    }
    db.checkpoint().expect("checkpoint");
    let order: Vec<u32> = (0..ROWS).map(|i| (i * 7_919 + 1) % ROWS).collect();
    for chunk in order.chunks(2_000) {
        let mut tx = db.begin().expect("begin");
        for &i in chunk {
            assert!(tx.delete(&t, key(i)).expect("delete"));
            tx.put(&t, key(ROWS + i), value(i, 2)).expect("put");
        }
        tx.commit().expect("commit");
    }
    (db, t)
}

fn check(img: FaultFs, what: &str) {
    let db = Db::open_vfs(Arc::new(img), Path::new(DIR), opts())
        .unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
    let t = db.table("t").expect("table");
    let tx = db.begin_read().expect("begin");
    let mut n = 0u32;
    for row in tx.scan(&t, ..).expect("scan") {
        let (k, v) = row.unwrap_or_else(|e| panic!("{what}: row: {e}"));
        assert_eq!(&*k, key(ROWS + n).as_slice(), "{what}: row {n}");
        assert_eq!(&*v, value(n, 2).as_slice(), "{what}: row {n}'s value");
        n += 1;
    }
    assert_eq!(n, ROWS, "{what}: rows");
    drop(tx);
    let report = db
        .check_integrity()
        .unwrap_or_else(|e| panic!("{what}: integrity: {e}"));
    assert_eq!(report.leaked_pages, 0, "{what}: leaked pages");
}

// Guards against a checkpoint writing CONTROL while an eviction's page
// write is still in flight: the page's dirty bit was already clear, the
// flush skipped it, and its changes (before the new redo point) were lost
// when the late write did not survive the power loss.
#[test]
fn a_checkpoint_waits_for_an_eviction_write_in_flight() {
    let fs = FaultFs::new();
    let (db, t) = loaded(&fs);
    let data = OpMatch {
        kind: OpKind::Write,
        file: strata::DATA_FILE,
    };
    // The checkpoint's first page write waits until a reader's eviction
    // starts writing, and that eviction's write waits for CONTROL.
    let flushing = fs.hold(data, data, Duration::from_secs(60));
    let _evicting = fs.hold(
        data,
        OpMatch {
            kind: OpKind::Rename,
            file: "CONTROL",
        },
        Duration::from_secs(1),
    );
    std::thread::scope(|s| {
        let checkpoint = s.spawn(|| db.checkpoint());
        assert!(
            flushing.wait_holding(Duration::from_secs(60)),
            "the checkpoint wrote no page"
        );
        let reader = s.spawn(|| {
            let tx = db.begin_read().expect("begin");
            tx.scan(&t, ..).expect("scan").count()
        });
        checkpoint
            .join()
            .expect("checkpoint thread")
            .expect("checkpoint");
        assert_eq!(reader.join().expect("reader"), ROWS as usize);
    });
    assert_eq!(
        flushing.released(),
        Some(true),
        "the reader's eviction never wrote a page: the ordering was not made"
    );
    // Images now, before dropping `db` (closing checkpoints again).
    check(fs.synced_image(), "the image without unsynced writes");
    for seed in 0..2 {
        check(fs.power_loss_image(seed), &format!("image {seed}"));
    }
    drop(db);
}
