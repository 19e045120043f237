//! One adapter per engine, all behind the same small interface, each
//! configured to make every commit durable (fsync) and to use a page cache
//! of `CACHE_BYTES` where it has one.

use std::path::Path;

pub mod fjall;
pub mod lmdb;
pub mod redb;
#[cfg(feature = "rocksdb")]
pub mod rocks;
pub mod sqlite;
pub mod strata;

/// Page-cache budget given to every engine that has one.
pub const CACHE_BYTES: usize = 64 << 20;

/// A key and its value.
pub type Kv = (Vec<u8>, Vec<u8>);

/// What the workloads need from an engine. Every write method commits
/// durably before it returns.
pub trait Engine: Send + Sync {
    /// Display name.
    fn name(&self) -> &'static str;
    /// One sentence on how it is configured.
    fn config(&self) -> String;
    /// Inserts `kv` in one transaction.
    fn insert(&self, kv: &[Kv]);
    /// Removes `keys` in one transaction.
    fn remove(&self, keys: &[Vec<u8>]);
    /// Number of keys.
    fn count(&self) -> u64;
    /// Reads `keys` in one read transaction; returns the bytes read.
    fn reads(&self, keys: &[Vec<u8>]) -> usize;
    /// For each start key, reads the next `n` rows; one read transaction.
    fn ranges(&self, starts: &[Vec<u8>], n: usize) -> usize;
    /// Reads `reads`, writes `write`: one read-write transaction. Returns
    /// false if the engine refused it (a conflict to retry).
    fn read_write(&self, reads: &[Vec<u8>], write: &Kv) -> bool;
    /// Compacts or vacuums, if the engine can; false if it has no way.
    fn compact(&self) -> bool;
    /// Holds a read snapshot open while `f` runs (for the space held by a
    /// long-running reader).
    fn with_reader(&self, f: &mut dyn FnMut());
}

/// Bytes of every file below `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Opens the engine named `name` (as `Engine::name` gives it) in `dir`.
/// With `big_log`, an engine that checkpoints its log on its own is told
/// not to, so the log grows (for the open-after-kill workload).
pub fn open_named(name: &str, dir: &Path, big_log: bool) -> Box<dyn Engine> {
    match name {
        "strata" => Box::new(strata::Strata::open_logging(dir, big_log)),
        "redb" => Box::new(redb::Redb::open(dir)),
        "LMDB" => Box::new(lmdb::Lmdb::open(dir)),
        "SQLite" => {
            let s = sqlite::Sqlite::open(dir);
            if big_log {
                s.keep_wal();
            }
            Box::new(s)
        }
        "fjall" => Box::new(fjall::Fjall::open(dir)),
        #[cfg(feature = "rocksdb")]
        "RocksDB" => Box::new(rocks::Rocks::open(dir)),
        other => panic!("no engine named {other}"),
    }
}

/// Opens every engine built in (or those named in `only`, lower case),
/// each in its own directory below `dir`.
pub fn all(dir: &Path, only: &[String]) -> Vec<Box<dyn Engine>> {
    #[allow(unused_mut)]
    let mut v: Vec<Box<dyn Engine>> = vec![
        Box::new(strata::Strata::open(&dir.join("strata"))),
        Box::new(redb::Redb::open(&dir.join("redb"))),
        Box::new(lmdb::Lmdb::open(&dir.join("lmdb"))),
        Box::new(sqlite::Sqlite::open(&dir.join("sqlite"))),
        Box::new(fjall::Fjall::open(&dir.join("fjall"))),
    ];
    #[cfg(feature = "rocksdb")]
    v.push(Box::new(rocks::Rocks::open(&dir.join("rocksdb"))));
    v.retain(|e| only.is_empty() || only.contains(&e.name().to_lowercase()));
    v
}
