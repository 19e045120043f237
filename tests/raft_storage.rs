//! The replicated mode's storage (feature `raft`): openraft's own storage
//! suite against `LogStore` and `StateMachine`, then strata's: the log
//! reopened after each operation keeps exactly what was acknowledged, a
//! torn tail is cut and damage reported, apply decides the same on every
//! replica, and a restart replays from the applied index.
#![cfg(feature = "raft")]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{
    RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine,
};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership, StorageError, Vote};
use strata::clock::Timestamp;
use strata::replication::{
    Command, Entry, LogStore, Outcome, ReadRange, StateMachine, TxnBody, TypeConfig, Write,
};
use strata::{Error, Options};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|e| {
            StorageError::from_io_error(
                openraft::ErrorSubject::Store,
                openraft::ErrorVerb::Write,
                e,
            )
        })?;
        let (log, sm) = open(dir.path());
        Ok((dir, log, sm))
    }
}

fn open(dir: &Path) -> (LogStore, StateMachine) {
    let sm = StateMachine::open(dir.join("sm"), Options::default()).expect("open state machine");
    let log = LogStore::open(dir.join("raft"), sm.purge_bound()).expect("open log");
    (log, sm)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: id(term, index),
        payload: EntryPayload::Blank,
    }
}

fn normal(term: u64, index: u64, c: Command) -> Entry {
    Entry {
        log_id: id(term, index),
        payload: EntryPayload::Normal(c),
    }
}

/// Appends and waits for the flusher's acknowledgement.
fn append(rt: &tokio::runtime::Runtime, log: &mut LogStore, entries: Vec<Entry>) {
    rt.block_on(log.blocking_append(entries)).expect("append");
}

fn indexes(log: &LogStore) -> Vec<(u64, u64)> {
    log.entries(0, u64::MAX)
        .expect("read")
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect()
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft's storage suite");
}

fn blanks(term: u64, r: std::ops::Range<u64>) -> Vec<Entry> {
    r.map(|i| blank(term, i)).collect()
}

fn span(term: u64, r: std::ops::RangeInclusive<u64>) -> Vec<(u64, u64)> {
    r.map(|i| (term, i)).collect()
}

fn reopen(dir: &Path, bound: &strata::replication::PurgeBound) -> LogStore {
    let log = LogStore::open(dir, bound.clone()).expect("reopen log");
    log.set_segment_size(200);
    log
}

#[test]
fn the_log_reopened_keeps_exactly_what_was_acknowledged() {
    let rt = rt();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    let bound = strata::replication::PurgeBound::new();
    let mut log = reopen(&dir, &bound);
    append(&rt, &mut log, blanks(1, 0..10));
    assert!(
        log.segment_paths().len() >= 2,
        "small segments: several: {:?}",
        log.segment_paths()
    );
    let mut log = reopen(&dir, &bound);
    assert_eq!(indexes(&log), span(1, 0..=9));

    let vote = Vote::new_committed(3, 2);
    rt.block_on(log.save_vote(&vote)).expect("save vote");
    let mut log = reopen(&dir, &bound);
    assert_eq!(
        rt.block_on(log.read_vote()).expect("vote"),
        Some(vote),
        "vote after reopen"
    );

    rt.block_on(log.truncate(id(1, 6))).expect("truncate");
    let mut log = reopen(&dir, &bound);
    assert_eq!(indexes(&log), span(1, 0..=5), "after truncate at 6");
    append(&rt, &mut log, blanks(2, 6..9));
    let mut log = reopen(&dir, &bound);
    let mut want = span(1, 0..=5);
    want.extend(span(2, 6..=8));
    assert_eq!(
        indexes(&log),
        want,
        "after appends over the truncated suffix"
    );

    // Purge within the bound: gone from the disk.
    bound.raise(5); // Raft index 4 durable in the database
    rt.block_on(log.purge(id(1, 3))).expect("purge");
    let mut log = reopen(&dir, &bound);
    let state = rt.block_on(log.get_log_state()).expect("state");
    assert_eq!(state.last_purged_log_id, Some(id(1, 3)));
    assert_eq!(indexes(&log)[0], (1, 4));

    // Purge past the bound: logical at once, on disk only up to the bound.
    rt.block_on(log.purge(id(2, 7))).expect("purge");
    assert_eq!(indexes(&log), vec![(2, 8)], "purged entries are not read");
    let state = rt.block_on(log.get_log_state()).expect("state");
    assert_eq!(state.last_purged_log_id, Some(id(2, 7)));
    let mut log = reopen(&dir, &bound);
    let state = rt.block_on(log.get_log_state()).expect("state");
    assert_eq!(
        state.last_purged_log_id,
        Some(id(1, 4)),
        "the disk keeps every entry past the durable applied index"
    );
    let mut want = vec![(1, 5)];
    want.extend(span(2, 6..=8));
    assert_eq!(indexes(&log), want);
    assert_eq!(
        rt.block_on(log.read_vote()).expect("vote"),
        Some(vote),
        "purge keeps the vote"
    );

    // Asked again (openraft purges again after a restart), held back
    // until the bound rises: the next append carries it out.
    rt.block_on(log.purge(id(2, 7))).expect("purge");
    assert_eq!(log.purged_on_disk(), Some(id(1, 4)));
    bound.raise(9);
    append(&rt, &mut log, blanks(2, 9..10));
    let log = reopen(&dir, &bound);
    assert_eq!(log.purged_on_disk(), Some(id(2, 7)));
    assert_eq!(indexes(&log), span(2, 8..=9));
}

/// Appends `n` entries to a fresh log in `dir` and returns the segment
/// files with the offsets of their frames.
fn written(dir: &Path, n: u64) -> Vec<std::path::PathBuf> {
    let rt = rt();
    let mut log = reopen(dir, &Default::default());
    append(&rt, &mut log, blanks(1, 0..n));
    log.segment_paths()
}

/// Byte offsets of the frames in a segment file (after its 24-byte header).
fn frame_offsets(b: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut off = 24;
    while off + 8 <= b.len() {
        let len = u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]) as usize;
        if len == 0 {
            break;
        }
        out.push(off);
        off += 8 + len;
    }
    out
}

#[test]
fn a_torn_tail_is_cut() {
    let rt = rt();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    let segs = written(&dir, 5);
    let last = segs.last().expect("a segment");
    let b = std::fs::read(last).expect("read");
    let offs = frame_offsets(&b);
    let whole = b.len();
    // The last frame cut short, as a crash in its write leaves it.
    let cut = offs[offs.len() - 1] + 11;
    std::fs::write(last, &b[..cut]).expect("tear");
    let mut log = reopen(&dir, &Default::default());
    assert_eq!(indexes(&log), span(1, 0..=3), "the torn frame is cut");
    assert_eq!(
        std::fs::metadata(last).expect("stat").len() as usize,
        offs[offs.len() - 1]
    );
    append(&rt, &mut log, blanks(2, 4..6));
    let log = reopen(&dir, &Default::default());
    let mut want = span(1, 0..=3);
    want.extend(span(2, 4..=5));
    assert_eq!(
        indexes(&log),
        want,
        "appends after the cut survive a reopen"
    );

    // A last frame whole in length but failing its checksum: also torn.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    let segs = written(&dir, 5);
    let last = segs.last().expect("a segment");
    let mut b = std::fs::read(last).expect("read");
    b[whole - 1] ^= 0xff;
    std::fs::write(last, &b).expect("damage");
    let log = reopen(&dir, &Default::default());
    assert_eq!(indexes(&log), span(1, 0..=3));
}

#[test]
fn damage_before_a_whole_frame_is_corruption() {
    let rt = rt();
    // In the last segment, with a whole frame after the bad one.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    let segs = written(&dir, 5);
    let last = segs.last().expect("a segment");
    let mut b = std::fs::read(last).expect("read");
    let offs = frame_offsets(&b);
    assert!(offs.len() >= 2, "two frames in the last segment: {offs:?}");
    b[offs[0] + 9] ^= 0x40;
    std::fs::write(last, &b).expect("damage");
    match LogStore::open(&dir, Default::default()) {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!(&file, last);
            assert_eq!(offset, offs[0] as u64);
        }
        other => panic!("damage before a whole frame: {other:?}"),
    }

    // In an earlier segment, even in its last frame.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    let segs = written(&dir, 8);
    assert!(segs.len() >= 2);
    let first = &segs[0];
    let mut b = std::fs::read(first).expect("read");
    let offs = frame_offsets(&b);
    let at = *offs.last().expect("a frame");
    let n = b.len();
    b[n - 1] ^= 0x01;
    std::fs::write(first, &b).expect("damage");
    match LogStore::open(&dir, Default::default()) {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!(&file, first);
            assert_eq!(offset, at as u64);
        }
        other => panic!("damage in an earlier segment: {other:?}"),
    }

    // Damage found by a read after opening: openraft's storage error,
    // naming the file and the offset.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    let mut log = reopen(&dir, &Default::default());
    append(&rt, &mut log, blanks(1, 0..3));
    let seg = log.segment_paths()[0].clone();
    let mut b = std::fs::read(&seg).expect("read");
    let offs = frame_offsets(&b);
    b[offs[0] + 10] ^= 0x40;
    std::fs::write(&seg, &b).expect("damage");
    let err = rt
        .block_on(log.try_get_log_entries(0..3))
        .expect_err("damaged read");
    let msg = err.to_string();
    assert!(
        msg.contains(&seg.display().to_string()) && msg.contains(&format!("byte {}", offs[0])),
        "storage error names file and offset: {msg}"
    );
}

fn now_ts() -> Timestamp {
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    Timestamp::from_nanos(ns as u64)
}

fn put(table: &str, key: &str, value: &str) -> Write {
    Write {
        table: table.into(),
        key: key.as_bytes().to_vec(),
        value: Some(value.as_bytes().to_vec()),
    }
}

fn txn(
    snapshot_ts: Timestamp,
    reads: Vec<ReadRange>,
    writes: Vec<Write>,
    commit_ts: Timestamp,
) -> Command {
    Command::Transaction {
        body: TxnBody {
            snapshot_ts,
            reads,
            writes,
        },
        commit_ts,
    }
}

fn membership(term: u64, index: u64) -> Entry {
    Entry {
        log_id: id(term, index),
        payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2, 3])], ())),
    }
}

/// Every row of every table of the state machine's database.
fn contents(sm: &StateMachine) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let db = sm.db();
    let tx = db.begin().expect("begin");
    let mut out = Vec::new();
    for name in db.table_names().expect("tables") {
        let t = db.table(&name).expect("table");
        for row in tx.scan(&t, ..).expect("scan") {
            let (k, v) = row.expect("row");
            out.push((name.clone(), k, v));
        }
    }
    out
}

/// Outcomes with the replica's own prepare timestamp taken out (the core
/// prepares at its own clock: the module essay's gap).
fn decided(o: &[Outcome]) -> Vec<Outcome> {
    o.iter()
        .map(|o| match o {
            Outcome::Prepared { .. } => Outcome::Prepared {
                ts: Timestamp::ZERO,
            },
            o => o.clone(),
        })
        .collect()
}

/// The log both replicas apply, in three parts: a prepare, then its
/// decision at a timestamp above both prepares.
fn history(t0: Timestamp, step: u64) -> Vec<Entry> {
    let ts = |k: u64| Timestamp::from_nanos(t0.as_nanos() + k * step);
    vec![
        blank(1, 0),
        membership(1, 1),
        normal(
            1,
            2,
            txn(
                ts(0),
                vec![],
                vec![put("a", "x", "1"), put("b", "y", "1")],
                ts(1),
            ),
        ),
        // Read x at a snapshot before the commit above: refused.
        normal(
            1,
            3,
            txn(
                ts(0),
                vec![ReadRange::point("a", b"x")],
                vec![put("a", "z", "2")],
                ts(2),
            ),
        ),
        // Wrote y, changed after its snapshot: refused.
        normal(1, 4, txn(ts(0), vec![], vec![put("b", "y", "2")], ts(3))),
        // Snapshot after the commit: commits.
        normal(
            1,
            5,
            txn(
                ts(1),
                vec![ReadRange::point("a", b"x")],
                vec![put("a", "x", "3")],
                ts(4),
            ),
        ),
        // A timestamp not above those given out: refused.
        normal(1, 6, txn(ts(4), vec![], vec![put("a", "w", "4")], ts(4))),
        // The system table is not the commands'.
        normal(
            2,
            7,
            txn(ts(4), vec![], vec![put("_raft", "applied", "x")], ts(5)),
        ),
        normal(
            2,
            8,
            Command::RollbackPrepared {
                gid: "nobody".into(),
            },
        ),
        normal(
            2,
            9,
            Command::Prepare {
                gid: "g1".into(),
                body: TxnBody {
                    snapshot_ts: ts(4),
                    reads: vec![],
                    writes: vec![put("a", "p", "5")],
                },
            },
        ),
        // The prepared transaction holds p: refused, not waited for.
        normal(2, 10, txn(ts(4), vec![], vec![put("a", "p", "6")], ts(6))),
        normal(
            2,
            11,
            Command::Prepare {
                gid: "g2".into(),
                body: TxnBody {
                    snapshot_ts: ts(4),
                    reads: vec![],
                    writes: vec![put("b", "q", "7")],
                },
            },
        ),
        normal(2, 12, Command::RollbackPrepared { gid: "g2".into() }),
    ]
}

#[test]
fn apply_decides_the_same_on_every_replica() {
    let rt = rt();
    let (ta, tb) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (_la, mut a) = open(ta.path());
    let (_lb, mut b) = open(tb.path());
    let t0 = Timestamp::from_nanos(now_ts().as_nanos() - 10_000_000_000);
    let log = history(t0, 1_000);
    let oa = rt.block_on(a.apply(log.clone())).expect("apply a");
    let ob = rt.block_on(b.apply(log.clone())).expect("apply b");
    assert_eq!(decided(&oa), decided(&ob), "same outcomes");
    let kinds: Vec<&str> = oa
        .iter()
        .map(|o| match o {
            Outcome::Applied => "applied",
            Outcome::Committed { .. } => "committed",
            Outcome::Prepared { .. } => "prepared",
            Outcome::RolledBack => "rolled back",
            Outcome::Aborted(Error::SerializationFailure { .. }) => "serialization",
            Outcome::Aborted(Error::TimestampRefused { .. }) => "timestamp",
            Outcome::Aborted(Error::Unsupported(_)) => "unsupported",
            Outcome::Aborted(Error::UnknownTransaction) => "unknown gid",
            Outcome::Aborted(Error::LockNotAvailable { .. }) => "locked",
            Outcome::Aborted(e) => panic!("unexpected refusal {e:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "applied",
            "applied",
            "committed",
            "serialization",
            "serialization",
            "committed",
            "timestamp",
            "unsupported",
            "unknown gid",
            "prepared",
            "serialization",
            "prepared",
            "rolled back"
        ]
    );
    // The decision on g1, at a timestamp above both replicas' prepares.
    let commit = vec![normal(
        2,
        13,
        Command::CommitPrepared {
            gid: "g1".into(),
            ts: now_ts(),
        },
    )];
    let oa = rt.block_on(a.apply(commit.clone())).expect("apply a");
    let ob = rt.block_on(b.apply(commit)).expect("apply b");
    assert_eq!(oa, ob);
    assert!(matches!(oa[0], Outcome::Committed { .. }), "{oa:?}");
    assert_eq!(contents(&a), contents(&b), "same data");
    let state = rt.block_on(a.applied_state()).expect("state");
    assert_eq!(state, rt.block_on(b.applied_state()).expect("state"));
    assert_eq!(state.0, Some(id(2, 13)));
    assert_eq!(state.1.log_id(), &Some(id(1, 1)));
    assert_eq!(a.db().applied_index().expect("index"), 14);
    let rows: Vec<_> = contents(&a)
        .into_iter()
        .filter(|r| r.0 != "_raft")
        .collect();
    let row =
        |t: &str, k: &str, v: &str| (t.to_string(), k.as_bytes().to_vec(), v.as_bytes().to_vec());
    assert_eq!(
        rows,
        vec![row("a", "p", "5"), row("a", "x", "3"), row("b", "y", "1")]
    );
}

#[test]
fn a_restart_replays_from_the_applied_index_and_applies_nothing_twice() {
    let rt = rt();
    let tmp = tempfile::tempdir().expect("tempdir");
    let t0 = Timestamp::from_nanos(now_ts().as_nanos() - 10_000_000_000);
    let log = history(t0, 1_000);
    let before = {
        let (_l, mut sm) = open(tmp.path());
        rt.block_on(sm.apply(log[..6].to_vec())).expect("apply");
        assert_eq!(sm.db().applied_index().expect("index"), 6);
        contents(&sm)
    };
    let (_l, mut sm) = open(tmp.path());
    let (applied, m) = rt.block_on(sm.applied_state()).expect("state");
    assert_eq!(applied, Some(id(1, 5)), "applied state from the database");
    assert_eq!(m.log_id(), &Some(id(1, 1)));
    assert_eq!(contents(&sm), before);
    // Handed the whole log again: what was applied is skipped.
    let out = rt.block_on(sm.apply(log.clone())).expect("apply");
    assert!(out[..6].iter().all(|o| *o == Outcome::Applied), "{out:?}");
    let (_l2, mut fresh) = open(&tmp.path().join("fresh"));
    let all = rt.block_on(fresh.apply(log)).expect("apply");
    assert_eq!(
        decided(&out[6..]),
        decided(&all[6..]),
        "replayed entries decide as the first time"
    );
    let strip = |rows: Vec<(String, Vec<u8>, Vec<u8>)>| -> Vec<_> {
        rows.into_iter().filter(|r| r.0 != "_raft").collect()
    };
    assert_eq!(strip(contents(&sm)), strip(contents(&fresh)));
    assert_eq!(sm.db().applied_index().expect("index"), 13);
}

#[test]
fn a_snapshot_installs_into_a_new_directory_and_survives_a_reopen() {
    let rt = rt();
    let (ta, tb) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (_la, mut a) = open(ta.path());
    let t0 = Timestamp::from_nanos(now_ts().as_nanos() - 10_000_000_000);
    rt.block_on(a.apply(history(t0, 1_000)[..6].to_vec()))
        .expect("apply");
    let snap = rt.block_on(a.get_snapshot_builder()).clone();
    let mut builder = snap;
    let s = rt.block_on(builder.build_snapshot()).expect("build");
    assert_eq!(s.meta.last_log_id, Some(id(1, 5)));
    {
        let (_lb, mut b) = open(tb.path());
        rt.block_on(b.install_snapshot(&s.meta, s.snapshot))
            .expect("install");
        assert_eq!(contents(&b), contents(&a));
    }
    assert_eq!(
        std::fs::read_to_string(tb.path().join("sm/CURRENT")).expect("CURRENT"),
        "db.1\n"
    );
    let (_lb, mut b) = open(tb.path());
    assert!(
        !tb.path().join("sm/db.0").exists(),
        "the old database is gone"
    );
    assert_eq!(
        rt.block_on(b.applied_state()).expect("state"),
        rt.block_on(a.applied_state()).expect("state")
    );
    assert_eq!(contents(&b), contents(&a));
}

/// Reopens every power-loss image of `fs` and checks it holds `want` and
/// `vote`.
fn after_power_loss(
    fs: &strata::fault::FaultFs,
    dir: &Path,
    want: &[(u64, u64)],
    vote: Option<Vote<u64>>,
) {
    let rt = rt();
    let images = (0..16)
        .map(|seed| fs.power_loss_image(seed))
        .chain([fs.synced_image()]);
    for (i, img) in images.enumerate() {
        let mut back =
            LogStore::open_vfs(std::sync::Arc::new(img), dir, Default::default()).expect("reopen");
        assert_eq!(indexes(&back), want, "image {i}: acknowledged entries");
        assert_eq!(
            rt.block_on(back.read_vote()).expect("vote"),
            vote,
            "image {i}: vote"
        );
    }
}

#[test]
fn a_power_loss_keeps_every_acknowledged_append_vote_and_truncation() {
    use std::sync::Arc;
    use strata::fault::FaultFs;
    let rt = rt();
    let dir = Path::new("/node/raft");
    let fs = Arc::new(FaultFs::new());
    let mut log = LogStore::open_vfs(fs.clone(), dir, Default::default()).expect("open");
    log.set_segment_size(200);
    append(&rt, &mut log, blanks(1, 0..10));
    after_power_loss(&fs, dir, &span(1, 0..=9), None);
    let vote = Vote::new_committed(2, 1);
    rt.block_on(log.save_vote(&vote)).expect("vote");
    after_power_loss(&fs, dir, &span(1, 0..=9), Some(vote));
    rt.block_on(log.truncate(id(1, 6))).expect("truncate");
    after_power_loss(&fs, dir, &span(1, 0..=5), Some(vote));
    append(&rt, &mut log, blanks(2, 6..9));
    let mut want = span(1, 0..=5);
    want.extend(span(2, 6..=8));
    after_power_loss(&fs, dir, &want, Some(vote));
}

/// The segment files of the log in `dir`, in order.
fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segs.sort();
    segs
}

#[test]
fn a_damaged_segment_header_is_corruption_not_a_torn_create() {
    let rt = rt();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    {
        let mut log = LogStore::open(&dir, Default::default()).expect("open");
        append(&rt, &mut log, blanks(1, 0..5));
    }
    let segs = segment_files(&dir);
    assert_eq!(segs.len(), 1);
    let mut b = std::fs::read(&segs[0]).expect("read");
    // One flipped bit in the magic: the header was synced before any
    // frame, so this is damage, not a creation cut short.
    b[0] ^= 0x01;
    std::fs::write(&segs[0], b).expect("write");
    match LogStore::open(&dir, Default::default()) {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!(
                (file, offset),
                (segs[0].clone(), 0),
                "names file and offset"
            )
        }
        r => panic!("a damaged header must be Corruption: {r:?}"),
    }
    assert!(segs[0].exists(), "the segment and its entries are kept");
}

#[test]
fn a_power_loss_inside_truncate_keeps_the_entries_below_the_cut() {
    use std::sync::Arc;
    use strata::fault::FaultFs;
    let rt = rt();
    let dir = Path::new("/node/raft");
    // Each step of the truncation, each with 16 power-loss images.
    for n in 1..=12u64 {
        let fs = Arc::new(FaultFs::new());
        let mut log = LogStore::open_vfs(fs.clone(), dir, Default::default()).expect("open");
        log.set_segment_size(200);
        append(&rt, &mut log, blanks(1, 0..12));
        assert!(log.segment_paths().len() >= 3, "the cut spans segments");
        fs.crash_at(fs.ops() + n);
        let done = rt.block_on(log.truncate(id(1, 2))).is_ok();
        for seed in 0..16 {
            let img = Arc::new(fs.power_loss_image(seed));
            let back = LogStore::open_vfs(img, dir, Default::default()).expect("reopen");
            let got = indexes(&back);
            assert!(
                got.len() >= 2,
                "crash at step {n} seed {seed}: 0 and 1 kept"
            );
            // A prefix of the log: below the cut all there, past it (the
            // truncation cut short) whatever is left runs on without a gap.
            assert_eq!(
                got,
                span(1, 0..=got.len() as u64 - 1),
                "crash at step {n} seed {seed}: a prefix of the log"
            );
            if done {
                assert_eq!(got, span(1, 0..=1), "step {n} seed {seed}: truncated");
            }
        }
    }
}

#[test]
fn a_gap_in_the_log_is_corruption() {
    let rt = rt();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    {
        let mut log = LogStore::open(&dir, Default::default()).expect("open");
        log.set_segment_size(200);
        append(&rt, &mut log, blanks(1, 0..12));
    }
    let segs = segment_files(&dir);
    assert!(segs.len() >= 3);
    std::fs::remove_file(&segs[1]).expect("remove");
    match LogStore::open(&dir, Default::default()) {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!(file, segs[2], "names the segment after the gap");
            assert_eq!(offset, 24, "and its first frame");
        }
        r => panic!("a gap must be Corruption: {r:?}"),
    }
}

#[test]
fn a_failed_write_path_poisons_the_log() {
    use std::sync::Arc;
    use strata::fault::{FaultFs, FaultKind};
    let rt = rt();
    let dir = Path::new("/node/raft");
    // Each write, sync and directory sync of an append rolling over to
    // new segments fails in turn.
    for n in 1..=20u64 {
        let fs = Arc::new(FaultFs::new());
        let mut log = LogStore::open_vfs(fs.clone(), dir, Default::default()).expect("open");
        log.set_segment_size(200);
        append(&rt, &mut log, blanks(1, 0..2));
        fs.fail_at(fs.ops() + n, FaultKind::Io, false);
        let first = rt.block_on(log.blocking_append(blanks(1, 2..10)));
        fs.heal();
        let mut acked = span(1, 0..=1);
        if first.is_ok() {
            acked = span(1, 0..=9);
        } else {
            let last = indexes(&log).last().map_or(0, |e| e.1);
            let again = rt.block_on(log.blocking_append(blanks(1, last + 1..last + 4)));
            assert!(again.is_err(), "fault at op +{n}: append after a failure");
            assert!(
                rt.block_on(log.truncate(id(1, 1))).is_err(),
                "fault at op +{n}: truncate after a failure"
            );
            assert!(
                rt.block_on(log.save_vote(&Vote::new_committed(2, 1)))
                    .is_err(),
                "fault at op +{n}: vote after a failure"
            );
            assert!(
                rt.block_on(log.purge(id(1, 0))).is_err(),
                "fault at op +{n}: purge after a failure"
            );
        }
        let back = LogStore::open_vfs(Arc::new(fs.synced_image()), dir, Default::default())
            .expect("reopen");
        let got = indexes(&back);
        assert!(
            got.starts_with(&acked),
            "fault at op +{n}: acknowledged {acked:?}, after power loss {got:?}"
        );
    }
}

/// A transaction entry writing `t/k` at `commit_ts`.
fn put_k(index: u64, snapshot_ts: Timestamp, commit_ts: Timestamp) -> Entry {
    normal(
        1,
        index,
        txn(snapshot_ts, vec![], vec![put("t", "k", "v")], commit_ts),
    )
}

#[test]
fn a_local_read_does_not_change_a_replicated_decision() {
    let rt = rt();
    let (ta, tb) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (_la, mut a) = open(ta.path());
    let (_lb, mut b) = open(tb.path());
    let t0 = Timestamp::from_nanos(now_ts().as_nanos() - 2_000_000_000);
    for sm in [&mut a, &mut b] {
        rt.block_on(sm.apply(vec![blank(1, 0)])).expect("apply");
    }
    // Replica a serves a read at a timestamp above the next entry's: its
    // database's high-water mark rises there, b's does not.
    let read = a.db().begin_at(now_ts()).expect("read at now");
    read.rollback().expect("rollback");
    let log = vec![
        put_k(1, t0, Timestamp::from_nanos(t0.as_nanos() + 1_000)),
        blank(1, 2),
    ];
    let oa = rt.block_on(a.apply(log.clone())).expect("apply a");
    let ob = rt.block_on(b.apply(log)).expect("apply b");
    assert_eq!(oa, ob, "same outcomes");
    assert!(matches!(oa[0], Outcome::Committed { .. }), "{oa:?}");
    assert_eq!(contents(&a), contents(&b), "same rows");
}

/// A clock `behind` the system clock, exact otherwise.
struct Behind(std::time::Duration);

impl strata::clock::Clock for Behind {
    fn now(&self) -> strata::Result<strata::clock::Interval> {
        let t = strata::clock::FixedEpsilon::system_now()?;
        Ok(strata::clock::Interval::around(
            Timestamp::from_nanos(t.as_nanos() - self.0.as_nanos() as u64),
            std::time::Duration::ZERO,
        ))
    }
}

#[test]
fn clock_skew_does_not_change_a_replicated_decision() {
    let rt = rt();
    let (ta, tb) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (_la, mut a) = open(ta.path());
    // b's clock is further behind than a commit may wait
    // (COMMIT_WAIT_MAX, 1 s).
    let slow = Options::default().clock(std::sync::Arc::new(Behind(
        std::time::Duration::from_secs(3),
    )));
    let mut b = StateMachine::open(tb.path().join("sm"), slow).expect("open b");
    let t0 = now_ts();
    let log = vec![blank(1, 0), put_k(1, t0, now_ts()), blank(1, 2)];
    let oa = rt.block_on(a.apply(log.clone())).expect("apply a");
    let ob = rt.block_on(b.apply(log)).expect("apply b");
    assert_eq!(oa, ob, "same outcomes");
    assert!(matches!(oa[1], Outcome::Committed { .. }), "{oa:?}");
    assert_eq!(contents(&a), contents(&b), "same rows");
}

#[test]
fn clock_skew_does_not_change_a_replicated_prepare_or_its_timestamp() {
    let rt = rt();
    let (ta, tb) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (_la, mut a) = open(ta.path());
    // b's clock is further behind than a commit may wait
    // (COMMIT_WAIT_MAX, 1 s): a prepare at its clock would be refused
    // (its mark is at the committed entry's timestamp) or land lower.
    let slow = Options::default().clock(std::sync::Arc::new(Behind(
        std::time::Duration::from_secs(3),
    )));
    let mut b = StateMachine::open(tb.path().join("sm"), slow).expect("open b");
    let t0 = now_ts();
    let commit_ts = now_ts();
    let log = vec![
        blank(1, 0),
        put_k(1, t0, commit_ts),
        normal(
            1,
            2,
            Command::Prepare {
                gid: "g".into(),
                body: TxnBody {
                    snapshot_ts: commit_ts,
                    reads: vec![],
                    writes: vec![put("t", "p", "1")],
                },
            },
        ),
        blank(1, 3),
    ];
    let oa = rt.block_on(a.apply(log.clone())).expect("apply a");
    let ob = rt.block_on(b.apply(log)).expect("apply b");
    assert_eq!(oa, ob, "same outcomes");
    // Just above the newest timestamp the log gave: the committed entry's.
    let want = Timestamp::from_nanos(commit_ts.as_nanos() + 1);
    assert_eq!(oa[2], Outcome::Prepared { ts: want }, "{oa:?}");
    let listed = |sm: &StateMachine| -> Vec<(String, Timestamp)> {
        sm.db()
            .prepared_transactions()
            .expect("list")
            .into_iter()
            .map(|p| (p.gid, p.prepare_ts))
            .collect()
    };
    assert_eq!(listed(&a), vec![("g".to_string(), want)]);
    assert_eq!(listed(&a), listed(&b), "same prepare timestamps");
    // The decision, at or above it, commits on both.
    let decide = vec![normal(
        1,
        4,
        Command::CommitPrepared {
            gid: "g".into(),
            ts: Timestamp::from_nanos(want.as_nanos() + 1_000),
        },
    )];
    let oa = rt.block_on(a.apply(decide.clone())).expect("apply a");
    let ob = rt.block_on(b.apply(decide)).expect("apply b");
    assert_eq!(oa, ob, "same decisions");
    assert!(matches!(oa[0], Outcome::Committed { .. }), "{oa:?}");
    assert_eq!(contents(&a), contents(&b), "same rows");
}

#[test]
fn a_snapshot_older_than_the_applied_state_is_not_installed() {
    let rt = rt();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_log, mut sm) = open(tmp.path());
    let t0 = Timestamp::from_nanos(now_ts().as_nanos() - 2_000_000_000);
    rt.block_on(sm.apply(vec![blank(1, 0)])).expect("apply");
    let mut builder = rt.block_on(sm.get_snapshot_builder());
    let old = rt.block_on(builder.build_snapshot()).expect("build");
    let ts = Timestamp::from_nanos(t0.as_nanos() + 1_000);
    rt.block_on(sm.apply(vec![put_k(1, t0, ts)]))
        .expect("apply");
    let before = (
        rt.block_on(sm.applied_state()).expect("state"),
        contents(&sm),
    );
    rt.block_on(sm.install_snapshot(&old.meta, old.snapshot))
        .expect("install");
    let after = (
        rt.block_on(sm.applied_state()).expect("state"),
        contents(&sm),
    );
    assert_eq!(after, before, "the applied state does not go back");
    assert_eq!(after.0 .0, Some(id(1, 1)));
}
