use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Engine, Kv, CACHE_BYTES};
use rusqlite::{params, Connection, OptionalExtension};

pub struct Sqlite {
    path: PathBuf,
}

thread_local! {
    // rusqlite connections are not Sync: one per thread and database.
    static CONNS: RefCell<HashMap<PathBuf, Connection>> = RefCell::new(HashMap::new());
}

fn connect(path: &Path) -> Connection {
    let c = Connection::open(path).expect("open sqlite");
    c.busy_timeout(Duration::from_secs(60))
        .expect("busy timeout");
    c.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA cache_size = -{};",
        CACHE_BYTES / 1024
    ))
    .expect("pragmas");
    c
}

impl Sqlite {
    pub fn open(dir: &Path) -> Sqlite {
        std::fs::create_dir_all(dir).expect("dir");
        let s = Sqlite {
            path: dir.join("db.sqlite"),
        };
        s.with(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS t (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID",
            )
            .expect("create");
        });
        s
    }

    /// No automatic checkpoints on this thread's connection: the WAL grows.
    pub fn keep_wal(&self) {
        self.with(|c| {
            c.execute_batch("PRAGMA wal_autocheckpoint = 0")
                .expect("pragma")
        });
    }

    fn with<R>(&self, f: impl FnOnce(&mut Connection) -> R) -> R {
        CONNS.with(|m| {
            let mut m = m.borrow_mut();
            let c = m
                .entry(self.path.clone())
                .or_insert_with(|| connect(&self.path));
            f(c)
        })
    }
}

impl Engine for Sqlite {
    fn name(&self) -> &'static str {
        "SQLite"
    }

    fn config(&self) -> String {
        "SQLite (rusqlite 0.43, bundled), WAL mode, synchronous=FULL (fsync per commit), 64 MiB cache per connection, WITHOUT ROWID table, one connection per thread".into()
    }

    fn insert(&self, kv: &[Kv]) {
        self.with(|c| {
            let tx = c.transaction().expect("begin");
            {
                let mut st = tx
                    .prepare_cached("INSERT OR REPLACE INTO t (k, v) VALUES (?1, ?2)")
                    .expect("prepare");
                for (k, v) in kv {
                    st.execute(params![k, v]).expect("insert");
                }
            }
            tx.commit().expect("commit");
        });
    }

    fn remove(&self, keys: &[Vec<u8>]) {
        self.with(|c| {
            let tx = c.transaction().expect("begin");
            {
                let mut st = tx
                    .prepare_cached("DELETE FROM t WHERE k = ?1")
                    .expect("prepare");
                for k in keys {
                    st.execute(params![k]).expect("delete");
                }
            }
            tx.commit().expect("commit");
        });
    }

    fn count(&self) -> u64 {
        self.with(|c| {
            c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                .expect("count") as u64
        })
    }

    fn reads(&self, keys: &[Vec<u8>]) -> usize {
        self.with(|c| {
            let tx = c.transaction().expect("begin");
            let n = {
                let mut st = tx
                    .prepare_cached("SELECT v FROM t WHERE k = ?1")
                    .expect("prepare");
                keys.iter()
                    .map(|k| {
                        st.query_row(params![k], |r| r.get::<_, Vec<u8>>(0))
                            .optional()
                            .expect("get")
                            .map_or(0, |v| v.len())
                    })
                    .sum()
            };
            tx.commit().expect("end");
            n
        })
    }

    fn ranges(&self, starts: &[Vec<u8>], n: usize) -> usize {
        self.with(|c| {
            let tx = c.transaction().expect("begin");
            let total = {
                let mut st = tx
                    .prepare_cached("SELECT v FROM t WHERE k >= ?1 ORDER BY k LIMIT ?2")
                    .expect("prepare");
                starts
                    .iter()
                    .map(|s| {
                        st.query_map(params![s, n as i64], |r| r.get::<_, Vec<u8>>(0))
                            .expect("range")
                            .map(|v| v.expect("row").len())
                            .sum::<usize>()
                    })
                    .sum()
            };
            tx.commit().expect("end");
            total
        })
    }

    fn read_write(&self, reads: &[Vec<u8>], write: &Kv) -> bool {
        self.with(|c| {
            // IMMEDIATE: take the write lock first, so the transaction
            // cannot fail to upgrade after its reads.
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .expect("begin");
            {
                let mut get = tx
                    .prepare_cached("SELECT v FROM t WHERE k = ?1")
                    .expect("prepare");
                for k in reads {
                    get.query_row(params![k], |r| r.get::<_, Vec<u8>>(0))
                        .optional()
                        .expect("get");
                }
                tx.prepare_cached("INSERT OR REPLACE INTO t (k, v) VALUES (?1, ?2)")
                    .expect("prepare")
                    .execute(params![write.0, write.1])
                    .expect("put");
            }
            tx.commit().expect("commit");
            true
        })
    }

    fn compact(&self) -> bool {
        self.with(|c| {
            c.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
                .expect("vacuum");
        });
        true
    }

    fn with_reader(&self, f: &mut dyn FnMut()) {
        // A reader on its own connection, in another thread, holds its
        // snapshot (and so the WAL) while `f` writes here.
        let path = self.path.clone();
        let (hold, release) = std::sync::mpsc::channel::<()>();
        let (ready, started) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let c = connect(&path);
            c.execute_batch("BEGIN").expect("begin");
            c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                .expect("read");
            ready.send(()).expect("ready");
            let _ = release.recv();
            c.execute_batch("COMMIT").expect("end");
        });
        started.recv().expect("reader started");
        f();
        drop(hold);
        t.join().expect("reader");
    }
}
