use std::path::Path;
use std::sync::Mutex;

use super::{Engine, Kv, CACHE_BYTES};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const T: TableDefinition<&[u8], &[u8]> = TableDefinition::new("t");

pub struct Redb {
    // `compact` needs `&mut Database`.
    db: Mutex<Database>,
}

impl Redb {
    pub fn open(dir: &Path) -> Redb {
        std::fs::create_dir_all(dir).expect("dir");
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join("db.redb"))
            .expect("open redb");
        let w = db.begin_write().expect("begin");
        w.open_table(T).expect("table");
        w.commit().expect("commit");
        Redb { db: Mutex::new(db) }
    }
}

impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn config(&self) -> String {
        "redb 4.6, default Durability::Immediate (fsync per commit), 64 MiB cache".into()
    }

    fn insert(&self, kv: &[Kv]) {
        let db = self.db.lock().expect("lock");
        let w = db.begin_write().expect("begin");
        {
            let mut t = w.open_table(T).expect("table");
            for (k, v) in kv {
                t.insert(k.as_slice(), v.as_slice()).expect("insert");
            }
        }
        w.commit().expect("commit");
    }

    fn remove(&self, keys: &[Vec<u8>]) {
        let db = self.db.lock().expect("lock");
        let w = db.begin_write().expect("begin");
        {
            let mut t = w.open_table(T).expect("table");
            for k in keys {
                t.remove(k.as_slice()).expect("remove");
            }
        }
        w.commit().expect("commit");
    }

    fn count(&self) -> u64 {
        let r = self.db.lock().expect("lock").begin_read().expect("begin");
        r.open_table(T).expect("table").len().expect("len")
    }

    fn reads(&self, keys: &[Vec<u8>]) -> usize {
        let r = self.db.lock().expect("lock").begin_read().expect("begin");
        let t = r.open_table(T).expect("table");
        keys.iter()
            .map(|k| {
                t.get(k.as_slice())
                    .expect("get")
                    .map_or(0, |v| v.value().len())
            })
            .sum()
    }

    fn ranges(&self, starts: &[Vec<u8>], n: usize) -> usize {
        let r = self.db.lock().expect("lock").begin_read().expect("begin");
        let t = r.open_table(T).expect("table");
        starts
            .iter()
            .map(|s| {
                t.range(s.as_slice()..)
                    .expect("range")
                    .take(n)
                    .map(|e| e.expect("row").1.value().len())
                    .sum::<usize>()
            })
            .sum()
    }

    fn read_write(&self, reads: &[Vec<u8>], write: &Kv) -> bool {
        // One writer at a time: the write transaction serializes.
        let w = {
            let db = self.db.lock().expect("lock");
            db.begin_write().expect("begin")
        };
        {
            let mut t = w.open_table(T).expect("table");
            for k in reads {
                t.get(k.as_slice()).expect("get");
            }
            t.insert(write.0.as_slice(), write.1.as_slice())
                .expect("insert");
        }
        w.commit().expect("commit");
        true
    }

    fn compact(&self) -> bool {
        self.db.lock().expect("lock").compact().expect("compact");
        true
    }

    fn with_reader(&self, f: &mut dyn FnMut()) {
        let r = self.db.lock().expect("lock").begin_read().expect("begin");
        f();
        drop(r);
    }
}
