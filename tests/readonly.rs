//! `Options::read_only`: opening a database to look inside it without
//! changing a byte, even when its log still needs replaying.

mod common;

use common::{copy_dir, open, rows, snapshot_files};
use strata::{Db, Error, Options};

fn read_only(dir: &std::path::Path) -> strata::Result<Db> {
    // The smallest cache: replay must evict pages it changed.
    Db::open_with(dir, Options::default().read_only(true).cache_size(0))
}

/// A crash image whose log holds several cache-fulls of changes since the
/// last checkpoint.
type Rows = Vec<(Vec<u8>, Vec<u8>)>;

fn crashed_copy(tmp: &std::path::Path) -> (std::path::PathBuf, Rows) {
    let live = tmp.join("live");
    // A cache big enough that nothing reaches the data file before the
    // copy: the image's pages all come from the log.
    let db = Db::open_with(
        &live,
        Options::default().background(false).cache_size(64 << 20),
    )
    .expect("open");
    let t = db.table("t").expect("t");
    for batch in 0..20u32 {
        let mut tx = db.begin().expect("begin");
        for i in 0..500u32 {
            let v = format!("{batch}-{i}-").repeat(80);
            tx.put(&t, format!("k{:06}", (i * 7919 + batch) % 10_000), v)
                .expect("put");
        }
        tx.commit().expect("commit");
    }
    let tx = db.begin_read().expect("read");
    let expected = rows(&tx, &t);
    drop(tx);
    let copy = tmp.join("copy");
    copy_dir(&live, &copy);
    (copy, expected)
}

#[test]
fn read_only_open_replays_in_memory_and_changes_no_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (copy, expected) = crashed_copy(tmp.path());
    let before = snapshot_files(&copy);
    {
        let db = read_only(&copy).expect("read-only open");
        let t = db.table("t").expect("existing table");
        let tx = db.begin_read().expect("read");
        assert_eq!(rows(&tx, &t), expected, "replayed rows differ");
        drop(tx);
        assert!(db.check_integrity().is_ok(), "integrity after replay");
        let mut tx = db.begin().expect("begin");
        assert!(matches!(tx.put(&t, "x", "y"), Err(Error::ReadOnly)));
        let new = db.table("new").expect("a handle creates nothing");
        assert!(matches!(tx.put(&new, "x", "y"), Err(Error::ReadOnly)));
        assert!(matches!(tx.get(&new, "x"), Err(Error::NoSuchTable { .. })));
        assert!(matches!(db.checkpoint(), Err(Error::ReadOnly)));
        assert!(matches!(db.vacuum(), Err(Error::ReadOnly)));
        assert!(matches!(db.commit_prepared("g"), Err(Error::ReadOnly)));
    }
    assert!(
        snapshot_files(&copy) == before,
        "a read-only open changed the files"
    );
    // The writable open afterwards replays the same log for real.
    let db = open(&copy);
    let t = db.table("t").expect("t");
    let tx = db.begin_read().expect("read");
    assert_eq!(rows(&tx, &t), expected);
}

#[test]
fn read_only_open_of_an_open_database_is_locked() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    db.table("t").expect("t");
    match read_only(tmp.path()) {
        Err(Error::Locked { path }) => assert_eq!(path, tmp.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(db);
    read_only(tmp.path()).expect("free once closed");
}

#[test]
fn read_only_open_of_a_directory_without_a_database_creates_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let missing = tmp.path().join("missing");
    assert!(matches!(
        read_only(&missing),
        Err(Error::NotADatabase { .. })
    ));
    assert!(!missing.exists(), "read-only open created the directory");
    assert!(matches!(
        read_only(tmp.path()),
        Err(Error::NotADatabase { .. })
    ));
    assert_eq!(std::fs::read_dir(tmp.path()).expect("ls").count(), 0);
}
