use std::path::Path;

use super::{Engine, Kv, CACHE_BYTES};
use strata::{Db, Durability, Isolation, Options, Table};

pub struct Strata {
    db: Db,
    t: Table,
    level: Isolation,
}

impl Strata {
    pub fn open(dir: &Path) -> Strata {
        Self::open_at(dir, Isolation::Serializable)
    }

    /// Read-write transactions at `level`.
    pub fn open_at(dir: &Path, level: Isolation) -> Strata {
        Self::open_with(dir, level, Self::options())
    }

    /// With `big_log`, no checkpoints: the log grows until the next open.
    pub fn open_logging(dir: &Path, big_log: bool) -> Strata {
        let mut o = Self::options();
        if big_log {
            o = o
                .checkpoint_interval(std::time::Duration::from_secs(3600))
                .checkpoint_wal_bytes(u64::MAX);
        }
        Self::open_with(dir, Isolation::Serializable, o)
    }

    fn options() -> Options {
        Options::default()
            .cache_size(CACHE_BYTES)
            .durability(Durability::Immediate)
    }

    fn open_with(dir: &Path, level: Isolation, o: Options) -> Strata {
        let db = Db::open_with(dir, o).expect("open strata");
        let t = db.table("t").expect("table");
        Strata { db, t, level }
    }
}

impl Engine for Strata {
    fn name(&self) -> &'static str {
        "strata"
    }

    fn config(&self) -> String {
        "Durability::Immediate (fsync per commit, group commit), 64 MiB cache, Serializable (the default) for read-write transactions, begin_read for reads".into()
    }

    fn insert(&self, kv: &[Kv]) {
        let mut tx = self.db.begin().expect("begin");
        for (k, v) in kv {
            tx.put(&self.t, k, v).expect("put");
        }
        tx.commit().expect("commit");
    }

    fn remove(&self, keys: &[Vec<u8>]) {
        let mut tx = self.db.begin().expect("begin");
        for k in keys {
            tx.delete(&self.t, k).expect("delete");
        }
        tx.commit().expect("commit");
    }

    fn count(&self) -> u64 {
        let tx = self.db.begin_read().expect("begin");
        tx.scan(&self.t, ..).expect("scan").count() as u64
    }

    fn reads(&self, keys: &[Vec<u8>]) -> usize {
        let tx = self.db.begin_read().expect("begin");
        keys.iter()
            .map(|k| tx.get(&self.t, k).expect("get").map_or(0, |v| v.len()))
            .sum()
    }

    fn ranges(&self, starts: &[Vec<u8>], n: usize) -> usize {
        let tx = self.db.begin_read().expect("begin");
        starts
            .iter()
            .map(|s| {
                tx.scan(&self.t, s.as_slice()..)
                    .expect("scan")
                    .take(n)
                    .map(|r| r.expect("row").1.len())
                    .sum::<usize>()
            })
            .sum()
    }

    fn read_write(&self, reads: &[Vec<u8>], write: &Kv) -> bool {
        let r = (|| {
            let mut tx = self.db.begin_with(self.level)?;
            for k in reads {
                tx.get(&self.t, k)?;
            }
            tx.put(&self.t, &write.0, &write.1)?;
            tx.commit()
        })();
        match r {
            Ok(_) => true,
            Err(e) if e.is_retryable() => false,
            Err(e) => panic!("strata: {e}"),
        }
    }

    fn compact(&self) -> bool {
        self.db.vacuum().expect("vacuum");
        self.db.checkpoint().expect("checkpoint");
        true
    }

    fn with_reader(&self, f: &mut dyn FnMut()) {
        let tx = self.db.begin_read().expect("begin");
        tx.get(&self.t, b"anything").expect("get");
        f();
        drop(tx);
    }
}
