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
    let from = db.change_position();
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
    let from = db.change_position();
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
    let mut r = db.change_reader(db.change_position()).expect("reader");
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
    let mut r = db.change_reader(db.change_position()).expect("reader");
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
    let from = db.change_position();
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
    let mut r = db.change_reader(db.change_position()).expect("reader");
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
    let mut r = db.change_reader(db.change_position()).expect("reader");
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
    let mut r = db.change_reader(db.change_position()).expect("reader");
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
        let from = db.change_position();
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
    let from: ChangePos = db.change_position();
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
    let mut r = db.change_reader(db.change_position()).expect("reader");
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
    let mut r = db.change_reader(db.change_position()).expect("reader");
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
    let mut r = db.change_reader(db.change_position()).expect("reader");
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
