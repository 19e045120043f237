//! Opening and closing: `Db::open` creates a database only where one may
//! be created (a new or empty directory), `Options::create(false)` opens
//! only an existing one, a failed open leaves no file behind, I/O errors
//! name their path and operation, and `Db::close` reports the final
//! checkpoint's failure.

use std::error::Error as _;
use std::path::Path;
use std::sync::Arc;

use strata::fault::{FaultFs, FaultKind};
use strata::{Db, Error, Options};

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn put(db: &Db, k: &str, v: &str) {
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, k, v).expect("put");
    tx.commit().expect("commit");
}

fn get(db: &Db, k: &str) -> Option<Vec<u8>> {
    let t = db.table("t").expect("table");
    let tx = db.begin().expect("begin");
    tx.get(&t, k).expect("get")
}

/// Guards against `Db::open` mixing a database's files into a directory
/// that holds someone else's.
#[test]
fn creation_refuses_a_directory_holding_other_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("notes.txt"), "mine").expect("write");
    std::fs::create_dir(tmp.path().join("photos")).expect("mkdir");
    let err = Db::open(tmp.path()).expect_err("a foreign directory");
    assert!(matches!(err, Error::NotEmpty { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&tmp.path().display().to_string()) && text.contains("notes.txt"),
        "the error names the directory and what it found: {text}"
    );
    assert_eq!(names(tmp.path()), ["notes.txt", "photos"], "nothing added");
    // Not with create(false) either, and it says why.
    let err = Db::open_with(tmp.path(), Options::default().create(false)).expect_err("foreign");
    assert!(matches!(err, Error::NotADatabase { .. }), "{err:?}");
    assert_eq!(names(tmp.path()), ["notes.txt", "photos"]);
}

/// Guards against "I/O error: File exists (os error 17)" for a database
/// path that is a regular file.
#[test]
fn opening_a_regular_file_says_so() {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("data.bin");
    std::fs::write(&file, "not a database").expect("write");
    for opts in [
        Options::default(),
        Options::default().create(false),
        Options::default().read_only(true),
    ] {
        let err = Db::open_with(&file, opts).expect_err("a file");
        let text = err.to_string();
        assert!(
            text.contains(&file.display().to_string()) && text.contains("not a directory"),
            "{text}"
        );
    }
    assert_eq!(std::fs::read(&file).expect("read"), b"not a database");
    assert_eq!(names(tmp.path()), ["data.bin"]);
}

/// Guards against `Db::open("")` failing after it had made `wal/`, `LOCK`
/// and `data.strata` in the current directory.
#[test]
fn an_empty_path_is_refused_without_debris() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Only this test uses a relative path, so changing the process's
    // directory does not disturb the others in this file.
    std::env::set_current_dir(tmp.path()).expect("cd");
    let err = Db::open("").expect_err("an empty path");
    assert!(err.to_string().contains("empty"), "{err}");
    assert!(names(tmp.path()).is_empty(), "left {:?}", names(tmp.path()));
}

/// Guards against a creation that fails part way (at any of its file
/// operations) leaving a half-made database behind.
#[test]
fn a_creation_that_fails_anywhere_leaves_no_file() {
    let dir = Path::new("/app/db");
    let mut n = 1;
    loop {
        let fs = FaultFs::new();
        fs.fail_at(n, FaultKind::Io, false);
        let opts = Options::default().background(false);
        match Db::open_vfs(Arc::new(fs.clone()), dir, opts) {
            Ok(_) => break,
            Err(e) => assert!(
                fs.files().is_empty(),
                "failure at operation {n} ({e}) left {:?}",
                fs.files()
            ),
        }
        n += 1;
        assert!(n < 1_000, "creation never succeeds");
    }
    assert!(n > 5, "the faults reached creation's operations");
}

#[test]
fn open_without_create_opens_only_an_existing_database() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("db");
    let existing = || Options::default().create(false);
    let err = Db::open_with(&dir, existing()).expect_err("missing");
    assert!(matches!(err, Error::NotADatabase { .. }), "{err:?}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!dir.exists(), "the directory was made");
    std::fs::create_dir(&dir).expect("mkdir");
    let err = Db::open_with(&dir, existing()).expect_err("empty");
    assert!(matches!(err, Error::NotADatabase { .. }), "{err:?}");
    assert!(names(&dir).is_empty(), "left {:?}", names(&dir));
    // An empty log directory (what a failed creation on a file system that
    // cannot remove directories leaves) is no database either.
    std::fs::create_dir(dir.join(strata::WAL_DIR)).expect("mkdir");
    let err = Db::open_with(&dir, existing()).expect_err("an empty log directory");
    assert!(matches!(err, Error::NotADatabase { .. }), "{err:?}");
    assert_eq!(names(&dir), [strata::WAL_DIR], "files were made");
    put(&Db::open(&dir).expect("create"), "k", "v");
    let db = Db::open_with(&dir, existing()).expect("an existing database");
    assert_eq!(get(&db, "k").as_deref(), Some(&b"v"[..]));
}

#[test]
fn io_errors_name_the_path_and_the_operation() {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("plain");
    std::fs::write(&file, "x").expect("write");
    // A directory under a regular file cannot be made.
    let under = file.join("db");
    let err = Db::open(&under).expect_err("under a file");
    let text = err.to_string();
    assert!(
        text.contains(&format!("cannot look up {}", under.display())),
        "{text}"
    );
    let source = err.source().expect("the OS error is kept");
    assert!(
        source.downcast_ref::<std::io::Error>().is_some(),
        "{source:?}"
    );
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    // Any file system's errors are named, not only the real one's.
    let fs = FaultFs::new();
    fs.fail_at(1, FaultKind::Io, false);
    let err = Db::open_vfs(Arc::new(fs), Path::new("/app/db"), Options::default())
        .expect_err("the directory cannot be made");
    let text = err.to_string();
    assert!(text.contains("cannot create directory /app/db"), "{text}");
    let code = err
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>());
    assert_eq!(
        code.and_then(std::io::Error::raw_os_error),
        Some(5),
        "EIO: {err:?}"
    );
}

#[test]
fn close_reports_the_final_checkpoint() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = Db::open(tmp.path()).expect("open");
    put(&db, "k", "v");
    db.close().expect("a clean close");
    // Closed: the lock is free and the data is there.
    let db = Db::open(tmp.path()).expect("reopen");
    assert_eq!(get(&db, "k").as_deref(), Some(&b"v"[..]));
    // Another handle keeps it open: close says so instead of closing.
    let other = db.clone();
    let err = db.close().expect_err("still in use");
    assert!(matches!(err, Error::InUse { .. }), "{err:?}");
    other.close().expect("the last handle closes");
    Db::open(tmp.path()).expect("free").close().expect("close");
}

/// Guards against the final checkpoint's failure being dropped: the
/// caller believed the database closed cleanly.
#[test]
fn close_returns_the_final_checkpoints_failure() {
    let fs = FaultFs::new();
    let opts = Options::default().background(false);
    let db = Db::open_vfs(Arc::new(fs.clone()), Path::new("/db"), opts).expect("open");
    put(&db, "k", "v");
    fs.fail_at(fs.ops() + 1, FaultKind::Io, true);
    let err = db.close().expect_err("the checkpoint fails");
    assert!(
        matches!(err, Error::Io { .. }) && err.to_string().contains("/db/"),
        "the error is the I/O failure, naming the file: {err}"
    );
    fs.heal();
    let db = Db::open_vfs(
        Arc::new(fs.process_crash_image()),
        Path::new("/db"),
        opts_bg(),
    )
    .expect("recovers");
    assert_eq!(get(&db, "k").as_deref(), Some(&b"v"[..]));
}

fn opts_bg() -> Options {
    Options::default().background(false)
}
