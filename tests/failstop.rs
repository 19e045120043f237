//! Fail-stop: an fsync failure poisons the database; reopening recovers
//! from the durable log. (Issue 3 brings the full fault-injecting VFS; this
//! wrapper only fails syncs on demand.)

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use strata::{Db, Error, Options};
use strata::{RealFs, Vfs, VfsFile, VfsLock};

#[derive(Default)]
struct FailingSync {
    fail: Arc<AtomicBool>,
}

struct File {
    inner: Box<dyn VfsFile>,
    fail: Arc<AtomicBool>,
}

impl VfsFile for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> strata::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> strata::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn sync(&self) -> strata::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::from(std::io::Error::other("injected EIO on fsync")));
        }
        self.inner.sync()
    }
    fn set_len(&self, len: u64) -> strata::Result<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> strata::Result<u64> {
        self.inner.len()
    }
}

impl Vfs for FailingSync {
    fn open(&self, path: &Path, create: bool) -> strata::Result<Box<dyn VfsFile>> {
        Ok(Box::new(File {
            inner: RealFs.open(path, create)?,
            fail: self.fail.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> strata::Result<()> {
        RealFs.rename(from, to)
    }
    fn remove(&self, path: &Path) -> strata::Result<()> {
        RealFs.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> strata::Result<()> {
        RealFs.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> strata::Result<Box<dyn VfsLock>> {
        RealFs.lock(path)
    }
    fn create_dir_all(&self, dir: &Path) -> strata::Result<()> {
        RealFs.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> strata::Result<Vec<PathBuf>> {
        RealFs.list(dir)
    }
    fn exists(&self, path: &Path) -> strata::Result<bool> {
        RealFs.exists(path)
    }
}

#[test]
fn fsync_failure_poisons_and_reopen_recovers() {
    let tmp = tempfile::tempdir().expect("tmp");
    let vfs = Arc::new(FailingSync::default());
    let fail = vfs.fail.clone();
    let db = Db::open_vfs(vfs, tmp.path(), Options::default()).expect("open");
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "before", "1").expect("put");
    tx.commit().expect("commit");

    fail.store(true, Ordering::SeqCst);
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "during", "2").expect("put is buffered");
    let err = tx.commit().expect_err("commit must fail when fsync fails");
    assert!(matches!(err, Error::CommitOutcomeUnknown { .. }), "{err}");
    let cause = db.poison_cause().expect("a cause is kept");
    assert!(cause.contains("injected EIO"), "{cause}");

    fail.store(false, Ordering::SeqCst);
    // Even with fsync working again, nothing more is acknowledged, and
    // each refusal names the failure.
    let refused = db.begin().map(drop).expect_err("poisoned");
    assert!(
        matches!(&refused, Error::Poisoned { cause } if cause.contains("injected EIO")),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("injected EIO"), "{refused}");
    assert!(matches!(db.checkpoint(), Err(Error::Poisoned { .. })));
    drop(db);

    let db = Db::open(tmp.path()).expect("reopen recovers");
    let t = db.table("t").expect("t");
    let tx = db.begin().expect("begin");
    assert_eq!(
        tx.get(&t, "before").expect("get").as_deref(),
        Some(&b"1"[..])
    );
    // "during" was never acknowledged: it may or may not have reached the log.
    let mut tx2 = db.begin().expect("writes work again");
    tx2.put(&t, "after", "3").expect("put");
    tx2.commit().expect("commit");
}

#[test]
fn an_open_transaction_cannot_commit_after_poisoning() {
    let tmp = tempfile::tempdir().expect("tmp");
    let vfs = Arc::new(FailingSync::default());
    let fail = vfs.fail.clone();
    let db = Db::open_vfs(vfs, tmp.path(), Options::default()).expect("open");
    let t = db.table("t").expect("t");
    let mut create = db.begin().expect("begin");
    create.create_table(&t).expect("create");
    create.commit().expect("commit");
    let mut open_tx = db.begin().expect("begin");
    open_tx.put(&t, "a", "1").expect("put");
    fail.store(true, Ordering::SeqCst);
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "b", "2").expect("put");
    assert!(tx.commit().is_err());
    fail.store(false, Ordering::SeqCst);
    assert!(matches!(
        open_tx.put(&t, "c", "3"),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(open_tx.commit(), Err(Error::Poisoned { .. })));
}

/// Guards against a commit whose log fsync failed reporting an error that reads as an abort.
#[test]
fn a_commit_whose_fsync_failed_reports_its_outcome_unknown() {
    let tmp = tempfile::tempdir().expect("tmp");
    let vfs = Arc::new(FailingSync::default());
    let fail = vfs.fail.clone();
    let opts = Options::default().background(false);
    let db = Db::open_vfs(vfs, tmp.path(), opts.clone()).expect("open");
    let t = db.table("t").expect("t");
    fail.store(true, Ordering::SeqCst);
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "k", "v").expect("put");
    let err = tx.commit().expect_err("the fsync fails");
    assert!(
        matches!(&err, Error::CommitOutcomeUnknown { cause } if cause.contains("injected EIO")),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("outcome of the commit is unknown"),
        "{err}"
    );
    assert!(!err.is_retryable(), "it may have committed: no blind retry");
    fail.store(false, Ordering::SeqCst);
    let mut later = db.begin().map(|_| ()).expect_err("poisoned");
    assert!(matches!(later, Error::Poisoned { .. }), "{later}");
    later = db.checkpoint().expect_err("poisoned");
    assert!(matches!(later, Error::Poisoned { .. }), "{later}");
    drop(db);
    // The record was written before its fsync failed, and the file
    // system kept it: the transaction did commit.
    let db = Db::open_with(tmp.path(), opts).expect("reopen");
    let t = db.table("t").expect("t");
    let got = db.begin().expect("begin").get(&t, "k").expect("get");
    assert_eq!(got.as_deref(), Some(&b"v"[..]));
}

/// Guards against a commit_prepared whose log fsync failed reporting an error that reads as an abort.
#[test]
fn a_commit_prepared_whose_fsync_failed_reports_its_outcome_unknown() {
    let tmp = tempfile::tempdir().expect("tmp");
    let vfs = Arc::new(FailingSync::default());
    let fail = vfs.fail.clone();
    let opts = Options::default().background(false);
    let db = Db::open_vfs(vfs, tmp.path(), opts.clone()).expect("open");
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "k", "v").expect("put");
    tx.prepare("g").expect("prepare");
    fail.store(true, Ordering::SeqCst);
    let err = db.commit_prepared("g").expect_err("the fsync fails");
    assert!(matches!(err, Error::CommitOutcomeUnknown { .. }), "{err:?}");
    fail.store(false, Ordering::SeqCst);
    drop(db);
    let db = Db::open_with(tmp.path(), opts).expect("reopen");
    assert!(
        db.prepared_transactions().expect("list").is_empty(),
        "the decision was written before its fsync failed: it holds"
    );
    let t = db.table("t").expect("t");
    let got = db.begin().expect("begin").get(&t, "k").expect("get");
    assert_eq!(got.as_deref(), Some(&b"v"[..]));
}

/// Guards against a prepare whose log fsync failed reporting a plain error
/// (which reads as "rolled back") while a restart finds it in doubt,
/// holding its row locks, with no coordinator that knows to decide it.
#[test]
fn a_prepare_whose_fsync_failed_reports_its_outcome_unknown() {
    let fs = strata::fault::FaultFs::new();
    let dir = Path::new("/db");
    let opts = || Options::default().background(false);
    {
        let db = Db::open_vfs(Arc::new(fs.clone()), dir, opts()).expect("open");
        let t = db.table("t").expect("table");
        let mut tx = db.begin().expect("begin");
        tx.put(&t, b"k", b"v").expect("put");
        // The prepare record's log write, then its fsync, which fails.
        fs.fail_at(fs.ops() + 2, strata::fault::FaultKind::Io, false);
        let e = tx.prepare("g").expect_err("the fsync fails");
        assert!(
            matches!(e, Error::PrepareOutcomeUnknown { .. }),
            "a prepare whose record may be durable must say so, not: {e}"
        );
        assert!(e.to_string().contains("unknown"), "{e}");
        assert!(matches!(db.checkpoint(), Err(Error::Poisoned { .. })));
    }
    // The process's written bytes survive: the record is there, and the
    // transaction is in doubt, as the error warned.
    let db = Db::open_vfs(Arc::new(fs.process_crash_image()), dir, opts()).expect("reopen");
    let in_doubt: Vec<String> = db
        .prepared_transactions()
        .expect("list")
        .into_iter()
        .map(|p| p.gid)
        .collect();
    assert_eq!(in_doubt, vec!["g".to_string()]);
    db.rollback_prepared("g").expect("decide it");
}

fn put_v(db: &Db, key: &[u8]) -> strata::Result<strata::CommitInfo> {
    let t = db.table("t")?;
    let mut tx = db.begin()?;
    tx.put(&t, key, b"v")?;
    tx.commit()
}

fn get_v(db: &Db, key: &[u8]) -> Option<Vec<u8>> {
    let t = db.table("t").expect("table");
    let tx = db.begin_read().expect("begin");
    tx.get(&t, key).expect("get")
}

/// Guards against reopening (with no crash) after a failed log fsync and
/// building on log bytes that are in the page cache but were never made
/// durable: recovery's fsync reported success without them (Linux dropped
/// them with the failed fsync), a later commit was acknowledged after its
/// own fsync, and the power-loss image refused to open.
#[test]
fn a_reopen_after_a_failed_log_fsync_makes_what_it_replays_durable() {
    let fs = strata::fault::FaultFs::new();
    let dir = Path::new("/db");
    let opts = || Options::default().background(false);
    {
        let db = Db::open_vfs(Arc::new(fs.clone()), dir, opts()).expect("open");
        put_v(&db, b"a").expect("commit a");
        db.checkpoint().expect("checkpoint");
        // The commit of b: its log write, then its fsync, which fails.
        fs.fail_at(fs.ops() + 2, strata::fault::FaultKind::Io, false);
        let e = put_v(&db, b"b").expect_err("b's fsync fails");
        assert!(matches!(e, Error::CommitOutcomeUnknown { .. }), "{e}");
    }
    // The maintenance thread checkpoints after a replay; its data-file
    // fsync waits (a bounded while) so that the power fails before any
    // checkpoint has made the replayed pages durable.
    let data_sync = strata::fault::OpMatch {
        kind: strata::fault::OpKind::Sync,
        file: strata::DATA_FILE,
    };
    let never = strata::fault::OpMatch {
        kind: strata::fault::OpKind::Remove,
        file: "never-removed",
    };
    let hold = fs.hold(data_sync, never, std::time::Duration::from_secs(10));
    let db = Db::open_vfs(Arc::new(fs.clone()), dir, Options::default()).expect("reopen");
    assert_eq!(get_v(&db, b"b").as_deref(), Some(&b"v"[..]), "b reads back");
    put_v(&db, b"c").expect("commit c");
    assert!(
        hold.wait_holding(std::time::Duration::from_secs(30)),
        "the checkpoint after the replay never reached its fsync"
    );
    let img = fs.synced_image();
    assert_eq!(
        hold.released(),
        None,
        "a checkpoint finished before the image"
    );
    // Lets the held checkpoint go (the removal itself finds nothing).
    let _ = strata::Vfs::remove(&fs, Path::new("/never-removed"));
    drop(db);
    let db = Db::open_vfs(Arc::new(img), dir, opts()).expect("the power-loss image opens");
    for key in [&b"a"[..], b"b", b"c"] {
        assert_eq!(
            get_v(&db, key).as_deref(),
            Some(&b"v"[..]),
            "{} was read back or acknowledged",
            String::from_utf8_lossy(key)
        );
    }
}
