//! Snapshot export and import: a consistent online copy of a database (or
//! of a hash range of its keys) as a checksummed stream, and a database
//! built from one atomically — rows, the applied index, the timestamp
//! horizon and prepared transactions in doubt carried over; damage found
//! and named, never a panic; a crash mid-import leaving nothing that
//! opens as the database.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata::clock::{SimClock, Timestamp};
use strata::fault::FaultFs;
use strata::internals::RacePoint;
use strata::{key_hash, Db, Error, ExportOptions, HashRange, Isolation, Options, Vfs};

type Rows = BTreeMap<String, Vec<(Vec<u8>, Vec<u8>)>>;

fn quiet() -> Options {
    Options::default()
        .background(false)
        .cache_size(4 << 20)
        .lock_timeout(Some(Duration::from_secs(5)))
}

/// Every table's rows, from one snapshot.
fn all_rows(db: &Db) -> Rows {
    let tx = db.begin_with(Isolation::Snapshot).expect("begin");
    let mut out = Rows::new();
    for name in tx.table_names().expect("names") {
        let t = db.table(&name).expect("table");
        out.insert(name, common::rows(&tx, &t));
    }
    out
}

fn export(db: &Db, opts: ExportOptions) -> Vec<u8> {
    let mut buf = Vec::new();
    db.export(&mut buf, opts).expect("export");
    buf
}

/// Imports `stream` into `dir` and opens the result.
fn import(stream: &[u8], dir: &Path) -> Db {
    strata::import(&mut Cursor::new(stream), dir, quiet()).expect("import");
    Db::open_with(dir, quiet().create(false)).expect("open the import")
}

fn value(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
}

/// Imports `stream` into `target` on `fs`.
fn import_on(fs: &FaultFs, stream: &[u8], target: &Path) -> strata::Result<strata::SnapshotStats> {
    strata::internals::import_vfs(
        Arc::new(fs.clone()),
        &mut Cursor::new(stream),
        Path::new("stream"),
        target,
        quiet(),
    )
}

#[test]
fn a_round_trip_keeps_every_table_row_and_large_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_with(dir.path().join("src"), quiet()).expect("open");
    common::create(&db, "empty");
    for n in 0..12 {
        let t = db.table(&format!("table-{n:02}")).expect("table");
        let mut tx = db.begin().expect("begin");
        for i in 0..40 {
            let len = match i % 10 {
                0 => 70 << 10,
                1 | 2 => 5_000 + 1_500 * i,
                _ => i * 3,
            };
            tx.put(&t, format!("k{i:03}"), value(i + n, len))
                .expect("put");
        }
        tx.commit().expect("commit");
        let mut tx = db.begin().expect("begin");
        for i in (0..40).step_by(7) {
            assert!(tx.delete(&t, format!("k{i:03}")).expect("delete"));
        }
        tx.put(&t, b"", b"the empty key").expect("put");
        tx.commit().expect("commit");
    }
    let t = db.table("huge").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, b"big", value(9, 3 << 20)).expect("put");
    tx.commit().expect("commit");
    let before = all_rows(&db);
    assert_eq!(before.len(), 14);
    let mut stream = Vec::new();
    let out = db
        .export(&mut stream, ExportOptions::default())
        .expect("export");
    assert_eq!((out.tables, out.prepared), (14, 0));
    assert_eq!(out.bytes, stream.len() as u64);
    let target = dir.path().join("copy");
    let got = strata::import(&mut Cursor::new(&stream), &target, quiet()).expect("import");
    assert_eq!(
        (got.tables, got.rows, got.bytes),
        (out.tables, out.rows, out.bytes)
    );
    let copy = Db::open_with(&target, quiet().create(false)).expect("open");
    assert_eq!(all_rows(&copy), before);
    copy.check_integrity().expect("integrity");
    // The build directory beside the target is gone.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn an_export_under_concurrent_transfers_is_one_snapshot() {
    const ACCOUNTS: u64 = 40;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_with(dir.path().join("src"), quiet()).expect("open");
    let t = db.table("accounts").expect("table");
    let mut tx = db.begin().expect("begin");
    for a in 0..ACCOUNTS {
        tx.put(&t, a.to_be_bytes(), 1_000u64.to_le_bytes())
            .expect("put");
    }
    tx.commit().expect("commit");
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let (db, t, stop) = (db.clone(), t.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut next = common::xorshift(w + 1);
                while !stop.load(Ordering::Relaxed) {
                    let (from, to, amount) = (next(ACCOUNTS), next(ACCOUNTS), next(50));
                    let _ = db.transaction(|tx| {
                        let get = |k: u64| -> strata::Result<u64> {
                            let v = tx.get(&t, k.to_be_bytes())?.expect("account");
                            Ok(u64::from_le_bytes(v[..8].try_into().expect("8 bytes")))
                        };
                        let (a, b) = (get(from)?, get(to)?);
                        if from == to || a < amount {
                            return Ok(());
                        }
                        tx.put(&t, from.to_be_bytes(), (a - amount).to_le_bytes())?;
                        tx.put(&t, to.to_be_bytes(), (b + amount).to_le_bytes())
                    });
                }
            })
        })
        .collect();
    for round in 0..6 {
        std::thread::sleep(Duration::from_millis(20));
        let stream = export(&db, ExportOptions::default());
        let copy = import(&stream, &dir.path().join(format!("copy-{round}")));
        let rows = all_rows(&copy).remove("accounts").expect("accounts");
        assert_eq!(rows.len() as u64, ACCOUNTS);
        let sum: u64 = rows
            .iter()
            .map(|(_, v)| u64::from_le_bytes(v[..8].try_into().expect("8 bytes")))
            .sum();
        assert_eq!(sum, ACCOUNTS * 1_000, "round {round}: not one snapshot");
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
}

#[test]
fn the_applied_index_is_exactly_what_the_rows_hold_while_entries_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The applier's commits dwell between becoming visible and their
    // index being reported: an export reading the index on either side
    // of its snapshot, unbracketed, is caught there.
    let dwell = |p: RacePoint| {
        if p == RacePoint::Published && std::thread::current().name() == Some("applier") {
            std::thread::sleep(Duration::from_micros(500));
        }
    };
    let opts = quiet()
        .durability(strata::Durability::Eventual)
        .race_hook(dwell);
    let db = Db::open_with(dir.path().join("src"), opts).expect("open");
    let t = common::create(&db, "log");
    let stop = Arc::new(AtomicBool::new(false));
    let applier = {
        let (db, t, stop) = (db.clone(), t.clone(), stop.clone());
        let named = std::thread::Builder::new().name("applier".into());
        named
            .spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    if i.is_multiple_of(5) {
                        // An entry that changes nothing else.
                        db.set_applied_index(i).expect("index");
                        continue;
                    }
                    let mut tx = db.begin().expect("begin");
                    tx.put(&t, b"last", i.to_le_bytes()).expect("put");
                    tx.set_applied_index(i);
                    tx.commit().expect("commit");
                }
            })
            .expect("spawn")
    };
    let mut seen = BTreeSet::new();
    for round in 0..24 {
        std::thread::sleep(Duration::from_millis(2));
        let stream = export(&db, ExportOptions::default());
        let copy = import(&stream, &dir.path().join(format!("copy-{round}")));
        let index = copy.applied_index().expect("index");
        let tx = copy.begin_read().expect("begin");
        let ct = copy.table("log").expect("table");
        let last = tx
            .get(&ct, b"last")
            .expect("get")
            .map_or(0, |v| u64::from_le_bytes(v[..8].try_into().expect("8")));
        // The entry at the index is there and no later one (every fifth
        // entry changes nothing but the index).
        let expect_last = if index > 0 && index.is_multiple_of(5) {
            index - 1
        } else {
            index
        };
        assert_eq!(
            last, expect_last,
            "round {round}: applied index {index}, rows hold {last}"
        );
        seen.insert(index);
    }
    stop.store(true, Ordering::Relaxed);
    applier.join().expect("applier");
    assert!(seen.len() > 1, "the index moved between exports: {seen:?}");
}

#[test]
fn the_applied_index_and_the_timestamp_horizon_carry_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = Timestamp::from_nanos(1_000_000_000_000);
    let clock = SimClock::new(start);
    let db = Db::open_with(
        dir.path().join("src"),
        quiet().clock(Arc::new(clock.clone())),
    )
    .expect("open");
    let t = db.table("t").expect("table");
    let mut newest = Timestamp::ZERO;
    for i in 0..5u64 {
        let mut tx = db.begin().expect("begin");
        tx.put(&t, i.to_be_bytes(), b"v").expect("put");
        tx.set_applied_index(10 + i);
        newest = tx.commit().expect("commit").ts;
    }
    db.set_applied_index(42).expect("index");
    let stream = export(&db, ExportOptions::default());
    // The importing machine's clock is half a second behind.
    let behind = SimClock::new(Timestamp::from_nanos(newest.as_nanos() - 500_000_000));
    let opts = quiet().clock(Arc::new(behind.clone()));
    let target = dir.path().join("copy");
    let stats = strata::import(&mut Cursor::new(&stream), &target, opts.clone()).expect("import");
    assert_eq!(stats.applied_index, 42);
    assert!(stats.newest_ts >= newest);
    let copy = Db::open_with(&target, opts.create(false)).expect("open");
    assert_eq!(copy.applied_index().expect("index"), 42);
    assert!(copy.stats().expect("stats").newest_ts >= newest);
    let mut tx = copy.begin().expect("begin");
    tx.put(&copy.table("t").expect("table"), b"after", b"v")
        .expect("put");
    let ts = tx.commit().expect("commit").ts;
    assert!(
        ts > newest,
        "the import gave out {ts}, not above the source's {newest}"
    );
}

#[test]
fn hash_ranges_partition_the_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_with(dir.path().join("src"), quiet()).expect("open");
    let (a, b) = (db.table("a").expect("a"), db.table("b").expect("b"));
    let mut tx = db.begin().expect("begin");
    let mut hashes = Vec::new();
    for i in 0..300u32 {
        let k = format!("key-{i}");
        hashes.push(key_hash(k.as_bytes()));
        tx.put(&a, &k, value(i as usize, 20)).expect("put");
        if i % 3 == 0 {
            tx.put(&b, &k, b"b").expect("put");
        }
    }
    tx.commit().expect("commit");
    hashes.sort_unstable();
    // Boundaries at keys' own hashes: an off-by-one at either end shows.
    let cuts = [hashes[70], hashes[150], hashes[220]];
    let ranges = [
        HashRange::new(0, Some(cuts[0])),
        HashRange::new(cuts[0], Some(cuts[1])),
        HashRange::new(cuts[1], Some(cuts[2])),
        HashRange::new(cuts[2], None),
    ];
    let whole = all_rows(&db);
    let mut union = Rows::new();
    for (n, r) in ranges.iter().enumerate() {
        let stream = export(&db, ExportOptions::default().range(*r));
        let copy = import(&stream, &dir.path().join(format!("range-{n}")));
        for (table, rows) in all_rows(&copy) {
            for (k, v) in rows {
                assert!(r.holds_key(&k), "range {n} exported {k:?} outside it");
                union.entry(table.clone()).or_default().push((k, v));
            }
        }
    }
    for rows in union.values_mut() {
        let len = rows.len();
        rows.sort();
        rows.dedup();
        assert_eq!(rows.len(), len, "a key went to two ranges");
    }
    assert_eq!(union, whole, "the ranges' union is not the whole");
}

#[test]
fn prepared_transactions_come_back_in_doubt_with_their_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("src");
    let db = Db::open_with(&path, quiet()).expect("open");
    let (t, u) = (db.table("t").expect("t"), db.table("u").expect("u"));
    let mut tx = db.begin().expect("begin");
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3")] {
        tx.put(&t, k, v).expect("put");
    }
    tx.put(&u, "x", "ux").expect("put");
    tx.commit().expect("commit");
    let big = value(3, 80 << 10);
    let mut g1 = db.begin().expect("begin");
    g1.put(&t, "a", "10").expect("put");
    assert!(g1.delete(&t, "b").expect("delete"));
    g1.put(&t, "d", "4").expect("put");
    g1.put(&t, "d", "44").expect("put again");
    g1.put(&u, "big", &big).expect("put");
    g1.put(&u, "gone", "soon").expect("put");
    g1.delete(&u, "gone").expect("delete");
    g1.prepare("g1").expect("prepare");
    let mut g2 = db.begin().expect("begin");
    g2.put(&t, "c", "30").expect("put");
    g2.prepare("g2").expect("prepare");
    db.begin()
        .expect("begin")
        .prepare("g3-empty")
        .expect("prepare");
    // Recovered prepared transactions are exported as well as live ones.
    drop((t, u));
    db.close().expect("close");
    let db = Db::open_with(&path, quiet()).expect("reopen");
    let stream = export(&db, ExportOptions::default());
    let copy = import(&stream, &dir.path().join("copy"));
    let gids: Vec<String> = copy
        .prepared_transactions()
        .expect("list")
        .into_iter()
        .map(|p| p.gid)
        .collect();
    assert_eq!(gids, ["g1", "g2", "g3-empty"]);
    let (t, u) = (copy.table("t").expect("t"), copy.table("u").expect("u"));
    let rows = |db: &Db| all_rows(db);
    let kv = |k: &str, v: &[u8]| (k.as_bytes().to_vec(), v.to_vec());
    assert_eq!(
        rows(&copy)["t"],
        [kv("a", b"1"), kv("b", b"2"), kv("c", b"3")],
        "in doubt: invisible"
    );
    // In doubt means holding the rows.
    let mut w = copy.begin().expect("begin");
    w.set_nowait(true);
    assert!(matches!(
        w.put(&t, "a", "x"),
        Err(Error::LockNotAvailable { .. })
    ));
    drop(w);
    copy.commit_prepared("g1").expect("commit g1");
    copy.rollback_prepared("g2").expect("rollback g2");
    copy.commit_prepared("g3-empty").expect("commit g3");
    let after = rows(&copy);
    assert_eq!(after["t"], [kv("a", b"10"), kv("c", b"3"), kv("d", b"44")]);
    assert_eq!(after["u"], [kv("big", &big), kv("x", b"ux")]);
    let _ = u;
    assert!(copy.prepared_transactions().expect("list").is_empty());
}

/// A small stream: two tables, a prepared transaction.
fn small_stream(dir: &Path) -> Vec<u8> {
    let db = Db::open_with(dir.join("small"), quiet()).expect("open");
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "k1", "v1").expect("put");
    tx.put(&t, "k2", value(1, 40)).expect("put");
    tx.put(&db.table("u").expect("u"), "k", "v").expect("put");
    tx.set_applied_index(7);
    tx.commit().expect("commit");
    let mut p = db.begin().expect("begin");
    p.put(&t, "k3", "pv").expect("put");
    p.prepare("gid").expect("prepare");
    export(&db, ExportOptions::default())
}

fn expect_corruption(r: strata::Result<strata::SnapshotStats>, len: usize, what: &str) {
    match r {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!(file, PathBuf::from("stream"), "{what}");
            assert!(
                offset <= len as u64,
                "{what}: offset {offset} past the stream"
            );
        }
        other => panic!("{what}: {other:?}, not Corruption"),
    }
}

#[test]
fn every_truncation_of_a_stream_is_corruption_with_an_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stream = small_stream(dir.path());
    let target = dir.path().join("target");
    for cut in 0..stream.len() {
        let r = strata::import(&mut Cursor::new(&stream[..cut]), &target, quiet());
        expect_corruption(r, cut, &format!("cut at {cut}"));
        assert!(!target.exists(), "cut at {cut} left a database");
    }
    let mut longer = stream.clone();
    longer.push(0);
    expect_corruption(
        strata::import(&mut Cursor::new(&longer), &target, quiet()),
        longer.len(),
        "a byte after the trailer",
    );
    import(&stream, &target);
}

#[test]
fn a_flipped_bit_anywhere_is_corruption_with_an_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stream = small_stream(dir.path());
    let target = dir.path().join("target");
    for at in 0..stream.len() {
        let mut bad = stream.clone();
        bad[at] ^= 1 << (at % 8);
        let r = strata::import(&mut Cursor::new(&bad), &target, quiet());
        expect_corruption(r, bad.len(), &format!("flip at {at}"));
        assert!(!target.exists(), "flip at {at} left a database");
    }
}

#[test]
fn a_damaged_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stream = small_stream(dir.path());
    let last = stream.len() - 3;
    stream[last] ^= 0xFF;
    let file = dir.path().join("backup.snap");
    std::fs::write(&file, &stream).expect("write");
    match strata::import_file(&file, dir.path().join("t"), quiet()) {
        Err(Error::Corruption {
            file: f, offset, ..
        }) => {
            assert_eq!(f, file);
            assert!(offset > 0 && offset < stream.len() as u64);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_import_refuses_a_directory_that_holds_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stream = small_stream(dir.path());
    let target = dir.path().join("full");
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::write(target.join("notes.txt"), b"mine").expect("write");
    let r = strata::import(&mut Cursor::new(&stream), &target, quiet());
    match &r {
        Err(Error::TargetNotEmpty {
            path,
            database: false,
            found,
        }) => {
            assert_eq!(*path, target);
            assert!(found.contains("notes.txt"), "{found}");
        }
        other => panic!("{other:?}"),
    }
    let said = r.expect_err("refused").to_string();
    assert!(said.contains("is not empty"), "{said}");
    assert_eq!(
        std::fs::read(target.join("notes.txt")).expect("read"),
        b"mine"
    );
    // A database is not empty either.
    let r = strata::import(&mut Cursor::new(&stream), dir.path().join("small"), quiet());
    match r {
        Err(e @ Error::TargetNotEmpty { database: true, .. }) => {
            assert!(
                e.to_string().contains("a strata database is there already"),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
    // An empty directory is taken.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let db = import(&stream, &empty);
    assert_eq!(db.applied_index().expect("index"), 7);
}

/// A reader that fails after `n` bytes, looking at the target as it
/// does: mid-import, nothing there opens as a database.
struct Stops<'a> {
    bytes: &'a [u8],
    at: usize,
    n: usize,
    target: PathBuf,
}

impl std::io::Read for Stops<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at >= self.n {
            let open = Db::open_with(&self.target, quiet().create(false));
            assert!(open.is_err(), "mid-import the target opened: {open:?}");
            return Err(std::io::Error::other("the source went away"));
        }
        let k = buf
            .len()
            .min(self.n - self.at)
            .min(self.bytes.len() - self.at);
        buf[..k].copy_from_slice(&self.bytes[self.at..self.at + k]);
        self.at += k;
        Ok(k)
    }
}

#[test]
fn an_import_stopped_midway_leaves_no_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_with(dir.path().join("src"), quiet()).expect("open");
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    for i in 0..200 {
        tx.put(&t, format!("{i:04}"), value(i, 9_000)).expect("put");
    }
    tx.commit().expect("commit");
    let stream = export(&db, ExportOptions::default());
    let target = dir.path().join("target");
    for n in [100, stream.len() / 3, stream.len() / 2, stream.len() - 20] {
        let mut r = Stops {
            bytes: &stream,
            at: 0,
            n,
            target: target.clone(),
        };
        let e = strata::import(&mut r, &target, quiet()).expect_err("stopped");
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        assert!(!target.exists());
    }
    assert_eq!(all_rows(&import(&stream, &target)), all_rows(&db));
}

#[test]
fn a_power_loss_at_any_point_of_an_import_leaves_all_or_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_with(dir.path().join("src"), quiet()).expect("open");
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    for i in 0..60 {
        tx.put(&t, format!("{i:04}"), value(i, 3_000)).expect("put");
    }
    tx.set_applied_index(9);
    tx.commit().expect("commit");
    let stream = export(&db, ExportOptions::default());
    let want = all_rows(&db);
    let target = Path::new("/imports/target");
    let run = |fs: &FaultFs| import_on(fs, &stream, target);
    let whole = FaultFs::new();
    run(&whole).expect("import");
    let ops = whole.ops();
    let mut complete = 0;
    for n in 1..=ops + 1 {
        let fs = FaultFs::new();
        fs.crash_at(n);
        let finished = run(&fs).is_ok();
        for seed in 0..3 {
            let image = Arc::new(fs.power_loss_image(n * 7 + seed));
            let opened = Db::open_vfs(image.clone(), target, quiet().create(false));
            // An import that returned is durable.
            assert!(
                opened.is_ok() || !finished,
                "power loss after a finished import: {opened:?}"
            );
            if let Ok(copy) = opened {
                assert_eq!(
                    all_rows(&copy),
                    want,
                    "power loss at op {n}/{ops}: a partial database"
                );
                assert_eq!(copy.applied_index().expect("index"), 9);
                complete += 1;
            }
            let tmp = Path::new("/imports/.target.import");
            assert!(
                Db::open_vfs(image, tmp, quiet().create(false)).is_err(),
                "power loss at op {n}: the build directory opened as a database"
            );
        }
    }
    eprintln!("{ops} operations, {complete} images held the finished import");
    assert!(complete > 0, "no crash point kept the finished import");
}

/// The frames of a stream: (offset, length) each.
fn frames(stream: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let len = u32::from_le_bytes(stream[at..at + 4].try_into().expect("4")) as usize;
        out.push((at, 8 + len));
        at += 8 + len;
    }
    out
}

#[test]
fn a_frame_dropped_or_repeated_whole_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_with(dir.path().join("src"), quiet()).expect("open");
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "big", value(5, 3 << 20)).expect("put");
    tx.put(&t, "small", "v").expect("put");
    tx.commit().expect("commit");
    let stream = export(&db, ExportOptions::default());
    let f = frames(&stream);
    assert!(f.len() >= 5, "header, 3+ data frames, trailer: {f:?}");
    let target = dir.path().join("target");
    let (second, third) = (f[2], f[3]);
    // Frame 1 (the second data frame) left out: frame 2 stands in its place.
    let mut dropped = stream[..second.0].to_vec();
    dropped.extend_from_slice(&stream[third.0..]);
    // Frame 1 twice.
    let mut twice = stream[..third.0].to_vec();
    twice.extend_from_slice(&stream[second.0..]);
    for (bad, at, what) in [
        (dropped, second.0, "frame 2 where frame 1"),
        (twice, third.0, "frame 1 where frame 2"),
    ] {
        match strata::import(&mut Cursor::new(&bad), &target, quiet()) {
            Err(Error::Corruption { offset, reason, .. }) => {
                assert_eq!(offset, at as u64, "{reason}");
                assert!(reason.contains(what), "{reason}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert!(!target.exists());
    }
}

/// Whether the copy built from `stream` holds prepared transaction `g`
/// (which wrote `k` = "from-g" to `t`) in one piece: in doubt with its
/// write not among the rows, or committed with it, never neither.
fn carries_g(stream: &[u8], target: &Path) -> Result<(), String> {
    let copy = import(stream, target);
    let in_doubt: Vec<String> = copy
        .prepared_transactions()
        .expect("list")
        .into_iter()
        .map(|p| p.gid)
        .collect();
    let tx = copy.begin_read().expect("begin");
    let k = tx.get(&copy.table("t").expect("t"), b"k").expect("get");
    match (in_doubt.as_slice(), k.as_deref()) {
        ([g], None) if g == "g" => Ok(()),
        ([], Some(b"from-g")) => Ok(()),
        (d, k) => Err(format!("g in doubt: {d:?}; its row k: {k:?}")),
    }
}

#[test]
fn a_decision_under_way_at_the_cut_is_waited_for_not_lost() {
    use strata::fault::{OpKind, OpMatch};
    let fs = FaultFs::new();
    let db = Db::open_vfs(Arc::new(fs.clone()), Path::new("/db"), quiet()).expect("open");
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "base", "v").expect("put");
    tx.commit().expect("commit");
    let mut p = db.begin().expect("begin");
    p.put(&t, "k", "from-g").expect("put");
    p.prepare("g").expect("prepare");
    // The decision stops at its log flush: the gid is no longer listed
    // and the commit not yet visible.
    let hold = fs.hold(
        OpMatch {
            kind: OpKind::Sync,
            file: "",
        },
        OpMatch {
            kind: OpKind::Create,
            file: "go",
        },
        Duration::from_secs(30),
    );
    let decider = {
        let db = db.clone();
        std::thread::spawn(move || db.commit_prepared("g"))
    };
    assert!(
        hold.wait_holding(Duration::from_secs(10)),
        "decision not held"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // No cut while the decision is under way (the export gives up after
    // its attempts) — or, if the hold ran out first, one after it.
    let mut during = Vec::new();
    match db.export(&mut during, ExportOptions::default()) {
        Err(Error::LockTimeout) => {}
        Ok(_) => carries_g(&during, &dir.path().join("during")).expect("during the decision"),
        Err(e) => panic!("{e:?}"),
    }
    fs.open(Path::new("/go"), true)
        .expect("release the decision");
    decider.join().expect("join").expect("commit_prepared");
    let after = export(&db, ExportOptions::default());
    carries_g(&after, &dir.path().join("after")).expect("after the decision");
    assert!(import(&after, &dir.path().join("again"))
        .prepared_transactions()
        .expect("list")
        .is_empty());
}

#[test]
fn an_indexed_decision_racing_the_cut_never_loses_its_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_with(
        dir.path().join("src"),
        quiet().durability(strata::Durability::Eventual),
    )
    .expect("open");
    let t = common::create(&db, "t");
    let stop = Arc::new(AtomicBool::new(false));
    // Entry 2j-1 prepares g{j}, entry 2j rolls it back: a stream at an
    // odd index must carry g{j} in doubt, one at an even index none.
    let applier = {
        let (db, t, stop) = (db.clone(), t.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut j = 0u64;
            while !stop.load(Ordering::Relaxed) && j < 200_000 {
                j += 1;
                let mut tx = db.begin().expect("begin");
                tx.put(&t, "k", j.to_le_bytes()).expect("put");
                tx.set_applied_index(2 * j - 1);
                tx.prepare(&format!("g{j}")).expect("prepare");
                db.rollback_prepared_applying(&format!("g{j}"), 2 * j)
                    .expect("rollback");
            }
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut exported = 0;
    for _ in 0..400 {
        if std::time::Instant::now() > deadline {
            break;
        }
        let mut buf = Vec::new();
        match db.export(&mut buf, ExportOptions::default()) {
            Ok(s) => {
                exported += 1;
                assert_eq!(
                    s.prepared,
                    s.applied_index % 2,
                    "a stream at index {} with {} prepared transactions",
                    s.applied_index,
                    s.prepared
                );
            }
            Err(Error::LockTimeout) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    applier.join().expect("applier");
    eprintln!("{exported} exports");
}

#[test]
fn re_prepares_keep_their_carried_prepare_timestamps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SimClock::new(Timestamp::from_nanos(1_000_000_000_000));
    let db = Db::open_with(dir.path().join("src"), quiet().clock(Arc::new(clock))).expect("open");
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "a", "1").expect("put");
    tx.commit().expect("commit");
    let mut p = db.begin().expect("begin");
    p.put(&t, "k", "v").expect("put");
    let old = p.prepare("g").expect("prepare");
    let mut p = db.begin().expect("begin");
    p.put(&t, "m", "w").expect("put");
    let old_h = p.prepare("h").expect("prepare");
    // A commit after both prepares: the stream's newest is above them.
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "b", "2").expect("put");
    tx.commit().expect("commit");
    let stream = export(&db, ExportOptions::default());
    // The importing machine's clock is half a second behind.
    let behind = SimClock::new(Timestamp::from_nanos(old.as_nanos() - 500_000_000));
    let opts = quiet().clock(Arc::new(behind));
    let target = dir.path().join("copy");
    let stats = strata::import(&mut Cursor::new(&stream), &target, opts.clone()).expect("import");
    assert!(stats.newest_ts > old_h, "the stream's newest is above both");
    let copy = Db::open_with(&target, opts.create(false)).expect("open");
    let listed: Vec<(String, Timestamp)> = copy
        .prepared_transactions()
        .expect("list")
        .into_iter()
        .map(|p| (p.gid, p.prepare_ts))
        .collect();
    assert_eq!(
        listed,
        vec![("g".to_string(), old), ("h".to_string(), old_h)],
        "re-prepared at the carried prepare timestamps"
    );
    // A coordinator may commit at the prepare timestamp it was shown
    // before the export.
    copy.commit_prepared_at("g", old)
        .expect("commit at the old prepare ts");
    copy.rollback_prepared("h").expect("rollback");
    // Commits here are still stamped above the stream's newest timestamp.
    let t = copy.table("t").expect("t");
    let mut tx = copy.begin().expect("begin");
    tx.put(&t, "c", "3").expect("put");
    let ts = tx.commit().expect("commit").ts;
    assert!(ts > stats.newest_ts, "{ts} above {}", stats.newest_ts);
}

#[test]
fn a_transaction_in_doubt_that_changed_a_table_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_with(dir.path().join("src"), quiet()).expect("open");
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "a", "1").expect("put");
    tx.commit().expect("commit");
    // Created by its first put.
    let mut p = db.begin().expect("begin");
    p.put(&t, "b", "2").expect("put");
    p.put(&db.table("fresh").expect("fresh"), "x", "y")
        .expect("put in a new table");
    p.prepare("g").expect("prepare");
    let r = db.export(&mut Vec::new(), ExportOptions::default());
    assert_eq!(
        r,
        Err(Error::InDoubtTableChange {
            gid: "g".into(),
            table: "fresh".into()
        })
    );
    db.rollback_prepared("g").expect("rollback");
    // Dropped.
    let mut p = db.begin().expect("begin");
    assert!(p.drop_table(&t).expect("drop"));
    p.prepare("h").expect("prepare");
    let r = db.export(&mut Vec::new(), ExportOptions::default());
    assert_eq!(
        r,
        Err(Error::InDoubtTableChange {
            gid: "h".into(),
            table: "t".into()
        })
    );
    db.commit_prepared("h").expect("commit");
    let copy = import(
        &export(&db, ExportOptions::default()),
        &dir.path().join("copy"),
    );
    assert_eq!(all_rows(&copy), all_rows(&db));
}

/// Re-frames one frame's payload.
fn reframe(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    strata::internals::wal::frame::frame(payload, &mut out);
    out
}

#[test]
fn a_record_repeated_or_out_of_its_range_is_corruption_at_its_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_with(dir.path().join("src"), quiet()).expect("open");
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "k1", "v1").expect("put");
    tx.put(&t, "k2", "v2").expect("put");
    tx.commit().expect("commit");
    let stream = export(&db, ExportOptions::default());
    let f: Vec<&[u8]> = frames(&stream)
        .into_iter()
        .map(|(at, len)| &stream[at + 8..at + len])
        .collect();
    assert_eq!(f.len(), 3, "header, one data frame, trailer");
    let (header, data, trailer) = (f[0], f[1], f[2]);
    let table = [&[1u8][..], &1u16.to_le_bytes(), b"t"].concat();
    let row = [
        &[2u8][..],
        &2u16.to_le_bytes(),
        b"k2",
        &2u32.to_le_bytes(),
        b"v2",
    ]
    .concat();
    assert!(data.ends_with(&row));
    // Records appended, the trailer's counts agreeing (`counts`: by
    // offset in the trailer): the edited stream and the offset of the
    // last record.
    let append = |recs: &[&[u8]], counts: &[(usize, u64)]| {
        let data2 = [&[data][..], recs].concat().concat();
        let mut tr = trailer.to_vec();
        let add = |tr: &mut Vec<u8>, at: usize, n: u64| {
            let v = u64::from_le_bytes(tr[at..at + 8].try_into().expect("8")) + n;
            tr[at..at + 8].copy_from_slice(&v.to_le_bytes());
        };
        add(&mut tr, 9, (data2.len() - data.len()) as u64);
        for &(at, n) in counts {
            add(&mut tr, at, n);
        }
        let last = recs.last().map_or(0, |r| r.len());
        let at = reframe(header).len() + 8 + data2.len() - last;
        (
            [reframe(header), reframe(&data2), reframe(&tr)].concat(),
            at,
        )
    };
    let repeat = |rec: &[u8], count_at: usize| append(&[rec], &[(count_at, 1)]);
    let prepared = |gid: &[u8], writes: u32| {
        [
            &[3u8][..],
            &(gid.len() as u16).to_le_bytes(),
            gid,
            &[0u8; 16],
            &writes.to_le_bytes(),
        ]
        .concat()
    };
    let put = [
        &[4u8][..],
        &1u16.to_le_bytes(),
        b"t",
        &1u16.to_le_bytes(),
        b"k",
        &0u32.to_le_bytes(),
    ]
    .concat();
    // A header whose range holds none of the keys.
    let mut narrow = header.to_vec();
    narrow[11..13].copy_from_slice(&1u16.to_le_bytes());
    narrow[29..37].copy_from_slice(&0u64.to_le_bytes());
    narrow[37..45].copy_from_slice(&0u64.to_le_bytes());
    let out_of_range = [reframe(&narrow), reframe(data), reframe(trailer)].concat();
    let first_row = reframe(&narrow).len() + 8 + 9 + table.len();
    let target = dir.path().join("copy");
    for ((bad, at), what) in [
        (repeat(&row, 25), "row key out of order"),
        (repeat(&table, 17), "table \"t\" out of order"),
        (
            append(&[&prepared(b"g", 0), &prepared(b"g", 0)], &[(33, 2)]),
            "prepared transaction \"g\" out of order",
        ),
        (
            append(&[&prepared(b"g", 2), &put, &put], &[(33, 1), (41, 2)]),
            "prepared write out of order",
        ),
        ((out_of_range, first_row), "outside the stream's hash range"),
    ] {
        match strata::import(&mut Cursor::new(&bad), &target, quiet()) {
            Err(Error::Corruption { offset, reason, .. }) => {
                assert!(reason.contains(what), "{what}: {reason}");
                assert_eq!(offset, at as u64, "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert!(!target.exists());
    }
}

#[test]
fn an_import_into_a_symbolic_link_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stream = small_stream(dir.path());
    let real = dir.path().join("real-empty");
    std::fs::create_dir(&real).expect("mkdir");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let r = strata::import(&mut Cursor::new(&stream), &link, quiet());
    assert!(
        matches!(&r, Err(Error::Unsupported(w)) if w.contains("symbolic link")),
        "{r:?}"
    );
    assert!(!dir.path().join(".link.import").exists());
    assert!(link.is_symlink());
    assert_eq!(std::fs::read_dir(&real).expect("ls").count(), 0);
    // The directory it names is taken.
    assert_eq!(import(&stream, &real).applied_index().expect("index"), 7);
}

#[test]
fn an_import_that_fails_anywhere_leaves_no_build_directory() {
    use strata::fault::FaultKind;
    let dir = tempfile::tempdir().expect("tempdir");
    let stream = small_stream(dir.path());
    let target = Path::new("/imports/target");
    let tmp = Path::new("/imports/.target.import");
    let run = |fs: &FaultFs| import_on(fs, &stream, target);
    let whole = FaultFs::new();
    run(&whole).expect("import");
    let ops = whole.ops();
    let mut failed = 0;
    for n in 1..=ops {
        let fs = FaultFs::new();
        fs.fail_at(n, FaultKind::Io, false);
        let Err(e) = run(&fs) else {
            continue;
        };
        failed += 1;
        if let Error::Io { op, path, .. } = &e {
            assert!(!op.is_empty() && path.is_some(), "op {n}: {e:?}");
        }
        assert!(
            !fs.exists(tmp).expect("exists"),
            "op {n} failed ({e}): the build directory is left"
        );
        assert!(
            Db::open_vfs(Arc::new(fs.clone()), target, quiet().create(false)).is_err(),
            "op {n} failed ({e}), yet the target opens"
        );
        fs.heal();
        run(&fs).unwrap_or_else(|e2| panic!("op {n} failed ({e}); the next import: {e2:?}"));
    }
    eprintln!("{failed} of {ops} operations failed the import");
    assert!(failed > 0);
}

#[test]
fn ranges_that_partition_the_hash_space_carry_each_prepared_transaction_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_with(dir.path().join("src"), quiet()).expect("open");
    let t = common::create(&db, "t");
    // One that wrote nothing, alone and beside one that wrote a key.
    db.begin()
        .expect("begin")
        .prepare("empty")
        .expect("prepare");
    let mid = 1u64 << 63;
    let ranges = [HashRange::new(0, Some(mid)), HashRange::new(mid, None)];
    let carried = |db: &Db| -> Vec<Vec<String>> {
        ranges
            .iter()
            .map(|r| {
                let mut buf = Vec::new();
                let s = db
                    .export(&mut buf, ExportOptions::default().range(*r))
                    .expect("export");
                let dir = tempfile::tempdir().expect("tempdir");
                let copy = import(&buf, &dir.path().join("copy"));
                let gids: Vec<String> = copy
                    .prepared_transactions()
                    .expect("list")
                    .into_iter()
                    .map(|p| p.gid)
                    .collect();
                assert_eq!(s.prepared, gids.len() as u64);
                gids
            })
            .collect()
    };
    assert_eq!(carried(&db), [vec!["empty".to_string()], vec![]]);
    let key = (0u32..)
        .map(|i| format!("k{i}"))
        .find(|k| key_hash(k.as_bytes()) >= mid)
        .expect("a key in the upper range");
    let mut p = db.begin().expect("begin");
    p.put(&t, &key, "v").expect("put");
    p.prepare("wrote").expect("prepare");
    assert_eq!(
        carried(&db),
        [vec!["empty".to_string()], vec!["wrote".to_string()]]
    );
}
