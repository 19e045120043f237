//! The reads over ranges — `first`, `last`, `Prefix` scans, reverse scans,
//! `count`/`len`, `delete_range` — against a model (a `BTreeMap`) over
//! randomized data: keys of bytes around 0x00 and 0xFF, keys long enough
//! to spread over several leaves, values long enough to overflow, empty
//! tables, a transaction's own uncommitted writes. Then what each sees
//! under each isolation level while another transaction commits.

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;

use common::{open, xorshift};
use strata::{Db, Error, Isolation, Prefix, Table, Transaction};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;
type Row = (Vec<u8>, Vec<u8>);

/// Bytes keys are made of: the edges a prefix's upper bound must handle.
const ALPHABET: [u8; 5] = [0x00, 0x01, b'a', 0xFE, 0xFF];

fn key(r: &mut impl FnMut(u64) -> u64) -> Vec<u8> {
    let mut k: Vec<u8> = (0..1 + r(4))
        .map(|_| ALPHABET[r(ALPHABET.len() as u64) as usize])
        .collect();
    if r(4) == 0 {
        // Long keys fill leaves, so ranges cross leaf boundaries.
        k.extend(std::iter::repeat_n(b'x', 150 + r(100) as usize));
    }
    k
}

fn value(r: &mut impl FnMut(u64) -> u64) -> Vec<u8> {
    // Some values overflow onto pages of their own.
    let len = if r(16) == 0 { 9000 } else { r(40) as usize };
    vec![b'a' + r(26) as u8; len]
}

fn bound(r: &mut impl FnMut(u64) -> u64) -> Bound<Vec<u8>> {
    match r(3) {
        0 => Bound::Unbounded,
        1 => Bound::Included(key(r)),
        _ => Bound::Excluded(key(r)),
    }
}

fn within(k: &[u8], (lo, hi): &(Bound<Vec<u8>>, Bound<Vec<u8>>)) -> bool {
    let above = match lo {
        Bound::Included(b) => k >= b.as_slice(),
        Bound::Excluded(b) => k > b.as_slice(),
        Bound::Unbounded => true,
    };
    let below = match hi {
        Bound::Included(b) => k <= b.as_slice(),
        Bound::Excluded(b) => k < b.as_slice(),
        Bound::Unbounded => true,
    };
    above && below
}

fn model_rows(m: &Model, keep: impl Fn(&[u8]) -> bool) -> Vec<Row> {
    m.iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn collect(it: impl Iterator<Item = strata::Result<Row>>) -> Vec<Row> {
    it.collect::<strata::Result<_>>().expect("rows")
}

/// Random writes in `tx`, mirrored in `m`.
fn write(tx: &mut Transaction, t: &Table, m: &mut Model, r: &mut impl FnMut(u64) -> u64, n: u64) {
    for _ in 0..n {
        let k = key(r);
        if r(3) == 0 {
            assert_eq!(tx.delete(t, &k).expect("delete"), m.remove(&k).is_some());
        } else {
            let v = value(r);
            tx.put(t, &k, &v).expect("put");
            m.insert(k, v);
        }
    }
}

fn prefixes(r: &mut impl FnMut(u64) -> u64) -> Vec<Vec<u8>> {
    let mut ps = vec![
        vec![],
        vec![0xFF],
        vec![0xFF, 0xFF],
        vec![b'a', 0xFF],
        vec![0x00],
        vec![0xFE, 0xFF],
    ];
    for _ in 0..6 {
        let mut k = key(r);
        k.truncate(1 + r(3) as usize);
        ps.push(k);
    }
    ps
}

/// Every read of this file, in `tx`, against `m`.
fn check(tx: &Transaction, t: &Table, m: &Model, r: &mut impl FnMut(u64) -> u64, at: &str) {
    let first = m.first_key_value().map(|(k, v)| (k.clone(), v.clone()));
    let last = m.last_key_value().map(|(k, v)| (k.clone(), v.clone()));
    assert_eq!(tx.first(t).expect("first"), first, "{at}: first");
    assert_eq!(tx.last(t).expect("last"), last, "{at}: last");
    assert_eq!(tx.len(t).expect("len"), m.len() as u64, "{at}: len");
    for p in prefixes(r) {
        let want = model_rows(m, |k| k.starts_with(&p));
        let got = collect(tx.scan(t, Prefix(&p)).expect("scan"));
        assert_eq!(got, want, "{at}: prefix {p:x?}");
        let mut back = collect(tx.scan(t, Prefix(&p)).expect("scan").rev());
        back.reverse();
        assert_eq!(back, want, "{at}: prefix {p:x?} reversed");
        let n = tx.count(t, Prefix(&p)).expect("count");
        assert_eq!(n, want.len() as u64, "{at}: count of prefix {p:x?}");
    }
    for _ in 0..8 {
        let range = (bound(r), bound(r));
        let want = model_rows(m, |k| within(k, &range));
        let mut back = collect(tx.scan(t, range.clone()).expect("scan").rev());
        back.reverse();
        assert_eq!(back, want, "{at}: {range:x?} reversed");
        let n = tx.count(t, range.clone()).expect("count");
        assert_eq!(n, want.len() as u64, "{at}: count of {range:x?}");
    }
}

#[test]
fn range_reads_match_a_model_over_random_data() {
    for seed in 1..=4u64 {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = open(tmp.path());
        let t = db.table("t").expect("table");
        let r = &mut xorshift(seed * 7919);
        let mut m = Model::new();
        // A table no transaction has written to.
        check(&db.begin().expect("begin"), &t, &m, r, "untouched");
        for round in 0..3 {
            let mut tx = db.begin().expect("begin");
            write(&mut tx, &t, &mut m, r, 150);
            tx.commit().expect("commit");
            check(
                &db.begin().expect("begin"),
                &t,
                &m,
                r,
                &format!("round {round}"),
            );
        }
        // Own uncommitted writes, then range deletes in the same transaction.
        let mut tx = db.begin().expect("begin");
        let committed = m.clone();
        write(&mut tx, &t, &mut m, r, 60);
        check(&tx, &t, &m, r, &format!("seed {seed}, own writes"));
        for i in 0..4 {
            let range = match i {
                0 => {
                    let mut p = key(r);
                    p.truncate(1);
                    Prefix(p).into_range()
                }
                _ => (bound(r), bound(r)),
            };
            let n = tx.delete_range(&t, range.clone()).expect("delete_range");
            let before = m.len();
            m.retain(|k, _| !within(k, &range));
            assert_eq!(n, (before - m.len()) as u64, "seed {seed}: {range:x?}");
            check(&tx, &t, &m, r, &format!("seed {seed}, deleted {range:x?}"));
        }
        // Others still see the committed rows only.
        check(&db.begin().expect("begin"), &t, &committed, r, "others");
        let n = tx.delete_range(&t, ..).expect("delete all");
        assert_eq!(n, m.len() as u64, "seed {seed}: delete everything");
        m.clear();
        tx.commit().expect("commit");
        check(&db.begin().expect("begin"), &t, &m, r, "emptied");
    }
}

/// Bounds of a prefix, for the model.
trait IntoRange {
    fn into_range(self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>);
}

impl IntoRange for Prefix<Vec<u8>> {
    fn into_range(self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        strata::KeyRange::into_bounds(self)
    }
}

#[test]
fn a_prefix_ends_at_the_least_key_above_it() {
    use strata::KeyRange;
    let b = |p: &[u8]| Prefix(p).into_bounds();
    assert_eq!(b(b""), (Bound::Unbounded, Bound::Unbounded));
    assert_eq!(
        b(b"ab"),
        (
            Bound::Included(b"ab".to_vec()),
            Bound::Excluded(b"ac".to_vec())
        )
    );
    assert_eq!(
        b(b"a\xff\xff"),
        (
            Bound::Included(b"a\xff\xff".to_vec()),
            Bound::Excluded(b"b".to_vec())
        )
    );
    assert_eq!(
        b(b"\xff\xff"),
        (Bound::Included(b"\xff\xff".to_vec()), Bound::Unbounded)
    );
}

fn setup() -> (tempfile::TempDir, Db, Table) {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = open(tmp.path());
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    for k in ["b", "m1", "m2", "m3", "y"] {
        tx.put(&t, k, "old").expect("put");
    }
    tx.commit().expect("commit");
    (tmp, db, t)
}

/// Everything the range reads return in `tx`, as one comparable value.
fn reads(tx: &Transaction, t: &Table) -> (Option<Row>, Option<Row>, Vec<Row>, Vec<Row>, u64, u64) {
    (
        tx.first(t).expect("first"),
        tx.last(t).expect("last"),
        collect(tx.scan(t, Prefix("m")).expect("scan")),
        collect(tx.scan(t, ..).expect("scan").rev()),
        tx.count(t, Prefix("m")).expect("count"),
        tx.len(t).expect("len"),
    )
}

/// Another transaction's commit: rows below the first, above the last and
/// inside the prefix, one updated, one deleted.
fn change(db: &Db, t: &Table) {
    let mut tx = db.begin().expect("begin");
    for k in ["a", "m0", "z"] {
        tx.put(t, k, "new").expect("put");
    }
    tx.put(t, "m2", "new").expect("update");
    tx.delete(t, "m3").expect("delete");
    tx.commit().expect("commit");
}

#[test]
fn range_reads_keep_to_the_snapshot() {
    for level in [Isolation::Snapshot, Isolation::Serializable] {
        let (_d, db, t) = setup();
        let tx = db.begin_with(level).expect("begin");
        let before = reads(&tx, &t);
        change(&db, &t);
        assert_eq!(reads(&tx, &t), before, "{level:?}");
        tx.commit().expect("commit");
        let now = db.begin().expect("begin");
        assert_ne!(reads(&now, &t), before, "the change is there");
    }
    // Read Committed sees each commit from its next statement on.
    let (_d, db, t) = setup();
    let tx = db.begin_with(Isolation::ReadCommitted).expect("begin");
    let before = reads(&tx, &t);
    change(&db, &t);
    let after = reads(&tx, &t);
    assert_eq!(after, reads(&db.begin().expect("begin"), &t));
    assert_ne!(after, before);
}

#[test]
fn delete_range_deletes_what_its_snapshot_sees_and_conflicts_as_delete_does() {
    // A row committed after the snapshot is neither seen nor deleted.
    let (_d, db, t) = setup();
    let mut tx = db.begin_with(Isolation::Snapshot).expect("begin");
    let mut other = db.begin().expect("begin");
    other.put(&t, "m0", "new").expect("put");
    other.commit().expect("commit");
    assert_eq!(tx.delete_range(&t, Prefix("m")).expect("delete_range"), 3);
    tx.commit().expect("commit");
    let keys: Vec<Vec<u8>> = collect(db.begin().expect("begin").scan(&t, ..).expect("scan"))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, [&b"b"[..], b"m0", b"y"]);

    // A row in the range updated since the snapshot: first updater wins.
    for level in [Isolation::Snapshot, Isolation::Serializable] {
        let (_d, db, t) = setup();
        let mut tx = db.begin_with(level).expect("begin");
        change(&db, &t);
        let e = tx.delete_range(&t, Prefix("m")).expect_err("m2 changed");
        assert!(
            matches!(e, Error::SerializationFailure { .. }),
            "{level:?}: {e}"
        );
    }

    // More rows than one batch of keys; a few with values on overflow pages.
    let (_d, db, t) = setup();
    let mut tx = db.begin().expect("begin");
    for i in 0..1000u32 {
        let v = if i % 100 == 0 {
            vec![b'v'; 9000]
        } else {
            vec![b'v'; 8]
        };
        tx.put(&t, format!("n{i:04}"), v).expect("put");
    }
    assert_eq!(
        tx.delete_range(&t, Prefix("n")).expect("delete_range"),
        1000
    );
    assert_eq!(
        tx.len(&t).expect("len"),
        5,
        "the rows around the prefix stay"
    );
    tx.commit().expect("commit");

    // A write, even of nothing: refused in a read-only transaction.
    let mut r = db.begin_read().expect("begin_read");
    let e = r.delete_range(&t, Prefix("none")).expect_err("read-only");
    assert!(matches!(e, Error::ReadOnlyTransaction), "{e}");

    // Under Read Committed it deletes what is committed at the time.
    let (_d, db, t) = setup();
    let mut tx = db.begin_with(Isolation::ReadCommitted).expect("begin");
    change(&db, &t);
    assert_eq!(tx.delete_range(&t, Prefix("m")).expect("delete_range"), 3);
    tx.commit().expect("commit");
    assert_eq!(
        db.begin()
            .expect("begin")
            .count(&t, Prefix("m"))
            .expect("count"),
        0
    );
}
