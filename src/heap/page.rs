//! Slotted heap page.
//!
//! ```text
//!  24       26      28     30    32
//!  | nslots | upper | frag | pad | (off u16, len u16) * nslots ...free... tuples |
//! ```
//! A slot's position is part of a tuple's id, so slots never move; a
//! vacuumed tuple leaves its slot with length 0 for reuse. Tuple bytes are
//! packed downward from the page end; holes left by removed tuples are
//! counted in `frag` and squeezed out by `compact` when an insert needs them.

use crate::codec::{put_u16, u16_at};
use crate::ids::{PageId, SlotId};
use crate::limits::PAGE_SIZE;
use crate::page::{self, PageBuf, PageType, HDR};

const NSLOTS: usize = HDR;
const UPPER: usize = HDR + 2;
const FRAG: usize = HDR + 4;
const SLOTS: usize = HDR + 8;
/// Bytes of one slot.
const SLOT: usize = 4;
/// `free_space` of an empty page.
pub const EMPTY_FREE: usize = PAGE_SIZE - SLOTS - SLOT;

/// How many tuples of `len` bytes fit in `free` bytes as `free_space`
/// counts them (the first tuple's slot already taken off), each further
/// one needing a slot of its own.
pub fn fitting(free: usize, len: usize) -> usize {
    (free + SLOT) / (len + SLOT)
}

/// Starts an empty heap page.
pub fn init(p: &mut PageBuf, pid: PageId) {
    page::init(p, pid, PageType::Heap);
    put_u16(p, UPPER, PAGE_SIZE as u16);
}

/// Whether the header's counts are consistent: slots, free gap and holes
/// within the page. Damaged pages fail this and are reported, not used.
pub fn header_ok(p: &PageBuf) -> bool {
    let frag = u16_at(p, FRAG).unwrap_or(u16::MAX) as usize;
    let up = u16_at(p, UPPER).unwrap_or(0) as usize;
    SLOTS + 4 * nslots(p) <= up && up <= PAGE_SIZE && frag <= PAGE_SIZE - up
}

/// Number of slots (used or not).
pub fn nslots(p: &PageBuf) -> usize {
    u16_at(p, NSLOTS).unwrap_or(0) as usize
}

fn upper(p: &PageBuf) -> usize {
    (u16_at(p, UPPER).unwrap_or(0) as usize).min(PAGE_SIZE)
}

/// Where slot `s` lies in the page.
pub fn slot_offset(s: SlotId) -> usize {
    slot_at(s.0 as usize)
}

/// Where the tuple in slot `s` starts, as the slot says (0 for a slot the
/// page does not have): a prefetch hint, not checked.
pub fn tuple_offset(p: &PageBuf, s: SlotId) -> usize {
    if (s.0 as usize) < nslots(p) {
        slot(p, s.0 as usize).0
    } else {
        0
    }
}

fn slot_at(s: usize) -> usize {
    SLOTS + 4 * s
}

fn slot(p: &PageBuf, s: usize) -> (usize, usize) {
    let at = slot_at(s);
    (
        u16_at(p, at).unwrap_or(0) as usize,
        u16_at(p, at + 2).unwrap_or(0) as usize,
    )
}

fn set_slot(p: &mut PageBuf, s: usize, off: usize, len: usize) {
    put_u16(p, slot_at(s), off as u16);
    put_u16(p, slot_at(s) + 2, len as u16);
}

fn free_slot(p: &PageBuf) -> Option<usize> {
    (0..nslots(p)).find(|&s| slot(p, s).1 == 0)
}

/// Bytes available for one more tuple (slot included), counting holes.
pub fn free_space(p: &PageBuf) -> usize {
    if !header_ok(p) {
        return 0;
    }
    let n = nslots(p);
    let frag = u16_at(p, FRAG).unwrap_or(0) as usize;
    let slot_cost = if free_slot(p).is_some() { 0 } else { 4 };
    (upper(p) + frag).saturating_sub(SLOTS + 4 * n + slot_cost)
}

/// The tuple in slot `s`, if the slot is used and in bounds.
pub fn get(p: &PageBuf, s: SlotId) -> Option<&[u8]> {
    let s = s.0 as usize;
    if s >= nslots(p) || SLOTS + 4 * nslots(p) > PAGE_SIZE {
        return None;
    }
    let (off, len) = slot(p, s);
    if len == 0 || off < SLOTS + 4 * nslots(p) {
        return None;
    }
    p.get(off..off + len)
}

/// Mutable tuple bytes in slot `s`.
pub fn get_mut(p: &mut PageBuf, s: SlotId) -> Option<&mut [u8]> {
    get(p, s)?;
    let (off, len) = slot(p, s.0 as usize);
    p.get_mut(off..off + len)
}

/// The bytes `insert` of a `len`-byte tuple will change when it fits
/// without compacting (header, slot, tuple); `None` otherwise.
pub fn insert_ranges(p: &PageBuf, len: usize) -> Option<[(usize, usize); 3]> {
    if !header_ok(p) || free_space(p) < len {
        return None;
    }
    let n = nslots(p);
    let reuse = free_slot(p);
    let slot_cost = if reuse.is_some() { 0 } else { 4 };
    let off = upper(p).checked_sub(len)?;
    if off < SLOTS + 4 * n + slot_cost {
        return None;
    }
    let at = SLOTS + 4 * reuse.unwrap_or(n);
    Some([(HDR, SLOTS), (at, at + 4), (off, off + len)])
}

/// Stores `t`; `None` if the page lacks room.
pub fn insert(p: &mut PageBuf, t: &[u8]) -> Option<SlotId> {
    if free_space(p) < t.len() {
        return None;
    }
    let reuse = free_slot(p);
    let n = nslots(p);
    let slot_cost = if reuse.is_some() { 0 } else { 4 };
    // Squeeze out holes first: growing the slot array must not run into
    // tuple bytes.
    if upper(p) < SLOTS + 4 * n + slot_cost + t.len()
        && (!compact(p) || upper(p) < SLOTS + 4 * n + slot_cost + t.len())
    {
        return None;
    }
    let s = match reuse {
        Some(s) => s,
        None => {
            put_u16(p, NSLOTS, (n + 1) as u16);
            n
        }
    };
    let off = upper(p) - t.len();
    debug_assert!(
        off >= SLOTS + 4 * nslots(p),
        "tuple would overlap the slot array"
    );
    p[off..off + t.len()].copy_from_slice(t);
    set_slot(p, s, off, t.len());
    put_u16(p, UPPER, off as u16);
    Some(SlotId(s as u16))
}

/// The bytes of slot `s`'s tuple, as a range of the page (for noting a
/// change to them); `None` for a free or damaged slot.
pub fn tuple_range(p: &PageBuf, s: SlotId) -> Option<(usize, usize)> {
    let (off, len) = slot(p, s.0 as usize);
    get(p, s)?;
    Some((off, off + len))
}

/// Frees slot `s` (its bytes become a hole).
pub fn remove(p: &mut PageBuf, s: SlotId) {
    if get(p, s).is_none() || !header_ok(p) {
        return;
    }
    let (_, len) = slot(p, s.0 as usize);
    set_slot(p, s.0 as usize, 0, 0);
    let frag = u16_at(p, FRAG).unwrap_or(0) as usize + len;
    put_u16(p, FRAG, frag as u16);
    // Trailing unused slots are dropped so the slot array shrinks too.
    let mut n = nslots(p);
    while n > 0 && slot(p, n - 1).1 == 0 {
        n -= 1;
    }
    put_u16(p, NSLOTS, n as u16);
}

/// Packs tuples against the page end, removing holes; slots keep their numbers.
/// Returns false (changing nothing) if damaged slots overlap so that the
/// tuples cannot all fit.
pub fn compact(p: &mut PageBuf) -> bool {
    let n = nslots(p);
    let live: Vec<(usize, Vec<u8>)> = (0..n)
        .filter_map(|s| get(p, SlotId(s as u16)).map(|t| (s, t.to_vec())))
        .collect();
    let total: usize = live.iter().map(|(_, t)| t.len()).sum();
    if SLOTS + 4 * n + total > PAGE_SIZE {
        return false;
    }
    let mut up = PAGE_SIZE;
    for (s, t) in &live {
        up -= t.len();
        p[up..up + t.len()].copy_from_slice(t);
        set_slot(p, *s, up, t.len());
    }
    p[SLOTS + 4 * n..up].fill(0);
    put_u16(p, UPPER, up as u16);
    put_u16(p, FRAG, 0);
    true
}

/// Used slots and their tuple lengths (bounds-checked).
pub fn used_slots(p: &PageBuf) -> Vec<(SlotId, usize)> {
    (0..nslots(p).min(PAGE_SIZE / 4))
        .filter_map(|s| get(p, SlotId(s as u16)).map(|t| (SlotId(s as u16), t.len())))
        .collect()
}

/// Bytes of holes, and the lowest tuple byte, as the header says.
pub fn accounting(p: &PageBuf) -> (usize, usize) {
    (u16_at(p, FRAG).unwrap_or(0) as usize, upper(p))
}

/// Whether no slot is in use.
pub fn is_empty(p: &PageBuf) -> bool {
    nslots(p) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_stable_and_space_is_reused() {
        let mut p = page::zeroed();
        init(&mut p, PageId(2));
        let a = insert(&mut p, &[1; 1000]).expect("a");
        let b = insert(&mut p, &[2; 1000]).expect("b");
        let c = insert(&mut p, &[3; 1000]).expect("c");
        remove(&mut p, b);
        assert_eq!(get(&p, b), None);
        let room = free_space(&p);
        let d = insert(&mut p, &vec![4; room]).expect("d fits into the hole after compaction");
        assert_eq!(d, b, "freed slot is reused");
        assert_eq!(get(&p, a), Some(&[1u8; 1000][..]));
        assert_eq!(get(&p, c), Some(&[3u8; 1000][..]));
        assert_eq!(get(&p, d).map(<[u8]>::len), Some(room));
        assert_eq!(insert(&mut p, &[5; 1]), None, "page should be full");
    }

    /// Regression: appending a slot when the gap before the tuples was
    /// smaller than a slot (the room being in holes) overwrote the lowest
    /// tuple's first bytes.
    #[test]
    fn new_slot_never_clobbers_a_tuple() {
        let mut p = page::zeroed();
        init(&mut p, PageId(2));
        let mut slots = Vec::new();
        while let Some(s) = insert(&mut p, &[0xAB; 100]) {
            slots.push(s);
        }
        let rest = free_space(&p);
        slots.push(insert(&mut p, &vec![0xAB; rest]).expect("exact fit"));
        // Free the two last slots (trimmed), leaving an 8-byte gap and no free slot.
        remove(&mut p, slots.pop().expect("slot"));
        remove(&mut p, slots.pop().expect("slot"));
        let tiny = insert(&mut p, &[0x22]).expect("tiny");
        // Gap is now 3 bytes; the next insert needs a new slot.
        let s = insert(&mut p, &[0xEF; 100]).expect("fits after compaction");
        assert_eq!(
            get(&p, tiny),
            Some(&[0x22u8][..]),
            "lowest tuple was clobbered"
        );
        assert_eq!(get(&p, s), Some(&[0xEFu8; 100][..]));
        for &old in &slots {
            assert_eq!(get(&p, old), Some(&[0xABu8; 100][..]));
        }
    }

    #[test]
    fn removing_all_empties_the_page() {
        let mut p = page::zeroed();
        init(&mut p, PageId(2));
        let full = free_space(&p);
        let s: Vec<_> = (0..5)
            .map(|i| insert(&mut p, &[i; 100]).expect("ins"))
            .collect();
        for x in s {
            remove(&mut p, x);
        }
        assert!(is_empty(&p));
        assert_eq!(free_space(&p), full);
    }

    #[test]
    fn overlapping_slots_are_refused_not_compacted() {
        let mut p = page::zeroed();
        init(&mut p, PageId(9));
        for _ in 0..7 {
            insert(&mut p, &[1; 1000]).expect("insert");
        }
        // Damage: every slot points at the same 1000 bytes; holes claimed.
        let (off, len) = slot(&p, 0);
        put_u16(&mut p[..], NSLOTS, 9);
        for s in 1..9 {
            set_slot(&mut p, s, off, len);
        }
        put_u16(&mut p[..], FRAG, 2000);
        assert_eq!(insert(&mut p, &[2; 1500]), None);
    }

    proptest::proptest! {
        #[test]
        fn damaged_pages_never_panic(
            junk in proptest::collection::vec((0usize..crate::limits::PAGE_SIZE, proptest::prelude::any::<u8>()), 0..64),
            ops in proptest::collection::vec((0u8..3, 0u16..300, 1usize..600), 0..30),
        ) {
            let mut p = page::zeroed();
            init(&mut p, PageId(9));
            for i in 0..20u8 {
                insert(&mut p, &[i; 50]);
            }
            for (at, b) in junk {
                p[at] = b;
            }
            for (op, slot, len) in ops {
                match op {
                    0 => { insert(&mut p, &vec![1; len]); }
                    1 => remove(&mut p, SlotId(slot)),
                    _ => { let _ = get(&p, SlotId(slot)); let _ = free_space(&p); }
                }
            }
        }
    }
}
