use std::path::Path;

use super::{Engine, Kv, CACHE_BYTES};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode, Readable};

pub struct Fjall {
    db: Database,
    ks: Keyspace,
}

impl Fjall {
    pub fn open(dir: &Path) -> Fjall {
        let db = Database::builder(dir)
            .cache_size(CACHE_BYTES as u64)
            .open()
            .expect("open fjall");
        let ks = db
            .keyspace("t", KeyspaceCreateOptions::default)
            .expect("keyspace");
        Fjall { db, ks }
    }

    fn batch(&self) -> OwnedWriteBatch {
        self.db.batch().durability(Some(PersistMode::SyncAll))
    }
}

impl Engine for Fjall {
    fn name(&self) -> &'static str {
        "fjall"
    }

    fn config(&self) -> String {
        "fjall 3.1, write batches committed with PersistMode::SyncAll (fsync per commit), 64 MiB cache; no read-write transactions (batches: reads are not isolated from the write)".into()
    }

    fn insert(&self, kv: &[Kv]) {
        let mut b = self.batch();
        for (k, v) in kv {
            b.insert(&self.ks, k.as_slice(), v.as_slice());
        }
        b.commit().expect("commit");
    }

    fn remove(&self, keys: &[Vec<u8>]) {
        let mut b = self.batch();
        for k in keys {
            b.remove(&self.ks, k.as_slice());
        }
        b.commit().expect("commit");
    }

    fn count(&self) -> u64 {
        self.ks.len().expect("len") as u64
    }

    fn reads(&self, keys: &[Vec<u8>]) -> usize {
        let snap = self.db.snapshot();
        keys.iter()
            .map(|k| snap.get(&self.ks, k).expect("get").map_or(0, |v| v.len()))
            .sum()
    }

    fn ranges(&self, starts: &[Vec<u8>], n: usize) -> usize {
        let snap = self.db.snapshot();
        starts
            .iter()
            .map(|s| {
                snap.range(&self.ks, s.as_slice()..)
                    .take(n)
                    .map(|g| g.value().expect("row").len())
                    .sum::<usize>()
            })
            .sum()
    }

    fn read_write(&self, reads: &[Vec<u8>], write: &Kv) -> bool {
        let snap = self.db.snapshot();
        for k in reads {
            snap.get(&self.ks, k).expect("get");
        }
        let mut b = self.batch();
        b.insert(&self.ks, write.0.as_slice(), write.1.as_slice());
        b.commit().expect("commit");
        true
    }

    fn compact(&self) -> bool {
        false // compaction runs in the background; no call waits for it
    }

    fn with_reader(&self, f: &mut dyn FnMut()) {
        let snap = self.db.snapshot();
        f();
        drop(snap);
    }
}
