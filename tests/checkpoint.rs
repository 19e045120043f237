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

/// Opens a crash image; recovery must succeed.
fn recover(img: FaultFs, what: &str) -> Db {
    Db::open_vfs(Arc::new(img), Path::new(DIR), opts())
        .unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"))
}

/// The integrity check is clean and finds no page nothing refers to.
fn integrity_clean(db: &Db, what: &str) {
    let report = db
        .check_integrity()
        .unwrap_or_else(|e| panic!("{what}: integrity: {e}"));
    assert_eq!(report.leaked_pages, 0, "{what}: leaked pages");
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
    let db = recover(img, what);
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
    integrity_clean(&db, what);
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

const KEYS: u32 = 6_000;
const WRITERS: u32 = 2;
const TXNS: u32 = 25;

fn row_key(k: u32) -> Vec<u8> {
    format!("row{k:05}").into_bytes()
}

/// The keys writer `w`'s transaction `i` updates (each writer its own).
fn written(w: u32, i: u32) -> [u32; 3] {
    let spread =
        |n: u32| (i.wrapping_mul(2_654_435_761).wrapping_add(n) % (KEYS / WRITERS)) * WRITERS + w;
    [spread(0), spread(7), spread(13)]
}

/// `KEYS` rows of 600 bytes (about 12 times the smallest cache), loaded
/// and closed cleanly: each crash point starts from a copy of it.
fn preloaded() -> FaultFs {
    let fs = FaultFs::new();
    let db = Db::open_vfs(Arc::new(fs.clone()), Path::new(DIR), opts()).expect("open");
    let t = db.table("t").expect("table");
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1_000) {
        let mut tx = db.begin().expect("begin");
        for &k in chunk {
            tx.put(&t, row_key(k), vec![0u8; 600]).expect("put");
        }
        tx.commit().expect("commit");
    }
    drop(db);
    fs.process_crash_image()
}

/// Writers updating rows spread over the whole table, a reader scanning
/// it (so pages leave the cache all the time), and the maintenance thread
/// checkpointing every few milliseconds and vacuuming. Returns each
/// writer's acknowledged transactions, and whether every scan the reader
/// began gave the whole table (it stops at its first error).
fn busy(fs: &FaultFs) -> (Vec<u32>, bool) {
    let opts = opts()
        .background(true)
        .checkpoint_interval(Duration::from_millis(5))
        .vacuum_threshold(200);
    let Ok(db) = Db::open_vfs(Arc::new(fs.clone()), Path::new(DIR), opts) else {
        return (vec![0; WRITERS as usize], false);
    };
    let Ok(t) = db.table("t") else {
        return (vec![0; WRITERS as usize], false);
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            for _ in 0..20 {
                let Ok(tx) = db.begin_read() else {
                    return false;
                };
                let Ok(scan) = tx.scan(&t, row_key(0)..row_key(KEYS)) else {
                    return false;
                };
                let mut n = 0;
                for row in scan {
                    match row {
                        Ok((k, _)) if *k == *row_key(n) => n += 1,
                        _ => return false,
                    }
                }
                if n != KEYS {
                    return false;
                }
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
            }
            true
        });
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (db, t) = (&db, &t);
                s.spawn(move || {
                    let mut acked = 0;
                    for i in 1..=TXNS {
                        let r = db.begin().and_then(|mut tx| {
                            for k in written(w, i) {
                                let mut v = vec![i as u8; 600];
                                v[..4].copy_from_slice(&i.to_le_bytes());
                                tx.put(t, row_key(k), v)?;
                            }
                            tx.put(t, format!("counter{w}"), i.to_le_bytes())?;
                            tx.commit()
                        });
                        match r {
                            Ok(_) => acked = i,
                            Err(_) => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        let acked = writers
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (acked, reader.join().expect("reader"))
    })
}

/// Checks an image: each writer's counter at least what was acknowledged,
/// and every row as that many of its transactions left it.
fn check_busy(img: FaultFs, acked: &[u32], what: &str) {
    let db = recover(img, what);
    let t = db.table("t").expect("table");
    let tx = db.begin_read().expect("begin");
    let mut want: Vec<u32> = vec![0; KEYS as usize];
    for w in 0..WRITERS {
        let c = tx
            .get(&t, format!("counter{w}"))
            .unwrap_or_else(|e| panic!("{what}: get: {e}"))
            .map_or(0, |v| {
                u32::from_le_bytes(v[..4].try_into().expect("4 bytes"))
            });
        assert!(
            c >= acked[w as usize],
            "{what}: writer {w} acknowledged {} but recovered {c}",
            acked[w as usize]
        );
        for i in 1..=c {
            for k in written(w, i) {
                want[k as usize] = i;
            }
        }
    }
    let mut n = 0;
    for row in tx.scan(&t, row_key(0)..row_key(KEYS)).expect("scan") {
        let (k, v) = row.unwrap_or_else(|e| panic!("{what}: row: {e}"));
        assert_eq!(&*k, row_key(n).as_slice(), "{what}: row {n} missing");
        let got = u32::from_le_bytes(v[..4].try_into().expect("4 bytes"));
        assert_eq!(
            got, want[n as usize],
            "{what}: row {n} torn from its transaction"
        );
        n += 1;
    }
    assert_eq!(n, KEYS, "{what}: rows");
    drop(tx);
    integrity_clean(&db, what);
}

// Guards every acknowledged commit through crashes while checkpoints run
// beside writers and a reader over data many times the cache: evictions,
// checkpoint flushes, log flushes and segment recycling all interleave.
#[test]
fn crash_points_with_checkpoints_beside_writers_and_evictions() {
    let base = preloaded();
    let full = base.process_crash_image();
    let (acked, scans_whole) = busy(&full);
    assert!(
        scans_whole,
        "a scan beside the workload failed or lost rows"
    );
    assert_eq!(
        acked,
        vec![TXNS; WRITERS as usize],
        "the workload fails without faults"
    );
    check_busy(full.process_crash_image(), &acked, "clean run");
    let total = full.ops();
    let points = if std::env::var("STRATA_CRASH_POINTS").is_ok_and(|v| v == "all") {
        total
    } else {
        12
    };
    for p in 1..=points {
        let n = p * total / points;
        let fs = base.process_crash_image();
        fs.crash_at(n);
        let (acked, _) = busy(&fs);
        check_busy(
            fs.synced_image(),
            &acked,
            &format!("crash at op {n}/{total}, synced image"),
        );
        check_busy(
            fs.power_loss_image(n),
            &acked,
            &format!("crash at op {n}/{total}, image"),
        );
    }
    eprintln!(
        "checkpoints beside writers: {total} operations, {points} crash points, {} images",
        2 * points
    );
}

// Guards against a checkpoint cutting the data file below pages that log
// records after its redo point name: rows on the last pages deleted while
// it ran, then a vacuum shrank the file, the cut followed the new count,
// and the next checkpoint wrote the meta page with that count; a crash
// before that checkpoint's CONTROL left a log that recovery refused
// ("names page N, beyond the pages that can exist").
#[test]
fn a_shrink_during_a_checkpoint_leaves_a_database_that_recovers() {
    let fs = FaultFs::new();
    let db = Db::open_vfs(Arc::new(fs.clone()), Path::new(DIR), opts()).expect("open");
    let t = db.table("t").expect("table");
    // Two rows a page: the last half of the rows fills the last half of
    // the file, which they leave while the checkpoint runs. (A first
    // commit places the commit log's page before them.)
    let mut tx = db.begin().expect("begin");
    tx.put(&db.table("first").expect("table"), b"k", b"v")
        .expect("put");
    tx.commit().expect("commit");
    let rows = 1_200u32;
    let big = |i: u32| {
        let mut v = vec![1u8; 3_900];
        v[..4].copy_from_slice(&i.to_le_bytes());
        v
    };
    let mut tx = db.begin().expect("begin");
    for i in 0..rows {
        tx.put(&t, key(i), big(i)).expect("put");
    }
    tx.commit().expect("commit");
    db.checkpoint().expect("checkpoint");
    let bytes_before = db.stats().expect("stats").data_file_bytes;
    let marker = Path::new("/marker");
    let control_tmp = OpMatch {
        kind: OpKind::Create,
        file: "CONTROL.tmp",
    };
    let go = OpMatch {
        kind: OpKind::Create,
        file: "marker",
    };
    // The checkpoint stops after its page flush, before CONTROL.
    let first = fs.hold(control_tmp, go, Duration::from_secs(60));
    std::thread::scope(|s| {
        let checkpoint = s.spawn(|| db.checkpoint());
        assert!(
            first.wait_holding(Duration::from_secs(60)),
            "no CONTROL written"
        );
        let mut tx = db.begin().expect("begin");
        for i in rows / 2..rows {
            assert!(tx.delete(&t, key(i)).expect("delete"));
        }
        tx.commit().expect("commit");
        let v = db.vacuum().expect("vacuum");
        let cut = v.pages_cut;
        // More than a record's own allocations, which recovery admits
        // past the count.
        assert!(cut > 96, "vacuum cut {cut} pages");
        drop(strata::io::Vfs::open(&fs, marker, true).expect("marker"));
        checkpoint
            .join()
            .expect("checkpoint thread")
            .expect("checkpoint");
    });
    assert_eq!(first.released(), Some(true));
    // The next checkpoint writes the meta page with the lowered count and
    // stops before its CONTROL: the power fails there.
    let second = fs.hold(control_tmp, go, Duration::from_secs(60));
    std::thread::scope(|s| {
        let checkpoint = s.spawn(|| db.checkpoint());
        assert!(
            second.wait_holding(Duration::from_secs(60)),
            "no CONTROL written"
        );
        let images = [fs.synced_image(), fs.power_loss_image(7)];
        drop(strata::io::Vfs::open(&fs, Path::new("/second-marker"), true).expect("marker"));
        checkpoint
            .join()
            .expect("checkpoint thread")
            .expect("checkpoint");
        for (n, img) in images.into_iter().enumerate() {
            let what = format!("image {n}");
            let db = recover(img, &what);
            let t = db.table("t").expect("table");
            let tx = db.begin_read().expect("begin");
            let got: Vec<u32> = tx
                .scan(&t, ..)
                .expect("scan")
                .map(|r| {
                    let (_, v) = r.unwrap_or_else(|e| panic!("{what}: row: {e}"));
                    u32::from_le_bytes(v[..4].try_into().expect("4 bytes"))
                })
                .collect();
            let want: Vec<u32> = (0..rows / 2).collect();
            assert_eq!(got, want, "{what}: rows");
            drop(tx);
            integrity_clean(&db, &what);
        }
    });
    assert_eq!(second.released(), Some(true));
    assert!(
        db.stats().expect("stats").data_file_bytes < bytes_before,
        "the file never shrank"
    );
}
