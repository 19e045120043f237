//! The change stream (`Db::change_reader`): exactly the committed
//! transactions, in commit order, each with its values after the commit;
//! resuming from a returned position; blocking reads; the log and history
//! a reader holds, and the clear error past its bound.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::xorshift;
use strata::{
    ChangeKind, ChangePos, ChangeReader, ChangeSet, CommitInfo, Db, Error, Isolation, Options, Xid,
};

const WAIT: Duration = Duration::from_secs(5);
const NONE: Duration = Duration::from_millis(0);

/// (table, key) → value after the commit (`None`: deleted).
type Writes = BTreeMap<(String, Vec<u8>), Option<Vec<u8>>>;

fn opts() -> Options {
    Options::default()
        .cache_size(8 << 20)
        .background(false)
        .wal_segment_size(64 << 10)
        .lock_timeout(Some(Duration::from_secs(2)))
}

fn open(dir: &Path) -> Db {
    Db::open_with(dir, opts()).expect("open")
}

/// The key changes of a returned transaction, as a model compares them.
fn writes(set: &ChangeSet) -> Writes {
    let mut w = Writes::new();
    for c in &set.changes {
        let v = match &c.kind {
            ChangeKind::Put(v) => Some(v.clone()),
            ChangeKind::Delete => None,
            _ => continue,
        };
        let old = w.insert((c.table.clone(), c.key.clone()), v);
        assert!(old.is_none(), "key {:?} twice in one transaction", c.key);
    }
    w
}

/// Everything the reader returns until it waits `idle` for nothing.
fn drain(r: &mut ChangeReader, idle: Duration) -> Vec<ChangeSet> {
    let mut out = Vec::new();
    while let Some(s) = r.next(idle).expect("next") {
        out.push(s);
    }
    out
}

/// Commits one transaction writing `kv` to table `t` (`None` deletes).
fn commit(db: &Db, t: &str, kv: &[(&[u8], Option<&[u8]>)]) -> (CommitInfo, Writes) {
    let table = db.table(t).expect("table");
    let mut tx = db.begin().expect("begin");
    let mut w = Writes::new();
    for (k, v) in kv {
        match v {
            Some(v) => tx.put(&table, k, v).expect("put"),
            None => {
                tx.delete(&table, k).expect("delete");
            }
        }
        w.insert((t.to_string(), k.to_vec()), v.map(<[u8]>::to_vec));
    }
    (tx.commit().expect("commit"), w)
}

fn create_tables(db: &Db, names: &[&str]) {
    for n in names {
        common::create(db, n);
    }
}

#[test]
fn the_stream_is_the_committed_transactions_in_commit_order_with_their_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    let tables = ["a", "b", "c"];
    create_tables(&db, &tables);
    let from = db.change_position().expect("position");
    let model: Arc<Mutex<Vec<(CommitInfo, Writes)>>> = Arc::default();
    let threads: Vec<_> = (0..4u64)
        .map(|th| {
            let (db, model) = (db.clone(), model.clone());
            std::thread::spawn(move || {
                let mut rnd = xorshift(0x5eed + th);
                for _ in 0..60 {
                    let mut tx = db.begin_with(Isolation::Snapshot).expect("begin");
                    let mut w = Writes::new();
                    let mut ok = true;
                    for _ in 0..1 + rnd(5) {
                        let t = tables[rnd(3) as usize];
                        let table = db.table(t).expect("table");
                        let key = format!("k{}", rnd(24)).into_bytes();
                        let r = if rnd(4) == 0 {
                            // A delete of a key not there changes nothing.
                            match tx.delete(&table, &key) {
                                Ok(false) => continue,
                                r => r.map(|_| None),
                            }
                        } else {
                            let v = format!("v{th}-{}", rnd(1 << 20)).into_bytes();
                            tx.put(&table, &key, &v).map(|()| Some(v))
                        };
                        match r {
                            Ok(v) => {
                                w.insert((t.to_string(), key), v);
                            }
                            Err(e) => {
                                assert!(e.is_retryable(), "{e}");
                                ok = false;
                                break;
                            }
                        }
                    }
                    if !ok || rnd(5) == 0 {
                        drop(tx); // rolled back
                        continue;
                    }
                    match tx.commit() {
                        // One that wrote nothing has no xid and logs nothing.
                        Ok(info) if info.xid == Xid::NONE => assert!(w.is_empty()),
                        Ok(info) => model.lock().expect("model").push((info, w)),
                        Err(e) => assert!(e.is_retryable(), "{e}"),
                    }
                }
            })
        })
        .collect();
    // Read while they write, then the rest.
    let mut r = db.change_reader(from).expect("reader");
    let mut got = Vec::new();
    while let Some(s) = r.next(Duration::from_millis(300)).expect("next") {
        got.push(s);
    }
    for t in threads {
        t.join().expect("thread");
    }
    got.extend(drain(&mut r, Duration::from_millis(200)));
    let mut model = Arc::try_unwrap(model)
        .expect("threads done")
        .into_inner()
        .expect("model");
    model.sort_by_key(|(i, _)| i.lsn);
    assert!(model.len() > 50, "only {} commits", model.len());
    assert_eq!(got.len(), model.len(), "transactions in the stream");
    for (i, (s, (info, w))) in got.iter().zip(&model).enumerate() {
        assert_eq!((s.xid, s.lsn, s.ts), (info.xid, info.lsn, info.ts), "#{i}");
        assert_eq!(&writes(s), w, "#{i}: changes of {:?}", s.xid);
        if i > 0 {
            assert!(
                got[i - 1].ts < s.ts,
                "#{i}: commit order is timestamp order"
            );
        }
    }
}

#[test]
fn resuming_from_a_returned_position_gives_exactly_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    create_tables(&db, &["t"]);
    let from = db.change_position().expect("position");
    let table = db.table("t").expect("table");
    // A transaction writing before others commit, and committing after.
    let mut long = db.begin().expect("begin");
    long.put(&table, b"long-1", b"x").expect("put");
    let mut expect = Vec::new();
    for i in 0..6u32 {
        let k = format!("k{i}");
        let v = format!("v{i}");
        expect.push(
            commit(&db, "t", &[(k.as_bytes(), Some(v.as_bytes()))])
                .0
                .xid,
        );
        if i == 3 {
            long.put(&table, b"long-2", b"y").expect("put");
            expect.push(long.commit().expect("commit").xid);
            long = db.begin().expect("begin");
        }
    }
    drop(long);
    let all = drain(&mut db.change_reader(from).expect("reader"), NONE);
    assert_eq!(all.iter().map(|s| s.xid).collect::<Vec<_>>(), expect);
    for (i, s) in all.iter().enumerate() {
        let rest = drain(&mut db.change_reader(s.resume).expect("reader"), NONE);
        assert_eq!(rest, all[i + 1..].to_vec(), "resumed after #{i}");
    }
    let long = &all[4];
    assert_eq!(
        writes(long)
            .keys()
            .map(|(_, k)| k.clone())
            .collect::<Vec<_>>(),
        vec![b"long-1".to_vec(), b"long-2".to_vec()],
        "the long transaction's writes from before the earlier commits"
    );
}

#[test]
fn a_blocking_read_returns_a_commit_made_while_it_waits_and_none_on_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    create_tables(&db, &["t"]);
    let mut r = db
        .change_reader(db.change_position().expect("position"))
        .expect("reader");
    let t0 = std::time::Instant::now();
    assert_eq!(r.next(Duration::from_millis(100)).expect("next"), None);
    assert!(
        t0.elapsed() >= Duration::from_millis(100),
        "waited the timeout"
    );
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            commit(&db, "t", &[(b"k", Some(b"v"))]).0
        })
    };
    let t0 = std::time::Instant::now();
    let s = r.next(WAIT).expect("next").expect("the commit");
    assert!(t0.elapsed() < Duration::from_secs(2), "woken by the commit");
    let info = writer.join().expect("writer");
    assert_eq!((s.xid, s.lsn, s.ts), (info.xid, info.lsn, info.ts));
    assert_eq!(r.next(NONE).expect("next"), None);
}

fn fill(db: &Db, n: usize, tag: &str) -> Vec<Xid> {
    (0..n)
        .map(|i| {
            let k = format!("{tag}{i}");
            let v = vec![b'x'; 2000];
            commit(db, "t", &[(k.as_bytes(), Some(&v))]).0.xid
        })
        .collect()
}

fn oldest_segment(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join(strata::WAL_DIR))
        .expect("wal dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            u64::from_str_radix(name.strip_suffix(".wal")?, 16).ok()
        })
        .min()
        .expect("a segment")
}

#[test]
fn a_reader_keeps_its_log_across_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    create_tables(&db, &["t"]);
    let mut r = db
        .change_reader(db.change_position().expect("position"))
        .expect("reader");
    let first = oldest_segment(dir.path());
    let xids = fill(&db, 200, "a");
    db.checkpoint().expect("checkpoint");
    let more = fill(&db, 200, "b");
    db.checkpoint().expect("checkpoint");
    assert_eq!(
        oldest_segment(dir.path()),
        first,
        "the reader's segments stay"
    );
    let got: Vec<Xid> = drain(&mut r, NONE).iter().map(|s| s.xid).collect();
    assert_eq!(got, [xids, more].concat());
    // Read: the log goes at the next checkpoint, and without a reader too.
    db.checkpoint().expect("checkpoint");
    assert!(oldest_segment(dir.path()) > first, "recycled once read");
    drop(r);
    db.checkpoint().expect("checkpoint");
}

#[test]
fn past_its_retention_bound_a_reader_gets_changes_lost_and_within_it_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_with(dir.path(), opts().change_retention_bytes(256 << 10)).expect("open");
    create_tables(&db, &["t"]);
    let from = db.change_position().expect("position");
    let mut behind = db.change_reader(from).expect("reader");
    let mut keeping_up = db.change_reader(from).expect("reader");
    let mut seen = Vec::new();
    let mut all = Vec::new();
    for round in 0..6 {
        all.extend(fill(&db, 40, &format!("r{round}-")));
        seen.extend(drain(&mut keeping_up, NONE).iter().map(|s| s.xid));
        db.checkpoint().expect("checkpoint");
    }
    assert_eq!(seen, all, "the reader within its bound lost nothing");
    match behind.next(NONE) {
        Err(Error::ChangesLost { from: f, oldest }) => {
            assert_eq!(f, from.restart);
            assert!(oldest > f, "{oldest} > {f}");
        }
        other => panic!("a reader past its bound: {other:?}"),
    }
    // Starting from recycled log is the same error.
    assert!(matches!(
        db.change_reader(from),
        Err(Error::ChangesLost { .. })
    ));
}

#[test]
fn vacuum_keeps_the_versions_a_reader_has_yet_to_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    create_tables(&db, &["t"]);
    let mut r = db
        .change_reader(db.change_position().expect("position"))
        .expect("reader");
    let (first, _) = commit(&db, "t", &[(b"k", Some(b"v1")), (b"j", Some(b"j1"))]);
    commit(&db, "t", &[(b"k", Some(b"v2")), (b"j", None)]);
    commit(&db, "t", &[(b"k", None)]);
    std::thread::sleep(Duration::from_millis(5));
    let vac = {
        let db = db.clone();
        std::thread::spawn(move || {
            for _ in 0..3 {
                db.vacuum().expect("vacuum");
            }
        })
    };
    vac.join().expect("vacuum");
    let got = drain(&mut r, NONE);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].xid, first.xid);
    let k = |v: Option<&[u8]>| v.map(<[u8]>::to_vec);
    let want: Writes = [
        (("t".to_string(), b"k".to_vec()), k(Some(b"v1"))),
        (("t".to_string(), b"j".to_vec()), k(Some(b"j1"))),
    ]
    .into();
    assert_eq!(writes(&got[0]), want, "the first values, replaced since");
    assert_eq!(
        writes(&got[1])[&("t".to_string(), b"k".to_vec())],
        k(Some(b"v2"))
    );
}

#[test]
fn large_values_come_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    create_tables(&db, &["t"]);
    let mut r = db
        .change_reader(db.change_position().expect("position"))
        .expect("reader");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    commit(&db, "t", &[(b"big", Some(&big)), (b"small", Some(b"s"))]);
    let big2: Vec<u8> = big.iter().rev().copied().collect();
    commit(&db, "t", &[(b"big", Some(&big2))]);
    let got = drain(&mut r, NONE);
    assert_eq!(got.len(), 2);
    assert_eq!(
        writes(&got[0])[&("t".to_string(), b"big".to_vec())].as_deref(),
        Some(&big[..])
    );
    assert_eq!(
        writes(&got[1])[&("t".to_string(), b"big".to_vec())].as_deref(),
        Some(&big2[..])
    );
}

#[test]
fn prepared_transactions_appear_when_committed_and_never_when_rolled_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    create_tables(&db, &["t"]);
    let table = db.table("t").expect("table");
    let mut r = db
        .change_reader(db.change_position().expect("position"))
        .expect("reader");
    let mut p1 = db.begin().expect("begin");
    p1.put(&table, b"p1", b"one").expect("put");
    let p1x = p1.xid();
    p1.prepare("g1").expect("prepare");
    let mut p2 = db.begin().expect("begin");
    p2.put(&table, b"p2", b"two").expect("put");
    p2.prepare("g2").expect("prepare");
    let (plain, _) = commit(&db, "t", &[(b"k", Some(b"v"))]);
    // Prepared is not committed: only the plain commit so far.
    let got = drain(&mut r, NONE);
    assert_eq!(got.iter().map(|s| s.xid).collect::<Vec<_>>(), [plain.xid]);
    db.rollback_prepared("g2").expect("rollback");
    db.commit_prepared("g1").expect("commit");
    let got = drain(&mut r, NONE);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].xid, p1x);
    let w: Writes = [(("t".to_string(), b"p1".to_vec()), Some(b"one".to_vec()))].into();
    assert_eq!(writes(&got[0]), w);
    // From the start again: the same.
    let again = drain(&mut db.change_reader(got[0].resume).expect("reader"), NONE);
    assert!(again.is_empty());
}

#[test]
fn after_a_reopen_the_stream_reads_from_an_old_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (from, xids) = {
        let db = open(dir.path());
        create_tables(&db, &["t", "u"]);
        let from = db.change_position().expect("position");
        let xids = vec![
            commit(&db, "t", &[(b"a", Some(b"1"))]).0.xid,
            commit(&db, "u", &[(b"b", Some(b"2"))]).0.xid,
            commit(&db, "t", &[(b"a", None)]).0.xid,
        ];
        db.close().expect("close");
        (from, xids)
    };
    let db = open(dir.path());
    let got = drain(&mut db.change_reader(from).expect("reader"), NONE);
    assert_eq!(got.iter().map(|s| s.xid).collect::<Vec<_>>(), xids);
    assert_eq!(
        writes(&got[2]),
        [(("t".to_string(), b"a".to_vec()), None)].into()
    );
    let (next, _) = commit(&db, "u", &[(b"c", Some(b"3"))]);
    let tail = drain(&mut db.change_reader(got[2].resume).expect("reader"), NONE);
    assert_eq!(tail.iter().map(|s| s.xid).collect::<Vec<_>>(), [next.xid]);
}

#[test]
fn tables_created_renamed_and_dropped_are_changes_of_their_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    let from: ChangePos = db.change_position().expect("position");
    let t = common::create(&db, "t");
    let mut tx = db.begin().expect("begin");
    tx.rename_table(&t, "t2").expect("rename");
    tx.commit().expect("commit");
    let t2 = db.table("t2").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.drop_table(&t2).expect("drop");
    tx.commit().expect("commit");
    let got = drain(&mut db.change_reader(from).expect("reader"), NONE);
    let kinds: Vec<(String, ChangeKind)> = got
        .iter()
        .flat_map(|s| s.changes.iter().map(|c| (c.table.clone(), c.kind.clone())))
        .collect();
    assert_eq!(
        kinds,
        [
            ("t".to_string(), ChangeKind::TableCreated),
            (
                "t".to_string(),
                ChangeKind::TableRenamed {
                    to: "t2".to_string()
                }
            ),
            ("t2".to_string(), ChangeKind::TableDropped),
        ]
    );
}

/// Guards against a scan that took a new segment holding only its header,
/// durable at the log's end after a checkpoint rolled the log, for damage.
#[test]
fn a_checkpoint_that_rolls_the_log_leaves_the_stream_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Segments of the default size: the checkpoint rolls one of 1 MiB.
    let opts = opts().wal_segment_size(strata::limits::WAL_SEGMENT_SIZE);
    let db = Db::open_with(dir.path(), opts).expect("open");
    create_tables(&db, &["t"]);
    let mut r = db
        .change_reader(db.change_position().expect("position"))
        .expect("reader");
    let xids = fill(&db, 600, "a");
    let before = oldest_segment(dir.path());
    db.checkpoint().expect("checkpoint");
    assert_eq!(
        oldest_segment(dir.path()),
        before,
        "the reader's segment stays"
    );
    let got: Vec<Xid> = drain(&mut r, NONE).iter().map(|s| s.xid).collect();
    assert_eq!(got, xids);
    let (next, _) = commit(&db, "t", &[(b"k", Some(b"v"))]);
    assert_eq!(r.next(NONE).expect("next").map(|s| s.xid), Some(next.xid));
}

#[test]
fn a_reader_behind_concurrent_overwrites_and_vacuum_reads_every_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    create_tables(&db, &["t"]);
    let mut r = db
        .change_reader(db.change_position().expect("position"))
        .expect("reader");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let vacuum = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut passes = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                db.vacuum().expect("vacuum");
                passes += 1;
            }
            passes
        })
    };
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            (0..150u32)
                .map(|i| {
                    let (k, v) = (format!("k{}", i % 4), format!("v{i}"));
                    commit(&db, "t", &[(k.as_bytes(), Some(v.as_bytes()))])
                })
                .collect::<Vec<_>>()
        })
    };
    let mut got = Vec::new();
    while got.len() < 150 {
        // Behind the writer, so vacuum meets versions replaced since.
        std::thread::sleep(Duration::from_millis(2));
        got.push(r.next(WAIT).expect("next").expect("a commit"));
    }
    let model = writer.join().expect("writer");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(vacuum.join().expect("vacuum") > 0);
    for (i, (s, (info, w))) in got.iter().zip(&model).enumerate() {
        assert_eq!(s.xid, info.xid, "#{i}");
        assert_eq!(&writes(s), w, "#{i}");
    }
}

#[test]
fn a_damaged_log_is_corruption_naming_the_segment_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    create_tables(&db, &["t"]);
    let mut r = db
        .change_reader(db.change_position().expect("position"))
        .expect("reader");
    fill(&db, 100, "a");
    let first = oldest_segment(dir.path());
    let path = dir
        .path()
        .join(strata::WAL_DIR)
        .join(format!("{first:016x}.wal"));
    let mut bytes = std::fs::read(&path).expect("segment");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&path, &bytes).expect("damage");
    let err = loop {
        match r.next(NONE) {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the damage went unnoticed"),
            Err(e) => break e,
        }
    };
    match err {
        Error::Corruption { file, offset, .. } => {
            assert_eq!(file, path);
            assert!(offset <= at as u64, "{offset} after the damage at {at}");
        }
        e => panic!("{e:?}"),
    }
}

/// A position is durable before it is handed out: a crash cannot cut the
/// log below it, so commits made after the crash come after it. A
/// position past the log's end is refused, never read as "nothing yet".
#[test]
fn a_position_survives_a_crash_and_one_past_the_log_is_refused() {
    use strata::fault::FaultFs;
    let dir = Path::new("/db");
    let fs = FaultFs::new();
    let db = Db::open_vfs(Arc::new(fs.clone()), dir, opts()).expect("open");
    let t = common::create(&db, "t");
    // A writer in flight: its records appended, not yet written out.
    let mut tx = db.begin().expect("begin");
    for i in 0..8u8 {
        tx.put(&t, [i], vec![b'x'; 1000]).expect("put");
    }
    let pos = db.change_position().expect("position");
    let img = fs.process_crash_image();
    drop((tx, t));
    std::mem::forget(db); // the process died
    let db = Db::open_vfs(Arc::new(img), dir, opts()).expect("reopen");
    let (after, _) = commit(&db, "t", &[(b"after", Some(b"crash"))]);
    let got = drain(&mut db.change_reader(pos).expect("reader"), NONE);
    assert_eq!(
        got.iter().map(|s| s.xid).collect::<Vec<_>>(),
        [after.xid],
        "the commit made after the crash, from a position taken before it"
    );
    let end = db.change_position().expect("position").next;
    let ahead = ChangePos {
        restart: end,
        next: strata::Lsn(end.0 + 4096),
    };
    match db.change_reader(ahead) {
        Err(Error::ChangePositionAhead { next, end: e }) => {
            assert_eq!((next, e), (ahead.next, end));
        }
        other => panic!("a position past the log's end: {other:?}"),
    }
}

/// An error reading a transaction leaves the reader where it was: the
/// retry meets the same transaction (here the same `SnapshotTooOld`),
/// never the one after it.
#[test]
fn an_error_leaves_the_reader_where_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    create_tables(&db, &["t"]);
    let from = db.change_position().expect("position");
    commit(&db, "t", &[(b"a", Some(b"1"))]);
    commit(&db, "t", &[(b"a", Some(b"2"))]);
    // No history retention: once the clock has moved on, vacuum's horizon
    // passes both commits and frees the first value.
    std::thread::sleep(Duration::from_millis(5));
    for _ in 0..2 {
        db.vacuum().expect("vacuum");
    }
    let mut r = db.change_reader(from).expect("reader");
    for attempt in 0..3 {
        match r.next(NONE) {
            Err(Error::SnapshotTooOld { .. }) => {}
            other => panic!("attempt {attempt}: the first transaction again: {other:?}"),
        }
        assert_eq!(r.position(), from, "attempt {attempt}: the reader stays");
    }
}

/// A prepared transaction committed at its prepare timestamp after the
/// reader started is below the horizon the reader started at, but lost
/// nothing (its versions are the newest): it is returned with its value.
#[test]
fn a_prepared_transaction_committed_below_the_readers_floor_after_it_started_is_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    let t = common::create(&db, "t");
    let mut p = db.begin().expect("begin");
    p.put(&t, b"p", b"prepared").expect("put");
    let pxid = p.xid();
    let prepare_ts = p.prepare("g").expect("prepare");
    commit(&db, "t", &[(b"q", Some(b"1"))]);
    // The horizon passes the prepare timestamp before the reader starts.
    std::thread::sleep(Duration::from_millis(5));
    db.vacuum().expect("vacuum");
    let mut r = db
        .change_reader(db.change_position().expect("position"))
        .expect("reader");
    db.commit_prepared_at("g", prepare_ts)
        .expect("commit prepared");
    let (later, _) = commit(&db, "t", &[(b"z", Some(b"2"))]);
    let first = r
        .next(NONE)
        .expect("the prepared commit")
        .expect("a commit");
    assert_eq!((first.xid, first.ts), (pxid, prepare_ts));
    let w: Writes = [(("t".to_string(), b"p".to_vec()), Some(b"prepared".to_vec()))].into();
    assert_eq!(writes(&first), w);
    let second = r.next(NONE).expect("next").expect("a commit");
    assert_eq!(second.xid, later.xid);
}

/// The table and key changes of a returned transaction, in order.
fn changes_of(got: &[ChangeSet]) -> Vec<(String, Vec<u8>, ChangeKind)> {
    got.iter()
        .flat_map(|s| {
            s.changes
                .iter()
                .map(|c| (c.table.clone(), c.key.clone(), c.kind.clone()))
        })
        .collect()
}

fn renamed(to: &str) -> ChangeKind {
    ChangeKind::TableRenamed { to: to.into() }
}

/// A table created and renamed in one transaction: created under its
/// first name, then renamed, then written under its new one.
#[test]
fn a_table_created_and_renamed_in_one_transaction_is_both_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    let from = db.change_position().expect("position");
    let x = db.table("x").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.create_table(&x).expect("create");
    tx.rename_table(&x, "y").expect("rename");
    tx.put(&db.table("y").expect("table"), b"k", b"v")
        .expect("put");
    tx.commit().expect("commit");
    let got = drain(&mut db.change_reader(from).expect("reader"), NONE);
    assert_eq!(
        changes_of(&got),
        [
            ("x".to_string(), vec![], ChangeKind::TableCreated),
            ("x".to_string(), vec![], renamed("y")),
            (
                "y".to_string(),
                b"k".to_vec(),
                ChangeKind::Put(b"v".to_vec())
            ),
        ]
    );
}

/// Renames a → b → c in one transaction, after a write: each rename with
/// its own new name, and table changes before key changes, so a replica
/// applying them in order knows the table it writes in.
#[test]
fn renames_in_one_transaction_each_name_their_new_name_before_the_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    let a = common::create(&db, "a");
    let from = db.change_position().expect("position");
    let mut tx = db.begin().expect("begin");
    tx.put(&a, b"k", b"v").expect("put");
    tx.rename_table(&a, "b").expect("rename");
    tx.rename_table(&db.table("b").expect("table"), "c")
        .expect("rename");
    tx.commit().expect("commit");
    let got = drain(&mut db.change_reader(from).expect("reader"), NONE);
    assert_eq!(
        changes_of(&got),
        [
            ("a".to_string(), vec![], renamed("b")),
            ("b".to_string(), vec![], renamed("c")),
            (
                "c".to_string(),
                b"k".to_vec(),
                ChangeKind::Put(b"v".to_vec())
            ),
        ]
    );
}

/// A prepared rename committed at its prepare timestamp, below a commit
/// the reader has returned, then vacuum: the catalog row it replaced may
/// be gone, and the rename still names its new name.
#[test]
fn a_prepared_rename_committed_below_the_readers_hold_names_its_new_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    let a = common::create(&db, "a");
    create_tables(&db, &["u"]);
    let mut r = db
        .change_reader(db.change_position().expect("position"))
        .expect("reader");
    let mut p = db.begin().expect("begin");
    p.rename_table(&a, "b").expect("rename");
    let pxid = p.xid();
    let prepare_ts = p.prepare("g").expect("prepare");
    let (other, _) = commit(&db, "u", &[(b"k", Some(b"v"))]);
    let got = r.next(NONE).expect("next").expect("a commit");
    assert_eq!(got.xid, other.xid);
    db.commit_prepared_at("g", prepare_ts)
        .expect("commit prepared");
    std::thread::sleep(Duration::from_millis(5));
    for _ in 0..3 {
        db.vacuum().expect("vacuum");
    }
    let got = r.next(NONE).expect("next").expect("the rename");
    assert_eq!(got.xid, pxid);
    assert_eq!(
        changes_of(&[got]),
        [("a".to_string(), vec![], renamed("b"))]
    );
}

/// A writer that began before the oldest retained log holds the position
/// "now" there: a reader cannot start at it (`ChangesLost`) until the
/// writer ends.
#[test]
fn a_writer_older_than_the_log_keeps_readers_from_starting_now_until_it_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    let t = common::create(&db, "t");
    let mut long = db.begin().expect("begin");
    long.put(&t, b"long", b"1").expect("put");
    fill(&db, 200, "a");
    db.checkpoint().expect("checkpoint");
    db.checkpoint().expect("checkpoint");
    let pos = db.change_position().expect("position");
    match db.change_reader(pos) {
        Err(Error::ChangesLost { from, oldest }) => {
            assert_eq!(from, pos.restart);
            assert!(oldest > from, "{oldest} > {from}");
        }
        other => panic!("a reader from before the oldest log: {other:?}"),
    }
    let done = long.commit().expect("commit");
    let mut r = db
        .change_reader(db.change_position().expect("position"))
        .expect("reader");
    let (next, _) = commit(&db, "t", &[(b"k", Some(b"v"))]);
    let got: Vec<Xid> = drain(&mut r, NONE).iter().map(|s| s.xid).collect();
    assert_eq!(got, [next.xid], "not {:?}, committed before", done.xid);
}

/// A checkpoint whose recycle fails part way (a segment's removal fails
/// after others went) marks the readers it recycled past lost, as a
/// recycle that succeeds does: `ChangesLost`, not a log with a gap.
#[test]
fn a_recycle_failing_part_way_marks_the_readers_it_passed_lost() {
    use strata::fault::{FaultFs, FaultKind};
    let dir = Path::new("/db");
    let segments = |fs: &FaultFs| {
        fs.files()
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".wal"))
            .count()
    };
    // The k-th file operation of the checkpoint fails: find one that
    // fails after the recycle removed a segment and before its last.
    for k in 1..400u64 {
        let fs = FaultFs::new();
        let o = opts().change_retention_bytes(64 << 10);
        let db = Db::open_vfs(Arc::new(fs.clone()), dir, o).expect("open");
        create_tables(&db, &["t"]);
        let mut r = db
            .change_reader(db.change_position().expect("position"))
            .expect("reader");
        fill(&db, 200, "a");
        let before = segments(&fs);
        fs.fail_at(fs.ops() + k, FaultKind::Io, false);
        let c = db.checkpoint();
        fs.heal();
        assert!(
            c.is_err(),
            "no failing operation before the checkpoint ended (k = {k})"
        );
        let after = segments(&fs);
        if after == before || after + 1 >= before {
            continue; // failed before the removals, or at the first
        }
        match r.next(NONE) {
            Err(Error::ChangesLost { .. }) => return,
            other => panic!("k = {k}: a reader whose log was removed: {other:?}"),
        }
    }
    panic!("no operation of the checkpoint failed part way through its recycle");
}

/// A checkpoint that marks a reader lost while the reader reads (after
/// its check, before its reads: the race hook holds it there) lets its
/// history go, and vacuum frees a value the reader then needs: the read
/// is `ChangesLost`, never that value read as gone.
#[test]
fn a_reader_marked_lost_while_it_reads_gets_changes_lost() {
    use std::sync::mpsc;
    use strata::internals::RacePoint;
    let (paused_tx, paused_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let once = Mutex::new(Some((paused_tx, go_rx)));
    let o = opts().change_retention_bytes(64 << 10).race_hook(move |p| {
        if p != RacePoint::ChangeRead {
            return;
        }
        let pair = once.lock().expect("hook").take();
        if let Some((paused, go)) = pair {
            let _ = paused.send(());
            let _ = go.recv_timeout(Duration::from_secs(30));
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_with(dir.path(), o).expect("open");
    create_tables(&db, &["t"]);
    let mut r = db
        .change_reader(db.change_position().expect("position"))
        .expect("reader");
    let (first, _) = commit(&db, "t", &[(b"k", Some(b"v1"))]);
    commit(&db, "t", &[(b"k", Some(b"v2"))]);
    let reader = std::thread::spawn(move || r.next(NONE));
    paused_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the reader at its read");
    // Past the reader's bound: the checkpoint recycles its log and marks
    // it lost; vacuum then frees the first value.
    fill(&db, 200, "a");
    db.checkpoint().expect("checkpoint");
    std::thread::sleep(Duration::from_millis(5));
    for _ in 0..3 {
        db.vacuum().expect("vacuum");
    }
    go_tx.send(()).expect("resume the reader");
    match reader.join().expect("reader") {
        Err(Error::ChangesLost { .. }) => {}
        other => panic!(
            "the reader of {:?} marked lost while it read: {other:?}",
            first.xid
        ),
    }
}
