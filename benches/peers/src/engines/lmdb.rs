use std::path::Path;

use super::{Engine, Kv};
use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions};

pub struct Lmdb {
    env: Env,
    db: Database<Bytes, Bytes>,
}

impl Lmdb {
    pub fn open(dir: &Path) -> Lmdb {
        std::fs::create_dir_all(dir).expect("dir");
        // SAFETY: the benchmark opens each environment once, in this process.
        let env = unsafe {
            EnvOpenOptions::new()
                .map_size(16 << 30)
                .max_dbs(1)
                .open(dir)
                .expect("open lmdb")
        };
        let mut w = env.write_txn().expect("begin");
        let db = env.create_database(&mut w, Some("t")).expect("db");
        w.commit().expect("commit");
        Lmdb { env, db }
    }
}

impl Engine for Lmdb {
    fn name(&self) -> &'static str {
        "LMDB"
    }

    fn config(&self) -> String {
        "LMDB through heed 0.20, default flags (fsync per commit), 16 GiB map; the OS page cache is its cache".into()
    }

    fn insert(&self, kv: &[Kv]) {
        let mut w = self.env.write_txn().expect("begin");
        for (k, v) in kv {
            self.db.put(&mut w, k, v).expect("put");
        }
        w.commit().expect("commit");
    }

    fn remove(&self, keys: &[Vec<u8>]) {
        let mut w = self.env.write_txn().expect("begin");
        for k in keys {
            self.db.delete(&mut w, k).expect("delete");
        }
        w.commit().expect("commit");
    }

    fn count(&self) -> u64 {
        let r = self.env.read_txn().expect("begin");
        self.db.len(&r).expect("len")
    }

    fn reads(&self, keys: &[Vec<u8>]) -> usize {
        let r = self.env.read_txn().expect("begin");
        keys.iter()
            .map(|k| self.db.get(&r, k).expect("get").map_or(0, <[u8]>::len))
            .sum()
    }

    fn ranges(&self, starts: &[Vec<u8>], n: usize) -> usize {
        let r = self.env.read_txn().expect("begin");
        starts
            .iter()
            .map(|s| {
                let range = (
                    std::ops::Bound::Included(s.as_slice()),
                    std::ops::Bound::Unbounded,
                );
                self.db
                    .range(&r, &range)
                    .expect("range")
                    .take(n)
                    .map(|e| e.expect("row").1.len())
                    .sum::<usize>()
            })
            .sum()
    }

    fn read_write(&self, reads: &[Vec<u8>], write: &Kv) -> bool {
        let mut w = self.env.write_txn().expect("begin");
        for k in reads {
            self.db.get(&w, k).expect("get");
        }
        self.db.put(&mut w, &write.0, &write.1).expect("put");
        w.commit().expect("commit");
        true
    }

    fn compact(&self) -> bool {
        false // LMDB compacts only into a copy (mdb_env_copy2), not in place
    }

    fn with_reader(&self, f: &mut dyn FnMut()) {
        let r = self.env.read_txn().expect("begin");
        f();
        drop(r);
    }
}
