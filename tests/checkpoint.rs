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

use strata::fault::{FaultFs, OpKind, OpMatch};
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

// Guards the same wait when the eviction took the page's dirty bit after
// the checkpoint set its redo point but before it collected the pages to
// flush: the flush never sees the page dirty, so only its final wait for
// every write under way keeps CONTROL behind the eviction's write.
#[test]
fn a_checkpoint_waits_for_an_eviction_that_took_a_page_before_its_flush() {
    use std::sync::{Condvar, Mutex};
    // 0: armed; 1: the checkpoint waits at its flush; 2: it may go on.
    let gate = Arc::new((Mutex::new(0u8), Condvar::new()));
    let hook = {
        let gate = gate.clone();
        move |p: strata::internals::RacePoint| {
            if p != strata::internals::RacePoint::CheckpointFlush {
                return;
            }
            let (m, c) = &*gate;
            let mut g = m.lock().expect("gate");
            if *g != 0 {
                return;
            }
            *g = 1;
            c.notify_all();
            let (_g, t) = c
                .wait_timeout_while(g, Duration::from_secs(60), |g| *g == 1)
                .expect("gate");
            assert!(!t.timed_out(), "the test never let the checkpoint go on");
        }
    };
    let fs = FaultFs::new();
    let (db, t) = loaded(&fs);
    drop(db);
    let db =
        Db::open_vfs(Arc::new(fs.clone()), Path::new(DIR), opts().race_hook(hook)).expect("reopen");
    // Dirty pages whose changes lie before the next redo point: deletes
    // spread over the table after the recovery's checkpoint.
    let mut tx = db.begin().expect("begin");
    for i in (0..ROWS).step_by(3) {
        assert!(tx.delete(&t_of(&db), key(ROWS + i)).expect("delete"));
    }
    tx.commit().expect("commit");
    let data = OpMatch {
        kind: OpKind::Write,
        file: strata::DATA_FILE,
    };
    // The first page write from now on (the reader's eviction, the
    // checkpoint waiting at its gate) waits for CONTROL, or a second.
    let evicting = fs.hold(
        data,
        OpMatch {
            kind: OpKind::Rename,
            file: "CONTROL",
        },
        Duration::from_secs(1),
    );
    drop(t);
    std::thread::scope(|s| {
        let checkpoint = s.spawn(|| db.checkpoint());
        {
            let (m, c) = &*gate;
            let g = m.lock().expect("gate");
            let (_g, t) = c
                .wait_timeout_while(g, Duration::from_secs(60), |g| *g == 0)
                .expect("gate");
            assert!(!t.timed_out(), "the checkpoint never reached its flush");
        }
        let reader = s.spawn(|| {
            let tx = db.begin_read().expect("begin");
            tx.scan(&t_of(&db), ..).expect("scan").count()
        });
        assert!(
            evicting.wait_holding(Duration::from_secs(60)),
            "the reader evicted no dirty page"
        );
        {
            let (m, c) = &*gate;
            *m.lock().expect("gate") = 2;
            c.notify_all();
        }
        checkpoint
            .join()
            .expect("checkpoint thread")
            .expect("checkpoint");
        assert_eq!(
            reader.join().expect("reader"),
            (ROWS - ROWS.div_ceil(3)) as usize
        );
    });
    check_after_deletes(fs.synced_image(), "the image without unsynced writes");
    for seed in 0..2 {
        check_after_deletes(fs.power_loss_image(seed), &format!("image {seed}"));
    }
    drop(db);
}

fn t_of(db: &Db) -> strata::Table {
    db.table("t").expect("table")
}

/// The rows `loaded` leaves, less every third: none comes back.
fn check_after_deletes(img: FaultFs, what: &str) {
    let db = recover(img, what);
    let tx = db.begin_read().expect("begin");
    let mut n = 0;
    for row in tx.scan(&t_of(&db), ..).expect("scan") {
        let (k, _) = row.unwrap_or_else(|e| panic!("{what}: row: {e}"));
        let i: u32 = std::str::from_utf8(&k[3..])
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("a key");
        assert!(
            i >= ROWS && !(i - ROWS).is_multiple_of(3),
            "{what}: key {i} is back or never was"
        );
        n += 1;
    }
    assert_eq!(n, ROWS - ROWS.div_ceil(3), "{what}: rows");
    drop(tx);
    integrity_clean(&db, what);
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
        drop(strata::Vfs::open(&fs, marker, true).expect("marker"));
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
        drop(strata::Vfs::open(&fs, Path::new("/second-marker"), true).expect("marker"));
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

/// The shrink scenario's rows: two to a page, so the last half of them
/// fills the last half of the file.
const SHRINK_ROWS: u32 = 1_200;

fn shrink_value(i: u32) -> Vec<u8> {
    let mut v = vec![1u8; 3_900];
    v[..4].copy_from_slice(&i.to_le_bytes());
    v
}

/// A database of `SHRINK_ROWS` rows after a checkpoint, as a killed
/// process leaves it.
fn shrink_base() -> FaultFs {
    let fs = FaultFs::new();
    let db = Db::open_vfs(Arc::new(fs.clone()), Path::new(DIR), opts()).expect("open");
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&db.table("first").expect("table"), b"k", b"v")
        .expect("put");
    tx.commit().expect("commit");
    let mut tx = db.begin().expect("begin");
    for i in 0..SHRINK_ROWS {
        tx.put(&t, key(i), shrink_value(i)).expect("put");
    }
    tx.commit().expect("commit");
    db.checkpoint().expect("checkpoint");
    fs.process_crash_image()
}

/// Opens the database on `fs`, starts a checkpoint and holds it before
/// its CONTROL while the last half of the rows is deleted and vacuum
/// shrinks the file, lets it finish, and checkpoints again (the one that
/// writes the lowered page count). Any step may fail once `fs` has
/// crashed; returns whether the delete was acknowledged, whether the
/// whole scenario ran, and the operations done before the last
/// checkpoint.
fn shrink_during_checkpoint(fs: &FaultFs) -> (bool, bool, u64) {
    let Ok(db) = Db::open_vfs(Arc::new(fs.clone()), Path::new(DIR), opts()) else {
        return (false, false, 0);
    };
    let t = db.table("t").expect("a handle");
    let control_tmp = OpMatch {
        kind: OpKind::Create,
        file: "CONTROL.tmp",
    };
    let go = OpMatch {
        kind: OpKind::Create,
        file: "marker",
    };
    let hold = fs.hold(control_tmp, go, Duration::from_secs(60));
    let (deleted, first) = std::thread::scope(|s| {
        let checkpoint = s.spawn(|| db.checkpoint());
        // The checkpoint reaches its CONTROL, or fails before it.
        while !hold.wait_holding(Duration::from_millis(5)) && !checkpoint.is_finished() {}
        let deleted = (|| {
            let mut tx = db.begin()?;
            for i in SHRINK_ROWS / 2..SHRINK_ROWS {
                tx.delete(&t, key(i))?;
            }
            tx.commit()
        })()
        .is_ok();
        let vacuumed = deleted && db.vacuum().is_ok();
        // The marker's creation releases the hold (a crashed file system
        // refuses it; the hold then times out, which the checkpoint's
        // failed operations never reach).
        let _ = strata::Vfs::open(fs, Path::new("/marker"), true);
        let first = checkpoint.join().expect("checkpoint thread").is_ok();
        (deleted, vacuumed && first)
    });
    let before_last = fs.ops();
    (deleted, first && db.checkpoint().is_ok(), before_last)
}

/// The rows of a recovered shrink image: the first half always, the last
/// half gone if its delete was acknowledged, else all there or all gone.
fn check_shrink(img: FaultFs, deleted: bool, what: &str) {
    let db = recover(img, what);
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
    let half: Vec<u32> = (0..SHRINK_ROWS / 2).collect();
    let all: Vec<u32> = (0..SHRINK_ROWS).collect();
    if deleted {
        assert_eq!(got, half, "{what}: rows after an acknowledged delete");
    } else {
        assert!(
            got == half || got == all,
            "{what}: {} rows, torn",
            got.len()
        );
    }
    drop(tx);
    integrity_clean(&db, what);
}

// Guards the same cut at every crash point: a checkpoint held before its
// CONTROL while a delete and vacuum shrink the file, then the checkpoint
// that records the lowered count, crashed at sampled operations (every
// one with STRATA_CRASH_POINTS=all); each synced and power-loss image
// recovers with every acknowledged commit and no leaked page.
#[test]
fn crash_points_over_a_shrink_during_a_checkpoint() {
    let base = shrink_base();
    let full = base.process_crash_image();
    let (deleted, ran, last) = shrink_during_checkpoint(&full);
    assert!(deleted && ran, "the scenario fails without faults");
    check_shrink(full.process_crash_image(), true, "clean run");
    let total = full.ops();
    // Sampled: 8 points before the last checkpoint, and 12 in it, where
    // the lowered count reaches the meta page on disk before CONTROL.
    let points: Vec<u64> = if std::env::var("STRATA_CRASH_POINTS").is_ok_and(|v| v == "all") {
        (1..=total).collect()
    } else {
        let before = (1..=8).map(|p| p * last / 8);
        before
            .chain((1..=12).map(|p| last + p * (total - last) / 12))
            .collect()
    };
    for &n in &points {
        let fs = base.process_crash_image();
        fs.crash_at(n);
        let (deleted, _, _) = shrink_during_checkpoint(&fs);
        let what = format!("crash at op {n}/{total}");
        check_shrink(fs.synced_image(), deleted, &format!("{what}, synced image"));
        check_shrink(fs.power_loss_image(n), deleted, &format!("{what}, image"));
    }
    eprintln!(
        "shrink during a checkpoint: {total} operations ({} in the last checkpoint), {} crash points",
        total - last,
        points.len()
    );
}

/// The log directory of the database at `DIR`.
fn wal_dir() -> std::path::PathBuf {
    Path::new(DIR).join(strata::WAL_DIR)
}

/// Commits rows `from..to` of the recycling test, 25 a transaction, into
/// `model`; returns the last commit's LSN and every commit's xid.
fn commit_rows(
    db: &Db,
    t: &strata::Table,
    from: u32,
    to: u32,
    model: &mut std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
) -> (strata::Lsn, Vec<strata::Xid>) {
    let (mut lsn, mut xids) = (strata::Lsn(0), Vec::new());
    for chunk in (from..to).collect::<Vec<_>>().chunks(25) {
        let mut tx = db.begin().expect("begin");
        for &i in chunk {
            tx.put(t, key(i), value(i, 3)).expect("put");
        }
        let info = tx.commit().expect("commit");
        lsn = info.lsn;
        xids.push(info.xid);
        for &i in chunk {
            model.insert(key(i), value(i, 3));
        }
    }
    (lsn, xids)
}

/// Recovers `img` and requires exactly the rows of `model` (every
/// acknowledged commit, nothing else), integrity clean.
fn check_rows(img: FaultFs, model: &std::collections::BTreeMap<Vec<u8>, Vec<u8>>, what: &str) {
    let db = recover(img, what);
    let t = db.table("t").expect("table");
    let tx = db.begin_read().expect("begin");
    let rows: Vec<(Vec<u8>, Vec<u8>)> = tx
        .scan(&t, ..)
        .expect("scan")
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{what}: scan: {e}"));
    assert_eq!(rows.len(), model.len(), "{what}: rows");
    for ((k, v), (mk, mv)) in rows.iter().zip(model) {
        assert_eq!((k, v), (mk, mv), "{what}: a row differs");
    }
    drop(tx);
    integrity_clean(&db, what);
}

/// Reads `reader` on to its end, as `strata waldump` does, from the entry
/// that ended at `prev` (if any). Every record must decode and follow the
/// one before (the next segment's first record after its header). A
/// clean end must lie at or past `durable` (what was durable when the
/// reader began: a reader never reports the log ending before it); an
/// error may only say that a segment it listed has gone (`NotFound`, the
/// checkpoint recycled it: open the log again at its oldest segment),
/// never that the log is damaged. Returns the xids of the commit records
/// read, and whether the reader reached the end.
fn read_log_on(
    reader: &mut strata::internals::wal::reader::LogReader<'_>,
    mut prev: Option<strata::Lsn>,
    durable: strata::Lsn,
    what: &str,
) -> (Vec<strata::Xid>, bool) {
    let mut commits = Vec::new();
    // Bounded: far more records than the test writes.
    for _ in 0..1_000_000 {
        match reader.next_entry() {
            Ok(Some(e)) => {
                if let Some(p) = prev {
                    let header = strata::internals::wal::segment::SEG_HDR;
                    assert!(
                        e.start == p || e.start.0 == p.0 + header,
                        "{what}: a record at LSN {} after one that ended at {p}",
                        e.start
                    );
                }
                prev = Some(e.end);
                if e.record.kind == strata::internals::redo::record::Kind::Commit {
                    commits.push(e.record.xid);
                }
            }
            Ok(None) => {
                let end = reader.end.unwrap_or_else(|| panic!("{what}: no end"));
                assert!(
                    end >= durable,
                    "{what}: the reader says the log ends at LSN {end}, before LSN {durable}, \
                     durable when it began"
                );
                return (commits, true);
            }
            Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => return (commits, false),
            Err(e) => panic!("{what}: the reader failed: {e}"),
        }
    }
    panic!("{what}: the log never ended");
}

// Guards segment recycling against the log's readers and writers. The
// log is read while the database runs only by `strata waldump` (through
// `LogReader`, with no lock); recovery reads it only at open. So a
// checkpoint is held three times: after its flush and before its CONTROL,
// while writers roll the log on past the segment of the redo point (it
// must reach CONTROL before it removes any segment, and keep that one);
// at its first segment removal, while a reader that opened the log before
// the checkpoint is under way in the oldest segment; and at its second,
// while a reader opened after the first removal begins. Writers commit at
// every hold. Each reader must then read records in order and either
// reach an end no earlier than what was durable when it began, or report
// a recycled segment as `NotFound` — never damage, never an early end. A
// reader opened afterwards reads every commit made since the redo point.
// The images at the holds (the one without unsynced writes, the
// process-crash one that keeps the unsynced removals, power-loss ones)
// and at the end hold exactly the acknowledged rows: no image names a
// redo point whose segment is gone, and a removed segment that a power
// loss brings back is not replayed.
#[test]
fn segment_recycling_beside_log_readers_and_writers() {
    let fs = FaultFs::new();
    let opts = opts().wal_segment_size(64 << 10);
    let db = Db::open_vfs(Arc::new(fs.clone()), Path::new(DIR), opts).expect("open");
    let t = db.table("t").expect("table");
    let mut model = std::collections::BTreeMap::new();
    let (durable, _) = commit_rows(&db, &t, 0, 1_000, &mut model);
    let starts = strata::internals::wal::segment::list(&fs, &wal_dir()).expect("list");
    assert!(
        starts.len() >= 4,
        "the load spans only {} segments",
        starts.len()
    );
    let remove = OpMatch {
        kind: OpKind::Remove,
        file: ".wal",
    };
    let go = |file: &'static str| OpMatch {
        kind: OpKind::Write,
        file,
    };
    let release = |file: &str| {
        let f = strata::Vfs::open(&fs, Path::new(file), true).expect("release file");
        f.write_at(b"go", 0).expect("release");
    };
    let control = OpMatch {
        kind: OpKind::Create,
        file: "CONTROL.tmp",
    };
    let before_control = fs.hold(control, go("/go-0"), Duration::from_secs(60));
    let first = fs.hold(remove, go("/go-1"), Duration::from_secs(60));
    let second = fs.hold(remove, go("/go-2"), Duration::from_secs(60));
    // A reader under way in the oldest segment before the checkpoint.
    let mut early =
        strata::internals::wal::reader::LogReader::open(&fs, &wal_dir(), strata::Lsn(starts[0]))
            .expect("open");
    let begun = early.next_entry().expect("read").expect("a first record");
    let (mut late, mut late_prev, mut late_durable) = (None, None, strata::Lsn(0));
    std::thread::scope(|s| {
        let checkpoint = s.spawn(|| db.checkpoint());
        // After the flush, before CONTROL: writers roll the log on past
        // the segment of the redo point, which must stay.
        let mut at_control = false;
        for _ in 0..600 {
            if first.wait_holding(Duration::ZERO) {
                // Let the checkpoint through its holds before failing.
                for (hold, file) in [
                    (&first, "/go-1"),
                    (&second, "/go-2"),
                    (&before_control, "/go-0"),
                ] {
                    if hold.wait_holding(Duration::from_secs(5)) {
                        release(file);
                    }
                }
                panic!("the checkpoint removed a log segment before writing CONTROL");
            }
            if before_control.wait_holding(Duration::from_millis(100)) {
                at_control = true;
                break;
            }
        }
        assert!(at_control, "the checkpoint wrote no CONTROL");
        commit_rows(&db, &t, 1_000, 1_300, &mut model);
        let now = strata::internals::wal::segment::list(&fs, &wal_dir()).expect("list");
        assert!(now.len() > starts.len(), "the writers did not roll the log");
        check_rows(fs.synced_image(), &model, "before CONTROL, synced");
        release("/go-0");
        assert!(
            first.wait_holding(Duration::from_secs(60)),
            "the checkpoint removed no segment"
        );
        check_rows(fs.synced_image(), &model, "at the first removal, synced");
        check_rows(
            fs.process_crash_image(),
            &model,
            "at the first removal, crash",
        );
        commit_rows(&db, &t, 1_300, 1_500, &mut model);
        release("/go-1");
        assert!(
            second.wait_holding(Duration::from_secs(60)),
            "the checkpoint removed only one segment"
        );
        // One segment gone (its removal unsynced): a reader begins.
        let (now, _) = commit_rows(&db, &t, 1_500, 1_600, &mut model);
        late_durable = now;
        let listed = strata::internals::wal::segment::list(&fs, &wal_dir()).expect("list");
        assert!(
            !listed.contains(&starts[0]),
            "the oldest segment is still listed"
        );
        let mut r = strata::internals::wal::reader::LogReader::open(
            &fs,
            &wal_dir(),
            strata::Lsn(listed[0]),
        )
        .expect("open after the first removal");
        late_prev = Some(r.next_entry().expect("read").expect("a first record").end);
        late = Some(r);
        check_rows(fs.synced_image(), &model, "at the second removal, synced");
        check_rows(
            fs.process_crash_image(),
            &model,
            "at the second removal, crash",
        );
        for seed in 0..2 {
            check_rows(
                fs.power_loss_image(seed),
                &model,
                &format!("at the second removal, power loss {seed}"),
            );
        }
        commit_rows(&db, &t, 1_600, 1_700, &mut model);
        release("/go-2");
        checkpoint
            .join()
            .expect("checkpoint thread")
            .expect("checkpoint");
    });
    for hold in [&before_control, &first, &second] {
        assert_eq!(hold.released(), Some(true));
    }
    let (_, ended) = read_log_on(
        &mut early,
        Some(begun.end),
        durable,
        "the reader begun before",
    );
    eprintln!("the reader begun before the checkpoint reached the end: {ended}");
    if let Some(mut r) = late {
        let (_, ended) = read_log_on(&mut r, late_prev, late_durable, "the reader begun between");
        eprintln!("the reader begun between the removals reached the end: {ended}");
    }
    // Writers go on after the checkpoint; a reader opened now reads every
    // commit since its redo point, to the end.
    let (last, after) = commit_rows(&db, &t, 1_700, 1_800, &mut model);
    let stats = db.stats().expect("stats");
    let mut now = strata::internals::wal::reader::LogReader::open(&fs, &wal_dir(), stats.wal_start)
        .expect("open after the checkpoint");
    let (commits, ended) = read_log_on(&mut now, None, last, "the reader begun after");
    assert!(ended, "the reader begun after met a recycled segment");
    for x in &after {
        assert!(commits.contains(x), "the log has no commit record of {x}");
    }
    check_rows(fs.synced_image(), &model, "at the end, synced");
    for seed in 0..2 {
        check_rows(
            fs.power_loss_image(seed),
            &model,
            &format!("at the end, power loss {seed}"),
        );
    }
    drop(db);
}
