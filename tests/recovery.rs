//! Recovery from crash images and damaged files. A copy of a live
//! database directory is what `kill -9` would leave behind (commits are
//! fsynced before they return), so these tests copy, damage, and reopen.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::{copy_dir, open, rows};
use strata::Error;

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(path).expect("open");
    f.write_all_at(bytes, offset).expect("write");
}

fn fill(db: &strata::Db, n: u32, tag: &str) {
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    for i in 0..n {
        tx.put(&t, format!("k{i:05}"), format!("{tag}-{i}"))
            .expect("put");
    }
    tx.commit().expect("commit");
}

#[test]
fn crash_image_recovers_every_commit() {
    let tmp = tempfile::tempdir().expect("tmp");
    let img = tempfile::tempdir().expect("img");
    let db = open(tmp.path());
    fill(&db, 3000, "a");
    db.checkpoint().expect("checkpoint");
    fill(&db, 3000, "b");
    copy_dir(tmp.path(), img.path());
    let db2 = open(img.path());
    let tx = db2.begin().expect("begin");
    let r = rows(&tx, &db2.table("t").expect("t"));
    assert_eq!(r.len(), 3000);
    assert!(
        r.iter().all(|(_, v)| v.starts_with(b"b-")),
        "commits after the checkpoint were replayed"
    );
}

#[test]
fn torn_page_is_repaired_from_its_full_image() {
    let tmp = tempfile::tempdir().expect("tmp");
    let img = tempfile::tempdir().expect("img");
    let db = open(tmp.path());
    fill(&db, 2000, "a");
    db.checkpoint().expect("checkpoint");
    fill(&db, 2000, "b"); // allocates pages: the meta page is logged whole
    copy_dir(tmp.path(), img.path());
    // Tear page 0: its second half is garbage, as if the write stopped midway.
    write_at(&img.path().join("data.strata"), 4096, &[0x5A; 4096]);
    let db2 = open(img.path());
    let tx = db2.begin().expect("begin");
    let r = rows(&tx, &db2.table("t").expect("t"));
    assert_eq!(r.len(), 2000);
    assert!(r.iter().all(|(_, v)| v.starts_with(b"b-")));
}

#[test]
fn damaged_page_without_image_is_reported_with_file_and_offset() {
    let tmp = tempfile::tempdir().expect("tmp");
    let img = tempfile::tempdir().expect("img");
    let db = open(tmp.path());
    fill(&db, 500, "a");
    db.checkpoint().expect("checkpoint");
    copy_dir(tmp.path(), img.path());
    drop(db);
    // Page 2 is the catalog root (page 1 is the free map): untouched
    // since the checkpoint.
    write_at(&img.path().join("data.strata"), 2 * 8192 + 100, &[0xFF; 16]);
    let err = match strata::Db::open(img.path()).and_then(|db| db.table_names().map(|_| db)) {
        Err(e) => e,
        Ok(_) => panic!("damage went unnoticed"),
    };
    match err {
        Error::Corruption { file, offset, .. } => {
            assert!(file.ends_with("data.strata"), "{file:?}");
            assert_eq!(offset, 2 * 8192);
        }
        other => panic!("expected corruption, got {other}"),
    }
}

/// The last log segment of the copy of `db` in `img`, and the offset in it
/// where `db`'s log ends (zeros written ahead follow).
fn log_end(db: &strata::Db, img: &Path) -> (std::path::PathBuf, u64) {
    let end = db.stats().expect("stats").wal_end.0;
    let mut segs: Vec<_> = fs::read_dir(img.join("wal"))
        .expect("wal")
        .map(|e| e.expect("e").path())
        .collect();
    segs.sort();
    let last = segs.pop().expect("segment");
    let start = last
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .expect("segment name");
    assert!(
        fs::metadata(&last).expect("meta").len() > end - start,
        "the log is zero-filled ahead of its end"
    );
    (last, end - start)
}

#[test]
fn an_unacknowledged_write_into_the_zeros_past_the_log_is_cut() {
    let tmp = tempfile::tempdir().expect("tmp");
    let img = tempfile::tempdir().expect("img");
    let db = open(tmp.path());
    fill(&db, 100, "a");
    copy_dir(tmp.path(), img.path());
    let (last, end) = log_end(&db, img.path());
    // A write that reached the disk without the zeros before it.
    write_at(&last, end + 1000, &[0xa5; 700]);
    let db2 = open(img.path());
    let r = rows(&db2.begin().expect("begin"), &db2.table("t").expect("t"));
    assert_eq!(r.len(), 100);
    assert!(r.iter().all(|(_, v)| v.starts_with(b"a-")));
    fill(&db2, 10, "c");
    drop(db2);
    // Gone from the file, not merely skipped: the open cuts the log at its
    // end and the writer zero-fills ahead of it again.
    let bytes = fs::read(&last).expect("segment");
    let at = (end + 1000) as usize;
    assert!(
        bytes.len() < at + 700 || bytes[at..at + 700] != [0xa5; 700],
        "the stray write is still in the log"
    );
    let db3 = open(img.path());
    let r = rows(&db3.begin().expect("begin"), &db3.table("t").expect("t"));
    assert_eq!(r.len(), 100);
    assert_eq!(r[5].1, b"c-5");
    assert_eq!(r[50].1, b"a-50");
}

#[test]
fn torn_log_tail_is_cut_silently() {
    let tmp = tempfile::tempdir().expect("tmp");
    let img = tempfile::tempdir().expect("img");
    let db = open(tmp.path());
    fill(&db, 100, "a");
    db.checkpoint().expect("checkpoint");
    fill(&db, 100, "b");
    copy_dir(tmp.path(), img.path());
    let (last, end) = log_end(&db, img.path());
    // Cut into the commit record of the "b" transaction: the flush that
    // made it durable ended with a 28-byte durable mark after it.
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open")
        .set_len(end - 28 - 3)
        .expect("truncate");
    let db2 = open(img.path());
    let tx = db2.begin().expect("begin");
    let r = rows(&tx, &db2.table("t").expect("t"));
    assert_eq!(r.len(), 100);
    assert!(
        r.iter().all(|(_, v)| v.starts_with(b"a-")),
        "the torn transaction must vanish whole"
    );
    drop(tx);
    // And the log continues after the cut.
    fill(&db2, 10, "c");
    drop(db2);
    let db3 = open(img.path());
    assert_eq!(
        db3.begin()
            .expect("b")
            .get(&db3.table("t").expect("t"), "k00005")
            .expect("get")
            .as_deref(),
        Some(&b"c-5"[..])
    );
}

#[test]
fn foreign_or_newer_files_are_incompatible() {
    let tmp = tempfile::tempdir().expect("tmp");
    drop(open(tmp.path()));
    fs::write(
        tmp.path().join("CONTROL"),
        b"SQLite format 3\0 definitely not strata",
    )
    .expect("write");
    assert!(matches!(
        strata::Db::open(tmp.path()),
        Err(Error::IncompatibleFormat { .. })
    ));

    let tmp = tempfile::tempdir().expect("tmp");
    drop(open(tmp.path()));
    let mut c = fs::read(tmp.path().join("CONTROL")).expect("read");
    c[8] = 99; // format version
    let crc = common::crc32c(&c[..32]);
    c[32..36].copy_from_slice(&crc.to_le_bytes());
    fs::write(tmp.path().join("CONTROL"), &c).expect("write");
    let err = strata::Db::open(tmp.path()).expect_err("newer format must be refused");
    assert!(matches!(err, Error::IncompatibleFormat { .. }), "{err}");
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Asserts that `e` is what damage may give: `Corruption` naming a file of
/// the database in `dir` and an offset within it, or `IncompatibleFormat`.
fn assert_damage_error(e: &Error, dir: &Path) {
    match e {
        Error::Corruption { file, offset, .. } => {
            assert!(file.starts_with(dir), "corruption names {file:?}");
            if let Ok(m) = fs::metadata(file) {
                assert!(*offset <= m.len(), "{e}: the file has {} bytes", m.len());
            }
        }
        Error::IncompatibleFormat { .. } => {}
        other => panic!("damage gave {other}, not Corruption or IncompatibleFormat"),
    }
}

/// How a damaged image fared.
#[derive(Debug, PartialEq)]
enum Fate {
    /// Opening it reported the damage.
    Refused,
    /// It opened; a read reported the damage.
    ReadError,
    /// Everything read back was one of the allowed states, whole.
    Whole,
}

/// Opens the image in `dir` and reads it back. Every row read, every `get`
/// answer, and a whole scan must all agree with one state in `allowed`;
/// every error must be damage reported as such.
fn read_damaged(dir: &Path, allowed: &[&Model]) -> Fate {
    let opts = strata::Options::default().background(false);
    let db = match strata::Db::open_with(dir, opts) {
        Ok(db) => db,
        Err(e) => {
            assert_damage_error(&e, dir);
            return Fate::Refused;
        }
    };
    let failed = std::cell::Cell::new(false);
    let fail = |e: Error| {
        assert_damage_error(&e, dir);
        failed.set(true);
    };
    let mut states: Vec<&Model> = allowed.to_vec();
    let t = db.table("t").and_then(|t| Ok((db.begin()?, t)));
    if let Ok((tx, t)) = t.map_err(fail) {
        let mut keys = Vec::new();
        match tx.scan(&t, ..) {
            Ok(scan) => {
                for row in scan {
                    let (k, v) = match row {
                        Ok(r) => r,
                        Err(e) => {
                            fail(e);
                            break;
                        }
                    };
                    states.retain(|m| m.get(&k) == Some(&v));
                    assert!(
                        !states.is_empty(),
                        "row {:?} reads back a value never committed for it",
                        String::from_utf8_lossy(&k)
                    );
                    assert!(keys.last() < Some(&k), "the scan goes backwards");
                    keys.push(k);
                }
                if !failed.get() {
                    states.retain(|m| m.keys().eq(keys.iter()));
                    assert!(
                        !states.is_empty(),
                        "the scan's keys are no committed state's"
                    );
                }
            }
            Err(e) => fail(e),
        }
        let probes = allowed
            .iter()
            .flat_map(|m| m.keys().step_by(97))
            .map(Vec::as_slice)
            .chain([&b"big"[..], b"k99999"]);
        for k in probes {
            match tx.get(&t, k) {
                Ok(v) => {
                    states.retain(|m| m.get(k) == v.as_ref());
                    assert!(
                        !states.is_empty(),
                        "get {:?} gives what no committed state holds",
                        String::from_utf8_lossy(k)
                    );
                }
                Err(e) => fail(e),
            }
        }
    }
    if let Err(e) = db.vacuum() {
        fail(e);
    }
    if failed.get() {
        Fate::ReadError
    } else {
        Fate::Whole
    }
}

/// Random damage to any file gives a clear error, or reads that all agree
/// with the committed rows: never a wrong value, never a row not written.
/// Every commit here was fsynced before it returned, so a later durable
/// mark vouches for each batch but the last (FORMAT.md §6 step 4): damage
/// to the log before that is reported, and only damage inside the last
/// batch may cut it (with the commit it holds) as a torn tail.
#[test]
fn random_damage_gives_an_error_or_the_committed_rows() {
    let base = tempfile::tempdir().expect("base");
    let work = tempfile::tempdir().expect("work");
    // The state after each commit, and the log range of each batch after
    // the checkpoint: no background thread, so nothing else is logged.
    let mut states = vec![Model::new()];
    let mut batches = Vec::new();
    {
        let opts = strata::Options::default().background(false);
        let db = strata::Db::open_with(base.path(), opts).expect("open");
        let end = || db.stats().expect("stats").wal_end.0;
        let commit = |states: &mut Vec<Model>, rows: Vec<(String, Vec<u8>)>| {
            let t = db.table("t").expect("t");
            let mut tx = db.begin().expect("begin");
            let mut m = states.last().expect("state").clone();
            for (k, v) in rows {
                tx.put(&t, &k, &v).expect("put");
                m.insert(k.into_bytes(), v);
            }
            tx.commit().expect("commit");
            states.push(m);
        };
        let tagged = |n: u32, tag: &str| {
            (0..n)
                .map(|i| (format!("k{i:05}"), format!("{tag}-{i}").into_bytes()))
                .collect::<Vec<_>>()
        };
        commit(&mut states, tagged(1500, "a"));
        db.checkpoint().expect("checkpoint");
        let at = end();
        commit(&mut states, tagged(700, "b"));
        batches.push(at..end());
        let at = end();
        commit(&mut states, vec![("big".to_string(), vec![1u8; 50_000])]);
        batches.push(at..end());
        copy_dir(base.path(), &work.path().join("image"));
    }
    let image = work.path().join("image");
    let mut files = vec![image.join("data.strata"), image.join("CONTROL")];
    for e in fs::read_dir(image.join("wal")).expect("wal") {
        files.push(e.expect("e").path());
    }
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut fates = Vec::new();
    for round in 0..60 {
        let dir = work.path().join(format!("r{round}"));
        copy_dir(&image, &dir);
        // Which batches the damage reached, by log position.
        let mut hit = vec![false; batches.len()];
        for _ in 0..1 + next() % 4 {
            let f = &files[(next() as usize) % files.len()];
            let rel = f.strip_prefix(&image).expect("rel");
            let target = dir.join(rel);
            let len = fs::metadata(&target).expect("meta").len().max(1);
            let off = next() % len;
            let n = 1 + next() % 64;
            let bytes: Vec<u8> = (0..n).map(|_| next() as u8).collect();
            write_at(&target, off, &bytes);
            let seg = f.extension().is_some_and(|e| e == "wal").then(|| {
                let name = f.file_stem().and_then(|s| s.to_str()).expect("name");
                u64::from_str_radix(name, 16).expect("segment start")
            });
            if let Some(start) = seg {
                for (h, b) in hit.iter_mut().zip(&batches) {
                    *h |= start + off < b.end && b.start < start + off + n;
                }
            }
        }
        // The last commit stands unless its batch was damaged; then the
        // log may end before it, and before each earlier batch damaged too.
        let mut allowed = vec![states.last().expect("final")];
        for (i, h) in hit.iter().enumerate().rev() {
            if !h {
                break;
            }
            allowed.push(&states[i + 1]);
        }
        fates.push(read_damaged(&dir, &allowed));
    }
    let count = |f: Fate| fates.iter().filter(|&x| *x == f).count();
    let (refused, read_error, whole) = (
        count(Fate::Refused),
        count(Fate::ReadError),
        count(Fate::Whole),
    );
    eprintln!("random damage: {refused} refused, {read_error} read errors, {whole} whole");
    assert!(
        whole > 0 && refused + read_error > 0,
        "the rounds must include both outcomes"
    );
}

/// Replay is idempotent: running it over a data file that already holds
/// the changes (as after a crash during recovery's own checkpoint) gives
/// the same database.
#[test]
fn replaying_over_already_recovered_pages_is_harmless() {
    let tmp = tempfile::tempdir().expect("tmp");
    let image = tempfile::tempdir().expect("image");
    let recovered = tempfile::tempdir().expect("recovered");
    let db = open(tmp.path());
    fill(&db, 2000, "a");
    db.checkpoint().expect("checkpoint");
    fill(&db, 2000, "b");
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    for i in (0..2000).step_by(3) {
        tx.delete(&t, format!("k{i:05}")).expect("delete");
    }
    tx.commit().expect("commit");
    copy_dir(tmp.path(), image.path());
    copy_dir(image.path(), recovered.path());
    let want = {
        let db = open(recovered.path());
        let tx = db.begin().expect("begin");
        rows(&tx, &db.table("t").expect("t"))
    };
    // The crash image's log and control file, with pages already recovered.
    fs::copy(
        recovered.path().join("data.strata"),
        image.path().join("data.strata"),
    )
    .expect("copy");
    let db2 = open(image.path());
    let tx = db2.begin().expect("begin");
    assert_eq!(rows(&tx, &db2.table("t").expect("t")), want);
    assert_eq!(want.len(), 2000 - 667);
}

/// A crash image whose log holds commits past its checkpoint: its redo
/// point and the data file's directory.
fn image_with_log_past_checkpoint(tmp: &Path, img: &Path) -> strata::Lsn {
    let db = open(tmp);
    fill(&db, 2000, "a");
    db.checkpoint().expect("checkpoint");
    fill(&db, 2000, "b");
    let redo = db.stats().expect("stats").checkpoint_redo;
    copy_dir(tmp, img);
    redo
}

/// Without a maintenance thread, opening checkpoints what it replayed
/// before it returns.
#[test]
fn an_open_without_background_work_checkpoints_what_it_replayed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let img = tempfile::tempdir().expect("img");
    let redo = image_with_log_past_checkpoint(tmp.path(), img.path());
    let db = strata::Db::open_with(img.path(), strata::Options::default().background(false))
        .expect("open");
    assert!(db.stats().expect("stats").checkpoint_redo > redo);
}

/// With one, the open returns after replay and the maintenance thread
/// checkpoints at its first turn (bounded here by a generous wait: the
/// test is of liveness, not of speed).
#[test]
fn the_maintenance_thread_checkpoints_what_an_open_replayed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let img = tempfile::tempdir().expect("img");
    let redo = image_with_log_past_checkpoint(tmp.path(), img.path());
    // No checkpoint by the clock or the log's size: only the one owed.
    let opts = strata::Options::default()
        .checkpoint_interval(std::time::Duration::from_secs(3600))
        .checkpoint_wal_bytes(u64::MAX);
    let db = strata::Db::open_with(img.path(), opts).expect("open");
    let tx = db.begin().expect("begin");
    let r = rows(&tx, &db.table("t").expect("t"));
    assert!(r.len() == 2000 && r.iter().all(|(_, v)| v.starts_with(b"b-")));
    drop(tx);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while db.stats().expect("stats").checkpoint_redo <= redo {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint after the replay"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Guards against an open without CONTROL deleting the data file and the log of an existing database.
#[test]
fn a_missing_control_file_is_refused_and_nothing_is_touched() {
    let tmp = tempfile::tempdir().expect("tmp");
    drop(open_filled(tmp.path()));
    let control = tmp.path().join("CONTROL");
    let saved = fs::read(&control).expect("read");
    fs::remove_file(&control).expect("remove");
    let before = common::snapshot_files(tmp.path());
    for read_only in [false, true] {
        let opts = strata::Options::default().read_only(read_only);
        let err = strata::Db::open_with(tmp.path(), opts).expect_err("refused");
        match &err {
            Error::Corruption { file, .. } => assert_eq!(file, &control, "{err}"),
            _ => panic!("read_only {read_only}: {err:?}"),
        }
        assert!(err.to_string().contains("control file is missing"), "{err}");
        assert_eq!(
            common::snapshot_files(tmp.path()),
            before,
            "read_only {read_only}: a refused open changed the files"
        );
    }
    fs::write(&control, saved).expect("restore");
    let db = open(tmp.path());
    let tx = db.begin().expect("begin");
    assert_eq!(rows(&tx, &db.table("t").expect("t")).len(), 100);
}

fn open_filled(dir: &Path) -> strata::Db {
    let db = open(dir);
    fill(&db, 100, "a");
    db.checkpoint().expect("checkpoint");
    fill(&db, 100, "b");
    db
}

/// A whole, checksummed log record naming the last xid there can be (an
/// edit a checksum happens to pass, as a fuzzer made one): recovery refuses
/// it as damage rather than overflow past it.
#[test]
fn a_record_naming_an_impossible_xid_is_corruption() {
    use strata::internals::ids::{Lsn, Xid};
    use strata::internals::redo::record::{Kind, Record};
    use strata::internals::wal::frame::frame;
    use strata::internals::wal::reader::LogReader;
    for (xid, aux) in [(u64::MAX, 0), (0, u64::MAX), (1 << 63, 0)] {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = open(tmp.path());
        let t = db.table("t").expect("t");
        let mut tx = db.begin().expect("begin");
        tx.put(&t, "k", "v").expect("put");
        tx.commit().expect("commit");
        drop((t, db));
        let wal = tmp.path().join("wal");
        let vfs = strata::RealFs;
        let end = {
            let mut r = LogReader::open(&vfs, &wal, Lsn(0)).expect("reader");
            while r.next_ref().expect("record").is_some() {}
            r.end.expect("end")
        };
        let mut last: Vec<_> = fs::read_dir(&wal)
            .expect("wal")
            .map(|e| e.expect("entry").path())
            .collect();
        last.sort();
        let seg = last.pop().expect("a segment");
        let start =
            u64::from_str_radix(seg.file_stem().and_then(|s| s.to_str()).expect("name"), 16)
                .expect("hex name");
        let kind = if aux == 0 {
            Kind::Commit
        } else {
            Kind::XidHighWater
        };
        let mut bytes = Vec::new();
        frame(&Record::bare(kind, Xid(xid), aux).encode(), &mut bytes);
        let mut data = fs::read(&seg).expect("segment");
        let at = (end.0 - start) as usize;
        data.truncate(at);
        data.extend_from_slice(&bytes);
        fs::write(&seg, &data).expect("write");
        match strata::Db::open(tmp.path()) {
            Err(Error::Corruption { reason, .. }) => {
                assert!(reason.contains("past 2^63"), "{reason}")
            }
            other => panic!("xid {xid}, high water {aux}: {:?}", other.map(drop)),
        }
    }
}
