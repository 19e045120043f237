//! Space after vacuum: once most rows are deleted and vacuum has run, the
//! database directory (data file and log) is at most 1.5 times the live
//! data — rows of about 1 KiB (a few to a heap page, so whole tuples, not
//! bytes, decide what fits where), rows of two sizes far from their
//! average, and values larger than a page (kept in overflow chains, their
//! tails in the tuple). Values between the tuple limit (about 4 KB) and a
//! page are the exception FORMAT.md's known gaps name: each takes an
//! overflow page of its own (4 500 bytes: 1.97 times).

use std::path::Path;

use strata::{Db, Options};

/// The goal: directory bytes over live key and value bytes.
const GOAL: f64 = 1.5;

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .expect("dir")
        .map(|e| {
            let e = e.expect("entry");
            let m = e.metadata().expect("metadata");
            if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

fn open(dir: &Path) -> Db {
    Db::open_with(
        dir,
        Options::default().cache_size(4 << 20).vacuum_threshold(0),
    )
    .expect("open")
}

/// Writes `n` rows, row `i` with a `len(i)`-byte value, in commits of
/// `per_commit`, deletes all but every `keep`-th, vacuums until a pass cuts
/// nothing more, and checkpoints. Returns directory bytes over live bytes,
/// after checking every kept row reads back, before and after a reopen.
fn amplification(n: u32, len: impl Fn(u32) -> usize, per_commit: u32, keep: u32) -> f64 {
    let tmp = tempfile::tempdir().expect("tmp");
    let key = |i: u32| format!("{:08x}", i.wrapping_mul(2_654_435_761));
    let value = |i: u32| vec![(i % 251) as u8; len(i)];
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    for chunk in (0..n).step_by(per_commit as usize) {
        let mut tx = db.begin().expect("begin");
        for i in chunk..(chunk + per_commit).min(n) {
            tx.put(&t, key(i), value(i)).expect("put");
        }
        tx.commit().expect("commit");
    }
    db.checkpoint().expect("checkpoint");
    let full = dir_size(tmp.path());
    let mut tx = db.begin().expect("begin");
    for i in (0..n).filter(|i| i % keep != 0) {
        assert!(tx.delete(&t, key(i)).expect("delete"));
    }
    tx.commit().expect("commit");
    // Bounded: each pass that cuts pages shortens the file for good.
    let mut passes = Vec::new();
    for _ in 0..8 {
        let s = db.vacuum().expect("vacuum");
        db.checkpoint().expect("checkpoint");
        let cut = s.pages_cut;
        passes.push(s);
        if cut == 0 {
            break;
        }
    }
    db.check_integrity().expect("sound after vacuum");
    let live: u64 = (0..n)
        .filter(|i| i % keep == 0)
        .map(|i| (key(i).len() + len(i)) as u64)
        .sum();
    let size = dir_size(tmp.path());
    let stats = db.stats().expect("stats");
    let amp = size as f64 / live as f64;
    eprintln!(
        "{n} rows, 1 in {keep} kept: {full} B full, {size} B after \
         ({} B data file, {} B log in {} segments), {live} B live: {amp:.2}; {passes:?}",
        stats.data_file_bytes, stats.wal_bytes, stats.wal_segments
    );
    drop(db);
    let db = open(tmp.path());
    let t = db.table("t").expect("t");
    let tx = db.begin_read().expect("reader");
    for i in 0..n {
        let want = (i % keep == 0).then(|| value(i));
        assert_eq!(tx.get(&t, key(i)).expect("get"), want, "key {i}");
    }
    db.check_integrity().expect("sound after reopen");
    amp
}

#[test]
fn one_kib_rows_shrink_to_the_goal() {
    let amp = amplification(8_000, |_| 1_000, 1_000, 4);
    assert!(amp <= GOAL, "directory is {amp:.2}x the live data");
}

#[test]
fn values_past_a_page_shrink_to_the_goal() {
    let amp = amplification(800, |_| 20_000, 100, 4);
    assert!(amp <= GOAL, "directory is {amp:.2}x the live data");
}

#[test]
fn rows_of_two_sizes_shrink_to_the_goal() {
    // The kept rows alternate 3 000 and 100 bytes: room counted at their
    // average (1 550) is room a 3 000-byte row does not find.
    let len = |i: u32| match i % 8 {
        0 => 3_000,
        4 => 100,
        _ => 1_000,
    };
    let amp = amplification(8_000, len, 1_000, 4);
    assert!(amp <= GOAL, "directory is {amp:.2}x the live data");
}

#[test]
fn values_just_past_whole_pages_shrink_to_the_goal() {
    // 8 300 and 16 500 bytes: a page's or two pages' worth (8 160 bytes
    // each) and a tail of a few hundred. The tail stays in the tuple,
    // sharing a heap page, instead of taking an overflow page of its own
    // (which made these 2.14 times the live data).
    let amp = amplification(1_600, |i| [8_300, 16_500][i as usize % 2], 100, 4);
    assert!(amp <= GOAL, "directory is {amp:.2}x the live data");
}

#[test]
fn values_of_every_length_past_a_page_shrink_to_the_goal() {
    // Lengths 700 bytes apart from just past a page to past three pages'
    // worth, 8 MB of each; the tightest (12 500: two pages, the tail too
    // long for the tuple) measured 1.49. Below a page the goal is not met
    // (FORMAT.md's known gaps): printed, not asserted.
    for len in (4_100..26_000).step_by(700) {
        let amp = amplification((8_000_000 / len) as u32, |_| len, 100, 4);
        eprintln!("{len}-byte values: {amp:.2}x");
        assert!(
            len < 8_160 || amp <= GOAL,
            "{len}-byte values: {amp:.2}x the live data"
        );
    }
}
