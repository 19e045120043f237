//! SIREAD marks on single keys, shared by every transaction of a database.
//!
//! Reads are the commonest operation, so a read marks its key here without
//! taking the SSI graph's lock: the table is split into partitions by key
//! hash (as PostgreSQL splits its predicate-lock table), and two readers
//! share a lock only when their keys fall in the same partition. A writer
//! looks here while holding the graph's lock; the order is always graph
//! lock, then a partition lock, never the reverse.
//!
//! A mark is the 64-bit hash of (table, key), not the key: no allocation
//! per mark, and equal memory for every key length. Two keys with the same
//! hash share a mark, which can only add conflicts, never lose one.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::hash::IntMap;
use crate::ids::PageId;
use crate::limits::SIREAD_PARTITIONS;
use crate::sync::Mutex;

/// The mark a read of `key` in `table` leaves.
pub fn key_hash(table: PageId, key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, u64::from(table.0))
}

/// The transactions holding a mark on one key: almost always one.
enum Holders {
    One(u64),
    Many(Vec<u64>),
}

/// Marked key hashes → the transactions holding a mark on them.
pub struct KeyMarks {
    parts: Vec<Mutex<IntMap<u64, Holders>>>,
}

impl Default for KeyMarks {
    fn default() -> Self {
        KeyMarks {
            parts: (0..SIREAD_PARTITIONS)
                .map(|_| Mutex::new(IntMap::default()))
                .collect(),
        }
    }
}

impl KeyMarks {
    fn part(&self, h: u64) -> &Mutex<IntMap<u64, Holders>> {
        // The low bits pick the partition; xxh3 mixes them well.
        &self.parts[(h as usize) & (SIREAD_PARTITIONS - 1)]
    }

    /// Marks `h` for transaction `id`.
    pub fn add(&self, h: u64, id: u64) {
        let mut p = self.part(h).lock();
        let hs = p.entry(h).or_insert(Holders::One(id));
        match hs {
            Holders::One(x) if *x != id => *hs = Holders::Many(vec![*x, id]),
            Holders::Many(ids) if !ids.contains(&id) => ids.push(id),
            _ => {}
        }
    }

    /// Appends the holders of a mark on `h` to `out`.
    pub fn holders(&self, h: u64, out: &mut Vec<u64>) {
        match self.part(h).lock().get(&h) {
            Some(Holders::One(x)) => out.push(*x),
            Some(Holders::Many(ids)) => out.extend_from_slice(ids),
            None => {}
        }
    }

    /// Drops `id`'s mark on `h`.
    pub fn remove(&self, h: u64, id: u64) {
        let mut p = self.part(h).lock();
        let empty = match p.get_mut(&h) {
            Some(Holders::One(x)) => *x == id,
            Some(Holders::Many(ids)) => {
                ids.retain(|&x| x != id);
                ids.is_empty()
            }
            None => false,
        };
        if empty {
            p.remove(&h);
        }
    }

    /// Hands `from`'s mark on `h` to `to` (a transaction folded into the
    /// summary entry).
    pub fn transfer(&self, h: u64, from: u64, to: u64) {
        self.remove(h, from);
        self.add(h, to);
    }

    /// Marked keys, over all partitions (for tests and soaks).
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.lock().len()).sum()
    }

    /// Whether no key is marked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
