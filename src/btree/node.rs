//! B+tree node layout: a slotted page of sorted cells.
//!
//! ```text
//!  24      26      28     30    32          36
//!  | count | upper | frag | pad | link u32  | slot * count ...free... cells |
//!    link: leftmost child (internal nodes); unused in leaves
//!  slot:          | offset u16 | head u32 |
//!  leaf cell:     | klen u16 | vlen u16 | key | value |
//!  internal cell: | klen u16 | child u32 | key |
//! ```
//! Slots are sorted by key; cells are packed from the end of the page
//! downward (`upper` is the lowest cell byte). Removing a cell leaves a hole
//! counted in `frag`, reclaimed by `compact` when an insert needs it.
//!
//! A slot carries its key's *head*, the first four bytes as a big-endian
//! number, so a binary search compares numbers in the slot array and reads
//! a cell only where heads tie: a lookup costs a few cache lines of slots
//! instead of a cache miss on every probed cell. Heads order keys
//! correctly because a shorter key pads with zero bytes: a smaller head
//! means a smaller key; equal heads say nothing.
//! An internal node with n cells has n+1 children: child 0 is `link`, child
//! i+1 is cell i's; child i holds keys k with key(i-1) <= k < key(i).
//!
//! Readers treat every field as untrusted: accessors return `None` for an
//! offset or length outside the page, which callers report as corruption.

use crate::buffer::mtr::Shift;
use crate::codec::{put_u16, put_u32, u16_at, u32_at};
use crate::ids::PageId;
use crate::limits::{BTREE_CELL_MAX, PAGE_SIZE};
use crate::page::{self, PageBuf, PageType, HDR};
use std::cmp::Ordering;

const COUNT: usize = HDR;
const UPPER: usize = HDR + 2;
const FRAG: usize = HDR + 4;
const LINK: usize = HDR + 8;
/// First slot byte.
pub const SLOTS: usize = HDR + 12;
/// Bytes per slot: cell offset and key head.
pub const SLOT: usize = 6;
// Three maximal cells must fit in one node so splits always make room.
const _: () = assert!(3 * (BTREE_CELL_MAX + SLOT) + 64 < PAGE_SIZE);

fn slot_at(i: usize) -> usize {
    SLOTS + SLOT * i
}

/// The head of `k`: its first four bytes, big-endian, zero-padded.
fn head(k: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    let n = k.len().min(4);
    b[..n].copy_from_slice(&k[..n]);
    u32::from_be_bytes(b)
}

fn set_slot(p: &mut PageBuf, i: usize, off: usize, key: &[u8]) {
    put_u16(p, slot_at(i), off as u16);
    put_u32(p, slot_at(i) + 2, head(key));
}

/// Whether slot `i` carries the head of its cell's key (integrity checks).
pub fn head_ok(p: &PageBuf, i: usize) -> bool {
    match (key(p, i), u32_at(p, slot_at(i) + 2)) {
        (Some(k), Some(h)) => head(k) == h,
        _ => false,
    }
}

/// Starts `p` as an empty node.
pub fn init(p: &mut PageBuf, pid: PageId, leaf: bool) {
    page::init(
        p,
        pid,
        if leaf {
            PageType::Leaf
        } else {
            PageType::Internal
        },
    );
    set_upper(p, PAGE_SIZE);
}

fn upper(p: &PageBuf) -> usize {
    (u16_at(p, UPPER).unwrap_or(0) as usize).min(PAGE_SIZE)
}

fn set_upper(p: &mut PageBuf, u: usize) {
    put_u16(p, UPPER, u as u16);
}

/// Whether the node is a leaf (`None`: not a B+tree node at all).
pub fn is_leaf(p: &PageBuf) -> Option<bool> {
    match page::page_type(p)? {
        PageType::Leaf => Some(true),
        PageType::Internal => Some(false),
        _ => None,
    }
}

/// Whether the header's counts are consistent (slot array, free gap and
/// holes within the page).
pub fn header_ok(p: &PageBuf) -> bool {
    let frag = u16_at(p, FRAG).unwrap_or(u16::MAX) as usize;
    let up = u16_at(p, UPPER).unwrap_or(0) as usize;
    slot_at(count(p)) <= up && up <= PAGE_SIZE && frag <= PAGE_SIZE - up
}

/// Number of cells.
pub fn count(p: &PageBuf) -> usize {
    u16_at(p, COUNT).unwrap_or(0) as usize
}

/// Leftmost child of an internal node.
pub fn link(p: &PageBuf) -> PageId {
    PageId(u32_at(p, LINK).unwrap_or(0))
}

/// Sets the leftmost child.
pub fn set_link(p: &mut PageBuf, pid: PageId) {
    put_u32(p, LINK, pid.0);
}

/// Bytes of cell `i`, validated against the page bounds.
pub fn cell(p: &PageBuf, i: usize) -> Option<&[u8]> {
    cell_in(p, i, count(p), is_leaf(p)?)
}

/// `cell` with the count and node kind already read.
fn cell_in(p: &PageBuf, i: usize, n: usize, leaf: bool) -> Option<&[u8]> {
    if i >= n || slot_at(n) > PAGE_SIZE {
        return None;
    }
    let off = u16_at(p, slot_at(i))? as usize;
    let fixed = if leaf { 4 } else { 6 };
    if off < slot_at(n) || off + fixed > PAGE_SIZE {
        return None;
    }
    let klen = u16_at(p, off)? as usize;
    let len = if leaf {
        4 + klen + u16_at(p, off + 2)? as usize
    } else {
        6 + klen
    };
    p.get(off..off + len)
}

/// Key of cell `i`.
pub fn key(p: &PageBuf, i: usize) -> Option<&[u8]> {
    let c = cell(p, i)?;
    let klen = u16_at(c, 0)? as usize;
    let start = if is_leaf(p)? { 4 } else { 6 };
    c.get(start..start + klen)
}

/// Value of leaf cell `i`.
pub fn value(p: &PageBuf, i: usize) -> Option<&[u8]> {
    let c = cell(p, i)?;
    let klen = u16_at(c, 0)? as usize;
    c.get(4 + klen..)
}

/// Child `i` (0..=count) of an internal node.
pub fn child(p: &PageBuf, i: usize) -> Option<PageId> {
    if i == 0 {
        return Some(link(p));
    }
    let c = cell(p, i - 1)?;
    Some(PageId(u32_at(c, 2)?))
}

/// Points child `i` (0..=count) of an internal node at `pid`.
pub fn set_child(p: &mut PageBuf, i: usize, pid: PageId) -> Option<()> {
    if i == 0 {
        set_link(p, pid);
        return Some(());
    }
    cell_in(p, i - 1, count(p), false)?;
    let off = u16_at(p, slot_at(i - 1))? as usize;
    put_u32(p, off + 2, pid.0);
    Some(())
}

/// Search: `Ok(i)` if cell i holds `k`, `Err(i)` where it would go.
///
/// The first probe is where `k`'s head falls between the first and last
/// heads (interpolation); the search then gallops from there to bracket
/// `k` and halves the bracket. Keys spread evenly over their heads (random
/// or hashed keys) land within a few slots of the first probe, so a search
/// reads two or three lines of the slot array instead of one per halving
/// across all of it; keys that share their heads make the first probe no
/// worse than a halving's.
pub fn search(p: &PageBuf, k: &[u8]) -> Option<Result<usize, usize>> {
    search_within(p, k, (None, None))
}

/// The head of cell `i`'s key, from its slot.
pub fn head_at(p: &PageBuf, i: usize) -> Option<u32> {
    (i < count(p)).then(|| u32_at(p, slot_at(i) + 2)).flatten()
}

/// `search`, told bounds on the node's heads (from the separators in its
/// parent that route to it), which stand in for its first and last heads:
/// the first probe then needs no read of the slot array's far end.
pub fn search_within(
    p: &PageBuf,
    k: &[u8],
    bounds: (Option<u32>, Option<u32>),
) -> Option<Result<usize, usize>> {
    use std::cmp::Ordering::Equal;
    let n = count(p);
    let leaf = is_leaf(p)?;
    if slot_at(n) > PAGE_SIZE {
        return None;
    }
    let want = head(k);
    let head_of = |i: usize| u32_at(p, slot_at(i) + 2);
    let cmp = |i: usize| -> Option<Ordering> {
        Some(match head_of(i)?.cmp(&want) {
            Equal => cell_key(cell_in(p, i, n, leaf)?, leaf).cmp(k),
            o => o,
        })
    };
    let (lo, hi) = if n > 8 {
        let first = match bounds.0 {
            Some(h) => h,
            None => head_of(0)?,
        };
        let last = match bounds.1 {
            Some(h) => h,
            None => head_of(n - 1)?,
        };
        match interpolate(n, want, (first, last), cmp)? {
            Probe::Found(i) => return Some(Ok(i)),
            Probe::Within(lo, hi) => (lo, hi),
        }
    } else {
        (0, n)
    };
    halve(lo, hi, cmp)
}

/// What the first probes of a search found.
enum Probe {
    /// The key, at this cell.
    Found(usize),
    /// Not yet: it lies in cells `lo..hi` (or goes at `hi`).
    Within(usize, usize),
}

/// The first probe where `want` falls between the first and last heads
/// (`heads`) of the `n` cells, then a gallop away from it to bracket the
/// key; the whole node if `want` is not strictly between them.
#[inline]
fn interpolate(
    n: usize,
    want: u32,
    (first, last): (u32, u32),
    cmp: impl Fn(usize) -> Option<Ordering>,
) -> Option<Probe> {
    if !(first < want && want < last) {
        return Some(Probe::Within(0, n));
    }
    let span = u64::from(last - first);
    let guess = (u64::from(want - first) * (n - 1) as u64 / span) as usize;
    assert!(guess < n, "probe {guess} of {n} cells");
    let probe = match cmp(guess)? {
        Ordering::Equal => Probe::Found(guess),
        Ordering::Less => gallop_up(guess, n, cmp)?,
        Ordering::Greater => gallop_down(guess, cmp)?,
    };
    if let Probe::Within(lo, hi) = probe {
        assert!(lo <= hi && hi <= n, "bracket {lo}..{hi} of {n} cells");
    }
    Some(probe)
}

/// From a probe at `guess` below the key: steps of 1, 2, 4, … up, to a
/// cell above it or the end (`n`).
#[inline]
fn gallop_up(guess: usize, n: usize, cmp: impl Fn(usize) -> Option<Ordering>) -> Option<Probe> {
    let (mut lo, mut hi) = (guess + 1, n);
    let mut step = 1;
    while guess + step < hi {
        let j = guess + step;
        match cmp(j)? {
            Ordering::Less => lo = j + 1,
            Ordering::Greater => {
                hi = j;
                break;
            }
            Ordering::Equal => return Some(Probe::Found(j)),
        }
        step *= 2;
    }
    Some(Probe::Within(lo, hi))
}

/// From a probe at `guess` above the key: steps of 1, 2, 4, … down, to a
/// cell below it or the start.
#[inline]
fn gallop_down(guess: usize, cmp: impl Fn(usize) -> Option<Ordering>) -> Option<Probe> {
    let (mut lo, mut hi) = (0, guess);
    let mut step = 1;
    while step <= guess && guess - step >= lo {
        let j = guess - step;
        match cmp(j)? {
            Ordering::Greater => hi = j,
            Ordering::Less => {
                lo = j + 1;
                break;
            }
            Ordering::Equal => return Some(Probe::Found(j)),
        }
        step *= 2;
    }
    Some(Probe::Within(lo, hi))
}

/// Binary search of cells `lo..hi` for the key `cmp` compares with.
#[inline]
fn halve(
    mut lo: usize,
    mut hi: usize,
    cmp: impl Fn(usize) -> Option<Ordering>,
) -> Option<Result<usize, usize>> {
    debug_assert!(lo <= hi, "bracket {lo}..{hi}");
    while lo < hi {
        let mid = (lo + hi) / 2;
        match cmp(mid)? {
            Ordering::Less => lo = mid + 1,
            Ordering::Greater => hi = mid,
            Ordering::Equal => return Some(Ok(mid)),
        }
    }
    Some(Err(lo))
}

/// Encodes a leaf cell.
pub fn leaf_cell(k: &[u8], v: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(4 + k.len() + v.len());
    c.extend_from_slice(&(k.len() as u16).to_le_bytes());
    c.extend_from_slice(&(v.len() as u16).to_le_bytes());
    c.extend_from_slice(k);
    c.extend_from_slice(v);
    c
}

/// Encodes an internal cell.
pub fn internal_cell(k: &[u8], child: PageId) -> Vec<u8> {
    let mut c = Vec::with_capacity(6 + k.len());
    c.extend_from_slice(&(k.len() as u16).to_le_bytes());
    c.extend_from_slice(&child.0.to_le_bytes());
    c.extend_from_slice(k);
    c
}

/// Key of an encoded cell of the given kind.
pub fn cell_key(c: &[u8], leaf: bool) -> &[u8] {
    let klen = u16_at(c, 0).unwrap_or(0) as usize;
    let start = if leaf { 4 } else { 6 };
    c.get(start..start + klen).unwrap_or(&[])
}

/// Child of an encoded internal cell.
pub fn cell_child(c: &[u8]) -> PageId {
    PageId(u32_at(c, 2).unwrap_or(0))
}

/// Bytes available for a new cell and its slot, counting reclaimable holes.
pub fn free_space(p: &PageBuf) -> usize {
    if !header_ok(p) {
        return 0;
    }
    let frag = u16_at(p, FRAG).unwrap_or(0) as usize;
    upper(p).saturating_sub(slot_at(count(p))) + frag
}

/// All cells, in key order (validated copies).
pub fn cells(p: &PageBuf) -> Option<Vec<Vec<u8>>> {
    (0..count(p))
        .map(|i| cell(p, i).map(<[u8]>::to_vec))
        .collect()
}

/// Rewrites the node with exactly `cells`, keeping its type and link.
pub fn rebuild(p: &mut PageBuf, cells: &[Vec<u8>]) {
    let total: usize = cells.iter().map(|c| c.len() + SLOT).sum();
    assert!(SLOTS + total <= PAGE_SIZE, "rebuild overflows the node");
    let leaf = is_leaf(p) == Some(true);
    let mut up = PAGE_SIZE;
    for (i, c) in cells.iter().enumerate() {
        up -= c.len();
        p[up..up + c.len()].copy_from_slice(c);
        set_slot(p, i, up, cell_key(c, leaf));
    }
    p[slot_at(cells.len())..up].fill(0);
    put_u16(p, COUNT, cells.len() as u16);
    put_u16(p, FRAG, 0);
    set_upper(p, up);
}

/// Inserts `c` as cell `i`; false if the node has no room for it.
pub fn insert(p: &mut PageBuf, i: usize, c: &[u8]) -> Option<bool> {
    if !header_ok(p) || i > count(p) {
        return None;
    }
    let leaf = is_leaf(p)?;
    let n = count(p);
    if free_space(p) < c.len() + SLOT {
        return Some(false);
    }
    if upper(p) < slot_at(n + 1) + c.len() {
        let mut all = cells(p)?;
        all.insert(i, c.to_vec());
        if SLOTS + all.iter().map(|c| c.len() + SLOT).sum::<usize>() > PAGE_SIZE {
            return None; // damaged slots overlap
        }
        rebuild(p, &all);
        return Some(true);
    }
    let up = upper(p) - c.len();
    p[up..up + c.len()].copy_from_slice(c);
    p.copy_within(slot_at(i)..slot_at(n), slot_at(i + 1));
    set_slot(p, i, up, cell_key(c, leaf));
    put_u16(p, COUNT, (n + 1) as u16);
    set_upper(p, up);
    Some(true)
}

/// What `insert(p, i, c)` of a `len`-byte cell will change when it
/// inserts in place: the slots after `i` shift up one, then the header,
/// slot `i` and the cell are written. `None` when it would rebuild the
/// node or has no room.
pub fn insert_ranges(p: &PageBuf, i: usize, len: usize) -> Option<(Shift, [(usize, usize); 3])> {
    let n = count(p);
    if !header_ok(p) || i > n || free_space(p) < len + SLOT {
        return None;
    }
    let up = upper(p).checked_sub(len)?;
    if up < slot_at(n + 1) {
        return None;
    }
    let shift = Shift {
        from: slot_at(i),
        to: slot_at(i + 1),
        len: slot_at(n) - slot_at(i),
    };
    Some((
        shift,
        [(HDR, SLOTS), (slot_at(i), slot_at(i + 1)), (up, up + len)],
    ))
}

/// What `remove(p, i)` will change: the slots after `i` shift down one,
/// then the header and the freed last slot are written.
pub fn remove_ranges(p: &PageBuf, i: usize) -> Option<(Shift, [(usize, usize); 2])> {
    let n = count(p);
    if !header_ok(p) || i >= n || slot_at(n) > PAGE_SIZE {
        return None;
    }
    let shift = Shift {
        from: slot_at(i + 1),
        to: slot_at(i),
        len: slot_at(n) - slot_at(i + 1),
    };
    Some((shift, [(HDR, SLOTS), (slot_at(n - 1), slot_at(n))]))
}

/// Where the value of leaf cell `i` lies in the page, if it is `len`
/// bytes long: a table index repoints a key at its new version by
/// overwriting it there.
pub fn value_range(p: &PageBuf, i: usize, len: usize) -> Option<(usize, usize)> {
    let c = cell(p, i)?;
    let klen = u16_at(c, 0)? as usize;
    if c.len() != 4 + klen + len || !is_leaf(p)? {
        return None;
    }
    let start = u16_at(p, slot_at(i))? as usize + 4 + klen;
    Some((start, start + len))
}

/// Removes cell `i`.
pub fn remove(p: &mut PageBuf, i: usize) -> Option<()> {
    if !header_ok(p) {
        return None;
    }
    let n = count(p);
    let len = cell(p, i)?.len();
    p.copy_within(slot_at(i + 1)..slot_at(n), slot_at(i));
    p[slot_at(n - 1)..slot_at(n)].fill(0);
    put_u16(p, COUNT, (n - 1) as u16);
    let frag = u16_at(p, FRAG)? as usize + len;
    put_u16(p, FRAG, frag as u16);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_search_remove_keep_order_and_reclaim_space() {
        let mut p = page::zeroed();
        init(&mut p, PageId(5), true);
        let empty = free_space(&p);
        for k in [b"m".as_slice(), b"c", b"x", b"a"] {
            let Some(Err(i)) = search(&p, k) else {
                panic!("unexpected hit")
            };
            assert_eq!(insert(&mut p, i, &leaf_cell(k, b"v")), Some(true));
        }
        let keys: Vec<&[u8]> = (0..count(&p)).filter_map(|i| key(&p, i)).collect();
        assert_eq!(keys, vec![b"a".as_slice(), b"c", b"m", b"x"]);
        assert_eq!(search(&p, b"m"), Some(Ok(2)));
        assert_eq!(value(&p, 2), Some(b"v".as_slice()));
        for _ in 0..4 {
            remove(&mut p, 0).expect("remove");
        }
        assert_eq!(count(&p), 0);
        assert_eq!(
            free_space(&p),
            empty,
            "removed cells' space must be reclaimable"
        );
    }

    #[test]
    fn full_node_refuses_then_compaction_reuses_holes() {
        let mut p = page::zeroed();
        init(&mut p, PageId(5), true);
        let v = vec![1u8; 100];
        let mut n = 0u32;
        loop {
            let at = count(&p);
            if insert(&mut p, at, &leaf_cell(&n.to_be_bytes(), &v)) != Some(true) {
                break;
            }
            n += 1;
        }
        assert!(n > 60, "only {n} cells fit");
        remove(&mut p, 3).expect("remove");
        assert_eq!(
            insert(&mut p, 3, &leaf_cell(&3u32.to_be_bytes(), &v)),
            Some(true)
        );
        assert_eq!(count(&p) as u32, n);
    }

    #[test]
    fn garbage_slots_give_none_not_panic() {
        let mut p = page::zeroed();
        init(&mut p, PageId(1), true);
        insert(&mut p, 0, &leaf_cell(b"k", b"v")).expect("insert");
        put_u16(&mut p[..], SLOTS, 8190);
        assert_eq!(key(&p, 0), None);
        put_u16(&mut p[..], COUNT, 60000);
        assert_eq!(cell(&p, 5), None);
    }

    proptest::proptest! {
        // Heads tie for keys sharing four bytes and pad short keys with
        // zeros: a search must still order "a" < "a\0" < "a\0\0\0\0" < "a\x01".
        #[test]
        fn searches_by_head_agree_with_byte_order(
            keys in proptest::collection::btree_set(
                proptest::collection::vec(proptest::prop_oneof![proptest::prelude::Just(0u8), proptest::prelude::Just(1u8), proptest::prelude::Just(b'a')], 0..7),
                1..120,
            ),
            leaf in proptest::prelude::any::<bool>(),
        ) {
            let mut p = page::zeroed();
            init(&mut p, PageId(3), leaf);
            for k in &keys {
                let Some(Err(i)) = search(&p, k) else { panic!("found {k:?} before inserting it") };
                let c = if leaf { leaf_cell(k, b"v") } else { internal_cell(k, PageId(7)) };
                proptest::prop_assert_eq!(insert(&mut p, i, &c), Some(true));
            }
            let stored: Vec<&[u8]> = (0..count(&p)).filter_map(|i| key(&p, i)).collect();
            let want: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            proptest::prop_assert_eq!(stored, want);
            for (i, k) in keys.iter().enumerate() {
                proptest::prop_assert_eq!(search(&p, k), Some(Ok(i)));
                proptest::prop_assert!(head_ok(&p, i));
            }
            remove(&mut p, 0).expect("remove");
            for (i, k) in keys.iter().enumerate().skip(1) {
                proptest::prop_assert_eq!(search(&p, k), Some(Ok(i - 1)));
            }
        }

        // The interpolated first probe and the gallop from it land where a
        // binary search would, for keys present and absent, evenly spread
        // (random bytes) or not (shared heads, short keys).
        #[test]
        fn searches_agree_with_a_sorted_list(
            keys in proptest::collection::btree_set(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..10), 1..300),
            probes in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..10), 0..50),
            prefix in proptest::prelude::any::<bool>(),
            bounds in (proptest::option::of(proptest::prelude::any::<u32>()), proptest::option::of(proptest::prelude::any::<u32>())),
        ) {
            let keys: Vec<Vec<u8>> = keys
                .into_iter()
                .map(|k| if prefix { [b"same".as_slice(), &k].concat() } else { k })
                .collect();
            let mut p = page::zeroed();
            init(&mut p, PageId(4), true);
            for (i, k) in keys.iter().enumerate() {
                if insert(&mut p, i, &leaf_cell(k, b"")) != Some(true) {
                    break;
                }
            }
            let stored: Vec<Vec<u8>> = (0..count(&p)).filter_map(|i| key(&p, i).map(<[u8]>::to_vec)).collect();
            for k in stored.iter().chain(probes.iter()) {
                proptest::prop_assert_eq!(search(&p, k), Some(stored.binary_search(k)), "key {:?}", k);
                // Bounds only steer the probes, even wrong ones.
                proptest::prop_assert_eq!(search_within(&p, k, bounds), Some(stored.binary_search(k)), "key {:?} within {:?}", k, bounds);
            }
        }

        #[test]
        fn damaged_nodes_never_panic(
            leaf in proptest::prelude::any::<bool>(),
            junk in proptest::collection::vec((0usize..PAGE_SIZE, proptest::prelude::any::<u8>()), 0..64),
            ops in proptest::collection::vec((0u8..3, 0usize..300, 1usize..300), 0..30),
        ) {
            let mut p = page::zeroed();
            init(&mut p, PageId(9), leaf);
            for i in 0..40u32 {
                let c = if leaf { leaf_cell(&i.to_be_bytes(), &[1; 20]) } else { internal_cell(&i.to_be_bytes(), PageId(i + 1)) };
                insert(&mut p, i as usize, &c);
            }
            for (at, b) in junk {
                p[at] = b;
            }
            for (op, i, len) in ops {
                match op {
                    0 => { insert(&mut p, i, &leaf_cell(&vec![7; len], b"v")); }
                    1 => { remove(&mut p, i); }
                    _ => {
                        let _ = search(&p, &[7; 3]);
                        let _ = (key(&p, i), value(&p, i), child(&p, i), cells(&p), free_space(&p));
                    }
                }
            }
        }
    }
}
