use std::collections::BTreeMap;
use std::ops::Bound;

use proptest::prelude::*;

use super::*;
use crate::store::testing;
use crate::store::Store;

fn new_tree(store: &Store) -> PageId {
    store
        .with_mtr(0, crate::ids::Xid::NONE, |m| {
            let root = meta::alloc(m, PageType::Leaf)?;
            create(m, root)?;
            Ok(root)
        })
        .expect("create")
        .0
}

fn put(store: &Store, root: PageId, k: &[u8], v: &[u8]) {
    store
        .with_mtr(0, crate::ids::Xid::NONE, |m| insert(m, root, k, v))
        .expect("insert");
}

fn del(store: &Store, root: PageId, k: &[u8]) -> bool {
    store
        .with_mtr(0, crate::ids::Xid::NONE, |m| remove(m, root, k))
        .expect("remove")
        .0
}

fn all(
    store: &Store,
    root: PageId,
    lo: Bound<&[u8]>,
    hi: Bound<&[u8]>,
    dir: Dir,
    batch: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut lo = lo.map(<[u8]>::to_vec);
    let mut hi = hi.map(<[u8]>::to_vec);
    loop {
        let mut r = store.read();
        let start = out.len();
        let done = range(
            &mut r.view,
            root,
            lo.as_ref().map(Vec::as_slice),
            hi.as_ref().map(Vec::as_slice),
            dir,
            batch,
            &mut out,
        )
        .expect("range");
        if let Some((k, _)) = out[start..].last() {
            match dir {
                Dir::Forward => lo = Bound::Excluded(k.clone()),
                Dir::Reverse => hi = Bound::Excluded(k.clone()),
            }
        }
        if done {
            return out;
        }
    }
}

fn depth(store: &Store, root: PageId) -> usize {
    let mut r = store.read();
    let d = descend(&mut r.view, root, Seek::First).expect("descend");
    d.path.len()
}

#[test]
fn many_inserts_split_to_several_levels_and_read_back_in_order() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = testing::store(tmp.path(), 1 << 20);
    let root = new_tree(&store);
    let mut model = BTreeMap::new();
    for i in 0..20_000u32 {
        let k = (i.wrapping_mul(2_654_435_761)).to_be_bytes().to_vec();
        let v = vec![(i % 251) as u8; (i % 40) as usize];
        put(&store, root, &k, &v);
        model.insert(k, v);
    }
    assert!(
        depth(&store, root) >= 1,
        "20k entries must have split the root"
    );
    let fwd = all(
        &store,
        root,
        Bound::Unbounded,
        Bound::Unbounded,
        Dir::Forward,
        37,
    );
    assert_eq!(fwd, model.clone().into_iter().collect::<Vec<_>>());
    let rev = all(
        &store,
        root,
        Bound::Unbounded,
        Bound::Unbounded,
        Dir::Reverse,
        1000,
    );
    assert_eq!(rev, model.into_iter().rev().collect::<Vec<_>>());
}

#[test]
fn max_size_keys_split_correctly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = testing::store(tmp.path(), 1 << 20);
    let root = new_tree(&store);
    let mut model = BTreeMap::new();
    for i in 0..300u32 {
        let mut k = vec![b'k'; crate::limits::KEY_MAX];
        k[..4].copy_from_slice(&i.wrapping_mul(7919).to_be_bytes());
        put(&store, root, &k, b"v");
        model.insert(k, b"v".to_vec());
    }
    let got = all(
        &store,
        root,
        Bound::Unbounded,
        Bound::Unbounded,
        Dir::Forward,
        10,
    );
    assert_eq!(got, model.into_iter().collect::<Vec<_>>());
}

#[test]
fn removing_everything_collapses_to_an_empty_root_and_frees_pages() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = testing::store(tmp.path(), 1 << 20);
    let root = new_tree(&store);
    for i in 0..5000u32 {
        put(&store, root, &i.to_be_bytes(), &[7; 30]);
    }
    for i in 0..5000u32 {
        assert!(del(&store, root, &i.to_be_bytes()), "key {i} missing");
    }
    assert!(!del(&store, root, &1u32.to_be_bytes()));
    assert_eq!(depth(&store, root), 0, "root should be a leaf again");
    assert!(all(
        &store,
        root,
        Bound::Unbounded,
        Bound::Unbounded,
        Dir::Forward,
        10
    )
    .is_empty());
    let mut r = store.read();
    let m = crate::store::meta::read(&mut r.view).expect("meta");
    let count = meta::get(&m, meta::Field::PageCount);
    assert!(
        crate::store::freemap::count_free(&mut r.view, count).expect("free map") > 0,
        "freed nodes must be marked free"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn matches_btreemap_model(
        ops in proptest::collection::vec((any::<bool>(), 0u16..600, 0usize..300), 1..1500),
        lo in 0u16..600, hi in 0u16..600, incl in any::<bool>(), lo_incl in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = testing::store(tmp.path(), 1 << 20);
        let root = new_tree(&store);
        let mut model = BTreeMap::new();
        for (ins, k, vlen) in ops {
            let key = format!("key{k:05}").into_bytes();
            if ins {
                let v = vec![k as u8; vlen];
                put(&store, root, &key, &v);
                model.insert(key, v);
            } else {
                prop_assert_eq!(del(&store, root, &key), model.remove(&key).is_some());
            }
        }
        for (k, v) in &model {
            let mut r = store.read();
            prop_assert_eq!(get(&mut r.view, root, k).expect("get"), Some(v.clone()));
        }
        let (a, b) = (format!("key{:05}", lo.min(hi)).into_bytes(), format!("key{:05}", lo.max(hi)).into_bytes());
        let hi_b = if incl { Bound::Included(b.as_slice()) } else { Bound::Excluded(b.as_slice()) };
        let lo_b = if lo_incl { Bound::Included(a.as_slice()) } else { Bound::Excluded(a.as_slice()) };
        if lo_b == Bound::Excluded(a.as_slice()) && hi_b == Bound::Excluded(a.as_slice()) {
            return Ok(()); // BTreeMap::range panics on this empty range
        }
        let want: Vec<_> = model.range::<[u8], _>((lo_b, hi_b)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let fwd = all(&store, root, lo_b, hi_b, Dir::Forward, 7);
        prop_assert_eq!(&fwd, &want);
        let mut rev = all(&store, root, lo_b, hi_b, Dir::Reverse, 5);
        rev.reverse();
        prop_assert_eq!(&rev, &want);
    }
}

#[test]
fn sparse_leaves_merge_and_every_key_stays_in_order() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = testing::store(tmp.path(), 4 << 20);
    let root = new_tree(&store);
    let mut model = BTreeMap::new();
    let key = |i: u32| i.wrapping_mul(2_654_435_761).to_be_bytes().repeat(3);
    for i in 0..6000u32 {
        put(&store, root, &key(i), &i.to_le_bytes());
        model.insert(key(i), i.to_le_bytes().to_vec());
    }
    let leaves_before = leaf_count(&store, root);
    // Two keys in five go: leaves under half full, so pairs merge and the
    // next leaf lends the merged one its first cells.
    for i in (0..6000u32).filter(|i| i % 5 < 2) {
        assert!(del(&store, root, &key(i)));
        model.remove(&key(i));
    }
    let (merged, shifted) = merge_pass(&store, root, 0).expect("merge pass");
    assert!(
        merged > 0 && shifted > 0,
        "merged {merged}, shifted {shifted}"
    );
    let leaves_after = leaf_count(&store, root);
    assert!(
        leaves_after * 10 < leaves_before * 8,
        "{leaves_after} leaves of {leaves_before}"
    );
    let want: Vec<_> = model.into_iter().collect();
    let fwd = all(
        &store,
        root,
        Bound::Unbounded,
        Bound::Unbounded,
        Dir::Forward,
        7,
    );
    assert_eq!(fwd, want);
    let mut r = store.read();
    for (k, v) in &want {
        assert_eq!(get(&mut r.view, root, k).expect("get").as_ref(), Some(v));
    }
    drop(r);
    // The tree keeps working: new keys land in the merged leaves.
    for i in 0..2000u32 {
        put(&store, root, &key(i + 10_000), b"new");
    }
    let n = all(
        &store,
        root,
        Bound::Unbounded,
        Bound::Unbounded,
        Dir::Reverse,
        50,
    )
    .len();
    assert_eq!(n, want.len() + 2000);
}

fn leaf_count(store: &Store, root: PageId) -> usize {
    let mut pages = std::collections::HashSet::new();
    node_pages(&mut store.read().view, root, &mut pages).expect("pages");
    let mut r = store.read();
    pages
        .into_iter()
        .filter(|&p| {
            r.view
                .with_page(p, |b| node::is_leaf(b) == Some(true))
                .expect("page")
        })
        .count()
}
