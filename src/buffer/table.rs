//! The page table: page id → frame, read without a lock.
//!
//! Every page access looks a page up here, from every thread at once, so
//! the hit path takes no lock and touches one cache line: an open-addressed
//! array of 8-byte entries (page id, frame index) at most half full,
//! probed linearly from a Fibonacci hash of the page id. (The hashbrown
//! map behind a reader-writer lock it replaces cost a lock's shared line,
//! a control byte and a 16-byte bucket per lookup: in random point reads a
//! third of `BufferPool::get` was the bucket's miss.)
//!
//! Only one thread changes the table at a time (the pool's miss lock), so
//! changes need no compare-and-swap. A lookup racing a removal may miss an
//! entry being shifted back over the removed one; it never returns an entry
//! that was not there. That is all the pool needs: it checks a hit against
//! the frame itself after pinning it, and a miss takes the miss lock and
//! looks again.

use crate::ids::PageId;
use crate::sync::{AtomicU64, Ordering};

const EMPTY: u64 = u64::MAX;

/// The table: `2^bits` entries, each `page << 32 | frame` or `EMPTY`.
pub struct PageTable {
    slots: Box<[AtomicU64]>,
    bits: u32,
}

fn entry(pid: PageId, frame: usize) -> u64 {
    u64::from(pid.0) << 32 | frame as u64
}

fn page_of(e: u64) -> u32 {
    (e >> 32) as u32
}

impl PageTable {
    /// A table for `frames` frames (at most that many entries).
    pub fn new(frames: usize) -> Self {
        let len = (2 * frames).next_power_of_two().max(4);
        PageTable {
            slots: (0..len).map(|_| AtomicU64::new(EMPTY)).collect(),
            bits: len.trailing_zeros(),
        }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Where the probe for `pid` starts.
    fn home(&self, pid: u32) -> usize {
        (u64::from(pid).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.bits)) as usize
    }

    /// The frame holding `pid`, if the table says so. May miss (never
    /// invent) an entry while a removal is under way.
    pub fn find(&self, pid: PageId) -> Option<usize> {
        let mask = self.mask();
        let mut i = self.home(pid.0);
        // The table is never full, so an empty entry ends every probe; the
        // bound keeps a lookup finite even while entries move.
        for _ in 0..self.slots.len() {
            let e = self.slots[i].load(Ordering::Acquire);
            if e == EMPTY {
                return None;
            }
            if page_of(e) == pid.0 {
                return Some((e & 0xFFFF_FFFF) as usize);
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Starts loading the entry where a lookup of `pid` begins (a hint).
    pub fn prefetch(&self, pid: PageId) {
        if let Some(e) = self.slots.get(self.home(pid.0)) {
            super::frames::prefetch(e);
        }
    }

    /// Records `pid` in `frame`. The caller holds the miss lock and knows
    /// `pid` is absent.
    pub fn insert(&self, pid: PageId, frame: usize) {
        let mask = self.mask();
        let mut i = self.home(pid.0);
        while self.slots[i].load(Ordering::Relaxed) != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i].store(entry(pid, frame), Ordering::Release);
    }

    /// Forgets `pid` (the caller holds the miss lock). Entries after it in
    /// its run move back over it, each written to its new place before its
    /// old place is reused, so no entry is ever absent from both.
    pub fn remove(&self, pid: PageId) {
        let mask = self.mask();
        let mut hole = self.home(pid.0);
        loop {
            let e = self.slots[hole].load(Ordering::Relaxed);
            if e == EMPTY {
                return;
            }
            if page_of(e) == pid.0 {
                break;
            }
            hole = (hole + 1) & mask;
        }
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let e = self.slots[j].load(Ordering::Relaxed);
            if e == EMPTY {
                self.slots[hole].store(EMPTY, Ordering::Release);
                return;
            }
            // An entry may move back to the hole only if its probe passes
            // the hole on the way to where it is.
            let home = self.home(page_of(e));
            if (hole.wrapping_sub(home) & mask) < (j.wrapping_sub(home) & mask) {
                self.slots[hole].store(e, Ordering::Release);
                hole = j;
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// The table agrees with a map through any run of inserts and
        /// removals, including long probe runs (few slots, clustered ids).
        #[test]
        fn agrees_with_a_map(ops in proptest::collection::vec((any::<bool>(), 0u32..40), 0..400)) {
            let t = PageTable::new(16);
            let mut m: HashMap<u32, usize> = HashMap::new();
            for (n, (add, p)) in ops.into_iter().enumerate() {
                let pid = PageId(p);
                if add && !m.contains_key(&p) && m.len() < 16 {
                    t.insert(pid, n);
                    m.insert(p, n);
                } else if !add {
                    t.remove(pid);
                    m.remove(&p);
                }
                for q in 0..40u32 {
                    prop_assert_eq!(t.find(PageId(q)), m.get(&q).copied(), "page {}", q);
                }
            }
        }
    }
}
