//! Observability: the background worker's failures reach the application
//! (damage poisons the database and every later call names it; a read
//! error is kept for `Db::background_error`), and the engine's `tracing`
//! spans and events reach a subscriber (a small hand-written one here, so
//! the library's tests need no subscriber crate).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata::fault::FaultFs;
use strata::{Db, Error, Options, DATA_FILE};
use strata::{Vfs, VfsFile, VfsLock};

const PAGE: usize = 8192;
/// The type byte of the common page header (FORMAT.md §4.1); 2 is a heap page.
const TYPE_AT: usize = 16;
const HEAP: u8 = 2;

/// A span or event the subscriber saw, with its fields as text.
#[derive(Clone, Debug)]
struct Seen {
    event: bool,
    name: String,
    level: tracing::Level,
    fields: BTreeMap<String, String>,
}

/// A subscriber that keeps everything it is shown.
#[derive(Clone, Default)]
struct Capture {
    seen: Arc<Mutex<Vec<Seen>>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut fields = BTreeMap::new();
        span.record(&mut Fields(&mut fields));
        let mut seen = self.seen.lock().expect("capture");
        seen.push(Seen {
            event: false,
            name: span.metadata().name().to_string(),
            level: *span.metadata().level(),
            fields,
        });
        // Ids start at 1; each names its place in `seen`.
        tracing::span::Id::from_u64(seen.len() as u64)
    }
    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut seen = self.seen.lock().expect("capture");
        if let Some(s) = seen.get_mut(span.into_u64() as usize - 1) {
            values.record(&mut Fields(&mut s.fields));
        }
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.seen.lock().expect("capture").push(Seen {
            event: true,
            name: event.metadata().name().to_string(),
            level: *event.metadata().level(),
            fields,
        });
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl Capture {
    fn spans(&self, name: &str) -> Vec<Seen> {
        let seen = self.seen.lock().expect("capture");
        seen.iter()
            .filter(|s| !s.event && s.name == name)
            .cloned()
            .collect()
    }
    fn events(&self) -> Vec<Seen> {
        let seen = self.seen.lock().expect("capture");
        seen.iter().filter(|s| s.event).cloned().collect()
    }
}

fn field(s: &Seen, name: &str) -> u64 {
    s.fields
        .get(name)
        .unwrap_or_else(|| panic!("{} has no field {name}: {:?}", s.name, s.fields))
        .parse()
        .unwrap_or_else(|_| panic!("{}.{name} is not a number: {:?}", s.name, s.fields))
}

fn key(i: u32) -> String {
    format!("k{i:05}")
}

/// A database in `fs` at `/db` with 2 000 rows of 100-byte values in
/// table `t` (several full heap pages), checkpointed and closed.
fn filled(fs: &FaultFs) -> PathBuf {
    let dir = PathBuf::from("/db");
    let db = Db::open_vfs(
        Arc::new(fs.clone()),
        &dir,
        Options::default().background(false),
    )
    .expect("open");
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    for i in 0..2000 {
        tx.put(&t, key(i), [7u8; 100]).expect("put");
    }
    tx.commit().expect("commit");
    db.close().expect("close");
    dir
}

/// The number of the first heap page of the data file.
fn first_heap_page(fs: &FaultFs, dir: &Path) -> usize {
    let data = fs.read_file(&dir.join(DATA_FILE)).expect("data file");
    (1..data.len() / PAGE)
        .find(|p| data[p * PAGE + TYPE_AT] == HEAP)
        .expect("a heap page")
}

/// Gives the background vacuum work: 100 dead versions in table `u`
/// (whose new pages are not the damaged one), past a threshold of 50.
fn churn(db: &Db) {
    let u = db.table("u").expect("u");
    for round in 0..2u8 {
        let mut tx = db.begin().expect("begin");
        for i in 0..100 {
            tx.put(&u, key(i), [round; 8]).expect("put");
        }
        tx.commit().expect("commit");
    }
}

fn vacuum_soon() -> Options {
    Options::default()
        .vacuum_threshold(50)
        .checkpoint_interval(Duration::from_secs(3600))
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Guards against the background worker dropping what a vacuum pass
/// returns: a corrupt heap page that only the background vacuum reads
/// went unreported, and the database went on writing beside it.
#[test]
fn a_corrupt_page_met_by_background_vacuum_poisons_and_every_later_call_names_it() {
    let fs = FaultFs::new();
    let dir = filled(&fs);
    let page = first_heap_page(&fs, &dir);
    let path = dir.join(DATA_FILE);
    let mut data = fs.read_file(&path).expect("data");
    data[page * PAGE + 200..page * PAGE + 216].fill(0xA5);
    fs.write_file(&path, data);

    let capture = Capture::default();
    let db = tracing::subscriber::with_default(capture.clone(), || {
        Db::open_vfs(Arc::new(fs.clone()), &dir, vacuum_soon()).expect("open")
    });
    churn(&db);
    let cause = wait_for("the background vacuum to poison the database", || {
        db.poison_cause()
    });
    let offset = (page * PAGE).to_string();
    assert!(cause.contains("corruption"), "{cause}");
    assert!(
        cause.contains(DATA_FILE) && cause.contains(&offset),
        "{cause}"
    );

    let refused = db
        .begin()
        .map(drop)
        .expect_err("a poisoned database refuses");
    match &refused {
        Error::Poisoned { cause: c } => assert_eq!(c, &cause),
        other => panic!("expected Poisoned, got {other:?}"),
    }
    assert!(refused.to_string().contains(&offset), "{refused}");
    let again = db.checkpoint().expect_err("poisoned");
    assert!(matches!(again, Error::Poisoned { .. }), "{again}");
    assert_eq!(db.background_error(), None, "damage is not a passing error");

    let events = capture.events();
    let reported = events
        .iter()
        .find(|e| {
            e.level == tracing::Level::ERROR
                && e.fields.get("work").map(String::as_str) == Some("vacuum")
        })
        .unwrap_or_else(|| panic!("no error event for the vacuum: {events:?}"));
    assert!(reported.fields["error"].contains(&offset), "{reported:?}");
    assert!(reported.fields["dir"].contains("db"), "{reported:?}");

    // Close reports it too; the rows on other pages read back after a
    // reopen without background work.
    let closed = db.close().expect_err("close reports the poison");
    assert!(closed.to_string().contains(&offset), "{closed}");
    let db = Db::open_vfs(
        Arc::new(fs.clone()),
        &dir,
        Options::default().background(false),
    )
    .expect("reopen");
    assert!(db.poison_cause().is_none());
}

/// A file system whose data-file reads at one offset fail with EIO while
/// `fail` is set.
struct FailingReads {
    fs: FaultFs,
    at: Arc<AtomicU64>,
    failed: Arc<AtomicUsize>,
}

struct File {
    inner: Box<dyn VfsFile>,
    data: bool,
    at: Arc<AtomicU64>,
    failed: Arc<AtomicUsize>,
}

impl VfsFile for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> strata::Result<usize> {
        if self.data && offset == self.at.load(Ordering::SeqCst) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(Error::from(std::io::Error::from_raw_os_error(5)));
        }
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> strata::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn sync(&self) -> strata::Result<()> {
        self.inner.sync()
    }
    fn set_len(&self, len: u64) -> strata::Result<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> strata::Result<u64> {
        self.inner.len()
    }
}

impl Vfs for FailingReads {
    fn open(&self, path: &Path, create: bool) -> strata::Result<Box<dyn VfsFile>> {
        Ok(Box::new(File {
            inner: self.fs.open(path, create)?,
            data: path.ends_with(DATA_FILE),
            at: self.at.clone(),
            failed: self.failed.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> strata::Result<()> {
        self.fs.rename(from, to)
    }
    fn remove(&self, path: &Path) -> strata::Result<()> {
        self.fs.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> strata::Result<()> {
        self.fs.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> strata::Result<Box<dyn VfsLock>> {
        self.fs.lock(path)
    }
    fn create_dir_all(&self, dir: &Path) -> strata::Result<()> {
        self.fs.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> strata::Result<Vec<PathBuf>> {
        self.fs.list(dir)
    }
    fn exists(&self, path: &Path) -> strata::Result<bool> {
        self.fs.exists(path)
    }
}

/// Guards against a read error met by background vacuum going unheard
/// (the worker dropped it), and against its poisoning a database that
/// can go on: the page is fine once the device answers again.
#[test]
fn a_read_error_met_by_background_vacuum_is_kept_and_the_database_goes_on() {
    let fs = FaultFs::new();
    let dir = filled(&fs);
    let page = first_heap_page(&fs, &dir);
    let vfs = FailingReads {
        fs: fs.clone(),
        at: Arc::new(AtomicU64::new(u64::MAX)),
        failed: Arc::new(AtomicUsize::new(0)),
    };
    let (at, failed) = (vfs.at.clone(), vfs.failed.clone());
    let capture = Capture::default();
    let db = tracing::subscriber::with_default(capture.clone(), || {
        Db::open_vfs(Arc::new(vfs), &dir, vacuum_soon()).expect("open")
    });
    at.store((page * PAGE) as u64, Ordering::SeqCst);
    churn(&db);
    let kept = wait_for("the background vacuum's read error", || {
        db.background_error()
    });
    assert!(matches!(&kept, Error::Io { op: "read", .. }), "{kept:?}");
    assert!(kept.to_string().contains(DATA_FILE), "{kept}");
    assert!(failed.load(Ordering::SeqCst) > 0);
    assert_eq!(db.poison_cause(), None, "a read error does not poison");
    let warned = capture.events().into_iter().any(|e| {
        e.level == tracing::Level::WARN
            && e.fields.get("work").map(String::as_str) == Some("vacuum")
    });
    assert!(warned, "no warning event: {:?}", capture.events());

    // The device answers again: the database was never stopped, and the
    // rows on the page read back.
    at.store(u64::MAX, Ordering::SeqCst);
    let t = db.table("t").expect("t");
    let tx = db.begin().expect("not poisoned");
    assert_eq!(
        tx.get(&t, key(0)).expect("get").as_deref(),
        Some(&[7u8; 100][..])
    );
    drop(tx);
    db.close().expect("close");
}

/// Guards against the engine's spans going missing or losing their
/// figures: open with its recovery (records and bytes replayed), a
/// commit (its lsn and fsync wait), a checkpoint (redo point, pages
/// flushed) and a vacuum (its VacuumStats).
#[test]
fn a_subscriber_sees_open_recovery_commit_checkpoint_and_vacuum_spans() {
    let fs = FaultFs::new();
    let dir = PathBuf::from("/db");
    let opts = || Options::default().background(false);
    {
        let db = Db::open_vfs(Arc::new(fs.clone()), &dir, opts()).expect("open");
        let t = db.table("t").expect("t");
        for i in 0..3 {
            let mut tx = db.begin().expect("begin");
            tx.put(&t, key(i), b"v").expect("put");
            tx.commit().expect("commit");
        }
        // A process crash: the log holds the commits, no checkpoint does.
        let img = fs.process_crash_image();
        drop(db);
        let capture = Capture::default();
        tracing::subscriber::with_default(capture.clone(), || {
            let db = Db::open_vfs(Arc::new(img), &dir, opts()).expect("reopen");
            let t = db.table("t").expect("t");
            let mut tx = db.begin().expect("begin");
            tx.put(&t, key(0), b"w").expect("put");
            tx.delete(&t, key(1)).expect("delete");
            let info = tx.commit().expect("commit");
            let stats = db.vacuum().expect("vacuum");
            db.checkpoint().expect("checkpoint");

            let open = capture.spans("open");
            assert_eq!(open.len(), 1, "{open:?}");
            assert!(open[0].fields["dir"].contains("db"), "{open:?}");
            let recovery = capture.spans("recovery");
            assert_eq!(recovery.len(), 1, "{recovery:?}");
            assert!(field(&recovery[0], "records") >= 3, "{recovery:?}");
            assert!(field(&recovery[0], "bytes") > 0, "{recovery:?}");
            field(&recovery[0], "replay_us");

            let commits = capture.spans("commit");
            let commit = commits
                .iter()
                .find(|c| c.fields.get("lsn") == Some(&info.lsn.0.to_string()))
                .unwrap_or_else(|| panic!("no commit span with lsn {}: {commits:?}", info.lsn.0));
            assert_eq!(field(commit, "xid"), info.xid.0);
            field(commit, "fsync_wait_us");
            assert_eq!(commit.level, tracing::Level::DEBUG);

            let vacuums = capture.spans("vacuum");
            assert_eq!(vacuums.len(), 1, "{vacuums:?}");
            assert_eq!(field(&vacuums[0], "keys"), stats.keys);
            assert_eq!(
                field(&vacuums[0], "versions_removed"),
                stats.versions_removed
            );
            assert!(stats.versions_removed >= 2, "{stats:?}");
            assert_eq!(field(&vacuums[0], "pages_cut"), stats.pages_cut);

            let checkpoints = capture.spans("checkpoint");
            let last = checkpoints.last().expect("a checkpoint span");
            assert!(field(last, "redo") > 0, "{checkpoints:?}");
            assert!(field(last, "pages_flushed") > 0, "{checkpoints:?}");
            db.close().expect("close");
        });
    }
}
