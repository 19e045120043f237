//! Loom models of the concurrent core. Built only with `--cfg loom`:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --test loom
//! ```
//! Each model runs real engine components (the log, the transaction
//! manager, the lock waits, the buffer pool, the SSI graph behind its
//! lock) over the in-memory `FaultFs`, and loom explores the interleavings
//! of their locks and atomics.

#![cfg(loom)]

use std::path::Path;
use std::sync::Arc;

use loom::thread;
use strata::fault::FaultFs;
use strata::internals::buffer::BufferPool;
use strata::internals::ids::{Lsn, PageId, Xid};
use strata::internals::mvcc::clog::Clog;
use strata::internals::mvcc::manager::TxnManager;
use strata::internals::mvcc::{Status, StatusOf};
use strata::internals::page::{self, PageType};
use strata::internals::redo::record::{Kind, Record};
use strata::internals::txn::locks::LockWaits;
use strata::internals::txn::ssi::SsiLock;
use strata::internals::wal::reader::LogReader;
use strata::internals::wal::Wal;
use strata::Vfs;
use strata::{Error, Options};

fn wal(fs: &FaultFs) -> Wal {
    Wal::resume(Arc::new(fs.clone()), Path::new("/wal"), Lsn(0)).expect("log")
}

/// Group commit: every committer returns only once its own record is
/// durable, whoever led the fsync, and both records are in the log.
#[test]
fn group_commit_acknowledges_only_durable_records() {
    loom::model(|| {
        let fs = FaultFs::new();
        let log = Arc::new(wal(&fs));
        let committers: Vec<_> = (1..=3u64)
            .map(|i| {
                let log = log.clone();
                thread::spawn(move || {
                    let end = log
                        .append(&Record::bare(Kind::XidHighWater, Xid(i), i))
                        .expect("append");
                    log.flush(end, true).expect("flush");
                    assert!(log.durable() >= end, "acknowledged before durable");
                })
            })
            .collect();
        for c in committers {
            c.join().expect("committer");
        }
        let img = fs.power_loss_image(1);
        let mut r = LogReader::open(&img, Path::new("/wal"), Lsn(0)).expect("reader");
        let mut xids = Vec::new();
        while let Some(e) = r.next_entry().expect("read") {
            if e.record.kind == Kind::XidHighWater {
                xids.push(e.record.xid.0);
            }
        }
        xids.sort_unstable();
        assert_eq!(
            xids,
            vec![1, 2, 3],
            "an acknowledged record did not survive power loss"
        );
    });
}

/// Commit publication versus snapshots: a snapshot that counts a
/// transaction as finished always finds it committed in the commit log.
#[test]
fn no_snapshot_sees_half_a_commit() {
    loom::model(|| {
        let fs = FaultFs::new();
        let log = Arc::new(wal(&fs));
        let manager = Arc::new(TxnManager::new(Xid(1), Clog::new(Vec::new(), Xid(1))));
        let (token, _) = manager.begin_new(false);
        let xid = manager.assign(token, &log).expect("assign");
        let committer = {
            let manager = manager.clone();
            thread::spawn(move || manager.finish(token, xid, Status::Committed))
        };
        let snap = manager.snapshot();
        let finished = xid < snap.xmax && !snap.xip.contains(&xid);
        if finished {
            assert_eq!(
                manager.clog().status(xid),
                Status::Committed,
                "snapshot saw half a commit"
            );
            assert!(snap.sees(xid, Xid::NONE, manager.clog()));
        } else {
            assert!(
                !snap.sees(xid, Xid::NONE, manager.clog()),
                "a running transaction became visible"
            );
        }
        committer.join().expect("committer");
        assert!(
            !snap.sees(xid, Xid::NONE, manager.clog()) || finished,
            "a snapshot changed its mind"
        );
    });
}

/// Row-lock waits: a waiter always wakes when its holder finishes (no lost
/// wake-up), and of two transactions waiting for each other exactly one
/// gets `Deadlock`.
#[test]
fn lock_waits_wake_and_detect_deadlock() {
    loom::model(|| {
        let clog = Arc::new(Clog::new(Vec::new(), Xid(1)));
        let waits = Arc::new(LockWaits::default());
        let spawn = |me: u64, holder: u64| {
            let (clog, waits) = (clog.clone(), waits.clone());
            thread::spawn(move || {
                let r = waits.wait_for(Xid(me), Xid(holder), clog.as_ref(), None);
                // Either way the transaction ends, releasing its rows.
                clog.set(
                    Xid(me),
                    if r.is_ok() {
                        Status::Committed
                    } else {
                        Status::Aborted
                    },
                );
                waits.finished();
                r
            })
        };
        let a = spawn(1, 2);
        let b = spawn(2, 1);
        let results = [a.join().expect("a"), b.join().expect("b")];
        let deadlocks = results
            .iter()
            .filter(|r| matches!(r, Err(Error::Deadlock)))
            .count();
        assert_eq!(deadlocks, 1, "{results:?}");
    });
}

/// A waiter wakes when its holder finishes, whenever the finish happens
/// relative to the waiter's own check (no lost wake-up).
#[test]
fn lock_waiter_always_wakes() {
    loom::model(|| {
        let clog = Arc::new(Clog::new(Vec::new(), Xid(1)));
        let waits = Arc::new(LockWaits::default());
        let holder = {
            let (clog, waits) = (clog.clone(), waits.clone());
            thread::spawn(move || {
                clog.set(Xid(1), Status::Committed);
                waits.finished();
            })
        };
        waits
            .wait_for(Xid(2), Xid(1), clog.as_ref(), None)
            .expect("wakes");
        holder.join().expect("holder");
    });
}

/// A two-frame pool (the smallest under loom) over a file of pages 1-3,
/// page p holding byte p at offset 100.
fn three_page_pool() -> Arc<BufferPool> {
    let fs = FaultFs::new();
    let file = fs.open(Path::new("/data"), true).expect("file");
    for p in 1..=3u32 {
        let mut buf = page::zeroed();
        page::init(&mut buf, PageId(p), PageType::Heap);
        buf[100] = p as u8;
        page::seal(&mut buf);
        file.write_at(&buf[..], p as u64 * 8192).expect("write");
    }
    Arc::new(
        BufferPool::new(
            fs.open(Path::new("/data"), false).expect("open"),
            "/data".into(),
            0,
        )
        .expect("pool"),
    )
}

/// Buffer pool: a pinned page keeps its contents while other threads'
/// fetches force evictions through a two-frame pool.
#[test]
fn pinned_pages_are_never_evicted() {
    loom::model(|| {
        let pool = three_page_pool();
        let reader = {
            let pool = pool.clone();
            thread::spawn(move || {
                let pin = pool.fetch(PageId(1)).expect("fetch 1");
                let first = pin.read()[100];
                thread::yield_now();
                let again = pin.read()[100];
                assert_eq!((first, again), (1, 1), "pinned page changed under its pin");
            })
        };
        for p in [2u32, 3] {
            // With page 1 pinned, these take turns in the other frame.
            let pin = pool.fetch(PageId(p)).expect("a frame is free");
            assert_eq!(pin.read()[100], p as u8);
        }
        reader.join().expect("reader");
    });
}

/// Buffer pool: a hit takes no lock, so it races evictions. Two threads
/// fetch different pages through a two-frame pool, each evicting the
/// other's page when it is unpinned; whatever interleaving, every pin
/// holds the page it asked for.
#[test]
fn lock_free_hits_never_pin_a_frame_changing_pages() {
    loom::model(|| {
        let pool = three_page_pool();
        let other = {
            let pool = pool.clone();
            thread::spawn(move || {
                for p in [1u32, 1] {
                    let pin = pool.fetch(PageId(p)).expect("fetch");
                    assert_eq!(pin.read()[100], p as u8, "pinned the wrong page");
                }
            })
        };
        for p in [2u32, 3] {
            let pin = pool.fetch(PageId(p)).expect("fetch");
            assert_eq!(pin.read()[100], p as u8, "pinned the wrong page");
        }
        other.join().expect("other");
    });
}

/// Buffer pool: a read that hits holds the frame's read latch and no pin
/// (`BufferPool::read_near`), so evictions may claim its frame meanwhile.
/// One thread reads page 1 that way, twice, while the other fetches pages
/// 2 and 3 through the two frames, evicting page 1 when it can; whatever
/// interleaving, each read sees page 1's bytes, before and after a yield
/// (reloading the page if it had to).
#[test]
fn unpinned_hits_never_see_another_page() {
    loom::model(|| {
        let pool = three_page_pool();
        drop(pool.fetch(PageId(1)).expect("load 1"));
        let reader = {
            let pool = pool.clone();
            thread::spawn(move || {
                for _ in 0..2 {
                    let seen = pool
                        .read_near(PageId(1), 100, |page| {
                            let first = page[100];
                            thread::yield_now();
                            (first, page[100])
                        })
                        .expect("read");
                    assert_eq!(seen, (1, 1), "read another page's bytes");
                }
            })
        };
        for p in [2u32, 3] {
            let pin = pool.fetch(PageId(p)).expect("fetch");
            assert_eq!(pin.read()[100], p as u8, "pinned the wrong page");
        }
        reader.join().expect("reader");
    });
}

/// An SSI graph with a reader (1) and a writer (2, xid 7); the reader's
/// read set and the mark table; and a thread that, as the writer, sets
/// `row` to 7 under its lock and lets go — through the engine's write
/// attempt, `mark_absence_under_latch`, as a put runs it (no mark) — then
/// reports the write of key "k" under the graph's lock.
fn ssi_reader_and_writer(
    row: &Arc<loom::sync::RwLock<u64>>,
) -> (
    strata::internals::txn::ssi::ReadSet,
    Arc<strata::internals::txn::ssi::KeyMarks>,
    Arc<loom::sync::Mutex<strata::internals::txn::ssi::Ssi>>,
    thread::JoinHandle<()>,
) {
    let mut graph = strata::internals::txn::ssi::Ssi::default();
    let reader = graph.begin(1);
    let _writer = graph.begin(2);
    graph.assign(2, Xid(7));
    let marks = graph.marks();
    let ssi = Arc::new(loom::sync::Mutex::new(graph));
    let writer = {
        let (ssi, row) = (ssi.clone(), row.clone());
        thread::spawn(move || {
            let (coarsening, written) = strata::internals::txn::ssi::mark_absence_under_latch(
                row.write().expect("row"),
                |latch| {
                    **latch = 7;
                    Ok::<_, Error>(())
                },
                |_| None,
                |latch| {
                    drop(latch);
                    Ok(())
                },
            );
            assert!(coarsening.is_none());
            written.expect("insert");
            ssi.lock()
                .expect("ssi")
                .write(2, SSI_TABLE, b"k")
                .expect("write");
        })
    };
    (reader, marks, ssi, writer)
}

const SSI_TABLE: PageId = PageId(3);

/// SSI conflict marking: a reader reads a key through the engine's
/// `mark_then_read` (what `Transaction::get` runs: the mark, in its
/// partition of the mark table without the graph's lock, then the read);
/// a writer writes the key and then, under the graph's lock, checks the
/// marks. In every interleaving the rw-antidependency reader → writer is
/// recorded — through the mark, or through the new version the reader had
/// to skip. (A `mark_then_read` that reads before marking loses the edge
/// in some interleaving.)
#[test]
fn ssi_marking_never_loses_an_edge() {
    loom::model(|| {
        // The key's newest version: 0 before the write, the writer's xid after.
        let heap = Arc::new(loom::sync::RwLock::new(0u64));
        let (mut reader, marks, ssi, writer) = ssi_reader_and_writer(&heap);
        let (coarsening, newest) = strata::internals::txn::ssi::mark_then_read(
            Some(&mut reader),
            &marks,
            SSI_TABLE,
            b"k",
            || *heap.read().expect("heap"),
        );
        assert!(coarsening.is_none());
        if newest == 7 {
            // The reader's snapshot predates the writer: it skips the version.
            ssi.lock()
                .expect("ssi")
                .read_unseen(1, &[Xid(7)])
                .expect("unseen");
        }
        writer.join().expect("writer");
        assert!(
            ssi.lock().expect("ssi").has_edge(1, 2),
            "rw-antidependency lost"
        );
    });
}

/// SSI and a delete that finds no row, through the engine's write
/// attempt (`ssi::mark_absence_under_latch`, what `Transaction::delete`
/// runs): the delete looks for the key under the store's exclusive latch
/// and, finding nothing, marks the key, then commits and lets the latch
/// go; an insert of the key writes under the same latch and checks the
/// marks after letting it go. In every interleaving either the delete
/// meets the new row (and waits for, or fails against, its writer) or the
/// edge deleter → inserter is recorded. (An attempt that commits and lets
/// the latch go before it marks loses the edge in some interleaving.)
#[test]
fn an_absent_key_delete_never_loses_its_edge() {
    loom::model(|| {
        // The store latch over the key's row: 0 none, 7 the insert's.
        let store = Arc::new(loom::sync::RwLock::new(0u64));
        let (mut deleter, marks, ssi, inserter) = ssi_reader_and_writer(&store);
        let (coarsening, found) = strata::internals::txn::ssi::mark_absence_under_latch(
            store.write().expect("latch"),
            |latch| Ok::<_, Error>(**latch),
            |&found| match found {
                0 => deleter.mark(&marks, SSI_TABLE, b"k"),
                _ => None,
            },
            |latch| {
                drop(latch);
                Ok(())
            },
        );
        assert!(coarsening.is_none());
        let found = found.expect("delete");
        inserter.join().expect("inserter");
        if found == 0 {
            assert!(
                ssi.lock().expect("ssi").has_edge(1, 2),
                "the absent key's rw-antidependency was lost"
            );
        }
    });
}

/// The anomaly's T2 and T3 for the SSI order models: T2 (token 1) has read
/// y, T3 (token 2, writing as the returned xid) has written y, so T2 -rw->
/// T3; both run serializable, begun through the engine's `SsiLock`.
struct Fekete {
    manager: Arc<TxnManager>,
    ssi: Arc<SsiLock>,
    marks: Arc<strata::internals::txn::ssi::KeyMarks>,
    log: Arc<Wal>,
    t2: (u64, strata::internals::txn::ssi::ReadSet),
    t3: (u64, strata::internals::txn::ssi::ReadSet, Xid),
}

fn fekete(fs: &FaultFs) -> Fekete {
    let manager = Arc::new(TxnManager::new(Xid(1), Clog::new(Vec::new(), Xid(1))));
    let graph = strata::internals::txn::ssi::Ssi::default();
    let marks = graph.marks();
    let ssi = Arc::new(SsiLock::new(graph));
    let log = Arc::new(wal(fs));
    let opts = Options::default();
    let (t2, t3) = (manager.next_token(), manager.next_token());
    let (mut r2, _) = ssi.begin(&manager, t2, false, &opts);
    let (r3, _) = ssi.begin(&manager, t3, false, &opts);
    assert!(r2.mark(&marks, SSI_TABLE, b"y").is_none());
    let x3 = manager.assign(t3, &log).expect("xid");
    ssi.lock().assign(t3, x3);
    ssi.lock().write(t3, SSI_TABLE, b"y").expect("T2 -rw-> T3");
    Fekete {
        manager,
        ssi,
        marks,
        log,
        t2: (t2, r2),
        t3: (t3, r3, x3),
    }
}

/// SSI's order against MVCC publication: T3 commits (SSI prepare, MVCC
/// publication, SSI commit) while read-only T1 begins. In every
/// interleaving where T1's snapshot sees T3, SSI counts T3 as committed
/// before it, so T1 reading x and T2 then writing x (T1 -rw-> T2 -rw-> T3)
/// cannot all commit. (Taking the SSI registration outside the snapshot's
/// critical section, or judging T3 by the commit SSI counts after
/// publication, lets all three commit in some interleaving.)
#[test]
fn ssi_counts_every_commit_a_snapshot_sees() {
    loom::model(|| {
        let fs = FaultFs::new();
        let Fekete {
            manager,
            ssi,
            marks,
            log,
            t2: (t2, _r2),
            t3: (t3, r3, x3),
        } = fekete(&fs);
        let committer = {
            let (manager, ssi) = (manager.clone(), ssi.clone());
            thread::spawn(move || {
                ssi.lock().prepare(t3).expect("T3 commits first");
                ssi.finish(
                    &manager,
                    t3,
                    x3,
                    Status::Committed,
                    Some(r3),
                    &Options::default(),
                );
            })
        };
        let t1 = manager.next_token();
        let (mut r1, snap) = ssi.begin(&manager, t1, true, &Options::default());
        committer.join().expect("committer");
        let sees_t3 = snap.sees(x3, Xid::NONE, manager.clog());
        assert!(r1.mark(&marks, SSI_TABLE, b"x").is_none());
        let x2 = manager.assign(t2, &log).expect("xid");
        ssi.lock().assign(t2, x2);
        let all_commit = ssi.lock().write(t2, SSI_TABLE, b"x").is_ok()
            && ssi.lock().prepare(t2).is_ok()
            && ssi.lock().prepare(t1).is_ok();
        assert!(
            !(sees_t3 && all_commit),
            "read-only anomaly: T1 saw T3, and T1, T2, T3 all committed"
        );
    });
}

/// A read-only transaction's watch set against a pivot's commit: T3 has
/// committed; T2 (which read y before T3 wrote it, and wrote x) commits
/// while read-only T1 begins. In every interleaving where T1's snapshot
/// misses T2, T1 is not declared safe, and reading x (skipping T2's
/// version) fails it. (Building the watch set after the snapshot, in a
/// critical section of its own, lets T1 read unchecked in some
/// interleaving.)
#[test]
fn ssi_watches_every_writer_a_snapshot_misses() {
    loom::model(|| {
        let fs = FaultFs::new();
        let Fekete {
            manager,
            ssi,
            marks: _,
            log,
            t2: (t2, r2),
            t3: (t3, r3, x3),
        } = fekete(&fs);
        let opts = Options::default();
        ssi.lock().prepare(t3).expect("T3 commits first");
        ssi.finish(&manager, t3, x3, Status::Committed, Some(r3), &opts);
        let x2 = manager.assign(t2, &log).expect("xid");
        ssi.lock().assign(t2, x2);
        ssi.lock()
            .write(t2, SSI_TABLE, b"x")
            .expect("nobody read x");
        let committer = {
            let (manager, ssi) = (manager.clone(), ssi.clone());
            thread::spawn(move || {
                ssi.lock().prepare(t2).expect("T2 commits");
                ssi.finish(
                    &manager,
                    t2,
                    x2,
                    Status::Committed,
                    Some(r2),
                    &Options::default(),
                );
            })
        };
        let t1 = manager.next_token();
        let (_r1, snap) = ssi.begin(&manager, t1, true, &opts);
        committer.join().expect("committer");
        assert!(
            snap.sees(x3, Xid::NONE, manager.clog()),
            "T3 committed before"
        );
        if !snap.sees(x2, Xid::NONE, manager.clog()) {
            assert!(
                ssi.lock().read_unseen(t1, &[x2]).is_err(),
                "T1 read x past T2's version unchecked: T1 -rw-> T2 -rw-> T3"
            );
        }
    });
}
