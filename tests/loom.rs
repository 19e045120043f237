//! Loom models of the concurrent core. Built only with `--cfg loom`:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --test loom
//! ```
//! Each model runs real engine components (the log, the transaction
//! manager, the lock waits, the buffer pool) over the in-memory `FaultFs`,
//! and loom explores the interleavings of their locks and atomics.

#![cfg(loom)]

use std::path::Path;
use std::sync::Arc;

use loom::thread;
use strata::buffer::page::{self, PageType};
use strata::buffer::BufferPool;
use strata::ids::{Lsn, PageId, Xid};
use strata::io::{FaultFs, Vfs};
use strata::mvcc::clog::Clog;
use strata::mvcc::manager::TxnManager;
use strata::mvcc::{Status, StatusOf};
use strata::txn::locks::LockWaits;
use strata::wal::reader::LogReader;
use strata::wal::record::{Kind, Record};
use strata::wal::Wal;
use strata::Error;

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
        let mgr = Arc::new(TxnManager::new(Xid(1), Clog::new(Vec::new(), Xid(1))));
        let (token, _) = mgr.begin_new(false);
        let xid = mgr.assign(token, &log).expect("assign");
        let committer = {
            let mgr = mgr.clone();
            thread::spawn(move || mgr.finish(token, xid, Status::Committed))
        };
        let snap = mgr.snapshot();
        let finished = xid < snap.xmax && !snap.xip.contains(&xid);
        if finished {
            assert_eq!(
                mgr.clog().status(xid),
                Status::Committed,
                "snapshot saw half a commit"
            );
            assert!(snap.sees(xid, Xid::NONE, mgr.clog()));
        } else {
            assert!(
                !snap.sees(xid, Xid::NONE, mgr.clog()),
                "a running transaction became visible"
            );
        }
        committer.join().expect("committer");
        assert!(
            !snap.sees(xid, Xid::NONE, mgr.clog()) || finished,
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
/// `row` to 7 under its lock, lets go, then reports the write of key "k"
/// under the graph's lock.
fn ssi_reader_and_writer(
    row: &Arc<loom::sync::RwLock<u64>>,
) -> (
    strata::txn::ssi::ReadSet,
    Arc<strata::txn::ssi::KeyMarks>,
    Arc<loom::sync::Mutex<strata::txn::ssi::Ssi>>,
    thread::JoinHandle<()>,
) {
    let mut graph = strata::txn::ssi::Ssi::default();
    let reader = graph.begin(1);
    let _writer = graph.begin(2);
    graph.assign(2, Xid(7));
    let marks = graph.marks();
    let ssi = Arc::new(loom::sync::Mutex::new(graph));
    let writer = {
        let (ssi, row) = (ssi.clone(), row.clone());
        thread::spawn(move || {
            *row.write().expect("row") = 7;
            ssi.lock()
                .expect("ssi")
                .write(2, SSI_TABLE, b"k")
                .expect("write");
        })
    };
    (reader, marks, ssi, writer)
}

const SSI_TABLE: PageId = PageId(3);

/// SSI conflict marking: a reader marks a key (in its partition of the
/// mark table, without the graph's lock) and then reads it; a writer writes
/// the key and then, under the graph's lock, checks the marks. In every
/// interleaving the rw-antidependency reader → writer is recorded —
/// through the mark, or through the new version the reader had to skip.
/// (Reading before marking loses the edge in some interleaving.)
#[test]
fn ssi_marking_never_loses_an_edge() {
    loom::model(|| {
        // The key's newest version: 0 before the write, the writer's xid after.
        let heap = Arc::new(loom::sync::RwLock::new(0u64));
        let (mut reader, marks, ssi, writer) = ssi_reader_and_writer(&heap);
        assert!(reader.mark(&marks, SSI_TABLE, b"k").is_none());
        let newest = *heap.read().expect("heap");
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

/// SSI and a delete that finds no row: the delete looks for the key under
/// the store's exclusive latch and, finding nothing, marks the key before
/// letting the latch go (`write::absence_mark`); an insert of the key
/// writes under the same latch and checks the marks after letting it go.
/// In every interleaving either the delete meets the new row (and waits
/// for, or fails against, its writer) or the edge deleter → inserter is
/// recorded. (A mark taken after the latch is let go loses the edge in
/// some interleaving.)
#[test]
fn an_absent_key_delete_never_loses_its_edge() {
    loom::model(|| {
        // The store latch over the key's row: 0 none, 7 the insert's.
        let store = Arc::new(loom::sync::RwLock::new(0u64));
        let (mut deleter, marks, ssi, inserter) = ssi_reader_and_writer(&store);
        let found = {
            let latch = store.write().expect("latch");
            if *latch == 0 {
                assert!(deleter.mark(&marks, SSI_TABLE, b"k").is_none());
            }
            *latch
        };
        inserter.join().expect("inserter");
        if found == 0 {
            assert!(
                ssi.lock().expect("ssi").has_edge(1, 2),
                "the absent key's rw-antidependency was lost"
            );
        }
    });
}
