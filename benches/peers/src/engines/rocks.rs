use std::path::Path;

use super::{Engine, Kv, CACHE_BYTES};
use rocksdb::{
    BlockBasedOptions, Cache, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};

pub struct Rocks {
    db: DB,
}

impl Rocks {
    pub fn open(dir: &Path) -> Rocks {
        let mut o = Options::default();
        o.create_if_missing(true);
        let mut t = BlockBasedOptions::default();
        t.set_block_cache(&Cache::new_lru_cache(CACHE_BYTES));
        o.set_block_based_table_factory(&t);
        Rocks {
            db: DB::open(&o, dir).expect("open rocksdb"),
        }
    }

    fn sync() -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(true);
        w
    }
}

impl Engine for Rocks {
    fn name(&self) -> &'static str {
        "RocksDB"
    }

    fn config(&self) -> String {
        "RocksDB 0.25 crate, WriteOptions::set_sync(true) (fsync per commit), 64 MiB LRU block cache".into()
    }

    fn insert(&self, kv: &[Kv]) {
        let mut b = WriteBatch::default();
        for (k, v) in kv {
            b.put(k, v);
        }
        self.db.write_opt(b, &Self::sync()).expect("write");
    }

    fn remove(&self, keys: &[Vec<u8>]) {
        let mut b = WriteBatch::default();
        for k in keys {
            b.delete(k);
        }
        self.db.write_opt(b, &Self::sync()).expect("write");
    }

    fn count(&self) -> u64 {
        self.db.iterator(IteratorMode::Start).count() as u64
    }

    fn reads(&self, keys: &[Vec<u8>]) -> usize {
        let s = self.db.snapshot();
        keys.iter()
            .map(|k| s.get(k).expect("get").map_or(0, |v| v.len()))
            .sum()
    }

    fn ranges(&self, starts: &[Vec<u8>], n: usize) -> usize {
        let s = self.db.snapshot();
        starts
            .iter()
            .map(|k| {
                s.iterator(IteratorMode::From(k, Direction::Forward))
                    .take(n)
                    .map(|r| r.expect("row").1.len())
                    .sum::<usize>()
            })
            .sum()
    }

    fn read_write(&self, reads: &[Vec<u8>], write: &Kv) -> bool {
        let s = self.db.snapshot();
        for k in reads {
            s.get(k).expect("get");
        }
        drop(s);
        let mut b = WriteBatch::default();
        b.put(&write.0, &write.1);
        self.db.write_opt(b, &Self::sync()).expect("write");
        true
    }

    fn compact(&self) -> bool {
        self.db.compact_range::<&[u8], &[u8]>(None, None);
        true
    }

    fn with_reader(&self, f: &mut dyn FnMut()) {
        let s = self.db.snapshot();
        f();
        drop(s);
    }
}
